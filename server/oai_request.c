/* oai_request: the request bodies of the OpenAI completion and chat endpoints, read field by
 * field through a table (one small handler per field), then checked as a whole. Messages
 * follow vLLM's wording where clients may parse them. Unknown fields are ignored and
 * counted; known fields that would change the result in ways we do not implement (tools,
 * logit_bias, structured output, ...) are refused rather than silently ignored. */
#include "oai_request.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LOGPROBS ENGINE_MAX_LOGPROBS

struct parse {
    struct oai_request *r;
    const struct oai_limits *lim;
    struct tl_err *err;
    char *param;
    size_t param_len;
    bool logprobs_bool, logprobs_seen; /* chat: logprobs: true */
    int top_logprobs;                  /* chat: -1 = absent */
    bool stream_options_seen;
    int best_of;
    bool has_prompt, has_messages;
};

__attribute__((format(printf, 3, 4))) static int fail(struct parse *p, const char *param,
                                                      const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err->msg, sizeof p->err->msg, fmt, ap);
    va_end(ap);
    snprintf(p->param, p->param_len, "%s", param ? param : "");
    return -1;
}

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

bool oai_json_int(const json_t *v, long long lo, long long hi, long long *out) {
    long long x = 0;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!isfinite(d) || d != floor(d) || d < -9.2e18 || d > 9.2e18) return false;
        x = (long long)d;
    } else {
        return false;
    }
    if (x < lo || x > hi) return false;
    *out = x;
    return true;
}

/* An integer field in [lo, hi]; the message says which range. */
static int get_int(struct parse *p, const char *name, const json_t *v, long long lo, long long hi,
                   long long *out) {
    if (!json_is_integer(v) && !json_is_real(v))
        return fail(p, name, "%s must be an integer, got %s", name, type_name(v));
    if (!oai_json_int(v, LLONG_MIN, LLONG_MAX, out))
        return fail(p, name, "%s must be an integer, got %g", name, json_number_value(v));
    if (*out < lo || *out > hi)
        return fail(p, name, "%s must be in [%lld, %lld], got %lld", name, lo, hi, *out);
    return 0;
}

static int get_num(struct parse *p, const char *name, const json_t *v, double *out) {
    if (!json_is_number(v)) return fail(p, name, "%s must be a number, got %s", name, type_name(v));
    *out = json_number_value(v);
    return 0;
}

static int get_bool(struct parse *p, const char *name, const json_t *v, bool *out) {
    if (!json_is_boolean(v))
        return fail(p, name, "%s must be true or false, got %s", name, type_name(v));
    *out = json_is_true(v);
    return 0;
}

/* ---- prompts (completions) ---- */

static int ids_from_array(struct parse *p, const char *name, const json_t *a, int32_t **ids,
                          int *n) {
    size_t len = json_array_size(a);
    if (len == 0) return fail(p, name, "%s must not be empty", name);
    if (len > INT32_MAX / 4) return fail(p, name, "%s is too long", name);
    int32_t *out = malloc(len * sizeof *out);
    if (!out) return fail(p, name, "out of memory reading %s", name);
    for (size_t i = 0; i < len; i++) {
        long long id;
        const json_t *e = json_array_get(a, i);
        if (!json_is_integer(e) || !oai_json_int(e, 0, p->lim->vocab_size - 1, &id)) {
            free(out);
            return fail(p, name, "%s[%zu]: a token id must be an integer in [0, %d), got %s", name,
                        i, p->lim->vocab_size,
                        json_is_integer(e) ? "one out of range" : type_name(e));
        }
        out[i] = (int32_t)id;
    }
    *ids = out;
    *n = (int)len;
    return 0;
}

static int add_prompts(struct parse *p, int n) {
    if (n > p->lim->max_choices)
        return fail(p, "prompt", "at most %d prompts per request, got %d", p->lim->max_choices, n);
    p->r->prompts = calloc((size_t)n, sizeof *p->r->prompts);
    if (!p->r->prompts) return fail(p, "prompt", "out of memory");
    p->r->n_prompts = n;
    return 0;
}

static int text_prompt(struct parse *p, const json_t *s, struct oai_prompt *out) {
    if (json_string_length(s) == 0) return fail(p, "prompt", "prompt must not be empty");
    out->text = json_string_value(s);
    out->text_len = json_string_length(s);
    return 0;
}

static int f_prompt(struct parse *p, json_t *v) {
    p->has_prompt = true;
    if (json_is_string(v)) {
        if (add_prompts(p, 1)) return -1;
        return text_prompt(p, v, &p->r->prompts[0]);
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        return fail(p, "prompt",
                    "prompt must be a string, an array of strings, an array of token ids or an "
                    "array of token id arrays, and not empty; got %s",
                    json_is_array(v) ? "an empty array" : type_name(v));
    const json_t *first = json_array_get(v, 0);
    if (json_is_integer(first)) {
        if (add_prompts(p, 1)) return -1;
        return ids_from_array(p, "prompt", v, &p->r->prompts[0].ids, &p->r->prompts[0].n_ids);
    }
    size_t n = json_array_size(v);
    if (n > (size_t)p->lim->max_choices)
        return fail(p, "prompt", "at most %d prompts per request, got %zu", p->lim->max_choices, n);
    if (add_prompts(p, (int)n)) return -1;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i);
        char name[32];
        snprintf(name, sizeof name, "prompt[%zu]", i);
        if (json_is_string(first) && json_is_string(e)) {
            if (text_prompt(p, e, &p->r->prompts[i])) return -1;
        } else if (json_is_array(first) && json_is_array(e)) {
            if (ids_from_array(p, name, e, &p->r->prompts[i].ids, &p->r->prompts[i].n_ids))
                return -1;
        } else {
            return fail(p, name,
                        "%s: all prompts of a batch must be strings or all token id "
                        "arrays, got %s",
                        name, type_name(e));
        }
    }
    return 0;
}

/* ---- messages (chat) ---- */

static char *keep_text(struct parse *p, char *s) {
    char **g = realloc(p->r->owned_text, (size_t)(p->r->n_owned_text + 1) * sizeof *g);
    if (!g) {
        free(s);
        return NULL;
    }
    p->r->owned_text = g;
    g[p->r->n_owned_text++] = s;
    return s;
}

/* content: a string, null, or an array of {"type":"text","text":...} parts joined by "\n"
 * (vLLM's joining). */
static int message_content(struct parse *p, size_t i, const json_t *c, const char **out) {
    char name[48];
    snprintf(name, sizeof name, "messages[%zu].content", i);
    if (!c || json_is_null(c)) {
        *out = "";
        return 0;
    }
    if (json_is_string(c)) {
        *out = json_string_value(c);
        return 0;
    }
    if (!json_is_array(c))
        return fail(p, name, "%s must be a string or an array of text parts, got %s", name,
                    type_name(c));
    size_t total = 1, n = json_array_size(c);
    for (size_t k = 0; k < n; k++) {
        const json_t *part = json_array_get(c, k);
        const json_t *type = json_object_get(part, "type");
        const json_t *text = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type) ||
            strcmp(json_string_value(type), "text") != 0 || !json_is_string(text))
            return fail(p, name,
                        "%s[%zu]: only {\"type\": \"text\", \"text\": ...} parts are supported "
                        "(this model takes no images or audio)",
                        name, k);
        total += json_string_length(text) + 1;
    }
    char *s = malloc(total), *w = s;
    if (!s) return fail(p, name, "out of memory");
    for (size_t k = 0; k < n; k++) {
        const json_t *text = json_object_get(json_array_get(c, k), "text");
        if (k) *w++ = '\n';
        memcpy(w, json_string_value(text), json_string_length(text));
        w += json_string_length(text);
    }
    *w = 0;
    if (!keep_text(p, s)) return fail(p, name, "out of memory");
    *out = s;
    return 0;
}

static int f_messages(struct parse *p, json_t *v) {
    p->has_messages = true;
    size_t n = json_array_size(v);
    if (!json_is_array(v) || n == 0)
        return fail(p, "messages", "messages must be a non-empty array of {role, content}, got %s",
                    json_is_array(v) ? "an empty array" : type_name(v));
    if (n > (size_t)p->lim->max_messages)
        return fail(p, "messages", "at most %d messages per request, got %zu", p->lim->max_messages,
                    n);
    p->r->messages = calloc(n, sizeof *p->r->messages);
    if (!p->r->messages) return fail(p, "messages", "out of memory");
    p->r->n_messages = (int)n;
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(v, i);
        char name[40];
        snprintf(name, sizeof name, "messages[%zu]", i);
        if (!json_is_object(m))
            return fail(p, name, "%s must be an object, got %s", name, type_name(m));
        const json_t *role = json_object_get(m, "role");
        if (!json_is_string(role) || json_string_length(role) == 0)
            return fail(p, name, "%s.role must be a non-empty string", name);
        struct chat_message *cm = &p->r->messages[i];
        cm->role = json_string_value(role);
        if (message_content(p, i, json_object_get(m, "content"), &cm->content)) return -1;
        const json_t *rc = json_object_get(m, "reasoning_content");
        if (rc && !json_is_null(rc)) {
            if (!json_is_string(rc))
                return fail(p, name, "%s.reasoning_content must be a string", name);
            cm->reasoning_content = json_string_value(rc);
        }
        const json_t *tc = json_object_get(m, "tool_calls");
        if (tc && !json_is_null(tc) && json_array_size(tc) > 0)
            return fail(p, name, "%s.tool_calls: tool calls are not supported by this server",
                        name);
    }
    return 0;
}

/* ---- sampling and stopping ---- */

static int f_model(struct parse *p, json_t *v) {
    if (!json_is_string(v)) return fail(p, "model", "model must be a string, got %s", type_name(v));
    p->r->model = json_string_value(v);
    return 0;
}

static int f_max_tokens(struct parse *p, json_t *v) {
    long long x = 0;
    if (!json_is_integer(v) && !json_is_real(v))
        return fail(p, "max_tokens", "max_tokens must be an integer, got %s", type_name(v));
    if (!oai_json_int(v, LLONG_MIN, LLONG_MAX, &x))
        return fail(p, "max_tokens", "max_tokens must be an integer, got %g", json_number_value(v));
    if (x < 1) return fail(p, "max_tokens", "max_tokens must be at least 1, got %lld.", x);
    p->r->params.max_tokens = x > INT32_MAX ? INT32_MAX : (int)x; /* the context check reports */
    p->r->max_tokens_set = true;
    return 0;
}

static int f_min_tokens(struct parse *p, json_t *v) {
    long long x = 0;
    if (get_int(p, "min_tokens", v, 0, INT32_MAX, &x)) return -1;
    p->r->params.min_tokens = (int)x;
    return 0;
}

static int f_n(struct parse *p, json_t *v) {
    long long x = 0;
    if (!json_is_integer(v) && !json_is_real(v))
        return fail(p, "n", "n must be an integer, got %s", type_name(v));
    if (!oai_json_int(v, LLONG_MIN, LLONG_MAX, &x))
        return fail(p, "n", "n must be an integer, got %g", json_number_value(v));
    if (x < 1) return fail(p, "n", "n must be at least 1, got %lld.", x);
    if (x > p->lim->max_choices)
        return fail(p, "n", "n must be at most %d on this server, got %lld", p->lim->max_choices,
                    x);
    p->r->n = (int)x;
    return 0;
}

static int f_best_of(struct parse *p, json_t *v) {
    long long x = 0;
    if (get_int(p, "best_of", v, 1, p->lim->max_choices, &x)) return -1;
    p->best_of = (int)x;
    return 0;
}

static int f_temperature(struct parse *p, json_t *v) {
    double x = 0;
    if (get_num(p, "temperature", v, &x)) return -1;
    if (x < 0) return fail(p, "temperature", "temperature must be non-negative, got %g.", x);
    p->r->params.sp.temperature = (float)x;
    return 0;
}

static int f_top_p(struct parse *p, json_t *v) {
    double x = 0;
    if (get_num(p, "top_p", v, &x)) return -1;
    if (!(x > 0 && x <= 1)) return fail(p, "top_p", "top_p must be in (0, 1], got %g.", x);
    p->r->params.sp.top_p = (float)x;
    return 0;
}

static int f_top_k(struct parse *p, json_t *v) {
    long long x = 0;
    if (!oai_json_int(v, LLONG_MIN, LLONG_MAX, &x) || x < -1 || x > INT32_MAX)
        return fail(p, "top_k", "top_k must be -1 or 0 (disable), or at least 1, got %s",
                    json_is_number(v) ? "a value out of range" : type_name(v));
    p->r->params.sp.top_k = x <= 0 ? 0 : (int)x;
    return 0;
}

static int f_min_p(struct parse *p, json_t *v) {
    double x = 0;
    if (get_num(p, "min_p", v, &x)) return -1;
    if (!(x >= 0 && x <= 1)) return fail(p, "min_p", "min_p must be in [0, 1], got %g.", x);
    p->r->params.sp.min_p = (float)x;
    return 0;
}

static int penalty(struct parse *p, const char *name, json_t *v, float *out) {
    double x = 0;
    if (get_num(p, name, v, &x)) return -1;
    if (!(x >= -2 && x <= 2)) return fail(p, name, "%s must be in [-2, 2], got %g.", name, x);
    *out = (float)x;
    return 0;
}

static int f_presence(struct parse *p, json_t *v) {
    return penalty(p, "presence_penalty", v, &p->r->params.sp.presence_penalty);
}

static int f_frequency(struct parse *p, json_t *v) {
    return penalty(p, "frequency_penalty", v, &p->r->params.sp.frequency_penalty);
}

static int f_repetition(struct parse *p, json_t *v) {
    double x = 0;
    if (get_num(p, "repetition_penalty", v, &x)) return -1;
    if (!(x > 0 && x <= 1e6))
        return fail(p, "repetition_penalty",
                    "repetition_penalty must be greater than zero, got %g.", x);
    p->r->params.sp.repetition_penalty = (float)x;
    return 0;
}

static int f_seed(struct parse *p, json_t *v) {
    if (!json_is_integer(v))
        return fail(p, "seed", "seed must be an integer, got %s", type_name(v));
    p->r->params.sp.seed = (uint64_t)json_integer_value(v);
    p->r->params.sp.has_seed = true;
    return 0;
}

static int stop_string(struct parse *p, const json_t *s, int i) {
    if (!json_is_string(s))
        return fail(p, "stop", "stop must be a string or an array of strings, got %s",
                    type_name(s));
    if (json_string_length(s) == 0) return fail(p, "stop", "stop cannot contain an empty string.");
    if (json_string_length(s) > ENGINE_MAX_STOP_LEN)
        return fail(p, "stop", "a stop string may be at most %d bytes, got %zu",
                    ENGINE_MAX_STOP_LEN, json_string_length(s));
    p->r->stop_strs[i] = json_string_value(s);
    return 0;
}

static int f_stop(struct parse *p, json_t *v) {
    if (json_is_string(v)) {
        if (stop_string(p, v, 0)) return -1;
        p->r->params.n_stop = 1;
    } else if (json_is_array(v)) {
        size_t n = json_array_size(v);
        if (n > ENGINE_MAX_STOP)
            return fail(p, "stop", "at most %d stop strings, got %zu", ENGINE_MAX_STOP, n);
        for (size_t i = 0; i < n; i++)
            if (stop_string(p, json_array_get(v, i), (int)i)) return -1;
        p->r->params.n_stop = (int)n;
    } else {
        return fail(p, "stop", "stop must be a string or an array of strings, got %s",
                    type_name(v));
    }
    p->r->params.stop = p->r->stop_strs;
    return 0;
}

static int f_stop_token_ids(struct parse *p, json_t *v) {
    if (!json_is_array(v))
        return fail(p, "stop_token_ids", "stop_token_ids must be an array of token ids, got %s",
                    type_name(v));
    if (json_array_size(v) == 0) return 0;
    if (json_array_size(v) > 1024)
        return fail(p, "stop_token_ids", "at most 1024 stop_token_ids, got %zu",
                    json_array_size(v));
    int n;
    if (ids_from_array(p, "stop_token_ids", v, &p->r->stop_ids, &n)) return -1;
    p->r->params.stop_token_ids = p->r->stop_ids;
    p->r->params.n_stop_token_ids = n;
    return 0;
}

static int f_ignore_eos(struct parse *p, json_t *v) {
    return get_bool(p, "ignore_eos", v, &p->r->params.ignore_eos);
}

static int f_include_stop(struct parse *p, json_t *v) {
    return get_bool(p, "include_stop_str_in_output", v, &p->r->params.include_stop_str_in_output);
}

static int f_skip_special(struct parse *p, json_t *v) {
    return get_bool(p, "skip_special_tokens", v, &p->r->params.skip_special_tokens);
}

static int f_add_special(struct parse *p, json_t *v) {
    return get_bool(p, "add_special_tokens", v, &p->r->add_special_tokens);
}

static int f_truncate(struct parse *p, json_t *v) {
    long long x = 0;
    if (get_int(p, "truncate_prompt_tokens", v, 1, INT32_MAX, &x)) return -1;
    p->r->truncate_prompt_tokens = (int)x;
    return 0;
}

/* completions: logprobs is an integer k; chat: a boolean with top_logprobs beside it */
static int f_logprobs(struct parse *p, json_t *v) {
    if (p->r->kind == OAI_CHAT) {
        p->logprobs_seen = true;
        return get_bool(p, "logprobs", v, &p->logprobs_bool);
    }
    long long x = 0;
    if (!oai_json_int(v, LLONG_MIN, LLONG_MAX, &x))
        return fail(p, "logprobs", "logprobs must be an integer, got %s", type_name(v));
    if (x < 0) return fail(p, "logprobs", "logprobs must be non-negative, got %lld.", x);
    if (x > MAX_LOGPROBS)
        return fail(p, "logprobs",
                    "Requested sample logprobs of %lld, which is greater than max allowed: %d", x,
                    MAX_LOGPROBS);
    p->r->params.logprobs = (int)x;
    return 0;
}

static int f_top_logprobs(struct parse *p, json_t *v) {
    long long x = 0;
    if (get_int(p, "top_logprobs", v, 0, MAX_LOGPROBS, &x)) return -1;
    p->top_logprobs = (int)x;
    return 0;
}

static int f_echo(struct parse *p, json_t *v) {
    return get_bool(p, "echo", v, &p->r->echo);
}

static int f_return_ids(struct parse *p, json_t *v) {
    return get_bool(p, "return_token_ids", v, &p->r->return_token_ids);
}

static int f_stream(struct parse *p, json_t *v) {
    return get_bool(p, "stream", v, &p->r->stream);
}

static int f_stream_options(struct parse *p, json_t *v) {
    if (!json_is_object(v))
        return fail(p, "stream_options", "stream_options must be an object, got %s", type_name(v));
    p->stream_options_seen = true;
    const json_t *u = json_object_get(v, "include_usage");
    if (u && !json_is_null(u) &&
        get_bool(p, "stream_options.include_usage", u, &p->r->include_usage))
        return -1;
    const json_t *c = json_object_get(v, "continuous_usage_stats");
    if (c && !json_is_null(c) &&
        get_bool(p, "stream_options.continuous_usage_stats", c, &p->r->continuous_usage))
        return -1;
    return 0;
}

static int f_add_generation_prompt(struct parse *p, json_t *v) {
    return get_bool(p, "add_generation_prompt", v, &p->r->chat_opts.add_generation_prompt);
}

static int f_continue_final(struct parse *p, json_t *v) {
    return get_bool(p, "continue_final_message", v, &p->r->continue_final_message);
}

static int f_template_kwargs(struct parse *p, json_t *v) {
    if (!json_is_object(v))
        return fail(p, "chat_template_kwargs", "chat_template_kwargs must be an object, got %s",
                    type_name(v));
    const json_t *t = json_object_get(v, "enable_thinking");
    if (t && !json_is_null(t)) {
        bool b = false;
        if (get_bool(p, "chat_template_kwargs.enable_thinking", t, &b)) return -1;
        p->r->chat_opts.enable_thinking = b;
    }
    return 0;
}

/* Known fields that change the result in ways this server does not implement: refused
 * unless they hold their neutral value. */
static int f_refuse_nonempty(struct parse *p, const char *name, json_t *v, const char *why) {
    bool empty = (json_is_array(v) && json_array_size(v) == 0) ||
                 (json_is_object(v) && json_object_size(v) == 0) || json_is_false(v);
    if (empty) return 0;
    return fail(p, name, "%s is not supported by this server (%s)", name, why);
}

static int f_tools(struct parse *p, json_t *v) {
    return f_refuse_nonempty(p, "tools", v, "no tool calling");
}
static int f_functions(struct parse *p, json_t *v) {
    return f_refuse_nonempty(p, "functions", v, "no tool calling");
}
static int f_logit_bias(struct parse *p, json_t *v) {
    return f_refuse_nonempty(p, "logit_bias", v, "no logit biasing");
}
static int f_beam(struct parse *p, json_t *v) {
    return f_refuse_nonempty(p, "use_beam_search", v, "no beam search");
}
static int f_suffix(struct parse *p, json_t *v) {
    (void)v;
    return fail(p, "suffix", "suffix is not currently supported");
}
static int f_prompt_logprobs(struct parse *p, json_t *v) {
    (void)v;
    return fail(p, "prompt_logprobs", "prompt_logprobs is not supported by this server");
}
static int f_guided(struct parse *p, json_t *v) {
    (void)v;
    return fail(p, "guided_decoding",
                "structured output (guided_json, guided_regex, guided_choice, guided_grammar, "
                "structured_outputs) is not supported by this server");
}
static int f_response_format(struct parse *p, json_t *v) {
    const json_t *t = json_object_get(v, "type");
    if (json_is_object(v) && json_is_string(t) && !strcmp(json_string_value(t), "text")) return 0;
    return fail(p, "response_format",
                "response_format: only {\"type\": \"text\"} is supported by this server");
}

static int f_ignore(struct parse *p, json_t *v) {
    (void)p;
    (void)v;
    return 0;
}

enum { K_CMPL = 1, K_CHAT = 2, K_BOTH = 3 };

static const struct field {
    const char *name;
    int kinds;
    int (*parse)(struct parse *p, json_t *v);
} fields[] = {
    {"model", K_BOTH, f_model},
    {"prompt", K_CMPL, f_prompt},
    {"messages", K_CHAT, f_messages},
    {"max_tokens", K_BOTH, f_max_tokens},
    {"max_completion_tokens", K_CHAT, f_max_tokens},
    {"min_tokens", K_BOTH, f_min_tokens},
    {"n", K_BOTH, f_n},
    {"best_of", K_CMPL, f_best_of},
    {"temperature", K_BOTH, f_temperature},
    {"top_p", K_BOTH, f_top_p},
    {"top_k", K_BOTH, f_top_k},
    {"min_p", K_BOTH, f_min_p},
    {"presence_penalty", K_BOTH, f_presence},
    {"frequency_penalty", K_BOTH, f_frequency},
    {"repetition_penalty", K_BOTH, f_repetition},
    {"seed", K_BOTH, f_seed},
    {"stop", K_BOTH, f_stop},
    {"stop_token_ids", K_BOTH, f_stop_token_ids},
    {"ignore_eos", K_BOTH, f_ignore_eos},
    {"include_stop_str_in_output", K_BOTH, f_include_stop},
    {"skip_special_tokens", K_BOTH, f_skip_special},
    {"add_special_tokens", K_BOTH, f_add_special},
    {"truncate_prompt_tokens", K_BOTH, f_truncate},
    {"logprobs", K_BOTH, f_logprobs},
    {"top_logprobs", K_CHAT, f_top_logprobs},
    {"echo", K_CMPL, f_echo},
    {"return_token_ids", K_BOTH, f_return_ids},
    {"stream", K_BOTH, f_stream},
    {"stream_options", K_BOTH, f_stream_options},
    {"add_generation_prompt", K_CHAT, f_add_generation_prompt},
    {"continue_final_message", K_CHAT, f_continue_final},
    {"chat_template_kwargs", K_CHAT, f_template_kwargs},
    {"tools", K_CHAT, f_tools},
    {"functions", K_CHAT, f_functions},
    {"logit_bias", K_BOTH, f_logit_bias},
    {"use_beam_search", K_BOTH, f_beam},
    {"suffix", K_CMPL, f_suffix},
    {"prompt_logprobs", K_BOTH, f_prompt_logprobs},
    {"guided_json", K_BOTH, f_guided},
    {"guided_regex", K_BOTH, f_guided},
    {"guided_choice", K_BOTH, f_guided},
    {"guided_grammar", K_BOTH, f_guided},
    {"structured_outputs", K_BOTH, f_guided},
    {"response_format", K_BOTH, f_response_format},
    /* accepted and without effect here, as in vLLM */
    {"user", K_BOTH, f_ignore},
    {"metadata", K_BOTH, f_ignore},
    {"store", K_BOTH, f_ignore},
    {"service_tier", K_BOTH, f_ignore},
    {"parallel_tool_calls", K_CHAT, f_ignore},
    {"tool_choice", K_CHAT, f_ignore},
    {"priority", K_BOTH, f_ignore},
    {"request_id", K_BOTH, f_ignore},
    {"spaces_between_special_tokens", K_BOTH, f_ignore},
    {"length_penalty", K_BOTH, f_ignore},
    {"cache_salt", K_BOTH, f_ignore},
};

static int check_whole(struct parse *p) {
    struct oai_request *r = p->r;
    if (r->kind == OAI_COMPLETION && !p->has_prompt) return fail(p, "prompt", "prompt is required");
    if (r->kind == OAI_CHAT && !p->has_messages) return fail(p, "messages", "messages is required");
    if (r->kind == OAI_CHAT) {
        if (p->top_logprobs >= 0 && !p->logprobs_bool)
            return fail(p, "top_logprobs",
                        "when using `top_logprobs`, `logprobs` must be set to true.");
        if (p->logprobs_bool) r->params.logprobs = p->top_logprobs > 0 ? p->top_logprobs : 0;
        if (r->continue_final_message && r->chat_opts.add_generation_prompt)
            return fail(p, "continue_final_message",
                        "Cannot set both `continue_final_message` and `add_generation_prompt` to "
                        "True.");
        if (r->continue_final_message &&
            strcmp(r->messages[r->n_messages - 1].role, "assistant") != 0)
            return fail(p, "continue_final_message",
                        "continue_final_message needs the last message to be the assistant's");
    }
    if (p->best_of > 0 && p->best_of != r->n)
        return fail(p, "best_of", "best_of other than n is not supported by this server");
    if (p->stream_options_seen && !r->stream)
        return fail(p, "stream_options", "Stream options can only be defined when `stream=True`.");
    if (r->echo && r->params.logprobs >= 0)
        return fail(p, "echo",
                    "echo with logprobs needs prompt logprobs, which this server does not "
                    "compute; ask for one or the other");
    if (r->max_tokens_set && r->params.min_tokens > r->params.max_tokens)
        return fail(p, "min_tokens",
                    "min_tokens must be less than or equal to max_tokens=%d, got %d.",
                    r->params.max_tokens, r->params.min_tokens);
    long long choices = (long long)r->n * (r->kind == OAI_COMPLETION ? r->n_prompts : 1);
    if (choices > p->lim->max_choices)
        return fail(p, "n", "n x prompts = %lld choices; this server allows at most %d per request",
                    choices, p->lim->max_choices);
    return 0;
}

enum tl_status oai_request_parse(enum oai_kind kind, const char *body, size_t len,
                                 const struct engine_params *defaults, const struct oai_limits *lim,
                                 struct oai_request *out, char *param, size_t param_len,
                                 struct tl_err *err) {
    memset(out, 0, sizeof *out);
    if (param_len) param[0] = 0;
    out->kind = kind;
    out->params = *defaults;
    out->params.stop = NULL;
    out->params.n_stop = 0;
    out->params.stop_token_ids = NULL;
    out->params.n_stop_token_ids = 0;
    out->params.logprobs = -1;
    out->n = 1;
    out->add_special_tokens = kind == OAI_COMPLETION;
    out->chat_opts.add_generation_prompt = true;
    out->chat_opts.enable_thinking = -1;
    struct parse p = {.r = out,
                      .lim = lim,
                      .err = err,
                      .param = param,
                      .param_len = param_len,
                      .top_logprobs = -1};

    json_error_t jerr;
    out->root = json_loadb(body, len, JSON_DECODE_ANY, &jerr);
    if (!out->root) {
        fail(&p, NULL, "the body is not valid JSON: %s (at byte %d)", jerr.text, jerr.position);
        return TL_ERR_INVALID;
    }
    if (!json_is_object(out->root)) {
        fail(&p, NULL, "the body must be a JSON object, got %s", type_name(out->root));
        oai_request_free(out);
        return TL_ERR_INVALID;
    }
    int mask = kind == OAI_COMPLETION ? K_CMPL : K_CHAT;
    const char *key;
    json_t *v;
    json_object_foreach(out->root, key, v) {
        const struct field *f = NULL;
        for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
            if ((fields[i].kinds & mask) && !strcmp(fields[i].name, key)) f = &fields[i];
        if (!f) {
            out->n_unknown++;
            continue;
        }
        if (json_is_null(v)) continue; /* null = absent, as the Optional fields of vLLM */
        if (f->parse(&p, v)) {
            oai_request_free(out);
            return TL_ERR_INVALID;
        }
    }
    if (check_whole(&p)) {
        oai_request_free(out);
        return TL_ERR_INVALID;
    }
    return TL_OK;
}

void oai_request_free(struct oai_request *r) {
    for (int i = 0; i < r->n_prompts; i++) free(r->prompts[i].ids);
    free(r->prompts);
    free(r->messages);
    for (int i = 0; i < r->n_owned_text; i++) free(r->owned_text[i]);
    free(r->owned_text);
    free(r->stop_ids);
    json_decref(r->root);
    memset(r, 0, sizeof *r);
}
