#!/bin/bash
# test_plan_cli: `tierlm plan` as a user runs it, with no GPU and only config.json: every flag
# has a --help line, a plan with stated ceilings prints its table and JSON, the start-up check
# refuses with numbers and accepts what it suggests, bad flags exit 2, nothing-fits exits 1.
set -u
bin=$1
models=$2 # directory with DeepSeek-R1-Distill-Qwen-14B/config.json
src=$3    # the source tree (cli/cmd_plan.c, docs/ceilings-h100-assumed.json)
m=$models/DeepSeek-R1-Distill-Qwen-14B
ceil=$src/docs/ceilings-h100-assumed.json
export XDG_CACHE_HOME=$(mktemp -d)
trap 'rm -rf "$XDG_CACHE_HOME"' EXIT
fail=0
check() { # name, condition result
    if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi
}
expect() { # name, wanted exit code, wanted output fragment, command...
    local name=$1 code=$2 frag=$3
    shift 3
    out=$("$@" 2>&1)
    rc=$?
    if [ $rc = "$code" ] && grep -qF -- "$frag" <<<"$out"; then echo "ok   $name"; else
        echo "FAIL $name: exit $rc, output: $out"; fail=1; fi
}

help=$("$bin" plan --help)
missing=""
nflags=0
for f in $(grep -oE '^ +\{"[a-z0-9-]+", (required|no)_argument' "$src/cli/cmd_plan.c" |
           sed -E 's/^ +\{"([a-z0-9-]+)".*/\1/'); do
    grep -qE -- "--$f( |,|$)" <<<"$help" || missing="$missing --$f"
    nflags=$((nflags + 1))
done
check "every flag of tierlm plan ($nflags) has a --help line$missing" \
    "$([ -z "$missing" ] && [ $nflags -ge 25 ]; echo $?)"
"$bin" --help | grep -q "plan"
check "tierlm --help lists plan" $?

expect "plan a 14B on a 24 GB card" 0 "predicted decode" \
    "$bin" plan --model "$m" --gpu-memory-gb 24 --max-model-len 4096 --ceilings "$ceil" \
    --device cpu
json=$("$bin" plan --model "$m" --gpu-memory-gb 24 --max-model-len 4096 --ceilings "$ceil" \
       --device cpu --json --expected-batch 16)
python3 - "$json" <<'PY'
import json, sys
p = json.loads(sys.argv[1])
assert len(p["layers"]) == 48, p["layers"]
assert p["layers"].count("resident") < 48
assert [x["batch"] for x in p["predictions"]] == [1, 16, 64, 256]
assert all(x["tok_s"] > 0 and x["best_tok_s"] >= x["tok_s"] * 0.99 for x in p["predictions"])
m = p["memory"]
gpu = m["gpu_weights"] + m["gpu_staging"] + m["gpu_activations"] + m["gpu_workspace"] + m["gpu_kv"]
assert gpu <= m["gpu_budget"], (gpu, m["gpu_budget"])
assert m["gpu_budget"] == 24 * 2**30 - 2**29
PY
check "plan --json: 48 layers, 4 predictions, the GPU total within 23.5 GiB" $?

# this machine's ceilings: measured once, cached, read back
expect "measures this machine's ceilings" 0 "ceilings measured now on this machine" \
    "$bin" plan --model "$m" --gpu-memory-gb 24 --max-model-len 4096 --device cpu
expect "the second run reads them from the cache" 0 "ceilings measured earlier on this machine" \
    "$bin" plan --model "$m" --gpu-memory-gb 24 --max-model-len 4096 --device cpu
version=$(sed -nE 's/^#define CALIBRATE_VERSION ([0-9]+).*/\1/p' "$src/offload/calibrate.h")
python3 - "$XDG_CACHE_HOME"/tierlm/ceilings-*.json "$version" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
for k in ("cpu_read_gbps", "cpu_sgemm_gflops", "cpu_gemv1_gbps", "cpu_gemv8_gbps",
          "cpu_mm16_gflops", "cpu_mm64_gflops", "cpu_attn_gflops", "cpu_dispatch_us"):
    assert c[k] > 0, k
assert c["cpu_threads"] >= 1 and c["version"] == int(sys.argv[2]) and "no GPU" in c["key"]
PY
check "the cache file holds every CPU ceiling" $?
expect "--recalibrate measures again" 0 "ceilings measured now on this machine" \
    "$bin" plan --model "$m" --gpu-memory-gb 24 --max-model-len 4096 --device cpu --recalibrate

expect "start-up check refuses the weights" 1 "the weights on the GPU need 27.5 GiB (bfloat16)" \
    "$bin" plan --model "$m" --gpu-memory-gb 24 --max-model-len 4096 --check --device cpu
out=$("$bin" plan --model "$m" --gpu-memory-gb 24 --max-model-len 4096 --check --device cpu)
n=$(sed -nE 's/.*--cpu-offload-gb ([0-9]+) makes.*/\1/p' <<<"$out")
expect "the --cpu-offload-gb it suggests ($n) fits" 0 "ok: " \
    "$bin" plan --model "$m" --gpu-memory-gb 24 --max-model-len 4096 --check --device cpu \
    --cpu-offload-gb "$n" --offload-policy stream --ceilings "$ceil"
expect "start-up check refuses a long max-model-len" 1 \
    "max-model-len 131072 needs 24.00 GiB of KV per sequence" \
    "$bin" plan --model "$m" --gpu-memory-gb 40 --check --device cpu
out=$("$bin" plan --model "$m" --gpu-memory-gb 40 --check --device cpu)
len=$(sed -nE 's/.*lower --max-model-len to ([0-9]+).*/\1/p' <<<"$out")
expect "the max-model-len it suggests ($len) fits" 0 "ok: " \
    "$bin" plan --model "$m" --gpu-memory-gb 40 --check --device cpu --max-model-len "$len"
expect "nothing fits: nearest settings" 1 "nearest settings that fit" \
    "$bin" plan --model "$m" --gpu-memory-gb 24 --offload-policy stream --ceilings "$ceil" \
    --device cpu --host-memory-gb 64
# tensor parallel: two 24 GB cards hold the 14B resident, half of it each
json=$("$bin" plan --model "$m" --gpu-memory-gb 24 --max-model-len 4096 --ceilings "$ceil" \
       --device cpu --json --tensor-parallel-size 2)
python3 - "$json" <<'PY'
import json, sys
p = json.loads(sys.argv[1])
assert p["tensor_parallel_size"] == 2
assert p["layers"] == ["resident"] * 48, p["layers"]
m = p["memory"]
assert m["offload"] == 0 and m["gpu_comm"] > 0
assert abs(m["gpu_weights"] / 2**30 - 13.76) < 0.01, m["gpu_weights"]
gpu = (m["gpu_weights"] + m["gpu_activations"] + m["gpu_workspace"] + m["gpu_comm"] +
       m["gpu_kv"])
assert gpu <= m["gpu_budget"] == 24 * 2**30 - 2**29
assert all(x["tp_comm_s"] > 0 and x["tp_comm_s"] < x["step_s"] for x in p["predictions"])
PY
check "plan --tensor-parallel-size 2: the 14B resident in 2 x 24 GB, 13.76 GiB each" $?
expect "plan --tensor-parallel-size 2 prints the split" 0 \
    "tensor parallel over 2 GPUs, planned per GPU (rank 0): 20 of 40 attention heads" \
    "$bin" plan --model "$m" --gpu-memory-gb 24 --max-model-len 4096 --ceilings "$ceil" \
    --device cpu --tensor-parallel-size 2
expect "--check --tensor-parallel-size 2 accepts it" 0 "ok: " \
    "$bin" plan --model "$m" --gpu-memory-gb 24 --max-model-len 4096 --check --device cpu \
    --tensor-parallel-size 2
expect "a size vLLM refuses" 1 \
    "Total number of attention heads (40) must be divisible by tensor parallel size (3)." \
    "$bin" plan --model "$m" --gpu-memory-gb 24 --ceilings "$ceil" --device cpu \
    --tensor-parallel-size 3
expect "too small even split: the next size that fits" 1 "or --tensor-parallel-size 4 fits" \
    "$bin" plan --model "$m" --gpu-memory-gb 10 --max-model-len 4096 --ceilings "$ceil" \
    --device cpu --tensor-parallel-size 2
expect "no GPU and no budget" 2 "--gpu-memory-gb" "$bin" plan --model "$m" --device cpu
expect "bad policy" 2 "--offload-policy must be auto, stream or cpu" \
    "$bin" plan --model "$m" --gpu-memory-gb 24 --offload-policy fast
expect "bad number" 2 "--gpu-memory-gb must be a number" \
    "$bin" plan --model "$m" --gpu-memory-gb lots
expect "no model" 2 "--model DIR is required" "$bin" plan --gpu-memory-gb 24
expect "a model directory without config.json" 1 "config.json" \
    "$bin" plan --model "$XDG_CACHE_HOME" --gpu-memory-gb 24
exit $fail
