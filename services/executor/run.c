/*
 * run: the sandbox side of an attempt (services/sandbox) and the sessions'
 * workspaces.
 *
 * The host is probed once (sb_host_new) under a name derived from this
 * executor's identity, so a restarted executor cleans up what its previous
 * run left (cgroups, workspaces). Each job gets a fresh sandbox; its limits
 * are the job's, lowered to this executor's limits.* ceilings, with the
 * ceiling used where the job left one unset (a job can only narrow operator
 * policy). ExecSpec.timeout_ms lowers the wall-time limit.
 *
 * Workspaces: a job without a session gets a fresh workspace (a size-limited
 * tmpfs made inside its sandbox, sb_request.workspace = NULL) that ends with
 * it. A session's workspace is keyed by (principal, session) — hashed, so
 * principals never share one — kept across the session's jobs and removed
 * after sandbox.session_idle without a job. A job for a session this
 * executor has expired reports workspace_reset (intake reports the case where
 * the session moved between executors).
 *
 * Network: a job without network access gets an empty network namespace.
 * A job with network mode PROXY (or credential bindings) first gets its
 * egress proxy (egress_job.c: ceiling check, credentials resolved, JobOpen,
 * JobOpened, CA bundle); its sandbox then starts with sb_request.proxy_port
 * (the sandbox's init listens on 127.0.0.1/[::1]:<port> inside the empty
 * namespace; the descriptors go to the proxy with JobListen), the proxy and
 * placeholder variables in env_internal, and, when the job needs
 * interception, its CA bundle bound read-only over the system bundle. When
 * the job ends for any reason its proxy is closed (JobClose). A job stopped
 * while its proxy is still being prepared ends from the loop (a deferred
 * end, never from inside the stop call). If the proxy dies while the job
 * runs, the sandbox is killed and the job FAILED (INTERNAL), never left
 * without its only route out. Executors with egress.enabled = false refuse
 * such jobs (POLICY_DENIED), so no job silently runs without what it asked
 * for.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "al_err.h"
#include "al_log.h"
#include "egress.h"
#include "egress_policy.h"
#include "executor.h"
#include "sandbox.h"

#define SESSION_SWEEP_S 30.0
#define EXPIRED_MAX     1024
#define WS_ID_LEN       34 /* "s-" + 32 hex */
#define FREE_WAIT_S     10.0

struct ex_session {
    struct ex_session *next;
    char id[WS_ID_LEN + 1];
    struct sb_workspace *ws;
    int users;
    ev_tstamp last_used;
};

struct ex_host {
    struct sb_host *sb;
    struct sb_config cfg;
    struct sb_bind *binds;
    char **bind_strs;
    size_t n_binds;
    char name[80];
    char run_dir[4096];
    struct ex_session *sessions;
    char expired[EXPIRED_MAX][WS_ID_LEN + 1]; /* ring of expired session ids */
    size_t n_expired;
    ev_timer sweep_w;
    struct ex *ex;
};

struct ex_run {
    struct ex_attempt *a;
    struct sb_child *child;
    struct ex_session *session; /* session workspace in use, or NULL (the job's own
                                   workspace is private to its sandbox) */
    int workspace_reset;
    struct sb_env *env, *env_int;
    /* egress proxy (network mode PROXY) */
    struct ex_ejob *ej;
    int preparing;   /* waiting for the proxy: no sandbox yet */
    int egress_lost; /* the proxy died while the sandbox ran */
    char lost_why[200];
    /* an end before the sandbox started, delivered from the loop */
    ev_timer defer_w;
    int deferred;
    Airlock__V1__JobState defer_state;
    int defer_reason;
    char defer_why[400];
};

/* ---------- sessions ---------- */

/* The workspace id of (kind, a, b): never shared by two principals' sessions. */
static int ws_id(const char *kind, const char *a, const char *b, char out[WS_ID_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(c, kind, strlen(kind) + 1) == 1 &&
             EVP_DigestUpdate(c, a, strlen(a) + 1) == 1 &&
             EVP_DigestUpdate(c, b, strlen(b) + 1) == 1 && EVP_DigestFinal_ex(c, md, &mdlen) == 1 &&
             mdlen >= 16;

    EVP_MD_CTX_free(c);
    if (!ok)
        return AL_ERR_CRYPTO;
    out[0] = kind[0];
    out[1] = '-';
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static int was_expired(const struct ex_host *h, const char *id)
{
    size_t n = h->n_expired < EXPIRED_MAX ? h->n_expired : EXPIRED_MAX;
    for (size_t i = 0; i < n; i++)
        if (strcmp(h->expired[i], id) == 0)
            return 1;
    return 0;
}

static void session_free(struct ex_host *h, struct ex_session *s, int expired)
{
    if (expired) {
        snprintf(h->expired[h->n_expired % EXPIRED_MAX], WS_ID_LEN + 1, "%s", s->id);
        h->n_expired++;
    }
    sb_workspace_destroy(s->ws);
    free(s);
}

static void sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ex_host *h = w->data;
    double idle = (double)h->ex->cfg.session_idle_ms / 1000.0;
    struct ex_session **pp = &h->sessions;

    (void)revents;
    while (*pp) {
        struct ex_session *s = *pp;
        if (!s->users && ev_now(loop) - s->last_used > idle) {
            *pp = s->next;
            AL_LOG_INFO("executor.session_expired", "workspace=%s", s->id);
            session_free(h, s, 1);
        } else {
            pp = &s->next;
        }
    }
}

/* The session's workspace, created when missing. */
static int session_get(struct ex_host *h, const char *principal, const char *session, int moved,
                       struct ex_session **out, int *reset)
{
    char id[WS_ID_LEN + 1];
    struct ex_session *s, **pp;
    int rc;

    if ((rc = ws_id("session", principal, session, id)) < 0)
        return rc;
    for (pp = &h->sessions; (s = *pp); pp = &s->next)
        if (strcmp(s->id, id) == 0)
            break;
    if (s && moved && !s->users) {
        /* the session lived elsewhere meanwhile: our copy is stale */
        *pp = s->next;
        AL_LOG_INFO("executor.session_reset",
                    "workspace=%s reason=\"the session moved here "
                    "from another executor; stale copy discarded\"",
                    s->id);
        session_free(h, s, 0);
        s = NULL;
    }
    if (moved)
        *reset = 1;
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return AL_ERR_NOMEM;
        memcpy(s->id, id, sizeof(s->id));
        rc = sb_workspace_create(h->sb, id, (int64_t)h->ex->cfg.workspace_size, &s->ws);
        if (rc < 0) {
            free(s);
            return rc;
        }
        *reset = *reset || was_expired(h, id);
        s->next = h->sessions;
        h->sessions = s;
    }
    s->users++;
    s->last_used = ev_now(h->ex->svc.loop);
    *out = s;
    return 0;
}

static void session_put(struct ex_host *h, struct ex_session *s)
{
    s->users--;
    s->last_used = ev_now(h->ex->svc.loop);
}

/* ---------- host ---------- */

static int parse_binds(struct ex_host *h, char **specs)
{
    size_t n = 0;

    while (specs && specs[n])
        n++;
    if (!n)
        return 0;
    h->binds = calloc(n, sizeof(*h->binds));
    h->bind_strs = calloc(n, sizeof(*h->bind_strs));
    if (!h->binds || !h->bind_strs)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        char *s = strdup(specs[i]), *colon;
        if (!s)
            return AL_ERR_NOMEM;
        h->bind_strs[i] = s;
        h->n_binds++;
        colon = strchr(s, ':');
        if (colon)
            *colon++ = '\0';
        h->binds[i].host = s;
        h->binds[i].inside = colon && *colon ? colon : NULL;
    }
    h->cfg.image = h->binds;
    h->cfg.n_image = n;
    return 0;
}

/* The sandbox host name: the last segment of our SPIFFE id, so a restarted
 * executor of the same identity cleans up after its predecessor. */
static void host_name(const struct ex *ex, char *buf, size_t n)
{
    const char *slash = strrchr(ex->self_id, '/');

    if (ex->cfg.sandbox_name && ex->cfg.sandbox_name[0])
        snprintf(buf, n, "%s", ex->cfg.sandbox_name);
    else
        snprintf(buf, n, "%s", slash && slash[1] ? slash + 1 : "executor");
}

int ex_host_new(struct ex *ex, char *why, size_t n)
{
    struct ex_host *h = calloc(1, sizeof(*h));
    struct sb_host_options o = {0};
    int rc;

    if (!h)
        return AL_ERR_NOMEM;
    ex->host = h;
    h->ex = ex;
    host_name(ex, h->name, sizeof(h->name));
    if ((rc = parse_binds(h, ex->cfg.ro_binds)) < 0)
        return rc;
    o.name = h->name;
    if (ex->cfg.work_dir && ex->cfg.work_dir[0]) {
        snprintf(h->run_dir, sizeof(h->run_dir), "%s/%s", ex->cfg.work_dir, h->name);
        o.run_dir = h->run_dir;
    }
    o.cgroup_parent =
        ex->cfg.cgroup_parent && ex->cfg.cgroup_parent[0] ? ex->cfg.cgroup_parent : NULL;
    o.cgroups = SB_CGROUPS_AUTO;
    o.degraded = ex->cfg.allow_degraded;
    o.uid = o.gid = (uint32_t)ex->cfg.sandbox_uid;
    o.id_base = (uint32_t)ex->cfg.sandbox_id_base;
    rc = sb_host_new(&o, &h->sb, why, n);
    if (rc < 0)
        return rc;
    struct sb_host_info info;
    sb_host_get_info(h->sb, &info);
    AL_LOG_INFO("executor.sandbox",
                "name=%s run_dir=%s memory=cgroup_v%d pids=cgroup_v%d cpu=cgroup_v%d "
                "degraded=%d seccomp_instructions=%zu job_host_uid=%u",
                info.name, info.run_dir, info.memory_version, info.pids_version, info.cpu_version,
                info.degraded, info.seccomp_instructions, (unsigned)info.host_uid);
    ev_timer_init(&h->sweep_w, sweep_cb, SESSION_SWEEP_S, SESSION_SWEEP_S);
    h->sweep_w.data = h;
    ev_timer_start(ex->svc.loop, &h->sweep_w);
    return 0;
}

void ex_host_free(struct ex *ex)
{
    struct ex_host *h = ex->host;

    if (!h)
        return;
    if (ex->svc.loop)
        ev_timer_stop(ex->svc.loop, &h->sweep_w);
    while (h->sessions) {
        struct ex_session *s = h->sessions;
        h->sessions = s->next;
        session_free(h, s, 0);
    }
    sb_host_free(h->sb);
    for (size_t i = 0; i < h->n_binds; i++)
        free(h->bind_strs[i]);
    free(h->bind_strs);
    free(h->binds);
    free(h);
    ex->host = NULL;
}

/* ---------- one job ---------- */

/* job value lowered to the ceiling; unset (0) = the ceiling */
static int64_t cap(int64_t job, int64_t ceiling)
{
    if (ceiling <= 0)
        return job > 0 ? job : 0;
    return job > 0 && job < ceiling ? job : ceiling;
}

static void effective_limits(const struct ex_config *c, const Airlock__V1__JobSpec *spec,
                             struct sb_limits *l)
{
    const Airlock__V1__ResourceLimits *j = spec->limits;
    Airlock__V1__ResourceLimits none = AIRLOCK__V1__RESOURCE_LIMITS__INIT;

    if (!j)
        j = &none;
    l->wall_time_ms = cap(j->wall_time_ms, c->lim_wall_ms);
    if (spec->exec && spec->exec->timeout_ms > 0 && spec->exec->timeout_ms < l->wall_time_ms)
        l->wall_time_ms = spec->exec->timeout_ms;
    l->cpu_time_ms = cap(j->cpu_time_ms, c->lim_cpu_ms);
    l->memory_bytes = cap(j->memory_bytes, (int64_t)c->lim_memory);
    l->pids = cap(j->pids, c->lim_pids);
    l->file_size_bytes = cap(j->file_size_bytes, (int64_t)c->lim_file_size);
    l->open_files = cap(j->open_files, c->lim_open_files);
    l->output_bytes = cap(j->output_bytes, (int64_t)c->lim_output);
    l->cpu_millicores = cap(j->cpu_millicores, c->lim_cpu_millicores);
}

static Airlock__V1__JobState state_of(const struct sb_result *r)
{
    switch (r->failure) {
    case SB_FAIL_NONE:
        return AIRLOCK__V1__JOB_STATE__JOB_STATE_SUCCEEDED;
    case SB_FAIL_TIMEOUT:
        return AIRLOCK__V1__JOB_STATE__JOB_STATE_TIMED_OUT;
    case SB_FAIL_CANCELLED:
        return AIRLOCK__V1__JOB_STATE__JOB_STATE_CANCELLED;
    default:
        return AIRLOCK__V1__JOB_STATE__JOB_STATE_FAILED;
    }
}

static void on_output(struct sb_child *c, enum sb_stream stream, const uint8_t *data, size_t len,
                      int64_t offset, void *user)
{
    struct ex_run *r = user;

    (void)c;
    if (stream == SB_FILE_DATA)
        ex_attempt_file_data(r->a, data, len, offset);
    else
        ex_attempt_output(r->a, stream == SB_STDOUT ? 1 : 2, data, len);
}

static void on_dir(struct sb_child *c, const struct sb_dirent *e, size_t n, void *user)
{
    struct ex_run *r = user;
    Airlock__V1__DirEntry *v = calloc(n ? n : 1, sizeof(*v));
    Airlock__V1__DirEntry **pv = calloc(n ? n : 1, sizeof(*pv));

    (void)c;
    if (v && pv) {
        for (size_t i = 0; i < n; i++) {
            airlock__v1__dir_entry__init(&v[i]);
            v[i].name = (char *)e[i].name;
            v[i].type = (Airlock__V1__FileType)e[i].type;
            v[i].size_bytes = e[i].size;
            v[i].mode = e[i].mode;
            v[i].modified_ms = e[i].mtime_ms;
            pv[i] = &v[i];
        }
        ex_attempt_dir_entries(r->a, pv, n);
    } else {
        AL_LOG_ERROR("executor.event", "job=%s reason=\"out of memory; entries lost\"",
                     r->a->job_id);
    }
    free(pv);
    free(v);
}

static void run_release(struct ex_run *r)
{
    struct ex_host *h = r->a->ex->host;

    ev_timer_stop(r->a->ex->svc.loop, &r->defer_w);
    ex_ejob_close(r->ej);
    r->ej = NULL;
    if (r->session)
        session_put(h, r->session);
    free(r->env);
    free(r->env_int);
    free(r);
}

static void on_exit_cb(struct sb_child *c, const struct sb_result *sr, void *user)
{
    struct ex_run *r = user;
    struct ex_attempt *a = r->a;
    Airlock__V1__JobResult res = AIRLOCK__V1__JOB_RESULT__INIT;
    Airlock__V1__EnforcedLimit lim[SB_MAX_LIMITS], *plim[SB_MAX_LIMITS];
    Airlock__V1__JobState state = state_of(sr);
    char lost_why[sizeof(r->lost_why)];

    (void)c;
    if (sr->started) {
        if (sr->term_signal) {
            res.termination_case = AIRLOCK__V1__JOB_RESULT__TERMINATION_TERM_SIGNAL;
            res.term_signal = sr->term_signal;
        } else {
            res.termination_case = AIRLOCK__V1__JOB_RESULT__TERMINATION_EXIT_CODE;
            res.exit_code = sr->exit_code;
        }
    }
    res.cpu_time_ms = sr->cpu_time_ms;
    res.wall_time_ms = sr->wall_time_ms;
    res.max_rss_bytes = sr->max_rss_bytes;
    res.stdout_bytes = sr->stdout_bytes;
    res.stderr_bytes = sr->stderr_bytes;
    res.stdout_truncated = sr->stdout_truncated;
    res.stderr_truncated = sr->stderr_truncated;
    res.data_truncated = sr->data_truncated;
    res.file_size_bytes = sr->file_size_bytes;
    for (size_t i = 0; i < sr->n_limits && i < SB_MAX_LIMITS; i++) {
        airlock__v1__enforced_limit__init(&lim[i]);
        lim[i].limit = (Airlock__V1__LimitKind)sr->limits[i].kind;
        lim[i].mechanism = (Airlock__V1__EnforcementMechanism)sr->limits[i].mechanism;
        lim[i].value = sr->limits[i].value;
        lim[i].hit = sr->limits[i].hit;
        plim[i] = &lim[i];
    }
    res.limits = plim;
    res.n_limits = sr->n_limits < SB_MAX_LIMITS ? sr->n_limits : SB_MAX_LIMITS;
    res.workspace_reset = r->workspace_reset;
    res.failure_reason = (Airlock__V1__FailureReason)sr->failure;
    res.failure_message = (char *)sr->message;
    if (r->egress_lost && a->stop == EX_STOP_NONE) {
        /* r is released below: the message is copied */
        snprintf(lost_why, sizeof(lost_why), "%s", r->lost_why);
        state = AIRLOCK__V1__JOB_STATE__JOB_STATE_FAILED;
        res.failure_reason = AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_INTERNAL;
        res.failure_message = lost_why;
    }
    AL_LOG_INFO("executor.job_end",
                "job=%s attempt=%d failure=%s exit=%d signal=%d cpu_ms=%lld "
                "wall_ms=%lld",
                a->job_id, a->attempt, sb_failure_name(sr->failure), sr->exit_code, sr->term_signal,
                (long long)sr->cpu_time_ms, (long long)sr->wall_time_ms);
    a->run = NULL;
    run_release(r);
    ex_attempt_exited(a, state, &res); /* may free a */
}

static int needs_egress(const Airlock__V1__JobSpec *spec)
{
    return spec->n_credentials ||
           (spec->network && spec->network->mode == AIRLOCK__V1__NETWORK_MODE__NETWORK_MODE_PROXY);
}

static void on_listen(struct sb_child *c, const int *fds, size_t n, void *user)
{
    struct ex_run *r = user;

    (void)c;
    if (r->ej) {
        ex_ejob_listen(r->ej, fds, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

/* The proxy's variables for env_internal (the run owns the array). */
static int egress_env(struct ex_run *r, struct sb_request *req)
{
    const char *const *names, *const *values;
    size_t n;

    ex_ejob_env(r->ej, &names, &values, &n);
    free(r->env_int);
    r->env_int = calloc(n ? n : 1, sizeof(*r->env_int));
    if (!r->env_int)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        r->env_int[i].name = names[i];
        r->env_int[i].value = values[i];
    }
    req->env_internal = r->env_int;
    req->n_env_internal = n;
    return 0;
}

/* Builds the sandbox request of r's job and starts it (bundle: the job's CA
 * bundle on the host, or NULL). */
static int launch(struct ex_run *r, const char *bundle, int *reason, char *why, size_t n)
{
    static const struct sb_callbacks cbs_tmpl = {
        .on_output = on_output, .on_dir = on_dir, .on_listen = on_listen, .on_exit = on_exit_cb};
    struct ex_attempt *a = r->a;
    struct ex_host *h = a->ex->host;
    const Airlock__V1__JobSpec *spec = a->job->spec;
    struct sb_request req = {0};
    struct sb_callbacks cbs = cbs_tmpl;
    struct sb_config cfg = h->cfg;
    struct sb_bind ca = {bundle, EX_CA_BUNDLE_INSIDE};
    int rc;

    *reason = AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_INTERNAL;
    req.kind = (enum sb_kind)spec->kind;
    req.id = NULL; /* a counter: job ids may be longer than cgroup names allow */
    effective_limits(&a->ex->cfg, spec, &req.limits);
    if (spec->kind == AIRLOCK__V1__JOB_KIND__JOB_KIND_EXEC && spec->exec) {
        const Airlock__V1__ExecSpec *x = spec->exec;
        req.argv = (const char *const *)x->argv;
        req.argc = x->n_argv;
        req.cwd = x->cwd;
        req.input = x->stdin.data;
        req.input_len = x->stdin.len;
        free(r->env);
        r->env = calloc(x->n_env ? x->n_env : 1, sizeof(*r->env));
        if (!r->env)
            return AL_ERR_NOMEM;
        for (size_t i = 0; i < x->n_env; i++) {
            r->env[i].name = x->env[i]->key;
            r->env[i].value = x->env[i]->value;
        }
        req.env = r->env;
        req.n_env = x->n_env;
    } else if (spec->file) {
        const Airlock__V1__FileSpec *f = spec->file;
        req.file.path = f->path;
        req.file.mode = f->mode;
        req.file.append = f->append;
        req.file.make_parents = f->make_parents;
        req.file.offset_bytes = f->offset_bytes;
        req.file.max_bytes = f->max_bytes;
        req.file.max_entries = f->max_entries;
        req.input = f->data.data;
        req.input_len = f->data.len;
    }
    if (r->ej) {
        if ((rc = egress_env(r, &req)) < 0)
            return rc;
        req.proxy_port = (uint16_t)a->ex->cfg.egress_port;
        if (bundle) {
            cfg.binds = &ca;
            cfg.n_binds = 1;
        }
    }
    /* the workspace */
    if (spec->session_id && spec->session_id[0]) {
        const char *principal =
            a->job->principal && a->job->principal->name ? a->job->principal->name : "";
        rc = session_get(h, principal, spec->session_id, a->workspace_reset, &r->session,
                         &r->workspace_reset);
        if (rc == 0)
            req.workspace = sb_workspace_path(r->session->ws);
    } else {
        /* made inside the sandbox and gone with it: no host mount */
        req.workspace = NULL;
        req.workspace_bytes = (int64_t)a->ex->cfg.workspace_size;
        rc = 0;
    }
    if (rc < 0) {
        snprintf(why, n, "the workspace could not be prepared");
        *reason = AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_SANDBOX_SETUP;
        AL_LOG_ERROR("executor.workspace", "job=%s reason=\"%s\"", a->job_id, al_strerror(rc));
        return rc;
    }
    /* the plan is built once, by sb_start(); only a refusal is checked again
     * for its message */
    cbs.user = r;
    rc = sb_start(a->ex->svc.loop, h->sb, &cfg, &req, &cbs, &r->child);
    if ((rc == AL_ERR_INVAL || rc == AL_ERR_CONFIG) &&
        sb_request_check(h->sb, &cfg, &req, why, n) == 0)
        why[0] = '\0'; /* refused for another reason than the request */
    if (rc < 0 && !why[0])
        snprintf(why, n, "the sandbox could not be started: %s", al_strerror(rc));
    if (rc < 0) {
        *reason = rc == AL_ERR_CONFIG  ? AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_POLICY_DENIED
                  : rc == AL_ERR_INVAL ? AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_SANDBOX_SETUP
                                       : AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_INTERNAL;
        return rc;
    }
    AL_LOG_INFO("executor.job_start", "job=%s attempt=%d kind=%d pid=%d egress=%s", a->job_id,
                a->attempt, (int)spec->kind, (int)sb_child_pid(r->child),
                r->ej ? (bundle ? "intercept" : "tunnel") : "none");
    return 0;
}

/* ---------- ends before the sandbox started ---------- */

static void defer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ex_run *r = w->data;
    struct ex_attempt *a = r->a;
    Airlock__V1__JobResult res = AIRLOCK__V1__JOB_RESULT__INIT;
    Airlock__V1__JobState state = r->defer_state;
    char why[sizeof(r->defer_why)], q[sizeof(r->defer_why) + 64];

    (void)loop;
    (void)revents;
    snprintf(why, sizeof(why), "%s", r->defer_why);
    res.failure_reason = (Airlock__V1__FailureReason)r->defer_reason;
    res.failure_message = why;
    AL_LOG_WARN("executor.job_failed", "job=%s attempt=%d reason=%s", a->job_id, a->attempt,
                al_log_quote(q, sizeof(q), why, strlen(why)));
    a->run = NULL;
    run_release(r);
    ex_attempt_exited(a, state, &res); /* may free a */
}

/* Ends r's attempt from the loop with state / reason / why (first one wins). */
static void end_early(struct ex_run *r, Airlock__V1__JobState state, int reason, const char *why)
{
    if (r->deferred)
        return;
    r->deferred = 1;
    r->preparing = 0;
    r->defer_state = state;
    r->defer_reason = reason;
    snprintf(r->defer_why, sizeof(r->defer_why), "%s", why);
    ev_timer_set(&r->defer_w, 0., 0.);
    ev_timer_start(r->a->ex->svc.loop, &r->defer_w);
}

/* ---------- the proxy's callbacks ---------- */

static void egress_ready(void *user, const char *bundle)
{
    struct ex_run *r = user;
    char why[512];
    int reason, rc;

    if (!r->preparing)
        return;
    r->preparing = 0;
    why[0] = '\0';
    rc = launch(r, bundle, &reason, why, sizeof(why));
    if (rc < 0)
        end_early(r, AIRLOCK__V1__JOB_STATE__JOB_STATE_FAILED, reason,
                  why[0] ? why : "the sandbox could not be started");
}

static void egress_failed(void *user, int reason, const char *why)
{
    struct ex_run *r = user;

    end_early(r, AIRLOCK__V1__JOB_STATE__JOB_STATE_FAILED, reason, why);
}

static void egress_lost(void *user, const char *why)
{
    struct ex_run *r = user;

    r->egress_lost = 1;
    snprintf(r->lost_why, sizeof(r->lost_why), "%s", why);
    if (r->child)
        sb_kill(r->child, SB_FAIL_INTERNAL);
}

static const struct ex_ejob_cbs ejob_cbs = {egress_ready, egress_failed, egress_lost};

int ex_run_start(struct ex_attempt *a, int *reason, char *why, size_t n)
{
    const Airlock__V1__JobSpec *spec = a->job->spec;
    struct ex_run *r;
    int rc;

    *reason = AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_INTERNAL;
    if (!spec) {
        snprintf(why, n, "the assignment carries no job spec");
        return AL_ERR_INVAL;
    }
    r = calloc(1, sizeof(*r));
    if (!r)
        return AL_ERR_NOMEM;
    r->a = a;
    ev_timer_init(&r->defer_w, defer_cb, 0., 0.);
    r->defer_w.data = r;
    if (!needs_egress(spec)) {
        rc = launch(r, NULL, reason, why, n);
        if (rc < 0) {
            run_release(r);
            return rc;
        }
        a->run = r;
        return 0;
    }
    rc = ex_ejob_open(a->ex, a, &ejob_cbs, r, &r->ej, reason, why, n);
    if (rc < 0) {
        run_release(r);
        return rc;
    }
    r->preparing = 1;
    a->run = r;
    return 0;
}

void ex_run_kill(struct ex_attempt *a)
{
    struct ex_run *r = a->run;

    if (!r)
        return;
    if (r->child)
        sb_kill(r->child, SB_FAIL_CANCELLED);
    else if (r->preparing)
        end_early(r, AIRLOCK__V1__JOB_STATE__JOB_STATE_CANCELLED,
                  AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_CANCELLED,
                  "stopped before its sandbox started");
}

void ex_run_grant(struct ex_attempt *a)
{
    if (a->run && a->run->ej && a->grant)
        ex_ejob_grant(a->run->ej, a->grant);
}

const char *ex_host_name(const struct ex *ex)
{
    return ex->host ? ex->host->name : "executor";
}

void ex_run_free(struct ex_attempt *a)
{
    struct ev_loop *loop = a->ex->svc.loop;
    ev_tstamp until;

    if (!a->run)
        return;
    if (!a->run->child) { /* no sandbox yet: nothing to wait for */
        struct ex_run *r = a->run;
        a->run = NULL;
        run_release(r);
        return;
    }
    /* only at shutdown: the sandbox must be gone before the host is freed */
    sb_kill(a->run->child, SB_FAIL_CANCELLED);
    a->finished = 1;
    until = ev_time() + FREE_WAIT_S;
    while (a->run && ev_time() < until)
        ev_run(loop, EVRUN_ONCE);
}
