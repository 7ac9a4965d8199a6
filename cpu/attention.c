/* attention: RoPE + paged KV write, and causal paged attention, on the CPU in fp32.
 * Attention's unit of work is a tile (up to ATTN_TILE_ROWS / group consecutive tokens of one
 * sequence) times one KV head: the q rows of the tile's tokens for every head of that KV head's
 * group share each K and V row read, so decode reads the cache once per token and KV head, not
 * once per q head, and prefill once per tile. A tile walks its context in chunks of ATTN_CHUNK
 * positions: scores of all its rows against the chunk's K rows, an online (running max)
 * softmax, then the chunk's V rows weighted into the rows' sums. When tiles x KV heads are too
 * few to keep every thread busy (small decode batches, long contexts), a tile's chunks are split
 * over n_split tasks whose partial max, sum and weighted V a second loop combines in split
 * order: results depend on the batch and the thread count, never on scheduling. Kernels:
 * AVX2+FMA where the CPU has it and head_dim is a multiple of 16, else plain C. */
#include "attention.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "rope.h"

struct rope_args {
    const struct attn_shape *s;
    const struct fwd_batch *b;
    const int32_t *tok_seq;
    const float *inv_freq;
    float *q, *k;
    const float *v;
    float *k_cache, *v_cache;
};

static void rotate(float *x, const float *cs, const float *sn, int half) {
    for (int i = 0; i < half; i++) {
        float a = x[i], b = x[i + half];
        x[i] = a * cs[i] - b * sn[i];
        x[i + half] = b * cs[i] + a * sn[i];
    }
}

static void rope_task(void *arg, int64_t t0, int64_t t1, int tid) {
    (void)tid;
    const struct rope_args *a = arg;
    const struct attn_shape *s = a->s;
    int hd = s->head_dim, half = hd / 2;
    float cs[512], sn[512]; /* head_dim <= 1024 is checked at backend creation */
    size_t kvd = (size_t)s->n_kv_heads * hd;
    for (int64_t t = t0; t < t1; t++) {
        int pos = a->b->positions[t];
        rope_cos_sin(a->inv_freq, half, pos, cs, sn);
        float *qt = a->q + (size_t)t * s->n_heads * hd, *kt = a->k + (size_t)t * kvd;
        for (int h = 0; h < s->n_heads; h++) rotate(qt + (size_t)h * hd, cs, sn, half);
        for (int h = 0; h < s->n_kv_heads; h++) rotate(kt + (size_t)h * hd, cs, sn, half);
        const struct fwd_seq *q = &a->b->seqs[a->tok_seq[t]];
        size_t slot = (size_t)q->block_table[pos / s->block_size] * s->block_size +
                      (size_t)(pos % s->block_size);
        memcpy(a->k_cache + slot * kvd, kt, kvd * sizeof(float));
        memcpy(a->v_cache + slot * kvd, a->v + (size_t)t * kvd, kvd * sizeof(float));
    }
}

void cpu_rope_kv_write(struct pool *pool, const struct attn_shape *s, const struct fwd_batch *b,
                       const int32_t *tok_seq, const float *inv_freq, float *q, float *k,
                       const float *v, float *k_cache, float *v_cache) {
    struct rope_args a = {s, b, tok_seq, inv_freq, q, k, v, k_cache, v_cache};
    pool_parallel_for(pool, b->n_tokens, 1, rope_task, &a);
}

#define ATTN_CHUNK     64 /* context positions per softmax chunk (and per split) */
#define ATTN_TILE_ROWS 64 /* q rows (tokens x heads) a task aims for */
#define ATTN_TASKS     4  /* tasks per thread below which a tile's context is split */

static int group_of(const struct attn_shape *s) {
    return s->n_heads / s->n_kv_heads;
}

/* Most tokens a tile takes: a tile of one KV head's group has at most ATTN_TILE_ROWS rows. */
static int tile_tokens(const struct attn_shape *s) {
    int qb = ATTN_TILE_ROWS / group_of(s);
    return qb > 1 ? qb : 1;
}

/* KV heads one task of an nq-token tile takes: the largest divisor of n_kv_heads that keeps
 * the rows (nq x group x heads) within a tile's. Decode (nq = 1) takes several, so a task reads
 * each cache slot's K and V of those heads as one contiguous run instead of 512-byte pieces
 * 4 KiB apart; large prefill tiles take one. */
static int task_heads(const struct attn_shape *s, int nq) {
    int h = tile_tokens(s) / nq;
    if (h > s->n_kv_heads) h = s->n_kv_heads;
    while (h > 1 && s->n_kv_heads % h) h--;
    return h > 1 ? h : 1;
}

static size_t round16(size_t n) {
    return (n + 15) & ~(size_t)15;
}

/* A thread's buffers for one task of R <= tile_tokens x group rows: q scaled by 1/sqrt(hd) and
 * the running weighted sums of V (R, hd), scores then probabilities (R, ATTN_CHUNK), running max
 * and sum (R). */
struct tile_buf {
    float *q, *o, *p, *m, *l;
};

static size_t thread_floats(const struct attn_shape *s) {
    size_t r = (size_t)tile_tokens(s) * (size_t)group_of(s);
    return 2 * round16(r * (size_t)s->head_dim) + round16(r * ATTN_CHUNK) + 2 * round16(r);
}

static struct tile_buf tile_buf_of(const struct attn_shape *s, float *base) {
    size_t r = (size_t)tile_tokens(s) * (size_t)group_of(s), qo = round16(r * (size_t)s->head_dim);
    struct tile_buf t = {base, base + qo, base + 2 * qo, NULL, NULL};
    t.m = t.p + round16(r * ATTN_CHUNK);
    t.l = t.m + round16(r);
    return t;
}

/* Split partials, (n_split, n_tokens, n_heads, hd + 2): weighted sums, max, sum. A split happens
 * only while tasks < target = ATTN_TASKS x threads, with n_split <= ceil(target / tasks), so
 * n_split x tasks < 2 target; and n_tokens x n_heads <= tasks x tile rows. */
static size_t partial_floats(const struct attn_shape *s, int n_threads) {
    if (n_threads <= 1) return 0;
    return (size_t)2 * ATTN_TASKS * (size_t)n_threads * (size_t)tile_tokens(s) *
           (size_t)group_of(s) * ((size_t)s->head_dim + 2);
}

size_t cpu_attention_scratch_floats(const struct attn_shape *s, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    return (size_t)n_threads * thread_floats(s) + partial_floats(s, n_threads);
}

/* The kernels one call uses, on a task of nh KV heads with rh q rows each (rows head-major).
 * Score and probability rows are ATTN_CHUNK apart; position j's K (or V) row of the task's
 * h-th head is at base + off[j] + h * hd. */
struct attn_kernels {
    const char *name;
    /* sc[h rh + r][j] = q[h rh + r] . k_j,h for j < n; may prefetch the V rows */
    void (*qk)(const float *q, int rh, int nh, int hd, const float *kbase, const size_t *off, int n,
               float *sc, const float *vbase);
    float (*max)(const float *x, int n);
    /* x[j] = exp(x[j] - m) for j < n; returns their sum */
    float (*exp_sum)(float *x, int n, float m);
    /* o[h rh + r] += sum_j p[h rh + r][j] v_j,h */
    void (*pv)(const float *p, int rh, int nh, int hd, const float *vbase, const size_t *off, int n,
               float *o);
};

static float dot(const float *a, const float *b, int n) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static void qk_c(const float *q, int rh, int nh, int hd, const float *kbase, const size_t *off,
                 int n, float *sc, const float *vbase) {
    (void)vbase;
    for (int j = 0; j < n; j++)
        for (int h = 0; h < nh; h++)
            for (int r = h * rh; r < (h + 1) * rh; r++)
                sc[(size_t)r * ATTN_CHUNK + j] =
                    dot(q + (size_t)r * hd, kbase + off[j] + (size_t)h * hd, hd);
}

static float max_c(const float *x, int n) {
    float m = x[0];
    for (int j = 1; j < n; j++) m = x[j] > m ? x[j] : m;
    return m;
}

static float exp_sum_c(float *x, int n, float m) {
    float s = 0.0f;
    for (int j = 0; j < n; j++) s += (x[j] = expf(x[j] - m));
    return s;
}

static void pv_c(const float *p, int rh, int nh, int hd, const float *vbase, const size_t *off,
                 int n, float *o) {
    for (int j = 0; j < n; j++)
        for (int h = 0; h < nh; h++) {
            const float *v = vbase + off[j] + (size_t)h * hd;
            for (int r = h * rh; r < (h + 1) * rh; r++) {
                float w = p[(size_t)r * ATTN_CHUNK + j], *orow = o + (size_t)r * hd;
                for (int d = 0; d < hd; d++) orow[d] += w * v[d];
            }
        }
}

static const struct attn_kernels kernels_c = {"portable C", qk_c, max_c, exp_sum_c, pv_c};

#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma")))

static inline AVX2 float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Scores of NR q rows against NK K rows: NR x NK accumulators, so each K load serves NR rows
 * and each q load NK rows. With NK = 4 one hadd tree sums a row's four accumulators at once.
 * NR and NK are constants after inlining and the loops unrolled, so acc[][] lives in
 * registers. */
static inline AVX2 __attribute__((always_inline)) void qk_block_avx2(const float *q, int hd,
                                                                     const float *const *k,
                                                                     float *sc, const int NR,
                                                                     const int NK) {
    __m256 acc[2][4];
#pragma GCC unroll 2
    for (int i = 0; i < NR; i++)
#pragma GCC unroll 4
        for (int c = 0; c < NK; c++) acc[i][c] = _mm256_setzero_ps();
    for (int d = 0; d < hd; d += 8) {
        __m256 kv[4];
#pragma GCC unroll 4
        for (int c = 0; c < NK; c++) kv[c] = _mm256_loadu_ps(k[c] + d);
#pragma GCC unroll 2
        for (int i = 0; i < NR; i++) {
            __m256 qv = _mm256_loadu_ps(q + (size_t)i * hd + d);
#pragma GCC unroll 4
            for (int c = 0; c < NK; c++) acc[i][c] = _mm256_fmadd_ps(qv, kv[c], acc[i][c]);
        }
    }
#pragma GCC unroll 2
    for (int i = 0; i < NR; i++) {
        float *out = sc + (size_t)i * ATTN_CHUNK;
        if (NK == 4) {
            __m256 u = _mm256_hadd_ps(_mm256_hadd_ps(acc[i][0], acc[i][1]),
                                      _mm256_hadd_ps(acc[i][2], acc[i][3]));
            _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1)));
        } else {
#pragma GCC unroll 4
            for (int c = 0; c < NK; c++) out[c] = hsum8(acc[i][c]);
        }
    }
}

/* Rows of a head against NK K rows, two q rows at a time. */
static inline AVX2 __attribute__((always_inline)) void
qk_head_avx2(const float *q, int rh, int hd, const float *const *k, float *sc, const int NK) {
    int r = 0;
    for (; r + 2 <= rh; r += 2)
        qk_block_avx2(q + (size_t)r * hd, hd, k, sc + (size_t)r * ATTN_CHUNK, 2, NK);
    if (r < rh) qk_block_avx2(q + (size_t)r * hd, hd, k, sc + (size_t)r * ATTN_CHUNK, 1, NK);
}

/* Each position's K and V of the task's heads is one contiguous run of nh x hd floats; K runs
 * are prefetched ATTN_PREFETCH positions ahead, V runs as their K is read, so pv finds the
 * chunk's V in cache. Without it a core waits on memory about one run at a time (a cache slot
 * of 8 KV heads x 128 is a 4 KiB page, where the hardware prefetchers stop). */
#define ATTN_PREFETCH 4

static inline AVX2 void prefetch_run(const float *x, int n) {
    for (int i = 0; i < n; i += 16) _mm_prefetch((const char *)(x + i), _MM_HINT_T0);
}

static AVX2 void qk_avx2(const float *q, int rh, int nh, int hd, const float *kbase,
                         const size_t *off, int n, float *sc, const float *vbase) {
    int run = nh * hd;
    for (int j = 0; j < ATTN_PREFETCH && j < n; j++) prefetch_run(kbase + off[j], run);
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        for (int i = j; i < j + 4; i++) {
            if (i + ATTN_PREFETCH < n) prefetch_run(kbase + off[i + ATTN_PREFETCH], run);
            prefetch_run(vbase + off[i], run);
        }
        for (int h = 0; h < nh; h++) {
            const float *k[4] = {
                kbase + off[j] + (size_t)h * hd, kbase + off[j + 1] + (size_t)h * hd,
                kbase + off[j + 2] + (size_t)h * hd, kbase + off[j + 3] + (size_t)h * hd};
            size_t r0 = (size_t)h * rh;
            qk_head_avx2(q + r0 * hd, rh, hd, k, sc + r0 * ATTN_CHUNK + j, 4);
        }
    }
    for (; j < n; j++) {
        prefetch_run(vbase + off[j], run);
        for (int h = 0; h < nh; h++) {
            const float *k[1] = {kbase + off[j] + (size_t)h * hd};
            size_t r0 = (size_t)h * rh;
            qk_head_avx2(q + r0 * hd, rh, hd, k, sc + r0 * ATTN_CHUNK + j, 1);
        }
    }
}

static AVX2 float max_avx2(const float *x, int n) {
    int j = 0;
    float m = x[0];
    if (n >= 8) {
        __m256 v = _mm256_loadu_ps(x);
        for (j = 8; j + 8 <= n; j += 8) v = _mm256_max_ps(v, _mm256_loadu_ps(x + j));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        m = _mm_cvtss_f32(h);
    }
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    return m;
}

/* exp(x) for x <= 0 (Cephes' expf): x = k ln2 + r with |r| <= ln2 / 2, exp(r) by a degree-6
 * polynomial (about 1 ulp), 2^k through the exponent bits. Below -87.33 the result would be
 * subnormal, so x is clamped there (e^-87.33 = 1.2e-38, nothing next to the row's maximum,
 * which contributes 1). max(c, x) keeps a NaN x. */
static inline AVX2 __m256 exp_avx2(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-87.33654f), x);
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static AVX2 float exp_sum_avx2(float *x, int n, float m) {
    __m256 mv = _mm256_set1_ps(m), s = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + j), mv));
        _mm256_storeu_ps(x + j, e);
        s = _mm256_add_ps(s, e);
    }
    if (j < n) { /* the tail through a lane mask, so every element sees the same exp */
        __m256i mask =
            _mm256_cmpgt_epi32(_mm256_set1_epi32(n - j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256 e = exp_avx2(_mm256_sub_ps(_mm256_maskload_ps(x + j, mask), mv));
        e = _mm256_and_ps(e, _mm256_castsi256_ps(mask));
        _mm256_maskstore_ps(x + j, mask, e);
        s = _mm256_add_ps(s, e);
    }
    return hsum8(s);
}

/* o[NR rows] += p v over the chunk, 16 columns at a time: NR x 2 accumulators stay in
 * registers for the whole chunk, each V load serves NR rows. */
static inline AVX2 __attribute__((always_inline)) void pv_block_avx2(const float *p, int hd,
                                                                     const float *vbase,
                                                                     const size_t *off, int n,
                                                                     float *o, const int NR) {
    for (int d = 0; d < hd; d += 16) {
        __m256 acc[6][2];
#pragma GCC unroll 6
        for (int i = 0; i < NR; i++) {
            acc[i][0] = _mm256_loadu_ps(o + (size_t)i * hd + d);
            acc[i][1] = _mm256_loadu_ps(o + (size_t)i * hd + d + 8);
        }
        for (int j = 0; j < n; j++) {
            const float *v = vbase + off[j] + d;
            __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8);
#pragma GCC unroll 6
            for (int i = 0; i < NR; i++) {
                __m256 w = _mm256_broadcast_ss(p + (size_t)i * ATTN_CHUNK + j);
                acc[i][0] = _mm256_fmadd_ps(w, v0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(w, v1, acc[i][1]);
            }
        }
#pragma GCC unroll 6
        for (int i = 0; i < NR; i++) {
            _mm256_storeu_ps(o + (size_t)i * hd + d, acc[i][0]);
            _mm256_storeu_ps(o + (size_t)i * hd + d + 8, acc[i][1]);
        }
    }
}

/* One head's rh rows, six at a time (12 accumulators, 2 V rows, 1 broadcast: 15 registers). */
static AVX2 void pv_head_avx2(const float *p, int rh, int hd, const float *vbase, const size_t *off,
                              int n, float *o) {
    int r = 0;
    for (; r + 6 <= rh; r += 6)
        pv_block_avx2(p + (size_t)r * ATTN_CHUNK, hd, vbase, off, n, o + (size_t)r * hd, 6);
    const float *pr = p + (size_t)r * ATTN_CHUNK;
    float *orow = o + (size_t)r * hd;
    switch (rh - r) {
    case 1:
        pv_block_avx2(pr, hd, vbase, off, n, orow, 1);
        break;
    case 2:
        pv_block_avx2(pr, hd, vbase, off, n, orow, 2);
        break;
    case 3:
        pv_block_avx2(pr, hd, vbase, off, n, orow, 3);
        break;
    case 4:
        pv_block_avx2(pr, hd, vbase, off, n, orow, 4);
        break;
    case 5:
        pv_block_avx2(pr, hd, vbase, off, n, orow, 5);
        break;
    default:
        break;
    }
}

/* V in groups of ATTN_PV_GROUP positions (a KV block at block size 16), the next group
 * prefetched: a pass over a group's rows for one head and 16 columns touches ATTN_PV_GROUP
 * pages, not a whole chunk's, and a group's runs are contiguous in memory. Walking the whole
 * chunk per 16 columns instead left V loads waiting on memory (2x slower decode). */
#define ATTN_PV_GROUP 16

static AVX2 void pv_avx2(const float *p, int rh, int nh, int hd, const float *vbase,
                         const size_t *off, int n, float *o) {
    int run = nh * hd;
    for (int jg = 0; jg < n; jg += ATTN_PV_GROUP) {
        int ng = n - jg < ATTN_PV_GROUP ? n - jg : ATTN_PV_GROUP;
        for (int j = jg + ATTN_PV_GROUP; j < jg + 2 * ATTN_PV_GROUP && j < n; j++)
            prefetch_run(vbase + off[j], run);
        for (int h = 0; h < nh; h++) {
            size_t r0 = (size_t)h * rh;
            pv_head_avx2(p + r0 * ATTN_CHUNK + jg, rh, hd, vbase + (size_t)h * hd, off + jg, ng,
                         o + r0 * hd);
        }
    }
}

static const struct attn_kernels kernels_avx2 = {"avx2+fma", qk_avx2, max_avx2, exp_sum_avx2,
                                                 pv_avx2};

static bool have_avx2(void) {
    static int cached = -1;
    if (cached < 0) cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return cached;
}
#endif

static bool force_portable;

void cpu_attention_force_portable(bool on) {
    force_portable = on;
}

static const struct attn_kernels *kernels_for(int head_dim) {
#if defined(__x86_64__)
    if (!force_portable && head_dim % 16 == 0 && have_avx2()) return &kernels_avx2;
#else
    (void)head_dim;
#endif
    return &kernels_c;
}

const char *cpu_attention_kernel_name(int head_dim) {
    return kernels_for(head_dim)->name;
}

struct attn_args {
    const struct attn_shape *s;
    const struct fwd_batch *b;
    const int32_t *tok_seq;
    const float *q, *k_cache, *v_cache;
    float *out;
    float *scratch; /* (threads, thread_floats) */
    float *part;    /* (n_split, n_tokens, n_heads, hd + 2) when n_split > 1 */
    size_t thread_floats;
    int qb, n_split;
    const struct attn_kernels *kern;
};

/* Tiles are runs of consecutive positions of one sequence, cut where the position is a
 * multiple of qb: whether t starts one needs only t and t - 1, so any task finds its tile. */
static bool tile_start(const struct attn_args *a, int64_t t) {
    const int32_t *pos = a->b->positions;
    return t == 0 || a->tok_seq[t] != a->tok_seq[t - 1] || pos[t] != pos[t - 1] + 1 ||
           pos[t] % a->qb == 0;
}

static int tile_len(const struct attn_args *a, int64_t t) {
    int nq = 1;
    while (t + nq < a->b->n_tokens && !tile_start(a, t + nq)) nq++;
    return nq;
}

/* Task row r (head-major: head kh0 + r / (nq g), token r % (nq g) / g, group head r % g) ->
 * row of q and out (token, head). */
static size_t row_of(const struct attn_shape *s, int64_t t0, int nq, int kh0, int r) {
    int g = group_of(s), rh = nq * g, h = r / rh, i = r % rh;
    return (size_t)(t0 + i / g) * (size_t)s->n_heads + (size_t)(kh0 + h) * g + (size_t)(i % g);
}

/* Tokens t0..t0+nq-1 of one sequence, KV heads kh0..kh0+nh-1, context chunks c0..c1-1. */
static void run_task(const struct attn_args *a, int64_t t0, int nq, int kh0, int nh, int split,
                     int c0, int c1, int tid) {
    const struct attn_shape *s = a->s;
    const struct attn_kernels *kn = a->kern;
    int hd = s->head_dim, g = group_of(s), bs = s->block_size, rh = nq * g, R = rh * nh;
    size_t kvd = (size_t)s->n_kv_heads * hd;
    const int32_t *pos = a->b->positions + t0;
    const int32_t *table = a->b->seqs[a->tok_seq[t0]].block_table;
    int ctx_end = pos[nq - 1] + 1;
    struct tile_buf tb = tile_buf_of(s, a->scratch + (size_t)tid * a->thread_floats);
    float scale = 1.0f / sqrtf((float)hd);
    for (int r = 0; r < R; r++) {
        const float *src = a->q + row_of(s, t0, nq, kh0, r) * hd;
        for (int d = 0; d < hd; d++) tb.q[(size_t)r * hd + d] = src[d] * scale;
        memset(tb.o + (size_t)r * hd, 0, (size_t)hd * sizeof(float));
        tb.m[r] = -INFINITY, tb.l[r] = 0.0f;
    }
    size_t off[ATTN_CHUNK];
    for (int c = c0; c < c1; c++) {
        int j0 = c * ATTN_CHUNK, n = ctx_end - j0 < ATTN_CHUNK ? ctx_end - j0 : ATTN_CHUNK;
        for (int j = 0; j < n; j++) {
            int p = j0 + j;
            off[j] = ((size_t)table[p / bs] * bs + (size_t)(p % bs)) * kvd + (size_t)kh0 * hd;
        }
        kn->qk(tb.q, rh, nh, hd, a->k_cache, off, n, tb.p, a->v_cache);
        for (int r = 0; r < R; r++) {
            float *p = tb.p + (size_t)r * ATTN_CHUNK;
            int lim = pos[r % rh / g] + 1 - j0; /* causal: positions up to the token's own */
            if (lim > n) lim = n;
            if (lim <= 0) {
                memset(p, 0, (size_t)n * sizeof *p);
                continue;
            }
            float mx = kn->max(p, lim), mn = mx > tb.m[r] ? mx : tb.m[r];
            float alpha = expf(tb.m[r] - mn); /* 0 on the first chunk (m = -inf) */
            float sum = kn->exp_sum(p, lim, mn);
            if (lim < n) memset(p + lim, 0, (size_t)(n - lim) * sizeof *p);
            tb.l[r] = tb.l[r] * alpha + sum;
            tb.m[r] = mn;
            if (alpha != 1.0f)
                for (int d = 0; d < hd; d++) tb.o[(size_t)r * hd + d] *= alpha;
        }
        kn->pv(tb.p, rh, nh, hd, a->v_cache, off, n, tb.o);
    }
    size_t rows = (size_t)a->b->n_tokens * (size_t)s->n_heads;
    for (int r = 0; r < R; r++) {
        const float *src = tb.o + (size_t)r * hd;
        size_t row = row_of(s, t0, nq, kh0, r);
        if (a->n_split == 1) {
            float *dst = a->out + row * hd, inv = 1.0f / tb.l[r];
            for (int d = 0; d < hd; d++) dst[d] = src[d] * inv;
        } else {
            float *dst = a->part + ((size_t)split * rows + row) * (hd + 2);
            memcpy(dst, src, (size_t)hd * sizeof *dst);
            dst[hd] = tb.m[r], dst[hd + 1] = tb.l[r];
        }
    }
}

/* Items are (token, split, KV head), token-major; an item runs a task if its token starts a
 * tile and its KV head starts one of the tile's head groups. Splits outside KV heads spread a
 * long sequence's tasks over the pool's chunks. */
static void attn_task(void *arg, int64_t i0, int64_t i1, int tid) {
    const struct attn_args *a = arg;
    int64_t per_token = (int64_t)a->s->n_kv_heads * a->n_split;
    for (int64_t i = i0; i < i1; i++) {
        int64_t t = i / per_token;
        if (!tile_start(a, t)) continue;
        int rem = (int)(i % per_token), split = rem / a->s->n_kv_heads, kh = rem % a->s->n_kv_heads;
        int nq = tile_len(a, t), nh = task_heads(a->s, nq);
        if (kh % nh) continue;
        int nc = a->b->positions[t + nq - 1] / ATTN_CHUNK + 1;
        int c0 = (int)((int64_t)split * nc / a->n_split);
        int c1 = (int)((int64_t)(split + 1) * nc / a->n_split);
        run_task(a, t, nq, kh, nh, split, c0, c1, tid);
    }
}

/* out row = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s, M = max_s m_s, in split order. */
static void combine_task(void *arg, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    const struct attn_args *a = arg;
    int hd = a->s->head_dim;
    size_t rows = (size_t)a->b->n_tokens * (size_t)a->s->n_heads, stride = (size_t)hd + 2;
    for (int64_t r = r0; r < r1; r++) {
        float mx = -INFINITY, l = 0.0f, *dst = a->out + (size_t)r * hd;
        for (int s = 0; s < a->n_split; s++) {
            const float *p = a->part + ((size_t)s * rows + (size_t)r) * stride;
            if (p[hd + 1] > 0.0f && p[hd] > mx) mx = p[hd];
        }
        memset(dst, 0, (size_t)hd * sizeof *dst);
        for (int s = 0; s < a->n_split; s++) {
            const float *p = a->part + ((size_t)s * rows + (size_t)r) * stride;
            if (!(p[hd + 1] > 0.0f)) continue; /* no visible position in this split */
            float w = expf(p[hd] - mx);
            l += p[hd + 1] * w;
            for (int d = 0; d < hd; d++) dst[d] += w * p[d];
        }
        float inv = 1.0f / l;
        for (int d = 0; d < hd; d++) dst[d] *= inv;
    }
}

void cpu_attention(struct pool *pool, const struct attn_shape *s, const struct fwd_batch *b,
                   const int32_t *tok_seq, const float *q, const float *k_cache,
                   const float *v_cache, float *out, float *scratch) {
    if (b->n_tokens <= 0) return;
    int nt = pool_size(pool);
    struct attn_args a = {.s = s,
                          .b = b,
                          .tok_seq = tok_seq,
                          .q = q,
                          .k_cache = k_cache,
                          .v_cache = v_cache,
                          .out = out,
                          .scratch = scratch,
                          .part = scratch + (size_t)nt * thread_floats(s),
                          .thread_floats = thread_floats(s),
                          .qb = tile_tokens(s),
                          .n_split = 1,
                          .kern = kernels_for(s->head_dim)};
    if (nt > 1) { /* too few tasks for the threads: split contexts (fixed by batch and nt) */
        int64_t tasks = 0;
        int max_pos = 0;
        for (int64_t t = 0; t < b->n_tokens; t++) {
            if (tile_start(&a, t)) tasks += s->n_kv_heads / task_heads(s, tile_len(&a, t));
            if (b->positions[t] > max_pos) max_pos = b->positions[t];
        }
        int64_t target = (int64_t)ATTN_TASKS * nt, max_chunks = max_pos / ATTN_CHUNK + 1;
        if (tasks < target) {
            int64_t ns = (target + tasks - 1) / tasks;
            ns = ns < max_chunks ? ns : max_chunks;
            size_t need =
                (size_t)ns * (size_t)b->n_tokens * (size_t)s->n_heads * ((size_t)s->head_dim + 2);
            if (need <= partial_floats(s, nt)) a.n_split = (int)ns;
        }
    }
    pool_parallel_for(pool, (int64_t)b->n_tokens * s->n_kv_heads * a.n_split, 1, attn_task, &a);
    if (a.n_split > 1)
        pool_parallel_for(pool, (int64_t)b->n_tokens * s->n_heads, 16, combine_task, &a);
}
