/*
 * Unit tests for relay mcp: request parsing (shapes, batches, duplicate
 * keys at any depth, nesting, UTF-8 names, the id kept for error replies),
 * the Mcp-Method / Mcp-Name header rules with Base64 values, the
 * allow-list question and its error text, JSON-RPC error bodies, and the
 * response filter in JSON body and SSE modes: every split of the input,
 * CRLF/CR/LF, multi-line data, comments, events without data, lists with
 * all/none/some items allowed, untouched bytes for everything else, and
 * the size cap. Error texts are checked never to quote body content.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <jansson.h>

#include "al_err.h"
#include "mcp.h"
#include "rlbuf.h"

/* ---- helpers ---- */

/* Allows every name that does not contain "deny"; counts the questions. */
static int asked;
static int allow_cb(void *user, enum rl_mcp_kind kind, const char *name)
{
    (void)user;
    (void)kind;
    asked++;
    return strstr(name, "deny") == NULL;
}

static int allow_all(void *user, enum rl_mcp_kind kind, const char *name)
{
    (void)user;
    (void)kind;
    (void)name;
    return 1;
}

static int allow_none(void *user, enum rl_mcp_kind kind, const char *name)
{
    (void)user;
    (void)kind;
    (void)name;
    return 0;
}

static int allow_err(void *user, enum rl_mcp_kind kind, const char *name)
{
    (void)user;
    (void)kind;
    (void)name;
    return -1;
}

static int parse(const char *s, struct rl_mcp_msg *m, char *err, size_t errn)
{
    return rl_mcp_parse((const uint8_t *)s, strlen(s), m, err, errn);
}

static void expect_ok(const char *s, struct rl_mcp_msg *m)
{
    char err[256] = "";
    int rc = parse(s, m, err, sizeof err);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc != 0)
        fprintf(stderr, "\n  should parse (%s): %s\n", err, s);
}

/* Rejected with AL_ERR_INVAL, and the reason quotes nothing of the body
 * (every test body that is rejected carries the marker CANARY). */
static void expect_bad_len(const char *s, size_t n, const char *why_part)
{
    struct rl_mcp_msg m;
    char err[256] = "";
    int rc = rl_mcp_parse((const uint8_t *)s, n, &m, err, sizeof err);
    CU_ASSERT_EQUAL(rc, AL_ERR_INVAL);
    CU_ASSERT(err[0] != '\0');
    CU_ASSERT_PTR_NULL(strstr(err, "CANARY"));
    CU_ASSERT_EQUAL(m.method[0], '\0');
    CU_ASSERT_EQUAL(m.name[0], '\0');
    CU_ASSERT_EQUAL(m.target, RL_MCP_NONE);
    if (rc != AL_ERR_INVAL)
        fprintf(stderr, "\n  should be rejected: %.*s\n", (int)n, s);
    if (why_part && !strstr(err, why_part)) {
        fprintf(stderr, "\n  reason \"%s\" lacks \"%s\" for %.*s\n", err, why_part, (int)n, s);
        CU_FAIL("reason");
    }
}

static void expect_bad(const char *s, const char *why_part)
{
    expect_bad_len(s, strlen(s), why_part);
}

/* Runs a filter over in, cut at the given offsets (sorted, may be empty). */
static char *run_cuts(int sse, rl_mcp_allow_cb allow, const char *in, size_t n, const size_t *cuts,
                      size_t ncuts, size_t max_msg, int *rc_out, size_t *outlen,
                      unsigned long *removed)
{
    struct rl_mcp_filter *f;
    struct rl_buf out;
    size_t at = 0;
    int rc;
    char *res;

    rl_buf_init(&out, 0);
    CU_ASSERT_EQUAL_FATAL(rl_mcp_filter_new(sse, allow, NULL, max_msg, &f), 0);
    rc = 0;
    for (size_t k = 0; k <= ncuts && rc == 0; k++) {
        size_t end = k < ncuts ? cuts[k] : n;
        rc = rl_mcp_filter_feed(f, (const uint8_t *)in + at, end - at, &out);
        at = end;
    }
    if (rc == 0)
        rc = rl_mcp_filter_finish(f, &out);
    if (removed)
        *removed = rl_mcp_filter_removed(f);
    rl_mcp_filter_free(f);
    *rc_out = rc;
    *outlen = out.len;
    res = malloc(out.len + 1);
    if (out.len)
        memcpy(res, out.p, out.len);
    res[out.len] = '\0';
    rl_buf_cleanup(&out);
    return res;
}

/* in through the filter, whole and split at every byte (and every pair of
 * bytes for short inputs, and byte by byte), must give exactly want. */
static void expect_filter(int sse, rl_mcp_allow_cb allow, const char *in, const char *want)
{
    size_t n = strlen(in), wl = strlen(want), ol;
    int rc;
    char *o = run_cuts(sse, allow, in, n, NULL, 0, 0, &rc, &ol, NULL);

    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(ol == wl && memcmp(o, want, wl) == 0);
    if (!(ol == wl && memcmp(o, want, wl) == 0))
        fprintf(stderr, "\n  in:   %s\n  got:  %s\n  want: %s\n", in, o, want);
    free(o);
    for (size_t c = 0; c <= n; c++) {
        o = run_cuts(sse, allow, in, n, &c, 1, 0, &rc, &ol, NULL);
        CU_ASSERT(rc == 0 && ol == wl && memcmp(o, want, wl) == 0);
        if (!(rc == 0 && ol == wl && memcmp(o, want, wl) == 0))
            fprintf(stderr, "\n  split at %zu differs: %s\n", c, o);
        free(o);
    }
    if (n <= 200) {
        for (size_t a = 0; a <= n; a++) {
            for (size_t b = a; b <= n; b++) {
                size_t cuts[2] = {a, b};
                o = run_cuts(sse, allow, in, n, cuts, 2, 0, &rc, &ol, NULL);
                CU_ASSERT(rc == 0 && ol == wl && memcmp(o, want, wl) == 0);
                free(o);
            }
        }
    }
    {
        size_t *cuts = malloc((n + 1) * sizeof *cuts);
        for (size_t k = 0; k < n; k++)
            cuts[k] = k;
        o = run_cuts(sse, allow, in, n, cuts, n, 0, &rc, &ol, NULL);
        CU_ASSERT(rc == 0 && ol == wl && memcmp(o, want, wl) == 0);
        free(o);
        free(cuts);
    }
}

static void expect_same(int sse, rl_mcp_allow_cb allow, const char *in)
{
    expect_filter(sse, allow, in, in);
}

/* ---- requests ---- */

static void test_parse_requests(void)
{
    struct rl_mcp_msg m;

    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\","
              "\"params\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"x\"}}}",
              &m);
    CU_ASSERT_EQUAL(m.type, RL_MCP_REQUEST);
    CU_ASSERT_STRING_EQUAL(m.method, "tools/call");
    CU_ASSERT_EQUAL(m.target, RL_MCP_TOOL);
    CU_ASSERT_STRING_EQUAL(m.name, "get_weather");
    CU_ASSERT_STRING_EQUAL(m.id, "7");
    CU_ASSERT_EQUAL(m.is_list, 0);

    expect_ok(" \r\n\t{ \"params\" : { \"uri\" : \"file:///a/b.json\" } , \"method\":"
              "\"resources/read\", \"id\" : \"req-\\u0031\", \"jsonrpc\" : \"2.0\" } \n",
              &m);
    CU_ASSERT_EQUAL(m.target, RL_MCP_RESOURCE);
    CU_ASSERT_STRING_EQUAL(m.name, "file:///a/b.json");
    CU_ASSERT_STRING_EQUAL(m.id, "\"req-\\u0031\""); /* the id's own JSON text */

    expect_ok(
        "{\"jsonrpc\":\"2.0\",\"id\":-12,\"method\":\"prompts/get\",\"params\":{\"name\":\"p\"}}",
        &m);
    CU_ASSERT_EQUAL(m.target, RL_MCP_PROMPT);
    CU_ASSERT_STRING_EQUAL(m.id, "-12");

    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/"
              "subscribe\",\"params\":{\"uri\":\"u:1\"}}",
              &m);
    CU_ASSERT_EQUAL(m.target, RL_MCP_RESOURCE);
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/"
              "unsubscribe\",\"params\":{\"uri\":\"u:1\"}}",
              &m);
    CU_ASSERT_EQUAL(m.target, RL_MCP_RESOURCE);

    /* a big integer id is kept as written */
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":123456789012345678901234567890,\"method\":\"ping\"}",
              &m);
    CU_ASSERT_STRING_EQUAL(m.id, "123456789012345678901234567890");
    CU_ASSERT_EQUAL(m.target, RL_MCP_NONE);

    /* numbers beyond int64 in arguments are the server's business */
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"t\","
              "\"arguments\":{\"n\":99999999999999999999999,\"s\":\"a\\u0000b\"}}}",
              &m);
}

/* completion/complete names the prompt or resource template it completes
 * for: that item is what policy decides on. */
static void test_parse_completion(void)
{
    struct rl_mcp_msg m;

    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"completion/complete\",\"params\":"
              "{\"ref\":{\"type\":\"ref/prompt\",\"name\":\"code_review\"},"
              "\"argument\":{\"name\":\"language\",\"value\":\"py\"}}}",
              &m);
    CU_ASSERT_EQUAL(m.target, RL_MCP_PROMPT);
    CU_ASSERT_STRING_EQUAL(m.name, "code_review");
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"completion/complete\",\"params\":"
              "{\"ref\":{\"type\":\"ref/resource\",\"uri\":\"file:///{path}\"},"
              "\"argument\":{\"name\":\"path\",\"value\":\"a\"}}}",
              &m);
    CU_ASSERT_EQUAL(m.target, RL_MCP_RESOURCE);
    CU_ASSERT_STRING_EQUAL(m.name, "file:///{path}");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"completion/complete\",\"params\":"
               "{\"argument\":{\"name\":\"a\",\"value\":\"b\"}}}",
               "params.ref");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"completion/complete\",\"params\":"
               "{\"ref\":{\"type\":\"ref/tool\",\"name\":\"x\"}}}",
               "ref/prompt or ref/resource");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"completion/complete\",\"params\":"
               "{\"ref\":{\"type\":\"ref/prompt\",\"name\":7}}}",
               "params.ref.name");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"completion/complete\",\"params\":"
               "{\"ref\":{\"type\":\"ref/resource\",\"name\":\"x\"}}}",
               "params.ref.uri");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"completion/complete\",\"params\":"
               "{\"ref\":{\"type\":\"ref/prompt\",\"name\":\"\"}}}",
               "empty");
}

static void test_parse_lists_notifications_responses(void)
{
    static const char *const lists[] = {"tools/list", "prompts/list", "resources/list",
                                        "resources/templates/list"};
    struct rl_mcp_msg m;
    char buf[256];

    for (size_t i = 0; i < 4; i++) {
        snprintf(buf, sizeof buf, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"%s\",\"params\":{}}",
                 lists[i]);
        expect_ok(buf, &m);
        CU_ASSERT_EQUAL(m.is_list, 1);
        CU_ASSERT_EQUAL(m.target, RL_MCP_NONE);
    }
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/listx\"}", &m);
    CU_ASSERT_EQUAL(m.is_list, 0);

    expect_ok("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", &m);
    CU_ASSERT_EQUAL(m.type, RL_MCP_NOTIFICATION);
    CU_ASSERT_STRING_EQUAL(m.id, "");
    /* an item method without id still names its item (it is authorized) */
    expect_ok("{\"jsonrpc\":\"2.0\",\"method\":\"tools/call\",\"params\":{\"name\":\"deny-x\"}}",
              &m);
    CU_ASSERT_EQUAL(m.type, RL_MCP_NOTIFICATION);
    CU_ASSERT_EQUAL(m.target, RL_MCP_TOOL);
    CU_ASSERT_STRING_EQUAL(m.name, "deny-x");

    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":\"s1\",\"result\":{\"action\":\"accept\"}}", &m);
    CU_ASSERT_EQUAL(m.type, RL_MCP_RESPONSE);
    CU_ASSERT_STRING_EQUAL(m.method, "");
    CU_ASSERT_STRING_EQUAL(m.id, "\"s1\"");
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"x\"}}",
              &m);
    CU_ASSERT_EQUAL(m.type, RL_MCP_RESPONSE);
    CU_ASSERT_STRING_EQUAL(m.id, "");
    expect_ok("{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":\"x\",\"data\":[1]}}", &m);
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":-32000,\"message\":\"\"}}", &m);
    CU_ASSERT_STRING_EQUAL(m.id, "3");
}

static void test_parse_utf8_names(void)
{
    struct rl_mcp_msg m;

    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":"
              "\"\xe5\x90\x8d\xe5\x89\x8d-\xf0\x9f\x94\xa7\"}}",
              &m);
    CU_ASSERT_STRING_EQUAL(m.name, "\xe5\x90\x8d\xe5\x89\x8d-\xf0\x9f\x94\xa7");
    /* escapes decoded, surrogate pairs joined */
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":"
              "\"caf\\u00e9 \\ud83d\\udd27 \\\"q\\\"\"}}",
              &m);
    CU_ASSERT_STRING_EQUAL(m.name, "caf\xc3\xa9 \xf0\x9f\x94\xa7 \"q\"");
}

static void test_parse_bad_shapes(void)
{
    expect_bad("", "empty");
    expect_bad("CANARY", "not valid JSON");
    expect_bad("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"CANARY\"}]", "batch");
    expect_bad("[]", "batch");
    expect_bad("\"CANARY\"", NULL);
    expect_bad("{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"CANARY\"}", "jsonrpc");
    expect_bad("{\"jsonrpc\":2.0,\"id\":1,\"method\":\"CANARY\"}", "jsonrpc");
    expect_bad("{\"id\":1,\"method\":\"CANARY\"}", "jsonrpc");
    expect_bad("{\"jsonrpc\":\"2.0\\u0000\",\"id\":1,\"method\":\"CANARY\"}", "jsonrpc");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"CANARY\",\"extra\":1}",
               "unknown member");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"CANARY\",\"result\":{}}", "result");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":7}", "method");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\"}", "empty");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools call CANARY\"}", "printable");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\\u00e9CANARY\"}",
               "printable");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"CANARY\",\"params\":[1]}", "params");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"CANARY\",\"params\":null}", "params");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"CANARY\"}", "id");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"CANARY\"}", "id");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"CANARY\"}", "id");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1e3,\"method\":\"CANARY\"}", "id");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"CANARY\"}", "id");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"CANARY\"}", "id");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1}", "method, a result or an error");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{},\"error\":{\"code\":1,\"message\":"
               "\"CANARY\"}}",
               "both");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"CANARY\"}", "result");
    expect_bad("{\"jsonrpc\":\"2.0\",\"result\":{\"CANARY\":1}}", "id");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":null,\"result\":{\"CANARY\":1}}", "id");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1.5,\"message\":\"CANARY\"}}",
               "code");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":\"1\",\"message\":\"CANARY\"}}",
               "code");
    expect_bad(
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1,\"message\":7},\"x\":\"CANARY\"}",
        NULL);
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1,\"message\":7}}", "message");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":\"CANARY\"}", "error");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"params\":{},\"result\":{\"a\":\"CANARY\"}}",
               "params");
}

static void test_parse_bad_names(void)
{
    char big[RL_MCP_NAME_MAX + 200], meth[RL_MCP_METHOD_MAX + 100];
    struct rl_mcp_msg m;
    int n;

    expect_bad(
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"nam\":\"CANARY\"}}",
        "params.name");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\"}", "params.name");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"prompts/get\",\"params\":{\"name\":7}}",
               "string");
    expect_bad(
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":null}}",
        "string");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/"
               "call\",\"params\":{\"name\":[\"CANARY\"]}}",
               "string");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/"
               "read\",\"params\":{\"name\":\"CANARY\"}}",
               "params.uri");
    expect_bad(
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\"}}",
        "empty");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/"
               "call\",\"params\":{\"name\":\"CANARY\\u0000x\"}}",
               "NUL");

    /* the longest accepted name, and one byte more */
    n = snprintf(big, sizeof big,
                 "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"");
    memset(big + n, 'a', RL_MCP_NAME_MAX);
    strcpy(big + n + RL_MCP_NAME_MAX, "\"}}");
    expect_ok(big, &m);
    CU_ASSERT_EQUAL(strlen(m.name), RL_MCP_NAME_MAX);
    memmove(big + n + 1, big + n, strlen(big + n) + 1);
    memcpy(big + n, "CANARY", 6);
    expect_bad(big, "too long");

    n = snprintf(meth, sizeof meth, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"");
    memset(meth + n, 'm', RL_MCP_METHOD_MAX);
    strcpy(meth + n + RL_MCP_METHOD_MAX, "\"}");
    expect_ok(meth, &m);
    memmove(meth + n + 1, meth + n, strlen(meth + n) + 1);
    meth[n] = 'm';
    expect_bad(meth, "too long");

    /* an id longer than RL_MCP_ID_MAX is refused */
    {
        char idb[RL_MCP_ID_MAX + 100];
        n = snprintf(idb, sizeof idb, "{\"jsonrpc\":\"2.0\",\"method\":\"CANARY\",\"id\":\"");
        memset(idb + n, 'i', RL_MCP_ID_MAX);
        strcpy(idb + n + RL_MCP_ID_MAX, "\"}");
        expect_bad(idb, "id");
    }
}

static void test_parse_dup_keys(void)
{
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"method\":\"CANARY\"}", "duplicate");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":"
               "{\"name\":\"ok\",\"name\":\"CANARY\"}}",
               "duplicate");
    /* escapes do not hide a duplicate */
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":"
               "{\"name\":\"ok\",\"\\u006eame\":\"CANARY\"}}",
               "duplicate");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"t\","
               "\"arguments\":{\"a\":[{\"b\":{\"c\":1,\"c\":\"CANARY\"}}]}}}",
               "duplicate");
    expect_bad("{\"jsonrpc\":\"2.0\",\"method\":\"tools/call\",\"method\":\"CANARY\"}",
               "duplicate");
}

static void test_parse_nesting_and_garbage(void)
{
    char buf[512];
    struct rl_mcp_msg m;
    size_t n = 0;

    /* 64 levels in all (the message object + 63) pass, 65 do not */
    n = (size_t)snprintf(buf, sizeof buf,
                         "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":{\"a\":");
    for (int i = 0; i < 62; i++)
        buf[n++] = '[';
    for (int i = 0; i < 62; i++)
        buf[n++] = ']';
    memcpy(buf + n, "}}", 3);
    expect_ok(buf, &m);
    n = (size_t)snprintf(buf, sizeof buf,
                         "{\"jsonrpc\":\"2.0\",\"method\":\"CANARY\",\"params\":{\"a\":");
    for (int i = 0; i < 63; i++)
        buf[n++] = '[';
    for (int i = 0; i < 63; i++)
        buf[n++] = ']';
    memcpy(buf + n, "}}", 3);
    expect_bad(buf, "deeply");
    /* far too deep and unbalanced: refused by the scan, jansson never runs */
    {
        char *deep = malloc(200001);
        memset(deep, '[', 200000);
        deep[200000] = '\0';
        expect_bad(deep, "deeply");
        free(deep);
    }

    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"CANARY\"} x", "not valid JSON");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"CANARY\"}{}", "not valid JSON");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"CANARY\",}", "not valid JSON");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":01,\"method\":\"CANARY\"}", "not valid JSON");
    expect_bad("{\"jsonrpc\":\"2.0\",\"id\":NaN,\"method\":\"CANARY\"}", "not valid JSON");
    expect_bad("{'jsonrpc':'2.0','method':'CANARY'}", "not valid JSON");
    expect_bad("\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"method\":\"CANARY\"}", "not valid JSON");
    /* invalid UTF-8 and lone surrogates */
    expect_bad(
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\xff\"},"
        "\"x\":\"CANARY\"}",
        "not valid JSON");
    expect_bad(
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\\ud800\"},"
        "\"x\":\"CANARY\"}",
        "not valid JSON");
    expect_bad_len("{\"jsonrpc\":\"2.0\",\"method\":\"CANARY\"}\0", 36, "not valid JSON");
    expect_bad("{\"jsonrpc\":\"2.0\",\"method\":\"CANARY\",\"params\":{\"a\":\"\x01\"}}",
               "not valid JSON");
    expect_ok("\n {\"jsonrpc\":\"2.0\",\"method\":\"m\"} \r\n", &m);
}

static void test_parse_keeps_id_on_error(void)
{
    struct rl_mcp_msg m;
    char err[128];

    CU_ASSERT_EQUAL(parse("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\",\"params\":{}}",
                          &m, err, sizeof err),
                    AL_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(m.id, "9");
    CU_ASSERT_EQUAL(m.type, 0);
    CU_ASSERT_EQUAL(parse("{\"jsonrpc\":\"1\",\"id\":\"x\",\"method\":\"m\"}", &m, err, sizeof err),
                    AL_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(m.id, "\"x\"");
    CU_ASSERT_EQUAL(parse("{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"m\"}", &m, err, sizeof err),
                    AL_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(m.id, "");
    /* a short err buffer is cut, never overrun */
    CU_ASSERT_EQUAL(parse("[1]", &m, err, 5), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(strlen(err), 4);
    CU_ASSERT_EQUAL(parse("[1]", &m, NULL, 0), AL_ERR_INVAL);
}

/* ---- headers ---- */

static int hdr(const struct rl_mcp_msg *m, const char *meth, const char *name)
{
    char err[160];
    int rc = rl_mcp_check_headers(m, meth, meth ? strlen(meth) : 0, name, name ? strlen(name) : 0,
                                  err, sizeof err);
    if (rc != 0)
        CU_ASSERT(err[0] != '\0');
    return rc;
}

static void test_headers(void)
{
    struct rl_mcp_msg call, list, resp, res, odd;

    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/"
              "call\",\"params\":{\"name\":\"get_weather\"}}",
              &call);
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}", &list);
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}", &resp);
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"resources/read\",\"params\":{\"uri\":"
              "\"file:///projects/myapp/config.json\"}}",
              &res);

    CU_ASSERT_EQUAL(hdr(&call, NULL, NULL), 0);
    CU_ASSERT_EQUAL(hdr(&call, "tools/call", "get_weather"), 0);
    CU_ASSERT_EQUAL(hdr(&call, " tools/call\t", " get_weather "), 0); /* OWS is not the value */
    CU_ASSERT_EQUAL(hdr(&call, "tools/call", NULL), 0);
    CU_ASSERT_EQUAL(hdr(&call, NULL, "get_weather"), 0);
    CU_ASSERT_EQUAL(hdr(&call, "Tools/call", "get_weather"),
                    AL_ERR_INVAL); /* values are case-sensitive */
    CU_ASSERT_EQUAL(hdr(&call, "tools/list", NULL), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(hdr(&call, "", NULL), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(hdr(&call, NULL, "get_weathe"), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(hdr(&call, NULL, "get_weather2"), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(hdr(&call, NULL, "GET_WEATHER"), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(hdr(&call, NULL, ""), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(hdr(&res, "resources/read", "file:///projects/myapp/config.json"), 0);
    CU_ASSERT_EQUAL(hdr(&res, "resources/read", "file:///projects/myapp/other.json"), AL_ERR_INVAL);

    /* Mcp-Name on a message that names no item; Mcp-Method on a response */
    CU_ASSERT_EQUAL(hdr(&list, "tools/list", NULL), 0);
    CU_ASSERT_EQUAL(hdr(&list, "tools/list", "get_weather"), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(hdr(&resp, "tools/call", NULL), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(hdr(&resp, NULL, "x"), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(hdr(&resp, NULL, NULL), 0);

    /* bytes outside VCHAR/SP/HTAB */
    CU_ASSERT_EQUAL(hdr(&call, "tools/call\r\nX: y", NULL), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(hdr(&call, NULL, "get_weather\x01"), AL_ERR_INVAL);
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/"
              "call\",\"params\":{\"name\":\"caf\xc3\xa9\"}}",
              &odd);
    CU_ASSERT_EQUAL(hdr(&odd, NULL, "caf\xc3\xa9"), AL_ERR_INVAL); /* raw UTF-8 must be Base64 */

    /* the lengths are honoured: no NUL terminator needed */
    {
        char err[64];
        CU_ASSERT_EQUAL(
            rl_mcp_check_headers(&call, "tools/callXX", 10, "get_weatherYY", 11, err, sizeof err),
            0);
    }
}

static void test_headers_base64(void)
{
    struct rl_mcp_msg m;

    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/"
              "call\",\"params\":{\"name\":\"caf\xc3\xa9\"}}",
              &m);
    CU_ASSERT_EQUAL(hdr(&m, "tools/call", "=?base64?Y2Fmw6k=?="), 0);
    CU_ASSERT_EQUAL(hdr(&m, "tools/call", "=?base64?Y2Fmw6k?="), 0);      /* padding optional */
    CU_ASSERT_EQUAL(hdr(&m, NULL, "=?base64?Y2Fmw6l=?="), 0);             /* unused low bits */
    CU_ASSERT_EQUAL(hdr(&m, NULL, "=?base64?Y2FmZQ==?="), AL_ERR_INVAL);  /* "cafe" */
    CU_ASSERT_EQUAL(hdr(&m, NULL, "=?base64?Y2Fmw6k==?="), AL_ERR_INVAL); /* bad padding */
    CU_ASSERT_EQUAL(hdr(&m, NULL, "=?base64?Y2Fm w6k=?="), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(hdr(&m, NULL, "=?base64?Y2Fmw6k=?"), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(hdr(&m, NULL, "=?BASE64?Y2Fmw6k=?="), AL_ERR_INVAL); /* markers are lowercase */
    CU_ASSERT_EQUAL(hdr(&m, NULL, "=?base64?Y2Fmw6k_?="), AL_ERR_INVAL); /* not base64url */
    CU_ASSERT_EQUAL(hdr(&m, NULL, "=?base64?Y?="), AL_ERR_INVAL);

    /* the spec's examples: leading/trailing spaces and the sentinel itself */
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\" "
              "padded \"}}",
              &m);
    CU_ASSERT_EQUAL(hdr(&m, NULL, "=?base64?IHBhZGRlZCA=?="), 0);
    CU_ASSERT_EQUAL(hdr(&m, NULL, " padded "), AL_ERR_INVAL); /* OWS is not part of a value */
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"prompts/"
              "get\",\"params\":{\"name\":\"=?base64?literal?=\"}}",
              &m);
    CU_ASSERT_EQUAL(hdr(&m, NULL, "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="), 0);
    CU_ASSERT_EQUAL(hdr(&m, NULL, "=?base64?literal?="), AL_ERR_INVAL);
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/"
              "call\",\"params\":{\"name\":\"line1\\nline2\"}}",
              &m);
    CU_ASSERT_EQUAL(hdr(&m, NULL, "=?base64?bGluZTEKbGluZTI=?="), 0);
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/"
              "call\",\"params\":{\"name\":\"Hello, \xe4\xb8\x96\xe7\x95\x8c\"}}",
              &m);
    CU_ASSERT_EQUAL(hdr(&m, NULL, "=?base64?SGVsbG8sIOS4lueVjA==?="), 0);
    /* plain ASCII may be encoded too */
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/"
              "call\",\"params\":{\"name\":\"us-west1\"}}",
              &m);
    CU_ASSERT_EQUAL(hdr(&m, NULL, "=?base64?dXMtd2VzdDE=?="), 0);
    CU_ASSERT_EQUAL(hdr(&m, NULL, "us-west1"), 0);
    /* a decoded value with a NUL never matches */
    CU_ASSERT_EQUAL(hdr(&m, NULL, "=?base64?dXMtd2VzdDEA?="), AL_ERR_INVAL);
}

/* ---- authorize and error bodies ---- */

static void test_authorize(void)
{
    struct rl_mcp_msg m;
    char err[256], big[2048];
    int n;

    expect_ok(
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"ok\"}}",
        &m);
    CU_ASSERT_EQUAL(rl_mcp_authorize(&m, allow_cb, NULL, err, sizeof err), 0);
    CU_ASSERT_EQUAL(rl_mcp_authorize(&m, allow_err, NULL, err, sizeof err), AL_ERR_AUTH);

    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/"
              "call\",\"params\":{\"name\":\"deny-me\"}}",
              &m);
    CU_ASSERT_EQUAL(rl_mcp_authorize(&m, allow_cb, NULL, err, sizeof err), AL_ERR_AUTH);
    CU_ASSERT_STRING_EQUAL(err, "tool \"deny-me\" is not allowed");

    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/"
              "read\",\"params\":{\"uri\":\"file:///deny\"}}",
              &m);
    CU_ASSERT_EQUAL(rl_mcp_authorize(&m, allow_cb, NULL, err, sizeof err), AL_ERR_AUTH);
    CU_ASSERT_STRING_EQUAL(err, "resource \"file:///deny\" is not allowed");
    expect_ok(
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"prompts/get\",\"params\":{\"name\":\"p\"}}",
        &m);
    CU_ASSERT_EQUAL(rl_mcp_authorize(&m, allow_none, NULL, err, sizeof err), AL_ERR_AUTH);
    CU_ASSERT_STRING_EQUAL(err, "prompt \"p\" is not allowed");

    /* quotes, controls and U+2028 cannot break out of the quoted name */
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":"
              "\"deny\\\"\\n\\\\\\u0007\\u2028x\"}}",
              &m);
    CU_ASSERT_EQUAL(rl_mcp_authorize(&m, allow_cb, NULL, err, sizeof err), AL_ERR_AUTH);
    CU_ASSERT_STRING_EQUAL(err, "tool \"deny\\\"\\u000a\\\\\\u0007\\u2028x\" is not allowed");

    /* long names are cut at 64 bytes, on a character boundary */
    n = snprintf(
        big, sizeof big,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"deny");
    memset(big + n, 'a', 59);
    strcpy(big + n + 59, "\xc3\xa9zzzzzzzz\"}}"); /* 'é' straddles byte 64 */
    expect_ok(big, &m);
    CU_ASSERT_EQUAL(rl_mcp_authorize(&m, allow_cb, NULL, err, sizeof err), AL_ERR_AUTH);
    CU_ASSERT_EQUAL(strncmp(err, "tool \"deny", 10), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "aaaa...\" is not allowed"));
    CU_ASSERT_PTR_NULL(strstr(err, "\xc3"));
    CU_ASSERT_EQUAL(strlen(err), strlen("tool \"") + 63 + strlen("...\" is not allowed"));

    /* a method acting on no item is not asked about */
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}", &m);
    asked = 0;
    CU_ASSERT_EQUAL(rl_mcp_authorize(&m, allow_none, NULL, err, sizeof err), 0);
    CU_ASSERT_EQUAL(asked, 0);
}

static void test_error_body(void)
{
    struct rl_mcp_msg m;
    struct rl_buf b;
    json_t *j;

    rl_buf_init(&b, 0);
    expect_ok(
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"x\"}}", &m);
    CU_ASSERT_EQUAL(rl_mcp_error_body(&m, RL_MCP_ERR_DENIED, "tool \"x\" is not allowed", &b), 0);
    CU_ASSERT_EQUAL(b.len, strlen("{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-32001,"
                                  "\"message\":\"tool \\\"x\\\" is not allowed\"}}"));
    CU_ASSERT_EQUAL(memcmp(b.p,
                           "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-32001,"
                           "\"message\":\"tool \\\"x\\\" is not allowed\"}}",
                           b.len),
                    0);
    rl_buf_cleanup(&b);

    CU_ASSERT_EQUAL(rl_mcp_error_body(NULL, RL_MCP_ERR_PARSE, "bad", &b), 0);
    CU_ASSERT_EQUAL(
        memcmp(b.p,
               "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"bad\"}}",
               b.len),
        0);
    rl_buf_cleanup(&b);

    /* every awkward byte still makes valid JSON that reads back the same */
    expect_ok("{\"jsonrpc\":\"2.0\",\"id\":\"a\\\"b\",\"method\":\"m\"}", &m);
    CU_ASSERT_EQUAL(
        rl_mcp_error_body(&m, -32600, "q\" \\ \n\r\t\x01\x7f \xe2\x80\xa8 \xc3\xa9 \xff end", &b),
        0);
    j = json_loadb((const char *)b.p, b.len, JSON_REJECT_DUPLICATES, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "id")), "a\"b");
    CU_ASSERT_STRING_EQUAL(
        json_string_value(json_object_get(json_object_get(j, "error"), "message")),
        "q\" \\ \n\r\t\x01\x7f \xe2\x80\xa8 \xc3\xa9 \xef\xbf\xbd end");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(j, "error"), "code")),
                    -32600);
    json_decref(j);
    CU_ASSERT_PTR_NULL(memchr(b.p, '\n', b.len)); /* one line, safe for logs and SSE */
    rl_buf_cleanup(&b);

    /* a hand-made msg with a bogus id gets null, never the bogus text */
    memset(&m, 0, sizeof m);
    strcpy(m.id, "1,\"x\":2");
    CU_ASSERT_EQUAL(rl_mcp_error_body(&m, -32600, "m", &b), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr((const char *)b.p, "\"id\":null"));
    rl_buf_cleanup(&b);

    /* a capped buffer: an error, and nothing half-written */
    rl_buf_init(&b, 40);
    CU_ASSERT_EQUAL(rl_buf_puts(&b, "keep"), 0);
    CU_ASSERT_EQUAL(rl_mcp_error_body(NULL, -32600, "a long enough message to go over", &b),
                    AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(b.len, 4);
    rl_buf_cleanup(&b);
}

/* ---- filter: JSON bodies ---- */

#define TOOLS_IN                                                                                   \
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"a\",\"inputSchema\":{"       \
    "\"type\":"                                                                                    \
    "\"object\"}},{\"name\":\"deny1\",\"description\":\"hidden\"},{\"name\":\"b\"},{\"name\":"     \
    "\"deny2\"},{\"name\":\"deny3\"},{\"name\":\"c\"},{\"name\":\"deny4\"}],\"nextCursor\":"       \
    "\"n1\"}}"

static void test_filter_json_lists(void)
{
    unsigned long removed;
    size_t ol;
    int rc;
    char *o;

    expect_filter(
        0, allow_cb, TOOLS_IN,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"a\",\"inputSchema\":"
        "{\"type\":\"object\"}},{\"name\":\"b\"},{\"name\":\"c\"}],\"nextCursor\":\"n1\"}}");
    expect_same(0, allow_all, TOOLS_IN);
    expect_filter(0, allow_none, TOOLS_IN,
                  "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[],\"nextCursor\":\"n1\"}}");
    expect_filter(0, allow_err, TOOLS_IN, /* a callback error is a refusal */
                  "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[],\"nextCursor\":\"n1\"}}");

    o = run_cuts(0, allow_cb, TOOLS_IN, strlen(TOOLS_IN), NULL, 0, 0, &rc, &ol, &removed);
    CU_ASSERT_EQUAL(removed, 4);
    free(o);

    /* the first item refused, the last kept; spacing kept as written */
    expect_filter(
        0, allow_cb,
        "{ \"result\" : { \"prompts\" : [ {\"name\":\"deny\"} ,\n {\"name\":\"deny\"},"
        "{\"name\":\"p\"} ] } , \"id\" : 2 , \"jsonrpc\" : \"2.0\" }",
        "{ \"result\" : { \"prompts\" : [ {\"name\":\"p\"} ] } , \"id\" : 2 , \"jsonrpc\" : "
        "\"2.0\" }");
    expect_filter(0, allow_cb,
                  "{\"result\":{\"prompts\":[\n  {\"name\":\"p\"},\n  {\"name\":\"deny\"}\n]}}",
                  "{\"result\":{\"prompts\":[\n  {\"name\":\"p\"}\n]}}");
    expect_filter(0, allow_cb, "{\"result\":{\"prompts\":[]}}", "{\"result\":{\"prompts\":[]}}");

    /* resources by uri, templates by uriTemplate (not by name) */
    expect_filter(
        0, allow_cb,
        "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"resources\":[{\"uri\":\"file:///deny\","
        "\"name\":\"ok\"},{\"uri\":\"file:///ok\",\"name\":\"deny\"}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"resources\":[{\"uri\":\"file:///ok\","
        "\"name\":\"deny\"}]}}");
    expect_filter(
        0, allow_cb,
        "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"resourceTemplates\":[{\"uriTemplate\":"
        "\"file:///{path}\",\"name\":\"deny\"},{\"uriTemplate\":\"deny:///{x}\",\"name\":\"t\"}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"resourceTemplates\":[{\"uriTemplate\":"
        "\"file:///{path}\",\"name\":\"deny\"}]}}");
}

static void test_filter_json_cache_scope(void)
{
    /* a filtered list is the caller's own: shared caches must not keep it */
    expect_filter(
        0, allow_cb,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"resultType\":\"complete\",\"ttlMs\":60000,"
        "\"cacheScope\":\"public\",\"tools\":[{\"name\":\"deny\"},{\"name\":\"t\"}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"resultType\":\"complete\",\"ttlMs\":60000,"
        "\"cacheScope\":\"private\",\"tools\":[{\"name\":\"t\"}]}}");
    expect_filter(0, allow_all,
                  "{\"result\":{\"tools\":[{\"name\":\"t\"}],\"cacheScope\" : \"public\"}}",
                  "{\"result\":{\"tools\":[{\"name\":\"t\"}],\"cacheScope\" : \"private\"}}");
    expect_same(0, allow_cb,
                "{\"result\":{\"tools\":[{\"name\":\"t\"}],\"cacheScope\":\"private\"}}");
    /* not a list: the scope is the server's business */
    expect_same(0, allow_cb, "{\"result\":{\"contents\":[],\"cacheScope\":\"public\"}}");
}

static void test_filter_json_untouched(void)
{
    /* other messages: byte for byte, whatever the allow-list says */
    expect_same(
        0, allow_none,
        "{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"content\":[{\"type\":\"text\",\"text\":"
        "\"deny tools\"}],\"isError\":false}}");
    expect_same(0, allow_none,
                "{\"jsonrpc\":\"2.0\",\"id\":5,\"error\":{\"code\":-32601,\"message\":\"x\"}}");
    expect_same(0, allow_none,
                "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}");
    expect_same(0, allow_none, "not json at all {\"result\":{\"tools\":[{\"name\":\"x\"}]}}");
    expect_same(0, allow_none, "{\"result\":{\"tools\":[{\"name\":\"x\"}]}} trailing");
    expect_same(0, allow_none, "{\"result\":{\"tools\":{\"name\":\"x\"}}}"); /* not an array */
    expect_same(0, allow_none, "{\"result\":[{\"tools\":[{\"name\":\"x\"}]}]}");
    expect_same(0, allow_none, "{\"params\":{\"tools\":[{\"name\":\"x\"}]}}");
    expect_same(0, allow_none, "");
    expect_same(0, allow_none, "   ");
    expect_same(0, allow_none, "\"just a string\"");
    /* kept items keep their exact numbers and escapes (no re-serialization) */
    expect_filter(
        0, allow_cb,
        "{\"result\":{\"tools\":[{\"name\":\"t\",\"x\":{\"d\":0.1,\"big\":"
        "123456789012345678901234567890,"
        "\"huge\":1e400,\"neg\":-0.0e-7,\"s\":\"\\u00e9\\/\\ud800\"}},{\"name\":\"deny\"}]}}",
        "{\"result\":{\"tools\":[{\"name\":\"t\",\"x\":{\"d\":0.1,\"big\":"
        "123456789012345678901234567890,"
        "\"huge\":1e400,\"neg\":-0.0e-7,\"s\":\"\\u00e9\\/\\ud800\"}}]}}");
}

static void test_filter_json_tolerant_reading(void)
{
    /* duplicate keys: every result and every list is filtered */
    expect_filter(
        0, allow_cb,
        "{\"result\":{\"tools\":[{\"name\":\"deny\"}]},\"result\":{\"tools\":[{\"name\":\"t\"},"
        "{\"name\":\"deny2\"}],\"tools\":[{\"name\":\"deny3\"}]}}",
        "{\"result\":{\"tools\":[]},\"result\":{\"tools\":[{\"name\":\"t\"}],\"tools\":[]}}");
    /* an item with two names is kept only if both are allowed */
    expect_filter(0, allow_cb,
                  "{\"result\":{\"tools\":[{\"name\":\"t\",\"name\":\"deny\"},{\"name\":\"u\","
                  "\"name\":\"v\"}]}}",
                  "{\"result\":{\"tools\":[{\"name\":\"u\",\"name\":\"v\"}]}}");
    /* keys written with escapes are the same keys */
    expect_filter(
        0, allow_cb,
        "{\"res\\u0075lt\":{\"t\\u006fols\":[{\"n\\u0061me\":\"d\\u0065ny\"},{\"name\":\"t\"}]}}",
        "{\"res\\u0075lt\":{\"t\\u006fols\":[{\"name\":\"t\"}]}}");
    /* items without a usable name go: none, not a string, empty, NUL,
     * lone surrogate, too long, not an object */
    expect_filter(0, allow_all,
                  "{\"result\":{\"tools\":[{\"title\":\"x\"},{\"name\":7},{\"name\":\"\"},{"
                  "\"name\":\"a\\u0000b\"},"
                  "{\"name\":\"\\udc00\"},\"t\",null,[{\"name\":\"t\"}],{\"name\":\"ok\"}]}}",
                  "{\"result\":{\"tools\":[{\"name\":\"ok\"}]}}");
    /* NaN and Infinity (Python clients read them) do not hide a list */
    expect_filter(0, allow_cb,
                  "{\"result\":{\"x\":NaN,\"y\":-Infinity,\"tools\":[{\"name\":\"deny\"}]}}",
                  "{\"result\":{\"x\":NaN,\"y\":-Infinity,\"tools\":[]}}");
    /* a leading BOM (clients strip it) is kept; invalid UTF-8 is read as
     * U+FFFD, as the agent's decoder will */
    expect_filter(0, allow_cb, "\xef\xbb\xbf{\"result\":{\"tools\":[{\"name\":\"deny\"}]}}",
                  "\xef\xbb\xbf{\"result\":{\"tools\":[]}}");
    expect_filter(0, allow_cb,
                  "{\"result\":{\"tools\":[{\"name\":\"deny\xff\"},{\"name\":\"t\xc3\"}]}}",
                  "{\"result\":{\"tools\":[{\"name\":\"t\xef\xbf\xbd\"}]}}");
    expect_same(0, allow_cb,
                "{\"result\":{\"tools\":[{\"name\":\"t\xff\"}]}}"); /* nothing to cut */
    /* a batch of responses */
    expect_filter(0, allow_cb,
                  "[{\"id\":1,\"result\":{\"tools\":[{\"name\":\"deny\"}]}},7,{\"id\":2,\"result\":"
                  "{\"prompts\":"
                  "[{\"name\":\"p\"},{\"name\":\"deny\"}]}}]",
                  "[{\"id\":1,\"result\":{\"tools\":[]}},7,{\"id\":2,\"result\":{\"prompts\":[{"
                  "\"name\":\"p\"}]}}]");
}

static void test_filter_json_deep_and_big(void)
{
    size_t n = 300000, ol;
    char *in = malloc(n + 200), *o;
    int rc;

    /* deep nesting inside a kept item: scanned without recursion */
    size_t k =
        (size_t)sprintf(in, "{\"result\":{\"tools\":[{\"name\":\"deny\"},{\"name\":\"t\",\"x\":");
    size_t depth = (n - k) / 2 - 20;
    memset(in + k, '[', depth);
    memset(in + k + depth, ']', depth);
    strcpy(in + k + 2 * depth, "}]}}");
    o = run_cuts(0, allow_cb, in, strlen(in), NULL, 0, 0, &rc, &ol, NULL);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(ol, strlen(in) - strlen("{\"name\":\"deny\"},"));
    CU_ASSERT_EQUAL(memcmp(o, "{\"result\":{\"tools\":[{\"name\":\"t\",", 31), 0);
    free(o);
    free(in);
}

static void test_filter_json_oversize(void)
{
    struct rl_mcp_filter *f;
    struct rl_buf out;
    char body[101];

    memset(body, ' ', 100);
    body[100] = '\0';
    rl_buf_init(&out, 0);
    CU_ASSERT_EQUAL_FATAL(rl_mcp_filter_new(0, allow_cb, NULL, 100, &f), 0);
    CU_ASSERT_EQUAL(rl_mcp_filter_feed(f, (const uint8_t *)body, 60, &out), 0);
    CU_ASSERT_EQUAL(rl_mcp_filter_feed(f, (const uint8_t *)body, 40, &out), 0); /* exactly 100 */
    CU_ASSERT_EQUAL(rl_mcp_filter_feed(f, (const uint8_t *)body, 1, &out), AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(rl_mcp_filter_feed(f, (const uint8_t *)body, 1, &out), AL_ERR_STATE);
    CU_ASSERT_EQUAL(rl_mcp_filter_finish(f, &out), AL_ERR_STATE);
    CU_ASSERT_EQUAL(out.len, 0); /* nothing unfiltered went out */
    rl_mcp_filter_free(f);
    rl_mcp_filter_free(NULL);
    rl_buf_cleanup(&out);
}

/* ---- filter: SSE ---- */

#define LIST_DATA                                                                                  \
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"deny\"},{\"name\":\"t\"}]}}"
#define LIST_OUT "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"t\"}]}}"
#define OTHER_DATA                                                                                 \
    "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}"

static void test_sse_basic(void)
{
    expect_filter(1, allow_cb, "event: message\nid: 5\ndata: " LIST_DATA "\n\n",
                  "event: message\nid: 5\ndata: " LIST_OUT "\n\n");
    /* id/event/retry and unknown fields around the data keep their places */
    expect_filter(1, allow_cb, "id: 5\ndata: " LIST_DATA "\nretry: 100\nfoo: bar\n\n",
                  "id: 5\ndata: " LIST_OUT "\nretry: 100\nfoo: bar\n\n");
    /* "data:" without the space, and other events around it untouched */
    expect_filter(
        1, allow_cb,
        ": hello\n\ndata:" OTHER_DATA "\n\nevent: message\ndata:" LIST_DATA "\n\n: bye\n\n",
        ": hello\n\ndata:" OTHER_DATA "\n\nevent: message\ndata: " LIST_OUT "\n\n: bye\n\n");
    /* the list in an event of another type is still filtered */
    expect_filter(1, allow_cb, "event: custom\ndata: " LIST_DATA "\n\n",
                  "event: custom\ndata: " LIST_OUT "\n\n");
}

static void test_sse_line_ends(void)
{
    expect_filter(1, allow_cb, "event: message\r\nid: 5\r\ndata: " LIST_DATA "\r\n\r\n",
                  "event: message\r\nid: 5\r\ndata: " LIST_OUT "\r\n\r\n");
    expect_filter(1, allow_cb, "event: message\rid: 5\rdata: " LIST_DATA "\r\r",
                  "event: message\rid: 5\rdata: " LIST_OUT "\r\r");
    /* mixed, blank lines in a row, a CR-ended blank line before an LF one */
    expect_filter(1, allow_cb, "\r\n\n\revent: message\rdata: " LIST_DATA "\r\n\r\n\n: c\r\r\n",
                  "\r\n\n\revent: message\rdata: " LIST_OUT "\r\n\r\n\n: c\r\r\n");
    expect_same(1, allow_none, "data: " OTHER_DATA "\r\r\ndata: x\r\n\r");
}

static void test_sse_multiline_data(void)
{
    /* data over several lines (joined with LF): one rewritten line per
     * line of the new data */
    expect_filter(1, allow_cb,
                  "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\ndata: "
                  "\"result\":{\"tools\":[{\"name\":\"deny\"},\n"
                  "event: message\ndata: {\"name\":\"t\"}]}}\n\n",
                  "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\ndata: "
                  "\"result\":{\"tools\":[{\"name\":\"t\"}]}}\n"
                  "event: message\n\n");
    expect_filter(1, allow_cb,
                  "data: {\"result\":{\"tools\":[\r\ndata:{\"name\":\"deny\"},\r\ndata\r\ndata: "
                  "{\"name\":\"t\"}]}}\r\n\r\n",
                  "data: {\"result\":{\"tools\":[\r\ndata: {\"name\":\"t\"}]}}\r\n\r\n");
    /* "data" with no colon is an empty data line */
    expect_same(1, allow_none, "data\ndata\n\n");
    /* Data, DATA or "data " are other fields */
    expect_same(1, allow_none, "Data: " LIST_DATA "\n\n");
    expect_same(1, allow_none, "data : " LIST_DATA "\n\n");
}

static void test_sse_untouched(void)
{
    expect_same(1, allow_none, "event: ping\nid: 1\n\n"); /* no data */
    expect_same(1, allow_none, "retry: 1000\n\n");
    expect_same(1, allow_none, ": keepalive\n\n: again\r\n\r"); /* comments */
    expect_same(1, allow_none, "data: " OTHER_DATA "\n\n");
    expect_same(1, allow_none, "data: not json\n\n");
    expect_same(1, allow_none, "data:\n\n");
    expect_same(1, allow_all, "id: 9\ndata: " LIST_DATA "\n\n");
    /* a comment inside an event stays where it is */
    expect_filter(1, allow_cb, "event: message\n: inside\ndata: " LIST_DATA "\n\n",
                  "event: message\n: inside\ndata: " LIST_OUT "\n\n");
}

static void test_sse_bom_and_unterminated(void)
{
    /* the stream's BOM is not part of the first field name */
    expect_filter(1, allow_cb,
                  "\xef\xbb\xbf"
                  "data: " LIST_DATA "\n\n",
                  "\xef\xbb\xbf"
                  "data: " LIST_OUT "\n\n");
    expect_filter(1, allow_cb,
                  "\xef\xbb\xbf"
                  "id: 1\ndata: " LIST_DATA "\n\n",
                  "\xef\xbb\xbf"
                  "id: 1\ndata: " LIST_OUT "\n\n");
    expect_same(1, allow_cb, "\xef\xbb\xbf: c\n\n");
    /* only at the very start */
    expect_same(1, allow_none,
                "\n\xef\xbb\xbf"
                "data: " LIST_DATA "\n\n");
    /* the stream ends inside an event: still filtered */
    expect_filter(1, allow_cb, "data: " LIST_DATA "\n", "data: " LIST_OUT "\n");
    expect_filter(1, allow_cb, "data: " LIST_DATA, "data: " LIST_OUT);
    expect_filter(1, allow_cb, "id: 2\ndata: " LIST_DATA "\r", "id: 2\ndata: " LIST_OUT "\r");
    expect_same(1, allow_none, ": unterminated comment");
}

/* Comments and finished events go out at once: nothing waits for more. */
static void test_sse_streams(void)
{
    struct rl_mcp_filter *f;
    struct rl_buf out;
    const char *a = ": ping\n", *b = "data: " LIST_DATA "\n\nid: 2\n";

    rl_buf_init(&out, 0);
    CU_ASSERT_EQUAL_FATAL(rl_mcp_filter_new(1, allow_cb, NULL, 0, &f), 0);
    CU_ASSERT_EQUAL(rl_mcp_filter_feed(f, (const uint8_t *)a, strlen(a), &out), 0);
    CU_ASSERT_EQUAL(out.len, strlen(a));
    rl_buf_reset(&out);
    CU_ASSERT_EQUAL(rl_mcp_filter_feed(f, (const uint8_t *)b, strlen(b), &out), 0);
    CU_ASSERT_EQUAL(out.len, strlen("data: " LIST_OUT "\n\n"));
    CU_ASSERT_EQUAL(rl_mcp_filter_removed(f), 1);
    CU_ASSERT_EQUAL(rl_mcp_filter_finish(f, &out), 0);
    CU_ASSERT_EQUAL(out.len, strlen("data: " LIST_OUT "\n\nid: 2\n"));
    rl_mcp_filter_free(f);
    rl_buf_cleanup(&out);
}

static void test_sse_oversize(void)
{
    struct rl_mcp_filter *f;
    struct rl_buf out;
    char line[64];
    int rc = 0;

    /* many small events, far more than max_msg in all: fine */
    rl_buf_init(&out, 0);
    CU_ASSERT_EQUAL_FATAL(rl_mcp_filter_new(1, allow_cb, NULL, 64, &f), 0);
    for (int i = 0; i < 1000 && rc == 0; i++) {
        int n = snprintf(line, sizeof line, "id: %d\ndata: {\"x\":%d}\n\n", i, i);
        rc = rl_mcp_filter_feed(f, (const uint8_t *)line, (size_t)n, &out);
    }
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(rl_mcp_filter_finish(f, &out), 0);
    rl_mcp_filter_free(f);
    rl_buf_cleanup(&out);

    /* one event over max_msg, across lines: AL_ERR_TOOBIG, nothing of it out */
    rl_buf_init(&out, 0);
    CU_ASSERT_EQUAL_FATAL(rl_mcp_filter_new(1, allow_cb, NULL, 64, &f), 0);
    CU_ASSERT_EQUAL(rl_mcp_filter_feed(f, (const uint8_t *)": c\n\n", 5, &out), 0);
    rc = 0;
    for (int i = 0; i < 10 && rc == 0; i++)
        rc = rl_mcp_filter_feed(f, (const uint8_t *)"data: 0123456789\n", 17, &out);
    CU_ASSERT_EQUAL(rc, AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(out.len, 5);
    CU_ASSERT_EQUAL(rl_mcp_filter_feed(f, (const uint8_t *)"\n", 1, &out), AL_ERR_STATE);
    CU_ASSERT_EQUAL(rl_mcp_filter_finish(f, &out), AL_ERR_STATE);
    rl_mcp_filter_free(f);
    rl_buf_cleanup(&out);

    /* one endless line without a line end */
    rl_buf_init(&out, 0);
    CU_ASSERT_EQUAL_FATAL(rl_mcp_filter_new(1, allow_cb, NULL, 64, &f), 0);
    rc = 0;
    for (int i = 0; i < 10 && rc == 0; i++)
        rc = rl_mcp_filter_feed(f, (const uint8_t *)"data: 0123456789", 16, &out);
    CU_ASSERT_EQUAL(rc, AL_ERR_TOOBIG);
    rl_mcp_filter_free(f);
    rl_buf_cleanup(&out);
}

/* Line ends only splitlines()-style clients see (U+2028, VT, ...). */
static void test_sse_wide_line_ends(void)
{
    /* hidden events for such clients: their line ends become U+FFFD */
    expect_filter(1, allow_cb,
                  "data: x\xe2\x80\xa8\xe2\x80\xa8"
                  "data: " LIST_DATA "\n\n",
                  "data: x\xef\xbf\xbd\xef\xbf\xbd"
                  "data: " LIST_DATA "\n\n");
    expect_filter(1, allow_cb,
                  "id: 1\x0b\x0c"
                  "data: " LIST_DATA "\n\n",
                  "id: 1\xef\xbf\xbd\xef\xbf\xbd"
                  "data: " LIST_DATA "\n\n");
    expect_filter(1, allow_cb,
                  ": c\xc2\x85"
                  "data: " LIST_DATA "\r\n\r\n",
                  ": c\xef\xbf\xbd"
                  "data: " LIST_DATA "\r\n\r\n");
    /* a comment line and the event after it are one event for them */
    expect_filter(1, allow_cb,
                  ": c\xe2\x80\xa8"
                  "data: {\"result\":{\"tools\":[\ndata: {\"name\":\"deny\"}]}}\n\n",
                  ": c\xef\xbf\xbd"
                  "data: {\"result\":{\"tools\":[\ndata: {\"name\":\"deny\"}]}}\n\n");
    expect_filter(1, allow_cb,
                  ": c\xe2\x80\xa8"
                  "data: " LIST_DATA,
                  ": c\xef\xbf\xbd"
                  "data: " LIST_DATA);
    expect_same(1, allow_cb, ": c\xe2\x80\xa8 fine\n\n");
    /* nothing to hide: untouched (U+2028 is fine inside JSON strings) */
    expect_same(1, allow_none,
                "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\","
                "\"text\":\"a\xe2\x80\xa8\x0b"
                "data: b\"}]}}\n\n");
    expect_same(1, allow_all,
                "data: x\xe2\x80\xa9\xe2\x80\xa9"
                "data: " LIST_DATA "\n\n");
    /* a list WHATWG readers see is filtered as ever */
    expect_filter(1, allow_cb,
                  "data: {\"result\":{\"tools\":[{\"name\":\"deny\",\"description\":\"a\xe2\x80\xa8"
                  "b\"},{\"name\":\"t\"}]}}\n\n",
                  "data: {\"result\":{\"tools\":[{\"name\":\"t\"}]}}\n\n");
}

/* A whole stream, one-shot vs split at every byte, for each line end. */
static void test_sse_every_split(void)
{
    static const char *const eols[] = {"\n", "\r\n", "\r"};
    char in[2048], want[2048];

    for (size_t e = 0; e < 3; e++) {
        const char *l = eols[e];
        snprintf(in, sizeof in,
                 ": open%s%sevent: message%sid: 1%sdata: " OTHER_DATA "%s%s"
                 "event: message%sid: 2%sdata: {\"jsonrpc\":\"2.0\",\"id\":1,%sdata: "
                 "\"result\":{\"resources\":"
                 "[{\"uri\":\"deny:1\"},{\"uri\":\"u:2\"},{\"uri\":\"deny:3\"}]}}%s%s: close%s",
                 l, l, l, l, l, l, l, l, l, l, l, l);
        snprintf(want, sizeof want,
                 ": open%s%sevent: message%sid: 1%sdata: " OTHER_DATA "%s%s"
                 "event: message%sid: 2%sdata: {\"jsonrpc\":\"2.0\",\"id\":1,%sdata: "
                 "\"result\":{\"resources\":"
                 "[{\"uri\":\"u:2\"}]}}%s%s: close%s",
                 l, l, l, l, l, l, l, l, l, l, l, l);
        expect_filter(1, allow_cb, in, want);
    }
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("relay mcp", NULL, NULL);
    CU_add_test(s, "parse: requests", test_parse_requests);
    CU_add_test(s, "parse: lists, notifications, responses",
                test_parse_lists_notifications_responses);
    CU_add_test(s, "parse: UTF-8 names", test_parse_utf8_names);
    CU_add_test(s, "parse: bad shapes and batches", test_parse_bad_shapes);
    CU_add_test(s, "parse: bad item names and lengths", test_parse_bad_names);
    CU_add_test(s, "parse: completion/complete refs", test_parse_completion);
    CU_add_test(s, "parse: duplicate keys at any depth", test_parse_dup_keys);
    CU_add_test(s, "parse: nesting limit and trailing garbage", test_parse_nesting_and_garbage);
    CU_add_test(s, "parse: id kept for the error reply", test_parse_keeps_id_on_error);
    CU_add_test(s, "headers: Mcp-Method and Mcp-Name", test_headers);
    CU_add_test(s, "headers: Base64 values", test_headers_base64);
    CU_add_test(s, "authorize and its error text", test_authorize);
    CU_add_test(s, "error bodies", test_error_body);
    CU_add_test(s, "filter JSON: lists all/none/some allowed", test_filter_json_lists);
    CU_add_test(s, "filter JSON: cacheScope", test_filter_json_cache_scope);
    CU_add_test(s, "filter JSON: other messages byte-identical", test_filter_json_untouched);
    CU_add_test(s, "filter JSON: read as tolerant clients read", test_filter_json_tolerant_reading);
    CU_add_test(s, "filter JSON: deep nesting", test_filter_json_deep_and_big);
    CU_add_test(s, "filter JSON: oversize", test_filter_json_oversize);
    CU_add_test(s, "filter SSE: events", test_sse_basic);
    CU_add_test(s, "filter SSE: CRLF, CR, LF", test_sse_line_ends);
    CU_add_test(s, "filter SSE: multi-line data", test_sse_multiline_data);
    CU_add_test(s, "filter SSE: untouched events and comments", test_sse_untouched);
    CU_add_test(s, "filter SSE: BOM and unterminated events", test_sse_bom_and_unterminated);
    CU_add_test(s, "filter SSE: output as soon as it is final", test_sse_streams);
    CU_add_test(s, "filter SSE: oversize", test_sse_oversize);
    CU_add_test(s, "filter SSE: splitlines()-style line ends", test_sse_wide_line_ends);
    CU_add_test(s, "filter SSE: every split of a stream", test_sse_every_split);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
