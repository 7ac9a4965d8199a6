/* crc32c: CRC-32C (Castagnoli), the checksum every KV block carries in the host and NVMe tiers.
 * Written here because no Debian library offers a fast CRC-32C (zlib's crc32 is the other
 * polynomial; libiscsi/ceph keep theirs private): the SSE4.2 crc32 instruction on three
 * interleaved streams where the CPU has it, slice-by-8 tables elsewhere. Pure functions,
 * thread-safe, never block. */
#ifndef TL_CRC32C_H
#define TL_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C of buf[0..len) continuing from crc (0 to start): crc32c(crc32c(0, a), b) equals the
 * CRC of a followed by b. crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* The CRC-32C of a followed by b, given crc_a = crc32c(0, a), crc_b = crc32c(0, b) and b's
 * length (zlib's crc32_combine for this polynomial): how checksums of pieces computed apart
 * (device threads, two backends' parts of a block) become the checksum of the whole. */
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

/* The portable table implementation (the reference the fast path is tested against). */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* "sse4.2" or "slice-by-8": which implementation crc32c uses on this CPU. */
const char *crc32c_impl(void);

#endif
