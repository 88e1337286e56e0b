/*
 * upstream: the gateway's HTTP/1.1 client towards one private MCP server and
 * its pool of keep-alive connections; see upstream.h. The address policy is
 * in addrpolicy.c.
 *
 * Objects. struct rl_upstream holds the parsed origin, the TLS context and
 * the idle connections (struct uconn, most recently used first). A request
 * (struct rl_ureq) owns one connection from the moment it has one until its
 * response ends; the connection then goes back to the pool when it can carry
 * another exchange, else it is closed.
 *
 * Request states:
 *   NEW       first loop turn: take a pooled connection (-> ACTIVE) or resolve
 *   RESOLVE   c-ares lookup; its answer is checked against the policy
 *   RESOLVED  answer stored; acted on from the next loop turn
 *   CONNECT   non-blocking connect to one allowed address; a failure moves
 *             on to the next, each attempt getting a share of what is left
 *             of connect_timeout
 *   TLS       client handshake (certificate and name verified)
 *   ACTIVE    request written (head, then body as the caller gives it) and
 *             response read, both at once
 *   DONE      ended: unlinked, freed by the reaper
 *
 * Response parsing. The head (status line and fields, each 1xx interim head
 * too) is collected and checked byte by byte here: CRLF line ends only, no
 * obs-fold, no control bytes, a size cap, field names that are tokens. It is
 * then tokenized by http_parser. The body framing (Content-Length, chunked,
 * close-delimited) is decoded here rather than by http_parser: Debian builds
 * libhttp-parser with HTTP_PARSER_STRICT=0, which skips the CR/LF checks of
 * chunk framing, and lax framing on a kept-alive connection is how one
 * response gets smuggled into the next. Content-Length with
 * Transfer-Encoding, a Transfer-Encoding other than "chunked", duplicate
 * Content-Length and any Content-Encoding other than identity are refused.
 * Fields that only concern this hop (Connection and the fields it names,
 * Keep-Alive, Transfer-Encoding, TE, Trailer, Upgrade, Proxy-Connection,
 * Proxy-Authenticate) are consumed here and not passed to on_head;
 * Content-Length is passed on; trailer fields are dropped.
 *
 * Details the header leaves open: on_end and on_error are required,
 * on_head/on_data/on_writable optional; connect_timeout covers name
 * resolution as well as TCP and TLS; pausing holds back body bytes, but the
 * end of a response whose bytes were all delivered is still reported while
 * paused; rl_ureq_write() also returns AL_ERR_STATE for bytes beyond the
 * declared Content-Length (and rl_ureq_end() for a shorter body), and
 * accepts and drops bytes once the server has stopped reading (its response
 * decides the outcome).
 *
 * Reuse and retry. A connection goes back to the pool only after a
 * response that ended cleanly with keep-alive, a request written in full
 * and no byte beyond the response. A pooled connection is watched while idle
 * (a server close drops it) and probed again when taken. When a request on
 * a reused connection fails before a single response byte arrived, it is
 * sent once more on a fresh connection, but only for GET, HEAD and DELETE
 * whose whole request (head and body, up to 64 KiB) is still held: a POST
 * (an MCP tools/call) is never sent twice.
 *
 * Callbacks and lifetimes. User callbacks run only from loop events, never
 * inside an rl_* call. A request or connection that ends is unlinked, its
 * socket closed at once and its memory freed by a zero-delay reaper timer in
 * a later loop turn, so code unwinding from a callback that cancelled it (or
 * freed the whole upstream) never touches freed memory. Buffers that held
 * request bytes (the injected credential travels in the head) or response
 * bytes are wiped before they are freed; bytes written to the socket are
 * wiped at once.
 *
 * TLS writes go through OpenSSL's socket BIO, which uses write(2): the
 * process must ignore SIGPIPE (al_service does).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <http_parser.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "al_addr.h"
#include "al_err.h"
#include "al_log.h"
#include "al_resolve.h"
#include "al_tls.h"
#include "rlbuf.h"
#include "upstream.h"

#define OUT_MAX        (1024 * 1024) /* queued request bytes (rl_ureq_write) */
#define REPLAY_MAX     (64 * 1024)   /* request bytes kept for one retry */
#define READ_CHUNK     (64 * 1024)   /* one read takes what a loopback segment carries */
#define READ_ROUNDS    16            /* reads per event before yielding */
#define MAX_FIELDS     100           /* response header fields */
#define MAX_INTERIM    16            /* 1xx heads before the final one */
#define MAX_CHUNK_LINE 4096          /* chunk-size line with its extensions */
#define HOST_MAX       254           /* 253-byte name or an IPv6 literal, NUL */
#define URL_MAX        2048
#define METHOD_MAX     20
#define TARGET_MAX     (16 * 1024)

/* ------------------------------------------------------------------ types */

enum conn_list { CL_NONE, CL_IDLE, CL_BUSY, CL_DEAD };

struct uconn {
    struct rl_upstream *u;
    struct uconn *prev, *next;
    enum conn_list where;
    struct rl_ureq *req; /* NULL while pooled */
    int fd;
    SSL *ssl;
    ev_io io;
    int io_events;
    ev_timer idle_t;      /* pooled: closed when it fires */
    double keep_s;        /* the server's Keep-Alive timeout hint; 0 none */
    unsigned exchanges;   /* responses completed on it */
    int read_wants_write; /* SSL_read asked for a writable socket */
    int write_wants_read; /* SSL_write asked for a readable socket */
    uint64_t id;
    char peer[AL_ADDR_STRLEN];
};

enum req_state { RQ_NEW, RQ_RESOLVE, RQ_RESOLVED, RQ_CONNECT, RQ_TLS, RQ_ACTIVE, RQ_DONE };
enum resp_state { RS_HEAD, RS_BODY };
enum body_mode { BM_NONE, BM_LENGTH, BM_CHUNKED, BM_EOF };
enum chunk_state {
    CK_SIZE,       /* hex digits */
    CK_SIZE_WS,    /* whitespace after the digits, before ';' or CR */
    CK_EXT,        /* chunk extensions up to CR */
    CK_SIZE_LF,    /* LF ending the size line */
    CK_DATA,       /* chunk bytes */
    CK_DATA_CR,    /* CR after the chunk */
    CK_DATA_LF,    /* LF after the chunk */
    CK_TRAILER,    /* start of a trailer line (or of the final empty line) */
    CK_TRAILER_IN, /* inside a trailer line */
    CK_TRAILER_LF, /* LF ending a trailer line */
    CK_END_LF      /* LF ending the chunked body */
};

struct rl_ureq {
    struct rl_upstream *u;
    struct rl_ureq *prev, *next;
    struct rl_ureq_cbs cbs;
    void *user;
    uint64_t id;
    enum req_state st;
    int finished; /* on_end/on_error delivered or cancelled: no more callbacks */

    /* request */
    int idempotent, is_head;
    int64_t clen; /* declared body length; -1 = chunked */
    uint64_t body_queued;
    int end_called, body_done;
    struct rl_buf out; /* head and body bytes not yet written, from out_off */
    size_t out_off;
    struct rl_buf replay; /* everything queued, for the one retry */
    int replay_ok;
    size_t want_low;
    int want_armed, writable_due;
    int sent;       /* request fully written */
    int write_dead; /* writing failed; the response may still come */
    int write_err;

    /* connection */
    struct uconn *c;
    struct al_resolve_req *rq;
    int resolve_status;
    size_t ndenied;
    struct sockaddr_storage addr[AL_RESOLVE_MAX];
    socklen_t alen[AL_RESOLVE_MAX];
    size_t naddr, ai;
    int last_err;
    int retried, fresh_only;

    /* response */
    enum resp_state rs;
    http_parser hp;
    struct rl_buf head;
    int hs_prev;       /* previous head byte, -1 at start */
    size_t hs_line;    /* bytes on the current head line */
    unsigned hs_lines; /* complete head lines */
    struct rl_h1_header f[MAX_FIELDS];
    size_t nf;
    int f_in_value;
    const char *why; /* reason for the failure being reported */
    int ninterim;
    int status, minor;
    int got_bytes; /* a response byte arrived on the current connection */
    enum body_mode bm;
    uint64_t remain;
    enum chunk_state ck;
    size_t ck_line;
    unsigned ck_digits;
    size_t trailer_bytes;
    int keep;     /* the connection may carry another exchange */
    int complete; /* response ended */
    int extra;    /* bytes followed the response */
    int paused;
    struct rl_buf in; /* bytes read while paused, from in_off */
    size_t in_off;

    /* timing */
    ev_timer timer; /* the nearest deadline of the current state */
    ev_timer kick;  /* work for the next loop turn */
    ev_tstamp conn_deadline, attempt_deadline, head_deadline, last_read, last_write;
};

struct rl_upstream {
    struct ev_loop *loop;
    struct al_resolver *resolver;
    int https;
    int host_is_ip;
    int port;
    char host[HOST_MAX];          /* lowercased name or IP literal (IPv6 without []) */
    char hostport[HOST_MAX + 10]; /* Host header: host[:port], IPv6 in [] */
    char dest[HOST_MAX + 20];     /* credstore destination */
    char *base_path;
    SSL_CTX *ctx;
    struct rl_cidr allow[RL_UPSTREAM_MAX_ALLOW];
    size_t nallow;
    unsigned addr_flags;
    struct sockaddr_storage fixed[AL_RESOLVE_MAX]; /* opts.addrs: dialled instead of resolving */
    socklen_t fixed_len[AL_RESOLVE_MAX];
    size_t nfixed;
    double connect_timeout, head_timeout, idle_timeout, pool_idle;
    size_t max_idle, max_head;
    struct uconn *idle, *busy, *dead_conns;
    size_t nidle;
    struct rl_ureq *reqs, *dead_reqs;
    ev_timer reaper;
    int depth;        /* user callbacks running */
    int free_pending; /* rl_upstream_free() ran inside a callback */
    uint64_t next_req, next_conn;
};

#define LIST_ADD(head, x)                                                                          \
    do {                                                                                           \
        (x)->prev = NULL;                                                                          \
        (x)->next = (head);                                                                        \
        if (head)                                                                                  \
            (head)->prev = (x);                                                                    \
        (head) = (x);                                                                              \
    } while (0)
#define LIST_DEL(head, x)                                                                          \
    do {                                                                                           \
        if ((x)->prev)                                                                             \
            (x)->prev->next = (x)->next;                                                           \
        else                                                                                       \
            (head) = (x)->next;                                                                    \
        if ((x)->next)                                                                             \
            (x)->next->prev = (x)->prev;                                                           \
        (x)->prev = (x)->next = NULL;                                                              \
    } while (0)

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_idle_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void req_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void req_kick_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void req_acquire(struct rl_ureq *r);
static void req_read(struct rl_ureq *r);
static void req_flush(struct rl_ureq *r);
static void conn_update(struct uconn *c);

static size_t pending(const struct rl_ureq *r)
{
    return r->out.len - r->out_off;
}

/* ------------------------------------------------------------- lifetimes */

static void schedule_reap(struct rl_upstream *u)
{
    if (!ev_is_active(&u->reaper)) {
        ev_timer_set(&u->reaper, 0., 0.);
        ev_timer_start(u->loop, &u->reaper);
    }
}

static void req_destroy(struct rl_ureq *r)
{
    rl_buf_cleanup(&r->out);
    rl_buf_cleanup(&r->replay);
    rl_buf_cleanup(&r->head);
    rl_buf_cleanup(&r->in);
    free(r);
}

static void upstream_destroy(struct rl_upstream *u)
{
    ev_timer_stop(u->loop, &u->reaper);
    SSL_CTX_free(u->ctx);
    free(u->base_path);
    free(u);
}

static void reap_all(struct rl_upstream *u)
{
    while (u->dead_reqs) {
        struct rl_ureq *r = u->dead_reqs;
        LIST_DEL(u->dead_reqs, r);
        req_destroy(r);
    }
    while (u->dead_conns) {
        struct uconn *c = u->dead_conns;
        LIST_DEL(u->dead_conns, c);
        free(c);
    }
}

static void reaper_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rl_upstream *u = w->data;
    (void)loop;
    (void)revents;
    reap_all(u);
    if (u->free_pending && u->depth == 0)
        upstream_destroy(u);
}

/* Closes the socket now; the struct is freed by the reaper. */
static void conn_close(struct uconn *c)
{
    struct rl_upstream *u = c->u;

    if (c->where == CL_DEAD)
        return;
    ev_io_stop(u->loop, &c->io);
    ev_timer_stop(u->loop, &c->idle_t);
    if (c->where == CL_IDLE) {
        LIST_DEL(u->idle, c);
        u->nidle--;
    } else if (c->where == CL_BUSY) {
        LIST_DEL(u->busy, c);
    }
    SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->req && c->req->c == c)
        c->req->c = NULL;
    c->req = NULL;
    c->where = CL_DEAD;
    LIST_ADD(u->dead_conns, c);
    schedule_reap(u);
    AL_LOG_DEBUG("upstream.conn_close", "upstream=%s conn=%llu", u->dest,
                 (unsigned long long)c->id);
}

static struct uconn *conn_new(struct rl_upstream *u, int fd, const struct sockaddr *sa)
{
    struct uconn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->u = u;
    c->fd = fd;
    c->id = ++u->next_conn;
    al_addr_format(sa, c->peer, sizeof(c->peer));
    ev_io_init(&c->io, conn_io_cb, fd, 0);
    c->io.data = c;
    ev_timer_init(&c->idle_t, conn_idle_cb, 0., 0.);
    c->idle_t.data = c;
    c->where = CL_BUSY;
    LIST_ADD(u->busy, c);
    return c;
}

static void set_events(struct uconn *c, int events)
{
    if (c->io_events == events && (events == 0 || ev_is_active(&c->io)))
        return;
    ev_io_stop(c->u->loop, &c->io);
    c->io_events = events;
    if (events) {
        ev_io_set(&c->io, c->fd, events);
        ev_io_start(c->u->loop, &c->io);
    }
}

/* ------------------------------------------------------------- socket I/O */

/* Bytes read, 0 at a clean end (EOF; TLS close_notify), AL_ERR_AGAIN,
 * AL_ERR_CLOSED (TLS connection cut without close_notify), AL_ERR_TLS or
 * -errno. */
static ssize_t conn_read(struct uconn *c, uint8_t *buf, size_t n)
{
    int r;

    if (!c->ssl) {
        ssize_t got = read(c->fd, buf, n);
        if (got < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? AL_ERR_AGAIN
                                                                               : -errno;
        return got;
    }
    c->read_wants_write = 0;
    ERR_clear_error();
    errno = 0;
    r = SSL_read(c->ssl, buf, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (r > 0)
        return r;
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return AL_ERR_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        c->read_wants_write = 1;
        return AL_ERR_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        return errno ? -errno : AL_ERR_CLOSED;
    case SSL_ERROR_SSL:
        if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
            return AL_ERR_CLOSED;
        return AL_ERR_TLS;
    default:
        return AL_ERR_TLS;
    }
}

/* Bytes written, AL_ERR_AGAIN, AL_ERR_TLS or -errno. */
static ssize_t conn_write(struct uconn *c, const uint8_t *buf, size_t n)
{
    int w;

    if (!c->ssl) {
        ssize_t put = send(c->fd, buf, n, MSG_NOSIGNAL);
        if (put < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? AL_ERR_AGAIN
                                                                               : -errno;
        return put;
    }
    c->write_wants_read = 0;
    ERR_clear_error();
    errno = 0;
    w = SSL_write(c->ssl, buf, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (w > 0)
        return w;
    switch (SSL_get_error(c->ssl, w)) {
    case SSL_ERROR_WANT_WRITE:
        return AL_ERR_AGAIN;
    case SSL_ERROR_WANT_READ:
        c->write_wants_read = 1;
        return AL_ERR_AGAIN;
    case SSL_ERROR_SYSCALL:
        return errno ? -errno : AL_ERR_CLOSED;
    default:
        return AL_ERR_TLS;
    }
}

/* An idle connection must have nothing to say: any byte or an end means
 * the server is closing it (TLS 1.3 session tickets are consumed by
 * SSL_read and leave it alive). Returns 0 alive, -1 dead. */
static int conn_probe(struct uconn *c)
{
    uint8_t b;
    ssize_t n;

    if (!c->ssl) {
        n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        return (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) ? 0 : -1;
    }
    n = conn_read(c, &b, 1);
    OPENSSL_cleanse(&b, 1);
    return n == AL_ERR_AGAIN ? 0 : -1;
}

/* ------------------------------------------------------------------ pool */

static void pool_put(struct uconn *c)
{
    struct rl_upstream *u = c->u;
    double t = u->pool_idle;

    if (u->nidle >= u->max_idle) {
        struct uconn *oldest = u->idle;
        while (oldest && oldest->next)
            oldest = oldest->next;
        if (oldest)
            conn_close(oldest);
    }
    LIST_DEL(u->busy, c);
    LIST_ADD(u->idle, c);
    c->where = CL_IDLE;
    u->nidle++;
    c->req = NULL;
    c->read_wants_write = c->write_wants_read = 0;
    if (c->keep_s > 0 && c->keep_s < t)
        t = c->keep_s;
    ev_timer_set(&c->idle_t, t, 0.);
    ev_timer_start(u->loop, &c->idle_t);
    set_events(c, EV_READ);
    AL_LOG_DEBUG("upstream.conn_pooled", "upstream=%s conn=%llu idle=%zu", u->dest,
                 (unsigned long long)c->id, u->nidle);
}

static struct uconn *pool_take(struct rl_upstream *u)
{
    struct uconn *c = u->idle;

    if (!c)
        return NULL;
    LIST_DEL(u->idle, c);
    u->nidle--;
    ev_timer_stop(u->loop, &c->idle_t);
    LIST_ADD(u->busy, c);
    c->where = CL_BUSY;
    return c;
}

static void conn_idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_close(w->data);
}

/* ------------------------------------------------- callbacks and endings */

static void cb_head(struct rl_ureq *r, const struct rl_h1_header *h, size_t n)
{
    if (!r->cbs.on_head)
        return;
    r->u->depth++;
    r->cbs.on_head(r, r->status, h, n, r->user);
    r->u->depth--;
}

static void cb_data(struct rl_ureq *r, const uint8_t *d, size_t n)
{
    if (!r->cbs.on_data || n == 0)
        return;
    r->u->depth++;
    r->cbs.on_data(r, d, n, r->user);
    r->u->depth--;
}

static void req_check_writable(struct rl_ureq *r)
{
    if (!r->want_armed || pending(r) > r->want_low || r->finished)
        return;
    r->want_armed = 0;
    if (!r->cbs.on_writable)
        return;
    r->u->depth++;
    r->cbs.on_writable(r, r->user);
    r->u->depth--;
}

/* Ends the request: stops its watchers and moves it to the reaper's list
 * (before any final callback runs, so rl_upstream_free() from inside that
 * callback no longer sees it as in flight). */
static void req_end_common(struct rl_ureq *r)
{
    struct rl_upstream *u = r->u;

    r->finished = 1;
    r->st = RQ_DONE;
    ev_timer_stop(u->loop, &r->timer);
    ev_timer_stop(u->loop, &r->kick);
    if (r->rq) {
        al_resolve_cancel(r->rq);
        r->rq = NULL;
    }
    LIST_DEL(u->reqs, r);
    LIST_ADD(u->dead_reqs, r);
    schedule_reap(u);
}

static void req_fail(struct rl_ureq *r, int err, const char *why)
{
    if (r->finished)
        return;
    AL_LOG_INFO("upstream.error", "upstream=%s req=%llu conn=%llu code=%d reason=\"%s\"",
                r->u->dest, (unsigned long long)r->id, r->c ? (unsigned long long)r->c->id : 0ULL,
                err, why);
    if (r->c)
        conn_close(r->c);
    req_end_common(r);
    r->u->depth++;
    r->cbs.on_error(r, err, why, r->user);
    r->u->depth--;
}

static void req_finish(struct rl_ureq *r)
{
    struct uconn *c = r->c;
    int reuse =
        r->keep && r->body_done && r->sent && !r->write_dead && !r->extra && !r->u->free_pending;

    if (c) {
        if (c->ssl && SSL_pending(c->ssl) > 0)
            reuse = 0;
        r->c = NULL;
        c->req = NULL;
        c->exchanges++;
        if (reuse)
            pool_put(c);
        else
            conn_close(c);
    }
    req_end_common(r);
    r->u->depth++;
    r->cbs.on_end(r, r->user);
    r->u->depth--;
}

static void req_kick(struct rl_ureq *r)
{
    if (!ev_is_active(&r->kick)) {
        ev_timer_set(&r->kick, 0., 0.);
        ev_timer_start(r->u->loop, &r->kick);
    }
}

/* --------------------------------------------------------------- timers */

static ev_tstamp earliest(ev_tstamp a, ev_tstamp b)
{
    if (a <= 0)
        return b;
    if (b <= 0)
        return a;
    return a < b ? a : b;
}

static ev_tstamp req_deadline(const struct rl_ureq *r)
{
    ev_tstamp d = 0;

    switch (r->st) {
    case RQ_RESOLVE:
    case RQ_RESOLVED:
    case RQ_TLS:
        return r->conn_deadline;
    case RQ_CONNECT:
        return earliest(r->conn_deadline, r->attempt_deadline);
    case RQ_ACTIVE:
        if (r->rs == RS_HEAD && (r->sent || r->write_dead))
            d = r->head_deadline;
        if (r->rs == RS_BODY && !r->paused)
            d = earliest(d, r->last_read + r->u->idle_timeout);
        if (!r->paused && !r->write_dead && pending(r) > 0)
            d = earliest(d, r->last_write + r->u->idle_timeout);
        return d;
    default:
        return 0;
    }
}

static void req_arm(struct rl_ureq *r)
{
    struct ev_loop *loop = r->u->loop;
    ev_tstamp d, now;

    ev_timer_stop(loop, &r->timer);
    if (r->finished)
        return;
    d = req_deadline(r);
    if (d <= 0)
        return;
    now = ev_now(loop);
    ev_timer_set(&r->timer, d > now ? d - now : 0., 0.);
    ev_timer_start(loop, &r->timer);
}

static void dial_next(struct rl_ureq *r);

static void req_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rl_ureq *r = w->data;
    ev_tstamp now = ev_now(loop);
    double idle = r->u->idle_timeout;
    (void)revents;

    switch (r->st) {
    case RQ_RESOLVE:
    case RQ_RESOLVED:
    case RQ_TLS:
        if (now >= r->conn_deadline) {
            req_fail(r, AL_ERR_TIMEOUT, "upstream connect timed out");
            return;
        }
        break;
    case RQ_CONNECT:
        if (now >= r->conn_deadline) {
            req_fail(r, AL_ERR_TIMEOUT, "upstream connect timed out");
            return;
        }
        if (now >= r->attempt_deadline && r->c) {
            AL_LOG_INFO("upstream.connect_failed", "upstream=%s conn=%llu addr=%s reason=timeout",
                        r->u->dest, (unsigned long long)r->c->id, r->c->peer);
            r->last_err = AL_ERR_TIMEOUT;
            conn_close(r->c);
            dial_next(r);
            return;
        }
        break;
    case RQ_ACTIVE:
        if (r->rs == RS_HEAD && (r->sent || r->write_dead) && now >= r->head_deadline) {
            req_fail(r, AL_ERR_TIMEOUT, "upstream response timed out");
            return;
        }
        if (r->rs == RS_BODY && !r->paused && now >= r->last_read + idle) {
            req_fail(r, AL_ERR_TIMEOUT, "upstream response stalled");
            return;
        }
        if (!r->paused && !r->write_dead && pending(r) > 0 && now >= r->last_write + idle) {
            req_fail(r, AL_ERR_TIMEOUT, "upstream stopped reading the request");
            return;
        }
        break;
    default:
        return;
    }
    req_arm(r);
}

/* -------------------------------------------------------- response head */

static int is_tchar(unsigned char ch)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch && strchr(extra, ch));
}

static int head_bad(struct rl_ureq *r, const char *why)
{
    r->why = why;
    return AL_ERR_PROTO;
}

/* Takes head bytes from d. Returns 1 when the blank line ending the head
 * was taken (*used bytes), 0 when all n were taken and more are needed, or
 * AL_ERR_PROTO / AL_ERR_TOOBIG (r->why set). */
static int head_take(struct rl_ureq *r, const uint8_t *d, size_t n, size_t *used)
{
    size_t i;
    int done = 0, rc;

    for (i = 0; i < n && !done; i++) {
        uint8_t b = d[i];
        if (r->hs_prev == '\r' && b != '\n')
            return head_bad(r, "malformed upstream response head");
        if (b == '\n') {
            if (r->hs_prev != '\r')
                return head_bad(r, "malformed upstream response head");
            if (r->hs_line == 1) { /* the line held only CR */
                if (r->hs_lines == 0)
                    return head_bad(r, "malformed upstream response head");
                done = 1;
            }
            r->hs_lines++;
            r->hs_line = 0;
            r->hs_prev = b;
            continue;
        }
        if (r->hs_line == 0 && (b == ' ' || b == '\t'))
            return head_bad(r, "malformed upstream response head"); /* obs-fold */
        if ((b < 0x20 && b != '\t' && b != '\r') || b == 0x7f)
            return head_bad(r, "malformed upstream response head");
        r->hs_line++;
        r->hs_prev = b;
    }
    rc = rl_buf_append(&r->head, d, i);
    if (rc == AL_ERR_TOOBIG) {
        r->why = "upstream response head too large";
        return AL_ERR_TOOBIG;
    }
    if (rc < 0) {
        r->why = "out of memory";
        return rc;
    }
    *used = i;
    return done;
}

static void head_reset(struct rl_ureq *r)
{
    rl_buf_reset(&r->head);
    r->hs_prev = -1;
    r->hs_line = 0;
    r->hs_lines = 0;
    r->nf = 0;
    r->f_in_value = 0;
}

static int hp_field(http_parser *p, const char *at, size_t len)
{
    struct rl_ureq *r = p->data;
    struct rl_h1_header *h;
    char *w = (char *)at; /* points into r->head, which is ours */

    for (size_t i = 0; i < len; i++)
        if (w[i] >= 'A' && w[i] <= 'Z')
            w[i] = (char)(w[i] - 'A' + 'a');
    if (r->nf && !r->f_in_value) {
        h = &r->f[r->nf - 1];
        if (at == h->name + h->name_len) {
            h->name_len += len;
            return 0;
        }
    }
    if (r->nf == MAX_FIELDS) {
        r->why = "too many upstream response header fields";
        return -1;
    }
    h = &r->f[r->nf++];
    h->name = at;
    h->name_len = len;
    h->value = at + len;
    h->value_len = 0;
    r->f_in_value = 0;
    return 0;
}

static int hp_value(http_parser *p, const char *at, size_t len)
{
    struct rl_ureq *r = p->data;
    struct rl_h1_header *h;

    if (!r->nf)
        return -1;
    h = &r->f[r->nf - 1];
    if (r->f_in_value) {
        if (at != h->value + h->value_len)
            return -1; /* a second piece: folded value */
        h->value_len += len;
        return 0;
    }
    h->value = at;
    h->value_len = len;
    r->f_in_value = 1;
    return 0;
}

static int hp_headers_complete(http_parser *p)
{
    (void)p;
    return 1; /* no body for http_parser: the framing is decoded here */
}

static const http_parser_settings hp_settings = {
    .on_header_field = hp_field,
    .on_header_value = hp_value,
    .on_headers_complete = hp_headers_complete,
};

/* "HTTP/1.x SP 3DIGIT (SP reason | CR)" and "name: value" lines. */
static int head_lines_ok(const uint8_t *p, size_t n)
{
    size_t i = 0, start;

    if (n < 15 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9' || p[8] != ' ' ||
        p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9' ||
        (p[12] != ' ' && p[12] != '\r'))
        return 0;
    while (i < n && p[i] != '\n')
        i++;
    for (start = ++i; i < n; start = ++i) {
        size_t colon = start;
        while (i < n && p[i] != '\n')
            i++;
        if (i - start == 1) /* the blank line */
            return i + 1 == n;
        while (colon < i && p[colon] != ':') {
            if (!is_tchar(p[colon]))
                return 0;
            colon++;
        }
        if (colon == start || colon >= i)
            return 0;
    }
    return 0;
}

static void trim(const char **v, size_t *n)
{
    while (*n && ((*v)[0] == ' ' || (*v)[0] == '\t')) {
        (*v)++;
        (*n)--;
    }
    while (*n && ((*v)[*n - 1] == ' ' || (*v)[*n - 1] == '\t'))
        (*n)--;
}

static int name_is(const struct rl_h1_header *h, const char *name)
{
    size_t n = strlen(name);
    return h->name_len == n && memcmp(h->name, name, n) == 0;
}

static int value_is(const char *v, size_t n, const char *want)
{
    return n == strlen(want) && strncasecmp(v, want, n) == 0;
}

/* Does a comma-separated list contain token tok (case-insensitive)? */
static int list_has(const char *v, size_t n, const char *tok, size_t tlen)
{
    size_t i = 0;

    while (i < n) {
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        const char *t = v + s;
        size_t tl = i - s;
        trim(&t, &tl);
        if (tl == tlen && strncasecmp(t, tok, tlen) == 0)
            return 1;
        i++;
    }
    return 0;
}

static int field_listed_in_connection(const struct rl_ureq *r, const struct rl_h1_header *h)
{
    for (size_t i = 0; i < r->nf; i++)
        if (name_is(&r->f[i], "connection") &&
            list_has(r->f[i].value, r->f[i].value_len, h->name, h->name_len))
            return 1;
    return 0;
}

static int hop_by_hop(const struct rl_ureq *r, const struct rl_h1_header *h)
{
    static const char *const names[] = {
        "connection",        "keep-alive", "proxy-connection",   "te", "trailer",
        "transfer-encoding", "upgrade",    "proxy-authenticate", NULL};
    for (int i = 0; names[i]; i++)
        if (name_is(h, names[i]))
            return 1;
    return field_listed_in_connection(r, h);
}

/* "timeout=N" in a Keep-Alive field: seconds the server keeps an idle
 * connection. Returns N or 0. */
static double keepalive_timeout(const char *v, size_t n)
{
    for (size_t i = 0; i + 8 <= n; i++) {
        if (strncasecmp(v + i, "timeout=", 8) == 0 &&
            (i == 0 || v[i - 1] == ' ' || v[i - 1] == ',' || v[i - 1] == '\t')) {
            double t = 0;
            size_t j = i + 8;
            if (j >= n || v[j] < '0' || v[j] > '9')
                return 0;
            for (; j < n && v[j] >= '0' && v[j] <= '9' && t < 1e6; j++)
                t = t * 10 + (v[j] - '0');
            return t;
        }
    }
    return 0;
}

/* Checks the framing fields of a final head and decides the body mode.
 * Returns 0 or AL_ERR_PROTO (r->why set). */
static int head_semantics(struct rl_ureq *r)
{
    int ncl = 0, nte = 0, conn_close_tok = 0, conn_keep_tok = 0;
    uint64_t cl = 0;
    double ka = 0;

    for (size_t i = 0; i < r->nf; i++) {
        struct rl_h1_header *h = &r->f[i];
        const char *v = h->value;
        size_t vn = h->value_len;
        trim(&v, &vn);
        h->value = v;
        h->value_len = vn;
        if (name_is(h, "content-length")) {
            if (++ncl > 1 || vn == 0 || vn > 18)
                return head_bad(r, "bad upstream content-length");
            for (size_t k = 0; k < vn; k++) {
                if (v[k] < '0' || v[k] > '9')
                    return head_bad(r, "bad upstream content-length");
                cl = cl * 10 + (uint64_t)(v[k] - '0');
            }
        } else if (name_is(h, "transfer-encoding")) {
            if (++nte > 1 || !value_is(v, vn, "chunked"))
                return head_bad(r, "unsupported upstream transfer-encoding");
        } else if (name_is(h, "content-encoding")) {
            if (!value_is(v, vn, "identity"))
                return head_bad(r, "upstream response is content-encoded");
        } else if (name_is(h, "connection")) {
            conn_close_tok |= list_has(v, vn, "close", 5);
            conn_keep_tok |= list_has(v, vn, "keep-alive", 10);
        } else if (name_is(h, "keep-alive")) {
            ka = keepalive_timeout(v, vn);
        }
    }
    if (ncl && nte)
        return head_bad(r, "upstream response has content-length and transfer-encoding");
    if (r->is_head || r->status == 204 || r->status == 304) {
        r->bm = BM_NONE;
    } else if (nte) {
        r->bm = BM_CHUNKED;
        r->ck = CK_SIZE;
        r->remain = 0;
        r->ck_digits = 0;
        r->ck_line = 0;
    } else if (ncl) {
        r->bm = cl ? BM_LENGTH : BM_NONE;
        r->remain = cl;
    } else {
        r->bm = BM_EOF;
    }
    r->keep = (r->minor >= 1 ? !conn_close_tok : conn_keep_tok) && r->bm != BM_EOF;
    if (r->c) {
        /* leave a margin before the server's own idle close */
        r->c->keep_s = ka > 0 ? ka - 1 : 0;
        if (ka > 0 && ka <= 1)
            r->keep = 0;
    }
    return 0;
}

/* Delivers a complete final head. Returns 0, or -1 when the request ended. */
static int head_deliver(struct rl_ureq *r)
{
    struct rl_h1_header out[MAX_FIELDS];
    size_t n = 0;

    for (size_t i = 0; i < r->nf; i++)
        if (!hop_by_hop(r, &r->f[i]))
            out[n++] = r->f[i];
    r->rs = RS_BODY;
    r->last_read = ev_now(r->u->loop);
    cb_head(r, out, n);
    if (r->finished)
        return -1;
    if (r->bm == BM_NONE)
        r->complete = 1;
    else
        req_arm(r);
    return 0;
}

/* A complete head is in r->head. Returns 0 (interim head skipped, or final
 * head delivered) or -1 when the request ended (failed or cancelled). */
static int head_done(struct rl_ureq *r)
{
    size_t m;

    if (!head_lines_ok(r->head.p, r->head.len)) {
        req_fail(r, AL_ERR_PROTO, "malformed upstream response head");
        return -1;
    }
    http_parser_init(&r->hp, HTTP_RESPONSE);
    r->hp.data = r;
    r->nf = 0;
    r->f_in_value = 0;
    r->why = NULL;
    m = http_parser_execute(&r->hp, &hp_settings, (const char *)r->head.p, r->head.len);
    if (HTTP_PARSER_ERRNO(&r->hp) != HPE_OK || m != r->head.len || r->hp.http_major != 1) {
        req_fail(r, AL_ERR_PROTO, r->why ? r->why : "malformed upstream response head");
        return -1;
    }
    r->status = (int)r->hp.status_code;
    r->minor = r->hp.http_minor;
    if (r->status < 100 || r->status > 599) {
        req_fail(r, AL_ERR_PROTO, "malformed upstream response status");
        return -1;
    }
    if (r->status < 200) {
        if (r->status == 101) {
            req_fail(r, AL_ERR_PROTO, "upstream switched protocols");
            return -1;
        }
        if (++r->ninterim > MAX_INTERIM) {
            req_fail(r, AL_ERR_PROTO, "too many upstream interim responses");
            return -1;
        }
        head_reset(r);
        return 0;
    }
    if (head_semantics(r) < 0) {
        req_fail(r, AL_ERR_PROTO, r->why);
        return -1;
    }
    return head_deliver(r);
}

/* -------------------------------------------------------- response body */

static int hexval(uint8_t b)
{
    if (b >= '0' && b <= '9')
        return b - '0';
    if (b >= 'a' && b <= 'f')
        return b - 'a' + 10;
    if (b >= 'A' && b <= 'F')
        return b - 'A' + 10;
    return -1;
}

static int ck_bad(struct rl_ureq *r)
{
    r->why = "malformed upstream chunked body";
    return AL_ERR_PROTO;
}

/* One framing byte of a chunked body (any state but CK_DATA). Returns 0 or
 * AL_ERR_PROTO / AL_ERR_TOOBIG. */
static int chunk_byte(struct rl_ureq *r, uint8_t b)
{
    int hv;
    int ctl = (b < 0x20 && b != '\t') || b == 0x7f;

    switch (r->ck) {
    case CK_SIZE:
        hv = hexval(b);
        if (hv >= 0) {
            if (++r->ck_digits > 15)
                return ck_bad(r);
            r->remain = r->remain * 16 + (uint64_t)hv;
        } else if (r->ck_digits && (b == ' ' || b == '\t')) {
            r->ck = CK_SIZE_WS;
        } else if (r->ck_digits && b == ';') {
            r->ck = CK_EXT;
        } else if (r->ck_digits && b == '\r') {
            r->ck = CK_SIZE_LF;
        } else {
            return ck_bad(r);
        }
        break;
    case CK_SIZE_WS:
        if (b == ';')
            r->ck = CK_EXT;
        else if (b == '\r')
            r->ck = CK_SIZE_LF;
        else if (b != ' ' && b != '\t')
            return ck_bad(r);
        break;
    case CK_EXT:
        if (b == '\r')
            r->ck = CK_SIZE_LF;
        else if (ctl)
            return ck_bad(r);
        break;
    case CK_SIZE_LF:
        if (b != '\n')
            return ck_bad(r);
        r->ck_line = 0;
        r->ck = r->remain ? CK_DATA : CK_TRAILER;
        return 0;
    case CK_DATA_CR:
        if (b != '\r')
            return ck_bad(r);
        r->ck = CK_DATA_LF;
        return 0;
    case CK_DATA_LF:
        if (b != '\n')
            return ck_bad(r);
        r->ck = CK_SIZE;
        r->ck_digits = 0;
        r->ck_line = 0;
        r->remain = 0;
        return 0;
    case CK_TRAILER:
        if (b == '\r') {
            r->ck = CK_END_LF;
            return 0;
        }
        if (b == ' ' || b == '\t' || ctl)
            return ck_bad(r);
        r->ck = CK_TRAILER_IN;
        break;
    case CK_TRAILER_IN:
        if (b == '\r')
            r->ck = CK_TRAILER_LF;
        else if (ctl)
            return ck_bad(r);
        break;
    case CK_TRAILER_LF:
        if (b != '\n')
            return ck_bad(r);
        r->ck = CK_TRAILER;
        return 0;
    case CK_END_LF:
        if (b != '\n')
            return ck_bad(r);
        r->complete = 1;
        return 0;
    case CK_DATA:
        return ck_bad(r);
    }
    if (r->ck == CK_TRAILER_IN || r->ck == CK_TRAILER_LF) {
        if (++r->trailer_bytes > r->u->max_head) {
            r->why = "upstream response trailers too large";
            return AL_ERR_TOOBIG;
        }
    } else if (++r->ck_line > MAX_CHUNK_LINE) {
        return ck_bad(r);
    }
    return 0;
}

/* Takes body bytes from d, delivering payload with on_data. Stops early
 * when paused or complete. Returns 0 (*used bytes taken) or -1 when the
 * request ended (failed or cancelled). */
static int body_take(struct rl_ureq *r, const uint8_t *d, size_t n, size_t *used)
{
    size_t i = 0;

    while (i < n && !r->paused && !r->complete) {
        if (r->bm == BM_EOF || (r->bm == BM_CHUNKED && r->ck == CK_DATA) || r->bm == BM_LENGTH) {
            size_t k = n - i;
            if (r->bm != BM_EOF && k > r->remain)
                k = (size_t)r->remain;
            if (r->bm != BM_EOF) {
                r->remain -= k;
                if (r->remain == 0) {
                    if (r->bm == BM_LENGTH)
                        r->complete = 1;
                    else
                        r->ck = CK_DATA_CR;
                }
            }
            cb_data(r, d + i, k);
            i += k;
            if (r->finished)
                return -1;
            continue;
        }
        int rc = chunk_byte(r, d[i]);
        if (rc < 0) {
            req_fail(r, rc, r->why);
            return -1;
        }
        i++;
    }
    *used = i;
    return 0;
}

/* ------------------------------------------------------ response intake */

/* Feeds n response bytes. *used is how many were taken (fewer than n only
 * when paused). Returns 0, or -1 when the request ended (completed, failed
 * or cancelled): r must not be touched any further by I/O code. */
static int feed(struct rl_ureq *r, const uint8_t *d, size_t n, size_t *used)
{
    size_t off = 0, k;
    int rc;

    *used = 0;
    if (n)
        r->got_bytes = 1;
    while (off < n && !r->paused) {
        k = 0;
        if (r->rs == RS_HEAD) {
            rc = head_take(r, d + off, n - off, &k);
            off += k;
            if (rc < 0) {
                req_fail(r, rc, r->why);
                return -1;
            }
            if (rc == 1 && head_done(r) < 0)
                return -1;
        } else {
            if (body_take(r, d + off, n - off, &k) < 0)
                return -1;
            off += k;
        }
        if (r->complete) {
            if (off < n)
                r->extra = 1;
            req_finish(r);
            return -1;
        }
    }
    *used = off;
    return 0;
}

static int stash(struct rl_ureq *r, const uint8_t *d, size_t n)
{
    if (r->in_off == r->in.len) {
        r->in.len = 0;
        r->in_off = 0;
    }
    return rl_buf_append(&r->in, d, n);
}

/* Feeds bytes kept while paused. Returns 0 or -1 when the request ended. */
static int drain_stash(struct rl_ureq *r)
{
    while (r->in_off < r->in.len && !r->paused) {
        size_t used = 0;
        size_t off = r->in_off;
        r->in_off = r->in.len; /* feed() may end the request: consider them taken */
        if (feed(r, r->in.p + off, r->in.len - off, &used) < 0)
            return -1;
        OPENSSL_cleanse(r->in.p + off, used);
        r->in_off = off + used;
    }
    if (r->in_off == r->in.len) {
        r->in.len = 0;
        r->in_off = 0;
    }
    return 0;
}

static int can_retry(const struct rl_ureq *r)
{
    return !r->retried && r->c && r->c->exchanges > 0 && !r->got_bytes && r->idempotent &&
           r->body_done && r->replay_ok;
}

static void req_retry(struct rl_ureq *r)
{
    struct rl_upstream *u = r->u;

    AL_LOG_INFO("upstream.retry",
                "upstream=%s req=%llu conn=%llu reason=\"reused connection "
                "closed before the response\"",
                u->dest, (unsigned long long)r->id, (unsigned long long)r->c->id);
    conn_close(r->c);
    r->retried = 1;
    r->fresh_only = 1;
    rl_buf_reset(&r->out);
    r->out_off = 0;
    if (rl_buf_append(&r->out, r->replay.p, r->replay.len) < 0) {
        req_fail(r, AL_ERR_NOMEM, "out of memory");
        return;
    }
    r->sent = r->write_dead = r->write_err = 0;
    r->rs = RS_HEAD;
    head_reset(r);
    r->ninterim = 0;
    r->got_bytes = 0;
    rl_buf_reset(&r->in);
    r->in_off = 0;
    r->st = RQ_NEW;
    ev_timer_stop(u->loop, &r->timer);
    req_acquire(r);
}

/* The socket ended (rc 0) or failed (rc < 0) while reading. */
static void req_read_end(struct rl_ureq *r, int rc)
{
    if (rc == 0 && r->rs == RS_BODY && r->bm == BM_EOF) {
        r->complete = 1;
        r->keep = 0;
        req_finish(r);
        return;
    }
    if (!r->got_bytes) {
        if (can_retry(r)) {
            req_retry(r);
            return;
        }
        if (r->write_dead && r->write_err)
            rc = r->write_err;
        if (rc == 0 || rc == AL_ERR_CLOSED)
            req_fail(r, AL_ERR_PROTO, "upstream closed the connection without a response");
        else if (rc == AL_ERR_TLS)
            req_fail(r, AL_ERR_TLS, "upstream TLS error");
        else
            req_fail(r, rc, "upstream connection failed");
        return;
    }
    if (rc == AL_ERR_TLS)
        req_fail(r, AL_ERR_TLS, "upstream TLS error");
    else if (rc == 0 || rc == AL_ERR_CLOSED)
        req_fail(r, AL_ERR_PROTO, "upstream response truncated");
    else
        req_fail(r, rc, "upstream connection failed");
}

static void req_read(struct rl_ureq *r)
{
    uint8_t buf[READ_CHUNK];
    struct uconn *c = r->c;

    for (int round = 0; round < READ_ROUNDS; round++) {
        size_t used = 0;
        ssize_t n;
        int rc;

        if (r->paused || !c)
            return;
        n = conn_read(c, buf, sizeof(buf));
        if (n == AL_ERR_AGAIN)
            return;
        if (n <= 0) {
            req_read_end(r, (int)n);
            return;
        }
        r->last_read = ev_now(r->u->loop);
        rc = feed(r, buf, (size_t)n, &used);
        if (rc == 0 && used < (size_t)n && stash(r, buf + used, (size_t)n - used) < 0)
            rc = AL_ERR_NOMEM;
        OPENSSL_cleanse(buf, (size_t)n);
        if (rc == AL_ERR_NOMEM) {
            req_fail(r, AL_ERR_NOMEM, "out of memory");
            return;
        }
        if (rc < 0 || r->finished)
            return;
        if (!c->ssl && (size_t)n < sizeof(buf))
            return; /* drained */
    }
    /* OpenSSL may hold decrypted bytes that the socket will not announce */
    if (c->ssl)
        req_kick(r);
}

/* ---------------------------------------------------------- request out */

static void req_check_sent(struct rl_ureq *r)
{
    if (r->sent || !r->body_done || pending(r) > 0 || r->st != RQ_ACTIVE)
        return;
    r->sent = 1;
    r->head_deadline = ev_now(r->u->loop) + r->u->head_timeout;
    req_arm(r);
}

static void req_write_failed(struct rl_ureq *r, int err)
{
    AL_LOG_DEBUG("upstream.write_failed", "upstream=%s req=%llu code=%d", r->u->dest,
                 (unsigned long long)r->id, err);
    r->write_dead = 1;
    r->write_err = err;
    rl_buf_reset(&r->out);
    r->out_off = 0;
    /* the server may have answered before it stopped reading (a 413, a
     * 401): read what it sent before deciding */
    req_arm(r);
    if (!r->paused)
        req_read(r);
    else if (r->c)
        conn_update(r->c);
}

static void req_flush(struct rl_ureq *r)
{
    struct uconn *c = r->c;

    while (r->out_off < r->out.len) {
        ssize_t w = conn_write(c, r->out.p + r->out_off, r->out.len - r->out_off);
        if (w == AL_ERR_AGAIN)
            break;
        if (w < 0) {
            req_write_failed(r, (int)w);
            return;
        }
        /* the head carries the injected credential: no copy stays behind */
        OPENSSL_cleanse(r->out.p + r->out_off, (size_t)w);
        r->out_off += (size_t)w;
        r->last_write = ev_now(r->u->loop);
    }
    if (r->out_off == r->out.len) {
        r->out.len = 0;
        r->out_off = 0;
    }
    req_check_sent(r);
    req_check_writable(r);
}

/* ------------------------------------------------------ connection setup */

static void conn_update(struct uconn *c)
{
    struct rl_ureq *r = c->req;
    int ev = 0;

    if (c->where == CL_DEAD)
        return;
    if (!r) {
        ev = EV_READ;
    } else if (r->st == RQ_CONNECT) {
        ev = EV_WRITE;
    } else if (r->st == RQ_ACTIVE) {
        if (!r->paused || c->write_wants_read)
            ev |= EV_READ;
        if ((pending(r) > 0 && !r->write_dead) || c->read_wants_write)
            ev |= EV_WRITE;
    } else {
        return; /* the handshake sets its own */
    }
    set_events(c, ev);
}

static void req_activate(struct rl_ureq *r)
{
    ev_tstamp now = ev_now(r->u->loop);

    r->st = RQ_ACTIVE;
    r->last_write = r->last_read = now;
    req_arm(r);
    req_flush(r);
    if (r->finished || !r->c)
        return;
    conn_update(r->c);
    req_arm(r);
}

static void req_attach(struct rl_ureq *r, struct uconn *c)
{
    r->c = c;
    c->req = r;
    r->got_bytes = 0;
}

static void tls_step(struct rl_ureq *r)
{
    struct uconn *c = r->c;
    char err[256];
    long vr;
    int rv;

    ERR_clear_error();
    rv = SSL_do_handshake(c->ssl);
    if (rv == 1) {
        const unsigned char *proto = NULL;
        unsigned plen = 0;
        SSL_get0_alpn_selected(c->ssl, &proto, &plen);
        if (plen && (plen != 8 || memcmp(proto, "http/1.1", 8) != 0)) {
            req_fail(r, AL_ERR_TLS, "upstream chose a protocol other than HTTP/1.1");
            return;
        }
        AL_LOG_DEBUG("upstream.tls", "upstream=%s conn=%llu version=%s", r->u->dest,
                     (unsigned long long)c->id, SSL_get_version(c->ssl));
        req_activate(r);
        return;
    }
    switch (SSL_get_error(c->ssl, rv)) {
    case SSL_ERROR_WANT_READ:
        set_events(c, EV_READ);
        return;
    case SSL_ERROR_WANT_WRITE:
        set_events(c, EV_READ | EV_WRITE);
        return;
    default:
        break;
    }
    vr = SSL_get_verify_result(c->ssl);
    if (vr != X509_V_OK) {
        AL_LOG_WARN("upstream.tls_failed",
                    "upstream=%s conn=%llu addr=%s reason=\"certificate: %s\"", r->u->dest,
                    (unsigned long long)c->id, c->peer, X509_verify_cert_error_string(vr));
        req_fail(r, AL_ERR_TLS, "upstream certificate not accepted");
        return;
    }
    al_tls_errstr(err, sizeof(err));
    AL_LOG_WARN("upstream.tls_failed", "upstream=%s conn=%llu addr=%s reason=\"handshake: %s\"",
                r->u->dest, (unsigned long long)c->id, c->peer, err);
    req_fail(r, AL_ERR_TLS, "upstream TLS handshake failed");
}

static void tls_start(struct rl_ureq *r)
{
    struct rl_upstream *u = r->u;
    struct uconn *c = r->c;
    SSL *ssl = SSL_new(u->ctx);
    int ok;

    if (!ssl) {
        req_fail(r, AL_ERR_NOMEM, "out of memory");
        return;
    }
    c->ssl = ssl;
    if (u->host_is_ip) {
        /* no SNI for an address (RFC 6066); the certificate must name it */
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), u->host) == 1;
    } else {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = SSL_set_tlsext_host_name(ssl, u->host) == 1 && SSL_set1_host(ssl, u->host) == 1;
    }
    if (!ok || SSL_set_fd(ssl, c->fd) != 1) {
        req_fail(r, AL_ERR_TLS, "upstream TLS setup failed");
        return;
    }
    SSL_set_connect_state(ssl);
    r->st = RQ_TLS;
    tls_step(r);
}

static void connect_done(struct rl_ureq *r)
{
    struct uconn *c = r->c;
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        AL_LOG_INFO("upstream.connect_failed", "upstream=%s conn=%llu addr=%s reason=\"%s\"",
                    r->u->dest, (unsigned long long)c->id, c->peer, strerror(err));
        r->last_err = -err;
        conn_close(c);
        dial_next(r);
        return;
    }
    AL_LOG_DEBUG("upstream.connect", "upstream=%s conn=%llu addr=%s", r->u->dest,
                 (unsigned long long)c->id, c->peer);
    if (r->u->https)
        tls_start(r);
    else
        req_activate(r);
}

/* Dials the next allowed address; fails the request when none is left. */
static void dial_next(struct rl_ureq *r)
{
    struct rl_upstream *u = r->u;

    while (r->ai < r->naddr) {
        size_t i = r->ai++;
        const struct sockaddr *sa = (const struct sockaddr *)&r->addr[i];
        char abuf[AL_ADDR_STRLEN];
        int one = 1, fd;
        struct uconn *c;

        fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            r->last_err = -errno;
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, sa, r->alen[i]) < 0 && errno != EINPROGRESS) {
            r->last_err = -errno;
            AL_LOG_INFO("upstream.connect_failed", "upstream=%s addr=%s reason=\"%s\"", u->dest,
                        al_addr_format(sa, abuf, sizeof(abuf)), strerror(errno));
            close(fd);
            continue;
        }
        c = conn_new(u, fd, sa);
        if (!c) {
            close(fd);
            req_fail(r, AL_ERR_NOMEM, "out of memory");
            return;
        }
        req_attach(r, c);
        r->st = RQ_CONNECT;
        /* each remaining address gets an equal share of the time left */
        ev_tstamp now = ev_now(u->loop);
        ev_tstamp left = r->conn_deadline - now;
        r->attempt_deadline = now + (left > 0 ? left : 0) / (double)(r->naddr - i);
        conn_update(c);
        req_arm(r);
        return;
    }
    req_fail(r, r->last_err ? r->last_err : AL_ERR_CLOSED, "upstream connection failed");
}

/* Keeps the addresses the policy allows as the ones to dial. */
static void take_addrs(struct rl_ureq *r, const struct sockaddr_storage *addr, const socklen_t *len,
                       size_t n)
{
    struct rl_upstream *u = r->u;
    char abuf[AL_ADDR_STRLEN];

    r->naddr = 0;
    r->ndenied = 0;
    for (size_t i = 0; i < n && i < AL_RESOLVE_MAX; i++) {
        const struct sockaddr *sa = (const struct sockaddr *)&addr[i];
        if (rl_addr_denied_ex(sa, u->allow, u->nallow, u->addr_flags)) {
            r->ndenied++;
            AL_LOG_WARN("upstream.denied", "upstream=%s req=%llu addr=%s", u->dest,
                        (unsigned long long)r->id, al_addr_format(sa, abuf, sizeof(abuf)));
            continue;
        }
        memcpy(&r->addr[r->naddr], &addr[i], len[i]);
        r->alen[r->naddr] = len[i];
        r->naddr++;
    }
}

static void resolve_cb(struct al_resolve_req *q, int status, const struct al_resolve_result *res,
                       void *user)
{
    struct rl_ureq *r = user;
    (void)q;

    r->rq = NULL;
    r->resolve_status = status;
    r->naddr = 0;
    r->ndenied = 0;
    if (status == 0)
        take_addrs(r, res->addr, res->len, res->n);
    /* act from the loop, not from inside c-ares */
    r->st = RQ_RESOLVED;
    req_kick(r);
}

static void req_resolved(struct rl_ureq *r)
{
    int st = r->resolve_status;

    if (st == AL_ERR_NOTFOUND) {
        req_fail(r, AL_ERR_NOTFOUND, "upstream name not found");
        return;
    }
    if (st == AL_ERR_TIMEOUT) {
        req_fail(r, AL_ERR_TIMEOUT, "upstream name resolution timed out");
        return;
    }
    if (st < 0) {
        req_fail(r, st, "upstream name resolution failed");
        return;
    }
    if (r->naddr == 0) {
        req_fail(r, AL_ERR_AUTH, "upstream address denied");
        return;
    }
    r->ai = 0;
    r->last_err = 0;
    dial_next(r);
}

static void req_acquire(struct rl_ureq *r)
{
    struct rl_upstream *u = r->u;
    struct uconn *c;
    int rc;

    if (!r->fresh_only) {
        while ((c = pool_take(u))) {
            if (conn_probe(c) == 0) {
                AL_LOG_DEBUG("upstream.reuse", "upstream=%s req=%llu conn=%llu", u->dest,
                             (unsigned long long)r->id, (unsigned long long)c->id);
                req_attach(r, c);
                req_activate(r);
                return;
            }
            conn_close(c);
        }
    }
    r->conn_deadline = ev_now(u->loop) + u->connect_timeout;
    if (u->nfixed) { /* resolved by the caller: straight to dialling */
        r->resolve_status = 0;
        take_addrs(r, u->fixed, u->fixed_len, u->nfixed);
        r->st = RQ_RESOLVED;
        req_kick(r);
        return;
    }
    r->st = RQ_RESOLVE;
    rc = al_resolve(u->resolver, u->host, u->port, resolve_cb, r, &r->rq);
    if (rc < 0) {
        r->rq = NULL;
        req_fail(r, rc, "upstream name resolution failed");
        return;
    }
    req_arm(r);
}

/* ------------------------------------------------------------ event glue */

static void idle_io(struct uconn *c)
{
    if (conn_probe(c) < 0) {
        AL_LOG_DEBUG("upstream.idle_closed", "upstream=%s conn=%llu", c->u->dest,
                     (unsigned long long)c->id);
        conn_close(c);
    }
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct uconn *c = w->data;
    struct rl_ureq *r = c->req;
    (void)loop;

    if (c->where == CL_DEAD)
        return;
    if (!r) {
        idle_io(c);
        return;
    }
    switch (r->st) {
    case RQ_CONNECT:
        connect_done(r);
        return;
    case RQ_TLS:
        tls_step(r);
        return;
    case RQ_ACTIVE:
        break;
    default:
        return;
    }
    if (pending(r) > 0 && !r->write_dead &&
        ((revents & EV_WRITE) || (c->write_wants_read && (revents & EV_READ)))) {
        req_flush(r);
        if (r->finished || r->c != c)
            return;
    }
    if (!r->paused && ((revents & EV_READ) || (c->read_wants_write && (revents & EV_WRITE)))) {
        req_read(r);
        if (r->finished || r->c != c)
            return;
    }
    conn_update(c);
}

/* Work due outside socket events for an active request. */
static void req_service(struct rl_ureq *r)
{
    if (r->writable_due) {
        r->writable_due = 0;
        req_check_writable(r);
        if (r->finished)
            return;
    }
    if (!r->paused) {
        if (drain_stash(r) < 0)
            return;
        if (!r->paused) {
            req_read(r);
            if (r->finished)
                return;
        }
    }
    if (r->c)
        conn_update(r->c);
    req_arm(r);
}

static void req_kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rl_ureq *r = w->data;
    (void)loop;
    (void)revents;

    if (r->finished)
        return;
    switch (r->st) {
    case RQ_NEW:
        req_acquire(r);
        return;
    case RQ_RESOLVED:
        req_resolved(r);
        return;
    case RQ_ACTIVE:
        req_service(r);
        return;
    default:
        if (r->writable_due) {
            r->writable_due = 0;
            req_check_writable(r);
        }
        return;
    }
}

/* ------------------------------------------------------------ URL parsing */

static int label_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-';
}

/* Lowercased host name or IPv4 literal: labels of [a-z0-9-], 1..63 bytes,
 * not starting or ending with '-'; a name whose last label is numeric (all
 * digits, or 0x + hex) must be a canonical dotted quad. */
static int host_ok(char *h, int *is_ip)
{
    size_t n = strlen(h), lab = 0, last = 0;
    unsigned char a4[4];
    int numeric = 1;

    if (n == 0 || n > 253)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (h[i] >= 'A' && h[i] <= 'Z')
            h[i] = (char)(h[i] - 'A' + 'a');
    for (size_t i = 0; i <= n; i++) {
        if (i == n || h[i] == '.') {
            if (lab == 0 || lab > 63 || h[i - 1] == '-' || h[i - lab] == '-')
                return 0;
            last = i - lab;
            lab = 0;
            continue;
        }
        if (!label_char(h[i]))
            return 0;
        lab++;
    }
    if (h[last] == '0' && h[last + 1] == 'x') {
        numeric = 1;
        for (size_t i = last + 2; i < n; i++)
            numeric &= hexval((uint8_t)h[i]) >= 0;
    } else {
        for (size_t i = last; i < n; i++)
            numeric &= h[i] >= '0' && h[i] <= '9';
    }
    if (!numeric) {
        *is_ip = 0;
        return 1;
    }
    *is_ip = 1;
    return inet_pton(AF_INET, h, a4) == 1;
}

static int parse_port(const char *s, size_t n, int *port)
{
    int v = 0;

    if (n == 0 || n > 5 || s[0] == '0')
        return AL_ERR_INVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return AL_ERR_INVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return AL_ERR_INVAL;
    *port = v;
    return 0;
}

static int path_ok(const char *p)
{
    for (size_t i = 0; p[i]; i++)
        if (p[i] == '%' && (hexval((uint8_t)p[i + 1]) < 0 || hexval((uint8_t)p[i + 2]) < 0))
            return 0;
    return p[0] == '/';
}

static int parse_url(struct rl_upstream *u, const char *url)
{
    const char *p, *auth_end, *port_s = NULL;
    size_t n, hlen, port_len = 0;
    int defport;

    if (!url || (n = strlen(url)) == 0 || n > URL_MAX)
        return AL_ERR_INVAL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f || url[i] == '\\')
            return AL_ERR_INVAL;
    if (strncasecmp(url, "https://", 8) == 0) {
        u->https = 1;
        p = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else {
        return AL_ERR_INVAL;
    }
    /* userinfo, fragment and query are refused: the first can hide the real
     * host, and the base path is a prefix the gateway appends to */
    if (strchr(url, '#') || strchr(url, '?'))
        return AL_ERR_INVAL;
    auth_end = p + strcspn(p, "/");
    if (memchr(p, '@', (size_t)(auth_end - p)))
        return AL_ERR_INVAL;
    defport = u->https ? 443 : 80;
    u->port = defport;
    if (*p == '[') {
        const char *close = memchr(p, ']', (size_t)(auth_end - p));
        unsigned char a6[16];
        if (!close || (size_t)(close - p - 1) >= sizeof(u->host))
            return AL_ERR_INVAL;
        hlen = (size_t)(close - p - 1);
        memcpy(u->host, p + 1, hlen);
        u->host[hlen] = '\0';
        if (inet_pton(AF_INET6, u->host, a6) != 1)
            return AL_ERR_INVAL;
        inet_ntop(AF_INET6, a6, u->host, sizeof(u->host)); /* canonical spelling */
        u->host_is_ip = 1;
        if (close + 1 < auth_end) {
            if (close[1] != ':')
                return AL_ERR_INVAL;
            port_s = close + 2;
            port_len = (size_t)(auth_end - port_s);
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        const char *hend = colon ? colon : auth_end;
        hlen = (size_t)(hend - p);
        if (hlen == 0 || hlen >= sizeof(u->host))
            return AL_ERR_INVAL;
        memcpy(u->host, p, hlen);
        u->host[hlen] = '\0';
        if (!host_ok(u->host, &u->host_is_ip))
            return AL_ERR_INVAL;
        if (colon) {
            port_s = colon + 1;
            port_len = (size_t)(auth_end - port_s);
        }
    }
    if (port_s && parse_port(port_s, port_len, &u->port) < 0)
        return AL_ERR_INVAL;
    u->base_path = strdup(*auth_end ? auth_end : "/");
    if (!u->base_path)
        return AL_ERR_NOMEM;
    if (!path_ok(u->base_path))
        return AL_ERR_INVAL;
    if (strchr(u->host, ':'))
        snprintf(u->hostport, sizeof(u->hostport), "[%s]", u->host);
    else
        snprintf(u->hostport, sizeof(u->hostport), "%s", u->host);
    if (u->port != defport) {
        size_t l = strlen(u->hostport);
        snprintf(u->hostport + l, sizeof(u->hostport) - l, ":%d", u->port);
    }
    snprintf(u->dest, sizeof(u->dest), "%s%s", u->https ? "" : "http://", u->hostport);
    return 0;
}

/* Builds the client context into *out (freed by the caller on failure too). */
static int build_ctx(const char *who, const char *ca_file, SSL_CTX **out)
{
    static const unsigned char alpn[] = "\x08http/1.1";
    char err[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (!ctx)
        return AL_ERR_NOMEM;
    *out = ctx;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        return AL_ERR_TLS;
    /* TLS 1.2: forward-secret AEAD suites only (1.3 suites are all such) */
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20") != 1)
        return AL_ERR_TLS;
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET |
                                 SSL_OP_CLEANSE_PLAINTEXT);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (ca_file && *ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
            al_tls_errstr(err, sizeof(err));
            AL_LOG_ERROR("upstream.tls_load", "upstream=%s file=%s reason=\"CA bundle: %s\"", who,
                         ca_file, err);
            return AL_ERR_TLS;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        al_tls_errstr(err, sizeof(err));
        AL_LOG_ERROR("upstream.tls_load", "upstream=%s reason=\"system CA store: %s\"", who, err);
        return AL_ERR_TLS;
    }
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0)
        return AL_ERR_TLS;
    return 0;
}

/* ------------------------------------------------------------- public API */

int rl_upstream_client_ctx(const char *ca_file, SSL_CTX **out)
{
    SSL_CTX *ctx = NULL;
    int rc;

    if (!out)
        return AL_ERR_INVAL;
    *out = NULL;
    rc = build_ctx("-", ca_file, &ctx);
    if (rc < 0) {
        SSL_CTX_free(ctx);
        return rc;
    }
    *out = ctx;
    return 0;
}

int rl_upstream_new(struct ev_loop *loop, const struct rl_upstream_opts *o,
                    struct rl_upstream **out)
{
    struct rl_upstream *u;
    int rc;

    if (!out)
        return AL_ERR_INVAL;
    *out = NULL;
    if (!loop || !o || (!o->resolver && !o->naddrs) || o->nallow > RL_UPSTREAM_MAX_ALLOW ||
        (o->nallow && !o->allow) || o->connect_timeout_s < 0 || o->head_timeout_s < 0 ||
        o->idle_timeout_s < 0 || o->pool_idle_s < 0 || o->naddrs > AL_RESOLVE_MAX ||
        (o->naddrs && (!o->addrs || !o->addr_lens)))
        return AL_ERR_INVAL;
    for (size_t i = 0; i < o->naddrs; i++)
        if (o->addr_lens[i] == 0 || o->addr_lens[i] > sizeof(struct sockaddr_storage) ||
            (o->addrs[i].ss_family != AF_INET && o->addrs[i].ss_family != AF_INET6))
            return AL_ERR_INVAL;
    for (size_t i = 0; i < o->nallow; i++)
        if ((o->allow[i].family != AF_INET || o->allow[i].prefix > 32) &&
            (o->allow[i].family != AF_INET6 || o->allow[i].prefix > 128))
            return AL_ERR_INVAL;
    u = calloc(1, sizeof(*u));
    if (!u)
        return AL_ERR_NOMEM;
    u->loop = loop;
    u->resolver = o->resolver;
    ev_timer_init(&u->reaper, reaper_cb, 0., 0.);
    u->reaper.data = u;
    rc = parse_url(u, o->url);
    if (rc < 0)
        goto out;
    if (o->nallow)
        memcpy(u->allow, o->allow, o->nallow * sizeof(*o->allow));
    u->nallow = o->nallow;
    u->addr_flags = o->addr_flags;
    for (size_t i = 0; i < o->naddrs; i++) {
        memcpy(&u->fixed[i], &o->addrs[i], o->addr_lens[i]);
        u->fixed_len[i] = o->addr_lens[i];
    }
    u->nfixed = o->naddrs;
    u->connect_timeout = o->connect_timeout_s > 0 ? o->connect_timeout_s : 5;
    u->head_timeout = o->head_timeout_s > 0 ? o->head_timeout_s : 60;
    u->idle_timeout = o->idle_timeout_s > 0 ? o->idle_timeout_s : 300;
    u->pool_idle = o->pool_idle_s > 0 ? o->pool_idle_s : 30;
    u->max_idle = o->max_idle ? o->max_idle : 32;
    u->max_head = o->max_head ? o->max_head : 64 * 1024;
    if (u->https && o->ssl_ctx) {
        SSL_CTX_up_ref(o->ssl_ctx);
        u->ctx = o->ssl_ctx;
    } else if (u->https) {
        rc = build_ctx(u->dest, o->ca_file, &u->ctx);
    }
out:
    if (rc < 0) {
        upstream_destroy(u);
        return rc;
    }
    *out = u;
    return 0;
}

void rl_upstream_free(struct rl_upstream *u)
{
    if (!u)
        return;
    while (u->reqs)
        rl_ureq_cancel(u->reqs);
    while (u->idle)
        conn_close(u->idle);
    while (u->busy)
        conn_close(u->busy);
    if (u->depth > 0) {
        /* inside a callback of one of its requests: the code unwinding from
         * it still reads these objects; the reaper frees them */
        u->free_pending = 1;
        schedule_reap(u);
        return;
    }
    reap_all(u);
    upstream_destroy(u);
}

const char *rl_upstream_destination(const struct rl_upstream *u)
{
    return u->dest;
}

const char *rl_upstream_base_path(const struct rl_upstream *u)
{
    return u->base_path;
}

const char *rl_upstream_host(const struct rl_upstream *u)
{
    return u->hostport;
}

static int token_ok(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i]))
            return 0;
    return 1;
}

static int field_value_ok(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 0;
    }
    return 1;
}

static int target_ok(const char *t)
{
    size_t n = strlen(t);

    if (n == 0 || n > TARGET_MAX || t[0] != '/')
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f || t[i] == '#')
            return 0;
    return 1;
}

/* Names the client sets itself or that would change the framing of the
 * exchange. */
static int refused_name(const struct rl_h1_header *h)
{
    static const char *const names[] = {
        "connection",        "keep-alive", "proxy-connection", "te",     "trailer",
        "transfer-encoding", "upgrade",    "content-length",   "expect", NULL};
    for (int i = 0; names[i]; i++)
        if (h->name_len == strlen(names[i]) && strncasecmp(h->name, names[i], h->name_len) == 0)
            return 1;
    return 0;
}

/* Writes the request head into r->out. Returns 0, AL_ERR_INVAL or AL_ERR_NOMEM. */
static int build_head(struct rl_ureq *r, const char *method, const char *target,
                      const struct rl_h1_header *h, size_t n)
{
    struct rl_buf *b = &r->out;
    int have_host = 0;
    int rc = rl_buf_printf(b, "%s %s HTTP/1.1\r\n", method, target);

    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!h[i].name || (!h[i].value && h[i].value_len) || !token_ok(h[i].name, h[i].name_len) ||
            !field_value_ok(h[i].value, h[i].value_len) || refused_name(&h[i]))
            return AL_ERR_INVAL;
        if (h[i].name_len == 4 && strncasecmp(h[i].name, "host", 4) == 0 && have_host++)
            return AL_ERR_INVAL;
    }
    if (rc == 0 && !have_host)
        rc = rl_buf_printf(b, "Host: %s\r\n", r->u->hostport);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = rl_buf_append(b, h[i].name, h[i].name_len);
        if (rc == 0)
            rc = rl_buf_append(b, ": ", 2);
        if (rc == 0 && h[i].value_len)
            rc = rl_buf_append(b, h[i].value, h[i].value_len);
        if (rc == 0)
            rc = rl_buf_append(b, "\r\n", 2);
    }
    if (rc == 0 && r->clen < 0)
        rc = rl_buf_puts(b, "Transfer-Encoding: chunked\r\n");
    else if (rc == 0 && (r->clen > 0 || (strcmp(method, "GET") && strcmp(method, "HEAD"))))
        rc = rl_buf_printf(b, "Content-Length: %lld\r\n", (long long)r->clen);
    if (rc == 0)
        rc = rl_buf_puts(b, "Connection: keep-alive\r\n\r\n");
    return rc < 0 ? (rc == AL_ERR_INVAL ? AL_ERR_INVAL : AL_ERR_NOMEM) : 0;
}

int rl_ureq_start(struct rl_upstream *u, const char *method, const char *target,
                  const struct rl_h1_header *h, size_t n, int64_t content_length,
                  const struct rl_ureq_cbs *cbs, void *user, struct rl_ureq **out)
{
    struct rl_ureq *r;
    size_t mlen;
    int rc;

    if (out)
        *out = NULL;
    if (!u || !out || !method || !target || (n && !h) || content_length < -1 || !cbs ||
        !cbs->on_end || !cbs->on_error || u->free_pending)
        return AL_ERR_INVAL;
    mlen = strlen(method);
    if (mlen > METHOD_MAX || !token_ok(method, mlen) || strcmp(method, "CONNECT") == 0 ||
        !target_ok(target))
        return AL_ERR_INVAL;
    r = calloc(1, sizeof(*r));
    if (!r)
        return AL_ERR_NOMEM;
    r->u = u;
    r->cbs = *cbs;
    r->user = user;
    r->id = ++u->next_req;
    r->clen = content_length;
    r->body_done = content_length == 0;
    r->is_head = strcmp(method, "HEAD") == 0;
    r->idempotent = r->is_head || !strcmp(method, "GET") || !strcmp(method, "DELETE");
    rl_buf_init(&r->out, 0);
    rl_buf_init(&r->replay, REPLAY_MAX);
    rl_buf_init(&r->head, u->max_head);
    rl_buf_init(&r->in, 0);
    head_reset(r);
    rc = build_head(r, method, target, h, n);
    if (rc == 0 && pending(r) > OUT_MAX)
        rc = AL_ERR_INVAL;
    if (rc < 0) {
        req_destroy(r);
        return rc;
    }
    r->replay_ok = r->idempotent && rl_buf_append(&r->replay, r->out.p, r->out.len) == 0;
    ev_timer_init(&r->timer, req_timer_cb, 0., 0.);
    r->timer.data = r;
    ev_timer_init(&r->kick, req_kick_cb, 0., 0.);
    r->kick.data = r;
    r->st = RQ_NEW;
    LIST_ADD(u->reqs, r);
    req_kick(r); /* callbacks come from the loop, never from here */
    *out = r;
    return 0;
}

/* Appends to the out queue and, while a retry stays possible, to the
 * replay copy. */
static int queue(struct rl_ureq *r, const void *d, size_t n)
{
    int rc = rl_buf_append(&r->out, d, n);

    if (rc < 0)
        return rc;
    if (r->replay_ok && rl_buf_append(&r->replay, d, n) < 0) {
        r->replay_ok = 0; /* too large to hold: this request is not retried */
        rl_buf_cleanup(&r->replay);
    }
    return 0;
}

static void after_queue(struct rl_ureq *r, int was_empty)
{
    if (r->st != RQ_ACTIVE || !r->c)
        return;
    if (was_empty)
        r->last_write = ev_now(r->u->loop);
    conn_update(r->c);
    req_arm(r);
}

int rl_ureq_write(struct rl_ureq *r, const uint8_t *d, size_t n)
{
    char hdr[24];
    size_t before, framing = 0;
    int was_empty, rc, hl = 0;

    if (!r || r->finished || r->end_called || r->clen == 0)
        return AL_ERR_STATE;
    if (n == 0)
        return 0;
    if (!d)
        return AL_ERR_INVAL;
    if (r->clen > 0 && (uint64_t)n > (uint64_t)r->clen - r->body_queued)
        return AL_ERR_STATE; /* more than the declared Content-Length */
    if (r->write_dead) {
        r->body_queued += n; /* the server stopped reading; its response decides */
        return 0;
    }
    if (r->clen < 0) {
        hl = snprintf(hdr, sizeof(hdr), "%zx\r\n", n);
        framing = (size_t)hl + 2;
    }
    if (n > OUT_MAX || pending(r) + n + framing > OUT_MAX)
        return AL_ERR_TOOBIG;
    if (r->out_off > r->out.len / 2) { /* reclaim written space now and then */
        size_t moved = r->out_off;
        rl_buf_consume(&r->out, moved);
        /* the vacated tail still holds a copy of bytes that moved down */
        OPENSSL_cleanse(r->out.p + r->out.len, moved);
        r->out_off = 0;
    }
    was_empty = pending(r) == 0;
    before = r->out.len;
    rc = hl ? queue(r, hdr, (size_t)hl) : 0;
    if (rc == 0)
        rc = queue(r, d, n);
    if (rc == 0 && hl)
        rc = queue(r, "\r\n", 2);
    if (rc < 0) {
        OPENSSL_cleanse(r->out.p + before, r->out.len - before);
        r->out.len = before;
        r->replay_ok = 0;
        rl_buf_cleanup(&r->replay);
        return AL_ERR_NOMEM;
    }
    r->body_queued += n;
    if (r->clen > 0 && r->body_queued == (uint64_t)r->clen)
        r->body_done = 1;
    after_queue(r, was_empty);
    return 0;
}

int rl_ureq_end(struct rl_ureq *r)
{
    int was_empty;

    if (!r || r->finished || r->end_called)
        return AL_ERR_STATE;
    if (r->clen > 0 && r->body_queued != (uint64_t)r->clen)
        return AL_ERR_STATE; /* shorter than the declared Content-Length */
    r->end_called = 1;
    was_empty = pending(r) == 0;
    if (r->clen < 0 && !r->write_dead && queue(r, "0\r\n\r\n", 5) < 0) {
        r->end_called = 0;
        return AL_ERR_NOMEM;
    }
    r->body_done = 1;
    after_queue(r, was_empty);
    req_check_sent(r);
    return 0;
}

size_t rl_ureq_pending(const struct rl_ureq *r)
{
    return r ? pending(r) : 0;
}

void rl_ureq_want_writable(struct rl_ureq *r, size_t low)
{
    if (!r || r->finished)
        return;
    r->want_low = low;
    r->want_armed = 1;
    if (pending(r) <= low) {
        r->writable_due = 1;
        req_kick(r);
    }
}

void rl_ureq_pause(struct rl_ureq *r)
{
    if (!r || r->finished || r->paused)
        return;
    r->paused = 1;
    if (r->c && r->st == RQ_ACTIVE)
        conn_update(r->c);
    req_arm(r);
}

void rl_ureq_resume(struct rl_ureq *r)
{
    if (!r || r->finished || !r->paused)
        return;
    r->paused = 0;
    if (r->st == RQ_ACTIVE) {
        r->last_read = ev_now(r->u->loop); /* idle time restarts now */
        req_kick(r);
    }
    req_arm(r);
}

void rl_ureq_cancel(struct rl_ureq *r)
{
    if (!r || r->finished)
        return;
    AL_LOG_DEBUG("upstream.cancel", "upstream=%s req=%llu", r->u->dest, (unsigned long long)r->id);
    if (r->c)
        conn_close(r->c);
    req_end_common(r);
}
