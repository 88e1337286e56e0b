/* egress_policy: the executor's checks of a job's network access; see
 * egress_policy.h. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>

#include "al_dest.h"
#include "al_err.h"
#include "egress_policy.h"

#define NET_PROXY AIRLOCK__V1__NETWORK_MODE__NETWORK_MODE_PROXY

static const char *const proxy_vars[] = {"HTTP_PROXY",     "HTTPS_PROXY",
                                         "http_proxy",     "https_proxy",
                                         "NO_PROXY",       "no_proxy",
                                         "SSL_CERT_FILE",  "REQUESTS_CA_BUNDLE",
                                         "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
                                         "GIT_SSL_CAINFO", "ALL_PROXY",
                                         "all_proxy"};

int ex_policy_reserved_env(const char *name)
{
    for (size_t i = 0; i < sizeof(proxy_vars) / sizeof(proxy_vars[0]); i++)
        if (name && strcmp(name, proxy_vars[i]) == 0)
            return 1;
    return 0;
}

size_t ex_policy_proxy_env(int port, int with_ca, struct ex_env_kv *kv)
{
    size_t n = 0;

    for (size_t i = 0; i < 4; i++) {
        kv[n].name = proxy_vars[i];
        snprintf(kv[n++].value, sizeof(kv->value), "http://127.0.0.1:%d", port);
    }
    for (size_t i = 4; i < 6; i++) {
        kv[n].name = proxy_vars[i];
        snprintf(kv[n++].value, sizeof(kv->value), "localhost,127.0.0.1,::1");
    }
    for (size_t i = 6; with_ca && i < 11; i++) {
        kv[n].name = proxy_vars[i];
        snprintf(kv[n++].value, sizeof(kv->value), "%s", EX_CA_BUNDLE_INSIDE);
    }
    return n;
}

int ex_policy_placeholder(char *out, size_t n)
{
    unsigned char r[16];

    if (n < EX_PH_LEN + 1 || RAND_bytes(r, sizeof(r)) != 1)
        return AL_ERR_CRYPTO;
    memcpy(out, EX_PH_PREFIX, sizeof(EX_PH_PREFIX) - 1);
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(out + sizeof(EX_PH_PREFIX) - 1 + 2 * i, 3, "%02x", r[i]);
    return 0;
}

/* ---------- inside the ceiling ---------- */

static int host_inside(const char *pattern, const char *host)
{
    size_t pl, hl;

    if (strcasecmp(pattern, host) == 0)
        return 1;
    if (strncmp(pattern, "*.", 2) != 0)
        return 0;
    /* "*.example.com" holds "a.example.com" and "*.a.example.com" */
    pl = strlen(pattern + 1);
    hl = strlen(host);
    return hl > pl && strcasecmp(host + hl - pl, pattern + 1) == 0;
}

static int listed(char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return 1;
    return 0;
}

static int under_prefix(char *const *v, size_t n, const char *p)
{
    for (size_t i = 0; i < n; i++)
        if (strncmp(p, v[i], strlen(v[i])) == 0)
            return 1;
    return 0;
}

/* host (canonicalised here) and port inside entry c */
static int host_port_inside(const struct ex_egress_dest *c, const char *host, int port)
{
    char canon[AL_DEST_HOST_MAX];

    return (port ? port : 443) == c->port &&
           al_dest_host_canon(host, 1, canon, sizeof(canon)) == 0 && host_inside(c->host, canon);
}

int ex_policy_inside(const struct ex_egress_dest *c, const char *host, int port,
                     char *const *methods, size_t n_methods, char *const *paths, size_t n_paths)
{
    if (!host_port_inside(c, host, port))
        return 0;
    if (c->n_methods) {
        if (!n_methods)
            return 0;
        for (size_t i = 0; i < n_methods; i++)
            if (!listed(c->methods, c->n_methods, methods[i]))
                return 0;
    }
    if (c->n_path_prefixes) {
        if (!n_paths)
            return 0;
        for (size_t i = 0; i < n_paths; i++)
            if (!under_prefix(c->path_prefixes, c->n_path_prefixes, paths[i]))
                return 0;
    }
    return 1;
}

/* ---------- the job ---------- */

static int check_dest(const struct ex_egress_pool *ceiling, const char *pool,
                      const Airlock__V1__NetworkDestination *d, char *why, size_t n)
{
    int port = d->port ? d->port : 443, host_ok = 0;

    if (!al_dest_host_valid(d->host, 1) || d->port < 0 || d->port > 65535) {
        snprintf(why, n, "network destination %.260s is not a valid host and port",
                 d->host ? d->host : "");
        return AL_ERR_AUTH;
    }
    for (size_t k = 0; k < d->n_methods; k++)
        if (!al_dest_method_valid(d->methods[k])) {
            snprintf(why, n, "network destination %.260s:%d: bad method", d->host, port);
            return AL_ERR_AUTH;
        }
    for (size_t k = 0; k < d->n_path_prefixes; k++)
        if (!al_dest_path_prefix_valid(d->path_prefixes[k])) {
            snprintf(why, n, "network destination %.260s:%d: bad path prefix", d->host, port);
            return AL_ERR_AUTH;
        }
    for (size_t i = 0; i < ceiling->n_dests; i++) {
        const struct ex_egress_dest *c = &ceiling->dests[i];
        if (ex_policy_inside(c, d->host, port, d->methods, d->n_methods, d->path_prefixes,
                             d->n_path_prefixes))
            return 0;
        host_ok |= host_port_inside(c, d->host, port);
    }
    if (host_ok)
        snprintf(why, n,
                 "network destination %.260s:%d asks for more methods or paths than pool "
                 "\"%.64s\"'s egress ceiling allows there",
                 d->host, port, pool);
    else
        snprintf(why, n,
                 "network destination %.260s:%d is outside pool \"%.64s\"'s egress ceiling on "
                 "this executor",
                 d->host, port, pool);
    return AL_ERR_AUTH;
}

static int check_binding(const Airlock__V1__JobSpec *spec, const Airlock__V1__CredentialBinding *b,
                         char *why, size_t n, char *dest, size_t dn)
{
    const Airlock__V1__NetworkPolicy *net = spec->network;
    const char *name = b->credential ? b->credential : "";
    char host[AL_DEST_HOST_MAX];
    int port;

    if (!b->env_var || !b->env_var[0] || strncmp(b->env_var, "AIRLOCK_", 8) == 0 ||
        ex_policy_reserved_env(b->env_var)) {
        snprintf(why, n,
                 "credential %.128s: env_var %.64s is reserved (AIRLOCK_*, or set by the executor "
                 "for the egress proxy)",
                 name, b->env_var ? b->env_var : "");
        return AL_ERR_AUTH;
    }
    if (b->n_destinations == 0) {
        snprintf(why, n, "credential %.128s: the binding names no destination", name);
        return AL_ERR_AUTH;
    }
    for (size_t k = 0; k < b->n_destinations; k++) {
        const char *s = b->destinations[k];
        size_t i;
        snprintf(dest, dn, "%.260s", s ? s : "");
        if (al_dest_parse(s, host, sizeof(host), &port) < 0) {
            snprintf(why, n, "credential %.128s: destination %.260s is not \"host[:port]\"", name,
                     s ? s : "");
            return AL_ERR_AUTH;
        }
        if (host[0] == '*') {
            snprintf(why, n,
                     "credential %.128s: destination %.260s is a wildcard; the executor resolves "
                     "each credential for concrete hosts before the job starts, so bind it to "
                     "those hosts",
                     name, s);
            return AL_ERR_AUTH;
        }
        for (i = 0; i < net->n_destinations; i++)
            if (al_dest_covers(net->destinations[i]->host, net->destinations[i]->port, host, port))
                break;
        if (i == net->n_destinations) {
            snprintf(why, n,
                     "credential %.128s: destination %.260s is not among the job's network "
                     "destinations",
                     name, s);
            return AL_ERR_AUTH;
        }
    }
    return 0;
}

int ex_policy_check(const struct ex_egress_pool *ceiling, const char *pool,
                    const Airlock__V1__JobSpec *spec, char *why, size_t n,
                    struct ex_policy_denial *d)
{
    const Airlock__V1__NetworkPolicy *net = spec->network;
    struct ex_policy_denial none;
    int rc;

    if (!d)
        d = &none;
    memset(d, 0, sizeof(*d));
    pool = pool ? pool : "";
    if (!net || net->mode != NET_PROXY) {
        snprintf(why, n, "credential bindings need network mode NETWORK_MODE_PROXY");
        return AL_ERR_AUTH;
    }
    if (!ceiling || ceiling->n_dests == 0) {
        snprintf(why, n,
                 "pool \"%.64s\" has no egress ceiling on this executor: its jobs cannot use "
                 "the network",
                 pool);
        return AL_ERR_AUTH;
    }
    for (size_t i = 0; i < net->n_destinations; i++) {
        const Airlock__V1__NetworkDestination *x = net->destinations[i];
        if ((rc = check_dest(ceiling, pool, x, why, n)) < 0) {
            snprintf(d->destination, sizeof(d->destination), "%.260s:%d", x->host ? x->host : "",
                     x->port ? x->port : 443);
            return rc;
        }
    }
    for (size_t i = 0; i < spec->n_credentials; i++) {
        const Airlock__V1__CredentialBinding *b = spec->credentials[i];
        if ((rc = check_binding(spec, b, why, n, d->destination, sizeof(d->destination))) < 0) {
            snprintf(d->credential, sizeof(d->credential), "%.128s",
                     b->credential ? b->credential : "");
            return rc;
        }
    }
    for (size_t i = 0; spec->exec && i < spec->exec->n_env; i++)
        if (ex_policy_reserved_env(spec->exec->env[i]->key)) {
            snprintf(why, n,
                     "the job sets %.64s, which the executor sets for jobs with network mode "
                     "NETWORK_MODE_PROXY",
                     spec->exec->env[i]->key);
            return AL_ERR_AUTH;
        }
    return 0;
}
