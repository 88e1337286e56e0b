/*
 * exconfig: airlock-executor's configuration beyond the common service keys.
 *
 *   intake.addr              intake's ExecutorService address (dialled out)
 *   intake.peer              SPIFFE id prefix intake's certificate must carry
 *   slots                    jobs held at once
 *   pools                    pools to lease from (empty = every pool intake assigns us)
 *   lease.reconnect_min/max  backoff of the Lease stream's reconnects (jittered)
 *   lease.safety_margin      stop a job this long before its lease could lapse
 *   drain.grace              on SIGTERM, how long running jobs may finish
 *                            before they are stopped and handed back
 *   push.max_batch           largest PushEvents batch
 *   limits.*                 ceiling of each job limit at this executor, also the
 *                            value used when a job leaves it unset (a job can only
 *                            narrow it)
 *   sandbox.*                see run.c
 *
 * The egress proxy (egress.c, egress_job.c; README "Egress proxy"):
 *   egress.enabled           start airlock-egress and run jobs with network
 *                            mode PROXY; false = such jobs are refused
 *   egress.proxy_port        port the proxy listens on inside each sandbox
 *                            (127.0.0.1 and [::1])
 *   egress.binary            the proxy binary; "" = airlock-egress next to
 *                            this executor's own binary
 *   egress.uid, egress.gid   ids the proxy drops to after start-up
 *   egress.ca_file           trust store for the proxy's upstream TLS; "" =
 *                            the system store
 *   egress.resolve           static name overrides "name=address" (like
 *                            curl --resolve), for internal names
 *   egress.dns_servers       DNS servers the proxy asks ("addr:port,..."); "" =
 *                            those of /etc/resolv.conf
 *   egress.connect_timeout   the proxy's upstream connect timeout
 *   egress.open_timeout      how long a job waits for its proxy (credentials
 *                            resolved, JobOpened) before it fails
 *   egress.restart_min/max   backoff of restarts of a proxy that died
 *   egress.log_level         the proxy's log level; "" = log_level
 *   egress.limits.*          per job: connections, bytes, requests_per_second,
 *                            burst, idle_timeout, total_timeout
 *   egress.pools             the operator's ceiling per pool:
 *       ( { name = "ci"; destinations = ( { host = "api.github.com";
 *           port = 443; methods = ["GET"]; path_prefixes = ["/repos/"];
 *           allow_cidrs = ["10.20.0.0/16"]; allow_http = false; } ); } )
 *     host: a DNS name (a leading "*." matches one or more extra labels) or
 *     an IP literal; port 1-65535 (default 443); methods (upper case) and
 *     path_prefixes (each starting with "/") empty = any; allow_cidrs: the
 *     private ranges the name may resolve to (loopback, link-local, metadata
 *     and the other special ranges stay denied and cannot be listed);
 *     allow_http: plain http:// requests allowed. A job's destinations must
 *     each lie inside one entry of its pool's ceiling (same or narrower host,
 *     same port, methods and path prefixes only narrowing); a pool without
 *     an entry allows nothing.
 *   credstore.addr, .peer, .timeout
 *                            credstore's CredentialResolver (mTLS with this
 *                            executor's identity): credential values are
 *                            resolved there with the attempt's grant, and
 *                            the proxy's use records are appended there
 *   audit.batch_max, .flush_interval, .max_pending
 *                            batching of those records (al_edge.h)
 */
#ifndef EX_CONFIG_H
#define EX_CONFIG_H
#include <stddef.h>

#include "al_config.h"
#include "al_service.h"

#define EX_EGRESS_MAX_DESTS    256 /* entries of one pool's ceiling */
#define EX_EGRESS_MAX_METHODS  16
#define EX_EGRESS_MAX_PREFIXES 64
#define EX_EGRESS_MAX_CIDRS    32
#define EX_EGRESS_MAX_RESOLVE  256

/* One entry of a pool's egress ceiling (strings canonical: lower-case host,
 * IPv6 as inet_ntop writes it). */
struct ex_egress_dest {
    char *host;
    int port;
    char **methods;
    size_t n_methods;
    char **path_prefixes;
    size_t n_path_prefixes;
    char **allow_cidrs;
    size_t n_allow_cidrs;
    int allow_http;
};

struct ex_egress_pool {
    char *name;
    struct ex_egress_dest *dests;
    size_t n_dests;
};

struct ex_egress_pools {
    struct ex_egress_pool *v;
    size_t n;
};

/* egress.resolve: "name=address" entries, canonical. */
struct ex_egress_resolve {
    char **v;
    size_t n;
};

struct ex_config {
    struct al_service_config common;
    char *intake_addr;
    char *intake_peer;
    int slots;
    char **pools;
    long long reconnect_min_ms, reconnect_max_ms;
    long long safety_margin_ms;
    long long drain_grace_ms;
    size_t push_max_batch;
    /* ceilings and defaults of the jobs' limits (0 = none for cpu_millicores) */
    long long lim_wall_ms, lim_cpu_ms;
    size_t lim_memory, lim_file_size, lim_output;
    int lim_pids, lim_open_files, lim_cpu_millicores;
    /* sandbox */
    char *sandbox_name;
    char *work_dir;
    size_t workspace_size;
    long long session_idle_ms;
    char **ro_binds;
    int sandbox_uid;
    int sandbox_id_base;
    char *cgroup_parent;
    int allow_degraded;
    /* egress proxy */
    int egress_enabled;
    int egress_port;
    char *egress_binary;
    int egress_uid, egress_gid;
    char *egress_ca_file;
    struct ex_egress_resolve egress_resolve;
    char *egress_dns_servers;
    long long egress_connect_timeout_ms, egress_open_timeout_ms;
    long long egress_restart_min_ms, egress_restart_max_ms;
    char *egress_log_level;
    int egress_max_connections, egress_rps, egress_burst;
    size_t egress_max_bytes;
    long long egress_idle_ms, egress_total_ms;
    struct ex_egress_pools egress_pools;
    /* credstore and use records */
    char *credstore_addr, *credstore_peer;
    double credstore_timeout_s;
    int audit_batch_max, audit_max_pending;
    double audit_flush_s;
};

/* Cross-field rules the schema cannot express (egress.enabled needs
 * credstore.addr, restart_min <= restart_max). Returns 0 or AL_ERR_CONFIG
 * with "key: reason" in err. */
int ex_config_check(const struct ex_config *c, char *err, size_t errlen);

/* The ceiling of pool `name`, or NULL (= nothing allowed). */
const struct ex_egress_pool *ex_config_egress_pool(const struct ex_config *c, const char *name);

/* The executor-specific schema (offsets into struct ex_config). */
const struct al_cfg_field *ex_config_fields(size_t *n);

#endif
