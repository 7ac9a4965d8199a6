/* kern_ceiling: measures the ceilings every GPU figure is reported against, on the context's
 * device, in the same run: HBM bandwidth (a device-to-device copy, bytes read + written), the
 * tensor-core rate (a large cuBLAS GEMM on random data) and pinned PCIe host<->device rates.
 * Each blocks for a fraction of a second and returns the median of several timed repeats. */
#ifndef TL_KERN_CEILING_H
#define TL_KERN_CEILING_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "dtype.h"
#include "kern.h"
#include "status.h"

/* GB/s of cudaMemcpyAsync device-to-device over `bytes`, counting bytes read plus written. */
enum tl_status kern_ceiling_hbm(const struct kern_ctx *ctx, size_t bytes, double *gbps);

/* TFLOP/s of an n x n x n GEMM in dtype (F16/BF16) with fp32 accumulation, random inputs. */
enum tl_status kern_ceiling_gemm(const struct kern_ctx *ctx, enum tl_dtype dtype, int n,
                                 double *tflops);

/* GB/s of pinned host -> device (h2d) and device -> host copies of `bytes`. */
enum tl_status kern_ceiling_pcie(const struct kern_ctx *ctx, size_t bytes, double *h2d_gbps,
                                 double *d2h_gbps);

#ifdef __cplusplus
}
#endif

#endif
