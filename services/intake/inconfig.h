/*
 * inconfig: airlock-intake's configuration beyond the common service keys.
 * Every key has an embedded default except data_dir, so a file holding only
 * data_dir (plus the common TLS keys) runs a working intake with one pool
 * "default" served by every executor identity and open to every principal.
 *
 *   data_dir                   directory of intake.db (created 0700)
 *   pools = ( {                executor pools
 *       name = "default";                        [A-Za-z0-9._-]{1,64}
 *       executors = ["spiffe://airlock/executor/ *"];  identity globs (no space)
 *       defaults = { wall_time = "10m"; cpu_time = "10m"; memory = "512MiB";
 *                    pids = 256; file_size = "256MiB"; open_files = 256;
 *                    output = "16MiB"; cpu_millicores = 1000; };
 *       max = { ...same keys... };               ceilings; a job can only narrow
 *   } );
 *   principals = ( {           who may use which pools, first match wins
 *       principal = "acme/ **";                  glob over principal names
 *       pools = ["default"];                     globs over pool names
 *       max_queued = 10000; max_concurrent = 1000;  quotas (default quota.*)
 *       identities = [];       mTLS client identities (globs) that act as
 *                              this principal; then `principal` is a name
 *   } );
 *   quota.max_queued, quota.max_concurrent      per-principal defaults
 *   queue.max_queued           all principals together (QUEUE_FULL)
 *   queue.timeout, queue.max_timeout            JobSpec.queue_timeout_ms default / cap
 *   lease.ttl, lease.heartbeat_interval, lease.restart_grace, lease.max_slots
 *   retry.default_attempts, retry.max_attempts, retry.backoff_base, retry.backoff_max
 *   retention.jobs, retention.events, retention.idempotency, retention.sweep_interval
 *   limits.stdin, limits.file_data, limits.argv_count, limits.env_count,
 *   limits.command_bytes, limits.push_events
 *   grant.key_file, grant.key_id, grant.lifetime, grant.renew_before, grant.audience
 *   api_keys.cache_ttl         how long a key lookup is reused: the bound on
 *                              how late a revocation or expiry takes effect
 *
 * Lifecycle: in_config_fields() gives the schema to al_service_load_config();
 * in_config_check() validates the combination after loading; the pools and
 * principals are freed by al_service_free_config() with the rest.
 */
#ifndef IN_CONFIG_H
#define IN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "al_config.h"
#include "al_service.h"

#define IN_POOL_NAME_MAX 64
#define IN_NLIMITS       8 /* ResourceLimits fields, in proto field order */

/* Index of each ResourceLimits field in the limit arrays. */
enum {
    IN_LIM_WALL_TIME = 0,
    IN_LIM_CPU_TIME,
    IN_LIM_MEMORY,
    IN_LIM_PIDS,
    IN_LIM_FILE_SIZE,
    IN_LIM_OPEN_FILES,
    IN_LIM_OUTPUT,
    IN_LIM_CPU_MILLICORES
};

struct in_pool {
    char *name;
    char **executors; /* SPIFFE id globs */
    size_t n_executors;
    int64_t def[IN_NLIMITS]; /* applied where a job leaves a limit 0 */
    int64_t max[IN_NLIMITS]; /* ceilings */
};

struct in_pools {
    struct in_pool *v;
    size_t n;
};

struct in_principal_rule {
    char *principal; /* glob over principal names (a literal name with identities) */
    char **pools;    /* globs over pool names */
    size_t n_pools;
    char **identities; /* mTLS identity globs acting as `principal` */
    size_t n_identities;
    int max_queued, max_concurrent; /* -1 = quota.* default */
};

struct in_principals {
    struct in_principal_rule *v;
    size_t n;
};

struct in_config {
    struct al_service_config common;
    char *data_dir;
    struct in_pools pools;
    struct in_principals principals;
    int quota_max_queued, quota_max_concurrent;
    int queue_max_queued;
    long long queue_timeout_ms, queue_max_timeout_ms;
    long long lease_ttl_ms, heartbeat_ms, restart_grace_ms;
    int max_slots;
    int default_attempts, max_attempts;
    long long backoff_base_ms, backoff_max_ms;
    long long retention_jobs_ms, retention_events_ms, retention_idem_ms, sweep_interval_ms;
    size_t max_stdin, max_file_data, max_command_bytes;
    int max_argv, max_env, max_push_events;
    char *grant_key_file, *grant_key_id, *grant_audience;
    long long grant_lifetime_ms, grant_renew_ms;
    long long apikey_cache_ttl_ms;
};

/* The intake-specific schema (offsets into struct in_config). */
const struct al_cfg_field *in_config_fields(size_t *n);

/* Checks relations between keys (ttl vs heartbeat, defaults vs caps...).
 * Returns 0 or AL_ERR_CONFIG with a reason in err. */
int in_config_check(const struct in_config *c, char *err, size_t errlen);

/* The pool named name, or NULL. */
const struct in_pool *in_config_pool(const struct in_config *c, const char *name);

/* 1 when executor identity id may serve pool p. */
int in_config_pool_serves(const struct in_pool *p, const char *id);

/* The first principal rule matching a principal name, or NULL. */
const struct in_principal_rule *in_config_principal(const struct in_config *c, const char *name);

/* The first principal rule whose identities match an mTLS SPIFFE id, or NULL. */
const struct in_principal_rule *in_config_identity(const struct in_config *c, const char *id);

/* 1 when rule r lets its principal use pool. */
int in_config_pool_allowed(const struct in_principal_rule *r, const char *pool);

/* Effective quotas of rule r (NULL: the defaults). */
int in_config_max_queued(const struct in_config *c, const struct in_principal_rule *r);
int in_config_max_concurrent(const struct in_config *c, const struct in_principal_rule *r);

#endif
