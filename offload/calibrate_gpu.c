/* calibrate_gpu: one kern_ctx, the ceilings of kern_ceiling.h, and a 256 MiB pinned buffer
 * copied to the device repeatedly (CUDA events time the copies) while the CPU side measures
 * its read bandwidth. Owns the context, the pinned buffer and the device buffer. */
#include "calibrate_gpu.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "kern.h"
#include "kern_ceiling.h"

#define PIN_BYTES ((size_t)256 << 20)

struct gpu_state {
    struct kern_ctx *kc;
    void *pinned, *dev;
    cudaEvent_t e0, e1;
    size_t queued_bytes;
};

static enum tl_status cuda_fail(struct tl_err *err, cudaError_t e, const char *what) {
    return tl_fail(err, TL_ERR_CUDA, "calibration: %s: %s", what, cudaGetErrorString(e));
}

static enum tl_status g_name(void *user, char *buf, size_t n, struct tl_err *err) {
    struct gpu_state *g = user;
    struct kern_device_info di;
    enum tl_status st = kern_device_info(g->kc, &di);
    if (st != TL_OK) return tl_fail(err, st, "%s", kern_last_error(g->kc));
    snprintf(buf, n, "%s", di.name);
    return TL_OK;
}

static enum tl_status g_measure(void *user, struct ceilings *c, struct tl_err *err) {
    struct gpu_state *g = user;
    struct kern_device_info di;
    enum tl_status st = kern_device_info(g->kc, &di);
    if (st == TL_OK) st = kern_ceiling_hbm(g->kc, (size_t)1 << 30, &c->gpu_hbm_gbps);
    if (st == TL_OK) st = kern_ceiling_gemm(g->kc, TL_DTYPE_BF16, 8192, &c->gpu_gemm_tflops);
    if (st == TL_OK) st = kern_ceiling_pcie(g->kc, PIN_BYTES, &c->pcie_h2d_gbps, &c->pcie_d2h_gbps);
    if (st != TL_OK) return tl_fail(err, st, "calibration: %s", kern_last_error(g->kc));
    snprintf(c->gpu_name, sizeof c->gpu_name, "%.*s", (int)sizeof c->gpu_name - 1, di.name);
    c->gpu_total_gib = (double)di.total_bytes / (1024.0 * 1024.0 * 1024.0);
    return TL_OK;
}

static enum tl_status g_h2d_start(void *user, size_t bytes, struct tl_err *err) {
    struct gpu_state *g = user;
    enum tl_status st;
    if (!g->pinned && (st = kern_host_alloc(g->kc, PIN_BYTES, &g->pinned)) != TL_OK)
        return tl_fail(err, st, "calibration: %s", kern_last_error(g->kc));
    if (!g->dev && (st = kern_alloc(g->kc, PIN_BYTES, &g->dev)) != TL_OK)
        return tl_fail(err, st, "calibration: %s", kern_last_error(g->kc));
    memset(g->pinned, 0x3c, PIN_BYTES);
    cudaStream_t s = (cudaStream_t)kern_ctx_stream(g->kc);
    cudaError_t e = cudaEventRecord(g->e0, s);
    if (e != cudaSuccess) return cuda_fail(err, e, "cudaEventRecord");
    g->queued_bytes = 0;
    do {
        if ((st = kern_upload(g->kc, g->dev, g->pinned, PIN_BYTES)) != TL_OK)
            return tl_fail(err, st, "calibration: %s", kern_last_error(g->kc));
        g->queued_bytes += PIN_BYTES;
    } while (g->queued_bytes < bytes);
    e = cudaEventRecord(g->e1, s);
    return e == cudaSuccess ? TL_OK : cuda_fail(err, e, "cudaEventRecord");
}

static bool g_h2d_busy(void *user) {
    struct gpu_state *g = user;
    return cudaEventQuery(g->e1) == cudaErrorNotReady;
}

static enum tl_status g_h2d_finish(void *user, double *gbps, struct tl_err *err) {
    struct gpu_state *g = user;
    float ms = 0;
    cudaError_t e = cudaEventSynchronize(g->e1);
    if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, g->e0, g->e1);
    if (e != cudaSuccess) return cuda_fail(err, e, "timing the H2D copies");
    *gbps = ms > 0 ? (double)g->queued_bytes / (ms * 1e-3) / 1e9 : 0;
    /* give the memory back so calibrate_gpu_memory sees only the context */
    kern_free(g->kc, g->dev);
    kern_host_free(g->kc, g->pinned);
    g->dev = g->pinned = NULL;
    return TL_OK;
}

enum tl_status calibrate_gpu_open(int device, struct calibrate_gpu *out, struct tl_err *err) {
    memset(out, 0, sizeof *out);
    struct tl_err why;
    if (kern_device_probe(&why) <= device)
        return tl_fail(err, TL_ERR_UNSUPPORTED, "no GPU %d to calibrate (%s)", device, why.msg);
    struct gpu_state *g = calloc(1, sizeof *g);
    if (!g) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    enum tl_status st = kern_ctx_create(device, &g->kc, err);
    if (st != TL_OK) {
        free(g);
        return st;
    }
    cudaError_t e = cudaEventCreate(&g->e0);
    if (e == cudaSuccess) e = cudaEventCreate(&g->e1);
    out->user = g;
    if (e != cudaSuccess) {
        calibrate_gpu_close(out);
        return cuda_fail(err, e, "cudaEventCreate");
    }
    out->measure = g_measure;
    out->h2d_start = g_h2d_start;
    out->h2d_busy = g_h2d_busy;
    out->h2d_finish = g_h2d_finish;
    out->name = g_name;
    return TL_OK;
}

void calibrate_gpu_close(struct calibrate_gpu *out) {
    struct gpu_state *g = out ? out->user : NULL;
    if (!g) return;
    if (g->kc) {
        kern_sync(g->kc);
        kern_free(g->kc, g->dev);
        kern_host_free(g->kc, g->pinned);
    }
    if (g->e0) cudaEventDestroy(g->e0);
    if (g->e1) cudaEventDestroy(g->e1);
    kern_ctx_destroy(g->kc);
    free(g);
    out->user = NULL;
}

enum tl_status calibrate_gpu_memory(const struct calibrate_gpu *out, size_t *total_bytes,
                                    size_t *used_bytes, struct tl_err *err) {
    struct gpu_state *g = out->user;
    struct kern_device_info di;
    enum tl_status st = kern_device_info(g->kc, &di);
    if (st != TL_OK) return tl_fail(err, st, "%s", kern_last_error(g->kc));
    *total_bytes = di.total_bytes;
    *used_bytes = di.total_bytes - di.free_bytes;
    return TL_OK;
}
