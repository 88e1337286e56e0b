/*
 * exconfig: schema of airlock-executor's own keys, the parsers of the egress
 * ceiling (egress.pools) and static names (egress.resolve), each entry
 * checked with its file:line, and the cross-field checks; see exconfig.h.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "al_dest.h"
#include "al_err.h"
#include "exconfig.h"
#include "upstream.h"

#define EC(member, type) AL_CFG_OFF(struct ex_config, member, type)
#define NKEYS(a)         (sizeof(a) / sizeof((a)[0]))

/* ---------- egress.pools and egress.resolve ---------- */

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* A host as the ceiling keeps it (al_dest_host_canon), heap-allocated. */
static int canon_host(const char *h, int wildcard, char **out)
{
    char buf[AL_DEST_HOST_MAX];
    int rc = al_dest_host_canon(h, wildcard, buf, sizeof(buf));

    *out = NULL;
    if (rc < 0)
        return rc;
    return (*out = strdup(buf)) ? 0 : AL_ERR_NOMEM;
}

static int keys_known(const config_setting_t *g, const char *const *known, size_t n,
                      const char *what, char *err, size_t errlen)
{
    for (int j = 0; j < config_setting_length(g); j++) {
        const config_setting_t *m = config_setting_get_elem(g, (unsigned)j);
        size_t k = 0;
        while (k < n && strcmp(known[k], config_setting_name(m)) != 0)
            k++;
        if (k == n)
            return al_config_errf(err, errlen, m, "unknown key in %s", what);
    }
    return 0;
}

/* What a list item must be; returns 0 when valid. */
typedef int (*item_ok_fn)(const char *s);

static int method_ok(const char *s)
{
    return al_dest_method_valid(s) ? 0 : AL_ERR_INVAL;
}

static int prefix_ok(const char *s)
{
    return al_dest_path_prefix_valid(s) ? 0 : AL_ERR_INVAL;
}

static int cidr_ok(const char *s)
{
    struct rl_cidr c;
    return rl_cidr_parse(s, &c);
}

/* An optional list of strings under key, each checked by ok (and unique). */
static int str_list(const config_setting_t *g, const char *key, size_t max, item_ok_fn ok,
                    const char *what, char ***out, size_t *n, char *err, size_t errlen)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    int len;

    *out = NULL;
    *n = 0;
    if (!s)
        return 0;
    if (!config_setting_is_array(s) && !config_setting_is_list(s))
        return al_config_errf(err, errlen, s, "must be a list of strings");
    len = config_setting_length(s);
    if ((size_t)len > max)
        return al_config_errf(err, errlen, s, "at most %zu entries", max);
    if (!(*out = calloc((size_t)len + 1, sizeof(char *))))
        return AL_ERR_NOMEM;
    for (int i = 0; i < len; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *v = config_setting_get_string(e);
        if (!v || ok(v) < 0)
            return al_config_errf(err, errlen, e, "must be %s", what);
        for (size_t k = 0; k < *n; k++)
            if (strcmp((*out)[k], v) == 0)
                return al_config_errf(err, errlen, e, "listed twice");
        if (!((*out)[i] = strdup(v)))
            return AL_ERR_NOMEM;
        (*n)++;
    }
    return 0;
}

static void dest_free(struct ex_egress_dest *d)
{
    free(d->host);
    strv_free(d->methods, d->n_methods);
    strv_free(d->path_prefixes, d->n_path_prefixes);
    strv_free(d->allow_cidrs, d->n_allow_cidrs);
}

/* The special ranges a ceiling cannot open (the proxy denies them whatever
 * is listed; saying so at load time beats a surprise at run time). */
static int cidr_special(const char *s)
{
    static const char *const special[] = {
        "127.0.0.0/8", "0.0.0.0/8",     "169.254.0.0/16", "100.64.0.0/10", "::1/128",  "::/128",
        "fe80::/10",   "::ffff:0:0/96", "64:ff9b::/96",   "2002::/16",     "2001::/32"};
    struct rl_cidr c, x;

    if (rl_cidr_parse(s, &c) < 0)
        return 0;
    for (size_t i = 0; i < NKEYS(special); i++) {
        if (rl_cidr_parse(special[i], &x) < 0 || x.family != c.family)
            continue;
        /* overlap: the shorter prefix's bits agree */
        unsigned p = c.prefix < x.prefix ? c.prefix : x.prefix, bit;
        for (bit = 0; bit < p; bit++)
            if ((c.addr[bit / 8] ^ x.addr[bit / 8]) & (0x80 >> (bit % 8)))
                break;
        if (bit == p)
            return 1;
    }
    return 0;
}

static int parse_dest(const config_setting_t *g, struct ex_egress_dest *d, char *err, size_t errlen)
{
    static const char *const known[] = {"host",          "port",        "methods",
                                        "path_prefixes", "allow_cidrs", "allow_http"};
    const config_setting_t *h = config_setting_get_member(g, "host");
    const config_setting_t *p = config_setting_get_member(g, "port");
    const config_setting_t *ah = config_setting_get_member(g, "allow_http");
    int rc;

    d->port = 443;
    if (!config_setting_is_group(g))
        return al_config_errf(err, errlen, g, "each destination must be a group { host; ... }");
    if ((rc = keys_known(g, known, NKEYS(known), "a destination", err, errlen)) < 0)
        return rc;
    if (!h || !config_setting_get_string(h))
        return al_config_errf(err, errlen, g, "a destination needs host");
    rc = canon_host(config_setting_get_string(h), 1, &d->host);
    if (rc == AL_ERR_INVAL)
        return al_config_errf(err, errlen, h,
                              "must be a DNS name (optionally \"*.\"-prefixed) or an IP literal "
                              "(dotted-quad IPv4, IPv6 without brackets)");
    if (rc < 0)
        return rc;
    if (p) {
        int t = config_setting_type(p);
        long long v = config_setting_get_int64(p);
        if ((t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) || v < 1 || v > 65535)
            return al_config_errf(err, errlen, p, "must be a port number 1-65535");
        d->port = (int)v;
    }
    if (ah) {
        if (config_setting_type(ah) != CONFIG_TYPE_BOOL)
            return al_config_errf(err, errlen, ah, "must be true or false");
        d->allow_http = config_setting_get_bool(ah);
    }
    if ((rc = str_list(g, "methods", EX_EGRESS_MAX_METHODS, method_ok, "an upper-case HTTP method",
                       &d->methods, &d->n_methods, err, errlen)) < 0 ||
        (rc = str_list(g, "path_prefixes", EX_EGRESS_MAX_PREFIXES, prefix_ok,
                       "a path prefix starting with \"/\" (no spaces, controls, '?' or '#')",
                       &d->path_prefixes, &d->n_path_prefixes, err, errlen)) < 0 ||
        (rc = str_list(g, "allow_cidrs", EX_EGRESS_MAX_CIDRS, cidr_ok,
                       "an address range \"ADDR/PREFIX\" without host bits", &d->allow_cidrs,
                       &d->n_allow_cidrs, err, errlen)) < 0)
        return rc;
    for (size_t i = 0; i < d->n_allow_cidrs; i++)
        if (cidr_special(d->allow_cidrs[i]))
            return al_config_errf(err, errlen, config_setting_get_member(g, "allow_cidrs"),
                                  "%s overlaps loopback, link-local, metadata, CGNAT or a "
                                  "translated-address range, which the proxy always denies",
                                  d->allow_cidrs[i]);
    return 0;
}

static void pools_free(void *field)
{
    struct ex_egress_pools *ps = field;

    for (size_t i = 0; i < ps->n; i++) {
        for (size_t k = 0; k < ps->v[i].n_dests; k++)
            dest_free(&ps->v[i].dests[k]);
        free(ps->v[i].dests);
        free(ps->v[i].name);
    }
    free(ps->v);
    ps->v = NULL;
    ps->n = 0;
}

static int pool_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n < 1 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

static int parse_pool(const config_setting_t *g, struct ex_egress_pool *p, char *err, size_t errlen)
{
    static const char *const known[] = {"name", "destinations"};
    const config_setting_t *nm = config_setting_get_member(g, "name");
    const config_setting_t *ds = config_setting_get_member(g, "destinations");
    int rc, n;

    if (!config_setting_is_group(g))
        return al_config_errf(err, errlen, g, "each pool must be a group { name; destinations }");
    if ((rc = keys_known(g, known, NKEYS(known), "a pool", err, errlen)) < 0)
        return rc;
    if (!nm || !pool_name_ok(config_setting_get_string(nm)))
        return al_config_errf(err, errlen, nm ? nm : g,
                              "a pool needs name: 1-64 characters of [A-Za-z0-9._-]");
    if (!(p->name = strdup(config_setting_get_string(nm))))
        return AL_ERR_NOMEM;
    if (!ds)
        return 0; /* a pool without destinations: its jobs get no network */
    if (!config_setting_is_list(ds) && !config_setting_is_array(ds))
        return al_config_errf(err, errlen, ds, "must be a list of groups ( { host; ... } )");
    n = config_setting_length(ds);
    if (n > EX_EGRESS_MAX_DESTS)
        return al_config_errf(err, errlen, ds, "at most %d destinations", EX_EGRESS_MAX_DESTS);
    if (n && !(p->dests = calloc((size_t)n, sizeof(*p->dests))))
        return AL_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        rc = parse_dest(config_setting_get_elem(ds, (unsigned)i), &p->dests[i], err, errlen);
        p->n_dests++;
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int parse_pools(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    struct ex_egress_pools *ps = field;
    int n, rc;

    if (!config_setting_is_list(s) && !config_setting_is_array(s))
        return al_config_errf(err, errlen, s, "must be a list of groups ( { name; ... } )");
    n = config_setting_length(s);
    if (n && !(ps->v = calloc((size_t)n, sizeof(*ps->v))))
        return AL_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
        rc = parse_pool(g, &ps->v[i], err, errlen);
        ps->n++;
        if (rc < 0)
            return rc;
        for (int k = 0; k < i; k++)
            if (strcmp(ps->v[k].name, ps->v[i].name) == 0)
                return al_config_errf(err, errlen, g, "pool \"%s\" is listed twice", ps->v[i].name);
    }
    return 0;
}

static void resolve_free(void *field)
{
    struct ex_egress_resolve *r = field;

    strv_free(r->v, r->n);
    r->v = NULL;
    r->n = 0;
}

/* "name=address": a DNS name (not an IP literal) and an IPv4 or IPv6
 * literal, written back canonically. */
static int resolve_entry(const char *s, char **out)
{
    const char *eq = s ? strchr(s, '=') : NULL;
    char name[256], *addr = NULL, *host = NULL;
    unsigned char a[16];
    int rc;

    *out = NULL;
    if (!eq || eq == s || (size_t)(eq - s) >= sizeof(name))
        return AL_ERR_INVAL;
    memcpy(name, s, (size_t)(eq - s));
    name[eq - s] = '\0';
    if (inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1)
        return AL_ERR_INVAL;
    if (inet_pton(AF_INET, eq + 1, a) != 1 && inet_pton(AF_INET6, eq + 1, a) != 1)
        return AL_ERR_INVAL;
    if ((rc = canon_host(name, 0, &host)) < 0 || (rc = canon_host(eq + 1, 0, &addr)) < 0)
        goto out;
    rc = asprintf(out, "%s=%s", host, addr) < 0 ? AL_ERR_NOMEM : 0;
out:
    free(host);
    free(addr);
    return rc;
}

static int parse_resolve(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    struct ex_egress_resolve *r = field;
    int n;

    if (config_setting_type(s) == CONFIG_TYPE_STRING && !config_setting_get_string(s)[0])
        return 0; /* "" from a flag or the environment: none */
    if (!config_setting_is_list(s) && !config_setting_is_array(s))
        return al_config_errf(err, errlen, s, "must be a list of \"name=address\" strings");
    n = config_setting_length(s);
    if (n > EX_EGRESS_MAX_RESOLVE)
        return al_config_errf(err, errlen, s, "at most %d entries", EX_EGRESS_MAX_RESOLVE);
    if (n && !(r->v = calloc((size_t)n + 1, sizeof(char *))))
        return AL_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *v = config_setting_get_string(e);
        int rc = v ? resolve_entry(v, &r->v[i]) : AL_ERR_INVAL;
        if (rc == AL_ERR_NOMEM)
            return rc;
        if (rc < 0)
            return al_config_errf(err, errlen, e,
                                  "must be \"name=address\": a DNS name and an IPv4 or IPv6 "
                                  "literal");
        r->n++;
        size_t nl = (size_t)(strchr(r->v[i], '=') - r->v[i]);
        for (int k = 0; k < i; k++)
            if (strncmp(r->v[k], r->v[i], nl + 1) == 0)
                return al_config_errf(err, errlen, e, "this name is given twice");
    }
    return 0;
}

const struct ex_egress_pool *ex_config_egress_pool(const struct ex_config *c, const char *name)
{
    for (size_t i = 0; name && i < c->egress_pools.n; i++)
        if (strcmp(c->egress_pools.v[i].name, name) == 0)
            return &c->egress_pools.v[i];
    return NULL;
}

int ex_config_check(const struct ex_config *c, char *err, size_t errlen)
{
    if (c->egress_enabled && (!c->credstore_addr || !c->credstore_addr[0])) {
        snprintf(err, errlen,
                 "credstore.addr: required with egress.enabled (credentials are resolved and "
                 "the proxy's requests audited there)");
        return AL_ERR_CONFIG;
    }
    if (c->egress_restart_min_ms > c->egress_restart_max_ms) {
        snprintf(err, errlen, "egress.restart_min: must not exceed egress.restart_max");
        return AL_ERR_CONFIG;
    }
    if (c->egress_enabled && (long long)c->sandbox_id_base <= c->egress_uid &&
        c->egress_uid <= (long long)c->sandbox_id_base + c->sandbox_uid) {
        snprintf(err, errlen,
                 "egress.uid: %d is one of the ids the sandboxes map to (sandbox.id_base %d to "
                 "%d): the proxy must not share an id with a job",
                 c->egress_uid, c->sandbox_id_base, c->sandbox_id_base + c->sandbox_uid);
        return AL_ERR_CONFIG;
    }
    if (c->audit_flush_s <= 0) {
        snprintf(err, errlen, "audit.flush_interval: must be > 0");
        return AL_ERR_CONFIG;
    }
    return 0;
}

static const struct al_cfg_field fields[] = {
    {"intake.addr", AL_CFG_STRING, EC(intake_addr, char *), "127.0.0.1:7400",
     "intake's ExecutorService address host:port (the executor dials out)", 0, 0, 0, NULL, NULL},
    {"intake.peer", AL_CFG_STRING, EC(intake_peer, char *), "spiffe://airlock/intake/",
     "SPIFFE id prefix intake's certificate must carry", 0, 0, 0, NULL, NULL},
    {"slots", AL_CFG_INT, EC(slots, int), "2", "jobs this executor runs at once", 1, 256, 0, NULL,
     NULL},
    {"pools", AL_CFG_STRLIST, EC(pools, char **), "",
     "pools to lease from; empty = every pool intake assigns to this identity", 0, 0, 0, NULL,
     NULL},
    {"lease.reconnect_min", AL_CFG_DURATION_MS, EC(reconnect_min_ms, long long), "200ms",
     "first delay before re-opening a broken Lease stream (doubles, jittered)", 10, 60000, 0, NULL,
     NULL},
    {"lease.reconnect_max", AL_CFG_DURATION_MS, EC(reconnect_max_ms, long long), "10s",
     "longest delay between Lease stream reconnects", 100, 600000, 0, NULL, NULL},
    {"lease.safety_margin", AL_CFG_DURATION_MS, EC(safety_margin_ms, long long), "1s",
     "stop a job this long before its lease could lapse without a heartbeat", 50, 60000, 0, NULL,
     NULL},
    {"drain.grace", AL_CFG_DURATION_MS, EC(drain_grace_ms, long long), "30s",
     "on SIGTERM: how long running jobs may finish before they are handed back", 0, 3600000, 0,
     NULL, NULL},
    {"push.max_batch", AL_CFG_SIZE, EC(push_max_batch, size_t), "1MiB",
     "largest PushEvents batch (bytes of events)", 65536, 16 << 20, 0, NULL, NULL},
    {"limits.wall_time", AL_CFG_DURATION_MS, EC(lim_wall_ms, long long), "10m",
     "longest wall-clock life of a job's sandbox (ceiling and default)", 100, 7LL * 86400000, 0,
     NULL, NULL},
    {"limits.cpu_time", AL_CFG_DURATION_MS, EC(lim_cpu_ms, long long), "10m",
     "CPU time of all of a job's processes (ceiling and default)", 100, 7LL * 86400000, 0, NULL,
     NULL},
    {"limits.memory", AL_CFG_SIZE, EC(lim_memory, size_t), "512MiB",
     "memory of a job, tmpfs pages included (ceiling and default)", 4 << 20, 1LL << 40, 0, NULL,
     NULL},
    {"limits.pids", AL_CFG_INT, EC(lim_pids, int), "256",
     "processes and threads of a job alive at once (ceiling and default)", 1, 1 << 22, 0, NULL,
     NULL},
    {"limits.file_size", AL_CFG_SIZE, EC(lim_file_size, size_t), "1GiB",
     "largest file a job may write (ceiling and default)", 4096, 1LL << 40, 0, NULL, NULL},
    {"limits.open_files", AL_CFG_INT, EC(lim_open_files, int), "1024",
     "open files per process (ceiling and default)", 16, 1 << 20, 0, NULL, NULL},
    {"limits.output", AL_CFG_SIZE, EC(lim_output, size_t), "16MiB",
     "stdout + stderr of a job (ceiling and default)", 1024, 1LL << 34, 0, NULL, NULL},
    {"limits.cpu_millicores", AL_CFG_INT, EC(lim_cpu_millicores, int), "0",
     "CPU bandwidth of a job in thousandths of a CPU; 0 = not limited", 0, 1 << 20, 0, NULL, NULL},
    {"sandbox.name", AL_CFG_STRING, EC(sandbox_name, char *), "",
     "names this executor's cgroups and run directory (leftovers of an earlier run of the same "
     "name are removed at start); empty = the last segment of our SPIFFE id. Executors sharing "
     "a host need distinct names",
     0, 0, 0, NULL, NULL},
    {"sandbox.work_dir", AL_CFG_STRING, EC(work_dir, char *), "",
     "directory of the sandbox roots and the workspaces; empty = /run/airlock-sandbox/<name>", 0, 0,
     0, NULL, NULL},
    {"sandbox.workspace_size", AL_CFG_SIZE, EC(workspace_size, size_t), "1GiB",
     "size of each workspace tmpfs (also counted in the job's memory)", 1 << 20, 1LL << 40, 0, NULL,
     NULL},
    {"sandbox.session_idle", AL_CFG_DURATION_MS, EC(session_idle_ms, long long), "1h",
     "a session's workspace is removed after this long without a job", 1000, 30LL * 86400000, 0,
     NULL, NULL},
    {"sandbox.ro_binds", AL_CFG_STRLIST, EC(ro_binds, char **), "",
     "read-only rootfs binds HOST[:INSIDE]; empty = the host's /usr, /bin, /lib*, /sbin and a "
     "minimal /etc",
     0, 0, 0, NULL, NULL},
    {"sandbox.uid", AL_CFG_INT, EC(sandbox_uid, int), "1000",
     "unprivileged uid (and gid) of the job inside its user namespace", 1, 65533, 0, NULL, NULL},
    {"sandbox.id_base", AL_CFG_INT, EC(sandbox_id_base, int), "1000000000",
     "the ids the jobs' ids map to on the executor's side: inside 0 -> id_base, inside uid -> "
     "id_base + uid. In a pod with hostUsers: false (65536 ids) it must lie inside that range: "
     "id_base + sandbox.uid < 65536",
     1, 2147483647 - 65536, 0, NULL, NULL},
    {"sandbox.cgroup_parent", AL_CFG_STRING, EC(cgroup_parent, char *), "",
     "cgroup under which job cgroups are made, relative to our own; empty = airlock/<name>", 0, 0,
     0, NULL, NULL},
    {"sandbox.allow_degraded", AL_CFG_BOOL, EC(allow_degraded, int), "false",
     "run jobs even when a limit cannot be enforced on this host (reported as NONE)", 0, 0, 0, NULL,
     NULL},
    {"egress.enabled", AL_CFG_BOOL, EC(egress_enabled, int), "false",
     "start the egress proxy (airlock-egress) and run jobs with network mode PROXY; false = "
     "such jobs are refused (POLICY_DENIED)",
     0, 0, 0, NULL, NULL},
    {"egress.proxy_port", AL_CFG_INT, EC(egress_port, int), "3128",
     "port the proxy listens on inside each sandbox (127.0.0.1 and [::1])", 1, 65535, 0, NULL,
     NULL},
    {"egress.binary", AL_CFG_STRING, EC(egress_binary, char *), "",
     "the proxy binary; empty = airlock-egress next to this executor's binary", 0, 0, 0, NULL,
     NULL},
    {"egress.uid", AL_CFG_INT, EC(egress_uid, int), "65534",
     "uid the proxy drops to after start-up (never 0)", 1, 2147483647, 0, NULL, NULL},
    {"egress.gid", AL_CFG_INT, EC(egress_gid, int), "65534",
     "gid the proxy drops to after start-up (never 0)", 1, 2147483647, 0, NULL, NULL},
    {"egress.ca_file", AL_CFG_STRING, EC(egress_ca_file, char *), "",
     "CA bundle the proxy verifies upstream TLS against; empty = the system store", 0, 0, 0, NULL,
     NULL},
    {"egress.resolve", AL_CFG_CUSTOM, EC(egress_resolve, struct ex_egress_resolve), NULL,
     "static name overrides for the proxy: [\"name=address\", ...] (like curl --resolve)", 0, 0, 0,
     parse_resolve, resolve_free},
    {"egress.dns_servers", AL_CFG_STRING, EC(egress_dns_servers, char *), "",
     "DNS servers the proxy asks, \"addr:port,...\"; empty = those of /etc/resolv.conf", 0, 0, 0,
     NULL, NULL},
    {"egress.connect_timeout", AL_CFG_DURATION_MS, EC(egress_connect_timeout_ms, long long), "10s",
     "the proxy's upstream connect timeout", 100, 600000, 0, NULL, NULL},
    {"egress.open_timeout", AL_CFG_DURATION_MS, EC(egress_open_timeout_ms, long long), "20s",
     "how long a job waits for its proxy (credentials resolved, proxy ready) before it fails", 500,
     600000, 0, NULL, NULL},
    {"egress.restart_min", AL_CFG_DURATION_MS, EC(egress_restart_min_ms, long long), "200ms",
     "first delay before restarting a proxy that died (doubles, jittered)", 10, 600000, 0, NULL,
     NULL},
    {"egress.restart_max", AL_CFG_DURATION_MS, EC(egress_restart_max_ms, long long), "10s",
     "longest delay between proxy restarts", 10, 3600000, 0, NULL, NULL},
    {"egress.log_level", AL_CFG_STRING, EC(egress_log_level, char *), "",
     "the proxy's log level (debug|info|warn|error); empty = log_level", 0, 0, 0, NULL, NULL},
    {"egress.limits.connections", AL_CFG_INT, EC(egress_max_connections, int), "64",
     "connections a job may have open through the proxy at once", 1, 65535, 0, NULL, NULL},
    {"egress.limits.bytes", AL_CFG_SIZE, EC(egress_max_bytes, size_t), "0",
     "bytes both ways over a job's life through the proxy; 0 = unlimited", 0, 0, 0, NULL, NULL},
    {"egress.limits.requests_per_second", AL_CFG_INT, EC(egress_rps, int), "0",
     "requests and tunnels per second per job (token bucket); 0 = unlimited", 0, 1000000, 0, NULL,
     NULL},
    {"egress.limits.burst", AL_CFG_INT, EC(egress_burst, int), "0",
     "token bucket size; 0 = requests_per_second", 0, 1000000, 0, NULL, NULL},
    {"egress.limits.idle_timeout", AL_CFG_DURATION_MS, EC(egress_idle_ms, long long), "60s",
     "a proxied connection idle this long both ways is closed", 100, 86400000, 0, NULL, NULL},
    {"egress.limits.total_timeout", AL_CFG_DURATION_MS, EC(egress_total_ms, long long), "0",
     "no proxied connection lives longer; 0 = until the job ends", 0, 7LL * 86400000, 0, NULL,
     NULL},
    {"egress.pools", AL_CFG_CUSTOM, EC(egress_pools, struct ex_egress_pools), NULL,
     "the egress ceiling per pool: ( { name; destinations = ( { host; port; methods; "
     "path_prefixes; allow_cidrs; allow_http } ) } ); a pool without entries allows nothing",
     0, 0, 0, parse_pools, pools_free},
    {"credstore.addr", AL_CFG_STRING, EC(credstore_addr, char *), "",
     "credstore's CredentialResolver address host:port (mTLS with this executor's identity); "
     "required with egress.enabled",
     0, 0, 0, NULL, NULL},
    {"credstore.peer", AL_CFG_STRING, EC(credstore_peer, char *), "spiffe://airlock/credstore/",
     "SPIFFE id prefix credstore's certificate must carry", 0, 0, 0, NULL, NULL},
    {"credstore.timeout", AL_CFG_DOUBLE, EC(credstore_timeout_s, double), "10",
     "deadline of each Resolve and AppendAudit call (seconds)", 1, 300, 0, NULL, NULL},
    {"audit.batch_max", AL_CFG_INT, EC(audit_batch_max, int), "500",
     "use records per AppendAudit batch", 1, 1000, 0, NULL, NULL},
    {"audit.flush_interval", AL_CFG_DOUBLE, EC(audit_flush_s, double), "0.5",
     "longest wait of a use record before its batch leaves (seconds)", 0, 60, 0, NULL, NULL},
    {"audit.max_pending", AL_CFG_INT, EC(audit_max_pending, int), "20000",
     "use records queued at most; beyond it the proxy's requests wait (back-pressure)", 10,
     10000000, 0, NULL, NULL},
};

const struct al_cfg_field *ex_config_fields(size_t *n)
{
    *n = sizeof(fields) / sizeof(fields[0]);
    return fields;
}
