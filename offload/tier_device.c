/* tier_device: each submit becomes one kv_copy per direction (the backend batches the blocks);
 * a ring of (tag, ticket) turns the backend's finished-ticket counter into per-block
 * completions. A failed kv_copy completes its blocks with -EIO. */
#include "tier_device.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct pending {
    uint64_t tag, ticket; /* ticket 0: finished already, with res */
    int64_t res;
};

struct dev_tier {
    const struct ops *ops;
    struct pending *q; /* ring of cap: [head, head + n) */
    int head, n, cap;
    int32_t *blocks; /* (cap) scratch for one kv_copy call */
    void **host;     /* (cap) */
};

static struct pending *at(struct dev_tier *t, int i) {
    return &t->q[(t->head + i) % t->cap];
}

static void dev_submit(void *ctx, const struct tier_io *io, int n) {
    struct dev_tier *t = ctx;
    const struct ops *o = t->ops;
    assert(t->n + n <= t->cap); /* each transfer holds a host slot: the slots bound them */
    for (int dir = 0; dir < 2; dir++) {
        int m = 0;
        for (int i = 0; i < n; i++) {
            if ((int)io[i].dir != dir) continue;
            t->blocks[m] = io[i].slot;
            t->host[m++] = io[i].host;
        }
        if (m == 0) continue;
        uint64_t ticket = 0;
        bool ok = o->kv_copy(o->ctx, dir == TIER_STORE, t->blocks, t->host, m, &ticket) == TL_OK;
        for (int i = 0; i < n; i++)
            if ((int)io[i].dir == dir)
                *at(t, t->n++) = (struct pending){io[i].tag, ok ? ticket : 0, ok ? 0 : -EIO};
    }
}

static int dev_reap(void *ctx, struct tier_done *done, int max, int min) {
    struct dev_tier *t = ctx;
    if (min > t->n) min = t->n;
    if (min > max) min = max;
    uint64_t wait = 0, fin = 0;
    for (int i = 0; i < min; i++)
        if (at(t, i)->ticket > wait) wait = at(t, i)->ticket;
    bool failed = t->ops->kv_copy_done(t->ops->ctx, wait, &fin) != TL_OK;
    int k = 0;
    while (k < max && t->n > 0) {
        struct pending *p = at(t, 0);
        if (!failed && p->ticket > fin) break;
        done[k].tag = p->tag;
        done[k].res = p->ticket == 0 ? p->res : failed ? -EIO : (int64_t)t->ops->kv_block_bytes;
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
    uint64_t wait = 0, fin;
    for (int i = 0; i < t->n; i++)
        if (at(t, i)->ticket > wait) wait = at(t, i)->ticket;
    if (wait) t->ops->kv_copy_done(t->ops->ctx, wait, &fin);
    free(t->q);
    free(t->blocks);
    free(t->host);
    free(t);
}

enum tl_status tier_device_create(const struct ops *ops, int max_in_flight, struct tier *out,
                                  struct tl_err *err) {
    memset(out, 0, sizeof *out);
    if (!ops->kv_block_bytes || !ops->kv_copy || !ops->kv_copy_done)
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "the %s backend cannot copy KV blocks to host memory, so --swap-space and "
                       "--nvme-swap-dir are not available with it",
                       ops->name);
    if (max_in_flight < 1) return tl_fail(err, TL_ERR_INTERNAL, "tier_device: no room");
    struct dev_tier *t = calloc(1, sizeof *t);
    if (!t) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    t->ops = ops;
    t->cap = max_in_flight;
    t->q = malloc((size_t)max_in_flight * sizeof *t->q);
    t->blocks = malloc((size_t)max_in_flight * sizeof *t->blocks);
    t->host = malloc((size_t)max_in_flight * sizeof *t->host);
    if (!t->q || !t->blocks || !t->host) {
        dev_destroy(t);
        return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    }
    *out = (struct tier){.name = ops->name,
                         .ctx = t,
                         .n_slots = 0,
                         .io_bytes = ops->kv_block_bytes,
                         .submit = dev_submit,
                         .reap = dev_reap,
                         .in_flight = dev_in_flight,
                         .destroy = dev_destroy};
    return TL_OK;
}
