/* test_gpu_matmul: the GPU linear layers (kern_matmul: GEMV, wide and cuBLAS paths, grouped calls,
 * biases), the fused forms (kern_matmul_fused: rmsnorm in, silu * up or the residual add out)
 * and the activation-dtype row ops of kernels/kern_matmul.h against their CPU
 * references (cpu_matmul from cpu/matmul.h, cpu_rmsnorm / cpu_silu_mul / cpu_embedding from
 * cpu/cpu_ops.h) on fresh random inputs rounded to the dtype, in F16 and BF16. One table of
 * matmul cases (m, k, weight rows, biases, flags), each run under the automatic choice and with
 * each path forced; one table of row-op cases. Every GPU buffer has 256 bytes of sentinel before
 * and after it, checked after each run; outputs are poisoned (0xFFFF, a NaN in both dtypes)
 * before each run so unwritten elements fail. Exit 0 pass, 1 fail, 77 skip (no GPU).
 *
 * Tolerances, relative L2 error ||gpu - cpu|| / ||cpu||, from the output dtype: the GPU rounds
 * its fp32 result to the dtype once (matmul) or where HF rounds (row ops), the CPU reference
 * stays fp32, so the error is the dtype's rounding, relative 2^-9 (bf16) / 2^-12 (fp16) at most
 * and about a third of that in L2: bound 1e-2 (bf16), 2e-3 (fp16). An indexing or reduction bug
 * gives errors near 1. The row ops are also checked against a host emulation of HF's rounding
 * order: the residual add bit for bit; the last rounding, out = round(a * h) with h rounded
 * first, exactly except that h may sit one unit in the last place away on at most 1% of
 * elements (the fp32 sums and expf run in another order than the host's). Embedding, gather and
 * to_f32 copy values: exact. A breach is investigated, never widened away. The seed is
 * printed; TL_TEST_SEED=N repeats a run. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "dtype.h"
#include "gpu_harness.h"
#include "kern.h"
#include "kern_matmul.h"
#include "matmul.h"

#define TOL_BF16  1e-2
#define TOL_F16   2e-3
#define TOL_EXACT 0.0

static double tol_for(enum tl_dtype dt) {
    return dt == TL_DTYPE_BF16 ? TOL_BF16 : TOL_F16;
}

/* ---------------- comparison ---------------- */

/* got (n elements of a 16-bit dtype) bit for bit against want. */
static enum result compare_exact16(const char *what, const uint16_t *got, const uint16_t *want,
                                   size_t n, char *line, size_t line_size) {
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) {
            fprintf(stderr, "    %s[%zu]: gpu 0x%04x, hf-order 0x%04x\n", what, i, got[i], want[i]);
            gh_line_add(line, line_size, " %s-hf differs", what);
            return RES_FAIL;
        }
    gh_line_add(line, line_size, " %s-hf exact", what);
    return RES_PASS;
}

/* The next 16-bit float pattern up (dir 1) or down (dir -1) from h, by value. */
static uint16_t step16(uint16_t h, int dir) {
    int32_t o = (h & 0x8000u ? -(int32_t)(h & 0x7fffu) : (int32_t)h) + dir;
    return o >= 0 ? (uint16_t)o : (uint16_t)(0x8000u | (uint16_t)-o);
}

/* The last step of an HF-order op, out = round(a * h) with h already rounded to dt (rmsnorm:
 * a = weight, h = the normalised row; silu_mul: a = up, h = silu(gate)). got must equal it,
 * or equal round(a * h') for h' one unit in the last place from h (the GPU's fp32 sums and
 * expf differ from the host's in the last bits, which can flip a rounding of h), on at most
 * max(2, n / 100) elements. NaN fails. */
static enum result compare_hf(const char *what, enum tl_dtype dt, const uint16_t *got,
                              const float *a, const uint16_t *h, size_t n, char *line,
                              size_t line_size) {
    size_t off = 0, limit = n / 100 > 2 ? n / 100 : 2;
    for (size_t i = 0; i < n; i++) {
        float g, want[3];
        dtype_to_f32(dt, &got[i], &g, 1);
        for (int d = -1; d <= 1; d++) {
            uint16_t hb = d ? step16(h[i], d) : h[i];
            float hv;
            dtype_to_f32(dt, &hb, &hv, 1);
            want[d + 1] = gh_round(dt, a[i] * hv);
        }
        if (!isfinite(g)) {
            fprintf(stderr, "    %s[%zu]: gpu %g: not finite\n", what, i, (double)g);
            gh_line_add(line, line_size, " %s NaN/Inf", what);
            return RES_FAIL;
        }
        if (g == want[1]) continue;
        if (g != want[0] && g != want[2]) {
            fprintf(stderr, "    %s[%zu]: gpu %.9g, hf-order %.9g (%.9g / %.9g one ulp off)\n",
                    what, i, (double)g, (double)want[1], (double)want[0], (double)want[2]);
            gh_line_add(line, line_size, " %s-hf mismatch", what);
            return RES_FAIL;
        }
        off++;
    }
    gh_line_add(line, line_size, " %s-hf %zu/%zu", what, off, n);
    if (off > limit) {
        fprintf(stderr, "    %s: %zu of %zu elements one ulp off the HF order (limit %zu)\n", what,
                off, n, limit);
        return RES_FAIL;
    }
    return RES_PASS;
}

/* ---------------- matmul cases ---------------- */

#define BIAS(p)    (1 << (p)) /* weight p has a bias */
#define MISALIGN_X 0x100      /* x 2 bytes past a 16-byte boundary: not for the GEMV */
#define PATHS_ALL  0          /* automatic, GEMV forced, cuBLAS forced */

struct mcase {
    int m, k, n_w;
    int rows[KERN_MATMUL_MAX_GROUP];
    int flags;
};

static const struct mcase mcases[] = {
    /* m     k    n_w  rows                   flags */
    {1, 264, 1, {96}, 0},
    {2, 264, 1, {96}, BIAS(0)},
    {3, 264, 1, {96}, 0},
    {4, 264, 1, {96}, BIAS(0)},
    {5, 264, 1, {96}, 0},
    {6, 264, 1, {96}, 0},
    {7, 264, 1, {96}, BIAS(0)},
    {8, 264, 1, {96}, 0},
    {9, 264, 1, {96}, 0},
    {10, 264, 1, {96}, BIAS(0)},
    {11, 264, 1, {96}, 0},
    {12, 264, 1, {96}, 0},
    {13, 264, 1, {96}, BIAS(0)},
    {14, 264, 1, {96}, 0},
    {15, 264, 1, {96}, 0},
    {16, 264, 1, {96}, BIAS(0)},
    {17, 264, 1, {96}, BIAS(0)},
    {64, 264, 1, {96}, 0},
    {300, 264, 1, {96}, BIAS(0)},
    /* Grouped like q/k/v (bias on some) and gate/up (none), across m. */
    {1, 512, 3, {80, 16, 16}, BIAS(0) | BIAS(2)},
    {4, 512, 3, {80, 16, 16}, 0},
    {8, 512, 3, {80, 16, 16}, BIAS(0) | BIAS(1) | BIAS(2)},
    {11, 512, 3, {80, 16, 16}, BIAS(1)},
    {16, 512, 3, {80, 16, 16}, BIAS(0) | BIAS(1) | BIAS(2)},
    {17, 512, 3, {80, 16, 16}, BIAS(0) | BIAS(2)},
    {64, 512, 3, {80, 16, 16}, BIAS(0) | BIAS(1) | BIAS(2)},
    {300, 512, 3, {80, 16, 16}, BIAS(0)},
    {2, 1000, 2, {200, 200}, 0}, /* k % 32 == 8: a partial last piece */
    {13, 1000, 2, {200, 200}, 0},
    {7, 96, 4, {33, 47, 16, 100}, BIAS(1) | BIAS(3)},
    /* Odd shapes: k not a multiple of 8 (GEMV refuses, auto takes cuBLAS). */
    {1, 67, 1, {33}, BIAS(0)},
    {5, 67, 1, {33}, 0},
    {17, 67, 2, {33, 5}, BIAS(1)},
    {3, 64, 1, {40}, MISALIGN_X},
    /* Edges: smallest k, one row, rows not a multiple of 16. */
    {3, 8, 1, {1}, BIAS(0)},
    {16, 8, 2, {17, 3}, 0},
    /* Real k: 5120 (160 pieces, 20 per warp) and 13824 / 13832 (a partial piece). */
    {1, 5120, 3, {160, 32, 32}, BIAS(0) | BIAS(1) | BIAS(2)},
    {8, 5120, 3, {160, 32, 32}, 0},
    {16, 5120, 1, {48}, BIAS(0)},
    {4, 13824, 1, {64}, 0},
    {9, 13832, 1, {40}, BIAS(0)},
    /* More 16-row tiles than 4 per SM on 132 SMs (8-warp CTAs), last tile partial. */
    {3, 64, 1, {8465}, BIAS(0)},
    {12, 64, 2, {8192, 300}, BIAS(1)},
    /* The wide path (m 17..64 in one launch: 4 or 8 n8 tiles, x rows past m clamped). */
    {24, 264, 1, {96}, 0},
    {31, 264, 1, {96}, BIAS(0)},
    {32, 264, 1, {100}, 0}, /* rows not a multiple of 32 */
    {48, 264, 1, {96}, BIAS(0)},
    {33, 1000, 2, {200, 200}, 0},                              /* partial last piece */
    {24, 5120, 3, {160, 32, 32}, BIAS(0) | BIAS(1) | BIAS(2)}, /* q/k/v */
    {48, 5120, 3, {160, 32, 32}, BIAS(0) | BIAS(2)},
    {64, 5120, 2, {96, 96}, 0}, /* gate/up */
    {40, 13832, 1, {40}, BIAS(0)},
    {32, 67, 1, {33}, BIAS(0)}, /* odd k: the wide path refuses too */
    {64, 67, 2, {33, 5}, 0},
    {20, 64, 1, {40}, MISALIGN_X},
    /* More 32-row tiles than 2 per SM (8-warp CTAs, whose warps' sums fold in two steps). */
    {17, 64, 1, {8465}, BIAS(0)},
    {64, 64, 2, {8192, 300}, BIAS(1)},
    {130, 264, 1, {96}, BIAS(0)}, /* forced wide: launches of 64, 64 and 2 rows */
};

/* Forced paths as kern_matmul_force_path numbers them (0 automatic). */
#define N_PATHS 5
static const char *const path_names[N_PATHS] = {"auto", "gemv", "cublas", "wide", "wide16"};

/* One matmul case in dtype dt with path forced (0 auto). */
static enum result run_matmul(const struct kern_ctx *ctx, struct pool *pool, float *scratch,
                              const struct mcase *c, enum tl_dtype dt, int path, char *line,
                              size_t line_size) {
    enum result r = RES_ERROR;
    struct bufs bs = {.n = 0};
    const size_t es = dtype_size(dt), xm = (size_t)c->m * c->k;
    const int x_shift = c->flags & MISALIGN_X ? 1 : 0; /* elements */
    float *x32 = malloc(xm * sizeof(float));
    float *w32[KERN_MATMUL_MAX_GROUP] = {0}, *b32[KERN_MATMUL_MAX_GROUP] = {0};
    float *ref[KERN_MATMUL_MAX_GROUP] = {0};
    struct gbuf *gx, *gw[KERN_MATMUL_MAX_GROUP], *gb[KERN_MATMUL_MAX_GROUP] = {0},
                                                 *gy[KERN_MATMUL_MAX_GROUP];
    static const char *const wn[] = {"w0", "w1", "w2", "w3"},
                             *const bn[] = {"b0", "b1", "b2", "b3"},
                             *const yn[] = {"y0", "y1", "y2", "y3"};
    if (!x32) goto out;
    if (!(gx = gbuf_new(ctx, &bs, "x", (xm + (size_t)x_shift) * es))) goto out;
    gh_fill(dt, x32, (char *)hdata(gx) + x_shift * es, xm, 0.0f, 1.0f);
    const float wscale = 1.7f / sqrtf((float)c->k);
    for (int p = 0; p < c->n_w; p++) {
        size_t wn_elems = (size_t)c->rows[p] * c->k, yn_elems = (size_t)c->m * c->rows[p];
        w32[p] = malloc(wn_elems * sizeof(float));
        ref[p] = malloc(yn_elems * sizeof(float));
        if (!w32[p] || !ref[p]) goto out;
        if (!(gw[p] = gbuf_new(ctx, &bs, wn[p], wn_elems * es)) ||
            !(gy[p] = gbuf_new(ctx, &bs, yn[p], yn_elems * es)))
            goto out;
        gh_fill(dt, w32[p], hdata(gw[p]), wn_elems, 0.0f, wscale);
        poison16(hdata(gy[p]), yn_elems);
        if (c->flags & BIAS(p)) {
            if (!(b32[p] = malloc((size_t)c->rows[p] * sizeof(float))) ||
                !(gb[p] = gbuf_new(ctx, &bs, bn[p], (size_t)c->rows[p] * es)))
                goto out;
            gh_fill(dt, b32[p], hdata(gb[p]), (size_t)c->rows[p], 0.0f, 0.5f);
        }
        /* The reference: the same rounded values, fp32 weights, fp32 result. */
        struct tl_tensor hw = {TL_DTYPE_F32, c->rows[p], c->k, w32[p]};
        struct tl_tensor hb = {TL_DTYPE_F32, 1, c->rows[p], b32[p]};
        cpu_matmul(pool, scratch, x32, c->m, &hw, b32[p] ? &hb : NULL, ref[p]);
    }
    if ((r = bufs_upload(ctx, &bs)) != RES_PASS) goto out;

    struct tl_tensor dw[KERN_MATMUL_MAX_GROUP], db[KERN_MATMUL_MAX_GROUP];
    const struct tl_tensor *wp[KERN_MATMUL_MAX_GROUP], *bp[KERN_MATMUL_MAX_GROUP];
    void *yp[KERN_MATMUL_MAX_GROUP];
    bool any_bias = false;
    for (int p = 0; p < c->n_w; p++) {
        dw[p] = (struct tl_tensor){dt, c->rows[p], c->k, ddata(gw[p])};
        db[p] = (struct tl_tensor){dt, 1, c->rows[p], gb[p] ? ddata(gb[p]) : NULL};
        wp[p] = &dw[p];
        bp[p] = gb[p] ? &db[p] : NULL;
        any_bias |= gb[p] != NULL;
        yp[p] = ddata(gy[p]);
    }
    kern_matmul_force_path(path);
    enum tl_status st = kern_matmul(ctx, dt, (char *)ddata(gx) + x_shift * es, c->m, c->n_w, wp,
                                    any_bias ? bp : NULL, yp);
    kern_matmul_force_path(0);
    const bool vec_ok = c->k % 8 == 0 && !(c->flags & MISALIGN_X);
    if (path != 0 && path != 2 && !vec_ok) { /* GEMV and wide must refuse, touching nothing */
        if (st != TL_ERR_UNSUPPORTED) {
            fprintf(stderr, "    forced %s on k = %d%s: got %s, want %s\n", path_names[path], c->k,
                    c->flags & MISALIGN_X ? " (x misaligned)" : "", tl_status_str(st),
                    tl_status_str(TL_ERR_UNSUPPORTED));
            r = RES_FAIL;
            goto out;
        }
        snprintf(line, line_size, " refused (unsupported)");
        r = bufs_download_check(ctx, &bs);
        goto out;
    }
    if (st != TL_OK) {
        report_cuda(ctx, "kern_matmul", st);
        r = RES_ERROR;
        goto out;
    }
    if ((r = bufs_download_check(ctx, &bs)) == RES_ERROR) goto out;
    for (int p = 0; p < c->n_w; p++) {
        enum result rc = gh_compare(yn[p], dt, hdata(gy[p]), ref[p], (size_t)c->m * c->rows[p],
                                    tol_for(dt), line, line_size);
        if (rc != RES_PASS) r = rc;
    }
out:
    bufs_free(ctx, &bs);
    free(x32);
    for (int p = 0; p < KERN_MATMUL_MAX_GROUP; p++) free(w32[p]), free(b32[p]), free(ref[p]);
    return r;
}

/* ---------------- fused linear layers (kern_matmul_fused) ---------------- */

struct fcase {
    int m, k, n_w;
    int rows[3];
    bool norm, bias;
    enum kern_epi epi;
};

static const struct fcase fcases[] = {
    /* m   k     n_w rows              norm   bias   epilogue */
    {1, 5120, 3, {640, 128, 128}, true, true, KERN_EPI_STORE}, /* q/k/v with Qwen2's biases */
    {4, 264, 3, {96, 32, 40}, true, false, KERN_EPI_STORE},
    {8, 1032, 2, {1000, 1000}, true, false, KERN_EPI_SILU},   /* last 8-row pair tile partial */
    {2, 5120, 2, {13824, 13824}, true, false, KERN_EPI_SILU}, /* 14B gate/up: 8-warp CTAs */
    {3, 1032, 2, {77, 77}, false, false, KERN_EPI_SILU},
    {16, 64, 2, {200, 200}, false, false, KERN_EPI_SILU},
    {1, 13824, 1, {512}, false, false, KERN_EPI_RESADD}, /* down_proj */
    {13, 520, 1, {100}, false, true, KERN_EPI_RESADD},
    /* m 17..64: the wide configurations (4 or 8 n8 tiles, 32 weight rows a warp). */
    {17, 5120, 3, {640, 128, 128}, true, true, KERN_EPI_STORE},
    {32, 264, 3, {96, 32, 40}, true, false, KERN_EPI_STORE},
    {64, 5120, 3, {640, 128, 128}, true, true, KERN_EPI_STORE},
    {24, 1032, 2, {1000, 1000}, true, false, KERN_EPI_SILU}, /* last 16-row pair tile partial */
    {64, 1032, 2, {1000, 1000}, true, false, KERN_EPI_SILU},
    {40, 5120, 2, {4500, 4500}, true, false, KERN_EPI_SILU}, /* 282 tiles: 8-warp CTAs */
    {33, 1032, 2, {77, 77}, false, false, KERN_EPI_SILU},
    {64, 64, 2, {200, 200}, false, false, KERN_EPI_SILU},
    {48, 13824, 1, {512}, false, false, KERN_EPI_RESADD},
    {64, 520, 1, {100}, false, true, KERN_EPI_RESADD},
    {19, 520, 1, {100}, false, true, KERN_EPI_RESADD},
};
static const char *const epi_names[] = {"store", "silu", "resadd"};

/* One fused case: the fused kernel against the unfused GPU ops on the same inputs and against
 * the fp32 CPU reference (tol_for). Without a norm folded in, fused and unfused agree bit for
 * bit. With one they round in different places (the fused kernel rounds x * norm_w and scales
 * the sum by inv_rms; the unfused rounds x * inv_rms, then the weight product). Both must be
 * within tol_for of the reference, and so within tol_for of each other (measured on the H100:
 * 3-4e-3 in bf16 with q/k/v, 5.4-5.8e-3 through silu's four roundings; 4-7e-4 in fp16). */
static enum result run_fused(const struct kern_ctx *ctx, float *scratch, const struct fcase *c,
                             enum tl_dtype dt, char *line, size_t line_size) {
    enum result r = RES_ERROR, rc;
    struct bufs bs = {.n = 0};
    const size_t es = dtype_size(dt), xm = (size_t)c->m * c->k;
    const bool silu = c->epi == KERN_EPI_SILU, resadd = c->epi == KERN_EPI_RESADD;
    const size_t ym = (size_t)c->m * c->rows[0];
    float *x32 = malloc(xm * sizeof(float)), *xn32 = malloc(xm * sizeof(float));
    float *nw32 = malloc((size_t)c->k * sizeof(float));
    float *w32[3] = {0}, *b32[3] = {0}, *ref[3] = {0}, *res32 = NULL;
    uint16_t *want = malloc(ym * 2);
    struct gbuf *gx, *gnw = NULL, *gxn = NULL, *gw[3], *gb[3] = {0}, *gyu[3], *gyf[3] = {0},
                     *gs = NULL, *gres = NULL;
    static const char *const wn[] = {"w0", "w1", "w2"}, *const bn[] = {"b0", "b1", "b2"},
                             *const yun[] = {"yu0", "yu1", "yu2"},
                             *const yfn[] = {"yf0", "yf1", "yf2"};
    if (!x32 || !xn32 || !nw32 || !want) goto out;
    if (!(gx = gbuf_new(ctx, &bs, "x", xm * es))) goto out;
    gh_fill(dt, x32, hdata(gx), xm, 0.0f, c->norm ? 3.0f : 1.0f);
    memcpy(xn32, x32, xm * sizeof(float));
    if (c->norm) {
        if (!(gnw = gbuf_new(ctx, &bs, "norm_w", (size_t)c->k * es)) ||
            !(gxn = gbuf_new(ctx, &bs, "xn", xm * es)))
            goto out;
        gh_fill(dt, nw32, hdata(gnw), (size_t)c->k, 1.0f, 0.5f);
        poison16(hdata(gxn), xm);
        struct tl_tensor hw = {TL_DTYPE_F32, 1, c->k, nw32};
        cpu_rmsnorm(NULL, x32, NULL, &hw, 1e-6f, c->m, xn32);
    }
    const float wscale = 1.7f / sqrtf((float)c->k);
    for (int p = 0; p < c->n_w; p++) {
        const size_t wel = (size_t)c->rows[p] * c->k, yel = (size_t)c->m * c->rows[p];
        if (!(w32[p] = malloc(wel * sizeof(float))) || !(ref[p] = malloc(yel * sizeof(float))))
            goto out;
        if (!(gw[p] = gbuf_new(ctx, &bs, wn[p], wel * es)) ||
            !(gyu[p] = gbuf_new(ctx, &bs, yun[p], yel * es)))
            goto out;
        if (!resadd && (p == 0 || !silu) && !(gyf[p] = gbuf_new(ctx, &bs, yfn[p], yel * es)))
            goto out;
        gh_fill(dt, w32[p], hdata(gw[p]), wel, 0.0f, wscale);
        poison16(hdata(gyu[p]), yel);
        if (gyf[p]) poison16(hdata(gyf[p]), yel);
        if (c->bias) {
            if (!(b32[p] = malloc((size_t)c->rows[p] * sizeof(float))) ||
                !(gb[p] = gbuf_new(ctx, &bs, bn[p], (size_t)c->rows[p] * es)))
                goto out;
            gh_fill(dt, b32[p], hdata(gb[p]), (size_t)c->rows[p], 0.0f, 0.5f);
        }
        struct tl_tensor hw = {TL_DTYPE_F32, c->rows[p], c->k, w32[p]};
        struct tl_tensor hb = {TL_DTYPE_F32, 1, c->rows[p], b32[p]};
        cpu_matmul(NULL, scratch, xn32, c->m, &hw, b32[p] ? &hb : NULL, ref[p]);
    }
    if (silu) {
        if (!(gs = gbuf_new(ctx, &bs, "silu_u", ym * es))) goto out;
        poison16(hdata(gs), ym);
        cpu_silu_mul(NULL, ref[0], ref[1], c->m, c->rows[0], ref[0]);
    }
    if (resadd) {
        if (!(res32 = malloc(ym * sizeof(float))) || !(gres = gbuf_new(ctx, &bs, "res", ym * es)))
            goto out;
        gh_fill(dt, res32, hdata(gres), ym, 0.0f, 2.0f);
        for (size_t i = 0; i < ym; i++) ref[0][i] += res32[i];
    }
    if ((r = bufs_upload(ctx, &bs)) != RES_PASS) goto out;

    struct tl_tensor dw[3], db[3], dnw = {dt, 1, c->k, gnw ? ddata(gnw) : NULL};
    const struct tl_tensor *wp[3], *bp[3];
    void *yu[3], *yf[3];
    for (int p = 0; p < c->n_w; p++) {
        dw[p] = (struct tl_tensor){dt, c->rows[p], c->k, ddata(gw[p])};
        db[p] = (struct tl_tensor){dt, 1, c->rows[p], gb[p] ? ddata(gb[p]) : NULL};
        wp[p] = &dw[p];
        bp[p] = gb[p] ? &db[p] : NULL;
        yu[p] = ddata(gyu[p]);
        yf[p] = resadd ? ddata(gres) : gyf[p] ? ddata(gyf[p]) : NULL;
    }
    /* unfused: rmsnorm, matmul (forced to the path the fused kernel extends at this m: the
     * GEMV up to 16 rows, the wide form above), silu */
    enum tl_status st = TL_OK;
    if (c->norm) st = kern_rmsnorm_act(ctx, dt, ddata(gx), NULL, &dnw, 1e-6f, c->m, ddata(gxn));
    kern_matmul_force_path(c->m <= 16 ? 1 : 3);
    if (st == TL_OK)
        st = kern_matmul(ctx, dt, c->norm ? ddata(gxn) : ddata(gx), c->m, c->n_w, wp,
                         c->bias ? bp : NULL, yu);
    kern_matmul_force_path(0);
    if (st == TL_OK && silu)
        st = kern_silu_mul_act(ctx, dt, yu[0], yu[1], c->m, c->rows[0], ddata(gs));
    if (st == TL_OK)
        st = kern_matmul_fused(ctx, dt, ddata(gx), c->m, c->norm ? &dnw : NULL, 1e-6f, c->n_w, wp,
                               c->bias ? bp : NULL, yf, c->epi);
    if (st != TL_OK) {
        report_cuda(ctx, "kern_matmul_fused", st);
        r = RES_ERROR;
        goto out;
    }
    if ((r = bufs_download_check(ctx, &bs)) == RES_ERROR) goto out;

    rc = RES_PASS;
    const int n_out = silu || resadd ? 1 : c->n_w;
    for (int p = 0; p < n_out && rc == RES_PASS; p++) {
        const size_t yel = (size_t)c->m * c->rows[p];
        const void *got = resadd ? hdata(gres) : hdata(gyf[p]);
        /* what the unfused ops produced: y, silu(gate) * up, or round(res + round(y)) */
        if (silu)
            memcpy(want, hdata(gs), yel * 2);
        else if (resadd) {
            float *yv = malloc(yel * sizeof(float));
            if (!yv) goto out;
            dtype_to_f32(dt, hdata(gyu[0]), yv, yel);
            for (size_t i = 0; i < yel; i++) yv[i] = gh_round(dt, res32[i] + yv[i]);
            dtype_from_f32(dt, yv, want, yel);
            free(yv);
        } else
            memcpy(want, hdata(gyu[p]), yel * 2);
        rc = gh_compare(yfn[p], dt, got, ref[p], yel, tol_for(dt), line, line_size);
        if (rc == RES_PASS && !c->norm)
            rc = compare_exact16("unfused", got, want, yel, line, line_size);
        else if (rc == RES_PASS) {
            float *wv = malloc(yel * sizeof(float));
            if (!wv) goto out;
            dtype_to_f32(dt, want, wv, yel);
            rc = gh_compare("vs-unfused", dt, got, wv, yel, tol_for(dt), line, line_size);
            free(wv);
        }
    }
    r = rc;
out:
    bufs_free(ctx, &bs);
    free(x32), free(xn32), free(nw32), free(want), free(res32);
    for (int p = 0; p < 3; p++) free(w32[p]), free(b32[p]), free(ref[p]);
    return r;
}

/* ---------------- row-op cases ---------------- */

enum rop { ROP_EMBEDDING, ROP_RMSNORM, ROP_SILU_MUL, ROP_GATHER, ROP_TO_F32 };
static const char *const rop_names[] = {"embedding", "rmsnorm", "silu_mul", "gather", "to_f32"};

#define WITH_ADD 1 /* rmsnorm: fuse the residual add */
#define IN_PLACE 2 /* rmsnorm: out = res; silu_mul: out = gate */
#define W_F32    4 /* embedding / rmsnorm: the weight stays F32 (converted in the kernel) */

struct rcase {
    enum rop op;
    int n, dim, vocab; /* vocab: embedding's table rows, gather's source rows */
    int flags;
};

static const struct rcase rcases[] = {
    {ROP_EMBEDDING, 5, 1031, 50, 0},
    {ROP_EMBEDDING, 1, 5120, 300, 0},
    {ROP_EMBEDDING, 64, 896, 1000, W_F32},
    {ROP_EMBEDDING, 7, 1, 3, 0},
    {ROP_RMSNORM, 1, 5120, 0, WITH_ADD},
    {ROP_RMSNORM, 1, 5120, 0, WITH_ADD | IN_PLACE},
    {ROP_RMSNORM, 5, 1031, 0, WITH_ADD},
    {ROP_RMSNORM, 5, 1031, 0, 0},
    {ROP_RMSNORM, 3, 7, 0, WITH_ADD | IN_PLACE},
    {ROP_RMSNORM, 2, 33, 0, IN_PLACE},
    {ROP_RMSNORM, 64, 5120, 0, WITH_ADD},
    {ROP_RMSNORM, 9, 3584, 0, W_F32 | WITH_ADD},
    {ROP_SILU_MUL, 1, 13824, 0, 0},
    {ROP_SILU_MUL, 5, 1031, 0, 0},
    {ROP_SILU_MUL, 3, 4864, 0, IN_PLACE},
    {ROP_SILU_MUL, 128, 11008, 0, 0},
    {ROP_GATHER, 3, 5120, 17, 0},
    {ROP_GATHER, 1, 7, 2, 0},
    {ROP_GATHER, 40, 896, 300, 0},
    {ROP_TO_F32, 1, 152064, 0, 0},
    {ROP_TO_F32, 3, 1031, 0, 0},
};

/* HF's rmsnorm order on the host (see kern_matmul_rows.cu): res rounded after the add,
 * h = round(x * rsqrt(mean(x^2) + eps)); the caller checks out = round(w * h). */
static void hf_rmsnorm(enum tl_dtype dt, float *res, const float *add, float eps, int n, int dim,
                       float *h) {
    for (int r = 0; r < n; r++) {
        float *x = res + (size_t)r * dim, *o = h + (size_t)r * dim;
        double ss = 0;
        for (int i = 0; i < dim; i++) {
            if (add) x[i] = gh_round(dt, x[i] + add[(size_t)r * dim + i]);
            ss += (double)x[i] * x[i];
        }
        float inv = (float)(1.0 / sqrt((double)((float)ss / (float)dim + eps)));
        for (int i = 0; i < dim; i++) o[i] = gh_round(dt, x[i] * inv);
    }
}

static enum result run_row_op(const struct kern_ctx *ctx, const struct rcase *c, enum tl_dtype dt,
                              char *line, size_t line_size) {
    enum result r = RES_ERROR, rc;
    struct bufs bs = {.n = 0};
    const size_t es = dtype_size(dt), elems = (size_t)c->n * c->dim;
    const enum tl_dtype wdt = c->flags & W_F32 ? TL_DTYPE_F32 : dt;
    const bool in_place = c->flags & IN_PLACE, with_add = c->flags & WITH_ADD;
    size_t src_elems =
        c->op == ROP_EMBEDDING || c->op == ROP_GATHER ? (size_t)c->vocab * c->dim : elems;
    float *a32 = malloc(src_elems * sizeof(float)), *b32 = malloc(elems * sizeof(float));
    float *w32 = malloc((size_t)c->dim * sizeof(float));
    float *ref = malloc(elems * sizeof(float)), *ref2 = malloc(elems * sizeof(float));
    uint16_t *hf = malloc(elems * 2), *hf_res = malloc(elems * 2);
    int32_t *idx = malloc((size_t)c->n * sizeof(int32_t));
    struct gbuf *ga = NULL, *gb = NULL, *gw = NULL, *gi = NULL, *go = NULL;
    enum tl_status st = TL_OK;
    if (!a32 || !b32 || !w32 || !ref || !ref2 || !hf || !hf_res || !idx) goto out;

    switch (c->op) {
    case ROP_EMBEDDING:
    case ROP_GATHER: {
        const enum tl_dtype sdt = c->op == ROP_EMBEDDING ? wdt : dt;
        if (!(ga = gbuf_new(ctx, &bs, "table", src_elems * dtype_size(sdt))) ||
            !(gi = gbuf_new(ctx, &bs, "ids", (size_t)c->n * sizeof(int32_t))) ||
            !(go = gbuf_new(ctx, &bs, "out", elems * es)))
            goto out;
        gh_fill(sdt, a32, hdata(ga), src_elems, 0.0f, 1.0f);
        for (int i = 0; i < c->n; i++) idx[i] = (int32_t)urand((uint32_t)c->vocab);
        idx[0] = 0;
        if (c->n > 1) idx[c->n - 1] = c->vocab - 1;
        memcpy(hdata(gi), idx, (size_t)c->n * sizeof(int32_t));
        poison16(hdata(go), elems);
        struct tl_tensor ht = {TL_DTYPE_F32, c->vocab, c->dim, a32};
        cpu_embedding(NULL, &ht, idx, c->n, ref); /* a row gather either way */
        for (size_t i = 0; i < elems; i++) ref[i] = gh_round(dt, ref[i]);
        if ((r = bufs_upload(ctx, &bs)) != RES_PASS) goto out;
        if (c->op == ROP_EMBEDDING) {
            struct tl_tensor dtab = {sdt, c->vocab, c->dim, ddata(ga)};
            st = kern_embedding_act(ctx, dt, &dtab, ddata(gi), c->n, ddata(go));
        } else {
            st = kern_gather_rows_act(ctx, dt, ddata(ga), c->dim, ddata(gi), c->n, ddata(go));
        }
        break;
    }
    case ROP_RMSNORM: {
        const float eps = 1e-6f;
        if (!(ga = gbuf_new(ctx, &bs, "res", elems * es)) ||
            !(gw = gbuf_new(ctx, &bs, "weight", (size_t)c->dim * dtype_size(wdt))) ||
            (with_add && !(gb = gbuf_new(ctx, &bs, "add", elems * es))) ||
            (!in_place && !(go = gbuf_new(ctx, &bs, "out", elems * es))))
            goto out;
        gh_fill(dt, a32, hdata(ga), elems, 0.0f, 3.0f);
        gh_fill(dt, b32, gb ? hdata(gb) : NULL, elems, 0.0f, 1.0f);
        gh_fill(wdt, w32, hdata(gw), (size_t)c->dim, 1.0f, 0.5f);
        if (go) poison16(hdata(go), elems);
        /* hf_res / hf: HF's order; a32 becomes the fp32 reference's res, ref its out. */
        float *res_hf = ref2;
        memcpy(res_hf, a32, elems * sizeof(float));
        float *h_hf = malloc(elems * sizeof(float));
        if (!h_hf) goto out;
        hf_rmsnorm(dt, res_hf, with_add ? b32 : NULL, eps, c->n, c->dim, h_hf);
        dtype_from_f32(dt, res_hf, hf_res, elems);
        dtype_from_f32(dt, h_hf, hf, elems); /* hf holds h */
        free(h_hf);
        for (size_t i = 0; i < elems; i++) ref2[i] = gh_round(wdt, w32[i % (size_t)c->dim]);
        struct tl_tensor hw = {TL_DTYPE_F32, 1, c->dim, w32};
        cpu_rmsnorm(NULL, a32, with_add ? b32 : NULL, &hw, eps, c->n, ref);
        if ((r = bufs_upload(ctx, &bs)) != RES_PASS) goto out;
        struct tl_tensor dwt = {wdt, 1, c->dim, ddata(gw)};
        st = kern_rmsnorm_act(ctx, dt, ddata(ga), gb ? ddata(gb) : NULL, &dwt, eps, c->n,
                              in_place ? ddata(ga) : ddata(go));
        break;
    }
    case ROP_SILU_MUL:
        if (!(ga = gbuf_new(ctx, &bs, "gate", elems * es)) ||
            !(gb = gbuf_new(ctx, &bs, "up", elems * es)) ||
            (!in_place && !(go = gbuf_new(ctx, &bs, "out", elems * es))))
            goto out;
        gh_fill(dt, a32, hdata(ga), elems, 0.0f, 8.0f); /* +-8: silu's bend and both tails */
        gh_fill(dt, b32, hdata(gb), elems, 0.0f, 2.0f);
        if (go) poison16(hdata(go), elems);
        cpu_silu_mul(NULL, a32, b32, c->n, c->dim, ref);
        for (size_t i = 0; i < elems; i++) ref2[i] = gh_round(dt, a32[i] / (1.0f + expf(-a32[i])));
        dtype_from_f32(dt, ref2, hf, elems); /* hf holds silu(gate) */
        if ((r = bufs_upload(ctx, &bs)) != RES_PASS) goto out;
        st = kern_silu_mul_act(ctx, dt, ddata(ga), ddata(gb), c->n, c->dim,
                               in_place ? ddata(ga) : ddata(go));
        break;
    case ROP_TO_F32:
        if (!(ga = gbuf_new(ctx, &bs, "src", elems * es)) ||
            !(go = gbuf_new(ctx, &bs, "dst", elems * sizeof(float))))
            goto out;
        gh_fill(dt, ref, hdata(ga), elems, 0.0f, 100.0f);
        poison16(hdata(go), elems * 2);
        if ((r = bufs_upload(ctx, &bs)) != RES_PASS) goto out;
        st = kern_to_f32(ctx, dt, ddata(ga), elems, ddata(go));
        break;
    }
    if (st != TL_OK) {
        report_cuda(ctx, rop_names[c->op], st);
        r = RES_ERROR;
        goto out;
    }
    if ((r = bufs_download_check(ctx, &bs)) == RES_ERROR) goto out;

    switch (c->op) {
    case ROP_EMBEDDING:
    case ROP_GATHER:
        rc = gh_compare("out", dt, hdata(go), ref, elems, TOL_EXACT, line, line_size);
        break;
    case ROP_TO_F32:
        rc = gh_compare("out", TL_DTYPE_F32, hdata(go), ref, elems, TOL_EXACT, line, line_size);
        break;
    case ROP_RMSNORM: {
        const void *out = in_place ? hdata(ga) : hdata(go);
        rc = RES_PASS;
        if (with_add && !in_place) {
            rc = gh_compare("res", dt, hdata(ga), a32, elems, tol_for(dt), line, line_size);
            if (rc == RES_PASS)
                rc = compare_exact16("res", hdata(ga), hf_res, elems, line, line_size);
        }
        if (rc == RES_PASS)
            rc = gh_compare("out", dt, out, ref, elems, tol_for(dt), line, line_size);
        if (rc == RES_PASS) rc = compare_hf("out", dt, out, ref2, hf, elems, line, line_size);
        break;
    }
    case ROP_SILU_MUL: {
        const void *out = in_place ? hdata(ga) : hdata(go);
        rc = gh_compare("out", dt, out, ref, elems, tol_for(dt), line, line_size);
        if (rc == RES_PASS) rc = compare_hf("out", dt, out, b32, hf, elems, line, line_size);
        break;
    }
    default:
        rc = RES_FAIL;
    }
    if (rc != RES_PASS) r = rc;
out:
    bufs_free(ctx, &bs);
    free(a32), free(b32), free(w32), free(ref), free(ref2), free(hf), free(hf_res), free(idx);
    return r;
}

/* ---------------- behaviour beyond the CPU reference ---------------- */

/* Ids outside the table (embedding) or negative (gather) give NaN rows; others are right. */
static enum result run_bad_ids(const struct kern_ctx *ctx, enum tl_dtype dt) {
    enum result r = RES_ERROR;
    struct bufs bs = {.n = 0};
    enum { VOCAB = 50, DIM = 129, N = 4 };
    const int32_t ids[N] = {-1, VOCAB, 7, INT32_MIN};
    float table[VOCAB * DIM];
    struct gbuf *gt, *gi, *go;
    enum tl_status st;
    if (!(gt = gbuf_new(ctx, &bs, "table", sizeof table / 2)) ||
        !(gi = gbuf_new(ctx, &bs, "ids", sizeof ids)) ||
        !(go = gbuf_new(ctx, &bs, "out", N * DIM * 2)))
        goto out;
    gh_fill(dt, table, hdata(gt), VOCAB * DIM, 0.0f, 1.0f);
    memcpy(hdata(gi), ids, sizeof ids);
    for (int pass = 0; pass < 2; pass++) {
        poison16(hdata(go), N * DIM);
        if ((r = bufs_upload(ctx, &bs)) != RES_PASS) goto out;
        struct tl_tensor dtab = {dt, VOCAB, DIM, ddata(gt)};
        st = pass == 0 ? kern_embedding_act(ctx, dt, &dtab, ddata(gi), N, ddata(go))
                       : kern_gather_rows_act(ctx, dt, ddata(gt), DIM, (int32_t *)ddata(gi) + 2, 2,
                                              ddata(go)); /* ids 7, INT32_MIN */
        if (st != TL_OK) {
            report_cuda(ctx, pass == 0 ? "kern_embedding_act" : "kern_gather_rows_act", st);
            r = RES_ERROR;
            goto out;
        }
        if ((r = bufs_download_check(ctx, &bs)) != RES_PASS) goto out;
        const uint16_t *o = hdata(go);
        const int32_t *id = pass == 0 ? ids : ids + 2;
        const int n = pass == 0 ? N : 2;
        for (int t = 0; t < n; t++)
            for (int i = 0; i < DIM; i++) {
                bool bad = pass == 0 ? id[t] < 0 || id[t] >= VOCAB : id[t] < 0;
                float got;
                dtype_to_f32(dt, &o[t * DIM + i], &got, 1);
                float want = bad ? NAN : table[id[t] * DIM + i];
                if (bad ? !isnan(got) || o[t * DIM + i] == POISON16 : got != want) {
                    fprintf(stderr, "    %s row %d (id %d) element %d: got %g, want %g\n",
                            pass == 0 ? "embedding" : "gather", t, (int)id[t], i, (double)got,
                            (double)want);
                    r = RES_FAIL;
                    goto out;
                }
            }
    }
out:
    bufs_free(ctx, &bs);
    return r;
}

/* Bad arguments are answered with a status and a message, and launch nothing. */
static enum result run_bad_args(const struct kern_ctx *ctx) {
    void *fake = (void *)(uintptr_t)4096;
    const int32_t *fake_tok = (const int32_t *)(uintptr_t)4096;
    struct tl_tensor w = {TL_DTYPE_BF16, 64, 128, fake}, w_f16 = {TL_DTYPE_F16, 64, 128, fake};
    struct tl_tensor w_k = {TL_DTYPE_BF16, 64, 96, fake}, w_null = {TL_DTYPE_BF16, 64, 128, NULL};
    struct tl_tensor b_short = {TL_DTYPE_BF16, 1, 63, fake}, nw = {TL_DTYPE_BF16, 1, 128, fake};
    struct tl_tensor nw_i8 = {TL_DTYPE_I8, 1, 128, fake}, nw_2d = {TL_DTYPE_BF16, 2, 128, fake};
    const struct tl_tensor *one[] = {&w}, *f16[] = {&w_f16}, *two_k[] = {&w, &w_k};
    const struct tl_tensor *wnull[] = {&w_null}, *bs_short[] = {&b_short};
    void *y1[] = {fake, fake}, *ynull[] = {NULL};
    const struct gh_status_check checks[] = {
        {"matmul m = 0", kern_matmul(ctx, TL_DTYPE_BF16, fake, 0, 1, one, NULL, y1),
         TL_ERR_INVALID},
        {"fused m over KERN_FUSED_MAX_M",
         kern_matmul_fused(ctx, TL_DTYPE_BF16, fake, KERN_FUSED_MAX_M + 1, NULL, 0.0f, 1, one, NULL,
                           y1, KERN_EPI_RESADD),
         TL_ERR_UNSUPPORTED},
        {"fused silu one weight",
         kern_matmul_fused(ctx, TL_DTYPE_BF16, fake, 1, NULL, 0.0f, 1, one, NULL, y1,
                           KERN_EPI_SILU),
         TL_ERR_INVALID},
        {"fused resadd with norm",
         kern_matmul_fused(ctx, TL_DTYPE_BF16, fake, 1, &nw, 1e-6f, 1, one, NULL, y1,
                           KERN_EPI_RESADD),
         TL_ERR_INVALID},
        {"matmul x NULL", kern_matmul(ctx, TL_DTYPE_BF16, NULL, 1, 1, one, NULL, y1),
         TL_ERR_INVALID},
        {"matmul n_w = 0", kern_matmul(ctx, TL_DTYPE_BF16, fake, 1, 0, one, NULL, y1),
         TL_ERR_INVALID},
        {"matmul n_w = 5", kern_matmul(ctx, TL_DTYPE_BF16, fake, 1, 5, one, NULL, y1),
         TL_ERR_INVALID},
        {"matmul act F32", kern_matmul(ctx, TL_DTYPE_F32, fake, 1, 1, one, NULL, y1),
         TL_ERR_UNSUPPORTED},
        {"matmul weight dtype != act", kern_matmul(ctx, TL_DTYPE_BF16, fake, 1, 1, f16, NULL, y1),
         TL_ERR_UNSUPPORTED},
        {"matmul group k differs", kern_matmul(ctx, TL_DTYPE_BF16, fake, 1, 2, two_k, NULL, y1),
         TL_ERR_INVALID},
        {"matmul weight data NULL", kern_matmul(ctx, TL_DTYPE_BF16, fake, 1, 1, wnull, NULL, y1),
         TL_ERR_INVALID},
        {"matmul y NULL", kern_matmul(ctx, TL_DTYPE_BF16, fake, 1, 1, one, NULL, ynull),
         TL_ERR_INVALID},
        {"matmul bias short", kern_matmul(ctx, TL_DTYPE_BF16, fake, 1, 1, one, bs_short, y1),
         TL_ERR_INVALID},
        {"matmul x misaligned",
         kern_matmul(ctx, TL_DTYPE_BF16, (char *)fake + 1, 1, 1, one, NULL, y1), TL_ERR_INVALID},
        {"rmsnorm_act act F32",
         kern_rmsnorm_act(ctx, TL_DTYPE_F32, fake, NULL, &nw, 1e-6f, 1, fake), TL_ERR_UNSUPPORTED},
        {"rmsnorm_act weight 2-D",
         kern_rmsnorm_act(ctx, TL_DTYPE_BF16, fake, NULL, &nw_2d, 1e-6f, 1, fake), TL_ERR_INVALID},
        {"rmsnorm_act weight I8",
         kern_rmsnorm_act(ctx, TL_DTYPE_BF16, fake, NULL, &nw_i8, 1e-6f, 1, fake),
         TL_ERR_UNSUPPORTED},
        {"rmsnorm_act eps NaN", kern_rmsnorm_act(ctx, TL_DTYPE_F16, fake, NULL, &nw, NAN, 1, fake),
         TL_ERR_INVALID},
        {"rmsnorm_act n = 0", kern_rmsnorm_act(ctx, TL_DTYPE_F16, fake, NULL, &nw, 1e-6f, 0, fake),
         TL_ERR_INVALID},
        {"silu_mul_act up NULL", kern_silu_mul_act(ctx, TL_DTYPE_BF16, fake, NULL, 1, 8, fake),
         TL_ERR_INVALID},
        {"silu_mul_act dim = 0", kern_silu_mul_act(ctx, TL_DTYPE_BF16, fake, fake, 1, 0, fake),
         TL_ERR_INVALID},
        {"embedding_act n = 0", kern_embedding_act(ctx, TL_DTYPE_BF16, &w, fake_tok, 0, fake),
         TL_ERR_INVALID},
        {"embedding_act act I8", kern_embedding_act(ctx, TL_DTYPE_I8, &w, fake_tok, 1, fake),
         TL_ERR_UNSUPPORTED},
        {"gather_rows_act rows NULL",
         kern_gather_rows_act(ctx, TL_DTYPE_BF16, fake, 8, NULL, 1, fake), TL_ERR_INVALID},
        {"to_f32 dst misaligned",
         kern_to_f32(ctx, TL_DTYPE_BF16, fake, 4, (float *)((char *)fake + 2)), TL_ERR_INVALID},
        {"to_f32 dtype I8", kern_to_f32(ctx, TL_DTYPE_I8, fake, 4, fake), TL_ERR_UNSUPPORTED},
    };
    return gh_check_statuses(ctx, checks, sizeof checks / sizeof checks[0]);
}

/* ---------------- main ---------------- */

int main(void) {
    struct kern_ctx *ctx;
    int start = gh_start(&ctx);
    if (start != 0) return start;
    struct kern_device_info info;
    if (kern_device_info(ctx, &info) == TL_OK)
        printf("device %d: %s, cc %d.%d, %d SMs\n", info.device, info.name, info.cc_major,
               info.cc_minor, info.sm_count);
    float *scratch = malloc(MATMUL_SCRATCH_FLOATS * sizeof(float));
    if (!scratch) {
        fprintf(stderr, "out of host memory\n");
        kern_ctx_destroy(ctx);
        return 1;
    }

    const enum tl_dtype dts[] = {TL_DTYPE_BF16, TL_DTYPE_F16};
    int n_run = 0, n_fail = 0;
    enum result r = RES_PASS;
    for (size_t ci = 0; ci < sizeof mcases / sizeof mcases[0] && r != RES_ERROR; ci++) {
        const struct mcase *c = &mcases[ci];
        for (int d = 0; d < 2 && r != RES_ERROR; d++)
            for (int path = 0; path < N_PATHS && r != RES_ERROR; path++) {
                char line[256] = "";
                r = run_matmul(ctx, NULL, scratch, c, dts[d], path, line, sizeof line);
                n_run++;
                n_fail += r != RES_PASS;
                char rows[64] = "";
                for (int p = 0; p < c->n_w; p++)
                    snprintf(rows + strlen(rows), sizeof rows - strlen(rows), "%s%d", p ? "/" : "",
                             c->rows[p]);
                printf("matmul %-4s %-6s m=%-3d k=%-5d rows=%-14s%s%s  %s  %s\n",
                       dtype_name(dts[d]), path_names[path], c->m, c->k, rows,
                       c->flags & 0xf ? " +bias" : "", c->flags & MISALIGN_X ? " x+2B" : "", line,
                       result_str(r));
            }
    }
    for (size_t ci = 0; ci < sizeof fcases / sizeof fcases[0] && r != RES_ERROR; ci++) {
        const struct fcase *c = &fcases[ci];
        for (int d = 0; d < 2 && r != RES_ERROR; d++) {
            char line[256] = "";
            r = run_fused(ctx, scratch, c, dts[d], line, sizeof line);
            n_run++;
            n_fail += r != RES_PASS;
            printf("fused  %-4s %-6s m=%-3d k=%-5d n_w=%d rows=%-6d%s%s  %s  %s\n",
                   dtype_name(dts[d]), epi_names[c->epi], c->m, c->k, c->n_w, c->rows[0],
                   c->norm ? " +norm" : "", c->bias ? " +bias" : "", line, result_str(r));
        }
    }
    for (size_t ci = 0; ci < sizeof rcases / sizeof rcases[0] && r != RES_ERROR; ci++) {
        const struct rcase *c = &rcases[ci];
        for (int d = 0; d < 2 && r != RES_ERROR; d++) {
            char line[256] = "";
            r = run_row_op(ctx, c, dts[d], line, sizeof line);
            n_run++;
            n_fail += r != RES_PASS;
            printf("%-9s %-4s n=%-4d dim=%-6d%s%s%s  %s  %s\n", rop_names[c->op],
                   dtype_name(dts[d]), c->n, c->dim, c->flags & WITH_ADD ? " +add" : "",
                   c->flags & IN_PLACE ? " in-place" : "", c->flags & W_F32 ? " w=F32" : "", line,
                   result_str(r));
        }
    }
    for (int d = 0; d < 2 && r != RES_ERROR; d++) {
        r = run_bad_ids(ctx, dts[d]);
        n_run++;
        n_fail += r != RES_PASS;
        printf("embedding/gather %s bad ids -> NaN rows  %s\n", dtype_name(dts[d]), result_str(r));
    }
    if (r != RES_ERROR) {
        r = run_bad_args(ctx);
        n_run++;
        n_fail += r != RES_PASS;
        printf("argument checks  %s\n", result_str(r));
    }
    free(scratch);
    kern_ctx_destroy(ctx);
    if (r == RES_ERROR) printf("stopped at the first CUDA error\n");
    printf("%d of %d checks passed\n", n_run - n_fail, n_run);
    return n_fail ? 1 : 0;
}
