/* jinja: the public entry points (parse, render, free), the arena every jinja_*.c allocates
 * from, and the longjmp-based error path. The other files of the module are described in
 * jinja_impl.h. A template is read-only after parsing; each render has its own arena, so
 * renders of one template may run in parallel. */
#include "jinja_impl.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JINJA_CHUNK_BYTES        ((size_t)64 << 10)
#define JINJA_SOURCE_MAX_BYTES   ((size_t)4 << 20)
#define JINJA_PARSE_MEMORY_BYTES ((size_t)256 << 20)
#define JINJA_DEFAULT_OUTPUT     ((size_t)64 << 20)
#define JINJA_DEFAULT_MEMORY     ((size_t)512 << 20)
#define JINJA_DEFAULT_STEPS      50000000LL
#define JINJA_DEFAULT_DEPTH      64

struct jinja_chunk {
    struct jinja_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

_Noreturn void jinja_fail(struct jinja_fail *f, enum tl_status s, const char *fmt, ...) {
    if (f->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->err->msg, sizeof f->err->msg, fmt, ap);
        va_end(ap);
    }
    f->status = s;
    longjmp(f->jb, 1);
}

void *jinja_alloc(struct jinja_arena *a, size_t n_bytes) {
    n_bytes = (n_bytes + 15) & ~(size_t)15;
    if (n_bytes == 0) n_bytes = 16;
    struct jinja_chunk *c = a->chunks;
    if (!c || c->cap - c->used < n_bytes) {
        size_t cap = n_bytes > JINJA_CHUNK_BYTES ? n_bytes : JINJA_CHUNK_BYTES;
        if (cap > a->limit_bytes || a->used_bytes > a->limit_bytes - cap)
            jinja_fail(a->fail, TL_ERR_NOMEM, "template needs more than %zu MiB of memory",
                       a->limit_bytes >> 20);
        c = malloc(sizeof *c + cap);
        if (!c) jinja_fail(a->fail, TL_ERR_NOMEM, "out of memory rendering the template");
        c->used = 0;
        c->cap = cap;
        a->used_bytes += cap;
        /* a big block gets its own chunk behind the current one, which stays in use */
        if (a->chunks && cap == n_bytes && a->chunks->cap - a->chunks->used >= 1024) {
            c->next = a->chunks->next;
            a->chunks->next = c;
        } else {
            c->next = a->chunks;
            a->chunks = c;
        }
    }
    void *p = c->data + c->used;
    c->used += n_bytes;
    memset(p, 0, n_bytes);
    return p;
}

void *jinja_alloc_array(struct jinja_arena *a, size_t n, size_t size) {
    if (size && n > SIZE_MAX / size)
        jinja_fail(a->fail, TL_ERR_NOMEM, "template allocation of %zu x %zu bytes overflows", n,
                   size);
    return jinja_alloc(a, n * size);
}

void jinja_arena_free(struct jinja_arena *a) {
    struct jinja_chunk *c = a->chunks;
    while (c) {
        struct jinja_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->chunks = NULL;
    a->used_bytes = 0;
}

void jinja_buf_put(struct jinja_arena *a, struct jinja_buf *b, const void *s, size_t n) {
    if (n == 0) return;
    if (b->cap - b->len <= n) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->len <= n) {
            if (cap > SIZE_MAX / 2)
                jinja_fail(a->fail, TL_ERR_NOMEM, "template output buffer overflows");
            cap *= 2;
        }
        char *p = jinja_alloc(a, cap);
        if (b->len) memcpy(p, b->p, b->len);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void jinja_buf_putc(struct jinja_arena *a, struct jinja_buf *b, char c) {
    jinja_buf_put(a, b, &c, 1);
}

void jinja_buf_printf(struct jinja_arena *a, struct jinja_buf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        jinja_buf_put(a, b, tmp, (size_t)n);
        return;
    }
    char *big = jinja_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    jinja_buf_put(a, b, big, (size_t)n);
}

enum tl_status jinja_template_parse(const char *source, size_t len, struct jinja_template **out,
                                    struct tl_err *err) {
    *out = NULL;
    if (!source) return tl_fail(err, TL_ERR_INVALID, "chat template: no source");
    if (len > JINJA_SOURCE_MAX_BYTES)
        return tl_fail(err, TL_ERR_UNSUPPORTED, "template is %zu bytes, more than the %zu we read",
                       len, JINJA_SOURCE_MAX_BYTES);
    if (!jinja_utf8_valid(source, len))
        return tl_fail(err, TL_ERR_FORMAT, "template is not valid UTF-8");
    struct jinja_template *t = calloc(1, sizeof *t);
    /* on the heap: its status is written between setjmp and longjmp */
    struct jinja_fail *fail = calloc(1, sizeof *fail);
    if (!t || !fail) {
        free(t);
        free(fail);
        return tl_fail(err, TL_ERR_NOMEM, "out of memory parsing the template");
    }
    fail->err = err;
    t->arena.limit_bytes = JINJA_PARSE_MEMORY_BYTES;
    t->arena.fail = fail;
    if (setjmp(fail->jb)) {
        enum tl_status s = fail->status;
        jinja_arena_free(&t->arena);
        free(t);
        free(fail);
        return s;
    }
    size_t n_toks = 0;
    struct jinja_tok *toks = jinja_lex(&t->arena, fail, source, len, &n_toks);
    t->root = jinja_parse(&t->arena, fail, toks, n_toks);
    t->arena.fail = NULL; /* nothing allocates from it after this */
    free(fail);
    *out = t;
    return TL_OK;
}

void jinja_template_free(struct jinja_template *t) {
    if (!t) return;
    jinja_arena_free(&t->arena);
    free(t);
}

_Noreturn void jinja_rfail(struct jinja_render *r, int line, const char *fmt, ...) {
    char msg[TL_ERR_MSG_MAX - 32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jinja_fail(&r->fail, TL_ERR_INVALID, "template line %d: %s", line, msg);
}

/* Copies the object's members into the global scope (vars may be NULL). */
static void bind_globals(struct jinja_render *r, const json_t *vars) {
    struct jinja_scope *g = jinja_alloc(&r->arena, sizeof *g);
    r->globals = g;
    if (!vars) return;
    if (!json_is_object(vars))
        jinja_fail(&r->fail, TL_ERR_INVALID, "template variables must be a JSON object");
    size_t n = json_object_size(vars);
    g->names = jinja_alloc_array(&r->arena, n ? n : 1, sizeof *g->names);
    g->vals = jinja_alloc_array(&r->arena, n ? n : 1, sizeof *g->vals);
    g->cap = n;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)vars, key, val) {
        g->names[g->n] = key; /* borrowed: vars outlives the render */
        g->vals[g->n] = jinja_from_json(&r->arena, val);
        g->n++;
    }
}

enum tl_status jinja_template_render(const struct jinja_template *t, const struct json_t *vars,
                                     const struct jinja_limits *limits, char **text, size_t *len,
                                     struct tl_err *err) {
    *text = NULL;
    if (len) *len = 0;
    if (!t) return tl_fail(err, TL_ERR_INVALID, "no template to render");
    struct jinja_limits lim = limits ? *limits : (struct jinja_limits){0};
    /* volatile: read after longjmp */
    struct jinja_render *volatile r = calloc(1, sizeof *r);
    if (!r) return tl_fail(err, TL_ERR_NOMEM, "out of memory rendering the template");
    r->fail.err = err;
    r->arena.fail = &r->fail;
    r->arena.limit_bytes = lim.max_memory_bytes ? lim.max_memory_bytes : JINJA_DEFAULT_MEMORY;
    r->max_output_bytes = lim.max_output_bytes ? lim.max_output_bytes : JINJA_DEFAULT_OUTPUT;
    r->max_steps = lim.max_steps > 0 ? lim.max_steps : JINJA_DEFAULT_STEPS;
    r->max_call_depth = lim.max_call_depth > 0 ? lim.max_call_depth : JINJA_DEFAULT_DEPTH;
    r->now = lim.now ? lim.now : time(NULL);
    if (setjmp(r->fail.jb)) {
        enum tl_status s = r->fail.status;
        jinja_arena_free(&r->arena);
        free(r);
        return s;
    }
    bind_globals(r, (const json_t *)vars);
    struct jinja_buf *out = jinja_alloc(&r->arena, sizeof *out);
    r->out = out;
    jinja_exec_root(r, t->root);
    char *res = malloc(out->len + 1);
    if (!res) jinja_fail(&r->fail, TL_ERR_NOMEM, "out of memory copying the rendered text");
    if (out->len) memcpy(res, out->p, out->len);
    res[out->len] = '\0';
    *text = res;
    if (len) *len = out->len;
    jinja_arena_free(&r->arena);
    free(r);
    return TL_OK;
}
