/* jinja_impl.h: what the files of the jinja module share (jinja.c: arena, errors and the public
 * entry points; jinja_lex.c: source to tokens; jinja_parse.c: tokens to a syntax tree;
 * jinja_value.c: values and Python's str/repr/==/< on them; jinja_eval.c: the interpreter;
 * jinja_builtins.c: filters, tests and globals; jinja_strings.c: str and dict methods). Not
 * for use outside the module.
 *
 * Memory: a parsed template lives in one arena owned by the template; a render allocates
 * every value in its own arena, freed whole when the render returns. Values are immutable
 * once built (HF renders in an immutable sandbox), except namespaces, so they are shared
 * freely. Errors unwind with longjmp to the one entry point that set the jump buffer; since
 * everything lives in an arena, nothing leaks on the way. */
#ifndef TL_JINJA_IMPL_H
#define TL_JINJA_IMPL_H

#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>

#include "jinja.h"

/* ---- errors and memory ---------------------------------------------------------------- */

struct jinja_fail {
    jmp_buf jb;
    struct tl_err *err;
    enum tl_status status;
};

/* Formats the message into f->err and jumps back to the entry point with status s. */
_Noreturn void jinja_fail(struct jinja_fail *f, enum tl_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

struct jinja_chunk;
struct jinja_arena {
    struct jinja_chunk *chunks; /* owned */
    size_t used_bytes, limit_bytes;
    struct jinja_fail *fail; /* where running out of limit_bytes jumps (borrowed) */
};

/* Zeroed, 16-byte aligned; past limit_bytes it fails with TL_ERR_NOMEM. */
void *jinja_alloc(struct jinja_arena *a, size_t n_bytes);
/* n * size with overflow check. */
void *jinja_alloc_array(struct jinja_arena *a, size_t n, size_t size);
void jinja_arena_free(struct jinja_arena *a);

/* A growable byte buffer inside an arena (growth copies; the old block is left to the arena). */
struct jinja_buf {
    char *p;
    size_t len, cap;
};
void jinja_buf_put(struct jinja_arena *a, struct jinja_buf *b, const void *s, size_t n);
void jinja_buf_putc(struct jinja_arena *a, struct jinja_buf *b, char c);
void jinja_buf_printf(struct jinja_arena *a, struct jinja_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- values --------------------------------------------------------------------------- */

/* Recursion caps: nested values (comparing, printing, tojson, JSON input) and nested
 * evaluation (expressions, statements and macro calls together), so no template can exhaust
 * the C stack. Python itself stops near 1000 levels. */
#define JINJA_MAX_VALUE_DEPTH 500
#define JINJA_MAX_EVAL_DEPTH  2000

enum jinja_vtype {
    JV_UNDEF, /* Jinja's default Undefined: falsy, renders "", most operations raise */
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STR,
    JV_LIST,   /* lists and tuples */
    JV_DICT,   /* insertion-ordered, like Python's */
    JV_NS,     /* namespace(): the one mutable object */
    JV_LOOP,   /* a for loop's `loop` */
    JV_FUNC,   /* a global function: range, namespace, raise_exception, ... */
    JV_MACRO,  /* a {% macro %} with the scope it was defined in */
    JV_METHOD, /* a method bound to its object: 'a b'.split */
};

struct jinja_str {
    size_t len;
    char s[]; /* UTF-8, NUL-terminated */
};

struct jinja_val {
    uint8_t type;  /* enum jinja_vtype */
    uint8_t tuple; /* JV_LIST: a tuple (renders with parentheses) */
    union {
        bool b;
        int64_t i;
        double f;
        const struct jinja_str *s;
        struct jinja_list *l;
        struct jinja_dict *d; /* JV_DICT and JV_NS */
        struct jinja_loop *loop;
        int fn;
        struct jinja_macro *macro;
        struct jinja_method *m;
        const char *undef; /* JV_UNDEF: what is missing, for the message (may be NULL) */
    } u;
};

struct jinja_list {
    size_t n;
    struct jinja_val *v;
};

struct jinja_dict {
    size_t n, cap;
    struct jinja_val *keys, *vals;
};

struct jinja_loop {
    int64_t index0, length;
    int depth0;
    const struct jinja_list *items; /* for previtem / nextitem */
};

struct jinja_method {
    int id; /* enum in jinja_builtins.c */
    struct jinja_val self;
};

struct jinja_scope;
struct jinja_macro {
    const struct jinja_node *def;
    struct jinja_scope *closure;
};

/* ---- tokens ----------------------------------------------------------------------------- */

enum jinja_tok_type {
    TK_TEXT,
    TK_VAR_BEGIN,
    TK_VAR_END,
    TK_BLOCK_BEGIN,
    TK_BLOCK_END,
    TK_NAME,
    TK_STRING,
    TK_INT,
    TK_FLOAT,
    TK_OP,
    TK_EOF,
};

enum jinja_op {
    OP_NONE,
    OP_ADD,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_FLOORDIV,
    OP_MOD,
    OP_POW,
    OP_TILDE,
    OP_LBRACKET,
    OP_RBRACKET,
    OP_LPAREN,
    OP_RPAREN,
    OP_LBRACE,
    OP_RBRACE,
    OP_EQ,
    OP_NE,
    OP_LT,
    OP_LE,
    OP_GT,
    OP_GE,
    OP_ASSIGN,
    OP_DOT,
    OP_COLON,
    OP_PIPE,
    OP_COMMA,
    OP_SEMICOLON,
    OP_IN,    /* compare nodes only */
    OP_NOTIN, /* compare nodes only */
};

struct jinja_tok {
    uint8_t type; /* enum jinja_tok_type */
    uint8_t op;   /* TK_OP: enum jinja_op */
    int line;
    const char *name;            /* TK_NAME (NUL-terminated, in the template arena) */
    const struct jinja_str *str; /* TK_TEXT, TK_STRING */
    int64_t i;                   /* TK_INT */
    double f;                    /* TK_FLOAT */
};

/* Tokenizes with HF's settings (trim_blocks, lstrip_blocks); TK_EOF ends the array. */
struct jinja_tok *jinja_lex(struct jinja_arena *a, struct jinja_fail *f, const char *src,
                            size_t len, size_t *n_toks);

/* ---- syntax tree ------------------------------------------------------------------------ */

enum jinja_nkind {
    /* expressions */
    JN_CONST,   /* val */
    JN_NAME,    /* name */
    JN_LIST,    /* args */
    JN_TUPLE,   /* args */
    JN_DICT,    /* args = keys, kwvals = values */
    JN_ATTR,    /* a.name */
    JN_ITEM,    /* a[b] */
    JN_SLICE,   /* a:b:c, each may be NULL */
    JN_CALL,    /* a(args, kw): fn = global, method (a is JN_ATTR) or -1 for a macro */
    JN_FILTER,  /* a | name(args, kw): fn = filter */
    JN_TEST,    /* a is [not] name(args): fn = test, op = negated */
    JN_NOT,     /* not a */
    JN_NEG,     /* -a */
    JN_POS,     /* +a */
    JN_BINOP,   /* a op b, op in + - * / // % ** */
    JN_AND,     /* a and b */
    JN_OR,      /* a or b */
    JN_COMPARE, /* a ops[0] args[0] ops[1] args[1] ... */
    JN_COND,    /* b if a else c */
    JN_CONCAT,  /* args[0] ~ args[1] ~ ... */
    /* statements */
    JN_TEXT,      /* val: template text */
    JN_OUTPUT,    /* {{ a }} */
    JN_IF,        /* if a: b else c (c is a JN_IF for elif) */
    JN_FOR,       /* for names in a [if d]: b else c */
    JN_SET,       /* names = b, or name.attr = b */
    JN_SET_BLOCK, /* {% set name %}b{% endset %} */
    JN_MACRO,     /* macro name(names = kwvals defaults): b */
    JN_BREAK,
    JN_CONTINUE,
    JN_BODY, /* args: statements */
};

struct jinja_node {
    uint8_t kind; /* enum jinja_nkind */
    uint8_t op;
    int line;
    int fn;
    const char *name;
    const char *attr; /* JN_SET on a namespace attribute */
    struct jinja_node *a, *b, *c, *d;
    struct jinja_node **args;
    int n_args;
    struct jinja_node **kwvals;
    const char **kwnames;
    int n_kw;
    const char **names; /* JN_FOR / JN_SET targets, JN_MACRO parameters */
    int n_names;
    uint8_t *ops; /* JN_COMPARE */
    struct jinja_val val;
};

struct jinja_template {
    struct jinja_arena arena; /* owns every node, token and constant */
    struct jinja_node *root;  /* JN_BODY */
};

struct jinja_node *jinja_parse(struct jinja_arena *a, struct jinja_fail *f,
                               const struct jinja_tok *toks, size_t n_toks);

/* ---- rendering ---------------------------------------------------------------------------- */

struct jinja_scope {
    struct jinja_scope *parent;
    bool captured; /* a macro closes over it: a loop may not recycle it */
    size_t n, cap;
    const char **names;
    struct jinja_val *vals;
};

struct jinja_render {
    struct jinja_fail fail;
    struct jinja_arena arena;
    struct jinja_buf *out; /* where text goes now: the result, or a macro's or set block's */
    size_t max_output_bytes;
    long long steps, max_steps;
    int call_depth, max_call_depth;
    int eval_depth; /* nested jinja_eval / statement calls, capped at JINJA_MAX_EVAL_DEPTH */
    time_t now;
    struct jinja_scope *globals;
};

/* Evaluated call arguments. */
struct jinja_args {
    int n;
    struct jinja_val *v;
    int n_kw;
    const char **kw;
    struct jinja_val *kwv;
};

_Noreturn void jinja_rfail(struct jinja_render *r, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* jinja_value.c */
struct jinja_val jinja_undef(const char *hint);
struct jinja_val jinja_none(void);
struct jinja_val jinja_bool(bool b);
struct jinja_val jinja_int(int64_t i);
struct jinja_val jinja_float(double f);
struct jinja_val jinja_str(struct jinja_arena *a, const char *s, size_t n);
struct jinja_val jinja_cstr(struct jinja_arena *a, const char *s);
struct jinja_val jinja_list(struct jinja_arena *a, size_t n); /* items zeroed (undefined) */
struct jinja_val jinja_dict(struct jinja_arena *a);
void jinja_dict_set(struct jinja_arena *a, struct jinja_dict *d, struct jinja_val k,
                    struct jinja_val v);
/* Index of key k in d, or -1. */
long jinja_dict_find(struct jinja_fail *f, const struct jinja_dict *d, struct jinja_val k);
long jinja_dict_find_str(const struct jinja_dict *d, const char *k);

bool jinja_truthy(struct jinja_val v);
/* Python's ==; f is where comparing absurdly deep values fails. */
bool jinja_equal(struct jinja_fail *f, struct jinja_val a, struct jinja_val b);
/* Python's a < b as -1/0/1; a TypeError for unorderable types. */
int jinja_compare(struct jinja_render *r, int line, struct jinja_val a, struct jinja_val b);
const char *jinja_type_name(struct jinja_val v);
/* v when it may be a dict key; a TypeError for lists, dicts and namespaces, as in Python. */
struct jinja_val jinja_hashable(struct jinja_render *r, int line, struct jinja_val v);
/* str(v) ("" for undefined), and repr-style rendering of containers. */
const struct jinja_str *jinja_to_str(struct jinja_render *r, struct jinja_val v);
void jinja_put_str(struct jinja_render *r, struct jinja_buf *b, struct jinja_val v);
struct jinja_val jinja_from_json(struct jinja_arena *a, const struct json_t *j);
/* dict.items(): a list of (key, value) tuples. */
struct jinja_val jinja_dict_items(struct jinja_render *r, const struct jinja_dict *d);
/* HF's tojson: json.dumps(v, ensure_ascii, indent, separators, sort_keys). indent < 0: none. */
void jinja_put_json(struct jinja_render *r, int line, struct jinja_buf *b, struct jinja_val v,
                    int indent, const char *item_sep, const char *key_sep, bool ensure_ascii,
                    bool sort_keys, int depth);
void jinja_put_float(struct jinja_arena *a, struct jinja_buf *b, double f);

/* UTF-8 helpers: strings are valid UTF-8 (JSON input and template source are checked). */
size_t jinja_utf8_next(const char *s, size_t n, size_t i, uint32_t *cp);
void jinja_utf8_put(struct jinja_arena *a, struct jinja_buf *b, uint32_t cp);
size_t jinja_utf8_count(const char *s, size_t n);
bool jinja_utf8_valid(const char *s, size_t n);
bool jinja_is_space(uint32_t cp); /* Python's str.isspace for one code point */

/* jinja_eval.c */
void jinja_exec_root(struct jinja_render *r, const struct jinja_node *root);
struct jinja_val jinja_eval(struct jinja_render *r, struct jinja_scope *s,
                            const struct jinja_node *n);
/* Python Jinja's environment.getattr(obj, name) and getitem(obj, key). */
struct jinja_val jinja_getattr(struct jinja_render *r, int line, struct jinja_val obj,
                               const char *name);
struct jinja_val jinja_getitem(struct jinja_render *r, int line, struct jinja_val obj,
                               struct jinja_val key);
/* Iterating: list(v) for the types Python can iterate (str, list, dict keys, undefined). */
const struct jinja_list *jinja_iterate(struct jinja_render *r, int line, struct jinja_val v);
struct jinja_val jinja_call_value(struct jinja_render *r, int line, struct jinja_val callee,
                                  struct jinja_args *args);
void jinja_step(struct jinja_render *r, int line);

/* jinja_builtins.c: ids for the parser (-1: unsupported), and the implementations. */
#define JINJA_MAX_PARAMS 6
/* Binds positional and keyword arguments to the n named parameters of `what`; has[i] tells
 * which were given. Too many or unknown arguments fail. */
void jinja_bind(struct jinja_render *r, int line, const char *what, struct jinja_args *args,
                const char *const *names, int n, struct jinja_val *out, bool *has);
const struct jinja_str *jinja_need_str(struct jinja_render *r, int line, struct jinja_val v,
                                       const char *what);
int64_t jinja_need_int(struct jinja_render *r, int line, struct jinja_val v, const char *what);
int jinja_filter_id(const char *name);
int jinja_test_id(const char *name);
int jinja_global_id(const char *name);
int jinja_method_id(const char *name);
/* The method id of attribute name on v, or -1 when v has no such method. */
int jinja_method_of(struct jinja_val v, const char *name);
struct jinja_val jinja_filter(struct jinja_render *r, int line, int id, struct jinja_val v,
                              struct jinja_args *args);
bool jinja_test(struct jinja_render *r, int line, int id, struct jinja_val v,
                struct jinja_args *args);
struct jinja_val jinja_call_global(struct jinja_render *r, int line, int id,
                                   struct jinja_args *args);
struct jinja_val jinja_call_method(struct jinja_render *r, int line, struct jinja_method *m,
                                   struct jinja_args *args);
const char *jinja_global_name(int id);

/* jinja_strings.c: str and dict methods, and the string helpers the filters share. */
enum {
    JINJA_CASE_UPPER,
    JINJA_CASE_LOWER,
    JINJA_CASE_TITLE,       /* str.title() */
    JINJA_CASE_CAPITALIZE,  /* str.capitalize() */
    JINJA_CASE_JINJA_TITLE, /* Jinja's title filter */
};
struct jinja_val jinja_change_case(struct jinja_render *r, const struct jinja_str *s, int how);
/* str.islower() (upper false) / str.isupper() (upper true). */
bool jinja_str_has_case(const struct jinja_str *s, bool upper);
/* str.strip / lstrip / rstrip; chars NULL strips whitespace. */
struct jinja_val jinja_strip(struct jinja_render *r, const struct jinja_str *s,
                             const struct jinja_str *chars, bool left, bool right);
/* The chars argument of strip: none and undefined mean whitespace (NULL). */
const struct jinja_str *jinja_strip_chars(struct jinja_render *r, int line, struct jinja_val v);
/* str.replace(old, new, count); count < 0 replaces all. */
struct jinja_val jinja_replace(struct jinja_render *r, const struct jinja_str *s,
                               const struct jinja_str *old, const struct jinja_str *new_,
                               int64_t count);

#endif
