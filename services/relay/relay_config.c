/*
 * relay_config: schema of airlock-relay's own keys, the tunnels list (a
 * custom libconfig parser, so each entry is checked with its file:line) and
 * the checks that span fields; see relay_config.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libconfig.h>

#include "al_addr.h"
#include "al_err.h"
#include "al_glob.h"
#include "relay_agent_util.h"
#include "relay_config.h"

#define RC(member, type) AL_CFG_OFF(struct rl_config, member, type)

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void tunnels_free(void *field)
{
    struct rl_tunnel_list *tl = field;
    for (size_t i = 0; i < tl->n; i++) {
        free(tl->v[i].name);
        free_strv(tl->v[i].gateways, tl->v[i].ngateways);
    }
    free(tl->v);
    tl->v = NULL;
    tl->n = 0;
}

static int parse_gateways(const config_setting_t *g, struct rl_tunnel_conf *t, char *err,
                          size_t errlen)
{
    const config_setting_t *s = config_setting_get_member(g, "gateways");
    int len;

    if (!s)
        return al_config_errf(err, errlen, g,
                              "tunnels: entry needs gateways (SPIFFE id patterns of the gateways "
                              "that may serve it)");
    if (!config_setting_is_aggregate(s) || config_setting_is_group(s))
        return al_config_errf(err, errlen, s, "must be a list of strings");
    len = config_setting_length(s);
    if (len == 0)
        return al_config_errf(err, errlen, s,
                              "is empty: no gateway could serve this tunnel (list at least one "
                              "pattern such as \"spiffe://airlock/gateway/name\")");
    t->gateways = calloc((size_t)len + 1, sizeof(char *));
    if (!t->gateways)
        return AL_ERR_NOMEM;
    for (int i = 0; i < len; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *v = config_setting_get_string(e);
        if (!v || !*v || strlen(v) > AL_GLOB_MAX)
            return al_config_errf(err, errlen, e,
                                  "must be a non-empty string (a glob over gateway SPIFFE ids, "
                                  "at most %d bytes)",
                                  AL_GLOB_MAX);
        if (strncmp(v, "spiffe://", 9) != 0)
            return al_config_errf(err, errlen, e,
                                  "must be a SPIFFE id pattern starting with spiffe://");
        t->gateways[i] = strdup(v);
        if (!t->gateways[i])
            return AL_ERR_NOMEM;
        t->ngateways++;
    }
    return 0;
}

static int parse_tunnels(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    struct rl_tunnel_list *tl = field;
    int len, rc;

    if (!config_setting_is_list(s))
        return al_config_errf(err, errlen, s, "must be a list of groups ( { name; gateways; } )");
    len = config_setting_length(s);
    tl->v = calloc((size_t)len + 1, sizeof(*tl->v));
    if (!tl->v)
        return AL_ERR_NOMEM;
    for (int i = 0; i < len; i++) {
        const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
        struct rl_tunnel_conf *t = &tl->v[i];
        const config_setting_t *name;
        const char *v;

        if (!config_setting_is_group(g))
            return al_config_errf(err, errlen, g, "tunnels: each entry must be a group { ... }");
        tl->n++;
        for (int j = 0; j < config_setting_length(g); j++) {
            const config_setting_t *m = config_setting_get_elem(g, (unsigned)j);
            const char *mn = config_setting_name(m);
            if (strcmp(mn, "name") != 0 && strcmp(mn, "gateways") != 0)
                return al_config_errf(err, errlen, m,
                                      "unknown key in a tunnels entry (known: name, gateways)");
        }
        name = config_setting_get_member(g, "name");
        if (!name)
            return al_config_errf(err, errlen, g, "tunnels: entry needs a name");
        v = config_setting_get_string(name);
        if (!v || !rl_name_valid(v, strlen(v)))
            return al_config_errf(err, errlen, name,
                                  "must be 1-64 characters of [A-Za-z0-9._-] (the <tunnel> of "
                                  "/mcp/<tunnel>/<server>)");
        for (int k = 0; k < i; k++)
            if (strcmp(tl->v[k].name, v) == 0)
                return al_config_errf(err, errlen, name, "tunnel \"%s\" is configured twice", v);
        t->name = strdup(v);
        if (!t->name)
            return AL_ERR_NOMEM;
        if ((rc = parse_gateways(g, t, err, errlen)) < 0)
            return rc;
    }
    return 0;
}

static const struct al_cfg_field fields[] = {
    {"relay_id", AL_CFG_STRING, RC(relay_id, char *), NULL,
     "name of this relay replica, for logs and TunnelStatus (default: the host name)", 0, 0, 0,
     NULL, NULL},
    {"agents.listen", AL_CFG_STRING, RC(agents_listen, char *), "127.0.0.1:7420",
     "MCP endpoint for agents, host:port", 0, 0, 0, NULL, NULL},
    {"agents.insecure", AL_CFG_BOOL, RC(agents_insecure, int), "false",
     "serve agents plaintext HTTP/1.1 and h2c without TLS (explicit opt-in)", 0, 0, 0, NULL, NULL},
    {"agents.cert_file", AL_CFG_STRING, RC(agents_cert_file, char *), NULL,
     "PEM certificate chain shown to agents (default tls.cert_file)", 0, 0, 0, NULL, NULL},
    {"agents.key_file", AL_CFG_STRING, RC(agents_key_file, char *), NULL,
     "PEM private key of agents.cert_file (default tls.key_file)", 0, 0, 0, NULL, NULL},
    {"agents.keys_file", AL_CFG_STRING, RC(agents_keys_file, char *), NULL,
     "agent API key file (airlockctl relay keys); reloaded when it changes and on SIGHUP", 0, 0, 1,
     NULL, NULL},
    {"agents.allowed_origins", AL_CFG_STRLIST, RC(agents_allowed_origins, char **), "",
     "browser Origin values accepted (https://host[:port]); requests with another Origin get 403",
     0, 0, 0, NULL, NULL},
    {"agents.max_head", AL_CFG_SIZE, RC(agents_max_head, size_t), "16KiB",
     "largest request head (request line or pseudo-headers plus headers)", 1024, 1024 * 1024, 0,
     NULL, NULL},
    {"agents.max_body", AL_CFG_SIZE, RC(agents_max_body, size_t), "4MiB", "largest request body",
     1024, 1LL << 30, 0, NULL, NULL},
    {"agents.header_timeout", AL_CFG_DOUBLE, RC(agents_header_timeout, double), "10",
     "seconds a request head may take to arrive", 1, 3600, 0, NULL, NULL},
    {"agents.body_timeout", AL_CFG_DOUBLE, RC(agents_body_timeout, double), "30",
     "seconds a request body may go without progress", 1, 3600, 0, NULL, NULL},
    {"agents.idle_timeout", AL_CFG_DOUBLE, RC(agents_idle_timeout, double), "60",
     "seconds an agent connection may stay idle between requests", 1, 86400, 0, NULL, NULL},
    {"agents.max_connections", AL_CFG_INT, RC(agents_max_connections, int), "10000",
     "agent connections open at once; more are closed at accept", 1, 1000000, 0, NULL, NULL},
    {"agents.max_streams", AL_CFG_INT, RC(agents_max_streams, int), "1000",
     "concurrent requests (streams) per HTTP/2 agent connection (SETTINGS_MAX_CONCURRENT_STREAMS)",
     1, 100000, 0, NULL, NULL},
    {"tunnel.listen", AL_CFG_STRING, RC(tunnel_listen, char *), "127.0.0.1:7421",
     "address gateways dial (mutual TLS, ALPN airlock-tunnel/1), host:port", 0, 0, 0, NULL, NULL},
    {"tunnel.heartbeat_interval", AL_CFG_DOUBLE, RC(tunnel_heartbeat_interval, double), "10",
     "seconds between gateway heartbeats asked for in TunnelControl.Open", 1, 60, 0, NULL, NULL},
    {"tunnels", AL_CFG_CUSTOM, RC(tunnels, struct rl_tunnel_list), NULL,
     "tunnels and the gateway identities that may serve them: ( { name = \"corp\"; gateways = "
     "[\"spiffe://airlock/gateway/...\"]; } )",
     0, 0, 0, parse_tunnels, tunnels_free},
    {"grant.key_file", AL_CFG_STRING, RC(grant_key_file, char *), NULL,
     "Ed25519 private key that signs request grants (airlockctl keys gen-grant-key)", 0, 0, 1, NULL,
     NULL},
    {"grant.ttl", AL_CFG_DOUBLE, RC(grant_ttl, double), "60",
     "lifetime of a request grant, seconds", 1, 3600, 0, NULL, NULL},
};

const struct al_cfg_field *rl_config_fields(size_t *n)
{
    *n = sizeof(fields) / sizeof(fields[0]);
    return fields;
}

const char *rl_config_file_arg(int argc, char **argv)
{
    const char *file = NULL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            file = argv[++i];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            file = argv[i] + 9;
    }
    if (!file) {
        const char *e = getenv("AIRLOCK_CONFIG");
        file = e && *e ? e : NULL;
    }
    return file;
}

/* Same rule as al_config: '-' and '_' are one character in flag names. */
static int flag_is(const char *arg, const char *key)
{
    const char *name = arg + 2;
    size_t len = strcspn(name, "=");
    size_t i;

    if (strncmp(arg, "--", 2) != 0)
        return 0;
    for (i = 0; i < len && key[i]; i++) {
        char a = name[i] == '-' ? '_' : name[i];
        char b = key[i] == '-' ? '_' : key[i];
        if (a != b)
            return 0;
    }
    return i == len && key[i] == '\0';
}

/* "<where>" of key (and of element idx >= 0 of a list), following al_config's
 * precedence: flag, then environment, then file, else the default. */
static void where(const struct rl_config_src *src, const char *key, int idx, char *buf, size_t n)
{
    char env[128];
    const char *e;
    config_t cf;

    for (int i = src ? src->argc - 1 : 0; i >= 1; i--) {
        if (flag_is(src->argv[i], key)) {
            snprintf(buf, n, "flag --%s", key);
            return;
        }
    }
    if (al_config_env_name(key, env, sizeof(env)) == 0 && (e = getenv(env)) && *e) {
        snprintf(buf, n, "env %s", env);
        return;
    }
    snprintf(buf, n, "default");
    if (!src || !src->config_file)
        return;
    config_init(&cf);
    if (config_read_file(&cf, src->config_file) == CONFIG_TRUE) {
        config_setting_t *s = config_lookup(&cf, key);
        if (s && idx >= 0 && config_setting_is_aggregate(s))
            s = config_setting_get_elem(s, (unsigned)idx);
        if (s)
            snprintf(buf, n, "%s:%d", src->config_file, config_setting_source_line(s));
    }
    config_destroy(&cf);
}

static int fail(const struct rl_config_src *src, char *err, size_t errlen, const char *key, int idx,
                const char *reason)
{
    char w[512];

    where(src, key, idx, w, sizeof(w));
    if (strcmp(w, "default") == 0) /* never set: the key alone says it */
        snprintf(err, errlen, "%s: %s", key, reason);
    else if (idx >= 0)
        snprintf(err, errlen, "%s: %s[%d]: %s", w, key, idx, reason);
    else
        snprintf(err, errlen, "%s: %s: %s", w, key, reason);
    return AL_ERR_CONFIG;
}

static int check_addr(const struct rl_config_src *src, char *err, size_t errlen, const char *key,
                      const char *v)
{
    struct sockaddr_storage ss;
    socklen_t len;

    if (!v || !*v || al_addr_parse(v, &ss, &len) < 0)
        return fail(src, err, errlen, key, -1,
                    "must be a numeric host:port such as 127.0.0.1:7420 or [::1]:7420");
    return 0;
}

static int default_relay_id(struct rl_config *c)
{
    char host[256];

    if (gethostname(host, sizeof(host)) < 0)
        return AL_ERR_CONFIG;
    host[sizeof(host) - 1] = '\0';
    /* a FQDN keeps only its first label, as a pod name would */
    host[strcspn(host, ".")] = '\0';
    c->relay_id = strdup(host);
    return c->relay_id ? 0 : AL_ERR_NOMEM;
}

static int check_tls(struct rl_config *c, const struct rl_config_src *src, char *err, size_t errlen)
{
    const struct al_service_config *k = &c->common;

    if (!k->tls_cert_file || !*k->tls_cert_file)
        return fail(src, err, errlen, "tls.cert_file", -1,
                    "required: gateways connect with mutual TLS and grants are signed as this "
                    "certificate's SPIFFE id (also with insecure = true)");
    if (!k->tls_key_file || !*k->tls_key_file)
        return fail(src, err, errlen, "tls.key_file", -1, "required (see tls.cert_file)");
    if (!k->tls_ca_file || !*k->tls_ca_file)
        return fail(src, err, errlen, "tls.ca_file", -1,
                    "required: gateway certificates must chain to it");
    int has_cert = c->agents_cert_file && *c->agents_cert_file;
    int has_key = c->agents_key_file && *c->agents_key_file;
    if (has_cert != has_key) /* named where the one that is set came from */
        return fail(src, err, errlen, has_cert ? "agents.cert_file" : "agents.key_file", -1,
                    "agents.cert_file and agents.key_file go together: set both or neither");
    return 0;
}

int rl_config_validate(struct rl_config *c, const struct rl_config_src *src, char *err,
                       size_t errlen)
{
    int rc;

    if ((rc = check_tls(c, src, err, errlen)) < 0)
        return rc;
    if (!c->relay_id && (rc = default_relay_id(c)) < 0) {
        snprintf(err, errlen, "relay_id: not set and the host name is unavailable");
        return rc;
    }
    if (!rl_name_valid(c->relay_id, strlen(c->relay_id)))
        return fail(src, err, errlen, "relay_id", -1, "must be 1-64 characters of [A-Za-z0-9._-]");
    if ((rc = check_addr(src, err, errlen, "agents.listen", c->agents_listen)) < 0 ||
        (rc = check_addr(src, err, errlen, "tunnel.listen", c->tunnel_listen)) < 0)
        return rc;
    if (!c->agents_keys_file || !*c->agents_keys_file)
        return fail(src, err, errlen, "agents.keys_file", -1, "must be a file path");
    if (!c->grant_key_file || !*c->grant_key_file)
        return fail(src, err, errlen, "grant.key_file", -1, "must be a file path");
    for (int i = 0; c->agents_allowed_origins && c->agents_allowed_origins[i]; i++) {
        const char *why;
        if (rl_origin_valid(c->agents_allowed_origins[i], &why) < 0)
            return fail(src, err, errlen, "agents.allowed_origins", i, why);
    }
    if (c->tunnels.n == 0)
        return fail(src, err, errlen, "tunnels", -1,
                    "at least one tunnel is required: ( { name = \"corp\"; gateways = "
                    "[\"spiffe://airlock/gateway/...\"]; } )");
    return 0;
}
