/* kern_ceiling: CUDA events around repeated copies / GEMMs after a warm-up; the median of the
 * repeats is reported. Inputs are random, never zeros (zeros run faster on tensor cores). */
#include <stdlib.h>

#include "kern_ceiling.h"
#include "kern_impl.h"

#define REPEATS 9

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static __global__ void fill_random_kernel(uint16_t *p, size_t n, uint32_t seed, int bf16) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
        float f = ((float)(h & 0xffff) / 65536.0f - 0.5f);
        if (bf16) {
            __nv_bfloat16 b = __float2bfloat16(f);
            p[i] = *(uint16_t *)&b;
        } else {
            __half b = __float2half(f);
            p[i] = *(uint16_t *)&b;
        }
    }
}

/* Times `what` (0 = D2D copy, 1 = H2D, 2 = D2H) of bytes; returns the median ms. */
static enum tl_status time_copies(const struct kern_ctx *ctx, int what, void *dst, const void *src,
                                  size_t bytes, float *ms_out) {
    enum tl_status st = TL_OK;
    cudaEvent_t a = NULL, b = NULL;
    float ms[REPEATS];
    cudaMemcpyKind kind = what == 0   ? cudaMemcpyDeviceToDevice
                          : what == 1 ? cudaMemcpyHostToDevice
                                      : cudaMemcpyDeviceToHost;
    KERN_CUDA(ctx->err, cudaEventCreate(&a));
    KERN_CUDA(ctx->err, cudaEventCreate(&b));
    KERN_CUDA(ctx->err, cudaMemcpyAsync(dst, src, bytes, kind, ctx->stream)); /* warm-up */
    for (int r = 0; r < REPEATS; r++) {
        KERN_CUDA(ctx->err, cudaEventRecord(a, ctx->stream));
        KERN_CUDA(ctx->err, cudaMemcpyAsync(dst, src, bytes, kind, ctx->stream));
        KERN_CUDA(ctx->err, cudaEventRecord(b, ctx->stream));
        KERN_CUDA(ctx->err, cudaEventSynchronize(b));
        KERN_CUDA(ctx->err, cudaEventElapsedTime(&ms[r], a, b));
    }
    qsort(ms, REPEATS, sizeof ms[0], cmp_float);
    *ms_out = ms[REPEATS / 2];
cleanup:
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
    return st;
}

extern "C" enum tl_status kern_ceiling_hbm(const struct kern_ctx *ctx, size_t bytes, double *gbps) {
    enum tl_status st = TL_OK;
    void *src = NULL, *dst = NULL;
    float ms = 0;
    KERN_CUDA(ctx->err, kern_enter(ctx));
    KERN_CUDA(ctx->err, cudaMalloc(&src, bytes));
    KERN_CUDA(ctx->err, cudaMalloc(&dst, bytes));
    fill_random_kernel<<<1024, 256, 0, ctx->stream>>>((uint16_t *)src, bytes / 2, 7u, 1);
    KERN_CUDA(ctx->err, cudaGetLastError());
    if ((st = time_copies(ctx, 0, dst, src, bytes, &ms)) != TL_OK) goto cleanup;
    *gbps = 2.0 * (double)bytes / (ms * 1e-3) / 1e9;
cleanup:
    cudaFree(src);
    cudaFree(dst);
    return st;
}

extern "C" enum tl_status kern_ceiling_pcie(const struct kern_ctx *ctx, size_t bytes,
                                            double *h2d_gbps, double *d2h_gbps) {
    enum tl_status st = TL_OK;
    void *host = NULL, *dev = NULL;
    float ms = 0;
    KERN_CUDA(ctx->err, kern_enter(ctx));
    KERN_CUDA(ctx->err, cudaMallocHost(&host, bytes));
    KERN_CUDA(ctx->err, cudaMalloc(&dev, bytes));
    for (size_t i = 0; i < bytes; i += 4096) ((char *)host)[i] = (char)(i >> 12);
    if ((st = time_copies(ctx, 1, dev, host, bytes, &ms)) != TL_OK) goto cleanup;
    *h2d_gbps = (double)bytes / (ms * 1e-3) / 1e9;
    if ((st = time_copies(ctx, 2, host, dev, bytes, &ms)) != TL_OK) goto cleanup;
    *d2h_gbps = (double)bytes / (ms * 1e-3) / 1e9;
cleanup:
    cudaFreeHost(host);
    cudaFree(dev);
    return st;
}

extern "C" enum tl_status kern_ceiling_gemm(const struct kern_ctx *ctx, enum tl_dtype dtype, int n,
                                            double *tflops) {
    enum tl_status st = TL_OK;
    uint16_t *a = NULL, *b = NULL, *c = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    float ms[REPEATS], alpha = 1.0f, beta = 0.0f;
    size_t nn = (size_t)n * n;
    cudaDataType_t t = dtype == TL_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    if (dtype != TL_DTYPE_BF16 && dtype != TL_DTYPE_F16)
        KERN_FAIL(ctx->err, TL_ERR_INVALID, "GEMM ceiling needs F16 or BF16");
    KERN_CUDA(ctx->err, kern_enter(ctx));
    KERN_CUDA(ctx->err, cudaMalloc(&a, nn * 2));
    KERN_CUDA(ctx->err, cudaMalloc(&b, nn * 2));
    KERN_CUDA(ctx->err, cudaMalloc(&c, nn * 2));
    fill_random_kernel<<<1024, 256, 0, ctx->stream>>>(a, nn, 11u, dtype == TL_DTYPE_BF16);
    fill_random_kernel<<<1024, 256, 0, ctx->stream>>>(b, nn, 13u, dtype == TL_DTYPE_BF16);
    KERN_CUDA(ctx->err, cudaGetLastError());
    KERN_CUDA(ctx->err, cudaEventCreate(&e0));
    KERN_CUDA(ctx->err, cudaEventCreate(&e1));
    for (int r = -2; r < REPEATS; r++) {
        KERN_CUDA(ctx->err, cudaEventRecord(e0, ctx->stream));
        KERN_CUBLAS(ctx->err,
                    cublasGemmEx(ctx->cublas, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a, t, n, b,
                                 t, n, &beta, c, t, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        KERN_CUDA(ctx->err, cudaEventRecord(e1, ctx->stream));
        KERN_CUDA(ctx->err, cudaEventSynchronize(e1));
        if (r >= 0) KERN_CUDA(ctx->err, cudaEventElapsedTime(&ms[r], e0, e1));
    }
    qsort(ms, REPEATS, sizeof ms[0], cmp_float);
    *tflops = 2.0 * (double)n * n * n / (ms[REPEATS / 2] * 1e-3) / 1e12;
cleanup:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    return st;
}
