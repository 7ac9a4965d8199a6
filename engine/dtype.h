/* dtype: element types of tensors in files and in memory, their sizes and names, and the
 * scalar conversions between bf16 / fp16 and fp32 (round to nearest even). */
#ifndef TL_DTYPE_H
#define TL_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Every dtype safetensors can declare; the engine computes with F32, F16 and BF16. */
enum tl_dtype {
    TL_DTYPE_F32 = 0,
    TL_DTYPE_F16,
    TL_DTYPE_BF16,
    TL_DTYPE_F64,
    TL_DTYPE_I64,
    TL_DTYPE_I32,
    TL_DTYPE_I16,
    TL_DTYPE_I8,
    TL_DTYPE_U64,
    TL_DTYPE_U32,
    TL_DTYPE_U16,
    TL_DTYPE_U8,
    TL_DTYPE_BOOL,
    TL_DTYPE_F8_E4M3,
    TL_DTYPE_F8_E5M2,
    TL_DTYPE_COUNT
};

/* Bytes per element. */
size_t dtype_size(enum tl_dtype t);
/* The safetensors spelling ("BF16", "F32", ...). */
const char *dtype_name(enum tl_dtype t);
/* The torch spelling used in config.json ("bfloat16"), or dtype_name for others. */
const char *dtype_torch_name(enum tl_dtype t);
/* Parses a safetensors dtype string; false if unknown. */
bool dtype_parse_safetensors(const char *s, enum tl_dtype *out);
/* Parses a torch dtype ("bfloat16", "float16", "float32", "half", "float", "bf16", "fp16",
 * "fp32"); false if unknown or not one of the three compute dtypes. */
bool dtype_parse_torch(const char *s, enum tl_dtype *out);
/* True for the three dtypes weights may have: F32, F16, BF16. */
bool dtype_is_float_compute(enum tl_dtype t);

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

/* Converts n elements of a compute dtype (F32/F16/BF16) to / from fp32. */
void dtype_to_f32(enum tl_dtype t, const void *src, float *dst, size_t n);
void dtype_from_f32(enum tl_dtype t, const float *src, void *dst, size_t n);

#endif
