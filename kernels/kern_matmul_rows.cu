/* kern_matmul_rows: the activation-dtype (F16 / BF16) row ops declared in kern_matmul.h —
 * embedding, rmsnorm with the residual add, silu * up, row gather and the widening to fp32 for
 * reading logits back. Each rounds where HF transformers rounds in a native bf16/fp16 run, so
 * the GPU tracks HF rather than the fp32 CPU path:
 *   residual add:  res = round(res + add)               (torch adds two bf16 tensors)
 *   rmsnorm:       h = round(res * rsqrt(mean(res^2) + eps)), fp32 inside; out = round(w * h)
 *                  (Qwen2RMSNorm: upcast, normalise, .to(input_dtype), then weight * that)
 *   silu_mul:      s = round(silu(gate)) in fp32; out = round(s * up)  (act_fn(gate) * up)
 * Three levels per op as in kern_elementwise.cu: a static __global__ *_kernel templated on the
 * activation type T (and the weight's storage type W), a static *_launch (dtype dispatch,
 * grid, launch check) and the exported kern_* (argument checks). Nothing here blocks the host. */
#include "kern.h"
#include "kern_impl.h"
#include "kern_matmul.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>

/* ---------------- helpers ---------------- */

template <typename T> static __device__ __forceinline__ T to_act(float v);
template <> __device__ __forceinline__ __half to_act<__half>(float v) {
    return __float2half_rn(v);
}
template <> __device__ __forceinline__ __nv_bfloat16 to_act<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

/* v rounded to T and widened back: the value a T tensor would hold. */
template <typename T> static __device__ __forceinline__ float round_act(float v) {
    const T t = to_act<T>(v);
    return kern_load_f32(&t, 0);
}

static bool aligned_to(const void *p, size_t a) {
    return (uintptr_t)p % a == 0;
}

static enum tl_status check_act_dtype(const struct kern_ctx *ctx, const char *op,
                                      enum tl_dtype act) {
    if (act == TL_DTYPE_F16 || act == TL_DTYPE_BF16) return TL_OK;
    return tl_fail(ctx->err, TL_ERR_UNSUPPORTED,
                   "%s: activation dtype %s; the GPU runs F16 or BF16", op, dtype_name(act));
}

/* A device buffer of elements of `elem` bytes: present and aligned to them. */
static enum tl_status check_buf(const struct kern_ctx *ctx, const char *op, const void *p,
                                size_t elem, const char *what) {
    if (!p) return tl_fail(ctx->err, TL_ERR_INVALID, "%s: %s is NULL", op, what);
    if (!aligned_to(p, elem))
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: %s %p is not aligned to %zu bytes", op, what,
                       p, elem);
    return TL_OK;
}

/* A weight of any compute dtype (converted on the fly), sizes that fit an int. */
static enum tl_status check_weight(const struct kern_ctx *ctx, const char *op,
                                   const struct tl_tensor *t, const char *what) {
    if (!t || !t->data) return tl_fail(ctx->err, TL_ERR_INVALID, "%s: %s is NULL", op, what);
    if (!dtype_is_float_compute(t->dtype))
        return tl_fail(ctx->err, TL_ERR_UNSUPPORTED,
                       "%s: %s has dtype %s; the CUDA kernels take F32, F16 or BF16", op, what,
                       dtype_name(t->dtype));
    if (t->rows < 1 || t->cols < 1 || t->cols > INT_MAX)
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: %s has shape (%lld, %lld)", op, what,
                       (long long)t->rows, (long long)t->cols);
    return check_buf(ctx, op, t->data, dtype_size(t->dtype), what);
}

/* Grid for a grid-stride loop over `total` elements: enough blocks to fill every SM. */
static unsigned stride_blocks(const struct kern_ctx *ctx, int64_t total, int threads) {
    const int64_t max_blocks = (int64_t)(ctx->sm_count > 0 ? ctx->sm_count : 1) * 16;
    const int64_t need = (total + threads - 1) / threads;
    return (unsigned)(need < max_blocks ? need : max_blocks);
}

/* Calls LAUNCH(T, W) for the activation type T and weight storage type W, or fails. */
#define DISPATCH_ACT_W(ACT, WDT, LAUNCH)                                                           \
    do {                                                                                           \
        if ((ACT) == TL_DTYPE_BF16) {                                                              \
            if ((WDT) == TL_DTYPE_BF16)                                                            \
                LAUNCH(__nv_bfloat16, __nv_bfloat16);                                              \
            else if ((WDT) == TL_DTYPE_F16)                                                        \
                LAUNCH(__nv_bfloat16, __half);                                                     \
            else                                                                                   \
                LAUNCH(__nv_bfloat16, float);                                                      \
        } else {                                                                                   \
            if ((WDT) == TL_DTYPE_BF16)                                                            \
                LAUNCH(__half, __nv_bfloat16);                                                     \
            else if ((WDT) == TL_DTYPE_F16)                                                        \
                LAUNCH(__half, __half);                                                            \
            else                                                                                   \
                LAUNCH(__half, float);                                                             \
        }                                                                                          \
    } while (0)

/* ---------------- embedding ---------------- */

/* One block per token: out[row] (dim) = table[tokens[row] - row0] in T (exact when W is T).
 * An id outside the table's rows gives a row of NaN, or of zeros with zero_outside (one rank's
 * part of a vocabulary-parallel embedding: the ranks' sum completes it). */
template <typename T, typename W>
static __global__ void embedding_act_kernel(const W *__restrict__ table, // (vocab, dim)
                                            int64_t vocab, int dim, int64_t row0, int zero_outside,
                                            const int32_t *__restrict__ tokens, // (n)
                                            T *__restrict__ out) {              // (n, dim)
    const int64_t row = blockIdx.x;
    const int64_t tok = (int64_t)tokens[row] - row0;
    T *o = out + row * dim;
    if (tok < 0 || tok >= vocab) {
        const float fill = zero_outside ? 0.0f : NAN;
        for (int i = (int)threadIdx.x; i < dim; i += (int)blockDim.x) o[i] = to_act<T>(fill);
        return;
    }
    const W *src = table + tok * dim;
    for (int i = (int)threadIdx.x; i < dim; i += (int)blockDim.x)
        o[i] = to_act<T>(kern_load_f32(src, i));
}

static enum tl_status embedding_act_launch(const struct kern_ctx *ctx, enum tl_dtype act,
                                           const struct tl_tensor *table, int64_t row0,
                                           int zero_outside, const int32_t *tokens, int n,
                                           void *out) {
    enum tl_status st = TL_OK;
    const int dim = (int)table->cols;
    const dim3 grid((unsigned)n), block((unsigned)kern_row_threads(dim));

    KERN_CUDA(ctx->err, kern_enter(ctx));
#define LAUNCH(T, W)                                                                               \
    embedding_act_kernel<T, W><<<grid, block, 0, ctx->stream>>>(                                   \
        (const W *)table->data, table->rows, dim, row0, zero_outside, tokens, (T *)out)
    DISPATCH_ACT_W(act, table->dtype, LAUNCH);
#undef LAUNCH
    KERN_CUDA(ctx->err, cudaGetLastError());

cleanup:
    return st;
}

enum tl_status kern_embedding_act(const struct kern_ctx *ctx, enum tl_dtype act,
                                  const struct tl_tensor *table, const int32_t *tokens, int n,
                                  void *out) {
    static const char op[] = "kern_embedding_act";
    enum tl_status st;
    if (!ctx) return TL_ERR_INVALID;
    if ((st = check_act_dtype(ctx, op, act)) != TL_OK) return st;
    if ((st = check_weight(ctx, op, table, "table")) != TL_OK) return st;
    if ((st = check_buf(ctx, op, tokens, sizeof(int32_t), "tokens")) != TL_OK) return st;
    if ((st = check_buf(ctx, op, out, dtype_size(act), "out")) != TL_OK) return st;
    if (n < 1) return tl_fail(ctx->err, TL_ERR_INVALID, "%s: n = %d tokens", op, n);
    return embedding_act_launch(ctx, act, table, 0, 0, tokens, n, out);
}

enum tl_status kern_embedding_part_act(const struct kern_ctx *ctx, enum tl_dtype act,
                                       const struct tl_tensor *table, int32_t row0,
                                       const int32_t *tokens, int n, void *out) {
    static const char op[] = "kern_embedding_part_act";
    enum tl_status st;
    if (!ctx) return TL_ERR_INVALID;
    if ((st = check_act_dtype(ctx, op, act)) != TL_OK) return st;
    if ((st = check_weight(ctx, op, table, "table")) != TL_OK) return st;
    if ((st = check_buf(ctx, op, tokens, sizeof(int32_t), "tokens")) != TL_OK) return st;
    if ((st = check_buf(ctx, op, out, dtype_size(act), "out")) != TL_OK) return st;
    if (n < 1) return tl_fail(ctx->err, TL_ERR_INVALID, "%s: n = %d tokens", op, n);
    if (row0 < 0) return tl_fail(ctx->err, TL_ERR_INVALID, "%s: row0 = %d", op, (int)row0);
    return embedding_act_launch(ctx, act, table, row0, 1, tokens, n, out);
}

/* ---------------- rmsnorm (+ residual add) ---------------- */

/* One block per row, in HF's order (file comment). Pass 1: x = round(res + add), stored back
 * to res, sum of squares of the rounded x in fp32; block sum; pass 2 re-reads x (each thread
 * its own elements, so out == res is safe without a barrier), h = round(x * inv_rms),
 * out = round(w * h). */
template <typename T, typename W>
static __global__ void rmsnorm_act_kernel(T *res,                  // (n, dim)
                                          const T *add,            // (n, dim) or NULL
                                          const W *__restrict__ w, // (dim)
                                          float eps, int dim,
                                          T *out) { // (n, dim)
    const int64_t row = blockIdx.x;
    T *x = res + row * dim;
    const T *a = add ? add + row * dim : NULL;
    T *o = out + row * dim;
    float ss = 0.0f;
    for (int i = (int)threadIdx.x; i < dim; i += (int)blockDim.x) {
        float v = kern_load_f32(x, i);
        if (a) {
            const T r = to_act<T>(v + kern_load_f32(a, i));
            x[i] = r;
            v = kern_load_f32(&r, 0);
        }
        ss += v * v;
    }
    ss = kern_block_sum(ss);
    const float inv = rsqrtf(ss / (float)dim + eps);
    for (int i = (int)threadIdx.x; i < dim; i += (int)blockDim.x) {
        const float h = round_act<T>(kern_load_f32(x, i) * inv);
        o[i] = to_act<T>(kern_load_f32(w, i) * h);
    }
}

static enum tl_status rmsnorm_act_launch(const struct kern_ctx *ctx, enum tl_dtype act, void *res,
                                         const void *add, const struct tl_tensor *w, float eps,
                                         int n, void *out) {
    enum tl_status st = TL_OK;
    const int dim = (int)w->cols;
    const dim3 grid((unsigned)n), block((unsigned)kern_row_threads(dim));

    KERN_CUDA(ctx->err, kern_enter(ctx));
#define LAUNCH(T, W)                                                                               \
    rmsnorm_act_kernel<T, W><<<grid, block, 0, ctx->stream>>>(                                     \
        (T *)res, (const T *)add, (const W *)w->data, eps, dim, (T *)out)
    DISPATCH_ACT_W(act, w->dtype, LAUNCH);
#undef LAUNCH
    KERN_CUDA(ctx->err, cudaGetLastError());

cleanup:
    return st;
}

enum tl_status kern_rmsnorm_act(const struct kern_ctx *ctx, enum tl_dtype act, void *res,
                                const void *add, const struct tl_tensor *w, float eps, int n,
                                void *out) {
    static const char op[] = "kern_rmsnorm_act";
    enum tl_status st;
    if (!ctx) return TL_ERR_INVALID;
    if ((st = check_act_dtype(ctx, op, act)) != TL_OK) return st;
    if ((st = check_weight(ctx, op, w, "weight")) != TL_OK) return st;
    if (w->rows != 1)
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: weight has %lld rows, not 1", op,
                       (long long)w->rows);
    if ((st = check_buf(ctx, op, res, dtype_size(act), "res")) != TL_OK) return st;
    if (add && (st = check_buf(ctx, op, add, dtype_size(act), "add")) != TL_OK) return st;
    if ((st = check_buf(ctx, op, out, dtype_size(act), "out")) != TL_OK) return st;
    if (n < 1) return tl_fail(ctx->err, TL_ERR_INVALID, "%s: n = %d rows", op, n);
    if (!(eps >= 0.0f) || !isfinite(eps)) /* also rejects NaN */
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: eps = %g, want a finite eps >= 0", op,
                       (double)eps);
    return rmsnorm_act_launch(ctx, act, res, add, w, eps, n, out);
}

/* ---------------- silu_mul ---------------- */

/* Grid-stride over n * dim elements: s = round(silu(gate)) with full-precision expf, out =
 * round(s * up). Each element is read before it is written, so out may be gate or up. */
template <typename T>
static __global__ void silu_mul_act_kernel(const T *gate, // (total)
                                           const T *up,   // (total)
                                           int64_t total,
                                           T *out) { // (total)
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const float g = kern_load_f32(gate, i);
        const float s = round_act<T>(g / (1.0f + expf(-g)));
        out[i] = to_act<T>(s * kern_load_f32(up, i));
    }
}

static enum tl_status silu_mul_act_launch(const struct kern_ctx *ctx, enum tl_dtype act,
                                          const void *gate, const void *up, int64_t total,
                                          void *out) {
    enum tl_status st = TL_OK;
    const int threads = 256;
    const unsigned blocks = stride_blocks(ctx, total, threads);

    KERN_CUDA(ctx->err, kern_enter(ctx));
    if (act == TL_DTYPE_BF16)
        silu_mul_act_kernel<<<blocks, threads, 0, ctx->stream>>>(
            (const __nv_bfloat16 *)gate, (const __nv_bfloat16 *)up, total, (__nv_bfloat16 *)out);
    else
        silu_mul_act_kernel<<<blocks, threads, 0, ctx->stream>>>(
            (const __half *)gate, (const __half *)up, total, (__half *)out);
    KERN_CUDA(ctx->err, cudaGetLastError());

cleanup:
    return st;
}

enum tl_status kern_silu_mul_act(const struct kern_ctx *ctx, enum tl_dtype act, const void *gate,
                                 const void *up, int n, int dim, void *out) {
    static const char op[] = "kern_silu_mul_act";
    enum tl_status st;
    if (!ctx) return TL_ERR_INVALID;
    if ((st = check_act_dtype(ctx, op, act)) != TL_OK) return st;
    if ((st = check_buf(ctx, op, gate, dtype_size(act), "gate")) != TL_OK) return st;
    if ((st = check_buf(ctx, op, up, dtype_size(act), "up")) != TL_OK) return st;
    if ((st = check_buf(ctx, op, out, dtype_size(act), "out")) != TL_OK) return st;
    if (n < 1 || dim < 1)
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: shape (%d, %d); both must be > 0", op, n,
                       dim);
    return silu_mul_act_launch(ctx, act, gate, up, (int64_t)n * dim, out);
}

/* ---------------- gather_rows ---------------- */

/* One block per output row: out[r] (dim) = x[rows[r]] (dim); a negative index gives NaN. */
template <typename T>
static __global__ void gather_rows_act_kernel(const T *__restrict__ x, int dim,
                                              const int32_t *__restrict__ rows, // (n)
                                              T *__restrict__ out) {            // (n, dim)
    const int64_t r = blockIdx.x;
    const int32_t src = rows[r];
    T *o = out + r * dim;
    for (int i = (int)threadIdx.x; i < dim; i += (int)blockDim.x)
        o[i] = src < 0 ? to_act<T>(NAN) : x[(int64_t)src * dim + i];
}

static enum tl_status gather_rows_act_launch(const struct kern_ctx *ctx, enum tl_dtype act,
                                             const void *x, int dim, const int32_t *rows, int n,
                                             void *out) {
    enum tl_status st = TL_OK;
    const dim3 grid((unsigned)n), block((unsigned)kern_row_threads(dim));

    KERN_CUDA(ctx->err, kern_enter(ctx));
    if (act == TL_DTYPE_BF16)
        gather_rows_act_kernel<<<grid, block, 0, ctx->stream>>>((const __nv_bfloat16 *)x, dim, rows,
                                                                (__nv_bfloat16 *)out);
    else
        gather_rows_act_kernel<<<grid, block, 0, ctx->stream>>>((const __half *)x, dim, rows,
                                                                (__half *)out);
    KERN_CUDA(ctx->err, cudaGetLastError());

cleanup:
    return st;
}

enum tl_status kern_gather_rows_act(const struct kern_ctx *ctx, enum tl_dtype act, const void *x,
                                    int dim, const int32_t *rows, int n, void *out) {
    static const char op[] = "kern_gather_rows_act";
    enum tl_status st;
    if (!ctx) return TL_ERR_INVALID;
    if ((st = check_act_dtype(ctx, op, act)) != TL_OK) return st;
    if ((st = check_buf(ctx, op, x, dtype_size(act), "x")) != TL_OK) return st;
    if ((st = check_buf(ctx, op, rows, sizeof(int32_t), "rows")) != TL_OK) return st;
    if ((st = check_buf(ctx, op, out, dtype_size(act), "out")) != TL_OK) return st;
    if (n < 1 || dim < 1)
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: %d rows of %d; both must be > 0", op, n, dim);
    return gather_rows_act_launch(ctx, act, x, dim, rows, n, out);
}

/* ---------------- to_f32 ---------------- */

template <typename T>
static __global__ void to_f32_kernel(const T *__restrict__ src, int64_t n,
                                     float *__restrict__ dst) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] = kern_load_f32(src, i);
}

static enum tl_status to_f32_launch(const struct kern_ctx *ctx, enum tl_dtype act, const void *src,
                                    int64_t n, float *dst) {
    enum tl_status st = TL_OK;
    const int threads = 256;
    const unsigned blocks = stride_blocks(ctx, n, threads);

    KERN_CUDA(ctx->err, kern_enter(ctx));
    switch (act) {
    case TL_DTYPE_BF16:
        to_f32_kernel<<<blocks, threads, 0, ctx->stream>>>((const __nv_bfloat16 *)src, n, dst);
        break;
    case TL_DTYPE_F16:
        to_f32_kernel<<<blocks, threads, 0, ctx->stream>>>((const __half *)src, n, dst);
        break;
    case TL_DTYPE_F32:
        to_f32_kernel<<<blocks, threads, 0, ctx->stream>>>((const float *)src, n, dst);
        break;
    default:
        KERN_FAIL(ctx->err, TL_ERR_INTERNAL, "to_f32_launch: dtype %s", dtype_name(act));
    }
    KERN_CUDA(ctx->err, cudaGetLastError());

cleanup:
    return st;
}

enum tl_status kern_to_f32(const struct kern_ctx *ctx, enum tl_dtype act, const void *src, size_t n,
                           float *dst) {
    static const char op[] = "kern_to_f32";
    enum tl_status st;
    if (!ctx) return TL_ERR_INVALID;
    if (!dtype_is_float_compute(act))
        return tl_fail(ctx->err, TL_ERR_UNSUPPORTED, "%s: dtype %s; want F32, F16 or BF16", op,
                       dtype_name(act));
    if ((st = check_buf(ctx, op, src, dtype_size(act), "src")) != TL_OK) return st;
    if ((st = check_buf(ctx, op, dst, sizeof(float), "dst")) != TL_OK) return st;
    if (n == 0) return TL_OK;
    if (n > (size_t)INT64_MAX / 4)
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: n = %zu elements", op, n);
    return to_f32_launch(ctx, act, src, (int64_t)n, dst);
}

/* dst = (act)src, rounded to nearest even: the hidden state coming back from CPU layers. */
template <typename T> static __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half from_f32<__half>(float v) {
    return __float2half_rn(v);
}

template <typename T>
static __global__ void from_f32_kernel(const float *__restrict__ src, int64_t n,
                                       T *__restrict__ dst) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] = from_f32<T>(src[i]);
}

enum tl_status kern_from_f32(const struct kern_ctx *ctx, enum tl_dtype act, const float *src,
                             size_t n, void *dst) {
    static const char op[] = "kern_from_f32";
    enum tl_status st = TL_OK;
    const int threads = 256;
    unsigned blocks;
    if (!ctx) return TL_ERR_INVALID;
    if (act != TL_DTYPE_BF16 && act != TL_DTYPE_F16)
        return tl_fail(ctx->err, TL_ERR_UNSUPPORTED, "%s: dtype %s; want F16 or BF16", op,
                       dtype_name(act));
    if ((st = check_buf(ctx, op, src, sizeof(float), "src")) != TL_OK) return st;
    if ((st = check_buf(ctx, op, dst, dtype_size(act), "dst")) != TL_OK) return st;
    if (n == 0) return TL_OK;
    blocks = stride_blocks(ctx, (int64_t)n, threads);
    KERN_CUDA(ctx->err, kern_enter(ctx));
    if (act == TL_DTYPE_BF16)
        from_f32_kernel<<<blocks, threads, 0, ctx->stream>>>(src, (int64_t)n, (__nv_bfloat16 *)dst);
    else
        from_f32_kernel<<<blocks, threads, 0, ctx->stream>>>(src, (int64_t)n, (__half *)dst);
    KERN_CUDA(ctx->err, cudaGetLastError());
cleanup:
    return st;
}
