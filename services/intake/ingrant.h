/*
 * ingrant: what an attempt's grant says (grant.proto), as a pure function of
 * the job so the rules are testable without a signing key.
 *
 * An attempt gets a grant when its job binds credentials or uses network
 * mode PROXY: the executor resolves the bound credentials with it, and the
 * use records of its egress proxy (every request and tunnel, with or
 * without a credential) are filed in credstore's audit chain under it. A
 * PROXY job without bindings gets a grant naming no credential and no
 * destination: credstore releases nothing under it and accepts only records
 * of uses that involved no credential.
 *
 * The grant: issuer = this intake, audience from grant.audience, holder =
 * the executor holding the lease, principal, subject
 * "job/<id>/attempt/<n>", scope = the pool, the bound credentials (each
 * once) and the destinations of the bindings (each once), valid from now
 * for grant.lifetime.
 */
#ifndef IN_GRANT_H
#define IN_GRANT_H

#include <stdint.h>

#include "airlock/v1/grant.pb-c.h"
#include "airlock/v1/intake.pb-c.h"

#define IN_GRANT_MAX_CREDS 64
#define IN_GRANT_MAX_DESTS (64 * 64)

/* Storage the built grant points into (strings stay borrowed from the spec
 * and the caller). */
struct in_grant_buf {
    char subject[128];
    char *creds[IN_GRANT_MAX_CREDS];
    char *dests[IN_GRANT_MAX_DESTS];
};

/* What the grant is for: the caller's side of it. */
struct in_grant_ctx {
    const char *issuer, *audience, *holder, *principal, *job_id, *pool;
    int32_t attempt;
    int64_t now_ms, lifetime_ms;
};

/* 1 when an attempt of spec needs a grant (bindings, or network PROXY). */
int in_grant_needed(const Airlock__V1__JobSpec *spec);

/* Fills g (initialised here) from x and spec; g's strings and arrays point
 * into x, spec and buf, which must outlive g. */
void in_grant_build(const struct in_grant_ctx *x, const Airlock__V1__JobSpec *spec,
                    struct in_grant_buf *buf, Airlock__V1__Grant *g);

#endif
