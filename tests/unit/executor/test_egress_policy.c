/*
 * Unit tests for the executor's egress configuration and policy:
 * egress.pools and egress.resolve parsing (every rule with its file:line:
 * bad CIDR, special ranges, bad host, port range, duplicate pool, unknown
 * keys, methods and path prefixes, canonical hosts), the cross-field check,
 * the ceiling check of jobs (host and wildcard subsets, ports, methods and
 * path prefixes only narrowing, a pool without a ceiling), binding checks
 * (wildcards, destinations outside the job, reserved variables), the job's
 * own proxy variables, placeholders and the proxy environment.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "egress_policy.h"
#include "exconfig.h"

#define PROXY AIRLOCK__V1__NETWORK_MODE__NETWORK_MODE_PROXY

static int load(const char *text, struct ex_config *c, char *err, size_t errlen)
{
    size_t nf;
    const struct al_cfg_field *f = ex_config_fields(&nf);
    struct al_config_opts o = {.text = text, .text_name = "t.cfg"};
    char *argv[] = {"x", NULL};

    memset(c, 0, sizeof(*c));
    return al_config_load(f, nf, c, 1, argv, &o, err, errlen);
}

static void unload(struct ex_config *c)
{
    size_t nf;
    const struct al_cfg_field *f = ex_config_fields(&nf);
    al_config_cleanup(f, nf, c);
}

static const char *good_cfg =
    "egress = { enabled = true; proxy_port = 3130;\n"
    "  resolve = [\"Upstream.Test=10.213.7.2\", \"v6.test=FD00:0::1\"];\n"
    "  limits = { connections = 8; bytes = \"1MiB\"; requests_per_second = 5; };\n"
    "  pools = (\n"
    "    { name = \"ci\"; destinations = (\n"
    "        { host = \"API.Example.com\"; },\n"
    "        { host = \"*.corp.example\"; port = 8443; methods = [\"GET\", \"POST\"];\n"
    "          path_prefixes = [\"/v1/\", \"/health\"]; allow_cidrs = [\"10.20.0.0/16\"]; },\n"
    "        { host = \"0:0:0:0:0:ffff:a00:1\"; port = 80; allow_http = true; }\n"
    "    ); },\n"
    "    { name = \"empty\"; }\n"
    "  );\n"
    "};\n"
    "credstore = { addr = \"127.0.0.1:7410\"; };\n";

static void test_config(void)
{
    struct ex_config c;
    char err[512] = "";

    CU_ASSERT_EQUAL_FATAL(load(good_cfg, &c, err, sizeof(err)), 0);
    if (err[0])
        printf("\n%s\n", err);
    CU_ASSERT_EQUAL(c.egress_enabled, 1);
    CU_ASSERT_EQUAL(c.egress_port, 3130);
    CU_ASSERT_EQUAL(c.egress_uid, 65534);
    CU_ASSERT_EQUAL(c.egress_max_connections, 8);
    CU_ASSERT_EQUAL(c.egress_max_bytes, 1 << 20);
    CU_ASSERT_EQUAL(c.egress_rps, 5);
    CU_ASSERT_EQUAL_FATAL(c.egress_resolve.n, 2);
    CU_ASSERT_STRING_EQUAL(c.egress_resolve.v[0], "upstream.test=10.213.7.2");
    CU_ASSERT_STRING_EQUAL(c.egress_resolve.v[1], "v6.test=fd00::1");
    CU_ASSERT_EQUAL_FATAL(c.egress_pools.n, 2);
    const struct ex_egress_pool *p = ex_config_egress_pool(&c, "ci");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL_FATAL(p->n_dests, 3);
    CU_ASSERT_STRING_EQUAL(p->dests[0].host, "api.example.com");
    CU_ASSERT_EQUAL(p->dests[0].port, 443);
    CU_ASSERT_EQUAL(p->dests[1].n_methods, 2);
    CU_ASSERT_EQUAL(p->dests[1].n_path_prefixes, 2);
    CU_ASSERT_STRING_EQUAL(p->dests[1].allow_cidrs[0], "10.20.0.0/16");
    CU_ASSERT_STRING_EQUAL(p->dests[2].host, "::ffff:10.0.0.1");
    CU_ASSERT_TRUE(p->dests[2].allow_http);
    CU_ASSERT_PTR_NOT_NULL(ex_config_egress_pool(&c, "empty"));
    CU_ASSERT_PTR_NULL(ex_config_egress_pool(&c, "nope"));
    CU_ASSERT_EQUAL(ex_config_check(&c, err, sizeof(err)), 0);
    unload(&c);

    /* egress.enabled needs credstore */
    CU_ASSERT_EQUAL_FATAL(load("egress = { enabled = true; };", &c, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(ex_config_check(&c, err, sizeof(err)), AL_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "credstore.addr"));
    unload(&c);
    CU_ASSERT_EQUAL_FATAL(load("", &c, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(ex_config_check(&c, err, sizeof(err)), 0); /* disabled by default */
    CU_ASSERT_EQUAL(c.egress_enabled, 0);
    CU_ASSERT_EQUAL(c.egress_pools.n, 0);
    CU_ASSERT_EQUAL(c.sandbox_id_base, 1000000000);
    unload(&c);

    /* a pod's 65536 ids (hostUsers: false): the jobs' ids inside them, and
     * never the proxy's */
    CU_ASSERT_EQUAL_FATAL(load("sandbox = { id_base = 20000; uid = 1000; };\n"
                               "egress = { enabled = true; uid = 21000; };\n"
                               "credstore = { addr = \"127.0.0.1:7410\"; };",
                               &c, err, sizeof(err)),
                          0);
    CU_ASSERT_EQUAL(c.sandbox_id_base, 20000);
    CU_ASSERT_EQUAL(ex_config_check(&c, err, sizeof(err)), AL_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "egress.uid"));
    c.egress_uid = 65534;
    CU_ASSERT_EQUAL(ex_config_check(&c, err, sizeof(err)), 0);
    unload(&c);
    CU_ASSERT_NOT_EQUAL(load("sandbox = { id_base = 0; };", &c, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "sandbox.id_base"));
    unload(&c);
}

struct bad {
    const char *text, *want;
};

static void test_config_errors(void)
{
    static const struct bad cases[] = {
        {"egress = { pools = ( { name = \"ci\"; destinations = ( { host = \"a.b\"; "
         "allow_cidrs = [\"10.0.0.0/33\"]; } ); } ); };",
         "t.cfg:1: egress.pools[0].destinations[0].allow_cidrs[0]: must be an address range"},
        {"egress = { pools = ( { name = \"ci\"; destinations = ( { host = \"a.b\"; "
         "allow_cidrs = [\"10.1.2.3/8\"]; } ); } ); };",
         "ADDR/PREFIX"},
        {"egress = { pools = ( { name = \"ci\"; destinations = ( { host = \"a.b\"; "
         "allow_cidrs = [\"127.0.0.0/8\"]; } ); } ); };",
         "always denies"},
        {"egress = { pools = ( { name = \"ci\"; destinations = ( { host = \"a.b\"; "
         "allow_cidrs = [\"0.0.0.0/0\"]; } ); } ); };",
         "always denies"},
        {"egress = { pools = ( { name = \"ci\"; destinations = ( { host = \"a.b\"; "
         "allow_cidrs = [\"169.254.169.254/32\"]; } ); } ); };",
         "always denies"},
        {"egress = { pools = ( { name = \"ci\"; destinations = ( { host = \"bad host\"; } ); } "
         "); };",
         "DNS name"},
        {"egress = { pools = ( { name = \"ci\"; destinations = ( { host = \"127.1\"; } ); } ); "
         "};",
         "DNS name"},
        {"egress = { pools = ( { name = \"ci\"; destinations = ( { host = \"a.b\"; port = 0; } "
         "); } ); };",
         "port number"},
        {"egress = { pools = ( { name = \"ci\"; destinations = ( { host = \"a.b\"; port = "
         "65536; } ); } ); };",
         "port number"},
        {"egress = { pools = ( { name = \"ci\"; }, { name = \"ci\"; } ); };", "listed twice"},
        {"egress = { pools = ( { name = \"c i\"; } ); };", "needs name"},
        {"egress = { pools = ( { name = \"ci\"; colour = 1; } ); };", "unknown key in a pool"},
        {"egress = { pools = ( { name = \"ci\"; destinations = ( { host = \"a.b\"; path = "
         "\"/\"; } ); } ); };",
         "unknown key in a destination"},
        {"egress = { pools = ( { name = \"ci\"; destinations = ( { host = \"a.b\"; methods = "
         "[\"get\"]; } ); } ); };",
         "HTTP method"},
        {"egress = { pools = ( { name = \"ci\"; destinations = ( { host = \"a.b\"; "
         "path_prefixes = [\"v1\"]; } ); } ); };",
         "path prefix"},
        {"egress = { pools = ( { name = \"ci\"; destinations = ( { port = 443; } ); } ); };",
         "needs host"},
        {"egress = { pools = ( { name = \"ci\"; destinations = ( { host = \"a.b\"; methods = "
         "[\"GET\", \"GET\"]; } ); } ); };",
         "listed twice"},
        {"egress = { resolve = [\"a.b\"]; };", "name=address"},
        {"egress = { resolve = [\"a.b=localhost\"]; };", "name=address"},
        {"egress = { resolve = [\"10.0.0.1=10.0.0.2\"]; };", "name=address"},
        {"egress = { resolve = [\"a.b=10.0.0.1\", \"A.B=10.0.0.2\"]; };", "given twice"},
        {"egress = { proxy_port = 0; };", "egress.proxy_port"},
        {"egress = { uid = 0; };", "egress.uid"},
    };
    char err[512];
    struct ex_config c;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = 0;
        int rc = load(cases[i].text, &c, err, sizeof(err));
        if (rc == 0 || !strstr(err, cases[i].want))
            printf("\n  case %zu: rc %d err \"%s\" (want \"%s\")\n", i, rc, err, cases[i].want);
        CU_ASSERT_NOT_EQUAL(rc, 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, cases[i].want));
        unload(&c);
    }
}

/* ---------- jobs against a ceiling ---------- */

struct job {
    Airlock__V1__JobSpec spec;
    Airlock__V1__ExecSpec ex;
    Airlock__V1__NetworkPolicy net;
    Airlock__V1__NetworkDestination d[4], *dp[4];
    Airlock__V1__CredentialBinding b[2], *bp[2];
    char *bd[2][2];
    Airlock__V1__ExecSpec__EnvEntry env, *envp;
};

static void job_init(struct job *j)
{
    memset(j, 0, sizeof(*j));
    airlock__v1__job_spec__init(&j->spec);
    airlock__v1__exec_spec__init(&j->ex);
    airlock__v1__network_policy__init(&j->net);
    j->spec.pool = "ci";
    j->spec.exec = &j->ex;
    j->spec.network = &j->net;
    j->net.mode = PROXY;
    for (int i = 0; i < 4; i++) {
        airlock__v1__network_destination__init(&j->d[i]);
        j->dp[i] = &j->d[i];
    }
    j->net.destinations = j->dp;
    for (int i = 0; i < 2; i++) {
        airlock__v1__credential_binding__init(&j->b[i]);
        j->bp[i] = &j->b[i];
        j->b[i].destinations = j->bd[i];
    }
    j->spec.credentials = j->bp;
    airlock__v1__exec_spec__env_entry__init(&j->env);
    j->envp = &j->env;
}

static struct ex_policy_denial last;

static int chk(const struct ex_config *c, struct job *j, char *why, size_t n)
{
    why[0] = 0;
    return ex_policy_check(ex_config_egress_pool(c, j->spec.pool), j->spec.pool, &j->spec, why, n,
                           &last);
}

static void test_ceiling(void)
{
    struct ex_config c;
    struct job j;
    char err[512], why[512];
    char *get[] = {"GET"}, *put[] = {"PUT"}, *v1x[] = {"/v1/things"}, *other[] = {"/admin"};

    CU_ASSERT_EQUAL_FATAL(load(good_cfg, &c, err, sizeof(err)), 0);
    /* exact host, default port */
    job_init(&j), j.d[0].host = "api.example.com", j.net.n_destinations = 1;
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), 0);
    j.d[0].host = "API.EXAMPLE.COM";
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), 0);
    /* outside: another host, another port, the apex of a wildcard */
    j.d[0].host = "api.evil.com";
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "api.evil.com:443 is outside pool \"ci\""));
    j.d[0].host = "api.example.com", j.d[0].port = 8443;
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "api.example.com:8443"));
    job_init(&j), j.d[0].host = "corp.example", j.d[0].port = 8443, j.net.n_destinations = 1;
    j.d[0].methods = get, j.d[0].n_methods = 1, j.d[0].path_prefixes = v1x;
    j.d[0].n_path_prefixes = 1;
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    /* inside the wildcard, narrowing methods and paths */
    j.d[0].host = "git.corp.example";
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), 0);
    j.d[0].host = "*.eu.corp.example";
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), 0);
    j.d[0].host = "git.corp.example.evil.net";
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    j.d[0].host = "*.corp.example"; /* the same wildcard */
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), 0);
    /* widening methods or paths (or leaving them open) is more */
    j.d[0].host = "git.corp.example", j.d[0].methods = put;
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "more methods or paths"));
    j.d[0].methods = get, j.d[0].path_prefixes = other;
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    j.d[0].n_path_prefixes = 0;
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    j.d[0].path_prefixes = v1x, j.d[0].n_path_prefixes = 1, j.d[0].n_methods = 0;
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    /* IP literals compare as addresses */
    job_init(&j), j.d[0].host = "::ffff:10.0.0.1", j.d[0].port = 80, j.net.n_destinations = 1;
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), 0);
    j.d[0].host = "0::ffff:a00:1";
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), 0);
    j.d[0].host = "0x7f.1"; /* ambiguous spelling */
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    /* a pool without a ceiling, or with an empty one, allows nothing */
    job_init(&j), j.d[0].host = "api.example.com", j.net.n_destinations = 1;
    j.spec.pool = "empty";
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "no egress ceiling"));
    j.spec.pool = "nope";
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    /* the second destination is the offending one, and is named */
    job_init(&j), j.net.n_destinations = 2, j.d[0].host = "api.example.com";
    j.d[1].host = "metadata.google.internal";
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "metadata.google.internal:443"));
    CU_ASSERT_STRING_EQUAL(last.destination, "metadata.google.internal:443");
    CU_ASSERT_STRING_EQUAL(last.credential, "");
    unload(&c);
}

static void test_bindings_env(void)
{
    struct ex_config c;
    struct job j;
    char err[512], why[512];
    char *get[] = {"GET"}, *v1[] = {"/v1/"};

    CU_ASSERT_EQUAL_FATAL(load(good_cfg, &c, err, sizeof(err)), 0);
    job_init(&j), j.d[0].host = "api.example.com", j.d[1].host = "*.corp.example";
    j.d[1].port = 8443, j.d[1].methods = get, j.d[1].n_methods = 1;
    j.d[1].path_prefixes = v1, j.d[1].n_path_prefixes = 1;
    j.net.n_destinations = 2;
    j.b[0].credential = "github/ci", j.b[0].env_var = "GH_TOKEN";
    j.bd[0][0] = "api.example.com", j.bd[0][1] = "git.corp.example:8443";
    j.b[0].n_destinations = 2, j.spec.n_credentials = 1;
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), 0);
    j.bd[0][1] = "*.corp.example:8443";
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "is a wildcard"));
    j.bd[0][1] = "other.example.com";
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "credential github/ci: destination other.example.com"));
    CU_ASSERT_STRING_EQUAL(last.destination, "other.example.com");
    CU_ASSERT_STRING_EQUAL(last.credential, "github/ci");
    j.bd[0][1] = "git.corp.example:8443", j.b[0].env_var = "HTTPS_PROXY";
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "reserved"));
    j.b[0].env_var = "AIRLOCK_X";
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    j.b[0].env_var = "GH_TOKEN";
    /* the job's own proxy variables */
    j.env.key = "HTTP_PROXY", j.env.value = "http://elsewhere:3128";
    j.ex.env = &j.envp, j.ex.n_env = 1;
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "HTTP_PROXY"));
    j.env.key = "GIT_SSL_CAINFO";
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    j.env.key = "HOME";
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), 0);
    /* bindings without PROXY */
    j.net.mode = AIRLOCK__V1__NETWORK_MODE__NETWORK_MODE_NONE;
    CU_ASSERT_EQUAL(chk(&c, &j, why, sizeof(why)), AL_ERR_AUTH);
    unload(&c);
}

static void test_placeholder_env(void)
{
    char a[64], b[64];
    struct ex_env_kv kv[EX_PROXY_ENV_MAX];
    size_t n;

    CU_ASSERT_EQUAL_FATAL(ex_policy_placeholder(a, sizeof(a)), 0);
    CU_ASSERT_EQUAL_FATAL(ex_policy_placeholder(b, sizeof(b)), 0);
    CU_ASSERT_EQUAL(strlen(a), EX_PH_LEN);
    CU_ASSERT_EQUAL(strncmp(a, "AIRLOCK_PH_", 11), 0);
    CU_ASSERT_EQUAL(strspn(a + 11, "0123456789abcdef"), 32);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    CU_ASSERT_EQUAL(ex_policy_placeholder(a, EX_PH_LEN), AL_ERR_CRYPTO); /* no room for NUL */
    n = ex_policy_proxy_env(3128, 0, kv);
    CU_ASSERT_EQUAL(n, 6);
    CU_ASSERT_STRING_EQUAL(kv[0].name, "HTTP_PROXY");
    CU_ASSERT_STRING_EQUAL(kv[0].value, "http://127.0.0.1:3128");
    CU_ASSERT_STRING_EQUAL(kv[3].name, "https_proxy");
    CU_ASSERT_STRING_EQUAL(kv[4].value, "localhost,127.0.0.1,::1");
    n = ex_policy_proxy_env(3128, 1, kv);
    CU_ASSERT_EQUAL(n, 11);
    CU_ASSERT_STRING_EQUAL(kv[6].name, "SSL_CERT_FILE");
    CU_ASSERT_STRING_EQUAL(kv[10].name, "GIT_SSL_CAINFO");
    CU_ASSERT_STRING_EQUAL(kv[10].value, "/etc/ssl/certs/ca-certificates.crt");
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_TRUE(ex_policy_reserved_env(kv[i].name));
    CU_ASSERT_FALSE(ex_policy_reserved_env("GH_TOKEN"));
}

int main(void)
{
    CU_pSuite s;
    unsigned failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("executor_egress_policy", NULL, NULL);
    CU_add_test(s, "egress config: pools, resolve, limits, canonical hosts", test_config);
    CU_add_test(s, "egress config: each bad value named with its file:line", test_config_errors);
    CU_add_test(s, "jobs inside the pool's ceiling, or refused naming the destination",
                test_ceiling);
    CU_add_test(s, "bindings and the job's own proxy variables", test_bindings_env);
    CU_add_test(s, "placeholders and the proxy environment", test_placeholder_env);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
