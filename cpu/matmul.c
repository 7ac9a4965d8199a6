/* matmul: three paths. GEMV (m <= MATMUL_GEMV_MAX_M): threads split the weight rows; each row is
 * converted to fp32 8 lanes at a time and dotted with all m activation rows while it is in
 * registers, so the weights stream from memory once. bf16 dot products (bf16 weights, CPUs with
 * AVX512-BF16, MATMUL_BF16DP_MIN_M..MAX_M rows): x rounded to bf16, vdpbf16ps on the weights as
 * they are. GEMM: threads convert a panel of weight rows to fp32 in the scratch buffer, then
 * OpenBLAS (its own threads) multiplies the panel. */
#include "matmul.h"

#include <cblas.h>
#include <stdbool.h>
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

static int force_path;
static bool no_amx; /* cpu_matmul_disable_amx: tests and benchmarks only */

void cpu_matmul_force_path(int path) {
    force_path = path;
}

/* ---------------- GEMV kernels ---------------- */

struct gemv_args {
    const float *x;
    int m;
    int64_t k, n;
    const void *w;
    enum tl_dtype dt;
    float *y;
};

static inline float load_w(enum tl_dtype dt, const void *w, int64_t i) {
    if (dt == TL_DTYPE_BF16) return bf16_to_f32(((const uint16_t *)w)[i]);
    if (dt == TL_DTYPE_F16) return f16_to_f32(((const uint16_t *)w)[i]);
    return ((const float *)w)[i];
}

static void gemv_rows_generic(const struct gemv_args *a, int64_t r0, int64_t r1) {
    size_t es = dtype_size(a->dt);
    for (int64_t r = r0; r < r1; r++) {
        const char *row = (const char *)a->w + (size_t)r * (size_t)a->k * es;
        for (int i = 0; i < a->m; i++) {
            const float *xi = a->x + (size_t)i * (size_t)a->k;
            float acc = 0.0f;
            for (int64_t j = 0; j < a->k; j++) acc += load_w(a->dt, row, j) * xi[j];
            a->y[(size_t)i * (size_t)a->n + (size_t)r] = acc;
        }
    }
}

#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma,f16c")))

static inline AVX2 __m256 load8(enum tl_dtype dt, const char *row, int64_t j) {
    if (dt == TL_DTYPE_BF16) {
        __m128i h = _mm_loadu_si128((const __m128i *)(row + j * 2));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    if (dt == TL_DTYPE_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + j * 2)));
    return _mm256_loadu_ps((const float *)row + j);
}

static inline AVX2 float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* M is a compile-time constant after inlining, so acc[] lives in registers. */
static inline AVX2 __attribute__((always_inline)) void
gemv_rows_avx2_m(const struct gemv_args *a, int64_t r0, int64_t r1, const int M) {
    size_t es = dtype_size(a->dt);
    int64_t k8 = a->k & ~(int64_t)7;
    for (int64_t r = r0; r < r1; r++) {
        const char *row = (const char *)a->w + (size_t)r * (size_t)a->k * es;
        __m256 acc[MATMUL_GEMV_MAX_M], acc2[MATMUL_GEMV_MAX_M];
        for (int i = 0; i < M; i++) acc[i] = acc2[i] = _mm256_setzero_ps();
        int64_t j = 0;
        /* two independent FMA chains per row hide FMA latency at m = 1 */
        for (; j + 16 <= k8; j += 16) {
            __m256 w0 = load8(a->dt, row, j), w1 = load8(a->dt, row, j + 8);
            for (int i = 0; i < M; i++) {
                const float *xi = a->x + (size_t)i * (size_t)a->k;
                acc[i] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xi + j), acc[i]);
                acc2[i] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xi + j + 8), acc2[i]);
            }
        }
        for (; j < k8; j += 8) {
            __m256 w0 = load8(a->dt, row, j);
            for (int i = 0; i < M; i++)
                acc[i] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(a->x + (size_t)i * (size_t)a->k + j),
                                         acc[i]);
        }
        for (int i = 0; i < M; i++) {
            const float *xi = a->x + (size_t)i * (size_t)a->k;
            float s = hsum8(_mm256_add_ps(acc[i], acc2[i]));
            for (int64_t t = k8; t < a->k; t++) s += load_w(a->dt, row, t) * xi[t];
            a->y[(size_t)i * (size_t)a->n + (size_t)r] = s;
        }
    }
}

/* m = 1: four weight rows per pass share each load of x, so the core issues one x load per
 * four weight loads instead of one per weight load. */
static AVX2 void gemv_m1_avx2(const struct gemv_args *a, int64_t r0, int64_t r1) {
    size_t es = dtype_size(a->dt), rs = (size_t)a->k * es;
    int64_t k8 = a->k & ~(int64_t)7, r = r0;
    for (; r + 4 <= r1; r += 4) {
        const char *w0 = (const char *)a->w + (size_t)r * rs, *w1 = w0 + rs, *w2 = w1 + rs,
                   *w3 = w2 + rs;
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        for (int64_t j = 0; j < k8; j += 8) {
            __m256 xv = _mm256_loadu_ps(a->x + j);
            c0 = _mm256_fmadd_ps(load8(a->dt, w0, j), xv, c0);
            c1 = _mm256_fmadd_ps(load8(a->dt, w1, j), xv, c1);
            c2 = _mm256_fmadd_ps(load8(a->dt, w2, j), xv, c2);
            c3 = _mm256_fmadd_ps(load8(a->dt, w3, j), xv, c3);
        }
        float s[4] = {hsum8(c0), hsum8(c1), hsum8(c2), hsum8(c3)};
        const char *rows[4] = {w0, w1, w2, w3};
        for (int i = 0; i < 4; i++) {
            for (int64_t t = k8; t < a->k; t++) s[i] += load_w(a->dt, rows[i], t) * a->x[t];
            a->y[r + i] = s[i];
        }
    }
    if (r < r1) gemv_rows_avx2_m(a, r, r1, 1);
}

static AVX2 void gemv_rows_avx2(const struct gemv_args *a, int64_t r0, int64_t r1) {
    switch (a->m) {
    case 1:
        gemv_m1_avx2(a, r0, r1);
        break;
    case 2:
        gemv_rows_avx2_m(a, r0, r1, 2);
        break;
    case 3:
        gemv_rows_avx2_m(a, r0, r1, 3);
        break;
    case 4:
        gemv_rows_avx2_m(a, r0, r1, 4);
        break;
    case 5:
        gemv_rows_avx2_m(a, r0, r1, 5);
        break;
    case 6:
        gemv_rows_avx2_m(a, r0, r1, 6);
        break;
    case 7:
        gemv_rows_avx2_m(a, r0, r1, 7);
        break;
    default:
        gemv_rows_avx2_m(a, r0, r1, 8);
        break;
    }
}

static int have_avx2(void) {
    static int cached = -1;
    if (cached < 0)
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                 __builtin_cpu_supports("f16c");
    return cached;
}
#else
static int have_avx2(void) {
    return 0;
}
static void gemv_rows_avx2(const struct gemv_args *a, int64_t r0, int64_t r1) {
    gemv_rows_generic(a, r0, r1);
}
#endif

/* Several weights sharing one x (q/k/v, gate/up) run as one parallel loop over their concatenated
 * rows, in units of `unit` rows: one dispatch and one wait instead of one per weight. Every path
 * uses it; rows runs the path's kernel on rows r0..r1 of one weight, part its arguments. */
struct row_group {
    int n;
    int64_t unit;
    int64_t first[MATMUL_MAX_GROUP + 1]; /* first unit of each weight */
    const void *part[MATMUL_MAX_GROUP];
    void (*rows)(const void *part, int64_t r0, int64_t r1);
};

static void row_group_task(void *arg, int64_t u0, int64_t u1, int tid) {
    (void)tid;
    const struct row_group *g = arg;
    for (int p = 0; p < g->n; p++) {
        int64_t b = u0 > g->first[p] ? u0 : g->first[p];
        int64_t e = u1 < g->first[p + 1] ? u1 : g->first[p + 1];
        if (b < e) g->rows(g->part[p], (b - g->first[p]) * g->unit, (e - g->first[p]) * g->unit);
    }
}

/* Adds the next weight (rows rows, a multiple of g->unit) and its arguments to g. */
static void row_group_add(struct row_group *g, const void *part, int64_t rows) {
    g->part[g->n] = part;
    g->first[g->n + 1] = g->first[g->n] + rows / g->unit;
    g->n++;
}

/* ---------------- bf16 dot-product path (AVX512-BF16) ---------------- */

struct bf16dp_args {
    const uint16_t *x; /* (m, k) bf16 */
    int m;
    int64_t k, n;
    const uint16_t *w; /* (n, k) bf16 */
    float *y;          /* (m, n) */
};

/* For bf16 weights and 2..MATMUL_BF16DP_MAX_M rows of x on CPUs with AVX512-BF16 (Cooper Lake,
 * Sapphire Rapids and later, Zen 4): x is rounded to bf16 once, and vdpbf16ps multiplies pairs
 * of bf16 straight from the weight rows into fp32 sums, 32 products per instruction, with no
 * conversion of the weights. A tile is 4 weight rows x 6 rows of x: 24 accumulators of 16 lanes
 * (each lane a partial sum over its pairs of k), summed across lanes at the end. A thread walks
 * its weight rows 4 at a time; for each 4 it runs every block of 6 x rows, so a weight byte is
 * read from memory once and x (at most 64 rows, ~1.7 MB at k = 13824) stays in L2. */
#if defined(__x86_64__)
#define BF16DP __attribute__((target("avx512f,avx512bw,avx512bf16")))

/* y rows i0..i0+MB-1, weight rows r..r+3 (rows past the thread's end repeat its last row and
 * are not stored). MB is a constant after inlining, so the 4 x MB sums stay in registers. */
static inline BF16DP __attribute__((always_inline)) void
bf16dp_tile(const struct bf16dp_args *a, int i0, int64_t r, int64_t r_end, const int MB) {
    const int64_t k = a->k;
    const uint16_t *wr[4], *xr[6];
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) wr[j] = a->w + (size_t)(r + j < r_end ? r + j : r_end - 1) * k;
#pragma GCC unroll 6
    for (int i = 0; i < MB; i++) xr[i] = a->x + (size_t)(i0 + i) * k;
    __m512 acc[6][4];
#pragma GCC unroll 6
    for (int i = 0; i < MB; i++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
    int64_t kk = 0;
    for (; kk + 32 <= k; kk += 32) {
        __m512bh wv[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) wv[j] = (__m512bh)_mm512_loadu_si512(wr[j] + kk);
#pragma GCC unroll 6
        for (int i = 0; i < MB; i++) {
            __m512bh xv = (__m512bh)_mm512_loadu_si512(xr[i] + kk);
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
        }
    }
    if (kk < k) { /* the last 1..31 elements: masked loads fill zeros */
        const __mmask32 mask = (__mmask32)((1ull << (k - kk)) - 1);
        __m512bh wv[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) wv[j] = (__m512bh)_mm512_maskz_loadu_epi16(mask, wr[j] + kk);
#pragma GCC unroll 6
        for (int i = 0; i < MB; i++) {
            __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(mask, xr[i] + kk);
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < MB; i++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            if (r + j < r_end)
                a->y[(size_t)(i0 + i) * (size_t)a->n + (size_t)(r + j)] =
                    _mm512_reduce_add_ps(acc[i][j]);
}

static BF16DP void bf16dp_rows(const void *arg, int64_t r0, int64_t r1) {
    const struct bf16dp_args *a = arg;
    for (int64_t r = r0; r < r1; r += 4) {
        int i = 0;
        for (; i + 6 <= a->m; i += 6) bf16dp_tile(a, i, r, r1, 6);
        switch (a->m - i) {
        case 5:
            bf16dp_tile(a, i, r, r1, 5);
            break;
        case 4:
            bf16dp_tile(a, i, r, r1, 4);
            break;
        case 3:
            bf16dp_tile(a, i, r, r1, 3);
            break;
        case 2:
            bf16dp_tile(a, i, r, r1, 2);
            break;
        case 1:
            bf16dp_tile(a, i, r, r1, 1);
            break;
        default:
            break;
        }
    }
}

/* x (fp32) rounded to bf16, nearest even (as the GPU rounds activations). */
static BF16DP void bf16dp_round_x(const float *x, size_t n, uint16_t *out) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
        _mm512_storeu_si512(out + i, (__m512i)v);
    }
    for (; i < n; i++) out[i] = f32_to_bf16(x[i]);
}

static int have_avx512bf16(void) {
    static int cached = -1;
    if (cached < 0)
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512bf16");
    return cached;
}
#else
static void bf16dp_rows(const void *a, int64_t r0, int64_t r1) {
    (void)a, (void)r0, (void)r1;
}
static void bf16dp_round_x(const float *x, size_t n, uint16_t *out) {
    for (size_t i = 0; i < n; i++) out[i] = f32_to_bf16(x[i]);
}
static int have_avx512bf16(void) {
    return 0;
}
#endif

/* ---------------- AMX path (Sapphire Rapids and later) ----------------
 * The same product on the tile unit: C^T (16 weight rows x 16 rows of x, fp32) += W tile (16
 * rows x 32 k, bf16, straight from the weights) . X^T tile (x packed once per call into the
 * pair-interleaved layout the unit reads: for each 16 rows of x and 32 k, 16 rows of k pairs by
 * 16 x rows). Two weight tiles x two x tiles: four accumulators, 16 K FLOP per instruction, so
 * 2..64 rows of x run at the speed the weights stream from memory. Needs k and the rows of every
 * weight in multiples of 32, and the kernel's leave to use the tile data (arch_prctl). */
struct amx_args {
    const uint16_t *xp; /* packed x: (m16 groups, k / 32 chunks, 16 pairs, 16 rows, 2) bf16 */
    int m;
    int64_t k, n;
    const uint16_t *w; /* (n, k) bf16 */
    float *y;          /* (m, n) */
};

struct amx_pack {
    const float *x;
    int m;
    int64_t k;
    uint16_t *out;
};

/* Blocks b0..b1 (block = 16 rows of x by 32 k) of x (m, k) fp32 -> the packed bf16 layout of
 * struct amx_args (rows past m are zeros). */
static void amx_pack_task(void *arg, int64_t b0, int64_t b1, int tid) {
    (void)tid;
    const struct amx_pack *a = arg;
    const float *x = a->x;
    const int m = a->m;
    const int64_t k = a->k, kc = k / 32;
    for (int64_t b = b0; b < b1; b++) {
        const int g = (int)(b / kc);
        const int64_t q = b % kc;
        uint16_t *blk = a->out + (size_t)b * 512;
        for (int p = 0; p < 16; p++)
            for (int j = 0; j < 16; j++)
                for (int t = 0; t < 2; t++) {
                    const int row = g * 16 + j;
                    blk[p * 32 + j * 2 + t] =
                        row < m ? f32_to_bf16(x[(size_t)row * (size_t)k + q * 32 + p * 2 + t]) : 0;
                }
    }
}

#if defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#define AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw")))

struct amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

static AMX void amx_config(void) {
    struct amx_cfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) c.rows[t] = 16, c.colsb[t] = 64;
    _tile_loadconfig(&c);
}

/* Weight rows r0..r1 (multiples of 32) against every 16-row group of x, two groups at a time. */
#define AMX_PF 6 /* tiles of k ahead that amx_rows prefetches each weight row */

static AMX void amx_rows(const void *arg, int64_t r0, int64_t r1) {
    const struct amx_args *a = arg;
    const int64_t k = a->k, kc = k / 32;
    const int groups = (a->m + 15) / 16;
    float c[16 * 16] __attribute__((aligned(64)));
    amx_config();
    for (int64_t r = r0; r < r1; r += 32) {
        const uint16_t *w0 = a->w + (size_t)r * (size_t)k, *w1 = w0 + (size_t)16 * (size_t)k;
        for (int g = 0; g < groups; g += 2) {
            const bool two = g + 1 < groups;
            const uint16_t *x0 = a->xp + (size_t)g * (size_t)kc * 512;
            const uint16_t *x1 = two ? x0 + (size_t)kc * 512 : x0;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int64_t q = 0; q < kc; q++) {
                /* a tile load waits for its 16 rows' lines: ask for each row's line AMX_PF
                 * tiles ahead, which the hardware prefetchers, tracking 32 strided streams,
                 * did not (2.8 TFLOP/s at 64 rows, where memory allows ~7) */
                if (q + AMX_PF < kc)
                    for (int i = 0; i < 16; i++) {
                        _mm_prefetch((const char *)(w0 + (size_t)i * (size_t)k + (q + AMX_PF) * 32),
                                     _MM_HINT_T0);
                        _mm_prefetch((const char *)(w1 + (size_t)i * (size_t)k + (q + AMX_PF) * 32),
                                     _MM_HINT_T0);
                    }
                _tile_loadd(4, w0 + q * 32, k * 2);
                _tile_loadd(5, w1 + q * 32, k * 2);
                _tile_loadd(6, x0 + q * 512, 64);
                _tile_loadd(7, x1 + q * 512, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 5, 6);
                _tile_dpbf16ps(2, 4, 7);
                _tile_dpbf16ps(3, 5, 7);
            }
            /* tile t: weight rows (t & 1) * 16.., x rows of group g + (t >> 1) */
            for (int t = 0; t < (two ? 4 : 2); t++) {
                switch (t) {
                case 0:
                    _tile_stored(0, c, 64);
                    break;
                case 1:
                    _tile_stored(1, c, 64);
                    break;
                case 2:
                    _tile_stored(2, c, 64);
                    break;
                default:
                    _tile_stored(3, c, 64);
                    break;
                }
                const int64_t rr = r + (t & 1) * 16;
                const int j0 = (g + (t >> 1)) * 16;
                for (int i = 0; i < 16; i++)
                    for (int j = 0; j < 16 && j0 + j < a->m; j++)
                        a->y[(size_t)(j0 + j) * (size_t)a->n + (size_t)(rr + i)] = c[i * 16 + j];
            }
        }
    }
    _tile_release();
}

static int have_amx(void) {
    static int cached = -1;
    if (cached < 0) {
        cached = 0;
        if (__builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") &&
            have_avx512bf16()) {
            /* ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): once per process */
            cached = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
        }
    }
    return cached;
}
#else
static void amx_rows(const void *a, int64_t r0, int64_t r1) {
    (void)a, (void)r0, (void)r1;
}
static int have_amx(void) {
    return 0;
}
#endif

static bool amx_ok(int m, int n_w, const struct tl_tensor *const *w) {
    if (!have_amx() || m < 1 || m > MATMUL_BF16DP_MAX_M || w[0]->cols % 32) return false;
    if ((size_t)((m + 15) / 16 * 16) * (size_t)w[0]->cols * 2 >
        MATMUL_SCRATCH_FLOATS * sizeof(float))
        return false;
    for (int p = 0; p < n_w; p++)
        if (w[p]->dtype != TL_DTYPE_BF16 || w[p]->rows % 32) return false;
    return true;
}

static void amx_path(struct pool *pool, float *scratch, const float *x, int m, int n_w,
                     const struct tl_tensor *const *w, float *const *y) {
    const int64_t k = w[0]->cols;
    uint16_t *xp = (uint16_t *)scratch;
    struct amx_pack pk = {x, m, k, xp};
    pool_parallel_for(pool, (int64_t)((m + 15) / 16) * (k / 32), 8, amx_pack_task, &pk);
    struct amx_args args[MATMUL_MAX_GROUP];
    struct row_group g = {.unit = 32, .rows = amx_rows}; /* AMX takes weight rows in 32s */
    for (int p = 0; p < n_w; p++) {
        args[p] = (struct amx_args){xp, m, k, w[p]->rows, (const uint16_t *)w[p]->data, y[p]};
        row_group_add(&g, &args[p], w[p]->rows);
    }
    pool_parallel_for(pool, g.first[n_w], 1, row_group_task, &g);
}

/* Whether the bf16 path can take these weights (same k, bf16) and m. */
static bool bf16dp_ok(int m, int n_w, const struct tl_tensor *const *w) {
    if (!have_avx512bf16() || m < 1 || m > MATMUL_BF16DP_MAX_M) return false;
    if ((size_t)m * (size_t)w[0]->cols * 2 > MATMUL_SCRATCH_FLOATS * sizeof(float)) return false;
    for (int p = 0; p < n_w; p++)
        if (w[p]->dtype != TL_DTYPE_BF16) return false;
    return true;
}

static void bf16dp_path(struct pool *pool, float *scratch, const float *x, int m, int n_w,
                        const struct tl_tensor *const *w, float *const *y) {
    const int64_t k = w[0]->cols;
    uint16_t *xb = (uint16_t *)scratch;
    bf16dp_round_x(x, (size_t)m * (size_t)k, xb);
    /* rows of x in chunks of 60 (ten 6-row blocks), so x stays in L2 */
    for (int i0 = 0; i0 < m; i0 += 60) {
        const int mi = m - i0 < 60 ? m - i0 : 60;
        struct bf16dp_args args[MATMUL_MAX_GROUP];
        struct row_group g = {.unit = 1, .rows = bf16dp_rows};
        for (int p = 0; p < n_w; p++) {
            args[p] = (struct bf16dp_args){xb + (size_t)i0 * (size_t)k,
                                           mi,
                                           k,
                                           w[p]->rows,
                                           (const uint16_t *)w[p]->data,
                                           y[p] + (size_t)i0 * (size_t)w[p]->rows};
            row_group_add(&g, &args[p], w[p]->rows);
        }
        pool_parallel_for(pool, g.first[n_w], 16, row_group_task, &g);
    }
}

void cpu_matmul_disable_amx(bool off) {
    no_amx = off;
}

bool cpu_matmul_amx_available(void) {
    return have_amx();
}

const char *cpu_matmul_kernel_name(void) {
    if (have_amx() && !no_amx) return "avx2 + amx-bf16";
    if (have_avx512bf16()) return "avx2 + avx512-bf16";
    return have_avx2() ? "avx2" : "generic";
}

static void gemv_rows(const void *arg, int64_t r0, int64_t r1) {
    if (have_avx2())
        gemv_rows_avx2(arg, r0, r1);
    else
        gemv_rows_generic(arg, r0, r1);
}

/* ---------------- GEMM path ---------------- */

struct convert_args {
    const void *w;
    enum tl_dtype dt;
    int64_t k;
    float *dst;
};

static void convert_task(void *arg, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    const struct convert_args *a = arg;
    size_t es = dtype_size(a->dt);
    dtype_to_f32(a->dt, (const char *)a->w + (size_t)r0 * (size_t)a->k * es,
                 a->dst + (size_t)r0 * (size_t)a->k, (size_t)(r1 - r0) * (size_t)a->k);
}

static void gemm_path(struct pool *pool, float *scratch, const float *x, int m,
                      const struct tl_tensor *w, float *y) {
    int64_t n = w->rows, k = w->cols;
    if (w->dtype == TL_DTYPE_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, (int)n, (int)k, 1.0f, x, (int)k,
                    (const float *)w->data, (int)k, 0.0f, y, (int)n);
        return;
    }
    int64_t panel = (int64_t)(MATMUL_SCRATCH_FLOATS / (size_t)k);
    if (panel < 1) panel = 1;
    size_t es = dtype_size(w->dtype);
    for (int64_t r0 = 0; r0 < n; r0 += panel) {
        int64_t rows = n - r0 < panel ? n - r0 : panel;
        struct convert_args ca = {(const char *)w->data + (size_t)r0 * (size_t)k * es, w->dtype, k,
                                  scratch};
        pool_parallel_for(pool, rows, 16, convert_task, &ca);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, (int)rows, (int)k, 1.0f, x, (int)k,
                    scratch, (int)k, 0.0f, y + r0, (int)n);
    }
}

static void add_bias(const struct tl_tensor *bias, int m, int64_t n, float *y) {
    for (int i = 0; i < m; i++) {
        float *yi = y + (size_t)i * (size_t)n;
        for (int64_t r = 0; r < n; r++) yi[r] += load_w(bias->dtype, bias->data, r);
    }
}

static void matmul_group(struct pool *pool, float *scratch, const float *x, int m, int n_w,
                         const struct tl_tensor *const *w, const struct tl_tensor *const *bias,
                         float *const *y, bool bf16_x) {
    int path = force_path;
    if (!path)
        path = bf16_x && m >= MATMUL_BF16DP_MIN_M && bf16dp_ok(m, n_w, w) ? 3
               : m <= MATMUL_GEMV_MAX_M                                   ? 1
                                                                          : 2;
    if (path == 3 && !bf16dp_ok(m, n_w, w)) path = m <= MATMUL_GEMV_MAX_M ? 1 : 2;
    if (path == 3 && amx_ok(m, n_w, w) && !no_amx) {
        amx_path(pool, scratch, x, m, n_w, w, y);
    } else if (path == 3) {
        bf16dp_path(pool, scratch, x, m, n_w, w, y);
    } else if (path == 1) {
        /* GEMV handles 8 rows of x per pass; larger m (forced) runs in groups of 8. */
        for (int i0 = 0; i0 < m; i0 += MATMUL_GEMV_MAX_M) {
            int mi = m - i0 < MATMUL_GEMV_MAX_M ? m - i0 : MATMUL_GEMV_MAX_M;
            struct gemv_args args[MATMUL_MAX_GROUP];
            struct row_group g = {.unit = 1, .rows = gemv_rows};
            for (int p = 0; p < n_w; p++) {
                args[p] = (struct gemv_args){x + (size_t)i0 * (size_t)w[p]->cols,
                                             mi,
                                             w[p]->cols,
                                             w[p]->rows,
                                             w[p]->data,
                                             w[p]->dtype,
                                             y[p] + (size_t)i0 * (size_t)w[p]->rows};
                row_group_add(&g, &args[p], w[p]->rows);
            }
            pool_parallel_for(pool, g.first[n_w], 16, row_group_task, &g);
        }
    } else {
        for (int p = 0; p < n_w; p++) gemm_path(pool, scratch, x, m, w[p], y[p]);
    }
    for (int p = 0; p < n_w; p++)
        if (bias && bias[p]) add_bias(bias[p], m, w[p]->rows, y[p]);
}

void cpu_matmul_group(struct pool *pool, float *scratch, const float *x, int m, int n_w,
                      const struct tl_tensor *const *w, const struct tl_tensor *const *bias,
                      float *const *y) {
    matmul_group(pool, scratch, x, m, n_w, w, bias, y, false);
}

void cpu_matmul_group_bf16x(struct pool *pool, float *scratch, const float *x, int m, int n_w,
                            const struct tl_tensor *const *w, const struct tl_tensor *const *bias,
                            float *const *y) {
    matmul_group(pool, scratch, x, m, n_w, w, bias, y, true);
}

void cpu_matmul(struct pool *pool, float *scratch, const float *x, int m, const struct tl_tensor *w,
                const struct tl_tensor *bias, float *y) {
    cpu_matmul_group(pool, scratch, x, m, 1, &w, &bias, &y);
}

bool cpu_matmul_bf16dp_available(void) {
    return have_avx512bf16();
}
