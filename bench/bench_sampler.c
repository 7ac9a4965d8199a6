/* bench_sampler: what sampling costs on the host, at Qwen2's vocabulary (152064).
 *   1. One row, one thread (sampler_sample): ns per logit for greedy, temperature 1, top-p 0.9,
 *      top-k 50, and temperature 0.7 + top-k 50 + top-p 0.95 + min-p 0.05 with repetition /
 *      presence / frequency penalties over 1024 prompt + 256 output tokens. Rows are N(0, 3)
 *      logits ("peaked": an LM's tail, top-p keeps few) and N(0, 1) ("flat": top-p keeps most);
 *      the median of 21 calls in thread CPU time, the row copied in outside the clock.
 *   2. The CPU backend's sample op (rows in parallel on its pool) at batch 1, 16, 64: ms per
 *      step (wall, median of 21) and the per-logit cost of one thread it implies (time * threads
 *      busy / logits). Wall time: on a host shared with other work it counts their share too.
 * offload/stepmodel.c's HOST_SAMPLE_S_PER_LOGIT comes from part 1.
 * Usage: bench_sampler [--threads N] (0 = one per physical core, the default) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "sampler.h"
#ifndef BENCH_SERIAL_ONLY
#include "cpu_ops.h"
#endif

#define VOCAB 152064

static uint64_t data_state = 0x2545f4914f6cdd1dULL;

static double data_uniform(void) {
    data_state ^= data_state << 13;
    data_state ^= data_state >> 7;
    data_state ^= data_state << 17;
    return (double)(data_state >> 11) * 0x1.0p-53;
}

/* Irwin-Hall: the sum of 12 uniforms less 6 is N(0, 1) closely enough for logits. */
static void fill(float *x, int n, float sd) {
    for (int i = 0; i < n; i++) {
        double s = -6.0;
        for (int j = 0; j < 12; j++) s += data_uniform();
        x[i] = (float)(s * sd);
    }
}

/* Part 1 counts this thread's CPU time: on a shared host a preempted call would count the
 * other tenants' work. */
static double thread_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct cfg {
    const char *name;
    struct sampling_params sp;
    bool penalties;
};

static int make_cfgs(struct cfg *c) {
    int n = 0;
    for (int i = 0; i < 5; i++) sampling_params_default(&c[i].sp);
    c[n].name = "greedy", c[n++].sp.temperature = 0.0f;
    c[n++].name = "temperature 1";
    c[n].name = "top-p 0.9", c[n++].sp.top_p = 0.9f;
    c[n].name = "top-k 50", c[n++].sp.top_k = 50;
    c[n].name = "T0.7 k50 p0.95 minp0.05 +pen";
    c[n].sp = (struct sampling_params){.temperature = 0.7f,
                                       .top_k = 50,
                                       .top_p = 0.95f,
                                       .min_p = 0.05f,
                                       .repetition_penalty = 1.1f,
                                       .presence_penalty = 0.3f,
                                       .frequency_penalty = 0.2f};
    c[n++].penalties = true;
    return n;
}

int main(int argc, char **argv) {
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_sampler [--threads N]\n");
            return 2;
        }
    }
    enum { CALLS = 21, ROWS = 64 };
    float *rows[2], *x = malloc(VOCAB * sizeof *x);
    int32_t hist[1280];
    for (int i = 0; i < 1280; i++) hist[i] = (int32_t)(data_uniform() * VOCAB);
    const char *shape[2] = {"peaked", "flat"};
    for (int s = 0; s < 2; s++) {
        rows[s] = malloc((size_t)ROWS * VOCAB * sizeof *rows[s]);
        if (!rows[s] || !x) return 1;
        for (int r = 0; r < ROWS; r++) fill(rows[s] + (size_t)r * VOCAB, VOCAB, s ? 1.0f : 3.0f);
    }
    struct cfg cfg[5];
    const int n_cfg = make_cfgs(cfg);
    struct sampler *smp;
    struct tl_err err;
    if (sampler_create(VOCAB, &smp, &err) != TL_OK) return 1;
    printf("one row, one thread (sampler_sample), vocab %d: ns per logit, median of %d\n", VOCAB,
           CALLS);
    printf("  %-30s %8s %8s\n", "", shape[0], shape[1]);
    for (int c = 0; c < n_cfg; c++) {
        printf("  %-30s", cfg[c].name);
        for (int s = 0; s < 2; s++) {
            double t[CALLS];
            struct sampler_rng rng;
            sampler_rng_seed(&rng, 7);
            for (int k = 0; k < CALLS; k++) {
                memcpy(x, rows[s] + (size_t)(k % ROWS) * VOCAB, VOCAB * sizeof *x);
                const double t0 = thread_s();
                const int32_t id =
                    sampler_sample(smp, &cfg[c].sp, &rng, x, hist, cfg[c].penalties ? 1024 : 0,
                                   hist + 1024, cfg[c].penalties ? 256 : 0);
                t[k] = thread_s() - t0;
                if (id < 0 || id >= VOCAB) return 1;
            }
            qsort(t, CALLS, sizeof *t, cmp_d);
            printf(" %8.2f", 1e9 * t[CALLS / 2] / VOCAB);
        }
        printf("\n");
    }
    sampler_destroy(smp);
#ifndef BENCH_SERIAL_ONLY
    struct config mc = {.vocab_size = VOCAB,
                        .hidden_size = 64,
                        .intermediate_size = 128,
                        .n_layers = 1,
                        .n_heads = 2,
                        .n_kv_heads = 1,
                        .head_dim = 32,
                        .max_position_embeddings = 64,
                        .rms_norm_eps = 1e-6f,
                        .rope_theta = 10000.0,
                        .dtype = TL_DTYPE_F32};
    struct cpu_backend_opts bo = {
        .n_threads = threads, .pin = true, .num_blocks = 1, .block_size = 16, .max_ctx = 16};
    struct ops o;
    if (cpu_backend_create(&mc, &bo, &o, &err) != TL_OK) {
        fprintf(stderr, "backend: %s\n", err.msg);
        return 1;
    }
    const int nt = pool_size(cpu_backend_pool(&o));
    float *logits = malloc((size_t)ROWS * VOCAB * sizeof *logits);
    struct op_sample_seq seqs[ROWS];
    int32_t ids[ROWS];
    if (!logits) return 1;
    printf("\nthe CPU backend's sample op, %d threads, flat rows: ms per step (per-logit cost of "
           "one thread)\n",
           nt);
    printf("  %-30s %16s %16s %16s\n", "", "batch 1", "batch 16", "batch 64");
    for (int c = 0; c < n_cfg; c++) {
        printf("  %-30s", cfg[c].name);
        for (int bi = 0; bi < 3; bi++) {
            const int b = bi == 0 ? 1 : bi == 1 ? 16 : 64;
            for (int r = 0; r < b; r++)
                seqs[r] = (struct op_sample_seq){.sp = &cfg[c].sp,
                                                 .u = data_uniform(),
                                                 .prompt = hist,
                                                 .n_prompt = cfg[c].penalties ? 1024 : 0,
                                                 .output = hist + 1024,
                                                 .n_output = cfg[c].penalties ? 256 : 0};
            memcpy(logits, rows[1], (size_t)b * VOCAB * sizeof *logits);
            double t[CALLS];
            for (int k = 0; k < CALLS; k++) {
                const double t0 = tl_now_s();
                if (o.sample(o.ctx, logits, b, VOCAB, seqs, ids) != TL_OK) return 1;
                t[k] = tl_now_s() - t0;
            }
            qsort(t, CALLS, sizeof *t, cmp_d);
            const int busy = b < nt ? b : nt;
            printf("  %6.2f (%5.2f ns)", 1e3 * t[CALLS / 2],
                   1e9 * t[CALLS / 2] * busy / ((double)b * VOCAB));
        }
        printf("\n");
    }
    free(logits);
    cpu_backend_destroy(&o);
#else
    (void)threads;
#endif
    for (int s = 0; s < 2; s++) free(rows[s]);
    free(x);
    return 0;
}
