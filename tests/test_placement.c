/* test_placement: a split forward (some layers, the embedding or the lm_head on a second
 * backend, each backend holding only its layers' KV) computes exactly what one backend does.
 * On the CPU both lanes are fp32, so logits must match bit for bit, through chunked prefill and
 * batched decode, for every placement below; and with guests (the large steps run the second
 * lane's layers on the main one, each lane writing the other's KV), through steps that switch
 * lanes both ways with sequences in flight. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "fixture.h"
#include "forward.h"
#include "kvcache.h"

static struct fixture fx;

struct lanes {
    struct ops main, cpu;
    struct forward *fw;
};

static void open_lanes(struct lanes *g, const uint8_t *on_cpu, bool embed, bool head,
                       int guest_min) {
    struct tl_err err;
    int nl = fx.m->cfg.n_layers;
    uint8_t *main_kv = malloc((size_t)nl);
    for (int l = 0; l < nl; l++) main_kv[l] = on_cpu && !guest_min ? !on_cpu[l] : 1;
    struct cpu_backend_opts a = {
        .n_threads = 2, .num_blocks = 32, .block_size = 16, .max_ctx = 256, .kv_layers = main_kv};
    /* the same thread count: the CPU splits some reductions by thread */
    struct cpu_backend_opts b = a;
    b.kv_layers = on_cpu;
    memset(g, 0, sizeof *g);
    if (cpu_backend_create(&fx.m->cfg, &a, &g->main, &err) != TL_OK) fail_msg("%s", err.msg);
    if (on_cpu) {
        struct fwd_placement pl = {.layer_on_cpu = on_cpu,
                                   .embed_on_cpu = embed,
                                   .head_on_cpu = head,
                                   .guest_min_tokens = guest_min};
        if (cpu_backend_create(&fx.m->cfg, &b, &g->cpu, &err) != TL_OK ||
            forward_create_split(fx.m, &g->main, fx.m, &g->cpu, &pl, 64, 4, &g->fw, &err) != TL_OK)
            fail_msg("%s", err.msg);
    } else if (forward_create(fx.m, &g->main, 64, 4, &g->fw, &err) != TL_OK) {
        fail_msg("%s", err.msg);
    }
    free(main_kv);
}

static void close_lanes(struct lanes *g) {
    forward_destroy(g->fw);
    cpu_backend_destroy(&g->main);
    if (g->cpu.ctx) cpu_backend_destroy(&g->cpu);
}

/* Three sequences: a 40-token prompt in chunks of 24 + 16 beside a 7-token prompt (31, then 17
 * tokens with a decode), decode steps of 2 feeding back greedy tokens, and from step 4 a
 * 20-token prompt beside the two decodes (22 tokens), then decodes of 3. Returns all logits
 * rows concatenated. */
static int run(struct lanes *g, float *all, int cap) {
    struct tl_err err;
    struct kvcache *kv;
    if (kvcache_create(32, 16, &kv, &err) != TL_OK) fail_msg("%s", err.msg);
    struct kv_seq s[3] = {{0}};
    int V = fx.m->cfg.vocab_size, n = 0;
    int32_t toks[64], pos[64], last[3];
    int lens[3] = {40, 7, 20}, done[3] = {0, 0, 0}, start[3] = {0, 0, 4}, idx[3];
    float *lg = malloc((size_t)3 * (size_t)V * sizeof *lg);
    for (int step = 0; step < 9; step++) {
        struct fwd_seq fs[3];
        int nt = 0, ns = 0;
        for (int q = 0; q < 3; q++) {
            int take;
            if (step < start[q]) continue;
            if (done[q] < lens[q]) {
                take = lens[q] - done[q] < 24 ? lens[q] - done[q] : 24;
                for (int i = 0; i < take; i++) {
                    toks[nt + i] = (int32_t)((done[q] + i) * 37 + q * 11) % V;
                    pos[nt + i] = done[q] + i;
                }
            } else {
                take = 1;
                toks[nt] = last[q];
                pos[nt] = done[q];
            }
            if (kvcache_seq_reserve(kv, &s[q], done[q] + take, &err) != TL_OK) fail_msg("kv");
            idx[ns] = q;
            fs[ns++] = (struct fwd_seq){take, done[q], s[q].blocks, s[q].n_blocks,
                                        done[q] + take >= lens[q]};
            nt += take;
        }
        struct fwd_batch b = {ns, fs, nt, toks, pos};
        if (forward_step(g->fw, &b, lg, &err) != TL_OK) fail_msg("step: %s", err.msg);
        int r = 0;
        for (int j = 0; j < ns; j++) {
            int q = idx[j];
            done[q] += fs[j].n_new;
            if (!fs[j].want_logits) continue;
            float *row = lg + (size_t)r++ * (size_t)V;
            int best = 0;
            for (int i = 1; i < V; i++)
                if (row[i] > row[best]) best = i;
            last[q] = best;
            if (n + V <= cap) memcpy(all + n, row, (size_t)V * sizeof *row);
            n += V;
        }
    }
    for (int q = 0; q < 3; q++) kvcache_seq_release(kv, &s[q]);
    kvcache_destroy(kv);
    free(lg);
    return n;
}

static void check_guests(const uint8_t *on_cpu, bool embed, bool head, int guest_min) {
    enum { CAP = 1 << 16 };
    float *ref = malloc(CAP * sizeof *ref), *got = malloc(CAP * sizeof *got);
    struct lanes g;
    open_lanes(&g, NULL, false, false, 0);
    int n_ref = run(&g, ref, CAP);
    close_lanes(&g);
    open_lanes(&g, on_cpu, embed, head, guest_min);
    int n = run(&g, got, CAP);
    close_lanes(&g);
    assert_int_equal(n, n_ref);
    assert_true(n <= CAP);
    assert_memory_equal(got, ref, (size_t)n * sizeof *got);
    free(ref);
    free(got);
}

static void check_placement(const uint8_t *on_cpu, bool embed, bool head) {
    check_guests(on_cpu, embed, head, 0);
}

static void test_alternate(void **state) {
    (void)state;
    uint8_t p[64] = {0};
    for (int l = 0; l < fx.m->cfg.n_layers; l++) p[l] = l & 1;
    check_placement(p, false, false);
}

static void test_tail_on_cpu_with_head(void **state) {
    (void)state;
    uint8_t p[64] = {0};
    for (int l = fx.m->cfg.n_layers / 2; l < fx.m->cfg.n_layers; l++) p[l] = 1;
    check_placement(p, false, true);
}

static void test_embed_on_cpu(void **state) {
    (void)state;
    uint8_t p[64] = {0};
    p[0] = 1;
    check_placement(p, true, false);
    memset(p, 0, sizeof p);
    check_placement(p, true, true); /* only the ends on the CPU */
}

static void test_all_on_cpu_lane(void **state) {
    (void)state;
    uint8_t p[64];
    memset(p, 1, sizeof p);
    check_placement(p, true, true);
}

/* Steps of >= 17 tokens (the prefill steps of 31, 17 and 22) run the CPU lane's layers on the
 * main lane; the decode steps between them on the CPU lane: KV crosses both ways. A bound of 23
 * keeps the step of 22 (a prompt beside two decodes) on the CPU lane instead. */
static void test_guests(void **state) {
    (void)state;
    uint8_t p[64] = {0};
    for (int l = 0; l < fx.m->cfg.n_layers; l++) p[l] = l % 3 == 1;
    check_guests(p, false, false, 17);
    check_guests(p, true, true, 23);
    memset(p, 1, sizeof p);
    check_guests(p, true, false, 17);
}

static int setup(void **state) {
    (void)state;
    if (fixture_open("qwen2-bf16", &fx) != 0) return -1;
    return fx.m->cfg.n_layers <= 64 ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    fixture_close(&fx);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alternate),    cmocka_unit_test(test_tail_on_cpu_with_head),
        cmocka_unit_test(test_embed_on_cpu), cmocka_unit_test(test_all_on_cpu_lane),
        cmocka_unit_test(test_guests),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
