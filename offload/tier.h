/* tier: a storage tier is a small table of functions. Host RAM is the hub of the KV tiers: a
 * tier stores block images from host memory into its slots and loads them back, asynchronously,
 * and reports each transfer's end through reap. Two tiers implement it: the device tier
 * (tier_device.c; its slots are the backend's KV block ids) and the NVMe tier (tier_nvme.c; a
 * swap file through io_uring). The pinned host memory itself is hostmem.h. A tier is used by
 * one thread (the engine loop); what it moves is decided elsewhere (kvswap.c). */
#ifndef TL_TIER_H
#define TL_TIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tier_dir {
    TIER_LOAD = 0, /* tier slot -> host memory (device: copy out; NVMe: read) */
    TIER_STORE,    /* host memory -> tier slot (device: copy in; NVMe: write) */
};

/* One transfer of a whole block image (io_bytes). */
struct tier_io {
    uint64_t tag; /* the caller's, handed back by reap */
    int32_t slot;
    enum tier_dir dir;
    void *host; /* io_bytes of host memory (hostmem); untouched/unread until reaped */
};

struct tier_done {
    uint64_t tag;
    int64_t res;  /* bytes moved (io_bytes when whole) or -errno */
    uint32_t crc; /* with tier.crc, when whole: crc32c(0, image) of the block as the tier held it
                   * (a load: what it sent; a store: what landed) */
};

struct tier {
    const char *name;
    void *ctx;       /* owned; freed by destroy */
    int32_t n_slots; /* slots the tier holds (0 for the device tier: the KV cache owns them) */
    size_t io_bytes; /* bytes one transfer moves: the block image, padded to the tier's alignment */
    bool crc;        /* the tier checksums each block image where it holds it (tier_done.crc) */
    /* Queues n transfers and returns at once. Never fails as a call: a transfer that cannot
     * start completes through reap with a negative res. */
    void (*submit)(void *ctx, const struct tier_io *io, int n);
    /* Moves up to max finished transfers into done and returns how many. Blocks until at least
     * min have finished (min is clamped to what is in flight; 0 never blocks). */
    int (*reap)(void *ctx, struct tier_done *done, int max, int min);
    /* Transfers queued and not yet reaped. */
    int (*in_flight)(void *ctx);
    /* Waits for what is in flight, then frees ctx. */
    void (*destroy)(void *ctx);
};

#endif
