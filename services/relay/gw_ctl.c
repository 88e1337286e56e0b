/*
 * gw_ctl: TunnelControl, served by the gateway on each reversed connection
 * (tunnel.proto step 3).
 *
 * Open (server streaming, exactly one per connection): the answer is a
 * stream of TunnelControlMessage - the TunnelRegistration first (seq 1),
 * then a TunnelHeartbeat every interval (the relay's wish, clamped to
 * 1..60 s; our heartbeat_interval when it states none), and a TunnelDrain
 * before we leave. A second Open gets FAILED_PRECONDITION.
 * Ack (unary): the relay acknowledges each message. The Ack of the
 * registration says which tunnels the relay will route here: none means it
 * closes the connection (we log its reasons and redial at reconnect_max);
 * relay_draining means finish the streams, close and redial. No Ack for 3
 * intervals: the connection is presumed dead, closed and redialled (once
 * we have sent our shutdown notice the relay can open no Ack stream, so the
 * watchdog stops there and HTTP/2 PINGs alone detect a dead peer).
 * No Open within 3 x heartbeat_interval of the connection opening: closed.
 *
 * The gRPC wire format is spoken directly on the connection's streams
 * (application/grpc, 5-byte message prefix, grpc-status trailers) since the
 * gateway is the HTTP/2 server of a connection it dialled itself.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "airlock/v1/tunnel.pb-c.h"
#include "al_err.h"
#include "al_grpc.h"
#include "al_h2conn.h"
#include "al_log.h"
#include "al_metrics.h"
#include "gw.h"

#define CTL_MSG_MAX (64 * 1024)

static nghttp2_nv nv_of(const char *n, const char *v)
{
    return (nghttp2_nv){(uint8_t *)n, (uint8_t *)v, strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE};
}

void gw_ctl_fail(struct gw_stream *s, int status, const char *msg)
{
    nghttp2_session *ss = gw_stream_session(s);
    char code[12], enc[512];
    nghttp2_nv nv[4];

    if (s->kind == GW_S_DONE || s->submitted || !ss)
        return;
    s->kind = GW_S_DONE;
    snprintf(code, sizeof(code), "%d", status);
    al_grpc_encode_message(msg, enc, sizeof(enc));
    nv[0] = nv_of(":status", "200");
    nv[1] = nv_of("content-type", "application/grpc");
    nv[2] = nv_of("grpc-status", code);
    nv[3] = nv_of("grpc-message", enc);
    s->submitted = 1;
    if (nghttp2_submit_response(ss, s->id, nv, 4, NULL) != 0)
        gw_stream_reset(s, NGHTTP2_INTERNAL_ERROR);
    al_h2conn_flush(s->c->h2);
}

/* The one request message of a call, unpacked into the stream's arena. */
static ProtobufCMessage *parse_request(struct gw_stream *s, const ProtobufCMessageDescriptor *d)
{
    const uint8_t *msg;
    size_t ml;
    int comp;
    long used = al_grpc_frame_next(s->in.p, s->in.len, CTL_MSG_MAX, &msg, &ml, &comp);

    if (used <= 0 || (size_t)used != s->in.len || comp)
        return NULL;
    return protobuf_c_message_unpack(d, al_arena_pb(&s->arena), ml, msg);
}

/* Appends one length-prefixed message to the stream's output. */
static int send_message(struct gw_stream *s, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n + 5);
    int rc;

    if (!buf)
        return AL_ERR_NOMEM;
    al_grpc_frame_prefix(buf, n);
    protobuf_c_message_pack(m, buf + 5);
    rc = rl_buf_append(&s->out, buf, n + 5);
    free(buf);
    if (rc == 0)
        gw_stream_kick(s);
    return rc;
}

static int submit_grpc_head(struct gw_stream *s)
{
    nghttp2_nv nv[2] = {nv_of(":status", "200"), nv_of("content-type", "application/grpc")};

    s->grpc = 1;
    s->grpc_status = AL_GRPC_OK;
    return gw_stream_submit(s, nv, 2);
}

/* One control message with the next seq. */
static int ctl_send(struct gw_conn *c, Airlock__V1__TunnelControlMessage *m)
{
    if (!c->ctl || c->ctl->out_eof)
        return AL_ERR_STATE;
    m->seq = ++c->seq;
    m->time_ms = gw_unix_ms();
    return send_message(c->ctl, &m->base);
}

/* ---------- registration ---------- */

/* Groups the routes by tunnel, in configuration order, into the arena. */
static int offers(struct gw_conn *c, struct al_arena *a, Airlock__V1__TunnelRegistration *reg)
{
    const struct gw_routes *rt = &c->gw->cfg.routes;
    Airlock__V1__TunnelOffer **v = al_arena_alloc(a, rt->n * sizeof(*v));

    if (!v)
        return AL_ERR_NOMEM;
    reg->tunnels = v;
    reg->n_tunnels = 0;
    for (size_t i = 0; i < rt->n; i++) {
        Airlock__V1__TunnelOffer *o = NULL;
        for (size_t k = 0; k < reg->n_tunnels && !o; k++)
            if (strcmp(v[k]->tunnel, rt->v[i].tunnel) == 0)
                o = v[k];
        if (!o) {
            o = al_arena_alloc(a, sizeof(*o));
            if (!o)
                return AL_ERR_NOMEM;
            airlock__v1__tunnel_offer__init(o);
            o->servers = al_arena_alloc(a, rt->n * sizeof(char *));
            if (!o->servers)
                return AL_ERR_NOMEM;
            o->tunnel = rt->v[i].tunnel;
            v[reg->n_tunnels++] = o;
        }
        o->servers[o->n_servers++] = rt->v[i].server;
    }
    return 0;
}

static int send_registration(struct gw_conn *c)
{
    Airlock__V1__TunnelControlMessage m = AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__INIT;
    Airlock__V1__TunnelRegistration reg = AIRLOCK__V1__TUNNEL_REGISTRATION__INIT;
    struct al_arena a;
    int rc;

    al_arena_init(&a, 0);
    rc = offers(c, &a, &reg);
    if (rc == 0) {
        reg.gateway_id = c->gw->gateway_id;
        reg.gateway_version = (char *)GW_VERSION;
        reg.instance_id = c->gw->instance_id;
        reg.max_concurrent_streams = c->gw->cfg.max_concurrent_streams;
        reg.heartbeat_interval_ms = (int64_t)(c->interval * 1000);
        reg.connection_index = c->slot ? c->slot->index : 0;
        m.kind_case = AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__KIND_REGISTRATION;
        m.registration = &reg;
        rc = ctl_send(c, &m);
        c->reg_seq = m.seq;
    }
    al_arena_cleanup(&a);
    return rc;
}

static void send_heartbeat(struct gw_conn *c)
{
    Airlock__V1__TunnelControlMessage m = AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__INIT;
    Airlock__V1__TunnelHeartbeat hb = AIRLOCK__V1__TUNNEL_HEARTBEAT__INIT;

    hb.open_streams = c->agent_streams;
    m.kind_case = AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__KIND_HEARTBEAT;
    m.heartbeat = &hb;
    (void)ctl_send(c, &m);
}

void gw_ctl_drain(struct gw_conn *c, const char *reason, int64_t grace_ms)
{
    Airlock__V1__TunnelControlMessage m = AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__INIT;
    Airlock__V1__TunnelDrain d = AIRLOCK__V1__TUNNEL_DRAIN__INIT;

    if (!c->ctl || c->drain_sent)
        return;
    c->drain_sent = 1;
    d.reason = (char *)reason;
    d.grace_ms = grace_ms;
    m.kind_case = AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__KIND_DRAIN;
    m.drain = &d;
    (void)ctl_send(c, &m);
    AL_LOG_INFO("gateway.drain_sent", "conn=%llu relay_conn=%s open_streams=%d grace_ms=%lld",
                (unsigned long long)c->id, c->relay_conn, c->agent_streams, (long long)grace_ms);
}

/* ---------- timers ---------- */

static void ctl_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct gw_conn *c = w->data;
    double now = ev_now(loop);
    (void)revents;

    if (!c->ctl) {
        AL_LOG_WARN("gateway.conn_timeout",
                    "conn=%llu reason=\"no TunnelControl.Open from the "
                    "relay in time\"",
                    (unsigned long long)c->id);
        ev_timer_stop(loop, w);
        gw_conn_abort(c, AL_ERR_TIMEOUT);
        return;
    }
    if (!c->notice && !c->goaway && now - c->last_ack > 3 * c->interval) {
        AL_LOG_WARN("gateway.conn_timeout",
                    "conn=%llu relay_conn=%s reason=\"no Ack for 3 "
                    "heartbeat intervals\" interval_s=%g",
                    (unsigned long long)c->id, c->relay_conn, c->interval);
        ev_timer_stop(loop, w);
        gw_conn_abort(c, AL_ERR_TIMEOUT);
        return;
    }
    send_heartbeat(c);
}

void gw_ctl_start(struct gw_conn *c)
{
    ev_timer_init(&c->ctl_w, ctl_timer_cb, 3 * c->gw->cfg.heartbeat_s, 0.);
    c->ctl_w.data = c;
    ev_timer_start(c->gw->svc.loop, &c->ctl_w);
}

void gw_ctl_stop(struct gw_conn *c)
{
    if (c->ctl_w.data)
        ev_timer_stop(c->gw->svc.loop, &c->ctl_w);
}

/* ---------- calls ---------- */

static double clamp_interval(int64_t ms, double def)
{
    double s = ms == 0 ? def : (double)ms / 1000.0;
    return s < 1 ? 1 : s > 60 ? 60 : s;
}

static void open_call(struct gw_stream *s)
{
    struct gw_conn *c = s->c;
    const Airlock__V1__OpenTunnelControlRequest *rq;
    char q1[96], q2[96];

    if (c->ctl) {
        gw_ctl_fail(s, AL_GRPC_FAILED_PRECONDITION,
                    "a control stream is already open on this connection");
        return;
    }
    rq = (const void *)parse_request(s, &airlock__v1__open_tunnel_control_request__descriptor);
    if (!rq || rq->heartbeat_interval_ms < 0) {
        gw_ctl_fail(s, AL_GRPC_INVALID_ARGUMENT, "malformed OpenTunnelControlRequest");
        return;
    }
    if (c->gw->draining || c->notice || c->goaway) {
        gw_ctl_fail(s, AL_GRPC_UNAVAILABLE, "the gateway is draining");
        return;
    }
    al_log_quote(q1, sizeof(q1), rq->relay_id, strlen(rq->relay_id));
    al_log_quote(q2, sizeof(q2), rq->connection_id, strlen(rq->connection_id));
    snprintf(c->relay_id, sizeof(c->relay_id), "%s", q1);
    snprintf(c->relay_conn, sizeof(c->relay_conn), "%s", q2);
    c->interval = clamp_interval(rq->heartbeat_interval_ms, c->gw->cfg.heartbeat_s);
    c->ctl = s;
    if (submit_grpc_head(s) < 0 || send_registration(c) < 0) {
        gw_conn_abort(c, AL_ERR_NOMEM);
        return;
    }
    c->last_ack = ev_now(c->gw->svc.loop);
    gw_conn_set_state(c, GW_CONN_REGISTERING);
    ev_timer_stop(c->gw->svc.loop, &c->ctl_w);
    ev_timer_set(&c->ctl_w, c->interval, c->interval);
    ev_timer_start(c->gw->svc.loop, &c->ctl_w);
    AL_LOG_INFO("gateway.registering", "conn=%llu relay=%s relay_conn=%s heartbeat_ms=%lld",
                (unsigned long long)c->id, c->relay_id, c->relay_conn,
                (long long)(c->interval * 1000));
}

static void log_registration(struct gw_conn *c, const Airlock__V1__TunnelAck *ack)
{
    char q1[96], q2[256];

    for (size_t i = 0; i < ack->n_rejected; i++) {
        const Airlock__V1__TunnelRejection *r = ack->rejected[i];
        AL_LOG_WARN("gateway.tunnel_rejected", "conn=%llu relay=%s tunnel=%s reason=%s",
                    (unsigned long long)c->id, c->relay_id,
                    al_log_quote(q1, sizeof(q1), r->tunnel, strlen(r->tunnel)),
                    al_log_quote(q2, sizeof(q2), r->reason, strlen(r->reason)));
    }
    for (size_t i = 0; i < ack->n_accepted_tunnels; i++)
        AL_LOG_INFO("gateway.tunnel_accepted", "conn=%llu relay=%s tunnel=%s",
                    (unsigned long long)c->id, c->relay_id,
                    al_log_quote(q1, sizeof(q1), ack->accepted_tunnels[i],
                                 strlen(ack->accepted_tunnels[i])));
    if (ack->n_accepted_tunnels == 0)
        AL_LOG_ERROR("gateway.registration_refused",
                     "conn=%llu relay=%s reason=\"the relay accepted none of our tunnels; "
                     "redialling at reconnect_max\" hint=\"check the relay's tunnels.gateways "
                     "for this gateway's SPIFFE id\"",
                     (unsigned long long)c->id, c->relay_id);
}

static void ack_call(struct gw_stream *s)
{
    Airlock__V1__TunnelAckResponse resp = AIRLOCK__V1__TUNNEL_ACK_RESPONSE__INIT;
    struct gw_conn *c = s->c;
    const Airlock__V1__TunnelAck *ack;

    ack = (const void *)parse_request(s, &airlock__v1__tunnel_ack__descriptor);
    if (!ack) {
        gw_ctl_fail(s, AL_GRPC_INVALID_ARGUMENT, "malformed TunnelAck");
        return;
    }
    if (!c->ctl) {
        gw_ctl_fail(s, AL_GRPC_FAILED_PRECONDITION, "no control stream is open");
        return;
    }
    if (ack->seq <= 0 || ack->seq > c->seq) {
        gw_ctl_fail(s, AL_GRPC_INVALID_ARGUMENT, "seq was never sent");
        return;
    }
    if (submit_grpc_head(s) < 0 || send_message(s, &resp.base) < 0) {
        gw_stream_reset(s, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    s->out_eof = 1;
    gw_stream_kick(s);
    c->last_ack = ev_now(c->gw->svc.loop);
    if (ack->seq == c->reg_seq && c->state == GW_CONN_REGISTERING) {
        log_registration(c, ack);
        gw_conn_registered(c, ack->n_accepted_tunnels > 0);
        if (ack->n_accepted_tunnels > 0)
            AL_LOG_INFO("gateway.registered", "conn=%llu relay=%s tunnels=%zu",
                        (unsigned long long)c->id, c->relay_id, ack->n_accepted_tunnels);
    }
    if (ack->relay_draining && !c->relay_draining) {
        c->relay_draining = 1;
        AL_LOG_INFO("gateway.relay_draining", "conn=%llu relay=%s open_streams=%d",
                    (unsigned long long)c->id, c->relay_id, c->agent_streams);
        gw_conn_shutdown(c);
    }
}

void gw_ctl_request(struct gw_stream *s)
{
    if (s->kind == GW_S_OPEN)
        open_call(s);
    else if (s->kind == GW_S_ACK)
        ack_call(s);
}

void gw_ctl_finish(struct gw_conn *c)
{
    if (!c->ctl || c->ctl->out_eof)
        return;
    c->ctl->out_eof = 1;
    gw_ctl_stop(c);
    gw_stream_kick(c->ctl);
}

void gw_ctl_stream_closed(struct gw_conn *c)
{
    c->ctl = NULL;
    gw_ctl_stop(c);
    if (c->h2 && c->state != GW_CONN_CLOSING) {
        AL_LOG_INFO("gateway.control_closed",
                    "conn=%llu relay=%s reason=\"the control stream "
                    "ended\"",
                    (unsigned long long)c->id, c->relay_id);
        gw_conn_shutdown(c);
    }
}
