/*
 * al_ops: the plain HTTP/1.1 ops port every Airlock process serves, for
 * kubelet probes and Prometheus scrapes (neither can present a client
 * certificate to the mTLS gRPC port).
 *
 *   GET /metrics   Prometheus text 0.0.4 from the registry given to al_ops_new()
 *   GET /healthz   200 "ok" whenever the event loop gets to run
 *   GET /readyz    200 "ok" when the readiness callback says so (or none is
 *                  set), else 503 "not ready: <reason>"
 *   more routes with al_ops_route()
 *
 * Only GET and HEAD are served. Hard limits per peer: AL_OPS_MAX_HEAD bytes of
 * request line and headers (else 431), no request body (413), one request at
 * a time (pipelined requests wait, unread, until the response is written),
 * AL_OPS_MAX_CONNS connections (the next one gets a 503 and is closed), the
 * head must arrive within the header timeout of its first byte (5 s) and an
 * idle connection is closed after the idle timeout (10 s). Unknown path 404,
 * other methods 405, malformed requests 400; after an error the connection is
 * closed. The gauge airlock_ops_connections counts open connections.
 *
 * Lifecycle: al_ops_new() starts listening on the loop right away;
 * al_ops_free() closes the listener and every connection. All calls, and all
 * callbacks, happen on the loop's thread.
 */
#ifndef AL_OPS_H
#define AL_OPS_H

#include <stddef.h>

#include <ev.h>

#define AL_OPS_MAX_HEAD     8192 /* request line + headers */
#define AL_OPS_MAX_CONNS    64
#define AL_OPS_IDLE_TIMEOUT 10.0 /* seconds */
#define AL_OPS_HEAD_TIMEOUT 5.0  /* seconds from a request's first byte to its end of headers */
#define AL_OPS_MAX_ROUTES   32
#define AL_OPS_MAX_RESPONSE (64u << 20) /* a handler body over this becomes a 500 */

struct al_ops;
struct al_metrics;

/* What a route handler fills in. */
struct al_ops_reply {
    int status;               /* preset to 200 */
    const char *content_type; /* static string; preset to "text/plain; charset=utf-8" */
    char *body;               /* heap, taken by the server (free()d after sending); may be NULL */
    size_t len;               /* bytes of body */
};

/*
 * A route handler. path and query (text after '?', "" if none) are borrowed
 * for the call. Called for GET and HEAD alike (HEAD gets the headers only).
 * Returns 0, or a negative code to answer 500. Either way the server takes
 * rep->body.
 */
typedef int al_ops_handler_cb(void *user, const char *path, const char *query,
                              struct al_ops_reply *rep);

/*
 * Readiness: returns 1 when ready; 0 (or negative) when not, after writing a
 * one-line reason into why (whylen bytes, NUL-terminated).
 */
typedef int al_ops_ready_cb(void *user, char *why, size_t whylen);

/*
 * Starts an ops server listening on listen ("host:port", see al_addr.h) on
 * loop. metrics (may be NULL: then /metrics is 404) and loop are borrowed and
 * must outlive the server. On success *out is owned by the caller
 * (al_ops_free). Returns 0, AL_ERR_INVAL (bad address), AL_ERR_NOMEM or
 * -errno from socket/bind/listen.
 */
int al_ops_new(struct ev_loop *loop, const char *listen, struct al_metrics *metrics,
               struct al_ops **out);

/* Closes the listener and all connections and frees ops. NULL is fine. */
void al_ops_free(struct al_ops *ops);

/* Sets (or with cb NULL clears) the readiness callback; user is borrowed. */
void al_ops_set_ready_cb(struct al_ops *ops, al_ops_ready_cb *cb, void *user);

/*
 * Adds or replaces the handler for an exact path ("/debug/vars"; path is
 * copied, user borrowed). The built-in routes can be replaced too.
 * Returns 0, AL_ERR_INVAL (path not starting with '/'), AL_ERR_TOOBIG
 * (AL_OPS_MAX_ROUTES reached) or AL_ERR_NOMEM.
 */
int al_ops_route(struct al_ops *ops, const char *path, al_ops_handler_cb *handler, void *user);

/* Overrides the idle and header timeouts (seconds, > 0); for tests. */
void al_ops_set_timeouts(struct al_ops *ops, double idle, double head);

/* The port actually bound (useful after listening on port 0), or -errno. */
int al_ops_port(struct al_ops *ops);

/* Number of open connections. */
size_t al_ops_connections(const struct al_ops *ops);

#endif
