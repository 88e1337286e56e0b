/*
 * Tests of the HTTP/1.1 agent connection (rl_h1conn) and the agent listener
 * (rl_listener) on a real libev loop: connections over socketpairs and
 * loopback TCP, TLS with a throwaway dev PKI made by al_pki, responses read
 * back with http_parser in response mode (an independent check of our
 * framing). Timeouts are set short here because they are behaviour under
 * test; the only time limits in the test are failsafes that fail a test
 * which would otherwise hang.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <http_parser.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "al_err.h"
#include "al_log.h"
#include "al_pki.h"
#include "al_tls.h"
#include "h1.h"
#include "rlbuf.h"

#define FAILSAFE 10.0 /* seconds before a hanging test fails */

static struct ev_loop *loop;
static char pki[256];

/* ---------- running the loop ---------- */

static void tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

/* Runs the loop until cond(arg) holds or `limit` seconds pass. */
static int run_until(int (*cond)(void *), void *arg, double limit)
{
    ev_timer tick;
    ev_tstamp end;
    int ok;

    ev_timer_init(&tick, tick_cb, 0.005, 0.005);
    ev_timer_start(loop, &tick);
    ev_now_update(loop);
    end = ev_now(loop) + limit;
    while (!(ok = cond ? cond(arg) : 0) && ev_now(loop) < end)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &tick);
    return ok;
}

static int never(void *arg)
{
    (void)arg;
    return 0;
}

static void settle(double secs)
{
    run_until(never, NULL, secs);
}

static int flag_set(void *arg)
{
    return *(int *)arg != 0;
}

/* ---------- client side ---------- */

struct client {
    int fd;
    SSL *ssl;
    ev_io rw;
    struct rl_buf in;
    int eof;
    int reading;
};

static void client_read_cb(struct ev_loop *l, ev_io *w, int revents)
{
    struct client *cl = w->data;
    uint8_t buf[65536];
    (void)revents;

    for (;;) {
        ssize_t n;
        if (cl->ssl) {
            int r = SSL_read(cl->ssl, buf, sizeof(buf));
            if (r <= 0) {
                int e = SSL_get_error(cl->ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    return;
                n = 0;
            } else {
                n = r;
            }
        } else {
            n = recv(cl->fd, buf, sizeof(buf), 0);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        }
        if (n <= 0) {
            cl->eof = 1;
            ev_io_stop(l, w);
            return;
        }
        rl_buf_append(&cl->in, buf, (size_t)n);
    }
}

static void client_start(struct client *cl, int fd, SSL *ssl)
{
    memset(cl, 0, sizeof(*cl));
    cl->fd = fd;
    cl->ssl = ssl;
    rl_buf_init(&cl->in, 0);
    ev_io_init(&cl->rw, client_read_cb, fd, EV_READ);
    cl->rw.data = cl;
    cl->reading = 1;
    ev_io_start(loop, &cl->rw);
}

static void client_pause(struct client *cl, int on)
{
    cl->reading = !on;
    if (on)
        ev_io_stop(loop, &cl->rw);
    else if (!cl->eof)
        ev_io_start(loop, &cl->rw);
}

static void client_send(struct client *cl, const void *d, size_t n)
{
    const uint8_t *p = d;
    ev_tstamp end = ev_time() + FAILSAFE;

    while (n > 0 && ev_time() < end) {
        ssize_t w;
        if (cl->ssl) {
            int r = SSL_write(cl->ssl, p, (int)n);
            w = r > 0 ? r : -1;
            if (r <= 0 && SSL_get_error(cl->ssl, r) != SSL_ERROR_WANT_WRITE &&
                SSL_get_error(cl->ssl, r) != SSL_ERROR_WANT_READ)
                break;
        } else {
            w = send(cl->fd, p, n, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN && errno != EINTR)
                break;
        }
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else {
            ev_run(loop, EVRUN_NOWAIT);
        }
    }
    CU_ASSERT_EQUAL(n, 0);
}

static void client_sends(struct client *cl, const char *s)
{
    client_send(cl, s, strlen(s));
}

static void client_close(struct client *cl)
{
    ev_io_stop(loop, &cl->rw);
    if (cl->ssl)
        SSL_free(cl->ssl);
    if (cl->fd >= 0)
        close(cl->fd);
    cl->fd = -1;
    cl->ssl = NULL;
    rl_buf_cleanup(&cl->in);
}

static int client_eof(void *arg)
{
    return ((struct client *)arg)->eof;
}

/* ---------- responses, parsed back with http_parser ---------- */

#define MAX_RESP 8
#define MAX_HDR  24

struct resp {
    int status;
    int nh;
    char hn[MAX_HDR][64];
    char hv[MAX_HDR][256];
    struct rl_buf body;
    int complete;
    int chunked;
    int keep_alive;
};

struct resp_set {
    struct resp r[MAX_RESP];
    int n;
    int err;
    int in_value;
    const char *head_for; /* bitmap-ish: "HG" = responses to HEAD, GET, ... */
};

static struct resp *rs_cur(struct resp_set *s)
{
    return &s->r[s->n < MAX_RESP ? s->n : MAX_RESP - 1];
}

static int rp_begin(http_parser *p)
{
    struct resp_set *s = p->data;
    struct resp *r = rs_cur(s);
    memset(r, 0, sizeof(*r));
    rl_buf_init(&r->body, 0);
    s->in_value = 0;
    return 0;
}

static int rp_field(http_parser *p, const char *at, size_t len)
{
    struct resp_set *s = p->data;
    struct resp *r = rs_cur(s);
    if (s->in_value || r->nh == 0) {
        if (r->nh >= MAX_HDR)
            return 0;
        r->nh++;
        s->in_value = 0;
    }
    strncat(r->hn[r->nh - 1], at, len < 63 ? len : 63);
    return 0;
}

static int rp_value(http_parser *p, const char *at, size_t len)
{
    struct resp_set *s = p->data;
    struct resp *r = rs_cur(s);
    s->in_value = 1;
    if (r->nh > 0)
        strncat(r->hv[r->nh - 1], at, len < 255 ? len : 255);
    return 0;
}

static int rp_headers_done(http_parser *p)
{
    struct resp_set *s = p->data;
    struct resp *r = rs_cur(s);
    r->status = (int)p->status_code;
    r->chunked = (p->flags & F_CHUNKED) != 0;
    if (r->status < 200)
        return 1; /* interim: no body */
    if (s->head_for && (size_t)s->n < strlen(s->head_for) && s->head_for[s->n] == 'H')
        return 1;
    return 0;
}

static int rp_body(http_parser *p, const char *at, size_t len)
{
    struct resp_set *s = p->data;
    rl_buf_append(&rs_cur(s)->body, at, len);
    return 0;
}

static int rp_done(http_parser *p)
{
    struct resp_set *s = p->data;
    struct resp *r = rs_cur(s);
    r->complete = 1;
    r->keep_alive = http_should_keep_alive(p);
    if (r->status >= 200 && s->n < MAX_RESP)
        s->n++;
    else if (r->status < 200)
        rl_buf_cleanup(&r->body);
    return 0;
}

static const http_parser_settings rp_settings = {
    .on_message_begin = rp_begin,
    .on_header_field = rp_field,
    .on_header_value = rp_value,
    .on_headers_complete = rp_headers_done,
    .on_body = rp_body,
    .on_message_complete = rp_done,
};

/* Parses every response in buf; eof = the peer closed (ends a body without
 * length). Interim 1xx responses are skipped. */
static void parse_responses(const struct rl_buf *buf, int eof, const char *head_for,
                            struct resp_set *s)
{
    http_parser p;
    size_t n;

    memset(s, 0, sizeof(*s));
    s->head_for = head_for;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = s;
    n = http_parser_execute(&p, &rp_settings, (const char *)buf->p, buf->len);
    if (HTTP_PARSER_ERRNO(&p) != HPE_OK || n != buf->len)
        s->err = 1;
    else if (eof)
        http_parser_execute(&p, &rp_settings, NULL, 0);
}

static void resp_set_free(struct resp_set *s)
{
    for (int i = 0; i < MAX_RESP; i++)
        rl_buf_cleanup(&s->r[i].body);
}

static const char *resp_header(const struct resp *r, const char *name)
{
    for (int i = 0; i < r->nh; i++)
        if (strcasecmp(r->hn[i], name) == 0)
            return r->hv[i];
    return NULL;
}

static int body_is(const struct resp *r, const char *s)
{
    return r->body.len == strlen(s) && (r->body.len == 0 || memcmp(r->body.p, s, r->body.len) == 0);
}

/* ---------- the upper layer under test ---------- */

enum mode {
    M_ECHO,         /* at body end: 200, Content-Length, the body echoed */
    M_ECHO_CHUNKED, /* the same with unknown length: chunked, 3 pieces */
    M_MANUAL,       /* the test answers */
    M_EARLY,        /* answer inside on_request */
    M_PAUSE_REQ,    /* pause in on_request */
    M_PAUSE_BODY,   /* pause after every body piece, resume from the loop */
    M_FAIL,         /* on_request fails */
    M_CLOSE_IN_REQ, /* rl_h1conn_close inside on_request */
};

struct srv {
    struct rl_h1conn *c;
    enum mode mode;
    int nreq, body_ends, closed, close_err, close_calls;
    int overlap;       /* on_request while a response was still open */
    int in_call;       /* inside a call we made into rl_h1conn */
    int close_in_call; /* on_close ran inside such a call */
    int responding;
    char method[16], target[256];
    struct rl_h1_head head;
    char hnames[32][64], hvals[32][256];
    size_t nh;
    int64_t content_length;
    int chunked, keep_alive, http_minor;
    struct rl_buf body;
    int paused;
    size_t pieces;
    ev_timer resume_t;
    int body_end_while_paused;
};

static struct srv S;

static const char *srv_header(const char *name)
{
    for (size_t i = 0; i < S.nh; i++)
        if (strcmp(S.hnames[i], name) == 0)
            return S.hvals[i];
    return NULL;
}

static void echo(struct rl_h1conn *c, int chunked)
{
    struct rl_h1_header h[] = {{"content-type", 12, "text/plain", 10},
                               {"x-target", 8, S.target, strlen(S.target)}};
    S.in_call = 1;
    if (!chunked) {
        CU_ASSERT_EQUAL(rl_h1conn_respond(c, 200, h, 2, S.body.p, S.body.len, 1), 0);
    } else {
        size_t third = S.body.len / 3;
        CU_ASSERT_EQUAL(rl_h1conn_respond_head(c, 200, h, 2, -1), 0);
        CU_ASSERT_EQUAL(rl_h1conn_respond_body(c, S.body.p, third), 0);
        CU_ASSERT_EQUAL(rl_h1conn_respond_body(c, S.body.p + third, third), 0);
        CU_ASSERT_EQUAL(rl_h1conn_respond_body(c, S.body.p + 2 * third, S.body.len - 2 * third), 0);
        CU_ASSERT_EQUAL(rl_h1conn_respond_end(c, 1), 0);
    }
    S.in_call = 0;
    S.responding = 0;
}

static int on_request(struct rl_h1conn *c, const struct rl_h1_head *h, void *user)
{
    (void)user;
    if (S.responding)
        S.overlap++;
    S.responding = 1;
    S.nreq++;
    snprintf(S.method, sizeof(S.method), "%s", h->method);
    snprintf(S.target, sizeof(S.target), "%.*s", (int)h->target_len, h->target);
    S.nh = 0;
    for (size_t i = 0; i < h->nheaders && i < 32; i++) {
        snprintf(S.hnames[i], 64, "%.*s", (int)h->headers[i].name_len, h->headers[i].name);
        snprintf(S.hvals[i], 256, "%.*s", (int)h->headers[i].value_len, h->headers[i].value);
        S.nh++;
    }
    S.content_length = h->content_length;
    S.chunked = h->chunked;
    S.keep_alive = h->keep_alive;
    S.http_minor = h->http_minor;
    rl_buf_reset(&S.body);
    switch (S.mode) {
    case M_EARLY: {
        S.in_call = 1;
        CU_ASSERT_EQUAL(rl_h1conn_respond(c, 401, NULL, 0, (const uint8_t *)"no", 2, 1), 0);
        S.in_call = 0;
        S.responding = 0;
        break;
    }
    case M_PAUSE_REQ:
        rl_h1conn_pause(c);
        S.paused = 1;
        break;
    case M_FAIL:
        return AL_ERR_NOMEM;
    case M_CLOSE_IN_REQ:
        S.in_call = 1;
        rl_h1conn_close(c);
        rl_h1conn_close(c); /* twice is harmless */
        S.in_call = 0;
        break;
    default:
        break;
    }
    return 0;
}

static void resume_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    if (S.c && S.paused) {
        S.paused = 0;
        S.in_call = 1;
        rl_h1conn_resume(S.c);
        S.in_call = 0;
    }
}

static void on_body(struct rl_h1conn *c, const uint8_t *d, size_t n, void *user)
{
    (void)user;
    CU_ASSERT_FALSE(S.paused && S.mode == M_PAUSE_BODY);
    rl_buf_append(&S.body, d, n);
    S.pieces++;
    if (S.mode == M_PAUSE_BODY) {
        rl_h1conn_pause(c);
        S.paused = 1;
        ev_timer_set(&S.resume_t, 0., 0.);
        ev_timer_start(loop, &S.resume_t);
    }
}

static void on_body_end(struct rl_h1conn *c, void *user)
{
    (void)user;
    if (S.paused)
        S.body_end_while_paused = 1;
    S.body_ends++;
    if (S.mode == M_ECHO || S.mode == M_PAUSE_BODY || S.mode == M_PAUSE_REQ)
        echo(c, 0);
    else if (S.mode == M_ECHO_CHUNKED)
        echo(c, 1);
}

static int writable_calls;
static void on_writable(struct rl_h1conn *c, void *user)
{
    (void)c;
    (void)user;
    writable_calls++;
}

static void on_close(struct rl_h1conn *c, int err, void *user)
{
    (void)c;
    (void)user;
    S.closed = 1;
    S.close_calls++;
    S.close_err = err;
    if (S.in_call)
        S.close_in_call = 1;
    S.c = NULL;
}

static const struct rl_h1conn_cbs cbs = {
    .on_request = on_request,
    .on_body = on_body,
    .on_body_end = on_body_end,
    .on_writable = on_writable,
    .on_close = on_close,
};

static void srv_reset(enum mode m)
{
    rl_buf_cleanup(&S.body);
    ev_timer_stop(loop, &S.resume_t);
    memset(&S, 0, sizeof(S));
    S.mode = m;
    rl_buf_init(&S.body, 0);
    ev_timer_init(&S.resume_t, resume_cb, 0., 0.);
    writable_calls = 0;
}

/* A connection over a socketpair: the server end goes to rl_h1conn. */
static void open_pair(struct client *cl, enum mode m, const struct rl_h1_limits *lim)
{
    int sv[2];

    srv_reset(m);
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    CU_ASSERT_FATAL(rl_h1conn_new(loop, sv[0], NULL, lim, &cbs, NULL, &S.c) == 0);
    client_start(cl, sv[1], NULL);
}

static int srv_closed(void *arg)
{
    (void)arg;
    return S.closed;
}

/* Ends the test's connection and runs the loop until it is freed. */
static void finish(struct client *cl)
{
    if (S.c) {
        rl_h1conn_close(S.c);
        CU_ASSERT(run_until(srv_closed, NULL, FAILSAFE));
    }
    client_close(cl);
    settle(0.01); /* the zero timer that frees the connection */
    CU_ASSERT_EQUAL(S.close_calls, 1);
    CU_ASSERT_EQUAL(S.close_in_call, 0);
    ev_timer_stop(loop, &S.resume_t);
}

struct nresp_arg {
    struct client *cl;
    int n;
    const char *head_for;
};

static int have_responses(void *arg)
{
    struct nresp_arg *a = arg;
    struct resp_set s;
    parse_responses(&a->cl->in, 0, a->head_for, &s);
    int ok = !s.err && s.n >= a->n;
    resp_set_free(&s);
    return ok;
}

static int wait_responses(struct client *cl, int n, const char *head_for)
{
    struct nresp_arg a = {cl, n, head_for};
    return run_until(have_responses, &a, FAILSAFE);
}

/* ---------- tests: requests and responses ---------- */

static void test_get_and_keepalive(void)
{
    struct client cl;
    struct resp_set rs;

    open_pair(&cl, M_ECHO, NULL);
    client_sends(&cl, "GET /mcp/corp/crm?x=1 HTTP/1.1\r\nHost: relay\r\nX-Mixed-Case:  v a \t\r\n"
                      "Accept: */*\r\n\r\n");
    CU_ASSERT_FATAL(wait_responses(&cl, 1, NULL));
    CU_ASSERT_STRING_EQUAL(S.method, "GET");
    CU_ASSERT_STRING_EQUAL(S.target, "/mcp/corp/crm?x=1");
    CU_ASSERT_EQUAL(S.nh, 3);
    CU_ASSERT_STRING_EQUAL(S.hnames[1], "x-mixed-case"); /* names lowercased */
    CU_ASSERT_STRING_EQUAL(S.hvals[1], "v a");           /* OWS trimmed */
    CU_ASSERT(srv_header("host") && strcmp(srv_header("host"), "relay") == 0);
    CU_ASSERT_EQUAL(S.content_length, -1);
    CU_ASSERT_EQUAL(S.keep_alive, 1);
    CU_ASSERT_EQUAL(S.http_minor, 1);
    CU_ASSERT_EQUAL(S.body_ends, 1);
    parse_responses(&cl.in, 0, NULL, &rs);
    CU_ASSERT_EQUAL(rs.r[0].status, 200);
    CU_ASSERT_PTR_NOT_NULL(resp_header(&rs.r[0], "date"));
    CU_ASSERT_STRING_EQUAL(resp_header(&rs.r[0], "content-length"), "0");
    CU_ASSERT_PTR_NULL(resp_header(&rs.r[0], "connection"));
    CU_ASSERT_EQUAL(rs.r[0].keep_alive, 1);
    resp_set_free(&rs);

    /* a second request on the same connection */
    client_sends(&cl, "POST /two HTTP/1.1\r\nHost: relay\r\nContent-Length: 5\r\n\r\nhello");
    CU_ASSERT_FATAL(wait_responses(&cl, 2, NULL));
    parse_responses(&cl.in, 0, NULL, &rs);
    CU_ASSERT_EQUAL(rs.r[1].status, 200);
    CU_ASSERT(body_is(&rs.r[1], "hello"));
    CU_ASSERT_STRING_EQUAL(resp_header(&rs.r[1], "x-target"), "/two");
    resp_set_free(&rs);
    CU_ASSERT_EQUAL(S.nreq, 2);
    CU_ASSERT_EQUAL(S.content_length, 5);
    CU_ASSERT_EQUAL(S.closed, 0);
    CU_ASSERT_EQUAL(S.overlap, 0);
    finish(&cl);
}

static void test_post_chunked_request(void)
{
    struct client cl;
    struct resp_set rs;

    open_pair(&cl, M_ECHO, NULL);
    client_sends(&cl, "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    settle(0.02);
    CU_ASSERT_EQUAL(S.nreq, 1);
    CU_ASSERT_EQUAL(S.chunked, 1);
    CU_ASSERT_EQUAL(S.content_length, -1);
    client_sends(&cl, "lo\r\n6;ext=\"a b\"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    CU_ASSERT_FATAL(wait_responses(&cl, 1, NULL));
    parse_responses(&cl.in, 0, NULL, &rs);
    CU_ASSERT_EQUAL(rs.r[0].status, 200);
    CU_ASSERT(body_is(&rs.r[0], "hello world"));
    resp_set_free(&rs);
    CU_ASSERT_EQUAL(S.body_ends, 1);
    finish(&cl);
}

static void test_pipelined(void)
{
    struct client cl;
    struct resp_set rs;
    struct rl_h1_header h = {"x-n", 3, "1", 1};

    open_pair(&cl, M_MANUAL, NULL);
    client_sends(&cl, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                      "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                      "GET /3 HTTP/1.1\r\nHost: a\r\n\r\n");
    settle(0.05);
    CU_ASSERT_EQUAL(S.nreq, 1); /* one at a time */
    CU_ASSERT_STRING_EQUAL(S.target, "/1");
    for (int i = 1; i <= 3; i++) {
        CU_ASSERT_FATAL(run_until(flag_set, &S.body_ends, FAILSAFE));
        CU_ASSERT_EQUAL(S.nreq, i);
        CU_ASSERT_EQUAL(S.body_ends, 1);
        S.body_ends = 0;
        S.in_call = 1;
        CU_ASSERT_EQUAL(rl_h1conn_respond(S.c, 200, &h, 1, S.body.p, S.body.len, 1), 0);
        S.in_call = 0;
        S.responding = 0;
        settle(0.02);
    }
    CU_ASSERT_FATAL(wait_responses(&cl, 3, NULL));
    parse_responses(&cl.in, 0, NULL, &rs);
    CU_ASSERT_EQUAL(rs.n, 3);
    CU_ASSERT(body_is(&rs.r[0], ""));
    CU_ASSERT(body_is(&rs.r[1], "abc"));
    CU_ASSERT(body_is(&rs.r[2], ""));
    resp_set_free(&rs);
    CU_ASSERT_EQUAL(S.overlap, 0);
    CU_ASSERT_STRING_EQUAL(S.target, "/3");
    finish(&cl);
}

static void test_response_chunked_and_length(void)
{
    struct client cl;
    struct resp_set rs;

    open_pair(&cl, M_ECHO_CHUNKED, NULL);
    client_sends(&cl, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nabcdefghijkl");
    CU_ASSERT_FATAL(wait_responses(&cl, 1, NULL));
    parse_responses(&cl.in, 0, NULL, &rs);
    CU_ASSERT_EQUAL(rs.r[0].chunked, 1);
    CU_ASSERT_STRING_EQUAL(resp_header(&rs.r[0], "transfer-encoding"), "chunked");
    CU_ASSERT_PTR_NULL(resp_header(&rs.r[0], "content-length"));
    CU_ASSERT(body_is(&rs.r[0], "abcdefghijkl"));
    resp_set_free(&rs);
    CU_ASSERT(memmem(cl.in.p, cl.in.len, "\r\n4\r\nabcd\r\n4\r\nefgh\r\n4\r\nijkl\r\n0\r\n\r\n",
                     strlen("\r\n4\r\nabcd\r\n4\r\nefgh\r\n4\r\nijkl\r\n0\r\n\r\n")) != NULL);

    /* same connection, manual: a body longer than announced is refused,
     * a shorter one closes the connection */
    S.mode = M_MANUAL;
    S.body_ends = 0;
    client_sends(&cl, "GET /y HTTP/1.1\r\nHost: a\r\n\r\n");
    CU_ASSERT_FATAL(run_until(flag_set, &S.body_ends, FAILSAFE));
    CU_ASSERT_EQUAL(rl_h1conn_respond_body(S.c, (const uint8_t *)"x", 1), AL_ERR_STATE);
    CU_ASSERT_EQUAL(rl_h1conn_respond_end(S.c, 1), AL_ERR_STATE);
    CU_ASSERT_EQUAL(rl_h1conn_respond_head(S.c, 200, NULL, 0, 4), 0);
    CU_ASSERT_EQUAL(rl_h1conn_respond_head(S.c, 200, NULL, 0, 4), AL_ERR_STATE);
    CU_ASSERT_EQUAL(rl_h1conn_respond_body(S.c, (const uint8_t *)"abcde", 5), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_h1conn_respond_body(S.c, (const uint8_t *)"ab", 2), 0);
    CU_ASSERT_EQUAL(rl_h1conn_respond_end(S.c, 1), 0);
    CU_ASSERT(run_until(client_eof, &cl, FAILSAFE)); /* 2 of 4 bytes: closed */
    CU_ASSERT_EQUAL(S.close_err, 0);
    finish(&cl);
}

static void test_respond_head_checks(void)
{
    struct client cl;
    struct rl_h1_header bad[] = {
        {"content-length", 14, "1", 1}, {"Transfer-Encoding", 17, "x", 1},
        {"connection", 10, "close", 5}, {"Date", 4, "x", 1},
        {"bad name", 8, "v", 1},        {"x-ok", 4, "a\r\nb", 4},
        {"keep-alive", 10, "1", 1},     {"x-nul", 5, "a\0b", 3},
    };
    struct rl_h1_header good = {"x-fine", 6, "v\t1 \x80", 5};
    struct resp_set rs;

    open_pair(&cl, M_MANUAL, NULL);
    client_sends(&cl, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CU_ASSERT_FATAL(run_until(flag_set, &S.body_ends, FAILSAFE));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CU_ASSERT_EQUAL(rl_h1conn_respond_head(S.c, 200, &bad[i], 1, 0), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_h1conn_respond_head(S.c, 101, NULL, 0, 0), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_h1conn_respond_head(S.c, 204, &good, 1, -1), 0);
    CU_ASSERT_EQUAL(rl_h1conn_respond_body(S.c, (const uint8_t *)"ignored", 7), 0);
    CU_ASSERT_EQUAL(rl_h1conn_respond_end(S.c, 1), 0);
    CU_ASSERT_FATAL(wait_responses(&cl, 1, NULL));
    parse_responses(&cl.in, 0, NULL, &rs);
    CU_ASSERT_EQUAL(rs.r[0].status, 204);
    CU_ASSERT_PTR_NULL(resp_header(&rs.r[0], "content-length"));
    CU_ASSERT_PTR_NULL(resp_header(&rs.r[0], "transfer-encoding"));
    CU_ASSERT_STRING_EQUAL(resp_header(&rs.r[0], "x-fine"), "v\t1 \x80");
    resp_set_free(&rs);
    CU_ASSERT(memmem(cl.in.p, cl.in.len, "ignored", 7) == NULL);

    /* HEAD: Content-Length announced, no body sent */
    S.body_ends = 0;
    client_sends(&cl, "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n");
    CU_ASSERT_FATAL(run_until(flag_set, &S.body_ends, FAILSAFE));
    CU_ASSERT_EQUAL(rl_h1conn_respond(S.c, 200, NULL, 0, (const uint8_t *)"12345", 5, 1), 0);
    CU_ASSERT_FATAL(wait_responses(&cl, 2, "-H"));
    parse_responses(&cl.in, 0, "-H", &rs);
    CU_ASSERT_EQUAL(rs.n, 2);
    CU_ASSERT_EQUAL(rs.r[1].status, 200);
    CU_ASSERT_STRING_EQUAL(resp_header(&rs.r[1], "content-length"), "5");
    CU_ASSERT(memmem(cl.in.p, cl.in.len, "12345", 5) == NULL);
    resp_set_free(&rs);
    CU_ASSERT_EQUAL(S.closed, 0);
    finish(&cl);
}

static void test_http10(void)
{
    struct client cl;
    struct resp_set rs;

    /* unknown length to an HTTP/1.0 client: delimited by the close */
    open_pair(&cl, M_ECHO_CHUNKED, NULL);
    client_sends(&cl, "POST /old HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc");
    CU_ASSERT_FATAL(run_until(client_eof, &cl, FAILSAFE));
    CU_ASSERT_EQUAL(S.http_minor, 0);
    CU_ASSERT_EQUAL(S.keep_alive, 0);
    parse_responses(&cl.in, 1, NULL, &rs);
    CU_ASSERT_EQUAL(rs.err, 0);
    CU_ASSERT_EQUAL(rs.r[0].status, 200);
    CU_ASSERT_EQUAL(rs.r[0].chunked, 0);
    CU_ASSERT_PTR_NULL(resp_header(&rs.r[0], "content-length"));
    CU_ASSERT_STRING_EQUAL(resp_header(&rs.r[0], "connection"), "close");
    CU_ASSERT(body_is(&rs.r[0], "abc"));
    resp_set_free(&rs);
    CU_ASSERT(run_until(srv_closed, NULL, FAILSAFE));
    CU_ASSERT_EQUAL(S.close_err, 0);
    finish(&cl);

    /* keep-alive asked for, length known: kept, and said so */
    open_pair(&cl, M_ECHO, NULL);
    client_sends(&cl, "GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CU_ASSERT_FATAL(wait_responses(&cl, 1, NULL));
    parse_responses(&cl.in, 0, NULL, &rs);
    CU_ASSERT_STRING_EQUAL(resp_header(&rs.r[0], "connection"), "keep-alive");
    CU_ASSERT_STRING_EQUAL(resp_header(&rs.r[0], "content-length"), "0");
    resp_set_free(&rs);
    client_sends(&cl, "GET /again HTTP/1.0\r\n\r\n");
    CU_ASSERT_FATAL(run_until(client_eof, &cl, FAILSAFE));
    CU_ASSERT_EQUAL(S.nreq, 2);
    finish(&cl);
}

static void test_expect_continue(void)
{
    struct client cl;
    struct resp_set rs;
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

    open_pair(&cl, M_ECHO, NULL);
    client_sends(&cl, "POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                      "Content-Length: 4\r\n\r\n");
    CU_ASSERT_FATAL(run_until(flag_set, &cl.in.len, FAILSAFE));
    CU_ASSERT_EQUAL(cl.in.len, sizeof(cont) - 1);
    CU_ASSERT(memcmp(cl.in.p, cont, sizeof(cont) - 1) == 0);
    client_sends(&cl, "body");
    CU_ASSERT_FATAL(wait_responses(&cl, 1, NULL));
    parse_responses(&cl.in, 0, NULL, &rs);
    CU_ASSERT(body_is(&rs.r[0], "body"));
    resp_set_free(&rs);
    finish(&cl);
}

static void test_early_response_drops_body(void)
{
    struct client cl;
    struct resp_set rs;

    /* answered in on_request: the announced body is read and dropped, the
     * connection stays usable */
    open_pair(&cl, M_EARLY, NULL);
    client_sends(&cl, "POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nsec");
    CU_ASSERT_FATAL(wait_responses(&cl, 1, NULL));
    client_sends(&cl, "ret");
    client_sends(&cl, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    CU_ASSERT_FATAL(wait_responses(&cl, 2, NULL));
    parse_responses(&cl.in, 0, NULL, &rs);
    CU_ASSERT_EQUAL(rs.r[0].status, 401);
    CU_ASSERT_EQUAL(rs.r[1].status, 401);
    resp_set_free(&rs);
    CU_ASSERT_EQUAL(S.nreq, 2);
    CU_ASSERT_EQUAL(S.body.len, 0); /* nothing delivered after the response ended */
    CU_ASSERT_EQUAL(S.closed, 0);
    CU_ASSERT_STRING_EQUAL(S.target, "/next");
    finish(&cl);
}

/* ---------- tests: errors ---------- */

struct bad_case {
    const char *name;
    const char *req;
    int status;
    const char *reason;
    int nreq; /* on_request calls expected (the whole request arrives at once:
               * a broken body is refused before on_request) */
    size_t max_head, max_headers, max_body;
};

static const struct bad_case bad_cases[] = {
    {"bare LF", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400, "INVALID_FIELD", 0},
    {"bare LF in a header", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400, "INVALID_FIELD", 0},
    {"bare CR", "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400, "INVALID_FIELD", 0},
    {"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n  z\r\n\r\n", 400, "INVALID_FIELD", 0},
    {"CL and TE",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     400, "INVALID_FIELD", 0},
    {"two CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
     400, "INVALID_FIELD", 0},
    {"CL not a number", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400,
     "INVALID_FIELD", 0},
    {"bad chunk size",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "zz\r\nhello\r\n0\r\n\r\n",
     400, "INVALID_FIELD", 0},
    {"chunk overrun",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "3\r\nhello\r\n0\r\n\r\n",
     400, "INVALID_FIELD", 0},
    {"chunk size bare LF",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "3\nabc\r\n0\r\n\r\n",
     400, "INVALID_FIELD", 0},
    {"header name chars", "GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n", 400, "INVALID_FIELD", 0},
    {"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "INVALID_FIELD", 0},
    {"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\001b\r\n\r\n", 400, "INVALID_FIELD", 0},
    {"absolute-form target", "GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "INVALID_FIELD",
     0},
    {"asterisk target", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 400, "INVALID_FIELD", 0},
    {"bad target char", "GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "INVALID_FIELD", 0},
    {"bad percent", "GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400, "INVALID_FIELD", 0},
    {"missing Host", "GET / HTTP/1.1\r\n\r\n", 400, "INVALID_FIELD", 0},
    {"two Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "INVALID_FIELD", 0},
    {"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
     "INVALID_FIELD", 0},
    {"unknown TE", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
     "INVALID_FIELD", 0},
    {"TE list", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501,
     "INVALID_FIELD", 0},
    {"unknown method", "BREW / HTTP/1.1\r\nHost: a\r\n\r\n", 501, "INVALID_FIELD", 0},
    {"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, "INVALID_FIELD", 0},
    {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "INVALID_FIELD", 0},
    {"HTTP/0.9 line", "GET /\r\n\r\n", 400, "INVALID_FIELD", 0},
    {"bad version", "GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400, "INVALID_FIELD", 0},
    {"Expect other", "POST / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\nContent-Length: 1\r\n\r\n",
     417, "INVALID_FIELD", 0},
    {"head too large",
     "GET / HTTP/1.1\r\nHost: a\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
     431, "TOO_LARGE", 0, 64},
    {"too many headers", "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431,
     "TOO_LARGE", 0, 0, 3},
    {"body too large (length)", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", 413,
     "TOO_LARGE", 0, 0, 0, 10},
    {"body too large (chunked)",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "6\r\nabcdef\r\n5\r\n",
     413, "TOO_LARGE", 0, 0, 0, 10},
    {"trailer too large",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "0\r\nX-Trailer: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaa\r\n\r\n",
     431, "TOO_LARGE", 0, 80},
};

static void check_error_response(const struct bad_case *bc, struct client *cl)
{
    struct resp_set rs;
    json_error_t jerr;

    parse_responses(&cl->in, 1, NULL, &rs);
    CU_ASSERT_EQUAL(rs.err, 0);
    CU_ASSERT_EQUAL(rs.n, 1);
    if (rs.r[0].status != bc->status)
        fprintf(stderr, "\n  case \"%s\": status %d, want %d\n", bc->name, rs.r[0].status,
                bc->status);
    CU_ASSERT_EQUAL(rs.r[0].status, bc->status);
    const char *ae = resp_header(&rs.r[0], "airlock-error");
    CU_ASSERT(ae && strcmp(ae, bc->reason) == 0);
    const char *ct = resp_header(&rs.r[0], "content-type");
    CU_ASSERT(ct && strcmp(ct, "application/json") == 0);
    const char *conn = resp_header(&rs.r[0], "connection");
    CU_ASSERT(conn && strcmp(conn, "close") == 0);
    json_t *j =
        json_loadb((const char *)rs.r[0].body.p, rs.r[0].body.len, JSON_REJECT_DUPLICATES, &jerr);
    CU_ASSERT_PTR_NOT_NULL(j);
    if (j) {
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "jsonrpc")), "2.0");
        CU_ASSERT(json_is_null(json_object_get(j, "id")));
        json_t *e = json_object_get(j, "error");
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(e, "code")), -32600);
        CU_ASSERT(json_string_length(json_object_get(e, "message")) > 0);
        CU_ASSERT_STRING_EQUAL(
            json_string_value(json_object_get(json_object_get(e, "data"), "airlock_error")),
            bc->reason);
        json_decref(j);
    }
    resp_set_free(&rs);
}

static void test_errors(void)
{
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *bc = &bad_cases[i];
        struct rl_h1_limits lim = {
            .max_head = bc->max_head, .max_headers = bc->max_headers, .max_body = bc->max_body};
        struct client cl;

        open_pair(&cl, M_MANUAL, &lim);
        client_sends(&cl, bc->req);
        CU_ASSERT(run_until(client_eof, &cl, FAILSAFE));
        check_error_response(bc, &cl);
        if (S.nreq != bc->nreq)
            fprintf(stderr, "\n  case \"%s\": %d requests delivered\n", bc->name, S.nreq);
        CU_ASSERT_EQUAL(S.nreq, bc->nreq);
        CU_ASSERT(run_until(srv_closed, NULL, FAILSAFE));
        CU_ASSERT(S.close_err == AL_ERR_PROTO || S.close_err == AL_ERR_TOOBIG);
        finish(&cl);
    }
}

static void test_body_error_after_request(void)
{
    struct client cl;
    struct resp_set rs;

    /* the framing error arrives after on_request: 400, and the upper layer
     * learns through on_close that its request is gone */
    open_pair(&cl, M_MANUAL, NULL);
    client_sends(&cl, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab");
    CU_ASSERT_FATAL(run_until(flag_set, &S.nreq, FAILSAFE));
    client_sends(&cl, "c\r\nzz\r\n");
    CU_ASSERT(run_until(client_eof, &cl, FAILSAFE));
    /* what came before the bad byte in its read may or may not be passed on */
    CU_ASSERT(S.body.len >= 2 && S.body.len <= 3 && memcmp(S.body.p, "abc", S.body.len) == 0);
    parse_responses(&cl.in, 1, NULL, &rs);
    CU_ASSERT_EQUAL(rs.r[0].status, 400);
    resp_set_free(&rs);
    CU_ASSERT(run_until(srv_closed, NULL, FAILSAFE));
    CU_ASSERT_EQUAL(S.close_err, AL_ERR_PROTO);
    CU_ASSERT_EQUAL(S.body_ends, 0);
    finish(&cl);

    /* the same once the upper layer has started its answer: only a close
     * is left to say it */
    open_pair(&cl, M_MANUAL, NULL);
    client_sends(&cl, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nX: y\r\n\r\n");
    CU_ASSERT_FATAL(run_until(flag_set, &S.nreq, FAILSAFE));
    CU_ASSERT_EQUAL(rl_h1conn_respond(S.c, 401, NULL, 0, (const uint8_t *)"no", 2, 1), 0);
    client_sends(&cl, "xGET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n");
    CU_ASSERT(run_until(client_eof, &cl, FAILSAFE));
    parse_responses(&cl.in, 1, NULL, &rs);
    CU_ASSERT_EQUAL(rs.n, 2);
    CU_ASSERT_EQUAL(rs.r[0].status, 401);
    CU_ASSERT_EQUAL(rs.r[1].status, 400); /* the next request, refused */
    resp_set_free(&rs);
    finish(&cl);
}

static void test_split_everywhere(void)
{
    /* a valid pipelined pair fed one byte at a time parses the same */
    static const char req[] = "\r\nPOST /a%20b?q=1 HTTP/1.1\r\nHost: h\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n"
                              "PUT /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nzz";
    struct client cl;
    struct resp_set rs;

    open_pair(&cl, M_ECHO, NULL);
    for (size_t i = 0; i < sizeof(req) - 1; i++) {
        client_send(&cl, req + i, 1);
        ev_run(loop, EVRUN_NOWAIT);
    }
    CU_ASSERT_FATAL(wait_responses(&cl, 2, NULL));
    parse_responses(&cl.in, 0, NULL, &rs);
    CU_ASSERT(body_is(&rs.r[0], "abc"));
    CU_ASSERT_STRING_EQUAL(resp_header(&rs.r[0], "x-target"), "/a%20b?q=1");
    CU_ASSERT(body_is(&rs.r[1], "zz"));
    resp_set_free(&rs);
    finish(&cl);
}

static void test_on_request_fails(void)
{
    struct client cl;
    struct resp_set rs;

    open_pair(&cl, M_FAIL, NULL);
    client_sends(&cl, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CU_ASSERT(run_until(client_eof, &cl, FAILSAFE));
    parse_responses(&cl.in, 1, NULL, &rs);
    CU_ASSERT_EQUAL(rs.r[0].status, 500);
    CU_ASSERT_STRING_EQUAL(resp_header(&rs.r[0], "airlock-error"), "INTERNAL");
    resp_set_free(&rs);
    CU_ASSERT(run_until(srv_closed, NULL, FAILSAFE));
    CU_ASSERT_EQUAL(S.close_err, AL_ERR_NOMEM);
    finish(&cl);

    open_pair(&cl, M_CLOSE_IN_REQ, NULL);
    client_sends(&cl, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CU_ASSERT(run_until(client_eof, &cl, FAILSAFE));
    CU_ASSERT_EQUAL(cl.in.len, 0);
    CU_ASSERT_EQUAL(S.body_ends, 0);
    finish(&cl);
}

/* ---------- tests: timeouts ---------- */

struct trickle {
    struct client *cl;
    const char *data;
    size_t len, sent;
    ev_timer t;
};

static void trickle_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    struct trickle *tr = w->data;
    (void)revents;
    if (tr->cl->eof || tr->sent >= tr->len) {
        ev_timer_stop(l, w);
        return;
    }
    if (send(tr->cl->fd, tr->data + tr->sent, 1, MSG_NOSIGNAL) == 1)
        tr->sent++;
}

static void test_slowloris(void)
{
    /* one byte every 10 ms of a 4 KiB head would take 40 s; the head
     * deadline is 0.3 s from the first byte */
    struct rl_h1_limits lim = {.header_timeout_s = 0.3};
    struct client cl;
    struct trickle tr = {0};
    char head[4096];

    memset(head, 'a', sizeof(head));
    memcpy(head, "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ", 33);
    open_pair(&cl, M_ECHO, &lim);
    tr.cl = &cl;
    tr.data = head;
    tr.len = sizeof(head);
    ev_timer_init(&tr.t, trickle_cb, 0.01, 0.01);
    tr.t.data = &tr;
    ev_timer_start(loop, &tr.t);
    CU_ASSERT(run_until(client_eof, &cl, FAILSAFE));
    ev_timer_stop(loop, &tr.t);
    CU_ASSERT(tr.sent < tr.len);
    CU_ASSERT_EQUAL(S.nreq, 0);
    CU_ASSERT_EQUAL(cl.in.len, 0);
    CU_ASSERT(run_until(srv_closed, NULL, FAILSAFE));
    CU_ASSERT_EQUAL(S.close_err, AL_ERR_TIMEOUT);
    finish(&cl);

    /* a connection that never sends a byte is cut too */
    open_pair(&cl, M_ECHO, &lim);
    CU_ASSERT(run_until(client_eof, &cl, FAILSAFE));
    CU_ASSERT_EQUAL(S.close_err, AL_ERR_TIMEOUT);
    finish(&cl);
}

static void test_idle_and_body_timeouts(void)
{
    struct rl_h1_limits lim = {.idle_timeout_s = 0.2, .body_timeout_s = 0.2};
    struct client cl;
    struct resp_set rs;

    open_pair(&cl, M_ECHO, &lim);
    client_sends(&cl, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CU_ASSERT(run_until(client_eof, &cl, FAILSAFE)); /* idle: closed after the answer */
    parse_responses(&cl.in, 1, NULL, &rs);
    CU_ASSERT_EQUAL(rs.n, 1);
    CU_ASSERT_EQUAL(rs.r[0].status, 200);
    resp_set_free(&rs);
    CU_ASSERT(run_until(srv_closed, NULL, FAILSAFE));
    CU_ASSERT_EQUAL(S.close_err, 0);
    finish(&cl);

    open_pair(&cl, M_ECHO, &lim);
    client_sends(&cl, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    CU_ASSERT(run_until(client_eof, &cl, FAILSAFE));
    parse_responses(&cl.in, 1, NULL, &rs);
    CU_ASSERT_EQUAL(rs.r[0].status, 408);
    CU_ASSERT_STRING_EQUAL(resp_header(&rs.r[0], "airlock-error"), "INVALID_FIELD");
    resp_set_free(&rs);
    CU_ASSERT_EQUAL(S.nreq, 1);
    CU_ASSERT_EQUAL(S.body_ends, 0);
    CU_ASSERT(run_until(srv_closed, NULL, FAILSAFE));
    CU_ASSERT_EQUAL(S.close_err, AL_ERR_TIMEOUT);
    finish(&cl);

    /* paused: the body clock stops (the upper layer holds the request) */
    open_pair(&cl, M_PAUSE_REQ, &lim);
    client_sends(&cl, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n");
    settle(0.5);
    CU_ASSERT_EQUAL(S.closed, 0);
    client_sends(&cl, "xyz");
    resume_cb(loop, NULL, 0);
    CU_ASSERT_FATAL(wait_responses(&cl, 1, NULL));
    CU_ASSERT_EQUAL(S.body.len, 3);
    finish(&cl);
}

/* ---------- tests: flow control ---------- */

static void test_pause_resume_body(void)
{
    struct client cl;
    struct resp_set rs;

    /* paused in on_request: nothing of the body arrives until resume */
    open_pair(&cl, M_PAUSE_REQ, NULL);
    client_sends(&cl, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789");
    settle(0.05);
    CU_ASSERT_EQUAL(S.nreq, 1);
    CU_ASSERT_EQUAL(S.body.len, 0);
    CU_ASSERT_EQUAL(S.body_ends, 0);
    resume_cb(loop, NULL, 0);
    CU_ASSERT_FATAL(wait_responses(&cl, 1, NULL));
    parse_responses(&cl.in, 0, NULL, &rs);
    CU_ASSERT(body_is(&rs.r[0], "0123456789"));
    resp_set_free(&rs);
    finish(&cl);

    /* paused after every piece (including the very last byte of a sized
     * body), resumed from the loop: order kept, body_end only once resumed */
    open_pair(&cl, M_PAUSE_BODY, NULL);
    client_sends(&cl, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nab");
    settle(0.02);
    client_sends(&cl, "cd");
    settle(0.02);
    client_sends(&cl, "ef");
    CU_ASSERT_FATAL(wait_responses(&cl, 1, NULL));
    CU_ASSERT(S.pieces >= 3);
    CU_ASSERT_EQUAL(S.body_end_while_paused, 0);
    parse_responses(&cl.in, 0, NULL, &rs);
    CU_ASSERT(body_is(&rs.r[0], "abcdef"));
    resp_set_free(&rs);

    /* chunked, all in one write, paused at each piece */
    S.pieces = 0;
    client_sends(&cl, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "2\r\ngh\r\n3\r\nijk\r\n1\r\nl\r\n0\r\n\r\n"
                      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nm");
    CU_ASSERT_FATAL(wait_responses(&cl, 3, NULL));
    parse_responses(&cl.in, 0, NULL, &rs);
    CU_ASSERT(body_is(&rs.r[1], "ghijkl"));
    CU_ASSERT(body_is(&rs.r[2], "m"));
    resp_set_free(&rs);
    CU_ASSERT_EQUAL(S.pieces, 4);
    CU_ASSERT_EQUAL(S.body_end_while_paused, 0);
    finish(&cl);
}

struct writer {
    struct rl_h1conn *c;
    size_t total, sent;
    int toobig_seen, ended;
    size_t max_pending_seen;
};

static void fill_pattern(uint8_t *b, size_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)((off + i) * 7 + ((off + i) >> 11));
}

/* Sends as much as the queue takes; returns when TOOBIG or done. */
static void writer_push(struct writer *w)
{
    uint8_t piece[65536];

    while (w->sent < w->total) {
        size_t n = w->total - w->sent < sizeof(piece) ? w->total - w->sent : sizeof(piece);
        fill_pattern(piece, w->sent, n);
        int rc = rl_h1conn_respond_body(w->c, piece, n);
        if (rc == AL_ERR_TOOBIG) {
            w->toobig_seen = 1;
            rl_h1conn_want_writable(w->c, 64 * 1024);
            return;
        }
        CU_ASSERT_EQUAL_FATAL(rc, 0);
        w->sent += n;
        if (rl_h1conn_pending(w->c) > w->max_pending_seen)
            w->max_pending_seen = rl_h1conn_pending(w->c);
    }
    if (!w->ended) {
        w->ended = 1;
        CU_ASSERT_EQUAL(rl_h1conn_respond_end(w->c, 1), 0);
    }
}

static struct writer *cur_writer;

static void writer_on_writable(struct rl_h1conn *c, void *user)
{
    (void)c;
    (void)user;
    writable_calls++;
    if (cur_writer)
        writer_push(cur_writer);
}

static int writer_done(void *arg)
{
    struct client *cl = arg;
    struct resp_set rs;
    parse_responses(&cl->in, 0, NULL, &rs);
    int ok = rs.n == 1 && rs.r[0].complete;
    resp_set_free(&rs);
    return ok;
}

static void check_pattern_body(struct client *cl, size_t total)
{
    struct resp_set rs;
    parse_responses(&cl->in, 0, NULL, &rs);
    CU_ASSERT_EQUAL(rs.err, 0);
    CU_ASSERT_EQUAL(rs.r[0].body.len, total);
    if (rs.r[0].body.len == total) {
        uint8_t *want = malloc(total);
        fill_pattern(want, 0, total);
        CU_ASSERT(memcmp(rs.r[0].body.p, want, total) == 0);
        free(want);
    }
    resp_set_free(&rs);
}

/* Big chunked response to a client that reads late: TOOBIG, on_writable. */
static void run_backpressure(struct client *cl, struct rl_h1conn *c, size_t total)
{
    struct writer w = {.c = c, .total = total};

    cur_writer = &w;
    CU_ASSERT_EQUAL(rl_h1conn_respond_head(c, 200, NULL, 0, -1), 0);
    client_pause(cl, 1);
    writer_push(&w);
    CU_ASSERT(w.toobig_seen);
    CU_ASSERT(rl_h1conn_pending(c) > 0);
    settle(0.05);
    CU_ASSERT_EQUAL(writable_calls, 0); /* the client reads nothing yet */
    client_pause(cl, 0);
    CU_ASSERT(run_until(writer_done, cl, FAILSAFE));
    CU_ASSERT(writable_calls > 0);
    /* max_pending 256 KiB plus one 64 KiB piece at most */
    CU_ASSERT(w.max_pending_seen <= 256 * 1024 + 65536 + 64);
    check_pattern_body(cl, total);
    cur_writer = NULL;
}

static void test_backpressure(void)
{
    struct rl_h1_limits lim = {.max_pending = 256 * 1024};
    struct rl_h1conn_cbs wcbs = cbs;
    struct client cl;
    int sv[2];

    wcbs.on_writable = writer_on_writable;
    srv_reset(M_MANUAL);
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    CU_ASSERT_FATAL(rl_h1conn_new(loop, sv[0], NULL, &lim, &wcbs, NULL, &S.c) == 0);
    client_start(&cl, sv[1], NULL);
    client_sends(&cl, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
    CU_ASSERT_FATAL(run_until(flag_set, &S.body_ends, FAILSAFE));
    run_backpressure(&cl, S.c, 4 * 1024 * 1024 + 123);
    CU_ASSERT_EQUAL(S.closed, 0);
    finish(&cl);
}

static void test_disconnects(void)
{
    struct client cl;

    /* peer gone mid-body: the request is cancelled */
    open_pair(&cl, M_ECHO, NULL);
    client_sends(&cl, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab");
    CU_ASSERT(run_until(flag_set, &S.nreq, FAILSAFE));
    shutdown(cl.fd, SHUT_WR);
    CU_ASSERT(run_until(srv_closed, NULL, FAILSAFE));
    CU_ASSERT_EQUAL(S.close_err, AL_ERR_CLOSED);
    finish(&cl);

    /* peer gone while the answer is awaited (an SSE stream, say) */
    open_pair(&cl, M_MANUAL, NULL);
    client_sends(&cl, "GET /sse HTTP/1.1\r\nHost: a\r\n\r\n");
    CU_ASSERT(run_until(flag_set, &S.body_ends, FAILSAFE));
    CU_ASSERT_EQUAL(rl_h1conn_respond_head(S.c, 200, NULL, 0, -1), 0);
    close(cl.fd);
    cl.fd = -1;
    CU_ASSERT(run_until(srv_closed, NULL, FAILSAFE));
    CU_ASSERT(S.close_err != 0);
    finish(&cl);

    /* peer closes between requests: orderly */
    open_pair(&cl, M_ECHO, NULL);
    client_sends(&cl, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CU_ASSERT(wait_responses(&cl, 1, NULL));
    shutdown(cl.fd, SHUT_WR);
    CU_ASSERT(run_until(srv_closed, NULL, FAILSAFE));
    CU_ASSERT_EQUAL(S.close_err, 0);
    finish(&cl);
}

static void test_shutdown(void)
{
    struct client cl;
    struct resp_set rs;

    /* idle: closed at once, orderly */
    open_pair(&cl, M_ECHO, NULL);
    rl_h1conn_shutdown(S.c);
    CU_ASSERT(run_until(client_eof, &cl, FAILSAFE));
    CU_ASSERT(run_until(srv_closed, NULL, FAILSAFE));
    CU_ASSERT_EQUAL(S.close_err, 0);
    finish(&cl);

    /* in a request: answered with Connection: close, then closed */
    open_pair(&cl, M_MANUAL, NULL);
    client_sends(&cl, "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /never HTTP/1.1\r\nHost: a\r\n\r\n");
    CU_ASSERT(run_until(flag_set, &S.body_ends, FAILSAFE));
    rl_h1conn_shutdown(S.c);
    CU_ASSERT_EQUAL(rl_h1conn_respond(S.c, 200, NULL, 0, (const uint8_t *)"ok", 2, 1), 0);
    CU_ASSERT(run_until(client_eof, &cl, FAILSAFE));
    parse_responses(&cl.in, 1, NULL, &rs);
    CU_ASSERT_EQUAL(rs.n, 1);
    CU_ASSERT_STRING_EQUAL(resp_header(&rs.r[0], "connection"), "close");
    resp_set_free(&rs);
    CU_ASSERT_EQUAL(S.nreq, 1);
    finish(&cl);
}

/* ---------- listener ---------- */

struct handed {
    int h1, h2;
    int fd;
    SSL *ssl;
    char peer[64];
    char alpn[16];
};
static struct handed H;
static int make_h1conn; /* on_h1 wraps the socket in an rl_h1conn */

static void record(int fd, SSL *ssl, const char *peer)
{
    const unsigned char *p = NULL;
    unsigned l = 0;
    H.fd = fd;
    H.ssl = ssl;
    snprintf(H.peer, sizeof(H.peer), "%s", peer);
    if (ssl) {
        SSL_get0_alpn_selected(ssl, &p, &l);
        snprintf(H.alpn, sizeof(H.alpn), "%.*s", (int)l, p ? (const char *)p : "");
    }
}

static void lst_on_h1(int fd, SSL *ssl, const char *peer, void *user)
{
    (void)user;
    H.h1++;
    record(fd, ssl, peer);
    if (make_h1conn) {
        srv_reset(M_ECHO);
        CU_ASSERT(rl_h1conn_new(loop, fd, ssl, NULL, &cbs, NULL, &S.c) == 0);
        H.fd = -1;
        H.ssl = NULL;
    }
}

static void lst_on_h2(int fd, SSL *ssl, const char *peer, void *user)
{
    (void)user;
    H.h2++;
    record(fd, ssl, peer);
}

static void handed_release(void)
{
    if (H.ssl)
        SSL_free(H.ssl);
    if (H.fd > 0)
        close(H.fd);
    memset(&H, 0, sizeof(H));
    H.fd = -1;
}

static int tcp_connect(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CU_ASSERT(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
    return fd;
}

static int handed_any(void *arg)
{
    (void)arg;
    return H.h1 + H.h2 > 0;
}

static void test_listener_plaintext(void)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    struct rl_listener *l;
    struct rl_listener_opts o = {
        .addr = "127.0.0.1:0", .handshake_timeout_s = 0.4, .on_h1 = lst_on_h1, .on_h2 = lst_on_h2};
    struct client cl;
    char got[24];

    handed_release();
    CU_ASSERT_FATAL(rl_listener_new(loop, &o, &l) == 0);
    CU_ASSERT(rl_listener_port(l) > 0);

    /* the HTTP/2 preface: h2c, bytes left in the socket */
    client_start(&cl, tcp_connect(rl_listener_port(l)), NULL);
    client_send(&cl, preface, 24);
    CU_ASSERT_FATAL(run_until(handed_any, NULL, FAILSAFE));
    CU_ASSERT_EQUAL(H.h2, 1);
    CU_ASSERT_PTR_NULL(H.ssl);
    CU_ASSERT(strncmp(H.peer, "127.0.0.1:", 10) == 0);
    CU_ASSERT_EQUAL(recv(H.fd, got, sizeof(got), 0), 24);
    CU_ASSERT(memcmp(got, preface, 24) == 0);
    handed_release();
    client_close(&cl);

    /* the preface in slow pieces: waits, then h2 */
    client_start(&cl, tcp_connect(rl_listener_port(l)), NULL);
    client_send(&cl, preface, 8);
    settle(0.1);
    CU_ASSERT_EQUAL(H.h1 + H.h2, 0);
    client_send(&cl, preface + 8, 16);
    CU_ASSERT_FATAL(run_until(handed_any, NULL, FAILSAFE));
    CU_ASSERT_EQUAL(H.h2, 1);
    handed_release();
    client_close(&cl);

    /* a prefix of the preface, then nothing: dropped at the deadline */
    client_start(&cl, tcp_connect(rl_listener_port(l)), NULL);
    client_send(&cl, "PRI", 3);
    CU_ASSERT(run_until(client_eof, &cl, FAILSAFE));
    CU_ASSERT_EQUAL(H.h1 + H.h2, 0);
    client_close(&cl);

    /* HTTP/1.1: handed over, served over the same bytes */
    make_h1conn = 1;
    client_start(&cl, tcp_connect(rl_listener_port(l)), NULL);
    client_sends(&cl, "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
    CU_ASSERT_FATAL(wait_responses(&cl, 1, NULL));
    CU_ASSERT_EQUAL(H.h1, 1);
    {
        struct resp_set rs;
        parse_responses(&cl.in, 0, NULL, &rs);
        CU_ASSERT(body_is(&rs.r[0], "hi"));
        resp_set_free(&rs);
    }
    CU_ASSERT(strncmp(rl_h1conn_peer(S.c), "127.0.0.1:", 10) == 0);
    CU_ASSERT_EQUAL(rl_h1conn_tls(S.c), 0);
    finish(&cl);
    make_h1conn = 0;
    handed_release();

    /* a peer that connects and leaves */
    client_start(&cl, tcp_connect(rl_listener_port(l)), NULL);
    client_close(&cl);
    settle(0.05);
    CU_ASSERT_EQUAL(H.h1 + H.h2, 0);
    rl_listener_free(l);
}

/* ---------- TLS ---------- */

static struct al_tls *server_tls(void)
{
    static const char *const alpn[] = {"h2", "http/1.1", NULL};
    char cert[300], key[300];
    struct al_tls *t = NULL;

    snprintf(cert, sizeof(cert), "%s/test-testsvc.crt", pki);
    snprintf(key, sizeof(key), "%s/test-testsvc.key", pki);
    struct al_tls_opts to = {.cert_file = cert, .key_file = key, .server = 1, .alpn = alpn};
    CU_ASSERT_FATAL(al_tls_new(&to, &t) == 0);
    return t;
}

static SSL_CTX *client_ctx(const char *alpn_wire, unsigned len)
{
    char ca[300];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    CU_ASSERT_FATAL(ctx != NULL);
    snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
    CU_ASSERT(SSL_CTX_load_verify_locations(ctx, ca, NULL) == 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (alpn_wire)
        CU_ASSERT(SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)alpn_wire, len) == 0);
    return ctx;
}

static int tls_handshake_step(void *arg)
{
    SSL *ssl = arg;
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return 1;
    int e = SSL_get_error(ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        return -1; /* failed: stop waiting */
    return 0;
}

static SSL *tls_client(SSL_CTX *ctx, int fd)
{
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_connect_state(ssl);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return ssl;
}

static void test_listener_tls(void)
{
    struct al_tls *t = server_tls();
    struct rl_listener *l;
    struct rl_listener_opts o = {.addr = "127.0.0.1:0",
                                 .tls = t,
                                 .handshake_timeout_s = 0.4,
                                 .on_h1 = lst_on_h1,
                                 .on_h2 = lst_on_h2};
    struct {
        const char *wire;
        unsigned len;
        int h2;
        const char *alpn;
    } cases[] = {
        {"\x02h2\x08http/1.1", 12, 1, "h2"},
        {"\x08http/1.1", 9, 0, "http/1.1"},
        {NULL, 0, 0, ""},
    };

    handed_release();
    CU_ASSERT_FATAL(rl_listener_new(loop, &o, &l) == 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        SSL_CTX *ctx = client_ctx(cases[i].wire, cases[i].len);
        int fd = tcp_connect(rl_listener_port(l));
        SSL *ssl = tls_client(ctx, fd);
        CU_ASSERT_FATAL(run_until(tls_handshake_step, ssl, FAILSAFE) == 1);
        CU_ASSERT(run_until(handed_any, NULL, FAILSAFE));
        CU_ASSERT_EQUAL(H.h2, cases[i].h2);
        CU_ASSERT_EQUAL(H.h1, !cases[i].h2);
        CU_ASSERT_PTR_NOT_NULL(H.ssl);
        CU_ASSERT_STRING_EQUAL(H.alpn, cases[i].alpn);
        if (cases[i].h2 && H.ssl) {
            /* the handed SSL carries on the session */
            char buf[8] = {0};
            CU_ASSERT(SSL_write(ssl, "PRI *", 5) == 5);
            ev_tstamp end = ev_time() + FAILSAFE;
            int n = -1;
            while (ev_time() < end && (n = SSL_read(H.ssl, buf, sizeof(buf))) <= 0)
                usleep(1000);
            CU_ASSERT_EQUAL(n, 5);
            CU_ASSERT(memcmp(buf, "PRI *", 5) == 0);
        }
        handed_release();
        SSL_free(ssl);
        close(fd);
        SSL_CTX_free(ctx);
    }

    /* an ALPN list with nothing we speak: refused in the handshake */
    {
        SSL_CTX *ctx = client_ctx("\x06spdy/3", 7);
        int fd = tcp_connect(rl_listener_port(l));
        SSL *ssl = tls_client(ctx, fd);
        CU_ASSERT(run_until(tls_handshake_step, ssl, FAILSAFE) == -1);
        settle(0.02);
        CU_ASSERT_EQUAL(H.h1 + H.h2, 0);
        SSL_free(ssl);
        close(fd);
        SSL_CTX_free(ctx);
    }

    /* not TLS at all: dropped, nothing handed over */
    {
        struct client cl;
        client_start(&cl, tcp_connect(rl_listener_port(l)), NULL);
        client_sends(&cl, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        CU_ASSERT(run_until(client_eof, &cl, FAILSAFE));
        CU_ASSERT_EQUAL(H.h1 + H.h2, 0);
        client_close(&cl);
    }

    /* silent peer: dropped at the handshake deadline */
    {
        struct client cl;
        client_start(&cl, tcp_connect(rl_listener_port(l)), NULL);
        CU_ASSERT(run_until(client_eof, &cl, FAILSAFE));
        CU_ASSERT_EQUAL(H.h1 + H.h2, 0);
        client_close(&cl);
    }
    rl_listener_free(l);
    al_tls_free(t);
}

static void test_listener_max_conns(void)
{
    struct al_tls *t = server_tls();
    struct rl_listener *l;
    struct rl_listener_opts o = {
        .addr = "127.0.0.1:0", .tls = t, .max_conns = 1, .on_h1 = lst_on_h1, .on_h2 = lst_on_h2};
    SSL_CTX *ctx = client_ctx("\x08http/1.1", 9);

    handed_release();
    CU_ASSERT_FATAL(rl_listener_new(loop, &o, &l) == 0);
    int fa = tcp_connect(rl_listener_port(l));
    settle(0.05); /* A is accepted and holds the one handshake slot */
    int fb = tcp_connect(rl_listener_port(l));
    SSL *sb = tls_client(ctx, fb);
    SSL *sa = tls_client(ctx, fa);
    run_until(tls_handshake_step, sb, 0.3);
    CU_ASSERT_EQUAL(H.h1, 0); /* B waits in the backlog */
    CU_ASSERT_FATAL(run_until(tls_handshake_step, sa, FAILSAFE) == 1);
    CU_ASSERT(run_until(handed_any, NULL, FAILSAFE));
    CU_ASSERT_EQUAL(H.h1, 1);
    handed_release();
    CU_ASSERT_FATAL(run_until(tls_handshake_step, sb, FAILSAFE) == 1);
    CU_ASSERT(run_until(handed_any, NULL, FAILSAFE));
    CU_ASSERT_EQUAL(H.h1, 1);
    handed_release();
    SSL_free(sa);
    SSL_free(sb);
    close(fa);
    close(fb);
    SSL_CTX_free(ctx);
    rl_listener_free(l);
    al_tls_free(t);
}

/* HTTP/1.1 over TLS end to end: requests, a large response with partial
 * TLS writes to a client that reads late, an error reply. */
static void test_h1_over_tls(void)
{
    struct al_tls *t = server_tls();
    struct rl_listener *l;
    struct rl_listener_opts o = {
        .addr = "127.0.0.1:0", .tls = t, .on_h1 = lst_on_h1, .on_h2 = lst_on_h2};
    SSL_CTX *ctx = client_ctx("\x08http/1.1", 9);
    struct client cl;
    struct resp_set rs;

    handed_release();
    make_h1conn = 1;
    CU_ASSERT_FATAL(rl_listener_new(loop, &o, &l) == 0);
    int fd = tcp_connect(rl_listener_port(l));
    SSL *ssl = tls_client(ctx, fd);
    CU_ASSERT_FATAL(run_until(tls_handshake_step, ssl, FAILSAFE) == 1);
    CU_ASSERT_FATAL(run_until(handed_any, NULL, FAILSAFE));
    CU_ASSERT_PTR_NOT_NULL_FATAL(S.c);
    CU_ASSERT_EQUAL(rl_h1conn_tls(S.c), 1);
    client_start(&cl, fd, ssl);
    client_sends(&cl, "POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "4\r\ntls!\r\n0\r\n\r\n");
    CU_ASSERT_FATAL(wait_responses(&cl, 1, NULL));
    parse_responses(&cl.in, 0, NULL, &rs);
    CU_ASSERT(body_is(&rs.r[0], "tls!"));
    resp_set_free(&rs);

    /* a large response, written while the client does not read */
    S.mode = M_MANUAL;
    S.body_ends = 0;
    rl_buf_reset(&cl.in);
    client_sends(&cl, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
    CU_ASSERT_FATAL(run_until(flag_set, &S.body_ends, FAILSAFE));
    {
        struct writer w = {.c = S.c, .total = 3 * 1024 * 1024 + 17};
        CU_ASSERT_EQUAL(rl_h1conn_respond_head(S.c, 200, NULL, 0, (int64_t)w.total), 0);
        client_pause(&cl, 1);
        /* push everything: the queue holds what TLS could not write */
        while (w.sent < w.total) {
            uint8_t piece[100000];
            size_t n = w.total - w.sent < sizeof(piece) ? w.total - w.sent : sizeof(piece);
            fill_pattern(piece, w.sent, n);
            int rc = rl_h1conn_respond_body(S.c, piece, n);
            if (rc == AL_ERR_TOOBIG) {
                CU_ASSERT(rl_h1conn_pending(S.c) > 0);
                client_pause(&cl, 0);
                settle(0.005);
                client_pause(&cl, 1);
                continue;
            }
            CU_ASSERT_EQUAL_FATAL(rc, 0);
            w.sent += n;
        }
        CU_ASSERT_EQUAL(rl_h1conn_respond_end(S.c, 1), 0);
        client_pause(&cl, 0);
        CU_ASSERT(run_until(writer_done, &cl, FAILSAFE));
        check_pattern_body(&cl, w.total);
    }

    /* an error reply over TLS, then close_notify and close */
    rl_buf_reset(&cl.in);
    client_sends(&cl, "GET /x HTTP/1.1\r\nHost: a\r\nBad Header: 1\r\n\r\n");
    CU_ASSERT(run_until(client_eof, &cl, FAILSAFE));
    parse_responses(&cl.in, 1, NULL, &rs);
    CU_ASSERT_EQUAL(rs.r[0].status, 400);
    resp_set_free(&rs);
    finish(&cl);
    make_h1conn = 0;
    handed_release();
    SSL_CTX_free(ctx);
    rl_listener_free(l);
    al_tls_free(t);
}

/* ---------- main ---------- */

static int suite_init(void)
{
    char tmpl[] = "/tmp/al-test-h1-XXXXXX";

    loop = EV_DEFAULT;
    if (!mkdtemp(tmpl))
        return 1;
    snprintf(pki, sizeof(pki), "%s", tmpl);
    if (al_pki_create_ca(pki, 0) < 0 || al_pki_issue(pki, "test", "testsvc", AL_PKI_SERVER) < 0)
        return 1;
    H.fd = -1;
    rl_buf_init(&S.body, 0);
    return 0;
}

static int suite_clean(void)
{
    char cmd[300];

    rl_buf_cleanup(&S.body);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", pki);
    return system(cmd) == 0 ? 0 : 1;
}

int main(void)
{
    CU_pSuite s;
    int failed;

    signal(SIGPIPE, SIG_IGN);
    /* refusals are logged by design and would split CUnit's lines;
     * H1_TEST_LOG=info shows them */
    if (al_log_set_level_name(getenv("H1_TEST_LOG") ? getenv("H1_TEST_LOG") : "off") < 0)
        al_log_set_level_name("off");
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("h1", suite_init, suite_clean);
    CU_add_test(s, "GET, header handling, keep-alive with two requests", test_get_and_keepalive);
    CU_add_test(s, "chunked request body with extension and trailer", test_post_chunked_request);
    CU_add_test(s, "pipelined requests: one at a time, answers in order", test_pipelined);
    CU_add_test(s, "response chunked and with length; length mismatches",
                test_response_chunked_and_length);
    CU_add_test(s, "response head checks, 204, HEAD", test_respond_head_checks);
    CU_add_test(s, "HTTP/1.0 clients", test_http10);
    CU_add_test(s, "Expect: 100-continue", test_expect_continue);
    CU_add_test(s, "early response: the body is dropped, connection kept",
                test_early_response_drops_body);
    CU_add_test(s, "every error class: status, airlock-error, JSON-RPC body, close", test_errors);
    CU_add_test(s, "body framing error after on_request", test_body_error_after_request);
    CU_add_test(s, "valid requests split at every byte", test_split_everywhere);
    CU_add_test(s, "on_request failure and close inside on_request", test_on_request_fails);
    CU_add_test(s, "slowloris: head deadline from the first byte", test_slowloris);
    CU_add_test(s, "idle and body timeouts", test_idle_and_body_timeouts);
    CU_add_test(s, "pause/resume of the request body", test_pause_resume_body);
    CU_add_test(s, "response back-pressure: max_pending, on_writable", test_backpressure);
    CU_add_test(s, "peer disconnects", test_disconnects);
    CU_add_test(s, "graceful shutdown", test_shutdown);
    CU_add_test(s, "listener, plaintext: h2c preface sniffing", test_listener_plaintext);
    CU_add_test(s, "listener, TLS: ALPN h2 / http/1.1 / none, bad handshakes", test_listener_tls);
    CU_add_test(s, "listener: max_conns in the handshake", test_listener_max_conns);
    CU_add_test(s, "HTTP/1.1 over TLS: partial writes, large response", test_h1_over_tls);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
