/* jinja_eval: the tree-walking interpreter. Scoping follows Python Jinja: the template has one
 * top-level scope (under the caller's variables), each for-loop iteration gets a fresh scope
 * (a {% set %} inside a loop is gone after it; namespaces are the way out), if-blocks share
 * their enclosing scope, and a macro call runs in a scope under the one it was defined in.
 * Operators, attribute/item lookup, slicing and Undefined behave as in Python Jinja under HF's
 * ImmutableSandboxedEnvironment: a missing key is Undefined, but using an Undefined in
 * arithmetic, as an object or as a callee raises. Every statement and loop iteration counts
 * against max_steps, so no template can run unbounded. */
#include "jinja_impl.h"

#include <math.h>
#include <string.h>

enum flow { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE };

void jinja_step(struct jinja_render *r, int line) {
    if (++r->steps > r->max_steps)
        jinja_rfail(r, line, "template ran more than %lld steps; a loop that large is refused",
                    r->max_steps);
}

static _Noreturn void undefined_error(struct jinja_render *r, int line, struct jinja_val v) {
    jinja_rfail(r, line, "%s", v.u.undef ? v.u.undef : "value is undefined");
}

static struct jinja_val undef_fmt(struct jinja_render *r, const char *fmt, const char *a,
                                  const char *b) {
    struct jinja_buf buf = {0};
    jinja_buf_printf(&r->arena, &buf, fmt, a, b);
    return jinja_undef(buf.p);
}

/* ---- scopes ------------------------------------------------------------------------------ */

static struct jinja_scope *scope_new(struct jinja_render *r, struct jinja_scope *parent) {
    struct jinja_scope *s = jinja_alloc(&r->arena, sizeof *s);
    s->parent = parent;
    return s;
}

static void scope_set(struct jinja_render *r, struct jinja_scope *s, const char *name,
                      struct jinja_val v) {
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) {
            s->vals[i] = v;
            return;
        }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4;
        const char **names = jinja_alloc_array(&r->arena, cap, sizeof *names);
        struct jinja_val *vals = jinja_alloc_array(&r->arena, cap, sizeof *vals);
        if (s->n) {
            memcpy(names, s->names, s->n * sizeof *names);
            memcpy(vals, s->vals, s->n * sizeof *vals);
        }
        s->names = names;
        s->vals = vals;
        s->cap = cap;
    }
    s->names[s->n] = name;
    s->vals[s->n] = v;
    s->n++;
}

static struct jinja_val lookup(struct jinja_render *r, struct jinja_scope *s, const char *name) {
    for (; s; s = s->parent)
        for (size_t i = s->n; i-- > 0;)
            if (!strcmp(s->names[i], name)) return s->vals[i];
    int fn = jinja_global_id(name);
    if (fn >= 0) return (struct jinja_val){.type = JV_FUNC, .u.fn = fn};
    return undef_fmt(r, "'%s' is undefined%s", name, "");
}

/* ---- output ------------------------------------------------------------------------------- */

static void check_output(struct jinja_render *r, int line) {
    if (r->out->len > r->max_output_bytes)
        jinja_rfail(r, line, "template output exceeds %zu bytes", r->max_output_bytes);
}

/* Runs body with output going to a fresh buffer; returns the text. */
static int exec(struct jinja_render *r, struct jinja_scope *s, const struct jinja_node *n);
static struct jinja_val capture(struct jinja_render *r, struct jinja_scope *s,
                                const struct jinja_node *body) {
    struct jinja_buf *saved = r->out, buf = {0};
    r->out = &buf;
    exec(r, s, body);
    r->out = saved;
    return jinja_str(&r->arena, buf.p ? buf.p : "", buf.len);
}

/* ---- lookups ------------------------------------------------------------------------------ */

const struct jinja_list *jinja_iterate(struct jinja_render *r, int line, struct jinja_val v) {
    switch (v.type) {
    case JV_UNDEF: { /* iterating Undefined yields nothing */
        static struct jinja_val no_items[1];
        static struct jinja_list empty = {.n = 0, .v = no_items};
        return &empty;
    }
    case JV_LIST:
        return v.u.l;
    case JV_DICT: {
        struct jinja_val l = jinja_list(&r->arena, v.u.d->n);
        memcpy(l.u.l->v, v.u.d->keys, v.u.d->n * sizeof *l.u.l->v);
        return l.u.l;
    }
    case JV_STR: {
        const struct jinja_str *s = v.u.s;
        struct jinja_val l = jinja_list(&r->arena, jinja_utf8_count(s->s, s->len));
        size_t k = 0;
        for (size_t i = 0; i < s->len;) {
            uint32_t cp;
            size_t next = jinja_utf8_next(s->s, s->len, i, &cp);
            l.u.l->v[k++] = jinja_str(&r->arena, s->s + i, next - i);
            i = next;
        }
        return l.u.l;
    }
    default:
        jinja_rfail(r, line, "'%s' object is not iterable", jinja_type_name(v));
    }
}

static struct jinja_val loop_attr(struct jinja_render *r, const struct jinja_loop *l,
                                  const char *name) {
    int64_t i = l->index0, n = l->length;
    if (!strcmp(name, "index")) return jinja_int(i + 1);
    if (!strcmp(name, "index0")) return jinja_int(i);
    if (!strcmp(name, "revindex")) return jinja_int(n - i);
    if (!strcmp(name, "revindex0")) return jinja_int(n - i - 1);
    if (!strcmp(name, "first")) return jinja_bool(i == 0);
    if (!strcmp(name, "last")) return jinja_bool(i == n - 1);
    if (!strcmp(name, "length")) return jinja_int(n);
    if (!strcmp(name, "depth")) return jinja_int(l->depth0 + 1);
    if (!strcmp(name, "depth0")) return jinja_int(l->depth0);
    if (!strcmp(name, "previtem"))
        return i > 0 ? l->items->v[i - 1] : jinja_undef("there is no previous item");
    if (!strcmp(name, "nextitem"))
        return i + 1 < n ? l->items->v[i + 1] : jinja_undef("there is no next item");
    return undef_fmt(r, "'LoopContext object' has no attribute '%s'%s", name, "");
}

static struct jinja_val bound_method(struct jinja_render *r, int id, struct jinja_val self) {
    struct jinja_method *m = jinja_alloc(&r->arena, sizeof *m);
    m->id = id;
    m->self = self;
    return (struct jinja_val){.type = JV_METHOD, .u.m = m};
}

struct jinja_val jinja_getattr(struct jinja_render *r, int line, struct jinja_val obj,
                               const char *name) {
    if (obj.type == JV_UNDEF) undefined_error(r, line, obj);
    int m = jinja_method_of(obj, name);
    if (m >= 0) return bound_method(r, m, obj);
    switch (obj.type) {
    case JV_DICT:
    case JV_NS: {
        long i = jinja_dict_find_str(obj.u.d, name);
        if (i >= 0) return obj.u.d->vals[i];
        break;
    }
    case JV_LOOP:
        return loop_attr(r, obj.u.loop, name);
    default:
        break;
    }
    return undef_fmt(r, "'%s object' has no attribute '%s'", jinja_type_name(obj), name);
}

/* Byte offsets of the code points of s, plus one past the end. */
static size_t *cp_offsets(struct jinja_render *r, const struct jinja_str *s, size_t *n_cp) {
    size_t n = jinja_utf8_count(s->s, s->len);
    size_t *off = jinja_alloc_array(&r->arena, n + 1, sizeof *off);
    size_t k = 0;
    for (size_t i = 0; i < s->len;) {
        uint32_t cp;
        off[k++] = i;
        i = jinja_utf8_next(s->s, s->len, i, &cp);
    }
    off[k] = s->len;
    *n_cp = n;
    return off;
}

static bool as_index(struct jinja_val v, int64_t *out) {
    if (v.type == JV_INT)
        *out = v.u.i;
    else if (v.type == JV_BOOL)
        *out = v.u.b;
    else
        return false;
    return true;
}

struct jinja_val jinja_getitem(struct jinja_render *r, int line, struct jinja_val obj,
                               struct jinja_val key) {
    if (obj.type == JV_UNDEF) undefined_error(r, line, obj);
    int64_t i;
    switch (obj.type) {
    case JV_LIST:
        if (as_index(key, &i)) {
            int64_t n = (int64_t)obj.u.l->n;
            if (i < 0) i += n;
            if (i >= 0 && i < n) return obj.u.l->v[i];
            return jinja_undef("list index out of range");
        }
        break;
    case JV_STR:
        if (as_index(key, &i)) {
            size_t n;
            size_t *off = cp_offsets(r, obj.u.s, &n);
            if (i < 0) i += (int64_t)n;
            if (i >= 0 && i < (int64_t)n)
                return jinja_str(&r->arena, obj.u.s->s + off[i], off[i + 1] - off[i]);
            return jinja_undef("string index out of range");
        }
        break;
    case JV_DICT:
    case JV_NS: {
        long k = jinja_dict_find(&r->fail, obj.u.d, key);
        if (k >= 0) return obj.u.d->vals[k];
        break;
    }
    default:
        break;
    }
    if (key.type == JV_STR) return jinja_getattr(r, line, obj, key.u.s->s);
    if (key.type == JV_UNDEF) undefined_error(r, line, key);
    return jinja_undef("no such item");
}

static int64_t slice_bound(struct jinja_render *r, int line, struct jinja_val v, int64_t len,
                           int64_t dflt, int64_t lower, int64_t upper) {
    if (v.type == JV_NONE) return dflt;
    int64_t x;
    if (!as_index(v, &x))
        jinja_rfail(r, line, "slice indices must be integers or None, not %s", jinja_type_name(v));
    if (x < 0) {
        x += len;
        if (x < lower) x = lower;
    } else if (x > upper) {
        x = upper;
    }
    return x;
}

static struct jinja_val eval_slice(struct jinja_render *r, struct jinja_scope *s,
                                   struct jinja_val obj, const struct jinja_node *n) {
    if (obj.type == JV_UNDEF) undefined_error(r, n->line, obj);
    struct jinja_val vs = n->a ? jinja_eval(r, s, n->a) : jinja_none();
    struct jinja_val ve = n->b ? jinja_eval(r, s, n->b) : jinja_none();
    struct jinja_val vstep = n->c ? jinja_eval(r, s, n->c) : jinja_none();
    int64_t step = 1;
    if (vstep.type != JV_NONE && !as_index(vstep, &step))
        jinja_rfail(r, n->line, "slice indices must be integers or None");
    if (step == 0) jinja_rfail(r, n->line, "slice step cannot be zero");
    size_t n_cp = 0, *off = NULL;
    int64_t len;
    if (obj.type == JV_LIST)
        len = (int64_t)obj.u.l->n;
    else if (obj.type == JV_STR) {
        off = cp_offsets(r, obj.u.s, &n_cp);
        len = (int64_t)n_cp;
    } else {
        return jinja_undef("object is not sliceable");
    }
    int64_t lower = step < 0 ? -1 : 0, upper = step < 0 ? len - 1 : len;
    int64_t start = slice_bound(r, n->line, vs, len, step < 0 ? upper : lower, lower, upper);
    int64_t stop = slice_bound(r, n->line, ve, len, step < 0 ? lower : upper, lower, upper);
    int64_t count = 0;
    if (step > 0 && start < stop) count = (stop - start - 1) / step + 1;
    if (step < 0 && start > stop) count = (start - stop - 1) / (-step) + 1;
    if (obj.type == JV_LIST) {
        struct jinja_val l = jinja_list(&r->arena, (size_t)count);
        l.tuple = obj.tuple;
        for (int64_t k = 0; k < count; k++) l.u.l->v[k] = obj.u.l->v[start + k * step];
        return l;
    }
    struct jinja_buf b = {0};
    for (int64_t k = 0; k < count; k++) {
        int64_t c = start + k * step;
        jinja_buf_put(&r->arena, &b, obj.u.s->s + off[c], off[c + 1] - off[c]);
    }
    return jinja_str(&r->arena, b.p ? b.p : "", b.len);
}

/* ---- calls ---------------------------------------------------------------------------------- */

static struct jinja_val call_macro(struct jinja_render *r, int line, const struct jinja_macro *m,
                                   struct jinja_args *args) {
    const struct jinja_node *def = m->def;
    if (args->n > def->n_names)
        jinja_rfail(r, line, "macro '%s' takes not more than %d argument(s)", def->name,
                    def->n_names);
    if (++r->call_depth > r->max_call_depth)
        jinja_rfail(r, line, "macro calls nest deeper than %d", r->max_call_depth);
    struct jinja_scope *s = scope_new(r, m->closure);
    for (int k = 0; k < args->n_kw; k++) {
        int p = 0;
        while (p < def->n_names && strcmp(def->names[p], args->kw[k])) p++;
        if (p == def->n_names)
            jinja_rfail(r, line, "macro '%s' takes no keyword argument '%s'", def->name,
                        args->kw[k]);
        if (p < args->n)
            jinja_rfail(r, line, "macro '%s' got multiple values for argument '%s'", def->name,
                        args->kw[k]);
    }
    for (int p = 0; p < def->n_names; p++) {
        struct jinja_val v;
        int k = 0;
        while (k < args->n_kw && strcmp(def->names[p], args->kw[k])) k++;
        if (p < args->n)
            v = args->v[p];
        else if (k < args->n_kw)
            v = args->kwv[k];
        else if (def->kwvals[p])
            v = jinja_eval(r, s, def->kwvals[p]);
        else
            v = undef_fmt(r, "parameter '%s' was not provided%s", def->names[p], "");
        scope_set(r, s, def->names[p], v);
    }
    struct jinja_val out = capture(r, s, def->b);
    r->call_depth--;
    return out;
}

struct jinja_val jinja_call_value(struct jinja_render *r, int line, struct jinja_val callee,
                                  struct jinja_args *args) {
    switch (callee.type) {
    case JV_FUNC:
        return jinja_call_global(r, line, callee.u.fn, args);
    case JV_METHOD:
        return jinja_call_method(r, line, callee.u.m, args);
    case JV_MACRO:
        return call_macro(r, line, callee.u.macro, args);
    case JV_UNDEF:
        undefined_error(r, line, callee);
    default:
        jinja_rfail(r, line, "'%s' object is not callable", jinja_type_name(callee));
    }
}

static void eval_args(struct jinja_render *r, struct jinja_scope *s, const struct jinja_node *n,
                      struct jinja_args *args) {
    args->n = n->n_args;
    args->v = jinja_alloc_array(&r->arena, (size_t)n->n_args + 1, sizeof *args->v);
    for (int i = 0; i < n->n_args; i++) args->v[i] = jinja_eval(r, s, n->args[i]);
    args->n_kw = n->n_kw;
    args->kw = n->kwnames;
    args->kwv = jinja_alloc_array(&r->arena, (size_t)n->n_kw + 1, sizeof *args->kwv);
    for (int i = 0; i < n->n_kw; i++) args->kwv[i] = jinja_eval(r, s, n->kwvals[i]);
}

/* ---- operators ------------------------------------------------------------------------------ */

static bool is_num(struct jinja_val v) {
    return v.type == JV_BOOL || v.type == JV_INT || v.type == JV_FLOAT;
}
static double as_double(struct jinja_val v) {
    return v.type == JV_FLOAT ? v.u.f : v.type == JV_BOOL ? (double)v.u.b : (double)v.u.i;
}
static int64_t as_i64(struct jinja_val v) {
    return v.type == JV_BOOL ? v.u.b : v.u.i;
}

static _Noreturn void operand_error(struct jinja_render *r, int line, int op, struct jinja_val a,
                                    struct jinja_val b) {
    static const char *const sym[] = {"", "+", "-", "*", "/", "//", "%", "**"};
    if (op == OP_ADD && a.type == JV_STR)
        jinja_rfail(r, line, "can only concatenate str (not \"%s\") to str", jinja_type_name(b));
    jinja_rfail(r, line, "unsupported operand type(s) for %s: '%s' and '%s'",
                op <= OP_POW ? sym[op] : "?", jinja_type_name(a), jinja_type_name(b));
}

static struct jinja_val repeat(struct jinja_render *r, int line, struct jinja_val seq,
                               int64_t times) {
    if (times < 0) times = 0;
    size_t unit = seq.type == JV_STR ? seq.u.s->len : seq.u.l->n * sizeof(struct jinja_val);
    if (unit && (uint64_t)times > r->arena.limit_bytes / unit)
        jinja_rfail(r, line, "repetition of %zu bytes %lld times exceeds the memory cap", unit,
                    (long long)times);
    if (seq.type == JV_STR) {
        struct jinja_buf b = {0};
        for (int64_t k = 0; k < times; k++) jinja_buf_put(&r->arena, &b, seq.u.s->s, seq.u.s->len);
        return jinja_str(&r->arena, b.p ? b.p : "", b.len);
    }
    size_t n = seq.u.l->n;
    struct jinja_val l = jinja_list(&r->arena, n * (size_t)times);
    l.tuple = seq.tuple;
    for (int64_t k = 0; k < times; k++)
        memcpy(l.u.l->v + (size_t)k * n, seq.u.l->v, n * sizeof *l.u.l->v);
    return l;
}

static struct jinja_val int_result(struct jinja_render *r, int line, bool overflow, int64_t v) {
    if (overflow) jinja_rfail(r, line, "integer result exceeds 64 bits");
    return jinja_int(v);
}

static double py_fmod(double a, double b, double *div) {
    double mod = fmod(a, b);
    double d = (a - mod) / b;
    if (mod != 0.0) {
        if ((b < 0) != (mod < 0)) {
            mod += b;
            d -= 1.0;
        }
    } else {
        mod = copysign(0.0, b);
    }
    if (div) *div = d != 0.0 ? floor(d) + ((d - floor(d)) > 0.5 ? 1.0 : 0.0) : copysign(0.0, a / b);
    return mod;
}

static struct jinja_val binop(struct jinja_render *r, int line, int op, struct jinja_val a,
                              struct jinja_val b) {
    if (a.type == JV_UNDEF) undefined_error(r, line, a);
    if (b.type == JV_UNDEF) undefined_error(r, line, b);
    bool nums = is_num(a) && is_num(b);
    bool ints = nums && a.type != JV_FLOAT && b.type != JV_FLOAT;
    int64_t x = ints ? as_i64(a) : 0, y = ints ? as_i64(b) : 0, v = 0;
    switch (op) {
    case OP_ADD:
        if (ints) {
            bool of = __builtin_add_overflow(x, y, &v);
            return int_result(r, line, of, v);
        }
        if (nums) return jinja_float(as_double(a) + as_double(b));
        if (a.type == JV_STR && b.type == JV_STR) {
            struct jinja_buf buf = {0};
            jinja_buf_put(&r->arena, &buf, a.u.s->s, a.u.s->len);
            jinja_buf_put(&r->arena, &buf, b.u.s->s, b.u.s->len);
            return jinja_str(&r->arena, buf.p ? buf.p : "", buf.len);
        }
        if (a.type == JV_LIST && b.type == JV_LIST && a.tuple == b.tuple) {
            struct jinja_val l = jinja_list(&r->arena, a.u.l->n + b.u.l->n);
            l.tuple = a.tuple;
            memcpy(l.u.l->v, a.u.l->v, a.u.l->n * sizeof *l.u.l->v);
            memcpy(l.u.l->v + a.u.l->n, b.u.l->v, b.u.l->n * sizeof *l.u.l->v);
            return l;
        }
        break;
    case OP_SUB:
        if (ints) {
            bool of = __builtin_sub_overflow(x, y, &v);
            return int_result(r, line, of, v);
        }
        if (nums) return jinja_float(as_double(a) - as_double(b));
        break;
    case OP_MUL:
        if (ints) {
            bool of = __builtin_mul_overflow(x, y, &v);
            return int_result(r, line, of, v);
        }
        if (nums) return jinja_float(as_double(a) * as_double(b));
        if ((a.type == JV_STR || a.type == JV_LIST) && (b.type == JV_INT || b.type == JV_BOOL))
            return repeat(r, line, a, as_i64(b));
        if ((b.type == JV_STR || b.type == JV_LIST) && (a.type == JV_INT || a.type == JV_BOOL))
            return repeat(r, line, b, as_i64(a));
        break;
    case OP_DIV:
        if (nums) {
            if (as_double(b) == 0.0) jinja_rfail(r, line, "division by zero");
            return jinja_float(as_double(a) / as_double(b));
        }
        break;
    case OP_FLOORDIV:
    case OP_MOD:
        if (a.type == JV_STR && op == OP_MOD)
            jinja_rfail(r, line, "printf-style string formatting with %% is not supported");
        if (nums && as_double(b) == 0.0) jinja_rfail(r, line, "integer division or modulo by zero");
        if (ints) {
            if (x == INT64_MIN && y == -1) jinja_rfail(r, line, "integer result exceeds 64 bits");
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) {
                q--;
                m += y;
            }
            return jinja_int(op == OP_MOD ? m : q);
        }
        if (nums) {
            double d, m = py_fmod(as_double(a), as_double(b), &d);
            return jinja_float(op == OP_MOD ? m : d);
        }
        break;
    case OP_POW:
        if (ints && y >= 0) {
            int64_t acc = 1, base = x;
            bool of = false;
            for (int64_t e = y; e > 0 && !of; e >>= 1) {
                if (e & 1) of |= __builtin_mul_overflow(acc, base, &acc);
                if (e > 1) of |= __builtin_mul_overflow(base, base, &base);
            }
            return int_result(r, line, of, acc);
        }
        if (nums) {
            if (as_double(a) == 0.0 && as_double(b) < 0)
                jinja_rfail(r, line, "0.0 cannot be raised to a negative power");
            return jinja_float(pow(as_double(a), as_double(b)));
        }
        break;
    }
    operand_error(r, line, op, a, b);
}

static bool contains(struct jinja_render *r, int line, struct jinja_val item,
                     struct jinja_val seq) {
    switch (seq.type) {
    case JV_STR:
        if (item.type != JV_STR)
            jinja_rfail(r, line, "'in <string>' requires string as left operand, not %s",
                        jinja_type_name(item));
        return item.u.s->len == 0 || memmem(seq.u.s->s, seq.u.s->len, item.u.s->s, item.u.s->len);
    case JV_LIST:
        for (size_t i = 0; i < seq.u.l->n; i++)
            if (jinja_equal(&r->fail, seq.u.l->v[i], item)) return true;
        return false;
    case JV_DICT:
        return jinja_dict_find(&r->fail, seq.u.d, jinja_hashable(r, line, item)) >= 0;
    case JV_UNDEF:
        return false; /* iterating Undefined yields nothing */
    default:
        jinja_rfail(r, line, "argument of type '%s' is not iterable", jinja_type_name(seq));
    }
}

static bool compare(struct jinja_render *r, int line, int op, struct jinja_val a,
                    struct jinja_val b) {
    switch (op) {
    case OP_EQ:
        return jinja_equal(&r->fail, a, b);
    case OP_NE:
        return !jinja_equal(&r->fail, a, b);
    case OP_IN:
        return contains(r, line, a, b);
    case OP_NOTIN:
        return !contains(r, line, a, b);
    }
    int c = jinja_compare(r, line, a, b);
    switch (op) {
    case OP_LT:
        return c < 0;
    case OP_LE:
        return c <= 0;
    case OP_GT:
        return c > 0;
    default:
        return c >= 0;
    }
}

/* ---- expressions ------------------------------------------------------------------------------
 */

static struct jinja_val eval_node(struct jinja_render *r, struct jinja_scope *s,
                                  const struct jinja_node *n) {
    switch (n->kind) {
    case JN_CONST:
        return n->val;
    case JN_NAME:
        return lookup(r, s, n->name);
    case JN_LIST:
    case JN_TUPLE: {
        struct jinja_val l = jinja_list(&r->arena, (size_t)n->n_args);
        l.tuple = n->kind == JN_TUPLE;
        for (int i = 0; i < n->n_args; i++) l.u.l->v[i] = jinja_eval(r, s, n->args[i]);
        return l;
    }
    case JN_DICT: {
        struct jinja_val d = jinja_dict(&r->arena);
        for (int i = 0; i < n->n_args; i++) {
            struct jinja_val k = jinja_hashable(r, n->line, jinja_eval(r, s, n->args[i]));
            jinja_dict_set(&r->arena, d.u.d, k, jinja_eval(r, s, n->kwvals[i]));
        }
        return d;
    }
    case JN_ATTR:
        return jinja_getattr(r, n->line, jinja_eval(r, s, n->a), n->name);
    case JN_ITEM: {
        struct jinja_val obj = jinja_eval(r, s, n->a);
        if (n->b->kind == JN_SLICE) return eval_slice(r, s, obj, n->b);
        return jinja_getitem(r, n->line, obj, jinja_eval(r, s, n->b));
    }
    case JN_CALL: {
        struct jinja_val callee = jinja_eval(r, s, n->a);
        struct jinja_args args;
        eval_args(r, s, n, &args);
        return jinja_call_value(r, n->line, callee, &args);
    }
    case JN_FILTER: {
        struct jinja_val v = jinja_eval(r, s, n->a);
        struct jinja_args args;
        eval_args(r, s, n, &args);
        return jinja_filter(r, n->line, n->fn, v, &args);
    }
    case JN_TEST: {
        struct jinja_val v = jinja_eval(r, s, n->a);
        struct jinja_args args;
        eval_args(r, s, n, &args);
        bool t = jinja_test(r, n->line, n->fn, v, &args);
        return jinja_bool(n->op ? !t : t);
    }
    case JN_NOT:
        return jinja_bool(!jinja_truthy(jinja_eval(r, s, n->a)));
    case JN_NEG:
    case JN_POS: {
        struct jinja_val v = jinja_eval(r, s, n->a);
        if (v.type == JV_UNDEF) undefined_error(r, n->line, v);
        if (!is_num(v))
            jinja_rfail(r, n->line, "bad operand type for unary %c: '%s'",
                        n->kind == JN_NEG ? '-' : '+', jinja_type_name(v));
        if (n->kind == JN_POS) return v.type == JV_BOOL ? jinja_int(v.u.b) : v;
        if (v.type == JV_FLOAT) return jinja_float(-v.u.f);
        if (as_i64(v) == INT64_MIN) jinja_rfail(r, n->line, "integer result exceeds 64 bits");
        return jinja_int(-as_i64(v));
    }
    case JN_BINOP:
        return binop(r, n->line, n->op, jinja_eval(r, s, n->a), jinja_eval(r, s, n->b));
    case JN_AND: {
        struct jinja_val a = jinja_eval(r, s, n->a);
        return jinja_truthy(a) ? jinja_eval(r, s, n->b) : a;
    }
    case JN_OR: {
        struct jinja_val a = jinja_eval(r, s, n->a);
        return jinja_truthy(a) ? a : jinja_eval(r, s, n->b);
    }
    case JN_COMPARE: {
        struct jinja_val left = jinja_eval(r, s, n->a);
        for (int i = 0; i < n->n_args; i++) {
            struct jinja_val right = jinja_eval(r, s, n->args[i]);
            if (!compare(r, n->line, n->ops[i], left, right)) return jinja_bool(false);
            left = right;
        }
        return jinja_bool(true);
    }
    case JN_COND:
        if (jinja_truthy(jinja_eval(r, s, n->a))) return jinja_eval(r, s, n->b);
        return n->c ? jinja_eval(r, s, n->c) : jinja_undef("the condition was false");
    case JN_CONCAT: {
        struct jinja_buf b = {0};
        for (int i = 0; i < n->n_args; i++) jinja_put_str(r, &b, jinja_eval(r, s, n->args[i]));
        return jinja_str(&r->arena, b.p ? b.p : "", b.len);
    }
    default:
        jinja_rfail(r, n->line, "internal error: statement node in an expression");
    }
}

/* ---- statements -------------------------------------------------------------------------------
 */

static void assign(struct jinja_render *r, struct jinja_scope *s, const struct jinja_node *n,
                   struct jinja_val v) {
    if (!n->op) {
        scope_set(r, s, n->names[0], v);
        return;
    }
    const struct jinja_list *items = jinja_iterate(r, n->line, v);
    if ((int)items->n != n->n_names)
        jinja_rfail(r, n->line, "%s values to unpack (expected %d, got %zu)",
                    (int)items->n > n->n_names ? "too many" : "not enough", n->n_names, items->n);
    for (int i = 0; i < n->n_names; i++) scope_set(r, s, n->names[i], items->v[i]);
}

/* An empty scope under parent for the next iteration: the last one emptied, unless a macro
 * defined in it still refers to it. Keeps long loops from allocating per iteration. */
static struct jinja_scope *fresh_scope(struct jinja_render *r, struct jinja_scope *last,
                                       struct jinja_scope *parent) {
    if (!last || last->captured) return scope_new(r, parent);
    last->n = 0;
    return last;
}

static int exec_for(struct jinja_render *r, struct jinja_scope *s, const struct jinja_node *n) {
    const struct jinja_list *items = jinja_iterate(r, n->line, jinja_eval(r, s, n->a));
    if (n->d) { /* {% for x in xs if cond %}: filter first, so loop.length counts kept items */
        struct jinja_val kept = jinja_list(&r->arena, items->n);
        size_t k = 0;
        struct jinja_scope *it = NULL;
        for (size_t i = 0; i < items->n; i++) {
            jinja_step(r, n->line);
            it = fresh_scope(r, it, s);
            assign(r, it, n, items->v[i]);
            if (jinja_truthy(jinja_eval(r, it, n->d))) kept.u.l->v[k++] = items->v[i];
        }
        kept.u.l->n = k;
        items = kept.u.l;
    }
    if (!items->n) return n->c ? exec(r, s, n->c) : FLOW_NEXT;
    struct jinja_loop *loop = jinja_alloc(&r->arena, sizeof *loop);
    loop->length = (int64_t)items->n;
    loop->items = items;
    loop->depth0 = 0; /* only recursive loops (unsupported) go deeper */
    struct jinja_scope *it = NULL;
    for (size_t i = 0; i < items->n; i++) {
        jinja_step(r, n->line);
        loop->index0 = (int64_t)i;
        it = fresh_scope(r, it, s);
        assign(r, it, n, items->v[i]);
        scope_set(r, it, "loop", (struct jinja_val){.type = JV_LOOP, .u.loop = loop});
        if (exec(r, it, n->b) == FLOW_BREAK) break;
    }
    return FLOW_NEXT;
}

static int exec_node(struct jinja_render *r, struct jinja_scope *s, const struct jinja_node *n) {
    jinja_step(r, n->line);
    switch (n->kind) {
    case JN_BODY:
        for (int i = 0; i < n->n_args; i++) {
            int f = exec(r, s, n->args[i]);
            if (f != FLOW_NEXT) return f;
        }
        return FLOW_NEXT;
    case JN_TEXT:
        jinja_buf_put(&r->arena, r->out, n->val.u.s->s, n->val.u.s->len);
        check_output(r, n->line);
        return FLOW_NEXT;
    case JN_OUTPUT:
        jinja_put_str(r, r->out, jinja_eval(r, s, n->a));
        check_output(r, n->line);
        return FLOW_NEXT;
    case JN_IF:
        if (jinja_truthy(jinja_eval(r, s, n->a))) return exec(r, s, n->b);
        return n->c ? exec(r, s, n->c) : FLOW_NEXT;
    case JN_FOR:
        return exec_for(r, s, n);
    case JN_SET:
        if (n->attr) {
            struct jinja_val ns = lookup(r, s, n->name);
            if (ns.type != JV_NS)
                jinja_rfail(r, n->line, "cannot assign attribute on non-namespace object '%s'",
                            n->name);
            jinja_dict_set(&r->arena, ns.u.d, jinja_cstr(&r->arena, n->attr),
                           jinja_eval(r, s, n->b));
        } else {
            assign(r, s, n, jinja_eval(r, s, n->b));
        }
        return FLOW_NEXT;
    case JN_SET_BLOCK:
        scope_set(r, s, n->name, capture(r, s, n->b));
        return FLOW_NEXT;
    case JN_MACRO: {
        struct jinja_macro *m = jinja_alloc(&r->arena, sizeof *m);
        m->def = n;
        m->closure = s;
        for (struct jinja_scope *x = s; x; x = x->parent) x->captured = true;
        scope_set(r, s, n->name, (struct jinja_val){.type = JV_MACRO, .u.macro = m});
        return FLOW_NEXT;
    }
    case JN_BREAK:
        return FLOW_BREAK;
    case JN_CONTINUE:
        return FLOW_CONTINUE;
    default:
        jinja_rfail(r, n->line, "internal error: expression node as a statement");
    }
}

static void enter(struct jinja_render *r, int line) {
    if (++r->eval_depth > JINJA_MAX_EVAL_DEPTH)
        jinja_rfail(r, line,
                    "template nests (expressions, blocks and macro calls together) "
                    "deeper than %d levels",
                    JINJA_MAX_EVAL_DEPTH);
}

struct jinja_val jinja_eval(struct jinja_render *r, struct jinja_scope *s,
                            const struct jinja_node *n) {
    enter(r, n->line);
    struct jinja_val v = eval_node(r, s, n);
    r->eval_depth--;
    return v;
}

static int exec(struct jinja_render *r, struct jinja_scope *s, const struct jinja_node *n) {
    enter(r, n->line);
    int flow = exec_node(r, s, n);
    r->eval_depth--;
    return flow;
}

void jinja_exec_root(struct jinja_render *r, const struct jinja_node *root) {
    exec(r, scope_new(r, r->globals), root);
}
