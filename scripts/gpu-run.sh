#!/bin/bash
# One call on the GPU machine: build (CUDA for sm_90), run every test (GPU tests included),
# run the GPU op test under compute-sanitizer, and benchmark the CPU backend. Prints a short
# table last. Expects the Debian packages the image lacks in .devdeps (../shared/device/
# fetch-debs.sh) and writes logs to $OUT when set.
#   device run: source .devdeps/bootstrap.sh && scripts/gpu-run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
# pkg-config may be missing there: fetch-debs with EXTRA_DEBS="pkgconf pkgconf-bin libpkgconf3 pkg-config"
command -v pkg-config >/dev/null || export PATH=$PATH:/opt/devdeps/usr/bin
out=${OUT:-/tmp/tierlm-out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1
lscpu | grep -E "Model name|^CPU\(s\)" | tr -s ' '

t0=$(date +%s)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CUDA_ARCHITECTURES=90 \
    > "$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; exit 1; }
cmake --build build-gpu -j16 > "$out/build.log" 2>&1 || { grep -E "error" "$out/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"

ctest --test-dir build-gpu --output-on-failure -j8 > "$out/ctest.log" 2>&1
ctest_rc=$?
tail -15 "$out/ctest.log"

san="not run"
if command -v compute-sanitizer >/dev/null && [ -x build-gpu/tests/test_gpu_ops ]; then
    compute-sanitizer --tool memcheck --error-exitcode 9 build-gpu/tests/test_gpu_ops \
        > "$out/memcheck.log" 2>&1 && san="clean" || san="FAILED (see memcheck.log)"
    tail -3 "$out/memcheck.log"
fi

# 0 = one thread per physical core (the default), then 8 and 1 threads. The matmul
# micro-benchmark runs in its own process: allocating and freeing its 3.4 GB just before the
# model benchmark made decode 4x slower on this VM.
for t in 0 8 1; do
    build-gpu/bench_cpu --threads $t > "$out/bench_gemv_t$t.log" 2>&1
    build-gpu/bench_cpu --model bench/models/qwen2.5-0.5b --tokens 32 --prefill 256 --threads $t \
        --skip-gemv > "$out/bench_cpu_t$t.log" 2>&1
done
tiny=$(build-gpu/tierlm generate --model tests/fixtures/qwen2-bf16 --prompt-ids 1,2,3,4,5,6,7,8 \
       --max-tokens 200 --temperature 0 --ignore-eos --max-model-len 256 2>&1 | grep speed)

echo
echo "== tierlm on $(hostname): tests rc=$ctest_rc, compute-sanitizer memcheck: $san =="
echo "tiny qwen2-bf16 (default threads): $tiny"
for t in 0 8 1; do
    echo "-- bench_cpu --threads $t: $(head -1 "$out/bench_cpu_t$t.log") (Qwen2.5-0.5B shape, dummy bf16) --"
    sed -n '/^what/,$p' "$out/bench_gemv_t$t.log"
    sed -n '/^what/,$p' "$out/bench_cpu_t$t.log" | tail -2
done
