/* http: the CivetWeb side of one request: the body read under a cap, whole answers (JSON,
 * text, OpenAI-shaped errors), server-sent events over chunked transfer encoding, and whether
 * the client is still there. One struct http_req per request, on the handler's stack; nothing
 * here is shared between threads. */
#ifndef TL_SERVER_HTTP_H
#define TL_SERVER_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "status.h"

struct mg_connection;
struct mg_request_info;

#define HTTP_EXTRA_MAX 1024

struct http_req {
    struct mg_connection *conn;       /* borrowed */
    const struct mg_request_info *ri; /* borrowed */
    const char *method;               /* borrowed: "POST" */
    const char *path; /* the normalised, percent-decoded path ("/v1/models"), in path_buf */
    bool path_bad;    /* the path decodes to a NUL byte or is too long: answered 404 */
    char path_buf[2048];
    char extra[HTTP_EXTRA_MAX]; /* extra "Name: value\r\n" lines for the answer */
    size_t extra_len;
    int status;  /* the status answered (0 before) */
    int peer_fd; /* the connection's socket: -2 not looked up yet, -1 not found */
};

void http_req_init(struct http_req *r, struct mg_connection *conn);

/* Adds a header to the answer (CORS, Retry-After, Allow); -1 when there is no room. */
int http_add_header(struct http_req *r, const char *name, const char *value);

/* The request header's value, or NULL. */
const char *http_header(const struct http_req *r, const char *name);

/* Reads the whole body (blocks until it arrived). Returns 0 with *body malloc'd (the caller
 * frees; NUL-terminated), or the status to answer (413 over max, 400 when it could not be
 * read) with err set. */
int http_read_body(struct http_req *r, size_t max, char **body, size_t *len, struct tl_err *err);

/* After refusing a body: reads and drops what the client still sends (at most max bytes,
 * stopping after 200 ms without data), so that closing the connection does not reset it
 * before the client has read the answer. Blocks. */
void http_drain(struct http_req *r, size_t max);

/* A whole answer with Content-Length. Returns 0, or -1 when the client is gone. */
int http_send(struct http_req *r, int status, const char *content_type, const char *body,
              size_t len);
int http_send_json(struct http_req *r, int status, const json_t *obj);
/* {"error": {...}} with status (see oai_error_json); param may be NULL. */
int http_send_error(struct http_req *r, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Server-sent events: 200 text/event-stream, chunked; write returns -1 once the client is
 * gone; end sends the last chunk. */
int http_stream_begin(struct http_req *r);
int http_stream_write(struct http_req *r, const char *data, size_t len);
int http_stream_end(struct http_req *r);

/* False once the client has closed or reset its connection (noticed without reading or
 * writing, so also while nothing is being sent). True when it cannot tell. Does not block. */
bool http_client_alive(struct http_req *r);

#endif
