/*
 * Unit tests for ingrant: which attempts get a grant (credential bindings,
 * network mode PROXY with or without bindings, none otherwise) and what it
 * names (subject, scope, holder, each credential and destination once, an
 * empty credential list for a PROXY job without bindings, the validity
 * window), and that a grant built for a PROXY job signs and verifies.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_grant.h"
#include "ingrant.h"

#define PROXY AIRLOCK__V1__NETWORK_MODE__NETWORK_MODE_PROXY
#define NONE  AIRLOCK__V1__NETWORK_MODE__NETWORK_MODE_NONE

static const struct in_grant_ctx ctx = {.issuer = "spiffe://airlock/intake/intake-0",
                                        .audience = "spiffe://airlock/credstore",
                                        .holder = "spiffe://airlock/executor/executor-1",
                                        .principal = "acme/alice",
                                        .job_id = "0123456789abcdef0123456789abcdef",
                                        .pool = "ci",
                                        .attempt = 3,
                                        .now_ms = 1700000000000LL,
                                        .lifetime_ms = 600000};

struct spec {
    Airlock__V1__JobSpec s;
    Airlock__V1__NetworkPolicy net;
    Airlock__V1__CredentialBinding b[3], *bp[3];
    char *d0[2], *d1[2], *d2[1];
};

static void spec_init(struct spec *x, int mode, size_t nbind)
{
    memset(x, 0, sizeof(*x));
    airlock__v1__job_spec__init(&x->s);
    airlock__v1__network_policy__init(&x->net);
    x->net.mode = mode;
    x->s.network = mode ? &x->net : NULL;
    x->d0[0] = "api.example.com";
    x->d0[1] = "uploads.example.com";
    x->d1[0] = "api.example.com"; /* the same destination again */
    x->d1[1] = "git.example.com:8443";
    x->d2[0] = "api.example.com";
    char **ds[3] = {x->d0, x->d1, x->d2};
    size_t nd[3] = {2, 2, 1};
    const char *names[3] = {"github/ci", "gitlab/ci", "github/ci"}; /* bound twice */
    for (size_t i = 0; i < 3; i++) {
        airlock__v1__credential_binding__init(&x->b[i]);
        x->b[i].credential = (char *)names[i];
        x->b[i].destinations = ds[i];
        x->b[i].n_destinations = nd[i];
        x->bp[i] = &x->b[i];
    }
    x->s.credentials = x->bp;
    x->s.n_credentials = nbind;
}

static void test_needed(void)
{
    struct spec x;

    spec_init(&x, 0, 0);
    CU_ASSERT_FALSE(in_grant_needed(&x.s));
    spec_init(&x, NONE, 0);
    CU_ASSERT_FALSE(in_grant_needed(&x.s));
    spec_init(&x, PROXY, 0);
    CU_ASSERT_TRUE(in_grant_needed(&x.s)); /* proxied requests are audited under it */
    spec_init(&x, PROXY, 2);
    CU_ASSERT_TRUE(in_grant_needed(&x.s));
    CU_ASSERT_FALSE(in_grant_needed(NULL));
}

static void test_content(void)
{
    struct spec x;
    struct in_grant_buf *buf = calloc(1, sizeof(*buf));
    Airlock__V1__Grant g;

    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    spec_init(&x, PROXY, 3);
    in_grant_build(&ctx, &x.s, buf, &g);
    CU_ASSERT_STRING_EQUAL(g.subject, "job/0123456789abcdef0123456789abcdef/attempt/3");
    CU_ASSERT_STRING_EQUAL(g.scope, "ci");
    CU_ASSERT_STRING_EQUAL(g.holder, ctx.holder);
    CU_ASSERT_STRING_EQUAL(g.issuer, ctx.issuer);
    CU_ASSERT_STRING_EQUAL(g.audience, ctx.audience);
    CU_ASSERT_STRING_EQUAL(g.principal, "acme/alice");
    CU_ASSERT_EQUAL_FATAL(g.n_credentials, 2); /* github/ci once */
    CU_ASSERT_STRING_EQUAL(g.credentials[0], "github/ci");
    CU_ASSERT_STRING_EQUAL(g.credentials[1], "gitlab/ci");
    CU_ASSERT_EQUAL_FATAL(g.n_destinations, 3); /* api.example.com once */
    CU_ASSERT_STRING_EQUAL(g.destinations[0], "api.example.com");
    CU_ASSERT_STRING_EQUAL(g.destinations[1], "uploads.example.com");
    CU_ASSERT_STRING_EQUAL(g.destinations[2], "git.example.com:8443");
    CU_ASSERT_EQUAL(g.not_before_ms, ctx.now_ms);
    CU_ASSERT_EQUAL(g.expires_ms, ctx.now_ms + ctx.lifetime_ms);

    /* a PROXY job without bindings: a grant naming nothing */
    spec_init(&x, PROXY, 0);
    in_grant_build(&ctx, &x.s, buf, &g);
    CU_ASSERT_EQUAL(g.n_credentials, 0);
    CU_ASSERT_EQUAL(g.n_destinations, 0);
    CU_ASSERT_STRING_EQUAL(g.subject, "job/0123456789abcdef0123456789abcdef/attempt/3");
    free(buf);
}

static void test_signs_and_verifies(void)
{
    static const uint8_t seed[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                     17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
    struct spec x;
    struct in_grant_buf *buf = calloc(1, sizeof(*buf));
    struct al_grant_signer *signer = NULL;
    struct al_grant_keyring *ring = NULL;
    struct al_grant_expect want;
    Airlock__V1__Grant g, *out = NULL;
    uint8_t *bytes = NULL, pub[32];
    size_t len = 0;
    char why[160];

    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    CU_ASSERT_EQUAL_FATAL(al_grant_signer_new_raw(seed, sizeof(seed), "k1", ctx.issuer, &signer),
                          0);
    CU_ASSERT_EQUAL_FATAL(al_grant_signer_public_raw(signer, pub, sizeof(pub)), 0);
    CU_ASSERT_EQUAL_FATAL(al_grant_keyring_new(&ring), 0);
    CU_ASSERT_EQUAL_FATAL(al_grant_keyring_add_raw(ring, "k1", ctx.issuer, pub, sizeof(pub)), 0);
    spec_init(&x, PROXY, 0);
    in_grant_build(&ctx, &x.s, buf, &g);
    CU_ASSERT_EQUAL_FATAL(al_grant_sign(signer, &g, &bytes, &len), 0);
    al_grant_expect_init(&want, "spiffe://airlock/credstore", ctx.holder);
    CU_ASSERT_EQUAL(
        al_grant_verify(ring, bytes, len, &want, ctx.now_ms + 1, &out, why, sizeof(why)), 0);
    if (out) {
        CU_ASSERT_EQUAL(out->n_credentials, 0);
        CU_ASSERT_STRING_EQUAL(out->scope, "ci");
        CU_ASSERT_STRING_EQUAL(out->subject, "job/0123456789abcdef0123456789abcdef/attempt/3");
        al_grant_free(out);
    }
    free(bytes);
    al_grant_keyring_free(ring);
    al_grant_signer_free(signer);
    free(buf);
}

int main(void)
{
    CU_pSuite s;
    unsigned failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("intake_grant", NULL, NULL);
    CU_add_test(s, "which attempts get a grant", test_needed);
    CU_add_test(s, "what the grant names", test_content);
    CU_add_test(s, "a PROXY job's grant signs and verifies", test_signs_and_verifies);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
