/*
 * Unit tests for edgerec, the rules of an edge's use record: a record names
 * a credential its grant names, or none at all (an egress proxy job's
 * request or tunnel that used no value, under a grant naming no credential,
 * or under one naming others) -- but then no version; a credential the
 * grant does not cover is refused, also under a grant naming none; relay
 * grants naming {"*"}; field caps, decisions, statuses and counts; and which
 * values are looked for in a record's text (the record's credential at its
 * current and named version, or every credential the grant names).
 */
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "edgerec.h"

static Airlock__V1__Grant grant(char **creds, size_t n, const char *issuer)
{
    Airlock__V1__Grant g = AIRLOCK__V1__GRANT__INIT;
    g.grant_id = "0123456789abcdef0123456789abcdef";
    g.issuer = (char *)issuer;
    g.credentials = creds;
    g.n_credentials = n;
    return g;
}

static Airlock__V1__EdgeUseRecord rec(const char *credential, int32_t version)
{
    Airlock__V1__EdgeUseRecord e = AIRLOCK__V1__EDGE_USE_RECORD__INIT;
    e.grant_id = "0123456789abcdef0123456789abcdef";
    e.credential = (char *)credential;
    e.version = version;
    e.destination = "api.example.com:443";
    e.method = "GET";
    e.path = "/v1/x";
    e.status = 200;
    e.decision = AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW;
    e.request_id = "job1/1";
    return e;
}

#define INTAKE "spiffe://airlock/intake/intake-0"
#define RELAY  "spiffe://airlock/relay/relay-0"

static void test_credentials(void)
{
    char *two[] = {"github/ci", "gitlab/ci"}, *any[] = {"*"};
    Airlock__V1__Grant g = grant(two, 2, INTAKE), none = grant(NULL, 0, INTAKE);
    Airlock__V1__Grant star = grant(any, 1, INTAKE), relay = grant(any, 1, RELAY);
    Airlock__V1__EdgeUseRecord e;
    char msg[160];

    e = rec("github/ci", 3);
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &g, 0, msg, sizeof(msg)), 0);
    e = rec("other/cred", 1);
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &g, 4, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "record 4: credential"));
    /* a PROXY job without bindings: its grant names nothing */
    e = rec("", 0);
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &none, 0, msg, sizeof(msg)), 0);
    e = rec(NULL, 0); /* unset = "" */
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &none, 0, msg, sizeof(msg)), 0);
    e.decision = AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_DENY;
    e.status = 0;
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &none, 0, msg, sizeof(msg)), 0);
    /* ... and still refuses a credential it does not name */
    e = rec("github/ci", 1);
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &none, 1, msg, sizeof(msg)), AL_ERR_INVAL);
    /* a credential-less record under a grant naming credentials (a tunnel of a
     * job that also binds some) */
    e = rec("", 0);
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &g, 0, msg, sizeof(msg)), 0);
    /* no credential, but a version: refused */
    e = rec("", 2);
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &g, 2, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "without a credential"));
    /* {"*"} names every credential only in a relay's grant */
    e = rec("crm/token", 1);
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &relay, 0, msg, sizeof(msg)), 0);
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &star, 0, msg, sizeof(msg)), AL_ERR_INVAL);
    /* no grant of that id in the batch */
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, NULL, 7, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "record 7: grant_id"));
    CU_ASSERT_TRUE(cs_grant_names_credential(&g, "gitlab/ci"));
    CU_ASSERT_FALSE(cs_grant_names_credential(&g, ""));
    CU_ASSERT_FALSE(cs_grant_names_credential(&none, "github/ci"));
}

static void test_fields(void)
{
    char *one[] = {"github/ci"};
    Airlock__V1__Grant g = grant(one, 1, INTAKE);
    Airlock__V1__EdgeUseRecord e;
    char msg[160], longp[1100];

    e = rec("github/ci", 1);
    e.decision = 7;
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &g, 0, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "decision"));
    e = rec("github/ci", 1);
    e.status = 99;
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &g, 0, msg, sizeof(msg)), AL_ERR_INVAL);
    e = rec("github/ci", 1);
    e.status = 0; /* blocked: no upstream status */
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &g, 0, msg, sizeof(msg)), 0);
    e.request_bytes = -1;
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &g, 0, msg, sizeof(msg)), AL_ERR_INVAL);
    e = rec("github/ci", 1);
    e.duration_us = 1500; /* 1.5 ms */
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &g, 0, msg, sizeof(msg)), 0);
    e.duration_us = -1;
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &g, 0, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "duration_us"));
    e.duration_us = 32LL * 86400 * 1000000;
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &g, 0, msg, sizeof(msg)), AL_ERR_INVAL);
    e = rec("github/ci", -1);
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &g, 0, msg, sizeof(msg)), AL_ERR_INVAL);
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[1025] = 0;
    e = rec("github/ci", 1);
    e.path = longp;
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &g, 0, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "path is longer than 1024"));
    longp[1024] = 0;
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &g, 0, msg, sizeof(msg)), 0);
    e = rec("github/ci", 1);
    e.method = "VERYLONGMETHODNAMEVERYLONGMETHODX";
    CU_ASSERT_EQUAL(cs_edgerec_check(&e, &g, 0, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "method"));
}

static void test_values(void)
{
    char *creds[] = {"github/ci", "*", "gitlab/ci"};
    Airlock__V1__Grant g = grant(creds, 3, INTAKE);
    Airlock__V1__EdgeUseRecord e;
    struct cs_rec_value v[8];
    struct cs_rec_text t[CS_REC_TEXTS];

    e = rec("github/ci", 4);
    CU_ASSERT_EQUAL_FATAL(cs_edgerec_values(&e, &g, v, 8), 2);
    CU_ASSERT_STRING_EQUAL(v[0].name, "github/ci");
    CU_ASSERT_EQUAL(v[0].version, 0);
    CU_ASSERT_EQUAL(v[1].version, 4);
    e = rec("github/ci", 0);
    CU_ASSERT_EQUAL(cs_edgerec_values(&e, &g, v, 8), 1);
    /* no credential: every credential the grant names ("*" is no name) */
    e = rec("", 0);
    CU_ASSERT_EQUAL_FATAL(cs_edgerec_values(&e, &g, v, 8), 2);
    CU_ASSERT_STRING_EQUAL(v[0].name, "github/ci");
    CU_ASSERT_STRING_EQUAL(v[1].name, "gitlab/ci");
    CU_ASSERT_EQUAL(cs_edgerec_values(&e, &g, v, 1), 1); /* capped */
    CU_ASSERT_EQUAL(cs_edgerec_values(&e, NULL, v, 8), 0);
    CU_ASSERT_EQUAL(cs_edgerec_texts(&e, t), CS_REC_TEXTS);
    CU_ASSERT_STRING_EQUAL(t[0].field, "path");
    CU_ASSERT_STRING_EQUAL(t[4].field, "request_id");
}

int main(void)
{
    CU_pSuite s;
    unsigned failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("credstore_edgerec", NULL, NULL);
    CU_add_test(s, "records name a credential of their grant, or none", test_credentials);
    CU_add_test(s, "field caps, decision, status, counts", test_fields);
    CU_add_test(s, "values looked for in a record", test_values);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
