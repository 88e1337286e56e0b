/*
 * gw_config: airlock-gateway's configuration beyond the common service keys,
 * its routes and their tool policies.
 *
 *   gateway_id            name sent in TunnelRegistration (default: host name)
 *   relays                relay tunnel addresses "host:port"; each name is
 *                         resolved to ALL its addresses, each address dialled
 *   relay_identities      globs over the relay certificates' SPIFFE ids
 *   connections           connections per relay address (at least 2 in all)
 *   heartbeat_interval    used when the relay's Open asks for none (s)
 *   ping_interval, ping_timeout    HTTP/2 PING keepalive (s)
 *   reconnect_min, reconnect_max   jittered exponential redial backoff (s)
 *   resolve_interval      relay names are re-resolved this often to find new
 *                         replicas (and on every reconnect round) (s)
 *   drain_grace           SIGTERM: how long open streams may finish (s)
 *   max_concurrent_streams         agent streams per connection
 *   max_body              POST body buffered for MCP inspection (413 beyond)
 *   max_buffered          bodies buffered at once, all streams (503 beyond)
 *   relay_keys = ( { issuer; public_key_file; key_id; } )  grant keys trusted
 *   credstore.addr, credstore.peer, credstore.timeout      CredentialResolver
 *   cache_ttl             released values kept this long at most (0 = never)
 *   audit.batch_max, audit.flush_interval, audit.max_pending
 *   tunnels = ( { name; servers = ( { name; url; ca_file; allow; credential;
 *                 timeout; policy = ( { principals; tools; resources;
 *                 prompts; } ); } ); } )
 *
 * Routes: every (tunnel, server) pair is one route "<tunnel>/<server>" with
 * its upstream URL, the credential injected, the address ranges allowed in
 * spite of the upstream deny list and the policy. Policy: the first entry
 * whose principals (al_glob) match the principal applies; a principal that
 * matches none may use no tool, resource or prompt (lists still work and
 * come back empty). Tools and prompts match by name, resources by URI; a
 * resource URI with a "." or ".." path segment (also percent-encoded), a
 * backslash or an encoded separator is never allowed (a server normalizing
 * it could serve a resource outside the glob it matched).
 *
 * Lifecycle: gw_config_fields() is the schema for al_service_load_config();
 * gw_config_check() validates what the schema cannot; gw_keyring_build()
 * loads the relay keys. The config is immutable afterwards.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stddef.h>

#include "al_config.h"
#include "al_service.h"
#include "mcp.h"
#include "upstream.h"

#define GW_NAME_MAX  64  /* tunnel and server names: [A-Za-z0-9._-]{1,64} */
#define GW_ROUTE_MAX 130 /* "<tunnel>/<server>" plus NUL */
#define GW_CRED_MAX  128 /* credential names (credstore rules) */

struct al_grant_keyring;

/* One entry of a route's policy list. */
struct gw_policy {
    char **principals, **tools, **resources, **prompts;
    size_t n_principals, n_tools, n_resources, n_prompts;
};

/* One route: a server of a tunnel. */
struct gw_route {
    char *tunnel, *server;
    char name[GW_ROUTE_MAX]; /* "<tunnel>/<server>" */
    char *url;
    char *ca_file; /* NULL = the system store */
    char *credential;
    struct rl_cidr allow[RL_UPSTREAM_MAX_ALLOW];
    size_t nallow;
    double timeout_s; /* response head timeout */
    struct gw_policy *policy;
    size_t npolicy;
};

struct gw_routes {
    struct gw_route *v;
    size_t n;
};

struct gw_relay_key {
    char *issuer, *public_key_file, *key_id;
};

struct gw_relay_keys {
    struct gw_relay_key *v;
    size_t n;
};

struct gw_config {
    struct al_service_config common;
    char *gateway_id;
    char **relays;
    char **relay_identities;
    int connections;
    double heartbeat_s, ping_interval_s, ping_timeout_s;
    double reconnect_min_s, reconnect_max_s, resolve_interval_s, drain_grace_s;
    int max_concurrent_streams;
    size_t max_body, max_buffered;
    struct gw_relay_keys relay_keys;
    char *credstore_addr, *credstore_peer;
    double credstore_timeout_s;
    double cache_ttl_s;
    int audit_batch_max;
    double audit_flush_s;
    int audit_max_pending;
    struct gw_routes routes;
};

/* The gateway-specific schema (offsets into struct gw_config). */
const struct al_cfg_field *gw_config_fields(size_t *n);

/* Checks what the schema cannot express (relay addresses, ranges between
 * keys, at least one route and one relay key). Writes one line naming the
 * key into err. Returns 0 or AL_ERR_CONFIG. */
int gw_config_check(const struct gw_config *c, char *err, size_t errlen);

/* Loads relay_keys into a new keyring. Returns 0, AL_ERR_CONFIG (err names
 * the entry and why) or AL_ERR_NOMEM. */
int gw_keyring_build(const struct gw_config *c, struct al_grant_keyring **out, char *err,
                     size_t errlen);

/* 1 when s is 1..GW_NAME_MAX characters of [A-Za-z0-9._-]. */
int gw_name_valid(const char *s, size_t n);

/* The route named tunnel/server (lengths given; not NUL-terminated), or NULL. */
const struct gw_route *gw_route_find(const struct gw_routes *r, const char *tunnel, size_t tl,
                                     const char *server, size_t sl);

/* The policy entry that applies to principal, or NULL (nothing allowed). */
const struct gw_policy *gw_policy_for(const struct gw_route *r, const char *principal);

/* 1 when policy p (may be NULL) allows the item; an rl_mcp_allow_cb with
 * user = the policy. */
int gw_policy_allows(void *p, enum rl_mcp_kind kind, const char *name);

#endif
