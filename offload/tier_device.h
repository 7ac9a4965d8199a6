/* tier_device: the backends' KV caches as a tier (tier.h): slots are KV block ids (the KV block
 * manager hands them out), a load copies a block out to host memory and a store copies it in,
 * through each backend's kv_copy (CUDA: batched, on a stream of its own, ordered against the
 * forward by events). In a split placement two backends hold the KV of different layers under
 * the same block ids; a block's image is then the first backend's part followed by the
 * second's, and a transfer is done when both parts are. Where every backend checksums blocks in
 * place (ops.kv_copy_crc) the tier can report each image's CRC-32C (tier.crc), the parts' joined
 * by crc32c_combine. Used by the engine loop's thread. */
#ifndef TL_TIER_DEVICE_H
#define TL_TIER_DEVICE_H

#include "ops.h"
#include "status.h"
#include "tier.h"

#define TIER_DEVICE_MAX_BACKENDS 2

/* Fills *out over n_ops backends (1 or 2; those holding no KV are skipped); at most
 * max_in_flight transfers may be in flight (each uses a host slot, so the host tier's slot
 * count bounds it). crc: checksum on the device where every backend can (out->crc says whether
 * it does). TL_ERR_UNSUPPORTED when a backend holding KV cannot copy blocks. The ops are
 * borrowed. */
enum tl_status tier_device_create(const struct ops *const *ops, int n_ops, int max_in_flight,
                                  bool crc, struct tier *out, struct tl_err *err);

#endif
