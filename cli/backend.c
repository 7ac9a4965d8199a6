/* backend: CPU or CUDA behind the same op table. auto takes the GPU when this build has the
 * CUDA backend and a device answers. */
#include "backend.h"

#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "matmul.h"
#include "pool.h"
#include "tp.h"
#include "tp_local.h"
#include "tp_net.h"
#ifdef TL_HAVE_CUDA
#include "gpu_backend.h"
#include "kern.h"
#endif
#ifdef TL_HAVE_NCCL
#include "tp_nccl.h"
#endif

bool backend_cuda_available(void) {
    return backend_gpu_count() > 0;
}

int backend_gpu_count(void) {
#ifdef TL_HAVE_CUDA
    return kern_device_count();
#else
    return 0;
#endif
}

/* The ranks 1..world-1 of an in-process tensor-parallel group (rank 0 is the backend's own ops
 * and model). */
struct backend_tp {
    int world;
    struct tp_local *group; /* threads, or: */
    struct tp_net *net;     /* processes (ranks 1.. in workers; pids of this node's) */
    pid_t *pids;            /* (world) 0: not a child of this process */
#ifdef TL_HAVE_NCCL
    struct tp_nccl *nccl; /* GPUs: the collective over net */
#endif
    struct model **shard; /* (world) owned */
    struct ops *ops;      /* (world) [0] unused: rank 0's are backend.ops */
    struct forward **fwd; /* (world) [0] NULL: rank 0's is the caller's */
};

enum tl_status backend_tp_check(const struct config *c, const char *device, int n,
                                struct tl_err *err) {
    if (n <= 1) return TL_OK;
    enum tl_status st = tp_check(c, n, err);
    if (st != TL_OK) return st;
    if (!strcmp(device, "cpu")) return TL_OK;
    int gpus = backend_gpu_count();
    if (gpus < n)
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "--tensor-parallel-size %d needs %d GPUs, %d visible (--device cpu runs "
                       "the %d shards in threads of this process instead)",
                       n, n, gpus, n);
#ifdef TL_HAVE_NCCL
    return TL_OK;
#else
    return tl_fail(err, TL_ERR_UNSUPPORTED,
                   "--tensor-parallel-size %d: tensor parallelism over GPUs needs NCCL, which this "
                   "build was configured without; --device cpu runs the %d shards on the CPU",
                   n, n);
#endif
}

static void tp_close(struct backend_tp *t) {
    if (!t) return;
#ifdef TL_HAVE_NCCL
    tp_nccl_destroy(t->nccl);
#endif
    if (t->net) {
        tp_net_shutdown(t->net);
        if (t->pids) tp_launch_reap(t->pids, t->world, 30);
        tp_net_destroy(t->net);
        free(t->pids);
    }
    if (t->group) tp_local_shutdown(t->group, NULL);
    for (int r = 1; r < t->world; r++) {
        if (t->fwd) forward_destroy(t->fwd[r]);
        if (t->ops && t->ops[r].ctx) cpu_backend_destroy(&t->ops[r]);
    }
    free(t->fwd);
    free(t->ops);
    for (int r = 0; t->shard && r < t->world; r++) model_free(t->shard[r]);
    free(t->shard);
    tp_local_destroy(t->group);
    free(t);
}

/* --device cpu --tensor-parallel-size N: N shards, each with its own CPU backend (threads / N
 * workers, unpinned: N pools would pin to the same cores) and KV cache of nb blocks; ranks
 * 1..N-1 get their forward and a thread that serves rank 0's steps. */
static enum tl_status open_tp_cpu(const struct model *m, const struct backend_args *a, int nb,
                                  struct backend *b, struct tl_err *err) {
    int n = a->tensor_parallel_size;
    enum tl_status st = backend_tp_check(&m->cfg, "cpu", n, err);
    if (st != TL_OK) return st;
    struct backend_tp *t = calloc(1, sizeof *t);
    if (!t) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    b->tp = t;
    t->world = n;
    t->shard = calloc((size_t)n, sizeof *t->shard);
    t->ops = calloc((size_t)n, sizeof *t->ops);
    t->fwd = calloc((size_t)n, sizeof *t->fwd);
    if (!t->shard || !t->ops || !t->fwd) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    if ((st = tp_local_create(n, &t->group, err)) != TL_OK) return st;
    int cores = a->threads > 0 ? a->threads : pool_physical_cores();
    struct cpu_backend_opts co = {.n_threads = cores / n > 0 ? cores / n : 1,
                                  .pin = false,
                                  .num_blocks = nb,
                                  .block_size = a->block_size,
                                  .max_ctx = a->max_model_len};
    for (int r = 0; r < n; r++) {
        if ((st = tp_shard(m, n, r, &t->shard[r], err)) != TL_OK) return st;
        struct ops *o = r == 0 ? &b->ops : &t->ops[r];
        if ((st = cpu_backend_create(&t->shard[r]->cfg, &co, o, err)) != TL_OK) return st;
        if (r == 0) continue;
        st = forward_create(t->shard[r], o, a->max_tokens, a->max_seqs, &t->fwd[r], err);
        if (st == TL_OK)
            st = forward_set_collective(t->fwd[r], tp_local_collective(t->group, r), err);
        if (st == TL_OK) st = tp_local_serve(t->group, r, t->fwd[r], err);
        if (st != TL_OK) return st;
    }
    b->model = t->shard[0];
    b->num_blocks = nb;
    if (!a->quiet)
        fprintf(stderr,
                "tierlm: cpu, tensor parallel: %d ranks in threads of this process, %d threads "
                "(%s GEMV) and KV %d blocks of %d tokens each\n",
                n, pool_size(cpu_backend_pool(&b->ops)), cpu_matmul_kernel_name(), nb,
                a->block_size);
    return TL_OK;
}

/* Rank 0's own backend of a group of processes, on the CPU. */
static enum tl_status open_rank0_cpu(const struct model *shard, const struct backend_args *a,
                                     int threads, int nb, struct backend *b, struct tl_err *err) {
    struct cpu_backend_opts co = {.n_threads = threads,
                                  .pin = false,
                                  .num_blocks = nb,
                                  .block_size = a->block_size,
                                  .max_ctx = a->max_model_len};
    enum tl_status st = cpu_backend_create(&shard->cfg, &co, &b->ops, err);
    if (st != TL_OK) return st;
    b->model = shard;
    b->num_blocks = nb;
    return TL_OK;
}

#ifdef TL_HAVE_CUDA
/* The GPU backend's options every backend on GPU 0 shares: the memory and sequence limits. */
static struct gpu_backend_opts gpu_opts(const struct backend_args *a) {
    return (struct gpu_backend_opts){.device = 0,
                                     .gpu_memory_utilization = a->gpu_memory_utilization,
                                     .gpu_memory_gb = a->gpu_memory_gb,
                                     .dtype = a->dtype,
                                     .block_size = a->block_size,
                                     .max_model_len = a->max_model_len,
                                     .max_tokens = a->max_tokens,
                                     .max_seqs = a->max_seqs,
                                     .num_blocks_override = a->num_blocks,
                                     .enforce_eager = a->enforce_eager};
}
#endif

/* Rank 0's own backend of a group of processes, on GPU 0: as many KV blocks as fit, which the
 * other ranks then allocate too. */
static enum tl_status open_rank0_gpu(const struct model *shard, const struct backend_args *a,
                                     struct backend *b, struct tl_err *err) {
#ifdef TL_HAVE_NCCL
    struct gpu_backend_opts go = gpu_opts(a);
    go.enforce_eager = true; /* a rank of a group replays no graphs */
    struct gpu_plan plan;
    enum tl_status st = gpu_backend_create(shard, &go, &b->ops, &b->model, &plan, err);
    if (st != TL_OK) return st;
    b->cuda = true;
    b->num_blocks = plan.num_blocks;
    return TL_OK;
#else
    (void)shard, (void)a, (void)b;
    return tl_fail(err, TL_ERR_UNSUPPORTED, "this build has no NCCL: no tensor parallel GPUs");
#endif
}

/* --tensor-parallel-size N as processes (--tp-processes, --nnodes): this process is rank 0;
 * it starts the other ranks of its node as `tierlm tp-worker`, waits for every rank (other
 * nodes' too) to connect, sends them its settings and waits until each has built its shard. */
static enum tl_status open_tp_procs(const struct model *m, const struct backend_args *a, int nb,
                                    bool cuda, struct backend *b, struct tl_err *err) {
    const struct tp_dist_args *d = &a->dist;
    int n = a->tensor_parallel_size, per = n / d->nnodes;
    const char *dev = cuda ? "cuda" : "cpu";
    enum tl_status st = backend_tp_check(&m->cfg, dev, n, err);
    if (st == TL_OK) st = tp_dist_check(d, n, dev, err);
    if (st != TL_OK) return st;
    if (cuda && (a->layer_place || a->embed_on_host || a->head_on_host))
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "tensor parallelism over GPUs with layers offloaded to the host is not "
                       "implemented: give each GPU its whole shard");
    if (!a->model_dir)
        return tl_fail(err, TL_ERR_INVALID, "tensor parallel processes need the model directory");
    struct backend_tp *t = calloc(1, sizeof *t);
    if (!t) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    b->tp = t;
    t->world = n;
    t->shard = calloc((size_t)n, sizeof *t->shard);
    t->pids = calloc((size_t)n, sizeof *t->pids);
    if (!t->shard || !t->pids) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    /* one node: loopback and a free port; several: where the other nodes were told to go */
    const char *addr = d->nnodes > 1 ? d->master_addr : "127.0.0.1";
    int port = d->master_port > 0 ? d->master_port : d->nnodes > 1 ? 29501 : 0;
    if ((st = tp_net_listen(addr, port, n, &t->net, err)) != TL_OK) return st;
    if ((st = tp_launch_spawn(addr, tp_net_port(t->net), 1, per - 1, n, t->pids, err)) != TL_OK)
        return st;
    struct tp_launch_kids kids = {t->pids, n};
    if ((st = tp_net_accept(t->net, d->nnodes > 1 ? 600 : 120, tp_launch_alive, &kids, err)) !=
        TL_OK)
        return st;
    int cores = a->threads > 0 ? a->threads : pool_physical_cores();
    int threads = cores / per > 0 ? cores / per : 1;
    /* rank 0's backend first: on GPUs its KV size is what every rank allocates */
    st = tp_shard(m, n, 0, &t->shard[0], err);
    if (st == TL_OK)
        st = cuda ? open_rank0_gpu(t->shard[0], a, b, err)
                  : open_rank0_cpu(t->shard[0], a, threads, nb, b, err);
    if (st != TL_OK) {
        tp_net_collective(t->net)->abort(tp_net_collective(t->net)->ctx, err->msg);
        return st;
    }
    struct tp_worker_cfg wc = {.load_format = a->load_format,
                               .dtype = a->load_dtype,
                               .threads = threads,
                               .block_size = a->block_size,
                               .num_blocks = b->num_blocks,
                               .max_model_len = a->max_model_len,
                               .max_tokens = a->max_tokens,
                               .max_seqs = a->max_seqs,
                               .quiet = a->quiet,
                               .cuda = cuda,
                               .per_node = per,
                               .gpu_util = a->gpu_memory_utilization,
                               .gpu_gb = a->gpu_memory_gb};
    if (strlen(a->model_dir) >= sizeof wc.model)
        return tl_fail(err, TL_ERR_INVALID, "the model directory's path is too long");
    snprintf(wc.model, sizeof wc.model, "%s", a->model_dir);
    if ((st = tp_net_send_blob(t->net, &wc, sizeof wc, err)) != TL_OK) return st;
    if ((st = tp_net_ready(t->net, true, NULL, err)) != TL_OK) return st;
#ifdef TL_HAVE_NCCL
    if (cuda && (st = tp_nccl_create(t->net, &b->ops, 0, &t->nccl, err)) != TL_OK) return st;
#endif
    if (!a->quiet)
        fprintf(stderr,
                "tierlm: %s, tensor parallel: %d ranks in processes (%d node%s, %d here)%s%d "
                "threads each and KV %d blocks of %d tokens\n",
                cuda ? "cuda" : "cpu", n, d->nnodes, d->nnodes > 1 ? "s" : "", per,
                cuda ? ", NCCL, " : " over TCP, ", threads, b->num_blocks, a->block_size);
    return TL_OK;
}

enum tl_status backend_forward_create(const struct backend *b, const struct model *host,
                                      int max_tokens, int max_seqs, struct forward **out,
                                      struct tl_err *err) {
    if (b->cpu_ops.ctx)
        return forward_create_split(b->model, &b->ops, host, &b->cpu_ops, &b->split, max_tokens,
                                    max_seqs, out, err);
    enum tl_status st = forward_create(b->model, &b->ops, max_tokens, max_seqs, out, err);
    if (st == TL_OK && b->tp) {
        st = forward_set_collective(
            *out, b->tp->net ? tp_net_collective(b->tp->net) : tp_local_collective(b->tp->group, 0),
            err);
        if (st != TL_OK) {
            forward_destroy(*out);
            *out = NULL;
        }
    }
    return st;
}

#ifdef TL_HAVE_CUDA
static void upload_progress(void *user, size_t done, size_t total) {
    (void)user;
    if (total > ((size_t)1 << 30))
        fprintf(stderr, "\ruploading weights: %.1f / %.1f GiB", (double)done / (1 << 30),
                (double)total / (1 << 30));
    if (done == total && total > ((size_t)1 << 30)) fputc('\n', stderr);
}
#endif

#ifdef TL_HAVE_CUDA
/* The CPU lane of a split placement: the layers the placement gives the CPU (and the embedding
 * or lm_head), their KV under the GPU's block ids. */
static enum tl_status open_cpu_lane(const struct model *m, const struct backend_args *a,
                                    struct backend *b, struct tl_err *err) {
    int nl = m->cfg.n_layers, n_cpu = 0;
    if (!a->layer_place && !a->embed_on_host && !a->head_on_host) return TL_OK;
    b->cpu_layers = calloc((size_t)nl, 1);
    if (!b->cpu_layers) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    for (int l = 0; a->layer_place && l < nl; l++) {
        b->cpu_layers[l] = a->layer_place[l] == GPU_PLACE_CPU;
        n_cpu += b->cpu_layers[l];
    }
    if (n_cpu == 0 && !a->embed_on_host && !a->head_on_host) return TL_OK;
    struct cpu_backend_opts co = {.n_threads = a->threads,
                                  .pin = true,
                                  .num_blocks = b->num_blocks,
                                  .block_size = a->block_size,
                                  .max_ctx = a->max_model_len,
                                  .kv_layers = b->cpu_layers,
                                  .bf16_acts = true};
    enum tl_status st = cpu_backend_create(&m->cfg, &co, &b->cpu_ops, err);
    if (st != TL_OK) return st;
    b->split = (struct fwd_placement){.layer_on_cpu = b->cpu_layers,
                                      .embed_on_cpu = a->embed_on_host,
                                      .head_on_cpu = a->head_on_host,
                                      .guest_min_tokens = n_cpu > 0 ? a->guest_min_tokens : 0};
    if (!a->quiet)
        fprintf(stderr, "tierlm: the CPU computes %d layer(s)%s%s with %d threads (%s GEMV)\n",
                n_cpu, a->embed_on_host ? ", the embedding" : "",
                a->head_on_host ? ", the lm_head" : "", pool_size(cpu_backend_pool(&b->cpu_ops)),
                cpu_matmul_kernel_name());
    if (!a->quiet && b->split.guest_min_tokens > 0)
        fprintf(stderr,
                "tierlm: steps of %d tokens or more (prefill) run those layers on the GPU, their "
                "weights streamed through one more staging slot\n",
                b->split.guest_min_tokens);
    return TL_OK;
}
#endif

enum tl_status backend_open(const struct model *m, const struct backend_args *a, struct backend *b,
                            struct tl_err *err) {
    memset(b, 0, sizeof *b);
    if (a->tensor_parallel_size > 1 && strcmp(a->device, "cpu")) {
        /* one process per GPU (refused before here without N GPUs or NCCL) */
        enum tl_status st = open_tp_procs(m, a, 0, true, b, err);
        if (st != TL_OK) backend_close(b);
        return st;
    }
    bool want_cuda =
        !strcmp(a->device, "cuda") || (!strcmp(a->device, "auto") && backend_cuda_available());
    if (want_cuda) {
#ifdef TL_HAVE_CUDA
        struct tl_err why;
        if (kern_device_probe(&why) == 0)
            return tl_fail(err, TL_ERR_UNSUPPORTED, "--device cuda: no usable GPU (%s)", why.msg);
        struct gpu_backend_opts go = gpu_opts(a);
        go.layer_place = a->layer_place;
        go.stream_slots = a->stream_slots;
        go.embed_on_host = a->embed_on_host;
        go.head_on_host = a->head_on_host;
        go.head_streamed = a->head_streamed;
        go.guest_min_tokens = a->guest_min_tokens;
        go.progress = a->quiet ? NULL : upload_progress;
        struct gpu_plan plan;
        enum tl_status st = gpu_backend_create(m, &go, &b->ops, &b->model, &plan, err);
        if (st != TL_OK) return st;
        b->num_blocks = plan.num_blocks;
        b->cuda = true;
        if ((st = open_cpu_lane(m, a, b, err)) != TL_OK) {
            backend_close(b);
            return st;
        }
        if (!a->quiet && plan.stream_host_bytes)
            fprintf(stderr,
                    "tierlm: streaming %.2f GiB of weights from pinned host RAM through %.2f GiB "
                    "of GPU staging slots\n",
                    plan.stream_host_bytes / 1073741824.0, plan.stream_slot_bytes / 1073741824.0);
        if (!a->quiet)
            fprintf(stderr,
                    "tierlm: cuda on %s: %s weights %.2f GiB, activations %.2f GiB, KV %.2f GiB "
                    "= %d blocks of %d tokens (%.0f tokens) in a budget of %.2f GiB\n",
                    plan.device_name, dtype_torch_name(plan.dtype),
                    plan.weight_bytes / 1073741824.0, plan.activation_bytes / 1073741824.0,
                    plan.kv_bytes / 1073741824.0, plan.num_blocks, a->block_size,
                    (double)plan.num_blocks * a->block_size, plan.budget_bytes / 1073741824.0);
        return TL_OK;
#else
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "--device cuda: this build has no CUDA backend (nvcc was not found when it "
                       "was configured); rebuild on a machine with the CUDA toolkit");
#endif
    }
    if (strcmp(a->device, "cpu") && strcmp(a->device, "auto"))
        return tl_fail(err, TL_ERR_INVALID, "--device must be auto, cpu or cuda, got '%s'",
                       a->device);
    if (a->dtype != TL_DTYPE_COUNT && a->dtype != m->embed.dtype)
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "--dtype %s: the CPU engine runs weights in their file dtype (%s); drop "
                       "--dtype or use --device cuda",
                       dtype_torch_name(a->dtype), dtype_torch_name(m->embed.dtype));
    int nb = a->num_blocks ? a->num_blocks : a->cpu_blocks;
    if (a->tensor_parallel_size > 1) {
        enum tl_status st = tp_dist_uses_processes(&a->dist, a->tensor_parallel_size)
                                ? open_tp_procs(m, a, nb, false, b, err)
                                : open_tp_cpu(m, a, nb, b, err);
        if (st != TL_OK) backend_close(b);
        return st;
    }
    struct cpu_backend_opts co = {.n_threads = a->threads,
                                  .pin = true,
                                  .num_blocks = nb,
                                  .block_size = a->block_size,
                                  .max_ctx = a->max_model_len};
    enum tl_status st = cpu_backend_create(&m->cfg, &co, &b->ops, err);
    if (st != TL_OK) return st;
    b->model = m;
    b->num_blocks = nb;
    if (!a->quiet)
        fprintf(stderr, "tierlm: cpu, %d threads (%s GEMV), KV %d blocks of %d tokens\n",
                pool_size(cpu_backend_pool(&b->ops)), cpu_matmul_kernel_name(), nb, a->block_size);
    return TL_OK;
}

void backend_close(struct backend *b) {
    tp_close(b->tp); /* its threads step rank 0's peers: before rank 0's backend goes */
    b->tp = NULL;
    if (b->cpu_ops.ctx) cpu_backend_destroy(&b->cpu_ops);
    free(b->cpu_layers);
    b->cpu_layers = NULL;
#ifdef TL_HAVE_CUDA
    if (b->cuda) {
        gpu_backend_destroy(&b->ops);
        return;
    }
#endif
    cpu_backend_destroy(&b->ops);
}
