/*
 * job: JobOpen .. JobClose and the control message dispatch (see job.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "al_err.h"
#include "al_log.h"
#include "al_wipe.h"
#include "ca.h"
#include "job.h"
#include "scrub.h"

#define WHY_MAX 256

int64_t eg_now_ms(const struct eg_proxy *p)
{
    return (int64_t)(ev_time() * 1000.0);
}

/* ------------------------------------------------------------ scrub sets */

struct eg_scrubset *eg_scrubset_ref(struct eg_scrubset *s)
{
    if (s)
        s->refs++;
    return s;
}

void eg_scrubset_unref(struct eg_scrubset *s)
{
    if (!s || --s->refs > 0)
        return;
    rl_scrub_free(s->s);
    free(s);
}

/* A set of the live values, each replaced by its placeholder; NULL (and 0)
 * when no value is left. */
static int build_resp(struct eg_job *j, struct eg_scrubset **out)
{
    struct eg_scrubset *set = NULL;
    int rc = 0;

    *out = NULL;
    for (size_t i = 0; i < j->ncreds && rc == 0; i++) {
        const struct eg_cred *c = &j->creds[i];
        const uint8_t *colon;
        if (!c->value)
            continue;
        if (!set) {
            set = calloc(1, sizeof(*set));
            if (!set || rl_scrub_new(&set->s) < 0) {
                free(set);
                return AL_ERR_NOMEM;
            }
            set->refs = 1;
        }
        rc = rl_scrub_add_as(set->s, c->value, c->value_len, c->placeholder, EG_PH_LEN);
        colon = c->type == GW_CRED_BASIC ? memchr(c->value, ':', c->value_len) : NULL;
        if (rc == 0 && colon && (size_t)(c->value + c->value_len - colon - 1) >= RL_SCRUB_MIN_VALUE)
            rc = rl_scrub_add_as(set->s, colon + 1, (size_t)(c->value + c->value_len - colon - 1),
                                 c->placeholder, EG_PH_LEN);
    }
    if (rc < 0) {
        eg_scrubset_unref(set);
        return rc;
    }
    *out = set;
    return 0;
}

/* ---------------------------------------------------------- counters, Use */

int eg_job_charge(struct eg_job *j, uint64_t n, int up)
{
    if (up)
        j->n_bytes_up += (int64_t)n;
    else
        j->n_bytes_down += (int64_t)n;
    return eg_budget_charge(&j->bytes, n);
}

int eg_job_bytes_left(const struct eg_job *j)
{
    return eg_budget_left(&j->bytes);
}

int eg_job_take_token(struct eg_job *j)
{
    return eg_bucket_take(&j->bucket, ev_now(j->p->loop));
}

void eg_job_use(struct eg_job *j, const struct eg_use *u, enum eg_ctl_kind kind)
{
    Airlock__Internal__Use use = AIRLOCK__INTERNAL__USE__INIT;
    Airlock__Internal__EgressMsg m = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;
    const struct eg_cred *c =
        u->cred >= 0 && (size_t)u->cred < j->ncreds ? &j->creds[u->cred] : NULL;
    char path[EG_PATH_REC + 1];
    size_t pl = 0;

    while (u->path && u->path[pl] && u->path[pl] != '?' && pl < EG_PATH_REC) {
        path[pl] = u->path[pl];
        pl++;
    }
    path[pl] = '\0';
    use.job = j->id;
    use.grant_id = c ? c->grant_id : j->grant_id;
    use.credential = c ? c->name : "";
    use.version = c ? c->version : 0;
    use.destination = (char *)(u->destination ? u->destination : "");
    use.method = (char *)(u->method ? u->method : "");
    use.path = path;
    use.status = u->status;
    use.request_bytes = u->req_bytes;
    use.response_bytes = u->resp_bytes;
    use.allowed = u->allowed != 0;
    use.reason = (char *)(u->reason ? u->reason : "");
    use.time_ms = eg_now_ms(j->p);
    use.exfiltration = u->exfil != 0;
    use.duration_us = u->t0 > 0 ? (int64_t)((ev_now(j->p->loop) - u->t0) * 1e6) : 0;
    m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_USE;
    m.use = &use;
    if (!u->allowed)
        j->n_denied++;
    if (eg_ctl_send(j->p->ctl, &m, kind) == AL_ERR_TOOBIG)
        j->n_dropped++;
    AL_LOG_INFO("egress.use",
                "job=%s dest=%s method=%s status=%d allowed=%d exfil=%d cred=%s reason=\"%s\"",
                j->id, use.destination, use.method, u->status, u->allowed != 0, u->exfil != 0,
                use.credential, use.reason);
}

/* ------------------------------------------------------------- lifetime */

static void job_free(struct eg_job *j)
{
    for (size_t i = 0; i < j->nceiling; i++)
        eg_dest_cleanup(&j->ceiling[i]);
    for (size_t i = 0; i < j->ndests; i++)
        eg_dest_cleanup(&j->dests[i]);
    free(j->ceiling);
    free(j->dests);
    for (size_t i = 0; i < j->ncreds; i++)
        eg_cred_cleanup(&j->creds[i]);
    free(j->creds);
    rl_scrub_free(j->detect);
    eg_scrubset_unref(j->resp);
    eg_ca_free(j->ca);
    free(j->id);
    free(j->principal);
    free(j->pool);
    free(j->grant_id);
    free(j);
}

void eg_job_unref(struct eg_job *j)
{
    if (j && --j->refs == 0)
        job_free(j);
}

struct eg_job *eg_job_find(struct eg_proxy *p, const char *id)
{
    for (struct eg_job *j = p->jobs; j; j = j->next)
        if (strcmp(j->id, id) == 0)
            return j;
    return NULL;
}

static void arm_expiry(struct eg_job *j);

/* Wipes what holds values now; the struct lives on while connections drain. */
static void wipe_secrets(struct eg_job *j)
{
    for (size_t i = 0; i < j->ncreds; i++)
        eg_cred_expire(&j->creds[i]);
    eg_scrubset_unref(j->resp);
    j->resp = NULL;
    eg_ca_free(j->ca);
    j->ca = NULL;
}

static void job_close(struct eg_job *j, int reply)
{
    struct eg_proxy *p = j->p;

    j->closed = 1;
    ev_timer_stop(p->loop, &j->expiry);
    for (size_t i = 0; i < j->nlisteners; i++) {
        ev_io_stop(p->loop, &j->listeners[i].io);
        close(j->listeners[i].fd);
    }
    j->nlisteners = 0;
    while (j->conns)
        eg_conn_abort(j->conns, "job closed");
    wipe_secrets(j);
    if (reply) {
        Airlock__Internal__JobClosed jc = AIRLOCK__INTERNAL__JOB_CLOSED__INIT;
        Airlock__Internal__EgressMsg m = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;
        jc.job = j->id;
        jc.connections = j->n_conns;
        jc.requests = j->n_requests;
        jc.bytes_up = j->n_bytes_up;
        jc.bytes_down = j->n_bytes_down;
        jc.denied = j->n_denied;
        jc.uses_dropped = j->n_dropped;
        m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_CLOSED;
        m.closed = &jc;
        eg_ctl_send(p->ctl, &m, EG_CTL_REPLY);
    }
    AL_LOG_INFO("egress.job.close",
                "job=%s connections=%lld requests=%lld bytes_up=%lld bytes_down=%lld denied=%lld "
                "uses_dropped=%lld",
                j->id, (long long)j->n_conns, (long long)j->n_requests, (long long)j->n_bytes_up,
                (long long)j->n_bytes_down, (long long)j->n_denied, (long long)j->n_dropped);
    if (j->prev)
        j->prev->next = j->next;
    else
        p->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    j->prev = j->next = NULL;
    eg_job_unref(j);
}

void eg_jobs_close_all(struct eg_proxy *p)
{
    while (p->jobs)
        job_close(p->jobs, 0);
}

/* ------------------------------------------------------------- expiry */

static void expiry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct eg_job *j = w->data;
    int64_t now = eg_now_ms(j->p);
    int changed = 0;
    (void)loop;
    (void)revents;

    for (size_t i = 0; i < j->ncreds; i++) {
        struct eg_cred *c = &j->creds[i];
        if (c->value && now >= c->expires_ms) {
            eg_cred_expire(c);
            changed = 1;
            AL_LOG_INFO("egress.cred.expired", "job=%s cred=%s", j->id, c->name);
        }
    }
    if (changed) {
        struct eg_scrubset *set = NULL;
        if (build_resp(j, &set) < 0) {
            /* keep the old set (it only holds more values) rather than none */
            AL_LOG_ERROR("egress.cred.expired",
                         "job=%s reason=\"out of memory rebuilding the "
                         "response scrubber\"",
                         j->id);
        } else {
            eg_scrubset_unref(j->resp);
            j->resp = set;
        }
    }
    arm_expiry(j);
}

static void arm_expiry(struct eg_job *j)
{
    int64_t next = 0, now = eg_now_ms(j->p);

    ev_timer_stop(j->p->loop, &j->expiry);
    for (size_t i = 0; i < j->ncreds; i++)
        if (j->creds[i].value && (next == 0 || j->creds[i].expires_ms < next))
            next = j->creds[i].expires_ms;
    if (next == 0)
        return;
    ev_timer_set(&j->expiry, next > now ? (double)(next - now) / 1000.0 + 0.001 : 0., 0.);
    ev_timer_start(j->p->loop, &j->expiry);
}

/* ------------------------------------------------------------- JobOpen */

static int dest_from(struct eg_dest *d, const Airlock__Internal__EgressDestination *m, int ceiling,
                     char *why, size_t n)
{
    return eg_dest_init(d, m->host, m->port, (const char *const *)m->methods, m->n_methods,
                        (const char *const *)m->path_prefixes, m->n_path_prefixes,
                        ceiling ? (const char *const *)m->allow_cidrs : NULL,
                        ceiling ? m->n_allow_cidrs : 0, ceiling && m->allow_http, why, n);
}

static int dests_from(struct eg_dest **out, size_t *nout,
                      Airlock__Internal__EgressDestination *const *m, size_t n, int ceiling,
                      char *why, size_t wn)
{
    char sub[WHY_MAX];

    if (n > EG_MAX_DESTS) {
        snprintf(why, wn, "more than %d %s entries", EG_MAX_DESTS,
                 ceiling ? "ceiling" : "destination");
        return AL_ERR_INVAL;
    }
    *out = calloc(n ? n : 1, sizeof(**out));
    if (!*out)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        int rc = dest_from(&(*out)[i], m[i], ceiling, sub, sizeof(sub));
        if (rc < 0) {
            snprintf(why, wn, "%s entry %zu (%.80s): %.120s", ceiling ? "ceiling" : "destination",
                     i, m[i]->host ? m[i]->host : "", sub);
            return rc;
        }
        (*nout)++;
    }
    return 0;
}

/* Builds c from the message entry m (JobOpen, JobCredentials). */
static int cred_from(const struct eg_job *j, struct eg_cred *c,
                     const Airlock__Internal__EgressCredential *m, char *why, size_t wn)
{
    struct eg_cred_spec s = {
        .name = m->credential,
        .placeholder = m->placeholder,
        .binds = (const char *const *)m->destinations,
        .nbinds = m->n_destinations,
        .version = m->version,
        .type = m->type,
        .header = m->header,
        .format = m->format,
        .allow_plain_http = m->allow_plain_http,
        .value = m->value.data,
        .value_len = m->value.len,
        .expires_ms = m->expires_unix_ms,
        .credstore_expires_ms = m->credstore_expires_unix_ms,
        .grant_id = m->grant_id && m->grant_id[0] ? m->grant_id : j->grant_id,
    };

    if (!m->credential || !m->credential[0]) {
        snprintf(why, wn, "no credential name");
        return AL_ERR_INVAL;
    }
    if (m->expires_unix_ms <= 0) {
        snprintf(why, wn, "no expiry");
        return AL_ERR_INVAL;
    }
    return eg_cred_init(c, &s, why, wn);
}

static int creds_from(struct eg_job *j, Airlock__Internal__EgressCredential *const *m, size_t n,
                      char *why, size_t wn)
{
    char sub[WHY_MAX];

    if (n > EG_MAX_CREDS) {
        snprintf(why, wn, "more than %d credentials", EG_MAX_CREDS);
        return AL_ERR_INVAL;
    }
    j->creds = calloc(n ? n : 1, sizeof(*j->creds));
    if (!j->creds)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const Airlock__Internal__EgressCredential *c = m[i];
        int rc = cred_from(j, &j->creds[i], c, sub, sizeof(sub));
        if (rc < 0) {
            snprintf(why, wn, "credential %zu (%.64s): %.140s", i,
                     c->credential ? c->credential : "", sub);
            return rc;
        }
        j->ncreds++;
        for (size_t k = 0; k < i; k++)
            if (strcmp(j->creds[k].placeholder, j->creds[i].placeholder) == 0) {
                snprintf(why, wn, "credentials %zu and %zu share a placeholder", k, i);
                return AL_ERR_INVAL;
            }
    }
    return 0;
}

static int build_detect(struct eg_job *j)
{
    int rc;

    if (j->ncreds == 0)
        return 0;
    if ((rc = rl_scrub_new(&j->detect)) < 0)
        return rc;
    for (size_t i = 0; i < j->ncreds; i++)
        if ((rc = rl_scrub_add(j->detect, (const uint8_t *)j->creds[i].placeholder, EG_PH_LEN)) < 0)
            return rc;
    return 0;
}

/* Something to intercept: a credential, or method/path rules that apply to
 * a job destination (its own, or an overlapping ceiling entry's). */
static int needs_ca(const struct eg_job *j)
{
    if (j->ncreds)
        return 1;
    for (size_t i = 0; i < j->ndests; i++) {
        if (eg_dest_restricted(&j->dests[i]))
            return 1;
        for (size_t k = 0; k < j->nceiling; k++)
            if (eg_dest_restricted(&j->ceiling[k]) && eg_dest_overlap(&j->ceiling[k], &j->dests[i]))
                return 1;
    }
    return 0;
}

static int build_ca(struct eg_job *j)
{
    size_t n = j->ndests, k = 0;
    const struct eg_dest **hosts;
    int rc;

    for (size_t i = 0; i < j->ncreds; i++)
        n += j->creds[i].nbinds;
    hosts = calloc(n ? n : 1, sizeof(*hosts));
    if (!hosts)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < j->ndests; i++)
        hosts[k++] = &j->dests[i];
    for (size_t i = 0; i < j->ncreds; i++)
        for (size_t b = 0; b < j->creds[i].nbinds; b++)
            hosts[k++] = &j->creds[i].binds[b];
    rc = eg_ca_new(j->id, hosts, k, ev_time(), &j->ca);
    free(hosts);
    return rc;
}

static void set_limits(struct eg_job *j, const Airlock__Internal__EgressLimits *l)
{
    j->max_conns = l && l->max_connections > 0 ? (size_t)l->max_connections : 64;
    j->bytes.max = l && l->max_bytes > 0 ? l->max_bytes : 0;
    j->idle_s = l && l->idle_timeout_ms > 0 ? (double)l->idle_timeout_ms / 1000.0 : 60.0;
    j->total_s = l && l->total_timeout_ms > 0 ? (double)l->total_timeout_ms / 1000.0 : 0.0;
    eg_bucket_init(&j->bucket, l && l->requests_per_second > 0 ? l->requests_per_second : 0,
                   l && l->burst > 0 ? l->burst : 0, ev_now(j->p->loop));
}

static char *dup0(const char *s)
{
    return strdup(s ? s : "");
}

static int job_build(struct eg_job *j, const Airlock__Internal__JobOpen *m, char *why, size_t n)
{
    int rc;

    j->principal = dup0(m->principal);
    j->pool = dup0(m->pool);
    j->grant_id = dup0(m->grant_id);
    if (!j->principal || !j->pool || !j->grant_id)
        return AL_ERR_NOMEM;
    rc = dests_from(&j->ceiling, &j->nceiling, m->ceiling, m->n_ceiling, 1, why, n);
    if (rc == 0)
        rc = dests_from(&j->dests, &j->ndests, m->destinations, m->n_destinations, 0, why, n);
    if (rc == 0)
        rc = creds_from(j, m->credentials, m->n_credentials, why, n);
    if (rc == 0 && (rc = build_detect(j)) < 0)
        snprintf(why, n, "cannot build the placeholder detector");
    if (rc == 0 && (rc = build_resp(j, &j->resp)) < 0)
        snprintf(why, n, "cannot build the response scrubber");
    if (rc == 0 && needs_ca(j) && (rc = build_ca(j)) < 0)
        snprintf(why, n, "cannot create the job's CA");
    j->pol = (struct eg_policy){j->ceiling, j->nceiling, j->dests, j->ndests};
    set_limits(j, m->limits);
    return rc;
}

static void reply_opened(struct eg_proxy *p, const char *job, const char *error, const char *pem)
{
    Airlock__Internal__JobOpened o = AIRLOCK__INTERNAL__JOB_OPENED__INIT;
    Airlock__Internal__EgressMsg m = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;

    o.job = (char *)job;
    o.error = (char *)(error ? error : "");
    o.ca_cert_pem = (char *)(pem ? pem : "");
    m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_OPENED;
    m.opened = &o;
    eg_ctl_send(p->ctl, &m, EG_CTL_REPLY);
}

static void on_open(struct eg_proxy *p, const Airlock__Internal__JobOpen *m)
{
    char why[WHY_MAX] = "";
    struct eg_job *j;
    int rc;

    if (!m->job || !m->job[0] || strlen(m->job) > 256) {
        AL_LOG_WARN("egress.job.open", "reason=\"JobOpen without a valid job id\"");
        reply_opened(p, m->job ? m->job : "", "JobOpen needs a job id (1-256 bytes)", NULL);
        return;
    }
    if (eg_job_find(p, m->job)) {
        AL_LOG_WARN("egress.job.open", "job=%s reason=\"already open\"", m->job);
        reply_opened(p, m->job, "a job with this id is already open", NULL);
        return;
    }
    j = calloc(1, sizeof(*j));
    if (!j || !(j->id = strdup(m->job))) {
        free(j);
        reply_opened(p, m->job, "out of memory", NULL);
        return;
    }
    j->p = p;
    j->refs = 1;
    ev_timer_init(&j->expiry, expiry_cb, 0., 0.);
    j->expiry.data = j;
    rc = job_build(j, m, why, sizeof(why));
    if (rc < 0) {
        if (!why[0])
            snprintf(why, sizeof(why), "%s", al_strerror(rc));
        AL_LOG_WARN("egress.job.open", "job=%s reason=\"%s\"", m->job, why);
        reply_opened(p, m->job, why, NULL);
        job_free(j);
        return;
    }
    j->next = p->jobs;
    if (p->jobs)
        p->jobs->prev = j;
    p->jobs = j;
    arm_expiry(j);
    AL_LOG_INFO("egress.job.open",
                "job=%s principal=%s pool=%s ceiling=%zu destinations=%zu credentials=%zu ca=%d",
                j->id, j->principal, j->pool, j->nceiling, j->ndests, j->ncreds, j->ca != NULL);
    reply_opened(p, j->id, NULL, j->ca ? eg_ca_pem(j->ca) : NULL);
}

/* ------------------------------------------------------------ listeners */

static void listen_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct eg_listener *l = w->data;
    (void)loop;
    (void)revents;

    for (int i = 0; i < 32 && !l->job->closed; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                AL_LOG_WARN("egress.accept", "job=%s reason=\"%s\"", l->job->id, strerror(errno));
            return;
        }
        eg_conn_accept(l->job, fd);
    }
}

/* A listening TCP socket? */
static int listening_tcp(int fd)
{
    int v = 0, type = 0, dom = 0;
    socklen_t len = sizeof(v);

    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) < 0 || !v)
        return 0;
    len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
        return 0;
    len = sizeof(dom);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &len) < 0)
        return 0;
    return dom == AF_INET || dom == AF_INET6;
}

static void on_listen(struct eg_proxy *p, const Airlock__Internal__JobListen *m, int *fds,
                      size_t nfds)
{
    struct eg_job *j = m->job ? eg_job_find(p, m->job) : NULL;

    for (size_t i = 0; i < nfds; i++) {
        struct eg_listener *l;
        if (!j || j->nlisteners == EG_MAX_LISTEN || !listening_tcp(fds[i])) {
            AL_LOG_WARN("egress.job.listen", "job=%s reason=\"%s\"", m->job ? m->job : "",
                        !j                               ? "no such open job"
                        : j->nlisteners == EG_MAX_LISTEN ? "too many listeners"
                                                         : "not a listening TCP socket");
            close(fds[i]);
            continue;
        }
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        l = &j->listeners[j->nlisteners++];
        l->fd = fds[i];
        l->job = j;
        ev_io_init(&l->io, listen_cb, fds[i], EV_READ);
        l->io.data = l;
        ev_io_start(p->loop, &l->io);
    }
    if (j)
        AL_LOG_INFO("egress.job.listen", "job=%s listeners=%zu", j->id, j->nlisteners);
}

static void on_grant(struct eg_proxy *p, const Airlock__Internal__JobGrant *m)
{
    struct eg_job *j = m->job ? eg_job_find(p, m->job) : NULL;
    char *gid;

    if (!j || !m->grant_id || !m->grant_id[0] || m->expires_unix_ms <= 0) {
        AL_LOG_WARN("egress.job.grant", "job=%s reason=\"%s\"", m->job ? m->job : "",
                    j ? "JobGrant without grant id or expiry" : "no such open job");
        return;
    }
    if (!(gid = strdup(m->grant_id)))
        return;
    free(j->grant_id);
    j->grant_id = gid;
    for (size_t i = 0; i < j->ncreds; i++) {
        struct eg_cred *c = &j->creds[i];
        char *g = strdup(m->grant_id);
        if (g) {
            free(c->grant_id);
            c->grant_id = g;
        }
        if (c->value && c->credstore_expires_ms > 0)
            c->expires_ms = m->expires_unix_ms < c->credstore_expires_ms ? m->expires_unix_ms
                                                                         : c->credstore_expires_ms;
    }
    arm_expiry(j);
    AL_LOG_INFO("egress.job.grant", "job=%s grant=%s", j->id, j->grant_id);
}

/* The entry carries the value, version and template c holds already. */
static int same_value(const struct eg_cred *c, const Airlock__Internal__EgressCredential *e)
{
    return c->value && e->value.len == c->value_len && e->version == c->version &&
           e->type == c->type && !e->allow_plain_http == !c->allow_plain_http &&
           e->expires_unix_ms > 0 && strcmp(e->header ? e->header : "", c->tmpl_header) == 0 &&
           strcmp(e->format ? e->format : "", c->tmpl_format) == 0 &&
           CRYPTO_memcmp(e->value.data, c->value, c->value_len) == 0;
}

/* Values resolved again: each entry replaces the credential with its
 * placeholder (value, version, template, expiries), so a long job keeps
 * working past credstore's limit on one released value. */
static void on_credentials(struct eg_proxy *p, const Airlock__Internal__JobCredentials *m)
{
    struct eg_job *j = m->job ? eg_job_find(p, m->job) : NULL;
    char why[WHY_MAX];
    size_t done = 0;

    if (!j || j->closed) {
        AL_LOG_WARN("egress.job.credentials", "job=%s reason=\"no such open job\"",
                    m->job ? m->job : "");
        return;
    }
    for (size_t i = 0; i < m->n_credentials; i++) {
        const Airlock__Internal__EgressCredential *e = m->credentials[i];
        struct eg_cred fresh;
        size_t k;
        int rc;

        for (k = 0; k < j->ncreds; k++)
            if (e->placeholder && strcmp(j->creds[k].placeholder, e->placeholder) == 0)
                break;
        if (k == j->ncreds || !e->credential || strcmp(e->credential, j->creds[k].name) != 0) {
            AL_LOG_WARN("egress.job.credentials",
                        "job=%s entry=%zu reason=\"no credential of the job has this "
                        "placeholder and name\"",
                        j->id, i);
            continue;
        }
        if (same_value(&j->creds[k], e)) { /* the usual refresh: new expiries only */
            char *g = strdup(e->grant_id && e->grant_id[0] ? e->grant_id : j->grant_id);
            if (g) {
                free(j->creds[k].grant_id);
                j->creds[k].grant_id = g;
            }
            j->creds[k].expires_ms = e->expires_unix_ms;
            j->creds[k].credstore_expires_ms = e->credstore_expires_unix_ms;
            continue;
        }
        rc = cred_from(j, &fresh, e, why, sizeof(why));
        if (rc < 0) {
            /* the value in use stays until it expires */
            AL_LOG_WARN("egress.job.credentials", "job=%s cred=%s reason=\"%s\"", j->id,
                        j->creds[k].name, why);
            continue;
        }
        eg_cred_cleanup(&j->creds[k]);
        j->creds[k] = fresh;
        done++;
        AL_LOG_INFO("egress.job.credentials", "job=%s cred=%s version=%d", j->id, j->creds[k].name,
                    (int)j->creds[k].version);
    }
    if (done) {
        struct eg_scrubset *set = NULL;
        if (build_resp(j, &set) < 0) {
            /* no scrubber for the new values: they may not be used */
            AL_LOG_ERROR("egress.job.credentials",
                         "job=%s reason=\"out of memory building the response scrubber; "
                         "the job's values are dropped\"",
                         j->id);
            for (size_t i = 0; i < j->ncreds; i++)
                eg_cred_expire(&j->creds[i]);
            eg_scrubset_unref(j->resp);
            j->resp = NULL;
        } else {
            eg_scrubset_unref(j->resp);
            j->resp = set;
        }
    }
    arm_expiry(j);
}

static void on_close(struct eg_proxy *p, const Airlock__Internal__JobClose *m)
{
    struct eg_job *j = m->job ? eg_job_find(p, m->job) : NULL;

    if (!j) {
        Airlock__Internal__JobClosed jc = AIRLOCK__INTERNAL__JOB_CLOSED__INIT;
        Airlock__Internal__EgressMsg r = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;
        AL_LOG_WARN("egress.job.close", "job=%s reason=\"no such open job\"", m->job ? m->job : "");
        jc.job = m->job ? m->job : "";
        r.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_CLOSED;
        r.closed = &jc;
        eg_ctl_send(p->ctl, &r, EG_CTL_REPLY);
        return;
    }
    job_close(j, 1);
}

static void ctl_msg(struct eg_ctl *c, const Airlock__Internal__EgressMsg *m, int *fds, size_t nfds,
                    void *user)
{
    struct eg_proxy *p = user;
    (void)c;

    if (m->msg_case == AIRLOCK__INTERNAL__EGRESS_MSG__MSG_LISTEN) {
        on_listen(p, m->listen, fds, nfds);
        return;
    }
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]); /* descriptors only travel with JobListen */
    if (nfds)
        AL_LOG_WARN("egress.ctl.drop",
                    "reason=\"descriptors with a message other than "
                    "JobListen\" fds=%zu",
                    nfds);
    switch (m->msg_case) {
    case AIRLOCK__INTERNAL__EGRESS_MSG__MSG_OPEN:
        on_open(p, m->open);
        return;
    case AIRLOCK__INTERNAL__EGRESS_MSG__MSG_GRANT:
        on_grant(p, m->grant);
        return;
    case AIRLOCK__INTERNAL__EGRESS_MSG__MSG_CREDENTIALS:
        on_credentials(p, m->credentials);
        return;
    case AIRLOCK__INTERNAL__EGRESS_MSG__MSG_CLOSE:
        on_close(p, m->close);
        return;
    default:
        AL_LOG_WARN("egress.ctl.drop", "reason=\"message the executor does not send\" case=%d",
                    (int)m->msg_case);
        return;
    }
}

static void ctl_eof(struct eg_ctl *c, void *user)
{
    struct eg_proxy *p = user;
    (void)c;

    AL_LOG_INFO("egress.ctl.eof", "reason=\"control socket closed\" jobs_open=%d", p->jobs != NULL);
    eg_jobs_close_all(p);
    ev_break(p->loop, EVBREAK_ALL);
}

const struct eg_ctl_cbs eg_job_ctl_cbs = {ctl_msg, ctl_eof};
