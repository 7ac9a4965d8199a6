#!/bin/bash
# Regenerates the HF fixtures on the GPU machine (torch + transformers), then builds and runs the
# GPU parity test against them; the new fixtures come back as $OUT/fixtures.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python3 scripts/make_fixtures.py tests/fixtures 2>&1 | grep -v -i "warn\|Loading\|Writing"
tar czf "${OUT:-/tmp}/fixtures.tgz" -C tests/fixtures .
scripts/gpu-quick.sh
