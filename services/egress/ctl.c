/*
 * ctl: the control socket (see ctl.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "al_err.h"
#include "al_log.h"
#include "al_wipe.h"
#include "ctl.h"

#define READS_PER_EVENT 64

struct qmsg {
    struct qmsg *next;
    size_t len;
    int use; /* counts against max_uses */
    uint8_t data[];
};

struct eg_ctl {
    struct ev_loop *loop;
    int fd;
    ev_io rio, wio;
    ev_timer eof_t; /* on_eof runs from the loop, never inside a send */
    struct eg_ctl_cbs cbs;
    void *user;
    uint8_t *buf; /* one datagram, EG_CTL_MAX_MSG + 1 */
    struct qmsg *head, *tail;
    size_t queued, uses, reserved, max_uses;
    uint64_t dropped;
    int eof;
};

static void close_fds(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

static void gone(struct eg_ctl *c)
{
    if (c->eof)
        return;
    c->eof = 1;
    ev_io_stop(c->loop, &c->rio);
    ev_io_stop(c->loop, &c->wio);
    ev_timer_start(c->loop, &c->eof_t);
}

static void eof_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct eg_ctl *c = w->data;
    (void)loop;
    (void)revents;
    if (c->cbs.on_eof)
        c->cbs.on_eof(c, c->user);
}

/* Descriptors from the control data; *trunc when the kernel cut them. */
static size_t take_fds(struct msghdr *mh, int *fds)
{
    size_t n = 0;

    for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            if (n < EG_CTL_MAX_FDS)
                fds[n++] = fd;
            else
                close(fd);
        }
    }
    return n;
}

static void deliver(struct eg_ctl *c, size_t len, int *fds, size_t nfds)
{
    Airlock__Internal__EgressMsg *m =
        airlock__internal__egress_msg__unpack(&al_wipe_pb, len, c->buf);

    explicit_bzero(c->buf, len);
    if (!m || m->msg_case == AIRLOCK__INTERNAL__EGRESS_MSG__MSG__NOT_SET) {
        AL_LOG_WARN("egress.ctl.drop", "reason=\"%s\" bytes=%zu fds=%zu",
                    m ? "empty EgressMsg" : "not an EgressMsg", len, nfds);
        if (m)
            airlock__internal__egress_msg__free_unpacked(m, &al_wipe_pb);
        close_fds(fds, nfds);
        return;
    }
    if (c->cbs.on_msg)
        c->cbs.on_msg(c, m, fds, nfds, c->user);
    else
        close_fds(fds, nfds);
    airlock__internal__egress_msg__free_unpacked(m, &al_wipe_pb);
}

/* Receives one datagram. Returns 1 to go on, 0 to stop reading for now. */
static int read_one(struct eg_ctl *c)
{
    union {
        struct cmsghdr align;
        char b[CMSG_SPACE(sizeof(int) * EG_CTL_MAX_FDS * 2)];
    } ctl;
    struct iovec iov = {c->buf, EG_CTL_MAX_MSG + 1};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b)};
    int fds[EG_CTL_MAX_FDS];
    size_t nfds;
    ssize_t r = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);

    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        AL_LOG_WARN("egress.ctl.read", "reason=\"%s\"", strerror(errno));
        gone(c);
        return 0;
    }
    nfds = take_fds(&mh, fds);
    if (r == 0 && nfds == 0) {
        gone(c);
        return 0;
    }
    if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || (size_t)r > EG_CTL_MAX_MSG) {
        AL_LOG_WARN("egress.ctl.drop", "reason=\"%s\" fds=%zu",
                    (mh.msg_flags & MSG_CTRUNC) ? "descriptors cut short"
                                                : "datagram larger than 1 MiB",
                    nfds);
        explicit_bzero(c->buf, (size_t)r > EG_CTL_MAX_MSG ? EG_CTL_MAX_MSG + 1 : (size_t)r);
        close_fds(fds, nfds);
        return 1;
    }
    deliver(c, (size_t)r, fds, nfds);
    return !c->eof;
}

static void rio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct eg_ctl *c = w->data;
    (void)loop;
    (void)revents;

    for (int i = 0; i < READS_PER_EVENT && !c->eof; i++)
        if (!read_one(c))
            break;
}

static void flush(struct eg_ctl *c)
{
    while (c->head && !c->eof) {
        struct qmsg *q = c->head;
        ssize_t w = send(c->fd, q->data, q->len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ENOBUFS) {
                if (!ev_is_active(&c->wio))
                    ev_io_start(c->loop, &c->wio);
                return;
            }
            AL_LOG_WARN("egress.ctl.write", "reason=\"%s\"", strerror(errno));
            gone(c);
            return;
        }
        c->head = q->next;
        if (!c->head)
            c->tail = NULL;
        c->queued--;
        if (q->use)
            c->uses--;
        free(q);
    }
    if (ev_is_active(&c->wio))
        ev_io_stop(c->loop, &c->wio);
}

static void wio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    flush(w->data);
}

int eg_ctl_new(struct ev_loop *loop, int fd, size_t max_uses, const struct eg_ctl_cbs *cbs,
               void *user, struct eg_ctl **out)
{
    struct eg_ctl *c = calloc(1, sizeof(*c));

    *out = NULL;
    if (c)
        c->buf = malloc(EG_CTL_MAX_MSG + 1);
    if (!c || !c->buf) {
        if (c)
            free(c->buf);
        free(c);
        close(fd);
        return AL_ERR_NOMEM;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    c->loop = loop;
    c->fd = fd;
    c->cbs = *cbs;
    c->user = user;
    c->max_uses = max_uses ? max_uses : EG_CTL_MAX_USES;
    ev_io_init(&c->rio, rio_cb, fd, EV_READ);
    c->rio.data = c;
    ev_io_init(&c->wio, wio_cb, fd, EV_WRITE);
    c->wio.data = c;
    ev_timer_init(&c->eof_t, eof_cb, 0., 0.);
    c->eof_t.data = c;
    ev_io_start(loop, &c->rio);
    *out = c;
    return 0;
}

void eg_ctl_free(struct eg_ctl *c)
{
    if (!c)
        return;
    ev_io_stop(c->loop, &c->rio);
    ev_io_stop(c->loop, &c->wio);
    ev_timer_stop(c->loop, &c->eof_t);
    while (c->head) {
        struct qmsg *q = c->head;
        c->head = q->next;
        free(q);
    }
    close(c->fd);
    al_wipe_free(c->buf);
    free(c);
}

int eg_ctl_reserve(struct eg_ctl *c)
{
    if (c->eof)
        return AL_ERR_CLOSED;
    if (c->uses + c->reserved >= c->max_uses)
        return AL_ERR_TOOBIG;
    c->reserved++;
    return 0;
}

void eg_ctl_release(struct eg_ctl *c)
{
    if (c->reserved)
        c->reserved--;
}

int eg_ctl_send(struct eg_ctl *c, const Airlock__Internal__EgressMsg *m, enum eg_ctl_kind kind)
{
    size_t len;
    struct qmsg *q;

    if (kind == EG_CTL_RESERVED)
        eg_ctl_release(c);
    if (c->eof)
        return AL_ERR_CLOSED;
    if (kind == EG_CTL_USE && c->uses + c->reserved >= c->max_uses) {
        c->dropped++;
        return AL_ERR_TOOBIG;
    }
    len = airlock__internal__egress_msg__get_packed_size(m);
    if (len > EG_CTL_MAX_MSG)
        return AL_ERR_TOOBIG;
    q = malloc(sizeof(*q) + (len ? len : 1));
    if (!q)
        return AL_ERR_NOMEM;
    airlock__internal__egress_msg__pack(m, q->data);
    q->len = len;
    q->use = kind != EG_CTL_REPLY;
    q->next = NULL;
    if (c->tail)
        c->tail->next = q;
    else
        c->head = q;
    c->tail = q;
    c->queued++;
    c->uses += (size_t)q->use;
    flush(c);
    return 0;
}

uint64_t eg_ctl_dropped(const struct eg_ctl *c)
{
    return c->dropped;
}

size_t eg_ctl_queued(const struct eg_ctl *c)
{
    return c->queued;
}
