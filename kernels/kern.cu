/* kern: the CUDA context (device, stream, cuBLAS handle), device and pinned memory, copies, and
 * the error recording every .cu file of kernels/ goes through. Functions run on the calling
 * thread; copies are queued on the context's stream and only kern_sync waits for them. */
#include "kern.h"
#include "kern_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- errors ---------------- */

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

enum tl_status kern_fail_cuda(struct tl_err *err, cudaError_t e, const char *stmt, const char *func,
                              const char *file, int line) {
    enum tl_status s = e == cudaErrorMemoryAllocation ? TL_ERR_NOMEM : TL_ERR_CUDA;
    return tl_fail(err, s, "CUDA error %d (%s: %s) in `%s` at %s (%s:%d)", (int)e,
                   cudaGetErrorName(e), cudaGetErrorString(e), stmt, func, base_name(file), line);
}

enum tl_status kern_fail_cublas(struct tl_err *err, cublasStatus_t c, const char *stmt,
                                const char *func, const char *file, int line) {
    enum tl_status s = c == CUBLAS_STATUS_ALLOC_FAILED ? TL_ERR_NOMEM : TL_ERR_CUDA;
    return tl_fail(err, s, "cuBLAS error %d (%s) in `%s` at %s (%s:%d)", (int)c,
                   cublasGetStatusString(c), stmt, func, base_name(file), line);
}

cudaError_t kern_enter(const struct kern_ctx *ctx) {
    int cur = -1;
    cudaError_t e = cudaGetDevice(&cur);
    if (e != cudaSuccess || cur == ctx->device) return e;
    return cudaSetDevice(ctx->device);
}

void *kern_stream(const struct kern_ctx *ctx) {
    return (void *)ctx->stream;
}

const char *kern_last_error(const struct kern_ctx *ctx) {
    return ctx && ctx->err ? ctx->err->msg : "no CUDA context";
}

/* ---------------- devices and contexts ---------------- */

int kern_device_probe(struct tl_err *why) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        /* cudaErrorNoDevice, cudaErrorInsufficientDriver, ...: no usable GPU, not a failure. */
        tl_fail(why, TL_ERR_CUDA, "no usable CUDA device: cudaGetDeviceCount: %s (%s)",
                cudaGetErrorName(e), cudaGetErrorString(e));
        (void)cudaGetLastError(); /* clear it so later calls do not report it again */
        return 0;
    }
    if (n == 0) tl_fail(why, TL_ERR_CUDA, "no CUDA device (cudaGetDeviceCount returned 0)");
    return n;
}

int kern_device_count(void) {
    return kern_device_probe(NULL);
}

enum tl_status kern_ctx_create(int device, struct kern_ctx **out, struct tl_err *err) {
    enum tl_status st = TL_OK;
    struct kern_ctx *ctx = NULL;
    struct tl_err why;
    struct cudaDeviceProp prop;
    int n = 0;

    if (!out) return tl_fail(err, TL_ERR_INVALID, "kern_ctx_create: out is NULL");
    *out = NULL;
    n = kern_device_probe(&why);
    if (n == 0) KERN_FAIL(err, TL_ERR_CUDA, "%s", why.msg);
    if (device < 0 || device >= n)
        KERN_FAIL(err, TL_ERR_INVALID, "does not exist: this host has %d CUDA device(s), 0..%d", n,
                  n - 1);
    ctx = (struct kern_ctx *)calloc(1, sizeof *ctx);
    if (!ctx) KERN_FAIL(err, TL_ERR_NOMEM, "out of host memory");
    ctx->device = device;
    ctx->err = (struct tl_err *)calloc(1, sizeof *ctx->err);
    if (!ctx->err) KERN_FAIL(err, TL_ERR_NOMEM, "out of host memory");

    KERN_CUDA(err, cudaSetDevice(device));
    KERN_CUDA(err, cudaGetDeviceProperties(&prop, device));
    ctx->sm_count = prop.multiProcessorCount;
    ctx->cc_major = prop.major;
    ctx->cc_minor = prop.minor;
    ctx->l2_bytes = (size_t)prop.l2CacheSize;
    ctx->smem_per_block_optin_bytes = prop.sharedMemPerBlockOptin;
    snprintf(ctx->name, sizeof ctx->name, "%s", prop.name);
    /* Non-blocking: our stream does not serialise with the legacy default stream. */
    KERN_CUDA(err, cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
    KERN_CUBLAS(err, cublasCreate(&ctx->cublas));
    KERN_CUBLAS(err, cublasSetStream(ctx->cublas, ctx->stream));
    *out = ctx;
    ctx = NULL;

cleanup:
    if (st != TL_OK) tl_err_prefix(err, "CUDA device %d", device);
    kern_ctx_destroy(ctx);
    return st;
}

void kern_ctx_destroy(struct kern_ctx *ctx) {
    if (!ctx) return;
    /* Teardown errors (a context already broken by a kernel fault) cannot be acted on here. */
    if (ctx->stream || ctx->cublas) {
        (void)kern_enter(ctx);
        if (ctx->stream) (void)cudaStreamSynchronize(ctx->stream);
        if (ctx->cublas) (void)cublasDestroy(ctx->cublas);
        if (ctx->stream) (void)cudaStreamDestroy(ctx->stream);
    }
    free(ctx->err);
    free(ctx);
}

enum tl_status kern_device_info(const struct kern_ctx *ctx, struct kern_device_info *out) {
    enum tl_status st = TL_OK;
    size_t free_b = 0, total_b = 0;

    if (!ctx || !out) return TL_ERR_INVALID;
    memset(out, 0, sizeof *out);
    KERN_CUDA(ctx->err, kern_enter(ctx));
    KERN_CUDA(ctx->err, cudaMemGetInfo(&free_b, &total_b));
    snprintf(out->name, sizeof out->name, "%s", ctx->name);
    out->device = ctx->device;
    out->sm_count = ctx->sm_count;
    out->cc_major = ctx->cc_major;
    out->cc_minor = ctx->cc_minor;
    out->total_bytes = total_b;
    out->free_bytes = free_b;
    out->l2_bytes = ctx->l2_bytes;
    out->smem_per_block_optin_bytes = ctx->smem_per_block_optin_bytes;

cleanup:
    return st;
}

/* ---------------- memory and copies ---------------- */

enum tl_status kern_alloc(const struct kern_ctx *ctx, size_t bytes, void **out) {
    enum tl_status st = TL_OK;
    void *p = NULL;
    cudaError_t e = cudaSuccess;
    size_t free_b = 0, total_b = 0;

    if (!ctx) return TL_ERR_INVALID;
    if (!out) KERN_FAIL(ctx->err, TL_ERR_INVALID, "kern_alloc: out is NULL");
    *out = NULL;
    if (bytes == 0) KERN_FAIL(ctx->err, TL_ERR_INVALID, "kern_alloc: 0 bytes requested");
    KERN_CUDA(ctx->err, kern_enter(ctx));
    e = cudaMalloc(&p, bytes);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* out of memory is not sticky; clear it */
        (void)cudaMemGetInfo(&free_b, &total_b);
        KERN_FAIL(ctx->err, TL_ERR_NOMEM,
                  "out of GPU memory on device %d: cudaMalloc of %zu bytes failed with %zu of %zu "
                  "bytes free; lower --gpu-memory-gb or the batch size",
                  ctx->device, bytes, free_b, total_b);
    }
    if (e != cudaSuccess) {
        st = kern_fail_cuda(ctx->err, e, "cudaMalloc(&p, bytes)", __func__, __FILE__, __LINE__);
        goto cleanup;
    }
    *out = p;

cleanup:
    return st;
}

/* A failed free is recorded in ctx->err: it has no caller to report to. */
void kern_free(const struct kern_ctx *ctx, void *dev) {
    cudaError_t e;
    if (!ctx || !dev) return;
    e = kern_enter(ctx);
    if (e == cudaSuccess) e = cudaFree(dev);
    if (e != cudaSuccess)
        (void)kern_fail_cuda(ctx->err, e, "cudaFree(dev)", __func__, __FILE__, __LINE__);
}

enum tl_status kern_host_alloc(const struct kern_ctx *ctx, size_t bytes, void **out) {
    enum tl_status st = TL_OK;
    void *p = NULL;

    if (!ctx) return TL_ERR_INVALID;
    if (!out) KERN_FAIL(ctx->err, TL_ERR_INVALID, "kern_host_alloc: out is NULL");
    *out = NULL;
    if (bytes == 0) KERN_FAIL(ctx->err, TL_ERR_INVALID, "kern_host_alloc: 0 bytes requested");
    KERN_CUDA(ctx->err, kern_enter(ctx));
    KERN_CUDA(ctx->err, cudaMallocHost(&p, bytes));
    *out = p;

cleanup:
    return st;
}

void kern_host_free(const struct kern_ctx *ctx, void *host) {
    cudaError_t e;
    if (!ctx || !host) return;
    e = kern_enter(ctx);
    if (e == cudaSuccess) e = cudaFreeHost(host);
    if (e != cudaSuccess)
        (void)kern_fail_cuda(ctx->err, e, "cudaFreeHost(host)", __func__, __FILE__, __LINE__);
}

static enum tl_status copy_async(const struct kern_ctx *ctx, void *dst, const void *src,
                                 size_t bytes, enum cudaMemcpyKind kind, const char *what) {
    enum tl_status st = TL_OK;

    if (!ctx) return TL_ERR_INVALID;
    if (bytes == 0) return TL_OK;
    if (!dst || !src)
        KERN_FAIL(ctx->err, TL_ERR_INVALID, "%s of %zu bytes: %s pointer is NULL", what, bytes,
                  !dst ? "destination" : "source");
    KERN_CUDA(ctx->err, kern_enter(ctx));
    KERN_CUDA(ctx->err, cudaMemcpyAsync(dst, src, bytes, kind, ctx->stream));

cleanup:
    return st;
}

enum tl_status kern_upload(const struct kern_ctx *ctx, void *dev_dst, const void *host_src,
                           size_t bytes) {
    return copy_async(ctx, dev_dst, host_src, bytes, cudaMemcpyHostToDevice, "kern_upload");
}

enum tl_status kern_download(const struct kern_ctx *ctx, void *host_dst, const void *dev_src,
                             size_t bytes) {
    return copy_async(ctx, host_dst, dev_src, bytes, cudaMemcpyDeviceToHost, "kern_download");
}

enum tl_status kern_sync(const struct kern_ctx *ctx) {
    enum tl_status st = TL_OK;

    if (!ctx) return TL_ERR_INVALID;
    KERN_CUDA(ctx->err, kern_enter(ctx));
    KERN_CUDA(ctx->err, cudaStreamSynchronize(ctx->stream));

cleanup:
    return st;
}

struct kern_graph {
    cudaGraphExec_t exec;
};

enum tl_status kern_capture_begin(const struct kern_ctx *ctx) {
    enum tl_status st = TL_OK;

    if (!ctx) return TL_ERR_INVALID;
    KERN_CUDA(ctx->err, kern_enter(ctx));
    /* thread-local: CUDA calls of other threads (a server's) do not invalidate the capture */
    KERN_CUDA(ctx->err, cudaStreamBeginCapture(ctx->stream, cudaStreamCaptureModeThreadLocal));

cleanup:
    return st;
}

enum tl_status kern_capture_end(const struct kern_ctx *ctx, struct kern_graph **out) {
    enum tl_status st = TL_OK;
    cudaGraph_t graph = NULL;
    struct kern_graph *g = NULL;

    *out = NULL;
    if (!ctx) return TL_ERR_INVALID;
    KERN_CUDA(ctx->err, kern_enter(ctx));
    KERN_CUDA(ctx->err, cudaStreamEndCapture(ctx->stream, &graph));
    g = (struct kern_graph *)calloc(1, sizeof *g);
    if (!g) KERN_FAIL(ctx->err, TL_ERR_NOMEM, "out of host memory");
    KERN_CUDA(ctx->err, cudaGraphInstantiate(&g->exec, graph, 0));
    *out = g;
    g = NULL;

cleanup:
    free(g);
    if (graph) cudaGraphDestroy(graph);
    return st;
}

enum tl_status kern_graph_launch(const struct kern_ctx *ctx, const struct kern_graph *g) {
    enum tl_status st = TL_OK;

    if (!ctx || !g) return TL_ERR_INVALID;
    KERN_CUDA(ctx->err, kern_enter(ctx));
    KERN_CUDA(ctx->err, cudaGraphLaunch(g->exec, ctx->stream));

cleanup:
    return st;
}

void kern_graph_free(struct kern_graph *g) {
    if (!g) return;
    cudaGraphExecDestroy(g->exec);
    free(g);
}

void *kern_ctx_stream(const struct kern_ctx *ctx) {
    return ctx ? (void *)ctx->stream : NULL;
}
