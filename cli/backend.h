/* backend: picks and opens the backend a command runs on (--device auto|cpu|cuda), so every
 * command sizes KV and reports the same way. */
#ifndef TL_CLI_BACKEND_H
#define TL_CLI_BACKEND_H

#include <stdbool.h>
#include <stdio.h>

#include "model.h"
#include "ops.h"
#include "status.h"

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
};

struct backend {
    struct ops ops;
    const struct model *model; /* what the forward runs: host model or its device copy */
    int num_blocks;
    bool cuda;
};

/* Opens the backend for host model m. Blocks while weights upload. */
enum tl_status backend_open(const struct model *m, const struct backend_args *a, struct backend *b,
                            struct tl_err *err);
void backend_close(struct backend *b);
/* Whether this build can run CUDA and a GPU is present. */
bool backend_cuda_available(void);

#endif
