/*
 * gw_session: which principal created each MCP session (2025-11-25
 * Mcp-Session-Id), so a session id seen by one principal can never be used
 * by another through this gateway (defense in depth: the relay binds
 * sessions too).
 *
 * A binding is keyed by route and session id; only a SHA-256 digest of the
 * pair is kept (session ids are bearer-like handles). The table is bounded:
 * the least recently used binding goes when it is full, and bindings idle
 * longer than idle_s expire. Times are seconds on any monotonic clock the
 * caller chooses (tests pass a fake one).
 *
 * Lifecycle: gw_sessions_new() -> check/bind/remove... -> gw_sessions_free().
 */
#ifndef GW_SESSION_H
#define GW_SESSION_H

#include <stddef.h>

#define GW_SESSION_ID_MAX 1024 /* longest Mcp-Session-Id accepted */

struct gw_sessions;

/* cap: bindings kept (>= 1); idle_s: expiry of an unused binding. Returns
 * 0 or AL_ERR_NOMEM / AL_ERR_INVAL. */
int gw_sessions_new(size_t cap, double idle_s, struct gw_sessions **out);
void gw_sessions_free(struct gw_sessions *s);

/* Is session sid (n <= GW_SESSION_ID_MAX bytes) of route usable by principal? Returns 0 (bound to
 * this principal, or unknown) or AL_ERR_AUTH (bound to another principal).
 * A hit refreshes the binding. */
int gw_sessions_check(struct gw_sessions *s, const char *route, const char *sid, size_t n,
                      const char *principal, double now);

/* Binds sid to principal (a response carried it). An existing binding to
 * another principal is left alone (the first one wins) and AL_ERR_AUTH is
 * returned; else 0 or AL_ERR_NOMEM. */
int gw_sessions_bind(struct gw_sessions *s, const char *route, const char *sid, size_t n,
                     const char *principal, double now);

/* Forgets a binding (the session was deleted). */
void gw_sessions_remove(struct gw_sessions *s, const char *route, const char *sid, size_t n);

/* Bindings held. */
size_t gw_sessions_count(const struct gw_sessions *s);

#endif
