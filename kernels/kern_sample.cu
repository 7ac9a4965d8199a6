/* kern_sample: engine/sampler.c on the GPU, one block of 1024 threads per row. Three levels as
 * elsewhere in kernels/: sample_kernel<T, GREEDY_ONLY> -> sample_launch -> kern_sample.
 *
 * A row is read in tiles of 8192 ids, 8 consecutive ids per thread (one 16-byte load of bf16 /
 * fp16), so each warp covers a "chunk" of 256 consecutive ids and chunks in (tile, warp) order
 * are in id order: the draw scans per-chunk sums, then one chunk. Passes over the row:
 *   A  max and argmax of the (penalised) logits: greedy rows end here.
 *   B  weight w = sampler_weight(x / T - max) of every token, min-p, per-chunk sums of the
 *      candidates, and (when top-k or top-p is on) a 2048-bucket histogram of the weights'
 *      keys (counts and double masses) in shared memory, as engine/sampler.c buckets them.
 *   then, only when a filter cuts: the bucket where it cuts is gathered (<= cap tokens) and
 *   bitonic-sorted by (weight desc, id asc), or, when crowded, split by a finer histogram of
 *   the next 11 and then 8 key bits; a cut inside a run of exactly equal weights finds its id
 *   by counting per chunk. Passes after B skip the exp for tokens far from the cut.
 *   D  per-chunk sums of the kept tokens (B's sums when nothing was cut), the chunk where the
 *      cumulative sum first exceeds u * total, and inside it the token.
 * Sums are double (summed in a fixed tree, except the histogram's atomics), so they differ from
 * the CPU's by rounding only. Every float operation is an IEEE operation with one rounding
 * (__f*_rn, and the file is built with --fmad=false): the weights match the CPU bit for bit.
 * Nothing here blocks the host. */
#include "kern.h"
#include "kern_impl.h"
#include "kern_sample.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>

#include "sampler_exp.h"

#if defined(__USE_FAST_MATH__)
#error "kern_sample.cu must be built without fast math: its weights must match the CPU sampler's"
#endif

#define SMP_THREADS 1024
#define SMP_WARPS   (SMP_THREADS / 32)
#define SMP_VEC     8                       /* consecutive ids per thread in a tile */
#define SMP_TILE    (SMP_THREADS * SMP_VEC) /* 8192 ids */
#define SMP_UNROLL  2    /* tiles whose loads are in flight together (4 in the greedy kernel) */
#define SMP_BINS    2048 /* buckets of the first two histogram levels */
#define SMP_CAP_MAX 8192 /* most tokens gathered and sorted at a cut */
#define KEY_NONE    0xffffffffu /* above every key: keeps all candidates */
#define ID_NONE     INT_MAX
#define FULL        0xffffffffu

/* Key ranges of the three histogram levels: key >> 19, then (key >> 8) & 2047, then key & 255. */
#define L0_SHIFT 19
#define L1_SHIFT 8

__constant__ float c_exp_tab[32] = SAMPLER_EXP_TABLE;

/* Byte offsets into the dynamic shared memory (computed once on the host). */
struct smp_layout {
    unsigned h0c, h0m, h1c, h1m, g, chunk, bm;
};

struct smp_args {
    const void *logits; /* (n, vocab) */
    int vocab;
    const struct kern_sample_row *rows; /* (n) */
    const struct kern_sample_pen *pen;
    float *ovr;   /* (n, vocab) or NULL */
    int32_t *ids; /* (n) */
    int any_pen;
    int cap; /* gather capacity, a power of two */
    struct smp_layout lay;
};

/* Control values that warp 0 (or thread 0) decides and every thread then reads. */
struct smp_ctl {
    float red_f[SMP_WARPS];
    int red_i[SMP_WARPS], red_j[SMP_WARPS];
    double red_d[SMP_WARPS];
    float am_v;          /* pass A: max */
    int am_id, am_first; /* its lowest id, the lowest non-NaN id */
    int isum;            /* block sums */
    double dsum;
    int bin, before; /* histogram searches */
    double mass_before;
    int found; /* index / id searches (-1: none) */
    int gather_n;
    int cnt_in; /* a sorted gather's prefix */
    double mass_in;
    int chunk; /* the draw */
    double chunk_before, target;
    int result;
};

/* ---------------- loads ---------------- */

/* 8 consecutive elements of a row as they sit in memory. */
template <typename T> struct smp_raw { uint4 a; };
template <> struct smp_raw<float> { uint4 a, b; };

template <typename T> static __device__ __forceinline__ void smp_load(smp_raw<T> &r, const T *p) {
    r.a = __ldg(reinterpret_cast<const uint4 *>(p));
}
template <> __device__ __forceinline__ void smp_load<float>(smp_raw<float> &r, const float *p) {
    r.a = __ldg(reinterpret_cast<const uint4 *>(p));
    r.b = __ldg(reinterpret_cast<const uint4 *>(p) + 1);
}

template <typename T> static __device__ __forceinline__ void smp_zero(smp_raw<T> &r) {
    r.a = make_uint4(0, 0, 0, 0);
}
template <> __device__ __forceinline__ void smp_zero<float>(smp_raw<float> &r) {
    r.a = r.b = make_uint4(0, 0, 0, 0);
}

/* Widening to fp32 is exact for all three. */
static __device__ __forceinline__ void smp_widen_word(uint32_t w, __nv_bfloat16 *, float *v) {
    v[0] = __uint_as_float(w << 16);
    v[1] = __uint_as_float(w & 0xffff0000u);
}
static __device__ __forceinline__ void smp_widen_word(uint32_t w, __half *, float *v) {
    v[0] = __half2float(__ushort_as_half((unsigned short)(w & 0xffffu)));
    v[1] = __half2float(__ushort_as_half((unsigned short)(w >> 16)));
}

template <typename T>
static __device__ __forceinline__ void smp_widen(const smp_raw<T> &r, float v[SMP_VEC]) {
    smp_widen_word(r.a.x, (T *)0, v);
    smp_widen_word(r.a.y, (T *)0, v + 2);
    smp_widen_word(r.a.z, (T *)0, v + 4);
    smp_widen_word(r.a.w, (T *)0, v + 6);
}
template <>
__device__ __forceinline__ void smp_widen<float>(const smp_raw<float> &r, float v[SMP_VEC]) {
    v[0] = __uint_as_float(r.a.x), v[1] = __uint_as_float(r.a.y);
    v[2] = __uint_as_float(r.a.z), v[3] = __uint_as_float(r.a.w);
    v[4] = __uint_as_float(r.b.x), v[5] = __uint_as_float(r.b.y);
    v[6] = __uint_as_float(r.b.z), v[7] = __uint_as_float(r.b.w);
}

template <typename T> static __device__ __forceinline__ float smp_load1(const T *p) {
    return kern_load_f32(p, 0);
}

/* What every pass needs to know about its row. */
template <typename T> struct smp_row {
    const T *base; /* 16-byte aligned, at or before the row's first element */
    int head;      /* elements of base before the row (the row's id 0 is base[head]) */
    int len;       /* head + vocab */
    int n_tiles;   /* tiles covering len */
    int vocab;
    const float *ovr;   /* penalised values (vocab), valid where bm is set; NULL: none */
    const uint32_t *bm; /* shared bitmap of penalised ids, or NULL */
    const float *tab;   /* SAMPLER_EXP_TABLE in shared memory */
    float temp;         /* divides the logits when scale */
    int scale;
    float m;     /* the max of the scaled logits */
    float min_p; /* weights below it are not candidates */
};

/* 8 elements starting at virtual index j0 (a multiple of 8; id = j0 - head), penalised. */
template <typename T>
static __device__ __forceinline__ void smp_fetch(const smp_row<T> &rc, const smp_raw<T> &r, int id0,
                                                 float v[SMP_VEC]) {
    smp_widen(r, v);
    if (rc.bm) {
#pragma unroll
        for (int k = 0; k < SMP_VEC; k++) {
            const int id = id0 + k;
            if ((unsigned)id < (unsigned)rc.vocab && (rc.bm[id >> 5] >> (id & 31) & 1u))
                v[k] = rc.ovr[id];
        }
    }
}

/* Calls f(tile, id0, v) for every tile of the row, every thread, in tile order: f may use
 * warp-wide operations. U tiles are loaded before any is used. */
template <int U = SMP_UNROLL, typename T, typename F>
static __device__ __forceinline__ void smp_for_tiles(const smp_row<T> &rc, F &&f) {
    const int tj = (int)threadIdx.x * SMP_VEC;
    for (int t0 = 0; t0 < rc.n_tiles; t0 += U) {
        smp_raw<T> r[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int j0 = (t0 + u) * SMP_TILE + tj;
            if (t0 + u < rc.n_tiles && j0 < rc.len)
                smp_load(r[u], rc.base + j0);
            else
                smp_zero(r[u]);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (t0 + u < rc.n_tiles) {
                float v[SMP_VEC];
                const int id0 = (t0 + u) * SMP_TILE + tj - rc.head;
                smp_fetch(rc, r[u], id0, v);
                f(t0 + u, id0, v);
            }
        }
    }
}

/* The calling lane's 8 elements of chunk c (tile c / 32, warp c % 32): id of the first in id0. */
template <typename T>
static __device__ __forceinline__ void smp_chunk_fetch(const smp_row<T> &rc, int c, int lane,
                                                       int *id0, float v[SMP_VEC]) {
    const int j0 = (c / SMP_WARPS) * SMP_TILE + (c % SMP_WARPS) * 32 * SMP_VEC + lane * SMP_VEC;
    smp_raw<T> r;
    if (j0 < rc.len)
        smp_load(r, rc.base + j0);
    else
        smp_zero(r);
    *id0 = j0 - rc.head;
    smp_fetch(rc, r, *id0, v);
}

static __device__ __forceinline__ bool smp_valid(int id, int vocab) {
    return (unsigned)id < (unsigned)vocab;
}

/* d = x / T - max, as the CPU sampler forms it. */
template <typename T> static __device__ __forceinline__ float smp_d(const smp_row<T> &rc, float v) {
    const float x = rc.scale ? __fdiv_rn(v, rc.temp) : v;
    return __fsub_rn(x, rc.m);
}

template <typename T>
static __device__ __forceinline__ float smp_weight(const smp_row<T> &rc, float d) {
    return sampler_weight_tab(d, rc.tab);
}

template <typename T>
static __device__ __forceinline__ bool smp_cand(const smp_row<T> &rc, float w) {
    return (w > 0.0f) & (w >= rc.min_p);
}

/* ---------------- warp and block helpers ---------------- */

static __device__ __forceinline__ int smp_lane() {
    return (int)(threadIdx.x & 31u);
}
static __device__ __forceinline__ int smp_warp() {
    return (int)(threadIdx.x >> 5);
}

/* Butterfly sums: IEEE addition is commutative, so every lane gets the same bits. */
static __device__ __forceinline__ double smp_warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}
static __device__ __forceinline__ int smp_warp_sum_i(int v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}
static __device__ __forceinline__ int smp_warp_max_i(int v) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(FULL, v, o));
    return v;
}
static __device__ __forceinline__ int smp_warp_incl_i(int v) {
    const int lane = smp_lane();
    for (int o = 1; o < 32; o <<= 1) {
        const int n = __shfl_up_sync(FULL, v, o);
        if (lane >= o) v += n;
    }
    return v;
}
static __device__ __forceinline__ double smp_warp_incl_d(double v) {
    const int lane = smp_lane();
    for (int o = 1; o < 32; o <<= 1) {
        const double n = __shfl_up_sync(FULL, v, o);
        if (lane >= o) v += n;
    }
    return v;
}
/* Exclusive from inclusive by a shift (no subtraction, so no rounding). */
static __device__ __forceinline__ double smp_excl_d(double incl) {
    const double e = __shfl_up_sync(FULL, incl, 1);
    return smp_lane() ? e : 0.0;
}
static __device__ __forceinline__ int smp_excl_i(int incl) {
    const int e = __shfl_up_sync(FULL, incl, 1);
    return smp_lane() ? e : 0;
}

/* Sum over the block; every thread gets it. All threads call. */
static __device__ int smp_block_sum_i(int v, smp_ctl &sh) {
    v = smp_warp_sum_i(v);
    if (smp_lane() == 0) sh.red_i[smp_warp()] = v;
    __syncthreads();
    if (smp_warp() == 0) {
        int s = smp_warp_sum_i(sh.red_i[smp_lane()]);
        if (smp_lane() == 0) sh.isum = s;
    }
    __syncthreads();
    return sh.isum;
}

/* Lowest id of the largest value (id ID_NONE: no value), and the lowest `first`. */
static __device__ __forceinline__ bool smp_better(float a, int ai, float b, int bi) {
    return ai != ID_NONE && (bi == ID_NONE || a > b || (a == b && ai < bi));
}
static __device__ void smp_block_argmax(float v, int id, int first, smp_ctl &sh) {
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(FULL, v, o);
        const int oi = __shfl_xor_sync(FULL, id, o), of = __shfl_xor_sync(FULL, first, o);
        if (smp_better(ov, oi, v, id)) v = ov, id = oi;
        first = min(first, of);
    }
    if (smp_lane() == 0) {
        sh.red_f[smp_warp()] = v;
        sh.red_i[smp_warp()] = id;
        sh.red_j[smp_warp()] = first;
    }
    __syncthreads();
    if (smp_warp() == 0) {
        v = sh.red_f[smp_lane()], id = sh.red_i[smp_lane()], first = sh.red_j[smp_lane()];
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(FULL, v, o);
            const int oi = __shfl_xor_sync(FULL, id, o), of = __shfl_xor_sync(FULL, first, o);
            if (smp_better(ov, oi, v, id)) v = ov, id = oi;
            first = min(first, of);
        }
        if (smp_lane() == 0) sh.am_v = v, sh.am_id = id, sh.am_first = first;
    }
    __syncthreads();
}

/* ---------------- searches (warp 0 only; results in sh, read after a barrier) ---------------- */

/* First bin of cnt[0, nb) whose cumulative count reaches k (1 <= k <= the total): sh.bin,
 * sh.before (count of the bins before it) and sh.mass_before (their mass, when mass). */
static __device__ void smp_find_count(const uint32_t *cnt, const double *mass, int nb, int k,
                                      smp_ctl &sh) {
    const int lane = smp_lane(), seg = (nb + 31) / 32, lo = min(lane * seg, nb),
              hi = min(lo + seg, nb);
    int c = 0;
    double m = 0.0;
    for (int b = lo; b < hi; b++) {
        c += (int)cnt[b];
        if (mass) m += mass[b];
    }
    const int ci = smp_warp_incl_i(c);
    const double mi = smp_warp_incl_d(m);
    int before = smp_excl_i(ci);
    double mb = smp_excl_d(mi);
    const unsigned hit = __ballot_sync(FULL, ci >= k);
    if (lane == __ffs(hit) - 1) {
        for (int b = lo; b < hi; b++) {
            if (before + (int)cnt[b] >= k) {
                sh.bin = b, sh.before = before, sh.mass_before = mb;
                break;
            }
            before += (int)cnt[b];
            if (mass) mb += mass[b];
        }
    }
}

/* First non-empty bin of (cnt, mass)[0, nb) at which acc0 + the cumulative mass reaches target:
 * sh.bin (-1 when rounding never reaches it), sh.mass_before (acc0 + the mass before it). */
static __device__ void smp_find_mass(const uint32_t *cnt, const double *mass, int nb, double acc0,
                                     double target, smp_ctl &sh) {
    const int lane = smp_lane(), seg = (nb + 31) / 32, lo = min(lane * seg, nb),
              hi = min(lo + seg, nb);
    double m = 0.0;
    for (int b = lo; b < hi; b++) m += mass[b];
    const double mi = smp_warp_incl_d(m);
    double a = acc0 + smp_excl_d(mi);
    const unsigned hit = __ballot_sync(FULL, acc0 + mi >= target);
    if (!hit) {
        if (lane == 0) sh.bin = -1;
        return;
    }
    if (lane == __ffs(hit) - 1) {
        int last = -1;
        double last_acc = a;
        for (int b = lo; b < hi; b++) {
            if (!cnt[b]) continue;
            if (a + mass[b] >= target) {
                last = b, last_acc = a;
                break;
            }
            last = b, last_acc = a; /* rounding fallback: the segment's last non-empty bin */
            a += mass[b];
        }
        sh.bin = last, sh.mass_before = last_acc;
    }
}

/* In g[0, n) sorted by (key, id): the first index at which acc0 + the cumulative weight reaches
 * target -> sh.found (-1 when rounding never reaches it). */
static __device__ void smp_cut_mass(const uint64_t *g, int n, double acc0, double target,
                                    smp_ctl &sh) {
    const int lane = smp_lane(), seg = (n + 31) / 32, lo = min(lane * seg, n),
              hi = min(lo + seg, n);
    double m = 0.0;
    for (int i = lo; i < hi; i++) m += (double)sampler_key_weight((uint32_t)(g[i] >> 32));
    const double mi = smp_warp_incl_d(m);
    double a = acc0 + smp_excl_d(mi);
    const unsigned hit = __ballot_sync(FULL, acc0 + mi >= target);
    if (!hit) {
        if (lane == 0) sh.found = -1;
        return;
    }
    if (lane == __ffs(hit) - 1) {
        int f = hi - 1; /* rounding fallback */
        for (int i = lo; i < hi; i++) {
            a += (double)sampler_key_weight((uint32_t)(g[i] >> 32));
            if (a >= target) {
                f = i;
                break;
            }
        }
        sh.found = f;
    }
}

/* In g[0, n) sorted by key: how many have key <= kmax and their weight -> sh.cnt_in, mass_in. */
static __device__ void smp_prefix_upto(const uint64_t *g, int n, uint32_t kmax, smp_ctl &sh) {
    const int lane = smp_lane(), seg = (n + 31) / 32, lo = min(lane * seg, n),
              hi = min(lo + seg, n);
    int c = 0;
    double m = 0.0;
    for (int i = lo; i < hi; i++) {
        const uint32_t key = (uint32_t)(g[i] >> 32);
        if (key <= kmax) c++, m += (double)sampler_key_weight(key);
    }
    const int ci = smp_warp_incl_i(c);
    const double mi = smp_warp_incl_d(m);
    if (lane == 31) sh.cnt_in = ci, sh.mass_in = mi;
}

/* The draw's chunk: target = u * (sum of chunk[0, nc)); the first chunk at which the
 * cumulative sum exceeds it -> sh.chunk, sh.chunk_before, sh.target. When rounding never gets
 * there: the last non-empty chunk and target +inf (its last kept token, as the CPU does). */
static __device__ void smp_find_draw_chunk(const double *chunk, int nc, double u, smp_ctl &sh) {
    const int lane = smp_lane(), seg = (nc + 31) / 32, lo = min(lane * seg, nc),
              hi = min(lo + seg, nc);
    double m = 0.0;
    int last = -1;
    for (int c = lo; c < hi; c++) {
        m += chunk[c];
        if (chunk[c] > 0.0) last = c;
    }
    const double mi = smp_warp_incl_d(m);
    const double total = __shfl_sync(FULL, mi, 31);
    const double target = u * total;
    double a = smp_excl_d(mi);
    const unsigned hit = __ballot_sync(FULL, mi > target);
    if (!hit) {
        const int l = smp_warp_max_i(last);
        if (lane == 0) sh.chunk = l, sh.chunk_before = 0.0, sh.target = INFINITY;
        return;
    }
    if (lane == __ffs(hit) - 1) {
        int f = -1;
        double fb = 0.0;
        for (int c = lo; c < hi; c++) {
            if (chunk[c] > 0.0) f = c, fb = a;
            if (a + chunk[c] > target) break;
            a += chunk[c];
        }
        sh.chunk = f, sh.chunk_before = fb, sh.target = target;
    }
}

/* ---------------- block passes over a row ---------------- */

/* Prefilter bounds on d for keys in [klo, khi]: a token with d outside [dlo, dhi] cannot have
 * such a key (0.01 in d is a 1% weight ratio, far beyond the weight's 2-ulp error), so its exp
 * is skipped. */
static __device__ __forceinline__ void smp_d_bounds(uint32_t klo, uint32_t khi, float *dlo,
                                                    float *dhi) {
    *dlo = khi >= 0x3e800000u ? -INFINITY : logf(sampler_key_weight(khi)) - 0.01f;
    *dhi = klo == 0u ? INFINITY : logf(sampler_key_weight(klo)) + 0.01f;
}

/* Candidates with a key in [klo, khi]: (key, id) packed into g (at most cap) -> sh.gather_n.
 * Warp-aggregated slots; the order is arbitrary (the caller sorts). */
template <typename T>
static __device__ __noinline__ void smp_gather(const smp_row<T> &rc, uint32_t klo, uint32_t khi,
                                               uint64_t *g, int cap, smp_ctl &sh) {
    float dlo, dhi;
    smp_d_bounds(klo, khi, &dlo, &dhi);
    if (threadIdx.x == 0) sh.gather_n = 0;
    __syncthreads();
    const int lane = smp_lane();
    smp_for_tiles(rc, [&](int, int id0, const float *v) {
#pragma unroll
        for (int k = 0; k < SMP_VEC; k++) {
            bool take = false;
            uint32_t key = 0;
            if (smp_valid(id0 + k, rc.vocab)) {
                const float d = smp_d(rc, v[k]);
                if (d >= dlo && d <= dhi) {
                    const float w = smp_weight(rc, d);
                    key = sampler_weight_key(w);
                    take = smp_cand(rc, w) && key >= klo && key <= khi;
                }
            }
            const unsigned b = __ballot_sync(FULL, take);
            if (b) {
                const int leader = __ffs(b) - 1;
                int base = 0;
                if (lane == leader) base = atomicAdd(&sh.gather_n, __popc(b));
                base = __shfl_sync(FULL, base, leader);
                if (take) {
                    const int pos = base + __popc(b & ((1u << lane) - 1u));
                    if (pos < cap) g[pos] = (uint64_t)key << 32 | (uint32_t)(id0 + k);
                }
            }
        }
    });
    __syncthreads();
}

/* Ascending bitonic sort of g[0, n), n <= cap (a power of two). All threads. */
static __device__ __noinline__ void smp_sort(uint64_t *g, int n) {
    int np = 1;
    while (np < n) np <<= 1;
    for (int i = n + (int)threadIdx.x; i < np; i += SMP_THREADS) g[i] = ~0ull;
    __syncthreads();
    for (int k = 2; k <= np; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = (int)threadIdx.x; i < np; i += SMP_THREADS) {
                const int ixj = i ^ j;
                if (ixj > i) {
                    const uint64_t a = g[i], b = g[ixj];
                    if ((a > b) == ((i & k) == 0)) g[i] = b, g[ixj] = a;
                }
            }
            __syncthreads();
        }
    }
}

/* Histogram of the candidates with a key in [klo, khi], by digit (key >> shift) & mask, into
 * (hc, hm)[0, nb) (mass only when want_mass). A thread merges runs of one digit before its
 * atomics, so flat rows do not pile onto one counter. */
template <typename T>
static __device__ __noinline__ void smp_hist(const smp_row<T> &rc, uint32_t klo, uint32_t khi,
                                             int shift, uint32_t mask, bool want_mass, uint32_t *hc,
                                             double *hm, int nb) {
    for (int b = (int)threadIdx.x; b < nb; b += SMP_THREADS) hc[b] = 0, hm[b] = 0.0;
    __syncthreads();
    float dlo, dhi;
    smp_d_bounds(klo, khi, &dlo, &dhi);
    int pb = -1;
    uint32_t pc = 0;
    double pm = 0.0;
    smp_for_tiles(rc, [&](int, int id0, const float *v) {
#pragma unroll
        for (int k = 0; k < SMP_VEC; k++) {
            if (!smp_valid(id0 + k, rc.vocab)) continue;
            const float d = smp_d(rc, v[k]);
            if (!(d >= dlo && d <= dhi)) continue;
            const float w = smp_weight(rc, d);
            const uint32_t key = sampler_weight_key(w);
            if (!smp_cand(rc, w) || key < klo || key > khi) continue;
            const int b = (int)((key >> shift) & mask);
            if (b != pb) {
                if (pb >= 0) {
                    atomicAdd(&hc[pb], pc);
                    if (want_mass) atomicAdd(&hm[pb], pm);
                }
                pb = b, pc = 0, pm = 0.0;
            }
            pc++;
            pm += (double)w;
        }
    });
    if (pb >= 0) {
        atomicAdd(&hc[pb], pc);
        if (want_mass) atomicAdd(&hm[pb], pm);
    }
    __syncthreads();
}

/* Per-chunk sums of the kept weights: candidates ranked at or before (kb, ib). */
template <typename T>
static __device__ __noinline__ void smp_kept_sums(const smp_row<T> &rc, uint32_t kb, int ib,
                                                  double *chunk) {
    float dlo, dhi;
    smp_d_bounds(0u, kb, &dlo, &dhi);
    smp_for_tiles(rc, [&](int t, int id0, const float *v) {
        double s = 0.0;
#pragma unroll
        for (int k = 0; k < SMP_VEC; k++) {
            const int id = id0 + k;
            if (!smp_valid(id, rc.vocab)) continue;
            const float d = smp_d(rc, v[k]);
            if (!(d >= dlo)) continue;
            const float w = smp_weight(rc, d);
            const uint32_t key = sampler_weight_key(w);
            if (smp_cand(rc, w) && (key < kb || (key == kb && id <= ib))) s += (double)w;
        }
        s = smp_warp_sum_d(s);
        if (smp_lane() == 0) chunk[t * SMP_WARPS + smp_warp()] = s;
    });
    __syncthreads();
}

/* The id of the j-th (1-based) lowest-id candidate whose key is key0 -> sh.result. ccnt
 * (n_tiles * 32 ints) is scratch for per-chunk counts. */
template <typename T>
static __device__ __noinline__ void smp_id_select(const smp_row<T> &rc, uint32_t key0, int j,
                                                  uint32_t *ccnt, smp_ctl &sh) {
    float dlo, dhi;
    smp_d_bounds(key0, key0, &dlo, &dhi);
    smp_for_tiles(rc, [&](int t, int id0, const float *v) {
        int c = 0;
#pragma unroll
        for (int k = 0; k < SMP_VEC; k++) {
            if (!smp_valid(id0 + k, rc.vocab)) continue;
            const float d = smp_d(rc, v[k]);
            if (!(d >= dlo && d <= dhi)) continue;
            const float w = smp_weight(rc, d);
            c += smp_cand(rc, w) && sampler_weight_key(w) == key0;
        }
        c = smp_warp_sum_i(c);
        if (smp_lane() == 0) ccnt[t * SMP_WARPS + smp_warp()] = (uint32_t)c;
    });
    __syncthreads();
    if (smp_warp() == 0) {
        smp_find_count(ccnt, NULL, rc.n_tiles * SMP_WARPS, j, sh);
        __syncwarp();
        const int c = sh.bin, want = j - sh.before, lane = smp_lane();
        int id0;
        float v[SMP_VEC];
        smp_chunk_fetch(rc, c, lane, &id0, v);
        unsigned hits = 0;
#pragma unroll
        for (int k = 0; k < SMP_VEC; k++) {
            if (!smp_valid(id0 + k, rc.vocab)) continue;
            const float w = smp_weight(rc, smp_d(rc, v[k]));
            if (smp_cand(rc, w) && sampler_weight_key(w) == key0) hits |= 1u << k;
        }
        const int incl = smp_warp_incl_i(__popc(hits)), excl = smp_excl_i(incl);
        if (excl < want && want <= incl) {
            int r = want - excl;
            for (int k = 0; k < SMP_VEC; k++)
                if (hits >> k & 1u && --r == 0) {
                    sh.result = id0 + k;
                    break;
                }
        }
    }
    __syncthreads();
}

/* The lowest id whose scaled logit is +inf -> sh.result (the argmax when the max is +inf). */
template <typename T>
static __device__ __noinline__ void smp_first_inf(const smp_row<T> &rc, smp_ctl &sh) {
    int best = ID_NONE;
    smp_for_tiles(rc, [&](int, int id0, const float *v) {
#pragma unroll
        for (int k = 0; k < SMP_VEC; k++)
            if (smp_valid(id0 + k, rc.vocab) && __fdiv_rn(v[k], rc.temp) == INFINITY)
                best = min(best, id0 + k);
    });
    const int s = smp_warp_max_i(-best); /* min through max */
    if (smp_lane() == 0) sh.red_i[smp_warp()] = -s;
    __syncthreads();
    if (smp_warp() == 0) {
        const int b = -smp_warp_max_i(-sh.red_i[smp_lane()]);
        if (smp_lane() == 0) sh.result = b;
    }
    __syncthreads();
}

/* ---------------- the kernel ---------------- */

/* Finds the bound of a top-k / top-p cut inside the key range [klo, khi] holding n candidates
 * (n <= cap): gathers and sorts them. Leaves them sorted in g. */
template <typename T>
static __device__ int smp_gather_sorted(const smp_row<T> &rc, uint32_t klo, uint32_t khi,
                                        uint64_t *g, int cap, smp_ctl &sh) {
    smp_gather(rc, klo, khi, g, cap, sh);
    const int n = min(sh.gather_n, cap);
    smp_sort(g, n);
    return n;
}

template <typename T, bool GREEDY_ONLY>
static __global__ void __launch_bounds__(SMP_THREADS, 1) sample_kernel(const smp_args a) {
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ smp_ctl sh;
    __shared__ float s_tab[32];
    const int row = (int)blockIdx.x, tid = (int)threadIdx.x;
    const struct kern_sample_row p = a.rows[row];
    const int V = a.vocab;
    if (tid < 32) s_tab[tid] = c_exp_tab[tid];

    smp_row<T> rc;
    const T *rowp = (const T *)a.logits + (int64_t)row * V;
    const uintptr_t addr = (uintptr_t)rowp, aligned = addr & ~(uintptr_t)15;
    rc.base = (const T *)aligned;
    rc.head = (int)((addr - aligned) / sizeof(T));
    rc.len = rc.head + V;
    rc.n_tiles = (rc.len + SMP_TILE - 1) / SMP_TILE;
    rc.vocab = V;
    rc.ovr = NULL;
    rc.bm = NULL;
    rc.tab = s_tab;
    rc.temp = p.temperature;
    rc.scale = !p.greedy && p.temperature != 1.0f;
    rc.m = 0.0f;
    rc.min_p = p.min_p;

    /* Penalties (vLLM's apply_penalties, as engine/sampler.c orders them): each listed id's
     * value goes to the override row and its bit to the shared bitmap. */
    if (a.any_pen && p.pen_n > 0) {
        uint32_t *bm = (uint32_t *)(smem + a.lay.bm);
        float *ovr = a.ovr + (int64_t)row * V;
        for (int i = tid; i < (V + 31) / 32; i += SMP_THREADS) bm[i] = 0;
        __syncthreads();
        for (int e = tid; e < p.pen_n; e += SMP_THREADS) {
            const struct kern_sample_pen q = a.pen[p.pen_off + e];
            float x = smp_load1(rowp + q.id);
            if (p.do_rep) x = x > 0.0f ? __fdiv_rn(x, p.rep) : __fmul_rn(x, p.rep);
            if (q.count) { /* two steps, as vLLM subtracts them */
                if (p.freq != 0.0f) x = __fsub_rn(x, __fmul_rn(p.freq, (float)q.count));
                if (p.pres != 0.0f) x = __fsub_rn(x, p.pres);
            }
            ovr[q.id] = x;
            atomicOr(&bm[q.id >> 5], 1u << (q.id & 31));
        }
        rc.ovr = ovr;
        rc.bm = bm;
    }
    __syncthreads();

    /* A: max (NaN never wins) and its lowest id, on the unscaled values: x / T is monotone, so
     * the scaled max is max / T. */
    {
        float bv = -INFINITY;
        int bi = ID_NONE, first = ID_NONE;
        smp_for_tiles<GREEDY_ONLY ? 2 * SMP_UNROLL : SMP_UNROLL>(
            rc, [&](int, int id0, const float *v) {
#pragma unroll
                for (int k = 0; k < SMP_VEC; k++) {
                    if (!smp_valid(id0 + k, V) || v[k] != v[k]) continue;
                    if (bi == ID_NONE || v[k] > bv) bv = v[k], bi = id0 + k;
                    first = min(first, id0 + k);
                }
            });
        smp_block_argmax(bv, bi, first, sh);
    }
    if (GREEDY_ONLY || p.greedy) {
        /* the lowest id among equal maxima; all -inf: the first non-NaN; all NaN: 0 */
        if (tid == 0) a.ids[row] = sh.am_id == ID_NONE ? 0 : sh.am_id;
        return;
    }
    const float m = rc.scale ? __fdiv_rn(sh.am_v, rc.temp) : sh.am_v;
    if (!(m > -INFINITY) || m == INFINITY) {
        /* no finite mass: the argmax of the scaled logits, as the CPU sampler falls back */
        int id = sh.am_first == ID_NONE ? 0 : sh.am_first;
        if (m == INFINITY) {
            if (rc.scale && p.temperature < 1.0f) {
                smp_first_inf(rc, sh); /* finite logits may overflow to +inf */
                id = sh.result;
            } else {
                id = sh.am_id;
            }
        }
        if (tid == 0) a.ids[row] = id;
        return;
    }
    rc.m = m;

    uint32_t *h0c = (uint32_t *)(smem + a.lay.h0c), *h1c = (uint32_t *)(smem + a.lay.h1c);
    double *h0m = (double *)(smem + a.lay.h0m), *h1m = (double *)(smem + a.lay.h1m);
    uint64_t *g = (uint64_t *)(smem + a.lay.g);
    double *chunk = (double *)(smem + a.lay.chunk);
    const int n_chunks = rc.n_tiles * SMP_WARPS, cap = a.cap;
    const bool want_topk = p.top_k > 0 && p.top_k < V;
    const bool want_topp = p.top_p < 1.0f;
    const bool want_hist = want_topk || want_topp;

    /* B: weights, min-p, per-chunk candidate sums, the first histogram level. */
    int ncand;
    {
        if (want_hist) {
            for (int b = tid; b < SMP_BINS; b += SMP_THREADS) h0c[b] = 0, h0m[b] = 0.0;
            __syncthreads();
        }
        int nc = 0, pb = -1;
        uint32_t pc = 0;
        double pm = 0.0;
        smp_for_tiles(rc, [&](int t, int id0, const float *v) {
            double s = 0.0;
#pragma unroll
            for (int k = 0; k < SMP_VEC; k++) {
                if (!smp_valid(id0 + k, V)) continue;
                const float w = smp_weight(rc, smp_d(rc, v[k]));
                if (!smp_cand(rc, w)) continue;
                nc++;
                s += (double)w;
                if (want_hist) {
                    const int b = (int)(sampler_weight_key(w) >> L0_SHIFT);
                    if (b != pb) {
                        if (pb >= 0) {
                            atomicAdd(&h0c[pb], pc);
                            if (want_topp) atomicAdd(&h0m[pb], pm);
                        }
                        pb = b, pc = 0, pm = 0.0;
                    }
                    pc++;
                    pm += (double)w;
                }
            }
            s = smp_warp_sum_d(s);
            if (smp_lane() == 0) chunk[t * SMP_WARPS + smp_warp()] = s;
        });
        if (pb >= 0) {
            atomicAdd(&h0c[pb], pc);
            if (want_topp) atomicAdd(&h0m[pb], pm);
        }
        ncand = smp_block_sum_i(nc, sh); /* its barriers also publish the histogram and chunks */
    }

    /* The kept set is every candidate ranked at or before (kb, ib) in (key asc, id asc). */
    uint32_t kb = KEY_NONE;
    int ib = ID_NONE;
    int n_kept = ncand;
    double mass_kept = 0.0; /* valid when top-k cut and top-p follows */
    int b0 = -1, bin0_cnt = 0;
    double bin0_mass = 0.0; /* top-k's share of bucket b0 */

    if (p.top_k > 0 && p.top_k < ncand) {
        /* top-k: the key of the k-th ranked; ties with it stay (vLLM masks only below it).
         * Narrow to the bucket holding it, then to finer ones while crowded, then sort. */
        if (tid < 32) smp_find_count(h0c, want_topp ? h0m : NULL, SMP_BINS, p.top_k, sh);
        __syncthreads();
        b0 = sh.bin;
        const int before0 = sh.before;
        const double mass0 = sh.mass_before;
        int r = p.top_k - before0, cnt = (int)h0c[b0];
        double cnt_mass = 0.0; /* the mass of the current range (levels 1, 2) */
        uint32_t klo = (uint32_t)b0 << L0_SHIFT, khi = klo | ((1u << L0_SHIFT) - 1u), keyk;
        for (int level = 0;; level++) {
            __syncthreads(); /* all have read sh and the histograms */
            if (cnt <= cap) {
                const int n = smp_gather_sorted(rc, klo, khi, g, cap, sh);
                keyk = (uint32_t)(g[r - 1] >> 32);
                if (tid < 32) smp_prefix_upto(g, n, keyk, sh);
                __syncthreads();
                bin0_cnt += sh.cnt_in, bin0_mass += sh.mass_in;
                break;
            }
            if (level == 2) { /* [klo, khi] is one key: all of it is kept */
                keyk = klo;
                bin0_cnt += cnt, bin0_mass += cnt_mass;
                break;
            }
            const int shift = level == 0 ? L1_SHIFT : 0, nb = level == 0 ? SMP_BINS : 256;
            smp_hist(rc, klo, khi, shift, (uint32_t)nb - 1u, want_topp, h1c, h1m, nb);
            if (tid < 32) smp_find_count(h1c, want_topp ? h1m : NULL, nb, r, sh);
            __syncthreads();
            r -= sh.before, bin0_cnt += sh.before, bin0_mass += sh.mass_before;
            klo |= (uint32_t)sh.bin << shift, khi = klo | ((1u << shift) - 1u);
            cnt = (int)h1c[sh.bin], cnt_mass = h1m[sh.bin];
        }
        kb = keyk, ib = ID_NONE;
        n_kept = before0 + bin0_cnt;
        mass_kept = mass0 + bin0_mass;
        __syncthreads();
    }

    if (want_topp && n_kept > 1) {
        /* top-p: the shortest rank prefix whose mass reaches top_p of the kept mass (vLLM
         * masks what the ascending cumulative puts at or below 1 - top_p: the same set). */
        if (kb == KEY_NONE) { /* nothing cut yet: the mass of all candidates */
            if (tid < 32) {
                const int seg = (n_chunks + 31) / 32, lo = min(tid * seg, n_chunks),
                          hi = min(lo + seg, n_chunks);
                double s = 0.0;
                for (int c = lo; c < hi; c++) s += chunk[c];
                s = smp_warp_incl_d(s);
                if (tid == 31) sh.dsum = s;
            }
            __syncthreads();
            mass_kept = sh.dsum;
        }
        const double target = (double)p.top_p * mass_kept;
        const uint32_t kmax = kb == KEY_NONE ? KEY_NONE - 1u : kb;
        uint32_t bk = KEY_NONE; /* the new bound; KEY_NONE: rounding kept everything */
        int bi = ID_NONE;
        if (n_kept <= cap) { /* few enough to sort all of them */
            const int n = smp_gather_sorted(rc, 0u, kmax, g, cap, sh);
            if (tid < 32) smp_cut_mass(g, n, 0.0, target, sh);
            __syncthreads();
            if (sh.found >= 0) bk = (uint32_t)(g[sh.found] >> 32), bi = (int)(uint32_t)g[sh.found];
        } else {
            if (kb != KEY_NONE) { /* the histogram of the kept set: b0 as top-k cut it */
                for (int b = b0 + tid; b < SMP_BINS; b += SMP_THREADS) {
                    h0c[b] = b == b0 ? (uint32_t)bin0_cnt : 0u;
                    h0m[b] = b == b0 ? bin0_mass : 0.0;
                }
                __syncthreads();
            }
            if (tid < 32) smp_find_mass(h0c, h0m, SMP_BINS, 0.0, target, sh);
            __syncthreads();
            if (sh.bin >= 0) {
                double acc = sh.mass_before;
                uint32_t klo = (uint32_t)sh.bin << L0_SHIFT;
                uint32_t khi = min(kmax, klo | ((1u << L0_SHIFT) - 1u));
                int cnt = (int)h0c[sh.bin];
                bk = khi; /* rounding fallback: keep through the range */
                for (int level = 0;; level++) {
                    __syncthreads(); /* all have read sh and the histograms */
                    if (cnt <= cap) {
                        const int n = smp_gather_sorted(rc, klo, khi, g, cap, sh);
                        if (tid < 32) smp_cut_mass(g, n, acc, target, sh);
                        __syncthreads();
                        if (sh.found >= 0)
                            bk = (uint32_t)(g[sh.found] >> 32), bi = (int)(uint32_t)g[sh.found];
                        break;
                    }
                    if (level == 2) {
                        /* a run of cnt exactly equal weights: the first j that reach target,
                         * then the j-th of them in id order */
                        const double w0 = (double)sampler_key_weight(klo);
                        double jd = ceil((target - acc) / w0);
                        jd = jd < 1.0 ? 1.0 : jd > (double)cnt ? (double)cnt : jd;
                        int j = (int)jd;
                        while (j > 1 && acc + (double)(j - 1) * w0 >= target) j--;
                        while (j < cnt && acc + (double)j * w0 < target) j++;
                        smp_id_select(rc, klo, j, (uint32_t *)g, sh);
                        bk = klo, bi = sh.result;
                        break;
                    }
                    const int shift = level == 0 ? L1_SHIFT : 0, nb = level == 0 ? SMP_BINS : 256;
                    smp_hist(rc, klo, khi, shift, (uint32_t)nb - 1u, true, h1c, h1m, nb);
                    if (tid < 32) smp_find_mass(h1c, h1m, nb, acc, target, sh);
                    __syncthreads();
                    if (sh.bin < 0) break; /* rounding: keep through the range */
                    acc = sh.mass_before;
                    klo |= (uint32_t)sh.bin << shift;
                    khi = min(kmax, klo | ((1u << shift) - 1u));
                    cnt = (int)h1c[sh.bin];
                    bk = khi;
                }
            }
        }
        if (bk != KEY_NONE) kb = bk, ib = bi;
        __syncthreads();
    }

    /* D: the draw, over the kept tokens in id order. */
    if (kb != KEY_NONE) smp_kept_sums(rc, kb, ib, chunk);
    if (tid < 32) {
        smp_find_draw_chunk(chunk, n_chunks, p.u, sh);
        __syncwarp();
        const int c = max(sh.chunk, 0), lane = smp_lane(); /* -1 cannot happen: weight 1 */
        const double target = sh.target;
        int id0;
        float v[SMP_VEC], w[SMP_VEC];
        smp_chunk_fetch(rc, c, lane, &id0, v);
        double s = 0.0;
#pragma unroll
        for (int k = 0; k < SMP_VEC; k++) {
            w[k] = 0.0f;
            if (!smp_valid(id0 + k, V)) continue;
            const float wk = smp_weight(rc, smp_d(rc, v[k]));
            const uint32_t key = sampler_weight_key(wk);
            if (smp_cand(rc, wk) && (key < kb || (key == kb && id0 + k <= ib))) w[k] = wk;
            s += (double)w[k];
        }
        double acc = sh.chunk_before + smp_excl_d(smp_warp_incl_d(s));
        int found = -1, last = -1;
#pragma unroll
        for (int k = 0; k < SMP_VEC; k++) {
            if (w[k] == 0.0f) continue;
            acc += (double)w[k];
            last = id0 + k;
            if (found < 0 && acc > target) found = id0 + k;
        }
        const unsigned hit = __ballot_sync(FULL, found >= 0);
        const int id = hit ? __shfl_sync(FULL, found, __ffs(hit) - 1) : smp_warp_max_i(last);
        if (lane == 0) a.ids[row] = id;
    }
}

/* ---------------- launch ---------------- */

/* Shared memory: two histogram levels, the gather of cap tokens, per-chunk sums and (with
 * penalties) the bitmap of penalised ids. */
static size_t layout(int vocab, int cap, int any_pen, int greedy_only, struct smp_layout *l) {
    const size_t n_chunks = (size_t)((vocab + 7 + SMP_TILE - 1) / SMP_TILE) * SMP_WARPS;
    const size_t bm = any_pen ? (size_t)(vocab + 31) / 32 * 4 : 0;
    size_t off = 0;
    if (greedy_only) {
        *l = (struct smp_layout){0, 0, 0, 0, 0, 0, 0};
        return bm;
    }
    l->h0c = (unsigned)off, off += SMP_BINS * 4;
    l->h0m = (unsigned)off, off += SMP_BINS * 8;
    l->h1c = (unsigned)off, off += SMP_BINS * 4;
    l->h1m = (unsigned)off, off += SMP_BINS * 8;
    l->g = (unsigned)off, off += (size_t)cap * 8;
    l->chunk = (unsigned)off, off += n_chunks * 8;
    l->bm = (unsigned)off, off += bm;
    return off;
}

template <typename T, bool G>
static enum tl_status launch_one(const struct kern_ctx *ctx, int n, struct smp_args *a,
                                 size_t fixed_bytes) {
    enum tl_status st = TL_OK;
    struct cudaFuncAttributes fa;
    size_t smem;
    const size_t optin = ctx->smem_per_block_optin_bytes;
    const size_t n_chunks = (size_t)((a->vocab + 7 + SMP_TILE - 1) / SMP_TILE) * SMP_WARPS;

    KERN_CUDA(ctx->err, cudaFuncGetAttributes(&fa, sample_kernel<T, G>));
    a->cap = 0;
    if (!G) {
        /* the largest power-of-two gather that fits beside the rest */
        const size_t rest = fixed_bytes + fa.sharedSizeBytes;
        size_t cap = SMP_CAP_MAX;
        while (cap >= 512 && rest + cap * 8 > optin) cap >>= 1;
        if (cap < 512 || n_chunks > 2 * cap)
            KERN_FAIL(ctx->err, TL_ERR_UNSUPPORTED,
                      "kern_sample: a vocabulary of %d tokens needs more shared memory than this "
                      "GPU gives a block (%zu bytes)",
                      a->vocab, optin);
        a->cap = (int)cap;
    }
    smem = layout(a->vocab, a->cap, a->any_pen, G, &a->lay);
    if (smem + fa.sharedSizeBytes > optin)
        KERN_FAIL(ctx->err, TL_ERR_UNSUPPORTED,
                  "kern_sample: a vocabulary of %d tokens needs %zu bytes of shared memory, this "
                  "GPU gives a block %zu",
                  a->vocab, smem + fa.sharedSizeBytes, optin);
    KERN_CUDA(ctx->err,
              cudaFuncSetAttribute(sample_kernel<T, G>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)smem));
    sample_kernel<T, G><<<(unsigned)n, SMP_THREADS, smem, ctx->stream>>>(*a);
    KERN_CUDA(ctx->err, cudaGetLastError());

cleanup:
    return st;
}

static enum tl_status sample_launch(const struct kern_ctx *ctx, enum tl_dtype dt, int n,
                                    struct smp_args *a, int all_greedy) {
    enum tl_status st = TL_OK;
    struct smp_layout l;
    /* everything but the gather and the kernel's static shared memory */
    const size_t fixed = layout(a->vocab, 0, a->any_pen, 0, &l);

    KERN_CUDA(ctx->err, kern_enter(ctx));
    switch (dt) {
    case TL_DTYPE_BF16:
        st = all_greedy ? launch_one<__nv_bfloat16, true>(ctx, n, a, fixed)
                        : launch_one<__nv_bfloat16, false>(ctx, n, a, fixed);
        break;
    case TL_DTYPE_F16:
        st = all_greedy ? launch_one<__half, true>(ctx, n, a, fixed)
                        : launch_one<__half, false>(ctx, n, a, fixed);
        break;
    case TL_DTYPE_F32:
        st = all_greedy ? launch_one<float, true>(ctx, n, a, fixed)
                        : launch_one<float, false>(ctx, n, a, fixed);
        break;
    default:
        KERN_FAIL(ctx->err, TL_ERR_INTERNAL, "sample_launch: dtype %s", dtype_name(dt));
    }

cleanup:
    return st;
}

enum tl_status kern_sample(const struct kern_ctx *ctx, enum tl_dtype dt, const void *logits, int n,
                           int vocab, const struct kern_sample_row *rows,
                           const struct kern_sample_pen *pen, int any_pen, int all_greedy,
                           float *override, int32_t *ids) {
    static const char op[] = "kern_sample";
    struct smp_args a;
    if (!ctx) return TL_ERR_INVALID;
    if (!dtype_is_float_compute(dt))
        return tl_fail(ctx->err, TL_ERR_UNSUPPORTED, "%s: dtype %s; want F32, F16 or BF16", op,
                       dtype_name(dt));
    if (n < 0 || vocab < 1 || vocab > INT_MAX - 2 * SMP_TILE)
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: %d rows of %d tokens", op, n, vocab);
    if (n == 0) return TL_OK;
    if (!logits || !rows || !ids || (any_pen && (!pen || !override)))
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: a buffer is NULL", op);
    if ((uintptr_t)logits % dtype_size(dt) || (uintptr_t)rows % 8 || (uintptr_t)ids % 4 ||
        (any_pen && ((uintptr_t)pen % 4 || (uintptr_t) override % 4)))
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: a buffer is not aligned to its type", op);
    a.logits = logits;
    a.vocab = vocab;
    a.rows = rows;
    a.pen = pen;
    a.ovr = override;
    a.ids = ids;
    a.any_pen = any_pen ? 1 : 0;
    a.cap = 0;
    return sample_launch(ctx, dt, n, &a, all_greedy);
}
