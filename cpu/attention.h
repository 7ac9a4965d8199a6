/* attention: RoPE + paged KV write, and causal paged attention, on the CPU in fp32. One
 * layer's cache is K and V pools of (num_blocks, block_size, n_kv_heads, head_dim) floats;
 * a token at position p of a sequence lives in block block_table[p / block_size], slot
 * p % block_size. These are also the reference the GPU kernels are tested against. */
#ifndef TL_ATTENTION_H
#define TL_ATTENTION_H

#include <stdbool.h>
#include <stddef.h>

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

/* Floats of scratch cpu_attention needs with a pool of n_threads threads (depends on the shape
 * and the thread count only, not on context lengths). */
size_t cpu_attention_scratch_floats(const struct attn_shape *s, int n_threads);

/* out (T, n_heads, hd) = softmax(q k^T / sqrt(hd)) v over positions 0..pos of each token's
 * sequence. scratch: cpu_attention_scratch_floats(s, pool_size(pool)) floats. Blocks until done;
 * the result is the same for the same batch and thread count. */
void cpu_attention(struct pool *pool, const struct attn_shape *s, const struct fwd_batch *b,
                   const int32_t *tok_seq, const float *q, const float *k_cache,
                   const float *v_cache, float *out, float *scratch);

/* The kernel set cpu_attention uses for head_dim ("avx2+fma", "portable C"). */
const char *cpu_attention_kernel_name(int head_dim);
/* Tests and benchmarks: true makes cpu_attention use the portable C kernels. */
void cpu_attention_force_portable(bool on);

#endif
