/* server: `tierlm serve`'s HTTP front end: vLLM's OpenAI-compatible REST API on CivetWeb over a
 * running engine. POST /v1/completions, /v1/chat/completions (streaming or whole), /tokenize,
 * /detokenize; GET /v1/models, /health, /version, /metrics. Safe by default: loopback only
 * unless told, optional bearer key, CORS off, capped bodies / headers / choices / queue, no
 * files served. Each request runs on a CivetWeb worker thread; the engine runs on its own. */
#ifndef TL_SERVER_SERVER_H
#define TL_SERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "chat.h"
#include "engine.h"
#include "status.h"
#include "tokenizer.h"

#define SERVER_MAX_NAMES 8

/* Options; strings are borrowed and must outlive the server. */
struct server_opts {
    const char *host;    /* "127.0.0.1"; "0.0.0.0" or "::" to listen beyond this host */
    int port;            /* 0 = any free port (see server_port) */
    const char *api_key; /* NULL = no key needed */
    const char *served_model_names[SERVER_MAX_NAMES]; /* the first is reported */
    int n_served_model_names;
    const char *allowed_origins; /* NULL = CORS off; "*" or a comma-separated list */
    const char *allowed_methods; /* "*" or a list; default "*" */
    const char *allowed_headers; /* "*" or a list; default "*" */
    bool allow_credentials;
    bool reasoning_deepseek_r1; /* --reasoning-parser deepseek_r1 */
    bool log_requests;          /* one line per answered request on stderr */
    size_t max_request_bytes;   /* body cap (413 above) */
    int max_header_bytes;       /* request line + headers cap */
    int max_queued_requests;    /* generation requests beyond max_num_seqs before 429 */
    int max_num_seqs;           /* the engine's running limit */
    int max_choices;            /* n x prompts per request */
};

/* Defaults: 127.0.0.1:8000, no key, CORS off, 8 MiB bodies, 16 KiB headers, 256 queued, 16
 * choices, request log on. */
void server_opts_default(struct server_opts *o);

/* What the server serves; borrowed, must outlive the server. */
struct server_model {
    struct engine *engine;            /* running (engine_start called) */
    const struct tokenizer *tok;      /* NULL: token-id prompts only */
    const struct chat_template *chat; /* NULL: no chat endpoint */
    struct engine_params defaults;    /* vLLM's + generation_config.json's */
    int default_max_new_tokens;       /* generation_config max_new_tokens, 0 = none */
    int max_model_len;
    int vocab_size;
    const char *model_path; /* reported as "root" by /v1/models */
};

struct server;

/* Binds and starts serving (CivetWeb threads). A port in use or a bad host is TL_ERR_IO
 * naming it. */
enum tl_status server_start(const struct server_opts *o, const struct server_model *m,
                            struct server **out, struct tl_err *err);

/* The port it listens on (useful with port 0). */
int server_port(const struct server *s);

/* Stops taking requests, aborts the generations in flight, waits for every handler to
 * return, frees the server. Blocks. */
void server_stop(struct server *s);

#endif
