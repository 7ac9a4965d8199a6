#!/bin/bash
# Builds tierlm (CUDA code too, when nvcc is present) and runs every test through ctest.
# GPU tests skip (exit 77) on machines without a GPU. Usage: scripts/test.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
# CI builds one CUDA architecture to save time; users get 80;86;89;90 by default.
[ -n "${TL_CUDA_ARCHS:-}" ] && args+=(-DCMAKE_CUDA_ARCHITECTURES="$TL_CUDA_ARCHS")
cmake -S . -B "$dir" "${args[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)"
ctest --test-dir "$dir" --output-on-failure -j"$(nproc)"
