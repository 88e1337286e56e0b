/* Unit tests for airlock-relay's configuration (relay_config.h), loaded the
 * way the binary loads it (al_service_load_config + rl_config_validate):
 * defaults, every key of tunnel.md, and errors that name where the bad value
 * came from - file:line for the file, "env AIRLOCK_X" and "flag --x"
 * otherwise. */
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "al_service.h"
#include "relay_config.h"

static char base[64];
static char cfg_path[128];

#define TLS                                                                                        \
    "tls = { cert_file = \"/x/relay.crt\"; key_file = \"/x/relay.key\"; ca_file = \"/x/ca.crt\"; " \
    "};\n"
#define TUNNELS                                                                                    \
    "tunnels = ( { name = \"corp\"; gateways = [\"spiffe://airlock/gateway/gw-0\"]; } );\n"
#define GRANT  "grant = { key_file = \"/x/relay-0.key\"; };\n"
#define AGENTS "agents = { keys_file = \"/x/keys\"; };\n"

/* Loads text as the relay does; err gets what the process would print
 * (without the "airlock-relay: " prefix). Returns 0 or nonzero. */
static int load(const char *text, struct rl_config *c, char *err, size_t n, int nextra,
                const char *const *extra)
{
    char *argv[16];
    int argc = 0, rc, saved, fd;
    size_t nf;
    const struct al_cfg_field *fields = rl_config_fields(&nf);
    char cap[128];
    FILE *f = fopen(cfg_path, "w");

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    fclose(f);
    memset(c, 0, sizeof(*c));
    argv[argc++] = (char *)"airlock-relay";
    argv[argc++] = (char *)"--config";
    argv[argc++] = cfg_path;
    for (int i = 0; i < nextra; i++)
        argv[argc++] = (char *)extra[i];
    argv[argc] = NULL;
    /* al_service prints its errors: catch them */
    snprintf(cap, sizeof(cap), "%s/stderr", base);
    fflush(stderr);
    saved = dup(2);
    fd = open(cap, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    close(fd);
    rc = al_service_load_config("airlock-relay", "test", c, offsetof(struct rl_config, common),
                                fields, nf, argc, argv);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    err[0] = '\0';
    if (rc != 0) {
        f = fopen(cap, "r");
        size_t got = f ? fread(err, 1, n - 1, f) : 0;
        if (f)
            fclose(f);
        err[got] = '\0';
        err[strcspn(err, "\n")] = '\0';
        if (strncmp(err, "airlock-relay: ", 15) == 0)
            memmove(err, err + 15, strlen(err + 15) + 1);
        memset(c, 0, sizeof(*c)); /* freed by al_service_load_config */
        return rc;
    }
    struct rl_config_src src = {argc, argv, cfg_path};
    return rl_config_validate(c, &src, err, n);
}

static void unload(struct rl_config *c)
{
    size_t nf;
    const struct al_cfg_field *fields = rl_config_fields(&nf);
    al_service_free_config(c, offsetof(struct rl_config, common), fields, nf);
}

/* Expects an error starting with prefix (after substituting the file path
 * for "@") and containing part. */
static void expect(const char *text, const char *prefix, const char *part)
{
    struct rl_config c;
    char err[1024], want[512];
    int rc = load(text, &c, err, sizeof(err), 0, NULL);
    const char *at = strchr(prefix, '@');

    if (at)
        snprintf(want, sizeof(want), "%.*s%s%s", (int)(at - prefix), prefix, cfg_path, at + 1);
    else
        snprintf(want, sizeof(want), "%s", prefix);
    CU_ASSERT_NOT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(strncmp(err, want, strlen(want)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, part));
    if (rc == 0 || strncmp(err, want, strlen(want)) != 0 || !strstr(err, part))
        fprintf(stderr, "\n  got \"%s\"\n  want \"%s...%s\"\n", err, want, part);
    unload(&c);
}

static void test_full_and_defaults(void)
{
    struct rl_config c;
    char err[1024];
    const char *text =
        TLS "relay_id = \"relay-0\";\n"
            "agents = {\n"
            "  listen = \"127.0.0.1:17420\";\n"
            "  insecure = true;\n"
            "  cert_file = \"/x/agents.crt\"; key_file = \"/x/agents.key\";\n"
            "  keys_file = \"/x/relay-keys\";\n"
            "  allowed_origins = [\"https://app.example.com\", \"http://localhost:6274\"];\n"
            "  max_head = 32768; max_body = \"8MiB\";\n"
            "  header_timeout = 5.0; body_timeout = 7.5; idle_timeout = 90.0;\n"
            "  max_connections = 50;\n"
            "};\n"
            "tunnel = { listen = \"[::1]:17421\"; heartbeat_interval = 2.0; };\n"
            "tunnels = ( { name = \"corp\"; gateways = [\"spiffe://airlock/gateway/a\", "
            "\"spiffe://airlock/gateway/b\"]; },\n"
            "            { name = \"lab.2\"; gateways = [\"spiffe://airlock/gateway/lab\"]; } );\n"
            "grant = { key_file = \"/x/relay-0.key\"; ttl = 45.0; };\n";

    CU_ASSERT_EQUAL_FATAL(load(text, &c, err, sizeof(err), 0, NULL), 0);
    CU_ASSERT_STRING_EQUAL(c.relay_id, "relay-0");
    CU_ASSERT_STRING_EQUAL(c.agents_listen, "127.0.0.1:17420");
    CU_ASSERT_EQUAL(c.agents_insecure, 1);
    CU_ASSERT_STRING_EQUAL(c.agents_cert_file, "/x/agents.crt");
    CU_ASSERT_STRING_EQUAL(c.agents_key_file, "/x/agents.key");
    CU_ASSERT_STRING_EQUAL(c.agents_keys_file, "/x/relay-keys");
    CU_ASSERT_STRING_EQUAL(c.agents_allowed_origins[0], "https://app.example.com");
    CU_ASSERT_STRING_EQUAL(c.agents_allowed_origins[1], "http://localhost:6274");
    CU_ASSERT_PTR_NULL(c.agents_allowed_origins[2]);
    CU_ASSERT_EQUAL(c.agents_max_head, 32768);
    CU_ASSERT_EQUAL(c.agents_max_body, 8 * 1024 * 1024);
    CU_ASSERT_DOUBLE_EQUAL(c.agents_header_timeout, 5.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(c.agents_body_timeout, 7.5, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(c.agents_idle_timeout, 90.0, 1e-9);
    CU_ASSERT_EQUAL(c.agents_max_connections, 50);
    CU_ASSERT_STRING_EQUAL(c.tunnel_listen, "[::1]:17421");
    CU_ASSERT_DOUBLE_EQUAL(c.tunnel_heartbeat_interval, 2.0, 1e-9);
    CU_ASSERT_EQUAL_FATAL(c.tunnels.n, 2);
    CU_ASSERT_STRING_EQUAL(c.tunnels.v[0].name, "corp");
    CU_ASSERT_EQUAL(c.tunnels.v[0].ngateways, 2);
    CU_ASSERT_STRING_EQUAL(c.tunnels.v[0].gateways[1], "spiffe://airlock/gateway/b");
    CU_ASSERT_PTR_NULL(c.tunnels.v[0].gateways[2]);
    CU_ASSERT_STRING_EQUAL(c.tunnels.v[1].name, "lab.2");
    CU_ASSERT_STRING_EQUAL(c.grant_key_file, "/x/relay-0.key");
    CU_ASSERT_DOUBLE_EQUAL(c.grant_ttl, 45.0, 1e-9);
    unload(&c);

    /* defaults (tunnel.md), relay_id from the host name */
    CU_ASSERT_EQUAL_FATAL(load(TLS AGENTS TUNNELS GRANT, &c, err, sizeof(err), 0, NULL), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c.relay_id);
    CU_ASSERT_TRUE(strlen(c.relay_id) > 0 && strchr(c.relay_id, '.') == NULL);
    CU_ASSERT_STRING_EQUAL(c.agents_listen, "127.0.0.1:7420");
    CU_ASSERT_EQUAL(c.agents_insecure, 0);
    CU_ASSERT_PTR_NULL(c.agents_cert_file);
    CU_ASSERT_TRUE(!c.agents_allowed_origins || !c.agents_allowed_origins[0]);
    CU_ASSERT_EQUAL(c.agents_max_head, 16384);
    CU_ASSERT_EQUAL(c.agents_max_body, 4194304);
    CU_ASSERT_DOUBLE_EQUAL(c.agents_header_timeout, 10.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(c.agents_body_timeout, 30.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(c.agents_idle_timeout, 60.0, 1e-9);
    CU_ASSERT_EQUAL(c.agents_max_connections, 10000);
    CU_ASSERT_STRING_EQUAL(c.tunnel_listen, "127.0.0.1:7421");
    CU_ASSERT_DOUBLE_EQUAL(c.tunnel_heartbeat_interval, 10.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(c.grant_ttl, 60.0, 1e-9);
    unload(&c);
}

static void test_errors_in_file(void)
{
    /* custom tunnels parser: file:line and the setting's path */
    expect(TLS AGENTS GRANT "tunnels = (\n { name = \"corp\";\n   gatways = [\"x\"]; } );\n",
           "@:6: ", "unknown key in a tunnels entry");
    expect(TLS AGENTS GRANT
           "tunnels = ( { name = \"corp\"; gateways = [\"spiffe://airlock/gw/a\"]; "
           "},\n  { name = \"corp\"; gateways = [\"spiffe://airlock/gw/b\"]; } );\n",
           "@:5: ", "configured twice");
    expect(TLS AGENTS GRANT
           "tunnels = ( { name = \"co rp\"; gateways = [\"spiffe://a/b/c\"]; } );\n",
           "@:4: ", "[A-Za-z0-9._-]");
    expect(TLS AGENTS GRANT "tunnels = ( { name = \"corp\";\n gateways = []; } );\n",
           "@:5: ", "is empty");
    expect(TLS AGENTS GRANT "tunnels = ( { name = \"corp\"; gateways = [\"gateway-0\"]; } );\n",
           "@:4: ", "spiffe://");
    expect(TLS AGENTS GRANT "tunnels = ( { gateways = [\"spiffe://a/b/c\"]; } );\n",
           "@:4: ", "needs a name");
    expect(TLS AGENTS GRANT "tunnels = { name = \"corp\"; };\n", "@:4: ", "list of groups");
    /* checks across fields, with the line of the offending value */
    expect(TLS TUNNELS GRANT
           "agents = { keys_file = \"/x/k\";\n allowed_origins = [\"https://ok.example\",\n"
           "   \"https://bad.example/\"]; };\n",
           "@:6: agents.allowed_origins[1]: ", "no path");
    expect(TLS TUNNELS GRANT "agents = { keys_file = \"/x/k\";\n cert_file = \"/x/a.crt\"; };\n",
           "@:5: agents.cert_file: ", "set both or neither");
    expect(TLS TUNNELS GRANT "agents = { keys_file = \"/x/k\";\n listen = \"nowhere:7420\"; };\n",
           "@:5: agents.listen: ", "numeric host:port");
    expect(TLS AGENTS TUNNELS GRANT "tunnel = {\n listen = \"1.2.3.4\"; };\n",
           "@:6: tunnel.listen: ", "numeric host:port");
    expect(TLS AGENTS TUNNELS GRANT "relay_id = \"relay 0\";\n",
           "@:5: relay_id: ", "[A-Za-z0-9._-]");
    expect(TLS AGENTS GRANT "tunnels = ();\n", "@:4: tunnels: ", "at least one tunnel");
    expect(TLS AGENTS GRANT, "tunnels: ", "at least one tunnel");
    /* al_config's own checks: range, required, unknown keys */
    expect(TLS TUNNELS GRANT "agents = { keys_file = \"/x/k\";\n header_timeout = 0.0; };\n",
           "@:5: agents.header_timeout: ", "out of range");
    expect(TLS AGENTS TUNNELS GRANT "tunnel = { heartbeat_interval = 61.0; };\n",
           "@:5: tunnel.heartbeat_interval: ", "out of range");
    expect(TLS TUNNELS GRANT, "agents.keys_file: ", "required");
    expect(TLS AGENTS TUNNELS, "grant.key_file: ", "required");
    expect(TLS AGENTS TUNNELS GRANT "agents2 = 1;\n", "@:5: ", "unknown");
    /* the tunnel listener is always mutual TLS: tls.* stay required */
    expect("insecure = true;\n" AGENTS TUNNELS GRANT, "tls.cert_file: ", "mutual TLS");
    expect(
        "insecure = true;\ntls = { cert_file = \"/x/c\"; key_file = \"/x/k\"; };\n" AGENTS TUNNELS
            GRANT,
        "tls.ca_file: ", "required");
}

static void test_errors_from_env_and_flags(void)
{
    struct rl_config c;
    char err[1024];
    const char *flag[] = {"--relay-id=bad id"};
    const char *ok_flag[] = {"--agents.max_connections=7"};

    setenv("AIRLOCK_RELAY_ID", "bad/id", 1);
    CU_ASSERT_NOT_EQUAL(load(TLS AGENTS TUNNELS GRANT, &c, err, sizeof(err), 0, NULL), 0);
    CU_ASSERT_EQUAL(strncmp(err, "env AIRLOCK_RELAY_ID: relay_id: ", 32), 0);
    unload(&c);
    /* the flag wins over the environment, and is named */
    CU_ASSERT_NOT_EQUAL(load(TLS AGENTS TUNNELS GRANT, &c, err, sizeof(err), 1, flag), 0);
    CU_ASSERT_EQUAL(strncmp(err, "flag --relay_id: relay_id: ", 27), 0);
    unload(&c);
    unsetenv("AIRLOCK_RELAY_ID");
    CU_ASSERT_EQUAL(load(TLS AGENTS TUNNELS GRANT, &c, err, sizeof(err), 1, ok_flag), 0);
    CU_ASSERT_EQUAL(c.agents_max_connections, 7);
    unload(&c);
}

int main(void)
{
    CU_pSuite s;
    unsigned failed;

    snprintf(base, sizeof(base), "/tmp/relay-config-%d", (int)getpid());
    if (mkdir(base, 0700) < 0)
        return 1;
    snprintf(cfg_path, sizeof(cfg_path), "%s/relay.conf", base);
    unsetenv("AIRLOCK_CONFIG");
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("relay_config", NULL, NULL);
    CU_add_test(s, "every key, and the defaults", test_full_and_defaults);
    CU_add_test(s, "errors with file:line: key: reason", test_errors_in_file);
    CU_add_test(s, "errors named by env and flag", test_errors_from_env_and_flags);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    if (failed == 0) {
        char cmd[96];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
        if (system(cmd) != 0)
            return 1;
    }
    return failed ? 1 : 0;
}
