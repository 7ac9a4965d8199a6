/* kern_kvcopy: a ring of events, one per batch, on the copy stream. A block is one
 * cudaMemcpy2DAsync (rows: its pieces, one per layer and K/V; pitch: the stride between
 * layers' pools), so a batch of B blocks is B copy commands, whatever the layer count.
 * Checksums run on a stream of their own, forked from the copy's start (out) or from each group
 * of copies (in), with an event of their own per batch: a ticket is done when both its events
 * have fired, and the copy stream goes on to the next batch meanwhile. Their results go to a ring
 * of words in mapped pinned memory (written by the kernel, read by the host once the ticket is
 * done), handed out in ticket order. */
#include <stdlib.h>

#include "kern_impl.h"
#include "kern_kvcopy.h"
#include "kern_kvcrc.h"

#define RING      512       /* batches in flight before submitting waits for the oldest */
#define RES       (1 << 16) /* checksum words in flight */
#define IN_GROUP  32        /* blocks copied in before their checksum starts behind them */
#define MAX_BATCH (RES / 2) /* blocks per batch: larger ones are split */

struct kern_kvcopier {
    const struct kern_ctx *ctx;
    cudaStream_t stream;
    cudaEvent_t before; /* recorded on ctx's stream at each batch */
    cudaEvent_t ev[RING];
    uint64_t next; /* tickets handed out */
    uint64_t done; /* highest finished */
    size_t max_pitch;
    /* checksums (kern_kvcopy_enable_crc) */
    struct kern_kvcrc *crc;
    size_t crc_piece_bytes;
    int crc_n_pieces;
    cudaStream_t crc_stream;
    cudaEvent_t crc_fork;
    cudaEvent_t crc_ev[RING]; /* per batch with checksums, on crc_stream */
    bool has_crc[RING];
    uint32_t *res;                         /* (RES) pinned, mapped: the kernels' results */
    uint32_t *res_dev;                     /* its device address */
    uint32_t **dst;                        /* (RES) where each result goes */
    uint64_t res_head, res_tail;           /* result words handed out, delivered (running counts) */
    uint64_t res_start[RING], res_n[RING]; /* each ticket's words: [start, start + n) */
};

extern "C" enum tl_status kern_kvcopy_create(const struct kern_ctx *ctx, struct kern_kvcopier **out,
                                             struct tl_err *err) {
    enum tl_status st = TL_OK;
    struct kern_kvcopier *c = NULL;
    int pitch = 0;
    *out = NULL;
    KERN_CUDA(err, kern_enter(ctx));
    c = (struct kern_kvcopier *)calloc(1, sizeof *c);
    if (!c) KERN_FAIL(err, TL_ERR_NOMEM, "out of host memory");
    c->ctx = ctx;
    KERN_CUDA(err, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    KERN_CUDA(err, cudaEventCreateWithFlags(&c->before, cudaEventDisableTiming));
    for (int i = 0; i < RING; i++)
        KERN_CUDA(err, cudaEventCreateWithFlags(&c->ev[i], cudaEventDisableTiming));
    KERN_CUDA(err, cudaDeviceGetAttribute(&pitch, cudaDevAttrMaxPitch, ctx->device));
    c->max_pitch = (size_t)pitch;
    *out = c;
    return TL_OK;
cleanup:
    kern_kvcopy_destroy(c);
    return st;
}

extern "C" enum tl_status kern_kvcopy_enable_crc(struct kern_kvcopier *c, size_t piece_bytes,
                                                 int n_pieces, struct tl_err *err) {
    enum tl_status st = TL_OK;
    const struct kern_ctx *ctx = c->ctx;
    if (c->crc) return TL_OK;
    KERN_CUDA(err, kern_enter(ctx));
    st = kern_kvcrc_create(ctx, piece_bytes, n_pieces, &c->crc, err);
    if (st != TL_OK) goto cleanup;
    c->crc_piece_bytes = piece_bytes;
    c->crc_n_pieces = n_pieces;
    KERN_CUDA(err, cudaStreamCreateWithFlags(&c->crc_stream, cudaStreamNonBlocking));
    KERN_CUDA(err, cudaEventCreateWithFlags(&c->crc_fork, cudaEventDisableTiming));
    for (int i = 0; i < RING; i++)
        KERN_CUDA(err, cudaEventCreateWithFlags(&c->crc_ev[i], cudaEventDisableTiming));
    KERN_CUDA(err, cudaHostAlloc((void **)&c->res, RES * sizeof *c->res,
                                 cudaHostAllocMapped | cudaHostAllocPortable));
    KERN_CUDA(err, cudaHostGetDevicePointer((void **)&c->res_dev, c->res, 0));
    c->dst = (uint32_t **)calloc(RES, sizeof *c->dst);
    if (!c->dst) KERN_FAIL(err, TL_ERR_NOMEM, "out of host memory");
cleanup:
    if (st != TL_OK && c->crc) { /* leave the copier as it was: no checksums */
        kern_kvcrc_destroy(c->crc);
        c->crc = NULL;
    }
    return st;
}

extern "C" void kern_kvcopy_destroy(struct kern_kvcopier *c) {
    if (!c) return;
    if (kern_enter(c->ctx) == cudaSuccess) {
        if (c->stream) {
            (void)cudaStreamSynchronize(c->stream);
            (void)cudaStreamDestroy(c->stream);
        }
        if (c->crc_stream) {
            (void)cudaStreamSynchronize(c->crc_stream);
            (void)cudaStreamDestroy(c->crc_stream);
        }
        if (c->res) (void)cudaFreeHost(c->res);
    }
    if (c->before) (void)cudaEventDestroy(c->before);
    for (int i = 0; i < RING; i++)
        if (c->ev[i]) (void)cudaEventDestroy(c->ev[i]);
    if (c->crc_fork) (void)cudaEventDestroy(c->crc_fork);
    for (int i = 0; i < RING; i++)
        if (c->crc_ev[i]) (void)cudaEventDestroy(c->crc_ev[i]);
    kern_kvcrc_destroy(c->crc);
    free(c->dst);
    free(c);
}

/* Ticket t has finished: its checksums go where the caller asked. */
static void deliver(struct kern_kvcopier *c, uint64_t t) {
    uint64_t s = c->res_start[t % RING], n = c->res_n[t % RING];
    for (uint64_t k = s; k < s + n; k++) *c->dst[k % RES] = c->res[k % RES];
    if (n) c->res_tail = s + n;
}

/* Whether batch t has finished (copies and checksums); wait: block until it has. */
static cudaError_t finished(struct kern_kvcopier *c, uint64_t t, bool wait) {
    cudaEvent_t ev[2] = {c->ev[t % RING], c->has_crc[t % RING] ? c->crc_ev[t % RING] : NULL};
    for (int k = 0; k < 2 && ev[k]; k++) {
        cudaError_t e = wait ? cudaEventSynchronize(ev[k]) : cudaEventQuery(ev[k]);
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

/* Moves c->done past every batch that has finished; with upto > done, first waits for the
 * batches up to that one. */
static enum tl_status advance(struct kern_kvcopier *c, uint64_t upto) {
    enum tl_status st = TL_OK;
    if (upto > c->next) upto = c->next;
    while (c->done < upto) {
        KERN_CUDA(c->ctx->err, finished(c, c->done + 1, true));
        deliver(c, ++c->done);
    }
    while (c->done < c->next) {
        cudaError_t e = finished(c, c->done + 1, false);
        if (e == cudaErrorNotReady) break;
        KERN_CUDA(c->ctx->err, e);
        deliver(c, ++c->done);
    }
cleanup:
    return st;
}

/* Queues one block's copy on the copy stream. */
static enum tl_status copy_block(struct kern_kvcopier *c, int dir, char *dev, size_t piece_bytes,
                                 size_t piece_stride, int n_pieces, int32_t block, void *host) {
    enum tl_status st = TL_OK;
    const struct kern_ctx *ctx = c->ctx;
    cudaMemcpyKind kind = dir ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
    char *d = dev + (size_t)block * piece_bytes;
    char *h = (char *)host;
    if (piece_stride <= c->max_pitch && piece_bytes <= c->max_pitch) {
        if (dir)
            KERN_CUDA(ctx->err, cudaMemcpy2DAsync(d, piece_stride, h, piece_bytes, piece_bytes,
                                                  (size_t)n_pieces, kind, c->stream));
        else
            KERN_CUDA(ctx->err, cudaMemcpy2DAsync(h, piece_bytes, d, piece_stride, piece_bytes,
                                                  (size_t)n_pieces, kind, c->stream));
    } else { /* pools too far apart for a 2D copy's pitch: one copy per piece */
        for (int p = 0; p < n_pieces; p++) {
            char *dp = d + (size_t)p * piece_stride, *hp = h + (size_t)p * piece_bytes;
            KERN_CUDA(ctx->err,
                      cudaMemcpyAsync(dir ? dp : hp, dir ? hp : dp, piece_bytes, kind, c->stream));
        }
    }
cleanup:
    return st;
}

/* One batch (n <= MAX_BATCH), one ticket. */
static enum tl_status batch(struct kern_kvcopier *c, int dir, char *dev, size_t piece_bytes,
                            size_t piece_stride, int n_pieces, const int32_t *blocks,
                            void *const *host, uint32_t *const *crc, int n, uint64_t *ticket) {
    enum tl_status st = TL_OK;
    const struct kern_ctx *ctx = c->ctx;
    uint64_t t = c->next + 1, start = c->res_head;
    uint32_t *out = NULL;
    if (t > RING) { /* the ring slot is reused: its batch must be finished */
        st = advance(c, t - RING);
        if (st != TL_OK) goto cleanup;
    }
    if (crc) {
        /* n contiguous result words, after the words of batches not yet delivered */
        if (start % RES + (uint64_t)n > RES) start += RES - start % RES;
        while (start + (uint64_t)n - c->res_tail > RES && c->done < c->next) {
            st = advance(c, c->done + 1);
            if (st != TL_OK) goto cleanup;
        }
        for (int i = 0; i < n; i++) c->dst[(start + (uint64_t)i) % RES] = crc[i];
        out = c->res_dev + start % RES;
    }
    /* after what the forward queued so far (it may still write or read these blocks) */
    KERN_CUDA(ctx->err, cudaEventRecord(c->before, ctx->stream));
    KERN_CUDA(ctx->err, cudaStreamWaitEvent(c->stream, c->before, 0));
    if (crc && !dir) { /* the checksum reads the blocks beside the copy */
        KERN_CUDA(ctx->err, cudaStreamWaitEvent(c->crc_stream, c->before, 0));
        st = kern_kvcrc_queue(c->crc, c->crc_stream, dev, piece_stride, blocks, n, out);
        if (st != TL_OK) goto cleanup;
    }
    for (int i = 0; i < n; i++) {
        st = copy_block(c, dir, dev, piece_bytes, piece_stride, n_pieces, blocks[i], host[i]);
        if (st != TL_OK) goto cleanup;
        if (crc && dir && ((i + 1) % IN_GROUP == 0 || i + 1 == n)) {
            /* checksum what landed, one group behind the copies */
            int g = i / IN_GROUP * IN_GROUP;
            KERN_CUDA(ctx->err, cudaEventRecord(c->crc_fork, c->stream));
            KERN_CUDA(ctx->err, cudaStreamWaitEvent(c->crc_stream, c->crc_fork, 0));
            st = kern_kvcrc_queue(c->crc, c->crc_stream, dev, piece_stride, blocks + g, i + 1 - g,
                                  out + g);
            if (st != TL_OK) goto cleanup;
        }
    }
    if (crc) {
        KERN_CUDA(ctx->err, cudaEventRecord(c->crc_ev[t % RING], c->crc_stream));
        c->res_head = start + (uint64_t)n;
    }
    c->has_crc[t % RING] = crc != NULL;
    c->res_start[t % RING] = start;
    c->res_n[t % RING] = crc ? (uint64_t)n : 0;
    KERN_CUDA(ctx->err, cudaEventRecord(c->ev[t % RING], c->stream));
    c->next = t;
    *ticket = t;
    /* the next forward may write blocks just copied out: it waits for the copy (and for the
     * checksum reading them) */
    if (!dir) KERN_CUDA(ctx->err, cudaStreamWaitEvent(ctx->stream, c->ev[t % RING], 0));
    if (!dir && crc) KERN_CUDA(ctx->err, cudaStreamWaitEvent(ctx->stream, c->crc_ev[t % RING], 0));
cleanup:
    return st;
}

extern "C" enum tl_status kern_kvcopy_blocks(struct kern_kvcopier *c, int dir, char *dev,
                                             size_t piece_bytes, size_t piece_stride, int n_pieces,
                                             const int32_t *blocks, void *const *host,
                                             uint32_t *const *crc, int n, uint64_t *ticket) {
    enum tl_status st = TL_OK;
    const struct kern_ctx *ctx = c->ctx;
    KERN_CUDA(ctx->err, kern_enter(ctx));
    if (crc && (!c->crc || piece_bytes != c->crc_piece_bytes || n_pieces != c->crc_n_pieces))
        KERN_FAIL(ctx->err, TL_ERR_INTERNAL,
                  "kern_kvcopy: checksums asked for images the copier was not set up for");
    for (int first = 0; first < n || first == 0; first += MAX_BATCH) {
        int m = n - first < MAX_BATCH ? n - first : MAX_BATCH;
        st = batch(c, dir, dev, piece_bytes, piece_stride, n_pieces, blocks + first, host + first,
                   crc ? crc + first : NULL, m, ticket);
        if (st != TL_OK || n == 0) break;
    }
cleanup:
    return st;
}

extern "C" enum tl_status kern_kvcopy_done(struct kern_kvcopier *c, uint64_t wait, uint64_t *done) {
    enum tl_status st = TL_OK;
    KERN_CUDA(c->ctx->err, kern_enter(c->ctx));
    st = advance(c, wait);
cleanup:
    *done = c->done;
    return st;
}

extern "C" enum tl_status kern_host_register(const struct kern_ctx *ctx, void *p, size_t bytes) {
    enum tl_status st = TL_OK;
    KERN_CUDA(ctx->err, kern_enter(ctx));
    KERN_CUDA(ctx->err, cudaHostRegister(p, bytes, cudaHostRegisterPortable));
cleanup:
    return st;
}

extern "C" void kern_host_unregister(const struct kern_ctx *ctx, void *p) {
    if (kern_enter(ctx) == cudaSuccess) (void)cudaHostUnregister(p);
}

extern "C" enum tl_status kern_pci_bus_id(const struct kern_ctx *ctx, char *buf, int len) {
    enum tl_status st = TL_OK;
    KERN_CUDA(ctx->err, cudaDeviceGetPCIBusId(buf, len, ctx->device));
cleanup:
    return st;
}
