/*
 * gw_http: the gateway's pure HTTP helpers: splitting an agent stream's
 * :path into route and rest, refusing paths that could leave the route's
 * base path upstream, building the upstream request target, which headers
 * never cross the gateway in either direction, and the JSON-RPC error
 * bodies with data.airlock_error (tunnel.proto, "Errors produced by the
 * gateway or relay"). No I/O, no allocation except into caller buffers.
 */
#ifndef GW_HTTP_H
#define GW_HTTP_H

#include <stddef.h>

#include "mcp.h"
#include "rlbuf.h"

#define GW_TARGET_MAX 8192 /* longest upstream request target */

/* Parts of "/mcp/<tunnel>/<server>[rest]" (pointers into the path). rest
 * is "", "/..." or "?..." (the agent's remaining path and query). */
struct gw_path {
    const char *tunnel, *server, *rest;
    size_t tunnel_len, server_len, rest_len;
};

/* Splits path[0..n). Returns 0, AL_ERR_NOTFOUND (not /mcp/<t>/<s>..., or a
 * name outside [A-Za-z0-9._-]{1,64}) or AL_ERR_INVAL (rest unsafe: see
 * gw_rest_safe). */
int gw_path_split(const char *path, size_t n, struct gw_path *out);

/* 1 when rest may be appended to an upstream base path: printable ASCII
 * only (no space, no control, no byte >= 0x80), no backslash, no fragment,
 * and no "." or ".." segment in the path part, also percent-encoded
 * (%2e / %2E), so the request can never climb out of the base path. */
int gw_rest_safe(const char *rest, size_t n);

/* Writes base + rest into out (size outn): "/mcp" + "/x?q" = "/mcp/x?q";
 * a base of "/" or "" does not double the slash; an empty rest gives the
 * base (or "/"). Returns the length, or AL_ERR_TOOBIG. */
int gw_target(const char *base, const char *rest, size_t rest_len, char *out, size_t outn);

/* 1 when a request header (lowercase name) from the relay must not reach the
 * upstream: pseudo-headers, hop-by-hop and connection-specific fields, Host,
 * Content-Length, Authorization, Cookie, Accept-Encoding, Expect, airlock-*,
 * Forwarded, X-Forwarded-*, X-Real-IP, Via. The injected header is checked
 * by the caller. */
int gw_req_header_dropped(const char *name, size_t n);

/* 1 when a request header (lowercase name) may appear at most once: the
 * gateway reads one instance of it (Mcp-Session-Id, Mcp-Method, Mcp-Name,
 * Mcp-Protocol-Version, Content-Type, Content-Length, Last-Event-ID and the
 * relay's airlock-grant, airlock-principal, airlock-request-id) and an
 * upstream that reads another (the last one, or all joined with ", ") would
 * act on a value the gateway never checked. A request repeating one is
 * refused (400). */
int gw_req_header_single(const char *name, size_t n);

/* 1 when an upstream response header (lowercase name) must not reach the
 * relay: hop-by-hop and connection-specific fields, Content-Length (the body
 * is always rewritten by the scrubber), airlock-* (only the gateway speaks
 * those), Alt-Svc. Values containing a secret are checked by the caller. */
int gw_resp_header_dropped(const char *name, size_t n);

/* 1 when s[0..n) is 1-64 characters of [A-Za-z0-9._-] (airlock-request-id). */
int gw_request_id_valid(const char *s, size_t n);

/* 1 when s[0..n) is a valid HTTP field name made of lowercase token
 * characters (HTTP/2 rule). */
int gw_field_name_valid(const char *s, size_t n);

/* Short name of an airlock.v1.ErrorReason ("POLICY_DENIED"), or "INTERNAL"
 * for an unknown value. Static string. */
const char *gw_reason_name(int reason);

/* HTTP status and JSON-RPC code of a gateway-made error by reason. */
struct gw_error {
    int status; /* 400, 403, 404, 413, 502, 503, 504 ... */
    int code;   /* JSON-RPC error code */
    int reason; /* airlock.v1.ErrorReason */
};

/* Appends the JSON-RPC error body {"jsonrpc":"2.0","id":<m's id or null>,
 * "error":{"code":..,"message":..,"data":{"airlock_error":"<name>"}}} for
 * e and message (JSON-escaped; must not carry secrets). Returns 0 or an
 * rl_buf_append() error. */
int gw_error_body(const struct rl_mcp_msg *m, const struct gw_error *e, const char *message,
                  struct rl_buf *out);

#endif
