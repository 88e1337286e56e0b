/*
 * relay_agent_util: the pure decisions of the relay's agent side, kept apart
 * from sockets so they are unit-tested on their own: the route in a request
 * target, which request and response headers cross the relay (tunnel.proto),
 * the browser Origin allow-list, request ids, and the JSON-RPC error replies
 * the relay makes itself. No state; every function works on the caller's
 * buffers.
 */
#ifndef RL_AGENT_UTIL_H
#define RL_AGENT_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "rlbuf.h"

#define RL_NAME_MAX       64  /* tunnel and server names: 1-64 chars of [A-Za-z0-9._-] */
#define RL_REQUEST_ID_LEN 22  /* 128 random bits, base64url without padding */
#define RL_ORIGIN_MAX     256 /* longest Origin value accepted */

/* A parsed agent route. */
struct rl_route {
    char tunnel[RL_NAME_MAX + 1];
    char server[RL_NAME_MAX + 1];
    char route[2 * RL_NAME_MAX + 2]; /* "<tunnel>/<server>" */
};

/* 1 when s[0..n) is a valid tunnel or server name: 1-64 characters of
 * [A-Za-z0-9._-], and not "." or "..". */
int rl_name_valid(const char *s, size_t n);

/* Parses an agent request target "/mcp/<tunnel>/<server>[/rest][?query]".
 * Every byte must be visible ASCII (0x21-0x7e); the rest of the path may
 * not contain "." or ".." segments (plain or percent-encoded), so it cannot
 * climb out of the route's upstream path. Returns 0, AL_ERR_NOTFOUND (not
 * an /mcp/<tunnel>/<server> target, or a bad name) or AL_ERR_INVAL (a valid
 * route with a malformed rest). */
int rl_route_parse(const char *target, size_t len, struct rl_route *out);

/* 1 when an agent request header (lowercase name) is never forwarded to a
 * gateway: Authorization, Proxy-*, airlock-*, Forwarded, X-Forwarded-*,
 * X-Real-IP, Via, hop-by-hop headers (Connection, Keep-Alive, TE,
 * Transfer-Encoding, Upgrade, HTTP2-Settings), Host (the relay sets
 * :authority), Expect. Pseudo-headers are not covered (callers handle them). */
int rl_req_header_dropped(const char *name, size_t n);

/* 1 when name (lowercase) is one of the comma-separated tokens of a
 * Connection header value (case-insensitive): such headers are hop-by-hop
 * too. */
int rl_hdr_token_listed(const char *list, size_t list_len, const char *name, size_t n);

/* 1 when a gateway response header (lowercase name) must not reach the
 * agent: airlock-* other than airlock-error, hop-by-hop headers, Trailer,
 * Alt-Svc, X-Request-Id (the relay sets its own), Access-Control-* (the
 * relay answers CORS itself) and pseudo-headers. */
int rl_resp_header_dropped(const char *name, size_t n);

/* 1 when origin (n bytes) equals one of the NULL-terminated allowed values,
 * compared ASCII case-insensitively; 0 otherwise (also for an empty list). */
int rl_origin_allowed(const char *const *allowed, const char *origin, size_t n);

/* Config check of one allowed_origins entry: "http(s)://host[:port]" with no
 * path, query or trailing slash. Returns 0 or AL_ERR_INVAL with a reason. */
int rl_origin_valid(const char *origin, const char **why);

/* Writes a fresh request id (RL_REQUEST_ID_LEN characters of [A-Za-z0-9_-]
 * and a NUL). Returns 0 or AL_ERR_CRYPTO. */
int rl_request_id(char out[RL_REQUEST_ID_LEN + 1]);

/* "1xx" .. "5xx", or "other". Static text. */
const char *rl_status_class(int status);

/* Parses a Content-Length value (digits only, no sign, at most 18 digits).
 * Returns 0 or AL_ERR_INVAL. */
int rl_parse_content_length(const char *v, size_t n, int64_t *out);

/* Appends the JSON-RPC error body of a relay-made error to out:
 * {"jsonrpc":"2.0","id":null,"error":{"code":code,"message":message,
 *  "data":{"airlock_error":reason}}}. message is JSON-escaped; reason is an
 * ErrorReason name (upper-case letters and '_'). Returns 0, AL_ERR_INVAL or
 * an rl_buf_append() error. */
int rl_error_body(int code, const char *message, const char *reason, struct rl_buf *out);

#endif
