/* jinja_strings: Python's str methods as templates call them ('a b'.split(), s.strip('\n'),
 * s.startswith(...), ...), the dict methods (items, keys, values, get), and the case mapping and
 * stripping the filters share. Strings are code points, as in Python: split and strip treat
 * every Unicode whitespace as whitespace, find returns code point indices. Case mapping covers
 * Latin, Greek, Cyrillic, Armenian and fullwidth letters one code point to one; Python's
 * multi-character special cases ('ß'.upper() == 'SS') are not reproduced. */
#include "jinja_impl.h"

#include <stdlib.h>
#include <string.h>

enum {
    M_SPLIT,
    M_RSPLIT,
    M_STRIP,
    M_LSTRIP,
    M_RSTRIP,
    M_STARTSWITH,
    M_ENDSWITH,
    M_REPLACE,
    M_UPPER,
    M_LOWER,
    M_TITLE,
    M_CAPITALIZE,
    M_FIND,
    M_COUNT,
    M_JOIN,
    M_ITEMS, /* dict methods from here */
    M_KEYS,
    M_VALUES,
    M_GET,
};
static const char *const methods[] = {
    "split",   "rsplit", "strip", "lstrip", "rstrip",     "startswith", "endswith",
    "replace", "upper",  "lower", "title",  "capitalize", "find",       "count",
    "join",    "items",  "keys",  "values", "get",
};

static struct jinja_str *new_str(struct jinja_render *r, struct jinja_buf *b) {
    return (struct jinja_str *)jinja_str(&r->arena, b->p ? b->p : "", b->len).u.s;
}

static struct jinja_val str_val(const struct jinja_str *s) {
    return (struct jinja_val){.type = JV_STR, .u.s = s};
}

static uint32_t cp_upper(uint32_t c) {
    if (c < 0x80) return c >= 'a' && c <= 'z' ? c - 32 : c;
    if (c == 0xB5) return 0x39C;
    if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 32;
    if (c == 0xFF) return 0x178;
    if (c >= 0x100 && c <= 0x17F) {
        if (c == 0x131) return 'I';
        if (c == 0x17F) return 'S';
        if (c == 0x130 || c == 0x138 || c == 0x149) return c;
        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return c % 2 ? c : c - 1;
        return c % 2 ? c - 1 : c;
    }
    if (c >= 0x3B1 && c <= 0x3CB) return c == 0x3C2 ? 0x3A3 : c - 32;
    if (c == 0x3AC) return 0x386;
    if (c >= 0x3AD && c <= 0x3AF) return c - 37;
    if (c == 0x3CC) return 0x38C;
    if (c == 0x3CD || c == 0x3CE) return c - 63;
    if (c >= 0x430 && c <= 0x44F) return c - 32;
    if (c >= 0x450 && c <= 0x45F) return c - 80;
    if ((c >= 0x460 && c <= 0x481) || (c >= 0x48A && c <= 0x4BF)) return c % 2 ? c - 1 : c;
    if (c >= 0x561 && c <= 0x586) return c - 48;
    if ((c >= 0x1E00 && c <= 0x1E95) || (c >= 0x1EA0 && c <= 0x1EFF)) return c % 2 ? c - 1 : c;
    if (c >= 0xFF41 && c <= 0xFF5A) return c - 32;
    return c;
}

static uint32_t cp_lower(uint32_t c) {
    if (c < 0x80) return c >= 'A' && c <= 'Z' ? c + 32 : c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    if (c == 0x178) return 0xFF;
    if (c >= 0x100 && c <= 0x17F) {
        if (c == 0x130) return 'i';
        if (c == 0x131 || c == 0x138 || c == 0x149 || c == 0x17F) return c;
        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return c % 2 ? c + 1 : c;
        return c % 2 ? c : c + 1;
    }
    if (c >= 0x391 && c <= 0x3AB && c != 0x3A2) return c + 32;
    if (c == 0x386) return 0x3AC;
    if (c >= 0x388 && c <= 0x38A) return c + 37;
    if (c == 0x38C) return 0x3CC;
    if (c == 0x38E || c == 0x38F) return c + 63;
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    if ((c >= 0x460 && c <= 0x481) || (c >= 0x48A && c <= 0x4BF)) return c % 2 ? c : c + 1;
    if (c >= 0x531 && c <= 0x556) return c + 48;
    if ((c >= 0x1E00 && c <= 0x1E95) || (c >= 0x1EA0 && c <= 0x1EFF)) return c % 2 ? c : c + 1;
    if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;
    return c;
}

static bool cp_cased(uint32_t c) {
    return cp_upper(c) != c || cp_lower(c) != c;
}

/* str.upper / lower / title / capitalize, and Jinja's title filter (capitalize each piece
 * between runs of whitespace, '-', '(', '{', '[' and '<'). */
struct jinja_val jinja_change_case(struct jinja_render *r, const struct jinja_str *s, int how) {
    struct jinja_buf b = {0};
    bool prev_cased = false, first = true;
    for (size_t i = 0; i < s->len;) {
        uint32_t cp, out;
        i = jinja_utf8_next(s->s, s->len, i, &cp);
        switch (how) {
        case JINJA_CASE_UPPER:
            out = cp_upper(cp);
            break;
        case JINJA_CASE_LOWER:
            out = cp_lower(cp);
            break;
        case JINJA_CASE_TITLE:
            out = cp_cased(cp) ? (prev_cased ? cp_lower(cp) : cp_upper(cp)) : cp;
            prev_cased = cp_cased(cp);
            break;
        case JINJA_CASE_CAPITALIZE:
            out = first ? cp_upper(cp) : cp_lower(cp);
            break;
        default: {
            bool sep =
                jinja_is_space(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
            out = sep ? cp : first ? cp_upper(cp) : cp_lower(cp);
            first = sep;
            jinja_utf8_put(&r->arena, &b, out);
            continue;
        }
        }
        first = false;
        jinja_utf8_put(&r->arena, &b, out);
    }
    return str_val(new_str(r, &b));
}

static bool in_set(const struct jinja_str *chars, uint32_t cp) {
    if (!chars) return jinja_is_space(cp);
    for (size_t i = 0; i < chars->len;) {
        uint32_t c;
        i = jinja_utf8_next(chars->s, chars->len, i, &c);
        if (c == cp) return true;
    }
    return false;
}

/* str.strip / lstrip / rstrip with chars (NULL: whitespace). */
struct jinja_val jinja_strip(struct jinja_render *r, const struct jinja_str *s,
                             const struct jinja_str *chars, bool left, bool right) {
    size_t b = 0, e = s->len;
    if (left)
        while (b < e) {
            uint32_t cp;
            size_t next = jinja_utf8_next(s->s, e, b, &cp);
            if (!in_set(chars, cp)) break;
            b = next;
        }
    if (right) {
        size_t keep = b;
        for (size_t i = b; i < e;) {
            uint32_t cp;
            size_t next = jinja_utf8_next(s->s, e, i, &cp);
            if (!in_set(chars, cp)) keep = next;
            i = next;
        }
        e = keep;
    }
    return jinja_str(&r->arena, s->s + b, e - b);
}

const struct jinja_str *jinja_strip_chars(struct jinja_render *r, int line, struct jinja_val v) {
    if (v.type == JV_UNDEF || v.type == JV_NONE) return NULL;
    return jinja_need_str(r, line, v, "strip chars");
}

/* str.split / rsplit. sep NULL: runs of whitespace. */
static struct jinja_val split(struct jinja_render *r, int line, const struct jinja_str *s,
                              const struct jinja_str *sep, int64_t maxsplit, bool from_right) {
    struct jinja_val *parts = jinja_alloc_array(&r->arena, s->len + 2, sizeof *parts);
    size_t n = 0;
    if (sep && sep->len == 0) jinja_rfail(r, line, "empty separator");
    if (!sep) {
        /* collect whitespace-separated words, then merge the tail beyond maxsplit */
        size_t i = 0, b;
        size_t *starts = jinja_alloc_array(&r->arena, s->len + 1, sizeof *starts);
        size_t *ends = jinja_alloc_array(&r->arena, s->len + 1, sizeof *ends);
        while (i < s->len) {
            uint32_t cp;
            size_t next = jinja_utf8_next(s->s, s->len, i, &cp);
            if (jinja_is_space(cp)) {
                i = next;
                continue;
            }
            b = i;
            while (i < s->len) {
                next = jinja_utf8_next(s->s, s->len, i, &cp);
                if (jinja_is_space(cp)) break;
                i = next;
            }
            starts[n] = b;
            ends[n] = i;
            n++;
        }
        if (maxsplit >= 0 && (int64_t)n > maxsplit + 1) {
            size_t keep = (size_t)maxsplit;
            struct jinja_val l = jinja_list(&r->arena, keep + 1);
            if (!from_right) {
                for (size_t k = 0; k < keep; k++)
                    l.u.l->v[k] = jinja_str(&r->arena, s->s + starts[k], ends[k] - starts[k]);
                /* the rest keeps its inner and trailing whitespace, as in Python */
                l.u.l->v[keep] = jinja_str(&r->arena, s->s + starts[keep], s->len - starts[keep]);
            } else {
                size_t first = n - keep;
                l.u.l->v[0] = jinja_str(&r->arena, s->s, ends[first - 1]);
                for (size_t k = 0; k < keep; k++)
                    l.u.l->v[k + 1] = jinja_str(&r->arena, s->s + starts[first + k],
                                                ends[first + k] - starts[first + k]);
            }
            return l;
        }
        struct jinja_val l = jinja_list(&r->arena, n);
        for (size_t k = 0; k < n; k++)
            l.u.l->v[k] = jinja_str(&r->arena, s->s + starts[k], ends[k] - starts[k]);
        return l;
    }
    if (!from_right) {
        size_t b = 0;
        for (;;) {
            const char *hit = (maxsplit < 0 || (int64_t)n < maxsplit)
                                  ? memmem(s->s + b, s->len - b, sep->s, sep->len)
                                  : NULL;
            if (!hit) break;
            size_t at = (size_t)(hit - s->s);
            parts[n++] = jinja_str(&r->arena, s->s + b, at - b);
            b = at + sep->len;
        }
        parts[n++] = jinja_str(&r->arena, s->s + b, s->len - b);
    } else {
        size_t e = s->len;
        while (maxsplit < 0 || (int64_t)n < maxsplit) {
            size_t at = SIZE_MAX;
            for (size_t i = e; i >= sep->len; i--)
                if (!memcmp(s->s + i - sep->len, sep->s, sep->len)) {
                    at = i - sep->len;
                    break;
                }
            if (at == SIZE_MAX) break;
            parts[n++] = jinja_str(&r->arena, s->s + at + sep->len, e - at - sep->len);
            e = at;
        }
        parts[n++] = jinja_str(&r->arena, s->s, e);
        for (size_t k = 0; k < n / 2; k++) {
            struct jinja_val t = parts[k];
            parts[k] = parts[n - 1 - k];
            parts[n - 1 - k] = t;
        }
    }
    struct jinja_val l = jinja_list(&r->arena, n);
    memcpy(l.u.l->v, parts, n * sizeof *parts);
    return l;
}

struct jinja_val jinja_replace(struct jinja_render *r, const struct jinja_str *s,
                               const struct jinja_str *old, const struct jinja_str *new_,
                               int64_t count) {
    struct jinja_buf b = {0};
    int64_t done = 0;
    if (old->len == 0) { /* Python inserts new_ before every code point and at the end */
        size_t i = 0;
        while (i <= s->len) {
            if (count < 0 || done < count) {
                jinja_buf_put(&r->arena, &b, new_->s, new_->len);
                done++;
            }
            if (i == s->len) break;
            uint32_t cp;
            size_t next = jinja_utf8_next(s->s, s->len, i, &cp);
            jinja_buf_put(&r->arena, &b, s->s + i, next - i);
            i = next;
        }
        return str_val(new_str(r, &b));
    }
    size_t i = 0;
    while (i < s->len) {
        const char *hit =
            (count < 0 || done < count) ? memmem(s->s + i, s->len - i, old->s, old->len) : NULL;
        if (!hit) break;
        size_t at = (size_t)(hit - s->s);
        jinja_buf_put(&r->arena, &b, s->s + i, at - i);
        jinja_buf_put(&r->arena, &b, new_->s, new_->len);
        i = at + old->len;
        done++;
    }
    jinja_buf_put(&r->arena, &b, s->s + i, s->len - i);
    return str_val(new_str(r, &b));
}

static bool prefix_match(const struct jinja_str *s, const struct jinja_str *p, bool at_end) {
    if (p->len > s->len) return false;
    return !memcmp(s->s + (at_end ? s->len - p->len : 0), p->s, p->len);
}

bool jinja_str_has_case(const struct jinja_str *s, bool upper) {
    bool any = false;
    for (size_t i = 0; i < s->len;) {
        uint32_t cp;
        i = jinja_utf8_next(s->s, s->len, i, &cp);
        if (!cp_cased(cp)) continue;
        any = true;
        if (upper ? cp_upper(cp) != cp : cp_lower(cp) != cp) return false;
    }
    return any;
}

int jinja_method_id(const char *name) {
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (!strcmp(methods[i], name)) return (int)i;
    return -1;
}

int jinja_method_of(struct jinja_val v, const char *name) {
    int id = jinja_method_id(name);
    if (id < 0) return -1;
    if (v.type == JV_STR) return id < M_ITEMS ? id : -1;
    if (v.type == JV_DICT) return id >= M_ITEMS ? id : -1;
    return -1;
}

/* ---- methods ------------------------------------------------------------------------------------
 */

static int64_t cp_index(const struct jinja_str *s, const char *at) {
    return (int64_t)jinja_utf8_count(s->s, (size_t)(at - s->s));
}

struct jinja_val jinja_call_method(struct jinja_render *r, int line, struct jinja_method *m,
                                   struct jinja_args *args) {
    struct jinja_val a[JINJA_MAX_PARAMS];
    bool has[JINJA_MAX_PARAMS];
    const char *name = methods[m->id];
    struct jinja_val self = m->self;
    const struct jinja_str *s = self.type == JV_STR ? self.u.s : NULL;
    switch (m->id) {
    case M_SPLIT:
    case M_RSPLIT: {
        static const char *const p[] = {"sep", "maxsplit"};
        jinja_bind(r, line, name, args, p, 2, a, has);
        const struct jinja_str *sep =
            has[0] && a[0].type != JV_NONE ? jinja_need_str(r, line, a[0], "separator") : NULL;
        int64_t maxsplit = has[1] ? jinja_need_int(r, line, a[1], "maxsplit") : -1;
        return split(r, line, s, sep, maxsplit, m->id == M_RSPLIT);
    }
    case M_STRIP:
    case M_LSTRIP:
    case M_RSTRIP: {
        static const char *const p[] = {"chars"};
        jinja_bind(r, line, name, args, p, 1, a, has);
        return jinja_strip(r, s, has[0] ? jinja_strip_chars(r, line, a[0]) : NULL,
                           m->id != M_RSTRIP, m->id != M_LSTRIP);
    }
    case M_STARTSWITH:
    case M_ENDSWITH: {
        if (args->n != 1 || args->n_kw)
            jinja_rfail(r, line, "%s: only the one-argument form is supported", name);
        struct jinja_val p = args->v[0];
        bool end = m->id == M_ENDSWITH;
        if (p.type == JV_LIST && p.tuple) {
            for (size_t i = 0; i < p.u.l->n; i++)
                if (prefix_match(s, jinja_need_str(r, line, p.u.l->v[i], name), end))
                    return jinja_bool(true);
            return jinja_bool(false);
        }
        if (p.type != JV_STR)
            jinja_rfail(r, line, "%s first arg must be str or a tuple of str, not %s", name,
                        jinja_type_name(p));
        return jinja_bool(prefix_match(s, p.u.s, end));
    }
    case M_REPLACE: {
        static const char *const p[] = {"old", "new", "count"};
        jinja_bind(r, line, name, args, p, 3, a, has);
        if (!has[0] || !has[1]) jinja_rfail(r, line, "replace needs old and new strings");
        return jinja_replace(r, s, jinja_need_str(r, line, a[0], "old"),
                             jinja_need_str(r, line, a[1], "new"),
                             has[2] ? jinja_need_int(r, line, a[2], "count") : -1);
    }
    case M_UPPER:
    case M_LOWER:
    case M_TITLE:
    case M_CAPITALIZE:
        jinja_bind(r, line, name, args, NULL, 0, a, has);
        return jinja_change_case(r, s,
                                 m->id == M_UPPER   ? JINJA_CASE_UPPER
                                 : m->id == M_LOWER ? JINJA_CASE_LOWER
                                 : m->id == M_TITLE ? JINJA_CASE_TITLE
                                                    : JINJA_CASE_CAPITALIZE);
    case M_FIND:
    case M_COUNT: {
        if (args->n != 1 || args->n_kw)
            jinja_rfail(r, line, "%s: only the one-argument form is supported", name);
        const struct jinja_str *sub = jinja_need_str(r, line, args->v[0], "substring");
        if (m->id == M_FIND) {
            const char *hit = sub->len ? memmem(s->s, s->len, sub->s, sub->len) : s->s;
            return jinja_int(hit ? cp_index(s, hit) : -1);
        }
        if (!sub->len) return jinja_int((int64_t)jinja_utf8_count(s->s, s->len) + 1);
        int64_t k = 0;
        for (const char *p = s->s; (p = memmem(p, s->len - (size_t)(p - s->s), sub->s, sub->len));
             p += sub->len)
            k++;
        return jinja_int(k);
    }
    case M_JOIN: {
        if (args->n != 1 || args->n_kw) jinja_rfail(r, line, "join takes one iterable");
        const struct jinja_list *l = jinja_iterate(r, line, args->v[0]);
        struct jinja_buf b = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (l->v[i].type != JV_STR)
                jinja_rfail(r, line, "sequence item %zu: expected str instance, %s found", i,
                            jinja_type_name(l->v[i]));
            if (i) jinja_buf_put(&r->arena, &b, s->s, s->len);
            jinja_buf_put(&r->arena, &b, l->v[i].u.s->s, l->v[i].u.s->len);
        }
        return str_val(new_str(r, &b));
    }
    case M_ITEMS:
    case M_KEYS:
    case M_VALUES: {
        jinja_bind(r, line, name, args, NULL, 0, a, has);
        const struct jinja_dict *d = self.u.d;
        if (m->id == M_ITEMS) {
            return jinja_dict_items(r, d);
        }
        struct jinja_val l = jinja_list(&r->arena, d->n);
        memcpy(l.u.l->v, m->id == M_KEYS ? d->keys : d->vals, d->n * sizeof *l.u.l->v);
        return l;
    }
    case M_GET: {
        static const char *const p[] = {"key", "default"};
        jinja_bind(r, line, name, args, p, 2, a, has);
        if (!has[0]) jinja_rfail(r, line, "get expected at least 1 argument");
        long i = jinja_dict_find(&r->fail, self.u.d, a[0]);
        return i >= 0 ? self.u.d->vals[i] : has[1] ? a[1] : jinja_none();
    }
    }
    jinja_rfail(r, line, "internal error: method %d", m->id);
}
