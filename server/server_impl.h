/* server_impl: the server's state, shared by the files of the server module (server.c: the
 * CivetWeb side and routing; routes.c: the small endpoints; oai_serve.c: the generation
 * endpoints). Counters are atomics: every CivetWeb worker updates them. */
#ifndef TL_SERVER_IMPL_H
#define TL_SERVER_IMPL_H

#include <stdatomic.h>
#include <stddef.h>

#include "http.h"
#include "metrics.h"
#include "oai_request.h"
#include "prompt.h"
#include "server.h"

struct mg_context;

struct server {
    struct server_opts o;  /* strings borrowed from the caller */
    struct server_model m; /* borrowed */
    struct prompt_ctx pctx;
    struct oai_limits lim;
    struct mg_context *ctx;
    int port;
    int capacity;         /* engine requests in flight before 429: max_num_seqs + queued */
    atomic_int inflight;  /* engine requests submitted and not yet released */
    atomic_bool stopping; /* server_stop has begun: generations abort, new ones get 503 */
    atomic_llong unknown_fields, rejected, client_gone;
    atomic_llong responses[METRICS_MAX_STATUS];
    long long started; /* unix time, the models' "created" */
};

/* Small endpoints (routes.c). Each answers the request (r->status says how). */
void route_health(struct server *s, struct http_req *r, const char *body, size_t len);
void route_version(struct server *s, struct http_req *r, const char *body, size_t len);
void route_models(struct server *s, struct http_req *r, const char *body, size_t len);
void route_metrics(struct server *s, struct http_req *r, const char *body, size_t len);
void route_tokenize(struct server *s, struct http_req *r, const char *body, size_t len);
void route_detokenize(struct server *s, struct http_req *r, const char *body, size_t len);

/* True when name is one of the served model names. */
bool server_knows_model(const struct server *s, const char *name);

/* The generation endpoints (oai_serve.c): parse, tokenize, admit, submit, then stream or
 * answer whole; a client that goes away has its requests aborted. Blocks until done. */
void oai_serve(struct server *s, struct http_req *r, enum oai_kind kind, const char *body,
               size_t len);

#endif
