/* engine_args: the engine flags every long-running command shares (`serve`, `bench
 * throughput`), vLLM's names and meanings, and engine_boot, which turns them into a running
 * engine: model, backend, forward, KV block manager, tokenizer + chat template, engine. */
#ifndef TL_CLI_ENGINE_ARGS_H
#define TL_CLI_ENGINE_ARGS_H

#include <stdbool.h>
#include <stdio.h>

#include "backend.h"
#include "chat.h"
#include "config.h"
#include "engine.h"
#include "forward.h"
#include "kvcache.h"
#include "model.h"
#include "tokenizer.h"

struct engine_args {
    const char *model;     /* --model DIR (required) */
    const char *tokenizer; /* --tokenizer DIR, default the model's */
    enum model_load_format load_format;
    const char *device; /* auto | cpu | cuda */
    enum tl_dtype dtype;
    int threads;
    int block_size;
    int num_gpu_blocks_override; /* 0 = all that fit */
    int max_model_len;           /* 0 = the model's max_position_embeddings */
    int max_num_seqs;
    int max_num_batched_tokens;
    bool enable_prefix_caching;
    double gpu_memory_utilization, gpu_memory_gb;
    bool enforce_eager;
    double swap_space_gb;    /* host KV tier: pinned RAM for preempted sequences' KV */
    double cpu_offload_gb;   /* vLLM's: GiB of weights in host RAM; -1 = the planner decides */
    int offload_policy;      /* enum planner_policy: auto | stream | cpu */
    int expected_batch;      /* sequences the placement should be fastest for */
    int expected_prompt_len; /* their prompts' tokens (0: the planner's default) */
    bool recalibrate;        /* measure the ceilings again instead of the cached ones */
    bool no_tokenizer;       /* token ids only (bench with dummy weights and no tokenizer) */
    bool disable_log_stats;
    bool quiet;
    const char *nvme_swap_dir; /* NVMe KV tier: a swap file there (NULL: none) */
    double nvme_swap_gb;       /* its size */
    enum engine_preemption preemption_mode;
    enum engine_sched sched;
    int kv_crc_threads;       /* -1: default */
    bool kv_host_crc;         /* host checksums even where the backend checksums on the device */
    int tensor_parallel_size; /* ranks the model is split over (vLLM's meaning); 1: none */
    struct tp_dist_args dist; /* ranks as processes / over nodes (tp_launch.h) */
};

void engine_args_default(struct engine_args *a);

/* Consumes the engine flag at argv[*i] (and its value), advancing *i. Returns 1 when it was
 * an engine flag, 0 when it is not one (the command parses it), -1 on a bad value (err says
 * which flag and why). */
int engine_args_parse(struct engine_args *a, int argc, char **argv, int *i, struct tl_err *err);

/* The --help lines of the engine flags. */
void engine_args_help(FILE *f);

/* Everything a running engine needs, owned here. */
struct engine_boot {
    struct model *host_model;   /* owned */
    struct backend be;          /* owned */
    struct forward *fwd;        /* owned */
    struct kvcache *kv;         /* owned */
    struct tokenizer *tok;      /* owned, NULL with no_tokenizer or when absent */
    struct chat_template *chat; /* owned, NULL when the tokenizer config has none */
    struct gen_config gen;      /* generation_config.json: sampling defaults */
    struct engine *engine;      /* owned, thread not started */
    int max_model_len;
    char model_name[256];   /* the model directory's base name */
    bool offloaded;         /* a placement other than all-resident runs */
    char placement[400];    /* its one-line description, for logs */
    double predicted_tok_s; /* the planner's prediction at the expected batch (0: none) */
    double predicted_step_s;
    double predicted_cpu_s, predicted_hop_s; /* its CPU-busy and lane-crossing parts */
    double pcie_h2d_gbps;                    /* the calibrated pinned H2D ceiling the plan used */
    struct kvswap *kvswap; /* owned, NULL without --swap-space / --nvme-swap-dir */
};

/* Loads and creates everything (progress on stderr unless quiet). On failure nothing is left
 * allocated and err says what to change. */
enum tl_status engine_boot_open(const struct engine_args *a, struct engine_boot *b,
                                struct tl_err *err);
void engine_boot_close(struct engine_boot *b);

/* params = vLLM defaults overlaid with the model's generation_config.json sampling fields. */
void engine_boot_default_params(const struct engine_boot *b, struct engine_params *p);

#endif
