/* test_gpu_placement: every placement the planner may choose computes what the all-resident GPU
 * run computes. Streamed layers run the same kernels on the same bytes, so their logits must be
 * bit-identical to the resident run's; layers on the CPU compute in fp32 instead of bf16/fp16,
 * so there greedy tokens must match except at a near-tie (checked on the fp32 CPU engine, as
 * test_gpu_parity does), and logits must stay within the dtype's tolerance.
 * Exit 77 without a GPU. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cpu_ops.h"
#include "fixture.h"
#include "forward.h"
#include "generate.h"
#include "gpu_backend.h"
#include "kern.h"
#include "kvcache.h"

#define MAXL 64
#define NB   128

static int failures;

struct layout {
    const char *name;
    char layers[MAXL + 1]; /* per layer R / S / C, repeated to n_layers */
    int slots;
    bool embed_cpu, head_cpu;
    bool head_stream; /* lm_head streamed after the layers */
    int guest;        /* > 0: steps of this many tokens run the C layers on the GPU as guests */
};

struct rig {
    struct ops gpu, cpu;
    const struct model *dm;
    struct kvcache *kv;
    struct forward *fw;
    bool has_cpu;
};

static int rig_open(struct rig *g, const struct model *host, enum tl_dtype dt,
                    const struct layout *lo, int step, int seqs) {
    struct tl_err err = {{0}};
    int nl = host->cfg.n_layers;
    uint8_t place[MAXL], on_cpu[MAXL];
    memset(g, 0, sizeof *g);
    size_t n = strlen(lo->layers);
    for (int l = 0; l < nl; l++) {
        char ch = lo->layers[(size_t)l % n];
        place[l] = ch == 'S' ? GPU_PLACE_STREAM : ch == 'C' ? GPU_PLACE_CPU : GPU_PLACE_RESIDENT;
        on_cpu[l] = ch == 'C';
        g->has_cpu |= ch == 'C';
    }
    g->has_cpu |= lo->embed_cpu || lo->head_cpu;
    struct gpu_backend_opts go = {.device = 0,
                                  .gpu_memory_utilization = 0.9,
                                  .gpu_memory_gb = 2,
                                  .dtype = dt,
                                  .block_size = 16,
                                  .max_model_len = 256,
                                  .max_tokens = step,
                                  .max_seqs = seqs,
                                  .num_blocks_override = NB,
                                  .enforce_eager = true,
                                  .layer_place = place,
                                  .stream_slots = lo->slots,
                                  .embed_on_host = lo->embed_cpu,
                                  .head_on_host = lo->head_cpu,
                                  .head_streamed = lo->head_stream,
                                  .guest_min_tokens = lo->guest};
    struct gpu_plan plan;
    if (gpu_backend_create(host, &go, &g->gpu, &g->dm, &plan, &err) != TL_OK) goto fail;
    if (g->has_cpu) {
        struct cpu_backend_opts co = {.n_threads = 4,
                                      .num_blocks = NB,
                                      .block_size = 16,
                                      .max_ctx = 256,
                                      .kv_layers = on_cpu};
        struct fwd_placement pl = {.layer_on_cpu = on_cpu,
                                   .embed_on_cpu = lo->embed_cpu,
                                   .head_on_cpu = lo->head_cpu,
                                   .guest_min_tokens = lo->guest};
        if (cpu_backend_create(&host->cfg, &co, &g->cpu, &err) != TL_OK ||
            forward_create_split(g->dm, &g->gpu, host, &g->cpu, &pl, step, seqs, &g->fw, &err) !=
                TL_OK)
            goto fail;
    } else if (forward_create(g->dm, &g->gpu, step, seqs, &g->fw, &err) != TL_OK) {
        goto fail;
    }
    if (kvcache_create(NB, 16, &g->kv, &err) != TL_OK) goto fail;
    return 0;
fail:
    fprintf(stderr, "FAIL: %s: %s\n", lo->name, err.msg);
    failures++;
    return -1;
}

static void rig_close(struct rig *g) {
    forward_destroy(g->fw);
    kvcache_destroy(g->kv);
    if (g->cpu.ctx) cpu_backend_destroy(&g->cpu);
    if (g->gpu.ctx) gpu_backend_destroy(&g->gpu);
}

static int prefill(struct forward *fw, struct kvcache *kv, const int32_t *ids, int n,
                   float *logits) {
    struct tl_err err = {{0}};
    struct kv_seq seq = {0};
    int32_t pos[256];
    for (int i = 0; i < n; i++) pos[i] = i;
    if (kvcache_seq_reserve(kv, &seq, n, &err) != TL_OK) return -1;
    struct fwd_seq fs = {n, 0, seq.blocks, seq.n_blocks, 1};
    struct fwd_batch b = {1, &fs, n, ids, pos};
    enum tl_status st = forward_step(fw, &b, logits, &err);
    kvcache_seq_release(kv, &seq);
    if (st != TL_OK) fprintf(stderr, "forward: %s\n", err.msg);
    return st == TL_OK ? 0 : -1;
}

static int greedy(struct rig *g, const struct fixture *fx, int step, int32_t outs[][64]) {
    struct gen_request reqs[FIXTURE_MAX_PROMPTS];
    for (int p = 0; p < fx->n_prompts; p++) {
        reqs[p] = (struct gen_request){.prompt = fx->prompts[p],
                                       .n_prompt = fx->prompt_len[p],
                                       .max_tokens = fx->n_greedy,
                                       .ignore_eos = true,
                                       .out = outs[p]};
        sampling_params_default(&reqs[p].sp);
        reqs[p].sp.temperature = 0;
    }
    struct gen_opts go = {.max_step_tokens = step};
    struct gen_stats gs;
    struct tl_err err = {{0}};
    if (generate_run(g->fw, g->kv, g->dm->cfg.vocab_size, reqs, fx->n_prompts, &go, &gs, &err) !=
        TL_OK) {
        fprintf(stderr, "FAIL: generate: %s\n", err.msg);
        failures++;
        return -1;
    }
    return 0;
}

/* Whether HF-fp32-like logits (the CPU engine) at prompt p + t reference tokens have a near
 * tie between tokens a and b: within 2% of the logits' RMS. */
static bool near_tie(const struct fixture *fx, int p, const int32_t *ref, int t, int32_t a,
                     int32_t b, float *logits) {
    struct ops co;
    struct tl_err err;
    struct cpu_backend_opts o = {
        .n_threads = 4, .num_blocks = 32, .block_size = 16, .max_ctx = 256};
    struct forward *fw;
    struct kvcache *kv;
    if (cpu_backend_create(&fx->m->cfg, &o, &co, &err) != TL_OK) return false;
    bool tie = false;
    if (forward_create(fx->m, &co, 256, 1, &fw, &err) == TL_OK &&
        kvcache_create(32, 16, &kv, &err) == TL_OK) {
        int32_t ctx[256];
        int n = fx->prompt_len[p];
        memcpy(ctx, fx->prompts[p], (size_t)n * sizeof *ctx);
        memcpy(ctx + n, ref, (size_t)t * sizeof *ctx);
        if (prefill(fw, kv, ctx, n + t, logits) == 0) {
            int V = fx->m->cfg.vocab_size;
            double ss = 0;
            for (int i = 0; i < V; i++) ss += (double)logits[i] * logits[i];
            tie = fabs((double)logits[a] - logits[b]) <= 0.02 * sqrt(ss / V);
        }
        kvcache_destroy(kv);
        forward_destroy(fw);
    }
    cpu_backend_destroy(&co);
    return tie;
}

static void check(const char *fixture, enum tl_dtype dt) {
    static const struct layout layouts[] = {
        {"all streamed, 1 slot", "S", 1, false, false, false, 0},
        {"alternate streamed, 2 slots", "RS", 2, false, false, false, 0},
        {"streamed, slots = layers", "S", MAXL, false, false, false, 0},
        {"all on the CPU", "C", 0, true, true, false, 0},
        {"mixed R C S, embedding on the CPU", "RCS", 1, true, false, false, 0},
        {"CPU middle, head on the CPU", "RCCS", 2, false, true, false, 0},
        {"streamed lm_head, embedding on the CPU", "RS", 2, true, false, true, 0},
        {"only lm_head streamed", "R", 1, false, false, true, 0},
        {"3 units streamed, 2 slots asked", "SR", 2, false, false, true, 0},
        /* prefill chunks on the GPU, decode steps of the 5 prompts on the CPU */
        {"R C S, C layers' prefill on the GPU", "RCS", 1, true, false, false, 6},
        {"CPU pair, head on the CPU, guests", "RCCS", 2, false, true, false, 6},
        {"all on the CPU, prefill on the GPU", "C", 0, true, true, false, 6},
    };
    struct fixture fx;
    if (fixture_open(fixture, &fx) != 0) {
        failures++;
        return;
    }
    const char *dname = dtype_torch_name(dt);
    int V = fx.m->cfg.vocab_size, np = fx.n_prompts, G = fx.n_greedy;
    double tol = dt == TL_DTYPE_BF16 ? 3e-2 : 5e-3;
    float *ref_logits = malloc((size_t)V * np * sizeof(float));
    float *logits = malloc((size_t)V * sizeof(float));
    /* the resident run's greedy tokens with whole-prompt steps and with 6-token steps: the
     * step shapes change the kernels (GEMV vs GEMM), so each placement is held to the resident
     * run of its own step size */
    int32_t ref_out[2][FIXTURE_MAX_PROMPTS][64], out[FIXTURE_MAX_PROMPTS][64];
    struct layout resident = {"resident", "R", 0, false, false, false, 0};
    struct rig g;
    if (rig_open(&g, fx.m, dt, &resident, 256, np)) goto done;
    for (int p = 0; p < np; p++)
        if (prefill(g.fw, g.kv, fx.prompts[p], fx.prompt_len[p], ref_logits + (size_t)p * V))
            failures++;
    greedy(&g, &fx, 256, ref_out[0]);
    rig_close(&g);
    if (rig_open(&g, fx.m, dt, &resident, 6, np)) goto done;
    greedy(&g, &fx, 6, ref_out[1]);
    rig_close(&g);
    for (size_t li = 0; li < sizeof layouts / sizeof *layouts; li++) {
        const struct layout *lo = &layouts[li];
        /* the embedding on the CPU is exact too: a bf16/fp16 table converts to fp32 and back */
        bool exact = !strchr(lo->layers, 'C') && !lo->head_cpu;
        for (int step = 256; step >= 6; step -= 250) { /* whole prompts, then 6-token chunks */
            if (rig_open(&g, fx.m, dt, lo, step, np)) continue;
            double worst = 0;
            for (int p = 0; p < np && step == 256; p++) {
                if (prefill(g.fw, g.kv, fx.prompts[p], fx.prompt_len[p], logits)) {
                    failures++;
                    continue;
                }
                const float *r = ref_logits + (size_t)p * V;
                if (exact) {
                    CHECK(!memcmp(logits, r, (size_t)V * sizeof *logits),
                          "%s %s %s prompt %d: streamed logits differ from resident", fixture,
                          dname, lo->name, p);
                } else {
                    double e = fixture_rel_err_f(logits, r, V);
                    worst = e > worst ? e : worst;
                    CHECK(e <= tol, "%s %s %s prompt %d: logits rel err %.3g vs resident", fixture,
                          dname, lo->name, p, e);
                }
            }
            if (greedy(&g, &fx, step, out) == 0) {
                int32_t(*ref)[64] = ref_out[step == 256 ? 0 : 1];
                for (int p = 0; p < np; p++) {
                    int t = 0;
                    while (t < G && out[p][t] == ref[p][t]) t++;
                    if (t == G) continue;
                    bool tie = !exact && near_tie(&fx, p, ref[p], t, out[p][t], ref[p][t], logits);
                    CHECK(tie, "%s %s %s (step %d) prompt %d: greedy token %d is %d, resident %d",
                          fixture, dname, lo->name, step, p, t, out[p][t], ref[p][t]);
                }
            }
            CHECK(kvcache_num_free(g.kv) == NB, "%s: KV blocks leaked", lo->name);
            rig_close(&g);
            printf("  %-14s %-5s %-36s step %3d: ok (logits rel err %.2g)\n", fixture, dname,
                   lo->name, step, worst);
        }
    }
done:
    free(ref_logits);
    free(logits);
    fixture_close(&fx);
}

int main(void) {
    if (kern_device_count() < 1) {
        printf("skip: no GPU\n");
        return 77;
    }
    check("qwen2-bf16", TL_DTYPE_BF16);
    check("qwen2-f16", TL_DTYPE_F16);
    check("llama-tied-bf16", TL_DTYPE_BF16);
    check("llama3-f32", TL_DTYPE_F16);
    if (failures) {
        fprintf(stderr, "test_gpu_placement: %d failures\n", failures);
        return 1;
    }
    printf("test_gpu_placement: all placements agree with the resident run\n");
    return 0;
}
