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
#include "kern_copy.h"
#include "kern_kvcopy.h"
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
    char *kv;                 /* (n_kv_layers, 2, layer_bytes) */
    int *kv_index;            /* (n_layers) layer -> its KV in kv, -1 for CPU layers */
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
    /* weight streaming: streamed layer k (in layer order) lives at stream_host[k] (pinned) and
     * runs from slot k % n_slots; events 0..n_stream-1 mark "copy of k done", n_stream + j
     * "slot j free" */
    struct kern_copier *cp;
    int n_stream, n_slots;
    int *stream_idx;     /* (n_layers + 1; the last is lm_head) index among streamed units, or -1 */
    char *stream_pinned; /* owned, kern_host_alloc: all streamed layers' images */
    size_t *stream_off;  /* (n_stream + 1) offsets of the images in stream_pinned */
    char *slots;         /* device: n_slots * slot_bytes (inside the arena) */
    size_t slot_bytes;
    /* guests (opts.guest_min_tokens): CPU-placed layer l has its image at guest_pinned +
     * guest_off[guest_idx[l]] and runs from guest_slot, which the events EV_GUEST_DONE / _FREE
     * order; guest_in is the layer last copied (or being copied) into the slot, -1 for none */
    int guest_min_tokens, n_guest, guest_in;
    int *guest_idx;     /* (n_layers) index among the guests, or -1 */
    size_t *guest_off;  /* (n_guest + 1) */
    char *guest_pinned; /* owned, kern_host_alloc */
    char *guest_slot;   /* device: after the ring's slots */
    size_t guest_slot_bytes;
    bool no_graphs;               /* streaming: every step runs op by op */
    struct kern_span *span;       /* the device time of each step: begin_step .. the final read */
    struct kern_kvcopier *kvcopy; /* KV blocks to and from host memory (the KV tiers) */
    char pci[32];
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
    if (st == TL_OK) st = kern_span_end(be->span);
    if (st == TL_OK) st = kern_sync(be->kc);
    return kfail(be, st);
}

/* The copier's events past the ring's: the guest slot's copy done, and its reader done. */
static int ev_guest_done(const struct gpu_backend *be) {
    return be->n_stream + be->n_slots;
}

static int ev_guest_free(const struct gpu_backend *be) {
    return be->n_stream + be->n_slots + 1;
}

static bool is_guest(const struct gpu_backend *be, int layer) {
    return be->n_guest > 0 && layer < be->cfg.n_layers && be->guest_idx[layer] >= 0;
}

/* The guest after `layer` in layer order (-1: none); layer -1 gives the first. */
static int next_guest(const struct gpu_backend *be, int layer) {
    for (int l = layer + 1; l < be->cfg.n_layers; l++)
        if (be->guest_idx[l] >= 0) return l;
    return -1;
}

/* Queues the copy of a guest's weights into the guest slot once the last guest has run; in
 * pieces, like a streamed unit (stream_issue). */
static enum tl_status guest_issue(struct gpu_backend *be, int layer);

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
    if (!be->enforce_eager && !be->no_graphs && T == S && S <= GRAPH_MAX_SEQS) {
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
    enum tl_status st = kern_span_begin(be->span);
    if (st == TL_OK) st = kern_upload(be->kc, be->meta, h, n * sizeof *h);
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
    /* a step that runs the guests (the forward decides by the same rule): the first one's copy
     * starts now, behind the streamed layers already queued */
    if (be->n_guest > 0 && T >= be->guest_min_tokens) {
        int first = next_guest(be, -1);
        if (be->guest_in != first && (st = guest_issue(be, first)) != TL_OK) return kfail(be, st);
    }
    return TL_OK;
}

static enum tl_status op_embedding(void *ctx, const struct tl_tensor *table, void *out) {
    struct gpu_backend *be = ctx;
    return kfail(be, kern_embedding_act(be->kc, be->act, table, be->meta, be->batch.n_tokens, out));
}

static enum tl_status op_embedding_part(void *ctx, const struct tl_tensor *table, int32_t row0,
                                        void *out) {
    struct gpu_backend *be = ctx;
    return kfail(be, kern_embedding_part_act(be->kc, be->act, table, row0, be->meta,
                                             be->batch.n_tokens, out));
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

static enum tl_status op_matmul_fused(void *ctx, const struct op_fused_mm *f) {
    struct gpu_backend *be = ctx;
    return kfail(be, kern_matmul_fused(be->kc, be->act, f->x, f->m, f->norm_w, f->eps, f->n_w, f->w,
                                       f->bias, f->y, (enum kern_epi)f->epi));
}

static enum tl_status layer_cache(struct gpu_backend *be, int layer, char **k, char **v) {
    if (layer < 0 || layer >= be->cfg.n_layers || be->kv_index[layer] < 0)
        return be_fail(be, TL_ERR_INTERNAL, "layer %d has no KV on the GPU", layer);
    *k = be->kv + (size_t)be->kv_index[layer] * 2 * be->kv_layer_bytes;
    *v = *k + be->kv_layer_bytes;
    return TL_OK;
}

static enum tl_status op_rope_kv_write(void *ctx, int layer, void *q, void *k, const void *v) {
    struct gpu_backend *be = ctx;
    char *kc = NULL, *vc = NULL;
    if (layer_cache(be, layer, &kc, &vc) != TL_OK) return TL_ERR_INTERNAL;
    return kfail(be, kern_rope_kv_write(be->kc, &be->shape, &be->batch, be->act, be->inv_freq, q, k,
                                        v, kc, vc));
}

static enum tl_status op_attention(void *ctx, int layer, const void *q, void *out) {
    struct gpu_backend *be = ctx;
    char *kc = NULL, *vc = NULL;
    if (layer_cache(be, layer, &kc, &vc) != TL_OK) return TL_ERR_INTERNAL;
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

static enum tl_status op_write_f32(void *ctx, const float *src, size_t n, void *dst) {
    struct gpu_backend *be = ctx;
    if (n > be->f32_elems) return be_fail(be, TL_ERR_INTERNAL, "write_f32 of %zu elements", n);
    /* from pageable memory the copy has consumed src when it returns */
    enum tl_status st = kern_upload(be->kc, be->f32_scratch, src, n * sizeof *src);
    if (st == TL_OK) st = kern_from_f32(be->kc, be->act, be->f32_scratch, n, dst);
    return kfail(be, st);
}

/* A streamed layer waits for its weights; afterwards its slot takes the streamed layer n_slots
 * further on (wrapping into the next step), as soon as the compute stream is done with it. A
 * guest waits for its copy, queued now if begin_step or the previous guest has not. */
static enum tl_status op_layer_begin(void *ctx, int layer) {
    struct gpu_backend *be = ctx;
    if (is_guest(be, layer)) {
        enum tl_status st = be->guest_in == layer ? TL_OK : guest_issue(be, layer);
        if (st == TL_OK) st = kern_copier_wait(be->cp, ev_guest_done(be));
        return kfail(be, st);
    }
    int k = be->stream_idx[layer];
    if (k < 0) return TL_OK;
    return kfail(be, kern_copier_wait(be->cp, k));
}

/* A streamed unit's copy goes out in pieces: a hidden state crossing back from the CPU lane
 * and a CPU layer's mirrored K/V (write_f32) share the H2D copy engine with these copies, and
 * would otherwise queue behind a whole layer (550 MB, ~10 ms at PCIe 5.0) instead of one piece
 * (8 MiB, ~0.15 ms; 32 MiB pieces cost a batch-16 step with six CPU layers ~10 ms of waits). */
#define STREAM_PIECE_BYTES ((size_t)8 << 20)

static enum tl_status stream_issue(struct gpu_backend *be, int k, int wait_ev) {
    char *slot = be->slots + (size_t)(k % be->n_slots) * be->slot_bytes;
    const char *src = be->stream_pinned + be->stream_off[k];
    size_t bytes = be->stream_off[k + 1] - be->stream_off[k];
    enum tl_status st = TL_OK;
    for (size_t off = 0; off < bytes && st == TL_OK; off += STREAM_PIECE_BYTES) {
        size_t n = bytes - off < STREAM_PIECE_BYTES ? bytes - off : STREAM_PIECE_BYTES;
        bool last = off + n == bytes;
        st = kern_copier_h2d(be->cp, slot + off, src + off, n, off == 0 ? wait_ev : -1,
                             last ? k : -1);
    }
    return st;
}

static enum tl_status guest_issue(struct gpu_backend *be, int layer) {
    int g = be->guest_idx[layer];
    const char *src = be->guest_pinned + be->guest_off[g];
    size_t bytes = be->guest_off[g + 1] - be->guest_off[g];
    enum tl_status st = TL_OK;
    for (size_t off = 0; off < bytes && st == TL_OK; off += STREAM_PIECE_BYTES) {
        size_t n = bytes - off < STREAM_PIECE_BYTES ? bytes - off : STREAM_PIECE_BYTES;
        st = kern_copier_h2d(be->cp, be->guest_slot + off, src + off, n,
                             off == 0 ? ev_guest_free(be) : -1,
                             off + n == bytes ? ev_guest_done(be) : -1);
    }
    be->guest_in = st == TL_OK ? layer : -1;
    return st;
}

static enum tl_status op_layer_end(void *ctx, int layer) {
    struct gpu_backend *be = ctx;
    if (is_guest(be, layer)) {
        /* the slot is free once this layer's kernels ran: the next guest of the step follows */
        enum tl_status st = kern_copier_mark(be->cp, ev_guest_free(be));
        int next = next_guest(be, layer);
        if (st == TL_OK && next >= 0) st = guest_issue(be, next);
        return kfail(be, st);
    }
    int k = be->stream_idx[layer];
    if (k < 0 || be->n_stream <= be->n_slots) return TL_OK; /* every streamed layer stays put */
    int j = k % be->n_slots, free_ev = be->n_stream + j;
    enum tl_status st = kern_copier_mark(be->cp, free_ev);
    if (st == TL_OK) st = stream_issue(be, (k + be->n_slots) % be->n_stream, free_ev);
    return kfail(be, st);
}

static double op_step_device_seconds(void *ctx) {
    struct gpu_backend *be = ctx;
    double s = 0.0;
    return kern_span_seconds(be->span, &s) == TL_OK ? s : 0.0;
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
    if (st == TL_OK) kern_span_end(be->span); /* the step's device work ends here */
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

/* ---------------- KV blocks to and from host memory (the KV tiers) ---------------- */

static int kv_layers_held(const struct gpu_backend *be) {
    int n = 0;
    for (int l = 0; l < be->cfg.n_layers; l++) n += be->kv_index[l] >= 0;
    return n;
}

/* A block's image: its piece of the K pool, then the V pool, of each layer whose KV is here
 * (n_kv, block_size, hd each, in the activation dtype), in layer order; one 2D copy per block
 * on the copy stream. */
static enum tl_status kv_copy(struct gpu_backend *be, int dir, const int32_t *blocks,
                              void *const *host, uint32_t *const *crc, int n, uint64_t *ticket) {
    for (int i = 0; i < n; i++)
        if (blocks[i] < 0 || blocks[i] >= be->num_blocks)
            return be_fail(be, TL_ERR_INTERNAL, "kv_copy: block id %d out of range", blocks[i]);
    size_t piece = be->kv_layer_bytes / (size_t)be->num_blocks;
    return kfail(be, kern_kvcopy_blocks(be->kvcopy, dir, be->kv, piece, be->kv_layer_bytes,
                                        2 * kv_layers_held(be), blocks, host, crc, n, ticket));
}

static enum tl_status op_kv_copy(void *ctx, int dir, const int32_t *blocks, void *const *host,
                                 int n, uint64_t *ticket) {
    return kv_copy(ctx, dir, blocks, host, NULL, n, ticket);
}

/* The same, checksumming each image in device memory (kern_kvcrc) beside the copy. */
static enum tl_status op_kv_copy_crc(void *ctx, int dir, const int32_t *blocks, void *const *host,
                                     uint32_t *const *crc, int n, uint64_t *ticket) {
    return kv_copy(ctx, dir, blocks, host, crc, n, ticket);
}

static enum tl_status op_kv_copy_done(void *ctx, uint64_t wait, uint64_t *done) {
    struct gpu_backend *be = ctx;
    return kfail(be, kern_kvcopy_done(be->kvcopy, wait, done));
}

static enum tl_status op_host_register(void *ctx, void *p, size_t bytes) {
    struct gpu_backend *be = ctx;
    return kfail(be, kern_host_register(be->kc, p, bytes));
}

static void op_host_unregister(void *ctx, void *p) {
    kern_host_unregister(((struct gpu_backend *)ctx)->kc, p);
}

static const char *op_pci_bus_id(void *ctx) {
    struct gpu_backend *be = ctx;
    return be->pci[0] ? be->pci : NULL;
}

/* Fills the KV-block ops; the tiers are optional, so a failure only leaves them off. */
static void kv_copy_ops(struct gpu_backend *be, struct ops *out, size_t block_bytes) {
    struct tl_err err;
    if (kv_layers_held(be) == 0 || kern_kvcopy_create(be->kc, &be->kvcopy, &err) != TL_OK) return;
    if (kern_pci_bus_id(be->kc, be->pci, (int)sizeof be->pci) != TL_OK) be->pci[0] = 0;
    out->kv_block_bytes = block_bytes;
    out->kv_copy = op_kv_copy;
    out->kv_copy_done = op_kv_copy_done;
    /* checksums on the device are optional too: without them the tiers checksum on the host */
    size_t piece = be->kv_layer_bytes / (size_t)be->num_blocks;
    if (kern_kvcopy_enable_crc(be->kvcopy, piece, 2 * kv_layers_held(be), &err) == TL_OK)
        out->kv_copy_crc = op_kv_copy_crc;
    out->host_register = op_host_register;
    out->host_unregister = op_host_unregister;
    out->pci_bus_id = op_pci_bus_id;
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

static int place_of(const struct gpu_backend_opts *o, int l) {
    return o->layer_place ? o->layer_place[l] : GPU_PLACE_RESIDENT;
}

#define LAYER_TENSORS 13
static void layer_tensors(const struct model_layer *L, const struct tl_tensor *t[LAYER_TENSORS]) {
    const struct tl_tensor *v[LAYER_TENSORS] = {
        &L->attn_norm, &L->wq, &L->wk,       &L->wv,     &L->wo,   &L->bq,    &L->bk,
        &L->bv,        &L->bo, &L->mlp_norm, &L->w_gate, &L->w_up, &L->w_down};
    memcpy(t, v, sizeof v);
}

static size_t tensor_bytes(const struct tl_tensor *t, enum tl_dtype act) {
    return t->data ? up((size_t)t->rows * (size_t)t->cols * dtype_size(act)) : 0;
}

/* One layer's weights in the activation dtype, as uploaded (each tensor 256-byte aligned). */
static size_t layer_bytes(const struct model *m, int l, enum tl_dtype act) {
    const struct tl_tensor *t[LAYER_TENSORS];
    layer_tensors(&m->layers[l], t);
    size_t total = 0;
    for (int i = 0; i < LAYER_TENSORS; i++) total += tensor_bytes(t[i], act);
    return total;
}

/* The embedding table is needed on the device unless the CPU does the lookup, or when it is
 * also the (tied) lm_head the device runs. */
static bool head_resident(const struct gpu_backend_opts *o) {
    return !o->head_on_host && !o->head_streamed;
}

static bool embed_on_device(const struct model *m, const struct gpu_backend_opts *o) {
    return !o->embed_on_host || (m->cfg.tie_word_embeddings && head_resident(o));
}

static size_t weight_bytes_on_device(const struct model *m, enum tl_dtype act,
                                     const struct gpu_backend_opts *o) {
    const struct config *c = &m->cfg;
    size_t total = tensor_bytes(&m->final_norm, act);
    if (embed_on_device(m, o)) total += tensor_bytes(&m->embed, act);
    if (!c->tie_word_embeddings && head_resident(o)) total += tensor_bytes(&m->lm_head, act);
    for (int l = 0; l < c->n_layers; l++)
        if (place_of(o, l) == GPU_PLACE_RESIDENT) total += layer_bytes(m, l, act);
    return total;
}

/* Converts a host tensor into dst (host memory) in the activation dtype. */
static void stage_tensor(struct upload *u, const struct tl_tensor *h, char *dst) {
    enum tl_dtype act = u->be->act;
    size_t n = (size_t)h->rows * (size_t)h->cols, es = dtype_size(act);
    if (h->dtype == act) {
        memcpy(dst, h->data, n * es);
        return;
    }
    float *f32 = u->host_buf;
    for (size_t i = 0; i < n; i += u->host_buf_elems) {
        size_t m = n - i < u->host_buf_elems ? n - i : u->host_buf_elems;
        dtype_to_f32(h->dtype, (const char *)h->data + i * dtype_size(h->dtype), f32, m);
        dtype_from_f32(act, f32, dst + i * es, m);
    }
}

static enum tl_status upload_model(struct gpu_backend *be, const struct model *h, char *region,
                                   size_t total, const struct gpu_backend_opts *o,
                                   struct tl_err *err) {
    struct model *d = calloc(1, sizeof *d);
    if (!d) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    be->dm = d;
    d->cfg = h->cfg;
    d->tp = h->tp; /* a tensor-parallel shard stays one (forward reads its vocabulary rows) */
    d->layers = calloc((size_t)h->cfg.n_layers, sizeof *d->layers);
    struct upload u = {be, region, NULL, (size_t)4 << 20, 0, total, o};
    u.host_buf = malloc(u.host_buf_elems * (sizeof(float) + 4));
    if (!d->layers || !u.host_buf) {
        free(u.host_buf);
        return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    }
    enum tl_status st = TL_OK;
    if (embed_on_device(h, o)) st = upload_tensor(&u, &h->embed, &d->embed, err);
    if (st == TL_OK) st = upload_tensor(&u, &h->final_norm, &d->final_norm, err);
    if (st == TL_OK && !h->cfg.tie_word_embeddings && head_resident(o))
        st = upload_tensor(&u, &h->lm_head, &d->lm_head, err);
    if (h->cfg.tie_word_embeddings && head_resident(o)) d->lm_head = d->embed;
    if (o->head_streamed) { /* the head's image: lm_head (the embedding table when tied) */
        int k = be->stream_idx[h->cfg.n_layers];
        d->lm_head = h->lm_head;
        d->lm_head.dtype = be->act;
        stage_tensor(&u, &h->lm_head, be->stream_pinned + be->stream_off[k]);
        d->lm_head.data = be->slots + (size_t)(k % be->n_slots) * be->slot_bytes;
    }
    for (int l = 0; st == TL_OK && l < h->cfg.n_layers; l++) {
        const struct tl_tensor *src[LAYER_TENSORS], *dsts[LAYER_TENSORS];
        layer_tensors(&h->layers[l], src);
        layer_tensors(&d->layers[l], dsts);
        int place = place_of(o, l), k = be->stream_idx[l];
        size_t off = 0;
        for (int i = 0; st == TL_OK && i < LAYER_TENSORS; i++) {
            struct tl_tensor *dt = (struct tl_tensor *)dsts[i];
            if (place == GPU_PLACE_RESIDENT) {
                st = upload_tensor(&u, src[i], dt, err);
            } else if (place == GPU_PLACE_STREAM && src[i]->data) {
                /* the host image, and the device tensor at the same offset in its slot */
                *dt = *src[i];
                dt->dtype = be->act;
                stage_tensor(&u, src[i], be->stream_pinned + be->stream_off[k] + off);
                dt->data = be->slots + (size_t)(k % be->n_slots) * be->slot_bytes + off;
                off += tensor_bytes(src[i], be->act);
            } else if (be->guest_idx[l] >= 0 && src[i]->data) {
                /* a guest's image; every guest runs from the one guest slot */
                *dt = *src[i];
                dt->dtype = be->act;
                stage_tensor(&u, src[i], be->guest_pinned + be->guest_off[be->guest_idx[l]] + off);
                dt->data = be->guest_slot + off;
                off += tensor_bytes(src[i], be->act);
            }
        }
    }
    d->weight_bytes = u.done;
    free(u.host_buf);
    if (st != TL_OK || be->n_stream == 0) return st;
    /* fill the slots: the first n_slots streamed layers */
    for (int k = 0; st == TL_OK && k < be->n_slots && k < be->n_stream; k++)
        st = stream_issue(be, k, -1);
    if (st != TL_OK) return tl_fail(err, st, "streaming weights: %s", kern_last_error(be->kc));
    return TL_OK;
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
    /* placement: which layers stream (and their pinned images), which have KV here */
    be->kv_index = malloc((size_t)c->n_layers * sizeof *be->kv_index);
    be->stream_idx = malloc((size_t)(c->n_layers + 1) * sizeof *be->stream_idx);
    be->stream_off = calloc((size_t)c->n_layers + 2, sizeof *be->stream_off);
    be->guest_idx = malloc((size_t)c->n_layers * sizeof *be->guest_idx);
    be->guest_off = calloc((size_t)c->n_layers + 1, sizeof *be->guest_off);
    if (!be->kv_index || !be->stream_idx || !be->stream_off || !be->guest_idx || !be->guest_off) {
        st = tl_fail(err, TL_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    int n_kv_layers = 0;
    be->guest_in = -1;
    be->guest_min_tokens = o->guest_min_tokens;
    for (int l = 0; l < c->n_layers; l++) {
        int place = place_of(o, l);
        bool guest = place == GPU_PLACE_CPU && o->guest_min_tokens > 0;
        be->kv_index[l] = place == GPU_PLACE_CPU && !guest ? -1 : n_kv_layers++;
        be->guest_idx[l] = -1;
        if (guest) {
            size_t lb = layer_bytes(host, l, act);
            be->guest_idx[l] = be->n_guest;
            be->guest_off[be->n_guest + 1] = be->guest_off[be->n_guest] + lb;
            be->n_guest++;
            if (lb > be->guest_slot_bytes) be->guest_slot_bytes = lb;
        }
        be->stream_idx[l] = -1;
        if (place == GPU_PLACE_STREAM) {
            size_t lb = layer_bytes(host, l, act);
            be->stream_idx[l] = be->n_stream;
            be->stream_off[be->n_stream + 1] = be->stream_off[be->n_stream] + lb;
            be->n_stream++;
            if (lb > be->slot_bytes) be->slot_bytes = lb;
        }
    }
    be->stream_idx[c->n_layers] = -1;
    if (o->head_streamed) {
        if (o->head_on_host) {
            st = tl_fail(err, TL_ERR_INVALID, "lm_head cannot be both streamed and on the CPU");
            goto fail;
        }
        size_t hb = tensor_bytes(&host->lm_head, act);
        be->stream_idx[c->n_layers] = be->n_stream;
        be->stream_off[be->n_stream + 1] = be->stream_off[be->n_stream] + hb;
        be->n_stream++;
        if (hb > be->slot_bytes) be->slot_bytes = hb;
    }
    if (be->n_stream > 0) {
        be->n_slots = o->stream_slots < 1 ? 1 : o->stream_slots;
        if (be->n_slots > be->n_stream) be->n_slots = be->n_stream;
        /* unit k always runs from slot k % n_slots, in every step: the ring must close on the
         * same slot, so the slots divide the streamed units */
        while (be->n_stream % be->n_slots) be->n_slots--;
        be->no_graphs = true;
    }
    bool split = be->n_stream > 0 || be->n_guest > 0 || n_kv_layers < c->n_layers ||
                 o->embed_on_host || o->head_on_host;
    size_t slots_bytes = (size_t)be->n_slots * be->slot_bytes + be->guest_slot_bytes;
    size_t w_bytes = weight_bytes_on_device(host, act, o) + slots_bytes;
    size_t a_bytes = forward_activation_bytes(c, act, o->max_tokens, o->max_seqs);
    be->attn_ws_bytes = kern_attention_workspace_bytes(&be->shape, o->max_tokens, o->max_model_len);
    be->f32_elems = (size_t)o->max_seqs * (size_t)c->vocab_size;
    /* the residual stream crosses to and from the CPU lane through the same scratch, and a
     * tensor-parallel shard's partial sums to and from an in-process all-reduce */
    if ((split || host->tp.world > 1) &&
        be->f32_elems < (size_t)o->max_tokens * (size_t)c->hidden_size)
        be->f32_elems = (size_t)o->max_tokens * (size_t)c->hidden_size;
    be->meta_elems = 3 * (size_t)o->max_tokens + 2 * (size_t)o->max_seqs + 1 +
                     (size_t)o->max_seqs * (size_t)be->max_blocks;
    size_t sample_ws = up(gpu_sample_workspace_bytes(o->max_seqs, c->vocab_size, o->max_model_len));
    size_t ws_bytes = up(be->attn_ws_bytes) + up(be->f32_elems * 4) + up(be->meta_elems * 4) +
                      2 * up((size_t)o->max_seqs * 4) + sample_ws + up((size_t)c->head_dim / 2 * 4);
    size_t fixed = w_bytes + a_bytes + ws_bytes + CUBLAS_RESERVE;
    be->kv_layer_bytes = 0;
    size_t block_bytes = 2 * (size_t)(n_kv_layers ? n_kv_layers : 1) * (size_t)c->n_kv_heads *
                         (size_t)c->head_dim * (size_t)o->block_size * es;
    size_t per_seq = (size_t)be->max_blocks * block_bytes;
    snprintf(plan->device_name, sizeof plan->device_name, "%s", di.name);
    plan->budget_bytes = budget;
    plan->weight_bytes = w_bytes;
    plan->activation_bytes = a_bytes;
    plan->workspace_bytes = ws_bytes + CUBLAS_RESERVE;
    plan->kv_block_bytes = block_bytes;
    plan->dtype = act;
    plan->stream_host_bytes = be->stream_off[be->n_stream] + be->guest_off[be->n_guest];
    plan->stream_slot_bytes = slots_bytes;
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
    int kv_layers = n_kv_layers ? n_kv_layers : 1;
    be->kv_layer_bytes = block_bytes / 2 / (size_t)kv_layers * (size_t)nb;
    size_t kv_bytes = 2 * (size_t)kv_layers * be->kv_layer_bytes;
    plan->num_blocks = nb;
    plan->kv_bytes = kv_bytes;
    be->arena_bytes = w_bytes + up(kv_bytes) + a_bytes + ws_bytes;
    if ((st = kern_alloc(be->kc, be->arena_bytes, (void **)&be->arena)) != TL_OK) {
        tl_fail(err, st, "%s", kern_last_error(be->kc));
        goto fail;
    }
    char *p = be->arena + w_bytes;
    be->slots = p - slots_bytes; /* the end of the weight region */
    be->guest_slot = be->slots + (size_t)be->n_slots * be->slot_bytes;
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
    if (be->n_stream > 0 || be->n_guest > 0) {
        /* pinned images of the streamed layers and the guests (NUMA-local: the allocating
         * thread's node); the copier's events: the ring's, then the guest slot's two */
        if ((be->n_stream > 0 && (st = kern_host_alloc(be->kc, be->stream_off[be->n_stream],
                                                       (void **)&be->stream_pinned)) != TL_OK) ||
            (be->n_guest > 0 && (st = kern_host_alloc(be->kc, be->guest_off[be->n_guest],
                                                      (void **)&be->guest_pinned)) != TL_OK) ||
            (st = kern_copier_create(be->kc, be->n_stream + be->n_slots + 2, &be->cp)) != TL_OK ||
            (st = kern_copier_mark(be->cp, be->n_stream + be->n_slots + 1)) != TL_OK) {
            tl_fail(err, st, "pinning %.2f GiB for streamed weights: %s",
                    (be->stream_off[be->n_stream] + be->guest_off[be->n_guest]) / GIB,
                    kern_last_error(be->kc));
            goto fail;
        }
    }
    if ((st = upload_model(be, host, be->arena, w_bytes - slots_bytes, o, err)) != TL_OK) goto fail;
    if ((st = gpu_sample_create(be->kc, o->max_seqs, c->vocab_size, o->max_model_len, be->sample_ws,
                                be->f32_scratch, &be->sampler, err)) != TL_OK)
        goto fail;
    if ((st = kern_span_create(be->kc, &be->span)) != TL_OK) {
        tl_fail(err, st, "%s", kern_last_error(be->kc));
        goto fail;
    }

    out->act_dtype = act;
    out->last_error = op_last_error;
    out->buf_alloc = op_buf_alloc;
    out->buf_free = op_buf_free;
    out->read_f32 = op_read_f32;
    out->begin_step = op_begin_step;
    out->embedding = op_embedding;
    out->embedding_part = op_embedding_part;
    out->rmsnorm = op_rmsnorm;
    out->matmul = op_matmul;
    /* the fused GEMVs load 8 elements at a time along every k they meet */
    const struct config *fc = &be->cfg;
    if (fc->hidden_size % 8 == 0 && fc->intermediate_size % 8 == 0 &&
        (fc->n_heads * fc->head_dim) % 8 == 0) {
        out->matmul_fused = op_matmul_fused;
        /* above 16 rows the fused forms run on the wide GEMV, which loses to cuBLAS on o,
         * gate/up and down (kern_matmul.cu): the plain ops are faster there */
        out->fused_max_m = 16;
    }
    out->rope_kv_write = op_rope_kv_write;
    out->attention = op_attention;
    out->silu_mul = op_silu_mul;
    out->gather_rows = op_gather_rows;
    out->graph_mode = op_graph_mode;
    out->graph_replay = op_graph_replay;
    out->graph_capture_begin = op_graph_capture_begin;
    out->graph_capture_end = op_graph_capture_end;
    out->write_f32 = op_write_f32;
    out->step_device_seconds = op_step_device_seconds;
    if (be->n_stream > 0 || be->n_guest > 0) {
        out->layer_begin = op_layer_begin;
        out->layer_end = op_layer_end;
    }
    kv_copy_ops(be, out, block_bytes);
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
    kern_copier_destroy(be->cp);
    kern_span_destroy(be->span);
    kern_kvcopy_destroy(be->kvcopy);
    gpu_sample_destroy(be->sampler);
    if (be->kc) {
        kern_free(be->kc, be->arena);
        kern_host_free(be->kc, be->meta_host);
        kern_host_free(be->kc, be->stream_pinned);
        kern_host_free(be->kc, be->guest_pinned);
        kern_ctx_destroy(be->kc);
    }
    model_free(be->dm);
    free(be->kv_index);
    free(be->stream_idx);
    free(be->stream_off);
    free(be->guest_idx);
    free(be->guest_off);
    free(be);
    ops->ctx = NULL;
}

void *gpu_backend_stream(const struct ops *ops) {
    return kern_stream(((const struct gpu_backend *)ops->ctx)->kc);
}

enum tl_status gpu_backend_stream_stats(const struct ops *ops, size_t *bytes, double *busy_s) {
    struct gpu_backend *be = ops->ctx;
    *bytes = 0;
    *busy_s = 0.0;
    if (!be->cp) return TL_OK;
    return kfail(be, kern_copier_stats(be->cp, bytes, busy_s));
}
