/* tier_nvme: transfers wait in a software queue until the ring has room, go in with one
 * io_uring_submit per call, and come back as CQEs whose user_data indexes a table of
 * in-flight transfers. Slot s lives at file offset s * io_bytes. */
#include "tier_nvme.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

struct inflight {
    uint64_t tag;
    int next_free;
};

struct nvme_tier {
    struct io_uring ring;
    bool ring_ok;
    int fd;
    bool fixed_file;
    size_t io_bytes;
    int32_t n_slots;
    int depth, in_ring;
    struct inflight *fl; /* (depth) */
    int fl_free;
    struct tier_io *queue; /* waiting for ring room: [qhead, qn) */
    int qhead, qn, qcap;
    struct iovec *bufs; /* registered buffers; NULL: plain I/O */
    int n_bufs;
};

static int buf_index(const struct nvme_tier *t, const void *p, size_t len) {
    for (int i = 0; i < t->n_bufs; i++) {
        const char *b = t->bufs[i].iov_base;
        if ((const char *)p >= b && (const char *)p + len <= b + t->bufs[i].iov_len) return i;
    }
    return -1;
}

/* Moves queued transfers into the ring while it has room; one submit for all of them. */
static void flush(struct nvme_tier *t) {
    int added = 0;
    while (t->qhead < t->qn && t->in_ring < t->depth) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);
        if (!sqe) break;
        const struct tier_io *io = &t->queue[t->qhead++];
        off_t off = (off_t)io->slot * (off_t)t->io_bytes;
        int fd = t->fixed_file ? 0 : t->fd;
        int bi = t->bufs ? buf_index(t, io->host, t->io_bytes) : -1;
        if (io->dir == TIER_STORE) {
            if (bi >= 0)
                io_uring_prep_write_fixed(sqe, fd, io->host, (unsigned)t->io_bytes, off, bi);
            else
                io_uring_prep_write(sqe, fd, io->host, (unsigned)t->io_bytes, off);
        } else {
            if (bi >= 0)
                io_uring_prep_read_fixed(sqe, fd, io->host, (unsigned)t->io_bytes, off, bi);
            else
                io_uring_prep_read(sqe, fd, io->host, (unsigned)t->io_bytes, off);
        }
        if (t->fixed_file) sqe->flags |= IOSQE_FIXED_FILE;
        int f = t->fl_free;
        t->fl_free = t->fl[f].next_free;
        t->fl[f].tag = io->tag;
        io_uring_sqe_set_data64(sqe, (uint64_t)f);
        t->in_ring++;
        added++;
    }
    if (t->qhead == t->qn) t->qhead = t->qn = 0;
    if (added) io_uring_submit(&t->ring);
}

static void nvme_submit(void *ctx, const struct tier_io *io, int n) {
    struct nvme_tier *t = ctx;
    if (t->qn + n > t->qcap && t->qhead > 0) {
        memmove(t->queue, t->queue + t->qhead, (size_t)(t->qn - t->qhead) * sizeof *io);
        t->qn -= t->qhead;
        t->qhead = 0;
    }
    assert(t->qn + n <= t->qcap); /* each transfer holds a host slot: the slots bound them */
    memcpy(t->queue + t->qn, io, (size_t)n * sizeof *io);
    t->qn += n;
    flush(t);
}

static int nvme_reap(void *ctx, struct tier_done *done, int max, int min) {
    struct nvme_tier *t = ctx;
    int total = t->in_ring + (t->qn - t->qhead);
    if (min > total) min = total;
    if (min > max) min = max;
    int k = 0;
    for (;;) {
        struct io_uring_cqe *cqe;
        while (k < max && io_uring_peek_cqe(&t->ring, &cqe) == 0) {
            int f = (int)io_uring_cqe_get_data64(cqe);
            done[k].tag = t->fl[f].tag;
            done[k].res = cqe->res;
            k++;
            io_uring_cqe_seen(&t->ring, cqe);
            t->fl[f].next_free = t->fl_free;
            t->fl_free = f;
            t->in_ring--;
        }
        flush(t);
        if (k >= min || k >= max) break;
        /* submit_and_wait also pushes entries an earlier submit left in the ring */
        if (io_uring_submit_and_wait(&t->ring, 1) < 0 && t->in_ring == 0) break;
    }
    return k;
}

static int nvme_in_flight(void *ctx) {
    struct nvme_tier *t = ctx;
    return t->in_ring + (t->qn - t->qhead);
}

static void nvme_destroy(void *ctx) {
    struct nvme_tier *t = ctx;
    if (!t) return;
    if (t->ring_ok) {
        t->qhead = t->qn = 0; /* queued transfers never started: drop them */
        while (t->in_ring > 0) {
            struct io_uring_cqe *cqe;
            if (io_uring_wait_cqe(&t->ring, &cqe) < 0) break;
            io_uring_cqe_seen(&t->ring, cqe);
            t->in_ring--;
        }
        io_uring_queue_exit(&t->ring);
    }
    if (t->fd >= 0) close(t->fd);
    free(t->fl);
    free(t->queue);
    free(t->bufs);
    free(t);
}

/* An unnamed file in dir (O_TMPFILE), else a named one unlinked at once. */
static int open_file(const char *dir, bool *unnamed, struct tl_err *err) {
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    *unnamed = fd >= 0;
    if (fd >= 0) return fd;
    if (errno == ENOENT || errno == ENOTDIR || errno == EACCES || errno == EROFS) {
        tl_fail(err, TL_ERR_IO, "--nvme-swap-dir %s: cannot create the swap file there: %s", dir,
                strerror(errno));
        return -1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/tierlm-kv-swap-XXXXXX", dir);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) {
        tl_fail(err, TL_ERR_IO, "--nvme-swap-dir %s: cannot create the swap file there: %s", dir,
                strerror(errno));
        return -1;
    }
    unlink(path);
    return fd;
}

enum tl_status tier_nvme_create(const struct tier_nvme_opts *o, struct tier *out,
                                struct tier_nvme_info *info, struct tl_err *err) {
    memset(out, 0, sizeof *out);
    memset(info, 0, sizeof *info);
    struct nvme_tier *t = calloc(1, sizeof *t);
    if (!t) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    t->fd = -1;
    enum tl_status st = TL_OK;
    char note[200] = "";
    if ((t->fd = open_file(o->dir, &info->unnamed, err)) < 0) {
        st = TL_ERR_IO;
        goto fail;
    }
    /* Direct I/O where the file system allows it (tmpfs and some others refuse O_DIRECT). */
    int fl = fcntl(t->fd, F_GETFL);
    info->direct = fl >= 0 && fcntl(t->fd, F_SETFL, fl | O_DIRECT) == 0;
    if (!info->direct)
        snprintf(note, sizeof note, "the file system refused O_DIRECT (%s): buffered I/O",
                 strerror(errno));
    info->mem_align = info->offset_align = 4096; /* safe for every device, when statx is mute */
#ifdef STATX_DIOALIGN
    struct statx sx;
    if (info->direct && statx(t->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
        (sx.stx_mask & STATX_DIOALIGN)) {
        if (sx.stx_dio_offset_align == 0) { /* statx says: no direct I/O on this file */
            fcntl(t->fd, F_SETFL, fl);
            info->direct = false;
            snprintf(note, sizeof note, "statx reports no direct I/O here: buffered I/O");
        } else {
            info->mem_align = sx.stx_dio_mem_align;
            info->offset_align = sx.stx_dio_offset_align;
        }
    }
#endif
    size_t a = info->offset_align > 4096 ? info->offset_align : 4096;
    t->io_bytes = (o->block_bytes + a - 1) / a * a;
    size_t n = o->bytes / t->io_bytes;
    if (n < 1 || n > INT32_MAX) {
        st = tl_fail(err, TL_ERR_INVALID,
                     n < 1 ? "--nvme-swap-gb %.3f is smaller than one KV block (%zu bytes)"
                           : "--nvme-swap-gb %.3f is more than 2^31 KV blocks of %zu bytes",
                     (double)o->bytes / (1 << 30), t->io_bytes);
        goto fail;
    }
    t->n_slots = (int32_t)n;
    off_t size = (off_t)n * (off_t)t->io_bytes;
    /* Refuse before allocating: a failing fallocate may fill the disk while it tries. */
    struct statvfs vfs;
    double want_gb = (double)size / (1 << 30), free_gb = -1.0;
    if (statvfs(o->dir, &vfs) == 0)
        free_gb = (double)vfs.f_bavail * (double)vfs.f_frsize / (1 << 30);
    int fa = free_gb >= 0 && want_gb > free_gb   ? ENOSPC
             : fallocate(t->fd, 0, 0, size) == 0 ? 0
                                                 : errno;
    if (fa == ENOSPC) {
        st = tl_fail(err, TL_ERR_NOMEM,
                     "--nvme-swap-dir %s has %.1f GiB free, --nvme-swap-gb asks for %.1f GiB: "
                     "lower --nvme-swap-gb or free space there",
                     o->dir, free_gb, want_gb);
        goto fail;
    }
    if (fa == 0) {
        info->preallocated = true;
    } else if (ftruncate(t->fd, size) == 0) {
        size_t l = strlen(note);
        snprintf(note + l, sizeof note - l, "%sno fallocate here (%s): space is not reserved",
                 l ? "; " : "", strerror(fa));
    } else {
        st = tl_fail(err, TL_ERR_IO, "--nvme-swap-dir %s: cannot size the swap file: %s", o->dir,
                     strerror(errno));
        goto fail;
    }
    t->depth = o->queue_depth > 0 ? o->queue_depth : 128;
    int rc = io_uring_queue_init((unsigned)t->depth, &t->ring, 0);
    if (rc < 0) {
        st =
            tl_fail(err, TL_ERR_UNSUPPORTED,
                    "--nvme-swap-dir needs io_uring, and the kernel refused it: %s", strerror(-rc));
        goto fail;
    }
    t->ring_ok = true;
    t->fixed_file = io_uring_register_files(&t->ring, &t->fd, 1) == 0;
    t->fl = malloc((size_t)t->depth * sizeof *t->fl);
    if (!t->fl) {
        st = tl_fail(err, TL_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    t->qcap = o->max_in_flight > 0 ? o->max_in_flight : 1;
    t->queue = malloc((size_t)t->qcap * sizeof *t->queue);
    if (!t->queue) {
        st = tl_fail(err, TL_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    for (int i = 0; i < t->depth; i++) t->fl[i].next_free = i + 1 < t->depth ? i + 1 : -1;
    t->fl_free = 0;
    snprintf(info->note, sizeof info->note, "%s", note);
    *out = (struct tier){.name = "nvme",
                         .ctx = t,
                         .n_slots = t->n_slots,
                         .io_bytes = t->io_bytes,
                         .submit = nvme_submit,
                         .reap = nvme_reap,
                         .in_flight = nvme_in_flight,
                         .destroy = nvme_destroy};
    return TL_OK;
fail:
    nvme_destroy(t);
    return st;
}

void tier_nvme_register(struct tier *tr, const struct iovec *bufs, int n_bufs,
                        struct tier_nvme_info *info) {
    struct nvme_tier *t = tr->ctx;
    info->fixed_buffers = false;
    int rc = io_uring_register_buffers(&t->ring, bufs, (unsigned)n_bufs);
    if (rc == 0) {
        t->bufs = malloc((size_t)n_bufs * sizeof *bufs);
        if (t->bufs) {
            memcpy(t->bufs, bufs, (size_t)n_bufs * sizeof *bufs);
            t->n_bufs = n_bufs;
            info->fixed_buffers = true;
            return;
        }
        io_uring_unregister_buffers(&t->ring);
        rc = -ENOMEM;
    }
    size_t l = strlen(info->note);
    snprintf(info->note + l, sizeof info->note - l,
             "%sio_uring refused to register the host buffers (%s%s): plain reads and writes",
             l ? "; " : "", strerror(-rc),
             rc == -ENOMEM ? "; raise the locked-memory limit, ulimit -l" : "");
}
