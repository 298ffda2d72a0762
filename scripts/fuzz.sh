#!/usr/bin/env bash
# Runs every cargo-fuzz target for N seconds each (default 20: the CI smoke run; use 600+
# while developing). Only stable Rust exists here, so RUSTC_BOOTSTRAP=1 unlocks the
# sanitizer flags cargo-fuzz needs. Corpora live in fuzz/corpus/<target> and are committed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1
for target in kafka_request record_batch recovery_scan amqp_frame; do
  mkdir -p "corpus/$target"
  echo "== fuzz $target for ${seconds}s"
  cargo fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
    | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done|==[0-9]+==ERROR|SUMMARY)' || true
  # A crash leaves an artifact and a non-zero exit: fail loudly.
  if ls "artifacts/$target"/crash-* "artifacts/$target"/oom-* "artifacts/$target"/leak-* 2>/dev/null | grep -q .; then
    echo "fuzz target $target found a failing input:"; ls "artifacts/$target"
    exit 1
  fi
done
