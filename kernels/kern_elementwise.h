/* kern_elementwise: the row-wise and elementwise ops of the CUDA backend — embedding,
 * rmsnorm (fused with the residual add) and silu_mul. Same signature shape and semantics as
 * their CPU references in cpu/cpu_ops.h (cpu_embedding, cpu_rmsnorm, cpu_silu_mul), which
 * tests/gpu/test_gpu_ops.c checks them against. Activations are fp32; weights are F32, F16 or
 * BF16, chosen at run time by the tensor's dtype.
 *
 * Every pointer is device memory (kern_alloc), including a tensor's data. Each function checks
 * its arguments (TL_ERR_INVALID / TL_ERR_UNSUPPORTED, message in kern_last_error), queues one
 * kernel on the context's stream and returns without waiting: results are there for later ops
 * on the same stream, and for the host after kern_sync. A launch failure is TL_ERR_CUDA; a fault
 * inside the kernel shows up at the next kern_sync. */
#ifndef TL_KERN_ELEMENTWISE_H
#define TL_KERN_ELEMENTWISE_H

#include <stdint.h>

#include "kern.h"

#ifdef __cplusplus
extern "C" {
#endif

#include "model.h"

/* out (n, dim) = table[tokens[i]] widened to fp32, for a table (vocab, dim) = (table->rows,
 * table->cols). tokens (n) are device int32. A token outside 0..vocab-1 gets a row of NaN:
 * memory stays safe and the fault shows in the output (ids are validated before they get here,
 * on the host, where the error can be reported). */
enum tl_status kern_embedding(const struct kern_ctx *ctx, const struct tl_tensor *table,
                              const int32_t *tokens, int n, float *out);

/* For each of n rows of dim = w->cols (w is one row, w->rows == 1):
 *   res += add (when add is non-NULL; both (n, dim)), then out (n, dim) = rmsnorm(res) * w,
 *   rmsnorm(x) = x / sqrt(mean(x^2) + eps), summed in fp32.
 * Buffers may coincide exactly (out == res runs in place) but must not partly overlap. */
enum tl_status kern_rmsnorm(const struct kern_ctx *ctx, float *res, const float *add,
                            const struct tl_tensor *w, float eps, int n, float *out);

/* out (n, dim) = silu(gate) * up, silu(g) = g / (1 + exp(-g)); gate, up (n, dim). out may be
 * gate or up (exactly, not a partial overlap). */
enum tl_status kern_silu_mul(const struct kern_ctx *ctx, const float *gate, const float *up, int n,
                             int dim, float *out);

#ifdef __cplusplus
}
#endif

#endif
