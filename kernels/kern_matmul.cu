/* kern_matmul: linear layers y = x . W^T (+ bias) in the activation dtype (F16 / BF16), fp32
 * accumulation, on the context's stream. Two paths:
 *
 * GEMV (m <= GEMV_AUTO_MAX_M, k a multiple of 8, 16-byte aligned x and weights): one launch for
 * the whole group of weights (q/k/v, gate/up). A CTA of 4 or 8 warps owns 16 rows of one
 * weight; its warps split k into contiguous slices, so every weight byte is read once, by one
 * thread, with a 16-byte load that bypasses L1. The products run on the tensor cores: the 16
 * rows are the A operand and up to 8 (16) rows of x the B operand of mma.m16n8k16, fed straight
 * from the loaded registers. That works because a dot product does not care in which order k
 * is summed: thread t holds elements 8*(t%4)..+7 of a 32-element piece of its row and of x's
 * row, and both operands assign them to the same mma k slots. Each thread issues 8 pieces of
 * loads (m <= 8; 4 for m <= 16) before its first mma: 8 KB per warp in flight. The slices are
 * summed through shared memory at the end, bias added in fp32, the result rounded once. m above
 * 16 (forced) runs in launches of 16 rows.
 *
 * Wide (m 17..64, same conditions): the same kernel with 4 (m <= 32) or 8 n8 tiles of x in one
 * launch, so the weights are read once per call rather than once per 16 rows. A warp owns 32
 * weight rows (two 16-row A tiles) so that each x fragment, loaded from L2 by every CTA, feeds
 * two mmas: x traffic is m / 32 of the weight traffic (2x at m = 64; m / 16 with 16 rows, the
 * variant forced path 4 keeps for comparison). The accumulators (up to 64) and x fragments
 * leave room for 4 (m <= 32) or 2 pieces in flight and ~200-250 registers a thread, so 8 warps
 * an SM. The fused forms take the same path for m 17..64.
 *
 * What the measurements (bench/bench_gpu_matmul, H100 SXM, 14B decode shapes) decided:
 *   - the L2::256B prefetch hint on the weight loads: +8..12% of bandwidth (a thread group
 *     reads only 64 bytes of a row per load; the hint makes L2 fetch whole 256-byte blocks);
 *   - 16 rows per CTA with 8 pieces in flight beat 32 rows with 4 (+1..3% on the large shapes);
 *   - 4 warps per CTA when all tiles fit in one wave of 4-warp CTAs (o, down: 320 tiles on 132
 *     SMs), else 8: a 1.2-wave tail cost 3..5% on those shapes;
 *   - programmatic dependent launch (the first weight loads go out before griddepcontrol.wait,
 *     x is read and y written after it): +2..4% on the small shapes, back to back;
 *   - no gain from a persistent grid or from interleaving the warps' pieces of k.
 *
 * cuBLAS (everything else): cublasGemmEx per weight, CUBLAS_COMPUTE_32F, the row-major product
 * mapped to column-major as D (n, m) = W^T' (n, k) . x' (k, m). A bias is broadcast into y first
 * and the GEMM runs with beta = 1, so the bias joins the fp32 accumulator and y is rounded once,
 * as torch's addmm does. The handle's math mode disallows reduced-precision split-K reductions;
 * it uses cuBLAS's default workspace (allocated with the handle, bound to the context's stream).
 *
 * Nothing here blocks the host. */
#include "kern.h"
#include "kern_impl.h"
#include "kern_matmul.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

/* Rows of x up to which the automatic choice takes the GEMV (bench/bench_gpu_matmul, H100 SXM,
 * 14B shapes, BF16: the GEMV beats cuBLAS at every m <= 16 it can take; at m = 32 its two
 * passes over the weights lose to cuBLAS everywhere). */
#define GEMV_AUTO_MAX_M 16
/* Rows of x one GEMV launch handles (two n8 tiles of the mma). */
#define GEMV_MAX_M 16
/* Rows of x one wide launch handles (eight n8 tiles), and the range of m the automatic choice
 * gives it above GEMV_AUTO_MAX_M: measured (bench_gpu_matmul, H100, 14B shapes, m 17..64) it
 * beats cuBLAS only on a group of small weights, q/k/v (0.75-0.63 of the read ceiling against
 * cuBLAS's 0.57-0.53, which runs the three as separate GEMMs); on o, gate/up, down and lm_head
 * cuBLAS reads 0.72 / 0.86 / 0.80 / 0.92 of the ceiling where the wide form reaches 0.71-0.50 /
 * 0.86-0.65 / 0.80-0.59 / 0.92-0.71, falling as m grows (x re-read from L2 per CTA). So the
 * automatic choice takes it for groups whose every weight has at most WIDE_AUTO_MAX_ROWS rows. */
#define WIDE_MAX_M         64
#define WIDE_AUTO_MAX_M    64
#define WIDE_AUTO_MAX_ROWS 8192

static int force_path; /* 0 auto, 1 GEMV, 2 cuBLAS, 3 wide, 4 wide 16 rows a warp: tests, benches */

void kern_matmul_force_path(int path) {
    force_path = path;
}

/* ---------------- GEMV ---------------- */

struct gemv_part {
    const void *w;    /* (rows, k) */
    const void *bias; /* (rows) or NULL */
    void *y;          /* (m, rows) */
    int rows;
};

/* One launch: up to KERN_MATMUL_MAX_GROUP weights sharing x. Block b works on weight p where
 * tile_start[p] <= b < tile_start[p + 1], rows (b - tile_start[p]) * 16 * RT onwards (RT = 1
 * as launched). Passed by value as the kernel's parameter. */
struct gemv_args {
    struct gemv_part part[KERN_MATMUL_MAX_GROUP];
    int tile_start[KERN_MATMUL_MAX_GROUP + 1];
    int n_w;
    const void *x; /* (m, k) */
    int m, k;
    /* Fused forms (kern_matmul_fused): */
    const void *norm_w; /* (k) act dtype: x is the residual stream, rmsnorm'd on the way in */
    float eps;
    const void *w2; /* EPI_SILU: the up weight, paired row for row with part[0] (gate) */
};

/* What a GEMV does around the product (the kernel's MODE): */
enum {
    GEMV_STORE = 0, /* y = x . W^T (+ bias) */
    GEMV_NORM = 1,  /* the same on rmsnorm(x) * norm_w */
    GEMV_SILU = 2,  /* rmsnorm'd x; a CTA owns 8 rows of gate and the same 8 of up: y = silu(g)*u */
    GEMV_RESADD = 3,  /* y += x . W^T (+ bias): the residual add of o_proj / down_proj */
    GEMV_SILU_RAW = 4 /* as GEMV_SILU on x as it is */
};

/* A 16-byte load that streams past L1 (each weight byte is read once) and asks L2 to fetch the
 * whole 256-byte block on a miss: a thread group reads only 64 bytes of a row per load, and
 * the hint turns that into full-block DRAM reads (measured: +8 to +12% of bandwidth). Volatile,
 * so that the loads stay before griddepcontrol.wait. */
static __device__ __forceinline__ uint4 load_stream(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* Programmatic dependent launch: waits until the kernels this one depends on have finished
 * and their writes are visible (returns at once when launched without the attribute). */
static __device__ __forceinline__ void grid_dep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 /* PDL is Hopper and newer */
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* d (16 x 8, fp32) += a (16 x 16) . b (16 x 8) on the tensor cores, 16-bit inputs. */
template <typename T>
static __device__ __forceinline__ void mma_16816(float (&d)[4], uint32_t a0, uint32_t a1,
                                                 uint32_t a2, uint32_t a3, uint32_t b0,
                                                 uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], uint32_t a0, uint32_t a1,
                                                         uint32_t a2, uint32_t a3, uint32_t b0,
                                                         uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], uint32_t a0, uint32_t a1,
                                                  uint32_t a2, uint32_t a3, uint32_t b0,
                                                  uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <typename T> static __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ __half from_f32<__half>(float v) {
    return __float2half_rn(v);
}
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

/* v rounded to T and widened back: the value a T tensor would hold. */
template <typename T> static __device__ __forceinline__ float round_to(float v) {
    const T t = from_f32<T>(v);
    return kern_load_f32(&t, 0);
}

/* Two packed T values of x times the norm weight, rounded to T. */
template <typename T> static __device__ __forceinline__ uint32_t scale2(uint32_t xv, uint32_t wv) {
    T x[2], w[2], o[2];
    memcpy(x, &xv, 4);
    memcpy(w, &wv, 4);
#pragma unroll
    for (int j = 0; j < 2; j++) o[j] = from_f32<T>(kern_load_f32(w, j) * kern_load_f32(x, j));
    uint32_t r;
    memcpy(&r, o, 4);
    return r;
}

template <typename T> static __device__ __forceinline__ uint4 scale8(uint4 x, uint4 w) {
    return make_uint4(scale2<T>(x.x, w.x), scale2<T>(x.y, w.y), scale2<T>(x.z, w.z),
                      scale2<T>(x.w, w.w));
}

template <typename T> static __device__ __forceinline__ float sumsq8(uint4 v) {
    T e[8];
    memcpy(e, &v, 16);
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const float f = kern_load_f32(e, j);
        s += f * f;
    }
    return s;
}

/* U pieces of k (32 elements each, c .. c + U - 1) of this thread's rows: weight loads, then
 * (WAIT) the wait for the previous kernel, x loads, mmas. TAIL: pieces may lie at or past
 * c_end or (the last one) partly past k; those load zeros. Otherwise every load is
 * unconditional. */
template <typename T, int MT, int RT, int U, bool TAIL, bool WAIT, bool NORM>
static __device__ __forceinline__ void
gemv_pieces(float (&acc)[RT][MT][4], const T *const (&wp)[RT][2], const T *const (&xp)[MT], int c,
            int c_end, int k, int t4, const T *np, float (&ss)[MT]) {
    const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
    uint4 wv[U][RT][2], xv[U][MT];
    bool ok[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int cc = c + u;
        /* k is a multiple of 8: a thread's 8 elements are all inside k or all past it. */
        ok[u] = !TAIL || (cc < c_end && cc * 32 + 8 * t4 < k);
#pragma unroll
        for (int rt = 0; rt < RT; rt++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                wv[u][rt][h] = ok[u] ? load_stream(wp[rt][h] + (int64_t)cc * 32) : zero;
    }
    if (WAIT) grid_dep_wait();
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
            xv[u][mt] = ok[u] ? __ldg((const uint4 *)(xp[mt] + (int64_t)(c + u) * 32)) : zero;
    if (NORM) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const uint4 nv = ok[u] ? __ldg((const uint4 *)(np + (int64_t)(c + u) * 32)) : zero;
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                ss[mt] += sumsq8<T>(xv[u][mt]);
                xv[u][mt] = scale8<T>(xv[u][mt], nv);
            }
        }
    }
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int rt = 0; rt < RT; rt++)
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                /* k slots 2*t4+{0,1} / 8+2*t4+{0,1} <- elements 8*t4+{0,1} / {2,3}, then
                 * {4,5} / {6,7}: the same assignment for W (rows g, g+8) and x. */
                mma_16816<T>(acc[rt][mt], wv[u][rt][0].x, wv[u][rt][1].x, wv[u][rt][0].y,
                             wv[u][rt][1].y, xv[u][mt].x, xv[u][mt].y);
                mma_16816<T>(acc[rt][mt], wv[u][rt][0].z, wv[u][rt][1].z, wv[u][rt][0].w,
                             wv[u][rt][1].w, xv[u][mt].z, xv[u][mt].w);
            }
}

/* Blocks per SM the compiler must fit (so its register cap): the narrow GEMV configurations
 * keep 16 warps per SM; the wide ones (m > 16: 4 or 8 n8 tiles, 32 weight rows a warp) hold
 * too many accumulators and x fragments for that and are allowed the full 255 registers. */
static constexpr int gemv_min_blocks(int mt, int rt, int w) {
    return mt * rt <= 2 ? 16 / w : (8 / w > 0 ? 8 / w : 1);
}

/* T: activation/weight type. MT: n8 tiles of x rows (1 for m <= 8, 2 for m <= 16). RT: 16-row
 * tiles of W per CTA. U: pieces in flight per thread. W: warps per CTA, which split k into W
 * contiguous slices. MODE: what happens around the product (GEMV_*). Lane l of a warp: g = l / 4
 * picks the row (of W within a 16-row tile: g and g + 8; of x: g, and g + 8 for MT 2), t4 = l % 4
 * the 8 elements of each 32-element piece of k. Accumulator element j of tile (rt, mt): W row
 * rt*16 + g + 8*(j >= 2), x row mt*8 + 2*t4 + (j & 1) (the mma's C layout). In the SILU modes
 * the tile's two halves are the same 8 rows of gate (j < 2) and of up (j >= 2), so one thread
 * ends up holding both factors of an output. Rows past the weight's end or past m read the last
 * valid row instead: rows of the mma are independent, and those outputs are not stored, so the
 * k loop needs no conditions. Launched with programmatic dependent launch: the first weight
 * loads go out before the wait for the kernel that wrote x; x is read and y written only after
 * it. */
template <typename T, int MT, int RT, int U, int W, int MODE>
static __global__ void __launch_bounds__(W * 32, gemv_min_blocks(MT, RT, W))
    gemv_kernel(const struct gemv_args a) {
    constexpr bool NORM = MODE == GEMV_NORM || MODE == GEMV_SILU;
    constexpr bool PAIR = MODE == GEMV_SILU || MODE == GEMV_SILU_RAW;
    constexpr int TILE = PAIR ? 8 : 16; /* weight rows per 16-row mma tile */
    constexpr int Q = RT * MT * 4;      /* accumulators per thread */
    /* The warps' partial sums. Past 16 KB (the wide configurations) the upper half of the
     * warps adds into the lower half first, so the buffer fits the 48 KB of static shared
     * memory. */
    constexpr bool FOLD = W > 1 && W % 2 == 0 && W * Q * 32 * 4 > 16384;
    constexpr int NR = FOLD ? W / 2 : W;
    __shared__ float red[NR][Q][32];
    __shared__ float ss_part[NORM ? W : 1][MT * 8];
    const int lane = (int)(threadIdx.x & 31u), warp = (int)(threadIdx.x >> 5);
    const int g = lane >> 2, t4 = lane & 3;
    const int b = (int)blockIdx.x;
    int p = 0;
#pragma unroll
    for (int i = 1; i < KERN_MATMUL_MAX_GROUP; i++)
        if (i < a.n_w && b >= a.tile_start[i]) p = i;
    const int rows = a.part[p].rows, row0 = (b - a.tile_start[p]) * TILE * RT;
    const int k = a.k, m = a.m;
    const T *w = (const T *)a.part[p].w, *x = (const T *)a.x;

    /* This warp's contiguous slice of 32-element pieces of k; pieces before full_end lie
     * wholly inside k. */
    const int n_pieces = (k + 31) / 32;
    const int c_begin = (int)((int64_t)n_pieces * warp / W);
    const int c_end = (int)((int64_t)n_pieces * (warp + 1) / W);
    const int full_end = c_end < k / 32 ? c_end : k / 32;

    const T *wp[RT][2];
#pragma unroll
    for (int rt = 0; rt < RT; rt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = PAIR ? row0 + rt * 8 + g : row0 + rt * 16 + h * 8 + g;
            const T *base = PAIR && h ? (const T *)a.w2 : w;
            wp[rt][h] = base + (int64_t)(r < rows ? r : rows - 1) * k + 8 * t4;
        }
    const T *xp[MT];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        const int i = mt * 8 + g;
        xp[mt] = x + (int64_t)(i < m ? i : m - 1) * k + 8 * t4;
    }

    /* NORM: x's sum of squares from the same loads (each element of x's m rows is loaded by
     * exactly one thread of the CTA), applied after the products: rmsnorm(x) . W^T =
     * inv_rms * ((x * norm_w) . W^T). */
    float ss[MT];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) ss[mt] = 0.0f;
    const T *np = NORM ? (const T *)a.norm_w + 8 * t4 : NULL;

    float acc[RT][MT][4];
#pragma unroll
    for (int rt = 0; rt < RT; rt++)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[rt][mt][j] = 0.0f;

    int c = c_begin;
    bool waited = false;
    if (c + U <= full_end) { /* the first round waits between its weight and x loads */
        gemv_pieces<T, MT, RT, U, false, true, NORM>(acc, wp, xp, c, c_end, k, t4, np, ss);
        c += U;
        waited = true;
    }
    for (; c + U <= full_end; c += U)
        gemv_pieces<T, MT, RT, U, false, false, NORM>(acc, wp, xp, c, c_end, k, t4, np, ss);
    /* At most U - 1 whole pieces and one partial piece are left. */
    if (c < c_end) {
        gemv_pieces<T, MT, RT, U, true, true, NORM>(acc, wp, xp, c, c_end, k, t4, np, ss);
        waited = true;
    }
    if (!waited) grid_dep_wait(); /* a warp without pieces: before y is written */

    if (FOLD && warp >= NR) {
#pragma unroll
        for (int rt = 0; rt < RT; rt++)
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    red[warp - NR][(rt * MT + mt) * 4 + j][lane] = acc[rt][mt][j];
    }
    if (FOLD) __syncthreads();
    if (!FOLD || warp < NR) {
#pragma unroll
        for (int rt = 0; rt < RT; rt++)
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    float v = acc[rt][mt][j];
                    if (FOLD) v += red[warp][(rt * MT + mt) * 4 + j][lane];
                    red[warp][(rt * MT + mt) * 4 + j][lane] = v;
                }
    }
    if (NORM) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            float v = ss[mt];
            v += __shfl_xor_sync(0xffffffffu, v, 1);
            v += __shfl_xor_sync(0xffffffffu, v, 2);
            if (t4 == 0) ss_part[warp][mt * 8 + g] = v;
        }
    }
    __syncthreads();

    const T *bias = (const T *)a.part[p].bias;
    T *y = (T *)a.part[p].y;
    for (int e = (int)threadIdx.x; e < Q * 32; e += W * 32) {
        const int l = e & 31, q = e >> 5;
        const int j = q & 3, mt = (q >> 2) % MT, rt = (q >> 2) / MT;
        if (PAIR && j >= 2) continue; /* the up half: read with its gate below */
        const int row =
            PAIR ? row0 + rt * 8 + (l >> 2) : row0 + rt * 16 + (l >> 2) + (j >= 2 ? 8 : 0);
        const int i = mt * 8 + 2 * (l & 3) + (j & 1);
        if (row >= rows || i >= m) continue;
        float s = 0.0f, inv = 1.0f;
#pragma unroll
        for (int v = 0; v < NR; v++) s += red[v][q][l];
        if (NORM) {
            float t = 0.0f;
#pragma unroll
            for (int v = 0; v < W; v++) t += ss_part[v][i];
            inv = rsqrtf(t / (float)k + a.eps);
            s *= inv;
        }
        T *out = y + (int64_t)i * rows + row;
        if (PAIR) {
            /* as the unfused path rounds: gate and up to T, silu(gate) to T, the product */
            float su = 0.0f;
#pragma unroll
            for (int v = 0; v < NR; v++) su += red[v][q + 2][l];
            su *= inv;
            const float gt = round_to<T>(s);
            const float sg = round_to<T>(gt / (1.0f + expf(-gt)));
            *out = from_f32<T>(sg * round_to<T>(su));
            continue;
        }
        if (bias) s += kern_load_f32(bias, row);
        if (MODE == GEMV_RESADD) /* round the product, then the sum, as y and the add would */
            *out = from_f32<T>(kern_load_f32(out, 0) + round_to<T>(s));
        else
            *out = from_f32<T>(s);
    }
}

/* One launch's shape: MT n8 tiles of x rows (m <= 8 * MT), RT 16-row weight tiles per warp
 * (8-row gate / up pairs in the SILU modes), U pieces in flight, W warps per CTA. */
struct gemv_cfg {
    int mt, rt, u, w;
};

/* The launch: programmatic stream serialization lets this kernel start (and issue its first
 * weight loads) while the previous kernel on the stream drains. */
template <typename T, int MT, int RT, int U, int W, int MODE>
static cudaError_t gemv_launch_t(const struct kern_ctx *ctx, const struct gemv_args *a) {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr[1] = {};
    cfg.gridDim = dim3((unsigned)a->tile_start[a->n_w]);
    cfg.blockDim = dim3(W * 32);
    cfg.stream = ctx->stream;
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = ctx->cc_major >= 9 ? 1 : 0; /* PDL is Hopper and newer */
    return cudaLaunchKernelEx(&cfg, gemv_kernel<T, MT, RT, U, W, MODE>, *a);
}

/* The instantiated configurations (gemv_pick chooses among them). Narrow, m <= 16: 16 rows
 * per CTA; 8 pieces in flight per thread for m <= 8 (8 KB per warp), 4 for m <= 16 (twice the
 * x registers). Wide, m <= 64 in one launch so the weights are read once: 32 rows per warp, so
 * each x fragment (from L2) feeds two weight tiles and x traffic stays at m / 32 of the weight
 * traffic; 4 pieces in flight for m <= 32, 2 for m <= 64 (the accumulators and x fragments
 * take the registers). The 16-rows-a-warp wide forms (x traffic m / 16 of the weights, twice
 * the pieces in flight) are instantiated for GEMV_STORE only: bench_gpu_matmul compares them
 * (forced path 4). */
template <typename T, int MODE>
static cudaError_t gemv_launch_cfg(const struct kern_ctx *ctx, const struct gemv_args *a,
                                   struct gemv_cfg c) {
#define GEMV_CFG(MT, RT, U)                                                                        \
    if (c.mt == MT && c.rt == RT && c.u == U)                                                      \
        return c.w == 4 ? gemv_launch_t<T, MT, RT, U, 4, MODE>(ctx, a)                             \
                        : gemv_launch_t<T, MT, RT, U, 8, MODE>(ctx, a);
    GEMV_CFG(1, 1, 8)
    GEMV_CFG(2, 1, 4)
    GEMV_CFG(4, 2, 4)
    GEMV_CFG(8, 2, 2)
    if constexpr (MODE == GEMV_STORE) {
        GEMV_CFG(4, 1, 8)
        GEMV_CFG(8, 1, 4)
    }
#undef GEMV_CFG
    return cudaErrorInvalidConfiguration;
}

template <typename T>
static cudaError_t gemv_launch_mode(const struct kern_ctx *ctx, const struct gemv_args *a, int mode,
                                    struct gemv_cfg c) {
    switch (mode) {
    case GEMV_NORM:
        return gemv_launch_cfg<T, GEMV_NORM>(ctx, a, c);
    case GEMV_SILU:
        return gemv_launch_cfg<T, GEMV_SILU>(ctx, a, c);
    case GEMV_RESADD:
        return gemv_launch_cfg<T, GEMV_RESADD>(ctx, a, c);
    case GEMV_SILU_RAW:
        return gemv_launch_cfg<T, GEMV_SILU_RAW>(ctx, a, c);
    default:
        return gemv_launch_cfg<T, GEMV_STORE>(ctx, a, c);
    }
}

/* The configuration for mi rows of x (the rows of one launch) on `wide` (paths 3 and 4) or the
 * narrow GEMV; narrow_rt selects the 16-rows-a-warp wide form. W (warps per CTA) is set by
 * gemv_launch from the tile count. */
static struct gemv_cfg gemv_pick(int mi, bool wide, bool narrow_rt) {
    if (!wide) return mi <= 8 ? (struct gemv_cfg){1, 1, 8, 0} : (struct gemv_cfg){2, 1, 4, 0};
    if (narrow_rt) return mi <= 32 ? (struct gemv_cfg){4, 1, 8, 0} : (struct gemv_cfg){8, 1, 4, 0};
    return mi <= 32 ? (struct gemv_cfg){4, 2, 4, 0} : (struct gemv_cfg){8, 2, 2, 0};
}

/* mode GEMV_*; for the SILU modes n_w is 2 (gate, up) and y[0] receives the product; norm_w
 * (act dtype, k) for the norm-in modes. path 1: the narrow GEMV, launches of GEMV_MAX_M rows;
 * 3: the wide form, launches of WIDE_MAX_M rows (4: its 16-rows-a-warp variant, GEMV_STORE
 * only). */
static enum tl_status gemv_launch(const struct kern_ctx *ctx, enum tl_dtype act, const void *x,
                                  int m, int n_w, const struct tl_tensor *const *w,
                                  const struct tl_tensor *const *bias, void *const *y, int mode,
                                  const void *norm_w, float eps, int path) {
    enum tl_status st = TL_OK;
    const size_t es = dtype_size(act);
    const int k = (int)w[0]->cols;
    const bool pair = mode == GEMV_SILU || mode == GEMV_SILU_RAW;
    const bool wide = path == 3 || path == 4;
    const int n_parts = pair ? 1 : n_w, step = wide ? WIDE_MAX_M : GEMV_MAX_M;
    struct gemv_args a;

    memset(&a, 0, sizeof a);
    a.n_w = n_parts;
    a.k = k;
    a.x = x;
    a.norm_w = norm_w;
    a.eps = eps;
    a.w2 = pair ? w[1]->data : NULL;
    for (int p = 0; p < n_parts; p++) {
        a.part[p].w = w[p]->data;
        a.part[p].bias = bias && bias[p] ? bias[p]->data : NULL;
        a.part[p].rows = (int)w[p]->rows;
    }
    KERN_CUDA(ctx->err, kern_enter(ctx));
    /* Rows of x in launches of `step`; y rows follow x rows. */
    for (int i0 = 0; i0 < m; i0 += step) {
        const int mi = m - i0 < step ? m - i0 : step;
        struct gemv_cfg c = gemv_pick(mi, wide, path == 4);
        const int tile_rows = (pair ? 8 : 16) * c.rt;
        int64_t tiles = 0;
        for (int p = 0; p < n_parts; p++) {
            a.tile_start[p] = (int)tiles;
            tiles += (w[p]->rows + tile_rows - 1) / tile_rows;
        }
        if (tiles > INT_MAX)
            KERN_FAIL(ctx->err, TL_ERR_UNSUPPORTED, "kern_matmul: %lld row tiles in one launch",
                      (long long)tiles);
        for (int p = n_parts; p <= KERN_MATMUL_MAX_GROUP; p++) a.tile_start[p] = (int)tiles;
        /* 4 warps when the tiles fit in one wave of 4-warp CTAs (o and down), else 8 (fewer,
         * longer CTAs: gate/up, lm_head); a wide CTA holds about twice the registers, so half
         * as many fit an SM. */
        c.w = tiles <= (int64_t)(c.mt * c.rt <= 2 ? 4 : 2) * ctx->sm_count ? 4 : 8;
        a.m = mi;
        a.x = (const char *)x + (size_t)i0 * (size_t)k * es;
        for (int p = 0; p < n_parts; p++)
            a.part[p].y = (char *)y[p] + (size_t)i0 * (size_t)w[p]->rows * es;
        if (act == TL_DTYPE_BF16)
            KERN_CUDA(ctx->err, gemv_launch_mode<__nv_bfloat16>(ctx, &a, mode, c));
        else
            KERN_CUDA(ctx->err, gemv_launch_mode<__half>(ctx, &a, mode, c));
    }

cleanup:
    return st;
}

/* ---------------- cuBLAS ---------------- */

/* y (m, n) = bias broadcast over the m rows; the GEMM then adds the product (beta = 1). */
template <typename T>
static __global__ void bias_fill_kernel(const T *__restrict__ bias, // (n)
                                        int n, int64_t total,
                                        T *__restrict__ y) { // (m, n)
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride)
        y[i] = bias[i % n];
}

static enum tl_status cublas_launch(const struct kern_ctx *ctx, enum tl_dtype act, const void *x,
                                    int m, int n_w, const struct tl_tensor *const *w,
                                    const struct tl_tensor *const *bias, void *const *y) {
    enum tl_status st = TL_OK;
    const cudaDataType_t dt = act == TL_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    const int k = (int)w[0]->cols;
    const float alpha = 1.0f, zero = 0.0f, one = 1.0f;

    KERN_CUDA(ctx->err, kern_enter(ctx));
    /* Split-K partial sums stay fp32 (the accumulator's precision) rather than the output's. */
    KERN_CUBLAS(ctx->err,
                cublasSetMathMode(
                    ctx->cublas, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
                                                CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
    for (int p = 0; p < n_w; p++) {
        const int n = (int)w[p]->rows;
        const bool has_bias = bias && bias[p];
        if (has_bias) {
            const int64_t total = (int64_t)m * n;
            const int64_t max_blocks = (int64_t)ctx->sm_count * 8;
            const int64_t need = (total + 255) / 256;
            const unsigned blocks = (unsigned)(need < max_blocks ? need : max_blocks);
            if (act == TL_DTYPE_BF16)
                bias_fill_kernel<<<blocks, 256, 0, ctx->stream>>>(
                    (const __nv_bfloat16 *)bias[p]->data, n, total, (__nv_bfloat16 *)y[p]);
            else
                bias_fill_kernel<<<blocks, 256, 0, ctx->stream>>>((const __half *)bias[p]->data, n,
                                                                  total, (__half *)y[p]);
            KERN_CUDA(ctx->err, cudaGetLastError());
        }
        /* Column-major view: W (n, k) row-major is W' (k, n); D' (n, m) = op(W') . x'. */
        KERN_CUBLAS(ctx->err, cublasGemmEx(ctx->cublas, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha,
                                           w[p]->data, dt, k, x, dt, k, has_bias ? &one : &zero,
                                           y[p], dt, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }

cleanup:
    return st;
}

/* ---------------- entry ---------------- */

static bool aligned_to(const void *p, size_t a) {
    return (uintptr_t)p % a == 0;
}

static bool is_act_dtype(enum tl_dtype t) {
    return t == TL_DTYPE_F16 || t == TL_DTYPE_BF16;
}

/* Checks one weight (and its bias) against x's k and the activation dtype. */
static enum tl_status check_part(const struct kern_ctx *ctx, enum tl_dtype act, int p, int64_t k,
                                 const struct tl_tensor *w, const struct tl_tensor *bias,
                                 const void *y) {
    if (!w || !w->data)
        return tl_fail(ctx->err, TL_ERR_INVALID, "kern_matmul: weight %d is NULL", p);
    if (w->dtype != act)
        return tl_fail(ctx->err, TL_ERR_UNSUPPORTED,
                       "kern_matmul: weight %d has dtype %s, activations %s; the GPU multiplies "
                       "like dtypes (convert the weights when uploading)",
                       p, dtype_name(w->dtype), dtype_name(act));
    if (w->rows < 1 || w->rows > INT_MAX || w->cols != k)
        return tl_fail(ctx->err, TL_ERR_INVALID,
                       "kern_matmul: weight %d has shape (%lld, %lld); want (1..%d, %lld)", p,
                       (long long)w->rows, (long long)w->cols, INT_MAX, (long long)k);
    if (!aligned_to(w->data, dtype_size(act)))
        return tl_fail(ctx->err, TL_ERR_INVALID, "kern_matmul: weight %d data %p is misaligned", p,
                       w->data);
    if (!y || !aligned_to(y, dtype_size(act)))
        return tl_fail(ctx->err, TL_ERR_INVALID, "kern_matmul: output %d %p is NULL or misaligned",
                       p, y);
    if (bias) {
        if (!bias->data || bias->dtype != act || bias->rows * bias->cols != w->rows ||
            !aligned_to(bias->data, dtype_size(act)))
            return tl_fail(ctx->err, TL_ERR_INVALID,
                           "kern_matmul: bias %d (%s, %lld x %lld) does not match weight %d "
                           "(%lld rows, %s)",
                           p, dtype_name(bias->dtype), (long long)bias->rows, (long long)bias->cols,
                           p, (long long)w->rows, dtype_name(act));
    }
    return TL_OK;
}

enum tl_status kern_matmul(const struct kern_ctx *ctx, enum tl_dtype act, const void *x, int m,
                           int n_w, const struct tl_tensor *const *w,
                           const struct tl_tensor *const *bias, void *const *y) {
    enum tl_status st;
    if (!ctx) return TL_ERR_INVALID;
    if (!is_act_dtype(act))
        return tl_fail(ctx->err, TL_ERR_UNSUPPORTED,
                       "kern_matmul: activation dtype %s; the GPU runs F16 or BF16",
                       dtype_name(act));
    if (!x || !aligned_to(x, dtype_size(act)))
        return tl_fail(ctx->err, TL_ERR_INVALID, "kern_matmul: x %p is NULL or misaligned", x);
    if (m < 1) return tl_fail(ctx->err, TL_ERR_INVALID, "kern_matmul: m = %d rows", m);
    if (n_w < 1 || n_w > KERN_MATMUL_MAX_GROUP || !w || !y)
        return tl_fail(ctx->err, TL_ERR_INVALID, "kern_matmul: %d weights (1..%d, w and y set)",
                       n_w, KERN_MATMUL_MAX_GROUP);
    if (!w[0]) return tl_fail(ctx->err, TL_ERR_INVALID, "kern_matmul: weight 0 is NULL");
    const int64_t k = w[0]->cols;
    if (k < 1 || k > INT_MAX)
        return tl_fail(ctx->err, TL_ERR_INVALID, "kern_matmul: k = %lld", (long long)k);
    bool vec_ok = k % 8 == 0 && aligned_to(x, 16);
    for (int p = 0; p < n_w; p++) {
        if ((st = check_part(ctx, act, p, k, w[p], bias ? bias[p] : NULL, y[p])) != TL_OK)
            return st;
        vec_ok = vec_ok && aligned_to(w[p]->data, 16);
    }

    bool small_group = n_w > 1;
    for (int p = 0; p < n_w; p++) small_group = small_group && w[p]->rows <= WIDE_AUTO_MAX_ROWS;
    int path = force_path;
    if (!path)
        path = !vec_ok ? 2 : m <= GEMV_AUTO_MAX_M ? 1 : m <= WIDE_AUTO_MAX_M && small_group ? 3 : 2;
    if (path != 2 && !vec_ok)
        return tl_fail(ctx->err, TL_ERR_UNSUPPORTED,
                       "kern_matmul: the GEMV needs k %% 8 == 0 and 16-byte aligned x and "
                       "weights (k = %lld); the automatic path uses cuBLAS here",
                       (long long)k);
    if (path == 2) return cublas_launch(ctx, act, x, m, n_w, w, bias, y);
    return gemv_launch(ctx, act, x, m, n_w, w, bias, y, GEMV_STORE, NULL, 0.0f, path);
}

enum tl_status kern_matmul_fused(const struct kern_ctx *ctx, enum tl_dtype act, const void *x,
                                 int m, const struct tl_tensor *norm_w, float eps, int n_w,
                                 const struct tl_tensor *const *w,
                                 const struct tl_tensor *const *bias, void *const *y,
                                 enum kern_epi epi) {
    enum tl_status st;
    if (!ctx) return TL_ERR_INVALID;
    if (!is_act_dtype(act))
        return tl_fail(ctx->err, TL_ERR_UNSUPPORTED,
                       "kern_matmul_fused: activation dtype %s; the GPU runs F16 or BF16",
                       dtype_name(act));
    if (!x || !aligned_to(x, 16) || m < 1 || m > KERN_FUSED_MAX_M)
        return tl_fail(ctx->err, TL_ERR_UNSUPPORTED,
                       "kern_matmul_fused: x %p, m = %d (want 16-byte aligned, 1..%d rows)", x, m,
                       KERN_FUSED_MAX_M);
    if (n_w < 1 || n_w > KERN_MATMUL_MAX_GROUP || !w || !y || !w[0])
        return tl_fail(ctx->err, TL_ERR_INVALID, "kern_matmul_fused: %d weights", n_w);
    const int64_t k = w[0]->cols;
    if (k < 8 || k > INT_MAX || k % 8)
        return tl_fail(ctx->err, TL_ERR_UNSUPPORTED,
                       "kern_matmul_fused: k = %lld (a multiple of 8)", (long long)k);
    for (int p = 0; p < n_w; p++) {
        /* silu writes y[0] only */
        void *yp = epi == KERN_EPI_SILU ? y[0] : y[p];
        if ((st = check_part(ctx, act, p, k, w[p], bias ? bias[p] : NULL, yp)) != TL_OK) return st;
        if (!aligned_to(w[p]->data, 16))
            return tl_fail(ctx->err, TL_ERR_UNSUPPORTED,
                           "kern_matmul_fused: weight %d is not 16-byte aligned", p);
    }
    if (norm_w) {
        if (!norm_w->data || norm_w->dtype != act || norm_w->rows * norm_w->cols != k ||
            !aligned_to(norm_w->data, 16) || !(eps >= 0.0f))
            return tl_fail(ctx->err, TL_ERR_UNSUPPORTED,
                           "kern_matmul_fused: the norm-in form takes a %lld-element norm weight "
                           "of the activation dtype",
                           (long long)k);
    }
    int mode;
    switch (epi) {
    case KERN_EPI_STORE:
        mode = norm_w ? GEMV_NORM : GEMV_STORE;
        break;
    case KERN_EPI_SILU:
        if (n_w != 2 || w[1]->rows != w[0]->rows || (bias && (bias[0] || bias[1])))
            return tl_fail(ctx->err, TL_ERR_INVALID,
                           "kern_matmul_fused: silu takes two weights of equal rows (gate, up) "
                           "and no bias");
        mode = norm_w ? GEMV_SILU : GEMV_SILU_RAW;
        break;
    case KERN_EPI_RESADD:
        if (n_w != 1 || norm_w)
            return tl_fail(ctx->err, TL_ERR_INVALID,
                           "kern_matmul_fused: the residual add takes one weight and no norm");
        mode = GEMV_RESADD;
        break;
    default:
        return tl_fail(ctx->err, TL_ERR_INVALID, "kern_matmul_fused: epilogue %d", (int)epi);
    }
    return gemv_launch(ctx, act, x, m, n_w, w, bias, y, mode, norm_w ? norm_w->data : NULL, eps,
                       m <= GEMV_AUTO_MAX_M ? 1 : 3);
}
