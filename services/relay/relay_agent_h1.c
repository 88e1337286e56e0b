/*
 * relay_agent_h1: the HTTP/1.1 front of the agent side (relay_agent_int.h)
 * over rl_h1conn (h1.h), which parses strictly and enforces the head size,
 * body size and the header/body/idle timeouts.
 *
 * One request at a time per connection: on_request starts an rl_areq, the
 * body goes to the core (which pauses the connection while the gateway
 * stream is full), the response goes out with Content-Length when the
 * gateway gave one and chunked otherwise. Response bytes move from the
 * request's out queue into the connection only while fewer than PEND_HIGH
 * bytes wait there; on_writable moves more, and only then does the core
 * reopen the gateway stream's window. When the response ends the request
 * is detached before rl_h1conn_respond_end(), which may start the next one.
 * A draining relay ends each connection after its current response.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "al_err.h"
#include "al_log.h"
#include "h1.h"
#include "relay_agent_int.h"

#define PEND_HIGH (256 * 1024) /* response bytes queued in the connection */
#define PEND_LOW  (64 * 1024)
#define CHUNK     (64 * 1024)

struct rl_ah1 {
    struct rl_agents *ag;
    struct rl_h1conn *c;
    struct rl_ah1 *prev, *next;
    uint64_t id;
    char peer[64];
    struct rl_areq *cur;
    int keep_alive; /* the current request allows another one */
};

/* ---------- front ops ---------- */

static int h1_reserved(const char *n, size_t l)
{
    static const char *const names[] = {"date",       "content-length", "transfer-encoding",
                                        "connection", "keep-alive",     "te",
                                        "trailer",    "upgrade",        "proxy-connection"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == l && memcmp(names[i], n, l) == 0)
            return 1;
    return 0;
}

static int op_head(struct rl_areq *r, int status, const struct rl_hdr *h, size_t n,
                   int64_t content_length)
{
    struct rl_ah1 *x = rl_areq_front(r);
    struct rl_h1_header *hh = calloc(n + 1, sizeof(*hh));
    size_t k = 0;
    int rc;

    if (!hh)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        if (h1_reserved(h[i].name, h[i].name_len))
            continue; /* the connection writes these itself */
        hh[k++] = (struct rl_h1_header){h[i].name, h[i].name_len, h[i].value, h[i].value_len};
    }
    rc = rl_h1conn_respond_head(x->c, status, hh, k, content_length);
    free(hh);
    return rc;
}

/* The request is over for the connection: detach it, then end the
 * response (which may start parsing the next request). A body the agent is
 * still sending is read and dropped by the connection (within max_body and
 * body_timeout), so an early answer such as 401 keeps the connection. */
static void finish(struct rl_ah1 *x, struct rl_areq *r)
{
    int keep = x->keep_alive && !x->ag->draining;

    x->cur = NULL;
    rl_areq_detach(r);
    rl_h1conn_respond_end(x->c, keep);
}

static void op_kick(struct rl_areq *r)
{
    struct rl_ah1 *x = rl_areq_front(r);
    const uint8_t *p;
    size_t avail;

    while ((avail = rl_areq_out(r, &p)) > 0 && rl_h1conn_pending(x->c) < PEND_HIGH) {
        size_t k = avail < CHUNK ? avail : CHUNK;
        int rc = rl_h1conn_respond_body(x->c, p, k);
        if (rc < 0) {
            AL_LOG_INFO("agent.response", "agent_conn=%llu reason=\"%s\"",
                        (unsigned long long)x->id, al_strerror(rc));
            rl_h1conn_close(x->c);
            return;
        }
        rl_areq_sent(r, k);
    }
    if (rl_areq_out(r, &p) > 0) {
        rl_h1conn_want_writable(x->c, PEND_LOW);
        return;
    }
    if (rl_areq_resp_done(r))
        finish(x, r);
}

static void op_abort(struct rl_areq *r)
{
    struct rl_ah1 *x = rl_areq_front(r);
    /* a truncated chunked or sized body is how HTTP/1.1 says "failed" */
    rl_h1conn_close(x->c);
}

static void op_consumed(struct rl_areq *r, size_t n)
{
    (void)r;
    (void)n; /* reading is paced by pause/resume */
}

static void op_pause(struct rl_areq *r)
{
    struct rl_ah1 *x = rl_areq_front(r);
    rl_h1conn_pause(x->c);
}

static void op_resume(struct rl_areq *r)
{
    struct rl_ah1 *x = rl_areq_front(r);
    rl_h1conn_resume(x->c);
}

static const struct rl_front_ops h1_ops = {
    .head = op_head,
    .kick = op_kick,
    .abort = op_abort,
    .consumed = op_consumed,
    .pause = op_pause,
    .resume = op_resume,
};

/* ---------- rl_h1conn callbacks ---------- */

static int on_request(struct rl_h1conn *c, const struct rl_h1_head *h, void *user)
{
    struct rl_ah1 *x = user;
    struct rl_hdr *hd_h = calloc(h->nheaders + 1, sizeof(*hd_h));
    int rc;
    (void)c;

    if (!hd_h)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < h->nheaders; i++)
        hd_h[i] = (struct rl_hdr){h->headers[i].name, h->headers[i].name_len, h->headers[i].value,
                                  h->headers[i].value_len};
    struct rl_areq_head hd = {
        .method = h->method,
        .target = h->target,
        .target_len = h->target_len,
        .h = hd_h,
        .n = h->nheaders,
        .content_length = h->content_length,
        .end_stream = h->content_length <= 0 && !h->chunked,
        .proto = "h1",
        .conn_id = x->id,
        .peer = x->peer,
    };
    x->keep_alive = h->keep_alive;
    rc = rl_areq_start(x->ag, &h1_ops, x, &hd, &x->cur);
    free(hd_h);
    return rc;
}

static void on_body(struct rl_h1conn *c, const uint8_t *d, size_t n, void *user)
{
    struct rl_ah1 *x = user;
    (void)c;
    if (x->cur)
        rl_areq_body(x->cur, d, n);
}

static void on_body_end(struct rl_h1conn *c, void *user)
{
    struct rl_ah1 *x = user;
    (void)c;
    if (x->cur)
        rl_areq_body_end(x->cur);
}

static void on_writable(struct rl_h1conn *c, void *user)
{
    struct rl_ah1 *x = user;
    (void)c;
    if (x->cur)
        op_kick(x->cur);
}

static void on_close(struct rl_h1conn *c, int err, void *user)
{
    struct rl_ah1 *x = user;
    struct rl_agents *ag = x->ag;
    (void)c;

    AL_LOG_DEBUG("agent.close", "agent_conn=%llu proto=h1 peer=%s reason=\"%s\"",
                 (unsigned long long)x->id, x->peer, err ? al_strerror(err) : "closed");
    if (x->cur) {
        struct rl_areq *r = x->cur;
        x->cur = NULL;
        rl_areq_detach(r);
    }
    if (x->prev)
        x->prev->next = x->next;
    else
        ag->h1conns = x->next;
    if (x->next)
        x->next->prev = x->prev;
    free(x);
    rl_agents_conn_closed(ag, 0);
}

/* ---------- connections ---------- */

void rl_ah1_accept(struct rl_agents *ag, int fd, SSL *ssl, const char *peer)
{
    struct rl_ah1 *x = calloc(1, sizeof(*x));
    struct rl_h1_limits lim = {
        .max_head = ag->o.max_head,
        .max_body = ag->o.max_body,
        .header_timeout_s = ag->o.header_timeout_s,
        .body_timeout_s = ag->o.body_timeout_s,
        .idle_timeout_s = ag->o.idle_timeout_s,
    };
    static const struct rl_h1conn_cbs cbs = {
        .on_request = on_request,
        .on_body = on_body,
        .on_body_end = on_body_end,
        .on_writable = on_writable,
        .on_close = on_close,
    };

    if (!x) {
        AL_LOG_WARN("agent.accept", "peer=%s reason=\"out of memory\"", peer);
        SSL_free(ssl);
        close(fd);
        return;
    }
    x->ag = ag;
    snprintf(x->peer, sizeof(x->peer), "%s", peer);
    x->id = rl_agents_conn_opened(ag, 0);
    x->next = ag->h1conns;
    if (ag->h1conns)
        ag->h1conns->prev = x;
    ag->h1conns = x;
    AL_LOG_DEBUG("agent.accept", "agent_conn=%llu proto=h1 peer=%s tls=%s",
                 (unsigned long long)x->id, peer, ssl ? "on" : "off");
    if (rl_h1conn_new(ag->loop, fd, ssl, &lim, &cbs, x, &x->c) < 0) {
        /* fd and ssl were released and no callback runs */
        AL_LOG_WARN("agent.accept", "peer=%s reason=\"out of memory\"", peer);
        on_close(NULL, AL_ERR_NOMEM, x);
    }
}

/* on_close may unlink (and free) the connection it reports: step first. */
void rl_ah1_drain_all(struct rl_agents *ag)
{
    for (struct rl_ah1 *x = ag->h1conns, *next; x; x = next) {
        next = x->next;
        rl_h1conn_shutdown(x->c);
    }
}

void rl_ah1_close_all(struct rl_agents *ag)
{
    for (struct rl_ah1 *x = ag->h1conns, *next; x; x = next) {
        next = x->next;
        rl_h1conn_close(x->c);
    }
}
