/* test_gpu_kvcrc: the KV tiers' checksums on the GPU are offload/crc32c.c's, bit for bit. Fresh
 * random KV pools of several layouts (the 14B's 96 pieces of 32 KiB, small models', pieces that
 * defeat 16-byte loads, odd sizes, images spanning several slices with a partial last run, a
 * misaligned pool, more blocks than one launch takes), random block ids: kern_kvcrc against
 * crc32c over the image gathered on the host. Then through kern_kvcopy as the tiers use it:
 * the checksum of a copy out equals the host CRC of what arrived, a copy in reports the CRC of
 * what landed, and an image corrupted in host memory before its copy in is reported with a
 * different CRC (kvswap then fails the sequence and recomputes it: test_gpu_kv_tiers). Prints
 * the checksum kernel's rate on the 14B layout. Skips (77) without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crc32c.h"
#include "gpu_harness.h"
#include "kern.h"
#include "kern_kvcopy.h"
#include "kern_kvcrc.h"

struct layout {
    const char *what;
    size_t piece_bytes;
    int n_pieces;
    int num_blocks;  /* blocks in the pool */
    int n;           /* blocks checksummed in one call */
    size_t misalign; /* bytes the pool starts past an aligned address */
};

static const struct layout cases[] = {
    {"14B bf16: 96 pieces of 32 KiB (3 MiB images)", 32768, 96, 40, 24, 0},
    {"0.5B bf16: 48 pieces of 4 KiB", 4096, 48, 64, 40, 0},
    {"tiny fixture: 6 pieces of 1 KiB", 1024, 6, 32, 32, 0},
    {"pieces of 48 bytes (16-byte loads, runs cross pieces)", 48, 3, 16, 16, 0},
    {"pieces of 100 bytes (byte loads)", 100, 5, 16, 16, 0},
    {"pieces of 7 bytes", 7, 3, 16, 16, 0},
    {"800,000-byte images: two slices, a partial last run", 20000, 40, 12, 9, 0},
    {"1 MiB single piece", 1048576, 1, 6, 6, 0},
    {"misaligned pool (byte loads)", 4096, 12, 16, 16, 3},
    {"300 blocks in one call (two launches)", 256, 8, 400, 300, 0},
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void fill_random(unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i += 4) {
        uint32_t r = urand(0xffffffffu);
        for (size_t k = 0; k < 4 && i + k < n; k++) p[i + k] = (unsigned char)(r >> (8 * k));
    }
}

/* Gathers block b's image from a host copy of the pool. */
static void gather(const unsigned char *pool, const struct layout *l, int32_t b,
                   unsigned char *img) {
    size_t stride = (size_t)l->num_blocks * l->piece_bytes;
    for (int p = 0; p < l->n_pieces; p++)
        memcpy(img + (size_t)p * l->piece_bytes,
               pool + (size_t)p * stride + (size_t)b * l->piece_bytes, l->piece_bytes);
}

/* Distinct random block ids. */
static void pick_blocks(int32_t *blocks, int n, int num_blocks) {
    int32_t *all = malloc((size_t)num_blocks * sizeof *all);
    for (int i = 0; i < num_blocks; i++) all[i] = i;
    for (int i = 0; i < n; i++) {
        int j = i + (int)urand((uint32_t)(num_blocks - i));
        int32_t t = all[i];
        all[i] = all[j];
        all[j] = t;
        blocks[i] = all[i];
    }
    free(all);
}

static enum result run_case(struct kern_ctx *ctx, const struct layout *l) {
    size_t image = l->piece_bytes * (size_t)l->n_pieces;
    size_t pool_bytes = image * (size_t)l->num_blocks,
           stride = (size_t)l->num_blocks * l->piece_bytes;
    unsigned char *pool = malloc(pool_bytes), *img = malloc(image);
    int32_t *blocks = malloc((size_t)l->n * sizeof *blocks);
    uint32_t *got = malloc((size_t)l->n * sizeof *got);
    void *dev = NULL;
    struct kern_kvcrc *kc = NULL;
    struct tl_err err;
    enum result r = RES_ERROR;
    enum tl_status st;
    if (!pool || !img || !blocks || !got) {
        fprintf(stderr, "    out of host memory\n");
        goto out;
    }
    fill_random(pool, pool_bytes);
    pick_blocks(blocks, l->n, l->num_blocks);
    if ((st = kern_alloc(ctx, pool_bytes + 16, &dev)) != TL_OK ||
        (st = kern_upload(ctx, (char *)dev + l->misalign, pool, pool_bytes)) != TL_OK ||
        (st = kern_sync(ctx)) != TL_OK) {
        report_cuda(ctx, "upload", st);
        goto out;
    }
    if ((st = kern_kvcrc_create(ctx, l->piece_bytes, l->n_pieces, &kc, &err)) != TL_OK) {
        fprintf(stderr, "    kern_kvcrc_create: %s\n", err.msg);
        goto out;
    }
    if ((st = kern_kvcrc_blocks(kc, (char *)dev + l->misalign, stride, blocks, l->n, got)) !=
        TL_OK) {
        report_cuda(ctx, "kern_kvcrc_blocks", st);
        goto out;
    }
    r = RES_PASS;
    for (int i = 0; i < l->n; i++) {
        gather(pool, l, blocks[i], img);
        uint32_t want = crc32c(0, img, image);
        if (got[i] != want) {
            fprintf(stderr, "    block %d (image %d of the call): GPU %08x, crc32c %08x\n",
                    blocks[i], i, got[i], want);
            r = RES_FAIL;
            break;
        }
    }
out:
    kern_kvcrc_destroy(kc);
    if (dev) kern_free(ctx, dev);
    free(pool);
    free(img);
    free(blocks);
    free(got);
    return r;
}

/* The kernel's rate on the 14B layout: 64 images of 3 MiB, best of 5. */
static enum result rate(struct kern_ctx *ctx) {
    enum { N = 64, PIECES = 96 };
    const size_t piece = 32768, stride = (size_t)N * piece;
    void *dev = NULL;
    struct kern_kvcrc *kc = NULL;
    struct tl_err err;
    int32_t blocks[N];
    uint32_t got[N];
    enum result r = RES_ERROR;
    enum tl_status st;
    for (int i = 0; i < N; i++) blocks[i] = i;
    if ((st = kern_alloc(ctx, stride * PIECES, &dev)) != TL_OK ||
        kern_kvcrc_create(ctx, piece, PIECES, &kc, &err) != TL_OK) {
        report_cuda(ctx, "rate setup", st);
        goto out;
    }
    double best = 1e30;
    for (int rep = 0; rep < 6; rep++) {
        double t0 = now_s();
        if ((st = kern_kvcrc_blocks(kc, dev, stride, blocks, N, got)) != TL_OK) {
            report_cuda(ctx, "kern_kvcrc_blocks", st);
            goto out;
        }
        double dt = now_s() - t0;
        if (rep > 0 && dt < best) best = dt;
    }
    printf("  rate: %d images of %.0f MiB checksummed in %.3f ms = %.0f GB/s (host wall time, "
           "launches and the result copy included)\n",
           N, piece * PIECES / 1048576.0, best * 1e3, (double)N * piece * PIECES / best / 1e9);
    r = RES_PASS;
out:
    kern_kvcrc_destroy(kc);
    if (dev) kern_free(ctx, dev);
    return r;
}

/* kern_kvcopy with checksums, both ways, and a corrupted host image caught on the way in. */
static enum result copier(struct kern_ctx *ctx) {
    enum { NB = 48, N = 40, PIECES = 10 };
    const size_t piece = 2048, stride = (size_t)NB * piece, image = piece * PIECES;
    unsigned char *pool = malloc(stride * PIECES), *img = malloc(image);
    void *dev = NULL, *host = NULL;
    struct kern_kvcopier *cp = NULL;
    struct tl_err err;
    int32_t blocks[N], other[N];
    void *hp[N];
    uint32_t out_crc[N], in_crc[N], *pc_out[N], *pc_in[N];
    uint64_t t, fin;
    enum result r = RES_ERROR;
    enum tl_status st;
    if (!pool || !img) goto out;
    fill_random(pool, stride * PIECES);
    pick_blocks(blocks, N, NB);
    if ((st = kern_alloc(ctx, stride * PIECES, &dev)) != TL_OK ||
        (st = kern_upload(ctx, dev, pool, stride * PIECES)) != TL_OK ||
        (st = kern_sync(ctx)) != TL_OK || (st = kern_host_alloc(ctx, image * N, &host)) != TL_OK) {
        report_cuda(ctx, "copier setup", st);
        goto out;
    }
    if (kern_kvcopy_create(ctx, &cp, &err) != TL_OK ||
        kern_kvcopy_enable_crc(cp, piece, PIECES, &err) != TL_OK) {
        fprintf(stderr, "    kern_kvcopy: %s\n", err.msg);
        goto out;
    }
    for (int i = 0; i < N; i++) {
        hp[i] = (char *)host + (size_t)i * image;
        pc_out[i] = &out_crc[i];
        pc_in[i] = &in_crc[i];
        other[i] = blocks[(i + 1) % N]; /* back in, into other blocks of the set */
    }
    if ((st = kern_kvcopy_blocks(cp, 0, dev, piece, stride, PIECES, blocks, hp, pc_out, N, &t)) !=
            TL_OK ||
        (st = kern_kvcopy_done(cp, t, &fin)) != TL_OK) {
        report_cuda(ctx, "copy out", st);
        goto out;
    }
    r = RES_PASS;
    for (int i = 0; i < N && r == RES_PASS; i++) {
        gather(pool, &(struct layout){"", piece, PIECES, NB, N, 0}, blocks[i], img);
        if (memcmp(img, hp[i], image) != 0 || out_crc[i] != crc32c(0, img, image)) {
            fprintf(stderr, "    copy out of block %d: %s, CRC %08x, host %08x\n", blocks[i],
                    memcmp(img, hp[i], image) ? "bytes differ" : "bytes equal", out_crc[i],
                    crc32c(0, img, image));
            r = RES_FAIL;
        }
    }
    if (r != RES_PASS) goto out;
    /* image 5 is damaged in host memory before it goes back in */
    ((unsigned char *)hp[5])[image / 3] ^= 0x20;
    if ((st = kern_kvcopy_blocks(cp, 1, dev, piece, stride, PIECES, other, hp, pc_in, N, &t)) !=
            TL_OK ||
        (st = kern_kvcopy_done(cp, t, &fin)) != TL_OK) {
        report_cuda(ctx, "copy in", st);
        r = RES_ERROR;
        goto out;
    }
    for (int i = 0; i < N && r == RES_PASS; i++) {
        bool damaged = i == 5;
        if ((in_crc[i] == out_crc[i]) == damaged || in_crc[i] != crc32c(0, hp[i], image)) {
            fprintf(stderr, "    copy in of image %d%s: landed CRC %08x, taken out %08x\n", i,
                    damaged ? " (damaged)" : "", in_crc[i], out_crc[i]);
            r = RES_FAIL;
        }
    }
out:
    kern_kvcopy_destroy(cp);
    if (host) kern_host_free(ctx, host);
    if (dev) kern_free(ctx, dev);
    free(pool);
    free(img);
    return r;
}

int main(void) {
    struct kern_ctx *ctx;
    int rc = gh_start(&ctx);
    if (rc) return rc;
    int failed = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        enum result r = run_case(ctx, &cases[i]);
        printf("  %-4s %s, %d blocks\n", result_str(r), cases[i].what, cases[i].n);
        failed += r != RES_PASS;
        if (r == RES_ERROR) break;
    }
    if (!failed) {
        enum result r = copier(ctx);
        printf("  %-4s kern_kvcopy with checksums: out, in, a damaged image caught\n",
               result_str(r));
        failed += r != RES_PASS;
    }
    if (!failed) failed += rate(ctx) != RES_PASS;
    kern_ctx_destroy(ctx);
    printf("%s\n", failed ? "FAILED" : "all passed");
    return failed ? 1 : 0;
}
