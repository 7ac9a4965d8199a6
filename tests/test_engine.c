/* test_engine: the continuous-batching engine on the CPU backend and a fixture model. What a
 * user relies on: batching, chunked prefill, prefix-cache hits and preemption never change a
 * request's tokens; aborts give every KV block back; stops, limits and logprobs behave as in
 * vLLM; requests from many threads are served. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "engine.h"
#include "fixture.h"
#include "forward.h"
#include "kvcache.h"

#define MAX_REQ 64
#define MAX_OUT 64

static struct fixture fx;

struct rig {
    struct ops ops;
    struct kvcache *kv;
    struct forward *fw;
    struct engine *e;
};

struct rig_opts {
    int num_blocks, max_seqs, max_step;
    bool prefix_caching;
    const int32_t *eos;
    int n_eos;
};

static void rig_open(struct rig *g, const struct rig_opts *o) {
    struct tl_err err;
    struct cpu_backend_opts co = {.n_threads = 2,
                                  .pin = false,
                                  .num_blocks = o->num_blocks,
                                  .block_size = 16,
                                  .max_ctx = 256};
    memset(g, 0, sizeof *g);
    if (cpu_backend_create(&fx.m->cfg, &co, &g->ops, &err) != TL_OK ||
        kvcache_create(co.num_blocks, co.block_size, &g->kv, &err) != TL_OK ||
        forward_create(fx.m, &g->ops, o->max_step, o->max_seqs, &g->fw, &err) != TL_OK)
        fail_msg("rig: %s", err.msg);
    struct engine_opts eo = {.max_num_seqs = o->max_seqs,
                             .max_num_batched_tokens = o->max_step,
                             .max_model_len = 256,
                             .enable_prefix_caching = o->prefix_caching,
                             .eos_ids = o->eos,
                             .n_eos = o->n_eos};
    if (engine_create(g->fw, g->kv, fx.m->cfg.vocab_size, &eo, &g->e, &err) != TL_OK)
        fail_msg("engine: %s", err.msg);
}

static void rig_close(struct rig *g) {
    engine_destroy(g->e);
    forward_destroy(g->fw);
    kvcache_destroy(g->kv);
    cpu_backend_destroy(&g->ops);
}

/* A request's whole output, read delta by delta. */
struct result {
    int32_t ids[MAX_OUT];
    float lp[MAX_OUT];
    struct engine_logprob top[MAX_OUT][4];
    int n;
    enum engine_finish finish;
    int32_t stop_token;
    int n_cached;
};

static bool drain(struct engine_request *r, struct result *res) {
    struct engine_output o;
    engine_request_wait(r, 0, &o);
    for (int i = 0; i < o.n_new && res->n < MAX_OUT; i++, res->n++) {
        res->ids[res->n] = o.ids[i];
        if (o.logprobs) res->lp[res->n] = o.logprobs[i];
        for (int k = 0; o.top && k < o.top_n && k < 4; k++)
            res->top[res->n][k] = o.top[(size_t)i * (size_t)o.top_n + (size_t)k];
    }
    res->n_cached = o.n_cached;
    if (o.finish != ENGINE_FINISH_NONE) {
        res->finish = o.finish;
        res->stop_token = o.stop_token;
        return true;
    }
    return false;
}

static void run_until_done(struct rig *g, struct engine_request **r, struct result *res, int n) {
    for (int guard = 0; guard < 100000; guard++) {
        bool busy;
        struct tl_err err;
        assert_int_equal(engine_step(g->e, &busy, &err), TL_OK);
        int done = 0;
        for (int i = 0; i < n; i++)
            done += res[i].finish != ENGINE_FINISH_NONE || drain(r[i], &res[i]);
        if (done == n) return;
    }
    fail_msg("requests never finished");
}

static void prompt_of(int i, int len, int32_t *p) {
    int vocab = fx.m->cfg.vocab_size;
    uint64_t s = 0x1234u + (uint64_t)i * 7919u;
    for (int j = 0; j < len; j++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        p[j] = (int32_t)((s >> 33) % (uint64_t)vocab);
    }
}

static struct engine_params greedy(int max_tokens) {
    struct engine_params p;
    engine_params_default(&p);
    p.sp.temperature = 0.0f;
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    return p;
}

/* Runs one request in an engine of its own, unpressured. */
static void run_alone(const int32_t *prompt, int n, const struct engine_params *p,
                      struct result *res) {
    struct rig g;
    rig_open(&g, &(struct rig_opts){.num_blocks = 64, .max_seqs = 4, .max_step = 256});
    struct engine_request *r;
    struct tl_err err;
    memset(res, 0, sizeof *res);
    assert_int_equal(engine_submit(g.e, prompt, n, p, &r, &err), TL_OK);
    run_until_done(&g, &r, res, 1);
    engine_request_release(r);
    rig_close(&g);
}

static const int LENS[] = {3, 40, 17, 16, 1, 33, 25, 9, 48, 31, 12, 20};
#define N_LENS ((int)(sizeof LENS / sizeof *LENS))

static void check_same(const struct result *a, const struct result *b, int i) {
    if (a->n != b->n || memcmp(a->ids, b->ids, (size_t)a->n * sizeof *a->ids)) {
        for (int k = 0; k < a->n && k < b->n; k++)
            if (a->ids[k] != b->ids[k])
                fail_msg("request %d: token %d differs (%d vs %d)", i, k, a->ids[k], b->ids[k]);
        fail_msg("request %d: %d vs %d tokens", i, a->n, b->n);
    }
}

/* Requests arriving over time, chunked prefill (8-token steps interleave prompts and
 * decodes), each must get exactly the tokens it gets alone. */
static void test_batching_matches_alone(void **state) {
    (void)state;
    int32_t prompts[N_LENS][64];
    struct result alone[N_LENS], together[N_LENS];
    for (int i = 0; i < N_LENS; i++) {
        prompt_of(i, LENS[i], prompts[i]);
        struct engine_params p = greedy(8 + i % 5);
        run_alone(prompts[i], LENS[i], &p, &alone[i]);
    }
    struct rig g;
    rig_open(&g, &(struct rig_opts){.num_blocks = 96, .max_seqs = 8, .max_step = 24});
    struct engine_request *r[N_LENS];
    memset(together, 0, sizeof together);
    struct tl_err err;
    int submitted = 0;
    for (int guard = 0; guard < 10000; guard++) {
        if (submitted < N_LENS && guard % 3 == 0) {
            struct engine_params p = greedy(8 + submitted % 5);
            assert_int_equal(
                engine_submit(g.e, prompts[submitted], LENS[submitted], &p, &r[submitted], &err),
                TL_OK);
            submitted++;
        }
        bool busy;
        assert_int_equal(engine_step(g.e, &busy, &err), TL_OK);
        int done = 0;
        for (int i = 0; i < submitted; i++)
            done += together[i].finish != ENGINE_FINISH_NONE || drain(r[i], &together[i]);
        if (submitted == N_LENS && done == N_LENS) break;
    }
    for (int i = 0; i < N_LENS; i++) {
        assert_int_equal(together[i].finish, ENGINE_FINISH_LENGTH);
        check_same(&alone[i], &together[i], i);
        engine_request_release(r[i]);
    }
    struct engine_metrics m;
    engine_metrics_get(g.e, &m);
    assert_int_equal(m.kv_blocks_used, 0);
    assert_int_equal(m.request_success_total[ENGINE_FINISH_LENGTH], N_LENS);
    rig_close(&g);
}

/* A second request with the same 40-token prompt reuses its two full blocks and produces the
 * same tokens; a request sharing only the first block reuses one. */
static void test_prefix_cache(void **state) {
    (void)state;
    int32_t p[64];
    prompt_of(99, 40, p);
    struct engine_params gp = greedy(12);
    struct result ref;
    run_alone(p, 40, &gp, &ref);

    struct rig g;
    rig_open(&g, &(struct rig_opts){
                     .num_blocks = 64, .max_seqs = 4, .max_step = 64, .prefix_caching = true});
    struct result res[3];
    memset(res, 0, sizeof res);
    struct engine_request *r[3];
    struct tl_err err;
    assert_int_equal(engine_submit(g.e, p, 40, &gp, &r[0], &err), TL_OK);
    run_until_done(&g, &r[0], &res[0], 1);
    assert_int_equal(engine_submit(g.e, p, 40, &gp, &r[1], &err), TL_OK);
    run_until_done(&g, &r[1], &res[1], 1);
    int32_t q[64];
    memcpy(q, p, sizeof q);
    q[20] = (q[20] + 1) % fx.m->cfg.vocab_size; /* differs in the second block */
    assert_int_equal(engine_submit(g.e, q, 40, &gp, &r[2], &err), TL_OK);
    run_until_done(&g, &r[2], &res[2], 1);
    assert_int_equal(res[0].n_cached, 0);
    assert_int_equal(res[1].n_cached, 32);
    assert_int_equal(res[2].n_cached, 16);
    check_same(&ref, &res[0], 0);
    check_same(&ref, &res[1], 1);
    struct engine_metrics m;
    engine_metrics_get(g.e, &m);
    assert_int_equal(m.prefix_cache_hits_total, 48);
    assert_int_equal(m.kv_blocks_used, 0);
    for (int i = 0; i < 3; i++) engine_request_release(r[i]);
    rig_close(&g);
}

/* 12 requests needing 4 blocks each over 13 blocks: the engine must preempt (and recompute)
 * again and again, and every request still gets its unpressured tokens, greedy and seeded. */
static void preemption_case(bool seeded, bool prefix) {
    int32_t prompts[12][64];
    struct result alone[12], pressed[12];
    struct engine_params ps[12];
    for (int i = 0; i < 12; i++) {
        prompt_of(200 + i, 20 + i, prompts[i]);
        ps[i] = greedy(30);
        if (seeded) {
            ps[i].sp.temperature = 0.9f;
            ps[i].sp.top_p = 0.95f;
            ps[i].sp.has_seed = true;
            ps[i].sp.seed = 1000 + (uint64_t)i;
        }
        run_alone(prompts[i], 20 + i, &ps[i], &alone[i]);
    }
    struct rig g;
    rig_open(&g, &(struct rig_opts){
                     .num_blocks = 14, .max_seqs = 8, .max_step = 32, .prefix_caching = prefix});
    struct engine_request *r[12];
    struct tl_err err;
    memset(pressed, 0, sizeof pressed);
    for (int i = 0; i < 12; i++)
        assert_int_equal(engine_submit(g.e, prompts[i], 20 + i, &ps[i], &r[i], &err), TL_OK);
    run_until_done(&g, r, pressed, 12);
    struct engine_metrics m;
    engine_metrics_get(g.e, &m);
    assert_true(m.num_preemptions_total > 0);
    for (int i = 0; i < 12; i++) {
        check_same(&alone[i], &pressed[i], i);
        engine_request_release(r[i]);
    }
    assert_int_equal(m.kv_blocks_used, 0);
    rig_close(&g);
}

static void test_preemption_greedy(void **state) {
    (void)state;
    preemption_case(false, false);
}
static void test_preemption_seeded(void **state) {
    (void)state;
    preemption_case(true, false);
}
static void test_preemption_prefix_cache(void **state) {
    (void)state;
    preemption_case(true, true);
}

/* Aborts at every stage (queued, mid-prefill, mid-decode, released unread) give all blocks
 * back and leave the others' tokens untouched. */
static void test_abort(void **state) {
    (void)state;
    int32_t prompts[10][64];
    struct rig g;
    rig_open(&g, &(struct rig_opts){
                     .num_blocks = 40, .max_seqs = 4, .max_step = 16, .prefix_caching = true});
    struct engine_request *r[10];
    struct result res[10], alone[10];
    memset(res, 0, sizeof res);
    struct tl_err err;
    struct engine_params p = greedy(20);
    for (int i = 0; i < 10; i++) {
        prompt_of(300 + i, 30, prompts[i]);
        assert_int_equal(engine_submit(g.e, prompts[i], 30, &p, &r[i], &err), TL_OK);
    }
    bool busy;
    for (int s = 0; s < 3; s++) assert_int_equal(engine_step(g.e, &busy, &err), TL_OK);
    engine_request_abort(r[0]); /* running, mid-prefill or decoding */
    engine_request_abort(r[9]); /* still waiting */
    for (int s = 0; s < 4; s++) assert_int_equal(engine_step(g.e, &busy, &err), TL_OK);
    engine_request_release(r[1]); /* the client went away without reading */
    r[1] = NULL;
    for (int guard = 0; guard < 10000; guard++) {
        assert_int_equal(engine_step(g.e, &busy, &err), TL_OK);
        int done = 0;
        for (int i = 0; i < 10; i++)
            done += !r[i] || res[i].finish != ENGINE_FINISH_NONE || drain(r[i], &res[i]);
        if (done == 10 && !busy) break;
    }
    assert_int_equal(res[0].finish, ENGINE_FINISH_ABORT);
    assert_int_equal(res[9].finish, ENGINE_FINISH_ABORT);
    for (int i = 2; i < 9; i++) {
        run_alone(prompts[i], 30, &p, &alone[i]);
        assert_int_equal(res[i].finish, ENGINE_FINISH_LENGTH);
        check_same(&alone[i], &res[i], i);
    }
    struct engine_metrics m;
    engine_metrics_get(g.e, &m);
    assert_int_equal(m.kv_blocks_used, 0);
    assert_int_equal(m.num_running + m.num_waiting, 0);
    assert_int_equal(m.request_success_total[ENGINE_FINISH_ABORT], 3);
    for (int i = 0; i < 10; i++) engine_request_release(r[i]);
    rig_close(&g);
}

/* EOS, stop ids, min_tokens, max_tokens and logprobs. */
static void test_stops_and_logprobs(void **state) {
    (void)state;
    int32_t p[64];
    prompt_of(400, 10, p);
    struct engine_params gp = greedy(24);
    struct result ref;
    run_alone(p, 10, &gp, &ref);
    int32_t t = ref.ids[5]; /* the first occurrence of this id ends a stopped run */
    int first = 0;
    while (ref.ids[first] != t) first++;

    /* stop id */
    struct engine_params sp = gp;
    sp.stop_token_ids = &t;
    sp.n_stop_token_ids = 1;
    struct result res;
    run_alone(p, 10, &sp, &res);
    assert_int_equal(res.finish, ENGINE_FINISH_STOP);
    assert_int_equal(res.stop_token, t);
    assert_int_equal(res.n, first + 1);
    /* EOS from the engine's options; ignore_eos keeps going */
    struct rig g;
    rig_open(&g, &(struct rig_opts){
                     .num_blocks = 64, .max_seqs = 4, .max_step = 64, .eos = &t, .n_eos = 1});
    struct engine_request *r[3];
    struct result rr[3];
    memset(rr, 0, sizeof rr);
    struct tl_err err;
    struct engine_params ep = gp;
    ep.ignore_eos = false;
    assert_int_equal(engine_submit(g.e, p, 10, &ep, &r[0], &err), TL_OK);
    assert_int_equal(engine_submit(g.e, p, 10, &gp, &r[1], &err), TL_OK);
    /* min_tokens: EOS cannot come before min_tokens tokens */
    struct engine_params mp = ep;
    mp.min_tokens = first + 3;
    assert_int_equal(engine_submit(g.e, p, 10, &mp, &r[2], &err), TL_OK);
    run_until_done(&g, r, rr, 3);
    assert_int_equal(rr[0].finish, ENGINE_FINISH_STOP);
    assert_int_equal(rr[0].stop_token, -1); /* EOS is not a stop_reason id */
    assert_int_equal(rr[0].n, first + 1);
    assert_int_equal(rr[1].finish, ENGINE_FINISH_LENGTH);
    assert_int_equal(rr[1].n, 24);
    assert_true(rr[2].n >= first + 3);
    for (int i = 0; i < first + 3 && i < rr[2].n; i++) assert_int_not_equal(rr[2].ids[i], t);
    for (int i = 0; i < 3; i++) engine_request_release(r[i]);
    rig_close(&g);

    /* logprobs: the greedy token is the most likely, its logprob is top[0]'s, sorted */
    struct engine_params lp = gp;
    lp.logprobs = 4;
    run_alone(p, 10, &lp, &res);
    check_same(&ref, &res, 0);
    for (int i = 0; i < res.n; i++) {
        assert_int_equal(res.top[i][0].id, res.ids[i]);
        assert_true(fabsf(res.top[i][0].logprob - res.lp[i]) < 1e-6f);
        assert_true(res.lp[i] <= 0.0f);
        for (int k = 1; k < 4; k++) assert_true(res.top[i][k].logprob <= res.top[i][k - 1].logprob);
    }
}

static void test_validation(void **state) {
    (void)state;
    struct rig g;
    rig_open(&g, &(struct rig_opts){.num_blocks = 8, .max_seqs = 4, .max_step = 64});
    struct engine_request *r;
    struct tl_err err;
    int32_t p[300] = {0};
    struct engine_params gp = greedy(8);
    assert_int_equal(engine_submit(g.e, p, 0, &gp, &r, &err), TL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "empty"));
    p[3] = fx.m->cfg.vocab_size;
    assert_int_equal(engine_submit(g.e, p, 5, &gp, &r, &err), TL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "vocabulary"));
    p[3] = 0;
    gp.max_tokens = 60;
    assert_int_equal(engine_submit(g.e, p, 200, &gp, &r, &err), TL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "maximum context length is 256 tokens"));
    assert_non_null(strstr(err.msg, "260"));
    gp.max_tokens = 8;
    /* 8 blocks hold 128 tokens at most (no block to spare for graph padding: a 256-token
     * sequence would need 16) */
    assert_int_equal(engine_submit(g.e, p, 121, &gp, &r, &err), TL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "KV blocks"));
    gp.sp.top_p = 0.0f;
    assert_int_equal(engine_submit(g.e, p, 5, &gp, &r, &err), TL_ERR_INVALID);
    gp = greedy(8);
    const char *stop[] = {"x"};
    gp.stop = stop;
    gp.n_stop = 1;
    assert_int_equal(engine_submit(g.e, p, 5, &gp, &r, &err), TL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "tokenizer"));
    rig_close(&g);
}

/* Eight threads submit and read at once against the engine's own thread. */
struct client {
    struct engine *e;
    int idx;
    struct result res;
    int32_t prompt[64];
};

static void *client_main(void *arg) {
    struct client *c = arg;
    struct engine_params p = greedy(10 + c->idx);
    struct engine_request *r;
    struct tl_err err;
    if (engine_submit(c->e, c->prompt, 12 + c->idx, &p, &r, &err) != TL_OK) return NULL;
    struct engine_output o;
    do {
        engine_request_wait(r, 1000, &o);
        for (int i = 0; i < o.n_new && c->res.n < MAX_OUT; i++) c->res.ids[c->res.n++] = o.ids[i];
    } while (o.finish == ENGINE_FINISH_NONE);
    c->res.finish = o.finish;
    engine_request_release(r);
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    struct rig g;
    rig_open(&g, &(struct rig_opts){
                     .num_blocks = 64, .max_seqs = 8, .max_step = 32, .prefix_caching = true});
    struct tl_err err;
    assert_int_equal(engine_start(g.e, &err), TL_OK);
    struct client c[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        memset(&c[i], 0, sizeof c[i]);
        c[i].e = g.e;
        c[i].idx = i;
        prompt_of(500 + i, 12 + i, c[i].prompt);
        pthread_create(&th[i], NULL, client_main, &c[i]);
    }
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    rig_close(&g);
    for (int i = 0; i < 8; i++) {
        struct result ref;
        struct engine_params p = greedy(10 + i);
        run_alone(c[i].prompt, 12 + i, &p, &ref);
        assert_int_equal(c[i].res.finish, ENGINE_FINISH_LENGTH);
        check_same(&ref, &c[i].res, i);
    }
}

static int setup(void **state) {
    (void)state;
    return fixture_open("qwen2-bf16", &fx) == 0 ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    fixture_close(&fx);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batching_matches_alone),
        cmocka_unit_test(test_prefix_cache),
        cmocka_unit_test(test_preemption_greedy),
        cmocka_unit_test(test_preemption_seeded),
        cmocka_unit_test(test_preemption_prefix_cache),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_stops_and_logprobs),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
