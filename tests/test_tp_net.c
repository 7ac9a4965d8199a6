/* test_tp_net: the tensor-parallel group of processes over TCP (tp_net.h) on the CPU backend.
 * Ranks 1..N-1 are forked processes that connect to the test's rank 0 on loopback and serve its
 * steps; rank 0's logits must be bit-identical to the in-process group's (tp_local: the same
 * fp32 sums in the same order) and within test_tp's tolerance of the unsharded model, N = 2, 4.
 * A rank that dies in the middle of a step, in either direction, ends the others' calls with an
 * error (an alarm fails the test instead of a hang), and garbage on the wire is an error. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "cpu_ops.h"
#include "fixture.h"
#include "forward.h"
#include "model.h"
#include "tp.h"
#include "tp_local.h"
#include "tp_net.h"

#define TOL_SHARD 1e-5 /* test_tp's bound: sharded against unsharded, fp32 */
#define BLOCK     4
#define NBLOCKS   64
#define V         500
#define STEPS     5
#define MAXW      4

static const char *QWEN2 =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":96,"
    "\"num_hidden_layers\":2,\"num_attention_heads\":8,\"num_key_value_heads\":2,"
    "\"vocab_size\":500,\"max_position_embeddings\":128,\"rms_norm_eps\":1e-6,"
    "\"rope_theta\":10000,\"tie_word_embeddings\":false,\"torch_dtype\":\"float32\"}";

static struct model *dummy(uint64_t seed) {
    struct tl_err err = {{0}};
    struct model *m = fixture_dummy_model(QWEN2, seed, TL_DTYPE_F32, &err);
    if (!m) fail_msg("dummy model: %s", err.msg);
    return m;
}

static enum tl_status lane_open(struct cpu_lane *l, const struct model *m, struct tl_err *err) {
    return cpu_lane_open(l, m, NBLOCKS, BLOCK, 64, 16, 2, err);
}

/* A fixed schedule (the same inputs for every run): A prefills 11 tokens beside B's first 3,
 * then both decode. Block tables are fixed: A blocks 0..7, B blocks 8..15. out gets rank 0's
 * logits, (STEPS, 2, V). */
static enum tl_status run_steps(struct forward *f, float *out, int steps, struct tl_err *err) {
    int32_t ba[8], bb[8];
    for (int i = 0; i < 8; i++) ba[i] = i, bb[i] = 8 + i;
    int na = 0, nb = 0;
    memset(out, 0, (size_t)STEPS * 2 * V * sizeof *out);
    for (int s = 0; s < steps; s++) {
        int32_t tok[16], pos[16];
        int ta = s == 0 ? 11 : 1, tb = s == 0 ? 3 : 1, nt = 0;
        for (int i = 0; i < ta; i++, nt++) tok[nt] = (37 * (na + i) + 5) % V, pos[nt] = na + i;
        for (int i = 0; i < tb; i++, nt++) tok[nt] = (91 * (nb + i) + 2) % V, pos[nt] = nb + i;
        struct fwd_seq fs[2] = {{ta, na, ba, (na + ta + BLOCK - 1) / BLOCK, 1},
                                {tb, nb, bb, (nb + tb + BLOCK - 1) / BLOCK, 1}};
        struct fwd_batch b = {2, fs, nt, tok, pos};
        enum tl_status st = forward_step(f, &b, out + (size_t)s * 2 * V, err);
        if (st != TL_OK) return st;
        na += ta, nb += tb;
    }
    return TL_OK;
}

/* A forked rank: connects, builds its shard and serves until rank 0 shuts the group down.
 * die >= 0: receives the first step's message and dies before its first all-reduce. */
static void child_rank(const struct model *m, int port, int rank, int world, int die) {
    struct tl_err err = {{0}};
    struct tp_net *g = NULL;
    struct model *sh = NULL;
    struct cpu_lane l = {0};
    alarm(60); /* a child that hangs is killed; the parent sees it in the exit status */
    if (tp_net_connect("127.0.0.1", port, rank, world, 10, &g, &err) != TL_OK ||
        tp_shard(m, world, rank, &sh, &err) != TL_OK || lane_open(&l, sh, &err) != TL_OK ||
        forward_set_collective(l.fw, tp_net_collective(g), &err) != TL_OK) {
        fprintf(stderr, "child rank %d: %s\n", rank, err.msg);
        _exit(2);
    }
    if (die >= 0) {
        const struct tl_collective *c = tp_net_collective(g);
        const int32_t *msg;
        int n;
        if (c->broadcast_step(c->ctx, &msg, &n) != TL_OK) _exit(2);
        _exit(3); /* mid-step: rank 0 and the others wait for this rank's partial sums */
    }
    enum tl_status st = forward_serve(l.fw, &err);
    if (st != TL_OK) fprintf(stderr, "child rank %d ends: %s\n", rank, err.msg);
    _exit(st == TL_OK ? 0 : 1);
}

/* Rank 0 of a group of processes: listens, forks ranks 1..world-1, accepts them. */
struct procs {
    struct tp_net *g;
    pid_t pid[MAXW];
    int world;
};

static void procs_open(struct procs *p, const struct model *m, int world, int die_rank) {
    struct tl_err err = {{0}};
    memset(p, 0, sizeof *p);
    p->world = world;
    if (tp_net_listen("127.0.0.1", 0, world, &p->g, &err) != TL_OK) fail_msg("%s", err.msg);
    int port = tp_net_port(p->g);
    fflush(NULL);
    for (int r = 1; r < world; r++) {
        p->pid[r] = fork();
        if (p->pid[r] == 0) child_rank(m, port, r, world, r == die_rank ? 0 : -1);
        assert_true(p->pid[r] > 0);
    }
    if (tp_net_accept(p->g, 20, NULL, NULL, &err) != TL_OK) fail_msg("accept: %s", err.msg);
}

/* Shuts the group down; returns how many children ended with status 0. */
static int procs_close(struct procs *p, int *codes) {
    tp_net_shutdown(p->g);
    int ok = 0;
    for (int r = 1; r < p->world; r++) {
        int ws = 0;
        assert_int_equal(waitpid(p->pid[r], &ws, 0), p->pid[r]);
        codes[r] = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
        ok += codes[r] == 0;
    }
    tp_net_destroy(p->g);
    return ok;
}

static void test_processes_equal_threads(void **state) {
    (void)state;
    struct model *m = dummy(7);
    size_t nlog = (size_t)STEPS * 2 * V;
    float *whole = malloc(nlog * sizeof *whole), *net = malloc(nlog * sizeof *net),
          *thr = malloc(nlog * sizeof *thr);
    struct tl_err err = {{0}};
    for (int world = 2; world <= MAXW; world *= 2) {
        /* processes first: fork before this process has any threads */
        struct procs p;
        procs_open(&p, m, world, -1);
        struct model *sh0 = NULL;
        struct cpu_lane l0;
        assert_int_equal(tp_shard(m, world, 0, &sh0, &err), TL_OK);
        assert_int_equal(lane_open(&l0, sh0, &err), TL_OK);
        assert_int_equal(forward_set_collective(l0.fw, tp_net_collective(p.g), &err), TL_OK);
        if (run_steps(l0.fw, net, STEPS, &err) != TL_OK) fail_msg("tcp group: %s", err.msg);
        int codes[MAXW];
        assert_int_equal(procs_close(&p, codes), world - 1);
        cpu_lane_close(&l0);
        model_free(sh0);

        struct tp_local *tl = NULL;
        struct model *sh[MAXW];
        struct cpu_lane l[MAXW];
        assert_int_equal(tp_local_create(world, &tl, &err), TL_OK);
        for (int r = 0; r < world; r++) {
            assert_int_equal(tp_shard(m, world, r, &sh[r], &err), TL_OK);
            assert_int_equal(lane_open(&l[r], sh[r], &err), TL_OK);
            assert_int_equal(forward_set_collective(l[r].fw, tp_local_collective(tl, r), &err),
                             TL_OK);
            if (r > 0) assert_int_equal(tp_local_serve(tl, r, l[r].fw, &err), TL_OK);
        }
        if (run_steps(l[0].fw, thr, STEPS, &err) != TL_OK) fail_msg("threads: %s", err.msg);
        assert_int_equal(tp_local_shutdown(tl, &err), TL_OK);
        for (int r = 0; r < world; r++) cpu_lane_close(&l[r]), model_free(sh[r]);
        tp_local_destroy(tl);

        struct cpu_lane w;
        assert_int_equal(lane_open(&w, m, &err), TL_OK);
        if (run_steps(w.fw, whole, STEPS, &err) != TL_OK) fail_msg("whole: %s", err.msg);
        cpu_lane_close(&w);

        if (memcmp(net, thr, nlog * sizeof *net) != 0)
            fail_msg("N=%d: the processes' logits differ from the threads' bits", world);
        double worst = 0;
        for (int s = 0; s < STEPS; s++)
            for (int i = 0; i < 2; i++) {
                size_t o = ((size_t)s * 2 + i) * V;
                double e = fixture_rel_err_f(net + o, whole + o, V);
                if (e > worst) worst = e;
            }
        printf("N=%d: processes == threads bit for bit; max rel err vs unsharded %.2e\n", world,
               worst);
        assert_true(worst <= TOL_SHARD);
    }
    free(whole);
    free(net);
    free(thr);
    model_free(m);
}

/* Rank 3 of 4 dies after receiving the first step's message: rank 0's step fails (the socket
 * closed) and ranks 1 and 2, waiting for rank 0's sums, get its abort and end with an error. */
static void test_worker_dies(void **state) {
    (void)state;
    struct model *m = dummy(3);
    size_t nlog = (size_t)STEPS * 2 * V;
    float *out = malloc(nlog * sizeof *out);
    struct tl_err err = {{0}};
    alarm(60); /* a hang fails the test */
    struct procs p;
    procs_open(&p, m, 4, 3);
    struct model *sh0 = NULL;
    struct cpu_lane l0;
    assert_int_equal(tp_shard(m, 4, 0, &sh0, &err), TL_OK);
    assert_int_equal(lane_open(&l0, sh0, &err), TL_OK);
    assert_int_equal(forward_set_collective(l0.fw, tp_net_collective(p.g), &err), TL_OK);
    assert_int_not_equal(run_steps(l0.fw, out, STEPS, &err), TL_OK);
    printf("rank 0: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "rank 3"));
    int codes[MAXW];
    assert_int_equal(procs_close(&p, codes), 0);
    assert_int_equal(codes[1], 1);
    assert_int_equal(codes[2], 1);
    assert_int_equal(codes[3], 3);
    alarm(0);
    cpu_lane_close(&l0);
    model_free(sh0);
    free(out);
    model_free(m);
}

/* Rank 0 sends one step and dies: rank 1's forward_serve returns an error. */
static void test_rank0_dies(void **state) {
    (void)state;
    struct model *m = dummy(3);
    struct tl_err err = {{0}};
    alarm(60);
    struct tp_net *g0 = NULL, *g1 = NULL;
    assert_int_equal(tp_net_listen("127.0.0.1", 0, 2, &g0, &err), TL_OK);
    int port = tp_net_port(g0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (tp_net_accept(g0, 10, NULL, NULL, &err) != TL_OK) _exit(2);
        /* one sequence, one token at position 0 in block 0 */
        static const int32_t step[] = {1, 1, 1, 0, 1, 1, 0, 3, 0};
        const int32_t *msg = step;
        int n = 9;
        const struct tl_collective *c = tp_net_collective(g0);
        if (c->broadcast_step(c->ctx, &msg, &n) != TL_OK) _exit(2);
        _exit(3);
    }
    assert_true(pid > 0);
    tp_net_destroy(g0); /* this process's copy: no peers, only the listening socket */
    assert_int_equal(tp_net_connect("127.0.0.1", port, 1, 2, 10, &g1, &err), TL_OK);
    struct model *sh = NULL;
    struct cpu_lane l;
    assert_int_equal(tp_shard(m, 2, 1, &sh, &err), TL_OK);
    assert_int_equal(lane_open(&l, sh, &err), TL_OK);
    assert_int_equal(forward_set_collective(l.fw, tp_net_collective(g1), &err), TL_OK);
    assert_int_not_equal(forward_serve(l.fw, &err), TL_OK);
    printf("rank 1: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "rank 0"));
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 3);
    alarm(0);
    cpu_lane_close(&l);
    model_free(sh);
    tp_net_destroy(g1);
    model_free(m);
}

static void put_header(unsigned char *h, uint32_t type, uint64_t n) {
    uint32_t w[4] = {htonl(0x544c5450u), htonl(type), htonl((uint32_t)(n >> 32)),
                     htonl((uint32_t)n)};
    memcpy(h, w, 16);
}

/* A raw client that introduces itself as rank 1 of 2 (when hello) and then writes tail. */
static void raw_client(int port, bool hello, const void *tail, size_t n) {
    alarm(30);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) _exit(2);
    if (hello) {
        unsigned char h[28];
        uint32_t p[3] = {htonl(1), htonl(1), htonl(2)};
        put_header(h, 1, 12);
        memcpy(h + 16, p, 12);
        if (write(fd, h, sizeof h) != (ssize_t)sizeof h) _exit(2);
        unsigned char r[28];
        if (recv(fd, r, sizeof r, MSG_WAITALL) != (ssize_t)sizeof r) _exit(2);
    }
    if (n && write(fd, tail, n) != (ssize_t)n) _exit(2);
    char c;
    while (read(fd, &c, 1) > 0) { /* until rank 0 closes */
    }
    _exit(0);
}

/* rank 0 against a peer that sends garbage: a stranger is rejected (rank 0 waits on, then
 * times out naming it); a rank whose data message announces 2^40 bytes, or is of the wrong
 * type, makes the collective fail without allocating it. */
static void test_garbage_to_rank0(void **state) {
    (void)state;
    struct tl_err err = {{0}};
    struct model *m = dummy(3), *sh = NULL;
    struct cpu_lane l;
    assert_int_equal(tp_shard(m, 2, 0, &sh, &err), TL_OK);
    assert_int_equal(lane_open(&l, sh, &err), TL_OK);
    float buf[64] = {1};
    for (int kind = 0; kind < 3; kind++) {
        struct tp_net *g = NULL;
        assert_int_equal(tp_net_listen("127.0.0.1", 0, 2, &g, &err), TL_OK);
        unsigned char h[16];
        if (kind == 1) put_header(h, 7 /* data */, (uint64_t)1 << 40);
        if (kind == 2) put_header(h, 3 /* ready */, sizeof buf);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            if (kind == 0) raw_client(tp_net_port(g), false, "GET / HTTP/1.0\r\n\r\n", 18);
            raw_client(tp_net_port(g), true, h, sizeof h);
        }
        enum tl_status st = tp_net_accept(g, kind == 0 ? 1.5 : 10, NULL, NULL, &err);
        if (kind == 0) {
            assert_int_not_equal(st, TL_OK);
            printf("stranger: %s\n", err.msg);
            assert_non_null(strstr(err.msg, "rejected a connection from 127.0.0.1"));
        } else {
            assert_int_equal(st, TL_OK);
            const struct tl_collective *c = tp_net_collective(g);
            assert_int_equal(c->all_reduce_sum(c->ctx, &l.ops, buf, 64), TL_ERR_FORMAT);
            printf("garbage %d: %s\n", kind, c->last_error(c->ctx));
            assert_non_null(strstr(c->last_error(c->ctx), "rank 1 sent"));
            /* broken for good */
            assert_int_not_equal(c->all_reduce_sum(c->ctx, &l.ops, buf, 64), TL_OK);
        }
        tp_net_destroy(g);
        int ws = 0;
        assert_int_equal(waitpid(pid, &ws, 0), pid);
    }
    cpu_lane_close(&l);
    model_free(sh);
    model_free(m);
}

/* A rank against a "rank 0" that sends a step of 2^40 bytes, one of 6 bytes, or an unknown
 * type: broadcast_step fails cleanly. */
static void test_garbage_to_worker(void **state) {
    (void)state;
    struct tl_err err = {{0}};
    for (int kind = 0; kind < 3; kind++) {
        int ls = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t al = sizeof a;
        assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
        assert_int_equal(listen(ls, 4), 0);
        assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &al), 0);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            alarm(30);
            int fd = accept(ls, NULL, NULL);
            unsigned char hello[28], h[16];
            if (fd < 0 || recv(fd, hello, sizeof hello, MSG_WAITALL) != (ssize_t)sizeof hello)
                _exit(2);
            uint32_t p[3] = {htonl(1), htonl(0), htonl(2)};
            put_header(hello, 1, 12);
            memcpy(hello + 16, p, 12);
            put_header(h, kind == 2 ? 99 : 4 /* step */, kind == 0 ? (uint64_t)1 << 40 : 6);
            if (write(fd, hello, sizeof hello) != (ssize_t)sizeof hello ||
                write(fd, h, sizeof h) != (ssize_t)sizeof h)
                _exit(2);
            char c;
            while (read(fd, &c, 1) > 0) {
            }
            _exit(0);
        }
        close(ls);
        struct tp_net *g = NULL;
        assert_int_equal(tp_net_connect("127.0.0.1", ntohs(a.sin_port), 1, 2, 10, &g, &err), TL_OK);
        const struct tl_collective *c = tp_net_collective(g);
        const int32_t *msg = NULL;
        int n = -1;
        assert_int_equal(c->broadcast_step(c->ctx, &msg, &n), TL_ERR_FORMAT);
        printf("step garbage %d: %s\n", kind, c->last_error(c->ctx));
        assert_non_null(strstr(c->last_error(c->ctx), "malformed step header"));
        tp_net_destroy(g);
        int ws = 0;
        assert_int_equal(waitpid(pid, &ws, 0), pid);
    }
}

/* A rank that joins and then stays alive without ever sending its partial sums: rank 0's
 * all-reduce gives up after the call timeout, naming the rank as stuck, and the group stays
 * failed. */
static void test_worker_hangs(void **state) {
    (void)state;
    struct tl_err err = {{0}};
    struct model *m = dummy(5), *sh = NULL;
    struct cpu_lane l;
    assert_int_equal(tp_shard(m, 2, 0, &sh, &err), TL_OK);
    assert_int_equal(lane_open(&l, sh, &err), TL_OK);
    struct tp_net *g = NULL;
    assert_int_equal(tp_net_listen("127.0.0.1", 0, 2, &g, &err), TL_OK);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) raw_client(tp_net_port(g), true, NULL, 0); /* joins, then only listens */
    assert_int_equal(tp_net_accept(g, 10, NULL, NULL, &err), TL_OK);
    tp_net_set_call_timeout(g, 0.5);
    const struct tl_collective *c = tp_net_collective(g);
    float buf[64] = {1};
    alarm(30); /* a hang fails the test */
    assert_int_not_equal(c->all_reduce_sum(c->ctx, &l.ops, buf, 64), TL_OK);
    alarm(0);
    printf("stuck rank: %s\n", c->last_error(c->ctx));
    assert_non_null(strstr(c->last_error(c->ctx), "rank 1 sent nothing for 0.5 s"));
    assert_int_not_equal(c->all_reduce_sum(c->ctx, &l.ops, buf, 64), TL_OK);
    tp_net_destroy(g); /* closes the socket: the client's read ends, it exits */
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    cpu_lane_close(&l);
    model_free(sh);
    model_free(m);
}

/* Nobody listening: the connect gives up after its timeout, naming the address. */
static void test_connect_timeout(void **state) {
    (void)state;
    struct tl_err err = {{0}};
    struct tp_net *g = NULL;
    assert_int_not_equal(tp_net_connect("127.0.0.1", 1, 1, 2, 0.3, &g, &err), TL_OK);
    assert_null(g);
    assert_non_null(strstr(err.msg, "cannot reach rank 0 at 127.0.0.1:1"));
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_processes_equal_threads),
        cmocka_unit_test(test_worker_dies),
        cmocka_unit_test(test_rank0_dies),
        cmocka_unit_test(test_garbage_to_rank0),
        cmocka_unit_test(test_garbage_to_worker),
        cmocka_unit_test(test_worker_hangs),
        cmocka_unit_test(test_connect_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
