/* kern_kvcrc: two kernels per launch of up to MAX_LAUNCH images. The first gives each thread a
 * run of RUN consecutive image bytes (crossing pieces where the image does), which it checksums
 * with slice-by-8 tables built in shared memory (16-byte loads where the layout is aligned);
 * the block's THREADS runs are joined in a tree (warp shuffles, then across warps) into one
 * slice CRC in scratch. The second joins an image's slices in order. Joining uses
 * crc(a b) = crc(a) * x^(8 |b|) + crc(b) mod P, with x^(2^k) mod P precomputed on the host and
 * passed as a kernel parameter and staged in shared memory (device functions take no address of
 * a parameter, which would copy the parameters to local memory), so a join of a power-of-two
 * length costs one multiplication. */
#include <stdlib.h>
#include <string.h>

#include "kern_impl.h"
#include "kern_kvcrc.h"

#define POLY       0x82f63b78u /* reflected Castagnoli polynomial, as offload/crc32c.c */
#define RUN        4096        /* bytes per thread */
#define THREADS    128         /* runs per slice (one block of threads) */
#define MAX_LAUNCH 256         /* images per launch: their block ids travel as parameters */

struct crc_args {
    const char *dev;
    uint32_t *partial; /* (MAX_LAUNCH, slices) slice CRCs */
    uint32_t *out;     /* (n) */
    size_t piece_bytes, piece_stride, image_bytes;
    int n, slices, vec;
    uint32_t x2n[64]; /* x^(2^k) mod P, reflected */
    int32_t blocks[MAX_LAUNCH];
};

struct kern_kvcrc {
    const struct kern_ctx *ctx;
    size_t piece_bytes, image_bytes;
    int n_pieces, slices;
    uint32_t x2n[64];
    uint32_t *partial; /* device (MAX_LAUNCH, slices) */
    uint32_t *res;     /* device (MAX_LAUNCH): kern_kvcrc_blocks' results */
};

/* a * b mod P, both reflected (x^0 is the top bit); a != 0 */
__host__ __device__ static inline uint32_t mult_mod(uint32_t a, uint32_t b) {
    uint32_t m = 1u << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0) break;
        }
        m >>= 1;
        b = b & 1 ? (b >> 1) ^ POLY : b >> 1;
    }
    return p;
}

/* crc(a b) from crc(a), crc(b) and |b| (crc32c_combine) */
__device__ static uint32_t combine(const uint32_t *x2n, uint32_t a, uint32_t b, uint64_t len_b) {
    uint32_t p = 0; /* x^(8 len_b); 0 until the first factor */
    for (int k = 3; len_b && k < 64; k++, len_b >>= 1)
        if (len_b & 1) p = p ? mult_mod(x2n[k], p) : x2n[k];
    return (p ? mult_mod(p, a) : a) ^ b;
}

/* 8 bytes (lo: the first four, little-endian) through the register */
__device__ static inline uint32_t step8(const uint32_t (*t)[256], uint32_t c, uint32_t lo,
                                        uint32_t hi) {
    lo ^= c;
    return t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
           t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
}

/* One image's layout, by value. */
struct crc_layout {
    const char *base; /* the image's piece 0 */
    size_t piece_bytes, piece_stride;
    int vec; /* 16-byte loads: pieces and their addresses are multiples of 16 */
};

/* The raw register after bytes [off, off + len) of the image, from c. */
__device__ static uint32_t crc_range(const uint32_t (*t)[256], crc_layout l, size_t off, size_t len,
                                     uint32_t c) {
    while (len) {
        size_t piece = off / l.piece_bytes, in = off - piece * l.piece_bytes;
        size_t n = l.piece_bytes - in < len ? l.piece_bytes - in : len;
        const char *p = l.base + piece * l.piece_stride + in;
        if (l.vec) { /* n and p are multiples of 16 */
            const uint4 *__restrict__ q = (const uint4 *)p;
            size_t m = n / 16, i = 0;
            for (; i + 2 <= m; i += 2) {
                uint4 v = q[i], w = q[i + 1];
                c = step8(t, c, v.x, v.y);
                c = step8(t, c, v.z, v.w);
                c = step8(t, c, w.x, w.y);
                c = step8(t, c, w.z, w.w);
            }
            if (i < m) {
                uint4 v = q[i];
                c = step8(t, c, v.x, v.y);
                c = step8(t, c, v.z, v.w);
            }
        } else {
            const unsigned char *__restrict__ q = (const unsigned char *)p;
            for (size_t i = 0; i < n; i++) c = t[0][(c ^ q[i]) & 0xff] ^ (c >> 8);
        }
        off += n;
        len -= n;
    }
    return c;
}

/* grid (slices, n), THREADS threads: partial[img][slice] = CRC of that slice of the image */
static __global__ void __launch_bounds__(THREADS) kvcrc_slice_kernel(const crc_args a) {
    __shared__ uint32_t t[8][256];
    __shared__ uint32_t w_crc[THREADS / 32];
    __shared__ uint64_t w_len[THREADS / 32];
    __shared__ uint32_t x2n[64];
    if (threadIdx.x < 64) x2n[threadIdx.x] = a.x2n[threadIdx.x];
    for (int n = threadIdx.x; n < 256; n += THREADS) {
        uint32_t c = (uint32_t)n;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        t[0][n] = c;
    }
    __syncthreads();
    for (int k = 1; k < 8; k++) {
        for (int n = threadIdx.x; n < 256; n += THREADS)
            t[k][n] = (t[k - 1][n] >> 8) ^ t[0][t[k - 1][n] & 0xff];
        __syncthreads();
    }
    int img = blockIdx.y;
    crc_layout l = {a.dev + (size_t)a.blocks[img] * a.piece_bytes, a.piece_bytes, a.piece_stride,
                    a.vec};
    size_t off = ((size_t)blockIdx.x * THREADS + threadIdx.x) * RUN;
    uint64_t len =
        off < a.image_bytes ? (a.image_bytes - off < RUN ? a.image_bytes - off : RUN) : 0;
    uint32_t crc = len ? ~crc_range(t, l, off, len, ~0u) : 0;
    /* join neighbours: lane l takes lane l + d's run after its own */
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int d = 1; d < 32; d <<= 1) {
        uint32_t oc = __shfl_down_sync(0xffffffffu, crc, d);
        uint64_t ol = __shfl_down_sync(0xffffffffu, len, d);
        if ((lane & (2 * d - 1)) == 0 && ol) {
            crc = combine(x2n, crc, oc, ol);
            len += ol;
        }
    }
    if (lane == 0) {
        w_crc[warp] = crc;
        w_len[warp] = len;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < THREADS / 32; k++)
            if (w_len[k]) crc = combine(x2n, crc, w_crc[k], w_len[k]);
        a.partial[(size_t)img * a.slices + blockIdx.x] = crc;
    }
}

/* one thread per image: out[img] = its slices joined in order */
static __global__ void kvcrc_join_kernel(const crc_args a) {
    __shared__ uint32_t x2n[64];
    for (int k = threadIdx.x; k < 64; k += blockDim.x) x2n[k] = a.x2n[k];
    __syncthreads();
    int img = blockIdx.x * blockDim.x + threadIdx.x;
    if (img >= a.n) return;
    const uint64_t slice = (uint64_t)THREADS * RUN;
    uint32_t crc = 0;
    for (int s = 0; s < a.slices; s++) {
        uint64_t off = (uint64_t)s * slice;
        uint64_t len = a.image_bytes - off < slice ? a.image_bytes - off : slice;
        crc = combine(x2n, crc, a.partial[(size_t)img * a.slices + s], len);
    }
    a.out[img] = crc;
}

extern "C" enum tl_status kern_kvcrc_create(const struct kern_ctx *ctx, size_t piece_bytes,
                                            int n_pieces, struct kern_kvcrc **out,
                                            struct tl_err *err) {
    enum tl_status st = TL_OK;
    struct kern_kvcrc *c = NULL;
    size_t runs;
    *out = NULL;
    if (!piece_bytes || n_pieces < 1)
        return tl_fail(err, TL_ERR_INVALID, "kern_kvcrc: %d pieces of %zu bytes", n_pieces,
                       piece_bytes);
    KERN_CUDA(err, kern_enter(ctx));
    c = (struct kern_kvcrc *)calloc(1, sizeof *c);
    if (!c) KERN_FAIL(err, TL_ERR_NOMEM, "out of host memory");
    c->ctx = ctx;
    c->piece_bytes = piece_bytes;
    c->n_pieces = n_pieces;
    c->image_bytes = piece_bytes * (size_t)n_pieces;
    runs = (c->image_bytes + RUN - 1) / RUN;
    c->slices = (int)((runs + THREADS - 1) / THREADS);
    c->x2n[0] = 1u << 30; /* x^1 */
    for (int k = 1; k < 64; k++) c->x2n[k] = mult_mod(c->x2n[k - 1], c->x2n[k - 1]);
    KERN_CUDA(err, cudaMalloc((void **)&c->partial,
                              (size_t)MAX_LAUNCH * (size_t)c->slices * sizeof(uint32_t)));
    KERN_CUDA(err, cudaMalloc((void **)&c->res, MAX_LAUNCH * sizeof(uint32_t)));
    *out = c;
    c = NULL;
cleanup:
    kern_kvcrc_destroy(c);
    return st;
}

extern "C" void kern_kvcrc_destroy(struct kern_kvcrc *c) {
    if (!c) return;
    if (kern_enter(c->ctx) == cudaSuccess) {
        if (c->partial) (void)cudaFree(c->partial);
        if (c->res) (void)cudaFree(c->res);
    }
    free(c);
}

extern "C" enum tl_status kern_kvcrc_queue(struct kern_kvcrc *c, void *stream, const char *dev,
                                           size_t piece_stride, const int32_t *blocks, int n,
                                           uint32_t *out) {
    enum tl_status st = TL_OK;
    const struct kern_ctx *ctx = c->ctx;
    cudaStream_t s = stream ? (cudaStream_t)stream : ctx->stream;
    crc_args a;
    memset(&a, 0, sizeof a);
    a.dev = dev;
    a.partial = c->partial;
    a.piece_bytes = c->piece_bytes;
    a.piece_stride = piece_stride;
    a.image_bytes = c->image_bytes;
    a.slices = c->slices;
    a.vec = c->piece_bytes % 16 == 0 && piece_stride % 16 == 0 && (uintptr_t)dev % 16 == 0;
    memcpy(a.x2n, c->x2n, sizeof a.x2n);
    KERN_CUDA(ctx->err, kern_enter(ctx));
    for (int first = 0; first < n; first += MAX_LAUNCH) {
        a.n = n - first < MAX_LAUNCH ? n - first : MAX_LAUNCH;
        a.out = out + first;
        memcpy(a.blocks, blocks + first, (size_t)a.n * sizeof *blocks);
        kvcrc_slice_kernel<<<dim3((unsigned)c->slices, (unsigned)a.n), THREADS, 0, s>>>(a);
        kvcrc_join_kernel<<<(a.n + 31) / 32, 32, 0, s>>>(a);
        KERN_CUDA(ctx->err, cudaGetLastError());
    }
cleanup:
    return st;
}

extern "C" enum tl_status kern_kvcrc_blocks(struct kern_kvcrc *c, const char *dev,
                                            size_t piece_stride, const int32_t *blocks, int n,
                                            uint32_t *crc) {
    enum tl_status st = TL_OK;
    const struct kern_ctx *ctx = c->ctx;
    for (int first = 0; first < n; first += MAX_LAUNCH) {
        int m = n - first < MAX_LAUNCH ? n - first : MAX_LAUNCH;
        st = kern_kvcrc_queue(c, NULL, dev, piece_stride, blocks + first, m, c->res);
        if (st != TL_OK) goto cleanup;
        KERN_CUDA(ctx->err, cudaMemcpyAsync(crc + first, c->res, (size_t)m * sizeof *crc,
                                            cudaMemcpyDeviceToHost, ctx->stream));
        KERN_CUDA(ctx->err, cudaStreamSynchronize(ctx->stream));
    }
cleanup:
    return st;
}
