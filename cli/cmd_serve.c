/* cmd_serve: `tierlm serve` boots the engine (the shared engine flags, engine_args.h), starts
 * its loop thread and the OpenAI-compatible HTTP server, and runs until SIGINT or SIGTERM,
 * then stops the server (aborting what runs), the engine, and frees everything. */
#include <errno.h>
#include <netdb.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli.h"
#include "engine_args.h"
#include "server.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: tierlm serve --model DIR [flags]\n"
            "\n"
            "Serves the model over vLLM's OpenAI-compatible REST API: POST /v1/completions,\n"
            "/v1/chat/completions, /tokenize, /detokenize; GET /v1/models, /health, /version,\n"
            "/metrics. Runs until SIGINT / SIGTERM.\n"
            "\n"
            "server (vLLM's names):\n"
            "  --host H                 address to listen on   [127.0.0.1; 0.0.0.0 = all]\n"
            "  --port P                 TCP port (0 = any free one)   [8000]\n"
            "  --api-key KEY            require 'Authorization: Bearer KEY' on every route but\n"
            "                           /health   [env VLLM_API_KEY]\n"
            "  --served-model-name N..  model name(s) clients use   [the model directory's name]\n"
            "  --chat-template FILE     a Jinja chat template replacing the tokenizer config's\n"
            "  --reasoning-parser P     deepseek_r1: <think>...</think> into reasoning_content\n"
            "  --allowed-origins LIST   enable CORS for these origins ('*', a comma list or\n"
            "                           vLLM's JSON list)   [CORS off]\n"
            "  --allowed-methods LIST   CORS methods   [*]\n"
            "  --allowed-headers LIST   CORS headers   [*]\n"
            "  --allow-credentials      CORS credentials\n"
            "  --disable-log-requests   no line per request on stderr\n"
            "limits (tierlm's):\n"
            "  --max-request-bytes N    largest request body (413 above)   [8388608]\n"
            "  --max-header-bytes N     largest request line + headers   [16384]\n"
            "  --max-queued-requests N  requests waiting beyond --max-num-seqs before 429\n"
            "                           with Retry-After   [256]\n"
            "  --max-n N                most choices (n x prompts) in one request   [16]\n");
    engine_args_help(f);
    fprintf(f, "  -h, --help               this help\n");
}

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s ? s : "", &end, 10);
    if (!s || errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "tierlm serve: %s must be an integer in [%ld, %ld], got '%s'\n", flag, lo,
                hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

struct serve_args {
    struct engine_args ea;
    struct server_opts so;
    const char *chat_template;
};

/* Returns 0 to run, 1 after --help, 2 on a usage error. */
static int parse_args(int argc, char **argv, struct serve_args *a) {
    engine_args_default(&a->ea);
    server_opts_default(&a->so);
    a->so.api_key = getenv("VLLM_API_KEY");
    for (int i = 1; i < argc;) {
        struct tl_err err;
        int r = engine_args_parse(&a->ea, argc, argv, &i, &err);
        if (r < 0) {
            fprintf(stderr, "tierlm serve: %s\n", err.msg);
            return 2;
        }
        if (r > 0) { /* engine_args_parse leaves i on the flag's last word */
            i++;
            continue;
        }
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        int used = 2;
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) {
            help(stdout);
            return 1;
        } else if (!strcmp(f, "--host") && v) {
            a->so.host = v;
        } else if (!strcmp(f, "--port")) {
            if (parse_long(f, v, 0, 65535, &n)) return 2;
            a->so.port = (int)n;
        } else if (!strcmp(f, "--api-key") && v) {
            a->so.api_key = v;
        } else if (!strcmp(f, "--served-model-name") && v) {
            used = 1;
            while (i + used < argc && strncmp(argv[i + used], "--", 2) != 0) {
                if (a->so.n_served_model_names == SERVER_MAX_NAMES) {
                    fprintf(stderr, "tierlm serve: at most %d --served-model-name names\n",
                            SERVER_MAX_NAMES);
                    return 2;
                }
                a->so.served_model_names[a->so.n_served_model_names++] = argv[i + used++];
            }
        } else if (!strcmp(f, "--chat-template") && v) {
            a->chat_template = v;
        } else if (!strcmp(f, "--reasoning-parser") && v) {
            if (strcmp(v, "deepseek_r1") != 0) {
                fprintf(stderr,
                        "tierlm serve: --reasoning-parser: only deepseek_r1 is "
                        "supported, got '%s'\n",
                        v);
                return 2;
            }
            a->so.reasoning_deepseek_r1 = true;
        } else if (!strcmp(f, "--allowed-origins") && v) {
            a->so.allowed_origins = v;
        } else if (!strcmp(f, "--allowed-methods") && v) {
            a->so.allowed_methods = v;
        } else if (!strcmp(f, "--allowed-headers") && v) {
            a->so.allowed_headers = v;
        } else if (!strcmp(f, "--allow-credentials")) {
            a->so.allow_credentials = true;
            used = 1;
        } else if (!strcmp(f, "--disable-log-requests") ||
                   !strcmp(f, "--disable-uvicorn-access-log")) {
            a->so.log_requests = false;
            used = 1;
        } else if (!strcmp(f, "--max-request-bytes")) {
            if (parse_long(f, v, 1024, 1L << 30, &n)) return 2;
            a->so.max_request_bytes = (size_t)n;
        } else if (!strcmp(f, "--max-header-bytes")) {
            if (parse_long(f, v, 1024, 1 << 20, &n)) return 2;
            a->so.max_header_bytes = (int)n;
        } else if (!strcmp(f, "--max-queued-requests")) {
            if (parse_long(f, v, 0, 100000, &n)) return 2;
            a->so.max_queued_requests = (int)n;
        } else if (!strcmp(f, "--max-n")) {
            if (parse_long(f, v, 1, 1024, &n)) return 2;
            a->so.max_choices = (int)n;
        } else {
            fprintf(stderr,
                    "tierlm serve: unrecognized option or missing value '%s' "
                    "(tierlm serve --help)\n",
                    f);
            return 2;
        }
        i += used;
    }
    if (!a->ea.model) {
        fprintf(stderr, "tierlm serve: --model DIR is required (tierlm serve --help)\n");
        return 2;
    }
    return 0;
}

static enum tl_status load_template(const char *arg, struct chat_template **out,
                                    struct tl_err *err) {
    FILE *f = fopen(arg, "rb");
    if (!f) /* as vLLM: not a file, so the template itself */
        return chat_template_from_string(arg, NULL, NULL, out, err);
    char *src = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&src, &n);
    char chunk[4096];
    size_t got;
    while (m && (got = fread(chunk, 1, sizeof chunk, f)) > 0) fwrite(chunk, 1, got, m);
    fclose(f);
    if (!m) return tl_fail(err, TL_ERR_NOMEM, "out of memory reading %s", arg);
    fclose(m);
    enum tl_status st = chat_template_from_string(src, NULL, NULL, out, err);
    free(src);
    if (st != TL_OK) tl_err_prefix(err, "--chat-template %s", arg);
    return st;
}

/* Fails fast when the address cannot be bound (port in use, address not on this host), before
 * minutes of loading a model. CivetWeb binds again once the engine runs. */
static int probe_listen(const char *host, int port) {
    if (port == 0) return 0;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc || !res) {
        fprintf(stderr, "tierlm serve: --host %s: %s\n", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM, 0), one = 1, err = 0;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, res->ai_addr, res->ai_addrlen)) err = errno;
        close(fd);
    }
    freeaddrinfo(res);
    if (err) {
        fprintf(stderr, "tierlm serve: cannot listen on %s port %d: %s%s\n", host, port,
                strerror(err), err == EADDRINUSE ? " (another server? pick one with --port)" : "");
        return -1;
    }
    return 0;
}

int cmd_serve(int argc, char **argv) {
    struct serve_args a = {0};
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc == 1 ? 0 : 2;

    /* SIGINT / SIGTERM are taken by sigwait below; every thread started from here on
     * inherits the mask, so none of them is interrupted by the signal. */
    sigset_t stop_sigs;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGINT);
    sigaddset(&stop_sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_sigs, NULL);

    if (probe_listen(a.so.host, a.so.port)) return 1;
    struct tl_err err;
    struct engine_boot b;
    /* another node's ranks: they serve node 0's steps (node 0 runs the server) */
    if (a.ea.dist.node_rank > 0 && a.ea.tensor_parallel_size > 1) {
        if (tp_dist_check(&a.ea.dist, a.ea.tensor_parallel_size, a.ea.device, &err) != TL_OK) {
            fprintf(stderr, "tierlm serve: %s\n", err.msg);
            return 1;
        }
        return tp_node_run(&a.ea.dist, a.ea.tensor_parallel_size);
    }
    if (engine_boot_open(&a.ea, &b, &err) != TL_OK) {
        fprintf(stderr, "tierlm serve: %s\n", err.msg);
        return 1;
    }
    struct chat_template *override = NULL;
    if (a.chat_template && load_template(a.chat_template, &override, &err) != TL_OK) {
        fprintf(stderr, "tierlm serve: %s\n", err.msg);
        engine_boot_close(&b);
        return 1;
    }
    if (b.tok && !b.chat && !override) {
        /* engine_boot drops the reason; load it again to tell the user why chat is off */
        struct chat_template *t = NULL;
        const char *dir = a.ea.tokenizer ? a.ea.tokenizer : a.ea.model;
        if (chat_template_load(dir, &t, &err) != TL_OK)
            fprintf(stderr,
                    "WARNING: tierlm serve: /v1/chat/completions is off: %s (--chat-template FILE "
                    "gives one)\n",
                    err.msg);
        chat_template_free(t);
    }
    if (a.so.n_served_model_names == 0) {
        a.so.served_model_names[0] = b.model_name;
        a.so.n_served_model_names = 1;
    }
    a.so.max_num_seqs = a.ea.max_num_seqs;
    struct server_model m = {
        .engine = b.engine,
        .tok = b.tok,
        .chat = override ? override : b.chat,
        .default_max_new_tokens = b.gen.has_max_new_tokens ? b.gen.max_new_tokens : 0,
        .max_model_len = b.max_model_len,
        .vocab_size = engine_vocab_size(b.engine),
        .model_path = a.ea.model,
    };
    engine_boot_default_params(&b, &m.defaults);

    struct server *srv = NULL;
    rc = 1;
    if (engine_start(b.engine, &err) != TL_OK) {
        fprintf(stderr, "tierlm serve: %s\n", err.msg);
    } else if (server_start(&a.so, &m, &srv, &err) != TL_OK) {
        fprintf(stderr, "tierlm serve: %s\n", err.msg);
    } else {
        const char *h = a.so.host;
        fprintf(
            stderr,
            "INFO: tierlm serve: listening on http://%s%s%s:%d (model %s, max_model_len %d%s)\n",
            strchr(h, ':') ? "[" : "", h, strchr(h, ':') ? "]" : "", server_port(srv),
            a.so.served_model_names[0], m.max_model_len, a.so.api_key ? ", API key required" : "");
        int sig = 0;
        sigwait(&stop_sigs, &sig);
        fprintf(stderr, "INFO: tierlm serve: %s, shutting down\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM");
        server_stop(srv);
        rc = 0;
    }
    engine_boot_close(&b);
    chat_template_free(override);
    return rc;
}
