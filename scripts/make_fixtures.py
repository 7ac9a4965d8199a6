#!/usr/bin/env python3
"""Makes tierlm's golden parity fixtures: tiny random HF checkpoints plus what HF
transformers computes for them. Run on a machine with torch + transformers (the GPU machine):

    python3 scripts/make_fixtures.py OUT_DIR

For each model OUT_DIR/<name>/ gets config.json, generation_config.json, the safetensors
weights and expected.json with, per prompt, the last-position logits of an fp32 reference
(weights upcast exactly from the file dtype, eager attention, CPU), the greedy continuation
of that reference, per-layer hidden states of prompt 0, and for bf16/fp16 models the logits
HF computes natively in that dtype (on CUDA when present) to bound 'within bf16 precision'.
"""
import json
import os
import shutil
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

PROMPT_LENS = [1, 7, 16, 33, 61]  # crosses 16-token KV blocks at several offsets
GREEDY_TOKENS = 40
VOCAB = 512

# head_dim 64 (Qwen2) and 32 (Llama): the GPU attention kernels take multiples of 32.
COMMON = dict(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=3, max_position_embeddings=256,
              bos_token_id=1, eos_token_id=2, pad_token_id=None, rms_norm_eps=1e-6)

MODELS = [
    # name, class, config kwargs, file dtype, shard size, rewrite config to the classic form
    ("qwen2-f32", "qwen2", dict(num_attention_heads=2, num_key_value_heads=1, intermediate_size=172,
                               tie_word_embeddings=False, rope_theta=10000.0), torch.float32, "400KB", False),
    ("qwen2-bf16", "qwen2", dict(num_attention_heads=2, num_key_value_heads=1, intermediate_size=172,
                                tie_word_embeddings=False, rope_theta=1000000.0), torch.bfloat16, None, False),
    ("qwen2-f16", "qwen2", dict(num_attention_heads=2, num_key_value_heads=1, intermediate_size=172,
                               tie_word_embeddings=False, rope_theta=10000.0), torch.float16, None, False),
    ("llama3-f32", "llama", dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                                intermediate_size=128, tie_word_embeddings=False, rope_theta=500000.0,
                                rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                  high_freq_factor=4.0, original_max_position_embeddings=64)),
     torch.float32, None, True),
    ("llama-tied-bf16", "llama", dict(num_attention_heads=4, num_key_value_heads=4, intermediate_size=160,
                                     num_hidden_layers=2, tie_word_embeddings=True, attention_bias=True,
                                     rope_theta=10000.0), torch.bfloat16, None, False),
]


def randomize(model, seed):
    """Weights with spread (HF's default init gives near-uniform logits and fragile argmaxes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.1 * r)
            elif name.endswith("bias"):
                p.copy_(0.2 * r)
            elif "embed_tokens" in name:
                p.copy_(r * (0.5 if model.config.tie_word_embeddings else 1.0))
            else:
                p.copy_(r / (p.shape[1] ** 0.5))


def to_classic(path):
    """Rewrites a transformers-5 config.json into the classic form real checkpoints ship."""
    with open(path) as f:
        c = json.load(f)
    rp = c.pop("rope_parameters", None) or {}
    c["rope_theta"] = rp.pop("rope_theta", 10000.0)
    rt = rp.get("rope_type", "default")
    c["rope_scaling"] = rp if rt != "default" else None
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    with open(path, "w") as f:
        json.dump(c, f, indent=2)


def r7(xs):
    return [float(f"{x:.7g}") for x in xs]


@torch.no_grad()
def last_logits(model, ids, device):
    out = model(torch.tensor([ids], device=device))
    return out.logits[0, -1].float().cpu().tolist()


@torch.no_grad()
def greedy(model, ids, n):
    """Plain argmax loop with the KV cache; no EOS stop (tests run with ignore_eos)."""
    out = model(torch.tensor([ids]), use_cache=True)
    past, toks = out.past_key_values, []
    for _ in range(n):
        t = int(out.logits[0, -1].argmax())
        toks.append(t)
        out = model(torch.tensor([[t]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
    return toks


def make(outdir, idx, name, kind, kw, dtype, shard, classic):
    d = os.path.join(outdir, name)
    shutil.rmtree(d, ignore_errors=True)
    cfg_kw = dict(COMMON)
    cfg_kw.update(kw)
    cfg = (Qwen2Config if kind == "qwen2" else LlamaConfig)(**cfg_kw)
    torch.manual_seed(1000 + idx)
    model = (Qwen2ForCausalLM if kind == "qwen2" else LlamaForCausalLM)(cfg)
    randomize(model, 1000 + idx)
    model = model.to(dtype)
    save_kw = dict(safe_serialization=True)
    if shard:
        save_kw["max_shard_size"] = shard
    model.save_pretrained(d, **save_kw)
    for junk in ("generation_config.json",):
        if os.path.exists(os.path.join(d, junk)):
            os.remove(os.path.join(d, junk))
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": [2, 3], "do_sample": True, "temperature": 0.7,
                   "top_p": 0.9, "top_k": 20, "transformers_version": transformers.__version__}, f, indent=2)
    if classic:
        to_classic(os.path.join(d, "config.json"))

    g = torch.Generator().manual_seed(77 + idx)
    prompts = [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in PROMPT_LENS]

    # fp32 reference: the file's weights upcast exactly, eager attention, on the CPU.
    ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    exp = {"name": name, "dtype": str(dtype).replace("torch.", ""), "transformers": transformers.__version__,
           "torch": torch.__version__, "prompts": prompts, "greedy_tokens": GREEDY_TOKENS}
    exp["logits"] = [r7(last_logits(ref, p, "cpu")) for p in prompts]
    exp["greedy"] = [greedy(ref, p, GREEDY_TOKENS) for p in prompts]
    hs = ref(torch.tensor([prompts[-1]]), output_hidden_states=True).hidden_states
    exp["hidden_states_prompt"] = len(prompts) - 1
    exp["hidden_states"] = [r7(h[0, -1].tolist()) for h in hs]  # input of each layer, then final (normed)

    if dtype != torch.float32:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        nat = AutoModelForCausalLM.from_pretrained(d, dtype=dtype, attn_implementation="eager").to(dev).eval()
        exp["logits_native"] = [r7(last_logits(nat, p, dev)) for p in prompts]
        exp["native_device"] = dev
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(exp, f, separators=(",", ":"))
    print(f"{name}: {sum(os.path.getsize(os.path.join(d, x)) for x in os.listdir(d)) / 1e6:.2f} MB, "
          f"greedy[0][:8]={exp['greedy'][0][:8]}")


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    os.makedirs(outdir, exist_ok=True)
    for i, m in enumerate(MODELS):
        make(outdir, i, *m)


if __name__ == "__main__":
    main()
