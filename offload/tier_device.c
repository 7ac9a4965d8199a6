/* tier_device: each submit becomes one kv_copy (or kv_copy_crc) per direction and backend (the
 * backends batch the blocks); a ring of (tag, tickets, checksums) turns the backends'
 * finished-ticket counters into per-block completions, the backends writing each part's CRC
 * into the ring entry itself. A failed kv_copy completes its blocks with -EIO. */
#include "tier_device.h"

#include "crc32c.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NB TIER_DEVICE_MAX_BACKENDS

struct pending {
    uint64_t tag;
    uint64_t ticket[NB]; /* per backend; 0: nothing to wait for */
    int64_t res;         /* < 0: failed already */
    uint32_t crc[NB];    /* per backend's part, written by the backend (with crc) */
};

struct dev_tier {
    const struct ops *ops[NB];
    size_t off[NB]; /* where each backend's part starts in a block's image */
    int n_ops;
    size_t io_bytes;
    bool crc;          /* kv_copy_crc on every backend */
    struct pending *q; /* ring of cap: [head, head + n) */
    int head, n, cap;
    int32_t *blocks; /* (cap) scratch for one kv_copy call */
    void **host;     /* (cap) */
    uint32_t **crcp; /* (cap) */
};

static struct pending *at(struct dev_tier *t, int i) {
    return &t->q[(t->head + i) % t->cap];
}

static void dev_submit(void *ctx, const struct tier_io *io, int n) {
    struct dev_tier *t = ctx;
    assert(t->n + n <= t->cap); /* each transfer holds a host slot: the slots bound them */
    int first = t->n;
    for (int i = 0; i < n; i++) *at(t, t->n++) = (struct pending){.tag = io[i].tag, .res = 0};
    for (int dir = 0; dir < 2; dir++) {
        for (int b = 0; b < t->n_ops; b++) {
            const struct ops *o = t->ops[b];
            int m = 0;
            for (int i = 0; i < n; i++) {
                if ((int)io[i].dir != dir) continue;
                t->blocks[m] = io[i].slot;
                t->crcp[m] = &at(t, first + i)->crc[b];
                t->host[m++] = (char *)io[i].host + t->off[b];
            }
            if (m == 0) continue;
            uint64_t ticket = 0;
            bool ok = (t->crc ? o->kv_copy_crc(o->ctx, dir == TIER_STORE, t->blocks, t->host,
                                               t->crcp, m, &ticket)
                              : o->kv_copy(o->ctx, dir == TIER_STORE, t->blocks, t->host, m,
                                           &ticket)) == TL_OK;
            for (int i = 0; i < n; i++) {
                if ((int)io[i].dir != dir) continue;
                struct pending *p = at(t, first + i);
                if (ok)
                    p->ticket[b] = ticket;
                else
                    p->res = -EIO;
            }
        }
    }
}

static int dev_reap(void *ctx, struct tier_done *done, int max, int min) {
    struct dev_tier *t = ctx;
    if (min > t->n) min = t->n;
    if (min > max) min = max;
    uint64_t fin[NB];
    bool failed = false;
    for (int b = 0; b < t->n_ops; b++) {
        uint64_t wait = 0;
        for (int i = 0; i < min; i++)
            if (at(t, i)->ticket[b] > wait) wait = at(t, i)->ticket[b];
        failed |= t->ops[b]->kv_copy_done(t->ops[b]->ctx, wait, &fin[b]) != TL_OK;
    }
    int k = 0;
    while (k < max && t->n > 0) {
        struct pending *p = at(t, 0);
        bool finished = true;
        for (int b = 0; b < t->n_ops; b++) finished &= p->ticket[b] <= fin[b];
        /* a part that failed to start still waits for the other part's copy */
        if (!failed && !finished) break;
        done[k].tag = p->tag;
        done[k].res = p->res < 0 ? p->res : failed ? -EIO : (int64_t)t->io_bytes;
        done[k].crc = p->crc[0];
        for (int b = 1; t->crc && b < t->n_ops; b++)
            done[k].crc = crc32c_combine(done[k].crc, p->crc[b], t->ops[b]->kv_block_bytes);
        k++;
        t->head = (t->head + 1) % t->cap;
        t->n--;
    }
    return k;
}

static int dev_in_flight(void *ctx) {
    return ((struct dev_tier *)ctx)->n;
}

static void dev_destroy(void *ctx) {
    struct dev_tier *t = ctx;
    if (!t) return;
    for (int b = 0; b < t->n_ops; b++) {
        uint64_t wait = 0, fin;
        for (int i = 0; i < t->n; i++)
            if (at(t, i)->ticket[b] > wait) wait = at(t, i)->ticket[b];
        if (wait) t->ops[b]->kv_copy_done(t->ops[b]->ctx, wait, &fin);
    }
    free(t->q);
    free(t->blocks);
    free(t->host);
    free(t->crcp);
    free(t);
}

enum tl_status tier_device_create(const struct ops *const *ops, int n_ops, int max_in_flight,
                                  bool crc, struct tier *out, struct tl_err *err) {
    memset(out, 0, sizeof *out);
    if (n_ops < 1 || n_ops > NB || max_in_flight < 1)
        return tl_fail(err, TL_ERR_INTERNAL, "tier_device: %d backends, %d in flight", n_ops,
                       max_in_flight);
    struct dev_tier *t = calloc(1, sizeof *t);
    if (!t) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    for (int b = 0; b < n_ops; b++) {
        const struct ops *o = ops[b];
        if (!o || !o->kv_block_bytes) continue; /* holds no KV (or cannot say so) */
        if (!o->kv_copy || !o->kv_copy_done) {
            free(t);
            return tl_fail(err, TL_ERR_UNSUPPORTED,
                           "the %s backend cannot copy KV blocks to host memory, so --swap-space "
                           "and --nvme-swap-dir are not available with it",
                           o->name);
        }
        t->ops[t->n_ops] = o;
        t->off[t->n_ops++] = t->io_bytes;
        t->io_bytes += o->kv_block_bytes;
    }
    if (t->n_ops == 0) {
        free(t);
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "the %s backend cannot copy KV blocks to host memory, so --swap-space and "
                       "--nvme-swap-dir are not available with it",
                       ops[0]->name);
    }
    t->crc = crc;
    for (int b = 0; b < t->n_ops; b++) t->crc &= t->ops[b]->kv_copy_crc != NULL;
    t->cap = max_in_flight;
    t->q = malloc((size_t)max_in_flight * sizeof *t->q);
    t->blocks = malloc((size_t)max_in_flight * sizeof *t->blocks);
    t->host = malloc((size_t)max_in_flight * sizeof *t->host);
    t->crcp = malloc((size_t)max_in_flight * sizeof *t->crcp);
    if (!t->q || !t->blocks || !t->host || !t->crcp) {
        dev_destroy(t);
        return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    }
    *out = (struct tier){.name = t->ops[0]->name,
                         .ctx = t,
                         .n_slots = 0,
                         .io_bytes = t->io_bytes,
                         .crc = t->crc,
                         .submit = dev_submit,
                         .reap = dev_reap,
                         .in_flight = dev_in_flight,
                         .destroy = dev_destroy};
    return TL_OK;
}
