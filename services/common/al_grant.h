/*
 * al_grant: signing and verifying grants (proto/airlock/v1/grant.proto).
 *
 * An issuer (intake, relay) holds a struct al_grant_signer: an Ed25519 private
 * key, its key id and the issuer's SPIFFE id. al_grant_sign() turns an
 * Airlock__V1__Grant into a serialized SignedGrant whose signature covers
 * "airlock-grant-v1\0" || the exact serialized grant bytes.
 *
 * A verifier (credstore, gateway, executor) holds a struct al_grant_keyring:
 * the public keys it trusts, each bound to one issuer SPIFFE id or to every
 * name of one role (the pattern "spiffe://airlock/intake/" followed by "*"; a
 * block comment cannot spell it in one piece). Several keys may name the
 * same issuer, so keys rotate by adding the new one before signing with it.
 * al_grant_verify() checks a grant in a fixed order and says why it failed.
 *
 * Lifecycles: signer and keyring are _new/_free heap objects, immutable after
 * setup; a keyring may be shared by threads once no more keys are added.
 * Grants returned by al_grant_verify() are freed with al_grant_free().
 */
#ifndef AL_GRANT_H
#define AL_GRANT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "airlock/v1/grant.pb-c.h"

#define AL_GRANT_MAX_SIZE            (16 * 1024) /* largest serialized SignedGrant accepted */
#define AL_GRANT_KEY_ID_MAX          65          /* buffer size for any key id plus NUL */
#define AL_GRANT_ISSUER_MAX          128 /* buffer size for any issuer or pattern plus NUL */
#define AL_GRANT_KEYRING_MAX         64  /* keys one keyring holds */
#define AL_GRANT_ED25519_LEN         32  /* raw Ed25519 public key or seed */
#define AL_GRANT_DEFAULT_SKEW_MS     (30 * 1000)
#define AL_GRANT_DEFAULT_LIFETIME_MS (24 * 3600 * 1000LL)

/* Flags for al_grant_key_generate. */
#define AL_GRANT_KEY_OVERWRITE 0x1u /* replace existing key files */

/* ---- keys ---- */

/*
 * Generates an Ed25519 key pair: path_priv gets PKCS#8 PEM (mode 0600),
 * path_pub SubjectPublicKeyInfo PEM (0644). Without AL_GRANT_KEY_OVERWRITE
 * both are created exclusively (the private key first, so an existing key is
 * never half-replaced). key_id (may be NULL) gets the derived key id, see
 * al_grant_key_id(); key_id_len >= AL_GRANT_KEY_ID_MAX always suffices.
 * Returns 0, AL_ERR_EXISTS, AL_ERR_CRYPTO, AL_ERR_INVAL, AL_ERR_TOOBIG or -errno.
 */
int al_grant_key_generate(const char *path_priv, const char *path_pub, unsigned flags, char *key_id,
                          size_t key_id_len);

/*
 * Derives the default key id of an Ed25519 key (public or private): the first
 * 16 hex digits of SHA-256 over the 32-byte raw public key. Borrows pk.
 * Returns 0, AL_ERR_INVAL (not Ed25519), AL_ERR_TOOBIG (buf < 17) or AL_ERR_CRYPTO.
 */
int al_grant_key_id(const EVP_PKEY *pk, char *buf, size_t n);

/* ---- signer ---- */

/* Read-only after al_grant_signer_new; owned by the signer. */
struct al_grant_signer {
    char key_id[AL_GRANT_KEY_ID_MAX];
    char issuer[AL_GRANT_ISSUER_MAX]; /* SPIFFE id of the issuing service */
    /* libsodium's Ed25519 secret key (seed || public key), 64 bytes, in
     * al_secure_alloc'd locked memory */
    uint8_t *sk;
};

/*
 * Loads the Ed25519 private key in PEM file key_file into a new signer for
 * issuer (a SPIFFE id, see al_pki_parse_spiffe). key_id NULL derives it from
 * the key (al_grant_key_id); otherwise it must match [A-Za-z0-9._-]{1,64}.
 * Copies key_id and issuer. *out is freed with al_grant_signer_free.
 * Returns 0, AL_ERR_INVAL (bad issuer or key id, key not Ed25519),
 * AL_ERR_NOTFOUND (no file), AL_ERR_CRYPTO (not a PEM key), AL_ERR_NOMEM or -errno.
 */
int al_grant_signer_new(const char *key_file, const char *key_id, const char *issuer,
                        struct al_grant_signer **out);

/* As al_grant_signer_new, from a 32-byte Ed25519 seed (tests, fuzzing). Copies seed. */
int al_grant_signer_new_raw(const uint8_t *seed, size_t seedlen, const char *key_id,
                            const char *issuer, struct al_grant_signer **out);

/* Frees the signer and its key; NULL is fine. */
void al_grant_signer_free(struct al_grant_signer *s);

/* Copies the signer's 32-byte raw public key into pub (for al_grant_keyring_add_raw). */
int al_grant_signer_public_raw(const struct al_grant_signer *s, uint8_t *pub, size_t publen);

/*
 * Signs g: fills grant_id when empty (32 hex digits: the time in ms in the first
 * 48 bits, then 80 random bits, so ids sort by time) and issuer with
 * the signer's issuer when empty (a different non-empty issuer is AL_ERR_INVAL),
 * checks the grant is well formed (every string field set, each credential and
 * destination non-empty, 0 < not_before_ms < expires_ms), serializes it and
 * wraps it in a SignedGrant. Borrows g (not modified); *out (length *outlen) is
 * malloc'd and freed by the caller with free().
 * Returns 0, AL_ERR_INVAL (malformed grant), AL_ERR_TOOBIG (over
 * AL_GRANT_MAX_SIZE), AL_ERR_CRYPTO (RNG or signing failure) or AL_ERR_NOMEM.
 */
int al_grant_sign(const struct al_grant_signer *s, const Airlock__V1__Grant *g, uint8_t **out,
                  size_t *outlen);

/* ---- keyring ---- */

struct al_grant_keyring;

/* Returns 0 or AL_ERR_NOMEM; *out is empty and freed with al_grant_keyring_free. */
int al_grant_keyring_new(struct al_grant_keyring **out);

/* Frees the keyring and every key in it; NULL is fine. */
void al_grant_keyring_free(struct al_grant_keyring *kr);

/*
 * Trusts the Ed25519 public key in PEM file pem_path for grants whose issuer
 * matches issuer: either a SPIFFE id (exact match) or "spiffe://airlock/<role>/"
 * followed by "*" (any valid name of that role). key_id NULL derives it (al_grant_key_id).
 * Copies key_id and issuer.
 * Returns 0, AL_ERR_INVAL (bad issuer pattern, key id, or key not Ed25519),
 * AL_ERR_EXISTS (key id already in the keyring), AL_ERR_TOOBIG (keyring full),
 * AL_ERR_NOTFOUND (no file), AL_ERR_CRYPTO (not a PEM public key), AL_ERR_NOMEM or -errno.
 */
int al_grant_keyring_add_pem(struct al_grant_keyring *kr, const char *key_id, const char *issuer,
                             const char *pem_path);

/* As al_grant_keyring_add_pem, from a 32-byte raw Ed25519 public key (copied). */
int al_grant_keyring_add_raw(struct al_grant_keyring *kr, const char *key_id, const char *issuer,
                             const uint8_t *pub, size_t publen);

/* Number of keys in kr. */
size_t al_grant_keyring_count(const struct al_grant_keyring *kr);

/* ---- verification ---- */

/* What the verifier expects; strings are borrowed for the call. */
struct al_grant_expect {
    /* The verifying service's SPIFFE id, e.g. "spiffe://airlock/credstore/credstore-0".
     * A grant's audience matches when equal to it, or when it is the role-wide
     * id "spiffe://airlock/<role>" of this id's role. Required. */
    const char *audience;
    /* SPIFFE id of the peer presenting the grant (from its TLS certificate). Required. */
    const char *holder;
    /* Clock skew tolerated at both ends of the validity window; 0..300000. */
    int64_t max_skew_ms;
    /* Longest accepted expires_ms - not_before_ms; > 0. */
    int64_t max_lifetime_ms;
};

/* Fills e with audience, holder and the AL_GRANT_DEFAULT_* limits. Borrows the strings. */
void al_grant_expect_init(struct al_grant_expect *e, const char *audience, const char *holder);

/*
 * Verifies the serialized SignedGrant buf[0..len) at time now_ms (Unix ms).
 * Checks, in this order, each failing with its own code:
 *   size <= AL_GRANT_MAX_SIZE            AL_ERR_TOOBIG
 *   SignedGrant parses, all fields set,
 *   signature is 64 bytes                AL_ERR_INVAL
 *   key id is in kr                      AL_ERR_NOTFOUND
 *   Ed25519 signature over
 *   "airlock-grant-v1\0" || grant bytes  AL_ERR_CRYPTO
 *   Grant parses and is well formed
 *   (see al_grant_sign; no NUL bytes
 *   inside any string)                   AL_ERR_INVAL
 *   issuer matches the key's issuer      AL_ERR_AUTH
 *   audience matches want->audience      AL_ERR_AUTH
 *   holder equals want->holder           AL_ERR_AUTH
 *   not_before - skew <= now < expires + skew
 *                                        AL_ERR_EXPIRED
 *   lifetime <= want->max_lifetime_ms    AL_ERR_EXPIRED
 * Bad arguments (NULL, empty audience/holder, limits out of range, now_ms < 0)
 * are AL_ERR_INVAL; out of memory AL_ERR_NOMEM.
 * why (may be NULL) gets a short fixed text naming the failed check, never
 * grant contents, so it is safe to log. On success *out owns the parsed grant
 * (free with al_grant_free); on failure *out is NULL. Borrows kr, buf and want.
 */
int al_grant_verify(const struct al_grant_keyring *kr, const uint8_t *buf, size_t len,
                    const struct al_grant_expect *want, int64_t now_ms, Airlock__V1__Grant **out,
                    char *why, size_t whylen);

/* Frees a grant returned by al_grant_verify; NULL is fine. */
void al_grant_free(Airlock__V1__Grant *g);

#endif
