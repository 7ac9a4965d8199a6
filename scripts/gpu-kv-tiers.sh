#!/bin/bash
# The KV tiers on the GPU machine (issue 7 §4-5), in one call per stage:
#   scripts/gpu-kv-tiers.sh test        build, then test_gpu_kvcrc + test_gpu_kv_tiers + test_kv_tiers
#   scripts/gpu-kv-tiers.sh bench       tierlm bench kv-tiers, 14B shape bf16: swap rates vs pinned
#                                       copies, NVMe tier vs raw io_uring O_DIRECT (same run); CRC32C
#                                       on the GPU (the default), then on host threads (--kv-host-crc)
#   scripts/gpu-kv-tiers.sh throughput  bench throughput with KV demand 3x the GPU KV: unpressured,
#                                       recompute only, swap (host), swap (auto), swap (host+NVMe),
#                                       swap (host) with vLLM's fcfs order instead of fair
#   scripts/gpu-kv-tiers.sh all         the three (about 10 minutes); RUNS="1 3" picks throughput runs
# NVME_DIR (default /tmp) is where swap files go; NP (128) prompts; BLOCKS (2048) the pressured
# GPU KV blocks (64 sequences x 1536 tokens need 6144). Logs go to $OUT (or /tmp/tierlm-out).
set -uo pipefail
cd "$(dirname "$0")/.."
command -v pkg-config >/dev/null || export PATH=$PATH:/opt/devdeps/usr/bin
stage=${1:-all}
out=${OUT:-/tmp/tierlm-out}
nvme=${NVME_DIR:-/tmp}
np=${NP:-128}
blocks=${BLOCKS:-2048}
mkdir -p "$out"
model=bench/models/DeepSeek-R1-Distill-Qwen-14B
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1
df -hT "$nvme" | tail -1

if [ ! -x build-gpu/tierlm ] || [ "$stage" = test ] || [ "$stage" = all ]; then
    cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CUDA_ARCHITECTURES=90 \
        > "$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; exit 1; }
    cmake --build build-gpu -j16 > "$out/build.log" 2>&1 ||
        { grep -E "error" "$out/build.log" | head -30; exit 1; }
fi

if [ "$stage" = test ] || [ "$stage" = all ]; then
    build-gpu/tests/test_gpu_kvcrc > "$out/test_gpu_kvcrc.log" 2>&1
    echo "test_gpu_kvcrc: rc=$?"
    grep -vE "^  ok " "$out/test_gpu_kvcrc.log" | head -20
    for t in test_gpu_kv_tiers test_kv_tiers; do
        TMPDIR=$nvme build-gpu/tests/$t > "$out/$t.log" 2>&1
        echo "$t: rc=$? ($(grep -c '\[       OK \]' "$out/$t.log") ok)"
        grep -E "FAILED|ERROR|skip" "$out/$t.log" | head -5
        grep -E "NVMe tier in|preemptions" "$out/$t.log" | head -4
    done
fi

if [ "$stage" = bench ] || [ "$stage" = all ]; then
    for crc in gpu host; do
        extra=()
        [ $crc = host ] && extra=(--kv-host-crc)
        build-gpu/tierlm bench kv-tiers --model $model --load-format dummy --dtype bfloat16 \
            --swap-space 16 --nvme-swap-dir "$nvme" --nvme-swap-gb 12 --gib 8 --repeats 3 \
            "${extra[@]}" > "$out/bench_kv_tiers_$crc.log" 2>&1
        echo "bench kv-tiers, CRC32C on the $crc: rc=$?"
        cat "$out/bench_kv_tiers_$crc.log"
        echo
    done
fi

if [ "$stage" = throughput ] || [ "$stage" = all ]; then
    common=(--model $model --load-format dummy --dtype bfloat16 --input-len 512 --output-len 1024
            --num-prompts "$np" --max-num-seqs 64)
    declare -A runs=(
        [1-unpressured]=""
        [2-recompute]="--num-gpu-blocks-override $blocks --preemption-mode recompute"
        [3-swap-host]="--num-gpu-blocks-override $blocks --swap-space 24 --preemption-mode swap"
        [4-auto-host]="--num-gpu-blocks-override $blocks --swap-space 24"
        [5-swap-nvme]="--num-gpu-blocks-override $blocks --swap-space 2 --nvme-swap-dir $nvme --nvme-swap-gb 24 --preemption-mode swap"
        [6-swap-host-fcfs]="--num-gpu-blocks-override $blocks --swap-space 24 --preemption-mode swap --scheduling-policy fcfs"
    )
    # RUNS="1 3 6" runs only those (by number)
    for k in $(printf '%s\n' "${!runs[@]}" | sort); do
        [ -n "${RUNS:-}" ] && [[ " $RUNS " != *" ${k%%-*} "* ]] && continue
        # shellcheck disable=SC2086
        build-gpu/tierlm bench throughput "${common[@]}" ${runs[$k]} \
            --output-json "$out/tp_$k.json" > "$out/tp_$k.log" 2>&1
        echo "$k (rc=$?): $(grep -E '^Throughput' "$out/tp_$k.log")"
        grep -E "^Steps|^KV tiers|^KV blocks|^Decode-only" "$out/tp_$k.log"
    done
    base=$(grep -oE '[0-9.]+ total tokens/s' "$out/tp_1-unpressured.log" | cut -d' ' -f1)
    echo
    echo "== bench throughput, KV demand 3x the GPU KV ($blocks blocks), $np prompts 512 -> 1024 =="
    # What a perfect scheduler would reach at the same step costs: the run's time less its steps
    # beyond the memory bound (the "KV blocks" line) at its mean step time.
    elapsed() { awk -v np="$np" '/^Throughput:/ { print np / $2 }' "$1"; }
    tu=$(elapsed "$out/tp_1-unpressured.log")
    for k in $(printf '%s\n' "${!runs[@]}" | sort); do
        v=$(grep -oE '[0-9.]+ total tokens/s' "$out/tp_$k.log" | cut -d' ' -f1)
        [ -n "$v" ] && [ -n "$base" ] || continue
        line="$k: $v total tokens/s = $(awk -v v="$v" -v b="$base" 'BEGIN { printf "%.3f", v / b }') of unpressured"
        if [ "$k" != 1-unpressured ] && [ -n "$tu" ]; then
            line+=$(awk -v tu="$tu" -v tp="$(elapsed "$out/tp_$k.log")" '
                /^Steps:/ { n = $2; ms = substr($3, 2) }
                /^KV blocks:/ { for (i = 1; i <= NF; i++) if ($i == "than") s = $(i + 1) }
                END { if (n >= s && s > 0)
                          printf "; %d steps, memory bound %d: a perfect scheduler %.3f", n, s,
                                 tu / (tp - (n - s) * ms / 1e3) }' "$out/tp_$k.log")
        fi
        echo "$line"
    done
fi
