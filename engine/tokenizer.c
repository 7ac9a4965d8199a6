/* tokenizer: loads tokenizer.json and tokenizer_config.json (jansson) into the read-only tables
 * of tokenizer_impl.h, and turns ids back into text: tokenizer_decode and the incremental
 * detokenizer. Encoding is in tokenizer_encode.c. A loaded tokenizer owns all its memory and is
 * never written again (but for its atomic encoder-scratch slot), so threads share it freely; a
 * detok belongs to one stream (one thread).
 *
 * What HF does and we follow: the model vocabulary and merges by rank (a later duplicate merge
 * wins, a merge naming an unknown token is an error), added tokens looked up before the model,
 * the ByteLevel decoder applied to every token string that consists only of GPT-2 byte chars
 * (others pass through as UTF-8), from_utf8_lossy, and transformers' clean_up_tokenization when
 * tokenizer_config.json sets clean_up_tokenization_spaces (default false, as transformers >= 4.45).
 * LlamaTokenizer(Fast) configs replace the post-processor with BOS/EOS from add_bos_token /
 * add_eos_token, as transformers' LlamaTokenizerFast.update_post_processor does. */
#include "tokenizer_impl.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TK_FILE_MAX_BYTES ((size_t)1 << 30)
#define TK_MAX_ID         ((1 << TK_ID_BITS) - 1) /* 2M: far above any real vocabulary */

/* The GPT-2 byte <-> unicode table: printable Latin-1 bytes stand for themselves, the other 68
 * bytes map to U+0100.. in byte order. */
static uint32_t byte_char(uint8_t b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE)) return b;
    uint32_t n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE))) n++;
    return 0x100 + n;
}

/* The inverse: the byte a code point stands for, or -1. */
static int char_byte(uint32_t c) {
    if ((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))
        return (int)c;
    if (c < 0x100 || c >= 0x100 + 68) return -1;
    int n = (int)(c - 0x100);
    for (int x = 0; x < 256; x++)
        if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE)) && n-- == 0)
            return x;
    return -1;
}

static size_t put_utf8(uint32_t c, char *o) {
    if (c < 0x80) return o[0] = (char)c, 1;
    if (c < 0x800) return o[0] = (char)(0xC0 | c >> 6), o[1] = (char)(0x80 | (c & 0x3F)), 2;
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | c >> 12), o[1] = (char)(0x80 | (c >> 6 & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | c >> 18), o[1] = (char)(0x80 | (c >> 12 & 0x3F));
    o[2] = (char)(0x80 | (c >> 6 & 0x3F)), o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* ByteLevel decoding of one token string (valid UTF-8, from JSON): the bytes its chars stand
 * for, or the string itself when some char is not a byte char (HF's decoder does the same).
 * out needs len bytes. Returns the length; *byte_level tells which case it was. */
static size_t bytelevel_decode(const char *s, size_t len, uint8_t *out, bool *byte_level) {
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        uint8_t b = (uint8_t)s[i];
        uint32_t c;
        size_t k;
        if (b < 0x80)
            c = b, k = 1;
        else if (b < 0xE0)
            c = (uint32_t)(b & 0x1F) << 6 | ((uint8_t)s[i + 1] & 0x3F), k = 2;
        else
            c = 0x110000, k = 1; /* three bytes and more are never byte chars */
        int v = char_byte(c);
        if (v < 0) {
            memcpy(out, s, len);
            *byte_level = false;
            return len;
        }
        out[o++] = (uint8_t)v;
        i += k;
    }
    *byte_level = true;
    return o;
}

/* ---- streaming lossy UTF-8 ------------------------------------------------------------- */

/* Rust's String::from_utf8_lossy as a byte-at-a-time machine: U+FFFD for each maximal prefix of
 * a valid sequence that is cut short, and for each byte that cannot start one. Decode and the
 * detokenizer both run it, so they agree byte for byte. */
struct u8dec {
    uint8_t buf[4];
    uint8_t have, need, lo, hi; /* bytes held, bytes still needed, range of the next one */
};

static size_t fffd(char *o) {
    o[0] = (char)0xEF, o[1] = (char)0xBF, o[2] = (char)0xBD;
    return 3;
}

/* Feeds one byte; writes what became final to out (at most 6 bytes) and returns its length. */
static size_t u8dec_byte(struct u8dec *d, uint8_t b, char *out) {
    size_t n = 0;
    if (d->need) {
        if (b >= d->lo && b <= d->hi) {
            d->buf[d->have++] = b;
            d->lo = 0x80, d->hi = 0xBF;
            if (--d->need) return 0;
            memcpy(out, d->buf, d->have);
            n = d->have;
            d->have = 0;
            return n;
        }
        n = fffd(out); /* the held bytes were a maximal invalid subpart; b starts afresh */
        d->have = d->need = 0;
    }
    d->lo = 0x80, d->hi = 0xBF;
    if (b < 0x80) {
        out[n++] = (char)b;
    } else if (b >= 0xC2 && b <= 0xDF) {
        d->need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
        d->need = 2;
        if (b == 0xE0) d->lo = 0xA0;
        if (b == 0xED) d->hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        d->need = 3;
        if (b == 0xF0) d->lo = 0x90;
        if (b == 0xF4) d->hi = 0x8F;
    } else {
        return n + fffd(out + n);
    }
    if (d->need) d->buf[d->have++] = b;
    return n;
}

static size_t u8dec_flush(struct u8dec *d, char *out) {
    if (!d->need) return 0;
    d->have = d->need = 0;
    return fffd(out);
}

/* transformers' clean_up_tokenization: ten str.replace passes, in this order, in place. */
static size_t clean_up(char *s, size_t n) {
    static const struct {
        const char *pat, *rep;
    } R[] = {{" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
             {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    if (!memchr(s, ' ', n)) return n;
    for (size_t r = 0; r < sizeof R / sizeof R[0]; r++) {
        size_t pl = strlen(R[r].pat), rl = strlen(R[r].rep), o = 0;
        for (size_t i = 0; i < n;) {
            if (s[i] == ' ' && n - i >= pl && memcmp(s + i, R[r].pat, pl) == 0) {
                memcpy(s + o, R[r].rep, rl);
                o += rl, i += pl;
            } else {
                s[o++] = s[i++];
            }
        }
        n = o;
    }
    return n;
}

/* ---- loading --------------------------------------------------------------------------- */

struct ld {
    const char *path; /* for messages */
    struct tl_err *err;
};

/* Reads a JSON object. int_as_real: tokenizer_config.json may hold integers beyond 64 bits
 * (Llama 3's model_max_length is 1e30), which jansson only reads as reals. */
static enum tl_status read_json(const char *path, bool int_as_real, json_t **out,
                                struct tl_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return tl_fail(err, TL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) ||
        (unsigned long long)st.st_size > TK_FILE_MAX_BYTES) {
        fclose(f);
        return tl_fail(err, TL_ERR_IO, "%s: not a regular file of at most %zu bytes", path,
                       TK_FILE_MAX_BYTES);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        return tl_fail(err, TL_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        free(buf);
        return tl_fail(err, TL_ERR_IO, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    json_error_t je;
    *out = json_loadb(buf, n, JSON_REJECT_DUPLICATES | (int_as_real ? JSON_DECODE_INT_AS_REAL : 0),
                      &je);
    free(buf);
    if (!*out)
        return tl_fail(err, TL_ERR_FORMAT, "%s: line %d, column %d (byte %d): %s", path, je.line,
                       je.column, je.position, je.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        return tl_fail(err, TL_ERR_FORMAT, "%s: the top level is not a JSON object", path);
    }
    return TL_OK;
}

/* obj[key] as a bool: absent or null give dflt; another type is an error. */
static enum tl_status get_bool(struct ld *L, const json_t *obj, const char *where, const char *key,
                               bool dflt, bool *out) {
    json_t *v = json_object_get(obj, key);
    *out = dflt;
    if (!v || json_is_null(v)) return TL_OK;
    if (!json_is_boolean(v))
        return tl_fail(L->err, TL_ERR_FORMAT, "%s: %s.%s is not a boolean", L->path, where, key);
    *out = json_is_true(v);
    return TL_OK;
}

/* obj[key] as a string, NULL when absent or null; another type is an error. */
static enum tl_status get_str(struct ld *L, const json_t *obj, const char *where, const char *key,
                              const char **out) {
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v)) return TL_OK;
    if (!json_is_string(v))
        return tl_fail(L->err, TL_ERR_FORMAT, "%s: %s.%s is not a string", L->path, where, key);
    *out = json_string_value(v);
    return TL_OK;
}

static const char *type_of(const json_t *v) {
    const char *s = json_string_value(json_object_get(v, "type"));
    return s ? s : "";
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        enum tl_status st_ = (x);                                                                  \
        if (st_ != TL_OK) return st_;                                                              \
    } while (0)

/* Vocabulary, added tokens and the per-id tables. */
static enum tl_status load_vocab(struct ld *L, struct tokenizer *t, json_t *vocab, json_t *added) {
    size_t nv = json_object_size(vocab), na = json_array_size(added), bytes = 0;
    int64_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || id >= TK_MAX_ID)
            return tl_fail(L->err, TL_ERR_FORMAT,
                           "%s: model.vocab[\"%.100s\"] is not an id in [0, %d)", L->path, key,
                           TK_MAX_ID);
        if (!*key)
            return tl_fail(L->err, TL_ERR_FORMAT, "%s: model.vocab has an empty token", L->path);
        bytes += strlen(key) + 1;
        if (id > max_id) max_id = id;
    }
    t->n_added = (int)na;
    t->added = calloc(na ? na : 1, sizeof *t->added);
    if (!t->added) return tl_fail(L->err, TL_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < na; i++) {
        json_t *a = json_array_get(added, i), *jid = json_object_get(a, "id");
        const char *content = json_string_value(json_object_get(a, "content"));
        json_int_t id = json_is_integer(jid) ? json_integer_value(jid) : -1;
        if (!json_is_object(a) || !content || !*content || id < 0 || id >= TK_MAX_ID)
            return tl_fail(L->err, TL_ERR_FORMAT,
                           "%s: added_tokens[%zu] needs an \"id\" in [0, %d) and a non-empty "
                           "\"content\"",
                           L->path, i, TK_MAX_ID);
        bytes += strlen(content) + 1;
        if (id > max_id) max_id = id;
    }
    if (max_id < 0) return tl_fail(L->err, TL_ERR_FORMAT, "%s: model.vocab is empty", L->path);
    if (bytes > UINT32_MAX / 2)
        return tl_fail(L->err, TL_ERR_FORMAT, "%s: the vocabulary is too large", L->path);
    int n = t->n_ids = (int)max_id + 1;
    t->arena = malloc(bytes);
    t->dec = malloc(bytes);
    t->tok_off = calloc((size_t)n, sizeof *t->tok_off);
    t->tok_len = calloc((size_t)n, sizeof *t->tok_len);
    t->vtok_off = calloc((size_t)n, sizeof *t->vtok_off);
    t->vtok_len = calloc((size_t)n, sizeof *t->vtok_len);
    t->dec_off = calloc((size_t)n, sizeof *t->dec_off);
    t->dec_len = calloc((size_t)n, sizeof *t->dec_len);
    t->id_flags = calloc((size_t)n, 1);
    if (!t->arena || !t->dec || !t->tok_off || !t->tok_len || !t->vtok_off || !t->vtok_len ||
        !t->dec_off || !t->dec_len || !t->id_flags || !tk_strmap_init(&t->vocab, nv) ||
        !tk_strmap_init(&t->added_map, na))
        return tl_fail(L->err, TL_ERR_NOMEM, "out of memory");

    size_t o = 0, od = 0;
    bool bl;
    json_object_foreach(vocab, key, val) {
        int32_t id = (int32_t)json_integer_value(val);
        size_t kl = strlen(key);
        if (t->id_flags[id])
            return tl_fail(L->err, TL_ERR_FORMAT,
                           "%s: model.vocab gives id %d to both \"%.100s\" and \"%.100s\"", L->path,
                           id, t->arena + t->vtok_off[id], key);
        memcpy(t->arena + o, key, kl + 1);
        t->vtok_off[id] = t->tok_off[id] = (uint32_t)o;
        t->vtok_len[id] = t->tok_len[id] = (uint32_t)kl;
        o += kl + 1;
        t->dec_off[id] = (uint32_t)od;
        t->dec_len[id] = (uint32_t)bytelevel_decode(key, kl, t->dec + od, &bl);
        od += t->dec_len[id];
        t->id_flags[id] = TK_ID_VALID;
        tk_strmap_put(&t->vocab, t->arena, t->vtok_off, t->vtok_len, id);
    }
    for (int i = 0; i < t->n_added; i++) {
        json_t *a = json_array_get(added, (size_t)i);
        const char *content = json_string_value(json_object_get(a, "content"));
        int32_t id = (int32_t)json_integer_value(json_object_get(a, "id"));
        bool special, f;
        uint32_t flags = 0;
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%d]", i);
        TRY(get_bool(L, a, where, "special", false, &special));
        flags |= special ? TK_ADDED_SPECIAL : 0;
        TRY(get_bool(L, a, where, "lstrip", false, &f));
        flags |= f ? TK_ADDED_LSTRIP : 0;
        TRY(get_bool(L, a, where, "rstrip", false, &f));
        flags |= f ? TK_ADDED_RSTRIP : 0;
        TRY(get_bool(L, a, where, "single_word", false, &f));
        flags |= f ? TK_ADDED_SINGLE_WORD : 0;
        TRY(get_bool(L, a, where, "normalized", !special, &f));
        flags |= f ? TK_ADDED_NORMALIZED : 0;
        size_t kl = strlen(content);
        if (t->id_flags[id] & TK_ID_ADDED)
            return tl_fail(L->err, TL_ERR_FORMAT, "%s: %s: id %d is given to two added tokens",
                           L->path, where, id);
        memcpy(t->arena + o, content, kl + 1);
        t->tok_off[id] = (uint32_t)o;
        t->tok_len[id] = (uint32_t)kl;
        o += kl + 1;
        t->dec_off[id] = (uint32_t)od; /* decode uses the added content, as HF's id_to_token */
        t->dec_len[id] = (uint32_t)bytelevel_decode(content, kl, t->dec + od, &bl);
        od += t->dec_len[id];
        t->id_flags[id] |= TK_ID_VALID | TK_ID_ADDED | (special ? TK_ID_SPECIAL : 0);
        t->added[i] = (struct tk_added){id, t->tok_off[id], (uint32_t)kl, flags};
        if (tk_strmap_put(&t->added_map, t->arena, t->tok_off, t->tok_len, id) >= 0)
            return tl_fail(L->err, TL_ERR_FORMAT, "%s: %s: \"%.100s\" is an added token twice",
                           L->path, where, content);
    }
    for (int b = 0; b < 256; b++) {
        char s[4];
        size_t k = put_utf8(byte_char((uint8_t)b), s);
        t->byte_id[b] = tk_strmap_get(&t->vocab, t->arena, t->vtok_off, t->vtok_len, s, k);
    }
    return TL_OK;
}

/* Model tokens by their decoded bytes, for ignore_merges (pieces are raw bytes). */
static enum tl_status build_raw_map(struct ld *L, struct tokenizer *t) {
    /* dec_* of an id that is also an added token hold the added content, so key the map by
     * the model strings' own decodings, in a parallel table */
    uint32_t *off = calloc((size_t)t->n_ids, sizeof *off), *len = calloc((size_t)t->n_ids, 4);
    size_t total = 0;
    for (int i = 0; i < t->n_ids; i++) total += t->vtok_len[i];
    uint8_t *raw = malloc(total ? total : 1);
    if (!off || !len || !raw || !tk_strmap_init(&t->raw, (size_t)t->n_ids)) {
        free(off), free(len), free(raw);
        return tl_fail(L->err, TL_ERR_NOMEM, "out of memory");
    }
    size_t o = 0;
    for (int i = 0; i < t->n_ids; i++) {
        bool bl;
        if (!t->vtok_len[i]) continue;
        off[i] = (uint32_t)o;
        len[i] =
            (uint32_t)bytelevel_decode(t->arena + t->vtok_off[i], t->vtok_len[i], raw + o, &bl);
        if (!bl) continue;
        o += len[i];
        tk_strmap_put(&t->raw, (const char *)raw, off, len, i);
    }
    t->raw_bytes = raw, t->raw_off = off, t->raw_len = len;
    return TL_OK;
}

static enum tl_status merge_side(struct ld *L, struct tokenizer *t, size_t i, const char *s,
                                 size_t n, int32_t *id) {
    *id = tk_strmap_get(&t->vocab, t->arena, t->vtok_off, t->vtok_len, s, n);
    if (*id < 0)
        return tl_fail(L->err, TL_ERR_FORMAT,
                       "%s: model.merges[%zu]: \"%.*s\" is not in the vocabulary", L->path, i,
                       (int)(n > 100 ? 100 : n), s);
    return TL_OK;
}

static enum tl_status load_merges(struct ld *L, struct tokenizer *t, json_t *merges) {
    size_t nm = json_array_size(merges), cap = 256;
    if (nm >= (size_t)1 << TK_RANK_BITS)
        return tl_fail(L->err, TL_ERR_UNSUPPORTED, "%s: %zu merges (at most %u are supported)",
                       L->path, nm, (1u << TK_RANK_BITS) - 1);
    char *buf = malloc(cap);
    if (!buf || !tk_mergemap_init(&t->merges, nm)) {
        free(buf);
        return tl_fail(L->err, TL_ERR_NOMEM, "out of memory");
    }
    enum tl_status st = TL_OK;
    for (size_t i = 0; i < nm && st == TL_OK; i++) {
        json_t *m = json_array_get(merges, i);
        const char *a, *b;
        size_t na, nb;
        if (json_is_string(m)) { /* "a b": the format before tokenizers 0.20 */
            a = json_string_value(m);
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                st = tl_fail(L->err, TL_ERR_FORMAT,
                             "%s: model.merges[%zu] \"%.100s\" is not two tokens "
                             "separated by one space",
                             L->path, i, a);
                break;
            }
            na = (size_t)(sp - a), b = sp + 1, nb = strlen(b);
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0)), na = strlen(a);
            b = json_string_value(json_array_get(m, 1)), nb = strlen(b);
        } else {
            st = tl_fail(L->err, TL_ERR_FORMAT,
                         "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", L->path, i);
            break;
        }
        int32_t ia, ib, im;
        if ((st = merge_side(L, t, i, a, na, &ia)) != TL_OK) break;
        if ((st = merge_side(L, t, i, b, nb, &ib)) != TL_OK) break;
        if (na + nb > cap) {
            char *g = realloc(buf, cap = 2 * (na + nb));
            if (!g) {
                st = tl_fail(L->err, TL_ERR_NOMEM, "out of memory");
                break;
            }
            buf = g;
        }
        memcpy(buf, a, na);
        memcpy(buf + na, b, nb);
        if ((st = merge_side(L, t, i, buf, na + nb, &im)) != TL_OK) break;
        tk_mergemap_put(&t->merges, tk_pair_key(ia, ib), (uint32_t)i, (uint32_t)im);
    }
    free(buf);
    return st;
}

static enum tl_status load_model(struct ld *L, struct tokenizer *t, json_t *root) {
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model))
        return tl_fail(L->err, TL_ERR_FORMAT, "%s: no \"model\" object", L->path);
    const char *type, *s;
    TRY(get_str(L, model, "model", "type", &type));
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (type ? strcmp(type, "BPE") != 0 : !merges)
        return tl_fail(L->err, TL_ERR_UNSUPPORTED, "%s: model type \"%s\" (only BPE is supported)",
                       L->path, type ? type : "?");
    if (!json_is_object(vocab) || !json_is_array(merges))
        return tl_fail(L->err, TL_ERR_FORMAT,
                       "%s: a BPE model needs a \"vocab\" object and a \"merges\" array", L->path);
    bool f;
    TRY(get_bool(L, model, "model", "byte_fallback", false, &f));
    if (f)
        return tl_fail(L->err, TL_ERR_UNSUPPORTED,
                       "%s: model.byte_fallback is true (SentencePiece-style BPE is not supported)",
                       L->path);
    json_t *drop = json_object_get(model, "dropout");
    if (drop && !json_is_null(drop) && !(json_is_number(drop) && json_number_value(drop) == 0))
        return tl_fail(L->err, TL_ERR_UNSUPPORTED, "%s: model.dropout is set (BPE dropout)",
                       L->path);
    static const char *const affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        TRY(get_str(L, model, "model", affix[i], &s));
        if (s && *s)
            return tl_fail(L->err, TL_ERR_UNSUPPORTED, "%s: model.%s \"%.50s\" is not supported",
                           L->path, affix[i], s);
    }
    TRY(get_bool(L, model, "model", "ignore_merges", false, &t->ignore_merges));
    TRY(get_bool(L, model, "model", "fuse_unk", false, &t->fuse_unk));
    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added))
        return tl_fail(L->err, TL_ERR_FORMAT, "%s: added_tokens is not an array", L->path);
    TRY(load_vocab(L, t, vocab, added));
    TRY(get_str(L, model, "model", "unk_token", &s));
    t->unk_id = s ? tk_strmap_get(&t->vocab, t->arena, t->vtok_off, t->vtok_len, s, strlen(s)) : -1;
    if (s && t->unk_id < 0)
        return tl_fail(L->err, TL_ERR_FORMAT,
                       "%s: model.unk_token \"%.100s\" is not in the vocabulary", L->path, s);
    TRY(load_merges(L, t, merges));
    if (t->ignore_merges) TRY(build_raw_map(L, t));
    return TL_OK;
}

static enum tl_status load_normalizer(struct ld *L, struct tokenizer *t, json_t *n, int depth) {
    if (!n || json_is_null(n)) return TL_OK;
    const char *type = type_of(n);
    if (!strcmp(type, "Sequence") && depth < 4) {
        json_t *list = json_object_get(n, "normalizers"), *x;
        size_t i;
        if (!json_is_array(list))
            return tl_fail(L->err, TL_ERR_FORMAT,
                           "%s: normalizer Sequence without a normalizers array", L->path);
        json_array_foreach(list, i, x) TRY(load_normalizer(L, t, x, depth + 1));
        return TL_OK;
    }
    static const struct {
        const char *name;
        enum tk_norm k;
    } known[] = {
        {"NFC", TK_NORM_NFC}, {"NFD", TK_NORM_NFD}, {"NFKC", TK_NORM_NFKC}, {"NFKD", TK_NORM_NFKD}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (strcmp(type, known[i].name) != 0) continue;
        if (t->n_norms == TK_MAX_NORMS)
            return tl_fail(L->err, TL_ERR_UNSUPPORTED, "%s: more than %d normalizers", L->path,
                           TK_MAX_NORMS);
        t->norms[t->n_norms++] = known[i].k;
        return TL_OK;
    }
    return tl_fail(L->err, TL_ERR_UNSUPPORTED,
                   "%s: normalizer type \"%s\" (supported: NFC, NFD, NFKC, NFKD, Sequence)",
                   L->path, type);
}

/* HF ByteLevel's own split (use_regex), the GPT-2 pattern. */
#define GPT2_PATTERN                                                                               \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static enum tl_status add_split(struct ld *L, struct tokenizer *t, struct tk_split **out) {
    if (t->n_splits == TK_MAX_SPLITS)
        return tl_fail(L->err, TL_ERR_UNSUPPORTED, "%s: more than %d pre-tokenizers", L->path,
                       TK_MAX_SPLITS);
    *out = &t->splits[t->n_splits++];
    return TL_OK;
}

static enum tl_status load_pretok(struct ld *L, struct tokenizer *t, json_t *p, int depth,
                                  bool *byte_level) {
    const char *type = type_of(p);
    if (*byte_level)
        return tl_fail(L->err, TL_ERR_UNSUPPORTED, "%s: pre-tokenizer \"%s\" after ByteLevel",
                       L->path, type);
    if (!strcmp(type, "Sequence") && depth < 4) {
        json_t *list = json_object_get(p, "pretokenizers"), *x;
        size_t i;
        if (!json_is_array(list))
            return tl_fail(L->err, TL_ERR_FORMAT,
                           "%s: pre_tokenizer Sequence without a pretokenizers array", L->path);
        json_array_foreach(list, i, x) TRY(load_pretok(L, t, x, depth + 1, byte_level));
        return TL_OK;
    }
    struct tk_split *sp = NULL;
    if (!strcmp(type, "ByteLevel")) {
        bool prefix, regex;
        TRY(get_bool(L, p, "pre_tokenizer.ByteLevel", "add_prefix_space", true, &prefix));
        TRY(get_bool(L, p, "pre_tokenizer.ByteLevel", "use_regex", true, &regex));
        *byte_level = true;
        if (!prefix && !regex) return TL_OK;
        TRY(add_split(L, t, &sp));
        sp->behavior = TK_SPLIT_ISOLATED;
        sp->prefix_space = prefix;
        if (regex)
            TRY(tk_regex_compile(GPT2_PATTERN, strlen(GPT2_PATTERN), false, &sp->re, L->err));
        return TL_OK;
    }
    if (strcmp(type, "Split") != 0)
        return tl_fail(L->err, TL_ERR_UNSUPPORTED,
                       "%s: pre-tokenizer type \"%s\" (supported: Split, ByteLevel, Sequence)",
                       L->path, type);
    json_t *pat = json_object_get(p, "pattern");
    const char *re = json_string_value(json_object_get(pat, "Regex"));
    const char *lit = json_string_value(json_object_get(pat, "String"));
    const char *beh = json_string_value(json_object_get(p, "behavior"));
    if (!re == !lit || !beh)
        return tl_fail(L->err, TL_ERR_FORMAT,
                       "%s: a Split pre-tokenizer needs pattern.Regex or pattern.String, and a "
                       "behavior",
                       L->path);
    static const char *const behaviors[] = {"Isolated", "Removed", "MergedWithPrevious",
                                            "MergedWithNext", "Contiguous"};
    int b = -1;
    for (int i = 0; i < 5; i++)
        if (!strcmp(beh, behaviors[i])) b = i;
    if (b < 0)
        return tl_fail(L->err, TL_ERR_UNSUPPORTED, "%s: Split behavior \"%.50s\"", L->path, beh);
    TRY(add_split(L, t, &sp));
    sp->behavior = (enum tk_split_behavior)b;
    TRY(get_bool(L, p, "pre_tokenizer.Split", "invert", false, &sp->invert));
    const char *src = re ? re : lit;
    size_t n = json_string_length(json_object_get(pat, re ? "Regex" : "String"));
    if (strlen(src) != n)
        return tl_fail(L->err, TL_ERR_UNSUPPORTED, "%s: a Split pattern contains NUL", L->path);
    return tk_regex_compile(src, n, !re, &sp->re, L->err);
}

/* A post-processor's ids around sequence A: TemplateProcessing's single template. */
static enum tl_status load_template(struct ld *L, struct tokenizer *t, json_t *p) {
    json_t *single = json_object_get(p, "single"), *special = json_object_get(p, "special_tokens");
    int32_t pre[TK_MAX_AFFIX], suf[TK_MAX_AFFIX];
    int np = 0, ns = 0, seen_a = 0;
    size_t i;
    json_t *item;
    if (!json_is_array(single))
        return tl_fail(L->err, TL_ERR_FORMAT, "%s: TemplateProcessing without a single template",
                       L->path);
    json_array_foreach(single, i, item) {
        json_t *seq = json_object_get(item, "Sequence"),
               *tok = json_object_get(item, "SpecialToken");
        if (seq) {
            const char *which = json_string_value(json_object_get(seq, "id"));
            if (!which || strcmp(which, "A") != 0 || seen_a++)
                return tl_fail(L->err, TL_ERR_UNSUPPORTED,
                               "%s: TemplateProcessing single template must hold sequence A once",
                               L->path);
            continue;
        }
        const char *name = json_string_value(json_object_get(tok, "id"));
        json_t *ids = json_object_get(json_object_get(special, name ? name : ""), "ids"), *x;
        size_t k;
        if (!name || !json_is_array(ids))
            return tl_fail(L->err, TL_ERR_FORMAT,
                           "%s: TemplateProcessing single[%zu] names no special token with ids",
                           L->path, i);
        json_array_foreach(ids, k, x) {
            json_int_t id = json_integer_value(x);
            if (!json_is_integer(x) || id < 0 || id >= t->n_ids)
                return tl_fail(
                    L->err, TL_ERR_FORMAT,
                    "%s: TemplateProcessing special token \"%.50s\" has an id out of range",
                    L->path, name);
            if ((seen_a ? ns : np) == TK_MAX_AFFIX)
                return tl_fail(L->err, TL_ERR_UNSUPPORTED, "%s: more than %d template tokens",
                               L->path, TK_MAX_AFFIX);
            if (seen_a)
                suf[ns++] = (int32_t)id;
            else
                pre[np++] = (int32_t)id;
        }
    }
    if (!seen_a)
        return tl_fail(L->err, TL_ERR_UNSUPPORTED, "%s: TemplateProcessing without sequence A",
                       L->path);
    /* in a Sequence, a later processor wraps what the earlier ones produced */
    if (np + t->n_prefix > TK_MAX_AFFIX || ns + t->n_suffix > TK_MAX_AFFIX)
        return tl_fail(L->err, TL_ERR_UNSUPPORTED, "%s: more than %d template tokens", L->path,
                       TK_MAX_AFFIX);
    memmove(t->prefix + np, t->prefix, (size_t)t->n_prefix * sizeof *t->prefix);
    memcpy(t->prefix, pre, (size_t)np * sizeof *pre);
    memcpy(t->suffix + t->n_suffix, suf, (size_t)ns * sizeof *suf);
    t->n_prefix += np, t->n_suffix += ns;
    return TL_OK;
}

static enum tl_status load_post(struct ld *L, struct tokenizer *t, json_t *p, int depth) {
    if (!p || json_is_null(p)) return TL_OK;
    const char *type = type_of(p);
    if (!strcmp(type, "ByteLevel")) return TL_OK; /* offsets only */
    if (!strcmp(type, "TemplateProcessing")) return load_template(L, t, p);
    if (!strcmp(type, "Sequence") && depth < 4) {
        json_t *list = json_object_get(p, "processors"), *x;
        size_t i;
        if (!json_is_array(list))
            return tl_fail(L->err, TL_ERR_FORMAT, "%s: post_processor Sequence without processors",
                           L->path);
        json_array_foreach(list, i, x) TRY(load_post(L, t, x, depth + 1));
        return TL_OK;
    }
    return tl_fail(L->err, TL_ERR_UNSUPPORTED,
                   "%s: post_processor type \"%s\" (supported: ByteLevel, TemplateProcessing, "
                   "Sequence)",
                   L->path, type);
}

static enum tl_status check_decoder(struct ld *L, json_t *d, int depth) {
    const char *type = d && !json_is_null(d) ? type_of(d) : "null";
    if (!strcmp(type, "ByteLevel")) return TL_OK;
    if (!strcmp(type, "Sequence") && depth < 4) {
        json_t *list = json_object_get(d, "decoders"), *x;
        size_t i;
        if (json_array_size(list) == 0)
            return tl_fail(L->err, TL_ERR_UNSUPPORTED, "%s: decoder Sequence without decoders",
                           L->path);
        json_array_foreach(list, i, x) TRY(check_decoder(L, x, depth + 1));
        return TL_OK;
    }
    return tl_fail(L->err, TL_ERR_UNSUPPORTED, "%s: decoder type \"%s\" (only ByteLevel)", L->path,
                   type);
}

/* bos_token / eos_token / additional_special_tokens entries: a string or an AddedToken object. */
static const char *token_text(const json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    return json_string_value(json_object_get(v, "content"));
}

static enum tl_status config_token(struct ld *L, struct tokenizer *t, json_t *cfg, const char *key,
                                   int32_t *id) {
    json_t *v = json_object_get(cfg, key);
    *id = -1;
    if (!v || json_is_null(v)) return TL_OK;
    const char *s = token_text(v);
    if (!s)
        return tl_fail(L->err, TL_ERR_FORMAT, "%s: %s is neither a string nor an AddedToken",
                       L->path, key);
    *id = tokenizer_token_id(t, s);
    if (*id < 0)
        return tl_fail(L->err, TL_ERR_FORMAT, "%s: %s \"%.100s\" is not a token of tokenizer.json",
                       L->path, key, s);
    return TL_OK;
}

static enum tl_status load_config(struct ld *L, struct tokenizer *t, json_t *cfg) {
    TRY(config_token(L, t, cfg, "bos_token", &t->bos_id));
    TRY(config_token(L, t, cfg, "eos_token", &t->eos_id));
    TRY(get_bool(L, cfg, "tokenizer_config", "clean_up_tokenization_spaces", false, &t->clean_up));
    json_t *extra = json_object_get(cfg, "additional_special_tokens"), *x;
    size_t i;
    json_array_foreach(extra, i, x) { /* special for skip_special, as transformers has them */
        const char *s = token_text(x);
        int32_t id = s ? tokenizer_token_id(t, s) : -1;
        if (id >= 0) t->id_flags[id] |= TK_ID_SPECIAL;
    }
    const char *cls;
    TRY(get_str(L, cfg, "tokenizer_config", "tokenizer_class", &cls));
    static const char *const llama[] = {"LlamaTokenizer", "LlamaTokenizerFast",
                                        "CodeLlamaTokenizer", "CodeLlamaTokenizerFast"};
    for (size_t k = 0; cls && k < sizeof llama / sizeof llama[0]; k++) {
        if (strcmp(cls, llama[k]) != 0) continue;
        bool bos, eos;
        TRY(get_bool(L, cfg, "tokenizer_config", "add_bos_token", true, &bos));
        TRY(get_bool(L, cfg, "tokenizer_config", "add_eos_token", false, &eos));
        t->n_prefix = t->n_suffix = 0;
        if (bos && t->bos_id >= 0) t->prefix[t->n_prefix++] = t->bos_id;
        if (eos && t->eos_id >= 0) t->suffix[t->n_suffix++] = t->eos_id;
    }
    return TL_OK;
}

/* Both added-token tries: raw contents, and normalized contents of `normalized` tokens. */
static enum tl_status build_tries(struct ld *L, struct tokenizer *t) {
    size_t raw = 0, norm = 0;
    char **nc = calloc((size_t)t->n_added + 1, sizeof *nc);
    size_t *nl = calloc((size_t)t->n_added + 1, sizeof *nl);
    bool ok = nc && nl;
    for (int i = 0; ok && i < t->n_added; i++) {
        const struct tk_added *a = &t->added[i];
        if (!(a->flags & TK_ADDED_NORMALIZED))
            raw += a->len;
        else if ((ok = tk_normalize_copy(t, t->arena + a->off, a->len, &nc[i], &nl[i])))
            norm += nl[i];
    }
    ok = ok && tk_trie_init(&t->trie_raw, raw) && tk_trie_init(&t->trie_norm, norm);
    for (int i = 0; ok && i < t->n_added; i++) {
        const struct tk_added *a = &t->added[i];
        if (nc[i])
            tk_trie_add(&t->trie_norm, nc[i], nl[i], i);
        else
            tk_trie_add(&t->trie_raw, t->arena + a->off, a->len, i);
    }
    for (int i = 0; nc && i < t->n_added; i++) free(nc[i]);
    free(nc), free(nl);
    return ok ? TL_OK : tl_fail(L->err, TL_ERR_NOMEM, "out of memory");
}

static enum tl_status load(struct tokenizer *t, const char *tok_path, const char *cfg_path,
                           bool cfg_optional, struct tl_err *err) {
    struct ld L = {tok_path, err};
    json_t *root = NULL, *cfg = NULL;
    enum tl_status st = read_json(tok_path, false, &root, err);
    if (st != TL_OK) return st;
    bool byte_level = false;
    json_t *pre = json_object_get(root, "pre_tokenizer");
    if ((st = load_model(&L, t, root)) != TL_OK) goto out;
    if ((st = load_normalizer(&L, t, json_object_get(root, "normalizer"), 0)) != TL_OK) goto out;
    for (int i = 0; i < t->n_norms; i++)
        if (t->norms[i] == TK_NORM_NFC && !t->nfc_inert && !tk_nfc_table_build(t)) {
            st = tl_fail(err, TL_ERR_NOMEM, "out of memory");
            goto out;
        }
    if (!pre || json_is_null(pre)) {
        st = tl_fail(err, TL_ERR_UNSUPPORTED, "%s: no pre_tokenizer (a ByteLevel one is required)",
                     tok_path);
        goto out;
    }
    if ((st = load_pretok(&L, t, pre, 0, &byte_level)) != TL_OK) goto out;
    if (!byte_level) {
        st = tl_fail(err, TL_ERR_UNSUPPORTED,
                     "%s: pre_tokenizer has no ByteLevel step (only "
                     "byte-level BPE is supported)",
                     tok_path);
        goto out;
    }
    if ((st = load_post(&L, t, json_object_get(root, "post_processor"), 0)) != TL_OK) goto out;
    if ((st = check_decoder(&L, json_object_get(root, "decoder"), 0)) != TL_OK) goto out;
    if ((st = build_tries(&L, t)) != TL_OK) goto out;
    t->bos_id = t->eos_id = -1;
    if (cfg_path) {
        struct stat sb;
        if (cfg_optional && stat(cfg_path, &sb) != 0 && errno == ENOENT) goto out;
        L.path = cfg_path;
        if ((st = read_json(cfg_path, true, &cfg, err)) != TL_OK) goto out;
        st = load_config(&L, t, cfg);
    }
out:
    json_decref(root);
    json_decref(cfg);
    return st;
}

enum tl_status tokenizer_load_files(const char *tokenizer_json, const char *config_path,
                                    struct tokenizer **out, struct tl_err *err) {
    *out = NULL;
    struct tokenizer *t = calloc(1, sizeof *t);
    if (!t) return tl_fail(err, TL_ERR_NOMEM, "out of memory");
    atomic_init(&t->spare, NULL);
    enum tl_status st = load(t, tokenizer_json, config_path, false, err);
    if (st != TL_OK) return tokenizer_free(t), st;
    *out = t;
    return TL_OK;
}

enum tl_status tokenizer_load(const char *dir, struct tokenizer **out, struct tl_err *err) {
    *out = NULL;
    size_t n = strlen(dir) + 32;
    char *a = malloc(n), *b = malloc(n);
    struct tokenizer *t = calloc(1, sizeof *t);
    enum tl_status st = TL_ERR_NOMEM;
    if (a && b && t) {
        atomic_init(&t->spare, NULL);
        snprintf(a, n, "%s/tokenizer.json", dir);
        snprintf(b, n, "%s/tokenizer_config.json", dir);
        st = load(t, a, b, true, err);
    } else {
        tl_fail(err, st, "out of memory");
    }
    free(a), free(b);
    if (st != TL_OK) return tokenizer_free(t), st;
    *out = t;
    return TL_OK;
}

void tokenizer_free(struct tokenizer *t) {
    if (!t) return;
    free(t->arena), free(t->tok_off), free(t->tok_len), free(t->vtok_off), free(t->vtok_len);
    free(t->dec), free(t->dec_off), free(t->dec_len), free(t->id_flags);
    free(t->raw_bytes), free(t->raw_off), free(t->raw_len);
    free(t->vocab.slots), free(t->raw.slots), free(t->added_map.slots), free(t->merges.slots);
    free(t->merges.result);
    free(t->added), free(t->nfc_inert);
    tk_trie_free(&t->trie_raw), tk_trie_free(&t->trie_norm);
    for (int i = 0; i < t->n_splits; i++) pcre2_code_free(t->splits[i].re);
    tk_enc_free(atomic_load(&t->spare));
    free(t);
}

int tokenizer_n_ids(const struct tokenizer *t) {
    return t->n_ids;
}
int32_t tokenizer_bos_id(const struct tokenizer *t) {
    return t->bos_id;
}
int32_t tokenizer_eos_id(const struct tokenizer *t) {
    return t->eos_id;
}

bool tokenizer_is_special(const struct tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && (t->id_flags[id] & TK_ID_SPECIAL);
}

int32_t tokenizer_token_id(const struct tokenizer *t, const char *token) {
    size_t n = strlen(token);
    int32_t id = tk_strmap_get(&t->added_map, t->arena, t->tok_off, t->tok_len, token, n);
    return id >= 0 ? id : tk_strmap_get(&t->vocab, t->arena, t->vtok_off, t->vtok_len, token, n);
}

/* ---- decoding -------------------------------------------------------------------------- */

static enum tl_status check_id(const struct tokenizer *t, int32_t id, int pos, struct tl_err *err) {
    if (id < 0 || id >= t->n_ids)
        return tl_fail(err, TL_ERR_INVALID, "token id %d (at %d) is outside [0, %d)", id, pos,
                       t->n_ids);
    return TL_OK;
}

/* Whether decoding drops id: special under skip_special, or an id no token has (HF skips
 * those too). */
static bool dropped(const struct tokenizer *t, int32_t id, bool skip_special) {
    uint8_t f = t->id_flags[id];
    return !(f & TK_ID_VALID) || (skip_special && (f & TK_ID_SPECIAL));
}

enum tl_status tokenizer_decode(const struct tokenizer *t, const int32_t *ids, int n_ids,
                                bool skip_special, char **text, size_t *len, struct tl_err *err) {
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (int i = 0; i < n_ids; i++) {
        TRY(check_id(t, ids[i], i, err));
        if (!dropped(t, ids[i], skip_special)) total += t->dec_len[ids[i]];
    }
    char *out = malloc(3 * total + 4);
    if (!out) return tl_fail(err, TL_ERR_NOMEM, "tokenizer_decode: out of memory");
    struct u8dec d = {0};
    size_t o = 0;
    for (int i = 0; i < n_ids; i++) {
        if (dropped(t, ids[i], skip_special)) continue;
        const uint8_t *b = t->dec + t->dec_off[ids[i]];
        for (uint32_t k = 0; k < t->dec_len[ids[i]]; k++) o += u8dec_byte(&d, b[k], out + o);
    }
    o += u8dec_flush(&d, out + o);
    if (t->clean_up) o = clean_up(out, o);
    out[o] = 0;
    *text = out;
    *len = o;
    return TL_OK;
}

/* ---- incremental detokenizer ----------------------------------------------------------- */

struct detok {
    const struct tokenizer *t; /* borrowed */
    bool skip_special;
    struct u8dec u8;
    char *held; /* owned: decoded text not yet emitted */
    size_t n_held, cap_held;
    char *out; /* owned: what the last call returned */
    size_t cap_out;
};

enum tl_status detok_create(const struct tokenizer *t, bool skip_special, struct detok **out,
                            struct tl_err *err) {
    *out = calloc(1, sizeof **out);
    if (!*out) return tl_fail(err, TL_ERR_NOMEM, "detok_create: out of memory");
    (*out)->t = t;
    (*out)->skip_special = skip_special;
    return TL_OK;
}

void detok_free(struct detok *d) {
    if (!d) return;
    free(d->held), free(d->out), free(d);
}

static bool reserve(char **p, size_t *cap, size_t need) {
    if (need <= *cap) return true;
    size_t n = *cap ? *cap : 256;
    while (n < need) n *= 2;
    char *q = realloc(*p, n);
    if (!q) return false;
    *p = q, *cap = n;
    return true;
}

/* The longest prefix of held that later text cannot change. Every cleanup pattern starts with
 * a space, is ASCII, and spans at most 4 chars, and the passes only ever delete spaces; so no
 * pattern (nor one a pass creates) can straddle a cut whose 3 preceding bytes hold no space
 * before the first non-ASCII byte. Text before held ends at such a cut, so it counts as safe. */
static size_t safe_cut(const char *s, size_t n) {
    size_t c = n;
    for (;;) {
        size_t bad = SIZE_MAX;
        for (size_t k = 1; k <= 3 && k <= c; k++) {
            uint8_t b = (uint8_t)s[c - k];
            if (b >= 0x80) break;
            if (b == ' ') bad = c - k;
        }
        if (bad == SIZE_MAX) break;
        c = bad; /* every cut in (bad, c] has that space within 3 bytes */
    }
    while (c > 0 && c < n && ((uint8_t)s[c] & 0xC0) == 0x80) c--; /* whole characters only */
    return c;
}

/* Moves held[0..cut) to the caller, cleaned up. */
static enum tl_status emit_held(struct detok *d, size_t cut, const char **text, size_t *len,
                                struct tl_err *err) {
    if (!reserve(&d->out, &d->cap_out, cut + 1))
        return tl_fail(err, TL_ERR_NOMEM, "detok: out of memory");
    memcpy(d->out, d->held, cut);
    size_t n = d->t->clean_up ? clean_up(d->out, cut) : cut;
    d->out[n] = 0;
    memmove(d->held, d->held + cut, d->n_held - cut);
    d->n_held -= cut;
    *text = d->out;
    *len = n;
    return TL_OK;
}

enum tl_status detok_push(struct detok *d, int32_t id, const char **text, size_t *len,
                          struct tl_err *err) {
    const struct tokenizer *t = d->t;
    *text = "";
    *len = 0;
    TRY(check_id(t, id, 0, err));
    if (dropped(t, id, d->skip_special)) return TL_OK;
    uint32_t nb = t->dec_len[id];
    if (!reserve(&d->held, &d->cap_held, d->n_held + 3 * (size_t)nb + 8))
        return tl_fail(err, TL_ERR_NOMEM, "detok_push: out of memory");
    const uint8_t *b = t->dec + t->dec_off[id];
    for (uint32_t k = 0; k < nb; k++) d->n_held += u8dec_byte(&d->u8, b[k], d->held + d->n_held);
    return emit_held(d, t->clean_up ? safe_cut(d->held, d->n_held) : d->n_held, text, len, err);
}

enum tl_status detok_flush(struct detok *d, const char **text, size_t *len, struct tl_err *err) {
    if (!reserve(&d->held, &d->cap_held, d->n_held + 8))
        return tl_fail(err, TL_ERR_NOMEM, "detok_flush: out of memory");
    d->n_held += u8dec_flush(&d->u8, d->held + d->n_held);
    return emit_held(d, d->n_held, text, len, err);
}
