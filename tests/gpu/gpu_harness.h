/* gpu_harness: what the GPU op tests (test_gpu_ops, test_gpu_matmul, test_gpu_attention) share:
 * the start of main (skip without a GPU, seed, context), a seeded random source, guarded device
 * buffers (GUARD_BYTES of sentinel before and after every buffer, checked after each run so an
 * out-of-bounds write fails), NaN poison for outputs (an element never written fails), the
 * relative-L2 comparison of a GPU result against its CPU reference, and the argument-check
 * loop. Tolerances and cases stay in each test.
 *
 * Results: RES_PASS, RES_FAIL, or RES_ERROR for a CUDA failure (stop: the context may be dead).
 * Details of a failure go to stderr, indented four spaces; a case's one-line summary is built in
 * a caller's buffer (`line`) with gh_line_add. */
#ifndef TL_TEST_GPU_HARNESS_H
#define TL_TEST_GPU_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "kern.h"

#define GUARD_BYTES 256         /* sentinel bytes before and after every GPU buffer */
#define GUARD_BYTE  0xA5        /* as fp32 -2.9e-16, bf16/f16 -2.9e-16 / -0.0227: never written */
#define MAX_BUFS    16          /* buffers in one struct bufs */
#define POISON16    0xFFFFu     /* a NaN in both BF16 and F16; no kernel writes this pattern */
#define POISON32    0x7fc0deadu /* a quiet fp32 NaN; no kernel writes this pattern */

enum result {
    RES_PASS = 0,
    RES_FAIL,
    RES_ERROR /* a CUDA failure: stop, the context may be dead */
};

/* "ok", "FAIL" or "CUDA ERROR". */
const char *result_str(enum result r);

/* Prints "    what: status: kern_last_error(ctx)" to stderr. */
void report_cuda(const struct kern_ctx *ctx, const char *what, enum tl_status st);

/* The start of a test's main: without a usable GPU prints "skip: why" and returns 77; seeds
 * frand / urand from TL_TEST_SEED (strtoull, base 0) or else the clock and pid, and prints the
 * seed; creates a context on device 0 into *ctx (on failure prints why and returns 1). 0 when
 * *ctx is ready. */
int gh_start(struct kern_ctx **ctx);

/* ---------------- random inputs (xorshift64, seeded by gh_start) ---------------- */

/* Uniform in [-1, 1), in steps of 2^-23. */
float frand(void);
/* Uniform in [0, bound); bound > 0. */
uint32_t urand(uint32_t bound);
/* v rounded to dt (F16 / BF16; F32 unchanged). */
float gh_round(enum tl_dtype dt, float v);
/* n values offset + scale * frand(), rounded to dt: f32 gets the rounded values, raw (when
 * non-NULL) the same values in dt's storage. */
void gh_fill(enum tl_dtype dt, float *f32, void *raw, size_t n, float offset, float scale);
/* n 16-bit elements of p set to POISON16. */
void poison16(void *p, size_t n);
/* n fp32 elements of p set to the bits POISON32. */
void gh_poison32(void *p, size_t n);
/* True when f holds the bits POISON32 (an element the GPU never wrote). */
bool gh_is_poison32(float f);

/* ---------------- guarded GPU buffers ---------------- */

/* bytes of data with GUARD_BYTES of sentinel on each side, on the device and staged on the host
 * (same layout). Fill host data (hdata), upload, run on ddata, download, check guards, read
 * host data. */
struct gbuf {
    const char *name;
    size_t bytes;
    unsigned char *host; /* owned: GUARD + bytes + GUARD */
    unsigned char *dev;  /* owned (kern_alloc): same layout */
};

/* One case's buffers, freed together. Start as {.n = 0}. */
struct bufs {
    struct gbuf b[MAX_BUFS];
    int n;
};

/* A new buffer of `bytes` bytes in bs, its host copy all GUARD_BYTE (data included, so bytes a
 * test leaves unset upload as a known pattern); NULL (after a message) on failure. */
struct gbuf *gbuf_new(const struct kern_ctx *ctx, struct bufs *bs, const char *name, size_t bytes);

/* The data (past the leading guard) of the host copy / the device buffer. */
static inline void *hdata(const struct gbuf *g) {
    return g->host + GUARD_BYTES;
}
static inline void *ddata(const struct gbuf *g) {
    return g->dev + GUARD_BYTES;
}

/* Frees every buffer of bs (on both sides); bs is empty after. */
void bufs_free(const struct kern_ctx *ctx, struct bufs *bs);

/* Uploads every buffer, guards included. RES_PASS or RES_ERROR. */
enum result bufs_upload(const struct kern_ctx *ctx, struct bufs *bs);

/* Downloads every buffer (inputs too: a stray write may land anywhere), waits, checks guards:
 * RES_FAIL naming each overwritten guard, RES_ERROR on a CUDA failure. */
enum result bufs_download_check(const struct kern_ctx *ctx, struct bufs *bs);

/* ---------------- comparison ---------------- */

/* Appends printf-style text to a case's report line (line_size bytes, NUL-terminated). */
void gh_line_add(char *line, size_t line_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Relative L2 error ||got - ref|| / ||ref|| (absolute when ref is all zero) of got (n elements
 * of dt: F32, F16 or BF16) against ref (fp32); RES_FAIL above tol. Fails at once on a NaN/Inf in
 * either (noting a poisoned element as never written). Appends " what err" (or " what NaN/Inf
 * at i") to line; details of a failure go to stderr. */
enum result gh_compare(const char *what, enum tl_dtype dt, const void *got, const float *ref,
                       size_t n, double tol, char *line, size_t line_size);

/* ---------------- argument checks ---------------- */

/* One bad-argument call: the status it returned and the one it should have. */
struct gh_status_check {
    const char *what;
    enum tl_status got, want;
};

/* Bad arguments are answered with a status and a message, and launch nothing: RES_FAIL for each
 * check whose status differs, or when the context holds no error message; RES_ERROR when the
 * stream is not healthy after (kern_sync). */
enum result gh_check_statuses(const struct kern_ctx *ctx, const struct gh_status_check *checks,
                              size_t n);

#endif
