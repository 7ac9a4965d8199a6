/* config: reads a HF config.json / generation_config.json (via jansson) into struct config /
 * struct gen_config, with the defaults HF transformers 4.x and 5.x give LlamaConfig and
 * Qwen2Config. No state, no threads; the JSON tree lives and dies inside each call.
 *
 * Where transformers 4 and 5 read the same file differently (rope_scaling vs rope_parameters,
 * `type` vs `rope_type`, torch_dtype vs dtype, top-level vs in-dict rope_theta), every place a
 * value appears must agree, else TL_ERR_FORMAT: we never pick one of two readings silently.
 * Deliberate departures from HF: the five size fields are required (HF falls back on its 7B
 * defaults), and hidden_size must divide by num_attention_heads when head_dim is absent
 * (HF 4 floors). */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Caps that keep every later product of dimensions far inside 64 bits (2^20 * 2^20 * 2^10). */
#define CONFIG_DIM_LIMIT      (1 << 20)
#define CONFIG_LAYER_LIMIT    1024
#define CONFIG_FILE_MAX_BYTES ((size_t)16 << 20)

/* Who is parsing what, for messages. */
struct jctx {
    const char *name; /* file path or caller's label */
    struct tl_err *err;
};

/* REQUIRED: absent or null is an error. OPTIONAL: absent is fine, null is a type error.
 * NULLABLE: absent and null both mean "not given" (fields HF declares Optional). */
enum presence { REQUIRED, OPTIONAL, NULLABLE };

static const struct {
    const char *arch, *model_type;
    enum config_arch id;
} supported_archs[] = {
    {"LlamaForCausalLM", "llama", CONFIG_ARCH_LLAMA},
    {"Qwen2ForCausalLM", "qwen2", CONFIG_ARCH_QWEN2},
};
#define N_ARCHS             (sizeof supported_archs / sizeof supported_archs[0])
#define SUPPORTED_ARCH_LIST "LlamaForCausalLM, Qwen2ForCausalLM"

static const char *json_kind(const json_t *v) {
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
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "an unknown JSON value";
}

/* "sec.key" or "key", for messages about nested fields such as rope_scaling.factor. */
static const char *label(char *buf, size_t size, const char *sec, const char *key) {
    if (!sec) return key;
    snprintf(buf, size, "%s.%s", sec, key);
    return buf;
}

/* Looks obj[key] up under the presence rule; *v is NULL when the field counts as not given. */
static enum tl_status lookup(const struct jctx *c, json_t *obj, const char *sec, const char *key,
                             enum presence pr, json_t **v) {
    char buf[128];
    *v = json_object_get(obj, key);
    if (*v && json_is_null(*v)) {
        if (pr == NULLABLE) {
            *v = NULL;
            return TL_OK;
        }
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: field %s must not be null", c->name,
                       label(buf, sizeof buf, sec, key));
    }
    if (!*v && pr == REQUIRED)
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: required field %s is missing", c->name,
                       label(buf, sizeof buf, sec, key));
    return TL_OK;
}

/* Converts a JSON number to an int in [lo, hi]. Integral reals (4096.0) pass: some exporters
 * write every number as a float, and Python's int() would take them. */
static enum tl_status to_int(const struct jctx *c, const json_t *v, const char *what, long long lo,
                             long long hi, int *out) {
    long long x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        /* Range first: the cast below is undefined outside long long. */
        if (!(d >= (double)lo && d <= (double)hi) || (double)(long long)d != d)
            return tl_fail(c->err, TL_ERR_FORMAT,
                           "%s: %s must be an integer in %lld..%lld, got %.17g", c->name, what, lo,
                           hi, d);
        x = (long long)d;
    } else {
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: %s must be an integer, got %s", c->name, what,
                       json_kind(v));
    }
    if (x < lo || x > hi)
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: %s = %lld is out of range (expected %lld..%lld)",
                       c->name, what, x, lo, hi);
    *out = (int)x;
    return TL_OK;
}

static enum tl_status get_int(const struct jctx *c, json_t *obj, const char *sec, const char *key,
                              enum presence pr, long long lo, long long hi, int *out, bool *found) {
    char buf[128];
    json_t *v;
    enum tl_status st = lookup(c, obj, sec, key, pr, &v);
    if (found) *found = v != NULL;
    if (st || !v) return st;
    return to_int(c, v, label(buf, sizeof buf, sec, key), lo, hi, out);
}

static enum tl_status get_num(const struct jctx *c, json_t *obj, const char *sec, const char *key,
                              enum presence pr, double *out, bool *found) {
    char buf[128];
    json_t *v;
    enum tl_status st = lookup(c, obj, sec, key, pr, &v);
    if (found) *found = v != NULL;
    if (st || !v) return st;
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: %s must be a number, got %s", c->name,
                       label(buf, sizeof buf, sec, key), json_kind(v));
    *out = json_number_value(v);
    return TL_OK;
}

static enum tl_status get_bool(const struct jctx *c, json_t *obj, const char *key, enum presence pr,
                               bool *out, bool *found) {
    json_t *v;
    enum tl_status st = lookup(c, obj, NULL, key, pr, &v);
    if (found) *found = v != NULL;
    if (st || !v) return st;
    if (!json_is_boolean(v))
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: %s must be true or false, got %s", c->name, key,
                       json_kind(v));
    *out = json_is_true(v);
    return TL_OK;
}

static enum tl_status get_str(const struct jctx *c, json_t *obj, const char *sec, const char *key,
                              enum presence pr, const char **out) {
    char buf[128];
    json_t *v;
    enum tl_status st = lookup(c, obj, sec, key, pr, &v);
    *out = NULL;
    if (st || !v) return st;
    if (!json_is_string(v))
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: %s must be a string, got %s", c->name,
                       label(buf, sizeof buf, sec, key), json_kind(v));
    *out = json_string_value(v);
    return TL_OK;
}

/* eos_token_id: an int, a list of ints, or null. *found is false when absent or null. */
static enum tl_status get_token_ids(const struct jctx *c, json_t *obj, const char *key,
                                    int ids[CONFIG_MAX_EOS], int *n, bool *found) {
    json_t *v;
    enum tl_status st = lookup(c, obj, NULL, key, NULLABLE, &v);
    *found = v != NULL;
    *n = 0;
    if (st || !v) return st;
    if (!json_is_array(v)) {
        if (!json_is_number(v))
            return tl_fail(c->err, TL_ERR_FORMAT,
                           "%s: %s must be a token id or a list of token ids, got %s", c->name, key,
                           json_kind(v));
        *n = 1;
        return to_int(c, v, key, 0, INT_MAX, &ids[0]);
    }
    size_t len = json_array_size(v);
    if (len > CONFIG_MAX_EOS)
        return tl_fail(c->err, TL_ERR_FORMAT,
                       "%s: %s lists %zu token ids; at most %d are supported", c->name, key, len,
                       CONFIG_MAX_EOS);
    for (size_t i = 0; i < len; i++) {
        char what[96];
        snprintf(what, sizeof what, "%s[%zu]", key, i);
        st = to_int(c, json_array_get(v, i), what, 0, INT_MAX, &ids[i]);
        if (st) return st;
    }
    *n = (int)len;
    return TL_OK;
}

static enum tl_status load_root(const struct jctx *c, const char *json, size_t len, json_t **root) {
    json_error_t je;
    *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!*root)
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: invalid JSON at line %d, column %d: %s", c->name,
                       je.line, je.column, je.text);
    if (!json_is_object(*root)) {
        enum tl_status st =
            tl_fail(c->err, TL_ERR_FORMAT, "%s: top level must be an object, got %s", c->name,
                    json_kind(*root));
        json_decref(*root);
        *root = NULL;
        return st;
    }
    return TL_OK;
}

/* transformers' AutoModel picks the class from model_type, not from `architectures`, so a
 * model_type naming anything else would run a different model in HF: it must match. */
static enum tl_status parse_arch(const struct jctx *c, json_t *root, enum config_arch *arch) {
    json_t *archs;
    const char *mt = NULL;
    enum tl_status st = lookup(c, root, NULL, "architectures", NULLABLE, &archs);
    if (!st) st = get_str(c, root, NULL, "model_type", NULLABLE, &mt);
    if (st) return st;

    int found = -1;
    if (archs && !json_is_array(archs))
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: architectures must be a list of strings, got %s",
                       c->name, json_kind(archs));
    if (archs && json_array_size(archs) > 0) {
        for (size_t i = 0; i < json_array_size(archs); i++) {
            json_t *a = json_array_get(archs, i);
            if (!json_is_string(a))
                return tl_fail(c->err, TL_ERR_FORMAT,
                               "%s: architectures[%zu] must be a string, got %s", c->name, i,
                               json_kind(a));
            for (size_t k = 0; k < N_ARCHS; k++) {
                if (strcmp(json_string_value(a), supported_archs[k].arch) != 0) continue;
                if (found >= 0 && found != (int)k)
                    return tl_fail(c->err, TL_ERR_FORMAT,
                                   "%s: architectures names both %s and %s; which one is meant?",
                                   c->name, supported_archs[found].arch, supported_archs[k].arch);
                found = (int)k;
            }
        }
        if (found < 0)
            return tl_fail(c->err, TL_ERR_UNSUPPORTED,
                           "%s: architecture %s is not supported (supported: %s)", c->name,
                           json_string_value(json_array_get(archs, 0)), SUPPORTED_ARCH_LIST);
        if (mt && strcmp(mt, supported_archs[found].model_type) != 0) {
            for (size_t k = 0; k < N_ARCHS; k++)
                if (strcmp(mt, supported_archs[k].model_type) == 0)
                    return tl_fail(c->err, TL_ERR_FORMAT,
                                   "%s: model_type \"%s\" contradicts architectures %s (expected "
                                   "model_type \"%s\")",
                                   c->name, mt, supported_archs[found].arch,
                                   supported_archs[found].model_type);
            return tl_fail(c->err, TL_ERR_UNSUPPORTED,
                           "%s: model_type \"%s\" is not supported; transformers builds the model "
                           "from model_type, so architectures %s does not decide (supported: "
                           "llama, qwen2)",
                           c->name, mt, supported_archs[found].arch);
        }
        *arch = supported_archs[found].id;
        return TL_OK;
    }
    if (!mt)
        return tl_fail(c->err, TL_ERR_FORMAT,
                       "%s: neither architectures nor model_type is given; is this a HF "
                       "config.json?",
                       c->name);
    for (size_t k = 0; k < N_ARCHS; k++) {
        if (strcmp(mt, supported_archs[k].model_type) == 0) {
            *arch = supported_archs[k].id;
            return TL_OK;
        }
    }
    return tl_fail(c->err, TL_ERR_UNSUPPORTED,
                   "%s: model_type \"%s\" is not supported (supported: llama (%s), qwen2 (%s))",
                   c->name, mt, supported_archs[0].arch, supported_archs[1].arch);
}

static enum tl_status reject_quantized(const struct jctx *c, json_t *root) {
    static const char *keys[] = {"quantization_config", "compression_config"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *q;
        enum tl_status st = lookup(c, root, NULL, keys[i], NULLABLE, &q);
        if (st) return st;
        if (!q) continue;
        const char *method = NULL;
        if (json_is_object(q)) {
            json_t *m = json_object_get(q, "quant_method");
            if (json_is_string(m)) method = json_string_value(m);
        }
        return tl_fail(c->err, TL_ERR_UNSUPPORTED,
                       "%s: quantized checkpoint (%s.quant_method \"%s\") is not supported; use "
                       "the unquantized bf16/fp16 weights",
                       c->name, keys[i], method ? method : "unknown");
    }
    return TL_OK;
}

/* One RoPE description, from rope_scaling (transformers 4) or rope_parameters (5). */
struct rope_spec {
    enum config_rope type;
    const char *type_name;
    bool has_theta;
    double theta;
    double factor, low, high; /* llama3 */
    int orig;                 /* llama3: original_max_position_embeddings */
};

static enum tl_status parse_rope_dict(const struct jctx *c, json_t *d, const char *sec,
                                      struct rope_spec *r) {
    enum tl_status st;
    memset(r, 0, sizeof *r);
    if (!json_is_object(d))
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: %s must be an object or null, got %s", c->name,
                       sec, json_kind(d));
    /* transformers 5 nests one dict per layer type ({"full_attention": {...}}); read as flat,
     * such a dict would silently mean default RoPE. */
    const char *k;
    json_t *v;
    json_object_foreach(d, k, v) {
        if (json_is_object(v))
            return tl_fail(c->err, TL_ERR_UNSUPPORTED,
                           "%s: %s.%s: per-layer-type RoPE parameters are not supported", c->name,
                           sec, k);
    }

    /* transformers 4 lets `type` override `rope_type`; 5 does the reverse. */
    const char *rt, *ty;
    if ((st = get_str(c, d, sec, "rope_type", NULLABLE, &rt))) return st;
    if ((st = get_str(c, d, sec, "type", NULLABLE, &ty))) return st;
    if (rt && ty && strcmp(rt, ty) != 0)
        return tl_fail(c->err, TL_ERR_FORMAT,
                       "%s: %s.rope_type \"%s\" and %s.type \"%s\" disagree (transformers 4 reads "
                       "type, 5 reads rope_type)",
                       c->name, sec, rt, sec, ty);
    r->type_name = rt ? rt : ty ? ty : "default";
    if (strcmp(r->type_name, "default") == 0) {
        r->type = CONFIG_ROPE_DEFAULT;
    } else if (strcmp(r->type_name, "llama3") == 0) {
        r->type = CONFIG_ROPE_LLAMA3;
    } else {
        return tl_fail(c->err, TL_ERR_UNSUPPORTED,
                       "%s: %s RoPE type \"%s\" is not supported (supported: default, llama3)",
                       c->name, sec, r->type_name);
    }

    if ((st = get_num(c, d, sec, "rope_theta", NULLABLE, &r->theta, &r->has_theta))) return st;
    double prf = 1.0;
    if ((st = get_num(c, d, sec, "partial_rotary_factor", NULLABLE, &prf, NULL))) return st;
    if (prf != 1.0)
        return tl_fail(c->err, TL_ERR_UNSUPPORTED,
                       "%s: %s.partial_rotary_factor = %g is not supported (RoPE on the whole head "
                       "only)",
                       c->name, sec, prf);
    if (r->type != CONFIG_ROPE_LLAMA3) return TL_OK;

    if ((st = get_num(c, d, sec, "factor", REQUIRED, &r->factor, NULL))) return st;
    if ((st = get_num(c, d, sec, "low_freq_factor", REQUIRED, &r->low, NULL))) return st;
    if ((st = get_num(c, d, sec, "high_freq_factor", REQUIRED, &r->high, NULL))) return st;
    if ((st = get_int(c, d, sec, "original_max_position_embeddings", REQUIRED, 1, INT_MAX, &r->orig,
                      NULL)))
        return st;
    if (!(r->factor > 0))
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: %s.factor must be positive, got %g", c->name,
                       sec, r->factor);
    /* low_freq_factor divides the context length; high - low divides the smoothing ramp. */
    if (!(r->low > 0))
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: %s.low_freq_factor must be positive, got %g",
                       c->name, sec, r->low);
    if (!(r->low < r->high))
        return tl_fail(c->err, TL_ERR_FORMAT,
                       "%s: %s.low_freq_factor (%g) must be less than high_freq_factor (%g)",
                       c->name, sec, r->low, r->high);
    return TL_OK;
}

static enum tl_status parse_rope(const struct jctx *c, json_t *root, struct config *cfg) {
    struct rope_spec rs = {0}, rp = {0};
    json_t *vs, *vp = NULL;
    enum tl_status st = lookup(c, root, NULL, "rope_scaling", NULLABLE, &vs);
    if (!st) st = lookup(c, root, NULL, "rope_parameters", NULLABLE, &vp);
    if (!st && vs) st = parse_rope_dict(c, vs, "rope_scaling", &rs);
    if (!st && vp) st = parse_rope_dict(c, vp, "rope_parameters", &rp);
    if (st) return st;

    /* Both forms given: transformers 4 reads rope_scaling only, 5 prefers a non-empty
     * rope_scaling too but takes rope_theta from the dict. Accept only when they agree. */
    if (vs && vp) {
        if (rs.type != rp.type)
            return tl_fail(c->err, TL_ERR_FORMAT,
                           "%s: rope_scaling (type \"%s\") and rope_parameters (type \"%s\") "
                           "disagree; keep one",
                           c->name, rs.type_name, rp.type_name);
        if (rs.type == CONFIG_ROPE_LLAMA3 && (rs.factor != rp.factor || rs.low != rp.low ||
                                              rs.high != rp.high || rs.orig != rp.orig))
            return tl_fail(c->err, TL_ERR_FORMAT,
                           "%s: rope_scaling and rope_parameters give different llama3 "
                           "factor/low_freq_factor/high_freq_factor/"
                           "original_max_position_embeddings; keep one",
                           c->name);
    }
    const struct rope_spec *use = vp ? &rp : vs ? &rs : NULL;

    double top_theta = 0;
    bool has_top;
    if ((st = get_num(c, root, NULL, "rope_theta", NULLABLE, &top_theta, &has_top))) return st;
    const struct {
        bool has;
        double v;
        const char *where;
    } thetas[] = {{has_top, top_theta, "rope_theta"},
                  {vs && rs.has_theta, vs ? rs.theta : 0, "rope_scaling.rope_theta"},
                  {vp && rp.has_theta, vp ? rp.theta : 0, "rope_parameters.rope_theta"}};
    int first = -1;
    for (int i = 0; i < 3; i++) {
        if (!thetas[i].has) continue;
        if (first < 0) {
            first = i;
        } else if (thetas[i].v != thetas[first].v) {
            return tl_fail(c->err, TL_ERR_FORMAT,
                           "%s: %s = %g and %s = %g disagree (transformers 4 and 5 would read "
                           "different values)",
                           c->name, thetas[first].where, thetas[first].v, thetas[i].where,
                           thetas[i].v);
        }
    }
    cfg->rope_theta = first >= 0 ? thetas[first].v : 10000.0;
    if (!(cfg->rope_theta > 0))
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: %s must be positive, got %g", c->name,
                       thetas[first].where, cfg->rope_theta);

    /* HF's default RoPE honours a top-level partial_rotary_factor too. */
    double prf = 1.0;
    if ((st = get_num(c, root, NULL, "partial_rotary_factor", NULLABLE, &prf, NULL))) return st;
    if (prf != 1.0)
        return tl_fail(c->err, TL_ERR_UNSUPPORTED,
                       "%s: partial_rotary_factor = %g is not supported (RoPE on the whole head "
                       "only)",
                       c->name, prf);

    cfg->rope_type = use ? use->type : CONFIG_ROPE_DEFAULT;
    cfg->rope_factor = 1.0;
    if (cfg->rope_type != CONFIG_ROPE_LLAMA3) return TL_OK;
    /* transformers 5 lets a top-level original_max_position_embeddings override the dict's;
     * transformers 4 ignores it. */
    int top_orig;
    bool has_orig;
    if ((st = get_int(c, root, NULL, "original_max_position_embeddings", NULLABLE, 1, INT_MAX,
                      &top_orig, &has_orig)))
        return st;
    if (has_orig && top_orig != use->orig)
        return tl_fail(
            c->err, TL_ERR_FORMAT,
            "%s: original_max_position_embeddings = %d and %s.original_max_position_"
            "embeddings = %d disagree (transformers 4 and 5 would read different values)",
            c->name, top_orig, vp ? "rope_parameters" : "rope_scaling", use->orig);
    cfg->rope_factor = use->factor;
    cfg->rope_low_freq_factor = use->low;
    cfg->rope_high_freq_factor = use->high;
    cfg->rope_original_max_position = use->orig;
    return TL_OK;
}

/* torch_dtype (transformers 4) or dtype (5); both given must agree. */
static enum tl_status parse_dtype(const struct jctx *c, json_t *root, enum tl_dtype *out) {
    static const char *keys[] = {"torch_dtype", "dtype"};
    bool have = false;
    *out = TL_DTYPE_BF16;
    for (size_t i = 0; i < 2; i++) {
        const char *s;
        enum tl_dtype t;
        enum tl_status st = get_str(c, root, NULL, keys[i], NULLABLE, &s);
        if (st) return st;
        if (!s) continue;
        if (!dtype_parse_torch(s, &t)) {
            const char *bare = strncmp(s, "torch.", 6) == 0 ? s + 6 : s;
            for (int k = 0; k < TL_DTYPE_COUNT; k++)
                if (strcmp(bare, dtype_torch_name((enum tl_dtype)k)) == 0)
                    return tl_fail(c->err, TL_ERR_UNSUPPORTED,
                                   "%s: %s \"%s\" is not supported (weights must be bfloat16, "
                                   "float16 or float32)",
                                   c->name, keys[i], s);
            return tl_fail(c->err, TL_ERR_FORMAT,
                           "%s: %s \"%s\" is not a dtype (expected bfloat16, float16 or float32)",
                           c->name, keys[i], s);
        }
        if (have && t != *out)
            return tl_fail(c->err, TL_ERR_FORMAT, "%s: torch_dtype and dtype disagree (%s vs %s)",
                           c->name, dtype_torch_name(*out), dtype_torch_name(t));
        have = true;
        *out = t;
    }
    return TL_OK;
}

static enum tl_status parse_sizes(const struct jctx *c, json_t *root, struct config *g) {
    const long long dmax = CONFIG_DIM_LIMIT - 1;
    enum tl_status st;
    if ((st = get_int(c, root, NULL, "vocab_size", REQUIRED, 1, dmax, &g->vocab_size, NULL)) ||
        (st = get_int(c, root, NULL, "hidden_size", REQUIRED, 1, dmax, &g->hidden_size, NULL)) ||
        (st = get_int(c, root, NULL, "intermediate_size", REQUIRED, 1, dmax, &g->intermediate_size,
                      NULL)) ||
        (st = get_int(c, root, NULL, "num_hidden_layers", REQUIRED, 1, CONFIG_LAYER_LIMIT - 1,
                      &g->n_layers, NULL)) ||
        (st = get_int(c, root, NULL, "num_attention_heads", REQUIRED, 1, dmax, &g->n_heads, NULL)))
        return st;

    /* HF: LlamaConfig defaults num_key_value_heads to None (-> num_attention_heads), but
     * Qwen2Config's default is 32; an explicit null means num_attention_heads in both. */
    json_t *kv = json_object_get(root, "num_key_value_heads");
    const char *kv_from = "";
    if (!kv) {
        g->n_kv_heads = g->arch == CONFIG_ARCH_QWEN2 ? 32 : g->n_heads;
        if (g->arch == CONFIG_ARCH_QWEN2) kv_from = " (Qwen2Config's default when absent)";
    } else if (json_is_null(kv)) {
        g->n_kv_heads = g->n_heads;
    } else if ((st = to_int(c, kv, "num_key_value_heads", 1, dmax, &g->n_kv_heads))) {
        return st;
    }
    if (g->n_heads % g->n_kv_heads != 0)
        return tl_fail(c->err, TL_ERR_FORMAT,
                       "%s: num_attention_heads = %d is not a multiple of num_key_value_heads = "
                       "%d%s",
                       c->name, g->n_heads, g->n_kv_heads, kv_from);

    bool has_hd;
    if ((st = get_int(c, root, NULL, "head_dim", NULLABLE, 1, dmax, &g->head_dim, &has_hd)))
        return st;
    if (!has_hd) {
        if (g->hidden_size % g->n_heads != 0)
            return tl_fail(c->err, TL_ERR_FORMAT,
                           "%s: hidden_size = %d is not a multiple of num_attention_heads = %d and "
                           "head_dim is not given",
                           c->name, g->hidden_size, g->n_heads);
        g->head_dim = g->hidden_size / g->n_heads;
    }
    /* RoPE rotates pairs of dimensions. */
    if (g->head_dim % 2 != 0)
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: head_dim = %d must be even for RoPE", c->name,
                       g->head_dim);
    if ((long long)g->n_heads * g->head_dim > dmax)
        return tl_fail(c->err, TL_ERR_FORMAT,
                       "%s: num_attention_heads * head_dim = %lld exceeds %lld", c->name,
                       (long long)g->n_heads * g->head_dim, dmax);
    return TL_OK;
}

static enum tl_status parse_config(const struct jctx *c, json_t *root, struct config *g) {
    enum tl_status st;
    if ((st = parse_arch(c, root, &g->arch)) || (st = reject_quantized(c, root)) ||
        (st = parse_sizes(c, root, g)))
        return st;
    bool llama = g->arch == CONFIG_ARCH_LLAMA;

    g->max_position_embeddings = llama ? 2048 : 32768;
    if ((st = get_int(c, root, NULL, "max_position_embeddings", OPTIONAL, 1, INT_MAX,
                      &g->max_position_embeddings, NULL)))
        return st;
    double eps = 1e-6;
    if ((st = get_num(c, root, NULL, "rms_norm_eps", OPTIONAL, &eps, NULL))) return st;
    if (!(eps >= 0 && eps < 1))
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: rms_norm_eps = %g is out of range [0, 1)",
                       c->name, eps);
    g->rms_norm_eps = (float)eps;

    /* "swish" is the same nn.SiLU in HF's ACT2FN. */
    const char *act;
    if ((st = get_str(c, root, NULL, "hidden_act", OPTIONAL, &act))) return st;
    if (act && strcmp(act, "silu") != 0 && strcmp(act, "swish") != 0)
        return tl_fail(c->err, TL_ERR_UNSUPPORTED,
                       "%s: hidden_act \"%s\" is not supported (only silu)", c->name, act);

    if (llama) {
        bool mlp_bias = false, bias = false;
        if ((st = get_bool(c, root, "mlp_bias", OPTIONAL, &mlp_bias, NULL)) ||
            (st = get_bool(c, root, "attention_bias", OPTIONAL, &bias, NULL)))
            return st;
        if (mlp_bias)
            return tl_fail(c->err, TL_ERR_UNSUPPORTED,
                           "%s: mlp_bias = true is not supported (no bias on gate/up/down_proj)",
                           c->name);
        g->attention_bias = g->o_bias = bias;
    } else {
        /* Qwen2Attention hard-codes bias on q/k/v and none on o; attention_bias and mlp_bias
         * are ignored by HF, so by us too. */
        g->attention_bias = true;
        g->o_bias = false;
        bool sliding = false;
        if ((st = get_bool(c, root, "use_sliding_window", OPTIONAL, &sliding, NULL))) return st;
        if (sliding)
            return tl_fail(c->err, TL_ERR_UNSUPPORTED,
                           "%s: use_sliding_window = true is not supported (sliding window "
                           "attention is not implemented)",
                           c->name);
        json_t *lt;
        if ((st = lookup(c, root, NULL, "layer_types", NULLABLE, &lt))) return st;
        if (lt && !json_is_array(lt))
            return tl_fail(c->err, TL_ERR_FORMAT, "%s: layer_types must be a list, got %s", c->name,
                           json_kind(lt));
        for (size_t i = 0; lt && i < json_array_size(lt); i++) {
            const char *s = json_string_value(json_array_get(lt, i));
            if (!s)
                return tl_fail(c->err, TL_ERR_FORMAT, "%s: layer_types[%zu] must be a string",
                               c->name, i);
            if (strcmp(s, "full_attention") != 0)
                return tl_fail(c->err, TL_ERR_UNSUPPORTED,
                               "%s: layer_types[%zu] = \"%s\" is not supported (only "
                               "full_attention)",
                               c->name, i, s);
        }
    }

    /* PretrainedConfig defaults tie_word_embeddings to true, but LlamaConfig and Qwen2Config
     * pass false. */
    g->tie_word_embeddings = false;
    if ((st = get_bool(c, root, "tie_word_embeddings", OPTIONAL, &g->tie_word_embeddings, NULL)) ||
        (st = parse_dtype(c, root, &g->dtype)) || (st = parse_rope(c, root, g)))
        return st;

    /* Absent ids take the class default (LlamaConfig: bos 1, eos 2; Qwen2Config: none);
     * null means none. */
    json_t *b = json_object_get(root, "bos_token_id");
    g->bos_token_id = !b && llama ? 1 : -1;
    if ((st = get_int(c, root, NULL, "bos_token_id", NULLABLE, 0, INT_MAX, &g->bos_token_id, NULL)))
        return st;
    bool has_eos;
    if ((st = get_token_ids(c, root, "eos_token_id", g->eos_token_ids, &g->n_eos, &has_eos)))
        return st;
    if (!has_eos && !json_object_get(root, "eos_token_id") && llama) {
        g->eos_token_ids[0] = 2;
        g->n_eos = 1;
    }
    return TL_OK;
}

enum tl_status config_parse(const char *json, size_t len, const char *name, struct config *out,
                            struct tl_err *err) {
    if (!json || !out) return tl_fail(err, TL_ERR_INVALID, "config_parse: NULL argument");
    struct jctx c = {name ? name : "config.json", err};
    json_t *root;
    enum tl_status st = load_root(&c, json, len, &root);
    if (st) return st;
    struct config g;
    memset(&g, 0, sizeof g);
    st = parse_config(&c, root, &g);
    json_decref(root);
    if (st == TL_OK) *out = g; /* *out is untouched on failure */
    return st;
}

/* Reads a whole small file. *missing tells "no such file" apart from other failures.
 * On TL_OK the caller frees *out. */
static enum tl_status read_small_file(const char *path, char **out, size_t *len, bool *missing,
                                      struct tl_err *err) {
    *out = NULL;
    *len = 0;
    *missing = false;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        *missing = e == ENOENT || e == ENOTDIR;
        return tl_fail(err, TL_ERR_IO, "%s: %s", path, strerror(e));
    }
    size_t cap = 64 << 10, n = 0;
    char *buf = malloc(cap);
    enum tl_status st = TL_OK;
    if (!buf) {
        fclose(f);
        return tl_fail(err, TL_ERR_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n == cap) {
            if (cap > CONFIG_FILE_MAX_BYTES) {
                st = tl_fail(err, TL_ERR_FORMAT, "%s: larger than %zu MiB; not a config file", path,
                             CONFIG_FILE_MAX_BYTES >> 20);
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                st = tl_fail(err, TL_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                st = tl_fail(err, TL_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (st == TL_OK && n > CONFIG_FILE_MAX_BYTES)
        st = tl_fail(err, TL_ERR_FORMAT, "%s: larger than %zu MiB; not a config file", path,
                     CONFIG_FILE_MAX_BYTES >> 20);
    if (st) {
        free(buf);
        return st;
    }
    *out = buf;
    *len = n;
    return TL_OK;
}

/* DIR/FILE in a fresh allocation (caller frees), or NULL. */
static char *join_path(const char *dir, const char *file) {
    size_t a = strlen(dir), b = strlen(file);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, file, b + 1);
    return p;
}

enum tl_status config_load(const char *model_dir, struct config *out, struct tl_err *err) {
    if (!model_dir || !out) return tl_fail(err, TL_ERR_INVALID, "config_load: NULL argument");
    char *path = join_path(model_dir, "config.json");
    if (!path) return tl_fail(err, TL_ERR_NOMEM, "config_load: out of memory");
    char *text;
    size_t len;
    bool missing;
    enum tl_status st = read_small_file(path, &text, &len, &missing, err);
    if (st == TL_OK) {
        st = config_parse(text, len, path, out, err);
        free(text);
    } else if (missing) {
        st = tl_fail(err, TL_ERR_IO,
                     "%s is not a Hugging Face model directory (no config.json there)", model_dir);
    }
    free(path);
    return st;
}

static void gen_defaults(struct gen_config *g) {
    memset(g, 0, sizeof *g);
    g->bos_token_id = -1;
    g->temperature = 1.0f;
    g->top_p = 1.0f;
    g->repetition_penalty = 1.0f;
}

/* A float field in [lo, hi] (hi_open: hi excluded); null counts as absent, as GenerationConfig
 * keeps None for "not set". */
static enum tl_status gen_float(const struct jctx *c, json_t *root, const char *key, double lo,
                                double hi, bool lo_open, float *out, bool *found) {
    double v;
    enum tl_status st = get_num(c, root, NULL, key, NULLABLE, &v, found);
    if (st || !*found) return st;
    if (v < lo || v > hi || (lo_open && v == lo))
        return tl_fail(c->err, TL_ERR_FORMAT, "%s: %s = %g is out of range %c%g, %g]", c->name, key,
                       v, lo_open ? '(' : '[', lo, hi);
    *out = (float)v;
    return TL_OK;
}

static enum tl_status parse_generation(const struct jctx *c, json_t *root, struct gen_config *g) {
    enum tl_status st;
    bool found;
    if ((st = get_token_ids(c, root, "eos_token_id", g->eos_token_ids, &g->n_eos, &found)) ||
        (st = get_int(c, root, NULL, "bos_token_id", NULLABLE, 0, INT_MAX, &g->bos_token_id, NULL)))
        return st;
    if ((st = gen_float(c, root, "temperature", 0, 1e6, false, &g->temperature,
                        &g->has_temperature)) ||
        (st = gen_float(c, root, "top_p", 0, 1, false, &g->top_p, &g->has_top_p)) ||
        (st = gen_float(c, root, "min_p", 0, 1, false, &g->min_p, &g->has_min_p)) ||
        (st = gen_float(c, root, "repetition_penalty", 0, 1e6, true, &g->repetition_penalty,
                        &g->has_repetition_penalty)))
        return st;
    if ((st = get_int(c, root, NULL, "top_k", NULLABLE, 0, INT_MAX, &g->top_k, &g->has_top_k)) ||
        (st = get_int(c, root, NULL, "max_new_tokens", NULLABLE, 1, INT_MAX, &g->max_new_tokens,
                      &g->has_max_new_tokens)) ||
        (st = get_bool(c, root, "do_sample", NULLABLE, &g->do_sample, &g->has_do_sample)))
        return st;
    return TL_OK;
}

enum tl_status config_parse_generation(const char *json, size_t len, const char *name,
                                       struct gen_config *out, struct tl_err *err) {
    if (!json || !out)
        return tl_fail(err, TL_ERR_INVALID, "config_parse_generation: NULL argument");
    struct jctx c = {name ? name : "generation_config.json", err};
    json_t *root;
    enum tl_status st = load_root(&c, json, len, &root);
    if (st) return st;
    struct gen_config g;
    gen_defaults(&g);
    st = parse_generation(&c, root, &g);
    json_decref(root);
    if (st == TL_OK) *out = g;
    return st;
}

enum tl_status config_load_generation(const char *model_dir, struct gen_config *out,
                                      struct tl_err *err) {
    if (!model_dir || !out)
        return tl_fail(err, TL_ERR_INVALID, "config_load_generation: NULL argument");
    char *path = join_path(model_dir, "generation_config.json");
    if (!path) return tl_fail(err, TL_ERR_NOMEM, "config_load_generation: out of memory");
    char *text;
    size_t len;
    bool missing;
    enum tl_status st = read_small_file(path, &text, &len, &missing, err);
    if (st == TL_OK) {
        st = config_parse_generation(text, len, path, out, err);
        free(text);
    } else if (missing) {
        gen_defaults(out); /* the file is optional in HF model directories */
        st = TL_OK;
    }
    free(path);
    return st;
}

long long config_param_count(const struct config *c) {
    long long h = c->hidden_size, q = (long long)c->n_heads * c->head_dim,
              kv = (long long)c->n_kv_heads * c->head_dim;
    long long attn = h * q + 2 * h * kv + q * h;
    if (c->attention_bias) attn += q + 2 * kv;
    if (c->o_bias) attn += h;
    long long mlp = 3 * h * c->intermediate_size;
    long long layer = attn + mlp + 2 * h; /* + input and post-attention RMSNorm */
    long long embed = (long long)c->vocab_size * h;
    return embed * (c->tie_word_embeddings ? 1 : 2) + c->n_layers * layer + h;
}
