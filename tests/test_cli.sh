#!/bin/bash
# test_cli: `tierlm generate` end to end as a user runs it: greedy ids equal HF's for a
# fixture, seeded sampling repeats, and bad input gets a clear message and exit code 2 (usage)
# or 1 (runtime), never a crash.
set -u
bin=$1
fx=$2
fail=0
check() { # name, condition result
    if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi
}
expect_fail() { # name, wanted exit code, wanted message fragment, command...
    local name=$1 code=$2 frag=$3
    shift 3
    out=$("$@" 2>&1)
    rc=$?
    if [ $rc = "$code" ] && grep -qF -- "$frag" <<<"$out"; then echo "ok   $name"; else
        echo "FAIL $name: exit $rc, output: $out"; fail=1; fi
}

# greedy continuation of prompt 1 of qwen2-f32 (7 tokens) against HF's 40 tokens
read -r prompt want < <(python3 -c "
import json; e = json.load(open('$fx/qwen2-f32/expected.json'))
print(','.join(map(str, e['prompts'][1])), ','.join(map(str, e['greedy'][1])))")
got=$("$bin" generate --model "$fx/qwen2-f32" --prompt-ids "$prompt" --max-tokens 40 \
      --temperature 0 --ignore-eos --quiet)
check "greedy ids equal HF transformers" "$([ "$got" = "$want" ]; echo $?)"

a=$("$bin" generate --model "$fx/llama3-f32" --prompt-ids 5,6,7 --max-tokens 24 --temperature 0.9 \
    --top-k 50 --top-p 0.95 --seed 11 --ignore-eos --quiet)
b=$("$bin" generate --model "$fx/llama3-f32" --prompt-ids 5,6,7 --max-tokens 24 --temperature 0.9 \
    --top-k 50 --top-p 0.95 --seed 11 --ignore-eos --quiet)
c=$("$bin" generate --model "$fx/llama3-f32" --prompt-ids 5,6,7 --max-tokens 24 --temperature 0.9 \
    --top-k 50 --top-p 0.95 --seed 12 --ignore-eos --quiet)
check "same seed, same tokens" "$([ -n "$a" ] && [ "$a" = "$b" ]; echo $?)"
check "another seed, other tokens" "$([ "$a" != "$c" ]; echo $?)"
n=$("$bin" generate --model "$fx/qwen2-bf16" --prompt-ids 1 --prompt-ids 2,3,4,5,6,7,8,9,10 \
    --prompt-ids 11,12 --max-tokens 5 --temperature 0 --ignore-eos --quiet | wc -l)
check "one line of ids per prompt in a batch" "$([ "$n" = 3 ]; echo $?)"
"$bin" --help | grep -q generate
check "tierlm --help lists generate" $?
"$bin" generate --help | grep -q -- --max-num-batched-tokens
check "generate --help documents flags" $?

expect_fail "id outside vocabulary" 2 "each id must be an integer in [0, 512)" \
    "$bin" generate --model "$fx/qwen2-f32" --prompt-ids 1,512
expect_fail "empty prompt" 2 "holds no ids" "$bin" generate --model "$fx/qwen2-f32" --prompt-ids ""
expect_fail "negative max-tokens" 2 "--max-tokens must be an integer" \
    "$bin" generate --model "$fx/qwen2-f32" --prompt-ids 1 --max-tokens -3
expect_fail "temperature not a number" 2 "--temperature must be a number" \
    "$bin" generate --model "$fx/qwen2-f32" --prompt-ids 1 --temperature hot
expect_fail "top-p out of range" 1 "top_p" \
    "$bin" generate --model "$fx/qwen2-f32" --prompt-ids 1 --top-p 1.5
expect_fail "unknown flag" 2 "unrecognized option" \
    "$bin" generate --model "$fx/qwen2-f32" --prompt-ids 1 --frobnicate
expect_fail "missing model dir" 1 "/nonexistent" \
    "$bin" generate --model /nonexistent --prompt-ids 1
expect_fail "too long for the model" 1 "max_position_embeddings" \
    "$bin" generate --model "$fx/qwen2-f32" --prompt-ids 1 --max-tokens 300
expect_fail "unknown command" 2 "unknown command" "$bin" frobnicate

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$fx/llama3-f32/config.json" "$tmp/"
head -c 1000 "$fx/llama3-f32/model.safetensors" > "$tmp/model.safetensors"
expect_fail "truncated checkpoint" 1 "model.safetensors" \
    "$bin" generate --model "$tmp" --prompt-ids 1
out=$("$bin" generate --model "$tmp" --load-format dummy --prompt-ids 1,2 --max-tokens 4 --quiet)
check "dummy weights need only config.json" "$([ -n "$out" ]; echo $?)"

[ $fail = 0 ] && echo "test_cli: all passed" || echo "test_cli: FAILED"
exit $fail
