/* tp_net: the group of processes over TCP. One socket per peer on rank 0 (peer[q]), one to
 * rank 0 on the others (peer[0]). Every message is a 16-byte header (magic, type, payload
 * bytes, in network order) and a payload in host order: the ranks of one group run the same
 * build on the same kind of CPU. A reader knows what it expects next, so a header of another
 * type, a length other than the expected one or one over TP_NET_MAX_MSG_BYTES is a protocol
 * error; an ABORT in its place carries the aborting rank's reason. Rank 0 forwards a peer's
 * abort to the others, who wait on rank 0 only. */
#include "tp_net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "tp.h"

#define MAGIC       0x544c5450u /* "TLTP" */
#define VERSION     1u
#define WHY_MAX     512
#define HELLO_BYTES 12

enum msg_type {
    MSG_HELLO = 1,
    MSG_BLOB,
    MSG_READY,
    MSG_STEP,
    MSG_SHUTDOWN,
    MSG_ABORT,
    MSG_DATA,
};

struct tp_net {
    struct tl_collective coll;
    int rank, world, listen_fd, port;
    int peer[TP_MAX_WORLD]; /* rank 0: peer[q] is rank q's socket; others: peer[0] */
    bool broken, shut;
    char why[WHY_MAX + 64];
    char err[TL_ERR_MSG_MAX];
    float *stage, *tmp; /* host fp32, cap floats each */
    size_t cap;
    int32_t *msg; /* the last step received */
    size_t msg_cap;
    double call_timeout_s; /* a collective's wait for a peer's data (tp_net_set_call_timeout) */
};

static void set_sock_opts(int fd) {
    int one = 1;
    /* steps are small messages answered at once: no Nagle delay */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* a host that vanishes without closing the connection is noticed within ~90 s, also while
     * the group idles between steps (Linux's default would take two hours) */
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    int idle = 30, intvl = 10, cnt = 6;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

/* The deadline of a wait for a peer's data inside a collective (< 0: none). Every rank runs the
 * same step, so a peer that sends nothing for that long is stuck, not busy. */
static double call_deadline(const struct tp_net *g) {
    return g->call_timeout_s > 0 ? tl_now_s() + g->call_timeout_s : -1.0;
}

/* Writes all n bytes; false on error (errno set). MSG_NOSIGNAL: a dead peer is an error, not a
 * SIGPIPE. */
static bool write_full(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

/* Reads all n bytes. deadline < 0: wait as long as it takes. 1 done, 0 end of stream, -1 error
 * (errno; ETIMEDOUT past the deadline). */
static int read_full(int fd, void *p, size_t n, double deadline) {
    char *c = p;
    while (n > 0) {
        if (deadline >= 0) {
            double left = deadline - tl_now_s();
            struct pollfd pf = {.fd = fd, .events = POLLIN};
            int pr = left > 0 ? poll(&pf, 1, (int)(left * 1000) + 1) : 0;
            if (pr < 0 && errno == EINTR) continue;
            if (pr == 0) {
                errno = ETIMEDOUT;
                return -1;
            }
            if (pr < 0) return -1;
        }
        ssize_t r = recv(fd, c, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r == 0) return 0;
        if (r < 0) return -1;
        c += r;
        n -= (size_t)r;
    }
    return 1;
}

static bool send_msg(int fd, uint32_t type, const void *p, size_t n) {
    uint32_t h[4] = {htonl(MAGIC), htonl(type), htonl((uint32_t)((uint64_t)n >> 32)),
                     htonl((uint32_t)n)};
    return write_full(fd, h, sizeof h) && (n == 0 || write_full(fd, p, n));
}

static enum tl_status fail(struct tp_net *g, enum tl_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum tl_status fail(struct tp_net *g, enum tl_status st, const char *fmt, ...) {
    char m[TL_ERR_MSG_MAX - 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    snprintf(g->err, sizeof g->err, "tensor parallel rank %d: %s", g->rank, m);
    return st;
}

/* Marks the group failed and tells the peers (rank 0: all but `except`; others: rank 0). */
static void break_group(struct tp_net *g, const char *why, int except) {
    if (g->broken) return;
    g->broken = true;
    snprintf(g->why, sizeof g->why, "%.*s", WHY_MAX, why);
    size_t n = strlen(g->why);
    if (g->rank == 0) {
        for (int q = 1; q < g->world; q++)
            if (q != except && g->peer[q] >= 0) send_msg(g->peer[q], MSG_ABORT, g->why, n);
    } else if (g->peer[0] >= 0 && except != 0) {
        send_msg(g->peer[0], MSG_ABORT, g->why, n);
    }
}

static enum tl_status broken_err(struct tp_net *g) {
    return fail(g, TL_ERR_INTERNAL, "the group failed: %s", g->why);
}

/* Reads the next message from rank q's socket into buf: it must be of type `want` with exactly
 * `len` payload bytes, or (at_most) at most `len`; *got (may be NULL) gets its length.
 * MSG_SHUTDOWN where a step is awaited returns TL_OK with *shut set. An abort breaks the
 * group. deadline as read_full. */
static enum tl_status recv_msg(struct tp_net *g, int q, uint32_t want, void *buf, size_t len,
                               bool at_most, size_t *got, bool *shut, double deadline) {
    int fd = g->peer[g->rank == 0 ? q : 0];
    uint32_t h[4];
    int r = read_full(fd, h, sizeof h, deadline);
    if (r <= 0) {
        const char *what = r == 0 ? "closed its connection (did it exit?)" : strerror(errno);
        char why[WHY_MAX];
        if (r < 0 && errno == ETIMEDOUT && deadline >= 0)
            snprintf(why, sizeof why,
                     "rank %d sent nothing for %.3g s in the middle of a step (is it stuck?)", q,
                     g->call_timeout_s);
        else
            snprintf(why, sizeof why, "rank %d %s%s", q, r == 0 ? "" : "is unreachable: ", what);
        fail(g, TL_ERR_IO, "%s", why);
        break_group(g, why, q);
        return TL_ERR_IO;
    }
    uint32_t magic = ntohl(h[0]), type = ntohl(h[1]);
    uint64_t n = ((uint64_t)ntohl(h[2]) << 32) | ntohl(h[3]);
    char why[WHY_MAX + 128];
    if (magic != MAGIC) {
        snprintf(why, sizeof why, "rank %d sent something that is not a tierlm message", q);
        goto protocol;
    }
    if (type == MSG_ABORT) {
        char m[WHY_MAX + 1];
        if (n > WHY_MAX || read_full(fd, m, (size_t)n, deadline) <= 0) {
            snprintf(why, sizeof why, "rank %d aborted (its reason did not arrive)", q);
            goto protocol;
        }
        m[n] = 0;
        break_group(g, m, q);
        return broken_err(g);
    }
    if (type == MSG_SHUTDOWN && shut && n == 0) {
        *shut = true;
        return TL_OK;
    }
    if (type != want) {
        snprintf(why, sizeof why, "rank %d sent message type %u where %u was due", q, type, want);
        goto protocol;
    }
    if (at_most ? n > len : n != len) {
        snprintf(why, sizeof why, "rank %d sent %llu bytes where %s%zu were due", q,
                 (unsigned long long)n, at_most ? "at most " : "", len);
        goto protocol;
    }
    if (n > 0 && read_full(fd, buf, (size_t)n, deadline) <= 0) {
        snprintf(why, sizeof why, "rank %d closed its connection in the middle of a message", q);
        goto protocol;
    }
    if (got) *got = (size_t)n;
    return TL_OK;
protocol:
    fail(g, TL_ERR_FORMAT, "%s", why);
    break_group(g, why, -1);
    return TL_ERR_FORMAT;
}

/* Sends to rank q (rank 0) or to rank 0 (the others). */
static enum tl_status send_to(struct tp_net *g, int q, uint32_t type, const void *p, size_t n) {
    if (send_msg(g->peer[g->rank == 0 ? q : 0], type, p, n)) return TL_OK;
    char why[WHY_MAX];
    snprintf(why, sizeof why, "sending to rank %d failed: %s", g->rank == 0 ? q : 0,
             strerror(errno));
    fail(g, TL_ERR_IO, "%s", why);
    break_group(g, why, g->rank == 0 ? q : 0);
    return TL_ERR_IO;
}

static bool reserve(struct tp_net *g, size_t n) {
    if (n <= g->cap) return true;
    float *a = realloc(g->stage, n * sizeof *a);
    if (a) g->stage = a;
    float *b = realloc(g->tmp, n * sizeof *b);
    if (b) g->tmp = b;
    if (!a || !b) return false;
    g->cap = n;
    return true;
}

/* This rank's activations as fp32 into dst; on failure the group is broken. */
static enum tl_status stage_in(struct tp_net *g, const struct ops *o, const void *src, size_t n,
                               float *dst) {
    enum tl_status st = o->read_f32(o->ctx, src, n, dst);
    if (st != TL_OK) {
        fail(g, st, "reading activations failed: %s", o->last_error(o->ctx));
        break_group(g, g->err, -1);
    }
    return st;
}

static enum tl_status check_size(struct tp_net *g, size_t n, size_t per) {
    if (n > TP_NET_MAX_MSG_BYTES / sizeof(float) / per)
        return fail(g, TL_ERR_INVALID, "a collective of %zu values is over the %zu MiB limit", n,
                    TP_NET_MAX_MSG_BYTES >> 20);
    if (!reserve(g, n))
        return fail(g, TL_ERR_NOMEM, "out of host memory for the collective's staging buffer");
    return TL_OK;
}

static enum tl_status op_all_reduce_sum(void *ctx, const struct ops *o, void *buf, size_t n) {
    struct tp_net *g = ctx;
    if (g->broken) return broken_err(g);
    enum tl_status st = check_size(g, n, 1);
    if (st == TL_OK) st = stage_in(g, o, buf, n, g->stage);
    if (st != TL_OK) {
        break_group(g, g->err, -1);
        return st;
    }
    size_t bytes = n * sizeof(float);
    if (g->rank == 0) {
        /* as tp_local: rank 0's values, then each rank's added in rank order */
        float *sum = g->stage;
        for (int q = 1; q < g->world; q++) {
            if ((st = recv_msg(g, q, MSG_DATA, g->tmp, bytes, false, NULL, NULL,
                               call_deadline(g))) != TL_OK)
                return st;
            const float *s = g->tmp;
            for (size_t i = 0; i < n; i++) sum[i] += s[i];
        }
        for (int q = 1; q < g->world; q++)
            if ((st = send_to(g, q, MSG_DATA, sum, bytes)) != TL_OK) return st;
    } else {
        if ((st = send_to(g, 0, MSG_DATA, g->stage, bytes)) != TL_OK) return st;
        if ((st = recv_msg(g, 0, MSG_DATA, g->stage, bytes, false, NULL, NULL, call_deadline(g))) !=
            TL_OK)
            return st;
    }
    if ((st = o->write_f32(o->ctx, g->stage, n, buf)) != TL_OK) {
        fail(g, st, "writing activations failed: %s", o->last_error(o->ctx));
        break_group(g, g->err, -1);
    }
    return st;
}

static enum tl_status op_all_gather_f32(void *ctx, const struct ops *o, const void *src, size_t n,
                                        float *dst) {
    struct tp_net *g = ctx;
    if (g->broken) return broken_err(g);
    enum tl_status st = check_size(g, n, (size_t)g->world);
    if (st != TL_OK) {
        break_group(g, g->err, -1);
        return st;
    }
    size_t bytes = n * sizeof(float), all = bytes * (size_t)g->world;
    if (g->rank == 0) {
        if ((st = stage_in(g, o, src, n, dst)) != TL_OK) return st;
        for (int q = 1; q < g->world; q++)
            if ((st = recv_msg(g, q, MSG_DATA, dst + (size_t)q * n, bytes, false, NULL, NULL,
                               call_deadline(g))) != TL_OK)
                return st;
        for (int q = 1; q < g->world; q++)
            if ((st = send_to(g, q, MSG_DATA, dst, all)) != TL_OK) return st;
        return TL_OK;
    }
    if ((st = stage_in(g, o, src, n, g->stage)) != TL_OK) return st;
    if ((st = send_to(g, 0, MSG_DATA, g->stage, bytes)) != TL_OK) return st;
    return recv_msg(g, 0, MSG_DATA, dst, all, false, NULL, NULL, call_deadline(g));
}

static enum tl_status op_broadcast_step(void *ctx, const int32_t **msg, int *n) {
    struct tp_net *g = ctx;
    if (g->broken) return broken_err(g);
    if (g->rank == 0) {
        if (*n < 0 || (size_t)*n > TP_NET_MAX_MSG_BYTES / sizeof(int32_t))
            return fail(g, TL_ERR_INVALID, "a step message of %d values is over the limit", *n);
        for (int q = 1; q < g->world; q++) {
            enum tl_status st = send_to(g, q, MSG_STEP, *msg, (size_t)*n * sizeof(int32_t));
            if (st != TL_OK) return st;
        }
        return TL_OK;
    }
    /* the length comes first; the buffer grows only once it is known to be in bounds */
    int fd = g->peer[0];
    uint32_t h[4];
    int r = read_full(fd, h, sizeof h, -1);
    if (r <= 0) {
        fail(g, TL_ERR_IO, "rank 0 %s",
             r == 0 ? "closed its connection (did it exit?)" : strerror(errno));
        break_group(g, g->err, 0);
        return TL_ERR_IO;
    }
    uint32_t type = ntohl(h[1]);
    uint64_t len = ((uint64_t)ntohl(h[2]) << 32) | ntohl(h[3]);
    char why[WHY_MAX + 64];
    if (ntohl(h[0]) != MAGIC) {
        snprintf(why, sizeof why, "rank 0 sent something that is not a tierlm message");
        goto protocol;
    }
    if (type == MSG_SHUTDOWN && len == 0) {
        g->shut = true;
        *msg = NULL;
        *n = 0;
        return TL_OK;
    }
    if (type == MSG_ABORT) {
        char m[WHY_MAX + 1];
        if (len > WHY_MAX || read_full(fd, m, (size_t)len, -1) <= 0) {
            snprintf(why, sizeof why, "rank 0 aborted (its reason did not arrive)");
            goto protocol;
        }
        m[len] = 0;
        break_group(g, m, 0);
        return broken_err(g);
    }
    if (type != MSG_STEP || len == 0 || len % sizeof(int32_t) || len > TP_NET_MAX_MSG_BYTES) {
        snprintf(why, sizeof why, "rank 0 sent a malformed step header (type %u, %llu bytes)", type,
                 (unsigned long long)len);
        goto protocol;
    }
    if (len > g->msg_cap) {
        int32_t *p = realloc(g->msg, (size_t)len);
        if (!p) return fail(g, TL_ERR_NOMEM, "out of host memory for the step message");
        g->msg = p;
        g->msg_cap = (size_t)len;
    }
    if (read_full(fd, g->msg, (size_t)len, -1) <= 0) {
        snprintf(why, sizeof why, "rank 0 closed its connection in the middle of a step");
        goto protocol;
    }
    *msg = g->msg;
    *n = (int)(len / sizeof(int32_t));
    return TL_OK;
protocol:
    fail(g, TL_ERR_FORMAT, "%s", why);
    break_group(g, why, -1);
    return TL_ERR_FORMAT;
}

static void op_abort(void *ctx, const char *why) {
    break_group(ctx, why, -1);
}

static const char *op_last_error(void *ctx) {
    return ((struct tp_net *)ctx)->err;
}

static struct tp_net *group_new(int rank, int world) {
    struct tp_net *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->rank = rank;
    g->call_timeout_s = TP_NET_CALL_TIMEOUT_S;
    g->world = world;
    g->listen_fd = -1;
    for (int q = 0; q < TP_MAX_WORLD; q++) g->peer[q] = -1;
    g->coll = (struct tl_collective){.rank = rank,
                                     .world = world,
                                     .ctx = g,
                                     .last_error = op_last_error,
                                     .all_reduce_sum = op_all_reduce_sum,
                                     .all_gather_f32 = op_all_gather_f32,
                                     .broadcast_step = op_broadcast_step,
                                     .abort = op_abort};
    return g;
}

static enum tl_status resolve(const char *addr, int port, bool passive, struct addrinfo **res,
                              struct tl_err *err) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0};
    int rc = getaddrinfo(addr, ps, &hints, res);
    if (rc != 0)
        return tl_fail(err, TL_ERR_INVALID, "--master-addr %s: %s", addr ? addr : "(any)",
                       gai_strerror(rc));
    return TL_OK;
}

static enum tl_status check_world(int world, struct tl_err *err) {
    if (world < 2 || world > TP_MAX_WORLD)
        return tl_fail(err, TL_ERR_INVALID, "a group of processes has 2..%d ranks, not %d",
                       TP_MAX_WORLD, world);
    return TL_OK;
}

enum tl_status tp_net_listen(const char *addr, int port, int world, struct tp_net **out,
                             struct tl_err *err) {
    *out = NULL;
    enum tl_status st = check_world(world, err);
    if (st != TL_OK) return st;
    if (port < 0 || port > 65535)
        return tl_fail(err, TL_ERR_INVALID, "--master-port must be 0..65535, not %d", port);
    struct addrinfo *res = NULL;
    if ((st = resolve(addr, port, true, &res, err)) != TL_OK) return st;
    int fd = -1, e = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, TP_MAX_WORLD) != 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return tl_fail(err, TL_ERR_IO,
                       "tensor parallel rank 0 cannot listen on %s:%d: %s (another port: "
                       "--master-port)",
                       addr ? addr : "*", port, strerror(e));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    struct tp_net *g = group_new(0, world);
    if (!g) {
        close(fd);
        return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    }
    g->listen_fd = fd;
    g->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    *out = g;
    return TL_OK;
}

int tp_net_port(const struct tp_net *g) {
    return g->port;
}

static void put_u32(unsigned char *p, uint32_t v) {
    v = htonl(v);
    memcpy(p, &v, 4);
}

static uint32_t get_u32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return ntohl(v);
}

/* Reads one connection's HELLO: its rank, or -1 with why. */
static int read_hello(struct tp_net *g, int fd, double deadline, char *why, size_t wn) {
    uint32_t h[4];
    unsigned char p[HELLO_BYTES];
    if (read_full(fd, h, sizeof h, deadline) <= 0 || ntohl(h[0]) != MAGIC ||
        ntohl(h[1]) != MSG_HELLO || ntohl(h[2]) != 0 || ntohl(h[3]) != HELLO_BYTES ||
        read_full(fd, p, sizeof p, deadline) <= 0) {
        snprintf(why, wn, "it did not introduce itself as a tierlm rank");
        return -1;
    }
    uint32_t ver = get_u32(p), rank = get_u32(p + 4), world = get_u32(p + 8);
    if (ver != VERSION) {
        snprintf(why, wn, "protocol version %u, this build speaks %u", ver, VERSION);
        return -1;
    }
    if (world != (uint32_t)g->world || rank < 1 || rank >= world) {
        snprintf(why, wn, "it is rank %u of %u, this group has %d ranks", rank, world, g->world);
        return -1;
    }
    if (g->peer[rank] >= 0) {
        snprintf(why, wn, "rank %u is connected already", rank);
        return -1;
    }
    return (int)rank;
}

enum tl_status tp_net_accept(struct tp_net *g, double timeout_s,
                             bool (*alive)(void *user, struct tl_err *why), void *user,
                             struct tl_err *err) {
    double deadline = tl_now_s() + timeout_s;
    int joined = 1;
    char rejected[256] = "";
    while (joined < g->world) {
        if (alive && !alive(user, err)) return TL_ERR_INTERNAL;
        double left = deadline - tl_now_s();
        if (left <= 0)
            return tl_fail(err, TL_ERR_IO,
                           "tensor parallel rank 0: %d of %d ranks connected to port %d within "
                           "%.0f s%s%s (check --master-addr / --master-port and that every node "
                           "runs)",
                           joined, g->world, g->port, timeout_s, rejected[0] ? "; " : "", rejected);
        struct pollfd pf = {.fd = g->listen_fd, .events = POLLIN};
        int pr = poll(&pf, 1, left < 0.1 ? (int)(left * 1000) + 1 : 100);
        if (pr <= 0) continue;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(g->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
        if (fd < 0) continue;
        set_sock_opts(fd);
        char host[NI_MAXHOST] = "?", why[160];
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, NULL, 0, NI_NUMERICHOST);
        double hd = tl_now_s() + 5.0 < deadline ? tl_now_s() + 5.0 : deadline;
        int q = read_hello(g, fd, hd, why, sizeof why);
        unsigned char p[HELLO_BYTES];
        put_u32(p, VERSION), put_u32(p + 4, 0), put_u32(p + 8, (uint32_t)g->world);
        if (q < 0 || !send_msg(fd, MSG_HELLO, p, sizeof p)) {
            /* a stranger (or a port scan) does not end the group: rank 0 waits on */
            snprintf(rejected, sizeof rejected, "rejected a connection from %.64s: %.150s", host,
                     q < 0 ? why : "it closed");
            close(fd);
            continue;
        }
        g->peer[q] = fd;
        joined++;
    }
    close(g->listen_fd);
    g->listen_fd = -1;
    return TL_OK;
}

enum tl_status tp_net_connect(const char *addr, int port, int rank, int world, double timeout_s,
                              struct tp_net **out, struct tl_err *err) {
    *out = NULL;
    enum tl_status st = check_world(world, err);
    if (st != TL_OK) return st;
    if (rank < 1 || rank >= world)
        return tl_fail(err, TL_ERR_INVALID, "rank %d of %d cannot connect to rank 0", rank, world);
    if (port < 1 || port > 65535)
        return tl_fail(err, TL_ERR_INVALID, "--master-port must be 1..65535, not %d", port);
    struct addrinfo *res = NULL;
    if ((st = resolve(addr, port, false, &res, err)) != TL_OK) return st;
    double deadline = tl_now_s() + timeout_s;
    int fd = -1, e = 0;
    while (fd < 0) {
        for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
            fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
            if (fd < 0) continue;
            if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
                e = errno;
                close(fd);
                fd = -1;
            }
        }
        if (fd >= 0 || tl_now_s() >= deadline) break;
        nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL); /* rank 0 may start later */
    }
    freeaddrinfo(res);
    if (fd < 0)
        return tl_fail(err, TL_ERR_IO,
                       "tensor parallel rank %d cannot reach rank 0 at %s:%d within %.0f s: %s "
                       "(is node 0 running? check --master-addr / --master-port)",
                       rank, addr, port, timeout_s, strerror(e));
    set_sock_opts(fd);
    struct tp_net *g = group_new(rank, world);
    if (!g) {
        close(fd);
        return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    }
    g->peer[0] = fd;
    unsigned char p[HELLO_BYTES];
    put_u32(p, VERSION), put_u32(p + 4, (uint32_t)rank), put_u32(p + 8, (uint32_t)world);
    if (!send_msg(fd, MSG_HELLO, p, sizeof p) ||
        recv_msg(g, 0, MSG_HELLO, p, sizeof p, false, NULL, NULL, deadline + 5.0) != TL_OK ||
        get_u32(p) != VERSION || get_u32(p + 8) != (uint32_t)world) {
        tl_fail(err, TL_ERR_IO,
                "tensor parallel rank %d: %s:%d did not accept it as a rank of a %d-rank group "
                "(another program on that port, or node 0 runs another --tensor-parallel-size?)",
                rank, addr, port, world);
        tp_net_destroy(g);
        return TL_ERR_IO;
    }
    *out = g;
    return TL_OK;
}

static enum tl_status out_err(struct tp_net *g, enum tl_status st, struct tl_err *err) {
    return tl_fail(err, st, "%s", g->err);
}

enum tl_status tp_net_send_blob(struct tp_net *g, const void *buf, size_t n, struct tl_err *err) {
    if (g->rank != 0 || n > TP_NET_MAX_MSG_BYTES)
        return tl_fail(err, TL_ERR_INVALID, "tp_net_send_blob: rank 0 sends up to %zu bytes",
                       TP_NET_MAX_MSG_BYTES);
    for (int q = 1; q < g->world; q++)
        if (send_to(g, q, MSG_BLOB, buf, n) != TL_OK) return out_err(g, TL_ERR_IO, err);
    return TL_OK;
}

enum tl_status tp_net_recv_blob(struct tp_net *g, void *buf, size_t cap, size_t *n,
                                struct tl_err *err) {
    if (g->rank == 0) return tl_fail(err, TL_ERR_INVALID, "tp_net_recv_blob: rank 0 sends");
    enum tl_status st = recv_msg(g, 0, MSG_BLOB, buf, cap, true, n, NULL, -1);
    return st == TL_OK ? TL_OK : out_err(g, st, err);
}

enum tl_status tp_net_ready(struct tp_net *g, bool ok, const char *why, struct tl_err *err) {
    char m[WHY_MAX + 1];
    if (g->rank != 0) {
        m[0] = ok ? 1 : 0;
        snprintf(m + 1, sizeof m - 1, "%s", ok || !why ? "" : why);
        if (send_to(g, 0, MSG_READY, m, 1 + strlen(m + 1)) != TL_OK)
            return out_err(g, TL_ERR_IO, err);
        return TL_OK;
    }
    enum tl_status st = TL_OK;
    for (int q = 1; q < g->world && st == TL_OK; q++) {
        size_t got = 0;
        if ((st = recv_msg(g, q, MSG_READY, m, WHY_MAX, true, &got, NULL, -1)) != TL_OK)
            return out_err(g, st, err);
        if (got < 1 || m[0] != 1) {
            m[got > 0 ? got : 1] = 0;
            st = tl_fail(err, TL_ERR_INTERNAL, "tensor parallel rank %d: %s", q,
                         got > 1 ? m + 1 : "not ready");
            break_group(g, err->msg, -1);
        }
    }
    if (st == TL_OK && !ok) {
        st = tl_fail(err, TL_ERR_INTERNAL, "%s", why ? why : "rank 0 is not ready");
        break_group(g, err->msg, -1);
    }
    return st;
}

const struct tl_collective *tp_net_collective(struct tp_net *g) {
    return &g->coll;
}

void tp_net_shutdown(struct tp_net *g) {
    if (!g || g->rank != 0 || g->shut) return;
    g->shut = true;
    if (g->broken) return; /* the peers heard the abort */
    for (int q = 1; q < g->world; q++)
        if (g->peer[q] >= 0) send_msg(g->peer[q], MSG_SHUTDOWN, NULL, 0);
}

void tp_net_destroy(struct tp_net *g) {
    if (!g) return;
    tp_net_shutdown(g);
    if (g->listen_fd >= 0) close(g->listen_fd);
    for (int q = 0; q < TP_MAX_WORLD; q++)
        if (g->peer[q] >= 0) close(g->peer[q]);
    free(g->stage);
    free(g->tmp);
    free(g->msg);
    free(g);
}

void tp_net_set_call_timeout(struct tp_net *g, double seconds) {
    g->call_timeout_s = seconds;
}
