/* kern_matmul: linear layers on the GPU. y = x . W^T (+ bias) with x, y, W and bias in the
 * activation dtype (F16 or BF16) and fp32 accumulation. Decode-sized m runs hand-written
 * tensor-core kernels that stream each weight row once for all m rows: the GEMV for m <= 16,
 * its wide form for m 17..64 (one launch, the weights read once); larger m calls cuBLAS
 * (cublasGemmEx). The crossovers are measured by bench/bench_gpu_matmul. Every pointer is
 * device memory. Ops queue work on the context's stream and return. */
#ifndef TL_KERN_MATMUL_H
#define TL_KERN_MATMUL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "dtype.h"
#include "kern.h"
#include "model.h"
#include "status.h"

/* Most weights one grouped call takes. */
#define KERN_MATMUL_MAX_GROUP 4

/* y[i] (m, w[i]->rows) = x (m, k) . w[i]^T + bias[i] for i < n_w, all w[i] with cols k and
 * the activation dtype (TL_ERR_UNSUPPORTED otherwise); bias[i] (w[i]->rows elements, same
 * dtype) may be NULL, or bias itself. Weights sharing one input (q/k/v, gate/up) run as one
 * launch on the GEMV and wide paths. y must not overlap x or another y. Queues work and returns.
 * The GEMV and wide paths are launched with programmatic dependent launch: they may start, and
 * read their weights and biases, while the previous kernel on the stream is still running (x
 * is read and y written only after that kernel has finished). So the kernel just before them
 * on the same stream must not write the weights; copies (cudaMemcpyAsync) and other streams'
 * work ordered by events are waited for as usual. */
enum tl_status kern_matmul(const struct kern_ctx *ctx, enum tl_dtype act, const void *x, int m,
                           int n_w, const struct tl_tensor *const *w,
                           const struct tl_tensor *const *bias, void *const *y);

/* The GEMV (m <= 16) or its wide form (m 17..64) with its neighbours folded in (decode: three
 * kernels fewer per layer). x (m, k) with m <= KERN_FUSED_MAX_M. With norm_w (act dtype, k) x is
 * the residual stream and the product is rmsnorm(x) * norm_w . W^T, computed as inv_rms(x) *
 * (round(x * norm_w) . W^T): the sum of squares comes from the loads the GEMV makes anyway, so no
 * CTA waits for a norm before its first product. That is the same math as kern_rmsnorm_act then
 * kern_matmul, rounded in another place (HF rounds x * inv_rms before the weight): results differ
 * by about the dtype's rounding. epi: KERN_EPI_STORE   y[i] = x . w[i]^T (+ bias[i]), as
 * kern_matmul; KERN_EPI_SILU    n_w 2 (gate, up; equal rows; no bias): y[0] = silu(x . gate^T) * (x
 * . up^T), rounded as kern_matmul then kern_silu_mul_act would; KERN_EPI_RESADD  n_w 1, no norm:
 * y[0] (the residual stream, m x rows) += x . w^T (+ bias), rounded as kern_matmul then the add of
 * kern_rmsnorm_act would. TL_ERR_UNSUPPORTED for shapes it does not take (then use the unfused
 * ops). Queues one kernel and returns; the weights follow kern_matmul's rule for PDL. */
#define KERN_FUSED_MAX_M 64
enum kern_epi { KERN_EPI_STORE, KERN_EPI_SILU, KERN_EPI_RESADD };
enum tl_status kern_matmul_fused(const struct kern_ctx *ctx, enum tl_dtype act, const void *x,
                                 int m, const struct tl_tensor *norm_w, float eps, int n_w,
                                 const struct tl_tensor *const *w,
                                 const struct tl_tensor *const *bias, void *const *y,
                                 enum kern_epi epi);

/* Forces kern_matmul's path for benchmarks and tests: 0 = automatic, 1 = GEMV, 2 = cuBLAS,
 * 3 = wide, 4 = the wide form with 16 weight rows a warp (an alternative kept for
 * bench_gpu_matmul). GEMV and wide need k % 8 == 0 and 16-byte aligned x and weights
 * (kern_alloc memory, buffers at multiples of 16 bytes): the automatic choice takes cuBLAS
 * otherwise, and a forced GEMV or wide path returns TL_ERR_UNSUPPORTED. A forced GEMV with
 * m > 16 runs in launches of 16 rows (reading the weights once per launch), a forced wide path
 * with m > 64 in launches of 64. kern_matmul_fused is not affected. Process-wide. */
void kern_matmul_force_path(int path);

/* Activation-dtype variants of the row-wise ops (the fp32 ones are in kern_elementwise.h):
 * out (n, dim) = table[tokens] (tokens: device int32); res += add (add may be NULL), out =
 * rmsnorm(res) * w with fp32 sums; out = silu(gate) * up; out (n, dim) = x[rows] (rows: device
 * int32); dst_f32 = (float)src. Shapes as kern_elementwise.h. They round where HF transformers
 * rounds in a native bf16 / fp16 run (kern_matmul_rows.cu says where). Weights (table, w) may
 * be F32, F16 or BF16; act is F16 or BF16 (kern_to_f32 also takes F32). A token outside the
 * table, or a negative row, gives a row of NaN. out may equal res (rmsnorm) or gate / up
 * (silu_mul) exactly. Each queues one kernel and returns. */
enum tl_status kern_embedding_act(const struct kern_ctx *ctx, enum tl_dtype act,
                                  const struct tl_tensor *table, const int32_t *tokens, int n,
                                  void *out);
/* One rank's part of a vocabulary-parallel embedding: out[i] = table[tokens[i] - row0] for the
 * tokens in [row0, row0 + table->rows), a row of zeros for the others. */
enum tl_status kern_embedding_part_act(const struct kern_ctx *ctx, enum tl_dtype act,
                                       const struct tl_tensor *table, int32_t row0,
                                       const int32_t *tokens, int n, void *out);
enum tl_status kern_rmsnorm_act(const struct kern_ctx *ctx, enum tl_dtype act, void *res,
                                const void *add, const struct tl_tensor *w, float eps, int n,
                                void *out);
enum tl_status kern_silu_mul_act(const struct kern_ctx *ctx, enum tl_dtype act, const void *gate,
                                 const void *up, int n, int dim, void *out);
enum tl_status kern_gather_rows_act(const struct kern_ctx *ctx, enum tl_dtype act, const void *x,
                                    int dim, const int32_t *rows, int n, void *out);
enum tl_status kern_to_f32(const struct kern_ctx *ctx, enum tl_dtype act, const void *src, size_t n,
                           float *dst);
/* dst (n, act F16 or BF16) = src rounded to nearest even. */
enum tl_status kern_from_f32(const struct kern_ctx *ctx, enum tl_dtype act, const float *src,
                             size_t n, void *dst);

#ifdef __cplusplus
}
#endif

#endif
