/*
 * al_ops: a deliberately small HTTP/1.1 server for probes and scrapes.
 *
 * Each connection runs one request at a time through these states:
 *
 *   state     enters when                      timer            leaves when
 *   idle      accepted / response written      idle timeout     first byte of a request
 *   head      parser saw a request start       head timeout     request complete, or an error
 *   respond   response queued; parser paused,  idle, re-armed   all written
 *             reading stopped                  on each write
 *   linger    error response written           LINGER_SECS      peer EOF, drain cap or timer
 *
 * Pausing the parser while a response is queued keeps pipelined requests in
 * the kernel and in the small input buffer, so a peer can never make us
 * queue more than one response. After an error we shut down our side and
 * drain what the peer still sends for a moment before closing, so it sees the
 * error response instead of a reset.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <http_parser.h>

#include "al_addr.h"
#include "al_err.h"
#include "al_log.h"
#include "al_metrics.h"
#include "al_ops.h"

#define IN_CAP       4096  /* read buffer; the parser streams, this is not a request cap */
#define LINGER_SECS  2.0   /* draining after an error response */
#define LINGER_CAP   65536 /* bytes drained before giving up */
#define ACCEPT_PAUSE 1.0   /* seconds without accepting after EMFILE */
#define ACCEPT_BATCH 16
#define REASON_MAX   200

static const char busy_reply[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                                 "Content-Length: 22\r\nConnection: close\r\n\r\n"
                                 "too many connections\r\n";

enum conn_state { ST_IDLE, ST_HEAD, ST_RESPOND, ST_LINGER };

struct route {
    char *path;
    al_ops_handler_cb *cb;
    void *user;
};

struct conn {
    struct al_ops *ops;
    struct conn *prev, *next;
    unsigned long long id;
    int fd;
    enum conn_state st;
    ev_io rw, ww;
    ev_timer timer;
    http_parser parser;
    char in[IN_CAP];
    size_t in_off, in_len;
    char url[AL_OPS_MAX_HEAD + 1];
    size_t url_len, head_bytes, drained;
    int error_status; /* set by a parser callback that refused the request */
    int close_after;
    char *out;
    size_t out_len, out_off;
};

struct al_ops {
    struct ev_loop *loop;
    int fd;
    ev_io accept_w;
    ev_timer accept_pause;
    struct al_metrics *metrics;
    struct al_metric *g_conns;
    al_ops_ready_cb *ready_cb;
    void *ready_user;
    struct route routes[AL_OPS_MAX_ROUTES];
    size_t nroutes;
    struct conn *conns;
    size_t nconns;
    double idle, head;
    unsigned long long next_id;
};

static int on_message_begin(http_parser *p);
static int on_url(http_parser *p, const char *at, size_t len);
static int on_header_bytes(http_parser *p, const char *at, size_t len);
static int on_headers_complete(http_parser *p);
static int on_body(http_parser *p, const char *at, size_t len);
static int on_message_complete(http_parser *p);

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_bytes,
    .on_header_value = on_header_bytes,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- connection lifetime ----------------------------------------------- */

static void arm(struct conn *c, double secs)
{
    ev_timer_stop(c->ops->loop, &c->timer);
    ev_timer_set(&c->timer, secs, 0.);
    ev_timer_start(c->ops->loop, &c->timer);
}

static void conn_close(struct conn *c)
{
    struct al_ops *ops = c->ops;

    ev_io_stop(ops->loop, &c->rw);
    ev_io_stop(ops->loop, &c->ww);
    ev_timer_stop(ops->loop, &c->timer);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        ops->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ops->nconns--;
    al_metric_set(ops->g_conns, (double)ops->nconns);
    free(c->out);
    free(c);
}

static void reset_request(struct conn *c)
{
    c->url_len = 0;
    c->head_bytes = 0;
    c->error_status = 0;
    c->st = ST_IDLE;
}

/* ---- responses --------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static int reply_text(struct al_ops_reply *rep, int status,
                                                            const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&rep->body, fmt, ap);
    va_end(ap);
    if (n < 0) {
        rep->body = NULL;
        return AL_ERR_NOMEM;
    }
    rep->status = status;
    rep->len = (size_t)n;
    return 0;
}

static void start_linger(struct conn *c)
{
    c->st = ST_LINGER;
    shutdown(c->fd, SHUT_WR);
    ev_io_start(c->ops->loop, &c->rw);
    arm(c, LINGER_SECS);
}

/*
 * Writes what is queued. When all is written the connection goes back to
 * idle (parser resumed) or, after an error, to linger. Returns 0 while the
 * connection lives, -1 once it was closed (c is then freed).
 */
static int flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(c->ops->loop, &c->ww);
            arm(c, c->ops->idle);
            return 0;
        }
        if (n < 0) {
            conn_close(c);
            return -1;
        }
        c->out_off += (size_t)n;
    }
    ev_io_stop(c->ops->loop, &c->ww);
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    if (c->close_after) {
        start_linger(c);
        return 0;
    }
    reset_request(c);
    arm(c, c->ops->idle);
    http_parser_pause(&c->parser, 0);
    return 0;
}

/* Queues status + body (taken) and stops reading until it is written. */
static void queue(struct conn *c, int status, const char *ctype, char *body, size_t len,
                  const char *extra)
{
    const http_parser *p = &c->parser;
    int head_only = p->method == HTTP_HEAD;
    int keep10 = !c->close_after && p->http_major == 1 && p->http_minor == 0;
    char head[512];
    int n;

    n = snprintf(head, sizeof(head),
                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                 "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n%s%s\r\n",
                 status, http_status_str((enum http_status)status), ctype, len, extra,
                 c->close_after ? "Connection: close\r\n"
                 : keep10       ? "Connection: keep-alive\r\n"
                                : "");
    c->st = ST_RESPOND;
    ev_io_stop(c->ops->loop, &c->rw);
    c->out_off = 0;
    c->out_len = (size_t)n + (head_only ? 0 : len);
    c->out = malloc(c->out_len);
    if (!c->out) {
        /* nothing sensible to send without memory: flush() goes on to linger */
        c->out_len = 0;
        c->close_after = 1;
    } else {
        memcpy(c->out, head, (size_t)n);
        if (!head_only && len)
            memcpy(c->out + n, body, len);
    }
    free(body);
}

/* Queues a short text answer; error statuses close the connection. */
static void queue_text(struct conn *c, int status, const char *text, const char *extra)
{
    char *body = NULL;
    int n = asprintf(&body, "%s\n", text);

    if (status >= 400)
        c->close_after = 1;
    if (n < 0)
        queue(c, status, "text/plain; charset=utf-8", NULL, 0, extra);
    else
        queue(c, status, "text/plain; charset=utf-8", body, (size_t)n, extra);
}

static const struct route *find_route(const struct al_ops *ops, const char *path)
{
    for (size_t i = 0; i < ops->nroutes; i++)
        if (strcmp(ops->routes[i].path, path) == 0)
            return &ops->routes[i];
    return NULL;
}

/* A complete, bodiless request is in c->url / c->parser: answer it. */
static void dispatch(struct conn *c)
{
    struct al_ops_reply rep = {200, "text/plain; charset=utf-8", NULL, 0};
    struct http_parser_url u;
    char path[AL_OPS_MAX_HEAD + 1], *query;
    const struct route *r;
    int m = c->parser.method, rc;

    c->url[c->url_len] = '\0';
    http_parser_url_init(&u);
    if (http_parser_parse_url(c->url, c->url_len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH))) {
        queue_text(c, 400, "bad request target", "");
        return;
    }
    memcpy(path, c->url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    path[u.field_data[UF_PATH].len] = '\0';
    query = "";
    if (u.field_set & (1 << UF_QUERY)) {
        query = c->url + u.field_data[UF_QUERY].off;
        query[u.field_data[UF_QUERY].len] = '\0';
    }
    if (!(r = find_route(c->ops, path))) {
        queue_text(c, 404, "not found", "");
        return;
    }
    if (m != HTTP_GET && m != HTTP_HEAD) {
        queue_text(c, 405, "method not allowed", "Allow: GET, HEAD\r\n");
        return;
    }
    rc = r->cb(r->user, path, query, &rep);
    if (rc < 0 || rep.status < 100 || rep.status > 599 || rep.len > AL_OPS_MAX_RESPONSE ||
        (rep.len && !rep.body)) {
        AL_LOG_WARN("ops.handler", "conn=%llu path=%s reason=\"%s\"", c->id, path,
                    rc < 0 ? al_strerror(rc) : "bad reply");
        free(rep.body);
        queue_text(c, 500, "internal error", "");
        return;
    }
    queue(c, rep.status, rep.content_type ? rep.content_type : "text/plain; charset=utf-8",
          rep.body, rep.len, "");
}

/* ---- parser callbacks -------------------------------------------------- */

static int count_head(struct conn *c, size_t len)
{
    c->head_bytes += len;
    if (c->head_bytes > AL_OPS_MAX_HEAD) {
        c->error_status = 431;
        return -1;
    }
    return 0;
}

static int on_message_begin(http_parser *p)
{
    struct conn *c = p->data;

    reset_request(c);
    c->st = ST_HEAD;
    arm(c, c->ops->head);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;

    if (count_head(c, len) < 0)
        return -1;
    memcpy(c->url + c->url_len, at, len); /* fits: url_len <= head_bytes <= cap */
    c->url_len += len;
    return 0;
}

static int on_header_bytes(http_parser *p, const char *at, size_t len)
{
    /* 2 more per call roughly accounts for ": " and CRLF */
    return count_head(p->data, len + 2);
}

static int on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;

    if ((p->flags & F_CHUNKED) || p->uses_transfer_encoding ||
        ((p->flags & F_CONTENTLENGTH) && p->content_length > 0)) {
        c->error_status = 413;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;

    c->error_status = 413;
    return -1;
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = p->data;

    if (p->upgrade || !http_should_keep_alive(p))
        c->close_after = 1;
    dispatch(c);
    http_parser_pause(p, 1);
    return 0;
}

/* ---- I/O --------------------------------------------------------------- */

static const char *error_text(int status)
{
    switch (status) {
    case 413:
        return "request bodies are not accepted";
    case 431:
        return "request header fields too large";
    default:
        return "bad request";
    }
}

/*
 * Parses and answers buffered requests until the input runs out or a
 * response waits for the socket; reads resume only on an empty buffer.
 * Returns 0, or -1 when the connection was closed.
 */
static int feed(struct conn *c)
{
    while (c->st == ST_IDLE || c->st == ST_HEAD) {
        size_t n;
        enum http_errno e;
        if (c->in_off == c->in_len) {
            c->in_off = c->in_len = 0;
            ev_io_start(c->ops->loop, &c->rw);
            return 0;
        }
        n = http_parser_execute(&c->parser, &parser_settings, c->in + c->in_off,
                                c->in_len - c->in_off);
        e = HTTP_PARSER_ERRNO(&c->parser);
        c->in_off += n;
        if (e == HPE_OK && n == 0)
            e = HPE_UNKNOWN; /* no progress: never spin */
        if (e != HPE_OK && e != HPE_PAUSED) {
            int status = c->error_status ? c->error_status : e == HPE_HEADER_OVERFLOW ? 431 : 400;
            AL_LOG_INFO("ops.reject", "conn=%llu status=%d reason=%s", c->id, status,
                        http_errno_name(e));
            queue_text(c, status, error_text(status), "");
        }
        if (c->st == ST_RESPOND && flush(c) < 0)
            return -1;
    }
    return 0;
}

static void linger_read(struct conn *c)
{
    char sink[IN_CAP];
    ssize_t n = recv(c->fd, sink, sizeof(sink), 0);

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    c->drained += n > 0 ? (size_t)n : 0;
    if (n <= 0 || c->drained > LINGER_CAP)
        conn_close(c);
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = w->data;
    ssize_t n;

    if (c->st == ST_LINGER)
        return linger_read(c);
    n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        conn_close(c);
        return;
    }
    c->in_len += (size_t)n;
    feed(c);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = w->data;

    if (flush(c) == 0 && c->st == ST_IDLE)
        feed(c);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct conn *c = w->data;

    if (c->st == ST_HEAD)
        AL_LOG_INFO("ops.reject", "conn=%llu reason=\"headers not complete in time\"", c->id);
    conn_close(c);
}

static int conn_new(struct al_ops *ops, int fd)
{
    struct conn *c = calloc(1, sizeof(*c));

    if (!c)
        return AL_ERR_NOMEM;
    c->ops = ops;
    c->fd = fd;
    c->id = ++ops->next_id;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    ev_io_init(&c->rw, read_cb, fd, EV_READ);
    ev_io_init(&c->ww, write_cb, fd, EV_WRITE);
    ev_init(&c->timer, timer_cb);
    c->rw.data = c->ww.data = c->timer.data = c;
    c->next = ops->conns;
    if (ops->conns)
        ops->conns->prev = c;
    ops->conns = c;
    ops->nconns++;
    al_metric_set(ops->g_conns, (double)ops->nconns);
    ev_io_start(ops->loop, &c->rw);
    arm(c, ops->idle);
    return 0;
}

static void accept_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct al_ops *ops = w->data;

    ev_io_start(loop, &ops->accept_w);
}

/* Out of descriptors: stop accepting for a moment instead of spinning. */
static void accept_pause(struct al_ops *ops)
{
    AL_LOG_WARN("ops.accept", "reason=\"%s\" pause=%.0fs", strerror(errno), ACCEPT_PAUSE);
    ev_io_stop(ops->loop, &ops->accept_w);
    ev_timer_set(&ops->accept_pause, ACCEPT_PAUSE, 0.);
    ev_timer_start(ops->loop, &ops->accept_pause);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct al_ops *ops = w->data;

    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(ops->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                accept_pause(ops);
            else if (errno != EAGAIN && errno != EWOULDBLOCK)
                AL_LOG_WARN("ops.accept", "reason=\"%s\"", strerror(errno));
            return;
        }
        if (ops->nconns >= AL_OPS_MAX_CONNS) {
            ssize_t n = send(fd, busy_reply, sizeof(busy_reply) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)n;
            close(fd);
            continue;
        }
        if (conn_new(ops, fd) < 0)
            close(fd);
    }
}

/* ---- built-in routes --------------------------------------------------- */

static int metrics_handler(void *user, const char *path, const char *query,
                           struct al_ops_reply *rep)
{
    struct al_ops *ops = user;
    int rc = al_metrics_render(ops->metrics, &rep->body, &rep->len);

    rep->content_type = "text/plain; version=0.0.4; charset=utf-8";
    return rc;
}

static int healthz_handler(void *user, const char *path, const char *query,
                           struct al_ops_reply *rep)
{
    return reply_text(rep, 200, "ok\n");
}

static int readyz_handler(void *user, const char *path, const char *query, struct al_ops_reply *rep)
{
    struct al_ops *ops = user;
    char why[REASON_MAX] = "";

    if (!ops->ready_cb || ops->ready_cb(ops->ready_user, why, sizeof(why)) > 0)
        return reply_text(rep, 200, "ok\n");
    why[sizeof(why) - 1] = '\0';
    for (char *p = why; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' '; /* one line, whatever the callback wrote */
    return reply_text(rep, 503, "not ready: %s\n", why[0] ? why : "unspecified");
}

/* ---- public ------------------------------------------------------------ */

int al_ops_route(struct al_ops *ops, const char *path, al_ops_handler_cb *handler, void *user)
{
    struct route *r;
    char *copy;

    if (!ops || !path || path[0] != '/' || !handler || strlen(path) > AL_OPS_MAX_HEAD)
        return AL_ERR_INVAL;
    r = (struct route *)find_route(ops, path);
    if (!r && ops->nroutes == AL_OPS_MAX_ROUTES)
        return AL_ERR_TOOBIG;
    if (r) {
        r->cb = handler;
        r->user = user;
        return 0;
    }
    copy = strdup(path);
    if (!copy)
        return AL_ERR_NOMEM;
    ops->routes[ops->nroutes++] = (struct route){copy, handler, user};
    return 0;
}

int al_ops_new(struct ev_loop *loop, const char *listen, struct al_metrics *metrics,
               struct al_ops **out)
{
    struct al_ops *ops = calloc(1, sizeof(*ops));
    int rc = AL_ERR_NOMEM;

    if (!ops)
        return AL_ERR_NOMEM;
    ops->loop = loop;
    ops->fd = -1;
    ops->metrics = metrics;
    ops->idle = AL_OPS_IDLE_TIMEOUT;
    ops->head = AL_OPS_HEAD_TIMEOUT;
    if ((rc = al_ops_route(ops, "/healthz", healthz_handler, ops)) < 0 ||
        (rc = al_ops_route(ops, "/readyz", readyz_handler, ops)) < 0 ||
        (metrics && (rc = al_ops_route(ops, "/metrics", metrics_handler, ops)) < 0))
        goto out;
    rc = al_listen_tcp(listen, 128, &ops->fd);
    if (rc < 0)
        goto out;
    ops->g_conns = al_metrics_gauge(metrics, "airlock_ops_connections",
                                    "Open connections on the ops HTTP port", NULL);
    ev_io_init(&ops->accept_w, accept_cb, ops->fd, EV_READ);
    ev_init(&ops->accept_pause, accept_resume_cb);
    ops->accept_w.data = ops->accept_pause.data = ops;
    ev_io_start(loop, &ops->accept_w);
    *out = ops;
    ops = NULL;
out:
    al_ops_free(ops);
    return rc;
}

void al_ops_free(struct al_ops *ops)
{
    if (!ops)
        return;
    while (ops->conns)
        conn_close(ops->conns);
    if (ops->fd >= 0) {
        ev_io_stop(ops->loop, &ops->accept_w);
        ev_timer_stop(ops->loop, &ops->accept_pause);
        close(ops->fd);
    }
    for (size_t i = 0; i < ops->nroutes; i++)
        free(ops->routes[i].path);
    free(ops);
}

void al_ops_set_ready_cb(struct al_ops *ops, al_ops_ready_cb *cb, void *user)
{
    ops->ready_cb = cb;
    ops->ready_user = user;
}

void al_ops_set_timeouts(struct al_ops *ops, double idle, double head)
{
    if (idle > 0)
        ops->idle = idle;
    if (head > 0)
        ops->head = head;
}

int al_ops_port(struct al_ops *ops)
{
    return al_addr_local_port(ops->fd);
}

size_t al_ops_connections(const struct al_ops *ops)
{
    return ops->nconns;
}
