/* sampler: one sequence's logits -> next token id with vLLM's semantics and order (penalties,
 * then greedy or temperature -> min-p -> top-k -> top-p -> draw). kernels/kern_sample.cu is the
 * same function on the GPU: keep the two in step (weights come from sampler_exp.h, and every
 * float operation here is one IEEE operation, never fused, which CMake enforces with
 * -ffp-contract=off). A struct sampler owns vocab-sized scratch so a call allocates nothing; one
 * per thread. No filter sorts the vocabulary: a histogram of the weights finds the one bucket
 * where top-k or top-p cuts, and only that bucket goes through a selection, so a call is a few
 * linear passes, each with an AVX2 twin that computes the same bits (docs/perf-notes.md). */
#include "sampler.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler_exp.h"

/* vLLM's _SAMPLING_EPS: a temperature below it means greedy. */
#define SAMPLER_TEMP_EPS 1e-5f

static const float exp_tab[32] = SAMPLER_EXP_TABLE;

/* Ranges this small are finished by insertion sort rather than partitioned. */
#define SAMPLER_SMALL 16

/* Histogram of weights in (0, 1], binned by their float bits: 2^19 ulps = 1/16 octave a bucket,
 * so 2033 buckets reach the smallest denormal. */
#define SAMPLER_HIST_SHIFT 19
#define SAMPLER_HIST_N     2048

/* A token still in the running: its unnormalised probability exp(logit - max logit). */
struct cand {
    float w;
    int32_t id;
};

struct sampler {
    int vocab;
    uint32_t *counts; /* owned (vocab): count in output; all zero between calls */
    uint8_t *seen;    /* owned (vocab): 1 if in prompt or output; all zero between calls */
    int32_t *touched; /* owned (vocab): distinct ids marked this call, reset afterwards */
    /* the tokens surviving the filters so far, in id order, as two arrays (weights apart, so
     * the passes over them are vector loads) */
    float *cw;        /* owned (vocab): weights */
    int32_t *cid;     /* owned (vocab): ids */
    struct cand *tmp; /* owned (vocab): the histogram bucket where a filter cuts */
    /* top-p: weight per bucket, this call, in two halves (even and odd candidates) so that
     * neighbours in one bucket do not wait on each other's add. A bucket's weights lie in one
     * binade (or are its upper power of two), so they are multiples of its ulp and at most 2^24
     * of them each: fewer than 2^29 sum exactly in double, in any order. */
    double hist_mass[2][SAMPLER_HIST_N];
    int32_t hist_count[4][SAMPLER_HIST_N]; /* top-k: tokens per bucket in four quarters */
};

/* ---- parameters ---- */

void sampling_params_default(struct sampling_params *p) {
    *p = (struct sampling_params){
        .temperature = 1.0f,
        .top_k = 0,
        .top_p = 1.0f,
        .min_p = 0.0f,
        .repetition_penalty = 1.0f,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .seed = 0,
        .has_seed = false,
    };
}

/* Comparisons are written so that NaN fails them and is rejected. */
enum tl_status sampling_params_validate(const struct sampling_params *p, struct tl_err *err) {
    if (!p) return tl_fail(err, TL_ERR_INVALID, "sampling parameters are missing");
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return tl_fail(err, TL_ERR_INVALID, "temperature must be finite and >= 0, got %g",
                       (double)p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return tl_fail(err, TL_ERR_INVALID, "top_p must be in (0, 1], got %g", (double)p->top_p);
    if (p->top_k < -1)
        return tl_fail(err, TL_ERR_INVALID, "top_k must be -1 or 0 (off) or >= 1, got %d",
                       p->top_k);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return tl_fail(err, TL_ERR_INVALID, "min_p must be in [0, 1], got %g", (double)p->min_p);
    if (!(p->repetition_penalty > 0.0f) || !isfinite(p->repetition_penalty))
        return tl_fail(err, TL_ERR_INVALID, "repetition_penalty must be finite and > 0, got %g",
                       (double)p->repetition_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return tl_fail(err, TL_ERR_INVALID, "presence_penalty must be in [-2, 2], got %g",
                       (double)p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return tl_fail(err, TL_ERR_INVALID, "frequency_penalty must be in [-2, 2], got %g",
                       (double)p->frequency_penalty);
    return TL_OK;
}

/* ---- generator: xoshiro256** seeded through splitmix64 (Vigna's reference recipe) ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void sampler_rng_seed(struct sampler_rng *rng, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&x);
}

static inline uint64_t rotl64(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct sampler_rng *rng) {
    uint64_t *s = rng->s;
    const uint64_t out = rotl64(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return out;
}

double sampler_rng_uniform(struct sampler_rng *rng) {
    return (double)(rng_next(rng) >> 11) * 0x1.0p-53;
}

bool sampler_is_greedy(const struct sampling_params *p) {
    return p->temperature < SAMPLER_TEMP_EPS;
}

/* ---- lifetime ---- */

enum tl_status sampler_create(int vocab_size, struct sampler **out, struct tl_err *err) {
    *out = NULL;
    if (vocab_size <= 0)
        return tl_fail(err, TL_ERR_INVALID, "sampler: vocab_size must be > 0, got %d", vocab_size);
    struct sampler *s = calloc(1, sizeof *s);
    if (!s) return tl_fail(err, TL_ERR_NOMEM, "sampler: out of host memory");
    size_t n = (size_t)vocab_size;
    s->vocab = vocab_size;
    /* counts and seen must start zeroed: each call resets only what it touched. */
    s->counts = calloc(n, sizeof *s->counts);
    s->seen = calloc(n, sizeof *s->seen);
    s->touched = malloc(n * sizeof *s->touched);
    s->cw = malloc(n * sizeof *s->cw);
    s->cid = malloc(n * sizeof *s->cid);
    s->tmp = malloc(n * sizeof *s->tmp);
    if (!s->counts || !s->seen || !s->touched || !s->cw || !s->cid || !s->tmp) {
        sampler_destroy(s);
        return tl_fail(
            err, TL_ERR_NOMEM, "sampler: out of host memory for %d-token scratch (%zu bytes)",
            vocab_size,
            n * (sizeof(uint32_t) + 1 + 2 * sizeof(int32_t) + sizeof(float) + sizeof(struct cand)));
    }
    *out = s;
    return TL_OK;
}

void sampler_destroy(struct sampler *s) {
    if (!s) return;
    free(s->counts);
    free(s->seen);
    free(s->touched);
    free(s->cw);
    free(s->cid);
    free(s->tmp);
    free(s);
}

/* ---- penalties ---- */

static inline int mark(struct sampler *s, int32_t t, int n_touched) {
    if (!s->seen[t]) {
        s->seen[t] = 1;
        s->touched[n_touched++] = t;
    }
    return n_touched;
}

/* vLLM's apply_penalties: repetition on prompt-or-output tokens, then frequency and presence on
 * output tokens. Work is O(n_prompt + n_output): only distinct touched ids are visited, and
 * only they are reset, so a 152k vocabulary costs no memset per token. */
static void apply_penalties(struct sampler *s, const struct sampling_params *p, float *logits,
                            const int32_t *prompt, int n_prompt, const int32_t *output,
                            int n_output) {
    const float rep = p->repetition_penalty, freq = p->frequency_penalty,
                pres = p->presence_penalty;
    const bool do_rep = rep != 1.0f;
    if (!do_rep && freq == 0.0f && pres == 0.0f) return;
    const int32_t vocab = s->vocab;
    int n_touched = 0;
    if (do_rep) /* prompt tokens matter only to the repetition penalty */
        for (int i = 0; i < n_prompt; i++)
            if (prompt[i] >= 0 && prompt[i] < vocab) n_touched = mark(s, prompt[i], n_touched);
    for (int i = 0; i < n_output; i++) {
        int32_t t = output[i];
        if (t < 0 || t >= vocab) continue; /* defensive: never index outside the vocabulary */
        s->counts[t]++;
        n_touched = mark(s, t, n_touched);
    }
    for (int i = 0; i < n_touched; i++) {
        int32_t t = s->touched[i];
        float x = logits[t];
        if (do_rep) x = x > 0.0f ? x / rep : x * rep;
        uint32_t c = s->counts[t];
        if (c) { /* two separate steps, as vLLM subtracts them */
            if (freq != 0.0f) x -= freq * (float)c;
            if (pres != 0.0f) x -= pres;
        }
        logits[t] = x;
        s->counts[t] = 0;
        s->seen[t] = 0;
    }
}

/* ---- linear passes over the vocabulary ----
 * Each pass has a portable loop and an AVX2 one chosen at run time (the build targets plain
 * x86-64). The AVX2 loops do the same IEEE operations on each element and keep every
 * order-dependent sum in its order, so both give bit-identical results: they differ only in
 * doing eight elements at a time. No FMA is enabled for them, so nothing can be fused. */

#if (defined(__x86_64__) || defined(__i386__)) && !defined(SAMPLER_PORTABLE)
#define SAMPLER_X86 1
#include <immintrin.h>
#define AVX2_FN __attribute__((target("avx2,popcnt")))
static bool use_avx2(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
}

/* Left-packing eight lanes by a keep mask: entry m lists the kept lanes of m in order, one
 * 4-bit lane index each from the low bits up. */
static const uint32_t pack_lut[256] = {
    0x00000000u, 0x00000000u, 0x00000001u, 0x00000010u, 0x00000002u, 0x00000020u, 0x00000021u,
    0x00000210u, 0x00000003u, 0x00000030u, 0x00000031u, 0x00000310u, 0x00000032u, 0x00000320u,
    0x00000321u, 0x00003210u, 0x00000004u, 0x00000040u, 0x00000041u, 0x00000410u, 0x00000042u,
    0x00000420u, 0x00000421u, 0x00004210u, 0x00000043u, 0x00000430u, 0x00000431u, 0x00004310u,
    0x00000432u, 0x00004320u, 0x00004321u, 0x00043210u, 0x00000005u, 0x00000050u, 0x00000051u,
    0x00000510u, 0x00000052u, 0x00000520u, 0x00000521u, 0x00005210u, 0x00000053u, 0x00000530u,
    0x00000531u, 0x00005310u, 0x00000532u, 0x00005320u, 0x00005321u, 0x00053210u, 0x00000054u,
    0x00000540u, 0x00000541u, 0x00005410u, 0x00000542u, 0x00005420u, 0x00005421u, 0x00054210u,
    0x00000543u, 0x00005430u, 0x00005431u, 0x00054310u, 0x00005432u, 0x00054320u, 0x00054321u,
    0x00543210u, 0x00000006u, 0x00000060u, 0x00000061u, 0x00000610u, 0x00000062u, 0x00000620u,
    0x00000621u, 0x00006210u, 0x00000063u, 0x00000630u, 0x00000631u, 0x00006310u, 0x00000632u,
    0x00006320u, 0x00006321u, 0x00063210u, 0x00000064u, 0x00000640u, 0x00000641u, 0x00006410u,
    0x00000642u, 0x00006420u, 0x00006421u, 0x00064210u, 0x00000643u, 0x00006430u, 0x00006431u,
    0x00064310u, 0x00006432u, 0x00064320u, 0x00064321u, 0x00643210u, 0x00000065u, 0x00000650u,
    0x00000651u, 0x00006510u, 0x00000652u, 0x00006520u, 0x00006521u, 0x00065210u, 0x00000653u,
    0x00006530u, 0x00006531u, 0x00065310u, 0x00006532u, 0x00065320u, 0x00065321u, 0x00653210u,
    0x00000654u, 0x00006540u, 0x00006541u, 0x00065410u, 0x00006542u, 0x00065420u, 0x00065421u,
    0x00654210u, 0x00006543u, 0x00065430u, 0x00065431u, 0x00654310u, 0x00065432u, 0x00654320u,
    0x00654321u, 0x06543210u, 0x00000007u, 0x00000070u, 0x00000071u, 0x00000710u, 0x00000072u,
    0x00000720u, 0x00000721u, 0x00007210u, 0x00000073u, 0x00000730u, 0x00000731u, 0x00007310u,
    0x00000732u, 0x00007320u, 0x00007321u, 0x00073210u, 0x00000074u, 0x00000740u, 0x00000741u,
    0x00007410u, 0x00000742u, 0x00007420u, 0x00007421u, 0x00074210u, 0x00000743u, 0x00007430u,
    0x00007431u, 0x00074310u, 0x00007432u, 0x00074320u, 0x00074321u, 0x00743210u, 0x00000075u,
    0x00000750u, 0x00000751u, 0x00007510u, 0x00000752u, 0x00007520u, 0x00007521u, 0x00075210u,
    0x00000753u, 0x00007530u, 0x00007531u, 0x00075310u, 0x00007532u, 0x00075320u, 0x00075321u,
    0x00753210u, 0x00000754u, 0x00007540u, 0x00007541u, 0x00075410u, 0x00007542u, 0x00075420u,
    0x00075421u, 0x00754210u, 0x00007543u, 0x00075430u, 0x00075431u, 0x00754310u, 0x00075432u,
    0x00754320u, 0x00754321u, 0x07543210u, 0x00000076u, 0x00000760u, 0x00000761u, 0x00007610u,
    0x00000762u, 0x00007620u, 0x00007621u, 0x00076210u, 0x00000763u, 0x00007630u, 0x00007631u,
    0x00076310u, 0x00007632u, 0x00076320u, 0x00076321u, 0x00763210u, 0x00000764u, 0x00007640u,
    0x00007641u, 0x00076410u, 0x00007642u, 0x00076420u, 0x00076421u, 0x00764210u, 0x00007643u,
    0x00076430u, 0x00076431u, 0x00764310u, 0x00076432u, 0x00764320u, 0x00764321u, 0x07643210u,
    0x00000765u, 0x00007650u, 0x00007651u, 0x00076510u, 0x00007652u, 0x00076520u, 0x00076521u,
    0x00765210u, 0x00007653u, 0x00076530u, 0x00076531u, 0x00765310u, 0x00076532u, 0x00765320u,
    0x00765321u, 0x07653210u, 0x00007654u, 0x00076540u, 0x00076541u, 0x00765410u, 0x00076542u,
    0x00765420u, 0x00765421u, 0x07654210u, 0x00076543u, 0x00765430u, 0x00765431u, 0x07654310u,
    0x00765432u, 0x07654320u, 0x07654321u, 0x76543210u,
};

/* The permutation that moves the lanes kept in mask to the front, in order. */
AVX2_FN static inline __m256i pack8(int mask) {
    const __m256i nib = _mm256_srlv_epi32(_mm256_set1_epi32((int)pack_lut[mask]),
                                          _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
    return _mm256_and_si256(nib, _mm256_set1_epi32(7));
}
#endif

/* x[i] /= temp (a division, as vLLM's div_(temp); skipped at 1) and the max of x: NaN fails
 * every > and never wins; -inf when no element beats it. */
static float scale_max_c(float *x, int n, float temp) {
    if (temp != 1.0f)
        for (int i = 0; i < n; i++) x[i] /= temp;
    float m = -INFINITY;
    for (int i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* Lowest index among equal maxima; NaN never wins. All -inf: the first; all NaN: 0. */
static int32_t argmax_c(const float *x, int n) {
    int32_t best = -1;
    float bv = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > bv) {
            bv = x[i];
            best = i;
        }
    if (best >= 0) return best;
    for (int i = 0; i < n; i++)
        if (!isnan(x[i])) return i;
    return 0;
}

/* The candidates of x: weight w = sampler_weight_tab(x[i] - m) kept when w > 0 and w >= min_w
 * (min-p: prob >= min_p * max_prob is w >= min_p, since the max token has w = 1). Zero
 * weights (more than 86 below the max, -inf, NaN) can never be drawn, so they never become
 * candidates. Appends them to cw / cid in id order and returns how many. */
static int build_cands_c(const float *x, int i0, int n, float m, float min_w, float *cw,
                         int32_t *cid, int nc) {
    for (int i = i0; i < n; i++) {
        const float w = sampler_weight_tab(x[i] - m, exp_tab);
        cw[nc] = w; /* branch-free: min-p's outcome is unpredictable */
        cid[nc] = i;
        nc += (w > 0.0f) & (w >= min_w);
    }
    return nc;
}

/* The draw's total in four fixed lanes: w[i] goes to lane i % 4 for i < n & ~3, the rest of
 * the tail to lanes 0.. in turn; each lane sums in index order, in double. */
static void lane_sums_c(const float *w, int n, double lane[4]) {
    int i4 = n & ~3;
    for (int j = 0; j < 4; j++) lane[j] = 0.0;
    for (int i = 0; i < i4; i += 4)
        for (int j = 0; j < 4; j++) lane[j] += w[i + j];
    for (int i = i4; i < n; i++) lane[i - i4] += w[i];
}

#ifdef SAMPLER_X86
AVX2_FN static float scale_max_avx2(float *x, int n, float temp) {
    const __m256 t = _mm256_set1_ps(temp);
    const bool div = temp != 1.0f;
    /* four accumulators: a max is exact, so how elements are grouped cannot change it (its
     * sign at 0 can, which no weight depends on: x - (+0) == x - (-0) for every x but 0, whose
     * weight is 1 either way) */
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8),
               c = _mm256_loadu_ps(x + i + 16), d = _mm256_loadu_ps(x + i + 24);
        if (div) {
            a = _mm256_div_ps(a, t), b = _mm256_div_ps(b, t);
            c = _mm256_div_ps(c, t), d = _mm256_div_ps(d, t);
            _mm256_storeu_ps(x + i, a), _mm256_storeu_ps(x + i + 8, b);
            _mm256_storeu_ps(x + i + 16, c), _mm256_storeu_ps(x + i + 24, d);
        }
        /* maxps(a, m) is a > m ? a : m: a NaN in x never wins */
        m0 = _mm256_max_ps(a, m0), m1 = _mm256_max_ps(b, m1);
        m2 = _mm256_max_ps(c, m2), m3 = _mm256_max_ps(d, m3);
    }
    m0 = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
    float lanes[8];
    _mm256_storeu_ps(lanes, m0);
    float m = scale_max_c(x + i, n - i, temp);
    for (int j = 0; j < 8; j++) m = lanes[j] > m ? lanes[j] : m;
    return m;
}

/* First index holding the max (== compares, so -0 and +0 tie as in argmax_c). */
AVX2_FN static int32_t argmax_avx2(float *x, int n) {
    const float m = scale_max_avx2(x, n, 1.0f);
    const __m256 mv = _mm256_set1_ps(m);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), mv, _CMP_EQ_OQ));
        if (hit) return i + __builtin_ctz((unsigned)hit);
    }
    for (; i < n; i++)
        if (x[i] == m) return i;
    return 0; /* all NaN */
}

/* sampler_weight_tab on eight d at once: the same operations in the same order. */
AVX2_FN static inline __m256 weight8(__m256 d, const __m256 *tab) {
    const __m256 big = _mm256_set1_ps(0x1.8p23f);
    const __m256 shifted = _mm256_add_ps(_mm256_mul_ps(d, _mm256_set1_ps(0x1.715476p+5f)), big);
    const __m256i n = _mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x4b400000));
    const __m256 nf = _mm256_sub_ps(shifted, big);
    const __m256 r = _mm256_sub_ps(_mm256_sub_ps(d, _mm256_mul_ps(nf, _mm256_set1_ps(0x1.62ep-6f))),
                                   _mm256_mul_ps(nf, _mm256_set1_ps(0x1.0bfbe8p-20f)));
    __m256 p =
        _mm256_add_ps(_mm256_mul_ps(r, _mm256_set1_ps(0x1.555556p-3f)), _mm256_set1_ps(0.5f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f));
    /* tab[n & 31]: bits 0-2 pick within a register of eight, bit 3 and bit 4 (moved to the
     * sign bit for blendv) pick the register */
    const __m256i lo = _mm256_slli_epi32(n, 28), hi = _mm256_slli_epi32(n, 27);
    const __m256 t01 =
        _mm256_blendv_ps(_mm256_permutevar8x32_ps(tab[0], n), _mm256_permutevar8x32_ps(tab[1], n),
                         _mm256_castsi256_ps(lo));
    const __m256 t23 =
        _mm256_blendv_ps(_mm256_permutevar8x32_ps(tab[2], n), _mm256_permutevar8x32_ps(tab[3], n),
                         _mm256_castsi256_ps(lo));
    const __m256 t = _mm256_blendv_ps(t01, t23, _mm256_castsi256_ps(hi));
    const __m256 mant = _mm256_mul_ps(p, t);
    const __m256i e = _mm256_sub_epi32(
        _mm256_srai_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(4096)), 5), _mm256_set1_epi32(128));
    const __m256 w =
        _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(mant), _mm256_slli_epi32(e, 23)));
    /* d below -86, -inf or NaN: 0 (what the lanes computed for them is discarded) */
    return _mm256_and_ps(w, _mm256_cmp_ps(d, _mm256_set1_ps(SAMPLER_EXP_MIN_D), _CMP_GE_OQ));
}

AVX2_FN static int build_cands_avx2(const float *x, int n, float m, float min_w, float *cw,
                                    int32_t *cid) {
    __m256 tab[4];
    for (int j = 0; j < 4; j++) tab[j] = _mm256_loadu_ps(exp_tab + 8 * j);
    const __m256 mv = _mm256_set1_ps(m), zero = _mm256_setzero_ps(), mw = _mm256_set1_ps(min_w);
    __m256i id = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i eight = _mm256_set1_epi32(8);
    int nc = 0, i = 0;
    for (; i + 8 <= n; i += 8, id = _mm256_add_epi32(id, eight)) {
        const __m256 w = weight8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), tab);
        const int keep = _mm256_movemask_ps(
            _mm256_and_ps(_mm256_cmp_ps(w, zero, _CMP_GT_OQ), _mm256_cmp_ps(w, mw, _CMP_GE_OQ)));
        /* all kept (flat rows) and none kept (min-p, peaked rows) are the common cases; cw and
         * cid have room for eight past nc, since nc <= i (a partial store's tail is junk that
         * later stores overwrite) */
        if (keep == 0xff) {
            _mm256_storeu_ps(cw + nc, w);
            _mm256_storeu_si256((__m256i *)(cid + nc), id);
            nc += 8;
        } else if (keep) {
            const __m256i perm = pack8(keep);
            _mm256_storeu_ps(cw + nc, _mm256_permutevar8x32_ps(w, perm));
            _mm256_storeu_si256((__m256i *)(cid + nc), _mm256_permutevar8x32_epi32(id, perm));
            nc += _mm_popcnt_u32((unsigned)keep);
        }
    }
    return build_cands_c(x, i, n, m, min_w, cw, cid, nc);
}

/* One __m256d holds the four lanes: the same adds in the same order as lane_sums_c. */
AVX2_FN static void lane_sums_avx2(const float *w, int n, double lane[4]) {
    int i4 = n & ~3;
    __m256d acc = _mm256_setzero_pd();
    for (int i = 0; i < i4; i += 4) acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm_loadu_ps(w + i)));
    _mm256_storeu_pd(lane, acc);
    for (int i = i4; i < n; i++) lane[i - i4] += w[i];
}
#endif

static float scale_max(float *x, int n, float temp) {
#ifdef SAMPLER_X86
    if (use_avx2()) return scale_max_avx2(x, n, temp);
#endif
    return scale_max_c(x, n, temp);
}

static int32_t argmax(float *x, int n) {
#ifdef SAMPLER_X86
    if (use_avx2()) return argmax_avx2(x, n);
#endif
    return argmax_c(x, n);
}

static int build_cands(const float *x, int n, float m, float min_w, float *cw, int32_t *cid) {
#ifdef SAMPLER_X86
    if (use_avx2()) return build_cands_avx2(x, n, m, min_w, cw, cid);
#endif
    return build_cands_c(x, 0, n, m, min_w, cw, cid, 0);
}

static void lane_sums(const float *w, int n, double lane[4]) {
#ifdef SAMPLER_X86
    if (use_avx2()) {
        lane_sums_avx2(w, n, lane);
        return;
    }
#endif
    lane_sums_c(w, n, lane);
}

/* ---- filters over candidates ----
 * Candidates are ranked by a strict total order: larger weight first, lower id first among
 * equal weights. Every filter keeps a prefix of that order, so after each one the survivors are
 * exactly the candidates ranked at or before the last one kept: the filters find that boundary,
 * then one stable compaction keeps the candidate array in id order for the draw. */

/* Written with & and | rather than && and ||: on flat logits the outcome is a coin flip, and
 * in the linear passes a misprediction costs more than the whole compare. */
static inline int cand_before(struct cand a, struct cand b) {
    return (a.w > b.w) | ((a.w == b.w) & (a.id < b.id));
}

static inline void cand_swap(struct cand *c, int i, int j) {
    struct cand t = c[i];
    c[i] = c[j];
    c[j] = t;
}

static int cand_cmp_rank(const void *pa, const void *pb) {
    const struct cand *a = pa, *b = pb;
    return cand_before(*a, *b) ? -1 : cand_before(*b, *a) ? 1 : 0;
}

/* Sorts c[lo, hi) by rank: insertion sort when short, qsort otherwise. */
static void cand_sort_rank(struct cand *c, int lo, int hi) {
    if (hi - lo > SAMPLER_SMALL) {
        qsort(c + lo, (size_t)(hi - lo), sizeof *c, cand_cmp_rank);
        return;
    }
    for (int i = lo + 1; i < hi; i++) {
        struct cand x = c[i];
        int j = i;
        for (; j > lo && cand_before(x, c[j - 1]); j--) c[j] = c[j - 1];
        c[j] = x;
    }
}

/* Partitions c[lo, hi) (hi - lo >= 3) around a median-of-three pivot and returns its final
 * place p: c[lo, p) rank before it, c(p, hi) after. *mass gets the weight of c[lo, p). */
static int cand_partition(struct cand *c, int lo, int hi, double *mass) {
    int mid = lo + (hi - lo) / 2, last = hi - 1;
    if (cand_before(c[mid], c[lo])) cand_swap(c, mid, lo);
    if (cand_before(c[last], c[lo])) cand_swap(c, last, lo);
    if (cand_before(c[last], c[mid])) cand_swap(c, last, mid);
    cand_swap(c, mid, last);
    const struct cand pivot = c[last];
    double m = 0.0;
    int store = lo;
    for (int i = lo; i < last; i++)
        if (cand_before(c[i], pivot)) {
            m += c[i].w;
            cand_swap(c, i, store++);
        }
    cand_swap(c, store, last);
    *mass = m;
    return store;
}

/* Quickselect rounds allowed before falling back to a sort: guards O(n^2) on hostile input. */
static int select_budget(int n) {
    int b = 8;
    while (n > 1) {
        n >>= 1;
        b += 2;
    }
    return b;
}

/* Puts the candidate of rank kth (0-based) at c[kth]. */
static void cand_nth(struct cand *c, int n, int kth) {
    int lo = 0, hi = n, budget = select_budget(n);
    while (hi - lo > SAMPLER_SMALL && budget-- > 0) {
        double unused;
        int p = cand_partition(c, lo, hi, &unused);
        if (kth == p) return;
        if (kth < p)
            hi = p;
        else
            lo = p + 1;
    }
    cand_sort_rank(c, lo, hi);
}

/* Keeps the first-ranked of c[lo, hi) while the mass ranked before each is < target, given
 * that acc (< target) is the mass ranked before all of them; so the one that reaches target is
 * kept and, when lo is 0, at least one is. Weighted quickselect, O(n) expected: leaves the kept
 * ones in c[lo, kept) and returns kept. */
static int select_mass(struct cand *c, int lo, int hi, double acc, double target) {
    int budget = select_budget(hi - lo);
    while (hi - lo > SAMPLER_SMALL && budget-- > 0) {
        double mass;
        int p = cand_partition(c, lo, hi, &mass);
        if (acc + mass >= target) {
            hi = p; /* target is reached inside c[lo, p); the pivot is out */
        } else if (acc + mass + c[p].w >= target) {
            return p + 1; /* the pivot reaches it */
        } else {
            acc += mass + c[p].w;
            lo = p + 1;
        }
    }
    cand_sort_rank(c, lo, hi);
    for (int i = lo; i < hi; i++) {
        acc += c[i].w;
        if (acc >= target) return i + 1;
    }
    return hi; /* rounding never reached target: c[hi] (if any) was shown to be out */
}

/* Bucket of a weight in (0, 1]. A heavier weight never lands in a later bucket and equal
 * weights share one, so whole buckets are whole stretches of the rank order. */
static inline int weight_bucket(float w) {
    uint32_t bits;
    memcpy(&bits, &w, sizeof bits);
    return bits >= 0x3f800000u ? 0 : (int)((0x3f800000u - bits) >> SAMPLER_HIST_SHIFT);
}

/* Copies the candidates of one bucket to out in id order (select_mass's sums depend on the
 * order), returns how many. */
static int gather_bucket_c(const float *cw, const int32_t *cid, int i0, int n, int bucket,
                           struct cand *out, int k) {
    for (int i = i0; i < n; i++) {
        out[k] = (struct cand){cw[i], cid[i]}; /* branch-free */
        k += weight_bucket(cw[i]) == bucket;
    }
    return k;
}

/* Keeps, in place and in order, the candidates ranked at or before bound; returns how many. */
static int keep_through_c(float *cw, int32_t *cid, int i0, int n, struct cand bound, int k) {
    for (int i = i0; i < n; i++) {
        const struct cand x = {cw[i], cid[i]};
        cw[k] = x.w;
        cid[k] = x.id;
        k += !cand_before(bound, x);
    }
    return k;
}

/* Adds each candidate's bucket to the histograms (either may be NULL): count[b] += 1 in four
 * quarters, mass[b] += w in two halves (exact in any order, see struct sampler). */
static void bucket_hist_c(const float *cw, int i0, int n, int32_t (*count)[SAMPLER_HIST_N],
                          double (*mass)[SAMPLER_HIST_N]) {
    for (int i = i0; i < n; i++) {
        const int b = weight_bucket(cw[i]);
        if (count) count[i & 3][b]++;
        if (mass) mass[i & 1][b] += cw[i];
    }
}

#ifdef SAMPLER_X86
/* weight_bucket of eight weights in (0, 1] (and of 1 exactly and above: 0). */
AVX2_FN static inline __m256i bucket8(__m256 w) {
    const __m256i key = _mm256_sub_epi32(_mm256_set1_epi32(0x3f800000), _mm256_castps_si256(w));
    return _mm256_max_epi32(_mm256_srai_epi32(key, SAMPLER_HIST_SHIFT), _mm256_setzero_si256());
}

AVX2_FN static int gather_bucket_avx2(const float *cw, const int32_t *cid, int n, int bucket,
                                      struct cand *out) {
    const __m256i bv = _mm256_set1_epi32(bucket);
    int k = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 w = _mm256_loadu_ps(cw + i);
        int hit = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(bucket8(w), bv)));
        for (; hit; hit &= hit - 1) { /* one bucket holds few of the candidates */
            const int j = i + __builtin_ctz((unsigned)hit);
            out[k++] = (struct cand){cw[j], cid[j]};
        }
    }
    return gather_bucket_c(cw, cid, i, n, bucket, out, k);
}

/* keep x unless bound ranks before it: w >= bound.w, and at equal weight id <= bound.id */
AVX2_FN static int keep_through_avx2(float *cw, int32_t *cid, int n, struct cand bound) {
    const __m256 bw = _mm256_set1_ps(bound.w);
    const __m256i bid = _mm256_set1_epi32(bound.id);
    int k = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 w = _mm256_loadu_ps(cw + i);
        const __m256i id = _mm256_loadu_si256((const __m256i *)(cid + i));
        const __m256 later = _mm256_and_ps(_mm256_cmp_ps(w, bw, _CMP_EQ_OQ),
                                           _mm256_castsi256_ps(_mm256_cmpgt_epi32(id, bid)));
        const int keep =
            _mm256_movemask_ps(_mm256_andnot_ps(later, _mm256_cmp_ps(w, bw, _CMP_GE_OQ)));
        /* in place: the stores land at or below i, on elements already loaded */
        if (keep == 0xff) {
            _mm256_storeu_ps(cw + k, w);
            _mm256_storeu_si256((__m256i *)(cid + k), id);
            k += 8;
        } else if (keep) {
            const __m256i perm = pack8(keep);
            _mm256_storeu_ps(cw + k, _mm256_permutevar8x32_ps(w, perm));
            _mm256_storeu_si256((__m256i *)(cid + k), _mm256_permutevar8x32_epi32(id, perm));
            k += _mm_popcnt_u32((unsigned)keep);
        }
    }
    return keep_through_c(cw, cid, i, n, bound, k);
}

AVX2_FN static void bucket_hist_avx2(const float *cw, int n, int32_t (*count)[SAMPLER_HIST_N],
                                     double (*mass)[SAMPLER_HIST_N]) {
    int i = 0;
    int32_t b[8];
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_si256((__m256i *)b, bucket8(_mm256_loadu_ps(cw + i)));
        if (count)
            for (int j = 0; j < 8; j++) count[j & 3][b[j]]++;
        if (mass)
            for (int j = 0; j < 8; j++) mass[j & 1][b[j]] += cw[i + j];
    }
    bucket_hist_c(cw, i, n, count, mass);
}
#endif

static int gather_bucket(const float *cw, const int32_t *cid, int n, int bucket, struct cand *out) {
#ifdef SAMPLER_X86
    if (use_avx2()) return gather_bucket_avx2(cw, cid, n, bucket, out);
#endif
    return gather_bucket_c(cw, cid, 0, n, bucket, out, 0);
}

static int keep_through(float *cw, int32_t *cid, int n, struct cand bound) {
#ifdef SAMPLER_X86
    if (use_avx2()) return keep_through_avx2(cw, cid, n, bound);
#endif
    return keep_through_c(cw, cid, 0, n, bound, 0);
}

static void bucket_hist(const float *cw, int n, int32_t (*count)[SAMPLER_HIST_N],
                        double (*mass)[SAMPLER_HIST_N]) {
#ifdef SAMPLER_X86
    if (use_avx2()) {
        bucket_hist_avx2(cw, n, count, mass);
        return;
    }
#endif
    bucket_hist_c(cw, 0, n, count, mass);
}

/* top-k over the n candidates, 0 < k < n. Counting per bucket finds the bucket holding the
 * k-th ranked; a selection in it gives the k-th weight. vLLM masks only logits strictly below
 * the k-th, so ties with it stay: the bound is the last-ranked candidate of that weight. */
static int filter_top_k(struct sampler *s, int n, int k) {
    int32_t(*q)[SAMPLER_HIST_N] = s->hist_count, *count = q[0];
    memset(q, 0, sizeof s->hist_count);
    bucket_hist(s->cw, n, q, NULL);
    for (int b = 0; b < SAMPLER_HIST_N; b++) count[b] += q[1][b] + q[2][b] + q[3][b];
    int before = 0, b = 0; /* before: candidates in buckets ahead of b; total n > k ends it */
    while (before + count[b] < k) before += count[b++];
    int nt = gather_bucket(s->cw, s->cid, n, b, s->tmp);
    cand_nth(s->tmp, nt, k - before - 1);
    return keep_through(s->cw, s->cid, n, (struct cand){s->tmp[k - before - 1].w, INT32_MAX});
}

/* top-p over the n candidates: keeps the smallest rank prefix whose mass reaches top_p of the
 * total. vLLM masks a token when the ascending cumulative probability up to it is <= 1 - top_p:
 * the same set, the token that reaches top_p included. The histogram's mass finds the bucket
 * where the running mass crosses: earlier buckets are all in, later ones all out, and only that
 * bucket, a few thousand tokens even for flat logits, goes through the selection. */
static int filter_top_p(struct sampler *s, int n, float top_p) {
    double(*h)[SAMPLER_HIST_N] = s->hist_mass, *mass = h[0], total = 0.0;
    memset(h, 0, sizeof s->hist_mass);
    bucket_hist(s->cw, n, NULL, h);
    for (int b = 0; b < SAMPLER_HIST_N; b++) mass[b] += h[1][b];
    for (int b = 0; b < SAMPLER_HIST_N; b++) total += mass[b];
    const double target = (double)top_p * total;
    /* acc stays < target (target > 0): it grows only by buckets that do not reach it. */
    double acc = 0.0;
    int cross = 0;
    while (cross < SAMPLER_HIST_N - 1 && acc + mass[cross] < target) acc += mass[cross++];
    int nt = gather_bucket(s->cw, s->cid, n, cross, s->tmp);
    int kept = select_mass(s->tmp, 0, nt, acc, target);
    if (kept == 0) return n; /* rounding ran past every bucket: all are in */
    struct cand bound = s->tmp[0];
    for (int i = 1; i < kept; i++)
        if (cand_before(bound, s->tmp[i])) bound = s->tmp[i];
    return keep_through(s->cw, s->cid, n, bound);
}

/* ---- draw ---- */

/* Inverse CDF over the n candidates, in ascending id order: the first token whose cumulative
 * weight exceeds u * total. Sums run in double in a fixed order, and the weights are
 * sampler_exp.h's, so every platform (and the GPU sampler, whose sums differ only in rounding
 * order) draws the same token. */
static int32_t draw(const float *cw, const int32_t *cid, int n, double u) {
    assert(n > 0); /* the max token (weight 1) passes every filter */
    /* The total in four fixed lanes (independent add chains, same order everywhere). */
    double lane[4];
    lane_sums(cw, n, lane);
    const double total = (lane[0] + lane[1]) + (lane[2] + lane[3]);
    const double target = u * total;
    /* one dependent add per token, up to the one drawn: the order is the draw's definition */
    double acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += cw[i];
        if (acc > target) return cid[i];
    }
    return cid[n - 1]; /* u * total rounded up to total */
}

/* temperature -> min-p -> top-k -> top-p -> draw, on logits already penalised. */
static int32_t sample_random(struct sampler *s, const struct sampling_params *p, double u,
                             float *logits) {
    const int n = s->vocab;
    const float m = scale_max(logits, n, p->temperature);
    /* No finite mass: nothing to sample from. +inf swamps all finite tokens (softmax would give
     * NaN), so the first +inf is the only sensible pick. */
    if (!(m > -INFINITY) || m == INFINITY) return argmax(logits, n);
    int nc = build_cands(logits, n, m, p->min_p, s->cw, s->cid);
    if (p->top_k > 0 && p->top_k < nc) nc = filter_top_k(s, nc, p->top_k);
    if (p->top_p < 1.0f && nc > 1) nc = filter_top_p(s, nc, p->top_p);
    return draw(s->cw, s->cid, nc, u);
}

int32_t sampler_sample_u(struct sampler *s, const struct sampling_params *p, double u,
                         float *logits, const int32_t *prompt, int n_prompt, const int32_t *output,
                         int n_output) {
    assert(s && p && logits);
    assert(n_prompt <= 0 || prompt);
    assert(n_output <= 0 || output);
    apply_penalties(s, p, logits, prompt, n_prompt, output, n_output);
    if (sampler_is_greedy(p)) return argmax(logits, s->vocab);
    return sample_random(s, p, u, logits);
}

int32_t sampler_sample(struct sampler *s, const struct sampling_params *p, struct sampler_rng *rng,
                       float *logits, const int32_t *prompt, int n_prompt, const int32_t *output,
                       int n_output) {
    assert(sampler_is_greedy(p) || rng);
    /* Exactly one uniform per sampled token, whatever path follows, so a request's stream
     * position depends only on how many tokens it sampled. */
    const double u = sampler_is_greedy(p) ? 0.0 : sampler_rng_uniform(rng);
    return sampler_sample_u(s, p, u, logits, prompt, n_prompt, output, n_output);
}
