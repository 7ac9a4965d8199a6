/* test_safetensors: the safetensors reader against files written here into a fresh mkdtemp
 * directory per test: valid single files and sharded directories read back byte for byte, every
 * malformed header and index rejected with a message naming the file (and tensor), and a
 * deterministic fuzz smoke test (run under ASan+UBSan in CI) that mutates a valid file. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"

/* ---- fixture: one temp directory per test ---- */

struct fx {
    char dir[64];
};

static int fx_setup(void **state) {
    struct fx *fx = calloc(1, sizeof *fx);
    if (!fx) return -1;
    snprintf(fx->dir, sizeof fx->dir, "/tmp/tl_st_XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static void rm_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[PATH_MAX];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p) != 0) rm_tree(p);
    }
    closedir(d);
    rmdir(dir);
}

static int fx_teardown(void **state) {
    struct fx *fx = *state;
    rm_tree(fx->dir);
    free(fx);
    return 0;
}

static const char *fx_path(const struct fx *fx, const char *name, char *buf) {
    snprintf(buf, PATH_MAX, "%s/%s", fx->dir, name);
    return buf;
}

/* ---- writers ---- */

static void write_bytes(const char *path, const void *p, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_true(write(fd, p, n) == (ssize_t)n);
    close(fd);
}

/* JSON written with ' for " so headers stay readable in C source. */
static char *jq(const char *s) {
    char *o = strdup(s);
    assert_non_null(o);
    for (char *c = o; *c; c++)
        if (*c == '\'') *c = '"';
    return o;
}

static void put_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* A safetensors file whose length field says len_field, followed by header and data. */
static void write_st_raw(const char *path, uint64_t len_field, const char *header, const void *data,
                         size_t data_bytes) {
    size_t h = strlen(header);
    unsigned char *buf = malloc(8 + h + data_bytes + 1);
    assert_non_null(buf);
    put_le64(buf, len_field);
    memcpy(buf + 8, header, h);
    if (data_bytes) {
        if (data)
            memcpy(buf + 8 + h, data, data_bytes);
        else
            memset(buf + 8 + h, 0, data_bytes);
    }
    write_bytes(path, buf, 8 + h + data_bytes);
    free(buf);
}

/* header in jq() notation; data NULL means zeros. */
static void write_st(const char *path, const char *header_q, const void *data, size_t data_bytes) {
    char *h = jq(header_q);
    write_st_raw(path, strlen(h), h, data, data_bytes);
    free(h);
}

static void write_text(const char *path, const char *text_q) {
    char *t = jq(text_q);
    write_bytes(path, t, strlen(t));
    free(t);
}

/* ---- expectations ---- */

static void expect_msg(const struct tl_err *err, const char *needle) {
    if (needle && !strstr(err->msg, needle)) {
        print_error("message lacks \"%s\": %s\n", needle, err->msg);
        fail();
    }
}

static void expect_open_file_fails(const char *path, const char *n1, const char *n2) {
    struct st_set *set = (struct st_set *)&set; /* must be overwritten with NULL */
    struct tl_err err = {{0}};
    enum tl_status st = safetensors_open_file(path, &set, &err);
    if (st == TL_OK) {
        print_error("%s: opened, expected a failure\n", path);
        safetensors_close(set);
        fail();
    }
    assert_null(set);
    print_message("  -> %s\n", err.msg);
    expect_msg(&err, path);
    expect_msg(&err, n1);
    expect_msg(&err, n2);
}

static void expect_open_dir_fails(const char *dir, const char *n1, const char *n2) {
    struct st_set *set = (struct st_set *)&set;
    struct tl_err err = {{0}};
    enum tl_status st = safetensors_open_dir(dir, &set, &err);
    if (st == TL_OK) {
        print_error("%s: opened, expected a failure\n", dir);
        safetensors_close(set);
        fail();
    }
    assert_null(set);
    print_message("  -> %s\n", err.msg);
    expect_msg(&err, dir);
    expect_msg(&err, n1);
    expect_msg(&err, n2);
}

static struct st_set *open_file_ok(const char *path) {
    struct st_set *set = NULL;
    struct tl_err err = {{0}};
    enum tl_status st = safetensors_open_file(path, &set, &err);
    if (st != TL_OK) print_error("%s\n", err.msg);
    assert_int_equal(st, TL_OK);
    assert_non_null(set);
    return set;
}

static struct st_set *open_dir_ok(const char *dir) {
    struct st_set *set = NULL;
    struct tl_err err = {{0}};
    enum tl_status st = safetensors_open_dir(dir, &set, &err);
    if (st != TL_OK) print_error("%s\n", err.msg);
    assert_int_equal(st, TL_OK);
    assert_non_null(set);
    return set;
}

static const struct st_tensor *must_find(const struct st_set *set, const char *name) {
    const struct st_tensor *t = safetensors_find(set, name);
    if (!t) print_error("tensor %s not found\n", name);
    assert_non_null(t);
    assert_string_equal(t->name, name);
    return t;
}

static void expect_shape(const struct st_tensor *t, enum tl_dtype dt, int ndim,
                         const int64_t *shape, uint64_t nbytes) {
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->ndim, ndim);
    for (int i = 0; i < ndim; i++) assert_int_equal(t->shape[i], shape[i]);
    assert_int_equal(t->nbytes, nbytes);
}

/* ---- valid files ---- */

#define VALID_HEADER                                                                               \
    "{'__metadata__':{'format':'pt','note':'hello'},"                                              \
    "'w.bf16':{'dtype':'BF16','shape':[2,3],'data_offsets':[0,12]},"                               \
    "'w.f32':{'dtype':'F32','shape':[4],'data_offsets':[12,28]},"                                  \
    "'w.f16':{'data_offsets':[28,34],'shape':[3,1],'dtype':'F16'},"                                \
    "'scalar':{'dtype':'F32','shape':[],'data_offsets':[34,38]},"                                  \
    "'empty':{'dtype':'BF16','shape':[0,5],'data_offsets':[38,38]}}"
#define VALID_DATA_BYTES 38

static void fill_pattern(unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 7 + 3);
}

/* The valid header padded with spaces so the data area starts 8-aligned, as writers do. */
static char *valid_header_padded(void) {
    char *h = jq(VALID_HEADER);
    size_t n = strlen(h), pad = (8 - n % 8) % 8 + 8;
    char *p = malloc(n + pad + 1);
    assert_non_null(p);
    memcpy(p, h, n);
    memset(p + n, ' ', pad);
    p[n + pad] = '\0';
    free(h);
    return p;
}

static void test_valid_file(void **state) {
    struct fx *fx = *state;
    char path[PATH_MAX], saved[PATH_MAX];
    fx_path(fx, "model.safetensors", path);
    strcpy(saved, path);
    unsigned char data[VALID_DATA_BYTES];
    fill_pattern(data, sizeof data);
    char *h = valid_header_padded();
    write_st_raw(path, strlen(h), h, data, sizeof data);
    free(h);

    struct st_set *set = open_file_ok(path);
    memset(path, 'x', sizeof path - 1); /* the set must own its copy of the path */
    assert_int_equal(safetensors_count(set), 5);

    const struct st_tensor *t = must_find(set, "w.bf16");
    expect_shape(t, TL_DTYPE_BF16, 2, (const int64_t[]){2, 3}, 12);
    assert_memory_equal(t->data, data + 0, 12);
    assert_string_equal(t->file, saved);

    t = must_find(set, "w.f32");
    expect_shape(t, TL_DTYPE_F32, 1, (const int64_t[]){4}, 16);
    assert_memory_equal(t->data, data + 12, 16);

    t = must_find(set, "w.f16");
    expect_shape(t, TL_DTYPE_F16, 2, (const int64_t[]){3, 1}, 6);
    assert_memory_equal(t->data, data + 28, 6);

    t = must_find(set, "scalar");
    expect_shape(t, TL_DTYPE_F32, 0, NULL, 4);
    assert_memory_equal(t->data, data + 34, 4);

    t = must_find(set, "empty");
    expect_shape(t, TL_DTYPE_BF16, 2, (const int64_t[]){0, 5}, 0);

    assert_null(safetensors_find(set, "__metadata__"));
    assert_null(safetensors_find(set, "missing"));
    assert_null(safetensors_find(set, ""));
    assert_null(safetensors_find(set, NULL));

    /* get() reaches every tensor exactly once, and find() agrees with it. */
    for (int i = 0; i < safetensors_count(set); i++) {
        const struct st_tensor *g = safetensors_get(set, i);
        assert_non_null(g);
        assert_ptr_equal(safetensors_find(set, g->name), g);
    }
    assert_null(safetensors_get(set, -1));
    assert_null(safetensors_get(set, 5));
    safetensors_close(set);

    safetensors_close(NULL);
    assert_int_equal(safetensors_count(NULL), 0);
    assert_null(safetensors_find(NULL, "w.f32"));
    assert_null(safetensors_get(NULL, 0));
}

static void test_valid_edge_files(void **state) {
    struct fx *fx = *state;
    char path[PATH_MAX];
    fx_path(fx, "x.safetensors", path);

    /* No tensors, no data area. */
    write_st(path, "{}", NULL, 0);
    struct st_set *set = open_file_ok(path);
    assert_int_equal(safetensors_count(set), 0);
    assert_null(safetensors_find(set, "a"));
    safetensors_close(set);

    /* Metadata only, leading and trailing whitespace, an empty tensor at the very end. */
    write_st(path, "  {'__metadata__':{},'e':{'dtype':'U8','shape':[0],'data_offsets':[0,0]}}   ",
             NULL, 0);
    set = open_file_ok(path);
    assert_int_equal(safetensors_count(set), 1);
    assert_int_equal(must_find(set, "e")->nbytes, 0);
    safetensors_close(set);

    /* Holes in the data area are tolerated; touching ranges are not overlaps; empty tensors
     * sitting inside another tensor's range are not overlaps. */
    write_st(path,
             "{'b':{'dtype':'I32','shape':[1],'data_offsets':[4,8]},"
             "'a':{'dtype':'I8','shape':[2],'data_offsets':[0,2]},"
             "'z':{'dtype':'I8','shape':[0],'data_offsets':[5,5]},"
             "'c':{'dtype':'F64','shape':[1,1],'data_offsets':[8,16]}}",
             NULL, 20);
    set = open_file_ok(path);
    assert_int_equal(safetensors_count(set), 4);
    must_find(set, "a");
    must_find(set, "b");
    must_find(set, "c");
    must_find(set, "z");
    safetensors_close(set);

    /* Every dtype the format names. */
    write_st(path,
             "{'a':{'dtype':'F64','shape':[1],'data_offsets':[0,8]},"
             "'b':{'dtype':'I64','shape':[1],'data_offsets':[8,16]},"
             "'c':{'dtype':'U64','shape':[1],'data_offsets':[16,24]},"
             "'d':{'dtype':'I32','shape':[1],'data_offsets':[24,28]},"
             "'e':{'dtype':'U32','shape':[1],'data_offsets':[28,32]},"
             "'f':{'dtype':'I16','shape':[1],'data_offsets':[32,34]},"
             "'g':{'dtype':'U16','shape':[1],'data_offsets':[34,36]},"
             "'h':{'dtype':'I8','shape':[1],'data_offsets':[36,37]},"
             "'i':{'dtype':'U8','shape':[1],'data_offsets':[37,38]},"
             "'j':{'dtype':'BOOL','shape':[1],'data_offsets':[38,39]},"
             "'k':{'dtype':'F8_E4M3','shape':[1],'data_offsets':[39,40]},"
             "'l':{'dtype':'F8_E5M2','shape':[1],'data_offsets':[40,41]}}",
             NULL, 41);
    set = open_file_ok(path);
    assert_int_equal(safetensors_count(set), 12);
    assert_int_equal(must_find(set, "k")->dtype, TL_DTYPE_F8_E4M3);
    safetensors_close(set);

    /* Many tensors: lookup stays right past the trivial sizes. */
    size_t cap = 64 * 1024, o = 0;
    char *hdr = malloc(cap);
    assert_non_null(hdr);
    o += (size_t)snprintf(hdr + o, cap - o, "{");
    for (int i = 0; i < 500; i++)
        o += (size_t)snprintf(
            hdr + o, cap - o,
            "%s\"t%03d\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[%d,%d]}", i ? "," : "",
            (i * 37) % 500, i, i + 1);
    snprintf(hdr + o, cap - o, "}");
    write_st_raw(path, strlen(hdr), hdr, NULL, 500);
    free(hdr);
    set = open_file_ok(path);
    assert_int_equal(safetensors_count(set), 500);
    for (int i = 0; i < 500; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%03d", i);
        must_find(set, name);
    }
    assert_null(safetensors_find(set, "t500"));
    assert_null(safetensors_find(set, "t"));
    safetensors_close(set);
}

/* ---- rejected single files ---- */

static void test_truncated_and_length_field(void **state) {
    struct fx *fx = *state;
    char path[PATH_MAX];
    fx_path(fx, "bad.safetensors", path);

    write_bytes(path, "", 0);
    expect_open_file_fails(path, "only 0 bytes", NULL);
    write_bytes(path, "\x05\0\0\0\0", 5);
    expect_open_file_fails(path, "only 5 bytes", NULL);

    /* Header length larger than what follows. */
    write_st_raw(path, 100, "{}", NULL, 8);
    expect_open_file_fails(path, "truncated", NULL);
    write_st_raw(path, 3, "{}", NULL, 0);
    expect_open_file_fails(path, "truncated", NULL);
    /* Exactly the cap, but the file is small: a truncation, not a cap breach. */
    write_st_raw(path, SAFETENSORS_MAX_HEADER_BYTES, "{}", NULL, 0);
    expect_open_file_fails(path, "truncated", NULL);

    /* Huge lengths: 2^63, all ones, and one past the cap. */
    write_st_raw(path, UINT64_C(1) << 63, "{}", NULL, 0);
    expect_open_file_fails(path, "9223372036854775808", "limit");
    write_st_raw(path, UINT64_MAX, "{}", NULL, 0);
    expect_open_file_fails(path, "limit", NULL);
    write_st_raw(path, (uint64_t)SAFETENSORS_MAX_HEADER_BYTES + 1, "{}", NULL, 0);
    expect_open_file_fails(path, "limit", NULL);

    /* Header length shorter than the JSON: the cut JSON does not parse. */
    write_st_raw(path, 1, "{}", NULL, 0);
    expect_open_file_fails(path, "not valid JSON", NULL);
    /* Header length zero. */
    write_st_raw(path, 0, "", NULL, 0);
    expect_open_file_fails(path, "not valid JSON", NULL);

    /* Not a file at all. */
    fx_path(fx, "does-not-exist.safetensors", path);
    expect_open_file_fails(path, "cannot open", NULL);
    expect_open_file_fails(fx->dir, "not a regular file", NULL);
    /* A FIFO must be refused, not waited on for a writer. */
    fx_path(fx, "fifo.safetensors", path);
    assert_int_equal(mkfifo(path, 0644), 0);
    expect_open_file_fails(path, "not a regular file", NULL);
}

struct bad_case {
    const char *header;  /* jq() notation */
    size_t data_bytes;   /* zeros after the header */
    const char *n1, *n2; /* the message must contain both (besides the path) */
};

static const struct bad_case bad_headers[] = {
    /* not JSON, or JSON of the wrong shape */
    {"hello", 0, "not valid JSON", "line 1"},
    {"{'a':", 0, "not valid JSON", NULL},
    {"'a string'", 0, "not valid JSON", NULL},
    {"[1,2,3]", 0, "JSON array", "expected an object"},
    {"{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}} x", 4, "not valid JSON", NULL},
    {"{'__metadata__':'pt'}", 0, "__metadata__", "expected an object"},
    {"{'':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}}", 4, "empty name", NULL},
    /* duplicate keys, at the top level and inside an entry */
    {"{'t':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},"
     "'t':{'dtype':'F32','shape':[1],'data_offsets':[4,8]}}",
     8, "duplicate", NULL},
    {"{'t':{'dtype':'F32','dtype':'F16','shape':[1],'data_offsets':[0,4]}}", 4, "duplicate", NULL},
    /* entry shape */
    {"{'t':5}", 0, "\"t\"", "expected an object"},
    {"{'t':{'shape':[1],'data_offsets':[0,4]}}", 4, "\"t\"", "missing \"dtype\""},
    {"{'t':{'dtype':'F32','data_offsets':[0,4]}}", 4, "\"t\"", "missing \"shape\""},
    {"{'t':{'dtype':'F32','shape':[1]}}", 4, "\"t\"", "missing \"data_offsets\""},
    {"{'t':{'dtype':'F32','shape':[1],'data_offsets':[0,4],'extra':1}}", 4, "\"t\"", "\"extra\""},
    /* dtype */
    {"{'t':{'dtype':'F4','shape':[1],'data_offsets':[0,4]}}", 4, "\"t\"", "unknown dtype \"F4\""},
    {"{'t':{'dtype':'f32','shape':[1],'data_offsets':[0,4]}}", 4, "\"t\"", "unknown dtype"},
    {"{'t':{'dtype':4,'shape':[1],'data_offsets':[0,4]}}", 4, "\"t\"", "dtype is a JSON integer"},
    /* shape */
    {"{'t':{'dtype':'F32','shape':[-2],'data_offsets':[0,8]}}", 8, "\"t\"", "shape[0] is -2"},
    {"{'t':{'dtype':'F32','shape':[2,-1],'data_offsets':[0,8]}}", 8, "\"t\"", "shape[1]"},
    {"{'t':{'dtype':'F32','shape':[2.0],'data_offsets':[0,8]}}", 8, "\"t\"",
     "shape[0] is a JSON real number"},
    {"{'t':{'dtype':'F32','shape':['2'],'data_offsets':[0,8]}}", 8, "\"t\"", "shape[0]"},
    {"{'t':{'dtype':'F32','shape':2,'data_offsets':[0,8]}}", 8, "\"t\"", "shape is a JSON"},
    {"{'t':{'dtype':'U8','shape':[1,1,1,1,1,1,1,1,1],'data_offsets':[0,1]}}", 1, "\"t\"", "9 dims"},
    /* offsets */
    {"{'t':{'dtype':'F32','shape':[2],'data_offsets':[8,0]}}", 8, "\"t\"", "reversed"},
    {"{'t':{'dtype':'F32','shape':[2],'data_offsets':[0]}}", 8, "\"t\"", "[begin, end]"},
    {"{'t':{'dtype':'F32','shape':[2],'data_offsets':[0,8,8]}}", 8, "\"t\"", "[begin, end]"},
    {"{'t':{'dtype':'F32','shape':[2],'data_offsets':[-8,0]}}", 8, "\"t\"", "[begin, end]"},
    {"{'t':{'dtype':'F32','shape':[2],'data_offsets':{'a':0}}}", 8, "\"t\"", "[begin, end]"},
    {"{'t':{'dtype':'F32','shape':[2],'data_offsets':[0,8.5]}}", 8, "\"t\"", "[begin, end]"},
    {"{'t':{'dtype':'F32','shape':[2],'data_offsets':[8,16]}}", 8, "\"t\"", "past the end"},
    {"{'t':{'dtype':'F32','shape':[2],'data_offsets':[0,8]}}", 7, "\"t\"", "past the end"},
    {"{'t':{'dtype':'F32','shape':[0],'data_offsets':[9,9]}}", 8, "\"t\"", "past the end"},
    {"{'t':{'dtype':'U8','shape':[1],'data_offsets':[9223372036854775806,9223372036854775807]}}", 8,
     "\"t\"", "past the end"},
    {"{'t':{'dtype':'U8','shape':[1],'data_offsets':[0,99999999999999999999]}}", 8,
     "not valid JSON", NULL},
    /* byte size */
    {"{'t':{'dtype':'F32','shape':[3],'data_offsets':[0,8]}}", 12, "\"t\"", "needs 12 bytes"},
    {"{'t':{'dtype':'BF16','shape':[2,2],'data_offsets':[0,16]}}", 16, "\"t\"", "needs 8 bytes"},
    {"{'t':{'dtype':'F32','shape':[],'data_offsets':[0,0]}}", 8, "\"t\"", "needs 4 bytes"},
    {"{'t':{'dtype':'F32','shape':[0],'data_offsets':[0,4]}}", 8, "\"t\"", "needs 0 bytes"},
    /* overflow */
    {"{'t':{'dtype':'BF16','shape':[4294967296,4294967296,2],'data_offsets':[0,8]}}", 8, "\"t\"",
     "more elements"},
    {"{'t':{'dtype':'U8','shape':[9223372036854775807,2],'data_offsets':[0,8]}}", 8, "\"t\"",
     "more elements"},
    {"{'t':{'dtype':'F32','shape':[4611686018427387904],'data_offsets':[0,8]}}", 8, "\"t\"",
     "more bytes"},
    {"{'t':{'dtype':'F64','shape':[1152921504606846976],'data_offsets':[0,8]}}", 8, "\"t\"",
     "more bytes"},
    /* overlaps: both tensors named */
    {"{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},"
     "'b':{'dtype':'F32','shape':[2],'data_offsets':[4,12]}}",
     12, "\"a\"", "\"b\""},
    {"{'b':{'dtype':'F32','shape':[2],'data_offsets':[4,12]},"
     "'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},"
     "'c':{'dtype':'F32','shape':[1],'data_offsets':[4,8]}}",
     12, "\"b\"", "\"c\""},
    {"{'a':{'dtype':'F32','shape':[4],'data_offsets':[0,16]},"
     "'b':{'dtype':'F32','shape':[1],'data_offsets':[4,8]}}",
     16, "overlap", "\"b\""},
    {"{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},"
     "'b':{'dtype':'U8','shape':[8],'data_offsets':[0,8]}}",
     8, "\"a\"", "\"b\""},
    {"{'big':{'dtype':'F32','shape':[4],'data_offsets':[0,16]},"
     "'s1':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},"
     "'late':{'dtype':'F32','shape':[1],'data_offsets':[12,16]}}",
     16, "\"big\"", "overlap"},
};

static void test_bad_headers(void **state) {
    struct fx *fx = *state;
    char path[PATH_MAX];
    fx_path(fx, "bad.safetensors", path);
    for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
        const struct bad_case *c = &bad_headers[i];
        print_message("case %zu: %s\n", i, c->header);
        write_st(path, c->header, NULL, c->data_bytes);
        expect_open_file_fails(path, c->n1, c->n2);
    }
}

/* Names are hostile too: control bytes are escaped and long names cut, so the message stays
 * readable and still names the file. */
static void test_hostile_names_in_messages(void **state) {
    struct fx *fx = *state;
    char path[PATH_MAX];
    fx_path(fx, "bad.safetensors", path);
    write_st(path, "{'x\\u001b[2J\\\"y':{'dtype':'Q9','shape':[1],'data_offsets':[0,1]}}", NULL, 1);
    struct st_set *set = NULL;
    struct tl_err err = {{0}};
    assert_int_not_equal(safetensors_open_file(path, &set, &err), TL_OK);
    expect_msg(&err, path);
    expect_msg(&err, "\"x\\x1b[2J\\x22y\"");
    assert_null(strchr(err.msg, 0x1b));

    size_t n = 5000;
    char *hdr = malloc(n + 200);
    assert_non_null(hdr);
    strcpy(hdr, "{\"");
    memset(hdr + 2, 'n', n);
    strcpy(hdr + 2 + n, "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,3]}}");
    write_st_raw(path, strlen(hdr), hdr, NULL, 4);
    free(hdr);
    assert_int_not_equal(safetensors_open_file(path, &set, &err), TL_OK);
    expect_msg(&err, path);
    expect_msg(&err, "nnn...\"");
    expect_msg(&err, "needs 4 bytes");

    /* Cut on a UTF-8 character boundary, never inside one. */
    n = 300;
    hdr = malloc(3 * n + 200);
    assert_non_null(hdr);
    strcpy(hdr, "{\"");
    for (size_t i = 0; i < n; i++) memcpy(hdr + 2 + 3 * i, "\xe2\x82\xac", 3); /* U+20AC */
    strcpy(hdr + 2 + 3 * n, "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,3]}}");
    write_st_raw(path, strlen(hdr), hdr, NULL, 4);
    free(hdr);
    assert_int_not_equal(safetensors_open_file(path, &set, &err), TL_OK);
    expect_msg(&err, "\xe2\x82\xac...\"");
}

/* ---- sharded directories ---- */

#define SHARD1                                                                                     \
    "{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},'b':{'dtype':'BF16','shape':[2],'data_" \
    "offsets':[8,12]}}"
#define SHARD2                                                                                     \
    "{'__metadata__':{'format':'pt'},'c':{'dtype':'F16','shape':[1],'data_offsets':[0,2]}}"
#define INDEX_OK                                                                                   \
    "{'metadata':{'total_size':14},'weight_map':{'a':'s1.safetensors','b':'s1.safetensors',"       \
    "'c':'s2.safetensors'}}"

static void write_shards(const struct fx *fx) {
    char p[PATH_MAX];
    unsigned char d[14];
    fill_pattern(d, sizeof d);
    write_st(fx_path(fx, "s1.safetensors", p), SHARD1, d, 12);
    write_st(fx_path(fx, "s2.safetensors", p), SHARD2, d + 12, 2);
}

static void test_sharded_valid(void **state) {
    struct fx *fx = *state;
    char p[PATH_MAX], s1[PATH_MAX], s2[PATH_MAX];
    write_shards(fx);
    write_text(fx_path(fx, "model.safetensors.index.json", p), INDEX_OK);
    /* A model.safetensors beside the index is ignored: the index wins. */
    write_bytes(fx_path(fx, "model.safetensors", p), "junk", 4);
    fx_path(fx, "s1.safetensors", s1);
    fx_path(fx, "s2.safetensors", s2);
    unsigned char d[14];
    fill_pattern(d, sizeof d);

    struct st_set *set = open_dir_ok(fx->dir);
    assert_int_equal(safetensors_count(set), 3);
    const struct st_tensor *t = must_find(set, "a");
    expect_shape(t, TL_DTYPE_F32, 1, (const int64_t[]){2}, 8);
    assert_memory_equal(t->data, d, 8);
    assert_string_equal(t->file, s1);
    t = must_find(set, "b");
    expect_shape(t, TL_DTYPE_BF16, 1, (const int64_t[]){2}, 4);
    assert_memory_equal(t->data, d + 8, 4);
    assert_string_equal(t->file, s1);
    t = must_find(set, "c");
    expect_shape(t, TL_DTYPE_F16, 1, (const int64_t[]){1}, 2);
    assert_memory_equal(t->data, d + 12, 2);
    assert_string_equal(t->file, s2);
    safetensors_close(set);

    /* A trailing slash on the directory is fine. */
    snprintf(p, sizeof p, "%s/", fx->dir);
    set = open_dir_ok(p);
    assert_int_equal(safetensors_count(set), 3);
    safetensors_close(set);
}

static void test_single_in_dir(void **state) {
    struct fx *fx = *state;
    char p[PATH_MAX];
    expect_open_dir_fails(fx->dir, "no model.safetensors or model.safetensors.index.json",
                          "--load-format dummy");

    unsigned char d[VALID_DATA_BYTES];
    fill_pattern(d, sizeof d);
    write_st(fx_path(fx, "model.safetensors", p), VALID_HEADER, d, sizeof d);
    struct st_set *set = open_dir_ok(fx->dir);
    assert_int_equal(safetensors_count(set), 5);
    assert_string_equal(must_find(set, "w.f32")->file, p);
    assert_memory_equal(must_find(set, "w.f32")->data, d + 12, 16);
    safetensors_close(set);

    /* The single file is broken: its own message comes through. */
    write_st(p, "{'t':{'dtype':'F32','shape':[3],'data_offsets':[0,8]}}", NULL, 12);
    expect_open_dir_fails(fx->dir, p, "\"t\"");

    fx_path(fx, "nope", p);
    expect_open_dir_fails(p, "No such file", NULL);
    write_bytes(p, "x", 1);
    expect_open_dir_fails(p, "not a directory", NULL);
}

struct bad_index {
    const char *index; /* jq() notation; shards s1 (a, b) and s2 (c) are present */
    const char *n1, *n2;
};

static const struct bad_index bad_indexes[] = {
    {"", "empty", NULL},
    {"{'weight_map':", "not valid JSON", NULL},
    {"[]", "weight_map", NULL},
    {"{'metadata':{}}", "weight_map", NULL},
    {"{'weight_map':[]}", "weight_map", NULL},
    {"{'weight_map':{}}", "weight_map is empty", NULL},
    {"{'weight_map':{'a':'s1.safetensors','a':'s1.safetensors'}}", "duplicate", NULL},
    {"{'weight_map':{'a':1,'b':'s1.safetensors','c':'s2.safetensors'}}", "\"a\"", "JSON integer"},
    /* shard names that would leave the directory, or name no file */
    {"{'weight_map':{'a':'../x','b':'s1.safetensors','c':'s2.safetensors'}}", "\"../x\"",
     "plain file name"},
    {"{'weight_map':{'a':'..','b':'s1.safetensors','c':'s2.safetensors'}}", "\"..\"",
     "plain file name"},
    {"{'weight_map':{'a':'.','b':'s1.safetensors','c':'s2.safetensors'}}", "\".\"",
     "plain file name"},
    {"{'weight_map':{'a':'','b':'s1.safetensors','c':'s2.safetensors'}}", "\"\"",
     "plain file name"},
    {"{'weight_map':{'a':'/etc/passwd','b':'s1.safetensors','c':'s2.safetensors'}}",
     "\"/etc/passwd\"", "plain file name"},
    {"{'weight_map':{'a':'sub/s1.safetensors','b':'s1.safetensors','c':'s2.safetensors'}}",
     "\"sub/s1.safetensors\"", "plain file name"},
    /* a shard that does not exist */
    {"{'weight_map':{'a':'s1.safetensors','b':'s1.safetensors','c':'nope.safetensors'}}",
     "nope.safetensors", "cannot open"},
    /* the index is its own shard */
    {"{'weight_map':{'a':'model.safetensors.index.json'}}", "model.safetensors.index.json",
     "shard"},
    /* a tensor the index assigns to a shard that lacks it */
    {"{'weight_map':{'a':'s1.safetensors','b':'s1.safetensors','c':'s2.safetensors',"
     "'d':'s1.safetensors'}}",
     "\"d\"", "s1.safetensors"},
    /* a tensor in a shard but not in the index */
    {"{'weight_map':{'a':'s1.safetensors','c':'s2.safetensors'}}", "\"b\"", "does not list"},
    /* a tensor in a shard other than the one the index names */
    {"{'weight_map':{'a':'s2.safetensors','b':'s1.safetensors','c':'s2.safetensors'}}", "\"a\"",
     "assigns it to \"s2.safetensors\""},
};

static void test_sharded_bad(void **state) {
    struct fx *fx = *state;
    char p[PATH_MAX];
    write_shards(fx);
    fx_path(fx, "model.safetensors.index.json", p);
    for (size_t i = 0; i < sizeof bad_indexes / sizeof bad_indexes[0]; i++) {
        print_message("case %zu: %s\n", i, bad_indexes[i].index);
        write_text(p, bad_indexes[i].index);
        expect_open_dir_fails(fx->dir, bad_indexes[i].n1, bad_indexes[i].n2);
    }

    /* A tensor held by two shards: both are named. */
    write_text(p, INDEX_OK);
    char s2[PATH_MAX];
    write_st(fx_path(fx, "s2.safetensors", s2),
             "{'c':{'dtype':'F16','shape':[1],'data_offsets':[0,2]},"
             "'a':{'dtype':'F32','shape':[2],'data_offsets':[2,10]}}",
             NULL, 10);
    expect_open_dir_fails(fx->dir, "tensor \"a\" is in both", "s1.safetensors");
    expect_open_dir_fails(fx->dir, s2, NULL);

    /* A broken shard: the message names the index, the shard and what is wrong with it. */
    write_st(s2, "{'c':{'dtype':'F16','shape':[1],'data_offsets':[0,4]}}", NULL, 4);
    expect_open_dir_fails(fx->dir, s2, "needs 2 bytes");
    expect_open_dir_fails(fx->dir, p, NULL);

    /* An index over the size limit (sparse, so the test stays cheap). */
    int fd = open(p, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)SAFETENSORS_MAX_HEADER_BYTES + 1), 0);
    close(fd);
    expect_open_dir_fails(fx->dir, p, "limit");

    /* The index is a directory. */
    unlink(p);
    assert_int_equal(mkdir(p, 0755), 0);
    expect_open_dir_fails(fx->dir, "not a regular file", NULL);
}

/* ---- fuzz smoke test ---- */

static uint64_t rng_next(uint64_t *s) { /* xorshift64*: deterministic across hosts */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

/* On success, every tensor must be self-consistent and readable end to end. */
static void check_set(const struct st_set *set) {
    for (int i = 0; i < safetensors_count(set); i++) {
        const struct st_tensor *t = safetensors_get(set, i);
        assert_non_null(t);
        assert_true(t->ndim >= 0 && t->ndim <= SAFETENSORS_MAX_DIMS);
        uint64_t n = dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++) {
            assert_true(t->shape[d] >= 0);
            n *= (uint64_t)t->shape[d];
        }
        assert_int_equal(n, t->nbytes);
        const unsigned char *p = t->data;
        unsigned sum = 0;
        for (uint64_t b = 0; b < t->nbytes; b++) sum += p[b];
        (void)sum;
        assert_ptr_equal(safetensors_find(set, t->name), t);
    }
}

static size_t mutate(unsigned char *buf, size_t len, size_t hdr_len, uint64_t *rng) {
    static const char interesting[] = "{}[]\":,-0123456789 eE.\\tfnu";
    int k = 1 + (int)(rng_next(rng) % 3);
    for (int m = 0; m < k && len > 0; m++) {
        uint64_t r = rng_next(rng);
        size_t hdr_end = 8 + hdr_len < len ? 8 + hdr_len : len;
        switch (r % 6) {
        case 0: /* bit flip anywhere */
            buf[(r >> 8) % len] ^= (unsigned char)(1u << ((r >> 4) % 8));
            break;
        case 1: /* byte overwrite in the header */
            if (hdr_end > 8)
                buf[8 + (r >> 8) % (hdr_end - 8)] =
                    (r >> 3) % 4 ? (unsigned char)interesting[(r >> 40) % (sizeof interesting - 1)]
                                 : (unsigned char)(r >> 48);
            break;
        case 2: /* digit edit: hits shapes and offsets */
            for (size_t i = 8 + (r >> 8) % (hdr_end > 8 ? hdr_end - 8 : 1); i < hdr_end; i++) {
                if (buf[i] >= '0' && buf[i] <= '9') {
                    buf[i] = (unsigned char)('0' + (r >> 40) % 10);
                    break;
                }
            }
            break;
        case 3: /* truncation */
            len = (r >> 8) % len;
            break;
        case 4: { /* header length field */
            uint64_t v;
            switch ((r >> 8) % 4) {
            case 0:
                v = hdr_len + ((r >> 16) % 17) - 8;
                break;
            case 1:
                v = r >> 20;
                break;
            case 2:
                v = (uint64_t)SAFETENSORS_MAX_HEADER_BYTES + (r >> 16) % 3 - 1;
                break;
            default:
                v = (r >> 16) % (len + 16);
                break;
            }
            if (len >= 8) put_le64(buf, v);
            break;
        }
        default: /* overwrite a byte with 0, 0xff or a quote */
            buf[(r >> 8) % len] = "\0\xff\"}"[(r >> 40) % 4];
            break;
        }
    }
    return len;
}

static void test_fuzz_file(void **state) {
    struct fx *fx = *state;
    char path[PATH_MAX];
    fx_path(fx, "fuzz.safetensors", path);
    char *h = valid_header_padded();
    size_t hdr_len = strlen(h), base_len = 8 + hdr_len + VALID_DATA_BYTES;
    unsigned char *base = malloc(base_len), *buf = malloc(base_len);
    assert_non_null(base);
    assert_non_null(buf);
    put_le64(base, hdr_len);
    memcpy(base + 8, h, hdr_len);
    fill_pattern(base + 8 + hdr_len, VALID_DATA_BYTES);
    free(h);

    uint64_t rng = UINT64_C(0x9e3779b97f4a7c15);
    int ok = 0, bad = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, base, base_len);
        size_t len = mutate(buf, base_len, hdr_len, &rng);
        write_bytes(path, buf, len);
        struct st_set *set = NULL;
        struct tl_err err = {{0}};
        enum tl_status st = safetensors_open_file(path, &set, &err);
        if (st == TL_OK) {
            check_set(set);
            ok++;
        } else {
            assert_null(set);
            expect_msg(&err, path);
            bad++;
        }
        safetensors_close(set);
    }
    print_message("fuzz file: %d opened, %d rejected\n", ok, bad);
    assert_true(ok > 0 && bad > 0);
    free(base);
    free(buf);
}

static void test_fuzz_index(void **state) {
    struct fx *fx = *state;
    char path[PATH_MAX];
    write_shards(fx);
    fx_path(fx, "model.safetensors.index.json", path);
    char *base = jq(INDEX_OK);
    size_t base_len = strlen(base);
    unsigned char *buf = malloc(base_len + 8);
    assert_non_null(buf);

    uint64_t rng = UINT64_C(0x243f6a8885a308d3);
    int ok = 0, bad = 0;
    for (int it = 0; it < 600; it++) {
        /* The index has no length field: mutate it as if it were all header, behind 8 bytes
         * that are dropped again. */
        memset(buf, 0, 8);
        memcpy(buf + 8, base, base_len);
        size_t len = mutate(buf, base_len + 8, base_len, &rng);
        write_bytes(path, buf + 8, len > 8 ? len - 8 : 0);
        struct st_set *set = NULL;
        struct tl_err err = {{0}};
        if (safetensors_open_dir(fx->dir, &set, &err) == TL_OK) {
            check_set(set);
            ok++;
        } else {
            assert_null(set);
            expect_msg(&err, fx->dir);
            bad++;
        }
        safetensors_close(set);
    }
    print_message("fuzz index: %d opened, %d rejected\n", ok, bad);
    assert_true(ok > 0 && bad > 0);
    free(base);
    free(buf);
}

/* ---- real checkpoints ---- */

/* Every fixture model directory (written by HF tooling) opens, single-file and sharded. */
static void test_fixtures(void **state) {
    (void)state;
#ifndef TL_FIXTURES
    skip();
#else
    DIR *d = opendir(TL_FIXTURES);
    if (!d) skip();
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", TL_FIXTURES, e->d_name);
        struct stat sb;
        if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)) continue;
        struct st_set *set = open_dir_ok(p);
        assert_true(safetensors_count(set) > 0);
        check_set(set);
        assert_non_null(safetensors_find(set, "model.embed_tokens.weight"));
        safetensors_close(set);
        n++;
    }
    closedir(d);
    if (n == 0) skip();
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_file, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_valid_edge_files, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_truncated_and_length_field, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_bad_headers, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_hostile_names_in_messages, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sharded_valid, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_single_in_dir, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sharded_bad, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_fuzz_file, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_fuzz_index, fx_setup, fx_teardown),
        cmocka_unit_test(test_fixtures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
