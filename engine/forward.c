/* forward: embedding -> n_layers x (rmsnorm, q/k/v, rope + KV write, attention, o, rmsnorm,
 * gate/up, silu*mul, down) -> final norm -> lm_head on the rows that want logits -> logits to
 * the host, or sampled where they are (the backend's sample op, else the host sampler). The
 * residual add is fused into the next rmsnorm, so the stream is written once per sub-block; on a
 * backend with fused linear layers, small steps fold the norms, silu * up and the residual adds
 * into the GEMVs instead (fused_layer). */
#include "forward.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "collective.h"

/* One backend's view of the step: its ops, its copy of the model, its activation buffers. */
struct fwd_lane {
    const struct ops *o;
    const struct model *m;
    /* activation buffers (backend memory), each sized for max_tokens rows; last / logits for
     * max_seqs rows */
    void *res, *xn, *q, *k, *v, *attn, *proj, *gate, *up, *last, *logits;
};

struct forward {
    const struct model *m;
    const struct ops *ops;
    int max_tokens, max_seqs;
    /* lane 0 is the main backend (the GPU in a mixed run); lane 1, when split, runs the layers
     * (and embedding / lm_head) the placement gives the CPU */
    struct fwd_lane lane[2];
    bool split;
    uint8_t *layer_lane; /* (n_layers) 0 or 1 */
    int embed_lane, head_lane;
    int guest_min_tokens; /* fwd_placement's: lane-1 layers run on lane 0 in steps this large */
    bool guest;           /* this step runs them there */
    float *xfer;          /* host (max_tokens * hidden): the residual stream crossing lanes */
    int32_t *logit_rows;  /* host (max_seqs) */
    float *hook_buf;      /* host (hidden) */
    forward_hidden_hook hook;
    void *hook_user;
    int hook_token;
    /* decode-graph padding (see decode_bucket); pad_block < 0 disables it */
    int32_t pad_block;
    struct fwd_seq *pad_seqs;            /* (max_seqs) */
    int32_t *pad_tokens, *pad_positions; /* (max_seqs) */
    struct op_sample_seq *sample_seqs;   /* (max_seqs) for the sample op */
    float *row_buf;                      /* host (vocab): one row of logits, no sample op */
    bool no_fusion;                      /* forward_set_fusion(false): the plain ops only */
    /* the last step's host time in the CPU lane's ops and in lane crossings (forward_lane_seconds)
     */
    double lane_cpu_s, lane_cross_s;
    /* ... the whole step's host time, and of it the wait for the device's tail and the sample or
     * logits read after the layers were queued */
    double step_s, tail_s;
    int vocab; /* the whole vocabulary: token ids and the logits' width (a shard holds part) */
    /* tensor parallel (forward_set_collective); coll NULL on a whole model */
    const struct tl_collective *coll; /* borrowed */
    float *tp_gather;                 /* host (world, max_seqs, vocab part) */
    float *tp_logits;                 /* host (max_seqs, vocab), rank 0: rows to sample */
    int32_t *tp_msg;                  /* the step as rank 0 sends it */
    size_t tp_msg_cap;
    struct fwd_seq *tp_seqs; /* (max_seqs) a received step's sequences */
    bool tp_sent;            /* rank 0 sent this step: a failure now must break the group */
};

static enum tl_status ops_err(const struct forward *f, const struct ops *o, enum tl_status st,
                              struct tl_err *err, const char *what) {
    (void)f;
    return tl_fail(err, st, "%s backend: %s failed: %s", o->name, what, o->last_error(o->ctx));
}

/* The activation buffers: the residual stream, normed input, q/k/v, attention output,
 * projection output, gate/up (T rows each), and the gathered last rows and their logits. */
#define FWD_NBUF 11

static void buffer_elems(const struct config *c, int max_tokens, int max_seqs, size_t e[FWD_NBUF]) {
    size_t T = (size_t)max_tokens, S = (size_t)max_seqs;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t h = (size_t)c->hidden_size, in = (size_t)c->intermediate_size;
    size_t v[FWD_NBUF] = {T * h,
                          T * h,
                          T * qd,
                          T * kvd,
                          T * kvd,
                          T * qd,
                          T * h,
                          T * in,
                          T * in,
                          S * h,
                          S * (size_t)c->vocab_size};
    memcpy(e, v, sizeof v);
}

size_t forward_activation_bytes(const struct config *c, enum tl_dtype act, int max_tokens,
                                int max_seqs) {
    size_t e[FWD_NBUF], total = 0;
    buffer_elems(c, max_tokens, max_seqs, e);
    for (int i = 0; i < FWD_NBUF; i++) total += (e[i] * dtype_size(act) + 255) & ~(size_t)255;
    return total;
}

static enum tl_status lane_alloc(struct fwd_lane *ln, int max_tokens, int max_seqs,
                                 struct tl_err *err) {
    const struct ops *ops = ln->o;
    size_t es = dtype_size(ops->act_dtype), elems[FWD_NBUF];
    buffer_elems(&ln->m->cfg, max_tokens, max_seqs, elems);
    void **bufs[FWD_NBUF] = {&ln->res,  &ln->xn,   &ln->q,  &ln->k,    &ln->v,     &ln->attn,
                             &ln->proj, &ln->gate, &ln->up, &ln->last, &ln->logits};
    for (int i = 0; i < FWD_NBUF; i++)
        if (ops->buf_alloc(ops->ctx, elems[i] * es, bufs[i]) != TL_OK)
            return tl_fail(err, TL_ERR_NOMEM,
                           "%s backend: no memory for activations of %d tokens (%.1f MiB): "
                           "lower --max-num-batched-tokens",
                           ops->name, max_tokens,
                           (double)forward_activation_bytes(&ln->m->cfg, ops->act_dtype, max_tokens,
                                                            max_seqs) /
                               (1 << 20));
    return TL_OK;
}

static void lane_free(struct fwd_lane *ln) {
    void *bufs[] = {ln->res,  ln->xn,   ln->q,  ln->k,    ln->v,     ln->attn,
                    ln->proj, ln->gate, ln->up, ln->last, ln->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) ln->o->buf_free(ln->o->ctx, bufs[i]);
}

enum tl_status forward_create(const struct model *m, const struct ops *ops, int max_tokens,
                              int max_seqs, struct forward **out, struct tl_err *err) {
    return forward_create_split(m, ops, NULL, NULL, NULL, max_tokens, max_seqs, out, err);
}

enum tl_status forward_create_split(const struct model *m, const struct ops *ops,
                                    const struct model *cpu_m, const struct ops *cpu_ops,
                                    const struct fwd_placement *pl, int max_tokens, int max_seqs,
                                    struct forward **out, struct tl_err *err) {
    *out = NULL;
    if (max_tokens < 1 || max_seqs < 1 || max_seqs > max_tokens)
        return tl_fail(err, TL_ERR_INVALID, "forward: need 1 <= max_seqs (%d) <= max_tokens (%d)",
                       max_seqs, max_tokens);
    bool split = cpu_ops && pl;
    if (split && !ops->write_f32)
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "%s backend cannot take hidden states back from the CPU", ops->name);
    struct forward *f = calloc(1, sizeof *f);
    if (!f) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    f->m = m;
    f->ops = ops;
    f->max_tokens = max_tokens;
    f->max_seqs = max_seqs;
    f->hook_token = -1;
    f->pad_block = -1;
    f->vocab = m->tp.world > 1 ? m->tp.vocab_total : m->cfg.vocab_size;
    f->lane[0] = (struct fwd_lane){.o = ops, .m = m};
    enum tl_status st = lane_alloc(&f->lane[0], max_tokens, max_seqs, err);
    if (st == TL_OK && split) {
        f->split = true;
        f->lane[1] = (struct fwd_lane){.o = cpu_ops, .m = cpu_m};
        f->embed_lane = pl->embed_on_cpu;
        f->head_lane = pl->head_on_cpu;
        f->guest_min_tokens = pl->guest_min_tokens > 0 ? pl->guest_min_tokens : 0;
        f->layer_lane = malloc((size_t)m->cfg.n_layers);
        f->xfer = malloc((size_t)max_tokens * (size_t)m->cfg.hidden_size * sizeof *f->xfer);
        if (!f->layer_lane || !f->xfer) st = tl_fail(err, TL_ERR_NOMEM, "out of host memory");
        for (int l = 0; st == TL_OK && l < m->cfg.n_layers; l++)
            f->layer_lane[l] = pl->layer_on_cpu[l] ? 1 : 0;
        if (st == TL_OK) st = lane_alloc(&f->lane[1], max_tokens, max_seqs, err);
    }
    if (st != TL_OK) {
        forward_destroy(f);
        return st;
    }
    f->logit_rows = malloc((size_t)max_seqs * sizeof *f->logit_rows);
    f->hook_buf = malloc((size_t)m->cfg.hidden_size * sizeof *f->hook_buf);
    f->pad_seqs = malloc((size_t)max_seqs * sizeof *f->pad_seqs);
    f->pad_tokens = malloc((size_t)max_seqs * sizeof *f->pad_tokens);
    f->pad_positions = malloc((size_t)max_seqs * sizeof *f->pad_positions);
    f->sample_seqs = malloc((size_t)max_seqs * sizeof *f->sample_seqs);
    /* the lane that holds the logits samples them, or the host does through row_buf */
    bool host_rows = !f->lane[f->split ? f->head_lane : 0].o->sample;
    f->row_buf = host_rows ? malloc((size_t)f->vocab * sizeof *f->row_buf) : NULL;
    if (!f->logit_rows || !f->hook_buf || !f->pad_seqs || !f->pad_tokens || !f->pad_positions ||
        !f->sample_seqs || (host_rows && !f->row_buf)) {
        forward_destroy(f);
        return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    }
    *out = f;
    return TL_OK;
}

void forward_destroy(struct forward *f) {
    if (!f) return;
    for (int i = 0; i < 2; i++)
        if (f->lane[i].o) lane_free(&f->lane[i]);
    free(f->layer_lane);
    free(f->xfer);
    free(f->logit_rows);
    free(f->hook_buf);
    free(f->pad_seqs);
    free(f->pad_tokens);
    free(f->pad_positions);
    free(f->sample_seqs);
    free(f->row_buf);
    free(f->tp_gather);
    free(f->tp_logits);
    free(f->tp_msg);
    free(f->tp_seqs);
    free(f);
}

void forward_set_hidden_hook(struct forward *f, forward_hidden_hook hook, void *user, int token) {
    f->hook = hook;
    f->hook_user = user;
    f->hook_token = token;
}

/* Checks a batch before any op runs, so a bad request fails alone and cleanly. */
static enum tl_status check_batch(const struct forward *f, const struct fwd_batch *b, int *n_logits,
                                  struct tl_err *err) {
    const struct config *c = &f->m->cfg;
    if (b->n_tokens < 1 || b->n_tokens > f->max_tokens)
        return tl_fail(err, TL_ERR_INVALID, "step has %d tokens; this engine takes 1..%d per step",
                       b->n_tokens, f->max_tokens);
    if (b->n_seqs < 1 || b->n_seqs > f->max_seqs)
        return tl_fail(err, TL_ERR_INVALID, "step has %d sequences; at most %d", b->n_seqs,
                       f->max_seqs);
    int t = 0, nl = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        const struct fwd_seq *q = &b->seqs[s];
        if (q->n_new < 1 || q->n_past < 0 || t + q->n_new > b->n_tokens)
            return tl_fail(err, TL_ERR_INVALID, "sequence %d of the step is malformed", s);
        for (int i = 0; i < q->n_new; i++, t++) {
            if (b->tokens[t] < 0 || b->tokens[t] >= f->vocab)
                return tl_fail(err, TL_ERR_INVALID, "token id %d is outside the vocabulary (0..%d)",
                               b->tokens[t], f->vocab - 1);
            if (b->positions[t] != q->n_past + i)
                return tl_fail(err, TL_ERR_INVALID, "position of token %d is %d, expected %d", t,
                               b->positions[t], q->n_past + i);
        }
        if (q->n_past + q->n_new > c->max_position_embeddings)
            return tl_fail(err, TL_ERR_INVALID,
                           "sequence %d reaches %d tokens; the model's max_position_embeddings "
                           "is %d",
                           s, q->n_past + q->n_new, c->max_position_embeddings);
        if (q->want_logits) f->logit_rows[nl++] = t - 1;
    }
    if (t != b->n_tokens)
        return tl_fail(err, TL_ERR_INVALID, "sequences hold %d tokens, the step says %d", t,
                       b->n_tokens);
    *n_logits = nl;
    return TL_OK;
}

static enum tl_status hook_call(struct forward *f, const struct ops *o, const void *buf,
                                int layer) {
    const struct config *c = &f->m->cfg;
    if (!f->hook || f->hook_token < 0) return TL_OK;
    size_t off = (size_t)f->hook_token * c->hidden_size * dtype_size(o->act_dtype);
    enum tl_status st =
        o->read_f32(o->ctx, (const char *)buf + off, (size_t)c->hidden_size, f->hook_buf);
    if (st == TL_OK) f->hook(f->hook_user, layer, f->hook_buf, c->hidden_size);
    return st;
}

/* Optional tensors (biases) are passed as NULL when the model has none. */
static const struct tl_tensor *opt(const struct tl_tensor *t) {
    return t->data ? t : NULL;
}

static enum tl_status mm(const struct ops *o, const void *x, int m, const struct tl_tensor *w,
                         const struct tl_tensor *b, void *y) {
    return o->matmul(o->ctx, x, m, 1, &w, &b, &y);
}

#define OP(call, what)                                                                             \
    do {                                                                                           \
        enum tl_status st_ = (call);                                                               \
        if (st_ != TL_OK) return ops_err(f, o, st_, err, what);                                    \
    } while (0)

/* Whether a step of T rows runs a lane's layers fused (fused_layer): a backend that has the
 * fused linear layers, and a step small enough. */
static bool use_fused(const struct forward *f, const struct fwd_lane *ln, int T) {
    /* a tensor-parallel rank adds o / down outputs only after their all-reduce */
    return !f->no_fusion && !f->coll && ln->o->matmul_fused && T <= ln->o->fused_max_m;
}

static enum tl_status fused_mm(const struct ops *o, const void *in, int T,
                               const struct tl_tensor *norm_w, float eps, int n_w,
                               const struct tl_tensor *const *w, const struct tl_tensor *const *b,
                               void *const *y, enum op_epi epi) {
    const struct op_fused_mm fm = {.x = in,
                                   .m = T,
                                   .norm_w = norm_w,
                                   .eps = eps,
                                   .n_w = n_w,
                                   .w = w,
                                   .bias = b,
                                   .y = y,
                                   .epi = epi};
    return o->matmul_fused(o->ctx, &fm);
}

/* A layer the CPU lane owns but either lane may run (guests): its new tokens' K and V, before
 * RoPE, also go into the other lane's cache, through host fp32 like the residual stream. The
 * other lane's q buffer takes the rotation it does not need. */
static bool mirrored(const struct forward *f, int l) {
    return f->split && f->guest_min_tokens > 0 && f->layer_lane[l] == 1;
}

static enum tl_status mirror_kv(struct forward *f, const struct fwd_lane *from, int l, int T,
                                struct tl_err *err) {
    const struct fwd_lane *to = &f->lane[from == &f->lane[0] ? 1 : 0];
    const struct config *c = &f->m->cfg;
    size_t n = (size_t)T * (size_t)c->n_kv_heads * (size_t)c->head_dim;
    const void *src[2] = {from->k, from->v};
    void *dst[2] = {to->k, to->v};
    for (int i = 0; i < 2; i++) {
        enum tl_status st = from->o->read_f32(from->o->ctx, src[i], n, f->xfer);
        if (st != TL_OK) return ops_err(f, from->o, st, err, "read K/V for the other lane");
        st = to->o->write_f32(to->o->ctx, f->xfer, n, dst[i]);
        if (st != TL_OK) return ops_err(f, to->o, st, err, "write K/V from the other lane");
    }
    enum tl_status st = to->o->rope_kv_write(to->o->ctx, l, to->q, to->k, to->v);
    if (st != TL_OK) return ops_err(f, to->o, st, err, "rope/kv write of the other lane's copy");
    return TL_OK;
}

/* run_layer with three kernels fewer: the rmsnorms ride in the GEMVs that read their output,
 * silu * up in the gate/up GEMV, and each residual add in the o / down GEMV that produces it, so
 * nothing is pending after the layer. After a layer that left its MLP output pending (the CPU
 * lane's), the attention norm is a plain rmsnorm that adds it. */
static enum tl_status fused_layer(struct forward *f, const struct fwd_lane *ln, int l, int T,
                                  bool pending, struct tl_err *err) {
    const struct config *c = &f->m->cfg;
    const struct model_layer *L = &ln->m->layers[l];
    const struct ops *o = ln->o;
    void *x = o->ctx;
    const float eps = c->rms_norm_eps;
    if (o->layer_begin) OP(o->layer_begin(x, l), "layer begin");
    if (pending) OP(o->rmsnorm(x, ln->res, ln->proj, &L->attn_norm, eps, T, ln->xn), "rmsnorm");
    OP(hook_call(f, o, ln->res, l), "read hidden state");
    {
        const struct tl_tensor *w[3] = {&L->wq, &L->wk, &L->wv};
        const struct tl_tensor *b[3] = {opt(&L->bq), opt(&L->bk), opt(&L->bv)};
        void *y[3] = {ln->q, ln->k, ln->v};
        OP(fused_mm(o, pending ? ln->xn : ln->res, T, pending ? NULL : &L->attn_norm, eps, 3, w, b,
                    y, OP_EPI_STORE),
           "rmsnorm + q/k/v_proj");
    }
    if (mirrored(f, l)) {
        enum tl_status st = mirror_kv(f, ln, l, T, err);
        if (st != TL_OK) return st;
    }
    OP(o->rope_kv_write(x, l, ln->q, ln->k, ln->v), "rope/kv write");
    OP(o->attention(x, l, ln->q, ln->attn), "attention");
    {
        const struct tl_tensor *w[1] = {&L->wo}, *b[1] = {opt(&L->bo)};
        void *y[1] = {ln->res};
        OP(fused_mm(o, ln->attn, T, NULL, eps, 1, w, b, y, OP_EPI_RESADD), "o_proj + residual");
    }
    {
        const struct tl_tensor *w[2] = {&L->w_gate, &L->w_up};
        void *y[1] = {ln->gate};
        OP(fused_mm(o, ln->res, T, &L->mlp_norm, eps, 2, w, NULL, y, OP_EPI_SILU),
           "rmsnorm + gate/up_proj + silu*mul");
    }
    {
        const struct tl_tensor *w[1] = {&L->w_down};
        void *y[1] = {ln->res};
        OP(fused_mm(o, ln->gate, T, NULL, eps, 1, w, NULL, y, OP_EPI_RESADD),
           "down_proj + residual");
    }
    if (o->layer_end) OP(o->layer_end(x, l), "layer end");
    return TL_OK;
}

/* Tensor parallel: buf (n activations) = the sum of every rank's buf. No-op on a whole model. */
static enum tl_status reduce(struct forward *f, const struct ops *o, void *buf, size_t n,
                             const char *what, struct tl_err *err) {
    const struct tl_collective *c = f->coll;
    if (!c) return TL_OK;
    enum tl_status st = c->all_reduce_sum(c->ctx, o, buf, n);
    if (st != TL_OK)
        return tl_fail(err, st, "all-reduce after %s: %s", what, c->last_error(c->ctx));
    return TL_OK;
}

/* One layer on one lane: attention and MLP sub-blocks, the MLP output left in proj (it joins
 * the stream in the next rmsnorm). */
static enum tl_status run_layer(struct forward *f, const struct fwd_lane *ln, int l, int T,
                                bool pending, struct tl_err *err) {
    const struct config *c = &f->m->cfg;
    const struct model_layer *L = &ln->m->layers[l];
    const struct ops *o = ln->o;
    void *x = o->ctx;
    if (use_fused(f, ln, T)) return fused_layer(f, ln, l, T, pending, err);
    if (o->layer_begin) OP(o->layer_begin(x, l), "layer begin");
    OP(o->rmsnorm(x, ln->res, pending ? ln->proj : NULL, &L->attn_norm, c->rms_norm_eps, T, ln->xn),
       "rmsnorm");
    OP(hook_call(f, o, ln->res, l), "read hidden state");
    {
        const struct tl_tensor *w[3] = {&L->wq, &L->wk, &L->wv};
        const struct tl_tensor *b[3] = {opt(&L->bq), opt(&L->bk), opt(&L->bv)};
        void *y[3] = {ln->q, ln->k, ln->v};
        OP(o->matmul(x, ln->xn, T, 3, w, b, y), "q/k/v_proj");
    }
    if (mirrored(f, l)) {
        enum tl_status st = mirror_kv(f, ln, l, T, err);
        if (st != TL_OK) return st;
    }
    OP(o->rope_kv_write(x, l, ln->q, ln->k, ln->v), "rope/kv write");
    OP(o->attention(x, l, ln->q, ln->attn), "attention");
    OP(mm(o, ln->attn, T, &L->wo, opt(&L->bo), ln->proj), "o_proj");
    /* row-parallel o_proj: each rank holds a partial sum over its heads */
    enum tl_status st = reduce(f, o, ln->proj, (size_t)T * c->hidden_size, "o_proj", err);
    if (st != TL_OK) return st;
    OP(o->rmsnorm(x, ln->res, ln->proj, &L->mlp_norm, c->rms_norm_eps, T, ln->xn), "rmsnorm");
    {
        const struct tl_tensor *w[2] = {&L->w_gate, &L->w_up};
        void *y[2] = {ln->gate, ln->up};
        OP(o->matmul(x, ln->xn, T, 2, w, NULL, y), "gate/up_proj");
    }
    OP(o->silu_mul(x, ln->gate, ln->up, T, c->intermediate_size, ln->gate), "silu*mul");
    OP(mm(o, ln->gate, T, &L->w_down, NULL, ln->proj), "down_proj");
    st = reduce(f, o, ln->proj, (size_t)T * c->hidden_size, "down_proj", err);
    if (st != TL_OK) return st;
    if (o->layer_end) OP(o->layer_end(x, l), "layer end");
    return TL_OK;
}

/* Moves the residual stream (and the MLP output not yet added, when pending) from one lane to
 * the other through host fp32: kilobytes per decode token. */
static enum tl_status cross(struct forward *f, int from, int to, int T, bool pending,
                            struct tl_err *err) {
    const struct fwd_lane *a = &f->lane[from], *b = &f->lane[to];
    size_t n = (size_t)T * (size_t)f->m->cfg.hidden_size;
    void *src[2] = {a->res, a->proj}, *dst[2] = {b->res, b->proj};
    for (int i = 0; i < (pending ? 2 : 1); i++) {
        enum tl_status st = a->o->read_f32(a->o->ctx, src[i], n, f->xfer);
        if (st != TL_OK) return ops_err(f, a->o, st, err, "read hidden state");
        st = b->o->write_f32(b->o->ctx, f->xfer, n, dst[i]);
        if (st != TL_OK) return ops_err(f, b->o, st, err, "write hidden state");
    }
    return TL_OK;
}

/* The layers, from the embedding to the logits of the gathered rows (left in the head lane's
 * logits buffer). */
static enum tl_status run_ops(struct forward *f, int T, int nl, struct tl_err *err) {
    const struct config *c = &f->m->cfg;
    int cur = f->split ? f->embed_lane : 0;
    f->lane_cpu_s = f->lane_cross_s = f->tail_s = 0;
    {
        const struct fwd_lane *ln = &f->lane[cur];
        const struct ops *o = ln->o;
        if (f->coll) {
            /* vocabulary-parallel: each rank looks up the ids in its rows, zeros elsewhere */
            OP(o->embedding_part(o->ctx, &ln->m->embed, ln->m->tp.vocab_start, ln->res),
               "embedding");
            enum tl_status st =
                reduce(f, o, ln->res, (size_t)T * c->hidden_size, "the embedding", err);
            if (st != TL_OK) return st;
        } else {
            OP(o->embedding(o->ctx, &ln->m->embed, ln->res), "embedding");
        }
    }
    bool pending = false; /* the last layer's MLP output is not in the stream yet */
    for (int l = 0; l < c->n_layers; l++) {
        int want = f->split && !f->guest ? f->layer_lane[l] : 0;
        if (want != cur) {
            double t0 = tl_now_s();
            enum tl_status st = cross(f, cur, want, T, pending, err);
            if (st != TL_OK) return st;
            f->lane_cross_s += tl_now_s() - t0;
            cur = want;
        }
        double t0 = cur == 1 ? tl_now_s() : 0;
        enum tl_status st = run_layer(f, &f->lane[cur], l, T, pending, err);
        if (st != TL_OK) return st;
        if (cur == 1) f->lane_cpu_s += tl_now_s() - t0;
        pending = !use_fused(f, &f->lane[cur], T);
    }
    int want = f->split ? f->head_lane : 0;
    if (want != cur) {
        double t0 = tl_now_s();
        enum tl_status st = cross(f, cur, want, T, pending, err);
        if (st != TL_OK) return st;
        f->lane_cross_s += tl_now_s() - t0;
        cur = want;
    }
    const struct fwd_lane *ln = &f->lane[cur];
    const struct ops *o = ln->o;
    void *x = o->ctx;
    OP(o->rmsnorm(x, ln->res, pending ? ln->proj : NULL, &ln->m->final_norm, c->rms_norm_eps, T,
                  ln->xn),
       "final norm");
    OP(hook_call(f, o, ln->xn, c->n_layers), "read hidden state");
    /* the head is unit n_layers for a backend that streams it, and runs every step so the
     * backend's ring of streamed units stays in step */
    if (o->layer_begin) OP(o->layer_begin(x, c->n_layers), "layer begin");
    if (nl > 0) {
        OP(o->gather_rows(x, ln->xn, c->hidden_size, f->logit_rows, nl, ln->last), "gather");
        OP(mm(o, ln->last, nl, &ln->m->lm_head, NULL, ln->logits), "lm_head");
    }
    if (o->layer_end) OP(o->layer_end(x, c->n_layers), "layer end");
    return TL_OK;
}

/* ---------------- tensor parallel: the step message and the logits ---------------- */

static enum tl_status step_logits(struct forward *f, const struct fwd_batch *b, int *n_logits,
                                  struct tl_err *err);

/* The step as one int32 message: n_seqs, n_tokens, (n_new, n_past, n_blocks, want_logits) per
 * sequence, every sequence's block table, the tokens, the positions. */
static enum tl_status send_step(struct forward *f, const struct fwd_batch *b, struct tl_err *err) {
    const struct tl_collective *c = f->coll;
    size_t n = 2 + 4 * (size_t)b->n_seqs + 2 * (size_t)b->n_tokens;
    for (int s = 0; s < b->n_seqs; s++) n += (size_t)b->seqs[s].n_blocks;
    if (n > (size_t)INT32_MAX)
        return tl_fail(err, TL_ERR_INVALID, "the step is too large to send to the other ranks");
    if (n > f->tp_msg_cap) {
        int32_t *p = realloc(f->tp_msg, n * sizeof *p);
        if (!p) return tl_fail(err, TL_ERR_NOMEM, "out of host memory for the step message");
        f->tp_msg = p;
        f->tp_msg_cap = n;
    }
    int32_t *m = f->tp_msg;
    size_t k = 0;
    m[k++] = b->n_seqs;
    m[k++] = b->n_tokens;
    for (int s = 0; s < b->n_seqs; s++) {
        const struct fwd_seq *q = &b->seqs[s];
        m[k++] = q->n_new, m[k++] = q->n_past, m[k++] = q->n_blocks, m[k++] = q->want_logits;
    }
    for (int s = 0; s < b->n_seqs; s++) {
        memcpy(m + k, b->seqs[s].block_table, (size_t)b->seqs[s].n_blocks * sizeof *m);
        k += (size_t)b->seqs[s].n_blocks;
    }
    memcpy(m + k, b->tokens, (size_t)b->n_tokens * sizeof *m);
    k += (size_t)b->n_tokens;
    memcpy(m + k, b->positions, (size_t)b->n_tokens * sizeof *m);
    const int32_t *msg = m;
    int len = (int)n;
    enum tl_status st = c->broadcast_step(c->ctx, &msg, &len);
    if (st != TL_OK)
        return tl_fail(err, st, "sending the step to the other ranks: %s", c->last_error(c->ctx));
    f->tp_sent = true;
    return TL_OK;
}

/* The batch a received message describes; its arrays borrow from msg. */
static enum tl_status parse_step(struct forward *f, const int32_t *m, int n, struct fwd_batch *b,
                                 struct tl_err *err) {
    if (n < 2 || m[0] < 1 || m[0] > f->max_seqs || m[1] < 1 || m[1] > f->max_tokens)
        return tl_fail(err, TL_ERR_INTERNAL, "malformed step message from rank 0");
    int ns = m[0], nt = m[1];
    size_t k = 2 + 4 * (size_t)ns, need = k + 2 * (size_t)nt;
    for (int s = 0; s < ns && need <= (size_t)n; s++) {
        const int32_t *q = m + 2 + 4 * (size_t)s;
        if (q[2] < 0) return tl_fail(err, TL_ERR_INTERNAL, "malformed step message from rank 0");
        f->tp_seqs[s] =
            (struct fwd_seq){.n_new = q[0], .n_past = q[1], .n_blocks = q[2], .want_logits = q[3]};
        need += (size_t)q[2];
    }
    if (need != (size_t)n)
        return tl_fail(err, TL_ERR_INTERNAL, "malformed step message from rank 0");
    for (int s = 0; s < ns; s++) {
        f->tp_seqs[s].block_table = m + k;
        k += (size_t)f->tp_seqs[s].n_blocks;
    }
    *b = (struct fwd_batch){ns, f->tp_seqs, nt, m + k, m + k + nt};
    return TL_OK;
}

/* Every rank's nl rows of its vocabulary part, gathered; rank 0 (dst non-NULL) assembles the
 * whole rows (nl, vocab), dropping the padding rows' logits. */
static enum tl_status gather_logits(struct forward *f, int nl, float *dst, struct tl_err *err) {
    const struct tl_collective *c = f->coll;
    const struct fwd_lane *hl = &f->lane[0];
    size_t part = (size_t)f->m->cfg.vocab_size, V = (size_t)f->vocab;
    enum tl_status st =
        c->all_gather_f32(c->ctx, hl->o, hl->logits, (size_t)nl * part, f->tp_gather);
    if (st != TL_OK) return tl_fail(err, st, "gathering the logits: %s", c->last_error(c->ctx));
    if (!dst) return TL_OK;
    for (int q = 0; q < c->world; q++) {
        size_t v0 = (size_t)q * part;
        if (v0 >= V) break;
        size_t cols = V - v0 < part ? V - v0 : part;
        for (int i = 0; i < nl; i++)
            memcpy(dst + (size_t)i * V + v0, f->tp_gather + ((size_t)q * nl + (size_t)i) * part,
                   cols * sizeof *dst);
    }
    return TL_OK;
}

enum tl_status forward_set_collective(struct forward *f, const struct tl_collective *coll,
                                      struct tl_err *err) {
    const struct model_tp *tp = &f->m->tp;
    const struct ops *o = f->ops;
    if (coll->world != tp->world || coll->rank != tp->rank)
        return tl_fail(err, TL_ERR_INVALID,
                       "the collective is rank %d of %d, the model's shard rank %d of %d",
                       coll->rank, coll->world, tp->rank, tp->world);
    if (f->split)
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "tensor parallelism with layers offloaded to the CPU is not implemented");
    if (!o->embedding_part || !o->read_f32 || !o->write_f32)
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "the %s backend cannot run a tensor-parallel shard (it lacks the "
                       "vocabulary-parallel embedding or host copies of activations)",
                       o->name);
    size_t S = (size_t)f->max_seqs, part = (size_t)f->m->cfg.vocab_size;
    f->tp_gather = malloc((size_t)coll->world * S * part * sizeof *f->tp_gather);
    f->tp_seqs = malloc(S * sizeof *f->tp_seqs);
    if (coll->rank == 0) f->tp_logits = malloc(S * (size_t)f->vocab * sizeof *f->tp_logits);
    if (!f->tp_gather || !f->tp_seqs || (coll->rank == 0 && !f->tp_logits))
        return tl_fail(err, TL_ERR_NOMEM, "out of host memory for the tensor-parallel logits");
    f->coll = coll;
    return TL_OK;
}

enum tl_status forward_serve(struct forward *f, struct tl_err *err) {
    const struct tl_collective *c = f->coll;
    if (!c || c->rank == 0)
        return tl_fail(err, TL_ERR_INVALID,
                       "forward_serve runs ranks 1.. of a tensor-parallel group; rank 0 steps");
    for (;;) {
        const int32_t *msg = NULL;
        int n = 0;
        enum tl_status st = c->broadcast_step(c->ctx, &msg, &n);
        if (st != TL_OK)
            return tl_fail(err, st, "rank %d: receiving a step: %s", c->rank,
                           c->last_error(c->ctx));
        if (n == 0) return TL_OK; /* the group shut down */
        struct fwd_batch b;
        int nl = 0;
        st = parse_step(f, msg, n, &b, err);
        if (st == TL_OK) st = step_logits(f, &b, &nl, err);
        if (st == TL_OK && nl > 0) st = gather_logits(f, nl, NULL, err);
        if (st != TL_OK) {
            /* the collectives' messages already name the rank */
            if (strncmp(err->msg, "tensor parallel rank", 20) != 0)
                tl_err_prefix(err, "tensor parallel rank %d", c->rank);
            c->abort(c->ctx, err->msg);
            return st;
        }
    }
}

/* Rank 0 of a group: ends a step that failed after it went out, so that no rank waits for this
 * one. */
static enum tl_status tp_end_step(struct forward *f, enum tl_status st, struct tl_err *err) {
    if (f->coll && f->tp_sent && st != TL_OK) f->coll->abort(f->coll->ctx, err->msg);
    f->tp_sent = false;
    return st;
}

static enum tl_status rank0_only(const struct forward *f, struct tl_err *err) {
    if (f->coll && f->coll->rank != 0)
        return tl_fail(err, TL_ERR_INVALID,
                       "rank %d of a tensor-parallel group runs the steps rank 0 sends "
                       "(forward_serve)",
                       f->coll->rank);
    return TL_OK;
}

/* Decode steps of up to 16 sequences are padded to a bucket so a backend can replay one
 * captured graph per bucket: pad sequences decode token 0 at position 0 into the pad block. */
static int decode_bucket(const struct forward *f, const struct fwd_batch *b) {
    if (f->pad_block < 0 || !f->ops->graph_mode || f->hook || f->split || f->coll ||
        b->n_tokens != b->n_seqs || b->n_seqs > 16)
        return 0;
    for (int s = 0; s < b->n_seqs; s++)
        if (b->seqs[s].n_new != 1 || !b->seqs[s].want_logits) return 0;
    static const int buckets[] = {1, 2, 4, 8, 16};
    for (int i = 0; i < 5; i++)
        if (buckets[i] >= b->n_seqs && buckets[i] <= f->max_seqs) return buckets[i];
    return b->n_seqs == f->max_seqs ? b->n_seqs : 0;
}

/* One step up to the logits of its *n_logits wanting rows, left in the head lane's logits (backend
 * memory, rows in batch order; a padded decode step's pad rows follow the real ones). */
static enum tl_status step_logits(struct forward *f, const struct fwd_batch *b, int *n_logits,
                                  struct tl_err *err) {
    const struct ops *o = f->ops;
    void *x = o->ctx;
    int T = b->n_tokens, nl = 0;
    enum tl_status st = check_batch(f, b, &nl, err);
    if (st != TL_OK) return st;
    if (f->m->tp.world > 1 && !f->coll)
        return tl_fail(err, TL_ERR_INVALID,
                       "the model is rank %d of a %d-way tensor-parallel shard: the forward needs "
                       "its collective (forward_set_collective)",
                       f->m->tp.rank, f->m->tp.world);
    if (f->coll && f->coll->rank == 0 && (st = send_step(f, b, err)) != TL_OK) return st;
    if (f->hook_token >= T) f->hook_token = -1;

    int bucket = decode_bucket(f, b), mode = 0;
    struct fwd_batch pb = *b;
    if (bucket) {
        memcpy(f->pad_seqs, b->seqs, (size_t)b->n_seqs * sizeof *f->pad_seqs);
        memcpy(f->pad_tokens, b->tokens, (size_t)T * sizeof *f->pad_tokens);
        memcpy(f->pad_positions, b->positions, (size_t)T * sizeof *f->pad_positions);
        for (int s = b->n_seqs; s < bucket; s++) {
            f->pad_seqs[s] = (struct fwd_seq){1, 0, &f->pad_block, 1, 1};
            f->pad_tokens[s] = 0;
            f->pad_positions[s] = 0;
            f->logit_rows[s] = s;
        }
        pb = (struct fwd_batch){bucket, f->pad_seqs, bucket, f->pad_tokens, f->pad_positions};
    }
    f->guest = f->split && f->guest_min_tokens > 0 && pb.n_tokens >= f->guest_min_tokens;
    OP(o->begin_step(x, &pb), "begin_step");
    if (f->split) {
        const struct ops *co = f->lane[1].o;
        st = co->begin_step(co->ctx, &pb);
        if (st != TL_OK) return ops_err(f, co, st, err, "begin_step");
    }
    if (bucket) mode = o->graph_mode(x);
    if (mode == 1) {
        OP(o->graph_replay(x), "graph replay");
    } else {
        if (mode == 2) OP(o->graph_capture_begin(x), "graph capture");
        st = run_ops(f, pb.n_tokens, bucket ? bucket : nl, err);
        if (mode == 2) {
            enum tl_status st2 = o->graph_capture_end(x); /* ends the capture even on failure */
            if (st == TL_OK && st2 != TL_OK) return ops_err(f, o, st2, err, "graph capture");
        }
        if (st != TL_OK) return st;
    }
    *n_logits = nl;
    return TL_OK;
}

/* The lane whose backend holds the logits (the CPU's when it runs the lm_head). */
static const struct fwd_lane *head_lane(const struct forward *f) {
    return &f->lane[f->split ? f->head_lane : 0];
}

static enum tl_status step_read(struct forward *f, const struct fwd_batch *b, float *logits,
                                struct tl_err *err);

enum tl_status forward_step(struct forward *f, const struct fwd_batch *b, float *logits,
                            struct tl_err *err) {
    double t0 = tl_now_s();
    enum tl_status st = step_read(f, b, logits, err);
    f->step_s = tl_now_s() - t0;
    return st;
}

static enum tl_status step_read(struct forward *f, const struct fwd_batch *b, float *logits,
                                struct tl_err *err) {
    int nl = 0;
    enum tl_status st = rank0_only(f, err);
    if (st != TL_OK) return st;
    if (f->coll) {
        st = step_logits(f, b, &nl, err);
        if (st == TL_OK && nl > 0) st = gather_logits(f, nl, logits, err);
        return tp_end_step(f, st, err);
    }
    st = step_logits(f, b, &nl, err);
    if (st != TL_OK || nl == 0) return st;
    const struct fwd_lane *hl = head_lane(f);
    const struct ops *o = hl->o;
    double t0 = tl_now_s();
    OP(o->read_f32(o->ctx, hl->logits, (size_t)nl * f->m->cfg.vocab_size, logits), "read logits");
    f->tail_s = tl_now_s() - t0;
    return TL_OK;
}

static enum tl_status step_sample(struct forward *f, const struct fwd_batch *b,
                                  const struct fwd_sample *smp, struct sampler *host, int32_t *ids,
                                  struct tl_err *err);

enum tl_status forward_step_sample(struct forward *f, const struct fwd_batch *b,
                                   const struct fwd_sample *smp, struct sampler *host, int32_t *ids,
                                   struct tl_err *err) {
    double t0 = tl_now_s();
    enum tl_status st = step_sample(f, b, smp, host, ids, err);
    f->step_s = tl_now_s() - t0;
    return st;
}

static enum tl_status step_sample(struct forward *f, const struct fwd_batch *b,
                                  const struct fwd_sample *smp, struct sampler *host, int32_t *ids,
                                  struct tl_err *err) {
    const struct fwd_lane *hl = head_lane(f);
    const struct ops *o = hl->o;
    const int V = f->vocab;
    if (f->coll) {
        /* the whole rows come to rank 0's host; the host sampler draws, as without a sample op */
        if (!host)
            return tl_fail(err, TL_ERR_INVALID,
                           "tensor parallel samples on the host: forward_step_sample needs a "
                           "sampler");
        int nl = 0;
        enum tl_status st = rank0_only(f, err);
        if (st == TL_OK) st = step_logits(f, b, &nl, err);
        if (st == TL_OK && nl > 0) st = gather_logits(f, nl, f->tp_logits, err);
        if ((st = tp_end_step(f, st, err)) != TL_OK) return st;
        for (int i = 0; i < nl; i++)
            ids[i] = sampler_sample(host, smp[i].sp, smp[i].rng, f->tp_logits + (size_t)i * V,
                                    smp[i].prompt, smp[i].n_prompt, smp[i].output, smp[i].n_output);
        return TL_OK;
    }
    if (!o->sample && !host)
        return tl_fail(err, TL_ERR_INVALID,
                       "%s backend samples on the host: forward_step_sample needs a sampler",
                       o->name);
    int nl = 0;
    enum tl_status st = step_logits(f, b, &nl, err);
    if (st != TL_OK || nl == 0) return st;
    if (o->sample) {
        /* The uniform each token would take on the host, in batch order. */
        for (int i = 0; i < nl; i++)
            f->sample_seqs[i] = (struct op_sample_seq){
                .sp = smp[i].sp,
                .u = sampler_is_greedy(smp[i].sp) ? 0.0 : sampler_rng_uniform(smp[i].rng),
                .prompt = smp[i].prompt,
                .n_prompt = smp[i].n_prompt,
                .output = smp[i].output,
                .n_output = smp[i].n_output};
        double t0 = tl_now_s();
        OP(o->sample(o->ctx, hl->logits, nl, V, f->sample_seqs, ids), "sample");
        f->tail_s = tl_now_s() - t0;
        return TL_OK;
    }
    const size_t row_bytes = (size_t)V * dtype_size(o->act_dtype);
    for (int i = 0; i < nl; i++) {
        OP(o->read_f32(o->ctx, (const char *)hl->logits + i * row_bytes, (size_t)V, f->row_buf),
           "read logits");
        ids[i] = sampler_sample(host, smp[i].sp, smp[i].rng, f->row_buf, smp[i].prompt,
                                smp[i].n_prompt, smp[i].output, smp[i].n_output);
    }
    return TL_OK;
}

void forward_set_pad_block(struct forward *f, int32_t block) {
    f->pad_block = block;
}

double forward_device_seconds(const struct forward *f) {
    const struct ops *o = f->ops;
    return o->step_device_seconds ? o->step_device_seconds(o->ctx) : 0.0;
}

void forward_set_fusion(struct forward *f, bool on) {
    f->no_fusion = !on;
}

void forward_lane_seconds(const struct forward *f, double *cpu_s, double *cross_s, double *step_s,
                          double *tail_s) {
    *cpu_s = f->lane_cpu_s;
    *cross_s = f->lane_cross_s;
    *step_s = f->step_s;
    *tail_s = f->tail_s;
}
