#!/usr/bin/env bash
# The whole Sluice test suite, from a fresh machine:
#   1. installs what the tests need if it is missing (cmake for librdkafka; kcat, the Python
#      and Node Kafka clients for the interop suite),
#   2. cargo's unit, property, crash and end-to-end tests (the real binary + rdkafka),
#   3. the interop suite: kcat, confluent-kafka, kafka-python and kafkajs against the binary.
# Extra arguments are passed to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v kcat >/dev/null || missing+=(kcat)
command -v python3 >/dev/null || missing+=(python3 python3-venv)
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
tests/interop/setup.sh

cargo test --workspace --locked "$@"
tests/interop/run.sh target/debug/sluice
