/*
 * egress_policy: what the executor decides about a job's network access
 * before the job gets its proxy, as pure functions (no I/O, no clock).
 *
 * The ceiling is the operator's (egress.pools in the executor's config, per
 * pool); the job's NetworkPolicy and credential bindings come from intake,
 * which checked them too, but intake may sit outside the perimeter, so the
 * executor checks again before anything is resolved:
 *
 *   - network mode PROXY (bindings without it are refused);
 *   - the pool has a ceiling with at least one entry (else nothing is
 *     allowed and the job is refused);
 *   - each job destination lies inside one ceiling entry: the same host, or
 *     inside a "*." entry ("*.example.com" holds "api.example.com" and
 *     "*.a.example.com"), the same port (0 = 443), methods a subset of the
 *     entry's when the entry lists any (a job listing none asks for every
 *     method, which is more), path prefixes each starting with one of the
 *     entry's when it lists any (likewise);
 *   - each binding: an env_var the proxy settings do not use, and concrete
 *     destinations ("host[:port]", no wildcard: each is resolved with
 *     credstore before the job starts) that one of the job's destinations
 *     covers;
 *   - the job's own environment sets none of the proxy variables.
 *
 * A refusal is one line naming the offending destination, binding or
 * variable (POLICY_DENIED for the agent). Everything here reads the job as
 * intake sent it: hosts are compared in canonical form (al_dest.h).
 */
#ifndef EX_EGRESS_POLICY_H
#define EX_EGRESS_POLICY_H

#include <stddef.h>

#include "airlock/v1/intake.pb-c.h"
#include "exconfig.h"

#define EX_PH_PREFIX "AIRLOCK_PH_"
#define EX_PH_LEN    (sizeof(EX_PH_PREFIX) - 1 + 32) /* + 32 lowercase hex */
/* Where the job's CA bundle is mounted inside the sandbox. */
#define EX_CA_BUNDLE_INSIDE "/etc/ssl/certs/ca-certificates.crt"

/* What a refusal was about, for its audit record. */
struct ex_policy_denial {
    char destination[300]; /* "host:port" the job asked for, or "" */
    char credential[130];  /* the binding's credential, or "" */
};

/*
 * Checks spec (network PROXY or credential bindings) against the ceiling of
 * its pool (NULL = the pool has none). Returns 0, or AL_ERR_AUTH with a
 * one-line reason for the agent in why and, when d is not NULL, what it was
 * about in *d.
 */
int ex_policy_check(const struct ex_egress_pool *ceiling, const char *pool,
                    const Airlock__V1__JobSpec *spec, char *why, size_t n,
                    struct ex_policy_denial *d);

/* 1 when ceiling entry c holds job destination host/port/methods/paths
 * (host canonical or not; port 0 = 443). */
int ex_policy_inside(const struct ex_egress_dest *c, const char *host, int port,
                     char *const *methods, size_t n_methods, char *const *paths, size_t n_paths);

/* 1 when name is one of the variables the executor sets for the proxy
 * (HTTP_PROXY ... GIT_SSL_CAINFO). */
int ex_policy_reserved_env(const char *name);

/* Writes a fresh placeholder ("AIRLOCK_PH_" + 32 lowercase hex of 128
 * random bits) into out (size >= EX_PH_LEN + 1). Returns 0 or
 * AL_ERR_CRYPTO. */
int ex_policy_placeholder(char *out, size_t n);

/* The proxy's variables: name/value pairs for sb_request.env_internal. */
struct ex_env_kv {
    const char *name;
    char value[64];
};

#define EX_PROXY_ENV_MAX 11

/* Fills kv (room for EX_PROXY_ENV_MAX) with the proxy settings for port
 * (HTTP_PROXY, HTTPS_PROXY, http_proxy, https_proxy, NO_PROXY, no_proxy) and,
 * when with_ca, the CA bundle variables pointing at EX_CA_BUNDLE_INSIDE.
 * Returns how many. */
size_t ex_policy_proxy_env(int port, int with_ca, struct ex_env_kv *kv);

#endif
