/* engine_args: parsing of the shared engine flags and the boot sequence of a long-running
 * engine. The order of the boot is the order of what can go wrong cheapest first: config and
 * tokenizer, then the memory plan (inside the backend, before any weight is read), then the
 * weights, then the engine. */
#include "engine_args.h"

#include "calibrate.h"
#include "planner.h"
#ifdef TL_HAVE_CUDA
#include "calibrate_gpu.h"
#endif

#include <errno.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvswap.h"
#include "tp.h"

#define GIB (1024.0 * 1024.0 * 1024.0)
/* KV memory of the CPU engine when nothing says otherwise (vLLM's CPU backend uses 4 GiB). */
#define CPU_KV_DEFAULT_GIB 4.0

void engine_args_default(struct engine_args *a) {
    memset(a, 0, sizeof *a);
    a->device = "auto";
    a->dtype = TL_DTYPE_COUNT;
    a->block_size = 16;
    a->max_num_seqs = 256;
    a->max_num_batched_tokens = 2048;
    a->enable_prefix_caching = true;
    a->gpu_memory_utilization = 0.9;
    a->kv_crc_threads = -1;
    a->tensor_parallel_size = 1;
    tp_dist_default(&a->dist);
    a->expected_batch = 0; /* 0: min(max-num-seqs, 16) */
}

void engine_args_help(FILE *f) {
    fprintf(f,
            "engine (vLLM's flags and meanings):\n"
            "  --model DIR              HF model directory (config.json + *.safetensors)\n"
            "  --tokenizer DIR          tokenizer.json / tokenizer_config.json   [--model DIR]\n"
            "  --skip-tokenizer-init    no tokenizer: token-id prompts only, no text\n"
            "  --load-format FMT        auto | safetensors | dummy (random weights of the\n"
            "                           config's shape; needs only config.json)   [auto]\n"
            "  --dtype T                auto | float16 | bfloat16 | float32   [auto]\n"
            "  --device D               auto | cpu | cuda   [auto: cuda when a GPU is present]\n"
            "  --threads N              CPU threads   [physical cores]\n"
            "  --max-model-len N        prompt + output tokens per sequence   [the model's]\n"
            "  --max-num-seqs N         sequences running at once   [256]\n"
            "  --max-num-batched-tokens N  tokens per step (chunked prefill budget)   [2048]\n"
            "  --block-size N           tokens per KV block   [16]\n"
            "  --num-gpu-blocks-override N  KV blocks to use instead of all that fit\n"
            "  --enable-prefix-caching / --no-enable-prefix-caching\n"
            "                           share the KV of identical prompt prefixes   [on]\n"
            "  --gpu-memory-utilization F  fraction of the GPU's memory to use   [0.9]\n"
            "  --gpu-memory-gb G        hard cap in GiB (e.g. 24 to act as a 24 GB card)\n"
            "  --enforce-eager          no CUDA graphs\n"
            "  --cpu-offload-gb N       N GiB of the weights live in host RAM (vLLM's meaning);\n"
            "                           the planner streams them over PCIe or has the CPU compute\n"
            "                           them, whichever is faster; auto: as much as needed   [0]\n"
            "  --offload-policy P       auto | stream | cpu: how offloaded layers run   [auto]\n"
            "  --expected-batch N       the batch the placement is chosen for\n"
            "                           [min(max-num-seqs, 16)]\n"
            "  --expected-prompt-len N  prompt tokens of a typical request: the planner counts\n"
            "                           their prefill when it ranks placements\n"
            "                           [half of min(max-model-len, 1024)]\n"
            "  --recalibrate            measure this machine's ceilings again (else cached)\n"
            "  --swap-space GB          pinned host RAM for the KV of preempted sequences\n"
            "                           (swapped out, checksummed, swapped back in)   [0: off]\n"
            "  --nvme-swap-dir DIR      also a swap file there (io_uring, O_DIRECT, unnamed);\n"
            "                           host RAM spills to it when full\n"
            "  --nvme-swap-gb GB        size of that swap file (needed with --nvme-swap-dir)\n"
            "  --preemption-mode M      auto | swap | recompute: when KV runs out, swap a\n"
            "                           sequence out or recompute it later (auto: the cheaper,\n"
            "                           per sequence; swap needs the flags above)   [auto]\n"
            "  --scheduling-policy P    fcfs | fair | auto: who goes first when KV blocks run\n"
            "                           short: arrival order (vLLM's), or least service so far\n"
            "                           (all advance together; auto: fair when sequences are\n"
            "                           swapped rather than recomputed)   [auto]\n"
            "  --kv-crc-threads N       host threads checksumming swapped KV blocks (0: the\n"
            "                           engine's own thread)   [cores/4, 1..4]\n"
            "  --kv-host-crc            checksum swapped KV blocks on the host even where the GPU\n"
            "                           checksums them beside its copies (the default there)\n"
            "  --tensor-parallel-size N split the model over N ranks as vLLM does (heads, KV\n"
            "                           heads, MLP and vocabulary); --device cpu runs them in\n"
            "                           threads of this process; GPUs: one process\n"
            "                           per GPU over NCCL (untested)   [1]\n"
            "  --tp-processes           --device cpu: one process per rank instead of threads\n"
            "                           (rank 0 starts the others; they talk over TCP)\n"
            "  --nnodes M --node-rank R --master-addr A --master-port P\n"
            "                           ranks over M hosts, tp/M each: run the same command on\n"
            "                           every host with its R; node 0 listens on A:P  [1 0\n"
            "                           127.0.0.1 29501]\n"
            "  --disable-log-stats      no 5-second throughput line\n"
            "  --quiet                  no progress or start-up lines\n");
}

static int int_val(const char *flag, const char *v, int lo, int *out, struct tl_err *err) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > INT_MAX) {
        tl_fail(err, TL_ERR_INVALID, "%s must be an integer >= %d, got '%s'", flag, lo, v);
        return -1;
    }
    *out = (int)x;
    return 1;
}

static int dbl_val(const char *flag, const char *v, double lo, double hi, double *out,
                   struct tl_err *err) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi)) {
        tl_fail(err, TL_ERR_INVALID, "%s must be a number in [%g, %g], got '%s'", flag, lo, hi, v);
        return -1;
    }
    *out = x;
    return 1;
}

int engine_args_parse(struct engine_args *a, int argc, char **argv, int *i, struct tl_err *err) {
    const char *f = argv[*i];
    bool used = false;
    int dr = tp_dist_flag(f, *i + 1 < argc ? argv[*i + 1] : NULL, &a->dist, &used, err);
    if (dr != 0) {
        if (dr > 0 && used) ++*i;
        return dr;
    }
    /* flags without a value */
    if (!strcmp(f, "--enable-prefix-caching")) return a->enable_prefix_caching = true, 1;
    if (!strcmp(f, "--no-enable-prefix-caching")) return a->enable_prefix_caching = false, 1;
    if (!strcmp(f, "--enforce-eager")) return a->enforce_eager = true, 1;
    if (!strcmp(f, "--skip-tokenizer-init")) return a->no_tokenizer = true, 1;
    if (!strcmp(f, "--disable-log-stats")) return a->disable_log_stats = true, 1;
    if (!strcmp(f, "--quiet")) return a->quiet = true, 1;
    if (!strcmp(f, "--recalibrate")) return a->recalibrate = true, 1;
    if (!strcmp(f, "--kv-host-crc")) return a->kv_host_crc = true, 1;
    static const char *const with_value[] = {"--model",
                                             "--tokenizer",
                                             "--load-format",
                                             "--dtype",
                                             "--device",
                                             "--threads",
                                             "--max-model-len",
                                             "--max-num-seqs",
                                             "--block-size",
                                             "--max-num-batched-tokens",
                                             "--num-gpu-blocks-override",
                                             "--gpu-memory-utilization",
                                             "--gpu-memory-gb",
                                             "--swap-space",
                                             "--nvme-swap-dir",
                                             "--nvme-swap-gb",
                                             "--preemption-mode",
                                             "--scheduling-policy",
                                             "--kv-crc-threads",
                                             "--cpu-offload-gb",
                                             "--offload-policy",
                                             "--expected-batch",
                                             "--expected-prompt-len",
                                             "--tensor-parallel-size",
                                             "-tp"};
    bool known = false;
    for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++)
        known |= !strcmp(f, with_value[k]);
    if (!known) return 0;
    if (*i + 1 >= argc) {
        tl_fail(err, TL_ERR_INVALID, "%s needs a value", f);
        return -1;
    }
    const char *v = argv[++*i];
    if (!strcmp(f, "--model")) return a->model = v, 1;
    if (!strcmp(f, "--tokenizer")) return a->tokenizer = v, 1;
    if (!strcmp(f, "--device")) return a->device = v, 1;
    if (!strcmp(f, "--load-format")) {
        if (!strcmp(v, "auto"))
            a->load_format = MODEL_LOAD_AUTO;
        else if (!strcmp(v, "safetensors"))
            a->load_format = MODEL_LOAD_SAFETENSORS;
        else if (!strcmp(v, "dummy"))
            a->load_format = MODEL_LOAD_DUMMY;
        else {
            tl_fail(err, TL_ERR_INVALID,
                    "--load-format must be auto, safetensors or dummy, got '%s'", v);
            return -1;
        }
        return 1;
    }
    if (!strcmp(f, "--dtype")) {
        if (!strcmp(v, "auto"))
            a->dtype = TL_DTYPE_COUNT;
        else if (!strcmp(v, "float16") || !strcmp(v, "half") || !strcmp(v, "fp16"))
            a->dtype = TL_DTYPE_F16;
        else if (!strcmp(v, "bfloat16") || !strcmp(v, "bf16"))
            a->dtype = TL_DTYPE_BF16;
        else if (!strcmp(v, "float32") || !strcmp(v, "float"))
            a->dtype = TL_DTYPE_F32;
        else {
            tl_fail(err, TL_ERR_INVALID,
                    "--dtype must be auto, float16, bfloat16 or float32, got '%s'", v);
            return -1;
        }
        return 1;
    }
    if (!strcmp(f, "--threads")) return int_val(f, v, 0, &a->threads, err);
    if (!strcmp(f, "--max-model-len")) return int_val(f, v, 1, &a->max_model_len, err);
    if (!strcmp(f, "--max-num-seqs")) return int_val(f, v, 1, &a->max_num_seqs, err);
    if (!strcmp(f, "--block-size")) return int_val(f, v, 1, &a->block_size, err);
    if (!strcmp(f, "--max-num-batched-tokens"))
        return int_val(f, v, 1, &a->max_num_batched_tokens, err);
    if (!strcmp(f, "--num-gpu-blocks-override"))
        return int_val(f, v, 1, &a->num_gpu_blocks_override, err);
    if (!strcmp(f, "--gpu-memory-utilization"))
        return dbl_val(f, v, 0.01, 1.0, &a->gpu_memory_utilization, err);
    if (!strcmp(f, "--gpu-memory-gb")) return dbl_val(f, v, 0.0, 1e6, &a->gpu_memory_gb, err);
    if (!strcmp(f, "--swap-space")) return dbl_val(f, v, 0.0, 1e6, &a->swap_space_gb, err);
    if (!strcmp(f, "--nvme-swap-dir")) return a->nvme_swap_dir = v, 1;
    if (!strcmp(f, "--nvme-swap-gb")) return dbl_val(f, v, 0.0, 1e9, &a->nvme_swap_gb, err);
    if (!strcmp(f, "--kv-crc-threads")) return int_val(f, v, 0, &a->kv_crc_threads, err);
    if (!strcmp(f, "--cpu-offload-gb")) {
        if (!strcmp(v, "auto")) return a->cpu_offload_gb = PLANNER_OFFLOAD_AUTO, 1;
        return dbl_val(f, v, 0.0, 1e6, &a->cpu_offload_gb, err);
    }
    if (!strcmp(f, "--expected-batch")) return int_val(f, v, 1, &a->expected_batch, err);
    if (!strcmp(f, "--expected-prompt-len")) return int_val(f, v, 1, &a->expected_prompt_len, err);
    if (!strcmp(f, "--tensor-parallel-size") || !strcmp(f, "-tp"))
        return int_val("--tensor-parallel-size", v, 1, &a->tensor_parallel_size, err);
    if (!strcmp(f, "--offload-policy")) {
        if (!strcmp(v, "auto"))
            a->offload_policy = PLANNER_POLICY_AUTO;
        else if (!strcmp(v, "stream"))
            a->offload_policy = PLANNER_POLICY_STREAM;
        else if (!strcmp(v, "cpu"))
            a->offload_policy = PLANNER_POLICY_CPU;
        else {
            tl_fail(err, TL_ERR_INVALID, "--offload-policy must be auto, stream or cpu, got '%s'",
                    v);
            return -1;
        }
        return 1;
    }
    if (!strcmp(f, "--preemption-mode")) {
        if (!strcmp(v, "auto"))
            a->preemption_mode = ENGINE_PREEMPT_AUTO;
        else if (!strcmp(v, "swap"))
            a->preemption_mode = ENGINE_PREEMPT_SWAP;
        else if (!strcmp(v, "recompute"))
            a->preemption_mode = ENGINE_PREEMPT_RECOMPUTE;
        else {
            tl_fail(err, TL_ERR_INVALID,
                    "--preemption-mode must be auto, swap or recompute, got '%s'", v);
            return -1;
        }
        return 1;
    }
    if (!strcmp(f, "--scheduling-policy")) {
        if (!strcmp(v, "auto"))
            a->sched = ENGINE_SCHED_AUTO;
        else if (!strcmp(v, "fcfs"))
            a->sched = ENGINE_SCHED_FCFS;
        else if (!strcmp(v, "fair"))
            a->sched = ENGINE_SCHED_FAIR;
        else {
            tl_fail(err, TL_ERR_INVALID,
                    "--scheduling-policy must be auto, fcfs or fair, got '%s'%s", v,
                    strcmp(v, "priority") ? ""
                                          : " (requests carry no priority here: vLLM's "
                                            "'priority' has nothing to order by)");
            return -1;
        }
        return 1;
    }
    return 0;
}

static void load_progress(void *user, size_t done, size_t total) {
    (void)user;
    if (total > ((size_t)1 << 30))
        fprintf(stderr, "\rloading weights: %.1f / %.1f GiB", (double)done / GIB,
                (double)total / GIB);
    if (done == total && total > ((size_t)1 << 30)) fputc('\n', stderr);
}

/* The KV tiers of --swap-space / --nvme-swap-dir, checked against the host's RAM as vLLM
 * checks --swap-space (more than 70% of it is refused). */
static enum tl_status open_tiers(const struct engine_args *a, struct engine_boot *b, int max_len,
                                 struct tl_err *err) {
    if (a->swap_space_gb <= 0 && !a->nvme_swap_dir) {
        if (a->preemption_mode == ENGINE_PREEMPT_SWAP)
            return tl_fail(err, TL_ERR_INVALID,
                           "--preemption-mode swap needs somewhere to swap to: give "
                           "--swap-space GB and/or --nvme-swap-dir DIR --nvme-swap-gb GB");
        return TL_OK;
    }
    if (a->nvme_swap_dir && a->nvme_swap_gb <= 0)
        return tl_fail(err, TL_ERR_INVALID,
                       "--nvme-swap-dir %s needs --nvme-swap-gb GB: the swap file's size",
                       a->nvme_swap_dir);
    double ram = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE) / GIB;
    if (ram > 0 && a->swap_space_gb > 0.7 * ram)
        return tl_fail(err, TL_ERR_INVALID,
                       "--swap-space %.1f GiB is more than 70%% of this host's %.1f GiB of RAM: "
                       "lower it to %.1f or less (or use --nvme-swap-dir for more room)",
                       a->swap_space_gb, ram, 0.7 * ram);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int crc = a->kv_crc_threads >= 0 ? a->kv_crc_threads : (int)(cores / 4 < 4 ? cores / 4 : 4);
    if (a->kv_crc_threads < 0 && crc < 1) crc = 1; /* 0 only when asked: on the engine thread */
    struct kvswap_opts ko = {.ops = &b->be.ops,
                             .ops2 = b->be.cpu_ops.ctx ? &b->be.cpu_ops : NULL,
                             .host_bytes = (size_t)(a->swap_space_gb * GIB),
                             .nvme_dir = a->nvme_swap_dir,
                             .nvme_bytes = (size_t)(a->nvme_swap_gb * GIB),
                             .max_blocks_per_seq = (max_len + a->block_size - 1) / a->block_size,
                             .crc_threads = crc,
                             .host_crc = a->kv_host_crc,
                             .quiet = a->quiet};
    return kvswap_create(&ko, &b->kvswap, err);
}

/* Before any weight is read: on the GPU, the start-up check (one max-model-len sequence must
 * fit; the refusal says what would) and, with --cpu-offload-gb, the placement. */
static enum tl_status plan_memory(const struct engine_args *a, const struct config *c, int max_len,
                                  struct engine_boot *b, struct placement *pl, bool *have_pl,
                                  struct tl_err *err) {
    *have_pl = false;
    bool cuda = strcmp(a->device, "cpu") && backend_cuda_available();
    if (!cuda) {
        if (a->cpu_offload_gb != 0 && !a->quiet)
            fprintf(stderr, "tierlm: --cpu-offload-gb has no effect on the CPU engine (all weights "
                            "are in host RAM already)\n");
        return TL_OK;
    }
#ifdef TL_HAVE_CUDA
    struct planner_inputs in;
    planner_inputs_default(&in);
    in.cfg = *c;
    in.dtype = a->dtype;
    in.gpu_memory_utilization = a->gpu_memory_utilization;
    in.gpu_memory_gb = a->gpu_memory_gb;
    in.host_bytes = calibrate_host_available_bytes();
    in.host_swap_bytes = (size_t)(a->swap_space_gb * GIB);
    in.cpu_threads = a->threads;
    in.block_size = a->block_size;
    in.max_model_len = max_len;
    in.max_num_seqs = a->max_num_seqs;
    in.max_num_batched_tokens = a->max_num_batched_tokens;
    in.num_gpu_blocks_override = a->num_gpu_blocks_override;
    in.expected_batch =
        a->expected_batch ? a->expected_batch : (a->max_num_seqs < 16 ? a->max_num_seqs : 16);
    in.expected_prompt_len = a->expected_prompt_len;
    in.cpu_offload_gb = a->cpu_offload_gb;
    in.policy = (enum planner_policy)a->offload_policy;
    struct calibrate_gpu gpu = {0};
    enum tl_status st = calibrate_gpu_open(0, &gpu, err);
    if (st == TL_OK) st = calibrate_gpu_memory(&gpu, &in.gpu_total_bytes, &in.gpu_used_bytes, err);
    if (st != TL_OK) {
        calibrate_gpu_close(&gpu);
        return st;
    }
    if (a->cpu_offload_gb == 0) {
        struct planner_memory m;
        st = planner_check(&in, NULL, &m, err);
    } else {
        struct calibrate_opts co = {
            .threads = a->threads, .recalibrate = a->recalibrate, .gpu = &gpu, .quiet = a->quiet};
        struct ceilings ce;
        bool cached = false;
        struct planner_result r;
        st = calibrate_get(&co, &ce, &cached, err);
        /* the plan is chosen among the placements that fit: no second check */
        if (st == TL_OK) st = planner_plan(&in, &ce, &r, err);
        if (st == TL_OK) {
            *pl = r.pl;
            *have_pl = true;
            b->offloaded = true;
            b->predicted_tok_s = r.expected.tok_s;
            b->predicted_step_s = r.expected.step_s;
            b->predicted_cpu_s = r.expected.detail.cpu_s;
            b->predicted_hop_s = r.expected.detail.hop_s;
            b->pcie_h2d_gbps = ce.pcie_h2d_gbps;
            placement_describe(&r.pl, b->placement, sizeof b->placement);
            if (!a->quiet) {
                if (cached)
                    fprintf(stderr, "tierlm: ceilings from this machine's cache (--recalibrate "
                                    "measures again)\n");
                else
                    fprintf(stderr, "tierlm: ceilings measured now, in %.1f s\n", ce.seconds);
                planner_print(stderr, &in, &ce, &r);
            }
        }
    }
    calibrate_gpu_close(&gpu);
    return st;
#else
    (void)c, (void)max_len, (void)b, (void)pl, (void)err;
    return TL_OK;
#endif
}

static bool file_exists(const char *dir, const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static void add_eos(int32_t *eos, int *n, int32_t id) {
    if (id < 0) return;
    for (int i = 0; i < *n; i++)
        if (eos[i] == id) return;
    eos[(*n)++] = id;
}

enum tl_status engine_boot_open(const struct engine_args *a, struct engine_boot *b,
                                struct tl_err *err) {
    memset(b, 0, sizeof *b);
    if (!a->model) return tl_fail(err, TL_ERR_INVALID, "--model DIR is required");
    const char *base = strrchr(a->model, '/');
    base = base && base[1] ? base + 1 : a->model;
    snprintf(b->model_name, sizeof b->model_name, "%s", base);
    size_t nl = strlen(b->model_name);
    while (nl > 1 && b->model_name[nl - 1] == '/') b->model_name[--nl] = 0;

    /* config and the memory plan first: a configuration that cannot work is refused before
     * minutes of loading */
    struct config cfg;
    enum tl_status st = config_load(a->model, &cfg, err);
    if (st != TL_OK) return st;
    int max_len = a->max_model_len ? a->max_model_len : cfg.max_position_embeddings;
    if (max_len > cfg.max_position_embeddings)
        return tl_fail(err, TL_ERR_INVALID,
                       "--max-model-len %d is longer than the model's max_position_embeddings %d",
                       max_len, cfg.max_position_embeddings);
    int tp = a->tensor_parallel_size;
    if ((st = backend_tp_check(&cfg, a->device, tp, err)) != TL_OK) return st;
    if ((st = tp_dist_check(&a->dist, tp, a->device, err)) != TL_OK) return st;
    if (a->dist.node_rank > 0)
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "--node-rank %d: the ranks of nodes > 0 run under `tierlm serve` or "
                       "`tierlm generate`",
                       a->dist.node_rank);
    if (tp > 1 && (a->swap_space_gb > 0 || a->nvme_swap_dir))
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "--swap-space / --nvme-swap-dir with --tensor-parallel-size %d: KV swap "
                       "is not implemented for tensor-parallel ranks yet (preempted sequences "
                       "are recomputed)",
                       tp);
    struct placement pl;
    bool have_pl = false;
    if ((st = plan_memory(a, &cfg, max_len, b, &pl, &have_pl, err)) != TL_OK) return st;

    struct model_load_opts lo = {.format = a->load_format,
                                 .dtype = a->dtype,
                                 .seed = 0,
                                 .n_threads = a->threads,
                                 .progress = a->quiet ? NULL : load_progress};
    st = model_load(a->model, &lo, &b->host_model, err);
    if (st != TL_OK) return st;
    const struct config *c = &b->host_model->cfg;
    if ((st = config_load_generation(a->model, &b->gen, err)) != TL_OK) goto fail;

    const char *tdir = a->tokenizer ? a->tokenizer : a->model;
    if (!a->no_tokenizer && (a->tokenizer || file_exists(tdir, "tokenizer.json"))) {
        if ((st = tokenizer_load(tdir, &b->tok, err)) != TL_OK) goto fail;
        if (tokenizer_n_ids(b->tok) > c->vocab_size) {
            st = tl_fail(err, TL_ERR_INVALID,
                         "--tokenizer must belong to this model: it has %d ids, the model's "
                         "vocabulary %d",
                         tokenizer_n_ids(b->tok), c->vocab_size);
            goto fail;
        }
        struct tl_err cerr;
        if (chat_template_load(tdir, &b->chat, &cerr) != TL_OK) b->chat = NULL;
    }

    b->max_model_len = max_len;
    int step_tokens = a->max_num_batched_tokens;
    int seqs = a->max_num_seqs;

    /* CPU KV: what max-num-seqs full-length sequences need, capped at a few GiB. */
    int kv_heads = tp > 1 ? tp * tp_kv_heads_per_rank(c, tp) : c->n_kv_heads; /* all ranks' */
    size_t cpu_block_bytes = 2 * (size_t)c->n_layers * (size_t)kv_heads * (size_t)c->head_dim *
                             (size_t)a->block_size * sizeof(float);
    int64_t want = (int64_t)seqs * ((max_len + a->block_size - 1) / a->block_size) + 1;
    int64_t cap = (int64_t)(CPU_KV_DEFAULT_GIB * GIB / (double)cpu_block_bytes);
    int min_blocks = (max_len + a->block_size - 1) / a->block_size + 1;
    if (cap < min_blocks) cap = min_blocks;
    struct backend_args ba = {.device = a->device,
                              .threads = a->threads,
                              .block_size = a->block_size,
                              .num_blocks = a->num_gpu_blocks_override,
                              .cpu_blocks = (int)(want < cap ? want : cap),
                              .max_model_len = max_len,
                              .max_tokens = step_tokens,
                              .max_seqs = seqs,
                              .gpu_memory_utilization = a->gpu_memory_utilization,
                              .gpu_memory_gb = a->gpu_memory_gb,
                              .dtype = a->dtype,
                              .enforce_eager = a->enforce_eager,
                              .quiet = a->quiet,
                              .tensor_parallel_size = tp,
                              .dist = a->dist,
                              .model_dir = a->model,
                              .load_format = a->load_format,
                              .load_dtype = a->dtype};
    if (have_pl) {
        ba.layer_place = pl.layer;
        ba.stream_slots = pl.stream_slots;
        ba.embed_on_host = pl.embed == PLACEMENT_CPU;
        ba.head_on_host = pl.lm_head == PLACEMENT_CPU;
        ba.head_streamed = pl.lm_head == PLACEMENT_GPU_STREAMED;
        ba.guest_min_tokens = pl.guest_min_tokens;
        ba.num_blocks = pl.num_blocks; /* the planner sized the KV of both tiers */
    }
    if ((st = backend_open(b->host_model, &ba, &b->be, err)) != TL_OK) goto fail;
    if ((st = kvcache_create(b->be.num_blocks, a->block_size, &b->kv, err)) != TL_OK) goto fail;
    st = backend_forward_create(&b->be, b->host_model, step_tokens, seqs, &b->fwd, err);
    if (st != TL_OK) goto fail;
    if ((st = open_tiers(a, b, max_len, err)) != TL_OK) goto fail;

    int32_t eos[2 * CONFIG_MAX_EOS + 1];
    int n_eos = 0;
    if (b->tok) add_eos(eos, &n_eos, tokenizer_eos_id(b->tok));
    for (int i = 0; i < b->gen.n_eos; i++) add_eos(eos, &n_eos, b->gen.eos_token_ids[i]);
    for (int i = 0; i < c->n_eos; i++) add_eos(eos, &n_eos, c->eos_token_ids[i]);
    struct engine_opts eo = {.max_num_seqs = seqs,
                             .max_num_batched_tokens = step_tokens,
                             .max_model_len = max_len,
                             .enable_prefix_caching = a->enable_prefix_caching,
                             .graph_pad_block = !b->offloaded,
                             .eos_ids = eos,
                             .n_eos = n_eos,
                             .tok = b->tok,
                             .log_interval_s = a->disable_log_stats ? 0.0 : 5.0,
                             .kvswap = b->kvswap,
                             .preemption_mode = a->preemption_mode,
                             .sched = a->sched};
    if ((st = engine_create(b->fwd, b->kv, c->vocab_size, &eo, &b->engine, err)) != TL_OK)
        goto fail;
    return TL_OK;
fail:
    engine_boot_close(b);
    return st;
}

void engine_boot_close(struct engine_boot *b) {
    engine_destroy(b->engine);
    kvswap_destroy(b->kvswap); /* before the backend whose memory it pinned */
    forward_destroy(b->fwd);
    kvcache_destroy(b->kv);
    if (b->be.ops.ctx) backend_close(&b->be);
    chat_template_free(b->chat);
    tokenizer_free(b->tok);
    model_free(b->host_model);
    memset(b, 0, sizeof *b);
}

void engine_boot_default_params(const struct engine_boot *b, struct engine_params *p) {
    engine_params_default(p);
    const struct gen_config *g = &b->gen;
    if (g->has_temperature) p->sp.temperature = g->temperature;
    if (g->has_top_k) p->sp.top_k = g->top_k;
    if (g->has_top_p) p->sp.top_p = g->top_p;
    if (g->has_min_p) p->sp.min_p = g->min_p;
    if (g->has_repetition_penalty) p->sp.repetition_penalty = g->repetition_penalty;
}
