/* test_planner: the planner's arithmetic against hand counts (bytes per layer of the 14B and
 * 70B configs, tied embeddings, KV per token, the attention workspace, the GPU budget), the
 * start-up check's refusal numbers, the step-time model's invariants, monotonicity (more GPU
 * memory never predicts slower), policy and --cpu-offload-gb forcing, and the ceilings cache. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calibrate.h"
#include "config.h"
#include "forward.h"
#include "placement.h"
#include "planner.h"
#include "sizes.h"
#include "stepmodel.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

static struct config load_cfg(const char *name) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", TL_SHARED_MODELS, name);
    struct config c;
    struct tl_err err;
    if (config_load(dir, &c, &err) != TL_OK) fail_msg("%s", err.msg);
    return c;
}

/* The H100 machine's figures (../shared/ceilings.md); CPU matmul figures estimated. */
static struct ceilings h100(void) {
    struct ceilings c;
    memset(&c, 0, sizeof c);
    snprintf(c.gpu_name, sizeof c.gpu_name, "H100");
    c.gpu_measured = true;
    c.cpu_threads = 16;
    c.cpu_read_gbps = 125.7, c.cpu_read_busy_gbps = 110;
    c.cpu_sgemm_gflops = 1066;
    c.cpu_gemv1_gbps = 119.4, c.cpu_gemv8_gbps = 100;
    c.cpu_mm16_gflops = 250, c.cpu_mm64_gflops = 700;
    c.cpu_attn_gflops = 50, c.cpu_dispatch_us = 4.4;
    c.gpu_hbm_gbps = 2970, c.gpu_gemm_tflops = 759;
    c.pcie_h2d_gbps = 51.3, c.pcie_d2h_gbps = 50.1, c.pcie_h2d_busy_gbps = 48;
    return c;
}

static struct planner_inputs inputs_14b(double gpu_gb, int mml) {
    struct planner_inputs in;
    planner_inputs_default(&in);
    in.cfg = load_cfg("DeepSeek-R1-Distill-Qwen-14B");
    in.gpu_total_bytes = (size_t)(80 * GIB);
    in.gpu_used_bytes = (size_t)(0.5 * GIB);
    in.gpu_memory_gb = gpu_gb;
    in.host_bytes = (size_t)(120 * GIB);
    in.cpu_threads = 16;
    in.max_model_len = mml;
    in.expected_len = 576;
    return in;
}

/* ---------------- sizes ---------------- */

static void test_bytes_14b(void **state) {
    (void)state;
    struct config c = load_cfg("DeepSeek-R1-Distill-Qwen-14B");
    /* hidden 5120, inter 13824, 40 q heads / 8 kv heads of 128, Qwen2 q/k/v biases, bf16:
     * norms 2 x 5120, q 5120x5120, k and v 1024x5120, o 5120x5120, biases 5120 + 2 x 1024,
     * gate/up/down 3 x 13824x5120 parameters, 2 bytes each (all multiples of 256 already). */
    size_t layer = 2 * (2 * 5120 + 5120 * 5120 + 2 * 1024 * 5120 + 5120 * 5120 + 5120 + 2 * 1024 +
                        3 * (size_t)13824 * 5120);
    assert_int_equal(layer, 550537216);
    assert_int_equal(sizes_layer_bytes(&c, TL_DTYPE_BF16), layer);
    assert_int_equal(sizes_layer_bytes(&c, TL_DTYPE_F32), 2 * layer);
    size_t embed = (size_t)152064 * 5120 * 2;
    assert_int_equal(sizes_embed_bytes(&c, TL_DTYPE_BF16), embed);
    assert_int_equal(sizes_lm_head_bytes(&c, TL_DTYPE_BF16), embed); /* untied: its own */
    assert_int_equal(sizes_final_norm_bytes(&c, TL_DTYPE_BF16), 5120 * 2);
    /* 14,770,033,664 parameters (test_config) x 2 bytes */
    assert_int_equal(sizes_model_bytes(&c, TL_DTYPE_BF16), (size_t)14770033664ull * 2);
    assert_int_equal(sizes_model_bytes(&c, TL_DTYPE_BF16), 48 * layer + 2 * embed + 10240);
    /* 2 (K, V) x 8 kv heads x 128 x 2 bytes per layer; 48 layers = 192 KiB per token */
    assert_int_equal(sizes_kv_token_layer_bytes(&c, TL_DTYPE_BF16), 4096);
    assert_int_equal(48 * sizes_kv_token_layer_bytes(&c, TL_DTYPE_BF16), 192 * 1024);
    assert_int_equal(sizes_kv_token_layer_bytes(&c, TL_DTYPE_F32), 8192);
    assert_true(fabs(sizes_layer_matmul_params(&c) - 275251200.0) < 0.5);
}

static void test_bytes_70b_and_tied(void **state) {
    (void)state;
    struct config c = load_cfg("DeepSeek-R1-Distill-Llama-70B");
    /* no biases: norms 2 x 8192, q and o 8192x8192, k and v 1024x8192, MLP 3 x 28672x8192 */
    size_t layer = 2 * (2 * 8192 + 2 * (size_t)8192 * 8192 + 2 * (size_t)1024 * 8192 +
                        3 * (size_t)28672 * 8192);
    assert_int_equal(sizes_layer_bytes(&c, TL_DTYPE_BF16), layer);
    assert_int_equal(sizes_model_bytes(&c, TL_DTYPE_BF16),
                     80 * layer + 2 * (size_t)128256 * 8192 * 2 + 8192 * 2);
    /* tied: lm_head is the embedding table, counted once */
    c.tie_word_embeddings = true;
    assert_int_equal(sizes_model_bytes(&c, TL_DTYPE_BF16),
                     80 * layer + (size_t)128256 * 8192 * 2 + 8192 * 2);
    /* a bias of 1-D odd length still takes a whole 256-byte unit, as gpu_backend lays it out */
    struct config d = load_cfg("DeepSeek-R1-Distill-Qwen-14B");
    d.hidden_size = 5000, d.head_dim = 125, d.intermediate_size = 13000;
    size_t q = 40 * 125, kv = 8 * 125, h = 5000, in = 13000, up = 0;
    size_t t[] = {h, q * h, kv * h, kv * h, h * q, q, kv, kv, h, in * h, in * h, h * in};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) up += (t[i] * 2 + 255) / 256 * 256;
    assert_int_equal(sizes_layer_bytes(&d, TL_DTYPE_BF16), up);
}

static void test_attention_workspace(void **state) {
    (void)state;
    struct config c = load_cfg("DeepSeek-R1-Distill-Qwen-14B");
    /* 40 q / 8 kv heads: one 16-row tile per kv head. One sequence: 8 CTAs, so 32 splits of
     * 128 keys at max_seq_len 4096: 32 x 40 x (128 floats + 2 floats) x 4 bytes. */
    assert_int_equal(sizes_attention_workspace_bytes(&c, 16, 1, 4096), 32 * 40 * 130 * 4);
    /* up to 2048 tokens: the largest is 31 sequences x 2 splits (248 CTAs < 256) */
    assert_int_equal(sizes_attention_workspace_bytes(&c, 16, 2048, 4096), 31 * 40 * 2 * 130 * 4);
    /* short sequences never split: at most ceil(64 / 64) = 1 split */
    assert_int_equal(sizes_attention_workspace_bytes(&c, 16, 2048, 64), 0);
}

/* ---------------- memory and the start-up check ---------------- */

static void test_budget_and_resident(void **state) {
    (void)state;
    struct planner_inputs in = inputs_14b(80, 4096);
    in.gpu_memory_gb = 0; /* 0.9 x 80 GiB - 0.5 GiB */
    struct placement pl;
    struct planner_memory m;
    struct tl_err err;
    placement_init_resident(&pl, 48, TL_DTYPE_BF16, 16);
    assert_int_equal(planner_memory_of(&in, &pl, &m, &err), TL_OK);
    size_t budget = (size_t)(0.9 * 80 * GIB) - (size_t)(0.5 * GIB);
    assert_int_equal(m.gpu_budget_bytes, budget);
    size_t act = forward_activation_bytes(&in.cfg, TL_DTYPE_BF16, 2048, 256);
    size_t ws = sizes_gpu_workspace_bytes(&in.cfg, 16, 2048, 256, 4096, false);
    size_t fixed = sizes_model_bytes(&in.cfg, TL_DTYPE_BF16) + act + ws;
    assert_int_equal(m.gpu_fixed_bytes, fixed);
    size_t block = 48 * 16 * 4096;
    assert_int_equal(m.num_blocks, (int)((budget - fixed) / block));
    assert_int_equal(pl.kv_gpu_block_bytes, block);
    assert_int_equal(pl.kv_host_block_bytes, 0);
    assert_true(m.fits);
    assert_int_equal(m.offload_bytes, 0);
    /* the cap: --gpu-memory-gb 24 on an 80 GiB card */
    in.gpu_memory_gb = 24;
    assert_int_equal(planner_memory_of(&in, &pl, &m, &err), TL_OK);
    assert_int_equal(m.gpu_budget_bytes, (size_t)(24 * GIB) - (size_t)(0.5 * GIB));
    assert_false(m.gpu_fits);
    /* no device: the cap is --gpu-memory-gb; without it there is no budget */
    in.gpu_total_bytes = 0;
    assert_int_equal(planner_memory_of(&in, &pl, &m, &err), TL_OK);
    assert_int_equal(m.gpu_budget_bytes, (size_t)(24 * GIB) - (size_t)(0.5 * GIB));
    in.gpu_memory_gb = 0;
    assert_int_equal(planner_memory_of(&in, &pl, &m, &err), TL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "--gpu-memory-gb"));
}

static void test_check_ok(void **state) {
    (void)state;
    struct planner_inputs in = inputs_14b(40, 4096);
    struct planner_memory m;
    struct tl_err err;
    assert_int_equal(planner_check(&in, NULL, &m, &err), TL_OK);
    size_t budget = (size_t)(40 * GIB) - (size_t)(0.5 * GIB);
    assert_int_equal(m.num_blocks, (int)((budget - m.gpu_fixed_bytes) / (48 * 16 * 4096)));
    assert_int_equal(m.gpu_kv_bytes, (size_t)m.num_blocks * 48 * 16 * 4096);
    assert_int_equal(m.host_kv_bytes, 0);
}

/* Pulls the number after `key` out of a message. */
static double number_after(const char *msg, const char *key) {
    const char *p = strstr(msg, key);
    if (!p) fail_msg("'%s' not in: %s", key, msg);
    return strtod(p + strlen(key), NULL);
}

static void test_check_refuses_kv(void **state) {
    (void)state;
    /* 40 GiB: the weights fit, one sequence of 131072 tokens (24 GiB of KV) does not */
    struct planner_inputs in = inputs_14b(40, 131072);
    struct planner_memory m;
    struct tl_err err;
    assert_int_equal(planner_check(&in, NULL, &m, &err), TL_ERR_NOMEM);
    size_t budget = (size_t)(40 * GIB) - (size_t)(0.5 * GIB);
    size_t fixed = sizes_model_bytes(&in.cfg, TL_DTYPE_BF16) +
                   forward_activation_bytes(&in.cfg, TL_DTYPE_BF16, 2048, 256) +
                   sizes_gpu_workspace_bytes(&in.cfg, 16, 2048, 256, 131072, false);
    size_t free_kv = budget - fixed, block = 48 * 16 * 4096;
    char want[200];
    snprintf(want, sizeof want,
             "max-model-len 131072 needs 24.00 GiB of KV per sequence, %.2f GiB "
             "is free after weights (27.5 GiB)",
             free_kv / GIB);
    assert_non_null(strstr(err.msg, want));
    /* the KV free at this length holds free_kv / block blocks; a shorter max-model-len also
     * shrinks the workspaces a little, so the largest that fits is at least that */
    int fit = (int)number_after(err.msg, "lower --max-model-len to ");
    assert_true(fit >= (int)(free_kv / block) * 16 && fit < (int)(free_kv / block) * 16 + 64);
    /* the largest length it names does fit, one block more does not */
    struct planner_inputs t = in;
    t.max_model_len = fit;
    assert_int_equal(planner_check(&t, NULL, &m, &err), TL_OK);
    t.max_model_len = fit + 16;
    assert_int_equal(planner_check(&t, NULL, &m, &err), TL_ERR_NOMEM);
    /* "raise the GPU budget by X GiB": fixed + 24 GiB - budget */
    assert_int_equal(planner_check(&in, NULL, &m, &err), TL_ERR_NOMEM);
    double raise = number_after(err.msg, "raise the GPU budget by ");
    assert_true(fabs(raise - (fixed + 8192.0 * block - budget) / GIB) < 0.006);
    /* --cpu-offload-gb N makes it fit: N does (streamed layers, as vLLM offloads), N - 1 not */
    int n = (int)number_after(err.msg, "--cpu-offload-gb ");
    assert_true(n > 0);
    struct ceilings ce = h100();
    struct planner_result r;
    t = in;
    t.policy = PLANNER_POLICY_STREAM;
    t.cpu_offload_gb = n;
    assert_int_equal(planner_plan(&t, &ce, &r, &err), TL_OK);
    assert_true(r.mem.offload_bytes >= n * GIB);
    assert_int_equal(planner_check(&t, &r.pl, &m, &err), TL_OK);
    t.cpu_offload_gb = n - 1;
    assert_int_equal(planner_plan(&t, &ce, &r, &err), TL_ERR_NOMEM);
}

static void test_check_refuses_weights(void **state) {
    (void)state;
    struct planner_inputs in = inputs_14b(24, 4096);
    struct planner_memory m;
    struct tl_err err;
    assert_int_equal(planner_check(&in, NULL, &m, &err), TL_ERR_NOMEM);
    assert_non_null(strstr(err.msg, "the weights on the GPU need 27.5 GiB (bfloat16)"));
    assert_non_null(strstr(err.msg, "the GPU budget is 23.5 GiB"));
    int n = (int)number_after(err.msg, "--cpu-offload-gb ");
    /* by hand: 27.5 GiB of weights + 0.5 of activations/workspace + a slot (0.51) + KV of one
     * 4096-token sequence (0.75) against 23.5 GiB: about 5.8 GiB must move */
    assert_true(n >= 5 && n <= 7);
}

static void test_check_override(void **state) {
    (void)state;
    struct planner_inputs in = inputs_14b(40, 4096);
    struct planner_memory m;
    struct tl_err err;
    in.num_gpu_blocks_override = 300; /* one 4096-token sequence needs 256 */
    assert_int_equal(planner_check(&in, NULL, &m, &err), TL_OK);
    assert_int_equal(m.num_blocks, 300);
    in.num_gpu_blocks_override = 255;
    assert_int_equal(planner_check(&in, NULL, &m, &err), TL_ERR_NOMEM);
    in.num_gpu_blocks_override = 1000000;
    assert_int_equal(planner_check(&in, NULL, &m, &err), TL_ERR_NOMEM);
    assert_non_null(strstr(err.msg, "--num-gpu-blocks-override 1000000"));
}

/* ---------------- the step-time model ---------------- */

static void test_stepmodel_invariants(void **state) {
    (void)state;
    struct config c = load_cfg("DeepSeek-R1-Distill-Qwen-14B");
    struct ceilings ce = h100();
    struct placement pl;
    struct stepmodel_result r;
    placement_init_resident(&pl, 48, TL_DTYPE_BF16, 16);
    struct stepmodel_step one = {1, 1, 512};
    stepmodel_predict(&c, &pl, &ce, &one, &r);
    /* the constants were fitted to the measured all-resident batch-1 step: 10.89 ms */
    assert_true(fabs(r.step_s - 10.89e-3) < 0.05 * 10.89e-3);
    assert_true(r.pcie_s == 0 && r.cpu_s < 1e-3 && r.hops == 0);
    /* 12 streamed layers: PCIe bounds the step from below; the chain of compute too */
    for (int l = 0; l < 12; l++) pl.layer[l * 4] = PLACEMENT_GPU_STREAMED;
    for (int k = 1; k <= 3; k++) {
        pl.stream_slots = k;
        stepmodel_predict(&c, &pl, &ce, &one, &r);
        double copy = 12 * 550537216.0 / (51.3e9);
        assert_true(fabs(r.pcie_s - copy) < 1e-9);
        assert_true(r.step_s >= copy - 1e-9);
        assert_true(r.step_s >= r.gpu_s);
        assert_true(r.step_s < copy * 1.1); /* spread evenly, PCIe never waits long */
    }
    /* CPU layers: no overlap within a step between the GPU and CPU chain */
    placement_init_resident(&pl, 48, TL_DTYPE_BF16, 16);
    for (int l = 0; l < 6; l++) pl.layer[l] = PLACEMENT_CPU;
    stepmodel_predict(&c, &pl, &ce, &one, &r);
    assert_int_equal(r.hops, 2);
    assert_true(r.step_s >= r.gpu_s + r.cpu_s + r.hop_s - 1e-9);
    /* a CPU layer at batch 1 reads its weights at the GEMV rate */
    double cpu_layer = 550537216.0 / 119.4e9;
    assert_true(r.cpu_s > 6 * cpu_layer && r.cpu_s < 6 * cpu_layer * 1.2);
    /* bigger batches never take less time per step */
    double prev = 0;
    for (int b = 1; b <= 256; b *= 2) {
        struct stepmodel_step s = {b, b, 576};
        stepmodel_predict(&c, &pl, &ce, &s, &r);
        assert_true(r.step_s >= prev);
        prev = r.step_s;
    }
}

static void test_order_matters(void **state) {
    (void)state;
    /* 6 CPU and 4 streamed layers, one slot: with the CPU layers in one block the copies
     * cannot run ahead during it; spread between the streamed ones, PCIe never idles */
    struct config c = load_cfg("DeepSeek-R1-Distill-Qwen-14B");
    struct ceilings ce = h100();
    struct placement a, b;
    struct stepmodel_result ra, rb;
    struct stepmodel_step one = {1, 1, 512};
    placement_init_resident(&a, 48, TL_DTYPE_BF16, 16);
    a.stream_slots = 1;
    b = a;
    for (int l = 0; l < 6; l++) a.layer[l] = PLACEMENT_CPU;
    for (int g = 0; g < 4; g++) a.layer[6 + g] = PLACEMENT_GPU_STREAMED;
    for (int g = 0; g < 4; g++) {
        int base = g * 12;
        b.layer[base] = PLACEMENT_CPU;
        if (g < 2) b.layer[base + 1] = PLACEMENT_CPU;
        b.layer[base + 11] = PLACEMENT_GPU_STREAMED;
    }
    assert_int_equal(placement_count(&b, PLACEMENT_CPU), 6);
    stepmodel_predict(&c, &a, &ce, &one, &ra);
    stepmodel_predict(&c, &b, &ce, &one, &rb);
    assert_true(rb.step_s < 0.8 * ra.step_s);
    assert_true(ra.stall_s > rb.stall_s);
}

/* Guests (placement.h): the CPU layers' prefill on the GPU. Memory: one more staging slot, the
 * CPU layers' KV on the GPU as well, their pinned images on the host. The step model: a step of
 * guest_min_tokens or more runs them on the GPU, their weights over PCIe and no CPU layer time;
 * a smaller one on the CPU, as without guests. */
static void test_guests(void **state) {
    (void)state;
    struct planner_inputs in = inputs_14b(24, 4096);
    struct ceilings ce = h100();
    struct tl_err err;
    struct placement p, q;
    placement_init_resident(&p, 48, TL_DTYPE_BF16, 16);
    for (int g = 0; g < 4; g++) {
        p.layer[g * 12] = PLACEMENT_CPU;
        p.layer[g * 12 + 11] = PLACEMENT_GPU_STREAMED;
    }
    p.embed = PLACEMENT_CPU;
    p.stream_slots = 1;
    q = p;
    int gmin = stepmodel_guest_min_tokens(&in.cfg, &p, &ce, 2048);
    assert_true(gmin > 4 && gmin <= 2048);
    q.guest_min_tokens = gmin;
    assert_false(placement_guests(&p));
    assert_true(placement_guests(&q));
    struct planner_memory mp, mq;
    assert_int_equal(planner_memory_of(&in, &p, &mp, &err), TL_OK);
    assert_int_equal(planner_memory_of(&in, &q, &mq, &err), TL_OK);
    size_t layer = sizes_layer_bytes(&in.cfg, TL_DTYPE_BF16);
    size_t kv_layer = (size_t)16 * sizes_kv_token_layer_bytes(&in.cfg, TL_DTYPE_BF16);
    assert_int_equal(mq.gpu_staging_bytes, mp.gpu_staging_bytes + layer);
    assert_int_equal(mq.host_weight_bytes, mp.host_weight_bytes + 4 * layer);
    assert_int_equal(p.kv_gpu_block_bytes, 44 * kv_layer);
    assert_int_equal(q.kv_gpu_block_bytes, 48 * kv_layer);
    assert_true(mq.num_blocks < mp.num_blocks);
    if (placement_validate(&q, &in.cfg, &err) != TL_OK) fail_msg("%s", err.msg);
    char d[256];
    placement_describe(&q, d, sizeof d);
    assert_non_null(strstr(d, "gpu_prefill>="));

    /* a 2048-token chunk: on the CPU the four layers cost seconds; as guests, their copies */
    struct stepmodel_step chunk = {1, 2048, 2048}, dec = {4, 4, 576};
    struct stepmodel_result rp, rq;
    stepmodel_predict(&in.cfg, &p, &ce, &chunk, &rp);
    stepmodel_predict(&in.cfg, &q, &ce, &chunk, &rq);
    assert_true(rp.cpu_s > 1.0);
    assert_true(rq.cpu_s < 0.01 * rp.cpu_s);
    /* the 4 guests' copies beside the 4 streamed layers', at the unloaded PCIe rate (the CPU
     * computes no layer in the step) */
    assert_true(fabs(rq.pcie_s - 8.0 * (double)layer / (ce.pcie_h2d_gbps * 1e9)) < 1e-9);
    assert_true(rq.step_s < 0.2 * rp.step_s);
    /* a decode step under the threshold: the CPU runs them; the K/V mirror costs a little */
    stepmodel_predict(&in.cfg, &p, &ce, &dec, &rp);
    stepmodel_predict(&in.cfg, &q, &ce, &dec, &rq);
    assert_true(rq.cpu_s >= rp.cpu_s);
    assert_true(rq.pcie_s == rp.pcie_s);
    assert_true(rq.step_s >= rp.step_s && rq.step_s < 1.05 * rp.step_s);
    q.guest_min_tokens = -1;
    assert_int_equal(placement_validate(&q, &in.cfg, &err), TL_ERR_INVALID);
}

/* ---------------- the plan ---------------- */

static void check_plan(const struct planner_inputs *in, const struct planner_result *r) {
    struct tl_err err;
    struct planner_inputs gpu; /* a placement is one GPU's: with tensor parallelism, its share */
    assert_int_equal(planner_rank_inputs(in, &gpu, &err), TL_OK);
    if (placement_validate(&r->pl, &gpu.cfg, &err) != TL_OK) fail_msg("%s", err.msg);
    const struct planner_memory *m = &r->mem;
    assert_true(m->fits);
    assert_true(m->gpu_fixed_bytes + m->gpu_kv_bytes <= m->gpu_budget_bytes);
    assert_true(m->host_weight_bytes + m->host_buffer_bytes + m->host_kv_bytes <=
                m->host_budget_bytes);
    assert_true(m->num_blocks * r->pl.block_size >= in->max_model_len);
    assert_true(r->expected.tok_s > 0);
    /* the best placement of each reported batch ranks at least as high as the chosen one at
     * that batch, by the search's order: holding the batch first, then end-to-end tok/s */
    for (int i = 0; i < PLANNER_NBATCH; i++) {
        int want = r->pred[i].batch < in->max_num_seqs ? r->pred[i].batch : in->max_num_seqs;
        bool best_full = r->best[i].concurrency >= want, pred_full = r->pred[i].concurrency >= want;
        assert_true(best_full || !pred_full);
        if (best_full == pred_full)
            assert_true(r->best[i].e2e_tok_s >= r->pred[i].e2e_tok_s * 0.995);
    }
    struct planner_memory mc;
    assert_int_equal(planner_check(in, &r->pl, &mc, &err), TL_OK);
    assert_int_equal(mc.num_blocks, m->num_blocks);
}

static void test_plan_fits_all(void **state) {
    (void)state;
    struct planner_inputs in = inputs_14b(0, 4096); /* 0.9 x 80 GiB */
    struct ceilings ce = h100();
    struct planner_result r;
    struct tl_err err;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
    check_plan(&in, &r);
    assert_int_equal(placement_count(&r.pl, PLACEMENT_GPU_RESIDENT), 48);
    assert_int_equal(r.pl.embed, PLACEMENT_GPU_RESIDENT);
    assert_int_equal(r.pl.lm_head, PLACEMENT_GPU_RESIDENT);
    assert_int_equal(r.pl.stream_slots, 0);
    assert_non_null(strstr(r.reason, "everything fits on the GPU"));
}

static void test_plan_24gb(void **state) {
    (void)state;
    struct ceilings ce = h100();
    struct planner_result r;
    struct tl_err err;
    for (int i = 0; i < 3; i++) {
        int b = i == 0 ? 1 : i == 1 ? 16 : 64;
        struct planner_inputs in = inputs_14b(24, 4096);
        in.expected_batch = b;
        assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
        check_plan(&in, &r);
        assert_true(placement_count(&r.pl, PLACEMENT_GPU_RESIDENT) < 48);
        /* the prediction at the expected batch is the best there is for it */
        assert_true(fabs(r.pred[i].tok_s - r.expected.tok_s) < 1e-9);
        assert_true(r.expected.tok_s >= r.best[i].tok_s / 1.005);
    }
    /* batch 1 wants PCIe and the CPU busy at once: both streamed and CPU layers (a
     * decode-dominated workload: one-token prompts) */
    struct planner_inputs in = inputs_14b(24, 4096);
    in.expected_batch = 1;
    in.expected_prompt_len = 1;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
    assert_true(placement_count(&r.pl, PLACEMENT_CPU) > 0);
    assert_true(placement_count(&r.pl, PLACEMENT_GPU_STREAMED) > 0);
    assert_true(r.expected.detail.pcie_s > 0.5 * r.expected.step_s);
    assert_true(r.expected.detail.cpu_s > 0.5 * r.expected.step_s);
}

static void test_monotone(void **state) {
    (void)state;
    struct ceilings ce = h100();
    struct tl_err err;
    int batches[] = {1, 16, 64};
    for (int bi = 0; bi < 3; bi++) {
        double prev = 0;
        for (int gb = 18; gb <= 72; gb += 6) {
            struct planner_inputs in = inputs_14b(gb, 4096);
            in.expected_batch = batches[bi];
            struct planner_result r;
            assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
            /* candidates within 0.5% count as equal and the one keeping more on the GPU wins
             * (planner.c's `better`), so "never slower" holds to that tie margin */
            if (r.expected.tok_s < prev / 1.005)
                fail_msg("batch %d: %d GiB predicts %.2f tok/s, less than %.2f with less memory",
                         batches[bi], gb, r.expected.tok_s, prev);
            prev = r.expected.tok_s > prev ? r.expected.tok_s : prev;
        }
    }
}

static void test_policies(void **state) {
    (void)state;
    struct ceilings ce = h100();
    struct planner_result r;
    struct tl_err err;
    struct planner_inputs in = inputs_14b(24, 4096);
    in.expected_batch = 1;
    in.expected_prompt_len = 1; /* decode-dominated: the decode step decides */
    in.policy = PLANNER_POLICY_STREAM;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
    check_plan(&in, &r);
    assert_int_equal(placement_count(&r.pl, PLACEMENT_CPU), 0);
    assert_true(r.pl.lm_head != PLACEMENT_CPU);
    assert_true(r.pl.stream_slots > 0);
    double stream_only = r.expected.tok_s;
    in.policy = PLANNER_POLICY_CPU;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
    check_plan(&in, &r);
    assert_int_equal(placement_streamed_units(&r.pl), 0);
    assert_int_equal(r.pl.stream_slots, 0);
    assert_true(placement_count(&r.pl, PLACEMENT_CPU) > 0);
    double cpu_only = r.expected.tok_s;
    in.policy = PLANNER_POLICY_AUTO;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
    /* auto chooses among both policies' placements and more, and at batch 1 with these
     * ceilings the mix of both (PCIe and CPU busy at once) beats either alone */
    assert_true(r.expected.tok_s > stream_only * 1.05 && r.expected.tok_s > cpu_only * 1.05);
    assert_true(placement_count(&r.pl, PLACEMENT_CPU) > 0 && placement_streamed_units(&r.pl) > 0);
}

/* Ranking counts the prompts' prefill: CPU layers compute a prefill chunk at the CPU's GEMM
 * rate, far below the GPU's, so long prompts at batch 16 move layers from the CPU to streaming,
 * and the chosen placement's end-to-end rate beats the decode-ranked one's on that workload. */
static void test_prefill_counts(void **state) {
    (void)state;
    struct ceilings ce = h100();
    struct planner_result dec, pre;
    struct tl_err err;
    struct planner_inputs in = inputs_14b(24, 4096);
    in.expected_batch = 16;
    in.expected_len = 576;
    in.expected_prompt_len = 1;
    assert_int_equal(planner_plan(&in, &ce, &dec, &err), TL_OK);
    in.expected_prompt_len = 512;
    assert_int_equal(planner_plan(&in, &ce, &pre, &err), TL_OK);
    check_plan(&in, &pre);
    assert_true(placement_count(&pre.pl, PLACEMENT_CPU) <= placement_count(&dec.pl, PLACEMENT_CPU));
    assert_true(pre.expected.prefill_s > 0);
    /* the e2e rate is output over prefill + decode, and below the decode rate */
    int conc = pre.expected.concurrency, O = 576 - 512;
    double e2e = conc * (double)O / (pre.expected.prefill_s + O * pre.expected.step_s);
    assert_true(fabs(e2e - pre.expected.e2e_tok_s) < 1e-6 * e2e);
    assert_true(pre.expected.e2e_tok_s < pre.expected.tok_s);
    if (placement_count(&dec.pl, PLACEMENT_CPU) > 0)
        assert_true(placement_count(&pre.pl, PLACEMENT_CPU) <
                    placement_count(&dec.pl, PLACEMENT_CPU));
}

static void test_cpu_offload_gb(void **state) {
    (void)state;
    struct ceilings ce = h100();
    struct planner_result r;
    struct tl_err err;
    struct planner_inputs in = inputs_14b(0, 4096); /* everything would fit */
    size_t layer = sizes_layer_bytes(&in.cfg, TL_DTYPE_BF16);
    for (int n = 1; n <= 9; n += 4) {
        in.cpu_offload_gb = n;
        assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
        check_plan(&in, &r);
        /* at least N GiB in host RAM, rounded up to whole layers */
        assert_true(r.mem.offload_bytes >= n * GIB);
        assert_true(r.mem.offload_bytes - layer < n * GIB);
    }
    in.cpu_offload_gb = 0;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
    assert_int_equal(r.mem.offload_bytes, 0);
    in.gpu_memory_gb = 24; /* 0 GiB offloaded cannot fit a 24 GiB card */
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_ERR_NOMEM);
}

static void test_tied_and_small(void **state) {
    (void)state;
    struct ceilings ce = h100();
    struct planner_result r;
    struct tl_err err;
    struct planner_inputs in;
    planner_inputs_default(&in);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/../../bench/models/qwen2.5-0.5b", TL_FIXTURES);
    assert_int_equal(config_load(dir, &in.cfg, &err), TL_OK);
    assert_true(in.cfg.tie_word_embeddings);
    in.gpu_memory_gb = 1.0;
    in.gpu_used_bytes = (size_t)(0.25 * GIB);
    in.host_bytes = (size_t)(8 * GIB);
    in.cpu_threads = 4;
    in.max_model_len = 2048;
    in.max_num_seqs = 16;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
    check_plan(&in, &r);
    assert_true((r.pl.embed == PLACEMENT_GPU_RESIDENT) == (r.pl.lm_head == PLACEMENT_GPU_RESIDENT));
}

static void test_nothing_fits(void **state) {
    (void)state;
    struct ceilings ce = h100();
    struct planner_result r;
    struct tl_err err;
    struct planner_inputs in = inputs_14b(24, 131072);
    in.host_bytes = (size_t)(40 * GIB);
    in.policy = PLANNER_POLICY_STREAM; /* the KV of every layer stays on the GPU */
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_ERR_NOMEM);
    assert_non_null(strstr(err.msg, "nearest settings that fit"));
    int len = (int)number_after(err.msg, "--max-model-len ");
    double gb = number_after(err.msg, "--gpu-memory-gb ");
    struct planner_inputs t = in;
    t.max_model_len = len;
    assert_int_equal(planner_plan(&t, &ce, &r, &err), TL_OK);
    t.max_model_len = len + 16;
    assert_int_equal(planner_plan(&t, &ce, &r, &err), TL_ERR_NOMEM);
    t = in;
    t.gpu_total_bytes = 0;
    t.gpu_memory_gb = gb;
    assert_int_equal(planner_plan(&t, &ce, &r, &err), TL_OK);
    t.gpu_memory_gb = gb - 0.25;
    assert_int_equal(planner_plan(&t, &ce, &r, &err), TL_ERR_NOMEM);
}

/* ---------------- tensor parallel ---------------- */

/* --tensor-parallel-size 2 of the 14B on two 24 GB cards: per GPU half the heads, KV heads, MLP
 * and vocabulary rows, all norms, everything resident, no offload. */
static void test_tp_14b_two_24gb(void **state) {
    (void)state;
    struct ceilings ce = h100();
    struct planner_result r;
    struct tl_err err;
    struct planner_inputs in = inputs_14b(24, 4096);
    in.tensor_parallel_size = 2;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
    check_plan(&in, &r);
    assert_int_equal(placement_count(&r.pl, PLACEMENT_GPU_RESIDENT), 48);
    assert_int_equal(r.pl.embed, PLACEMENT_GPU_RESIDENT);
    assert_int_equal(r.pl.lm_head, PLACEMENT_GPU_RESIDENT);
    assert_int_equal(r.mem.offload_bytes, 0);
    assert_int_equal(r.mem.host_weight_bytes, 0);
    /* 20 q heads and 4 KV heads of 128, intermediate 6912, q/k/v biases, both norms, bf16 */
    size_t layer = 2 * (2 * 5120 + 2560 * 5120 + 2 * 512 * 5120 + 5120 * 2560 + 2560 + 2 * 512 +
                        3 * (size_t)6912 * 5120);
    size_t vocab_rows = 76032; /* ceil(152064 / 2), a multiple of 64 already */
    size_t weights = 48 * layer + 2 * vocab_rows * 5120 * 2 + 5120 * 2;
    assert_int_equal(r.mem.gpu_weight_bytes, weights);
    assert_true(fabs((double)weights / GIB - 13.76) < 0.01);
    assert_int_equal(r.mem.gpu_comm_bytes, PLANNER_TP_COMM_RESERVE);
    /* KV per GPU: 4 of the 8 KV heads, K and V, bf16, 48 layers, 16 tokens a block */
    assert_int_equal(r.pl.kv_gpu_block_bytes, (size_t)48 * 16 * 2 * 4 * 128 * 2);
    assert_int_equal(r.mem.gpu_fixed_bytes, r.mem.gpu_weight_bytes + r.mem.gpu_activation_bytes +
                                                r.mem.gpu_workspace_bytes + r.mem.gpu_comm_bytes);
    assert_non_null(strstr(r.reason, "split over 2 GPUs"));
    /* one GPU of the same size cannot hold it resident */
    in.tensor_parallel_size = 1;
    in.cpu_offload_gb = 0;
    struct planner_memory m;
    assert_int_equal(planner_check(&in, NULL, &m, &err), TL_ERR_NOMEM);
    assert_null(strstr(err.msg, "--tensor-parallel-size")); /* no GPU ranks to offer yet */
}

/* The all-reduce arithmetic: 2 per layer and one after the embedding, each
 * 2 (N-1)/N x tokens x hidden x 2 bytes / link + latency, and the logits' all-gather
 * (N-1)/N x rows x N x part x 2 bytes / link + latency; the step time includes it. */
static void test_tp_allreduce_cost(void **state) {
    (void)state;
    struct ceilings ce = h100();
    struct planner_inputs in = inputs_14b(0, 4096);
    assert_true(planner_tp_comm_s(&in, &ce, 16, 16) == 0.0); /* one GPU: none */
    in.tensor_parallel_size = 4;
    in.tp_link_gbps = 25;
    in.tp_link_latency_us = 10;
    double ar = 2.0 * 3 / 4 * 16 * 5120 * 2 / 25e9 + 10e-6;
    double gather = 3.0 / 4 * 16 * 4 * 38016 * 2 / 25e9 + 10e-6; /* ceil(152064/4) = 38016 */
    double want = 97 * ar + gather;
    assert_true(fabs(planner_tp_comm_s(&in, &ce, 16, 16) - want) < 1e-12);
    /* the link defaults to the ceilings' PCIe rate, the latency to PLANNER_TP_LATENCY_US */
    in.tp_link_gbps = 0, in.tp_link_latency_us = 0;
    double ar_pcie = 2.0 * 3 / 4 * 5120 * 2 / 51.3e9 + PLANNER_TP_LATENCY_US * 1e-6;
    double g_pcie = 3.0 / 4 * 4 * 38016 * 2 / 51.3e9 + PLANNER_TP_LATENCY_US * 1e-6;
    assert_true(fabs(planner_tp_comm_s(&in, &ce, 1, 1) - (97 * ar_pcie + g_pcie)) < 1e-12);

    struct planner_result r;
    struct tl_err err;
    in.tp_link_gbps = 25;
    in.tp_link_latency_us = 10;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
    for (int i = 0; i < PLANNER_NBATCH; i++) {
        const struct planner_prediction *p = &r.pred[i];
        double c = planner_tp_comm_s(&in, &ce, p->concurrency, p->concurrency);
        assert_true(c > 0 && fabs(p->tp_comm_s - c) < 1e-15);
        assert_true(fabs(p->step_s - (p->detail.step_s + c)) < 1e-12);
    }
    /* over a fast link, four GPUs decode one sequence faster than one reads all the weights;
     * over a slow one with a high latency, the 97 all-reduces make it slower */
    struct planner_inputs one = inputs_14b(0, 4096);
    struct planner_result r1;
    one.expected_batch = 1;
    assert_int_equal(planner_plan(&one, &ce, &r1, &err), TL_OK);
    in.tp_link_gbps = 360, in.tp_link_latency_us = 5;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
    assert_true(r.pred[0].tok_s > 2.0 * r1.pred[0].tok_s);
    in.tp_link_gbps = 10, in.tp_link_latency_us = 200;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
    assert_true(r.pred[0].tok_s < r1.pred[0].tok_s);
}

/* Fewer KV heads than GPUs: each holds one, replicated, and pays for it in KV per GPU. */
static void test_tp_kv_replicated(void **state) {
    (void)state;
    struct ceilings ce = h100();
    struct planner_result r;
    struct tl_err err;
    struct planner_inputs in = inputs_14b(0, 4096);
    in.cfg.n_kv_heads = 2;
    in.tensor_parallel_size = 4;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
    assert_int_equal(r.pl.kv_gpu_block_bytes, (size_t)48 * 16 * 2 * 1 * 128 * 2);
    in.tensor_parallel_size = 2; /* one each, not replicated: the same bytes per GPU */
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
    assert_int_equal(r.pl.kv_gpu_block_bytes, (size_t)48 * 16 * 2 * 1 * 128 * 2);
}

/* Sizes vLLM refuses, offload with tensor parallelism, and the next size that fits. */
static void test_tp_refusals(void **state) {
    (void)state;
    struct ceilings ce = h100();
    struct planner_result r;
    struct planner_memory m;
    struct tl_err err;
    struct planner_inputs in = inputs_14b(24, 4096);
    in.tensor_parallel_size = 3;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "Total number of attention heads (40) must be divisible by "
                                    "tensor parallel size (3)."));
    assert_non_null(strstr(err.msg, "1, 2, 4, 8"));
    assert_int_equal(planner_check(&in, NULL, &m, &err), TL_ERR_INVALID);
    in.tensor_parallel_size = 2;
    in.cpu_offload_gb = 4;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "--cpu-offload-gb"));
    /* two 10 GB cards cannot hold 13.8 GiB each; four can (6.9 GiB each) */
    in = inputs_14b(10, 4096);
    in.tensor_parallel_size = 2;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_ERR_NOMEM);
    assert_non_null(strstr(err.msg, "or --tensor-parallel-size 4 fits"));
    assert_int_equal(planner_check(&in, NULL, &m, &err), TL_ERR_NOMEM);
    assert_non_null(strstr(err.msg, "or --tensor-parallel-size 4 fits"));
    in.tensor_parallel_size = 4;
    assert_int_equal(planner_plan(&in, &ce, &r, &err), TL_OK);
    check_plan(&in, &r);
}

static void test_validate(void **state) {
    (void)state;
    struct config c = load_cfg("DeepSeek-R1-Distill-Qwen-14B");
    struct placement p;
    struct tl_err err;
    placement_init_resident(&p, 48, TL_DTYPE_BF16, 16);
    p.kv_gpu_block_bytes = 48 * 16 * 4096;
    assert_int_equal(placement_validate(&p, &c, &err), TL_OK);
    p.layer[3] = PLACEMENT_GPU_STREAMED; /* no slots */
    assert_int_equal(placement_validate(&p, &c, &err), TL_ERR_INVALID);
    p.stream_slots = 1; /* a slot per streamed unit: nothing would stream */
    p.stream_slot_bytes = sizes_layer_bytes(&c, TL_DTYPE_BF16);
    assert_int_equal(placement_validate(&p, &c, &err), TL_ERR_INVALID);
    p.layer[7] = PLACEMENT_GPU_STREAMED;
    p.lm_head = PLACEMENT_GPU_STREAMED; /* 3 units: slots must divide them */
    p.stream_slots = 2;
    p.stream_slot_bytes = sizes_lm_head_bytes(&c, TL_DTYPE_BF16);
    assert_int_equal(placement_validate(&p, &c, &err), TL_ERR_INVALID);
    p.stream_slots = 1;
    p.stream_slot_bytes = sizes_layer_bytes(&c, TL_DTYPE_BF16); /* too small for lm_head */
    assert_int_equal(placement_validate(&p, &c, &err), TL_ERR_INVALID);
    p.stream_slot_bytes = sizes_lm_head_bytes(&c, TL_DTYPE_BF16);
    assert_int_equal(placement_validate(&p, &c, &err), TL_OK);
    p.lm_head = PLACEMENT_GPU_RESIDENT;
    assert_int_equal(placement_validate(&p, &c, &err), TL_OK);
    p.embed = PLACEMENT_GPU_STREAMED;
    assert_int_equal(placement_validate(&p, &c, &err), TL_ERR_INVALID);
    p.embed = PLACEMENT_CPU;
    p.layer[5] = PLACEMENT_CPU; /* KV sizes no longer match the kinds */
    assert_int_equal(placement_validate(&p, &c, &err), TL_ERR_INVALID);
    p.kv_gpu_block_bytes = 47 * 16 * 4096;
    p.kv_host_block_bytes = 16 * 8192;
    assert_int_equal(placement_validate(&p, &c, &err), TL_OK);
    char d[PLACEMENT_MAX_LAYERS + 64];
    placement_describe(&p, d, sizeof d);
    assert_string_equal(
        d, "RRRSRCRSRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRR embed=cpu lm_head=resident");
    uint8_t mask[48];
    placement_cpu_mask(&p, mask);
    for (int l = 0; l < 48; l++) assert_int_equal(mask[l], l == 5);
}

static void test_ceilings_file(void **state) {
    (void)state;
    char dir[] = "/tmp/test_planner_XXXXXX", path[600];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/c.json", dir);
    struct ceilings a = h100(), b;
    struct tl_err err;
    snprintf(a.key, sizeof a.key, "host|cpu|16 threads|H100");
    assert_int_equal(calibrate_save(&a, path, &err), TL_OK);
    assert_int_equal(calibrate_load(path, &b, &err), TL_OK);
    assert_string_equal(b.key, a.key);
    assert_true(b.gpu_measured);
    assert_true(b.cpu_gemv1_gbps == a.cpu_gemv1_gbps && b.pcie_h2d_busy_gbps == 48);
    /* stated figures replace measured ones */
    struct calibrate_assume s = {NULL, 0, 0, 25};
    calibrate_apply_stated(&s, &b);
    assert_true(b.pcie_h2d_gbps == 25 && b.pcie_h2d_busy_gbps == 25 && b.gpu_hbm_gbps == 2970);
    /* another version, a missing field: refused */
    FILE *f = fopen(path, "w");
    fputs("{\"version\": 999}", f);
    fclose(f);
    assert_int_equal(calibrate_load(path, &b, &err), TL_ERR_FORMAT);
    f = fopen(path, "w");
    fprintf(f,
            "{\"version\": %d, \"key\": \"k\", \"cpu_model\": \"c\", \"gpu_name\": \"g\", "
            "\"cpu_threads\": 4, \"gpu_measured\": false}",
            CALIBRATE_VERSION);
    fclose(f);
    assert_int_equal(calibrate_load(path, &b, &err), TL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "cpu_read_gbps"));
    unlink(path);
    rmdir(dir);
    /* no GPU: the RTX 4090's figures */
    calibrate_assume_gpu(&(struct calibrate_assume){0}, &b);
    assert_false(b.gpu_measured);
    assert_true(b.gpu_hbm_gbps == 1008 && b.pcie_h2d_gbps == 25 && b.gpu_gemm_tflops == 165);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_14b),
        cmocka_unit_test(test_bytes_70b_and_tied),
        cmocka_unit_test(test_attention_workspace),
        cmocka_unit_test(test_budget_and_resident),
        cmocka_unit_test(test_check_ok),
        cmocka_unit_test(test_check_refuses_kv),
        cmocka_unit_test(test_check_refuses_weights),
        cmocka_unit_test(test_check_override),
        cmocka_unit_test(test_stepmodel_invariants),
        cmocka_unit_test(test_order_matters),
        cmocka_unit_test(test_guests),
        cmocka_unit_test(test_plan_fits_all),
        cmocka_unit_test(test_plan_24gb),
        cmocka_unit_test(test_monotone),
        cmocka_unit_test(test_policies),
        cmocka_unit_test(test_prefill_counts),
        cmocka_unit_test(test_cpu_offload_gb),
        cmocka_unit_test(test_tied_and_small),
        cmocka_unit_test(test_nothing_fits),
        cmocka_unit_test(test_tp_14b_two_24gb),
        cmocka_unit_test(test_tp_allreduce_cost),
        cmocka_unit_test(test_tp_kv_replicated),
        cmocka_unit_test(test_tp_refusals),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_ceilings_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
