/*
 * relay_tstream: agent streams down gateway connections; see relay_tunnel.h.
 *
 * A stream is created by rl_tstream_open() on the chosen connection and
 * lives until exactly one of: on_end, on_error (both run, then the module
 * frees it) or rl_tstream_cancel() (freed at once, or right after the
 * callback it was called from returns). Each attempt on a connection gets a
 * new grant (holder = that connection's gateway identity) and a new HTTP/2
 * stream; the request body stays in `body` from its first byte while a
 * replay is possible (no response head yet, body within max_replay), after
 * that only the bytes not yet sent are kept.
 *
 * Replay happens only when the request provably never reached the gateway:
 * RST_STREAM REFUSED_STREAM, a stream id above the GOAWAY's last stream id,
 * or request HEADERS nghttp2 never sent. At most RT_MAX_ATTEMPTS connections
 * are tried, each once.
 *
 * Response bytes are counted in `unconsumed` until the caller reports them
 * delivered (rl_tstream_consume -> nghttp2_session_consume); whatever is
 * still counted when the stream goes is given back to the connection window
 * so other streams never starve.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "al_base64.h"
#include "al_err.h"
#include "al_grant.h"
#include "al_h2conn.h"
#include "al_log.h"
#include "al_metrics.h"
#include "relay_tint.h"

#define PRINCIPAL_MAX 256

/* The response head while its HEADERS frame(s) arrive. */
struct rt_head {
    struct rl_buf buf;                   /* name, value, name, value ... */
    size_t field[RT_HEAD_MAX_FIELDS][2]; /* name length, value length */
    size_t n;
    int status;
};

struct rl_tstream {
    uint8_t kind; /* RT_KIND_AGENT; first member */
    struct rl_tunnels *t;
    struct rt_tunnel *tunnel;
    struct rt_conn *conn;             /* NULL between attempts and at the end */
    struct rl_tstream *prev, *next;   /* conn->streams */
    struct rl_tstream *nprev, *nnext; /* t->notify */
    int notify_queued;
    int32_t sid;

    /* the request, kept for replays */
    char *server, *method, *path, *principal, *request_id;
    nghttp2_nv *hdrs;
    size_t nhdrs;
    char *grant; /* base64 SignedGrant of the current attempt */
    uint64_t pin;
    int no_body;

    /* request body */
    struct rl_buf body;
    size_t sent; /* bytes of body handed to nghttp2 */
    int end_req;
    int replayable; /* body holds every byte from the first */
    size_t low;
    int want_writable;

    /* response */
    struct rt_head *head;
    int head_seen, proto_err;
    size_t unconsumed;

    int headers_sent;
    int attempts;
    uint64_t tried[RT_MAX_ATTEMPTS];
    int in_cb, dead, done;
    struct rl_tstream_cbs cbs;
    void *user;
};

static size_t pending(const struct rl_tstream *s)
{
    return s->body.len - s->sent;
}

/* ---- teardown ---- */

/* notify_queued: 0 not queued, 1 in t->notify, 2 in t->notify_batch */
static struct rl_tstream **notify_list(struct rl_tstream *s)
{
    return s->notify_queued == 2 ? &s->t->notify_batch : &s->t->notify;
}

static void notify_unlink(struct rl_tstream *s)
{
    struct rl_tstream **head;

    if (!s->notify_queued)
        return;
    head = notify_list(s);
    if (s->nprev)
        s->nprev->nnext = s->nnext;
    else
        *head = s->nnext;
    if (s->nnext)
        s->nnext->nprev = s->nprev;
    s->nprev = s->nnext = NULL;
    s->notify_queued = 0;
}

/* Leaves the current connection: no more nghttp2 callbacks reach s, the
 * receive credit it still holds goes back to the connection, and rst >= 0
 * resets the HTTP/2 stream with that code. */
static void detach(struct rl_tstream *s, int rst)
{
    struct rt_conn *c = s->conn;

    if (!c)
        return;
    if (c->h2 && s->sid > 0) {
        nghttp2_session *ss = al_h2conn_session(c->h2);
        nghttp2_session_set_stream_user_data(ss, s->sid, NULL);
        if (s->unconsumed)
            nghttp2_session_consume(ss, s->sid, s->unconsumed);
        if (rst >= 0)
            nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, s->sid, (uint32_t)rst);
        al_h2conn_flush(c->h2);
    }
    s->unconsumed = 0;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    c->open_streams--;
    s->conn = NULL;
    s->sid = 0;
}

static void destroy(struct rl_tstream *s)
{
    struct rl_tunnels *t = s->t;

    notify_unlink(s);
    detach(s, -1);
    s->tunnel->open_streams--;
    al_metric_add(s->tunnel->m_open, -1);
    t->open_streams--;
    if (s->head) {
        rl_buf_cleanup(&s->head->buf);
        free(s->head);
    }
    rl_buf_cleanup(&s->body);
    if (s->grant) {
        OPENSSL_cleanse(s->grant, strlen(s->grant));
        free(s->grant);
    }
    free(s->hdrs); /* names and values live in the same block */
    free(s->server);
    free(s->method);
    free(s->path);
    free(s->principal);
    free(s->request_id);
    free(s);
    rt_stream_gone(t);
}

static void fail(struct rl_tstream *s, int err)
{
    int head_seen = s->head_seen;

    detach(s, -1);
    s->done = 1;
    if (al_log_min_level <= AL_LOG_INFO)
        AL_LOG_INFO("tunnel.stream_error",
                    "request=%s tunnel=%s server=%s head_seen=%d "
                    "attempts=%d reason=\"%s\"",
                    s->request_id, s->tunnel->name, s->server, head_seen, s->attempts,
                    al_strerror(err));
    s->in_cb++;
    if (s->cbs.on_error)
        s->cbs.on_error(s, err, head_seen, s->user);
    s->in_cb--;
    destroy(s);
}

static void finish(struct rl_tstream *s)
{
    s->done = 1;
    s->in_cb++;
    if (s->cbs.on_end)
        s->cbs.on_end(s, s->user);
    s->in_cb--;
    destroy(s);
}

/* Runs after a non-final callback: 1 when the caller cancelled s in it
 * (then s is freed here and must not be touched). */
static int gone_after_cb(struct rl_tstream *s)
{
    s->in_cb--;
    if (s->dead && s->in_cb == 0) {
        destroy(s);
        return 1;
    }
    return s->dead;
}

/* ---- grant and request headers ---- */

static int sign_grant(struct rl_tstream *s, const struct rt_conn *c)
{
    Airlock__V1__Grant g = AIRLOCK__V1__GRANT__INIT;
    char subject[80], scope[2 * RT_NAME_MAX + 2];
    char *star = "*";
    uint8_t *raw = NULL;
    size_t rawlen = 0, cap;
    int64_t now = rt_now_ms();
    char *b64;
    int rc;

    snprintf(subject, sizeof(subject), "request/%s", s->request_id);
    snprintf(scope, sizeof(scope), "%s/%s", s->tunnel->name, s->server);
    g.audience = RT_AUDIENCE;
    g.holder = (char *)c->identity;
    g.principal = s->principal;
    g.subject = subject;
    g.scope = scope;
    g.n_credentials = 1;
    g.credentials = &star;
    g.n_destinations = 1;
    g.destinations = &star;
    g.not_before_ms = now - 5000;
    g.expires_ms = now + (int64_t)(s->t->grant_ttl_s * 1000);
    rc = al_grant_sign(s->t->signer, &g, &raw, &rawlen);
    if (rc < 0)
        return rc == AL_ERR_NOMEM ? rc : AL_ERR_CRYPTO;
    cap = al_base64_encoded_len(rawlen, 0) + 1;
    b64 = malloc(cap);
    if (!b64 || al_base64_encode(raw, rawlen, b64, cap, 0, NULL) < 0) {
        free(b64);
        free(raw);
        return AL_ERR_NOMEM;
    }
    free(raw);
    if (s->grant) {
        OPENSSL_cleanse(s->grant, strlen(s->grant));
        free(s->grant);
    }
    s->grant = b64;
    return 0;
}

static void nv_set(nghttp2_nv *nv, const char *name, const char *value, uint8_t flags)
{
    *nv = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value), flags};
}

static int submit_error(int rv)
{
    if (rv == NGHTTP2_ERR_NOMEM)
        return AL_ERR_NOMEM;
    return AL_ERR_CLOSED; /* ids exhausted, session closing: try elsewhere */
}

/* One attempt of s on c: grant, HEADERS (+ body provider). */
static int submit(struct rl_tstream *s, struct rt_conn *c)
{
    nghttp2_data_provider prd = {.source.ptr = NULL, .read_callback = rt_stream_read_body};
    nghttp2_nv *nv;
    size_t n = 0;
    int32_t sid;
    int rc = sign_grant(s, c);

    if (rc < 0)
        return rc;
    nv = calloc(7 + s->nhdrs, sizeof(*nv));
    if (!nv)
        return AL_ERR_NOMEM;
    nv_set(&nv[n++], ":method", s->method, NGHTTP2_NV_FLAG_NONE);
    nv_set(&nv[n++], ":scheme", "https", NGHTTP2_NV_FLAG_NONE);
    nv_set(&nv[n++], ":authority", s->tunnel->name, NGHTTP2_NV_FLAG_NONE);
    nv_set(&nv[n++], ":path", s->path, NGHTTP2_NV_FLAG_NONE);
    nv_set(&nv[n++], "airlock-grant", s->grant, NGHTTP2_NV_FLAG_NO_INDEX);
    nv_set(&nv[n++], "airlock-principal", s->principal, NGHTTP2_NV_FLAG_NONE);
    nv_set(&nv[n++], "airlock-request-id", s->request_id, NGHTTP2_NV_FLAG_NONE);
    memcpy(&nv[n], s->hdrs, s->nhdrs * sizeof(*nv));
    n += s->nhdrs;
    sid =
        nghttp2_submit_request(al_h2conn_session(c->h2), NULL, nv, n, s->no_body ? NULL : &prd, s);
    free(nv); /* nghttp2 copied the header block */
    if (sid == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE)
        rt_conn_shutdown(c, "reason=\"stream ids exhausted\"");
    if (sid < 0)
        return submit_error(sid);
    s->conn = c;
    s->sid = sid;
    s->sent = 0;
    s->headers_sent = 0;
    s->tried[s->attempts++] = c->id;
    s->next = c->streams;
    if (c->streams)
        c->streams->prev = s;
    c->streams = s;
    c->open_streams++;
    al_h2conn_flush(c->h2);
    return 0;
}

/* ---- request validation and copy ---- */

static int is_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
}

static int name_ok(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_name_char(s[i]))
            return 0;
    return 1;
}

static int text_ok(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f)
            return 0;
    }
    return 1;
}

/* :path must name the route the grant is scoped to. */
static int path_ok(const struct rl_treq *r)
{
    size_t tl = strlen(r->tunnel), sl = strlen(r->server), pl = strlen(r->path);
    char end;

    if (pl < 5 + tl + 1 + sl || memcmp(r->path, "/mcp/", 5) != 0 ||
        memcmp(r->path + 5, r->tunnel, tl) != 0 || r->path[5 + tl] != '/' ||
        memcmp(r->path + 6 + tl, r->server, sl) != 0)
        return 0;
    end = r->path[6 + tl + sl];
    return (end == '\0' || end == '/' || end == '?') && text_ok(r->path, pl) &&
           !strchr(r->path, ' ');
}

static int treq_ok(const struct rl_treq *r)
{
    size_t pl = r->principal ? strlen(r->principal) : 0;

    return name_ok(r->server, RT_NAME_MAX) && name_ok(r->request_id, 64) && r->method &&
           r->method[0] && name_ok(r->method, 32) && r->path && path_ok(r) && pl > 0 &&
           pl <= PRINCIPAL_MAX && text_ok(r->principal, pl) && (r->nheaders == 0 || r->headers);
}

/* Headers the relay never forwards whatever the caller passes: its own
 * (pseudo-headers, airlock-*) and connection-specific ones HTTP/2 forbids. */
static int header_forwarded(const nghttp2_nv *h)
{
    static const char *const drop[] = {"connection",        "keep-alive", "proxy-connection",
                                       "transfer-encoding", "upgrade",    "host"};
    const char *name = (const char *)h->name;

    if (h->namelen == 0 || name[0] == ':' || (h->namelen >= 8 && memcmp(name, "airlock-", 8) == 0))
        return 0;
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        if (h->namelen == strlen(drop[i]) && memcmp(name, drop[i], h->namelen) == 0)
            return 0;
    if (h->namelen == 2 && memcmp(name, "te", 2) == 0)
        return h->valuelen == 8 && memcmp(h->value, "trailers", 8) == 0;
    for (size_t i = 0; i < h->namelen; i++)
        if (name[i] >= 'A' && name[i] <= 'Z')
            return 0;
    for (size_t i = 0; i < h->valuelen; i++)
        if (h->value[i] == '\0' || h->value[i] == '\r' || h->value[i] == '\n')
            return 0;
    return 1;
}

/* Copies the forwarded headers into one block: nv array, then the bytes. */
static int copy_headers(struct rl_tstream *s, const struct rl_treq *r)
{
    size_t bytes = 0, n = 0;
    char *p;

    for (size_t i = 0; i < r->nheaders; i++)
        if (header_forwarded(&r->headers[i])) {
            bytes += r->headers[i].namelen + r->headers[i].valuelen + 2;
            n++;
        }
    s->hdrs = malloc((n ? n : 1) * sizeof(nghttp2_nv) + bytes);
    if (!s->hdrs)
        return AL_ERR_NOMEM;
    p = (char *)(s->hdrs + (n ? n : 1));
    for (size_t i = 0; i < r->nheaders; i++) {
        const nghttp2_nv *h = &r->headers[i];
        if (!header_forwarded(h))
            continue;
        nghttp2_nv *d = &s->hdrs[s->nhdrs++];
        memcpy(p, h->name, h->namelen);
        p[h->namelen] = '\0';
        d->name = (uint8_t *)p;
        d->namelen = h->namelen;
        p += h->namelen + 1;
        memcpy(p, h->value, h->valuelen);
        p[h->valuelen] = '\0';
        d->value = (uint8_t *)p;
        d->valuelen = h->valuelen;
        p += h->valuelen + 1;
        d->flags = NGHTTP2_NV_FLAG_NONE;
    }
    return 0;
}

static struct rl_tstream *stream_new(struct rl_tunnels *t, struct rt_tunnel *tu,
                                     const struct rl_treq *r, const struct rl_tstream_cbs *cbs,
                                     void *user)
{
    struct rl_tstream *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->kind = RT_KIND_AGENT;
    s->t = t;
    s->tunnel = tu;
    s->cbs = *cbs;
    s->user = user;
    s->pin = r->pin_conn;
    s->no_body = r->end_stream != 0;
    s->end_req = s->no_body;
    s->replayable = 1;
    rl_buf_init(&s->body, 0);
    tu->open_streams++;
    al_metric_add(tu->m_open, 1);
    t->open_streams++;
    s->server = strdup(r->server);
    s->method = strdup(r->method);
    s->path = strdup(r->path);
    s->principal = strdup(r->principal);
    s->request_id = strdup(r->request_id);
    if (!s->server || !s->method || !s->path || !s->principal || !s->request_id ||
        copy_headers(s, r) < 0) {
        destroy(s);
        return NULL;
    }
    return s;
}

/* ---- public API ---- */

static void unroutable(struct rt_tunnel *tu)
{
    tu->unroutable_total++;
    al_metric_add(tu->m_unroutable, 1);
}

int rl_tstream_open(struct rl_tunnels *t, const struct rl_treq *r, const struct rl_tstream_cbs *cbs,
                    void *user, struct rl_tstream **out)
{
    struct rt_tunnel *tu = rt_tunnel_find(t, r ? r->tunnel : NULL);
    struct rl_tstream *s;
    struct rt_conn *c;
    int rc;

    *out = NULL;
    if (!tu)
        return AL_ERR_NOTFOUND;
    if (!treq_ok(r) || !cbs)
        return AL_ERR_INVAL;
    c = t->draining ? NULL : rt_pick(t, tu, r->server, r->pin_conn, NULL, 0);
    if (!c) {
        unroutable(tu);
        return AL_ERR_CLOSED;
    }
    s = stream_new(t, tu, r, cbs, user);
    if (!s)
        return AL_ERR_NOMEM;
    rc = submit(s, c);
    if (rc < 0) {
        if (rc == AL_ERR_CLOSED)
            unroutable(tu);
        destroy(s);
        return rc;
    }
    tu->requests_total++;
    al_metric_add(tu->m_opened, 1);
    AL_LOG_DEBUG("tunnel.stream_open", "request=%s tunnel=%s server=%s conn=%s stream=%d",
                 s->request_id, tu->name, s->server, c->id_str, s->sid);
    *out = s;
    return 0;
}

static void resume(struct rl_tstream *s)
{
    struct rt_conn *c = s->conn;

    if (!c || !c->h2 || s->sid <= 0)
        return; /* between attempts: the next submit reads the body */
    nghttp2_session_resume_data(al_h2conn_session(c->h2), s->sid);
    al_h2conn_flush(c->h2);
}

/* Once no replay is possible, the bytes already sent are dropped; done
 * lazily so a long upload costs O(1) per byte. */
static void compact(struct rl_tstream *s, int force)
{
    if (s->replayable || s->sent == 0)
        return;
    if (force || (s->sent >= 16384 && s->sent * 2 >= s->body.len)) {
        rl_buf_consume(&s->body, s->sent);
        s->sent = 0;
    }
}

static void no_replay(struct rl_tstream *s)
{
    s->replayable = 0;
    compact(s, 1);
}

int rl_tstream_write(struct rl_tstream *s, const uint8_t *d, size_t n)
{
    int rc;

    if (s->done || s->end_req)
        return AL_ERR_STATE;
    if (n > RT_QUEUE_MAX || pending(s) + n > RT_QUEUE_MAX)
        return AL_ERR_TOOBIG;
    rc = rl_buf_append(&s->body, d, n);
    if (rc < 0)
        return rc;
    if (s->replayable && s->body.len > s->t->max_replay)
        no_replay(s);
    resume(s);
    return 0;
}

int rl_tstream_end(struct rl_tstream *s)
{
    if (s->done || s->no_body)
        return AL_ERR_STATE;
    if (s->end_req)
        return 0;
    s->end_req = 1;
    resume(s);
    return 0;
}

size_t rl_tstream_pending(const struct rl_tstream *s)
{
    return pending(s);
}

static void notify_queue(struct rl_tstream *s)
{
    struct rl_tunnels *t = s->t;

    if (s->notify_queued)
        return;
    s->notify_queued = 1;
    s->nprev = NULL;
    s->nnext = t->notify;
    if (t->notify)
        t->notify->nprev = s;
    t->notify = s;
    if (!ev_is_active(&t->notify_w)) {
        ev_timer_set(&t->notify_w, 0., 0.);
        ev_timer_start(t->loop, &t->notify_w);
    }
}

void rl_tstream_want_writable(struct rl_tstream *s, size_t low)
{
    if (s->done)
        return;
    s->low = low;
    s->want_writable = 1;
    if (pending(s) <= low)
        notify_queue(s); /* already there: told from the loop, not from here */
}

void rt_notify_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rl_tunnels *t = w->data;
    struct rl_tstream *s;
    (void)loop;
    (void)revents;

    /* a callback may re-arm its stream: that lands in t->notify, told in
     * the next loop turn */
    t->notify_batch = t->notify;
    t->notify = NULL;
    for (s = t->notify_batch; s; s = s->nnext)
        s->notify_queued = 2;
    while ((s = t->notify_batch) != NULL) {
        notify_unlink(s);
        if (s->done || !s->want_writable || pending(s) > s->low)
            continue;
        s->want_writable = 0;
        s->in_cb++;
        if (s->cbs.on_writable)
            s->cbs.on_writable(s, s->user);
        gone_after_cb(s);
    }
}

void rl_tstream_consume(struct rl_tstream *s, size_t n)
{
    struct rt_conn *c = s->conn;

    if (s->done)
        return;
    if (n > s->unconsumed)
        n = s->unconsumed;
    if (n == 0)
        return;
    s->unconsumed -= n;
    if (c && c->h2 && s->sid > 0) {
        nghttp2_session_consume(al_h2conn_session(c->h2), s->sid, n);
        al_h2conn_flush(c->h2);
    }
}

void rl_tstream_cancel(struct rl_tstream *s)
{
    if (!s || s->done)
        return;
    s->done = 1;
    AL_LOG_DEBUG("tunnel.stream_cancel", "request=%s tunnel=%s conn=%s stream=%d", s->request_id,
                 s->tunnel->name, s->conn ? s->conn->id_str : "-", s->sid);
    detach(s, NGHTTP2_CANCEL);
    if (s->in_cb)
        s->dead = 1; /* freed once the callback returns */
    else
        destroy(s);
}

uint64_t rl_tstream_conn(const struct rl_tstream *s)
{
    return s->conn ? s->conn->id : 0;
}

/* ---- replay ---- */

static void retry(struct rl_tstream *s, const char *why)
{
    uint64_t from = s->attempts ? s->tried[s->attempts - 1] : 0;
    struct rt_conn *c = NULL;
    int rc = AL_ERR_CLOSED;

    al_metric_add(s->tunnel->m_refused, 1);
    if (s->replayable && !s->head_seen && s->attempts < RT_MAX_ATTEMPTS && !s->t->draining)
        c = rt_pick(s->t, s->tunnel, s->server, s->pin, s->tried, (size_t)s->attempts);
    if (c)
        rc = submit(s, c);
    if (rc < 0) {
        AL_LOG_INFO("tunnel.stream_refused",
                    "request=%s tunnel=%s from_conn=%llu attempts=%d "
                    "why=\"%s\" replayed=0",
                    s->request_id, s->tunnel->name, (unsigned long long)from, s->attempts, why);
        fail(s, rc);
        return;
    }
    al_metric_add(s->tunnel->m_replayed, 1);
    AL_LOG_INFO("tunnel.stream_replay",
                "request=%s tunnel=%s from_conn=%llu to_conn=%s "
                "attempt=%d why=\"%s\"",
                s->request_id, s->tunnel->name, (unsigned long long)from, c->id_str, s->attempts,
                why);
}

void rt_stream_not_sent(struct rt_conn *c, int32_t sid)
{
    for (struct rl_tstream *s = c->streams; s; s = s->next) {
        if (s->sid == sid) {
            detach(s, -1);
            retry(s, "request never sent");
            return;
        }
    }
}

void rt_streams_conn_lost(struct rt_conn *c)
{
    int err = c->close_err == AL_ERR_TIMEOUT ? AL_ERR_TIMEOUT : AL_ERR_CLOSED;

    while (c->streams) {
        struct rl_tstream *s = c->streams;
        int never = !s->headers_sent || (c->goaway_recv && s->sid > c->goaway_last_sid);
        detach(s, -1);
        if (never && !s->head_seen)
            retry(s, "connection lost before the gateway saw the request");
        else
            fail(s, err);
    }
}

void rt_streams_drop(struct rt_conn *c)
{
    while (c->streams) {
        struct rl_tstream *s = c->streams;
        detach(s, -1);
        s->done = 1;
        destroy(s);
    }
}

/* ---- nghttp2 events (dispatched by relay_tconn.c) ---- */

void rt_stream_on_headers_sent(struct rl_tstream *s)
{
    s->headers_sent = 1;
}

void rt_stream_on_close(struct rt_conn *c, struct rl_tstream *s, uint32_t code)
{
    int refused = code == NGHTTP2_REFUSED_STREAM || (c->goaway_recv && s->sid > c->goaway_last_sid);

    detach(s, -1);
    if (refused && !s->head_seen) {
        retry(s, code == NGHTTP2_REFUSED_STREAM ? "REFUSED_STREAM" : "above GOAWAY last stream id");
        return;
    }
    fail(s, s->proto_err ? AL_ERR_PROTO : AL_ERR_CLOSED);
}

int rt_stream_on_begin_headers(struct rt_conn *c, struct rl_tstream *s, const nghttp2_frame *f)
{
    (void)c;
    (void)f;
    if (s->head_seen || s->head)
        return 0; /* trailers; or the rest of a head */
    s->head = calloc(1, sizeof(*s->head));
    if (!s->head)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    rl_buf_init(&s->head->buf, RT_HEAD_MAX_BYTES);
    s->head->status = -1;
    return 0;
}

static int parse_status(const uint8_t *v, size_t n)
{
    int st = 0;
    if (n != 3)
        return -1;
    for (size_t i = 0; i < 3; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        st = st * 10 + (v[i] - '0');
    }
    return st;
}

int rt_stream_on_header(struct rt_conn *c, struct rl_tstream *s, const nghttp2_frame *f,
                        const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen)
{
    struct rt_head *h = s->head;
    (void)c;
    (void)f;

    if (s->head_seen || !h)
        return 0; /* trailers are dropped */
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        h->status = parse_status(value, valuelen);
        return 0;
    }
    if (namelen && name[0] == ':')
        return 0;
    if (h->n == RT_HEAD_MAX_FIELDS || rl_buf_append(&h->buf, name, namelen) < 0 ||
        rl_buf_append(&h->buf, value, valuelen) < 0) {
        s->proto_err = 1; /* nghttp2 resets the stream; on_close reports it */
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    h->field[h->n][0] = namelen;
    h->field[h->n][1] = valuelen;
    h->n++;
    return 0;
}

/* Hands the complete head to the caller. Returns 1 when s is gone. */
static int deliver_head(struct rl_tstream *s)
{
    struct rt_head *h = s->head;
    nghttp2_nv *nv = calloc(h->n ? h->n : 1, sizeof(*nv));
    size_t off = 0;

    if (!nv) {
        detach(s, NGHTTP2_INTERNAL_ERROR);
        fail(s, AL_ERR_NOMEM);
        return 1;
    }
    for (size_t i = 0; i < h->n; i++) {
        nv[i].name = h->buf.p + off;
        nv[i].namelen = h->field[i][0];
        off += h->field[i][0];
        nv[i].value = h->buf.p + off;
        nv[i].valuelen = h->field[i][1];
        off += h->field[i][1];
    }
    s->head_seen = 1;
    no_replay(s);
    s->in_cb++;
    if (s->cbs.on_head)
        s->cbs.on_head(s, h->status, nv, h->n, s->user);
    free(nv);
    rl_buf_cleanup(&h->buf);
    free(h);
    s->head = NULL;
    return gone_after_cb(s);
}

/* A HEADERS frame is complete. Returns 1 when s is gone. */
static int on_head_frame(struct rl_tstream *s)
{
    struct rt_head *h = s->head;

    if (s->head_seen || !h)
        return 0;
    if (h->status < 100) { /* nghttp2 checks :status; this is a last guard */
        detach(s, NGHTTP2_PROTOCOL_ERROR);
        fail(s, AL_ERR_PROTO);
        return 1;
    }
    if (h->status < 200) { /* interim response: wait for the final one */
        rl_buf_cleanup(&h->buf);
        free(h);
        s->head = NULL;
        return 0;
    }
    return deliver_head(s);
}

int rt_stream_on_frame_recv(struct rt_conn *c, struct rl_tstream *s, const nghttp2_frame *f)
{
    nghttp2_session *ss;

    if (f->hd.type == NGHTTP2_HEADERS) {
        if (on_head_frame(s))
            return 0;
    } else if (f->hd.type != NGHTTP2_DATA) {
        return 0;
    }
    if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM) || !s->head_seen)
        return 0;
    /* the response is complete; a request body still being sent is not
     * needed any more (RFC 9113 section 8.1) */
    ss = al_h2conn_session(c->h2);
    detach(s, nghttp2_session_get_stream_local_close(ss, s->sid) ? -1 : NGHTTP2_NO_ERROR);
    finish(s);
    return 0;
}

int rt_stream_on_data(struct rt_conn *c, struct rl_tstream *s, const uint8_t *d, size_t n)
{
    (void)c;
    s->unconsumed += n;
    s->in_cb++;
    if (s->cbs.on_data)
        s->cbs.on_data(s, d, n, s->user);
    gone_after_cb(s);
    return 0;
}

ssize_t rt_stream_read_body(nghttp2_session *ss, int32_t sid, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct rl_tstream *s = nghttp2_session_get_stream_user_data(ss, sid);
    size_t n;
    (void)src;
    (void)ud;

    if (!s || s->kind != RT_KIND_AGENT)
        return NGHTTP2_ERR_DEFERRED; /* detached: its RST_STREAM is on the way */
    n = pending(s);
    if (n == 0) {
        if (!s->end_req)
            return NGHTTP2_ERR_DEFERRED;
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    if (n > len)
        n = len;
    memcpy(buf, s->body.p + s->sent, n);
    s->sent += n;
    if (s->end_req && pending(s) == 0)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    compact(s, 0);
    if (s->want_writable && pending(s) <= s->low)
        notify_queue(s);
    return (ssize_t)n;
}
