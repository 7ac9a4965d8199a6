/* chat: renders a conversation with the model's own chat template (tokenizer_config.json's
 * chat_template, a Jinja template) through a Jinja interpreter (jinja.h) that covers what the
 * official templates of Qwen2.5, QwQ, Qwen3, Llama-3.x and the DeepSeek-R1 distills use. The
 * text equals what HF's apply_chat_template renders. A template using a construct we do not
 * implement fails to load with a message naming the construct and the supported families. */
#ifndef TL_CHAT_H
#define TL_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

struct chat_message {
    const char *role;              /* "system", "user", "assistant" (borrowed) */
    const char *content;           /* UTF-8 (borrowed) */
    const char *reasoning_content; /* assistant reasoning, or NULL (borrowed) */
};

struct chat_options {
    bool add_generation_prompt; /* end with the assistant header, as for generation */
    int enable_thinking;        /* -1 = leave undefined (template default), 0 = false, 1 = true */
};

struct chat_template;

/* Loads chat_template (and bos_token / eos_token, passed to the template) from
 * DIR/tokenizer_config.json (or DIR/chat_template.jinja when present, as newer HF repos ship
 * it). No template is TL_ERR_UNSUPPORTED with a message. Free with chat_template_free. */
enum tl_status chat_template_load(const char *dir, struct chat_template **out, struct tl_err *err);

/* Same from a template string and the special-token strings (either may be NULL). */
enum tl_status chat_template_from_string(const char *source, const char *bos_token,
                                         const char *eos_token, struct chat_template **out,
                                         struct tl_err *err);

void chat_template_free(struct chat_template *t);

/* Renders messages; *text is malloc'd (NUL-terminated), the caller frees. A template that
 * raises (raise_exception) or a bad conversation is TL_ERR_INVALID with the template's
 * message. */
enum tl_status chat_template_render(const struct chat_template *t, const struct chat_message *msgs,
                                    int n_msgs, const struct chat_options *opts, char **text,
                                    size_t *len, struct tl_err *err);

#endif
