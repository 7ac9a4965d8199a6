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

#include "backend.h"
#include "cli.h"
#include "clock.h"
#include "forward.h"
#include "generate.h"
#include "kvcache.h"
#include "model.h"
#include "sampler.h"
#include "text.h"

#define MAX_PROMPTS 256

struct gen_args {
    const char *model;
    const char *prompts[MAX_PROMPTS];
    enum text_prompt_kind kinds[MAX_PROMPTS];
    int n_prompts;
    const char *system, *tokenizer;
    int keep_special, enable_thinking;
    int max_tokens, min_tokens, ignore_eos;
    struct sampling_params sp;
    const char *device;
    enum model_load_format load_format;
    enum tl_dtype dtype; /* TL_DTYPE_COUNT = auto */
    int threads, block_size, num_blocks, max_step_tokens, max_model_len;
    int quiet;
    double gpu_util, gpu_gb;
    int enforce_eager;
    int tensor_parallel_size;
    struct tp_dist_args dist;
    unsigned set; /* SET_* bits: sampling flags the user gave (others come from the model) */
};

enum { SET_TEMP = 1, SET_TOPK = 2, SET_TOPP = 4, SET_MINP = 8, SET_REP = 16 };

static void help(FILE *f) {
    fprintf(
        f,
        "usage: tierlm generate --model DIR (--prompt TEXT | --chat MESSAGE | --prompt-ids 1,2,3)\n"
        "                       [more prompts ...] [flags]\n"
        "\n"
        "Runs every prompt together (batched prefill and decode) and prints, per prompt, the\n"
        "generated text (token ids for --prompt-ids), then a speed line (prompt tok/s,\n"
        "decode tok/s). A single text prompt streams its text as it is generated.\n"
        "\n"
        "model:\n"
        "  --model DIR              HF model directory (config.json + *.safetensors)\n"
        "  --load-format FMT        auto | safetensors | dummy (random weights of the\n"
        "                           config's shape; needs only config.json)   [auto]\n"
        "  --dtype T                auto | float32 | float16 | bfloat16: on cuda the compute\n"
        "                           dtype (auto: bf16 stays bf16, else fp16, as vLLM); on cpu\n"
        "                           weights run in their file dtype; also the dummy dtype\n"
        "  --device D               auto | cpu | cuda   [auto: cuda when a GPU is present]\n"
        "  --gpu-memory-utilization F  fraction of the GPU's memory to use, as vLLM   [0.9]\n"
        "  --gpu-memory-gb G        hard cap in GiB (e.g. 24 to act as a 24 GB card)\n"
        "  --enforce-eager          no CUDA graphs: run every decode step op by op\n"
        "prompts and sampling (vLLM semantics; unset flags take the model's "
        "generation_config.json):\n"
        "  --prompt TEXT            a text prompt (tokenized with BOS etc. as the tokenizer\n"
        "                           adds them); repeat for a batch\n"
        "  --chat MESSAGE           a user message rendered with the model's chat template\n"
        "                           (add_generation_prompt); repeat for a batch\n"
        "  --system TEXT            system message for every --chat conversation\n"
        "  --enable-thinking B      true | false: chat template switch (Qwen3)   [template's]\n"
        "  --prompt-ids LIST        comma-separated token ids; repeat for a batch\n"
        "  --tokenizer DIR          tokenizer.json / tokenizer_config.json   [--model DIR]\n"
        "  --keep-special-tokens    print special tokens in the text (vLLM's\n"
        "                           skip_special_tokens=false)\n"
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
        "  --tensor-parallel-size N split the model over N ranks as vLLM does; with --device\n"
        "                           cpu they run in threads of this process   [1]\n"
        "  --tp-processes           --device cpu: one process per rank instead of threads\n"
        "  --nnodes M --node-rank R --master-addr A --master-port P\n"
        "                           ranks over M hosts (see tierlm serve --help)\n"
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
        O_PIDS,
        O_PROMPT,
        O_CHAT,
        O_SYSTEM,
        O_TOKENIZER,
        O_KEEPSPECIAL,
        O_THINK,
        O_GPUUTIL,
        O_GPUGB,
        O_EAGER,
        O_TP,
        O_TPPROC,
        O_NNODES,
        O_NODERANK,
        O_MADDR,
        O_MPORT,
    };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"prompt-ids", required_argument, 0, O_PIDS},
        {"prompt", required_argument, 0, O_PROMPT},
        {"chat", required_argument, 0, O_CHAT},
        {"system", required_argument, 0, O_SYSTEM},
        {"tokenizer", required_argument, 0, O_TOKENIZER},
        {"keep-special-tokens", no_argument, 0, O_KEEPSPECIAL},
        {"enable-thinking", required_argument, 0, O_THINK},
        {"gpu-memory-utilization", required_argument, 0, O_GPUUTIL},
        {"gpu-memory-gb", required_argument, 0, O_GPUGB},
        {"enforce-eager", no_argument, 0, O_EAGER},
        {"tensor-parallel-size", required_argument, 0, O_TP},
        {"tp-processes", no_argument, 0, O_TPPROC},
        {"nnodes", required_argument, 0, O_NNODES},
        {"node-rank", required_argument, 0, O_NODERANK},
        {"master-addr", required_argument, 0, O_MADDR},
        {"master-port", required_argument, 0, O_MPORT},
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
        case O_PROMPT:
        case O_CHAT:
            if (a->n_prompts == MAX_PROMPTS) {
                fprintf(stderr, "tierlm generate: at most %d prompts\n", MAX_PROMPTS);
                return 2;
            }
            a->kinds[a->n_prompts] = c == O_PIDS     ? TEXT_PROMPT_IDS
                                     : c == O_PROMPT ? TEXT_PROMPT_TEXT
                                                     : TEXT_PROMPT_CHAT;
            a->prompts[a->n_prompts++] = optarg;
            break;
        case O_GPUUTIL: {
            float f;
            bad = parse_float("--gpu-memory-utilization", optarg, &f);
            a->gpu_util = f;
            break;
        }
        case O_GPUGB: {
            float f;
            bad = parse_float("--gpu-memory-gb", optarg, &f);
            a->gpu_gb = f;
            break;
        }
        case O_EAGER:
            a->enforce_eager = 1;
            break;
        case O_TP:
            bad = parse_int("--tensor-parallel-size", optarg, 1, 1024, &a->tensor_parallel_size);
            break;
        case O_TPPROC:
        case O_NNODES:
        case O_NODERANK:
        case O_MADDR:
        case O_MPORT: {
            static const char *const names[] = {"--tp-processes", "--nnodes", "--node-rank",
                                                "--master-addr", "--master-port"};
            struct tl_err e;
            bool used;
            if (tp_dist_flag(names[c - O_TPPROC], optarg, &a->dist, &used, &e) < 0)
                bad = fprintf(stderr, "tierlm generate: %s\n", e.msg);
            break;
        }
        case O_SYSTEM:
            a->system = optarg;
            break;
        case O_TOKENIZER:
            a->tokenizer = optarg;
            break;
        case O_KEEPSPECIAL:
            a->keep_special = 1;
            break;
        case O_THINK:
            if (!strcmp(optarg, "true"))
                a->enable_thinking = 1;
            else if (!strcmp(optarg, "false"))
                a->enable_thinking = 0;
            else
                bad = fprintf(stderr, "tierlm generate: --enable-thinking must be true or false\n");
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
        fprintf(
            stderr,
            "tierlm generate: give at least one --prompt, --chat or --prompt-ids (see --help)\n");
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

/* Streams request 0's new tokens as text after each step. */
struct stream_state {
    const struct tokenizer *tok;
    struct detok *dt;
    int n_pushed;
};

static void stream_step(void *user, const struct gen_request *reqs, int n) {
    (void)n;
    struct stream_state *ss = user;
    struct tl_err err;
    while (ss->n_pushed < reqs[0].n_out) {
        const char *piece;
        size_t len;
        int32_t id = reqs[0].out[ss->n_pushed++];
        if (id >= tokenizer_n_ids(ss->tok)) continue; /* padded embedding rows: no text (as HF) */
        if (detok_push(ss->dt, id, &piece, &len, &err) == TL_OK) fwrite(piece, 1, len, stdout);
    }
    fflush(stdout);
}

int cmd_generate(int argc, char **argv) {
    struct gen_args a = {.max_tokens = 16,
                         .enable_thinking = -1,
                         .gpu_util = 0.9,
                         .device = "auto",
                         .dtype = TL_DTYPE_COUNT,
                         .block_size = 16,
                         .max_step_tokens = 2048};
    sampling_params_default(&a.sp);
    tp_dist_default(&a.dist);
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc == 1 ? 0 : rc;

    struct tl_err err = {{0}};
    struct model *m = NULL;
    struct kvcache *kv = NULL;
    struct forward *fw = NULL;
    struct backend be = {0};
    struct gen_request reqs[MAX_PROMPTS];
    int32_t *prompt_ids[MAX_PROMPTS] = {0};
    struct text_ctx tx = {.system = a.system, .enable_thinking = a.enable_thinking};
    struct stream_state ss = {0};
    memset(reqs, 0, sizeof reqs);
    rc = 1;

    double t0 = tl_now_s();
    struct model_load_opts lo = {.format = a.load_format,
                                 .dtype = a.dtype,
                                 .seed = 0,
                                 .n_threads = a.threads,
                                 .progress = progress};
    /* an impossible split is refused before minutes of loading */
    struct config pre;
    if (config_load(a.model, &pre, &err) != TL_OK) goto fail;
    if (backend_tp_check(&pre, a.device, a.tensor_parallel_size, &err) != TL_OK) goto fail;
    if (tp_dist_check(&a.dist, a.tensor_parallel_size, a.device, &err) != TL_OK) goto fail;
    /* another node's ranks: they serve node 0's steps and print nothing */
    if (a.dist.node_rank > 0) return tp_node_run(&a.dist, a.tensor_parallel_size);
    if (model_load(a.model, &lo, &m, &err) != TL_OK) goto fail;
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
    bool need_tok = false, need_chat = false;
    for (int i = 0; i < a.n_prompts; i++) {
        need_tok |= a.kinds[i] != TEXT_PROMPT_IDS;
        need_chat |= a.kinds[i] == TEXT_PROMPT_CHAT;
    }
    tx.vocab_size = c->vocab_size;
    if (text_open(&tx, a.tokenizer ? a.tokenizer : a.model, need_tok, need_chat, &err) != TL_OK)
        goto fail;
    int32_t eos[2 * CONFIG_MAX_EOS + 1];
    int n_eos = 0;
    if (tx.tok && tokenizer_eos_id(tx.tok) >= 0) eos[n_eos++] = tokenizer_eos_id(tx.tok);
    for (int i = 0; i < gc.n_eos; i++) eos[n_eos++] = gc.eos_token_ids[i];
    for (int i = 0; i < c->n_eos; i++) eos[n_eos++] = c->eos_token_ids[i];

    int longest = 0;
    int64_t need_blocks = 0;
    for (int i = 0; i < a.n_prompts; i++) {
        int n = 0;
        if (text_prompt_ids(&tx, a.kinds[i], a.prompts[i], &prompt_ids[i], &n, &err) != TL_OK) {
            rc = 2;
            fprintf(stderr, "tierlm generate: %s\n", err.msg);
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
    int step = a.max_step_tokens;
    if (step < a.n_prompts) step = a.n_prompts; /* room for one decode token per sequence */
    struct backend_args ba = {.device = a.device,
                              .threads = a.threads,
                              .block_size = a.block_size,
                              /* what the prompts need, not the whole card */
                              .num_blocks = a.num_blocks ? a.num_blocks : (int)need_blocks,
                              .cpu_blocks = (int)need_blocks,
                              .max_model_len = max_len,
                              .max_tokens = step,
                              .max_seqs = a.n_prompts,
                              .gpu_memory_utilization = a.gpu_util,
                              .gpu_memory_gb = a.gpu_gb,
                              .dtype = a.dtype,
                              .enforce_eager = a.enforce_eager,
                              .quiet = a.quiet,
                              .tensor_parallel_size = a.tensor_parallel_size,
                              .dist = a.dist,
                              .model_dir = a.model,
                              .load_format = a.load_format,
                              .load_dtype = a.dtype};
    if (backend_open(m, &ba, &be, &err) != TL_OK) goto fail;
    if (kvcache_create(be.num_blocks, a.block_size, &kv, &err) != TL_OK) goto fail;
    if (backend_forward_create(&be, m, step, a.n_prompts, &fw, &err) != TL_OK) goto fail;
    double t_load = tl_now_s() - t0;
    if (!a.quiet)
        fprintf(stderr, "tierlm: %s (%s, %d layers, %.1f MB of %s weights) loaded in %.2f s\n",
                a.model, c->arch == CONFIG_ARCH_QWEN2 ? "qwen2" : "llama", c->n_layers,
                (double)m->weight_bytes / 1e6, dtype_torch_name(m->embed.dtype), t_load);

    struct gen_opts go = {.max_step_tokens = step, .eos_ids = eos, .n_eos = n_eos};
    /* one text prompt: stream its text as it is generated */
    if (a.n_prompts == 1 && a.kinds[0] != TEXT_PROMPT_IDS) {
        ss.tok = tx.tok;
        if (detok_create(tx.tok, !a.keep_special, &ss.dt, &err) != TL_OK) goto fail;
        go.on_step = stream_step;
        go.user = &ss;
    }
    struct gen_stats gs;
    if (generate_run(fw, kv, c->vocab_size, reqs, a.n_prompts, &go, &gs, &err) != TL_OK) goto fail;
    for (int i = 0; i < a.n_prompts; i++) {
        const char *fin = reqs[i].finish == GEN_FINISH_STOP ? "stop" : "length";
        if (a.kinds[i] == TEXT_PROMPT_IDS) {
            for (int j = 0; j < reqs[i].n_out; j++) printf("%s%d", j ? "," : "", reqs[i].out[j]);
            if (!a.quiet) printf("   (%d tokens, finish: %s)", reqs[i].n_out, fin);
            printf("\n");
            continue;
        }
        if (ss.dt) { /* streamed already: flush the held-back tail */
            const char *tail;
            size_t tl;
            if (detok_flush(ss.dt, &tail, &tl, &err) != TL_OK) goto fail;
            fwrite(tail, 1, tl, stdout);
        } else {
            char *text = NULL;
            size_t len = 0;
            /* A model's embedding table is often padded past the tokenizer's ids (Qwen: 151936
             * vs 151669); like HF's decode, ids the tokenizer does not know produce no text. */
            int n_known = 0;
            for (int j = 0; j < reqs[i].n_out; j++)
                if (reqs[i].out[j] < tokenizer_n_ids(tx.tok))
                    reqs[i].out[n_known++] = reqs[i].out[j];
            if (tokenizer_decode(tx.tok, reqs[i].out, n_known, !a.keep_special, &text, &len,
                                 &err) != TL_OK)
                goto fail;
            if (a.n_prompts > 1) printf("=== %d ===\n", i);
            fwrite(text, 1, len, stdout);
            free(text);
        }
        printf("\n");
        if (!a.quiet) fprintf(stderr, "(%d tokens, finish: %s)\n", reqs[i].n_out, fin);
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
    detok_free(ss.dt);
    text_close(&tx);
    forward_destroy(fw);
    kvcache_destroy(kv);
    if (be.ops.ctx) backend_close(&be);
    model_free(m);
    for (int i = 0; i < a.n_prompts; i++) {
        free(prompt_ids[i]);
        free(reqs[i].out);
    }
    return rc;
}
