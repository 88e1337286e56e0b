/* Unit tests for the pure parts of the relay's agent side: the route in a
 * request target (relay_agent_util.h), which request and response headers
 * cross the relay (tunnel.proto), the Origin allow-list and its config
 * check, request ids, relay-made JSON-RPC errors, and the MCP session table
 * (relay_session.h: owner, pinning, route separation, DELETE, LRU eviction,
 * idle expiry). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <jansson.h>

#include "al_err.h"
#include "relay_agent_util.h"
#include "relay_session.h"
#include "rlbuf.h"

static int route(const char *t, struct rl_route *r)
{
    return rl_route_parse(t, strlen(t), r);
}

static void test_route(void)
{
    struct rl_route r;
    static const char *const notfound[] = {"/",
                                           "/mcp",
                                           "/mcp/",
                                           "/mcp/corp",
                                           "/mcp/corp/",
                                           "/mcp//crm",
                                           "/mcp/corp//x",
                                           "/MCP/corp/crm",
                                           "/healthz",
                                           "/readyz",
                                           "/metrics",
                                           "mcp/corp/crm",
                                           "/mcp/co rp/crm",
                                           "/mcp/corp/c%72m",
                                           "/mcp/../crm",
                                           "/mcp/./crm",
                                           "/mcp/corp/..",
                                           "/mcp/corp/.",
                                           "/mcp/corp/cr\xc3\xa9",
                                           "/mcp/corp/crm\x01",
                                           "/mcp/corp?x/crm",
                                           "/mcp/corp/cr:m",
                                           "/mcpx/corp/crm",
                                           "/mcp/corp/crm#frag",
                                           "",
                                           NULL};
    static const char *const invalid[] = {
        "/mcp/corp/crm/../x",     "/mcp/corp/crm/..",   "/mcp/corp/crm/./x",
        "/mcp/corp/crm/%2e%2E/x", "/mcp/corp/crm/.%2e", "/mcp/corp/crm/a%2fb",
        "/mcp/corp/crm/a%2Fb",    "/mcp/corp/crm/a\\b", "/mcp/corp/crm/a%5cb",
        "/mcp/corp/crm/x#y",      "/mcp/corp/crm?a#b",  NULL};

    CU_ASSERT_EQUAL(route("/mcp/corp/crm", &r), 0);
    CU_ASSERT_STRING_EQUAL(r.tunnel, "corp");
    CU_ASSERT_STRING_EQUAL(r.server, "crm");
    CU_ASSERT_STRING_EQUAL(r.route, "corp/crm");
    CU_ASSERT_EQUAL(route("/mcp/corp/crm/", &r), 0);
    CU_ASSERT_EQUAL(route("/mcp/corp/crm?session=1&x=/../y", &r), 0); /* query is opaque */
    CU_ASSERT_STRING_EQUAL(r.server, "crm");
    CU_ASSERT_EQUAL(route("/mcp/c-1.x_y/S.2-z/sub/path/.../x?q", &r), 0);
    CU_ASSERT_STRING_EQUAL(r.tunnel, "c-1.x_y");
    CU_ASSERT_STRING_EQUAL(r.server, "S.2-z");
    /* 64-character names are the limit */
    char t[200], n64[65];
    memset(n64, 'a', 64);
    n64[64] = '\0';
    snprintf(t, sizeof(t), "/mcp/%s/%s", n64, n64);
    CU_ASSERT_EQUAL(route(t, &r), 0);
    CU_ASSERT_EQUAL(strlen(r.route), 129);
    snprintf(t, sizeof(t), "/mcp/%sb/crm", n64);
    CU_ASSERT_EQUAL(route(t, &r), AL_ERR_NOTFOUND);
    snprintf(t, sizeof(t), "/mcp/corp/%sb", n64);
    CU_ASSERT_EQUAL(route(t, &r), AL_ERR_NOTFOUND);
    for (int i = 0; notfound[i]; i++) {
        int rc = route(notfound[i], &r);
        CU_ASSERT_EQUAL(rc, AL_ERR_NOTFOUND);
        if (rc != AL_ERR_NOTFOUND)
            fprintf(stderr, "route %s: %d\n", notfound[i], rc);
    }
    for (int i = 0; invalid[i]; i++) {
        int rc = route(invalid[i], &r);
        CU_ASSERT_EQUAL(rc, AL_ERR_INVAL);
        if (rc != AL_ERR_INVAL)
            fprintf(stderr, "route %s: %d\n", invalid[i], rc);
    }
    CU_ASSERT_TRUE(rl_name_valid("corp", 4));
    CU_ASSERT_FALSE(rl_name_valid(".", 1));
    CU_ASSERT_FALSE(rl_name_valid("..", 2));
    CU_ASSERT_TRUE(rl_name_valid("...", 3));
    CU_ASSERT_FALSE(rl_name_valid("", 0));
    CU_ASSERT_FALSE(rl_name_valid("a/b", 3));
}

static int req_drop(const char *n)
{
    return rl_req_header_dropped(n, strlen(n));
}

static int resp_drop(const char *n)
{
    return rl_resp_header_dropped(n, strlen(n));
}

static void test_headers(void)
{
    static const char *const dropped[] = {"authorization",
                                          "proxy-authorization",
                                          "proxy-connection",
                                          "proxy-foo",
                                          "airlock-grant",
                                          "airlock-principal",
                                          "airlock-request-id",
                                          "airlock-error",
                                          "airlock-anything",
                                          "forwarded",
                                          "x-forwarded-for",
                                          "x-forwarded-host",
                                          "x-forwarded-proto",
                                          "x-real-ip",
                                          "via",
                                          "connection",
                                          "keep-alive",
                                          "te",
                                          "transfer-encoding",
                                          "upgrade",
                                          "http2-settings",
                                          "host",
                                          "expect",
                                          NULL};
    static const char *const kept[] = {"content-type",
                                       "accept",
                                       "mcp-session-id",
                                       "mcp-protocol-version",
                                       "mcp-method",
                                       "mcp-name",
                                       "last-event-id",
                                       "content-length",
                                       "user-agent",
                                       "cookie",
                                       "x-forwarded",
                                       "airlock",
                                       "authorization2",
                                       "x-real-ip2",
                                       "tea",
                                       NULL};
    for (int i = 0; dropped[i]; i++) {
        CU_ASSERT_TRUE(req_drop(dropped[i]));
        if (!req_drop(dropped[i]))
            fprintf(stderr, "kept %s\n", dropped[i]);
    }
    for (int i = 0; kept[i]; i++) {
        CU_ASSERT_FALSE(req_drop(kept[i]));
        if (req_drop(kept[i]))
            fprintf(stderr, "dropped %s\n", kept[i]);
    }
    /* Connection names more hop-by-hop headers */
    const char *conn = "keep-alive, X-Custom ,\tother";
    CU_ASSERT_TRUE(rl_hdr_token_listed(conn, strlen(conn), "x-custom", 8));
    CU_ASSERT_TRUE(rl_hdr_token_listed(conn, strlen(conn), "other", 5));
    CU_ASSERT_TRUE(rl_hdr_token_listed(conn, strlen(conn), "keep-alive", 10));
    CU_ASSERT_FALSE(rl_hdr_token_listed(conn, strlen(conn), "x-cust", 6));
    CU_ASSERT_FALSE(rl_hdr_token_listed(conn, strlen(conn), "", 0));
    CU_ASSERT_FALSE(rl_hdr_token_listed("", 0, "a", 1));

    /* responses: airlock-error is the only airlock-* header an agent sees */
    CU_ASSERT_FALSE(resp_drop("airlock-error"));
    CU_ASSERT_TRUE(resp_drop("airlock-grant"));
    CU_ASSERT_TRUE(resp_drop("airlock-request-id"));
    CU_ASSERT_TRUE(resp_drop("airlock-errors"));
    CU_ASSERT_TRUE(resp_drop(":status"));
    CU_ASSERT_TRUE(resp_drop("connection"));
    CU_ASSERT_TRUE(resp_drop("transfer-encoding"));
    CU_ASSERT_TRUE(resp_drop("keep-alive"));
    CU_ASSERT_TRUE(resp_drop("trailer"));
    CU_ASSERT_TRUE(resp_drop("alt-svc"));
    CU_ASSERT_TRUE(resp_drop("x-request-id"));
    CU_ASSERT_TRUE(resp_drop("access-control-allow-origin"));
    CU_ASSERT_TRUE(resp_drop(""));
    CU_ASSERT_FALSE(resp_drop("content-type"));
    CU_ASSERT_FALSE(resp_drop("mcp-session-id"));
    CU_ASSERT_FALSE(resp_drop("cache-control"));
    CU_ASSERT_FALSE(resp_drop("www-authenticate"));
    CU_ASSERT_FALSE(resp_drop("content-length"));
}

static void test_origin(void)
{
    const char *allowed[] = {"https://app.example.com", "http://localhost:6274", NULL};
    const char *why;

    CU_ASSERT_TRUE(rl_origin_allowed(allowed, "https://app.example.com", 23));
    CU_ASSERT_TRUE(rl_origin_allowed(allowed, "HTTPS://App.Example.com", 23));
    CU_ASSERT_TRUE(rl_origin_allowed(allowed, "http://localhost:6274", 21));
    CU_ASSERT_FALSE(rl_origin_allowed(allowed, "https://app.example.com.evil.net", 32));
    CU_ASSERT_FALSE(rl_origin_allowed(allowed, "https://app.example.co", 22));
    CU_ASSERT_FALSE(rl_origin_allowed(allowed, "http://app.example.com", 22));
    CU_ASSERT_FALSE(rl_origin_allowed(allowed, "null", 4));
    CU_ASSERT_FALSE(rl_origin_allowed(allowed, "", 0));
    CU_ASSERT_FALSE(rl_origin_allowed(NULL, "https://app.example.com", 23));

    CU_ASSERT_EQUAL(rl_origin_valid("https://app.example.com", &why), 0);
    CU_ASSERT_EQUAL(rl_origin_valid("http://localhost:6274", &why), 0);
    CU_ASSERT_EQUAL(rl_origin_valid("https://[::1]:8443", &why), 0);
    static const char *const bad[] = {"",
                                      "app.example.com",
                                      "ftp://x",
                                      "https://",
                                      "https://x/",
                                      "https://x/path",
                                      "https://x:0",
                                      "https://x:65536",
                                      "https://x:80a",
                                      "https://x?q",
                                      "https://a b",
                                      "*",
                                      "null",
                                      "https://[]",
                                      "https://x:",
                                      NULL};
    for (int i = 0; bad[i]; i++) {
        why = NULL;
        CU_ASSERT_EQUAL(rl_origin_valid(bad[i], &why), AL_ERR_INVAL);
        CU_ASSERT_PTR_NOT_NULL(why);
    }
}

static void test_ids_and_numbers(void)
{
    char a[RL_REQUEST_ID_LEN + 1], b[RL_REQUEST_ID_LEN + 1];
    int64_t v;

    CU_ASSERT_EQUAL_FATAL(rl_request_id(a), 0);
    CU_ASSERT_EQUAL_FATAL(rl_request_id(b), 0);
    CU_ASSERT_EQUAL(strlen(a), RL_REQUEST_ID_LEN);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    CU_ASSERT_EQUAL(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                    RL_REQUEST_ID_LEN);
    CU_ASSERT_STRING_EQUAL(rl_status_class(200), "2xx");
    CU_ASSERT_STRING_EQUAL(rl_status_class(101), "1xx");
    CU_ASSERT_STRING_EQUAL(rl_status_class(404), "4xx");
    CU_ASSERT_STRING_EQUAL(rl_status_class(599), "5xx");
    CU_ASSERT_STRING_EQUAL(rl_status_class(600), "other");
    CU_ASSERT_STRING_EQUAL(rl_status_class(0), "other");
    CU_ASSERT_EQUAL(rl_parse_content_length("0", 1, &v), 0);
    CU_ASSERT_EQUAL(v, 0);
    CU_ASSERT_EQUAL(rl_parse_content_length("4194305", 7, &v), 0);
    CU_ASSERT_EQUAL(v, 4194305);
    CU_ASSERT_NOT_EQUAL(rl_parse_content_length("", 0, &v), 0);
    CU_ASSERT_NOT_EQUAL(rl_parse_content_length("-1", 2, &v), 0);
    CU_ASSERT_NOT_EQUAL(rl_parse_content_length("1 ", 2, &v), 0);
    CU_ASSERT_NOT_EQUAL(rl_parse_content_length("1234567890123456789", 19, &v), 0);
}

static void test_error_body(void)
{
    struct rl_buf b;
    json_error_t je;
    json_t *j, *e;

    rl_buf_init(&b, 0);
    CU_ASSERT_EQUAL_FATAL(rl_error_body(-32001, "key \"x\"\nnot valid", "UNAUTHENTICATED", &b), 0);
    j = json_loadb((const char *)b.p, b.len, JSON_REJECT_DUPLICATES, &je);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "jsonrpc")), "2.0");
    CU_ASSERT_TRUE(json_is_null(json_object_get(j, "id")));
    e = json_object_get(j, "error");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(e, "code")), -32001);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e, "message")),
                           "key \"x\"\nnot valid");
    CU_ASSERT_STRING_EQUAL(
        json_string_value(json_object_get(json_object_get(e, "data"), "airlock_error")),
        "UNAUTHENTICATED");
    json_decref(j);
    /* appended after what the buffer already holds; bad reasons refused */
    size_t before = b.len;
    CU_ASSERT_EQUAL(rl_error_body(-32003, "no gateway", "NO_GATEWAY", &b), 0);
    j = json_loadb((const char *)b.p + before, b.len - before, JSON_REJECT_DUPLICATES, &je);
    CU_ASSERT_PTR_NOT_NULL(j);
    json_decref(j);
    before = b.len;
    CU_ASSERT_EQUAL(rl_error_body(-32003, "x", "no_gateway", &b), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_error_body(-32003, "x", "A\"B", &b), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_error_body(-32003, "x", "", &b), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(b.len, before);
    rl_buf_cleanup(&b);
}

#define T0 1700000000000LL

static void test_sessions(void)
{
    struct rl_sessions *s = NULL;
    struct rl_session_info si;

    CU_ASSERT_EQUAL_FATAL(rl_sessions_new(3, 1000, &s), 0);
    CU_ASSERT_EQUAL(rl_sessions_put(s, "corp/crm", "sess-A", 6, "alice", 7, T0), 0);
    CU_ASSERT_EQUAL(rl_sessions_get(s, "corp/crm", "sess-A", 6, T0 + 1, &si), 1);
    CU_ASSERT_STRING_EQUAL(si.principal, "alice");
    CU_ASSERT_EQUAL(si.conn, 7);
    /* the same id on another route is another session */
    CU_ASSERT_EQUAL(rl_sessions_get(s, "corp/wiki", "sess-A", 6, T0 + 1, &si), 0);
    CU_ASSERT_EQUAL(rl_sessions_get(s, "corp/crm", "sess-a", 6, T0 + 1, &si), 0);
    CU_ASSERT_EQUAL(rl_sessions_get(s, "corp/crm", "sess-", 5, T0 + 1, &si), 0);
    /* replace: new owner data, count unchanged */
    CU_ASSERT_EQUAL(rl_sessions_put(s, "corp/crm", "sess-A", 6, "alice", 9, T0 + 2), 0);
    CU_ASSERT_EQUAL(rl_sessions_count(s), 1);
    CU_ASSERT_EQUAL(rl_sessions_get(s, "corp/crm", "sess-A", 6, T0 + 3, &si), 1);
    CU_ASSERT_EQUAL(si.conn, 9);
    /* LRU: B, C fill the table; touching A makes B the oldest; D evicts B */
    CU_ASSERT_EQUAL(rl_sessions_put(s, "corp/crm", "sess-B", 6, "bob", 1, T0 + 4), 0);
    CU_ASSERT_EQUAL(rl_sessions_put(s, "corp/crm", "sess-C", 6, "carol", 1, T0 + 5), 0);
    CU_ASSERT_EQUAL(rl_sessions_get(s, "corp/crm", "sess-A", 6, T0 + 6, &si), 1);
    CU_ASSERT_EQUAL(rl_sessions_put(s, "corp/crm", "sess-D", 6, "dave", 1, T0 + 7), 0);
    CU_ASSERT_EQUAL(rl_sessions_count(s), 3);
    CU_ASSERT_EQUAL(rl_sessions_get(s, "corp/crm", "sess-B", 6, T0 + 8, &si), 0);
    CU_ASSERT_EQUAL(rl_sessions_get(s, "corp/crm", "sess-C", 6, T0 + 8, &si), 1);
    CU_ASSERT_EQUAL(rl_sessions_get(s, "corp/crm", "sess-A", 6, T0 + 8, &si), 1);
    CU_ASSERT_EQUAL(rl_sessions_get(s, "corp/crm", "sess-D", 6, T0 + 8, &si), 1);
    /* delete */
    CU_ASSERT_EQUAL(rl_sessions_del(s, "corp/crm", "sess-C", 6), 0);
    CU_ASSERT_EQUAL(rl_sessions_del(s, "corp/crm", "sess-C", 6), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(rl_sessions_count(s), 2);
    /* idle expiry: A and D were used at T0+8; 1000 ms later they are gone */
    CU_ASSERT_EQUAL(rl_sessions_get(s, "corp/crm", "sess-A", 6, T0 + 1007, &si), 1);
    CU_ASSERT_EQUAL(rl_sessions_get(s, "corp/crm", "sess-D", 6, T0 + 1008, &si), 0);
    CU_ASSERT_EQUAL(rl_sessions_count(s), 1);
    rl_sessions_expire(s, T0 + 2007);
    CU_ASSERT_EQUAL(rl_sessions_count(s), 0);
    /* ids the table cannot hold */
    char big[RL_SESSION_ID_MAX + 2];
    memset(big, 'x', sizeof(big));
    CU_ASSERT_EQUAL(rl_sessions_put(s, "corp/crm", big, RL_SESSION_ID_MAX + 1, "a", 1, T0),
                    AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_sessions_put(s, "corp/crm", big, RL_SESSION_ID_MAX, "a", 1, T0), 0);
    CU_ASSERT_EQUAL(rl_sessions_put(s, "corp/crm", "a b", 3, "a", 1, T0), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_sessions_put(s, "corp/crm", "a\x7f", 2, "a", 1, T0), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_sessions_put(s, "corp/crm", "", 0, "a", 1, T0), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_sessions_put(s, "", "abc", 3, "a", 1, T0), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_sessions_put(s, "corp/crm", "abc", 3, "", 1, T0), AL_ERR_INVAL);
    CU_ASSERT_FALSE(rl_session_id_valid("a\tb", 3));
    CU_ASSERT_TRUE(rl_session_id_valid("0f3c-AB_x.y~!", 13));
    rl_sessions_free(s);
}

/* Many entries through a small bucket array: every one found, eviction in
 * order, nothing leaks (ASan). */
static void test_sessions_many(void)
{
    struct rl_sessions *s = NULL;
    struct rl_session_info si;
    char id[32];
    int found = 0;

    CU_ASSERT_EQUAL_FATAL(rl_sessions_new(1000, 0, &s), 0);
    for (int i = 0; i < 3000; i++) {
        int n = snprintf(id, sizeof(id), "s%d", i);
        CU_ASSERT_EQUAL(rl_sessions_put(s, "t/s", id, (size_t)n, "p", (uint64_t)i, T0 + i), 0);
    }
    CU_ASSERT_EQUAL(rl_sessions_count(s), 1000);
    for (int i = 0; i < 3000; i++) {
        int n = snprintf(id, sizeof(id), "s%d", i);
        if (rl_sessions_get(s, "t/s", id, (size_t)n, T0 + 3000, &si)) {
            found++;
            CU_ASSERT_EQUAL(si.conn, (uint64_t)i);
            CU_ASSERT_TRUE(i >= 2000);
        }
    }
    CU_ASSERT_EQUAL(found, 1000);
    rl_sessions_free(s);
}

int main(void)
{
    CU_pSuite s;
    unsigned failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("relay_agent", NULL, NULL);
    CU_add_test(s, "route parsing: /mcp/<tunnel>/<server>[rest][?q]", test_route);
    CU_add_test(s, "request and response header rules", test_headers);
    CU_add_test(s, "Origin allow-list and config check", test_origin);
    CU_add_test(s, "request ids, status classes, Content-Length", test_ids_and_numbers);
    CU_add_test(s, "relay-made JSON-RPC error bodies", test_error_body);
    CU_add_test(s, "session table: owner, route, LRU, delete, expiry", test_sessions);
    CU_add_test(s, "session table: many entries", test_sessions_many);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
