/* tier_nvme: the NVMe tier (tier.h), a swap file of fixed-size slots read and written with
 * io_uring: O_DIRECT with the alignment statx reports, registered host buffers, batched
 * submissions. The file is created without a name (O_TMPFILE; else created and unlinked at
 * once) so a crash leaves nothing behind, and preallocated with fallocate so a full disk shows
 * at start-up. What is read back is checked by the caller (CRC32C): the tier only moves bytes.
 * Used by one thread. */
#ifndef TL_TIER_NVME_H
#define TL_TIER_NVME_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

#include "status.h"
#include "tier.h"

struct tier_nvme_opts {
    const char *dir;    /* where the file goes (--nvme-swap-dir) */
    size_t bytes;       /* file size (--nvme-swap-gb); slots = bytes / io_bytes */
    size_t block_bytes; /* a block image; io_bytes rounds it up to the direct-I/O alignment */
    int queue_depth;    /* io_uring entries; 0 = 128 */
    int max_in_flight;  /* most transfers queued at once (each uses a host slot: their count) */
};

/* How the tier runs, for logs and tests. */
struct tier_nvme_info {
    bool direct;         /* O_DIRECT; false: the file system refused it, buffered I/O */
    bool fixed_buffers;  /* host buffers registered with io_uring */
    bool preallocated;   /* fallocate reserved the whole file */
    bool unnamed;        /* O_TMPFILE; false: created with a name and unlinked at once */
    size_t mem_align;    /* host buffer alignment direct I/O needs */
    size_t offset_align; /* file offset / length alignment */
    char note[256];      /* why direct I/O, preallocation or registration is off ("" if all on) */
};

/* Opens the swap file in o->dir and the ring. Host buffers must be aligned to info->mem_align;
 * register them with tier_nvme_register before the first submit. Fails with a message naming
 * the flag to change (no such directory, not enough free space for --nvme-swap-gb, ...). */
enum tl_status tier_nvme_create(const struct tier_nvme_opts *o, struct tier *out,
                                struct tier_nvme_info *info, struct tl_err *err);

/* Registers the host memory every transfer will use (fixed buffers, at most 1 GiB each; the
 * caller splits a larger region on slot boundaries). When the kernel refuses (RLIMIT_MEMLOCK),
 * transfers use plain reads and writes and info->fixed_buffers says so. Never fails. */
void tier_nvme_register(struct tier *t, const struct iovec *bufs, int n_bufs,
                        struct tier_nvme_info *info);

#endif
