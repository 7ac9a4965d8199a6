/* attention: RoPE + paged KV write, and causal paged attention, on the CPU in fp32. One
 * layer's cache is K and V pools of (num_blocks, block_size, n_kv_heads, head_dim) floats;
 * a token at position p of a sequence lives in block block_table[p / block_size], slot
 * p % block_size. These are also the reference the GPU kernels are tested against. */
#ifndef TL_ATTENTION_H
#define TL_ATTENTION_H

#include "ops.h"
#include "pool.h"

struct attn_shape {
    int n_heads, n_kv_heads, head_dim;
    int block_size;
};

/* Rotates q (T, n_heads, hd) and k (T, n_kv, hd) in place (rotate-half / NeoX layout, as HF
 * Llama and Qwen2), then copies k and v into the layer's cache. tok_seq maps token -> seq. */
void cpu_rope_kv_write(struct pool *pool, const struct attn_shape *s, const struct fwd_batch *b,
                       const int32_t *tok_seq, const float *inv_freq, float *q, float *k,
                       const float *v, float *k_cache, float *v_cache);

/* out (T, n_heads, hd) = softmax(q k^T / sqrt(hd)) v over positions 0..pos of each token's
 * sequence. scratch: pool_size(pool) * max_ctx floats, where max_ctx >= every n_past + n_new. */
void cpu_attention(struct pool *pool, const struct attn_shape *s, const struct fwd_batch *b,
                   const int32_t *tok_seq, const float *q, const float *k_cache,
                   const float *v_cache, float *out, float *scratch, int max_ctx);

#endif
