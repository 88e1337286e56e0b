/*
 * Unit tests for placeholders and template slots (inject.c): credential
 * checks at JobOpen, substitution only in the template's slot (bearer with
 * any case of the scheme, custom header formats, BASIC decoded, re-encoded
 * and with the placeholder in every allowed position), and every refusal:
 * another header, a header name, the URL, the wrong shape in the slot, a
 * destination the credential is not bound to, plain http, expiry, twice;
 * then body detection as the proxy runs it (an rl_scrub stream over the
 * placeholders), split at every position and in base64 and percent forms.
 */
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_base64.h"
#include "al_err.h"
#include "inject.h"
#include "rlbuf.h"
#include "scrub.h"

#define PH_A  "AIRLOCK_PH_0123456789abcdef0123456789abcdef"
#define PH_B  "AIRLOCK_PH_fedcba9876543210fedcba9876543210"
#define PH_C  "AIRLOCK_PH_00112233445566778899aabbccddeeff"
#define TOKEN "ghp_s3cretT0kenValue"
#define BASIC "robot:hunter2-long-password"
#define KEY   "k3y-v4lue-for-plain"

static struct eg_cred creds[3];
static struct rl_scrub *detect;
static const int64_t NOW = 1700000000000LL;

static int init_cred(struct eg_cred *c, const char *name, const char *ph, const char *value,
                     const char *const *binds, size_t nb, int type, const char *header,
                     const char *fmt, int plain, char *why, size_t wn)
{
    struct eg_cred_spec s = {.name = name,
                             .placeholder = ph,
                             .binds = binds,
                             .nbinds = nb,
                             .version = 1,
                             .type = type,
                             .header = header,
                             .format = fmt,
                             .allow_plain_http = plain,
                             .value = (const uint8_t *)value,
                             .value_len = strlen(value),
                             .expires_ms = NOW + 60000,
                             .grant_id = "g1"};
    return eg_cred_init(c, &s, why, wn);
}

static int setup(void)
{
    static const char *const api[] = {"api.test", "*.corp.test:443"};
    static const char *const both[] = {"http://plain.test", "api.test"};
    char why[256];

    if (init_cred(&creds[0], "tok", PH_A, TOKEN, api, 2, GW_CRED_BEARER, "", "", 0, why,
                  sizeof(why)) < 0 ||
        init_cred(&creds[1], "basic", PH_B, BASIC, api, 1, GW_CRED_BASIC, "", "", 0, why,
                  sizeof(why)) < 0 ||
        init_cred(&creds[2], "key", PH_C, KEY, both, 2, GW_CRED_HEADER_VALUE, "X-Api-Key", "key={}",
                  1, why, sizeof(why)) < 0) {
        fprintf(stderr, "setup: %s\n", why);
        return 1;
    }
    if (rl_scrub_new(&detect) < 0)
        return 1;
    for (int i = 0; i < 3; i++)
        if (rl_scrub_add(detect, (const uint8_t *)creds[i].placeholder, EG_PH_LEN) < 0)
            return 1;
    return 0;
}

static int teardown(void)
{
    for (int i = 0; i < 3; i++)
        eg_cred_cleanup(&creds[i]);
    rl_scrub_free(detect);
    return 0;
}

static struct eg_authority auth(const char *s, int port)
{
    struct eg_authority a;
    const char *why;

    CU_ASSERT_EQUAL_FATAL(eg_authority_parse(s, strlen(s), port, &a, &why), 0);
    return a;
}

/* Runs the scan for one request head; returns its code, out filled. */
static int scan(const char *dest, int plain, const char *target, const struct rl_h1_header *h,
                size_t n, struct eg_scan *out)
{
    struct eg_authority a = auth(dest, plain ? 80 : 443);

    return eg_scan_head(creds, 3, detect, &a, plain, NOW, target, strlen(target), h, n, out);
}

#define HDR(n, v)                                                                                  \
    {                                                                                              \
        (n), sizeof(n) - 1, (v), strlen(v)                                                         \
    }

static void test_cred_init(void)
{
    static const char *const api[] = {"api.test"};
    static const char *const bad_bind[] = {"user@api.test"};
    struct eg_cred c;
    char why[256];

    CU_ASSERT_EQUAL(
        init_cred(&c, "x", "AIRLOCK_PH_0123", TOKEN, api, 1, 1, "", "", 0, why, sizeof(why)),
        AL_ERR_INVAL);
    CU_ASSERT_EQUAL(init_cred(&c, "x", "AIRLOCK_PH_0123456789ABCDEF0123456789abcdef", TOKEN, api, 1,
                              1, "", "", 0, why, sizeof(why)),
                    AL_ERR_INVAL);
    CU_ASSERT_EQUAL(init_cred(&c, "x", PH_A, "short", api, 1, 1, "", "", 0, why, sizeof(why)),
                    AL_ERR_INVAL);
    CU_ASSERT(strstr(why, "too short") != NULL);
    CU_ASSERT(strstr(why, "short") && !strstr(why, "short\""));
    CU_ASSERT_EQUAL(
        init_cred(&c, "x", PH_A, "line\nbreak-value", api, 1, 1, "", "", 0, why, sizeof(why)),
        AL_ERR_INVAL);
    CU_ASSERT(strstr(why, "line") == NULL); /* never quotes the value */
    CU_ASSERT_EQUAL(init_cred(&c, "x", PH_A, TOKEN, api, 1, 1, "Host", "", 0, why, sizeof(why)),
                    AL_ERR_INVAL);
    CU_ASSERT_EQUAL(
        init_cred(&c, "x", PH_A, TOKEN, api, 1, 1, "", "Bearer {} {}", 0, why, sizeof(why)),
        AL_ERR_INVAL);
    CU_ASSERT_EQUAL(
        init_cred(&c, "x", PH_A, TOKEN, api, 1, GW_CRED_GENERIC, "", "", 0, why, sizeof(why)),
        AL_ERR_INVAL); /* generic needs a header */
    CU_ASSERT_EQUAL(init_cred(&c, "x", PH_A, TOKEN, bad_bind, 1, 1, "", "", 0, why, sizeof(why)),
                    AL_ERR_INVAL);
    CU_ASSERT_EQUAL(init_cred(&c, "x", PH_A, TOKEN, api, 0, 1, "", "", 0, why, sizeof(why)),
                    AL_ERR_INVAL);
    CU_ASSERT(eg_placeholder_ok(PH_A, EG_PH_LEN));
    CU_ASSERT(!eg_placeholder_ok(PH_A, EG_PH_LEN - 1));
    CU_ASSERT_STRING_EQUAL(creds[0].header, "authorization");
    CU_ASSERT_STRING_EQUAL(creds[2].header, "x-api-key");
}

static void expect_subst(const struct eg_scan *s, size_t header, size_t cred, const char *want)
{
    CU_ASSERT_EQUAL_FATAL(s->nsubst, 1);
    CU_ASSERT_EQUAL(s->subst[0].header, header);
    CU_ASSERT_EQUAL(s->subst[0].cred, cred);
    CU_ASSERT_EQUAL(s->subst[0].len, strlen(want));
    CU_ASSERT(memcmp(s->subst[0].value, want, strlen(want)) == 0);
}

static void test_bearer(void)
{
    struct rl_h1_header h[] = {HDR("accept", "*/*"), HDR("authorization", "Bearer " PH_A)};
    struct rl_h1_header lower[] = {HDR("authorization", "bearer " PH_A)};
    struct eg_scan s;

    CU_ASSERT_EQUAL(scan("api.test", 0, "/x", h, 2, &s), 0);
    expect_subst(&s, 1, 0, "Bearer " TOKEN);
    eg_scan_cleanup(&s);
    CU_ASSERT_EQUAL(scan("a.b.corp.test", 0, "/x", lower, 1, &s), 0);
    expect_subst(&s, 0, 0, "Bearer " TOKEN);
    eg_scan_cleanup(&s);
    CU_ASSERT_EQUAL(scan("api.test", 0, "/nothing", h, 1, &s), 0);
    CU_ASSERT_EQUAL(s.nsubst, 0);
    eg_scan_cleanup(&s);
}

static void expect_refused(const char *dest, int plain, const char *target,
                           const struct rl_h1_header *h, size_t n, int exfil, long cred,
                           const char *reason)
{
    struct eg_scan s;
    int rc = scan(dest, plain, target, h, n, &s);

    CU_ASSERT_EQUAL(rc, AL_ERR_AUTH);
    CU_ASSERT_EQUAL(s.exfil, exfil);
    CU_ASSERT_EQUAL(s.cred, cred);
    CU_ASSERT(strstr(s.reason, reason) != NULL);
    if (rc != AL_ERR_AUTH || !strstr(s.reason, reason))
        fprintf(stderr, "\n  rc %d reason \"%s\", want \"%s\"\n", rc, s.reason, reason);
    CU_ASSERT(strstr(s.reason, TOKEN) == NULL && strstr(s.reason, "hunter2") == NULL);
    CU_ASSERT_EQUAL(s.nsubst, 0);
    eg_scan_cleanup(&s);
}

static void test_refusals(void)
{
    char b64[128];
    struct rl_h1_header other[] = {HDR("x-debug", PH_A)};
    struct rl_h1_header in_value[] = {HDR("cookie", "s=1; t=" PH_A)};
    struct rl_h1_header name[] = {{PH_A, EG_PH_LEN, "1", 1}};
    struct rl_h1_header shape[] = {HDR("authorization", "token " PH_A)};
    struct rl_h1_header extra[] = {HDR("authorization", "Bearer " PH_A " x")};
    struct rl_h1_header twice[] = {HDR("authorization", "Bearer " PH_A),
                                   HDR("authorization", "Bearer " PH_A)};
    struct rl_h1_header slot[] = {HDR("authorization", "Bearer " PH_A)};
    struct rl_h1_header key[] = {HDR("x-api-key", "key=" PH_C)};
    struct rl_h1_header b64h[] = {HDR("x-data", "")};

    expect_refused("api.test", 0, "/x", other, 1, 1, 0, "in header x-debug");
    expect_refused("api.test", 0, "/x", in_value, 1, 1, 0, "in header cookie");
    expect_refused("api.test", 0, "/x", name, 1, 1, 0, "in a header name");
    expect_refused("api.test", 0, "/x/" PH_A, slot, 0, 1, 0, "in the request URL");
    expect_refused("api.test", 0, "/x?t=" PH_A, slot, 0, 1, 0, "in the request URL");
    expect_refused("api.test", 0, "/x?t=AIRLOCK%5FPH%5F0123456789abcdef0123456789abcdef", slot, 0,
                   1, 0, "in the request URL");
    expect_refused("api.test", 0, "/x", shape, 1, 1, 0, "not in the form");
    expect_refused("api.test", 0, "/x", extra, 1, 1, 0, "not in the form");
    expect_refused("api.test", 0, "/x", twice, 2, 1, 0, "twice");
    expect_refused("evil.test", 0, "/x", slot, 1, 1, 0, "not bound to evil.test:443");
    expect_refused("api.test:8443", 0, "/x", slot, 1, 1, 0, "not bound to api.test:8443");
    expect_refused("corp.test", 0, "/x", slot, 1, 1, 0, "not bound to corp.test:443");
    expect_refused("plain.test", 1, "/x", slot, 1, 1, 0, "not bound");
    expect_refused("api.test:80", 1, "/x", slot, 1, 1, 0, "not bound");
    /* a placeholder in base64 in another header */
    al_base64_encode((const uint8_t *)"x:" PH_A, 2 + EG_PH_LEN, b64, sizeof(b64), 0, NULL);
    b64h[0].value = b64;
    b64h[0].value_len = strlen(b64);
    expect_refused("api.test", 0, "/x", b64h, 1, 1, 0, "in header x-data");
    /* the key may go over plain http to plain.test, the bearer may not */
    struct eg_scan s;
    CU_ASSERT_EQUAL(scan("plain.test", 1, "/x", key, 1, &s), 0);
    expect_subst(&s, 0, 2, "key=" KEY);
    eg_scan_cleanup(&s);
    creds[0].allow_plain_http = 0;
    expect_refused("api.test:80", 1, "/x", key, 1, 1, 2, "not bound to api.test:80");
}

static void test_expired(void)
{
    struct rl_h1_header slot[] = {HDR("authorization", "Bearer " PH_A)};
    struct eg_scan s;
    int64_t keep = creds[0].expires_ms;

    creds[0].expires_ms = NOW;
    CU_ASSERT_EQUAL(scan("api.test", 0, "/x", slot, 1, &s), AL_ERR_AUTH);
    CU_ASSERT_EQUAL(s.exfil, 0);
    CU_ASSERT(strstr(s.reason, "credential tok has expired") != NULL);
    eg_scan_cleanup(&s);
    creds[0].expires_ms = keep;
}

static void basic_ok(const char *decoded, const char *want_decoded)
{
    char hv[256], want[256], b64[200];
    struct rl_h1_header h[] = {{"authorization", 13, hv, 0}};
    struct eg_scan s;

    al_base64_encode((const uint8_t *)decoded, strlen(decoded), b64, sizeof(b64), 0, NULL);
    snprintf(hv, sizeof(hv), "Basic %s", b64);
    h[0].value_len = strlen(hv);
    al_base64_encode((const uint8_t *)want_decoded, strlen(want_decoded), b64, sizeof(b64), 0,
                     NULL);
    snprintf(want, sizeof(want), "Basic %s", b64);
    CU_ASSERT_EQUAL(scan("api.test", 0, "/x", h, 1, &s), 0);
    expect_subst(&s, 0, 1, want);
    eg_scan_cleanup(&s);
}

static void basic_bad_as(const char *decoded, long cred)
{
    char hv[256], b64[200];
    struct rl_h1_header h[] = {{"authorization", 13, hv, 0}};

    al_base64_encode((const uint8_t *)decoded, strlen(decoded), b64, sizeof(b64), 0, NULL);
    snprintf(hv, sizeof(hv), "Basic %s", b64);
    h[0].value_len = strlen(hv);
    expect_refused("api.test", 0, "/x", h, 1, 1, cred, "not in the form");
}

static void basic_bad(const char *decoded)
{
    basic_bad_as(decoded, 1);
}

static void test_basic(void)
{
    struct eg_cred c;
    static const char *const api[] = {"api.test"};
    char why[256];

    /* the value is user:password: the placeholder stands for all of it */
    basic_ok(PH_B, BASIC);
    basic_ok(PH_B ":", BASIC);
    basic_bad("robot:" PH_B);
    basic_bad(PH_B ":x");
    basic_bad(PH_B PH_B);
    basic_bad("x" PH_B);
    basic_bad(PH_B ":" PH_A);
    /* a value without ':' (a bare password) goes where the placeholder is */
    eg_cred_cleanup(&creds[1]);
    CU_ASSERT_EQUAL_FATAL(init_cred(&creds[1], "basic", PH_B, "bare-password-123", api, 1,
                                    GW_CRED_BASIC, "", "", 0, why, sizeof(why)),
                          0);
    basic_ok("x-access-token:" PH_B, "x-access-token:bare-password-123");
    basic_ok(PH_B ":", "bare-password-123:");
    basic_bad("u:" PH_B PH_B);
    basic_bad_as("u:" PH_A, 0); /* the bearer's placeholder, in the wrong shape for it */
    eg_cred_cleanup(&creds[1]);
    CU_ASSERT_EQUAL_FATAL(init_cred(&creds[1], "basic", PH_B, BASIC, api, 1, GW_CRED_BASIC, "", "",
                                    0, why, sizeof(why)),
                          0);
    /* not base64 at all */
    struct rl_h1_header h[] = {HDR("authorization", "Basic " PH_B)};
    expect_refused("api.test", 0, "/x", h, 1, 1, 1, "not in the form");
    (void)c;
}

/* The body as the proxy checks it: an rl_scrub stream over the detector. */
static long body_hit(const char *body, size_t split1, size_t split2)
{
    struct rl_scrub_stream *st;
    struct rl_buf out;
    size_t n = strlen(body);
    long first;

    rl_buf_init(&out, 0);
    CU_ASSERT_EQUAL_FATAL(rl_scrub_stream_new(detect, &st), 0);
    rl_scrub_stream_feed(st, (const uint8_t *)body, split1, &out);
    rl_scrub_stream_feed(st, (const uint8_t *)body + split1, split2 - split1, &out);
    rl_scrub_stream_feed(st, (const uint8_t *)body + split2, n - split2, &out);
    rl_scrub_stream_finish(st, &out);
    first = rl_scrub_stream_hits(st) ? rl_scrub_stream_first(st) : -1;
    rl_scrub_stream_free(st);
    rl_buf_cleanup(&out);
    return first;
}

static void test_body(void)
{
    const char *body = "{\"a\":\"x\",\"t\":\"" PH_B "\",\"z\":1}";
    const char *clean = "{\"a\":\"AIRLOCK_PH_\",\"t\":\"0123456789abcdef\"}";
    char b64[200], pct[256];
    size_t n = strlen(body);

    for (size_t i = 0; i <= n; i++)
        for (size_t j = i; j <= n; j += 7)
            CU_ASSERT_EQUAL(body_hit(body, i, j), 1);
    for (size_t i = 0; i <= strlen(clean); i++)
        CU_ASSERT_EQUAL(body_hit(clean, i, i), -1);
    for (int lead = 0; lead < 3; lead++) {
        char raw[80];
        snprintf(raw, sizeof(raw), "%.*s%s", lead, "xyz", PH_C);
        al_base64_encode((const uint8_t *)raw, strlen(raw), b64, sizeof(b64), 0, NULL);
        CU_ASSERT_EQUAL(body_hit(b64, strlen(b64) / 2, strlen(b64) / 2 + 3), 2);
    }
    /* percent-encoding by any standard encoder leaves the placeholder as it is (its
     * characters are all unreserved); every byte encoded is a form of its own */
    snprintf(pct, sizeof(pct), "q=");
    for (size_t i = 0; i < EG_PH_LEN; i++)
        snprintf(pct + strlen(pct), sizeof(pct) - strlen(pct), "%%%02X", (unsigned char)PH_A[i]);
    CU_ASSERT_EQUAL(body_hit(pct, 10, 20), 0);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("egress placeholders and slots", setup, teardown);
    CU_add_test(s, "credential checks", test_cred_init);
    CU_add_test(s, "bearer in its slot", test_bearer);
    CU_add_test(s, "every placeholder out of place", test_refusals);
    CU_add_test(s, "expired credential", test_expired);
    CU_add_test(s, "basic auth decoded, substituted, re-encoded", test_basic);
    CU_add_test(s, "body detection across chunk splits", test_body);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
