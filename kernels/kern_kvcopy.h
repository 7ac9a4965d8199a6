/* kern_kvcopy: whole paged-KV blocks between device memory and page-locked host memory, for the
 * KV tiers. Copies run on a stream of their own (the copy engines work while the compute
 * stream runs the forward) and are ordered against the context's stream by events: a batch
 * waits for the work queued there before it, and after a copy out the context's stream waits
 * for the copy, so blocks copied out may be overwritten by the next forward at once. Each batch
 * gets a ticket; kern_kvcopy_done reports the highest finished one. A batch may also checksum
 * its blocks in device memory (kern_kvcrc, on a third stream): a copy out's beside the copy
 * (the context's stream waits for both), a copy in's group by group behind it; the CRCs land in
 * a pinned ring the device writes and are handed to the caller when the ticket is seen done
 * (copies and checksums finished). One host thread at a time. */
#ifndef TL_KERN_KVCOPY_H
#define TL_KERN_KVCOPY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "kern.h"
#include "status.h"

struct kern_kvcopier;

/* Creates the copy stream and its events on ctx's device. Free with kern_kvcopy_destroy. */
enum tl_status kern_kvcopy_create(const struct kern_ctx *ctx, struct kern_kvcopier **out,
                                  struct tl_err *err);
/* Waits for the copies in flight, frees. NULL is fine. */
void kern_kvcopy_destroy(struct kern_kvcopier *c);

/* Lets batches checksum images of n_pieces pieces of piece_bytes (the geometry every later
 * batch with crc passes): creates the checksum stream, scratch and result ring. */
enum tl_status kern_kvcopy_enable_crc(struct kern_kvcopier *c, size_t piece_bytes, int n_pieces,
                                      struct tl_err *err);

/* Queues copies of n blocks. A block's image is n_pieces pieces of piece_bytes: piece p of
 * block b is at dev + p * piece_stride + b * piece_bytes on the device and at
 * host[i] + p * piece_bytes on the host (one 2D copy per block). dir 0: device -> host, 1:
 * host -> device. Host memory must be page-locked (kern_host_register) and stay valid until
 * the ticket is done. crc (NULL: no checksums; needs kern_kvcopy_enable_crc): *crc[i] gets the
 * CRC-32C of block i's image as the device holds it (dir 0: what is copied out, dir 1: what
 * landed) by the time kern_kvcopy_done reports the ticket; any host memory, kept valid until
 * then. A batch too large for the result ring becomes several; *ticket is the last. Does not
 * block (but for a full ring). Errors go to the context's last error. */
enum tl_status kern_kvcopy_blocks(struct kern_kvcopier *c, int dir, char *dev, size_t piece_bytes,
                                  size_t piece_stride, int n_pieces, const int32_t *blocks,
                                  void *const *host, uint32_t *const *crc, int n, uint64_t *ticket);

/* *done = the highest ticket finished (with every earlier one), its checksums delivered. wait >
 * 0: blocks until that ticket is. A failed copy (reported by the device) is an error here. */
enum tl_status kern_kvcopy_done(struct kern_kvcopier *c, uint64_t wait, uint64_t *done);

/* Page-locks [p, p + bytes) for asynchronous copies (cudaHostRegister); undo with
 * kern_host_unregister. Blocks while the pages are pinned. */
enum tl_status kern_host_register(const struct kern_ctx *ctx, void *p, size_t bytes);
void kern_host_unregister(const struct kern_ctx *ctx, void *p);

/* The device's PCI bus id, "0000:3b:00.0", into buf. */
enum tl_status kern_pci_bus_id(const struct kern_ctx *ctx, char *buf, int len);

#ifdef __cplusplus
}
#endif

#endif
