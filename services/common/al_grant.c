/*
 * al_grant: Ed25519 grant signing (issuers) and verification (verifiers).
 *
 * The signature covers "airlock-grant-v1\0" || the serialized Grant exactly as
 * carried in SignedGrant.grant; verification never re-serializes. A keyring is
 * a fixed array of at most AL_GRANT_KEYRING_MAX keys, filled at start-up and
 * read-only afterwards. Every failed OpenSSL call has its error queue cleared
 * before returning so a later SSL_get_error() on the same thread is not misled.
 *
 * Key files are read and written with OpenSSL; the Ed25519 arithmetic is
 * libsodium's. Signatures are verified with crypto_sign_ed25519_verify_detached
 * on the key's raw 32 bytes (kept at keyring_add): same Ed25519 (RFC 8032),
 * stricter about non-canonical and small-order encodings, and on this
 * project's machines about 1.7 times as fast as OpenSSL 3.0's
 * EVP_DigestVerify, which credstore pays on every Resolve
 * (tests/bench/credstore.sh measures both). A signer keeps libsodium's 64-byte
 * secret key (seed || public key) in locked memory (al_secure_alloc) and signs
 * with crypto_sign_ed25519_detached, 16-20 us against OpenSSL's 29 us: the
 * relay signs one grant per agent request, intake one per job attempt.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <sodium.h>

#include "al_err.h"
#include "al_grant.h"
#include "al_id.h"
#include "al_pki.h"
#include "al_wipe.h"

#define SIG_LEN     64
#define KEY_ID_HEX  16 /* hex digits of SHA-256(raw public key) in a derived key id */
#define MAX_SKEW_MS (300 * 1000)

/* sizeof includes the terminating NUL, which is part of the separator. */
static const char domain_sep[] = "airlock-grant-v1";
static const char spiffe_prefix[] = "spiffe://airlock/";

struct kr_key {
    char key_id[AL_GRANT_KEY_ID_MAX];
    char issuer[AL_GRANT_ISSUER_MAX]; /* SPIFFE id, or a role pattern (see .h) */
    char role[AL_PKI_ROLE_MAX];       /* the pattern's role when wildcard */
    int wildcard;
    uint8_t raw[AL_GRANT_ED25519_LEN]; /* the Ed25519 public key, for libsodium */
};

struct al_grant_keyring {
    size_t n;
    struct kr_key keys[AL_GRANT_KEYRING_MAX];
};

static void set_why(char *why, size_t whylen, const char *msg)
{
    if (why && whylen)
        snprintf(why, whylen, "%s", msg);
}

static int str_set(const char *s)
{
    return s && s[0];
}

static void hex(char *dst, const uint8_t *src, size_t n)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = digits[src[i] >> 4];
        dst[2 * i + 1] = digits[src[i] & 15];
    }
    dst[2 * n] = '\0';
}

/* ---- keys ---- */

int al_grant_key_id(const EVP_PKEY *pk, char *buf, size_t n)
{
    uint8_t raw[AL_GRANT_ED25519_LEN], md[32];
    size_t rl = sizeof raw;

    if (!pk || !buf || !EVP_PKEY_is_a(pk, "ED25519"))
        return AL_ERR_INVAL;
    if (n < KEY_ID_HEX + 1)
        return AL_ERR_TOOBIG;
    if (EVP_PKEY_get_raw_public_key(pk, raw, &rl) != 1 || rl != sizeof raw ||
        EVP_Digest(raw, sizeof raw, md, NULL, EVP_sha256(), NULL) != 1) {
        ERR_clear_error();
        return AL_ERR_CRYPTO;
    }
    hex(buf, md, KEY_ID_HEX / 2);
    return 0;
}

static int file_exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0 || errno != ENOENT;
}

int al_grant_key_generate(const char *path_priv, const char *path_pub, unsigned flags, char *key_id,
                          size_t key_id_len)
{
    unsigned pf = (flags & AL_GRANT_KEY_OVERWRITE) ? AL_PKI_OVERWRITE : 0;
    EVP_PKEY *pk = NULL;
    int rc, wrote_priv = 0;

    if (!path_priv || !path_pub || (flags & ~AL_GRANT_KEY_OVERWRITE))
        return AL_ERR_INVAL;
    if (!pf && (file_exists(path_priv) || file_exists(path_pub)))
        return AL_ERR_EXISTS;
    pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!pk) {
        ERR_clear_error();
        return AL_ERR_CRYPTO;
    }
    rc = key_id ? al_grant_key_id(pk, key_id, key_id_len) : 0;
    if (rc == 0)
        rc = al_pki_write_private_key(path_priv, pk, pf);
    wrote_priv = rc == 0;
    if (rc == 0)
        rc = al_pki_write_public_key(path_pub, pk, pf);
    if (rc < 0 && wrote_priv && !pf) /* no orphan private key without its public half */
        unlink(path_priv);
    EVP_PKEY_free(pk);
    return rc;
}

/* A key id is [A-Za-z0-9._-]{1,64}, the same alphabet as SPIFFE names. */
static int key_id_valid(const char *id)
{
    return al_pki_name_valid(id);
}

/* ---- signer ---- */

/* Keeps pk's secret key as libsodium's (seed || public key) in locked memory;
 * frees pk on success and on failure. */
static int signer_make(EVP_PKEY *pk, const char *key_id, const char *issuer,
                       struct al_grant_signer **out)
{
    struct al_grant_signer *s = NULL;
    uint8_t seed[AL_GRANT_ED25519_LEN], pub[AL_GRANT_ED25519_LEN];
    size_t n = sizeof seed;
    int rc = AL_ERR_INVAL;

    if (!EVP_PKEY_is_a(pk, "ED25519") || !issuer || strlen(issuer) >= AL_GRANT_ISSUER_MAX ||
        al_pki_parse_spiffe(issuer, NULL, 0, NULL, 0) < 0 || (key_id && !key_id_valid(key_id)))
        goto out;
    rc = AL_ERR_CRYPTO;
    if (sodium_init() < 0)
        goto out;
    rc = AL_ERR_NOMEM;
    s = calloc(1, sizeof *s);
    if (!s)
        goto out;
    s->sk = al_secure_alloc(crypto_sign_ed25519_SECRETKEYBYTES);
    if (!s->sk)
        goto out;
    rc = AL_ERR_CRYPTO;
    if (EVP_PKEY_get_raw_private_key(pk, seed, &n) != 1 || n != sizeof seed ||
        crypto_sign_ed25519_seed_keypair(pub, s->sk, seed) != 0)
        goto out;
    rc = key_id ? 0 : al_grant_key_id(pk, s->key_id, sizeof s->key_id);
    if (rc < 0)
        goto out;
    if (key_id) /* lengths were checked above, so these never truncate */
        snprintf(s->key_id, sizeof s->key_id, "%s", key_id);
    snprintf(s->issuer, sizeof s->issuer, "%s", issuer);
    *out = s;
    s = NULL;
out:
    OPENSSL_cleanse(seed, sizeof seed);
    al_grant_signer_free(s);
    EVP_PKEY_free(pk);
    if (rc < 0)
        ERR_clear_error();
    return rc;
}

int al_grant_signer_new(const char *key_file, const char *key_id, const char *issuer,
                        struct al_grant_signer **out)
{
    EVP_PKEY *pk = NULL;
    int rc;

    if (!key_file || !out)
        return AL_ERR_INVAL;
    *out = NULL;
    rc = al_pki_load_private_key(key_file, &pk);
    if (rc < 0) {
        ERR_clear_error();
        return rc;
    }
    return signer_make(pk, key_id, issuer, out);
}

int al_grant_signer_new_raw(const uint8_t *seed, size_t seedlen, const char *key_id,
                            const char *issuer, struct al_grant_signer **out)
{
    EVP_PKEY *pk;

    if (!seed || seedlen != AL_GRANT_ED25519_LEN || !out)
        return AL_ERR_INVAL;
    *out = NULL;
    pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, seedlen);
    if (!pk) {
        ERR_clear_error();
        return AL_ERR_CRYPTO;
    }
    return signer_make(pk, key_id, issuer, out);
}

void al_grant_signer_free(struct al_grant_signer *s)
{
    if (!s)
        return;
    al_secure_free(s->sk); /* cleansed before it is unmapped */
    s->sk = NULL;
    free(s);
}

int al_grant_signer_public_raw(const struct al_grant_signer *s, uint8_t *pub, size_t publen)
{
    if (!s || !pub || publen < AL_GRANT_ED25519_LEN)
        return AL_ERR_INVAL;
    /* libsodium's secret key is seed || public key */
    memcpy(pub, s->sk + AL_GRANT_ED25519_LEN, AL_GRANT_ED25519_LEN);
    return 0;
}

/* ---- signing ---- */

/* Every string set, list entries non-empty, 0 < not_before_ms < expires_ms. */
static int grant_well_formed(const Airlock__V1__Grant *g)
{
    if (!str_set(g->grant_id) || !str_set(g->issuer) || !str_set(g->audience) ||
        !str_set(g->holder) || !str_set(g->principal) || !str_set(g->subject) || !str_set(g->scope))
        return 0;
    for (size_t i = 0; i < g->n_credentials; i++) {
        if (!str_set(g->credentials[i]))
            return 0;
    }
    for (size_t i = 0; i < g->n_destinations; i++) {
        if (!str_set(g->destinations[i]))
            return 0;
    }
    return g->not_before_ms > 0 && g->expires_ms > g->not_before_ms;
}

/* Returns "airlock-grant-v1\0" || g[0..glen) in a malloc'd buffer, or NULL. */
static uint8_t *signed_message(const uint8_t *g, size_t glen, size_t *mlen)
{
    uint8_t *m = malloc(sizeof domain_sep + glen);

    if (!m)
        return NULL;
    memcpy(m, domain_sep, sizeof domain_sep);
    memcpy(m + sizeof domain_sep, g, glen);
    *mlen = sizeof domain_sep + glen;
    return m;
}

static int sign_bytes(const uint8_t *sk, const uint8_t *g, size_t glen, uint8_t sig[SIG_LEN])
{
    size_t mlen = 0;
    uint8_t *m = signed_message(g, glen, &mlen);
    int rc = AL_ERR_NOMEM;

    if (!m)
        return rc;
    rc = crypto_sign_ed25519_detached(sig, NULL, m, mlen, sk) == 0 ? 0 : AL_ERR_CRYPTO;
    free(m);
    return rc;
}

/* Packs the envelope around the already serialized grant g. */
static int pack_signed(const char *key_id, uint8_t *g, size_t glen, uint8_t *sig, uint8_t **out,
                       size_t *outlen)
{
    Airlock__V1__SignedGrant sg = AIRLOCK__V1__SIGNED_GRANT__INIT;
    size_t n;

    sg.grant.data = g;
    sg.grant.len = glen;
    sg.key_id = (char *)key_id; /* protobuf-c wants char *; only read by pack */
    sg.signature.data = sig;
    sg.signature.len = SIG_LEN;
    n = airlock__v1__signed_grant__get_packed_size(&sg);
    if (n > AL_GRANT_MAX_SIZE)
        return AL_ERR_TOOBIG;
    *out = malloc(n);
    if (!*out)
        return AL_ERR_NOMEM;
    *outlen = airlock__v1__signed_grant__pack(&sg, *out);
    return 0;
}

int al_grant_sign(const struct al_grant_signer *s, const Airlock__V1__Grant *g, uint8_t **out,
                  size_t *outlen)
{
    Airlock__V1__Grant copy;
    char id[AL_ID_HEX_LEN + 1];
    uint8_t sig[SIG_LEN], *gbuf = NULL;
    size_t glen;
    int rc = AL_ERR_INVAL;

    if (!s || !g || !out || !outlen)
        return AL_ERR_INVAL;
    *out = NULL;
    *outlen = 0;
    copy = *g; /* shallow: only the two pointers below are replaced */
    if (!str_set(copy.grant_id)) {
        if (al_id_new_hex(id) < 0) {
            rc = AL_ERR_CRYPTO;
            goto out;
        }
        copy.grant_id = id; /* time-ordered: see al_id.h */
    }
    if (!str_set(copy.issuer))
        copy.issuer = (char *)s->issuer; /* only read by pack */
    if (strcmp(copy.issuer, s->issuer) != 0 || !grant_well_formed(&copy))
        goto out;
    rc = AL_ERR_TOOBIG;
    glen = airlock__v1__grant__get_packed_size(&copy);
    if (glen > AL_GRANT_MAX_SIZE)
        goto out;
    rc = AL_ERR_NOMEM;
    gbuf = malloc(glen);
    if (!gbuf)
        goto out;
    airlock__v1__grant__pack(&copy, gbuf);
    rc = sign_bytes(s->sk, gbuf, glen, sig);
    if (rc == 0)
        rc = pack_signed(s->key_id, gbuf, glen, sig, out, outlen);
out:
    if (rc < 0)
        ERR_clear_error();
    free(gbuf);
    return rc;
}

/* ---- keyring ---- */

int al_grant_keyring_new(struct al_grant_keyring **out)
{
    if (!out)
        return AL_ERR_INVAL;
    *out = NULL;
    if (sodium_init() < 0) /* once per process; later calls return 1 */
        return AL_ERR_CRYPTO;
    *out = calloc(1, sizeof **out);
    return *out ? 0 : AL_ERR_NOMEM;
}

void al_grant_keyring_free(struct al_grant_keyring *kr)
{
    free(kr);
}

size_t al_grant_keyring_count(const struct al_grant_keyring *kr)
{
    return kr ? kr->n : 0;
}

/* Accepts "spiffe://airlock/<role>/<name>" or the role pattern "spiffe://airlock/<role>/" + "*". */
static int parse_issuer_pattern(const char *issuer, struct kr_key *k)
{
    size_t n = issuer ? strlen(issuer) : 0;
    char tmp[AL_GRANT_ISSUER_MAX];

    if (n == 0 || n >= sizeof tmp)
        return AL_ERR_INVAL;
    memcpy(tmp, issuer, n + 1);
    k->wildcard = n > 2 && strcmp(issuer + n - 2, "/*") == 0;
    if (k->wildcard)
        tmp[n - 1] = 'x'; /* any valid name, to reuse the SPIFFE parser */
    if (al_pki_parse_spiffe(tmp, k->role, sizeof k->role, NULL, 0) < 0)
        return AL_ERR_INVAL;
    memcpy(k->issuer, issuer, n + 1);
    return 0;
}

static const struct kr_key *find_key(const struct al_grant_keyring *kr, const char *key_id)
{
    for (size_t i = 0; i < kr->n; i++) {
        if (strcmp(kr->keys[i].key_id, key_id) == 0)
            return &kr->keys[i];
    }
    return NULL;
}

/* Takes pk on success and on failure. */
static int keyring_add(struct al_grant_keyring *kr, const char *key_id, const char *issuer,
                       EVP_PKEY *pk)
{
    struct kr_key k = {0};
    int rc = AL_ERR_INVAL;

    if (!EVP_PKEY_is_a(pk, "ED25519") || (key_id && !key_id_valid(key_id)))
        goto out;
    rc = parse_issuer_pattern(issuer, &k);
    if (rc == 0 && key_id) /* length checked by key_id_valid */
        snprintf(k.key_id, sizeof k.key_id, "%s", key_id);
    else if (rc == 0)
        rc = al_grant_key_id(pk, k.key_id, sizeof k.key_id);
    if (rc == 0 && find_key(kr, k.key_id))
        rc = AL_ERR_EXISTS;
    if (rc == 0 && kr->n == AL_GRANT_KEYRING_MAX)
        rc = AL_ERR_TOOBIG;
    if (rc == 0) {
        size_t rl = sizeof(k.raw);
        if (EVP_PKEY_get_raw_public_key(pk, k.raw, &rl) != 1 || rl != sizeof(k.raw)) {
            ERR_clear_error();
            rc = AL_ERR_CRYPTO;
        }
    }
    if (rc == 0)
        kr->keys[kr->n++] = k;
out:
    EVP_PKEY_free(pk);
    return rc;
}

int al_grant_keyring_add_pem(struct al_grant_keyring *kr, const char *key_id, const char *issuer,
                             const char *pem_path)
{
    EVP_PKEY *pk = NULL;
    int rc;

    if (!kr || !pem_path)
        return AL_ERR_INVAL;
    rc = al_pki_load_public_key(pem_path, &pk);
    if (rc < 0) {
        ERR_clear_error();
        return rc;
    }
    return keyring_add(kr, key_id, issuer, pk);
}

int al_grant_keyring_add_raw(struct al_grant_keyring *kr, const char *key_id, const char *issuer,
                             const uint8_t *pub, size_t publen)
{
    EVP_PKEY *pk;

    if (!kr || !pub || publen != AL_GRANT_ED25519_LEN)
        return AL_ERR_INVAL;
    pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, publen);
    if (!pk) {
        ERR_clear_error();
        return AL_ERR_CRYPTO;
    }
    return keyring_add(kr, key_id, issuer, pk);
}

/* ---- verification ---- */

void al_grant_expect_init(struct al_grant_expect *e, const char *audience, const char *holder)
{
    e->audience = audience;
    e->holder = holder;
    e->max_skew_ms = AL_GRANT_DEFAULT_SKEW_MS;
    e->max_lifetime_ms = AL_GRANT_DEFAULT_LIFETIME_MS;
}

void al_grant_free(Airlock__V1__Grant *g)
{
    airlock__v1__grant__free_unpacked(g, NULL);
}

static int check_args(const struct al_grant_keyring *kr, const uint8_t *buf,
                      const struct al_grant_expect *w, int64_t now_ms, Airlock__V1__Grant **out)
{
    if (!kr || !buf || !w || !out || now_ms < 0)
        return AL_ERR_INVAL;
    if (!str_set(w->audience) || !str_set(w->holder))
        return AL_ERR_INVAL;
    if (w->max_skew_ms < 0 || w->max_skew_ms > MAX_SKEW_MS || w->max_lifetime_ms <= 0)
        return AL_ERR_INVAL;
    return 0;
}

/* Size cap, envelope parse and completeness, key lookup. */
static int open_envelope(const struct al_grant_keyring *kr, const uint8_t *buf, size_t len,
                         Airlock__V1__SignedGrant **sg, const struct kr_key **k, const char **msg)
{
    if (len > AL_GRANT_MAX_SIZE) {
        *msg = "grant too large";
        return AL_ERR_TOOBIG;
    }
    *sg = airlock__v1__signed_grant__unpack(NULL, len, buf);
    if (!*sg) {
        *msg = "malformed signed grant";
        return AL_ERR_INVAL;
    }
    if ((*sg)->grant.len == 0 || !str_set((*sg)->key_id) || (*sg)->signature.len != SIG_LEN) {
        *msg = "signed grant incomplete";
        return AL_ERR_INVAL;
    }
    *k = find_key(kr, (*sg)->key_id);
    if (!*k) {
        *msg = "unknown key id";
        return AL_ERR_NOTFOUND;
    }
    return 0;
}

static int check_signature(const struct kr_key *k, const Airlock__V1__SignedGrant *sg,
                           const char **msg)
{
    size_t mlen = 0;
    uint8_t *m = signed_message(sg->grant.data, sg->grant.len, &mlen);
    int rc;

    if (!m) {
        *msg = "out of memory";
        return AL_ERR_NOMEM;
    }
    rc = crypto_sign_ed25519_verify_detached(sg->signature.data, m, mlen, k->raw) == 0
             ? 0
             : AL_ERR_CRYPTO;
    if (rc < 0)
        *msg = "bad signature";
    free(m);
    return rc;
}

static int read_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *v)
{
    uint64_t r = 0;

    for (unsigned shift = 0; shift < 64 && *pos < len; shift += 7) {
        uint8_t b = p[(*pos)++];
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

/*
 * protobuf-c returns strings NUL-terminated without their length, so
 * "spiffe://a/b\0junk" would read as "spiffe://a/b". Walks the raw grant and
 * refuses a NUL inside any of its string fields (numbers 1-9); unknown fields
 * may hold anything. Returns 1 when one is found or the walk fails.
 */
static int strings_have_nul(const uint8_t *p, size_t len)
{
    size_t pos = 0;
    uint64_t key, l;

    while (pos < len) {
        if (read_varint(p, len, &pos, &key) < 0)
            return 1;
        switch (key & 7) {
        case 0:
            if (read_varint(p, len, &pos, &l) < 0)
                return 1;
            break;
        case 1:
        case 5:
            l = (key & 7) == 1 ? 8 : 4;
            if (len - pos < l)
                return 1;
            pos += l;
            break;
        case 2:
            if (read_varint(p, len, &pos, &l) < 0 || l > len - pos)
                return 1;
            if ((key >> 3) >= 1 && (key >> 3) <= 9 && memchr(p + pos, 0, l))
                return 1;
            pos += l;
            break;
        default:
            return 1;
        }
    }
    return 0;
}

static int parse_grant(const ProtobufCBinaryData *bytes, Airlock__V1__Grant **g, const char **msg)
{
    *msg = "malformed grant";
    *g = airlock__v1__grant__unpack(NULL, bytes->len, bytes->data);
    if (!*g || strings_have_nul(bytes->data, bytes->len) || !grant_well_formed(*g))
        return AL_ERR_INVAL;
    return 0;
}

static int issuer_matches(const struct kr_key *k, const char *issuer)
{
    char role[AL_PKI_ROLE_MAX];

    if (!k->wildcard)
        return strcmp(k->issuer, issuer) == 0;
    return al_pki_parse_spiffe(issuer, role, sizeof role, NULL, 0) == 0 &&
           strcmp(role, k->role) == 0;
}

/* Equal to self, or the role-wide id "spiffe://airlock/<role>" of self's role. */
static int audience_matches(const char *aud, const char *self)
{
    const size_t pl = sizeof spiffe_prefix - 1;
    char role[AL_PKI_ROLE_MAX];

    if (strcmp(aud, self) == 0)
        return 1;
    if (al_pki_parse_spiffe(self, role, sizeof role, NULL, 0) < 0)
        return 0;
    return strncmp(aud, spiffe_prefix, pl) == 0 && strcmp(aud + pl, role) == 0;
}

static int check_parties(const struct kr_key *k, const Airlock__V1__Grant *g,
                         const struct al_grant_expect *w, const char **msg)
{
    if (!issuer_matches(k, g->issuer)) {
        *msg = "issuer not allowed for this key";
        return AL_ERR_AUTH;
    }
    if (!audience_matches(g->audience, w->audience)) {
        *msg = "wrong audience";
        return AL_ERR_AUTH;
    }
    if (strcmp(g->holder, w->holder) != 0) {
        *msg = "wrong holder";
        return AL_ERR_AUTH;
    }
    return 0;
}

/* Well-formedness guarantees 0 < not_before < expires, so no difference overflows. */
static int check_time(const Airlock__V1__Grant *g, const struct al_grant_expect *w, int64_t now,
                      const char **msg)
{
    if (now < g->not_before_ms && g->not_before_ms - now > w->max_skew_ms) {
        *msg = "not yet valid";
        return AL_ERR_EXPIRED;
    }
    if (now >= g->expires_ms && now - g->expires_ms >= w->max_skew_ms) {
        *msg = "expired";
        return AL_ERR_EXPIRED;
    }
    if (g->expires_ms - g->not_before_ms > w->max_lifetime_ms) {
        *msg = "lifetime over the limit";
        return AL_ERR_EXPIRED;
    }
    return 0;
}

int al_grant_verify(const struct al_grant_keyring *kr, const uint8_t *buf, size_t len,
                    const struct al_grant_expect *want, int64_t now_ms, Airlock__V1__Grant **out,
                    char *why, size_t whylen)
{
    Airlock__V1__SignedGrant *sg = NULL;
    Airlock__V1__Grant *g = NULL;
    const struct kr_key *k = NULL;
    const char *msg = "bad arguments";
    int rc;

    if (out)
        *out = NULL;
    rc = check_args(kr, buf, want, now_ms, out);
    if (rc == 0)
        rc = open_envelope(kr, buf, len, &sg, &k, &msg);
    if (rc == 0)
        rc = check_signature(k, sg, &msg);
    if (rc == 0)
        rc = parse_grant(&sg->grant, &g, &msg);
    if (rc == 0)
        rc = check_parties(k, g, want, &msg);
    if (rc == 0)
        rc = check_time(g, want, now_ms, &msg);
    if (rc == 0) {
        msg = "ok";
        *out = g;
        g = NULL;
    } else {
        ERR_clear_error();
    }
    set_why(why, whylen, msg);
    al_grant_free(g);
    airlock__v1__signed_grant__free_unpacked(sg, NULL);
    return rc;
}
