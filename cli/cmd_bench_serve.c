/* cmd_bench_serve: `tierlm bench serve`, vLLM's benchmark_serving against any OpenAI-compatible
 * endpoint (ours or another). Random prompts (token ids, or text through --tokenizer as vLLM's
 * random dataset), sent at a Poisson (or gamma, --burstiness) request rate or all at once, at
 * most --max-concurrency in flight, each streamed; per request it records the time to the
 * first chunk, the gaps between chunks and the end, then prints vLLM's table (request / output
 * / total token throughput; mean, median, p99 of TTFT, TPOT, ITL, E2EL in ms) and writes JSON.
 * One thread: libcurl's multi interface drives every transfer, so timestamps come from one
 * clock without locks. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "clock.h"
#include "sampler.h"
#include "tokenizer.h"

struct bs_args {
    const char *base_url, *endpoint, *model, *tokenizer, *api_key;
    int num_prompts, input_len, output_len, prefix_len, max_concurrency;
    double range_ratio, request_rate, burstiness;
    bool ignore_eos, save_result;
    unsigned long long seed;
    const char *output_json, *result_dir, *result_filename, *percentiles;
};

struct rq {
    int32_t *ids; /* the prompt (n_in) */
    int n_in, n_out;
    char *body;                              /* the JSON request */
    double arrival, start, first, last, end; /* seconds since the run began */
    double *itl;
    int n_itl, cap_itl;
    int out_tokens; /* from the usage chunk, else the chunks with text */
    int chunks_with_text;
    bool ok, done, got_first;
    long status;
    char *error;
    char *sse; /* unparsed tail of the stream */
    size_t sse_len;
    CURL *easy;
    struct curl_slist *headers;
};

static void help(FILE *f) {
    fprintf(
        f,
        "usage: tierlm bench serve [--base-url URL] [--model NAME] [flags]\n"
        "\n"
        "vLLM's benchmark_serving against an OpenAI-compatible server (tierlm serve, vLLM, ...):\n"
        "--num-prompts random prompts sent at --request-rate (Poisson; inf = all at once), at\n"
        "most --max-concurrency in flight, each streamed. Prints request / output / total\n"
        "token throughput and mean, median and p99 of TTFT, TPOT, ITL and E2EL (ms).\n"
        "\n"
        "  --base-url URL           the server   [http://127.0.0.1:8000]\n"
        "  --host H, --port P       the same as a base URL of http://H:P\n"
        "  --endpoint PATH          /v1/completions or /v1/chat/completions   [/v1/completions]\n"
        "  --model NAME             the model field   [the first of GET /v1/models]\n"
        "  --api-key KEY            sent as a bearer key   [env OPENAI_API_KEY]\n"
        "  --tokenizer DIR          make text prompts as vLLM's random dataset (decoded random\n"
        "                           ids); without it prompts are sent as token ids\n"
        "  --dataset-name random    the only dataset   [random]\n"
        "  --num-prompts N          requests   [1000]\n"
        "  --random-input-len N     prompt tokens   [1024]\n"
        "  --random-output-len N    max_tokens   [128]\n"
        "  --random-range-ratio R   lengths uniform in [L(1-R), L(1+R)]   [0]\n"
        "  --random-prefix-len N    a shared random prefix before every prompt   [0]\n"
        "  --request-rate R         requests per second, or inf   [inf]\n"
        "  --burstiness B           gamma shape of the arrivals (1 = Poisson)   [1]\n"
        "  --max-concurrency N      most requests in flight   [no limit]\n"
        "  --ignore-eos             generate exactly the output length (vLLM's ignore_eos)\n"
        "  --seed S                 prompts and arrivals   [0]\n"
        "  --metric-percentiles L   comma-separated percentiles to report   [99]\n"
        "  --output-json FILE       write the results as JSON\n"
        "  --save-result            write them to --result-dir/--result-filename as vLLM\n"
        "  -h, --help               this help\n");
}

static int parse_num(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = v && !strcmp(v, "inf") ? INFINITY : strtod(v ? v : "", &end);
    if (!v || (isfinite(x) && (errno || end == v || *end)) || !(x >= lo && x <= hi)) {
        fprintf(stderr, "tierlm bench serve: %s must be a number in [%g, %g], got '%s'\n", flag, lo,
                hi, v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_int(const char *flag, const char *v, int lo, int *out) {
    double x;
    if (parse_num(flag, v, lo, INT_MAX, &x) || x != floor(x)) {
        fprintf(stderr, "tierlm bench serve: %s must be an integer >= %d\n", flag, lo);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int parse_args(int argc, char **argv, struct bs_args *a, char *url_buf, size_t url_len) {
    *a = (struct bs_args){.base_url = "http://127.0.0.1:8000",
                          .endpoint = "/v1/completions",
                          .num_prompts = 1000,
                          .input_len = 1024,
                          .output_len = 128,
                          .request_rate = INFINITY,
                          .burstiness = 1.0,
                          .result_dir = ".",
                          .percentiles = "99",
                          .api_key = getenv("OPENAI_API_KEY")};
    const char *host = NULL;
    int port = 0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) {
            help(stdout);
            return 1;
        }
        if (!strcmp(f, "--ignore-eos")) {
            a->ignore_eos = true;
            continue;
        }
        if (!strcmp(f, "--save-result")) {
            a->save_result = true;
            continue;
        }
        if (!strcmp(f, "--disable-tqdm")) continue;
        if (!v) {
            fprintf(stderr, "tierlm bench serve: unknown flag or missing value: %s\n", f);
            return 2;
        }
        i++;
        int bad = 0;
        if (!strcmp(f, "--base-url"))
            a->base_url = v;
        else if (!strcmp(f, "--host"))
            host = v;
        else if (!strcmp(f, "--port"))
            bad = parse_int(f, v, 1, &port);
        else if (!strcmp(f, "--endpoint"))
            a->endpoint = v;
        else if (!strcmp(f, "--model"))
            a->model = v;
        else if (!strcmp(f, "--api-key"))
            a->api_key = v;
        else if (!strcmp(f, "--tokenizer"))
            a->tokenizer = v;
        else if (!strcmp(f, "--dataset-name"))
            bad = strcmp(v, "random") != 0;
        else if (!strcmp(f, "--backend"))
            bad = strcmp(v, "openai") && strcmp(v, "openai-chat") && strcmp(v, "vllm");
        else if (!strcmp(f, "--num-prompts"))
            bad = parse_int(f, v, 1, &a->num_prompts);
        else if (!strcmp(f, "--random-input-len"))
            bad = parse_int(f, v, 1, &a->input_len);
        else if (!strcmp(f, "--random-output-len"))
            bad = parse_int(f, v, 1, &a->output_len);
        else if (!strcmp(f, "--random-prefix-len"))
            bad = parse_int(f, v, 0, &a->prefix_len);
        else if (!strcmp(f, "--max-concurrency"))
            bad = parse_int(f, v, 1, &a->max_concurrency);
        else if (!strcmp(f, "--random-range-ratio"))
            bad = parse_num(f, v, 0, 0.999, &a->range_ratio);
        else if (!strcmp(f, "--request-rate"))
            bad = parse_num(f, v, 1e-6, INFINITY, &a->request_rate);
        else if (!strcmp(f, "--burstiness"))
            bad = parse_num(f, v, 1e-3, 1e6, &a->burstiness);
        else if (!strcmp(f, "--seed")) {
            bad = parse_num(f, v, 0, 1.8e19, &x);
            a->seed = (unsigned long long)x;
        } else if (!strcmp(f, "--metric-percentiles"))
            a->percentiles = v;
        else if (!strcmp(f, "--output-json"))
            a->output_json = v;
        else if (!strcmp(f, "--result-dir"))
            a->result_dir = v;
        else if (!strcmp(f, "--result-filename"))
            a->result_filename = v;
        else {
            fprintf(stderr, "tierlm bench serve: unknown flag %s (tierlm bench serve --help)\n", f);
            return 2;
        }
        if (bad) {
            if (bad == 1 && (!strcmp(f, "--dataset-name") || !strcmp(f, "--backend")))
                fprintf(stderr, "tierlm bench serve: %s %s is not supported\n", f, v);
            return 2;
        }
    }
    if (host || port) {
        snprintf(url_buf, url_len, "http://%s:%d", host ? host : "127.0.0.1", port ? port : 8000);
        a->base_url = url_buf;
    }
    if (strcmp(a->endpoint, "/v1/completions") && strcmp(a->endpoint, "/v1/chat/completions")) {
        fprintf(stderr, "tierlm bench serve: --endpoint must be /v1/completions or "
                        "/v1/chat/completions\n");
        return 2;
    }
    if (!strcmp(a->endpoint, "/v1/chat/completions") && !a->tokenizer) {
        fprintf(stderr, "tierlm bench serve: chat prompts are text: give --tokenizer DIR\n");
        return 2;
    }
    return 0;
}

/* ---- HTTP ---- */

struct grow {
    char *p;
    size_t n;
};

static size_t grow_write(char *data, size_t size, size_t nmemb, void *user) {
    struct grow *g = user;
    size_t n = size * nmemb;
    char *p = realloc(g->p, g->n + n + 1);
    if (!p) return 0;
    memcpy(p + g->n, data, n);
    g->p = p;
    g->n += n;
    p[g->n] = 0;
    return n;
}

static struct curl_slist *auth_headers(const char *key, bool json) {
    struct curl_slist *h = NULL;
    if (json) h = curl_slist_append(h, "Content-Type: application/json");
    if (key) {
        char line[1024];
        snprintf(line, sizeof line, "Authorization: Bearer %s", key);
        h = curl_slist_append(h, line);
    }
    return h;
}

/* GET base/v1/models: the first model's id, malloc'd, or NULL with a message printed. */
static char *first_model(const struct bs_args *a) {
    char url[2048];
    snprintf(url, sizeof url, "%s/v1/models", a->base_url);
    CURL *c = curl_easy_init();
    struct grow g = {0};
    struct curl_slist *h = auth_headers(a->api_key, false);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, grow_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &g);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    char *id = NULL;
    json_t *j = g.p ? json_loads(g.p, 0, NULL) : NULL;
    const char *s =
        json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "id"));
    if (rc == CURLE_OK && status == 200 && s)
        id = strdup(s);
    else
        fprintf(stderr, "tierlm bench serve: GET %s failed (%s, HTTP %ld): %.200s\n", url,
                curl_easy_strerror(rc), status, g.p ? g.p : "");
    json_decref(j);
    free(g.p);
    return id;
}

/* ---- prompts ---- */

static uint64_t rng_u64(struct sampler_rng *r) {
    /* xoshiro256** step on the sampler's state, so the sequence is ours and fixed by --seed */
    uint64_t *s = r->s, res = s[1] * 5, t = s[1] << 17;
    res = ((res << 7) | (res >> 57)) * 9;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return res;
}

static double rng_unit(struct sampler_rng *r) {
    return (double)(rng_u64(r) >> 11) * 0x1.0p-53;
}

static int rng_int(struct sampler_rng *r, int lo, int hi) { /* [lo, hi] */
    return lo + (int)(rng_u64(r) % (uint64_t)(hi - lo + 1));
}

static double rng_normal(struct sampler_rng *r) {
    double u = rng_unit(r), v = rng_unit(r);
    return sqrt(-2.0 * log(u > 0 ? u : 1e-300)) * cos(2.0 * M_PI * v);
}

/* Gamma(shape k, scale theta) by Marsaglia and Tsang; k < 1 through the k + 1 boost. */
static double rng_gamma(struct sampler_rng *r, double k, double theta) {
    if (k < 1.0) {
        double u = rng_unit(r);
        return rng_gamma(r, k + 1.0, theta) * pow(u > 0 ? u : 1e-300, 1.0 / k);
    }
    double d = k - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = rng_normal(r), v = 1.0 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = rng_unit(r);
        if (log(u > 0 ? u : 1e-300) < 0.5 * x * x + d - d * v + d * log(v)) return d * v * theta;
    }
}

struct vocab {
    const struct tokenizer *tok;
    int32_t *ids; /* ids a random prompt may use: no special tokens */
    int n;
};

static int vocab_init(struct vocab *v, const struct tokenizer *tok) {
    v->tok = tok;
    int n = tok ? tokenizer_n_ids(tok) : 30000;
    v->ids = malloc((size_t)n * sizeof *v->ids);
    if (!v->ids) return -1;
    v->n = 0;
    /* without a tokenizer: ids in [100, 30000) exist in every Llama / Qwen vocabulary and are
     * not special there */
    for (int i = tok ? 0 : 100; i < n; i++)
        if (!tok || !tokenizer_is_special(tok, i)) v->ids[v->n++] = i;
    return 0;
}

static char *json_body(const struct bs_args *a, const char *model, const struct vocab *v,
                       const int32_t *ids, int n_in, int n_out) {
    json_t *j = json_pack("{s:s,s:i,s:f,s:b,s:{s:b}}", "model", model, "max_tokens", n_out,
                          "temperature", 0.0, "stream", 1, "stream_options", "include_usage", 1);
    if (!j) return NULL;
    if (a->ignore_eos) json_object_set_new(j, "ignore_eos", json_true());
    bool chat = strcmp(a->endpoint, "/v1/chat/completions") == 0;
    if (v->tok) {
        char *text = NULL;
        size_t len = 0;
        struct tl_err err;
        if (tokenizer_decode(v->tok, ids, n_in, false, &text, &len, &err) != TL_OK) {
            json_decref(j);
            return NULL;
        }
        json_t *t = json_stringn(text, len);
        free(text);
        if (chat)
            json_object_set_new(j, "messages",
                                json_pack("[{s:s,s:o}]", "role", "user", "content", t));
        else
            json_object_set_new(j, "prompt", t);
    } else {
        json_t *p = json_array();
        for (int i = 0; i < n_in; i++) json_array_append_new(p, json_integer(ids[i]));
        json_object_set_new(j, "prompt", p);
    }
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

/* vLLM's random dataset: lengths uniform in [L(1-r), L(1+r)], random ids after a shared
 * prefix; arrival times from a gamma process (Poisson at burstiness 1), the first at 0. */
static int make_requests(const struct bs_args *a, const char *model, const struct vocab *v,
                         struct rq *rq) {
    struct sampler_rng rng;
    sampler_rng_seed(&rng, a->seed);
    int32_t *prefix = malloc(((size_t)a->prefix_len + 1) * sizeof *prefix);
    if (!prefix) return -1;
    for (int i = 0; i < a->prefix_len; i++) prefix[i] = v->ids[rng_u64(&rng) % (uint64_t)v->n];
    double t = 0;
    for (int r = 0; r < a->num_prompts; r++) {
        int in_lo = (int)floor(a->input_len * (1 - a->range_ratio));
        int in_hi = (int)ceil(a->input_len * (1 + a->range_ratio));
        int out_lo = (int)floor(a->output_len * (1 - a->range_ratio));
        int out_hi = (int)ceil(a->output_len * (1 + a->range_ratio));
        int n_in = rng_int(&rng, in_lo > 1 ? in_lo : 1, in_hi);
        int n_out = rng_int(&rng, out_lo > 1 ? out_lo : 1, out_hi);
        rq[r].n_in = a->prefix_len + n_in;
        rq[r].n_out = n_out;
        rq[r].ids = malloc((size_t)rq[r].n_in * sizeof *rq[r].ids);
        if (!rq[r].ids) break;
        memcpy(rq[r].ids, prefix, (size_t)a->prefix_len * sizeof *prefix);
        for (int i = 0; i < n_in; i++)
            rq[r].ids[a->prefix_len + i] = v->ids[rng_u64(&rng) % (uint64_t)v->n];
        rq[r].body = json_body(a, model, v, rq[r].ids, rq[r].n_in, n_out);
        if (!rq[r].body) break;
        rq[r].arrival = t;
        if (isfinite(a->request_rate))
            t += rng_gamma(&rng, a->burstiness, 1.0 / (a->request_rate * a->burstiness));
    }
    free(prefix);
    for (int r = 0; r < a->num_prompts; r++)
        if (!rq[r].body) return -1;
    return 0;
}

/* ---- streaming ---- */

static double t0; /* the run's start on the monotonic clock */

static void fail_rq(struct rq *r, const char *fmt, const char *detail) {
    if (r->error) return;
    size_t n = strlen(fmt) + (detail ? strlen(detail) : 0) + 1;
    r->error = malloc(n);
    if (r->error) snprintf(r->error, n, fmt, detail ? detail : "");
}

static void on_event(struct rq *r, const char *data, double t) {
    if (!strcmp(data, "[DONE]")) {
        r->done = true;
        return;
    }
    json_t *j = json_loads(data, 0, NULL);
    if (!j) return fail_rq(r, "a chunk that is not JSON: %.200s", data);
    json_t *err = json_object_get(j, "error");
    if (err) {
        char *s = json_dumps(err, JSON_COMPACT);
        fail_rq(r, "error in the stream: %s", s);
        free(s);
    }
    json_t *choices = json_object_get(j, "choices");
    if (json_array_size(choices) > 0) {
        /* as vLLM's client: every chunk with a choice is a token event */
        if (!r->got_first) {
            r->got_first = true;
            r->first = t;
        } else {
            if (r->n_itl == r->cap_itl) {
                int cap = r->cap_itl ? 2 * r->cap_itl : 64;
                double *g = realloc(r->itl, (size_t)cap * sizeof *g);
                if (g) r->itl = g, r->cap_itl = cap;
            }
            if (r->n_itl < r->cap_itl) r->itl[r->n_itl++] = t - r->last;
        }
        r->last = t;
        json_t *c0 = json_array_get(choices, 0);
        const char *text = json_string_value(json_object_get(c0, "text"));
        if (!text)
            text = json_string_value(json_object_get(json_object_get(c0, "delta"), "content"));
        if (text && *text) r->chunks_with_text++;
    }
    json_t *usage = json_object_get(j, "usage");
    if (json_is_object(usage) && json_is_integer(json_object_get(usage, "completion_tokens")))
        r->out_tokens = (int)json_integer_value(json_object_get(usage, "completion_tokens"));
    json_decref(j);
}

static size_t on_data(char *data, size_t size, size_t nmemb, void *user) {
    struct rq *r = user;
    size_t n = size * nmemb;
    double t = tl_now_s() - t0;
    char *g = realloc(r->sse, r->sse_len + n + 1);
    if (!g) return 0;
    r->sse = g;
    memcpy(r->sse + r->sse_len, data, n);
    r->sse_len += n;
    r->sse[r->sse_len] = 0;
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) return n; /* the error body is read whole at the end */
    char *p = r->sse, *e;
    while ((e = strstr(p, "\n\n"))) {
        *e = 0;
        for (char *line = p; line && *line;) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = 0;
            if (!strncmp(line, "data: ", 6))
                on_event(r, line + 6, t);
            else if (!strncmp(line, "data:", 5))
                on_event(r, line + 5, t);
            line = nl ? nl + 1 : NULL;
        }
        p = e + 2;
    }
    r->sse_len -= (size_t)(p - r->sse);
    memmove(r->sse, p, r->sse_len + 1);
    return n;
}

static int start_rq(CURLM *m, const struct bs_args *a, struct rq *r) {
    char url[2048];
    snprintf(url, sizeof url, "%s%s", a->base_url, a->endpoint);
    r->easy = curl_easy_init();
    if (!r->easy) return -1;
    r->headers = auth_headers(a->api_key, true);
    curl_easy_setopt(r->easy, CURLOPT_URL, url);
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->easy, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(r->easy, CURLOPT_TIMEOUT, 6L * 3600);
    r->start = tl_now_s() - t0;
    return curl_multi_add_handle(m, r->easy) == CURLM_OK ? 0 : -1;
}

static void finish_rq(CURLM *m, struct rq *r, CURLcode rc) {
    r->end = tl_now_s() - t0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    if (rc != CURLE_OK)
        fail_rq(r, "transfer failed: %s", curl_easy_strerror(rc));
    else if (r->status != 200) {
        char head[64];
        snprintf(head, sizeof head, "HTTP %ld: %%s", r->status);
        fail_rq(r, head, r->sse ? r->sse : "");
    } else if (!r->got_first)
        fail_rq(r, "the stream held no chunk%s", NULL);
    if (!r->out_tokens) r->out_tokens = r->chunks_with_text;
    r->ok = !r->error;
    curl_multi_remove_handle(m, r->easy);
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    r->easy = NULL;
    r->headers = NULL;
}

/* Sends every request at its arrival time (as soon as a slot is free under
 * --max-concurrency) and runs them all to the end. Returns the run's wall time. */
static double run(const struct bs_args *a, struct rq *rq, int n) {
    CURLM *m = curl_multi_init();
    long conns = a->max_concurrency ? a->max_concurrency : n;
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, conns + 8);
    t0 = tl_now_s();
    int next = 0, active = 0, finished = 0;
    while (finished < n) {
        double t = tl_now_s() - t0;
        while (next < n && rq[next].arrival <= t &&
               (!a->max_concurrency || active < a->max_concurrency)) {
            if (start_rq(m, a, &rq[next])) {
                fail_rq(&rq[next], "could not start the transfer%s", NULL);
                finished++;
            } else {
                active++;
            }
            next++;
        }
        int running;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            struct rq *r;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            finish_rq(m, r, msg->data.result);
            active--;
            finished++;
        }
        int wait_ms = 100;
        if (next < n && (!a->max_concurrency || active < a->max_concurrency)) {
            double dt = rq[next].arrival - (tl_now_s() - t0);
            wait_ms = dt <= 0 ? 0 : dt < 0.1 ? (int)ceil(dt * 1e3) : 100;
        }
        if (finished < n) curl_multi_poll(m, NULL, 0, wait_ms, NULL);
    }
    double el = tl_now_s() - t0;
    curl_multi_cleanup(m);
    return el;
}

/* ---- statistics, as numpy computes them ---- */

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double percentile(const double *sorted, int n, double p) { /* numpy "linear" */
    if (n == 0) return 0;
    double rank = p / 100.0 * (n - 1);
    int lo = (int)floor(rank), hi = (int)ceil(rank);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

struct stat_set {
    const char *key, *title, *name;
    double *v; /* seconds, sorted after stats_finish */
    int n;
};

static void stat_fill(json_t *out, struct stat_set *s, const double *pcts, int n_p, bool print) {
    qsort(s->v, (size_t)s->n, sizeof *s->v, cmp_double);
    double sum = 0, sq = 0;
    for (int i = 0; i < s->n; i++) sum += s->v[i];
    double mean = s->n ? sum / s->n : 0;
    for (int i = 0; i < s->n; i++) sq += (s->v[i] - mean) * (s->v[i] - mean);
    double sd = s->n ? sqrt(sq / s->n) : 0, med = percentile(s->v, s->n, 50);
    char k[64];
    snprintf(k, sizeof k, "mean_%s_ms", s->key);
    json_object_set_new(out, k, json_real(mean * 1e3));
    snprintf(k, sizeof k, "median_%s_ms", s->key);
    json_object_set_new(out, k, json_real(med * 1e3));
    snprintf(k, sizeof k, "std_%s_ms", s->key);
    json_object_set_new(out, k, json_real(sd * 1e3));
    if (print) {
        char l[64];
        printf("%s\n", s->title);
        snprintf(l, sizeof l, "Mean %s (ms):", s->name);
        printf("%-40s %.2f\n", l, mean * 1e3);
        snprintf(l, sizeof l, "Median %s (ms):", s->name);
        printf("%-40s %.2f\n", l, med * 1e3);
    }
    for (int i = 0; i < n_p; i++) {
        char pk[32];
        snprintf(pk, sizeof pk, "%g", pcts[i]);
        snprintf(k, sizeof k, "p%s_%s_ms", pk, s->key);
        double v = percentile(s->v, s->n, pcts[i]);
        json_object_set_new(out, k, json_real(v * 1e3));
        if (print) {
            char l[64];
            snprintf(l, sizeof l, "P%s %s (ms):", pk, s->name);
            printf("%-40s %.2f\n", l, v * 1e3);
        }
    }
}

static json_t *seconds_array(const double *v, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

static int report(const struct bs_args *a, const char *model, struct rq *rq, int n, double el) {
    double pcts[16];
    int n_p = 0;
    for (const char *p = a->percentiles; *p && n_p < 16;) {
        char *end;
        double x = strtod(p, &end);
        if (end == p || x < 0 || x > 100) {
            fprintf(stderr, "tierlm bench serve: --metric-percentiles takes numbers in [0, 100]\n");
            return 2;
        }
        pcts[n_p++] = x;
        p = *end == ',' ? end + 1 : end;
    }
    int completed = 0, n_itl = 0;
    long long in_tok = 0, out_tok = 0;
    for (int i = 0; i < n; i++) {
        if (!rq[i].ok) continue;
        completed++;
        in_tok += rq[i].n_in;
        out_tok += rq[i].out_tokens;
        n_itl += rq[i].n_itl;
    }
    struct stat_set st[4] = {
        {"ttft", "---------------Time to First Token----------------", "TTFT", NULL, 0},
        {"tpot", "-----Time per Output Token (excl. 1st token)------", "TPOT", NULL, 0},
        {"itl", "---------------Inter-token Latency----------------", "ITL", NULL, 0},
        {"e2el", "----------------End-to-end Latency----------------", "E2EL", NULL, 0},
    };
    for (int s = 0; s < 4; s++) st[s].v = calloc((size_t)(s == 2 ? n_itl : n) + 1, sizeof(double));
    json_t *ttfts = json_array(), *itls = json_array(), *e2els = json_array(),
           *in_lens = json_array(), *out_lens = json_array(), *errors = json_array();
    for (int i = 0; i < n; i++) {
        struct rq *r = &rq[i];
        json_array_append_new(errors, json_string(r->error ? r->error : ""));
        if (!r->ok) continue;
        double ttft = r->first - r->start, e2e = r->end - r->start;
        st[0].v[st[0].n++] = ttft;
        if (r->out_tokens > 1) st[1].v[st[1].n++] = (e2e - ttft) / (r->out_tokens - 1);
        for (int k = 0; k < r->n_itl; k++) st[2].v[st[2].n++] = r->itl[k];
        st[3].v[st[3].n++] = e2e;
        json_array_append_new(ttfts, json_real(ttft));
        json_array_append_new(itls, seconds_array(r->itl, r->n_itl));
        json_array_append_new(e2els, json_real(e2e));
        json_array_append_new(in_lens, json_integer(r->n_in));
        json_array_append_new(out_lens, json_integer(r->out_tokens));
    }
    char rate[32], date[32];
    snprintf(rate, sizeof rate, "%g", a->request_rate);
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y%m%d-%H%M%S", localtime(&now));
    json_t *out = json_pack(
        "{s:s,s:s,s:s,s:s,s:i,s:s,s:f,s:o,s:f,s:i,s:I,s:I,s:f,s:f,s:f}", "date", date, "backend",
        "openai", "model_id", model, "tokenizer_id", a->tokenizer ? a->tokenizer : "",
        "num_prompts", n, "request_rate", rate, "burstiness", a->burstiness, "max_concurrency",
        a->max_concurrency ? json_integer(a->max_concurrency) : json_null(), "duration", el,
        "completed", completed, "total_input_tokens", (json_int_t)in_tok, "total_output_tokens",
        (json_int_t)out_tok, "request_throughput", completed / el, "output_throughput",
        (double)out_tok / el, "total_token_throughput", (double)(in_tok + out_tok) / el);
    if (!out) return 1;
    printf("============ Serving Benchmark Result ============\n");
    printf("%-40s %d\n", "Successful requests:", completed);
    printf("%-40s %d\n", "Failed requests:", n - completed);
    printf("%-40s %s\n", "Request rate configured (RPS):", rate);
    if (a->max_concurrency)
        printf("%-40s %d\n", "Maximum request concurrency:", a->max_concurrency);
    printf("%-40s %.2f\n", "Benchmark duration (s):", el);
    printf("%-40s %lld\n", "Total input tokens:", in_tok);
    printf("%-40s %lld\n", "Total generated tokens:", out_tok);
    printf("%-40s %.2f\n", "Request throughput (req/s):", completed / el);
    printf("%-40s %.2f\n", "Output token throughput (tok/s):", (double)out_tok / el);
    printf("%-40s %.2f\n", "Total Token throughput (tok/s):", (double)(in_tok + out_tok) / el);
    for (int s = 0; s < 4; s++) {
        stat_fill(out, &st[s], pcts, n_p, true);
        free(st[s].v);
    }
    printf("==================================================\n");
    for (int i = 0, shown = 0; i < n && shown < 3; i++)
        if (rq[i].error) fprintf(stderr, "request %d failed: %.300s\n", i, rq[i].error), shown++;
    json_object_set_new(out, "input_lens", in_lens);
    json_object_set_new(out, "output_lens", out_lens);
    json_object_set_new(out, "ttfts", ttfts);
    json_object_set_new(out, "itls", itls);
    json_object_set_new(out, "e2els", e2els);
    json_object_set_new(out, "errors", errors);
    int rc = 0;
    char path[4096];
    const char *files[2] = {a->output_json, NULL};
    if (a->save_result) {
        if (a->result_filename)
            snprintf(path, sizeof path, "%s/%s", a->result_dir, a->result_filename);
        else
            snprintf(path, sizeof path, "%s/openai-%sqps-%s-%s.json", a->result_dir, rate, model,
                     date);
        files[1] = path;
    }
    for (int f = 0; f < 2; f++) {
        if (!files[f]) continue;
        if (json_dump_file(out, files[f], JSON_INDENT(2)) != 0) {
            fprintf(stderr, "tierlm bench serve: cannot write %s\n", files[f]);
            rc = 1;
        }
    }
    json_decref(out);
    return rc ? rc : completed == n ? 0 : 1;
}

int cmd_bench_serve(int argc, char **argv) {
    struct bs_args a;
    char url[512];
    int rc = parse_args(argc, argv, &a, url, sizeof url);
    if (rc) return rc == 1 ? 0 : 2;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "tierlm bench serve: libcurl failed to initialise\n");
        return 1;
    }
    struct tokenizer *tok = NULL;
    struct tl_err err;
    char *model = NULL;
    struct vocab v = {0};
    struct rq *rq = NULL;
    rc = 1;
    if (a.tokenizer && tokenizer_load(a.tokenizer, &tok, &err) != TL_OK) {
        fprintf(stderr, "tierlm bench serve: %s\n", err.msg);
        goto out;
    }
    model = a.model ? strdup(a.model) : first_model(&a);
    if (!model || vocab_init(&v, tok)) goto out;
    rq = calloc((size_t)a.num_prompts + 1, sizeof *rq);
    if (!rq || make_requests(&a, model, &v, rq)) {
        fprintf(stderr, "tierlm bench serve: out of memory making %d prompts\n", a.num_prompts);
        goto out;
    }
    /* as vLLM: one request first, so a wrong URL, key or model fails before the timed run */
    printf("Starting initial single prompt test run...\n");
    struct rq probe = {.n_in = rq[0].n_in, .n_out = rq[0].n_out, .body = rq[0].body};
    struct bs_args one = a;
    one.max_concurrency = 1;
    run(&one, &probe, 1);
    if (!probe.ok) {
        fprintf(stderr, "tierlm bench serve: the test request failed: %s\n",
                probe.error ? probe.error : "?");
        free(probe.error);
        free(probe.itl);
        free(probe.sse);
        goto out;
    }
    free(probe.itl);
    free(probe.sse);
    printf("Initial test run completed. Starting main benchmark run...\n");
    printf(
        "Traffic request rate: %g\nBurstiness factor: %g (%s)\nMaximum request concurrency: %s\n",
        a.request_rate, a.burstiness,
        a.burstiness == 1.0 ? "Poisson process" : "Gamma distribution",
        a.max_concurrency ? "limited" : "None");
    double el = run(&a, rq, a.num_prompts);
    rc = report(&a, model, rq, a.num_prompts, el);
out:
    for (int i = 0; rq && i < a.num_prompts; i++) {
        free(rq[i].ids);
        free(rq[i].body);
        free(rq[i].itl);
        free(rq[i].error);
        free(rq[i].sse);
    }
    free(rq);
    free(v.ids);
    free(model);
    tokenizer_free(tok);
    curl_global_cleanup();
    return rc;
}
