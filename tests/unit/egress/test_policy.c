/*
 * Unit tests for the egress proxy's destination policy (policy.c): parsing
 * destinations and credential bindings, host patterns (exact, "*.suffix",
 * IP literals in any spelling), overlap, the CONNECT decision (ceiling AND
 * job, interception when rules apply, pooled allow_cidrs, plain http only
 * where the ceiling says allow_http), and method/path decisions on
 * normalised paths.
 */
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "policy.h"

static struct eg_dest D(const char *host, int port, const char *const *methods,
                        const char *const *prefixes, const char *const *cidrs, int http) {
    struct eg_dest d;
    char why[256] = "";
    size_t nm = 0, np = 0, nc = 0;

    while (methods && methods[nm])
        nm++;
    while (prefixes && prefixes[np])
        np++;
    while (cidrs && cidrs[nc])
        nc++;
    int rc =
        eg_dest_init(&d, host, port, methods, nm, prefixes, np, cidrs, nc, http, why, sizeof(why));
    CU_ASSERT_EQUAL(rc, 0);
    if (rc)
        fprintf(stderr, "\n  %s: %s\n", host, why);
    return d;
}

static struct eg_authority
A(const char *s) {
    struct eg_authority a;
    const char *why;

    CU_ASSERT_EQUAL_FATAL(eg_authority_parse(s, strlen(s), 443, &a, &why), 0);
    return a;
}

/* The host of authority s (kept in a static slot: one per call site use). */
static const struct eg_host *
H(const char *s)
{
    static struct eg_authority slot;
    slot = A(s);
    return &slot.host;
}

static void test_dest_parse(void)
{
    static const char *const bad_methods[] = {"get", NULL};
    static const char *const bad_prefix[] = {"api", NULL};
    static const char *const bad_prefix2[] = {"/a?b", NULL};
    static const char *const bad_cidr[] = {"10.1.2.3/24", NULL};
    struct eg_dest d;
    char why[256];

    d = D("API.Test", 443, NULL, NULL, NULL, 0);
    CU_ASSERT_STRING_EQUAL(d.host.name, "api.test");
    CU_ASSERT(!d.wildcard);
    eg_dest_cleanup(&d);
    d = D("*.corp.test", 443, NULL, NULL, NULL, 0);
    CU_ASSERT(d.wildcard);
    CU_ASSERT_STRING_EQUAL(d.host.name, "corp.test");
    eg_dest_cleanup(&d);
    d = D("fd00::1", 443, NULL, NULL, NULL, 0);
    CU_ASSERT_EQUAL(d.host.kind, EG_HOST_IPV6);
    eg_dest_cleanup(&d);
    d = D("[fd00::1]", 443, NULL, NULL, NULL, 0);
    CU_ASSERT_STRING_EQUAL(d.host.name, "fd00::1");
    eg_dest_cleanup(&d);
    d = D("0x0a.1", 443, NULL, NULL, NULL, 0);
    CU_ASSERT_STRING_EQUAL(d.host.name, "10.0.0.1");
    eg_dest_cleanup(&d);

    CU_ASSERT_EQUAL(eg_dest_init(&d, "", 443, NULL, 0, NULL, 0, NULL, 0, 0, why, sizeof(why)),
                    AL_ERR_INVAL);
    CU_ASSERT_EQUAL(eg_dest_init(&d, "*", 443, NULL, 0, NULL, 0, NULL, 0, 0, why, sizeof(why)),
                    AL_ERR_INVAL);
    CU_ASSERT_EQUAL(
        eg_dest_init(&d, "a.*.test", 443, NULL, 0, NULL, 0, NULL, 0, 0, why, sizeof(why)),
        AL_ERR_INVAL);
    CU_ASSERT_EQUAL(
        eg_dest_init(&d, "*.10.0.0.1", 443, NULL, 0, NULL, 0, NULL, 0, 0, why, sizeof(why)),
        AL_ERR_INVAL);
    CU_ASSERT_EQUAL(eg_dest_init(&d, "a.test", 0, NULL, 0, NULL, 0, NULL, 0, 0, why, sizeof(why)),
                    AL_ERR_INVAL);
    CU_ASSERT_EQUAL(
        eg_dest_init(&d, "a.test", 65536, NULL, 0, NULL, 0, NULL, 0, 0, why, sizeof(why)),
        AL_ERR_INVAL);
    CU_ASSERT_EQUAL(
        eg_dest_init(&d, "a.test", 443, bad_methods, 1, NULL, 0, NULL, 0, 0, why, sizeof(why)),
        AL_ERR_INVAL);
    CU_ASSERT_EQUAL(
        eg_dest_init(&d, "a.test", 443, NULL, 0, bad_prefix, 1, NULL, 0, 0, why, sizeof(why)),
        AL_ERR_INVAL);
    CU_ASSERT_EQUAL(
        eg_dest_init(&d, "a.test", 443, NULL, 0, bad_prefix2, 1, NULL, 0, 0, why, sizeof(why)),
        AL_ERR_INVAL);
    CU_ASSERT_EQUAL(
        eg_dest_init(&d, "a.test", 443, NULL, 0, NULL, 0, bad_cidr, 1, 0, why, sizeof(why)),
        AL_ERR_INVAL);
    CU_ASSERT(strstr(why, "allow_cidrs") != NULL);
}

static void test_binds(void)
{
    struct eg_dest d;
    char why[256];

    CU_ASSERT_EQUAL(eg_bind_init(&d, "api.test", why, sizeof(why)), 0);
    CU_ASSERT_EQUAL(d.port, 443);
    CU_ASSERT_EQUAL(eg_bind_init(&d, "http://plain.test", why, sizeof(why)), 0);
    CU_ASSERT_EQUAL(d.port, 80);
    CU_ASSERT_EQUAL(eg_bind_init(&d, "https://api.test:8443/", why, sizeof(why)), 0);
    CU_ASSERT_EQUAL(d.port, 8443);
    CU_ASSERT_EQUAL(eg_bind_init(&d, "*.corp.test:444", why, sizeof(why)), 0);
    CU_ASSERT(d.wildcard);
    CU_ASSERT_EQUAL(d.port, 444);
    CU_ASSERT_EQUAL(eg_bind_init(&d, "[::1]:9", why, sizeof(why)), 0);
    CU_ASSERT_EQUAL(d.host.kind, EG_HOST_IPV6);
    CU_ASSERT_EQUAL(eg_bind_init(&d, "user@api.test", why, sizeof(why)), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(eg_bind_init(&d, "", why, sizeof(why)), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(eg_bind_init(&d, "*.1.2.3.4", why, sizeof(why)), AL_ERR_INVAL);
}

static void test_match(void)
{
    struct eg_dest w = D("*.corp.test", 443, NULL, NULL, NULL, 0);
    struct eg_dest e = D("api.corp.test", 443, NULL, NULL, NULL, 0);
    struct eg_dest ip = D("10.0.0.1", 443, NULL, NULL, NULL, 0);
    struct eg_dest w2 = D("*.x.corp.test", 443, NULL, NULL, NULL, 0);
    struct eg_dest other = D("*.other.test", 443, NULL, NULL, NULL, 0);
    struct eg_dest p8443 = D("api.corp.test", 8443, NULL, NULL, NULL, 0);

    CU_ASSERT(eg_host_match(&w, H("a.corp.test")));
    CU_ASSERT(eg_host_match(&w, H("a.b.corp.test")));
    CU_ASSERT(!eg_host_match(&w, H("corp.test")));
    CU_ASSERT(!eg_host_match(&w, H("xcorp.test")));
    CU_ASSERT(!eg_host_match(&w, H("corp.test.evil")));
    CU_ASSERT(!eg_host_match(&w, H("a.corp.test.evil.net")));
    CU_ASSERT(eg_host_match(&e, H("API.CORP.TEST")));
    CU_ASSERT(!eg_host_match(&e, H("b.api.corp.test")));
    CU_ASSERT(eg_host_match(&ip, H("0x0a000001")));
    CU_ASSERT(eg_host_match(&ip, H("012.0.0.1")));
    CU_ASSERT(!eg_host_match(&ip, H("10.0.0.2")));
    CU_ASSERT(eg_dest_overlap(&w, &e));
    CU_ASSERT(eg_dest_overlap(&e, &w));
    CU_ASSERT(eg_dest_overlap(&w, &w2));
    CU_ASSERT(eg_dest_overlap(&w2, &w));
    CU_ASSERT(!eg_dest_overlap(&w, &other));
    CU_ASSERT(!eg_dest_overlap(&e, &p8443));
    CU_ASSERT(!eg_dest_overlap(&e, &ip));
    eg_dest_cleanup(&w);
    eg_dest_cleanup(&e);
    eg_dest_cleanup(&ip);
    eg_dest_cleanup(&w2);
    eg_dest_cleanup(&other);
    eg_dest_cleanup(&p8443);
}

static void test_reach(void)
{
    static const char *const c10[] = {"10.0.0.0/8", NULL};
    static const char *const c172[] = {"172.16.0.0/12", "fd00::/8", NULL};
    static const char *const get[] = {"GET", NULL};
    struct eg_dest ceiling[] = {
        D("*.corp.test", 443, NULL, NULL, c10, 0), D("api.corp.test", 443, get, NULL, c172, 0),
        D("plain.test", 80, NULL, NULL, NULL, 1),  D("noplain.test", 80, NULL, NULL, NULL, 0),
        D("free.test", 443, NULL, NULL, NULL, 0),  D("ruled.test", 443, get, NULL, NULL, 0),
    };
    struct eg_dest job[] = {
        D("api.corp.test", 443, NULL, NULL, NULL, 0), D("b.corp.test", 443, get, NULL, NULL, 0),
        D("plain.test", 80, NULL, NULL, NULL, 0),     D("noplain.test", 80, NULL, NULL, NULL, 0),
        D("free.test", 443, NULL, NULL, NULL, 0),     D("ruled.test", 443, NULL, NULL, NULL, 0),
        D("nowhere.test", 443, NULL, NULL, NULL, 0),
    };
    struct eg_policy p = {ceiling, 6, job, 7};
    struct eg_reach r;
    struct eg_authority a;

    a = A("api.corp.test:443");
    CU_ASSERT(eg_policy_reach(&p, &a, 0, &r));
    CU_ASSERT(!r.restricted);     /* *.corp.test has no rules, the job entry neither */
    CU_ASSERT_EQUAL(r.ncidrs, 3); /* pooled from both matching ceiling entries */
    a = A("b.corp.test:443");
    CU_ASSERT(eg_policy_reach(&p, &a, 0, &r));
    CU_ASSERT(r.restricted); /* the job's entry has a method rule */
    a = A("c.corp.test:443");
    CU_ASSERT(!eg_policy_reach(&p, &a, 0, &r)); /* in the ceiling, not the job */
    a = A("nowhere.test:443");
    CU_ASSERT(!eg_policy_reach(&p, &a, 0, &r)); /* in the job, not the ceiling */
    a = A("api.corp.test:8443");
    CU_ASSERT(!eg_policy_reach(&p, &a, 0, &r)); /* port */
    a = A("free.test:443");
    CU_ASSERT(eg_policy_reach(&p, &a, 0, &r));
    CU_ASSERT(!r.restricted);
    CU_ASSERT_EQUAL(r.ncidrs, 0);
    a = A("ruled.test:443");
    CU_ASSERT(eg_policy_reach(&p, &a, 0, &r));
    CU_ASSERT(r.restricted); /* the ceiling's only entry has a rule */
    CU_ASSERT_EQUAL(eg_authority_parse("plain.test", 10, 80, &a, &(const char *){NULL}), 0);
    CU_ASSERT(eg_policy_reach(&p, &a, 1, &r));
    CU_ASSERT_EQUAL(eg_authority_parse("noplain.test", 12, 80, &a, &(const char *){NULL}), 0);
    CU_ASSERT(!eg_policy_reach(&p, &a, 1, &r)); /* no allow_http */
    CU_ASSERT(eg_policy_reach(&p, &a, 0, &r));  /* CONNECT to it is fine */
    for (size_t i = 0; i < 6; i++)
        eg_dest_cleanup(&ceiling[i]);
    for (size_t i = 0; i < 7; i++)
        eg_dest_cleanup(&job[i]);
}

static void test_request(void)
{
    static const char *const get_head[] = {"GET", "HEAD", NULL};
    static const char *const post[] = {"POST", NULL};
    static const char *const repos[] = {"/repos/acme/", "/user", NULL};
    static const char *const v1[] = {"/v1", NULL};
    struct eg_dest ceiling[] = {
        D("api.test", 443, NULL, repos, NULL, 0),
        D("api.test", 443, post, v1, NULL, 0),
    };
    struct eg_dest job[] = {D("api.test", 443, get_head, NULL, NULL, 0),
                            D("api.test", 443, post, NULL, NULL, 0)};
    struct eg_policy p = {ceiling, 2, job, 2};
    struct eg_authority a = A("api.test:443");
    const char *why = NULL;

    CU_ASSERT(eg_policy_request(&p, &a, 0, "GET", "/repos/acme/x", &why));
    CU_ASSERT(eg_policy_request(&p, &a, 0, "HEAD", "/user", &why));
    CU_ASSERT(eg_policy_request(&p, &a, 0, "POST", "/v1/x", &why));
    CU_ASSERT(eg_policy_request(&p, &a, 0, "POST", "/repos/acme/issues", &why));
    CU_ASSERT(!eg_policy_request(&p, &a, 0, "GET", "/repos/other/x", &why));
    CU_ASSERT_STRING_EQUAL(why, "path not under an allowed prefix");
    CU_ASSERT(!eg_policy_request(&p, &a, 0, "GET", "/users", &why));
    CU_ASSERT(!eg_policy_request(&p, &a, 0, "GET", "/v1", &why)); /* only POST there */
    CU_ASSERT(!eg_policy_request(&p, &a, 0, "DELETE", "/repos/acme/x", &why));
    CU_ASSERT_STRING_EQUAL(why, "method not allowed"); /* the job allows no DELETE */
    CU_ASSERT(!eg_policy_request(&p, &a, 1, "GET", "/repos/acme/x", &why)); /* no allow_http */
    for (size_t i = 0; i < 2; i++) {
        eg_dest_cleanup(&ceiling[i]);
        eg_dest_cleanup(&job[i]);
    }
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("egress policy", NULL, NULL);
    CU_add_test(s, "destination parsing", test_dest_parse);
    CU_add_test(s, "credential bindings", test_binds);
    CU_add_test(s, "host patterns and overlap", test_match);
    CU_add_test(s, "CONNECT: ceiling AND job, interception, cidrs, plain http", test_reach);
    CU_add_test(s, "methods and path prefixes", test_request);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
