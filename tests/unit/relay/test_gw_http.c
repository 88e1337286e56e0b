/*
 * Unit tests for gw_http: splitting agent paths into route and rest, the
 * dot-segment and encoding tricks that could climb out of an upstream's base
 * path, target building, the header rules in both directions and the
 * JSON-RPC error bodies (parsed back with jansson).
 */
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <jansson.h>

#include "airlock/v1/common.pb-c.h"
#include "al_err.h"
#include "gw_http.h"

static int split(const char *p, struct gw_path *out)
{
    return gw_path_split(p, strlen(p), out);
}

static void test_split(void)
{
    struct gw_path x;

    CU_ASSERT_EQUAL_FATAL(split("/mcp/corp/crm", &x), 0);
    CU_ASSERT_EQUAL(x.tunnel_len, 4);
    CU_ASSERT_EQUAL(memcmp(x.tunnel, "corp", 4), 0);
    CU_ASSERT_EQUAL(x.server_len, 3);
    CU_ASSERT_EQUAL(memcmp(x.server, "crm", 3), 0);
    CU_ASSERT_EQUAL(x.rest_len, 0);
    CU_ASSERT_EQUAL_FATAL(split("/mcp/corp/crm/sub/x?a=1&b=/../", &x), 0);
    CU_ASSERT_EQUAL(x.rest_len, strlen("/sub/x?a=1&b=/../"));
    CU_ASSERT_EQUAL(memcmp(x.rest, "/sub/x?a=1&b=/../", x.rest_len), 0);
    CU_ASSERT_EQUAL_FATAL(split("/mcp/corp/crm?session=1", &x), 0);
    CU_ASSERT_EQUAL(x.rest[0], '?');
    CU_ASSERT_EQUAL(split("/mcp/corp", &x), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(split("/mcp/corp/", &x), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(split("/mcp//crm", &x), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(split("/mcp/co%72p/crm", &x), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(split("/other/corp/crm", &x), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(split("/mcpx/corp/crm", &x), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(split("", &x), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(split("/mcp/corp/crm/../admin", &x), AL_ERR_INVAL);
}

static void test_rest_safety(void)
{
    static const char *const bad[] = {
        "/..",   "/../x",   "/a/../../b", "/.",      "/./x",         "/%2e%2e/x", "/%2E./x",
        "/.%2e", "/a/%2e",  "/a%2fb",     "/a%2F..", "/a%5cb",       "/a\\b",     "/a b",
        "/a\tb", "/a#frag", "x",          "/a\x7f",  "/caf\xc3\xa9", "?q=\x01",
    };
    static const char *const good[] = {
        "",           "/",      "/a/b",  "?a=1", "/x?y=../z", "/...", "/a..b", "/.well-known",
        "/%2e%2e%2e", "/a%20b", "/a/b/", "?",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (gw_rest_safe(bad[i], strlen(bad[i])))
            fprintf(stderr, "\n  accepted: \"%s\"\n", bad[i]);
        CU_ASSERT_FALSE(gw_rest_safe(bad[i], strlen(bad[i])));
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (!gw_rest_safe(good[i], strlen(good[i])))
            fprintf(stderr, "\n  refused: \"%s\"\n", good[i]);
        CU_ASSERT(gw_rest_safe(good[i], strlen(good[i])));
    }
}

static void expect_target(const char *base, const char *rest, const char *want)
{
    char out[64];
    int n = gw_target(base, rest, strlen(rest), out, sizeof(out));

    CU_ASSERT_EQUAL(n, (int)strlen(want));
    CU_ASSERT_STRING_EQUAL(out, want);
}

static void test_target(void)
{
    char small[8];

    expect_target("/mcp", "", "/mcp");
    expect_target("/mcp", "/x", "/mcp/x");
    expect_target("/mcp", "?a=1", "/mcp?a=1");
    expect_target("/", "", "/");
    expect_target("/", "/x", "/x");
    expect_target("/", "?a", "/?a");
    expect_target("", "", "/");
    expect_target("", "?a", "/?a");
    expect_target("/api/v1", "/mcp?x", "/api/v1/mcp?x");
    CU_ASSERT_EQUAL(gw_target("/mcp", "/longer", 7, small, sizeof(small)), AL_ERR_TOOBIG);
}

static int dropped_req(const char *n)
{
    return gw_req_header_dropped(n, strlen(n));
}

static int dropped_resp(const char *n)
{
    return gw_resp_header_dropped(n, strlen(n));
}

static void test_headers(void)
{
    static const char *const req_drop[] = {
        ":path",
        "connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",
        "proxy-authorization",
        "cookie",
        "accept-encoding",
        "expect",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-real-ip",
        "via",
        "airlock-grant",
        "airlock-principal",
        "airlock-request-id",
        "airlock-anything",
        "trailer",
    };
    static const char *const req_keep[] = {"content-type",         "accept",     "mcp-session-id",
                                           "mcp-protocol-version", "mcp-method", "mcp-name",
                                           "last-event-id",        "user-agent", "x-custom"};
    static const char *const resp_drop[] = {
        "connection", "keep-alive", "transfer-encoding", "content-length", "airlock-error",
        "airlock-x",  "upgrade",    "alt-svc",           "trailer",        "te"};
    static const char *const resp_keep[] = {"content-type", "mcp-session-id", "cache-control",
                                            "set-cookie", "x-request-id"};

    for (size_t i = 0; i < sizeof(req_drop) / sizeof(req_drop[0]); i++)
        CU_ASSERT(dropped_req(req_drop[i]));
    for (size_t i = 0; i < sizeof(req_keep) / sizeof(req_keep[0]); i++)
        CU_ASSERT_FALSE(dropped_req(req_keep[i]));
    for (size_t i = 0; i < sizeof(resp_drop) / sizeof(resp_drop[0]); i++)
        CU_ASSERT(dropped_resp(resp_drop[i]));
    for (size_t i = 0; i < sizeof(resp_keep) / sizeof(resp_keep[0]); i++)
        CU_ASSERT_FALSE(dropped_resp(resp_keep[i]));
    /* headers the gateway reads one instance of: a repeat is refused */
    {
        static const char *const single[] = {
            "mcp-session-id",    "mcp-method",        "mcp-name",      "mcp-protocol-version",
            "content-type",      "content-length",    "last-event-id", "airlock-grant",
            "airlock-principal", "airlock-request-id"};
        static const char *const multi[] = {"accept",    "user-agent", "x-custom",
                                            "mcp-names", "cookie",     "mcp-nam"};
        for (size_t i = 0; i < sizeof(single) / sizeof(single[0]); i++)
            CU_ASSERT(gw_req_header_single(single[i], strlen(single[i])));
        for (size_t i = 0; i < sizeof(multi) / sizeof(multi[0]); i++)
            CU_ASSERT_FALSE(gw_req_header_single(multi[i], strlen(multi[i])));
    }
    CU_ASSERT(gw_field_name_valid("x-api-key", 9));
    CU_ASSERT_FALSE(gw_field_name_valid("X-Api-Key", 9));
    CU_ASSERT_FALSE(gw_field_name_valid("a b", 3));
    CU_ASSERT_FALSE(gw_field_name_valid("a:b", 3));
    CU_ASSERT_FALSE(gw_field_name_valid("", 0));
    CU_ASSERT(gw_request_id_valid("Abc_1.2-3", 9));
    CU_ASSERT_FALSE(gw_request_id_valid("a/b", 3));
}

static void test_reason_names(void)
{
    CU_ASSERT_STRING_EQUAL(gw_reason_name(AIRLOCK__V1__ERROR_REASON__ERROR_REASON_POLICY_DENIED),
                           "POLICY_DENIED");
    CU_ASSERT_STRING_EQUAL(
        gw_reason_name(AIRLOCK__V1__ERROR_REASON__ERROR_REASON_CREDENTIAL_UNAVAILABLE),
        "CREDENTIAL_UNAVAILABLE");
    CU_ASSERT_STRING_EQUAL(
        gw_reason_name(AIRLOCK__V1__ERROR_REASON__ERROR_REASON_UPSTREAM_ADDRESS_DENIED),
        "UPSTREAM_ADDRESS_DENIED");
    CU_ASSERT_STRING_EQUAL(gw_reason_name(0), "INTERNAL");
    CU_ASSERT_STRING_EQUAL(gw_reason_name(9999), "INTERNAL");
}

static void test_error_body(void)
{
    struct gw_error e = {403, -32001, AIRLOCK__V1__ERROR_REASON__ERROR_REASON_POLICY_DENIED};
    struct rl_mcp_msg m;
    struct rl_buf b;
    json_error_t je;
    json_t *j;

    memset(&m, 0, sizeof(m));
    snprintf(m.id, sizeof(m.id), "\"req-7\"");
    rl_buf_init(&b, 0);
    CU_ASSERT_EQUAL_FATAL(gw_error_body(&m, &e, "tool \"x\" is not allowed", &b), 0);
    j = json_loadb((const char *)b.p, b.len, JSON_REJECT_DUPLICATES, &je);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "jsonrpc")), "2.0");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "id")), "req-7");
    json_t *err = json_object_get(j, "error");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(err, "code")), -32001);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(err, "message")),
                           "tool \"x\" is not allowed");
    CU_ASSERT_STRING_EQUAL(
        json_string_value(json_object_get(json_object_get(err, "data"), "airlock_error")),
        "POLICY_DENIED");
    json_decref(j);
    rl_buf_cleanup(&b);

    rl_buf_init(&b, 0);
    CU_ASSERT_EQUAL_FATAL(gw_error_body(NULL, &e, "x", &b), 0);
    j = json_loadb((const char *)b.p, b.len, JSON_REJECT_DUPLICATES, &je);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT(json_is_null(json_object_get(j, "id")));
    json_decref(j);
    rl_buf_cleanup(&b);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("gateway http helpers", NULL, NULL);
    CU_add_test(s, "path split", test_split);
    CU_add_test(s, "rest safety: dot segments, encodings, bytes", test_rest_safety);
    CU_add_test(s, "upstream target", test_target);
    CU_add_test(s, "header rules", test_headers);
    CU_add_test(s, "reason names", test_reason_names);
    CU_add_test(s, "JSON-RPC error bodies", test_error_body);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
