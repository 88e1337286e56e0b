/*
 * tunnel: a CONNECT after the proxy said 200: the ClientHello check shared
 * with interception, then, for an opaque tunnel, the splice.
 *
 * ClientHello. The first bytes from the client must be a TLS ClientHello
 * (sni.h) whose server name is the CONNECT host; a CONNECT to an IP literal
 * must send no server name. Bytes that are not TLS get an HTTP 400 in
 * plain text (a client speaking plain HTTP into the tunnel reads it); a
 * ClientHello that is malformed or names another host gets a fatal TLS
 * alert (access_denied). Either way the refusal is recorded and the
 * connection closed once the answer is out.
 *
 * Splice. Bytes are moved both ways through one EG_BUF buffer per
 * direction, read only while that buffer has room (so a slow side slows the
 * other instead of growing memory), counted in the job's byte totals and
 * limit, and a side's end of file is passed on (shutdown(SHUT_WR)) once
 * what it sent is written. The tunnel ends when both sides have ended and
 * everything is written, on an error, at the job's idle timeout (no byte
 * either way) or total timeout, or when the job's byte limit is reached;
 * its Use record (reserved at the CONNECT) then carries the byte counts.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "al_err.h"
#include "al_log.h"
#include "egress.h"

#define CHUNK  (16 * 1024)
#define ROUNDS 16

static const uint8_t ALERT_ACCESS_DENIED[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31};

static void set_io(struct eg_conn *c, ev_io *w, int fd, int *cur, int ev)
{
    if (fd < 0 || ev == *cur)
        return;
    ev_io_stop(c->p->loop, w);
    *cur = ev;
    if (ev) {
        ev_io_set(w, fd, ev);
        ev_io_start(c->p->loop, w);
    }
}

static void update_io(struct eg_conn *c)
{
    int cev = 0, uev = 0;

    if (c->dying)
        return;
    if (c->st == CS_HELLO) {
        if (!c->close_after_flush && !c->c_eof)
            cev |= EV_READ;
    } else if (c->st == CS_TUNNEL) {
        if (!c->c_eof && c->c2u.len < EG_BUF)
            cev |= EV_READ;
        if (!c->u_eof && c->u2c.len < EG_BUF)
            uev |= EV_READ;
        if (c->c2u.len)
            uev |= EV_WRITE;
    }
    if (c->u2c.len)
        cev |= EV_WRITE;
    set_io(c, &c->cio, c->cfd, &c->cio_ev, cev);
    set_io(c, &c->uio, c->ufd, &c->uio_ev, uev);
}

/* Writes b to fd. Returns 0 (maybe partly) or -errno. */
static int write_out(int fd, struct rl_buf *b)
{
    while (b->len) {
        ssize_t w = send(fd, b->p, b->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -errno;
        rl_buf_consume(b, (size_t)w);
    }
    return 0;
}

/* Reads up to room bytes from fd into b. Returns bytes, 0 at EOF, AL_ERR_AGAIN or -errno. */
static ssize_t read_in(int fd, struct rl_buf *b, size_t room)
{
    uint8_t buf[CHUNK];
    ssize_t r;

    if (room > sizeof(buf))
        room = sizeof(buf);
    r = recv(fd, buf, room, MSG_DONTWAIT);
    if (r < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? AL_ERR_AGAIN : -errno;
    if (r > 0 && rl_buf_append(b, buf, (size_t)r) < 0)
        r = AL_ERR_NOMEM;
    return r;
}

void eg_tunnel_flush_client(struct eg_conn *c)
{
    int rc = write_out(c->cfd, &c->u2c);

    if (rc < 0) {
        eg_conn_abort(c, "the client connection failed");
        return;
    }
    if (c->close_after_flush && c->u2c.len == 0) {
        shutdown(c->cfd, SHUT_WR);
        eg_conn_abort(c, "refused");
        return;
    }
    update_io(c);
}

/* Refuses the tunnel: records, answers with what (to the client), closes. */
static void refuse(struct eg_conn *c, int status, const char *reason, const void *what, size_t len)
{
    struct eg_use u = {.cred = -1,
                       .destination = c->dest,
                       .method = "CONNECT",
                       .path = "",
                       .status = status,
                       .reason = reason};

    eg_job_use(c->job, &u, c->reserved ? EG_CTL_RESERVED : EG_CTL_USE);
    c->reserved = 0;
    AL_LOG_INFO("egress.tunnel.refused", "job=%s conn=%llu dest=%s reason=\"%s\"", c->job->id,
                (unsigned long long)c->id, c->dest, reason);
    rl_buf_reset(&c->u2c);
    if (rl_buf_append(&c->u2c, what, len) < 0) {
        eg_conn_abort(c, reason);
        return;
    }
    c->close_after_flush = 1;
    eg_tunnel_flush_client(c);
}

static void refuse_plain(struct eg_conn *c, const char *reason)
{
    char msg[EG_REASON_MAX + 200];
    char body[EG_REASON_MAX + 40];
    int bl = snprintf(body, sizeof(body), EG_SERVICE ": %s\n", reason);
    int ml = snprintf(msg, sizeof(msg),
                      "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                      "Connection: close\r\nContent-Length: %d\r\n\r\n%s",
                      bl, body);
    refuse(c, 400, reason, msg, (size_t)ml < sizeof(msg) ? (size_t)ml : sizeof(msg) - 1);
}

/* The SNI against the CONNECT target. Returns NULL or why not (in buf). */
static const char *sni_mismatch(const struct eg_conn *c, const char *sni, char *buf, size_t n)
{
    if (c->target.host.kind != EG_HOST_NAME) {
        if (!sni[0])
            return NULL;
        snprintf(buf, n, "the ClientHello names %s but the CONNECT target is the address %s", sni,
                 c->dest);
        return buf;
    }
    if (!sni[0]) {
        snprintf(buf, n, "the ClientHello has no server name (SNI) for %s", c->dest);
        return buf;
    }
    if (strcmp(sni, c->target.host.name) != 0) {
        snprintf(buf, n, "the ClientHello's server name %s disagrees with the CONNECT target %s",
                 sni, c->dest);
        return buf;
    }
    return NULL;
}

int eg_hello_step(struct eg_conn *c)
{
    char sni[EG_SNI_MAX], buf[EG_REASON_MAX];
    const char *why = NULL;
    size_t used = 0;
    int rc;

    for (int i = 0; i < ROUNDS && !c->c_eof && c->c2u.len < EG_HELLO_BUF_MAX; i++) {
        ssize_t r = read_in(c->cfd, &c->c2u, EG_HELLO_BUF_MAX - c->c2u.len);
        if (r == AL_ERR_AGAIN)
            break;
        if (r <= 0) {
            if (r == 0)
                c->c_eof = 1;
            else {
                eg_conn_abort(c, "the client connection failed");
                return -1;
            }
        }
    }
    rc = eg_hello_parse(c->c2u.p, c->c2u.len, sni, &used, &why);
    if (rc == 1 && !c->c_eof && c->c2u.len < EG_HELLO_BUF_MAX)
        return 0;
    if (rc == AL_ERR_PROTO) {
        refuse_plain(c, why);
        return -1;
    }
    if (rc != 0) {
        if (rc == 1)
            why = c->c_eof ? "the client ended the tunnel inside its ClientHello"
                           : "ClientHello too large";
        refuse(c, 400, why, ALERT_ACCESS_DENIED, sizeof(ALERT_ACCESS_DENIED));
        return -1;
    }
    if ((why = sni_mismatch(c, sni, buf, sizeof(buf)))) {
        refuse(c, 400, why, ALERT_ACCESS_DENIED, sizeof(ALERT_ACCESS_DENIED));
        return -1;
    }
    return 1;
}

void eg_tunnel_start(struct eg_conn *c)
{
    c->st = CS_TUNNEL;
    eg_conn_touch(c);
    eg_conn_arm(c);
    AL_LOG_DEBUG("egress.tunnel.open", "job=%s conn=%llu dest=%s", c->job->id,
                 (unsigned long long)c->id, c->dest);
    eg_tunnel_io(c, 0, 0);
}

static void byte_limit(struct eg_conn *c)
{
    char reason[EG_REASON_MAX];

    snprintf(reason, sizeof(reason), "the job's byte limit (%lld bytes) was reached",
             (long long)c->job->bytes.max);
    eg_conn_abort(c, reason);
}

/* Moves what can be moved both ways. Returns 0, or -1 when the connection
 * ended. */
static int pump(struct eg_conn *c)
{
    for (int i = 0; i < ROUNDS; i++) {
        int moved = 0;
        ssize_t r;
        if (!c->c_eof && c->c2u.len < EG_BUF) {
            r = read_in(c->cfd, &c->c2u, EG_BUF - c->c2u.len);
            if (r > 0) {
                moved = 1;
                c->up_bytes += (uint64_t)r;
                if (eg_job_charge(c->job, (uint64_t)r, 1) < 0) {
                    byte_limit(c);
                    return -1;
                }
            } else if (r == 0) {
                c->c_eof = 1;
            } else if (r != AL_ERR_AGAIN) {
                eg_conn_abort(c, "the client connection failed");
                return -1;
            }
        }
        if (!c->u_eof && c->u2c.len < EG_BUF) {
            r = read_in(c->ufd, &c->u2c, EG_BUF - c->u2c.len);
            if (r > 0) {
                moved = 1;
                c->down_bytes += (uint64_t)r;
                if (eg_job_charge(c->job, (uint64_t)r, 0) < 0) {
                    byte_limit(c);
                    return -1;
                }
            } else if (r == 0) {
                c->u_eof = 1;
            } else if (r != AL_ERR_AGAIN) {
                eg_conn_abort(c, "the upstream connection failed");
                return -1;
            }
        }
        size_t before = c->c2u.len + c->u2c.len;
        if (write_out(c->ufd, &c->c2u) < 0) {
            eg_conn_abort(c, "the upstream connection failed");
            return -1;
        }
        if (write_out(c->cfd, &c->u2c) < 0) {
            eg_conn_abort(c, "the client connection failed");
            return -1;
        }
        moved |= c->c2u.len + c->u2c.len < before;
        if (moved)
            eg_conn_touch(c);
        if (!moved)
            break;
    }
    if (c->c_eof && !c->c2u.len && !c->u_shut) {
        shutdown(c->ufd, SHUT_WR);
        c->u_shut = 1;
    }
    if (c->u_eof && !c->u2c.len && !c->c_shut) {
        shutdown(c->cfd, SHUT_WR);
        c->c_shut = 1;
    }
    if (c->c_shut && c->u_shut) {
        eg_conn_abort(c, "");
        return -1;
    }
    return 0;
}

void eg_tunnel_io(struct eg_conn *c, int client, int revents)
{
    (void)client;
    (void)revents;

    if (c->dying)
        return;
    if (c->st == CS_HELLO) {
        if (c->u2c.len || c->close_after_flush) {
            eg_tunnel_flush_client(c);
            if (c->dying || c->close_after_flush)
                return;
        }
        int rc = eg_hello_step(c);
        if (rc < 0 || c->dying)
            return;
        if (rc == 0) {
            update_io(c);
            return;
        }
        if (c->intercept) {
            ev_io_stop(c->p->loop, &c->cio);
            c->cio_ev = 0;
            eg_mitm_start(c);
            return;
        }
        eg_tunnel_start(c);
        return;
    }
    if (c->st != CS_TUNNEL)
        return;
    if (pump(c) < 0)
        return;
    eg_conn_arm(c);
    update_io(c);
}
