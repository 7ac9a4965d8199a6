#!/bin/bash
# Two GPUs (issue 9): NCCL tensor parallelism end to end. Greedy ids of tp 2 (one process per
# GPU, NCCL all-reduce) against tp 1 on the fixtures, then the 14B shape's batch-1 decode at
# tp 1 and tp 2 (dummy bf16) if time allows. Short table last.
#   device run (a 2-GPU kind): source .devdeps/bootstrap.sh && scripts/gpu-tp2.sh
# The first run (session 4) hung in the first step at tp 2: NCCL_DEBUG=INFO (the default here)
# shows the transports; NCCL_P2P_DISABLE=1 or NCCL_SHM_DISABLE=1 in the environment test them.
set -uo pipefail
export NCCL_DEBUG=${NCCL_DEBUG:-INFO}
cd "$(dirname "$0")/.."
command -v pkg-config >/dev/null || export PATH=$PATH:/opt/devdeps/usr/bin
out=${OUT:-/tmp/tierlm-out}
mkdir -p "$out"
nvidia-smi -L
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CUDA_ARCHITECTURES=90 \
    > "$out/cmake.log" 2>&1 || { tail -20 "$out/cmake.log"; exit 1; }
cmake --build build-gpu -j32 --target tierlm > "$out/build.log" 2>&1 ||
    { grep -E "error" "$out/build.log" | head -20; exit 1; }
grep -i nccl "$out/cmake.log" | head -2
# the fixtures have a 512-token vocabulary
ids="--prompt-ids 97,11,187,0,355,374 --prompt-ids 5,6,7,8 --prompt-ids 100,200,300"
table=()
for f in qwen2-bf16 qwen2-f16 llama-tied-bf16; do
    for tp in 1 2; do
        timeout 60 build-gpu/tierlm generate --model tests/fixtures/$f $ids --max-tokens 24 \
            --temperature 0 --quiet --tensor-parallel-size $tp > "$out/gen_${f}_tp$tp.txt" \
            2> "$out/gen_${f}_tp$tp.err"
        echo "$f tp $tp rc=$?"
        tail -3 "$out/gen_${f}_tp$tp.err"
    done
    if cmp -s "$out/gen_${f}_tp1.txt" "$out/gen_${f}_tp2.txt" && [ -s "$out/gen_${f}_tp1.txt" ]; then
        table+=("$f: tp 2 greedy ids == tp 1")
    else
        table+=("$f: tp 2 greedy ids DIFFER from tp 1 (or empty)")
        diff "$out/gen_${f}_tp1.txt" "$out/gen_${f}_tp2.txt" | head -6
    fi
done
m14=bench/models/DeepSeek-R1-Distill-Qwen-14B
for tp in 1 2; do
    timeout 100 build-gpu/tierlm bench throughput --model $m14 --load-format dummy --input-len 128 \
        --output-len 64 --num-prompts 4 --max-num-seqs 1 --max-model-len 256 \
        --tensor-parallel-size $tp > "$out/b1_tp$tp.log" 2>&1
    table+=("14B batch 1, tp $tp (rc=$?): $(grep -E '^Decode-only' "$out/b1_tp$tp.log")")
done
printf '%s\n' "${table[@]}"
