/*
 * Unit tests for gw_cache: injection templates (type defaults, basic auth
 * encoding, the one-slot rule, forbidden headers, header injection through
 * the value, plain http), values (scrubber built from the secret; too short
 * to scrub refused) and the cache rules with a fake clock: expiry at the
 * given time, a newer value replacing the older, LRU eviction, and a value
 * still in use by a stream surviving its eviction.
 */
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "al_wipe.h"
#include "gw_cache.h"
#include "scrub.h"

#define SECRET "s3cr3t-token-value"

static int fmt(int type, const char *header, const char *format, int allow_plain, const char *v,
               int plain, char *hdr, char *out, size_t outn)
{
    struct gw_template t = {type, header, format, allow_plain};
    uint8_t *val = NULL;
    size_t len = 0;
    char why[160] = "";
    int rc = gw_inject_format(&t, (const uint8_t *)v, strlen(v), plain, hdr, &val, &len, why,
                              sizeof(why));

    if (rc == 0) {
        snprintf(out, outn, "%.*s", (int)len, (const char *)val);
        CU_ASSERT_EQUAL(strlen(out), len);
    } else {
        CU_ASSERT_PTR_NULL(val);
        CU_ASSERT(why[0] != 0);
        CU_ASSERT_PTR_NULL(strstr(why, v)); /* never the value in an error */
    }
    al_secure_free(val);
    return rc;
}

static void test_templates(void)
{
    char h[GW_HEADER_MAX + 1], v[256];

    CU_ASSERT_EQUAL(fmt(GW_CRED_BEARER, "", "", 0, SECRET, 0, h, v, sizeof(v)), 0);
    CU_ASSERT_STRING_EQUAL(h, "authorization");
    CU_ASSERT_STRING_EQUAL(v, "Bearer " SECRET);
    CU_ASSERT_EQUAL(fmt(GW_CRED_BASIC, "", "", 0, "user:pass word", 0, h, v, sizeof(v)), 0);
    CU_ASSERT_STRING_EQUAL(h, "authorization");
    CU_ASSERT_STRING_EQUAL(v, "Basic dXNlcjpwYXNzIHdvcmQ=");
    CU_ASSERT_EQUAL(fmt(GW_CRED_HEADER_VALUE, "X-Api-Key", "", 0, SECRET, 0, h, v, sizeof(v)), 0);
    CU_ASSERT_STRING_EQUAL(h, "x-api-key");
    CU_ASSERT_STRING_EQUAL(v, SECRET);
    CU_ASSERT_EQUAL(fmt(GW_CRED_GENERIC, "x-token", "tok={}; v=1", 0, SECRET, 0, h, v, sizeof(v)),
                    0);
    CU_ASSERT_STRING_EQUAL(v, "tok=" SECRET "; v=1");
    /* the header and format a type cannot do without */
    CU_ASSERT_EQUAL(fmt(GW_CRED_HEADER_VALUE, "", "", 0, SECRET, 0, h, v, sizeof(v)), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(fmt(GW_CRED_GENERIC, "x-token", "", 0, SECRET, 0, h, v, sizeof(v)),
                    AL_ERR_INVAL);
    CU_ASSERT_EQUAL(fmt(0, "", "", 0, SECRET, 0, h, v, sizeof(v)), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(fmt(9, "", "", 0, SECRET, 0, h, v, sizeof(v)), AL_ERR_INVAL);
}

static void test_template_rules(void)
{
    static const char *const bad_headers[] = {
        "Host",  "content-length",      "Transfer-Encoding", "connection", "upgrade",
        "te",    "proxy-authorization", "airlock-grant",     ":path",      "x y",
        "cookie"};
    static const char *const bad_formats[] = {"Bearer",      "{}{}",       "{ }",
                                              "Bearer {} }", "{Bearer {}", "a\r\nb: {}"};
    char h[GW_HEADER_MAX + 1], v[256];

    for (size_t i = 0; i < sizeof(bad_headers) / sizeof(bad_headers[0]); i++)
        CU_ASSERT_EQUAL(fmt(GW_CRED_GENERIC, bad_headers[i], "{}", 0, SECRET, 0, h, v, sizeof(v)),
                        AL_ERR_INVAL);
    for (size_t i = 0; i < sizeof(bad_formats) / sizeof(bad_formats[0]); i++)
        CU_ASSERT_EQUAL(fmt(GW_CRED_GENERIC, "x-t", bad_formats[i], 0, SECRET, 0, h, v, sizeof(v)),
                        AL_ERR_INVAL);
    /* a value that would split the header */
    CU_ASSERT_EQUAL(fmt(GW_CRED_BEARER, "", "", 0, "abc\r\nX-Evil: 1", 0, h, v, sizeof(v)),
                    AL_ERR_INVAL);
    CU_ASSERT_EQUAL(fmt(GW_CRED_BEARER, "", "", 0, "abc\ndef12345", 0, h, v, sizeof(v)),
                    AL_ERR_INVAL);
    /* plain http only when the template allows it */
    CU_ASSERT_EQUAL(fmt(GW_CRED_BEARER, "", "", 0, SECRET, 1, h, v, sizeof(v)), AL_ERR_AUTH);
    CU_ASSERT_EQUAL(fmt(GW_CRED_BEARER, "", "", 1, SECRET, 1, h, v, sizeof(v)), 0);
}

static struct gw_value *value(const char *secret, double expires, int version)
{
    struct gw_template t = {GW_CRED_BEARER, "", "", 1};
    struct gw_value *v = NULL;
    char why[160];
    int rc = gw_value_new(&t, (const uint8_t *)secret, strlen(secret), version, expires, 1, &v, why,
                          sizeof(why));

    CU_ASSERT_EQUAL(rc, 0);
    return v;
}

static void test_values(void)
{
    struct gw_template t = {GW_CRED_BEARER, "", "", 1};
    struct gw_template basic = {GW_CRED_BASIC, "", "", 1};
    struct gw_value *v = value(SECRET, 10, 3);
    char why[160] = "";
    const char *body = "echo: Bearer " SECRET;

    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(v->version, 3);
    CU_ASSERT_EQUAL(v->refs, 1);
    CU_ASSERT(rl_scrub_contains(v->scrub, (const uint8_t *)body, strlen(body)));
    CU_ASSERT_FALSE(rl_scrub_contains(v->scrub, (const uint8_t *)"harmless", 8));
    gw_value_unref(v);
    /* too short to be scrubbed reliably */
    v = (struct gw_value *)1;
    CU_ASSERT_EQUAL(gw_value_new(&t, (const uint8_t *)"short", 5, 1, 10, 1, &v, why, sizeof(why)),
                    AL_ERR_INVAL);
    CU_ASSERT_PTR_NULL(v);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "short"));
    /* basic auth: the password alone is scrubbed too */
    CU_ASSERT_EQUAL(gw_value_new(&basic, (const uint8_t *)"bob:correct-horse", 17, 1, 10, 1, &v,
                                 why, sizeof(why)),
                    0);
    CU_ASSERT(rl_scrub_contains(v->scrub, (const uint8_t *)"pw=correct-horse!", 17));
    gw_value_unref(v);
}

static void test_cache_expiry_and_replace(void)
{
    struct gw_cache *c;
    char key[256];
    struct gw_value *v1 = value(SECRET, 30, 1), *v2 = value(SECRET "-2", 60, 2), *got;

    CU_ASSERT_EQUAL_FATAL(gw_cache_new(8, &c), 0);
    CU_ASSERT_EQUAL(
        gw_cache_key(key, sizeof(key), "spiffe://airlock/relay/r0", "dev", "corp/crm", "crm-token"),
        0);
    CU_ASSERT_PTR_NULL(gw_cache_get(c, key, 0));
    CU_ASSERT_EQUAL(gw_cache_put(c, key, v1, 0), 0);
    CU_ASSERT_EQUAL(v1->refs, 2);
    got = gw_cache_get(c, key, 29.9);
    CU_ASSERT_PTR_EQUAL(got, v1);
    gw_value_unref(got);
    /* at the expiry time it is gone, and the cache's reference with it */
    CU_ASSERT_PTR_NULL(gw_cache_get(c, key, 30));
    CU_ASSERT_EQUAL(v1->refs, 1);
    CU_ASSERT_EQUAL(gw_cache_count(c), 0);
    /* a newer version replaces the older one under the same key */
    CU_ASSERT_EQUAL(gw_cache_put(c, key, v1, 31), 0); /* expired already: not cached */
    CU_ASSERT_EQUAL(gw_cache_count(c), 0);
    gw_value_unref(v1);
    v1 = value(SECRET, 30, 1);
    CU_ASSERT_EQUAL(gw_cache_put(c, key, v1, 1), 0);
    CU_ASSERT_EQUAL(gw_cache_put(c, key, v2, 2), 0);
    CU_ASSERT_EQUAL(v1->refs, 1);
    got = gw_cache_get(c, key, 3);
    CU_ASSERT_PTR_EQUAL(got, v2);
    CU_ASSERT_EQUAL(got->version, 2);
    gw_value_unref(got);
    /* sweep */
    gw_cache_sweep(c, 59);
    CU_ASSERT_EQUAL(gw_cache_count(c), 1);
    gw_cache_sweep(c, 60);
    CU_ASSERT_EQUAL(gw_cache_count(c), 0);
    gw_value_unref(v1);
    gw_value_unref(v2);
    gw_cache_free(c);
}

static void test_cache_keys_and_lru(void)
{
    struct gw_cache *c;
    char k[4][256];
    struct gw_value *v[4], *got;

    CU_ASSERT_EQUAL_FATAL(gw_cache_new(3, &c), 0);
    /* every part of the key matters */
    gw_cache_key(k[0], sizeof(k[0]), "iss-a", "dev", "corp/crm", "tok");
    gw_cache_key(k[1], sizeof(k[1]), "iss-b", "dev", "corp/crm", "tok");
    gw_cache_key(k[2], sizeof(k[2]), "iss-a", "dev", "corp/wiki", "tok");
    gw_cache_key(k[3], sizeof(k[3]), "iss-a", "ops", "corp/crm", "tok");
    for (int i = 0; i < 4; i++)
        v[i] = value(SECRET, 100, i + 1);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(gw_cache_put(c, k[i], v[i], 0), 0);
    got = gw_cache_get(c, k[0], 1); /* k[0] is now the most recently used */
    CU_ASSERT_PTR_EQUAL(got, v[0]);
    /* full: the least recently used (k[1]) goes */
    CU_ASSERT_EQUAL(gw_cache_put(c, k[3], v[3], 2), 0);
    CU_ASSERT_EQUAL(gw_cache_count(c), 3);
    CU_ASSERT_PTR_NULL(gw_cache_get(c, k[1], 3));
    CU_ASSERT_EQUAL(v[1]->refs, 1);
    /* drop: only the very value the cache holds (an upstream refused it) */
    CU_ASSERT_EQUAL(gw_cache_drop(c, v[1]), 0); /* evicted already */
    CU_ASSERT_EQUAL(gw_cache_drop(c, v[2]), 1);
    CU_ASSERT_EQUAL(gw_cache_count(c), 2);
    CU_ASSERT_PTR_NULL(gw_cache_get(c, k[2], 3));
    CU_ASSERT_EQUAL(v[2]->refs, 1);
    CU_ASSERT_EQUAL(gw_cache_drop(c, v[2]), 0);
    CU_ASSERT_EQUAL(gw_cache_drop(c, NULL), 0);
    /* a value held by a stream survives eviction and clear */
    gw_cache_clear(c);
    CU_ASSERT_EQUAL(gw_cache_count(c), 0);
    CU_ASSERT_EQUAL(got->refs, 2); /* ours (got) and the test's v[0] */
    CU_ASSERT(rl_scrub_contains(got->scrub, (const uint8_t *)SECRET, strlen(SECRET)));
    gw_value_unref(got);
    for (int i = 0; i < 4; i++)
        gw_value_unref(v[i]);
    CU_ASSERT_EQUAL(gw_cache_key(k[0], 8, "a", "b", "c", "d-long"), AL_ERR_TOOBIG);
    gw_cache_free(c);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("gateway values and cache", NULL, NULL);
    CU_add_test(s, "templates by type", test_templates);
    CU_add_test(s, "template rules", test_template_rules);
    CU_add_test(s, "values and their scrubbers", test_values);
    CU_add_test(s, "cache: expiry, replacement, sweep", test_cache_expiry_and_replace);
    CU_add_test(s, "cache: keys, LRU and drop", test_cache_keys_and_lru);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
