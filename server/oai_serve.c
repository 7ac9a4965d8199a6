/* oai_serve: POST /v1/completions and /v1/chat/completions. One job per HTTP request: parse,
 * check the model, tokenize (text, chat template), vLLM's context check, admission against
 * the queue cap, one engine request per choice (n x prompts; the seed varies per choice),
 * then either a stream of SSE chunks or one whole answer. The handler thread reads its
 * choices' outputs itself: it waits on the first unfinished choice and polls the others, as
 * every choice of a request moves in the same engine steps. Between outputs it checks that
 * the client is still there; when it is not, every choice is aborted so the engine frees its
 * KV blocks before its next step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "oai_response.h"
#include "reasoning.h"
#include "server_impl.h"

#define WAIT_MS 100 /* longest wait between liveness checks while nothing is generated */

struct choice {
    struct engine_request *er; /* NULL once released */
    int index, prompt;
    bool done, first_sent;
    enum engine_finish finish;
    json_t *stop;               /* stop_reason, owned */
    char *error;                /* FINISH_ERROR's message, owned */
    struct buf text, reasoning; /* whole answers */
    struct reasoning rp;
    json_t *logprobs, *token_ids; /* whole answers, owned */
    long long offset;             /* completions' text_offset */
    int n_prompt, n_cached, n_generated;
};

struct job {
    struct server *s;
    struct http_req *http;
    struct oai_request req;
    enum oai_kind kind;
    char id[64];
    long long created;
    const char *model; /* the name answered with */
    int n_prompts;
    int32_t **ids;   /* (n_prompts) owned */
    int *n_ids;      /* (n_prompts) */
    int *max_tokens; /* (n_prompts) */
    char **echo;     /* (n_prompts) the prompt's text for echo, owned */
    struct choice *ch;
    int n_ch;
    int admitted; /* engine requests counted in s->inflight */
    bool gone, aborting;
    struct buf out; /* SSE events waiting to be written */
};

static void job_free(struct job *j) {
    for (int i = 0; i < j->n_ch; i++) {
        struct choice *c = &j->ch[i];
        if (c->er) engine_request_release(c->er);
        json_decref(c->stop);
        json_decref(c->logprobs);
        json_decref(c->token_ids);
        free(c->error);
        buf_free(&c->text);
        buf_free(&c->reasoning);
    }
    free(j->ch);
    for (int i = 0; i < j->n_prompts; i++) {
        if (j->ids) free(j->ids[i]);
        if (j->echo) free(j->echo[i]);
    }
    free(j->ids);
    free(j->n_ids);
    free(j->max_tokens);
    free(j->echo);
    if (j->admitted) atomic_fetch_sub(&j->s->inflight, j->admitted);
    buf_free(&j->out);
    oai_request_free(&j->req);
}

/* The text of one token as the logprobs show it (special tokens included). */
static char *token_text(const struct server *s, int32_t id) {
    char *t = NULL;
    size_t len;
    struct tl_err err;
    if (s->m.tok && tokenizer_decode(s->m.tok, &id, 1, false, &t, &len, &err) == TL_OK) return t;
    t = malloc(32);
    if (t) snprintf(t, 32, "token_id:%d", id);
    return t;
}

/* ---- preparing: parse, model, prompts ---- */

static int prepare(struct job *j, const char *body, size_t len) {
    struct server *s = j->s;
    char param[64];
    struct tl_err err;
    if (oai_request_parse(j->kind, body, len, &s->m.defaults, &s->lim, &j->req, param, sizeof param,
                          &err) != TL_OK) {
        http_send_error(j->http, 400, param, "%s", err.msg);
        return -1;
    }
    if (j->req.n_unknown) atomic_fetch_add(&s->unknown_fields, j->req.n_unknown);
    if (j->req.model && !server_knows_model(s, j->req.model)) {
        http_send_error(j->http, 404, "model", "The model `%s` does not exist.", j->req.model);
        return -1;
    }
    j->model = j->req.model ? j->req.model : s->o.served_model_names[0];
    j->n_prompts = j->kind == OAI_CHAT ? 1 : j->req.n_prompts;
    j->ids = calloc((size_t)j->n_prompts, sizeof *j->ids);
    j->n_ids = calloc((size_t)j->n_prompts, sizeof *j->n_ids);
    j->max_tokens = calloc((size_t)j->n_prompts, sizeof *j->max_tokens);
    j->echo = calloc((size_t)j->n_prompts, sizeof *j->echo);
    if (!j->ids || !j->n_ids || !j->max_tokens || !j->echo) {
        http_send_error(j->http, 503, NULL, "out of memory");
        return -1;
    }
    for (int i = 0; i < j->n_prompts; i++) {
        enum tl_status st =
            j->kind == OAI_CHAT
                ? prompt_chat(&s->pctx, &j->req, &j->ids[i], &j->n_ids[i], &err)
                : prompt_completion(&s->pctx, &j->req.prompts[i], j->req.add_special_tokens,
                                    &j->ids[i], &j->n_ids[i], &err);
        if (st != TL_OK) {
            http_send_error(j->http, st == TL_ERR_INVALID ? 400 : 503,
                            j->kind == OAI_CHAT ? "messages" : "prompt", "%s", err.msg);
            return -1;
        }
        prompt_truncate(j->ids[i], &j->n_ids[i], j->req.truncate_prompt_tokens);
        /* completions always have a max_tokens (vLLM's default 16); chat fills the context */
        int requested =
            j->req.max_tokens_set || j->kind == OAI_COMPLETION ? j->req.params.max_tokens : 0;
        if (prompt_fit(s->m.max_model_len, j->n_ids[i], requested, s->m.default_max_new_tokens,
                       &j->max_tokens[i], &err) != TL_OK) {
            http_send_error(j->http, 400, NULL, "%s", err.msg);
            return -1;
        }
        if (j->req.echo) {
            const struct oai_prompt *p = &j->req.prompts[i];
            size_t elen;
            if (p->text && !j->req.truncate_prompt_tokens) {
                j->echo[i] = strndup(p->text, p->text_len);
            } else if (!s->m.tok || tokenizer_decode(s->m.tok, j->ids[i], j->n_ids[i],
                                                     j->req.params.skip_special_tokens, &j->echo[i],
                                                     &elen, &err) != TL_OK) {
                http_send_error(j->http, 400, "echo", "echo needs a tokenizer on this server");
                return -1;
            }
            if (!j->echo[i]) {
                http_send_error(j->http, 503, NULL, "out of memory");
                return -1;
            }
        }
    }
    return 0;
}

/* ---- admission and submission ---- */

static int admit_and_submit(struct job *j) {
    struct server *s = j->s;
    int k = j->n_prompts * j->req.n;
    if (atomic_load(&s->stopping)) {
        http_add_header(j->http, "Retry-After", "5");
        http_send_error(j->http, 503, NULL, "the server is shutting down");
        return -1;
    }
    int before = atomic_fetch_add(&s->inflight, k);
    j->admitted = k;
    if (before + k > s->capacity) {
        atomic_fetch_add(&s->rejected, 1);
        http_add_header(j->http, "Retry-After", "1");
        http_send_error(j->http, 429, NULL,
                        "the server is at capacity: %d requests running or queued "
                        "(--max-num-seqs %d + --max-queued-requests %d); retry later",
                        before, s->o.max_num_seqs, s->o.max_queued_requests);
        return -1;
    }
    j->ch = calloc((size_t)k, sizeof *j->ch);
    if (!j->ch) {
        http_send_error(j->http, 503, NULL, "out of memory");
        return -1;
    }
    j->n_ch = k;
    for (int p = 0; p < j->n_prompts; p++) {
        for (int c = 0; c < j->req.n; c++) {
            struct choice *ch = &j->ch[p * j->req.n + c];
            ch->index = p * j->req.n + c;
            ch->prompt = p;
            ch->stop = json_null();
            reasoning_init(&ch->rp);
            if (!j->req.stream) {
                if (j->req.params.logprobs >= 0)
                    ch->logprobs = oai_logprobs_new(j->kind == OAI_CHAT);
                if (j->req.return_token_ids) ch->token_ids = json_array();
            }
            ch->offset = j->echo[p] ? (long long)strlen(j->echo[p]) : 0;
            struct engine_params ep = j->req.params;
            ep.max_tokens = j->max_tokens[p];
            if (ep.sp.has_seed) ep.sp.seed += (uint64_t)c; /* n choices must differ */
            struct tl_err err;
            enum tl_status st =
                engine_submit(s->m.engine, j->ids[p], j->n_ids[p], &ep, &ch->er, &err);
            if (st != TL_OK) {
                ch->er = NULL;
                http_send_error(j->http, st == TL_ERR_INVALID ? 400 : 503, NULL, "%s", err.msg);
                return -1;
            }
        }
    }
    return 0;
}

/* ---- outputs ---- */

static json_t *delta_logprobs(struct job *j, struct choice *c, const struct engine_output *o,
                              json_t *into) {
    if (!o->logprobs || j->req.params.logprobs < 0 || o->n_new == 0) return into;
    json_t *lp = into ? into : oai_logprobs_new(j->kind == OAI_CHAT);
    int k = o->top ? o->top_n : 0;
    for (int t = 0; lp && t < o->n_new; t++) {
        char *tok = token_text(j->s, o->ids[t]);
        char *tops[ENGINE_MAX_LOGPROBS];
        float top_lps[ENGINE_MAX_LOGPROBS];
        int nt = 0;
        for (; nt < k && nt < ENGINE_MAX_LOGPROBS; nt++) {
            tops[nt] = token_text(j->s, o->top[(size_t)t * (size_t)k + (size_t)nt].id);
            top_lps[nt] = o->top[(size_t)t * (size_t)k + (size_t)nt].logprob;
        }
        bool ok = tok != NULL;
        for (int i = 0; i < nt; i++) ok = ok && tops[i];
        if (ok)
            oai_logprobs_add(lp, j->kind == OAI_CHAT, tok, o->logprobs[t], c->offset,
                             (const char *const *)tops, top_lps, nt);
        if (tok) c->offset += (long long)strlen(tok);
        free(tok);
        for (int i = 0; i < nt; i++) free(tops[i]);
    }
    return lp;
}

static void record_finish(struct choice *c, const struct engine_output *o) {
    c->n_prompt = o->n_prompt;
    c->n_cached = o->n_cached;
    c->n_generated = o->n_generated;
    if (o->finish == ENGINE_FINISH_NONE) return;
    c->done = true;
    c->finish = o->finish;
    json_decref(c->stop);
    c->stop = oai_stop_reason(o->stop_str, o->stop_token);
    if (o->finish == ENGINE_FINISH_ERROR && !c->error)
        c->error = strdup(o->error ? o->error : "the engine failed on this request");
}

static json_t *usage_of(const struct job *j, bool only_choice, const struct choice *one) {
    long long prompt = 0, completion = 0, cached = 0;
    for (int i = 0; i < j->n_ch; i++) {
        const struct choice *c = &j->ch[i];
        if (only_choice && c != one) continue;
        if (only_choice || i % j->req.n == 0) prompt += c->n_prompt, cached += c->n_cached;
        completion += c->n_generated;
    }
    return oai_usage_json(prompt, completion, cached);
}

/* As vLLM, a chat choice's first chunk carries only the role, and it comes with the first
 * output (after the prefill), so a client timing its first chunk measures the prefill. */
static int role_chunk(struct job *j, struct choice *c) {
    json_t *arr = json_array();
    json_array_append_new(
        arr, oai_chat_choice(c->index, "delta",
                             json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL, NULL,
                             NULL));
    json_t *chunk = oai_envelope(j->id, "chat.completion.chunk", j->created, j->model, arr);
    int rc = chunk ? oai_sse_event(&j->out, chunk) : -1;
    json_decref(chunk);
    return rc;
}

/* A stream chunk of choice c: the delta text (after the reasoning split for chat). */
static int stream_chunk(struct job *j, struct choice *c, const struct engine_output *o) {
    bool final = o->finish != ENGINE_FINISH_NONE;
    if (o->n_new == 0 && !final) return 0; /* nothing new (a timeout) */
    json_t *lp = delta_logprobs(j, c, o, NULL);
    json_t *finish = final ? oai_finish_reason(o->finish) : NULL;
    json_t *stop = final ? oai_stop_reason(o->stop_str, o->stop_token) : NULL;
    json_t *choice;
    if (j->kind == OAI_CHAT && !c->first_sent) {
        role_chunk(j, c);
        c->first_sent = true;
    }
    if (j->kind == OAI_CHAT) {
        json_t *delta = json_object();
        if (j->s->o.reasoning_deepseek_r1) {
            struct buf rb = {0}, cb = {0};
            reasoning_push(&c->rp, o->text, o->text_len, &rb, &cb);
            if (final) reasoning_flush(&c->rp, &rb, &cb);
            if (rb.len)
                json_object_set_new(delta, "reasoning_content", oai_string(rb.data, rb.len));
            if (cb.len || !rb.len)
                json_object_set_new(delta, "content", oai_string(cb.data, cb.len));
            buf_free(&rb);
            buf_free(&cb);
        } else {
            /* one chunk per token, as vLLM: empty when the detokenizer holds the text back */
            json_object_set_new(delta, "content", oai_string(o->text, o->text_len));
        }
        choice = oai_chat_choice(c->index, "delta", delta, lp, finish, stop);
    } else {
        struct buf t = {0};
        if (!c->first_sent && j->echo[c->prompt]) buf_puts(&t, j->echo[c->prompt]);
        buf_append(&t, o->text, o->text_len);
        choice = oai_completion_choice(c->index, t.data, t.len, lp, finish, stop);
        buf_free(&t);
    }
    c->first_sent = true;
    json_t *arr = json_array();
    json_array_append_new(arr, choice);
    json_t *chunk =
        oai_envelope(j->id, j->kind == OAI_CHAT ? "chat.completion.chunk" : "text_completion",
                     j->created, j->model, arr);
    if (chunk && j->req.include_usage && j->req.continuous_usage)
        json_object_set_new(chunk, "usage", usage_of(j, true, c));
    int rc = chunk ? oai_sse_event(&j->out, chunk) : -1;
    json_decref(chunk);
    return rc;
}

static void whole_delta(struct job *j, struct choice *c, const struct engine_output *o) {
    if (j->kind == OAI_CHAT && j->s->o.reasoning_deepseek_r1) {
        reasoning_push(&c->rp, o->text, o->text_len, &c->reasoning, &c->text);
        if (o->finish != ENGINE_FINISH_NONE) reasoning_flush(&c->rp, &c->reasoning, &c->text);
    } else {
        if (!c->first_sent && j->echo[c->prompt]) buf_puts(&c->text, j->echo[c->prompt]);
        buf_append(&c->text, o->text, o->text_len);
    }
    c->first_sent = true;
    c->logprobs = delta_logprobs(j, c, o, c->logprobs);
    for (int t = 0; c->token_ids && t < o->n_new; t++)
        json_array_append_new(c->token_ids, json_integer(o->ids[t]));
}

static void on_output(struct job *j, struct choice *c, const struct engine_output *o) {
    if (c->done) return;
    c->n_prompt = o->n_prompt; /* before the chunk, for continuous_usage_stats */
    c->n_cached = o->n_cached;
    c->n_generated = o->n_generated;
    if (j->req.stream && !j->gone) {
        bool final = o->finish != ENGINE_FINISH_NONE;
        if (!(final && o->finish == ENGINE_FINISH_ERROR)) stream_chunk(j, c, o);
    } else if (!j->req.stream) {
        whole_delta(j, c, o);
    }
    record_finish(c, o);
}

static void abort_all(struct job *j) {
    if (j->aborting) return;
    j->aborting = true;
    for (int i = 0; i < j->n_ch; i++)
        if (j->ch[i].er && !j->ch[i].done) engine_request_abort(j->ch[i].er);
}

/* Reads every choice until all have finished, writing stream events as they come. */
static void pump(struct job *j) {
    struct engine_output o;
    for (;;) {
        int first = -1;
        for (int i = 0; i < j->n_ch && first < 0; i++)
            if (!j->ch[i].done) first = i;
        if (first < 0) break;
        engine_request_wait(j->ch[first].er, WAIT_MS, &o);
        on_output(j, &j->ch[first], &o);
        for (int i = first + 1; i < j->n_ch; i++) {
            if (j->ch[i].done) continue;
            engine_request_wait(j->ch[i].er, 0, &o);
            on_output(j, &j->ch[i], &o);
        }
        if (j->out.len && !j->gone) {
            if (http_stream_write(j->http, j->out.data, j->out.len)) j->gone = true;
            j->out.len = 0;
        }
        if (!j->gone && !http_client_alive(j->http)) j->gone = true;
        if (j->gone || atomic_load(&j->s->stopping)) abort_all(j);
    }
}

static const char *first_error(const struct job *j) {
    for (int i = 0; i < j->n_ch; i++)
        if (j->ch[i].finish == ENGINE_FINISH_ERROR) return j->ch[i].error;
    return NULL;
}

static void run_stream(struct job *j) {
    if (http_stream_begin(j->http)) {
        j->gone = true;
        abort_all(j);
    }
    pump(j);
    if (j->gone) {
        atomic_fetch_add(&j->s->client_gone, 1);
        j->http->status = 499; /* nginx's "client closed request", for the log */
        return;
    }
    const char *err = first_error(j);
    if (err) {
        json_t *e = oai_error_json(500, err, NULL);
        oai_sse_event(&j->out, e);
        json_decref(e);
    }
    if (j->req.include_usage) {
        json_t *chunk =
            oai_envelope(j->id, j->kind == OAI_CHAT ? "chat.completion.chunk" : "text_completion",
                         j->created, j->model, json_array());
        if (chunk) json_object_set_new(chunk, "usage", usage_of(j, false, NULL));
        if (chunk) oai_sse_event(&j->out, chunk);
        json_decref(chunk);
    }
    buf_puts(&j->out, OAI_SSE_DONE);
    if (http_stream_write(j->http, j->out.data, j->out.len) == 0) http_stream_end(j->http);
    j->out.len = 0;
}

static json_t *whole_choice(struct job *j, struct choice *c) {
    json_t *finish = oai_finish_reason(c->finish), *stop = json_incref(c->stop);
    json_t *lp = json_incref(c->logprobs);
    json_t *choice;
    if (j->kind == OAI_CHAT) {
        json_t *msg = json_pack("{s:s}", "role", "assistant");
        json_object_set_new(msg, "content",
                            c->text.len || !j->s->o.reasoning_deepseek_r1
                                ? oai_string(c->text.data, c->text.len)
                                : json_null());
        if (j->s->o.reasoning_deepseek_r1)
            json_object_set_new(msg, "reasoning_content",
                                c->reasoning.len ? oai_string(c->reasoning.data, c->reasoning.len)
                                                 : json_null());
        json_object_set_new(msg, "tool_calls", json_array());
        choice = oai_chat_choice(c->index, "message", msg, lp, finish, stop);
    } else {
        choice = oai_completion_choice(c->index, c->text.data, c->text.len, lp, finish, stop);
    }
    if (choice && c->token_ids) {
        json_t *pids = json_array();
        for (int t = 0; pids && t < j->n_ids[c->prompt]; t++)
            json_array_append_new(pids, json_integer(j->ids[c->prompt][t]));
        json_object_set_new(choice, "prompt_token_ids", pids);
        json_object_set(choice, "token_ids", c->token_ids);
    }
    return choice;
}

static void run_whole(struct job *j) {
    pump(j);
    if (j->gone) {
        atomic_fetch_add(&j->s->client_gone, 1);
        j->http->status = 499;
        return;
    }
    const char *err = first_error(j);
    if (err) {
        http_send_error(j->http, 500, NULL, "%s", err);
        return;
    }
    for (int i = 0; i < j->n_ch; i++) {
        if (j->ch[i].finish != ENGINE_FINISH_ABORT) continue;
        http_add_header(j->http, "Retry-After", "5");
        http_send_error(j->http, 503, NULL, "the server shut down before the answer was complete");
        return;
    }
    json_t *arr = json_array();
    for (int i = 0; i < j->n_ch; i++) json_array_append_new(arr, whole_choice(j, &j->ch[i]));
    json_t *resp = oai_envelope(j->id, j->kind == OAI_CHAT ? "chat.completion" : "text_completion",
                                j->created, j->model, arr);
    if (resp) json_object_set_new(resp, "usage", usage_of(j, false, NULL));
    http_send_json(j->http, 200, resp);
    json_decref(resp);
}

void oai_serve(struct server *s, struct http_req *r, enum oai_kind kind, const char *body,
               size_t len) {
    struct job j = {.s = s, .http = r, .kind = kind, .created = (long long)time(NULL)};
    oai_make_id(j.id, sizeof j.id, kind == OAI_CHAT ? "chatcmpl-" : "cmpl-");
    if (prepare(&j, body, len) == 0 && admit_and_submit(&j) == 0) {
        if (j.req.stream)
            run_stream(&j);
        else
            run_whole(&j);
    }
    job_free(&j);
}
