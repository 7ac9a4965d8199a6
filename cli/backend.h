/* backend: picks and opens the backend a command runs on (--device auto|cpu|cuda), so every
 * command sizes KV and reports the same way. */
#ifndef TL_CLI_BACKEND_H
#define TL_CLI_BACKEND_H

#include <stdbool.h>
#include <stdio.h>

#include "forward.h"
#include "model.h"
#include "ops.h"
#include "status.h"
#include "tp_launch.h"

struct backend_args {
    const char *device; /* "auto", "cpu", "cuda" */
    int threads;        /* CPU threads (0 = physical cores) */
    int block_size;
    int num_blocks; /* 0 = the CPU needs of the prompts / all that fit on the GPU */
    int cpu_blocks; /* CPU default when num_blocks is 0 */
    int max_model_len;
    int max_tokens, max_seqs; /* per step */
    double gpu_memory_utilization, gpu_memory_gb;
    enum tl_dtype dtype; /* TL_DTYPE_COUNT = auto */
    bool enforce_eager;  /* no CUDA graphs */
    bool quiet;
    /* --tensor-parallel-size (0 or 1: one rank). With --device cpu the ranks run in threads of
     * this process (tp_local.h), or as processes over TCP with dist.processes or dist.nnodes
     * > 1 (tp_launch.h; the workers load model_dir with load_format / load_dtype themselves);
     * on GPUs always one process per GPU, joined by NCCL (tp_nccl.h). */
    int tensor_parallel_size;
    struct tp_dist_args dist;
    const char *model_dir;
    enum model_load_format load_format;
    enum tl_dtype load_dtype;
    /* A placement (cuda only; NULL = everything resident): per layer enum gpu_place values
     * (resident / streamed / CPU), streaming slots, and where embedding and lm_head run. Layers
     * on the CPU get a second backend, the CPU lane, keeping only their KV. */
    const uint8_t *layer_place;
    int stream_slots;
    bool embed_on_host, head_on_host, head_streamed;
    int guest_min_tokens; /* placement.h: steps this large run the CPU layers on the GPU */
};

struct backend {
    struct ops ops;
    const struct model *model; /* what the forward runs: host model or its device copy */
    int num_blocks;
    bool cuda;
    /* the CPU lane of a split placement (cpu_ops.ctx NULL when there is none) */
    struct ops cpu_ops;
    uint8_t *cpu_layers;        /* owned (n_layers): 1 where the CPU lane computes the layer */
    struct fwd_placement split; /* what forward_create_split needs (points into cpu_layers) */
    /* tensor parallel: ops and model above are rank 0's; the other ranks, their shards and the
     * threads that run them are owned here (NULL: one rank) */
    struct backend_tp *tp;
};

/* Opens the backend for host model m. Blocks while weights upload. */
enum tl_status backend_open(const struct model *m, const struct backend_args *a, struct backend *b,
                            struct tl_err *err);
void backend_close(struct backend *b);
/* Whether this build can run CUDA and a GPU is present. */
bool backend_cuda_available(void);
/* GPUs this build can see (0 without CUDA). */
int backend_gpu_count(void);

/* Checks --tensor-parallel-size n for model config c on `device` before anything is loaded:
 * the split must be one vLLM accepts (tp.h), and n > 1 on a GPU needs n GPUs. */
enum tl_status backend_tp_check(const struct config *c, const char *device, int n,
                                struct tl_err *err);

/* The forward of an opened backend for steps of up to max_tokens tokens and max_seqs sequences:
 * split over the CPU lane when the placement has one (host: the host model), rank 0 of the
 * tensor-parallel group when there is one. The caller destroys it before backend_close. */
enum tl_status backend_forward_create(const struct backend *b, const struct model *host,
                                      int max_tokens, int max_seqs, struct forward **out,
                                      struct tl_err *err);

#endif
