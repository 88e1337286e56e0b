/*
 * h1listen: the agent listener (see h1.h). Accepts, then decides per
 * connection between HTTP/2 and HTTP/1.1 before handing the socket over:
 *
 *   TLS        non-blocking handshake; ALPN "h2" -> on_h2, "http/1.1" or no
 *              ALPN -> on_h1 (al_tls refuses a client that offers only other
 *              protocols)
 *   plaintext  recv(MSG_PEEK) of up to 24 bytes: the HTTP/2 connection
 *              preface -> on_h2 (h2c prior knowledge), any byte that differs
 *              from it -> on_h1. A peer that has sent only a prefix of the
 *              preface is peeked again on a short backoff timer (the bytes
 *              stay in the socket, so a read watcher would fire at once
 *              forever) until it sends more or the deadline passes.
 *
 * Each connection in this phase is a struct pend with one io watcher and one
 * timer (the deadline, and the peek backoff); at most max_conns exist at
 * once: past that the accept watcher stops and the kernel backlog holds the
 * rest. Failures are logged at info with the peer address only. A pend is
 * unlinked and freed before its callback runs, so the callback may free the
 * listener.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "al_addr.h"
#include "al_err.h"
#include "al_log.h"
#include "h1.h"

#define BACKLOG      1024
#define ACCEPT_BATCH 32
#define ACCEPT_PAUSE 1.0   /* seconds without accepting after EMFILE */
#define PEEK_FIRST   0.002 /* peek backoff: 2 ms doubling to 50 ms */
#define PEEK_MAX     0.05

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN (sizeof(h2_preface) - 1)

struct pend {
    struct rl_listener *l;
    struct pend *prev, *next;
    int fd;
    SSL *ssl;
    ev_io io;
    ev_timer timer;
    ev_tstamp deadline;
    double backoff; /* plaintext: next peek delay; 0 = waiting on the io watcher */
    char peer[AL_ADDR_STRLEN];
};

struct rl_listener {
    struct ev_loop *loop;
    int fd;
    int port;
    ev_io accept_w;
    ev_timer pause_w;
    int emfile_paused;
    struct rl_listener_opts o;
    struct pend *pends;
    size_t npend;
};

static void pend_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void pend_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

static void accept_maybe_resume(struct rl_listener *l)
{
    if (!l->emfile_paused && l->npend < l->o.max_conns && !ev_is_active(&l->accept_w))
        ev_io_start(l->loop, &l->accept_w);
}

/* Unlinks p and stops its watchers; fd and ssl are left to the caller. */
static void pend_unlink(struct pend *p)
{
    struct rl_listener *l = p->l;

    ev_io_stop(l->loop, &p->io);
    ev_timer_stop(l->loop, &p->timer);
    if (p->prev)
        p->prev->next = p->next;
    else
        l->pends = p->next;
    if (p->next)
        p->next->prev = p->prev;
    l->npend--;
    accept_maybe_resume(l);
}

static void pend_drop(struct pend *p, const char *why)
{
    if (why)
        AL_LOG_INFO("agent.handshake", "peer=%s reason=\"%s\"", p->peer, why);
    pend_unlink(p);
    SSL_free(p->ssl);
    close(p->fd);
    free(p);
}

/* Hands the connection over; p is freed before the callback runs. */
static void pend_hand(struct pend *p, int h2)
{
    struct rl_listener *l = p->l;
    void (*cb)(int, SSL *, const char *, void *) = h2 ? l->o.on_h2 : l->o.on_h1;
    void *user = l->o.user;
    char peer[AL_ADDR_STRLEN];
    int fd = p->fd;
    SSL *ssl = p->ssl;

    memcpy(peer, p->peer, sizeof(peer));
    pend_unlink(p);
    free(p);
    cb(fd, ssl, peer, user);
}

static void set_io(struct pend *p, int events)
{
    struct ev_loop *loop = p->l->loop;

    if (ev_is_active(&p->io) && (p->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(loop, &p->io);
    ev_io_set(&p->io, p->fd, events);
    ev_io_start(loop, &p->io);
}

static void tls_step(struct pend *p)
{
    const unsigned char *proto = NULL;
    unsigned plen = 0;
    int rv;

    ERR_clear_error();
    rv = SSL_do_handshake(p->ssl);
    if (rv == 1) {
        SSL_get0_alpn_selected(p->ssl, &proto, &plen);
        if (plen == 2 && memcmp(proto, "h2", 2) == 0)
            pend_hand(p, 1);
        else if (plen == 0 || (plen == 8 && memcmp(proto, "http/1.1", 8) == 0))
            pend_hand(p, 0);
        else
            pend_drop(p, "unexpected ALPN protocol");
        return;
    }
    switch (SSL_get_error(p->ssl, rv)) {
    case SSL_ERROR_WANT_READ:
        set_io(p, EV_READ);
        return;
    case SSL_ERROR_WANT_WRITE:
        set_io(p, EV_READ | EV_WRITE);
        return;
    default:
        ERR_clear_error();
        pend_drop(p, "TLS handshake failed");
    }
}

static void rearm_timer(struct pend *p, double in)
{
    struct ev_loop *loop = p->l->loop;
    double left = p->deadline - ev_now(loop);

    if (in <= 0 || in > left)
        in = left > 0 ? left : 0;
    ev_timer_stop(loop, &p->timer);
    ev_timer_set(&p->timer, in, 0.);
    ev_timer_start(loop, &p->timer);
}

static void peek_step(struct pend *p)
{
    char buf[PREFACE_LEN];
    ssize_t n = recv(p->fd, buf, sizeof(buf), MSG_PEEK);

    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            p->backoff = 0;
            set_io(p, EV_READ);
            rearm_timer(p, 0);
            return;
        }
        pend_drop(p, "connection failed before the first request");
        return;
    }
    if (n == 0) {
        pend_drop(p, "closed before the first request");
        return;
    }
    if (memcmp(buf, h2_preface, (size_t)n) != 0) {
        pend_hand(p, 0);
        return;
    }
    if ((size_t)n == PREFACE_LEN) {
        pend_hand(p, 1);
        return;
    }
    /* a prefix of the preface: wait for more without spinning on the data
     * that stays in the socket */
    ev_io_stop(p->l->loop, &p->io);
    p->backoff = p->backoff > 0 ? p->backoff * 2 : PEEK_FIRST;
    if (p->backoff > PEEK_MAX)
        p->backoff = PEEK_MAX;
    rearm_timer(p, p->backoff);
}

static void pend_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pend *p = w->data;
    (void)loop;
    (void)revents;

    if (p->ssl)
        tls_step(p);
    else
        peek_step(p);
}

static void pend_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pend *p = w->data;
    (void)revents;

    if (ev_now(loop) >= p->deadline - 1e-4) {
        pend_drop(p, p->ssl ? "TLS handshake timeout" : "no request before the deadline");
        return;
    }
    if (!p->ssl && p->backoff > 0) {
        peek_step(p);
        return;
    }
    rearm_timer(p, 0);
}

static void pend_start(struct rl_listener *l, int fd, const char *peer)
{
    struct pend *p = calloc(1, sizeof(*p));

    if (!p) {
        AL_LOG_WARN("agent.accept", "peer=%s reason=\"out of memory\"", peer);
        close(fd);
        return;
    }
    p->l = l;
    p->fd = fd;
    snprintf(p->peer, sizeof(p->peer), "%s", peer);
    if (l->o.tls) {
        p->ssl = al_tls_ssl_new(l->o.tls);
        if (!p->ssl || SSL_set_fd(p->ssl, fd) != 1) {
            AL_LOG_WARN("agent.accept", "peer=%s reason=\"cannot create TLS session\"", peer);
            SSL_free(p->ssl);
            close(fd);
            free(p);
            return;
        }
        SSL_set_accept_state(p->ssl);
        SSL_set_mode(p->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
    ev_io_init(&p->io, pend_io_cb, fd, EV_READ);
    p->io.data = p;
    ev_init(&p->timer, pend_timer_cb);
    p->timer.data = p;
    p->deadline = ev_now(l->loop) + l->o.handshake_timeout_s;
    p->next = l->pends;
    if (l->pends)
        l->pends->prev = p;
    l->pends = p;
    l->npend++;
    rearm_timer(p, 0);
    /* nothing has arrived yet on a fresh socket: wait for the first bytes */
    ev_io_start(l->loop, &p->io);
}

static void pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rl_listener *l = w->data;
    (void)loop;
    (void)revents;

    l->emfile_paused = 0;
    accept_maybe_resume(l);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct rl_listener *l = w->data;
    (void)revents;

    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        char peer[AL_ADDR_STRLEN];

        if (l->npend >= l->o.max_conns) {
            ev_io_stop(loop, &l->accept_w); /* the rest wait in the backlog */
            return;
        }
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                AL_LOG_WARN("agent.accept", "reason=\"%s\" pause=%.0fs", strerror(errno),
                            ACCEPT_PAUSE);
                l->emfile_paused = 1;
                ev_io_stop(loop, &l->accept_w);
                ev_timer_set(&l->pause_w, ACCEPT_PAUSE, 0.);
                ev_timer_start(loop, &l->pause_w);
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                AL_LOG_WARN("agent.accept", "reason=\"%s\"", strerror(errno));
            }
            return;
        }
        al_addr_format((struct sockaddr *)&ss, peer, sizeof(peer));
        pend_start(l, fd, peer);
    }
}

int rl_listener_new(struct ev_loop *loop, const struct rl_listener_opts *o,
                    struct rl_listener **out)
{
    struct rl_listener *l;
    int rc;

    *out = NULL;
    if (!o || !o->addr || !o->on_h1 || !o->on_h2)
        return AL_ERR_INVAL;
    l = calloc(1, sizeof(*l));
    if (!l)
        return AL_ERR_NOMEM;
    l->loop = loop;
    l->o = *o;
    l->o.addr = NULL; /* not kept: borrowed only for this call */
    if (l->o.handshake_timeout_s <= 0)
        l->o.handshake_timeout_s = 10;
    if (!l->o.max_conns)
        l->o.max_conns = 1024;
    rc = al_listen_tcp(o->addr, BACKLOG, &l->fd);
    if (rc < 0) {
        free(l);
        return rc;
    }
    rc = al_addr_local_port(l->fd);
    if (rc < 0) {
        close(l->fd);
        free(l);
        return rc;
    }
    l->port = rc;
    ev_io_init(&l->accept_w, accept_cb, l->fd, EV_READ);
    l->accept_w.data = l;
    ev_init(&l->pause_w, pause_cb);
    l->pause_w.data = l;
    ev_io_start(loop, &l->accept_w);
    *out = l;
    return 0;
}

int rl_listener_port(const struct rl_listener *l)
{
    return l->port;
}

void rl_listener_free(struct rl_listener *l)
{
    if (!l)
        return;
    ev_io_stop(l->loop, &l->accept_w);
    ev_timer_stop(l->loop, &l->pause_w);
    l->emfile_paused = 1; /* pend_unlink must not restart accepting */
    while (l->pends)
        pend_drop(l->pends, NULL);
    close(l->fd);
    free(l);
}
