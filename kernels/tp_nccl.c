/* tp_nccl: NCCL behind collective.h (tp_nccl.h). Every call is enqueued on the backend's stream;
 * all_gather_f32 then reads the gathered rows to the host through the backend's read_f32,
 * which waits for the stream. Failures abort the communicator, so peers blocked in NCCL return
 * instead of hanging, and break the TCP group, so peers waiting for a step do too. */
#include "tp_nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "gpu_backend.h"
#include "tp.h"

struct tp_nccl {
    struct tl_collective coll;
    struct tp_net *net;                   /* borrowed */
    const struct tl_collective *net_coll; /* borrowed: the step channel */
    ncclComm_t comm;
    cudaStream_t stream; /* borrowed: the backend's */
    void *gather;        /* device (world * cap) activations */
    size_t gather_bytes;
    char err[TL_ERR_MSG_MAX];
};

/* Records a failed NCCL / CUDA statement with where it was. */
#define NCCL_TRY(g, call)                                                                          \
    do {                                                                                           \
        ncclResult_t r_ = (call);                                                                  \
        if (r_ != ncclSuccess) return nccl_fail((g), #call, ncclGetErrorString(r_), __LINE__);     \
    } while (0)
#define CUDA_TRY(g, call)                                                                          \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return nccl_fail((g), #call, cudaGetErrorString(e_), __LINE__);     \
    } while (0)

static enum tl_status nccl_fail(struct tp_nccl *g, const char *stmt, const char *why, int line) {
    snprintf(g->err, sizeof g->err, "tensor parallel rank %d: %s failed (%s) at %s:%d",
             g->coll.rank, stmt, why, __FILE__, line);
    return TL_ERR_CUDA;
}

static bool nccl_dtype(enum tl_dtype dt, ncclDataType_t *out) {
    switch (dt) {
    case TL_DTYPE_BF16:
        *out = ncclBfloat16;
        return true;
    case TL_DTYPE_F16:
        *out = ncclFloat16;
        return true;
    case TL_DTYPE_F32:
        *out = ncclFloat32;
        return true;
    default:
        return false;
    }
}

static enum tl_status check_dtype(struct tp_nccl *g, const struct ops *o, ncclDataType_t *dt) {
    if (nccl_dtype(o->act_dtype, dt)) return TL_OK;
    snprintf(g->err, sizeof g->err, "tensor parallel rank %d: NCCL cannot reduce %s activations",
             g->coll.rank, dtype_torch_name(o->act_dtype));
    return TL_ERR_UNSUPPORTED;
}

static enum tl_status op_all_reduce_sum(void *ctx, const struct ops *o, void *buf, size_t n) {
    struct tp_nccl *g = ctx;
    ncclDataType_t dt;
    enum tl_status st = check_dtype(g, o, &dt);
    if (st != TL_OK) return st;
    NCCL_TRY(g, ncclAllReduce(buf, buf, n, dt, ncclSum, g->comm, g->stream));
    return TL_OK;
}

static enum tl_status op_all_gather_f32(void *ctx, const struct ops *o, const void *src, size_t n,
                                        float *dst) {
    struct tp_nccl *g = ctx;
    ncclDataType_t dt;
    enum tl_status st = check_dtype(g, o, &dt);
    if (st != TL_OK) return st;
    size_t elt = dtype_size(o->act_dtype), bytes = (size_t)g->coll.world * n * elt;
    if (bytes > g->gather_bytes) {
        if (g->gather) CUDA_TRY(g, cudaFree(g->gather));
        g->gather = NULL;
        g->gather_bytes = 0;
        CUDA_TRY(g, cudaMalloc(&g->gather, bytes));
        g->gather_bytes = bytes;
    }
    NCCL_TRY(g, ncclAllGather(src, g->gather, n, dt, g->comm, g->stream));
    /* rank by rank: each part fits the backend's host-read scratch, the whole rows may not */
    for (int q = 0; q < g->coll.world; q++) {
        st = o->read_f32(o->ctx, (const char *)g->gather + (size_t)q * n * elt, n,
                         dst + (size_t)q * n);
        if (st != TL_OK) {
            snprintf(g->err, sizeof g->err, "tensor parallel rank %d: reading gathered rows: %s",
                     g->coll.rank, o->last_error(o->ctx));
            return st;
        }
    }
    return TL_OK;
}

static enum tl_status op_broadcast_step(void *ctx, const int32_t **msg, int *n) {
    struct tp_nccl *g = ctx;
    enum tl_status st = g->net_coll->broadcast_step(g->net_coll->ctx, msg, n);
    if (st != TL_OK)
        snprintf(g->err, sizeof g->err, "%s", g->net_coll->last_error(g->net_coll->ctx));
    return st;
}

static void op_abort(void *ctx, const char *why) {
    struct tp_nccl *g = ctx;
    /* peers inside an NCCL call return with an error instead of waiting for this rank */
    if (g->comm) ncclCommAbort(g->comm);
    g->comm = NULL;
    g->net_coll->abort(g->net_coll->ctx, why);
}

static const char *op_last_error(void *ctx) {
    return ((struct tp_nccl *)ctx)->err;
}

enum tl_status tp_nccl_create(struct tp_net *net, const struct ops *gpu_ops, int device,
                              struct tp_nccl **out, struct tl_err *err) {
    *out = NULL;
    const struct tl_collective *nc = tp_net_collective(net);
    struct tp_nccl *g = calloc(1, sizeof *g);
    if (!g) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    g->net = net;
    g->net_coll = nc;
    g->stream = (cudaStream_t)gpu_backend_stream(gpu_ops);
    g->coll = (struct tl_collective){.rank = nc->rank,
                                     .world = nc->world,
                                     .ctx = g,
                                     .last_error = op_last_error,
                                     .all_reduce_sum = op_all_reduce_sum,
                                     .all_gather_f32 = op_all_gather_f32,
                                     .broadcast_step = op_broadcast_step,
                                     .abort = op_abort};
    /* NVLink SHARP multicast: off unless the user turned it on (it fails on our hosts' setup) */
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    enum tl_status st = TL_OK;
    ncclUniqueId id;
    cudaError_t ce = cudaSetDevice(device);
    if (ce != cudaSuccess) {
        st = tl_fail(err, TL_ERR_CUDA, "tensor parallel rank %d: cudaSetDevice(%d): %s", nc->rank,
                     device, cudaGetErrorString(ce));
        goto fail;
    }
    if (nc->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess) {
            st = tl_fail(err, TL_ERR_CUDA, "ncclGetUniqueId: %s", ncclGetErrorString(r));
            nc->abort(nc->ctx, err->msg);
            goto fail;
        }
        if ((st = tp_net_send_blob(net, &id, sizeof id, err)) != TL_OK) goto fail;
    } else {
        size_t got = 0;
        if ((st = tp_net_recv_blob(net, &id, sizeof id, &got, err)) != TL_OK) goto fail;
        if (got != sizeof id) {
            st = tl_fail(err, TL_ERR_FORMAT, "rank 0 sent a %zu-byte NCCL id, not %zu", got,
                         sizeof id);
            goto fail;
        }
    }
    ncclResult_t r = ncclCommInitRank(&g->comm, nc->world, id, nc->rank);
    if (r != ncclSuccess) {
        st = tl_fail(err, TL_ERR_CUDA, "tensor parallel rank %d: ncclCommInitRank: %s (%s)",
                     nc->rank, ncclGetErrorString(r), ncclGetLastError(NULL));
        g->comm = NULL;
        nc->abort(nc->ctx, err->msg);
        goto fail;
    }
    *out = g;
    return TL_OK;
fail:
    tp_nccl_destroy(g);
    return st;
}

const struct tl_collective *tp_nccl_collective(struct tp_nccl *g) {
    return &g->coll;
}

void tp_nccl_destroy(struct tp_nccl *g) {
    if (!g) return;
    if (g->comm) ncclCommDestroy(g->comm);
    if (g->gather) cudaFree(g->gather);
    free(g);
}
