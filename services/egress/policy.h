/*
 * policy: where a job's sandbox may go. A destination (struct eg_dest) is a
 * host pattern (a canonical host, or "*.suffix": one or more extra labels
 * in front of suffix; wildcards match names only, never IP literals), a
 * port, optional methods and path prefixes and, in the operator's ceiling,
 * the address ranges beyond public ones its name may resolve to
 * (allow_cidrs) and whether plain http:// requests are allowed.
 *
 * Every decision is ceiling AND job: some ceiling entry and some job entry
 * must both allow it. Several matching entries of one list are alternatives
 * (any one allowing is enough); the address ranges of all matching ceiling
 * entries are pooled for the address check.
 *
 * A CONNECT is intercepted (TLS terminated so that requests are seen) when
 * a credential of the job is bound to the destination, or when the requests
 * must be checked: no matching ceiling entry, or no matching job entry, is
 * free of method and path rules. Otherwise it is tunnelled opaquely.
 *
 * Lifecycle: eg_dest_init() fills an embedded struct from plain C values
 * (the caller's strings are copied) -> eg_dest_cleanup(). The matching
 * functions borrow everything and keep nothing.
 */
#ifndef EG_POLICY_H
#define EG_POLICY_H

#include <stddef.h>

#include "target.h"
#include "upstream.h"

#define EG_MAX_METHODS  16
#define EG_MAX_PREFIXES 64
#define EG_METHOD_MAX   32

struct eg_dest {
    struct eg_host host; /* for a wildcard: the suffix after "*." */
    int wildcard;
    int port;
    char (*methods)[EG_METHOD_MAX];
    size_t nmethods;
    char **prefixes; /* normalised paths */
    size_t nprefixes;
    struct rl_cidr *cidrs;
    size_t ncidrs;
    int allow_http;
};

/* Parses a destination. host: "name", "*.name" or an IP literal (brackets
 * optional for IPv6); methods upper case tokens; prefixes start with "/"
 * and are stored normalised (eg_path_normalize); cidrs as rl_cidr_parse.
 * Returns 0 or AL_ERR_INVAL with a reason in why (size n), or
 * AL_ERR_NOMEM. d is cleaned up on failure. */
int eg_dest_init(struct eg_dest *d, const char *host, int port, const char *const *methods,
                 size_t nmethods, const char *const *prefixes, size_t nprefixes,
                 const char *const *cidrs, size_t ncidrs, int allow_http, char *why, size_t n);
void eg_dest_cleanup(struct eg_dest *d);

/* Parses a credential binding "host[:port]" (port default 443; "*." and an
 * "http://" or "https://" in front accepted, the scheme only setting the
 * default port). Returns as eg_dest_init(). */
int eg_bind_init(struct eg_dest *d, const char *spec, char *why, size_t n);

/* Does the pattern of d match host h? */
int eg_host_match(const struct eg_dest *d, const struct eg_host *h);

/* Could patterns a and b match a common host (same port)? */
int eg_dest_overlap(const struct eg_dest *a, const struct eg_dest *b);

/* Does d carry method or path rules? */
int eg_dest_restricted(const struct eg_dest *d);

struct eg_policy {
    const struct eg_dest *ceiling;
    size_t nceiling;
    const struct eg_dest *job;
    size_t njob;
};

/* What a connection to one authority may do. */
struct eg_reach {
    int allowed;
    int restricted; /* requests must be seen (method/path rules) */
    struct rl_cidr cidrs[RL_UPSTREAM_MAX_ALLOW];
    size_t ncidrs;
};

/* CONNECT (plain_http 0) or a plain http request's origin (plain_http 1:
 * only ceiling entries with allow_http count). Fills *out; returns
 * out->allowed. */
int eg_policy_reach(const struct eg_policy *p, const struct eg_authority *a, int plain_http,
                    struct eg_reach *out);

/* A request: method and normalised path against the entries matching a.
 * Returns 1, or 0 with *why (static text). */
int eg_policy_request(const struct eg_policy *p, const struct eg_authority *a, int plain_http,
                      const char *method, const char *npath, const char **why);

#endif
