#!/usr/bin/env bash
# Installs the interop clients if missing: kcat (Debian), a Python venv with confluent-kafka
# kafka-python and pika (PyPI), another with quixstreams (PyPI), kafkajs and amqplib (npm). Idempotent; quick when everything is present.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v kcat >/dev/null; then
  as_root apt-get update -qq && as_root apt-get install -y -qq kcat >/dev/null
fi
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
fi
if ! "$here/.venv/bin/python" -c 'import confluent_kafka, kafka, pika' 2>/dev/null; then
  "$here/.venv/bin/pip" install -q -r "$here/requirements.txt"
fi
# quixstreams pins its own confluent-kafka: a venv of its own, so the main one keeps 2.16.
if [ ! -x "$here/quix/.venv/bin/python" ]; then
  python3 -m venv "$here/quix/.venv"
fi
if ! "$here/quix/.venv/bin/python" -c 'import quixstreams' 2>/dev/null; then
  "$here/quix/.venv/bin/pip" install -q -r "$here/quix/requirements.txt"
fi
if [ ! -d "$here/node_modules/kafkajs" ] || [ ! -d "$here/node_modules/amqplib" ]; then
  (cd "$here" && npm install --no-audit --no-fund --silent)
fi
