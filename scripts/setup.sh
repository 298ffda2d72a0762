#!/usr/bin/env bash
# Installs what building and testing Sluice needs on a fresh machine, if missing: cmake (the
# rdkafka crate builds librdkafka with it; clippy runs that build script too), kcat, Python
# and Node for the interop suite, then the interop clients themselves. Idempotent.
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
