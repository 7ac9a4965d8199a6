/* kern_impl: what the .cu files of kernels/ share and nobody else sees — the layout of
 * struct kern_ctx, the CUDA / cuBLAS check macros, and small device helpers (dtype loads,
 * warp and block sums). CUDA C++ only; include kern.h first for the public API. */
#ifndef TL_KERN_IMPL_H
#define TL_KERN_IMPL_H

#ifndef __CUDACC__
#error "kern_impl.h is for the .cu files of kernels/ only"
#endif

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kern.h"

extern "C" {
#include "dtype.h"
}

struct kern_ctx {
    int device;            /* CUDA ordinal */
    cudaStream_t stream;   /* owned; every op of this context runs on it */
    cublasHandle_t cublas; /* owned; bound to stream */
    int sm_count;          /* from cudaGetDeviceProperties, for grid sizing */
    int cc_major, cc_minor;
    size_t l2_bytes, smem_per_block_optin_bytes;
    char name[256];
    /* The last failure's message. Owned; a separate allocation so that ops taking a const
     * context (the context itself does not change) can still record what failed. */
    struct tl_err *err;
};

/* Formats "CUDA error N (name: text) in `stmt` at func (file:line)" into err and returns the
 * status: TL_ERR_NOMEM for an out-of-memory error, else TL_ERR_CUDA. err may be NULL. */
enum tl_status kern_fail_cuda(struct tl_err *err, cudaError_t e, const char *stmt, const char *func,
                              const char *file, int line);
/* The same for a cuBLAS status. */
enum tl_status kern_fail_cublas(struct tl_err *err, cublasStatus_t s, const char *stmt,
                                const char *func, const char *file, int line);

/* Check macros. The calling function declares `enum tl_status st` and a `cleanup:` label that
 * is its one exit; on failure the macro records the message in *ERRP, sets st and jumps there.
 * (C++ forbids jumping over an initialised declaration: declare locals before the first check.) */
#define KERN_CUDA(ERRP, STMT)                                                                      \
    do {                                                                                           \
        cudaError_t kern_e_ = (STMT);                                                              \
        if (kern_e_ != cudaSuccess) {                                                              \
            st = kern_fail_cuda((ERRP), kern_e_, #STMT, __func__, __FILE__, __LINE__);             \
            goto cleanup;                                                                          \
        }                                                                                          \
    } while (0)

#define KERN_CUBLAS(ERRP, STMT)                                                                    \
    do {                                                                                           \
        cublasStatus_t kern_s_ = (STMT);                                                           \
        if (kern_s_ != CUBLAS_STATUS_SUCCESS) {                                                    \
            st = kern_fail_cublas((ERRP), kern_s_, #STMT, __func__, __FILE__, __LINE__);           \
            goto cleanup;                                                                          \
        }                                                                                          \
    } while (0)

/* Records a non-CUDA failure (bad argument) the same way: message, status, jump. */
#define KERN_FAIL(ERRP, STATUS, ...)                                                               \
    do {                                                                                           \
        st = tl_fail((ERRP), (STATUS), __VA_ARGS__);                                               \
        goto cleanup;                                                                              \
    } while (0)

/* Makes ctx's device current for the calling thread (a no-op when it already is). Every
 * exported function that touches the device calls it first. */
cudaError_t kern_enter(const struct kern_ctx *ctx);

/* Threads per block for a one-block-per-row kernel over `dim` elements: about four elements
 * per thread, a whole number of warps, 32..1024. */
static inline int kern_row_threads(int dim) {
    int t = (dim + 3) / 4;
    t = (t + 31) / 32 * 32;
    return t < 32 ? 32 : (t > 1024 ? 1024 : t);
}

/* ---------------- device helpers ---------------- */

/* Element i of a weight of storage type T, widened to fp32 (exact for all three). */
template <typename T> __device__ __forceinline__ float kern_load_f32(const T *p, int64_t i);
template <> __device__ __forceinline__ float kern_load_f32<float>(const float *p, int64_t i) {
    return p[i];
}
template <> __device__ __forceinline__ float kern_load_f32<__half>(const __half *p, int64_t i) {
    return __half2float(p[i]);
}
template <>
__device__ __forceinline__ float kern_load_f32<__nv_bfloat16>(const __nv_bfloat16 *p, int64_t i) {
    return __bfloat162float(p[i]);
}

/* Sum over the 32 lanes of a warp; every lane gets the total. Needs all 32 lanes active. */
static __device__ __forceinline__ float kern_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over the block; every thread gets the total. blockDim.x must be a multiple of 32 (at
 * most 1024) and every thread of the block must call it. Safe to call repeatedly. */
static __device__ __forceinline__ float kern_block_sum(float v) {
    __shared__ float partial[32];
    const int lane = (int)(threadIdx.x & 31u), warp = (int)(threadIdx.x >> 5);
    const int n_warps = (int)(blockDim.x >> 5);
    v = kern_warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < n_warps ? partial[lane] : 0.0f; /* each warp sums the partials itself */
    v = kern_warp_sum(v);
    __syncthreads(); /* partial may be reused by the next call */
    return v;
}

#endif
