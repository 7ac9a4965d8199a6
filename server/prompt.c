/* prompt: request prompts to token ids, and the context-length check worded as vLLM's
 * serving_engine words it (clients such as LangChain and LiteLLM parse that text). */
#include "prompt.h"

#include <stdlib.h>
#include <string.h>

#define CONTINUE_WINDOW 4096

static enum tl_status check_ids(const struct prompt_ctx *c, int32_t **ids, int n,
                                struct tl_err *err) {
    if (n == 0) {
        free(*ids);
        *ids = NULL;
        return tl_fail(err, TL_ERR_INVALID, "the prompt holds no tokens");
    }
    for (int i = 0; i < n; i++) {
        if ((*ids)[i] < 0 || (*ids)[i] >= c->vocab_size) {
            int32_t bad = (*ids)[i];
            free(*ids);
            *ids = NULL;
            return tl_fail(err, TL_ERR_INVALID,
                           "the tokenizer produced id %d but the model has %d embeddings "
                           "(the server's --tokenizer does not belong to this model)",
                           bad, c->vocab_size);
        }
    }
    return TL_OK;
}

enum tl_status prompt_completion(const struct prompt_ctx *c, const struct oai_prompt *p,
                                 bool add_special, int32_t **ids, int *n, struct tl_err *err) {
    if (!p->text) {
        *ids = malloc((size_t)p->n_ids * sizeof **ids);
        if (!*ids) return tl_fail(err, TL_ERR_NOMEM, "out of memory copying the prompt");
        memcpy(*ids, p->ids, (size_t)p->n_ids * sizeof **ids);
        *n = p->n_ids;
        return check_ids(c, ids, *n, err);
    }
    if (!c->tok)
        return tl_fail(err, TL_ERR_INVALID,
                       "this server has no tokenizer: send the prompt as token ids");
    enum tl_status st = tokenizer_encode(c->tok, p->text, p->text_len, add_special, ids, n, err);
    if (st != TL_OK) return TL_ERR_INVALID; /* invalid UTF-8 and the like: the client's input */
    return check_ids(c, ids, *n, err);
}

enum tl_status prompt_chat(const struct prompt_ctx *c, const struct oai_request *r, int32_t **ids,
                           int *n, struct tl_err *err) {
    if (!c->tok)
        return tl_fail(err, TL_ERR_INVALID,
                       "this server has no tokenizer, so it cannot serve chat completions");
    if (!c->chat)
        return tl_fail(err, TL_ERR_INVALID,
                       "the model's tokenizer_config.json has no chat template; start the "
                       "server with --chat-template FILE or use /v1/completions");
    char *text = NULL;
    size_t len = 0;
    enum tl_status st =
        chat_template_render(c->chat, r->messages, r->n_messages, &r->chat_opts, &text, &len, err);
    if (st != TL_OK) {
        tl_err_prefix(err, "the chat template refused the conversation");
        return TL_ERR_INVALID;
    }
    if (r->continue_final_message) {
        /* as vLLM: drop what the template put after the final message (end-of-turn) */
        const char *last = r->messages[r->n_messages - 1].content;
        size_t ll = strlen(last);
        /* The template puts only end-of-turn markers after it: search a window at the end,
         * with a linear memmem a bounded number of times, so no input makes this quadratic. */
        size_t from = len > ll + CONTINUE_WINDOW ? len - ll - CONTINUE_WINDOW : 0;
        const char *cut = NULL, *s = text + from;
        for (int k = 0; ll && k < 64; k++) {
            const char *hit = memmem(s, (size_t)(text + len - s), last, ll);
            if (!hit) break;
            cut = hit;
            s = hit + 1;
        }
        if (cut) len = (size_t)(cut - text) + ll;
    }
    st = tokenizer_encode(c->tok, text, len, r->add_special_tokens, ids, n, err);
    free(text);
    if (st != TL_OK) return TL_ERR_INVALID;
    return check_ids(c, ids, *n, err);
}

void prompt_truncate(int32_t *ids, int *n, int k) {
    if (k <= 0 || k >= *n) return;
    memmove(ids, ids + (*n - k), (size_t)k * sizeof *ids);
    *n = k;
}

enum tl_status prompt_fit(int max_model_len, int n_prompt, int requested, int default_cap,
                          int *max_tokens, struct tl_err *err) {
    if (requested > 0) {
        long long total = (long long)n_prompt + requested;
        if (total > max_model_len)
            return tl_fail(err, TL_ERR_INVALID,
                           "This model's maximum context length is %d tokens. However, you "
                           "requested %lld tokens (%d in the messages, %d in the completion). "
                           "Please reduce the length of the messages or completion.",
                           max_model_len, total, n_prompt, requested);
        *max_tokens = requested;
        return TL_OK;
    }
    if (n_prompt >= max_model_len)
        return tl_fail(err, TL_ERR_INVALID,
                       "This model's maximum context length is %d tokens. However, you "
                       "requested %d tokens in the messages, Please reduce the length of the "
                       "messages.",
                       max_model_len, n_prompt);
    int rest = max_model_len - n_prompt;
    *max_tokens = default_cap > 0 && default_cap < rest ? default_cap : rest;
    return TL_OK;
}
