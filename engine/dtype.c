/* dtype: tables of sizes and names, and fp16 conversion (bf16 is inline in the header). */
#include "dtype.h"

#include <strings.h>

static const struct {
    const char *st, *torch;
    size_t size;
} dtype_info[TL_DTYPE_COUNT] = {
    [TL_DTYPE_F32] = {"F32", "float32", 4},
    [TL_DTYPE_F16] = {"F16", "float16", 2},
    [TL_DTYPE_BF16] = {"BF16", "bfloat16", 2},
    [TL_DTYPE_F64] = {"F64", "float64", 8},
    [TL_DTYPE_I64] = {"I64", "int64", 8},
    [TL_DTYPE_I32] = {"I32", "int32", 4},
    [TL_DTYPE_I16] = {"I16", "int16", 2},
    [TL_DTYPE_I8] = {"I8", "int8", 1},
    [TL_DTYPE_U64] = {"U64", "uint64", 8},
    [TL_DTYPE_U32] = {"U32", "uint32", 4},
    [TL_DTYPE_U16] = {"U16", "uint16", 2},
    [TL_DTYPE_U8] = {"U8", "uint8", 1},
    [TL_DTYPE_BOOL] = {"BOOL", "bool", 1},
    [TL_DTYPE_F8_E4M3] = {"F8_E4M3", "float8_e4m3fn", 1},
    [TL_DTYPE_F8_E5M2] = {"F8_E5M2", "float8_e5m2", 1},
};

size_t dtype_size(enum tl_dtype t) {
    return (unsigned)t < TL_DTYPE_COUNT ? dtype_info[t].size : 0;
}

const char *dtype_name(enum tl_dtype t) {
    return (unsigned)t < TL_DTYPE_COUNT ? dtype_info[t].st : "?";
}

const char *dtype_torch_name(enum tl_dtype t) {
    return (unsigned)t < TL_DTYPE_COUNT ? dtype_info[t].torch : "?";
}

bool dtype_parse_safetensors(const char *s, enum tl_dtype *out) {
    for (int i = 0; i < TL_DTYPE_COUNT; i++) {
        if (strcmp(s, dtype_info[i].st) == 0) {
            *out = (enum tl_dtype)i;
            return true;
        }
    }
    return false;
}

bool dtype_parse_torch(const char *s, enum tl_dtype *out) {
    static const struct {
        const char *name;
        enum tl_dtype t;
    } names[] = {{"bfloat16", TL_DTYPE_BF16}, {"bf16", TL_DTYPE_BF16}, {"float16", TL_DTYPE_F16},
                 {"half", TL_DTYPE_F16},      {"fp16", TL_DTYPE_F16},  {"float32", TL_DTYPE_F32},
                 {"float", TL_DTYPE_F32},     {"fp32", TL_DTYPE_F32}};
    if (strncmp(s, "torch.", 6) == 0) s += 6;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].t;
            return true;
        }
    }
    return false;
}

bool dtype_is_float_compute(enum tl_dtype t) {
    return t == TL_DTYPE_F32 || t == TL_DTYPE_F16 || t == TL_DTYPE_BF16;
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00;  /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00; /* overflow (after rounding) -> inf */
    if (a < 0x38800000u) {                      /* result is subnormal or zero */
        if (a < 0x33000000u) return sign;       /* below half the smallest subnormal */
        uint32_t man = (a & 0x7fffff) | 0x800000;
        int shift = 126 - (int)(a >> 23); /* 14..24 */
        uint32_t half = 1u << (shift - 1), rest = man & ((1u << shift) - 1);
        uint32_t r = man >> shift;
        if (rest > half || (rest == half && (r & 1))) r++;
        return sign | (uint16_t)r;
    }
    uint32_t r = a - 0x38000000u; /* rebias exponent 127 -> 15 */
    r += 0xfffu + ((r >> 13) & 1u);
    return sign | (uint16_t)(r >> 13);
}

void dtype_to_f32(enum tl_dtype t, const void *src, float *dst, size_t n) {
    if (t == TL_DTYPE_F32) {
        memcpy(dst, src, n * 4);
    } else if (t == TL_DTYPE_BF16) {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(s[i]);
    } else if (t == TL_DTYPE_F16) {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(s[i]);
    }
}

void dtype_from_f32(enum tl_dtype t, const float *src, void *dst, size_t n) {
    if (t == TL_DTYPE_F32) {
        memcpy(dst, src, n * 4);
    } else if (t == TL_DTYPE_BF16) {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = f32_to_bf16(src[i]);
    } else if (t == TL_DTYPE_F16) {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = f32_to_f16(src[i]);
    }
}
