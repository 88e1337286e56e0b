/*
 * policy: the Resolve decision (rules and order in policy.h) and the glob
 * matcher used by every name list of the policy. Stateless; every call
 * reads only its arguments.
 */
#include "al_glob.h"
#include "policy.h"

#include <stdio.h>
#include <string.h>

#include "al_pki.h"
#include "dest.h"

#define DENY_FIRST CS_DENY_BAD_INPUT
#define DENY_LAST  CS_DENY_ISSUER_SCOPE_CREDENTIAL

/* One row per code, indexed by DENY_FIRST - code. */
static const struct {
    const char *name; /* machine name for audit and metrics */
    const char *why;  /* fixed human text: no contents, no secrets */
    Airlock__V1__ErrorReason reason;
} deny_table[] = {
#define R(r) AIRLOCK__V1__ERROR_REASON__ERROR_REASON_##r
    {"bad_input", "malformed grant, policy or request", R(INTERNAL)},
    {"caller_role", "caller is not an executor or gateway", R(IDENTITY_NOT_ALLOWED)},
    {"wrong_holder", "caller is not the grant holder", R(GRANT_HOLDER_MISMATCH)},
    {"issuer_role", "issuer role may not grant to this holder role", R(GRANT_INVALID)},
    {"credential_not_granted", "credential not named by the grant", R(GRANT_SCOPE_MISMATCH)},
    {"dest_invalid", "destination malformed", R(INVALID_FIELD)},
    {"dest_ambiguous", "destination uses a non-canonical IP address form", R(INVALID_FIELD)},
    {"plain_http", "plain http not allowed for this credential", R(POLICY_DENIED)},
    {"dest_not_granted", "destination not named by the grant", R(GRANT_SCOPE_MISMATCH)},
    {"policy_issuer", "issuer not allowed by policy", R(POLICY_DENIED)},
    {"policy_principal", "principal not allowed by policy", R(POLICY_DENIED)},
    {"policy_holder", "holder not allowed by policy", R(POLICY_DENIED)},
    {"policy_pool", "pool not allowed by policy", R(POLICY_DENIED)},
    {"policy_route", "route not allowed by policy", R(POLICY_DENIED)},
    {"policy_destination", "destination not allowed by policy", R(POLICY_DENIED)},
    {"policy_lifetime", "grant lifetime over the policy cap", R(POLICY_DENIED)},
    {"issuer_unknown", "no issuer scope for this issuer", R(POLICY_DENIED)},
    {"issuer_scope_principal", "principal outside the issuer scope", R(POLICY_DENIED)},
    {"issuer_scope_pool", "pool outside the issuer scope", R(POLICY_DENIED)},
    {"issuer_scope_route", "route outside the issuer scope", R(POLICY_DENIED)},
    {"issuer_scope_credential", "credential outside the issuer scope", R(POLICY_DENIED)},
#undef R
};

_Static_assert(sizeof deny_table / sizeof deny_table[0] == DENY_FIRST - DENY_LAST + 1,
               "one deny_table row per cs_deny code");

static int deny_index(int code)
{
    return code <= DENY_FIRST && code >= DENY_LAST ? DENY_FIRST - code : -1;
}

const char *cs_deny_name(int code)
{
    int i = deny_index(code);
    if (code == CS_ALLOW)
        return "allow";
    return i < 0 ? "unknown" : deny_table[i].name;
}

Airlock__V1__ErrorReason cs_deny_error_reason(int code)
{
    int i = deny_index(code);
    return i < 0 ? AIRLOCK__V1__ERROR_REASON__ERROR_REASON_UNSPECIFIED : deny_table[i].reason;
}

/* ---- globs ---- */

int cs_glob_match(const char *pat, const char *s)
{
    return al_glob_match(pat, s, CS_GLOB_MAX);
}

int cs_glob_any(const char *const *list, size_t n, const char *s)
{
    if (!list)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (cs_glob_match(list[i], s))
            return 1;
    return 0;
}

/* ---- the decision ---- */

static int deny(int code, char *why, size_t whylen)
{
    int i = deny_index(code);
    if (why && whylen)
        snprintf(why, whylen, "%s", code == CS_ALLOW ? "allowed" : deny_table[i].why);
    return code;
}

/* protobuf-c repeated strings as the const list cs_glob_any takes */
static int any_of(char *const *list, size_t n, const char *s)
{
    return cs_glob_any((const char *const *)list, n, s);
}

static int grant_sane(const Airlock__V1__Grant *g)
{
    return g && g->issuer && g->holder && g->principal && g->scope &&
           (g->n_credentials == 0 || g->credentials) && (g->n_destinations == 0 || g->destinations);
}

static int role_of(const char *id, char *role, size_t rolelen)
{
    return id ? al_pki_parse_spiffe(id, role, rolelen, NULL, 0) : -1;
}

/* Who calls, who holds, who issued. *relay says which scope kind applies. */
static int check_parties(const struct cs_policy_input *in, int *relay)
{
    const Airlock__V1__Grant *g = in->grant;
    char crole[AL_PKI_ROLE_MAX], irole[AL_PKI_ROLE_MAX];

    if (role_of(in->caller, crole, sizeof crole) < 0 ||
        (strcmp(crole, "executor") != 0 && strcmp(crole, "gateway") != 0))
        return CS_DENY_CALLER_ROLE;
    if (strcmp(in->caller, g->holder) != 0)
        return CS_DENY_WRONG_HOLDER;
    if (role_of(g->issuer, irole, sizeof irole) < 0)
        return CS_DENY_ISSUER_ROLE;
    if (strcmp(irole, "intake") == 0 && strcmp(crole, "executor") == 0)
        *relay = 0;
    else if (strcmp(irole, "relay") == 0 && strcmp(crole, "gateway") == 0)
        *relay = 1;
    else
        return CS_DENY_ISSUER_ROLE;
    return CS_ALLOW;
}

/* Returns 1 if d matches any dest.h pattern in list (unparsable entries match nothing). */
static int dest_any(char *const *list, size_t n, enum cs_dest_mode mode, const struct cs_dest *d)
{
    struct cs_dest p;
    if (!list)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (list[i] && cs_dest_parse(list[i], strlen(list[i]), mode, &p) == 0 &&
            cs_dest_match(&p, d))
            return 1;
    return 0;
}

/* 1 when a relay grant's list is exactly {"*"}: see grant.proto. */
static int relay_any(char *const *list, size_t n, int relay)
{
    return relay && n == 1 && list && list[0] && strcmp(list[0], CS_GRANT_ANY) == 0;
}

/* What the grant itself names: credential and destination. A relay grant
 * may name "*" for either: the relay does not know which credential a
 * gateway route uses nor where it points (the gateway's routes do), so the
 * policy and issuer scope below are then the only limits. */
static int check_grant(const struct cs_policy_input *in, int relay, struct cs_dest *d)
{
    const Airlock__V1__Grant *g = in->grant;
    int named = relay_any(g->credentials, g->n_credentials, relay);

    for (size_t i = 0; i < g->n_credentials && !named; i++)
        named = g->credentials[i] && strcmp(g->credentials[i], in->credential) == 0;
    if (!named)
        return CS_DENY_CREDENTIAL_NOT_GRANTED;
    if (cs_dest_parse(in->destination, in->destination_len, CS_DEST_REQUEST, d) < 0)
        return CS_DENY_DEST_INVALID;
    if (d->flags & CS_DEST_F_NONCANONICAL)
        return CS_DENY_DEST_AMBIGUOUS;
    if (d->scheme == CS_SCHEME_HTTP && !in->allow_plain_http)
        return CS_DENY_PLAIN_HTTP;
    if (!relay_any(g->destinations, g->n_destinations, relay) &&
        !dest_any(g->destinations, g->n_destinations, CS_DEST_GRANT, d))
        return CS_DENY_DEST_NOT_GRANTED;
    return CS_ALLOW;
}

/* The credential's BindingPolicy. */
static int check_binding(const struct cs_policy_input *in, int relay, const struct cs_dest *d)
{
    const Airlock__V1__Grant *g = in->grant;
    const Airlock__V1__BindingPolicy *p = in->policy;
    int64_t cap = p->max_grant_lifetime_ms, life;

    if (!any_of(p->allowed_issuers, p->n_allowed_issuers, g->issuer))
        return CS_DENY_ISSUER;
    if (!any_of(p->allowed_principals, p->n_allowed_principals, g->principal))
        return CS_DENY_PRINCIPAL;
    if (!any_of(p->allowed_holders, p->n_allowed_holders, g->holder))
        return CS_DENY_HOLDER;
    if (!relay && !any_of(p->allowed_pools, p->n_allowed_pools, g->scope))
        return CS_DENY_POOL;
    if (relay && !any_of(p->allowed_routes, p->n_allowed_routes, g->scope))
        return CS_DENY_ROUTE;
    if (!dest_any(p->allowed_destinations, p->n_allowed_destinations, CS_DEST_POLICY, d))
        return CS_DENY_DESTINATION;
    if (cap == 0)
        cap = in->default_max_lifetime_ms;
    if (cap < 0 || g->expires_ms <= g->not_before_ms ||
        __builtin_sub_overflow(g->expires_ms, g->not_before_ms, &life))
        return CS_DENY_BAD_INPUT;
    if (cap > 0 && life > cap)
        return CS_DENY_LIFETIME;
    return CS_ALLOW;
}

static int row_applies(const struct cs_issuer_scope *r, const char *issuer, const char *key_id)
{
    int by_issuer = r->issuer && r->issuer[0], by_key = r->key_id && r->key_id[0];
    if (!by_issuer && !by_key)
        return 0;
    if (by_issuer && !cs_glob_match(r->issuer, issuer))
        return 0;
    return !by_key || (key_id && strcmp(r->key_id, key_id) == 0);
}

/* One row: 0 if it allows everything, else how far it got (1..3). */
static int row_check(const struct cs_issuer_scope *r, const struct cs_policy_input *in, int relay)
{
    const Airlock__V1__Grant *g = in->grant;
    if (!cs_glob_any(r->principals, r->n_principals, g->principal))
        return 1;
    if (relay ? !cs_glob_any(r->routes, r->n_routes, g->scope)
              : !cs_glob_any(r->pools, r->n_pools, g->scope))
        return 2;
    if (!cs_glob_any(r->credentials, r->n_credentials, in->credential))
        return 3;
    return 0;
}

/*
 * The operator's issuer scope table. One applicable row must allow the
 * principal, the pool/route and the credential together: rows are not
 * mixed, so two narrow rows never add up to a wider one. The reason reported
 * is that of the row that got furthest.
 */
static int check_issuer_scope(const struct cs_policy_input *in, int relay)
{
    int best = 0, applied = 0;

    if (!in->scopes)
        return CS_DENY_ISSUER_UNKNOWN;
    for (size_t i = 0; i < in->n_scopes; i++) {
        int got;
        if (!row_applies(&in->scopes[i], in->grant->issuer, in->key_id))
            continue;
        applied = 1;
        got = row_check(&in->scopes[i], in, relay);
        if (got == 0)
            return CS_ALLOW;
        if (got > best)
            best = got;
    }
    if (!applied)
        return CS_DENY_ISSUER_UNKNOWN;
    if (best == 1)
        return CS_DENY_ISSUER_SCOPE_PRINCIPAL;
    if (best == 2)
        return relay ? CS_DENY_ISSUER_SCOPE_ROUTE : CS_DENY_ISSUER_SCOPE_POOL;
    return CS_DENY_ISSUER_SCOPE_CREDENTIAL;
}

int cs_policy_check(const struct cs_policy_input *in, char *why, size_t whylen)
{
    struct cs_dest d;
    int relay = 0, rc;

    if (!in || !grant_sane(in->grant) || !in->caller || !in->credential || !in->policy ||
        (!in->destination && in->destination_len))
        return deny(CS_DENY_BAD_INPUT, why, whylen);
    rc = check_parties(in, &relay);
    if (rc == CS_ALLOW)
        rc = check_grant(in, relay, &d);
    if (rc == CS_ALLOW)
        rc = check_binding(in, relay, &d);
    if (rc == CS_ALLOW)
        rc = check_issuer_scope(in, relay);
    return deny(rc, why, whylen);
}
