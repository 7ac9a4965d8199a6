/* sampler: one sequence's logits -> next token id with vLLM's semantics and order (penalties,
 * then greedy or temperature -> min-p -> top-k -> top-p -> draw). kernels/kern_sample.cu is the
 * same function on the GPU: keep the two in step (weights come from sampler_exp.h, and every
 * float operation here is one IEEE operation, never fused, which CMake enforces with
 * -ffp-contract=off). A struct sampler owns
 * vocab-sized scratch so a call allocates nothing; one per thread. No filter sorts the
 * vocabulary: a histogram of the weights finds the one bucket where top-k or top-p cuts, and
 * only that bucket goes through a selection, so a call is a few linear passes. */
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
    uint32_t *counts;  /* owned (vocab): count in output; all zero between calls */
    uint8_t *seen;     /* owned (vocab): 1 if in prompt or output; all zero between calls */
    int32_t *touched;  /* owned (vocab): distinct ids marked this call, reset afterwards */
    struct cand *cand; /* owned (vocab): tokens surviving the filters so far, in id order */
    struct cand *tmp;  /* owned (vocab): the histogram bucket where a filter cuts */
    double hist_mass[SAMPLER_HIST_N];   /* top-p: weight per bucket, this call */
    int32_t hist_count[SAMPLER_HIST_N]; /* top-k: tokens per bucket, this call */
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
    s->cand = malloc(n * sizeof *s->cand);
    s->tmp = malloc(n * sizeof *s->tmp);
    if (!s->counts || !s->seen || !s->touched || !s->cand || !s->tmp) {
        sampler_destroy(s);
        return tl_fail(err, TL_ERR_NOMEM,
                       "sampler: out of host memory for %d-token scratch (%zu bytes)", vocab_size,
                       n * (sizeof(uint32_t) + 1 + sizeof(int32_t) + 2 * sizeof(struct cand)));
    }
    *out = s;
    return TL_OK;
}

void sampler_destroy(struct sampler *s) {
    if (!s) return;
    free(s->counts);
    free(s->seen);
    free(s->touched);
    free(s->cand);
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

/* ---- greedy ---- */

/* Lowest index among equal maxima; NaN never wins. All -inf: the first; all NaN: 0. */
static int32_t argmax(const float *x, int n) {
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

/* Copies the candidates of one bucket to out (branch-free; order irrelevant), returns how many. */
static int gather_bucket(const struct cand *c, int n, int bucket, struct cand *out) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        out[k] = c[i];
        k += weight_bucket(c[i].w) == bucket;
    }
    return k;
}

/* Keeps, in place and in order, the candidates ranked at or before bound; returns how many. */
static int keep_through(struct cand *c, int n, struct cand bound) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        const struct cand x = c[i];
        c[k] = x;
        k += !cand_before(bound, x);
    }
    return k;
}

/* top-k over c[0, n), 0 < k < n. Counting per bucket finds the bucket holding the k-th ranked;
 * a selection in it gives the k-th weight. vLLM masks only logits strictly below the k-th, so
 * ties with it stay: the bound is the last-ranked candidate of that weight. */
static int filter_top_k(struct sampler *s, struct cand *c, int n, int k) {
    int32_t *count = s->hist_count;
    memset(count, 0, sizeof s->hist_count);
    for (int i = 0; i < n; i++) count[weight_bucket(c[i].w)]++;
    int before = 0, b = 0; /* before: candidates in buckets ahead of b; total n > k ends it */
    while (before + count[b] < k) before += count[b++];
    int nt = gather_bucket(c, n, b, s->tmp);
    cand_nth(s->tmp, nt, k - before - 1);
    return keep_through(c, n, (struct cand){s->tmp[k - before - 1].w, INT32_MAX});
}

/* top-p over c[0, n): keeps the smallest rank prefix whose mass reaches top_p of the total.
 * vLLM masks a token when the ascending cumulative probability up to it is <= 1 - top_p: the
 * same set, the token that reaches top_p included. The histogram's mass finds the bucket where
 * the running mass crosses: earlier buckets are all in, later ones all out, and only that
 * bucket, a few thousand tokens even for flat logits, goes through the selection. */
static int filter_top_p(struct sampler *s, struct cand *c, int n, float top_p) {
    double *mass = s->hist_mass, total = 0.0;
    memset(mass, 0, sizeof s->hist_mass);
    for (int i = 0; i < n; i++) mass[weight_bucket(c[i].w)] += c[i].w;
    for (int b = 0; b < SAMPLER_HIST_N; b++) total += mass[b];
    const double target = (double)top_p * total;
    /* acc stays < target (target > 0): it grows only by buckets that do not reach it. */
    double acc = 0.0;
    int cross = 0;
    while (cross < SAMPLER_HIST_N - 1 && acc + mass[cross] < target) acc += mass[cross++];
    int nt = gather_bucket(c, n, cross, s->tmp);
    int kept = select_mass(s->tmp, 0, nt, acc, target);
    if (kept == 0) return n; /* rounding ran past every bucket: all are in */
    struct cand bound = s->tmp[0];
    for (int i = 1; i < kept; i++)
        if (cand_before(bound, s->tmp[i])) bound = s->tmp[i];
    return keep_through(c, n, bound);
}

/* ---- draw ---- */

/* Inverse CDF over c[0, n), in ascending id order: the first token whose cumulative weight
 * exceeds u * total. Sums run in double in a fixed order, and the weights are sampler_exp.h's,
 * so every platform (and the GPU sampler, whose sums differ only in rounding order) draws the
 * same token. */
static int32_t draw(const struct cand *c, int n, double u) {
    assert(n > 0); /* the max token (weight 1) passes every filter */
    /* The total in four fixed lanes (independent add chains, same order everywhere). */
    double lane[4] = {0.0, 0.0, 0.0, 0.0};
    int i4 = n & ~3;
    for (int i = 0; i < i4; i += 4)
        for (int j = 0; j < 4; j++) lane[j] += c[i + j].w;
    for (int i = i4; i < n; i++) lane[i - i4] += c[i].w;
    const double total = (lane[0] + lane[1]) + (lane[2] + lane[3]);
    const double target = u * total;
    double acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += c[i].w;
        if (acc > target) return c[i].id;
    }
    return c[n - 1].id; /* u * total rounded up to total */
}

/* temperature -> min-p -> top-k -> top-p -> draw, on logits already penalised. */
static int32_t sample_random(struct sampler *s, const struct sampling_params *p,
                             struct sampler_rng *rng, float *logits) {
    const int n = s->vocab;
    /* Exactly one uniform per sampled token, whatever path follows, so a request's stream
     * position depends only on how many tokens it sampled. */
    const double u = sampler_rng_uniform(rng);

    const float temp = p->temperature;
    if (temp != 1.0f)
        for (int i = 0; i < n; i++) logits[i] /= temp; /* a division, as vLLM's div_(temp) */
    /* The max in four lanes: independent compare chains. NaN fails every > and never wins. */
    float lane[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int i4 = n & ~3;
    for (int i = 0; i < i4; i += 4)
        for (int j = 0; j < 4; j++) lane[j] = logits[i + j] > lane[j] ? logits[i + j] : lane[j];
    for (int i = i4; i < n; i++) lane[0] = logits[i] > lane[0] ? logits[i] : lane[0];
    float m = lane[0];
    for (int j = 1; j < 4; j++) m = lane[j] > m ? lane[j] : m;
    /* No finite mass: nothing to sample from. +inf swamps all finite tokens (softmax would give
     * NaN), so the first +inf is the only sensible pick. */
    if (!(m > -INFINITY) || m == INFINITY) return argmax(logits, n);

    /* min-p: prob >= min_p * max_prob is w >= min_p, since the max token has w = exp(0) = 1.
     * Zero weights (more than 86 below the max, -inf, NaN) can never be drawn, so they never
     * become candidates. The weight is sampler_exp.h's, which the GPU sampler shares. */
    const float min_w = p->min_p;
    struct cand *c = s->cand;
    int nc = 0;
    for (int i = 0; i < n; i++) {
        const float w = sampler_weight_tab(logits[i] - m, exp_tab);
        c[nc] = (struct cand){w, i}; /* branch-free: min-p's outcome is unpredictable */
        nc += (w > 0.0f) & (w >= min_w);
    }
    if (p->top_k > 0 && p->top_k < nc) nc = filter_top_k(s, c, nc, p->top_k);
    if (p->top_p < 1.0f && nc > 1) nc = filter_top_p(s, c, nc, p->top_p);
    return draw(c, nc, u);
}

int32_t sampler_sample(struct sampler *s, const struct sampling_params *p, struct sampler_rng *rng,
                       float *logits, const int32_t *prompt, int n_prompt, const int32_t *output,
                       int n_output) {
    assert(s && p && logits);
    assert(n_prompt <= 0 || prompt);
    assert(n_output <= 0 || output);
    apply_penalties(s, p, logits, prompt, n_prompt, output, n_output);
    if (sampler_is_greedy(p)) return argmax(logits, s->vocab);
    assert(rng);
    return sample_random(s, p, rng, logits);
}
