/*
 * policy: destination patterns and the ceiling AND job decisions (see
 * policy.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "al_wipe.h"
#include "policy.h"

static int bad(char *why, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int bad(char *why, size_t n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
    return AL_ERR_INVAL;
}

void eg_dest_cleanup(struct eg_dest *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->nprefixes; i++)
        free(d->prefixes[i]);
    free(d->prefixes);
    free(d->methods);
    free(d->cidrs);
    memset(d, 0, sizeof(*d));
}

/* "name", "*.name", an IP literal, or an IPv6 literal without brackets. */
static int parse_pattern(struct eg_dest *d, const char *host, char *why, size_t n)
{
    const char *reason = NULL;
    char br[64];
    size_t len = host ? strlen(host) : 0;

    if (len == 0)
        return bad(why, n, "%s", "empty host");
    if (len > 2 && host[0] == '*' && host[1] == '.') {
        if (eg_host_parse(host + 2, len - 2, &d->host, &reason) < 0)
            return bad(why, n, "host pattern: %s", reason);
        if (d->host.kind != EG_HOST_NAME)
            return bad(why, n, "%s", "a wildcard pattern must name a DNS suffix");
        d->wildcard = 1;
        return 0;
    }
    if (strchr(host, '*'))
        return bad(why, n, "%s", "'*' is only accepted as a leading \"*.\"");
    if (host[0] != '[' && strchr(host, ':')) { /* bare IPv6 */
        if (len + 3 > sizeof(br))
            return bad(why, n, "%s", "malformed IPv6 literal");
        snprintf(br, sizeof(br), "[%s]", host);
        host = br;
        len += 2;
    }
    if (eg_host_parse(host, len, &d->host, &reason) < 0)
        return bad(why, n, "host: %s", reason);
    return 0;
}

static int is_token_upper(const char *m)
{
    size_t n = strlen(m);

    if (n == 0 || n >= EG_METHOD_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((m[i] >= 'A' && m[i] <= 'Z') || m[i] == '-' || m[i] == '_'))
            return 0;
    return 1;
}

static int add_rules(struct eg_dest *d, const char *const *methods, size_t nmethods,
                     const char *const *prefixes, size_t nprefixes, char *why, size_t n)
{
    if (nmethods > EG_MAX_METHODS || nprefixes > EG_MAX_PREFIXES)
        return bad(why, n, "%s", "too many methods or path prefixes");
    if (nmethods && !(d->methods = calloc(nmethods, sizeof(*d->methods))))
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < nmethods; i++) {
        if (!methods[i] || !is_token_upper(methods[i]))
            return bad(why, n, "%s", "methods must be upper-case tokens");
        snprintf(d->methods[d->nmethods++], EG_METHOD_MAX, "%s", methods[i]);
    }
    if (nprefixes && !(d->prefixes = calloc(nprefixes, sizeof(*d->prefixes))))
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < nprefixes; i++) {
        const char *reason = NULL;
        size_t len = prefixes[i] ? strlen(prefixes[i]) : 0;
        char *p;
        if (len == 0 || len > 4096 || prefixes[i][0] != '/' || strchr(prefixes[i], '?'))
            return bad(why, n, "%s", "path prefixes start with \"/\" and hold no query");
        p = malloc(len + 2);
        if (!p)
            return AL_ERR_NOMEM;
        d->prefixes[d->nprefixes++] = p;
        if (eg_path_normalize(prefixes[i], len, p, len + 2, &reason) < 0)
            return bad(why, n, "path prefix: %s", reason ? reason : "too long");
    }
    return 0;
}

int eg_dest_init(struct eg_dest *d, const char *host, int port, const char *const *methods,
                 size_t nmethods, const char *const *prefixes, size_t nprefixes,
                 const char *const *cidrs, size_t ncidrs, int allow_http, char *why, size_t n)
{
    int rc;

    memset(d, 0, sizeof(*d));
    rc = parse_pattern(d, host, why, n);
    if (rc == 0 && (port < 1 || port > 65535))
        rc = bad(why, n, "%s", "port must be 1-65535");
    d->port = port;
    d->allow_http = allow_http;
    if (rc == 0)
        rc = add_rules(d, methods, nmethods, prefixes, nprefixes, why, n);
    if (rc == 0 && ncidrs > RL_UPSTREAM_MAX_ALLOW)
        rc = bad(why, n, "%s", "too many allow_cidrs");
    if (rc == 0 && ncidrs && !(d->cidrs = calloc(ncidrs, sizeof(*d->cidrs))))
        rc = AL_ERR_NOMEM;
    for (size_t i = 0; rc == 0 && i < ncidrs; i++) {
        if (rl_cidr_parse(cidrs[i], &d->cidrs[d->ncidrs]) < 0)
            rc = bad(why, n, "allow_cidrs: \"%s\" is not a CIDR (\"10.0.0.0/8\")",
                     cidrs[i] ? cidrs[i] : "");
        else
            d->ncidrs++;
    }
    if (rc < 0)
        eg_dest_cleanup(d);
    return rc;
}

int eg_bind_init(struct eg_dest *d, const char *spec, char *why, size_t n)
{
    struct eg_authority a;
    const char *reason = NULL, *s = spec ? spec : "";
    int defport = 443, rc;
    size_t len;

    memset(d, 0, sizeof(*d));
    if (strncmp(s, "https://", 8) == 0) {
        s += 8;
    } else if (strncmp(s, "http://", 7) == 0) {
        s += 7;
        defport = 80;
    }
    len = strlen(s);
    if (len && s[len - 1] == '/')
        len--; /* "https://api.example.com/" */
    if (len > 2 && s[0] == '*' && s[1] == '.') {
        if (eg_authority_parse(s + 2, len - 2, defport, &a, &reason) < 0)
            return bad(why, n, "credential destination: %s", reason);
        if (a.host.kind != EG_HOST_NAME)
            return bad(why, n, "%s", "credential destination: a wildcard names a DNS suffix");
        d->host = a.host;
        d->wildcard = 1;
        d->port = a.port;
        return 0;
    }
    rc = eg_authority_parse(s, len, defport, &a, &reason);
    if (rc < 0)
        return bad(why, n, "credential destination: %s", reason);
    d->host = a.host;
    d->port = a.port;
    return 0;
}

int eg_host_match(const struct eg_dest *d, const struct eg_host *h)
{
    size_t hl, sl;

    if (!d->wildcard)
        return eg_host_equal(&d->host, h);
    if (h->kind != EG_HOST_NAME)
        return 0;
    hl = strlen(h->name);
    sl = strlen(d->host.name);
    return hl > sl + 1 && h->name[hl - sl - 1] == '.' &&
           strcmp(h->name + hl - sl, d->host.name) == 0;
}

int eg_dest_overlap(const struct eg_dest *a, const struct eg_dest *b)
{
    if (a->port != b->port)
        return 0;
    if (!a->wildcard && !b->wildcard)
        return eg_host_equal(&a->host, &b->host);
    if (a->wildcard && b->wildcard) /* one suffix inside the other */
        return eg_host_equal(&a->host, &b->host) || eg_host_match(a, &b->host) ||
               eg_host_match(b, &a->host);
    return a->wildcard ? eg_host_match(a, &b->host) : eg_host_match(b, &a->host);
}

int eg_dest_restricted(const struct eg_dest *d)
{
    return d->nmethods > 0 || d->nprefixes > 0;
}

static int matches(const struct eg_dest *d, const struct eg_authority *a, int plain_http)
{
    return d->port == a->port && (!plain_http || d->allow_http) && eg_host_match(d, &a->host);
}

int eg_policy_reach(const struct eg_policy *p, const struct eg_authority *a, int plain_http,
                    struct eg_reach *out)
{
    int ceil_any = 0, ceil_free = 0, job_any = 0, job_free = 0;

    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < p->nceiling; i++) {
        const struct eg_dest *d = &p->ceiling[i];
        if (!matches(d, a, plain_http))
            continue;
        ceil_any = 1;
        ceil_free |= !eg_dest_restricted(d);
        for (size_t k = 0; k < d->ncidrs && out->ncidrs < RL_UPSTREAM_MAX_ALLOW; k++)
            out->cidrs[out->ncidrs++] = d->cidrs[k];
    }
    for (size_t i = 0; i < p->njob; i++) {
        const struct eg_dest *d = &p->job[i];
        if (d->port != a->port || !eg_host_match(d, &a->host))
            continue;
        job_any = 1;
        job_free |= !eg_dest_restricted(d);
    }
    out->allowed = ceil_any && job_any;
    out->restricted = !(ceil_free && job_free);
    return out->allowed;
}

static int method_allowed(const struct eg_dest *d, const char *method)
{
    for (size_t i = 0; i < d->nmethods; i++)
        if (strcmp(d->methods[i], method) == 0)
            return 1;
    return d->nmethods == 0;
}

static int path_allowed(const struct eg_dest *d, const char *npath)
{
    for (size_t i = 0; i < d->nprefixes; i++)
        if (eg_path_has_prefix(npath, d->prefixes[i]))
            return 1;
    return d->nprefixes == 0;
}

/* Does an entry of list that matches a allow method and path? If not, *why
 * says what failed (the method everywhere, or only the path). */
static int list_allows(const struct eg_dest *list, size_t n, const struct eg_authority *a,
                       int plain_http, const char *method, const char *npath, const char **why)
{
    int method_ok = 0;

    for (size_t i = 0; i < n; i++) {
        const struct eg_dest *d = &list[i];
        if (!matches(d, a, plain_http) || !method_allowed(d, method))
            continue;
        method_ok = 1;
        if (path_allowed(d, npath))
            return 1;
    }
    *why = method_ok ? "path not under an allowed prefix" : "method not allowed";
    return 0;
}

int eg_policy_request(const struct eg_policy *p, const struct eg_authority *a, int plain_http,
                      const char *method, const char *npath, const char **why)
{
    return list_allows(p->ceiling, p->nceiling, a, plain_http, method, npath, why) &&
           list_allows(p->job, p->njob, a, 0, method, npath, why);
}
