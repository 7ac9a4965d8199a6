/* test_cpu_attention: cpu_attention against a double-precision softmax(q k^T / sqrt(hd)) v on
 * random inputs in a scattered paged cache: decode at contexts 1..2000 around block and chunk
 * edges, one long sequence (its context split across threads), prefill chunks after a cached
 * past, mixed batches; GQA groups 1, 5, 8 and an odd head_dim / block size; 1..3 threads; the
 * SIMD and the portable kernels. Outputs are poisoned first and followed by sentinels, and a
 * second run must give the same bits. */
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

#define SENTINELS 64

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)(rng >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/* One batch: sequence s has n_past[s] cached tokens and n_new[s] new ones. */
struct batch_case {
    const char *name;
    int n_seqs;
    int n_past[8], n_new[8];
};

struct shape_case {
    int n_heads, n_kv_heads, head_dim, block_size;
};

struct setup {
    struct attn_shape shape;
    struct fwd_batch b;
    struct fwd_seq seqs[8];
    int32_t *tables, *tokens, *positions, *tok_seq;
    float *q, *kc, *vc;
    double *ref;
    size_t q_floats;
};

/* Random cache (every slot, so stray reads of other sequences' slots change the result), blocks
 * handed out from a shuffled list, random q; the double reference per (token, head). */
static void setup_make(struct setup *u, const struct shape_case *sc, const struct batch_case *bc) {
    memset(u, 0, sizeof *u);
    u->shape = (struct attn_shape){sc->n_heads, sc->n_kv_heads, sc->head_dim, sc->block_size};
    int bs = sc->block_size, hd = sc->head_dim, H = sc->n_heads, g = H / sc->n_kv_heads;
    int nb = 0, T = 0;
    for (int s = 0; s < bc->n_seqs; s++) {
        nb += (bc->n_past[s] + bc->n_new[s] + bs - 1) / bs;
        T += bc->n_new[s];
    }
    nb += 7; /* blocks nobody owns */
    size_t kvd = (size_t)sc->n_kv_heads * hd, cache = (size_t)nb * bs * kvd;
    u->kc = malloc(cache * 4), u->vc = malloc(cache * 4);
    for (size_t i = 0; i < cache; i++) u->kc[i] = frand(), u->vc[i] = frand();
    int32_t *perm = malloc((size_t)nb * 4);
    for (int i = 0; i < nb; i++) perm[i] = i;
    for (int i = nb - 1; i > 0; i--) {
        int j = (int)((uint32_t)(rng = rng * 6364136223846793005ull + 1) % (uint32_t)(i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    u->tables = perm;
    u->q_floats = (size_t)T * H * hd;
    u->q = malloc(u->q_floats * 4);
    for (size_t i = 0; i < u->q_floats; i++) u->q[i] = 2.0f * frand(); /* sharper softmax */
    u->tokens = calloc((size_t)T, 4);
    u->positions = malloc((size_t)T * 4), u->tok_seq = malloc((size_t)T * 4);
    int used = 0, t = 0;
    for (int s = 0; s < bc->n_seqs; s++) {
        int len = bc->n_past[s] + bc->n_new[s], n_blocks = (len + bs - 1) / bs;
        u->seqs[s] = (struct fwd_seq){bc->n_new[s], bc->n_past[s], perm + used, n_blocks, 1};
        used += n_blocks;
        for (int i = 0; i < bc->n_new[s]; i++, t++)
            u->positions[t] = bc->n_past[s] + i, u->tok_seq[t] = s;
    }
    u->b = (struct fwd_batch){bc->n_seqs, u->seqs, T, u->tokens, u->positions};
    u->ref = malloc(u->q_floats * sizeof(double));
    int max_ctx = 0;
    for (int i = 0; i < T; i++)
        if (u->positions[i] + 1 > max_ctx) max_ctx = u->positions[i] + 1;
    double *sc_d = malloc((size_t)max_ctx * sizeof(double));
    for (t = 0; t < T; t++) {
        const struct fwd_seq *sq = &u->seqs[u->tok_seq[t]];
        int n_ctx = u->positions[t] + 1;
        for (int h = 0; h < H; h++) {
            const float *qv = u->q + ((size_t)t * H + h) * hd;
            size_t head = (size_t)(h / g) * hd;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < n_ctx; j++) {
                size_t slot = (size_t)sq->block_table[j / bs] * bs + (size_t)(j % bs);
                const float *k = u->kc + slot * kvd + head;
                double d = 0;
                for (int e = 0; e < hd; e++) d += (double)qv[e] * k[e];
                sc_d[j] = d / sqrt((double)hd);
                if (sc_d[j] > mx) mx = sc_d[j];
            }
            for (int j = 0; j < n_ctx; j++) sum += (sc_d[j] = exp(sc_d[j] - mx));
            double *o = u->ref + ((size_t)t * H + h) * hd;
            for (int e = 0; e < hd; e++) o[e] = 0;
            for (int j = 0; j < n_ctx; j++) {
                size_t slot = (size_t)sq->block_table[j / bs] * bs + (size_t)(j % bs);
                const float *v = u->vc + slot * kvd + head;
                for (int e = 0; e < hd; e++) o[e] += sc_d[j] / sum * v[e];
            }
        }
    }
    free(sc_d);
}

static void setup_free(struct setup *u) {
    free(u->tables), free(u->tokens), free(u->positions), free(u->tok_seq);
    free(u->q), free(u->kc), free(u->vc), free(u->ref);
}

/* Largest |out - ref| of a row over the row's largest |ref|, worst row. */
static double worst_row_err(const float *out, const double *ref, size_t rows, int hd) {
    double worst = 0;
    for (size_t r = 0; r < rows; r++) {
        double num = 0, den = 1e-30;
        for (int e = 0; e < hd; e++) {
            double o = out[r * hd + e], x = ref[r * hd + e];
            if (!isfinite(o)) return INFINITY;
            num = fmax(num, fabs(o - x));
            den = fmax(den, fabs(x));
        }
        worst = fmax(worst, num / den);
    }
    return worst;
}

static int run_cases(const struct shape_case *sc, const struct batch_case *bc) {
    struct setup u;
    setup_make(&u, sc, bc);
    int failures = 0, hd = sc->head_dim;
    size_t rows = u.q_floats / (size_t)hd;
    float *out = malloc((u.q_floats + SENTINELS) * 4), *again = malloc(u.q_floats * 4);
    for (int portable = 0; portable <= 1; portable++) {
        cpu_attention_force_portable(portable);
        for (int threads = 1; threads <= 3; threads++) {
            struct pool *pool;
            struct tl_err err;
            assert_int_equal(pool_create(threads, false, &pool, &err), TL_OK);
            float *scratch = malloc(cpu_attention_scratch_floats(&u.shape, threads) * 4);
            for (size_t i = 0; i < u.q_floats; i++) out[i] = NAN;
            for (int i = 0; i < SENTINELS; i++) out[u.q_floats + i] = 12345.0f;
            cpu_attention(pool, &u.shape, &u.b, u.tok_seq, u.q, u.kc, u.vc, out, scratch);
            double e = worst_row_err(out, u.ref, rows, hd);
            bool sentinels = true;
            for (int i = 0; i < SENTINELS; i++) sentinels &= out[u.q_floats + i] == 12345.0f;
            for (size_t i = 0; i < u.q_floats; i++) again[i] = NAN;
            cpu_attention(pool, &u.shape, &u.b, u.tok_seq, u.q, u.kc, u.vc, again, scratch);
            bool same = !memcmp(out, again, u.q_floats * 4);
            /* fp32 sums over up to 2000 positions: worst rows 2.6e-6 seen */
            if (!(e < 1e-5) || !sentinels || !same) {
                printf("FAIL %s, %d/%d heads x %d, block %d, %s kernels, %d threads: worst row "
                       "err %.3g%s%s\n",
                       bc->name, sc->n_heads, sc->n_kv_heads, hd, sc->block_size,
                       cpu_attention_kernel_name(hd), threads, e,
                       sentinels ? "" : ", wrote past the output",
                       same ? "" : ", second run differs");
                failures++;
            }
            free(scratch);
            pool_destroy(pool);
        }
    }
    cpu_attention_force_portable(false);
    free(out), free(again);
    setup_free(&u);
    return failures;
}

static void test_attention(void **state) {
    (void)state;
    const struct shape_case shapes[] = {
        {4, 4, 128, 16},  /* group 1 */
        {10, 2, 128, 16}, /* group 5 (Qwen2.5-14B's ratio) */
        {16, 2, 128, 16}, /* group 8 */
        {6, 2, 40, 5},    /* head_dim the SIMD kernels do not take, odd block size */
    };
    const struct batch_case batches[] = {
        {"decode, contexts 1 15 16 17 576 2000", 6, {0, 14, 15, 16, 575, 1999}, {1, 1, 1, 1, 1, 1}},
        {"decode, one sequence of 2000", 1, {1999}, {1}},
        {"decode, two sequences of 300 and 64", 2, {299, 63}, {1, 1}},
        {"prefill from 0, 29 and 1 tokens", 2, {0, 0}, {29, 1}},
        {"prefill chunks after a past, with decodes", 4, {100, 40, 500, 63}, {37, 1, 70, 2}},
        {"prefill chunk of 5 after 1500", 1, {1500}, {5}},
    };
    int failures = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++)
            failures += run_cases(&shapes[s], &batches[b]);
    if (failures) fail_msg("%d attention cases failed", failures);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_attention)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
