/* cmd_bench_kv: `tierlm bench kv-tiers`, the KV tiers' transfer rates against the ceilings
 * measured in the same run (DESIGN.md: every figure is a ratio to a ceiling): the backend's
 * block copies alone and with its checksums (kv_copy_crc, where it has them), swap-out (copies
 * out plus CRC32C) and swap-in (copies in, verified) of whole sequences through kvswap against
 * the pinned D2H / H2D rate of one large copy, and the NVMe tier's writes and reads against
 * raw io_uring O_DIRECT I/O of the same request size and depth on the same file system. The
 * KV blocks are the backend's own (their contents are whatever is there: dummy weights do). */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "clock.h"
#include "crc32c.h"
#include "engine_args.h"
#include "hostmem.h"
#include "kvswap.h"
#ifdef TL_HAVE_CUDA
#include "kern.h"
#include "kern_ceiling.h"
#endif

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_dbl);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void kv_help(FILE *f) {
    fprintf(f, "usage: tierlm bench kv-tiers --model DIR --swap-space GB [--nvme-swap-dir DIR\n"
               "                             --nvme-swap-gb GB] [--gib G] [engine flags]\n"
               "\n"
               "Swap-out and swap-in rates of the KV tiers against the pinned D2H / H2D rate, and\n"
               "the NVMe tier against raw io_uring O_DIRECT I/O on the same file system, measured\n"
               "in the same run (medians of --repeats). Use --load-format dummy for big models.\n"
               "\n"
               "benchmark:\n"
               "  --gib G                  KV moved per repeat (capped by the host tier and the\n"
               "                           device's KV blocks)   [4]\n"
               "  --seq-blocks N           blocks per swapped sequence   [128]\n"
               "  --repeats N              repeats   [3]\n");
    engine_args_help(f);
}

/* ---- raw io_uring O_DIRECT, the NVMe ceiling ---- */

static int raw_file(const char *dir) {
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tierlm-bench-XXXXXX", dir);
        fd = mkostemp(path, O_CLOEXEC);
        if (fd >= 0) unlink(path);
    }
    return fd;
}

/* One pass of n requests of req bytes at depth qd over the file: bytes/s, or -1. Submits and
 * reaps in batches, as the tier does. */
static double raw_pass(struct io_uring *ring, int fd, char *buf, size_t req, int n, int qd,
                       bool write, bool fixed) {
    double t0 = tl_now_s();
    int sub = 0, done = 0, inflight = 0;
    while (done < n) {
        while (inflight < qd && sub < n) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
            if (!sqe) break;
            char *b = buf + (size_t)(sub % qd) * req;
            off_t off = (off_t)sub * (off_t)req;
            if (fixed && write)
                io_uring_prep_write_fixed(sqe, fd, b, (unsigned)req, off, 0);
            else if (fixed)
                io_uring_prep_read_fixed(sqe, fd, b, (unsigned)req, off, 0);
            else if (write)
                io_uring_prep_write(sqe, fd, b, (unsigned)req, off);
            else
                io_uring_prep_read(sqe, fd, b, (unsigned)req, off);
            sub++;
            inflight++;
        }
        if (io_uring_submit_and_wait(ring, 1) < 0) return -1;
        struct io_uring_cqe *cqe;
        unsigned head, k = 0;
        bool bad = false;
        io_uring_for_each_cqe(ring, head, cqe) {
            bad |= cqe->res != (int)req;
            k++;
        }
        io_uring_cq_advance(ring, k);
        if (bad) return -1;
        inflight -= (int)k;
        done += (int)k;
    }
    return (double)req * n / (tl_now_s() - t0);
}

/* The file system's streaming rate through io_uring: `bytes` in requests of req bytes at depth
 * qd (registered buffers when the kernel allows) on a fresh file in dir, written once untimed
 * (so the timed writes, like the tier's, go to allocated blocks), then written and read:
 * bytes/s of each, or -1. */
static int raw_uring(const char *dir, size_t bytes, size_t req, int qd, double *w_bps,
                     double *r_bps, bool *direct, bool *fixed) {
    int n = (int)(bytes / req);
    int fd = raw_file(dir), rc = -1;
    if (fd < 0) return -1;
    int fl = fcntl(fd, F_GETFL);
    *direct = fl >= 0 && fcntl(fd, F_SETFL, fl | O_DIRECT) == 0;
    struct io_uring ring;
    void *buf = NULL;
    bool ring_ok = false;
    if (fallocate(fd, 0, 0, (off_t)req * n) != 0 && ftruncate(fd, (off_t)req * n) != 0) goto out;
    if (posix_memalign(&buf, 4096, req * (size_t)qd) != 0) goto out;
    memset(buf, 0x5a, req * (size_t)qd);
    if (io_uring_queue_init((unsigned)qd, &ring, 0) != 0) goto out;
    ring_ok = true;
    struct iovec iov = {buf, req * (size_t)qd};
    *fixed = io_uring_register_buffers(&ring, &iov, 1) == 0;
    if (n < 1 || raw_pass(&ring, fd, buf, req, n, qd, true, *fixed) < 0) goto out;
    *w_bps = raw_pass(&ring, fd, buf, req, n, qd, true, *fixed);
    *r_bps = raw_pass(&ring, fd, buf, req, n, qd, false, *fixed);
    rc = *w_bps > 0 && *r_bps > 0 ? 0 : -1;
out:
    if (ring_ok) io_uring_queue_exit(&ring);
    free(buf);
    close(fd);
    return rc;
}

/* ---- the tier's own rates ---- */

/* Writes then reads n slots through the NVMe tier (registered buffers, its queue depth). */
static int tier_rates(struct kvswap *ks, int n, double *w_bps, double *r_bps) {
    struct tier *t = kvswap_nvme_tier(ks);
    const struct hostmem *hm = kvswap_host(ks);
    struct tier_io *io = malloc((size_t)n * sizeof *io);
    struct tier_done *done = malloc((size_t)n * sizeof *done);
    int rc = -1;
    if (!io || !done) goto out;
    for (int dir = TIER_STORE; dir >= TIER_LOAD; dir--) {
        for (int i = 0; i < n; i++)
            io[i] = (struct tier_io){(uint64_t)i, i, (enum tier_dir)dir, hostmem_slot(hm, i)};
        double t0 = tl_now_s();
        t->submit(t->ctx, io, n);
        int got = 0;
        while (got < n) {
            int k = t->reap(t->ctx, done, n, 1);
            for (int i = 0; i < k; i++)
                if (done[i].res != (int64_t)t->io_bytes) goto out;
            got += k;
        }
        double bps = (double)t->io_bytes * n / (tl_now_s() - t0);
        *(dir == TIER_STORE ? w_bps : r_bps) = bps;
    }
    rc = 0;
out:
    free(io);
    free(done);
    return rc;
}

/* Copies n blocks out of the device and back with the backend's kv_copy alone (no kvswap), or
 * with kv_copy_crc when crc: bytes/s of each direction. */
static int copy_rates(const struct ops *o, const struct hostmem *hm, int n, bool crc,
                      double *out_bps, double *in_bps) {
    int32_t *blocks = malloc((size_t)n * sizeof *blocks);
    void **host = malloc((size_t)n * sizeof *host);
    uint32_t *sums = malloc((size_t)n * sizeof *sums), **sum = malloc((size_t)n * sizeof *sum);
    int rc = -1;
    if (!blocks || !host || !sums || !sum) goto out;
    for (int i = 0; i < n; i++) {
        blocks[i] = i;
        host[i] = hostmem_slot(hm, i);
        sum[i] = &sums[i];
    }
    for (int dir = 0; dir < 2; dir++) {
        uint64_t t, fin;
        double t0 = tl_now_s();
        enum tl_status st = crc ? o->kv_copy_crc(o->ctx, dir, blocks, host, sum, n, &t)
                                : o->kv_copy(o->ctx, dir, blocks, host, n, &t);
        if (st != TL_OK || o->kv_copy_done(o->ctx, t, &fin) != TL_OK) goto out;
        double bps = (double)o->kv_block_bytes * n / (tl_now_s() - t0);
        *(dir ? in_bps : out_bps) = bps;
    }
    rc = 0;
out:
    free(blocks);
    free(host);
    free(sums);
    free(sum);
    return rc;
}

/* Swaps n_seq sequences of seq blocks out through kvswap until every block is checksummed,
 * then back in until every block is copied and verified: seconds of each. */
static int swap_round(struct kvswap *ks, int n_seq, int seq, double *out_s, double *in_s) {
    int32_t *h = malloc((size_t)n_seq * sizeof *h), *dev = malloc((size_t)seq * sizeof *dev);
    int rc = -1, n_out = 0;
    struct tl_err err;
    struct kvswap_stats st0, st;
    if (!h || !dev) goto out;
    kvswap_stats(ks, &st0);
    double t0 = tl_now_s();
    for (; n_out < n_seq; n_out++) {
        for (int i = 0; i < seq; i++) dev[i] = n_out * seq + i;
        if (kvswap_out(ks, dev, seq, n_out, &h[n_out], &err) != TL_OK) {
            fprintf(stderr, "tierlm bench kv-tiers: %s\n", err.msg);
            goto out;
        }
    }
    for (bool ready = false; !ready;) {
        kvswap_poll(ks, true);
        ready = true;
        for (int s = 0; s < n_seq && ready; s++) ready = kvswap_state(ks, h[s]) == KVSWAP_READY;
        kvswap_stats(ks, &st);
        if (st.seqs_failed > st0.seqs_failed) goto out;
    }
    *out_s = tl_now_s() - t0;
    t0 = tl_now_s();
    for (int s = 0; s < n_seq; s++) {
        for (int i = 0; i < seq; i++) dev[i] = s * seq + i;
        if (kvswap_in(ks, h[s], dev, seq, &err) != TL_OK) goto out;
    }
    for (bool loaded = false; !loaded;) {
        kvswap_poll(ks, true);
        loaded = true;
        for (int s = 0; s < n_seq && loaded; s++) loaded = kvswap_state(ks, h[s]) == KVSWAP_LOADED;
        kvswap_stats(ks, &st);
        if (st.seqs_failed > st0.seqs_failed) goto out;
    }
    *in_s = tl_now_s() - t0;
    rc = 0;
out:
    for (int s = 0; h && s < n_out; s++) kvswap_release(ks, h[s]);
    kvswap_poll(ks, false);
    free(h);
    free(dev);
    return rc;
}

/* The pinned-copy ceiling: one large copy each way (CUDA), or memcpy (the CPU backend, whose
 * "device" is host memory). */
static int ceiling(bool cuda, size_t bytes, double *d2h, double *h2d, char *what, size_t wl) {
#ifdef TL_HAVE_CUDA
    if (cuda) {
        struct kern_ctx *kc;
        struct tl_err err;
        if (kern_ctx_create(0, &kc, &err) != TL_OK) return -1;
        enum tl_status st = kern_ceiling_pcie(kc, bytes, h2d, d2h);
        kern_ctx_destroy(kc);
        *d2h *= 1e9;
        *h2d *= 1e9;
        snprintf(what, wl, "pinned cudaMemcpy of %.0f MiB", bytes / 1048576.0);
        return st == TL_OK ? 0 : -1;
    }
#else
    (void)cuda;
#endif
    char *a = malloc(bytes), *b = malloc(bytes);
    if (!a || !b) {
        free(a);
        free(b);
        return -1;
    }
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = tl_now_s();
        memcpy(b, a, bytes);
        double bps = (double)bytes / (tl_now_s() - t0);
        if (bps > best) best = bps;
    }
    *d2h = *h2d = best;
    snprintf(what, wl, "memcpy of %.0f MiB, one thread", bytes / 1048576.0);
    free(a);
    free(b);
    return 0;
}

static void row(const char *what, double bps, const char *ceil_what, double ceil_bps) {
    if (ceil_bps > 0)
        printf("%-36s %8.2f GB/s  %-34s %8.2f GB/s  %5.2f\n", what, bps / 1e9, ceil_what,
               ceil_bps / 1e9, bps / ceil_bps);
    else
        printf("%-36s %8.2f GB/s\n", what, bps / 1e9);
}

int bench_kv_tiers(int argc, char **argv) {
    struct engine_args ea;
    engine_args_default(&ea);
    ea.no_tokenizer = true;
    ea.max_num_seqs = 16;
    ea.max_num_batched_tokens = 256;
    double gib = 4.0;
    int seq = 128, repeats = 3;
    for (int i = 1; i < argc; i++) {
        struct tl_err err;
        int r = engine_args_parse(&ea, argc, argv, &i, &err);
        if (r < 0) {
            fprintf(stderr, "tierlm bench kv-tiers: %s\n", err.msg);
            return 2;
        }
        if (r > 0) continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            kv_help(stdout);
            return 0;
        }
        if (i + 1 < argc && !strcmp(argv[i], "--gib")) {
            gib = atof(argv[++i]);
        } else if (i + 1 < argc && !strcmp(argv[i], "--seq-blocks")) {
            seq = atoi(argv[++i]);
        } else if (i + 1 < argc && !strcmp(argv[i], "--repeats")) {
            repeats = atoi(argv[++i]);
        } else {
            fprintf(stderr, "tierlm bench kv-tiers: unknown flag %s (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!ea.model || ea.swap_space_gb <= 0 || gib <= 0 || seq < 1 || repeats < 1) {
        fprintf(stderr, "tierlm bench kv-tiers: needs --model DIR and --swap-space GB (see "
                        "--help)\n");
        return 2;
    }
    if (ea.max_model_len == 0) ea.max_model_len = seq * ea.block_size;
    struct engine_boot b;
    struct tl_err err;
    if (engine_boot_open(&ea, &b, &err) != TL_OK) {
        fprintf(stderr, "tierlm bench kv-tiers: %s\n", err.msg);
        return 1;
    }
    int rc = 1;
    struct kvswap *ks = b.kvswap;
    const struct ops *o = &b.be.ops;
    const struct hostmem *hm = kvswap_host(ks);
    struct kvswap_stats st;
    kvswap_stats(ks, &st);
    /* sequences of seq blocks: what the host tier, the device's blocks and --gib allow */
    int64_t blocks = (int64_t)(gib * 1073741824.0 / (double)o->kv_block_bytes);
    if (blocks > st.host_slots) blocks = st.host_slots;
    if (blocks > b.be.num_blocks - 1) blocks = b.be.num_blocks - 1;
    int n_seq = (int)(blocks / seq);
    if (n_seq < 1) {
        fprintf(stderr,
                "tierlm bench kv-tiers: room for no sequence of %d blocks (host tier %d "
                "blocks, device %d): raise --swap-space or lower --seq-blocks\n",
                seq, st.host_slots, b.be.num_blocks);
        goto out;
    }
    int n = n_seq * seq;
    size_t bytes = (size_t)n * o->kv_block_bytes;
    char crc_where[96];
    if (st.crc_on_device)
        snprintf(crc_where, sizeof crc_where, "on the %s beside its copies", o->name);
    else
        snprintf(crc_where, sizeof crc_where, "on the host (%s, --kv-crc-threads)", crc32c_impl());
    printf("KV tiers on %s: block %zu bytes, %d sequences of %d blocks = %.2f GiB per repeat, "
           "%d repeats (medians), CRC32C %s\n",
           o->name, o->kv_block_bytes, n_seq, seq, bytes / 1073741824.0, repeats, crc_where);
    double d2h = 0, h2d = 0;
    char cwhat[96];
    if (ceiling(b.be.cuda, bytes < ((size_t)1 << 30) ? bytes : (size_t)1 << 30, &d2h, &h2d, cwhat,
                sizeof cwhat) != 0)
        fprintf(stderr, "tierlm bench kv-tiers: the copy ceiling could not be measured\n");
    double *v = calloc((size_t)repeats * 10, sizeof *v);
    if (!v) goto out;
    double *c_out = v, *c_in = v + repeats, *s_out = v + 2 * repeats, *s_in = v + 3 * repeats;
    double *t_w = v + 4 * repeats, *t_r = v + 5 * repeats, *r_w = v + 6 * repeats,
           *r_r = v + 7 * repeats, *k_out = v + 8 * repeats, *k_in = v + 9 * repeats;
    bool has_crc = o->kv_copy_crc != NULL;
    for (int r = 0; r < repeats; r++) {
        double os, is;
        if (copy_rates(o, hm, n, false, &c_out[r], &c_in[r]) != 0 ||
            (has_crc && copy_rates(o, hm, n, true, &k_out[r], &k_in[r]) != 0) ||
            swap_round(ks, n_seq, seq, &os, &is) != 0) {
            fprintf(stderr, "tierlm bench kv-tiers: a transfer failed: %s\n",
                    o->last_error(o->ctx));
            free(v);
            goto out;
        }
        s_out[r] = (double)bytes / os;
        s_in[r] = (double)bytes / is;
    }
    printf("\n%-36s %13s  %-34s %13s  %5s\n", "what", "measured", "ceiling (same run)", "",
           "ratio");
    row("kv_copy out (one batch)", median(c_out, repeats), cwhat, d2h);
    row("kv_copy in (one batch)", median(c_in, repeats), cwhat, h2d);
    if (has_crc) {
        row("kv_copy_crc out (copies + GPU CRC)", median(k_out, repeats), cwhat, d2h);
        row("kv_copy_crc in (copies + GPU CRC)", median(k_in, repeats), cwhat, h2d);
    }
    row(st.crc_on_device ? "swap-out: copies out + CRC32C (GPU)" : "swap-out: copies out + CRC32C",
        median(s_out, repeats), cwhat, d2h);
    row(st.crc_on_device ? "swap-in: copies in + CRC32C (GPU)" : "swap-in: copies in + CRC32C",
        median(s_in, repeats), cwhat, h2d);
    if (kvswap_nvme_tier(ks)) {
        struct tier *t = kvswap_nvme_tier(ks);
        int m = n < st.nvme_slots ? n : st.nvme_slots;
        bool direct = false, fixed = false;
        /* the ceiling streams 1 MiB requests (or the tier's, when larger) at depth 32 */
        size_t raw_req = t->io_bytes > ((size_t)1 << 20) ? t->io_bytes : (size_t)1 << 20;
        size_t raw_bytes = (size_t)m * t->io_bytes;
        if (raw_bytes < 32 * raw_req) raw_bytes = 32 * raw_req;
        for (int r = 0; r < repeats; r++) {
            if (tier_rates(ks, m, &t_w[r], &t_r[r]) != 0 ||
                raw_uring(ea.nvme_swap_dir, raw_bytes, raw_req, 32, &r_w[r], &r_r[r], &direct,
                          &fixed) != 0) {
                fprintf(stderr, "tierlm bench kv-tiers: NVMe I/O failed in %s\n", ea.nvme_swap_dir);
                free(v);
                goto out;
            }
        }
        char rw[96], rr[96];
        snprintf(rw, sizeof rw, "io_uring %s write", direct ? "O_DIRECT" : "buffered");
        snprintf(rr, sizeof rr, "io_uring %s read", direct ? "O_DIRECT" : "buffered");
        printf("(NVMe in %s: the tier moves %d blocks of %zu bytes each way; the ceiling streams "
               "%.0f MiB in %zu KiB requests at depth 32, %s buffers%s)\n",
               ea.nvme_swap_dir, m, t->io_bytes, raw_bytes / 1048576.0, raw_req >> 10,
               fixed ? "registered" : "plain",
               direct ? "" : "; the file system refused O_DIRECT: buffered I/O on both sides");
        row("NVMe tier write (registered bufs)", median(t_w, repeats), rw, median(r_w, repeats));
        row("NVMe tier read", median(t_r, repeats), rr, median(r_r, repeats));
    }
    row(st.crc_on_device ? "host CRC32C, 1 thread (start-up calib.)"
                         : "host CRC32C, all threads (start-up calib.)",
        st.crc_bps, "", 0);
    free(v);
    rc = 0;
out:
    engine_boot_close(&b);
    return rc;
}
