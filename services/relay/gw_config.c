/*
 * gw_config: schema of airlock-gateway's own keys, the relay_keys and
 * tunnels lists (custom libconfig parsers, so every entry is checked with its
 * file:line), route lookup and policy matching; see gw_config.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "al_glob.h"
#include "al_grant.h"
#include "al_pki.h"
#include "al_resolve.h"
#include "gw_config.h"

#define GC(member, type) AL_CFG_OFF(struct gw_config, member, type)
#define NKEYS(a)         (sizeof(a) / sizeof((a)[0]))

/* ---------- small parsing helpers ---------- */

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Rejects members of group g not named in known[0..n). */
static int only_keys(const config_setting_t *g, const char *const *known, size_t n,
                     const char *what, char *err, size_t errlen)
{
    for (int j = 0; j < config_setting_length(g); j++) {
        const config_setting_t *m = config_setting_get_elem(g, (unsigned)j);
        const char *name = config_setting_name(m);
        size_t k = 0;
        while (k < n && strcmp(known[k], name) != 0)
            k++;
        if (k == n)
            return al_config_errf(err, errlen, m, "unknown key in %s", what);
    }
    return 0;
}

static int get_string(const config_setting_t *g, const char *key, int required, char **out,
                      char *err, size_t errlen)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    const char *v;

    if (!s) {
        if (required)
            return al_config_errf(err, errlen, g, "entry needs %s", key);
        return 0;
    }
    v = config_setting_get_string(s);
    if (!v)
        return al_config_errf(err, errlen, s, "must be a string");
    if (!*v) {
        if (required)
            return al_config_errf(err, errlen, s, "must not be empty");
        return 0;
    }
    *out = strdup(v);
    return *out ? 0 : AL_ERR_NOMEM;
}

/* A list of non-empty strings of at most max bytes; absent = empty. */
static int get_list(const config_setting_t *g, const char *key, size_t max, char ***out, size_t *n,
                    char *err, size_t errlen)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    int len;

    *out = NULL;
    *n = 0;
    if (!s)
        return 0;
    if (!config_setting_is_aggregate(s) || config_setting_is_group(s))
        return al_config_errf(err, errlen, s, "must be a list of strings");
    len = config_setting_length(s);
    *out = calloc((size_t)len + 1, sizeof(char *));
    if (!*out)
        return AL_ERR_NOMEM;
    for (int i = 0; i < len; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *v = config_setting_get_string(e);
        if (!v || !*v || strlen(v) > max)
            return al_config_errf(err, errlen, e, "must be a non-empty string of at most %zu bytes",
                                  max);
        (*out)[i] = strdup(v);
        if (!(*out)[i])
            return AL_ERR_NOMEM;
        (*n)++;
    }
    return 0;
}

static int get_number(const config_setting_t *g, const char *key, double def, double min,
                      double max, double *out, char *err, size_t errlen)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    int t;

    *out = def;
    if (!s)
        return 0;
    t = config_setting_type(s);
    if (t == CONFIG_TYPE_FLOAT)
        *out = config_setting_get_float(s);
    else if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64)
        *out = (double)config_setting_get_int64(s);
    else
        return al_config_errf(err, errlen, s, "must be a number");
    if (!(*out >= min && *out <= max))
        return al_config_errf(err, errlen, s, "must be between %g and %g", min, max);
    return 0;
}

int gw_name_valid(const char *s, size_t n)
{
    if (n == 0 || n > GW_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* credstore's credential names: 1-128 of [A-Za-z0-9._-] in "/"-separated
 * non-empty segments. */
static int credential_valid(const char *s)
{
    size_t n = strlen(s), seg = 0;

    if (n == 0 || n > GW_CRED_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '/') {
            if (seg == 0)
                return 0;
            seg = 0;
            continue;
        }
        if (!gw_name_valid(s + i, 1))
            return 0;
        seg++;
    }
    return seg > 0;
}

/* A light look at the URL; rl_upstream_new() parses it fully at start. */
static int url_plausible(const char *u)
{
    const char *h;

    if (strncmp(u, "http://", 7) == 0)
        h = u + 7;
    else if (strncmp(u, "https://", 8) == 0)
        h = u + 8;
    else
        return 0;
    if (!*h || *h == '/' || strpbrk(u, " \t\r\n#?@\\"))
        return 0;
    return 1;
}

/* ---------- relay_keys ---------- */

static void relay_keys_free(void *field)
{
    struct gw_relay_keys *k = field;

    for (size_t i = 0; i < k->n; i++) {
        free(k->v[i].issuer);
        free(k->v[i].public_key_file);
        free(k->v[i].key_id);
    }
    free(k->v);
    k->v = NULL;
    k->n = 0;
}

static int relay_issuer_valid(const char *s)
{
    static const char prefix[] = "spiffe://airlock/relay/";
    char role[32], name[128];

    if (strcmp(s, "spiffe://airlock/relay/*") == 0)
        return 1;
    return strncmp(s, prefix, sizeof(prefix) - 1) == 0 &&
           al_pki_parse_spiffe(s, role, sizeof(role), name, sizeof(name)) == 0;
}

static int parse_relay_keys(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    static const char *const known[] = {"issuer", "public_key_file", "key_id"};
    struct gw_relay_keys *k = field;
    int len, rc;

    if (!config_setting_is_list(s))
        return al_config_errf(err, errlen, s, "must be a list of groups ( { ... }, ... )");
    len = config_setting_length(s);
    k->v = calloc((size_t)len + 1, sizeof(*k->v));
    if (!k->v)
        return AL_ERR_NOMEM;
    for (int i = 0; i < len; i++) {
        const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
        struct gw_relay_key *e = &k->v[i];
        if (!config_setting_is_group(g))
            return al_config_errf(err, errlen, g, "each relay key must be a group { ... }");
        k->n++;
        if ((rc = only_keys(g, known, NKEYS(known), "a relay_keys entry", err, errlen)) < 0 ||
            (rc = get_string(g, "issuer", 1, &e->issuer, err, errlen)) < 0 ||
            (rc = get_string(g, "public_key_file", 1, &e->public_key_file, err, errlen)) < 0 ||
            (rc = get_string(g, "key_id", 0, &e->key_id, err, errlen)) < 0)
            return rc;
        if (!relay_issuer_valid(e->issuer))
            return al_config_errf(err, errlen, config_setting_get_member(g, "issuer"),
                                  "must be a relay SPIFFE id spiffe://airlock/relay/NAME or "
                                  "spiffe://airlock/relay/*");
    }
    return 0;
}

/* ---------- tunnels ---------- */

static void policy_free(struct gw_policy *p)
{
    free_list(p->principals, p->n_principals);
    free_list(p->tools, p->n_tools);
    free_list(p->resources, p->n_resources);
    free_list(p->prompts, p->n_prompts);
}

static void routes_free(void *field)
{
    struct gw_routes *r = field;

    for (size_t i = 0; i < r->n; i++) {
        struct gw_route *x = &r->v[i];
        free(x->tunnel);
        free(x->server);
        free(x->url);
        free(x->ca_file);
        free(x->credential);
        for (size_t j = 0; j < x->npolicy; j++)
            policy_free(&x->policy[j]);
        free(x->policy);
    }
    free(r->v);
    r->v = NULL;
    r->n = 0;
}

static int parse_policy(const config_setting_t *g, struct gw_route *x, char *err, size_t errlen)
{
    static const char *const known[] = {"principals", "tools", "resources", "prompts"};
    const config_setting_t *s = config_setting_get_member(g, "policy");
    int len, rc;

    if (!s)
        return 0; /* no entry: nobody may use any item */
    if (!config_setting_is_list(s))
        return al_config_errf(err, errlen, s, "must be a list of groups ( { ... }, ... )");
    len = config_setting_length(s);
    x->policy = calloc((size_t)len + 1, sizeof(*x->policy));
    if (!x->policy)
        return AL_ERR_NOMEM;
    for (int i = 0; i < len; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        struct gw_policy *p = &x->policy[i];
        if (!config_setting_is_group(e))
            return al_config_errf(err, errlen, e, "each policy entry must be a group { ... }");
        x->npolicy++;
        if ((rc = only_keys(e, known, NKEYS(known), "a policy entry", err, errlen)) < 0)
            return rc;
        if (!config_setting_get_member(e, "principals"))
            return al_config_errf(err, errlen, e, "policy entry needs principals");
        if ((rc = get_list(e, "principals", 128, &p->principals, &p->n_principals, err, errlen)) <
                0 ||
            (rc = get_list(e, "tools", AL_GLOB_MAX, &p->tools, &p->n_tools, err, errlen)) < 0 ||
            (rc = get_list(e, "resources", AL_GLOB_MAX, &p->resources, &p->n_resources, err,
                           errlen)) < 0 ||
            (rc = get_list(e, "prompts", AL_GLOB_MAX, &p->prompts, &p->n_prompts, err, errlen)) < 0)
            return rc;
    }
    return 0;
}

static int parse_allow(const config_setting_t *g, struct gw_route *x, char *err, size_t errlen)
{
    char **v = NULL;
    size_t n = 0;
    int rc = get_list(g, "allow", 64, &v, &n, err, errlen);

    if (rc == 0 && n > RL_UPSTREAM_MAX_ALLOW)
        rc = al_config_errf(err, errlen, config_setting_get_member(g, "allow"), "at most %d ranges",
                            RL_UPSTREAM_MAX_ALLOW);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (rl_cidr_parse(v[i], &x->allow[i]) < 0)
            rc = al_config_errf(
                err, errlen,
                config_setting_get_elem(config_setting_get_member(g, "allow"), (unsigned)i),
                "must be an address range such as \"10.1.2.0/24\" or \"::1/128\"");
        else
            x->nallow++;
    }
    free_list(v, n);
    return rc;
}

static int parse_server(const config_setting_t *g, const char *tunnel, struct gw_route *x,
                        char *err, size_t errlen)
{
    static const char *const known[] = {"name",       "url",     "ca_file", "allow",
                                        "credential", "timeout", "policy"};
    const config_setting_t *m;
    int rc;

    if (!config_setting_is_group(g))
        return al_config_errf(err, errlen, g, "each server must be a group { ... }");
    if ((rc = only_keys(g, known, NKEYS(known), "a server entry", err, errlen)) < 0 ||
        (rc = get_string(g, "name", 1, &x->server, err, errlen)) < 0)
        return rc;
    x->tunnel = strdup(tunnel);
    if (!x->tunnel)
        return AL_ERR_NOMEM;
    m = config_setting_get_member(g, "name");
    if (!gw_name_valid(x->server, strlen(x->server)))
        return al_config_errf(err, errlen, m, "must be 1-64 characters of [A-Za-z0-9._-]");
    snprintf(x->name, sizeof(x->name), "%s/%s", tunnel, x->server);
    if ((rc = get_string(g, "url", 1, &x->url, err, errlen)) < 0)
        return rc;
    if (!url_plausible(x->url))
        return al_config_errf(err, errlen, config_setting_get_member(g, "url"),
                              "must be http://host[:port][/path] or https://...");
    if ((rc = get_string(g, "ca_file", 0, &x->ca_file, err, errlen)) < 0 ||
        (rc = get_string(g, "credential", 1, &x->credential, err, errlen)) < 0)
        return rc;
    if (!credential_valid(x->credential))
        return al_config_errf(err, errlen, config_setting_get_member(g, "credential"),
                              "must be a credential name (1-128 characters of [A-Za-z0-9._-] "
                              "in /-separated segments)");
    if ((rc = get_number(g, "timeout", 300, 0.1, 86400, &x->timeout_s, err, errlen)) < 0 ||
        (rc = parse_allow(g, x, err, errlen)) < 0)
        return rc;
    return parse_policy(g, x, err, errlen);
}

static int route_dup(const struct gw_routes *r, const struct gw_route *x)
{
    for (size_t i = 0; i < r->n; i++)
        if (&r->v[i] != x && strcmp(r->v[i].name, x->name) == 0)
            return 1;
    return 0;
}

static int parse_tunnel(const config_setting_t *t, struct gw_routes *r, size_t cap, char *err,
                        size_t errlen)
{
    static const char *const known[] = {"name", "servers"};
    const config_setting_t *sv;
    char *name = NULL;
    int rc;

    if (!config_setting_is_group(t))
        return al_config_errf(err, errlen, t, "each tunnel must be a group { ... }");
    if ((rc = only_keys(t, known, NKEYS(known), "a tunnel entry", err, errlen)) < 0 ||
        (rc = get_string(t, "name", 1, &name, err, errlen)) < 0)
        return rc;
    if (!gw_name_valid(name, strlen(name))) {
        free(name);
        return al_config_errf(err, errlen, config_setting_get_member(t, "name"),
                              "must be 1-64 characters of [A-Za-z0-9._-]");
    }
    sv = config_setting_get_member(t, "servers");
    if (!sv || !config_setting_is_list(sv) || config_setting_length(sv) == 0) {
        free(name);
        return al_config_errf(err, errlen, sv ? sv : t,
                              "servers must be a non-empty list of groups ( { ... } )");
    }
    for (int i = 0; rc == 0 && i < config_setting_length(sv); i++) {
        const config_setting_t *g = config_setting_get_elem(sv, (unsigned)i);
        if (r->n == cap) {
            rc = al_config_errf(err, errlen, g, "too many servers");
            break;
        }
        struct gw_route *x = &r->v[r->n++];
        rc = parse_server(g, name, x, err, errlen);
        if (rc == 0 && route_dup(r, x))
            rc = al_config_errf(err, errlen, g, "route %s is configured twice", x->name);
    }
    free(name);
    return rc;
}

static int parse_tunnels(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    struct gw_routes *r = field;
    size_t cap = 0;
    int rc = 0;

    if (!config_setting_is_list(s))
        return al_config_errf(err, errlen, s, "must be a list of groups ( { ... }, ... )");
    for (int i = 0; i < config_setting_length(s); i++) {
        const config_setting_t *sv =
            config_setting_get_member(config_setting_get_elem(s, (unsigned)i), "servers");
        cap += sv && config_setting_is_aggregate(sv) ? (size_t)config_setting_length(sv) : 0;
    }
    r->v = calloc(cap + 1, sizeof(*r->v));
    if (!r->v)
        return AL_ERR_NOMEM;
    for (int i = 0; rc == 0 && i < config_setting_length(s); i++)
        rc = parse_tunnel(config_setting_get_elem(s, (unsigned)i), r, cap, err, errlen);
    return rc;
}

/* ---------- schema ---------- */

static const struct al_cfg_field fields[] = {
    {"gateway_id", AL_CFG_STRING, GC(gateway_id, char *), "",
     "name of this gateway instance in its registrations; empty = the host name", 0, 0, 0, NULL,
     NULL},
    {"relays", AL_CFG_STRLIST, GC(relays, char **), "",
     "relay tunnel addresses host:port; each name is resolved to all its addresses and every "
     "address is dialled",
     0, 0, 0, NULL, NULL},
    {"relay_identities", AL_CFG_STRLIST, GC(relay_identities, char **), "spiffe://airlock/relay/*",
     "globs the relays' certificate SPIFFE ids must match", 0, 0, 0, NULL, NULL},
    {"connections", AL_CFG_INT, GC(connections, int), "2",
     "connections kept per relay address (at least 2 in all)", 1, 64, 0, NULL, NULL},
    {"heartbeat_interval", AL_CFG_DOUBLE, GC(heartbeat_s, double), "10",
     "heartbeat interval (s) when the relay's Open asks for none; clamped to 1..60", 1, 60, 0, NULL,
     NULL},
    {"ping_interval", AL_CFG_DOUBLE, GC(ping_interval_s, double), "10",
     "HTTP/2 PING after this long without traffic (s); 0 = off", 0, 3600, 0, NULL, NULL},
    {"ping_timeout", AL_CFG_DOUBLE, GC(ping_timeout_s, double), "20",
     "close a connection whose PING is not answered within this (s)", 1, 3600, 0, NULL, NULL},
    {"reconnect_min", AL_CFG_DOUBLE, GC(reconnect_min_s, double), "0.2",
     "first redial delay (s); doubles per failure, jittered", 0, 600, 0, NULL, NULL},
    {"reconnect_max", AL_CFG_DOUBLE, GC(reconnect_max_s, double), "30",
     "longest redial delay (s); also the delay after a relay accepted no tunnel", 0, 3600, 0, NULL,
     NULL},
    {"resolve_interval", AL_CFG_DOUBLE, GC(resolve_interval_s, double), "30",
     "relay names are re-resolved this often (s) to find new replicas", 1, 86400, 0, NULL, NULL},
    {"drain_grace", AL_CFG_DOUBLE, GC(drain_grace_s, double), "30",
     "SIGTERM: how long open agent streams may finish (s)", 0, 3600, 0, NULL, NULL},
    {"max_concurrent_streams", AL_CFG_INT, GC(max_concurrent_streams, int), "1000",
     "agent streams per relay connection", 1, 100000, 0, NULL, NULL},
    {"max_body", AL_CFG_SIZE, GC(max_body, size_t), "4MiB",
     "largest POST body buffered for MCP inspection (413 beyond)", 1024, 64 << 20, 0, NULL, NULL},
    {"max_buffered", AL_CFG_SIZE, GC(max_buffered, size_t), "256MiB",
     "request bodies buffered at once across every stream of this gateway; a body that would "
     "go beyond is refused with 503 (RATE_LIMITED), so many large bodies cannot take the memory",
     65536, 1LL << 40, 0, NULL, NULL},
    {"relay_keys", AL_CFG_CUSTOM, GC(relay_keys, struct gw_relay_keys), NULL,
     "relay grant keys trusted: ( { issuer; public_key_file; key_id; } )", 0, 0, 0,
     parse_relay_keys, relay_keys_free},
    {"credstore.addr", AL_CFG_STRING, GC(credstore_addr, char *), "127.0.0.1:7410",
     "credstore's CredentialResolver address host:port (mTLS with this gateway's identity)", 0, 0,
     0, NULL, NULL},
    {"credstore.peer", AL_CFG_STRING, GC(credstore_peer, char *), "spiffe://airlock/credstore/",
     "SPIFFE id prefix credstore's certificate must carry", 0, 0, 0, NULL, NULL},
    {"credstore.timeout", AL_CFG_DOUBLE, GC(credstore_timeout_s, double), "10",
     "deadline of each Resolve and AppendAudit call (s)", 1, 600, 0, NULL, NULL},
    {"cache_ttl", AL_CFG_DOUBLE, GC(cache_ttl_s, double), "30",
     "released values are reused this long at most (never beyond credstore's ttl); 0 = resolve "
     "every request",
     0, 3600, 0, NULL, NULL},
    {"audit.batch_max", AL_CFG_INT, GC(audit_batch_max, int), "500",
     "use records per AppendAudit batch", 1, 1000, 0, NULL, NULL},
    {"audit.flush_interval", AL_CFG_DOUBLE, GC(audit_flush_s, double), "0.5",
     "a record waits at most this long (s) before its batch is sent", 0, 60, 0, NULL, NULL},
    {"audit.max_pending", AL_CFG_INT, GC(audit_max_pending, int), "20000",
     "use records held undelivered at most; when full, requests fail 503", 1, 10000000, 0, NULL,
     NULL},
    {"tunnels", AL_CFG_CUSTOM, GC(routes, struct gw_routes), NULL,
     "( { name; servers = ( { name; url; ca_file; allow; credential; timeout; policy = ( { "
     "principals; tools; resources; prompts; } ); } ); } )",
     0, 0, 0, parse_tunnels, routes_free},
};

const struct al_cfg_field *gw_config_fields(size_t *n)
{
    *n = NKEYS(fields);
    return fields;
}

/* ---------- checks beyond the schema ---------- */

static int check_relays(const struct gw_config *c, char *err, size_t errlen)
{
    char host[256];
    int port;

    if (!c->relays || !c->relays[0]) {
        snprintf(err, errlen, "relays: at least one relay address host:port is required");
        return AL_ERR_CONFIG;
    }
    for (size_t i = 0; c->relays[i]; i++) {
        if (al_split_hostport(c->relays[i], host, sizeof(host), &port) < 0 || !host[0] ||
            port <= 0 || port > 65535) {
            snprintf(err, errlen, "relays[%zu]: \"%s\" is not host:port", i, c->relays[i]);
            return AL_ERR_CONFIG;
        }
    }
    if (!c->relay_identities || !c->relay_identities[0]) {
        snprintf(err, errlen, "relay_identities: at least one SPIFFE id glob is required");
        return AL_ERR_CONFIG;
    }
    return 0;
}

int gw_config_check(const struct gw_config *c, char *err, size_t errlen)
{
    int rc = check_relays(c, err, errlen);

    if (rc < 0)
        return rc;
    if (c->common.insecure) {
        snprintf(err, errlen,
                 "insecure: a gateway needs its mTLS identity (grants name it as "
                 "holder); set tls.cert_file, tls.key_file and tls.ca_file");
        return AL_ERR_CONFIG;
    }
    if (c->reconnect_min_s <= 0 || c->reconnect_min_s > c->reconnect_max_s) {
        snprintf(err, errlen, "reconnect_min: must be > 0 and at most reconnect_max");
        return AL_ERR_CONFIG;
    }
    if (c->audit_flush_s <= 0) {
        snprintf(err, errlen, "audit.flush_interval: must be > 0");
        return AL_ERR_CONFIG;
    }
    if (c->relay_keys.n == 0) {
        snprintf(err, errlen, "relay_keys: at least one relay grant key is required");
        return AL_ERR_CONFIG;
    }
    if (c->routes.n == 0) {
        snprintf(err, errlen, "tunnels: at least one tunnel with one server is required");
        return AL_ERR_CONFIG;
    }
    if (!c->credstore_addr || !c->credstore_addr[0]) {
        snprintf(err, errlen, "credstore.addr: required");
        return AL_ERR_CONFIG;
    }
    return 0;
}

int gw_keyring_build(const struct gw_config *c, struct al_grant_keyring **out, char *err,
                     size_t errlen)
{
    struct al_grant_keyring *kr = NULL;
    int rc = al_grant_keyring_new(&kr);

    *out = NULL;
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < c->relay_keys.n; i++) {
        const struct gw_relay_key *k = &c->relay_keys.v[i];
        rc = al_grant_keyring_add_pem(kr, k->key_id, k->issuer, k->public_key_file);
        if (rc < 0) {
            snprintf(err, errlen, "relay_keys[%zu] (%s): cannot trust key %s: %s", i, k->issuer,
                     k->public_key_file, al_strerror(rc));
            al_grant_keyring_free(kr);
            return rc == AL_ERR_NOMEM ? rc : AL_ERR_CONFIG;
        }
    }
    *out = kr;
    return 0;
}

/* ---------- routes and policy ---------- */

const struct gw_route *gw_route_find(const struct gw_routes *r, const char *tunnel, size_t tl,
                                     const char *server, size_t sl)
{
    for (size_t i = 0; i < r->n; i++) {
        const struct gw_route *x = &r->v[i];
        if (strlen(x->tunnel) == tl && memcmp(x->tunnel, tunnel, tl) == 0 &&
            strlen(x->server) == sl && memcmp(x->server, server, sl) == 0)
            return x;
    }
    return NULL;
}

static int any_match(char *const *pats, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (al_glob_match(pats[i], s, AL_GLOB_MAX))
            return 1;
    return 0;
}

const struct gw_policy *gw_policy_for(const struct gw_route *r, const char *principal)
{
    for (size_t i = 0; i < r->npolicy; i++)
        if (any_match(r->policy[i].principals, r->policy[i].n_principals, principal))
            return &r->policy[i];
    return NULL;
}

/* 1 when s[0..n) is "." or "..", dots possibly percent-encoded (%2e). */
static int dot_segment(const char *s, size_t n)
{
    size_t dots = 0, i = 0;

    while (i < n) {
        if (s[i] == '.') {
            i++;
        } else if (i + 2 < n && s[i] == '%' && s[i + 1] == '2' && (s[i + 2] | 0x20) == 'e') {
            i += 3;
        } else {
            return 0;
        }
        dots++;
    }
    return dots == 1 || dots == 2;
}

/*
 * A resource URI whose path part (before '?' or '#') has a "." or ".."
 * segment (also percent-encoded), a backslash, or an encoded '/' or backslash.
 * Globs match the URI as text, so "docs://public/../secret" matches the
 * glob "docs://public/" followed by "**"; a server that normalizes the path
 * would serve what the glob meant to keep out. Such a URI is never allowed.
 */
static int uri_climbs(const char *u)
{
    size_t end = strcspn(u, "?#"), start = 0;

    for (size_t i = 0; i < end; i++) {
        if (u[i] == '\\')
            return 1;
        if (u[i] == '%' && i + 2 < end &&
            ((u[i + 1] == '2' && (u[i + 2] | 0x20) == 'f') ||
             (u[i + 1] == '5' && (u[i + 2] | 0x20) == 'c')))
            return 1;
    }
    for (size_t i = 0; i <= end; i++) {
        if (i == end || u[i] == '/') {
            if (dot_segment(u + start, i - start))
                return 1;
            start = i + 1;
        }
    }
    return 0;
}

int gw_policy_allows(void *user, enum rl_mcp_kind kind, const char *name)
{
    const struct gw_policy *p = user;

    if (!p || !name)
        return 0;
    switch (kind) {
    case RL_MCP_TOOL:
        return any_match(p->tools, p->n_tools, name);
    case RL_MCP_RESOURCE:
        return !uri_climbs(name) && any_match(p->resources, p->n_resources, name);
    case RL_MCP_PROMPT:
        return any_match(p->prompts, p->n_prompts, name);
    default:
        return 0;
    }
}
