/* text: turns the prompts of the command line into token ids (ids as given, text through the
 * tokenizer, chat messages through the chat template and the tokenizer) and streams generated
 * ids back as text. */
#ifndef TL_TEXT_H
#define TL_TEXT_H

#include <stdbool.h>
#include <stdint.h>

#include "chat.h"
#include "tokenizer.h"

enum text_prompt_kind {
    TEXT_PROMPT_IDS = 0, /* "1,2,3" */
    TEXT_PROMPT_TEXT,    /* raw text, special tokens added as the tokenizer does */
    TEXT_PROMPT_CHAT,    /* one user message, rendered with the chat template */
};

struct text_ctx {
    struct tokenizer *tok;      /* owned; NULL when only ids are used */
    struct chat_template *chat; /* owned; NULL without chat prompts */
    const char *system;         /* borrowed */
    int enable_thinking;        /* -1 = template default */
    int vocab_size;             /* the model's: every id must be below it */
};

/* Loads the tokenizer (need_tok) and chat template (need_chat) from dir. */
enum tl_status text_open(struct text_ctx *t, const char *dir, bool need_tok, bool need_chat,
                         struct tl_err *err);
void text_close(struct text_ctx *t);

/* One prompt to ids (malloc'd, caller frees). A usage problem (bad ids) is TL_ERR_INVALID. */
enum tl_status text_prompt_ids(const struct text_ctx *t, enum text_prompt_kind kind,
                               const char *arg, int32_t **ids, int *n, struct tl_err *err);

#endif
