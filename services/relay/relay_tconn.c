/*
 * relay_tconn: one reversed gateway connection (see tunnel.proto, "The
 * reversed connection").
 *
 * States (struct rt_conn.state):
 *   HANDSHAKE  TLS 1.3 server, ALPN airlock-tunnel/1, peer SPIFFE id required
 *     | on_ready: identity allowed by some tunnel? else close
 *   CONTROL    TunnelControl.Open sent; the first message must be the
 *     |        registration (anything else: close)
 *   ACKING     registration accepted for >= 1 tunnel; its Ack is queued
 *     | the Ack's request went out
 *   READY      agent streams may be opened (relay_tstream.c)
 *   CLOSING    GOAWAY sent or being sent: control stream ended, no tunnel
 *              accepted, heartbeat timeout, protocol error, relay drain
 * A heartbeat (any control message) re-arms the watchdog; 3 intervals
 * without one close the connection. TunnelDrain and a GOAWAY from the
 * gateway make the connection unusable for new streams; open ones finish.
 *
 * The connection owns its control stream, its Ack calls and the list of
 * agent streams on it. al_h2conn's on_close frees it (after failing or
 * replaying its streams); rl_tunnels_free releases it early, leaving the
 * h2 connection to close without an owner.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "al_err.h"
#include "al_grpc.h"
#include "al_h2conn.h"
#include "al_log.h"
#include "al_metrics.h"
#include "relay_tint.h"

#define CTL_IN_MAX (RT_CTL_MSG_MAX + 5 + 16384) /* one message plus one DATA frame */

static void conn_log(const struct rt_conn *c, int level, const char *event, const char *what)
{
    char gid[96];

    al_log_quote(gid, sizeof(gid), c->gateway_id, strlen(c->gateway_id));
    AL_LOG_AT(level, event, "conn=%s gateway=%s gateway_id=%s remote=%s tunnels=%s %s", c->id_str,
              c->identity[0] ? c->identity : "-", c->gateway_id[0] ? gid : "-", c->remote,
              c->tunnels_log[0] ? c->tunnels_log : "-", what ? what : "");
}

/* ---- requests the relay sends (Open, Ack) ---- */

static void add_nv(nghttp2_nv *nv, size_t *n, const char *name, const char *value)
{
    nv[*n] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                          NGHTTP2_NV_FLAG_NONE};
    (*n)++;
}

static int32_t submit_grpc(struct rt_conn *c, const char *path,
                           nghttp2_data_source_read_callback rd, void *user)
{
    nghttp2_nv nv[8];
    size_t n = 0;
    nghttp2_data_provider prd = {.source.ptr = user, .read_callback = rd};

    add_nv(nv, &n, ":method", "POST");
    add_nv(nv, &n, ":scheme", "https");
    add_nv(nv, &n, ":path", path);
    add_nv(nv, &n, ":authority", "airlock-gateway");
    add_nv(nv, &n, "content-type", "application/grpc");
    add_nv(nv, &n, "te", "trailers");
    add_nv(nv, &n, "user-agent", "airlock-relay");
    return nghttp2_submit_request(al_h2conn_session(c->h2), NULL, nv, n, &prd, user);
}

/* Frames a packed message: 5-byte prefix + bytes, malloc'd. */
static uint8_t *frame_msg(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *p = malloc(n + 5);

    if (!p)
        return NULL;
    al_grpc_frame_prefix(p, n);
    protobuf_c_message_pack(m, p + 5);
    *len = n + 5;
    return p;
}

static ssize_t read_out(const uint8_t *src, size_t len, size_t *off, uint8_t *buf, size_t n,
                        uint32_t *flags)
{
    size_t left = len - *off;

    if (left > n)
        left = n;
    memcpy(buf, src + *off, left);
    *off += left;
    if (*off == len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)left;
}

static ssize_t ctl_read(nghttp2_session *ss, int32_t sid, uint8_t *buf, size_t n, uint32_t *flags,
                        nghttp2_data_source *src, void *ud)
{
    struct rt_conn *c = ud;
    (void)ss;
    (void)sid;
    (void)src;
    if (!c || !c->ctl_req)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return read_out(c->ctl_req, c->ctl_req_len, &c->ctl_req_off, buf, n, flags);
}

static ssize_t ack_read(nghttp2_session *ss, int32_t sid, uint8_t *buf, size_t n, uint32_t *flags,
                        nghttp2_data_source *src, void *ud)
{
    struct rt_ack *a = nghttp2_session_get_stream_user_data(ss, sid);
    (void)src;
    (void)ud;
    if (!a || a->kind != RT_KIND_ACK)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return read_out(a->req, a->req_len, &a->req_off, buf, n, flags);
}

/* ---- Acks ---- */

static void ack_free(struct rt_ack *a)
{
    struct rt_conn *c = a->conn;

    if (a->prev)
        a->prev->next = a->next;
    else
        c->acks = a->next;
    if (a->next)
        a->next->prev = a->prev;
    c->nacks--;
    free(a->req);
    free(a);
}

/* Queues TunnelAck on a new stream. Returns 0 or a negative error (the
 * connection is then aborted by the caller). */
static int send_ack(struct rt_conn *c, const Airlock__V1__TunnelAck *m, int then)
{
    struct rt_ack *a;

    if (c->nacks >= RT_MAX_ACKS)
        return AL_ERR_TOOBIG; /* the gateway stopped answering Acks */
    a = calloc(1, sizeof(*a));
    if (!a)
        return AL_ERR_NOMEM;
    a->kind = RT_KIND_ACK;
    a->conn = c;
    a->seq = m->seq;
    a->then = then;
    a->grpc_status = -1;
    a->req = frame_msg(&m->base, &a->req_len);
    a->next = c->acks;
    if (c->acks)
        c->acks->prev = a;
    c->acks = a;
    c->nacks++;
    if (!a->req) {
        ack_free(a);
        return AL_ERR_NOMEM;
    }
    a->sid = submit_grpc(c, "/airlock.v1.TunnelControl/Ack", ack_read, a);
    if (a->sid < 0) {
        ack_free(a);
        return AL_ERR_STATE;
    }
    al_h2conn_flush(c->h2);
    return 0;
}

static int can_send_requests(const struct rt_conn *c)
{
    return c->h2 && al_h2conn_ready(c->h2) && !c->goaway_recv && c->state != RT_C_CLOSING;
}

static void ack_simple(struct rt_conn *c, int64_t seq)
{
    Airlock__V1__TunnelAck m = AIRLOCK__V1__TUNNEL_ACK__INIT;
    int rc;

    if (!can_send_requests(c))
        return;
    m.seq = seq;
    m.relay_draining = c->t->draining;
    rc = send_ack(c, &m, RT_AFTER_NONE);
    if (rc < 0)
        rt_conn_abort(c, AL_ERR_PROTO, NGHTTP2_NO_ERROR,
                      rc == AL_ERR_TOOBIG ? "reason=\"gateway does not answer Acks\""
                                          : "reason=\"cannot send Ack\"");
}

/* The Ack's request has gone out in full. */
static void ack_sent(struct rt_ack *a)
{
    struct rt_conn *c = a->conn;
    int then = a->then;

    a->then = RT_AFTER_NONE;
    if (then == RT_AFTER_USABLE && c->state == RT_C_ACKING) {
        c->state = RT_C_READY;
        for (size_t i = 0; i < c->noffers; i++) {
            al_metric_add(c->offers[i].tunnel->m_conns, 1);
            c->offers[i].counted = 1;
        }
        conn_log(c, AL_LOG_INFO, "tunnel.conn_ready", "");
    } else if (then == RT_AFTER_SHUTDOWN) {
        rt_conn_shutdown(c, "reason=\"acknowledged, closing\"");
    }
}

static void ack_closed(struct rt_ack *a, uint32_t code)
{
    struct rt_conn *c = a->conn;

    if (a->http_status != 200 || a->grpc_status != AL_GRPC_OK) {
        char what[160];
        snprintf(what, sizeof(what), "seq=%lld http_status=%d grpc_status=%d h2_error=%u",
                 (long long)a->seq, a->http_status, a->grpc_status, code);
        conn_log(c, AL_LOG_WARN, "tunnel.ack_failed", what);
    }
    ack_free(a);
}

/* ---- registration ---- */

static int server_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > RT_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static const struct rt_offer *conn_offer(const struct rt_conn *c, const struct rt_tunnel *tu)
{
    for (size_t i = 0; i < c->noffers; i++)
        if (c->offers[i].tunnel == tu)
            return &c->offers[i];
    return NULL;
}

/* Why the offer cannot be accepted, or NULL when it can. */
static const char *offer_problem(struct rt_conn *c, const Airlock__V1__TunnelOffer *of,
                                 struct rt_tunnel **out)
{
    struct rt_tunnel *tu = rt_tunnel_find(c->t, of->tunnel);

    *out = tu;
    if (!tu)
        return "unknown tunnel";
    if (conn_offer(c, tu))
        return "tunnel offered twice";
    if (!rt_tunnel_allows(tu, c->identity))
        return "identity not allowed for this tunnel";
    if (of->n_servers == 0)
        return "no servers offered";
    if (of->n_servers > RT_MAX_SERVERS)
        return "too many servers";
    for (size_t i = 0; i < of->n_servers; i++)
        if (!server_name_ok(of->servers[i]))
            return "invalid server name";
    return NULL;
}

static int offer_add(struct rt_conn *c, struct rt_tunnel *tu, const Airlock__V1__TunnelOffer *of)
{
    struct rt_offer *o = &c->offers[c->noffers];

    o->conn = c;
    o->tunnel = tu;
    o->servers = calloc(of->n_servers, sizeof(char *));
    if (!o->servers)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < of->n_servers; i++) {
        int dup = 0;
        for (size_t k = 0; k < o->nservers; k++)
            dup |= strcmp(o->servers[k], of->servers[i]) == 0;
        if (dup)
            continue;
        o->servers[o->nservers] = strdup(of->servers[i]);
        if (!o->servers[o->nservers])
            goto nomem;
        o->nservers++;
    }
    if (rt_tunnel_add_offer(tu, o) < 0)
        goto nomem;
    c->noffers++;
    return 0;
nomem:
    for (size_t k = 0; k < o->nservers; k++)
        free(o->servers[k]);
    free(o->servers);
    memset(o, 0, sizeof(*o));
    return AL_ERR_NOMEM;
}

static void copy_text(char *dst, const char *src)
{
    snprintf(dst, RT_TEXT_MAX, "%s", src ? src : "");
}

static void note_tunnel(struct rt_conn *c, const char *name)
{
    size_t len = strlen(c->tunnels_log);
    snprintf(c->tunnels_log + len, sizeof(c->tunnels_log) - len, "%s%s", len ? "," : "", name);
}

static void set_heartbeat(struct rt_conn *c, int64_t ms)
{
    /* the interval the gateway says it uses; a value outside what it may
     * pick falls back to the one the relay asked for */
    c->hb_s = (ms >= 50 && ms <= 60000) ? (double)ms / 1000.0 : c->t->hb_s;
    c->watchdog.repeat = 3 * c->hb_s;
    ev_timer_again(c->t->loop, &c->watchdog);
}

static void reg_record(struct rt_conn *c, const Airlock__V1__TunnelRegistration *r)
{
    copy_text(c->gateway_id, r->gateway_id);
    copy_text(c->gateway_version, r->gateway_version);
    copy_text(c->instance_id, r->instance_id);
    c->max_streams = r->max_concurrent_streams;
    c->conn_index = r->connection_index;
    c->connected_ms = rt_now_ms();
    c->last_hb_ms = c->connected_ms;
    c->registered = 1;
    set_heartbeat(c, r->heartbeat_interval_ms);
}

/* Decides every offer; fills the Ack's lists (pointers into r or static
 * text, valid while r lives). Returns 0 or AL_ERR_NOMEM. */
static int reg_decide(struct rt_conn *c, const Airlock__V1__TunnelRegistration *r,
                      Airlock__V1__TunnelAck *ack, Airlock__V1__TunnelRejection *rej,
                      Airlock__V1__TunnelRejection **rejp)
{
    size_t n = r->n_tunnels;

    c->offers = calloc(n ? n : 1, sizeof(*c->offers));
    ack->accepted_tunnels = calloc(n ? n : 1, sizeof(char *));
    if (!c->offers || !ack->accepted_tunnels)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const Airlock__V1__TunnelOffer *of = r->tunnels[i];
        struct rt_tunnel *tu;
        const char *why = i < RT_MAX_OFFERS ? offer_problem(c, of, &tu) : "too many tunnels";
        if (!why && offer_add(c, tu, of) < 0)
            return AL_ERR_NOMEM;
        if (!why) {
            ack->accepted_tunnels[ack->n_accepted_tunnels++] = tu->name;
            note_tunnel(c, tu->name);
            continue;
        }
        airlock__v1__tunnel_rejection__init(&rej[ack->n_rejected]);
        rej[ack->n_rejected].tunnel = of->tunnel;
        rej[ack->n_rejected].reason = (char *)why;
        rejp[ack->n_rejected] = &rej[ack->n_rejected];
        ack->n_rejected++;
    }
    ack->rejected = rejp;
    return 0;
}

static void reg_log(struct rt_conn *c, const Airlock__V1__TunnelAck *ack)
{
    char what[512], q[96];
    size_t len;

    al_log_quote(q, sizeof(q), c->instance_id, strlen(c->instance_id));
    len = (size_t)snprintf(what, sizeof(what), "instance=%s max_streams=%d heartbeat_ms=%lld", q,
                           c->max_streams, (long long)(c->hb_s * 1000));
    for (size_t i = 0; i < ack->n_rejected && len < sizeof(what); i++) {
        char tq[80];
        al_log_quote(tq, sizeof(tq), ack->rejected[i]->tunnel, strlen(ack->rejected[i]->tunnel));
        len += (size_t)snprintf(what + len, sizeof(what) - len, " rejected=%s:\"%s\"", tq,
                                ack->rejected[i]->reason);
    }
    conn_log(c, AL_LOG_INFO,
             ack->n_accepted_tunnels ? "tunnel.registered" : "tunnel.registration_refused", what);
}

static void on_registration(struct rt_conn *c, int64_t seq,
                            const Airlock__V1__TunnelRegistration *r)
{
    Airlock__V1__TunnelAck ack = AIRLOCK__V1__TUNNEL_ACK__INIT;
    size_t n = r->n_tunnels ? r->n_tunnels : 1;
    Airlock__V1__TunnelRejection *rej = calloc(n, sizeof(*rej));
    Airlock__V1__TunnelRejection **rejp = calloc(n, sizeof(*rejp));
    int rc;

    reg_record(c, r);
    rc = (rej && rejp) ? reg_decide(c, r, &ack, rej, rejp) : AL_ERR_NOMEM;
    if (rc == 0) {
        ack.seq = seq;
        ack.relay_draining = c->t->draining;
        reg_log(c, &ack);
        al_metric_add(ack.n_accepted_tunnels ? c->t->m_reg_accepted : c->t->m_reg_rejected, 1);
        /* no tunnel accepted: the gateway reads the reasons, then we close */
        c->state = ack.n_accepted_tunnels ? RT_C_ACKING : RT_C_CONTROL;
        rc = send_ack(c, &ack, ack.n_accepted_tunnels ? RT_AFTER_USABLE : RT_AFTER_SHUTDOWN);
    }
    free(ack.accepted_tunnels);
    free(rej);
    free(rejp);
    if (rc < 0)
        rt_conn_abort(c, rc, NGHTTP2_INTERNAL_ERROR, "reason=\"cannot acknowledge registration\"");
}

/* ---- control messages ---- */

static void on_heartbeat(struct rt_conn *c, const Airlock__V1__TunnelHeartbeat *h)
{
    c->gw_open_streams = h->open_streams;
    c->last_hb_ms = rt_now_ms();
    if (al_log_min_level <= AL_LOG_DEBUG) {
        char what[96];
        snprintf(what, sizeof(what), "gateway_open_streams=%d open_streams=%d", h->open_streams,
                 c->open_streams);
        conn_log(c, AL_LOG_DEBUG, "tunnel.heartbeat", what);
    }
}

static void on_drain(struct rt_conn *c, const Airlock__V1__TunnelDrain *d)
{
    char what[200], q[128];

    c->draining = 1;
    al_log_quote(q, sizeof(q), d->reason, strlen(d->reason));
    snprintf(what, sizeof(what), "reason=%s grace_ms=%lld open_streams=%d", q,
             (long long)d->grace_ms, c->open_streams);
    conn_log(c, AL_LOG_INFO, "tunnel.gateway_drain", what);
}

static void on_message(struct rt_conn *c, const Airlock__V1__TunnelControlMessage *m)
{
    struct rl_tunnels *t = c->t;
    int reg = m->kind_case == AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__KIND_REGISTRATION;

    if (m->seq <= c->last_seq) {
        rt_conn_abort(c, AL_ERR_PROTO, NGHTTP2_PROTOCOL_ERROR,
                      "reason=\"control message seq not increasing\"");
        return;
    }
    if (reg == c->registered) {
        rt_conn_abort(c, AL_ERR_PROTO, NGHTTP2_PROTOCOL_ERROR,
                      reg ? "reason=\"second registration\""
                          : "reason=\"first control message is not a registration\"");
        return;
    }
    c->last_seq = m->seq;
    c->last_hb_ms = rt_now_ms();
    ev_timer_again(t->loop, &c->watchdog);
    switch (m->kind_case) {
    case AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__KIND_REGISTRATION:
        al_metric_add(t->m_ctl_registration, 1);
        on_registration(c, m->seq, m->registration);
        return; /* acknowledged there, with the decision */
    case AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__KIND_HEARTBEAT:
        al_metric_add(t->m_ctl_heartbeat, 1);
        on_heartbeat(c, m->heartbeat);
        break;
    case AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__KIND_DRAIN:
        al_metric_add(t->m_ctl_drain, 1);
        on_drain(c, m->drain);
        break;
    default: /* a kind this relay does not know: liveness only */
        al_metric_add(t->m_ctl_other, 1);
        break;
    }
    ack_simple(c, m->seq);
}

/* Takes every complete message out of ctl_in. */
static void ctl_deframe(struct rt_conn *c)
{
    while (c->h2 && c->state != RT_C_CLOSING) {
        const uint8_t *msg;
        size_t len;
        int compressed;
        long used =
            al_grpc_frame_next(c->ctl_in.p, c->ctl_in.len, RT_CTL_MSG_MAX, &msg, &len, &compressed);
        if (used == 0)
            return;
        if (used < 0 || compressed) {
            rt_conn_abort(c, AL_ERR_PROTO, NGHTTP2_PROTOCOL_ERROR,
                          used == AL_ERR_TOOBIG ? "reason=\"control message over 64 KiB\""
                                                : "reason=\"bad control message framing\"");
            return;
        }
        Airlock__V1__TunnelControlMessage *m =
            airlock__v1__tunnel_control_message__unpack(NULL, len, msg);
        rl_buf_consume(&c->ctl_in, (size_t)used);
        if (!m) {
            rt_conn_abort(c, AL_ERR_PROTO, NGHTTP2_PROTOCOL_ERROR,
                          "reason=\"control message does not parse\"");
            return;
        }
        on_message(c, m);
        airlock__v1__tunnel_control_message__free_unpacked(m, NULL);
    }
}

static void ctl_data(struct rt_conn *c, nghttp2_session *ss, int32_t sid, const uint8_t *d,
                     size_t n)
{
    nghttp2_session_consume(ss, sid, n); /* bounded by CTL_IN_MAX, not by the window */
    if (c->ctl_http_status != 200) {
        rt_conn_abort(c, AL_ERR_PROTO, NGHTTP2_PROTOCOL_ERROR,
                      "reason=\"control stream answered without HTTP 200\"");
        return;
    }
    if (rl_buf_append(&c->ctl_in, d, n) < 0) {
        rt_conn_abort(c, AL_ERR_PROTO, NGHTTP2_PROTOCOL_ERROR,
                      "reason=\"control message over 64 KiB\"");
        return;
    }
    ctl_deframe(c);
}

static void ctl_closed(struct rt_conn *c, uint32_t code)
{
    char what[160];

    c->ctl_sid = 0;
    if (c->state == RT_C_CLOSING)
        return;
    snprintf(what, sizeof(what),
             "reason=\"control stream ended\" http_status=%d grpc_status=%d "
             "h2_error=%u",
             c->ctl_http_status, c->ctl_grpc_status, code);
    rt_conn_shutdown(c, what);
}

/* ---- nghttp2 callbacks ---- */

static int kind_of(const void *p)
{
    return p ? *(const uint8_t *)p : 0;
}

static int cb_begin_headers(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    void *p = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    if (!ud || kind_of(p) != RT_KIND_AGENT)
        return 0;
    return rt_stream_on_begin_headers(ud, p, f);
}

static int status_of(const uint8_t *v, size_t n)
{
    int s = 0;
    if (n != 3)
        return -1;
    for (size_t i = 0; i < 3; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        s = s * 10 + (v[i] - '0');
    }
    return s;
}

static void call_header(int *http, int *grpc, const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen)
{
    if (namelen == 7 && memcmp(name, ":status", 7) == 0)
        *http = status_of(value, valuelen);
    else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
        *grpc = (valuelen >= 1 && valuelen <= 2) ? atoi((const char *)value) : AL_GRPC_UNKNOWN;
}

static int cb_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct rt_conn *c = ud;
    void *p = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    (void)flags;

    if (!c)
        return 0;
    switch (kind_of(p)) {
    case RT_KIND_AGENT:
        return rt_stream_on_header(c, p, f, name, namelen, value, valuelen);
    case RT_KIND_ACK: {
        struct rt_ack *a = p;
        call_header(&a->http_status, &a->grpc_status, name, namelen, value, valuelen);
        return 0;
    }
    case RT_KIND_CONTROL:
        call_header(&c->ctl_http_status, &c->ctl_grpc_status, name, namelen, value, valuelen);
        return 0;
    default:
        return 0;
    }
}

static void on_goaway(struct rt_conn *c, const nghttp2_goaway *g)
{
    char what[96];

    c->goaway_recv = 1;
    c->goaway_last_sid = g->last_stream_id;
    snprintf(what, sizeof(what), "last_stream_id=%d error_code=%u open_streams=%d",
             g->last_stream_id, g->error_code, c->open_streams);
    conn_log(c, AL_LOG_INFO, "tunnel.goaway", what);
}

static int cb_frame_recv(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct rt_conn *c = ud;
    void *p;

    if (!c)
        return 0;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        on_goaway(c, &f->goaway);
        return 0;
    }
    if (f->hd.stream_id == 0)
        return 0;
    p = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    if (kind_of(p) == RT_KIND_AGENT)
        return rt_stream_on_frame_recv(c, p, f);
    return 0;
}

static int cb_data(nghttp2_session *ss, uint8_t flags, int32_t sid, const uint8_t *d, size_t n,
                   void *ud)
{
    struct rt_conn *c = ud;
    void *p = nghttp2_session_get_stream_user_data(ss, sid);
    (void)flags;

    switch (c ? kind_of(p) : 0) {
    case RT_KIND_AGENT:
        return rt_stream_on_data(c, p, d, n);
    case RT_KIND_CONTROL:
        ctl_data(c, ss, sid, d, n);
        return 0;
    default: /* Ack answers, and streams nobody listens to any more */
        nghttp2_session_consume(ss, sid, n);
        return 0;
    }
}

static int cb_stream_close(nghttp2_session *ss, int32_t sid, uint32_t code, void *ud)
{
    struct rt_conn *c = ud;
    void *p = nghttp2_session_get_stream_user_data(ss, sid);

    if (!c || !p)
        return 0;
    nghttp2_session_set_stream_user_data(ss, sid, NULL);
    switch (kind_of(p)) {
    case RT_KIND_AGENT:
        rt_stream_on_close(c, p, code);
        break;
    case RT_KIND_ACK:
        ack_closed(p, code);
        break;
    case RT_KIND_CONTROL:
        ctl_closed(c, code);
        break;
    }
    return 0;
}

static int cb_frame_send(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    void *p;

    if (!ud || f->hd.stream_id == 0)
        return 0;
    p = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    if (f->hd.type == NGHTTP2_HEADERS && kind_of(p) == RT_KIND_AGENT)
        rt_stream_on_headers_sent(p);
    else if (f->hd.type == NGHTTP2_DATA && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
             kind_of(p) == RT_KIND_ACK)
        ack_sent(p);
    return 0;
}

/* A request HEADERS that nghttp2 will never send (GOAWAY received, session
 * closing). The stream may or may not have been opened: nghttp2 opens it
 * before its last check, and then closes it (close callback) after this one,
 * so whatever is freed here leaves the stream's user data first. */
static int cb_not_send(nghttp2_session *ss, const nghttp2_frame *f, int lib_error, void *ud)
{
    struct rt_conn *c = ud;
    int32_t sid = f->hd.stream_id;
    (void)lib_error;

    if (!c || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (sid == c->ctl_sid) {
        c->ctl_sid = 0;
        rt_conn_abort(c, AL_ERR_CLOSED, NGHTTP2_NO_ERROR, "reason=\"control stream not sent\"");
        return 0;
    }
    for (struct rt_ack *a = c->acks; a; a = a->next) {
        if (a->sid == sid) {
            /* nghttp2 may have opened the stream already (a GOAWAY arrived
             * between submit and send) and closes it after this callback:
             * its close callback must not find the freed Ack */
            nghttp2_session_set_stream_user_data(ss, sid, NULL);
            ack_free(a);
            return 0;
        }
    }
    rt_stream_not_sent(c, sid);
    return 0;
}

nghttp2_session_callbacks *rt_callbacks_new(void)
{
    nghttp2_session_callbacks *cbs;

    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, cb_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, cb_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, cb_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, cb_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, cb_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, cb_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, cb_not_send);
    return cbs;
}

/* ---- lifecycle ---- */

static void watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rt_conn *c = w->data;
    char what[96];
    (void)loop;
    (void)revents;

    ev_timer_stop(c->t->loop, w);
    al_metric_add(c->t->m_hb_timeouts, 1);
    snprintf(what, sizeof(what), "reason=\"no heartbeat for 3 intervals\" interval_ms=%lld",
             (long long)(c->hb_s * 1000));
    rt_conn_abort(c, AL_ERR_TIMEOUT, NGHTTP2_NO_ERROR, what);
}

static void kill_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rt_conn *c = w->data;
    (void)loop;
    (void)revents;
    if (c->h2)
        al_h2conn_close(c->h2, c->close_err ? c->close_err : AL_ERR_CLOSED);
}

static int open_control(struct rt_conn *c)
{
    Airlock__V1__OpenTunnelControlRequest req = AIRLOCK__V1__OPEN_TUNNEL_CONTROL_REQUEST__INIT;

    req.relay_id = c->t->relay_id;
    req.relay_version = c->t->relay_version;
    req.connection_id = c->id_str;
    req.heartbeat_interval_ms = (int64_t)(c->t->hb_s * 1000);
    c->ctl_req = frame_msg(&req.base, &c->ctl_req_len);
    if (!c->ctl_req)
        return AL_ERR_NOMEM;
    c->ctl_sid = submit_grpc(c, "/airlock.v1.TunnelControl/Open", ctl_read, &c->ctl_kind);
    return c->ctl_sid < 0 ? AL_ERR_NOMEM : 0;
}

static int tunnels_for(const struct rl_tunnels *t, const char *identity)
{
    for (size_t i = 0; i < t->ntunnels; i++)
        if (rt_tunnel_allows(&t->tunnels[i], identity))
            return 1;
    return 0;
}

static void conn_ids(struct rt_conn *c, struct al_h2conn *h2)
{
    c->h2 = h2;
    c->id = al_h2conn_id(h2);
    snprintf(c->id_str, sizeof(c->id_str), "%llu", (unsigned long long)c->id);
    snprintf(c->remote, sizeof(c->remote), "%s", al_h2conn_peer_addr(h2));
}

static void conn_on_ready(struct al_h2conn *h2, void *user)
{
    struct rt_conn *c = user;

    if (!c)
        return;
    rt_handshake_over(c);
    conn_ids(c, h2);
    snprintf(c->identity, sizeof(c->identity), "%s", al_h2conn_peer_id(h2));
    snprintf(c->remote, sizeof(c->remote), "%s", al_h2conn_peer_addr(h2));
    if (!tunnels_for(c->t, c->identity)) {
        al_metric_add(c->t->m_conn_refused, 1);
        c->close_err = AL_ERR_AUTH;
        conn_log(c, AL_LOG_WARN, "tunnel.identity_refused",
                 "reason=\"identity may serve no configured tunnel\"");
        al_h2conn_close(h2, AL_ERR_AUTH);
        return;
    }
    nghttp2_session_set_local_window_size(al_h2conn_session(h2), NGHTTP2_FLAG_NONE, 0,
                                          RT_CONN_WINDOW);
    c->state = RT_C_CONTROL;
    c->last_hb_ms = rt_now_ms();
    c->watchdog.repeat = 3 * c->hb_s;
    ev_timer_again(c->t->loop, &c->watchdog);
    if (open_control(c) < 0) {
        c->close_err = AL_ERR_NOMEM;
        al_h2conn_close(h2, AL_ERR_NOMEM);
        return;
    }
    conn_log(c, AL_LOG_INFO, "tunnel.conn_open", "");
    al_h2conn_flush(h2);
}

static void conn_unlink(struct rt_conn *c)
{
    struct rl_tunnels *t = c->t;

    if (c->prev)
        c->prev->next = c->next;
    else
        t->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    t->nconns--;
    al_metric_add(t->m_conns_open, -1);
}

/* Drops registry entries, Acks and buffers; no nghttp2 call. */
static void conn_release(struct rt_conn *c)
{
    ev_timer_stop(c->t->loop, &c->watchdog);
    ev_timer_stop(c->t->loop, &c->kill);
    for (size_t i = 0; i < c->noffers; i++) {
        struct rt_offer *o = &c->offers[i];
        rt_tunnel_del_offer(o->tunnel, o);
        if (o->counted)
            al_metric_add(o->tunnel->m_conns, -1);
        for (size_t k = 0; k < o->nservers; k++)
            free(o->servers[k]);
        free(o->servers);
    }
    free(c->offers);
    c->offers = NULL;
    c->noffers = 0;
    while (c->acks)
        ack_free(c->acks);
    free(c->ctl_req);
    c->ctl_req = NULL;
    rl_buf_cleanup(&c->ctl_in);
}

static void conn_on_close(struct al_h2conn *h2, int err, void *user)
{
    struct rt_conn *c = user;
    nghttp2_session *ss = al_h2conn_session(h2);
    char what[96];

    if (!c)
        return;
    if (ss)
        nghttp2_session_set_user_data(ss, NULL); /* the session dies after this */
    c->h2 = NULL;
    if (!c->close_err)
        c->close_err = err ? err : AL_ERR_CLOSED;
    if (c->state != RT_C_HANDSHAKE) {
        snprintf(what, sizeof(what), "reason=\"%s\" open_streams=%d",
                 err ? al_strerror(err) : "closed", c->open_streams);
        conn_log(c, AL_LOG_INFO, "tunnel.conn_closed", what);
    }
    c->state = RT_C_CLOSING;
    rt_handshake_over(c);
    conn_release(c);
    rt_streams_conn_lost(c); /* may replay onto other connections */
    conn_unlink(c);
    free(c);
}

static struct rt_conn *conn_new(struct rl_tunnels *t)
{
    struct rt_conn *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->t = t;
    c->ctl_kind = RT_KIND_CONTROL;
    c->hb_s = t->hb_s;
    rl_buf_init(&c->ctl_in, CTL_IN_MAX);
    ev_init(&c->watchdog, watchdog_cb);
    c->watchdog.data = c;
    ev_timer_init(&c->kill, kill_cb, 2., 0.);
    c->kill.data = c;
    c->next = t->conns;
    if (t->conns)
        t->conns->prev = c;
    t->conns = c;
    t->nconns++;
    al_metric_add(t->m_conns_open, 1);
    return c;
}

int rt_conn_accept(struct rl_tunnels *t, int fd)
{
    struct rt_conn *c = conn_new(t);
    SSL *ssl = c ? al_tls_ssl_new(t->tls) : NULL;
    struct al_h2conn *h2;
    int rc;

    if (!c || !ssl) {
        if (c)
            conn_unlink(c);
        free(c);
        SSL_free(ssl);
        close(fd);
        return c ? AL_ERR_TLS : AL_ERR_NOMEM;
    }
    struct al_h2conn_opts co = {
        .tls_server = 1,
        .h2_server = 0, /* reversed: the relay opens the streams */
        .require_peer_id = 1,
        .alpn = RT_ALPN,
        .initial_window = RT_STREAM_WINDOW,
        .ping_interval_s = t->hb_s,
        .ping_timeout_s = 3 * t->hb_s,
        .manual_window = 1,
        .cbs = t->cbs,
        .session_user = c,
        .on_ready = conn_on_ready,
        .on_close = conn_on_close,
        .user = c,
    };
    rc = al_h2conn_new(t->loop, fd, ssl, &co, &h2); /* takes fd and ssl */
    if (rc < 0) {
        conn_unlink(c);
        rl_buf_cleanup(&c->ctl_in);
        free(c);
        return rc;
    }
    if (c->state == RT_C_HANDSHAKE) { /* on_ready has not run */
        c->in_handshake = 1;
        t->nhandshakes++;
    }
    /* a handshake that fails inside al_h2conn_new already scheduled on_close */
    conn_ids(c, h2);
    AL_LOG_DEBUG("tunnel.accept", "conn=%s remote=%s", c->id_str, c->remote);
    return 0;
}

void rt_conn_shutdown(struct rt_conn *c, const char *why)
{
    nghttp2_session *ss;

    if (!c->h2 || c->state == RT_C_CLOSING)
        return;
    c->state = RT_C_CLOSING;
    conn_log(c, AL_LOG_INFO, "tunnel.conn_shutdown", why);
    ss = al_h2conn_session(c->h2);
    if (ss && c->ctl_sid > 0) {
        nghttp2_session_set_stream_user_data(ss, c->ctl_sid, NULL);
        nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, c->ctl_sid, NGHTTP2_CANCEL);
        c->ctl_sid = 0;
    }
    /* GOAWAY now; al_h2conn closes once the remaining streams end. The
     * watchdog stays armed: no heartbeat arrives any more, so a gateway that
     * never finishes its streams is cut off after 3 intervals. */
    al_h2conn_shutdown(c->h2);
}

void rt_conn_abort(struct rt_conn *c, int err, uint32_t code, const char *why)
{
    nghttp2_session *ss;

    if (!c->h2)
        return;
    if (!c->close_err)
        c->close_err = err;
    if (ev_is_active(&c->kill))
        return; /* already on its way out */
    conn_log(c, AL_LOG_WARN, "tunnel.conn_abort", why);
    c->state = RT_C_CLOSING;
    ss = al_h2conn_ready(c->h2) ? al_h2conn_session(c->h2) : NULL;
    if (!ss) {
        al_h2conn_close(c->h2, err);
        return;
    }
    /* GOAWAY, then al_h2conn closes once it is written; the kill timer
     * covers a peer that does not read */
    nghttp2_session_terminate_session(ss, code);
    al_h2conn_flush(c->h2);
    ev_timer_start(c->t->loop, &c->kill);
}

void rt_conn_drain(struct rt_conn *c)
{
    Airlock__V1__TunnelAck m = AIRLOCK__V1__TUNNEL_ACK__INIT;
    char *names[RT_MAX_OFFERS];

    if (!c->h2)
        return;
    if (!c->registered || !can_send_requests(c)) {
        rt_conn_shutdown(c, "reason=\"relay draining\"");
        return;
    }
    /* Ack is idempotent: the last message again, now with relay_draining;
     * the GOAWAY follows once it is out (after a GOAWAY no request may be
     * sent). Re-acknowledging the registration repeats what was accepted. */
    m.seq = c->last_seq;
    m.relay_draining = 1;
    if (c->state == RT_C_ACKING || c->last_seq == 0 || c->noffers == 0) {
        rt_conn_shutdown(c, "reason=\"relay draining\"");
        return;
    }
    for (size_t i = 0; i < c->noffers; i++)
        names[i] = c->offers[i].tunnel->name;
    m.accepted_tunnels = names;
    m.n_accepted_tunnels = c->noffers;
    if (send_ack(c, &m, RT_AFTER_SHUTDOWN) < 0)
        rt_conn_shutdown(c, "reason=\"relay draining\"");
    else
        conn_log(c, AL_LOG_INFO, "tunnel.conn_drain", "reason=\"relay draining\"");
}

void rt_conn_forget(struct rt_conn *c)
{
    if (c->h2) {
        nghttp2_session *ss = al_h2conn_session(c->h2);
        if (ss)
            nghttp2_session_set_user_data(ss, NULL);
        al_h2conn_set_user(c->h2, NULL);
        al_h2conn_close(c->h2, 0);
        c->h2 = NULL;
    }
    conn_release(c);
    conn_unlink(c);
    free(c);
}
