/* kern_kvcopy: a ring of events, one per batch, on the copy stream. A block is one
 * cudaMemcpy2DAsync (rows: its pieces, one per layer and K/V; pitch: the stride between
 * layers' pools), so a batch of B blocks is B copy commands, whatever the layer count. */
#include "kern_kvcopy.h"
#include "kern_impl.h"

#define RING 512 /* batches in flight before submitting waits for the oldest */

struct kern_kvcopier {
    const struct kern_ctx *ctx;
    cudaStream_t stream;
    cudaEvent_t before; /* recorded on ctx's stream at each batch */
    cudaEvent_t ev[RING];
    uint64_t next; /* tickets handed out */
    uint64_t done; /* highest finished */
    size_t max_pitch;
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

extern "C" void kern_kvcopy_destroy(struct kern_kvcopier *c) {
    if (!c) return;
    if (kern_enter(c->ctx) == cudaSuccess && c->stream) {
        (void)cudaStreamSynchronize(c->stream);
        (void)cudaStreamDestroy(c->stream);
    }
    if (c->before) (void)cudaEventDestroy(c->before);
    for (int i = 0; i < RING; i++)
        if (c->ev[i]) (void)cudaEventDestroy(c->ev[i]);
    free(c);
}

/* Moves c->done past every batch whose event has fired; with upto > done, first waits for
 * that batch. */
static enum tl_status advance(struct kern_kvcopier *c, uint64_t upto) {
    enum tl_status st = TL_OK;
    if (upto > c->next) upto = c->next;
    if (upto > c->done) {
        KERN_CUDA(c->ctx->err, cudaEventSynchronize(c->ev[upto % RING]));
        c->done = upto;
    }
    while (c->done < c->next) {
        cudaError_t e = cudaEventQuery(c->ev[(c->done + 1) % RING]);
        if (e == cudaErrorNotReady) break;
        KERN_CUDA(c->ctx->err, e);
        c->done++;
    }
cleanup:
    return st;
}

extern "C" enum tl_status kern_kvcopy_blocks(struct kern_kvcopier *c, int dir, char *dev,
                                             size_t piece_bytes, size_t piece_stride, int n_pieces,
                                             const int32_t *blocks, void *const *host, int n,
                                             uint64_t *ticket) {
    enum tl_status st = TL_OK;
    const struct kern_ctx *ctx = c->ctx;
    cudaMemcpyKind kind = dir ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
    bool two_d = piece_stride <= c->max_pitch && piece_bytes <= c->max_pitch;
    uint64_t t = c->next + 1;
    KERN_CUDA(ctx->err, kern_enter(ctx));
    if (t > RING) { /* the ring slot is reused: its batch must be finished */
        st = advance(c, t - RING);
        if (st != TL_OK) goto cleanup;
    }
    /* after what the forward queued so far (it may still write or read these blocks) */
    KERN_CUDA(ctx->err, cudaEventRecord(c->before, ctx->stream));
    KERN_CUDA(ctx->err, cudaStreamWaitEvent(c->stream, c->before, 0));
    for (int i = 0; i < n; i++) {
        char *d = dev + (size_t)blocks[i] * piece_bytes;
        char *h = (char *)host[i];
        if (two_d) {
            if (dir)
                KERN_CUDA(ctx->err, cudaMemcpy2DAsync(d, piece_stride, h, piece_bytes, piece_bytes,
                                                      (size_t)n_pieces, kind, c->stream));
            else
                KERN_CUDA(ctx->err, cudaMemcpy2DAsync(h, piece_bytes, d, piece_stride, piece_bytes,
                                                      (size_t)n_pieces, kind, c->stream));
        } else { /* pools too far apart for a 2D copy's pitch: one copy per piece */
            for (int p = 0; p < n_pieces; p++) {
                char *dp = d + (size_t)p * piece_stride, *hp = h + (size_t)p * piece_bytes;
                KERN_CUDA(ctx->err, cudaMemcpyAsync(dir ? dp : hp, dir ? hp : dp, piece_bytes, kind,
                                                    c->stream));
            }
        }
    }
    KERN_CUDA(ctx->err, cudaEventRecord(c->ev[t % RING], c->stream));
    c->next = t;
    *ticket = t;
    /* the next forward may write blocks just copied out: it waits for the copy */
    if (!dir) KERN_CUDA(ctx->err, cudaStreamWaitEvent(ctx->stream, c->ev[t % RING], 0));
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
