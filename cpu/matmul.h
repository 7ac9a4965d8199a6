/* matmul: y = x . W^T (+ bias) on the CPU with fp32 activations and weights kept in their file
 * dtype (F32, F16, BF16). Small m (decode) runs a threaded GEMV that reads each weight row once
 * for all m rows, or bf16 dot products on CPUs with AVX512-BF16; larger m converts weight panels
 * to fp32 and calls OpenBLAS sgemm. */
#ifndef TL_MATMUL_H
#define TL_MATMUL_H

#include <stdbool.h>
#include <stddef.h>

#include "model.h"
#include "pool.h"

/* Rows of x at or below which the GEMV path is used (measured: see bench/bench_cpu). */
#define MATMUL_GEMV_MAX_M 8

/* Rows of x for which cpu_matmul_group_bf16x sends bf16 weights down the AVX512-BF16 path. m = 1
 * stays on the GEMV, which already reads the weights at memory speed. */
#define MATMUL_BF16DP_MIN_M 2
#define MATMUL_BF16DP_MAX_M 256

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

/* As cpu_matmul_group, but bf16 weights with MATMUL_BF16DP_MIN_M..MAX_M rows of x take the
 * AVX512-BF16 path where the CPU has it: x is rounded to bf16 first (relative error ~2^-9 per
 * element, as a bf16 GPU run rounds its activations), several times faster at 2..64 rows. The
 * CPU lane of a GPU placement uses it; the CPU backend alone keeps fp32 activations unless
 * asked (cpu_backend_opts.bf16_acts). */
void cpu_matmul_group_bf16x(struct pool *pool, float *scratch, const float *x, int m, int n_w,
                            const struct tl_tensor *const *w, const struct tl_tensor *const *bias,
                            float *const *y);

/* Forces a path for benchmarks and tests: 0 = automatic, 1 = GEMV, 2 = GEMM, 3 = bf16 dot
 * products (falls back to 1 or 2 where the CPU or the weights cannot take it). */
void cpu_matmul_force_path(int path);

/* Name of the kernels in use ("avx2 + amx-bf16", "avx2 + avx512-bf16", "avx2", "generic"). */
const char *cpu_matmul_kernel_name(void);

/* Whether this CPU runs the bf16 dot-product path (path 3). */
bool cpu_matmul_bf16dp_available(void);

/* Path 3 runs on AMX tiles where the CPU has them, the kernel allows them, k and every weight's
 * rows are multiples of 32; else on AVX512-BF16. Whether AMX is usable; and a switch that keeps
 * path 3 on AVX512-BF16 (tests and benchmarks compare the two; process-wide). */
bool cpu_matmul_amx_available(void);
void cpu_matmul_disable_amx(bool off);

#endif
