#!/usr/bin/env bash
# Installs what kiq's demo and tests need on a fresh Debian/Ubuntu machine, when missing:
# redis-server (tests start private instances of it), openssl (the TLS test makes a CA), and
# chromium with chromium-driver (the dashboard is tested in headless Chromium), and a Python
# venv with croniter (the scheduler's cron next-fire times are cross-checked against it).
# Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail

kiq_need_packages() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  # promtool and prometheus: the deploy kit's alert rules are checked and evaluated
  # (e2e/tests/deploy.rs). The package may start a system Prometheus on :9090; tests never use it.
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  if [ "${1:-}" = "--browser" ]; then
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  fi
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  echo "kiq: installing ${missing[*]} from Debian's packages" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "kiq: need root (or sudo) to install ${missing[*]}" >&2
      return 1
    fi
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # The package may start a system instance on 6379; kiq never uses it.
}

kiq_need_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "kiq: cargo is required (https://rustup.rs)" >&2
    return 1
  fi
}

# Makes, when its check fails, the Python venv ~/.cache/kiq/<name> and pip-installs <pip args>
# into it; prints its python. Usage: kiq_venv <name> <what it is for> <python check> <pip args>...
kiq_venv() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/kiq/$1" purpose=$2 check=$3
  shift 3
  if ! "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    if ! command -v python3 >/dev/null 2>&1; then
      echo "kiq: python3 is required for $purpose (apt-get install python3 python3-venv)" >&2
      return 1
    fi
    echo "kiq: creating $venv for $purpose from PyPI" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" >&2 || return 1
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >&2 || return 1
    # (Called inside $(...), where set -e does not reach: check the result.)
    if ! "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
      echo "kiq: $venv is unusable for $purpose" >&2
      return 1
    fi
  fi
  echo "$venv/bin/python"
}

# The croniter version the cron cross-check (scheduler/tests/cron_crosscheck.rs) is pinned to.
KIQ_CRONITER_VERSION=7.0.0

# Creates, when missing, a Python venv holding croniter==$KIQ_CRONITER_VERSION from PyPI, and
# exports KIQ_PYTHON, its python, for the cron cross-check test.
kiq_need_python_venv() {
  KIQ_PYTHON=$(kiq_venv "venv-croniter-${KIQ_CRONITER_VERSION}" "the cron cross-check" \
    "from importlib.metadata import version; import sys; sys.exit(version('croniter') != '${KIQ_CRONITER_VERSION}')" \
    "croniter==${KIQ_CRONITER_VERSION}") || return 1
  export KIQ_PYTHON
}

# The Taskiq interop tests (e2e/tests/taskiq.rs) run real Python Taskiq producers and workers:
# taskiq and taskiq-redis, pinned with their dependencies in e2e/python/requirements.txt.
KIQ_TASKIQ_VENV_NAME=venv-taskiq-0.13.0-redis-1.2.4

# Creates, when missing, a Python venv with e2e/python/requirements.txt from PyPI, and exports
# KIQ_TASKIQ_PYTHON, its python, for the Taskiq interop tests.
kiq_need_taskiq_venv() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  KIQ_TASKIQ_PYTHON=$(kiq_venv "$KIQ_TASKIQ_VENV_NAME" "the Taskiq interop tests" \
    "from importlib.metadata import version; import sys; sys.exit(version('taskiq') != '0.13.0' or version('taskiq-redis') != '1.2.4')" \
    -r "$root/e2e/python/requirements.txt") || return 1
  export KIQ_TASKIQ_PYTHON
}
