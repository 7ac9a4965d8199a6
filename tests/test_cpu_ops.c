/* test_cpu_ops: every CPU op against a plain double-precision reference on fresh random
 * inputs, at odd sizes, with 1..3 threads; outputs are poisoned first so unwritten elements
 * show up as NaN. matmul runs both its GEMV and GEMM paths in all three weight dtypes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "cpu_ops.h"
#include "matmul.h"
#include "rope.h"

static uint64_t rng = 0x1234567ull;

static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)(rng >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

static void fill(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = frand();
}

static void poison(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

static double rel_err_d(const float *a, const double *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        num += (a[i] - ref[i]) * (a[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* Weight tensor of dtype dt with values from w32 (rounded); returns the exact values used. */
static void *make_weight(enum tl_dtype dt, float *w32, size_t n) {
    void *w = malloc(n * dtype_size(dt));
    dtype_from_f32(dt, w32, w, n);
    dtype_to_f32(dt, w, w32, n); /* the reference uses the rounded values */
    return w;
}

static void test_matmul(void **state) {
    (void)state;
    enum tl_dtype dts[] = {TL_DTYPE_F32, TL_DTYPE_F16, TL_DTYPE_BF16};
    int ms[] = {1, 2, 3, 5, 8, 9, 17, 40};
    int shapes[][2] = {{33, 67}, {64, 64}, {130, 257}, {7, 1}};
    float *scratch = malloc(MATMUL_SCRATCH_FLOATS * sizeof(float));
    for (int threads = 1; threads <= 3; threads++) {
        struct pool *pool;
        struct tl_err err;
        assert_int_equal(pool_create(threads, false, &pool, &err), TL_OK);
        for (size_t d = 0; d < 3; d++)
            for (size_t s = 0; s < 4; s++)
                for (size_t mi = 0; mi < 8; mi++)
                    for (int path = 0; path <= 2; path++) {
                        int n = shapes[s][0], k = shapes[s][1], m = ms[mi];
                        float *w32 = malloc((size_t)n * k * 4), *x = malloc((size_t)m * k * 4);
                        float *y = malloc((size_t)m * n * 4), *b32 = malloc((size_t)n * 4);
                        double *ref = malloc((size_t)m * n * 8);
                        fill(w32, (size_t)n * k);
                        fill(x, (size_t)m * k);
                        fill(b32, (size_t)n);
                        void *w = make_weight(dts[d], w32, (size_t)n * k);
                        void *b = make_weight(dts[d], b32, (size_t)n);
                        struct tl_tensor wt = {dts[d], n, k, w}, bt = {dts[d], 1, n, b};
                        int with_bias = (mi + s) % 2;
                        for (int i = 0; i < m; i++)
                            for (int j = 0; j < n; j++) {
                                double acc = with_bias ? b32[j] : 0.0;
                                for (int t = 0; t < k; t++)
                                    acc += (double)x[(size_t)i * k + t] * w32[(size_t)j * k + t];
                                ref[(size_t)i * n + j] = acc;
                            }
                        poison(y, (size_t)m * n);
                        cpu_matmul_force_path(path);
                        cpu_matmul(pool, scratch, x, m, &wt, with_bias ? &bt : NULL, y);
                        cpu_matmul_force_path(0);
                        double r = rel_err_d(y, ref, (size_t)m * n);
                        if (r > 1e-5)
                            fail_msg("matmul %s m=%d n=%d k=%d path=%d threads=%d: rel err %.3g",
                                     dtype_name(dts[d]), m, n, k, path, threads, r);
                        free(w32), free(x), free(y), free(b32), free(ref), free(w), free(b);
                    }
        pool_destroy(pool);
    }
    free(scratch);
}

/* The AVX512-BF16 path (cpu_matmul_group_bf16x, or forced): x is rounded to bf16, products of
 * bf16 pairs are exact in fp32, so against a reference on the rounded x the error is fp32
 * summation only (1e-5). Odd k and k past a 32-element piece exercise the masked tail; m past
 * 6 and 60 the row blocks and chunks; rows not a multiple of 4 the clamped weight tile. Skipped
 * (the rest of the suite still runs) on CPUs without AVX512-BF16, where the forced path must
 * fall back and still be exact. */
static void test_matmul_bf16dp(void **state) {
    (void)state;
    const bool have = cpu_matmul_bf16dp_available();
    int ms[] = {2, 5, 6, 7, 13, 61, 64, 130};
    /* 64 x 64 and 96 x 2048 take the AMX tiles where the CPU has them (rows and k in 32s) */
    int shapes[][2] = {{37, 67}, {64, 64}, {130, 257}, {9, 5120}, {96, 2048}};
    float *scratch = malloc(MATMUL_SCRATCH_FLOATS * sizeof(float));
    struct pool *pool;
    struct tl_err err;
    assert_int_equal(pool_create(3, false, &pool, &err), TL_OK);
    if (!have) printf("  (this CPU has no AVX512-BF16: checking the fallback only)\n");
    if (have) printf("  (AMX tiles: %s)\n", cpu_matmul_amx_available() ? "yes" : "no");
    for (int amx = 0; amx < 2; amx++)
        for (size_t s = 0; s < 5; s++)
            for (size_t mi = 0; mi < 8; mi++)
                for (int how = 0; how < 2; how++) { /* forced path 3, then the _bf16x entry */
                    cpu_matmul_disable_amx(!amx);
                    int n = shapes[s][0], k = shapes[s][1], m = ms[mi];
                    float *w32 = malloc((size_t)n * k * 4), *x = malloc((size_t)m * k * 4);
                    float *xr = malloc((size_t)m * k * 4), *y = malloc((size_t)m * n * 4);
                    double *ref = malloc((size_t)m * n * 8);
                    fill(w32, (size_t)n * k);
                    fill(x, (size_t)m * k);
                    void *w = make_weight(TL_DTYPE_BF16, w32, (size_t)n * k);
                    memcpy(xr, x, (size_t)m * k * 4);
                    /* the bf16 path sees x rounded; the fallback (fp32 x) the values as they are */
                    if (have) {
                        uint16_t *t = malloc((size_t)m * k * 2);
                        dtype_from_f32(TL_DTYPE_BF16, xr, t, (size_t)m * k);
                        dtype_to_f32(TL_DTYPE_BF16, t, xr, (size_t)m * k);
                        free(t);
                    }
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++) {
                            double acc = 0;
                            for (int t = 0; t < k; t++)
                                acc += (double)xr[(size_t)i * k + t] * w32[(size_t)j * k + t];
                            ref[(size_t)i * n + j] = acc;
                        }
                    struct tl_tensor wt = {TL_DTYPE_BF16, n, k, w};
                    const struct tl_tensor *wp = &wt;
                    poison(y, (size_t)m * n);
                    if (how == 0) {
                        cpu_matmul_force_path(3);
                        cpu_matmul(pool, scratch, x, m, &wt, NULL, y);
                        cpu_matmul_force_path(0);
                    } else {
                        cpu_matmul_group_bf16x(pool, scratch, x, m, 1, &wp, NULL, &y);
                    }
                    cpu_matmul_disable_amx(false);
                    double r = rel_err_d(y, ref, (size_t)m * n);
                    if (r > 1e-5)
                        fail_msg("bf16 path (%s, amx %s) m=%d n=%d k=%d: rel err %.3g",
                                 how ? "bf16x" : "forced", amx ? "allowed" : "off", m, n, k, r);
                    free(w32), free(x), free(xr), free(y), free(ref), free(w);
                }
    pool_destroy(pool);
    free(scratch);
}

/* q/k/v-style group: three weights of different row counts, one bias missing, both paths. */
static void test_matmul_group(void **state) {
    (void)state;
    struct pool *pool;
    struct tl_err err;
    assert_int_equal(pool_create(3, false, &pool, &err), TL_OK);
    float *scratch = malloc(MATMUL_SCRATCH_FLOATS * sizeof(float));
    int k = 45, rows[3] = {37, 9, 20};
    for (int m = 1; m <= 12; m += 11) {
        float *x = malloc((size_t)m * k * 4), *w32[3], *b32[3], *y[3];
        void *w[3], *b[3];
        struct tl_tensor wt[3], bt[3];
        const struct tl_tensor *wp[3], *bp[3];
        fill(x, (size_t)m * k);
        for (int p = 0; p < 3; p++) {
            w32[p] = malloc((size_t)rows[p] * k * 4), b32[p] = malloc((size_t)rows[p] * 4);
            y[p] = malloc((size_t)m * rows[p] * 4);
            fill(w32[p], (size_t)rows[p] * k);
            fill(b32[p], (size_t)rows[p]);
            w[p] = make_weight(TL_DTYPE_BF16, w32[p], (size_t)rows[p] * k);
            b[p] = make_weight(TL_DTYPE_BF16, b32[p], (size_t)rows[p]);
            wt[p] = (struct tl_tensor){TL_DTYPE_BF16, rows[p], k, w[p]};
            bt[p] = (struct tl_tensor){TL_DTYPE_BF16, 1, rows[p], b[p]};
            wp[p] = &wt[p];
            bp[p] = p == 1 ? NULL : &bt[p];
            poison(y[p], (size_t)m * rows[p]);
        }
        cpu_matmul_group(pool, scratch, x, m, 3, wp, bp, y);
        for (int p = 0; p < 3; p++) {
            double *ref = malloc((size_t)m * rows[p] * 8);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < rows[p]; j++) {
                    double acc = p == 1 ? 0.0 : b32[p][j];
                    for (int t = 0; t < k; t++)
                        acc += (double)x[(size_t)i * k + t] * w32[p][(size_t)j * k + t];
                    ref[(size_t)i * rows[p] + j] = acc;
                }
            double r = rel_err_d(y[p], ref, (size_t)m * rows[p]);
            if (r > 1e-5) fail_msg("matmul group m=%d part %d: rel err %.3g", m, p, r);
            free(ref), free(w32[p]), free(b32[p]), free(y[p]), free(w[p]), free(b[p]);
        }
        free(x);
    }
    free(scratch);
    pool_destroy(pool);
}

static void test_rmsnorm_silu_embedding(void **state) {
    (void)state;
    struct pool *pool;
    struct tl_err err;
    assert_int_equal(pool_create(2, false, &pool, &err), TL_OK);
    int n = 5, d = 1031;
    float *res = malloc((size_t)n * d * 4), *add = malloc((size_t)n * d * 4);
    float *out = malloc((size_t)n * d * 4), *w32 = malloc((size_t)d * 4);
    double *ref = malloc((size_t)n * d * 8), *res_ref = malloc((size_t)n * d * 8);
    fill(res, (size_t)n * d);
    fill(add, (size_t)n * d);
    fill(w32, (size_t)d);
    void *w = make_weight(TL_DTYPE_BF16, w32, (size_t)d);
    struct tl_tensor wt = {TL_DTYPE_BF16, 1, d, w};
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int j = 0; j < d; j++) {
            res_ref[(size_t)i * d + j] = (double)res[(size_t)i * d + j] + add[(size_t)i * d + j];
            ss += res_ref[(size_t)i * d + j] * res_ref[(size_t)i * d + j];
        }
        double inv = 1.0 / sqrt(ss / d + 1e-6);
        for (int j = 0; j < d; j++)
            ref[(size_t)i * d + j] = res_ref[(size_t)i * d + j] * inv * w32[j];
    }
    poison(out, (size_t)n * d);
    cpu_rmsnorm(pool, res, add, &wt, 1e-6f, n, out);
    assert_true(rel_err_d(res, res_ref, (size_t)n * d) < 1e-6);
    assert_true(rel_err_d(out, ref, (size_t)n * d) < 1e-5);

    /* silu(gate) * up, written in place over gate as the forward pass does */
    float *gate = malloc((size_t)n * d * 4);
    fill(gate, (size_t)n * d);
    for (size_t i = 0; i < (size_t)n * d; i++) {
        gate[i] *= 8.0f;
        double g = gate[i];
        ref[i] = g / (1.0 + exp(-g)) * add[i];
    }
    cpu_silu_mul(pool, gate, add, n, d, gate);
    assert_true(rel_err_d(gate, ref, (size_t)n * d) < 1e-6);

    /* embedding rows in f16 */
    int vocab = 50, hd = 37;
    float *tab32 = malloc((size_t)vocab * hd * 4);
    fill(tab32, (size_t)vocab * hd);
    void *tab = make_weight(TL_DTYPE_F16, tab32, (size_t)vocab * hd);
    struct tl_tensor tt = {TL_DTYPE_F16, vocab, hd, tab};
    int32_t toks[4] = {49, 0, 7, 7};
    poison(out, 4 * (size_t)hd);
    cpu_embedding(pool, &tt, toks, 4, out);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < hd; j++)
            assert_true(out[(size_t)i * hd + j] == tab32[(size_t)toks[i] * hd + j]);
    free(res), free(add), free(out), free(w32), free(ref), free(res_ref), free(w), free(gate);
    free(tab32), free(tab);
    pool_destroy(pool);
}

/* Three sequences with different past lengths and shuffled (non-contiguous) blocks: rope +
 * paged write + attention against a contiguous double-precision reference. */
static void test_rope_attention_paged(void **state) {
    (void)state;
    const int H = 6, KVH = 2, HD = 16, BS = 4, NB = 64, half = HD / 2;
    struct config cfg = {.head_dim = HD, .rope_theta = 10000.0};
    float inv_freq[8];
    rope_inv_freq(&cfg, inv_freq);
    int n_past[3] = {0, 9, 30}, n_new[3] = {7, 1, 3};
    int T = 11;
    int32_t tables[3][16];
    int perm[NB];
    for (int i = 0; i < NB; i++) perm[i] = i;
    for (int i = NB - 1; i > 0; i--) {
        int j = (int)((frand() + 1.0f) * 0.5f * (float)(i + 1)) % (i + 1), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int used = 0;
    struct fwd_seq fs[3];
    for (int s = 0; s < 3; s++) {
        int nb = (n_past[s] + n_new[s] + BS - 1) / BS;
        for (int b = 0; b < nb; b++) tables[s][b] = perm[used++];
        fs[s] = (struct fwd_seq){n_new[s], n_past[s], tables[s], nb, 1};
    }
    size_t kvd = (size_t)KVH * HD;
    float *kc = malloc((size_t)NB * BS * kvd * 4), *vc = malloc((size_t)NB * BS * kvd * 4);
    /* full (unrotated) K/V history of each sequence, reference copy in double */
    static double kh[3][40][2][16], vh[3][40][2][16];
    for (int s = 0; s < 3; s++)
        for (int p = 0; p < n_past[s]; p++)
            for (int h = 0; h < KVH; h++) {
                float kr[16], cs[8], sn[8];
                for (int d = 0; d < HD; d++) kr[d] = frand(), vh[s][p][h][d] = frand();
                rope_cos_sin(inv_freq, half, p, cs, sn);
                /* cached K is stored rotated; the reference keeps the rotated value too */
                for (int d = 0; d < half; d++) {
                    float a = kr[d], b = kr[d + half];
                    kh[s][p][h][d] = a * cs[d] - b * sn[d];
                    kh[s][p][h][d + half] = b * cs[d] + a * sn[d];
                }
                size_t slot = (size_t)tables[s][p / BS] * BS + (size_t)(p % BS);
                for (int d = 0; d < HD; d++) {
                    kc[slot * kvd + (size_t)h * HD + d] = (float)kh[s][p][h][d];
                    vc[slot * kvd + (size_t)h * HD + d] = (float)vh[s][p][h][d];
                }
            }
    float *q = malloc((size_t)T * H * HD * 4), *k = malloc((size_t)T * kvd * 4);
    float *v = malloc((size_t)T * kvd * 4), *out = malloc((size_t)T * H * HD * 4);
    double *qref = malloc((size_t)T * H * HD * 8), *oref = malloc((size_t)T * H * HD * 8);
    fill(q, (size_t)T * H * HD);
    fill(k, (size_t)T * kvd);
    fill(v, (size_t)T * kvd);
    int32_t tokens[11] = {0}, positions[11], tok_seq[11];
    int t = 0;
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < n_new[s]; i++, t++) {
            int p = n_past[s] + i;
            positions[t] = p, tok_seq[t] = s;
            double ang[8];
            for (int d = 0; d < half; d++) ang[d] = (double)((float)p * inv_freq[d]);
            for (int h = 0; h < H; h++)
                for (int d = 0; d < half; d++) {
                    double a = q[((size_t)t * H + h) * HD + d],
                           b = q[((size_t)t * H + h) * HD + d + half];
                    qref[((size_t)t * H + h) * HD + d] = a * cos(ang[d]) - b * sin(ang[d]);
                    qref[((size_t)t * H + h) * HD + d + half] = b * cos(ang[d]) + a * sin(ang[d]);
                }
            for (int h = 0; h < KVH; h++)
                for (int d = 0; d < half; d++) {
                    double a = k[(size_t)t * kvd + h * HD + d],
                           b = k[(size_t)t * kvd + h * HD + d + half];
                    kh[s][p][h][d] = a * cos(ang[d]) - b * sin(ang[d]);
                    kh[s][p][h][d + half] = b * cos(ang[d]) + a * sin(ang[d]);
                    vh[s][p][h][d] = v[(size_t)t * kvd + h * HD + d];
                    vh[s][p][h][d + half] = v[(size_t)t * kvd + h * HD + d + half];
                }
        }
    struct fwd_batch b = {3, fs, T, tokens, positions};
    struct attn_shape shape = {H, KVH, HD, BS};
    for (int threads = 1; threads <= 3; threads += 2) {
        struct pool *pool;
        struct tl_err err;
        assert_int_equal(pool_create(threads, false, &pool, &err), TL_OK);
        float *qw = malloc((size_t)T * H * HD * 4), *kw = malloc((size_t)T * kvd * 4);
        memcpy(qw, q, (size_t)T * H * HD * 4);
        memcpy(kw, k, (size_t)T * kvd * 4);
        cpu_rope_kv_write(pool, &shape, &b, tok_seq, inv_freq, qw, kw, v, kc, vc);
        assert_true(rel_err_d(qw, qref, (size_t)T * H * HD) < 1e-5);
        float *scratch = malloc(cpu_attention_scratch_floats(&shape, threads) * 4);
        poison(out, (size_t)T * H * HD);
        cpu_attention(pool, &shape, &b, tok_seq, qw, kc, vc, out, scratch);
        t = 0;
        for (int s = 0; s < 3; s++)
            for (int i = 0; i < n_new[s]; i++, t++)
                for (int h = 0; h < H; h++) {
                    int g = h / (H / KVH), n_ctx = n_past[s] + i + 1;
                    double sc[40], mx = -1e300, sum = 0;
                    for (int j = 0; j < n_ctx; j++) {
                        double dd = 0;
                        for (int d = 0; d < HD; d++)
                            dd += qref[((size_t)t * H + h) * HD + d] * kh[s][j][g][d];
                        sc[j] = dd / sqrt((double)HD);
                        if (sc[j] > mx) mx = sc[j];
                    }
                    for (int j = 0; j < n_ctx; j++) sum += (sc[j] = exp(sc[j] - mx));
                    for (int d = 0; d < HD; d++) {
                        double o = 0;
                        for (int j = 0; j < n_ctx; j++) o += sc[j] / sum * vh[s][j][g][d];
                        oref[((size_t)t * H + h) * HD + d] = o;
                    }
                }
        double r = rel_err_d(out, oref, (size_t)T * H * HD);
        if (r > 1e-5) fail_msg("paged attention threads=%d: rel err %.3g", threads, r);
        free(qw), free(kw), free(scratch);
        pool_destroy(pool);
    }
    free(kc), free(vc), free(q), free(k), free(v), free(out), free(qref), free(oref);
}

static void test_llama3_inv_freq(void **state) {
    (void)state;
    /* Values from HF's _compute_llama3_parameters for theta 500000, hd 32, factor 8, low 1,
     * high 4, original 64: the first (high) frequency is unscaled, the last is divided by 8. */
    struct config c = {.head_dim = 32,
                       .rope_theta = 500000.0,
                       .rope_type = CONFIG_ROPE_LLAMA3,
                       .rope_factor = 8.0,
                       .rope_low_freq_factor = 1.0,
                       .rope_high_freq_factor = 4.0,
                       .rope_original_max_position = 64};
    float f[16];
    rope_inv_freq(&c, f);
    assert_float_equal(f[0], 1.0f, 1e-7);
    double base15 = 1.0 / pow(500000.0, 30.0 / 32.0);
    assert_float_equal(f[15], (float)(base15 / 8.0), 1e-12);
    /* a medium-band frequency is between its scaled and unscaled value */
    for (int i = 0; i < 16; i++) {
        double raw = (float)(1.0 / pow(500000.0, (2.0 * i) / 32.0));
        assert_true(f[i] <= raw * 1.000001 && f[i] >= raw / 8.0 * 0.999999);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_matmul_group),
        cmocka_unit_test(test_matmul_bf16dp),
        cmocka_unit_test(test_rmsnorm_silu_embedding),
        cmocka_unit_test(test_rope_attention_paged),
        cmocka_unit_test(test_llama3_inv_freq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
