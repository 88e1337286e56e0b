/*
 * libFuzzer target: al_grant_verify on arbitrary bytes with a fixed keyring.
 *
 * The first input byte picks a mode:
 *   even  the rest is a SignedGrant as it arrives from the network;
 *   odd   the rest is the *grant bytes*, wrapped in a SignedGrant that is
 *         validly signed with the trusted fixed key, so the fuzzer reaches
 *         everything after the signature check (grant parsing, the NUL walk,
 *         issuer/audience/holder/time checks) without forging signatures.
 * Either way the result must be consistent: a grant out on success only, a
 * non-empty reason always, and a success in network mode must carry a valid
 * signature by construction (nothing else can pass).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "al_err.h"
#include "al_grant.h"

#define NOW    1800000000000LL
#define ISSUER "spiffe://airlock/intake/intake-0"

static const uint8_t seed[32] = {0x42, 0x13, 0x37, 0x99, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

static struct al_grant_keyring *ring;
static EVP_PKEY *signing_key;

static void setup(void)
{
    struct al_grant_signer *s = NULL;
    uint8_t pub[32];

    if (al_grant_signer_new_raw(seed, sizeof seed, "fuzz", ISSUER, &s) < 0 ||
        al_grant_signer_public_raw(s, pub, sizeof pub) < 0 || al_grant_keyring_new(&ring) < 0 ||
        al_grant_keyring_add_raw(ring, "fuzz", ISSUER, pub, sizeof pub) < 0 ||
        al_grant_keyring_add_raw(ring, "role", "spiffe://airlock/relay/*", pub, sizeof pub) < 0)
        abort();
    al_grant_signer_free(s); /* only its public key was needed */
    /* wrap() signs arbitrary bytes with OpenSSL: the same key from the same seed */
    signing_key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, sizeof seed);
    if (!signing_key)
        abort();
}

/* Wraps grant bytes g into a SignedGrant signed with the trusted key. */
static uint8_t *wrap(const uint8_t *g, size_t glen, const char *key_id, size_t *outlen)
{
    Airlock__V1__SignedGrant sg = AIRLOCK__V1__SIGNED_GRANT__INIT;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t *m = malloc(17 + glen), sig[64], *out = NULL;
    size_t siglen = sizeof sig;

    if (!ctx || !m)
        abort();
    memcpy(m, "airlock-grant-v1", 17);
    if (glen)
        memcpy(m + 17, g, glen);
    if (EVP_DigestSignInit(ctx, NULL, NULL, NULL, signing_key) != 1 ||
        EVP_DigestSign(ctx, sig, &siglen, m, 17 + glen) != 1)
        abort();
    sg.grant.data = (uint8_t *)g;
    sg.grant.len = glen;
    sg.key_id = (char *)key_id;
    sg.signature.data = sig;
    sg.signature.len = siglen;
    *outlen = airlock__v1__signed_grant__get_packed_size(&sg);
    out = malloc(*outlen ? *outlen : 1);
    if (!out)
        abort();
    airlock__v1__signed_grant__pack(&sg, out);
    free(m);
    EVP_MD_CTX_free(ctx);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct al_grant_expect e;
    Airlock__V1__Grant *g = (Airlock__V1__Grant *)&e; /* must be reset to NULL or a grant */
    uint8_t *buf = NULL;
    size_t len;
    char why[64] = "";
    int rc;

    if (!ring)
        setup();
    if (size < 1)
        return 0;
    al_grant_expect_init(&e, "spiffe://airlock/credstore/credstore-0",
                         "spiffe://airlock/executor/executor-0");
    if (data[0] & 1) {
        buf = wrap(data + 1, size - 1, (data[0] & 2) ? "role" : "fuzz", &len);
        rc = al_grant_verify(ring, buf, len, &e, NOW, &g, why, sizeof why);
    } else {
        rc = al_grant_verify(ring, data + 1, size - 1, &e, NOW, &g, why, sizeof why);
    }
    if ((rc == 0) != (g != NULL) || why[0] == '\0')
        abort();
    if (rc == 0 && (strcmp(g->holder, e.holder) != 0 || g->expires_ms <= g->not_before_ms))
        abort();
    al_grant_free(g);
    free(buf);
    return 0;
}
