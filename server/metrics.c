/* metrics: the exposition text. Names, help texts and types follow vLLM's metrics (so its
 * Grafana dashboards work); histogram buckets are the engine's. */
#include "metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

struct out {
    struct buf *b;
    const char *label; /* model_name="..." */
    int err;
};

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line || buf_append(o->b, line, (size_t)n)) o->err = 1;
}

void metrics_format_double(char *out, double v) {
    if (isnan(v)) {
        snprintf(out, 32, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, 32, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == floor(v) && fabs(v) < 9007199254740992.0) { /* integers as integers, not 1e+02 */
        snprintf(out, 32, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

static void head(struct out *o, const char *name, const char *type, const char *help) {
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(struct out *o, const char *name, double v) {
    char num[32];
    metrics_format_double(num, v);
    put(o, "%s{%s} %s\n", name, o->label, num);
}

static void metric(struct out *o, const char *name, const char *type, const char *help, double v) {
    head(o, name, type, help);
    sample(o, name, v);
}

static void histogram(struct out *o, const char *name, const char *help,
                      const struct engine_hist *h) {
    char le[32], sum[32];
    head(o, name, "histogram", help);
    for (int i = 0; i < h->n_le && i < ENGINE_HIST_MAX; i++) {
        metrics_format_double(le, h->le[i]);
        put(o, "%s_bucket{le=\"%s\",%s} %llu\n", name, le, o->label,
            (unsigned long long)h->counts[i]);
    }
    put(o, "%s_bucket{le=\"+Inf\",%s} %llu\n", name, o->label, (unsigned long long)h->count);
    put(o, "%s_count{%s} %llu\n", name, o->label, (unsigned long long)h->count);
    metrics_format_double(sum, h->sum);
    put(o, "%s_sum{%s} %s\n", name, o->label, sum);
}

/* model_name="..." with the label value escaped as the text format wants. */
static int make_label(char *out, size_t n, const char *model) {
    size_t w = (size_t)snprintf(out, n, "model_name=\"");
    for (const char *p = model; *p; p++) {
        if (w + 3 >= n) return -1;
        if (*p == '\\' || *p == '"')
            out[w++] = '\\', out[w++] = *p;
        else if (*p == '\n')
            out[w++] = '\\', out[w++] = 'n';
        else
            out[w++] = *p;
    }
    if (w + 2 >= n) return -1;
    out[w++] = '"';
    out[w] = 0;
    return 0;
}

int metrics_render(struct buf *b, const char *model_name, const struct engine_metrics *m,
                   const struct metrics_server *s) {
    char label[600];
    if (make_label(label, sizeof label, model_name)) return -1;
    struct out o = {b, label, 0};

    metric(&o, "vllm:num_requests_running", "gauge",
           "Number of requests in model execution batches.", m->num_running);
    metric(&o, "vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
           m->num_waiting);
    metric(&o, "vllm:num_requests_swapped", "gauge", "Number of requests swapped to CPU.",
           m->num_swapped);
    metric(&o, "vllm:gpu_cache_usage_perc", "gauge",
           "GPU KV-cache usage. 1 means 100 percent usage.", m->gpu_cache_usage);
    metric(&o, "vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
           m->gpu_cache_usage);
    metric(&o, "vllm:cpu_cache_usage_perc", "gauge",
           "CPU KV-cache usage. 1 means 100 percent usage.", m->cpu_cache_usage);
    metric(&o, "vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
           (double)m->prompt_tokens_total);
    metric(&o, "vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
           (double)m->generation_tokens_total);
    metric(&o, "vllm:num_preemptions_total", "counter",
           "Cumulative number of preemption from the engine.", (double)m->num_preemptions_total);
    metric(&o, "vllm:prefix_cache_queries_total", "counter",
           "Prefix cache queries, in terms of number of queried tokens.",
           (double)m->prefix_cache_queries_total);
    metric(&o, "vllm:prefix_cache_hits_total", "counter",
           "Prefix cache hits, in terms of number of cached tokens.",
           (double)m->prefix_cache_hits_total);
    head(&o, "vllm:request_success_total", "counter", "Count of successfully processed requests.");
    for (int f = ENGINE_FINISH_STOP; f < ENGINE_FINISH_COUNT; f++)
        put(&o, "vllm:request_success_total{finished_reason=\"%s\",%s} %lld\n",
            engine_finish_str((enum engine_finish)f), label,
            (long long)m->request_success_total[f]);
    histogram(&o, "vllm:time_to_first_token_seconds",
              "Histogram of time to first token in seconds.", &m->ttft);
    histogram(&o, "vllm:time_per_output_token_seconds",
              "Histogram of time per output token in seconds.", &m->tpot);
    histogram(&o, "vllm:e2e_request_latency_seconds",
              "Histogram of end to end request latency in seconds.", &m->e2e);

    metric(&o, "tierlm:kv_blocks_total", "gauge", "KV blocks in the device tier.",
           m->kv_blocks_total);
    metric(&o, "tierlm:kv_blocks_used", "gauge", "KV blocks held by requests.", m->kv_blocks_used);
    metric(&o, "tierlm:engine_steps_total", "counter", "Engine steps run.", (double)m->steps_total);
    metric(&o, "tierlm:engine_busy_seconds_total", "counter", "Wall time spent in engine steps.",
           m->busy_s);
    metric(&o, "tierlm:request_unknown_fields_total", "counter",
           "Request fields ignored because the server does not know them.",
           (double)s->unknown_fields_total);
    metric(&o, "tierlm:requests_rejected_total", "counter",
           "Generation requests refused with 429 because the queue was full.",
           (double)s->rejected_total);
    metric(&o, "tierlm:client_disconnects_total", "counter",
           "Requests aborted because their client went away.", (double)s->client_gone_total);
    head(&o, "tierlm:http_responses_total", "counter", "HTTP answers by status code.");
    for (int c = 100; c < METRICS_MAX_STATUS; c++)
        if (s->responses[c])
            put(&o, "tierlm:http_responses_total{code=\"%d\",%s} %lld\n", c, label,
                (long long)s->responses[c]);
    return o.err ? -1 : 0;
}
