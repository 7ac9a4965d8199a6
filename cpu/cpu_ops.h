/* cpu_ops: the CPU backend. Implements the op interface (ops.h) with fp32 activations, weights
 * in their file dtype, a paged fp32 KV cache in host memory and a pinned thread pool; its sample
 * op runs engine/sampler.c on the pool, one row per task, so the ids are the serial sampler's. The
 * elementwise ops are exported too: they are the reference the GPU kernels are tested against. */
#ifndef TL_CPU_OPS_H
#define TL_CPU_OPS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "ops.h"
#include "pool.h"

struct cpu_backend_opts {
    int n_threads;  /* 0 = one per physical core */
    bool pin;       /* pin workers to cores with hwloc */
    int num_blocks; /* KV blocks (each block_size tokens, all layers) */
    int block_size; /* tokens per KV block */
    int max_ctx;    /* longest sequence attention must handle (max-model-len) */
    /* Layers this backend keeps KV for (n_layers flags); NULL = all. In a split placement the
     * CPU runs some layers and holds only their KV. */
    const uint8_t *kv_layers;
    /* Matmuls of bf16 weights may round x to bf16 and use the CPU's AVX512-BF16 dot products
     * (cpu_matmul_group_bf16x): the CPU lane of a GPU placement, whose GPU layers keep bf16
     * activations anyway. */
    bool bf16_acts;
};

/* KV bytes of one block (all layers, K and V, fp32) for this config. */
size_t cpu_kv_block_bytes(const struct config *c, int block_size);

/* Fills *out with the CPU backend's ops and a new context. Free with cpu_backend_destroy. */
enum tl_status cpu_backend_create(const struct config *c, const struct cpu_backend_opts *o,
                                  struct ops *out, struct tl_err *err);
void cpu_backend_destroy(struct ops *ops);
/* The backend's thread pool (borrowed), for callers that want to share it. */
struct pool *cpu_backend_pool(const struct ops *ops);

/* Reference ops (pool may be NULL). Shapes as in ops.h. */
void cpu_embedding(struct pool *pool, const struct tl_tensor *table, const int32_t *tokens, int n,
                   float *out);
void cpu_rmsnorm(struct pool *pool, float *res, const float *add, const struct tl_tensor *w,
                 float eps, int n, float *out);
void cpu_silu_mul(struct pool *pool, const float *gate, const float *up, int n, int dim,
                  float *out);

#endif
