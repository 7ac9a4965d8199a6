/* jinja_builtins: the filters, tests and global functions a template may use, each with Python
 * Jinja 3.1's behaviour and HF's overrides (tojson is json.dumps with ensure_ascii=False;
 * raise_exception and strftime_now are globals; range is capped as the sandbox caps it).
 * Names not in these tables are refused when the template loads. Filters that are lazy
 * generators in Python (select, reject, map, unique, items) build lists here: the same once
 * joined or listed, which is all templates do with them. str methods: jinja_strings.c. */
#include "jinja_impl.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    F_ABS,
    F_CAPITALIZE,
    F_DEFAULT,
    F_FIRST,
    F_FLOAT,
    F_INT,
    F_ITEMS,
    F_JOIN,
    F_LAST,
    F_LENGTH,
    F_LIST,
    F_LOWER,
    F_MAP,
    F_REJECT,
    F_REJECTATTR,
    F_REPLACE,
    F_REVERSE,
    F_ROUND,
    F_SAFE,
    F_SELECT,
    F_SELECTATTR,
    F_SORT,
    F_STRING,
    F_TITLE,
    F_TOJSON,
    F_TRIM,
    F_UNIQUE,
    F_UPPER,
};

static const struct {
    const char *name;
    int id;
} filters[] = {
    {"abs", F_ABS},
    {"capitalize", F_CAPITALIZE},
    {"count", F_LENGTH},
    {"d", F_DEFAULT},
    {"default", F_DEFAULT},
    {"first", F_FIRST},
    {"float", F_FLOAT},
    {"int", F_INT},
    {"items", F_ITEMS},
    {"join", F_JOIN},
    {"last", F_LAST},
    {"length", F_LENGTH},
    {"list", F_LIST},
    {"lower", F_LOWER},
    {"map", F_MAP},
    {"reject", F_REJECT},
    {"rejectattr", F_REJECTATTR},
    {"replace", F_REPLACE},
    {"reverse", F_REVERSE},
    {"round", F_ROUND},
    {"safe", F_SAFE},
    {"select", F_SELECT},
    {"selectattr", F_SELECTATTR},
    {"sort", F_SORT},
    {"string", F_STRING},
    {"title", F_TITLE},
    {"tojson", F_TOJSON},
    {"trim", F_TRIM},
    {"unique", F_UNIQUE},
    {"upper", F_UPPER},
};

enum {
    T_DEFINED,
    T_UNDEFINED,
    T_NONE,
    T_BOOLEAN,
    T_TRUE,
    T_FALSE,
    T_INTEGER,
    T_FLOAT,
    T_NUMBER,
    T_STRING,
    T_MAPPING,
    T_ITERABLE,
    T_SEQUENCE,
    T_CALLABLE,
    T_EQ,
    T_NE,
    T_LT,
    T_LE,
    T_GT,
    T_GE,
    T_IN,
    T_EVEN,
    T_ODD,
    T_DIVISIBLEBY,
    T_LOWER,
    T_UPPER,
    T_SAMEAS,
};

static const struct {
    const char *name;
    int id;
} tests[] = {
    {"defined", T_DEFINED},
    {"undefined", T_UNDEFINED},
    {"none", T_NONE},
    {"boolean", T_BOOLEAN},
    {"true", T_TRUE},
    {"false", T_FALSE},
    {"integer", T_INTEGER},
    {"float", T_FLOAT},
    {"number", T_NUMBER},
    {"string", T_STRING},
    {"mapping", T_MAPPING},
    {"iterable", T_ITERABLE},
    {"sequence", T_SEQUENCE},
    {"callable", T_CALLABLE},
    {"eq", T_EQ},
    {"equalto", T_EQ},
    {"==", T_EQ},
    {"ne", T_NE},
    {"!=", T_NE},
    {"lt", T_LT},
    {"lessthan", T_LT},
    {"<", T_LT},
    {"le", T_LE},
    {"<=", T_LE},
    {"gt", T_GT},
    {"greaterthan", T_GT},
    {">", T_GT},
    {"ge", T_GE},
    {">=", T_GE},
    {"in", T_IN},
    {"even", T_EVEN},
    {"odd", T_ODD},
    {"divisibleby", T_DIVISIBLEBY},
    {"lower", T_LOWER},
    {"upper", T_UPPER},
    {"sameas", T_SAMEAS},
};

enum { G_RANGE, G_NAMESPACE, G_RAISE_EXCEPTION, G_STRFTIME_NOW, G_DICT };
static const char *const globals[] = {"range", "namespace", "raise_exception", "strftime_now",
                                      "dict"};

int jinja_filter_id(const char *name) {
    for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++)
        if (!strcmp(filters[i].name, name)) return filters[i].id;
    return -1;
}

int jinja_test_id(const char *name) {
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (!strcmp(tests[i].name, name)) return tests[i].id;
    return -1;
}

int jinja_global_id(const char *name) {
    for (size_t i = 0; i < sizeof globals / sizeof globals[0]; i++)
        if (!strcmp(globals[i], name)) return (int)i;
    return -1;
}

const char *jinja_global_name(int id) {
    return id >= 0 && id < (int)(sizeof globals / sizeof globals[0]) ? globals[id] : "?";
}

/* ---- helpers -------------------------------------------------------------------------------- */

/* Binds positional and keyword arguments to the named parameters of `what`. */
void jinja_bind(struct jinja_render *r, int line, const char *what, struct jinja_args *args,
                const char *const *names, int n, struct jinja_val *out, bool *has) {
    if (args->n > n)
        jinja_rfail(r, line, "%s() takes at most %d argument(s) (%d given)", what, n, args->n);
    for (int i = 0; i < n; i++) {
        has[i] = i < args->n;
        out[i] = has[i] ? args->v[i] : jinja_undef(NULL);
    }
    for (int k = 0; k < args->n_kw; k++) {
        int i = 0;
        while (i < n && strcmp(names[i], args->kw[k])) i++;
        if (i == n)
            jinja_rfail(r, line, "%s() got an unexpected keyword argument '%s'", what, args->kw[k]);
        if (has[i])
            jinja_rfail(r, line, "%s() got multiple values for argument '%s'", what, args->kw[k]);
        has[i] = true;
        out[i] = args->kwv[k];
    }
}

static struct jinja_str *new_str(struct jinja_render *r, struct jinja_buf *b) {
    return (struct jinja_str *)jinja_str(&r->arena, b->p ? b->p : "", b->len).u.s;
}

static struct jinja_val str_val(const struct jinja_str *s) {
    return (struct jinja_val){.type = JV_STR, .u.s = s};
}

const struct jinja_str *jinja_need_str(struct jinja_render *r, int line, struct jinja_val v,
                                       const char *what) {
    if (v.type != JV_STR)
        jinja_rfail(r, line, "%s must be a string, not %s", what, jinja_type_name(v));
    return v.u.s;
}

int64_t jinja_need_int(struct jinja_render *r, int line, struct jinja_val v, const char *what) {
    if (v.type == JV_INT) return v.u.i;
    if (v.type == JV_BOOL) return v.u.b;
    jinja_rfail(r, line, "%s must be an integer, not %s", what, jinja_type_name(v));
}

/* Attribute path "a.b.0" as Jinja's make_attrgetter walks it. */
static struct jinja_val attr_path(struct jinja_render *r, int line, struct jinja_val v,
                                  const struct jinja_str *path) {
    size_t b = 0;
    while (b <= path->len) {
        const char *dot = memchr(path->s + b, '.', path->len - b);
        size_t e = dot ? (size_t)(dot - path->s) : path->len;
        bool digits = e > b;
        for (size_t i = b; i < e; i++) digits &= path->s[i] >= '0' && path->s[i] <= '9';
        struct jinja_val key = digits ? jinja_int(strtoll(path->s + b, NULL, 10))
                                      : jinja_str(&r->arena, path->s + b, e - b);
        v = jinja_getitem(r, line, v, key);
        if (!dot) break;
        b = e + 1;
    }
    return v;
}

static struct jinja_val apply_filter_args(struct jinja_render *r, int line, int id,
                                          struct jinja_val v, struct jinja_args *src, int skip) {
    struct jinja_args a = {
        .n = src->n - skip, .v = src->v + skip, .n_kw = src->n_kw, .kw = src->kw, .kwv = src->kwv};
    return jinja_filter(r, line, id, v, &a);
}

/* select / reject / selectattr / rejectattr. */
static struct jinja_val select_items(struct jinja_render *r, int line, struct jinja_val v,
                                     struct jinja_args *args, bool by_attr, bool keep) {
    const struct jinja_list *items = jinja_iterate(r, line, v);
    int at = 0;
    const struct jinja_str *attr = NULL;
    if (by_attr) {
        if (args->n < 1) jinja_rfail(r, line, "selectattr/rejectattr need an attribute name");
        attr = jinja_need_str(r, line, args->v[0], "attribute");
        at = 1;
    }
    int test = -1;
    if (args->n > at) {
        const struct jinja_str *name = jinja_need_str(r, line, args->v[at], "test name");
        test = jinja_test_id(name->s);
        if (test < 0) jinja_rfail(r, line, "no test named '%s'", name->s);
        at++;
    }
    struct jinja_args targs = {.n = args->n - at, .v = args->v + at};
    struct jinja_val out = jinja_list(&r->arena, items->n);
    size_t n = 0;
    for (size_t i = 0; i < items->n; i++) {
        jinja_step(r, line);
        struct jinja_val x = by_attr ? attr_path(r, line, items->v[i], attr) : items->v[i];
        bool t = test < 0 ? jinja_truthy(x) : jinja_test(r, line, test, x, &targs);
        if (t == keep) out.u.l->v[n++] = items->v[i];
    }
    out.u.l->n = n;
    return out;
}

static int sort_cmp(struct jinja_render *r, int line, struct jinja_val a, struct jinja_val b,
                    bool case_sensitive) {
    if (!case_sensitive && a.type == JV_STR && b.type == JV_STR) {
        a = jinja_change_case(r, a.u.s, JINJA_CASE_LOWER);
        b = jinja_change_case(r, b.u.s, JINJA_CASE_LOWER);
    }
    return jinja_compare(r, line, a, b);
}

/* ---- filters ----------------------------------------------------------------------------------
 */

static struct jinja_val filter_tojson(struct jinja_render *r, int line, struct jinja_val v,
                                      struct jinja_args *args) {
    static const char *const p[] = {"ensure_ascii", "indent", "separators", "sort_keys"};
    struct jinja_val a[4];
    bool has[4];
    jinja_bind(r, line, "tojson", args, p, 4, a, has);
    bool ensure_ascii = has[0] && jinja_truthy(a[0]);
    int indent = -1;
    if (has[1] && a[1].type != JV_NONE) {
        int64_t k = jinja_need_int(r, line, a[1], "tojson indent");
        if (k < 0 || k > 64) jinja_rfail(r, line, "tojson indent %" PRId64 " is out of range", k);
        indent = (int)k;
    }
    const char *item_sep = indent >= 0 ? "," : ", ", *key_sep = ": ";
    if (has[2] && a[2].type != JV_NONE) {
        if (a[2].type != JV_LIST || a[2].u.l->n != 2)
            jinja_rfail(r, line, "tojson separators must be a pair of strings");
        item_sep = jinja_need_str(r, line, a[2].u.l->v[0], "separator")->s;
        key_sep = jinja_need_str(r, line, a[2].u.l->v[1], "separator")->s;
    }
    struct jinja_buf b = {0};
    jinja_put_json(r, line, &b, v, indent, item_sep, key_sep, ensure_ascii,
                   has[3] && jinja_truthy(a[3]), 0);
    return str_val(new_str(r, &b));
}

static struct jinja_val filter_sort(struct jinja_render *r, int line, struct jinja_val v,
                                    struct jinja_args *args, bool unique) {
    static const char *const ps[] = {"reverse", "case_sensitive", "attribute"};
    static const char *const pu[] = {"case_sensitive", "attribute"};
    struct jinja_val a[3];
    bool has[3];
    if (unique) {
        jinja_bind(r, line, "unique", args, pu, 2, a + 1, has + 1);
        has[0] = false;
    } else {
        jinja_bind(r, line, "sort", args, ps, 3, a, has);
    }
    bool reverse = has[0] && jinja_truthy(a[0]);
    bool cs = has[1] && jinja_truthy(a[1]);
    const struct jinja_str *attr =
        has[2] && a[2].type != JV_NONE ? jinja_need_str(r, line, a[2], "attribute") : NULL;
    const struct jinja_list *items = jinja_iterate(r, line, v);
    size_t n = items->n;
    struct jinja_val *keys = jinja_alloc_array(&r->arena, n + 1, sizeof *keys);
    struct jinja_val out = jinja_list(&r->arena, n);
    for (size_t i = 0; i < n; i++) {
        keys[i] = attr ? attr_path(r, line, items->v[i], attr) : items->v[i];
        out.u.l->v[i] = items->v[i];
    }
    if (unique) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            jinja_step(r, line);
            bool seen = false;
            for (size_t j = 0; j < k && !seen; j++) {
                struct jinja_val x = keys[j], y = keys[i];
                if (!cs && x.type == JV_STR && y.type == JV_STR) {
                    x = jinja_change_case(r, x.u.s, JINJA_CASE_LOWER);
                    y = jinja_change_case(r, y.u.s, JINJA_CASE_LOWER);
                }
                seen = jinja_equal(&r->fail, x, y);
            }
            if (!seen) {
                keys[k] = keys[i];
                out.u.l->v[k++] = items->v[i];
            }
        }
        out.u.l->n = k;
        return out;
    }
    for (size_t i = 1; i < n; i++) /* insertion sort: stable, like Python's */
        for (size_t j = i; j > 0; j--) {
            jinja_step(r, line);
            int c = sort_cmp(r, line, keys[j - 1], keys[j], cs);
            if (reverse ? c >= 0 : c <= 0) break;
            struct jinja_val t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
            t = out.u.l->v[j];
            out.u.l->v[j] = out.u.l->v[j - 1];
            out.u.l->v[j - 1] = t;
        }
    return out;
}

static bool parse_number(const struct jinja_str *s, bool want_int, double *f, int64_t *i) {
    size_t b = 0, e = s->len;
    while (b < e && jinja_is_space((unsigned char)s->s[b])) b++;
    while (e > b && jinja_is_space((unsigned char)s->s[e - 1])) e--;
    if (b == e || e - b > 300) return false;
    char tmp[320];
    size_t k = 0;
    for (size_t j = b; j < e; j++)
        if (s->s[j] != '_') tmp[k++] = s->s[j];
    tmp[k] = '\0';
    char *end;
    if (want_int) {
        long long v = strtoll(tmp, &end, 10);
        if (*end == '\0') {
            *i = v;
            return true;
        }
    }
    double d = strtod(tmp, &end);
    if (*end != '\0') return false;
    *f = d;
    return true;
}

struct jinja_val jinja_filter(struct jinja_render *r, int line, int id, struct jinja_val v,
                              struct jinja_args *args) {
    struct jinja_val a[JINJA_MAX_PARAMS];
    bool has[JINJA_MAX_PARAMS];
    switch (id) {
    case F_ABS:
        jinja_bind(r, line, "abs", args, NULL, 0, a, has);
        if (v.type == JV_FLOAT) return jinja_float(fabs(v.u.f));
        if (v.type == JV_INT || v.type == JV_BOOL) {
            int64_t x = v.type == JV_BOOL ? v.u.b : v.u.i;
            if (x == INT64_MIN) jinja_rfail(r, line, "integer result exceeds 64 bits");
            return jinja_int(x < 0 ? -x : x);
        }
        jinja_rfail(r, line, "bad operand type for abs(): '%s'", jinja_type_name(v));
    case F_CAPITALIZE:
    case F_LOWER:
    case F_UPPER:
    case F_TITLE:
        jinja_bind(r, line, "case filter", args, NULL, 0, a, has);
        return jinja_change_case(r, jinja_to_str(r, v),
                                 id == F_UPPER   ? JINJA_CASE_UPPER
                                 : id == F_LOWER ? JINJA_CASE_LOWER
                                 : id == F_TITLE ? JINJA_CASE_JINJA_TITLE
                                                 : JINJA_CASE_CAPITALIZE);
    case F_DEFAULT: {
        static const char *const p[] = {"default_value", "boolean"};
        jinja_bind(r, line, "default", args, p, 2, a, has);
        bool use = v.type == JV_UNDEF || (has[1] && jinja_truthy(a[1]) && !jinja_truthy(v));
        if (!use) return v;
        return has[0] ? a[0] : jinja_str(&r->arena, "", 0);
    }
    case F_FIRST:
    case F_LAST: {
        jinja_bind(r, line, id == F_FIRST ? "first" : "last", args, NULL, 0, a, has);
        const struct jinja_list *l = jinja_iterate(r, line, v);
        if (!l->n) return jinja_undef("No first item, sequence was empty.");
        return l->v[id == F_FIRST ? 0 : l->n - 1];
    }
    case F_FLOAT: {
        static const char *const p[] = {"default"};
        jinja_bind(r, line, "float", args, p, 1, a, has);
        struct jinja_val dflt = has[0] ? a[0] : jinja_float(0.0);
        if (v.type == JV_UNDEF) /* float(Undefined) raises in Python */
            jinja_rfail(r, line, "%s", v.u.undef ? v.u.undef : "value is undefined");
        if (v.type == JV_FLOAT) return v;
        if (v.type == JV_INT || v.type == JV_BOOL)
            return jinja_float(v.type == JV_INT ? (double)v.u.i : (double)v.u.b);
        double f;
        int64_t unused;
        if (v.type == JV_STR && parse_number(v.u.s, false, &f, &unused)) return jinja_float(f);
        return dflt;
    }
    case F_INT: {
        static const char *const p[] = {"default", "base"};
        jinja_bind(r, line, "int", args, p, 2, a, has);
        struct jinja_val dflt = has[0] ? a[0] : jinja_int(0);
        if (v.type == JV_UNDEF)
            jinja_rfail(r, line, "%s", v.u.undef ? v.u.undef : "value is undefined");
        if (has[1] && jinja_need_int(r, line, a[1], "int base") != 10)
            jinja_rfail(r, line, "int filter: only base 10 is supported");
        if (v.type == JV_INT) return v;
        if (v.type == JV_BOOL) return jinja_int(v.u.b);
        if (v.type == JV_FLOAT) {
            if (!isfinite(v.u.f) || fabs(v.u.f) >= 9.2e18) return dflt;
            return jinja_int((int64_t)v.u.f);
        }
        double f;
        int64_t i;
        if (v.type == JV_STR) {
            f = NAN;
            if (parse_number(v.u.s, true, &f, &i)) {
                if (isnan(f)) return jinja_int(i);
                if (isfinite(f) && fabs(f) < 9.2e18) return jinja_int((int64_t)f);
            }
        }
        return dflt;
    }
    case F_ITEMS:
        jinja_bind(r, line, "items", args, NULL, 0, a, has);
        if (v.type == JV_UNDEF) return jinja_list(&r->arena, 0);
        if (v.type != JV_DICT)
            jinja_rfail(r, line, "Can only get item pairs from a mapping, not %s",
                        jinja_type_name(v));
        return jinja_dict_items(r, v.u.d);
    case F_JOIN: {
        static const char *const p[] = {"d", "attribute"};
        jinja_bind(r, line, "join", args, p, 2, a, has);
        const struct jinja_str *sep = has[0] ? jinja_to_str(r, a[0]) : NULL;
        const struct jinja_str *attr =
            has[1] && a[1].type != JV_NONE ? jinja_need_str(r, line, a[1], "attribute") : NULL;
        const struct jinja_list *l = jinja_iterate(r, line, v);
        struct jinja_buf b = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (i && sep) jinja_buf_put(&r->arena, &b, sep->s, sep->len);
            jinja_put_str(r, &b, attr ? attr_path(r, line, l->v[i], attr) : l->v[i]);
        }
        return str_val(new_str(r, &b));
    }
    case F_LENGTH:
        jinja_bind(r, line, "length", args, NULL, 0, a, has);
        switch (v.type) {
        case JV_UNDEF:
            return jinja_int(0);
        case JV_STR:
            return jinja_int((int64_t)jinja_utf8_count(v.u.s->s, v.u.s->len));
        case JV_LIST:
            return jinja_int((int64_t)v.u.l->n);
        case JV_DICT:
            return jinja_int((int64_t)v.u.d->n);
        default:
            jinja_rfail(r, line, "object of type '%s' has no len()", jinja_type_name(v));
        }
    case F_LIST: {
        jinja_bind(r, line, "list", args, NULL, 0, a, has);
        const struct jinja_list *l = jinja_iterate(r, line, v);
        struct jinja_val out = jinja_list(&r->arena, l->n);
        memcpy(out.u.l->v, l->v, l->n * sizeof *l->v);
        return out;
    }
    case F_MAP: {
        const struct jinja_list *l = jinja_iterate(r, line, v);
        struct jinja_val out = jinja_list(&r->arena, l->n);
        if (args->n == 0) {
            static const char *const p[] = {"attribute", "default"};
            jinja_bind(r, line, "map", args, p, 2, a, has);
            if (!has[0]) jinja_rfail(r, line, "map needs a filter name or attribute=");
            const struct jinja_str *attr = jinja_need_str(r, line, a[0], "attribute");
            for (size_t i = 0; i < l->n; i++) {
                struct jinja_val x = attr_path(r, line, l->v[i], attr);
                out.u.l->v[i] = x.type == JV_UNDEF && has[1] ? a[1] : x;
            }
            return out;
        }
        const struct jinja_str *name = jinja_need_str(r, line, args->v[0], "filter name");
        int fid = jinja_filter_id(name->s);
        if (fid < 0) jinja_rfail(r, line, "no filter named '%s'", name->s);
        for (size_t i = 0; i < l->n; i++) {
            jinja_step(r, line);
            out.u.l->v[i] = apply_filter_args(r, line, fid, l->v[i], args, 1);
        }
        return out;
    }
    case F_SELECT:
    case F_REJECT:
        if (args->n_kw) jinja_rfail(r, line, "select/reject take no keyword arguments");
        return select_items(r, line, v, args, false, id == F_SELECT);
    case F_SELECTATTR:
    case F_REJECTATTR:
        if (args->n_kw) jinja_rfail(r, line, "selectattr/rejectattr take no keyword arguments");
        return select_items(r, line, v, args, true, id == F_SELECTATTR);
    case F_REPLACE: {
        static const char *const p[] = {"old", "new", "count"};
        jinja_bind(r, line, "replace", args, p, 3, a, has);
        if (!has[0] || !has[1]) jinja_rfail(r, line, "replace needs old and new strings");
        int64_t count =
            has[2] && a[2].type != JV_NONE ? jinja_need_int(r, line, a[2], "count") : -1;
        return jinja_replace(r, jinja_to_str(r, v), jinja_to_str(r, a[0]), jinja_to_str(r, a[1]),
                             count);
    }
    case F_REVERSE: {
        jinja_bind(r, line, "reverse", args, NULL, 0, a, has);
        const struct jinja_list *l = jinja_iterate(r, line, v);
        if (v.type == JV_STR) {
            struct jinja_buf b = {0};
            for (size_t i = l->n; i-- > 0;)
                jinja_buf_put(&r->arena, &b, l->v[i].u.s->s, l->v[i].u.s->len);
            return str_val(new_str(r, &b));
        }
        struct jinja_val out = jinja_list(&r->arena, l->n);
        for (size_t i = 0; i < l->n; i++) out.u.l->v[i] = l->v[l->n - 1 - i];
        return out;
    }
    case F_ROUND: {
        static const char *const p[] = {"precision", "method"};
        jinja_bind(r, line, "round", args, p, 2, a, has);
        int64_t prec = has[0] ? jinja_need_int(r, line, a[0], "precision") : 0;
        const char *method = has[1] ? jinja_need_str(r, line, a[1], "method")->s : "common";
        if (v.type == JV_INT || v.type == JV_BOOL) {
            if (!strcmp(method, "common")) return jinja_int(v.type == JV_INT ? v.u.i : v.u.b);
            v = jinja_float(v.type == JV_INT ? (double)v.u.i : (double)v.u.b);
        }
        if (v.type != JV_FLOAT)
            jinja_rfail(r, line, "round needs a number, not %s", jinja_type_name(v));
        if (prec < -300 || prec > 300) jinja_rfail(r, line, "round precision out of range");
        if (!strcmp(method, "common")) {
            if (!isfinite(v.u.f)) return v;
            if (prec == 0) return jinja_float(rint(v.u.f));
            if (prec < 0) {
                double m = pow(10.0, (double)-prec);
                return jinja_float(rint(v.u.f / m) * m);
            }
            char tmp[400];
            snprintf(tmp, sizeof tmp, "%.*f", (int)prec, v.u.f);
            return jinja_float(strtod(tmp, NULL));
        }
        double m = pow(10.0, (double)prec);
        if (!strcmp(method, "ceil")) return jinja_float(ceil(v.u.f * m) / m);
        if (!strcmp(method, "floor")) return jinja_float(floor(v.u.f * m) / m);
        jinja_rfail(r, line, "method must be common, ceil or floor");
    }
    case F_SAFE:
    case F_STRING:
        jinja_bind(r, line, id == F_SAFE ? "safe" : "string", args, NULL, 0, a, has);
        return str_val(jinja_to_str(r, v));
    case F_SORT:
        return filter_sort(r, line, v, args, false);
    case F_UNIQUE:
        return filter_sort(r, line, v, args, true);
    case F_TOJSON:
        return filter_tojson(r, line, v, args);
    case F_TRIM: {
        static const char *const p[] = {"chars"};
        jinja_bind(r, line, "trim", args, p, 1, a, has);
        return jinja_strip(r, jinja_to_str(r, v), has[0] ? jinja_strip_chars(r, line, a[0]) : NULL,
                           true, true);
    }
    }
    jinja_rfail(r, line, "internal error: filter %d", id);
}

/* ---- tests ------------------------------------------------------------------------------------
 */

bool jinja_test(struct jinja_render *r, int line, int id, struct jinja_val v,
                struct jinja_args *args) {
    int want = (id >= T_EQ && id <= T_IN) || id == T_DIVISIBLEBY || id == T_SAMEAS ? 1 : 0;
    if (args->n != want || args->n_kw)
        jinja_rfail(r, line, "test takes %d argument(s), %d given", want, args->n + args->n_kw);
    struct jinja_val o = want ? args->v[0] : jinja_undef(NULL);
    switch (id) {
    case T_DEFINED:
        return v.type != JV_UNDEF;
    case T_UNDEFINED:
        return v.type == JV_UNDEF;
    case T_NONE:
        return v.type == JV_NONE;
    case T_BOOLEAN:
        return v.type == JV_BOOL;
    case T_TRUE:
        return v.type == JV_BOOL && v.u.b;
    case T_FALSE:
        return v.type == JV_BOOL && !v.u.b;
    case T_INTEGER:
        return v.type == JV_INT;
    case T_FLOAT:
        return v.type == JV_FLOAT;
    case T_NUMBER:
        return v.type == JV_INT || v.type == JV_FLOAT || v.type == JV_BOOL;
    case T_STRING:
        return v.type == JV_STR;
    case T_MAPPING:
        return v.type == JV_DICT;
    case T_ITERABLE:
    case T_SEQUENCE: /* Undefined is both in Python Jinja; so are dicts */
        return v.type == JV_STR || v.type == JV_LIST || v.type == JV_DICT || v.type == JV_UNDEF ||
               (id == T_ITERABLE && v.type == JV_LOOP);
    case T_CALLABLE: /* Python's Undefined has __call__ (it raises), so it counts */
        return v.type == JV_FUNC || v.type == JV_MACRO || v.type == JV_METHOD || v.type == JV_UNDEF;
    case T_EQ:
        return jinja_equal(&r->fail, v, o);
    case T_NE:
        return !jinja_equal(&r->fail, v, o);
    case T_LT:
        return jinja_compare(r, line, v, o) < 0;
    case T_LE:
        return jinja_compare(r, line, v, o) <= 0;
    case T_GT:
        return jinja_compare(r, line, v, o) > 0;
    case T_GE:
        return jinja_compare(r, line, v, o) >= 0;
    case T_IN: {
        if (o.type == JV_STR) {
            if (v.type != JV_STR)
                jinja_rfail(r, line, "'in <string>' requires string as left operand");
            return !v.u.s->len || memmem(o.u.s->s, o.u.s->len, v.u.s->s, v.u.s->len);
        }
        if (o.type == JV_DICT)
            return jinja_dict_find(&r->fail, o.u.d, jinja_hashable(r, line, v)) >= 0;
        const struct jinja_list *l = jinja_iterate(r, line, o);
        for (size_t i = 0; i < l->n; i++)
            if (jinja_equal(&r->fail, l->v[i], v)) return true;
        return false;
    }
    case T_EVEN:
    case T_ODD: /* value % 2 == 0 (or 1), floats included */
        if (v.type == JV_FLOAT) {
            double m = fmod(v.u.f, 2.0);
            if (m < 0) m += 2.0;
            return id == T_EVEN ? m == 0.0 : m == 1.0;
        }
        return (jinja_need_int(r, line, v, "even/odd operand") % 2 == 0) == (id == T_EVEN);
    case T_DIVISIBLEBY: {
        if (v.type == JV_FLOAT || o.type == JV_FLOAT) {
            double x = v.type == JV_FLOAT ? v.u.f : (double)jinja_need_int(r, line, v, "operand");
            double d = o.type == JV_FLOAT ? o.u.f : (double)jinja_need_int(r, line, o, "divisor");
            if (d == 0.0) jinja_rfail(r, line, "float modulo");
            return fmod(x, d) == 0.0;
        }
        int64_t x = jinja_need_int(r, line, v, "divisibleby operand"),
                d = jinja_need_int(r, line, o, "divisor");
        if (d == 0) jinja_rfail(r, line, "integer division or modulo by zero");
        return d == -1 || x % d == 0;
    }
    case T_LOWER:
    case T_UPPER:
        return jinja_str_has_case(jinja_to_str(r, v), id == T_UPPER);
    case T_SAMEAS:
        if (v.type != o.type) return false;
        if (v.type == JV_NONE || v.type == JV_UNDEF) return true;
        if (v.type == JV_BOOL) return v.u.b == o.u.b;
        if (v.type == JV_INT) return v.u.i == o.u.i && v.u.i >= -5 && v.u.i <= 256;
        return v.u.d == o.u.d;
    }
    jinja_rfail(r, line, "internal error: test %d", id);
}

/* ---- globals -----------------------------------------------------------------------------------
 */

#define RANGE_MAX 100000 /* Jinja's sandbox refuses longer ranges (MAX_RANGE) */

struct jinja_val jinja_call_global(struct jinja_render *r, int line, int id,
                                   struct jinja_args *args) {
    switch (id) {
    case G_RANGE: {
        if (args->n_kw || args->n < 1 || args->n > 3)
            jinja_rfail(r, line, "range expects 1 to 3 integer arguments");
        int64_t start = 0, stop, step = 1;
        if (args->n == 1) {
            stop = jinja_need_int(r, line, args->v[0], "range stop");
        } else {
            start = jinja_need_int(r, line, args->v[0], "range start");
            stop = jinja_need_int(r, line, args->v[1], "range stop");
            if (args->n == 3) step = jinja_need_int(r, line, args->v[2], "range step");
        }
        if (step == 0) jinja_rfail(r, line, "range() arg 3 must not be zero");
        double count = 0;
        if (step > 0 && start < stop) count = ceil(((double)stop - (double)start) / (double)step);
        if (step < 0 && start > stop) count = ceil(((double)start - (double)stop) / (double)-step);
        if (count > RANGE_MAX)
            jinja_rfail(r, line,
                        "Range too big. The sandbox blocks ranges larger than "
                        "MAX_RANGE (%d).",
                        RANGE_MAX);
        struct jinja_val l = jinja_list(&r->arena, (size_t)count);
        for (size_t i = 0; i < (size_t)count; i++)
            l.u.l->v[i] = jinja_int(start + (int64_t)i * step);
        return l;
    }
    case G_NAMESPACE:
    case G_DICT: {
        struct jinja_val d = jinja_dict(&r->arena);
        if (args->n > 1)
            jinja_rfail(r, line, "%s() takes at most 1 positional argument", globals[id]);
        if (args->n == 1) {
            if (args->v[0].type != JV_DICT)
                jinja_rfail(r, line, "%s() positional argument must be a dict", globals[id]);
            for (size_t i = 0; i < args->v[0].u.d->n; i++)
                jinja_dict_set(&r->arena, d.u.d, args->v[0].u.d->keys[i], args->v[0].u.d->vals[i]);
        }
        for (int k = 0; k < args->n_kw; k++)
            jinja_dict_set(&r->arena, d.u.d, jinja_cstr(&r->arena, args->kw[k]), args->kwv[k]);
        if (id == G_NAMESPACE) d.type = JV_NS;
        return d;
    }
    case G_RAISE_EXCEPTION: {
        if (args->n != 1 || args->n_kw) jinja_rfail(r, line, "raise_exception takes one message");
        const struct jinja_str *msg = jinja_to_str(r, args->v[0]);
        jinja_fail(&r->fail, TL_ERR_INVALID, "%s", msg->s);
    }
    case G_STRFTIME_NOW: {
        if (args->n != 1 || args->n_kw) jinja_rfail(r, line, "strftime_now takes one format");
        const struct jinja_str *fmt = jinja_need_str(r, line, args->v[0], "strftime_now format");
        struct tm tm;
        time_t now = r->now;
        if (!localtime_r(&now, &tm)) jinja_rfail(r, line, "strftime_now: the clock is invalid");
        char out[512];
        size_t n = fmt->len ? strftime(out, sizeof out, fmt->s, &tm) : 0;
        if (fmt->len && n == 0) jinja_rfail(r, line, "strftime_now: the result is too long");
        return jinja_str(&r->arena, out, n);
    }
    }
    jinja_rfail(r, line, "internal error: global %d", id);
}
