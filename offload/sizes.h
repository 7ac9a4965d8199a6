/* sizes: the bytes a model and a run need, from config.json alone, counted exactly as the
 * backends lay them out: GPU weights each tensor rounded up to 256 bytes (gpu_backend.c),
 * activations from forward_activation_bytes, the GPU workspaces and cuBLAS reserve of
 * gpu_backend.c, the CPU backend's fp32 KV cache. Pure arithmetic, no allocation, no device. */
#ifndef TL_SIZES_H
#define TL_SIZES_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "dtype.h"

/* cuBLAS's own workspace and handles, as gpu_backend.c reserves it. */
#define SIZES_CUBLAS_RESERVE ((size_t)64 << 20)

/* Bytes of one decoder layer's weights in dtype (norms, q/k/v/o, biases, MLP), each tensor
 * rounded up to 256 bytes. */
size_t sizes_layer_bytes(const struct config *c, enum tl_dtype dtype);

/* Parameters of one layer's matrices (q, k, v, o, gate, up, down): 2 flops each per token. */
double sizes_layer_matmul_params(const struct config *c);

/* The embedding table (vocab, hidden) in dtype, rounded up to 256. */
size_t sizes_embed_bytes(const struct config *c, enum tl_dtype dtype);

/* The lm_head matrix (vocab, hidden) in dtype, rounded up to 256: with tied embeddings it is
 * the embedding table itself (the caller counts it once). */
size_t sizes_lm_head_bytes(const struct config *c, enum tl_dtype dtype);

/* The final norm (hidden) in dtype, rounded up to 256. */
size_t sizes_final_norm_bytes(const struct config *c, enum tl_dtype dtype);

/* All weights in dtype as gpu_backend.c allocates them: embed, final norm, lm_head when untied,
 * every layer. */
size_t sizes_model_bytes(const struct config *c, enum tl_dtype dtype);

/* KV bytes of one token in one layer, K and V: on the GPU in dtype, on the host in fp32. */
size_t sizes_kv_token_layer_bytes(const struct config *c, enum tl_dtype dtype);

/* GPU activation buffers (forward_activation_bytes) for steps of up to max_tokens tokens and
 * max_seqs sequences. */
size_t sizes_gpu_activation_bytes(const struct config *c, enum tl_dtype dtype, int max_tokens,
                                  int max_seqs);

/* Decode-attention split-K workspace, the same as kern_attention_workspace_bytes (kernels/), so
 * a build without CUDA plans the same bytes. */
size_t sizes_attention_workspace_bytes(const struct config *c, int block_size, int max_tokens,
                                       int max_seq_len);

/* The GPU sampler's workspace (kernels/gpu_sample.c), for max_rows rows of vocab logits. */
size_t sizes_sample_workspace_bytes(int max_rows, int vocab, int max_model_len);

/* gpu_backend.c's workspaces (attention, fp32 scratch for logits and, in a split placement,
 * the residual stream crossing to the CPU, batch metadata, gather rows, RoPE frequencies) plus
 * SIZES_CUBLAS_RESERVE. split: anything streams or runs on the CPU, or the model is a tensor-
 * parallel shard (its partial sums cross to an in-process all-reduce through that scratch). */
size_t sizes_gpu_workspace_bytes(const struct config *c, int block_size, int max_tokens,
                                 int max_seqs, int max_model_len, bool split);

#endif
