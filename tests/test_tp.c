/* test_tp: tensor parallelism on the CPU backend. N shards of a model (tp.h), each with its own
 * CPU backend, paged KV cache and forward, run in N threads joined by the in-process
 * collective (tp_local.h); rank 0's logits must equal the unsharded model's over a prefill, a
 * mixed prefill/decode step and decode steps, for N = 2, 4, 8, for KV heads that divide N and
 * KV heads replicated (N > num_key_value_heads), with Qwen2's q/k/v biases, Llama's o_proj bias
 * and tied embeddings, and a vocabulary that needs padding. The golden fixtures run sharded
 * against HF's logits too. Splits vLLM refuses are refused with its words and the valid sizes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "cpu_ops.h"
#include "fixture.h"
#include "forward.h"
#include "kvcache.h"
#include "model.h"
#include "sampler.h"
#include "tp.h"
#include "tp_local.h"

/* Sharded against unsharded, both fp32 activations on the CPU: the only difference is the order
 * of additions. A row-parallel o_proj / down_proj sums K/N products per rank and then N
 * partial sums, where the whole model sums K products in one loop; reassociating a sum of K
 * fp32 terms moves it by at most ~K * 2^-24 of the sum of magnitudes, typically sqrt(K) * 2^-24
 * (~1e-6 here, K <= 192), and two to three layers of rmsnorm and attention carry that through
 * without growing it by more than a few times. 1e-5 is ten times what we measure; a wrong head,
 * bias or vocabulary row is off by O(1). */
#define TOL_SHARD 1e-5
/* Against HF's fp32 run of the fixture: the bound test_parity holds the unsharded engine to. */
#define TOL_REF 1e-3

#define BLOCK   4
#define NBLOCKS 64
#define MAX_CTX 128
#define MAXW    8

static struct model *dummy(const char *json, uint64_t seed, enum tl_dtype dt) {
    struct tl_err err = {{0}};
    struct model *m = fixture_dummy_model(json, seed, dt, &err);
    if (!m) fail_msg("dummy model: %s", err.msg);
    return m;
}

/* A forward on one CPU backend: the whole model or one shard. */
static void lane_open(struct cpu_lane *l, const struct model *m, int max_tokens, int max_seqs) {
    struct tl_err err = {{0}};
    if (cpu_lane_open(l, m, NBLOCKS, BLOCK, MAX_CTX, max_tokens, max_seqs, &err) != TL_OK)
        fail_msg("lane: %s", err.msg);
}

/* N ranks in N threads; rank 0 is stepped by the test. */
struct group {
    int world;
    struct model *shard[MAXW];
    struct cpu_lane lane[MAXW];
    struct tp_local *g;
};

static void group_open(struct group *gr, const struct model *m, int world, int max_tokens,
                       int max_seqs) {
    struct tl_err err = {{0}};
    memset(gr, 0, sizeof *gr);
    gr->world = world;
    if (tp_local_create(world, &gr->g, &err) != TL_OK) fail_msg("group: %s", err.msg);
    for (int r = 0; r < world; r++) {
        if (tp_shard(m, world, r, &gr->shard[r], &err) != TL_OK) fail_msg("shard: %s", err.msg);
        lane_open(&gr->lane[r], gr->shard[r], max_tokens, max_seqs);
        if (forward_set_collective(gr->lane[r].fw, tp_local_collective(gr->g, r), &err) != TL_OK)
            fail_msg("collective: %s", err.msg);
    }
    for (int r = 1; r < world; r++)
        if (tp_local_serve(gr->g, r, gr->lane[r].fw, &err) != TL_OK) fail_msg("serve: %s", err.msg);
}

static void group_close(struct group *gr) {
    struct tl_err err = {{0}};
    if (tp_local_shutdown(gr->g, &err) != TL_OK) fail_msg("a serving rank failed: %s", err.msg);
    for (int r = 0; r < gr->world; r++) {
        cpu_lane_close(&gr->lane[r]);
        model_free(gr->shard[r]);
    }
    tp_local_destroy(gr->g);
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* The steps both runs take: A prefills 11 tokens while B prefills a first chunk of 3 (no
 * logits), then B finishes its prompt beside A's first decode, then both decode 4 steps on
 * the unsharded model's greedy tokens, with block tables from the paged KV cache. Returns the
 * largest relative error of rank 0's logits, row by row; fails on a greedy mismatch. */
static double compare_steps(struct forward *ref, struct forward *tp, int V, const char *what) {
    struct tl_err err = {{0}};
    struct kvcache *kv = NULL;
    assert_int_equal(kvcache_create(NBLOCKS, BLOCK, &kv, &err), TL_OK);
    struct kv_seq sa = {0}, sb = {0};
    int32_t pa[11] = {1, 17, 230, 5, 499, 64, 65, 128, 3, 300, 77}, pb[5] = {250, 251, 9, 0, 42};
    if (V < 500)
        for (int i = 0; i < 11; i++) pa[i] %= V, pb[i % 5] %= V;
    float *lr = malloc(2 * (size_t)V * sizeof *lr), *lt = malloc(2 * (size_t)V * sizeof *lt);
    int32_t tok[16], pos[16], next[2] = {0, 0};
    int na = 0, nb = 0; /* tokens each sequence has in its KV */
    double worst = 0;
    for (int step = 0; step < 6; step++) {
        struct fwd_seq fs[2];
        int nt = 0, ns = 0;
        int take_a = step == 0 ? 11 : 1, take_b = step == 0 ? 3 : step == 1 ? 2 : 1;
        assert_int_equal(kvcache_seq_reserve(kv, &sa, na + take_a, &err), TL_OK);
        assert_int_equal(kvcache_seq_reserve(kv, &sb, nb + take_b, &err), TL_OK);
        for (int i = 0; i < take_a; i++, nt++) {
            tok[nt] = step == 0 ? pa[i] : next[0];
            pos[nt] = na + i;
        }
        fs[ns++] = (struct fwd_seq){take_a, na, sa.blocks, sa.n_blocks, 1};
        for (int i = 0; i < take_b; i++, nt++) {
            tok[nt] = step <= 1 ? pb[nb + i] : next[1];
            pos[nt] = nb + i;
        }
        fs[ns++] = (struct fwd_seq){take_b, nb, sb.blocks, sb.n_blocks, step > 0};
        struct fwd_batch b = {ns, fs, nt, tok, pos};
        if (forward_step(ref, &b, lr, &err) != TL_OK) fail_msg("%s ref: %s", what, err.msg);
        if (forward_step(tp, &b, lt, &err) != TL_OK) fail_msg("%s sharded: %s", what, err.msg);
        int nl = step > 0 ? 2 : 1;
        for (int i = 0; i < nl; i++) {
            double e = fixture_rel_err_f(lt + (size_t)i * V, lr + (size_t)i * V, V);
            if (e > worst) worst = e;
            if (e > TOL_SHARD)
                fail_msg("%s step %d row %d: logits rel err %.3g > %g", what, step, i, e,
                         TOL_SHARD);
            int gr = argmax(lr + (size_t)i * V, V), gt = argmax(lt + (size_t)i * V, V);
            if (gr != gt) fail_msg("%s step %d row %d: greedy %d vs %d", what, step, i, gt, gr);
        }
        next[0] = argmax(lr, V);
        if (step > 0) next[1] = argmax(lr + V, V);
        na += take_a, nb += take_b;
    }

    /* forward_step_sample: greedy on rank 0's host sampler picks what the whole model picks */
    struct sampler *smp = NULL;
    assert_int_equal(sampler_create(V, &smp, &err), TL_OK);
    struct sampling_params sp;
    sampling_params_default(&sp);
    sp.temperature = 0.0f;
    struct sampler_rng rng[2];
    sampler_rng_seed(&rng[0], 1), sampler_rng_seed(&rng[1], 2);
    assert_int_equal(kvcache_seq_reserve(kv, &sa, na + 1, &err), TL_OK);
    assert_int_equal(kvcache_seq_reserve(kv, &sb, nb + 1, &err), TL_OK);
    struct fwd_seq fs[2] = {{1, na, sa.blocks, sa.n_blocks, 1}, {1, nb, sb.blocks, sb.n_blocks, 1}};
    tok[0] = next[0], tok[1] = next[1], pos[0] = na, pos[1] = nb;
    struct fwd_batch b = {2, fs, 2, tok, pos};
    struct fwd_sample s[2] = {{&sp, &rng[0], pa, 11, NULL, 0}, {&sp, &rng[1], pb, 5, NULL, 0}};
    int32_t ids_ref[2], ids_tp[2];
    if (forward_step_sample(ref, &b, s, smp, ids_ref, &err) != TL_OK)
        fail_msg("%s sample ref: %s", what, err.msg);
    if (forward_step_sample(tp, &b, s, smp, ids_tp, &err) != TL_OK)
        fail_msg("%s sample sharded: %s", what, err.msg);
    assert_int_equal(ids_ref[0], ids_tp[0]);
    assert_int_equal(ids_ref[1], ids_tp[1]);

    sampler_destroy(smp);
    kvcache_seq_release(kv, &sa);
    kvcache_seq_release(kv, &sb);
    kvcache_destroy(kv);
    free(lr);
    free(lt);
    return worst;
}

static void check_model(const struct model *m, int world, const char *name) {
    struct cpu_lane ref;
    struct group gr;
    char what[128];
    snprintf(what, sizeof what, "%s, N=%d", name, world);
    lane_open(&ref, m, 16, 2);
    group_open(&gr, m, world, 16, 2);
    double e = compare_steps(ref.fw, gr.lane[0].fw, m->cfg.vocab_size, what);
    printf("%-58s max rel err %.2e\n", what, e);
    group_close(&gr);
    cpu_lane_close(&ref);
}

/* Qwen2: q/k/v biases, 2 KV heads: N = 2 splits them, N = 4 and 8 replicate each on 2 and 4
 * ranks; vocabulary 500 pads the last rank's rows. */
static const char *QWEN2 =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":96,"
    "\"num_hidden_layers\":2,\"num_attention_heads\":8,\"num_key_value_heads\":2,"
    "\"vocab_size\":500,\"max_position_embeddings\":128,\"rms_norm_eps\":1e-6,"
    "\"rope_theta\":10000,\"tie_word_embeddings\":false,\"torch_dtype\":\"float32\"}";
/* Llama with attention_bias (o_proj bias too: added once, by rank 0), tied embeddings, MHA. */
static const char *LLAMA_TIED =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,"
    "\"num_hidden_layers\":2,\"num_attention_heads\":8,\"num_key_value_heads\":8,"
    "\"vocab_size\":500,\"max_position_embeddings\":128,\"rms_norm_eps\":1e-5,"
    "\"attention_bias\":true,\"tie_word_embeddings\":true,\"torch_dtype\":\"bfloat16\"}";
/* Llama with head_dim 16 (q is wider than hidden), 4 KV heads: N = 8 replicates each on 2;
 * vocabulary 333 leaves whole ranks of padding at N = 8 (ceil(333/8) = 42 -> 64 rows each). */
static const char *LLAMA_HD =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":48,\"head_dim\":16,"
    "\"intermediate_size\":64,\"num_hidden_layers\":3,\"num_attention_heads\":8,"
    "\"num_key_value_heads\":4,\"vocab_size\":333,\"max_position_embeddings\":128,"
    "\"rms_norm_eps\":1e-5,\"tie_word_embeddings\":false,\"torch_dtype\":\"float32\"}";

static void test_qwen2_kv_split_and_replicated(void **state) {
    (void)state;
    struct model *m = dummy(QWEN2, 7, TL_DTYPE_F32);
    for (int w = 2; w <= 8; w *= 2) check_model(m, w, "qwen2 8 heads / 2 KV, biases, f32");
    model_free(m);
}

static void test_llama_tied_o_bias(void **state) {
    (void)state;
    struct model *m = dummy(LLAMA_TIED, 11, TL_DTYPE_BF16);
    assert_true(m->cfg.o_bias && m->cfg.tie_word_embeddings);
    for (int w = 2; w <= 8; w *= 2) check_model(m, w, "llama 8 heads / 8 KV, o bias, tied, bf16");
    model_free(m);
}

static void test_llama_head_dim(void **state) {
    (void)state;
    struct model *m = dummy(LLAMA_HD, 13, TL_DTYPE_F32);
    for (int w = 2; w <= 8; w *= 2) check_model(m, w, "llama 8 heads / 4 KV, head_dim 16, f32");
    model_free(m);
}

/* The committed HF fixtures, sharded at every size they allow: last-position logits of each
 * prompt against HF's fp32 run, and against the unsharded engine. */
static void test_fixtures_against_hf(void **state) {
    (void)state;
    const char *names[] = {"qwen2-f32", "llama3-f32", "llama-tied-bf16"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        struct fixture fx;
        if (fixture_open(names[k], &fx) != 0) fail_msg("fixture %s", names[k]);
        const struct config *c = &fx.m->cfg;
        int V = c->vocab_size, checked = 0;
        double *ref = malloc((size_t)V * sizeof *ref);
        float *lt = malloc((size_t)V * sizeof *lt), *lr = malloc((size_t)V * sizeof *lr);
        for (int w = 2; w <= 8; w *= 2) {
            struct tl_err err = {{0}};
            if (tp_check(c, w, &err) != TL_OK) continue;
            struct group gr;
            struct cpu_lane whole;
            group_open(&gr, fx.m, w, FIXTURE_MAX_LEN, 1);
            lane_open(&whole, fx.m, FIXTURE_MAX_LEN, 1);
            for (int p = 0; p < fx.n_prompts; p++) {
                int n = fx.prompt_len[p];
                int32_t pos[FIXTURE_MAX_LEN], blocks[FIXTURE_MAX_LEN / BLOCK + 1];
                for (int i = 0; i < n; i++) pos[i] = i;
                for (int i = 0; i <= n / BLOCK; i++) blocks[i] = i;
                struct fwd_seq fs = {n, 0, blocks, n / BLOCK + 1, 1};
                struct fwd_batch b = {1, &fs, n, fx.prompts[p], pos};
                if (forward_step(gr.lane[0].fw, &b, lt, &err) != TL_OK ||
                    forward_step(whole.fw, &b, lr, &err) != TL_OK)
                    fail_msg("%s N=%d: %s", names[k], w, err.msg);
                if (fixture_row(&fx, "logits", p, ref, V) != 0) fail_msg("%s: logits", names[k]);
                double e_hf = fixture_rel_err(lt, ref, V), e_whole = fixture_rel_err_f(lt, lr, V);
                if (e_hf > TOL_REF || e_whole > TOL_SHARD)
                    fail_msg("%s N=%d prompt %d: rel err %.3g vs HF (%g), %.3g vs unsharded (%g)",
                             names[k], w, p, e_hf, TOL_REF, e_whole, TOL_SHARD);
            }
            printf("%-16s N=%d: %d prompts match HF and the unsharded engine\n", names[k], w,
                   fx.n_prompts);
            checked++;
            cpu_lane_close(&whole);
            group_close(&gr);
        }
        assert_true(checked > 0); /* every fixture splits at least in two */
        free(ref);
        free(lt);
        free(lr);
        fixture_close(&fx);
    }
}

static void expect_refusal(const struct config *c, int world, const char *frag, const char *valid) {
    struct tl_err err = {{0}};
    assert_int_equal(tp_check(c, world, &err), TL_ERR_INVALID);
    if (!strstr(err.msg, frag)) fail_msg("N=%d: '%s' lacks '%s'", world, err.msg, frag);
    if (!strstr(err.msg, valid))
        fail_msg("N=%d: '%s' lacks the valid sizes '%s'", world, err.msg, valid);
}

static struct config shape(int heads, int kv, int inter) {
    struct config c;
    memset(&c, 0, sizeof c);
    c.n_heads = heads, c.n_kv_heads = kv, c.intermediate_size = inter;
    c.hidden_size = heads * 8, c.head_dim = 8, c.vocab_size = 1000, c.n_layers = 1;
    return c;
}

/* Where vLLM refuses, with its words for the heads, and the sizes that do split the model. */
static void test_refusals(void **state) {
    (void)state;
    /* DeepSeek-R1-Distill-Qwen-14B's shape: 40 heads, 8 KV heads, 13824 */
    struct config c = shape(40, 8, 13824);
    expect_refusal(&c, 3,
                   "Total number of attention heads (40) must be divisible by tensor parallel "
                   "size (3).",
                   "1, 2, 4, 8");
    expect_refusal(&c, 5, "num_key_value_heads 8) must be divisible by tensor parallel size (5)",
                   "1, 2, 4, 8");
    expect_refusal(&c, 16, "Total number of attention heads (40)", "1, 2, 4, 8");
    struct tl_err err;
    for (int w = 1; w <= 8; w *= 2) assert_int_equal(tp_check(&c, w, &err), TL_OK);
    /* fewer KV heads than ranks, but the ranks are no multiple of them */
    c = shape(12, 3, 96);
    expect_refusal(&c, 4, "must be a multiple of the number of KV heads (num_key_value_heads 3)",
                   "1, 3, 6, 12");
    assert_int_equal(tp_check(&c, 6, &err), TL_OK); /* each KV head on 2 ranks */
    c = shape(8, 8, 100);
    expect_refusal(&c, 8, "intermediate_size (100) must be divisible by tensor parallel size (8)",
                   "1, 2, 4");
    expect_refusal(&c, 0, "at least 1", "1, 2, 4");

    /* tp_shard refuses the same, and leaves nothing behind */
    struct model *m = dummy(QWEN2, 1, TL_DTYPE_F32), *s = (struct model *)1;
    assert_int_equal(tp_shard(m, 3, 0, &s, &err), TL_ERR_INVALID);
    assert_null(s);
    assert_non_null(strstr(err.msg, "Total number of attention heads (8) must be divisible by "
                                    "tensor parallel size (3)."));
    assert_non_null(strstr(err.msg, "1, 2, 4, 8"));
    model_free(m);

    /* the users' model, as its config.json says */
    struct config real;
    if (config_load(TL_SHARED_MODELS "/DeepSeek-R1-Distill-Qwen-14B", &real, &err) == TL_OK) {
        char v[128];
        assert_int_equal(tp_valid_sizes(&real, v, sizeof v), 4);
        assert_string_equal(v, "1, 2, 4, 8");
    }
}

/* The vocabulary rule and one rank's config. */
static void test_rank_config(void **state) {
    (void)state;
    assert_int_equal(tp_vocab_part(500, 1), 500);
    assert_int_equal(tp_vocab_part(500, 2), 256);
    assert_int_equal(tp_vocab_part(500, 8), 64);
    assert_int_equal(tp_vocab_part(152064, 2), 76032);
    assert_int_equal(tp_vocab_part(151936, 8), 19008);
    struct config c = shape(40, 8, 13824), r;
    c.o_bias = true;
    tp_rank_config(&c, 4, 0, &r);
    assert_int_equal(r.n_heads, 10);
    assert_int_equal(r.n_kv_heads, 2);
    assert_int_equal(r.intermediate_size, 3456);
    assert_int_equal(r.vocab_size, 256);
    assert_int_equal(r.head_dim, 8);
    assert_true(r.o_bias);
    tp_rank_config(&c, 4, 1, &r);
    assert_false(r.o_bias); /* added once, on rank 0 */
    c = shape(8, 2, 96);
    tp_rank_config(&c, 8, 5, &r);
    assert_int_equal(r.n_kv_heads, 1); /* replicated */

    /* a shard's tensors: rank 1 of 4 of the Qwen2 model */
    struct tl_err err;
    struct model *m = dummy(QWEN2, 3, TL_DTYPE_F32), *s = NULL;
    assert_int_equal(tp_shard(m, 4, 1, &s, &err), TL_OK);
    const struct model_layer *L = &m->layers[1], *S = &s->layers[1];
    assert_int_equal(s->cfg.n_heads, 2);
    assert_int_equal(s->cfg.n_kv_heads, 1);
    assert_int_equal(S->wq.rows, 16);
    assert_ptr_equal(S->wq.data, (const float *)L->wq.data + 16 * 64);
    /* heads 2..3 use KV head 0 of 2: rank 1 holds KV head 0 */
    assert_ptr_equal(S->wk.data, L->wk.data);
    assert_ptr_equal(S->bv.data, L->bv.data);
    assert_int_equal(S->bq.cols, 16);
    assert_int_equal(S->wo.rows, 64);
    assert_int_equal(S->wo.cols, 16);
    for (int r = 0; r < 64; r++)
        for (int k = 0; k < 16; k++)
            assert_true(((const float *)S->wo.data)[r * 16 + k] ==
                        ((const float *)L->wo.data)[r * 64 + 16 + k]);
    assert_int_equal(S->w_down.cols, 24);
    assert_int_equal(s->embed.rows, 128);
    assert_int_equal(s->tp.vocab_start, 128);
    assert_int_equal(s->tp.vocab_total, 500);
    model_free(s);
    /* the last rank's rows past the vocabulary are zeros */
    assert_int_equal(tp_shard(m, 4, 3, &s, &err), TL_OK);
    const float *e = s->embed.data;
    assert_true(e[(500 - 384 - 1) * 64] == ((const float *)m->embed.data)[499 * 64]);
    for (int i = (500 - 384) * 64; i < 128 * 64; i++) assert_true(e[i] == 0.0f);
    model_free(s);
    model_free(m);
}

/* A rank whose step fails breaks the group: rank 0 gets an error instead of waiting forever,
 * and the serving ranks end with it. */
static void test_failure_is_reported(void **state) {
    (void)state;
    struct model *m = dummy(QWEN2, 5, TL_DTYPE_F32);
    struct group gr;
    group_open(&gr, m, 2, 16, 2);
    struct tl_err err = {{0}};
    int32_t tok[1] = {3}, pos[1] = {0}, block[1] = {NBLOCKS - 1};
    struct fwd_seq fs = {1, 0, block, 1, 1};
    struct fwd_batch b = {1, &fs, 1, tok, pos};
    float *l = malloc(500 * sizeof *l);
    assert_int_equal(forward_step(gr.lane[0].fw, &b, l, &err), TL_OK);
    /* rank 1 runs steps only through forward_serve */
    assert_int_not_equal(forward_step(gr.lane[1].fw, &b, l, &err), TL_OK);
    assert_non_null(strstr(err.msg, "forward_serve"));
    /* a block id outside the KV cache: every rank's backend refuses it after rank 0 sent it */
    block[0] = NBLOCKS + 5;
    assert_int_not_equal(forward_step(gr.lane[0].fw, &b, l, &err), TL_OK);
    block[0] = 0;
    assert_int_not_equal(forward_step(gr.lane[0].fw, &b, l, &err), TL_OK); /* broken for good */
    assert_int_not_equal(tp_local_shutdown(gr.g, &err), TL_OK);
    assert_non_null(strstr(err.msg, "rank 1"));
    for (int r = 0; r < 2; r++) {
        cpu_lane_close(&gr.lane[r]);
        model_free(gr.shard[r]);
    }
    tp_local_destroy(gr.g);
    free(l);
    model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_rank_config),
        cmocka_unit_test(test_qwen2_kv_split_and_replicated),
        cmocka_unit_test(test_llama_tied_o_bias),
        cmocka_unit_test(test_llama_head_dim),
        cmocka_unit_test(test_fixtures_against_hf),
        cmocka_unit_test(test_failure_is_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
