/*
 * apikey: API keys of agent platforms.
 *
 * A key is "<id>.<secret>": id = "ak_" + 16 hex digits (random, shown by
 * `airlockctl keys ls`, named in logs and in Principal.key_id), secret = 64
 * hex digits (256 random bits). Only SHA-256("airlock-api-key-v1\0" || key)
 * is stored; the key itself is printed once, when it is created, and never
 * again. A presented key is looked up by its id and its hash compared in
 * constant time; then expiry and revocation are checked.
 *
 * Scopes: jobs.submit, jobs.read, jobs.cancel (IN_SCOPE_*, instore.h).
 *
 * struct in_apikeys caches rows read from the store for cache_ttl_ms, so a
 * key created, revoked or expired by airlockctl while intake runs takes
 * effect within that time (expiry is checked against the clock on every
 * call). Unknown ids are not cached. One thread.
 */
#ifndef IN_APIKEY_H
#define IN_APIKEY_H

#include <stddef.h>
#include <stdint.h>

#include "instore.h"

#define IN_APIKEY_ID_LEN     19 /* "ak_" + 16 hex */
#define IN_APIKEY_SECRET_LEN 64
#define IN_APIKEY_LEN        (IN_APIKEY_ID_LEN + 1 + IN_APIKEY_SECRET_LEN)

/* Makes a new key: id (IN_APIKEY_ID_LEN + 1 bytes), the full key
 * (IN_APIKEY_LEN + 1 bytes; a secret: print it once, then wipe it) and its
 * hash. Returns 0 or AL_ERR_CRYPTO. */
int in_apikey_generate(char *id, char *key, uint8_t hash[32]);

/* Hash of a full key as stored. Returns 0 or AL_ERR_CRYPTO. */
int in_apikey_hash(const char *key, size_t len, uint8_t hash[32]);

/* Checks the syntax of a full key and copies its id out (IN_APIKEY_ID_LEN + 1
 * bytes). Returns 0 or AL_ERR_INVAL. */
int in_apikey_parse(const char *key, size_t len, char *id);

/* 1 when id has the form of a key id. */
int in_apikey_id_valid(const char *id);

/* Extracts the key from an authorization header value "Bearer <key>" (scheme
 * case-insensitive, one space). *key points into value. Returns 0 or
 * AL_ERR_INVAL. */
int in_apikey_bearer(const char *value, size_t len, const char **key, size_t *keylen);

/* Parses "submit,read,cancel" (also "jobs.submit", ...) into IN_SCOPE_* bits.
 * Returns 0 or AL_ERR_INVAL (unknown or empty scope). */
int in_apikey_scopes_parse(const char *s, unsigned *out);

/* Writes "jobs.submit,jobs.read,..." for scopes into buf. */
void in_apikey_scopes_format(unsigned scopes, char *buf, size_t n);

enum in_apikey_verdict {
    IN_KEY_OK = 0,
    IN_KEY_MALFORMED,
    IN_KEY_UNKNOWN, /* no such id, or the secret does not match */
    IN_KEY_EXPIRED,
    IN_KEY_REVOKED
};

/* Short text for a verdict ("ok", "unknown key", ...). Static. */
const char *in_apikey_verdict_str(enum in_apikey_verdict v);

/*
 * Decides on a stored row for a presented key (hash already computed):
 * hash compared in constant time, then revocation, then expiry at now_ms.
 */
enum in_apikey_verdict in_apikey_judge(const struct in_apikey_row *r, const uint8_t hash[32],
                                       int64_t now_ms);

struct in_apikeys;

/* Cache over store st (borrowed; must outlive it). Returns 0 or AL_ERR_NOMEM. */
int in_apikeys_new(struct in_store *st, int64_t cache_ttl_ms, struct in_apikeys **out);
void in_apikeys_free(struct in_apikeys *k);

/*
 * Checks a presented key at now_ms. On IN_KEY_OK fills *row (id, principal,
 * scopes...; hash zeroed). Returns a verdict (>= 0) or a negative code when
 * the store failed.
 */
int in_apikeys_check(struct in_apikeys *k, const char *key, size_t len, int64_t now_ms,
                     struct in_apikey_row *row);

#endif
