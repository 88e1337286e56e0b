/*
 * bench_tunnel_upstream: the private MCP-shaped HTTP/1.1 server behind the
 * tunnel in tests/bench/tunnel.sh, the same process for all three paths
 * (direct, relay + gateway, nghttpx). One thread, libev, keep-alive,
 * http_parser; it does as little as it can per request so that the paths'
 * differences are what gets measured.
 *
 * Requests (matched on the last path segment, so any route prefix works):
 *   POST .../small   a 100-byte JSON-RPC "ping" request; answers a 100-byte
 *                    JSON-RPC result.
 *   POST .../mcp     a JSON-RPC tools/call request; answers an MCP
 *                    CallToolResult (JSON) carrying the request's id.
 *   GET  .../big?bytes=N  N bytes (Content-Length) of the tunnel_bench.h
 *                    pattern, application/octet-stream, streamed from one
 *                    64 KiB block.
 *   GET  .../sse?group=G  text/event-stream (chunked): TB_SSE_FIRST at once,
 *                    then held open until group G is released, then
 *                    TB_SSE_LAST and the end. A request for a group already
 *                    released gets both events at once.
 *   POST /release?group=G  releases group G (at most 64 groups); answers the
 *                    number of streams it let go.
 *   GET  /stats      counters, one "key=value" line.
 * Anything else: 404; a malformed request: 400 (counted as bad).
 *
 * Every request except /stats and /release is counted by its Authorization
 * header against --auth-file ("Bearer " + the file's first line): auth_ok,
 * auth_wrong or auth_missing, so the benchmark can check that every request
 * that went through the gateway carried the injected credential. The value
 * is never printed.
 *
 * --print-response small|mcp writes the body the server sends for that
 * request to stdout ("@ID@" where the request id goes) and exits: the load
 * generator checks answers against exactly these bytes.
 *
 * Output: "listening PORT" on stdout once the socket is bound.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <ev.h>
#include <http_parser.h>

#include "tunnel_bench.h"

#define RBUF_SIZE  16384
#define MAX_URL    2048
#define MAX_AUTH   1024
#define MAX_BODY   (1 << 20)
#define MAX_GROUPS 64
#define GROUP_MAX  63
#define BIG_MAX    (64ULL << 30)
#define WRITE_MAX  (1 << 20) /* bytes per writev of a big body */
#define SMALL_LEN  100

/* Response bodies. SMALL is padded to SMALL_LEN bytes at start-up. */
#define SMALL_HEAD "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"_meta\":{\"pad\":\""
#define SMALL_TAIL "\"}}}"
#define CALL_HEAD  "{\"jsonrpc\":\"2.0\",\"id\":"
#define CALL_TAIL                                                                                  \
    ",\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"3 customers match \\\"acme corp "     \
    "renewals\\\": Acme Corp (owner j.doe, renewal 2026-03-01, ARR 120000); Acme Labs (owner "     \
    "k.lee, renewal 2026-05-15, ARR 48000); Acme GmbH (owner m.ruiz, renewal 2026-09-30, ARR "     \
    "75500)\"}],\"isError\":false}}"

struct conn;

struct server {
    struct ev_loop *loop;
    ev_io lw;
    int lfd;
    char auth[MAX_AUTH];
    size_t auth_len;
    char small[SMALL_LEN + 1];
    uint8_t block[TB_BLOCK];
    char released[MAX_GROUPS][GROUP_MAX + 1];
    int nreleased;
    struct conn *held; /* SSE streams waiting for their group */
    unsigned long long requests, auth_ok, auth_wrong, auth_missing, bad, not_found;
    unsigned long long small_n, mcp_n, big_n, sse_n, held_now, held_max, released_n;
    unsigned long long conns_now, conns_max, conns_total;
};

enum hdr { H_OTHER, H_AUTH };

struct conn {
    struct server *s;
    ev_io io;
    int fd;
    int want_write;
    http_parser p;
    uint8_t rbuf[RBUF_SIZE];
    size_t rlen; /* unparsed bytes at rbuf[0..rlen) */
    /* the request being parsed */
    char url[MAX_URL + 1];
    size_t url_len;
    int url_over;
    enum hdr cur;
    char auth[MAX_AUTH + 1];
    size_t auth_len;
    int auth_seen, auth_over;
    char *body;
    size_t body_len;
    int body_over;
    int busy; /* a request is being answered: parsing waits */
    int keep_alive;
    /* the response */
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    uint64_t big_left, big_off;
    int held;
    char group[GROUP_MAX + 1];
    struct conn *hnext, **hpprev;
};

static void conn_close(struct conn *c);
static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void parse_more(struct conn *c);

/* ---------- output ---------- */

static int out_put(struct conn *c, const void *p, size_t n)
{
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + n > c->out_cap) {
        size_t want = c->out_cap ? c->out_cap : 4096;
        while (want < c->out_len + n)
            want *= 2;
        uint8_t *q = realloc(c->out, want);
        if (!q)
            return -1;
        c->out = q;
        c->out_cap = want;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    return 0;
}

static int out_fmt(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int out_fmt(struct conn *c, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return -1;
    return out_put(c, buf, (size_t)n);
}

static void set_events(struct conn *c)
{
    int ev = EV_READ | (c->want_write ? EV_WRITE : 0);
    if (c->rlen == RBUF_SIZE)
        ev &= ~EV_READ; /* full: the request being answered must finish first */
    if (ev == (c->io.events & (EV_READ | EV_WRITE)))
        return;
    ev_io_stop(c->s->loop, &c->io);
    ev_io_set(&c->io, c->fd, ev);
    if (ev)
        ev_io_start(c->s->loop, &c->io);
}

/* Everything queued has gone and no body is left: the response is done. */
static int response_done(const struct conn *c)
{
    return c->out_off == c->out_len && c->big_left == 0 && !c->held;
}

/* Writes what it can. Returns 0, or -1 when the connection was closed. */
static int flush_out(struct conn *c)
{
    for (;;) {
        struct iovec iov[18];
        int n = 0;
        size_t total = 0;
        if (c->out_off < c->out_len) {
            iov[n++] = (struct iovec){c->out + c->out_off, c->out_len - c->out_off};
            total += c->out_len - c->out_off;
        }
        uint64_t left = c->big_left, off = c->big_off;
        while (left && n < 18 && total < WRITE_MAX) {
            size_t at = off % TB_BLOCK, k = TB_BLOCK - at;
            if (k > left)
                k = (size_t)left;
            iov[n++] = (struct iovec){c->s->block + at, k};
            total += k;
            left -= k;
            off += k;
        }
        if (n == 0)
            break;
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            c->want_write = 1;
            set_events(c);
            return 0;
        }
        if (w <= 0) {
            conn_close(c);
            return -1;
        }
        size_t done = (size_t)w, head = c->out_len - c->out_off;
        if (done <= head) {
            c->out_off += done;
        } else {
            c->out_off = c->out_len;
            c->big_left -= done - head;
            c->big_off += done - head;
        }
    }
    c->want_write = 0;
    set_events(c);
    return 0;
}

/* After a response was queued or more of it went out: when it is complete,
 * parse the next request (keep-alive) or close. */
static void progress(struct conn *c)
{
    if (flush_out(c) < 0)
        return;
    if (!c->busy || !response_done(c))
        return;
    c->busy = 0;
    if (!c->keep_alive) {
        conn_close(c);
        return;
    }
    parse_more(c);
}

/* ---------- responses ---------- */

/* Status line and headers of a response with a body of n bytes. */
static int respond_head(struct conn *c, int status, const char *reason, const char *ctype,
                        uint64_t n)
{
    return out_fmt(c,
                   "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %llu\r\n"
                   "cache-control: no-store\r\n%s\r\n",
                   status, reason, ctype, (unsigned long long)n,
                   c->keep_alive ? "" : "connection: close\r\n");
}

static int respond(struct conn *c, int status, const char *reason, const char *ctype,
                   const void *body, size_t n)
{
    if (respond_head(c, status, reason, ctype, n) < 0)
        return -1;
    return n ? out_put(c, body, n) : 0;
}

static int chunk(struct conn *c, const char *s)
{
    size_t n = strlen(s);
    return out_fmt(c, "%zx\r\n", n) < 0 || out_put(c, s, n) < 0 || out_put(c, "\r\n", 2) < 0 ? -1
                                                                                             : 0;
}

static int released(const struct server *s, const char *g)
{
    for (int i = 0; i < s->nreleased; i++)
        if (strcmp(s->released[i], g) == 0)
            return 1;
    return 0;
}

static void hold_remove(struct conn *c)
{
    if (!c->held)
        return;
    *c->hpprev = c->hnext;
    if (c->hnext)
        c->hnext->hpprev = c->hpprev;
    c->held = 0;
    c->s->held_now--;
}

/* Value of query parameter name in the URL, copied to out[n]; 0 or -1. */
static int query(const char *url, const char *name, char *out, size_t n)
{
    const char *q = strchr(url, '?');
    size_t nl = strlen(name);
    while (q) {
        q++;
        if (strncmp(q, name, nl) == 0 && q[nl] == '=') {
            const char *v = q + nl + 1;
            size_t l = strcspn(v, "&#");
            if (l == 0 || l >= n)
                return -1;
            memcpy(out, v, l);
            out[l] = 0;
            return 0;
        }
        q = strchr(q, '&');
    }
    return -1;
}

/* Last path segment of the URL ("small" of "/mcp/corp/x/small?a=b"). */
static void last_segment(const char *url, char *out, size_t n)
{
    size_t end = strcspn(url, "?#"), start = end;
    while (start > 0 && url[start - 1] != '/')
        start--;
    size_t l = end - start < n - 1 ? end - start : n - 1;
    memcpy(out, url + start, l);
    out[l] = 0;
}

static int valid_group(const char *g)
{
    for (const char *p = g; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_'))
            return 0;
    return *g != 0;
}

static int answer_release(struct conn *c)
{
    struct server *s = c->s;
    char g[GROUP_MAX + 1], body[64];
    unsigned long long n = 0;

    if (query(c->url, "group", g, sizeof(g)) < 0 || !valid_group(g))
        return respond(c, 400, "Bad Request", "text/plain", "bad group\n", 10);
    if (!released(s, g)) {
        if (s->nreleased == MAX_GROUPS)
            return respond(c, 507, "Insufficient Storage", "text/plain", "too many groups\n", 16);
        snprintf(s->released[s->nreleased++], GROUP_MAX + 1, "%s", g);
    }
    for (struct conn *h = s->held, *next; h; h = next) {
        next = h->hnext;
        if (strcmp(h->group, g) != 0)
            continue;
        hold_remove(h);
        n++;
        if (chunk(h, TB_SSE_LAST) < 0 || out_put(h, "0\r\n\r\n", 5) < 0) {
            conn_close(h);
            continue;
        }
        progress(h);
    }
    s->released_n += n;
    int l = snprintf(body, sizeof(body), "released=%llu\n", n);
    return respond(c, 200, "OK", "text/plain", body, (size_t)l);
}

static int answer_stats(struct conn *c)
{
    const struct server *s = c->s;
    char body[1024];
    int l = snprintf(body, sizeof(body),
                     "requests=%llu auth_ok=%llu auth_wrong=%llu auth_missing=%llu bad=%llu "
                     "not_found=%llu small=%llu mcp=%llu big=%llu sse=%llu held_now=%llu "
                     "held_max=%llu released=%llu conns_now=%llu conns_max=%llu conns_total=%llu\n",
                     s->requests, s->auth_ok, s->auth_wrong, s->auth_missing, s->bad, s->not_found,
                     s->small_n, s->mcp_n, s->big_n, s->sse_n, s->held_now, s->held_max,
                     s->released_n, s->conns_now, s->conns_max, s->conns_total);
    return respond(c, 200, "OK", "text/plain", body, (size_t)l);
}

/* The JSON-RPC id of a tools/call body: digits after "id": (the generator
 * sends numbers). Returns the length of the id or 0. */
static size_t call_id(const char *b, size_t n, const char **id)
{
    static const char key[] = "\"id\":";
    const char *p = memmem(b, n, key, sizeof(key) - 1);
    if (!p)
        return 0;
    p += sizeof(key) - 1;
    size_t l = 0;
    while (p + l < b + n && l < 20 && p[l] >= '0' && p[l] <= '9')
        l++;
    *id = p;
    return l;
}

static int answer_mcp(struct conn *c)
{
    static const char m[] = "\"method\":\"tools/call\"";
    const char *id;
    size_t il = c->body ? call_id(c->body, c->body_len, &id) : 0;
    char body[1024];

    if (!il || !memmem(c->body, c->body_len, m, sizeof(m) - 1)) {
        c->s->bad++;
        return respond(c, 400, "Bad Request", "text/plain", "not a tools/call\n", 17);
    }
    int l = snprintf(body, sizeof(body), "%s%.*s%s", CALL_HEAD, (int)il, id, CALL_TAIL);
    c->s->mcp_n++;
    return respond(c, 200, "OK", "application/json", body, (size_t)l);
}

static int answer_small(struct conn *c)
{
    static const char m[] = "\"method\":\"ping\"";
    if (c->body_len != SMALL_LEN || !memmem(c->body, c->body_len, m, sizeof(m) - 1)) {
        c->s->bad++;
        return respond(c, 400, "Bad Request", "text/plain", "not a 100-byte ping\n", 20);
    }
    c->s->small_n++;
    return respond(c, 200, "OK", "application/json", c->s->small, SMALL_LEN);
}

static int answer_big(struct conn *c)
{
    char v[32], *end;
    unsigned long long n;

    if (query(c->url, "bytes", v, sizeof(v)) < 0 || (n = strtoull(v, &end, 10), *end) ||
        n > BIG_MAX) {
        c->s->bad++;
        return respond(c, 400, "Bad Request", "text/plain", "bad bytes\n", 10);
    }
    c->s->big_n++;
    if (respond_head(c, 200, "OK", "application/octet-stream", n) < 0)
        return -1;
    c->big_left = n;
    c->big_off = 0;
    return 0;
}

static int answer_sse(struct conn *c)
{
    struct server *s = c->s;
    char g[GROUP_MAX + 1];

    if (query(c->url, "group", g, sizeof(g)) < 0 || !valid_group(g)) {
        s->bad++;
        return respond(c, 400, "Bad Request", "text/plain", "bad group\n", 10);
    }
    s->sse_n++;
    if (out_fmt(c, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: "
                   "no-cache\r\ntransfer-encoding: chunked\r\n\r\n") < 0 ||
        chunk(c, TB_SSE_FIRST) < 0)
        return -1;
    if (released(s, g))
        return chunk(c, TB_SSE_LAST) < 0 || out_put(c, "0\r\n\r\n", 5) < 0 ? -1 : 0;
    snprintf(c->group, sizeof(c->group), "%s", g);
    c->held = 1;
    c->hnext = s->held;
    if (s->held)
        s->held->hpprev = &c->hnext;
    c->hpprev = &s->held;
    s->held = c;
    if (++s->held_now > s->held_max)
        s->held_max = s->held_now;
    return 0;
}

static void count_auth(struct conn *c)
{
    struct server *s = c->s;
    if (!c->auth_seen)
        s->auth_missing++;
    else if (!c->auth_over && s->auth_len && c->auth_len == s->auth_len &&
             memcmp(c->auth, s->auth, s->auth_len) == 0)
        s->auth_ok++;
    else
        s->auth_wrong++;
}

/* A whole request has been parsed: queue its answer. */
static int dispatch(struct conn *c)
{
    char seg[32];
    const char *m = http_method_str((enum http_method)c->p.method);
    int get = c->p.method == HTTP_GET, post = c->p.method == HTTP_POST;

    if (c->url_over || c->body_over) {
        c->s->bad++;
        c->keep_alive = 0;
        return respond(c, c->body_over ? 413 : 414, "Too Large", "text/plain", "too large\n", 10);
    }
    if (strcmp(c->url, "/stats") == 0 && get)
        return answer_stats(c);
    if (strncmp(c->url, "/release?", 9) == 0 && post)
        return answer_release(c);
    c->s->requests++;
    count_auth(c);
    last_segment(c->url, seg, sizeof(seg));
    if (post && strcmp(seg, "small") == 0)
        return answer_small(c);
    if (post && strcmp(seg, "mcp") == 0)
        return answer_mcp(c);
    if (get && strcmp(seg, "big") == 0)
        return answer_big(c);
    if (get && strcmp(seg, "sse") == 0)
        return answer_sse(c);
    (void)m;
    c->s->not_found++;
    return respond(c, 404, "Not Found", "text/plain", "not found\n", 10);
}

/* ---------- request parsing ---------- */

static int on_begin(http_parser *p)
{
    struct conn *c = p->data;
    c->url_len = c->auth_len = c->body_len = 0;
    c->url_over = c->auth_over = c->auth_seen = c->body_over = 0;
    c->url[0] = 0;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    if (c->url_len + n > MAX_URL) {
        c->url_over = 1;
        return 0;
    }
    memcpy(c->url + c->url_len, at, n);
    c->url_len += n;
    c->url[c->url_len] = 0;
    return 0;
}

static int on_field(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    /* http_parser may split a name; names of interest are short and arrive
     * whole from every client here, a split one only counts as "other" */
    c->cur = n == 13 && strncasecmp(at, "authorization", 13) == 0 ? H_AUTH : H_OTHER;
    if (c->cur == H_AUTH) {
        c->auth_seen++;
        c->auth_len = 0;
    }
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    if (c->cur != H_AUTH)
        return 0;
    if (c->auth_len + n > MAX_AUTH) {
        c->auth_over = 1;
        return 0;
    }
    memcpy(c->auth + c->auth_len, at, n);
    c->auth_len += n;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    if (c->body_len + n > MAX_BODY) {
        c->body_over = 1;
        return 0;
    }
    if (!c->body && !(c->body = malloc(MAX_BODY)))
        return -1;
    memcpy(c->body + c->body_len, at, n);
    c->body_len += n;
    return 0;
}

static int on_complete(http_parser *p)
{
    struct conn *c = p->data;
    if (c->auth_seen > 1)
        c->auth_over = 1; /* two Authorization headers never match */
    c->keep_alive = http_should_keep_alive(p);
    c->busy = 1;
    if (dispatch(c) < 0)
        return -1;
    http_parser_pause(p, 1); /* the next request waits for this answer */
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_begin,
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

/* Parses buffered bytes until a request is complete (then answers it) or
 * the buffer is used up. */
static void parse_more(struct conn *c)
{
    while (c->rlen && !c->busy) {
        size_t used = http_parser_execute(&c->p, &settings, (const char *)c->rbuf, c->rlen);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->p, 0);
        } else if (e != HPE_OK) {
            c->s->bad++;
            conn_close(c);
            return;
        }
        memmove(c->rbuf, c->rbuf + used, c->rlen - used);
        c->rlen -= used;
        if (c->busy) {
            progress(c);
            return;
        }
    }
    set_events(c);
}

/* ---------- connections ---------- */

static void conn_close(struct conn *c)
{
    struct server *s = c->s;
    hold_remove(c);
    ev_io_stop(s->loop, &c->io);
    close(c->fd);
    free(c->body);
    free(c->out);
    free(c);
    s->conns_now--;
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = w->data;
    (void)loop;

    if (revents & EV_WRITE) {
        progress(c);
        return; /* the read, if any, comes in the next round */
    }
    if (c->rlen == RBUF_SIZE)
        return;
    ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF_SIZE - c->rlen);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        conn_close(c);
        return;
    }
    c->rlen += (size_t)r;
    if (!c->busy)
        parse_more(c);
    else
        set_events(c);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct server *s = w->data;
    (void)revents;

    for (int i = 0; i < 256; i++) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                fprintf(stderr, "bench_tunnel_upstream: accept: %s\n", strerror(errno));
            return;
        }
        struct conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->s = s;
        c->fd = fd;
        http_parser_init(&c->p, HTTP_REQUEST);
        c->p.data = c;
        ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
        c->io.data = c;
        ev_io_start(loop, &c->io);
        s->conns_total++;
        if (++s->conns_now > s->conns_max)
            s->conns_max = s->conns_now;
    }
}

/* ---------- setup ---------- */

static void build_small(char *out)
{
    size_t h = strlen(SMALL_HEAD), t = strlen(SMALL_TAIL);
    memcpy(out, SMALL_HEAD, h);
    memset(out + h, 'x', SMALL_LEN - h - t);
    memcpy(out + SMALL_LEN - t, SMALL_TAIL, t);
    out[SMALL_LEN] = 0;
}

static int read_auth(const char *path, struct server *s)
{
    char v[MAX_AUTH];
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(v, 1, sizeof(v) - 1, f);
    fclose(f);
    v[n] = 0;
    v[strcspn(v, "\r\n")] = 0;
    int l = snprintf(s->auth, sizeof(s->auth), "Bearer %s", v);
    explicit_bzero(v, sizeof(v));
    if (l <= 7 || (size_t)l >= sizeof(s->auth))
        return -1;
    s->auth_len = (size_t)l;
    return 0;
}

static int listen_on(const char *addr, int *port)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    int one = 1, fd;

    if (!colon || (size_t)(colon - addr) >= sizeof(host))
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_tunnel_upstream [--listen 127.0.0.1:PORT] [--auth-file FILE]\n"
               "       bench_tunnel_upstream --print-response small|mcp\n");
}

int main(int argc, char **argv)
{
    static struct server s;
    static const struct option lo[] = {{"listen", 1, 0, 'l'},
                                       {"auth-file", 1, 0, 'a'},
                                       {"print-response", 1, 0, 'p'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
    const char *listen_addr = "127.0.0.1:0", *auth_file = NULL, *print = NULL;
    int c, port;

    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen_addr = optarg;
            break;
        case 'a':
            auth_file = optarg;
            break;
        case 'p':
            print = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    build_small(s.small);
    if (print) {
        if (strcmp(print, "small") == 0)
            fputs(s.small, stdout);
        else if (strcmp(print, "mcp") == 0)
            printf("%s@ID@%s", CALL_HEAD, CALL_TAIL);
        else {
            usage(stderr);
            return 2;
        }
        return 0;
    }
    if (auth_file && read_auth(auth_file, &s) < 0) {
        fprintf(stderr, "bench_tunnel_upstream: --auth-file %s: unreadable or empty\n", auth_file);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    tb_fill_block(s.block);
    if ((s.lfd = listen_on(listen_addr, &port)) < 0) {
        fprintf(stderr, "bench_tunnel_upstream: --listen %s: %s\n", listen_addr, strerror(errno));
        return 2;
    }
    s.loop = ev_default_loop(EVFLAG_AUTO);
    ev_io_init(&s.lw, accept_cb, s.lfd, EV_READ);
    s.lw.data = &s;
    ev_io_start(s.loop, &s.lw);
    printf("listening %d\n", port);
    fflush(stdout);
    ev_run(s.loop, 0);
    return 0;
}
