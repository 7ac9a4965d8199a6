/* text: prompt preparation for the CLI. Chat prompts follow vLLM: the rendered template already
 * holds BOS and the role markers, so it is tokenized without adding special tokens again. */
#include "text.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum tl_status text_open(struct text_ctx *t, const char *dir, bool need_tok, bool need_chat,
                         struct tl_err *err) {
    enum tl_status st = TL_OK;
    if (need_tok || need_chat) {
        st = tokenizer_load(dir, &t->tok, err);
        if (st != TL_OK) {
            tl_err_prefix(err, "text prompts need a tokenizer (use --tokenizer DIR)");
            return st;
        }
    }
    if (need_chat) st = chat_template_load(dir, &t->chat, err);
    return st;
}

void text_close(struct text_ctx *t) {
    tokenizer_free(t->tok);
    chat_template_free(t->chat);
    t->tok = NULL;
    t->chat = NULL;
}

static enum tl_status parse_ids(const char *s, int vocab, int32_t **out, int *n_out,
                                struct tl_err *err) {
    int cap = 16, n = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    const char *p = s;
    while (ids && *p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v >= vocab || (*end && *end != ',')) {
            free(ids);
            return tl_fail(err, TL_ERR_INVALID,
                           "--prompt-ids '%s': each id must be an integer in [0, %d)", s, vocab);
        }
        if (n == cap) {
            int32_t *g = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            if (!g) break;
            ids = g;
        }
        ids[n++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (!ids || n == 0) {
        free(ids);
        return tl_fail(err, TL_ERR_INVALID, "--prompt-ids '%s' holds no ids", s);
    }
    *out = ids;
    *n_out = n;
    return TL_OK;
}

enum tl_status text_prompt_ids(const struct text_ctx *t, enum text_prompt_kind kind,
                               const char *arg, int32_t **ids, int *n, struct tl_err *err) {
    if (kind == TEXT_PROMPT_IDS) return parse_ids(arg, t->vocab_size, ids, n, err);
    enum tl_status st;
    if (kind == TEXT_PROMPT_TEXT) {
        st = tokenizer_encode(t->tok, arg, strlen(arg), true, ids, n, err);
    } else {
        struct chat_message msgs[2];
        int nm = 0;
        if (t->system) msgs[nm++] = (struct chat_message){"system", t->system, NULL};
        msgs[nm++] = (struct chat_message){"user", arg, NULL};
        struct chat_options o = {.add_generation_prompt = true,
                                 .enable_thinking = t->enable_thinking};
        char *rendered = NULL;
        size_t len = 0;
        st = chat_template_render(t->chat, msgs, nm, &o, &rendered, &len, err);
        if (st == TL_OK) st = tokenizer_encode(t->tok, rendered, len, false, ids, n, err);
        free(rendered);
    }
    if (st != TL_OK) return st;
    if (*n == 0) return tl_fail(err, TL_ERR_INVALID, "the prompt '%.40s' holds no tokens", arg);
    for (int i = 0; i < *n; i++) {
        if ((*ids)[i] >= t->vocab_size) {
            int32_t bad = (*ids)[i];
            free(*ids);
            *ids = NULL;
            return tl_fail(err, TL_ERR_INVALID,
                           "the tokenizer produced id %d but the model has %d embeddings: "
                           "--tokenizer must belong to this model",
                           bad, t->vocab_size);
        }
    }
    return TL_OK;
}
