/* kvswap: per-block records (where the image is: a host slot, an NVMe slot or both; its CRC;
 * transfers in flight on it) grouped into handles, one per swapped sequence. Every transfer is
 * a tier_io whose tag names the block and the operation; kvswap_poll reaps the device tier,
 * the CRC pool and the NVMe tier and moves blocks along:
 *   out:   device --copy--> host slot --crc--> stored
 *   spill: stored --write--> NVMe slot, host slot freed      (sequences needed last)
 *   fetch: NVMe slot --read--> host slot --verify--> stored  (sequences needed first)
 *   in:    host slot --copy--> device, verified alongside   -> loaded, slots freed
 * Where the device tier checksums (tier.crc), the CRC of a copy out comes with its completion
 * (no host pass), a fetched block is not verified on the host, and a copy in completes with the
 * CRC of what landed, compared with the one taken at copy out: every image is still checked
 * once on its way back, after the last place it could have been damaged.
 * A handle fails as a whole at its first error; its slots are freed once nothing is in flight
 * on them. Slots and records come from fixed pools sized at create, so nothing allocates on
 * the way except a handle's block list. */
#include "kvswap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "clock.h"
#include "crc32c.h"
#include "crcpool.h"
#include "hostmem.h"
#include "tier_device.h"
#include "tier_nvme.h"

/* tags: operation << 32 | block record */
enum { OP_COPY_OUT = 1, OP_COPY_IN, OP_WRITE, OP_READ };
/* crc job kinds */
enum { JOB_SUM = 1, JOB_VERIFY };

/* block flags */
enum {
    B_HOST = 1 << 0,    /* the host slot holds the image and crc is its checksum */
    B_NVME = 1 << 1,    /* the NVMe slot holds it */
    B_CHECKED = 1 << 2, /* the host image was verified against crc */
    B_ONDEV = 1 << 3,   /* copied into the device (loading) */
    B_SPILL = 1 << 4,   /* a write to NVMe in flight frees the host slot when it lands */
    B_FETCH = 1 << 5,   /* a read from NVMe in flight (then a verify) */
};

struct blk {
    int32_t h;    /* handle */
    int32_t host; /* host slot or -1 */
    int32_t nvme; /* NVMe slot or -1 */
    uint32_t crc;
    uint8_t flags;
    uint8_t busy; /* operations in flight on it */
};

enum hstate { H_FREE = 0, H_OUT, H_IN, H_LOADED, H_FAILED };

struct handle {
    enum hstate state;
    bool released;
    enum kvswap_fail fail;
    int64_t prio;
    int n;
    int32_t *blk; /* owned (n) block records */
    int busy;     /* operations in flight over its blocks */
    int dev_busy; /* copies into the device in flight */
    int todo;     /* loading: blocks not yet both copied in and checked */
    int live_at;  /* index in ks->live */
};

struct slots {
    int32_t *free; /* stack */
    int32_t n_free, n;
};

struct kvswap {
    struct kvswap_opts o;
    const struct ops *ops;
    size_t block_bytes, slot_bytes;
    struct hostmem hm;
    struct tier dev, nvme;
    bool has_nvme;
    bool dev_crc; /* the device tier checksums (tier.crc) */
    struct tier_nvme_info nvme_info;
    struct crcpool *crc;
    struct slots host_slots, nvme_slots;
    struct blk *blk; /* (n_blk) */
    int32_t n_blk, *blk_free, n_blk_free;
    struct handle *h; /* (n_h) */
    int32_t n_h, *h_free, n_h_free;
    int32_t *live; /* handles in use (any state), for the policy walk */
    int n_live;
    int reserve;      /* host slots kept free for swap-outs when spilling */
    int write_errors; /* consecutive NVMe write failures */
    int fault_every[KVSWAP_FAULT_COUNT];
    int fault_count[KVSWAP_FAULT_COUNT];
    struct kvswap_stats st;
    /* scratch */
    struct tier_io *io;     /* (host slots) */
    struct tier_done *done; /* (host slots) */
    struct crc_job *jobs;   /* (host slots) */
    int32_t *order;         /* (n_h) */
};

const char *kvswap_fail_str(enum kvswap_fail f) {
    static const char *const names[KVSWAP_FAIL_COUNT] = {"none",  "crc",     "read", "short_read",
                                                         "write", "nospace", "copy", "capacity"};
    return f >= 0 && f < KVSWAP_FAIL_COUNT ? names[f] : "?";
}

static void say(const struct kvswap *ks, const char *line) {
    if (ks->o.log)
        ks->o.log(ks->o.log_user, line);
    else
        fprintf(stderr, "tierlm: %s\n", line);
}

/* ---- pools ---- */

static bool slots_init(struct slots *s, int32_t n) {
    s->free = malloc((size_t)(n > 0 ? n : 1) * sizeof *s->free);
    if (!s->free) return false;
    for (int32_t i = 0; i < n; i++) s->free[i] = n - 1 - i; /* low slots first */
    s->n_free = s->n = n;
    return true;
}

static int32_t slot_take(struct slots *s) {
    return s->n_free > 0 ? s->free[--s->n_free] : -1;
}

static void slot_give(struct slots *s, int32_t i) {
    s->free[s->n_free++] = i;
}

static bool fault(struct kvswap *ks, enum kvswap_fault f) {
    return ks->fault_every[f] > 0 && ++ks->fault_count[f] % ks->fault_every[f] == 0;
}

/* ---- handles ---- */

static void fail_handle(struct kvswap *ks, struct handle *h, enum kvswap_fail why) {
    if (h->state == H_FAILED) return;
    h->state = H_FAILED;
    h->fail = why;
    ks->st.fail[why]++;
    ks->st.seqs_failed++;
}

static void drop_host(struct kvswap *ks, struct blk *b) {
    if (b->host >= 0) slot_give(&ks->host_slots, b->host);
    b->host = -1;
    b->flags &= (uint8_t) ~(B_HOST | B_CHECKED);
}

static void free_blocks(struct kvswap *ks, struct handle *h) {
    for (int i = 0; i < h->n; i++) {
        struct blk *b = &ks->blk[h->blk[i]];
        drop_host(ks, b);
        if (b->nvme >= 0) slot_give(&ks->nvme_slots, b->nvme);
        b->nvme = -1;
        ks->blk_free[ks->n_blk_free++] = h->blk[i];
    }
    free(h->blk);
    h->blk = NULL;
    h->n = 0;
}

/* Frees what a finished handle holds once nothing is in flight on it. */
static void reclaim(struct kvswap *ks, int32_t id) {
    struct handle *h = &ks->h[id];
    if (h->busy > 0) return;
    if (h->state == H_FAILED || h->state == H_LOADED || h->released) free_blocks(ks, h);
    if (!h->released) return;
    int at = h->live_at;
    ks->live[at] = ks->live[--ks->n_live];
    ks->h[ks->live[at]].live_at = at;
    memset(h, 0, sizeof *h);
    ks->h_free[ks->n_h_free++] = id;
}

static void maybe_loaded(struct kvswap *ks, struct handle *h) {
    if (h->state == H_IN && h->todo == 0 && h->busy == 0) {
        h->state = H_LOADED;
        ks->st.seqs_in++;
    }
}

/* ---- transfers ---- */

static uint64_t tag(int op, int32_t b) {
    return (uint64_t)op << 32 | (uint32_t)b;
}

static void submit_crc(struct kvswap *ks, int32_t b, int kind) {
    struct blk *k = &ks->blk[b];
    k->busy++;
    ks->h[k->h].busy++;
    struct crc_job j = {
        .id = b, .kind = kind, .p = hostmem_slot(&ks->hm, k->host), .len = ks->block_bytes};
    crcpool_submit(ks->crc, &j);
}

/* Counts a transfer of block b in flight and adds it to the batch ks->io[0..*n_io). */
static void start(struct kvswap *ks, int op, int32_t b, int32_t slot, enum tier_dir dir,
                  int *n_io) {
    struct blk *k = &ks->blk[b];
    k->busy++;
    ks->h[k->h].busy++;
    ks->io[(*n_io)++] = (struct tier_io){tag(op, b), slot, dir, hostmem_slot(&ks->hm, k->host)};
}

static void on_copy(struct kvswap *ks, int op, struct blk *b, int64_t res, uint32_t crc) {
    struct handle *h = &ks->h[b->h];
    b->busy--;
    h->busy--;
    if (op == OP_COPY_IN) {
        h->dev_busy--;
        if (res == (int64_t)ks->dev.io_bytes && fault(ks, KVSWAP_FAULT_COPY_IN)) res = -EIO;
    }
    if (h->state == H_FAILED || h->released) return;
    if (res != (int64_t)ks->dev.io_bytes) {
        fail_handle(ks, h, KVSWAP_FAIL_COPY);
        return;
    }
    if (op == OP_COPY_OUT) {
        ks->st.out_bytes += (int64_t)ks->block_bytes;
        if (ks->dev_crc) {
            b->crc = crc;
            b->flags |= B_HOST;
        } else {
            submit_crc(ks, (int32_t)(b - ks->blk), JOB_SUM);
        }
    } else {
        ks->st.in_bytes += (int64_t)ks->block_bytes;
        if (ks->dev_crc && crc != b->crc) {
            fail_handle(ks, h, KVSWAP_FAIL_CRC);
            return;
        }
        b->flags |= B_ONDEV;
        if (ks->dev_crc || (b->flags & B_CHECKED)) h->todo--;
    }
}

static void on_copies(struct kvswap *ks, int k) {
    for (int i = 0; i < k; i++)
        on_copy(ks, (int)(ks->done[i].tag >> 32), &ks->blk[(uint32_t)ks->done[i].tag],
                ks->done[i].res, ks->done[i].crc);
}

static void on_crc(struct kvswap *ks, const struct crc_job *j) {
    struct blk *b = &ks->blk[j->id];
    struct handle *h = &ks->h[b->h];
    b->busy--;
    h->busy--;
    if (h->state == H_FAILED || h->released) return;
    if (j->kind == JOB_SUM) {
        b->crc = j->crc;
        b->flags |= B_HOST;
        return;
    }
    if (j->crc != b->crc) {
        fail_handle(ks, h, KVSWAP_FAIL_CRC);
        return;
    }
    b->flags |= B_CHECKED;
    if (b->flags & B_FETCH) {
        b->flags = (uint8_t)((b->flags & ~B_FETCH) | B_HOST);
    } else if (b->flags & B_ONDEV) {
        h->todo--;
    }
}

static void on_io(struct kvswap *ks, int op, struct blk *b, int64_t res) {
    struct handle *h = &ks->h[b->h];
    int64_t whole = (int64_t)ks->nvme.io_bytes;
    b->busy--;
    h->busy--;
    if (op == OP_WRITE) {
        if (res == whole && fault(ks, KVSWAP_FAULT_WRITE_EIO)) res = -EIO;
        if (res == whole && fault(ks, KVSWAP_FAULT_WRITE_ENOSPC)) res = -ENOSPC;
        if (res != whole) {
            char line[200];
            bool full = res == -ENOSPC;
            if (full || ++ks->write_errors >= 8) {
                if (ks->st.nvme_writable) {
                    snprintf(line, sizeof line,
                             "KV swap: NVMe writes failing (%s): no more spills to NVMe; "
                             "preempted sequences are recomputed when host memory is full",
                             res < 0 ? strerror((int)-res) : "short write");
                    say(ks, line);
                }
                ks->st.nvme_writable = false;
            }
            if (h->state != H_FAILED && !h->released)
                fail_handle(ks, h, full ? KVSWAP_FAIL_NOSPACE : KVSWAP_FAIL_WRITE);
            return;
        }
        ks->write_errors = 0;
        ks->st.nvme_write_bytes += whole;
        b->flags |= B_NVME;
        if (b->flags & B_SPILL) {
            b->flags &= (uint8_t)~B_SPILL;
            if (h->state == H_OUT) drop_host(ks, b);
        }
        return;
    }
    /* read */
    if (res == whole && fault(ks, KVSWAP_FAULT_READ_EIO)) res = -EIO;
    if (res == whole && fault(ks, KVSWAP_FAULT_READ_SHORT)) res = whole / 2;
    if (res == whole && fault(ks, KVSWAP_FAULT_CORRUPT_NVME))
        ((unsigned char *)hostmem_slot(&ks->hm, b->host))[ks->block_bytes / 3] ^= 0x10;
    if (h->state == H_FAILED || h->released) return;
    if (res != whole) {
        fail_handle(ks, h, res >= 0 ? KVSWAP_FAIL_SHORT_READ : KVSWAP_FAIL_READ);
        return;
    }
    ks->st.nvme_read_bytes += whole;
    if (ks->dev_crc) /* checked where it lands in the device */
        b->flags = (uint8_t)((b->flags & ~B_FETCH) | B_HOST);
    else
        submit_crc(ks, (int32_t)(b - ks->blk), JOB_VERIFY); /* B_FETCH stays until verified */
}

/* Reaps whatever has finished; returns how many completions were handled. */
static int reap_all(struct kvswap *ks) {
    int total = 0, k, cap = ks->host_slots.n;
    do {
        k = ks->dev.reap(ks->dev.ctx, ks->done, cap, 0);
        on_copies(ks, k);
        total += k;
    } while (k == cap);
    do {
        k = crcpool_reap(ks->crc, ks->jobs, cap, 0);
        for (int i = 0; i < k; i++) on_crc(ks, &ks->jobs[i]);
        total += k;
    } while (k == cap);
    if (ks->has_nvme) do {
            k = ks->nvme.reap(ks->nvme.ctx, ks->done, cap, 0);
            for (int i = 0; i < k; i++)
                on_io(ks, (int)(ks->done[i].tag >> 32), &ks->blk[(uint32_t)ks->done[i].tag],
                      ks->done[i].res);
            total += k;
        } while (k == cap);
    return total;
}

/* ---- policy: which stored sequences live in host memory, which on NVMe ---- */

static int cmp_prio(const void *a, const void *b, void *arg) {
    const struct kvswap *ks = arg;
    int64_t x = ks->h[*(const int32_t *)a].prio, y = ks->h[*(const int32_t *)b].prio;
    return x < y ? -1 : x > y;
}

static bool all_in_host(const struct kvswap *ks, const struct handle *h) {
    for (int i = 0; i < h->n; i++) {
        const struct blk *b = &ks->blk[h->blk[i]];
        if (!(b->flags & B_HOST) || b->busy) return false;
    }
    return true;
}

/* The sequences needed first (lowest prio) are "hot" up to the host tier less a reserve for
 * swap-outs; the rest are cold. Cold sequences' blocks go to NVMe (the host copy is dropped
 * once written, or at once when NVMe already holds it); hot sequences' NVMe-only blocks are
 * read back. The first sequence is always hot. */
static void place(struct kvswap *ks) {
    int n = 0;
    for (int i = 0; i < ks->n_live; i++) {
        struct handle *h = &ks->h[ks->live[i]];
        if (h->state == H_OUT && !h->released) ks->order[n++] = ks->live[i];
    }
    if (n == 0) return;
    qsort_r(ks->order, (size_t)n, sizeof *ks->order, cmp_prio, ks);
    int budget = ks->host_slots.n - ks->reserve, used = 0, n_io = 0;
    int cold_from = n;
    for (int i = 0; i < n; i++) {
        used += ks->h[ks->order[i]].n;
        if (i > 0 && used > budget) {
            cold_from = i;
            break;
        }
    }
    /* spill the coldest first */
    for (int i = n - 1; i >= cold_from; i--) {
        struct handle *h = &ks->h[ks->order[i]];
        for (int j = 0; j < h->n; j++) {
            int32_t bi = h->blk[j];
            struct blk *b = &ks->blk[bi];
            if (!(b->flags & B_HOST) || b->busy) continue;
            if (b->flags & B_NVME) {
                drop_host(ks, b);
                continue;
            }
            if (!ks->st.nvme_writable) continue;
            int32_t s = slot_take(&ks->nvme_slots);
            if (s < 0) break;
            b->nvme = s;
            b->flags |= B_SPILL;
            start(ks, OP_WRITE, bi, s, TIER_STORE, &n_io);
        }
    }
    /* fetch the hottest first; beyond the first sequence, keep the reserve free */
    for (int i = 0; i < cold_from; i++) {
        struct handle *h = &ks->h[ks->order[i]];
        for (int j = 0; j < h->n; j++) {
            int32_t bi = h->blk[j];
            struct blk *b = &ks->blk[bi];
            if ((b->flags & B_HOST) || !(b->flags & B_NVME) || b->busy) continue;
            if (i > 0 && ks->host_slots.n_free <= ks->reserve) break;
            int32_t s = slot_take(&ks->host_slots);
            if (s < 0) break;
            b->host = s;
            b->flags |= B_FETCH;
            start(ks, OP_READ, bi, b->nvme, TIER_LOAD, &n_io);
        }
    }
    if (n_io) ks->nvme.submit(ks->nvme.ctx, ks->io, n_io);
    /* Stuck: the first sequence waits for host slots that nothing in flight will free (host
     * full of sequences NVMe cannot take). Drop the last one that holds host slots. */
    struct handle *first = &ks->h[ks->order[0]];
    if (n_io == 0 && !kvswap_busy(ks) && !all_in_host(ks, first) && ks->host_slots.n_free == 0) {
        for (int i = n - 1; i > 0; i--) {
            struct handle *h = &ks->h[ks->order[i]];
            bool holds = false;
            for (int j = 0; j < h->n && !holds; j++) holds = ks->blk[h->blk[j]].host >= 0;
            if (!holds) continue;
            fail_handle(ks, h, KVSWAP_FAIL_CAPACITY);
            reclaim(ks, ks->order[i]);
            break;
        }
    }
}

/* ---- API ---- */

bool kvswap_busy(const struct kvswap *ks) {
    return ks->dev.in_flight(ks->dev.ctx) > 0 || crcpool_outstanding(ks->crc) > 0 ||
           (ks->has_nvme && ks->nvme.in_flight(ks->nvme.ctx) > 0);
}

void kvswap_poll(struct kvswap *ks, bool wait) {
    int got = reap_all(ks);
    if (wait && got == 0 && kvswap_busy(ks)) {
        /* block on one source; the others are picked up right after */
        int cap = ks->host_slots.n;
        if (crcpool_outstanding(ks->crc) > 0) {
            int k = crcpool_reap(ks->crc, ks->jobs, cap, 1);
            for (int i = 0; i < k; i++) on_crc(ks, &ks->jobs[i]);
        } else if (ks->dev.in_flight(ks->dev.ctx) > 0) {
            on_copies(ks, ks->dev.reap(ks->dev.ctx, ks->done, cap, 1));
        } else {
            int k = ks->nvme.reap(ks->nvme.ctx, ks->done, cap, 1);
            for (int i = 0; i < k; i++)
                on_io(ks, (int)(ks->done[i].tag >> 32), &ks->blk[(uint32_t)ks->done[i].tag],
                      ks->done[i].res);
        }
        reap_all(ks);
    }
    for (int i = ks->n_live - 1; i >= 0; i--) {
        int32_t id = ks->live[i];
        maybe_loaded(ks, &ks->h[id]);
        reclaim(ks, id);
    }
    if (ks->has_nvme) place(ks);
}

bool kvswap_can_out(const struct kvswap *ks, int n) {
    return n > 0 && n <= ks->host_slots.n_free && n <= ks->n_blk_free && ks->n_h_free > 0;
}

double kvswap_estimate_s(const struct kvswap *ks, int n) {
    const struct kvswap_stats *s = &ks->st;
    double bytes = (double)n * (double)ks->block_bytes;
    double t = 2.0 * bytes / s->copy_bps + (ks->dev_crc ? 0.0 : 2.0 * bytes / s->crc_bps);
    if (ks->has_nvme && s->nvme_writable && ks->host_slots.n_free - n < ks->reserve)
        t += (double)n * (double)ks->nvme.io_bytes *
             (1.0 / s->nvme_write_bps + 1.0 / s->nvme_read_bps);
    return t;
}

enum tl_status kvswap_out(struct kvswap *ks, const int32_t *dev, int n, int64_t prio,
                          int32_t *handle, struct tl_err *err) {
    *handle = -1;
    if (!kvswap_can_out(ks, n))
        return tl_fail(err, TL_ERR_NOMEM, "KV swap: no room for %d blocks in host memory", n);
    if (fault(ks, KVSWAP_FAULT_COPY_OUT)) {
        ks->st.fail[KVSWAP_FAIL_COPY]++;
        ks->st.seqs_failed++;
        return tl_fail(err, TL_ERR_IO, "KV swap: copy out refused (injected fault)");
    }
    int32_t *list = malloc((size_t)n * sizeof *list);
    if (!list) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    int32_t id = ks->h_free[--ks->n_h_free];
    struct handle *h = &ks->h[id];
    *h = (struct handle){.state = H_OUT, .prio = prio, .n = n, .blk = list, .live_at = ks->n_live};
    ks->live[ks->n_live++] = id;
    int n_io = 0;
    for (int i = 0; i < n; i++) {
        int32_t bi = ks->blk_free[--ks->n_blk_free];
        list[i] = bi;
        ks->blk[bi] = (struct blk){.h = id, .host = slot_take(&ks->host_slots), .nvme = -1};
        start(ks, OP_COPY_OUT, bi, dev[i], TIER_LOAD, &n_io);
    }
    ks->dev.submit(ks->dev.ctx, ks->io, n_io);
    ks->st.seqs_out++;
    *handle = id;
    return TL_OK;
}

enum tl_status kvswap_in(struct kvswap *ks, int32_t id, const int32_t *dev, int n,
                         struct tl_err *err) {
    struct handle *h = &ks->h[id];
    if (h->state != H_OUT || n != h->n || !all_in_host(ks, h))
        return tl_fail(err, TL_ERR_INTERNAL, "KV swap: sequence %d is not ready to load", id);
    h->state = H_IN;
    h->todo = 0;
    int n_io = 0;
    for (int i = 0; i < n; i++) {
        if (dev[i] < 0) continue;
        int32_t bi = h->blk[i];
        struct blk *b = &ks->blk[bi];
        h->todo++;
        h->dev_busy++;
        start(ks, OP_COPY_IN, bi, dev[i], TIER_STORE, &n_io);
        if (ks->dev_crc || !(b->flags & B_CHECKED)) {
            if (fault(ks, KVSWAP_FAULT_CORRUPT_HOST))
                ((unsigned char *)hostmem_slot(&ks->hm, b->host))[ks->block_bytes / 2] ^= 0x01;
            /* alongside the copy: both must finish (on the device, the copy checks itself) */
            if (!ks->dev_crc) submit_crc(ks, bi, JOB_VERIFY);
        }
    }
    if (n_io) ks->dev.submit(ks->dev.ctx, ks->io, n_io);
    maybe_loaded(ks, h);
    return TL_OK;
}

enum kvswap_state kvswap_state(const struct kvswap *ks, int32_t id) {
    const struct handle *h = &ks->h[id];
    switch (h->state) {
    case H_OUT:
        return all_in_host(ks, h) ? KVSWAP_READY : KVSWAP_STORED;
    case H_IN:
        return KVSWAP_LOADING;
    case H_LOADED:
        return KVSWAP_LOADED;
    default:
        /* the caller frees the device blocks on FAILED: not while copies into them run */
        return h->dev_busy > 0 ? KVSWAP_LOADING : KVSWAP_FAILED;
    }
}

enum kvswap_fail kvswap_fail_of(const struct kvswap *ks, int32_t id) {
    return ks->h[id].fail;
}

void kvswap_release(struct kvswap *ks, int32_t id) {
    struct handle *h = &ks->h[id];
    while (h->dev_busy > 0) { /* the device blocks go back to the caller: finish copying */
        int k = ks->dev.reap(ks->dev.ctx, ks->done, ks->host_slots.n, 1);
        on_copies(ks, k);
        if (k == 0) break;
    }
    h->released = true;
    reclaim(ks, id);
}

void kvswap_stats(const struct kvswap *ks, struct kvswap_stats *st) {
    *st = ks->st;
    st->crc_on_device = ks->dev_crc;
    st->host_slots = ks->host_slots.n;
    st->host_used = ks->host_slots.n - ks->host_slots.n_free;
    st->nvme_slots = ks->nvme_slots.n;
    st->nvme_used = ks->nvme_slots.n - ks->nvme_slots.n_free;
}

void kvswap_set_fault(struct kvswap *ks, enum kvswap_fault f, int every) {
    if (f >= 0 && f < KVSWAP_FAULT_COUNT) {
        ks->fault_every[f] = every > 0 ? every : 0;
        ks->fault_count[f] = 0;
    }
}

struct tier *kvswap_nvme_tier(struct kvswap *ks) {
    return ks->has_nvme ? &ks->nvme : NULL;
}

const struct hostmem *kvswap_host(const struct kvswap *ks) {
    return &ks->hm;
}

/* ---- create / destroy ---- */

/* Rates the cost model starts from, measured on a few blocks: copies out of device block 0
 * (reading it is harmless), NVMe writes and reads of a few slots, CRC32C over host memory. */
static void calibrate(struct kvswap *ks) {
    int n = ks->host_slots.n < 32 ? ks->host_slots.n : 32;
    struct kvswap_stats *s = &ks->st;
    s->copy_bps = s->nvme_write_bps = s->nvme_read_bps = s->crc_bps = 1e9; /* fallbacks */
    for (int i = 0; i < n; i++)
        ks->io[i] = (struct tier_io){(uint64_t)i, 0, TIER_LOAD, hostmem_slot(&ks->hm, i)};
    for (int rep = 0; rep < 2; rep++) { /* the first run faults the pages in */
        double t0 = tl_now_s();
        ks->dev.submit(ks->dev.ctx, ks->io, n);
        int got = 0;
        while (got < n) {
            int k = ks->dev.reap(ks->dev.ctx, ks->done, n, n - got);
            if (k == 0) break;
            got += k;
        }
        double dt = tl_now_s() - t0;
        if (got == n && dt > 0) s->copy_bps = (double)n * (double)ks->block_bytes / dt;
    }
    double t0 = tl_now_s();
    uint32_t c = 0;
    for (int i = 0; i < n; i++) c ^= crc32c(0, hostmem_slot(&ks->hm, i), ks->block_bytes);
    double dt = tl_now_s() - t0;
    if (dt > 0)
        s->crc_bps = (double)n * (double)ks->block_bytes / dt *
                     (crcpool_threads(ks->crc) > 0 ? crcpool_threads(ks->crc) : 1);
    (void)c;
    if (!ks->has_nvme) return;
    int m = n < ks->nvme_slots.n ? n : ks->nvme_slots.n;
    for (int dir = TIER_STORE; dir >= TIER_LOAD; dir--) {
        for (int i = 0; i < m; i++)
            ks->io[i] =
                (struct tier_io){(uint64_t)i, i, (enum tier_dir)dir, hostmem_slot(&ks->hm, i)};
        t0 = tl_now_s();
        ks->nvme.submit(ks->nvme.ctx, ks->io, m);
        int got = 0, ok = 0;
        while (got < m) {
            int k = ks->nvme.reap(ks->nvme.ctx, ks->done, m, m - got);
            if (k == 0) break;
            for (int i = 0; i < k; i++) ok += ks->done[i].res == (int64_t)ks->nvme.io_bytes;
            got += k;
        }
        dt = tl_now_s() - t0;
        double bps = ok == m && dt > 0 ? (double)m * (double)ks->nvme.io_bytes / dt : 1e8;
        if (dir == TIER_STORE)
            s->nvme_write_bps = bps;
        else
            s->nvme_read_bps = bps;
    }
}

enum tl_status kvswap_create(const struct kvswap_opts *o, struct kvswap **out, struct tl_err *err) {
    *out = NULL;
    const struct ops *ops = o->ops, *both[2] = {o->ops, o->ops2};
    size_t block_bytes = ops->kv_block_bytes + (o->ops2 ? o->ops2->kv_block_bytes : 0);
    if (!block_bytes)
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "the %s backend cannot copy KV blocks to host memory, so --swap-space and "
                       "--nvme-swap-dir are not available with it",
                       ops->name);
    struct kvswap *ks = calloc(1, sizeof *ks);
    if (!ks) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    ks->o = *o;
    ks->ops = ops;
    ks->block_bytes = block_bytes; /* the device tier's image: both backends' parts */
    enum tl_status st;
    int32_t n_nvme = 0;
    /* Host slots are 4 KiB-aligned images; the NVMe tier may want more alignment, which only
     * makes slots larger, so the first count bounds the transfers the NVMe tier must queue. */
    size_t slot = (ks->block_bytes + 4095) / 4096 * 4096;
    size_t min_host = o->nvme_dir ? 2 * (size_t)o->max_blocks_per_seq : 0;
    size_t max_host = o->host_bytes / slot > min_host ? o->host_bytes / slot : min_host;
    if (max_host > INT32_MAX / 4) {
        st = tl_fail(err, TL_ERR_INVALID, "--swap-space: %zu KV blocks are too many", max_host);
        goto fail;
    }
    if (o->nvme_dir) {
        struct tier_nvme_opts no = {.dir = o->nvme_dir,
                                    .bytes = o->nvme_bytes,
                                    .block_bytes = ks->block_bytes,
                                    .max_in_flight = (int)max_host};
        if ((st = tier_nvme_create(&no, &ks->nvme, &ks->nvme_info, err)) != TL_OK) goto fail;
        ks->has_nvme = true;
        n_nvme = ks->nvme.n_slots;
        size_t a = ks->nvme_info.mem_align > 4096 ? ks->nvme_info.mem_align : 4096;
        slot = (ks->nvme.io_bytes + a - 1) / a * a;
        if (n_nvme > INT32_MAX / 4) n_nvme = INT32_MAX / 4;
    }
    ks->slot_bytes = slot;
    size_t host = o->host_bytes / slot > min_host ? o->host_bytes / slot : min_host;
    int32_t n_host = (int32_t)host;
    if (n_host < 1) {
        st = tl_fail(err, TL_ERR_INVALID,
                     "--swap-space %.3f GiB holds no KV block of %zu bytes: raise it",
                     (double)o->host_bytes / (1 << 30), ks->block_bytes);
        goto fail;
    }
    if ((st = tier_device_create(both, o->ops2 ? 2 : 1, n_host, !o->host_crc, &ks->dev, err)) !=
        TL_OK)
        goto fail;
    ks->dev_crc = ks->dev.crc;
    if ((st = hostmem_create(ops, n_host, ks->slot_bytes, &ks->hm, err)) != TL_OK) goto fail;
    if (ks->has_nvme) {
        /* fixed buffers of at most 1 GiB each, cut on slot boundaries */
        size_t per = ((size_t)1 << 30) / ks->slot_bytes * ks->slot_bytes;
        int nb = (int)((ks->hm.bytes + per - 1) / per);
        struct iovec *iov = malloc((size_t)nb * sizeof *iov);
        if (iov) {
            for (int i = 0; i < nb; i++) {
                size_t off = (size_t)i * per;
                iov[i].iov_base = ks->hm.base + off;
                iov[i].iov_len = ks->hm.bytes - off < per ? ks->hm.bytes - off : per;
            }
            tier_nvme_register(&ks->nvme, iov, nb, &ks->nvme_info);
            free(iov);
        }
        ks->reserve = o->max_blocks_per_seq < n_host / 2 ? o->max_blocks_per_seq : n_host / 2;
        ks->st.nvme_writable = true;
    }
    int32_t n_rec = n_host + n_nvme;
    /* no host checksums where the device computes them */
    if ((st = crcpool_create(ks->dev_crc ? 0 : o->crc_threads, n_host, &ks->crc, err)) != TL_OK)
        goto fail;
    ks->blk = calloc((size_t)n_rec, sizeof *ks->blk);
    ks->blk_free = malloc((size_t)n_rec * sizeof *ks->blk_free);
    ks->h = calloc((size_t)n_rec, sizeof *ks->h);
    ks->h_free = malloc((size_t)n_rec * sizeof *ks->h_free);
    ks->live = malloc((size_t)n_rec * sizeof *ks->live);
    ks->order = malloc((size_t)n_rec * sizeof *ks->order);
    ks->io = malloc((size_t)n_host * sizeof *ks->io);
    ks->done = malloc((size_t)n_host * sizeof *ks->done);
    ks->jobs = malloc((size_t)n_host * sizeof *ks->jobs);
    if (!ks->blk || !ks->blk_free || !ks->h || !ks->h_free || !ks->live || !ks->order || !ks->io ||
        !ks->done || !ks->jobs || !slots_init(&ks->host_slots, n_host) ||
        !slots_init(&ks->nvme_slots, n_nvme)) {
        st = tl_fail(err, TL_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    ks->n_blk = ks->n_h = n_rec;
    for (int32_t i = 0; i < n_rec; i++) {
        ks->blk_free[i] = n_rec - 1 - i;
        ks->h_free[i] = n_rec - 1 - i;
    }
    ks->n_blk_free = ks->n_h_free = n_rec;
    calibrate(ks);

    char line[900], crc_where[80];
    if (ks->dev_crc)
        snprintf(crc_where, sizeof crc_where, "by the %s backend beside its copies", ops->name);
    else
        snprintf(crc_where, sizeof crc_where, "%s on %d thread(s)", crc32c_impl(),
                 crcpool_threads(ks->crc));
    int l = snprintf(line, sizeof line,
                     "KV swap: host tier %.2f GiB = %d blocks of %zu bytes (%s, %s), CRC32C %s",
                     (double)ks->hm.bytes / (1 << 30), n_host, ks->block_bytes,
                     ks->hm.pinned ? "pinned" : "pageable", ks->hm.where, crc_where);
    if (ks->has_nvme)
        snprintf(line + l, sizeof line - (size_t)l,
                 "; NVMe tier %s %.2f GiB = %d blocks (%s, %zu-byte alignment, %s buffers, %s%s%s)",
                 o->nvme_dir, (double)n_nvme * (double)ks->nvme.io_bytes / (1 << 30), n_nvme,
                 ks->nvme_info.direct ? "O_DIRECT" : "buffered I/O", ks->nvme_info.offset_align,
                 ks->nvme_info.fixed_buffers ? "registered" : "plain",
                 ks->nvme_info.preallocated ? "preallocated" : "not preallocated",
                 ks->nvme_info.note[0] ? ": " : "", ks->nvme_info.note);
    if (!o->quiet) say(ks, line);
    *out = ks;
    return TL_OK;
fail:
    kvswap_destroy(ks);
    return st;
}

void kvswap_destroy(struct kvswap *ks) {
    if (!ks) return;
    if (ks->dev.destroy) ks->dev.destroy(ks->dev.ctx);
    if (ks->has_nvme) ks->nvme.destroy(ks->nvme.ctx);
    crcpool_destroy(ks->crc); /* after the copies: its jobs read host memory */
    hostmem_destroy(&ks->hm);
    for (int i = 0; ks->h && i < ks->n_live; i++) free(ks->h[ks->live[i]].blk);
    free(ks->host_slots.free);
    free(ks->nvme_slots.free);
    free(ks->blk);
    free(ks->blk_free);
    free(ks->h);
    free(ks->h_free);
    free(ks->live);
    free(ks->order);
    free(ks->io);
    free(ks->done);
    free(ks->jobs);
    free(ks);
}
