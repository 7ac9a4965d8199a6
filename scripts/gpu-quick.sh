#!/bin/bash
# Quick GPU iteration: build, GPU tests, one generate on the GPU, the 14B benchmark.
#   device run: source .devdeps/bootstrap.sh && scripts/gpu-quick.sh
set -uo pipefail
cd "$(dirname "$0")/.."
command -v pkg-config >/dev/null || export PATH=$PATH:/opt/devdeps/usr/bin
out=${OUT:-/tmp/tierlm-out}
mkdir -p "$out"
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CUDA_ARCHITECTURES=90 \
    > "$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; exit 1; }
cmake --build build-gpu -j16 > "$out/build.log" 2>&1 || { grep -E "error" "$out/build.log" | head -30; exit 1; }
for src in tests/gpu/test_gpu_*.c; do t=$(basename "$src" .c)
    timeout 300 build-gpu/tests/$t > "$out/$t.log" 2>&1; echo "$t rc=$?"; done
grep -E "^  |FAIL" "$out/test_gpu_parity.log" | head -60
grep -E "^sweep|^timing|rows  |^  [a-z]|FAIL|explained$|test_gpu_sample:" "$out/test_gpu_sample.log" | head -60
build-gpu/tierlm generate --device cuda --model tests/fixtures/qwen2-bf16 --prompt-ids 1,2,3,4 \
    --prompt-ids 5 --max-tokens 20 --temperature 0 2>&1 | tail -6
if [ -z "${SKIP_BENCH:-}" ]; then
    timeout 300 build-gpu/bench_gpu --model bench/models/DeepSeek-R1-Distill-Qwen-14B \
        ${BENCH_ARGS:-} 2>&1 | tail -9
    echo "-- the same, --enforce-eager (baseline in the same run) --"
    timeout 200 build-gpu/bench_gpu --model bench/models/DeepSeek-R1-Distill-Qwen-14B \
        --enforce-eager --prefill 16 --batches 1,16 2>&1 | tail -2
fi
