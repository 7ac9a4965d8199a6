/* cmd_bench: `tierlm bench throughput`, vLLM's benchmark_throughput on random prompts: every
 * request is submitted at once, each generates exactly --output-len tokens (ignore_eos,
 * temperature 1, top_p 1), and the wall time from first submit to last token gives requests/s,
 * total tokens/s and output tokens/s, printed and written as JSON. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "engine_args.h"
#ifdef TL_HAVE_CUDA
#include "gpu_backend.h"
#endif

struct tp_args {
    struct engine_args ea;
    int input_len, output_len, num_prompts;
    unsigned long long seed;
    const char *output_json;
    bool warmup;
};

static void tp_help(FILE *f) {
    fprintf(f,
            "usage: tierlm bench throughput --model DIR [--input-len N] [--output-len N]\n"
            "                               [--num-prompts N] [engine flags]\n"
            "\n"
            "vLLM's benchmark_throughput: --num-prompts random prompts of --input-len tokens,\n"
            "all submitted at once; each generates --output-len tokens (ignore_eos,\n"
            "temperature 1, top_p 1). Prints requests/s, total tokens/s, output tokens/s.\n"
            "\n"
            "benchmark:\n"
            "  --input-len N            prompt tokens per request   [512]\n"
            "  --output-len N           generated tokens per request   [128]\n"
            "  --num-prompts N          requests   [256]\n"
            "  --seed N                 seed of the random prompts   [0]\n"
            "  --output-json FILE       also write the results as JSON\n"
            "  --no-warmup              do not run a few short requests first (they capture the\n"
            "                           CUDA graphs, as vLLM does while starting)\n");
    engine_args_help(f);
}

static int parse_int(const char *flag, const char *v, int lo, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > INT_MAX) {
        fprintf(stderr, "tierlm bench throughput: %s must be an integer >= %d, got '%s'\n", flag,
                lo, v);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int tp_parse(int argc, char **argv, struct tp_args *a) {
    for (int i = 1; i < argc; i++) {
        struct tl_err err;
        int r = engine_args_parse(&a->ea, argc, argv, &i, &err);
        if (r < 0) {
            fprintf(stderr, "tierlm bench throughput: %s\n", err.msg);
            return 2;
        }
        if (r > 0) continue;
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            tp_help(stdout);
            return 1;
        }
        if (!strcmp(f, "--no-warmup")) {
            a->warmup = false;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tierlm bench throughput: unknown flag or missing value: %s\n", f);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(f, "--input-len"))
            bad = parse_int(f, v, 1, &a->input_len);
        else if (!strcmp(f, "--output-len"))
            bad = parse_int(f, v, 1, &a->output_len);
        else if (!strcmp(f, "--num-prompts"))
            bad = parse_int(f, v, 1, &a->num_prompts);
        else if (!strcmp(f, "--seed"))
            a->seed = strtoull(v, NULL, 10);
        else if (!strcmp(f, "--output-json"))
            a->output_json = v;
        else {
            fprintf(stderr, "tierlm bench throughput: unknown flag %s (see --help)\n", f);
            return 2;
        }
        if (bad) return 2;
    }
    if (!a->ea.model) {
        fprintf(stderr, "tierlm bench throughput: --model DIR is required (see --help)\n");
        return 2;
    }
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t next_rand(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Submits n requests of random prompts and waits for all; returns generated tokens or -1. */
static long long run_batch(struct engine *e, int n, int in_len, int out_len, uint64_t seed,
                           double *elapsed) {
    int vocab = engine_vocab_size(e);
    struct engine_request **reqs = calloc((size_t)n, sizeof *reqs);
    int32_t *prompt = malloc((size_t)in_len * sizeof *prompt);
    long long out = 0;
    if (!reqs || !prompt) {
        fprintf(stderr, "tierlm bench throughput: out of host memory\n");
        out = -1;
        goto done;
    }
    struct engine_params p;
    engine_params_default(&p);
    p.max_tokens = out_len;
    p.ignore_eos = true;
    p.sp.temperature = 1.0f;
    p.sp.top_p = 1.0f;
    uint64_t s = seed;
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < in_len; j++) prompt[j] = (int32_t)(next_rand(&s) % (uint64_t)vocab);
        p.sp.has_seed = true;
        p.sp.seed = seed * 1000003ull + (uint64_t)i;
        struct tl_err err;
        if (engine_submit(e, prompt, in_len, &p, &reqs[i], &err) != TL_OK) {
            fprintf(stderr, "tierlm bench throughput: %s\n", err.msg);
            out = -1;
            goto done;
        }
    }
    for (int i = 0; i < n; i++) {
        struct engine_output o;
        do {
            engine_request_wait(reqs[i], -1, &o);
            out += o.n_new;
        } while (o.finish == ENGINE_FINISH_NONE);
        if (o.finish != ENGINE_FINISH_LENGTH) {
            fprintf(stderr, "tierlm bench throughput: request %d ended with %s%s%s\n", i,
                    engine_finish_str(o.finish), o.error ? ": " : "", o.error ? o.error : "");
            out = -1;
        }
    }
    *elapsed = now_s() - t0;
done:
    for (int i = 0; reqs && i < n; i++) engine_request_release(reqs[i]);
    free(reqs);
    free(prompt);
    return out;
}

/* Bytes the weight streamer copied and the time its copy stream was busy since the last call
 * (0 without streaming); blocks until the queued copies are done. */
static void stream_stats(const struct engine_boot *b, size_t *bytes, double *busy_s) {
    *bytes = 0;
    *busy_s = 0.0;
#ifdef TL_HAVE_CUDA
    if (b->be.cuda) gpu_backend_stream_stats(&b->be.ops, bytes, busy_s);
#else
    (void)b;
#endif
}

static int bench_throughput(int argc, char **argv) {
    struct tp_args a = {.input_len = 512, .output_len = 128, .num_prompts = 256, .warmup = true};
    engine_args_default(&a.ea);
    a.ea.no_tokenizer = true; /* random token ids: no text needed */
    int rc = tp_parse(argc, argv, &a);
    if (rc) return rc == 1 ? 0 : rc;
    if (a.ea.max_model_len == 0) a.ea.max_model_len = a.input_len + a.output_len;
    /* the planner ranks placements for this very workload */
    if (a.ea.expected_prompt_len == 0) a.ea.expected_prompt_len = a.input_len;

    struct engine_boot b;
    struct tl_err err;
    if (engine_boot_open(&a.ea, &b, &err) != TL_OK) {
        fprintf(stderr, "tierlm bench throughput: %s\n", err.msg);
        return 1;
    }
    rc = 1;
    if (engine_start(b.engine, &err) != TL_OK) {
        fprintf(stderr, "tierlm bench throughput: %s\n", err.msg);
        goto out;
    }
    double el = 0;
    if (a.warmup) {
        int n = a.ea.max_num_seqs < 16 ? a.ea.max_num_seqs : 16;
        if (run_batch(b.engine, n, 8, 8, a.seed + 777, &el) < 0) goto out;
    }
    struct engine_metrics m0, m1;
    engine_metrics_get(b.engine, &m0);
    size_t sbytes;
    double sbusy;
    stream_stats(&b, &sbytes, &sbusy); /* from here on */
    long long gen = run_batch(b.engine, a.num_prompts, a.input_len, a.output_len, a.seed, &el);
    stream_stats(&b, &sbytes, &sbusy);
    if (gen < 0) goto out;
    engine_metrics_get(b.engine, &m1);
    long long total = (long long)a.num_prompts * a.input_len + gen;
    double rps = a.num_prompts / el, tps = total / el, ops = gen / el;
    printf("Throughput: %.2f requests/s, %.2f total tokens/s, %.2f output tokens/s\n", rps, tps,
           ops);
    long long steps = m1.steps_total - m0.steps_total;
    double busy = m1.busy_s - m0.busy_s;
    printf("Steps: %lld (%.2f ms each), preemptions: %lld, engine busy %.1f%% of the wall time\n",
           steps, steps ? 1e3 * busy / steps : 0.0,
           (long long)(m1.num_preemptions_total - m0.num_preemptions_total), 100.0 * busy / el);
    /* Every step's sequences must hold their KV on the GPU: the blocks they held, summed over
     * the steps, over the cache's blocks is the fewest steps any schedule needs. */
    double held = (double)(m1.step_blocks_total - m0.step_blocks_total);
    double min_steps = m1.kv_blocks_total > 0 ? held / m1.kv_blocks_total : 0.0;
    if (steps > 0 && m1.kv_blocks_total > 0)
        printf("KV blocks: the steps held %.1f%% of the %d GPU blocks on average; no schedule "
               "needs fewer than %.0f steps (%.2f of the %lld run)\n",
               100.0 * held / steps / m1.kv_blocks_total, m1.kv_blocks_total, min_steps,
               min_steps / steps, steps);
    long long dsteps = m1.decode_steps - m0.decode_steps;
    long long dtok = m1.decode_tokens - m0.decode_tokens;
    double ds = m1.decode_s - m0.decode_s;
    double dev = m1.device_s - m0.device_s, ddev = m1.decode_device_s - m0.decode_device_s;
    if (dsteps > 0)
        printf("Decode-only steps: %lld, %.2f ms each, %.2f tokens/s (%.1f sequences a step)\n",
               dsteps, 1e3 * ds / dsteps, dtok / ds, (double)dtok / dsteps);
    long long fsteps = m1.full_decode_steps - m0.full_decode_steps;
    double fs = m1.full_decode_s - m0.full_decode_s;
    if (fsteps > 0)
        printf("Full-batch decode (%d sequences a step): %lld steps, %.2f ms each, %.2f tokens/s\n",
               a.ea.max_num_seqs, fsteps, 1e3 * fs / fsteps, a.ea.max_num_seqs * fsteps / fs);
    if (dev > 0)
        printf("GPU span: %.1f%% of the steps' wall time (decode-only steps: %.1f%%); the rest is "
               "host-only work (scheduling, sampling bookkeeping, text)\n",
               100.0 * dev / busy, ds > 0 ? 100.0 * ddev / ds : 0.0);
    if (sbytes > 0 && sbusy > 0)
        printf("Weight streaming: %.1f GB over PCIe, %.1f GB/s while copying (%.2f of the %.1f "
               "GB/s pinned H2D ceiling calibrated on this machine), copy engine busy %.1f%% of "
               "the wall time\n",
               sbytes / 1e9, sbytes / 1e9 / sbusy,
               b.pcie_h2d_gbps > 0 ? sbytes / 1e9 / sbusy / b.pcie_h2d_gbps : 0.0, b.pcie_h2d_gbps,
               100.0 * sbusy / el);
    double lane_cpu = m1.decode_cpu_lane_s - m0.decode_cpu_lane_s;
    double lane_cross = m1.decode_cross_s - m0.decode_cross_s;
    double fwd = m1.decode_forward_s - m0.decode_forward_s;
    double tail = m1.decode_tail_s - m0.decode_tail_s;
    if (dsteps > 0 && lane_cpu + lane_cross > 0)
        printf("CPU lane: %.2f ms of each decode step in its layers, %.2f ms crossing lanes (GPU "
               "waits included); planner: %.2f ms CPU busy, %.2f ms of crossings\n",
               1e3 * lane_cpu / dsteps, 1e3 * lane_cross / dsteps, 1e3 * b.predicted_cpu_s,
               1e3 * b.predicted_hop_s);
    if (dsteps > 0 && fwd > 0)
        printf("Decode step, host time: %.2f ms in the forward (%.2f queuing and the rest of the "
               "layers, %.2f waiting for the device's tail and the sample), %.2f in the engine "
               "around it\n",
               1e3 * fwd / dsteps, 1e3 * (fwd - lane_cpu - lane_cross - tail) / dsteps,
               1e3 * tail / dsteps, 1e3 * (ds - fwd) / dsteps);
    if (b.offloaded && dsteps > 0)
        printf("Placement %s: planner predicted %.2f ms a decode step (%.1f tok/s); measured "
               "%.2f ms at full batch (%.2f of the prediction)\n",
               b.placement, 1e3 * b.predicted_step_s, b.predicted_tok_s,
               1e3 * (fsteps > 0 ? fs / fsteps : ds / dsteps),
               (fsteps > 0 ? fs / fsteps : ds / dsteps) / b.predicted_step_s);
    bool tiers = m1.cpu_blocks_total > 0;
    long long p_swap = m1.num_preemptions_swap_total - m0.num_preemptions_swap_total;
    long long p_rec = m1.num_preemptions_recompute_total - m0.num_preemptions_recompute_total;
    long long recov = m1.num_swap_recoveries_total - m0.num_swap_recoveries_total;
    int64_t b_out = m1.swap_out_bytes_total - m0.swap_out_bytes_total;
    int64_t b_in = m1.swap_in_bytes_total - m0.swap_in_bytes_total;
    int64_t b_nw = m1.nvme_write_bytes_total - m0.nvme_write_bytes_total;
    int64_t b_nr = m1.nvme_read_bytes_total - m0.nvme_read_bytes_total;
    if (tiers)
        printf("KV tiers: preemptions %lld by swap, %lld by recompute, %lld recovered after a "
               "tier failure; swap out %.0f MiB, in %.0f MiB, NVMe write %.0f MiB, read %.0f MiB\n",
               p_swap, p_rec, recov, b_out / 1048576.0, b_in / 1048576.0, b_nw / 1048576.0,
               b_nr / 1048576.0);
    if (a.output_json) {
        json_t *j = json_object();
        json_object_set_new(j, "elapsed_time", json_real(el));
        json_object_set_new(j, "num_requests", json_integer(a.num_prompts));
        json_object_set_new(j, "total_num_tokens", json_integer(total));
        json_object_set_new(j, "total_output_tokens", json_integer(gen));
        json_object_set_new(j, "requests_per_second", json_real(rps));
        json_object_set_new(j, "tokens_per_second", json_real(tps));
        json_object_set_new(j, "output_tokens_per_second", json_real(ops));
        json_object_set_new(j, "input_len", json_integer(a.input_len));
        json_object_set_new(j, "output_len", json_integer(a.output_len));
        json_object_set_new(j, "num_preemptions",
                            json_integer(m1.num_preemptions_total - m0.num_preemptions_total));
        json_object_set_new(j, "num_steps", json_integer(steps));
        json_object_set_new(j, "kv_bound_steps", json_real(min_steps));
        json_object_set_new(j, "decode_tokens_per_second", json_real(ds > 0 ? dtok / ds : 0.0));
        json_object_set_new(j, "decode_step_ms", json_real(dsteps > 0 ? 1e3 * ds / dsteps : 0.0));
        json_object_set_new(j, "gpu_span_fraction", json_real(busy > 0 ? dev / busy : 0.0));
        json_object_set_new(j, "full_batch_decode_step_ms",
                            json_real(fsteps > 0 ? 1e3 * fs / fsteps : 0.0));
        if (b.offloaded) {
            json_object_set_new(j, "placement", json_string(b.placement));
            json_object_set_new(j, "predicted_step_ms", json_real(1e3 * b.predicted_step_s));
            json_object_set_new(j, "predicted_tok_s", json_real(b.predicted_tok_s));
            json_object_set_new(j, "streamed_bytes", json_integer((json_int_t)sbytes));
            json_object_set_new(j, "stream_gbps", json_real(sbusy > 0 ? sbytes / 1e9 / sbusy : 0));
        }
        if (tiers) {
            json_object_set_new(j, "num_preemptions_swap", json_integer(p_swap));
            json_object_set_new(j, "num_preemptions_recompute", json_integer(p_rec));
            json_object_set_new(j, "num_swap_recoveries", json_integer(recov));
            json_object_set_new(j, "swap_out_bytes", json_integer(b_out));
            json_object_set_new(j, "swap_in_bytes", json_integer(b_in));
            json_object_set_new(j, "nvme_write_bytes", json_integer(b_nw));
            json_object_set_new(j, "nvme_read_bytes", json_integer(b_nr));
        }
        if (!j || json_dump_file(j, a.output_json, JSON_INDENT(4)) != 0) {
            fprintf(stderr, "tierlm bench throughput: cannot write %s\n", a.output_json);
            json_decref(j);
            goto out;
        }
        json_decref(j);
    }
    rc = 0;
out:
    engine_boot_close(&b);
    return rc;
}

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} benches[] = {
    {"throughput", bench_throughput, "offline throughput, as vLLM's benchmark_throughput"},
    {"serve", cmd_bench_serve, "an OpenAI endpoint under load, as vLLM's benchmark_serving"},
    {"kv-tiers", bench_kv_tiers, "KV swap rates against pinned copies and raw io_uring"},
};

int cmd_bench(int argc, char **argv) {
    size_t n = sizeof benches / sizeof *benches;
    if (argc >= 2)
        for (size_t i = 0; i < n; i++)
            if (!strcmp(argv[1], benches[i].name)) return benches[i].run(argc - 1, argv + 1);
    FILE *f = argc >= 2 && strcmp(argv[1], "--help") ? stderr : stdout;
    fprintf(f, "usage: tierlm bench <kind> [flags]   (tierlm bench <kind> --help)\n\nkinds:\n");
    for (size_t i = 0; i < n; i++) fprintf(f, "  %-12s %s\n", benches[i].name, benches[i].help);
    return f == stdout ? 0 : 2;
}
