/* calibrate: times each ceiling as the median of a few repeats after a warm-up, on buffers
 * larger than any last-level cache so the figures are memory figures. One 512 MiB buffer serves
 * the read-bandwidth passes and, as three 13824 x 5120 bf16 matrices (a 14B MLP projection), the
 * cpu_matmul probes; the cache file is JSON (jansson). Owns everything it allocates; frees it
 * before returning. */
#include "calibrate.h"

#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "attention.h"
#include "clock.h"
#include "dtype.h"
#include "matmul.h"
#include "model.h"
#include "pool.h"

/* The probes' buffer is larger than the last-level caches of the hosts we meet (the H100
 * host's ~300 MiB L3 held most of 3 rotated weight copies: the GEMV probe read 120 GB/s where
 * the engine's CPU layers streamed theirs at ~91), and the GEMV rotates over 7 copies in it. */
#define BUF_BYTES    ((size_t)1 << 30)
#define PROBE_ROWS   13824
#define PROBE_COLS   5120
#define PROBE_COPIES 7
#define SGEMM_N      1536

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---------------- memory read bandwidth ---------------- */

static volatile uint64_t read_sink;

struct read_args {
    const uint64_t *buf;
    uint64_t sums[256]; /* per thread, so the loads cannot be optimised away */
};

#if defined(__x86_64__)
/* 256-bit loads into four independent accumulators: the widest plain read a core issues, as
 * the AVX2 GEMV reads, so the figure is the GEMV's ceiling (bench_cpu measures it the same). */
__attribute__((target("avx2"))) static void read_avx2(struct read_args *a, int64_t b, int64_t e,
                                                      int tid) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t i = b; i + 16 <= e; i += 16) {
        s0 = _mm256_xor_si256(s0, _mm256_load_si256((const __m256i *)(a->buf + i)));
        s1 = _mm256_xor_si256(s1, _mm256_load_si256((const __m256i *)(a->buf + i + 4)));
        s2 = _mm256_xor_si256(s2, _mm256_load_si256((const __m256i *)(a->buf + i + 8)));
        s3 = _mm256_xor_si256(s3, _mm256_load_si256((const __m256i *)(a->buf + i + 12)));
    }
    s0 = _mm256_xor_si256(_mm256_xor_si256(s0, s1), _mm256_xor_si256(s2, s3));
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)out, s0);
    a->sums[tid & 255] += out[0] ^ out[1] ^ out[2] ^ out[3];
}
#endif

static void read_task(void *arg, int64_t b, int64_t e, int tid) {
    struct read_args *a = arg;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) {
        read_avx2(a, b, e, tid);
        return;
    }
#endif
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int64_t i = b; i + 4 <= e; i += 4)
        s0 ^= a->buf[i], s1 ^= a->buf[i + 1], s2 ^= a->buf[i + 2], s3 ^= a->buf[i + 3];
    a->sums[tid & 255] += s0 ^ s1 ^ s2 ^ s3;
}

struct fill_args {
    uint16_t *p;
};

/* Small finite bf16 values (|x| < 0.5): real-looking weights for the matmul probes. */
static void fill_task(void *arg, int64_t b, int64_t e, int tid) {
    (void)tid;
    uint16_t *p = ((struct fill_args *)arg)->p;
    for (int64_t i = b; i < e; i++) {
        uint32_t h = (uint32_t)i * 2654435761u;
        h ^= h >> 15;
        p[i] = f32_to_bf16((float)(h & 0xffff) / 131072.0f - 0.25f);
    }
}

static double read_pass(struct pool *pool, struct read_args *a, size_t bytes) {
    double t0 = tl_now_s();
    pool_parallel_for(pool, (int64_t)(bytes / 8), 1 << 16, read_task, a);
    return tl_now_s() - t0;
}

static double read_bandwidth(struct pool *pool, struct read_args *a) {
    double t[5];
    read_pass(pool, a, BUF_BYTES);
    for (int r = 0; r < 5; r++) t[r] = read_pass(pool, a, BUF_BYTES);
    return (double)BUF_BYTES / median(t, 5) / 1e9;
}

/* ---------------- GEMM / matmul / attention / dispatch ---------------- */

static double sgemm_gflops(void) {
    size_t nn = (size_t)SGEMM_N * SGEMM_N;
    float *a = malloc(nn * 4), *b = malloc(nn * 4), *c = malloc(nn * 4);
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return 0;
    }
    for (size_t i = 0; i < nn; i++) a[i] = (float)(i % 17) * 0.1f, b[i] = (float)(i % 13) * 0.2f;
    double t[3];
    for (int r = -1; r < 3; r++) {
        double t0 = tl_now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, SGEMM_N, SGEMM_N, SGEMM_N, 1.0f, a,
                    SGEMM_N, b, SGEMM_N, 0.0f, c, SGEMM_N);
        if (r >= 0) t[r] = tl_now_s() - t0;
    }
    free(a), free(b), free(c);
    return 2.0 * SGEMM_N * (double)SGEMM_N * SGEMM_N / median(t, 3) / 1e9;
}

/* Median seconds of cpu_matmul with m rows, each repeat on the next weight copy so the
 * weights come from memory. */
static double time_matmul(struct pool *pool, float *scratch, const float *x, int m,
                          const struct tl_tensor *w, float *y, int reps) {
    double t[8];
    /* as the CPU lane multiplies (cpu_backend_opts.bf16_acts) */
    const struct tl_tensor *w0 = &w[PROBE_COPIES - 1];
    cpu_matmul_group_bf16x(pool, scratch, x, m, 1, &w0, NULL, &y);
    for (int r = 0; r < reps; r++) {
        const struct tl_tensor *wr = &w[r % PROBE_COPIES];
        double t0 = tl_now_s();
        cpu_matmul_group_bf16x(pool, scratch, x, m, 1, &wr, NULL, &y);
        t[r] = tl_now_s() - t0;
    }
    return median(t, reps);
}

static enum tl_status probe_matmul(struct pool *pool, const uint16_t *weights, struct ceilings *c,
                                   struct tl_err *err) {
    const int64_t n = PROBE_ROWS, k = PROBE_COLS;
    float *x = malloc((size_t)k * 64 * 4), *y = malloc((size_t)n * 64 * 4);
    float *scratch = malloc(MATMUL_SCRATCH_FLOATS * 4);
    if (!x || !y || !scratch) {
        free(x), free(y), free(scratch);
        return tl_fail(err, TL_ERR_NOMEM, "calibration: out of host memory");
    }
    for (int64_t i = 0; i < k * 64; i++) x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    struct tl_tensor w[PROBE_COPIES];
    for (int i = 0; i < PROBE_COPIES; i++)
        w[i] = (struct tl_tensor){TL_DTYPE_BF16, n, k, weights + (size_t)i * (size_t)(n * k)};
    double bytes = (double)n * (double)k * 2, params = (double)n * (double)k;
    c->cpu_gemv1_gbps = bytes / time_matmul(pool, scratch, x, 1, w, y, 7) / 1e9;
    c->cpu_gemv8_gbps = bytes / time_matmul(pool, scratch, x, 8, w, y, 5) / 1e9;
    c->cpu_mm16_gflops = 2 * 16 * params / time_matmul(pool, scratch, x, 16, w, y, 3) / 1e9;
    c->cpu_mm64_gflops = 2 * 64 * params / time_matmul(pool, scratch, x, 64, w, y, 3) / 1e9;
    free(x), free(y), free(scratch);
    return TL_OK;
}

/* Decode attention of 8 sequences of 512 cached tokens, 40 q / 8 kv heads of 128 (the 14B's
 * shape), fp32 cache as cpu/ keeps it. */
static enum tl_status probe_attention(struct pool *pool, struct ceilings *c, struct tl_err *err) {
    enum { S = 8, CTX = 512, H = 40, KVH = 8, HD = 128, BS = 16, NB = S * CTX / BS };
    size_t cache_floats = (size_t)NB * BS * KVH * HD;
    float *kc = malloc(cache_floats * 4), *vc = malloc(cache_floats * 4);
    float *q = malloc((size_t)S * H * HD * 4), *out = malloc((size_t)S * H * HD * 4);
    struct attn_shape shape = {H, KVH, HD, BS};
    float *scratch = malloc(cpu_attention_scratch_floats(&shape, pool_size(pool)) * 4);
    int32_t *tables = malloc((size_t)NB * 4);
    if (!kc || !vc || !q || !out || !scratch || !tables) {
        free(kc), free(vc), free(q), free(out), free(scratch), free(tables);
        return tl_fail(err, TL_ERR_NOMEM, "calibration: out of host memory");
    }
    for (size_t i = 0; i < cache_floats; i++)
        kc[i] = (float)(i % 101) * 0.01f - 0.5f, vc[i] = (float)(i % 89) * 0.01f - 0.4f;
    for (size_t i = 0; i < (size_t)S * H * HD; i++) q[i] = (float)(i % 37) * 0.02f - 0.3f;
    for (int i = 0; i < NB; i++) tables[i] = (i * 7) % NB; /* scattered, as after churn */
    struct fwd_seq seqs[S];
    int32_t tokens[S], positions[S], tok_seq[S];
    for (int s = 0; s < S; s++) {
        seqs[s] = (struct fwd_seq){1, CTX - 1, tables + s * (CTX / BS), CTX / BS, 1};
        tokens[s] = 1, positions[s] = CTX - 1, tok_seq[s] = s;
    }
    struct fwd_batch b = {S, seqs, S, tokens, positions};
    double t[5];
    for (int r = -1; r < 5; r++) {
        double t0 = tl_now_s();
        cpu_attention(pool, &shape, &b, tok_seq, q, kc, vc, out, scratch);
        if (r >= 0) t[r] = tl_now_s() - t0;
    }
    c->cpu_attn_gflops = 4.0 * H * HD * (double)CTX * S / median(t, 5) / 1e9;
    free(kc), free(vc), free(q), free(out), free(scratch), free(tables);
    return TL_OK;
}

static void empty_task(void *arg, int64_t b, int64_t e, int tid) {
    (void)arg, (void)b, (void)e, (void)tid;
}

static double dispatch_us(struct pool *pool) {
    double t[201];
    for (int r = 0; r < 201; r++) {
        double t0 = tl_now_s();
        pool_parallel_for(pool, pool_size(pool), 1, empty_task, NULL);
        t[r] = tl_now_s() - t0;
    }
    return median(t, 201) * 1e6;
}

static void cpu_model_name(char *buf, size_t n) {
    snprintf(buf, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10)) continue;
        const char *v = strchr(line, ':');
        if (!v) break;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        snprintf(buf, n, "%s", v);
        buf[strcspn(buf, "\n")] = 0;
        break;
    }
    fclose(f);
}

/* Runs the CPU probes on `buf` (BUF_BYTES, filled) with a pool of `threads`; also the
 * concurrent CPU-read / H2D figures when gpu is given. */
static enum tl_status measure_all(int threads, const struct calibrate_gpu *gpu, struct ceilings *c,
                                  struct tl_err *err) {
    struct pool *pool;
    enum tl_status st = pool_create(threads, true, &pool, err);
    if (st != TL_OK) return st;
    uint64_t *buf = aligned_alloc(64, BUF_BYTES);
    if (!buf) {
        pool_destroy(pool);
        return tl_fail(err, TL_ERR_NOMEM, "calibration: no %zu MiB buffer", BUF_BYTES >> 20);
    }
    struct fill_args fa = {(uint16_t *)buf};
    pool_parallel_for(pool, (int64_t)(BUF_BYTES / 2), 1 << 16, fill_task, &fa);
    openblas_set_num_threads(pool_size(pool));
    c->cpu_threads = pool_size(pool);
    cpu_model_name(c->cpu_model, sizeof c->cpu_model);
    struct read_args ra = {buf, {0}};
    c->cpu_read_gbps = read_bandwidth(pool, &ra);
    c->cpu_sgemm_gflops = sgemm_gflops();
    c->cpu_dispatch_us = dispatch_us(pool);
    st = probe_matmul(pool, (const uint16_t *)buf, c, err);
    if (st == TL_OK) st = probe_attention(pool, c, err);
    if (st == TL_OK && gpu) {
        st = gpu->measure(gpu->user, c, err);
        c->gpu_measured = st == TL_OK;
    }
    if (st == TL_OK && gpu) {
        /* The CPU reads memory while the GPU pulls pinned memory over PCIe: both draw on the
         * same memory controllers, and the planner overlaps exactly these two. ~40 ms of copies
         * keep the window long enough for many CPU passes. */
        size_t bytes = (size_t)((c->pcie_h2d_gbps > 0 ? c->pcie_h2d_gbps : 25) * 40e6);
        st = gpu->h2d_start(gpu->user, bytes, err); /* returns once the copies are queued */
        double read_bytes = 0, t0 = tl_now_s(), t1 = t0;
        while (st == TL_OK && gpu->h2d_busy(gpu->user)) {
            read_pass(pool, &ra, BUF_BYTES / 4);
            read_bytes += (double)(BUF_BYTES / 4);
            t1 = tl_now_s();
        }
        double gbps = 0;
        if (st == TL_OK) st = gpu->h2d_finish(gpu->user, &gbps, err);
        c->pcie_h2d_busy_gbps = gbps;
        c->cpu_read_busy_gbps = t1 > t0 ? read_bytes / (t1 - t0) / 1e9 : c->cpu_read_gbps;
    }
    for (int i = 0; i < 256; i++) read_sink ^= ra.sums[i]; /* keeps the reads observable */
    free(buf);
    pool_destroy(pool);
    return st;
}

enum tl_status calibrate_measure_cpu(int threads, struct ceilings *c, struct tl_err *err) {
    double t0 = tl_now_s();
    enum tl_status st = measure_all(threads, NULL, c, err);
    c->seconds = tl_now_s() - t0;
    return st;
}

void calibrate_assume_gpu(const struct calibrate_assume *a, struct ceilings *c) {
    c->gpu_measured = false;
    snprintf(c->gpu_name, sizeof c->gpu_name, "%s",
             a->gpu_name ? a->gpu_name : "RTX 4090-class GPU");
    c->gpu_total_gib = 0;
    c->gpu_hbm_gbps = a->hbm_gbps > 0 ? a->hbm_gbps : 1008;
    c->gpu_gemm_tflops = a->gemm_tflops > 0 ? a->gemm_tflops : 165;
    c->pcie_h2d_gbps = a->pcie_gbps > 0 ? a->pcie_gbps : 25;
    c->pcie_d2h_gbps = c->pcie_h2d_gbps;
    c->pcie_h2d_busy_gbps = c->pcie_h2d_gbps;
    c->cpu_read_busy_gbps = c->cpu_read_gbps;
}

/* ---------------- cache ---------------- */

static uint32_t fnv1a(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static void machine_key(const struct calibrate_opts *o, const char *gpu_name, char *buf, size_t n) {
    char host[64] = "host", cpu[96];
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    cpu_model_name(cpu, sizeof cpu);
    int threads = o->threads > 0 ? o->threads : pool_physical_cores();
    snprintf(buf, n, "%s|%s|%d threads|%s", host, cpu, threads, gpu_name ? gpu_name : "no GPU");
}

static enum tl_status gpu_name_of(const struct calibrate_opts *o, char *buf, size_t n,
                                  struct tl_err *err) {
    buf[0] = 0;
    if (!o->gpu) return TL_OK;
    return o->gpu->name(o->gpu->user, buf, n, err);
}

enum tl_status calibrate_cache_path(const struct calibrate_opts *o, char *buf, size_t n,
                                    struct tl_err *err) {
    char gpu[96], key[160], host[64] = "host";
    enum tl_status st = gpu_name_of(o, gpu, sizeof gpu, err);
    if (st != TL_OK) return st;
    machine_key(o, o->gpu ? gpu : NULL, key, sizeof key);
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    for (char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            *p = '_';
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int w;
    if (o->cache_dir)
        w = snprintf(buf, n, "%s/ceilings-%s-%08x.json", o->cache_dir, host, fnv1a(key));
    else if (xdg && *xdg)
        w = snprintf(buf, n, "%s/tierlm/ceilings-%s-%08x.json", xdg, host, fnv1a(key));
    else if (home && *home)
        w = snprintf(buf, n, "%s/.cache/tierlm/ceilings-%s-%08x.json", home, host, fnv1a(key));
    else
        return tl_fail(err, TL_ERR_IO, "no cache directory: set XDG_CACHE_HOME or HOME");
    if (w < 0 || (size_t)w >= n) return tl_fail(err, TL_ERR_INVALID, "cache path too long");
    return TL_OK;
}

/* mkdir -p of the directory part of path. */
static void make_parent_dirs(const char *path) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        mkdir(tmp, 0755);
        *p = '/';
    }
}

#define NUM_FIELDS(X)                                                                              \
    X(cpu_read_gbps)                                                                               \
    X(cpu_sgemm_gflops)                                                                            \
    X(cpu_gemv1_gbps)                                                                              \
    X(cpu_gemv8_gbps)                                                                              \
    X(cpu_mm16_gflops)                                                                             \
    X(cpu_mm64_gflops)                                                                             \
    X(cpu_attn_gflops)                                                                             \
    X(cpu_dispatch_us)                                                                             \
    X(gpu_total_gib)                                                                               \
    X(gpu_hbm_gbps)                                                                                \
    X(gpu_gemm_tflops)                                                                             \
    X(pcie_h2d_gbps)                                                                               \
    X(pcie_d2h_gbps)                                                                               \
    X(pcie_h2d_busy_gbps)                                                                          \
    X(cpu_read_busy_gbps)                                                                          \
    X(seconds)

enum tl_status calibrate_save(const struct ceilings *c, const char *path, struct tl_err *err) {
    json_t *o = json_object();
    json_object_set_new(o, "version", json_integer(CALIBRATE_VERSION));
    json_object_set_new(o, "key", json_string(c->key));
    json_object_set_new(o, "cpu_model", json_string(c->cpu_model));
    json_object_set_new(o, "cpu_threads", json_integer(c->cpu_threads));
    json_object_set_new(o, "gpu_measured", json_boolean(c->gpu_measured));
    json_object_set_new(o, "gpu_name", json_string(c->gpu_name));
#define SET(f) json_object_set_new(o, #f, json_real(c->f));
    NUM_FIELDS(SET)
#undef SET
    make_parent_dirs(path);
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    int rc = json_dump_file(o, tmp, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(o);
    if (rc != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return tl_fail(err, TL_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    }
    return TL_OK;
}

enum tl_status calibrate_load(const char *path, struct ceilings *c, struct tl_err *err) {
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    if (!o) return tl_fail(err, TL_ERR_IO, "%s: %s (line %d)", path, je.text, je.line);
    enum tl_status st = TL_OK;
    memset(c, 0, sizeof *c);
    json_t *v = json_object_get(o, "version");
    const char *key = json_string_value(json_object_get(o, "key"));
    const char *cpu = json_string_value(json_object_get(o, "cpu_model"));
    const char *gpu = json_string_value(json_object_get(o, "gpu_name"));
    json_t *thr = json_object_get(o, "cpu_threads"), *gm = json_object_get(o, "gpu_measured");
    if (!json_is_integer(v) || json_integer_value(v) != CALIBRATE_VERSION) {
        st = tl_fail(err, TL_ERR_FORMAT, "%s: written by another version", path);
        goto done;
    }
    if (!key || !cpu || !gpu || !json_is_integer(thr) || !json_is_boolean(gm)) {
        st = tl_fail(err, TL_ERR_FORMAT, "%s: a field is missing", path);
        goto done;
    }
    snprintf(c->key, sizeof c->key, "%s", key);
    snprintf(c->cpu_model, sizeof c->cpu_model, "%s", cpu);
    snprintf(c->gpu_name, sizeof c->gpu_name, "%s", gpu);
    c->cpu_threads = (int)json_integer_value(thr);
    c->gpu_measured = json_is_true(gm);
#define GET(f)                                                                                     \
    if (st == TL_OK) {                                                                             \
        json_t *x = json_object_get(o, #f);                                                        \
        if (!json_is_number(x) || !isfinite(json_number_value(x)) || json_number_value(x) < 0)     \
            st = tl_fail(err, TL_ERR_FORMAT, "%s: field %s missing or not a number >= 0", path,    \
                         #f);                                                                      \
        else                                                                                       \
            c->f = json_number_value(x);                                                           \
    }
    NUM_FIELDS(GET)
#undef GET
done:
    json_decref(o);
    return st;
}

void calibrate_apply_stated(const struct calibrate_assume *a, struct ceilings *c) {
    if (a->hbm_gbps > 0) c->gpu_hbm_gbps = a->hbm_gbps;
    if (a->gemm_tflops > 0) c->gpu_gemm_tflops = a->gemm_tflops;
    if (a->pcie_gbps > 0) {
        c->pcie_h2d_gbps = c->pcie_d2h_gbps = a->pcie_gbps;
        if (c->pcie_h2d_busy_gbps > a->pcie_gbps) c->pcie_h2d_busy_gbps = a->pcie_gbps;
    }
}

enum tl_status calibrate_get(const struct calibrate_opts *o, struct ceilings *out, bool *from_cache,
                             struct tl_err *err) {
    char path[1024], gpu[96], key[160];
    *from_cache = false;
    memset(out, 0, sizeof *out);
    enum tl_status st = gpu_name_of(o, gpu, sizeof gpu, err);
    if (st != TL_OK) return st;
    machine_key(o, o->gpu ? gpu : NULL, key, sizeof key);
    st = calibrate_cache_path(o, path, sizeof path, err);
    if (st != TL_OK) return st;
    struct tl_err lerr;
    if (!o->recalibrate && access(path, R_OK) == 0 && calibrate_load(path, out, &lerr) == TL_OK &&
        !strcmp(out->key, key)) {
        *from_cache = true;
    } else {
        if (!o->quiet) fprintf(stderr, "tierlm: measuring this machine's ceilings (~1 s)...\n");
        memset(out, 0, sizeof *out);
        double t0 = tl_now_s();
        st = measure_all(o->threads, o->gpu, out, err);
        if (st != TL_OK) return st;
        out->seconds = tl_now_s() - t0;
        snprintf(out->key, sizeof out->key, "%s", key);
        if (calibrate_save(out, path, &lerr) != TL_OK && !o->quiet)
            fprintf(stderr, "tierlm: ceilings not cached: %s\n", lerr.msg);
    }
    if (o->gpu)
        calibrate_apply_stated(&o->assume, out);
    else
        calibrate_assume_gpu(&o->assume, out);
    return TL_OK;
}

size_t calibrate_host_available_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    if (f) fclose(f);
    return (size_t)kb * 1024;
}
