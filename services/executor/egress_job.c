/*
 * egress_job: one attempt's egress proxy, from the policy check to
 * JobClosed; see egress.h.
 *
 * States:
 *   RESOLVING  Resolve calls in flight (one per binding destination)
 *   WAITING    values held (locked memory), no proxy up yet
 *   OPENING    JobOpen sent (values wiped), waiting for JobOpened
 *   OPEN       ready was called: the sandbox runs, Use records flow
 *   CLOSING    JobClose sent, waiting for JobClosed (its last records)
 *   DEAD       nothing more to wait for: freed from the loop
 * Failures before OPEN call failed (once); the proxy dying in OPEN calls
 * lost (once); ex_ejob_close() silences both. egress.open_timeout bounds
 * RESOLVING + WAITING + OPENING; CLOSING is bounded too (a proxy that
 * never answers JobClose must not keep the job's grants forever).
 *
 * Values: each Resolve answer is copied into locked memory at once (the
 * client wipes its own copies); the packed JobOpen lives in locked memory
 * until sent and is then wiped, as are the copies, right after sending.
 * Nothing of a value is logged or put in a message to intake.
 *
 * Refresh: credstore releases a value for at most its resolve.max_ttl. In
 * OPEN, shortly before the first of the job's values expires (a fifth of
 * its lifetime before, 1 to 60 s), every binding is resolved again with the
 * newest grant and the fresh values go to the proxy (JobCredentials), so a
 * job outliving one value's ttl keeps its credentials while its grant is
 * renewed. A credential credstore refuses again is not refreshed any more
 * (its value expires in the proxy: revocation reaches running jobs within
 * the ttl); credstore unreachable retries every REFRESH_RETRY_S while the
 * grant is valid. The job never fails for a refresh.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "airlock/v1/common.pb-c.h"
#include "al_dest.h"
#include "al_edge.h"
#include "al_err.h"
#include "al_grpc.h"
#include "al_log.h"
#include "al_metrics.h"
#include "al_wipe.h"
#include "egress_int.h"
#include "egress_policy.h"
#include "executor.h"

#define FR(x)               AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_##x
#define CLOSE_TIMEOUT_S     30.0
#define SYSTEM_BUNDLE       "/etc/ssl/certs/ca-certificates.crt"
#define BUNDLE_MAX          (16 << 20)
#define VALUE_MAX           (64 * 1024)
#define KEY_MAX             96 /* "<job id>/<attempt>" */
#define REFRESH_RETRY_S     5.0
#define REFRESH_LEAD_MIN_MS 1000
#define REFRESH_LEAD_MAX_MS 60000

enum ej_state { EJ_RESOLVING = 0, EJ_WAITING, EJ_OPENING, EJ_OPEN, EJ_CLOSING, EJ_DEAD };

struct ej_cred {
    const char *name, *env_var; /* borrowed from the attempt's job */
    char ph[EX_PH_LEN + 1];
    char **dests; /* canonical "host:port" */
    size_t n_dests;
    int32_t version, type;
    char *header, *format;
    int allow_plain_http;
    uint8_t *value; /* locked memory */
    size_t value_len;
    int64_t expires_ms;      /* credstore's expiry of the value the proxy holds */
    int64_t prev_expires_ms; /* while a refresh runs */
    int refresh_failed;      /* this refresh: a Resolve of it failed */
    int refresh_denied;      /* credstore refused it again: never refreshed */
};

struct ej_call {
    struct ex_ejob *j;
    size_t cred, dest;
    struct al_edge_call *call;
};

struct ej_grant {
    struct al_edge_grant *g;
    int64_t expires_ms;
};

struct ex_ejob {
    struct ex *ex;
    struct ex_ejob *next;
    struct ex_attempt *a; /* NULL once closed */
    const struct ex_ejob_cbs *cbs;
    void *user;
    enum ej_state state;
    int detached; /* failed, lost or closed: no callback any more */
    int released; /* ex_ejob_close() called: the owner holds no pointer */
    char key[KEY_MAX];
    uint64_t gen; /* proxy generation JobOpen went to */
    struct ej_cred *creds;
    size_t n_creds;
    struct ej_call *calls;
    size_t n_calls, pending;
    struct ej_grant *grants;
    size_t n_grants;
    char bundle[PATH_MAX];
    int have_bundle;
    struct ex_env_kv proxy_env[EX_PROXY_ENV_MAX];
    const char **env_names, **env_values;
    size_t n_env;
    ev_timer timer_w;    /* open timeout, then close timeout, then the free */
    ev_timer refresh_w;  /* OPEN: the next refresh of the values */
    int refreshing;      /* Resolve calls of a refresh in flight */
    int refresh_retry;   /* a refresh could not reach credstore */
    int64_t resolved_ms; /* when the values in use were asked for */
};

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct ex_egress *egress_of(const struct ex_ejob *j)
{
    return j->ex->egress;
}

/* ---------- lifetime ---------- */

static void wipe_values(struct ex_ejob *j)
{
    for (size_t i = 0; i < j->n_creds; i++) {
        al_secure_free(j->creds[i].value);
        j->creds[i].value = NULL;
        j->creds[i].value_len = 0;
    }
}

static void remove_bundle(struct ex_ejob *j)
{
    if (j->have_bundle && unlink(j->bundle) < 0 && errno != ENOENT)
        AL_LOG_WARN("executor.egress_bundle", "job=%s reason=\"cannot remove %s: %s\"", j->key,
                    j->bundle, strerror(errno));
    j->have_bundle = 0;
}

static void ejob_free(struct ex_ejob *j)
{
    struct ex_egress *eg = egress_of(j);
    struct ex_ejob **pp;

    for (pp = &eg->jobs; *pp && *pp != j; pp = &(*pp)->next)
        ;
    if (*pp) {
        *pp = j->next;
        eg->n_jobs--;
        al_metric_set(eg->m_jobs, (double)eg->n_jobs);
    }
    ev_timer_stop(j->ex->svc.loop, &j->timer_w);
    ev_timer_stop(j->ex->svc.loop, &j->refresh_w);
    for (size_t i = 0; i < j->n_calls; i++)
        al_edge_cancel(j->calls[i].call);
    wipe_values(j);
    remove_bundle(j);
    for (size_t i = 0; i < j->n_creds; i++) {
        for (size_t k = 0; k < j->creds[i].n_dests; k++)
            free(j->creds[i].dests[k]);
        free(j->creds[i].dests);
        free(j->creds[i].header);
        free(j->creds[i].format);
        OPENSSL_cleanse(j->creds[i].ph, sizeof(j->creds[i].ph));
    }
    for (size_t i = 0; i < j->n_grants; i++)
        al_edge_grant_unref(j->grants[i].g);
    free(j->grants);
    free(j->creds);
    free(j->calls);
    free(j->env_names);
    free(j->env_values);
    free(j);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* Nothing more to wait for: once its owner released it (ex_ejob_close), j
 * is freed from the loop, never under a caller that still uses it. */
static void to_dead(struct ex_ejob *j)
{
    struct ev_loop *loop = j->ex->svc.loop;
    int was_closing = j->state == EJ_CLOSING;

    j->state = EJ_DEAD;
    ev_timer_stop(loop, &j->timer_w);
    ev_timer_stop(loop, &j->refresh_w);
    if (j->released) {
        ev_timer_set(&j->timer_w, 0., 0.);
        ev_timer_start(loop, &j->timer_w);
    }
    if (was_closing)
        ex_egress_job_closed(j->ex);
}

/* Calls failed once (before OPEN) and never again. */
static void fail(struct ex_ejob *j, int reason, const char *why)
{
    const struct ex_ejob_cbs *cbs = j->cbs;
    void *user = j->user;
    char q[512];

    if (j->detached)
        return;
    j->detached = 1;
    ev_timer_stop(j->ex->svc.loop, &j->refresh_w);
    AL_LOG_WARN("executor.egress_job_failed", "job=%s reason=%s", j->key,
                al_log_quote(q, sizeof(q), why, strlen(why)));
    for (size_t i = 0; i < j->n_calls; i++) {
        al_edge_cancel(j->calls[i].call);
        j->calls[i].call = NULL;
    }
    wipe_values(j);
    if (j->state == EJ_OPENING || j->state == EJ_OPEN) {
        Airlock__Internal__EgressMsg m = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;
        Airlock__Internal__JobClose c = AIRLOCK__INTERNAL__JOB_CLOSE__INIT;
        c.job = j->key;
        m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_CLOSE;
        m.close = &c;
        if (j->gen == ex_egress_generation(egress_of(j)) &&
            ex_egress_send(egress_of(j), &m, NULL, 0, 0) == 0) {
            j->state = EJ_CLOSING;
            ev_timer_stop(j->ex->svc.loop, &j->timer_w);
            ev_timer_set(&j->timer_w, CLOSE_TIMEOUT_S, 0.);
            ev_timer_start(j->ex->svc.loop, &j->timer_w);
        } else {
            to_dead(j);
        }
    } else {
        to_dead(j);
    }
    j->a = NULL;
    cbs->failed(user, reason, why); /* last: the callee may close j */
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ex_ejob *j = w->data;
    char why[200];

    (void)loop;
    (void)revents;
    switch (j->state) {
    case EJ_DEAD:
        ejob_free(j);
        return;
    case EJ_CLOSING:
        AL_LOG_WARN("executor.egress_close",
                    "job=%s reason=\"no JobClosed from the proxy in "
                    "%.0f s; its last use records may be missing\"",
                    j->key, CLOSE_TIMEOUT_S);
        to_dead(j);
        return;
    case EJ_OPEN:
        return;
    default:
        snprintf(why, sizeof(why), "the job's egress proxy was not ready within %lld ms (%s)",
                 j->ex->cfg.egress_open_timeout_ms,
                 j->state == EJ_RESOLVING ? "credstore did not answer"
                 : j->state == EJ_WAITING ? "the proxy is not running"
                                          : "the proxy did not answer");
        fail(j, FR(INTERNAL), why);
    }
}

/* ---------- grants ---------- */

/* Adds the attempt's grant sg (borrowed) to j; returns its id or NULL. */
static const char *grant_add(struct ex_ejob *j, const Airlock__V1__SignedGrant *sg)
{
    size_t len = airlock__v1__signed_grant__get_packed_size(sg);
    uint8_t *buf = malloc(len ? len : 1);
    Airlock__V1__Grant *g = NULL;
    struct al_edge_grant *eg = NULL;
    struct ej_grant *ng;
    const char *id = NULL;

    if (!buf)
        return NULL;
    airlock__v1__signed_grant__pack(sg, buf);
    g = sg->grant.data ? airlock__v1__grant__unpack(NULL, sg->grant.len, sg->grant.data) : NULL;
    if (g && g->grant_id && g->grant_id[0] && strlen(g->grant_id) <= 64 &&
        (ng = realloc(j->grants, (j->n_grants + 1) * sizeof(*ng)))) {
        j->grants = ng;
        for (size_t i = 0; i < j->n_grants && !id; i++)
            if (strcmp(j->grants[i].g->grant_id, g->grant_id) == 0)
                id = j->grants[i].g->grant_id; /* the same grant again */
        if (!id && al_edge_grant_new(buf, len, g->grant_id, &eg) == 0) {
            j->grants[j->n_grants].g = eg;
            j->grants[j->n_grants++].expires_ms = g->expires_ms;
            id = eg->grant_id;
        }
    }
    if (g)
        airlock__v1__grant__free_unpacked(g, NULL);
    free(buf);
    return id;
}

static const struct ej_grant *grant_latest(const struct ex_ejob *j)
{
    return j->n_grants ? &j->grants[j->n_grants - 1] : NULL;
}

static struct al_edge_grant *grant_by_id(const struct ex_ejob *j, const char *id)
{
    for (size_t i = j->n_grants; i-- > 0;)
        if (id && strcmp(j->grants[i].g->grant_id, id) == 0)
            return j->grants[i].g;
    return j->n_grants ? j->grants[j->n_grants - 1].g : NULL;
}

/* ---------- JobOpen ---------- */

static void fill_dest(Airlock__Internal__EgressDestination *d, const char *host, int port,
                      char **methods, size_t nm, char **paths, size_t np)
{
    airlock__internal__egress_destination__init(d);
    d->host = (char *)host;
    d->port = port ? port : 443;
    d->methods = methods;
    d->n_methods = nm;
    d->path_prefixes = paths;
    d->n_path_prefixes = np;
}

/* The message's arrays, freed together. */
struct open_parts {
    Airlock__Internal__EgressDestination *ceil, **ceilp, *dst, **dstp;
    Airlock__Internal__EgressCredential *cred, **credp;
    char (*hosts)[AL_DEST_HOST_MAX];
};

static void parts_free(struct open_parts *p)
{
    free(p->ceil);
    free(p->ceilp);
    free(p->dst);
    free(p->dstp);
    free(p->cred);
    free(p->credp);
    free(p->hosts);
}

static int parts_alloc(struct open_parts *p, size_t nc, size_t nd, size_t ncred)
{
    memset(p, 0, sizeof(*p));
    p->ceil = calloc(nc + 1, sizeof(*p->ceil));
    p->ceilp = calloc(nc + 1, sizeof(*p->ceilp));
    p->dst = calloc(nd + 1, sizeof(*p->dst));
    p->dstp = calloc(nd + 1, sizeof(*p->dstp));
    p->hosts = calloc(nd + 1, sizeof(*p->hosts));
    p->cred = calloc(ncred + 1, sizeof(*p->cred));
    p->credp = calloc(ncred + 1, sizeof(*p->credp));
    return p->ceil && p->ceilp && p->dst && p->dstp && p->hosts && p->cred && p->credp
               ? 0
               : AL_ERR_NOMEM;
}

/* The message entry of credential x (borrowed pointers, the value
 * included), usable until min(credstore's expiry, grant g's). JobOpen and
 * JobCredentials. */
static void fill_cred(Airlock__Internal__EgressCredential *e, struct ej_cred *x,
                      const struct ej_grant *g)
{
    airlock__internal__egress_credential__init(e);
    e->credential = (char *)x->name;
    e->placeholder = x->ph;
    e->destinations = x->dests;
    e->n_destinations = x->n_dests;
    e->version = x->version;
    e->type = x->type;
    e->header = x->header ? x->header : "";
    e->format = x->format ? x->format : "";
    e->allow_plain_http = x->allow_plain_http;
    e->value.data = x->value;
    e->value.len = x->value_len;
    e->expires_unix_ms = g && g->expires_ms < x->expires_ms ? g->expires_ms : x->expires_ms;
    e->credstore_expires_unix_ms = x->expires_ms;
    e->grant_id = g ? g->g->grant_id : "";
}

static void send_open(struct ex_ejob *j)
{
    const struct ex_config *c = &j->ex->cfg;
    const Airlock__V1__JobSpec *spec = j->a->job->spec;
    const Airlock__V1__NetworkPolicy *net = spec->network;
    const struct ex_egress_pool *pool = ex_config_egress_pool(c, spec->pool);
    const struct ej_grant *g = grant_latest(j);
    Airlock__Internal__EgressMsg m = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;
    Airlock__Internal__JobOpen o = AIRLOCK__INTERNAL__JOB_OPEN__INIT;
    Airlock__Internal__EgressLimits lim = AIRLOCK__INTERNAL__EGRESS_LIMITS__INIT;
    struct open_parts p;
    int rc;

    if (parts_alloc(&p, pool ? pool->n_dests : 0, net->n_destinations, j->n_creds) < 0) {
        parts_free(&p);
        fail(j, FR(INTERNAL), "out of memory preparing the job's egress proxy");
        return;
    }
    for (size_t i = 0; pool && i < pool->n_dests; i++) {
        const struct ex_egress_dest *d = &pool->dests[i];
        fill_dest(&p.ceil[i], d->host, d->port, d->methods, d->n_methods, d->path_prefixes,
                  d->n_path_prefixes);
        p.ceil[i].allow_cidrs = d->allow_cidrs;
        p.ceil[i].n_allow_cidrs = d->n_allow_cidrs;
        p.ceil[i].allow_http = d->allow_http;
        p.ceilp[i] = &p.ceil[i];
    }
    for (size_t i = 0; i < net->n_destinations; i++) {
        const Airlock__V1__NetworkDestination *d = net->destinations[i];
        if (al_dest_host_canon(d->host, 1, p.hosts[i], sizeof(p.hosts[i])) < 0)
            snprintf(p.hosts[i], sizeof(p.hosts[i]), "%s", d->host); /* checked before */
        fill_dest(&p.dst[i], p.hosts[i], d->port, d->methods, d->n_methods, d->path_prefixes,
                  d->n_path_prefixes);
        p.dstp[i] = &p.dst[i];
    }
    for (size_t i = 0; i < j->n_creds; i++) {
        struct ej_cred *x = &j->creds[i];
        Airlock__Internal__EgressCredential *e = &p.cred[i];
        fill_cred(e, x, g);
        p.credp[i] = e;
    }
    lim.max_connections = c->egress_max_connections;
    lim.max_bytes = (int64_t)c->egress_max_bytes;
    lim.requests_per_second = c->egress_rps;
    lim.burst = c->egress_burst;
    lim.idle_timeout_ms = c->egress_idle_ms;
    lim.total_timeout_ms = c->egress_total_ms;
    o.job = j->key;
    o.principal =
        j->a->job->principal && j->a->job->principal->name ? j->a->job->principal->name : "";
    o.pool = spec->pool;
    o.ceiling = p.ceilp;
    o.n_ceiling = pool ? pool->n_dests : 0;
    o.destinations = p.dstp;
    o.n_destinations = net->n_destinations;
    o.credentials = p.credp;
    o.n_credentials = j->n_creds;
    o.limits = &lim;
    o.grant_id = g ? g->g->grant_id : "";
    m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_OPEN;
    m.open = &o;
    rc = ex_egress_send(egress_of(j), &m, NULL, 0, 1);
    parts_free(&p);
    wipe_values(j); /* sent (or queued in locked memory), or never */
    if (rc < 0) {
        fail(j, FR(INTERNAL),
             rc == AL_ERR_TOOBIG ? "the job's egress policy is too large for the proxy"
                                 : "the job's egress proxy could not be told about the job");
        return;
    }
    j->gen = ex_egress_generation(egress_of(j));
    j->state = EJ_OPENING;
    AL_LOG_INFO("executor.egress_open", "job=%s credentials=%zu destinations=%zu generation=%llu",
                j->key, j->n_creds, net->n_destinations, (unsigned long long)j->gen);
}

/* Every value is in: open now, or wait for a proxy. */
static void resolved_all(struct ex_ejob *j)
{
    if (ex_egress_up(egress_of(j)))
        send_open(j);
    else
        j->state = EJ_WAITING;
}

/* ---------- Resolve ---------- */

static const char *reason_name(int reason)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&airlock__v1__error_reason__descriptor, reason);
    return v && strncmp(v->name, "ERROR_REASON_", 13) == 0 ? v->name + 13 : "UNKNOWN";
}

static void resolve_answer(void *user, const Airlock__V1__ResolveResponse *r)
{
    struct ej_call *c = user;
    struct ej_cred *x = &c->j->creds[c->cred];
    int64_t exp = unix_ms() + (r->ttl_ms > 0 ? r->ttl_ms : 0);

    if (c->j->detached || !r->value.len || r->value.len > VALUE_MAX || r->ttl_ms <= 0)
        return; /* judged in resolve_done */
    if (x->value && r->version <= x->version) {
        if (exp < x->expires_ms)
            x->expires_ms = exp;
        return; /* the value we hold is as new */
    }
    al_secure_free(x->value);
    x->value = al_secure_alloc(r->value.len);
    if (!x->value) {
        x->value_len = 0;
        return;
    }
    memcpy(x->value, r->value.data, r->value.len);
    x->value_len = r->value.len;
    x->version = r->version;
    x->type = r->type;
    free(x->header);
    free(x->format);
    x->header = strdup(r->template_ && r->template_->header ? r->template_->header : "");
    x->format = strdup(r->template_ && r->template_->format ? r->template_->format : "");
    x->allow_plain_http = r->template_ ? r->template_->allow_plain_http : 0;
    x->expires_ms = x->expires_ms && x->expires_ms < exp ? x->expires_ms : exp;
}

static void refresh_result(struct ej_call *c, int status, int reason, const char *message);

static void resolve_done(void *user, int status, int reason, const char *message)
{
    struct ej_call *c = user;
    struct ex_ejob *j = c->j;
    struct ex_egress *eg = egress_of(j);
    struct ej_cred *x = &j->creds[c->cred];
    char why[400], q[160];

    c->call = NULL;
    j->pending--;
    if (j->detached)
        return;
    if (j->refreshing) {
        refresh_result(c, status, reason, message);
        return;
    }
    if (status != AL_GRPC_OK) {
        int denied = status == AL_GRPC_PERMISSION_DENIED || status == AL_GRPC_NOT_FOUND ||
                     status == AL_GRPC_INVALID_ARGUMENT;
        al_metric_add(denied ? eg->m_resolve_denied : eg->m_resolve_failed, 1);
        AL_LOG_WARN("executor.resolve_failed",
                    "job=%s credential=%s destination=%s status=%s reason=%s msg=%s", j->key,
                    x->name, x->dests[c->dest], al_grpc_status_name(status),
                    reason ? reason_name(reason) : "-",
                    al_log_quote(q, sizeof(q), message, strlen(message)));
        if (denied)
            snprintf(why, sizeof(why), "credential %.128s: credstore refused it for %.200s: %s",
                     x->name, x->dests[c->dest],
                     reason ? reason_name(reason) : al_grpc_status_name(status));
        else
            snprintf(why, sizeof(why),
                     "credential %.128s: credstore is unavailable (%s); the job did not start",
                     x->name, al_grpc_status_name(status));
        fail(j, denied ? FR(POLICY_DENIED) : FR(INTERNAL), why);
        return;
    }
    al_metric_add(eg->m_resolve_ok, 1);
    if (!x->value) {
        snprintf(why, sizeof(why),
                 "credential %.128s: credstore released no usable value (empty, over 64 KiB, "
                 "or already expired)",
                 x->name);
        fail(j, FR(POLICY_DENIED), why);
        return;
    }
    if (j->pending == 0)
        resolved_all(j);
}

/* ---------- open ---------- */

static int cred_init(struct ej_cred *x, const Airlock__V1__CredentialBinding *b)
{
    char host[AL_DEST_HOST_MAX];
    int port;

    x->name = b->credential;
    x->env_var = b->env_var;
    if (ex_policy_placeholder(x->ph, sizeof(x->ph)) < 0)
        return AL_ERR_CRYPTO;
    x->dests = calloc(b->n_destinations, sizeof(char *));
    if (!x->dests)
        return AL_ERR_NOMEM;
    for (size_t k = 0; k < b->n_destinations; k++) {
        char canon[AL_DEST_HOST_MAX];
        if (al_dest_parse(b->destinations[k], host, sizeof(host), &port) < 0 ||
            al_dest_host_canon(host, 0, canon, sizeof(canon)) < 0)
            return AL_ERR_INVAL; /* ex_policy_check() said it was fine */
        if (asprintf(&x->dests[k], strchr(canon, ':') ? "[%s]:%d" : "%s:%d", canon, port) < 0) {
            x->dests[k] = NULL;
            return AL_ERR_NOMEM;
        }
        x->n_dests++;
    }
    return 0;
}

static int build_env(struct ex_ejob *j, int with_ca)
{
    size_t np = ex_policy_proxy_env(j->ex->cfg.egress_port, with_ca, j->proxy_env);

    free(j->env_names);
    free(j->env_values);
    j->n_env = 0;
    j->env_names = calloc(np + j->n_creds, sizeof(char *));
    j->env_values = calloc(np + j->n_creds, sizeof(char *));
    if (!j->env_names || !j->env_values)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < np; i++) {
        j->env_names[j->n_env] = j->proxy_env[i].name;
        j->env_values[j->n_env++] = j->proxy_env[i].value;
    }
    for (size_t i = 0; i < j->n_creds; i++) {
        j->env_names[j->n_env] = j->creds[i].env_var;
        j->env_values[j->n_env++] = j->creds[i].ph;
    }
    return 0;
}

static int start_resolves(struct ex_ejob *j)
{
    static const struct al_edge_resolve_cbs cbs = {resolve_answer, resolve_done};
    const struct ej_grant *g = grant_latest(j);
    size_t n = 0;
    int rc;

    for (size_t i = 0; i < j->n_creds; i++)
        n += j->creds[i].n_dests;
    if (!j->calls) /* a refresh reuses them: the same bindings */
        j->calls = calloc(n ? n : 1, sizeof(*j->calls));
    if (!j->calls)
        return AL_ERR_NOMEM;
    j->n_calls = 0;
    j->resolved_ms = unix_ms();
    for (size_t i = 0; i < j->n_creds; i++) {
        if (j->creds[i].refresh_denied)
            continue;
        for (size_t k = 0; k < j->creds[i].n_dests; k++) {
            struct ej_call *c = &j->calls[j->n_calls++];
            c->j = j;
            c->cred = i;
            c->dest = k;
            rc = al_edge_resolve(ex_egress_edge(egress_of(j)), g->g->sg, j->creds[i].name,
                                 j->creds[i].dests[k], &cbs, c, &c->call);
            if (rc < 0)
                return rc;
            j->pending++;
        }
    }
    return 0;
}

/* ---------- refresh (OPEN) ---------- */

static void refresh_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* Schedules the next refresh: a retry, or a lead before the first value
 * the proxy holds expires. */
static void arm_refresh(struct ex_ejob *j)
{
    struct ev_loop *loop = j->ex->svc.loop;
    int64_t first = 0, now = unix_ms(), lead;
    double delay;

    ev_timer_stop(loop, &j->refresh_w);
    if (j->detached || j->state != EJ_OPEN || j->refreshing)
        return;
    for (size_t i = 0; i < j->n_creds; i++)
        if (!j->creds[i].refresh_denied && (first == 0 || j->creds[i].expires_ms < first))
            first = j->creds[i].expires_ms;
    if (first == 0)
        return; /* nothing to refresh */
    if (j->refresh_retry) {
        delay = REFRESH_RETRY_S;
    } else {
        lead = (first - j->resolved_ms) / 5;
        lead = lead < REFRESH_LEAD_MIN_MS   ? REFRESH_LEAD_MIN_MS
               : lead > REFRESH_LEAD_MAX_MS ? REFRESH_LEAD_MAX_MS
                                            : lead;
        delay = first - lead > now ? (double)(first - lead - now) / 1000.0 : 0.;
    }
    ev_timer_set(&j->refresh_w, delay, 0.);
    ev_timer_start(loop, &j->refresh_w);
}

static void refresh_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ex_ejob *j = w->data;
    const struct ej_grant *g = grant_latest(j);
    int rc;

    (void)loop;
    (void)revents;
    if (j->detached || j->state != EJ_OPEN || j->refreshing)
        return;
    if (!g || g->expires_ms <= unix_ms()) {
        /* nothing to resolve with: the values end with the grant; a renewed
         * grant (ex_ejob_grant) arms the refresh again */
        AL_LOG_INFO("executor.egress_refresh",
                    "job=%s reason=\"the job's grant has expired; "
                    "its values are not refreshed\"",
                    j->key);
        return;
    }
    for (size_t i = 0; i < j->n_creds; i++) {
        struct ej_cred *x = &j->creds[i];
        x->refresh_failed = 0;
        x->prev_expires_ms = x->expires_ms;
        x->expires_ms = 0;
    }
    j->refreshing = 1;
    j->refresh_retry = 0;
    rc = start_resolves(j);
    if (rc < 0) {
        AL_LOG_WARN("executor.egress_refresh", "job=%s reason=\"%s\"", j->key, al_strerror(rc));
        for (size_t i = 0; i < j->n_creds; i++) /* those started answer later */
            j->creds[i].refresh_failed = 1;
        j->refresh_retry = 1;
    }
    if (j->pending == 0) {
        j->refreshing = 0;
        for (size_t i = 0; i < j->n_creds; i++)
            j->creds[i].expires_ms = j->creds[i].prev_expires_ms;
        arm_refresh(j);
    }
}

/* Every refresh answer is in: the fresh values to the proxy. */
static void refresh_send(struct ex_ejob *j)
{
    const struct ej_grant *g = grant_latest(j);
    Airlock__Internal__EgressMsg m = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;
    Airlock__Internal__JobCredentials jc = AIRLOCK__INTERNAL__JOB_CREDENTIALS__INIT;
    Airlock__Internal__EgressCredential *e = calloc(j->n_creds + 1, sizeof(*e));
    Airlock__Internal__EgressCredential **ep = calloc(j->n_creds + 1, sizeof(*ep));
    size_t n = 0;
    int rc = AL_ERR_NOMEM;

    j->refreshing = 0;
    for (size_t i = 0; i < j->n_creds && e && ep; i++) {
        struct ej_cred *x = &j->creds[i];
        if (x->refresh_denied || x->refresh_failed || !x->value)
            continue;
        fill_cred(&e[n], x, g);
        ep[n] = &e[n];
        n++;
    }
    if (n && e && ep) {
        jc.job = j->key;
        jc.credentials = ep;
        jc.n_credentials = n;
        m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_CREDENTIALS;
        m.credentials = &jc;
        rc = j->gen == ex_egress_generation(egress_of(j))
                 ? ex_egress_send(egress_of(j), &m, NULL, 0, 1)
                 : AL_ERR_STATE;
    } else if (e && ep) {
        rc = 0;
    }
    free(e);
    free(ep);
    wipe_values(j);
    for (size_t i = 0; i < j->n_creds; i++) {
        struct ej_cred *x = &j->creds[i];
        /* what the proxy holds now: the fresh value, or still the old one */
        if (rc < 0 || x->refresh_denied || x->refresh_failed || !x->expires_ms)
            x->expires_ms = x->prev_expires_ms;
    }
    if (rc < 0) {
        AL_LOG_WARN("executor.egress_refresh",
                    "job=%s reason=\"the fresh values could not be sent to the proxy: %s\"", j->key,
                    al_strerror(rc));
        j->refresh_retry = 1;
    } else {
        AL_LOG_INFO("executor.egress_refresh", "job=%s refreshed=%zu credentials=%zu", j->key, n,
                    j->n_creds);
    }
    arm_refresh(j);
}

static void refresh_result(struct ej_call *c, int status, int reason, const char *message)
{
    struct ex_ejob *j = c->j;
    struct ex_egress *eg = egress_of(j);
    struct ej_cred *x = &j->creds[c->cred];
    char q[160];

    if (status != AL_GRPC_OK) {
        int denied = status == AL_GRPC_PERMISSION_DENIED || status == AL_GRPC_NOT_FOUND ||
                     status == AL_GRPC_INVALID_ARGUMENT;
        al_metric_add(denied ? eg->m_resolve_denied : eg->m_resolve_failed, 1);
        AL_LOG_WARN("executor.egress_refresh",
                    "job=%s credential=%s destination=%s status=%s reason=%s msg=%s "
                    "outcome=\"%s\"",
                    j->key, x->name, x->dests[c->dest], al_grpc_status_name(status),
                    reason ? reason_name(reason) : "-",
                    al_log_quote(q, sizeof(q), message, strlen(message)),
                    denied ? "not refreshed again: the value in use expires"
                           : "retried while the grant is valid");
        x->refresh_failed = 1;
        if (denied)
            x->refresh_denied = 1;
        else
            j->refresh_retry = 1;
    } else {
        al_metric_add(eg->m_resolve_ok, 1);
        if (!x->value)
            x->refresh_failed = 1; /* nothing usable came back */
    }
    if (j->pending == 0)
        refresh_send(j);
}

/* A job refused before it got a proxy: one DENY record under its grant,
 * so the refusal is in credstore's audit chain like the proxy's own. */
static void audit_refusal(struct ex *ex, struct ex_attempt *a, const struct ex_policy_denial *d,
                          const char *why)
{
    struct al_edge *edge = ex_egress_edge(ex->egress);
    struct al_edge_use u = {0};
    struct ex_ejob tmp;
    char key[KEY_MAX];

    memset(&tmp, 0, sizeof(tmp));
    if (!a->grant || !grant_add(&tmp, a->grant))
        return;
    snprintf(key, sizeof(key), "%s/%d", a->job_id, (int)a->attempt);
    u.credential = d->credential;
    u.destination = d->destination;
    u.method = "";
    u.path = "";
    u.reason = why;
    u.time_ms = unix_ms();
    u.request_id = key;
    u.tool = "";
    if (al_edge_reserve(edge) == 0)
        al_edge_record(edge, tmp.grants[0].g, &u);
    else
        AL_LOG_ERROR("executor.audit_lost",
                     "job=%s reason=\"the audit queue is full: the "
                     "refusal is only in this log\"",
                     key);
    al_metric_add(ex->egress->m_use_deny, 1);
    al_edge_grant_unref(tmp.grants[0].g);
    free(tmp.grants);
}

int ex_ejob_open(struct ex *ex, struct ex_attempt *a, const struct ex_ejob_cbs *cbs, void *user,
                 struct ex_ejob **out, int *reason, char *why, size_t n)
{
    const Airlock__V1__JobSpec *spec = a->job->spec;
    struct ex_egress *eg = ex->egress;
    struct ex_policy_denial denial;
    struct ex_ejob *j;
    int rc;

    *out = NULL;
    *reason = FR(POLICY_DENIED);
    if (!eg) {
        snprintf(why, n,
                 "network mode PROXY is not available on this executor: its egress proxy "
                 "is not enabled (egress.enabled)");
        return AL_ERR_CONFIG;
    }
    rc = ex_policy_check(ex_config_egress_pool(&ex->cfg, spec->pool), spec->pool, spec, why, n,
                         &denial);
    if (rc < 0) {
        audit_refusal(ex, a, &denial, why);
        return rc;
    }
    if (!a->grant) {
        snprintf(why, n,
                 "the assignment carries no grant: the job's network use could not be "
                 "audited (intake needs grant.key_file)");
        return AL_ERR_AUTH;
    }
    *reason = FR(INTERNAL);
    j = calloc(1, sizeof(*j));
    if (!j)
        return AL_ERR_NOMEM;
    j->ex = ex;
    j->a = a;
    j->cbs = cbs;
    j->user = user;
    snprintf(j->key, sizeof(j->key), "%s/%d", a->job_id, (int)a->attempt);
    ev_timer_init(&j->timer_w, timer_cb, (double)ex->cfg.egress_open_timeout_ms / 1000.0, 0.);
    j->timer_w.data = j;
    ev_timer_init(&j->refresh_w, refresh_cb, 0., 0.);
    j->refresh_w.data = j;
    j->next = eg->jobs;
    eg->jobs = j;
    eg->n_jobs++;
    al_metric_set(eg->m_jobs, (double)eg->n_jobs);
    rc = AL_ERR_NOMEM;
    j->creds = calloc(spec->n_credentials + 1, sizeof(*j->creds));
    if (!j->creds)
        goto bad;
    if (!grant_add(j, a->grant)) {
        rc = AL_ERR_INVAL; /* a grant without an id, or out of memory */
        goto bad;
    }
    for (size_t i = 0; i < spec->n_credentials; i++) {
        rc = cred_init(&j->creds[i], spec->credentials[i]);
        j->n_creds++;
        if (rc < 0)
            goto bad;
    }
    if ((rc = build_env(j, 0)) < 0 || (rc = start_resolves(j)) < 0)
        goto bad;
    ev_timer_start(ex->svc.loop, &j->timer_w);
    *out = j;
    if (j->pending == 0)
        resolved_all(j);
    return 0;
bad:
    snprintf(why, n, "the job's egress proxy could not be prepared: %s", al_strerror(rc));
    j->detached = j->released = 1;
    ejob_free(j);
    return rc;
}

/* ---------- JobOpened: the CA bundle ---------- */

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -errno;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The system bundle (if any) then the job's CA, into j->bundle (0644). */
static int write_bundle(struct ex_ejob *j, const char *pem)
{
    struct ex_egress *eg = egress_of(j);
    char tmp[PATH_MAX + 8], buf[65536];
    size_t total = 0;
    int fd, in, rc = 0;
    ssize_t r;

    if (snprintf(j->bundle, sizeof(j->bundle), "%s/%s-%d.pem", eg->bundle_dir, j->a->job_id,
                 (int)j->a->attempt) >= (int)sizeof(j->bundle) ||
        snprintf(tmp, sizeof(tmp), "%s.tmp", j->bundle) >= (int)sizeof(tmp))
        return AL_ERR_TOOBIG;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return -errno;
    in = open(SYSTEM_BUNDLE, O_RDONLY | O_CLOEXEC);
    while (in >= 0 && rc == 0 && (r = read(in, buf, sizeof(buf))) > 0 &&
           (total += (size_t)r) <= BUNDLE_MAX)
        rc = write_all(fd, buf, (size_t)r);
    if (in >= 0)
        close(in);
    if (rc == 0 && total > BUNDLE_MAX)
        rc = AL_ERR_TOOBIG;
    if (rc == 0 && total)
        rc = write_all(fd, "\n", 1);
    if (rc == 0)
        rc = write_all(fd, pem, strlen(pem));
    if (rc == 0 && fchmod(fd, 0644) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, j->bundle) < 0)
        rc = -errno;
    if (rc < 0)
        unlink(tmp);
    else
        j->have_bundle = 1;
    return rc;
}

static struct ex_ejob *find(struct ex *ex, const char *key)
{
    for (struct ex_ejob *j = ex->egress ? ex->egress->jobs : NULL; j; j = j->next)
        if (key && j->state != EJ_DEAD && strcmp(j->key, key) == 0)
            return j;
    return NULL;
}

/* Text from the proxy for a log line or an agent message: printable ASCII,
 * cut. */
static void safe_text(char *out, size_t n, const char *s)
{
    size_t k = 0;

    for (; s && *s && k + 1 < n; s++)
        out[k++] = *s >= 0x20 && *s < 0x7f ? *s : '?';
    out[k] = '\0';
}

void ex_ejob_on_opened(struct ex *ex, const Airlock__Internal__JobOpened *m)
{
    struct ex_ejob *j = find(ex, m->job);
    char why[300], err[200];
    int rc;

    if (!j || j->state != EJ_OPENING || j->detached) {
        AL_LOG_DEBUG("executor.egress_opened", "job=%s reason=\"no job waits for it\"",
                     m->job ? m->job : "-");
        return;
    }
    if (m->error && m->error[0]) {
        safe_text(err, sizeof(err), m->error);
        snprintf(why, sizeof(why), "the egress proxy refused the job: %s", err);
        fail(j, FR(INTERNAL), why);
        return;
    }
    if (m->ca_cert_pem && m->ca_cert_pem[0]) {
        int pem = strncmp(m->ca_cert_pem, "-----BEGIN CERTIFICATE-----", 27) == 0;
        rc = pem ? write_bundle(j, m->ca_cert_pem) : AL_ERR_INVAL;
        if (rc < 0) {
            AL_LOG_ERROR("executor.egress_bundle", "job=%s reason=\"%s\"", j->key,
                         pem ? al_strerror(rc) : "not a PEM certificate");
            fail(j, FR(INTERNAL), "the job's CA bundle could not be written");
            return;
        }
        if (build_env(j, 1) < 0) {
            fail(j, FR(INTERNAL), "out of memory preparing the job's environment");
            return;
        }
    }
    j->state = EJ_OPEN;
    ev_timer_stop(ex->svc.loop, &j->timer_w);
    arm_refresh(j);
    AL_LOG_INFO("executor.egress_opened", "job=%s intercept=%s", j->key,
                j->have_bundle ? "yes" : "no");
    j->cbs->ready(j->user, j->have_bundle ? j->bundle : NULL); /* last */
}

/* ---------- while the job runs ---------- */

void ex_ejob_env(const struct ex_ejob *j, const char *const **names, const char *const **values,
                 size_t *n)
{
    *names = j->env_names;
    *values = j->env_values;
    *n = j->n_env;
}

void ex_ejob_listen(struct ex_ejob *j, const int *fds, size_t n)
{
    Airlock__Internal__EgressMsg m = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;
    Airlock__Internal__JobListen l = AIRLOCK__INTERNAL__JOB_LISTEN__INIT;
    int rc;

    if (!j || j->state != EJ_OPEN || j->gen != ex_egress_generation(egress_of(j)) || n == 0 ||
        n > 2) {
        for (size_t i = 0; i < n; i++)
            close(fds[i]);
        return;
    }
    l.job = j->key;
    m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_LISTEN;
    m.listen = &l;
    rc = ex_egress_send(egress_of(j), &m, fds, n, 0);
    if (rc < 0)
        AL_LOG_WARN("executor.egress_listen", "job=%s reason=\"%s\"", j->key, al_strerror(rc));
    else
        AL_LOG_DEBUG("executor.egress_listen", "job=%s listeners=%zu", j->key, n);
}

void ex_ejob_grant(struct ex_ejob *j, const Airlock__V1__SignedGrant *sg)
{
    Airlock__Internal__EgressMsg m = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;
    Airlock__Internal__JobGrant g = AIRLOCK__INTERNAL__JOB_GRANT__INIT;
    const struct ej_grant *latest;
    const char *id;

    if (!j || j->detached || !sg || !(id = grant_add(j, sg)))
        return;
    latest = grant_latest(j);
    if (j->state != EJ_OPEN || j->gen != ex_egress_generation(egress_of(j)) ||
        strcmp(latest->g->grant_id, id) != 0)
        return; /* JobOpen (still to come) carries the newest grant */
    g.job = j->key;
    g.grant_id = (char *)id;
    g.expires_unix_ms = latest->expires_ms;
    m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_GRANT;
    m.grant = &g;
    if (ex_egress_send(egress_of(j), &m, NULL, 0, 0) < 0)
        AL_LOG_WARN("executor.egress_grant",
                    "job=%s reason=\"the renewed grant could not be "
                    "sent to the proxy\"",
                    j->key);
    if (!ev_is_active(&j->refresh_w))
        arm_refresh(j); /* stopped for want of a valid grant */
}

void ex_ejob_close(struct ex_ejob *j)
{
    Airlock__Internal__EgressMsg m = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;
    Airlock__Internal__JobClose c = AIRLOCK__INTERNAL__JOB_CLOSE__INIT;
    struct ev_loop *loop;

    if (!j || j->released)
        return;
    loop = j->ex->svc.loop;
    j->released = 1;
    j->a = NULL;
    if (j->detached) { /* failed or lost before: closing already, or done */
        if (j->state != EJ_CLOSING)
            to_dead(j);
        return;
    }
    j->detached = 1;
    ev_timer_stop(loop, &j->refresh_w);
    j->refreshing = 0;
    for (size_t i = 0; i < j->n_calls; i++) {
        al_edge_cancel(j->calls[i].call);
        j->calls[i].call = NULL;
    }
    wipe_values(j);
    remove_bundle(j);
    c.job = j->key;
    m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_CLOSE;
    m.close = &c;
    if ((j->state == EJ_OPENING || j->state == EJ_OPEN) &&
        j->gen == ex_egress_generation(egress_of(j)) &&
        ex_egress_send(egress_of(j), &m, NULL, 0, 0) == 0) {
        j->state = EJ_CLOSING;
        ev_timer_stop(loop, &j->timer_w);
        ev_timer_set(&j->timer_w, CLOSE_TIMEOUT_S, 0.);
        ev_timer_start(loop, &j->timer_w);
        return;
    }
    to_dead(j);
}

/* ---------- from the proxy ---------- */

int ex_ejob_on_use(struct ex *ex, const Airlock__Internal__Use *m)
{
    struct ex_egress *eg = ex->egress;
    struct ex_ejob *j = find(ex, m->job);
    struct al_edge_grant *g = j ? grant_by_id(j, m->grant_id) : NULL;
    struct al_edge_use u = {0};
    char reason[AL_EDGE_PATH_MAX + 1], q1[300], q2[300];

    if (!g) {
        al_metric_add(eg->m_use_unknown, 1);
        AL_LOG_WARN(
            "executor.egress_use",
            "job=%s reason=\"a use record of a job this executor "
            "does not hold; not audited\"",
            al_log_quote(q1, sizeof(q1), m->job ? m->job : "", m->job ? strlen(m->job) : 0));
        return 0;
    }
    if (m->exfiltration && !strstr(m->reason ? m->reason : "", "exfiltration"))
        snprintf(reason, sizeof(reason), "exfiltration attempt: %s", m->reason ? m->reason : "");
    else
        snprintf(reason, sizeof(reason), "%s", m->reason ? m->reason : "");
    u.credential = m->credential ? m->credential : "";
    u.version = u.credential[0] ? m->version : 0;
    u.destination = m->destination;
    u.method = m->method;
    u.path = m->path;
    u.status = m->status >= 100 && m->status <= 599 ? m->status : 0;
    u.request_bytes = m->request_bytes > 0 ? m->request_bytes : 0;
    u.response_bytes = m->response_bytes > 0 ? m->response_bytes : 0;
    u.duration_us = m->duration_us > 0 ? m->duration_us : 0;
    u.allow = m->allowed;
    u.reason = reason;
    u.time_ms = m->time_ms ? m->time_ms : unix_ms();
    u.request_id = j->key;
    u.tool = "";
    al_edge_record(eg->edge, g, &u);
    al_metric_add(m->allowed ? eg->m_use_allow : eg->m_use_deny, 1);
    if (m->exfiltration)
        al_metric_add(eg->m_exfil, 1);
    if (!m->allowed)
        AL_LOG_INFO("executor.egress_denied",
                    "job=%s destination=%s method=%s status=%d "
                    "exfiltration=%d reason=%s",
                    j->key,
                    al_log_quote(q1, sizeof(q1), u.destination ? u.destination : "",
                                 u.destination ? strlen(u.destination) : 0),
                    m->method && m->method[0] ? m->method : "-", m->status, m->exfiltration,
                    al_log_quote(q2, sizeof(q2), reason, strlen(reason)));
    return 1;
}

void ex_ejob_on_closed(struct ex *ex, const Airlock__Internal__JobClosed *m)
{
    struct ex_ejob *j = find(ex, m->job);

    AL_LOG_INFO("executor.egress_closed",
                "job=%s connections=%lld requests=%lld bytes_up=%lld bytes_down=%lld denied=%lld",
                j ? j->key : "-", (long long)m->connections, (long long)m->requests,
                (long long)m->bytes_up, (long long)m->bytes_down, (long long)m->denied);
    if (j && j->state == EJ_CLOSING)
        to_dead(j);
}

/* ---------- the proxy's life ---------- */

void ex_ejob_proxy_up(struct ex *ex)
{
    for (struct ex_ejob *j = ex->egress->jobs, *next; j; j = next) {
        next = j->next;
        if (j->state == EJ_WAITING && !j->detached)
            send_open(j);
    }
}

void ex_ejob_proxy_down(struct ex *ex)
{
    for (struct ex_ejob *j = ex->egress->jobs, *next; j; j = next) {
        next = j->next;
        if (j->state == EJ_CLOSING) {
            AL_LOG_WARN("executor.egress_close",
                        "job=%s reason=\"the proxy exited before JobClosed; use records it had "
                        "not sent are lost\"",
                        j->key);
            to_dead(j);
        } else if (j->state == EJ_OPENING && !j->detached) {
            fail(j, FR(INTERNAL), "the egress proxy exited before the job's proxy was ready");
        } else if (j->state == EJ_OPEN && !j->detached) {
            const struct ex_ejob_cbs *cbs = j->cbs;
            void *user = j->user;
            j->detached = 1;
            to_dead(j); /* freed once its owner closes it */
            remove_bundle(j);
            cbs->lost(user, "the egress proxy exited while the job ran: the job lost its only "
                            "network route and was stopped");
        }
    }
}

size_t ex_ejob_closing(const struct ex *ex)
{
    size_t n = 0;

    for (const struct ex_ejob *j = ex->egress ? ex->egress->jobs : NULL; j; j = j->next)
        n += j->state == EJ_CLOSING;
    return n;
}

void ex_ejob_sweep_bundles(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[PATH_MAX];

    if (!d)
        return;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if ((l > 4 && strcmp(e->d_name + l - 4, ".pem") == 0) ||
            (l > 8 && strcmp(e->d_name + l - 8, ".pem.tmp") == 0)) {
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            unlink(p);
        }
    }
    closedir(d);
}

void ex_ejob_free_all(struct ex *ex)
{
    while (ex->egress && ex->egress->jobs) {
        struct ex_ejob *j = ex->egress->jobs;
        j->detached = j->released = 1;
        ejob_free(j);
    }
}
