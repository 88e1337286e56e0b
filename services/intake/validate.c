/*
 * validate: JobSpec rules, canonical form and effective values; see
 * validate.h. Each check function returns 0 or fails through bad(), which
 * records the first problem.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "airlock/v1/common.pb-c.h"
#include "al_dest.h"
#include "al_err.h"
#include "al_grpc.h"
#include "inutil.h"
#include "sm.h"
#include "validate.h"

#define REASON(x) AIRLOCK__V1__ERROR_REASON__ERROR_REASON_##x
#define KIND(x)   AIRLOCK__V1__JOB_KIND__JOB_KIND_##x
#define NET(x)    AIRLOCK__V1__NETWORK_MODE__NETWORK_MODE_##x

static int bad(struct in_verr *e, int status, int reason, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int bad(struct in_verr *e, int status, int reason, const char *field, const char *fmt, ...)
{
    va_list ap;
    e->status = status;
    e->reason = reason;
    snprintf(e->field, sizeof(e->field), "%s", field);
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return AL_ERR_INVAL;
}

#define INVALID(e, field, ...)                                                                     \
    bad((e), AL_GRPC_INVALID_ARGUMENT, REASON(INVALID_FIELD), (field), __VA_ARGS__)
#define TOOLARGE(e, field, ...)                                                                    \
    bad((e), AL_GRPC_INVALID_ARGUMENT, REASON(TOO_LARGE), (field), __VA_ARGS__)

int in_idem_key_valid(const char *s)
{
    size_t n = 0;
    if (!s)
        return 0;
    for (; s[n]; n++)
        if (n >= 128 || (unsigned char)s[n] < 0x20 || (unsigned char)s[n] > 0x7e)
            return 0;
    return n > 0;
}

int in_session_valid(const char *s)
{
    return in_name_valid(s, 128);
}

/* "spec.exec.env[NAME]" when the key is short printable ASCII, else the map. */
static void map_field(char *buf, size_t n, const char *map, const char *key)
{
    size_t len = key ? strlen(key) : 0;
    int printable = len > 0 && len <= 64;
    for (size_t i = 0; printable && i < len; i++)
        printable = key[i] > 0x20 && key[i] < 0x7f && key[i] != ']';
    if (printable)
        snprintf(buf, n, "%s[%s]", map, key);
    else
        snprintf(buf, n, "%s", map);
}

/* ---- unknown fields ---- */

/* 1 when m or any message below it carries fields this intake does not know. */
static int has_unknown(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d;
    if (!m)
        return 0;
    if (m->n_unknown_fields)
        return 1;
    d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                if (has_unknown(v[k]))
                    return 1;
        } else if (has_unknown(*(ProtobufCMessage *const *)(base + f->offset))) {
            return 1;
        }
    }
    return 0;
}

/* ---- parts of the spec ---- */

static int check_env(const struct in_validate_ctx *x, const Airlock__V1__JobSpec *spec,
                     size_t *bytes, struct in_verr *e)
{
    const Airlock__V1__ExecSpec *ex = spec->exec;
    char field[160];

    if (ex->n_env > (size_t)x->cfg->max_env)
        return TOOLARGE(e, "spec.exec.env", "at most %d environment variables", x->cfg->max_env);
    for (size_t i = 0; i < ex->n_env; i++) {
        const char *k = ex->env[i]->key, *v = ex->env[i]->value;
        map_field(field, sizeof(field), "spec.exec.env", k);
        if (!in_env_name_valid(k))
            return INVALID(e, field, "environment variable names match [A-Za-z_][A-Za-z0-9_]*");
        if (strncmp(k, "AIRLOCK_", 8) == 0)
            return INVALID(e, field, "names starting with AIRLOCK_ are reserved");
        for (size_t j = 0; j < i; j++)
            if (strcmp(ex->env[j]->key, k) == 0)
                return INVALID(e, field, "environment variable given twice");
        for (size_t c = 0; c < spec->n_credentials; c++)
            if (spec->credentials[c]->env_var && strcmp(spec->credentials[c]->env_var, k) == 0)
                return INVALID(e, field,
                               "this variable receives a credential placeholder "
                               "(spec.credentials[%zu].env_var); it cannot also be set",
                               c);
        *bytes += strlen(k) + strlen(v ? v : "") + 2;
    }
    return 0;
}

static int check_exec(const struct in_validate_ctx *x, const Airlock__V1__JobSpec *spec,
                      struct in_verr *e)
{
    const Airlock__V1__ExecSpec *ex = spec->exec;
    size_t bytes = 0;
    int rc;

    if (!ex)
        return INVALID(e, "spec.exec", "JOB_KIND_EXEC needs exec");
    if (spec->file)
        return INVALID(e, "spec.file", "file must be unset for JOB_KIND_EXEC");
    if (ex->n_argv == 0)
        return INVALID(e, "spec.exec.argv", "argv needs at least one element (the program)");
    if (ex->n_argv > (size_t)x->cfg->max_argv)
        return TOOLARGE(e, "spec.exec.argv", "at most %d argv elements", x->cfg->max_argv);
    if (!ex->argv[0] || !ex->argv[0][0])
        return INVALID(e, "spec.exec.argv[0]", "the program name is empty");
    for (size_t i = 0; i < ex->n_argv; i++)
        bytes += strlen(ex->argv[i] ? ex->argv[i] : "") + 1;
    if ((rc = check_env(x, spec, &bytes, e)) < 0)
        return rc;
    if (ex->cwd && strlen(ex->cwd) > IN_PATH_MAX)
        return TOOLARGE(e, "spec.exec.cwd", "cwd is longer than %d bytes", IN_PATH_MAX);
    bytes += ex->cwd ? strlen(ex->cwd) : 0;
    if (bytes > x->cfg->max_command_bytes)
        return TOOLARGE(e, "spec.exec", "argv, env and cwd together are over %zu bytes",
                        x->cfg->max_command_bytes);
    if (ex->timeout_ms < 0)
        return INVALID(e, "spec.exec.timeout_ms", "must not be negative");
    if (ex->stdin.len > x->cfg->max_stdin)
        return TOOLARGE(e, "spec.exec.stdin", "stdin is over %zu bytes", x->cfg->max_stdin);
    return 0;
}

/* Lexically inside /workspace: relative or under "/workspace/", no "..". */
static int in_workspace(const char *p)
{
    const char *s = p;
    if (p[0] == '/') {
        if (strncmp(p, "/workspace", 10) != 0 || (p[10] != '/' && p[10] != '\0'))
            return 0;
        s = p + 10;
    }
    for (const char *c = s; *c;) {
        while (*c == '/')
            c++;
        const char *end = strchr(c, '/');
        size_t len = end ? (size_t)(end - c) : strlen(c);
        if (len == 2 && c[0] == '.' && c[1] == '.')
            return 0;
        c += len;
    }
    return 1;
}

static int check_file(const struct in_validate_ctx *x, const Airlock__V1__JobSpec *spec,
                      struct in_verr *e)
{
    const Airlock__V1__FileSpec *f = spec->file;

    if (!f)
        return INVALID(e, "spec.file", "file operations need file");
    if (spec->exec)
        return INVALID(e, "spec.exec", "exec must be unset for file operations");
    if (!f->path || !f->path[0])
        return INVALID(e, "spec.file.path", "path is required");
    if (strlen(f->path) > IN_PATH_MAX)
        return TOOLARGE(e, "spec.file.path", "path is longer than %d bytes", IN_PATH_MAX);
    if (spec->kind == KIND(WRITE_FILE)) {
        if (!in_workspace(f->path))
            return INVALID(e, "spec.file.path",
                           "WRITE_FILE accepts only paths inside the workspace (relative, or "
                           "under /workspace, without \"..\")");
        if (f->data.len > x->cfg->max_file_data)
            return TOOLARGE(e, "spec.file.data", "data is over %zu bytes", x->cfg->max_file_data);
    } else if (f->data.len) {
        return INVALID(e, "spec.file.data", "data is only for JOB_KIND_WRITE_FILE");
    }
    if (f->max_bytes < 0)
        return INVALID(e, "spec.file.max_bytes", "must not be negative");
    if (f->offset_bytes < 0)
        return INVALID(e, "spec.file.offset_bytes", "must not be negative");
    if (f->max_entries < 0)
        return INVALID(e, "spec.file.max_entries", "must not be negative");
    return 0;
}

static int check_limits(const Airlock__V1__ResourceLimits *l, struct in_verr *e)
{
    static const char *const names[IN_NLIMITS] = {"wall_time_ms", "cpu_time_ms",     "memory_bytes",
                                                  "pids",         "file_size_bytes", "open_files",
                                                  "output_bytes", "cpu_millicores"};
    int64_t v[IN_NLIMITS];
    char field[64];

    if (!l)
        return 0;
    v[0] = l->wall_time_ms;
    v[1] = l->cpu_time_ms;
    v[2] = l->memory_bytes;
    v[3] = l->pids;
    v[4] = l->file_size_bytes;
    v[5] = l->open_files;
    v[6] = l->output_bytes;
    v[7] = l->cpu_millicores;
    for (int i = 0; i < IN_NLIMITS; i++) {
        if (v[i] < 0) {
            snprintf(field, sizeof(field), "spec.limits.%s", names[i]);
            return INVALID(e, field, "must not be negative");
        }
    }
    return 0;
}

static int check_dest(const Airlock__V1__NetworkDestination *d, size_t i, struct in_verr *e)
{
    char field[96];

    snprintf(field, sizeof(field), "spec.network.destinations[%zu].host", i);
    if (!al_dest_host_valid(d->host, 1))
        return INVALID(e, field,
                       "host must be a DNS name (optionally \"*.\"-prefixed) or an IP "
                       "literal");
    snprintf(field, sizeof(field), "spec.network.destinations[%zu].port", i);
    if (d->port < 0 || d->port > 65535)
        return INVALID(e, field, "port must be 0 (443) to 65535");
    for (size_t k = 0; k < d->n_methods; k++) {
        snprintf(field, sizeof(field), "spec.network.destinations[%zu].methods[%zu]", i, k);
        if (!al_dest_method_valid(d->methods[k]))
            return INVALID(e, field, "methods are upper-case HTTP method names");
    }
    for (size_t k = 0; k < d->n_path_prefixes; k++) {
        snprintf(field, sizeof(field), "spec.network.destinations[%zu].path_prefixes[%zu]", i, k);
        if (!al_dest_path_prefix_valid(d->path_prefixes[k]))
            return INVALID(e, field,
                           "each path prefix begins with \"/\" (at most 1024 bytes) and holds no "
                           "spaces, controls, '?' or '#'");
    }
    return 0;
}

static int check_network(const struct in_validate_ctx *x, const Airlock__V1__JobSpec *spec,
                         struct in_verr *e)
{
    const Airlock__V1__NetworkPolicy *n = spec->network;
    int rc;

    if (!n)
        return 0;
    if (n->mode != NET(UNSPECIFIED) && n->mode != NET(NONE) && n->mode != NET(PROXY))
        return INVALID(e, "spec.network.mode", "unknown network mode %d", (int)n->mode);
    if (n->mode != NET(PROXY) && n->n_destinations)
        return INVALID(e, "spec.network.destinations",
                       "destinations need network mode NETWORK_MODE_PROXY");
    if (n->mode == NET(PROXY) && spec->kind != KIND(EXEC))
        return INVALID(e, "spec.network.mode", "network access is only for JOB_KIND_EXEC");
    if (n->n_destinations > IN_MAX_DESTS)
        return TOOLARGE(e, "spec.network.destinations", "at most %d destinations", IN_MAX_DESTS);
    for (size_t i = 0; i < n->n_destinations; i++)
        if ((rc = check_dest(n->destinations[i], i, e)) < 0)
            return rc;
    /* every request the egress proxy handles for the job is audited under
     * the attempt's grant (ingrant.h) */
    if (n->mode == NET(PROXY) && !x->can_sign)
        return bad(e, AL_GRPC_INVALID_ARGUMENT, REASON(UNSUPPORTED), "spec.network.mode",
                   "this intake has no grant signing key (grant.key_file), so it cannot run "
                   "jobs with network mode NETWORK_MODE_PROXY: their proxied requests are "
                   "audited under the attempt's grant");
    return 0;
}

static int covered(const Airlock__V1__NetworkPolicy *n, const char *host, int port)
{
    for (size_t i = 0; n && i < n->n_destinations; i++)
        if (al_dest_covers(n->destinations[i]->host, n->destinations[i]->port, host, port))
            return 1;
    return 0;
}

static int cred_name_valid(const char *s)
{
    size_t n = 0;
    if (!s)
        return 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= IN_CRED_MAX ||
            !(isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-' || c == '/'))
            return 0;
    }
    return n > 0 && s[0] != '/' && s[n - 1] != '/' && !strstr(s, "//");
}

static int check_binding(const struct in_validate_ctx *x, const Airlock__V1__JobSpec *spec,
                         size_t i, struct in_verr *e)
{
    const Airlock__V1__CredentialBinding *b = spec->credentials[i];
    char field[96], host[300];
    int port;

    snprintf(field, sizeof(field), "spec.credentials[%zu].credential", i);
    if (!cred_name_valid(b->credential))
        return INVALID(e, field, "credential names are 1-128 characters of [A-Za-z0-9._/-]");
    snprintf(field, sizeof(field), "spec.credentials[%zu].env_var", i);
    if (!in_env_name_valid(b->env_var))
        return INVALID(e, field, "env_var must match [A-Za-z_][A-Za-z0-9_]*");
    if (strncmp(b->env_var, "AIRLOCK_", 8) == 0)
        return INVALID(e, field, "names starting with AIRLOCK_ are reserved");
    for (size_t j = 0; j < i; j++)
        if (strcmp(spec->credentials[j]->env_var, b->env_var) == 0)
            return INVALID(e, field, "env_var must be unique among the bindings");
    snprintf(field, sizeof(field), "spec.credentials[%zu].destinations", i);
    if (b->n_destinations == 0)
        return INVALID(e, field, "at least one destination is needed");
    if (b->n_destinations > IN_MAX_DESTS)
        return TOOLARGE(e, field, "at most %d destinations", IN_MAX_DESTS);
    for (size_t k = 0; k < b->n_destinations; k++) {
        snprintf(field, sizeof(field), "spec.credentials[%zu].destinations[%zu]", i, k);
        if (al_dest_parse(b->destinations[k], host, sizeof(host), &port) < 0)
            return INVALID(e, field, "destinations are \"host[:port]\" (IPv6 in brackets)");
        if (!covered(spec->network, host, port))
            return INVALID(e, field,
                           "not covered by any spec.network.destinations entry (host and port)");
    }
    (void)x;
    return 0;
}

static int check_credentials(const struct in_validate_ctx *x, const Airlock__V1__JobSpec *spec,
                             struct in_verr *e)
{
    int rc;
    if (spec->n_credentials == 0)
        return 0;
    if (spec->kind != KIND(EXEC))
        return INVALID(e, "spec.credentials", "credentials are only for JOB_KIND_EXEC");
    if (!spec->network || spec->network->mode != NET(PROXY))
        return INVALID(e, "spec.credentials", "credentials need network mode NETWORK_MODE_PROXY");
    if (spec->n_credentials > IN_MAX_BINDINGS)
        return TOOLARGE(e, "spec.credentials", "at most %d credential bindings", IN_MAX_BINDINGS);
    for (size_t i = 0; i < spec->n_credentials; i++)
        if ((rc = check_binding(x, spec, i, e)) < 0)
            return rc;
    if (!x->can_sign)
        return bad(e, AL_GRPC_INVALID_ARGUMENT, REASON(UNSUPPORTED), "spec.credentials",
                   "this intake has no grant signing key (grant.key_file), so it cannot run "
                   "jobs that bind credentials");
    return 0;
}

static int check_labels(const Airlock__V1__JobSpec *spec, struct in_verr *e)
{
    char field[160];
    if (spec->n_labels > IN_MAX_LABELS)
        return TOOLARGE(e, "spec.labels", "at most %d labels", IN_MAX_LABELS);
    for (size_t i = 0; i < spec->n_labels; i++) {
        const char *k = spec->labels[i]->key, *v = spec->labels[i]->value;
        size_t n = k ? strlen(k) : 0;
        map_field(field, sizeof(field), "spec.labels", k);
        if (n < 1 || n > 63)
            return INVALID(e, field, "label keys are 1-63 characters of [a-z0-9._-]");
        for (size_t c = 0; c < n; c++)
            if (!((k[c] >= 'a' && k[c] <= 'z') || (k[c] >= '0' && k[c] <= '9') || k[c] == '.' ||
                  k[c] == '_' || k[c] == '-'))
                return INVALID(e, field, "label keys are 1-63 characters of [a-z0-9._-]");
        if (v && strlen(v) > 256)
            return TOOLARGE(e, field, "label values are at most 256 bytes");
        for (size_t j = 0; j < i; j++)
            if (strcmp(spec->labels[j]->key, k) == 0)
                return INVALID(e, field, "label given twice");
    }
    return 0;
}

static int check_pool(const struct in_validate_ctx *x, const Airlock__V1__JobSpec *spec,
                      struct in_verr *e)
{
    if (!spec->pool || !spec->pool[0])
        return INVALID(e, "spec.pool", "pool is required");
    if (!in_name_valid(spec->pool, IN_POOL_NAME_MAX))
        return INVALID(e, "spec.pool", "pool names are 1-64 characters of [A-Za-z0-9._-]");
    /* unknown and forbidden pools get the same answer */
    if (!in_config_pool(x->cfg, spec->pool) || !in_config_pool_allowed(x->rule, spec->pool))
        return bad(e, AL_GRPC_PERMISSION_DENIED, REASON(POOL_NOT_ALLOWED), "spec.pool",
                   "pool \"%s\" does not exist or this principal may not use it", spec->pool);
    return 0;
}

int in_validate_spec(const struct in_validate_ctx *x, const Airlock__V1__JobSpec *spec,
                     struct in_verr *e)
{
    int rc;

    if (!spec)
        return INVALID(e, "spec", "spec is required");
    if (has_unknown(&spec->base))
        return INVALID(e, "spec", "the spec carries fields this intake does not know");
    if ((rc = check_pool(x, spec, e)) < 0)
        return rc;
    if (spec->session_id && spec->session_id[0] && !in_session_valid(spec->session_id))
        return INVALID(e, "spec.session_id", "session ids are 1-128 characters of [A-Za-z0-9._-]");
    switch (spec->kind) {
    case KIND(EXEC):
        rc = check_exec(x, spec, e);
        break;
    case KIND(READ_FILE):
    case KIND(WRITE_FILE):
    case KIND(LIST_DIR):
        rc = check_file(x, spec, e);
        break;
    case KIND(UNSPECIFIED):
        return INVALID(e, "spec.kind", "kind is required");
    default:
        return INVALID(e, "spec.kind", "unknown job kind %d", (int)spec->kind);
    }
    if (rc < 0 || (rc = check_limits(spec->limits, e)) < 0 ||
        (rc = check_network(x, spec, e)) < 0 || (rc = check_credentials(x, spec, e)) < 0 ||
        (rc = check_labels(spec, e)) < 0)
        return rc;
    if (spec->queue_timeout_ms < 0)
        return INVALID(e, "spec.queue_timeout_ms", "must not be negative");
    if (spec->max_attempts < 0)
        return INVALID(e, "spec.max_attempts", "must not be negative");
    return 0;
}

/* ---- canonical form and effective values ---- */

static int env_cmp(const void *a, const void *b)
{
    const Airlock__V1__ExecSpec__EnvEntry *x = *(Airlock__V1__ExecSpec__EnvEntry *const *)a;
    const Airlock__V1__ExecSpec__EnvEntry *y = *(Airlock__V1__ExecSpec__EnvEntry *const *)b;
    return strcmp(x->key, y->key);
}

static int label_cmp(const void *a, const void *b)
{
    const Airlock__V1__JobSpec__LabelsEntry *x = *(Airlock__V1__JobSpec__LabelsEntry *const *)a;
    const Airlock__V1__JobSpec__LabelsEntry *y = *(Airlock__V1__JobSpec__LabelsEntry *const *)b;
    return strcmp(x->key, y->key);
}

void in_spec_canonical(Airlock__V1__JobSpec *spec)
{
    if (spec->exec && spec->exec->n_env > 1)
        qsort(spec->exec->env, spec->exec->n_env, sizeof(*spec->exec->env), env_cmp);
    if (spec->n_labels > 1)
        qsort(spec->labels, spec->n_labels, sizeof(*spec->labels), label_cmp);
}

static int64_t clamp(int64_t v, int64_t def, int64_t max)
{
    if (v == 0)
        v = def;
    if (max > 0 && v > max)
        v = max;
    return v;
}

int in_spec_resolve(const struct in_config *cfg, const struct in_pool *pool,
                    Airlock__V1__JobSpec *spec, struct al_arena *a)
{
    Airlock__V1__ResourceLimits *l = spec->limits;

    if (!l) {
        l = al_arena_alloc(a, sizeof(*l));
        if (!l)
            return AL_ERR_NOMEM;
        airlock__v1__resource_limits__init(l);
        spec->limits = l;
    }
    l->wall_time_ms =
        clamp(l->wall_time_ms, pool->def[IN_LIM_WALL_TIME], pool->max[IN_LIM_WALL_TIME]);
    l->cpu_time_ms = clamp(l->cpu_time_ms, pool->def[IN_LIM_CPU_TIME], pool->max[IN_LIM_CPU_TIME]);
    l->memory_bytes = clamp(l->memory_bytes, pool->def[IN_LIM_MEMORY], pool->max[IN_LIM_MEMORY]);
    l->pids = clamp(l->pids, pool->def[IN_LIM_PIDS], pool->max[IN_LIM_PIDS]);
    l->file_size_bytes =
        clamp(l->file_size_bytes, pool->def[IN_LIM_FILE_SIZE], pool->max[IN_LIM_FILE_SIZE]);
    l->open_files =
        clamp(l->open_files, pool->def[IN_LIM_OPEN_FILES], pool->max[IN_LIM_OPEN_FILES]);
    l->output_bytes = clamp(l->output_bytes, pool->def[IN_LIM_OUTPUT], pool->max[IN_LIM_OUTPUT]);
    l->cpu_millicores = clamp(l->cpu_millicores, pool->def[IN_LIM_CPU_MILLICORES],
                              pool->max[IN_LIM_CPU_MILLICORES]);
    spec->max_attempts =
        in_sm_effective_attempts(spec->max_attempts, cfg->default_attempts, cfg->max_attempts);
    spec->queue_timeout_ms =
        clamp(spec->queue_timeout_ms, cfg->queue_timeout_ms, cfg->queue_max_timeout_ms);
    return 0;
}
