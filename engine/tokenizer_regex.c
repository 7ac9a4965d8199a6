/* tokenizer_regex: compiles the Split patterns of tokenizer.json with PCRE2 (UTF + UCP, JIT) so
 * that they match as HF's tokenizers matches them with Oniguruma: class escapes whose meanings
 * differ are spelt out (\s, \S, \w, \W), and the general-category classes gain the code points
 * Unicode assigned after the tables of PCRE2 10.42. No state; called only while loading. */
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

/* Oniguruma's `\s` (Unicode White_Space), spelt out: PCRE2's UCP `\s` also takes U+180E. */
#define ONIG_SPACE                                                                                 \
    "\\t-\\r\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}"          \
    "\\x{205f}\\x{3000}"

/* Code points that PCRE2 10.42 (Unicode 14 tables) leaves unassigned but newer Unicode puts in
 * \p{L}, \p{M}, \p{N}, \p{P} or \p{S}, by class: added to those classes so that new letters,
 * digits and emoji split as HF's tokenizers (Oniguruma, Unicode 16) split them. Generated from
 * Node 20's ICU 78 classes over all code points, less the Unicode 17 additions that HF's
 * tokenizers 0.23 still treats as unassigned. */
static const char *const newer_unicode[128] = {
    ['L'] = "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}"
            "\\x{10D4A}-\\x{10D65}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}"
            "\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}"
            "\\x{113D3}\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}"
            "\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}"
            "\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}"
            "\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}"
            "\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}",
    ['M'] = "\\x{897}\\x{CF3}\\x{ECE}\\x{10D69}-\\x{10D6D}\\x{10EFC}-\\x{10EFF}\\x{11241}"
            "\\x{113B8}-\\x{113C0}\\x{113C2}\\x{113C5}\\x{113C7}-\\x{113CA}\\x{113CC}-\\x{113D0}"
            "\\x{113D2}\\x{113E1}-\\x{113E2}\\x{11F00}-\\x{11F01}\\x{11F03}\\x{11F34}-\\x{11F3A}"
            "\\x{11F3E}-\\x{11F42}\\x{11F5A}\\x{13440}\\x{13447}-\\x{13455}\\x{1611E}-\\x{1612F}"
            "\\x{1E08F}\\x{1E4EC}-\\x{1E4EF}\\x{1E5EE}-\\x{1E5EF}",
    ['N'] = "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}"
            "\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}"
            "\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}",
    ['P'] = "\\x{1B4E}-\\x{1B4F}\\x{1B7F}\\x{10D6E}\\x{113D4}-\\x{113D5}\\x{113D7}-\\x{113D8}"
            "\\x{11B00}-\\x{11B09}\\x{11BE1}\\x{11F43}-\\x{11F4F}\\x{16D6D}-\\x{16D6F}\\x{1E5FF}",
    ['S'] = "\\x{2427}-\\x{2429}\\x{2FFC}-\\x{2FFF}\\x{31E4}-\\x{31E5}\\x{31EF}"
            "\\x{10D8E}-\\x{10D8F}\\x{1CC00}-\\x{1CCEF}\\x{1CD00}-\\x{1CEB3}\\x{1F6DC}"
            "\\x{1F774}-\\x{1F776}\\x{1F77B}-\\x{1F77F}\\x{1F7D9}\\x{1F8B2}-\\x{1F8BB}"
            "\\x{1F8C0}-\\x{1F8C1}\\x{1FA75}-\\x{1FA77}\\x{1FA87}-\\x{1FA89}\\x{1FA8F}"
            "\\x{1FAAD}-\\x{1FAAF}\\x{1FABB}-\\x{1FABF}\\x{1FAC6}\\x{1FACE}-\\x{1FACF}"
            "\\x{1FADA}-\\x{1FADC}\\x{1FADF}\\x{1FAE8}-\\x{1FAE9}\\x{1FAF7}-\\x{1FAF8}"
            "\\x{1FBCB}-\\x{1FBEF}",
};

struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
};

static void sb_put(struct sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_str(struct sbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}

/* The \p{X} class plus the newer code points of X: "\p{X}..." inside a class, "[\p{X}...]"
 * (or "[^...]" for \P{X}) outside one. */
static void sb_class(struct sbuf *b, char x, bool in_class, bool negated) {
    char head[8] = {'\\', 'p', '{', x, '}', 0};
    if (!in_class) sb_str(b, negated ? "[^" : "[");
    sb_str(b, head);
    sb_str(b, newer_unicode[(unsigned char)x]);
    if (!in_class) sb_str(b, "]");
}

/* Rewrites the class escapes whose PCRE2 meaning differs from Oniguruma's, which HF's
 * tokenizers compiles these patterns with: \s, \S, \w, \W and the newer code points of \p{L},
 * \p{M}, \p{N}, \p{P}, \p{S}. Negated forms inside a [...] class stay as they are. Returns a
 * malloc'd pattern or NULL (OOM). */
static char *onig_to_pcre2(const char *p, size_t n) {
    struct sbuf b = {0};
    bool in_class = false;
    for (size_t i = 0; i < n;) {
        size_t adv = 1;
        char e = i + 1 < n && p[i] == '\\' ? p[i + 1] : 0;
        char cls = 0; /* the X of \p{X} / \P{X} / \pX, when it is one of ours */
        size_t clen = 0;
        if ((e == 'p' || e == 'P') && i + 2 < n) {
            if (i + 4 < n && p[i + 2] == '{' && p[i + 4] == '}')
                cls = p[i + 3], clen = 5;
            else if (p[i + 2] != '{')
                cls = p[i + 2], clen = 3;
            if (!cls || !strchr("LMNPS", cls)) cls = 0;
        }
        if (cls && !(e == 'P' && in_class)) {
            sb_class(&b, cls, in_class, e == 'P');
            adv = clen;
        } else if (e == 's' || (e == 'S' && !in_class)) {
            sb_str(&b, in_class ? ONIG_SPACE : e == 's' ? "[" ONIG_SPACE "]" : "[^" ONIG_SPACE "]");
            adv = 2;
        } else if (e == 'w' || (e == 'W' && !in_class)) { /* letters, marks, Nd, Pc */
            if (!in_class) sb_str(&b, e == 'w' ? "[" : "[^");
            sb_class(&b, 'L', true, false);
            sb_class(&b, 'M', true, false);
            sb_str(&b, "\\p{Nd}\\p{Pc}");
            if (!in_class) sb_str(&b, "]");
            adv = 2;
        } else {
            if (e) {
                adv = 2;
            } else if (!in_class && p[i] == '[') {
                in_class = true;
                /* a ']' right after '[' or '[^' is a literal, not the end */
                if (i + 1 < n && p[i + 1] == '^') adv = 2;
                if (i + adv < n && p[i + adv] == ']') adv++;
            } else if (in_class && p[i] == '[' && i + 1 < n && p[i + 1] == ':') {
                const char *end = strstr(p + i, ":]");
                if (end && (size_t)(end - p) < n) adv = (size_t)(end - p) + 2 - i;
            } else if (in_class && p[i] == ']') {
                in_class = false;
            }
            sb_put(&b, p + i, adv);
        }
        i += adv;
    }
    sb_put(&b, "", 0);
    if (b.oom) return free(b.p), NULL;
    return b.p;
}

enum tl_status tk_regex_compile(const char *pattern, size_t n, bool literal, pcre2_code **out,
                                struct tl_err *err) {
    char *pat = literal ? NULL : onig_to_pcre2(pattern, n);
    if (!literal && !pat) return tl_fail(err, TL_ERR_NOMEM, "out of memory compiling a regex");
    int ec;
    PCRE2_SIZE eo;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP); /* LITERAL refuses UCP */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(literal ? pattern : pat),
                                   literal ? n : PCRE2_ZERO_TERMINATED, opts, &ec, &eo, NULL);
    free(pat);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "pattern /%.200s/ does not compile with PCRE2: %s (near offset %zu)",
                       pattern, (char *)msg, (size_t)eo);
    }
    if (pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) != 0) {
        pcre2_code_free(re);
        return tl_fail(err, TL_ERR_UNSUPPORTED, "PCRE2 JIT is unavailable for /%.200s/", pattern);
    }
    *out = re;
    return TL_OK;
}
