/* bench_gpu: the CUDA backend on a model of any size (dummy weights from its config.json),
 * against ceilings measured in the same run: HBM copy bandwidth and the bf16 tensor-core GEMM
 * rate. Reports batch-1 decode (against the weight-read floor: weight bytes / HBM bandwidth),
 * prefill of one long prompt (against the GEMM rate), and decode at larger batches.
 * Step times are wall-clock around forward_step, which ends by copying the logits to the host:
 * the figure a user sees, after warm-up, median of the timed steps. With --sample, decode steps
 * are forward_step_sample instead (temperature 0.7, top_p 0.9, sampled on the GPU: only the
 * ids come back), as the engine runs them.
 * Usage: bench_gpu --model DIR [--dtype bfloat16|float16] [--prefill 1024] [--ctx 640]
 *                  [--batches 1,64,256] [--steps 16] [--gpu-memory-gb G] [--enforce-eager]
 *                  [--sample] [--no-fuse]
 * Decode steps of up to 16 sequences replay CUDA graphs unless --enforce-eager; they run the
 * fused linear layers (rmsnorm / silu / residual add inside the GEMVs) unless --no-fuse. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "forward.h"
#include "gpu_backend.h"
#include "kern.h"
#include "kern_ceiling.h"
#include "kvcache.h"
#include "model.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[n / 2];
}

struct bench {
    struct ops ops;
    const struct model *m;
    struct kvcache *kv;
    struct forward *fw;
    float *logits;
    int32_t *tok, *pos;
    struct fwd_seq *fs;
    struct kv_seq *seqs;
    int max_tokens;
    bool sample; /* decode through forward_step_sample */
    struct sampling_params sp;
    struct sampler_rng *rng; /* (max batch) */
    struct fwd_sample *smp;  /* (max batch) */
    int32_t *ids;            /* (max batch) */
};

static void die(const char *what, const struct tl_err *err) {
    fprintf(stderr, "bench_gpu: %s: %s\n", what, err->msg);
    exit(1);
}

/* Prefills n_seqs sequences of len tokens each, in steps of at most max_tokens tokens. */
static void prefill_all(struct bench *b, int n_seqs, int len) {
    struct tl_err err = {{0}};
    int vocab = b->m->cfg.vocab_size;
    for (int s = 0; s < n_seqs; s++) {
        for (int done = 0; done < len;) {
            int take = len - done < b->max_tokens ? len - done : b->max_tokens;
            if (kvcache_seq_reserve(b->kv, &b->seqs[s], done + take, &err) != TL_OK)
                die("KV", &err);
            for (int i = 0; i < take; i++) {
                b->tok[i] = (int32_t)(((size_t)(s + 1) * 7919u + (size_t)(done + i) * 104729u) %
                                      (size_t)vocab);
                b->pos[i] = done + i;
            }
            b->fs[0] = (struct fwd_seq){take, done, b->seqs[s].blocks, b->seqs[s].n_blocks, 1};
            struct fwd_batch fb = {1, b->fs, take, b->tok, b->pos};
            if (forward_step(b->fw, &fb, b->logits, &err) != TL_OK) die("prefill", &err);
            done += take;
        }
    }
}

/* Median seconds of a decode step of n_seqs sequences that each hold `ctx` tokens. */
static double decode_steps(struct bench *b, int n_seqs, int ctx, int steps) {
    struct tl_err err = {{0}};
    double *t = malloc((size_t)steps * sizeof *t);
    for (int k = -2; k < steps; k++) {
        int past = ctx + (k + 2);
        for (int s = 0; s < n_seqs; s++) {
            if (kvcache_seq_reserve(b->kv, &b->seqs[s], past + 1, &err) != TL_OK) die("KV", &err);
            b->tok[s] = (int32_t)((s * 31 + past * 17) % b->m->cfg.vocab_size);
            b->pos[s] = past;
            b->fs[s] = (struct fwd_seq){1, past, b->seqs[s].blocks, b->seqs[s].n_blocks, 1};
            b->smp[s] = (struct fwd_sample){&b->sp, &b->rng[s], NULL, 0, NULL, 0};
        }
        struct fwd_batch fb = {n_seqs, b->fs, n_seqs, b->tok, b->pos};
        double t0 = tl_now_s();
        enum tl_status st = b->sample ? forward_step_sample(b->fw, &fb, b->smp, NULL, b->ids, &err)
                                      : forward_step(b->fw, &fb, b->logits, &err);
        if (st != TL_OK) die("decode", &err);
        if (k >= 0) t[k] = tl_now_s() - t0;
    }
    double med = median(t, steps);
    free(t);
    return med;
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    enum tl_dtype dt = TL_DTYPE_BF16;
    int prefill = 1024, ctx = 640, steps = 16, batches[8] = {1, 64, 256}, nb = 3;
    double gpu_gb = 0;
    bool eager = false, sample = false, no_fuse = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            if (!dtype_parse_torch(argv[++i], &dt)) return 2;
        } else if (!strcmp(argv[i], "--prefill") && i + 1 < argc)
            prefill = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            ctx = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gpu-memory-gb") && i + 1 < argc)
            gpu_gb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--sample"))
            sample = true;
        else if (!strcmp(argv[i], "--no-fuse"))
            no_fuse = true;
        else if (!strcmp(argv[i], "--enforce-eager"))
            eager = true;
        else if (!strcmp(argv[i], "--batches") && i + 1 < argc) {
            nb = 0;
            for (char *p = strtok(argv[++i], ","); p && nb < 8; p = strtok(NULL, ","))
                batches[nb++] = atoi(p);
        } else {
            fprintf(stderr, "usage: bench_gpu --model DIR [--dtype bfloat16|float16] [--prefill N] "
                            "[--ctx N] [--batches 1,64,256] [--steps N] [--gpu-memory-gb G] "
                            "[--enforce-eager] [--sample] [--no-fuse]\n");
            return 2;
        }
    }
    if (!dir) return 2;
    struct tl_err err = {{0}};
    struct tl_err why;
    if (kern_device_probe(&why) == 0) {
        printf("bench_gpu: no GPU (%s)\n", why.msg);
        return 77;
    }
    struct kern_ctx *kc;
    if (kern_ctx_create(0, &kc, &err) != TL_OK) die("context", &err);
    double hbm = 0, tc = 0, h2d = 0, d2h = 0;
    if (kern_ceiling_hbm(kc, (size_t)1 << 30, &hbm) != TL_OK ||
        kern_ceiling_gemm(kc, dt, 8192, &tc) != TL_OK ||
        kern_ceiling_pcie(kc, (size_t)1 << 30, &h2d, &d2h) != TL_OK) {
        fprintf(stderr, "bench_gpu: ceilings: %s\n", kern_last_error(kc));
        return 1;
    }
    kern_ctx_destroy(kc);

    int max_b = 1;
    for (int i = 0; i < nb; i++) max_b = batches[i] > max_b ? batches[i] : max_b;
    struct model *host;
    struct model_load_opts lo = {.format = MODEL_LOAD_DUMMY, .dtype = dt};
    double t0 = tl_now_s();
    if (model_load(dir, &lo, &host, &err) != TL_OK) die("model", &err);
    struct bench b = {.max_tokens = prefill > max_b ? prefill : max_b, .sample = sample};
    int max_len = (prefill > ctx ? prefill : ctx) + steps + 8;
    struct gpu_backend_opts go = {.device = 0,
                                  .gpu_memory_utilization = 0.9,
                                  .gpu_memory_gb = gpu_gb,
                                  .dtype = dt,
                                  .block_size = 16,
                                  .max_model_len = max_len,
                                  .max_tokens = b.max_tokens,
                                  .max_seqs = max_b,
                                  .enforce_eager = eager};
    struct gpu_plan plan;
    if (gpu_backend_create(host, &go, &b.ops, &b.m, &plan, &err) != TL_OK) die("backend", &err);
    double t_load = tl_now_s() - t0;
    if (kvcache_create(plan.num_blocks, 16, &b.kv, &err) != TL_OK ||
        forward_create(b.m, &b.ops, b.max_tokens, max_b, &b.fw, &err) != TL_OK)
        die("engine", &err);
    forward_set_fusion(b.fw, !no_fuse);
    int32_t pad_block;
    if (kvcache_alloc(b.kv, &pad_block) == TL_OK) forward_set_pad_block(b.fw, pad_block);
    b.logits = malloc((size_t)max_b * (size_t)host->cfg.vocab_size * sizeof(float));
    b.tok = malloc((size_t)b.max_tokens * sizeof(int32_t));
    b.pos = malloc((size_t)b.max_tokens * sizeof(int32_t));
    b.fs = calloc((size_t)max_b, sizeof *b.fs);
    b.seqs = calloc((size_t)max_b, sizeof *b.seqs);
    b.rng = calloc((size_t)max_b, sizeof *b.rng);
    b.smp = calloc((size_t)max_b, sizeof *b.smp);
    b.ids = calloc((size_t)max_b, sizeof *b.ids);
    sampling_params_default(&b.sp);
    b.sp.temperature = 0.7f;
    b.sp.top_p = 0.9f;
    for (int s = 0; s < max_b; s++) sampler_rng_seed(&b.rng[s], (uint64_t)s);
    printf("%s on %s, %s: weights %.2f GB, KV %d blocks (%.0f tokens), loaded in %.1f s; decode "
           "steps %s\n",
           dir, plan.device_name, dtype_torch_name(dt), plan.weight_bytes / 1e9, plan.num_blocks,
           plan.num_blocks * 16.0, t_load,
           sample ? "sample on the GPU (T 0.7, top_p 0.9)" : "copy the logits to the host");

    /* prefill of one prompt, median of 3 after a warm-up */
    double pt[4];
    for (int r = 0; r < 4; r++) {
        double s0 = tl_now_s();
        prefill_all(&b, 1, prefill);
        pt[r] = tl_now_s() - s0;
        kvcache_seq_release(b.kv, &b.seqs[0]);
    }
    double t_prefill = median(pt + 1, 3);
    const struct config *c = &host->cfg;
    double vh = (double)c->vocab_size * c->hidden_size;
    double layer_params = (double)config_param_count(c) - vh * (c->tie_word_embeddings ? 1 : 2);
    double hd = c->head_dim, att = 2.0 * 2.0 * c->n_heads * hd * ((double)prefill * prefill / 2);
    double flops = 2.0 * layer_params * prefill + 2.0 * vh + c->n_layers * att;

    double wfloor = (double)plan.weight_bytes / (hbm * 1e9);
    printf("\n%-34s %12s %12s %10s\n", "what", "measured", "ceiling", "ratio");
    printf("%-34s %9.0f GB/s %9s %10s\n", "HBM copy (read + write)", hbm, "", "");
    printf("%-34s %7.0f TFLOP/s %9s %10s\n", "bf16 GEMM 8192^3", tc, "", "");
    printf("%-34s %9.1f GB/s %9s %10s\n", "PCIe H2D / D2H pinned", h2d, "", "");
    printf("%-34s %7.0f tok/s %7.0f tok/s %10.2f   (%.0f TFLOP/s)\n", "prefill, one prompt",
           prefill / t_prefill, tc * 1e12 / (flops / prefill), flops / t_prefill / (tc * 1e12),
           flops / t_prefill / 1e12);
    for (int i = 0; i < nb; i++) {
        int B = batches[i], cx = B == 1 ? 128 : ctx;
        prefill_all(&b, B, cx);
        double st = decode_steps(&b, B, cx, steps);
        for (int s = 0; s < B; s++) kvcache_seq_release(b.kv, &b.seqs[s]);
        char name[64];
        snprintf(name, sizeof name, "decode batch %d, context %d", B, cx);
        if (B == 1)
            printf("%-34s %7.1f tok/s %7.1f tok/s %10.2f   (%.2f ms/step, floor %.2f ms)\n", name,
                   1.0 / st, 1.0 / wfloor, wfloor / st, st * 1e3, wfloor * 1e3);
        else
            printf("%-34s %7.0f tok/s %13s %10s   (%.2f ms/step)\n", name, B / st, "", "",
                   st * 1e3);
    }
    forward_destroy(b.fw);
    kvcache_destroy(b.kv);
    gpu_backend_destroy(&b.ops);
    model_free(host);
    return 0;
}
