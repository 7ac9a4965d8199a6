/* test_planner_gpu: the planner counts GPU memory exactly as the CUDA backend allocates it.
 *   (no argument) the attention workspace of sizes.c equals kern_attention_workspace_bytes over
 *       a sweep of shapes — pure arithmetic, runs wherever CUDA is built (CI too);
 *   --gpu  gpu_backend_create on a dummy model and the planner on the same budget agree on
 *       weights, staging slots, pinned host images, activations, workspace and KV blocks, for
 *       everything resident and for two mixed placements (streamed layers and lm_head, CPU
 *       layers, host embedding), and on the numbers of the max-model-len refusal. Exit 77
 *       without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gpu_backend.h"
#include "gpu_sample.h"
#include "kern.h"
#include "kern_attention.h"
#include "model.h"
#include "placement.h"
#include "planner.h"
#include "sizes.h"

/* placement.h's layer array is passed to gpu_backend as it is */
_Static_assert((int)PLACEMENT_GPU_RESIDENT == (int)GPU_PLACE_RESIDENT &&
                   (int)PLACEMENT_GPU_STREAMED == (int)GPU_PLACE_STREAM &&
                   (int)PLACEMENT_CPU == (int)GPU_PLACE_CPU,
               "enum placement_kind and enum gpu_place must agree");

static int failures;

static void workspace_sweep(void) {
    const int heads[][2] = {{40, 8}, {32, 8}, {64, 8}, {14, 2}, {28, 4}, {16, 16}, {12, 2}, {8, 1}};
    const int dims[] = {64, 128};
    const int tokens[] = {1, 7, 64, 300, 2048};
    const int lens[] = {16, 64, 65, 1000, 4096, 32768, 131072};
    int n = 0;
    for (size_t h = 0; h < sizeof heads / sizeof heads[0]; h++)
        for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
            for (size_t t = 0; t < sizeof tokens / sizeof tokens[0]; t++)
                for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
                    struct config c = {0};
                    c.n_heads = heads[h][0], c.n_kv_heads = heads[h][1], c.head_dim = dims[d];
                    struct kern_attn_shape s = {c.n_heads, c.n_kv_heads, c.head_dim, 16};
                    size_t want = kern_attention_workspace_bytes(&s, tokens[t], lens[l]);
                    size_t got = sizes_attention_workspace_bytes(&c, 16, tokens[t], lens[l]);
                    CHECK(got == want, "workspace %d/%d hd %d tokens %d len %d: %zu, kernels %zu",
                          c.n_heads, c.n_kv_heads, c.head_dim, tokens[t], lens[l], got, want);
                    n++;
                }
    printf("attention workspace: %d shapes agree with kern_attention_workspace_bytes\n", n);
    const int rows[] = {1, 16, 256, 1024}, vocabs[] = {4096, 151936, 152064};
    const int mls[] = {64, 4096, 131072};
    n = 0;
    for (size_t r = 0; r < sizeof rows / sizeof *rows; r++)
        for (size_t v = 0; v < sizeof vocabs / sizeof *vocabs; v++)
            for (size_t l = 0; l < sizeof mls / sizeof *mls; l++) {
                size_t want = gpu_sample_workspace_bytes(rows[r], vocabs[v], mls[l]);
                size_t got = sizes_sample_workspace_bytes(rows[r], vocabs[v], mls[l]);
                CHECK(got == want, "sampler workspace rows %d vocab %d len %d: %zu, gpu_sample %zu",
                      rows[r], vocabs[v], mls[l], got, want);
                n++;
            }
    printf("sampler workspace: %d shapes agree with gpu_sample_workspace_bytes\n", n);
}

static double number_after(const char *msg, const char *key) {
    const char *p = strstr(msg, key);
    return p ? strtod(p + strlen(key), NULL) : -1;
}

static void backend_agrees(void) {
    struct tl_err err = {{0}};
    struct config cfg;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/../../bench/models/qwen2.5-0.5b", TL_FIXTURES);
    if (config_load(dir, &cfg, &err) != TL_OK) {
        CHECK(0, "%s", err.msg);
        return;
    }
    struct model_load_opts lo = {.format = MODEL_LOAD_DUMMY, .dtype = TL_DTYPE_BF16, .seed = 1};
    struct model *m;
    if (model_create_dummy(&cfg, &lo, &m, &err) != TL_OK) {
        CHECK(0, "%s", err.msg);
        return;
    }
    /* a configuration that fits, then one whose max-model-len does not */
    const int lens[] = {4096, 1 << 20};
    for (int i = 0; i < 2; i++) {
        struct gpu_backend_opts go = {.device = 0,
                                      .gpu_memory_utilization = 0.9,
                                      .gpu_memory_gb = 2,
                                      .dtype = TL_DTYPE_BF16,
                                      .block_size = 16,
                                      .max_model_len = lens[i],
                                      .max_tokens = 512,
                                      .max_seqs = 32,
                                      .enforce_eager = true};
        struct ops ops;
        const struct model *dm;
        struct gpu_plan plan;
        struct tl_err berr = {{0}};
        enum tl_status bst = gpu_backend_create(m, &go, &ops, &dm, &plan, &berr);
        /* the planner on exactly the budget the backend computed */
        struct planner_inputs in;
        planner_inputs_default(&in);
        in.cfg = cfg;
        in.dtype = TL_DTYPE_BF16;
        in.gpu_total_bytes = plan.budget_bytes;
        in.gpu_memory_utilization = 1.0;
        in.max_model_len = lens[i];
        in.max_num_batched_tokens = 512;
        in.max_num_seqs = 32;
        in.host_bytes = (size_t)64 << 30;
        struct planner_memory pm;
        struct tl_err perr = {{0}};
        enum tl_status pst = planner_check(&in, NULL, &pm, &perr);
        CHECK(pst == bst, "len %d: planner says %s, backend %s (%s)", lens[i], tl_status_str(pst),
              tl_status_str(bst), bst ? berr.msg : perr.msg);
        CHECK(pm.gpu_weight_bytes + pm.gpu_staging_bytes == plan.weight_bytes,
              "weights: planner %zu, backend %zu", pm.gpu_weight_bytes, plan.weight_bytes);
        CHECK(pm.gpu_activation_bytes == plan.activation_bytes,
              "activations: planner %zu, backend %zu", pm.gpu_activation_bytes,
              plan.activation_bytes);
        CHECK(pm.gpu_workspace_bytes == plan.workspace_bytes, "workspace: planner %zu, backend %zu",
              pm.gpu_workspace_bytes, plan.workspace_bytes);
        if (bst == TL_OK) {
            CHECK(pm.num_blocks == plan.num_blocks, "blocks: planner %d, backend %d", pm.num_blocks,
                  plan.num_blocks);
            printf("len %d: %d KV blocks, weights %zu, activations %zu, workspace %zu: agree\n",
                   lens[i], plan.num_blocks, plan.weight_bytes, plan.activation_bytes,
                   plan.workspace_bytes);
            gpu_backend_destroy(&ops);
        } else {
            /* same KV per sequence and free KV; the planner's length is the exact largest, the
             * backend's the quotient at the requested length's workspace (never larger) */
            double kb = number_after(berr.msg, "needs "), kp = number_after(perr.msg, "needs ");
            double fb = number_after(berr.msg, "GiB of KV per sequence, ");
            double fp = number_after(perr.msg, "GiB of KV per sequence, ");
            double lb = number_after(berr.msg, "--max-model-len to ");
            double lp = number_after(perr.msg, "--max-model-len to ");
            CHECK(kb > 0 && kb == kp, "KV per sequence: planner %.2f, backend %.2f", kp, kb);
            CHECK(fb >= 0 && fb == fp, "free KV: planner %.2f, backend %.2f", fp, fb);
            CHECK(lp >= lb && lb > 0, "largest length: planner %.0f, backend %.0f", lp, lb);
            printf("refusal: backend \"%s\"\n         planner \"%s\"\n", berr.msg, perr.msg);
        }
    }
    model_free(m);
}

/* The planner's bytes for placement pl against gpu_backend_create with the same placement. */
static void placement_agrees(const struct model *m, struct placement pl, const char *what) {
    struct tl_err err = {{0}};
    struct gpu_backend_opts go = {.device = 0,
                                  .gpu_memory_utilization = 0.9,
                                  .gpu_memory_gb = 2,
                                  .dtype = TL_DTYPE_BF16,
                                  .block_size = 16,
                                  .max_model_len = 4096,
                                  .max_tokens = 512,
                                  .max_seqs = 32,
                                  .enforce_eager = true,
                                  .layer_place = pl.layer,
                                  .stream_slots = pl.stream_slots,
                                  .embed_on_host = pl.embed == PLACEMENT_CPU,
                                  .head_on_host = pl.lm_head == PLACEMENT_CPU,
                                  .head_streamed = pl.lm_head == PLACEMENT_GPU_STREAMED};
    struct ops ops;
    const struct model *dm;
    struct gpu_plan plan;
    if (gpu_backend_create(m, &go, &ops, &dm, &plan, &err) != TL_OK) {
        CHECK(0, "%s: %s", what, err.msg);
        return;
    }
    struct planner_inputs in;
    planner_inputs_default(&in);
    in.cfg = m->cfg;
    in.dtype = TL_DTYPE_BF16;
    in.gpu_total_bytes = plan.budget_bytes;
    in.gpu_memory_utilization = 1.0;
    in.max_model_len = 4096;
    in.max_num_batched_tokens = 512;
    in.max_num_seqs = 32;
    in.host_bytes = (size_t)64 << 30;
    struct planner_memory pm;
    CHECK(planner_memory_of(&in, &pl, &pm, &err) == TL_OK, "%s: %s", what, err.msg);
    CHECK(placement_validate(&pl, &m->cfg, &err) == TL_OK, "%s: %s", what, err.msg);
    size_t pinned =
        (size_t)placement_count(&pl, PLACEMENT_GPU_STREAMED) *
            sizes_layer_bytes(&m->cfg, TL_DTYPE_BF16) +
        (pl.lm_head == PLACEMENT_GPU_STREAMED ? sizes_lm_head_bytes(&m->cfg, TL_DTYPE_BF16) : 0);
    CHECK(pm.gpu_weight_bytes + pm.gpu_staging_bytes == plan.weight_bytes,
          "%s: weights + slots: planner %zu + %zu, backend %zu", what, pm.gpu_weight_bytes,
          pm.gpu_staging_bytes, plan.weight_bytes);
    CHECK(pm.gpu_staging_bytes == plan.stream_slot_bytes, "%s: slots: planner %zu, backend %zu",
          what, pm.gpu_staging_bytes, plan.stream_slot_bytes);
    CHECK(pinned == plan.stream_host_bytes, "%s: pinned images: planner %zu, backend %zu", what,
          pinned, plan.stream_host_bytes);
    CHECK(pm.gpu_activation_bytes == plan.activation_bytes, "%s: activations %zu vs %zu", what,
          pm.gpu_activation_bytes, plan.activation_bytes);
    CHECK(pm.gpu_workspace_bytes == plan.workspace_bytes, "%s: workspace %zu vs %zu", what,
          pm.gpu_workspace_bytes, plan.workspace_bytes);
    CHECK(pl.kv_gpu_block_bytes == plan.kv_block_bytes, "%s: KV block %zu vs %zu", what,
          pl.kv_gpu_block_bytes, plan.kv_block_bytes);
    /* the backend takes every block the GPU holds; the planner may give fewer to match the host */
    int gpu_blocks = (int)(pm.gpu_kv_free_bytes / pl.kv_gpu_block_bytes);
    CHECK(gpu_blocks == plan.num_blocks && pm.num_blocks <= gpu_blocks,
          "%s: KV blocks: planner %d (GPU %d), backend %d", what, pm.num_blocks, gpu_blocks,
          plan.num_blocks);
    printf("%s: weights %zu, slots %zu, pinned %zu, %d KV blocks: agree\n", what, plan.weight_bytes,
           plan.stream_slot_bytes, plan.stream_host_bytes, plan.num_blocks);
    gpu_backend_destroy(&ops);
}

static void placements_agree(void) {
    struct tl_err err = {{0}};
    struct config cfg;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/../../bench/models/qwen2.5-0.5b", TL_FIXTURES);
    if (config_load(dir, &cfg, &err) != TL_OK) {
        CHECK(0, "%s", err.msg);
        return;
    }
    struct model_load_opts lo = {.format = MODEL_LOAD_DUMMY, .dtype = TL_DTYPE_BF16, .seed = 1};
    struct model *m;
    if (model_create_dummy(&cfg, &lo, &m, &err) != TL_OK) {
        CHECK(0, "%s", err.msg);
        return;
    }
    struct placement a;
    placement_init_resident(&a, cfg.n_layers, TL_DTYPE_BF16, 16);
    for (int l = 0; l < cfg.n_layers; l++)
        a.layer[l] = l % 4 == 1   ? PLACEMENT_GPU_STREAMED
                     : l % 4 == 3 ? PLACEMENT_CPU
                                  : PLACEMENT_GPU_RESIDENT;
    a.stream_slots = 2;
    a.embed = PLACEMENT_CPU, a.lm_head = PLACEMENT_CPU; /* tied: the table stays on the host */
    placement_agrees(m, a, "R/S/C mix, embedding and lm_head on the CPU");
    struct placement b;
    placement_init_resident(&b, cfg.n_layers, TL_DTYPE_BF16, 16);
    for (int l = 0; l < cfg.n_layers; l += 3) b.layer[l] = PLACEMENT_GPU_STREAMED;
    b.stream_slots = 3; /* 8 layers + lm_head */
    b.embed = PLACEMENT_CPU, b.lm_head = PLACEMENT_GPU_STREAMED;
    placement_agrees(m, b, "streamed layers and lm_head (the tied table)");
    model_free(m);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--gpu")) {
        struct tl_err why;
        if (kern_device_probe(&why) == 0) {
            printf("skip: no GPU (%s)\n", why.msg);
            return 77;
        }
        backend_agrees();
        placements_agree();
    } else {
        workspace_sweep();
    }
    if (failures) fprintf(stderr, "%d failures\n", failures);
    return failures ? 1 : 0;
}
