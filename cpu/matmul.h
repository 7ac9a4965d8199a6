/* matmul: y = x . W^T (+ bias) on the CPU with fp32 activations and weights kept in their file
 * dtype (F32, F16, BF16). Small m (decode) runs a threaded GEMV that reads each weight row once
 * for all m rows; larger m converts weight panels to fp32 and calls OpenBLAS sgemm. */
#ifndef TL_MATMUL_H
#define TL_MATMUL_H

#include <stddef.h>

#include "model.h"
#include "pool.h"

/* Rows of x at or below which the GEMV path is used (measured: see bench/bench_cpu). */
#define MATMUL_GEMV_MAX_M 8

/* Floats of scratch cpu_matmul needs: one fp32 weight panel for the GEMM path. */
#define MATMUL_SCRATCH_FLOATS ((size_t)8 << 20)

/* y (m, w->rows) = x (m, w->cols) . w^T + bias (bias may be NULL). x, y fp32 row-major.
 * scratch: MATMUL_SCRATCH_FLOATS floats owned by the caller. pool may be NULL (one thread).
 * Blocks until done. */
void cpu_matmul(struct pool *pool, float *scratch, const float *x, int m, const struct tl_tensor *w,
                const struct tl_tensor *bias, float *y);

/* Most weights one grouped call takes. */
#define MATMUL_MAX_GROUP 4

/* y[p] = x . w[p]^T + bias[p] for p < n_w (n_w <= MATMUL_MAX_GROUP), all w[p] with the same
 * cols: one parallel loop over all their rows (q/k/v, gate/up). bias may be NULL, or hold
 * NULL entries. */
void cpu_matmul_group(struct pool *pool, float *scratch, const float *x, int m, int n_w,
                      const struct tl_tensor *const *w, const struct tl_tensor *const *bias,
                      float *const *y);

/* Forces a path for benchmarks and tests: 0 = automatic, 1 = GEMV, 2 = GEMM. */
void cpu_matmul_force_path(int path);

/* Name of the GEMV kernel in use ("avx2" or "generic"). */
const char *cpu_matmul_kernel_name(void);

#endif
