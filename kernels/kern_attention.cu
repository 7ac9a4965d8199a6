/* kern_attention: RoPE fused with the paged KV write, and causal paged attention over any mix
 * of decode tokens and prefill chunks, on the GPU. API, batch and cache layout:
 * kern_attention.h; the CPU reference (same math, token-major fp32 cache) is cpu/attention.c.
 *
 * Kernels (each: static __global__ *_kernel<T, HD> -> static *_launch -> exported kern_*):
 *  - rope_kv_kernel: one block per token; cos/sin of the token's angles once, in shared memory,
 *    then every q and k head rotated in fp32 (rounded step by step like cpu/attention.c) and k,
 *    v stored to the token's cache slot.
 *  - decode_kernel: sequences with exactly one new token. One CTA per (split, kv head, seq); its
 *    16 mma rows are the q heads of that kv head's group (GQA packing), so each K/V tile is read
 *    once for the whole group. The CTA walks its split's keys in tiles of 64 (cp.async, three
 *    stages); each of the 4 warps takes 16 keys of a tile with its own online softmax and the
 *    warps merge in shared memory at the end. A sequence that fits one split writes out
 *    directly; longer ones write (max, sum, acc) partials to the workspace and
 *    decode_reduce_kernel merges them (flash-decoding), so one long sequence fills the GPU. The
 *    reduce is launched as a programmatic dependent of the decode grid on Hopper, hiding its
 *    launch behind the decode kernel's tail.
 *  - prefill_kernel: sequences with more than one new token. One CTA per (64-token q tile, q
 *    head, seq), flash-attention-2 style: 4 warps x 16 query rows, K/V tiles double-buffered
 *    with cp.async, S = Q K^T and O += P V on tensor cores (mma.sync m16n8k16, fp32 accumulate),
 *    online softmax in fp32 (exp2 with the scale folded in), causal mask from each token's
 *    position.
 * Both attention kernels copy a tile's block ids from the block table into shared memory a few
 * tiles ahead (cp.async), so the table's load latency stays off each tile's critical path.
 * Which sequences are decode is known only on the device (seq_start), so both attention kernels
 * are launched over all sequences and a CTA whose sequence is of the other kind exits at once
 * (the host skips a kernel when the batch's host-side counts prove it has nothing to do).
 *
 * Numerics: scores, softmax and accumulators are fp32; P is rounded to the activation dtype
 * before the P V product (as in FlashAttention), and the output once at the end. A sequence's
 * new tokens are contiguous with increasing positions (n_past + i), as kern_batch says. Nothing
 * here blocks the host. */
#include "kern.h"
#include "kern_attention.h"
#include "kern_impl.h"

#include <math.h>
#include <stdint.h>

/* ---------------- tunables ---------------- */

enum {
    ATTN_THREADS = 128, /* 4 warps in every attention CTA */
    DEC_ROWS = 16,      /* q heads per decode CTA: one mma m tile */
    DEC_BC = 64,        /* keys per decode tile, 16 per warp */
    DEC_STAGES = 3,     /* cp.async pipeline depth of the decode kernel */
    PRE_BQ = 64,        /* query rows (tokens) per prefill CTA, 16 per warp */
    PRE_STAGES = 2,     /* K/V double buffer of the prefill kernel */
    /* Decode split-K: aim for this many CTAs (one wave at 2 per SM on an H100's 132 SMs, at
     * head_dim 128), never fewer than SPLIT_MIN_CHUNK keys per split. Device-independent, so
     * that kern_attention_workspace_bytes needs no context. */
    SPLIT_TARGET_CTAS = 256,
    SPLIT_MIN_CHUNK = 64,
    ROPE_THREADS = 256,
    MAX_HEAD_DIM = 256,
};

/* Prefill K/V tile: 64 keys while the accumulators fit the registers, 32 above head_dim 128. */
template <int HD> struct pre_cfg { static constexpr int BC = HD <= 128 ? 64 : 32; };

static inline int64_t ceil_div64(int64_t a, int64_t b) {
    return (a + b - 1) / b;
}

/* ---------------- device helpers ---------------- */

static __device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared without a register round trip; pred false zero-fills the 16 bytes
 * and reads nothing (src must still be a valid pointer value). */
static __device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, bool pred) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(pred ? 16 : 0)
                 : "memory");
}
static __device__ __forceinline__ void cp_async4(uint32_t dst, const void *src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
}
static __device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N> static __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* Four 8x8 b16 matrices from shared memory; lane l gives the address of row l % 8 of matrix
 * l / 8. .trans transposes each matrix on the way. */
static __device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
static __device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}

/* Programmatic dependent launch (Hopper): the reduce kernel is launched while the decode kernel
 * still runs and waits here until the decode grid's writes are visible; the decode kernel lets
 * it launch at once. Both are no-ops for a kernel launched without the attribute. */
static __device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
static __device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

/* Per-dtype tensor-core pieces: d (16x8 fp32) += a (16x16, row) . b (16x8, col), fragments as in
 * the PTX ISA for mma.m16n8k16; pack puts lo in the low half (the lower column index). */
template <typename T> struct mma_ops;
template <> struct mma_ops<__nv_bfloat16> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<const uint32_t *>(&v);
    }
    static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
    static __device__ __forceinline__ __nv_bfloat16 from_f32(float x) {
        return __float2bfloat16_rn(x);
    }
};
template <> struct mma_ops<__half> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        const __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<const uint32_t *>(&v);
    }
    static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
    static __device__ __forceinline__ __half from_f32(float x) { return __float2half_rn(x); }
};

/* Everything the attention kernels read, by value. Pointers are device memory. */
struct attn_args {
    const void *q;       /* (n_tokens, n_heads, HD) */
    const void *k_cache; /* (num_blocks, n_kv, block_size, HD) */
    const void *v_cache; /* (num_blocks, n_kv, block_size, HD) */
    void *out;           /* (n_tokens, n_heads, HD) */
    const int32_t *positions, *seq_start, *seq_len, *block_tables;
    int max_blocks, n_heads, n_kv, group, block_size;
    int bs_shift;        /* log2(block_size) when a power of two, else -1 */
    float scale_log2;    /* log2(e) / sqrt(HD): scores go straight to exp2 */
    int n_splits, chunk; /* decode split-K: split i covers keys [i * chunk, (i + 1) * chunk) */
    int row_tiles;       /* ceil(group / DEC_ROWS) decode CTAs per kv head */
    float *ws_acc;       /* (n_seqs, n_heads, n_splits, HD) unnormalised partial outputs */
    float2 *ws_ml;       /* (n_seqs, n_heads, n_splits) (max in log2 units, sum) */
};

/* Copies ROWS rows of HD elements into a shared tile of row stride HD + 8 elements (the pad
 * keeps ldmatrix's eight row addresses in distinct banks). Row r comes from src(r); rows with
 * valid(r) false are zero-filled (src(r) is not called; `any` is a valid address that stands
 * in). One 16-byte cp.async per thread per step, consecutive threads on consecutive 16 bytes of
 * a row. */
template <int HD, int ROWS, typename SRC, typename VALID>
static __device__ __forceinline__ void load_rows(uint32_t dst, const void *any, SRC src,
                                                 VALID valid) {
    constexpr int CH = HD / 8, TOTAL = ROWS * CH, LDB = (HD + 8) * 2;
    constexpr int STEPS = (TOTAL + ATTN_THREADS - 1) / ATTN_THREADS;
#pragma unroll
    for (int it = 0; it < STEPS; it++) {
        const int i = (int)threadIdx.x + it * ATTN_THREADS;
        if (TOTAL % ATTN_THREADS == 0 || i < TOTAL) {
            const int r = i / CH, c = i % CH;
            const bool ok = valid(r);
            const void *p = ok ? (const void *)(src(r) + c * 16) : any;
            cp_async16(dst + (uint32_t)(r * LDB + c * 16), p, ok);
        }
    }
}

/* Block ids of keys [k0, k0 + ROWS), one per key, from the sequence's block table into the
 * shared array dst (ROWS int32), asynchronously in the caller's cp.async group; keys >= k_end are
 * skipped, so no table entry past the sequence is read. Keeping them a few tiles ahead takes the
 * table's load latency off each tile's critical path. */
template <int ROWS>
static __device__ __forceinline__ void load_tile_ids(uint32_t dst, const int32_t *bt, int bs,
                                                     int bs_shift, int k0, int k_end) {
    static_assert(ROWS <= ATTN_THREADS, "one id per thread");
    const int j = (int)threadIdx.x, key = k0 + j;
    if (j < ROWS && key < k_end)
        cp_async4(dst + (uint32_t)j * 4, bt + (bs_shift >= 0 ? key >> bs_shift : key / bs));
}

/* Keys [k0, k0 + ROWS) of one (sequence, kv head) from the paged K and V caches into the
 * shared tiles k_dst and v_dst, given their block ids (ids, shared, from load_tile_ids); keys
 * >= k_end are zero-filled. K and V share the layout, so each key's offset serves both. */
template <int HD, int ROWS>
static __device__ __forceinline__ void
load_kv_tiles(uint32_t k_dst, uint32_t v_dst, const void *k_cache, const void *v_cache,
              const int32_t *ids, int kvh, int n_kv, int bs, int bs_shift, int k0, int k_end) {
    constexpr int CH = HD / 8, TOTAL = ROWS * CH, LDB = (HD + 8) * 2;
    constexpr int STEPS = (TOTAL + ATTN_THREADS - 1) / ATTN_THREADS;
#pragma unroll
    for (int it = 0; it < STEPS; it++) {
        const int i = (int)threadIdx.x + it * ATTN_THREADS;
        if (TOTAL % ATTN_THREADS == 0 || i < TOTAL) {
            const int r = i / CH, c = i % CH, key = k0 + r;
            const bool ok = key < k_end;
            int64_t off = 0;
            if (ok) {
                const int slot = bs_shift >= 0 ? key & (bs - 1) : key % bs;
                off = (((int64_t)ids[r] * n_kv + kvh) * bs + slot) * (HD * 2) + c * 16;
            }
            const uint32_t d = (uint32_t)(r * LDB + c * 16);
            cp_async16(k_dst + d, (const char *)k_cache + off, ok);
            cp_async16(v_dst + d, (const char *)v_cache + off, ok);
        }
    }
}

/* Q fragments (16 rows x HD, mma A layout) of the 16 rows at q_lane (this lane's ldmatrix
 * address for k chunk 0), for kernels that keep Q in registers. */
template <int HD>
static __device__ __forceinline__ void load_q_frags(uint32_t q_lane, uint32_t (&qf)[HD / 16][4]) {
#pragma unroll
    for (int kc = 0; kc < HD / 16; kc++) ldsm_x4(q_lane + kc * 32, qf[kc]);
}

/* One warp's online-softmax step over NK keys (a multiple of 16) held in shared tiles: the
 * warp's 16 query rows against keys key0 .. key0 + NK - 1, whose K and V rows start at k_tile /
 * v_tile (stride HD + 8). This lane owns rows g = lane / 4 and g + 8, for which keys < lim0 /
 * lim1 are visible (masking is applied only when need_mask). State per lane: o (HD / 8 n tiles
 * of the mma C layout), m (running max, log2 units) and l (this lane's part of the row sums). */
template <typename T, int HD, int NK, bool Q_REGS>
static __device__ __forceinline__ void
warp_attend(float (&o)[HD / 8][4], float (&m)[2], float (&l)[2], const uint32_t (&qf)[HD / 16][4],
            uint32_t q_lane, uint32_t k_tile, uint32_t v_tile, int key0, int lim0, int lim1,
            bool need_mask, float scale_log2) {
    typedef mma_ops<T> M;
    constexpr int LDB = (HD + 8) * 2;
    const int lane = (int)(threadIdx.x & 31u), t = lane & 3;
    /* ldmatrix row addresses: K as the col-major B of S = Q K^T (keys = n), V transposed as the
     * B of O = P V (keys = k). */
    const uint32_t k_lane =
        k_tile + (uint32_t)(((lane & 7) + ((lane >> 4) << 3)) * LDB + ((lane >> 3) & 1) * 16);
    const uint32_t v_lane = v_tile + (uint32_t)((lane & 15) * LDB + (lane >> 4) * 16);

    float s[NK / 8][4];
#pragma unroll
    for (int n = 0; n < NK / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kc = 0; kc < HD / 16; kc++) {
        uint32_t a[4];
        if constexpr (Q_REGS) {
            a[0] = qf[kc][0], a[1] = qf[kc][1], a[2] = qf[kc][2], a[3] = qf[kc][3];
        } else {
            ldsm_x4(q_lane + kc * 32, a);
        }
#pragma unroll
        for (int np = 0; np < NK / 16; np++) {
            uint32_t b[4];
            ldsm_x4(k_lane + (uint32_t)(np * 16 * LDB + kc * 32), b);
            M::mma(s[2 * np], a, b[0], b[1]);
            M::mma(s[2 * np + 1], a, b[2], b[3]);
        }
    }

    /* Scale, mask, row max over the quad of lanes that share a row. */
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < NK / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float v = s[n][e] * scale_log2;
            if (need_mask) {
                const int key = key0 + n * 8 + 2 * t + (e & 1);
                if (key >= (e < 2 ? lim0 : lim1)) v = -INFINITY;
            }
            s[n][e] = v;
        }
        mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
        mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float mn0 = fmaxf(m[0], mx0), mn1 = fmaxf(m[1], mx1);
    /* A row with no visible key so far keeps m = -inf; subtracting 0 then keeps exp2 at 0
     * instead of NaN (-inf - -inf). */
    const float b0 = mn0 == -INFINITY ? 0.0f : mn0, b1 = mn1 == -INFINITY ? 0.0f : mn1;
    const float al0 = exp2f(m[0] - b0), al1 = exp2f(m[1] - b1);
    m[0] = mn0, m[1] = mn1;
    l[0] *= al0, l[1] *= al1;
#pragma unroll
    for (int n = 0; n < NK / 8; n++) {
        s[n][0] = exp2f(s[n][0] - b0), s[n][1] = exp2f(s[n][1] - b0);
        s[n][2] = exp2f(s[n][2] - b1), s[n][3] = exp2f(s[n][3] - b1);
        l[0] += s[n][0] + s[n][1];
        l[1] += s[n][2] + s[n][3];
    }
#pragma unroll
    for (int n = 0; n < HD / 8; n++) o[n][0] *= al0, o[n][1] *= al0, o[n][2] *= al1, o[n][3] *= al1;

        /* O += P V: the S accumulators of two adjacent 8-key n tiles are the A fragment of one
         * 16-key k chunk. */
#pragma unroll
    for (int kk = 0; kk < NK / 16; kk++) {
        const uint32_t a[4] = {M::pack(s[2 * kk][0], s[2 * kk][1]),
                               M::pack(s[2 * kk][2], s[2 * kk][3]),
                               M::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                               M::pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int dn = 0; dn < HD / 16; dn++) {
            uint32_t b[4];
            ldsm_x4_trans(v_lane + (uint32_t)(kk * 16 * LDB + dn * 32), b);
            M::mma(o[2 * dn], a, b[0], b[1]);
            M::mma(o[2 * dn + 1], a, b[2], b[3]);
        }
    }
}

/* Row sums: each lane of a quad holds part of its two rows' sums. */
static __device__ __forceinline__ void quad_sum2(float (&l)[2]) {
    l[0] += __shfl_xor_sync(0xffffffffu, l[0], 1);
    l[0] += __shfl_xor_sync(0xffffffffu, l[0], 2);
    l[1] += __shfl_xor_sync(0xffffffffu, l[1], 1);
    l[1] += __shfl_xor_sync(0xffffffffu, l[1], 2);
}

/* ---------------- rope + KV write ---------------- */

/* One block per token: rotate-half RoPE on its n_heads q rows and n_kv k rows (hd each), in
 * place, then k and v to the cache slot of (its sequence, its position). */
template <typename T>
static __global__ void __launch_bounds__(ROPE_THREADS)
    rope_kv_kernel(T *__restrict__ q,                        // (n_tokens, n_heads, hd)
                   T *__restrict__ k,                        // (n_tokens, n_kv, hd)
                   const T *__restrict__ v,                  // (n_tokens, n_kv, hd)
                   T *__restrict__ k_cache,                  // (num_blocks, n_kv, bs, hd)
                   T *__restrict__ v_cache,                  // (num_blocks, n_kv, bs, hd)
                   const float *__restrict__ inv_freq,       // (hd / 2)
                   const int32_t *__restrict__ positions,    // (n_tokens)
                   const int32_t *__restrict__ tok_seq,      // (n_tokens)
                   const int32_t *__restrict__ block_tables, // (n_seqs, max_blocks)
                   int max_blocks, int n_heads, int n_kv, int hd, int bs) {
    typedef mma_ops<T> M;
    __shared__ float cs[MAX_HEAD_DIM / 2], sn[MAX_HEAD_DIM / 2];
    const int64_t tok = blockIdx.x;
    const int pos = positions[tok], half = hd / 2;
    for (int i = (int)threadIdx.x; i < half; i += (int)blockDim.x) {
        /* The angle in fp32 exactly as rope_cos_sin forms it; full-precision sin/cos. */
        const float ang = __fmul_rn((float)pos, inv_freq[i]);
        sincosf(ang, &sn[i], &cs[i]);
    }
    __syncthreads();
    const int64_t blk = block_tables[(int64_t)tok_seq[tok] * max_blocks + pos / bs];
    const int slot = pos % bs;
    const int n_pairs = (n_heads + n_kv) * half;
    for (int p = (int)threadIdx.x; p < n_pairs; p += (int)blockDim.x) {
        const int hh = p / half, i = p % half;
        T *x = hh < n_heads ? q + (tok * n_heads + hh) * hd : k + (tok * n_kv + hh - n_heads) * hd;
        const float xa = M::to_f32(x[i]), xb = M::to_f32(x[i + half]);
        /* Rounded op by op like cpu/attention.c's rotate (no fused multiply-add). */
        const T ya = M::from_f32(__fsub_rn(__fmul_rn(xa, cs[i]), __fmul_rn(xb, sn[i])));
        const T yb = M::from_f32(__fadd_rn(__fmul_rn(xb, cs[i]), __fmul_rn(xa, sn[i])));
        x[i] = ya;
        x[i + half] = yb;
        if (hh >= n_heads) {
            T *dst = k_cache + ((blk * n_kv + (hh - n_heads)) * bs + slot) * hd;
            dst[i] = ya;
            dst[i + half] = yb;
        }
    }
    const int kvd = n_kv * hd;
    for (int p = (int)threadIdx.x; p < kvd; p += (int)blockDim.x) {
        const int kh = p / hd, d = p % hd;
        v_cache[((blk * n_kv + kh) * bs + slot) * hd + d] = v[tok * kvd + p];
    }
}

template <typename T>
static enum tl_status rope_kv_launch(const struct kern_ctx *ctx, const struct kern_attn_shape *s,
                                     const struct kern_batch *b, const float *inv_freq, void *q,
                                     void *k, const void *v, void *k_cache, void *v_cache) {
    enum tl_status st = TL_OK;
    KERN_CUDA(ctx->err, kern_enter(ctx));
    rope_kv_kernel<T><<<(unsigned)b->n_tokens, ROPE_THREADS, 0, ctx->stream>>>(
        (T *)q, (T *)k, (const T *)v, (T *)k_cache, (T *)v_cache, inv_freq, b->positions,
        b->tok_seq, b->block_tables, b->max_blocks, s->n_heads, s->n_kv_heads, s->head_dim,
        s->block_size);
    KERN_CUDA(ctx->err, cudaGetLastError());
cleanup:
    return st;
}

/* ---------------- decode: split-K over the sequence ---------------- */

/* Shared memory: Q (16 rows), DEC_STAGES (K, V) tiles, then DEC_STAGES + 1 tiles' block ids. */
template <int HD> static constexpr size_t decode_smem_bytes() {
    return (size_t)(DEC_ROWS + DEC_STAGES * 2 * DEC_BC) * (HD + 8) * 2 +
           (DEC_STAGES + 1) * DEC_BC * sizeof(int32_t);
}

/* grid (n_splits, n_kv * row_tiles, n_seqs). See the file comment. */
template <typename T, int HD>
static __global__ void __launch_bounds__(ATTN_THREADS) decode_kernel(const struct attn_args a) {
    constexpr int LD = HD + 8, LDB = LD * 2;
    constexpr bool Q_REGS = HD <= 128;
    constexpr uint32_t TILE_B = DEC_BC * LDB; /* bytes of one K (or V) tile */
    extern __shared__ __align__(16) unsigned char smem[];
    const int seq = (int)blockIdx.z, split = (int)blockIdx.x;
    pdl_launch_dependents(); /* the reduce kernel may start; it waits for this grid's writes */
    const int s0 = a.seq_start[seq];
    if (a.seq_start[seq + 1] - s0 != 1) return; /* a prefill sequence */
    const int ctx = min(a.positions[s0] + 1, a.seq_len[seq]);
    const int k_lo = split * a.chunk;
    if (k_lo >= ctx) return; /* this sequence is shorter than the longest */
    const int k_hi = min(ctx, k_lo + a.chunk);
    const int kvh = (int)blockIdx.y / a.row_tiles, rt = (int)blockIdx.y % a.row_tiles;
    const int head0 = kvh * a.group + rt * DEC_ROWS;
    const int n_rows = min(DEC_ROWS, a.group - rt * DEC_ROWS);
    const int32_t *bt = a.block_tables + (int64_t)seq * a.max_blocks;
    const int warp = (int)(threadIdx.x >> 5), lane = (int)(threadIdx.x & 31u);
    const uint32_t sq = smem_u32(smem), skv = sq + DEC_ROWS * LDB;

    const uint32_t sids = skv + DEC_STAGES * 2 * TILE_B; /* (DEC_STAGES + 1, DEC_BC) int32 */
    const int32_t *ids = (const int32_t *)(smem + (sids - sq));
    constexpr int ID_SLOTS = DEC_STAGES + 1;
    const int n_tiles = (k_hi - k_lo + DEC_BC - 1) / DEC_BC;

    /* Block ids of the first ID_SLOTS tiles, then Q and the first DEC_STAGES - 1 K/V tiles.
     * Later, iteration `it` fetches the ids of tile it + ID_SLOTS: its group completes by the
     * wait of the iteration that issues that tile's K/V (DEC_STAGES <= 3). */
#pragma unroll
    for (int t = 0; t < ID_SLOTS; t++)
        if (t < n_tiles)
            load_tile_ids<DEC_BC>(sids + t * DEC_BC * 4, bt, a.block_size, a.bs_shift,
                                  k_lo + t * DEC_BC, k_hi);
    cp_async_commit();
    const char *qbase = (const char *)a.q + ((int64_t)s0 * a.n_heads + head0) * HD * 2;
    load_rows<HD, DEC_ROWS>(
        sq, a.q, [=](int r) { return qbase + (int64_t)r * HD * 2; },
        [=](int r) { return r < n_rows; });
    cp_async_wait<0>(); /* the ids group; Q is not committed yet and stays in flight */
    __syncthreads();
#pragma unroll
    for (int st = 0; st < DEC_STAGES - 1; st++) {
        if (st < n_tiles) {
            const uint32_t kt = skv + (uint32_t)st * 2 * TILE_B;
            load_kv_tiles<HD, DEC_BC>(kt, kt + TILE_B, a.k_cache, a.v_cache, ids + st * DEC_BC, kvh,
                                      a.n_kv, a.block_size, a.bs_shift, k_lo + st * DEC_BC, k_hi);
        }
        cp_async_commit();
    }

    const uint32_t q_lane = sq + (uint32_t)((lane & 15) * LDB + (lane >> 4) * 16);
    uint32_t qf[HD / 16][4];
    float o[HD / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < HD / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    for (int it = 0; it < n_tiles; it++) {
        cp_async_wait<DEC_STAGES - 2>();
        __syncthreads(); /* tile `it` is in; every warp is done with the stage reloaded below */
        if (Q_REGS && it == 0) load_q_frags<HD>(q_lane, qf);
        const int nt = it + DEC_STAGES - 1;
        if (nt < n_tiles) {
            const uint32_t kt = skv + (uint32_t)(nt % DEC_STAGES) * 2 * TILE_B;
            load_kv_tiles<HD, DEC_BC>(kt, kt + TILE_B, a.k_cache, a.v_cache,
                                      ids + (nt % ID_SLOTS) * DEC_BC, kvh, a.n_kv, a.block_size,
                                      a.bs_shift, k_lo + nt * DEC_BC, k_hi);
        }
        if (it + ID_SLOTS < n_tiles)
            load_tile_ids<DEC_BC>(sids + (uint32_t)(it % ID_SLOTS) * DEC_BC * 4, bt, a.block_size,
                                  a.bs_shift, k_lo + (it + ID_SLOTS) * DEC_BC, k_hi);
        cp_async_commit();
        const int key0 = k_lo + it * DEC_BC + warp * 16;
        if (key0 < k_hi) {
            const uint32_t kt = skv + (uint32_t)(it % DEC_STAGES) * 2 * TILE_B + warp * 16 * LDB;
            warp_attend<T, HD, 16, Q_REGS>(o, m, l, qf, q_lane, kt, kt + TILE_B, key0, k_hi, k_hi,
                                           key0 + 16 > k_hi, a.scale_log2);
        }
    }
    cp_async_wait<0>();
    __syncthreads(); /* the pipeline's shared memory is free: merge the warps there */

    /* red_m, red_l (4 warps, 16 rows), red_o (4 warps, 16 rows, HD) in fp32. */
    float *red_m = (float *)smem, *red_l = red_m + 4 * DEC_ROWS, *red_o = red_l + 4 * DEC_ROWS;
    quad_sum2(l);
    const int g = lane >> 2, t = lane & 3;
    if (t == 0) {
        red_m[warp * DEC_ROWS + g] = m[0], red_m[warp * DEC_ROWS + g + 8] = m[1];
        red_l[warp * DEC_ROWS + g] = l[0], red_l[warp * DEC_ROWS + g + 8] = l[1];
    }
#pragma unroll
    for (int n = 0; n < HD / 8; n++) {
        float *r0 = red_o + ((int64_t)warp * DEC_ROWS + g) * HD + n * 8 + 2 * t;
        *(float2 *)r0 = make_float2(o[n][0], o[n][1]);
        *(float2 *)(r0 + 8 * HD) = make_float2(o[n][2], o[n][3]);
    }
    __syncthreads();
    const bool direct = ctx <= a.chunk; /* one split: no partials, no reduce */
    for (int i = (int)threadIdx.x; i < n_rows * HD; i += ATTN_THREADS) {
        const int r = i / HD, d = i % HD;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < 4; w++) mx = fmaxf(mx, red_m[w * DEC_ROWS + r]);
        float sum = 0.0f, acc = 0.0f;
#pragma unroll
        for (int w = 0; w < 4; w++) {
            const float f = exp2f(red_m[w * DEC_ROWS + r] - mx); /* 0 for a warp without keys */
            sum += red_l[w * DEC_ROWS + r] * f;
            acc += red_o[((int64_t)w * DEC_ROWS + r) * HD + d] * f;
        }
        if (direct) {
            ((T *)a.out)[((int64_t)s0 * a.n_heads + head0 + r) * HD + d] =
                mma_ops<T>::from_f32(acc / sum);
        } else {
            const int64_t idx = ((int64_t)seq * a.n_heads + head0 + r) * a.n_splits + split;
            a.ws_acc[idx * HD + d] = acc;
            if (d == 0) a.ws_ml[idx] = make_float2(mx, sum);
        }
    }
}

/* grid (n_heads, n_seqs), block HD threads: merges the splits of the decode sequences that
 * needed more than one. Each thread owns one dimension and merges the splits online, loading
 * REDUCE_BATCH splits' (max, sum) and acc before using any, so the whole merge costs one or two
 * round trips to L2 rather than one per split. */
enum { REDUCE_BATCH = 32 };

template <typename T, int HD>
static __global__ void __launch_bounds__(HD) decode_reduce_kernel(const struct attn_args a) {
    const int head = (int)blockIdx.x, seq = (int)blockIdx.y, d = (int)threadIdx.x;
    const int s0 = a.seq_start[seq];
    if (a.seq_start[seq + 1] - s0 != 1) return;
    const int ctx = min(a.positions[s0] + 1, a.seq_len[seq]);
    const int nv = (ctx + a.chunk - 1) / a.chunk;
    if (nv <= 1) return; /* decode_kernel wrote it directly */
    pdl_wait();          /* the partials are decode_kernel's */
    const int64_t idx0 = ((int64_t)seq * a.n_heads + head) * a.n_splits;
    const float2 *ml = a.ws_ml + idx0;
    const float *acc_p = a.ws_acc + idx0 * HD + d;
    float mx = -INFINITY, sum = 0.0f, acc = 0.0f;
    for (int b0 = 0; b0 < nv; b0 += REDUCE_BATCH) {
        float2 mlv[REDUCE_BATCH];
        float av[REDUCE_BATCH];
#pragma unroll
        for (int j = 0; j < REDUCE_BATCH; j++) {
            const bool ok = b0 + j < nv;
            mlv[j] = ok ? ml[b0 + j] : make_float2(-INFINITY, 0.0f);
            av[j] = ok ? acc_p[(int64_t)(b0 + j) * HD] : 0.0f;
        }
        float bm = mx;
#pragma unroll
        for (int j = 0; j < REDUCE_BATCH; j++) bm = fmaxf(bm, mlv[j].x);
        /* Every split that exists has a finite max, so bm is finite from the first batch on. */
        const float f_old = exp2f(mx - bm);
        sum *= f_old, acc *= f_old;
#pragma unroll
        for (int j = 0; j < REDUCE_BATCH; j++) {
            const float f = exp2f(mlv[j].x - bm);
            sum += mlv[j].y * f;
            acc += av[j] * f;
        }
        mx = bm;
    }
    ((T *)a.out)[((int64_t)s0 * a.n_heads + head) * HD + d] = mma_ops<T>::from_f32(acc / sum);
}

/* ---------------- prefill: flash attention over the paged cache ---------------- */

/* Shared memory: Q (64 rows), PRE_STAGES (K, V) tiles, then PRE_STAGES + 1 tiles' block ids. */
template <int HD> static constexpr size_t prefill_smem_bytes() {
    return (size_t)(PRE_BQ + PRE_STAGES * 2 * pre_cfg<HD>::BC) * (HD + 8) * 2 +
           (PRE_STAGES + 1) * pre_cfg<HD>::BC * sizeof(int32_t);
}

/* grid (ceil(max_new / PRE_BQ), n_heads, n_seqs). See the file comment. */
template <typename T, int HD>
static __global__ void __launch_bounds__(ATTN_THREADS) prefill_kernel(const struct attn_args a) {
    constexpr int LD = HD + 8, LDB = LD * 2, BC = pre_cfg<HD>::BC;
    constexpr bool Q_REGS = HD <= 128;
    constexpr uint32_t TILE_B = BC * LDB;
    extern __shared__ __align__(16) unsigned char smem[];
    const int seq = (int)blockIdx.z, h = (int)blockIdx.y;
    const int qt = (int)(gridDim.x - 1 - blockIdx.x); /* the longest (last) q tiles start first */
    const int s0 = a.seq_start[seq], n_new = a.seq_start[seq + 1] - s0;
    if (n_new < 2) return; /* a decode sequence (or none) */
    const int r0 = qt * PRE_BQ;
    if (r0 >= n_new) return;
    const int n_rows = min(PRE_BQ, n_new - r0), tok0 = s0 + r0;
    const int kvh = h / a.group, ctx = a.seq_len[seq];
    const int k_end = min(a.positions[tok0 + n_rows - 1] + 1, ctx);
    const int32_t *bt = a.block_tables + (int64_t)seq * a.max_blocks;
    const int warp = (int)(threadIdx.x >> 5), lane = (int)(threadIdx.x & 31u);
    const int g = lane >> 2, t = lane & 3;
    const uint32_t sq = smem_u32(smem), skv = sq + PRE_BQ * LDB;

    /* Rows past n_rows are padding: they see the last row's keys and are never stored. */
    const int ra = min(warp * 16 + g, n_rows - 1), rb = min(warp * 16 + g + 8, n_rows - 1);
    const int lim0 = min(a.positions[tok0 + ra] + 1, ctx),
              lim1 = min(a.positions[tok0 + rb] + 1, ctx);
    const bool warp_active = warp * 16 < n_rows;
    const int warp_lo = min(a.positions[tok0 + min(warp * 16, n_rows - 1)] + 1, ctx);
    const int warp_hi = min(a.positions[tok0 + min(warp * 16 + 15, n_rows - 1)] + 1, ctx);

    const uint32_t sids = skv + PRE_STAGES * 2 * TILE_B; /* (PRE_STAGES + 1, BC) int32 */
    const int32_t *ids = (const int32_t *)(smem + (sids - sq));
    constexpr int ID_SLOTS = PRE_STAGES + 1;
    const int n_tiles = (k_end + BC - 1) / BC;

    /* As in decode_kernel: ids ID_SLOTS tiles ahead, Q with the first K/V tile. */
#pragma unroll
    for (int t = 0; t < ID_SLOTS; t++)
        if (t < n_tiles)
            load_tile_ids<BC>(sids + t * BC * 4, bt, a.block_size, a.bs_shift, t * BC, k_end);
    cp_async_commit();
    const char *qbase = (const char *)a.q + ((int64_t)tok0 * a.n_heads + h) * HD * 2;
    const int64_t q_stride = (int64_t)a.n_heads * HD * 2;
    load_rows<HD, PRE_BQ>(
        sq, a.q, [=](int r) { return qbase + r * q_stride; }, [=](int r) { return r < n_rows; });
    cp_async_wait<0>(); /* the ids group; Q joins the first K/V group */
    __syncthreads();
    load_kv_tiles<HD, BC>(skv, skv + TILE_B, a.k_cache, a.v_cache, ids, kvh, a.n_kv, a.block_size,
                          a.bs_shift, 0, k_end);
    cp_async_commit();

    const uint32_t q_lane = sq + (uint32_t)((warp * 16 + (lane & 15)) * LDB + (lane >> 4) * 16);
    uint32_t qf[HD / 16][4];
    float o[HD / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < HD / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    for (int it = 0; it < n_tiles; it++) {
        cp_async_wait<0>();
        __syncthreads(); /* tile `it` is in; every warp is done with the other stage */
        if (Q_REGS && it == 0) load_q_frags<HD>(q_lane, qf);
        if (it + 1 < n_tiles) {
            const uint32_t kt = skv + (uint32_t)((it + 1) % PRE_STAGES) * 2 * TILE_B;
            load_kv_tiles<HD, BC>(kt, kt + TILE_B, a.k_cache, a.v_cache,
                                  ids + ((it + 1) % ID_SLOTS) * BC, kvh, a.n_kv, a.block_size,
                                  a.bs_shift, (it + 1) * BC, k_end);
        }
        if (it + ID_SLOTS < n_tiles)
            load_tile_ids<BC>(sids + (uint32_t)(it % ID_SLOTS) * BC * 4, bt, a.block_size,
                              a.bs_shift, (it + ID_SLOTS) * BC, k_end);
        cp_async_commit();
        const int key0 = it * BC;
        if (warp_active && key0 < warp_hi) {
            const uint32_t kt = skv + (uint32_t)(it % PRE_STAGES) * 2 * TILE_B;
            warp_attend<T, HD, BC, Q_REGS>(o, m, l, qf, q_lane, kt, kt + TILE_B, key0, lim0, lim1,
                                           key0 + BC > warp_lo, a.scale_log2);
        }
    }
    cp_async_wait<0>();

    quad_sum2(l);
    const float inv0 = 1.0f / l[0], inv1 = 1.0f / l[1];
    const int row_a = warp * 16 + g, row_b = row_a + 8;
    uint32_t *out0 = (uint32_t *)((T *)a.out + ((int64_t)(tok0 + row_a) * a.n_heads + h) * HD);
    uint32_t *out1 = (uint32_t *)((T *)a.out + ((int64_t)(tok0 + row_b) * a.n_heads + h) * HD);
#pragma unroll
    for (int n = 0; n < HD / 8; n++) {
        if (row_a < n_rows) out0[n * 4 + t] = mma_ops<T>::pack(o[n][0] * inv0, o[n][1] * inv0);
        if (row_b < n_rows) out1[n * 4 + t] = mma_ops<T>::pack(o[n][2] * inv1, o[n][3] * inv1);
    }
}

/* ---------------- launch ---------------- */

/* Decode split plan for n_seqs sequences of up to max_seq_len tokens. Shared by the launch and
 * kern_attention_workspace_bytes so the two always agree. */
struct split_plan {
    int n_splits, chunk;
};

static int row_tiles_of(const struct kern_attn_shape *s) {
    return (s->n_heads / s->n_kv_heads + DEC_ROWS - 1) / DEC_ROWS;
}

static struct split_plan plan_with(int max_seq_len, int64_t n_splits) {
    struct split_plan p;
    if (n_splits < 1) n_splits = 1;
    p.chunk = (int)(ceil_div64(ceil_div64(max_seq_len, n_splits), DEC_BC) * DEC_BC);
    p.n_splits = (int)ceil_div64(max_seq_len, p.chunk);
    return p;
}

static struct split_plan plan_splits(const struct kern_attn_shape *s, int n_seqs, int max_seq_len) {
    const int64_t units = (int64_t)n_seqs * s->n_kv_heads * row_tiles_of(s);
    const int64_t want = ceil_div64(SPLIT_TARGET_CTAS, units);
    const int64_t most = ceil_div64(max_seq_len, SPLIT_MIN_CHUNK);
    return plan_with(max_seq_len, want < most ? want : most);
}

static size_t split_ws_bytes(const struct kern_attn_shape *s, int n_seqs, int n_splits) {
    if (n_splits <= 1) return 0;
    const size_t n = (size_t)n_seqs * (size_t)s->n_heads * (size_t)n_splits;
    return n * (size_t)s->head_dim * sizeof(float) + n * sizeof(float2);
}

/* Raises a kernel's dynamic shared-memory limit to `smem` bytes and asks for the largest
 * shared-memory carveout (so that two CTAs of ~100 KB share an SM), once per (kernel, device)
 * and process: function attributes are process-wide CUDA state, and setting them on every launch
 * would cost host time in the decode loop. *done is the kernel's bitmask of devices already set;
 * a race only sets them twice. Devices 64 and up are set on every launch. */
static cudaError_t set_smem_attrs(const void *fn, int smem, int device, unsigned long long *done) {
    const unsigned long long bit = device >= 0 && device < 64 ? 1ull << device : 0;
    if (bit && (__atomic_load_n(done, __ATOMIC_ACQUIRE) & bit)) return cudaSuccess;
    cudaError_t e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(fn, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 cudaSharedmemCarveoutMaxShared);
    if (e == cudaSuccess && bit) __atomic_fetch_or(done, bit, __ATOMIC_RELEASE);
    return e;
}

template <typename T, int HD>
static enum tl_status attention_launch_hd(const struct kern_ctx *ctx, const struct attn_args *args,
                                          int n_seqs, int max_new, bool run_decode,
                                          bool run_prefill) {
    static unsigned long long dec_attrs_done, pre_attrs_done; /* per instantiation */
    enum tl_status st = TL_OK;
    const struct attn_args a = *args;
    cudaLaunchConfig_t red_cfg = cudaLaunchConfig_t();
    cudaLaunchAttribute red_attr[1] = {cudaLaunchAttribute()};
    const size_t dec_smem = decode_smem_bytes<HD>(), pre_smem = prefill_smem_bytes<HD>();
    const dim3 dec_grid((unsigned)a.n_splits, (unsigned)(a.n_kv * a.row_tiles), (unsigned)n_seqs);
    const dim3 red_grid((unsigned)a.n_heads, (unsigned)n_seqs);
    const dim3 pre_grid((unsigned)ceil_div64(max_new, PRE_BQ), (unsigned)a.n_heads,
                        (unsigned)n_seqs);

    if (dec_smem > ctx->smem_per_block_optin_bytes || pre_smem > ctx->smem_per_block_optin_bytes)
        KERN_FAIL(ctx->err, TL_ERR_UNSUPPORTED,
                  "kern_attention: head_dim %d needs %zu bytes of shared memory per block; "
                  "device %d allows %zu",
                  HD, dec_smem > pre_smem ? dec_smem : pre_smem, ctx->device,
                  ctx->smem_per_block_optin_bytes);
    KERN_CUDA(ctx->err, kern_enter(ctx));
    if (run_decode) {
        KERN_CUDA(ctx->err, set_smem_attrs((const void *)decode_kernel<T, HD>, (int)dec_smem,
                                           ctx->device, &dec_attrs_done));
        decode_kernel<T, HD><<<dec_grid, ATTN_THREADS, dec_smem, ctx->stream>>>(a);
        KERN_CUDA(ctx->err, cudaGetLastError());
        if (a.n_splits > 1) {
            red_cfg.gridDim = red_grid;
            red_cfg.blockDim = dim3(HD);
            red_cfg.stream = ctx->stream;
            red_attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
            red_attr[0].val.programmaticStreamSerializationAllowed = 1;
            red_cfg.attrs = red_attr;
            red_cfg.numAttrs = ctx->cc_major >= 9 ? 1 : 0; /* PDL is Hopper and newer */
            KERN_CUDA(ctx->err, cudaLaunchKernelEx(&red_cfg, decode_reduce_kernel<T, HD>, a));
        }
    }
    if (run_prefill) {
        KERN_CUDA(ctx->err, set_smem_attrs((const void *)prefill_kernel<T, HD>, (int)pre_smem,
                                           ctx->device, &pre_attrs_done));
        prefill_kernel<T, HD><<<pre_grid, ATTN_THREADS, pre_smem, ctx->stream>>>(a);
        KERN_CUDA(ctx->err, cudaGetLastError());
    }
cleanup:
    return st;
}

template <typename T>
static enum tl_status attention_launch(const struct kern_ctx *ctx, int hd,
                                       const struct attn_args *a, int n_seqs, int max_new,
                                       bool run_decode, bool run_prefill) {
    switch (hd) {
#define ATTN_HD_CASE(HD)                                                                           \
    case HD:                                                                                       \
        return attention_launch_hd<T, HD>(ctx, a, n_seqs, max_new, run_decode, run_prefill);
        ATTN_HD_CASE(32)
        ATTN_HD_CASE(64)
        ATTN_HD_CASE(96)
        ATTN_HD_CASE(128)
        ATTN_HD_CASE(160)
        ATTN_HD_CASE(192)
        ATTN_HD_CASE(224)
        ATTN_HD_CASE(256)
#undef ATTN_HD_CASE
    default:
        return tl_fail(ctx->err, TL_ERR_INTERNAL, "attention_launch: head_dim %d", hd);
    }
}

/* ---------------- checks and exported functions ---------------- */

static bool is_aligned(const void *p, size_t a) {
    return (uintptr_t)p % a == 0;
}

static enum tl_status check_args(const struct kern_ctx *ctx, const char *op,
                                 const struct kern_attn_shape *s, const struct kern_batch *b,
                                 enum tl_dtype act) {
    if (!s || !b) return tl_fail(ctx->err, TL_ERR_INVALID, "%s: shape or batch is NULL", op);
    if (act != TL_DTYPE_F16 && act != TL_DTYPE_BF16)
        return tl_fail(ctx->err, TL_ERR_UNSUPPORTED,
                       "%s: activation dtype %s; the attention kernels take F16 or BF16", op,
                       dtype_name(act));
    if (s->n_heads < 1 || s->n_kv_heads < 1 || s->n_heads % s->n_kv_heads != 0 ||
        s->n_heads > 65535)
        return tl_fail(ctx->err, TL_ERR_INVALID,
                       "%s: %d heads and %d kv heads; want 1..65535 heads, a multiple of the kv "
                       "heads",
                       op, s->n_heads, s->n_kv_heads);
    if (s->head_dim < 32 || s->head_dim > MAX_HEAD_DIM || s->head_dim % 32 != 0)
        return tl_fail(ctx->err, TL_ERR_UNSUPPORTED,
                       "%s: head_dim %d; the CUDA attention kernels take multiples of 32 up to %d",
                       op, s->head_dim, MAX_HEAD_DIM);
    if (s->block_size < 1)
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: block_size %d", op, s->block_size);
    if (ctx->cc_major < 8)
        return tl_fail(ctx->err, TL_ERR_UNSUPPORTED,
                       "%s: device %d has compute capability %d.%d; the attention kernels need "
                       "8.0 or newer (bf16 tensor cores, cp.async)",
                       op, ctx->device, ctx->cc_major, ctx->cc_minor);
    if (b->n_tokens < 0 || b->n_seqs < 0 || b->n_seqs > b->n_tokens || b->n_seqs > 65535)
        return tl_fail(ctx->err, TL_ERR_INVALID,
                       "%s: %d tokens in %d sequences; want 0 <= sequences <= min(tokens, 65535)",
                       op, b->n_tokens, b->n_seqs);
    if (b->n_tokens == 0) return TL_OK;
    if (b->n_seqs < 1 || b->max_new < 1 || b->max_new > b->n_tokens || b->max_seq_len < 1 ||
        b->max_seq_len < b->max_new)
        return tl_fail(ctx->err, TL_ERR_INVALID,
                       "%s: %d sequences, max_new %d, max_seq_len %d for %d tokens", op, b->n_seqs,
                       b->max_new, b->max_seq_len, b->n_tokens);
    if (b->max_blocks < ceil_div64(b->max_seq_len, s->block_size))
        return tl_fail(ctx->err, TL_ERR_INVALID,
                       "%s: block tables of %d entries cannot hold %d tokens in blocks of %d", op,
                       b->max_blocks, b->max_seq_len, s->block_size);
    if (!b->positions || !b->tok_seq || !b->seq_start || !b->seq_len || !b->block_tables)
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: a batch array is NULL", op);
    return TL_OK;
}

/* The cache and activations are read 16 bytes at a time. */
static enum tl_status check_ptr(const struct kern_ctx *ctx, const char *op, const void *p,
                                const char *what) {
    if (!p) return tl_fail(ctx->err, TL_ERR_INVALID, "%s: %s is NULL", op, what);
    if (!is_aligned(p, 16))
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: %s %p is not 16-byte aligned", op, what, p);
    return TL_OK;
}

enum tl_status kern_rope_kv_write(const struct kern_ctx *ctx, const struct kern_attn_shape *s,
                                  const struct kern_batch *b, enum tl_dtype act,
                                  const float *inv_freq, void *q, void *k, const void *v,
                                  void *k_cache, void *v_cache) {
    static const char op[] = "kern_rope_kv_write";
    enum tl_status st;
    if (!ctx) return TL_ERR_INVALID;
    if ((st = check_args(ctx, op, s, b, act)) != TL_OK) return st;
    if (b->n_tokens == 0) return TL_OK;
    if ((st = check_ptr(ctx, op, q, "q")) != TL_OK || (st = check_ptr(ctx, op, k, "k")) != TL_OK ||
        (st = check_ptr(ctx, op, v, "v")) != TL_OK ||
        (st = check_ptr(ctx, op, k_cache, "k_cache")) != TL_OK ||
        (st = check_ptr(ctx, op, v_cache, "v_cache")) != TL_OK)
        return st;
    if (!inv_freq || !is_aligned(inv_freq, sizeof(float)))
        return tl_fail(ctx->err, TL_ERR_INVALID, "%s: inv_freq %p is NULL or misaligned", op,
                       (const void *)inv_freq);
    if (act == TL_DTYPE_BF16)
        return rope_kv_launch<__nv_bfloat16>(ctx, s, b, inv_freq, q, k, v, k_cache, v_cache);
    return rope_kv_launch<__half>(ctx, s, b, inv_freq, q, k, v, k_cache, v_cache);
}

size_t kern_attention_workspace_bytes(const struct kern_attn_shape *s, int max_tokens,
                                      int max_seq_len) {
    if (!s || s->n_kv_heads < 1 || s->n_heads < s->n_kv_heads || s->head_dim < 1 ||
        max_tokens < 1 || max_seq_len < 1)
        return 0;
    /* The most any batch of up to max_tokens sequences asks for: splits only happen while
     * n_seqs * n_kv * row_tiles < SPLIT_TARGET_CTAS, so the loop is short. */
    size_t most = 0;
    const int n_max = max_tokens < SPLIT_TARGET_CTAS ? max_tokens : SPLIT_TARGET_CTAS;
    for (int n = 1; n <= n_max; n++) {
        const size_t need = split_ws_bytes(s, n, plan_splits(s, n, max_seq_len).n_splits);
        if (need > most) most = need;
    }
    return most;
}

enum tl_status kern_attention(const struct kern_ctx *ctx, const struct kern_attn_shape *s,
                              const struct kern_batch *b, enum tl_dtype act, const void *q,
                              const void *k_cache, const void *v_cache, void *out, void *workspace,
                              size_t workspace_bytes) {
    static const char op[] = "kern_attention";
    enum tl_status st;
    if (!ctx) return TL_ERR_INVALID;
    if ((st = check_args(ctx, op, s, b, act)) != TL_OK) return st;
    if (b->n_tokens == 0) return TL_OK;
    if ((st = check_ptr(ctx, op, q, "q")) != TL_OK ||
        (st = check_ptr(ctx, op, k_cache, "k_cache")) != TL_OK ||
        (st = check_ptr(ctx, op, v_cache, "v_cache")) != TL_OK ||
        (st = check_ptr(ctx, op, out, "out")) != TL_OK)
        return st;
    if (workspace_bytes > 0 && (st = check_ptr(ctx, op, workspace, "workspace")) != TL_OK)
        return st;

    /* Fewer splits when the workspace is smaller than the plan needs (none without one). */
    struct split_plan p = plan_splits(s, b->n_seqs, b->max_seq_len);
    while (p.n_splits > 1 && split_ws_bytes(s, b->n_seqs, p.n_splits) > workspace_bytes)
        p = plan_with(b->max_seq_len, p.n_splits - 1);

    struct attn_args a;
    a.q = q, a.k_cache = k_cache, a.v_cache = v_cache, a.out = out;
    a.positions = b->positions, a.seq_start = b->seq_start, a.seq_len = b->seq_len;
    a.block_tables = b->block_tables, a.max_blocks = b->max_blocks;
    a.n_heads = s->n_heads, a.n_kv = s->n_kv_heads, a.group = s->n_heads / s->n_kv_heads;
    a.block_size = s->block_size;
    a.bs_shift = -1;
    if ((s->block_size & (s->block_size - 1)) == 0)
        for (a.bs_shift = 0; (1 << a.bs_shift) < s->block_size;) a.bs_shift++;
    a.scale_log2 = (float)(1.4426950408889634 / sqrt((double)s->head_dim));
    a.n_splits = p.n_splits, a.chunk = p.chunk, a.row_tiles = row_tiles_of(s);
    a.ws_acc = (float *)workspace;
    a.ws_ml = p.n_splits > 1
                  ? (float2 *)((char *)workspace + (size_t)b->n_seqs * s->n_heads * p.n_splits *
                                                       s->head_dim * sizeof(float))
                  : NULL;

    /* Skip a kernel the host-side counts prove idle: max_new 1 means every sequence decodes;
     * n_tokens == n_seqs * max_new (> 1) means every sequence has max_new tokens. */
    const bool run_prefill = b->max_new > 1;
    const bool run_decode = !(run_prefill && (int64_t)b->n_seqs * b->max_new == b->n_tokens);
    if (act == TL_DTYPE_BF16)
        return attention_launch<__nv_bfloat16>(ctx, s->head_dim, &a, b->n_seqs, b->max_new,
                                               run_decode, run_prefill);
    return attention_launch<__half>(ctx, s->head_dim, &a, b->n_seqs, b->max_new, run_decode,
                                    run_prefill);
}
