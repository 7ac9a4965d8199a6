/* sampler_exp: a token's sampling weight, exp(d) for d = logit - max logit <= 0, in single
 * precision IEEE operations only (no library exp, no fused multiply-add), so that the CPU
 * sampler (engine/sampler.c) and the GPU sampler (kernels/kern_sample.cu) compute bit-identical
 * weights and so draw the same token from the same uniform. Header-only: C includes it as
 * static inline functions, CUDA as __host__ __device__ ones; the GPU side keeps the table in
 * shared memory. Whoever includes it must not contract a * b + c into a fused multiply-add
 * (C: -ffp-contract=off; CUDA: the __f*_rn intrinsics below are never fused).
 *
 * exp(d) = 2^(n/32) * exp(r), n = round(d * 32 / ln 2), r = d - n ln2/32 (|r| <= ln2/64, two-part
 * ln2/32 so n * C1 is exact), exp(r) by its cubic Taylor polynomial (error < 6e-10), 2^(n mod 32
 * / 32) from a 32-entry table, 2^(n div 32) by adding to the exponent bits. Checked over every
 * float d in [-86, 0]: at most 1.84 ulp from exp(d), 96% correctly rounded, 1 exactly at d = 0.
 * Weights are 0 below d = -86 (exp(-86) = 4.5e-38: such a token is never drawn) so a weight is
 * 0 or a normal float; -inf and NaN give 0. Not monotone to the last ulp (6 steps of one ulp
 * go the wrong way): nothing may assume it is. */
#ifndef TL_SAMPLER_EXP_H
#define TL_SAMPLER_EXP_H

#include <stdint.h>
#include <string.h>

/* Below this d the weight is 0. */
#define SAMPLER_EXP_MIN_D (-86.0f)

/* 2^(j/32), j = 0..31, each rounded to the nearest float. */
#define SAMPLER_EXP_TABLE                                                                          \
    {                                                                                              \
        0x1.000000p+0f, 0x1.059b0ep+0f, 0x1.0b5586p+0f, 0x1.11301ep+0f, 0x1.172b84p+0f,            \
            0x1.1d4874p+0f, 0x1.2387a6p+0f, 0x1.29e9e0p+0f, 0x1.306fe0p+0f, 0x1.371a74p+0f,        \
            0x1.3dea64p+0f, 0x1.44e086p+0f, 0x1.4bfdaep+0f, 0x1.5342b6p+0f, 0x1.5ab07ep+0f,        \
            0x1.6247ecp+0f, 0x1.6a09e6p+0f, 0x1.71f75ep+0f, 0x1.7a1148p+0f, 0x1.82589ap+0f,        \
            0x1.8ace54p+0f, 0x1.93737cp+0f, 0x1.9c4918p+0f, 0x1.a5503cp+0f, 0x1.ae89fap+0f,        \
            0x1.b7f770p+0f, 0x1.c199bep+0f, 0x1.cb720ep+0f, 0x1.d5818ep+0f, 0x1.dfc974p+0f,        \
            0x1.ea4afap+0f, 0x1.f50766p+0f                                                         \
    }

#ifdef __CUDACC__
#define SAMPLER_EXP_FN static __host__ __device__ __forceinline__
#else
#define SAMPLER_EXP_FN static inline
#endif

/* One rounding per operation, never fused, on both sides. */
#ifdef __CUDA_ARCH__
#define SAMPLER_FMUL(a, b) __fmul_rn((a), (b))
#define SAMPLER_FADD(a, b) __fadd_rn((a), (b))
#define SAMPLER_FSUB(a, b) __fsub_rn((a), (b))
#else
#define SAMPLER_FMUL(a, b) ((a) * (b))
#define SAMPLER_FADD(a, b) ((a) + (b))
#define SAMPLER_FSUB(a, b) ((a) - (b))
#endif

SAMPLER_EXP_FN uint32_t sampler_f32_bits(float f) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
#endif
}

SAMPLER_EXP_FN float sampler_f32_from_bits(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

/* The weight of a token whose logit is d below the max; tab is SAMPLER_EXP_TABLE. */
SAMPLER_EXP_FN float sampler_weight_tab(float d, const float *tab) {
    if (!(d >= SAMPLER_EXP_MIN_D)) return 0.0f; /* -inf, NaN, negligible */
    /* Adding 1.5 * 2^23 rounds d * 32/ln2 to an integer n (to nearest, ties to even), which
     * then sits in the low mantissa bits: |n| <= 3970 here. */
    const float shifted = SAMPLER_FADD(SAMPLER_FMUL(d, 0x1.715476p+5f), 0x1.8p23f);
    const int32_t n = (int32_t)sampler_f32_bits(shifted) - 0x4b400000;
    const float nf = SAMPLER_FSUB(shifted, 0x1.8p23f);
    /* ln2/32 = C1 + C2, C1 with 12 significant bits: n * C1 and d - n * C1 are exact. */
    const float r = SAMPLER_FSUB(SAMPLER_FSUB(d, SAMPLER_FMUL(nf, 0x1.62ep-6f)),
                                 SAMPLER_FMUL(nf, 0x1.0bfbe8p-20f));
    /* exp(r) = ((r/6 + 1/2) r + 1) r + 1 */
    const float p = SAMPLER_FADD(
        SAMPLER_FMUL(
            SAMPLER_FADD(SAMPLER_FMUL(SAMPLER_FADD(SAMPLER_FMUL(r, 0x1.555556p-3f), 0.5f), r),
                         1.0f),
            r),
        1.0f);
    const float m = SAMPLER_FMUL(p, tab[n & 31]); /* in [0.98, 2) */
    /* times 2^floor(n / 32), in [-125, 0]: the result stays a normal float */
    const int32_t e = ((n + 4096) >> 5) - 128;
    return sampler_f32_from_bits(sampler_f32_bits(m) + ((uint32_t)e << 23));
}

/* Weights ordered as their bits: key 0 is weight 1, larger keys are lighter tokens. Defined
 * for weights in (0, 1]; both samplers bucket and rank by it. */
SAMPLER_EXP_FN uint32_t sampler_weight_key(float w) {
    return 0x3f800000u - sampler_f32_bits(w);
}

SAMPLER_EXP_FN float sampler_key_weight(uint32_t key) {
    return sampler_f32_from_bits(0x3f800000u - key);
}

#endif
