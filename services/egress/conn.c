/*
 * conn: one connection from a sandbox (see egress.h for the objects).
 *
 * States (enum eg_cstate):
 *   CS_H1       the outer HTTP/1.1 connection (h1.c with proxy_forms):
 *               absolute-form http:// requests go to req.c; a CONNECT is
 *               checked here (target, Host, placeholders, policy, limits)
 *   CS_CONNECT  resolving the target (once; every address checked) and,
 *               for an opaque tunnel, dialling it; then the outer h1
 *               object is detached once the CONNECT message is complete
 *   CS_HELLO    "200 Connection established" sent; the ClientHello is
 *               read and its SNI checked (tunnel.c)
 *   CS_TUNNEL   opaque splice (tunnel.c)
 *   CS_TLS      intercept: TLS server handshake with the minted leaf
 *               (mitm.c)
 *   CS_INNER    intercept: the inner HTTP/1.1 connection; its requests go
 *               to req.c
 *
 * Timers: the connection's total_timeout (from accept, any state), the
 * connect deadline (CS_CONNECT), the ClientHello/handshake deadline
 * (CS_HELLO, CS_TLS) and the tunnel's idle timeout; h1 keeps the idle and
 * head timeouts of HTTP states itself. A connection past max_connections
 * (up to EG_OVERFLOW more) is only told 429 and closed; further ones are
 * closed at once.
 *
 * Ending: eg_conn_abort() releases everything at once (request, resolver
 * query, descriptors, SSL, the upstream origin) and closes the h1 object,
 * whose on_close then releases the connection; released connections are
 * freed from a zero timer (reap), never inside a callback they are on.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "al_err.h"
#include "al_log.h"
#include "ca.h"
#include "egress.h"
#include "scrub.h"

static const char CONNECT_OK[] = "HTTP/1.1 200 Connection established\r\n\r\n";

/* ------------------------------------------------------------ helpers */

void eg_respond_text(struct rl_h1conn *h1, int status, const char *reason, int keep)
{
    static const struct rl_h1_header hs[] = {
        {"content-type", 12, "text/plain; charset=utf-8", 25},
        {"cache-control", 13, "no-store", 8},
    };
    char body[512];
    int n = snprintf(body, sizeof(body), EG_SERVICE ": %s\n", reason);

    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(body))
        n = (int)sizeof(body) - 1;
    if (rl_h1conn_respond(h1, status, hs, 2, (const uint8_t *)body, (size_t)n, keep) < 0)
        rl_h1conn_close(h1);
}

void eg_conn_touch(struct eg_conn *c)
{
    c->t_last = ev_now(c->p->loop);
}

static ev_tstamp earliest(ev_tstamp a, ev_tstamp b)
{
    if (a <= 0)
        return b;
    if (b <= 0)
        return a;
    return a < b ? a : b;
}

static ev_tstamp conn_deadline(const struct eg_conn *c)
{
    ev_tstamp d = c->job->total_s > 0 ? c->t_start + c->job->total_s : 0;

    switch (c->st) {
    case CS_CONNECT:
        return earliest(d, c->t_phase + c->p->connect_timeout_s);
    case CS_HELLO:
    case CS_TLS:
        return earliest(d, c->t_phase + EG_HANDSHAKE_S);
    case CS_TUNNEL:
        return earliest(d, c->t_last + c->job->idle_s);
    default:
        return d;
    }
}

void eg_conn_arm(struct eg_conn *c)
{
    ev_tstamp d = conn_deadline(c), now = ev_now(c->p->loop);

    ev_timer_stop(c->p->loop, &c->timer);
    if (d <= 0 || c->dying)
        return;
    ev_timer_set(&c->timer, d > now ? d - now : 0., 0.);
    ev_timer_start(c->p->loop, &c->timer);
}

static void reap_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct eg_proxy *p = w->data;
    (void)loop;
    (void)revents;

    while (p->dead) {
        struct eg_conn *c = p->dead;
        struct eg_job *j = c->job;
        p->dead = c->next;
        free(c);
        eg_job_unref(j);
    }
}

static void unlink_conn(struct eg_conn **head, struct eg_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (*head == c)
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void push_conn(struct eg_conn **head, struct eg_conn *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

/* The connection is gone from every list but the reaper's. */
static void release(struct eg_conn *c)
{
    struct eg_proxy *p = c->p;

    if (c->released)
        return;
    c->released = 1;
    unlink_conn(&p->dying, c);
    c->next = p->dead;
    p->dead = c;
    if (!ev_is_active(&p->reap)) {
        ev_timer_init(&p->reap, reap_cb, 0., 0.);
        p->reap.data = p;
        ev_timer_start(p->loop, &p->reap);
    }
}

/* A Use record for what the connection was doing when it ended. */
static void record_end(struct eg_conn *c, const char *reason)
{
    struct eg_use u = {.cred = -1, .destination = c->dest, .method = "CONNECT", .path = ""};

    if (!c->reserved)
        return;
    c->reserved = 0;
    if (c->st == CS_TUNNEL) {
        u.status = 200;
        u.allowed = 1;
        u.req_bytes = (int64_t)c->up_bytes;
        u.resp_bytes = (int64_t)c->down_bytes;
        u.reason = reason;
        u.t0 = c->t_start;
    } else {
        u.status = 0;
        u.reason = reason;
    }
    eg_job_use(c->job, &u, EG_CTL_RESERVED);
}

void eg_conn_abort(struct eg_conn *c, const char *reason)
{
    struct eg_proxy *p = c->p;
    struct eg_job *j = c->job;

    if (c->dying)
        return;
    c->dying = 1;
    AL_LOG_DEBUG("egress.conn.end", "job=%s conn=%llu state=%d reason=\"%s\"", j->id,
                 (unsigned long long)c->id, (int)c->st, reason);
    if (c->req)
        eg_req_abort(c->req, reason);
    record_end(c, reason);
    eg_resolve_cancel(c);
    ev_timer_stop(p->loop, &c->timer);
    ev_timer_stop(p->loop, &c->kick);
    ev_io_stop(p->loop, &c->cio);
    ev_io_stop(p->loop, &c->uio);
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->cfd >= 0)
        close(c->cfd);
    if (c->ufd >= 0)
        close(c->ufd);
    c->cfd = c->ufd = -1;
    rl_upstream_free(c->up);
    c->up = NULL;
    rl_buf_cleanup(&c->c2u);
    rl_buf_cleanup(&c->u2c);
    unlink_conn(&j->conns, c);
    if (c->overflow)
        j->noverflow--;
    else
        j->nconns--;
    push_conn(&p->dying, c);
    if (c->h1)
        rl_h1conn_close(c->h1); /* on_close releases it */
    else
        release(c);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* ------------------------------------------------------------- CONNECT */

/* Refuses the CONNECT on the outer connection and records it. */
static void connect_deny(struct eg_conn *c, int status, const char *reason, long cred, int exfil)
{
    struct eg_use u = {.cred = cred,
                       .destination = c->dest,
                       .method = "CONNECT",
                       .path = "",
                       .status = status,
                       .reason = reason,
                       .exfil = exfil};

    eg_job_use(c->job, &u, c->reserved ? EG_CTL_RESERVED : EG_CTL_USE);
    c->reserved = 0;
    eg_resolve_cancel(c);
    if (c->ufd >= 0) {
        ev_io_stop(c->p->loop, &c->uio);
        close(c->ufd);
        c->ufd = -1;
    }
    rl_upstream_free(c->up);
    c->up = NULL;
    c->st = CS_H1;
    eg_conn_arm(c);
    if (c->h1)
        eg_respond_text(c->h1, status, reason, 0);
    else
        eg_conn_abort(c, reason);
}

/* The first credential whose placeholder appears in the target or a header
 * of a request that has no slot (CONNECT), or -1. */
static long placeholder_anywhere(const struct eg_job *j, const struct rl_h1_head *h)
{
    long k;

    if (!j->detect)
        return -1;
    if ((k = rl_scrub_find(j->detect, (const uint8_t *)h->target, h->target_len)) >= 0)
        return k;
    for (size_t i = 0; i < h->nheaders; i++) {
        if ((k = rl_scrub_find(j->detect, (const uint8_t *)h->headers[i].name,
                               h->headers[i].name_len)) >= 0 ||
            (k = rl_scrub_find(j->detect, (const uint8_t *)h->headers[i].value,
                               h->headers[i].value_len)) >= 0)
            return k;
    }
    return -1;
}

/* Host, when present, names the CONNECT target (its port too, if given). */
static int host_agrees(const struct rl_h1_head *h, const struct eg_authority *a, int default_port)
{
    for (size_t i = 0; i < h->nheaders; i++) {
        struct eg_authority ha;
        const char *why;
        if (h->headers[i].name_len != 4 || memcmp(h->headers[i].name, "host", 4) != 0)
            continue;
        if (eg_authority_parse(h->headers[i].value, h->headers[i].value_len, default_port, &ha,
                               &why) < 0)
            return 0;
        return eg_host_equal(&ha.host, &a->host) && ha.port == a->port;
    }
    return 1;
}

static int cred_bound(const struct eg_job *j, const struct eg_authority *a)
{
    for (size_t i = 0; i < j->ncreds; i++)
        for (size_t b = 0; b < j->creds[i].nbinds; b++)
            if (j->creds[i].binds[b].port == a->port &&
                eg_host_match(&j->creds[i].binds[b], &a->host))
                return 1;
    return 0;
}

static void connect_start(struct eg_conn *c, const struct rl_h1_head *h)
{
    struct eg_job *j = c->job;
    char reason[EG_REASON_MAX];
    const char *why = NULL;
    long k;

    snprintf(c->dest, sizeof(c->dest), "%.*s", (int)(h->target_len < 200 ? h->target_len : 200),
             h->target);
    if (eg_authority_parse(h->target, h->target_len, 0, &c->target, &why) < 0) {
        snprintf(reason, sizeof(reason), "CONNECT target: %s", why);
        connect_deny(c, 400, reason, -1, 0);
        return;
    }
    eg_authority_format(&c->target, c->dest, sizeof(c->dest));
    if (!host_agrees(h, &c->target, c->target.port)) {
        connect_deny(c, 400, "the Host header disagrees with the CONNECT target", -1, 0);
        return;
    }
    if ((k = placeholder_anywhere(j, h)) >= 0) {
        snprintf(reason, sizeof(reason), "placeholder of credential %s in the CONNECT request",
                 j->creds[k].name);
        connect_deny(c, 403, reason, k, 1);
        return;
    }
    if (!eg_policy_reach(&j->pol, &c->target, 0, &c->reach)) {
        snprintf(reason, sizeof(reason), "%s is not an allowed destination for this job", c->dest);
        connect_deny(c, 403, reason, -1, 0);
        return;
    }
    if (!eg_job_bytes_left(j)) {
        snprintf(reason, sizeof(reason), "the job's byte limit (%lld bytes) is used up",
                 (long long)j->bytes.max);
        connect_deny(c, 403, reason, -1, 0);
        return;
    }
    if (!eg_job_take_token(j)) {
        snprintf(reason, sizeof(reason), "request rate limit (%g per second) reached",
                 j->bucket.rate);
        connect_deny(c, 429, reason, -1, 0);
        return;
    }
    c->intercept = c->reach.restricted || cred_bound(j, &c->target);
    if (c->intercept && !j->ca) {
        snprintf(reason, sizeof(reason), "%s must be intercepted but the job has no CA", c->dest);
        connect_deny(c, 403, reason, -1, 0);
        return;
    }
    if (!c->intercept) {
        if (eg_ctl_reserve(j->p->ctl) < 0) {
            connect_deny(c, 503, "the audit queue is full (the executor is not reading it)", -1, 0);
            return;
        }
        c->reserved = 1;
        j->n_requests++;
    }
    c->st = CS_CONNECT;
    c->t_phase = ev_now(c->p->loop);
    c->body_done = 0;
    c->resolved = 0;
    c->dialled = 0;
    eg_conn_arm(c);
    if (eg_resolve_start(c, &c->target) < 0)
        connect_deny(c, 502, "name resolution failed to start", -1, 0);
}

static void dial_next(struct eg_conn *c, int last_err);

/* Detaches the outer connection and moves to the ClientHello, when every
 * condition is met: addresses, (opaque) a connected upstream, and the
 * complete CONNECT message. */
static void connect_proceed(struct eg_conn *c)
{
    SSL *ssl = NULL;
    int fd = -1;

    if (c->st != CS_CONNECT || c->resolved <= 0 || !c->body_done || !c->h1)
        return;
    if (c->intercept ? !c->up : !c->dialled)
        return;
    if (rl_h1conn_detach(c->h1, &fd, &ssl, &c->c2u) < 0) {
        eg_conn_abort(c, "cannot take the connection back from HTTP/1.1");
        return;
    }
    c->h1 = NULL;
    c->cfd = fd;
    if (ssl)
        SSL_free(ssl); /* the outer connection is plaintext: never set */
    if (rl_buf_append(&c->u2c, CONNECT_OK, sizeof(CONNECT_OK) - 1) < 0) {
        eg_conn_abort(c, "out of memory");
        return;
    }
    c->st = CS_HELLO;
    c->t_phase = ev_now(c->p->loop);
    eg_conn_touch(c);
    eg_conn_arm(c);
    eg_tunnel_flush_client(c);
    if (!c->dying && c->c2u.len)
        eg_tunnel_io(c, 1, 0); /* ClientHello bytes sent before our 200 */
}

static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    connect_proceed(w->data);
}

static void kick(struct eg_conn *c)
{
    if (!ev_is_active(&c->kick))
        ev_timer_start(c->p->loop, &c->kick);
}

static void dial_done(struct eg_conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    ev_io_stop(c->p->loop, &c->uio);
    if (err) {
        close(c->ufd);
        c->ufd = -1;
        dial_next(c, err);
        return;
    }
    c->dialled = 1;
    connect_proceed(c);
}

static void dial_next(struct eg_conn *c, int last_err)
{
    char reason[EG_REASON_MAX];

    while (c->ai < c->naddr) {
        const struct sockaddr *sa = (const struct sockaddr *)&c->addr[c->ai];
        socklen_t sl = c->alen[c->ai++];
        int one = 1, fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            last_err = errno;
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, sa, sl) < 0 && errno != EINPROGRESS) {
            last_err = errno;
            close(fd);
            continue;
        }
        c->ufd = fd;
        ev_io_set(&c->uio, fd, EV_WRITE);
        c->uio_ev = EV_WRITE;
        ev_io_start(c->p->loop, &c->uio);
        return;
    }
    snprintf(reason, sizeof(reason), "cannot connect to %s: %s", c->dest,
             last_err ? strerror(last_err) : "no address");
    connect_deny(c, 502, reason, -1, 0);
}

void eg_conn_resolved(struct eg_conn *c)
{
    char reason[EG_REASON_MAX];

    if (c->st != CS_CONNECT) {
        if (c->req)
            eg_req_origin_ready(c->req, c->resolved < 0 ? c->resolved : 0, NULL);
        return;
    }
    if (c->resolved < 0) {
        snprintf(reason, sizeof(reason), "%s %s", c->dest,
                 c->resolved == AL_ERR_TIMEOUT ? "could not be resolved in time"
                                               : "does not resolve");
        connect_deny(c, c->resolved == AL_ERR_TIMEOUT ? 504 : 502, reason, -1, 0);
        return;
    }
    if (c->naddr == 0) {
        snprintf(reason, sizeof(reason), "%s resolves only to denied addresses (%s)", c->dest,
                 c->denied_addr);
        connect_deny(c, 403, reason, -1, 0);
        return;
    }
    if (c->intercept) {
        if (eg_origin_new(c, &c->target, 0) < 0) {
            connect_deny(c, 502, "cannot set up the upstream origin", -1, 0);
            return;
        }
        connect_proceed(c);
        return;
    }
    c->ai = 0;
    dial_next(c, 0);
}

/* --------------------------------------------------------- h1 callbacks */

static int on_request(struct rl_h1conn *h1, const struct rl_h1_head *h, void *user)
{
    struct eg_conn *c = user;
    struct eg_job *j = c->job;
    int is_connect = strcmp(h->method, "CONNECT") == 0;

    (void)h1;
    eg_conn_touch(c);
    if (c->overflow) {
        char reason[EG_REASON_MAX];
        struct eg_use u = {.cred = -1,
                           .destination = "",
                           .method = h->method,
                           .path = "",
                           .status = 429,
                           .reason = reason};
        snprintf(reason, sizeof(reason), "connection limit (%zu) reached for this job",
                 j->max_conns);
        eg_job_use(j, &u, EG_CTL_USE);
        eg_respond_text(c->h1, 429, reason, 0);
        return 0;
    }
    if (c->st == CS_H1 && is_connect) {
        connect_start(c, h);
        return 0;
    }
    if (c->st == CS_INNER && is_connect) {
        struct eg_use u = {.cred = -1,
                           .destination = c->dest,
                           .method = h->method,
                           .path = "",
                           .status = 400,
                           .reason = "CONNECT inside a CONNECT tunnel"};
        eg_job_use(j, &u, EG_CTL_USE);
        eg_respond_text(c->h1, 400, u.reason, 0);
        return 0;
    }
    if (c->st == CS_H1 && h->target[0] == '/') {
        static const char why[] = "this is a forward proxy: send absolute-form http:// URLs, "
                                  "or CONNECT for https";
        struct eg_use u = {.cred = -1,
                           .destination = "",
                           .method = h->method,
                           .path = h->target,
                           .status = 400,
                           .reason = why};
        eg_job_use(j, &u, EG_CTL_USE);
        eg_respond_text(c->h1, 400, why, 0);
        return 0;
    }
    if (c->st != CS_H1 && c->st != CS_INNER)
        return AL_ERR_STATE;
    return eg_req_start(c, h, c->st == CS_H1);
}

static void on_body(struct rl_h1conn *h1, const uint8_t *d, size_t n, void *user)
{
    struct eg_conn *c = user;
    (void)h1;

    eg_conn_touch(c);
    if (c->req)
        eg_req_body(c->req, d, n);
}

static void on_body_end(struct rl_h1conn *h1, void *user)
{
    struct eg_conn *c = user;
    (void)h1;

    if (c->req) {
        eg_req_body_end(c->req);
        return;
    }
    if (c->st == CS_CONNECT) {
        c->body_done = 1;
        kick(c); /* never detach inside h1's own call */
    }
}

static void on_writable(struct rl_h1conn *h1, void *user)
{
    struct eg_conn *c = user;
    (void)h1;

    if (c->req)
        eg_req_writable(c->req);
}

static void on_close(struct rl_h1conn *h1, int err, void *user)
{
    struct eg_conn *c = user;
    (void)h1;

    c->h1 = NULL;
    if (c->dying) {
        release(c);
        return;
    }
    eg_conn_abort(c, err ? al_strerror(err) : "the client closed the connection");
}

/* h1 refused a request itself (malformed, ambiguous, too large): record it. */
static void on_reject(struct rl_h1conn *h1, int status, const char *why, void *user)
{
    struct eg_conn *c = user;
    char reason[EG_REASON_MAX];
    struct eg_use u = {.cred = -1,
                       .destination = c->st == CS_INNER ? c->dest : "",
                       .method = "",
                       .path = "",
                       .status = status,
                       .reason = reason};
    (void)h1;

    snprintf(reason, sizeof(reason), "malformed request: %s", why);
    if (c->req) { /* its one record, with this reason */
        eg_req_abort(c->req, reason);
        return;
    }
    eg_job_use(c->job, &u, EG_CTL_USE);
}

const struct rl_h1conn_cbs eg_h1_cbs = {on_request,  on_body,  on_body_end,
                                        on_writable, on_close, on_reject};

/* -------------------------------------------------------------- accept */

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct eg_conn *c = w->data;
    ev_tstamp now = ev_now(loop);
    (void)revents;

    if (c->job->total_s > 0 && now >= c->t_start + c->job->total_s) {
        eg_conn_abort(c, "the connection reached the job's total_timeout");
        return;
    }
    if (conn_deadline(c) > now + 1e-3) {
        eg_conn_arm(c);
        return;
    }
    switch (c->st) {
    case CS_CONNECT: {
        char reason[EG_REASON_MAX];
        snprintf(reason, sizeof(reason), "timed out connecting to %s", c->dest);
        connect_deny(c, 504, reason, -1, 0);
        return;
    }
    case CS_HELLO:
        eg_conn_abort(c, "no TLS ClientHello in time");
        return;
    case CS_TLS:
        eg_conn_abort(c, "TLS handshake not done in time");
        return;
    case CS_TUNNEL:
        eg_conn_abort(c, "idle timeout");
        return;
    default:
        return;
    }
}

static void cio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct eg_conn *c = w->data;
    (void)loop;

    if (c->st == CS_HELLO || c->st == CS_TUNNEL)
        eg_tunnel_io(c, 1, revents);
    else if (c->st == CS_TLS)
        eg_mitm_io(c);
}

static void uio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct eg_conn *c = w->data;
    (void)loop;

    if (c->st == CS_CONNECT)
        dial_done(c);
    else if (c->st == CS_TUNNEL)
        eg_tunnel_io(c, 0, revents);
}

static void limits_for(const struct eg_job *j, int outer, struct rl_h1_limits *l)
{
    memset(l, 0, sizeof(*l));
    l->max_head = 64 * 1024;
    l->max_body = (size_t)1 << 30;
    l->body_timeout_s = j->idle_s;
    l->idle_timeout_s = j->idle_s;
    l->proxy_forms = outer;
    l->error_prefix = EG_SERVICE;
}

int eg_conn_inner_h1(struct eg_conn *c, int fd, SSL *ssl)
{
    struct rl_h1_limits l;

    limits_for(c->job, 0, &l);
    return rl_h1conn_new(c->p->loop, fd, ssl, &l, &eg_h1_cbs, c, &c->h1);
}

void eg_conn_accept(struct eg_job *j, int fd)
{
    struct eg_proxy *p = j->p;
    struct rl_h1_limits l;
    struct eg_conn *c;
    int one = 1;

    /* small writes (a chunk's end, a TLS record) leave at once, not after
     * the client's delayed ACK */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (j->nconns >= j->max_conns && j->noverflow >= EG_OVERFLOW) {
        close(fd); /* far past the limit: not even an answer */
        return;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->p = p;
    c->job = j;
    c->id = ++p->next_conn;
    c->cfd = c->ufd = -1;
    c->st = CS_H1;
    c->overflow = j->nconns >= j->max_conns;
    c->t_start = c->t_last = c->t_phase = ev_now(p->loop);
    rl_buf_init(&c->c2u, EG_HELLO_BUF_MAX);
    rl_buf_init(&c->u2c, EG_BUF + 4096);
    ev_init(&c->timer, timer_cb);
    c->timer.data = c;
    ev_timer_init(&c->kick, kick_cb, 0., 0.);
    c->kick.data = c;
    ev_init(&c->cio, cio_cb);
    c->cio.data = c;
    ev_init(&c->uio, uio_cb);
    c->uio.data = c;
    limits_for(j, 1, &l);
    if (rl_h1conn_new(p->loop, fd, NULL, &l, &eg_h1_cbs, c, &c->h1) < 0) {
        free(c); /* fd closed by h1 */
        return;
    }
    j->refs++;
    push_conn(&j->conns, c);
    if (c->overflow) {
        j->noverflow++;
    } else {
        j->nconns++;
        j->n_conns++;
    }
    eg_conn_arm(c);
}
