/* bench_gpu_matmul: kern_matmul's paths against the memory ceilings of the same run, at the
 * decode shapes of a 14B model (DeepSeek-R1-Distill-Qwen-14B: hidden 5120, 40 / 8 heads of 128,
 * intermediate 13824, vocab 152064), BF16.
 *   1. Ceilings: HBM copy (cudaMemcpy D2D of 1 GiB, bytes read + written) and HBM read: the
 *      best of six read-and-xor kernels over 1 GiB (4 or 8 16-byte loads in flight per thread,
 *      with and without the L2::256B hint the GEMV uses), compiled at run time with NVRTC since
 *      this file is C; each the median of 10.
 *   2. For q/k/v (grouped), o, gate/up (grouped), down and lm_head and m = 1..64: the GEMV,
 *      cuBLAS, the wide path and its 16-rows-a-warp variant (each forced: kern_matmul_force_path
 *      1, 2, 3, 4), each the median of 50 calls timed one per CUDA event pair on the context's
 *      stream after 5 warm-up calls, and the median of 15 groups of 8 calls back to back (b2b);
 *      calls rotate over enough weight copies (>= 256 MiB) that the weights stream from HBM
 *      rather than the 50 MB L2. GB/s counts the weight bytes once per call (a forced GEMV
 *      above m = 16 reads them once per 16 rows). Each path's output is compared with cuBLAS's
 *      (relative L2) as a sanity check.
 *   3. One decoder layer's matmuls at m = 1, 16, 32 and 64 (q/k/v + o + gate/up + down,
 *      automatic path), as a stream of calls and as a replayed CUDA graph, and the whole
 *      token's matmul floor at each m.
 * The GEMV variants tried on the way (and what each gained) are listed at the top of
 * kernels/kern_matmul.cu. Prints a short table last. Usage: bench_gpu_matmul [--reps N] */
#include <cuda.h>
#include <cuda_runtime.h>
#include <math.h>
#include <nvrtc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "kern.h"
#include "kern_matmul.h"

#define WARMUP    5
#define MAX_REPS  200
#define ROTATE_MB 256.0 /* weight bytes rotated over, well past the L2 */
#define ACT       TL_DTYPE_BF16
#define N_M       11
#define N_PATHS   4 /* forced paths 1..4: GEMV, cuBLAS, wide, wide16 */
#define N_LAYER_M 4

static const int ms[N_M] = {1, 2, 4, 8, 12, 16, 17, 24, 32, 48, 64};
static const char *const path_names[N_PATHS] = {"gemv", "cublas", "wide", "wide16"};
static const int layer_ms[N_LAYER_M] = {1, 16, 32, 64};
static int reps = 50;

static const double GB = 1e9;

#define CHECK_CUDA(STMT)                                                                           \
    do {                                                                                           \
        cudaError_t e_ = (STMT);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #STMT, cudaGetErrorString(e_)); \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_TL(CTX, STMT)                                                                        \
    do {                                                                                           \
        enum tl_status s_ = (STMT);                                                                \
        if (s_ != TL_OK) {                                                                         \
            fprintf(stderr, "%s:%d: %s: %s: %s\n", __FILE__, __LINE__, #STMT, tl_status_str(s_),   \
                    kern_last_error(CTX));                                                         \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static float median_f(float *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_f);
    return n % 2 ? v[n / 2] : 0.5f * (v[n / 2 - 1] + v[n / 2]);
}

/* Median milliseconds of one call of fn(arg, i) over `n` calls (after `warm` untimed ones),
 * each bracketed by events on stream s; i counts up so fn can rotate over copies. */
typedef void (*call_fn)(void *arg, int i);

static float time_calls(cudaStream_t s, call_fn fn, void *arg, int warm, int n) {
    static cudaEvent_t ev[MAX_REPS + 1];
    static bool made;
    float ms_each[MAX_REPS];
    if (!made) {
        for (int i = 0; i <= MAX_REPS; i++) CHECK_CUDA(cudaEventCreate(&ev[i]));
        made = true;
    }
    for (int i = 0; i < warm; i++) fn(arg, i);
    CHECK_CUDA(cudaEventRecord(ev[0], s));
    for (int i = 0; i < n; i++) {
        fn(arg, warm + i);
        CHECK_CUDA(cudaEventRecord(ev[i + 1], s));
    }
    CHECK_CUDA(cudaEventSynchronize(ev[n]));
    for (int i = 0; i < n; i++) CHECK_CUDA(cudaEventElapsedTime(&ms_each[i], ev[i], ev[i + 1]));
    return median_f(ms_each, n);
}

/* ---------------- ceilings ---------------- */

struct copy_arg {
    void *dst;
    const void *src;
    size_t bytes;
    cudaStream_t s;
};

static void do_copy(void *arg, int i) {
    struct copy_arg *a = arg;
    (void)i;
    CHECK_CUDA(cudaMemcpyAsync(a->dst, a->src, a->bytes, cudaMemcpyDeviceToDevice, a->s));
}

/* Two read kernels: 4 and 8 independent 16-byte loads per thread per step. */
static const char read_src[] =
    "extern \"C\" __global__ void read4(const uint4 *__restrict__ p, unsigned long long n,\n"
    "                                  unsigned *out) {\n"
    "  unsigned long long s = (unsigned long long)gridDim.x * blockDim.x;\n"
    "  unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
    "  unsigned acc = 0;\n"
    "  for (; i + 3 * s < n; i += 4 * s) {\n"
    "    uint4 a = __ldg(p + i), b = __ldg(p + i + s), c = __ldg(p + i + 2 * s),\n"
    "          d = __ldg(p + i + 3 * s);\n"
    "    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^\n"
    "           d.y ^ d.z ^ d.w;\n"
    "  }\n"
    "  for (; i < n; i += s) { uint4 a = __ldg(p + i); acc ^= a.x ^ a.y ^ a.z ^ a.w; }\n"
    "  if (acc == 0x9e3779b9u) *out = acc;\n"
    "}\n"
    "extern \"C\" __global__ void read8(const uint4 *__restrict__ p, unsigned long long n,\n"
    "                                  unsigned *out) {\n"
    "  unsigned long long s = (unsigned long long)gridDim.x * blockDim.x;\n"
    "  unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
    "  unsigned acc = 0;\n"
    "  for (; i + 7 * s < n; i += 8 * s) {\n"
    "    uint4 v[8];\n"
    "#pragma unroll\n"
    "    for (int j = 0; j < 8; j++) v[j] = __ldg(p + i + j * s);\n"
    "#pragma unroll\n"
    "    for (int j = 0; j < 8; j++) acc ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;\n"
    "  }\n"
    "  for (; i < n; i += s) { uint4 a = __ldg(p + i); acc ^= a.x ^ a.y ^ a.z ^ a.w; }\n"
    "  if (acc == 0x9e3779b9u) *out = acc;\n"
    "}\n"
    "__device__ __forceinline__ uint4 ld256(const uint4 *p) {\n"
    "  uint4 v;\n"
    "  asm volatile(\"ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];\"\n"
    "               : \"=r\"(v.x), \"=r\"(v.y), \"=r\"(v.z), \"=r\"(v.w) : \"l\"(p));\n"
    "  return v;\n"
    "}\n"
    "extern \"C\" __global__ void read4h(const uint4 *__restrict__ p, unsigned long long n,\n"
    "                                   unsigned *out) {\n"
    "  unsigned long long s = (unsigned long long)gridDim.x * blockDim.x;\n"
    "  unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
    "  unsigned acc = 0;\n"
    "  for (; i + 3 * s < n; i += 4 * s) {\n"
    "    uint4 a = ld256(p + i), b = ld256(p + i + s), c = ld256(p + i + 2 * s),\n"
    "          d = ld256(p + i + 3 * s);\n"
    "    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^\n"
    "           d.y ^ d.z ^ d.w;\n"
    "  }\n"
    "  for (; i < n; i += s) { uint4 a = ld256(p + i); acc ^= a.x ^ a.y ^ a.z ^ a.w; }\n"
    "  if (acc == 0x9e3779b9u) *out = acc;\n"
    "}\n";

struct read_arg {
    CUfunction f;
    const void *p;
    unsigned long long n16; /* 16-byte vectors */
    unsigned *out;
    unsigned blocks;
    cudaStream_t s;
};

static void do_read(void *arg, int i) {
    struct read_arg *a = arg;
    void *params[] = {&a->p, &a->n16, &a->out};
    (void)i;
    CUresult r = cuLaunchKernel(a->f, a->blocks, 1, 1, 256, 1, 1, 0, (CUstream)a->s, params, NULL);
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "cuLaunchKernel failed: %d\n", (int)r);
        exit(1);
    }
}

/* Compiles read_src for this device; fills f4 / f8. */
static void compile_read(int cc_major, int cc_minor, CUmodule *mod, CUfunction *f4, CUfunction *f8,
                         CUfunction *f4h) {
    nvrtcProgram prog;
    char arch[64];
    snprintf(arch, sizeof arch, "--gpu-architecture=sm_%d%d", cc_major, cc_minor);
    const char *opts[] = {arch};
    if (nvrtcCreateProgram(&prog, read_src, "read.cu", 0, NULL, NULL) != NVRTC_SUCCESS) exit(1);
    nvrtcResult rc = nvrtcCompileProgram(prog, 1, opts);
    if (rc != NVRTC_SUCCESS) {
        size_t n = 0;
        nvrtcGetProgramLogSize(prog, &n);
        char *log = malloc(n + 1);
        if (log) {
            nvrtcGetProgramLog(prog, log);
            fprintf(stderr, "nvrtc: %s\n%s\n", nvrtcGetErrorString(rc), log);
        }
        exit(1);
    }
    size_t n = 0;
    nvrtcGetCUBINSize(prog, &n);
    char *cubin = malloc(n);
    if (!cubin || nvrtcGetCUBIN(prog, cubin) != NVRTC_SUCCESS) exit(1);
    nvrtcDestroyProgram(&prog);
    if (cuModuleLoadData(mod, cubin) != CUDA_SUCCESS ||
        cuModuleGetFunction(f4, *mod, "read4") != CUDA_SUCCESS ||
        cuModuleGetFunction(f8, *mod, "read8") != CUDA_SUCCESS ||
        cuModuleGetFunction(f4h, *mod, "read4h") != CUDA_SUCCESS) {
        fprintf(stderr, "loading the read kernels failed\n");
        exit(1);
    }
    free(cubin);
}

/* ---------------- weights ---------------- */

struct shape {
    const char *name;
    int n_w;
    int rows[3];
    int k;
};

static const struct shape shapes[] = {
    {"qkv", 3, {5120, 1024, 1024}, 5120}, {"o", 1, {5120}, 5120},
    {"gate_up", 2, {13824, 13824}, 5120}, {"down", 1, {5120}, 13824},
    {"lm_head", 1, {152064}, 5120},
};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])

/* n_copies copies of one shape's weights (device, random bf16), and x / y for m up to 64. */
struct wset {
    const struct shape *sh;
    int n_copies;
    struct tl_tensor w[16][3];
    void *y[3];   /* (64, rows) each */
    void *x;      /* (64, k) */
    size_t bytes; /* weight bytes of one copy */
};

static void *pinned_rand; /* random bf16 values to tile device buffers with */
static const size_t RAND_BYTES = 32u << 20;

static void fill_device(struct kern_ctx *ctx, void *dev, size_t bytes) {
    for (size_t off = 0; off < bytes; off += RAND_BYTES) {
        size_t n = bytes - off < RAND_BYTES ? bytes - off : RAND_BYTES;
        CHECK_TL(ctx, kern_upload(ctx, (char *)dev + off, pinned_rand, n));
    }
}

/* At least min_copies copies, and enough for rotate_bytes in all (at most 16). */
static void wset_alloc(struct kern_ctx *ctx, const struct shape *sh, int min_copies,
                       double rotate_bytes, struct wset *ws) {
    memset(ws, 0, sizeof *ws);
    ws->sh = sh;
    for (int p = 0; p < sh->n_w; p++) ws->bytes += (size_t)sh->rows[p] * sh->k * 2;
    ws->n_copies = (int)ceil(rotate_bytes / (double)ws->bytes);
    if (ws->n_copies < min_copies) ws->n_copies = min_copies;
    if (ws->n_copies > 16) ws->n_copies = 16;
    for (int c = 0; c < ws->n_copies; c++)
        for (int p = 0; p < sh->n_w; p++) {
            size_t b = (size_t)sh->rows[p] * sh->k * 2;
            void *d;
            CHECK_TL(ctx, kern_alloc(ctx, b, &d));
            fill_device(ctx, d, b);
            ws->w[c][p] = (struct tl_tensor){ACT, sh->rows[p], sh->k, d};
        }
    for (int p = 0; p < sh->n_w; p++)
        CHECK_TL(ctx, kern_alloc(ctx, (size_t)64 * sh->rows[p] * 2, &ws->y[p]));
    CHECK_TL(ctx, kern_alloc(ctx, (size_t)64 * sh->k * 2, &ws->x));
    fill_device(ctx, ws->x, (size_t)64 * sh->k * 2);
    CHECK_TL(ctx, kern_sync(ctx));
}

static void wset_free(struct kern_ctx *ctx, struct wset *ws) {
    for (int c = 0; c < ws->n_copies; c++)
        for (int p = 0; p < ws->sh->n_w; p++) kern_free(ctx, (void *)ws->w[c][p].data);
    for (int p = 0; p < ws->sh->n_w; p++) kern_free(ctx, ws->y[p]);
    kern_free(ctx, ws->x);
}

struct mm_arg {
    struct kern_ctx *ctx;
    struct wset *ws;
    int m;
};

static void do_matmul(void *arg, int i) {
    struct mm_arg *a = arg;
    struct wset *ws = a->ws;
    const struct tl_tensor *w[3];
    int c = i % ws->n_copies;
    for (int p = 0; p < ws->sh->n_w; p++) w[p] = &ws->w[c][p];
    CHECK_TL(a->ctx, kern_matmul(a->ctx, ACT, ws->x, a->m, ws->sh->n_w, w, NULL, ws->y));
}

/* Relative L2 distance between forced path `path`'s outputs and cuBLAS's for copy 0 at m. */
static double check_path(struct kern_ctx *ctx, struct wset *ws, int m, int path) {
    double num = 0, den = 0;
    for (int p = 0; p < ws->sh->n_w; p++) {
        size_t n = (size_t)m * ws->sh->rows[p];
        uint16_t *h[2];
        float *f[2];
        for (int j = 0; j < 2; j++) {
            struct mm_arg a = {ctx, ws, m};
            kern_matmul_force_path(j == 0 ? path : 2);
            do_matmul(&a, 0);
            h[j] = malloc(n * 2);
            f[j] = malloc(n * sizeof(float));
            if (!h[j] || !f[j]) exit(1);
            CHECK_TL(ctx, kern_download(ctx, h[j], ws->y[p], n * 2));
            CHECK_TL(ctx, kern_sync(ctx));
            dtype_to_f32(ACT, h[j], f[j], n);
        }
        kern_matmul_force_path(0);
        for (size_t i = 0; i < n; i++) {
            double d = (double)f[0][i] - f[1][i];
            if (!isfinite(f[0][i]) || !isfinite(f[1][i])) return INFINITY;
            num += d * d;
            den += (double)f[1][i] * f[1][i];
        }
        for (int j = 0; j < 2; j++) free(h[j]), free(f[j]);
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---------------- one decoder layer ---------------- */

struct layer_arg {
    struct kern_ctx *ctx;
    struct wset *ws[4]; /* qkv, o, gate_up, down: same n_copies */
    int n_copies;
    int m;
};

static void do_layer(void *arg, int i) {
    struct layer_arg *a = arg;
    for (int s = 0; s < 4; s++) {
        struct mm_arg m = {a->ctx, a->ws[s], a->m};
        do_matmul(&m, i % a->n_copies);
    }
}

struct graph_arg {
    cudaGraphExec_t exec;
    cudaStream_t s;
};

static void do_graph(void *arg, int i) {
    struct graph_arg *a = arg;
    (void)i;
    CHECK_CUDA(cudaGraphLaunch(a->exec, a->s));
}

/* 8 calls back to back between two events: what a stream of matmuls sees (launch gaps, and the
 * GEMV's programmatic dependent launch overlapping the previous call's tail). */

struct batch_arg {
    struct mm_arg *mm;
    int n;
};

static void do_batch(void *arg, int i) {
    struct batch_arg *b = arg;
    for (int j = 0; j < b->n; j++) do_matmul(b->mm, i * b->n + j);
}

/* ---------------- main ---------------- */

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
            if (reps < 1 || reps > MAX_REPS) reps = 50;
        } else {
            fprintf(stderr, "usage: %s [--reps N]\n", argv[0]);
            return 2;
        }
    }
    struct tl_err why = {{0}};
    if (kern_device_probe(&why) == 0) {
        printf("skip: %s\n", why.msg);
        return 77;
    }
    struct kern_ctx *ctx;
    struct tl_err err;
    if (kern_ctx_create(0, &ctx, &err) != TL_OK) {
        fprintf(stderr, "kern_ctx_create: %s\n", err.msg);
        return 1;
    }
    struct kern_device_info info;
    CHECK_TL(ctx, kern_device_info(ctx, &info));
    cudaStream_t s = (cudaStream_t)kern_ctx_stream(ctx);
    printf("device: %s, cc %d.%d, %d SMs, L2 %.0f MB, %.1f GiB free\n", info.name, info.cc_major,
           info.cc_minor, info.sm_count, (double)info.l2_bytes / 1e6,
           (double)info.free_bytes / (1 << 30));

    CHECK_TL(ctx, kern_host_alloc(ctx, RAND_BYTES, &pinned_rand));
    {
        uint16_t *h = pinned_rand;
        uint64_t st = 0x9e3779b97f4a7c15ull;
        for (size_t i = 0; i < RAND_BYTES / 2; i++) {
            st ^= st << 13, st ^= st >> 7, st ^= st << 17;
            float v = ((float)(st >> 40) * (2.0f / 16777216.0f) - 1.0f) * 0.03f;
            h[i] = f32_to_bf16(v);
        }
    }

    /* 1. ceilings */
    const size_t GIB = (size_t)1 << 30;
    void *a_buf, *b_buf;
    unsigned *sink;
    CHECK_TL(ctx, kern_alloc(ctx, GIB, &a_buf));
    CHECK_TL(ctx, kern_alloc(ctx, GIB, &b_buf));
    CHECK_TL(ctx, kern_alloc(ctx, 256, (void **)&sink));
    fill_device(ctx, a_buf, GIB);
    CHECK_TL(ctx, kern_sync(ctx));
    struct copy_arg ca = {b_buf, a_buf, GIB, s};
    float t_copy = time_calls(s, do_copy, &ca, 2, 10);
    double copy_gbs = 2.0 * (double)GIB / (t_copy * 1e-3) / GB;

    CUmodule mod;
    CUfunction f4, f8, f4h;
    compile_read(info.cc_major, info.cc_minor, &mod, &f4, &f8, &f4h);
    double read_gbs = 0;
    const char *read_best = "";
    float t_read[6];
    const char *read_names[6] = {"read4 x8 blocks/SM", "read4 x16",         "read8 x8",
                                 "read8 x16",          "read4 L2::256B x8", "read4 L2::256B x16"};
    for (int v = 0; v < 6; v++) {
        struct read_arg ra = {v < 2   ? f4
                              : v < 4 ? f8
                                      : f4h,
                              a_buf,
                              GIB / 16,
                              sink,
                              (unsigned)info.sm_count * (v % 2 ? 16u : 8u),
                              s};
        t_read[v] = time_calls(s, do_read, &ra, 2, 10);
        double g = (double)GIB / (t_read[v] * 1e-3) / GB;
        printf("read ceiling %-20s %.3f ms  %.0f GB/s\n", read_names[v], t_read[v], g);
        if (g > read_gbs) read_gbs = g, read_best = read_names[v];
    }
    printf("copy ceiling (D2D 1 GiB, read + write): %.3f ms  %.0f GB/s\n", t_copy, copy_gbs);
    printf("read ceiling (best: %s): %.0f GB/s\n\n", read_best, read_gbs);
    kern_free(ctx, b_buf);

    /* 2. shapes x m x path */
    static float t_us[N_SHAPES][N_M][N_PATHS], t_b2b[N_SHAPES][N_M][N_PATHS];
    static double diff[N_SHAPES][N_M][N_PATHS];
    for (int si = 0; si < N_SHAPES; si++) {
        struct wset ws;
        wset_alloc(ctx, &shapes[si], 2, ROTATE_MB * 1e6, &ws);
        printf("%s: %.1f MB of weights, rotating over %d copies\n", shapes[si].name,
               (double)ws.bytes / 1e6, ws.n_copies);
        for (int mi = 0; mi < N_M; mi++) {
            struct mm_arg a = {ctx, &ws, ms[mi]};
            printf("  m=%-3d", ms[mi]);
            for (int pi = 0; pi < N_PATHS; pi++) {
                kern_matmul_force_path(pi + 1);
                struct batch_arg b = {&a, 8};
                t_us[si][mi][pi] = 1e3f * time_calls(s, do_matmul, &a, WARMUP, reps);
                t_b2b[si][mi][pi] = 1e3f * time_calls(s, do_batch, &b, 2, 15) / 8;
                kern_matmul_force_path(0);
                diff[si][mi][pi] = pi == 1 ? 0.0 : check_path(ctx, &ws, ms[mi], pi + 1);
                printf("  %s %8.1f us %5.0f GB/s", path_names[pi], t_us[si][mi][pi],
                       (double)ws.bytes / (t_us[si][mi][pi] * 1e-6) / GB);
            }
            printf("\n");
        }
        wset_free(ctx, &ws);
    }

    /* 3. one decoder layer at m = layer_ms[], automatic path */
    struct wset lw[4];
    struct layer_arg la = {ctx, {&lw[0], &lw[1], &lw[2], &lw[3]}, 4, 1};
    size_t layer_bytes = 0;
    float t_layer[N_LAYER_M], t_graph[N_LAYER_M];
    for (int sidx = 0; sidx < 4; sidx++) {
        /* 4 copies of every part: 2.2 GB per rotation */
        wset_alloc(ctx, &shapes[sidx], 4, 0, &lw[sidx]);
        layer_bytes += lw[sidx].bytes;
    }
    for (int sidx = 0; sidx < 4; sidx++)
        if (lw[sidx].n_copies < la.n_copies) la.n_copies = lw[sidx].n_copies;
    for (int li = 0; li < N_LAYER_M; li++) {
        la.m = layer_ms[li];
        t_layer[li] = 1e3f * time_calls(s, do_layer, &la, WARMUP, reps);

        /* The same as a graph: 2 * n_copies layers per replay. */
        cudaGraph_t graph;
        struct graph_arg ga = {NULL, s};
        int graph_layers = 2 * la.n_copies;
        CHECK_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        for (int i = 0; i < graph_layers; i++) do_layer(&la, i);
        CHECK_CUDA(cudaStreamEndCapture(s, &graph));
        CHECK_CUDA(cudaGraphInstantiate(&ga.exec, graph, 0));
        t_graph[li] = 1e3f * time_calls(s, do_graph, &ga, 3, reps < 20 ? reps : 20) / graph_layers;
        CHECK_CUDA(cudaGraphExecDestroy(ga.exec));
        CHECK_CUDA(cudaGraphDestroy(graph));
    }
    for (int sidx = 0; sidx < 4; sidx++) wset_free(ctx, &lw[sidx]);

    /* ---------------- the table ---------------- */
    printf("\n=== kern_matmul, %s, BF16 (ceilings: read %.0f GB/s, copy %.0f GB/s) ===\n",
           info.name, read_gbs, copy_gbs);
    printf("per path: us of one call (one call per event pair), /read = GB/s of weights over the "
           "read ceiling, b2b = the same for 8 calls back to back; auto = what the automatic "
           "choice runs\n");
    printf("%-8s %3s", "shape", "m");
    for (int pi = 0; pi < N_PATHS; pi++) printf(" | %6s us  /read   b2b", path_names[pi]);
    printf(" | fastest\n");
    for (int si = 0; si < N_SHAPES; si++) {
        size_t bytes = 0;
        for (int p = 0; p < shapes[si].n_w; p++)
            bytes += (size_t)shapes[si].rows[p] * shapes[si].k * 2;
        for (int mi = 0; mi < N_M; mi++) {
            int best = 0;
            bool disagree = false;
            printf("%-8s %3d", shapes[si].name, ms[mi]);
            for (int pi = 0; pi < N_PATHS; pi++) {
                double g = (double)bytes / (t_us[si][mi][pi] * 1e-6) / GB;
                double b = (double)bytes / (t_b2b[si][mi][pi] * 1e-6) / GB;
                printf(" | %9.1f %5.3f %5.3f", t_us[si][mi][pi], g / read_gbs, b / read_gbs);
                if (t_us[si][mi][pi] < t_us[si][mi][best]) best = pi;
                disagree |= diff[si][mi][pi] > 1e-2;
            }
            printf(" | %s%s\n", path_names[best], disagree ? "  PATHS DISAGREE" : "");
        }
    }
    size_t lm_bytes = (size_t)152064 * 5120 * 2;
    for (int li = 0; li < N_LAYER_M; li++) {
        int mi = 0;
        while (mi < N_M - 1 && ms[mi] != layer_ms[li]) mi++;
        float t_lm = t_us[N_SHAPES - 1][mi][0];
        for (int pi = 1; pi < N_PATHS; pi++)
            if (t_us[N_SHAPES - 1][mi][pi] < t_lm) t_lm = t_us[N_SHAPES - 1][mi][pi];
        double lg = (double)layer_bytes / (t_layer[li] * 1e-6) / GB;
        double lgg = (double)layer_bytes / (t_graph[li] * 1e-6) / GB;
        double tok_bytes = 48.0 * (double)layer_bytes + (double)lm_bytes;
        double tok_us = 48.0 * t_graph[li] + t_lm;
        printf("m=%-2d layer (qkv+o+gate_up+down, %.0f MB, auto): stream %.1f us (%.3f of read), "
               "graph %.1f us (%.3f of read); lm_head (fastest path) %.1f us (%.3f of read)\n",
               layer_ms[li], (double)layer_bytes / 1e6, t_layer[li], lg / read_gbs, t_graph[li],
               lgg / read_gbs, t_lm, (double)lm_bytes / (t_lm * 1e-6) / GB / read_gbs);
        printf("m=%-2d token's matmuls, 48 layers (graph) + lm_head: %.2f ms for %.2f GB; read "
               "floor %.2f ms -> %.3f of the floor\n",
               layer_ms[li], tok_us / 1e3, tok_bytes / GB, tok_bytes / (read_gbs * GB) * 1e3,
               tok_bytes / (read_gbs * GB) / (tok_us * 1e-6));
    }

    kern_free(ctx, a_buf);
    kern_free(ctx, sink);
    kern_host_free(ctx, pinned_rand);
    cuModuleUnload(mod);
    kern_ctx_destroy(ctx);
    return 0;
}
