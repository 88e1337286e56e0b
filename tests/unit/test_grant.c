/*
 * Unit tests for al_grant (signing, keyring, every verification check) and
 * al_base64 (the encoding grants travel in over HTTP headers).
 *
 * Keys come from fixed seeds so failures reproduce; key files are written into
 * a mkdtemp directory that is removed at the end.
 */
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

#include <CUnit/Basic.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "al_base64.h"
#include "al_err.h"
#include "al_grant.h"

#define NOW      1800000000000LL
#define ISSUER   "spiffe://airlock/intake/intake-0"
#define HOLDER   "spiffe://airlock/executor/executor-0"
#define SELF     "spiffe://airlock/credstore/credstore-0"
#define AUD_ROLE "spiffe://airlock/credstore"

static const uint8_t seed_a[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                   17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t seed_b[32] = {0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7,
                                   0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf};

static struct al_grant_signer *sig_a; /* key "a", issuer intake-0, trusted */
static struct al_grant_keyring *ring; /* key "a" for ISSUER */
static char *creds[] = {"github", "npm"};
static char *dests[] = {"api.github.com:443"};

static void grant_init(Airlock__V1__Grant *g)
{
    airlock__v1__grant__init(g);
    g->issuer = ISSUER;
    g->audience = AUD_ROLE;
    g->holder = HOLDER;
    g->principal = "tenant-a";
    g->subject = "job/j1/attempt/1";
    g->scope = "ci";
    g->n_credentials = 2;
    g->credentials = creds;
    g->n_destinations = 1;
    g->destinations = dests;
    g->not_before_ms = NOW - 1000;
    g->expires_ms = NOW + 60000;
}

static int verify_at(const uint8_t *buf, size_t len, int64_t now, const char *holder,
                     const char *self, char *why, size_t whylen)
{
    struct al_grant_expect e;
    Airlock__V1__Grant *out = (Airlock__V1__Grant *)1;
    int rc;

    al_grant_expect_init(&e, self, holder);
    rc = al_grant_verify(ring, buf, len, &e, now, &out, why, whylen);
    if (rc < 0)
        CU_ASSERT_PTR_NULL(out);
    al_grant_free(out == (Airlock__V1__Grant *)1 ? NULL : out);
    return rc;
}

static int verify(const uint8_t *buf, size_t len)
{
    return verify_at(buf, len, NOW, HOLDER, SELF, NULL, 0);
}

/* Signs the default grant after letting the caller adjust it. */
static int sign_with(struct al_grant_signer *s, void (*adjust)(Airlock__V1__Grant *), uint8_t **buf,
                     size_t *len)
{
    Airlock__V1__Grant g;

    grant_init(&g);
    if (adjust)
        adjust(&g);
    return al_grant_sign(s, &g, buf, len);
}

/* Builds a SignedGrant around arbitrary grant bytes, signed with seed (bypasses al_grant_sign). */
static void sign_raw(const uint8_t *seed, const char *key_id, const uint8_t *g, size_t glen,
                     uint8_t **out, size_t *outlen)
{
    Airlock__V1__SignedGrant sg = AIRLOCK__V1__SIGNED_GRANT__INIT;
    EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t *m = malloc(17 + glen), sig[64];
    size_t siglen = sizeof sig;

    memcpy(m, "airlock-grant-v1", 17);
    memcpy(m + 17, g, glen);
    CU_ASSERT_FATAL(EVP_DigestSignInit(ctx, NULL, NULL, NULL, pk) == 1);
    CU_ASSERT_FATAL(EVP_DigestSign(ctx, sig, &siglen, m, 17 + glen) == 1);
    sg.grant.data = (uint8_t *)g;
    sg.grant.len = glen;
    sg.key_id = (char *)key_id;
    sg.signature.data = sig;
    sg.signature.len = siglen;
    *outlen = airlock__v1__signed_grant__get_packed_size(&sg);
    *out = malloc(*outlen);
    airlock__v1__signed_grant__pack(&sg, *out);
    free(m);
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pk);
}

/* Serialized default grant, with a grant id, for sign_raw. */
static uint8_t *pack_default(void (*adjust)(Airlock__V1__Grant *), size_t *len)
{
    Airlock__V1__Grant g;
    uint8_t *b;

    grant_init(&g);
    g.grant_id = "00112233445566778899aabbccddeeff";
    if (adjust)
        adjust(&g);
    *len = airlock__v1__grant__get_packed_size(&g);
    b = malloc(*len + 32);
    airlock__v1__grant__pack(&g, b);
    return b;
}

static int suite_init(void)
{
    uint8_t pub[32];

    if (al_grant_signer_new_raw(seed_a, 32, "a", ISSUER, &sig_a) < 0 ||
        al_grant_signer_public_raw(sig_a, pub, sizeof pub) < 0 || al_grant_keyring_new(&ring) < 0)
        return -1;
    return al_grant_keyring_add_raw(ring, "a", ISSUER, pub, sizeof pub) < 0 ? -1 : 0;
}

static int suite_clean(void)
{
    al_grant_signer_free(sig_a);
    sig_a = NULL;
    al_grant_keyring_free(ring);
    ring = NULL;
    return 0;
}

/* ---- tests ---- */

static void test_sign_verify_ok(void)
{
    struct al_grant_expect e;
    Airlock__V1__Grant *g = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    char why[64];

    CU_ASSERT_EQUAL_FATAL(sign_with(sig_a, NULL, &buf, &len), 0);
    al_grant_expect_init(&e, SELF, HOLDER);
    CU_ASSERT_EQUAL_FATAL(al_grant_verify(ring, buf, len, &e, NOW, &g, why, sizeof why), 0);
    CU_ASSERT_STRING_EQUAL(why, "ok");
    CU_ASSERT_EQUAL(strlen(g->grant_id), 32);
    CU_ASSERT_EQUAL(strspn(g->grant_id, "0123456789abcdef"), 32);
    CU_ASSERT_STRING_EQUAL(g->issuer, ISSUER);
    CU_ASSERT_STRING_EQUAL(g->holder, HOLDER);
    CU_ASSERT_STRING_EQUAL(g->principal, "tenant-a");
    CU_ASSERT_EQUAL_FATAL(g->n_credentials, 2);
    CU_ASSERT_STRING_EQUAL(g->credentials[1], "npm");
    CU_ASSERT_EQUAL_FATAL(g->n_destinations, 1);
    CU_ASSERT_STRING_EQUAL(g->destinations[0], "api.github.com:443");
    CU_ASSERT_EQUAL(g->expires_ms, NOW + 60000);
    al_grant_free(g);
    /* exact audience also matches */
    CU_ASSERT_EQUAL(verify_at(buf, len, NOW, HOLDER, AUD_ROLE, NULL, 0), 0);
    free(buf);
}

/* The signer's signature is RFC 8032 Ed25519: deterministic, so byte for byte
 * the one OpenSSL makes from the same seed over the same message, and its
 * public key is the one OpenSSL derives. */
static void test_signature_matches_openssl(void)
{
    Airlock__V1__SignedGrant *sg;
    EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed_a, 32);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t *buf = NULL, *m, sig[64], pub[32], ossl_pub[32];
    size_t len = 0, siglen = sizeof sig, publen = sizeof ossl_pub;

    CU_ASSERT_FATAL(pk && ctx);
    CU_ASSERT_EQUAL(al_grant_signer_public_raw(sig_a, pub, sizeof pub), 0);
    CU_ASSERT_FATAL(EVP_PKEY_get_raw_public_key(pk, ossl_pub, &publen) == 1);
    CU_ASSERT(memcmp(pub, ossl_pub, 32) == 0);
    CU_ASSERT_EQUAL_FATAL(sign_with(sig_a, NULL, &buf, &len), 0);
    sg = airlock__v1__signed_grant__unpack(NULL, len, buf);
    CU_ASSERT_FATAL(sg != NULL && sg->signature.len == 64);
    m = malloc(17 + sg->grant.len);
    CU_ASSERT_FATAL(m != NULL);
    memcpy(m, "airlock-grant-v1", 17);
    memcpy(m + 17, sg->grant.data, sg->grant.len);
    CU_ASSERT_FATAL(EVP_DigestSignInit(ctx, NULL, NULL, NULL, pk) == 1);
    CU_ASSERT_FATAL(EVP_DigestSign(ctx, sig, &siglen, m, 17 + sg->grant.len) == 1);
    CU_ASSERT(siglen == 64 && memcmp(sig, sg->signature.data, 64) == 0);
    EVP_MD_CTX_free(ctx);
    ctx = EVP_MD_CTX_new();
    CU_ASSERT_FATAL(EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pk) == 1);
    CU_ASSERT(EVP_DigestVerify(ctx, sg->signature.data, 64, m, 17 + sg->grant.len) == 1);
    free(m);
    airlock__v1__signed_grant__free_unpacked(sg, NULL);
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pk);
    free(buf);
}

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The id a signed grant carries (copied into id[33]). */
static void signed_id(char id[33])
{
    struct al_grant_expect e;
    Airlock__V1__Grant *g = NULL;
    uint8_t *b = NULL;
    size_t l = 0;

    id[0] = '\0';
    CU_ASSERT_EQUAL_FATAL(sign_with(sig_a, NULL, &b, &l), 0);
    al_grant_expect_init(&e, SELF, HOLDER);
    CU_ASSERT_EQUAL_FATAL(al_grant_verify(ring, b, l, &e, NOW, &g, NULL, 0), 0);
    CU_ASSERT_EQUAL_FATAL(strlen(g->grant_id), 32);
    memcpy(id, g->grant_id, 33);
    al_grant_free(g);
    free(b);
}

/* Ids: 32 hex digits, the signing time in ms in the first 12, then 80 random
 * bits; never the same twice, and ids made later sort after earlier ones. */
static void test_grant_ids_random(void)
{
    char ids[64][33], prev[33] = "";
    int64_t t0 = wall_ms(), t1;

    for (int i = 0; i < 64; i++) {
        if (i == 32) { /* a later millisecond for the second half */
            int64_t t = wall_ms();
            while (wall_ms() < t + 2)
                ;
        }
        signed_id(ids[i]);
    }
    t1 = wall_ms();
    for (int i = 0; i < 64; i++) {
        char ms_hex[13];
        unsigned long long ms;

        CU_ASSERT_EQUAL(strspn(ids[i], "0123456789abcdef"), 32);
        memcpy(ms_hex, ids[i], 12);
        ms_hex[12] = '\0';
        ms = strtoull(ms_hex, NULL, 16);
        CU_ASSERT((int64_t)ms >= t0 && (int64_t)ms <= t1);
        for (int j = 0; j < i; j++)
            CU_ASSERT(strcmp(ids[i] + 12, ids[j] + 12) != 0); /* random parts differ */
        if (i >= 32)
            CU_ASSERT(strcmp(ids[i], ids[i - 32]) > 0);
        if (i)
            CU_ASSERT(strncmp(ids[i], prev, 12) >= 0); /* time never goes back here */
        memcpy(prev, ids[i], 33);
    }
}

static void test_expired(void)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    char why[64];
    int64_t exp = NOW + 60000, skew = AL_GRANT_DEFAULT_SKEW_MS;

    CU_ASSERT_EQUAL_FATAL(sign_with(sig_a, NULL, &buf, &len), 0);
    CU_ASSERT_EQUAL(verify_at(buf, len, exp + skew - 1, HOLDER, SELF, NULL, 0), 0);
    CU_ASSERT_EQUAL(verify_at(buf, len, exp + skew, HOLDER, SELF, why, sizeof why), AL_ERR_EXPIRED);
    CU_ASSERT_STRING_EQUAL(why, "expired");
    CU_ASSERT_EQUAL(verify_at(buf, len, INT64_MAX, HOLDER, SELF, NULL, 0), AL_ERR_EXPIRED);
    free(buf);
}

static void test_not_yet_valid(void)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    char why[64];
    int64_t nb = NOW - 1000, skew = AL_GRANT_DEFAULT_SKEW_MS;

    CU_ASSERT_EQUAL_FATAL(sign_with(sig_a, NULL, &buf, &len), 0);
    CU_ASSERT_EQUAL(verify_at(buf, len, nb - skew, HOLDER, SELF, NULL, 0), 0);
    CU_ASSERT_EQUAL(verify_at(buf, len, nb - skew - 1, HOLDER, SELF, why, sizeof why),
                    AL_ERR_EXPIRED);
    CU_ASSERT_STRING_EQUAL(why, "not yet valid");
    CU_ASSERT_EQUAL(verify_at(buf, len, 0, HOLDER, SELF, NULL, 0), AL_ERR_EXPIRED);
    CU_ASSERT_EQUAL(verify_at(buf, len, -1, HOLDER, SELF, NULL, 0), AL_ERR_INVAL);
    free(buf);
}

static void aud_gateway(Airlock__V1__Grant *g)
{
    g->audience = "spiffe://airlock/gateway";
}

static void aud_other_instance(Airlock__V1__Grant *g)
{
    g->audience = "spiffe://airlock/credstore/credstore-1";
}

static void aud_root(Airlock__V1__Grant *g)
{
    g->audience = "spiffe://airlock";
}

static void aud_prefix(Airlock__V1__Grant *g)
{
    g->audience = "spiffe://airlock/cred";
}

static void test_wrong_audience(void)
{
    void (*adj[])(Airlock__V1__Grant *) = {aud_gateway, aud_other_instance, aud_root, aud_prefix};
    uint8_t *buf = NULL;
    size_t len = 0;
    char why[64];

    for (size_t i = 0; i < sizeof adj / sizeof adj[0]; i++) {
        CU_ASSERT_EQUAL_FATAL(sign_with(sig_a, adj[i], &buf, &len), 0);
        CU_ASSERT_EQUAL(verify_at(buf, len, NOW, HOLDER, SELF, why, sizeof why), AL_ERR_AUTH);
        CU_ASSERT_STRING_EQUAL(why, "wrong audience");
        free(buf);
        buf = NULL;
    }
    /* a role-wide audience is not accepted by a verifier of another role */
    CU_ASSERT_EQUAL_FATAL(sign_with(sig_a, NULL, &buf, &len), 0);
    CU_ASSERT_EQUAL(verify_at(buf, len, NOW, HOLDER, "spiffe://airlock/gateway/credstore", NULL, 0),
                    AL_ERR_AUTH);
    free(buf);
}

static void test_wrong_holder(void)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    char why[64];

    CU_ASSERT_EQUAL_FATAL(sign_with(sig_a, NULL, &buf, &len), 0);
    CU_ASSERT_EQUAL(
        verify_at(buf, len, NOW, "spiffe://airlock/executor/executor-1", SELF, why, sizeof why),
        AL_ERR_AUTH);
    CU_ASSERT_STRING_EQUAL(why, "wrong holder");
    CU_ASSERT_EQUAL(verify_at(buf, len, NOW, HOLDER "x", SELF, NULL, 0), AL_ERR_AUTH);
    free(buf);
}

static void test_unknown_key_id(void)
{
    struct al_grant_signer *s = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    char why[64];

    CU_ASSERT_EQUAL_FATAL(al_grant_signer_new_raw(seed_a, 32, "a2", ISSUER, &s), 0);
    CU_ASSERT_EQUAL_FATAL(sign_with(s, NULL, &buf, &len), 0);
    CU_ASSERT_EQUAL(verify_at(buf, len, NOW, HOLDER, SELF, why, sizeof why), AL_ERR_NOTFOUND);
    CU_ASSERT_STRING_EQUAL(why, "unknown key id");
    free(buf);
    al_grant_signer_free(s);
}

static void test_bad_signature(void)
{
    struct al_grant_signer *s = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    char why[64];

    /* right key id, wrong key */
    CU_ASSERT_EQUAL_FATAL(al_grant_signer_new_raw(seed_b, 32, "a", ISSUER, &s), 0);
    CU_ASSERT_EQUAL_FATAL(sign_with(s, NULL, &buf, &len), 0);
    CU_ASSERT_EQUAL(verify_at(buf, len, NOW, HOLDER, SELF, why, sizeof why), AL_ERR_CRYPTO);
    CU_ASSERT_STRING_EQUAL(why, "bad signature");
    free(buf);
    al_grant_signer_free(s);
    /* signature field is last in the envelope: flip its last byte */
    CU_ASSERT_EQUAL_FATAL(sign_with(sig_a, NULL, &buf, &len), 0);
    buf[len - 1] ^= 0x01;
    CU_ASSERT_EQUAL(verify(buf, len), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(ERR_peek_error(), 0); /* the TLS layer's SSL_get_error must not see it */
    free(buf);
}

static void test_every_byte_flip(void)
{
    static const uint8_t masks[] = {0x01, 0x02, 0x10, 0x80, 0xff};
    uint8_t *buf = NULL, *c;
    size_t len = 0, accepted = 0;

    CU_ASSERT_EQUAL_FATAL(sign_with(sig_a, NULL, &buf, &len), 0);
    CU_ASSERT_EQUAL_FATAL(verify(buf, len), 0);
    c = malloc(len);
    for (size_t i = 0; i < len; i++) {
        for (size_t m = 0; m < sizeof masks; m++) {
            memcpy(c, buf, len);
            c[i] ^= masks[m];
            if (verify(c, len) == 0) {
                fprintf(stderr, "flip accepted: byte %zu mask %#x\n", i, masks[m]);
                accepted++;
            }
        }
    }
    CU_ASSERT_EQUAL(accepted, 0);
    /* truncation at every length fails too */
    for (size_t n = 0; n < len; n++)
        CU_ASSERT(verify(buf, n) < 0);
    free(c);
    free(buf);
}

/* Good and bad signatures in turn each get their own answer, from one
 * thread and from several at once on the shared keyring. */
struct verify_mix {
    const uint8_t *good, *bad;
    size_t len;
    int wrong; /* answers that were not the expected one */
};

static void *verify_mix_run(void *arg)
{
    struct verify_mix *m = arg;
    struct al_grant_expect e;

    al_grant_expect_init(&e, SELF, HOLDER);
    for (int i = 0; i < 200; i++) {
        Airlock__V1__Grant *out = NULL;
        int bad = i % 3 == 1;
        int rc = al_grant_verify(ring, bad ? m->bad : m->good, m->len, &e, NOW, &out, NULL, 0);
        if (bad ? rc != AL_ERR_CRYPTO : rc != 0)
            m->wrong++;
        al_grant_free(out);
    }
    return NULL;
}

static void test_verify_in_turn(void)
{
    uint8_t *buf = NULL, *bad;
    size_t len = 0;
    pthread_t t[3];
    struct verify_mix m[3];

    CU_ASSERT_EQUAL_FATAL(sign_with(sig_a, NULL, &buf, &len), 0);
    bad = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bad);
    memcpy(bad, buf, len);
    bad[len - 1] ^= 0x40; /* the signature's last byte */
    for (int i = 0; i < 10; i++) {
        CU_ASSERT_EQUAL(verify(buf, len), 0);
        CU_ASSERT_EQUAL(verify(bad, len), AL_ERR_CRYPTO);
        CU_ASSERT_EQUAL(verify(bad, len), AL_ERR_CRYPTO);
    }
    CU_ASSERT_EQUAL(verify(buf, len), 0);
    for (int i = 0; i < 3; i++) {
        m[i] = (struct verify_mix){.good = buf, .bad = bad, .len = len};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, verify_mix_run, &m[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(m[i].wrong, 0);
    }
    CU_ASSERT_EQUAL(ERR_peek_error(), 0);
    free(bad);
    free(buf);
}

static void test_issuer_mismatch(void)
{
    struct al_grant_keyring *saved = ring;
    struct al_grant_signer *s = NULL;
    uint8_t pub[32], *buf = NULL;
    size_t len = 0;
    char why[64];

    /* the key is trusted, but for relay-0 only: intake-0 may not use it */
    CU_ASSERT_EQUAL_FATAL(al_grant_keyring_new(&ring), 0);
    CU_ASSERT_EQUAL_FATAL(al_grant_signer_public_raw(sig_a, pub, sizeof pub), 0);
    CU_ASSERT_EQUAL_FATAL(
        al_grant_keyring_add_raw(ring, "a", "spiffe://airlock/relay/relay-0", pub, 32), 0);
    CU_ASSERT_EQUAL_FATAL(sign_with(sig_a, NULL, &buf, &len), 0);
    CU_ASSERT_EQUAL(verify_at(buf, len, NOW, HOLDER, SELF, why, sizeof why), AL_ERR_AUTH);
    CU_ASSERT_STRING_EQUAL(why, "issuer not allowed for this key");
    free(buf);
    al_grant_keyring_free(ring);

    /* role pattern: any intake instance, no relay */
    CU_ASSERT_EQUAL_FATAL(al_grant_keyring_new(&ring), 0);
    CU_ASSERT_EQUAL_FATAL(al_grant_keyring_add_raw(ring, "a", "spiffe://airlock/intake/*", pub, 32),
                          0);
    CU_ASSERT_EQUAL_FATAL(
        al_grant_signer_new_raw(seed_a, 32, "a", "spiffe://airlock/intake/intake-7", &s), 0);
    CU_ASSERT_EQUAL_FATAL(sign_with(s, NULL, &buf, &len), AL_ERR_INVAL); /* issuer != signer's */
    al_grant_signer_free(s);
    s = NULL;
    CU_ASSERT_EQUAL_FATAL(al_grant_signer_new_raw(seed_a, 32, "a", ISSUER, &s), 0);
    CU_ASSERT_EQUAL_FATAL(sign_with(s, NULL, &buf, &len), 0);
    CU_ASSERT_EQUAL(verify(buf, len), 0);
    free(buf);
    al_grant_signer_free(s);
    CU_ASSERT_EQUAL_FATAL(
        al_grant_signer_new_raw(seed_a, 32, "a", "spiffe://airlock/relay/relay-0", &s), 0);
    CU_ASSERT_EQUAL_FATAL(al_grant_sign(s, &(Airlock__V1__Grant){0}, &buf, &len), AL_ERR_INVAL);
    al_grant_signer_free(s);
    al_grant_keyring_free(ring);
    ring = saved;
}

static void no_issuer(Airlock__V1__Grant *g)
{
    g->issuer = "";
}

static void test_issuer_pattern_relay_rejected(void)
{
    struct al_grant_keyring *saved = ring;
    struct al_grant_signer *s = NULL;
    uint8_t pub[32], *buf = NULL;
    size_t len = 0;

    CU_ASSERT_EQUAL_FATAL(al_grant_keyring_new(&ring), 0);
    CU_ASSERT_EQUAL_FATAL(al_grant_signer_public_raw(sig_a, pub, sizeof pub), 0);
    CU_ASSERT_EQUAL_FATAL(al_grant_keyring_add_raw(ring, "a", "spiffe://airlock/intake/*", pub, 32),
                          0);
    CU_ASSERT_EQUAL_FATAL(
        al_grant_signer_new_raw(seed_a, 32, "a", "spiffe://airlock/relay/relay-0", &s), 0);
    CU_ASSERT_EQUAL_FATAL(sign_with(s, no_issuer, &buf, &len), 0); /* issuer filled: relay-0 */
    CU_ASSERT_EQUAL(verify(buf, len), AL_ERR_AUTH);
    free(buf);
    al_grant_signer_free(s);
    al_grant_keyring_free(ring);
    ring = saved;
}

static void test_rotation(void)
{
    struct al_grant_keyring *saved = ring;
    struct al_grant_signer *old = NULL, *cur = NULL;
    uint8_t pub[32], *buf = NULL;
    size_t len = 0;

    CU_ASSERT_EQUAL_FATAL(al_grant_keyring_new(&ring), 0);
    CU_ASSERT_EQUAL_FATAL(al_grant_signer_new_raw(seed_a, 32, NULL, ISSUER, &old), 0);
    CU_ASSERT_EQUAL_FATAL(al_grant_signer_new_raw(seed_b, 32, NULL, ISSUER, &cur), 0);
    CU_ASSERT_EQUAL(strlen(old->key_id), 16);
    CU_ASSERT_STRING_NOT_EQUAL(old->key_id, cur->key_id);
    CU_ASSERT_EQUAL_FATAL(al_grant_signer_public_raw(old, pub, sizeof pub), 0);
    CU_ASSERT_EQUAL_FATAL(al_grant_keyring_add_raw(ring, NULL, ISSUER, pub, 32), 0);
    CU_ASSERT_EQUAL(al_grant_keyring_add_raw(ring, NULL, ISSUER, pub, 32), AL_ERR_EXISTS);
    CU_ASSERT_EQUAL_FATAL(al_grant_signer_public_raw(cur, pub, sizeof pub), 0);
    CU_ASSERT_EQUAL_FATAL(al_grant_keyring_add_raw(ring, NULL, ISSUER, pub, 32), 0);
    CU_ASSERT_EQUAL(al_grant_keyring_count(ring), 2);
    CU_ASSERT_EQUAL_FATAL(sign_with(old, NULL, &buf, &len), 0);
    CU_ASSERT_EQUAL(verify(buf, len), 0);
    free(buf);
    CU_ASSERT_EQUAL_FATAL(sign_with(cur, NULL, &buf, &len), 0);
    CU_ASSERT_EQUAL(verify(buf, len), 0);
    free(buf);
    al_grant_signer_free(old);
    al_grant_signer_free(cur);
    al_grant_keyring_free(ring);
    ring = saved;
}

static void two_hours(Airlock__V1__Grant *g)
{
    g->not_before_ms = NOW - 3600 * 1000;
    g->expires_ms = NOW + 3600 * 1000;
}

static void test_lifetime_cap(void)
{
    struct al_grant_expect e;
    Airlock__V1__Grant *g = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    char why[64];

    CU_ASSERT_EQUAL_FATAL(sign_with(sig_a, two_hours, &buf, &len), 0);
    al_grant_expect_init(&e, SELF, HOLDER);
    e.max_lifetime_ms = 2 * 3600 * 1000 - 1;
    CU_ASSERT_EQUAL(al_grant_verify(ring, buf, len, &e, NOW, &g, why, sizeof why), AL_ERR_EXPIRED);
    CU_ASSERT_STRING_EQUAL(why, "lifetime over the limit");
    e.max_lifetime_ms = 2 * 3600 * 1000;
    CU_ASSERT_EQUAL(al_grant_verify(ring, buf, len, &e, NOW, &g, NULL, 0), 0);
    al_grant_free(g);
    e.max_lifetime_ms = 0; /* there is no "unlimited" */
    CU_ASSERT_EQUAL(al_grant_verify(ring, buf, len, &e, NOW, &g, NULL, 0), AL_ERR_INVAL);
    e.max_lifetime_ms = 1;
    e.max_skew_ms = 300001;
    CU_ASSERT_EQUAL(al_grant_verify(ring, buf, len, &e, NOW, &g, NULL, 0), AL_ERR_INVAL);
    free(buf);
}

static char *many[2000];

static void huge(Airlock__V1__Grant *g)
{
    for (size_t i = 0; i < 2000; i++)
        many[i] = "some-credential";
    g->credentials = many;
    g->n_credentials = 2000;
}

static void test_oversized(void)
{
    uint8_t *buf = calloc(1, AL_GRANT_MAX_SIZE + 1), *sb = NULL;
    size_t sl = 0;
    char why[64];

    CU_ASSERT_EQUAL(verify_at(buf, AL_GRANT_MAX_SIZE + 1, NOW, HOLDER, SELF, why, sizeof why),
                    AL_ERR_TOOBIG);
    CU_ASSERT_STRING_EQUAL(why, "grant too large");
    CU_ASSERT_EQUAL(sign_with(sig_a, huge, &sb, &sl), AL_ERR_TOOBIG);
    CU_ASSERT_PTR_NULL(sb);
    free(buf);
}

static void test_malformed(void)
{
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    uint8_t *g, *buf = NULL;
    size_t glen, len = 0;
    char why[64];

    CU_ASSERT_EQUAL(verify_at(garbage, sizeof garbage, NOW, HOLDER, SELF, why, sizeof why),
                    AL_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(why, "malformed signed grant");
    CU_ASSERT_EQUAL(verify_at(garbage, 0, NOW, HOLDER, SELF, why, sizeof why), AL_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(why, "signed grant incomplete");
    /* envelope without key id */
    g = pack_default(NULL, &glen);
    sign_raw(seed_a, "", g, glen, &buf, &len);
    CU_ASSERT_EQUAL(verify(buf, len), AL_ERR_INVAL);
    free(buf);
    /* signed garbage is still not a grant */
    sign_raw(seed_a, "a", garbage, sizeof garbage, &buf, &len);
    CU_ASSERT_EQUAL(verify_at(buf, len, NOW, HOLDER, SELF, why, sizeof why), AL_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(why, "malformed grant");
    free(buf);
    free(g);
}

static void no_principal(Airlock__V1__Grant *g)
{
    g->principal = "";
}

static void empty_cred(Airlock__V1__Grant *g)
{
    static char *c[] = {"github", ""};
    g->credentials = c;
}

static void inverted(Airlock__V1__Grant *g)
{
    g->expires_ms = g->not_before_ms;
}

static void test_incomplete_grants(void)
{
    void (*adj[])(Airlock__V1__Grant *) = {no_principal, empty_cred, inverted};
    uint8_t *g, *buf = NULL;
    size_t glen, len = 0;

    for (size_t i = 0; i < sizeof adj / sizeof adj[0]; i++) {
        CU_ASSERT_EQUAL(sign_with(sig_a, adj[i], &buf, &len), AL_ERR_INVAL);
        g = pack_default(adj[i], &glen);
        sign_raw(seed_a, "a", g, glen, &buf, &len);
        CU_ASSERT_EQUAL(verify(buf, len), AL_ERR_INVAL);
        free(buf);
        free(g);
        buf = NULL;
    }
}

static void holder_x(Airlock__V1__Grant *g)
{
    g->holder = HOLDER "X";
}

static void test_embedded_nul(void)
{
    uint8_t *g, *buf = NULL, *x;
    size_t glen, len = 0;

    g = pack_default(holder_x, &glen);
    x = memmem(g, glen, HOLDER "X", strlen(HOLDER) + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    x[strlen(HOLDER)] = 0; /* "...executor-0\0": reads as HOLDER if unchecked */
    sign_raw(seed_a, "a", g, glen, &buf, &len);
    CU_ASSERT_EQUAL(verify(buf, len), AL_ERR_INVAL);
    free(buf);
    free(g);
}

static void test_unknown_fields_signed(void)
{
    static const uint8_t extra[] = {0xa0, 0x06, 0x01,              /* field 100 varint 1 */
                                    0xaa, 0x06, 0x02, 0x00, 0x41}; /* field 101 bytes "\0A" */
    uint8_t *g, *buf = NULL;
    size_t glen, len = 0;

    g = pack_default(NULL, &glen);
    memcpy(g + glen, extra, sizeof extra);
    sign_raw(seed_a, "a", g, glen + sizeof extra, &buf, &len);
    CU_ASSERT_EQUAL(verify(buf, len), 0);
    free(buf);
    free(g);
}

static void test_bad_args(void)
{
    struct al_grant_expect e;
    Airlock__V1__Grant *g = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;

    CU_ASSERT_EQUAL_FATAL(sign_with(sig_a, NULL, &buf, &len), 0);
    al_grant_expect_init(&e, "", HOLDER);
    CU_ASSERT_EQUAL(al_grant_verify(ring, buf, len, &e, NOW, &g, NULL, 0), AL_ERR_INVAL);
    al_grant_expect_init(&e, SELF, NULL);
    CU_ASSERT_EQUAL(al_grant_verify(ring, buf, len, &e, NOW, &g, NULL, 0), AL_ERR_INVAL);
    al_grant_expect_init(&e, SELF, HOLDER);
    CU_ASSERT_EQUAL(al_grant_verify(NULL, buf, len, &e, NOW, &g, NULL, 0), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_grant_verify(ring, buf, len, &e, NOW, NULL, NULL, 0), AL_ERR_INVAL);
    free(buf);
}

static void test_keyring_patterns(void)
{
    static const char *bad[] = {"",
                                "spiffe://airlock/*",
                                "spiffe://airlock/intake/a*",
                                "spiffe://other/intake/intake-0",
                                "spiffe://airlock/nobody/x",
                                "spiffe://airlock/intake/*/x",
                                "spiffe://airlock/intake/intake-0/"};
    struct al_grant_keyring *kr = NULL;
    uint8_t pub[32];

    CU_ASSERT_EQUAL_FATAL(al_grant_signer_public_raw(sig_a, pub, sizeof pub), 0);
    CU_ASSERT_EQUAL_FATAL(al_grant_keyring_new(&kr), 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CU_ASSERT_EQUAL(al_grant_keyring_add_raw(kr, NULL, bad[i], pub, 32), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_grant_keyring_add_raw(kr, NULL, NULL, pub, 32), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_grant_keyring_add_raw(kr, "bad id", ISSUER, pub, 32), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_grant_keyring_add_raw(kr, NULL, ISSUER, pub, 31), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_grant_keyring_count(kr), 0);
    for (int i = 0; i < AL_GRANT_KEYRING_MAX; i++) {
        char id[16];
        snprintf(id, sizeof id, "k%d", i);
        CU_ASSERT_EQUAL(al_grant_keyring_add_raw(kr, id, ISSUER, pub, 32), 0);
    }
    CU_ASSERT_EQUAL(al_grant_keyring_add_raw(kr, "one-more", ISSUER, pub, 32), AL_ERR_TOOBIG);
    al_grant_keyring_free(kr);
    al_grant_keyring_free(NULL);
    al_grant_signer_free(NULL);
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    return remove(p);
}

static void test_key_files(void)
{
    char dir[] = "/tmp/al-grant-XXXXXX", priv[128], pub[128], id[AL_GRANT_KEY_ID_MAX];
    struct al_grant_keyring *kr = NULL;
    struct al_grant_signer *s = NULL, *bad = NULL;
    struct al_grant_expect e;
    Airlock__V1__Grant *g = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    struct stat st;

    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    snprintf(priv, sizeof priv, "%s/intake-0.key", dir);
    snprintf(pub, sizeof pub, "%s/intake-0.pub", dir);
    CU_ASSERT_EQUAL_FATAL(al_grant_key_generate(priv, pub, 0, id, sizeof id), 0);
    CU_ASSERT_EQUAL(strlen(id), 16);
    CU_ASSERT_EQUAL_FATAL(stat(priv, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    CU_ASSERT_EQUAL(al_grant_key_generate(priv, pub, 0, NULL, 0), AL_ERR_EXISTS);
    CU_ASSERT_EQUAL_FATAL(al_grant_signer_new(priv, NULL, ISSUER, &s), 0);
    CU_ASSERT_STRING_EQUAL(s->key_id, id);
    CU_ASSERT_EQUAL_FATAL(al_grant_keyring_new(&kr), 0);
    CU_ASSERT_EQUAL_FATAL(al_grant_keyring_add_pem(kr, NULL, ISSUER, pub), 0);
    CU_ASSERT_EQUAL(al_grant_keyring_add_pem(kr, "x", ISSUER, priv), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(ERR_peek_error(), 0);
    CU_ASSERT_EQUAL(al_grant_keyring_add_pem(kr, "y", ISSUER, "/nonexistent"), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(al_grant_signer_new(pub, NULL, ISSUER, &bad), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL_FATAL(sign_with(s, NULL, &buf, &len), 0);
    al_grant_expect_init(&e, SELF, HOLDER);
    CU_ASSERT_EQUAL(al_grant_verify(kr, buf, len, &e, NOW, &g, NULL, 0), 0);
    al_grant_free(g);
    free(buf);
    al_grant_signer_free(s);
    /* overwrite replaces the pair; the old public key no longer verifies */
    CU_ASSERT_EQUAL_FATAL(al_grant_key_generate(priv, pub, AL_GRANT_KEY_OVERWRITE, id, sizeof id),
                          0);
    CU_ASSERT_EQUAL_FATAL(stat(priv, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    CU_ASSERT_EQUAL_FATAL(al_grant_signer_new(priv, "new", ISSUER, &s), 0);
    CU_ASSERT_EQUAL_FATAL(sign_with(s, NULL, &buf, &len), 0);
    CU_ASSERT_EQUAL(al_grant_verify(kr, buf, len, &e, NOW, &g, NULL, 0), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(al_grant_signer_new(priv, NULL, "spiffe://airlock/intake/*", &bad),
                    AL_ERR_INVAL);
    CU_ASSERT_PTR_NULL(bad);
    free(buf);
    al_grant_signer_free(s);
    al_grant_keyring_free(kr);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---- base64 ---- */

static void b64_roundtrip(const char *in, const char *want, unsigned flags)
{
    char enc[64];
    uint8_t dec[64];
    size_t n = 0;

    CU_ASSERT_EQUAL(al_base64_encoded_len(strlen(in), flags), strlen(want));
    CU_ASSERT_EQUAL_FATAL(
        al_base64_encode((const uint8_t *)in, strlen(in), enc, sizeof enc, flags, &n), 0);
    CU_ASSERT_STRING_EQUAL(enc, want);
    CU_ASSERT_EQUAL(n, strlen(want));
    CU_ASSERT_EQUAL_FATAL(al_base64_decode(want, strlen(want), dec, sizeof dec, flags, &n), 0);
    CU_ASSERT_EQUAL(n, strlen(in));
    CU_ASSERT(memcmp(dec, in, n) == 0);
}

static void test_base64_vectors(void)
{
    /* RFC 4648 section 10 */
    static const char *v[][2] = {{"", ""},
                                 {"f", "Zg=="},
                                 {"fo", "Zm8="},
                                 {"foo", "Zm9v"},
                                 {"foob", "Zm9vYg=="},
                                 {"fooba", "Zm9vYmE="},
                                 {"foobar", "Zm9vYmFy"}};

    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        b64_roundtrip(v[i][0], v[i][1], 0);
    b64_roundtrip("fo", "Zm8", AL_BASE64_NOPAD);
    b64_roundtrip("\xfb\xff", "-_8=", AL_BASE64_URL);
    b64_roundtrip("\xfb\xff", "+/8=", 0);
    b64_roundtrip("\xfb\xff", "-_8", AL_BASE64_URL | AL_BASE64_NOPAD);
}

static void test_base64_strict(void)
{
    static const char *bad[] = {"Zg=",    "Zg",   "Z===", "Zh==", "Zm9=",    "Zm 9",
                                "Zm9v\n", "=Zm9", "Zm=v", "-_8=", "Zg==Zg=="};
    uint8_t out[16];
    size_t n;
    char small[4];

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CU_ASSERT_EQUAL(al_base64_decode(bad[i], strlen(bad[i]), out, sizeof out, 0, &n),
                        AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_base64_decode("Zg==", 4, out, sizeof out, AL_BASE64_NOPAD, &n),
                    AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_base64_decode("Z", 1, out, sizeof out, AL_BASE64_NOPAD, &n), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_base64_decode("Zm9vYmFy", 8, out, 5, 0, &n), AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(al_base64_encode((const uint8_t *)"foo", 3, small, sizeof small, 0, &n),
                    AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(small[0], '\0');
    CU_ASSERT_EQUAL(al_base64_encode((const uint8_t *)"f", 1, small, sizeof small, 0x80, &n),
                    AL_ERR_INVAL);
}

static void test_base64_grant(void)
{
    uint8_t *buf = NULL, *dec;
    size_t len = 0, n = 0, elen;
    char *enc;

    CU_ASSERT_EQUAL_FATAL(sign_with(sig_a, NULL, &buf, &len), 0);
    elen = al_base64_encoded_len(len, 0);
    enc = malloc(elen + 1);
    dec = malloc(al_base64_decoded_maxlen(elen));
    CU_ASSERT_EQUAL_FATAL(al_base64_encode(buf, len, enc, elen + 1, 0, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(al_base64_decode(enc, elen, dec, al_base64_decoded_maxlen(elen), 0, &n),
                          0);
    CU_ASSERT_EQUAL(n, len);
    CU_ASSERT_EQUAL(verify(dec, n), 0);
    free(enc);
    free(dec);
    free(buf);
}

int main(void)
{
    CU_pSuite s, b;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("grant", suite_init, suite_clean);
    CU_add_test(s, "sign and verify", test_sign_verify_ok);
    CU_add_test(s, "signature and public key match OpenSSL's", test_signature_matches_openssl);
    CU_add_test(s, "grant ids: time then 80 random bits, unique, sorted", test_grant_ids_random);
    CU_add_test(s, "expired", test_expired);
    CU_add_test(s, "not yet valid", test_not_yet_valid);
    CU_add_test(s, "wrong audience", test_wrong_audience);
    CU_add_test(s, "wrong holder", test_wrong_holder);
    CU_add_test(s, "unknown key id", test_unknown_key_id);
    CU_add_test(s, "bad signature", test_bad_signature);
    CU_add_test(s, "good and bad in turn, one and three threads", test_verify_in_turn);
    CU_add_test(s, "every byte flipped fails", test_every_byte_flip);
    CU_add_test(s, "issuer must match the key's issuer", test_issuer_mismatch);
    CU_add_test(s, "role pattern rejects other roles", test_issuer_pattern_relay_rejected);
    CU_add_test(s, "rotation: two keys for one issuer", test_rotation);
    CU_add_test(s, "lifetime cap", test_lifetime_cap);
    CU_add_test(s, "oversized input", test_oversized);
    CU_add_test(s, "malformed input", test_malformed);
    CU_add_test(s, "incomplete grants", test_incomplete_grants);
    CU_add_test(s, "NUL inside a signed string", test_embedded_nul);
    CU_add_test(s, "unknown fields under the signature", test_unknown_fields_signed);
    CU_add_test(s, "bad arguments", test_bad_args);
    CU_add_test(s, "keyring issuer patterns and limits", test_keyring_patterns);
    CU_add_test(s, "key files", test_key_files);
    CU_add_test(s, "base64 round trip", test_base64_grant);
    b = CU_add_suite("base64", NULL, NULL);
    CU_add_test(b, "RFC 4648 vectors", test_base64_vectors);
    CU_add_test(b, "strict decoding", test_base64_strict);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
