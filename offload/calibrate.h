/* calibrate: measures the ceilings the planner's step-time model is built from, in well under
 * 2 s, and caches them on disk per machine (host, CPU, thread count, GPU):
 *   CPU: memory read bandwidth (all threads of a pool pinned with hwloc), OpenBLAS sgemm, and
 *        what cpu/matmul.h actually achieves on bf16 weights (GEMV at m = 1 and 8, the GEMM
 *        path at m = 16 and 64), decode attention (cpu/attention.h), a pool dispatch;
 *   GPU: HBM copy, bf16 GEMM, pinned PCIe H2D / D2H, and H2D with the CPU reading memory at
 *        the same time (both share the host's memory bandwidth).
 * The GPU part comes through struct calibrate_gpu (a table of functions), so this library
 * builds without CUDA; calibrate_gpu.h provides one where CUDA is built. On a machine without a
 * GPU the GPU figures are the ones the user states (or an RTX 4090's, see calibrate_gpu_assume).
 * Single-threaded API; measuring blocks the caller and uses every core. */
#ifndef TL_CALIBRATE_H
#define TL_CALIBRATE_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

/* Bumped when a probe changes what it measures (2: matmuls as the CPU lane runs them, with the
 * AVX512-BF16 path where the CPU has it; 3: reads and GEMVs from a buffer past the L3, and
 * cpu_attention sharing K/V reads across a group's q heads, with AVX2 kernels), so older caches
 * are measured again. */
#define CALIBRATE_VERSION 3

/* Host RAM available to a new allocation now (/proc/meminfo's MemAvailable), 0 if unknown. */
size_t calibrate_host_available_bytes(void);

struct ceilings {
    char key[160];           /* machine key: host, CPU model, threads, GPU */
    char cpu_model[96];      /* /proc/cpuinfo "model name" */
    int cpu_threads;         /* threads of the pool measured (one per physical core by default) */
    double cpu_read_gbps;    /* memory read bandwidth, all threads */
    double cpu_sgemm_gflops; /* OpenBLAS sgemm, square, all threads */
    double cpu_gemv1_gbps;   /* cpu_matmul bf16 m = 1: weight bytes per second */
    double cpu_gemv8_gbps;   /* cpu_matmul bf16 m = 8 (GEMV path): weight bytes per second */
    double cpu_mm16_gflops;  /* cpu_matmul bf16 m = 16 (GEMM path: convert + sgemm) */
    double cpu_mm64_gflops;  /* cpu_matmul bf16 m = 64 */
    double cpu_attn_gflops;  /* cpu_attention decode, 8 sequences of 512 tokens, GQA 5:1 */
    double cpu_dispatch_us;  /* one empty pool_parallel_for */
    bool gpu_measured;       /* false: the GPU figures below are stated, not measured */
    char gpu_name[96];
    double gpu_total_gib;      /* device memory (0 when not measured) */
    double gpu_hbm_gbps;       /* device-to-device copy, bytes read + written */
    double gpu_gemm_tflops;    /* bf16 GEMM 8192^3 */
    double pcie_h2d_gbps;      /* pinned host -> device, alone */
    double pcie_d2h_gbps;      /* pinned device -> host, alone */
    double pcie_h2d_busy_gbps; /* H2D while every CPU thread reads memory */
    double cpu_read_busy_gbps; /* CPU read bandwidth while H2D streams */
    double seconds;            /* how long the measurement took */
};

/* The GPU side of calibration, provided by code that links CUDA (calibrate_gpu.h). Every
 * function blocks. user is passed back unchanged. */
struct calibrate_gpu {
    void *user;
    /* Fills gpu_name, gpu_total_gib, gpu_hbm_gbps, gpu_gemm_tflops, pcie_h2d_gbps,
     * pcie_d2h_gbps. */
    enum tl_status (*measure)(void *user, struct ceilings *c, struct tl_err *err);
    /* Queues H2D copies from pinned memory totalling about `bytes` and returns at once. */
    enum tl_status (*h2d_start)(void *user, size_t bytes, struct tl_err *err);
    /* True while the copies queued by h2d_start run. */
    bool (*h2d_busy)(void *user);
    /* Waits for them; *gbps is their rate as the GPU timed it. */
    enum tl_status (*h2d_finish)(void *user, double *gbps, struct tl_err *err);
    /* "NVIDIA H100 80GB HBM3": for the cache key without measuring anything. */
    enum tl_status (*name)(void *user, char *buf, size_t n, struct tl_err *err);
};

/* GPU figures to assume where there is no GPU to measure; any field <= 0 takes the RTX 4090's
 * (1,008 GB/s HBM, 165 TFLOP/s bf16 dense with fp32 accumulate, 25 GB/s effective PCIe 4.0
 * x16 H2D and D2H; the CPU read bandwidth is assumed undisturbed by DMA). */
struct calibrate_assume {
    const char *gpu_name; /* NULL: "assumed GPU" */
    double hbm_gbps, gemm_tflops, pcie_gbps;
};

struct calibrate_opts {
    int threads;                     /* CPU threads, 0 = one per physical core */
    bool recalibrate;                /* measure even when a cached file exists */
    const char *cache_dir;           /* NULL: $XDG_CACHE_HOME/tierlm or ~/.cache/tierlm */
    const struct calibrate_gpu *gpu; /* NULL: no GPU (use assume) */
    struct calibrate_assume assume;  /* used when gpu is NULL; also overrides measured figures
                                        field by field when > 0 */
    bool quiet;                      /* no progress line on stderr */
};

/* Fills *out from the cache when it holds this machine's ceilings (and !recalibrate), else
 * measures and writes the cache (a cache that cannot be written is not an error: the message
 * goes to stderr unless quiet). *from_cache tells which. Blocks for up to ~2 s when measuring. */
enum tl_status calibrate_get(const struct calibrate_opts *o, struct ceilings *out, bool *from_cache,
                             struct tl_err *err);

/* Measures the CPU figures only (threads as in calibrate_opts). Blocks ~1 s. */
enum tl_status calibrate_measure_cpu(int threads, struct ceilings *c, struct tl_err *err);

/* Fills the GPU fields from a (missing fields: the RTX 4090's), gpu_measured false. */
void calibrate_assume_gpu(const struct calibrate_assume *a, struct ceilings *c);

/* Stated figures (fields > 0 of a) replace the ones in c, field by field. */
void calibrate_apply_stated(const struct calibrate_assume *a, struct ceilings *c);

/* Writes c as JSON to path / reads it back (TL_ERR_FORMAT for another version or a field
 * missing). */
enum tl_status calibrate_save(const struct ceilings *c, const char *path, struct tl_err *err);
enum tl_status calibrate_load(const char *path, struct ceilings *c, struct tl_err *err);

/* The cache file's path for this machine (the directory from o, the key from the host, CPU,
 * threads and GPU name). */
enum tl_status calibrate_cache_path(const struct calibrate_opts *o, char *buf, size_t n,
                                    struct tl_err *err);

#endif
