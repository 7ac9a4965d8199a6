/* test_sampler: the sampler against vLLM's semantics: greedy ties and NaN, the three penalties
 * (exact values), min-p / top-k / top-p against a full-sort reference that predicts the exact
 * token for the same uniform, seeded determinism, empirical distributions, validation, and the
 * cost of one call at Qwen2's 152,064-token vocabulary (printed, not asserted). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sampler.h"
#include "sampler_exp.h"

static const float exp_tab[32] = SAMPLER_EXP_TABLE;

/* The sampler's weight of a token d below the max (what the GPU sampler computes too). */
static float weight(float d) {
    return sampler_weight_tab(d, exp_tab);
}

#define QWEN2_VOCAB 152064

/* ---- test data: its own generator, so test inputs never depend on the code under test ---- */

static uint64_t data_state = 0x2545f4914f6cdd1dULL;

static uint64_t data_next(void) {
    data_state ^= data_state << 13;
    data_state ^= data_state >> 7;
    data_state ^= data_state << 17;
    return data_state;
}

static double data_uniform(void) {
    return (double)(data_next() >> 11) * 0x1.0p-53;
}

/* Standard normal (Box-Muller); logits of real models look roughly like this, scaled. */
static float data_normal(void) {
    double a = data_uniform(), b = data_uniform();
    return (float)(sqrt(-2.0 * log(a + 1e-300)) * cos(2.0 * M_PI * b));
}

static void fill_logits(float *x, int n, float scale) {
    for (int i = 0; i < n; i++) x[i] = scale * data_normal();
}

/* Rounds to bfloat16 and back: how bf16 models hand over logits, with many exact ties. */
static float to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

static int argmax_ref(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static void softmax_ref(const float *x, int n, double temp, double *p) {
    double m = -INFINITY, z = 0.0;
    for (int i = 0; i < n; i++) m = fmax(m, x[i] / temp);
    for (int i = 0; i < n; i++) z += p[i] = exp(x[i] / temp - m);
    for (int i = 0; i < n; i++) p[i] /= z;
}

static struct sampler *make_sampler(int vocab) {
    struct sampler *s = NULL;
    struct tl_err err;
    assert_int_equal(sampler_create(vocab, &s, &err), TL_OK);
    assert_non_null(s);
    return s;
}

static struct sampling_params params_temp(float temperature) {
    struct sampling_params p;
    sampling_params_default(&p);
    p.temperature = temperature;
    return p;
}

/* ---- greedy ---- */

static void test_greedy_argmax(void **state) {
    (void)state;
    enum { V = 5000 };
    struct sampler *s = make_sampler(V);
    struct sampling_params p = params_temp(0.0f);
    static float x[V];
    for (int trial = 0; trial < 50; trial++) {
        fill_logits(x, V, 3.0f);
        int want = argmax_ref(x, V);
        struct sampler_rng rng, before;
        sampler_rng_seed(&rng, (uint64_t)trial);
        before = rng;
        assert_int_equal(sampler_sample(s, &p, &rng, x, NULL, 0, NULL, 0), want);
        assert_memory_equal(&rng, &before, sizeof rng); /* greedy never touches rng */
    }
    /* Below vLLM's 1e-5 epsilon is greedy too, and needs no rng at all. */
    p.temperature = 1e-6f;
    fill_logits(x, V, 3.0f);
    assert_int_equal(sampler_sample(s, &p, NULL, x, NULL, 0, NULL, 0), argmax_ref(x, V));
    sampler_destroy(s);
}

static void test_greedy_ties_and_nan(void **state) {
    (void)state;
    struct sampler *s = make_sampler(8);
    struct sampling_params p = params_temp(0.0f);
    float zeros[8] = {0};
    assert_int_equal(sampler_sample(s, &p, NULL, zeros, NULL, 0, NULL, 0), 0);

    float tie[8] = {0.1f, -2.0f, 0.3f, 1.5f, 0.2f, 1.5f, -1.0f, 1.5f};
    assert_int_equal(sampler_sample(s, &p, NULL, tie, NULL, 0, NULL, 0), 3);

    float nan_front[8] = {NAN, 0.5f, NAN, -1.0f, 2.0f, NAN, 1.9f, -3.0f};
    assert_int_equal(sampler_sample(s, &p, NULL, nan_front, NULL, 0, NULL, 0), 4);

    float neg_inf[8] = {NAN, -INFINITY, -INFINITY, NAN, -INFINITY, NAN, NAN, NAN};
    assert_int_equal(sampler_sample(s, &p, NULL, neg_inf, NULL, 0, NULL, 0), 1);
    sampler_destroy(s);
}

/* ---- penalties ---- */

static void test_repetition_penalty(void **state) {
    (void)state;
    struct sampler *s = make_sampler(6);
    struct sampling_params p = params_temp(0.0f);
    p.repetition_penalty = 2.0f;

    /* Positive logit in the prompt is divided: 3.0 -> 1.5 loses to 2.5. A negative one in the
     * output is multiplied: -0.5 -> -1.0. Token 4 is in both and is penalised once. Ids outside
     * the vocabulary are ignored. */
    float x[6] = {3.0f, 2.5f, -1.0f, -0.5f, 1.0f, 0.0f};
    int32_t prompt[] = {0, 4, -1, 6, 1 << 30};
    int32_t output[] = {3, 4, 4, 6, -7};
    assert_int_equal(sampler_sample(s, &p, NULL, x, prompt, 5, output, 5), 1);
    float want[6] = {1.5f, 2.5f, -1.0f, -1.0f, 0.5f, 0.0f};
    for (int i = 0; i < 6; i++) assert_true(x[i] == want[i]);

    /* A penalty < 1 rewards repeats: all-negative logits, -3 * 0.25 = -0.75 beats -1. */
    p.repetition_penalty = 0.25f;
    float y[6] = {-1.0f, -3.0f, -2.0f, -4.0f, -1.5f, -6.0f};
    int32_t prompt2[] = {1};
    assert_int_equal(sampler_sample(s, &p, NULL, y, prompt2, 1, NULL, 0), 1);
    assert_true(y[1] == -0.75f && y[0] == -1.0f);

    /* Scratch was reset: no history, no change. */
    float z[6] = {3.0f, 2.5f, -1.0f, -0.5f, 1.0f, 0.0f};
    assert_int_equal(sampler_sample(s, &p, NULL, z, NULL, 0, NULL, 0), 0);
    assert_true(z[0] == 3.0f && z[3] == -0.5f);
    sampler_destroy(s);
}

static void test_presence_frequency(void **state) {
    (void)state;
    struct sampler *s = make_sampler(8);
    struct sampling_params p = params_temp(0.0f);
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;

    /* Output: token 2 three times, 5 once; token 7 only in the prompt (untouched by these). */
    float x[8] = {1.0f, 0.5f, 3.0f, -1.0f, 0.0f, 2.5f, 0.75f, 2.0f};
    int32_t prompt[] = {7, 7, 1};
    int32_t output[] = {2, 5, 2, 2};
    int32_t tok = sampler_sample(s, &p, NULL, x, prompt, 3, output, 4);
    float want[8] = {1.0f,  0.5f, 3.0f - 1.5f - 0.25f, -1.0f, 0.0f, 2.5f - 0.5f - 0.25f,
                     0.75f, 2.0f};
    for (int i = 0; i < 8; i++) assert_true(x[i] == want[i]);
    assert_int_equal(tok, 7);

    /* Negative penalties encourage repeats. */
    p.frequency_penalty = -1.0f;
    p.presence_penalty = -2.0f;
    float y[8] = {1.0f, 0.5f, 3.0f, -1.0f, 0.0f, 2.5f, 0.75f, 2.0f};
    int32_t out2[] = {3, 3, 3};
    assert_int_equal(sampler_sample(s, &p, NULL, y, NULL, 0, out2, 3), 3);
    assert_true(y[3] == -1.0f + 3.0f + 2.0f);

    /* All three together: repetition first, then frequency and presence. */
    p.repetition_penalty = 2.0f;
    p.frequency_penalty = 1.0f;
    p.presence_penalty = 0.5f;
    float w[8] = {4.0f, -2.0f, 0, 0, 0, 0, 0, 0};
    int32_t out3[] = {0, 0, 1};
    sampler_sample(s, &p, NULL, w, NULL, 0, out3, 3);
    assert_true(w[0] == 4.0f / 2.0f - 2.0f - 0.5f);
    assert_true(w[1] == -2.0f * 2.0f - 1.0f - 0.5f);

    /* Counts were reset: the same call again subtracts the same amounts, not twice as much. */
    float v[8] = {4.0f, -2.0f, 0, 0, 0, 0, 0, 0};
    sampler_sample(s, &p, NULL, v, NULL, 0, out3, 3);
    assert_true(v[0] == w[0] && v[1] == w[1]);
    sampler_destroy(s);
}

/* ---- filters against a full-sort reference ---- */

static void test_top_k_one_is_greedy(void **state) {
    (void)state;
    enum { V = 3000 };
    struct sampler *s = make_sampler(V);
    struct sampling_params p = params_temp(0.8f);
    p.top_k = 1;
    static float x[V];
    for (uint64_t seed = 0; seed < 300; seed++) {
        fill_logits(x, V, 2.0f);
        int want = argmax_ref(x, V);
        struct sampler_rng rng;
        sampler_rng_seed(&rng, seed);
        assert_int_equal(sampler_sample(s, &p, &rng, x, NULL, 0, NULL, 0), want);
    }
    sampler_destroy(s);
}

static void test_top_p_tiny_is_greedy(void **state) {
    (void)state;
    enum { V = 3000 };
    struct sampler *s = make_sampler(V);
    struct sampling_params p = params_temp(1.3f);
    p.top_p = 1e-6f;
    static float x[V];
    for (uint64_t seed = 0; seed < 300; seed++) {
        fill_logits(x, V, 2.0f);
        int want = argmax_ref(x, V);
        struct sampler_rng rng;
        sampler_rng_seed(&rng, seed);
        assert_int_equal(sampler_sample(s, &p, &rng, x, NULL, 0, NULL, 0), want);
    }
    sampler_destroy(s);
}

static void test_min_p_excludes(void **state) {
    (void)state;
    enum { V = 6, N = 10000 };
    struct sampler *s = make_sampler(V);
    struct sampling_params p = params_temp(1.0f);
    p.min_p = 0.1f;
    /* Probabilities relative to the max: 1, 0.5, 0.09 (out), 0.2, 0.11, 0.01 (out). */
    const float base[V] = {0.0f, logf(0.5f), logf(0.09f), logf(0.2f), logf(0.11f), logf(0.01f)};
    int hits[V] = {0};
    struct sampler_rng rng;
    sampler_rng_seed(&rng, 7);
    for (int i = 0; i < N; i++) {
        float x[V];
        memcpy(x, base, sizeof x);
        hits[sampler_sample(s, &p, &rng, x, NULL, 0, NULL, 0)]++;
    }
    assert_int_equal(hits[2], 0);
    assert_int_equal(hits[5], 0);
    /* The survivors share the mass renormalised: 0.11 / 1.81 ~ 6%, so hundreds of hits. */
    assert_true(hits[0] > 0 && hits[1] > 0 && hits[3] > 0 && hits[4] > 300);
    sampler_destroy(s);
}

static void test_top_k_keeps_ties(void **state) {
    (void)state;
    /* vLLM masks only logits strictly below the k-th largest, so ties at the boundary stay. */
    struct sampler *s = make_sampler(5);
    struct sampling_params p = params_temp(1.0f);
    p.top_k = 2;
    int hits[5] = {0};
    struct sampler_rng rng;
    sampler_rng_seed(&rng, 99);
    for (int i = 0; i < 3000; i++) {
        float x[5] = {0.5f, 1.0f, -3.0f, 1.0f, 1.0f};
        hits[sampler_sample(s, &p, &rng, x, NULL, 0, NULL, 0)]++;
    }
    assert_int_equal(hits[0] + hits[2], 0);
    assert_true(hits[1] > 800 && hits[3] > 800 && hits[4] > 800);
    sampler_destroy(s);
}

/* Exact boundaries, where random logits never land. Four equal maxima (weight 1 each; the rest
 * masked to -inf, so the total is exactly 4): top_p 0.5 reaches its target exactly after two,
 * so vLLM keeps two (the mass before the third already equals top_p) and the rank order keeps
 * the lowest ids. min_p = 1 keeps exactly the maxima. */
static void test_exact_boundaries(void **state) {
    (void)state;
    enum { V = 7 };
    struct sampler *s = make_sampler(V);
    struct sampling_params p = params_temp(1.0f);
    p.top_p = 0.5f;
    const float base[V] = {-INFINITY, 1.75f, 1.75f, -INFINITY, 1.75f, 1.75f, -INFINITY};
    int hits[V] = {0};
    struct sampler_rng rng;
    sampler_rng_seed(&rng, 3);
    for (int i = 0; i < 4000; i++) {
        float x[V];
        memcpy(x, base, sizeof x);
        hits[sampler_sample(s, &p, &rng, x, NULL, 0, NULL, 0)]++;
    }
    assert_int_equal(hits[1] + hits[2], 4000);
    assert_true(hits[1] > 1700 && hits[2] > 1700);
    sampler_destroy(s);

    enum { W = 2000 };
    static float y[W];
    s = make_sampler(W);
    p = params_temp(1.0f);
    p.min_p = 1.0f;
    for (uint64_t seed = 0; seed < 100; seed++) {
        fill_logits(y, W, 2.0f);
        int want = argmax_ref(y, W);
        sampler_rng_seed(&rng, seed);
        assert_int_equal(sampler_sample(s, &p, &rng, y, NULL, 0, NULL, 0), want);
    }
    sampler_destroy(s);
}

/* The reference uniform: xoshiro256** (splitmix64-seeded) as the header promises. */
static uint64_t ref_rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static double ref_uniform(struct sampler_rng *r) {
    uint64_t *s = r->s, out = ref_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = ref_rotl(s[3], 45);
    return (double)(out >> 11) * 0x1.0p-53;
}

struct ref_cand {
    float w;
    int id;
};

static int ref_cmp_rank(const void *pa, const void *pb) {
    const struct ref_cand *a = pa, *b = pb;
    if (a->w != b->w) return a->w > b->w ? -1 : 1;
    return a->id - b->id;
}

/* The slow, obvious sampler: sort everything, cut by min-p, top-k (ties kept), top-p, then the
 * inverse CDF in id order for u. The weights repeat the sampler's float steps exactly. */
static int ref_sample(const float *logits_in, int n, const struct sampling_params *p, double u) {
    float *l = malloc(n * sizeof *l), m = -INFINITY;
    struct ref_cand *c = malloc(n * sizeof *c);
    char *keep = calloc(n, 1);
    for (int i = 0; i < n; i++) {
        l[i] = p->temperature != 1.0f ? logits_in[i] / p->temperature : logits_in[i];
        if (l[i] > m) m = l[i];
    }
    int nc = 0;
    for (int i = 0; i < n; i++) {
        float w = weight(l[i] - m);
        if (w > 0.0f && w >= p->min_p) c[nc++] = (struct ref_cand){w, i};
    }
    qsort(c, nc, sizeof *c, ref_cmp_rank);
    if (p->top_k > 0 && p->top_k < nc) {
        int k = p->top_k;
        while (k < nc && c[k].w == c[p->top_k - 1].w) k++;
        nc = k;
    }
    if (p->top_p < 1.0f) {
        double total = 0.0, acc = 0.0;
        for (int i = 0; i < nc; i++) total += c[i].w;
        int k = 0;
        while (k < nc && acc < (double)p->top_p * total) acc += c[k++].w;
        nc = k;
    }
    for (int i = 0; i < nc; i++) keep[c[i].id] = 1;
    double total = 0.0, acc = 0.0;
    for (int i = 0; i < n; i++)
        if (keep[i]) total += weight(l[i] - m);
    int tok = -1, last = -1;
    for (int i = 0; i < n && tok < 0; i++)
        if (keep[i]) {
            acc += weight(l[i] - m);
            last = i;
            if (acc > u * total) tok = i;
        }
    free(l);
    free(c);
    free(keep);
    return tok >= 0 ? tok : last;
}

static void test_filters_match_reference(void **state) {
    (void)state;
    enum { V = 20000 };
    static float x[V], copy[V];
    struct sampler *s = make_sampler(V);
    const struct {
        float temp, top_p, min_p;
        int top_k;
    } cases[] = {
        {1.0f, 0.9f, 0.0f, 0},     {0.7f, 0.95f, 0.0f, 0},    {1.0f, 1.0f, 0.0f, 50},
        {0.8f, 0.9f, 0.0f, 40},    {1.0f, 0.5f, 0.05f, 0},    {1.2f, 1.0f, 0.02f, 0},
        {1.0f, 0.99f, 0.0f, 5000}, {0.6f, 0.8f, 0.01f, 100},  {1.0f, 1.0f, 0.0f, 0},
        {2.0f, 0.9f, 0.0f, 0},     {1.0f, 0.3f, 0.0f, 1},     {1.0f, 0.999f, 0.0f, 19999},
        {1.0f, 1.0f, 0.1f, 3000},  {1.0f, 0.9f, 0.0f, 10000}, {0.5f, 0.999f, 0.0f, 0},
    };
    int mismatches = 0, total = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        struct sampling_params p = params_temp(cases[ci].temp);
        p.top_p = cases[ci].top_p;
        p.min_p = cases[ci].min_p;
        p.top_k = cases[ci].top_k;
        for (int trial = 0; trial < 40; trial++) {
            /* Alternate flat and peaked logits, and bf16-rounded ones to force exact ties. */
            fill_logits(x, V, trial % 2 ? 1.0f : 4.0f);
            if (trial % 4 >= 2)
                for (int i = 0; i < V; i++) x[i] = to_bf16(x[i]);
            memcpy(copy, x, sizeof x);
            struct sampler_rng rng, mirror;
            sampler_rng_seed(&rng, (uint64_t)(ci * 1000 + trial));
            mirror = rng;
            int got = sampler_sample(s, &p, &rng, x, NULL, 0, NULL, 0);
            int want = ref_sample(copy, V, &p, ref_uniform(&mirror));
            assert_memory_equal(&rng, &mirror, sizeof rng); /* exactly one uniform consumed */
            if (got != want)
                fprintf(stderr, "case %zu trial %d: got %d want %d\n", ci, trial, got, want);
            mismatches += got != want;
            total++;
        }
    }
    assert_int_equal(mismatches, 0);
    printf("filters: %d draws match the full-sort reference exactly\n", total);
    sampler_destroy(s);
}

/* ---- determinism and distributions ---- */

static void test_seed_determinism(void **state) {
    (void)state;
    enum { V = 1000, N = 100 };
    static float base[V], x[V];
    fill_logits(base, V, 1.0f);
    struct sampler *s = make_sampler(V);
    struct sampling_params p = params_temp(0.9f);
    p.top_p = 0.95f;
    int32_t a[N], b[N], c[N];
    struct sampler_rng r1, r2, r3;
    sampler_rng_seed(&r1, 1234);
    sampler_rng_seed(&r2, 1234);
    sampler_rng_seed(&r3, 1235);
    assert_memory_equal(&r1, &r2, sizeof r1);
    for (int i = 0; i < N; i++) {
        memcpy(x, base, sizeof x);
        a[i] = sampler_sample(s, &p, &r1, x, NULL, 0, NULL, 0);
        memcpy(x, base, sizeof x);
        b[i] = sampler_sample(s, &p, &r2, x, NULL, 0, NULL, 0);
        memcpy(x, base, sizeof x);
        c[i] = sampler_sample(s, &p, &r3, x, NULL, 0, NULL, 0);
    }
    assert_memory_equal(a, b, sizeof a);
    int differ = 0;
    for (int i = 0; i < N; i++) differ += a[i] != c[i];
    assert_true(differ > N / 2); /* ~hundreds of candidates: sequences share few tokens */
    sampler_destroy(s);
}

/* Draws n times from 4 random logits at temp and compares frequencies with the softmax. */
static void check_distribution(float temp, const float *logits, double *freq_out) {
    enum { V = 4, N = 200000 };
    struct sampler *s = make_sampler(V);
    struct sampling_params p = params_temp(temp);
    double want[V];
    softmax_ref(logits, V, temp, want);
    int hits[V] = {0};
    struct sampler_rng rng;
    sampler_rng_seed(&rng, 2024);
    for (int i = 0; i < N; i++) {
        float x[V];
        memcpy(x, logits, sizeof x);
        hits[sampler_sample(s, &p, &rng, x, NULL, 0, NULL, 0)]++;
    }
    for (int i = 0; i < V; i++) {
        freq_out[i] = (double)hits[i] / N;
        printf("  T=%.2f token %d: softmax %.4f drawn %.4f\n", temp, i, want[i], freq_out[i]);
        assert_true(fabs(freq_out[i] - want[i]) < 0.01);
    }
    sampler_destroy(s);
}

static void test_distribution_and_temperature(void **state) {
    (void)state;
    float logits[4];
    fill_logits(logits, 4, 1.0f);
    int top = argmax_ref(logits, 4);
    double f1[4], f05[4];
    check_distribution(1.0f, logits, f1);
    check_distribution(0.5f, logits, f05);
    /* Halving the temperature squares the odds: p_i(0.5) is proportional to p_i(1)^2. */
    double z = 0.0, pred[4];
    for (int i = 0; i < 4; i++) z += pred[i] = f1[i] * f1[i];
    for (int i = 0; i < 4; i++) assert_true(fabs(f05[i] - pred[i] / z) < 0.01);
    assert_true(f05[top] > f1[top]);
}

/* ---- the weight function and the exported uniform ---- */

/* sampler_exp.h against exp() in double: within 2 ulp on a dense sample of [-86, 0] (the header's
 * bound, 1.84, comes from every float in that range), exact where it must be, 0 where promised.
 * The exhaustive check takes half a minute; this one a fraction of a second. */
static void test_weight_function(void **state) {
    (void)state;
    assert_true(weight(0.0f) == 1.0f);
    assert_true(weight(-0.0f) == 1.0f);
    assert_true(weight(-INFINITY) == 0.0f);
    assert_true(weight(NAN) == 0.0f);
    assert_true(weight(-86.0001f) == 0.0f);
    assert_true(weight(-86.0f) > 1.17549435e-38f); /* still a normal float */
    assert_true(weight(-1e-30f) == 1.0f);
    double worst = 0.0;
    int n = 0;
    for (float d = -86.0f; d <= 0.0f; d += 0.000731f, n++) {
        float t = d + (float)(data_uniform() * 0.0007);
        if (t > 0.0f) t = 0.0f;
        float w = weight(t);
        double ref = exp((double)t);
        float rf = (float)ref;
        double ulp = (double)nextafterf(rf, INFINITY) - (double)rf;
        double e = fabs((double)w - ref) / ulp;
        if (e > worst) worst = e;
        assert_true(w > 0.0f);
    }
    printf("weight: %d points in [-86, 0], worst %.3f ulp from exp()\n", n, worst);
    assert_true(worst < 2.0);
    /* keys order weights: heavier first, weight 1 is key 0 */
    assert_true(sampler_weight_key(1.0f) == 0u);
    assert_true(sampler_weight_key(weight(-1.0f)) < sampler_weight_key(weight(-2.0f)));
    assert_true(sampler_key_weight(sampler_weight_key(0.3f)) == 0.3f);
}

static void test_exported_uniform(void **state) {
    (void)state;
    struct sampler_rng a, b;
    sampler_rng_seed(&a, 77);
    b = a;
    for (int i = 0; i < 1000; i++) {
        double u = sampler_rng_uniform(&a);
        assert_true(u >= 0.0 && u < 1.0);
        assert_true(u == ref_uniform(&b));
    }
    struct sampling_params p = params_temp(0.0f);
    assert_true(sampler_is_greedy(&p));
    p.temperature = 0.99e-5f;
    assert_true(sampler_is_greedy(&p));
    p.temperature = 1e-5f;
    assert_false(sampler_is_greedy(&p));
    /* a sampled token takes exactly the uniform sampler_rng_uniform would give next */
    enum { V = 64 };
    struct sampler *s = make_sampler(V);
    float x[V], copy[V];
    fill_logits(x, V, 1.0f);
    memcpy(copy, x, sizeof x);
    p = params_temp(1.0f);
    sampler_rng_seed(&a, 5);
    b = a;
    int got = sampler_sample(s, &p, &a, x, NULL, 0, NULL, 0);
    assert_int_equal(got, ref_sample(copy, V, &p, sampler_rng_uniform(&b)));
    assert_memory_equal(&a, &b, sizeof a);
    sampler_destroy(s);
}

/* ---- validation and lifetime ---- */

static void expect_invalid(const struct sampling_params *p, const char *msg) {
    struct tl_err err = {{0}};
    assert_int_equal(sampling_params_validate(p, &err), TL_ERR_INVALID);
    if (!strstr(err.msg, msg)) fail_msg("message '%s' lacks '%s'", err.msg, msg);
}

static void test_validate(void **state) {
    (void)state;
    struct sampling_params p, q;
    struct tl_err err;
    sampling_params_default(&p);
    assert_int_equal(sampling_params_validate(&p, &err), TL_OK);
    assert_true(p.temperature == 1.0f && p.top_p == 1.0f && p.repetition_penalty == 1.0f);
    q = p, q.top_k = -1, q.temperature = 0.0f, q.min_p = 1.0f, q.presence_penalty = -2.0f;
    assert_int_equal(sampling_params_validate(&q, &err), TL_OK);

    q = p, q.top_p = 1.5f;
    expect_invalid(&q, "top_p must be in (0, 1], got 1.5");
    q = p, q.top_p = 0.0f;
    expect_invalid(&q, "top_p must be in (0, 1], got 0");
    q = p, q.temperature = -0.5f;
    expect_invalid(&q, "temperature must be finite and >= 0, got -0.5");
    q = p, q.temperature = NAN;
    expect_invalid(&q, "temperature");
    q = p, q.temperature = INFINITY;
    expect_invalid(&q, "temperature");
    q = p, q.top_k = -2;
    expect_invalid(&q, "top_k must be -1 or 0 (off) or >= 1, got -2");
    q = p, q.min_p = 1.25f;
    expect_invalid(&q, "min_p must be in [0, 1], got 1.25");
    q = p, q.min_p = NAN;
    expect_invalid(&q, "min_p");
    q = p, q.repetition_penalty = 0.0f;
    expect_invalid(&q, "repetition_penalty must be finite and > 0, got 0");
    q = p, q.repetition_penalty = INFINITY;
    expect_invalid(&q, "repetition_penalty");
    q = p, q.presence_penalty = 2.5f;
    expect_invalid(&q, "presence_penalty must be in [-2, 2], got 2.5");
    q = p, q.frequency_penalty = -3.0f;
    expect_invalid(&q, "frequency_penalty must be in [-2, 2], got -3");
}

static void test_create_destroy(void **state) {
    (void)state;
    struct sampler *s = (struct sampler *)&s; /* any non-NULL: failure must clear it */
    struct tl_err err;
    assert_int_equal(sampler_create(0, &s, &err), TL_ERR_INVALID);
    assert_null(s);
    assert_non_null(strstr(err.msg, "vocab_size"));
    sampler_destroy(NULL);
}

/* ---- cost at a real vocabulary (printed, not asserted) ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void time_case(struct sampler *s, const char *name, const struct sampling_params *p,
                      const float *base, float *x, const int32_t *hist, int n_hist) {
    enum { CALLS = 40 };
    struct sampler_rng rng;
    sampler_rng_seed(&rng, 5);
    double spent = 0.0;
    for (int i = 0; i < CALLS; i++) {
        memcpy(x, base, QWEN2_VOCAB * sizeof *x); /* outside the clock */
        double t0 = now_s();
        int32_t tok = sampler_sample(s, p, &rng, x, hist, n_hist, hist, n_hist);
        spent += now_s() - t0;
        assert_true(tok >= 0 && tok < QWEN2_VOCAB);
    }
    printf("  %-40s %.3f ms/call\n", name, 1e3 * spent / CALLS);
}

static void test_timing(void **state) {
    (void)state;
    float *flat = malloc(QWEN2_VOCAB * sizeof *flat),
          *peaked = malloc(QWEN2_VOCAB * sizeof *peaked);
    float *x = malloc(QWEN2_VOCAB * sizeof *x);
    int32_t *hist = malloc(2048 * sizeof *hist);
    assert_true(flat && peaked && x && hist);
    /* flat: N(0, 1), top-p keeps most of the vocabulary (worst case for selection);
     * peaked: N(0, 3) like an LM's tail, top-p keeps a few dozen tokens. */
    fill_logits(flat, QWEN2_VOCAB, 1.0f);
    fill_logits(peaked, QWEN2_VOCAB, 3.0f);
    for (int i = 0; i < 2048; i++) hist[i] = (int32_t)(data_next() % QWEN2_VOCAB);
    struct sampler *s = make_sampler(QWEN2_VOCAB);
    struct sampling_params p = params_temp(1.0f);
    printf("sampler cost at vocab %d:\n", QWEN2_VOCAB);
    p.top_p = 0.9f;
    time_case(s, "top_p 0.9, flat logits", &p, flat, x, NULL, 0);
    time_case(s, "top_p 0.9, peaked logits", &p, peaked, x, NULL, 0);
    p.temperature = 0.7f, p.top_k = 50, p.top_p = 0.95f;
    time_case(s, "T 0.7, top_k 50, top_p 0.95, flat", &p, flat, x, NULL, 0);
    p = params_temp(1.0f);
    time_case(s, "T 1, no filters, flat", &p, flat, x, NULL, 0);
    p.min_p = 0.05f;
    time_case(s, "min_p 0.05, flat", &p, flat, x, NULL, 0);
    p = params_temp(0.0f);
    p.repetition_penalty = 1.1f, p.frequency_penalty = 0.3f, p.presence_penalty = 0.2f;
    time_case(s, "greedy + penalties, 2x2048 history", &p, flat, x, hist, 2048);
    sampler_destroy(s);
    free(flat);
    free(peaked);
    free(x);
    free(hist);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_argmax),
        cmocka_unit_test(test_greedy_ties_and_nan),
        cmocka_unit_test(test_repetition_penalty),
        cmocka_unit_test(test_presence_frequency),
        cmocka_unit_test(test_top_k_one_is_greedy),
        cmocka_unit_test(test_top_p_tiny_is_greedy),
        cmocka_unit_test(test_min_p_excludes),
        cmocka_unit_test(test_top_k_keeps_ties),
        cmocka_unit_test(test_exact_boundaries),
        cmocka_unit_test(test_filters_match_reference),
        cmocka_unit_test(test_seed_determinism),
        cmocka_unit_test(test_distribution_and_temperature),
        cmocka_unit_test(test_weight_function),
        cmocka_unit_test(test_exported_uniform),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_create_destroy),
        cmocka_unit_test(test_timing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
