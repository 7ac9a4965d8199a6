/* test_gpu_tp: tensor-parallel shards (tp.h) on the CUDA backend, unchanged: N ranks, each a
 * CUDA backend of its own on device 0, run in N threads joined by the in-process collective
 * (tp_local.h: partial sums cross as fp32 through the host, summed in rank order, rounded once).
 * Per fixture, dtype (bf16, fp16) and every size the fixture splits at (2, 4), the last-position
 * logits of every prompt must meet the bound the unsharded CUDA engine meets against HF's fp32
 * run (test_gpu_parity), and the shards' vocabulary-parallel embedding (kern_embedding_part_act)
 * must feed them. Prints the sharded-vs-unsharded difference too. Exit 77 without a GPU. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixture.h"
#include "forward.h"
#include "gpu_backend.h"
#include "kern.h"
#include "kvcache.h"
#include "tp.h"
#include "tp_local.h"

/* test_gpu_parity's bounds against HF's fp32 logits: a shard rounds its activations as the
 * whole model does, once per op, plus one rounding of each all-reduced sum. */
#define TOL_BF16 3e-2
#define TOL_F16  5e-3

#define NB    128
#define BS    16
#define MAXW  4
#define STEP  256
#define MAXCT 256

static int failures;

struct rank {
    struct ops ops;
    const struct model *dev; /* the backend's device copy */
    struct forward *fw;
};

static int rank_open(struct rank *r, const struct model *host, enum tl_dtype dt,
                     struct tl_err *err) {
    memset(r, 0, sizeof *r);
    /* no GiB cap: every rank's backend counts the others' memory as in use */
    struct gpu_backend_opts go = {.device = 0,
                                  .gpu_memory_utilization = 0.9,
                                  .dtype = dt,
                                  .block_size = BS,
                                  .max_model_len = MAXCT,
                                  .max_tokens = STEP,
                                  .max_seqs = 1,
                                  .num_blocks_override = NB,
                                  .enforce_eager = true};
    struct gpu_plan plan;
    if (gpu_backend_create(host, &go, &r->ops, &r->dev, &plan, err) != TL_OK) return -1;
    return forward_create(r->dev, &r->ops, STEP, 1, &r->fw, err) == TL_OK ? 0 : -1;
}

static void rank_close(struct rank *r) {
    forward_destroy(r->fw);
    if (r->ops.ctx) gpu_backend_destroy(&r->ops);
}

static int prefill(struct forward *fw, struct kvcache *kv, const int32_t *ids, int n,
                   float *logits) {
    struct tl_err err = {{0}};
    struct kv_seq seq = {0};
    int32_t pos[MAXCT];
    for (int i = 0; i < n; i++) pos[i] = i;
    if (kvcache_seq_reserve(kv, &seq, n, &err) != TL_OK) return -1;
    struct fwd_seq fs = {n, 0, seq.blocks, seq.n_blocks, 1};
    struct fwd_batch b = {1, &fs, n, ids, pos};
    enum tl_status st = forward_step(fw, &b, logits, &err);
    kvcache_seq_release(kv, &seq);
    if (st != TL_OK) fprintf(stderr, "forward: %s\n", err.msg);
    return st == TL_OK ? 0 : -1;
}

static void check(const char *name, enum tl_dtype dt, int world) {
    struct fixture fx;
    if (fixture_open(name, &fx) != 0) {
        failures++;
        return;
    }
    struct tl_err err = {{0}};
    if (tp_check(&fx.m->cfg, world, &err) != TL_OK) {
        fixture_close(&fx);
        return; /* this fixture does not split that way */
    }
    const char *dname = dtype_torch_name(dt);
    double tol = dt == TL_DTYPE_BF16 ? TOL_BF16 : TOL_F16;
    int V = fx.m->cfg.vocab_size;
    float *lt = malloc((size_t)V * sizeof *lt), *lw = malloc((size_t)V * sizeof *lw);
    double *ref = malloc((size_t)V * sizeof *ref);
    struct model *shard[MAXW] = {0};
    struct rank rk[MAXW], whole;
    memset(rk, 0, sizeof rk);
    memset(&whole, 0, sizeof whole);
    struct tp_local *g = NULL;
    struct kvcache *kv = NULL, *kvw = NULL;
    if (tp_local_create(world, &g, &err) != TL_OK || kvcache_create(NB, BS, &kv, &err) != TL_OK ||
        kvcache_create(NB, BS, &kvw, &err) != TL_OK || rank_open(&whole, fx.m, dt, &err))
        goto fail;
    for (int r = 0; r < world; r++) {
        if (tp_shard(fx.m, world, r, &shard[r], &err) != TL_OK ||
            rank_open(&rk[r], shard[r], dt, &err) ||
            forward_set_collective(rk[r].fw, tp_local_collective(g, r), &err) != TL_OK)
            goto fail;
        if (r > 0 && tp_local_serve(g, r, rk[r].fw, &err) != TL_OK) goto fail;
    }
    double worst = 0, worst_whole = 0;
    for (int p = 0; p < fx.n_prompts; p++) {
        if (prefill(rk[0].fw, kv, fx.prompts[p], fx.prompt_len[p], lt) ||
            prefill(whole.fw, kvw, fx.prompts[p], fx.prompt_len[p], lw)) {
            failures++;
            break;
        }
        fixture_row(&fx, "logits", p, ref, V);
        double e = fixture_rel_err(lt, ref, V), ew = fixture_rel_err_f(lt, lw, V);
        worst = e > worst ? e : worst;
        worst_whole = ew > worst_whole ? ew : worst_whole;
        CHECK(e <= tol, "%s %s N=%d prompt %d: logits rel err %.3g > %g vs HF fp32", name, dname,
              world, p, e, tol);
    }
    printf("%-16s %-8s N=%d: vs HF fp32 %.2e (bound %.0e), vs unsharded %.2e\n", name, dname, world,
           worst, tol, worst_whole);
    goto out;
fail:
    fprintf(stderr, "FAIL: %s %s N=%d: %s\n", name, dname, world, err.msg);
    failures++;
out:
    if (g && tp_local_shutdown(g, &err) != TL_OK) {
        fprintf(stderr, "FAIL: %s %s N=%d: a serving rank failed: %s\n", name, dname, world,
                err.msg);
        failures++;
    }
    for (int r = 0; r < world; r++) { /* zeroed where never opened */
        rank_close(&rk[r]);
        model_free(shard[r]);
    }
    rank_close(&whole);
    tp_local_destroy(g);
    kvcache_destroy(kv);
    kvcache_destroy(kvw);
    free(lt);
    free(lw);
    free(ref);
    fixture_close(&fx);
}

int main(void) {
    struct tl_err why;
    if (kern_device_probe(&why) == 0) {
        printf("skip: no usable GPU (%s)\n", why.msg);
        return 77;
    }
    const char *names[] = {"qwen2-f32", "qwen2-bf16", "llama3-f32", "llama-tied-bf16"};
    const enum tl_dtype dts[] = {TL_DTYPE_BF16, TL_DTYPE_F16};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++)
        for (int d = 0; d < 2; d++)
            for (int w = 2; w <= MAXW; w *= 2) check(names[k], dts[d], w);
    printf("test_gpu_tp: %s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
