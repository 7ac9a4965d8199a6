/* server: CivetWeb set-up and the request path every route shares: header count, CORS,
 * routing table, API key (constant time), content type, body cap, then the route; a status
 * counter and one log line per answer. CivetWeb serves no files here: one handler takes every
 * path and answers what the table does not know with a JSON 404. CivetWeb's own errors
 * (malformed requests, oversized headers) are answered in the same JSON shape. */
#include "server.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "oai_response.h"
#include "server_impl.h"

/* Threads beyond the generation capacity: /health, /metrics, refusals, and idle keep-alive
 * connections, which hold a CivetWeb worker until they time out. */
#define SPARE_THREADS       64
#define HANDLER_STACK_BYTES (8u << 20)
#define DRAIN_BYTES         (64u << 20) /* what a refused body may still send before we close */

void server_opts_default(struct server_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8000;
    o->allowed_methods = "*";
    o->allowed_headers = "*";
    o->log_requests = true;
    o->max_request_bytes = 8u << 20;
    o->max_header_bytes = 16 << 10;
    o->max_queued_requests = 256;
    o->max_num_seqs = 256;
    o->max_choices = 16;
}

bool server_knows_model(const struct server *s, const char *name) {
    for (int i = 0; i < s->o.n_served_model_names; i++)
        if (!strcmp(s->o.served_model_names[i], name)) return true;
    return false;
}

static void completions(struct server *s, struct http_req *r, const char *body, size_t len) {
    oai_serve(s, r, OAI_COMPLETION, body, len);
}

static void chat(struct server *s, struct http_req *r, const char *body, size_t len) {
    oai_serve(s, r, OAI_CHAT, body, len);
}

static const struct route {
    const char *method, *path;
    bool prefix; /* path is a prefix ("/v1/models/" + id) */
    bool open;   /* no API key needed */
    void (*fn)(struct server *s, struct http_req *r, const char *body, size_t len);
} routes[] = {
    {"GET", "/health", false, true, route_health},
    {"GET", "/version", false, false, route_version},
    {"GET", "/v1/models", false, false, route_models},
    {"GET", "/v1/models/", true, false, route_models},
    {"GET", "/metrics", false, false, route_metrics},
    {"POST", "/tokenize", false, false, route_tokenize},
    {"POST", "/detokenize", false, false, route_detokenize},
    {"POST", "/v1/completions", false, false, completions},
    {"POST", "/v1/chat/completions", false, false, chat},
};

/* Compares in time that depends only on the key's length, not on where they differ. */
static bool key_matches(const char *given, const char *key) {
    size_t gl = strlen(given), kl = strlen(key);
    unsigned char d = gl != kl;
    for (size_t i = 0; i < kl; i++) d |= (unsigned char)(key[i] ^ (i < gl ? given[i] : 0));
    return d == 0;
}

static bool authorized(const struct server *s, const struct http_req *r) {
    if (!s->o.api_key) return true;
    const char *h = http_header(r, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    h += 7;
    while (*h == ' ') h++;
    return key_matches(h, s->o.api_key);
}

/* Whether origin is in list: "*", a comma-separated list, or vLLM's JSON list form. */
static bool origin_allowed(const char *list, const char *origin) {
    const char *p = list;
    while (*p) {
        p += strspn(p, "[]\", \t");
        size_t n = strcspn(p, "[]\", \t");
        if (!n) break;
        if ((n == 1 && *p == '*') || (strlen(origin) == n && !strncmp(p, origin, n))) return true;
        p += n;
    }
    return false;
}

/* CORS headers for an allowed Origin. Returns false when CORS is on and the origin is not
 * allowed (the request is then refused). */
static bool cors(const struct server *s, struct http_req *r, bool *preflight) {
    const char *origin = http_header(r, "Origin");
    *preflight = false;
    if (!s->o.allowed_origins || !origin) return true;
    if (!origin_allowed(s->o.allowed_origins, origin)) return false;
    bool any = origin_allowed(s->o.allowed_origins, "*") && !s->o.allow_credentials;
    http_add_header(r, "Access-Control-Allow-Origin", any ? "*" : origin);
    http_add_header(r, "Vary", "Origin");
    if (s->o.allow_credentials) http_add_header(r, "Access-Control-Allow-Credentials", "true");
    const char *want = http_header(r, "Access-Control-Request-Method");
    if (!strcmp(r->ri->request_method, "OPTIONS") && want) {
        *preflight = true;
        const char *m = s->o.allowed_methods;
        http_add_header(r, "Access-Control-Allow-Methods",
                        !strcmp(m, "*") ? "GET, POST, OPTIONS" : m);
        const char *req_headers = http_header(r, "Access-Control-Request-Headers");
        const char *h = s->o.allowed_headers;
        if (strcmp(h, "*") != 0)
            http_add_header(r, "Access-Control-Allow-Headers", h);
        else if (req_headers)
            http_add_header(r, "Access-Control-Allow-Headers", req_headers);
        http_add_header(r, "Access-Control-Max-Age", "600");
    }
    return true;
}

static bool json_content_type(const struct http_req *r) {
    const char *ct = http_header(r, "Content-Type");
    if (!ct) return true; /* as FastAPI: no type given, the body is read as JSON */
    size_t n = strcspn(ct, "; \t");
    return (n == 16 && !strncasecmp(ct, "application/json", 16)) ||
           (n > 5 && !strncasecmp(ct + n - 5, "+json", 5));
}

static const struct route *find_route(const char *method, const char *path, bool *path_known,
                                      char *allow, size_t allow_len) {
    *path_known = false;
    allow[0] = 0;
    const struct route *hit = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct route *rt = &routes[i];
        bool match = rt->prefix
                         ? !strncmp(path, rt->path, strlen(rt->path)) && path[strlen(rt->path)] != 0
                         : !strcmp(path, rt->path);
        if (!match) continue;
        *path_known = true;
        snprintf(allow, allow_len, "%s", rt->method);
        if (!strcmp(method, rt->method)) hit = rt;
    }
    return hit;
}

static void dispatch(struct server *s, struct http_req *r) {
    const struct mg_request_info *ri = r->ri;
    const char *path = r->path;
    if (ri->num_headers >= MG_MAX_HEADERS) {
        http_send_error(r, 431, NULL,
                        "the request has %d or more headers; this server accepts at most %d",
                        MG_MAX_HEADERS, MG_MAX_HEADERS - 1);
        return;
    }
    bool preflight;
    if (!cors(s, r, &preflight)) {
        http_send_error(r, 400, NULL, "Disallowed CORS origin (see --allowed-origins)");
        return;
    }
    if (r->path_bad) {
        http_send_error(r, 404, NULL, "Not Found: the path is too long or holds a NUL byte");
        return;
    }
    bool known;
    char allow[16];
    const struct route *rt = find_route(ri->request_method, path, &known, allow, sizeof allow);
    if (preflight && known) {
        http_send(r, 200, "text/plain", "", 0);
        return;
    }
    if (!known) {
        http_send_error(r, 404, NULL, "Not Found: %s %s", ri->request_method, path);
        return;
    }
    if (!rt) {
        http_add_header(r, "Allow", allow);
        http_send_error(r, 405, NULL, "Method Not Allowed: %s takes %s, not %s", path, allow,
                        ri->request_method);
        return;
    }
    if (!rt->open && !authorized(s, r)) {
        http_add_header(r, "WWW-Authenticate", "Bearer");
        http_send_error(r, 401, NULL,
                        "invalid or missing API key: send the header 'Authorization: Bearer "
                        "<key>' with the server's --api-key");
        return;
    }
    char *body = NULL;
    size_t len = 0;
    if (!strcmp(rt->method, "POST")) {
        if (!json_content_type(r)) {
            http_send_error(r, 415, NULL, "Content-Type must be application/json, got '%s'",
                            http_header(r, "Content-Type"));
            return;
        }
        struct tl_err err;
        int st = http_read_body(r, s->o.max_request_bytes, &body, &len, &err);
        if (st) {
            http_send_error(r, st, NULL, "%s", err.msg);
            if (st == 413) http_drain(r, DRAIN_BYTES);
            return;
        }
    }
    rt->fn(s, r, body, len);
    free(body);
}

struct handler_call {
    struct server *s;
    struct http_req *r;
};

static void *handler_thread(void *arg) {
    struct handler_call *c = arg;
    dispatch(c->s, c->r);
    return NULL;
}

/* CivetWeb's workers have 100 KiB stacks (fixed when it was built): too little for the chat
 * template interpreter and the tokenizer's regexes. Each request is answered on a thread with
 * a stack of our own size; the worker waits for it. */
static int on_request(struct mg_connection *conn, void *user) {
    struct server *s = user;
    struct http_req r;
    http_req_init(&r, conn);
    struct handler_call call = {s, &r};
    pthread_attr_t attr;
    pthread_t t;
    bool started = pthread_attr_init(&attr) == 0;
    started = started && pthread_attr_setstacksize(&attr, HANDLER_STACK_BYTES) == 0 &&
              pthread_create(&t, &attr, handler_thread, &call) == 0;
    pthread_attr_destroy(&attr);
    if (started)
        pthread_join(t, NULL);
    else
        http_send_error(&r, 503, NULL, "the server cannot start a thread for this request");
    if (!r.status) http_send_error(&r, 500, NULL, "the handler gave no answer (a bug)");
    if (r.status > 0 && r.status < METRICS_MAX_STATUS) atomic_fetch_add(&s->responses[r.status], 1);
    if (s->o.log_requests)
        fprintf(stderr, "INFO: %s:%d - \"%s %s HTTP/%s\" %d\n", r.ri->remote_addr,
                r.ri->remote_port, r.method, r.path, r.ri->http_version, r.status);
    return r.status;
}

/* CivetWeb's own refusals (malformed request line, headers over max_request_size, ...) in
 * the OpenAI error shape; the connection closes after them. */
static int on_http_error(struct mg_connection *conn, int status, const char *msg) {
    char text[512];
    snprintf(text, sizeof text, "%s%s",
             status == 413 || status == 431 ? "the request headers are too large: " : "",
             msg && *msg ? msg : mg_get_response_code_text(conn, status));
    struct server *srv = mg_get_user_data(mg_get_context(conn));
    if (status == 400)
        snprintf(text, sizeof text,
                 "malformed HTTP request, or its request line and headers are over the %d bytes "
                 "this server accepts (--max-header-bytes): %s",
                 srv ? srv->o.max_header_bytes : 0, msg && *msg ? msg : "bad request");
    json_t *e = oai_error_json(status, text, NULL);
    char *s = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    if (!s) return 1;
    mg_printf(conn,
              "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
              "Connection: close\r\n\r\n%s",
              status, mg_get_response_code_text(conn, status), strlen(s), s);
    free(s);
    if (srv && status > 0 && status < METRICS_MAX_STATUS)
        atomic_fetch_add(&srv->responses[status], 1);
    return 0;
}

static int on_log(const struct mg_connection *conn, const char *msg) {
    (void)conn;
    fprintf(stderr, "tierlm serve: civetweb: %s\n", msg);
    return 1;
}

/* "host:port" as CivetWeb's listening_ports wants it ("[::1]:8000" for IPv6); a host name is
 * resolved to its first address. */
static enum tl_status listen_spec(const char *host, int port, char *out, size_t n,
                                  struct tl_err *err) {
    unsigned char a[16];
    char addr[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET, host, a) == 1) {
        snprintf(out, n, "%s:%d", host, port);
        return TL_OK;
    }
    if (inet_pton(AF_INET6, host, a) == 1) {
        snprintf(out, n, "[%s]:%d", host, port);
        return TL_OK;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc || !res)
        return tl_fail(err, TL_ERR_INVALID, "--host %s: cannot resolve it (%s)", host,
                       gai_strerror(rc));
    if (res->ai_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, addr, sizeof addr);
        snprintf(out, n, "[%s]:%d", addr, port);
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, addr, sizeof addr);
        snprintf(out, n, "%s:%d", addr, port);
    }
    freeaddrinfo(res);
    return TL_OK;
}

enum tl_status server_start(const struct server_opts *o, const struct server_model *m,
                            struct server **out, struct tl_err *err) {
    if (o->n_served_model_names < 1)
        return tl_fail(err, TL_ERR_INVALID, "the server needs a model name to serve");
    char listen[128], threads[16], header_bytes[16], queue[16];
    enum tl_status st = listen_spec(o->host, o->port, listen, sizeof listen, err);
    if (st != TL_OK) return st;
    struct server *s = calloc(1, sizeof *s);
    if (!s) return tl_fail(err, TL_ERR_NOMEM, "out of memory");
    s->o = *o;
    s->m = *m;
    s->pctx = (struct prompt_ctx){m->tok, m->chat, m->vocab_size};
    s->lim = (struct oai_limits){.max_choices = o->max_choices,
                                 .vocab_size = m->vocab_size,
                                 .max_messages = 4096,
                                 .default_max_new = m->default_max_new_tokens};
    s->capacity = o->max_num_seqs + o->max_queued_requests;
    s->started = (long long)time(NULL);
    snprintf(threads, sizeof threads, "%d", s->capacity + SPARE_THREADS);
    snprintf(header_bytes, sizeof header_bytes, "%d", o->max_header_bytes);
    snprintf(queue, sizeof queue, "%d", s->capacity + SPARE_THREADS);
    /* clang-format off */
    const char *options[] = {
        "listening_ports", listen,
        "num_threads", threads,
        "max_request_size", header_bytes,
        "connection_queue", queue,
        "listen_backlog", queue,
        "enable_keep_alive", "yes",
        /* as uvicorn (vLLM): 5 s, longer than the 4 s after which node's fetch drops an idle
         * connection, so a client never sends a request on one we are closing */
        "keep_alive_timeout_ms", "5000",
        "request_timeout_ms", "30000",
        "tcp_nodelay", "1",
        "enable_directory_listing", "no",
        "access_control_allow_origin", "", /* CivetWeb answers CORS itself unless told not to */
        "decode_url", "no",                /* http.c decodes, refusing %00 */
        NULL,
    };
    /* clang-format on */
    struct mg_callbacks cb = {0};
    cb.http_error = on_http_error;
    cb.log_message = on_log;
    char etext[256] = "";
    struct mg_error_data ed = {.text = etext, .text_buffer_size = sizeof etext};
    struct mg_init_data init = {.callbacks = &cb, .user_data = s, .configuration_options = options};
    mg_init_library(0);
    s->ctx = mg_start2(&init, &ed);
    if (!s->ctx) {
        mg_exit_library();
        free(s);
        return tl_fail(err, TL_ERR_IO, "cannot listen on %s: %s (is the port in use? --port)",
                       listen, etext[0] ? etext : "civetweb failed to start");
    }
    mg_set_request_handler(s->ctx, "/", on_request, s);
    struct mg_server_port ports[4];
    int np = mg_get_server_ports(s->ctx, 4, ports);
    s->port = np > 0 ? ports[0].port : o->port;
    *out = s;
    return TL_OK;
}

int server_port(const struct server *s) {
    return s->port;
}

void server_stop(struct server *s) {
    if (!s) return;
    atomic_store(&s->stopping, true);
    mg_stop(s->ctx);
    mg_exit_library();
    free(s);
}
