/* http: CivetWeb's response-header API for every answer (it adds Date and keep-alive), and
 * chunked bodies for streams. CivetWeb does not expose a connection's socket, so the client's
 * liveness comes from finding our socket whose peer is the request's remote address and port
 * (/proc/self/fd, getpeername) once per request, then poll(POLLRDHUP) on it. */
#include "http.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "oai_response.h"

void http_req_init(struct http_req *r, struct mg_connection *conn) {
    memset(r, 0, sizeof *r);
    r->conn = conn;
    r->ri = mg_get_request_info(conn);
    r->method = r->ri->request_method ? r->ri->request_method : "";
    /* CivetWeb removed the dot segments but does not decode (decode_url no), so a %00 that
     * would cut the path short is seen here instead of silently truncating it. */
    const char *raw = r->ri->local_uri ? r->ri->local_uri : "";
    int n = mg_url_decode(raw, (int)strlen(raw), r->path_buf, (int)sizeof r->path_buf, 0);
    r->path_bad = n < 0 || (size_t)n >= sizeof r->path_buf - 1 || strlen(r->path_buf) != (size_t)n;
    r->path = r->path_bad ? raw : r->path_buf;
    r->peer_fd = -2;
}

int http_add_header(struct http_req *r, const char *name, const char *value) {
    int n = snprintf(r->extra + r->extra_len, sizeof r->extra - r->extra_len, "%s: %s\r\n", name,
                     value);
    if (n < 0 || (size_t)n >= sizeof r->extra - r->extra_len) return -1;
    r->extra_len += (size_t)n;
    return 0;
}

const char *http_header(const struct http_req *r, const char *name) {
    return mg_get_header(r->conn, name);
}

int http_read_body(struct http_req *r, size_t max, char **body, size_t *len, struct tl_err *err) {
    long long cl = r->ri->content_length;
    if (cl > (long long)max) {
        mg_disable_connection_keep_alive(r->conn); /* the unread body must not become a request */
        tl_fail(err, TL_ERR_INVALID,
                "the request body is %lld bytes; this server accepts at most %zu "
                "(--max-request-bytes)",
                cl, max);
        return 413;
    }
    size_t cap = cl > 0 ? (size_t)cl + 1 : 4096, n = 0;
    char *b = malloc(cap);
    if (!b) {
        tl_fail(err, TL_ERR_NOMEM, "out of memory for a %zu-byte body", cap);
        return 503;
    }
    for (;;) {
        if (n + 1 >= cap) {
            if (cap > max + 1) break;
            size_t ncap = cap * 2 > max + 2 ? max + 2 : cap * 2;
            char *g = realloc(b, ncap);
            if (!g) {
                free(b);
                tl_fail(err, TL_ERR_NOMEM, "out of memory for the body");
                return 503;
            }
            b = g;
            cap = ncap;
        }
        int got = mg_read(r->conn, b + n, cap - 1 - n);
        if (got < 0 && cl < 0) {
            free(b);
            mg_disable_connection_keep_alive(r->conn);
            tl_fail(err, TL_ERR_IO, "the request body could not be read (truncated or timed out)");
            return 400;
        }
        if (got <= 0) break;
        n += (size_t)got;
        if (n > max) break;
    }
    if (n > max) {
        free(b);
        mg_disable_connection_keep_alive(r->conn);
        tl_fail(err, TL_ERR_INVALID,
                "the request body is over %zu bytes, the most this server accepts "
                "(--max-request-bytes)",
                max);
        return 413;
    }
    if (cl >= 0 && n != (size_t)cl) {
        free(b);
        mg_disable_connection_keep_alive(r->conn);
        tl_fail(err, TL_ERR_IO, "the request body ended after %zu of its %lld bytes", n, cl);
        return 400;
    }
    b[n] = 0;
    *body = b;
    *len = n;
    return 0;
}

static int find_peer_fd(const struct mg_request_info *ri);

void http_drain(struct http_req *r, size_t max) {
    if (r->peer_fd == -2) r->peer_fd = find_peer_fd(r->ri);
    char sink[16384];
    for (size_t total = 0; total < max;) {
        struct pollfd p = {.fd = r->peer_fd, .events = POLLIN};
        if (r->peer_fd < 0 || poll(&p, 1, 200) <= 0) break;
        int got = mg_read(r->conn, sink, sizeof sink);
        if (got <= 0) break;
        total += (size_t)got;
    }
}

static int send_head(struct http_req *r, int status, const char *content_type, long long len) {
    r->status = status;
    if (mg_response_header_start(r->conn, status) < 0) return -1;
    mg_response_header_add(r->conn, "Content-Type", content_type, -1);
    char num[32];
    if (len >= 0) {
        snprintf(num, sizeof num, "%lld", len);
        mg_response_header_add(r->conn, "Content-Length", num, -1);
    } else {
        mg_response_header_add(r->conn, "Transfer-Encoding", "chunked", -1);
        mg_response_header_add(r->conn, "Cache-Control", "no-cache", -1);
    }
    if (r->extra_len) mg_response_header_add_lines(r->conn, r->extra);
    return mg_response_header_send(r->conn) < 0 ? -1 : 0;
}

int http_send(struct http_req *r, int status, const char *content_type, const char *body,
              size_t len) {
    if (send_head(r, status, content_type, (long long)len)) return -1;
    if (len && mg_write(r->conn, body, len) != (int)len) return -1;
    return 0;
}

int http_send_json(struct http_req *r, int status, const json_t *obj) {
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    if (!s) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                                  "\"InternalServerError\",\"param\":null,\"code\":503}}";
        return http_send(r, 503, "application/json", oom, sizeof oom - 1);
    }
    int rc = http_send(r, status, "application/json", s, strlen(s));
    free(s);
    return rc;
}

int http_send_error(struct http_req *r, int status, const char *param, const char *fmt, ...) {
    char msg[TL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *e = oai_error_json(status, msg, param);
    int rc = http_send_json(r, status, e);
    json_decref(e);
    return rc;
}

int http_stream_begin(struct http_req *r) {
    return send_head(r, 200, "text/event-stream; charset=utf-8", -1);
}

int http_stream_write(struct http_req *r, const char *data, size_t len) {
    if (!len) return 0;
    return mg_send_chunk(r->conn, data, (unsigned)len) > 0 ? 0 : -1;
}

int http_stream_end(struct http_req *r) {
    return mg_send_chunk(r->conn, "", 0) < 0 ? -1 : 0;
}

static bool same_peer(int fd, const struct mg_request_info *ri) {
    struct sockaddr_storage peer, self;
    socklen_t pl = sizeof peer, sl = sizeof self;
    if (getpeername(fd, (struct sockaddr *)&peer, &pl) ||
        getsockname(fd, (struct sockaddr *)&self, &sl))
        return false;
    char addr[INET6_ADDRSTRLEN];
    int port, self_port;
    if (peer.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&peer;
        inet_ntop(AF_INET, &a->sin_addr, addr, sizeof addr);
        port = ntohs(a->sin_port);
        self_port = ntohs(((const struct sockaddr_in *)&self)->sin_port);
    } else if (peer.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&peer;
        inet_ntop(AF_INET6, &a->sin6_addr, addr, sizeof addr);
        port = ntohs(a->sin6_port);
        self_port = ntohs(((const struct sockaddr_in6 *)&self)->sin6_port);
    } else {
        return false;
    }
    return port == ri->remote_port && self_port == ri->server_port &&
           !strcmp(addr, ri->remote_addr);
}

static int find_peer_fd(const struct mg_request_info *ri) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int found = -1, self = dirfd(d);
    struct dirent *e;
    while (found < 0 && (e = readdir(d))) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        struct stat st;
        if (*end || end == e->d_name || fd == self) continue;
        if (fstat((int)fd, &st) || !S_ISSOCK(st.st_mode)) continue;
        if (same_peer((int)fd, ri)) found = (int)fd;
    }
    closedir(d);
    return found;
}

bool http_client_alive(struct http_req *r) {
    if (r->peer_fd == -2) r->peer_fd = find_peer_fd(r->ri);
    if (r->peer_fd < 0) return true;
    struct pollfd p = {.fd = r->peer_fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return true;
    return !(p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}
