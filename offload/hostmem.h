/* hostmem: the host tier's memory, n_slots block images of slot_bytes in one page-aligned
 * region, on the NUMA node of the device it serves (hwloc: the GPU's PCI ancestor; for the CPU
 * backend, the nodes this process runs on) and registered with the backend so block copies
 * run at full speed (CUDA: page-locked). Owns the region; create and destroy block (pinning a
 * large region takes a while). */
#ifndef TL_HOSTMEM_H
#define TL_HOSTMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ops.h"
#include "status.h"

struct hostmem {
    /* read-only for callers */
    char *base; /* (n_slots, slot_bytes) */
    size_t bytes, slot_bytes;
    int32_t n_slots;
    bool pinned;     /* registered with the backend (ops->host_register) */
    bool numa_bound; /* allocated with a NUMA binding */
    char where[160]; /* for logs: "NUMA node(s) 0 (the GPU's, 0000:3b:00.0)" */
    /* private */
    void *topo;            /* hwloc_topology_t, NULL when the region came from mmap */
    const struct ops *ops; /* borrowed: to unregister */
};

/* Allocates and registers n_slots * slot_bytes (slot_bytes a multiple of 4096). ops is
 * borrowed and must outlive h. */
enum tl_status hostmem_create(const struct ops *ops, int32_t n_slots, size_t slot_bytes,
                              struct hostmem *h, struct tl_err *err);
/* Unregisters and frees; a zeroed h is fine. */
void hostmem_destroy(struct hostmem *h);

static inline void *hostmem_slot(const struct hostmem *h, int32_t slot) {
    return h->base + (size_t)slot * h->slot_bytes;
}

#endif
