/* buf: a growable byte buffer (always NUL-terminated when non-empty), owned by whoever
 * declares it; buf_free releases it. Not thread-safe. */
#ifndef TL_SERVER_BUF_H
#define TL_SERVER_BUF_H

#include <stddef.h>

struct buf {
    char *data; /* owned; NULL until the first append */
    size_t len, cap;
};

/* Appends n bytes; 0 on success, -1 when memory runs out (the buffer is left as it was). */
int buf_append(struct buf *b, const void *s, size_t n);
/* Appends a NUL-terminated string. */
int buf_puts(struct buf *b, const char *s);
void buf_free(struct buf *b);

#endif
