/* kern_kvcrc: the CRC-32C of whole paged-KV block images where they lie in device memory, bit
 * for bit offload/crc32c.c's crc32c(0, image, image_bytes), so the KV tiers checksum a block
 * on the GPU (beside its copy out, after its copy in) and the host can still check it. A
 * block's image is n_pieces pieces of piece_bytes, as kern_kvcopy_blocks lays it out. Each
 * thread checksums 4 KiB with a slice-by-8 table in shared memory, and the pieces' CRCs are
 * joined by GF(2) shifts (crc32c_combine). The checksummer owns its scratch; one host thread
 * and one stream at a time. */
#ifndef TL_KERN_KVCRC_H
#define TL_KERN_KVCRC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "kern.h"
#include "status.h"

struct kern_kvcrc;

/* Scratch for images of n_pieces pieces of piece_bytes each. Free with kern_kvcrc_destroy. */
enum tl_status kern_kvcrc_create(const struct kern_ctx *ctx, size_t piece_bytes, int n_pieces,
                                 struct kern_kvcrc **out, struct tl_err *err);
/* NULL is fine. Waits for nothing: the caller has finished the streams using it. */
void kern_kvcrc_destroy(struct kern_kvcrc *c);

/* Queues on stream (a cudaStream_t; NULL: the context's) the CRC-32C of the image of each of
 * blocks[0..n): piece p of block b at dev + p * piece_stride + b * piece_bytes. out: n words
 * the device can write (device memory or mapped pinned host memory), filled when the stream
 * gets there. Does not block. Calls must follow each other on one stream (shared scratch). */
enum tl_status kern_kvcrc_queue(struct kern_kvcrc *c, void *stream, const char *dev,
                                size_t piece_stride, const int32_t *blocks, int n, uint32_t *out);

/* kern_kvcrc_queue on the context's stream into crc (n words of host memory); blocks until
 * done. For tests and benchmarks. */
enum tl_status kern_kvcrc_blocks(struct kern_kvcrc *c, const char *dev, size_t piece_stride,
                                 const int32_t *blocks, int n, uint32_t *crc);

#ifdef __cplusplus
}
#endif

#endif
