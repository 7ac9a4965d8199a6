/* tp_launch: tensor-parallel ranks as processes. Rank 0 (the user's process) forks and execs
 * /proc/self/exe as `tierlm tp-worker` for the other ranks of its node; node ranks > 0 (the
 * same command run with --node-rank R on another host) start theirs the same way. Workers
 * connect to rank 0 over TCP (tp_net.h), get its settings (model dir, load format, KV and step
 * sizes) as a blob, load the model and build their own shard, then serve rank 0's steps until
 * it shuts the group down or dies (PR_SET_PDEATHSIG and the socket's end both stop them). */
#ifndef TL_CLI_TP_LAUNCH_H
#define TL_CLI_TP_LAUNCH_H

#include <stdbool.h>
#include <sys/types.h>

#include "model.h"
#include "status.h"
#include "tp_net.h"

/* The multi-process flags (vLLM's names). */
struct tp_dist_args {
    bool processes;          /* --tp-processes: one process per rank on this host */
    int nnodes, node_rank;   /* --nnodes [1], --node-rank [0] */
    const char *master_addr; /* --master-addr [127.0.0.1] */
    int master_port;         /* --master-port [29501; 0 on one node: a free port] */
};

void tp_dist_default(struct tp_dist_args *d);

/* Parses one of the flags above: 1 taken (*used_value says whether v was consumed), 0 not one
 * of them, -1 a bad value (err says why). */
int tp_dist_flag(const char *flag, const char *v, struct tp_dist_args *d, bool *used_value,
                 struct tl_err *err);

/* Refuses what cannot run: tp not divisible by nnodes, node rank out of range, several nodes
 * or processes on a device other than cpu. */
enum tl_status tp_dist_check(const struct tp_dist_args *d, int tp, const char *device,
                             struct tl_err *err);

/* True when ranks run as processes (--tp-processes or --nnodes > 1). */
bool tp_dist_uses_processes(const struct tp_dist_args *d, int tp);

/* What rank 0 tells the workers: the settings they build their shard and forward with. */
struct tp_worker_cfg {
    char model[4096];
    int32_t load_format, dtype, threads, block_size, num_blocks, max_model_len, max_tokens,
        max_seqs, quiet;
    int32_t cuda;     /* 1: one GPU per rank, device = rank % per_node, NCCL */
    int32_t per_node; /* ranks per node */
    double gpu_util, gpu_gb;
};

/* Rank 0's side: the workers of ranks [first, first + count) on this host, connecting to
 * addr:port. Each pid goes into pids[rank]. */
enum tl_status tp_launch_spawn(const char *addr, int port, int first, int count, int world,
                               pid_t *pids, struct tl_err *err);

/* An alive callback for tp_net_accept: false once one of the spawned children (user: a
 * struct tp_launch_kids) has exited. */
struct tp_launch_kids {
    pid_t *pids;
    int n;
};
bool tp_launch_alive(void *user, struct tl_err *why);

/* Waits up to timeout_s for the children, then kills what is left. Returns how many ended
 * with status 0. */
int tp_launch_reap(pid_t *pids, int n, double timeout_s);

/* Runs a worker rank in this process until the group ends; returns an exit code (0: rank 0
 * shut the group down). */
int tp_worker_run(const char *addr, int port, int rank, int world);

/* `tierlm tp-worker --master-addr A --master-port P --rank R --world N` (internal). */
int cmd_tp_worker(int argc, char **argv);

/* A node rank > 0: starts the ranks of its node (one in this process) and waits for them;
 * returns an exit code. */
int tp_node_run(const struct tp_dist_args *d, int tp);

#endif
