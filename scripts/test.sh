#!/usr/bin/env bash
# The whole Sluice test suite, from a fresh machine:
#   1. installs what the tests need if it is missing (cmake for librdkafka; kcat, the Python
#      and Node Kafka and AMQP clients for the interop suite),
#   2. cargo's unit, property, crash and end-to-end tests (the real binary + rdkafka),
#   3. the interop suite: kcat, confluent-kafka, kafka-python, kafkajs, amqplib and pika (AMQP)
#      against the binary.
# Extra arguments are passed to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

cargo test --workspace --locked "$@"
tests/interop/run.sh target/debug/sluice
