/* reasoning: a two-state splitter over the concatenation of the held tail and each delta. */
#include "reasoning.h"

#include <string.h>

#define START "<think>"
#define END   "</think>"

void reasoning_init(struct reasoning *r) {
    memset(r, 0, sizeof *r);
}

/* Length of the longest suffix of s (n bytes) that is a proper prefix of marker. */
static size_t partial_suffix(const char *s, size_t n, const char *marker) {
    size_t m = strlen(marker);
    for (size_t k = m - 1; k > 0; k--)
        if (k <= n && !memcmp(s + n - k, marker, k)) return k;
    return 0;
}

static int split(struct reasoning *r, const char *s, size_t n, struct buf *rb, struct buf *cb) {
    while (n) {
        if (r->after_end) return buf_append(cb, s, n);
        const char *end = memmem(s, n, END, strlen(END));
        const char *start = r->start_dropped ? NULL : memmem(s, n, START, strlen(START));
        if (start && (!end || start < end)) {
            if (buf_append(rb, s, (size_t)(start - s))) return -1;
            r->start_dropped = true;
            n -= (size_t)(start - s) + strlen(START);
            s = start + strlen(START);
            continue;
        }
        if (end) {
            if (buf_append(rb, s, (size_t)(end - s))) return -1;
            r->after_end = r->start_dropped = true;
            n -= (size_t)(end - s) + strlen(END);
            s = end + strlen(END);
            continue;
        }
        size_t hold = partial_suffix(s, n, END);
        if (!r->start_dropped) {
            size_t h2 = partial_suffix(s, n, START);
            if (h2 > hold) hold = h2;
        }
        if (buf_append(rb, s, n - hold)) return -1;
        memcpy(r->held, s + n - hold, hold);
        r->n_held = hold;
        return 0;
    }
    return 0;
}

int reasoning_push(struct reasoning *r, const char *text, size_t len, struct buf *rb,
                   struct buf *cb) {
    if (!r->n_held) return split(r, text, len, rb, cb);
    struct buf joined = {0};
    int rc = buf_append(&joined, r->held, r->n_held) || buf_append(&joined, text, len) ? -1 : 0;
    r->n_held = 0;
    if (!rc) rc = split(r, joined.data, joined.len, rb, cb);
    buf_free(&joined);
    return rc;
}

int reasoning_flush(struct reasoning *r, struct buf *rb, struct buf *cb) {
    size_t n = r->n_held;
    r->n_held = 0;
    return buf_append(r->after_end ? cb : rb, r->held, n);
}
