/* planner: decides the placement (placement.h) of a model on this machine before anything is
 * loaded, and checks at start-up that a configuration fits. From config.json, the dtype, the
 * GPU budget (vLLM's --gpu-memory-utilization, our --gpu-memory-gb), host RAM, max-model-len,
 * max-num-seqs and the expected batch, it counts every tier's bytes (sizes.h, exactly as the
 * backends allocate them), predicts step times (stepmodel.h) and picks the placement that serves
 * the expected batch fastest. Pure arithmetic over the inputs: no device, no allocation beyond
 * the caller's structs; planner_plan takes a fraction of a second (it searches ~10^4-10^5
 * placements), planner_check microseconds unless it refuses (then it searches for the
 * --cpu-offload-gb to suggest). */
#ifndef TL_PLANNER_H
#define TL_PLANNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "calibrate.h"
#include "config.h"
#include "placement.h"
#include "status.h"
#include "stepmodel.h"

enum planner_policy {
    PLANNER_POLICY_AUTO = 0, /* streamed and CPU-computed layers, whichever is faster */
    PLANNER_POLICY_STREAM,   /* offloaded layers are streamed, the CPU computes none */
    PLANNER_POLICY_CPU,      /* offloaded layers are computed by the CPU, nothing streams */
};

/* cpu_offload_gb value that lets the planner decide how much to offload. */
#define PLANNER_OFFLOAD_AUTO (-1.0)

/* Tensor parallel: NCCL's own device memory per GPU, assumed, not measured (buffers for each
 * protocol, channel and ring neighbour: up to 32 channels x ~9 MiB on NVLink, far fewer over
 * PCIe; measure it on a multi-GPU machine). */
#define PLANNER_TP_COMM_RESERVE ((size_t)512 << 20)
/* One all-reduce's fixed cost when --tp-link-latency-us is not given: NCCL's small-message
 * latency is ~10 us over PCIe and a few us over NVLink (assumed). */
#define PLANNER_TP_LATENCY_US 10.0

struct planner_inputs {
    struct config cfg;
    enum tl_dtype dtype; /* GPU dtype; TL_DTYPE_COUNT: bf16 stays bf16, else fp16 (vLLM's auto) */
    /* GPU budget = min(utilization * total, gpu_memory_gb GiB) - used, as gpu_backend.c sizes
     * it. With total 0 (no device: planning for a named budget) the cap is gpu_memory_gb. */
    size_t gpu_total_bytes;
    size_t gpu_used_bytes; /* in use before the engine allocates: CUDA context, others */
    double gpu_memory_utilization;
    double gpu_memory_gb;   /* 0 = no cap */
    size_t host_bytes;      /* host RAM the run may fill with weights, KV and buffers */
    size_t host_swap_bytes; /* of which the KV swap tier pins (--swap-space) */
    int cpu_threads;        /* threads of the CPU backend (attention scratch); 0 = cores */
    int block_size;
    int max_model_len;
    int max_num_seqs;
    int max_num_batched_tokens;
    int num_gpu_blocks_override; /* 0 = all that fit */
    int expected_batch;          /* concurrent sequences to be fastest for */
    int expected_len;            /* tokens per sequence (prompt + output); 0 = min(mml, 1024) */
    /* of which prompt (0 = half): placements are ranked by end-to-end tokens/s, the prompts'
     * prefill included, so CPU layers that would make prefill crawl lose to streaming */
    int expected_prompt_len;
    double cpu_offload_gb; /* PLANNER_OFFLOAD_AUTO, or vLLM's: N GiB of weights in host RAM */
    enum planner_policy policy;
    /* Tensor parallel (tp.h): the model split over this many GPUs like this one (0, 1: one).
     * Every GPU is planned alike, as rank 0 (the largest share), with the whole model's cfg
     * above; weights stay resident (offload is not combined with tensor parallelism). */
    int tensor_parallel_size;
    double tp_link_gbps;       /* GPU-to-GPU rate an all-reduce runs at, GB/s; 0: the ceilings'
                                * PCIe H2D rate (no NVLink, as on 4090s) */
    double tp_link_latency_us; /* per all-reduce; 0: PLANNER_TP_LATENCY_US */
    /* Set by planner_rank_inputs (callers leave it false): cfg is one GPU's share already. */
    bool cfg_per_gpu;
};

/* vLLM's defaults: utilization 0.9, block 16, 256 sequences, 2048 tokens per step; expected
 * batch 16; offload and policy auto; no GPU and no host RAM set (the caller fills them). */
void planner_inputs_default(struct planner_inputs *in);

/* The GPU dtype in->dtype resolves to. */
enum tl_dtype planner_gpu_dtype(const struct planner_inputs *in);

/* What one GPU of a tensor-parallel run is planned with: cfg = rank 0's share (tp_rank_config),
 * nothing offloaded, cfg_per_gpu set. A copy of in for one GPU or when in is such a view
 * already. TL_ERR_INVALID when the size does not split the model (tp_check's message),
 * TL_ERR_UNSUPPORTED with --cpu-offload-gb. */
enum tl_status planner_rank_inputs(const struct planner_inputs *in, struct planner_inputs *out,
                                   struct tl_err *err);

/* Seconds one step spends in tensor-parallel communication (0 for one GPU): an all-reduce of
 * tokens x hidden activations after each layer's o_proj and down_proj and after the embedding
 * (2 * n_layers + 1), each 2 (N - 1) / N x bytes / link + latency as a ring all-reduce takes,
 * and an all-gather of the rows' vocabulary parts of the logits, (N - 1) / N x bytes / link +
 * latency. ce gives the PCIe rate when in->tp_link_gbps is 0. */
double planner_tp_comm_s(const struct planner_inputs *in, const struct ceilings *ce, int tokens,
                         int rows);

/* Every tier's bytes for one placement. */
struct planner_memory {
    size_t gpu_budget_bytes;
    size_t gpu_weight_bytes;     /* resident weights */
    size_t gpu_staging_bytes;    /* streaming slots */
    size_t gpu_activation_bytes; /* forward buffers */
    size_t gpu_workspace_bytes;  /* attention split-K, logits, metadata, cuBLAS reserve */
    size_t gpu_comm_bytes;       /* tensor parallel: PLANNER_TP_COMM_RESERVE (NCCL), else 0 */
    size_t gpu_kv_bytes;         /* num_blocks GPU KV blocks */
    size_t gpu_kv_free_bytes;    /* budget left for KV after everything else (0 if negative) */
    size_t gpu_fixed_bytes;      /* weights + staging + activations + workspace + comm */
    size_t host_budget_bytes;
    size_t host_weight_bytes; /* streamed and CPU weights, host embedding */
    size_t host_kv_bytes;     /* num_blocks host KV blocks */
    size_t host_buffer_bytes; /* CPU activations and scratch, the KV swap tier */
    size_t offload_bytes;     /* weights living in host RAM: what --cpu-offload-gb counts */
    size_t kv_seq_gpu_bytes;  /* GPU KV of one sequence of max-model-len */
    size_t kv_seq_host_bytes; /* host KV of one sequence of max-model-len */
    int num_blocks;           /* KV blocks (each covers every layer) */
    int fit_max_model_len;    /* the longest sequence those blocks hold */
    bool gpu_fits, host_fits; /* fixed bytes fit each tier */
    bool fits;                /* and one max-model-len sequence fits the KV */
};

/* Fills pl's KV fields (num_blocks, block bytes) and *out for placement pl, which the caller
 * filled with layer kinds, embed, lm_head, gpu_dtype and stream slots (slot bytes are set here).
 * TL_ERR_INVALID for inputs that make no budget (no GPU size known, utilization out of range). */
enum tl_status planner_memory_of(const struct planner_inputs *in, struct placement *pl,
                                 struct planner_memory *out, struct tl_err *err);

/* Predicted decode throughput of one batch size. */
struct planner_prediction {
    int batch;        /* sequences asked for */
    int concurrency;  /* sequences the KV holds at expected_len, at most batch and max-num-seqs */
    double step_s;    /* tensor parallel: the communication included */
    double tok_s;     /* concurrency / step_s: decode */
    double tp_comm_s; /* of step_s: tensor-parallel all-reduces and the logits' all-gather */
    double prefill_s; /* prefill of the concurrency's prompts, in max-num-batched-tokens chunks */
    double e2e_tok_s; /* output tokens / (prefill_s + output length x step_s): what ranks */
    struct stepmodel_result detail;
};

#define PLANNER_NBATCH 4 /* 1, 16, 64, 256 */

struct planner_result {
    struct placement pl; /* the chosen placement, KV decided */
    struct planner_memory mem;
    struct planner_prediction expected;             /* at in->expected_batch */
    struct planner_prediction pred[PLANNER_NBATCH]; /* the chosen placement */
    struct planner_prediction best[PLANNER_NBATCH]; /* the best placement for that batch */
    char best_desc[PLANNER_NBATCH][PLACEMENT_MAX_LAYERS + 64];
    double prefill_s; /* one chunk of max_num_batched_tokens tokens of one sequence */
    int candidates;   /* placements evaluated */
    char reason[400]; /* one line: why this placement */
};

/* Chooses the placement that maximises predicted decode tok/s at the expected batch among all
 * that fit (every layer count per tier, 1..6 staging slots, lm_head and embedding tiers, two or
 * three layer orders), within the policy and --cpu-offload-gb. TL_OK with *out filled; when
 * nothing fits TL_ERR_NOMEM and err gives the nearest settings that do (a shorter
 * max-model-len, a larger GPU budget, --cpu-offload-gb). */
enum tl_status planner_plan(const struct planner_inputs *in, const struct ceilings *ce,
                            struct planner_result *out, struct tl_err *err);

/* The start-up check (call before loading weights, with the GPU's total memory and what is in
 * use): for placement pl (NULL: everything resident, the engine without offload) either TL_OK
 * with out->num_blocks KV blocks (out->gpu_kv_bytes on the GPU, out->host_kv_bytes in host
 * RAM), or TL_ERR_NOMEM and one message: the KV one sequence of max-model-len needs, the KV free
 * after weights, the largest max-model-len that fits now, and the --cpu-offload-gb that would
 * make the requested one fit. */
enum tl_status planner_check(const struct planner_inputs *in, const struct placement *pl,
                             struct planner_memory *out, struct tl_err *err);

/* The smallest whole --cpu-offload-gb (GiB) with which a placement allowed by in->policy fits
 * max-model-len; -1 when none does (the KV alone exceeds the budget, or host RAM is short). */
int planner_offload_needed_gb(const struct planner_inputs *in);

/* Prints the plan as `tierlm plan` shows it: inputs, ceilings, bytes per tier, the placement,
 * predicted tok/s at batch 1/16/64/256, the reason. */
void planner_print(FILE *f, const struct planner_inputs *in, const struct ceilings *ce,
                   const struct planner_result *r);

#endif
