/* test_gpu_sample: the GPU sampler (kernels/kern_sample.cu through gpu_sample, and the CUDA
 * backend's sample op through forward_step_sample) against engine/sampler.c.
 *
 * 1. Fresh random logits at vocabularies of 1 to 152,064 tokens (odd ones, ones just past a
 *    tile of 8192) and 1 to 256 rows, in F32, F16 and BF16, every row with parameters of its own:
 *    greedy, temperature, min-p, top-k (1, small, crowded, vocab - 1, >= vocab), top-p (1e-6 to
 *    0.999), the three penalties over a random history (repeats, ids outside the vocabulary),
 *    and logits that are normal at several scales, quantised (many exact ties), constant (one
 *    152,064-token tie), partly -inf, partly NaN, or special (all -inf, all NaN, +inf, values
 *    that overflow when divided by the temperature, signed zeros). Fixed cases force the rare
 *    paths: a top-p cut inside a tie of 152,064 tokens (id selection), a crowded top-k bucket
 *    (finer histograms), top-p after a large top-k, all-greedy batches (the argmax kernel),
 *    more penalty entries than one launch holds (split launches on odd-vocabulary rows).
 *    Checks: greedy rows and rows without finite mass pick the very same id as the CPU, always.
 *    A sampled row picks the same id unless the pick is decided by a comparison that lies
 *    within EPS (relative) of its threshold: top-p's target against the rank-ordered cumulative
 *    mass at its cut, or u * total against the id-ordered cumulative mass at the drawn token.
 *    Both samplers compute bit-identical weights (engine/sampler_exp.h); they differ only in
 *    the order of their double sums, which moves a sum of n positive terms by at most
 *    n * 2^-53 relative (1.7e-11 at 152,064 tokens), so EPS = 1e-9 has 50x headroom and a real
 *    bug (an off-by-one cut, a wrong weight) lands far outside it. Such explained differences
 *    are counted and printed; any other difference fails. The logits buffer (with guards) must
 *    be unchanged, every id written and in range.
 * 2. Argument checks of kern_sample and gpu_sample_run.
 * 3. Timing at 152,064 tokens (bf16) for 1, 64 and 256 rows: CUDA events around the whole call
 *    (parameters up, kernel, ids back), median of 15 after 3 warm-ups, rotating over several
 *    logits sets so L2 does not serve them; the greedy read floor from a measured device copy;
 *    and the host path it replaces (logits widened, copied to the host, engine/sampler.c).
 * 4. End to end on the fixture models (tests/fixtures): all prompts decode together (5
 *    sequences, replayed as CUDA graphs padded to 8); each step runs forward_step (logits to
 *    the host, sampled by engine/sampler.c on copies of the generators), forward_step_sample,
 *    and forward_step again (the logits must repeat bit for bit). Greedy-only steps, then mixed
 *    seeded sampling with filters and penalties: the ids must match as in 1.
 * Exit 0 pass, 1 fail, 77 skip (no GPU). The seed is printed; TL_TEST_SEED=N repeats a run. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "fixture.h"
#include "forward.h"
#include "gpu_backend.h"
#include "gpu_harness.h"
#include "gpu_sample.h"
#include "kern.h"
#include "kern_matmul.h"
#include "kern_sample.h"
#include "kvcache.h"
#include "sampler.h"
#include "sampler_exp.h"

#define EPS          1e-9 /* relative margin that explains a differing draw (see above) */
#define MAX_HIST     640  /* history tokens a row may have (prompt + output) */
#define GATHER_CAP   8192 /* the kernel's largest sorted set, for the coverage counts */
#define BENCH_WARMUP 3
#define BENCH_REPS   15

static const float exp_tab[32] = SAMPLER_EXP_TABLE;

static int failures;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------- random rows and parameters ---------------- */

static float normal(void) {
    double a = 0.5 * ((double)frand() + 1.0), b = 0.5 * ((double)frand() + 1.0);
    return (float)(sqrt(-2.0 * log(1.0 - a)) * cos(2.0 * M_PI * b));
}

enum dist { D_NORMAL, D_QUANT, D_CONST, D_FEW, D_NEGINF, D_NAN, D_SPECIAL, D_COUNT };

/* One row of logits of distribution d (fp32, before rounding to the dtype). */
static void fill_row(float *x, int V, enum dist d) {
    static const float scales[] = {0.02f, 0.3f, 1.0f, 3.0f, 8.0f, 30.0f};
    const float s = scales[urand(6)];
    switch (d) {
    case D_NORMAL:
        for (int i = 0; i < V; i++) x[i] = s * normal();
        break;
    case D_QUANT: /* multiples of 0.25: runs of exactly equal weights */
        for (int i = 0; i < V; i++) x[i] = roundf(4.0f * s * normal()) * 0.25f;
        break;
    case D_CONST:
        for (int i = 0; i < V; i++) x[i] = 1.5f;
        break;
    case D_FEW: /* a few leaders over one long tie */
        for (int i = 0; i < V; i++) x[i] = -2.0f;
        for (int k = 0; k < 3; k++) x[urand((uint32_t)V)] = 1.0f + (float)k;
        break;
    case D_NEGINF:
        for (int i = 0; i < V; i++) x[i] = urand(10) < 3 ? -INFINITY : s * normal();
        break;
    case D_NAN:
        for (int i = 0; i < V; i++) x[i] = urand(100) < 2 ? NAN : s * normal();
        break;
    default: { /* special rows */
        int kind = (int)urand(8);
        for (int i = 0; i < V; i++) x[i] = normal();
        if (kind == 0)
            for (int i = 0; i < V; i++) x[i] = -INFINITY;
        if (kind == 1)
            for (int i = 0; i < V; i++) x[i] = NAN;
        if (kind == 2)
            for (int i = 0; i < V; i++) x[i] = urand(2) ? NAN : -INFINITY;
        if (kind == 3) x[urand((uint32_t)V)] = INFINITY;
        if (kind == 4) x[urand((uint32_t)V)] = INFINITY, x[urand((uint32_t)V)] = INFINITY;
        if (kind == 5) /* overflow to +inf at temperature < 1 (F32 rows only keep them) */
            for (int k = 0; k < 4; k++) x[urand((uint32_t)V)] = 3.0e38f - (float)k * 1e37f;
        if (kind == 6)
            for (int i = 0; i < V; i++) x[i] = urand(2) ? 0.0f : -0.0f;
        if (kind == 7) x[urand((uint32_t)V)] = -INFINITY, x[0] = NAN;
    }
    }
}

static void random_params(struct sampling_params *p, int V) {
    static const float temps[] = {0.3f, 0.7f, 1.0f, 1.0f, 1.5f, 2.5f};
    static const float min_ps[] = {0.01f, 0.05f, 0.3f, 1.0f};
    static const float top_ps[] = {1e-6f, 0.1f, 0.5f, 0.9f, 0.95f, 0.999f};
    sampling_params_default(p);
    p->temperature = urand(5) == 0 ? (urand(2) ? 0.0f : 1e-6f) : temps[urand(6)];
    if (urand(10) < 3) p->min_p = min_ps[urand(4)];
    if (urand(10) < 4) {
        const int ks[] = {1, 2, 5, 50, 1000, 9000, V - 1, V, V + 5};
        p->top_k = ks[urand(9)];
        if (p->top_k < 1) p->top_k = 1;
    }
    if (urand(10) < 4) p->top_p = top_ps[urand(6)];
    if (urand(10) < 3) {
        static const float reps[] = {1.0f, 1.3f, 0.7f}, freqs[] = {0.0f, 0.5f, -1.0f},
                           press[] = {0.0f, 0.4f, -0.7f};
        p->repetition_penalty = reps[urand(3)];
        p->frequency_penalty = freqs[urand(3)];
        p->presence_penalty = press[urand(3)];
    }
}

/* A history of n ids, some repeated, some outside the vocabulary. */
static void random_hist(int32_t *h, int n, int V) {
    for (int i = 0; i < n; i++)
        h[i] = i && urand(4) == 0 ? h[urand((uint32_t)i)] : (int32_t)urand((uint32_t)V + 20) - 10;
}

/* ---------------- the reference's view of a pick ---------------- */

struct cand {
    float w;
    int32_t id;
};

static int cmp_rank(const void *pa, const void *pb) {
    const struct cand *a = pa, *b = pb;
    if (a->w != b->w) return a->w > b->w ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

static int cmp_id(const void *pa, const void *pb) {
    const struct cand *a = pa, *b = pb;
    return (a->id > b->id) - (a->id < b->id);
}

/* What the reference learns about a row: how close its deciding comparisons came. */
struct pick_info {
    double margin; /* smallest relative distance of a deciding sum from its threshold */
    int sampled;   /* a draw happened (finite max, not greedy) */
    int topk_cut;  /* top-k removed candidates */
    int topp_cut;  /* top-p ran */
    int crowded;   /* a cut fell in a weight bucket of more than GATHER_CAP candidates */
    int tie_cut;   /* top-p's cut fell inside a run of more than GATHER_CAP equal weights */
};

/* x: the row after sampler_sample (penalised and divided by the temperature in place). A slow
 * full sort with sampler_exp.h's weights, as engine/sampler.c defines the pick. */
static struct pick_info reference(const float *x, int V, const struct sampling_params *p, double u,
                                  struct cand *c) {
    struct pick_info pi = {INFINITY, 0, 0, 0, 0, 0};
    if (sampler_is_greedy(p)) return pi;
    float m = -INFINITY;
    for (int i = 0; i < V; i++)
        if (x[i] > m) m = x[i];
    if (!(m > -INFINITY) || m == INFINITY) return pi;
    pi.sampled = 1;
    int n = 0;
    for (int i = 0; i < V; i++) {
        float w = sampler_weight_tab(x[i] - m, exp_tab);
        if (w > 0.0f && w >= p->min_p) c[n++] = (struct cand){w, i};
    }
    qsort(c, (size_t)n, sizeof *c, cmp_rank);
    /* bucket sizes around a cut, as the kernel buckets (key >> 19) */
#define BUCKET(w) (sampler_weight_key(w) >> 19)
    if (p->top_k > 0 && p->top_k < n) {
        const float wk = c[p->top_k - 1].w;
        int k = p->top_k, in_bucket = 0;
        while (k < n && c[k].w == wk) k++;
        for (int i = 0; i < n; i++) in_bucket += BUCKET(c[i].w) == BUCKET(wk);
        pi.topk_cut = k < n;
        pi.crowded |= in_bucket > GATHER_CAP;
        n = k;
    }
    if (p->top_p < 1.0f && n > 1) {
        double total = 0.0, s = 0.0, prev = 0.0;
        for (int i = 0; i < n; i++) total += c[i].w;
        const double target = (double)p->top_p * total;
        int j = n - 1;
        for (int i = 0; i < n; i++) {
            prev = s;
            s += c[i].w;
            if (s >= target) {
                j = i;
                break;
            }
        }
        const double mg = fmin(fabs(s - target), fabs(target - prev)) / total;
        pi.margin = fmin(pi.margin, mg);
        int in_bucket = 0, tie = 0;
        for (int i = 0; i < n; i++) {
            in_bucket += BUCKET(c[i].w) == BUCKET(c[j].w);
            tie += c[i].w == c[j].w;
        }
        pi.topp_cut = 1;
        pi.crowded |= in_bucket > GATHER_CAP;
        pi.tie_cut = tie > GATHER_CAP;
        n = j + 1;
    }
#undef BUCKET
    qsort(c, (size_t)n, sizeof *c, cmp_id);
    double total = 0.0, acc = 0.0, prev = 0.0;
    for (int i = 0; i < n; i++) total += c[i].w;
    const double target = u * total;
    for (int i = 0; i < n; i++) {
        prev = acc;
        acc += c[i].w;
        if (acc > target) break;
    }
    pi.margin = fmin(pi.margin, fmin(fabs(acc - target), fabs(target - prev)) / total);
    return pi;
}

/* ---------------- part 1: the sweep ---------------- */

enum mode {
    M_RANDOM,     /* everything random per row */
    M_GREEDY,     /* every row greedy (the argmax kernel), random penalties */
    M_CONST_TOPP, /* one 152k-token tie, top-p cuts inside it */
    M_CONST_TOPK, /* one tie, top-k inside it: crowded at every histogram level */
    M_FLAT_KP,    /* flat logits, top-k of 20000 then top-p: top-p over a cut histogram */
    M_PEN_HEAVY,  /* long histories: more penalty entries than one launch holds */
};

static const char *const mode_names[] = {"random",      "all greedy", "tie + top-p",
                                         "tie + top-k", "flat k+p",   "heavy penalties"};

struct scase {
    int vocab, rows;
    enum mode mode;
};

static const struct scase cases[] = {
    {1, 1, M_RANDOM},       {1, 7, M_RANDOM},          {2, 5, M_RANDOM},
    {7, 33, M_RANDOM},      {100, 64, M_RANDOM},       {1000, 3, M_RANDOM},
    {4097, 17, M_RANDOM},   {8191, 9, M_RANDOM},       {8193, 9, M_RANDOM},
    {32001, 64, M_RANDOM},  {65536, 8, M_RANDOM},      {152064, 1, M_RANDOM},
    {152064, 64, M_RANDOM}, {152064, 256, M_RANDOM},   {4097, 256, M_GREEDY},
    {152064, 64, M_GREEDY}, {152064, 4, M_CONST_TOPP}, {152064, 4, M_CONST_TOPK},
    {152064, 4, M_FLAT_KP}, {32001, 256, M_PEN_HEAVY},
};

struct row_setup {
    struct sampling_params sp;
    int32_t prompt[MAX_HIST], output[MAX_HIST];
    int n_prompt, n_output;
    struct sampler_rng rng;
};

static void setup_rows(const struct scase *c, struct row_setup *rs, float *base) {
    const int V = c->vocab;
    for (int r = 0; r < c->rows; r++) {
        struct row_setup *q = &rs[r];
        float *x = base + (size_t)r * V;
        random_params(&q->sp, V);
        q->n_prompt = (int)urand(300);
        q->n_output = (int)urand(100);
        enum dist d = (enum dist)urand(D_COUNT);
        switch (c->mode) {
        case M_RANDOM:
            break;
        case M_GREEDY:
            q->sp.temperature = 0.0f;
            break;
        case M_CONST_TOPP:
            d = D_CONST;
            sampling_params_default(&q->sp);
            q->sp.top_p = (const float[]){0.5f, 0.3f, 0.9f, 0.123f}[r % 4];
            q->n_prompt = q->n_output = 0;
            break;
        case M_CONST_TOPK:
            d = D_CONST;
            sampling_params_default(&q->sp);
            q->sp.top_k = (const int[]){1000, 1, 20000, 150000}[r % 4];
            q->sp.top_p = r % 2 ? 0.7f : 1.0f;
            q->n_prompt = q->n_output = 0;
            break;
        case M_FLAT_KP:
            sampling_params_default(&q->sp);
            q->sp.top_k = 20000;
            q->sp.top_p = 0.7f;
            q->sp.temperature = 0.8f;
            q->n_prompt = q->n_output = 0;
            for (int i = 0; i < V; i++) x[i] = 0.01f * normal();
            break;
        case M_PEN_HEAVY:
            q->sp.repetition_penalty = 1.2f;
            q->sp.frequency_penalty = 0.3f;
            q->n_prompt = 300;
            q->n_output = 300 + (int)urand(MAX_HIST - 600);
            break;
        }
        if (c->mode != M_FLAT_KP) fill_row(x, V, d);
        random_hist(q->prompt, q->n_prompt, V);
        random_hist(q->output, q->n_output, V);
        sampler_rng_seed(&q->rng, ((uint64_t)urand(1u << 30) << 20) ^ (uint64_t)r);
    }
}

struct tally {
    int rows, greedy, sampled, same, explained, topk, topp, crowded, tie;
};

static enum result run_case(const struct kern_ctx *ctx, const struct scase *c, enum tl_dtype dt,
                            struct tally *t) {
    const int V = c->vocab, n = c->rows;
    const size_t elems = (size_t)n * V, es = dtype_size(dt);
    float *base = malloc(elems * sizeof *base), *row = malloc((size_t)V * sizeof *row);
    struct row_setup *rs = calloc((size_t)n, sizeof *rs);
    struct op_sample_seq *seqs = calloc((size_t)n, sizeof *seqs);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    struct cand *cands = malloc((size_t)V * sizeof *cands);
    unsigned char *sent = malloc(elems * es);
    struct bufs bs = {.n = 0};
    struct gpu_sample *gs = NULL;
    struct sampler *host = NULL;
    void *ws = NULL;
    float *ovr = NULL;
    struct tl_err err = {{0}};
    enum result r = RES_PASS;
    enum tl_status st;
    if (!base || !row || !rs || !seqs || !ids || !cands || !sent) {
        fprintf(stderr, "    out of host memory\n");
        r = RES_FAIL;
        goto out;
    }
    setup_rows(c, rs, base);
    struct gbuf *lg = gbuf_new(ctx, &bs, "logits", elems * es);
    if (!lg) {
        r = RES_ERROR;
        goto out;
    }
    for (size_t i = 0; i < elems; i++) base[i] = gh_round(dt, base[i]);
    dtype_from_f32(dt, base, hdata(lg), elems);
    memcpy(sent, hdata(lg), elems * es);
    if (bufs_upload(ctx, &bs) != RES_PASS ||
        kern_alloc(ctx, gpu_sample_workspace_bytes(n, V, MAX_HIST), &ws) != TL_OK ||
        kern_alloc(ctx, elems * sizeof(float), (void **)&ovr) != TL_OK) {
        report_cuda(ctx, "setup", TL_ERR_CUDA);
        r = RES_ERROR;
        goto out;
    }
    if ((st = gpu_sample_create(ctx, n, V, MAX_HIST, ws, ovr, &gs, &err)) != TL_OK ||
        (st = sampler_create(V, &host, &err)) != TL_OK) {
        fprintf(stderr, "    create: %s\n", err.msg);
        r = RES_ERROR;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        struct row_setup *q = &rs[i];
        struct sampler_rng mirror = q->rng;
        seqs[i] = (struct op_sample_seq){
            &q->sp,    sampler_is_greedy(&q->sp) ? 0.0 : sampler_rng_uniform(&mirror),
            q->prompt, q->n_prompt,
            q->output, q->n_output};
        ids[i] = -7;
    }
    if ((st = gpu_sample_run(gs, dt, ddata(lg), n, seqs, ids, &err)) != TL_OK) {
        fprintf(stderr, "    gpu_sample_run: %s: %s\n", tl_status_str(st), err.msg);
        r = RES_ERROR;
        goto out;
    }
    if ((r = bufs_download_check(ctx, &bs)) != RES_PASS) goto out;
    if (memcmp(sent, hdata(lg), elems * es)) {
        fprintf(stderr, "    the logits changed\n");
        r = RES_FAIL;
    }
    for (int i = 0; i < n; i++) {
        struct row_setup *q = &rs[i];
        memcpy(row, base + (size_t)i * V, (size_t)V * sizeof *row);
        const int32_t want = sampler_sample(host, &q->sp, &q->rng, row, q->prompt, q->n_prompt,
                                            q->output, q->n_output);
        const struct pick_info pi = reference(row, V, &q->sp, seqs[i].u, cands);
        t->rows++;
        t->greedy += sampler_is_greedy(&q->sp);
        t->sampled += pi.sampled;
        t->topk += pi.topk_cut;
        t->topp += pi.topp_cut;
        t->crowded += pi.crowded;
        t->tie += pi.tie_cut;
        if (ids[i] == want) {
            t->same++;
            continue;
        }
        if (ids[i] >= 0 && ids[i] < V && pi.sampled && pi.margin < EPS) {
            t->explained++;
            printf("    row %d: gpu %d, cpu %d, a boundary %.2g (relative) away: explained\n", i,
                   ids[i], want, pi.margin);
            continue;
        }
        fprintf(stderr,
                "    row %d: gpu picked %d, cpu %d (temp %g min_p %g top_k %d top_p %g rep %g "
                "freq %g pres %g, %d+%d history, u %.17g); nearest boundary %.3g%s\n",
                i, ids[i], want, (double)q->sp.temperature, (double)q->sp.min_p, q->sp.top_k,
                (double)q->sp.top_p, (double)q->sp.repetition_penalty,
                (double)q->sp.frequency_penalty, (double)q->sp.presence_penalty, q->n_prompt,
                q->n_output, seqs[i].u, pi.margin, ids[i] == -7 ? " (id never written)" : "");
        r = RES_FAIL;
    }
out:
    gpu_sample_destroy(gs);
    sampler_destroy(host);
    kern_free(ctx, ws);
    kern_free(ctx, ovr);
    bufs_free(ctx, &bs);
    free(base);
    free(row);
    free(rs);
    free(seqs);
    free(ids);
    free(cands);
    free(sent);
    return r;
}

/* ---------------- part 2: argument checks ---------------- */

static enum result run_bad_args(const struct kern_ctx *ctx) {
    struct gpu_sample *gs = NULL;
    void *ws = NULL, *buf = NULL;
    struct tl_err err = {{0}};
    enum result r = RES_PASS;
    const int V = 1000;
    if (kern_alloc(ctx, gpu_sample_workspace_bytes(4, V, 64), &ws) != TL_OK ||
        kern_alloc(ctx, 4 * V * sizeof(float), &buf) != TL_OK ||
        gpu_sample_create(ctx, 4, V, 64, ws, buf, &gs, &err) != TL_OK) {
        fprintf(stderr, "    setup: %s %s\n", err.msg, kern_last_error(ctx));
        r = RES_ERROR;
        goto out;
    }
    struct kern_sample_row *rows = (struct kern_sample_row *)ws;
    int32_t *ids = (int32_t *)buf;
    struct sampling_params ok, bad_p, bad_t;
    sampling_params_default(&ok);
    bad_p = ok, bad_p.top_p = 0.0f;
    bad_t = ok, bad_t.temperature = NAN;
    int32_t tid[4];
    struct op_sample_seq s_ok = {&ok, 0.5, NULL, 0, NULL, 0}, s_p = {&bad_p, 0.5, NULL, 0, NULL, 0},
                         s_t = {&bad_t, 0.5, NULL, 0, NULL, 0}, s_u = {&ok, 1.0, NULL, 0, NULL, 0},
                         s_h = {&ok, 0.5, NULL, 3, NULL, 0};
    struct op_sample_seq five[5] = {s_ok, s_ok, s_ok, s_ok, s_ok};
    struct gh_status_check checks[] = {
        {"kern_sample dtype I32",
         kern_sample(ctx, TL_DTYPE_I32, buf, 1, V, rows, NULL, 0, 0, NULL, ids),
         TL_ERR_UNSUPPORTED},
        {"kern_sample n -1",
         kern_sample(ctx, TL_DTYPE_F32, buf, -1, V, rows, NULL, 0, 0, NULL, ids), TL_ERR_INVALID},
        {"kern_sample vocab 0",
         kern_sample(ctx, TL_DTYPE_F32, buf, 1, 0, rows, NULL, 0, 0, NULL, ids), TL_ERR_INVALID},
        {"kern_sample NULL logits",
         kern_sample(ctx, TL_DTYPE_F32, NULL, 1, V, rows, NULL, 0, 0, NULL, ids), TL_ERR_INVALID},
        {"kern_sample penalties without override",
         kern_sample(ctx, TL_DTYPE_F32, buf, 1, V, rows, NULL, 1, 0, NULL, ids), TL_ERR_INVALID},
        {"kern_sample misaligned ids",
         kern_sample(ctx, TL_DTYPE_F32, buf, 1, V, rows, NULL, 0, 0, NULL,
                     (int32_t *)((char *)ids + 1)),
         TL_ERR_INVALID},
        {"gpu_sample_run top_p 0", gpu_sample_run(gs, TL_DTYPE_F32, buf, 1, &s_p, tid, &err),
         TL_ERR_INVALID},
        {"gpu_sample_run temperature NaN",
         gpu_sample_run(gs, TL_DTYPE_F32, buf, 1, &s_t, tid, &err), TL_ERR_INVALID},
        {"gpu_sample_run u 1", gpu_sample_run(gs, TL_DTYPE_F32, buf, 1, &s_u, tid, &err),
         TL_ERR_INVALID},
        {"gpu_sample_run NULL history", gpu_sample_run(gs, TL_DTYPE_F32, buf, 1, &s_h, tid, &err),
         TL_ERR_INVALID},
        {"gpu_sample_run 5 rows of 4", gpu_sample_run(gs, TL_DTYPE_F32, buf, 5, five, tid, &err),
         TL_ERR_INVALID},
    };
    r = gh_check_statuses(ctx, checks, sizeof checks / sizeof checks[0]);
    if (!strstr(err.msg, "5 rows")) {
        fprintf(stderr, "    gpu_sample_run's message does not say why: '%s'\n", err.msg);
        if (r == RES_PASS) r = RES_FAIL;
    }
out:
    gpu_sample_destroy(gs);
    kern_free(ctx, ws);
    kern_free(ctx, buf);
    return r;
}

/* ---------------- part 3: timing ---------------- */

static bool cuda_ok(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return true;
    fprintf(stderr, "    %s: %s (%s)\n", what, cudaGetErrorName(e), cudaGetErrorString(e));
    return false;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median ms of a device-to-device copy of bytes: the read+write ceiling. < 0 on failure. */
static double bench_copy(const struct kern_ctx *ctx, size_t bytes) {
    cudaStream_t stream = (cudaStream_t)kern_ctx_stream(ctx);
    void *src = NULL, *dst = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    double ms[BENCH_REPS], med = -1;
    if (kern_alloc(ctx, bytes, &src) != TL_OK || kern_alloc(ctx, bytes, &dst) != TL_OK ||
        !cuda_ok(cudaEventCreate(&e0), "cudaEventCreate") ||
        !cuda_ok(cudaEventCreate(&e1), "cudaEventCreate") ||
        !cuda_ok(cudaMemsetAsync(src, 0x3c, bytes, stream), "cudaMemsetAsync"))
        goto out;
    for (int i = 0; i < BENCH_WARMUP + BENCH_REPS; i++) {
        float f;
        if (!cuda_ok(cudaEventRecord(e0, stream), "cudaEventRecord") ||
            !cuda_ok(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream),
                     "cudaMemcpyAsync") ||
            !cuda_ok(cudaEventRecord(e1, stream), "cudaEventRecord") ||
            !cuda_ok(cudaEventSynchronize(e1), "cudaEventSynchronize") ||
            !cuda_ok(cudaEventElapsedTime(&f, e0, e1), "cudaEventElapsedTime"))
            goto out;
        if (i >= BENCH_WARMUP) ms[i - BENCH_WARMUP] = f;
    }
    qsort(ms, BENCH_REPS, sizeof ms[0], cmp_double);
    med = ms[BENCH_REPS / 2];
out:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    kern_free(ctx, src);
    kern_free(ctx, dst);
    return med;
}

struct bench_cfg {
    const char *name;
    float temperature, top_p;
    int top_k, penalties;
};

static const struct bench_cfg bench_cfgs[] = {
    {"greedy", 0.0f, 1.0f, 0, 0},
    {"T 0.7", 0.7f, 1.0f, 0, 0},
    {"T 0.7, top_p 0.9", 0.7f, 0.9f, 0, 0},
    {"T 0.7, top_k 50, top_p 0.95", 0.7f, 0.95f, 50, 0},
    {"T 0.7, top_p 0.9, penalties", 0.7f, 0.9f, 0, 1},
};

/* Times gpu_sample_run over n rows of V bf16 logits (realistic: N(0, 2.5) with a few strong
 * leaders) for each configuration; prints one table row per configuration. */
static enum result run_timing(const struct kern_ctx *ctx, int n, double copy_gbs) {
    enum { V = 152064, SETS = 4 };
    const size_t elems = (size_t)n * V;
    const int sets = n >= 256 ? 2 : SETS; /* rotate so L2 (50 MB) does not serve the rows */
    float *f32 = malloc(elems * sizeof *f32);
    uint16_t *raw = malloc(elems * 2);
    void *lg[SETS] = {NULL}, *ws = NULL;
    float *ovr = NULL;
    struct gpu_sample *gs = NULL;
    struct sampler *host = NULL;
    struct sampling_params *sp = calloc((size_t)n, sizeof *sp);
    struct op_sample_seq *seqs = calloc((size_t)n, sizeof *seqs);
    int32_t *ids = malloc((size_t)n * sizeof *ids), hist[512];
    cudaStream_t stream = (cudaStream_t)kern_ctx_stream(ctx);
    cudaEvent_t e0 = NULL, e1 = NULL;
    struct tl_err err = {{0}};
    enum result r = RES_PASS;
    if (!f32 || !raw || !sp || !seqs || !ids) {
        r = RES_FAIL;
        goto out;
    }
    random_hist(hist, 512, V);
    for (int s = 0; s < sets; s++) {
        for (size_t i = 0; i < elems; i++) f32[i] = 2.5f * normal();
        for (int q = 0; q < n; q++)
            for (int k = 0; k < 4; k++) f32[(size_t)q * V + urand(V)] = 12.0f + (float)k;
        dtype_from_f32(TL_DTYPE_BF16, f32, raw, elems);
        if (kern_alloc(ctx, elems * 2, &lg[s]) != TL_OK ||
            kern_upload(ctx, lg[s], raw, elems * 2) != TL_OK || kern_sync(ctx) != TL_OK) {
            r = RES_ERROR;
            goto out;
        }
    }
    if (kern_alloc(ctx, gpu_sample_workspace_bytes(n, V, 1024), &ws) != TL_OK ||
        kern_alloc(ctx, elems * sizeof(float), (void **)&ovr) != TL_OK ||
        gpu_sample_create(ctx, n, V, 1024, ws, ovr, &gs, &err) != TL_OK ||
        sampler_create(V, &host, &err) != TL_OK || !cuda_ok(cudaEventCreate(&e0), "event") ||
        !cuda_ok(cudaEventCreate(&e1), "event")) {
        fprintf(stderr, "    timing setup: %s %s\n", err.msg, kern_last_error(ctx));
        r = RES_ERROR;
        goto out;
    }
    const double floor_us = (double)elems * 2 / (copy_gbs * 1e9) * 1e6;
    for (size_t ci = 0; ci < sizeof bench_cfgs / sizeof bench_cfgs[0]; ci++) {
        const struct bench_cfg *bc = &bench_cfgs[ci];
        for (int q = 0; q < n; q++) {
            sampling_params_default(&sp[q]);
            sp[q].temperature = bc->temperature;
            sp[q].top_p = bc->top_p;
            sp[q].top_k = bc->top_k;
            if (bc->penalties) {
                sp[q].repetition_penalty = 1.1f;
                sp[q].frequency_penalty = 0.3f;
            }
            seqs[q] = (struct op_sample_seq){&sp[q],     0.37 + 0.5 * q / n,
                                             hist,       bc->penalties ? 256 : 0,
                                             hist + 256, bc->penalties ? 256 : 0};
        }
        double ev[BENCH_REPS], wall[BENCH_REPS];
        for (int i = 0; i < BENCH_WARMUP + BENCH_REPS; i++) {
            float ms;
            double t0 = now_s();
            if (!cuda_ok(cudaEventRecord(e0, stream), "cudaEventRecord") ||
                gpu_sample_run(gs, TL_DTYPE_BF16, lg[i % sets], n, seqs, ids, &err) != TL_OK ||
                !cuda_ok(cudaEventRecord(e1, stream), "cudaEventRecord") ||
                !cuda_ok(cudaEventSynchronize(e1), "cudaEventSynchronize") ||
                !cuda_ok(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime")) {
                fprintf(stderr, "    timing: %s\n", err.msg);
                r = RES_ERROR;
                goto out;
            }
            if (i >= BENCH_WARMUP)
                ev[i - BENCH_WARMUP] = 1e3 * ms, wall[i - BENCH_WARMUP] = 1e6 * (now_s() - t0);
        }
        qsort(ev, BENCH_REPS, sizeof ev[0], cmp_double);
        qsort(wall, BENCH_REPS, sizeof wall[0], cmp_double);
        printf("  %4d rows  %-30s %9.1f us %9.1f us", n, bc->name, ev[BENCH_REPS / 2],
               wall[BENCH_REPS / 2]);
        if (ci == 0)
            printf("   read floor %.1f us (%.2f of it)", floor_us, floor_us / ev[BENCH_REPS / 2]);
        printf("\n");
    }
    /* the host path it replaces, for "T 0.7, top_p 0.9": widen, copy, sample on one thread */
    {
        float *host_logits = f32; /* reuse: n * V floats */
        float *dev32 = ovr;       /* (n, V) fp32 scratch */
        for (int q = 0; q < n; q++) {
            sampling_params_default(&sp[q]);
            sp[q].temperature = 0.7f;
            sp[q].top_p = 0.9f;
        }
        struct sampler_rng rng;
        sampler_rng_seed(&rng, 1);
        double t0 = now_s();
        if (kern_to_f32(ctx, TL_DTYPE_BF16, lg[0], elems, dev32) != TL_OK ||
            kern_download(ctx, host_logits, dev32, elems * sizeof(float)) != TL_OK ||
            kern_sync(ctx) != TL_OK) {
            r = RES_ERROR;
            goto out;
        }
        double t1 = now_s();
        for (int q = 0; q < n; q++)
            ids[q] =
                sampler_sample(host, &sp[q], &rng, host_logits + (size_t)q * V, NULL, 0, NULL, 0);
        double t2 = now_s();
        printf("  %4d rows  %-30s %9.1f us (copy %.1f + host sampler %.1f), one run\n", n,
               "host path, T 0.7, top_p 0.9", 1e6 * (t2 - t0), 1e6 * (t1 - t0), 1e6 * (t2 - t1));
    }
out:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    gpu_sample_destroy(gs);
    sampler_destroy(host);
    for (int s = 0; s < SETS; s++) kern_free(ctx, lg[s]);
    kern_free(ctx, ws);
    kern_free(ctx, ovr);
    free(f32);
    free(raw);
    free(sp);
    free(seqs);
    free(ids);
    return r;
}

/* ---------------- part 4: end to end on the fixtures ---------------- */

#define E2E_STEPS 24

struct e2e {
    struct ops ops;
    const struct model *m;
    struct kvcache *kv;
    struct forward *fw;
    int32_t pad;
};

static void e2e_close(struct e2e *e) {
    if (e->fw && e->pad >= 0) forward_set_pad_block(e->fw, -1);
    if (e->kv && e->pad >= 0) kvcache_unref(e->kv, e->pad);
    forward_destroy(e->fw);
    kvcache_destroy(e->kv);
    if (e->ops.ctx) gpu_backend_destroy(&e->ops);
}

static int e2e_open(struct e2e *e, const struct model *host, int seqs) {
    struct tl_err err = {{0}};
    struct gpu_backend_opts go = {.device = 0,
                                  .gpu_memory_utilization = 0.9,
                                  .gpu_memory_gb = 2,
                                  .dtype = TL_DTYPE_COUNT,
                                  .block_size = 16,
                                  .max_model_len = 256,
                                  .max_tokens = 256,
                                  .max_seqs = seqs,
                                  .num_blocks_override = 128};
    struct gpu_plan plan;
    memset(e, 0, sizeof *e);
    e->pad = -1;
    if (gpu_backend_create(host, &go, &e->ops, &e->m, &plan, &err) != TL_OK ||
        kvcache_create(128, 16, &e->kv, &err) != TL_OK ||
        forward_create(e->m, &e->ops, 256, seqs, &e->fw, &err) != TL_OK ||
        kvcache_alloc(e->kv, &e->pad) != TL_OK) {
        fprintf(stderr, "FAIL: e2e engine: %s\n", err.msg);
        failures++;
        return -1;
    }
    forward_set_pad_block(e->fw, e->pad); /* decode steps replay padded graphs */
    return 0;
}

/* Decodes every prompt of a fixture together for E2E_STEPS steps; mixed = 0: all greedy, 1:
 * per-prompt seeded sampling with filters and penalties (a third of them greedy). */
static void e2e_model(const char *name, int mixed) {
    struct fixture fx;
    if (fixture_open(name, &fx) != 0) {
        failures++;
        return;
    }
    const int V = fx.m->cfg.vocab_size, np = fx.n_prompts;
    struct e2e e = {.pad = -1};
    struct sampler *host = NULL;
    struct tl_err err = {{0}};
    float *la = malloc((size_t)np * V * sizeof(float)),
          *lb = malloc((size_t)np * V * sizeof(float));
    struct cand *cands = malloc((size_t)V * sizeof *cands);
    struct kv_seq kv[FIXTURE_MAX_PROMPTS] = {{0}};
    struct sampling_params sp[FIXTURE_MAX_PROMPTS];
    struct sampler_rng rng[FIXTURE_MAX_PROMPTS];
    int32_t out[FIXTURE_MAX_PROMPTS][E2E_STEPS], tokens[FIXTURE_MAX_PROMPTS * FIXTURE_MAX_LEN],
        pos[FIXTURE_MAX_PROMPTS * FIXTURE_MAX_LEN];
    int same = 0, explained = 0, n_out = 0;
    if (!la || !lb || !cands || e2e_open(&e, fx.m, np) != 0 ||
        sampler_create(V, &host, &err) != TL_OK)
        goto done;
    for (int p = 0; p < np; p++) {
        sampling_params_default(&sp[p]);
        if (!mixed || p % 3 == 0) sp[p].temperature = 0.0f;
        if (mixed && p % 3 != 0) sp[p].temperature = 0.6f + 0.3f * (float)p;
        if (mixed && p % 2) sp[p].top_p = 0.8f;
        if (mixed && p % 4 == 1) sp[p].top_k = 20;
        if (mixed && p % 4 == 2) sp[p].min_p = 0.02f;
        if (mixed && p % 2 == 0) sp[p].repetition_penalty = 1.3f, sp[p].presence_penalty = 0.5f;
        sampler_rng_seed(&rng[p], 42 + (uint64_t)p);
    }
    for (int step = 0; step < E2E_STEPS; step++) {
        struct fwd_seq fs[FIXTURE_MAX_PROMPTS];
        struct fwd_sample smp[FIXTURE_MAX_PROMPTS];
        int nt = 0;
        for (int p = 0; p < np; p++) {
            int n_new = step ? 1 : fx.prompt_len[p], past = step ? fx.prompt_len[p] + n_out - 1 : 0;
            for (int i = 0; i < n_new; i++, nt++) {
                tokens[nt] = step ? out[p][n_out - 1] : fx.prompts[p][i];
                pos[nt] = past + i;
            }
            if (kvcache_seq_reserve(e.kv, &kv[p], past + n_new, &err) != TL_OK) {
                fprintf(stderr, "FAIL: %s: %s\n", name, err.msg);
                failures++;
                goto done;
            }
            fs[p] = (struct fwd_seq){n_new, past, kv[p].blocks, kv[p].n_blocks, 1};
            smp[p] = (struct fwd_sample){&sp[p],           &rng[p], fx.prompts[p],
                                         fx.prompt_len[p], out[p],  n_out};
        }
        struct fwd_batch b = {np, fs, nt, tokens, pos};
        int32_t got[FIXTURE_MAX_PROMPTS];
        struct sampler_rng mirror[FIXTURE_MAX_PROMPTS];
        memcpy(mirror, rng, sizeof rng);
        if (forward_step(e.fw, &b, la, &err) != TL_OK ||
            forward_step_sample(e.fw, &b, smp, NULL, got, &err) != TL_OK ||
            forward_step(e.fw, &b, lb, &err) != TL_OK) {
            fprintf(stderr, "FAIL: %s step %d: %s\n", name, step, err.msg);
            failures++;
            goto done;
        }
        CHECK(!memcmp(la, lb, (size_t)np * V * sizeof(float)),
              "%s step %d: the forward's logits differ between two runs of the same step", name,
              step);
        for (int p = 0; p < np; p++) {
            float *row = la + (size_t)p * V;
            struct sampler_rng before = mirror[p];
            int32_t want = sampler_sample(host, &sp[p], &mirror[p], row, fx.prompts[p],
                                          fx.prompt_len[p], out[p], n_out);
            double u = sampler_is_greedy(&sp[p]) ? 0.0 : sampler_rng_uniform(&before);
            struct pick_info pi = reference(row, V, &sp[p], u, cands);
            if (got[p] == want) {
                same++;
            } else if (pi.sampled && pi.margin < EPS) {
                explained++;
            } else {
                fprintf(stderr,
                        "FAIL: %s %s step %d prompt %d: forward_step_sample picked %d, "
                        "forward_step + host sampler %d (boundary %.3g away)\n",
                        name, mixed ? "mixed" : "greedy", step, p, got[p], want, pi.margin);
                failures++;
            }
            out[p][n_out] = got[p];
        }
        CHECK(!memcmp(rng, mirror, sizeof rng),
              "%s step %d: forward_step_sample advanced the generators differently", name, step);
        n_out++;
    }
    printf("  %-16s %-6s %d picks as the host sampler picks them, %d explained\n", name,
           mixed ? "mixed" : "greedy", same, explained);
done:
    for (int p = 0; p < np; p++) kvcache_seq_release(e.kv, &kv[p]);
    e2e_close(&e);
    sampler_destroy(host);
    free(la);
    free(lb);
    free(cands);
    fixture_close(&fx);
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

    /* 1 */
    const enum tl_dtype dts[] = {TL_DTYPE_F32, TL_DTYPE_F16, TL_DTYPE_BF16};
    struct tally all = {0};
    enum result r = RES_PASS;
    int n_run = 0, n_fail = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0] && r != RES_ERROR; ci++) {
        for (int d = 0; d < 3 && r != RES_ERROR; d++) {
            struct tally t = {0};
            r = run_case(ctx, &cases[ci], dts[d], &t);
            n_run++;
            n_fail += r != RES_PASS;
            printf("vocab %-6d rows %-3d %-4s %-15s %3d greedy %3d sampled: %3d identical, %d "
                   "explained  %s\n",
                   cases[ci].vocab, cases[ci].rows, dtype_name(dts[d]), mode_names[cases[ci].mode],
                   t.greedy, t.sampled, t.same, t.explained, result_str(r));
            all.rows += t.rows, all.greedy += t.greedy, all.sampled += t.sampled;
            all.same += t.same, all.explained += t.explained, all.topk += t.topk;
            all.topp += t.topp, all.crowded += t.crowded, all.tie += t.tie;
        }
    }
    printf("sweep: %d rows (%d greedy, %d sampled; top-k cut %d, top-p %d, cut in a bucket of "
           "> %d %d, top-p inside a tie of > %d %d): %d identical, %d differ within %.0e of a "
           "boundary\n",
           all.rows, all.greedy, all.sampled, all.topk, all.topp, GATHER_CAP, all.crowded,
           GATHER_CAP, all.tie, all.same, all.explained, EPS);

    /* 2 */
    if (r != RES_ERROR) {
        r = run_bad_args(ctx);
        n_run++;
        n_fail += r != RES_PASS;
        printf("argument checks  %s\n", result_str(r));
    }

    /* 3 */
    if (r != RES_ERROR) {
        double ms = bench_copy(ctx, (size_t)1 << 30);
        double copy_gbs = ms > 0 ? 2.0 * (double)(1 << 30) / (ms * 1e-3) / 1e9 : 0;
        printf("timing at vocab 152064, bf16 (device copy %.0f GB/s read+write; events around "
               "params up + kernel + ids back, and wall):\n",
               copy_gbs);
        const int rows[] = {1, 64, 256};
        for (int i = 0; i < 3 && r != RES_ERROR && copy_gbs > 0; i++) {
            enum result tr = run_timing(ctx, rows[i], copy_gbs);
            if (tr != RES_PASS) r = tr, n_fail++;
        }
    }
    kern_ctx_destroy(ctx);

    /* 4 */
    if (r != RES_ERROR) {
        const char *names[] = {"qwen2-bf16", "qwen2-f16", "llama3-f32", "llama-tied-bf16"};
        int before = failures;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            e2e_model(names[i], 0);
            e2e_model(names[i], 1);
        }
        n_run++;
        n_fail += failures != before;
        printf("end to end: forward_step_sample against forward_step + host sampler  %s\n",
               failures != before ? "FAIL" : "ok");
    }
    if (r == RES_ERROR) printf("stopped at the first CUDA error\n");
    n_fail += failures && !n_fail;
    printf("test_gpu_sample: %d of %d checks passed\n", n_run - n_fail, n_run);
    return n_fail ? 1 : 0;
}
