/*
 * In-process tests of the relay's gateway side (relay_tunnel.h) and the
 * TunnelStatus service (relay_status.h) on loopback, with a test gateway
 * written here: it dials the relay with al_h2conn as a TLS client and HTTP/2
 * server (ALPN airlock-tunnel/1, a gateway certificate from a throwaway CA)
 * and serves TunnelControl and /mcp/... streams by hand with nghttp2, so
 * every frame the relay sends is seen as a real gateway would see it.
 *
 * Covered: registration accepted/rejected by identity glob and the Ack
 * contents, an identity that may serve no tunnel, a first message that is
 * not a registration, heartbeat timeout, gateway drain, relay drain, request
 * headers and the grant as the gateway sees them, responses streamed back
 * with end-to-end flow control, the request body queue cap, REFUSED_STREAM
 * and GOAWAY replays (body included), RST after the head (no replay),
 * cancel, least-loaded choice with round robin on ties, no connection,
 * unknown tunnel, the status snapshot and its gRPC service.
 */
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "airlock/v1/tunnel.pb-c.h"
#include "al_arena.h"
#include "al_base64.h"
#include "al_err.h"
#include "al_grant.h"
#include "al_grpc.h"
#include "al_grpc_client.h"
#include "al_h2conn.h"
#include "al_log.h"
#include "al_metrics.h"
#include "al_pki.h"
#include "al_tls.h"
#include "relay_status.h"
#include "relay_tunnel.h"
#include "rlbuf.h"

#define RELAY_ID "spiffe://airlock/relay/relay-0"
#define MIB      (1024 * 1024)
#define MAX_GWS  64
#define HDRS_MAX 8192
#define WAIT_S   10.0

static struct ev_loop *loop;
static ev_timer tick;
static char pki[256];
static struct al_grant_signer *signer;
static struct al_grant_keyring *keyring;
static struct al_tls *relay_tls;

/* ------------------------------------------------------------------ */
/* loop helpers                                                         */
/* ------------------------------------------------------------------ */

static void tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

typedef int (*pred_fn)(void *arg);

/* Runs the loop until pred(arg) holds or WAIT_S passed; returns pred. */
static int run_until(pred_fn pred, void *arg)
{
    ev_tstamp end = ev_time() + WAIT_S;
    while (!pred(arg) && ev_time() < end)
        ev_run(loop, EVRUN_ONCE);
    return pred(arg);
}

static int flag_set(void *arg)
{
    return *(int *)arg != 0;
}

/* Lets every pending event run (a few loop turns without new input). */
static void settle(void)
{
    for (int i = 0; i < 20; i++)
        ev_run(loop, EVRUN_NOWAIT);
}

/* ------------------------------------------------------------------ */
/* the test gateway                                                     */
/* ------------------------------------------------------------------ */

enum gw_mode { GW_RESPOND, GW_ECHO, GW_REFUSE, GW_RST_AFTER_HEAD, GW_HOLD, GW_GOAWAY };
enum gws_kind { GWS_CONTROL = 1, GWS_ACK, GWS_MCP, GWS_OTHER };

struct gw;

struct gws { /* one stream the relay opened */
    struct gw *g;
    int kind;
    int32_t sid;
    char method[16], path[512];
    char hdrs[HDRS_MAX]; /* "name: value\n"... */
    size_t hlen;
    struct rl_buf body;
    int req_ended;
    int closed;
    uint32_t close_code;
    /* response */
    const uint8_t *out; /* NULL: generated pattern */
    size_t out_len, out_off;
    int responding;
    int rst_after_head;
};

struct gw {
    char name[32];
    struct al_tls *tls;
    struct al_h2conn *h2;
    nghttp2_session_callbacks *cbs;
    int ready, closed, close_err;
    int mode;
    size_t resp_len;
    /* control */
    int32_t ctl_sid;
    int open_seen;
    Airlock__V1__OpenTunnelControlRequest *open;
    struct rl_buf ctl_out;
    size_t ctl_off;
    int64_t seq;
    int ctl_eof;
    Airlock__V1__TunnelAck *acks[MAX_GWS];
    int nacks;
    int goaway_recv;
    struct gws *streams[256];
    int nstreams;
    int nmcp;
};

static struct gws *gws_find(struct gw *g, int32_t sid)
{
    for (int i = 0; i < g->nstreams; i++)
        if (g->streams[i]->sid == sid)
            return g->streams[i];
    return NULL;
}

static struct gws *gw_mcp(struct gw *g, int idx)
{
    int k = 0;
    for (int i = 0; i < g->nstreams; i++)
        if (g->streams[i]->kind == GWS_MCP && k++ == idx)
            return g->streams[i];
    return NULL;
}

static ssize_t ctl_read(nghttp2_session *ss, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                        nghttp2_data_source *src, void *ud)
{
    struct gw *g = ud;
    size_t n = g->ctl_out.len - g->ctl_off;
    (void)ss;
    (void)sid;
    (void)src;
    if (n == 0 && g->ctl_eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    if (n == 0)
        return NGHTTP2_ERR_DEFERRED;
    if (n > len)
        n = len;
    memcpy(buf, g->ctl_out.p + g->ctl_off, n);
    g->ctl_off += n;
    return (ssize_t)n;
}

static ssize_t mcp_read(nghttp2_session *ss, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                        nghttp2_data_source *src, void *ud)
{
    struct gws *st = src->ptr;
    size_t n = st->out_len - st->out_off;
    (void)ss;
    (void)sid;
    (void)ud;
    if (n > len)
        n = len;
    for (size_t i = 0; i < n; i++)
        buf[i] = st->out ? st->out[st->out_off + i] : (uint8_t)('a' + (st->out_off + i) % 26);
    st->out_off += n;
    if (st->out_off == st->out_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void add_nv(nghttp2_nv *nv, size_t *n, const char *name, const char *value)
{
    nv[*n] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                          NGHTTP2_NV_FLAG_NONE};
    (*n)++;
}

static void gw_flush(struct gw *g)
{
    if (g->h2)
        al_h2conn_flush(g->h2);
}

/* Answers an /mcp stream: 200, x-test-gw, body of out_len bytes. */
static void gw_respond(struct gw *g, struct gws *st, const uint8_t *body, size_t len)
{
    nghttp2_nv nv[4];
    size_t n = 0;
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = mcp_read};

    st->out = body;
    st->out_len = len;
    st->responding = 1;
    add_nv(nv, &n, ":status", "200");
    add_nv(nv, &n, "content-type", "application/json");
    add_nv(nv, &n, "x-test-gw", g->name);
    nghttp2_submit_response(al_h2conn_session(g->h2), st->sid, nv, n, &prd);
    gw_flush(g);
}

static void gw_answer_open(struct gw *g, struct gws *st)
{
    nghttp2_nv nv[2];
    size_t n = 0;
    nghttp2_data_provider prd = {.read_callback = ctl_read};

    g->open =
        airlock__v1__open_tunnel_control_request__unpack(NULL, st->body.len - 5, st->body.p + 5);
    g->open_seen = 1;
    g->ctl_sid = st->sid;
    add_nv(nv, &n, ":status", "200");
    add_nv(nv, &n, "content-type", "application/grpc");
    nghttp2_submit_response(al_h2conn_session(g->h2), st->sid, nv, n, &prd);
}

static void gw_answer_ack(struct gw *g, struct gws *st)
{
    nghttp2_nv nv[3];
    size_t n = 0;

    if (st->body.len >= 5 && g->nacks < MAX_GWS)
        g->acks[g->nacks++] =
            airlock__v1__tunnel_ack__unpack(NULL, st->body.len - 5, st->body.p + 5);
    /* Trailers-Only answer: valid gRPC, empty TunnelAckResponse */
    add_nv(nv, &n, ":status", "200");
    add_nv(nv, &n, "content-type", "application/grpc");
    add_nv(nv, &n, "grpc-status", "0");
    nghttp2_submit_response(al_h2conn_session(g->h2), st->sid, nv, n, NULL);
}

/* The request of st is complete. */
static void gw_request_done(struct gw *g, struct gws *st)
{
    st->req_ended = 1;
    if (st->kind == GWS_CONTROL)
        gw_answer_open(g, st);
    else if (st->kind == GWS_ACK)
        gw_answer_ack(g, st);
    else if (st->kind == GWS_MCP && g->mode == GW_RESPOND)
        gw_respond(g, st, NULL, g->resp_len);
    else if (st->kind == GWS_MCP && g->mode == GW_ECHO)
        gw_respond(g, st, st->body.p, st->body.len);
}

/* The request HEADERS of an /mcp stream arrived. */
static void gw_mcp_head(struct gw *g, struct gws *st)
{
    nghttp2_session *ss = al_h2conn_session(g->h2);

    g->nmcp++;
    if (g->mode == GW_REFUSE) {
        nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, st->sid, NGHTTP2_REFUSED_STREAM);
    } else if (g->mode == GW_GOAWAY) {
        nghttp2_submit_goaway(ss, NGHTTP2_FLAG_NONE, st->sid - 2, NGHTTP2_NO_ERROR, NULL, 0);
    } else if (g->mode == GW_RST_AFTER_HEAD) {
        /* the head, some body, then (once the head is out) RST_STREAM */
        gw_respond(g, st, NULL, 1 << 30);
        st->rst_after_head = 1;
    }
}

static int gw_begin_headers(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct gw *g = ud;
    struct gws *st;

    if (!g || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST ||
        g->nstreams == 256)
        return 0;
    st = calloc(1, sizeof(*st));
    st->g = g;
    st->sid = f->hd.stream_id;
    rl_buf_init(&st->body, 0);
    g->streams[g->nstreams++] = st;
    nghttp2_session_set_stream_user_data(ss, st->sid, st);
    return 0;
}

static int gw_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct gws *st = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    (void)flags;
    (void)ud;
    if (!st)
        return 0;
    if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
        snprintf(st->path, sizeof(st->path), "%.*s", (int)valuelen, value);
        if (strcmp(st->path, "/airlock.v1.TunnelControl/Open") == 0)
            st->kind = GWS_CONTROL;
        else if (strcmp(st->path, "/airlock.v1.TunnelControl/Ack") == 0)
            st->kind = GWS_ACK;
        else if (strncmp(st->path, "/mcp/", 5) == 0)
            st->kind = GWS_MCP;
        else
            st->kind = GWS_OTHER;
    } else if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
        snprintf(st->method, sizeof(st->method), "%.*s", (int)valuelen, value);
    }
    if (st->hlen + namelen + valuelen + 3 < sizeof(st->hdrs))
        st->hlen += (size_t)snprintf(st->hdrs + st->hlen, sizeof(st->hdrs) - st->hlen,
                                     "%.*s: %.*s\n", (int)namelen, name, (int)valuelen, value);
    return 0;
}

static int gw_data(nghttp2_session *ss, uint8_t flags, int32_t sid, const uint8_t *d, size_t n,
                   void *ud)
{
    struct gws *st = nghttp2_session_get_stream_user_data(ss, sid);
    (void)flags;
    (void)ud;
    if (st)
        rl_buf_append(&st->body, d, n);
    return 0;
}

static int gw_frame_recv(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct gw *g = ud;
    struct gws *st = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);

    if (!g)
        return 0;
    if (f->hd.type == NGHTTP2_GOAWAY)
        g->goaway_recv = 1;
    if (!st || (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA))
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS && st->kind == GWS_MCP)
        gw_mcp_head(g, st);
    if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && !st->req_ended)
        gw_request_done(g, st);
    return 0;
}

static int gw_stream_close(nghttp2_session *ss, int32_t sid, uint32_t code, void *ud)
{
    struct gws *st = nghttp2_session_get_stream_user_data(ss, sid);
    (void)ud;
    if (st) {
        st->closed = 1;
        st->close_code = code;
    }
    return 0;
}

static int gw_frame_send(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct gws *st = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    (void)ud;
    if (st && st->rst_after_head && f->hd.type == NGHTTP2_HEADERS) {
        st->rst_after_head = 0;
        nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, st->sid, NGHTTP2_INTERNAL_ERROR);
    }
    return 0;
}

static void gw_on_ready(struct al_h2conn *c, void *user)
{
    struct gw *g = user;
    (void)c;
    if (g)
        g->ready = 1;
}

static void gw_on_close(struct al_h2conn *c, int err, void *user)
{
    struct gw *g = user;
    (void)c;
    if (!g)
        return;
    g->closed = 1;
    g->close_err = err;
    g->h2 = NULL;
}

static struct al_tls *gw_tls(const char *name)
{
    char cert[300], key[300], ca[300];
    static const char *const alpn[] = {"airlock-tunnel/1", NULL};
    struct al_tls *t = NULL;

    snprintf(cert, sizeof(cert), "%s/gateway-%s.crt", pki, name);
    snprintf(key, sizeof(key), "%s/gateway-%s.key", pki, name);
    snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
    struct al_tls_opts to = {
        .cert_file = cert, .key_file = key, .ca_file = ca, .server = 0, .alpn = alpn};
    CU_ASSERT_FATAL(al_tls_new(&to, &t) == 0);
    return t;
}

static struct gw *gw_dial(const char *name, int port, int mode, uint32_t max_streams)
{
    struct gw *g = calloc(1, sizeof(*g));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};

    snprintf(g->name, sizeof(g->name), "%s", name);
    g->mode = mode;
    g->tls = gw_tls(name);
    rl_buf_init(&g->ctl_out, 0);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    nghttp2_session_callbacks_new(&g->cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(g->cbs, gw_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(g->cbs, gw_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g->cbs, gw_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(g->cbs, gw_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(g->cbs, gw_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(g->cbs, gw_frame_send);
    struct al_h2conn_opts co = {
        .tls_server = 0,
        .h2_server = 1,
        .require_peer_id = 1,
        .verify_host = "127.0.0.1",
        .alpn = "airlock-tunnel/1",
        .max_concurrent_streams = max_streams,
        .cbs = g->cbs,
        .session_user = g,
        .on_ready = gw_on_ready,
        .on_close = gw_on_close,
        .user = g,
    };
    CU_ASSERT_FATAL(
        al_h2conn_connect(loop, (struct sockaddr *)&sa, sizeof(sa), g->tls, &co, &g->h2) == 0);
    return g;
}

static void gw_free(struct gw *g)
{
    if (!g)
        return;
    if (g->h2) {
        al_h2conn_set_user(g->h2, NULL);
        nghttp2_session *ss = al_h2conn_session(g->h2);
        if (ss)
            nghttp2_session_set_user_data(ss, NULL);
        al_h2conn_close(g->h2, 0);
    }
    settle();
    for (int i = 0; i < g->nstreams; i++) {
        rl_buf_cleanup(&g->streams[i]->body);
        free(g->streams[i]);
    }
    for (int i = 0; i < g->nacks; i++)
        airlock__v1__tunnel_ack__free_unpacked(g->acks[i], NULL);
    if (g->open)
        airlock__v1__open_tunnel_control_request__free_unpacked(g->open, NULL);
    rl_buf_cleanup(&g->ctl_out);
    nghttp2_session_callbacks_del(g->cbs);
    al_tls_free(g->tls);
    free(g);
}

/* Queues one control message on the Open stream. */
static void gw_send(struct gw *g, Airlock__V1__TunnelControlMessage *m)
{
    size_t n = airlock__v1__tunnel_control_message__get_packed_size(m);
    uint8_t *p = malloc(n + 5);

    m->seq = m->seq ? m->seq : ++g->seq;
    n = airlock__v1__tunnel_control_message__get_packed_size(m);
    free(p);
    p = malloc(n + 5);
    al_grpc_frame_prefix(p, n);
    airlock__v1__tunnel_control_message__pack(m, p + 5);
    rl_buf_append(&g->ctl_out, p, n + 5);
    free(p);
    if (g->h2 && g->ctl_sid)
        nghttp2_session_resume_data(al_h2conn_session(g->h2), g->ctl_sid);
    gw_flush(g);
}

struct offer_spec {
    const char *tunnel;
    const char *servers[4];
};

static void gw_register(struct gw *g, const struct offer_spec *offers, size_t n, int64_t hb_ms)
{
    Airlock__V1__TunnelControlMessage m = AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__INIT;
    Airlock__V1__TunnelRegistration r = AIRLOCK__V1__TUNNEL_REGISTRATION__INIT;
    Airlock__V1__TunnelOffer of[8], *ofp[8];
    char gid[64];

    for (size_t i = 0; i < n; i++) {
        airlock__v1__tunnel_offer__init(&of[i]);
        of[i].tunnel = (char *)offers[i].tunnel;
        while (of[i].n_servers < 4 && offers[i].servers[of[i].n_servers])
            of[i].n_servers++;
        of[i].servers = (char **)offers[i].servers;
        ofp[i] = &of[i];
    }
    snprintf(gid, sizeof(gid), "%s-id", g->name);
    r.gateway_id = gid;
    r.gateway_version = "0.1-test";
    r.instance_id = "0123456789abcdef0123456789abcdef";
    r.n_tunnels = n;
    r.tunnels = ofp;
    r.max_concurrent_streams = 100;
    r.heartbeat_interval_ms = hb_ms;
    m.kind_case = AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__KIND_REGISTRATION;
    m.registration = &r;
    gw_send(g, &m);
}

static void gw_heartbeat(struct gw *g, int open_streams)
{
    Airlock__V1__TunnelControlMessage m = AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__INIT;
    Airlock__V1__TunnelHeartbeat h = AIRLOCK__V1__TUNNEL_HEARTBEAT__INIT;

    h.open_streams = open_streams;
    m.kind_case = AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__KIND_HEARTBEAT;
    m.heartbeat = &h;
    gw_send(g, &m);
}

static void gw_drain(struct gw *g)
{
    Airlock__V1__TunnelControlMessage m = AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__INIT;
    Airlock__V1__TunnelDrain d = AIRLOCK__V1__TUNNEL_DRAIN__INIT;

    d.reason = "shutdown";
    d.grace_ms = 30000;
    m.kind_case = AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__KIND_DRAIN;
    m.drain = &d;
    gw_send(g, &m);
}

/* Ends the control stream (END_STREAM on its DATA). */
static void gw_end_control(struct gw *g)
{
    g->ctl_eof = 1;
    if (g->h2 && g->ctl_sid)
        nghttp2_session_resume_data(al_h2conn_session(g->h2), g->ctl_sid);
    gw_flush(g);
}

static int gw_open_seen(void *arg)
{
    struct gw *g = arg;
    return g->open_seen || g->closed;
}

static int gw_closed(void *arg)
{
    return ((struct gw *)arg)->closed;
}

struct want_acks {
    struct gw *g;
    int n;
};

static int gw_has_acks(void *arg)
{
    struct want_acks *w = arg;
    return w->g->nacks >= w->n || w->g->closed;
}

static int wait_acks(struct gw *g, int n)
{
    struct want_acks w = {g, n};
    run_until(gw_has_acks, &w);
    return g->nacks >= n;
}

static int gw_has_mcp0(void *arg)
{
    return gw_mcp((struct gw *)arg, 0) != NULL;
}

static int gw_any_mcp(void *arg)
{
    return ((struct gw *)arg)->nmcp > 0;
}

static int gw_got_goaway(void *arg)
{
    return ((struct gw *)arg)->goaway_recv;
}

static int gw_mcp0_closed(void *arg)
{
    struct gws *st = gw_mcp((struct gw *)arg, 0);
    return st && st->closed;
}

static int three_each(void *arg)
{
    struct gw **pair = arg;
    return pair[0]->nmcp == 3 && pair[1]->nmcp == 3;
}

/* ------------------------------------------------------------------ */
/* relay fixture                                                        */
/* ------------------------------------------------------------------ */

struct relay {
    struct rl_tunnels *t;
    struct al_metrics *m;
    int port;
};

static const char *const any_gateway[] = {"spiffe://airlock/gateway/*"};
static const char *const other_gateways[] = {"spiffe://airlock/gateway/other-*"};
static const char *const nobody[] = {"spiffe://airlock/gateway/nobody"};

static void relay_start(struct relay *r, const struct rl_tunnel_cfg *tc, size_t n, double hb)
{
    memset(r, 0, sizeof(*r));
    CU_ASSERT_FATAL(al_metrics_new(&r->m) == 0);
    struct rl_tunnels_opts o = {
        .listen = "127.0.0.1:0",
        .tls = relay_tls,
        .relay_id = "relay-0",
        .relay_version = "9.9-test",
        .heartbeat_interval_s = hb,
        .tunnels = tc,
        .ntunnels = n,
        .signer = signer,
        .grant_ttl_s = 60,
        .metrics = r->m,
    };
    CU_ASSERT_FATAL(rl_tunnels_new(loop, &o, &r->t) == 0);
    r->port = rl_tunnels_port(r->t);
    CU_ASSERT(r->port > 0);
}

static void relay_stop(struct relay *r)
{
    rl_tunnels_free(r->t);
    settle();
    al_metrics_free(r->m);
}

static const struct rl_tunnel_cfg two_tunnels[] = {
    {"corp", any_gateway, 1},
    {"other", other_gateways, 1},
};

static double metric(struct relay *r, const char *name, const char *labels)
{
    return al_metric_value(al_metrics_counter(r->m, name, "", labels));
}

static double gauge(struct relay *r, const char *name, const char *labels)
{
    return al_metric_value(al_metrics_gauge(r->m, name, "", labels));
}

/* Connection id of gw as the relay's status shows it (0 when absent). */
static uint64_t relay_conn_of(struct relay *r, const char *tunnel, const char *gw_name)
{
    Airlock__V1__GetTunnelStatusResponse out;
    struct al_arena a;
    char id[128];
    uint64_t found = 0;

    snprintf(id, sizeof(id), "spiffe://airlock/gateway/%s", gw_name);
    al_arena_init(&a, 0);
    if (rl_tunnels_status(r->t, tunnel, &a, &out) == 0 && out.n_tunnels == 1)
        for (size_t i = 0; i < out.tunnels[0]->n_connections; i++)
            if (strcmp(out.tunnels[0]->connections[i]->gateway_identity, id) == 0)
                found = strtoull(out.tunnels[0]->connections[i]->connection_id, NULL, 10);
    al_arena_cleanup(&a);
    return found;
}

/* Registered gateway connections of the tunnel that streams may use. */
static int usable_of(struct relay *r, const char *tunnel)
{
    return (int)gauge(r, "airlock_relay_gateway_connections", tunnel);
}

struct want_gauge {
    struct relay *r;
    const char *labels;
    int n;
};

static int gauge_reached(void *arg)
{
    struct want_gauge *w = arg;
    return usable_of(w->r, w->labels) == w->n;
}

static int wait_usable(struct relay *r, const char *tunnel_label, int n)
{
    struct want_gauge w = {r, tunnel_label, n};
    return run_until(gauge_reached, &w);
}

#define CORP "tunnel=\"corp\""

static const struct offer_spec corp_crm[] = {{"corp", {"crm", "wiki", NULL}}};

/* A gateway registered for corp/{crm,wiki}, usable by the relay. */
static struct gw *gw_up(struct relay *r, const char *name, int mode, int expect_usable)
{
    struct gw *g = gw_dial(name, r->port, mode, 1000);
    CU_ASSERT_FATAL(run_until(gw_open_seen, g) && g->open_seen);
    gw_register(g, corp_crm, 1, 10000);
    CU_ASSERT_FATAL(wait_acks(g, 1));
    CU_ASSERT(wait_usable(r, CORP, expect_usable));
    return g;
}

/* ------------------------------------------------------------------ */
/* caller side (what the agent side of the relay does)                  */
/* ------------------------------------------------------------------ */

struct rec {
    struct rl_tstream *s;
    int head, status, end, error, err, head_seen_at_error, writable;
    char hdrs[1024];
    struct rl_buf data;
    int auto_consume;
    uint64_t conn_at_head;
};

static void rec_init(struct rec *c, int auto_consume)
{
    memset(c, 0, sizeof(*c));
    rl_buf_init(&c->data, 0);
    c->auto_consume = auto_consume;
}

static void on_head(struct rl_tstream *s, int status, const nghttp2_nv *nv, size_t n, void *user)
{
    struct rec *c = user;
    size_t len = 0;
    c->head = 1;
    c->status = status;
    c->conn_at_head = rl_tstream_conn(s);
    for (size_t i = 0; i < n && len + 4 + nv[i].namelen + nv[i].valuelen < sizeof(c->hdrs); i++)
        len += (size_t)snprintf(c->hdrs + len, sizeof(c->hdrs) - len, "%.*s: %.*s\n",
                                (int)nv[i].namelen, nv[i].name, (int)nv[i].valuelen, nv[i].value);
}

static void on_data(struct rl_tstream *s, const uint8_t *d, size_t n, void *user)
{
    struct rec *c = user;
    rl_buf_append(&c->data, d, n);
    if (c->auto_consume)
        rl_tstream_consume(s, n);
}

static void on_end(struct rl_tstream *s, void *user)
{
    struct rec *c = user;
    (void)s;
    c->end = 1;
    c->s = NULL;
}

static void on_error(struct rl_tstream *s, int err, int head_seen, void *user)
{
    struct rec *c = user;
    (void)s;
    c->error = 1;
    c->err = err;
    c->head_seen_at_error = head_seen;
    c->s = NULL;
}

static void on_writable(struct rl_tstream *s, void *user)
{
    struct rec *c = user;
    (void)s;
    c->writable++;
}

static const struct rl_tstream_cbs cbs = {on_head, on_data, on_end, on_error, on_writable};

static int rec_done(void *arg)
{
    struct rec *c = arg;
    return c->end || c->error;
}

static const nghttp2_nv agent_hdrs[] = {
    {(uint8_t *)"content-type", (uint8_t *)"application/json", 12, 16, 0},
    {(uint8_t *)"accept", (uint8_t *)"application/json, text/event-stream", 6, 35, 0},
    {(uint8_t *)"mcp-session-id", (uint8_t *)"sess-1", 14, 6, 0},
    {(uint8_t *)"airlock-grant", (uint8_t *)"forged", 13, 6, 0},
    {(uint8_t *)"connection", (uint8_t *)"close", 10, 5, 0},
};

static int open_req(struct relay *r, const char *tunnel, const char *server, const char *rid,
                    int end_stream, uint64_t pin, struct rec *c)
{
    char path[256];
    snprintf(path, sizeof(path), "/mcp/%s/%s/sub?x=1", tunnel, server);
    struct rl_treq q = {
        .tunnel = tunnel,
        .server = server,
        .method = end_stream ? "GET" : "POST",
        .path = path,
        .headers = agent_hdrs,
        .nheaders = sizeof(agent_hdrs) / sizeof(agent_hdrs[0]),
        .principal = "dev",
        .request_id = rid,
        .end_stream = end_stream,
        .pin_conn = pin,
    };
    return rl_tstream_open(r->t, &q, &cbs, c, &c->s);
}

/* Value of header name in a "name: value\n" block, copied into out. */
static int hdr_value(const char *block, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    int count = 0;
    for (const char *p = block; *p;) {
        const char *eol = strchr(p, '\n');
        if (!eol)
            break;
        if ((size_t)(eol - p) > nl + 2 && strncmp(p, name, nl) == 0 && p[nl] == ':') {
            snprintf(out, n, "%.*s", (int)(eol - p - nl - 2), p + nl + 2);
            count++;
        }
        p = eol + 1;
    }
    return count;
}

/* Verifies the airlock-grant of a request seen by gateway gw_name. */
static void check_grant(const struct gws *st, const char *gw_name, const char *rid,
                        const char *scope)
{
    char b64[4096], holder[128], subject[96];
    uint8_t raw[AL_GRANT_MAX_SIZE];
    size_t rawlen = 0;
    struct al_grant_expect want;
    Airlock__V1__Grant *g = NULL;
    char why[128];

    CU_ASSERT_EQUAL_FATAL(hdr_value(st->hdrs, "airlock-grant", b64, sizeof(b64)), 1);
    CU_ASSERT_NOT_EQUAL(strcmp(b64, "forged"), 0);
    CU_ASSERT_EQUAL_FATAL(al_base64_decode(b64, strlen(b64), raw, sizeof(raw), 0, &rawlen), 0);
    snprintf(holder, sizeof(holder), "spiffe://airlock/gateway/%s", gw_name);
    al_grant_expect_init(&want, "spiffe://airlock/credstore/credstore-0", holder);
    CU_ASSERT_EQUAL_FATAL(al_grant_verify(keyring, raw, rawlen, &want, (int64_t)(ev_time() * 1000),
                                          &g, why, sizeof(why)),
                          0);
    snprintf(subject, sizeof(subject), "request/%s", rid);
    CU_ASSERT_STRING_EQUAL(g->issuer, RELAY_ID);
    CU_ASSERT_STRING_EQUAL(g->audience, "spiffe://airlock/credstore");
    CU_ASSERT_STRING_EQUAL(g->holder, holder);
    CU_ASSERT_STRING_EQUAL(g->principal, "dev");
    CU_ASSERT_STRING_EQUAL(g->subject, subject);
    CU_ASSERT_STRING_EQUAL(g->scope, scope);
    CU_ASSERT_EQUAL(g->n_credentials, 1);
    CU_ASSERT_STRING_EQUAL(g->credentials[0], "*");
    CU_ASSERT_EQUAL(g->n_destinations, 1);
    CU_ASSERT_STRING_EQUAL(g->destinations[0], "*");
    CU_ASSERT(g->expires_ms - g->not_before_ms == 65000);
    al_grant_free(g);
}

/* ------------------------------------------------------------------ */
/* tests: control stream                                                */
/* ------------------------------------------------------------------ */

static void test_register_accepted(void)
{
    struct relay r;
    static const struct offer_spec offers[] = {
        {"corp", {"crm", "wiki", NULL}}, {"other", {"x", NULL}}, {"nope", {"y", NULL}}};

    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g = gw_dial("gw1", r.port, GW_RESPOND, 1000);
    CU_ASSERT_FATAL(run_until(gw_open_seen, g) && g->open_seen);
    /* the Open request */
    CU_ASSERT_PTR_NOT_NULL_FATAL(g->open);
    CU_ASSERT_STRING_EQUAL(g->open->relay_id, "relay-0");
    CU_ASSERT_STRING_EQUAL(g->open->relay_version, "9.9-test");
    CU_ASSERT(strtoull(g->open->connection_id, NULL, 10) > 0);
    CU_ASSERT_EQUAL(g->open->heartbeat_interval_ms, 10000);
    struct gws *ctl = gws_find(g, g->ctl_sid);
    char v[128];
    CU_ASSERT(hdr_value(ctl->hdrs, "content-type", v, sizeof(v)) == 1 &&
              strcmp(v, "application/grpc") == 0);
    CU_ASSERT(hdr_value(ctl->hdrs, "te", v, sizeof(v)) == 1 && strcmp(v, "trailers") == 0);
    CU_ASSERT_STRING_EQUAL(ctl->method, "POST");

    gw_register(g, offers, 3, 10000);
    CU_ASSERT_FATAL(wait_acks(g, 1));
    Airlock__V1__TunnelAck *a = g->acks[0];
    CU_ASSERT_EQUAL(a->seq, 1);
    CU_ASSERT_EQUAL_FATAL(a->n_accepted_tunnels, 1);
    CU_ASSERT_STRING_EQUAL(a->accepted_tunnels[0], "corp");
    CU_ASSERT_EQUAL_FATAL(a->n_rejected, 2);
    CU_ASSERT_STRING_EQUAL(a->rejected[0]->tunnel, "other");
    CU_ASSERT_STRING_EQUAL(a->rejected[0]->reason, "identity not allowed for this tunnel");
    CU_ASSERT_STRING_EQUAL(a->rejected[1]->tunnel, "nope");
    CU_ASSERT_STRING_EQUAL(a->rejected[1]->reason, "unknown tunnel");
    CU_ASSERT_FALSE(a->relay_draining);
    CU_ASSERT(wait_usable(&r, CORP, 1));

    /* heartbeats are acknowledged one by one */
    gw_heartbeat(g, 0);
    CU_ASSERT_FATAL(wait_acks(g, 2));
    CU_ASSERT_EQUAL(g->acks[1]->seq, 2);
    CU_ASSERT_EQUAL(g->acks[1]->n_accepted_tunnels, 0);
    CU_ASSERT_EQUAL(
        metric(&r, "airlock_relay_tunnel_control_messages_total", "kind=\"registration\""), 1);
    CU_ASSERT_EQUAL(metric(&r, "airlock_relay_tunnel_control_messages_total", "kind=\"heartbeat\""),
                    1);
    CU_ASSERT_EQUAL(metric(&r, "airlock_relay_tunnel_registrations_total", "result=\"accepted\""),
                    1);

    /* the snapshot */
    Airlock__V1__GetTunnelStatusResponse st;
    struct al_arena ar;
    al_arena_init(&ar, 0);
    CU_ASSERT_EQUAL_FATAL(rl_tunnels_status(r.t, NULL, &ar, &st), 0);
    CU_ASSERT_STRING_EQUAL(st.relay_id, "relay-0");
    CU_ASSERT_STRING_EQUAL(st.relay_version, "9.9-test");
    CU_ASSERT(st.time_ms > 0);
    CU_ASSERT_EQUAL_FATAL(st.n_tunnels, 2);
    CU_ASSERT_STRING_EQUAL(st.tunnels[0]->tunnel, "corp");
    CU_ASSERT_STRING_EQUAL(st.tunnels[1]->tunnel, "other");
    CU_ASSERT_EQUAL(st.tunnels[1]->n_connections, 0);
    CU_ASSERT_EQUAL_FATAL(st.tunnels[0]->n_connections, 1);
    Airlock__V1__GatewayConnection *gc = st.tunnels[0]->connections[0];
    CU_ASSERT_STRING_EQUAL(gc->connection_id, g->open->connection_id);
    CU_ASSERT_STRING_EQUAL(gc->gateway_identity, "spiffe://airlock/gateway/gw1");
    CU_ASSERT_STRING_EQUAL(gc->gateway_id, "gw1-id");
    CU_ASSERT_STRING_EQUAL(gc->gateway_version, "0.1-test");
    CU_ASSERT_STRING_EQUAL(gc->instance_id, "0123456789abcdef0123456789abcdef");
    CU_ASSERT(strncmp(gc->remote_address, "127.0.0.1:", 10) == 0);
    CU_ASSERT(gc->connected_ms > 0 && gc->last_heartbeat_ms >= gc->connected_ms);
    CU_ASSERT_EQUAL(gc->max_concurrent_streams, 100);
    CU_ASSERT_FALSE(gc->draining);
    CU_ASSERT_EQUAL_FATAL(gc->n_servers, 2);
    CU_ASSERT_STRING_EQUAL(gc->servers[0], "crm");
    CU_ASSERT_STRING_EQUAL(gc->servers[1], "wiki");
    al_arena_cleanup(&ar);
    al_arena_init(&ar, 0);
    CU_ASSERT_EQUAL(rl_tunnels_status(r.t, "other", &ar, &st), 0);
    CU_ASSERT_EQUAL(st.n_tunnels, 1);
    CU_ASSERT_EQUAL(rl_tunnels_status(r.t, "zzz", &ar, &st), AL_ERR_NOTFOUND);
    al_arena_cleanup(&ar);
    CU_ASSERT(rl_tunnels_known(r.t, "corp"));
    CU_ASSERT_FALSE(rl_tunnels_known(r.t, "zzz"));
    CU_ASSERT_FALSE(g->closed);

    gw_free(g);
    relay_stop(&r);
}

static void test_register_rejected(void)
{
    struct relay r;
    static const struct offer_spec offers[] = {{"other", {"x", NULL}}};

    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g = gw_dial("gw1", r.port, GW_RESPOND, 1000);
    CU_ASSERT_FATAL(run_until(gw_open_seen, g) && g->open_seen);
    gw_register(g, offers, 1, 10000);
    CU_ASSERT_FATAL(wait_acks(g, 1));
    CU_ASSERT_EQUAL(g->acks[0]->n_accepted_tunnels, 0);
    CU_ASSERT_EQUAL_FATAL(g->acks[0]->n_rejected, 1);
    CU_ASSERT_STRING_EQUAL(g->acks[0]->rejected[0]->reason, "identity not allowed for this tunnel");
    /* no tunnel accepted: the relay closes the connection after the Ack */
    CU_ASSERT(run_until(gw_closed, g));
    CU_ASSERT(g->goaway_recv);
    CU_ASSERT_EQUAL(metric(&r, "airlock_relay_tunnel_registrations_total", "result=\"rejected\""),
                    1);
    CU_ASSERT_EQUAL(usable_of(&r, CORP), 0);
    gw_free(g);
    relay_stop(&r);
}

static void test_identity_refused(void)
{
    struct relay r;
    static const struct rl_tunnel_cfg only_nobody[] = {{"corp", nobody, 1}};

    relay_start(&r, only_nobody, 1, 10);
    struct gw *g = gw_dial("gw1", r.port, GW_RESPOND, 1000);
    CU_ASSERT(run_until(gw_closed, g));
    CU_ASSERT_FALSE(g->open_seen);
    CU_ASSERT_EQUAL(metric(&r, "airlock_relay_tunnel_identity_refused_total", NULL), 1);
    gw_free(g);
    relay_stop(&r);
}

static int conns_open_at_least(void *arg)
{
    struct want_gauge *w = arg;
    return gauge(w->r, "airlock_relay_tunnel_connections_open", NULL) >= w->n;
}

static int conns_open_at_most(void *arg)
{
    struct want_gauge *w = arg;
    return gauge(w->r, "airlock_relay_tunnel_connections_open", NULL) <= w->n;
}

/* Anonymous peers that never finish a handshake hold at most 256 slots; the
 * rest wait in the backlog, and a gateway gets in once they are gone. */
static void test_handshake_limit(void)
{
    enum { STALLED = 300, LIMIT = 256 };
    static int fds[STALLED];
    struct relay r;
    struct sockaddr_in sa = {.sin_family = AF_INET};

    relay_start(&r, two_tunnels, 2, 10);
    sa.sin_port = htons((uint16_t)r.port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < STALLED; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CU_ASSERT_FATAL(fds[i] >= 0);
        CU_ASSERT_FATAL(connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)) == 0);
    }
    struct want_gauge w = {&r, NULL, LIMIT};
    CU_ASSERT(run_until(conns_open_at_least, &w));
    settle();
    CU_ASSERT_EQUAL(gauge(&r, "airlock_relay_tunnel_connections_open", NULL), LIMIT);
    for (int i = 0; i < STALLED; i++)
        close(fds[i]);
    w.n = 0;
    CU_ASSERT(run_until(conns_open_at_most, &w));
    struct gw *g = gw_up(&r, "gw1", GW_RESPOND, 1);
    CU_ASSERT_PTR_NOT_NULL(g);
    if (g)
        gw_free(g);
    relay_stop(&r);
}

static void test_first_not_registration(void)
{
    struct relay r;

    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g = gw_dial("gw1", r.port, GW_RESPOND, 1000);
    CU_ASSERT_FATAL(run_until(gw_open_seen, g) && g->open_seen);
    gw_heartbeat(g, 0);
    CU_ASSERT(run_until(gw_closed, g));
    CU_ASSERT_EQUAL(g->nacks, 0);
    gw_free(g);
    relay_stop(&r);
}

static void test_control_stream_end(void)
{
    struct relay r;
    struct rec held;

    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g = gw_up(&r, "gw1", GW_HOLD, 1);
    rec_init(&held, 1);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "held", 1, 0, &held), 0);
    CU_ASSERT_FATAL(run_until(gw_has_mcp0, g));
    /* the control stream ends: GOAWAY, no new stream, the open one finishes */
    gw_end_control(g);
    CU_ASSERT(run_until(gw_got_goaway, g));
    struct rec late;
    rec_init(&late, 1);
    CU_ASSERT_EQUAL(open_req(&r, "corp", "crm", "late", 1, 0, &late), AL_ERR_CLOSED);
    CU_ASSERT_FALSE(g->closed);
    gw_respond(g, gw_mcp(g, 0), (const uint8_t *)"ok", 2);
    CU_ASSERT(run_until(rec_done, &held));
    CU_ASSERT(held.end && held.data.len == 2);
    CU_ASSERT(run_until(gw_closed, g)); /* and then the connection closes */
    rl_buf_cleanup(&held.data);
    rl_buf_cleanup(&late.data);
    gw_free(g);
    relay_stop(&r);
}

static void test_control_message_too_big(void)
{
    struct relay r;
    Airlock__V1__TunnelControlMessage m = AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__INIT;
    Airlock__V1__TunnelRegistration reg = AIRLOCK__V1__TUNNEL_REGISTRATION__INIT;
    char *big = malloc(70000);

    memset(big, 'x', 69999);
    big[69999] = '\0';
    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g = gw_dial("gw1", r.port, GW_RESPOND, 1000);
    CU_ASSERT_FATAL(run_until(gw_open_seen, g) && g->open_seen);
    reg.gateway_id = big;
    m.kind_case = AIRLOCK__V1__TUNNEL_CONTROL_MESSAGE__KIND_REGISTRATION;
    m.registration = &reg;
    gw_send(g, &m);
    CU_ASSERT(run_until(gw_closed, g));
    CU_ASSERT_EQUAL(g->nacks, 0);
    free(big);
    gw_free(g);
    relay_stop(&r);
}

static void test_heartbeat_timeout(void)
{
    struct relay r;
    struct rec c;

    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g = gw_dial("gw1", r.port, GW_RESPOND, 1000);
    CU_ASSERT_FATAL(run_until(gw_open_seen, g) && g->open_seen);
    /* the gateway says it beats every 100 ms, then never does */
    gw_register(g, corp_crm, 1, 100);
    CU_ASSERT_FATAL(wait_acks(g, 1));
    CU_ASSERT(run_until(gw_closed, g));
    CU_ASSERT(g->goaway_recv);
    CU_ASSERT_EQUAL(metric(&r, "airlock_relay_tunnel_heartbeat_timeouts_total", NULL), 1);
    settle();
    rec_init(&c, 1);
    CU_ASSERT_EQUAL(open_req(&r, "corp", "crm", "r-1", 1, 0, &c), AL_ERR_CLOSED);
    CU_ASSERT_EQUAL(usable_of(&r, CORP), 0);
    rl_buf_cleanup(&c.data);
    gw_free(g);
    relay_stop(&r);
}

static void test_gateway_drain(void)
{
    struct relay r;
    struct rec held, late;

    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g = gw_up(&r, "gw1", GW_HOLD, 1);
    rec_init(&held, 1);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "held", 1, 0, &held), 0);
    CU_ASSERT_FATAL(run_until(gw_has_mcp0, g));

    gw_drain(g);
    CU_ASSERT_FATAL(wait_acks(g, 2));
    rec_init(&late, 1);
    CU_ASSERT_EQUAL(open_req(&r, "corp", "crm", "late", 1, 0, &late), AL_ERR_CLOSED);
    Airlock__V1__GetTunnelStatusResponse st;
    struct al_arena ar;
    al_arena_init(&ar, 0);
    CU_ASSERT_EQUAL_FATAL(rl_tunnels_status(r.t, "corp", &ar, &st), 0);
    CU_ASSERT_EQUAL_FATAL(st.tunnels[0]->n_connections, 1);
    CU_ASSERT(st.tunnels[0]->connections[0]->draining);
    CU_ASSERT_EQUAL(st.tunnels[0]->connections[0]->open_streams, 1);
    CU_ASSERT_EQUAL(st.tunnels[0]->unroutable_total, 1);
    al_arena_cleanup(&ar);
    CU_ASSERT_EQUAL(metric(&r, "airlock_relay_tunnel_control_messages_total", "kind=\"drain\""), 1);

    /* the stream that was open finishes normally */
    gw_respond(g, gw_mcp(g, 0), (const uint8_t *)"done", 4);
    CU_ASSERT(run_until(rec_done, &held));
    CU_ASSERT(held.end && held.status == 200 && held.data.len == 4);
    rl_buf_cleanup(&held.data);
    rl_buf_cleanup(&late.data);
    gw_free(g);
    relay_stop(&r);
}

static int drained;
static void drain_done(void *user)
{
    (void)user;
    drained++;
}

static void test_relay_drain(void)
{
    struct relay r;
    struct rec held, late;

    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g = gw_up(&r, "gw1", GW_HOLD, 1);
    gw_heartbeat(g, 0);
    CU_ASSERT_FATAL(wait_acks(g, 2));
    rec_init(&held, 1);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "held", 1, 0, &held), 0);
    CU_ASSERT_FATAL(run_until(gw_has_mcp0, g));

    drained = 0;
    rl_tunnels_drain(r.t, drain_done, NULL);
    rec_init(&late, 1);
    CU_ASSERT_EQUAL(open_req(&r, "corp", "crm", "late", 1, 0, &late), AL_ERR_CLOSED);
    /* the last message is acknowledged again, now with relay_draining, then GOAWAY */
    CU_ASSERT_FATAL(wait_acks(g, 3));
    CU_ASSERT_EQUAL(g->acks[2]->seq, 2);
    CU_ASSERT(g->acks[2]->relay_draining);
    CU_ASSERT(run_until(gw_got_goaway, g));
    settle();
    CU_ASSERT_EQUAL(drained, 0); /* a stream is still open */
    gw_respond(g, gw_mcp(g, 0), (const uint8_t *)"bye", 3);
    CU_ASSERT(run_until(rec_done, &held));
    CU_ASSERT(held.end && held.data.len == 3);
    CU_ASSERT(run_until(flag_set, &drained));
    CU_ASSERT_EQUAL(drained, 1);
    rl_buf_cleanup(&held.data);
    rl_buf_cleanup(&late.data);
    gw_free(g);
    relay_stop(&r);
}

/* ------------------------------------------------------------------ */
/* tests: streams                                                       */
/* ------------------------------------------------------------------ */

static void test_stream_roundtrip(void)
{
    struct relay r;
    struct rec c, get;
    static const char body[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}";
    char v[256];

    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g = gw_up(&r, "gw1", GW_RESPOND, 1);
    g->resp_len = 5000;
    uint64_t conn = relay_conn_of(&r, "corp", "gw1");
    CU_ASSERT(conn > 0);

    rec_init(&c, 1);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "req-1", 0, 0, &c), 0);
    CU_ASSERT_EQUAL(rl_tstream_conn(c.s), conn);
    CU_ASSERT_EQUAL(rl_tstream_write(c.s, (const uint8_t *)body, sizeof(body) - 1), 0);
    CU_ASSERT_EQUAL(rl_tstream_end(c.s), 0);
    CU_ASSERT(run_until(rec_done, &c));
    CU_ASSERT_FALSE(c.error);
    CU_ASSERT(c.end);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT(strstr(c.hdrs, "x-test-gw: gw1\n") != NULL);
    CU_ASSERT(strstr(c.hdrs, "content-type: application/json\n") != NULL);
    CU_ASSERT_EQUAL_FATAL(c.data.len, 5000);
    CU_ASSERT(c.data.p[0] == 'a' && c.data.p[4999] == (uint8_t)('a' + 4999 % 26));
    CU_ASSERT_EQUAL(c.conn_at_head, conn);

    /* what the gateway saw */
    struct gws *st = gw_mcp(g, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    CU_ASSERT_STRING_EQUAL(st->method, "POST");
    CU_ASSERT_STRING_EQUAL(st->path, "/mcp/corp/crm/sub?x=1");
    CU_ASSERT(hdr_value(st->hdrs, ":scheme", v, sizeof(v)) == 1 && strcmp(v, "https") == 0);
    CU_ASSERT(hdr_value(st->hdrs, ":authority", v, sizeof(v)) == 1 && strcmp(v, "corp") == 0);
    CU_ASSERT(hdr_value(st->hdrs, "airlock-principal", v, sizeof(v)) == 1 && strcmp(v, "dev") == 0);
    CU_ASSERT(hdr_value(st->hdrs, "airlock-request-id", v, sizeof(v)) == 1 &&
              strcmp(v, "req-1") == 0);
    CU_ASSERT(hdr_value(st->hdrs, "content-type", v, sizeof(v)) == 1 &&
              strcmp(v, "application/json") == 0);
    CU_ASSERT(hdr_value(st->hdrs, "mcp-session-id", v, sizeof(v)) == 1 && strcmp(v, "sess-1") == 0);
    CU_ASSERT_EQUAL(hdr_value(st->hdrs, "connection", v, sizeof(v)), 0);
    check_grant(st, "gw1", "req-1", "corp/crm");
    CU_ASSERT_EQUAL_FATAL(st->body.len, sizeof(body) - 1);
    CU_ASSERT(memcmp(st->body.p, body, sizeof(body) - 1) == 0);

    /* a request without a body: HEADERS with END_STREAM */
    rec_init(&get, 1);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "wiki", "req-2", 1, 0, &get), 0);
    CU_ASSERT_EQUAL(rl_tstream_write(get.s, (const uint8_t *)"x", 1), AL_ERR_STATE);
    CU_ASSERT(run_until(rec_done, &get));
    CU_ASSERT(get.end && get.data.len == 5000);
    st = gw_mcp(g, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    CU_ASSERT_STRING_EQUAL(st->method, "GET");
    CU_ASSERT_EQUAL(st->body.len, 0);
    check_grant(st, "gw1", "req-2", "corp/wiki");

    /* routing errors */
    struct rec bad;
    rec_init(&bad, 1);
    CU_ASSERT_EQUAL(open_req(&r, "zzz", "crm", "r-3", 1, 0, &bad), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(open_req(&r, "corp", "nosuch", "r-4", 1, 0, &bad), AL_ERR_CLOSED);
    CU_ASSERT_EQUAL(open_req(&r, "corp", "crm", "bad id!", 1, 0, &bad), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(metric(&r, "airlock_relay_tunnel_streams_opened_total", CORP), 2);
    CU_ASSERT_EQUAL(metric(&r, "airlock_relay_tunnel_unroutable_total", CORP), 1);
    CU_ASSERT_EQUAL(gauge(&r, "airlock_relay_tunnel_open_streams", CORP), 0);

    rl_buf_cleanup(&c.data);
    rl_buf_cleanup(&get.data);
    rl_buf_cleanup(&bad.data);
    gw_free(g);
    relay_stop(&r);
}

struct fc_state {
    struct rec *c;
    struct gw *g;
};

/* The gateway cannot send more (stream window 0) and the relay passed on
 * everything it sent. */
static int fc_stalled(void *arg)
{
    struct fc_state *f = arg;
    struct gws *st = gw_mcp(f->g, 0);
    if (!st || !st->responding || !f->g->h2)
        return 0;
    return nghttp2_session_get_stream_remote_window_size(al_h2conn_session(f->g->h2), st->sid) ==
               0 &&
           f->c->data.len == st->out_off;
}

static void test_flow_control(void)
{
    struct relay r;
    struct rec c;

    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g = gw_up(&r, "gw1", GW_RESPOND, 1);
    g->resp_len = 4 * MIB;
    rec_init(&c, 0); /* the agent reads nothing yet */
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "big", 1, 0, &c), 0);
    struct fc_state f = {&c, g};
    CU_ASSERT_FATAL(run_until(fc_stalled, &f));
    settle();
    /* exactly the stream window, no byte more, stays in flight */
    CU_ASSERT_EQUAL(c.data.len, 1 * MIB);
    CU_ASSERT_FALSE(c.end);
    /* the agent takes it: the window reopens and the rest arrives */
    c.auto_consume = 1;
    rl_tstream_consume(c.s, c.data.len);
    CU_ASSERT(run_until(rec_done, &c));
    CU_ASSERT(c.end);
    CU_ASSERT_EQUAL(c.data.len, 4 * MIB);
    for (size_t i = 0; i < c.data.len; i += 4099)
        if (c.data.p[i] != (uint8_t)('a' + i % 26)) {
            CU_FAIL("response bytes out of order");
            break;
        }
    rl_buf_cleanup(&c.data);
    gw_free(g);
    relay_stop(&r);
}

static void test_body_queue_cap(void)
{
    struct relay r;
    struct rec c;
    uint8_t *chunk = malloc(MIB);
    size_t total = 0;

    for (size_t i = 0; i < MIB; i++)
        chunk[i] = (uint8_t)(i * 31);
    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g = gw_up(&r, "gw1", GW_ECHO, 1);
    rec_init(&c, 1);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "upload", 0, 0, &c), 0);
    CU_ASSERT_EQUAL(rl_tstream_write(c.s, chunk, MIB), 0);
    total += MIB;
    CU_ASSERT_EQUAL(rl_tstream_pending(c.s), MIB);
    /* more than 1 MiB queued is refused until the queue drains */
    CU_ASSERT_EQUAL(rl_tstream_write(c.s, chunk, 1), AL_ERR_TOOBIG);
    rl_tstream_want_writable(c.s, 0);
    CU_ASSERT_FATAL(run_until(flag_set, &c.writable));
    CU_ASSERT_EQUAL(rl_tstream_pending(c.s), 0);
    CU_ASSERT_EQUAL(rl_tstream_write(c.s, chunk, MIB / 2), 0);
    total += MIB / 2;
    CU_ASSERT_EQUAL(rl_tstream_end(c.s), 0);
    CU_ASSERT_EQUAL(rl_tstream_write(c.s, chunk, 1), AL_ERR_STATE);
    CU_ASSERT(run_until(rec_done, &c));
    CU_ASSERT(c.end);
    CU_ASSERT_EQUAL_FATAL(c.data.len, total);
    CU_ASSERT(memcmp(c.data.p, chunk, MIB) == 0);
    CU_ASSERT(memcmp(c.data.p + MIB, chunk, MIB / 2) == 0);
    rl_buf_cleanup(&c.data);
    free(chunk);
    gw_free(g);
    relay_stop(&r);
}

static void replay_case(int first_mode)
{
    struct relay r;
    struct rec c;
    uint8_t body[100000];

    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (uint8_t)(i * 7 + 3);
    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g1 = gw_up(&r, "gw1", first_mode, 1);
    struct gw *g2 = gw_up(&r, "gw2", GW_ECHO, 2);
    uint64_t c1 = relay_conn_of(&r, "corp", "gw1"), c2 = relay_conn_of(&r, "corp", "gw2");
    CU_ASSERT_FATAL(c1 && c2 && c1 != c2);

    rec_init(&c, 1);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "rp-1", 0, c1, &c), 0);
    CU_ASSERT_EQUAL(rl_tstream_conn(c.s), c1);
    CU_ASSERT_EQUAL(rl_tstream_write(c.s, body, sizeof(body) / 2), 0);
    /* part of the body goes out before the refusal, part after */
    CU_ASSERT_FATAL(run_until(gw_any_mcp, g1));
    CU_ASSERT_EQUAL(rl_tstream_write(c.s, body + sizeof(body) / 2, sizeof(body) / 2), 0);
    CU_ASSERT_EQUAL(rl_tstream_end(c.s), 0);
    CU_ASSERT(run_until(rec_done, &c));
    CU_ASSERT_FALSE(c.error);
    CU_ASSERT(c.end && c.status == 200);
    CU_ASSERT_EQUAL(c.conn_at_head, c2);
    CU_ASSERT(strstr(c.hdrs, "x-test-gw: gw2\n") != NULL);
    CU_ASSERT_EQUAL_FATAL(c.data.len, sizeof(body));
    CU_ASSERT(memcmp(c.data.p, body, sizeof(body)) == 0);
    CU_ASSERT_EQUAL(g1->nmcp, 1);
    CU_ASSERT_EQUAL(g2->nmcp, 1);
    struct gws *st = gw_mcp(g2, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    check_grant(st, "gw2", "rp-1", "corp/crm");
    CU_ASSERT_EQUAL(metric(&r, "airlock_relay_tunnel_streams_refused_total", CORP), 1);
    CU_ASSERT_EQUAL(metric(&r, "airlock_relay_tunnel_streams_replayed_total", CORP), 1);
    CU_ASSERT_EQUAL(metric(&r, "airlock_relay_tunnel_streams_opened_total", CORP), 1);
    if (first_mode == GW_GOAWAY) {
        /* a connection with a GOAWAY takes no new stream, even pinned */
        struct rec more;
        rec_init(&more, 1);
        CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "rp-2", 1, c1, &more), 0);
        CU_ASSERT_EQUAL(rl_tstream_conn(more.s), c2);
        CU_ASSERT(run_until(rec_done, &more));
        rl_buf_cleanup(&more.data);
    }
    rl_buf_cleanup(&c.data);
    gw_free(g1);
    gw_free(g2);
    relay_stop(&r);
}

static void test_refused_replayed(void)
{
    replay_case(GW_REFUSE);
}

static void test_goaway_replayed(void)
{
    replay_case(GW_GOAWAY);
}

static void test_refused_everywhere(void)
{
    struct relay r;
    struct rec c;

    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g1 = gw_up(&r, "gw1", GW_REFUSE, 1);
    rec_init(&c, 1);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "nowhere", 1, 0, &c), 0);
    CU_ASSERT(run_until(rec_done, &c));
    CU_ASSERT(c.error);
    CU_ASSERT_EQUAL(c.err, AL_ERR_CLOSED);
    CU_ASSERT_FALSE(c.head_seen_at_error);
    CU_ASSERT_EQUAL(g1->nmcp, 1); /* never the same connection twice */
    rl_buf_cleanup(&c.data);
    gw_free(g1);
    relay_stop(&r);
}

static void test_rst_after_head(void)
{
    struct relay r;
    struct rec c;

    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g1 = gw_up(&r, "gw1", GW_RST_AFTER_HEAD, 1);
    struct gw *g2 = gw_up(&r, "gw2", GW_RESPOND, 2);
    uint64_t c1 = relay_conn_of(&r, "corp", "gw1");
    rec_init(&c, 1);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "rst-1", 1, c1, &c), 0);
    CU_ASSERT(run_until(rec_done, &c));
    CU_ASSERT(c.head);
    CU_ASSERT(c.error);
    CU_ASSERT_EQUAL(c.err, AL_ERR_CLOSED);
    CU_ASSERT(c.head_seen_at_error);
    settle();
    CU_ASSERT_EQUAL(g2->nmcp, 0); /* never replayed: the gateway may have acted */
    CU_ASSERT_EQUAL(metric(&r, "airlock_relay_tunnel_streams_replayed_total", CORP), 0);
    rl_buf_cleanup(&c.data);
    gw_free(g1);
    gw_free(g2);
    relay_stop(&r);
}

static void test_cancel(void)
{
    struct relay r;
    struct rec c;

    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g = gw_up(&r, "gw1", GW_HOLD, 1);
    rec_init(&c, 1);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "cx", 0, 0, &c), 0);
    CU_ASSERT_FATAL(run_until(gw_has_mcp0, g));
    rl_tstream_cancel(c.s);
    c.s = NULL;
    CU_ASSERT(run_until(gw_mcp0_closed, g));
    CU_ASSERT_EQUAL(gw_mcp(g, 0)->close_code, NGHTTP2_CANCEL);
    settle();
    CU_ASSERT_FALSE(c.end || c.error || c.head);
    CU_ASSERT_EQUAL(gauge(&r, "airlock_relay_tunnel_open_streams", CORP), 0);
    rl_buf_cleanup(&c.data);
    gw_free(g);
    relay_stop(&r);
}

static void test_least_loaded(void)
{
    struct relay r;
    struct rec a, b, c, d, e, f;

    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g1 = gw_up(&r, "gw1", GW_HOLD, 1);
    struct gw *g2 = gw_up(&r, "gw2", GW_HOLD, 2);
    rec_init(&a, 1);
    rec_init(&b, 1);
    rec_init(&c, 1);
    rec_init(&d, 1);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "a", 1, 0, &a), 0);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "b", 1, 0, &b), 0);
    CU_ASSERT_NOT_EQUAL(rl_tstream_conn(a.s), rl_tstream_conn(b.s));
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "c", 1, 0, &c), 0);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "d", 1, 0, &d), 0);
    CU_ASSERT_NOT_EQUAL(rl_tstream_conn(c.s), rl_tstream_conn(d.s));
    /* a pin wins over load while its connection is usable */
    uint64_t c1 = relay_conn_of(&r, "corp", "gw1");
    struct rec p;
    rec_init(&p, 1);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "p", 1, c1, &p), 0);
    CU_ASSERT_EQUAL(rl_tstream_conn(p.s), c1);
    /* now gw1 has 3, gw2 2: the next goes to gw2 */
    rec_init(&e, 1);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "e", 1, 0, &e), 0);
    CU_ASSERT_EQUAL(rl_tstream_conn(e.s), relay_conn_of(&r, "corp", "gw2"));
    struct gw *pair[2] = {g1, g2};
    CU_ASSERT_FATAL(run_until(three_each, pair));
    for (int i = 0; i < 3; i++) {
        gw_respond(g1, gw_mcp(g1, i), (const uint8_t *)"1", 1);
        gw_respond(g2, gw_mcp(g2, i), (const uint8_t *)"2", 1);
    }
    struct rec *all[] = {&a, &b, &c, &d, &e, &p};
    for (int i = 0; i < 6; i++) {
        CU_ASSERT(run_until(rec_done, all[i]));
        CU_ASSERT(all[i]->end);
        rl_buf_cleanup(&all[i]->data);
    }
    /* equal load: round robin */
    rec_init(&f, 1);
    uint64_t prev = 0;
    for (int i = 0; i < 4; i++) {
        char rid[8];
        snprintf(rid, sizeof(rid), "rr%d", i);
        rec_init(&f, 1);
        CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", rid, 1, 0, &f), 0);
        uint64_t now = rl_tstream_conn(f.s);
        CU_ASSERT_NOT_EQUAL(now, prev);
        prev = now;
        rl_tstream_cancel(f.s);
        settle();
        rl_buf_cleanup(&f.data);
    }
    gw_free(g1);
    gw_free(g2);
    relay_stop(&r);
}

static void test_no_connection(void)
{
    struct relay r;
    struct rec c;
    Airlock__V1__GetTunnelStatusResponse st;
    struct al_arena ar;

    relay_start(&r, two_tunnels, 2, 10);
    rec_init(&c, 1);
    CU_ASSERT_EQUAL(open_req(&r, "corp", "crm", "n-1", 1, 0, &c), AL_ERR_CLOSED);
    CU_ASSERT_EQUAL(open_req(&r, "corp", "crm", "n-2", 1, 0, &c), AL_ERR_CLOSED);
    CU_ASSERT_EQUAL(open_req(&r, "nope", "crm", "n-3", 1, 0, &c), AL_ERR_NOTFOUND);
    CU_ASSERT_PTR_NULL(c.s);
    al_arena_init(&ar, 0);
    CU_ASSERT_EQUAL_FATAL(rl_tunnels_status(r.t, "corp", &ar, &st), 0);
    CU_ASSERT_EQUAL(st.tunnels[0]->unroutable_total, 2);
    CU_ASSERT_EQUAL(st.tunnels[0]->requests_total, 0);
    CU_ASSERT_EQUAL(st.tunnels[0]->n_connections, 0);
    al_arena_cleanup(&ar);
    rl_buf_cleanup(&c.data);
    relay_stop(&r);
}

static void test_gateway_lost(void)
{
    struct relay r;
    struct rec c;

    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g = gw_up(&r, "gw1", GW_HOLD, 1);
    rec_init(&c, 1);
    CU_ASSERT_EQUAL_FATAL(open_req(&r, "corp", "crm", "lost", 1, 0, &c), 0);
    CU_ASSERT_FATAL(run_until(gw_has_mcp0, g));
    gw_free(g); /* the gateway dies with the request in flight */
    CU_ASSERT(run_until(rec_done, &c));
    CU_ASSERT(c.error);
    CU_ASSERT_EQUAL(c.err, AL_ERR_CLOSED);
    CU_ASSERT_FALSE(c.head_seen_at_error);
    CU_ASSERT(wait_usable(&r, CORP, 0));
    rl_buf_cleanup(&c.data);
    relay_stop(&r);
}

/* ------------------------------------------------------------------ */
/* TunnelStatus over gRPC                                               */
/* ------------------------------------------------------------------ */

static struct al_tls *client_tls(const char *role, const char *name)
{
    char cert[300], key[300], ca[300];
    struct al_tls *t = NULL;
    snprintf(cert, sizeof(cert), "%s/%s-%s.crt", pki, role, name);
    snprintf(key, sizeof(key), "%s/%s-%s.key", pki, role, name);
    snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
    struct al_tls_opts to = {.cert_file = cert, .key_file = key, .ca_file = ca, .server = 0};
    CU_ASSERT_FATAL(al_tls_new(&to, &t) == 0);
    return t;
}

struct call_res {
    int done, status;
    Airlock__V1__GetTunnelStatusResponse *resp;
};

static void st_msg(struct al_grpc_ccall *cc, const ProtobufCMessage *m, void *user)
{
    struct call_res *c = user;
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n + 1);
    (void)cc;
    protobuf_c_message_pack(m, buf);
    c->resp = airlock__v1__get_tunnel_status_response__unpack(NULL, n, buf);
    free(buf);
}

static void st_done(struct al_grpc_ccall *cc, int status, const char *msg, void *user)
{
    struct call_res *c = user;
    (void)cc;
    (void)msg;
    c->status = status;
    c->done = 1;
}

static int status_call(const char *addr, struct al_tls *tls, const char *tunnel,
                       struct call_res *res)
{
    struct al_grpc_channel *ch;
    struct al_grpc_channel_opts co = {.target = addr, .tls = tls};
    Airlock__V1__GetTunnelStatusRequest req = AIRLOCK__V1__GET_TUNNEL_STATUS_REQUEST__INIT;
    static const struct al_grpc_ccall_cbs ccbs = {st_msg, st_done};

    memset(res, 0, sizeof(*res));
    req.tunnel = (char *)tunnel;
    CU_ASSERT_FATAL(al_grpc_channel_new(loop, &co, &ch) == 0);
    CU_ASSERT_FATAL(al_grpc_channel_call(ch, "/airlock.v1.TunnelStatus/GetStatus", &req.base,
                                         &airlock__v1__get_tunnel_status_response__descriptor, NULL,
                                         0, 5, &ccbs, res, NULL) == 0);
    run_until(flag_set, &res->done);
    al_grpc_channel_free(ch);
    settle();
    return res->status;
}

static void test_status_service(void)
{
    struct relay r;
    struct al_tls *srv_tls = NULL, *admin, *client;
    struct al_grpc_server *srv;
    char cert[300], key[300], ca[300], addr[64];
    struct call_res res;

    relay_start(&r, two_tunnels, 2, 10);
    struct gw *g = gw_up(&r, "gw1", GW_RESPOND, 1);
    snprintf(cert, sizeof(cert), "%s/relay-relay-0.crt", pki);
    snprintf(key, sizeof(key), "%s/relay-relay-0.key", pki);
    snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
    struct al_tls_opts to = {
        .cert_file = cert, .key_file = key, .ca_file = ca, .server = 1, .require_peer_cert = 1};
    CU_ASSERT_FATAL(al_tls_new(&to, &srv_tls) == 0);
    struct al_grpc_server_opts so = {
        .listen = "127.0.0.1:0", .tls = srv_tls, .require_client_cert = 1};
    CU_ASSERT_FATAL(al_grpc_server_new(loop, &so, &srv) == 0);
    CU_ASSERT_FATAL(rl_status_register(srv, r.t) == 0);
    CU_ASSERT_FATAL(al_grpc_server_start(srv) == 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", al_grpc_server_port(srv));
    admin = client_tls("admin", "admin");
    client = client_tls("client", "client");

    CU_ASSERT_EQUAL(status_call(addr, admin, "", &res), AL_GRPC_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(res.resp);
    CU_ASSERT_STRING_EQUAL(res.resp->relay_id, "relay-0");
    CU_ASSERT_EQUAL_FATAL(res.resp->n_tunnels, 2);
    CU_ASSERT_STRING_EQUAL(res.resp->tunnels[0]->tunnel, "corp");
    CU_ASSERT_EQUAL_FATAL(res.resp->tunnels[0]->n_connections, 1);
    CU_ASSERT_STRING_EQUAL(res.resp->tunnels[0]->connections[0]->gateway_identity,
                           "spiffe://airlock/gateway/gw1");
    airlock__v1__get_tunnel_status_response__free_unpacked(res.resp, NULL);

    CU_ASSERT_EQUAL(status_call(addr, admin, "other", &res), AL_GRPC_OK);
    CU_ASSERT(res.resp && res.resp->n_tunnels == 1);
    if (res.resp)
        airlock__v1__get_tunnel_status_response__free_unpacked(res.resp, NULL);
    CU_ASSERT_EQUAL(status_call(addr, admin, "zzz", &res), AL_GRPC_NOT_FOUND);
    CU_ASSERT_EQUAL(status_call(addr, client, "", &res), AL_GRPC_PERMISSION_DENIED);
    CU_ASSERT_PTR_NULL(res.resp);

    al_tls_free(admin);
    al_tls_free(client);
    al_grpc_server_free(srv);
    al_tls_free(srv_tls);
    gw_free(g);
    relay_stop(&r);
}

/* ------------------------------------------------------------------ */

static int suite_init(void)
{
    char tmpl[] = "/tmp/al-test-relay-tunnel-XXXXXX";
    uint8_t seed[32], pub[32];
    static const char *const alpn[] = {"airlock-tunnel/1", NULL};
    char cert[300], key[300], ca[300];

    loop = EV_DEFAULT;
    ev_timer_init(&tick, tick_cb, 0.05, 0.05);
    ev_timer_start(loop, &tick);
    if (!mkdtemp(tmpl))
        return 1;
    snprintf(pki, sizeof(pki), "%s", tmpl);
    if (al_pki_create_ca(pki, 0) < 0 || al_pki_issue(pki, "relay", "relay-0", AL_PKI_SERVER) < 0 ||
        al_pki_issue(pki, "gateway", "gw1", 0) < 0 || al_pki_issue(pki, "gateway", "gw2", 0) < 0 ||
        al_pki_issue(pki, "admin", "admin", 0) < 0 || al_pki_issue(pki, "client", "client", 0) < 0)
        return 1;
    snprintf(cert, sizeof(cert), "%s/relay-relay-0.crt", pki);
    snprintf(key, sizeof(key), "%s/relay-relay-0.key", pki);
    snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
    struct al_tls_opts to = {.cert_file = cert,
                             .key_file = key,
                             .ca_file = ca,
                             .server = 1,
                             .require_peer_cert = 1,
                             .alpn = alpn};
    if (al_tls_new(&to, &relay_tls) < 0)
        return 1;
    for (size_t i = 0; i < sizeof(seed); i++)
        seed[i] = (uint8_t)(i * 13 + 1);
    if (al_grant_signer_new_raw(seed, sizeof(seed), NULL, RELAY_ID, &signer) < 0 ||
        al_grant_signer_public_raw(signer, pub, sizeof(pub)) < 0 ||
        al_grant_keyring_new(&keyring) < 0 ||
        al_grant_keyring_add_raw(keyring, NULL, RELAY_ID, pub, sizeof(pub)) < 0)
        return 1;
    return 0;
}

static int suite_clean(void)
{
    char cmd[300];
    al_tls_free(relay_tls);
    al_grant_signer_free(signer);
    al_grant_keyring_free(keyring);
    ev_timer_stop(loop, &tick);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", pki);
    return system(cmd) == 0 ? 0 : 1;
}

int main(void)
{
    CU_pSuite s;
    int failed;

    signal(SIGPIPE, SIG_IGN);
    /* log lines would split CUnit's result lines; RELAY_TEST_LOG=debug shows them */
    if (al_log_set_level_name(getenv("RELAY_TEST_LOG") ? getenv("RELAY_TEST_LOG") : "off") < 0)
        al_log_set_level_name("off");
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("relay_tunnel", suite_init, suite_clean);
    CU_add_test(s, "registration accepted by identity glob; Open and Ack contents; status",
                test_register_accepted);
    CU_add_test(s, "registration with no tunnel accepted: Ack, then close", test_register_rejected);
    CU_add_test(s, "identity that may serve no tunnel: closed before Open", test_identity_refused);
    CU_add_test(s, "first control message not a registration: closed", test_first_not_registration);
    CU_add_test(s, "stalled handshakes hold at most 256 slots; a gateway gets in after",
                test_handshake_limit);
    CU_add_test(s, "control stream end: GOAWAY, open streams finish, then close",
                test_control_stream_end);
    CU_add_test(s, "control message over 64 KiB: closed", test_control_message_too_big);
    CU_add_test(s, "no heartbeat for 3 intervals: GOAWAY and close", test_heartbeat_timeout);
    CU_add_test(s, "gateway drain: no new streams, open ones finish", test_gateway_drain);
    CU_add_test(s, "relay drain: Ack relay_draining, GOAWAY, done after streams", test_relay_drain);
    CU_add_test(s, "stream: request headers, grant, body; response streamed back",
                test_stream_roundtrip);
    CU_add_test(s, "flow control: response stops at the window until consumed", test_flow_control);
    CU_add_test(s, "request body queue capped at 1 MiB, on_writable", test_body_queue_cap);
    CU_add_test(s, "REFUSED_STREAM replayed on another connection with its body",
                test_refused_replayed);
    CU_add_test(s, "stream above GOAWAY last-stream-id replayed", test_goaway_replayed);
    CU_add_test(s, "refused with no other connection: on_error, never the same twice",
                test_refused_everywhere);
    CU_add_test(s, "RST after the head: on_error(head_seen), no replay", test_rst_after_head);
    CU_add_test(s, "cancel resets the stream, no callback", test_cancel);
    CU_add_test(s, "least loaded connection, pin, round robin on ties", test_least_loaded);
    CU_add_test(s, "no connection: AL_ERR_CLOSED; unknown tunnel: AL_ERR_NOTFOUND",
                test_no_connection);
    CU_add_test(s, "gateway lost mid-stream: on_error", test_gateway_lost);
    CU_add_test(s, "TunnelStatus.GetStatus: admin only, NOT_FOUND", test_status_service);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
