/* test_dtype: fp16 / bf16 conversions against the compiler's own _Float16 and exact bf16 bit
 * patterns, on every fp16 value and on random fp32 values. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "dtype.h"

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_f16_all_values(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        _Float16 ref;
        uint16_t hh = (uint16_t)h;
        memcpy(&ref, &hh, 2);
        float want = (float)ref, got = f16_to_f32(hh);
        if (isnan(want)) {
            assert_true(isnan(got));
            continue;
        }
        assert_int_equal(bits(got), bits(want));
        assert_int_equal(f32_to_f16(got), hh); /* round trip exact */
    }
}

static void test_f16_rounding(void **state) {
    (void)state;
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 2000000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        /* exponents spanning subnormal fp16 to overflow */
        float f = from_bits((uint32_t)(x & 0x807fffffu) | ((uint32_t)(96 + (x >> 40) % 50) << 23));
        _Float16 ref = (_Float16)f;
        uint16_t want;
        memcpy(&want, &ref, 2);
        if (f32_to_f16(f) != want)
            fail_msg("f32_to_f16(%a) = %04x, want %04x", (double)f, f32_to_f16(f), want);
    }
}

static void test_bf16(void **state) {
    (void)state;
    assert_int_equal(f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(f32_to_bf16(from_bits(0x3f808000u)), 0x3f80); /* tie to even (down) */
    assert_int_equal(f32_to_bf16(from_bits(0x3f818000u)), 0x3f82); /* tie to even (up) */
    assert_int_equal(f32_to_bf16(from_bits(0x3f808001u)), 0x3f81);
    assert_true(isnan(bf16_to_f32(f32_to_bf16(NAN))));
    assert_true(isinf(bf16_to_f32(f32_to_bf16(INFINITY))));
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bf16_to_f32((uint16_t)h);
        if (!isnan(f)) assert_int_equal(f32_to_bf16(f), h);
    }
}

static void test_names(void **state) {
    (void)state;
    enum tl_dtype t;
    assert_true(dtype_parse_safetensors("BF16", &t) && t == TL_DTYPE_BF16);
    assert_true(dtype_parse_safetensors("F8_E4M3", &t) && dtype_size(t) == 1);
    assert_false(dtype_parse_safetensors("bf16", &t));
    assert_true(dtype_parse_torch("torch.float16", &t) && t == TL_DTYPE_F16);
    assert_true(dtype_parse_torch("bfloat16", &t) && t == TL_DTYPE_BF16);
    assert_false(dtype_parse_torch("int8", &t));
    assert_string_equal(dtype_torch_name(TL_DTYPE_BF16), "bfloat16");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_all_values),
        cmocka_unit_test(test_f16_rounding),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
