#!/usr/bin/env bash
# Runs every check kiq's CI runs: formatting, clippy, the whole test suite (unit, macro
# compile-errors, end-to-end on private redis-server instances), doc tests, and a tiny
# benchmark run. Installs redis-server, openssl, chromium and chromium-driver from Debian's
# packages if missing, and Python venvs with croniter (the cron cross-check's oracle) and with
# taskiq + taskiq-redis (the Taskiq interop tests), cached in ~/.cache/kiq.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
kiq_need_cargo
kiq_need_packages --browser
kiq_need_python_venv
kiq_need_taskiq_venv

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
# A run from a clean clone gains nothing from incremental caches; they would double the disk used.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

# Each step's time is printed when the next starts, and all of them at the end.
step_name=""
step_start=$SECONDS
times=()
end_step() {
  if [ -n "$step_name" ]; then
    local took=$((SECONDS - step_start))
    echo "    ($took s)"
    times+=("$(printf '%5d s  %s' "$took" "$step_name")")
  fi
}
step() {
  end_step
  step_name="$*"
  step_start=$SECONDS
  echo
  echo "==> $*"
}

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The e2e fixtures turn on `otel`, which the workspace build then unifies into every crate: the
# library crates are also checked without it, as a user's default build compiles them.
step "cargo clippy (library crates without the otel feature)"
cargo clippy -p kiq -p kiq-broker -p kiq-worker -p kiq-server --all-targets --locked -- -D warnings

step "cargo test (builds every example, binary and test first)"
cargo test --workspace --all-targets --locked

# The end-to-end, workflow, scheduler and chaos suites again on a 3-master Redis Cluster and
# on a primary + replica under three Sentinels (the harness starts them from redis-server).
TOPOLOGY_SUITES=(--test end_to_end --test workflows --test delays --test priority
  --test reliability --test scheduler --test operations --test middleware --test queue_control)
for topology in cluster sentinel; do
  step "cargo test: e2e suites on $topology"
  # --workspace keeps the feature set of the run above, so nothing is built again.
  KIQ_TEST_TOPOLOGY=$topology cargo test --workspace --locked "${TOPOLOGY_SUITES[@]}"
  # Taskiq interop with taskiq-redis's cluster and Sentinel classes. (Python's
  # ListRedisScheduleSource cannot write to a cluster, so its schedules test runs on Sentinel.)
  skip=()
  if [ "$topology" = cluster ]; then skip=(--skip python_schedules); fi
  KIQ_TEST_TOPOLOGY=$topology cargo test --workspace --locked --test taskiq -- "${skip[@]}"
done

step "doc tests (the README is the kiq crate's documentation: its examples compile here)"
cargo test --workspace --doc --locked

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "cargo publish --dry-run (the published crates package and build on their own)"
# The dry run verifies each crate against the others through a local registry overlay whose
# sources cargo extracts under ~/.cargo/registry/src/-<hash of this path>/<crate>-<version>/ and
# never refreshes: a second run of the same version from the same path would verify against the
# first run's sources (it did, in CI). Remove kiq's extracts first.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/kiq-*-[0-9]*
cargo publish --workspace --dry-run --locked --allow-dirty

step "benchmark smoke run (tiny numbers: proves it works, measures nothing)"
cargo build --workspace --bins --locked  # kiq-bench runs kiq-examples' taskctl
target/debug/kiq-bench --tasks 2000 --samples 50 --load-rate 200

end_step
echo
echo "step times:"
printf '%s\n' "${times[@]}"
echo "all checks passed in $SECONDS s"
