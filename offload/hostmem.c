/* hostmem: hwloc finds the NUMA node(s) next to the device and allocates there (a GPU copies
 * from its own socket's memory faster, and the copies do not cross the inter-socket link);
 * then the backend pins the region. hwloc_alloc_membind + registration rather than
 * cudaHostAlloc, because cudaHostAlloc cannot be told which node to use. */
#include "hostmem.h"

#include <errno.h>
#include <hwloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

/* The nodes to bind to, or NULL to leave placement to first touch. */
static hwloc_bitmap_t pick_nodes(hwloc_topology_t topo, const char *busid, char *where,
                                 size_t where_len) {
    hwloc_bitmap_t nodes = hwloc_bitmap_alloc();
    if (!nodes) return NULL;
    if (busid) {
        hwloc_obj_t pci = hwloc_get_pcidev_by_busidstring(topo, busid);
        hwloc_obj_t anc = pci ? hwloc_get_non_io_ancestor_obj(topo, pci) : NULL;
        if (anc && anc->nodeset && !hwloc_bitmap_iszero(anc->nodeset)) {
            hwloc_bitmap_copy(nodes, anc->nodeset);
            char s[64];
            hwloc_bitmap_list_snprintf(s, sizeof s, nodes);
            snprintf(where, where_len, "NUMA node(s) %s (the device's, %s)", s, busid);
            return nodes;
        }
    }
    hwloc_bitmap_t cpus = hwloc_bitmap_alloc();
    if (cpus && hwloc_get_cpubind(topo, cpus, HWLOC_CPUBIND_PROCESS) == 0) {
        hwloc_cpuset_to_nodeset(topo, cpus, nodes);
        if (!hwloc_bitmap_iszero(nodes) &&
            !hwloc_bitmap_isequal(nodes, hwloc_topology_get_topology_nodeset(topo))) {
            char s[64];
            hwloc_bitmap_list_snprintf(s, sizeof s, nodes);
            snprintf(where, where_len, "NUMA node(s) %s (where this process runs)", s);
            hwloc_bitmap_free(cpus);
            return nodes;
        }
    }
    hwloc_bitmap_free(cpus);
    hwloc_bitmap_free(nodes);
    return NULL;
}

enum tl_status hostmem_create(const struct ops *ops, int32_t n_slots, size_t slot_bytes,
                              struct hostmem *h, struct tl_err *err) {
    memset(h, 0, sizeof *h);
    if (n_slots < 1 || slot_bytes == 0 || slot_bytes % 4096)
        return tl_fail(err, TL_ERR_INTERNAL, "hostmem: %d slots of %zu bytes", n_slots, slot_bytes);
    h->ops = ops;
    h->n_slots = n_slots;
    h->slot_bytes = slot_bytes;
    h->bytes = (size_t)n_slots * slot_bytes;
    snprintf(h->where, sizeof h->where, "first-touch placement");
    const char *busid = ops->pci_bus_id ? ops->pci_bus_id(ops->ctx) : NULL;
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) == 0) {
        if (busid) hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
        if (hwloc_topology_load(topo) == 0) {
            hwloc_bitmap_t nodes = pick_nodes(topo, busid, h->where, sizeof h->where);
            if (nodes) {
                h->base = hwloc_alloc_membind(topo, h->bytes, nodes, HWLOC_MEMBIND_BIND,
                                              HWLOC_MEMBIND_BYNODESET);
                h->numa_bound = h->base != NULL;
                hwloc_bitmap_free(nodes);
            }
            if (h->base) h->topo = topo;
        }
        if (!h->topo) hwloc_topology_destroy(topo);
    }
    if (!h->base) {
        void *p = mmap(NULL, h->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            h->base = NULL;
            return tl_fail(err, TL_ERR_NOMEM,
                           "cannot allocate %.2f GiB of host memory for the KV swap space: %s; "
                           "lower --swap-space",
                           (double)h->bytes / (1 << 30), strerror(errno));
        }
        h->base = p;
        if (!h->numa_bound) snprintf(h->where, sizeof h->where, "first-touch placement");
    }
    if (!ops->host_register) /* fault the pages in now (registration does it otherwise), so
                              * the first swaps do not stall the engine loop on page faults */
        for (size_t off = 0; off < h->bytes; off += 4096) h->base[off] = 0;
    if (ops->host_register) {
        enum tl_status st = ops->host_register(ops->ctx, h->base, h->bytes);
        if (st != TL_OK) {
            tl_fail(err, st,
                    "cannot page-lock %.2f GiB of host memory for the KV swap space (%s): lower "
                    "--swap-space",
                    (double)h->bytes / (1 << 30), ops->last_error(ops->ctx));
            hostmem_destroy(h);
            return st;
        }
        h->pinned = true;
    }
    return TL_OK;
}

void hostmem_destroy(struct hostmem *h) {
    if (!h->base) return;
    if (h->pinned) h->ops->host_unregister(h->ops->ctx, h->base);
    if (h->topo) {
        hwloc_free(h->topo, h->base, h->bytes);
        hwloc_topology_destroy(h->topo);
    } else {
        munmap(h->base, h->bytes);
    }
    memset(h, 0, sizeof *h);
}
