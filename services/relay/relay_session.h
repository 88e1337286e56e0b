/*
 * relay_session: the relay's table of MCP sessions (protocol revision
 * 2025-11-25), so a session stays with the principal that created it and,
 * where possible, on the gateway connection that served it.
 *
 * When a gateway's 2xx response creates a session (it carries an
 * Mcp-Session-Id the request did not name), the relay records
 * (route, session id) -> (principal, gateway connection id). A later request
 * naming that session on that route is refused if another principal sends
 * it, and is pinned to the recorded connection otherwise. A DELETE answered
 * 2xx removes the entry. Entries idle longer than idle_ms expire; when the
 * table is full the least recently used entry goes. Session ids are kept as
 * given (visible ASCII, at most RL_SESSION_ID_MAX bytes). Unknown session
 * ids are not an error: another relay replica may have created them.
 *
 * Lookups hash with a per-table random seed; insertions only come from
 * gateway responses. One thread.
 *
 * Lifecycle: rl_sessions_new() -> get/put/del... -> rl_sessions_free().
 */
#ifndef RL_SESSION_H
#define RL_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "agentkeys.h"

#define RL_SESSION_ID_MAX 256

struct rl_sessions;

struct rl_session_info {
    char principal[RL_PRINCIPAL_MAX + 1];
    uint64_t conn; /* gateway connection id (rl_tstream_conn), 0 = none */
};

/* A table of at most cap entries (0 = 100000) that expire after idle_ms
 * without use (0 = one hour). Returns 0 or AL_ERR_NOMEM. */
int rl_sessions_new(size_t cap, int64_t idle_ms, struct rl_sessions **out);
void rl_sessions_free(struct rl_sessions *s);

/* 1 when id[0..n) is a session id the table can hold: 1-256 bytes of
 * visible ASCII (0x21-0x7e). */
int rl_session_id_valid(const char *id, size_t n);

/* Finds (route, id) at now_ms. Returns 1 (found: *out filled, the entry's
 * idle clock restarted) or 0 (unknown or expired). */
int rl_sessions_get(struct rl_sessions *s, const char *route, const char *id, size_t n,
                    int64_t now_ms, struct rl_session_info *out);

/* Records or replaces (route, id) -> (principal, conn) at now_ms (all
 * copied). Returns 0, AL_ERR_INVAL (bad id, route or principal) or
 * AL_ERR_NOMEM. */
int rl_sessions_put(struct rl_sessions *s, const char *route, const char *id, size_t n,
                    const char *principal, uint64_t conn, int64_t now_ms);

/* Removes (route, id). Returns 0 or AL_ERR_NOTFOUND. */
int rl_sessions_del(struct rl_sessions *s, const char *route, const char *id, size_t n);

/* Drops entries idle for idle_ms or longer at now_ms (get and put do this
 * too). */
void rl_sessions_expire(struct rl_sessions *s, int64_t now_ms);

size_t rl_sessions_count(const struct rl_sessions *s);

#endif
