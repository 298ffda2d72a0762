#!/usr/bin/env bash
# Interop suite: the real `sluice` binary driven by kcat, confluent-kafka (Python),
# kafka-python and kafkajs (Node), pika and amqplib (AMQP 0-9-1), each installed from the package registries if missing;
# and log compaction end to end with confluent-kafka (its own broker, killed on purpose).
# Usage: tests/interop/run.sh [path/to/sluice]   (default: target/debug/sluice)
# Each client script prints "N passed, N failed"; this script fails if any client fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-${SLUICE_BIN:-$root/target/debug/sluice}}
[ -x "$bin" ] || { echo "no sluice binary at $bin: run 'cargo build -p sluice' first" >&2; exit 2; }

"$here/setup.sh"

work=$(mktemp -d)
# Port 0: the OS picks, and the startup banner ("  kafka  <addr> ...") says which; no port
# is handed over between a probe and the server (a race with anything else on the machine).
"$bin" server --data-dir "$work/data" --kafka-listener 127.0.0.1:0 \
  --amqp-listener 127.0.0.1:0 --admin-listener 127.0.0.1:0 \
  --set kafka.telemetry_push_interval_ms=500 \
  --set groups.consumer_heartbeat_interval_ms=500 >"$work/server.log" 2>&1 &
pid=$!
cleanup() {
  # The AMQP suite's restart replaces the server: stop whichever is running now.
  local cur; cur=$(cat "$work/pid" 2>/dev/null || echo "$pid")
  kill "$cur" 2>/dev/null || true; kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  while [ -e "/proc/$cur" ] && [ "$(awk '{print $3}' "/proc/$cur/stat" 2>/dev/null)" != Z ]; do
    sleep 0.05
  done
  rm -rf "$work"
}
trap cleanup EXIT
kaddr=
for _ in $(seq 1 600); do
  kaddr=$(awk '$1 == "kafka" { print $2; exit }' "$work/server.log" 2>/dev/null || true)
  [ -n "$kaddr" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "sluice server exited:"; cat "$work/server.log"; exit 2; }
  sleep 0.05
done
[ -n "$kaddr" ] || { echo "sluice server printed no banner:"; cat "$work/server.log"; exit 2; }
kport=${kaddr##*:}
export BOOTSTRAP="127.0.0.1:$kport"
# The admin URL (for checks that read /metrics): "  admin  http://<addr> (...)".
export ADMIN_URL=$(awk '$1 == "admin" { print $2; exit }' "$work/server.log")
aaddr=$(awk '$1 == "amqp" { print $2; exit }' "$work/server.log")
ADMIN_ADDR=$(awk '$1 == "admin" { sub("http://", "", $2); print $2; exit }' "$work/server.log")
export ADMIN_ADDR
export AMQP_PORT=${aaddr##*:}
# The AMQP suite restarts the broker (same data, same ports) to check what survives.
echo "$pid" >"$work/pid"
export SLUICE_BIN_PATH=$bin SLUICE_WORK=$work KAFKA_PORT=$kport
export SLUICE_RESTART="$here/amqp/restart.sh"

failed=0
run() {
  local name=$1; shift
  echo "== $name"
  if ! timeout 600 "$@"; then
    echo "!! $name failed"; failed=$((failed + 1))
  fi
}
run kcat bash "$here/kcat.sh"
run confluent-kafka "$here/.venv/bin/python" "$here/confluent_kafka_test.py"
run kafka-python "$here/.venv/bin/python" "$here/kafka_python_test.py"
run kafkajs node "$here/kafkajs_test.js"
# Its own broker (short compaction interval, killed on purpose).
run compaction "$here/.venv/bin/python" "$here/compaction_test.py"
# A stateful quixstreams app restoring its state from a compacted changelog (its own broker).
run quixstreams "$here/quix/.venv/bin/python" "$here/quix/app_test.py"
# amqplib (Node) on the AMQP door: before pika, which restarts the broker.
run amqplib node "$here/amqp/amqplib_test.js"
# Last: it restarts the broker.
run pika "$here/.venv/bin/python" "$here/amqp/pika_test.py"
if [ "$failed" -ne 0 ]; then
  echo "interop: $failed client suite(s) failed; server log tail:"; tail -n 40 "$work/server.log"
  exit 1
fi
echo "interop: all client suites passed"
