/*
 * Unit tests for gw_config: the gateway's own keys, the tunnels and
 * relay_keys lists with their error messages (file:line and key), the checks
 * beyond the schema, route lookup and policy matching (first matching entry,
 * nothing for an unknown principal, globs per item kind).
 */
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_config.h"
#include "al_err.h"
#include "gw_config.h"

#define BASE                                                                                       \
    "relays = [\"relay.example:7421\"];\n"                                                         \
    "relay_keys = ( { issuer = \"spiffe://airlock/relay/relay-0\"; "                               \
    "public_key_file = \"/k/relay-0.pub\"; } );\n"

#define SERVER_OK                                                                                  \
    "{ name = \"crm\"; url = \"http://10.0.0.7:8931/mcp\"; credential = \"crm-token\";\n"          \
    "  allow = [\"10.0.0.0/24\"];\n"                                                               \
    "  policy = ( { principals = [\"dev\", \"team-a/*\"]; tools = [\"search\", \"get_*\"];\n"      \
    "               resources = [\"file:///docs/**\"]; prompts = [\"*\"]; },\n"                    \
    "             { principals = [\"**\"]; tools = [\"ping\"]; } ); }"

static int load(const char *text, struct gw_config *c, char *err, size_t errlen)
{
    size_t n;
    const struct al_cfg_field *f = gw_config_fields(&n);
    struct al_config_opts o = {.text = text, .text_name = "gw.conf", .envp = (char *[]){NULL}};
    char *argv[] = {"test", NULL};

    memset(c, 0, sizeof(*c));
    return al_config_load(f, n, c, 1, argv, &o, err, errlen);
}

static void unload(struct gw_config *c)
{
    size_t n;
    const struct al_cfg_field *f = gw_config_fields(&n);
    al_config_cleanup(f, n, c);
}

/* Loads text, expects failure, and that the message contains want. */
static void expect_error(const char *text, const char *want)
{
    struct gw_config c;
    char err[512] = "";
    int rc = load(text, &c, err, sizeof(err));

    CU_ASSERT_NOT_EQUAL(rc, 0);
    if (rc == 0 || !strstr(err, want))
        fprintf(stderr, "\n  want \"%s\" in: %s\n", want, err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
    unload(&c);
}

static void test_defaults_and_routes(void)
{
    struct gw_config c;
    char err[512] = "";
    const char *text = BASE "tunnels = ( { name = \"corp\"; servers = ( " SERVER_OK ",\n"
                            "  { name = \"wiki\"; url = \"https://wiki.internal/\"; "
                            "credential = \"team/wiki-key\"; timeout = 5; } ); },\n"
                            "  { name = \"lab\"; servers = ( { name = \"crm\"; "
                            "url = \"http://lab:80\"; credential = \"x\"; } ); } );\n";
    int rc = load(text, &c, err, sizeof(err));

    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(c.connections, 2);
    CU_ASSERT_DOUBLE_EQUAL(c.heartbeat_s, 10, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(c.cache_ttl_s, 30, 1e-9);
    CU_ASSERT_EQUAL(c.audit_batch_max, 500);
    CU_ASSERT_EQUAL(c.max_body, 4u << 20);
    CU_ASSERT_STRING_EQUAL(c.relay_identities[0], "spiffe://airlock/relay/*");
    CU_ASSERT_EQUAL(c.routes.n, 3);
    CU_ASSERT_STRING_EQUAL(c.routes.v[0].name, "corp/crm");
    CU_ASSERT_STRING_EQUAL(c.routes.v[1].name, "corp/wiki");
    CU_ASSERT_STRING_EQUAL(c.routes.v[2].name, "lab/crm");
    CU_ASSERT_DOUBLE_EQUAL(c.routes.v[0].timeout_s, 300, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(c.routes.v[1].timeout_s, 5, 1e-9);
    CU_ASSERT_EQUAL(c.routes.v[0].nallow, 1);
    CU_ASSERT_EQUAL(c.routes.v[0].npolicy, 2);
    CU_ASSERT_EQUAL(c.routes.v[1].npolicy, 0);
    CU_ASSERT_PTR_EQUAL(gw_route_find(&c.routes, "corp", 4, "wiki", 4), &c.routes.v[1]);
    CU_ASSERT_PTR_EQUAL(gw_route_find(&c.routes, "lab", 3, "crm", 3), &c.routes.v[2]);
    CU_ASSERT_PTR_NULL(gw_route_find(&c.routes, "corp", 4, "cr", 2));
    CU_ASSERT_PTR_NULL(gw_route_find(&c.routes, "cor", 3, "crm", 3));
    CU_ASSERT_EQUAL(gw_config_check(&c, err, sizeof(err)), 0);
    unload(&c);
}

static void test_policy(void)
{
    struct gw_config c;
    char err[512] = "";
    const struct gw_policy *p;

    CU_ASSERT_EQUAL_FATAL(load(BASE "tunnels = ( { name = \"corp\"; servers = ( " SERVER_OK
                                    " ); } );\n",
                               &c, err, sizeof(err)),
                          0);
    const struct gw_route *r = &c.routes.v[0];
    p = gw_policy_for(r, "team-a/bot");
    CU_ASSERT_PTR_EQUAL(p, &r->policy[0]);
    CU_ASSERT(gw_policy_allows((void *)p, RL_MCP_TOOL, "search"));
    CU_ASSERT(gw_policy_allows((void *)p, RL_MCP_TOOL, "get_user"));
    CU_ASSERT_FALSE(gw_policy_allows((void *)p, RL_MCP_TOOL, "delete_user"));
    CU_ASSERT_FALSE(gw_policy_allows((void *)p, RL_MCP_TOOL, "ping")); /* first match wins */
    CU_ASSERT(gw_policy_allows((void *)p, RL_MCP_RESOURCE, "file:///docs/a/b.md"));
    CU_ASSERT_FALSE(gw_policy_allows((void *)p, RL_MCP_RESOURCE, "file:///etc/passwd"));
    CU_ASSERT(gw_policy_allows((void *)p, RL_MCP_PROMPT, "summarize"));
    CU_ASSERT_FALSE(gw_policy_allows((void *)p, RL_MCP_PROMPT, "a/b")); /* "*" stops at '/' */
    /* the one-level "team-a/" glob does not reach two levels down: the catch-all applies */
    p = gw_policy_for(r, "team-a/x/y");
    CU_ASSERT_PTR_EQUAL(p, &r->policy[1]);
    CU_ASSERT(gw_policy_allows((void *)p, RL_MCP_TOOL, "ping"));
    CU_ASSERT_FALSE(gw_policy_allows((void *)p, RL_MCP_TOOL, "search"));
    CU_ASSERT_FALSE(gw_policy_allows((void *)p, RL_MCP_PROMPT, "summarize")); /* [] = none */
    /* no entry at all: nothing is allowed */
    CU_ASSERT_FALSE(gw_policy_allows(NULL, RL_MCP_TOOL, "search"));
    CU_ASSERT_FALSE(gw_policy_allows((void *)&r->policy[0], RL_MCP_NONE, "search"));
    unload(&c);
}

/* Resource URIs are matched as text: one that climbs out of the globbed
 * prefix once a server normalizes it is never allowed. */
static void test_policy_resource_climbing(void)
{
    static const char *const refused[] = {
        "file:///docs/../etc/passwd",
        "file:///docs/a/../../etc/passwd",
        "file:///docs/%2e%2e/etc/passwd",
        "file:///docs/%2E./etc/passwd",
        "file:///docs/.%2e/etc/passwd",
        "file:///docs/a/..",
        "file:///docs/./a",
        "file:///docs/a%2f..%2f..%2fetc/passwd",
        "file:///docs/a%5C..%5Cetc",
        "file:///docs/a\\..\\etc",
    };
    static const char *const allowed[] = {
        "file:///docs/a..b/c.md",     "file:///docs/...",        "file:///docs/.hidden",
        "file:///docs/a/b.md?x=../y", "file:///docs/v1.2/notes",
    };
    struct gw_config c;
    char err[512] = "";
    const struct gw_policy *p;

    CU_ASSERT_EQUAL_FATAL(load(BASE "tunnels = ( { name = \"corp\"; servers = ( " SERVER_OK
                                    " ); } );\n",
                               &c, err, sizeof(err)),
                          0);
    p = gw_policy_for(&c.routes.v[0], "dev");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        if (gw_policy_allows((void *)p, RL_MCP_RESOURCE, refused[i]))
            fprintf(stderr, "\n  allowed: %s\n", refused[i]);
        CU_ASSERT_FALSE(gw_policy_allows((void *)p, RL_MCP_RESOURCE, refused[i]));
    }
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++) {
        if (!gw_policy_allows((void *)p, RL_MCP_RESOURCE, allowed[i]))
            fprintf(stderr, "\n  refused: %s\n", allowed[i]);
        CU_ASSERT(gw_policy_allows((void *)p, RL_MCP_RESOURCE, allowed[i]));
    }
    /* tools and prompts are names, not paths: dots are theirs to use */
    CU_ASSERT(gw_policy_allows((void *)p, RL_MCP_PROMPT, ".."));
    unload(&c);
}

static void test_no_policy_matches(void)
{
    struct gw_config c;
    char err[512] = "";

    CU_ASSERT_EQUAL_FATAL(
        load(BASE "tunnels = ( { name = \"corp\"; servers = ( { name = \"crm\"; url = "
                  "\"http://h/\"; credential = \"c\"; policy = ( { principals = [\"dev\"]; "
                  "tools = [\"*\"]; } ); } ); } );\n",
             &c, err, sizeof(err)),
        0);
    CU_ASSERT_PTR_NOT_NULL(gw_policy_for(&c.routes.v[0], "dev"));
    CU_ASSERT_PTR_NULL(gw_policy_for(&c.routes.v[0], "dev2"));
    CU_ASSERT_PTR_NULL(gw_policy_for(&c.routes.v[0], "team/dev"));
    unload(&c);
}

static void test_errors(void)
{
    expect_error(BASE "tunnels = ( { name = \"corp\"; servers = ( { name = \"crm\"; url = "
                      "\"http://h/\"; credential = \"c\"; colour = \"red\"; } ); } );\n",
                 "gw.conf:3: tunnels[0].servers[0].colour: unknown key in a server entry");
    expect_error(BASE "tunnels = ( { name = \"corp\"; servers = ( { name = \"crm\"; url = "
                      "\"ftp://h/\"; credential = \"c\"; } ); } );\n",
                 "must be http://host");
    expect_error(BASE "tunnels = ( { name = \"corp\"; servers = ( { name = \"crm\"; url = "
                      "\"http://user@h/\"; credential = \"c\"; } ); } );\n",
                 "must be http://host");
    expect_error(BASE "tunnels = ( { name = \"corp\"; servers = ( { name = \"crm\"; url = "
                      "\"http://h/\"; credential = \"c\"; allow = [\"10.0.0.0/33\"]; } ); } );\n",
                 "must be an address range");
    expect_error(BASE "tunnels = ( { name = \"corp\"; servers = ( { name = \"crm\"; url = "
                      "\"http://h/\"; credential = \"a//b\"; } ); } );\n",
                 "must be a credential name");
    expect_error(BASE "tunnels = ( { name = \"corp\"; servers = ( { name = \"crm\"; url = "
                      "\"http://h/\"; } ); } );\n",
                 "entry needs credential");
    expect_error(BASE "tunnels = ( { name = \"co rp\"; servers = ( { name = \"crm\"; url = "
                      "\"http://h/\"; credential = \"c\"; } ); } );\n",
                 "must be 1-64 characters");
    expect_error(BASE "tunnels = ( { name = \"corp\"; servers = ( { name = \"crm\"; url = "
                      "\"http://h/\"; credential = \"c\"; }, { name = \"crm\"; url = "
                      "\"http://g/\"; credential = \"d\"; } ); } );\n",
                 "route corp/crm is configured twice");
    expect_error(BASE "tunnels = ( { name = \"corp\"; servers = ( ); } );\n",
                 "servers must be a non-empty list");
    expect_error(BASE "tunnels = ( { name = \"corp\"; servers = ( { name = \"crm\"; url = "
                      "\"http://h/\"; credential = \"c\"; timeout = 0; } ); } );\n",
                 "must be between");
    expect_error(BASE "tunnels = ( { name = \"corp\"; servers = ( { name = \"crm\"; url = "
                      "\"http://h/\"; credential = \"c\"; policy = ( { tools = [\"*\"]; } ); "
                      "} ); } );\n",
                 "policy entry needs principals");
    expect_error(BASE "tunnels = ( { name = \"corp\"; servers = ( { name = \"crm\"; url = "
                      "\"http://h/\"; credential = \"c\"; policy = ( { principals = [\"\"]; } );"
                      " } ); } );\n",
                 "must be a non-empty string");
    expect_error("relays = [\"r:1\"];\nrelay_keys = ( { issuer = \"spiffe://airlock/intake/i\"; "
                 "public_key_file = \"/k\"; } );\n",
                 "must be a relay SPIFFE id");
    expect_error(
        "relays = [\"r:1\"];\nrelay_keys = ( { issuer = \"spiffe://airlock/relay/r\"; } );\n",
        "entry needs public_key_file");
    expect_error(BASE "connections = 0;\n", "connections");
    expect_error(BASE "audit = { batch_max = 1001; };\n", "audit.batch_max");
}

static void test_checks(void)
{
    struct gw_config c;
    char err[512] = "";
    const char *routes = "tunnels = ( { name = \"corp\"; servers = ( { name = \"crm\"; url = "
                         "\"http://h/\"; credential = \"c\"; } ); } );\n";
    char text[2048];

    snprintf(text, sizeof(text), "%s%s", BASE, routes);
    CU_ASSERT_EQUAL_FATAL(load(text, &c, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(gw_config_check(&c, err, sizeof(err)), 0);
    c.reconnect_min_s = 60;
    CU_ASSERT_EQUAL(gw_config_check(&c, err, sizeof(err)), AL_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "reconnect_min"));
    c.reconnect_min_s = 0.2;
    c.common.insecure = 1;
    CU_ASSERT_EQUAL(gw_config_check(&c, err, sizeof(err)), AL_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "insecure"));
    unload(&c);

    snprintf(text, sizeof(text), "relays = [\"no-port\"];\n%s", routes);
    CU_ASSERT_EQUAL_FATAL(load(text, &c, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(gw_config_check(&c, err, sizeof(err)), AL_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "relays[0]"));
    unload(&c);

    CU_ASSERT_EQUAL_FATAL(load(BASE, &c, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(gw_config_check(&c, err, sizeof(err)), AL_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "tunnels"));
    unload(&c);

    snprintf(text, sizeof(text), "relays = [\"r:1\"];\n%s", routes);
    CU_ASSERT_EQUAL_FATAL(load(text, &c, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(gw_config_check(&c, err, sizeof(err)), AL_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "relay_keys"));
    unload(&c);
}

static void test_names(void)
{
    CU_ASSERT(gw_name_valid("corp", 4));
    CU_ASSERT(gw_name_valid("a.b_c-D9", 8));
    CU_ASSERT_FALSE(gw_name_valid("", 0));
    CU_ASSERT_FALSE(gw_name_valid("a/b", 3));
    CU_ASSERT_FALSE(gw_name_valid("a b", 3));
    char big[66];
    memset(big, 'a', 65);
    big[65] = 0;
    CU_ASSERT(gw_name_valid(big, 64));
    CU_ASSERT_FALSE(gw_name_valid(big, 65));
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("gateway config", NULL, NULL);
    CU_add_test(s, "defaults and routes", test_defaults_and_routes);
    CU_add_test(s, "policy: first matching entry, globs per kind", test_policy);
    CU_add_test(s, "policy: resource URIs climbing out of their glob are refused",
                test_policy_resource_climbing);
    CU_add_test(s, "policy: unknown principal gets nothing", test_no_policy_matches);
    CU_add_test(s, "errors name file, line and key", test_errors);
    CU_add_test(s, "checks beyond the schema", test_checks);
    CU_add_test(s, "names", test_names);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
