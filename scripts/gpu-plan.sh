#!/bin/bash
# The planner on the GPU machine: build, the planner-vs-backend memory test, a fresh
# calibration (timed: the goal is under 2 s of measuring), the measured ceilings, and the plan of
# the 14B on a 24 GB budget for batch 1, 16 and 64. The ceilings file lands in $OUT.
#   device run: source .devdeps/bootstrap.sh && scripts/gpu-plan.sh
set -uo pipefail
cd "$(dirname "$0")/.."
command -v pkg-config >/dev/null || export PATH=$PATH:/opt/devdeps/usr/bin
out=${OUT:-/tmp/tierlm-out}
mkdir -p "$out"
export XDG_CACHE_HOME="$out/cache"
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CUDA_ARCHITECTURES=90 \
    > "$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; exit 1; }
cmake --build build-gpu -j16 --target tierlm test_planner test_planner_kernels \
    > "$out/build.log" 2>&1 || { grep -E "error" "$out/build.log" | head -30; exit 1; }
build-gpu/tests/test_planner_kernels; echo "test_planner_kernels rc=$?"
build-gpu/tests/test_planner_kernels --gpu; echo "test_gpu_planner rc=$?"
build-gpu/tests/test_planner > "$out/test_planner.log" 2>&1; echo "test_planner rc=$?"
m=bench/models/DeepSeek-R1-Distill-Qwen-14B
t0=$(date +%s%N)
build-gpu/tierlm plan --model $m --gpu-memory-gb 24 --max-model-len 4096 --expected-len 576 \
    --expected-batch 1 --recalibrate > "$out/plan_b1.txt" 2> "$out/plan_b1.err"
echo "tierlm plan --recalibrate: $(( ($(date +%s%N) - t0) / 1000000 )) ms wall (CUDA context and planning included; \"seconds\" below is the measuring alone)"
cat "$out"/cache/tierlm/*.json
cat "$out/plan_b1.txt"
for b in 16 64; do
    build-gpu/tierlm plan --model $m --gpu-memory-gb 24 --max-model-len 4096 --expected-len 576 \
        --expected-batch $b > "$out/plan_b$b.txt" 2>&1
    sed -n '/^placement/,/^  [^ ]/p;/^predicted/,$p' "$out/plan_b$b.txt"
done
