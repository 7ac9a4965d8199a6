/* tier_device: the backend's KV cache as a tier (tier.h): slots are KV block ids (the KV block
 * manager hands them out), a load copies a block out to host memory and a store copies it in,
 * through the backend's kv_copy (CUDA: batched, on a stream of its own, ordered against the
 * forward by events). Used by the engine loop's thread only. */
#ifndef TL_TIER_DEVICE_H
#define TL_TIER_DEVICE_H

#include "ops.h"
#include "status.h"
#include "tier.h"

/* Fills *out; at most max_in_flight transfers may be in flight (each uses a host slot, so the
 * host tier's slot count bounds it). TL_ERR_UNSUPPORTED when the backend cannot copy KV
 * blocks. ops is borrowed. */
enum tl_status tier_device_create(const struct ops *ops, int max_in_flight, struct tier *out,
                                  struct tl_err *err);

#endif
