/* kvswap: the KV tiers' mechanism. A preempted sequence's KV blocks are copied out of the
 * device into pinned host memory (the host tier), checksummed (CRC32C: on the device beside the
 * copy where the backend can, else on host threads), spilled to the NVMe
 * tier when host memory runs short (the sequences needed last go first), read back ahead of
 * need (the sequences needed first come first), and copied into fresh device blocks, checked
 * again (on the device, what landed; else the host image, beside the copy). Anything that fails on
 * the way (a CRC mismatch, a failed or short read or write, a full disk, a failed copy) fails that
 * sequence alone: its state says so and the caller recomputes it from its tokens. The scheduler
 * decides who is swapped and when; this module only moves bytes and keeps their slots.
 * Single-threaded (the engine loop), except for the CRC workers it owns. */
#ifndef TL_KVSWAP_H
#define TL_KVSWAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ops.h"
#include "status.h"
#include "tier.h"

struct kvswap;

struct kvswap_opts {
    const struct ops *ops;  /* borrowed: the backend whose KV blocks move (the GPU in a split
                             * placement: the host tier is pinned for it, on its NUMA node) */
    const struct ops *ops2; /* a second backend keeping other layers' KV under the same block
                             * ids (the CPU lane of a split placement), or NULL; borrowed */
    size_t host_bytes;      /* the pinned host tier (--swap-space) */
    const char *nvme_dir;   /* the NVMe tier's directory (--nvme-swap-dir); NULL: none */
    size_t nvme_bytes;      /* its size (--nvme-swap-gb) */
    int max_blocks_per_seq; /* with NVMe, the host tier holds at least two such sequences */
    int crc_threads;        /* CRC32C workers; 0: on the calling thread (host checksums only) */
    bool host_crc;          /* checksum on the host even where the backend can on the device */
    bool quiet;             /* no start-up line (trouble is still reported) */
    /* Start-up and trouble lines; NULL: stderr. */
    void (*log)(void *user, const char *line);
    void *log_user;
};

/* Where a swapped sequence is (kvswap_state). */
enum kvswap_state {
    KVSWAP_STORED,  /* out of the device; transfers in flight or blocks on NVMe */
    KVSWAP_READY,   /* every block in host memory, checked or checkable: kvswap_in may start */
    KVSWAP_LOADING, /* copies into the device in flight */
    KVSWAP_LOADED,  /* the device blocks hold the KV: release the handle */
    KVSWAP_FAILED,  /* lost (kvswap_fail_of says why): recompute, release the handle */
};

enum kvswap_fail {
    KVSWAP_FAIL_NONE = 0,
    KVSWAP_FAIL_CRC,        /* a block read back differs from what was written */
    KVSWAP_FAIL_READ,       /* an NVMe read failed (EIO, ...) */
    KVSWAP_FAIL_SHORT_READ, /* an NVMe read returned fewer bytes */
    KVSWAP_FAIL_WRITE,      /* an NVMe write failed or was short */
    KVSWAP_FAIL_NOSPACE,    /* an NVMe write hit a full disk */
    KVSWAP_FAIL_COPY,       /* a device <-> host copy failed */
    KVSWAP_FAIL_CAPACITY,   /* dropped to make room (host and NVMe both full) */
    KVSWAP_FAIL_COUNT
};

/* "crc", "read", "short_read", "write", "nospace", "copy", "capacity". */
const char *kvswap_fail_str(enum kvswap_fail f);

/* Fault injection for tests: the every-th event of a kind fails (0: never). */
enum kvswap_fault {
    KVSWAP_FAULT_CORRUPT_HOST, /* a bit flips in a block while it sits in host memory */
    KVSWAP_FAULT_CORRUPT_NVME, /* a block read from NVMe comes back altered */
    KVSWAP_FAULT_WRITE_EIO,    /* an NVMe write fails with -EIO */
    KVSWAP_FAULT_WRITE_ENOSPC, /* an NVMe write fails with -ENOSPC */
    KVSWAP_FAULT_READ_EIO,     /* an NVMe read fails with -EIO */
    KVSWAP_FAULT_READ_SHORT,   /* an NVMe read returns half the bytes */
    KVSWAP_FAULT_COPY_OUT,     /* a device -> host copy is refused */
    KVSWAP_FAULT_COPY_IN,      /* a host -> device copy fails */
    KVSWAP_FAULT_COUNT
};

struct kvswap_stats {
    int32_t host_slots, host_used; /* blocks */
    int32_t nvme_slots, nvme_used;
    int64_t out_bytes, in_bytes;               /* device -> host, host -> device (done) */
    int64_t nvme_write_bytes, nvme_read_bytes; /* host -> NVMe, NVMe -> host (done) */
    int64_t seqs_out, seqs_in, seqs_failed;    /* swap-outs started, swap-ins done, failed */
    int64_t fail[KVSWAP_FAIL_COUNT];           /* failed sequences by cause */
    /* measured at start-up, bytes/s: device -> host copy, NVMe write / read, CRC32C (all
     * threads) */
    double copy_bps, nvme_write_bps, nvme_read_bps, crc_bps;
    bool nvme_writable; /* false after a full disk or repeated write errors: no more spills */
    bool crc_on_device; /* blocks are checksummed by the backend beside its copies */
};

/* Creates the tiers: the host tier always (at least what the NVMe tier needs for staging),
 * the NVMe tier when o->nvme_dir is set. Blocks while memory is pinned and the file
 * preallocated, and for a short calibration of the transfer rates. Errors name the flag to
 * change. */
enum tl_status kvswap_create(const struct kvswap_opts *o, struct kvswap **out, struct tl_err *err);
/* Waits for transfers in flight and frees everything. Handles must be released first. */
void kvswap_destroy(struct kvswap *ks);

/* Whether n blocks can be copied out now (free host slots). */
bool kvswap_can_out(const struct kvswap *ks, int n);
/* Estimated seconds to swap n blocks out and back in (copies, host checksums and, when the
 * host tier is about full, the NVMe round trip). */
double kvswap_estimate_s(const struct kvswap *ks, int n);

/* Starts copying device blocks dev[0..n) out; they may be given to other sequences at once
 * (the backend orders later forward work after the copy). prio orders the swapped sequences:
 * lower is needed sooner (the engine passes the arrival number). *handle identifies them
 * until kvswap_release. TL_ERR_NOMEM: no room now; TL_ERR_IO: the copy was refused. Either
 * way nothing was taken: recompute instead. */
enum tl_status kvswap_out(struct kvswap *ks, const int32_t *dev, int n, int64_t prio,
                          int32_t *handle, struct tl_err *err);

/* Starts copying the sequence into device blocks dev[0..n) (n as at kvswap_out; dev[i] < 0
 * skips block i: the caller found it elsewhere). Needs KVSWAP_READY. */
enum tl_status kvswap_in(struct kvswap *ks, int32_t handle, const int32_t *dev, int n,
                         struct tl_err *err);

enum kvswap_state kvswap_state(const struct kvswap *ks, int32_t handle);
enum kvswap_fail kvswap_fail_of(const struct kvswap *ks, int32_t handle);

/* The caller is done with the handle (loaded, failed, aborted). Waits for copies into the
 * device still in flight for it (so its device blocks may be reused); its host and NVMe slots
 * are freed once nothing else is in flight on them. */
void kvswap_release(struct kvswap *ks, int32_t handle);

/* Advances every transfer: reaps completions, checks CRCs, spills and prefetches. wait: if
 * nothing finished yet and something is in flight, blocks until something does. */
void kvswap_poll(struct kvswap *ks, bool wait);

/* Whether anything is in flight (copies, I/O, checksums). */
bool kvswap_busy(const struct kvswap *ks);

void kvswap_stats(const struct kvswap *ks, struct kvswap_stats *st);

/* Makes the every-th event of a kind fail (tests); 0 turns it off. */
void kvswap_set_fault(struct kvswap *ks, enum kvswap_fault f, int every);

/* For benchmarks: the NVMe tier (NULL when none) and the host tier's memory. */
struct tier *kvswap_nvme_tier(struct kvswap *ks);
struct hostmem;
const struct hostmem *kvswap_host(const struct kvswap *ks);

#endif
