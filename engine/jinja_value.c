/* jinja_value: the value model and Python's semantics on it: truthiness, ==, <, str() and
 * repr() (so {{ [1, 'a'] }} prints "[1, 'a']" and {{ 0.1 + 0.2 }} "0.30000000000000004"),
 * json.dumps as HF's tojson filter calls it, conversion from jansson, and the UTF-8 helpers
 * (strings are sequences of code points, as in Python). */
#include "jinja_impl.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- UTF-8 ------------------------------------------------------------------------------ */

size_t jinja_utf8_next(const char *s, size_t n, size_t i, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    unsigned char c = u[i];
    int len = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (i + (size_t)len > n) len = 1;
    uint32_t v = len == 1 ? c : len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (int k = 1; k < len; k++) v = (v << 6) | (u[i + (size_t)k] & 0x3Fu);
    *cp = v;
    return i + (size_t)len;
}

void jinja_utf8_put(struct jinja_arena *a, struct jinja_buf *b, uint32_t cp) {
    char t[4];
    size_t n;
    if (cp < 0x80) {
        t[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        t[0] = (char)(0xC0 | (cp >> 6));
        t[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12));
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        t[0] = (char)(0xF0 | (cp >> 18));
        t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    jinja_buf_put(a, b, t, n);
}

size_t jinja_utf8_count(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

bool jinja_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = u[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int len;
        uint32_t min, v;
        if ((c & 0xE0) == 0xC0)
            len = 2, min = 0x80, v = c & 0x1F;
        else if ((c & 0xF0) == 0xE0)
            len = 3, min = 0x800, v = c & 0x0F;
        else if ((c & 0xF8) == 0xF0)
            len = 4, min = 0x10000, v = c & 0x07;
        else
            return false;
        if (i + (size_t)len > n) return false;
        for (int k = 1; k < len; k++) {
            if ((u[i + (size_t)k] & 0xC0) != 0x80) return false;
            v = (v << 6) | (u[i + (size_t)k] & 0x3F);
        }
        if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return false;
        i += (size_t)len;
    }
    return true;
}

bool jinja_is_space(uint32_t cp) {
    if (cp <= 0x20) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F);
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* ---- constructors --------------------------------------------------------------------- */

struct jinja_val jinja_undef(const char *hint) {
    return (struct jinja_val){.type = JV_UNDEF, .u.undef = hint};
}
struct jinja_val jinja_none(void) {
    return (struct jinja_val){.type = JV_NONE};
}
struct jinja_val jinja_bool(bool b) {
    return (struct jinja_val){.type = JV_BOOL, .u.b = b};
}
struct jinja_val jinja_int(int64_t i) {
    return (struct jinja_val){.type = JV_INT, .u.i = i};
}
struct jinja_val jinja_float(double f) {
    return (struct jinja_val){.type = JV_FLOAT, .u.f = f};
}

struct jinja_val jinja_str(struct jinja_arena *a, const char *s, size_t n) {
    struct jinja_str *p = jinja_alloc(a, sizeof *p + n + 1);
    p->len = n;
    if (n) memcpy(p->s, s, n);
    p->s[n] = '\0';
    return (struct jinja_val){.type = JV_STR, .u.s = p};
}

struct jinja_val jinja_cstr(struct jinja_arena *a, const char *s) {
    return jinja_str(a, s, strlen(s));
}

struct jinja_val jinja_list(struct jinja_arena *a, size_t n) {
    struct jinja_list *l = jinja_alloc(a, sizeof *l);
    l->n = n;
    l->v = jinja_alloc_array(a, n ? n : 1, sizeof *l->v);
    return (struct jinja_val){.type = JV_LIST, .u.l = l};
}

struct jinja_val jinja_dict(struct jinja_arena *a) {
    struct jinja_dict *d = jinja_alloc(a, sizeof *d);
    return (struct jinja_val){.type = JV_DICT, .u.d = d};
}

long jinja_dict_find_str(const struct jinja_dict *d, const char *k) {
    size_t n = strlen(k);
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i].type == JV_STR && d->keys[i].u.s->len == n &&
            !memcmp(d->keys[i].u.s->s, k, n))
            return (long)i;
    return -1;
}

static bool equal_rec(struct jinja_fail *f, struct jinja_val a, struct jinja_val b, int depth);

static long find_rec(struct jinja_fail *f, const struct jinja_dict *d, struct jinja_val k,
                     int depth) {
    if (k.type == JV_STR) {
        for (size_t i = 0; i < d->n; i++)
            if (d->keys[i].type == JV_STR && d->keys[i].u.s->len == k.u.s->len &&
                !memcmp(d->keys[i].u.s->s, k.u.s->s, k.u.s->len))
                return (long)i;
        return -1;
    }
    for (size_t i = 0; i < d->n; i++)
        if (equal_rec(f, d->keys[i], k, depth)) return (long)i;
    return -1;
}

long jinja_dict_find(struct jinja_fail *f, const struct jinja_dict *d, struct jinja_val k) {
    return find_rec(f, d, k, 0);
}

void jinja_dict_set(struct jinja_arena *a, struct jinja_dict *d, struct jinja_val k,
                    struct jinja_val v) {
    long i = jinja_dict_find(a->fail, d, k);
    if (i >= 0) {
        d->vals[i] = v;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        struct jinja_val *keys = jinja_alloc_array(a, cap, sizeof *keys);
        struct jinja_val *vals = jinja_alloc_array(a, cap, sizeof *vals);
        if (d->n) {
            memcpy(keys, d->keys, d->n * sizeof *keys);
            memcpy(vals, d->vals, d->n * sizeof *vals);
        }
        d->keys = keys;
        d->vals = vals;
        d->cap = cap;
    }
    d->keys[d->n] = k;
    d->vals[d->n] = v;
    d->n++;
}

/* ---- Python semantics ------------------------------------------------------------------- */

bool jinja_truthy(struct jinja_val v) {
    switch (v.type) {
    case JV_UNDEF:
    case JV_NONE:
        return false;
    case JV_BOOL:
        return v.u.b;
    case JV_INT:
        return v.u.i != 0;
    case JV_FLOAT:
        return v.u.f != 0.0;
    case JV_STR:
        return v.u.s->len != 0;
    case JV_LIST:
        return v.u.l->n != 0;
    case JV_DICT:
        return v.u.d->n != 0;
    default:
        return true;
    }
}

static bool is_num(struct jinja_val v) {
    return v.type == JV_BOOL || v.type == JV_INT || v.type == JV_FLOAT;
}

static int64_t as_int(struct jinja_val v) {
    return v.type == JV_BOOL ? v.u.b : v.u.i;
}

/* Exact comparison of numbers (Python compares int and float exactly). */
static int num_cmp(struct jinja_val a, struct jinja_val b) {
    if (a.type != JV_FLOAT && b.type != JV_FLOAT) {
        int64_t x = as_int(a), y = as_int(b);
        return (x > y) - (x < y);
    }
    if (a.type == JV_FLOAT && b.type == JV_FLOAT) return (a.u.f > b.u.f) - (a.u.f < b.u.f);
    /* one int, one float */
    bool swap = a.type == JV_FLOAT;
    int64_t i = swap ? as_int(b) : as_int(a);
    double f = swap ? a.u.f : b.u.f;
    int r;
    if (isnan(f))
        r = 2; /* unordered */
    else if (f >= 9223372036854775808.0)
        r = -1;
    else if (f < -9223372036854775808.0)
        r = 1;
    else {
        double t = trunc(f);
        int64_t fi = (int64_t)t;
        if (i != fi)
            r = (i > fi) - (i < fi);
        else
            r = (t < f) ? -1 : (t > f) ? 1 : 0;
    }
    if (r == 2) return 2;
    return swap ? -r : r;
}

static bool equal_rec(struct jinja_fail *f, struct jinja_val a, struct jinja_val b, int depth) {
    if (is_num(a) && is_num(b)) return num_cmp(a, b) == 0;
    if (a.type != b.type) return false;
    if (depth > JINJA_MAX_VALUE_DEPTH)
        jinja_fail(f, TL_ERR_INVALID, "comparing values nested deeper than %d levels",
                   JINJA_MAX_VALUE_DEPTH);
    switch (a.type) {
    case JV_UNDEF:
    case JV_NONE:
        return true;
    case JV_STR:
        return a.u.s->len == b.u.s->len && !memcmp(a.u.s->s, b.u.s->s, a.u.s->len);
    case JV_LIST:
        if (a.tuple != b.tuple || a.u.l->n != b.u.l->n) return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!equal_rec(f, a.u.l->v[i], b.u.l->v[i], depth + 1)) return false;
        return true;
    case JV_DICT:
        if (a.u.d->n != b.u.d->n) return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            long j = find_rec(f, b.u.d, a.u.d->keys[i], depth + 1);
            if (j < 0 || !equal_rec(f, a.u.d->vals[i], b.u.d->vals[j], depth + 1)) return false;
        }
        return true;
    case JV_FUNC:
        return a.u.fn == b.u.fn;
    default:
        return a.u.d == b.u.d; /* identity for namespaces, loops, macros, methods */
    }
}

bool jinja_equal(struct jinja_fail *f, struct jinja_val a, struct jinja_val b) {
    return equal_rec(f, a, b, 0);
}

const char *jinja_type_name(struct jinja_val v) {
    switch (v.type) {
    case JV_UNDEF:
        return "Undefined";
    case JV_NONE:
        return "NoneType";
    case JV_BOOL:
        return "bool";
    case JV_INT:
        return "int";
    case JV_FLOAT:
        return "float";
    case JV_STR:
        return "str";
    case JV_LIST:
        return v.tuple ? "tuple" : "list";
    case JV_DICT:
        return "dict";
    case JV_NS:
        return "Namespace";
    case JV_LOOP:
        return "LoopContext";
    case JV_MACRO:
        return "Macro";
    default:
        return "function";
    }
}

static int compare_rec(struct jinja_render *r, int line, struct jinja_val a, struct jinja_val b,
                       int depth) {
    if (is_num(a) && is_num(b)) {
        int c = num_cmp(a, b);
        return c == 2 ? 0 : c;
    }
    if (a.type == JV_STR && b.type == JV_STR) {
        size_t n = a.u.s->len < b.u.s->len ? a.u.s->len : b.u.s->len;
        int c = memcmp(a.u.s->s, b.u.s->s, n); /* UTF-8 byte order is code point order */
        if (c) return c < 0 ? -1 : 1;
        return (a.u.s->len > b.u.s->len) - (a.u.s->len < b.u.s->len);
    }
    if (a.type == JV_LIST && b.type == JV_LIST && a.tuple == b.tuple) {
        if (depth > JINJA_MAX_VALUE_DEPTH)
            jinja_rfail(r, line, "comparing values nested deeper than %d levels",
                        JINJA_MAX_VALUE_DEPTH);
        size_t n = a.u.l->n < b.u.l->n ? a.u.l->n : b.u.l->n;
        for (size_t i = 0; i < n; i++) {
            if (equal_rec(&r->fail, a.u.l->v[i], b.u.l->v[i], depth + 1)) continue;
            return compare_rec(r, line, a.u.l->v[i], b.u.l->v[i], depth + 1);
        }
        return (a.u.l->n > b.u.l->n) - (a.u.l->n < b.u.l->n);
    }
    if (a.type == JV_UNDEF || b.type == JV_UNDEF)
        jinja_rfail(r, line, "'%s' is undefined",
                    (a.type == JV_UNDEF ? a : b).u.undef ? (a.type == JV_UNDEF ? a : b).u.undef
                                                         : "value");
    jinja_rfail(r, line, "'<' not supported between instances of '%s' and '%s'", jinja_type_name(a),
                jinja_type_name(b));
}

int jinja_compare(struct jinja_render *r, int line, struct jinja_val a, struct jinja_val b) {
    return compare_rec(r, line, a, b, 0);
}

static bool hashable(struct jinja_val v, int depth) {
    if (v.type == JV_DICT || v.type == JV_NS || (v.type == JV_LIST && !v.tuple)) return false;
    if (v.type != JV_LIST || depth > JINJA_MAX_VALUE_DEPTH) return true;
    for (size_t i = 0; i < v.u.l->n; i++)
        if (!hashable(v.u.l->v[i], depth + 1)) return false;
    return true;
}

struct jinja_val jinja_hashable(struct jinja_render *r, int line, struct jinja_val v) {
    if (!hashable(v, 0)) jinja_rfail(r, line, "unhashable type: '%s'", jinja_type_name(v));
    return v;
}

/* ---- str() and repr() -------------------------------------------------------------------- */

void jinja_put_float(struct jinja_arena *a, struct jinja_buf *b, double f) {
    if (isnan(f)) {
        jinja_buf_put(a, b, "nan", 3);
        return;
    }
    if (isinf(f)) {
        jinja_buf_put(a, b, f < 0 ? "-inf" : "inf", f < 0 ? 4 : 3);
        return;
    }
    /* shortest digits that read back exactly, laid out as Python's float repr does */
    char tmp[40];
    int p = 1;
    for (; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, f);
        if (strtod(tmp, NULL) == f) break;
    }
    char digits[24];
    int nd = 0;
    const char *s = tmp;
    bool neg = *s == '-';
    if (neg) s++;
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9') digits[nd++] = *s;
    int exp10 = atoi(s + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int decpt = exp10 + 1;
    if (neg) jinja_buf_putc(a, b, '-');
    if (decpt <= -4 || decpt > 16) {
        jinja_buf_putc(a, b, digits[0]);
        if (nd > 1) {
            jinja_buf_putc(a, b, '.');
            jinja_buf_put(a, b, digits + 1, (size_t)nd - 1);
        }
        jinja_buf_printf(a, b, "e%c%02d", decpt - 1 < 0 ? '-' : '+', abs(decpt - 1));
    } else if (decpt <= 0) {
        jinja_buf_put(a, b, "0.", 2);
        for (int i = 0; i < -decpt; i++) jinja_buf_putc(a, b, '0');
        jinja_buf_put(a, b, digits, (size_t)nd);
    } else if (decpt >= nd) {
        jinja_buf_put(a, b, digits, (size_t)nd);
        for (int i = nd; i < decpt; i++) jinja_buf_putc(a, b, '0');
        jinja_buf_put(a, b, ".0", 2);
    } else {
        jinja_buf_put(a, b, digits, (size_t)decpt);
        jinja_buf_putc(a, b, '.');
        jinja_buf_put(a, b, digits + decpt, (size_t)(nd - decpt));
    }
}

/* Code points Python's repr() escapes beyond ASCII controls (not str.isprintable()). */
static bool repr_escapes(uint32_t cp) {
    return cp < 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202F) ||
           (cp >= 0x205F && cp <= 0x206F) || cp == 0x3000 || cp == 0xFEFF;
}

static void put_repr_str(struct jinja_arena *a, struct jinja_buf *b, const struct jinja_str *s) {
    bool has_sq = memchr(s->s, '\'', s->len) != NULL, has_dq = memchr(s->s, '"', s->len) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jinja_buf_putc(a, b, q);
    for (size_t i = 0; i < s->len;) {
        uint32_t cp;
        size_t next = jinja_utf8_next(s->s, s->len, i, &cp);
        if (cp == (uint32_t)q || cp == '\\') {
            jinja_buf_putc(a, b, '\\');
            jinja_buf_putc(a, b, (char)cp);
        } else if (cp == '\n')
            jinja_buf_put(a, b, "\\n", 2);
        else if (cp == '\r')
            jinja_buf_put(a, b, "\\r", 2);
        else if (cp == '\t')
            jinja_buf_put(a, b, "\\t", 2);
        else if (repr_escapes(cp)) {
            if (cp < 0x100)
                jinja_buf_printf(a, b, "\\x%02x", cp);
            else
                jinja_buf_printf(a, b, "\\u%04x", cp);
        } else {
            jinja_buf_put(a, b, s->s + i, next - i);
        }
        i = next;
    }
    jinja_buf_putc(a, b, q);
}

static void put_value(struct jinja_render *r, struct jinja_buf *b, struct jinja_val v, bool repr,
                      int depth) {
    struct jinja_arena *a = &r->arena;
    if (depth > JINJA_MAX_VALUE_DEPTH)
        jinja_rfail(r, 0, "value nests deeper than %d levels", JINJA_MAX_VALUE_DEPTH);
    switch (v.type) {
    case JV_UNDEF:
        if (repr) jinja_buf_put(a, b, "Undefined", 9);
        return;
    case JV_NONE:
        jinja_buf_put(a, b, "None", 4);
        return;
    case JV_BOOL:
        jinja_buf_put(a, b, v.u.b ? "True" : "False", v.u.b ? 4 : 5);
        return;
    case JV_INT:
        jinja_buf_printf(a, b, "%" PRId64, v.u.i);
        return;
    case JV_FLOAT:
        jinja_put_float(a, b, v.u.f);
        return;
    case JV_STR:
        if (repr)
            put_repr_str(a, b, v.u.s);
        else
            jinja_buf_put(a, b, v.u.s->s, v.u.s->len);
        return;
    case JV_LIST:
        jinja_buf_putc(a, b, v.tuple ? '(' : '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) jinja_buf_put(a, b, ", ", 2);
            put_value(r, b, v.u.l->v[i], true, depth + 1);
        }
        if (v.tuple && v.u.l->n == 1) jinja_buf_putc(a, b, ',');
        jinja_buf_putc(a, b, v.tuple ? ')' : ']');
        return;
    case JV_DICT:
        jinja_buf_putc(a, b, '{');
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) jinja_buf_put(a, b, ", ", 2);
            put_value(r, b, v.u.d->keys[i], true, depth + 1);
            jinja_buf_put(a, b, ": ", 2);
            put_value(r, b, v.u.d->vals[i], true, depth + 1);
        }
        jinja_buf_putc(a, b, '}');
        return;
    case JV_NS:
        jinja_buf_put(a, b, "<Namespace>", 11);
        return;
    case JV_LOOP:
        jinja_buf_printf(a, b, "<LoopContext %" PRId64 "/%" PRId64 ">", v.u.loop->index0 + 1,
                         v.u.loop->length);
        return;
    case JV_MACRO:
        jinja_buf_printf(a, b, "<Macro '%s'>", v.u.macro->def->name);
        return;
    case JV_FUNC:
        jinja_buf_printf(a, b, "<function %s>", jinja_global_name(v.u.fn));
        return;
    default:
        jinja_buf_put(a, b, "<built-in method>", 17);
        return;
    }
}

void jinja_put_str(struct jinja_render *r, struct jinja_buf *b, struct jinja_val v) {
    put_value(r, b, v, false, 0);
}

const struct jinja_str *jinja_to_str(struct jinja_render *r, struct jinja_val v) {
    if (v.type == JV_STR) return v.u.s;
    struct jinja_buf b = {0};
    put_value(r, &b, v, false, 0);
    return jinja_str(&r->arena, b.p ? b.p : "", b.len).u.s;
}

/* ---- JSON ------------------------------------------------------------------------------- */

static struct jinja_val from_json(struct jinja_arena *a, const json_t *j, int depth) {
    if (depth > JINJA_MAX_VALUE_DEPTH)
        jinja_fail(a->fail, TL_ERR_INVALID, "template variables nest deeper than %d levels",
                   JINJA_MAX_VALUE_DEPTH);
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        struct jinja_val d = jinja_dict(a);
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)j, key, val) {
            jinja_dict_set(a, d.u.d, jinja_cstr(a, key), from_json(a, val, depth + 1));
        }
        return d;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        struct jinja_val l = jinja_list(a, n);
        for (size_t i = 0; i < n; i++) l.u.l->v[i] = from_json(a, json_array_get(j, i), depth + 1);
        return l;
    }
    case JSON_STRING:
        return jinja_str(a, json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        return jinja_int(json_integer_value(j));
    case JSON_REAL:
        return jinja_float(json_real_value(j));
    case JSON_TRUE:
        return jinja_bool(true);
    case JSON_FALSE:
        return jinja_bool(false);
    default:
        return jinja_none();
    }
}

struct jinja_val jinja_from_json(struct jinja_arena *a, const json_t *j) {
    return from_json(a, j, 0);
}

struct jinja_val jinja_dict_items(struct jinja_render *r, const struct jinja_dict *d) {
    struct jinja_val l = jinja_list(&r->arena, d->n);
    for (size_t i = 0; i < d->n; i++) {
        struct jinja_val t = jinja_list(&r->arena, 2);
        t.tuple = 1;
        t.u.l->v[0] = d->keys[i];
        t.u.l->v[1] = d->vals[i];
        l.u.l->v[i] = t;
    }
    return l;
}

static void put_json_str(struct jinja_arena *a, struct jinja_buf *b, const char *s, size_t n,
                         bool ensure_ascii) {
    jinja_buf_putc(a, b, '"');
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t next = jinja_utf8_next(s, n, i, &cp);
        switch (cp) {
        case '"':
            jinja_buf_put(a, b, "\\\"", 2);
            break;
        case '\\':
            jinja_buf_put(a, b, "\\\\", 2);
            break;
        case '\n':
            jinja_buf_put(a, b, "\\n", 2);
            break;
        case '\r':
            jinja_buf_put(a, b, "\\r", 2);
            break;
        case '\t':
            jinja_buf_put(a, b, "\\t", 2);
            break;
        case '\b':
            jinja_buf_put(a, b, "\\b", 2);
            break;
        case '\f':
            jinja_buf_put(a, b, "\\f", 2);
            break;
        default:
            if (cp < 0x20 || (ensure_ascii && cp == 0x7F)) {
                jinja_buf_printf(a, b, "\\u%04x", cp);
            } else if (ensure_ascii && cp > 0x7F) {
                if (cp >= 0x10000) {
                    uint32_t v = cp - 0x10000;
                    jinja_buf_printf(a, b, "\\u%04x\\u%04x", 0xD800 + (v >> 10),
                                     0xDC00 + (v & 0x3FF));
                } else {
                    jinja_buf_printf(a, b, "\\u%04x", cp);
                }
            } else {
                jinja_buf_put(a, b, s + i, next - i);
            }
        }
        i = next;
    }
    jinja_buf_putc(a, b, '"');
}

static void put_json_float(struct jinja_arena *a, struct jinja_buf *b, double f) {
    if (isnan(f))
        jinja_buf_put(a, b, "NaN", 3);
    else if (isinf(f))
        jinja_buf_put(a, b, f < 0 ? "-Infinity" : "Infinity", f < 0 ? 9 : 8);
    else
        jinja_put_float(a, b, f);
}

static void newline_indent(struct jinja_arena *a, struct jinja_buf *b, int indent, int depth) {
    jinja_buf_putc(a, b, '\n');
    for (long i = 0; i < (long)indent * depth; i++) jinja_buf_putc(a, b, ' ');
}

/* json.dumps turns dict keys of these types into strings; others are a TypeError. */
static const struct jinja_str *json_key(struct jinja_render *r, int line, struct jinja_val k) {
    struct jinja_buf b = {0};
    switch (k.type) {
    case JV_STR:
        return k.u.s;
    case JV_INT:
        jinja_buf_printf(&r->arena, &b, "%" PRId64, k.u.i);
        break;
    case JV_FLOAT:
        put_json_float(&r->arena, &b, k.u.f);
        break;
    case JV_BOOL:
        jinja_buf_put(&r->arena, &b, k.u.b ? "true" : "false", k.u.b ? 4 : 5);
        break;
    case JV_NONE:
        jinja_buf_put(&r->arena, &b, "null", 4);
        break;
    default:
        jinja_rfail(r, line, "keys must be str, int, float, bool or None, not %s",
                    jinja_type_name(k));
    }
    return jinja_str(&r->arena, b.p, b.len).u.s;
}

void jinja_put_json(struct jinja_render *r, int line, struct jinja_buf *b, struct jinja_val v,
                    int indent, const char *item_sep, const char *key_sep, bool ensure_ascii,
                    bool sort_keys, int depth) {
    struct jinja_arena *a = &r->arena;
    if (depth > JINJA_MAX_VALUE_DEPTH)
        jinja_rfail(r, line, "tojson: value nests deeper than %d levels", JINJA_MAX_VALUE_DEPTH);
    switch (v.type) {
    case JV_NONE:
        jinja_buf_put(a, b, "null", 4);
        return;
    case JV_BOOL:
        jinja_buf_put(a, b, v.u.b ? "true" : "false", v.u.b ? 4 : 5);
        return;
    case JV_INT:
        jinja_buf_printf(a, b, "%" PRId64, v.u.i);
        return;
    case JV_FLOAT:
        put_json_float(a, b, v.u.f);
        return;
    case JV_STR:
        put_json_str(a, b, v.u.s->s, v.u.s->len, ensure_ascii);
        return;
    case JV_LIST:
        if (!v.u.l->n) {
            jinja_buf_put(a, b, "[]", 2);
            return;
        }
        jinja_buf_putc(a, b, '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) jinja_buf_put(a, b, item_sep, strlen(item_sep));
            if (indent >= 0) newline_indent(a, b, indent, depth + 1);
            jinja_put_json(r, line, b, v.u.l->v[i], indent, item_sep, key_sep, ensure_ascii,
                           sort_keys, depth + 1);
        }
        if (indent >= 0) newline_indent(a, b, indent, depth);
        jinja_buf_putc(a, b, ']');
        return;
    case JV_DICT: {
        const struct jinja_dict *d = v.u.d;
        if (!d->n) {
            jinja_buf_put(a, b, "{}", 2);
            return;
        }
        size_t *order = jinja_alloc_array(a, d->n, sizeof *order);
        for (size_t i = 0; i < d->n; i++) order[i] = i;
        if (sort_keys) /* insertion sort: stable, and dicts in templates are small */
            for (size_t i = 1; i < d->n; i++)
                for (size_t j = i;
                     j > 0 && jinja_compare(r, line, d->keys[order[j - 1]], d->keys[order[j]]) > 0;
                     j--) {
                    size_t t = order[j];
                    order[j] = order[j - 1];
                    order[j - 1] = t;
                }
        jinja_buf_putc(a, b, '{');
        for (size_t k = 0; k < d->n; k++) {
            size_t i = order[k];
            if (k) jinja_buf_put(a, b, item_sep, strlen(item_sep));
            if (indent >= 0) newline_indent(a, b, indent, depth + 1);
            const struct jinja_str *key = json_key(r, line, d->keys[i]);
            put_json_str(a, b, key->s, key->len, ensure_ascii);
            jinja_buf_put(a, b, key_sep, strlen(key_sep));
            jinja_put_json(r, line, b, d->vals[i], indent, item_sep, key_sep, ensure_ascii,
                           sort_keys, depth + 1);
        }
        if (indent >= 0) newline_indent(a, b, indent, depth);
        jinja_buf_putc(a, b, '}');
        return;
    }
    default:
        jinja_rfail(r, line, "Object of type %s is not JSON serializable", jinja_type_name(v));
    }
}
