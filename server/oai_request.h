/* oai_request: parses and validates the JSON body of POST /v1/completions and
 * /v1/chat/completions into what the engine needs, with vLLM's field names, defaults and
 * messages. Pure: no engine, no tokenizer (prompts stay text or ids; prompt.h turns them into
 * ids). Thread-safe (no shared state). */
#ifndef TL_SERVER_OAI_REQUEST_H
#define TL_SERVER_OAI_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "engine.h"
#include "status.h"

enum oai_kind {
    OAI_COMPLETION = 0, /* POST /v1/completions */
    OAI_CHAT,           /* POST /v1/chat/completions */
};

struct oai_limits {
    int max_choices;     /* most choices in one request: n x prompts */
    int vocab_size;      /* every token id must be below this */
    int max_messages;    /* most chat messages */
    int default_max_new; /* generation_config's max_new_tokens, 0 = none */
};

/* One completion prompt: text or token ids. */
struct oai_prompt {
    const char *text; /* borrowed from the request's JSON, or NULL */
    size_t text_len;
    int32_t *ids; /* owned, when the prompt is token ids */
    int n_ids;
};

struct oai_request {
    enum oai_kind kind;
    json_t *root;      /* owned reference; the borrowed strings below live in it */
    const char *model; /* "model", or NULL when absent */

    struct oai_prompt *prompts; /* owned (completions): n_prompts >= 1 */
    int n_prompts;

    struct chat_message *messages; /* owned array (chat); strings borrowed or in owned_text */
    int n_messages;
    char **owned_text; /* joined content parts, owned */
    int n_owned_text;
    struct chat_options chat_opts;
    bool continue_final_message;

    bool add_special_tokens;    /* completions: true, chat: false (vLLM's defaults) */
    int truncate_prompt_tokens; /* 0 = off; else keep the last k prompt tokens */

    struct engine_params params; /* stop points into stop_strs, stop_token_ids into stop_ids */
    const char *stop_strs[ENGINE_MAX_STOP];
    int32_t *stop_ids;   /* owned */
    bool max_tokens_set; /* the client gave max_tokens (or max_completion_tokens) */
    int n;               /* choices per prompt */
    bool stream, include_usage, continuous_usage;
    bool echo;             /* completions: prepend the prompt */
    bool return_token_ids; /* vLLM's return_token_ids: ids beside the text */
    int n_unknown;         /* top-level fields we do not know (ignored, counted) */
};

/* Parses body (len bytes, need not be NUL-terminated). defaults: the server's sampling
 * defaults (vLLM's overlaid with generation_config.json); unset fields keep them. On failure
 * returns TL_ERR_INVALID (nothing to free), err holds a message for the client and *param the
 * offending field ("max_tokens", "messages[2].content", ...; NULL when none applies). */
enum tl_status oai_request_parse(enum oai_kind kind, const char *body, size_t len,
                                 const struct engine_params *defaults, const struct oai_limits *lim,
                                 struct oai_request *out, char *param, size_t param_len,
                                 struct tl_err *err);

void oai_request_free(struct oai_request *r);

/* Parses a JSON value as an integer: a JSON integer, or a real with no fraction (as
 * pydantic accepts 16.0). false when it is neither or out of [lo, hi]. */
bool oai_json_int(const json_t *v, long long lo, long long hi, long long *out);

#endif
