#!/usr/bin/env bash
# Interop suite: the real `sluice` binary driven by kcat, confluent-kafka (Python),
# kafka-python and kafkajs (Node), each installed from the package registries if missing.
# Usage: tests/interop/run.sh [path/to/sluice]   (default: target/debug/sluice)
# Each client script prints "N passed, N failed"; this script fails if any client fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-${SLUICE_BIN:-$root/target/debug/sluice}}
[ -x "$bin" ] || { echo "no sluice binary at $bin: run 'cargo build -p sluice' first" >&2; exit 2; }

"$here/setup.sh"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
kport=$(free_port); aport=$(free_port)
"$bin" server --data-dir "$work/data" --kafka-listener "127.0.0.1:$kport" \
  --admin-listener "127.0.0.1:$aport" >"$work/server.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 200); do
  (echo >"/dev/tcp/127.0.0.1/$kport") 2>/dev/null && break
  sleep 0.05
done
export BOOTSTRAP="127.0.0.1:$kport"

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
if [ "$failed" -ne 0 ]; then
  echo "interop: $failed client suite(s) failed; server log tail:"; tail -n 40 "$work/server.log"
  exit 1
fi
echo "interop: all client suites passed"
