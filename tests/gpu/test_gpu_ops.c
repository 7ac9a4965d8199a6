/* test_gpu_ops: every GPU op of kernels/ against its CPU reference (cpu/cpu_ops.h) on fresh
 * random inputs. One table of cases (op, shape, flags); ops with a weight run in each weight
 * dtype. Every GPU buffer has 64 floats (256 bytes) of sentinel before and after it, checked
 * after each run to catch out-of-bounds writes; outputs are poisoned with NaN before each run
 * so unwritten elements fail. Exit 0 pass, 1 fail, 77 skip (no GPU or no driver).
 *
 * Tolerances, relative L2 error ||gpu - cpu|| / ||cpu||, from what the op computes:
 *   exact (0, bit for bit): embedding (bf16/f16 -> fp32 widening is exact) and rmsnorm's
 *     residual add (one fp32 add per element on both sides);
 *   fp32 arithmetic (1e-5): rmsnorm's output (the GPU sums squares in fp32 in another order
 *     than the CPU's double sum) and silu_mul (CUDA's expf is within 2 ulp). Both land near
 *     1e-7; an indexing or reduction bug gives errors near 1.
 * The weight dtype does not change them: both sides read the same rounded weights. A breach is
 * investigated, never widened away. The seed is printed; TL_TEST_SEED=N repeats a run. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "gpu_harness.h"
#include "kern.h"
#include "kern_elementwise.h"

#define TOL_EXACT 0.0
#define TOL_F32   1e-5

/* ---------------- cases ---------------- */

enum op { OP_EMBEDDING, OP_RMSNORM, OP_SILU_MUL };

static const char *const op_names[] = {"embedding", "rmsnorm", "silu_mul"};

#define WITH_ADD 1 /* rmsnorm: fuse the residual add */
#define IN_PLACE 2 /* rmsnorm: out = res; silu_mul: out = gate */

struct tcase {
    enum op op;
    int n, dim, vocab;
    int flags;
};

static const struct tcase cases[] = {
    /* op            n    dim    vocab  flags */
    {OP_EMBEDDING, 5, 1031, 50, 0},
    {OP_EMBEDDING, 7, 1, 50, 0},
    {OP_EMBEDDING, 1, 4096, 3, 0},
    {OP_EMBEDDING, 64, 896, 1000, 0},
    {OP_EMBEDDING, 300, 128, 32000, 0},
    {OP_RMSNORM, 1, 1, 0, 0},
    {OP_RMSNORM, 5, 1031, 0, WITH_ADD},
    {OP_RMSNORM, 5, 1031, 0, 0},
    {OP_RMSNORM, 3, 7, 0, WITH_ADD | IN_PLACE},
    {OP_RMSNORM, 2, 33, 0, 0},
    {OP_RMSNORM, 7, 896, 0, WITH_ADD},
    {OP_RMSNORM, 4, 4096, 0, IN_PLACE},
    {OP_RMSNORM, 64, 5120, 0, WITH_ADD},
    {OP_RMSNORM, 1, 8192, 0, WITH_ADD | IN_PLACE},
    {OP_RMSNORM, 9, 3584, 0, 0},
    {OP_SILU_MUL, 1, 1, 0, 0},
    {OP_SILU_MUL, 5, 1031, 0, 0},
    {OP_SILU_MUL, 3, 4864, 0, IN_PLACE},
    {OP_SILU_MUL, 33, 257, 0, 0},
    /* More elements than one pass of the grid (32 blocks of 256 per SM): the stride loop runs. */
    {OP_SILU_MUL, 128, 11008, 0, 0},
};

/* Random weights of dtype dt in host memory; NULL when out of memory. */
static void *make_weight(enum tl_dtype dt, size_t n, float offset, float scale) {
    float *w32 = malloc(n * sizeof(float));
    void *w = malloc(n * dtype_size(dt));
    if (!w32 || !w) {
        free(w32);
        free(w);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) w32[i] = offset + scale * frand();
    dtype_from_f32(dt, w32, w, n);
    free(w32);
    return w;
}

static enum result run_embedding(const struct kern_ctx *ctx, const struct tcase *c,
                                 enum tl_dtype dt, char *line, size_t line_size) {
    enum result r = RES_ERROR;
    struct bufs bs = {.n = 0};
    size_t rows = (size_t)c->n * c->dim, es = dtype_size(dt);
    int32_t *tokens = malloc((size_t)c->n * sizeof *tokens);
    float *ref = malloc(rows * sizeof(float));
    void *table = make_weight(dt, (size_t)c->vocab * c->dim, 0.0f, 1.0f);
    struct gbuf *gt, *gtok, *gout;
    enum tl_status st;
    if (!tokens || !ref || !table) goto out;
    for (int i = 0; i < c->n; i++) tokens[i] = (int32_t)urand((uint32_t)c->vocab);
    tokens[0] = 0; /* both ends of the table */
    if (c->n > 1) tokens[c->n - 1] = c->vocab - 1;
    if (c->n > 2) tokens[c->n / 2] = tokens[c->n / 2 - 1]; /* a repeat */
    struct tl_tensor host_table = {dt, c->vocab, c->dim, table};
    cpu_embedding(NULL, &host_table, tokens, c->n, ref);

    if (!(gt = gbuf_new(ctx, &bs, "table", (size_t)c->vocab * c->dim * es)) ||
        !(gtok = gbuf_new(ctx, &bs, "tokens", (size_t)c->n * sizeof(int32_t))) ||
        !(gout = gbuf_new(ctx, &bs, "out", rows * sizeof(float))))
        goto out;
    memcpy(hdata(gt), table, (size_t)c->vocab * c->dim * es);
    memcpy(hdata(gtok), tokens, (size_t)c->n * sizeof(int32_t));
    gh_poison32(hdata(gout), rows);
    if ((r = bufs_upload(ctx, &bs)) != RES_PASS) goto out;
    struct tl_tensor dev_table = {dt, c->vocab, c->dim, ddata(gt)};
    if ((st = kern_embedding(ctx, &dev_table, ddata(gtok), c->n, ddata(gout))) != TL_OK) {
        report_cuda(ctx, "kern_embedding", st);
        r = RES_ERROR;
        goto out;
    }
    if ((r = bufs_download_check(ctx, &bs)) == RES_ERROR) goto out;
    enum result rc =
        gh_compare("out", TL_DTYPE_F32, hdata(gout), ref, rows, TOL_EXACT, line, line_size);
    if (rc != RES_PASS) r = rc;
out:
    bufs_free(ctx, &bs);
    free(tokens);
    free(ref);
    free(table);
    return r;
}

static enum result run_rmsnorm(const struct kern_ctx *ctx, const struct tcase *c, enum tl_dtype dt,
                               char *line, size_t line_size) {
    enum result r = RES_ERROR;
    struct bufs bs = {.n = 0};
    size_t elems = (size_t)c->n * c->dim;
    bool with_add = c->flags & WITH_ADD, in_place = c->flags & IN_PLACE;
    const float eps = 1e-6f;
    float *res0 = malloc(elems * sizeof(float)), *add = malloc(elems * sizeof(float));
    float *res_ref = malloc(elems * sizeof(float)), *out_ref = malloc(elems * sizeof(float));
    void *w = make_weight(dt, (size_t)c->dim, 1.0f, 0.5f);
    struct gbuf *gres, *gadd = NULL, *gw, *gout = NULL;
    enum tl_status st;
    if (!res0 || !add || !res_ref || !out_ref || !w) goto out;
    gh_fill(TL_DTYPE_F32, res0, NULL, elems, 0.0f, 3.0f);
    gh_fill(TL_DTYPE_F32, add, NULL, elems, 0.0f, 1.0f);
    memcpy(res_ref, res0, elems * sizeof(float));
    struct tl_tensor host_w = {dt, 1, c->dim, w};
    cpu_rmsnorm(NULL, res_ref, with_add ? add : NULL, &host_w, eps, c->n, out_ref);

    if (!(gres = gbuf_new(ctx, &bs, "res", elems * sizeof(float))) ||
        !(gw = gbuf_new(ctx, &bs, "weight", (size_t)c->dim * dtype_size(dt))) ||
        (with_add && !(gadd = gbuf_new(ctx, &bs, "add", elems * sizeof(float)))) ||
        (!in_place && !(gout = gbuf_new(ctx, &bs, "out", elems * sizeof(float)))))
        goto out;
    memcpy(hdata(gres), res0, elems * sizeof(float));
    memcpy(hdata(gw), w, (size_t)c->dim * dtype_size(dt));
    if (gadd) memcpy(hdata(gadd), add, elems * sizeof(float));
    if (gout) gh_poison32(hdata(gout), elems);
    if ((r = bufs_upload(ctx, &bs)) != RES_PASS) goto out;
    struct tl_tensor dev_w = {dt, 1, c->dim, ddata(gw)};
    st = kern_rmsnorm(ctx, ddata(gres), gadd ? ddata(gadd) : NULL, &dev_w, eps, c->n,
                      in_place ? ddata(gres) : ddata(gout));
    if (st != TL_OK) {
        report_cuda(ctx, "kern_rmsnorm", st);
        r = RES_ERROR;
        goto out;
    }
    if ((r = bufs_download_check(ctx, &bs)) == RES_ERROR) goto out;
    enum result rc;
    if (in_place) {
        rc = gh_compare("out", TL_DTYPE_F32, hdata(gres), out_ref, elems, TOL_F32, line, line_size);
    } else {
        rc = gh_compare("res", TL_DTYPE_F32, hdata(gres), res_ref, elems, TOL_EXACT, line,
                        line_size);
        if (rc == RES_PASS)
            rc = gh_compare("out", TL_DTYPE_F32, hdata(gout), out_ref, elems, TOL_F32, line,
                            line_size);
    }
    if (rc != RES_PASS) r = rc;
out:
    bufs_free(ctx, &bs);
    free(res0);
    free(add);
    free(res_ref);
    free(out_ref);
    free(w);
    return r;
}

static enum result run_silu_mul(const struct kern_ctx *ctx, const struct tcase *c, char *line,
                                size_t line_size) {
    enum result r = RES_ERROR;
    struct bufs bs = {.n = 0};
    size_t elems = (size_t)c->n * c->dim;
    bool in_place = c->flags & IN_PLACE;
    float *gate = malloc(elems * sizeof(float)), *up = malloc(elems * sizeof(float));
    float *ref = malloc(elems * sizeof(float));
    struct gbuf *gg, *gu, *gout = NULL;
    enum tl_status st;
    if (!gate || !up || !ref) goto out;
    /* +-8: through silu's bend into both tails */
    gh_fill(TL_DTYPE_F32, gate, NULL, elems, 0.0f, 8.0f);
    gh_fill(TL_DTYPE_F32, up, NULL, elems, 0.0f, 2.0f);
    cpu_silu_mul(NULL, gate, up, c->n, c->dim, ref);

    if (!(gg = gbuf_new(ctx, &bs, "gate", elems * sizeof(float))) ||
        !(gu = gbuf_new(ctx, &bs, "up", elems * sizeof(float))) ||
        (!in_place && !(gout = gbuf_new(ctx, &bs, "out", elems * sizeof(float)))))
        goto out;
    memcpy(hdata(gg), gate, elems * sizeof(float));
    memcpy(hdata(gu), up, elems * sizeof(float));
    if (gout) gh_poison32(hdata(gout), elems);
    if ((r = bufs_upload(ctx, &bs)) != RES_PASS) goto out;
    st = kern_silu_mul(ctx, ddata(gg), ddata(gu), c->n, c->dim, in_place ? ddata(gg) : ddata(gout));
    if (st != TL_OK) {
        report_cuda(ctx, "kern_silu_mul", st);
        r = RES_ERROR;
        goto out;
    }
    if ((r = bufs_download_check(ctx, &bs)) == RES_ERROR) goto out;
    enum result rc = gh_compare("out", TL_DTYPE_F32, hdata(in_place ? gg : gout), ref, elems,
                                TOL_F32, line, line_size);
    if (rc != RES_PASS) r = rc;
out:
    bufs_free(ctx, &bs);
    free(gate);
    free(up);
    free(ref);
    return r;
}

/* ---------------- behaviour beyond the CPU reference ---------------- */

/* Token ids outside the table give NaN rows (and touch nothing else); others are still right. */
static enum result run_embedding_bad_ids(const struct kern_ctx *ctx) {
    enum result r = RES_ERROR;
    struct bufs bs = {.n = 0};
    enum { VOCAB = 50, DIM = 129, N = 4 };
    const int32_t tokens[N] = {-1, VOCAB, 7, INT32_MIN};
    float table[VOCAB * DIM];
    struct gbuf *gt, *gtok, *gout;
    enum tl_status st;
    gh_fill(TL_DTYPE_F32, table, NULL, VOCAB * DIM, 0.0f, 1.0f);
    if (!(gt = gbuf_new(ctx, &bs, "table", sizeof table)) ||
        !(gtok = gbuf_new(ctx, &bs, "tokens", sizeof tokens)) ||
        !(gout = gbuf_new(ctx, &bs, "out", N * DIM * sizeof(float))))
        goto out;
    memcpy(hdata(gt), table, sizeof table);
    memcpy(hdata(gtok), tokens, sizeof tokens);
    gh_poison32(hdata(gout), N * DIM);
    if ((r = bufs_upload(ctx, &bs)) != RES_PASS) goto out;
    struct tl_tensor dev_table = {TL_DTYPE_F32, VOCAB, DIM, ddata(gt)};
    if ((st = kern_embedding(ctx, &dev_table, ddata(gtok), N, ddata(gout))) != TL_OK) {
        report_cuda(ctx, "kern_embedding", st);
        r = RES_ERROR;
        goto out;
    }
    if ((r = bufs_download_check(ctx, &bs)) == RES_ERROR) goto out;
    const float *o = hdata(gout);
    for (int t = 0; t < N; t++)
        for (int i = 0; i < DIM; i++) {
            bool bad = tokens[t] < 0 || tokens[t] >= VOCAB;
            float want = bad ? NAN : table[tokens[t] * DIM + i], got = o[t * DIM + i];
            if (bad ? !isnan(got) || gh_is_poison32(got) : got != want) {
                fprintf(stderr, "    token %d (id %d) element %d: got %g, want %g\n", t,
                        (int)tokens[t], i, (double)got, (double)want);
                r = RES_FAIL;
                goto out;
            }
        }
out:
    bufs_free(ctx, &bs);
    return r;
}

/* Bad arguments are answered with a status and a message, and launch nothing. */
static enum result run_bad_args(const struct kern_ctx *ctx) {
    /* Any 4-byte-aligned non-NULL address will do: validation must reject before any launch. */
    float *fake = (float *)(uintptr_t)4096;
    int32_t *fake_tok = (int32_t *)(uintptr_t)4096;
    struct tl_tensor w = {TL_DTYPE_BF16, 1, 64, fake};
    struct tl_tensor w_i8 = {TL_DTYPE_I8, 1, 64, fake};
    struct tl_tensor w_2d = {TL_DTYPE_F32, 2, 64, fake};
    struct tl_tensor w_null = {TL_DTYPE_F32, 1, 64, NULL};
    struct tl_tensor table_empty = {TL_DTYPE_F16, 0, 64, fake};
    void *p = fake;
    const struct gh_status_check checks[] = {
        {"rmsnorm n = 0", kern_rmsnorm(ctx, fake, NULL, &w, 1e-6f, 0, fake), TL_ERR_INVALID},
        {"rmsnorm res NULL", kern_rmsnorm(ctx, NULL, NULL, &w, 1e-6f, 1, fake), TL_ERR_INVALID},
        {"rmsnorm out NULL", kern_rmsnorm(ctx, fake, NULL, &w, 1e-6f, 1, NULL), TL_ERR_INVALID},
        {"rmsnorm weight data NULL", kern_rmsnorm(ctx, fake, NULL, &w_null, 1e-6f, 1, fake),
         TL_ERR_INVALID},
        {"rmsnorm weight 2-D", kern_rmsnorm(ctx, fake, NULL, &w_2d, 1e-6f, 1, fake),
         TL_ERR_INVALID},
        {"rmsnorm weight I8", kern_rmsnorm(ctx, fake, NULL, &w_i8, 1e-6f, 1, fake),
         TL_ERR_UNSUPPORTED},
        {"rmsnorm eps NaN", kern_rmsnorm(ctx, fake, NULL, &w, NAN, 1, fake), TL_ERR_INVALID},
        {"rmsnorm misaligned",
         kern_rmsnorm(ctx, (float *)(uintptr_t)4098, NULL, &w, 1e-6f, 1, fake), TL_ERR_INVALID},
        {"silu_mul dim = 0", kern_silu_mul(ctx, fake, fake, 1, 0, fake), TL_ERR_INVALID},
        {"silu_mul n = -1", kern_silu_mul(ctx, fake, fake, -1, 8, fake), TL_ERR_INVALID},
        {"silu_mul up NULL", kern_silu_mul(ctx, fake, NULL, 1, 8, fake), TL_ERR_INVALID},
        {"embedding n = 0", kern_embedding(ctx, &w, fake_tok, 0, fake), TL_ERR_INVALID},
        {"embedding tokens NULL", kern_embedding(ctx, &w, NULL, 1, fake), TL_ERR_INVALID},
        {"embedding 0 rows", kern_embedding(ctx, &table_empty, fake_tok, 1, fake), TL_ERR_INVALID},
        {"embedding table I8", kern_embedding(ctx, &w_i8, fake_tok, 1, fake), TL_ERR_UNSUPPORTED},
        {"alloc 0 bytes", kern_alloc(ctx, 0, &p), TL_ERR_INVALID},
        {"upload NULL source", kern_upload(ctx, fake, NULL, 16), TL_ERR_INVALID},
    };
    return gh_check_statuses(ctx, checks, sizeof checks / sizeof checks[0]);
}

/* ---------------- main ---------------- */

int main(void) {
    struct kern_ctx *ctx;
    int start = gh_start(&ctx);
    if (start != 0) return start;
    struct kern_device_info info;
    enum tl_status st;
    if ((st = kern_device_info(ctx, &info)) != TL_OK) {
        fprintf(stderr, "kern_device_info: %s: %s\n", tl_status_str(st), kern_last_error(ctx));
        kern_ctx_destroy(ctx);
        return 1;
    }
    printf("device %d: %s, cc %d.%d, %d SMs, %.1f of %.1f GiB free\n", info.device, info.name,
           info.cc_major, info.cc_minor, info.sm_count, (double)info.free_bytes / (1 << 30),
           (double)info.total_bytes / (1 << 30));

    const enum tl_dtype dts[] = {TL_DTYPE_F32, TL_DTYPE_F16, TL_DTYPE_BF16};
    int n_run = 0, n_fail = 0;
    enum result r = RES_PASS;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0] && r != RES_ERROR; ci++) {
        const struct tcase *c = &cases[ci];
        int n_dts = c->op == OP_SILU_MUL ? 1 : 3; /* silu_mul has no weight */
        for (int d = 0; d < n_dts && r != RES_ERROR; d++) {
            char line[160] = "";
            switch (c->op) {
            case OP_EMBEDDING:
                r = run_embedding(ctx, c, dts[d], line, sizeof line);
                break;
            case OP_RMSNORM:
                r = run_rmsnorm(ctx, c, dts[d], line, sizeof line);
                break;
            case OP_SILU_MUL:
                r = run_silu_mul(ctx, c, line, sizeof line);
                break;
            }
            n_run++;
            n_fail += r != RES_PASS;
            printf("%-9s %-4s n=%-4d dim=%-5d", op_names[c->op],
                   c->op == OP_SILU_MUL ? "-" : dtype_name(dts[d]), c->n, c->dim);
            if (c->op == OP_EMBEDDING) printf(" vocab=%-5d", c->vocab);
            printf("%s%s  %s  %s\n", c->flags & WITH_ADD ? " +add" : "",
                   c->flags & IN_PLACE ? " in-place" : "", line, result_str(r));
        }
    }
    if (r != RES_ERROR) {
        r = run_embedding_bad_ids(ctx);
        n_run++;
        n_fail += r != RES_PASS;
        printf("embedding out-of-range ids -> NaN rows  %s\n", result_str(r));
    }
    if (r != RES_ERROR) {
        r = run_bad_args(ctx);
        n_run++;
        n_fail += r != RES_PASS;
        printf("argument checks  %s\n", result_str(r));
    }
    kern_ctx_destroy(ctx);
    if (r == RES_ERROR) printf("stopped at the first CUDA error\n");
    printf("%d of %d checks passed\n", n_run - n_fail, n_run);
    return n_fail ? 1 : 0;
}
