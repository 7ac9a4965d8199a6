/* cmd_generate: `tierlm generate` loads a model, runs the given token-id prompts together
 * (batched prefill and decode) and prints the generated ids and a speed line. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cpu_ops.h"
#include "matmul.h"
#include "forward.h"
#include "generate.h"
#include "kvcache.h"
#include "model.h"
#include "pool.h"
#include "sampler.h"

#define MAX_PROMPTS 256

struct gen_args {
    const char *model;
    const char *prompts[MAX_PROMPTS];
    int n_prompts;
    int max_tokens, min_tokens, ignore_eos;
    struct sampling_params sp;
    const char *device;
    enum model_load_format load_format;
    enum tl_dtype dtype; /* TL_DTYPE_COUNT = auto */
    int threads, block_size, num_blocks, max_step_tokens, max_model_len;
    int quiet;
    unsigned set; /* SET_* bits: sampling flags the user gave (others come from the model) */
};

enum { SET_TEMP = 1, SET_TOPK = 2, SET_TOPP = 4, SET_MINP = 8, SET_REP = 16 };

static void help(FILE *f) {
    fprintf(f,
            "usage: tierlm generate --model DIR --prompt-ids 1,2,3 [--prompt-ids 4,5 ...] [flags]\n"
            "\n"
            "Runs every prompt together (batched prefill and decode) and prints, per prompt, the\n"
            "generated token ids, then a speed line (prompt tok/s, decode tok/s).\n"
            "\n"
            "model:\n"
            "  --model DIR              HF model directory (config.json + *.safetensors)\n"
            "  --load-format FMT        auto | safetensors | dummy (random weights of the\n"
            "                           config's shape; needs only config.json)   [auto]\n"
            "  --dtype T                auto | float32 | float16 | bfloat16: dtype of dummy\n"
            "                           weights; real weights run in their file dtype   [auto]\n"
            "  --device D               auto | cpu | cuda   [auto: cpu in this build]\n"
            "prompts and sampling (vLLM semantics; unset flags take the model's "
            "generation_config.json):\n"
            "  --prompt-ids LIST        comma-separated token ids; repeat for a batch\n"
            "  --max-tokens N           tokens to generate per prompt   [16]\n"
            "  --min-tokens N           EOS is ignored before N tokens   [0]\n"
            "  --ignore-eos             keep generating after EOS\n"
            "  --temperature T          0 = greedy   [generation_config.json, else 1.0]\n"
            "  --top-k K                keep the K most likely tokens (-1 = off)   [-1]\n"
            "  --top-p P                nucleus sampling mass (0, 1]   [1.0]\n"
            "  --min-p P                drop tokens below P x the top probability   [0]\n"
            "  --repetition-penalty R   divide/multiply logits of seen tokens   [1.0]\n"
            "  --presence-penalty P     subtract P from logits of generated tokens   [0]\n"
            "  --frequency-penalty F    subtract F x count of generated tokens   [0]\n"
            "  --seed S                 per-request seed: same seed, same tokens\n"
            "engine:\n"
            "  --threads N              CPU threads, pinned one per core   [physical cores]\n"
            "  --block-size N           tokens per KV block   [16]\n"
            "  --num-blocks N           KV blocks to allocate   [what the prompts need]\n"
            "  --max-num-batched-tokens N  tokens per step (prefill chunk)   [2048]\n"
            "  --max-model-len N        longest sequence   [prompt + max-tokens]\n"
            "  --quiet                  print only the ids\n"
            "  -h, --help               this help\n");
}

static int parse_int(const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "tierlm generate: %s must be an integer in [%ld, %ld], got '%s'\n", flag,
                lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_float(const char *flag, const char *s, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) {
        fprintf(stderr, "tierlm generate: %s must be a number, got '%s'\n", flag, s);
        return -1;
    }
    *out = (float)v;
    return 0;
}

/* Parses "1,2,3" into a new array; returns its length or -1 with a message. */
static int parse_ids(const char *s, int vocab, int32_t **out) {
    int cap = 16, n = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    const char *p = s;
    while (ids && *p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v >= vocab || (*end && *end != ',')) {
            fprintf(stderr,
                    "tierlm generate: --prompt-ids '%s': each id must be an integer in [0, %d)\n",
                    s, vocab);
            free(ids);
            return -1;
        }
        if (n == cap) {
            int32_t *g = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            if (!g) break;
            ids = g;
        }
        ids[n++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (!ids || n == 0) {
        fprintf(stderr, "tierlm generate: --prompt-ids '%s' holds no ids\n", s);
        free(ids);
        return -1;
    }
    *out = ids;
    return n;
}

static int parse_args(int argc, char **argv, struct gen_args *a) {
    enum {
        O_LOAD = 256,
        O_DTYPE,
        O_DEVICE,
        O_MAXT,
        O_MINT,
        O_IGN,
        O_TEMP,
        O_TOPK,
        O_TOPP,
        O_MINP,
        O_REP,
        O_PRES,
        O_FREQ,
        O_SEED,
        O_THR,
        O_BS,
        O_NB,
        O_MNBT,
        O_MML,
        O_QUIET,
        O_PIDS
    };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"prompt-ids", required_argument, 0, O_PIDS},
        {"load-format", required_argument, 0, O_LOAD},
        {"dtype", required_argument, 0, O_DTYPE},
        {"device", required_argument, 0, O_DEVICE},
        {"max-tokens", required_argument, 0, O_MAXT},
        {"min-tokens", required_argument, 0, O_MINT},
        {"ignore-eos", no_argument, 0, O_IGN},
        {"temperature", required_argument, 0, O_TEMP},
        {"top-k", required_argument, 0, O_TOPK},
        {"top-p", required_argument, 0, O_TOPP},
        {"min-p", required_argument, 0, O_MINP},
        {"repetition-penalty", required_argument, 0, O_REP},
        {"presence-penalty", required_argument, 0, O_PRES},
        {"frequency-penalty", required_argument, 0, O_FREQ},
        {"seed", required_argument, 0, O_SEED},
        {"threads", required_argument, 0, O_THR},
        {"block-size", required_argument, 0, O_BS},
        {"num-blocks", required_argument, 0, O_NB},
        {"max-num-batched-tokens", required_argument, 0, O_MNBT},
        {"max-model-len", required_argument, 0, O_MML},
        {"quiet", no_argument, 0, O_QUIET},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    optind = 1;
    int c, seed;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'm':
            a->model = optarg;
            break;
        case O_PIDS:
            if (a->n_prompts == MAX_PROMPTS) {
                fprintf(stderr, "tierlm generate: at most %d prompts\n", MAX_PROMPTS);
                return 2;
            }
            a->prompts[a->n_prompts++] = optarg;
            break;
        case O_LOAD:
            if (!strcmp(optarg, "auto"))
                a->load_format = MODEL_LOAD_AUTO;
            else if (!strcmp(optarg, "safetensors"))
                a->load_format = MODEL_LOAD_SAFETENSORS;
            else if (!strcmp(optarg, "dummy"))
                a->load_format = MODEL_LOAD_DUMMY;
            else
                bad = fprintf(
                    stderr, "tierlm generate: --load-format must be auto, safetensors or dummy\n");
            break;
        case O_DTYPE:
            if (!strcmp(optarg, "auto"))
                a->dtype = TL_DTYPE_COUNT;
            else if (!dtype_parse_torch(optarg, &a->dtype))
                bad = fprintf(
                    stderr,
                    "tierlm generate: --dtype must be auto, float32, float16 or bfloat16\n");
            break;
        case O_DEVICE:
            a->device = optarg;
            break;
        case O_MAXT:
            bad = parse_int("--max-tokens", optarg, 1, 1 << 24, &a->max_tokens);
            break;
        case O_MINT:
            bad = parse_int("--min-tokens", optarg, 0, 1 << 24, &a->min_tokens);
            break;
        case O_IGN:
            a->ignore_eos = 1;
            break;
        case O_TEMP:
            a->set |= SET_TEMP;
            bad = parse_float("--temperature", optarg, &a->sp.temperature);
            break;
        case O_TOPK:
            a->set |= SET_TOPK;
            bad = parse_int("--top-k", optarg, -1, INT_MAX, &a->sp.top_k);
            break;
        case O_TOPP:
            a->set |= SET_TOPP;
            bad = parse_float("--top-p", optarg, &a->sp.top_p);
            break;
        case O_MINP:
            a->set |= SET_MINP;
            bad = parse_float("--min-p", optarg, &a->sp.min_p);
            break;
        case O_REP:
            a->set |= SET_REP;
            bad = parse_float("--repetition-penalty", optarg, &a->sp.repetition_penalty);
            break;
        case O_PRES:
            bad = parse_float("--presence-penalty", optarg, &a->sp.presence_penalty);
            break;
        case O_FREQ:
            bad = parse_float("--frequency-penalty", optarg, &a->sp.frequency_penalty);
            break;
        case O_SEED:
            bad = parse_int("--seed", optarg, 0, INT_MAX, &seed);
            a->sp.seed = (uint64_t)seed;
            a->sp.has_seed = true;
            break;
        case O_THR:
            bad = parse_int("--threads", optarg, 1, 1024, &a->threads);
            break;
        case O_BS:
            bad = parse_int("--block-size", optarg, 1, 1024, &a->block_size);
            break;
        case O_NB:
            bad = parse_int("--num-blocks", optarg, 1, INT_MAX, &a->num_blocks);
            break;
        case O_MNBT:
            bad = parse_int("--max-num-batched-tokens", optarg, 1, 1 << 20, &a->max_step_tokens);
            break;
        case O_MML:
            bad = parse_int("--max-model-len", optarg, 1, 1 << 24, &a->max_model_len);
            break;
        case O_QUIET:
            a->quiet = 1;
            break;
        case 'h':
            help(stdout);
            return 1;
        default:
            help(stderr);
            return 2;
        }
        if (bad) return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "tierlm generate: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!a->model) {
        fprintf(stderr, "tierlm generate: --model DIR is required (see --help)\n");
        return 2;
    }
    if (a->n_prompts == 0) {
        fprintf(stderr, "tierlm generate: give at least one --prompt-ids (see --help)\n");
        return 2;
    }
    if (strcmp(a->device, "auto") && strcmp(a->device, "cpu")) {
        if (!strcmp(a->device, "cuda"))
            fprintf(stderr, "tierlm generate: --device cuda: the CUDA backend does not run models "
                            "yet in this version; use --device cpu\n");
        else
            fprintf(stderr, "tierlm generate: --device must be auto, cpu or cuda\n");
        return 2;
    }
    return 0;
}

static void progress(void *user, uint64_t done, uint64_t total) {
    (void)user;
    if (total > (1u << 28))
        fprintf(stderr, "\rfilling dummy weights: %.1f / %.1f GiB", (double)done / (1u << 30),
                (double)total / (1u << 30));
    if (done == total && total > (1u << 28)) fputc('\n', stderr);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cmd_generate(int argc, char **argv) {
    struct gen_args a = {.max_tokens = 16,
                         .device = "auto",
                         .dtype = TL_DTYPE_COUNT,
                         .block_size = 16,
                         .max_step_tokens = 2048};
    sampling_params_default(&a.sp);
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc == 1 ? 0 : rc;

    struct tl_err err = {{0}};
    struct model *m = NULL;
    struct kvcache *kv = NULL;
    struct forward *fw = NULL;
    struct ops ops = {0};
    struct gen_request reqs[MAX_PROMPTS];
    int32_t *prompt_ids[MAX_PROMPTS] = {0};
    memset(reqs, 0, sizeof reqs);
    rc = 1;

    double t0 = now_s();
    struct model_load_opts lo = {.format = a.load_format,
                                 .dtype = a.dtype,
                                 .seed = 0,
                                 .n_threads = a.threads,
                                 .progress = progress};
    if (model_load(a.model, &lo, &m, &err) != TL_OK) goto fail;
    if (a.load_format != MODEL_LOAD_DUMMY && a.dtype != TL_DTYPE_COUNT &&
        a.dtype != m->embed.dtype) {
        tl_fail(&err, TL_ERR_UNSUPPORTED,
                "--dtype %s: the CPU engine runs weights in their file dtype (%s); drop --dtype",
                dtype_torch_name(a.dtype), dtype_torch_name(m->embed.dtype));
        goto fail;
    }
    const struct config *c = &m->cfg;
    struct gen_config gc;
    if (config_load_generation(a.model, &gc, &err) != TL_OK) goto fail;
    /* As vLLM: the model's generation_config.json supplies the sampling defaults. */
    if (gc.has_temperature && !(a.set & SET_TEMP)) a.sp.temperature = gc.temperature;
    if (gc.has_top_k && !(a.set & SET_TOPK)) a.sp.top_k = gc.top_k;
    if (gc.has_top_p && !(a.set & SET_TOPP)) a.sp.top_p = gc.top_p;
    if (gc.has_min_p && !(a.set & SET_MINP)) a.sp.min_p = gc.min_p;
    if (gc.has_repetition_penalty && !(a.set & SET_REP))
        a.sp.repetition_penalty = gc.repetition_penalty;
    if (!a.quiet && (gc.has_temperature || gc.has_top_k || gc.has_top_p || gc.has_min_p ||
                     gc.has_repetition_penalty))
        fprintf(stderr,
                "tierlm: sampling defaults from generation_config.json (flags override): "
                "temperature=%g top_k=%d top_p=%g min_p=%g repetition_penalty=%g\n",
                a.sp.temperature, a.sp.top_k, a.sp.top_p, a.sp.min_p, a.sp.repetition_penalty);
    int32_t eos[2 * CONFIG_MAX_EOS];
    int n_eos = 0;
    for (int i = 0; i < gc.n_eos; i++) eos[n_eos++] = gc.eos_token_ids[i];
    for (int i = 0; i < c->n_eos; i++) eos[n_eos++] = c->eos_token_ids[i];

    int longest = 0;
    int64_t need_blocks = 0;
    for (int i = 0; i < a.n_prompts; i++) {
        int n = parse_ids(a.prompts[i], c->vocab_size, &prompt_ids[i]);
        if (n < 0) {
            rc = 2;
            goto out;
        }
        reqs[i] = (struct gen_request){.prompt = prompt_ids[i],
                                       .n_prompt = n,
                                       .max_tokens = a.max_tokens,
                                       .min_tokens = a.min_tokens,
                                       .ignore_eos = a.ignore_eos,
                                       .sp = a.sp};
        reqs[i].out = malloc((size_t)a.max_tokens * sizeof(int32_t));
        if (!reqs[i].out) {
            tl_fail(&err, TL_ERR_NOMEM, "out of host memory");
            goto fail;
        }
        if (n + a.max_tokens > longest) longest = n + a.max_tokens;
        need_blocks += (n + a.max_tokens + a.block_size - 1) / a.block_size;
    }
    int max_len = a.max_model_len ? a.max_model_len : longest;
    if (longest > max_len || longest > c->max_position_embeddings) {
        int lim = max_len < c->max_position_embeddings ? max_len : c->max_position_embeddings;
        tl_fail(&err, TL_ERR_INVALID,
                "a prompt plus --max-tokens reaches %d tokens, but the limit is %d (%s): shorten "
                "the prompt or lower --max-tokens",
                longest, lim, lim == max_len ? "--max-model-len" : "max_position_embeddings");
        goto fail;
    }
    int num_blocks = a.num_blocks ? a.num_blocks : (int)need_blocks;
    struct cpu_backend_opts co = {.n_threads = a.threads,
                                  .pin = true,
                                  .num_blocks = num_blocks,
                                  .block_size = a.block_size,
                                  .max_ctx = max_len};
    if (cpu_backend_create(c, &co, &ops, &err) != TL_OK) goto fail;
    if (kvcache_create(num_blocks, a.block_size, &kv, &err) != TL_OK) goto fail;
    int step = a.max_step_tokens;
    if (step < a.n_prompts) step = a.n_prompts; /* room for one decode token per sequence */
    if (forward_create(m, &ops, step, a.n_prompts, &fw, &err) != TL_OK) goto fail;
    double t_load = now_s() - t0;
    if (!a.quiet)
        fprintf(stderr,
                "tierlm: %s (%s, %d layers, %.1f MB of %s weights) on cpu, %d threads (%s GEMV), "
                "loaded in %.2f s\n",
                a.model, c->arch == CONFIG_ARCH_QWEN2 ? "qwen2" : "llama", c->n_layers,
                (double)m->weight_bytes / 1e6, dtype_torch_name(m->embed.dtype),
                pool_size(cpu_backend_pool(&ops)), cpu_matmul_kernel_name(), t_load);

    struct gen_opts go = {.max_step_tokens = step, .eos_ids = eos, .n_eos = n_eos};
    struct gen_stats gs;
    if (generate_run(fw, kv, c->vocab_size, reqs, a.n_prompts, &go, &gs, &err) != TL_OK) goto fail;
    for (int i = 0; i < a.n_prompts; i++) {
        for (int j = 0; j < reqs[i].n_out; j++) printf("%s%d", j ? "," : "", reqs[i].out[j]);
        if (!a.quiet)
            printf("   (%d tokens, finish: %s)", reqs[i].n_out,
                   reqs[i].finish == GEN_FINISH_STOP ? "stop" : "length");
        printf("\n");
    }
    if (!a.quiet)
        fprintf(stderr,
                "speed: prompt %lld tokens in %.3f s = %.1f tok/s | decode %lld tokens in %.3f s = "
                "%.2f tok/s (batch %d)\n",
                (long long)gs.prompt_tokens, gs.prefill_s,
                gs.prefill_s > 0 ? (double)gs.prompt_tokens / gs.prefill_s : 0.0,
                (long long)gs.decode_tokens, gs.decode_s,
                gs.decode_s > 0 ? (double)gs.decode_tokens / gs.decode_s : 0.0, a.n_prompts);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "tierlm generate: %s\n", err.msg);
out:
    forward_destroy(fw);
    kvcache_destroy(kv);
    cpu_backend_destroy(&ops);
    model_free(m);
    for (int i = 0; i < a.n_prompts; i++) {
        free(prompt_ids[i]);
        free(reqs[i].out);
    }
    return rc;
}
