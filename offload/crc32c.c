/* crc32c: slice-by-8 tables (portable) and the SSE4.2 path, which runs three independent crc32
 * streams over consecutive segments (the instruction has a latency of 3 and a throughput of 1
 * per cycle) and joins them by "appending zeros" operators over GF(2), built once. */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define POLY 0x82f63b78u /* reflected Castagnoli polynomial */

static uint32_t table[8][256]; /* slice-by-8 */
#define SEG_LONG  8192u        /* bytes per stream in the long loop */
#define SEG_SHORT 256u         /* ... and in the short loop */
static uint32_t zeros_long[4][256], zeros_short[4][256];
static uint32_t x2n[64]; /* x^(2^k) mod P, reflected: the combine's powers */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int have_hw;

/* ---- GF(2) operators: op[n] is the image of bit n of a CRC register ---- */

static uint32_t op_apply(const uint32_t op[32], uint32_t v) {
    uint32_t s = 0;
    for (int n = 0; v; n++, v >>= 1)
        if (v & 1) s ^= op[n];
    return s;
}

/* The operator that feeds 2^log2_bits zero bits through the register. */
static void op_zero_bits(uint32_t op[32], int log2_bits) {
    uint32_t a[32], b[32];
    a[0] = POLY; /* one zero bit: shift right, fold the polynomial in when bit 0 was set */
    for (int n = 1; n < 32; n++) a[n] = 1u << (n - 1);
    for (int k = 0; k < log2_bits; k++) { /* squaring doubles the number of zero bits */
        for (int n = 0; n < 32; n++) b[n] = op_apply(a, a[n]);
        memcpy(a, b, sizeof a);
    }
    memcpy(op, a, sizeof a);
}

/* Byte-wise tables of an operator, so applying it costs four lookups. */
static void op_tables(uint32_t t[4][256], int log2_bits) {
    uint32_t op[32];
    op_zero_bits(op, log2_bits);
    for (uint32_t n = 0; n < 256; n++)
        for (int k = 0; k < 4; k++) t[k][n] = op_apply(op, n << (8 * k));
}

static uint32_t shift(const uint32_t t[4][256], uint32_t crc) {
    return t[0][crc & 0xff] ^ t[1][(crc >> 8) & 0xff] ^ t[2][(crc >> 16) & 0xff] ^ t[3][crc >> 24];
}

/* a * b mod P, both reflected (x^0 is the top bit); a != 0 */
static uint32_t mult_mod(uint32_t a, uint32_t b) {
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

static void init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int k = 1; k < 8; k++)
            table[k][n] = (table[k - 1][n] >> 8) ^ table[0][table[k - 1][n] & 0xff];
    op_tables(zeros_long, 16);  /* 8192 bytes = 2^16 bits */
    op_tables(zeros_short, 11); /* 256 bytes = 2^11 bits */
    x2n[0] = 1u << 30;          /* x^1 */
    for (int k = 1; k < 64; k++) x2n[k] = mult_mod(x2n[k - 1], x2n[k - 1]);
#if defined(__x86_64__)
    __builtin_cpu_init();
    have_hw = __builtin_cpu_supports("sse4.2");
#endif
}

/* ---- portable ---- */

static uint32_t sw_raw(uint32_t c, const unsigned char *p, size_t n) {
    while (n && ((uintptr_t)p & 7)) {
        c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c; /* little-endian: the register meets the first four bytes */
        c = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
            table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^ table[2][(w >> 40) & 0xff] ^
            table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
    return c;
}

uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len) {
    pthread_once(&once, init);
    return ~sw_raw(~crc, buf, len);
}

/* ---- SSE4.2 ---- */

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t hw_streams(uint32_t c0, const unsigned char **pp,
                                                             size_t *np, size_t seg,
                                                             const uint32_t z[4][256]) {
    const unsigned char *p = *pp;
    size_t n = *np;
    while (n >= 3 * seg) {
        uint64_t a = c0, b = 0, c = 0;
        const unsigned char *end = p + seg;
        do {
            uint64_t x, y, w;
            memcpy(&x, p, 8);
            memcpy(&y, p + seg, 8);
            memcpy(&w, p + 2 * seg, 8);
            a = _mm_crc32_u64(a, x);
            b = _mm_crc32_u64(b, y);
            c = _mm_crc32_u64(c, w);
            p += 8;
        } while (p < end);
        /* crc(A B C) = shift(shift(crc(A)) ^ crc(B)) ^ crc(C) when B and C start from zero */
        c0 = shift(z, (uint32_t)a) ^ (uint32_t)b;
        c0 = shift(z, c0) ^ (uint32_t)c;
        p += 2 * seg;
        n -= 3 * seg;
    }
    *pp = p;
    *np = n;
    return c0;
}

__attribute__((target("sse4.2"))) static uint32_t hw_raw(uint32_t c, const unsigned char *p,
                                                         size_t n) {
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8(c, *p++);
        n--;
    }
    c = hw_streams(c, &p, &n, SEG_LONG, zeros_long);
    c = hw_streams(c, &p, &n, SEG_SHORT, zeros_short);
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = _mm_crc32_u64(c64, w);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--) c = _mm_crc32_u8(c, *p++);
    return c;
}
#endif

uint32_t crc32c(uint32_t crc, const void *buf, size_t len) {
    pthread_once(&once, init);
#if defined(__x86_64__)
    if (have_hw) return ~hw_raw(~crc, buf, len);
#endif
    return ~sw_raw(~crc, buf, len);
}

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
    pthread_once(&once, init);
    /* crc(a b) = crc(a) * x^(8 len_b) + crc(b) mod P: the pre- and post-inversions cancel */
    uint32_t p = 1u << 31; /* x^0 */
    for (int k = 3; len_b && k < 64; k++, len_b >>= 1)
        if (len_b & 1) p = mult_mod(x2n[k], p);
    return mult_mod(p, crc_a) ^ crc_b;
}

const char *crc32c_impl(void) {
    pthread_once(&once, init);
    return have_hw ? "sse4.2" : "slice-by-8";
}
