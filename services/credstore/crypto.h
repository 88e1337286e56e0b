/*
 * crypto: the credential store's master key, the keys derived from it,
 * envelope encryption of secret values and the MACs that protect policy rows
 * and the audit chain (OpenSSL 3 EVP).
 *
 * Master key file: 32 random bytes written as 64 lowercase hex digits and a
 * newline, mode 0600. Loading refuses a file that group or others may read.
 * A loaded key (struct cs_master) lives in locked, non-dumpable memory
 * (al_secure_alloc) together with the keys derived from it by HKDF-SHA256:
 *
 *   info "airlock/v1/kek"          wraps the per-version data keys (DEKs)
 *   info "airlock/v1/policy-mac"   MACs credential and version rows
 *   info "airlock/v1/audit-mac"    MACs the audit chain head
 *   info "airlock/v1/check"        MACs a fixed string, so a database can tell
 *                                  whether it is opened with its own key
 *
 * Its key id is the first 16 hex digits of HMAC-SHA256(master,
 * "airlock/v1/key-id"); rows name the key id they were written under.
 *
 * Sealing a value: a fresh random 256-bit DEK and 96-bit nonce encrypt the
 * value with AES-256-GCM, AAD ("airlock/v1/value", name, version); the DEK is
 * wrapped with AES-256-GCM under the KEK with its own nonce, AAD
 * ("airlock/v1/dek", name, version, key id). Opening with another name,
 * version or master key, or after any change to a stored byte, fails with
 * AL_ERR_CRYPTO. DEKs only exist on the stack during a call and are cleansed
 * before it returns.
 *
 * Lifecycles: cs_master_load()/cs_master_from_bytes() -> cs_master_free().
 * A struct cs_master is immutable once loaded and may be shared by threads.
 * struct cs_sealed from cs_seal() -> cs_sealed_cleanup().
 * Nothing here logs a key or a value.
 */
#ifndef CS_CRYPTO_H
#define CS_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "al_wipe.h"

#define CS_KEY_LEN         32 /* master key, KEK, DEK, MAC keys */
#define CS_KEY_ID_LEN      16 /* hex digits of a key id (buffers need +1) */
#define CS_NONCE_LEN       12
#define CS_TAG_LEN         16
#define CS_WRAPPED_DEK_LEN (CS_KEY_LEN + CS_TAG_LEN) /* encrypted DEK || tag */
#define CS_MAC_LEN         32
#define CS_HASH_LEN        32
#define CS_VALUE_MAX       (64 * 1024) /* largest secret value */

/* ---- locked memory: al_secure_alloc() / al_secure_free() (al_wipe.h) ---- */

/* Overwrites n bytes at p with zeros in a way the compiler keeps. NULL-safe. */
void cs_cleanse(void *p, size_t n);

/* Returns 1 if a[0..n) equals b[0..n), else 0, in time independent of the contents. */
int cs_ct_equal(const void *a, const void *b, size_t n);

/* ---- master key ---- */

struct cs_master;

/*
 * Writes a new master key to path: 32 bytes from the OpenSSL DRBG as 64
 * lowercase hex digits + "\n", mode 0600, created exclusively (never
 * overwrites, never follows a symlink) and fsync'd. The key only passes
 * through locked memory. key_id (may be NULL; size >= CS_KEY_ID_LEN + 1) gets
 * the new key's id.
 * Returns 0, AL_ERR_EXISTS (path exists), AL_ERR_INVAL (NULL path),
 * AL_ERR_CRYPTO (random generator failed), AL_ERR_NOMEM or -errno.
 */
int cs_master_generate(const char *path, char *key_id);

/*
 * Loads the master key file at path into *out (owned by the caller; free with
 * cs_master_free). The file must be a regular file not accessible by group or
 * others and hold exactly 64 hex digits, optionally followed by one "\n".
 * Every refusal is logged (event credstore.master_key) with the path and the
 * reason, never with key material.
 * Returns 0, AL_ERR_NOTFOUND (no file), AL_ERR_CONFIG (mode allows group or
 * other access, or not a regular file), AL_ERR_INVAL (wrong length or not
 * hex), AL_ERR_CRYPTO (key derivation failed), AL_ERR_NOMEM or -errno.
 */
int cs_master_load(const char *path, struct cs_master **out);

/*
 * Builds a master key from 32 raw bytes (copied; the caller cleanses its
 * copy) into *out. Derives the KEK, the MAC keys and the key id.
 * Returns 0, AL_ERR_INVAL, AL_ERR_CRYPTO or AL_ERR_NOMEM.
 */
int cs_master_from_bytes(const uint8_t key[CS_KEY_LEN], struct cs_master **out);

/* Cleanses and frees a master key. NULL is fine. */
void cs_master_free(struct cs_master *m);

/* Returns the key's id: CS_KEY_ID_LEN lowercase hex digits, NUL-terminated,
 * owned by m. */
const char *cs_master_key_id(const struct cs_master *m);

/* ---- MACs and hashes ---- */

/* Which derived key a MAC uses. */
enum cs_mac_key {
    CS_MAC_POLICY = 0, /* credential and version rows, page tokens */
    CS_MAC_AUDIT = 1,  /* audit chain head */
    CS_MAC_CHECK = 2   /* the database's master key check value */
};

/*
 * out = HMAC-SHA256(derived key `which` of m, data[0..len)). Borrows all.
 * Returns 0, AL_ERR_INVAL (NULL m/out, unknown which) or AL_ERR_CRYPTO.
 */
int cs_mac(const struct cs_master *m, enum cs_mac_key which, const void *data, size_t len,
           uint8_t out[CS_MAC_LEN]);

/*
 * Recomputes the MAC of data and compares it with mac in constant time.
 * Returns 0 if it matches, AL_ERR_CRYPTO if not (or on OpenSSL failure),
 * AL_ERR_INVAL on NULL arguments.
 */
int cs_mac_verify(const struct cs_master *m, enum cs_mac_key which, const void *data, size_t len,
                  const uint8_t mac[CS_MAC_LEN]);

/* out = SHA-256(a[0..alen) || b[0..blen)); b may be NULL with blen 0.
 * Returns 0 or AL_ERR_CRYPTO. */
int cs_sha256(const void *a, size_t alen, const void *b, size_t blen, uint8_t out[CS_HASH_LEN]);

/* ---- envelope encryption ---- */

/* A sealed secret version as stored in a row. */
struct cs_sealed {
    char key_id[CS_KEY_ID_LEN + 1];          /* master key that wrapped the DEK */
    uint8_t dek_nonce[CS_NONCE_LEN];         /* nonce of the DEK wrap */
    uint8_t wrapped_dek[CS_WRAPPED_DEK_LEN]; /* AES-256-GCM(KEK, DEK) || tag */
    uint8_t value_nonce[CS_NONCE_LEN];       /* nonce of the value */
    uint8_t *ciphertext;                     /* AES-256-GCM(DEK, value) || tag */
    size_t ciphertext_len;                   /* value length + CS_TAG_LEN */
};

/*
 * Seals value[0..len) (1 <= len <= CS_VALUE_MAX) of credential `name`
 * version `version` (>= 1) under master m into *out. out->ciphertext is
 * malloc'ed and owned by *out (cs_sealed_cleanup). Borrows the rest.
 * Returns 0, AL_ERR_INVAL (NULL, empty name, version < 1), AL_ERR_TOOBIG
 * (len > CS_VALUE_MAX), AL_ERR_NOMEM or AL_ERR_CRYPTO. On error *out holds
 * nothing to free.
 */
int cs_seal(const struct cs_master *m, const char *name, int32_t version, const uint8_t *value,
            size_t len, struct cs_sealed *out);

/*
 * Opens `in` (which must have been sealed for exactly this name and version
 * under m; in->key_id must be m's id) into out[0..cap), which should be
 * al_secure_alloc'ed memory; *out_len gets the value length. in->ciphertext is
 * only read (it may point into a database row). On any failure out is
 * cleansed.
 * Returns 0, AL_ERR_CRYPTO (wrong key, name or version, or any altered byte),
 * AL_ERR_TOOBIG (cap smaller than the value), AL_ERR_INVAL.
 */
int cs_open(const struct cs_master *m, const char *name, int32_t version,
            const struct cs_sealed *in, uint8_t *out, size_t cap, size_t *out_len);

/*
 * Re-wraps the DEK of *io from master `from` to master `to` in place
 * (key_id, dek_nonce, wrapped_dek change; the value ciphertext does not).
 * Returns 0, AL_ERR_CRYPTO (the DEK does not open under `from` for this name
 * and version) or AL_ERR_INVAL. *io is unchanged on error.
 */
int cs_rewrap(const struct cs_master *from, const struct cs_master *to, const char *name,
              int32_t version, struct cs_sealed *io);

/* Frees io->ciphertext (after cleansing) and clears *io. NULL-safe. */
void cs_sealed_cleanup(struct cs_sealed *io);

/* ---- key rings ---- */

/*
 * The master keys a store accepts: primary seals and MACs everything new;
 * previous keys (from before a master key rotation) are still accepted for
 * reading rows that name them. All borrowed.
 */
struct cs_keyring {
    const struct cs_master *primary;
    const struct cs_master *const *previous;
    size_t n_previous;
};

/* Returns the key of ring k whose id is key_id, or NULL. Borrows everything. */
const struct cs_master *cs_keyring_find(const struct cs_keyring *k, const char *key_id);

/* ---- canonical encodings (what is MACed or hashed) ---- */

/*
 * A growable byte buffer for canonical, length-prefixed encodings: integers
 * as 8 bytes big-endian, strings and blobs as a 4-byte big-endian length and
 * the bytes. Errors are sticky: check b->err once at the end. Capped at
 * CS_BUF_MAX bytes (AL_ERR_TOOBIG). Contents are cleansed on cleanup.
 */
#define CS_BUF_MAX (8u * 1024 * 1024)
struct cs_buf {
    uint8_t *p;
    size_t len;
    size_t cap;
    int err; /* 0 or the first AL_ERR_* */
};

void cs_buf_init(struct cs_buf *b);
void cs_buf_cleanup(struct cs_buf *b);
void cs_buf_raw(struct cs_buf *b, const void *d, size_t n);
void cs_buf_i64(struct cs_buf *b, int64_t v);
void cs_buf_blob(struct cs_buf *b, const void *d, size_t n); /* length-prefixed */
void cs_buf_str(struct cs_buf *b, const char *s);            /* length-prefixed; NULL = "" */

#endif
