/*
 * Unit tests for al_config: layer order (defaults < file < env < flags), the
 * exact error messages for each source, every field type, custom subtrees and
 * the built-in flags. The environment is injected through opts.envp so the
 * tests never depend on, or change, the real one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "al_config.h"
#include "al_err.h"

struct pool {
    char *name;
    int size;
};

struct pools {
    struct pool *v;
    size_t n;
};

struct cfg {
    char *listen;
    int workers;
    int verbose;
    double ratio;
    long long timeout_ms;
    size_t max_body;
    char **tags;
    char *cert_file;
    struct pools pools;
    char *token_file;
};

static void pools_free(void *field)
{
    struct pools *p = field;

    for (size_t i = 0; i < p->n; i++)
        free(p->v[i].name);
    free(p->v);
    p->v = NULL;
    p->n = 0;
}

static int pool_member(struct pool *pl, const config_setting_t *m, char *err, size_t errlen)
{
    const char *name = config_setting_name(m);

    if (strcmp(name, "name") == 0 && config_setting_type(m) == CONFIG_TYPE_STRING) {
        free(pl->name);
        pl->name = strdup(config_setting_get_string(m));
        return pl->name ? 0 : AL_ERR_NOMEM;
    }
    if (strcmp(name, "size") == 0 && config_setting_type(m) == CONFIG_TYPE_INT) {
        pl->size = config_setting_get_int(m);
        return 0;
    }
    return al_config_errf(err, errlen, m, "unknown key or wrong type");
}

static int pools_parse(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    struct pools *p = field;
    int n = config_setting_length(s);

    if (!config_setting_is_list(s))
        return al_config_errf(err, errlen, s, "expected a list of groups");
    p->v = calloc((size_t)n + 1, sizeof(*p->v));
    if (!p->v)
        return AL_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        if (!config_setting_is_group(e))
            return al_config_errf(err, errlen, e, "expected a group");
        p->n++;
        for (int j = 0; j < config_setting_length(e); j++) {
            int rc = pool_member(&p->v[i], config_setting_get_elem(e, (unsigned)j), err, errlen);
            if (rc < 0)
                return rc;
        }
        if (!p->v[i].name) {
            snprintf(err, errlen, "pool %d has no name", i); /* bare reason: loader adds where */
            return AL_ERR_CONFIG;
        }
    }
    return 0;
}

#define F(member, type) AL_CFG_OFF(struct cfg, member, type)

static const struct al_cfg_field fields[] = {
    {"listen", AL_CFG_STRING, F(listen, char *), "127.0.0.1:8443", "gRPC address", 0, 0, 0, NULL,
     NULL},
    {"workers", AL_CFG_INT, F(workers, int), "4", "worker count", 1, 64, 0, NULL, NULL},
    {"verbose", AL_CFG_BOOL, F(verbose, int), "false", "chatty logs", 0, 0, 0, NULL, NULL},
    {"ratio", AL_CFG_DOUBLE, F(ratio, double), "0.5", "a fraction", 0, 1, 0, NULL, NULL},
    {"timeout", AL_CFG_DURATION_MS, F(timeout_ms, long long), "5s", "deadline", 0, 0, 0, NULL,
     NULL},
    {"limits.max_body", AL_CFG_SIZE, F(max_body, size_t), "64KiB", "body cap", 0, 0, 0, NULL, NULL},
    {"tags", AL_CFG_STRLIST, F(tags, char **), "a,b", "labels", 0, 0, 0, NULL, NULL},
    {"tls.cert_file", AL_CFG_STRING, F(cert_file, char *), NULL, "PEM chain", 0, 0, 0, NULL, NULL},
    {"pools", AL_CFG_CUSTOM, F(pools, struct pools), NULL, "executor pools", 0, 0, 0, pools_parse,
     pools_free},
};
#define NF (sizeof(fields) / sizeof(fields[0]))

static char *no_env[] = {NULL};

/* Loads with the given file text (may be NULL), env and argv (argv[0] added). */
static int load(struct cfg *c, const char *text, char **envp, int argc, char **args, char *err,
                size_t errlen, struct al_config_opts *o)
{
    char *argv[16] = {"prog"};
    struct al_config_opts local = {0};

    for (int i = 0; i < argc && i < 15; i++)
        argv[i + 1] = args[i];
    if (!o)
        o = &local;
    o->text = text;
    o->text_name = "svc.cfg";
    o->envp = envp ? envp : no_env;
    memset(c, 0, sizeof(*c));
    return al_config_load(fields, NF, c, argc + 1, argv, o, err, errlen);
}

static void test_defaults(void)
{
    struct cfg c;
    char err[256];

    CU_ASSERT_EQUAL(load(&c, NULL, NULL, 0, NULL, err, sizeof(err), NULL), 0);
    CU_ASSERT_STRING_EQUAL(c.listen, "127.0.0.1:8443");
    CU_ASSERT_EQUAL(c.workers, 4);
    CU_ASSERT_EQUAL(c.verbose, 0);
    CU_ASSERT_DOUBLE_EQUAL(c.ratio, 0.5, 1e-12);
    CU_ASSERT_EQUAL(c.timeout_ms, 5000);
    CU_ASSERT_EQUAL(c.max_body, 65536);
    CU_ASSERT_STRING_EQUAL(c.tags[0], "a");
    CU_ASSERT_STRING_EQUAL(c.tags[1], "b");
    CU_ASSERT_PTR_NULL(c.tags[2]);
    CU_ASSERT_PTR_NULL(c.cert_file);
    CU_ASSERT_EQUAL(c.pools.n, 0);
    al_config_cleanup(fields, NF, &c);
    CU_ASSERT_PTR_NULL(c.listen);
    CU_ASSERT_PTR_NULL(c.tags);
    al_config_cleanup(fields, NF, &c); /* idempotent */
}

static void test_file_overrides(void)
{
    struct cfg c;
    char err[256];
    const char *text = "listen = \"0.0.0.0:9000\";\n"
                       "workers = 8;\n"
                       "verbose = true;\n"
                       "ratio = 1;\n"
                       "tls = { cert_file = \"/etc/airlock/cert.pem\"; };\n"
                       "limits: { max_body = 1048576; };\n";

    CU_ASSERT_EQUAL_FATAL(load(&c, text, NULL, 0, NULL, err, sizeof(err), NULL), 0);
    CU_ASSERT_STRING_EQUAL(c.listen, "0.0.0.0:9000");
    CU_ASSERT_EQUAL(c.workers, 8);
    CU_ASSERT_EQUAL(c.verbose, 1);
    CU_ASSERT_DOUBLE_EQUAL(c.ratio, 1.0, 1e-12);
    CU_ASSERT_STRING_EQUAL(c.cert_file, "/etc/airlock/cert.pem");
    CU_ASSERT_EQUAL(c.max_body, 1048576);
    CU_ASSERT_EQUAL(c.timeout_ms, 5000); /* untouched default */
    al_config_cleanup(fields, NF, &c);
}

static void test_real_file(void)
{
    char path[] = "/tmp/al_config_test_XXXXXX", err[512], want[600];
    char *args[] = {"--config", path};
    char *env[] = {NULL, NULL};
    char envbuf[64];
    struct al_config_opts o = {0};
    struct cfg c;
    int fd = mkstemp(path);
    const char *text = "workers = 2;\nbogus = 1;\n";

    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, "workers = 3;\n", 13), 13);
    close(fd);
    o.envp = no_env;
    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(al_config_load(fields, NF, &c, 3, (char *[]){"prog", args[0], args[1]}, &o, err,
                                   sizeof(err)),
                    0);
    CU_ASSERT_EQUAL(c.workers, 3);
    CU_ASSERT_PTR_NOT_NULL(o.config_file);
    CU_ASSERT_STRING_EQUAL(o.config_file, path);
    al_config_cleanup(fields, NF, &c);

    /* AIRLOCK_CONFIG names the file when no --config is given; errors name file:line */
    fd = open(path, O_WRONLY | O_TRUNC);
    CU_ASSERT_EQUAL(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    snprintf(envbuf, sizeof(envbuf), "AIRLOCK_CONFIG=%s", path);
    env[0] = envbuf;
    o.envp = env;
    CU_ASSERT_EQUAL(al_config_load(fields, NF, &c, 1, (char *[]){"prog"}, &o, err, sizeof(err)),
                    AL_ERR_CONFIG);
    snprintf(want, sizeof(want), "%s:2: bogus: unknown key", path);
    CU_ASSERT_STRING_EQUAL(err, want);
    al_config_cleanup(fields, NF, &c);
    unlink(path);

    CU_ASSERT_EQUAL(al_config_load(fields, NF, &c, 1, (char *[]){"prog"}, &o, err, sizeof(err)),
                    AL_ERR_CONFIG);
    snprintf(want, sizeof(want), "%s: No such file or directory", path);
    CU_ASSERT_STRING_EQUAL(err, want);
    al_config_cleanup(fields, NF, &c);
}

static void test_env_overrides_file(void)
{
    struct cfg c;
    char err[256];
    char *env[] = {"AIRLOCK_WORKERS=9", "AIRLOCK_TLS_CERT_FILE=/env.pem",
                   "AIRLOCK_VERBOSE=", "AIRLOCK_UNRELATED_SERVICE_PORT=tcp://10.0.0.1:80", NULL};

    CU_ASSERT_EQUAL_FATAL(
        load(&c, "workers = 8;\nverbose = true;\n", env, 0, NULL, err, sizeof(err), NULL), 0);
    CU_ASSERT_EQUAL(c.workers, 9);
    CU_ASSERT_STRING_EQUAL(c.cert_file, "/env.pem");
    CU_ASSERT_EQUAL(c.verbose, 1); /* empty env var counts as unset */
    al_config_cleanup(fields, NF, &c);
}

static void test_flag_overrides_env(void)
{
    struct cfg c;
    char err[256];
    char *env[] = {"AIRLOCK_WORKERS=9", "AIRLOCK_TLS_CERT_FILE=/env.pem", NULL};
    char *args[] = {"--workers=10", "--tls.cert-file", "/flag.pem", "--verbose", "--workers", "11"};

    CU_ASSERT_EQUAL_FATAL(load(&c, "workers = 8;\n", env, 6, args, err, sizeof(err), NULL), 0);
    CU_ASSERT_EQUAL(c.workers, 11); /* the last flag wins */
    CU_ASSERT_STRING_EQUAL(c.cert_file, "/flag.pem");
    CU_ASSERT_EQUAL(c.verbose, 1);
    al_config_cleanup(fields, NF, &c);

    char *args2[] = {"--verbose=false", "--limits.max-body=1MiB"};
    char *env2[] = {"AIRLOCK_VERBOSE=on", NULL};
    CU_ASSERT_EQUAL_FATAL(load(&c, NULL, env2, 2, args2, err, sizeof(err), NULL), 0);
    CU_ASSERT_EQUAL(c.verbose, 0);
    CU_ASSERT_EQUAL(c.max_body, 1 << 20);
    al_config_cleanup(fields, NF, &c);
}

static void expect_err(const char *text, char **env, int argc, char **args, const char *want)
{
    struct cfg c;
    char err[512];
    int rc = load(&c, text, env, argc, args, err, sizeof(err), NULL);

    CU_ASSERT_EQUAL(rc, AL_ERR_CONFIG);
    CU_ASSERT_STRING_EQUAL(err, want);
    if (strcmp(err, want) != 0)
        fprintf(stderr, "\n  got:  %s\n  want: %s\n", err, want);
    al_config_cleanup(fields, NF, &c);
}

static void test_unknown_key(void)
{
    expect_err("workers = 1;\ntls = {\n  cert_fil = \"x\";\n};\n", NULL, 0, NULL,
               "svc.cfg:3: tls.cert_fil: unknown key");
    expect_err("workers = 1;\nnested = { deep = { x = 1; }; };\n", NULL, 0, NULL,
               "svc.cfg:2: nested: unknown key");
    expect_err("tls = { cert-file = \"x\"; };\n", NULL, 0, NULL,
               "svc.cfg:1: tls.cert-file: unknown key (did you mean tls.cert_file?)");
    expect_err("tls = \"x\";\n", NULL, 0, NULL, "svc.cfg:1: tls: expected a group, got a string");
    expect_err("workers = 1;\nworkers = 2;\n", NULL, 0, NULL, "svc.cfg:2: duplicate setting name");
    expect_err("workers = ;\n", NULL, 0, NULL, "svc.cfg:1: syntax error");
}

static void test_type_errors(void)
{
    expect_err("workers = \"eight\";\n", NULL, 0, NULL,
               "svc.cfg:1: workers: expected an integer, got a string");
    expect_err("\nverbose = 1;\n", NULL, 0, NULL,
               "svc.cfg:2: verbose: expected a boolean, got an "
               "integer");
    expect_err("listen = 5;\n", NULL, 0, NULL,
               "svc.cfg:1: listen: expected a string, got an integer");
    expect_err("tags = [1, 2];\n", NULL, 0, NULL, "svc.cfg:1: tags: item 0: expected a string");
    char *env[] = {"AIRLOCK_WORKERS=many", NULL};
    expect_err(NULL, env, 0, NULL, "env AIRLOCK_WORKERS: expected an integer, got \"many\"");
    char *env2[] = {"AIRLOCK_VERBOSE=maybe", NULL};
    expect_err(NULL, env2, 0, NULL, "env AIRLOCK_VERBOSE: expected true or false, got \"maybe\"");
    char *args[] = {"--ratio=abc"};
    expect_err(NULL, NULL, 1, args, "flag --ratio: expected a number, got \"abc\"");
}

static void test_range_errors(void)
{
    expect_err("workers = 100;\n", NULL, 0, NULL, "svc.cfg:1: workers: 100 out of range [1, 64]");
    char *env[] = {"AIRLOCK_WORKERS=0", NULL};
    expect_err(NULL, env, 0, NULL, "env AIRLOCK_WORKERS: 0 out of range [1, 64]");
    char *args[] = {"--workers", "65"};
    expect_err(NULL, NULL, 2, args, "flag --workers: 65 out of range [1, 64]");
    char *args2[] = {"--ratio=1.5"};
    expect_err(NULL, NULL, 1, args2, "flag --ratio: 1.5 out of range [0, 1]");
    expect_err("timeout = -5;\n", NULL, 0, NULL,
               "svc.cfg:1: timeout: -5 out of range [0, 9223372036854775807]");
}

static void test_units(void)
{
    long long ms;
    size_t z;
    struct cfg c;
    char err[256];

    CU_ASSERT(al_config_parse_duration("250ms", &ms) == 0 && ms == 250);
    CU_ASSERT(al_config_parse_duration("5s", &ms) == 0 && ms == 5000);
    CU_ASSERT(al_config_parse_duration("2m", &ms) == 0 && ms == 120000);
    CU_ASSERT(al_config_parse_duration("1h", &ms) == 0 && ms == 3600000);
    CU_ASSERT(al_config_parse_duration("42", &ms) == 0 && ms == 42);
    CU_ASSERT_EQUAL(al_config_parse_duration("", &ms), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_config_parse_duration("5 s", &ms), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_config_parse_duration("-5s", &ms), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_config_parse_duration("1d", &ms), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_config_parse_duration("9999999999999999h", &ms), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_config_parse_duration("99999999999999999999999", &ms), AL_ERR_INVAL);
    CU_ASSERT(al_config_parse_size("4096", &z) == 0 && z == 4096);
    CU_ASSERT(al_config_parse_size("512B", &z) == 0 && z == 512);
    CU_ASSERT(al_config_parse_size("64KiB", &z) == 0 && z == 65536);
    CU_ASSERT(al_config_parse_size("4MiB", &z) == 0 && z == 4u << 20);
    CU_ASSERT(al_config_parse_size("1GiB", &z) == 0 && z == 1u << 30);
    CU_ASSERT(al_config_parse_size("2TiB", &z) == 0 && z == 2ull << 40);
    CU_ASSERT_EQUAL(al_config_parse_size("4MB", &z), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_config_parse_size("MiB", &z), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_config_parse_size("9999999999TiB", &z), AL_ERR_INVAL);

    CU_ASSERT_EQUAL_FATAL(load(&c, "timeout = \"2m\";\nlimits = { max_body = \"8GiB\"; };\n", NULL,
                               0, NULL, err, sizeof(err), NULL),
                          0);
    CU_ASSERT_EQUAL(c.timeout_ms, 120000);
    CU_ASSERT_EQUAL(c.max_body, 8ull << 30);
    al_config_cleanup(fields, NF, &c);
    CU_ASSERT_EQUAL_FATAL(load(&c, "timeout = 1500;\n", NULL, 0, NULL, err, sizeof(err), NULL), 0);
    CU_ASSERT_EQUAL(c.timeout_ms, 1500);
    al_config_cleanup(fields, NF, &c);
    expect_err("timeout = \"5 days\";\n", NULL, 0, NULL,
               "svc.cfg:1: timeout: expected a duration like 250ms, 5s, 2m, 1h, got \"5 days\"");
    expect_err("timeout = 1.5;\n", NULL, 0, NULL,
               "svc.cfg:1: timeout: expected a duration, got a float");
    char *env[] = {"AIRLOCK_LIMITS_MAX_BODY=4MB", NULL};
    expect_err(NULL, env, 0, NULL,
               "env AIRLOCK_LIMITS_MAX_BODY: expected a size like 4096, 64KiB, 4MiB, 1GiB, got "
               "\"4MB\"");
}

static void test_strlist(void)
{
    struct cfg c;
    char err[256];
    char *env[] = {"AIRLOCK_TAGS= x, y ,z", NULL};
    char *args[] = {"--tags="};

    CU_ASSERT_EQUAL_FATAL(
        load(&c, "tags = [\"p\", \"q\"];\n", NULL, 0, NULL, err, sizeof(err), NULL), 0);
    CU_ASSERT_STRING_EQUAL(c.tags[0], "p");
    CU_ASSERT_STRING_EQUAL(c.tags[1], "q");
    CU_ASSERT_PTR_NULL(c.tags[2]);
    al_config_cleanup(fields, NF, &c);

    CU_ASSERT_EQUAL_FATAL(load(&c, "tags = ( \"l\" );\n", env, 0, NULL, err, sizeof(err), NULL), 0);
    CU_ASSERT_STRING_EQUAL(c.tags[0], "x");
    CU_ASSERT_STRING_EQUAL(c.tags[1], "y");
    CU_ASSERT_STRING_EQUAL(c.tags[2], "z");
    CU_ASSERT_PTR_NULL(c.tags[3]);
    al_config_cleanup(fields, NF, &c);

    CU_ASSERT_EQUAL_FATAL(load(&c, "tags = [];\n", NULL, 1, args, err, sizeof(err), NULL), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c.tags);
    CU_ASSERT_PTR_NULL(c.tags[0]);
    al_config_cleanup(fields, NF, &c);

    char *bad[] = {"--tags=a,,b"};
    expect_err(NULL, NULL, 1, bad, "flag --tags: empty list item");
    char *bad2[] = {"--tags=a,"};
    expect_err(NULL, NULL, 1, bad2, "flag --tags: empty list item");
}

static void test_custom(void)
{
    struct cfg c;
    char err[256];
    const char *text = "pools = (\n"
                       "  { name = \"ci\"; size = 2; },\n"
                       "  { name = \"data\"; size = 3; unknown = { anything = 1; }; }\n"
                       ");\n";
    const char *ok = "pools = ( { name = \"ci\"; size = 2; }, { name = \"data\"; size = 3; } );\n";
    char *env[] = {"AIRLOCK_POOLS=( { name = \"e\"; size = 7; } )", NULL};

    CU_ASSERT_EQUAL_FATAL(load(&c, ok, NULL, 0, NULL, err, sizeof(err), NULL), 0);
    CU_ASSERT_EQUAL_FATAL(c.pools.n, 2);
    CU_ASSERT_STRING_EQUAL(c.pools.v[0].name, "ci");
    CU_ASSERT_EQUAL(c.pools.v[1].size, 3);
    al_config_cleanup(fields, NF, &c);
    CU_ASSERT_EQUAL(c.pools.n, 0);

    /* the custom parser owns its subtree and can point at the exact line */
    expect_err(text, NULL, 0, NULL, "svc.cfg:3: pools[1].unknown: unknown key or wrong type");
    /* a bare reason gets the location of the custom key */
    expect_err("\npools = ( { size = 1; } );\n", NULL, 0, NULL,
               "svc.cfg:2: pools: pool 0 has no name");

    /* env and flags take a libconfig value; env overrides the file */
    CU_ASSERT_EQUAL_FATAL(load(&c, ok, env, 0, NULL, err, sizeof(err), NULL), 0);
    CU_ASSERT_EQUAL_FATAL(c.pools.n, 1);
    CU_ASSERT_STRING_EQUAL(c.pools.v[0].name, "e");
    al_config_cleanup(fields, NF, &c);

    char *env2[] = {"AIRLOCK_POOLS=( { name = \"e\"; colour = 1; } )", NULL};
    expect_err(NULL, env2, 0, NULL,
               "env AIRLOCK_POOLS: pools[0].colour: unknown key or wrong type");
    char *env3[] = {"AIRLOCK_POOLS=(); workers = 1", NULL};
    expect_err(NULL, env3, 0, NULL, "env AIRLOCK_POOLS: not a single libconfig value");
    char *args[] = {"--pools", "( { name = \"f\"; } )"};
    CU_ASSERT_EQUAL_FATAL(load(&c, NULL, env, 2, args, err, sizeof(err), NULL), 0);
    CU_ASSERT_STRING_EQUAL(c.pools.v[0].name, "f");
    al_config_cleanup(fields, NF, &c);
}

static void test_builtin_flags(void)
{
    struct cfg c;
    char err[256], *help = NULL;
    size_t helplen = 0;
    struct al_config_opts o = {0};
    char *check[] = {"--check-config"};
    char *help_args[] = {"--workers=1", "--help"};

    CU_ASSERT_EQUAL_FATAL(load(&c, "workers = 2;\n", NULL, 1, check, err, sizeof(err), &o), 0);
    CU_ASSERT_EQUAL(o.check_only, 1);
    CU_ASSERT_EQUAL(o.help_shown, 0);
    CU_ASSERT_EQUAL(c.workers, 2);
    al_config_cleanup(fields, NF, &c);

    /* --check-config with a bad file still fails */
    memset(&o, 0, sizeof(o));
    CU_ASSERT_EQUAL(load(&c, "workers = 0;\n", NULL, 1, check, err, sizeof(err), &o),
                    AL_ERR_CONFIG);
    al_config_cleanup(fields, NF, &c);

    memset(&o, 0, sizeof(o));
    o.help_out = open_memstream(&help, &helplen);
    CU_ASSERT_EQUAL_FATAL(load(&c, "garbage {{{", NULL, 2, help_args, err, sizeof(err), &o), 0);
    fclose(o.help_out);
    CU_ASSERT_EQUAL(o.help_shown, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(help, "usage: prog "));
    CU_ASSERT_PTR_NOT_NULL(strstr(help, "  --tls.cert_file=STRING\n      PEM chain\n"
                                        "      env AIRLOCK_TLS_CERT_FILE; default: none\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(help, "  --workers=INT\n      worker count\n"
                                        "      env AIRLOCK_WORKERS; default: 4; range [1, 64]\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(help, "env AIRLOCK_LIMITS_MAX_BODY; default: 64KiB"));
    free(help);
    al_config_cleanup(fields, NF, &c);

    char *unknown[] = {"--nope=1"};
    expect_err(NULL, NULL, 1, unknown, "flag --nope: unknown flag (see --help)");
    char *novalue[] = {"--workers"};
    expect_err(NULL, NULL, 1, novalue, "flag --workers: needs a value");
    char *positional[] = {"extra"};
    expect_err(NULL, NULL, 1, positional, "flag extra: unexpected argument (see --help)");

    /* allow_args: stop at the first non-flag (a CLI subcommand) */
    char *sub[] = {"--workers=3", "job", "--workers=5"};
    memset(&o, 0, sizeof(o));
    o.allow_args = 1;
    CU_ASSERT_EQUAL_FATAL(load(&c, NULL, NULL, 3, sub, err, sizeof(err), &o), 0);
    CU_ASSERT_EQUAL(c.workers, 3);
    CU_ASSERT_EQUAL(o.argi, 2);
    al_config_cleanup(fields, NF, &c);
}

static void test_required(void)
{
    struct cfg c;
    char err[256];
    char *env[] = {"AIRLOCK_AUTH_TOKEN_FILE=/run/secrets/token", NULL};
    struct al_cfg_field req[] = {
        {"auth.token_file", AL_CFG_STRING, F(token_file, char *), NULL,
         "file holding the token (never the token itself)", 0, 0, 1, NULL, NULL},
    };
    struct al_config_opts o = {.envp = no_env};

    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(al_config_load(req, 1, &c, 1, (char *[]){"prog"}, &o, err, sizeof(err)),
                    AL_ERR_CONFIG);
    CU_ASSERT_STRING_EQUAL(err, "auth.token_file: required; set it in the config file, "
                                "AIRLOCK_AUTH_TOKEN_FILE or --auth.token_file");
    o.envp = env;
    CU_ASSERT_EQUAL(al_config_load(req, 1, &c, 1, (char *[]){"prog"}, &o, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(c.token_file, "/run/secrets/token");
    al_config_cleanup(req, 1, &c);
}

static void test_schema_errors(void)
{
    struct cfg c;
    char err[256];
    struct al_config_opts o = {.envp = no_env};
    struct al_cfg_field collide[] = {
        {"a.b_c", AL_CFG_INT, F(workers, int), NULL, NULL, 0, 0, 0, NULL, NULL},
        {"a_b.c", AL_CFG_INT, F(verbose, int), NULL, NULL, 0, 0, 0, NULL, NULL},
    };
    struct al_cfg_field leaf_and_group[] = {
        {"tls", AL_CFG_STRING, F(listen, char *), NULL, NULL, 0, 0, 0, NULL, NULL},
        {"tls.cert_file", AL_CFG_STRING, F(cert_file, char *), NULL, NULL, 0, 0, 0, NULL, NULL},
    };
    struct al_cfg_field bad_name[] = {
        {"Tls.cert", AL_CFG_STRING, F(listen, char *), NULL, NULL, 0, 0, 0, NULL, NULL},
    };
    struct al_cfg_field bad_default[] = {
        {"workers", AL_CFG_INT, F(workers, int), "four", NULL, 0, 0, 0, NULL, NULL},
    };
    struct al_cfg_field reserved[] = {
        {"config", AL_CFG_STRING, F(listen, char *), NULL, NULL, 0, 0, 0, NULL, NULL},
    };

    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(al_config_load(collide, 2, &c, 0, NULL, &o, err, sizeof(err)), AL_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(err, "schema: keys a.b_c and a_b.c collide");
    CU_ASSERT_EQUAL(al_config_load(leaf_and_group, 2, &c, 0, NULL, &o, err, sizeof(err)),
                    AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_config_load(bad_name, 1, &c, 0, NULL, &o, err, sizeof(err)), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_config_load(bad_default, 1, &c, 0, NULL, &o, err, sizeof(err)),
                    AL_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(err, "default workers: expected an integer, got \"four\"");
    CU_ASSERT_EQUAL(al_config_load(reserved, 1, &c, 0, NULL, &o, err, sizeof(err)), AL_ERR_INVAL);
    al_config_cleanup(fields, NF, &c);
}

static void test_env_name(void)
{
    char buf[64];

    CU_ASSERT_EQUAL(al_config_env_name("tls.cert_file", buf, sizeof(buf)), 0);
    CU_ASSERT_STRING_EQUAL(buf, "AIRLOCK_TLS_CERT_FILE");
    CU_ASSERT_EQUAL(al_config_env_name("tls.cert_file", buf, 10), AL_ERR_TOOBIG);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("config", NULL, NULL);
    CU_add_test(s, "defaults", test_defaults);
    CU_add_test(s, "file overrides defaults", test_file_overrides);
    CU_add_test(s, "real file, AIRLOCK_CONFIG, missing file", test_real_file);
    CU_add_test(s, "env overrides file", test_env_overrides_file);
    CU_add_test(s, "flag overrides env", test_flag_overrides_env);
    CU_add_test(s, "unknown key names file:line", test_unknown_key);
    CU_add_test(s, "type errors", test_type_errors);
    CU_add_test(s, "range errors", test_range_errors);
    CU_add_test(s, "durations and sizes", test_units);
    CU_add_test(s, "string lists", test_strlist);
    CU_add_test(s, "custom subtree", test_custom);
    CU_add_test(s, "--check-config, --help, bad flags", test_builtin_flags);
    CU_add_test(s, "missing required key", test_required);
    CU_add_test(s, "schema errors", test_schema_errors);
    CU_add_test(s, "env names", test_env_name);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
