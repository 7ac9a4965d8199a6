/* metrics: renders GET /metrics in Prometheus' text format (0.0.4) with vLLM's metric names
 * (vllm:num_requests_running, vllm:time_to_first_token_seconds, ...) labelled model_name, and
 * tierlm's own beside them (tierlm:...). Pure: it formats a snapshot, it takes no locks. */
#ifndef TL_SERVER_METRICS_H
#define TL_SERVER_METRICS_H

#include <stdint.h>

#include "buf.h"
#include "engine.h"

#define METRICS_MAX_STATUS 600

/* What the HTTP front end counts itself. */
struct metrics_server {
    int64_t unknown_fields_total; /* request fields ignored because we do not know them */
    int64_t rejected_total;       /* generation requests refused because the queue was full */
    int64_t client_gone_total;    /* requests aborted because their client went away */
    int64_t responses[METRICS_MAX_STATUS]; /* answers by HTTP status */
};

/* Appends the whole exposition to out; 0, or -1 when memory runs out. */
int metrics_render(struct buf *out, const char *model_name, const struct engine_metrics *m,
                   const struct metrics_server *s);

/* Shortest decimal that reads back as v ("0.001", "+Inf", "NaN"); out holds 32 bytes. */
void metrics_format_double(char *out, double v);

#endif
