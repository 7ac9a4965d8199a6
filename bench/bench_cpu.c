/* bench_cpu: the CPU backend against the ceilings measured in the same run.
 *   1. CPU memory read bandwidth (all threads), the ceiling for decode.
 *   2. A 14B MLP projection (13824 x 5120 bf16) at m = 1, 8, 32 through our GEMV and our GEMM
 *      path (convert + OpenBLAS sgemm), and OpenBLAS sgemv on fp32 at m = 1: the measurement
 *      behind the hand-written GEMV and its m <= 8 threshold. Calls rotate over 8 copies
 *      (1.1 GB) so the weights stream from memory.
 *   3. Batch-1 decode of a model (dummy weights of its config.json): tok/s and the weight
 *      bytes streamed per second as a fraction of the bandwidth.
 *   4. Prefill of one prompt of --prefill tokens: tok/s and GFLOP/s against an fp32 sgemm.
 * --attention runs only cpu_attention (the 14B's 40 q / 8 kv heads of 128, fp32 cache, block
 * 16, scattered block tables) on decode and prefill batches: GB/s of K and V read against the
 * memory bandwidth, and GFLOP/s.
 * Usage: bench_cpu [--model DIR] [--threads N] [--tokens N] [--prefill N] [--skip-gemv]
 *        bench_cpu --attention [--threads N] */
#include <cblas.h>
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attention.h"
#include "clock.h"
#include "cpu_ops.h"
#include "forward.h"
#include "kvcache.h"
#include "matmul.h"
#include "model.h"
#include "pool.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct bw_args {
    const uint64_t *buf;
    uint64_t sums[1024];
};

/* 256-bit loads with four independent accumulators: the widest plain read a core can issue,
 * so the figure is a ceiling for the GEMV rather than for a scalar loop. */
__attribute__((target("avx2"))) static void bw_task_avx2(void *arg, int64_t b, int64_t e, int tid) {
    struct bw_args *a = arg;
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
    a->sums[tid] += out[0] ^ out[1] ^ out[2] ^ out[3];
}

static void bw_task(void *arg, int64_t b, int64_t e, int tid) {
    struct bw_args *a = arg;
    if (__builtin_cpu_supports("avx2")) {
        bw_task_avx2(arg, b, e, tid);
        return;
    }
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int64_t i = b; i + 4 <= e; i += 4) {
        s0 += a->buf[i], s1 += a->buf[i + 1], s2 += a->buf[i + 2], s3 += a->buf[i + 3];
    }
    a->sums[tid] += s0 ^ s1 ^ s2 ^ s3;
}

/* GB/s of a threaded read of a 1 GiB buffer, median of 7 passes. */
static double read_bandwidth(struct pool *pool) {
    size_t n = (size_t)1 << 27; /* 1 GiB of uint64 */
    uint64_t *buf = aligned_alloc(64, n * 8);
    for (size_t i = 0; i < n; i++) buf[i] = i * 0x9e3779b97f4a7c15ull;
    struct bw_args a = {buf, {0}};
    double t[7];
    pool_parallel_for(pool, (int64_t)n, 1 << 16, bw_task, &a); /* warm-up */
    for (int r = 0; r < 7; r++) {
        double t0 = tl_now_s();
        pool_parallel_for(pool, (int64_t)n, 1 << 16, bw_task, &a);
        t[r] = tl_now_s() - t0;
    }
    uint64_t x = 0;
    for (int i = 0; i < 1024; i++) x ^= a.sums[i];
    if (x == 42) printf(" "); /* keeps the reads alive */
    free(buf);
    return (double)n * 8 / median(t, 7) / 1e9;
}

/* GFLOP/s of a 2048^3 fp32 OpenBLAS sgemm (all threads): the ceiling for prefill. */
static double sgemm_rate(void) {
    int n = 2048;
    float *a = malloc((size_t)n * n * 4), *b = malloc((size_t)n * n * 4),
          *c = malloc((size_t)n * n * 4);
    for (size_t i = 0; i < (size_t)n * n; i++)
        a[i] = (float)(i % 17) * 0.1f, b[i] = (float)(i % 13) * 0.2f;
    double t[3];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    for (int r = 0; r < 3; r++) {
        double t0 = tl_now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        t[r] = tl_now_s() - t0;
    }
    free(a), free(b), free(c);
    return 2.0 * n * n * (double)n / median(t, 3) / 1e9;
}

/* Median seconds of one cpu_matmul of m rows, each call on the next of n_w weight copies so
 * the weights come from memory, not from the last-level cache. */
static double time_matmul(struct pool *pool, float *scratch, const float *x, int m,
                          const struct tl_tensor *w, int n_w, float *y, int path) {
    double t[16];
    cpu_matmul_force_path(path);
    cpu_matmul(pool, scratch, x, m, &w[n_w - 1], NULL, y);
    for (int r = 0; r < 16; r++) {
        double t0 = tl_now_s();
        cpu_matmul(pool, scratch, x, m, &w[r % n_w], NULL, y);
        t[r] = tl_now_s() - t0;
    }
    cpu_matmul_force_path(0);
    return median(t, 16);
}

static void empty_task(void *arg, int64_t b, int64_t e, int tid) {
    (void)arg, (void)b, (void)e, (void)tid;
}

/* Microseconds one pool_parallel_for costs with no work: the price of each op dispatch. */
static double dispatch_us(struct pool *pool) {
    double t[2001];
    for (int r = 0; r < 2001; r++) {
        double t0 = tl_now_s();
        pool_parallel_for(pool, pool_size(pool), 1, empty_task, NULL);
        t[r] = tl_now_s() - t0;
    }
    return median(t, 2001) * 1e6;
}

/* One cpu_attention batch: n_seqs sequences of n_new new tokens after n_past cached ones. */
struct attn_case {
    const char *name;
    int n_seqs, n_past, n_new, reps;
};

/* Times cpu_attention on case c: median seconds; *kv_bytes is the K and V the batch attends
 * over (each cached row once), *flops 4 * heads * head_dim per (token, visible position). */
static double time_attention(struct pool *pool, const struct attn_case *c, double *kv_bytes,
                             double *flops) {
    enum { H = 40, KVH = 8, HD = 128, BS = 16 };
    int ctx = c->n_past + c->n_new, per_seq = (ctx + BS - 1) / BS, nb = c->n_seqs * per_seq;
    int T = c->n_seqs * c->n_new;
    size_t kvd = (size_t)KVH * HD, cache = (size_t)nb * BS * kvd;
    float *kc = malloc(cache * 4), *vc = malloc(cache * 4);
    float *q = malloc((size_t)T * H * HD * 4), *out = malloc((size_t)T * H * HD * 4);
    int32_t *tables = malloc((size_t)nb * 4), *pos = malloc((size_t)T * 4);
    int32_t *tok_seq = malloc((size_t)T * 4), *toks = calloc((size_t)T, 4);
    struct fwd_seq *seqs = malloc((size_t)c->n_seqs * sizeof *seqs);
    for (size_t i = 0; i < cache; i++)
        kc[i] = (float)(i % 101) * 0.01f - 0.5f, vc[i] = (float)(i % 89) * 0.01f - 0.4f;
    for (size_t i = 0; i < (size_t)T * H * HD; i++) q[i] = (float)(i % 37) * 0.02f - 0.3f;
    /* scattered, as after churn: 7 is coprime with every nb used here */
    for (int i = 0; i < nb; i++) tables[i] = (int32_t)(((int64_t)i * 7) % nb);
    *flops = 0;
    for (int s = 0, t = 0; s < c->n_seqs; s++) {
        seqs[s] = (struct fwd_seq){c->n_new, c->n_past, tables + (size_t)s * per_seq, per_seq, 1};
        for (int i = 0; i < c->n_new; i++, t++) {
            pos[t] = c->n_past + i, tok_seq[t] = s;
            *flops += 4.0 * H * HD * (pos[t] + 1);
        }
    }
    *kv_bytes = (double)c->n_seqs * ctx * (double)kvd * 4 * 2;
    struct fwd_batch b = {c->n_seqs, seqs, T, toks, pos};
    struct attn_shape shape = {H, KVH, HD, BS};
    size_t sf = cpu_attention_scratch_floats(&shape, pool_size(pool));
    float *scratch = aligned_alloc(64, (sf * 4 + 63) & ~(size_t)63);
    double t[16];
    int reps = c->reps < 16 ? c->reps : 16;
    cpu_attention(pool, &shape, &b, tok_seq, q, kc, vc, out, scratch); /* warm-up */
    for (int r = 0; r < reps; r++) {
        double t0 = tl_now_s();
        cpu_attention(pool, &shape, &b, tok_seq, q, kc, vc, out, scratch);
        t[r] = tl_now_s() - t0;
    }
    free(kc), free(vc), free(q), free(out), free(tables), free(pos), free(tok_seq), free(toks);
    free(seqs), free(scratch);
    return median(t, reps);
}

static void bench_attention(struct pool *pool, double bw) {
    /* decode: the step-time case, the calibration's shape (offload/calibrate.c), one long
     * sequence (needs the context split across threads); prefill: 4 prompts of 512 */
    const struct attn_case cases[] = {{"decode 64 seqs x 576 ctx", 64, 575, 1, 7},
                                      {"decode 8 seqs x 512 ctx (calibration)", 8, 511, 1, 9},
                                      {"decode 1 seq x 4096 ctx", 1, 4095, 1, 9},
                                      {"prefill 4 seqs x 512 new", 4, 0, 512, 3},
                                      {"prefill chunk 64 new after 1024", 1, 1024, 64, 5}};
    printf("cpu_attention kernel %s, 40 q / 8 kv heads x 128, fp32 KV, block 16\n",
           cpu_attention_kernel_name(128));
    printf("%-40s %10s %10s %8s %10s\n", "what", "time", "KV GB/s", "of bw", "GFLOP/s");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double kv, fl, s = time_attention(pool, &cases[i], &kv, &fl);
        printf("%-40s %7.2f ms %10.1f %8.2f %10.1f\n", cases[i].name, s * 1e3, kv / s / 1e9,
               kv / s / 1e9 / bw, fl / s / 1e9);
    }
}

int main(int argc, char **argv) {
    const char *model_dir = NULL;
    int threads = 0, tokens = 32, skip_gemv = 0, prefill = 256, attention = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model_dir = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prefill") && i + 1 < argc)
            prefill = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--skip-gemv"))
            skip_gemv = 1;
        else if (!strcmp(argv[i], "--attention"))
            attention = 1;
        else {
            fprintf(stderr, "usage: bench_cpu [--model DIR] [--threads N] [--tokens N] [--prefill "
                            "N] [--skip-gemv] [--attention]\n");
            return 2;
        }
    }
    struct tl_err err = {{0}};
    struct pool *pool;
    if (pool_create(threads, true, &pool, &err) != TL_OK) {
        fprintf(stderr, "bench_cpu: %s\n", err.msg);
        return 1;
    }
    openblas_set_num_threads(pool_size(pool));
    double bw = read_bandwidth(pool);
    if (attention) {
        printf("threads %d, CPU memory read bandwidth %.1f GB/s\n", pool_size(pool), bw);
        bench_attention(pool, bw);
        pool_destroy(pool);
        return 0;
    }
    printf("threads %d, GEMV kernel %s\n", pool_size(pool), cpu_matmul_kernel_name());
    double gemm_gflops = sgemm_rate();
    printf("ceiling: CPU memory read bandwidth %.1f GB/s, fp32 sgemm %.0f GFLOP/s\n", bw,
           gemm_gflops);

    /* 8 copies of a 13824 x 5120 bf16 matrix (1.1 GB): more than any last-level cache */
    enum { NW = 8 };
    int ms[] = {1, 8, 32};
    double t_gemv[3] = {0}, t_gemm[3] = {0}, t_sgemv = 0, wbytes = 0, us = dispatch_us(pool);
    /* the AVX512-BF16 path (the CPU lane's matmuls) against the GEMM path at lane batch sizes */
    int ms3[] = {2, 8, 16, 64};
    double t_dp[4] = {0}, t_gemm3[4] = {0}, t_amx[4] = {0};
    if (!skip_gemv) {
        int64_t n = 13824, k = 5120;
        size_t ne = (size_t)(n * k);
        float *x = malloc((size_t)k * 64 * 4), *y = malloc((size_t)n * 64 * 4);
        uint16_t *w16 = malloc(ne * 2 * NW);
        float *w32 = malloc(ne * 4 * NW);
        float *scratch = malloc(MATMUL_SCRATCH_FLOATS * 4);
        uint64_t r = 88172645463325252ull;
        for (size_t i = 0; i < ne; i++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            w32[i] = (float)(r >> 40) / 16777216.0f - 0.5f;
            w16[i] = f32_to_bf16(w32[i]);
        }
        for (int c = 1; c < NW; c++) {
            memcpy(w16 + ne * c, w16, ne * 2);
            memcpy(w32 + ne * c, w32, ne * 4);
        }
        for (int64_t i = 0; i < k * 64; i++) x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
        struct tl_tensor wt[NW];
        for (int c = 0; c < NW; c++) wt[c] = (struct tl_tensor){TL_DTYPE_BF16, n, k, w16 + ne * c};
        wbytes = (double)ne * 2;
        for (int i = 0; i < 3; i++) {
            t_gemv[i] = time_matmul(pool, scratch, x, ms[i], wt, NW, y, 1);
            t_gemm[i] = time_matmul(pool, scratch, x, ms[i], wt, NW, y, 2);
        }
        for (int i = 0; i < 4 && cpu_matmul_bf16dp_available(); i++) {
            if (cpu_matmul_amx_available())
                t_amx[i] = time_matmul(pool, scratch, x, ms3[i], wt, NW, y, 3);
            cpu_matmul_disable_amx(true);
            t_dp[i] = time_matmul(pool, scratch, x, ms3[i], wt, NW, y, 3);
            cpu_matmul_disable_amx(false);
            t_gemm3[i] = time_matmul(pool, scratch, x, ms3[i], wt, NW, y, ms3[i] <= 8 ? 1 : 2);
        }
        double t[16];
        for (int i = 0; i < 17; i++) {
            double t0 = tl_now_s();
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)k, 1.0f, w32 + ne * (i % NW),
                        (int)k, x, 1, 0.0f, y, 1);
            if (i) t[i - 1] = tl_now_s() - t0;
        }
        t_sgemv = median(t, 16);
        free(w32), free(x), free(y), free(w16), free(scratch);
    }

    double tok_s = 0, model_bytes = 0, prefill_s = 0, prefill_flops = 0;
    if (model_dir) {
        struct model *m;
        struct model_load_opts lo = {
            .format = MODEL_LOAD_DUMMY, .dtype = TL_DTYPE_COUNT, .n_threads = threads};
        if (model_load(model_dir, &lo, &m, &err) != TL_OK) {
            fprintf(stderr, "bench_cpu: %s\n", err.msg);
            return 1;
        }
        model_bytes = (double)m->weight_bytes;
        int prompt = 16, ctx = prompt + tokens + 1;
        if (ctx < prefill) ctx = prefill;
        struct ops ops;
        struct kvcache *kv;
        struct forward *fw;
        struct cpu_backend_opts co = {.n_threads = threads,
                                      .pin = true,
                                      .num_blocks = (ctx + 15) / 16,
                                      .block_size = 16,
                                      .max_ctx = ctx};
        if (cpu_backend_create(&m->cfg, &co, &ops, &err) != TL_OK ||
            kvcache_create(co.num_blocks, 16, &kv, &err) != TL_OK ||
            forward_create(m, &ops, prefill > prompt ? prefill : prompt, 1, &fw, &err) != TL_OK) {
            fprintf(stderr, "bench_cpu: %s\n", err.msg);
            return 1;
        }
        struct kv_seq seq = {0};
        kvcache_seq_reserve(kv, &seq, ctx, &err);
        float *logits = malloc((size_t)m->cfg.vocab_size * 4);
        int32_t toks[64], pos[64];
        for (int i = 0; i < prompt; i++) toks[i] = (i * 131 + 7) % m->cfg.vocab_size, pos[i] = i;
        struct fwd_seq fs = {prompt, 0, seq.blocks, seq.n_blocks, 1};
        struct fwd_batch b = {1, &fs, prompt, toks, pos};
        forward_step(fw, &b, logits, &err);
        double *t = malloc((size_t)tokens * sizeof *t);
        for (int i = 0; i < tokens; i++) {
            fs = (struct fwd_seq){1, prompt + i, seq.blocks, seq.n_blocks, 1};
            toks[0] = (i * 977) % m->cfg.vocab_size;
            pos[0] = prompt + i;
            b = (struct fwd_batch){1, &fs, 1, toks, pos};
            double t0 = tl_now_s();
            if (forward_step(fw, &b, logits, &err) != TL_OK) {
                fprintf(stderr, "bench_cpu: %s\n", err.msg);
                return 1;
            }
            t[i] = tl_now_s() - t0;
        }
        tok_s = 1.0 / median(t, tokens);
        /* prefill: one step of `prefill` tokens from position 0, median of 3 after a warm-up */
        int32_t *ptoks = malloc((size_t)prefill * 4), *ppos = malloc((size_t)prefill * 4);
        for (int i = 0; i < prefill; i++)
            ptoks[i] = (i * 7919 + 3) % m->cfg.vocab_size, ppos[i] = i;
        struct fwd_seq pf = {prefill, 0, seq.blocks, seq.n_blocks, 1};
        struct fwd_batch pb = {1, &pf, prefill, ptoks, ppos};
        double pt[3];
        forward_step(fw, &pb, logits, &err);
        for (int r = 0; r < 3; r++) {
            double t0 = tl_now_s();
            forward_step(fw, &pb, logits, &err);
            pt[r] = tl_now_s() - t0;
        }
        prefill_s = median(pt, 3);
        /* matmul work: every layer weight once per token, lm_head once (last token only) */
        const struct config *c = &m->cfg;
        double vh = (double)c->vocab_size * c->hidden_size;
        double layer_params = (double)config_param_count(c) - vh * (c->tie_word_embeddings ? 1 : 2);
        prefill_flops = 2.0 * layer_params * prefill + 2.0 * vh;
        free(ptoks), free(ppos);
        printf("model %s (dummy %s weights, %.2f GB): batch-1 decode %.2f tok/s\n", model_dir,
               dtype_torch_name(m->embed.dtype), model_bytes / 1e9, tok_s);
        free(t), free(logits);
        kvcache_seq_release(kv, &seq);
        forward_destroy(fw);
        kvcache_destroy(kv);
        cpu_backend_destroy(&ops);
        model_free(m);
    }

    printf("\n%-44s %12s %12s %8s\n", "what", "time", "GB/s", "of bw");
    printf("%-44s %12s %12.1f %8s\n", "ceiling: memory read, all threads", "", bw, "1.00");
    if (!skip_gemv) {
        for (int i = 0; i < 3; i++) {
            char name[64];
            snprintf(name, sizeof name, "m=%d 13824x5120 bf16: tierlm GEMV", ms[i]);
            printf("%-44s %9.2f ms %12.1f %8.2f\n", name, t_gemv[i] * 1e3, wbytes / t_gemv[i] / 1e9,
                   wbytes / t_gemv[i] / 1e9 / bw);
            snprintf(name, sizeof name, "m=%d 13824x5120 bf16: convert + OpenBLAS sgemm", ms[i]);
            printf("%-44s %9.2f ms %12.1f %8.2f\n", name, t_gemm[i] * 1e3, wbytes / t_gemm[i] / 1e9,
                   wbytes / t_gemm[i] / 1e9 / bw);
        }
        for (int i = 0; i < 4 && t_dp[i] > 0; i++) {
            char name[64];
            double fl = 2.0 * ms3[i] * (wbytes / 2);
            snprintf(name, sizeof name, "m=%d 13824x5120 bf16: AVX512-BF16 path", ms3[i]);
            printf("%-44s %9.2f ms %12.1f %8.2f   (%.0f GFLOP/s; %s %.2f ms)\n", name,
                   t_dp[i] * 1e3, wbytes / t_dp[i] / 1e9, wbytes / t_dp[i] / 1e9 / bw,
                   fl / t_dp[i] / 1e9, ms3[i] <= 8 ? "GEMV" : "GEMM path", t_gemm3[i] * 1e3);
        }
        for (int i = 0; i < 4 && t_amx[i] > 0; i++) {
            char name[64];
            double fl = 2.0 * ms3[i] * (wbytes / 2);
            snprintf(name, sizeof name, "m=%d 13824x5120 bf16: AMX tiles", ms3[i]);
            printf("%-44s %9.2f ms %12.1f %8.2f   (%.0f GFLOP/s)\n", name, t_amx[i] * 1e3,
                   wbytes / t_amx[i] / 1e9, wbytes / t_amx[i] / 1e9 / bw, fl / t_amx[i] / 1e9);
        }
        printf("%-44s %9.2f ms %12.1f %8.2f\n", "m=1 13824x5120 fp32: OpenBLAS sgemv",
               t_sgemv * 1e3, 2 * wbytes / t_sgemv / 1e9, 2 * wbytes / t_sgemv / 1e9 / bw);
    }
    printf("%-44s %9.1f us\n", "pool dispatch of an empty loop", us);
    if (model_dir)
        printf("%-44s %9.2f ms %12.1f %8.2f   (%.2f tok/s)\n", "batch-1 decode step (weights read)",
               1e3 / tok_s, model_bytes * tok_s / 1e9, model_bytes * tok_s / 1e9 / bw, tok_s);
    if (model_dir) {
        double gf = prefill_flops / prefill_s / 1e9;
        printf("%-44s %9.2f ms %12s %8s   (%.1f tok/s, %.0f GFLOP/s = %.2f of sgemm)\n",
               "prefill of one prompt", prefill_s * 1e3, "", "", prefill / prefill_s, gf,
               gf / gemm_gflops);
    }
    pool_destroy(pool);
    return 0;
}
