#!/bin/bash
# One call on the GPU machine for the engine-level work: build (sm_90), the GPU tests, then the
# 14B-shape benchmarks through the real engine (`tierlm bench throughput`, dummy bf16 weights),
# and a short table last. Sections can be skipped: SKIP_TESTS=1, SKIP_TP=1 (throughput),
# SKIP_OFFLOAD=1. CPU=1 adds the host CPU's matmul test and benchmark. DECODE=1 adds the GPU backend's benchmark (bench_gpu: batch-1 decode against
# the HBM floor with and without the fused GEMVs, prefill, batch 64/256) and the engine's
# batch-1 decode. Logs go to $OUT.
#   device run: source .devdeps/bootstrap.sh && scripts/gpu-engine.sh
set -uo pipefail
cd "$(dirname "$0")/.."
command -v pkg-config >/dev/null || export PATH=$PATH:/opt/devdeps/usr/bin
out=${OUT:-/tmp/tierlm-out}
mkdir -p "$out"
m14=bench/models/DeepSeek-R1-Distill-Qwen-14B
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1
t0=$(date +%s)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CUDA_ARCHITECTURES=90 \
    > "$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; exit 1; }
cmake --build build-gpu -j16 > "$out/build.log" 2>&1 || { grep -E "error" "$out/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
missing=$(ldd build-gpu/tierlm | grep "not found")
[ -n "$missing" ] && echo "tierlm is missing libraries: $missing"

table=()
row() { table+=("$(printf '%-58s %s' "$1" "$2")"); }

if [ -z "${SKIP_TESTS:-}" ]; then
    for t in ${GPU_TESTS:-test_gpu_sample test_gpu_placement test_gpu_kv_tiers test_gpu_parity test_gpu_ops test_gpu_tp}; do
        [ -x build-gpu/tests/$t ] || continue
        args=""; [ $t = test_planner_kernels ] && args=--gpu
        TMPDIR=${NVME_DIR:-/tmp} timeout 400 build-gpu/tests/$t $args > "$out/$t.log" 2>&1
        rc=$?
        row "$t" "rc=$rc"
        [ $rc = 0 ] || tail -25 "$out/$t.log"
    done
    grep -E "FAIL" "$out"/test_gpu_*.log 2>/dev/null | head -30
    tail -12 "$out/test_gpu_sample.log" 2>/dev/null
fi

if [ -n "${CPU:-}" ]; then
    # the host CPU's kernels: the AVX512-BF16 path's test and its rate against the GEMM path
    echo "host CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) threads," \
        "flags: $(grep -o 'avx512_bf16\|amx_bf16\|avx512f ' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    timeout 300 build-gpu/tests/test_cpu_ops > "$out/test_cpu_ops.log" 2>&1
    row "test_cpu_ops (host CPU)" "rc=$?"
    timeout 300 build-gpu/bench_cpu > "$out/bench_cpu.log" 2>&1
    grep -E "ceiling|GEMV|GEMM|AVX512|threads" "$out/bench_cpu.log"
    timeout 120 build-gpu/bench_cpu --attention > "$out/bench_cpu_attention.log" 2>&1
    tail -8 "$out/bench_cpu_attention.log"
    timeout 120 build-gpu/bench_sampler > "$out/bench_sampler.log" 2>&1
    tail -7 "$out/bench_sampler.log"
fi

if [ -n "${DECODE:-}" ]; then
    for v in fused unfused; do
        flag=""; [ $v = unfused ] && flag=--no-fuse
        timeout 300 build-gpu/bench_gpu --model $m14 --batches ${DECODE_BATCHES:-1,8,16,64,256} \
            --steps 32 $flag > "$out/bench_gpu_$v.log" 2>&1
        grep -E "HBM|prefill|decode batch" "$out/bench_gpu_$v.log" | sed "s/^/[$v] /"
        row "bench_gpu $v: batch-1 decode" "$(grep -E "decode batch 1," "$out/bench_gpu_$v.log" | tr -s ' ')"
    done
fi

tp() { # name, then bench throughput flags
    local name=$1; shift
    timeout 500 build-gpu/tierlm bench throughput --model $m14 --load-format dummy "$@" \
        --output-json "$out/$name.json" > "$out/$name.log" 2>&1
    local rc=$?
    local line
    line=$(grep -E "^Throughput|^Decode-only" "$out/$name.log" | tr '\n' ' ')
    [ $rc = 0 ] || { line="rc=$rc $(tail -3 "$out/$name.log" | tr '\n' ' ')"; }
    row "$name" "$line"
}

if [ -z "${SKIP_TP:-}" ]; then
    tp tp_512x128x256 --input-len 512 --output-len 128 --num-prompts 256 ${TP_ARGS:-}
    [ -n "${TP_LONG:-}" ] && tp tp_1024x1024x128 --input-len 1024 --output-len 1024 --num-prompts 128 ${TP_ARGS:-}
fi

[ -n "${DECODE:-}" ] && tp tp_bs1 --input-len 512 --output-len 128 --num-prompts 8 --max-num-seqs 1

if [ -z "${SKIP_OFFLOAD:-}" ]; then
    # the seed's case: a 24 GB card; the planner chooses the placement for each batch
    for b in ${OFFLOAD_BATCHES:-1 16 64}; do
        tp offload24_b$b --input-len 512 --output-len 64 --num-prompts $b --max-num-seqs $b \
            --gpu-memory-gb 24 --max-model-len 576 --cpu-offload-gb auto --expected-batch $b \
            ${OFFLOAD_ARGS:-}
        grep -E "^Placement|^Device busy|^CPU lane|^CPU |^Weight streaming" "$out/offload24_b$b.log"
    done
fi

if [ -n "${SERVE:-}" ]; then
    build-gpu/tierlm serve --model $m14 --load-format dummy --max-model-len 4096 --port 8000 \
        ${SERVE_ARGS:-} --quiet > "$out/serve.log" 2>&1 &
    spid=$!
    for i in $(seq 1 120); do curl -sf localhost:8000/health >/dev/null 2>&1 && break; sleep 1; done
    build-gpu/tierlm bench serve --port 8000 --num-prompts ${SERVE_PROMPTS:-100} \
        --random-input-len 512 --random-output-len 128 --ignore-eos --request-rate 4 \
        --output-json "$out/serve_rate4.json" > "$out/serve_rate4.log" 2>&1
    row "serve rate 4, 512 in / 128 out" "$(grep -iE "Median TTFT|Median TPOT" "$out/serve_rate4.log" | tr -s ' ' | tr '\n' ' ')"
    build-gpu/tierlm bench serve --port 8000 --num-prompts 8 --random-input-len 512 \
        --random-output-len 128 --ignore-eos --max-concurrency 1 \
        --output-json "$out/serve_bs1.json" > "$out/serve_bs1.log" 2>&1
    row "serve batch 1 (max-concurrency 1)" "$(grep -iE "Output token throughput|Median TPOT" "$out/serve_bs1.log" | tr -s ' ' | tr '\n' ' ')"
    kill $spid; wait $spid 2>/dev/null
    tp tp_bs1 --input-len 512 --output-len 128 --num-prompts 8 --max-num-seqs 1
fi

# the calibration this machine's engine runs used (docs/ceilings-h100-measured.json comes from it)
cp "${XDG_CACHE_HOME:-$HOME/.cache}"/tierlm/ceilings-*.json "$out/" 2>/dev/null

# everything in one file: the device hands back at most 8
tar czf "$out/logs.tgz" -C "$out" $(cd "$out" && ls *.log *.json 2>/dev/null | grep -v -e build.log -e cmake.log) 2>/dev/null
echo
echo "== tierlm engine on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1) =="
printf '%s\n' "${table[@]}"
