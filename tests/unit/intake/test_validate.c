/* Unit tests for intake's configuration (pools, principals, checks) and for
 * JobSpec validation (validate.h): each rule names its field, effective limits
 * and attempts, canonical form, host and destination syntax. */
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "al_grpc.h"
#include "inconfig.h"
#include "validate.h"

static const char config_text[] =
    "data_dir = \"/nonexistent\";\n"
    "pools = ( { name = \"default\"; executors = [\"spiffe://airlock/executor/*\"]; },\n"
    "  { name = \"small\"; executors = [\"spiffe://airlock/executor/e-1\"];\n"
    "    defaults = { wall_time = \"5s\"; memory = \"64MiB\"; pids = 32; };\n"
    "    max = { wall_time = 10000; memory = \"128MiB\"; pids = 50; }; } );\n"
    "principals = ( { principal = \"mtls/x\"; identities = [\"spiffe://airlock/client/x-*\"];\n"
    "    pools = [\"default\"]; max_queued = 7; },\n"
    "  { principal = \"acme/**\"; pools = [\"*\"]; max_concurrent = 2; },\n"
    "  { principal = \"nopool\"; pools = []; } );\n";

static struct in_config cfg;
static const struct al_cfg_field *fields;
static size_t nfields;

static int load(const char *text, struct in_config *c, char *err, size_t n)
{
    struct al_config_opts o = {.text = text, .text_name = "t.cfg"};
    char *argv[] = {"test", NULL};
    memset(c, 0, sizeof(*c));
    int rc = al_config_load(fields, nfields, c, 1, argv, &o, err, n);
    c->common.max_message_size = 4 << 20; /* a common key, loaded by al_service */
    if (rc == 0)
        rc = in_config_check(c, err, n);
    return rc;
}

static void test_config(void)
{
    const struct in_pool *p = in_config_pool(&cfg, "small");
    CU_ASSERT_EQUAL(cfg.pools.n, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(p->def[IN_LIM_WALL_TIME], 5000);
    CU_ASSERT_EQUAL(p->def[IN_LIM_MEMORY], 64 << 20);
    CU_ASSERT_EQUAL(p->max[IN_LIM_WALL_TIME], 10000);
    CU_ASSERT_EQUAL(p->def[IN_LIM_CPU_TIME], 600000); /* built-in default */
    CU_ASSERT_TRUE(in_config_pool_serves(p, "spiffe://airlock/executor/e-1"));
    CU_ASSERT_FALSE(in_config_pool_serves(p, "spiffe://airlock/executor/e-2"));
    CU_ASSERT_PTR_NULL(in_config_pool(&cfg, "nope"));
    /* principals: first match wins; identities map mTLS callers */
    const struct in_principal_rule *r = in_config_principal(&cfg, "acme/team/bot");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_TRUE(in_config_pool_allowed(r, "small"));
    CU_ASSERT_EQUAL(in_config_max_concurrent(&cfg, r), 2);
    CU_ASSERT_EQUAL(in_config_max_queued(&cfg, r), 10000);
    CU_ASSERT_PTR_NULL(in_config_principal(&cfg, "other"));
    r = in_config_identity(&cfg, "spiffe://airlock/client/x-1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->principal, "mtls/x");
    CU_ASSERT_EQUAL(in_config_max_queued(&cfg, r), 7);
    CU_ASSERT_FALSE(in_config_pool_allowed(r, "small"));
    CU_ASSERT_PTR_NULL(in_config_identity(&cfg, "spiffe://airlock/client/y"));
    CU_ASSERT_FALSE(in_config_pool_allowed(in_config_principal(&cfg, "nopool"), "default"));
}

static void test_config_errors(void)
{
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"data_dir = \"/x\"; pools = ( { name = \"a\"; color = 1; } );", "t.cfg:1: pools[0].color"},
        {"data_dir = \"/x\"; pools = ( { name = \"a\"; defaults = { memory = \"2GiB\"; };\n"
         "max = { memory = \"1GiB\"; }; } );",
         "above max.memory"},
        {"data_dir = \"/x\"; pools = ( { name = \"a\"; }, { name = \"a\"; } );", "defined twice"},
        {"data_dir = \"/x\"; pools = ( { name = \"a b\"; } );", "1-64 characters"},
        {"data_dir = \"/x\"; pools = ();", "at least one pool"},
        {"data_dir = \"/x\"; principals = ( { principal = \"a/*\"; identities = [\"x\"]; } );",
         "no glob"},
        {"data_dir = \"/x\"; principals = ( { pools = [\"a\"]; } );", "needs principal"},
        {"data_dir = \"/x\"; lease = { ttl = \"3s\"; heartbeat_interval = \"2s\"; };",
         "a third of lease.ttl"},
        {"data_dir = \"/x\"; retry = { default_attempts = 5; max_attempts = 2; };",
         "default_attempts"},
        {"data_dir = \"/x\"; grant = { lifetime = \"1m\"; renew_before = \"2m\"; };",
         "renew_before"},
        {"pools = ( { name = \"a\"; } );", "data_dir"},
        {"data_dir = \"/x\"; limits = { file_data = \"4MiB\"; };", "grpc.max_message_size"},
    };
    char err[512];
    struct in_config c;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = load(bad[i].text, &c, err, sizeof(err));
        if (rc == 0 || !strstr(err, bad[i].want))
            printf("\n  case %zu: rc %d err \"%s\", want \"%s\"\n", i, rc, err, bad[i].want);
        CU_ASSERT_NOT_EQUAL(rc, 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, bad[i].want));
        al_config_cleanup(fields, nfields, &c);
    }
}

/* ---- specs ---- */

struct b {
    Airlock__V1__JobSpec spec;
    Airlock__V1__ExecSpec ex;
    Airlock__V1__FileSpec file;
    Airlock__V1__ResourceLimits lim;
    Airlock__V1__NetworkPolicy net;
    Airlock__V1__NetworkDestination dest[2], *destp[2];
    Airlock__V1__CredentialBinding cred[2], *credp[2];
    char *cred_dests[2][2];
    Airlock__V1__ExecSpec__EnvEntry env[3], *envp[3];
    Airlock__V1__JobSpec__LabelsEntry lab[20], *labp[20];
    char *argv[3];
    char labkeys[20][8];
};

static void good(struct b *b)
{
    memset(b, 0, sizeof(*b));
    airlock__v1__job_spec__init(&b->spec);
    airlock__v1__exec_spec__init(&b->ex);
    b->spec.pool = "default";
    b->spec.session_id = "";
    b->spec.kind = AIRLOCK__V1__JOB_KIND__JOB_KIND_EXEC;
    b->argv[0] = "echo";
    b->argv[1] = "hi";
    b->ex.argv = b->argv;
    b->ex.n_argv = 2;
    b->ex.cwd = "";
    b->spec.exec = &b->ex;
    for (int i = 0; i < 3; i++) {
        airlock__v1__exec_spec__env_entry__init(&b->env[i]);
        b->envp[i] = &b->env[i];
    }
    b->env[0].key = "B";
    b->env[0].value = "2";
    b->env[1].key = "A";
    b->env[1].value = "1";
    b->ex.env = b->envp;
    b->ex.n_env = 2;
}

static void with_proxy(struct b *b)
{
    airlock__v1__network_policy__init(&b->net);
    b->net.mode = AIRLOCK__V1__NETWORK_MODE__NETWORK_MODE_PROXY;
    for (int i = 0; i < 2; i++) {
        airlock__v1__network_destination__init(&b->dest[i]);
        b->destp[i] = &b->dest[i];
        airlock__v1__credential_binding__init(&b->cred[i]);
        b->credp[i] = &b->cred[i];
    }
    b->dest[0].host = "api.example.com";
    b->dest[1].host = "*.up.example.com";
    b->dest[1].port = 8443;
    b->net.destinations = b->destp;
    b->net.n_destinations = 2;
    b->spec.network = &b->net;
    b->cred[0].credential = "ci/github";
    b->cred[0].env_var = "GH";
    b->cred_dests[0][0] = "api.example.com";
    b->cred_dests[0][1] = "a.up.example.com:8443";
    b->cred[0].destinations = b->cred_dests[0];
    b->cred[0].n_destinations = 2;
    b->spec.credentials = b->credp;
    b->spec.n_credentials = 1;
}

static int check(const struct b *b, int can_sign, struct in_verr *e)
{
    const struct in_principal_rule *r = in_config_principal(&cfg, "acme/a");
    struct in_validate_ctx x = {&cfg, r, can_sign};
    memset(e, 0, sizeof(*e));
    return in_validate_spec(&x, &b->spec, e);
}

static void expect_bad(const struct b *b, int status, const char *field)
{
    struct in_verr e;
    int rc = check(b, 1, &e);
    if (rc == 0 || e.status != status || strcmp(e.field, field) != 0)
        printf("\n  want %d \"%s\", got rc %d status %d field \"%s\" (%s)\n", status, field, rc,
               e.status, e.field, e.message);
    CU_ASSERT_NOT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(e.status, status);
    CU_ASSERT_STRING_EQUAL(e.field, field);
}

#define IA AL_GRPC_INVALID_ARGUMENT

static void test_exec_rules(void)
{
    struct b b;
    struct in_verr e;
    good(&b);
    CU_ASSERT_EQUAL(check(&b, 1, &e), 0);
    good(&b), b.spec.exec = NULL, expect_bad(&b, IA, "spec.exec");
    good(&b), b.ex.n_argv = 0, expect_bad(&b, IA, "spec.exec.argv");
    good(&b), b.argv[0] = "", expect_bad(&b, IA, "spec.exec.argv[0]");
    good(&b), b.env[0].key = "1A", expect_bad(&b, IA, "spec.exec.env[1A]");
    good(&b), b.env[0].key = "A-B", expect_bad(&b, IA, "spec.exec.env[A-B]");
    good(&b), b.env[0].key = "AIRLOCK_PH", expect_bad(&b, IA, "spec.exec.env[AIRLOCK_PH]");
    good(&b), b.env[0].key = "A", expect_bad(&b, IA, "spec.exec.env[A]"); /* twice */
    good(&b), b.ex.timeout_ms = -1, expect_bad(&b, IA, "spec.exec.timeout_ms");
    static uint8_t big[(1 << 20) + 1];
    good(&b), b.ex.stdin.data = big, b.ex.stdin.len = sizeof(big),
              expect_bad(&b, IA, "spec.exec.stdin");
    static char longarg[300000];
    memset(longarg, 'x', sizeof(longarg) - 1);
    good(&b), b.argv[1] = longarg, expect_bad(&b, IA, "spec.exec");
    good(&b), b.spec.file = &b.file, airlock__v1__file_spec__init(&b.file), b.file.path = "x",
              expect_bad(&b, IA, "spec.file");
    good(&b), b.spec.kind = 0, expect_bad(&b, IA, "spec.kind");
    good(&b), b.spec.kind = 77, expect_bad(&b, IA, "spec.kind");
    good(&b), b.spec.session_id = "bad id", expect_bad(&b, IA, "spec.session_id");
    good(&b), b.spec.session_id = "ok.session-1";
    CU_ASSERT_EQUAL(check(&b, 1, &e), 0);
    good(&b), b.spec.queue_timeout_ms = -1, expect_bad(&b, IA, "spec.queue_timeout_ms");
    good(&b), b.spec.max_attempts = -1, expect_bad(&b, IA, "spec.max_attempts");
}

static void test_pool_rules(void)
{
    struct b b;
    good(&b), b.spec.pool = "", expect_bad(&b, IA, "spec.pool");
    good(&b), b.spec.pool = "a/b", expect_bad(&b, IA, "spec.pool");
    good(&b), b.spec.pool = "nope", expect_bad(&b, AL_GRPC_PERMISSION_DENIED, "spec.pool");
    /* a pool that exists but the principal may not use: the same answer */
    struct in_verr e1, e2;
    struct in_validate_ctx x = {&cfg, in_config_principal(&cfg, "nopool"), 1};
    good(&b);
    CU_ASSERT_NOT_EQUAL(in_validate_spec(&x, &b.spec, &e1), 0);
    b.spec.pool = "nope";
    CU_ASSERT_NOT_EQUAL(in_validate_spec(&x, &b.spec, &e2), 0);
    CU_ASSERT_EQUAL(e1.status, AL_GRPC_PERMISSION_DENIED);
    CU_ASSERT_EQUAL(e1.reason, e2.reason);
    /* no rule at all (principal matches nothing) */
    struct in_validate_ctx none = {&cfg, NULL, 1};
    good(&b);
    CU_ASSERT_NOT_EQUAL(in_validate_spec(&none, &b.spec, &e1), 0);
    CU_ASSERT_EQUAL(e1.status, AL_GRPC_PERMISSION_DENIED);
}

static void test_file_rules(void)
{
    struct b b;
    struct in_verr e;
    good(&b);
    b.spec.exec = NULL;
    airlock__v1__file_spec__init(&b.file);
    b.spec.kind = AIRLOCK__V1__JOB_KIND__JOB_KIND_READ_FILE;
    expect_bad(&b, IA, "spec.file");
    b.spec.file = &b.file;
    b.file.path = "";
    expect_bad(&b, IA, "spec.file.path");
    b.file.path = "/etc/hostname"; /* reads see the image */
    CU_ASSERT_EQUAL(check(&b, 1, &e), 0);
    b.file.data.len = 1;
    b.file.data.data = (uint8_t *)"x";
    expect_bad(&b, IA, "spec.file.data");
    b.file.data.len = 0;
    b.file.max_bytes = -1;
    expect_bad(&b, IA, "spec.file.max_bytes");
    b.file.max_bytes = 0;
    b.file.offset_bytes = -1;
    expect_bad(&b, IA, "spec.file.offset_bytes");
    b.file.offset_bytes = 0;
    b.spec.kind = AIRLOCK__V1__JOB_KIND__JOB_KIND_WRITE_FILE;
    const char *outside[] = {"/etc/x", "../x", "a/../../x", "/workspace/../etc", "/workspacex/a"};
    for (size_t i = 0; i < 5; i++) {
        b.file.path = (char *)outside[i];
        expect_bad(&b, IA, "spec.file.path");
    }
    const char *inside[] = {"x", "a/b/c", "/workspace", "/workspace/a", "./a", "a/./b"};
    for (size_t i = 0; i < 6; i++) {
        b.file.path = (char *)inside[i];
        CU_ASSERT_EQUAL(check(&b, 1, &e), 0);
    }
    b.spec.kind = AIRLOCK__V1__JOB_KIND__JOB_KIND_LIST_DIR;
    b.file.max_entries = -1;
    expect_bad(&b, IA, "spec.file.max_entries");
    b.file.max_entries = 0;
    b.spec.exec = &b.ex;
    expect_bad(&b, IA, "spec.exec");
}

static void test_limits_network_credentials(void)
{
    struct b b;
    struct in_verr e;
    good(&b);
    airlock__v1__resource_limits__init(&b.lim);
    b.spec.limits = &b.lim;
    b.lim.pids = -3;
    expect_bad(&b, IA, "spec.limits.pids");
    good(&b), with_proxy(&b);
    CU_ASSERT_EQUAL(check(&b, 1, &e), 0);
    /* without a signing key the job cannot get its grant: a PROXY job needs
     * one, bindings or not (its proxied requests are audited under it) */
    CU_ASSERT_NOT_EQUAL(check(&b, 0, &e), 0);
    CU_ASSERT_STRING_EQUAL(e.field, "spec.network.mode");
    CU_ASSERT_EQUAL(e.reason, AIRLOCK__V1__ERROR_REASON__ERROR_REASON_UNSUPPORTED);
    b.spec.n_credentials = 0;
    CU_ASSERT_EQUAL(check(&b, 1, &e), 0);
    CU_ASSERT_NOT_EQUAL(check(&b, 0, &e), 0);
    CU_ASSERT_STRING_EQUAL(e.field, "spec.network.mode");
    good(&b);
    CU_ASSERT_EQUAL(check(&b, 0, &e), 0); /* no network: no grant needed */
    good(&b), with_proxy(&b), b.net.mode = AIRLOCK__V1__NETWORK_MODE__NETWORK_MODE_NONE,
                              expect_bad(&b, IA, "spec.network.destinations");
    good(&b), with_proxy(&b), b.net.mode = 9, expect_bad(&b, IA, "spec.network.mode");
    good(&b), with_proxy(&b), b.dest[1].host = "bad host",
                              expect_bad(&b, IA, "spec.network.destinations[1].host");
    good(&b), with_proxy(&b), b.dest[0].port = 65536,
                              expect_bad(&b, IA, "spec.network.destinations[0].port");
    char *m[] = {"Post"};
    good(&b), with_proxy(&b), b.dest[0].methods = m, b.dest[0].n_methods = 1,
                              expect_bad(&b, IA, "spec.network.destinations[0].methods[0]");
    char *pp[] = {"/ok", "no-slash"};
    good(&b), with_proxy(&b), b.dest[0].path_prefixes = pp, b.dest[0].n_path_prefixes = 2,
                              expect_bad(&b, IA, "spec.network.destinations[0].path_prefixes[1]");
    good(&b), with_proxy(&b), b.spec.network = NULL, expect_bad(&b, IA, "spec.credentials");
    good(&b), with_proxy(&b), b.cred[0].credential = "",
                              expect_bad(&b, IA, "spec.credentials[0].credential");
    good(&b), with_proxy(&b), b.cred[0].env_var = "AIRLOCK_X",
                              expect_bad(&b, IA, "spec.credentials[0].env_var");
    good(&b), with_proxy(&b), b.cred[0].env_var = "9X",
                              expect_bad(&b, IA, "spec.credentials[0].env_var");
    good(&b), with_proxy(&b), b.cred[1] = b.cred[0], b.spec.n_credentials = 2,
                              expect_bad(&b, IA, "spec.credentials[1].env_var");
    good(&b), with_proxy(&b), b.cred[0].n_destinations = 0,
                              expect_bad(&b, IA, "spec.credentials[0].destinations");
    good(&b), with_proxy(&b), b.cred_dests[0][1] = "evil.example.net",
                              expect_bad(&b, IA, "spec.credentials[0].destinations[1]");
    good(&b), with_proxy(&b), b.cred_dests[0][0] = "api.example.com:444",
                              expect_bad(&b, IA, "spec.credentials[0].destinations[0]");
    good(&b), with_proxy(&b), b.cred_dests[0][1] = "up.example.com:8443", /* wildcard != apex */
        expect_bad(&b, IA, "spec.credentials[0].destinations[1]");
    good(&b), with_proxy(&b), b.env[0].key = "GH", expect_bad(&b, IA, "spec.exec.env[GH]");
    good(&b), with_proxy(&b), b.spec.kind = AIRLOCK__V1__JOB_KIND__JOB_KIND_LIST_DIR,
                              b.spec.exec = NULL, b.spec.file = &b.file,
                              airlock__v1__file_spec__init(&b.file), b.file.path = ".",
                              expect_bad(&b, IA, "spec.network.mode");
}

static void test_labels(void)
{
    struct b b;
    struct in_verr e;
    good(&b);
    for (int i = 0; i < 20; i++) {
        airlock__v1__job_spec__labels_entry__init(&b.lab[i]);
        snprintf(b.labkeys[i], sizeof(b.labkeys[i]), "k%d", i);
        b.lab[i].key = b.labkeys[i];
        b.lab[i].value = "v";
        b.labp[i] = &b.lab[i];
    }
    b.spec.labels = b.labp;
    b.spec.n_labels = 16;
    CU_ASSERT_EQUAL(check(&b, 1, &e), 0);
    b.spec.n_labels = 17;
    expect_bad(&b, IA, "spec.labels");
    b.spec.n_labels = 2;
    b.lab[1].key = "Bad";
    expect_bad(&b, IA, "spec.labels[Bad]");
    b.lab[1].key = "k0";
    expect_bad(&b, IA, "spec.labels[k0]");
    static char longv[300];
    memset(longv, 'v', sizeof(longv) - 1);
    b.lab[1].key = "k1";
    b.lab[1].value = longv;
    expect_bad(&b, IA, "spec.labels[k1]");
}

static void test_unknown_fields(void)
{
    struct b b;
    uint8_t buf[512], extra[] = {0x98, 0x06, 0x01}; /* field 99, varint 1 */
    good(&b);
    size_t n = airlock__v1__job_spec__pack(&b.spec, buf);
    memcpy(buf + n, extra, sizeof(extra));
    Airlock__V1__JobSpec *s = airlock__v1__job_spec__unpack(NULL, n + sizeof(extra), buf);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct in_validate_ctx x = {&cfg, in_config_principal(&cfg, "acme/a"), 1};
    struct in_verr e;
    CU_ASSERT_NOT_EQUAL(in_validate_spec(&x, s, &e), 0);
    CU_ASSERT_STRING_EQUAL(e.field, "spec");
    airlock__v1__job_spec__free_unpacked(s, NULL);
}

static void test_canonical_and_resolve(void)
{
    struct b b1, b2;
    uint8_t p1[512], p2[512];
    good(&b1);
    good(&b2);
    b2.env[0] = b1.env[1]; /* same entries, other order */
    b2.env[1] = b1.env[0];
    in_spec_canonical(&b1.spec);
    in_spec_canonical(&b2.spec);
    size_t n1 = airlock__v1__job_spec__pack(&b1.spec, p1);
    size_t n2 = airlock__v1__job_spec__pack(&b2.spec, p2);
    CU_ASSERT_EQUAL(n1, n2);
    CU_ASSERT_EQUAL(memcmp(p1, p2, n1), 0);
    CU_ASSERT_STRING_EQUAL(b1.ex.env[0]->key, "A");
    b2.argv[1] = "other";
    n2 = airlock__v1__job_spec__pack(&b2.spec, p2);
    CU_ASSERT_TRUE(n1 != n2 || memcmp(p1, p2, n1) != 0);
    /* effective values */
    struct al_arena a;
    al_arena_init(&a, 0);
    good(&b1);
    b1.spec.pool = "small";
    b1.spec.max_attempts = 99;
    CU_ASSERT_EQUAL(in_spec_resolve(&cfg, in_config_pool(&cfg, "small"), &b1.spec, &a), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b1.spec.limits);
    CU_ASSERT_EQUAL(b1.spec.limits->wall_time_ms, 5000);
    CU_ASSERT_EQUAL(b1.spec.limits->memory_bytes, 64 << 20);
    CU_ASSERT_EQUAL(b1.spec.limits->pids, 32);
    CU_ASSERT_EQUAL(b1.spec.max_attempts, cfg.max_attempts);
    CU_ASSERT_EQUAL(b1.spec.queue_timeout_ms, cfg.queue_timeout_ms);
    good(&b2);
    airlock__v1__resource_limits__init(&b2.lim);
    b2.lim.memory_bytes = 1LL << 30;
    b2.lim.wall_time_ms = 7000;
    b2.spec.limits = &b2.lim;
    b2.spec.queue_timeout_ms = 999999999999LL;
    CU_ASSERT_EQUAL(in_spec_resolve(&cfg, in_config_pool(&cfg, "small"), &b2.spec, &a), 0);
    CU_ASSERT_EQUAL(b2.lim.memory_bytes, 128 << 20); /* lowered to the ceiling */
    CU_ASSERT_EQUAL(b2.lim.wall_time_ms, 7000);      /* narrower than the ceiling: kept */
    CU_ASSERT_EQUAL(b2.spec.max_attempts, cfg.default_attempts);
    CU_ASSERT_EQUAL(b2.spec.queue_timeout_ms, cfg.queue_max_timeout_ms);
    al_arena_cleanup(&a);
}

static void test_syntax(void)
{
    CU_ASSERT_TRUE(in_idem_key_valid("order 1 / retry"));
    CU_ASSERT_FALSE(in_idem_key_valid(""));
    CU_ASSERT_FALSE(in_idem_key_valid("tab\there"));
    CU_ASSERT_TRUE(in_session_valid("s-1.x_y"));
    CU_ASSERT_FALSE(in_session_valid("s/1"));
}

int main(void)
{
    CU_pSuite s;
    unsigned failed;
    char err[512];

    fields = in_config_fields(&nfields);
    if (load(config_text, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "config: %s\n", err);
        return 1;
    }
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("intake_validate", NULL, NULL);
    CU_add_test(s, "config: pools, principals, identities", test_config);
    CU_add_test(s, "config: errors name the key", test_config_errors);
    CU_add_test(s, "exec rules", test_exec_rules);
    CU_add_test(s, "pool rules", test_pool_rules);
    CU_add_test(s, "file operation rules", test_file_rules);
    CU_add_test(s, "limits, network and credential rules", test_limits_network_credentials);
    CU_add_test(s, "label rules", test_labels);
    CU_add_test(s, "unknown fields refused", test_unknown_fields);
    CU_add_test(s, "canonical form and effective values", test_canonical_and_resolve);
    CU_add_test(s, "idempotency key and session syntax", test_syntax);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    al_config_cleanup(fields, nfields, &cfg);
    return failed ? 1 : 0;
}
