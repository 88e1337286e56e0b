/*
 * inconfig: schema of airlock-intake's keys and the custom parsers of the
 * pools and principals lists (each entry checked with its file:line); see
 * inconfig.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "inconfig.h"
#include "inutil.h"

#define IC(member, type) AL_CFG_OFF(struct in_config, member, type)
#define NKNOWN(a)        (sizeof(a) / sizeof((a)[0]))

/* Limit keys in ResourceLimits order: name, is a duration, is a size. */
static const struct {
    const char *key;
    int duration, size;
} limit_keys[IN_NLIMITS] = {
    {"wall_time", 1, 0}, {"cpu_time", 1, 0},   {"memory", 0, 1}, {"pids", 0, 0},
    {"file_size", 0, 1}, {"open_files", 0, 0}, {"output", 0, 1}, {"cpu_millicores", 0, 0},
};

/* Built-in pool defaults and ceilings for keys a pool entry leaves out. */
static const int64_t builtin_def[IN_NLIMITS] = {600000,      600000, 512LL << 20, 256,
                                                256LL << 20, 256,    16LL << 20,  1000};
static const int64_t builtin_max[IN_NLIMITS] = {3600000,   3600000, 4LL << 30,   4096,
                                                4LL << 30, 4096,    256LL << 20, 4000};

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int check_keys(const config_setting_t *g, const char *const *known, size_t nknown,
                      const char *what, char *err, size_t errlen)
{
    for (int j = 0; j < config_setting_length(g); j++) {
        const config_setting_t *m = config_setting_get_elem(g, (unsigned)j);
        const char *name = config_setting_name(m);
        size_t k = 0;
        while (k < nknown && strcmp(known[k], name) != 0)
            k++;
        if (k == nknown)
            return al_config_errf(err, errlen, m, "unknown key in %s", what);
    }
    return 0;
}

static int get_string(const config_setting_t *g, const char *key, char **out, char *err,
                      size_t errlen)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (!s)
        return al_config_errf(err, errlen, g, "entry needs %s", key);
    const char *v = config_setting_get_string(s);
    if (!v || !*v)
        return al_config_errf(err, errlen, s, "must be a non-empty string");
    *out = strdup(v);
    return *out ? 0 : AL_ERR_NOMEM;
}

static int get_list(const config_setting_t *g, const char *key, char ***out, size_t *n, char *err,
                    size_t errlen)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    *out = NULL;
    *n = 0;
    if (!s)
        return 0;
    if (!config_setting_is_aggregate(s) || config_setting_is_group(s))
        return al_config_errf(err, errlen, s, "must be a list of strings");
    int len = config_setting_length(s);
    *out = calloc((size_t)len + 1, sizeof(char *));
    if (!*out)
        return AL_ERR_NOMEM;
    for (int i = 0; i < len; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *v = config_setting_get_string(e);
        if (!v || !*v || strlen(v) > IN_GLOB_MAX)
            return al_config_errf(err, errlen, e, "must be a non-empty string (a glob)");
        (*out)[i] = strdup(v);
        if (!(*out)[i])
            return AL_ERR_NOMEM;
        (*n)++;
    }
    return 0;
}

static int get_int(const config_setting_t *g, const char *key, int min, int max, int *out,
                   char *err, size_t errlen)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (!s)
        return 0;
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
        return al_config_errf(err, errlen, s, "must be an integer");
    long long v = config_setting_get_int64(s);
    if (v < min || v > max)
        return al_config_errf(err, errlen, s, "must be between %d and %d", min, max);
    *out = (int)v;
    return 0;
}

/* A limit value: integer, or for durations/sizes also the string forms. */
static int get_limit(const config_setting_t *s, int i, int64_t *out, char *err, size_t errlen)
{
    int t = config_setting_type(s);
    long long ms;
    size_t bytes;

    if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
        long long v = config_setting_get_int64(s);
        if (v < 0)
            return al_config_errf(err, errlen, s, "must not be negative");
        *out = v;
        return 0;
    }
    const char *v = t == CONFIG_TYPE_STRING ? config_setting_get_string(s) : NULL;
    if (v && limit_keys[i].duration && al_config_parse_duration(v, &ms) == 0) {
        *out = ms;
        return 0;
    }
    if (v && limit_keys[i].size && al_config_parse_size(v, &bytes) == 0 &&
        bytes <= (size_t)INT64_MAX) {
        *out = (int64_t)bytes;
        return 0;
    }
    return al_config_errf(err, errlen, s, "must be %s",
                          limit_keys[i].duration ? "a duration (\"10m\") or milliseconds"
                          : limit_keys[i].size   ? "a size (\"512MiB\") or bytes"
                                                 : "an integer");
}

static int get_limits(const config_setting_t *g, const char *key, int64_t *v, char *err,
                      size_t errlen)
{
    const char *known[IN_NLIMITS];
    const config_setting_t *s = config_setting_get_member(g, key);
    int rc;

    if (!s)
        return 0;
    if (!config_setting_is_group(s))
        return al_config_errf(err, errlen, s, "must be a group { wall_time = ...; ... }");
    for (int i = 0; i < IN_NLIMITS; i++)
        known[i] = limit_keys[i].key;
    if ((rc = check_keys(s, known, IN_NLIMITS, "a limits group", err, errlen)) < 0)
        return rc;
    for (int i = 0; i < IN_NLIMITS; i++) {
        const config_setting_t *m = config_setting_get_member(s, limit_keys[i].key);
        if (m && (rc = get_limit(m, i, &v[i], err, errlen)) < 0)
            return rc;
    }
    return 0;
}

static void pools_free(void *field)
{
    struct in_pools *ps = field;
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->v[i].name);
        free_list(ps->v[i].executors, ps->v[i].n_executors);
    }
    free(ps->v);
    ps->v = NULL;
    ps->n = 0;
}

static int parse_pool(const config_setting_t *g, struct in_pool *p, char *err, size_t errlen)
{
    static const char *const known[] = {"name", "executors", "defaults", "max"};
    int rc;

    if (!config_setting_is_group(g))
        return al_config_errf(err, errlen, g, "pools: each entry must be a group { ... }");
    memcpy(p->def, builtin_def, sizeof(p->def));
    memcpy(p->max, builtin_max, sizeof(p->max));
    if ((rc = check_keys(g, known, NKNOWN(known), "a pools entry", err, errlen)) < 0 ||
        (rc = get_string(g, "name", &p->name, err, errlen)) < 0 ||
        (rc = get_list(g, "executors", &p->executors, &p->n_executors, err, errlen)) < 0 ||
        (rc = get_limits(g, "defaults", p->def, err, errlen)) < 0 ||
        (rc = get_limits(g, "max", p->max, err, errlen)) < 0)
        return rc;
    if (!in_name_valid(p->name, IN_POOL_NAME_MAX))
        return al_config_errf(err, errlen, config_setting_get_member(g, "name"),
                              "must be 1-64 characters of [A-Za-z0-9._-]");
    for (int i = 0; i < IN_NLIMITS; i++) {
        if (p->max[i] > 0 && p->def[i] > p->max[i])
            return al_config_errf(err, errlen, g, "defaults.%s is above max.%s", limit_keys[i].key,
                                  limit_keys[i].key);
    }
    return 0;
}

static int parse_pools(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    struct in_pools *ps = field;
    int rc;

    if (!config_setting_is_list(s))
        return al_config_errf(err, errlen, s, "must be a list of groups ( { ... }, ... )");
    int len = config_setting_length(s);
    if (len < 1)
        return al_config_errf(err, errlen, s, "at least one pool is needed");
    ps->v = calloc((size_t)len, sizeof(*ps->v));
    if (!ps->v)
        return AL_ERR_NOMEM;
    for (int i = 0; i < len; i++) {
        const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
        ps->n++;
        if ((rc = parse_pool(g, &ps->v[i], err, errlen)) < 0)
            return rc;
        for (int j = 0; j < i; j++)
            if (strcmp(ps->v[j].name, ps->v[i].name) == 0)
                return al_config_errf(err, errlen, g, "pool \"%s\" is defined twice",
                                      ps->v[i].name);
    }
    return 0;
}

static void principals_free(void *field)
{
    struct in_principals *ps = field;
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->v[i].principal);
        free_list(ps->v[i].pools, ps->v[i].n_pools);
        free_list(ps->v[i].identities, ps->v[i].n_identities);
    }
    free(ps->v);
    ps->v = NULL;
    ps->n = 0;
}

static int parse_rule(const config_setting_t *g, struct in_principal_rule *r, char *err,
                      size_t errlen)
{
    static const char *const known[] = {"principal", "pools", "identities", "max_queued",
                                        "max_concurrent"};
    int rc;

    if (!config_setting_is_group(g))
        return al_config_errf(err, errlen, g, "principals: each entry must be a group { ... }");
    r->max_queued = r->max_concurrent = -1;
    if ((rc = check_keys(g, known, NKNOWN(known), "a principals entry", err, errlen)) < 0 ||
        (rc = get_string(g, "principal", &r->principal, err, errlen)) < 0 ||
        (rc = get_list(g, "pools", &r->pools, &r->n_pools, err, errlen)) < 0 ||
        (rc = get_list(g, "identities", &r->identities, &r->n_identities, err, errlen)) < 0 ||
        (rc = get_int(g, "max_queued", 0, 10000000, &r->max_queued, err, errlen)) < 0 ||
        (rc = get_int(g, "max_concurrent", 0, 10000000, &r->max_concurrent, err, errlen)) < 0)
        return rc;
    if (strlen(r->principal) > IN_GLOB_MAX)
        return al_config_errf(err, errlen, g, "principal: too long");
    if (r->n_identities && !in_principal_valid(r->principal))
        return al_config_errf(err, errlen, config_setting_get_member(g, "principal"),
                              "with identities, principal must be a principal name (no glob): "
                              "1-128 characters of [A-Za-z0-9._-] in \"/\"-separated segments");
    return 0;
}

static int parse_principals(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    struct in_principals *ps = field;
    int rc;

    if (!config_setting_is_list(s))
        return al_config_errf(err, errlen, s, "must be a list of groups ( { ... }, ... )");
    int len = config_setting_length(s);
    ps->v = calloc((size_t)len + 1, sizeof(*ps->v));
    if (!ps->v)
        return AL_ERR_NOMEM;
    for (int i = 0; i < len; i++) {
        ps->n++;
        if ((rc = parse_rule(config_setting_get_elem(s, (unsigned)i), &ps->v[i], err, errlen)) < 0)
            return rc;
    }
    return 0;
}

#define DAY_MS 86400000LL

static const struct al_cfg_field fields[] = {
    {"data_dir", AL_CFG_STRING, IC(data_dir, char *), NULL, "directory of intake.db (created 0700)",
     0, 0, 1, NULL, NULL},
    {"pools", AL_CFG_CUSTOM, IC(pools, struct in_pools),
     "( { name = \"default\"; executors = [\"spiffe://airlock/executor/*\"]; } )",
     "executor pools: ( { name; executors = [identity globs]; defaults = { wall_time; cpu_time; "
     "memory; pids; file_size; open_files; output; cpu_millicores; }; max = { same }; } )",
     0, 0, 0, parse_pools, pools_free},
    {"principals", AL_CFG_CUSTOM, IC(principals, struct in_principals),
     "( { principal = \"**\"; pools = [\"default\"]; } )",
     "which principals may use which pools, first match wins: ( { principal (glob); pools "
     "(globs); max_queued; max_concurrent; identities (mTLS identity globs acting as "
     "principal) } )",
     0, 0, 0, parse_principals, principals_free},
    {"quota.max_queued", AL_CFG_INT, IC(quota_max_queued, int), "10000",
     "jobs one principal may have QUEUED (Submit beyond: RESOURCE_EXHAUSTED)", 0, 10000000, 0, NULL,
     NULL},
    {"quota.max_concurrent", AL_CFG_INT, IC(quota_max_concurrent, int), "1000",
     "jobs of one principal LEASED or RUNNING at once (more wait in the queue)", 1, 10000000, 0,
     NULL, NULL},
    {"queue.max_queued", AL_CFG_INT, IC(queue_max_queued, int), "1000000",
     "QUEUED jobs of all principals together (Submit beyond: RESOURCE_EXHAUSTED, QUEUE_FULL)", 1,
     100000000, 0, NULL, NULL},
    {"queue.timeout", AL_CFG_DURATION_MS, IC(queue_timeout_ms, long long), "1h",
     "how long a job may wait QUEUED when its spec says 0", 1000, 30 * DAY_MS, 0, NULL, NULL},
    {"queue.max_timeout", AL_CFG_DURATION_MS, IC(queue_max_timeout_ms, long long), "24h",
     "longest queue_timeout_ms a job may ask for (larger values are lowered)", 1000, 30 * DAY_MS, 0,
     NULL, NULL},
    {"lease.ttl", AL_CFG_DURATION_MS, IC(lease_ttl_ms, long long), "30s",
     "lease time to live; a lease not extended by a heartbeat within it expires", 1000, 3600000, 0,
     NULL, NULL},
    {"lease.heartbeat_interval", AL_CFG_DURATION_MS, IC(heartbeat_ms, long long), "5s",
     "heartbeat interval told to executors (at most a third of lease.ttl)", 100, 1200000, 0, NULL,
     NULL},
    {"lease.restart_grace", AL_CFG_DURATION_MS, IC(restart_grace_ms, long long), "45s",
     "after intake starts, leases held before get at least this long to be re-attached by "
     "heartbeats before any expires",
     0, 3600000, 0, NULL, NULL},
    {"lease.max_slots", AL_CFG_INT, IC(max_slots, int), "256",
     "largest LeaseRequest.slots accepted (larger values are lowered)", 1, 100000, 0, NULL, NULL},
    {"retry.default_attempts", AL_CFG_INT, IC(default_attempts, int), "3",
     "attempts of a job whose spec says max_attempts 0", 1, 100, 0, NULL, NULL},
    {"retry.max_attempts", AL_CFG_INT, IC(max_attempts, int), "10",
     "largest max_attempts a job may ask for (larger values are lowered)", 1, 100, 0, NULL, NULL},
    {"retry.backoff_base", AL_CFG_DURATION_MS, IC(backoff_base_ms, long long), "1s",
     "wait before the second attempt after a lost lease; doubles per further attempt", 0, 3600000,
     0, NULL, NULL},
    {"retry.backoff_max", AL_CFG_DURATION_MS, IC(backoff_max_ms, long long), "1m",
     "longest wait between attempts", 0, 24 * 3600000LL, 0, NULL, NULL},
    {"retention.jobs", AL_CFG_DURATION_MS, IC(retention_jobs_ms, long long), "168h",
     "finished jobs are deleted (with their events) this long after they finished", 1000,
     3650 * DAY_MS, 0, NULL, NULL},
    {"retention.events", AL_CFG_DURATION_MS, IC(retention_events_ms, long long), "168h",
     "events of finished jobs are deleted this long after the job finished (Watch then answers "
     "OUT_OF_RANGE); at most retention.jobs",
     1000, 3650 * DAY_MS, 0, NULL, NULL},
    {"retention.idempotency", AL_CFG_DURATION_MS, IC(retention_idem_ms, long long), "24h",
     "idempotency keys are remembered at least this long (the API promises 24h) while their job "
     "is kept",
     1000, 3650 * DAY_MS, 0, NULL, NULL},
    {"retention.sweep_interval", AL_CFG_DURATION_MS, IC(sweep_interval_ms, long long), "1m",
     "how often expired jobs, events and idempotency keys are purged", 100, DAY_MS, 0, NULL, NULL},
    {"limits.stdin", AL_CFG_SIZE, IC(max_stdin, size_t), "1MiB", "largest ExecSpec.stdin accepted",
     0, 1LL << 30, 0, NULL, NULL},
    {"limits.file_data", AL_CFG_SIZE, IC(max_file_data, size_t), "3MiB",
     "largest FileSpec.data (WRITE_FILE) accepted", 0, 1LL << 30, 0, NULL, NULL},
    {"limits.command_bytes", AL_CFG_SIZE, IC(max_command_bytes, size_t), "256KiB",
     "largest total of argv, env names and values and cwd of one command", 1024, 64LL << 20, 0,
     NULL, NULL},
    {"limits.argv_count", AL_CFG_INT, IC(max_argv, int), "4096", "most argv elements", 1, 1000000,
     0, NULL, NULL},
    {"limits.env_count", AL_CFG_INT, IC(max_env, int), "1024", "most env entries", 0, 1000000, 0,
     NULL, NULL},
    {"limits.push_events", AL_CFG_INT, IC(max_push_events, int), "1000",
     "most events in one PushEvents call", 1, 100000, 0, NULL, NULL},
    {"grant.key_file", AL_CFG_STRING, IC(grant_key_file, char *), "",
     "Ed25519 private key (PEM) signing job grants (airlockctl keys gen-grant-key); empty: jobs "
     "that bind credentials are refused",
     0, 0, 0, NULL, NULL},
    {"grant.key_id", AL_CFG_STRING, IC(grant_key_id, char *), "",
     "key id written into grants; empty: derived from the key", 0, 0, 0, NULL, NULL},
    {"grant.lifetime", AL_CFG_DURATION_MS, IC(grant_lifetime_ms, long long), "10m",
     "lifetime of each job grant; heartbeats renew it", 10000, 3600000, 0, NULL, NULL},
    {"grant.renew_before", AL_CFG_DURATION_MS, IC(grant_renew_ms, long long), "3m",
     "a heartbeat sends a fresh grant once the current one expires within this", 1000, 3600000, 0,
     NULL, NULL},
    {"grant.audience", AL_CFG_STRING, IC(grant_audience, char *), "spiffe://airlock/credstore",
     "audience of job grants: a credstore SPIFFE id or the role-wide id", 0, 0, 0, NULL, NULL},
    {"api_keys.cache_ttl", AL_CFG_DURATION_MS, IC(apikey_cache_ttl_ms, long long), "5s",
     "how long a looked-up API key is reused; revocation and expiry take effect within it", 0,
     300000, 0, NULL, NULL},
};

const struct al_cfg_field *in_config_fields(size_t *n)
{
    *n = sizeof(fields) / sizeof(fields[0]);
    return fields;
}

int in_config_check(const struct in_config *c, char *err, size_t errlen)
{
    const char *why = NULL;

    if (c->heartbeat_ms * 3 > c->lease_ttl_ms)
        why = "lease.heartbeat_interval must be at most a third of lease.ttl";
    else if (c->default_attempts > c->max_attempts)
        why = "retry.default_attempts is above retry.max_attempts";
    else if (c->backoff_base_ms > c->backoff_max_ms)
        why = "retry.backoff_base is above retry.backoff_max";
    else if (c->queue_timeout_ms > c->queue_max_timeout_ms)
        why = "queue.timeout is above queue.max_timeout";
    else if (c->retention_events_ms > c->retention_jobs_ms)
        why = "retention.events is above retention.jobs";
    else if (c->grant_renew_ms >= c->grant_lifetime_ms)
        why = "grant.renew_before must be below grant.lifetime";
    else if (c->pools.n == 0)
        why = "pools: at least one pool is needed";
    if (why) {
        snprintf(err, errlen, "%s", why);
        return AL_ERR_CONFIG;
    }
    /* a job's spec travels whole in one LeaseAssignment */
    if (c->max_stdin + c->max_command_bytes + 65536 > c->common.max_message_size ||
        c->max_file_data + 65536 > c->common.max_message_size) {
        snprintf(err, errlen,
                 "limits.stdin + limits.command_bytes and limits.file_data must each stay 64KiB "
                 "below grpc.max_message_size (a job's spec travels in one message)");
        return AL_ERR_CONFIG;
    }
    if (strncmp(c->grant_audience, "spiffe://airlock/", 17) != 0) {
        snprintf(err, errlen, "grant.audience: must be a spiffe://airlock/ id");
        return AL_ERR_CONFIG;
    }
    return 0;
}

const struct in_pool *in_config_pool(const struct in_config *c, const char *name)
{
    for (size_t i = 0; name && i < c->pools.n; i++)
        if (strcmp(c->pools.v[i].name, name) == 0)
            return &c->pools.v[i];
    return NULL;
}

int in_config_pool_serves(const struct in_pool *p, const char *id)
{
    return id && id[0] && in_glob_any(p->executors, p->n_executors, id);
}

const struct in_principal_rule *in_config_principal(const struct in_config *c, const char *name)
{
    for (size_t i = 0; name && i < c->principals.n; i++)
        if (in_glob_match(c->principals.v[i].principal, name))
            return &c->principals.v[i];
    return NULL;
}

const struct in_principal_rule *in_config_identity(const struct in_config *c, const char *id)
{
    for (size_t i = 0; id && id[0] && i < c->principals.n; i++)
        if (in_glob_any(c->principals.v[i].identities, c->principals.v[i].n_identities, id))
            return &c->principals.v[i];
    return NULL;
}

int in_config_pool_allowed(const struct in_principal_rule *r, const char *pool)
{
    return r && in_glob_any(r->pools, r->n_pools, pool);
}

int in_config_max_queued(const struct in_config *c, const struct in_principal_rule *r)
{
    return r && r->max_queued >= 0 ? r->max_queued : c->quota_max_queued;
}

int in_config_max_concurrent(const struct in_config *c, const struct in_principal_rule *r)
{
    return r && r->max_concurrent >= 0 ? r->max_concurrent : c->quota_max_concurrent;
}
