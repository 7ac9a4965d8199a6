/* gpu_harness: the shared scaffolding of the GPU op tests (see gpu_harness.h). */
#include "gpu_harness.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *result_str(enum result r) {
    return r == RES_PASS ? "ok" : r == RES_FAIL ? "FAIL" : "CUDA ERROR";
}

void report_cuda(const struct kern_ctx *ctx, const char *what, enum tl_status st) {
    fprintf(stderr, "    %s: %s: %s\n", what, tl_status_str(st), kern_last_error(ctx));
}

/* ---------------- random inputs ---------------- */

static uint64_t rng_state;

static uint64_t rng_next(void) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return rng_state;
}

float frand(void) {
    return (float)(rng_next() >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

uint32_t urand(uint32_t bound) {
    return (uint32_t)((rng_next() >> 32) % bound);
}

float gh_round(enum tl_dtype dt, float v) {
    if (dt == TL_DTYPE_BF16) return bf16_to_f32(f32_to_bf16(v));
    if (dt == TL_DTYPE_F16) return f16_to_f32(f32_to_f16(v));
    return v;
}

void gh_fill(enum tl_dtype dt, float *f32, void *raw, size_t n, float offset, float scale) {
    for (size_t i = 0; i < n; i++) f32[i] = gh_round(dt, offset + scale * frand());
    if (raw) dtype_from_f32(dt, f32, raw, n);
}

void poison16(void *p, size_t n) {
    uint16_t *h = p;
    for (size_t i = 0; i < n; i++) h[i] = POISON16;
}

void gh_poison32(void *p, size_t n) {
    uint32_t bits = POISON32;
    for (size_t i = 0; i < n; i++) memcpy((char *)p + 4 * i, &bits, 4);
}

bool gh_is_poison32(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return bits == POISON32;
}

int gh_start(struct kern_ctx **ctx) {
    struct tl_err why = {{0}};
    if (kern_device_probe(&why) == 0) {
        printf("skip: %s\n", why.msg);
        return 77;
    }
    const char *seed_env = getenv("TL_TEST_SEED");
    uint64_t seed =
        seed_env ? strtoull(seed_env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    rng_state = seed ? seed : 1;
    printf("seed %llu (TL_TEST_SEED to repeat)\n", (unsigned long long)seed);

    struct tl_err err;
    enum tl_status st = kern_ctx_create(0, ctx, &err);
    if (st != TL_OK) {
        fprintf(stderr, "kern_ctx_create: %s: %s\n", tl_status_str(st), err.msg);
        return 1;
    }
    return 0;
}

/* ---------------- guarded GPU buffers ---------------- */

struct gbuf *gbuf_new(const struct kern_ctx *ctx, struct bufs *bs, const char *name, size_t bytes) {
    if (bs->n == MAX_BUFS) {
        fprintf(stderr, "    test bug: more than %d buffers\n", MAX_BUFS);
        return NULL;
    }
    struct gbuf *g = &bs->b[bs->n];
    size_t total = bytes + 2 * (size_t)GUARD_BYTES;
    memset(g, 0, sizeof *g);
    g->name = name;
    g->bytes = bytes;
    g->host = malloc(total);
    if (!g->host) {
        fprintf(stderr, "    out of host memory (%zu bytes)\n", total);
        return NULL;
    }
    bs->n++;
    enum tl_status st = kern_alloc(ctx, total, (void **)&g->dev);
    if (st != TL_OK) {
        report_cuda(ctx, "kern_alloc", st);
        return NULL;
    }
    memset(g->host, GUARD_BYTE, total);
    return g;
}

void bufs_free(const struct kern_ctx *ctx, struct bufs *bs) {
    for (int i = 0; i < bs->n; i++) {
        kern_free(ctx, bs->b[i].dev);
        free(bs->b[i].host);
    }
    bs->n = 0;
}

enum result bufs_upload(const struct kern_ctx *ctx, struct bufs *bs) {
    for (int i = 0; i < bs->n; i++) {
        enum tl_status st =
            kern_upload(ctx, bs->b[i].dev, bs->b[i].host, bs->b[i].bytes + 2 * GUARD_BYTES);
        if (st != TL_OK) {
            report_cuda(ctx, "kern_upload", st);
            return RES_ERROR;
        }
    }
    return RES_PASS;
}

enum result bufs_download_check(const struct kern_ctx *ctx, struct bufs *bs) {
    enum tl_status st;
    for (int i = 0; i < bs->n; i++) {
        st = kern_download(ctx, bs->b[i].host, bs->b[i].dev, bs->b[i].bytes + 2 * GUARD_BYTES);
        if (st != TL_OK) {
            report_cuda(ctx, "kern_download", st);
            return RES_ERROR;
        }
    }
    if ((st = kern_sync(ctx)) != TL_OK) {
        report_cuda(ctx, "kern_sync", st);
        return RES_ERROR;
    }
    enum result r = RES_PASS;
    for (int i = 0; i < bs->n; i++) {
        const struct gbuf *g = &bs->b[i];
        for (size_t k = 0; k < GUARD_BYTES; k++) {
            if (g->host[k] != GUARD_BYTE) {
                fprintf(stderr, "    %s: byte %zd before the buffer was overwritten\n", g->name,
                        (ptrdiff_t)k - GUARD_BYTES);
                r = RES_FAIL;
                break;
            }
        }
        for (size_t k = 0; k < GUARD_BYTES; k++) {
            if (g->host[GUARD_BYTES + g->bytes + k] != GUARD_BYTE) {
                fprintf(stderr, "    %s: byte %zu after the end (%zu bytes) was overwritten\n",
                        g->name, k, g->bytes);
                r = RES_FAIL;
                break;
            }
        }
    }
    return r;
}

/* ---------------- comparison ---------------- */

void gh_line_add(char *line, size_t line_size, const char *fmt, ...) {
    size_t used = strlen(line);
    va_list ap;
    va_start(ap, fmt);
    if (used < line_size) vsnprintf(line + used, line_size - used, fmt, ap);
    va_end(ap);
}

/* Element i of got (n elements of dt), widened to fp32. */
static float got_at(enum tl_dtype dt, const void *got, size_t i) {
    float f;
    dtype_to_f32(dt, (const char *)got + i * dtype_size(dt), &f, 1);
    return f;
}

/* True when element i of got holds dt's poison pattern. */
static bool got_poisoned(enum tl_dtype dt, const void *got, size_t i) {
    if (dt == TL_DTYPE_F32) {
        uint32_t bits;
        memcpy(&bits, (const char *)got + 4 * i, 4);
        return bits == POISON32;
    }
    return ((const uint16_t *)got)[i] == (uint16_t)POISON16;
}

enum result gh_compare(const char *what, enum tl_dtype dt, const void *got, const float *ref,
                       size_t n, double tol, char *line, size_t line_size) {
    double num = 0, den = 0, worst = -1;
    size_t worst_i = 0;
    for (size_t i = 0; i < n; i++) {
        float g = got_at(dt, got, i);
        if (!isfinite(g) || !isfinite(ref[i])) {
            fprintf(stderr, "    %s[%zu]: gpu %g, cpu %g: not finite%s\n", what, i, (double)g,
                    (double)ref[i], got_poisoned(dt, got, i) ? " (gpu never wrote it)" : "");
            gh_line_add(line, line_size, " %s NaN/Inf at %zu", what, i);
            return RES_FAIL;
        }
        double d = (double)g - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
        if (fabs(d) > worst) worst = fabs(d), worst_i = i;
    }
    double err = den > 0 ? sqrt(num / den) : sqrt(num);
    gh_line_add(line, line_size, " %s %.1e", what, err);
    if (err > tol) {
        fprintf(
            stderr,
            "    %s: relative L2 error %.3e > tolerance %.1e; worst at %zu: gpu %.9g cpu %.9g\n",
            what, err, tol, worst_i, (double)got_at(dt, got, worst_i), (double)ref[worst_i]);
        return RES_FAIL;
    }
    return RES_PASS;
}

/* ---------------- argument checks ---------------- */

enum result gh_check_statuses(const struct kern_ctx *ctx, const struct gh_status_check *checks,
                              size_t n) {
    enum result r = RES_PASS;
    for (size_t i = 0; i < n; i++) {
        if (checks[i].got != checks[i].want) {
            fprintf(stderr, "    %s: got %s, want %s\n", checks[i].what,
                    tl_status_str(checks[i].got), tl_status_str(checks[i].want));
            r = RES_FAIL;
        }
    }
    if (kern_last_error(ctx)[0] == '\0') {
        fprintf(stderr, "    bad arguments left no message\n");
        r = RES_FAIL;
    }
    /* Nothing was launched, so the stream is still healthy. */
    enum tl_status st = kern_sync(ctx);
    if (st != TL_OK) {
        report_cuda(ctx, "kern_sync after bad arguments", st);
        r = RES_ERROR;
    }
    return r;
}
