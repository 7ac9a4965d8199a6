/* kern_elementwise: embedding, rmsnorm(+residual) and silu_mul on the GPU. Each op has three
 * levels: a static __global__ *_kernel (templated on the weight's storage type), a static
 * *_launch (grid math, dtype dispatch, launch check) and the exported kern_* (argument checks).
 * Activations are fp32, as in the CPU backend; the kernels are the simple, coalesced versions
 * (one element per thread per step, fp32 sums) — faster variants are tried in bench/ first.
 * Nothing here blocks the host. */
#include "kern.h"
#include "kern_elementwise.h"
#include "kern_impl.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>

/* ---------------- shared checks ---------------- */

static bool is_aligned(const void *p, size_t a) {
    return (uintptr_t)p % a == 0;
}

/* A weight tensor the kernels can read: present, a compute dtype, sizes that fit an int. */
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
    if (!is_aligned(t->data, dtype_size(t->dtype)))
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: %s data %p is not aligned to its dtype", op,
                       what, t->data);
    return TL_OK;
}

static enum tl_status check_act(const struct kern_ctx *ctx, const char *op, const void *p,
                                const char *what) {
    if (!p) return tl_fail(ctx->err, TL_ERR_INVALID, "%s: %s is NULL", op, what);
    if (!is_aligned(p, sizeof(float)))
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: %s %p is not 4-byte aligned", op, what, p);
    return TL_OK;
}

/* ---------------- embedding ---------------- */

/* One block per token: out[row] (dim) = table[tokens[row]] (dim), widened to fp32. */
template <typename T>
static __global__ void embedding_kernel(const T *__restrict__ table, // (vocab, dim)
                                        int64_t vocab, int dim,
                                        const int32_t *__restrict__ tokens, // (n)
                                        float *__restrict__ out) {          // (n, dim)
    const int64_t row = blockIdx.x;
    const int32_t tok = tokens[row];
    float *o = out + row * dim;
    if (tok < 0 || (int64_t)tok >= vocab) {
        for (int i = (int)threadIdx.x; i < dim; i += (int)blockDim.x)
            o[i] = __int_as_float(0x7fc00000);
        return;
    }
    const T *src = table + (int64_t)tok * dim;
    for (int i = (int)threadIdx.x; i < dim; i += (int)blockDim.x) o[i] = kern_load_f32(src, i);
}

static enum tl_status embedding_launch(const struct kern_ctx *ctx, enum tl_dtype dt,
                                       const void *table, int64_t vocab, int dim,
                                       const int32_t *tokens, int n, float *out) {
    enum tl_status st = TL_OK;
    const dim3 grid((unsigned)n), block((unsigned)kern_row_threads(dim));

    KERN_CUDA(ctx->err, kern_enter(ctx));
    switch (dt) {
    case TL_DTYPE_F32:
        embedding_kernel<float>
            <<<grid, block, 0, ctx->stream>>>((const float *)table, vocab, dim, tokens, out);
        break;
    case TL_DTYPE_F16:
        embedding_kernel<__half>
            <<<grid, block, 0, ctx->stream>>>((const __half *)table, vocab, dim, tokens, out);
        break;
    case TL_DTYPE_BF16:
        embedding_kernel<__nv_bfloat16><<<grid, block, 0, ctx->stream>>>(
            (const __nv_bfloat16 *)table, vocab, dim, tokens, out);
        break;
    default:
        KERN_FAIL(ctx->err, TL_ERR_INTERNAL, "embedding_launch: dtype %s", dtype_name(dt));
    }
    KERN_CUDA(ctx->err, cudaGetLastError());

cleanup:
    return st;
}

enum tl_status kern_embedding(const struct kern_ctx *ctx, const struct tl_tensor *table,
                              const int32_t *tokens, int n, float *out) {
    enum tl_status st;
    if (!ctx) return TL_ERR_INVALID;
    if ((st = check_weight(ctx, "kern_embedding", table, "table")) != TL_OK) return st;
    if ((st = check_act(ctx, "kern_embedding", tokens, "tokens")) != TL_OK) return st;
    if ((st = check_act(ctx, "kern_embedding", out, "out")) != TL_OK) return st;
    if (n < 1) return tl_fail(ctx->err, TL_ERR_INVALID, "kern_embedding: n = %d tokens", n);
    return embedding_launch(ctx, table->dtype, table->data, table->rows, (int)table->cols, tokens,
                            n, out);
}

/* ---------------- rmsnorm (+ residual add) ---------------- */

/* One block per row. Pass 1: x = res (+ add, written back to res), sum of squares in fp32;
 * block sum; pass 2: out = x * inv_rms * w. Each thread reads and writes the same indices in
 * both passes, so out == res (or add == res) is safe without a barrier. */
template <typename T>
static __global__ void rmsnorm_kernel(float *res,              // (n, dim)
                                      const float *add,        // (n, dim) or NULL
                                      const T *__restrict__ w, // (dim)
                                      float eps, int dim,
                                      float *out) { // (n, dim)
    const int64_t row = blockIdx.x;
    float *x = res + row * dim;
    const float *a = add ? add + row * dim : NULL;
    float *o = out + row * dim;
    float ss = 0.0f;
    for (int i = (int)threadIdx.x; i < dim; i += (int)blockDim.x) {
        float v = x[i];
        if (a) {
            v += a[i];
            x[i] = v;
        }
        ss += v * v;
    }
    ss = kern_block_sum(ss);
    const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = (int)threadIdx.x; i < dim; i += (int)blockDim.x)
        o[i] = x[i] * inv * kern_load_f32(w, i);
}

static enum tl_status rmsnorm_launch(const struct kern_ctx *ctx, float *res, const float *add,
                                     enum tl_dtype dt, const void *w, float eps, int n, int dim,
                                     float *out) {
    enum tl_status st = TL_OK;
    const dim3 grid((unsigned)n), block((unsigned)kern_row_threads(dim));

    KERN_CUDA(ctx->err, kern_enter(ctx));
    switch (dt) {
    case TL_DTYPE_F32:
        rmsnorm_kernel<float>
            <<<grid, block, 0, ctx->stream>>>(res, add, (const float *)w, eps, dim, out);
        break;
    case TL_DTYPE_F16:
        rmsnorm_kernel<__half>
            <<<grid, block, 0, ctx->stream>>>(res, add, (const __half *)w, eps, dim, out);
        break;
    case TL_DTYPE_BF16:
        rmsnorm_kernel<__nv_bfloat16>
            <<<grid, block, 0, ctx->stream>>>(res, add, (const __nv_bfloat16 *)w, eps, dim, out);
        break;
    default:
        KERN_FAIL(ctx->err, TL_ERR_INTERNAL, "rmsnorm_launch: dtype %s", dtype_name(dt));
    }
    KERN_CUDA(ctx->err, cudaGetLastError());

cleanup:
    return st;
}

enum tl_status kern_rmsnorm(const struct kern_ctx *ctx, float *res, const float *add,
                            const struct tl_tensor *w, float eps, int n, float *out) {
    enum tl_status st;
    if (!ctx) return TL_ERR_INVALID;
    if ((st = check_weight(ctx, "kern_rmsnorm", w, "weight")) != TL_OK) return st;
    if (w->rows != 1)
        return tl_fail(ctx->err, TL_ERR_INVALID, "kern_rmsnorm: weight has %lld rows, not 1",
                       (long long)w->rows);
    if ((st = check_act(ctx, "kern_rmsnorm", res, "res")) != TL_OK) return st;
    if (add && (st = check_act(ctx, "kern_rmsnorm", add, "add")) != TL_OK) return st;
    if ((st = check_act(ctx, "kern_rmsnorm", out, "out")) != TL_OK) return st;
    if (n < 1) return tl_fail(ctx->err, TL_ERR_INVALID, "kern_rmsnorm: n = %d rows", n);
    if (!(eps >= 0.0f) || !isfinite(eps)) /* also rejects NaN */
        return tl_fail(ctx->err, TL_ERR_INVALID, "kern_rmsnorm: eps = %g, want a finite eps >= 0",
                       (double)eps);
    return rmsnorm_launch(ctx, res, add, w->dtype, w->data, eps, n, (int)w->cols, out);
}

/* ---------------- silu_mul ---------------- */

/* Grid-stride over all n * dim elements: out = silu(gate) * up, full-precision expf. */
static __global__ void silu_mul_kernel(const float *gate, // (total)
                                       const float *up,   // (total)
                                       int64_t total,
                                       float *out) { // (total)
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static enum tl_status silu_mul_launch(const struct kern_ctx *ctx, const float *gate,
                                      const float *up, int64_t total, float *out) {
    enum tl_status st = TL_OK;
    const int threads = 256;
    /* Enough blocks to fill every SM several times over; the grid-stride loop covers the rest. */
    const int64_t max_blocks = (int64_t)(ctx->sm_count > 0 ? ctx->sm_count : 1) * 32;
    const int64_t need = (total + threads - 1) / threads;
    const dim3 grid((unsigned)(need < max_blocks ? need : max_blocks)), block((unsigned)threads);

    KERN_CUDA(ctx->err, kern_enter(ctx));
    silu_mul_kernel<<<grid, block, 0, ctx->stream>>>(gate, up, total, out);
    KERN_CUDA(ctx->err, cudaGetLastError());

cleanup:
    return st;
}

enum tl_status kern_silu_mul(const struct kern_ctx *ctx, const float *gate, const float *up, int n,
                             int dim, float *out) {
    enum tl_status st;
    if (!ctx) return TL_ERR_INVALID;
    if ((st = check_act(ctx, "kern_silu_mul", gate, "gate")) != TL_OK) return st;
    if ((st = check_act(ctx, "kern_silu_mul", up, "up")) != TL_OK) return st;
    if ((st = check_act(ctx, "kern_silu_mul", out, "out")) != TL_OK) return st;
    if (n < 1 || dim < 1)
        return tl_fail(ctx->err, TL_ERR_INVALID, "kern_silu_mul: shape (%d, %d); both must be > 0",
                       n, dim);
    return silu_mul_launch(ctx, gate, up, (int64_t)n * dim, out);
}
