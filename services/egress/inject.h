/*
 * inject: a job's credentials at the egress proxy, and the decision, per
 * request head, of where placeholders may be swapped for values.
 *
 * The sandbox holds placeholders ("AIRLOCK_PH_" and 32 lowercase hex
 * digits); the proxy holds the values (al_secure_alloc: locked, wiped on
 * free). A placeholder is replaced ONLY in its credential's template slot:
 * the header the template names, whose value must be exactly the template's
 * format with the placeholder in the slot (the literal text around it
 * compared case-insensitively, "Bearer" = "bearer"). For BASIC_AUTH the slot
 * holds base64 of "user:password": it is decoded, must hold the placeholder
 * exactly once (as the whole text, or followed by ':' alone, when the value
 * is itself "user:password"; anywhere in it otherwise) and no other
 * placeholder, the placeholder is replaced there, and the result is encoded
 * again. The substituted header is formatted by gw_inject_format().
 *
 * Any other appearance of a placeholder, in any form rl_scrub knows (raw,
 * hex, base64 at every alignment, percent- or JSON-escaped), blocks the
 * request as an exfiltration attempt: in the request target, in a header
 * name, in another header, in the slot header in another shape, for a
 * destination the credential is not bound to, or over plain http when the
 * template does not allow it. (The body is checked as it streams, by the
 * caller, with the same detection set.) A placeholder in its slot after the
 * credential expired is refused, without the exfiltration flag.
 *
 * Lifecycle: eg_cred_init() -> eg_cred_expire() (wipes the value, keeps the
 * name and placeholder for detection) -> eg_cred_cleanup(). eg_scan_head()
 * borrows everything; its result owns the substituted values
 * (eg_scan_cleanup wipes them).
 */
#ifndef EG_INJECT_H
#define EG_INJECT_H

#include <stddef.h>
#include <stdint.h>

#include "gw_cache.h"
#include "h1.h"
#include "policy.h"

#define EG_PH_PREFIX  "AIRLOCK_PH_"
#define EG_PH_LEN     43 /* prefix + 32 hex */
#define EG_MAX_CREDS  32
#define EG_MAX_BINDS  64
#define EG_REASON_MAX 640

struct rl_scrub;

struct eg_cred {
    char *name;
    char placeholder[EG_PH_LEN + 1];
    struct eg_dest *binds;
    size_t nbinds;
    int32_t version;
    int type;
    int allow_plain_http;
    char *tmpl_header, *tmpl_format; /* the template as given ("" = default) */
    char header[GW_HEADER_MAX + 1];  /* the slot's header, lowercase */
    char *pre, *post;                /* literal text around the slot */
    uint8_t *value;                  /* locked memory; NULL once expired */
    size_t value_len;
    int64_t expires_ms;           /* no use from this time on (Unix ms) */
    int64_t credstore_expires_ms; /* 0 = unknown: JobGrant cannot extend */
    char *grant_id;
};

struct eg_cred_spec {
    const char *name;
    const char *placeholder;
    const char *const *binds;
    size_t nbinds;
    int32_t version;
    int type; /* GW_CRED_* */
    const char *header, *format;
    int allow_plain_http;
    const uint8_t *value; /* copied into locked memory */
    size_t value_len;
    int64_t expires_ms, credstore_expires_ms;
    const char *grant_id;
};

/* Builds a credential from s (everything copied). Checks the placeholder's
 * form, the bindings, and the template against the value (gw_inject_format);
 * the value must be scrubbable (RL_SCRUB_MIN_VALUE..RL_SCRUB_MAX_VALUE
 * bytes). Returns 0, or AL_ERR_INVAL with why (never quoting the value), or
 * AL_ERR_NOMEM; c is cleaned up on failure. */
int eg_cred_init(struct eg_cred *c, const struct eg_cred_spec *s, char *why, size_t n);

/* Wipes and frees the value (use refused from now on). */
void eg_cred_expire(struct eg_cred *c);

void eg_cred_cleanup(struct eg_cred *c);

/* Is placeholder text p[0..n) of the right form? */
int eg_placeholder_ok(const char *p, size_t n);

/* One header whose value becomes the credential's injected value. */
struct eg_subst {
    size_t header; /* index into the request's headers */
    size_t cred;
    uint8_t *value; /* locked memory */
    size_t len;
};

struct eg_scan {
    struct eg_subst subst[EG_MAX_CREDS];
    size_t nsubst;
    long cred; /* the credential concerned by a denial, -1 none */
    int exfil; /* the denial is a placeholder out of place */
    char reason[EG_REASON_MAX];
};

/* Decides for one request head: creds[i] is value i of detect (a set of the
 * placeholders, built with rl_scrub_add in credential order). a is the
 * destination, plain_http whether the request goes out without TLS, now_ms
 * the current time. Returns 0 (out->subst lists the substitutions) or
 * AL_ERR_AUTH (refused: out->reason, out->exfil, out->cred) or
 * AL_ERR_NOMEM. Call eg_scan_cleanup() in every case. */
int eg_scan_head(const struct eg_cred *creds, size_t ncreds, const struct rl_scrub *detect,
                 const struct eg_authority *a, int plain_http, int64_t now_ms, const char *target,
                 size_t target_len, const struct rl_h1_header *h, size_t nh, struct eg_scan *out);

void eg_scan_cleanup(struct eg_scan *s);

#endif
