/*
 * libFuzzer target for al_config: arbitrary bytes as a config file, or as the
 * text value of every key given through the environment, against a schema
 * with one key of each type, nested groups and a custom subtree.
 *
 * The first byte picks the mode: even, the rest is the file; odd, the rest is
 * the value of one environment variable, chosen by the byte's upper bits (one
 * at a time, or the first bad value would hide all later keys). Inputs with
 * "@include" are skipped: libconfig 1.5 would open the named file, and config
 * files are operator input, not a peer's.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
    char *cert_file, *key_file;
    struct pools pools;
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
        const char *name;
        p->n++;
        if (!config_setting_is_group(e))
            return al_config_errf(err, errlen, e, "expected a group");
        if (!config_setting_lookup_string(e, "name", &name))
            return al_config_errf(err, errlen, e, "no name");
        p->v[i].name = strdup(name);
        if (!p->v[i].name)
            return AL_ERR_NOMEM;
        config_setting_lookup_int(e, "size", &p->v[i].size);
        for (int j = 0; j < config_setting_length(e); j++) {
            const config_setting_t *m = config_setting_get_elem(e, (unsigned)j);
            if (strcmp(config_setting_name(m), "name") && strcmp(config_setting_name(m), "size"))
                return al_config_errf(err, errlen, m, "unknown key");
        }
    }
    return 0;
}

#define F(member, type) AL_CFG_OFF(struct cfg, member, type)

static const struct al_cfg_field fields[] = {
    {"listen", AL_CFG_STRING, F(listen, char *), "127.0.0.1:0", "address", 0, 0, 0, NULL, NULL},
    {"workers", AL_CFG_INT, F(workers, int), "4", "workers", 1, 64, 0, NULL, NULL},
    {"verbose", AL_CFG_BOOL, F(verbose, int), "false", "chatty", 0, 0, 0, NULL, NULL},
    {"ratio", AL_CFG_DOUBLE, F(ratio, double), "0.5", "fraction", 0, 1, 0, NULL, NULL},
    {"grpc.timeout", AL_CFG_DURATION_MS, F(timeout_ms, long long), "5s", "deadline", 0, 3600000, 0,
     NULL, NULL},
    {"grpc.limits.max_body", AL_CFG_SIZE, F(max_body, size_t), "64KiB", "cap", 0, 0, 0, NULL, NULL},
    {"tags", AL_CFG_STRLIST, F(tags, char **), "a,b", "labels", 0, 0, 0, NULL, NULL},
    {"tls.cert_file", AL_CFG_STRING, F(cert_file, char *), NULL, "PEM chain", 0, 0, 0, NULL, NULL},
    {"tls.key_file", AL_CFG_STRING, F(key_file, char *), NULL, "PEM key", 0, 0, 0, NULL, NULL},
    {"pools", AL_CFG_CUSTOM, F(pools, struct pools), NULL, "pools", 0, 0, 0, pools_parse,
     pools_free},
};
#define NF (sizeof(fields) / sizeof(fields[0]))

static const char *const env_names[] = {
    "AIRLOCK_LISTEN", "AIRLOCK_WORKERS",       "AIRLOCK_VERBOSE",
    "AIRLOCK_RATIO",  "AIRLOCK_GRPC_TIMEOUT",  "AIRLOCK_GRPC_LIMITS_MAX_BODY",
    "AIRLOCK_TAGS",   "AIRLOCK_TLS_CERT_FILE", "AIRLOCK_POOLS",
};
#define NENV (sizeof(env_names) / sizeof(env_names[0]))

/*
 * libconfig 1.5's scanner leaks the text of string tokens when parsing fails
 * around them (strbuf_append, and yylex's token copy that the grammar never
 * frees on error). A service exits on a config error, so only the fuzzer
 * cares; leaks of settings (a missing config_destroy) are still reported.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:strbuf_append\nleak:libconfig_yylex\n";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct al_config_opts o = {0};
    char *env[2] = {0};
    char *argv[] = {"fuzz_config", NULL};
    char err[512], *text;
    struct cfg c = {0};
    int env_mode;

    if (size < 1 || size > 65536)
        return 0;
    env_mode = data[0] & 1;
    text = strndup((const char *)data + 1, size - 1);
    if (!text)
        return 0;
    if (strcasestr(text, "@include"))
        goto out;
    if (env_mode) {
        if (asprintf(&env[0], "%s=%s", env_names[(data[0] >> 1) % NENV], text) < 0)
            env[0] = NULL;
    } else {
        o.text = text;
        o.text_name = "fuzz.cfg";
    }
    o.envp = env;
    al_config_load(fields, NF, &c, 1, argv, &o, err, sizeof(err));
    al_config_cleanup(fields, NF, &c);
    free(env[0]);
out:
    free(text);
    return 0;
}
