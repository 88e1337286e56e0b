/*
 * agentkeys: the relay's agent API keys, kept in one text file that every
 * relay replica reads (in Kubernetes: a Secret mounted into each pod) and
 * that `airlockctl relay keys` writes.
 *
 * A key is "<id>.<secret>": id = "rk_" + 16 hex digits, secret = 64 hex
 * digits (256 random bits). Agents send it as "Authorization: Bearer <key>".
 * Only SHA-256("airlock-relay-key-v1\0" || key) is stored. A presented key is
 * looked up by id, its hash compared in constant time, then revocation and
 * expiry are checked against the clock on every request.
 *
 * File format, one key per line, fields separated by single spaces:
 *   airlock-relay-keys v1                          (first line)
 *   <id> <hash, 64 hex> <principal> <routes> <created_ms> <expires_ms|0> <revoked_ms|0>
 * principal: 1-128 characters of [A-Za-z0-9._@:/-];
 * routes: comma-separated al_glob patterns over "<tunnel>/<server>" (for
 * example "corp/ *,lab/wiki" without the space, which only keeps this
 * comment a comment), at least one; patterns use [A-Za-z0-9._/-] and
 * the star.
 * Lines starting with '#' and empty lines are ignored. Any other malformed
 * line makes the whole file invalid: loading fails and (on reload) the keys
 * already loaded stay in effect.
 *
 * Writers (airlockctl) take an exclusive flock on "<file>.lock", write a
 * temporary file in the same directory (mode 0600), fsync it and rename it
 * over the file, so readers always see a whole file. The relay reloads when
 * the file's mtime/size/inode change (checked at most once per second) and
 * on SIGHUP.
 *
 * Lifecycle: rl_keys_load() -> rl_keys_check()... -> rl_keys_free().
 */
#ifndef RL_AGENTKEYS_H
#define RL_AGENTKEYS_H

#include <stddef.h>
#include <stdint.h>

#define RL_KEY_ID_LEN     19 /* "rk_" + 16 hex */
#define RL_KEY_SECRET_LEN 64
#define RL_KEY_LEN        (RL_KEY_ID_LEN + 1 + RL_KEY_SECRET_LEN)
#define RL_PRINCIPAL_MAX  128
#define RL_ROUTES_MAX     1024 /* bytes of the routes field */

struct rl_key {
    char id[RL_KEY_ID_LEN + 1];
    uint8_t hash[32];
    char principal[RL_PRINCIPAL_MAX + 1];
    char routes[RL_ROUTES_MAX + 1];
    int64_t created_ms, expires_ms, revoked_ms;
};

struct rl_keys; /* a loaded file */

/* Reads and validates path. Returns 0, -errno (cannot read; -ENOENT for a
 * missing file), AL_ERR_CONFIG (malformed: "path:line: reason" in err) or
 * AL_ERR_NOMEM. */
int rl_keys_load(const char *path, struct rl_keys **out, char *err, size_t errn);
void rl_keys_free(struct rl_keys *k);
size_t rl_keys_count(const struct rl_keys *k);
const struct rl_key *rl_keys_at(const struct rl_keys *k, size_t i);

enum rl_key_verdict {
    RL_KEY_OK = 0,
    RL_KEY_MALFORMED, /* not a "Bearer rk_...": 401 */
    RL_KEY_UNKNOWN,   /* no such id or the secret does not match: 401 */
    RL_KEY_EXPIRED,   /* 401 */
    RL_KEY_REVOKED,   /* 401 */
    RL_KEY_ROUTE      /* valid, but not for this tunnel/server: 403 */
};

/* Checks an Authorization header value for route "<tunnel>/<server>" at
 * now_ms; on RL_KEY_OK (and RL_KEY_ROUTE) *key points at the key (borrowed
 * from k). */
enum rl_key_verdict rl_keys_check(const struct rl_keys *k, const char *authorization, size_t len,
                                  const char *route, int64_t now_ms, const struct rl_key **key);

/* Text for a verdict, safe to show the agent ("unknown API key"). */
const char *rl_key_verdict_str(enum rl_key_verdict v);

/* ---- writers (airlockctl) ---- */

/* Makes a key: id (RL_KEY_ID_LEN + 1 bytes), full key (RL_KEY_LEN + 1
 * bytes; a secret: print once, then wipe) and its hash. Returns 0 or
 * AL_ERR_CRYPTO. */
int rl_key_generate(char *id, char *key, uint8_t hash[32]);

/* Validates a principal and a routes field. Return 0 or AL_ERR_INVAL. */
int rl_key_principal_valid(const char *p);
int rl_key_routes_valid(const char *routes);

/* Under the lock: adds key (append), or marks id revoked at now_ms.
 * The file is created (with its first line) when missing. Return 0,
 * AL_ERR_NOTFOUND (revoke: no such id), AL_ERR_EXISTS, AL_ERR_CONFIG
 * (existing file malformed; err says where), -errno. */
int rl_keys_add(const char *path, const struct rl_key *key, char *err, size_t errn);
int rl_keys_revoke(const char *path, const char *id, int64_t now_ms, char *err, size_t errn);

#endif
