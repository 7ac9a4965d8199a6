/* routes: the small endpoints, shaped as vLLM answers them: /health (200, empty),
 * /version, /v1/models (and /v1/models/{id}), /metrics (Prometheus text), /tokenize and
 * /detokenize. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oai_response.h"
#include "server_impl.h"

#ifndef TL_VERSION
#define TL_VERSION "0.0.0"
#endif

void route_health(struct server *s, struct http_req *r, const char *body, size_t len) {
    (void)body;
    (void)len;
    if (atomic_load(&s->stopping)) {
        http_send_error(r, 503, NULL, "the server is shutting down");
        return;
    }
    http_send(r, 200, "application/json", "", 0);
}

void route_version(struct server *s, struct http_req *r, const char *body, size_t len) {
    (void)s;
    (void)body;
    (void)len;
    json_t *v = json_pack("{s:s}", "version", TL_VERSION);
    http_send_json(r, 200, v);
    json_decref(v);
}

static json_t *model_card(const struct server *s, const char *name) {
    return json_pack("{s:s,s:s,s:I,s:s,s:s,s:n,s:i,s:[]}", "id", name, "object", "model", "created",
                     (json_int_t)s->started, "owned_by", "tierlm", "root",
                     s->m.model_path ? s->m.model_path : name, "parent", "max_model_len",
                     s->m.max_model_len, "permission");
}

void route_models(struct server *s, struct http_req *r, const char *body, size_t len) {
    (void)body;
    (void)len;
    const char *path = r->path;
    if (strcmp(path, "/v1/models") != 0) { /* /v1/models/{id} */
        const char *id = path + strlen("/v1/models/");
        if (!server_knows_model(s, id)) {
            http_send_error(r, 404, "model", "The model `%s` does not exist.", id);
            return;
        }
        json_t *m = model_card(s, id);
        http_send_json(r, 200, m);
        json_decref(m);
        return;
    }
    json_t *data = json_array();
    for (int i = 0; i < s->o.n_served_model_names; i++)
        json_array_append_new(data, model_card(s, s->o.served_model_names[i]));
    json_t *list = json_pack("{s:s,s:o}", "object", "list", "data", data);
    http_send_json(r, 200, list);
    json_decref(list);
}

void route_metrics(struct server *s, struct http_req *r, const char *body, size_t len) {
    (void)body;
    (void)len;
    struct engine_metrics m;
    engine_metrics_get(s->m.engine, &m);
    struct metrics_server ms = {
        .unknown_fields_total = atomic_load(&s->unknown_fields),
        .rejected_total = atomic_load(&s->rejected),
        .client_gone_total = atomic_load(&s->client_gone),
    };
    for (int i = 0; i < METRICS_MAX_STATUS; i++) ms.responses[i] = atomic_load(&s->responses[i]);
    struct buf out = {0};
    if (metrics_render(&out, s->o.served_model_names[0], &m, &ms)) {
        buf_free(&out);
        http_send_error(r, 503, NULL, "out of memory rendering the metrics");
        return;
    }
    http_send(r, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len);
    buf_free(&out);
}

static bool need_tokenizer(struct server *s, struct http_req *r) {
    if (s->m.tok) return true;
    http_send_error(r, 400, NULL, "this server was started without a tokenizer");
    return false;
}

/* vLLM's /tokenize: {"prompt": text} or {"messages": [...]} -> {"count", "max_model_len",
 * "tokens", "token_strs"}. */
void route_tokenize(struct server *s, struct http_req *r, const char *body, size_t len) {
    if (!need_tokenizer(s, r)) return;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    bool chat = json_object_get(root, "messages") != NULL;
    bool strs = json_is_true(json_object_get(root, "return_token_strs"));
    json_decref(root);
    struct oai_request req;
    char param[64];
    struct tl_err err;
    int32_t *ids = NULL;
    int n = 0;
    if (oai_request_parse(chat ? OAI_CHAT : OAI_COMPLETION, body, len, &s->m.defaults, &s->lim,
                          &req, param, sizeof param, &err) != TL_OK) {
        http_send_error(r, 400, param, "%s", err.msg);
        return;
    }
    if (req.model && !server_knows_model(s, req.model)) {
        http_send_error(r, 404, "model", "The model `%s` does not exist.", req.model);
    } else if (!chat && req.n_prompts != 1) {
        http_send_error(r, 400, "prompt", "/tokenize takes one prompt, got %d", req.n_prompts);
    } else {
        enum tl_status st = chat ? prompt_chat(&s->pctx, &req, &ids, &n, &err)
                                 : prompt_completion(&s->pctx, &req.prompts[0],
                                                     req.add_special_tokens, &ids, &n, &err);
        if (st != TL_OK) {
            http_send_error(r, 400, chat ? "messages" : "prompt", "%s", err.msg);
        } else {
            json_t *toks = json_array(), *ts = strs ? json_array() : json_null();
            for (int i = 0; i < n; i++) {
                json_array_append_new(toks, json_integer(ids[i]));
                if (!strs) continue;
                char *t = NULL;
                size_t tl;
                if (tokenizer_decode(s->m.tok, &ids[i], 1, false, &t, &tl, &err) == TL_OK)
                    json_array_append_new(ts, oai_string(t, tl));
                free(t);
            }
            json_t *resp = json_pack("{s:i,s:i,s:o,s:o}", "count", n, "max_model_len",
                                     s->m.max_model_len, "tokens", toks, "token_strs", ts);
            http_send_json(r, 200, resp);
            json_decref(resp);
        }
    }
    free(ids);
    oai_request_free(&req);
}

/* vLLM's /detokenize: {"tokens": [ids]} -> {"prompt": text}. */
void route_detokenize(struct server *s, struct http_req *r, const char *body, size_t len) {
    if (!need_tokenizer(s, r)) return;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!json_is_object(root)) {
        http_send_error(r, 400, NULL, "the body must be a JSON object: %s",
                        root ? "got another JSON value" : jerr.text);
        json_decref(root);
        return;
    }
    const json_t *model = json_object_get(root, "model");
    const json_t *toks = json_object_get(root, "tokens");
    size_t n = json_array_size(toks);
    int32_t *ids = n ? malloc(n * sizeof *ids) : NULL;
    if (json_is_string(model) && !server_knows_model(s, json_string_value(model))) {
        http_send_error(r, 404, "model", "The model `%s` does not exist.",
                        json_string_value(model));
    } else if (!json_is_array(toks)) {
        http_send_error(r, 400, "tokens", "tokens must be an array of token ids");
    } else if (n && !ids) {
        http_send_error(r, 503, NULL, "out of memory");
    } else {
        bool ok = true;
        for (size_t i = 0; ok && i < n; i++) {
            long long id;
            ok = oai_json_int(json_array_get(toks, i), 0, s->m.vocab_size - 1, &id);
            if (ok)
                ids[i] = (int32_t)id;
            else
                http_send_error(r, 400, "tokens", "tokens[%zu] must be a token id in [0, %d)", i,
                                s->m.vocab_size);
        }
        char *text = NULL;
        size_t tl = 0;
        struct tl_err err;
        if (ok && tokenizer_decode(s->m.tok, ids, (int)n, true, &text, &tl, &err) != TL_OK) {
            http_send_error(r, 400, "tokens", "%s", err.msg);
        } else if (ok) {
            json_t *resp = json_pack("{s:o}", "prompt", oai_string(text, tl));
            http_send_json(r, 200, resp);
            json_decref(resp);
        }
        free(text);
    }
    free(ids);
    json_decref(root);
}
