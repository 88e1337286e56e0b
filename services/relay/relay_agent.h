/*
 * relay_agent: the relay's agent side. Agents speak MCP Streamable HTTP
 * (HTTP/1.1 or HTTP/2 by ALPN; plaintext HTTP/1.1 and h2c only in insecure
 * mode) to "/mcp/<tunnel>/<server>[/rest][?query]"; each request is checked
 * (route, Origin allow-list, API key, MCP session owner), stripped of the
 * headers tunnel.proto forbids, and streamed down a gateway connection with
 * rl_tstream_open(), with flow control end to end in both directions.
 *
 * Requests the relay refuses get a JSON-RPC error body, content-type
 * application/json and an `airlock-error` header naming the ErrorReason:
 *   404 NOT_FOUND      path is not /mcp/<tunnel>/<server>, unknown tunnel, or a
 *                      server no registered gateway of the tunnel offers (-32004)
 *   400 INVALID_FIELD  malformed target or duplicated single-valued header (-32600)
 *   401 UNAUTHENTICATED  missing, malformed, unknown, expired or revoked key
 *                      (-32001, with WWW-Authenticate: Bearer)
 *   403 POLICY_DENIED  key not valid for the route, Origin not allowed, MCP
 *                      session of another principal (-32001)
 *   405 UNSUPPORTED    a method other than POST, GET, DELETE, OPTIONS (-32600)
 *   408 INVALID_FIELD  HTTP/2 request body stalled past body_timeout (-32600)
 *   413 TOO_LARGE      body over max_body (-32600); 431 over max_head (HTTP/2)
 *   500 INTERNAL       grant signing or memory failure (-32603)
 *   502 UPSTREAM_FAILED  the gateway stream failed before its response head (-32002)
 *   503 NO_GATEWAY / DRAINING  no gateway registered for the tunnel, or those
 *                      offering the server are busy or draining; relay draining (-32003)
 *   504 UPSTREAM_TIMEOUT the gateway stream timed out before its head (-32002)
 * A gateway stream that fails after the response head was passed on aborts
 * the agent's response (HTTP/2 RST_STREAM INTERNAL_ERROR, HTTP/1.1 close).
 * Every response carries x-request-id (the relay's request id, also sent to
 * the gateway as airlock-request-id); no airlock-* header but airlock-error
 * ever reaches an agent. CORS: a preflight (OPTIONS) is answered for an
 * allowed Origin only (else 403); responses to allowed Origins carry
 * Access-Control-Allow-Origin.
 *
 * Lifecycle: rl_agents_new() (listening at once) -> rl_agents_reload_keys()
 * on SIGHUP -> rl_agents_drain() on SIGTERM -> rl_agents_free().
 */
#ifndef RL_AGENT_H
#define RL_AGENT_H

#include <stddef.h>

#include <ev.h>

struct al_metrics;
struct al_tls;
struct rl_keys;
struct rl_tunnels;

struct rl_agents_opts {
    const char *listen;                 /* "host:port" */
    struct al_tls *tls;                 /* borrowed; NULL = plaintext (agents.insecure) */
    struct rl_tunnels *tunnels;         /* borrowed */
    const char *keys_file;              /* copied; reloaded when it changes and on reload_keys */
    struct rl_keys *keys;               /* taken: the keys already loaded from keys_file */
    const char *const *allowed_origins; /* NULL-terminated, copied; NULL = none */
    size_t max_head, max_body;          /* 0 = 16 KiB, 4 MiB */
    double header_timeout_s, body_timeout_s, idle_timeout_s; /* 0 = 10, 30, 60 */
    size_t max_connections;                                  /* 0 = 10000 */
    size_t max_streams;         /* per HTTP/2 agent connection; 0 = 1000 */
    size_t max_sessions;        /* 0 = 100000 */
    double session_idle_s;      /* 0 = 3600 */
    struct al_metrics *metrics; /* borrowed; may be NULL */
};

struct rl_agents;

/* Starts listening for agents. Takes opts->keys in every case. Returns 0,
 * -errno (listen failed), AL_ERR_INVAL or AL_ERR_NOMEM. */
int rl_agents_new(struct ev_loop *loop, const struct rl_agents_opts *o, struct rl_agents **out);

/* Bound port of the agent listener. */
int rl_agents_port(const struct rl_agents *a);

/* Re-reads the keys file now (SIGHUP). A file that does not load keeps the
 * keys in effect and logs why. */
void rl_agents_reload_keys(struct rl_agents *a);

/* Open agent connections (both protocols). */
size_t rl_agents_connections(const struct rl_agents *a);

/* SIGTERM: stops accepting agents, answers new requests on open connections
 * with 503 DRAINING, closes HTTP/1.1 connections after their current
 * response and sends GOAWAY on HTTP/2 ones; done runs once every agent
 * connection has closed, or after timeout_s, when the remaining ones are
 * closed (their gateway streams cancelled). */
void rl_agents_drain(struct rl_agents *a, double timeout_s, void (*done)(void *user), void *user);

/* Closes every connection and frees. NULL is fine. */
void rl_agents_free(struct rl_agents *a);

#endif
