/*
 * policy: may this edge have this credential's value, for this destination,
 * under this grant? Pure decision functions: no I/O, no allocation, no
 * clock (the grant's signature, audience and validity window are checked
 * before, by al_grant_verify()).
 *
 * Every check is an intersection (DESIGN.md "Trust and policy"): operator
 * policy inside the perimeter (the credential's BindingPolicy and the
 * operator's issuer scope table) is the ceiling, and a grant can only narrow
 * it. cs_policy_check() allows only if ALL of these hold, checked in this
 * order, the first failure deciding the reason:
 *
 *   caller is spiffe://airlock/executor/... or .../gateway/...  CS_DENY_CALLER_ROLE
 *   caller == grant holder (exact)                              CS_DENY_WRONG_HOLDER
 *   issuer/holder pairing: intake -> executor, relay -> gateway CS_DENY_ISSUER_ROLE
 *   requested credential is listed in the grant (exact, or a    CS_DENY_CREDENTIAL_NOT_GRANTED
 *     relay grant whose list is exactly {"*"})
 *   requested destination parses (CS_DEST_REQUEST)              CS_DENY_DEST_INVALID
 *   ... and is spelled canonically (no "0177.0.0.1")            CS_DENY_DEST_AMBIGUOUS
 *   ... plain http only if the template allows it               CS_DENY_PLAIN_HTTP
 *   ... matches a grant destination (or a relay grant's {"*"})  CS_DENY_DEST_NOT_GRANTED
 *   issuer matches policy.allowed_issuers                       CS_DENY_ISSUER
 *   principal matches policy.allowed_principals                 CS_DENY_PRINCIPAL
 *   holder matches policy.allowed_holders                       CS_DENY_HOLDER
 *   scope matches allowed_pools (intake) / allowed_routes (relay) CS_DENY_POOL / _ROUTE
 *   destination matches policy.allowed_destinations             CS_DENY_DESTINATION
 *   lifetime (expires - not_before) <= the cap                  CS_DENY_LIFETIME
 *   an issuer scope entry applies to this issuer / key id       CS_DENY_ISSUER_UNKNOWN
 *   ... and one such entry allows, all at once, the principal,  CS_DENY_ISSUER_SCOPE_PRINCIPAL
 *       the pool/route and the credential                       _POOL / _ROUTE / _CREDENTIAL
 *
 * Lists: an empty list allows nothing. Policy and scope entries are globs
 * (cs_glob_match) except allowed_destinations (dest.h patterns). Grant
 * destinations are dest.h patterns too; entries that do not parse match
 * nothing. Pool or route is chosen by the issuer's role: grants issued by
 * spiffe://airlock/intake/... carry an executor pool, grants issued by
 * spiffe://airlock/relay/... a tunnel route "<tunnel>/<server>".
 */
#ifndef CS_POLICY_H
#define CS_POLICY_H

/* The whole list of a relay grant's credentials or destinations: any. */
#define CS_GRANT_ANY "*"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "airlock/v1/common.pb-c.h"
#include "airlock/v1/credstore.pb-c.h"
#include "airlock/v1/grant.pb-c.h"

#define CS_GLOB_MAX 1024 /* longer patterns or subjects match nothing */
#define CS_WHY_MAX  96   /* buffer size that holds any cs_policy_check() reason text */

/*
 * Why a request was denied. Negative, in their own block (-6001..-6099) so
 * they never collide with -errno or AL_ERR_* (al_err.h); cs_deny_name() and
 * cs_deny_error_reason() translate them.
 */
enum cs_deny {
    CS_ALLOW = 0,
    CS_DENY_BAD_INPUT = -6001,              /* NULL argument, malformed grant or policy */
    CS_DENY_CALLER_ROLE = -6002,            /* caller is not an executor or gateway */
    CS_DENY_WRONG_HOLDER = -6003,           /* caller is not the grant's holder */
    CS_DENY_ISSUER_ROLE = -6004,            /* issuer role cannot grant to this holder role */
    CS_DENY_CREDENTIAL_NOT_GRANTED = -6005, /* credential not named by the grant */
    CS_DENY_DEST_INVALID = -6006,           /* requested destination does not parse */
    CS_DENY_DEST_AMBIGUOUS = -6007,         /* requested destination uses a non-canonical IP */
    CS_DENY_PLAIN_HTTP = -6008,             /* http destination, template forbids plain HTTP */
    CS_DENY_DEST_NOT_GRANTED = -6009,       /* destination not named by the grant */
    CS_DENY_ISSUER = -6010,                 /* issuer not in allowed_issuers */
    CS_DENY_PRINCIPAL = -6011,              /* principal not in allowed_principals */
    CS_DENY_HOLDER = -6012,                 /* holder not in allowed_holders */
    CS_DENY_POOL = -6013,                   /* pool not in allowed_pools */
    CS_DENY_ROUTE = -6014,                  /* route not in allowed_routes */
    CS_DENY_DESTINATION = -6015,            /* destination not in allowed_destinations */
    CS_DENY_LIFETIME = -6016,               /* grant lifetime over the cap */
    CS_DENY_ISSUER_UNKNOWN = -6017,         /* no issuer scope entry for this issuer / key */
    CS_DENY_ISSUER_SCOPE_PRINCIPAL = -6018, /* issuer may not assert this principal */
    CS_DENY_ISSUER_SCOPE_POOL = -6019,      /* issuer may not assert this pool */
    CS_DENY_ISSUER_SCOPE_ROUTE = -6020,     /* issuer may not assert this route */
    CS_DENY_ISSUER_SCOPE_CREDENTIAL = -6021 /* issuer may not grant this credential */
};

/*
 * One row of the operator's issuer scope table: what one trusted issuer may
 * assert. The row applies to a grant when `issuer` (a glob over the grant's
 * issuer SPIFFE id) matches, if set, and `key_id` (exact SignedGrant.key_id)
 * equals, if set; a row with neither set applies to nothing. Lists are globs;
 * empty lists allow nothing. Borrowed for the duration of each call.
 */
struct cs_issuer_scope {
    const char *issuer;
    const char *key_id;
    const char *const *principals;
    size_t n_principals;
    const char *const *pools; /* for intake-issued grants */
    size_t n_pools;
    const char *const *routes; /* for relay-issued grants */
    size_t n_routes;
    const char *const *credentials; /* credential names */
    size_t n_credentials;
};

/* Everything one decision looks at. All borrowed for the call. */
struct cs_policy_input {
    /* The grant after al_grant_verify() succeeded for this caller. */
    const Airlock__V1__Grant *grant;
    /* SignedGrant.key_id the grant verified with (for key-id scope rows); may be NULL. */
    const char *key_id;
    /* SPIFFE id from the caller's verified mTLS certificate. */
    const char *caller;
    /* ResolveRequest.credential. */
    const char *credential;
    /* ResolveRequest.destination, length-delimited (NUL bytes in it are refused). */
    const char *destination;
    size_t destination_len;
    /* The credential's binding policy. */
    const Airlock__V1__BindingPolicy *policy;
    /* InjectionTemplate.allow_plain_http of the credential. */
    bool allow_plain_http;
    /* Lifetime cap used when policy->max_grant_lifetime_ms is 0; 0 = none. */
    int64_t default_max_lifetime_ms;
    /* The operator's issuer scope table. */
    const struct cs_issuer_scope *scopes;
    size_t n_scopes;
};

/*
 * Matches s against glob pattern pat, both NUL-terminated and borrowed:
 * "*" matches any run (possibly empty) of characters other than '/', "**"
 * (or more stars) any run including '/'; every other byte matches itself,
 * case-sensitively. There is no escape and no character class. Time is
 * O(strlen(pat) * strlen(s)), never exponential. Returns 1 on a match, 0
 * otherwise (also for NULL, or either string longer than CS_GLOB_MAX).
 */
int cs_glob_match(const char *pat, const char *s);

/* Returns 1 if s matches any of list[0..n) (cs_glob_match), else 0. */
int cs_glob_any(const char *const *list, size_t n, const char *s);

/*
 * Decides one Resolve (see the table at the top). Returns CS_ALLOW (0) or a
 * CS_DENY_* code; never fails in any other way. why (may be NULL) gets a
 * fixed short text naming the failed check ("allowed" on success), never
 * grant, request or policy contents and never a secret, so it is safe for
 * logs, audit records and error messages; CS_WHY_MAX bytes always suffice.
 * Borrows in.
 */
int cs_policy_check(const struct cs_policy_input *in, char *why, size_t whylen);

/* Stable machine name of a code for audit records and metrics, e.g.
 * "wrong_holder"; "allow" for 0, "unknown" for anything else. Static. */
const char *cs_deny_name(int code);

/* The ErrorReason the Resolve error should carry for a deny code:
 * CALLER_ROLE -> IDENTITY_NOT_ALLOWED, WRONG_HOLDER -> GRANT_HOLDER_MISMATCH,
 * ISSUER_ROLE -> GRANT_INVALID, *_NOT_GRANTED -> GRANT_SCOPE_MISMATCH,
 * DEST_INVALID/DEST_AMBIGUOUS -> INVALID_FIELD, BAD_INPUT -> INTERNAL,
 * everything else -> POLICY_DENIED; UNSPECIFIED for 0 or unknown codes. */
Airlock__V1__ErrorReason cs_deny_error_reason(int code);

#endif
