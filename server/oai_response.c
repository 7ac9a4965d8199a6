/* oai_response: response and chunk JSON. Field order and nulls follow vLLM's pydantic models
 * so clients written against vLLM see the same objects. */
#include "oai_response.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

const char *oai_error_type(int status) {
    switch (status) {
    case 400:
        return "BadRequestError";
    case 401:
        return "AuthenticationError";
    case 403:
        return "PermissionDeniedError";
    case 404:
        return "NotFoundError";
    case 405:
        return "MethodNotAllowedError";
    case 413:
        return "RequestTooLargeError";
    case 415:
        return "UnsupportedMediaTypeError";
    case 429:
        return "RateLimitError";
    case 431:
        return "RequestHeaderFieldsTooLargeError";
    case 503:
        return "ServiceUnavailableError";
    default:
        return status >= 500 ? "InternalServerError" : "BadRequestError";
    }
}

json_t *oai_error_json(int status, const char *message, const char *param) {
    json_t *msg = json_string(message);
    if (!msg) msg = json_string("(the error message was not valid UTF-8)");
    return json_pack("{s:{s:o,s:s,s:o,s:i}}", "error", "message", msg, "type",
                     oai_error_type(status), "param",
                     param && *param ? json_string(param) : json_null(), "code", status);
}

void oai_make_id(char *out, size_t out_len, const char *prefix) {
    unsigned char r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        /* no entropy source: ids need to be unique, not secret */
        static unsigned long long counter;
        unsigned long long c = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
        memcpy(r, &c, sizeof c);
        memset(r + sizeof c, 0, sizeof r - sizeof c);
    }
    int n = snprintf(out, out_len, "%s", prefix);
    for (size_t i = 0; i < sizeof r && n + 2 < (int)out_len; i++)
        n += snprintf(out + n, out_len - (size_t)n, "%02x", r[i]);
}

json_t *oai_envelope(const char *id, const char *object, long long created, const char *model,
                     json_t *choices) {
    return json_pack("{s:s,s:s,s:I,s:s,s:o}", "id", id, "object", object, "created",
                     (json_int_t)created, "model", model, "choices", choices);
}

json_t *oai_usage_json(long long prompt, long long completion, long long cached) {
    json_t *u =
        json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)prompt, "completion_tokens",
                  (json_int_t)completion, "total_tokens", (json_int_t)(prompt + completion));
    if (u && cached > 0)
        json_object_set_new(u, "prompt_tokens_details",
                            json_pack("{s:I}", "cached_tokens", (json_int_t)cached));
    return u;
}

json_t *oai_stop_reason(const char *stop_str, int32_t stop_token) {
    if (stop_str) return json_string(stop_str);
    if (stop_token >= 0) return json_integer(stop_token);
    return json_null();
}

json_t *oai_finish_reason(enum engine_finish f) {
    switch (f) {
    case ENGINE_FINISH_STOP:
        return json_string("stop");
    case ENGINE_FINISH_LENGTH:
        return json_string("length");
    case ENGINE_FINISH_ABORT:
        return json_string("abort");
    case ENGINE_FINISH_ERROR:
        return json_string("error");
    default:
        return json_null();
    }
}

json_t *oai_string(const char *s, size_t len) {
    return json_stringn(s ? s : "", s ? len : 0);
}

static json_t *or_null(json_t *v) {
    return v ? v : json_null();
}

json_t *oai_completion_choice(int index, const char *text, size_t len, json_t *logprobs,
                              json_t *finish, json_t *stop) {
    json_t *t = oai_string(text, len);
    if (!t) t = json_string("");
    return json_pack("{s:i,s:o,s:o,s:o,s:o}", "index", index, "text", t, "logprobs",
                     or_null(logprobs), "finish_reason", or_null(finish), "stop_reason",
                     or_null(stop));
}

json_t *oai_chat_choice(int index, const char *key, json_t *delta_or_message, json_t *logprobs,
                        json_t *finish, json_t *stop) {
    return json_pack("{s:i,s:o,s:o,s:o,s:o}", "index", index, key, delta_or_message, "logprobs",
                     or_null(logprobs), "finish_reason", or_null(finish), "stop_reason",
                     or_null(stop));
}

json_t *oai_logprob(float lp) {
    return json_real(isfinite(lp) ? lp : -9999.0);
}

json_t *oai_logprobs_new(int chat) {
    if (chat) return json_pack("{s:[]}", "content");
    return json_pack("{s:[],s:[],s:[],s:[]}", "text_offset", "token_logprobs", "tokens",
                     "top_logprobs");
}

static json_t *bytes_of(const char *s) {
    json_t *a = json_array();
    for (const unsigned char *p = (const unsigned char *)s; a && *p; p++)
        json_array_append_new(a, json_integer(*p));
    return a;
}

static bool valid_utf8(const char *s) {
    json_t *t = json_string(s);
    json_decref(t);
    return t != NULL;
}

static json_t *token_string(const char *s) {
    json_t *t = json_string(s);
    return t ? t : json_string("\xef\xbf\xbd"); /* not UTF-8 on its own: U+FFFD */
}

int oai_logprobs_add(json_t *lp, int chat, const char *token, float logprob, long long offset,
                     const char *const *top_tokens, const float *top_lps, int top_n) {
    int rc = 0;
    if (chat) {
        json_t *top = json_array();
        for (int i = 0; top && i < top_n; i++)
            rc |= json_array_append_new(
                top, json_pack("{s:o,s:o,s:o}", "token", token_string(top_tokens[i]), "logprob",
                               oai_logprob(top_lps[i]), "bytes", bytes_of(top_tokens[i])));
        json_t *e =
            top ? json_pack("{s:o,s:o,s:o,s:o}", "token", token_string(token), "logprob",
                            oai_logprob(logprob), "bytes", bytes_of(token), "top_logprobs", top)
                : NULL;
        return rc | json_array_append_new(json_object_get(lp, "content"), e);
    }
    rc |= json_array_append_new(json_object_get(lp, "text_offset"), json_integer(offset));
    rc |= json_array_append_new(json_object_get(lp, "token_logprobs"), oai_logprob(logprob));
    rc |= json_array_append_new(json_object_get(lp, "tokens"), token_string(token));
    json_t *top = json_object();
    for (int i = 0; top && i < top_n; i++) {
        const char *k = valid_utf8(top_tokens[i]) ? top_tokens[i] : "\xef\xbf\xbd";
        /* a token whose text another one already has keeps the higher (earlier) logprob */
        if (!json_object_get(top, k)) rc |= json_object_set_new(top, k, oai_logprob(top_lps[i]));
    }
    rc |= json_array_append_new(json_object_get(lp, "top_logprobs"), top);
    return rc ? -1 : 0;
}

int oai_sse_event(struct buf *out, const json_t *obj) {
    char *s = json_dumps(obj, JSON_COMPACT);
    if (!s) return -1;
    int rc = buf_puts(out, "data: ") || buf_puts(out, s) || buf_puts(out, "\n\n") ? -1 : 0;
    free(s);
    return rc;
}
