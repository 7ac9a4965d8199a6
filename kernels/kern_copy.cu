/* kern_copy: the copy stream and its events. Timing uses a pair of timed events around each
 * copy in a small ring, summed when stats are asked for; ordering events are created without
 * timing (cheaper to record and wait on). */
#include <stdlib.h>

#include "kern_copy.h"
#include "kern_impl.h"

#define COPY_TIMED 64 /* copies whose duration is remembered between two stats calls */

struct kern_copier {
    const struct kern_ctx *ctx;
    cudaStream_t stream;
    cudaEvent_t *ev;
    int n_ev;
    cudaEvent_t t0[COPY_TIMED], t1[COPY_TIMED];
    size_t t_bytes[COPY_TIMED];
    int n_timed;          /* copies timed since the last stats call (<= COPY_TIMED) */
    size_t untimed_bytes; /* copies beyond the ring: counted, timed by their share */
};

extern "C" enum tl_status kern_copier_create(const struct kern_ctx *ctx, int n_events,
                                             struct kern_copier **out) {
    enum tl_status st = TL_OK;
    struct kern_copier *cp = NULL;
    *out = NULL;
    if (!ctx || n_events < 1) return TL_ERR_INVALID;
    KERN_CUDA(ctx->err, kern_enter(ctx));
    cp = (struct kern_copier *)calloc(1, sizeof *cp);
    if (!cp) KERN_FAIL(ctx->err, TL_ERR_NOMEM, "out of host memory");
    cp->ctx = ctx;
    cp->ev = (cudaEvent_t *)calloc((size_t)n_events, sizeof *cp->ev);
    if (!cp->ev) KERN_FAIL(ctx->err, TL_ERR_NOMEM, "out of host memory");
    cp->n_ev = n_events;
    KERN_CUDA(ctx->err, cudaStreamCreateWithFlags(&cp->stream, cudaStreamNonBlocking));
    for (int i = 0; i < n_events; i++)
        KERN_CUDA(ctx->err, cudaEventCreateWithFlags(&cp->ev[i], cudaEventDisableTiming));
    for (int i = 0; i < COPY_TIMED; i++) {
        KERN_CUDA(ctx->err, cudaEventCreate(&cp->t0[i]));
        KERN_CUDA(ctx->err, cudaEventCreate(&cp->t1[i]));
    }
    *out = cp;
    cp = NULL;
cleanup:
    kern_copier_destroy(cp);
    return st;
}

extern "C" void kern_copier_destroy(struct kern_copier *cp) {
    if (!cp) return;
    kern_enter(cp->ctx);
    if (cp->stream) cudaStreamSynchronize(cp->stream);
    for (int i = 0; cp->ev && i < cp->n_ev; i++)
        if (cp->ev[i]) cudaEventDestroy(cp->ev[i]);
    for (int i = 0; i < COPY_TIMED; i++) {
        if (cp->t0[i]) cudaEventDestroy(cp->t0[i]);
        if (cp->t1[i]) cudaEventDestroy(cp->t1[i]);
    }
    if (cp->stream) cudaStreamDestroy(cp->stream);
    free(cp->ev);
    free(cp);
}

extern "C" enum tl_status kern_copier_h2d(struct kern_copier *cp, void *dev_dst,
                                          const void *host_src, size_t bytes, int wait_ev,
                                          int done_ev) {
    enum tl_status st = TL_OK;
    const struct kern_ctx *ctx = cp->ctx;
    int slot = cp->n_timed;
    if (wait_ev >= cp->n_ev || done_ev >= cp->n_ev)
        KERN_FAIL(ctx->err, TL_ERR_INVALID, "kern_copier_h2d: event out of range");
    KERN_CUDA(ctx->err, kern_enter(ctx));
    if (wait_ev >= 0) KERN_CUDA(ctx->err, cudaStreamWaitEvent(cp->stream, cp->ev[wait_ev], 0));
    if (slot < COPY_TIMED) KERN_CUDA(ctx->err, cudaEventRecord(cp->t0[slot], cp->stream));
    KERN_CUDA(ctx->err,
              cudaMemcpyAsync(dev_dst, host_src, bytes, cudaMemcpyHostToDevice, cp->stream));
    if (slot < COPY_TIMED) {
        KERN_CUDA(ctx->err, cudaEventRecord(cp->t1[slot], cp->stream));
        cp->t_bytes[slot] = bytes;
        cp->n_timed++;
    } else {
        cp->untimed_bytes += bytes;
    }
    if (done_ev >= 0) KERN_CUDA(ctx->err, cudaEventRecord(cp->ev[done_ev], cp->stream));
cleanup:
    return st;
}

extern "C" enum tl_status kern_copier_mark(struct kern_copier *cp, int ev) {
    enum tl_status st = TL_OK;
    const struct kern_ctx *ctx = cp->ctx;
    if (ev < 0 || ev >= cp->n_ev) KERN_FAIL(ctx->err, TL_ERR_INVALID, "kern_copier_mark: event");
    KERN_CUDA(ctx->err, kern_enter(ctx));
    KERN_CUDA(ctx->err, cudaEventRecord(cp->ev[ev], ctx->stream));
cleanup:
    return st;
}

extern "C" enum tl_status kern_copier_wait(struct kern_copier *cp, int ev) {
    enum tl_status st = TL_OK;
    const struct kern_ctx *ctx = cp->ctx;
    if (ev < 0 || ev >= cp->n_ev) KERN_FAIL(ctx->err, TL_ERR_INVALID, "kern_copier_wait: event");
    KERN_CUDA(ctx->err, kern_enter(ctx));
    KERN_CUDA(ctx->err, cudaStreamWaitEvent(ctx->stream, cp->ev[ev], 0));
cleanup:
    return st;
}

extern "C" enum tl_status kern_copier_stats(struct kern_copier *cp, size_t *bytes, double *busy_s) {
    enum tl_status st = TL_OK;
    const struct kern_ctx *ctx = cp->ctx;
    size_t timed_bytes = 0;
    double timed_s = 0.0;
    *bytes = 0;
    *busy_s = 0.0;
    KERN_CUDA(ctx->err, kern_enter(ctx));
    KERN_CUDA(ctx->err, cudaStreamSynchronize(cp->stream));
    for (int i = 0; i < cp->n_timed; i++) {
        float ms = 0.0f;
        KERN_CUDA(ctx->err, cudaEventElapsedTime(&ms, cp->t0[i], cp->t1[i]));
        timed_s += 1e-3 * ms;
        timed_bytes += cp->t_bytes[i];
    }
    *bytes = timed_bytes + cp->untimed_bytes;
    /* copies past the ring ran at the rate the timed ones did */
    *busy_s = timed_bytes ? timed_s * (double)*bytes / (double)timed_bytes : 0.0;
    cp->n_timed = 0;
    cp->untimed_bytes = 0;
cleanup:
    return st;
}

struct kern_span {
    const struct kern_ctx *ctx;
    cudaEvent_t a, b;
    bool begun, ended;
};

extern "C" enum tl_status kern_span_create(const struct kern_ctx *ctx, struct kern_span **out) {
    enum tl_status st = TL_OK;
    struct kern_span *sp = NULL;
    *out = NULL;
    KERN_CUDA(ctx->err, kern_enter(ctx));
    sp = (struct kern_span *)calloc(1, sizeof *sp);
    if (!sp) KERN_FAIL(ctx->err, TL_ERR_NOMEM, "out of host memory");
    sp->ctx = ctx;
    KERN_CUDA(ctx->err, cudaEventCreate(&sp->a));
    KERN_CUDA(ctx->err, cudaEventCreate(&sp->b));
    *out = sp;
    sp = NULL;
cleanup:
    kern_span_destroy(sp);
    return st;
}

extern "C" void kern_span_destroy(struct kern_span *sp) {
    if (!sp) return;
    kern_enter(sp->ctx);
    if (sp->a) cudaEventDestroy(sp->a);
    if (sp->b) cudaEventDestroy(sp->b);
    free(sp);
}

extern "C" enum tl_status kern_span_begin(struct kern_span *sp) {
    enum tl_status st = TL_OK;
    KERN_CUDA(sp->ctx->err, kern_enter(sp->ctx));
    KERN_CUDA(sp->ctx->err, cudaEventRecord(sp->a, sp->ctx->stream));
    sp->begun = true;
    sp->ended = false;
cleanup:
    return st;
}

extern "C" enum tl_status kern_span_end(struct kern_span *sp) {
    enum tl_status st = TL_OK;
    if (!sp->begun) return TL_OK;
    KERN_CUDA(sp->ctx->err, kern_enter(sp->ctx));
    KERN_CUDA(sp->ctx->err, cudaEventRecord(sp->b, sp->ctx->stream));
    sp->ended = true;
cleanup:
    return st;
}

extern "C" enum tl_status kern_span_seconds(struct kern_span *sp, double *sec) {
    enum tl_status st = TL_OK;
    float ms = 0.0f;
    *sec = 0.0;
    if (!sp->begun || !sp->ended) return TL_OK;
    KERN_CUDA(sp->ctx->err, kern_enter(sp->ctx));
    KERN_CUDA(sp->ctx->err, cudaEventSynchronize(sp->b));
    KERN_CUDA(sp->ctx->err, cudaEventElapsedTime(&ms, sp->a, sp->b));
    *sec = 1e-3 * ms;
    sp->begun = sp->ended = false;
cleanup:
    return st;
}
