/* kern: the foundation of the CUDA backend. A kern_ctx is one device plus one CUDA stream and
 * one cuBLAS handle bound to that stream; every op of kernels/ takes one and queues its work on
 * that stream, in call order. Device memory comes from kern_alloc and belongs to the caller
 * (kern_free). A context is used by one host thread at a time; its last failure's message is
 * kept in it (kern_last_error), so ops that take a const context still report what failed.
 *
 * Includable from C and C++; the functions have C linkage. Everything returns enum tl_status:
 * TL_ERR_INVALID for bad arguments, TL_ERR_NOMEM when device memory runs out, TL_ERR_CUDA for a
 * failed CUDA or cuBLAS call (the message names the call, function, file and line). After an
 * asynchronous fault (an illegal address in a kernel) the CUDA context is unusable: every later
 * call fails, and the only cure is a new process. */
#ifndef TL_KERN_H
#define TL_KERN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "status.h"

struct kern_ctx; /* opaque; layout in kern_impl.h */

/* What kern_device_info reports about the context's device. */
struct kern_device_info {
    char name[256];                    /* "NVIDIA H100 80GB HBM3" */
    int device;                        /* CUDA device ordinal */
    int sm_count;                      /* streaming multiprocessors */
    int cc_major, cc_minor;            /* compute capability, 9.0 for Hopper */
    size_t total_bytes;                /* device memory */
    size_t free_bytes;                 /* free now, as the driver sees it (all processes) */
    size_t l2_bytes;                   /* L2 cache */
    size_t smem_per_block_optin_bytes; /* shared memory a block may opt in to */
};

/* Number of CUDA devices; 0 (not an error) when there is no GPU or no usable driver. When it
 * returns 0 and why is non-NULL, why says the reason (for a test's skip message). Does not
 * create a context on any device. */
int kern_device_probe(struct tl_err *why);
/* kern_device_probe(NULL). */
int kern_device_count(void);

/* Creates a context on device `device` (0-based): makes the device current for the calling
 * thread, creates a non-blocking stream and a cuBLAS handle bound to it. On failure *out is
 * NULL and err says why. Blocks while the CUDA context starts (up to a few seconds on first
 * use). Free with kern_ctx_destroy. */
enum tl_status kern_ctx_create(int device, struct kern_ctx **out, struct tl_err *err);
/* Waits for the stream, then frees the handle, the stream and ctx. NULL is fine. Device memory
 * from kern_alloc is not freed: the caller owns it. */
void kern_ctx_destroy(struct kern_ctx *ctx);

/* The last failure's message on this context ("" when none); borrowed, valid until the next
 * call on ctx. */
const char *kern_last_error(const struct kern_ctx *ctx);

/* The context's CUDA stream (a cudaStream_t, borrowed), for libraries that enqueue work beside
 * the kernels (NCCL). */
void *kern_stream(const struct kern_ctx *ctx);

/* Fills *out (free_bytes is read now). Does not block on the stream. */
enum tl_status kern_device_info(const struct kern_ctx *ctx, struct kern_device_info *out);

/* Device memory of `bytes` bytes (> 0), aligned to 256 bytes, uninitialised; free with kern_free.
 * TL_ERR_NOMEM (with the free and total bytes in the message) when the device is full. May
 * block until earlier work on the device is done. */
enum tl_status kern_alloc(const struct kern_ctx *ctx, size_t bytes, void **out);
/* Frees memory from kern_alloc; NULL is fine. Blocks until the device is done with it. */
void kern_free(const struct kern_ctx *ctx, void *dev);

/* Pinned (page-locked) host memory: kern_upload / kern_download from it are truly asynchronous.
 * Free with kern_host_free; NULL is fine there. */
enum tl_status kern_host_alloc(const struct kern_ctx *ctx, size_t bytes, void **out);
void kern_host_free(const struct kern_ctx *ctx, void *host);

/* Queues a copy of `bytes` bytes host -> device (upload) or device -> host (download) on the
 * context's stream and returns; bytes 0 is a no-op. The host buffer must stay valid and
 * unchanged (upload) or unread (download) until kern_sync. From pageable host memory CUDA may
 * block the caller until the copy is staged; from kern_host_alloc memory it does not. */
enum tl_status kern_upload(const struct kern_ctx *ctx, void *dev_dst, const void *host_src,
                           size_t bytes);
enum tl_status kern_download(const struct kern_ctx *ctx, void *host_dst, const void *dev_src,
                             size_t bytes);

/* Blocks until all work queued on the context's stream is done. Reports errors from kernels
 * that ran asynchronously (an illegal address shows up here, not at the launch). */
enum tl_status kern_sync(const struct kern_ctx *ctx);

/* The context's CUDA stream (a cudaStream_t; borrowed, valid while ctx lives), for tests and
 * benchmarks that bracket ops with CUDA events: the stream is non-blocking, so events on the
 * default stream do not order with it. NULL for a NULL ctx. */
void *kern_ctx_stream(const struct kern_ctx *ctx);

/* CUDA graphs of the context's stream. Between kern_capture_begin and kern_capture_end, work
 * queued on the stream (by this thread) is recorded instead of run; kern_capture_end turns it
 * into an executable graph (caller frees with kern_graph_free). kern_graph_launch queues one
 * replay: the same kernels with the same arguments, reading device memory as it is then. */
struct kern_graph;
enum tl_status kern_capture_begin(const struct kern_ctx *ctx);
enum tl_status kern_capture_end(const struct kern_ctx *ctx, struct kern_graph **out);
enum tl_status kern_graph_launch(const struct kern_ctx *ctx, const struct kern_graph *g);
void kern_graph_free(struct kern_graph *g);

#ifdef __cplusplus
}
#endif

#endif
