/* safetensors: reads *.safetensors files and sharded model directories. Each file is mmapped
 * read-only and kept open until safetensors_close; a set owns its files, maps, names and tensor
 * table, and tensors borrow from it. Single-threaded; a set is immutable once returned.
 * Headers are hostile input: every size, offset and string is checked before it is used, and
 * names quoted into messages are escaped and cut short. One hazard no check can remove: a file
 * truncated by someone else while mapped raises SIGBUS on the next read of the lost pages. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#define ST_INDEX_NAME  "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"
#define ST_QUOTE_MAX   96  /* bytes of a quoted hostile string in a message */
#define ST_SHAPE_MAX   200 /* "[d0, d1, ...]" for SAFETENSORS_MAX_DIMS 19-digit dims */

struct st_file {
    char *path; /* owned */
    int fd;     /* owned; -1 when not open */
    void *map;  /* owned: the whole file, map_bytes long, PROT_READ; NULL when unmapped */
    size_t map_bytes;
    char *names; /* owned: this file's tensor names, NUL-separated */
};

struct st_set {
    struct st_file *files; /* owned, n_files used of cap_files */
    int n_files, cap_files;
    struct st_tensor *tensors; /* owned, n_tensors used of cap_tensors; in file order */
    int n_tensors, cap_tensors;
    const struct st_tensor **by_name; /* owned array, n_tensors borrowed pointers sorted by name */
};

/* A tensor's byte range in its file's data area, for the overlap check. */
struct st_range {
    uint64_t begin, end;
    const struct st_tensor *t;
};

/* ---- messages ---- */

/* Writes s into buf (cap >= 16) for a message: control bytes become \xNN so hostile text cannot
 * move a terminal's cursor, and the text is cut (on a UTF-8 boundary) with "..." so it cannot
 * crowd out the rest of the message. `quoted` wraps it in double quotes and escapes '"' and
 * '\' too, so a name's end is unambiguous. */
static const char *escape(const char *s, bool quoted, char *buf, size_t cap) {
    size_t o = 0, lim = cap - 5; /* room for "...", the closing quote and the NUL */
    if (quoted) buf[o++] = '"';
    while (*s) {
        unsigned char c = (unsigned char)*s;
        size_t len = 1;
        if (c >= 0xc0) /* a UTF-8 lead byte: keep the whole character together */
            while (len < 4 && ((unsigned char)s[len] & 0xc0) == 0x80) len++;
        bool esc = c < 0x20 || c == 0x7f || (quoted && (c == '"' || c == '\\'));
        if (o + (esc ? 4 : len) > lim) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (esc) {
            snprintf(buf + o, 5, "\\x%02x", c);
            o += 4;
        } else {
            memcpy(buf + o, s, len);
            o += len;
        }
        s += len;
    }
    if (quoted) buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

static const char *quote(const char *s, char *buf, size_t cap) {
    return escape(s, true, buf, cap);
}

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "real number";
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    case JSON_NULL:
        return "null";
    }
    return "unknown value";
}

static const char *format_shape(const struct st_tensor *t, char *buf, size_t cap) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int i = 0; i < t->ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
    return buf;
}

/* ---- files ---- */

static char *path_join(const char *dir, const char *name) {
    size_t nd = strlen(dir), nn = strlen(name);
    bool slash = nd > 0 && dir[nd - 1] == '/';
    char *p = malloc(nd + 1 + nn + 1);
    if (!p) return NULL;
    memcpy(p, dir, nd);
    if (!slash) p[nd++] = '/';
    memcpy(p + nd, name, nn + 1);
    return p;
}

static void file_release(struct st_file *f) {
    if (f->map) munmap(f->map, f->map_bytes);
    if (f->fd >= 0) close(f->fd);
    free(f->path);
    free(f->names);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

/* Opens and maps f->path whole. Files shorter than min_bytes are rejected with `short_why`, so
 * an empty file never reaches mmap (which refuses length 0). */
static enum tl_status file_map(struct st_file *f, uint64_t min_bytes, const char *short_why,
                               struct tl_err *err) {
    /* O_NONBLOCK: a FIFO planted where a shard should be must not hang the loader. It changes
     * nothing for regular files, and anything else is rejected after fstat. */
    f->fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (f->fd < 0) return tl_fail(err, TL_ERR_IO, "%s: cannot open: %s", f->path, strerror(errno));
    struct stat sb;
    if (fstat(f->fd, &sb) != 0)
        return tl_fail(err, TL_ERR_IO, "%s: cannot stat: %s", f->path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return tl_fail(err, TL_ERR_IO, "%s: not a regular file", f->path);
    if (sb.st_size < 0 || (uint64_t)sb.st_size < min_bytes)
        return tl_fail(err, TL_ERR_FORMAT, "%s: file is only %lld bytes; %s", f->path,
                       (long long)sb.st_size, short_why);
    if ((uint64_t)sb.st_size > SIZE_MAX)
        return tl_fail(err, TL_ERR_UNSUPPORTED, "%s: %lld bytes do not fit in the address space",
                       f->path, (long long)sb.st_size);
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, f->fd, 0);
    if (m == MAP_FAILED)
        return tl_fail(err, TL_ERR_IO, "%s: cannot mmap %lld bytes: %s", f->path,
                       (long long)sb.st_size, strerror(errno));
    f->map = m;
    f->map_bytes = (size_t)sb.st_size;
    return TL_OK;
}

/* ---- one header entry ---- */

/* Non-negative JSON integer, or false. */
static bool json_u63(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* Validates one tensor entry and fills t (but for name, data, file) and its range. */
static enum tl_status parse_entry(const char *path, const char *qname, const json_t *v,
                                  uint64_t data_bytes, struct st_tensor *t, struct st_range *r,
                                  struct tl_err *err) {
    char q[ST_QUOTE_MAX], shape[ST_SHAPE_MAX];
    if (!json_is_object(v))
        return tl_fail(err, TL_ERR_FORMAT,
                       "%s: tensor %s: entry is a JSON %s, expected an object with dtype, shape "
                       "and data_offsets",
                       path, qname, json_kind(v));
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return tl_fail(err, TL_ERR_FORMAT,
                           "%s: tensor %s: unexpected key %s (an entry holds only dtype, shape "
                           "and data_offsets)",
                           path, qname, quote(key, q, sizeof q));
    }

    const json_t *jd = json_object_get(v, "dtype");
    if (!jd) return tl_fail(err, TL_ERR_FORMAT, "%s: tensor %s: missing \"dtype\"", path, qname);
    if (!json_is_string(jd))
        return tl_fail(err, TL_ERR_FORMAT, "%s: tensor %s: dtype is a JSON %s, expected a string",
                       path, qname, json_kind(jd));
    if (!dtype_parse_safetensors(json_string_value(jd), &t->dtype))
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "%s: tensor %s: unknown dtype %s (known: F32, F16, BF16, F64, I64, I32, "
                       "I16, I8, U64, U32, U16, U8, BOOL, F8_E4M3, F8_E5M2)",
                       path, qname, quote(json_string_value(jd), q, sizeof q));

    const json_t *js = json_object_get(v, "shape");
    if (!js) return tl_fail(err, TL_ERR_FORMAT, "%s: tensor %s: missing \"shape\"", path, qname);
    if (!json_is_array(js))
        return tl_fail(err, TL_ERR_FORMAT, "%s: tensor %s: shape is a JSON %s, expected an array",
                       path, qname, json_kind(js));
    if (json_array_size(js) > SAFETENSORS_MAX_DIMS)
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "%s: tensor %s: shape has %zu dims; at most %d are "
                       "supported",
                       path, qname, json_array_size(js), SAFETENSORS_MAX_DIMS);
    t->ndim = (int)json_array_size(js);
    for (int i = 0; i < t->ndim; i++) {
        const json_t *jv = json_array_get(js, (size_t)i);
        uint64_t d;
        if (json_is_integer(jv) && !json_u63(jv, &d))
            return tl_fail(err, TL_ERR_FORMAT,
                           "%s: tensor %s: shape[%d] is %lld; dims cannot be "
                           "negative",
                           path, qname, i, (long long)json_integer_value(jv));
        if (!json_u63(jv, &d))
            return tl_fail(err, TL_ERR_FORMAT,
                           "%s: tensor %s: shape[%d] is a JSON %s, expected "
                           "a non-negative integer",
                           path, qname, i, json_kind(jv));
        t->shape[i] = (int64_t)d;
    }
    for (int i = t->ndim; i < SAFETENSORS_MAX_DIMS; i++) t->shape[i] = 0;

    const json_t *jo = json_object_get(v, "data_offsets");
    if (!jo)
        return tl_fail(err, TL_ERR_FORMAT, "%s: tensor %s: missing \"data_offsets\"", path, qname);
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !json_u63(json_array_get(jo, 0), &r->begin) || !json_u63(json_array_get(jo, 1), &r->end))
        return tl_fail(err, TL_ERR_FORMAT,
                       "%s: tensor %s: data_offsets must be [begin, end], two non-negative "
                       "integers",
                       path, qname);
    if (r->begin > r->end)
        return tl_fail(err, TL_ERR_FORMAT,
                       "%s: tensor %s: data_offsets [%llu, %llu] are reversed (begin > end)", path,
                       qname, (unsigned long long)r->begin, (unsigned long long)r->end);

    /* Elements and bytes, checked. Zero dims are left out of the product, so a tensor that
     * passes has every partial product of its dims inside int64 and callers may multiply dims
     * freely; a zero dim then makes the tensor empty. */
    uint64_t n = 1, bytes;
    bool empty = false;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] == 0) {
            empty = true;
            continue;
        }
        if (__builtin_mul_overflow(n, (uint64_t)t->shape[i], &n) || n > INT64_MAX)
            return tl_fail(err, TL_ERR_FORMAT,
                           "%s: tensor %s: shape %s has more elements than fit in 63 bits", path,
                           qname, format_shape(t, shape, sizeof shape));
    }
    if (__builtin_mul_overflow(n, (uint64_t)dtype_size(t->dtype), &bytes) || bytes > INT64_MAX)
        return tl_fail(err, TL_ERR_FORMAT, "%s: tensor %s: %s %s is more bytes than fit in 63 bits",
                       path, qname, dtype_name(t->dtype), format_shape(t, shape, sizeof shape));
    if (empty) bytes = 0;
    if (r->end - r->begin != bytes)
        return tl_fail(err, TL_ERR_FORMAT,
                       "%s: tensor %s: %s %s needs %llu bytes but data_offsets [%llu, %llu] span "
                       "%llu",
                       path, qname, dtype_name(t->dtype), format_shape(t, shape, sizeof shape),
                       (unsigned long long)bytes, (unsigned long long)r->begin,
                       (unsigned long long)r->end, (unsigned long long)(r->end - r->begin));
    if (r->end > data_bytes)
        return tl_fail(err, TL_ERR_FORMAT,
                       "%s: tensor %s: data_offsets end %llu is past the end of the data area "
                       "(%llu bytes); the file is truncated or corrupt",
                       path, qname, (unsigned long long)r->end, (unsigned long long)data_bytes);
    t->nbytes = bytes;
    return TL_OK;
}

/* ---- one file ---- */

static int cmp_range(const void *a, const void *b) {
    const struct st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Rejects two tensors sharing a byte. Empty tensors share none, wherever they sit. */
static enum tl_status check_overlaps(const char *path, struct st_range *r, size_t n,
                                     struct tl_err *err) {
    qsort(r, n, sizeof *r, cmp_range);
    const struct st_range *last = NULL; /* the non-empty range reaching furthest so far */
    for (size_t i = 0; i < n; i++) {
        if (r[i].begin == r[i].end) continue;
        if (last && r[i].begin < last->end) {
            char qa[ST_QUOTE_MAX], qb[ST_QUOTE_MAX];
            return tl_fail(err, TL_ERR_FORMAT,
                           "%s: tensors %s [%llu, %llu) and %s [%llu, %llu) overlap in the data "
                           "area",
                           path, quote(last->t->name, qa, sizeof qa),
                           (unsigned long long)last->begin, (unsigned long long)last->end,
                           quote(r[i].t->name, qb, sizeof qb), (unsigned long long)r[i].begin,
                           (unsigned long long)r[i].end);
        }
        if (!last || r[i].end > last->end) last = &r[i];
    }
    return TL_OK;
}

static enum tl_status grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return TL_OK;
    int c = *cap ? *cap : 8;
    while (c < need) c = c > INT_MAX / 2 ? INT_MAX : c * 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return TL_ERR_NOMEM;
    *p = q;
    *cap = c;
    return TL_OK;
}

/* Validates every entry of a parsed header and appends the tensors to the set. Tensors are
 * only counted (set->n_tensors) once the whole file has passed. */
static enum tl_status add_tensors(struct st_set *set, struct st_file *f, json_t *root,
                                  const char *data, uint64_t data_bytes, struct tl_err *err) {
    char q[ST_QUOTE_MAX];
    const char *key;
    json_t *val;
    size_t n = 0, names_bytes = 0;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val))
                return tl_fail(err, TL_ERR_FORMAT,
                               "%s: __metadata__ is a JSON %s, expected an object", f->path,
                               json_kind(val));
            continue;
        }
        if (key[0] == '\0')
            return tl_fail(err, TL_ERR_FORMAT, "%s: a tensor has an empty name", f->path);
        n++;
        names_bytes += strlen(key) + 1; /* bounded by the capped header: cannot wrap */
    }
    if (n > (size_t)(INT_MAX - set->n_tensors))
        return tl_fail(err, TL_ERR_UNSUPPORTED, "%s: too many tensors (%zu)", f->path, n);
    if (grow((void **)&set->tensors, &set->cap_tensors, set->n_tensors + (int)n,
             sizeof *set->tensors) != TL_OK)
        return tl_fail(err, TL_ERR_NOMEM, "%s: out of memory for %zu tensors", f->path, n);
    f->names = malloc(names_bytes + 1);
    struct st_range *ranges = malloc((n ? n : 1) * sizeof *ranges);
    if (!f->names || !ranges) {
        free(ranges);
        return tl_fail(err, TL_ERR_NOMEM, "%s: out of memory for %zu tensors", f->path, n);
    }

    enum tl_status st = TL_OK;
    char *name = f->names;
    size_t i = 0;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) continue;
        struct st_tensor *t = &set->tensors[set->n_tensors + (int)i];
        st = parse_entry(f->path, quote(key, q, sizeof q), val, data_bytes, t, &ranges[i], err);
        if (st != TL_OK) break;
        size_t len = strlen(key) + 1;
        memcpy(name, key, len);
        t->name = name;
        name += len;
        t->data = data + ranges[i].begin;
        t->file = f->path;
        ranges[i].t = t;
        i++;
    }
    if (st == TL_OK) st = check_overlaps(f->path, ranges, n, err);
    if (st == TL_OK) set->n_tensors += (int)n;
    free(ranges);
    return st;
}

/* Maps one .safetensors file into the set and appends its tensors. On failure the file stays
 * in the set (closed by safetensors_close) and no tensor of it is counted. */
static enum tl_status add_file(struct st_set *set, char *path_owned, struct tl_err *err) {
    if (!path_owned) return tl_fail(err, TL_ERR_NOMEM, "out of memory for a file path");
    if (grow((void **)&set->files, &set->cap_files, set->n_files + 1, sizeof *set->files) !=
        TL_OK) {
        enum tl_status st = tl_fail(err, TL_ERR_NOMEM, "%s: out of memory", path_owned);
        free(path_owned);
        return st;
    }
    struct st_file *f = &set->files[set->n_files++];
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->path = path_owned;

    enum tl_status st = file_map(f, 8,
                                 "a safetensors file starts with an 8-byte header length (is it "
                                 "truncated, or not a safetensors file?)",
                                 err);
    if (st != TL_OK) return st;

    const unsigned char *m = f->map;
    uint64_t hdr = 0;
    for (int i = 7; i >= 0; i--) hdr = hdr << 8 | m[i]; /* little-endian on every host */
    if (hdr > SAFETENSORS_MAX_HEADER_BYTES)
        return tl_fail(err, TL_ERR_FORMAT,
                       "%s: header length field says %llu bytes, over the %u-byte limit; the file "
                       "is corrupt or not a safetensors file",
                       f->path, (unsigned long long)hdr, SAFETENSORS_MAX_HEADER_BYTES);
    if (hdr > f->map_bytes - 8)
        return tl_fail(err, TL_ERR_FORMAT,
                       "%s: header length field says %llu bytes but only %zu bytes follow it; the "
                       "file is truncated (incomplete download?)",
                       f->path, (unsigned long long)hdr, f->map_bytes - 8);

    json_error_t je;
    json_t *root = json_loadb((const char *)m + 8, (size_t)hdr, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        char t[ST_QUOTE_MAX * 2];
        return tl_fail(err, TL_ERR_FORMAT,
                       "%s: header is not valid JSON: %s (header line %d, column %d, byte %d)",
                       f->path, escape(je.text, false, t, sizeof t), je.line, je.column,
                       je.position);
    }
    if (!json_is_object(root))
        st = tl_fail(err, TL_ERR_FORMAT,
                     "%s: header is a JSON %s, expected an object mapping tensor names to entries",
                     f->path, json_kind(root));
    else
        st = add_tensors(set, f, root, (const char *)m + 8 + hdr, f->map_bytes - 8 - hdr, err);
    json_decref(root);
    return st;
}

/* ---- the set ---- */

static int cmp_by_name(const void *a, const void *b) {
    const struct st_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* Builds the name index and rejects a name held twice (within a file jansson already does). */
static enum tl_status build_index(struct st_set *set, struct tl_err *err) {
    set->by_name = malloc((set->n_tensors ? (size_t)set->n_tensors : 1) * sizeof *set->by_name);
    if (!set->by_name)
        return tl_fail(err, TL_ERR_NOMEM, "out of memory indexing %d tensors", set->n_tensors);
    for (int i = 0; i < set->n_tensors; i++) set->by_name[i] = &set->tensors[i];
    qsort(set->by_name, (size_t)set->n_tensors, sizeof *set->by_name, cmp_by_name);
    for (int i = 1; i < set->n_tensors; i++) {
        const struct st_tensor *a = set->by_name[i - 1], *b = set->by_name[i];
        if (strcmp(a->name, b->name) == 0) {
            char q[ST_QUOTE_MAX];
            return tl_fail(err, TL_ERR_FORMAT, "tensor %s is in both %s and %s",
                           quote(a->name, q, sizeof q), a->file, b->file);
        }
    }
    return TL_OK;
}

enum tl_status safetensors_open_file(const char *path, struct st_set **out, struct tl_err *err) {
    if (!path || !out) return tl_fail(err, TL_ERR_INVALID, "safetensors_open_file: NULL argument");
    *out = NULL;
    struct st_set *set = calloc(1, sizeof *set);
    if (!set) return tl_fail(err, TL_ERR_NOMEM, "%s: out of memory", path);
    enum tl_status st = add_file(set, strdup(path), err);
    if (st == TL_OK) st = build_index(set, err);
    if (st != TL_OK) {
        safetensors_close(set);
        return st;
    }
    *out = set;
    return TL_OK;
}

/* ---- sharded directories ---- */

struct st_assign {
    const char *tensor, *shard; /* borrowed from the index JSON */
};

static int cmp_assign_shard(const void *a, const void *b) {
    return strcmp(((const struct st_assign *)a)->shard, ((const struct st_assign *)b)->shard);
}

/* A shard must name a file inside the directory: anything else would let a hostile index read
 * files outside it. */
static bool shard_name_ok(const char *s) {
    return s[0] && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Opens every shard the index names, once each, then checks that the shards hold exactly the
 * tensors the index assigns them. `wm` is the index's weight_map. */
static enum tl_status open_shards(struct st_set *set, const char *dir, const char *ipath,
                                  json_t *wm, struct tl_err *err) {
    char q[ST_QUOTE_MAX], q2[ST_QUOTE_MAX];
    size_t n = json_object_size(wm);
    if (n == 0) return tl_fail(err, TL_ERR_FORMAT, "%s: weight_map is empty", ipath);
    struct st_assign *as = malloc(n * sizeof *as);
    if (!as) return tl_fail(err, TL_ERR_NOMEM, "%s: out of memory", ipath);
    enum tl_status st = TL_OK;
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val) {
        if (!json_is_string(val)) {
            st = tl_fail(err, TL_ERR_FORMAT,
                         "%s: weight_map entry for tensor %s is a JSON %s, expected a shard file "
                         "name",
                         ipath, quote(key, q, sizeof q), json_kind(val));
            break;
        }
        if (!shard_name_ok(json_string_value(val))) {
            st =
                tl_fail(err, TL_ERR_FORMAT,
                        "%s: tensor %s: shard name %s must be a plain file name inside %s", ipath,
                        quote(key, q, sizeof q), quote(json_string_value(val), q2, sizeof q2), dir);
            break;
        }
        as[i].tensor = key;
        as[i].shard = json_string_value(val);
        i++;
    }
    if (st == TL_OK) qsort(as, n, sizeof *as, cmp_assign_shard);
    for (i = 0; st == TL_OK && i < n; i++) {
        if (i > 0 && strcmp(as[i].shard, as[i - 1].shard) == 0) continue;
        st = add_file(set, path_join(dir, as[i].shard), err);
        if (st != TL_OK)
            tl_err_prefix(err, "%s: shard %s (holding tensor %s)", ipath,
                          quote(as[i].shard, q, sizeof q), quote(as[i].tensor, q2, sizeof q2));
    }
    free(as);
    if (st != TL_OK) return st;
    if ((st = build_index(set, err)) != TL_OK) {
        tl_err_prefix(err, "%s", ipath);
        return st;
    }

    /* Shard file names carry no '/', so a tensor's shard is the last part of its path. */
    for (int t = 0; t < set->n_tensors; t++) {
        const struct st_tensor *x = &set->tensors[t];
        const json_t *want = json_object_get(wm, x->name);
        if (!want)
            return tl_fail(err, TL_ERR_FORMAT,
                           "%s: shard %s holds tensor %s, which the index's weight_map does not "
                           "list; the index is stale or the shards belong to another model",
                           ipath, x->file, quote(x->name, q, sizeof q));
        if (strcmp(json_string_value(want), base_name(x->file)) != 0)
            return tl_fail(err, TL_ERR_FORMAT,
                           "%s: tensor %s is in %s but the index assigns it to %s", ipath,
                           quote(x->name, q, sizeof q), x->file,
                           quote(json_string_value(want), q2, sizeof q2));
    }
    json_object_foreach(wm, key, val) {
        if (!safetensors_find(set, key))
            return tl_fail(err, TL_ERR_FORMAT,
                           "%s: the index assigns tensor %s to shard %s, which does not hold it",
                           ipath, quote(key, q, sizeof q),
                           quote(json_string_value(val), q2, sizeof q2));
    }
    return TL_OK;
}

static enum tl_status open_index(struct st_set *set, const char *dir, char *ipath,
                                 struct tl_err *err) {
    struct st_file idx = {.path = ipath, .fd = -1};
    enum tl_status st = file_map(&idx, 1, "an index cannot be empty", err);
    json_t *root = NULL;
    if (st == TL_OK && idx.map_bytes > SAFETENSORS_MAX_HEADER_BYTES)
        st = tl_fail(err, TL_ERR_FORMAT, "%s: %zu bytes, over the %u-byte limit for an index",
                     ipath, idx.map_bytes, SAFETENSORS_MAX_HEADER_BYTES);
    if (st == TL_OK) {
        json_error_t je;
        root = json_loadb(idx.map, idx.map_bytes, JSON_REJECT_DUPLICATES, &je);
        if (!root) {
            char t[ST_QUOTE_MAX * 2];
            st = tl_fail(err, TL_ERR_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", ipath,
                         escape(je.text, false, t, sizeof t), je.line, je.column);
        }
    }
    json_t *wm = root ? json_object_get(root, "weight_map") : NULL;
    if (st == TL_OK && !json_is_object(wm))
        st = tl_fail(err, TL_ERR_FORMAT, "%s: no \"weight_map\" object mapping tensors to shards",
                     ipath);
    if (st == TL_OK) st = open_shards(set, dir, ipath, wm, err);
    json_decref(root);
    file_release(&idx); /* frees ipath */
    return st;
}

enum tl_status safetensors_open_dir(const char *dir, struct st_set **out, struct tl_err *err) {
    if (!dir || !out) return tl_fail(err, TL_ERR_INVALID, "safetensors_open_dir: NULL argument");
    *out = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return tl_fail(err, TL_ERR_IO, "%s: cannot open model directory: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return tl_fail(err, TL_ERR_INVALID, "%s: not a directory", dir);

    struct st_set *set = calloc(1, sizeof *set);
    char *ipath = path_join(dir, ST_INDEX_NAME), *spath = path_join(dir, ST_SINGLE_NAME);
    enum tl_status st = TL_OK;
    if (!set || !ipath || !spath) {
        st = tl_fail(err, TL_ERR_NOMEM, "%s: out of memory", dir);
    } else if (stat(ipath, &sb) == 0 || errno != ENOENT) {
        st = open_index(set, dir, ipath, err);
        ipath = NULL;
    } else if (stat(spath, &sb) == 0 || errno != ENOENT) {
        st = add_file(set, spath, err);
        spath = NULL;
        if (st == TL_OK) st = build_index(set, err);
    } else {
        st = tl_fail(err, TL_ERR_IO,
                     "%s: no " ST_SINGLE_NAME " or " ST_INDEX_NAME
                     " (use --load-format dummy for random weights)",
                     dir);
    }
    free(ipath);
    free(spath);
    if (st != TL_OK) {
        safetensors_close(set);
        return st;
    }
    *out = set;
    return TL_OK;
}

void safetensors_close(struct st_set *set) {
    if (!set) return;
    for (int i = 0; i < set->n_files; i++) file_release(&set->files[i]);
    free(set->files);
    free(set->tensors);
    free(set->by_name);
    free(set);
}

static int cmp_key_name(const void *key, const void *elem) {
    return strcmp(key, (*(const struct st_tensor *const *)elem)->name);
}

const struct st_tensor *safetensors_find(const struct st_set *set, const char *name) {
    if (!set || !name || !set->by_name) return NULL;
    const struct st_tensor *const *p =
        bsearch(name, set->by_name, (size_t)set->n_tensors, sizeof *set->by_name, cmp_key_name);
    return p ? *p : NULL;
}

int safetensors_count(const struct st_set *set) {
    return set ? set->n_tensors : 0;
}

const struct st_tensor *safetensors_get(const struct st_set *set, int i) {
    if (!set || i < 0 || i >= set->n_tensors) return NULL;
    return &set->tensors[i];
}
