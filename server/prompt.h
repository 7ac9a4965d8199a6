/* prompt: turns a parsed request's prompts into token ids (completion text through the
 * tokenizer, chat messages through the chat template and then the tokenizer without adding
 * special tokens again, as vLLM does), checks ids against the model's vocabulary, and makes
 * vLLM's context-length check with vLLM's wording, which clients parse. Thread-safe: the
 * tokenizer and the template are immutable. */
#ifndef TL_SERVER_PROMPT_H
#define TL_SERVER_PROMPT_H

#include <stdbool.h>
#include <stdint.h>

#include "chat.h"
#include "oai_request.h"
#include "status.h"
#include "tokenizer.h"

struct prompt_ctx {
    const struct tokenizer *tok;      /* borrowed; NULL: token-id prompts only */
    const struct chat_template *chat; /* borrowed; NULL: no chat endpoint */
    int vocab_size;                   /* the model's embeddings */
};

/* The ids of completion prompt p (malloc'd into *ids, the caller frees). A text prompt without
 * a tokenizer, an empty result or an id beyond the model is TL_ERR_INVALID with a message. */
enum tl_status prompt_completion(const struct prompt_ctx *c, const struct oai_prompt *p,
                                 bool add_special, int32_t **ids, int *n, struct tl_err *err);

/* The ids of the chat in r (rendered with the template; continue_final_message cuts the
 * rendering after the last message's content). Malloc'd; the caller frees. */
enum tl_status prompt_chat(const struct prompt_ctx *c, const struct oai_request *r, int32_t **ids,
                           int *n, struct tl_err *err);

/* truncate_prompt_tokens: keeps the last k of *n ids (k <= 0 or k >= *n: unchanged). */
void prompt_truncate(int32_t *ids, int *n, int k);

/* vLLM's context check. requested > 0: the client's max_tokens (or the completions default);
 * prompt + requested must fit max_model_len. requested == 0: the rest of the context, capped
 * by default_cap when > 0. *max_tokens receives the tokens to generate. */
enum tl_status prompt_fit(int max_model_len, int n_prompt, int requested, int default_cap,
                          int *max_tokens, struct tl_err *err);

#endif
