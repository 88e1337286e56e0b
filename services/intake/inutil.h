/*
 * inutil: small helpers shared by airlock-intake's modules: clock, random
 * bytes, hex, constant-time comparison, SHA-256, name syntax checks, globs
 * and a string-keyed hash map.
 *
 * Nothing here keeps global state. The map owns copies of its keys and
 * borrows its values; it belongs to one thread.
 */
#ifndef IN_UTIL_H
#define IN_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define IN_GLOB_MAX 256 /* longest pattern or subject in_glob_match() looks at */

/* Unix time in milliseconds (CLOCK_REALTIME). */
int64_t in_now_ms(void);

/* Fills buf with n bytes from the OpenSSL CSPRNG. Returns 0 or AL_ERR_CRYPTO. */
int in_random(void *buf, size_t n);

/* Writes 2n lowercase hex digits and a NUL into out (size >= 2n + 1). */
void in_hex(const uint8_t *in, size_t n, char *out);

/* Decodes exactly 2*outlen hex digits (either case) from s[0..len). Returns 0
 * or AL_ERR_INVAL (wrong length or a non-hex character). */
int in_unhex(const char *s, size_t len, uint8_t *out, size_t outlen);

/* 1 when s is exactly n hex digits (lower or upper case). */
int in_is_hex(const char *s, size_t n);

/* Constant-time equality of a[0..n) and b[0..n): 1 equal, 0 not. */
int in_ct_equal(const void *a, const void *b, size_t n);

/* SHA-256 of buf[0..len) into out. Returns 0 or AL_ERR_CRYPTO. */
int in_sha256(const void *buf, size_t len, uint8_t out[32]);

/* 1 when s is 1..max characters of [A-Za-z0-9._-]. */
int in_name_valid(const char *s, size_t max);

/* 1 when s is a principal name: 1-128 characters of [A-Za-z0-9._-] in one or
 * more "/"-separated non-empty segments. */
int in_principal_valid(const char *s);

/* 1 when s is an environment variable name [A-Za-z_][A-Za-z0-9_]*. */
int in_env_name_valid(const char *s);

/*
 * Glob match of s against pat (both NUL-terminated, borrowed): "*" matches
 * any run of characters except "/", "**" matches anything; every other
 * character matches itself. Subjects or patterns longer than IN_GLOB_MAX
 * never match. Returns 1 on a match, else 0.
 */
int in_glob_match(const char *pat, const char *s);

/* 1 when s matches any of list[0..n) (in_glob_match). */
int in_glob_any(char *const *list, size_t n, const char *s);

/* ---- string-keyed hash map ---- */

struct in_map;

/* Returns 0 and *out (in_map_free) or AL_ERR_NOMEM. */
int in_map_new(struct in_map **out);
/* Frees the map and its key copies (not the values). NULL is fine. */
void in_map_free(struct in_map *m);
/* The value stored for key, or NULL. */
void *in_map_get(const struct in_map *m, const char *key);
/* Stores value for key (key copied; replaces an existing value). Returns 0
 * or AL_ERR_NOMEM. */
int in_map_put(struct in_map *m, const char *key, void *value);
/* Removes key; returns its value or NULL. */
void *in_map_del(struct in_map *m, const char *key);
/* Number of keys. */
size_t in_map_count(const struct in_map *m);
/* Calls fn for every entry; fn must not change the map. */
void in_map_each(const struct in_map *m, void (*fn)(const char *key, void *value, void *user),
                 void *user);

#endif
