/* oai_response: the JSON of OpenAI's completion and chat responses, stream chunks, usage,
 * logprobs and errors, as vLLM writes them, and the SSE framing of a chunk. Pure builders
 * over jansson: every json_t * returned is a new reference the caller owns, NULL only when
 * memory runs out; json_t * arguments marked "stolen" are owned by the result afterwards. */
#ifndef TL_SERVER_OAI_RESPONSE_H
#define TL_SERVER_OAI_RESPONSE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "engine.h"

/* The "type" of an error answer for an HTTP status, named as the openai clients name their
 * exceptions ("BadRequestError" for 400, as vLLM). */
const char *oai_error_type(int status);

/* {"error": {"message", "type", "param", "code"}}; param may be NULL or "" (null). */
json_t *oai_error_json(int status, const char *message, const char *param);

/* prefix + 32 random hex digits ("cmpl-...", "chatcmpl-..."); out holds at least 48 bytes. */
void oai_make_id(char *out, size_t out_len, const char *prefix);

/* {"id", "object", "created", "model", "choices": choices (stolen)}. */
json_t *oai_envelope(const char *id, const char *object, long long created, const char *model,
                     json_t *choices);

/* {"prompt_tokens", "completion_tokens", "total_tokens"} (+ prompt_tokens_details.cached_tokens
 * when cached > 0). */
json_t *oai_usage_json(long long prompt, long long completion, long long cached);

/* vLLM's stop_reason: the stop string, else the stop token id (>= 0), else null. */
json_t *oai_stop_reason(const char *stop_str, int32_t stop_token);

/* finish_reason: "stop" / "length" / "abort", null while running. */
json_t *oai_finish_reason(enum engine_finish f);

/* One completion choice (a whole answer or a stream chunk's): {"index", "text", "logprobs",
 * "finish_reason", "stop_reason"}; logprobs, finish and stop are stolen (NULL = null). */
json_t *oai_completion_choice(int index, const char *text, size_t len, json_t *logprobs,
                              json_t *finish, json_t *stop);

/* A chat stream choice {"index", "delta": delta (stolen), "logprobs", "finish_reason",
 * "stop_reason"}, or with message instead of delta, a whole chat choice. */
json_t *oai_chat_choice(int index, const char *key, json_t *delta_or_message, json_t *logprobs,
                        json_t *finish, json_t *stop);

/* A JSON string of len bytes of UTF-8 (NULL when not valid UTF-8). */
json_t *oai_string(const char *s, size_t len);

/* A logprob as JSON: -inf and NaN become -9999.0, as vLLM does. */
json_t *oai_logprob(float lp);

/* Logprobs accumulators. Completions: {"text_offset", "token_logprobs", "tokens",
 * "top_logprobs"}; chat: {"content": [{"token", "logprob", "bytes", "top_logprobs"}]}.
 * token / top_tokens are the tokens' texts. */
json_t *oai_logprobs_new(int chat);
int oai_logprobs_add(json_t *lp, int chat, const char *token, float logprob, long long offset,
                     const char *const *top_tokens, const float *top_lps, int top_n);

/* Appends "data: <compact json>\n\n" to out; 0, or -1 when memory runs out. */
int oai_sse_event(struct buf *out, const json_t *obj);
#define OAI_SSE_DONE "data: [DONE]\n\n"

#endif
