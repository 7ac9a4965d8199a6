/* tp_launch: starting tensor-parallel ranks as processes and running one (tp_launch.h). The
 * worker learns everything but its rank from rank 0's blob, so every rank builds the same
 * shard layout from the same model directory whatever flags its own command line had. */
#include "tp_launch.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cpu_ops.h"
#include "forward.h"
#include "tp.h"
#ifdef TL_HAVE_NCCL
#include "gpu_backend.h"
#include "tp_nccl.h"
#endif

#define CONNECT_TIMEOUT_S 120.0

void tp_dist_default(struct tp_dist_args *d) {
    *d = (struct tp_dist_args){.nnodes = 1, .master_addr = "127.0.0.1", .master_port = -1};
}

static int int_arg(const char *flag, const char *v, int lo, int hi, int *out, struct tl_err *err) {
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < lo || x > hi) {
        tl_fail(err, TL_ERR_INVALID, "%s must be an integer in %d..%d, got '%s'", flag, lo, hi,
                v ? v : "");
        return -1;
    }
    *out = (int)x;
    return 1;
}

int tp_dist_flag(const char *flag, const char *v, struct tp_dist_args *d, bool *used_value,
                 struct tl_err *err) {
    *used_value = true;
    if (!strcmp(flag, "--tp-processes")) {
        *used_value = false;
        d->processes = true;
        return 1;
    }
    if (!strcmp(flag, "--nnodes")) return int_arg(flag, v, 1, TP_MAX_WORLD, &d->nnodes, err);
    if (!strcmp(flag, "--node-rank"))
        return int_arg(flag, v, 0, TP_MAX_WORLD - 1, &d->node_rank, err);
    if (!strcmp(flag, "--master-port")) return int_arg(flag, v, 1, 65535, &d->master_port, err);
    if (!strcmp(flag, "--master-addr")) {
        if (!v || !*v) {
            tl_fail(err, TL_ERR_INVALID, "--master-addr needs a host name or address");
            return -1;
        }
        d->master_addr = v;
        return 1;
    }
    *used_value = false;
    return 0;
}

bool tp_dist_uses_processes(const struct tp_dist_args *d, int tp) {
    return tp > 1 && (d->processes || d->nnodes > 1);
}

enum tl_status tp_dist_check(const struct tp_dist_args *d, int tp, const char *device,
                             struct tl_err *err) {
    if (d->node_rank >= d->nnodes)
        return tl_fail(err, TL_ERR_INVALID, "--node-rank %d must be below --nnodes %d",
                       d->node_rank, d->nnodes);
    if (d->nnodes > 1 && tp % d->nnodes)
        return tl_fail(err, TL_ERR_INVALID,
                       "--tensor-parallel-size %d must be divisible by --nnodes %d (each node "
                       "runs the same number of ranks)",
                       tp, d->nnodes);
    if (d->nnodes > 1 && tp < 2)
        return tl_fail(err, TL_ERR_INVALID,
                       "--nnodes %d needs --tensor-parallel-size of at least 2", d->nnodes);
#ifndef TL_HAVE_NCCL
    if (tp_dist_uses_processes(d, tp) && strcmp(device, "cpu"))
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "--tp-processes / --nnodes off the CPU need NCCL, which this build was "
                       "configured without");
#else
    (void)device;
#endif
    return TL_OK;
}

enum tl_status tp_launch_spawn(const char *addr, int port, int first, int count, int world,
                               pid_t *pids, struct tl_err *err) {
    pid_t parent = getpid();
    fflush(NULL);
    for (int r = first; r < first + count; r++) {
        char ps[16], rs[16], ws[16];
        snprintf(ps, sizeof ps, "%d", port);
        snprintf(rs, sizeof rs, "%d", r);
        snprintf(ws, sizeof ws, "%d", world);
        pid_t pid = fork();
        if (pid < 0)
            return tl_fail(err, TL_ERR_NOMEM, "cannot start tensor parallel rank %d: %s", r,
                           strerror(errno));
        if (pid == 0) {
            /* no orphans: the worker ends when the process that started it does */
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent) _exit(1);
            execl("/proc/self/exe", "tierlm", "tp-worker", "--master-addr", addr, "--master-port",
                  ps, "--rank", rs, "--world", ws, (char *)NULL);
            fprintf(stderr, "tierlm: cannot exec /proc/self/exe for rank %d: %s\n", r,
                    strerror(errno));
            _exit(127);
        }
        pids[r] = pid;
    }
    return TL_OK;
}

bool tp_launch_alive(void *user, struct tl_err *why) {
    struct tp_launch_kids *k = user;
    for (int r = 0; r < k->n; r++) {
        int ws;
        if (k->pids[r] <= 0 || waitpid(k->pids[r], &ws, WNOHANG) != k->pids[r]) continue;
        k->pids[r] = 0;
        tl_fail(why, TL_ERR_INTERNAL,
                "tensor parallel rank %d exited (status %d) before it joined the group", r,
                WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws));
        return false;
    }
    return true;
}

int tp_launch_reap(pid_t *pids, int n, double timeout_s) {
    int ok = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < n; r++) {
        while (pids[r] > 0) {
            int ws;
            pid_t w = waitpid(pids[r], &ws, WNOHANG);
            if (w == pids[r] || (w < 0 && errno != EINTR)) {
                ok += w == pids[r] && WIFEXITED(ws) && WEXITSTATUS(ws) == 0;
                pids[r] = 0;
                break;
            }
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec) >
                timeout_s) {
                kill(pids[r], SIGKILL);
                waitpid(pids[r], &ws, 0);
                pids[r] = 0;
                break;
            }
            nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
        }
    }
    return ok;
}

/* One worker's state. */
struct worker {
    struct tp_worker_cfg wc;
    struct model *m, *sh;
    const struct model *dev; /* what the forward runs: sh, or the GPU backend's copy (its own) */
    struct ops o;
    struct forward *f;
#ifdef TL_HAVE_NCCL
    struct tp_nccl *nccl;
#endif
};

/* Builds this rank's shard, backend and forward from rank 0's settings. */
static enum tl_status worker_build(struct worker *w, struct tp_net *g, int rank, int world,
                                   struct tl_err *err) {
    struct tp_worker_cfg *wc = &w->wc;
    size_t n = 0;
    enum tl_status st = tp_net_recv_blob(g, wc, sizeof *wc, &n, err);
    if (st != TL_OK) return st;
    if (n != sizeof *wc || !memchr(wc->model, 0, sizeof wc->model) || wc->max_tokens < 1 ||
        wc->max_seqs < 1 || wc->block_size < 1 || wc->num_blocks < 1 || wc->dtype < 0 ||
        wc->dtype > TL_DTYPE_COUNT || wc->per_node < 1 || wc->per_node > world)
        return tl_fail(err, TL_ERR_FORMAT, "rank 0's settings are malformed (another build?)");
    struct model_load_opts lo = {.format = (enum model_load_format)wc->load_format,
                                 .dtype = (enum tl_dtype)wc->dtype,
                                 .seed = 0,
                                 .n_threads = wc->threads};
    if ((st = model_load(wc->model, &lo, &w->m, err)) != TL_OK) return st;
    if ((st = tp_shard(w->m, world, rank, &w->sh, err)) != TL_OK) return st;
    w->dev = w->sh;
    if (wc->cuda) {
#ifdef TL_HAVE_NCCL
        struct gpu_backend_opts go = {.device = rank % wc->per_node,
                                      .gpu_memory_utilization = wc->gpu_util,
                                      .gpu_memory_gb = wc->gpu_gb,
                                      .dtype = (enum tl_dtype)wc->dtype,
                                      .block_size = wc->block_size,
                                      .max_model_len = wc->max_model_len,
                                      .max_tokens = wc->max_tokens,
                                      .max_seqs = wc->max_seqs,
                                      .num_blocks_override = wc->num_blocks,
                                      .enforce_eager = true};
        struct gpu_plan plan;
        if ((st = gpu_backend_create(w->sh, &go, &w->o, &w->dev, &plan, err)) != TL_OK) return st;
#else
        return tl_fail(err, TL_ERR_UNSUPPORTED, "this build has no NCCL: no GPU ranks");
#endif
    } else {
        struct cpu_backend_opts co = {.n_threads = wc->threads > 0 ? wc->threads : 1,
                                      .pin = false,
                                      .num_blocks = wc->num_blocks,
                                      .block_size = wc->block_size,
                                      .max_ctx = wc->max_model_len};
        if ((st = cpu_backend_create(&w->sh->cfg, &co, &w->o, err)) != TL_OK) return st;
    }
    if ((st = forward_create(w->dev, &w->o, wc->max_tokens, wc->max_seqs, &w->f, err)) != TL_OK)
        return st;
    return wc->cuda ? TL_OK : forward_set_collective(w->f, tp_net_collective(g), err);
}

int tp_worker_run(const char *addr, int port, int rank, int world) {
    struct tl_err err = {{0}};
    struct tp_net *g = NULL;
    struct worker w;
    memset(&w, 0, sizeof w);
    int rc = 1;
    if (tp_net_connect(addr, port, rank, world, CONNECT_TIMEOUT_S, &g, &err) != TL_OK) goto out;
    enum tl_status st = worker_build(&w, g, rank, world, &err);
    if (st != TL_OK) tl_err_prefix(&err, "tensor parallel rank %d", rank);
    /* a rank that could not build its shard tells rank 0 why, which reports it */
    if (tp_net_ready(g, st == TL_OK, err.msg, st == TL_OK ? &err : &(struct tl_err){{0}}) !=
            TL_OK ||
        st != TL_OK)
        goto out;
#ifdef TL_HAVE_NCCL
    if (w.wc.cuda && (tp_nccl_create(g, &w.o, rank % w.wc.per_node, &w.nccl, &err) != TL_OK ||
                      forward_set_collective(w.f, tp_nccl_collective(w.nccl), &err) != TL_OK))
        goto out;
#endif
    if (forward_serve(w.f, &err) == TL_OK) rc = 0;
out:
    if (rc) fprintf(stderr, "tierlm tp-worker: %s\n", err.msg);
    forward_destroy(w.f);
#ifdef TL_HAVE_NCCL
    tp_nccl_destroy(w.nccl);
    if (w.wc.cuda && w.o.ctx) gpu_backend_destroy(&w.o);
#endif
    if (!w.wc.cuda && w.o.ctx) cpu_backend_destroy(&w.o);
    model_free(w.sh);
    model_free(w.m);
    tp_net_destroy(g);
    return rc;
}

int cmd_tp_worker(int argc, char **argv) {
    const char *addr = NULL;
    int port = 0, rank = 0, world = 0;
    struct tl_err err = {{0}};
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int r = -1;
        if (!strcmp(argv[i], "--master-addr") && v)
            addr = v, r = 1;
        else if (!strcmp(argv[i], "--master-port"))
            r = int_arg(argv[i], v, 1, 65535, &port, &err);
        else if (!strcmp(argv[i], "--rank"))
            r = int_arg(argv[i], v, 1, TP_MAX_WORLD - 1, &rank, &err);
        else if (!strcmp(argv[i], "--world"))
            r = int_arg(argv[i], v, 2, TP_MAX_WORLD, &world, &err);
        else
            tl_fail(&err, TL_ERR_INVALID, "unknown flag '%s'", argv[i]);
        if (r < 0) {
            fprintf(stderr,
                    "tierlm tp-worker: %s\n(internal: rank 0 starts it as tp-worker "
                    "--master-addr A --master-port P --rank R --world N)\n",
                    err.msg);
            return 2;
        }
        i++;
    }
    if (!addr || !port || !rank || !world || rank >= world) {
        fprintf(stderr, "tierlm tp-worker: needs --master-addr, --master-port, --rank (1..world-1) "
                        "and --world (internal: rank 0 starts it)\n");
        return 2;
    }
    return tp_worker_run(addr, port, rank, world);
}

int tp_node_run(const struct tp_dist_args *d, int tp) {
    int per = tp / d->nnodes, first = d->node_rank * per;
    int port = d->master_port > 0 ? d->master_port : 29501;
    pid_t pids[TP_MAX_WORLD] = {0};
    struct tl_err err = {{0}};
    /* this process is the node's first rank; the others are its children */
    if (per > 1 &&
        tp_launch_spawn(d->master_addr, port, first + 1, per - 1, tp, pids, &err) != TL_OK) {
        fprintf(stderr, "tierlm: %s\n", err.msg);
        tp_launch_reap(pids + first + 1, per - 1, 0);
        return 1;
    }
    int rc = tp_worker_run(d->master_addr, port, first, tp);
    int ok = tp_launch_reap(pids + first + 1, per - 1, 30);
    return rc ? rc : ok == per - 1 ? 0 : 1;
}
