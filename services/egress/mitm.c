/*
 * mitm: an intercepted CONNECT. After the ClientHello check (tunnel.c) the
 * proxy runs the TLS server side itself with the leaf its job's CA mints
 * for the CONNECT host (ca.h: ALPN http/1.1 only, TLS 1.2+), within
 * EG_HANDSHAKE_S, then serves the decrypted requests with an inner
 * HTTP/1.1 connection (h1.c, origin-form only) whose requests req.c
 * forwards over the connection's own upstream origin (verified TLS to the
 * CONNECT host, at the addresses checked at CONNECT time).
 *
 * The ClientHello bytes were already read from the socket to check them,
 * so OpenSSL reads through a small BIO that serves those bytes first and
 * then the socket ("prefix BIO"); writes go straight to the socket. A
 * client that does not trust the job's CA (or fails the handshake in any
 * other way) only ends its own connection; the failure is logged.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>

#include "al_err.h"
#include "al_log.h"
#include "al_tls.h"
#include "ca.h"
#include "egress.h"

struct prefix {
    int fd;
    struct rl_buf pre;
    size_t off;
};

static int prefix_read(BIO *b, char *out, int len)
{
    struct prefix *x = BIO_get_data(b);
    ssize_t r;

    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    if (x->off < x->pre.len) {
        size_t k = x->pre.len - x->off;
        if (k > (size_t)len)
            k = (size_t)len;
        memcpy(out, x->pre.p + x->off, k);
        x->off += k;
        if (x->off == x->pre.len)
            rl_buf_cleanup(&x->pre);
        return (int)k;
    }
    r = recv(x->fd, out, (size_t)len, MSG_DONTWAIT);
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            BIO_set_retry_read(b);
        return -1;
    }
    return (int)r;
}

static int prefix_write(BIO *b, const char *in, int len)
{
    struct prefix *x = BIO_get_data(b);
    ssize_t w;

    BIO_clear_retry_flags(b);
    w = send(x->fd, in, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            BIO_set_retry_write(b);
        return -1;
    }
    return (int)w;
}

static long prefix_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    struct prefix *x = BIO_get_data(b);
    (void)num;
    (void)ptr;

    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return x ? (long)(x->pre.len - x->off) : 0;
    default:
        return 0;
    }
}

static int prefix_destroy(BIO *b)
{
    struct prefix *x = BIO_get_data(b);

    if (x) {
        rl_buf_cleanup(&x->pre);
        free(x);
        BIO_set_data(b, NULL);
    }
    return 1;
}

static BIO_METHOD *prefix_method(void)
{
    static BIO_METHOD *m;

    if (!m) {
        m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "egress prefix");
        if (m &&
            (BIO_meth_set_read(m, prefix_read) != 1 || BIO_meth_set_write(m, prefix_write) != 1 ||
             BIO_meth_set_ctrl(m, prefix_ctrl) != 1 ||
             BIO_meth_set_destroy(m, prefix_destroy) != 1)) {
            BIO_meth_free(m);
            m = NULL;
        }
    }
    return m;
}

/* A BIO over fd that first serves the bytes of pre (moved out of it). */
static BIO *prefix_bio(int fd, struct rl_buf *pre)
{
    BIO_METHOD *m = prefix_method();
    struct prefix *x = calloc(1, sizeof(*x));
    BIO *b = m && x ? BIO_new(m) : NULL;

    if (!b) {
        free(x);
        return NULL;
    }
    x->fd = fd;
    x->pre = *pre;
    rl_buf_init(pre, EG_HELLO_BUF_MAX);
    BIO_set_data(b, x);
    BIO_set_init(b, 1);
    return b;
}

static void handshake_failed(struct eg_conn *c, const char *what)
{
    char err[256];

    al_tls_errstr(err, sizeof(err));
    AL_LOG_INFO("egress.mitm.handshake", "job=%s conn=%llu dest=%s reason=\"%s: %s\"", c->job->id,
                (unsigned long long)c->id, c->dest, what, err);
    eg_conn_abort(c, what);
}

static void step(struct eg_conn *c)
{
    int rv, ev;
    SSL *ssl = c->ssl;

    ERR_clear_error();
    rv = SSL_do_handshake(ssl);
    if (rv == 1) {
        int fd = c->cfd;
        ev_io_stop(c->p->loop, &c->cio);
        c->cio_ev = 0;
        c->cfd = -1;
        c->ssl = NULL;
        if (eg_conn_inner_h1(c, fd, ssl) < 0) { /* fd and ssl released */
            eg_conn_abort(c, "out of memory");
            return;
        }
        c->st = CS_INNER;
        eg_conn_arm(c);
        AL_LOG_DEBUG("egress.mitm.open", "job=%s conn=%llu dest=%s version=%s", c->job->id,
                     (unsigned long long)c->id, c->dest, SSL_get_version(ssl));
        return;
    }
    switch (SSL_get_error(ssl, rv)) {
    case SSL_ERROR_WANT_READ:
        ev = EV_READ;
        break;
    case SSL_ERROR_WANT_WRITE:
        ev = EV_READ | EV_WRITE;
        break;
    default:
        handshake_failed(c, "TLS handshake with the sandbox client failed");
        return;
    }
    if (ev != c->cio_ev) {
        ev_io_stop(c->p->loop, &c->cio);
        ev_io_set(&c->cio, c->cfd, ev);
        c->cio_ev = ev;
        ev_io_start(c->p->loop, &c->cio);
    }
}

void eg_mitm_start(struct eg_conn *c)
{
    SSL_CTX *ctx = NULL;
    BIO *bio;

    if (!c->job->ca || eg_ca_server_ctx(c->job->ca, &c->target.host, &ctx) < 0) {
        handshake_failed(c, "cannot mint a certificate for the CONNECT host");
        return;
    }
    c->ssl = SSL_new(ctx);
    bio = c->ssl ? prefix_bio(c->cfd, &c->c2u) : NULL;
    if (!bio) {
        eg_conn_abort(c, "out of memory");
        return;
    }
    SSL_set_bio(c->ssl, bio, bio);
    SSL_set_accept_state(c->ssl);
    c->st = CS_TLS;
    c->t_phase = ev_now(c->p->loop);
    eg_conn_arm(c);
    step(c);
}

void eg_mitm_io(struct eg_conn *c)
{
    if (!c->dying && c->st == CS_TLS && c->ssl)
        step(c);
}
