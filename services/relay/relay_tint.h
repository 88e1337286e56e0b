/*
 * relay_tint: internals shared by the relay's tunnel modules (not an API).
 *
 *   relay_tunnel.c   registry of tunnels, listener, connection choice, drain
 *   relay_tconn.c    one gateway connection: control stream, Acks, heartbeat
 *                    watchdog, the nghttp2 callbacks of the session
 *   relay_tstream.c  agent streams: grant, request headers and body, response
 *                    head/body with manual flow control, replay
 *   relay_tstatus.c  the TunnelStatus snapshot
 *
 * Every nghttp2 stream of a connection carries a stream user data pointer
 * whose first byte is an enum rt_kind, so the shared callbacks know whether
 * it is the control stream, an Ack call or an agent stream. A pointer is
 * reset to NULL as soon as the object above it stops caring about the
 * stream (cancel, end, connection loss), so a late callback finds nothing.
 */
#ifndef RL_TINT_H
#define RL_TINT_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <nghttp2/nghttp2.h>

#include "al_tls.h"
#include "relay_tunnel.h"
#include "rlbuf.h"

#define RT_ALPN            "airlock-tunnel/1"
#define RT_CTL_MSG_MAX     (64 * 1024)   /* one TunnelControlMessage */
#define RT_MAX_CONNS       4096          /* gateway connections, registered or not */
/* Connections still in the TLS handshake (no identity yet). Past this the
 * listener stops accepting until one finishes: anonymous peers that stall
 * in the handshake can delay gateways by one handshake timeout at most,
 * never take every connection slot. */
#define RT_MAX_HANDSHAKES  256
#define RT_MAX_OFFERS      64            /* tunnels in one registration */
#define RT_MAX_SERVERS     256           /* servers in one offer */
#define RT_MAX_ACKS        32            /* Ack calls in flight per connection */
#define RT_QUEUE_MAX       (1024 * 1024) /* request body bytes not yet sent */
#define RT_MAX_ATTEMPTS    3             /* a stream is tried on this many connections */
#define RT_HEAD_MAX_BYTES  (64 * 1024)   /* response header block kept per stream */
#define RT_HEAD_MAX_FIELDS 256
#define RT_NAME_MAX        64  /* tunnel and server names: [A-Za-z0-9._-]{1,64} */
#define RT_TEXT_MAX        256 /* gateway_id, version, instance id kept from a registration */
#define RT_AUDIENCE        "spiffe://airlock/credstore"
/* Receive windows. A stream's window bounds what one agent that stops
 * reading makes the relay hold; the connection window bounds the sum, and
 * is large enough that a few stalled agents cannot stall the connection's
 * other streams (it takes RT_CONN_WINDOW / RT_STREAM_WINDOW of them). */
#define RT_STREAM_WINDOW (1024 * 1024)
#define RT_CONN_WINDOW   (64 * 1024 * 1024)

enum rt_kind { RT_KIND_CONTROL = 1, RT_KIND_ACK, RT_KIND_AGENT };

struct al_metric;
struct rt_conn;

/* A configured tunnel and the accepted offers that serve it. */
struct rt_tunnel {
    char *name;
    char **gateways;
    size_t ngateways;
    struct rt_offer **offers; /* offers of registered connections */
    size_t noffers, offers_cap;
    size_t rr; /* round-robin cursor among equally loaded connections */
    int open_streams;
    int64_t requests_total, unroutable_total;
    struct al_metric *m_conns, *m_open, *m_opened, *m_refused, *m_replayed, *m_unroutable;
};

/* One tunnel a connection's registration offered and the relay accepted. */
struct rt_offer {
    struct rt_conn *conn;
    struct rt_tunnel *tunnel;
    char **servers;
    size_t nservers;
    int counted; /* included in tunnel->m_conns */
};

/* One Ack call (unary TunnelControl.Ack on its own stream). */
struct rt_ack {
    uint8_t kind; /* RT_KIND_ACK; first member */
    struct rt_conn *conn;
    struct rt_ack *prev, *next;
    int32_t sid;
    int64_t seq;
    uint8_t *req; /* framed TunnelAck */
    size_t req_len, req_off;
    int http_status, grpc_status;
    int then; /* what to do once its request has been sent: enum rt_after */
};

enum rt_after { RT_AFTER_NONE, RT_AFTER_USABLE, RT_AFTER_SHUTDOWN };

enum rt_cstate {
    RT_C_HANDSHAKE, /* TLS, ALPN, peer identity */
    RT_C_CONTROL,   /* Open sent, waiting for the registration */
    RT_C_ACKING,    /* registration accepted, its Ack not sent yet */
    RT_C_READY,     /* Ack sent: agent streams may be opened */
    RT_C_CLOSING    /* GOAWAY sent or being sent; no new streams */
};

struct rt_conn {
    struct rl_tunnels *t;
    struct rt_conn *prev, *next;
    struct al_h2conn *h2; /* NULL once closed */
    uint64_t id;
    char id_str[24];
    char identity[AL_TLS_ID_MAX];
    char remote[64];
    enum rt_cstate state;
    int in_handshake; /* counted in nhandshakes */
    int close_err; /* reason given to streams when the connection goes */

    /* control stream */
    uint8_t ctl_kind; /* RT_KIND_CONTROL: the control stream's user data */
    int32_t ctl_sid;
    uint8_t *ctl_req;
    size_t ctl_req_len, ctl_req_off;
    struct rl_buf ctl_in; /* deframing, capped */
    int ctl_http_status, ctl_grpc_status;
    int64_t last_seq;
    int registered;

    /* registration */
    char gateway_id[RT_TEXT_MAX], gateway_version[RT_TEXT_MAX], instance_id[RT_TEXT_MAX];
    int32_t max_streams;
    int32_t conn_index;
    double hb_s; /* heartbeat interval the gateway uses */
    struct rt_offer *offers;
    size_t noffers;
    char tunnels_log[256]; /* accepted tunnel names, for log lines */

    /* state */
    int draining;    /* the gateway sent TunnelDrain */
    int goaway_recv; /* the gateway sent GOAWAY */
    int32_t goaway_last_sid;
    int gw_open_streams; /* as reported by the last heartbeat */
    int open_streams;    /* agent streams on this connection, counted here */
    int64_t connected_ms, last_hb_ms; /* Unix ms, for TunnelStatus only */
    ev_timer watchdog; /* heartbeat deadline: 3 intervals (monotonic) */
    ev_timer kill;     /* hard close after a GOAWAY that could not be flushed */
    struct rt_ack *acks;
    int nacks;
    struct rl_tstream *streams; /* agent streams */
};

struct rl_tunnels {
    struct ev_loop *loop;
    char *listen, *relay_id, *relay_version;
    struct al_tls *tls;
    double hb_s;
    struct al_grant_signer *signer;
    double grant_ttl_s;
    size_t max_replay;
    struct al_metrics *metrics;

    struct rt_tunnel *tunnels; /* sorted by name */
    size_t ntunnels;

    int fd;
    int port;
    ev_io accept_w;
    struct rt_conn *conns;
    size_t nconns;
    size_t nhandshakes; /* conns in RT_C_HANDSHAKE */
    nghttp2_session_callbacks *cbs;

    int draining;
    void (*drain_done)(void *user);
    void *drain_user;
    ev_timer drain_w; /* runs drain_done from the loop */
    size_t open_streams;

    struct rl_tstream *notify;       /* streams due an on_writable */
    struct rl_tstream *notify_batch; /* the ones being told right now */
    ev_timer notify_w;

    struct al_metric *m_ctl_registration, *m_ctl_heartbeat, *m_ctl_drain, *m_ctl_other;
    struct al_metric *m_hb_timeouts, *m_reg_accepted, *m_reg_rejected, *m_conn_refused;
    struct al_metric *m_conns_open;
};

/* ---- relay_tunnel.c ---- */
int64_t rt_now_ms(void);
struct rt_tunnel *rt_tunnel_find(struct rl_tunnels *t, const char *name);
/* 1 when the identity matches one of the tunnel's gateway globs. */
int rt_tunnel_allows(const struct rt_tunnel *tu, const char *identity);
/* A usable connection for tunnel/server: the pinned one if it qualifies,
 * else the least loaded (ties in round-robin order), skipping `avoid`
 * connection ids (navoid of them). NULL when none. */
struct rt_conn *rt_pick(struct rl_tunnels *t, struct rt_tunnel *tu, const char *server,
                        uint64_t pin, const uint64_t *avoid, size_t navoid);
int rt_conn_usable(const struct rt_conn *c);
/* Offer bookkeeping in the tunnel registry. */
int rt_tunnel_add_offer(struct rt_tunnel *tu, struct rt_offer *o);
void rt_tunnel_del_offer(struct rt_tunnel *tu, struct rt_offer *o);
/* Called when an agent stream ends: drain completion. */
void rt_stream_gone(struct rl_tunnels *t);
void rt_metric_tunnel(struct rl_tunnels *t, struct rt_tunnel *tu);

/* ---- relay_tconn.c ---- */
int rt_conn_accept(struct rl_tunnels *t, int fd);
/* c left the TLS handshake (ready or closed): frees its handshake slot and
 * resumes accepting if the limit had stopped it. Idempotent. */
void rt_handshake_over(struct rt_conn *c);
/* Graceful: no new streams, GOAWAY, close when streams end. */
void rt_conn_shutdown(struct rt_conn *c, const char *why);
/* GOAWAY with code and close now-ish; streams fail with err. */
void rt_conn_abort(struct rt_conn *c, int err, uint32_t code, const char *why);
/* Relay drain: Ack with relay_draining when registered, then GOAWAY. */
void rt_conn_drain(struct rt_conn *c);
/* rl_tunnels_free: unlinks and frees c now; the h2 connection closes later
 * without an owner. */
void rt_conn_forget(struct rt_conn *c);
nghttp2_session_callbacks *rt_callbacks_new(void);

/* ---- relay_tstream.c ---- */
/* Stream-level callbacks dispatched by relay_tconn.c for RT_KIND_AGENT. */
int rt_stream_on_begin_headers(struct rt_conn *c, struct rl_tstream *s, const nghttp2_frame *f);
int rt_stream_on_header(struct rt_conn *c, struct rl_tstream *s, const nghttp2_frame *f,
                        const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen);
int rt_stream_on_frame_recv(struct rt_conn *c, struct rl_tstream *s, const nghttp2_frame *f);
int rt_stream_on_data(struct rt_conn *c, struct rl_tstream *s, const uint8_t *d, size_t n);
void rt_stream_on_close(struct rt_conn *c, struct rl_tstream *s, uint32_t code);
void rt_stream_on_headers_sent(struct rl_tstream *s);
/* The request HEADERS of sid never left nghttp2 (GOAWAY, session ending). */
void rt_stream_not_sent(struct rt_conn *c, int32_t sid);
/* The connection is gone: replay what provably never reached the gateway,
 * fail the rest. */
void rt_streams_conn_lost(struct rt_conn *c);
/* rl_tunnels_free: drops every stream without callbacks. */
void rt_streams_drop(struct rt_conn *c);
ssize_t rt_stream_read_body(nghttp2_session *ss, int32_t sid, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *ud);
void rt_notify_cb(struct ev_loop *loop, ev_timer *w, int revents);

#endif
