#!/usr/bin/env bash
# A demo of the whole system on this machine: installs redis-server if missing, starts a
# private Redis on a free port, starts `taskctl worker --workers 2`, a scheduler and
# `taskctl serve` (HTTP API, dashboard, metrics), dispatches tasks (also a chain, a group and
# one over HTTP) and prints their results, then shuts everything down cleanly.
#
#   scripts/demo.sh          run the demo and stop
#   scripts/demo.sh --keep   leave the system running (dashboard link printed) until Ctrl-C
set -euo pipefail
keep=0
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown option $arg (try --keep)" >&2; exit 2 ;;
  esac
done
if [ "$keep" = 1 ]; then
  # Each background process in a process group of its own: Ctrl-C then reaches this script
  # only, which stops Redis last, after the workers have drained.
  set -m
fi
cd "$(dirname "$0")/.."
source scripts/setup.sh
kiq_need_cargo
kiq_need_packages

echo "==> building taskctl and the quickstart client (a few minutes the first time)"
cargo build --locked -p kiq-examples --bins
bin=target/debug

echo
echo "==> the tasks linked into taskctl (\$ taskctl tasks)"
"$bin/taskctl" tasks

work=$(mktemp -d -t kiq-demo.XXXXXX)
redis_pid=""
workers_pid=""
scheduler_pid=""
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ -n "$scheduler_pid" ] && kill -0 "$scheduler_pid" 2>/dev/null; then
    kill -TERM "$scheduler_pid" 2>/dev/null || true
    wait "$scheduler_pid" 2>/dev/null || true
  fi
  if [ -n "$workers_pid" ] && kill -0 "$workers_pid" 2>/dev/null; then
    kill -TERM "$workers_pid" 2>/dev/null || true
    wait "$workers_pid" 2>/dev/null || true
  fi
  if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A private Redis on a free loopback port (never 6379).
for _ in $(seq 1 20); do
  port=$(( 20000 + RANDOM % 20000 ))
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" --logfile "$work/redis.log" --daemonize no &
  redis_pid=$!
  for _ in $(seq 1 100); do
    if redis-cli -p "$port" ping >/dev/null 2>&1; then break; fi
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.05
  done
  if redis-cli -p "$port" ping >/dev/null 2>&1; then break; fi
  redis_pid=""
done
[ -n "$redis_pid" ] || { echo "could not start redis-server" >&2; exit 1; }
export KIQ_REDIS_URL="redis://127.0.0.1:$port"
echo "==> private Redis at $KIQ_REDIS_URL"

echo "==> taskctl worker --workers 2"
"$bin/taskctl" worker --workers 2 --concurrency 16 >"$work/workers.log" 2>&1 &
workers_pid=$!
# Wait until both worker processes have joined the consumer group.
for _ in $(seq 1 200); do
  n=$(redis-cli -p "$port" XINFO CONSUMERS "{kiq:default}:stream" kiq 2>/dev/null | grep -c '^name$' || true)
  [ "${n:-0}" -ge 2 ] && break
  sleep 0.05
done
grep -E "task\(s\) registered|queues:|worker process started" "$work/workers.log" || true

echo
echo "==> taskctl scheduler (one replica; run as many as you like, one is active)"
"$bin/taskctl" scheduler --lease-ttl 3s >"$work/scheduler.log" 2>&1 &
scheduler_pid=$!
"$bin/taskctl" schedule add demo-health --task kiq_examples::maintenance::health_check --cron "@every 1s" \
  --description "demo: a health check every second"

echo
api_port=$(( 40000 + RANDOM % 20000 ))
export KIQ_API_TOKEN="demo-token-$RANDOM$RANDOM"
echo "==> taskctl serve --listen 127.0.0.1:$api_port (API, dashboard, /metrics)"
"$bin/taskctl" serve --listen "127.0.0.1:$api_port" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 200); do
  curl -s -o /dev/null "http://127.0.0.1:$api_port/" 2>/dev/null && break
  sleep 0.05
done

echo
echo "==> quickstart: dispatching tasks and waiting for their results"
"$bin/quickstart"

echo
echo "==> taskctl kiq (dispatch by name from a shell)"
echo "\$ taskctl kiq kiq_examples::math::add --args '[40, 2]' --wait 5s"
"$bin/taskctl" kiq kiq_examples::math::add --args '[40, 2]' --wait 5s

echo
echo "==> the HTTP API: create a task by name at high priority, then read it back"
if command -v curl >/dev/null 2>&1; then
  auth="Authorization: Bearer $KIQ_API_TOKEN"
  echo "\$ curl -X POST /api/tasks -d '{\"task\": \"kiq_examples::math::add\", \"args\": [20, 22], \"priority\": \"high\"}'"
  created=$(curl -s -H "$auth" -H 'Content-Type: application/json' \
    -d '{"task": "kiq_examples::math::add", "args": [20, 22], "priority": "high"}' \
    "http://127.0.0.1:$api_port/api/tasks")
  echo "$created"
  id=$(echo "$created" | sed -E 's/.*"id":"([^"]+)".*/\1/')
  "$bin/taskctl" wait "$id" --timeout 5s >/dev/null || true
  "$bin/taskctl" task "$id"
  echo "\$ curl /metrics | grep kiq_queue_waiting"
  curl -s -H "$auth" "http://127.0.0.1:$api_port/metrics" | grep '^kiq_queue_waiting' || true
  echo "(the dashboard, while this demo runs: http://127.0.0.1:$api_port/#token=$KIQ_API_TOKEN)"
else
  echo "(curl is not installed: skipping the HTTP calls)"
fi

echo
echo "==> the schedule after a few ticks (each tick fired exactly once)"
sleep 3
"$bin/taskctl" schedule show demo-health | grep -A6 '"recent_fires"' || true

echo
echo "==> taskctl status"
"$bin/taskctl" status

if [ "$keep" = 1 ]; then
  echo
  echo "==> running until Ctrl-C"
  echo "dashboard:  http://127.0.0.1:$api_port/#token=$KIQ_API_TOKEN"
  echo "Redis:      $KIQ_REDIS_URL   (try: KIQ_REDIS_URL=$KIQ_REDIS_URL $bin/taskctl status)"
  echo "logs:       $work/{workers,scheduler,server}.log"
  stop_requested=0
  trap 'stop_requested=1' INT TERM
  while [ "$stop_requested" = 0 ] && kill -0 "$workers_pid" 2>/dev/null; do
    sleep 1 || true
  done
  trap - INT TERM
fi

echo
echo "==> stopping the server, the scheduler and the workers (SIGTERM: drain, then exit)"
kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=""
kill -TERM "$scheduler_pid"
wait "$scheduler_pid" || true
scheduler_pid=""
kill -TERM "$workers_pid"
wait "$workers_pid"
status=$?
workers_pid=""
grep -E "supervisor stopped|worker stopped" "$work/workers.log" | tail -3
echo
echo "demo finished cleanly (workers exited with status $status)"
