/* status: names of status codes and message formatting. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *tl_status_str(enum tl_status s) {
    switch (s) {
    case TL_OK:
        return "ok";
    case TL_ERR_INVALID:
        return "invalid argument";
    case TL_ERR_IO:
        return "i/o error";
    case TL_ERR_FORMAT:
        return "format error";
    case TL_ERR_UNSUPPORTED:
        return "unsupported";
    case TL_ERR_NOMEM:
        return "out of memory";
    case TL_ERR_CUDA:
        return "cuda error";
    case TL_ERR_INTERNAL:
        return "internal error";
    }
    return "unknown status";
}

enum tl_status tl_fail(struct tl_err *err, enum tl_status s, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return s;
}

void tl_err_prefix(struct tl_err *err, const char *fmt, ...) {
    if (!err) return;
    char head[TL_ERR_MSG_MAX], old[TL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* both halves fit: the head is capped so the original message survives */
    snprintf(err->msg, sizeof err->msg, "%.300s: %.700s", head, old);
}
