/* test_cpu_sample: the CPU backend's sample op draws exactly the ids the serial sampler draws
 * (sampler_sample on copies of the generators), on random rows with mixed per-row parameters,
 * at several thread counts, and leaves the logits as they were; and the sampler's AVX2 passes
 * pick exactly what its portable loops pick (sampler_portable: engine/sampler.c built with
 * SAMPLER_PORTABLE under renamed symbols). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu_ops.h"
#include "sampler.h"

/* the portable build of engine/sampler.c (see tests/CMakeLists.txt) */
enum tl_status portable_sampler_create(int vocab_size, struct sampler **out, struct tl_err *err);
void portable_sampler_destroy(struct sampler *s);
int32_t portable_sampler_sample_u(struct sampler *s, const struct sampling_params *p, double u,
                                  float *logits, const int32_t *prompt, int n_prompt,
                                  const int32_t *output, int n_output);

static uint64_t data_state = 0x9e3779b97f4a7c15ULL;

static uint64_t data_next(void) { /* xorshift64: test data only */
    data_state ^= data_state << 13;
    data_state ^= data_state >> 7;
    data_state ^= data_state << 17;
    return data_state;
}

static double data_uniform(void) {
    return (double)(data_next() >> 11) * 0x1.0p-53;
}

static float data_normal(void) {
    double a = data_uniform() + 1e-300, b = data_uniform();
    return (float)(sqrt(-2.0 * log(a)) * cos(6.283185307179586 * b));
}

enum { HIST = 300 };

/* One row: logits of a random shape (flat, peaked, ties, -inf / NaN holes, +inf, +-0) and
 * random parameters that mix every filter and penalty. */
struct row {
    struct sampling_params sp;
    uint64_t seed;
    int32_t hist[HIST]; /* prompt then output; a few ids outside the vocabulary */
    int n_prompt, n_output;
};

static void make_row(float *x, int vocab, struct row *r) {
    const int kind = (int)(data_next() % 6);
    const float scale = (float)(0.2 + 5.0 * data_uniform());
    for (int i = 0; i < vocab; i++)
        x[i] = kind == 0   ? (float)(data_next() % 3)           /* many ties */
               : kind == 1 ? (float)(int)(data_normal() * 2.0f) /* ties across the tail */
                           : data_normal() * scale;
    if (kind == 2)
        for (int i = 0; i < vocab / 40 + 1; i++)
            x[data_next() % (uint64_t)vocab] = (data_next() & 1) ? -INFINITY : NAN;
    if (kind == 3)
        for (int i = 0; i < vocab; i++) x[i] = (data_next() % 7 ? -0.0f : 0.0f) - 90.0f * (i & 1);
    if (kind == 4 && data_next() % 3 == 0) x[data_next() % (uint64_t)vocab] = INFINITY;
    struct sampling_params *p = &r->sp;
    sampling_params_default(p);
    p->has_seed = true;
    p->seed = r->seed = data_next();
    r->n_prompt = r->n_output = 0;
    if (data_next() % 4 == 0) {
        /* near-uniform rows, no filters: the draw's boundaries are densest, so the token is the
         * most sensitive to the uniform and the sums' order */
        for (int i = 0; i < vocab; i++) x[i] = 0.3f * data_normal();
        return;
    }
    if (data_next() % 6 == 0)
        p->temperature = 0.0f;
    else if (data_next() % 3)
        p->temperature = (float)(0.05 + 2.0 * data_uniform());
    if (data_next() % 2)
        p->top_k = 1 + (int)(data_next() % (data_next() % 2 ? 60u : (uint64_t)vocab + 5));
    if (data_next() % 2) p->top_p = (float)(0.01 + 0.99 * data_uniform());
    if (data_next() % 3 == 0) p->min_p = (float)(0.3 * data_uniform());
    if (data_next() % 2) {
        p->repetition_penalty = (float)(0.5 + data_uniform());
        p->presence_penalty = (float)(4.0 * data_uniform() - 2.0);
        p->frequency_penalty = (float)(4.0 * data_uniform() - 2.0);
        r->n_prompt = (int)(data_next() % (HIST / 2));
        r->n_output = (int)(data_next() % (HIST / 2));
        for (int i = 0; i < r->n_prompt + r->n_output; i++)
            r->hist[i] = (int32_t)(data_next() % (uint64_t)(vocab + 2)) - 1;
    }
    struct tl_err err;
    assert_int_equal(sampling_params_validate(p, &err), TL_OK);
}

static void open_backend(int vocab, int threads, struct ops *o) {
    struct config c = {.vocab_size = vocab,
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
        .n_threads = threads, .pin = false, .num_blocks = 1, .block_size = 16, .max_ctx = 16};
    struct tl_err err;
    if (cpu_backend_create(&c, &bo, o, &err) != TL_OK) fail_msg("backend: %s", err.msg);
    assert_non_null(o->sample);
}

/* n rows of one vocabulary through the op of o, against the serial sampler. */
static void check_op(const struct ops *o, int vocab, int n) {
    float *x = malloc((size_t)n * vocab * sizeof *x), *keep = malloc((size_t)n * vocab * sizeof *x);
    float *row = malloc((size_t)vocab * sizeof *row);
    struct row *rows = malloc((size_t)n * sizeof *rows);
    struct op_sample_seq *seqs = malloc((size_t)n * sizeof *seqs);
    int32_t *ids = malloc((size_t)(n + 1) * sizeof *ids);
    assert_true(x && keep && row && rows && seqs && ids);
    struct sampler *serial;
    struct tl_err err;
    assert_int_equal(sampler_create(vocab, &serial, &err), TL_OK);
    for (int i = 0; i < n; i++) {
        struct row *r = &rows[i];
        make_row(x + (size_t)i * vocab, vocab, r);
        struct sampler_rng rng; /* as forward_step_sample takes the uniform */
        sampler_rng_seed(&rng, r->seed);
        seqs[i] =
            (struct op_sample_seq){.sp = &r->sp,
                                   .u = sampler_is_greedy(&r->sp) ? 0.0 : sampler_rng_uniform(&rng),
                                   .prompt = r->hist,
                                   .n_prompt = r->n_prompt,
                                   .output = r->hist + r->n_prompt,
                                   .n_output = r->n_output};
    }
    memcpy(keep, x, (size_t)n * vocab * sizeof *x);
    ids[n] = -12345; /* sentinel */
    assert_int_equal(o->sample(o->ctx, x, n, vocab, seqs, ids), TL_OK);
    assert_int_equal(ids[n], -12345);
    assert_memory_equal(x, keep, (size_t)n * vocab * sizeof *x);
    for (int i = 0; i < n; i++) {
        struct row *r = &rows[i];
        struct sampler_rng rng;
        sampler_rng_seed(&rng, r->seed);
        memcpy(row, keep + (size_t)i * vocab, (size_t)vocab * sizeof *row);
        int32_t want = sampler_sample(serial, &r->sp, &rng, row, r->hist, r->n_prompt,
                                      r->hist + r->n_prompt, r->n_output);
        if (ids[i] != want)
            fail_msg("vocab %d row %d (T %g, top_k %d, top_p %g, min_p %g): op %d, serial %d",
                     vocab, i, (double)r->sp.temperature, r->sp.top_k, (double)r->sp.top_p,
                     (double)r->sp.min_p, ids[i], want);
    }
    sampler_destroy(serial);
    free(x);
    free(keep);
    free(row);
    free(rows);
    free(seqs);
    free(ids);
}

static void test_op_matches_serial(void **state) {
    (void)state;
    const int threads[] = {1, 2, 3, 8};
    for (size_t t = 0; t < sizeof threads / sizeof *threads; t++) {
        struct ops o;
        open_backend(152064, threads[t], &o);
        check_op(&o, 152064, 7);
        /* the scratch follows the vocabulary it is called with */
        check_op(&o, 1000, 61);
        check_op(&o, 37, 40);
        check_op(&o, 9, 33);
        assert_int_equal(o.sample(o.ctx, NULL, 0, 1000, NULL, NULL), TL_OK);
        cpu_backend_destroy(&o);
    }
}

/* The dispatched sampler (AVX2 where the CPU has it) against its portable loops. */
static void test_simd_matches_portable(void **state) {
    (void)state;
#if defined(__x86_64__) || defined(__i386__)
    if (!__builtin_cpu_supports("avx2")) skip();
#else
    skip();
#endif
    const int vocabs[] = {152064, 4099, 1000, 37, 8, 3};
    int rows_checked = 0;
    for (size_t v = 0; v < sizeof vocabs / sizeof *vocabs; v++) {
        const int vocab = vocabs[v], n = vocab > 100000 ? 60 : 600;
        float *x = malloc((size_t)vocab * sizeof *x), *a = malloc((size_t)vocab * sizeof *a),
              *b = malloc((size_t)vocab * sizeof *b);
        struct sampler *fast, *portable;
        struct tl_err err;
        assert_true(x && a && b);
        assert_int_equal(sampler_create(vocab, &fast, &err), TL_OK);
        assert_int_equal(portable_sampler_create(vocab, &portable, &err), TL_OK);
        for (int i = 0; i < n; i++) {
            struct row r;
            make_row(x, vocab, &r);
            const double u = data_uniform();
            memcpy(a, x, (size_t)vocab * sizeof *x);
            memcpy(b, x, (size_t)vocab * sizeof *x);
            const int32_t got = sampler_sample_u(fast, &r.sp, u, a, r.hist, r.n_prompt,
                                                 r.hist + r.n_prompt, r.n_output);
            const int32_t want = portable_sampler_sample_u(
                portable, &r.sp, u, b, r.hist, r.n_prompt, r.hist + r.n_prompt, r.n_output);
            if (got != want)
                fail_msg("vocab %d row %d (T %g, top_k %d, top_p %g, min_p %g): avx2 %d, "
                         "portable %d",
                         vocab, i, (double)r.sp.temperature, r.sp.top_k, (double)r.sp.top_p,
                         (double)r.sp.min_p, got, want);
            /* the rows are edited alike too (penalties, temperature) */
            assert_memory_equal(a, b, (size_t)vocab * sizeof *a);
            rows_checked++;
        }
        sampler_destroy(fast);
        portable_sampler_destroy(portable);
        free(x);
        free(a);
        free(b);
    }
    printf("  %d rows: the AVX2 passes pick what the portable loops pick\n", rows_checked);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_op_matches_serial),
        cmocka_unit_test(test_simd_matches_portable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
