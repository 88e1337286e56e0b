/*
 * relay_tunnel: the relay's side of the reversed gateway connections.
 *
 * Owns the tunnel listener (TLS 1.3 server with mutual TLS, ALPN exactly
 * "airlock-tunnel/1"; the relay is the HTTP/2 CLIENT on each accepted
 * connection, see tunnel.proto), the control stream of each connection
 * (TunnelControl.Open, registration, heartbeats, drain, Acks), the registry
 * of tunnels -> usable connections, and the streams the relay opens down
 * those connections for agent requests.
 *
 * A connection is usable for tunnel T and server S once its registration
 * has been acknowledged with T accepted (the gateway identity matches one of
 * T's configured `gateways` globs) and it offered S, while it is not
 * draining, has no GOAWAY, has seen a heartbeat within 3 intervals, and has
 * fewer open streams than its max_concurrent_streams.
 *
 * Streams: rl_tstream_open() picks the pinned connection when it is still
 * usable (sessions), else the usable connection with the fewest open
 * streams; signs the request's grant (holder = that connection's gateway
 * SPIFFE id) and opens the stream with the request headers. The request body
 * is streamed with rl_tstream_write()/end(); until the response head arrives
 * the stream keeps a copy of the body sent so far (bounded by the agent body
 * cap) so that, if the gateway refuses the stream (RST_STREAM
 * REFUSED_STREAM) or the stream id is above a GOAWAY's last stream id - the
 * two cases where the request provably never reached the gateway - it is
 * replayed on another usable connection (at most 3 attempts), invisibly to
 * the caller. Any other failure is reported once with on_error and never
 * retried: a tools/call may already have run.
 * Flow control end to end: response DATA is passed to on_data and the
 * stream's receive window reopens only as the caller reports bytes delivered
 * to the agent with rl_tstream_consume() (al_h2conn manual_window); request
 * body writes beyond the gateway's window queue up to a cap, and
 * on_writable tells the caller when to continue.
 *
 * Lifecycle: rl_tunnels_new() -> rl_tstream_open()... -> rl_tunnels_drain()
 * on SIGTERM -> rl_tunnels_free(). A stream ends with exactly one of on_end,
 * on_error, or the caller's rl_tstream_cancel() (no callback after it); the
 * stream object is freed by the module after that.
 */
#ifndef RL_TUNNEL_H
#define RL_TUNNEL_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <nghttp2/nghttp2.h>

#include "airlock/v1/tunnel.pb-c.h"

struct al_arena;
struct al_grant_signer;
struct al_metrics;
struct al_tls;

struct rl_tunnel_cfg {
    const char *name;             /* tunnel name */
    const char *const *gateways;  /* al_glob patterns over gateway SPIFFE ids */
    size_t ngateways;
};

struct rl_tunnels_opts {
    const char *listen;                  /* "host:port" for gateways */
    struct al_tls *tls;                  /* borrowed: server, mTLS required, ALPN airlock-tunnel/1 */
    const char *relay_id;                /* OpenTunnelControlRequest.relay_id */
    const char *relay_version;
    double heartbeat_interval_s;         /* asked of gateways; 0 = 10 s */
    const struct rl_tunnel_cfg *tunnels; /* copied */
    size_t ntunnels;
    struct al_grant_signer *signer;      /* borrowed: signs request grants */
    double grant_ttl_s;                  /* 0 = 60 s */
    size_t max_replay;                   /* body bytes kept for a replay; 0 = 4 MiB */
    struct al_metrics *metrics;          /* borrowed; may be NULL */
};

struct rl_tunnels;
struct rl_tstream;

/* What the caller (the agent side) asks for. Strings are copied. */
struct rl_treq {
    const char *tunnel, *server;
    const char *method; /* agent's method */
    const char *path;   /* ":path": "/mcp/<tunnel>/<server>[rest][?query]" as the agent sent it */
    const nghttp2_nv *headers; /* the agent's end-to-end headers, already stripped of
                                * Authorization, airlock-*, forwarding and hop-by-hop
                                * headers; lowercase names. The module adds :method,
                                * :scheme, :authority, :path, airlock-grant,
                                * airlock-principal, airlock-request-id. */
    size_t nheaders;
    const char *principal;
    const char *request_id; /* 1-64 chars of [A-Za-z0-9._-] */
    int end_stream;         /* 1: the request has no body (HEADERS with END_STREAM) */
    uint64_t pin_conn;      /* connection id to prefer (session), 0 = none */
};

struct rl_tstream_cbs {
    /* Response head from the gateway (:status and headers, lowercase names;
     * borrowed for the call). */
    void (*on_head)(struct rl_tstream *s, int status, const nghttp2_nv *nv, size_t n, void *user);
    /* Response body bytes (borrowed for the call). Call rl_tstream_consume()
     * when they have been delivered onward. */
    void (*on_data)(struct rl_tstream *s, const uint8_t *d, size_t n, void *user);
    /* Response complete (trailers, if any, are dropped). */
    void (*on_end)(struct rl_tstream *s, void *user);
    /* The stream failed: err AL_ERR_CLOSED (connection lost / reset by the
     * gateway), AL_ERR_TIMEOUT, AL_ERR_PROTO (or AL_ERR_NOMEM / AL_ERR_CRYPTO
     * when a replay could not be prepared). head_seen tells whether
     * on_head already ran (then the agent's response must be aborted, not
     * replaced). */
    void (*on_error)(struct rl_tstream *s, int err, int head_seen, void *user);
    /* The request body queue fell to its low-water mark. */
    void (*on_writable)(struct rl_tstream *s, void *user);
};

/* Listens for gateways. Returns 0, -errno or AL_ERR_INVAL / AL_ERR_NOMEM. */
int rl_tunnels_new(struct ev_loop *loop, const struct rl_tunnels_opts *o, struct rl_tunnels **out);
int rl_tunnels_port(const struct rl_tunnels *t);

/* 1 when tunnel is configured. */
int rl_tunnels_known(const struct rl_tunnels *t, const char *tunnel);

/* Opens a stream. Returns 0 (callbacks follow, never inside this call),
 * AL_ERR_NOTFOUND (tunnel not configured: 404), AL_ERR_CLOSED (no usable
 * connection serves tunnel/server now: 503), AL_ERR_CRYPTO (grant signing
 * failed), AL_ERR_INVAL (server or request id not of the documented form,
 * path not under /mcp/<tunnel>/<server>, principal empty, over 256 bytes or
 * holding control characters), AL_ERR_NOMEM. */
int rl_tstream_open(struct rl_tunnels *t, const struct rl_treq *r, const struct rl_tstream_cbs *cbs,
                    void *user, struct rl_tstream **out);

/* Request body (copied) and its end. Returns 0, AL_ERR_STATE, or
 * AL_ERR_TOOBIG when more than 1 MiB would be queued (nothing is queued
 * then; wait for on_writable). */
int rl_tstream_write(struct rl_tstream *s, const uint8_t *d, size_t n);
int rl_tstream_end(struct rl_tstream *s);
size_t rl_tstream_pending(const struct rl_tstream *s);
void rl_tstream_want_writable(struct rl_tstream *s, size_t low);

/* n response bytes passed on to the agent: reopens the receive window. */
void rl_tstream_consume(struct rl_tstream *s, size_t n);

/* Agent went away or the relay gives up: RST_STREAM CANCEL; no callbacks
 * afterwards; s is freed. */
void rl_tstream_cancel(struct rl_tstream *s);

/* Connection id the stream runs on (for session pinning), 0 before it has
 * one. */
uint64_t rl_tstream_conn(const struct rl_tstream *s);

/* Fills a TunnelStatus snapshot (strings and arrays allocated in arena a).
 * tunnel NULL or "" = all. Returns 0, AL_ERR_NOTFOUND (filter names no
 * configured tunnel) or AL_ERR_NOMEM. */
int rl_tunnels_status(struct rl_tunnels *t, const char *tunnel, struct al_arena *a,
                      Airlock__V1__GetTunnelStatusResponse *out);

/* SIGTERM: Acks carry relay_draining from now on, no new streams are opened
 * (rl_tstream_open returns AL_ERR_CLOSED), GOAWAY goes to every connection
 * and done runs once their streams have ended. */
void rl_tunnels_drain(struct rl_tunnels *t, void (*done)(void *user), void *user);

void rl_tunnels_free(struct rl_tunnels *t);

#endif
