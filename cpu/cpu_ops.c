/* cpu_ops: the CPU backend context (pool, KV pools, scratch) and the simple ops. matmul lives
 * in matmul.c, RoPE and attention in attention.c. Ops run on the calling thread plus the pool
 * and return when done. */
#include "cpu_ops.h"

#include <cblas.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "matmul.h"
#include "rope.h"

struct cpu_backend {
    struct config cfg;
    struct pool *pool;
    float *mm_scratch;  /* MATMUL_SCRATCH_FLOATS */
    float *inv_freq;    /* (head_dim / 2) */
    float *kv;          /* (n_kv_layers, 2, num_blocks, block_size, n_kv, hd) */
    int *kv_index;      /* (n_layers) layer -> its KV in kv, or -1 when this backend has none */
    size_t layer_elems; /* one of K or V for one layer */
    int num_blocks, block_size, max_ctx;
    float *attn_scratch; /* cpu_attention_scratch_floats */
    struct attn_shape shape;
    const struct fwd_batch *batch; /* the current step (borrowed from the caller) */
    int32_t *tok_seq;
    int tok_seq_cap;
    uint64_t kv_ticket; /* kv_copy batches so far */
    int kv_layers_held; /* layers whose KV is in kv */
    bool bf16_acts;     /* cpu_backend_opts.bf16_acts */
    /* the sample op's scratch, one per pool thread, made on its first call (a backend that
     * never holds logits never pays for it): a sampler and a row of logits to edit */
    struct sampler **smp; /* owned (pool size) */
    float **smp_row;      /* owned (pool size, smp_vocab) */
    int smp_vocab;
    char err[256];
};

static enum tl_status be_fail(struct cpu_backend *be, enum tl_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(be->err, sizeof be->err, fmt, ap);
    va_end(ap);
    return st;
}

size_t cpu_kv_block_bytes(const struct config *c, int block_size) {
    return (size_t)2 * c->n_layers * block_size * c->n_kv_heads * c->head_dim * sizeof(float);
}

/* ---------------- reference ops ---------------- */

struct row_args {
    struct pool *pool;
    const struct tl_tensor *w;
    const int32_t *tokens;
    float *res, *out;
    const float *add, *gate, *up;
    float eps;
    int dim;
    int32_t row0; /* embedding_part: the first vocabulary row the table holds */
};

static void embed_task(void *arg, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    const struct row_args *a = arg;
    size_t es = dtype_size(a->w->dtype);
    for (int64_t r = r0; r < r1; r++)
        dtype_to_f32(a->w->dtype, (const char *)a->w->data + (size_t)a->tokens[r] * a->dim * es,
                     a->out + (size_t)r * a->dim, (size_t)a->dim);
}

void cpu_embedding(struct pool *pool, const struct tl_tensor *table, const int32_t *tokens, int n,
                   float *out) {
    struct row_args a = {.w = table, .tokens = tokens, .out = out, .dim = (int)table->cols};
    pool_parallel_for(pool, n, 4, embed_task, &a);
}

static void rmsnorm_task(void *arg, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    const struct row_args *a = arg;
    int d = a->dim;
    float wbuf[1024];
    for (int64_t r = r0; r < r1; r++) {
        float *x = a->res + (size_t)r * d, *o = a->out + (size_t)r * d;
        if (a->add) {
            const float *ad = a->add + (size_t)r * d;
            for (int i = 0; i < d; i++) x[i] += ad[i];
        }
        double ss = 0.0;
        for (int i = 0; i < d; i++) ss += (double)x[i] * x[i];
        float inv = (float)(1.0 / sqrt(ss / d + (double)a->eps));
        for (int i0 = 0; i0 < d; i0 += 1024) {
            int m = d - i0 < 1024 ? d - i0 : 1024;
            dtype_to_f32(a->w->dtype,
                         (const char *)a->w->data + (size_t)i0 * dtype_size(a->w->dtype), wbuf,
                         (size_t)m);
            for (int i = 0; i < m; i++) o[i0 + i] = x[i0 + i] * inv * wbuf[i];
        }
    }
}

void cpu_rmsnorm(struct pool *pool, float *res, const float *add, const struct tl_tensor *w,
                 float eps, int n, float *out) {
    struct row_args a = {
        .w = w, .res = res, .add = add, .out = out, .eps = eps, .dim = (int)w->cols};
    pool_parallel_for(pool, n, 1, rmsnorm_task, &a);
}

static void silu_task(void *arg, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    const struct row_args *a = arg;
    for (int64_t i = i0; i < i1; i++) {
        float g = a->gate[i];
        a->out[i] = g / (1.0f + expf(-g)) * a->up[i];
    }
}

void cpu_silu_mul(struct pool *pool, const float *gate, const float *up, int n, int dim,
                  float *out) {
    struct row_args a = {.gate = gate, .up = up, .out = out};
    pool_parallel_for(pool, (int64_t)n * dim, 4096, silu_task, &a);
}

/* ---------------- the op table ---------------- */

static const char *op_last_error(void *ctx) {
    return ((struct cpu_backend *)ctx)->err;
}

static enum tl_status op_buf_alloc(void *ctx, size_t bytes, void **out) {
    struct cpu_backend *be = ctx;
    *out = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!*out) return be_fail(be, TL_ERR_NOMEM, "cannot allocate %zu bytes", bytes);
    return TL_OK;
}

static void op_buf_free(void *ctx, void *buf) {
    (void)ctx;
    free(buf);
}

static enum tl_status op_read_f32(void *ctx, const void *src, size_t n, float *dst) {
    (void)ctx;
    memcpy(dst, src, n * sizeof(float));
    return TL_OK;
}

static enum tl_status op_begin_step(void *ctx, const struct fwd_batch *b) {
    struct cpu_backend *be = ctx;
    if (b->n_tokens > be->tok_seq_cap) {
        int32_t *p = realloc(be->tok_seq, (size_t)b->n_tokens * sizeof *p);
        if (!p) return be_fail(be, TL_ERR_NOMEM, "out of host memory");
        be->tok_seq = p;
        be->tok_seq_cap = b->n_tokens;
    }
    int t = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        const struct fwd_seq *q = &b->seqs[s];
        int len = q->n_past + q->n_new;
        if (len > be->max_ctx)
            return be_fail(be, TL_ERR_INVALID,
                           "sequence %d has %d tokens, more than max-model-len %d", s, len,
                           be->max_ctx);
        if ((int64_t)q->n_blocks * be->block_size < len)
            return be_fail(be, TL_ERR_INTERNAL, "sequence %d: %d blocks cannot hold %d tokens", s,
                           q->n_blocks, len);
        for (int i = 0; i < q->n_blocks; i++)
            if (q->block_table[i] < 0 || q->block_table[i] >= be->num_blocks)
                return be_fail(be, TL_ERR_INTERNAL, "sequence %d: block id %d out of range", s,
                               q->block_table[i]);
        for (int i = 0; i < q->n_new; i++) be->tok_seq[t++] = s;
    }
    be->batch = b;
    return TL_OK;
}

static enum tl_status op_embedding(void *ctx, const struct tl_tensor *table, void *out) {
    struct cpu_backend *be = ctx;
    cpu_embedding(be->pool, table, be->batch->tokens, be->batch->n_tokens, out);
    return TL_OK;
}

static void embed_part_task(void *arg, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    const struct row_args *a = arg;
    size_t es = dtype_size(a->w->dtype);
    for (int64_t r = r0; r < r1; r++) {
        int64_t id = (int64_t)a->tokens[r] - a->row0;
        float *o = a->out + (size_t)r * a->dim;
        if (id >= 0 && id < a->w->rows)
            dtype_to_f32(a->w->dtype, (const char *)a->w->data + (size_t)id * a->dim * es, o,
                         (size_t)a->dim);
        else
            memset(o, 0, (size_t)a->dim * sizeof *o);
    }
}

static enum tl_status op_embedding_part(void *ctx, const struct tl_tensor *table, int32_t row0,
                                        void *out) {
    struct cpu_backend *be = ctx;
    struct row_args a = {
        .w = table, .tokens = be->batch->tokens, .out = out, .dim = (int)table->cols, .row0 = row0};
    pool_parallel_for(be->pool, be->batch->n_tokens, 4, embed_part_task, &a);
    return TL_OK;
}

static enum tl_status op_rmsnorm(void *ctx, void *res, const void *add, const struct tl_tensor *w,
                                 float eps, int n, void *out) {
    cpu_rmsnorm(((struct cpu_backend *)ctx)->pool, res, add, w, eps, n, out);
    return TL_OK;
}

static enum tl_status op_matmul(void *ctx, const void *x, int m, int n_w,
                                const struct tl_tensor *const *w,
                                const struct tl_tensor *const *bias, void *const *y) {
    struct cpu_backend *be = ctx;
    if (n_w < 1 || n_w > MATMUL_MAX_GROUP)
        return be_fail(be, TL_ERR_INTERNAL, "matmul of %d weights (1..%d)", n_w, MATMUL_MAX_GROUP);
    for (int i = 1; i < n_w; i++)
        if (w[i]->cols != w[0]->cols)
            return be_fail(be, TL_ERR_INTERNAL, "grouped matmul with different input sizes");
    if (be->bf16_acts)
        cpu_matmul_group_bf16x(be->pool, be->mm_scratch, x, m, n_w, w, bias, (float *const *)y);
    else
        cpu_matmul_group(be->pool, be->mm_scratch, x, m, n_w, w, bias, (float *const *)y);
    return TL_OK;
}

static enum tl_status op_rope_kv_write(void *ctx, int layer, void *q, void *k, const void *v) {
    struct cpu_backend *be = ctx;
    if (layer < 0 || layer >= be->cfg.n_layers || be->kv_index[layer] < 0)
        return be_fail(be, TL_ERR_INTERNAL, "layer %d has no KV on the CPU", layer);
    float *kc = be->kv + (size_t)be->kv_index[layer] * 2 * be->layer_elems,
          *vc = kc + be->layer_elems;
    cpu_rope_kv_write(be->pool, &be->shape, be->batch, be->tok_seq, be->inv_freq, q, k, v, kc, vc);
    return TL_OK;
}

static enum tl_status op_attention(void *ctx, int layer, const void *q, void *out) {
    struct cpu_backend *be = ctx;
    if (layer < 0 || layer >= be->cfg.n_layers || be->kv_index[layer] < 0)
        return be_fail(be, TL_ERR_INTERNAL, "layer %d has no KV on the CPU", layer);
    const float *kc = be->kv + (size_t)be->kv_index[layer] * 2 * be->layer_elems,
                *vc = kc + be->layer_elems;
    cpu_attention(be->pool, &be->shape, be->batch, be->tok_seq, q, kc, vc, out, be->attn_scratch);
    return TL_OK;
}

static enum tl_status op_silu_mul(void *ctx, const void *gate, const void *up, int n, int dim,
                                  void *out) {
    cpu_silu_mul(((struct cpu_backend *)ctx)->pool, gate, up, n, dim, out);
    return TL_OK;
}

static enum tl_status op_gather_rows(void *ctx, const void *x, int dim, const int32_t *rows, int n,
                                     void *out) {
    (void)ctx;
    for (int i = 0; i < n; i++)
        memcpy((float *)out + (size_t)i * dim, (const float *)x + (size_t)rows[i] * dim,
               (size_t)dim * sizeof(float));
    return TL_OK;
}

static enum tl_status op_write_f32(void *ctx, const float *src, size_t n, void *dst) {
    (void)ctx;
    memcpy(dst, src, n * sizeof *src);
    return TL_OK;
}

/* ---------------- sampling ---------------- */

static void sample_scratch_free(struct cpu_backend *be) {
    int nt = pool_size(be->pool);
    for (int t = 0; t < nt; t++) {
        if (be->smp) sampler_destroy(be->smp[t]);
        if (be->smp_row) free(be->smp_row[t]);
    }
    free(be->smp);
    free(be->smp_row);
    be->smp = NULL;
    be->smp_row = NULL;
    be->smp_vocab = 0;
}

static enum tl_status sample_scratch(struct cpu_backend *be, int vocab) {
    if (be->smp && be->smp_vocab == vocab) return TL_OK;
    sample_scratch_free(be);
    int nt = pool_size(be->pool);
    be->smp = calloc((size_t)nt, sizeof *be->smp);
    be->smp_row = calloc((size_t)nt, sizeof *be->smp_row);
    if (!be->smp || !be->smp_row) goto nomem;
    for (int t = 0; t < nt; t++) {
        struct tl_err err;
        be->smp_row[t] = malloc((size_t)vocab * sizeof(float));
        if (!be->smp_row[t] || sampler_create(vocab, &be->smp[t], &err) != TL_OK) goto nomem;
    }
    be->smp_vocab = vocab;
    return TL_OK;
nomem:
    sample_scratch_free(be);
    return be_fail(be, TL_ERR_NOMEM, "out of host memory for %d samplers of %d tokens", nt, vocab);
}

struct sample_args {
    struct cpu_backend *be;
    const float *logits; /* (n, vocab) */
    int vocab;
    const struct op_sample_seq *seqs;
    int32_t *ids;
};

/* Rows are the unit: each is one sampler_sample_u on the thread's own scratch, so the ids
 * are those of the serial sampler whatever the thread count or the order rows are claimed. */
static void sample_task(void *arg, int64_t r0, int64_t r1, int tid) {
    const struct sample_args *a = arg;
    struct sampler *smp = a->be->smp[tid];
    float *row = a->be->smp_row[tid];
    for (int64_t r = r0; r < r1; r++) {
        const struct op_sample_seq *q = &a->seqs[r];
        /* sampling edits its row (penalties, temperature); the op leaves logits as they are */
        memcpy(row, a->logits + (size_t)r * a->vocab, (size_t)a->vocab * sizeof *row);
        a->ids[r] =
            sampler_sample_u(smp, q->sp, q->u, row, q->prompt, q->n_prompt, q->output, q->n_output);
    }
}

/* The logits are fp32 whatever bf16_acts says: that option rounds only the matmuls' inputs. */
static enum tl_status op_sample(void *ctx, const void *logits, int n, int vocab,
                                const struct op_sample_seq *seqs, int32_t *ids) {
    struct cpu_backend *be = ctx;
    if (n <= 0) return TL_OK;
    if (vocab <= 0) return be_fail(be, TL_ERR_INTERNAL, "sample: vocabulary of %d tokens", vocab);
    enum tl_status st = sample_scratch(be, vocab);
    if (st != TL_OK) return st;
    struct sample_args a = {be, logits, vocab, seqs, ids};
    pool_parallel_for(be->pool, n, 1, sample_task, &a);
    return TL_OK;
}

/* ---------------- KV blocks to and from host memory ---------------- */

/* A block's image is its 2 * n_kv_layers pieces (the layers this backend keeps KV for, K then
 * V) of block_size * n_kv * hd floats, each at the same offset of its pool, laid end to end.
 * The copy is done when it returns. */
static enum tl_status op_kv_copy(void *ctx, int dir, const int32_t *blocks, void *const *host,
                                 int n, uint64_t *ticket) {
    struct cpu_backend *be = ctx;
    size_t piece = (size_t)be->block_size * be->cfg.n_kv_heads * be->cfg.head_dim;
    int n_pieces = 2 * be->kv_layers_held;
    for (int i = 0; i < n; i++)
        if (blocks[i] < 0 || blocks[i] >= be->num_blocks || !host[i])
            return be_fail(be, TL_ERR_INTERNAL, "kv_copy: block id %d out of range", blocks[i]);
    for (int i = 0; i < n; i++) {
        float *img = host[i];
        for (int p = 0; p < n_pieces; p++) {
            float *kv = be->kv + (size_t)p * be->layer_elems + (size_t)blocks[i] * piece;
            if (dir == 0)
                memcpy(img + (size_t)p * piece, kv, piece * sizeof(float));
            else
                memcpy(kv, img + (size_t)p * piece, piece * sizeof(float));
        }
    }
    *ticket = ++be->kv_ticket;
    return TL_OK;
}

static enum tl_status op_kv_copy_done(void *ctx, uint64_t wait, uint64_t *done) {
    (void)wait;
    *done = ((struct cpu_backend *)ctx)->kv_ticket;
    return TL_OK;
}

enum tl_status cpu_backend_create(const struct config *c, const struct cpu_backend_opts *o,
                                  struct ops *out, struct tl_err *err) {
    memset(out, 0, sizeof *out);
    if (c->head_dim > 1024 || c->hidden_size > (1 << 20))
        return tl_fail(err, TL_ERR_UNSUPPORTED, "head_dim %d is larger than the CPU backend's 1024",
                       c->head_dim);
    if (o->num_blocks < 1 || o->block_size < 1 || o->max_ctx < 1)
        return tl_fail(err, TL_ERR_INVALID, "CPU backend needs KV blocks and a max context");
    struct cpu_backend *be = calloc(1, sizeof *be);
    if (!be) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    be->cfg = *c;
    be->num_blocks = o->num_blocks;
    be->block_size = o->block_size;
    be->max_ctx = o->max_ctx;
    be->shape = (struct attn_shape){c->n_heads, c->n_kv_heads, c->head_dim, o->block_size};
    be->layer_elems = (size_t)o->num_blocks * o->block_size * c->n_kv_heads * c->head_dim;
    out->ctx = be;
    out->name = "cpu";
    enum tl_status st = pool_create(o->n_threads, o->pin, &be->pool, err);
    if (st != TL_OK) {
        cpu_backend_destroy(out);
        return st;
    }
    /* OpenBLAS runs the GEMM path with as many threads as our pool, while our workers wait. */
    openblas_set_num_threads(pool_size(be->pool));
    be->kv_index = malloc((size_t)c->n_layers * sizeof *be->kv_index);
    int n_kv = 0;
    for (int l = 0; be->kv_index && l < c->n_layers; l++)
        be->kv_index[l] = !o->kv_layers || o->kv_layers[l] ? n_kv++ : -1;
    size_t kv_bytes = be->layer_elems * 2 * (size_t)(n_kv ? n_kv : 1) * sizeof(float);
    be->kv = aligned_alloc(64, (kv_bytes + 63) & ~(size_t)63);
    be->mm_scratch = aligned_alloc(64, MATMUL_SCRATCH_FLOATS * sizeof(float));
    be->inv_freq = malloc((size_t)c->head_dim / 2 * sizeof(float));
    be->attn_scratch =
        malloc(cpu_attention_scratch_floats(&be->shape, pool_size(be->pool)) * sizeof(float));
    if (!be->kv || !be->kv_index || !be->mm_scratch || !be->inv_freq || !be->attn_scratch) {
        cpu_backend_destroy(out);
        return tl_fail(err, TL_ERR_NOMEM,
                       "cannot allocate the CPU KV cache (%.2f GiB for %d blocks of %d tokens): "
                       "lower --num-blocks or --max-model-len",
                       (double)kv_bytes / (1u << 30), o->num_blocks, o->block_size);
    }
    rope_inv_freq(c, be->inv_freq);
    out->act_dtype = TL_DTYPE_F32;
    out->last_error = op_last_error;
    out->buf_alloc = op_buf_alloc;
    out->buf_free = op_buf_free;
    out->read_f32 = op_read_f32;
    out->begin_step = op_begin_step;
    out->embedding = op_embedding;
    out->embedding_part = op_embedding_part;
    out->rmsnorm = op_rmsnorm;
    out->matmul = op_matmul;
    out->rope_kv_write = op_rope_kv_write;
    out->attention = op_attention;
    out->silu_mul = op_silu_mul;
    out->gather_rows = op_gather_rows;
    out->write_f32 = op_write_f32;
    out->sample = op_sample;
    be->kv_layers_held = n_kv;
    be->bf16_acts = o->bf16_acts;
    if (n_kv > 0) {
        out->kv_block_bytes =
            cpu_kv_block_bytes(c, o->block_size) / (size_t)c->n_layers * (size_t)n_kv;
        out->kv_copy = op_kv_copy;
        out->kv_copy_done = op_kv_copy_done;
    }
    return TL_OK;
}

void cpu_backend_destroy(struct ops *ops) {
    struct cpu_backend *be = ops ? ops->ctx : NULL;
    if (!be) return;
    if (be->pool) sample_scratch_free(be);
    pool_destroy(be->pool);
    free(be->kv);
    free(be->kv_index);
    free(be->mm_scratch);
    free(be->inv_freq);
    free(be->attn_scratch);
    free(be->tok_seq);
    free(be);
    ops->ctx = NULL;
}

struct pool *cpu_backend_pool(const struct ops *ops) {
    return ((struct cpu_backend *)ops->ctx)->pool;
}
