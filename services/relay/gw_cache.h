/*
 * gw_cache: released credential values at the gateway, ready to use, and the
 * cache that lets requests reuse them for a short time.
 *
 * A struct gw_value is what a Resolve answer becomes: the header to inject
 * and its complete value with the secret in the template's slot (in memory
 * wiped on free), and the scrubber (rl_scrub) built from the secret, which
 * every response of a request that used the value runs through. The raw
 * secret itself is not kept. Values are reference-counted: the cache holds
 * one reference while the value is in it, and each stream using it one more,
 * so a value evicted or expired while a response still streams is wiped when
 * that response ends.
 *
 * The cache maps (issuer, principal, route, credential) to the newest value
 * resolved for it. The key is wider than (principal, credential): a value
 * resolved under one route's grant (credstore checked that route, that
 * issuer) is never reused for another route or another relay's grant, which
 * credstore's policy might refuse. An entry is used until
 * min(cache_ttl, credstore's ttl_ms) after its Resolve, never later; the
 * caller passes that absolute expiry. Times are seconds on any monotonic
 * clock (tests pass a fake one).
 *
 * Injection templates (credstore.proto InjectionTemplate): the header must
 * be a token, not a pseudo-header, Host, Content-Length, Transfer-Encoding,
 * Connection, Upgrade, TE, Proxy-* or airlock-*; the format holds exactly
 * one "{}" and no other brace; empty header or format take the type's
 * default (BEARER_TOKEN: Authorization "Bearer {}"; BASIC_AUTH:
 * Authorization "Basic {}" with the base64 of the value in the slot;
 * HEADER_VALUE: format "{}"); the value must not contain control bytes; a
 * template without allow_plain_http refuses an http:// upstream.
 *
 * Lifecycle: gw_value_new() -> gw_value_ref()/unref(); gw_cache_new() ->
 * get/put/sweep... -> gw_cache_free() (drops the cache's references).
 */
#ifndef GW_CACHE_H
#define GW_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct rl_scrub;

#define GW_HEADER_MAX 128 /* longest template header name */

/* credstore.proto CredentialType values. */
enum {
    GW_CRED_BEARER = 1,
    GW_CRED_BASIC = 2,
    GW_CRED_HEADER_VALUE = 3,
    GW_CRED_GENERIC = 4,
};

struct gw_template {
    int type;           /* GW_CRED_* */
    const char *header; /* "" = the type's default */
    const char *format; /* "" = the type's default */
    int allow_plain_http;
};

struct gw_value {
    int refs;
    int32_t version;
    char header[GW_HEADER_MAX + 1]; /* lowercase */
    uint8_t *inject;                /* the header's value, secret in its slot; wiped on free */
    size_t inject_len;
    struct rl_scrub *scrub;
    double expires; /* no new use from this time on */
    /* cache linkage (gw_cache.c) */
    char *key;
    struct gw_value *hnext, *prev, *next;
};

/*
 * Formats the injected header for template t and secret v[0..n): writes the
 * lowercase header name into header (GW_HEADER_MAX + 1 bytes) and a
 * value in locked memory into *out / *outlen (free with al_secure_free). plain_http:
 * the upstream is http://. Returns 0, AL_ERR_INVAL (bad template or value;
 * why says which, never quoting the value), AL_ERR_AUTH (plain http not
 * allowed) or AL_ERR_NOMEM.
 */
int gw_inject_format(const struct gw_template *t, const uint8_t *v, size_t n, int plain_http,
                     char *header, uint8_t **out, size_t *outlen, char *why, size_t whyn);

/* Builds a value (refs = 1) from a Resolve answer: formats the injection,
 * builds the scrubber (the secret, and for BASIC_AUTH also its password part
 * when at least RL_SCRUB_MIN_VALUE bytes long). Borrows v. Returns 0, the
 * gw_inject_format() errors, AL_ERR_INVAL when the secret is too short or
 * too long to be scrubbed reliably, or AL_ERR_NOMEM. */
int gw_value_new(const struct gw_template *t, const uint8_t *v, size_t n, int32_t version,
                 double expires, int plain_http, struct gw_value **out, char *why, size_t whyn);
struct gw_value *gw_value_ref(struct gw_value *v);
/* Drops a reference; the last one wipes and frees. NULL is fine. */
void gw_value_unref(struct gw_value *v);

struct gw_cache;

/* cap: entries kept (least recently used goes first). Returns 0 or
 * AL_ERR_NOMEM / AL_ERR_INVAL. */
int gw_cache_new(size_t cap, struct gw_cache **out);
void gw_cache_free(struct gw_cache *c);

/* Writes the key of (issuer, principal, route, credential) into buf (size
 * n). Returns 0 or AL_ERR_TOOBIG. */
int gw_cache_key(char *buf, size_t n, const char *issuer, const char *principal, const char *route,
                 const char *credential);

/* A new reference to the live value under key, or NULL (none, or expired:
 * an expired entry is removed). */
struct gw_value *gw_cache_get(struct gw_cache *c, const char *key, double now);

/* Puts v under key (takes a new reference of its own), replacing the entry
 * there. A value already expired is not cached. Returns 0 or AL_ERR_NOMEM. */
int gw_cache_put(struct gw_cache *c, const char *key, struct gw_value *v, double now);

/* Removes every expired entry (and with them the cache's references). */
void gw_cache_sweep(struct gw_cache *c, double now);

/* Removes every entry. */
void gw_cache_clear(struct gw_cache *c);

/* Removes v if the cache holds it (an upstream refused it: the next request
 * resolves again, e.g. a version rotated in credstore). Returns 1 if it was
 * there, else 0. */
int gw_cache_drop(struct gw_cache *c, struct gw_value *v);

size_t gw_cache_count(const struct gw_cache *c);

#endif
