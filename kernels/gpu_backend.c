/* gpu_backend: one device arena carved into weights | KV | activations | workspaces, a pinned
 * host buffer for each step's batch metadata, and the op table that forwards to the kernels.
 * Owns: the kern_ctx, the arena, the pinned buffer, the device-side model struct. */
#include "gpu_backend.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "gpu_sample.h"
#include "kern.h"
#include "kern_attention.h"
#include "kern_matmul.h"
#include "rope.h"

#define ALIGN          256
#define CUBLAS_RESERVE ((size_t)64 << 20) /* cuBLAS's own workspace and handles */
#define GRAPH_MAX_SEQS 16

struct gpu_backend {
    struct kern_ctx *kc;
    struct model *dm; /* device-side tensor table */
    enum tl_dtype act;
    struct config cfg;
    char *arena; /* one kern_alloc */
    size_t arena_bytes;
    char *kv;                 /* (n_layers, 2, layer_bytes) */
    size_t kv_layer_bytes;    /* one of K or V of one layer */
    char *act_next, *act_end; /* bump allocator for the forward's buffers */
    float *inv_freq;          /* device (hd / 2) */
    void *attn_ws;
    size_t attn_ws_bytes;
    float
        *f32_scratch; /* device (max_seqs * vocab) for read_f32, and the sampler's override rows */
    size_t f32_elems;
    struct gpu_sample *sampler; /* owned; its workspace is in the arena */
    void *sample_ws;
    int32_t *meta;      /* device batch metadata */
    int32_t *meta_host; /* pinned */
    size_t meta_elems;
    int32_t *rows_dev, *rows_host; /* gather rows (max_seqs) */
    int num_blocks, block_size, max_tokens, max_seqs, max_model_len, max_blocks;
    struct kern_attn_shape shape;
    struct kern_batch batch;
    /* decode graphs, one per step size 1..GRAPH_MAX_SEQS (forward pads to buckets) */
    struct kern_graph *graphs[GRAPH_MAX_SEQS + 1];
    int graph_key; /* this step's graph, -1 when it runs eagerly */
    bool enforce_eager;
    int32_t *iota_dev; /* 0, 1, 2, ...: the gather rows of a decode step */
    char err[512];
};

static enum tl_status be_fail(struct gpu_backend *be, enum tl_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(be->err, sizeof be->err, fmt, ap);
    va_end(ap);
    return st;
}

/* Copies the kernel layer's message after a failed kern_* call. */
static enum tl_status kfail(struct gpu_backend *be, enum tl_status st) {
    if (st != TL_OK) snprintf(be->err, sizeof be->err, "%s", kern_last_error(be->kc));
    return st;
}

static size_t up(size_t x) {
    return (x + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

static const double GIB = 1024.0 * 1024.0 * 1024.0;

enum tl_dtype gpu_backend_auto_dtype(const struct model *host) {
    return host->embed.dtype == TL_DTYPE_BF16 ? TL_DTYPE_BF16 : TL_DTYPE_F16;
}

/* ---------------- ops ---------------- */

static const char *op_last_error(void *ctx) {
    return ((struct gpu_backend *)ctx)->err;
}

static enum tl_status op_buf_alloc(void *ctx, size_t bytes, void **out) {
    struct gpu_backend *be = ctx;
    if ((size_t)(be->act_end - be->act_next) < up(bytes))
        return be_fail(be, TL_ERR_NOMEM, "activation region exhausted (%zu bytes more asked)",
                       bytes);
    *out = be->act_next;
    be->act_next += up(bytes);
    return TL_OK;
}

static void op_buf_free(void *ctx, void *buf) {
    (void)ctx, (void)buf; /* the region lives as long as the backend */
}

static enum tl_status op_read_f32(void *ctx, const void *src, size_t n, float *dst) {
    struct gpu_backend *be = ctx;
    if (n > be->f32_elems) return be_fail(be, TL_ERR_INTERNAL, "read_f32 of %zu elements", n);
    enum tl_status st = kern_to_f32(be->kc, be->act, src, n, be->f32_scratch);
    if (st == TL_OK) st = kern_download(be->kc, dst, be->f32_scratch, n * sizeof(float));
    if (st == TL_OK) st = kern_sync(be->kc);
    return kfail(be, st);
}

/* Packs tokens, positions, token->sequence, sequence starts/lengths and block tables into the
 * pinned buffer and uploads them with one copy. The previous step ended with a sync (read_f32),
 * so the pinned buffer is free to reuse. */
static enum tl_status op_begin_step(void *ctx, const struct fwd_batch *b) {
    struct gpu_backend *be = ctx;
    int T = b->n_tokens, S = b->n_seqs, mb = 1, max_len = 0, max_new = 0;
    if (T > be->max_tokens || S > be->max_seqs)
        return be_fail(be, TL_ERR_INTERNAL, "step of %d tokens / %d seqs over the plan", T, S);
    /* A small pure-decode step can run as a graph: its launch shapes must not depend on the
     * step, so the table stride and the attention split are sized for max-model-len. */
    be->graph_key = -1;
    if (!be->enforce_eager && T == S && S <= GRAPH_MAX_SEQS) {
        be->graph_key = S;
        for (int s = 0; s < S; s++)
            if (b->seqs[s].n_new != 1) be->graph_key = -1;
    }
    for (int s = 0; s < S; s++) {
        const struct fwd_seq *q = &b->seqs[s];
        int len = q->n_past + q->n_new;
        if (len > be->max_model_len)
            return be_fail(be, TL_ERR_INVALID, "sequence %d has %d tokens, over max-model-len %d",
                           s, len, be->max_model_len);
        if ((int64_t)q->n_blocks * be->block_size < len || q->n_blocks > be->max_blocks)
            return be_fail(be, TL_ERR_INTERNAL, "sequence %d: %d blocks for %d tokens", s,
                           q->n_blocks, len);
        for (int i = 0; i < q->n_blocks; i++)
            if (q->block_table[i] < 0 || q->block_table[i] >= be->num_blocks)
                return be_fail(be, TL_ERR_INTERNAL, "sequence %d: block id %d out of range", s,
                               q->block_table[i]);
        if (q->n_blocks > mb) mb = q->n_blocks;
        if (len > max_len) max_len = len;
        if (q->n_new > max_new) max_new = q->n_new;
    }
    if (be->graph_key > 0) {
        mb = be->max_blocks;
        max_len = be->max_model_len;
    }
    int32_t *h = be->meta_host;
    int32_t *tokens = h, *pos = tokens + T, *tok_seq = pos + T, *start = tok_seq + T;
    int32_t *lens = start + S + 1, *tables = lens + S;
    size_t n = (size_t)(tables - h) + (size_t)S * mb;
    if (n > be->meta_elems) return be_fail(be, TL_ERR_INTERNAL, "metadata over its buffer");
    memcpy(tokens, b->tokens, (size_t)T * sizeof *tokens);
    memcpy(pos, b->positions, (size_t)T * sizeof *pos);
    int t = 0;
    for (int s = 0; s < S; s++) {
        const struct fwd_seq *q = &b->seqs[s];
        start[s] = t;
        for (int i = 0; i < q->n_new; i++) tok_seq[t++] = s;
        lens[s] = q->n_past + q->n_new;
        memcpy(tables + (size_t)s * mb, q->block_table, (size_t)q->n_blocks * sizeof *tables);
        for (int i = q->n_blocks; i < mb; i++) tables[(size_t)s * mb + i] = 0;
    }
    start[S] = t;
    enum tl_status st = kern_upload(be->kc, be->meta, h, n * sizeof *h);
    if (st != TL_OK) return kfail(be, st);
    int32_t *d = be->meta;
    be->batch = (struct kern_batch){.n_tokens = T,
                                    .n_seqs = S,
                                    .positions = d + T,
                                    .tok_seq = d + 2 * T,
                                    .seq_start = d + 3 * T,
                                    .seq_len = d + 3 * T + S + 1,
                                    .block_tables = d + 3 * T + 2 * S + 1,
                                    .max_blocks = mb,
                                    .max_seq_len = max_len,
                                    .max_new = max_new};
    return TL_OK;
}

static enum tl_status op_embedding(void *ctx, const struct tl_tensor *table, void *out) {
    struct gpu_backend *be = ctx;
    return kfail(be, kern_embedding_act(be->kc, be->act, table, be->meta, be->batch.n_tokens, out));
}

static enum tl_status op_rmsnorm(void *ctx, void *res, const void *add, const struct tl_tensor *w,
                                 float eps, int n, void *out) {
    struct gpu_backend *be = ctx;
    return kfail(be, kern_rmsnorm_act(be->kc, be->act, res, add, w, eps, n, out));
}

static enum tl_status op_matmul(void *ctx, const void *x, int m, int n_w,
                                const struct tl_tensor *const *w,
                                const struct tl_tensor *const *bias, void *const *y) {
    struct gpu_backend *be = ctx;
    return kfail(be, kern_matmul(be->kc, be->act, x, m, n_w, w, bias, y));
}

static void layer_cache(struct gpu_backend *be, int layer, char **k, char **v) {
    *k = be->kv + (size_t)layer * 2 * be->kv_layer_bytes;
    *v = *k + be->kv_layer_bytes;
}

static enum tl_status op_rope_kv_write(void *ctx, int layer, void *q, void *k, const void *v) {
    struct gpu_backend *be = ctx;
    char *kc, *vc;
    layer_cache(be, layer, &kc, &vc);
    return kfail(be, kern_rope_kv_write(be->kc, &be->shape, &be->batch, be->act, be->inv_freq, q, k,
                                        v, kc, vc));
}

static enum tl_status op_attention(void *ctx, int layer, const void *q, void *out) {
    struct gpu_backend *be = ctx;
    char *kc, *vc;
    layer_cache(be, layer, &kc, &vc);
    return kfail(be, kern_attention(be->kc, &be->shape, &be->batch, be->act, q, kc, vc, out,
                                    be->attn_ws, be->attn_ws_bytes));
}

static enum tl_status op_silu_mul(void *ctx, const void *gate, const void *up_, int n, int dim,
                                  void *out) {
    struct gpu_backend *be = ctx;
    return kfail(be, kern_silu_mul_act(be->kc, be->act, gate, up_, n, dim, out));
}

static enum tl_status op_gather_rows(void *ctx, const void *x, int dim, const int32_t *rows, int n,
                                     void *out) {
    struct gpu_backend *be = ctx;
    if (n > be->max_seqs) return be_fail(be, TL_ERR_INTERNAL, "gather of %d rows", n);
    bool iota = true;
    for (int i = 0; i < n && iota; i++) iota = rows[i] == i;
    /* rows 0..n-1 (every decode step) come from a constant array: nothing to upload, and a
     * captured graph does not depend on the pinned buffer */
    const int32_t *dev_rows = be->iota_dev;
    enum tl_status st = TL_OK;
    if (!iota) {
        memcpy(be->rows_host, rows, (size_t)n * sizeof *rows);
        st = kern_upload(be->kc, be->rows_dev, be->rows_host, (size_t)n * sizeof *rows);
        dev_rows = be->rows_dev;
    }
    if (st == TL_OK) st = kern_gather_rows_act(be->kc, be->act, x, dim, dev_rows, n, out);
    return kfail(be, st);
}

/* Samples where the logits are: only the ids come back (gpu_sample.c). */
static enum tl_status op_sample(void *ctx, const void *logits, int n, int vocab,
                                const struct op_sample_seq *seqs, int32_t *ids) {
    struct gpu_backend *be = ctx;
    if (vocab != be->cfg.vocab_size)
        return be_fail(be, TL_ERR_INTERNAL, "sample: vocab %d, the model has %d", vocab,
                       be->cfg.vocab_size);
    struct tl_err e;
    enum tl_status st = gpu_sample_run(be->sampler, be->act, logits, n, seqs, ids, &e);
    if (st != TL_OK) snprintf(be->err, sizeof be->err, "%.*s", (int)sizeof be->err - 1, e.msg);
    return st;
}

static int op_graph_mode(void *ctx) {
    struct gpu_backend *be = ctx;
    if (be->graph_key < 0) return 0;
    return be->graphs[be->graph_key] ? 1 : 2;
}

static enum tl_status op_graph_replay(void *ctx) {
    struct gpu_backend *be = ctx;
    return kfail(be, kern_graph_launch(be->kc, be->graphs[be->graph_key]));
}

static enum tl_status op_graph_capture_begin(void *ctx) {
    struct gpu_backend *be = ctx;
    return kfail(be, kern_capture_begin(be->kc));
}

static enum tl_status op_graph_capture_end(void *ctx) {
    struct gpu_backend *be = ctx;
    enum tl_status st = kern_capture_end(be->kc, &be->graphs[be->graph_key]);
    if (st == TL_OK) st = kern_graph_launch(be->kc, be->graphs[be->graph_key]);
    return kfail(be, st);
}

/* ---------------- weights ---------------- */

struct upload {
    struct gpu_backend *be;
    char *next; /* next free byte of the weight region */
    void *host_buf;
    size_t host_buf_elems;
    size_t done, total;
    const struct gpu_backend_opts *o;
};

/* Copies one host tensor into the weight region in the activation dtype. */
static enum tl_status upload_tensor(struct upload *u, const struct tl_tensor *h,
                                    struct tl_tensor *d, struct tl_err *err) {
    struct gpu_backend *be = u->be;
    *d = *h;
    if (!h->data) return TL_OK; /* absent optional tensor */
    size_t n = (size_t)h->rows * (size_t)h->cols, es = dtype_size(be->act);
    d->dtype = be->act;
    d->data = u->next;
    u->next += up(n * es);
    enum tl_status st = TL_OK;
    if (h->dtype == be->act) {
        st = kern_upload(be->kc, (void *)d->data, h->data, n * es);
        if (st == TL_OK) st = kern_sync(be->kc);
    } else { /* convert through fp32 in chunks */
        float *f32 = u->host_buf;
        void *conv = (float *)u->host_buf + u->host_buf_elems;
        for (size_t i = 0; i < n && st == TL_OK; i += u->host_buf_elems) {
            size_t m = n - i < u->host_buf_elems ? n - i : u->host_buf_elems;
            dtype_to_f32(h->dtype, (const char *)h->data + i * dtype_size(h->dtype), f32, m);
            dtype_from_f32(be->act, f32, conv, m);
            st = kern_upload(be->kc, (char *)d->data + i * es, conv, m * es);
            if (st == TL_OK) st = kern_sync(be->kc);
        }
    }
    if (st != TL_OK) return tl_fail(err, st, "uploading weights: %s", kern_last_error(be->kc));
    u->done += n * es;
    if (u->o->progress) u->o->progress(u->o->progress_user, u->done, u->total);
    return TL_OK;
}

static size_t weight_bytes_on_device(const struct model *m, enum tl_dtype act) {
    size_t total = 0, es = dtype_size(act);
    const struct config *c = &m->cfg;
    const struct tl_tensor *top[] = {&m->embed, &m->final_norm,
                                     c->tie_word_embeddings ? NULL : &m->lm_head};
    for (int i = 0; i < 3; i++)
        if (top[i]) total += up((size_t)top[i]->rows * (size_t)top[i]->cols * es);
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_layer *L = &m->layers[l];
        const struct tl_tensor *t[] = {&L->attn_norm, &L->wq,   &L->wk,    &L->wv, &L->wo,
                                       &L->bq,        &L->bk,   &L->bv,    &L->bo, &L->mlp_norm,
                                       &L->w_gate,    &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
            if (t[i]->data) total += up((size_t)t[i]->rows * (size_t)t[i]->cols * es);
    }
    return total;
}

static enum tl_status upload_model(struct gpu_backend *be, const struct model *h, char *region,
                                   size_t total, const struct gpu_backend_opts *o,
                                   struct tl_err *err) {
    struct model *d = calloc(1, sizeof *d);
    if (!d) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    be->dm = d;
    d->cfg = h->cfg;
    d->layers = calloc((size_t)h->cfg.n_layers, sizeof *d->layers);
    struct upload u = {be, region, NULL, (size_t)4 << 20, 0, total, o};
    u.host_buf = malloc(u.host_buf_elems * (sizeof(float) + 4));
    if (!d->layers || !u.host_buf) {
        free(u.host_buf);
        return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    }
    enum tl_status st = upload_tensor(&u, &h->embed, &d->embed, err);
    if (st == TL_OK) st = upload_tensor(&u, &h->final_norm, &d->final_norm, err);
    if (st == TL_OK && !h->cfg.tie_word_embeddings)
        st = upload_tensor(&u, &h->lm_head, &d->lm_head, err);
    if (h->cfg.tie_word_embeddings) d->lm_head = d->embed;
    for (int l = 0; st == TL_OK && l < h->cfg.n_layers; l++) {
        const struct model_layer *H = &h->layers[l];
        struct model_layer *D = &d->layers[l];
        const struct tl_tensor *src[] = {&H->attn_norm, &H->wq,   &H->wk,    &H->wv, &H->wo,
                                         &H->bq,        &H->bk,   &H->bv,    &H->bo, &H->mlp_norm,
                                         &H->w_gate,    &H->w_up, &H->w_down};
        struct tl_tensor *dst[] = {&D->attn_norm, &D->wq,   &D->wk,    &D->wv, &D->wo,
                                   &D->bq,        &D->bk,   &D->bv,    &D->bo, &D->mlp_norm,
                                   &D->w_gate,    &D->w_up, &D->w_down};
        for (size_t i = 0; st == TL_OK && i < sizeof src / sizeof src[0]; i++)
            st = upload_tensor(&u, src[i], dst[i], err);
    }
    d->weight_bytes = u.done;
    free(u.host_buf);
    return st;
}

/* ---------------- plan + create ---------------- */

enum tl_status gpu_backend_create(const struct model *host, const struct gpu_backend_opts *o,
                                  struct ops *out, const struct model **dev_model,
                                  struct gpu_plan *plan, struct tl_err *err) {
    memset(out, 0, sizeof *out);
    memset(plan, 0, sizeof *plan);
    *dev_model = NULL;
    const struct config *c = &host->cfg;
    if (o->gpu_memory_utilization <= 0 || o->gpu_memory_utilization > 1)
        return tl_fail(err, TL_ERR_INVALID, "--gpu-memory-utilization must be in (0, 1], got %g",
                       o->gpu_memory_utilization);
    enum tl_dtype act = o->dtype == TL_DTYPE_COUNT ? gpu_backend_auto_dtype(host) : o->dtype;
    if (act != TL_DTYPE_BF16 && act != TL_DTYPE_F16)
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "the CUDA backend runs float16 or bfloat16 (--dtype), not %s",
                       dtype_torch_name(act));
    struct gpu_backend *be = calloc(1, sizeof *be);
    if (!be) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    out->ctx = be;
    out->name = "cuda";
    be->act = act;
    be->cfg = *c;
    be->block_size = o->block_size;
    be->max_tokens = o->max_tokens;
    be->max_seqs = o->max_seqs;
    be->max_model_len = o->max_model_len;
    be->max_blocks = (o->max_model_len + o->block_size - 1) / o->block_size;
    be->enforce_eager = o->enforce_eager;
    be->graph_key = -1;
    be->shape = (struct kern_attn_shape){c->n_heads, c->n_kv_heads, c->head_dim, o->block_size};
    enum tl_status st = kern_ctx_create(o->device, &be->kc, err);
    if (st != TL_OK) goto fail;
    struct kern_device_info di;
    if ((st = kern_device_info(be->kc, &di)) != TL_OK) {
        tl_fail(err, st, "%s", kern_last_error(be->kc));
        goto fail;
    }

    /* The budget: a fraction of the card, capped in GiB, less what is in use already (our CUDA
     * context included, as vLLM counts it). */
    size_t cap = (size_t)(o->gpu_memory_utilization * (double)di.total_bytes);
    if (o->gpu_memory_gb > 0 && (size_t)(o->gpu_memory_gb * GIB) < cap)
        cap = (size_t)(o->gpu_memory_gb * GIB);
    size_t used = di.total_bytes - di.free_bytes;
    size_t budget = cap > used ? cap - used : 0;
    size_t es = dtype_size(act);
    size_t w_bytes = weight_bytes_on_device(host, act);
    size_t a_bytes = forward_activation_bytes(c, act, o->max_tokens, o->max_seqs);
    be->attn_ws_bytes = kern_attention_workspace_bytes(&be->shape, o->max_tokens, o->max_model_len);
    be->f32_elems = (size_t)o->max_seqs * (size_t)c->vocab_size;
    be->meta_elems = 3 * (size_t)o->max_tokens + 2 * (size_t)o->max_seqs + 1 +
                     (size_t)o->max_seqs * (size_t)be->max_blocks;
    size_t sample_ws = up(gpu_sample_workspace_bytes(o->max_seqs, c->vocab_size, o->max_model_len));
    size_t ws_bytes = up(be->attn_ws_bytes) + up(be->f32_elems * 4) + up(be->meta_elems * 4) +
                      2 * up((size_t)o->max_seqs * 4) + sample_ws + up((size_t)c->head_dim / 2 * 4);
    size_t fixed = w_bytes + a_bytes + ws_bytes + CUBLAS_RESERVE;
    be->kv_layer_bytes = 0;
    size_t block_bytes = 2 * (size_t)c->n_layers * (size_t)c->n_kv_heads * (size_t)c->head_dim *
                         (size_t)o->block_size * es;
    size_t per_seq = (size_t)be->max_blocks * block_bytes;
    snprintf(plan->device_name, sizeof plan->device_name, "%s", di.name);
    plan->budget_bytes = budget;
    plan->weight_bytes = w_bytes;
    plan->activation_bytes = a_bytes;
    plan->workspace_bytes = ws_bytes + CUBLAS_RESERVE;
    plan->kv_block_bytes = block_bytes;
    plan->dtype = act;
    if (fixed + per_seq > budget) {
        size_t kv_free = budget > fixed ? budget - fixed : 0;
        long fit_len = (long)(kv_free / block_bytes) * o->block_size;
        if (fixed > budget)
            st = tl_fail(err, TL_ERR_NOMEM,
                         "the weights need %.1f GiB (%s) plus %.1f GiB of activations and "
                         "workspace, but the GPU budget is %.1f GiB (%.2f of %.1f GiB%s, %.1f GiB "
                         "already in use): raise --gpu-memory-utilization / --gpu-memory-gb, "
                         "lower --max-num-batched-tokens, or offload weights "
                         "(--cpu-offload-gb, arriving with the tiered-memory manager)",
                         w_bytes / GIB, dtype_torch_name(act), (a_bytes + ws_bytes) / GIB,
                         budget / GIB, o->gpu_memory_utilization, di.total_bytes / GIB,
                         o->gpu_memory_gb > 0 ? ", capped by --gpu-memory-gb" : "", used / GIB);
        else
            st = tl_fail(err, TL_ERR_NOMEM,
                         "max-model-len %d needs %.2f GiB of KV per sequence, %.2f GiB is free "
                         "after weights (%.1f GiB) and activations: lower --max-model-len to %ld "
                         "or raise the GPU budget by %.2f GiB",
                         o->max_model_len, per_seq / GIB, kv_free / GIB, w_bytes / GIB, fit_len,
                         (fixed + per_seq - budget) / GIB);
        goto fail;
    }
    int nb = (int)((budget - fixed) / block_bytes);
    if (o->num_blocks_override > 0) {
        if ((size_t)o->num_blocks_override * block_bytes > budget - fixed) {
            st = tl_fail(err, TL_ERR_NOMEM,
                         "--num-gpu-blocks-override %d needs %.2f GiB, %.2f "
                         "GiB is free",
                         o->num_blocks_override, o->num_blocks_override * (double)block_bytes / GIB,
                         (budget - fixed) / GIB);
            goto fail;
        }
        nb = o->num_blocks_override;
    }
    be->num_blocks = nb;
    be->kv_layer_bytes = block_bytes / 2 / (size_t)c->n_layers * (size_t)nb;
    size_t kv_bytes = 2 * (size_t)c->n_layers * be->kv_layer_bytes;
    plan->num_blocks = nb;
    plan->kv_bytes = kv_bytes;
    be->arena_bytes = w_bytes + up(kv_bytes) + a_bytes + ws_bytes;
    if ((st = kern_alloc(be->kc, be->arena_bytes, (void **)&be->arena)) != TL_OK) {
        tl_fail(err, st, "%s", kern_last_error(be->kc));
        goto fail;
    }
    char *p = be->arena + w_bytes;
    be->kv = p;
    p += up(kv_bytes);
    be->act_next = p;
    p += a_bytes;
    be->act_end = p;
    be->attn_ws = p;
    p += up(be->attn_ws_bytes);
    be->f32_scratch = (float *)p;
    p += up(be->f32_elems * 4);
    be->meta = (int32_t *)p;
    p += up(be->meta_elems * 4);
    be->rows_dev = (int32_t *)p;
    p += up((size_t)o->max_seqs * 4);
    be->iota_dev = (int32_t *)p;
    p += up((size_t)o->max_seqs * 4);
    be->sample_ws = p;
    p += sample_ws;
    be->inv_freq = (float *)p;
    if ((st = kern_host_alloc(be->kc, be->meta_elems * 4 + (size_t)o->max_seqs * 4,
                              (void **)&be->meta_host)) != TL_OK) {
        tl_fail(err, st, "%s", kern_last_error(be->kc));
        goto fail;
    }
    be->rows_host = be->meta_host + be->meta_elems;
    float *inv = malloc((size_t)c->head_dim / 2 * sizeof *inv);
    if (!inv) {
        st = tl_fail(err, TL_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    rope_inv_freq(c, inv);
    st = kern_upload(be->kc, be->inv_freq, inv, (size_t)c->head_dim / 2 * sizeof *inv);
    for (int i = 0; i < o->max_seqs; i++) be->rows_host[i] = i;
    if (st == TL_OK)
        st =
            kern_upload(be->kc, be->iota_dev, be->rows_host, (size_t)o->max_seqs * sizeof(int32_t));
    if (st == TL_OK) st = kern_sync(be->kc);
    free(inv);
    if (st != TL_OK) {
        tl_fail(err, st, "%s", kern_last_error(be->kc));
        goto fail;
    }
    if ((st = upload_model(be, host, be->arena, w_bytes, o, err)) != TL_OK) goto fail;
    if ((st = gpu_sample_create(be->kc, o->max_seqs, c->vocab_size, o->max_model_len, be->sample_ws,
                                be->f32_scratch, &be->sampler, err)) != TL_OK)
        goto fail;

    out->act_dtype = act;
    out->last_error = op_last_error;
    out->buf_alloc = op_buf_alloc;
    out->buf_free = op_buf_free;
    out->read_f32 = op_read_f32;
    out->begin_step = op_begin_step;
    out->embedding = op_embedding;
    out->rmsnorm = op_rmsnorm;
    out->matmul = op_matmul;
    out->rope_kv_write = op_rope_kv_write;
    out->attention = op_attention;
    out->silu_mul = op_silu_mul;
    out->gather_rows = op_gather_rows;
    out->graph_mode = op_graph_mode;
    out->graph_replay = op_graph_replay;
    out->graph_capture_begin = op_graph_capture_begin;
    out->graph_capture_end = op_graph_capture_end;
    out->sample = op_sample;
    *dev_model = be->dm;
    return TL_OK;
fail:
    gpu_backend_destroy(out);
    return st;
}

void gpu_backend_destroy(struct ops *ops) {
    struct gpu_backend *be = ops ? ops->ctx : NULL;
    if (!be) return;
    for (int i = 0; i <= GRAPH_MAX_SEQS; i++) kern_graph_free(be->graphs[i]);
    gpu_sample_destroy(be->sampler);
    if (be->kc) {
        kern_free(be->kc, be->arena);
        kern_host_free(be->kc, be->meta_host);
        kern_ctx_destroy(be->kc);
    }
    model_free(be->dm);
    free(be);
    ops->ctx = NULL;
}
