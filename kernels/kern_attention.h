/* kern_attention: RoPE fused with the paged KV write, and paged attention for decode and
 * prefill, on the GPU. Activations (q, k, v, out) and the KV cache are in the activation dtype
 * (F16 or BF16); math in fp32.
 *
 * Paged KV layout (one layer): K and V pools of (num_blocks, n_kv_heads, block_size, head_dim)
 * elements each, so one (sequence, kv head) reads block_size * head_dim contiguous elements per
 * block. A token at position p of a sequence lives in block block_table[p / block_size], slot
 * p % block_size.
 *
 * Every pointer is device memory. Ops queue work on the context's stream and return. */
#ifndef TL_KERN_ATTENTION_H
#define TL_KERN_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "dtype.h"
#include "kern.h"
#include "status.h"

struct kern_attn_shape {
    int n_heads, n_kv_heads, head_dim; /* head_dim 64, 128 (and any multiple of 32 <= 256) */
    int block_size;                    /* tokens per KV block (16 by default) */
};

/* One step's batch, in device memory, built by the backend before the layers run. Tokens are
 * concatenated sequence by sequence. The host-side maxima size the grids (no device sync). */
struct kern_batch {
    int n_tokens, n_seqs;
    const int32_t *positions;    /* (n_tokens) position of each token in its sequence */
    const int32_t *tok_seq;      /* (n_tokens) index of each token's sequence */
    const int32_t *seq_start;    /* (n_seqs + 1) first token of each sequence in the step */
    const int32_t *seq_len;      /* (n_seqs) tokens in the cache after this step (n_past + n_new) */
    const int32_t *block_tables; /* (n_seqs, max_blocks) block ids, row-major */
    int max_blocks;              /* row stride of block_tables */
    int max_seq_len;             /* host copy: max of seq_len */
    int max_new;                 /* host copy: most new tokens of one sequence in this step */
};

/* Rotates q (n_tokens, n_heads, hd) and k (n_tokens, n_kv, hd) in place by position (HF's
 * rotate-half layout, angle position * inv_freq formed in fp32 as HF does), then writes k and
 * v (n_tokens, n_kv, hd) into the layer's paged cache. inv_freq: (hd / 2) fp32, device. */
enum tl_status kern_rope_kv_write(const struct kern_ctx *ctx, const struct kern_attn_shape *s,
                                  const struct kern_batch *b, enum tl_dtype act,
                                  const float *inv_freq, void *q, void *k, const void *v,
                                  void *k_cache, void *v_cache);

/* Bytes of workspace kern_attention needs for steps of up to max_tokens tokens and sequences
 * of up to max_seq_len tokens (split-K partial results for long decodes); 0 when no such step
 * would split (or for a bad shape). Does not touch the device. */
size_t kern_attention_workspace_bytes(const struct kern_attn_shape *s, int max_tokens,
                                      int max_seq_len);

/* Causal attention of every new token over its sequence's cached tokens 0..position, for any
 * mix of decode tokens (one new token per sequence: split along the sequence so one long
 * sequence still fills the GPU) and prefill chunks (flash-attention style over the paged
 * cache, which already holds this step's K/V): out (n_tokens, n_heads, hd). Scale 1/sqrt(hd).
 * A sequence's new tokens have positions n_past, n_past + 1, ... in order. q, the caches, out
 * and workspace are 16-byte aligned. workspace (device, workspace_bytes) is scratch for this
 * call only; with less than kern_attention_workspace_bytes (or none: NULL, 0) long decodes use
 * fewer splits, which is slower but still right. TL_ERR_UNSUPPORTED for a head_dim other than a
 * multiple of 32 up to 256, a dtype other than F16/BF16, or a GPU older than compute 8.0. */
enum tl_status kern_attention(const struct kern_ctx *ctx, const struct kern_attn_shape *s,
                              const struct kern_batch *b, enum tl_dtype act, const void *q,
                              const void *k_cache, const void *v_cache, void *out, void *workspace,
                              size_t workspace_bytes);

#ifdef __cplusplus
}
#endif

#endif
