/* jinja_lex: template source to tokens, as Python Jinja's lexer does it under HF's settings:
 * newlines normalized to \n and one trailing newline dropped, trim_blocks (a newline right
 * after %} or #} is removed), lstrip_blocks (spaces and tabs from the start of a line up to
 * {% or {# are removed), the -/+ whitespace control signs, {% raw %}, and Python's string
 * escapes (\n, \t, \xhh, \uXXXX, ...; unknown escapes keep their backslash). */
#include "jinja_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct lexer {
    struct jinja_arena *a;
    struct jinja_fail *f;
    const char *s; /* normalized source */
    size_t n, pos;
    int line;
    struct jinja_tok *toks;
    size_t n_toks, cap;
};

static struct jinja_tok *push(struct lexer *L, int type, int line) {
    if (L->n_toks == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        struct jinja_tok *t = jinja_alloc_array(L->a, cap, sizeof *t);
        if (L->n_toks) memcpy(t, L->toks, L->n_toks * sizeof *t);
        L->toks = t;
        L->cap = cap;
    }
    struct jinja_tok *t = &L->toks[L->n_toks++];
    memset(t, 0, sizeof *t);
    t->type = (uint8_t)type;
    t->line = line;
    return t;
}

/* Moves pos to `to`, counting lines. */
static void advance(struct lexer *L, size_t to) {
    for (size_t i = L->pos; i < to; i++)
        if (L->s[i] == '\n') L->line++;
    L->pos = to;
}

/* End of the run of Python whitespace starting at i. */
static size_t skip_space(const char *s, size_t n, size_t i) {
    while (i < n) {
        uint32_t cp;
        size_t next = jinja_utf8_next(s, n, i, &cp);
        if (!jinja_is_space(cp)) break;
        i = next;
    }
    return i;
}

/* Length of [b, e) without its trailing Python whitespace (str.rstrip()). */
static size_t rstrip_end(const char *s, size_t b, size_t e) {
    size_t keep = b, i = b;
    while (i < e) {
        uint32_t cp;
        size_t next = jinja_utf8_next(s, e, i, &cp);
        if (!jinja_is_space(cp)) keep = next;
        i = next;
    }
    return keep;
}

static void push_text(struct lexer *L, size_t b, size_t e, int line) {
    if (e <= b) return;
    struct jinja_tok *t = push(L, TK_TEXT, line);
    t->str = jinja_str(L->a, L->s + b, e - b).u.s;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A string literal starting at the quote; Python's unicode-escape rules. */
static void lex_string(struct lexer *L) {
    char q = L->s[L->pos];
    int line = L->line;
    size_t i = L->pos + 1;
    struct jinja_buf b = {0};
    for (;;) {
        if (i >= L->n) jinja_fail(L->f, TL_ERR_FORMAT, "unterminated string at line %d", line);
        char c = L->s[i];
        if (c == q) break;
        if (c != '\\') {
            jinja_buf_putc(L->a, &b, c);
            i++;
            continue;
        }
        if (i + 1 >= L->n) jinja_fail(L->f, TL_ERR_FORMAT, "unterminated string at line %d", line);
        char e = L->s[i + 1];
        i += 2;
        const char *simple = strchr("\\'\"abfnrtv\n", e);
        if (simple && e) {
            static const char out[] = "\\'\"\a\b\f\n\r\t\v";
            if (e != '\n') jinja_buf_putc(L->a, &b, out[simple - "\\'\"abfnrtv\n"]);
            continue;
        }
        if (e >= '0' && e <= '7') {
            uint32_t v = (uint32_t)(e - '0');
            for (int k = 0; k < 2 && i < L->n && L->s[i] >= '0' && L->s[i] <= '7'; k++, i++)
                v = v * 8 + (uint32_t)(L->s[i] - '0');
            jinja_utf8_put(L->a, &b, v);
            continue;
        }
        if (e == 'x' || e == 'u' || e == 'U') {
            int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t v = 0;
            for (int k = 0; k < digits; k++, i++) {
                int h = i < L->n ? hexval(L->s[i]) : -1;
                if (h < 0)
                    jinja_fail(L->f, TL_ERR_FORMAT, "truncated \\%c escape in a string at line %d",
                               e, line);
                v = v * 16 + (uint32_t)h;
            }
            if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
                jinja_fail(L->f, TL_ERR_UNSUPPORTED,
                           "string escape for code point 0x%X at line %d is not valid UTF-8", v,
                           line);
            jinja_utf8_put(L->a, &b, v);
            continue;
        }
        if (e == 'N')
            jinja_fail(L->f, TL_ERR_UNSUPPORTED, "unsupported \\N{...} string escape at line %d",
                       line);
        /* unknown escape: Python keeps the backslash */
        jinja_buf_putc(L->a, &b, '\\');
        i--;
    }
    struct jinja_tok *t = push(L, TK_STRING, line);
    t->str = jinja_str(L->a, b.p ? b.p : "", b.len).u.s;
    advance(L, i + 1);
}

static bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
static bool is_name_start(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}
static bool is_name_char(unsigned char c) {
    return is_name_start(c) || is_digit((char)c);
}

/* Digits with optional single underscores between them, from i; returns the end. */
static size_t digits_end(const char *s, size_t n, size_t i) {
    while (i < n && (is_digit(s[i]) || (s[i] == '_' && i + 1 < n && is_digit(s[i + 1])))) i++;
    return i;
}

static void lex_number(struct lexer *L) {
    const char *s = L->s;
    size_t b = L->pos, i = digits_end(s, L->n, b);
    bool after_dot =
        L->n_toks && L->toks[L->n_toks - 1].type == TK_OP && L->toks[L->n_toks - 1].op == OP_DOT;
    bool is_float = false;
    if (!after_dot) {
        if (i + 1 < L->n && s[i] == '.' && is_digit(s[i + 1])) {
            i = digits_end(s, L->n, i + 1);
            is_float = true;
        }
        if (i < L->n && (s[i] == 'e' || s[i] == 'E')) {
            size_t j = i + 1;
            if (j < L->n && (s[j] == '+' || s[j] == '-')) j++;
            if (j < L->n && is_digit(s[j])) {
                i = digits_end(s, L->n, j);
                is_float = true;
            }
        }
    }
    char tmp[128];
    size_t k = 0;
    for (size_t j = b; j < i; j++)
        if (s[j] != '_') {
            if (k + 1 >= sizeof tmp)
                jinja_fail(L->f, TL_ERR_UNSUPPORTED, "number too long at line %d", L->line);
            tmp[k++] = s[j];
        }
    tmp[k] = '\0';
    struct jinja_tok *t = push(L, is_float ? TK_FLOAT : TK_INT, L->line);
    errno = 0;
    if (is_float) {
        t->f = strtod(tmp, NULL);
    } else {
        long long v = strtoll(tmp, NULL, 10);
        if (errno == ERANGE)
            jinja_fail(L->f, TL_ERR_UNSUPPORTED, "integer literal %s at line %d exceeds 64 bits",
                       tmp, L->line);
        t->i = v;
    }
    advance(L, i);
}

static const struct {
    const char *s;
    uint8_t op;
} ops[] = {
    {"//", OP_FLOORDIV}, {"**", OP_POW},   {"==", OP_EQ},      {"!=", OP_NE},      {"<=", OP_LE},
    {">=", OP_GE},       {"+", OP_ADD},    {"-", OP_SUB},      {"*", OP_MUL},      {"/", OP_DIV},
    {"%", OP_MOD},       {"~", OP_TILDE},  {"[", OP_LBRACKET}, {"]", OP_RBRACKET}, {"(", OP_LPAREN},
    {")", OP_RPAREN},    {"{", OP_LBRACE}, {"}", OP_RBRACE},   {"<", OP_LT},       {">", OP_GT},
    {"=", OP_ASSIGN},    {".", OP_DOT},    {":", OP_COLON},    {"|", OP_PIPE},     {",", OP_COMMA},
    {";", OP_SEMICOLON},
};

static bool starts(const struct lexer *L, size_t i, const char *lit) {
    size_t k = strlen(lit);
    return i + k <= L->n && memcmp(L->s + i, lit, k) == 0;
}

/* Tokens inside {{ }} or {% %} up to and including the end delimiter. Returns whether the
 * end delimiter's match ended with a newline (Jinja's line_starting for the next text). */
static bool lex_tag(struct lexer *L, bool block, int open_line) {
    int depth = 0;
    for (;;) {
        size_t i = L->pos;
        while (i < L->n && (L->s[i] == ' ' || L->s[i] == '\t' || L->s[i] == '\n' ||
                            L->s[i] == '\r' || L->s[i] == '\f' || L->s[i] == '\v'))
            i++;
        advance(L, i);
        if (i >= L->n)
            jinja_fail(L->f, TL_ERR_FORMAT,
                       "unexpected end of template: the %s opened at line %d "
                       "is not closed",
                       block ? "{%" : "{{", open_line);
        const char *close = block ? "%}" : "}}";
        if (depth == 0) {
            if (L->s[i] == '-' && starts(L, i + 1, close)) {
                push(L, block ? TK_BLOCK_END : TK_VAR_END, L->line);
                size_t e = skip_space(L->s, L->n, i + 3);
                advance(L, e);
                return e > i + 3 && L->s[e - 1] == '\n';
            }
            if (block && L->s[i] == '+' && starts(L, i + 1, close)) {
                push(L, TK_BLOCK_END, L->line);
                advance(L, i + 3);
                return false;
            }
            if (starts(L, i, close)) {
                push(L, block ? TK_BLOCK_END : TK_VAR_END, L->line);
                size_t e = i + 2;
                if (block && e < L->n && L->s[e] == '\n') e++; /* trim_blocks */
                advance(L, e);
                return L->s[e - 1] == '\n';
            }
        }
        char c = L->s[i];
        if (c == '\'' || c == '"') {
            lex_string(L);
            continue;
        }
        if (is_digit(c)) {
            lex_number(L);
            continue;
        }
        if (is_name_start((unsigned char)c)) {
            size_t e = i;
            while (e < L->n && is_name_char((unsigned char)L->s[e])) e++;
            struct jinja_tok *t = push(L, TK_NAME, L->line);
            char *nm = jinja_alloc(L->a, e - i + 1);
            memcpy(nm, L->s + i, e - i);
            t->name = nm;
            advance(L, e);
            continue;
        }
        size_t k = 0;
        for (; k < sizeof ops / sizeof ops[0]; k++)
            if (starts(L, i, ops[k].s)) break;
        if (k == sizeof ops / sizeof ops[0])
            jinja_fail(L->f, TL_ERR_FORMAT, "unexpected character '%c' at line %d", c, L->line);
        uint8_t op = ops[k].op;
        if (op == OP_LPAREN || op == OP_LBRACKET || op == OP_LBRACE) depth++;
        if (op == OP_RPAREN || op == OP_RBRACKET || op == OP_RBRACE) depth--;
        if (depth < 0)
            jinja_fail(L->f, TL_ERR_FORMAT, "unbalanced '%s' at line %d", ops[k].s, L->line);
        push(L, TK_OP, L->line)->op = op;
        advance(L, i + strlen(ops[k].s));
    }
}

/* If a {% raw %} tag starts at i (just after "{%" and its sign), the index after it. */
static size_t raw_begin(const struct lexer *L, size_t i, bool *strip_after) {
    i = skip_space(L->s, L->n, i);
    if (!starts(L, i, "raw")) return 0;
    i = skip_space(L->s, L->n, i + 3);
    *strip_after = false;
    if (starts(L, i, "-%}")) {
        *strip_after = true;
        return i + 3;
    }
    return starts(L, i, "%}") ? i + 2 : 0;
}

/* Text of a raw block from pos up to {% endraw %}; handles the end tag's signs. */
static bool lex_raw(struct lexer *L, int open_line) {
    for (size_t i = L->pos; i + 1 < L->n; i++) {
        if (L->s[i] != '{' || L->s[i + 1] != '%') continue;
        size_t j = i + 2;
        char sign = (j < L->n && (L->s[j] == '-' || L->s[j] == '+')) ? L->s[j] : 0;
        if (sign) j++;
        j = skip_space(L->s, L->n, j);
        if (!starts(L, j, "endraw")) continue;
        j = skip_space(L->s, L->n, j + 6);
        size_t end;
        bool trim = false, strip = false;
        if (starts(L, j, "-%}"))
            end = j + 3, strip = true;
        else if (starts(L, j, "+%}"))
            end = j + 3;
        else if (starts(L, j, "%}"))
            end = j + 2, trim = true;
        else
            continue;
        size_t text_end = sign == '-' ? rstrip_end(L->s, L->pos, i) : i;
        push_text(L, L->pos, text_end, L->line);
        if (strip)
            end = skip_space(L->s, L->n, end);
        else if (trim && end < L->n && L->s[end] == '\n')
            end++;
        advance(L, end);
        return L->s[end - 1] == '\n';
    }
    jinja_fail(L->f, TL_ERR_FORMAT, "{%% raw %%} at line %d has no {%% endraw %%}", open_line);
}

/* Copies src with \r\n and \r turned into \n and one trailing newline dropped. */
static char *normalize(struct jinja_arena *a, const char *src, size_t len, size_t *out_len) {
    char *s = jinja_alloc(a, len + 1);
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[k++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            s[k++] = src[i];
        }
    }
    if (k && s[k - 1] == '\n') k--;
    s[k] = '\0';
    *out_len = k;
    return s;
}

struct jinja_tok *jinja_lex(struct jinja_arena *a, struct jinja_fail *f, const char *src,
                            size_t len, size_t *n_toks) {
    struct lexer L = {.a = a, .f = f, .line = 1};
    L.s = normalize(a, src, len, &L.n);
    bool line_starting = true;
    while (L.pos < L.n) {
        size_t i = L.pos;
        while (i + 1 < L.n && !(L.s[i] == '{' && memchr("{%#", L.s[i + 1], 3))) i++;
        if (i + 1 >= L.n) {
            push_text(&L, L.pos, L.n, L.line);
            advance(&L, L.n);
            break;
        }
        char kind = L.s[i + 1];
        size_t after = i + 2;
        char sign = (after < L.n && (L.s[after] == '-' || L.s[after] == '+')) ? L.s[after] : 0;
        if (sign) after++;
        size_t text_end = i;
        if (sign == '-') {
            text_end = rstrip_end(L.s, L.pos, i);
        } else if (sign != '+' && kind != '{') {
            /* lstrip_blocks: drop the line's leading whitespace when nothing else precedes */
            size_t l_pos = i;
            while (l_pos > L.pos && L.s[l_pos - 1] != '\n') l_pos--;
            if ((l_pos > L.pos || (l_pos == L.pos && line_starting)) &&
                skip_space(L.s, i, l_pos) == i)
                text_end = l_pos;
        }
        push_text(&L, L.pos, text_end, L.line);
        advance(&L, i);
        int open_line = L.line;
        if (kind == '#') {
            size_t e = after;
            while (e + 1 < L.n && !(L.s[e] == '#' && L.s[e + 1] == '}')) e++;
            if (e + 1 >= L.n)
                jinja_fail(f, TL_ERR_FORMAT, "comment opened at line %d is not closed", open_line);
            bool strip = e > after && L.s[e - 1] == '-';
            size_t end = e + 2;
            if (strip)
                end = skip_space(L.s, L.n, end);
            else if (end < L.n && L.s[end] == '\n' && !(e > after && L.s[e - 1] == '+'))
                end++;
            advance(&L, end);
            line_starting = L.s[end - 1] == '\n';
            continue;
        }
        bool strip_after;
        size_t raw_end = kind == '%' ? raw_begin(&L, after, &strip_after) : 0;
        if (raw_end) {
            if (strip_after) raw_end = skip_space(L.s, L.n, raw_end);
            advance(&L, raw_end);
            line_starting = lex_raw(&L, open_line);
            continue;
        }
        push(&L, kind == '%' ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, L.line);
        advance(&L, after);
        line_starting = lex_tag(&L, kind == '%', open_line);
    }
    push(&L, TK_EOF, L.line);
    *n_toks = L.n_toks;
    return L.toks;
}
