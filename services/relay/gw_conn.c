/*
 * gw_conn: the gateway's reversed connections (tunnel.proto, "The reversed
 * connection").
 *
 * Dialling. Every `relays` entry is a gw_relay whose name is resolved (never
 * blocking the loop) to ALL its addresses; each address gets `connections`
 * slots (2 when only one address is known in all, so that at least two
 * connections are kept), and each slot holds at most one connection. A slot
 * whose connection ends is redialled after a jittered exponential backoff
 * (reconnect_min doubling to reconnect_max; reconnect_min again after a
 * connection that was registered; reconnect_max after a relay accepted none
 * of our tunnels). Every redial round re-resolves the name first, and names
 * are re-resolved every resolve_interval too, so new relay replicas get
 * connections; a slot whose address left DNS keeps its live connection but is
 * not redialled.
 *
 * A connection: TCP, TLS 1.3 as the client with the gateway identity, ALPN
 * exactly "airlock-tunnel/1", the relay's SPIFFE id checked against
 * relay_identities, then nghttp2 as the HTTP/2 SERVER with manual receive
 * windows (end-to-end flow control: request bytes are consumed only once
 * passed on). Streams are dispatched by :path: TunnelControl methods to
 * gw_ctl.c, /mcp/... to gw_stream.c, anything else gets 404. Agent streams
 * are refused (REFUSED_STREAM, which the relay may replay elsewhere) until
 * the registration is acknowledged, while draining, and beyond
 * max_concurrent_streams (SETTINGS_MAX_CONCURRENT_STREAMS leaves room for
 * the control stream and Acks on top).
 *
 * Responses of every kind go out through one deferred data provider per
 * stream reading the stream's out buffer (no copy into nghttp2).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "airlock/v1/common.pb-c.h"
#include "al_err.h"
#include "al_glob.h"
#include "al_grpc.h"
#include "al_h2conn.h"
#include "al_log.h"
#include "al_metrics.h"
#include "al_resolve.h"
#include "gw.h"

#define RST_WINDOW_S       1.0
#define RST_MIN_PER_WINDOW 500
#define CTL_STREAM_ROOM    8 /* SETTINGS headroom for the control stream and Acks */

static void slot_dial(struct gw_slot *sl);
static void relay_resolve(struct gw_relay *r);
static void conn_maybe_close(struct gw_conn *c);

int64_t gw_unix_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *state_name(enum gw_conn_state st)
{
    static const char *const names[] = {"dialing", "open", "registering", "ready", "closing"};
    return st < GW_CONN_NSTATES ? names[st] : "?";
}

void gw_conn_set_state(struct gw_conn *c, enum gw_conn_state st)
{
    if (c->state == st)
        return;
    al_metric_add(c->gw->m.conns[c->state], -1);
    al_metric_add(c->gw->m.conns[st], 1);
    c->state = st;
}

static double jittered(double d)
{
    return d * (0.5 + 0.5 * ((double)random() / (double)RAND_MAX));
}

/* ---------- slots ---------- */

static void slot_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct gw_slot *sl = w->data;
    (void)loop;
    (void)revents;
    sl->due = 1;
    relay_resolve(sl->relay);
}

static void slot_schedule(struct gw_slot *sl, double delay)
{
    struct ev_loop *loop = sl->relay->gw->svc.loop;

    ev_timer_stop(loop, &sl->retry_w);
    ev_timer_set(&sl->retry_w, delay, 0.);
    ev_timer_start(loop, &sl->retry_w);
}

static void slot_remove(struct gw_relay *r, struct gw_slot *sl)
{
    struct gw_slot **pp = &r->slots;

    while (*pp && *pp != sl)
        pp = &(*pp)->next;
    if (*pp)
        *pp = sl->next;
    ev_timer_stop(r->gw->svc.loop, &sl->retry_w);
    if (sl->conn)
        sl->conn->slot = NULL;
    free(sl);
}

static struct gw_slot *slot_find(struct gw_relay *r, const struct sockaddr_storage *a, socklen_t l,
                                 int index)
{
    for (struct gw_slot *sl = r->slots; sl; sl = sl->next)
        if (sl->index == index && sl->addrlen == l && memcmp(&sl->addr, a, l) == 0)
            return sl;
    return NULL;
}

static void addr_text(const struct sockaddr_storage *a, char *buf, size_t n)
{
    char host[64] = "?";
    int port = 0;

    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)a;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        port = ntohs(s4->sin_port);
        snprintf(buf, n, "%s:%d", host, port);
    } else {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)a;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        port = ntohs(s6->sin6_port);
        snprintf(buf, n, "[%s]:%d", host, port);
    }
}

static struct gw_slot *slot_new(struct gw_relay *r, const struct sockaddr_storage *a, socklen_t l,
                                int index)
{
    struct gw_slot *sl = calloc(1, sizeof(*sl));

    if (!sl)
        return NULL;
    sl->relay = r;
    memcpy(&sl->addr, a, l);
    sl->addrlen = l;
    sl->index = index;
    sl->due = 1;
    addr_text(a, sl->addr_text, sizeof(sl->addr_text));
    ev_timer_init(&sl->retry_w, slot_retry_cb, 0., 0.);
    sl->retry_w.data = sl;
    sl->next = r->slots;
    r->slots = sl;
    return sl;
}

/* Connections per address: `connections`, or 2 while only one address is
 * known in all (at least two connections are kept). */
static int per_address(const struct gw *gw)
{
    size_t total = 0;

    for (size_t i = 0; i < gw->nrelays; i++)
        total += gw->relays[i].naddrs;
    return gw->cfg.connections == 1 && total < 2 ? 2 : gw->cfg.connections;
}

static int addr_seen_before(const struct al_resolve_result *res, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (res->len[j] == res->len[i] && memcmp(&res->addr[j], &res->addr[i], res->len[i]) == 0)
            return 1;
    return 0;
}

static void relay_update(struct gw_relay *r, const struct al_resolve_result *res)
{
    int per;

    r->naddrs = 0;
    for (size_t i = 0; i < res->n; i++)
        r->naddrs += !addr_seen_before(res, i);
    per = per_address(r->gw);
    for (struct gw_slot *sl = r->slots; sl; sl = sl->next)
        sl->seen = 0;
    for (size_t i = 0; i < res->n; i++) {
        if (addr_seen_before(res, i))
            continue;
        for (int k = 0; k < per; k++) {
            struct gw_slot *sl = slot_find(r, &res->addr[i], res->len[i], k);
            if (!sl && !(sl = slot_new(r, &res->addr[i], res->len[i], k)))
                continue;
            sl->seen = 1;
            sl->stale = 0;
        }
    }
    for (struct gw_slot *sl = r->slots, *next; sl; sl = next) {
        next = sl->next;
        if (sl->seen)
            continue;
        sl->stale = 1;
        if (!sl->conn)
            slot_remove(r, sl);
    }
}

static void resolve_cb(struct al_resolve_req *req, int status, const struct al_resolve_result *res,
                       void *user)
{
    struct gw_relay *r = user;
    struct gw *gw = r->gw;
    double next = gw->cfg.resolve_interval_s;
    (void)req;

    r->rq = NULL;
    if (gw->draining)
        return;
    if (status == 0) {
        relay_update(r, res);
    } else {
        AL_LOG_WARN("gateway.resolve", "relay=%s reason=\"%s\" known_slots=%s", r->spec,
                    al_strerror(status), r->slots ? "yes" : "no");
        if (!r->slots)
            next = jittered(gw->cfg.reconnect_max_s < next ? gw->cfg.reconnect_max_s : next);
    }
    for (struct gw_slot *sl = r->slots; sl; sl = sl->next)
        if (sl->due && !sl->conn && !sl->stale && !ev_is_active(&sl->retry_w))
            slot_dial(sl);
    ev_timer_stop(gw->svc.loop, &r->resolve_w);
    ev_timer_set(&r->resolve_w, next, 0.);
    ev_timer_start(gw->svc.loop, &r->resolve_w);
}

static void relay_resolve(struct gw_relay *r)
{
    int rc;

    if (r->rq || r->gw->draining)
        return;
    rc = al_resolve(r->gw->resolver, r->host, r->port, resolve_cb, r, &r->rq);
    if (rc < 0) {
        r->rq = NULL;
        AL_LOG_WARN("gateway.resolve", "relay=%s reason=\"%s\"", r->spec, al_strerror(rc));
    }
}

static void resolve_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    relay_resolve(w->data);
}

/* ---------- connections ---------- */

static void conn_unlink(struct gw_conn *c)
{
    struct gw *gw = c->gw;

    if (c->prev)
        c->prev->next = c->next;
    else
        gw->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    gw->nconns--;
    al_metric_add(gw->m.conns[c->state], -1);
}

/* The delay before the slot of a connection that ended is dialled again. */
static double redial_delay(struct gw_slot *sl, const struct gw_conn *c)
{
    const struct gw_config *cfg = &c->gw->cfg;

    if (c->rejected) {
        sl->backoff = cfg->reconnect_max_s;
        return jittered(cfg->reconnect_max_s);
    }
    if (c->was_ready)
        sl->backoff = 0; /* it worked: start over at reconnect_min */
    sl->backoff = sl->backoff > 0 ? sl->backoff * 2 : cfg->reconnect_min_s;
    if (sl->backoff > cfg->reconnect_max_s)
        sl->backoff = cfg->reconnect_max_s;
    return jittered(sl->backoff);
}

static void stream_finalize(struct gw_stream *s, uint32_t code);

static void conn_on_close(struct al_h2conn *h2, int err, void *user)
{
    struct gw_conn *c = user;
    struct gw *gw = c->gw;
    struct gw_slot *sl = c->slot;
    (void)h2;

    c->h2 = NULL; /* the session goes with it: no nghttp2 call from here on */
    if (c->state == GW_CONN_DIALING)
        al_metric_add(gw->m.dial_fail, 1); /* TCP, TLS, ALPN or relay identity */
    while (c->streams)
        stream_finalize(c->streams, NGHTTP2_CANCEL);
    gw_ctl_stop(c);
    AL_LOG_INFO("gateway.conn_closed", "conn=%llu relay=%s state=%s reason=\"%s\"",
                (unsigned long long)c->id, sl ? sl->addr_text : "-", state_name(c->state),
                err ? al_strerror(err) : "closed");
    conn_unlink(c);
    if (sl) {
        sl->conn = NULL;
        if (sl->stale || gw->draining)
            slot_remove(sl->relay, sl);
        else
            slot_schedule(sl, redial_delay(sl, c));
    }
    free(c);
    if (gw->draining && !gw->conns && gw->on_conns_drained)
        gw->on_conns_drained(gw);
}

static int identity_allowed(const struct gw *gw, const char *id)
{
    for (size_t i = 0; gw->cfg.relay_identities[i]; i++)
        if (al_glob_match(gw->cfg.relay_identities[i], id, AL_GLOB_MAX))
            return 1;
    return 0;
}

static void conn_on_ready(struct al_h2conn *h2, void *user)
{
    struct gw_conn *c = user;
    const char *peer = al_h2conn_peer_id(h2);
    char q[160];

    if (!identity_allowed(c->gw, peer)) {
        AL_LOG_WARN("gateway.conn_refused",
                    "conn=%llu relay=%s peer=%s reason=\"relay identity "
                    "not in relay_identities\"",
                    (unsigned long long)c->id, c->slot ? c->slot->addr_text : "-",
                    al_log_quote(q, sizeof(q), peer, strlen(peer)));
        al_h2conn_close(h2, AL_ERR_AUTH);
        return;
    }
    c->opened_at = ev_now(c->gw->svc.loop);
    gw_conn_set_state(c, GW_CONN_OPEN);
    AL_LOG_INFO("gateway.conn_open", "conn=%llu relay=%s peer=%s index=%d",
                (unsigned long long)c->id, c->slot ? c->slot->addr_text : "-", peer,
                c->slot ? c->slot->index : 0);
    gw_ctl_start(c);
}

static void slot_dial(struct gw_slot *sl)
{
    struct gw *gw = sl->relay->gw;
    struct gw_conn *c = calloc(1, sizeof(*c));
    int rc;

    sl->due = 0;
    if (!c) {
        slot_schedule(sl, jittered(gw->cfg.reconnect_max_s));
        return;
    }
    c->gw = gw;
    c->slot = sl;
    c->state = GW_CONN_DIALING;
    struct al_h2conn_opts o = {
        .tls_server = 0,
        .h2_server = 1,
        .require_peer_id = 1,
        .alpn = GW_ALPN,
        .max_concurrent_streams = (uint32_t)gw->cfg.max_concurrent_streams + CTL_STREAM_ROOM,
        /* the relay resets a stream per agent that goes away: allow as many
         * resets as our own limit (rst_limit) does, per second */
        .reset_burst = 2u * ((uint64_t)gw->cfg.max_concurrent_streams + CTL_STREAM_ROOM),
        .reset_rate = 2u * ((uint64_t)gw->cfg.max_concurrent_streams + CTL_STREAM_ROOM),
        .max_header_list = GW_HEAD_MAX,
        .ping_interval_s = gw->cfg.ping_interval_s,
        .ping_timeout_s = gw->cfg.ping_timeout_s,
        .manual_window = 1,
        .cbs = gw->h2cbs,
        .session_user = c,
        .on_ready = conn_on_ready,
        .on_close = conn_on_close,
        .user = c,
    };
    al_metric_add(gw->m.dials, 1);
    rc = al_h2conn_connect(gw->svc.loop, (const struct sockaddr *)&sl->addr, sl->addrlen,
                           gw->relay_tls, &o, &c->h2);
    if (rc < 0) {
        AL_LOG_WARN("gateway.dial", "relay=%s reason=\"%s\"", sl->addr_text, al_strerror(rc));
        al_metric_add(gw->m.dial_fail, 1);
        free(c);
        slot_schedule(sl, redial_delay(sl, &(struct gw_conn){.gw = gw}));
        return;
    }
    c->id = al_h2conn_id(c->h2);
    sl->conn = c;
    c->next = gw->conns;
    if (gw->conns)
        gw->conns->prev = c;
    gw->conns = c;
    gw->nconns++;
    al_metric_add(gw->m.conns[GW_CONN_DIALING], 1);
    AL_LOG_DEBUG("gateway.dial", "conn=%llu relay=%s index=%d", (unsigned long long)c->id,
                 sl->addr_text, sl->index);
}

void gw_conn_registered(struct gw_conn *c, int ok)
{
    if (!ok) {
        c->rejected = 1;
        al_metric_add(c->gw->m.rejected, 1);
        gw_conn_shutdown(c);
        return;
    }
    c->was_ready = 1;
    gw_conn_set_state(c, GW_CONN_READY);
}

/* Graceful end of a connection: a shutdown notice (GOAWAY with the highest
 * stream id) at once, so the relay stops opening agent streams while its
 * Acks still get through; once no agent stream is left, the control stream
 * ends and the final GOAWAY goes out; the connection closes when the last
 * stream has. */
void gw_conn_shutdown(struct gw_conn *c)
{
    nghttp2_session *ss;

    if (!c->h2 || !(ss = al_h2conn_session(c->h2)))
        return;
    gw_conn_set_state(c, GW_CONN_CLOSING);
    if (!c->notice) {
        c->notice = 1;
        nghttp2_submit_shutdown_notice(ss);
        al_h2conn_flush(c->h2);
    }
    conn_maybe_close(c);
}

static void conn_maybe_close(struct gw_conn *c)
{
    if (!c->h2 || c->state != GW_CONN_CLOSING || c->agent_streams > 0)
        return;
    gw_ctl_finish(c);
    if (!c->goaway) {
        c->goaway = 1;
        al_h2conn_shutdown(c->h2);
    }
}

void gw_conn_abort(struct gw_conn *c, int err)
{
    nghttp2_session *ss;

    if (!c->h2)
        return;
    ss = al_h2conn_session(c->h2);
    if (ss && !c->goaway) {
        c->goaway = 1;
        nghttp2_submit_goaway(ss, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(ss),
                              NGHTTP2_NO_ERROR, NULL, 0);
        al_h2conn_flush_now(c->h2);
    }
    al_h2conn_close(c->h2, err);
}

/* ---------- stream plumbing ---------- */

nghttp2_session *gw_stream_session(const struct gw_stream *s)
{
    return s->c->h2 ? al_h2conn_session(s->c->h2) : NULL;
}

const struct gw_hdr *gw_stream_header(const struct gw_stream *s, const char *name)
{
    for (size_t i = 0; i < s->nhdr; i++)
        if (strcmp(s->hdr[i].name, name) == 0)
            return &s->hdr[i];
    return NULL;
}

static ssize_t read_cb(nghttp2_session *ss, int32_t id, uint8_t *buf, size_t length,
                       uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct gw_stream *s = src->ptr;
    size_t avail = s->out.len - s->out_off;
    (void)buf;
    (void)user;

    if (avail) {
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
        return (ssize_t)(avail < length ? avail : length);
    }
    if (!s->out_eof) {
        s->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (s->grpc) {
        char code[12], msg[512];
        nghttp2_nv nv[2];
        size_t n = 0;
        snprintf(code, sizeof(code), "%d", s->grpc_status);
        nv[n++] = (nghttp2_nv){(uint8_t *)"grpc-status", (uint8_t *)code, 11, strlen(code), 0};
        if (s->grpc_msg && s->grpc_msg[0]) {
            size_t l = al_grpc_encode_message(s->grpc_msg, msg, sizeof(msg));
            nv[n++] = (nghttp2_nv){(uint8_t *)"grpc-message", (uint8_t *)msg, 12, l, 0};
        }
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        if (nghttp2_submit_trailer(ss, id, nv, n) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

static int send_data_cb(nghttp2_session *ss, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *user)
{
    struct gw_stream *s = src->ptr;
    struct gw_conn *c = user;
    (void)ss;

    if (frame->data.padlen > 0 || length > s->out.len - s->out_off)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (al_h2conn_append(c->h2, framehd, 9) < 0 ||
        al_h2conn_append(c->h2, s->out.p + s->out_off, length) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    s->out_off += length;
    if (s->out_off == s->out.len) {
        rl_buf_consume(&s->out, s->out.len);
        s->out_off = 0;
    } else if (s->out_off >= GW_OUT_LOW && s->out_off * 2 >= s->out.len) {
        rl_buf_consume(&s->out, s->out_off); /* amortized: moves at most half */
        s->out_off = 0;
    }
    if (s->kind == GW_S_AGENT && s->a)
        gw_agent_drained(s);
    return 0;
}

int gw_stream_submit(struct gw_stream *s, const nghttp2_nv *nv, size_t n)
{
    nghttp2_session *ss = gw_stream_session(s);
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_cb};
    int rv;

    if (!ss || s->submitted || s->resp_ended)
        return AL_ERR_STATE;
    rv = nghttp2_submit_response(ss, s->id, nv, n, &prd);
    if (rv != 0)
        return rv == NGHTTP2_ERR_NOMEM ? AL_ERR_NOMEM : AL_ERR_STATE;
    s->submitted = 1;
    al_h2conn_flush(s->c->h2);
    return 0;
}

void gw_stream_kick(struct gw_stream *s)
{
    nghttp2_session *ss = gw_stream_session(s);

    if (!ss)
        return;
    if (s->deferred && s->submitted && !s->resp_ended) {
        s->deferred = 0;
        nghttp2_session_resume_data(ss, s->id);
    }
    al_h2conn_flush(s->c->h2);
}

void gw_stream_reset(struct gw_stream *s, uint32_t code)
{
    nghttp2_session *ss = gw_stream_session(s);

    if (!ss || s->resp_ended)
        return;
    s->resp_ended = 1;
    nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, s->id, code);
    al_h2conn_flush(s->c->h2);
}

/* ---------- nghttp2 callbacks ---------- */

static int on_begin_headers(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct gw_conn *c = ud;
    struct gw_stream *s;

    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->c = c;
    s->id = f->hd.stream_id;
    al_arena_init(&s->arena, GW_HEAD_MAX * 2 + 16 * 1024);
    rl_buf_init(&s->out, 16 << 20);
    rl_buf_init(&s->in, 64 * 1024);
    s->next = c->streams;
    if (c->streams)
        c->streams->prev = s;
    c->streams = s;
    nghttp2_session_set_stream_user_data(ss, s->id, s);
    return 0;
}

/* Room for more header fields: the array doubles inside the arena (the
 * old copies stay there until the stream ends: at most GW_MAX_HEADERS
 * entries in all). */
static int grow_headers(struct gw_stream *s)
{
    size_t cap = s->hdrcap ? s->hdrcap * 2 : 16;
    struct gw_hdr *h;

    if (cap > GW_MAX_HEADERS)
        cap = GW_MAX_HEADERS;
    h = al_arena_alloc(&s->arena, cap * sizeof(*h));
    if (!h)
        return AL_ERR_NOMEM;
    if (s->nhdr)
        memcpy(h, s->hdr, s->nhdr * sizeof(*h));
    s->hdr = h;
    s->hdrcap = cap;
    return 0;
}

static int on_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct gw_stream *s = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    char *n, *v;
    (void)flags;
    (void)ud;

    if (!s || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers: ignored */
    s->hdr_bytes += namelen + valuelen + 32;
    if (s->hdr_bytes > GW_HEAD_MAX * 4)
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* a flood: the connection goes */
    if (s->hdr_bytes > GW_HEAD_MAX || s->nhdr == GW_MAX_HEADERS) {
        s->head_status = 431;
        return 0;
    }
    n = al_arena_strndup(&s->arena, (const char *)name, namelen);
    v = al_arena_strndup(&s->arena, (const char *)value, valuelen);
    if (!n || !v || (s->nhdr == s->hdrcap && grow_headers(s) < 0)) {
        s->head_status = 431;
        return 0;
    }
    if (namelen && name[0] == ':') {
        if (strcmp(n, ":method") == 0)
            s->method = v;
        else if (strcmp(n, ":path") == 0)
            s->path = v;
        return 0;
    }
    if (strcmp(n, "content-type") == 0)
        s->ctype = v;
    s->hdr[s->nhdr++] = (struct gw_hdr){n, v, namelen, valuelen};
    return 0;
}

static int is_grpc(const struct gw_stream *s)
{
    return s->method && strcmp(s->method, "POST") == 0 && s->ctype &&
           strncmp(s->ctype, "application/grpc", 16) == 0;
}

/* Decides what a stream is once its headers are complete. */
static void stream_head(struct gw_stream *s)
{
    struct gw_conn *c = s->c;
    const char *p = s->path ? s->path : "";

    if (strncmp(p, GW_CTL_PREFIX, strlen(GW_CTL_PREFIX)) == 0) {
        s->kind = strcmp(p, GW_CTL_OPEN) == 0 ? GW_S_OPEN : GW_S_ACK;
        if (s->head_status)
            gw_ctl_fail(s, AL_GRPC_RESOURCE_EXHAUSTED, "header block too large");
        else if (!is_grpc(s))
            gw_ctl_fail(s, AL_GRPC_INVALID_ARGUMENT, "not a gRPC request");
        else if (strcmp(p, GW_CTL_OPEN) != 0 && strcmp(p, GW_CTL_ACK) != 0)
            gw_ctl_fail(s, AL_GRPC_UNIMPLEMENTED, "unknown TunnelControl method");
        return;
    }
    if (strncmp(p, "/mcp/", 5) != 0) {
        s->kind = GW_S_DONE;
        gw_stream_error(s, 404, RL_MCP_ERR_NOT_FOUND,
                        AIRLOCK__V1__ERROR_REASON__ERROR_REASON_NOT_FOUND,
                        "no such path on this gateway");
        return;
    }
    if (c->state != GW_CONN_READY || c->gw->draining ||
        c->agent_streams >= c->gw->cfg.max_concurrent_streams) {
        s->kind = GW_S_DONE;
        gw_stream_reset(s, NGHTTP2_REFUSED_STREAM);
        return;
    }
    s->kind = GW_S_AGENT;
    c->agent_streams++;
    al_metric_add(c->gw->m.streams, 1);
    gw_agent_head(s);
}

static void stream_req_end(struct gw_stream *s)
{
    if (s->req_ended)
        return;
    s->req_ended = 1;
    if (s->kind == GW_S_OPEN || s->kind == GW_S_ACK)
        gw_ctl_request(s);
    else if (s->kind == GW_S_AGENT)
        gw_agent_end(s);
}

/* RST_STREAM frames the relay may send per window before the connection is
 * taken for a rapid-reset flood. The relay resets a stream whenever its
 * agent cancels a request, so an ordinary burst is every stream of the
 * connection at once (an agent connection that carried many of them going
 * away): twice that per window is still ordinary traffic, which must not
 * tear down the connection and the other agents' requests on it, while a
 * rapid-reset flood runs orders of magnitude faster. */
static unsigned rst_limit(const struct gw_conn *c)
{
    unsigned l = 2u * ((unsigned)c->gw->cfg.max_concurrent_streams + CTL_STREAM_ROOM);

    return l > RST_MIN_PER_WINDOW ? l : RST_MIN_PER_WINDOW;
}

static int rst_flood(struct gw_conn *c)
{
    double now = ev_now(c->gw->svc.loop);

    if (now - c->rst_window > RST_WINDOW_S) {
        c->rst_window = now;
        c->rst_count = 0;
    }
    return ++c->rst_count > rst_limit(c);
}

static int on_frame_recv(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct gw_conn *c = ud;
    struct gw_stream *s = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);

    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (!s)
            return 0;
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            s->head_end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
            stream_head(s);
        }
        if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
            stream_req_end(s);
        return 0;
    case NGHTTP2_DATA:
        if (s && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
            stream_req_end(s);
        return 0;
    case NGHTTP2_RST_STREAM:
        if (rst_flood(c)) {
            AL_LOG_WARN("gateway.flood", "conn=%llu reason=\"rapid stream resets\"",
                        (unsigned long long)c->id);
            nghttp2_session_terminate_session(ss, NGHTTP2_ENHANCE_YOUR_CALM);
        }
        return 0;
    case NGHTTP2_GOAWAY:
        AL_LOG_INFO("gateway.relay_goaway", "conn=%llu error_code=%u", (unsigned long long)c->id,
                    f->goaway.error_code);
        gw_conn_shutdown(c);
        return 0;
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *ss, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    struct gw_stream *s = nghttp2_session_get_stream_user_data(ss, id);
    (void)flags;
    (void)ud;

    if (s && s->kind == GW_S_AGENT && s->a) {
        gw_agent_data(s, data, len); /* consumes as the bytes move on */
        return 0;
    }
    nghttp2_session_consume(ss, id, len);
    if (s && (s->kind == GW_S_OPEN || s->kind == GW_S_ACK) && !s->resp_ended &&
        rl_buf_append(&s->in, data, len) < 0)
        gw_ctl_fail(s, AL_GRPC_RESOURCE_EXHAUSTED, "request message too large");
    return 0;
}

/* We ended our side while the relay still sends: stop it (as gRPC servers
 * do), so its body does not keep flowing for nothing. */
static int on_frame_send(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct gw_stream *s;
    (void)ud;

    if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    s = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    if (!s)
        return 0;
    s->resp_ended = 1;
    if (!s->req_ended)
        nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static void stream_finalize(struct gw_stream *s, uint32_t code)
{
    struct gw_conn *c = s->c;
    nghttp2_session *ss = gw_stream_session(s);

    if (ss)
        nghttp2_session_set_stream_user_data(ss, s->id, NULL);
    if (s->kind == GW_S_AGENT) {
        gw_agent_closed(s, code);
        c->agent_streams--;
        al_metric_add(c->gw->m.streams, -1);
    } else if (s->kind == GW_S_OPEN && c->ctl == s) {
        gw_ctl_stream_closed(c);
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    rl_buf_cleanup(&s->out);
    rl_buf_cleanup(&s->in);
    al_arena_cleanup(&s->arena);
    free(s);
    conn_maybe_close(c);
}

static int on_stream_close(nghttp2_session *ss, int32_t id, uint32_t code, void *ud)
{
    struct gw_stream *s = nghttp2_session_get_stream_user_data(ss, id);
    (void)ud;

    if (s)
        stream_finalize(s, code);
    return 0;
}

static int make_callbacks(struct gw *gw)
{
    nghttp2_session_callbacks *cb;

    if (nghttp2_session_callbacks_new(&cb) != 0)
        return AL_ERR_NOMEM;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(cb, send_data_cb);
    gw->h2cbs = cb;
    return 0;
}

/* ---------- process-wide ---------- */

int gw_conns_start(struct gw *gw)
{
    size_t n = 0;
    int rc = make_callbacks(gw);

    if (rc < 0)
        return rc;
    while (gw->cfg.relays[n])
        n++;
    gw->relays = calloc(n, sizeof(*gw->relays));
    if (!gw->relays)
        return AL_ERR_NOMEM;
    gw->nrelays = n;
    for (size_t i = 0; i < n; i++) {
        struct gw_relay *r = &gw->relays[i];
        r->gw = gw;
        snprintf(r->spec, sizeof(r->spec), "%s", gw->cfg.relays[i]);
        if (al_split_hostport(r->spec, r->host, sizeof(r->host), &r->port) < 0)
            return AL_ERR_CONFIG; /* gw_config_check() ran: cannot happen */
        ev_timer_init(&r->resolve_w, resolve_timer_cb, 0., 0.);
        r->resolve_w.data = r;
        relay_resolve(r);
    }
    return 0;
}

int gw_conns_ready(const struct gw *gw)
{
    for (const struct gw_conn *c = gw->conns; c; c = c->next)
        if (c->state == GW_CONN_READY)
            return 1;
    return 0;
}

static void relays_stop(struct gw *gw)
{
    for (size_t i = 0; i < gw->nrelays; i++) {
        struct gw_relay *r = &gw->relays[i];
        ev_timer_stop(gw->svc.loop, &r->resolve_w);
        if (r->rq) {
            al_resolve_cancel(r->rq);
            r->rq = NULL;
        }
        for (struct gw_slot *sl = r->slots; sl; sl = sl->next)
            ev_timer_stop(gw->svc.loop, &sl->retry_w);
    }
}

void gw_conns_drain(struct gw *gw)
{
    int64_t grace = (int64_t)(gw->cfg.drain_grace_s * 1000);

    relays_stop(gw);
    for (struct gw_conn *c = gw->conns, *next; c; c = next) {
        next = c->next;
        if (!c->ctl) {
            gw_conn_abort(c, 0); /* no control stream yet: nothing to drain */
            continue;
        }
        gw_ctl_drain(c, "shutdown", grace);
        gw_conn_shutdown(c);
    }
}

void gw_conns_close_all(struct gw *gw)
{
    for (struct gw_conn *c = gw->conns; c; c = c->next) {
        for (struct gw_stream *s = c->streams; s; s = s->next)
            if (s->kind == GW_S_AGENT)
                gw_stream_reset(s, NGHTTP2_CANCEL);
        gw_conn_abort(c, 0);
    }
}

void gw_conns_free(struct gw *gw)
{
    relays_stop(gw);
    for (size_t i = 0; i < gw->nrelays; i++)
        while (gw->relays[i].slots)
            slot_remove(&gw->relays[i], gw->relays[i].slots);
    free(gw->relays);
    gw->relays = NULL;
    gw->nrelays = 0;
    if (gw->h2cbs)
        nghttp2_session_callbacks_del(gw->h2cbs);
    gw->h2cbs = NULL;
}
