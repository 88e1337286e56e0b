/*
 * airlock-gateway: the inside end of the tunnels (tunnel.proto). It listens
 * on nothing but its ops port: it dials every relay replica, serves HTTP/2 on
 * each reversed connection, and forwards the relay's agent streams to the
 * private MCP servers of its routes with the route's credential injected.
 *
 * Pieces, one file each:
 *   gw_conn.c     relay names resolved to all their addresses, a slot per
 *                 (address, connection index), dialling with jittered backoff,
 *                 TLS client + HTTP/2 server per connection, the nghttp2
 *                 callbacks and the per-stream response plumbing, drain
 *   gw_ctl.c      TunnelControl.Open / Ack on a connection: registration,
 *                 heartbeats, the Ack watchdog, TunnelDrain
 *   gw_stream.c   one agent request: grant, route, MCP inspection and policy,
 *                 credential, upstream request, filtered and scrubbed response
 *   gw_cred.c     credstore: Resolve and the value cache in front of it; use
 *                 records (delivery: al_edge.h, shared with the executor)
 *   gw_config.c   configuration, routes, policy        (pure)
 *   gw_http.c     path, target, header rules, errors   (pure)
 *   gw_cache.c    templates, values, value cache       (pure)
 *   gw_session.c  session -> principal bindings        (pure)
 *   gateway_main.c startup, SIGTERM drain, readiness
 * Everything runs on one libev loop; no threads.
 *
 * Object lifetimes: struct gw lives for the process. A gw_relay per relays
 * entry holds slots; a slot holds at most one gw_conn; a gw_conn is freed when
 * its al_h2conn closes (after every stream on it was finalized); a gw_stream
 * is freed when nghttp2 closes the stream or the connection goes.
 */
#ifndef GW_H
#define GW_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <ev.h>
#include <nghttp2/nghttp2.h>

#include "airlock/v1/grant.pb-c.h"
#include "al_arena.h"
#include "al_service.h"
#include "al_tls.h"
#include "gw_config.h"
#include "mcp.h"
#include "rlbuf.h"

#define GW_VERSION     "airlock-gateway/0.1"
#define GW_ALPN        "airlock-tunnel/1"
#define GW_CTL_OPEN    "/airlock.v1.TunnelControl/Open"
#define GW_CTL_ACK     "/airlock.v1.TunnelControl/Ack"
#define GW_CTL_PREFIX  "/airlock.v1.TunnelControl/"
#define GW_OUT_HIGH    (256 * 1024) /* response bytes waiting for the relay: pause upstream */
#define GW_OUT_LOW     (64 * 1024)  /* ... resume below this */
#define GW_MAX_HEADERS 128
#define GW_HEAD_MAX    (64 * 1024) /* request header block bytes */

struct al_grant_keyring;
struct al_grpc_channel;
struct al_grpc_ccall;
struct al_h2conn;
struct al_metric;
struct al_resolver;
struct al_resolve_req;
struct gw;
struct gw_conn;
struct al_edge;
struct al_edge_grant;
struct al_edge_use;
struct gw_cache;
struct gw_resolve;
struct gw_sessions;
struct gw_value;
struct rl_mcp_filter;
struct rl_scrub_stream;
struct rl_upstream;
struct rl_ureq;

/* ---------- relays, slots, connections ---------- */

struct gw_slot {
    struct gw_relay *relay;
    struct gw_slot *next;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char addr_text[64];
    int index;            /* connection index for this address */
    struct gw_conn *conn; /* NULL when not connected */
    ev_timer retry_w;
    double backoff; /* current backoff (s); 0 = at reconnect_min */
    int due;        /* dial once the next resolve round ends */
    int stale;      /* address gone from DNS or index surplus: not redialled */
    int seen;       /* resolve bookkeeping */
};

struct gw_relay {
    struct gw *gw;
    char spec[300]; /* "host:port" as configured */
    char host[256];
    int port;
    struct al_resolve_req *rq;
    ev_timer resolve_w; /* periodic re-resolve */
    struct gw_slot *slots;
    size_t naddrs; /* distinct addresses in the last answer */
};

enum gw_conn_state {
    GW_CONN_DIALING = 0, /* TCP + TLS */
    GW_CONN_OPEN,        /* HTTP/2 up, waiting for TunnelControl.Open */
    GW_CONN_REGISTERING, /* registration sent, waiting for its Ack */
    GW_CONN_READY,       /* acknowledged with tunnels: agent streams flow */
    GW_CONN_CLOSING,     /* draining, rejected, or relay draining */
    GW_CONN_NSTATES
};

struct gw_conn {
    struct gw *gw;
    struct gw_conn *prev, *next; /* gw->conns */
    struct gw_slot *slot;        /* NULL once its slot is gone */
    struct al_h2conn *h2;
    uint64_t id;
    enum gw_conn_state state;
    double opened_at;
    struct gw_stream *streams; /* every live stream */
    int agent_streams;
    /* control (gw_ctl.c) */
    struct gw_stream *ctl;
    char relay_id[96], relay_conn[96]; /* from the Open request, quoted for logs */
    double interval;                   /* heartbeat seconds in use */
    int64_t seq;                       /* last control message sent */
    int64_t reg_seq;
    double last_ack;
    ev_timer ctl_w;     /* Open deadline, then heartbeat + Ack watchdog */
    int rejected;       /* the relay accepted none of our tunnels */
    int was_ready;      /* the registration was accepted once */
    int relay_draining; /* the relay said it is draining */
    int drain_sent;     /* TunnelDrain sent */
    int notice;         /* our shutdown notice sent */
    int goaway;         /* our final GOAWAY sent */
    unsigned rst_count; /* RST_STREAM flood guard */
    double rst_window;
};

/* ---------- streams ---------- */

enum gw_skind { GW_S_NEW = 0, GW_S_OPEN, GW_S_ACK, GW_S_AGENT, GW_S_DONE };

enum gw_phase {
    GW_P_HEAD = 0, /* collecting headers */
    GW_P_BODY,     /* POST body buffered for MCP inspection */
    GW_P_CRED,     /* waiting for credstore */
    GW_P_UP,       /* upstream request running */
    GW_P_RESP,     /* gateway-made response being sent */
    GW_P_END,      /* nothing more to do but wait for the stream to close */
};

struct gw_hdr {
    const char *name, *value; /* arena, NUL-terminated */
    size_t nl, vl;
};

struct gw_stream {
    struct gw_conn *c;
    struct gw_stream *prev, *next;
    int32_t id;
    enum gw_skind kind;
    struct al_arena arena; /* headers and small per-stream data */
    struct gw_hdr *hdr;    /* arena; grows by doubling up to GW_MAX_HEADERS */
    size_t nhdr, hdrcap, hdr_bytes;
    int head_status; /* 431 when the header block was too large */
    const char *method, *path, *ctype;
    int req_ended;  /* END_STREAM from the relay */
    int head_end;   /* ... already on the HEADERS frame */
    int resp_ended; /* we sent END_STREAM (or RST) */
    /* response plumbing (gw_conn.c) */
    struct rl_buf out;
    size_t out_off;
    int out_eof;
    int deferred;
    int submitted; /* response HEADERS submitted */
    int grpc;      /* end with gRPC trailers */
    int grpc_status;
    const char *grpc_msg;
    /* gRPC request (control streams) */
    struct rl_buf in;
    /* agent request (gw_stream.c) */
    struct gw_agent *a;
};

/* ---------- process ---------- */

struct gw_metrics {
    struct al_metric *conns[GW_CONN_NSTATES];
    struct al_metric *streams, *dials, *dial_fail, *rejected;
    struct al_metric *req[6]; /* responses to the relay by class: 1xx..5xx, reset */
    struct al_metric *up[6];  /* upstream outcomes: 1xx..5xx, failed */
    struct al_metric *resolves_ok, *resolves_denied, *resolves_failed, *cache_hits, *cred_rejected;
    struct al_metric *audit_depth, *audit_undelivered, *audit_fail, *audit_dropped, *audit_sent;
    struct al_metric *scrub_hits, *policy_denials, *list_removed, *grant_denials;
    struct al_metric *bytes_up, *bytes_down, *audit_full;
};

struct gw_cred {
    struct al_edge *edge; /* Resolve calls and use-record delivery */
    struct gw_cache *cache;
    ev_timer sweep_w;
    void (*flush_done)(struct gw *gw); /* gw_cred_flush() in progress */
};

struct gw {
    struct al_service svc;
    struct gw_config cfg;
    char self_id[AL_TLS_ID_MAX];
    char gateway_id[256];
    char instance_id[33];
    struct al_tls *relay_tls; /* client context, ALPN airlock-tunnel/1 */
    struct al_tls *cs_tls;    /* client context for credstore, ALPN h2 */
    struct al_resolver *resolver;
    struct al_grant_keyring *keyring;
    struct rl_upstream **ups; /* parallel to cfg.routes.v */
    size_t buffered;          /* request body bytes buffered, all agents (max_buffered) */
    struct gw_relay *relays;
    size_t nrelays;
    struct gw_conn *conns;
    size_t nconns;
    struct gw_sessions *sessions;
    struct gw_cred cred;
    nghttp2_session_callbacks *h2cbs;
    int draining;    /* 1: SIGTERM received */
    int drain_phase; /* 0 streams finishing, 1 flushing audit, 2 done */
    ev_timer drain_w;
    void (*on_conns_drained)(struct gw *gw); /* draining: the last connection closed */
    struct gw_metrics m;
};

/* ---- gw_conn.c ---- */
int gw_conns_start(struct gw *gw);
/* SIGTERM: TunnelDrain + GOAWAY everywhere, no more dials. */
void gw_conns_drain(struct gw *gw);
/* Drain grace over: reset what still runs and close every connection. */
void gw_conns_close_all(struct gw *gw);
/* Frees relays and slots (connections must be gone). */
void gw_conns_free(struct gw *gw);
int gw_conns_ready(const struct gw *gw);
/* A connection's state changed (metrics). */
void gw_conn_set_state(struct gw_conn *c, enum gw_conn_state st);
/* Shutdown notice now; the control stream ends and the final GOAWAY goes
 * once no agent stream is left; the connection closes after its streams. */
void gw_conn_shutdown(struct gw_conn *c);
/* GOAWAY and close now. */
void gw_conn_abort(struct gw_conn *c, int err);
/* The registration was acknowledged: ok = tunnels accepted. */
void gw_conn_registered(struct gw_conn *c, int ok);
/* Response plumbing for streams: headers with a deferred data provider; more
 * output; end. */
int gw_stream_submit(struct gw_stream *s, const nghttp2_nv *nv, size_t n);
void gw_stream_kick(struct gw_stream *s);
void gw_stream_reset(struct gw_stream *s, uint32_t code);
/* Header lookup in the request (lowercase name), or NULL. */
const struct gw_hdr *gw_stream_header(const struct gw_stream *s, const char *name);
nghttp2_session *gw_stream_session(const struct gw_stream *s);
/* Unix time in milliseconds. */
int64_t gw_unix_ms(void);

/* ---- gw_ctl.c ---- */
/* A TunnelControl call's request is complete. */
void gw_ctl_request(struct gw_stream *s);
/* Any other gRPC path under TunnelControl, or a bad gRPC request. */
void gw_ctl_fail(struct gw_stream *s, int status, const char *msg);
/* Connection ready for the Open request: starts the deadline. */
void gw_ctl_start(struct gw_conn *c);
/* The control stream closed (relay side or connection). */
void gw_ctl_stream_closed(struct gw_conn *c);
/* Sends TunnelDrain (once). */
void gw_ctl_drain(struct gw_conn *c, const char *reason, int64_t grace_ms);
/* Ends the control stream with OK (draining, no agent stream left). */
void gw_ctl_finish(struct gw_conn *c);
void gw_ctl_stop(struct gw_conn *c);

/* ---- gw_stream.c ---- */
/* Headers of an agent stream are complete. */
void gw_agent_head(struct gw_stream *s);
/* Request body bytes and end. */
void gw_agent_data(struct gw_stream *s, const uint8_t *d, size_t n);
void gw_agent_end(struct gw_stream *s);
/* Response bytes left the out buffer (flow control). */
void gw_agent_drained(struct gw_stream *s);
/* The stream is gone (closed by nghttp2, RST from the relay, or the
 * connection): cancel everything, record the use, free the agent state. */
void gw_agent_closed(struct gw_stream *s, uint32_t error_code);
/* A gateway-made error for a stream that is no agent request (404). */
void gw_stream_error(struct gw_stream *s, int status, int code, int reason, const char *msg);

/* ---- gw_cred.c ---- */
int gw_cred_init(struct gw *gw);
void gw_cred_free(struct gw *gw);
/* Answer of gw_cred_get(): status 0 with a value reference (taken by the
 * callee), or an error: http status, ErrorReason and a text safe to show. */
typedef void (*gw_cred_cb)(void *user, struct gw_value *v, int status, int reason, const char *why);
/*
 * The route's value for this request: from the cache when allowed (returns
 * 1 and *hit holds a reference), else a Resolve with the request's grant
 * (returns 0; cb runs later from the loop unless gw_cred_cancel() first).
 * Returns a negative code when the call could not start (no callback).
 */
int gw_cred_get(struct gw *gw, size_t route, struct al_edge_grant *g,
                const Airlock__V1__Grant *grant, gw_cred_cb cb, void *user, struct gw_resolve **out,
                struct gw_value **hit);
void gw_cred_cancel(struct gw_resolve *r);
/* Audit reservations and records (see al_edge.h). */
int gw_cred_reserve(struct gw *gw);
void gw_cred_release(struct gw *gw);
void gw_cred_record(struct gw *gw, struct al_edge_grant *g, const struct al_edge_use *u);
/* Shutdown: send everything queued; done runs when the queue is empty or
 * after timeout_s. */
void gw_cred_flush(struct gw *gw, double timeout_s, void (*done)(struct gw *gw));

#endif
