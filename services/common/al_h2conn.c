/*
 * al_h2conn: socket + TLS + nghttp2 plumbing; see al_h2conn.h.
 *
 * States: CONNECTING (non-blocking connect) -> HANDSHAKE (TLS) -> OPEN ->
 * DEAD. Reads are fed to nghttp2_session_mem_recv; frames nghttp2 queues are
 * gathered with nghttp2_session_mem_send into one output buffer (hard cap) and
 * written in as few syscalls as possible. The write watcher runs only while
 * bytes are pending, so a slow reader stops nghttp2 from producing more (the
 * send loop stops once the buffer passes its high-water mark).
 *
 * Write batching: frames queued while a read is being processed go out once
 * the read is done. al_h2conn_flush() from anywhere else (a timer, an async
 * answer, another connection's event) does not write at once: it puts the
 * connection on its loop's flusher list, which is sent just before the loop
 * waits again (see struct flusher). So everything the upper layer produces in one loop turn
 * (say, the answers to every call of a group commit) leaves in one
 * SSL_write/write per connection instead of one or two per call.
 *
 * TLS records: once the handshake is done, the connection's write BIO is a
 * buffer of its own (wb) instead of the socket, and wb_flush() writes what
 * one SSL_write produced with one send(). OpenSSL cuts an SSL_write of 64 KiB
 * into four records, which the socket BIO would write with four syscalls;
 * on loopback and in VMs the syscall and the per-packet path cost about as
 * much as the encryption. wb holds ciphertext only and is freed whenever it
 * drains, so an idle connection keeps no buffer.
 */
#include <pthread.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>

#include "al_err.h"
#include "al_h2conn.h"
#include "al_log.h"

#define OUT_HIGH    (64 * 1024) /* stop pulling frames from nghttp2 past this */
#define READ_CHUNK  (16 * 1024)
#define READ_ROUNDS 16 /* reads per event before yielding to others */
/* TLS read-ahead: OpenSSL reads what the socket has (up to this much) in
 * one read() and hands out records from its buffer, instead of two read()s
 * per record (header, then body). Records it buffered are invisible to
 * epoll, so a read pass that stops with some left re-arms itself (more_r),
 * and so does a connection opened with bytes already buffered. */
#define TLS_READ_BUF (64 * 1024)
/* wb: an SSL_write past this much unsent ciphertext waits for the socket */
#define WB_HIGH    (256 * 1024)
#define IDLE_REL_S 1.0         /* OpenSSL's buffers are freed after this long idle */
#define WB_BATCH   (64 * 1024) /* send once this much is gathered */

enum conn_state { ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_DEAD };

struct al_h2conn {
    struct ev_loop *loop;
    ev_io io;
    ev_timer timer;     /* handshake deadline, then keepalive pings */
    ev_timer reaper;    /* zero-delay timer that frees a dead connection */
    ev_timer more_r;    /* zero-delay timer: TLS records left in OpenSSL's read buffer */
    struct flusher *fl; /* this loop's: sends what al_h2conn_flush() asked for */
    struct al_h2conn *fl_next, **fl_pprev; /* on fl's list while fl_pprev != NULL */
    ev_timer idle_rel;                     /* frees OpenSSL's buffers once the connection is idle */
    int fd;
    SSL *ssl;
    enum conn_state state;
    struct al_h2conn_opts o;
    char alpn[32];
    char verify_host[256];
    nghttp2_session *ngh;
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    uint8_t *wb; /* TLS records not yet sent (ciphertext) */
    size_t wb_len, wb_off, wb_cap;
    int wb_err;   /* the socket failed: every later write fails with this */
    int rd_short; /* OpenSSL's last read(2) returned less than it asked for */
    int in_recv;  /* inside mem_recv: defer sends */
    int in_send;  /* inside mem_send: nghttp2 is not reentrant */
    int close_err;
    int closed_notified;
    int ping_outstanding;
    ev_tstamp last_activity;
    uint64_t id;
    char peer_id[AL_TLS_ID_MAX];
    char peer_addr[64];
};

static uint64_t next_conn_id = 1;

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_reaper_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_send(struct al_h2conn *c);
static void send_loop(struct al_h2conn *c);
static void tls_attach(struct al_h2conn *c);
static void conn_idle_rel_cb(struct ev_loop *loop, ev_timer *w, int revents);

/*
 * Deferred sends: al_h2conn_flush() puts the connection on its loop's
 * flusher list, and the flusher's prepare watcher (lowest priority, so after
 * every other prepare watcher, which may still ask for sends) sends for each
 * just before the loop next waits: after every event of the loop turn, so
 * what they all produced leaves in one write per connection, and with no
 * extra poll (an idle watcher would make the loop poll once more without
 * blocking first). One flusher per loop, kept as the loop's ev_userdata
 * (al_h2conn owns it), counted by the connections using it; unref'd, so it
 * never keeps a loop running. A loop destroyed with connections still on it
 * takes its flusher pointer along: a later loop never finds a stale one.
 */
struct flusher {
    struct ev_loop *loop;
    ev_prepare w;
    struct al_h2conn *head;
    int refs;
};

static void fl_remove(struct al_h2conn *c)
{
    if (!c->fl_pprev)
        return;
    *c->fl_pprev = c->fl_next;
    if (c->fl_next)
        c->fl_next->fl_pprev = c->fl_pprev;
    c->fl_next = NULL;
    c->fl_pprev = NULL;
}

static void flusher_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct flusher *f = w->data;
    struct al_h2conn *c;
    (void)loop;
    (void)revents;

    while ((c = f->head) != NULL) { /* a send may ask for others */
        fl_remove(c);
        conn_send(c);
    }
}

static struct flusher *flusher_get(struct ev_loop *loop)
{
    struct flusher *f = ev_userdata(loop);

    if (f) {
        f->refs++;
        return f;
    }
    f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->loop = loop;
    f->refs = 1;
    ev_prepare_init(&f->w, flusher_cb);
    ev_set_priority(&f->w, EV_MINPRI);
    f->w.data = f;
    ev_prepare_start(loop, &f->w);
    ev_unref(loop); /* the watcher alone does not keep ev_run() going */
    ev_set_userdata(loop, f);
    return f;
}

static void flusher_put(struct flusher *f)
{
    if (!f || --f->refs > 0)
        return;
    ev_set_userdata(f->loop, NULL);
    ev_ref(f->loop);
    ev_prepare_stop(f->loop, &f->w);
    free(f);
}

static void set_events(struct al_h2conn *c, int events)
{
    if (c->io.events == (events | EV__IOFDSET) || c->io.events == events)
        return;
    ev_io_stop(c->loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(c->loop, &c->io);
}

static void conn_destroy(struct al_h2conn *c)
{
    if (!c->closed_notified && c->o.on_close) {
        c->closed_notified = 1;
        c->o.on_close(c, c->close_err, c->o.user);
    }
    ev_io_stop(c->loop, &c->io);
    ev_timer_stop(c->loop, &c->timer);
    ev_timer_stop(c->loop, &c->reaper);
    ev_timer_stop(c->loop, &c->more_r);
    ev_timer_stop(c->loop, &c->idle_rel);
    fl_remove(c);
    flusher_put(c->fl);
    nghttp2_session_del(c->ngh);
    c->ngh = NULL;
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    if (c->out)
        explicit_bzero(c->out, c->out_cap);
    free(c->out);
    free(c->wb);
    free(c);
}

void al_h2conn_close(struct al_h2conn *c, int err)
{
    if (c->state == ST_DEAD)
        return;
    c->state = ST_DEAD;
    c->close_err = err;
    ev_io_stop(c->loop, &c->io);
    ev_timer_stop(c->loop, &c->timer);
    ev_timer_stop(c->loop, &c->more_r);
    ev_timer_stop(c->loop, &c->idle_rel);
    fl_remove(c);
    ev_timer_set(&c->reaper, 0., 0.);
    ev_timer_start(c->loop, &c->reaper);
}

static void conn_reaper_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_destroy(w->data);
}

static void fmt_peer(struct al_h2conn *c)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (getpeername(c->fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
            port = ntohs(s4->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
            port = ntohs(s6->sin6_port);
        }
    }
    snprintf(c->peer_addr, sizeof(c->peer_addr), "%s:%d", host, port);
}

static int session_start(struct al_h2conn *c)
{
    nghttp2_option *opt = NULL;
    nghttp2_settings_entry iv[4];
    int rv;

    if (nghttp2_option_new(&opt) != 0)
        return AL_ERR_NOMEM;
    /* we answer pings and settings ourselves through nghttp2's defaults;
     * cap the peer's header block so a flood cannot grow our HPACK state */
    nghttp2_option_set_max_send_header_block_length(opt, 64 * 1024);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    if (c->o.manual_window)
        nghttp2_option_set_no_auto_window_update(opt, 1);
    if (c->o.reset_burst && c->o.reset_rate)
        nghttp2_option_set_stream_reset_rate_limit(opt, c->o.reset_burst, c->o.reset_rate);
    if (c->o.h2_server)
        rv = nghttp2_session_server_new2(&c->ngh, c->o.cbs, c->o.session_user, opt);
    else
        rv = nghttp2_session_client_new2(&c->ngh, c->o.cbs, c->o.session_user, opt);
    nghttp2_option_del(opt);
    if (rv != 0)
        return AL_ERR_NOMEM;
    iv[0] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                                     c->o.max_concurrent_streams};
    iv[1] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, c->o.initial_window};
    iv[2] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, c->o.max_header_list};
    iv[3] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
    rv = nghttp2_submit_settings(c->ngh, NGHTTP2_FLAG_NONE, iv, 4);
    if (rv != 0)
        return AL_ERR_NOMEM;
    /* a larger connection window so many streams can be in flight at once */
    nghttp2_session_set_local_window_size(c->ngh, NGHTTP2_FLAG_NONE, 0, 16 * 1024 * 1024);
    return 0;
}

static void conn_opened(struct al_h2conn *c)
{
    c->state = ST_OPEN;
    if (c->ssl)
        tls_attach(c);
    c->last_activity = ev_now(c->loop);
    ev_timer_stop(c->loop, &c->timer);
    if (c->o.ping_interval_s > 0) {
        ev_timer_set(&c->timer, c->o.ping_interval_s, c->o.ping_interval_s);
        ev_timer_start(c->loop, &c->timer);
    }
    if (session_start(c) < 0) {
        al_h2conn_close(c, AL_ERR_NOMEM);
        return;
    }
    if (c->o.on_ready)
        c->o.on_ready(c, c->o.user);
    if (c->state == ST_OPEN)
        conn_send(c);
    if (c->state == ST_OPEN && c->ssl && SSL_has_pending(c->ssl))
        ev_timer_start(c->loop, &c->more_r); /* arrived with the handshake */
}

static int check_peer(struct al_h2conn *c)
{
    const unsigned char *proto = NULL;
    unsigned plen = 0;
    size_t want = strlen(c->alpn);

    SSL_get0_alpn_selected(c->ssl, &proto, &plen);
    if (plen != want || memcmp(proto, c->alpn, want) != 0) {
        AL_LOG_WARN("conn.alpn", "conn=%llu peer=%s reason=\"ALPN %s not negotiated\"",
                    (unsigned long long)c->id, c->peer_addr, c->alpn);
        return AL_ERR_PROTO;
    }
    if (al_tls_peer_id(c->ssl, c->peer_id, sizeof(c->peer_id)) < 0) {
        c->peer_id[0] = '\0';
        if (c->o.require_peer_id) {
            AL_LOG_WARN("conn.auth", "conn=%llu peer=%s reason=\"no SPIFFE identity\"",
                        (unsigned long long)c->id, c->peer_addr);
            return AL_ERR_AUTH;
        }
    }
    return 0;
}

static void do_handshake(struct al_h2conn *c)
{
    int rv;
    char err[256];

    ERR_clear_error();
    rv = SSL_do_handshake(c->ssl);
    if (rv == 1) {
        int rc = check_peer(c);
        if (rc < 0) {
            al_h2conn_close(c, rc);
            return;
        }
        set_events(c, EV_READ);
        conn_opened(c);
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
        al_tls_errstr(err, sizeof(err));
        AL_LOG_WARN("conn.tls", "conn=%llu peer=%s reason=\"handshake failed: %s\"",
                    (unsigned long long)c->id, c->peer_addr, err);
        al_h2conn_close(c, AL_ERR_TLS);
    }
}

/* Sends what wb holds. Returns 0 (drained; the buffer is freed),
 * AL_ERR_AGAIN (the socket is full) or a negative error. */
static int wb_flush(struct al_h2conn *c)
{
    if (c->wb_err)
        return c->wb_err;
    while (c->wb_off < c->wb_len) {
        ssize_t w = send(c->fd, c->wb + c->wb_off, c->wb_len - c->wb_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return AL_ERR_AGAIN;
            c->wb_err = -errno;
            return c->wb_err;
        }
        c->wb_off += (size_t)w;
    }
    free(c->wb);
    c->wb = NULL;
    c->wb_len = c->wb_off = c->wb_cap = 0;
    return 0;
}

static int wb_bio_write(BIO *b, const char *d, int n)
{
    struct al_h2conn *c = BIO_get_data(b);
    size_t need;

    BIO_clear_retry_flags(b);
    if (n <= 0)
        return 0;
    if (c->wb_len - c->wb_off >= WB_HIGH) {
        int rc = wb_flush(c);
        if (rc == AL_ERR_AGAIN) {
            BIO_set_retry_write(b);
            return -1;
        }
    }
    if (c->wb_err) {
        errno = -c->wb_err;
        return -1;
    }
    need = c->wb_len + (size_t)n;
    if (need > c->wb_cap && c->wb_off) { /* move the unsent part down */
        memmove(c->wb, c->wb + c->wb_off, c->wb_len - c->wb_off);
        c->wb_len -= c->wb_off;
        c->wb_off = 0;
        need = c->wb_len + (size_t)n;
    }
    if (need > c->wb_cap) {
        size_t cap = c->wb_cap ? c->wb_cap : 80 * 1024;
        uint8_t *p;
        while (cap < need)
            cap *= 2;
        p = realloc(c->wb, cap);
        if (!p) {
            errno = ENOMEM;
            return -1;
        }
        c->wb = p;
        c->wb_cap = cap;
    }
    memcpy(c->wb + c->wb_len, d, (size_t)n);
    c->wb_len += (size_t)n;
    return n;
}

static long wb_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    struct al_h2conn *c = BIO_get_data(b);
    (void)num;
    (void)ptr;

    switch (cmd) {
    case BIO_CTRL_FLUSH: { /* OpenSSL flushes after handshake messages */
        int rc = wb_flush(c);
        BIO_clear_retry_flags(b);
        if (rc == AL_ERR_AGAIN)
            BIO_set_retry_write(b);
        return rc == 0 ? 1 : -1;
    }
    case BIO_CTRL_WPENDING:
        return (long)(c->wb_len - c->wb_off);
    case BIO_CTRL_PENDING:
        return 0;
    default:
        return 0;
    }
}

static int wb_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *wb_method;

static void wb_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "al_h2conn_wb");

    if (m && (!BIO_meth_set_write(m, wb_bio_write) || !BIO_meth_set_ctrl(m, wb_bio_ctrl) ||
              !BIO_meth_set_create(m, wb_bio_create))) {
        BIO_meth_free(m);
        m = NULL;
    }
    wb_method = m;
}

/* Puts wb in place of the socket as the SSL's write BIO (reads stay on the
 * socket). Without it (out of memory) the connection works unbuffered. */
static void wb_attach(struct al_h2conn *c)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    BIO *b;

    pthread_once(&once, wb_method_init);
    if (!wb_method || !(b = BIO_new(wb_method)))
        return;
    BIO_set_data(b, c);
    SSL_set0_wbio(c->ssl, b); /* drops the SSL's reference to the socket BIO it wrote to */
}

static int wb_pending(const struct al_h2conn *c)
{
    return c->wb_off < c->wb_len;
}

/*
 * Watches OpenSSL's reads from the socket: one that returned less than it
 * asked for drained the socket, so once the records it brought are consumed a
 * read pass can stop without another read(2) that would only say EAGAIN (the
 * loop's level-triggered poll reports anything that arrives later).
 */
static long rd_bio_cb(BIO *b, int oper, const char *argp, size_t len, int argi, long argl, int ret,
                      size_t *processed)
{
    (void)argp;
    (void)argi;
    (void)argl;
    if (oper == (BIO_CB_READ | BIO_CB_RETURN)) {
        struct al_h2conn *c = (struct al_h2conn *)BIO_get_callback_arg(b);
        c->rd_short = ret > 0 && processed && *processed < len;
    }
    return (long)ret;
}

/* After the handshake: wb for writes, rd_bio_cb on reads. */
static void tls_attach(struct al_h2conn *c)
{
    BIO *rb = SSL_get_rbio(c->ssl);

    wb_attach(c);
    if (rb) {
        BIO_set_callback_arg(rb, (char *)c);
        BIO_set_callback_ex(rb, rd_bio_cb);
    }
}

/* Returns bytes read, 0 on EOF, AL_ERR_AGAIN, or a negative error. */
static ssize_t conn_read(struct al_h2conn *c, uint8_t *buf, size_t n)
{
    if (!c->ssl) {
        ssize_t r = read(c->fd, buf, n);
        if (r < 0)
            return (errno == EAGAIN || errno == EINTR) ? AL_ERR_AGAIN : -errno;
        return r;
    }
    ERR_clear_error();
    int r = SSL_read(c->ssl, buf, (int)n);
    if (r > 0)
        return r;
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return AL_ERR_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        return errno ? -errno : 0;
    default:
        return AL_ERR_TLS;
    }
}

static ssize_t conn_write(struct al_h2conn *c, const uint8_t *buf, size_t n)
{
    if (!c->ssl) {
        ssize_t w = send(c->fd, buf, n, MSG_NOSIGNAL);
        if (w < 0)
            return (errno == EAGAIN || errno == EINTR) ? AL_ERR_AGAIN : -errno;
        return w;
    }
    ERR_clear_error();
    int w = SSL_write(c->ssl, buf, (int)n);
    if (w > 0)
        return w;
    switch (SSL_get_error(c->ssl, w)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return AL_ERR_AGAIN;
    case SSL_ERROR_SYSCALL:
        return errno ? -errno : AL_ERR_CLOSED;
    default:
        return AL_ERR_TLS;
    }
}

static int out_append(struct al_h2conn *c, const uint8_t *d, size_t n)
{
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + n > c->out_cap) {
        if (c->out_off) {
            size_t keep = c->out_len - c->out_off;
            memmove(c->out, c->out + c->out_off, keep);
            explicit_bzero(c->out + keep, c->out_len - keep); /* no stale copies */
            c->out_len = keep;
            c->out_off = 0;
        }
        if (c->out_len + n > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 16384;
            while (cap < c->out_len + n)
                cap *= 2;
            /* not realloc: the old block is wiped before it is freed */
            uint8_t *p = malloc(cap);
            if (!p)
                return AL_ERR_NOMEM;
            if (c->out) {
                memcpy(p, c->out, c->out_len);
                explicit_bzero(c->out, c->out_cap);
                free(c->out);
            }
            c->out = p;
            c->out_cap = cap;
        }
    }
    memcpy(c->out + c->out_len, d, n);
    c->out_len += n;
    return 0;
}

/* Pulls frames from nghttp2 and writes them. Closes the connection on error. */
static void conn_send(struct al_h2conn *c)
{
    if (c->state != ST_OPEN || c->in_recv || c->in_send)
        return;
    fl_remove(c); /* what it would send goes now */
    c->in_send = 1;
    send_loop(c);
    c->in_send = 0;
    if (c->state != ST_OPEN)
        return;
    if (!nghttp2_session_want_read(c->ngh) && !nghttp2_session_want_write(c->ngh) &&
        c->out_off == c->out_len && !wb_pending(c))
        al_h2conn_close(c, 0);
}

static void send_loop(struct al_h2conn *c)
{
    for (;;) {
        int pulled = 0;

        while (c->out_len - c->out_off < OUT_HIGH) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->ngh, &data);
            if (n < 0) {
                AL_LOG_WARN("conn.h2", "conn=%llu reason=\"%s\"", (unsigned long long)c->id,
                            nghttp2_strerror((int)n));
                al_h2conn_close(c, AL_ERR_PROTO);
                return;
            }
            if (n == 0)
                break;
            if (out_append(c, data, (size_t)n) < 0) {
                al_h2conn_close(c, AL_ERR_NOMEM);
                return;
            }
            pulled = 1;
        }
        /* SSL_write returns after each record (ENABLE_PARTIAL_WRITE): let
         * wb gather a batch of them before one send */
        while (c->out_off < c->out_len && c->wb_len - c->wb_off < WB_BATCH) {
            ssize_t w = conn_write(c, c->out + c->out_off, c->out_len - c->out_off);
            if (w == AL_ERR_AGAIN) {
                set_events(c, EV_READ | EV_WRITE);
                return;
            }
            if (w < 0) {
                al_h2conn_close(c, (int)w);
                return;
            }
            /* frames are plaintext until TLS encrypts them: wipe what went out */
            explicit_bzero(c->out + c->out_off, (size_t)w);
            c->out_off += (size_t)w;
        }
        if (wb_pending(c)) { /* the records of that write, or of a read */
            int rc = wb_flush(c);
            if (rc == AL_ERR_AGAIN) {
                set_events(c, EV_READ | EV_WRITE);
                return;
            }
            if (rc < 0) {
                al_h2conn_close(c, rc);
                return;
            }
        }
        if (c->out_off == c->out_len && !pulled)
            break;
    }
    set_events(c, EV_READ);
}

static void conn_recv(struct al_h2conn *c)
{
    uint8_t buf[READ_CHUNK];
    int drained = 0;

    for (int round = 0; round < READ_ROUNDS && c->state == ST_OPEN; round++) {
        ssize_t r = conn_read(c, buf, sizeof(buf));
        if (r == AL_ERR_AGAIN) {
            drained = 1;
            break;
        }
        if (r <= 0) {
            al_h2conn_close(c, r == 0 ? 0 : (int)r);
            return;
        }
        c->last_activity = ev_now(c->loop);
        c->in_recv = 1;
        ssize_t rv = nghttp2_session_mem_recv(c->ngh, buf, (size_t)r);
        c->in_recv = 0;
        explicit_bzero(buf, (size_t)r); /* request bodies may carry secrets */
        if (rv < 0) {
            AL_LOG_INFO("conn.h2", "conn=%llu peer=%s reason=\"%s\"", (unsigned long long)c->id,
                        c->peer_addr, nghttp2_strerror((int)rv));
            /* tell the peer why (GOAWAY) before closing */
            if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC || rv == NGHTTP2_ERR_FLOODED ||
                rv == NGHTTP2_ERR_CALLBACK_FAILURE) {
                nghttp2_session_terminate_session(c->ngh, rv == NGHTTP2_ERR_FLOODED
                                                              ? NGHTTP2_ENHANCE_YOUR_CALM
                                                              : NGHTTP2_PROTOCOL_ERROR);
                const uint8_t *data;
                ssize_t n = nghttp2_session_mem_send(c->ngh, &data);
                if (n > 0 && conn_write(c, data, (size_t)n) > 0)
                    (void)wb_flush(c);
            }
            al_h2conn_close(c, AL_ERR_PROTO);
            return;
        }
        if (c->state != ST_OPEN)
            return;
        if (c->ssl ? c->rd_short && !SSL_has_pending(c->ssl) : (size_t)r < sizeof(buf)) {
            drained = 1; /* the socket is drained */
            break;
        }
    }
    if (c->state != ST_OPEN)
        return;
    if (drained && c->ssl && !ev_is_active(&c->idle_rel))
        ev_timer_start(c->loop, &c->idle_rel);
    conn_send(c);
    /* out of rounds with whole records still buffered: read on in the next
     * loop turn (after others had theirs); a partial record (drained) waits
     * for the socket as usual */
    if (!drained && c->state == ST_OPEN && c->ssl && SSL_has_pending(c->ssl))
        ev_timer_start(c->loop, &c->more_r);
}

static void conn_idle_rel_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct al_h2conn *c = w->data;
    ev_tstamp idle = ev_now(loop) - c->last_activity;
    (void)revents;

    if (c->state != ST_OPEN)
        return;
    if (idle < IDLE_REL_S) { /* busy since: look again when it could be idle */
        ev_timer_set(w, IDLE_REL_S - idle, 0.);
        ev_timer_start(loop, w);
        return;
    }
    SSL_free_buffers(c->ssl); /* refuses (and keeps them) while they hold data */
}

static void conn_more_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct al_h2conn *c = w->data;
    (void)loop;
    (void)revents;
    if (c->state == ST_OPEN)
        conn_recv(c);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct al_h2conn *c = w->data;
    (void)loop;

    switch (c->state) {
    case ST_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            AL_LOG_INFO("conn.connect", "conn=%llu reason=\"%s\"", (unsigned long long)c->id,
                        strerror(err));
            al_h2conn_close(c, -err);
            return;
        }
        fmt_peer(c);
        if (c->ssl) {
            c->state = ST_HANDSHAKE;
            do_handshake(c);
        } else {
            set_events(c, EV_READ);
            conn_opened(c);
        }
        return;
    }
    case ST_HANDSHAKE:
        do_handshake(c);
        return;
    case ST_OPEN:
        if (revents & EV_READ)
            conn_recv(c);
        if (c->state == ST_OPEN && (revents & EV_WRITE))
            conn_send(c);
        return;
    case ST_DEAD:
        return;
    }
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct al_h2conn *c = w->data;
    (void)revents;

    if (c->state != ST_OPEN) {
        AL_LOG_INFO("conn.timeout", "conn=%llu peer=%s reason=\"handshake timeout\"",
                    (unsigned long long)c->id, c->peer_addr);
        al_h2conn_close(c, AL_ERR_TIMEOUT);
        return;
    }
    /* keepalive: a PING while idle; close if the previous one went unanswered */
    if (c->ping_outstanding &&
        ev_now(loop) - c->last_activity >= (c->o.ping_timeout_s > 0 ? c->o.ping_timeout_s : 20)) {
        AL_LOG_INFO("conn.timeout", "conn=%llu peer=%s reason=\"ping not answered\"",
                    (unsigned long long)c->id, c->peer_addr);
        al_h2conn_close(c, AL_ERR_TIMEOUT);
        return;
    }
    if (ev_now(loop) - c->last_activity >= c->o.ping_interval_s) {
        nghttp2_submit_ping(c->ngh, NGHTTP2_FLAG_NONE, NULL);
        c->ping_outstanding = 1;
        conn_send(c);
    } else {
        c->ping_outstanding = 0;
    }
}

static void apply_defaults(struct al_h2conn *c, const struct al_h2conn_opts *opts)
{
    c->o = *opts;
    if (!c->o.max_concurrent_streams)
        c->o.max_concurrent_streams = 1000;
    if (!c->o.initial_window)
        c->o.initial_window = 1024 * 1024;
    if (!c->o.max_header_list)
        c->o.max_header_list = 16 * 1024;
    if (c->o.handshake_timeout_s <= 0)
        c->o.handshake_timeout_s = 10;
    snprintf(c->alpn, sizeof(c->alpn), "%s", opts->alpn ? opts->alpn : "h2");
    c->verify_host[0] = '\0';
    if (opts->verify_host)
        snprintf(c->verify_host, sizeof(c->verify_host), "%s", opts->verify_host);
    c->o.alpn = c->alpn;
    c->o.verify_host = c->verify_host[0] ? c->verify_host : NULL;
}

static struct al_h2conn *conn_alloc(struct ev_loop *loop, int fd, SSL *ssl,
                                    const struct al_h2conn_opts *opts)
{
    struct al_h2conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->loop = loop;
    c->fd = fd;
    c->ssl = ssl;
    c->id = next_conn_id++;
    apply_defaults(c, opts);
    if (!opts->cbs) {
        free(c);
        return NULL;
    }
    ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
    c->io.data = c;
    ev_timer_init(&c->timer, conn_timer_cb, c->o.handshake_timeout_s, 0.);
    c->timer.data = c;
    ev_timer_init(&c->reaper, conn_reaper_cb, 0., 0.);
    c->reaper.data = c;
    ev_timer_init(&c->more_r, conn_more_cb, 0., 0.);
    c->more_r.data = c;
    if (ssl) {
        SSL_set_read_ahead(ssl, 1);
        SSL_set_default_read_buffer_len(ssl, TLS_READ_BUF);
        /* not SSL_MODE_RELEASE_BUFFERS (set on the context): it frees, and
         * with CLEANSE_PLAINTEXT wipes, the whole read buffer each time one
         * read drains it, a third of a busy connection's CPU; idle_rel frees
         * both buffers once the connection has been idle for IDLE_REL_S */
        SSL_clear_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
    }
    ev_timer_init(&c->idle_rel, conn_idle_rel_cb, IDLE_REL_S, 0.);
    c->idle_rel.data = c;
    c->fl = flusher_get(loop);
    if (!c->fl) {
        free(c);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return c;
}

int al_h2conn_new(struct ev_loop *loop, int fd, SSL *ssl, const struct al_h2conn_opts *opts,
                  struct al_h2conn **out)
{
    struct al_h2conn *c = conn_alloc(loop, fd, ssl, opts);

    *out = NULL;
    if (!c) {
        SSL_free(ssl);
        close(fd);
        return AL_ERR_NOMEM;
    }
    fmt_peer(c);
    *out = c;
    if (ssl && SSL_is_init_finished(ssl)) {
        int rc;

        c->state = ST_HANDSHAKE;
        ev_io_start(loop, &c->io);
        rc = check_peer(c);
        if (rc < 0) {
            al_h2conn_close(c, rc);
            return 0;
        }
        set_events(c, EV_READ);
        conn_opened(c);
        return 0;
    }
    if (ssl) {
        SSL_set_fd(ssl, fd);
        if (opts->tls_server)
            SSL_set_accept_state(ssl);
        else
            SSL_set_connect_state(ssl);
        c->state = ST_HANDSHAKE;
        ev_io_start(loop, &c->io);
        ev_timer_start(loop, &c->timer);
        do_handshake(c);
        return 0;
    }
    ev_io_start(loop, &c->io);
    conn_opened(c);
    return 0;
}

int al_h2conn_connect(struct ev_loop *loop, const struct sockaddr *sa, socklen_t salen,
                      struct al_tls *tls, const struct al_h2conn_opts *opts, struct al_h2conn **out)
{
    SSL *ssl = NULL;
    struct al_h2conn *c;
    int fd;

    *out = NULL;
    fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, sa, salen) < 0 && errno != EINPROGRESS) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (tls) {
        ssl = al_tls_ssl_new(tls);
        if (!ssl || (opts->verify_host && al_tls_set_verify_host(ssl, opts->verify_host) < 0)) {
            SSL_free(ssl);
            close(fd);
            return AL_ERR_TLS;
        }
        SSL_set_fd(ssl, fd);
        SSL_set_connect_state(ssl);
    }
    c = conn_alloc(loop, fd, ssl, opts);
    if (!c) {
        SSL_free(ssl);
        close(fd);
        return AL_ERR_NOMEM;
    }
    c->state = ST_CONNECTING;
    ev_io_set(&c->io, fd, EV_WRITE);
    ev_io_start(loop, &c->io);
    ev_timer_start(loop, &c->timer);
    *out = c;
    return 0;
}

int al_h2conn_append(struct al_h2conn *c, const uint8_t *d, size_t n)
{
    return out_append(c, d, n);
}

nghttp2_session *al_h2conn_session(struct al_h2conn *c)
{
    return c->ngh;
}

void al_h2conn_flush(struct al_h2conn *c)
{
    /* inside a receive or a send, the running conn_recv/send_loop sends it */
    if (c->state != ST_OPEN || c->in_recv || c->in_send || c->fl_pprev)
        return;
    c->fl_next = c->fl->head;
    if (c->fl_next)
        c->fl_next->fl_pprev = &c->fl_next;
    c->fl->head = c;
    c->fl_pprev = &c->fl->head;
}

void al_h2conn_flush_now(struct al_h2conn *c)
{
    conn_send(c);
}

void al_h2conn_shutdown(struct al_h2conn *c)
{
    if (c->state != ST_OPEN) {
        al_h2conn_close(c, 0);
        return;
    }
    int32_t last = nghttp2_session_get_last_proc_stream_id(c->ngh);
    nghttp2_submit_goaway(c->ngh, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, NULL, 0);
    conn_send(c);
}

const char *al_h2conn_peer_id(const struct al_h2conn *c)
{
    return c->peer_id;
}

uint64_t al_h2conn_id(const struct al_h2conn *c)
{
    return c->id;
}

const char *al_h2conn_peer_addr(const struct al_h2conn *c)
{
    return c->peer_addr;
}

void *al_h2conn_user(const struct al_h2conn *c)
{
    return c->o.user;
}

void al_h2conn_set_user(struct al_h2conn *c, void *user)
{
    c->o.user = user;
}

int al_h2conn_ready(const struct al_h2conn *c)
{
    return c->state == ST_OPEN && c->ngh;
}
