/* chat: a model's chat template (chat.h). Loading reads DIR/chat_template.jinja when present
 * (newer HF repos ship it, and transformers lets it override the config), else the
 * chat_template of DIR/tokenizer_config.json (a string, or a list of {name, template} from
 * which "default" is taken), plus bos_token / eos_token (strings or AddedToken objects).
 * Rendering passes the variables HF's apply_chat_template passes: messages, add_generation_prompt,
 * tools=None, documents=None, the special tokens, and enable_thinking only when the caller sets
 * it. HF also passes its other special tokens (pad_token, unk_token, ...); no supported
 * template reads them, so we do not. A loaded template is read-only: renders may run in
 * parallel. */
#include "chat.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja.h"

#define CHAT_FILE_MAX_BYTES ((size_t)64 << 20)

static const char supported_families[] =
    "chat templates known to work: Qwen2.5, QwQ, Qwen3, Llama-3.x, DeepSeek-R1 distills, "
    "DeepSeek-V3";

struct chat_template {
    struct jinja_template *tmpl; /* owned */
    char *bos_token;             /* owned, NULL when the model has none */
    char *eos_token;             /* owned, NULL when the model has none */
};

/* Reads a whole file; NULL with *missing set when it does not exist. */
static char *read_file(const char *path, size_t *len, bool *missing, struct tl_err *err,
                       enum tl_status *st) {
    *missing = false;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) {
            *missing = true;
            *st = TL_OK;
        } else {
            *st = tl_fail(err, TL_ERR_IO, "%s: %s", path, strerror(errno));
        }
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= CHAT_FILE_MAX_BYTES) {
                *st = tl_fail(err, TL_ERR_FORMAT, "%s: larger than %zu MiB", path,
                              CHAT_FILE_MAX_BYTES >> 20);
                goto fail;
            }
            cap = cap ? cap * 2 : 1 << 16;
            char *p = realloc(buf, cap + 1);
            if (!p) {
                *st = tl_fail(err, TL_ERR_NOMEM, "%s: out of memory", path);
                goto fail;
            }
            buf = p;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        *st = tl_fail(err, TL_ERR_IO, "%s: read error", path);
        goto fail;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    *st = TL_OK;
    return buf;
fail:
    fclose(f);
    free(buf);
    return NULL;
}

/* bos_token / eos_token: a string, an AddedToken object ({"content": ...}), null or absent. */
static enum tl_status special_token(const json_t *cfg, const char *key, const char *path,
                                    const char **out, struct tl_err *err) {
    *out = NULL;
    const json_t *v = cfg ? json_object_get(cfg, key) : NULL;
    if (!v || json_is_null(v)) return TL_OK;
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v))
        return tl_fail(err, TL_ERR_FORMAT, "%s: %s is neither a string nor {\"content\": string}",
                       path, key);
    *out = json_string_value(v);
    return TL_OK;
}

static enum tl_status pick_template(const json_t *cfg, const char *path, const char **out,
                                    struct tl_err *err) {
    const json_t *ct = json_object_get(cfg, "chat_template");
    if (json_is_string(ct)) {
        *out = json_string_value(ct);
        return TL_OK;
    }
    if (json_is_array(ct)) {
        char names[256] = "";
        size_t i;
        const json_t *e;
        json_array_foreach(ct, i, e) {
            const char *name = json_string_value(json_object_get(e, "name"));
            const json_t *tmpl = json_object_get(e, "template");
            if (name && !strcmp(name, "default") && json_is_string(tmpl)) {
                *out = json_string_value(tmpl);
                return TL_OK;
            }
            if (name && strlen(names) + strlen(name) + 4 < sizeof names) {
                if (names[0]) strcat(names, ", ");
                strcat(names, name);
            }
        }
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "%s: chat_template lists named templates (%s) but none named 'default'",
                       path, names);
    }
    if (ct && !json_is_null(ct))
        return tl_fail(err, TL_ERR_FORMAT, "%s: chat_template is neither a string nor a list",
                       path);
    return tl_fail(err, TL_ERR_UNSUPPORTED,
                   "%s has no chat_template and there is no chat_template.jinja beside it; the "
                   "model has no chat format to apply",
                   path);
}

enum tl_status chat_template_load(const char *dir, struct chat_template **out, struct tl_err *err) {
    *out = NULL;
    char cfg_path[4096], jinja_path[4096];
    if (snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", dir) >=
            (int)sizeof cfg_path ||
        snprintf(jinja_path, sizeof jinja_path, "%s/chat_template.jinja", dir) >=
            (int)sizeof jinja_path)
        return tl_fail(err, TL_ERR_INVALID, "%s: path too long", dir);
    enum tl_status st;
    bool cfg_missing, jinja_missing;
    size_t cfg_len = 0, jinja_len = 0;
    char *cfg_text = read_file(cfg_path, &cfg_len, &cfg_missing, err, &st);
    if (st != TL_OK) return st;
    char *jinja_text = read_file(jinja_path, &jinja_len, &jinja_missing, err, &st);
    if (st != TL_OK) {
        free(cfg_text);
        return st;
    }
    json_t *cfg = NULL;
    const char *source = jinja_text, *bos = NULL, *eos = NULL;
    if (cfg_text) {
        json_error_t je;
        cfg = json_loadb(cfg_text, cfg_len, 0, &je);
        if (!cfg || !json_is_object(cfg)) {
            st = tl_fail(err, TL_ERR_FORMAT, "%s:%d: %s", cfg_path, je.line,
                         cfg ? "not a JSON object" : je.text);
            goto done;
        }
        if ((st = special_token(cfg, "bos_token", cfg_path, &bos, err)) != TL_OK ||
            (st = special_token(cfg, "eos_token", cfg_path, &eos, err)) != TL_OK)
            goto done;
    }
    if (!source) {
        if (!cfg) {
            st = tl_fail(err, TL_ERR_IO,
                         "%s: neither tokenizer_config.json nor "
                         "chat_template.jinja found",
                         dir);
            goto done;
        }
        if ((st = pick_template(cfg, cfg_path, &source, err)) != TL_OK) goto done;
    }
    st = chat_template_from_string(source, bos, eos, out, err);
    if (st != TL_OK) tl_err_prefix(err, "%s", jinja_text ? jinja_path : cfg_path);
done:
    json_decref(cfg);
    free(cfg_text);
    free(jinja_text);
    return st;
}

static char *dup_or_null(const char *s, bool *oom) {
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *oom = true;
    return d;
}

enum tl_status chat_template_from_string(const char *source, const char *bos_token,
                                         const char *eos_token, struct chat_template **out,
                                         struct tl_err *err) {
    *out = NULL;
    if (!source) return tl_fail(err, TL_ERR_INVALID, "chat template: no source");
    struct chat_template *t = calloc(1, sizeof *t);
    if (!t) return tl_fail(err, TL_ERR_NOMEM, "out of memory loading the chat template");
    bool oom = false;
    t->bos_token = dup_or_null(bos_token, &oom);
    t->eos_token = dup_or_null(eos_token, &oom);
    if (oom) {
        chat_template_free(t);
        return tl_fail(err, TL_ERR_NOMEM, "out of memory loading the chat template");
    }
    enum tl_status st = jinja_template_parse(source, strlen(source), &t->tmpl, err);
    if (st != TL_OK) {
        chat_template_free(t);
        if (st == TL_ERR_UNSUPPORTED && err) {
            char msg[TL_ERR_MSG_MAX];
            snprintf(msg, sizeof msg, "%.700s (%s)", err->msg, supported_families);
            memcpy(err->msg, msg, sizeof msg);
        }
        tl_err_prefix(err, "chat template");
        return st;
    }
    *out = t;
    return TL_OK;
}

void chat_template_free(struct chat_template *t) {
    if (!t) return;
    jinja_template_free(t->tmpl);
    free(t->bos_token);
    free(t->eos_token);
    free(t);
}

/* json_object_set_new that reports a NULL value (a string that is not UTF-8, or no memory). */
static bool set_new(json_t *obj, const char *key, json_t *v) {
    return v && json_object_set_new(obj, key, v) == 0;
}

enum tl_status chat_template_render(const struct chat_template *t, const struct chat_message *msgs,
                                    int n_msgs, const struct chat_options *opts, char **text,
                                    size_t *len, struct tl_err *err) {
    *text = NULL;
    if (len) *len = 0;
    if (!t || n_msgs < 0 || (n_msgs && !msgs))
        return tl_fail(err, TL_ERR_INVALID, "chat template: bad arguments");
    enum tl_status st = TL_OK;
    json_t *vars = json_object(), *messages = json_array();
    if (!vars || !messages || json_object_set(vars, "messages", messages)) {
        st = tl_fail(err, TL_ERR_NOMEM, "out of memory building the chat template variables");
        goto done;
    }
    for (int i = 0; i < n_msgs; i++) {
        const struct chat_message *m = &msgs[i];
        if (!m->role || !m->content) {
            st = tl_fail(err, TL_ERR_INVALID, "chat message %d has no %s", i,
                         m->role ? "content" : "role");
            goto done;
        }
        json_t *o = json_object();
        if (!o || json_array_append_new(messages, o)) {
            st = tl_fail(err, TL_ERR_NOMEM, "out of memory building the chat messages");
            goto done;
        }
        if (!set_new(o, "role", json_string(m->role)) ||
            !set_new(o, "content", json_string(m->content)) ||
            (m->reasoning_content &&
             !set_new(o, "reasoning_content", json_string(m->reasoning_content)))) {
            st = tl_fail(err, TL_ERR_INVALID,
                         "chat message %d: role, content or reasoning is not valid UTF-8", i);
            goto done;
        }
    }
    bool add_gen = opts && opts->add_generation_prompt;
    if (!set_new(vars, "add_generation_prompt", json_boolean(add_gen)) ||
        !set_new(vars, "tools", json_null()) || !set_new(vars, "documents", json_null()) ||
        (t->bos_token && !set_new(vars, "bos_token", json_string(t->bos_token))) ||
        (t->eos_token && !set_new(vars, "eos_token", json_string(t->eos_token))) ||
        (opts && opts->enable_thinking >= 0 &&
         !set_new(vars, "enable_thinking", json_boolean(opts->enable_thinking)))) {
        st = tl_fail(err, TL_ERR_INVALID, "chat template: special tokens are not valid UTF-8");
        goto done;
    }
    st = jinja_template_render(t->tmpl, vars, NULL, text, len, err);
    if (st != TL_OK) tl_err_prefix(err, "chat template");
done:
    json_decref(messages);
    json_decref(vars);
    return st;
}
