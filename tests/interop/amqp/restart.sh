#!/usr/bin/env bash
# Restarts the interop server on the same data directory and ports (the pika suite's
# restart checks): gracefully (SIGTERM), or with `restart.sh kill` by SIGKILL, as a crash.
# Env: SLUICE_BIN_PATH, SLUICE_WORK (holds pid, data, server.log), KAFKA_PORT, AMQP_PORT.
set -euo pipefail
work=$SLUICE_WORK
old=$(cat "$work/pid")
if [ "${1:-}" = kill ]; then kill -KILL "$old"; else kill -TERM "$old"; fi
# A zombie (the parent has not reaped it yet) has stopped too.
while [ -e "/proc/$old" ] && [ "$(awk '{print $3}' "/proc/$old/stat" 2>/dev/null)" != Z ]; do
  sleep 0.05
done
: >"$work/server.log"
"$SLUICE_BIN_PATH" server --data-dir "$work/data" --kafka-listener "127.0.0.1:$KAFKA_PORT" \
  --amqp-listener "127.0.0.1:$AMQP_PORT" --admin-listener 127.0.0.1:0 \
  --set kafka.telemetry_push_interval_ms=500 \
  --set groups.consumer_heartbeat_interval_ms=500 >>"$work/server.log" 2>&1 &
echo $! >"$work/pid"
for _ in $(seq 1 600); do
  grep -q '^  amqp' "$work/server.log" && exit 0
  sleep 0.05
done
echo "sluice did not restart:"; cat "$work/server.log"; exit 1
