/* jinja: a Jinja2 interpreter for chat templates. It implements, with Python Jinja's semantics,
 * the subset that HF chat templates use, under the settings HF transformers renders them with
 * (trim_blocks, lstrip_blocks, loop controls, an immutable sandbox, HF's tojson, raise_exception
 * and strftime_now). Anything outside that subset fails at load time with a message naming the
 * construct and its line. No global state: a parsed template is read-only and may be rendered
 * from several threads at once; each render owns its memory and frees it before returning. */
#ifndef TL_JINJA_H
#define TL_JINJA_H

#include <stddef.h>
#include <time.h>

#include "status.h"

struct json_t; /* jansson */
struct jinja_template;

/* Caps that keep a hostile template from exhausting the host; 0 picks the default. */
struct jinja_limits {
    size_t max_output_bytes; /* rendered text (default 64 MiB) */
    size_t max_memory_bytes; /* everything one render allocates (default 512 MiB) */
    long long max_steps;     /* statements run plus loop iterations (default 50 million) */
    int max_call_depth;      /* nested macro calls (default 64) */
    time_t now;              /* the clock strftime_now reads (0: the current time) */
};

/* Parses source (len bytes of UTF-8, no NUL needed). A syntax error is TL_ERR_FORMAT, a tag,
 * filter, test, function or method we do not implement is TL_ERR_UNSUPPORTED; both messages
 * give the line. Free with jinja_template_free. Does not block. */
enum tl_status jinja_template_parse(const char *source, size_t len, struct jinja_template **out,
                                    struct tl_err *err);

void jinja_template_free(struct jinja_template *t);

/* Renders with the variables of vars (a JSON object; NULL for none). A key that is absent is
 * undefined, a null is none. *text is malloc'd and NUL-terminated (*len excludes the NUL); the
 * caller frees it. raise_exception(msg) is TL_ERR_INVALID carrying msg; a runtime error (type
 * error, undefined value used, a limit hit) is TL_ERR_INVALID with the line; running out of
 * the memory cap is TL_ERR_NOMEM. limits may be NULL. */
enum tl_status jinja_template_render(const struct jinja_template *t, const struct json_t *vars,
                                     const struct jinja_limits *limits, char **text, size_t *len,
                                     struct tl_err *err);

#endif
