/* cmd_plan: `tierlm plan` reads a model's config.json, takes this machine's ceilings (measured
 * once and cached, or stated for a GPU that is not here), and prints where each layer should
 * live and run, the bytes per tier and the predicted tok/s; --check prints what the engine's
 * start-up check would say instead. Needs no weights and no GPU. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "calibrate.h"
#include "config.h"
#include "planner.h"
#ifdef TL_HAVE_CUDA
#include "calibrate_gpu.h"
#endif

#define GIB (1024.0 * 1024.0 * 1024.0)

struct plan_args {
    const char *model, *device, *gpu_name, *ceilings;
    struct planner_inputs in;
    double gpu_total_gb, gpu_reserved_gb, host_gb, swap_gb;
    struct calibrate_assume assume;
    int threads;
    bool recalibrate, json, check;
};

static void help(FILE *f) {
    fprintf(
        f,
        "usage: tierlm plan --model DIR [flags]\n"
        "\n"
        "Plans a model on this machine (or on a GPU you name) before anything is loaded: which\n"
        "layers stay on the GPU, which stream over PCIe and which the CPU computes, the bytes of\n"
        "every tier and the predicted decode tok/s at batch 1, 16, 64 and 256. Needs only the\n"
        "model's config.json. The machine's ceilings are measured once (~1 s) and cached in\n"
        "$XDG_CACHE_HOME/tierlm (or ~/.cache/tierlm). Exit status 0: it fits; 1: nothing fits\n"
        "(the nearest settings that do are printed); 2: bad flags.\n"
        "\n"
        "model and run (vLLM's names and defaults):\n"
        "  --model DIR                 HF model directory (only config.json is read)\n"
        "  --dtype T                   auto | bfloat16 | float16: GPU dtype (auto: bf16 stays\n"
        "                              bf16, else float16, as vLLM)   [auto]\n"
        "  --max-model-len N           longest sequence   [the model's max_position_embeddings]\n"
        "  --max-num-seqs N            most sequences at once   [256]\n"
        "  --max-num-batched-tokens N  most tokens per step (prefill chunk)   [2048]\n"
        "  --block-size N              tokens per KV block   [16]\n"
        "  --num-gpu-blocks-override N KV blocks to use instead of all that fit\n"
        "  --expected-batch B          concurrent sequences to be fastest for   [16]\n"
        "  --expected-len N            tokens per sequence (prompt + output) that size the KV\n"
        "                              and attention   [min(max-model-len, 1024)]\n"
        "  --expected-prompt-len N     of which prompt: its prefill counts in the ranking\n"
        "                              [half of --expected-len]\n"
        "offload:\n"
        "  --cpu-offload-gb N          as vLLM: N GiB of weights live in host RAM (rounded up\n"
        "                              to whole layers); how they run is the planner's choice\n"
        "                              [the planner decides]\n"
        "  --offload-policy P          auto | stream | cpu: offloaded layers streamed over PCIe\n"
        "                              and/or computed by the CPU   [auto: both, fastest mix]\n"
        "tensor parallel (planned per GPU; the engine runs it on the CPU, in threads or "
        "processes,\n"
        "and on N GPUs over NCCL, which has not run on a multi-GPU machine yet):\n"
        "  --tensor-parallel-size N    split the model over N GPUs like this one, as vLLM does:\n"
        "                              each holds 1/N of the heads, MLP and vocabulary, the\n"
        "                              norms, and its KV heads (replicated when N > KV heads);\n"
        "                              weights stay resident   [1]\n"
        "  --tp-link-gbps X            GPU-to-GPU rate of an all-reduce, GB/s (NVLink 4 on H100\n"
        "                              SXM: ~360 achieved)   [the PCIe H2D rate: no NVLink]\n"
        "  --tp-link-latency-us X      fixed cost of one all-reduce   [10]\n"
        "GPU (measured when one is present; stated otherwise):\n"
        "  --device D                  auto | cpu | cuda: cpu plans without touching a GPU\n"
        "                              [auto: measure the GPU when there is one]\n"
        "  --gpu-memory-gb G           budget cap in GiB (a 24 GB card: 24)\n"
        "  --gpu-memory-utilization F  fraction of the GPU's memory to use, as vLLM   [0.9]\n"
        "  --gpu-total-gb T            no GPU here: the card's memory, so that the utilization\n"
        "                              applies too   [unset: the budget is --gpu-memory-gb]\n"
        "  --gpu-reserved-gb R         no GPU here: memory the CUDA context takes   [0.5]\n"
        "  --gpu-name NAME             no GPU here: the card's name for the printout\n"
        "  --gpu-hbm-gbps X            HBM copy rate, GB/s read + written   [RTX 4090: 1008]\n"
        "  --gpu-tflops X              bf16 dense GEMM rate, TFLOP/s   [RTX 4090: 165]\n"
        "  --pcie-gbps X               pinned host-to-device rate, GB/s   [PCIe 4.0 x16: 25]\n"
        "                              (given with a GPU present, these replace what was\n"
        "                              measured)\n"
        "CPU and host:\n"
        "  --host-memory-gb H          host RAM the run may use   [MemAvailable]\n"
        "  --swap-space G              GiB of host RAM the KV swap tier pins, as vLLM   [0]\n"
        "  --threads N                 CPU threads, one per physical core   [physical cores]\n"
        "  --recalibrate               measure the ceilings again instead of using the cache\n"
        "  --ceilings FILE             use ceilings measured elsewhere (a file from the cache\n"
        "                              directory of another machine) instead of measuring\n"
        "output:\n"
        "  --check                     print what the engine's start-up check says for this\n"
        "                              configuration (everything resident unless\n"
        "                              --cpu-offload-gb is given) instead of the plan\n"
        "  --json                      print the plan as JSON\n"
        "  -h, --help                  this help\n");
}

static int num(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "tierlm plan: %s must be a number in [%g, %g], got '%s'\n", flag, lo, hi,
                s);
        return -1;
    }
    *out = v;
    return 0;
}

static int inum(const char *flag, const char *s, int lo, int hi, int *out) {
    double v;
    if (num(flag, s, lo, hi, &v)) return -1;
    if (v != floor(v)) {
        fprintf(stderr, "tierlm plan: %s must be an integer, got '%s'\n", flag, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_args(int argc, char **argv, struct plan_args *a) {
    enum {
        O_DTYPE = 256,
        O_MML,
        O_MNS,
        O_MNBT,
        O_BS,
        O_NGBO,
        O_EB,
        O_EL,
        O_EPL,
        O_COFF,
        O_POL,
        O_DEV,
        O_GGB,
        O_GUTIL,
        O_GTOT,
        O_GRES,
        O_GNAME,
        O_HBM,
        O_TFLOPS,
        O_PCIE,
        O_HOST,
        O_THR,
        O_RECAL,
        O_CHECK,
        O_JSON,
        O_CEIL,
        O_SWAP,
        O_TP,
        O_TPBW,
        O_TPLAT,
    };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"dtype", required_argument, 0, O_DTYPE},
        {"max-model-len", required_argument, 0, O_MML},
        {"max-num-seqs", required_argument, 0, O_MNS},
        {"max-num-batched-tokens", required_argument, 0, O_MNBT},
        {"block-size", required_argument, 0, O_BS},
        {"num-gpu-blocks-override", required_argument, 0, O_NGBO},
        {"expected-batch", required_argument, 0, O_EB},
        {"expected-len", required_argument, 0, O_EL},
        {"expected-prompt-len", required_argument, 0, O_EPL},
        {"cpu-offload-gb", required_argument, 0, O_COFF},
        {"offload-policy", required_argument, 0, O_POL},
        {"device", required_argument, 0, O_DEV},
        {"gpu-memory-gb", required_argument, 0, O_GGB},
        {"gpu-memory-utilization", required_argument, 0, O_GUTIL},
        {"gpu-total-gb", required_argument, 0, O_GTOT},
        {"gpu-reserved-gb", required_argument, 0, O_GRES},
        {"gpu-name", required_argument, 0, O_GNAME},
        {"gpu-hbm-gbps", required_argument, 0, O_HBM},
        {"gpu-tflops", required_argument, 0, O_TFLOPS},
        {"pcie-gbps", required_argument, 0, O_PCIE},
        {"host-memory-gb", required_argument, 0, O_HOST},
        {"threads", required_argument, 0, O_THR},
        {"recalibrate", no_argument, 0, O_RECAL},
        {"check", no_argument, 0, O_CHECK},
        {"json", no_argument, 0, O_JSON},
        {"ceilings", required_argument, 0, O_CEIL},
        {"swap-space", required_argument, 0, O_SWAP},
        {"tensor-parallel-size", required_argument, 0, O_TP},
        {"tp-link-gbps", required_argument, 0, O_TPBW},
        {"tp-link-latency-us", required_argument, 0, O_TPLAT},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct planner_inputs *in = &a->in;
    optind = 1;
    int c, bad = 0;
    while (!bad && (c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            a->model = optarg;
            break;
        case O_DTYPE:
            if (!strcmp(optarg, "auto"))
                in->dtype = TL_DTYPE_COUNT;
            else if (!dtype_parse_torch(optarg, &in->dtype) || in->dtype == TL_DTYPE_F32) {
                fprintf(stderr, "tierlm plan: --dtype must be auto, bfloat16 or float16\n");
                bad = 1;
            }
            break;
        case O_MML:
            bad = inum("--max-model-len", optarg, 1, 1 << 30, &in->max_model_len);
            break;
        case O_MNS:
            bad = inum("--max-num-seqs", optarg, 1, 1 << 20, &in->max_num_seqs);
            break;
        case O_MNBT:
            bad = inum("--max-num-batched-tokens", optarg, 1, 1 << 24, &in->max_num_batched_tokens);
            break;
        case O_BS:
            bad = inum("--block-size", optarg, 1, 1 << 12, &in->block_size);
            break;
        case O_NGBO:
            bad =
                inum("--num-gpu-blocks-override", optarg, 1, 1 << 30, &in->num_gpu_blocks_override);
            break;
        case O_EB:
            bad = inum("--expected-batch", optarg, 1, 1 << 20, &in->expected_batch);
            break;
        case O_EL:
            bad = inum("--expected-len", optarg, 1, 1 << 30, &in->expected_len);
            break;
        case O_EPL:
            bad = inum("--expected-prompt-len", optarg, 1, 1 << 30, &in->expected_prompt_len);
            break;
        case O_COFF:
            bad = num("--cpu-offload-gb", optarg, 0, 1 << 20, &in->cpu_offload_gb);
            break;
        case O_POL:
            if (!strcmp(optarg, "auto"))
                in->policy = PLANNER_POLICY_AUTO;
            else if (!strcmp(optarg, "stream"))
                in->policy = PLANNER_POLICY_STREAM;
            else if (!strcmp(optarg, "cpu"))
                in->policy = PLANNER_POLICY_CPU;
            else {
                fprintf(stderr, "tierlm plan: --offload-policy must be auto, stream or cpu\n");
                bad = 1;
            }
            break;
        case O_DEV:
            a->device = optarg;
            if (strcmp(optarg, "auto") && strcmp(optarg, "cpu") && strcmp(optarg, "cuda")) {
                fprintf(stderr, "tierlm plan: --device must be auto, cpu or cuda\n");
                bad = 1;
            }
            break;
        case O_GGB:
            bad = num("--gpu-memory-gb", optarg, 0.01, 1 << 20, &in->gpu_memory_gb);
            break;
        case O_GUTIL:
            bad = num("--gpu-memory-utilization", optarg, 0.001, 1, &in->gpu_memory_utilization);
            break;
        case O_GTOT:
            bad = num("--gpu-total-gb", optarg, 0.01, 1 << 20, &a->gpu_total_gb);
            break;
        case O_GRES:
            bad = num("--gpu-reserved-gb", optarg, 0, 1 << 20, &a->gpu_reserved_gb);
            break;
        case O_GNAME:
            a->gpu_name = optarg;
            break;
        case O_HBM:
            bad = num("--gpu-hbm-gbps", optarg, 1, 1e6, &a->assume.hbm_gbps);
            break;
        case O_TFLOPS:
            bad = num("--gpu-tflops", optarg, 0.1, 1e6, &a->assume.gemm_tflops);
            break;
        case O_PCIE:
            bad = num("--pcie-gbps", optarg, 0.1, 1e5, &a->assume.pcie_gbps);
            break;
        case O_HOST:
            bad = num("--host-memory-gb", optarg, 0.01, 1 << 24, &a->host_gb);
            break;
        case O_THR:
            bad = inum("--threads", optarg, 1, 4096, &a->threads);
            break;
        case O_RECAL:
            a->recalibrate = true;
            break;
        case O_CHECK:
            a->check = true;
            break;
        case O_JSON:
            a->json = true;
            break;
        case O_CEIL:
            a->ceilings = optarg;
            break;
        case O_SWAP:
            bad = num("--swap-space", optarg, 0, 1 << 20, &a->swap_gb);
            break;
        case O_TP:
            bad = inum("--tensor-parallel-size", optarg, 1, 64, &in->tensor_parallel_size);
            break;
        case O_TPBW:
            bad = num("--tp-link-gbps", optarg, 0.1, 1e5, &in->tp_link_gbps);
            break;
        case O_TPLAT:
            bad = num("--tp-link-latency-us", optarg, 0.01, 1e6, &in->tp_link_latency_us);
            break;
        case 'h':
            help(stdout);
            return 1;
        default:
            return -1;
        }
    }
    if (bad) return -1;
    if (optind < argc) {
        fprintf(stderr, "tierlm plan: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!a->model) {
        fprintf(stderr, "tierlm plan: --model DIR is required (tierlm plan --help)\n");
        return -1;
    }
    return 0;
}

static void print_json(const struct planner_inputs *in, const struct ceilings *ce,
                       const struct planner_result *r) {
    const struct placement *pl = &r->pl;
    const struct planner_memory *m = &r->mem;
    json_t *o = json_object(), *layers = json_array(), *pred = json_array();
    for (int l = 0; l < pl->n_layers; l++)
        json_array_append_new(layers,
                              json_string(placement_kind_name((enum placement_kind)pl->layer[l])));
    for (int i = 0; i < PLANNER_NBATCH; i++) {
        const struct planner_prediction *p = &r->pred[i];
        json_array_append_new(pred,
                              json_pack("{s:i,s:i,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "batch", p->batch,
                                        "concurrency", p->concurrency, "step_s", p->step_s, "tok_s",
                                        p->tok_s, "gpu_s", p->detail.gpu_s, "cpu_s",
                                        p->detail.cpu_s, "pcie_s", p->detail.pcie_s, "tp_comm_s",
                                        p->tp_comm_s, "best_tok_s", r->best[i].tok_s));
    }
    json_object_set_new(o, "layers", layers);
    json_object_set_new(o, "embed", json_string(placement_kind_name(pl->embed)));
    json_object_set_new(o, "lm_head", json_string(placement_kind_name(pl->lm_head)));
    json_object_set_new(o, "gpu_dtype", json_string(dtype_torch_name(pl->gpu_dtype)));
    json_object_set_new(o, "stream_slots", json_integer(pl->stream_slots));
    json_object_set_new(o, "stream_slot_bytes", json_integer((json_int_t)pl->stream_slot_bytes));
    json_object_set_new(o, "num_blocks", json_integer(pl->num_blocks));
    json_object_set_new(o, "block_size", json_integer(pl->block_size));
    json_object_set_new(
        o, "memory",
        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "gpu_budget",
                  (json_int_t)m->gpu_budget_bytes, "gpu_weights", (json_int_t)m->gpu_weight_bytes,
                  "gpu_staging", (json_int_t)m->gpu_staging_bytes, "gpu_activations",
                  (json_int_t)m->gpu_activation_bytes, "gpu_workspace",
                  (json_int_t)m->gpu_workspace_bytes, "gpu_comm", (json_int_t)m->gpu_comm_bytes,
                  "gpu_kv", (json_int_t)m->gpu_kv_bytes, "host_weights",
                  (json_int_t)m->host_weight_bytes, "host_kv", (json_int_t)m->host_kv_bytes,
                  "host_buffers", (json_int_t)m->host_buffer_bytes, "offload",
                  (json_int_t)m->offload_bytes));
    json_object_set_new(o, "predictions", pred);
    json_object_set_new(o, "expected_tok_s", json_real(r->expected.tok_s));
    json_object_set_new(o, "prefill_s", json_real(r->prefill_s));
    json_object_set_new(o, "reason", json_string(r->reason));
    json_object_set_new(o, "gpu", json_string(ce->gpu_name));
    json_object_set_new(o, "gpu_measured", json_boolean(ce->gpu_measured));
    json_object_set_new(o, "expected_batch", json_integer(in->expected_batch));
    json_object_set_new(o, "tensor_parallel_size",
                        json_integer(in->tensor_parallel_size > 1 ? in->tensor_parallel_size : 1));
    char *s = json_dumps(o, JSON_INDENT(2));
    if (s) puts(s);
    free(s);
    json_decref(o);
}

/* The ceilings: from --ceilings FILE, else this machine's (cached or measured); *whence says
 * which, for the printout. */
static enum tl_status get_ceilings(const struct plan_args *a, const struct calibrate_opts *co,
                                   struct ceilings *ce, char *whence, size_t n,
                                   struct tl_err *err) {
    bool cached;
    enum tl_status st;
    if (a->ceilings) {
        st = calibrate_load(a->ceilings, ce, err);
        if (st == TL_OK) calibrate_apply_stated(&co->assume, ce);
        snprintf(whence, n, "ceilings from %s (%s)", a->ceilings, ce->key);
        return st;
    }
    st = calibrate_get(co, ce, &cached, err);
    char path[1024] = "";
    struct tl_err e;
    calibrate_cache_path(co, path, sizeof path, &e);
    snprintf(whence, n, "ceilings %s this machine%s (%s)",
             cached ? "measured earlier on" : "measured now on",
             co->gpu ? "" : ", GPU figures stated", path);
    return st;
}

int cmd_plan(int argc, char **argv) {
    struct plan_args a = {.device = "auto", .gpu_reserved_gb = 0.5};
    planner_inputs_default(&a.in);
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc < 0 ? 2 : 0;
    struct tl_err err = {{0}};
    if (config_load(a.model, &a.in.cfg, &err) != TL_OK) {
        fprintf(stderr, "tierlm plan: %s\n", err.msg);
        return 1;
    }
    a.in.host_bytes = a.host_gb > 0 ? (size_t)(a.host_gb * GIB) : calibrate_host_available_bytes();
    a.in.host_swap_bytes = (size_t)(a.swap_gb * GIB);
    a.in.cpu_threads = a.threads;
    struct calibrate_opts co = {
        .threads = a.threads, .recalibrate = a.recalibrate, .assume = a.assume, .quiet = a.json};
    co.assume.gpu_name = a.gpu_name;
    bool use_gpu = false;
#ifdef TL_HAVE_CUDA
    struct calibrate_gpu gpu = {0};
    if (strcmp(a.device, "cpu")) {
        enum tl_status st = calibrate_gpu_open(0, &gpu, &err);
        if (st == TL_OK)
            st = calibrate_gpu_memory(&gpu, &a.in.gpu_total_bytes, &a.in.gpu_used_bytes, &err);
        if (st == TL_OK)
            use_gpu = true;
        else if (!strcmp(a.device, "cuda")) {
            fprintf(stderr, "tierlm plan: --device cuda: %s\n", err.msg);
            calibrate_gpu_close(&gpu);
            return 1;
        }
    }
    if (use_gpu) co.gpu = &gpu;
#else
    if (!strcmp(a.device, "cuda")) {
        fprintf(stderr, "tierlm plan: --device cuda: this build has no CUDA backend; plan for a "
                        "named budget with --gpu-memory-gb\n");
        return 1;
    }
#endif
    if (!use_gpu) {
        a.in.gpu_total_bytes = a.gpu_total_gb > 0 ? (size_t)(a.gpu_total_gb * GIB) : 0;
        a.in.gpu_used_bytes = (size_t)(a.gpu_reserved_gb * GIB);
        if (a.in.gpu_total_bytes == 0 && !(a.in.gpu_memory_gb > 0)) {
            fprintf(stderr, "tierlm plan: no GPU here: give the card's memory with "
                            "--gpu-memory-gb (e.g. 24)\n");
            return 2;
        }
    }
    int status = 0;
    if (a.check) {
        struct placement pl, *plp = NULL;
        struct planner_memory m;
        enum tl_status st = TL_OK;
        if (a.in.cpu_offload_gb > 0) {
            struct ceilings ce;
            char whence[1400];
            st = get_ceilings(&a, &co, &ce, whence, sizeof whence, &err);
            struct planner_result r;
            if (st == TL_OK) st = planner_plan(&a.in, &ce, &r, &err);
            if (st == TL_OK) pl = r.pl, plp = &pl;
        }
        if (st == TL_OK) st = planner_check(&a.in, plp, &m, &err);
        if (st == TL_OK)
            printf("ok: %d KV blocks of %d tokens (%.2f GiB on the GPU, %.2f GiB in host RAM); "
                   "max-model-len fits up to %d\n",
                   m.num_blocks, a.in.block_size, m.gpu_kv_bytes / GIB, m.host_kv_bytes / GIB,
                   m.fit_max_model_len);
        else {
            printf("refused: %s\n", err.msg);
            status = 1;
        }
    } else {
        struct ceilings ce;
        struct planner_result r;
        char whence[1400];
        enum tl_status st = get_ceilings(&a, &co, &ce, whence, sizeof whence, &err);
        if (st == TL_OK) st = planner_plan(&a.in, &ce, &r, &err);
        if (st == TL_OK) {
            if (a.json) {
                print_json(&a.in, &ce, &r);
            } else {
                printf("%s\n", whence);
                planner_print(stdout, &a.in, &ce, &r);
            }
        } else {
            fprintf(stderr, "tierlm plan: %s\n", err.msg);
            status = 1;
        }
    }
#ifdef TL_HAVE_CUDA
    if (use_gpu) calibrate_gpu_close(&gpu);
#endif
    return status;
}
