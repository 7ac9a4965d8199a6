/* status: the one status type every fallible tierlm function returns, plus the error
 * message that travels with it. A message says what failed and what the user can do. */
#ifndef TL_STATUS_H
#define TL_STATUS_H

#include <stddef.h>

enum tl_status {
    TL_OK = 0,
    TL_ERR_INVALID,     /* a bad argument or flag value */
    TL_ERR_IO,          /* open/read/mmap/write failed */
    TL_ERR_FORMAT,      /* a file or request is malformed */
    TL_ERR_UNSUPPORTED, /* well-formed, but a feature we do not implement */
    TL_ERR_NOMEM,       /* host, device or KV memory exhausted */
    TL_ERR_CUDA,        /* a CUDA / cuBLAS / NCCL call failed */
    TL_ERR_INTERNAL,    /* a broken invariant */
};

#define TL_ERR_MSG_MAX 1024

/* Error message buffer; callers own it (usually on the stack). */
struct tl_err {
    char msg[TL_ERR_MSG_MAX];
};

/* Short name of a status ("format error"); never NULL. */
const char *tl_status_str(enum tl_status s);

/* Formats a message into err (when err is non-NULL) and returns s, so failures read
 * `return tl_fail(err, TL_ERR_FORMAT, "%s: ...", path);`. */
enum tl_status tl_fail(struct tl_err *err, enum tl_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message (adds context on the way up). */
void tl_err_prefix(struct tl_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
