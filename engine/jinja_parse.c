/* jinja_parse: tokens to a syntax tree, a recursive descent that follows Python Jinja's parser
 * (jinja2/parser.py) rule for rule, so precedence matches: conditional < or < and < not <
 * comparisons (chained, in, not in) < + - < ~ < * / // % < ** < unary - + < postfix (.attr,
 * [item], [a:b:c], calls) and filters/tests. It is also where unsupported constructs are
 * refused: every tag, filter, test, global function and method name is checked here, so a
 * template that loads can only fail at render time on values, never on a missing feature. */
#include "jinja_impl.h"

#include <stdio.h>
#include <string.h>

#define PARSE_MAX_DEPTH 200

struct nvec {
    struct jinja_node **v;
    int n, cap;
};

struct parser {
    struct jinja_arena *a;
    struct jinja_fail *f;
    const struct jinja_tok *t;
    size_t n, pos;
    int depth, loop_depth;
    const char **macros; /* names of {% macro %} definitions */
    int n_macros, cap_macros;
    struct nvec calls; /* calls of names that are no global: must be macros */
};

static void nvec_push(struct parser *P, struct nvec *v, struct jinja_node *x) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 4;
        struct jinja_node **p = jinja_alloc_array(P->a, (size_t)cap, sizeof *p);
        if (v->n) memcpy(p, v->v, (size_t)v->n * sizeof *p);
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}

static const struct jinja_tok *cur(struct parser *P) {
    return &P->t[P->pos];
}
static const struct jinja_tok *peek(struct parser *P, size_t k) {
    size_t i = P->pos + k;
    return &P->t[i < P->n ? i : P->n - 1];
}
static void next(struct parser *P) {
    if (P->pos + 1 < P->n) P->pos++;
}

static bool is_op(struct parser *P, int op) {
    return cur(P)->type == TK_OP && cur(P)->op == op;
}
static bool is_name(struct parser *P, const char *name) {
    return cur(P)->type == TK_NAME && strcmp(cur(P)->name, name) == 0;
}

static const char *op_text(int op) {
    static const char *const s[] = {
        "",   "+",  "-", "*",  "/", "//", "%", "**", "~", "[", "]", "(", ")",  "{",      "}",
        "==", "!=", "<", "<=", ">", ">=", "=", ".",  ":", "|", ",", ";", "in", "not in",
    };
    return op >= 0 && op < (int)(sizeof s / sizeof s[0]) ? s[op] : "?";
}

static const char *describe(struct parser *P, const struct jinja_tok *t) {
    static const char *const kinds[] = {"text",     "'{{'", "'}}'",           "'{%'",
                                        "'%}'",     "name", "a string",       "a number",
                                        "a number", "op",   "end of template"};
    if (t->type == TK_NAME) {
        struct jinja_buf b = {0};
        jinja_buf_printf(P->a, &b, "'%s'", t->name);
        return b.p;
    }
    if (t->type == TK_OP) {
        struct jinja_buf b = {0};
        jinja_buf_printf(P->a, &b, "'%s'", op_text(t->op));
        return b.p;
    }
    return kinds[t->type];
}

static _Noreturn void syntax(struct parser *P, const char *expected) {
    jinja_fail(P->f, TL_ERR_FORMAT, "template syntax error at line %d: expected %s, got %s",
               cur(P)->line, expected, describe(P, cur(P)));
}

static _Noreturn void unsupported(struct parser *P, int line, const char *what, const char *name) {
    jinja_fail(P->f, TL_ERR_UNSUPPORTED, "unsupported Jinja %s '%s' at line %d", what, name, line);
}

static void expect_op(struct parser *P, int op) {
    if (!is_op(P, op)) {
        char what[16];
        snprintf(what, sizeof what, "'%s'", op_text(op));
        syntax(P, what);
    }
    next(P);
}

static const char *expect_name(struct parser *P) {
    if (cur(P)->type != TK_NAME) syntax(P, "a name");
    const char *n = cur(P)->name;
    next(P);
    return n;
}

static void expect_block_end(struct parser *P) {
    if (cur(P)->type != TK_BLOCK_END) syntax(P, "'%}'");
    next(P);
}

static struct jinja_node *node(struct parser *P, int kind, int line) {
    struct jinja_node *n = jinja_alloc(P->a, sizeof *n);
    n->kind = (uint8_t)kind;
    n->line = line;
    n->fn = -1;
    return n;
}

static void enter(struct parser *P) {
    if (++P->depth > PARSE_MAX_DEPTH)
        jinja_fail(P->f, TL_ERR_UNSUPPORTED, "template nests deeper than %d at line %d",
                   PARSE_MAX_DEPTH, cur(P)->line);
}

/* ---- expressions ---------------------------------------------------------------------- */

static struct jinja_node *parse_expression(struct parser *P, bool with_condexpr);
static struct jinja_node *parse_unary(struct parser *P, bool with_filter);
static struct jinja_node *parse_primary(struct parser *P);
static struct jinja_node *parse_tuple(struct parser *P, bool with_condexpr, bool explicit_parens,
                                      const char *extra_end);

/* (args) after the '(' is current; fills n's positional and keyword arguments. */
static void parse_call_args(struct parser *P, struct jinja_node *n) {
    expect_op(P, OP_LPAREN);
    struct nvec args = {0}, kwv = {0};
    const char **kwn = NULL;
    int kw_cap = 0;
    bool comma = false;
    while (!is_op(P, OP_RPAREN)) {
        if (comma) {
            expect_op(P, OP_COMMA);
            if (is_op(P, OP_RPAREN)) break;
        }
        if (is_op(P, OP_MUL) || is_op(P, OP_POW))
            unsupported(P, cur(P)->line, "call syntax", is_op(P, OP_MUL) ? "*args" : "**kwargs");
        if (cur(P)->type == TK_NAME && peek(P, 1)->type == TK_OP && peek(P, 1)->op == OP_ASSIGN) {
            if (kwv.n == kw_cap) {
                kw_cap = kw_cap ? kw_cap * 2 : 4;
                const char **p = jinja_alloc_array(P->a, (size_t)kw_cap, sizeof *p);
                if (kwv.n) memcpy(p, kwn, (size_t)kwv.n * sizeof *p);
                kwn = p;
            }
            kwn[kwv.n] = cur(P)->name;
            next(P);
            next(P);
            nvec_push(P, &kwv, parse_expression(P, true));
        } else {
            if (kwv.n)
                jinja_fail(P->f, TL_ERR_FORMAT,
                           "template syntax error at line %d: positional argument after keyword "
                           "argument",
                           cur(P)->line);
            nvec_push(P, &args, parse_expression(P, true));
        }
        comma = true;
    }
    expect_op(P, OP_RPAREN);
    n->args = args.v;
    n->n_args = args.n;
    n->kwvals = kwv.v;
    n->kwnames = kwn;
    n->n_kw = kwv.n;
}

static struct jinja_node *parse_call(struct parser *P, struct jinja_node *callee) {
    struct jinja_node *n = node(P, JN_CALL, cur(P)->line);
    n->a = callee;
    parse_call_args(P, n);
    if (callee->kind == JN_NAME) {
        n->fn = jinja_global_id(callee->name);
        if (n->fn < 0) nvec_push(P, &P->calls, n); /* must be a macro: checked at the end */
    } else if (callee->kind == JN_ATTR) {
        n->fn = jinja_method_id(callee->name);
        if (n->fn < 0) unsupported(P, n->line, "method", callee->name);
    } else {
        unsupported(P, n->line, "call of", "an expression");
    }
    return n;
}

static struct jinja_node *parse_subscribed(struct parser *P) {
    int line = cur(P)->line;
    struct jinja_node *parts[3] = {NULL, NULL, NULL};
    if (is_op(P, OP_COLON)) {
        next(P);
    } else {
        struct jinja_node *e = parse_expression(P, true);
        if (!is_op(P, OP_COLON)) return e;
        next(P);
        parts[0] = e;
    }
    if (!is_op(P, OP_COLON) && !is_op(P, OP_RBRACKET) && !is_op(P, OP_COMMA))
        parts[1] = parse_expression(P, true);
    if (is_op(P, OP_COLON)) {
        next(P);
        if (!is_op(P, OP_RBRACKET) && !is_op(P, OP_COMMA)) parts[2] = parse_expression(P, true);
    }
    struct jinja_node *s = node(P, JN_SLICE, line);
    s->a = parts[0];
    s->b = parts[1];
    s->c = parts[2];
    return s;
}

static struct jinja_node *parse_postfix(struct parser *P, struct jinja_node *n) {
    for (;;) {
        int line = cur(P)->line;
        if (is_op(P, OP_DOT)) {
            next(P);
            if (cur(P)->type == TK_NAME) {
                struct jinja_node *g = node(P, JN_ATTR, line);
                g->a = n;
                g->name = expect_name(P);
                n = g;
            } else if (cur(P)->type == TK_INT) {
                struct jinja_node *k = node(P, JN_CONST, line);
                k->val = jinja_int(cur(P)->i);
                next(P);
                struct jinja_node *g = node(P, JN_ITEM, line);
                g->a = n;
                g->b = k;
                n = g;
            } else {
                syntax(P, "an attribute name");
            }
        } else if (is_op(P, OP_LBRACKET)) {
            next(P);
            struct jinja_node *key = parse_subscribed(P);
            if (is_op(P, OP_COMMA)) unsupported(P, line, "subscript", "a, b");
            expect_op(P, OP_RBRACKET);
            struct jinja_node *g = node(P, JN_ITEM, line);
            g->a = n;
            g->b = key;
            n = g;
        } else if (is_op(P, OP_LPAREN)) {
            n = parse_call(P, n);
        } else {
            return n;
        }
    }
}

static struct jinja_node *parse_filter(struct parser *P, struct jinja_node *operand) {
    next(P); /* '|' */
    int line = cur(P)->line;
    const char *name = expect_name(P);
    if (is_op(P, OP_DOT)) unsupported(P, line, "filter", name);
    struct jinja_node *n = node(P, JN_FILTER, line);
    n->a = operand;
    n->name = name;
    n->fn = jinja_filter_id(name);
    if (n->fn < 0) unsupported(P, line, "filter", name);
    if (is_op(P, OP_LPAREN)) parse_call_args(P, n);
    return n;
}

static struct jinja_node *parse_test(struct parser *P, struct jinja_node *operand) {
    next(P); /* 'is' */
    int line = cur(P)->line;
    bool negated = false;
    if (is_name(P, "not")) {
        next(P);
        negated = true;
    }
    const char *name = expect_name(P);
    struct jinja_node *n = node(P, JN_TEST, line);
    n->a = operand;
    n->name = name;
    n->op = negated;
    n->fn = jinja_test_id(name);
    if (n->fn < 0) unsupported(P, line, "test", name);
    const struct jinja_tok *t = cur(P);
    if (is_op(P, OP_LPAREN)) {
        parse_call_args(P, n);
    } else if ((t->type == TK_NAME || t->type == TK_STRING || t->type == TK_INT ||
                t->type == TK_FLOAT || is_op(P, OP_LBRACKET) || is_op(P, OP_LBRACE)) &&
               !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and")) {
        if (is_name(P, "is"))
            jinja_fail(P->f, TL_ERR_FORMAT,
                       "template syntax error at line %d: tests cannot be chained with 'is'", line);
        /* one bare argument: `x is divisibleby 3`, `x is equalto 'a'` */
        struct jinja_node *arg = parse_postfix(P, parse_primary(P));
        n->args = jinja_alloc(P->a, sizeof *n->args);
        n->args[0] = arg;
        n->n_args = 1;
    }
    return n;
}

static struct jinja_node *parse_filter_expr(struct parser *P, struct jinja_node *n) {
    for (;;) {
        if (is_op(P, OP_PIPE))
            n = parse_filter(P, n);
        else if (is_name(P, "is"))
            n = parse_test(P, n);
        else if (is_op(P, OP_LPAREN))
            n = parse_call(P, n);
        else
            return n;
    }
}

static struct jinja_node *parse_primary(struct parser *P) {
    const struct jinja_tok *t = cur(P);
    struct jinja_node *n = node(P, JN_CONST, t->line);
    switch (t->type) {
    case TK_NAME:
        if (!strcmp(t->name, "true") || !strcmp(t->name, "True"))
            n->val = jinja_bool(true);
        else if (!strcmp(t->name, "false") || !strcmp(t->name, "False"))
            n->val = jinja_bool(false);
        else if (!strcmp(t->name, "none") || !strcmp(t->name, "None"))
            n->val = jinja_none();
        else {
            n->kind = JN_NAME;
            n->name = t->name;
        }
        next(P);
        return n;
    case TK_STRING: {
        struct jinja_buf b = {0};
        while (cur(P)->type == TK_STRING) { /* adjacent literals concatenate */
            jinja_buf_put(P->a, &b, cur(P)->str->s, cur(P)->str->len);
            next(P);
        }
        n->val = jinja_str(P->a, b.p ? b.p : "", b.len);
        return n;
    }
    case TK_INT:
        n->val = jinja_int(t->i);
        next(P);
        return n;
    case TK_FLOAT:
        n->val = jinja_float(t->f);
        next(P);
        return n;
    case TK_OP:
        if (t->op == OP_LPAREN) {
            next(P);
            struct jinja_node *e = parse_tuple(P, true, true, NULL);
            expect_op(P, OP_RPAREN);
            return e;
        }
        if (t->op == OP_LBRACKET) {
            n->kind = JN_LIST;
            next(P);
            struct nvec items = {0};
            while (!is_op(P, OP_RBRACKET)) {
                if (items.n) expect_op(P, OP_COMMA);
                if (is_op(P, OP_RBRACKET)) break;
                nvec_push(P, &items, parse_expression(P, true));
            }
            expect_op(P, OP_RBRACKET);
            n->args = items.v;
            n->n_args = items.n;
            return n;
        }
        if (t->op == OP_LBRACE) {
            n->kind = JN_DICT;
            next(P);
            struct nvec keys = {0}, vals = {0};
            while (!is_op(P, OP_RBRACE)) {
                if (keys.n) expect_op(P, OP_COMMA);
                if (is_op(P, OP_RBRACE)) break;
                nvec_push(P, &keys, parse_expression(P, true));
                expect_op(P, OP_COLON);
                nvec_push(P, &vals, parse_expression(P, true));
            }
            expect_op(P, OP_RBRACE);
            n->args = keys.v;
            n->kwvals = vals.v;
            n->n_args = keys.n;
            return n;
        }
        break;
    default:
        break;
    }
    syntax(P, "an expression");
}

static struct jinja_node *parse_unary(struct parser *P, bool with_filter) {
    enter(P);
    int line = cur(P)->line;
    struct jinja_node *n;
    if (is_op(P, OP_SUB) || is_op(P, OP_ADD)) {
        int kind = is_op(P, OP_SUB) ? JN_NEG : JN_POS;
        next(P);
        n = node(P, kind, line);
        n->a = parse_unary(P, false);
    } else {
        n = parse_primary(P);
    }
    n = parse_postfix(P, n);
    if (with_filter) n = parse_filter_expr(P, n);
    P->depth--;
    return n;
}

static struct jinja_node *binop(struct parser *P, int op, int line, struct jinja_node *a,
                                struct jinja_node *b) {
    struct jinja_node *n = node(P, JN_BINOP, line);
    n->op = (uint8_t)op;
    n->a = a;
    n->b = b;
    return n;
}

static struct jinja_node *parse_pow(struct parser *P) {
    struct jinja_node *left = parse_unary(P, true);
    while (is_op(P, OP_POW)) {
        int line = cur(P)->line;
        next(P);
        left = binop(P, OP_POW, line, left, parse_unary(P, true));
    }
    return left;
}

static struct jinja_node *parse_math2(struct parser *P) {
    struct jinja_node *left = parse_pow(P);
    while (is_op(P, OP_MUL) || is_op(P, OP_DIV) || is_op(P, OP_FLOORDIV) || is_op(P, OP_MOD)) {
        int op = cur(P)->op, line = cur(P)->line;
        next(P);
        left = binop(P, op, line, left, parse_pow(P));
    }
    return left;
}

static struct jinja_node *parse_concat(struct parser *P) {
    int line = cur(P)->line;
    struct jinja_node *first = parse_math2(P);
    if (!is_op(P, OP_TILDE)) return first;
    struct nvec parts = {0};
    nvec_push(P, &parts, first);
    while (is_op(P, OP_TILDE)) {
        next(P);
        nvec_push(P, &parts, parse_math2(P));
    }
    struct jinja_node *n = node(P, JN_CONCAT, line);
    n->args = parts.v;
    n->n_args = parts.n;
    return n;
}

static struct jinja_node *parse_math1(struct parser *P) {
    struct jinja_node *left = parse_concat(P);
    while (is_op(P, OP_ADD) || is_op(P, OP_SUB)) {
        int op = cur(P)->op, line = cur(P)->line;
        next(P);
        left = binop(P, op, line, left, parse_concat(P));
    }
    return left;
}

static struct jinja_node *parse_compare(struct parser *P) {
    int line = cur(P)->line;
    struct jinja_node *first = parse_math1(P);
    struct nvec operands = {0};
    uint8_t ops_buf[64];
    int n_ops = 0;
    for (;;) {
        int op;
        const struct jinja_tok *t = cur(P);
        if (t->type == TK_OP && t->op >= OP_EQ && t->op <= OP_GE) {
            op = t->op;
            next(P);
        } else if (is_name(P, "in")) {
            op = OP_IN;
            next(P);
        } else if (is_name(P, "not") && peek(P, 1)->type == TK_NAME &&
                   !strcmp(peek(P, 1)->name, "in")) {
            op = OP_NOTIN;
            next(P);
            next(P);
        } else {
            break;
        }
        if (n_ops == (int)sizeof ops_buf)
            unsupported(P, line, "comparison chain", "longer than 64");
        ops_buf[n_ops++] = (uint8_t)op;
        nvec_push(P, &operands, parse_math1(P));
    }
    if (!n_ops) return first;
    struct jinja_node *n = node(P, JN_COMPARE, line);
    n->a = first;
    n->args = operands.v;
    n->n_args = operands.n;
    n->ops = jinja_alloc(P->a, (size_t)n_ops);
    memcpy(n->ops, ops_buf, (size_t)n_ops);
    return n;
}

static struct jinja_node *parse_not(struct parser *P) {
    if (is_name(P, "not")) {
        enter(P);
        struct jinja_node *n = node(P, JN_NOT, cur(P)->line);
        next(P);
        n->a = parse_not(P);
        P->depth--;
        return n;
    }
    return parse_compare(P);
}

static struct jinja_node *parse_and(struct parser *P) {
    struct jinja_node *left = parse_not(P);
    while (is_name(P, "and")) {
        struct jinja_node *n = node(P, JN_AND, cur(P)->line);
        next(P);
        n->a = left;
        n->b = parse_not(P);
        left = n;
    }
    return left;
}

static struct jinja_node *parse_or(struct parser *P) {
    struct jinja_node *left = parse_and(P);
    while (is_name(P, "or")) {
        struct jinja_node *n = node(P, JN_OR, cur(P)->line);
        next(P);
        n->a = left;
        n->b = parse_and(P);
        left = n;
    }
    return left;
}

static struct jinja_node *parse_condexpr(struct parser *P) {
    struct jinja_node *e = parse_or(P);
    while (is_name(P, "if")) {
        struct jinja_node *n = node(P, JN_COND, cur(P)->line);
        next(P);
        n->a = parse_or(P);
        n->b = e;
        if (is_name(P, "else")) {
            next(P);
            n->c = parse_condexpr(P);
        }
        e = n;
    }
    return e;
}

static struct jinja_node *parse_expression(struct parser *P, bool with_condexpr) {
    enter(P);
    struct jinja_node *n = with_condexpr ? parse_condexpr(P) : parse_or(P);
    P->depth--;
    return n;
}

static bool tuple_end(struct parser *P, const char *extra_end) {
    const struct jinja_tok *t = cur(P);
    if (t->type == TK_VAR_END || t->type == TK_BLOCK_END || t->type == TK_EOF) return true;
    if (is_op(P, OP_RPAREN)) return true;
    return extra_end && is_name(P, extra_end);
}

static struct jinja_node *parse_tuple(struct parser *P, bool with_condexpr, bool explicit_parens,
                                      const char *extra_end) {
    int line = cur(P)->line;
    struct nvec items = {0};
    bool is_tuple = false;
    for (;;) {
        if (items.n) expect_op(P, OP_COMMA);
        if (tuple_end(P, extra_end)) break;
        nvec_push(P, &items, parse_expression(P, with_condexpr));
        if (is_op(P, OP_COMMA))
            is_tuple = true;
        else
            break;
    }
    if (!is_tuple) {
        if (items.n) return items.v[0];
        if (!explicit_parens) syntax(P, "an expression");
    }
    struct jinja_node *n = node(P, JN_TUPLE, line);
    n->args = items.v;
    n->n_args = items.n;
    return n;
}

/* ---- statements ---------------------------------------------------------------------- */

static struct jinja_node *parse_body(struct parser *P, const char *const *ends, int open_line,
                                     const char *opener);

/* Target names of for / set: `a`, `a, b` or `(a, b)`. */
static void parse_targets(struct parser *P, struct jinja_node *n) {
    const char *names[16];
    int k = 0;
    bool paren = is_op(P, OP_LPAREN);
    if (paren) next(P);
    for (;;) {
        if (k == 16) unsupported(P, cur(P)->line, "assignment", "of more than 16 names");
        names[k++] = expect_name(P);
        if (!is_op(P, OP_COMMA)) break;
        next(P);
        if (paren && is_op(P, OP_RPAREN)) break;
    }
    if (paren) expect_op(P, OP_RPAREN);
    n->names = jinja_alloc_array(P->a, (size_t)k, sizeof *n->names);
    memcpy(n->names, names, (size_t)k * sizeof *names);
    n->n_names = k;
    n->op = paren || k > 1; /* unpacks */
}

static struct jinja_node *parse_if(struct parser *P, int line) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    struct jinja_node *n = node(P, JN_IF, line);
    n->a = parse_tuple(P, false, false, NULL);
    expect_block_end(P);
    n->b = parse_body(P, ends, line, "if");
    const char *end = expect_name(P);
    if (!strcmp(end, "elif")) {
        n->c = parse_if(P, P->t[P->pos - 1].line);
        return n;
    }
    if (!strcmp(end, "else")) {
        static const char *const endif[] = {"endif", NULL};
        expect_block_end(P);
        n->c = parse_body(P, endif, line, "if");
        next(P);
    }
    expect_block_end(P);
    return n;
}

static struct jinja_node *parse_for(struct parser *P, int line) {
    static const char *const ends[] = {"else", "endfor", NULL};
    static const char *const endfor[] = {"endfor", NULL};
    struct jinja_node *n = node(P, JN_FOR, line);
    parse_targets(P, n);
    if (!is_name(P, "in")) syntax(P, "'in'");
    next(P);
    n->a = parse_tuple(P, false, false, "recursive");
    if (is_name(P, "if")) {
        next(P);
        n->d = parse_expression(P, true);
    }
    if (is_name(P, "recursive")) unsupported(P, line, "loop modifier", "recursive");
    expect_block_end(P);
    P->loop_depth++;
    n->b = parse_body(P, ends, line, "for");
    P->loop_depth--;
    if (!strcmp(expect_name(P), "else")) {
        expect_block_end(P);
        n->c = parse_body(P, endfor, line, "for");
        next(P);
    }
    expect_block_end(P);
    return n;
}

static struct jinja_node *parse_set(struct parser *P, int line) {
    struct jinja_node *n = node(P, JN_SET, line);
    if (cur(P)->type == TK_NAME && peek(P, 1)->type == TK_OP && peek(P, 1)->op == OP_DOT) {
        n->name = expect_name(P);
        next(P);
        n->attr = expect_name(P);
    } else {
        parse_targets(P, n);
    }
    if (is_op(P, OP_ASSIGN)) {
        next(P);
        n->b = parse_tuple(P, true, false, NULL);
        expect_block_end(P);
        return n;
    }
    static const char *const endset[] = {"endset", NULL};
    if (n->attr || n->n_names != 1) syntax(P, "'='");
    if (is_op(P, OP_PIPE)) unsupported(P, line, "tag", "set with a filter block");
    expect_block_end(P);
    n->kind = JN_SET_BLOCK;
    n->name = n->names[0];
    n->b = parse_body(P, endset, line, "set");
    next(P);
    expect_block_end(P);
    return n;
}

static struct jinja_node *parse_macro(struct parser *P, int line) {
    struct jinja_node *n = node(P, JN_MACRO, line);
    n->name = expect_name(P);
    expect_op(P, OP_LPAREN);
    const char *names[64];
    struct jinja_node *defaults[64];
    int k = 0;
    while (!is_op(P, OP_RPAREN)) {
        if (k) expect_op(P, OP_COMMA);
        if (is_op(P, OP_RPAREN)) break;
        if (k == 64) unsupported(P, line, "macro", "with more than 64 parameters");
        names[k] = expect_name(P);
        defaults[k] = NULL;
        if (is_op(P, OP_ASSIGN)) {
            next(P);
            defaults[k] = parse_expression(P, true);
        } else if (k && defaults[k - 1]) {
            jinja_fail(P->f, TL_ERR_FORMAT,
                       "template syntax error at line %d: non-default parameter after a default",
                       line);
        }
        k++;
    }
    next(P);
    expect_block_end(P);
    n->names = jinja_alloc_array(P->a, (size_t)k + 1, sizeof *n->names);
    n->kwvals = jinja_alloc_array(P->a, (size_t)k + 1, sizeof *n->kwvals);
    memcpy(n->names, names, (size_t)k * sizeof *names);
    memcpy(n->kwvals, defaults, (size_t)k * sizeof *defaults);
    n->n_names = k;
    static const char *const endmacro[] = {"endmacro", NULL};
    int saved = P->loop_depth;
    P->loop_depth = 0;
    n->b = parse_body(P, endmacro, line, "macro");
    P->loop_depth = saved;
    next(P);
    expect_block_end(P);
    if (P->n_macros == P->cap_macros) {
        int cap = P->cap_macros ? P->cap_macros * 2 : 8;
        const char **m = jinja_alloc_array(P->a, (size_t)cap, sizeof *m);
        if (P->n_macros) memcpy(m, P->macros, (size_t)P->n_macros * sizeof *m);
        P->macros = m;
        P->cap_macros = cap;
    }
    P->macros[P->n_macros++] = n->name;
    return n;
}

static struct jinja_node *parse_statement(struct parser *P) {
    int line = cur(P)->line;
    if (cur(P)->type != TK_NAME) syntax(P, "a tag name");
    const char *tag = expect_name(P);
    if (!strcmp(tag, "if")) return parse_if(P, line);
    if (!strcmp(tag, "for")) return parse_for(P, line);
    if (!strcmp(tag, "set")) return parse_set(P, line);
    if (!strcmp(tag, "macro")) return parse_macro(P, line);
    if (!strcmp(tag, "break") || !strcmp(tag, "continue")) {
        if (!P->loop_depth)
            jinja_fail(P->f, TL_ERR_FORMAT, "template syntax error at line %d: '%s' outside a loop",
                       line, tag);
        expect_block_end(P);
        return node(P, tag[0] == 'b' ? JN_BREAK : JN_CONTINUE, line);
    }
    if (!strcmp(tag, "generation")) { /* HF's assistant-mask marker: renders its body */
        static const char *const end[] = {"endgeneration", NULL};
        expect_block_end(P);
        struct jinja_node *body = parse_body(P, end, line, "generation");
        next(P);
        expect_block_end(P);
        return body;
    }
    static const char *const closers[] = {"elif",   "else",     "endif",        "endfor",
                                          "endset", "endmacro", "endgeneration"};
    for (size_t i = 0; i < sizeof closers / sizeof closers[0]; i++)
        if (!strcmp(tag, closers[i]))
            jinja_fail(P->f, TL_ERR_FORMAT,
                       "template syntax error at line %d: '%s' without a matching opening tag",
                       line, tag);
    unsupported(P, line, "tag", tag);
}

/* Statements up to a {% tag %} named in ends, left current (after its '{%'); or to the end of
 * the template when ends is NULL. */
static struct jinja_node *parse_body(struct parser *P, const char *const *ends, int open_line,
                                     const char *opener) {
    enter(P);
    struct jinja_node *body = node(P, JN_BODY, cur(P)->line);
    struct nvec items = {0};
    for (;;) {
        const struct jinja_tok *t = cur(P);
        if (t->type == TK_EOF) {
            if (ends) {
                int last = 0;
                while (ends[last + 1]) last++;
                jinja_fail(P->f, TL_ERR_FORMAT,
                           "template syntax error: '%s' at line %d is never closed with '%s'",
                           opener, open_line, ends[last]);
            }
            break;
        }
        if (t->type == TK_TEXT) {
            struct jinja_node *n = node(P, JN_TEXT, t->line);
            n->val.type = JV_STR;
            n->val.u.s = t->str;
            nvec_push(P, &items, n);
            next(P);
        } else if (t->type == TK_VAR_BEGIN) {
            struct jinja_node *n = node(P, JN_OUTPUT, t->line);
            next(P);
            n->a = parse_tuple(P, true, false, NULL);
            if (cur(P)->type != TK_VAR_END) syntax(P, "'}}'");
            next(P);
            nvec_push(P, &items, n);
        } else if (t->type == TK_BLOCK_BEGIN) {
            next(P);
            if (ends && cur(P)->type == TK_NAME)
                for (int i = 0; ends[i]; i++)
                    if (!strcmp(cur(P)->name, ends[i])) goto done;
            nvec_push(P, &items, parse_statement(P));
        } else {
            syntax(P, "text, '{{' or '{%'");
        }
    }
done:
    body->args = items.v;
    body->n_args = items.n;
    P->depth--;
    return body;
}

struct jinja_node *jinja_parse(struct jinja_arena *a, struct jinja_fail *f,
                               const struct jinja_tok *toks, size_t n_toks) {
    struct parser P = {.a = a, .f = f, .t = toks, .n = n_toks};
    struct jinja_node *root = parse_body(&P, NULL, 0, NULL);
    for (int i = 0; i < P.calls.n; i++) {
        const struct jinja_node *c = P.calls.v[i];
        bool found = false;
        for (int k = 0; k < P.n_macros && !found; k++) found = !strcmp(P.macros[k], c->a->name);
        if (!found) unsupported(&P, c->line, "function", c->a->name);
    }
    return root;
}
