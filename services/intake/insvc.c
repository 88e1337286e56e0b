/*
 * insvc: group commit, deferred replies, counters, the executor registry,
 * the wake and sweep timers and service start/stop; see insvc.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "al_grant.h"
#include "al_log.h"
#include "al_metrics.h"
#include "insvc.h"

/* ---- replies ---- */

struct al_arena *in_txa(struct in_svc *s)
{
    return &s->txa;
}

static struct in_action *act_new(struct in_svc *s, enum in_act_kind kind)
{
    struct in_action *a = al_arena_alloc(&s->txa, sizeof(*a));
    if (!a)
        return NULL;
    memset(a, 0, sizeof(*a));
    a->kind = kind;
    *s->actions_tail = a;
    s->actions_tail = &a->next;
    return a;
}

void in_finish_error(struct al_grpc_call *call, int status, int reason, const char *field,
                     const char *message, int64_t retry_after_ms)
{
    Airlock__V1__ErrorDetail d = AIRLOCK__V1__ERROR_DETAIL__INIT;
    uint8_t buf[768];
    const char *rid = al_grpc_call_user(call);

    d.reason = reason;
    d.field = (char *)(field ? field : "");
    d.message = (char *)(message ? message : "");
    d.retry_after_ms = retry_after_ms;
    d.request_id = (char *)(rid && strlen(rid) <= 64 ? rid : "");
    if (airlock__v1__error_detail__get_packed_size(&d) <= sizeof(buf)) {
        size_t len = airlock__v1__error_detail__pack(&d, buf);
        al_grpc_call_add_trailer(call, "airlock-error-bin", buf, len);
    }
    al_grpc_call_finish(call, status, message);
}

static int request_id_valid(const char *v, size_t len)
{
    if (len < 1 || len > 64)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

void in_request_begin(struct al_grpc_call *call)
{
    size_t len = 0;
    const char *v = al_grpc_call_metadata(call, "airlock-request-id", &len);
    char *id;
    uint8_t rnd[8];

    if (v && request_id_valid(v, len)) {
        id = al_arena_strndup(al_grpc_call_arena(call), v, len);
    } else {
        char hex[17];
        if (in_random(rnd, sizeof(rnd)) < 0)
            return;
        in_hex(rnd, sizeof(rnd), hex);
        id = al_arena_strndup(al_grpc_call_arena(call), hex, 16);
    }
    if (!id)
        return;
    al_grpc_call_set_user(call, id);
    al_grpc_call_add_header(call, "airlock-request-id", id, strlen(id));
}

void in_reply(struct in_svc *s, struct al_grpc_call *call, const ProtobufCMessage *msg)
{
    struct in_action *a;
    if (!in_store_in_tx(s->store)) {
        al_grpc_call_reply(call, msg);
        return;
    }
    a = act_new(s, IN_ACT_REPLY);
    if (!a) {
        in_finish_error(call, AL_GRPC_UNAVAILABLE, IN_REASON(INTERNAL), NULL,
                        "out of memory; retry", 0);
        return;
    }
    a->call = call;
    a->msg = msg;
}

static void error_action(struct in_svc *s, struct al_grpc_call *call, int status, int reason,
                         const char *field, int64_t retry, const char *message)
{
    struct in_action *a;
    if (!in_store_in_tx(s->store)) {
        in_finish_error(call, status, reason, field, message, retry);
        return;
    }
    a = act_new(s, IN_ACT_ERROR);
    if (!a) {
        in_finish_error(call, status, reason, field, message, retry);
        return;
    }
    a->call = call;
    a->status = status;
    a->reason = reason;
    a->retry_after_ms = retry;
    snprintf(a->field, sizeof(a->field), "%s", field ? field : "");
    snprintf(a->message, sizeof(a->message), "%s", message);
}

void in_error(struct in_svc *s, struct al_grpc_call *call, int status, int reason,
              const char *field, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    error_action(s, call, status, reason, field, 0, msg);
}

void in_error_retry(struct in_svc *s, struct al_grpc_call *call, int status, int reason,
                    int64_t retry_after_ms, const char *message)
{
    error_action(s, call, status, reason, NULL, retry_after_ms, message);
}

void in_lease_send(struct in_svc *s, struct in_exec *e, const ProtobufCMessage *msg)
{
    struct in_action *a = act_new(s, IN_ACT_LEASE);
    if (a) {
        a->exec = e;
        a->msg = msg;
    }
    /* without memory the message is lost like one on a broken stream: the
     * lease expires and the job runs as a new attempt */
}

static void run_actions(struct in_svc *s, int committed)
{
    for (struct in_action *a = s->actions; a; a = a->next) {
        switch (a->kind) {
        case IN_ACT_REPLY:
            if (committed)
                al_grpc_call_reply(a->call, a->msg);
            else
                in_finish_error(a->call, AL_GRPC_UNAVAILABLE, IN_REASON(INTERNAL), NULL,
                                "the job store could not commit this change; retry", 1000);
            break;
        case IN_ACT_ERROR:
            in_finish_error(a->call, a->status, a->reason, a->field, a->message, a->retry_after_ms);
            break;
        case IN_ACT_LEASE:
            if (committed && a->exec->stream) {
                int rc = al_grpc_call_send(a->exec->stream->call, a->msg);
                if (rc < 0 && rc != AL_ERR_CLOSED)
                    AL_LOG_WARN("intake.lease_send", "executor=%s reason=\"%s\"", a->exec->identity,
                                al_strerror(rc));
            }
            break;
        }
    }
    s->actions = NULL;
    s->actions_tail = &s->actions;
}

/* ---- transactions ---- */

int in_tx_begin(struct in_svc *s)
{
    int rc = in_store_savepoint(s->store);
    if (rc == 0)
        s->batch_ops++;
    return rc;
}

int in_tx_end(struct in_svc *s, int ok)
{
    if (ok) {
        int rc = in_store_release(s->store);
        if (rc == 0)
            return 0;
    }
    in_store_rollback_savepoint(s->store);
    /* counters may have moved with the rolled-back writes */
    s->rebuild_pending = 1;
    return ok ? AL_ERR_INVAL : 0;
}

/* ---- counters and executors ---- */

struct in_pcount *in_pcount(struct in_svc *s, const char *principal)
{
    struct in_pcount *c = in_map_get(s->principals, principal);
    if (c)
        return c;
    c = calloc(1, sizeof(*c));
    if (c && in_map_put(s->principals, principal, c) < 0) {
        free(c);
        c = NULL;
    }
    return c;
}

static struct in_pstat *pstat(struct in_svc *s, const char *pool)
{
    for (size_t i = 0; s->pool_stats && pool && i < s->cfg.pools.n; i++)
        if (strcmp(s->cfg.pools.v[i].name, pool) == 0)
            return &s->pool_stats[i];
    return NULL; /* a pool no longer configured: in the totals only */
}

void in_count(struct in_svc *s, const char *principal, const char *pool, int from, int to)
{
    struct in_pcount *c = in_pcount(s, principal);
    struct in_pstat *p = pstat(s, pool);
    int fq = from == IN_JS(QUEUED), fa = from == IN_JS(LEASED) || from == IN_JS(RUNNING);
    int tq = to == IN_JS(QUEUED), ta = to == IN_JS(LEASED) || to == IN_JS(RUNNING);
    s->queued_total += tq - fq;
    s->active_total += ta - fa;
    if (c) {
        c->queued += tq - fq;
        c->active += ta - fa;
    }
    if (p) {
        p->queued += tq - fq;
        p->active += ta - fa;
    }
}

static void exec_key(char *buf, size_t n, const char *identity, const char *instance)
{
    snprintf(buf, n, "%s %s", identity, instance);
}

struct in_exec *in_exec_find(struct in_svc *s, const char *identity, const char *instance)
{
    char key[AL_PKI_ID_MAX + IN_INSTANCE_LEN + 2];
    exec_key(key, sizeof(key), identity, instance);
    return in_map_get(s->executors, key);
}

struct in_exec *in_exec_get(struct in_svc *s, const char *identity, const char *instance)
{
    char key[AL_PKI_ID_MAX + IN_INSTANCE_LEN + 2];
    struct in_exec *e;

    exec_key(key, sizeof(key), identity, instance);
    e = in_map_get(s->executors, key);
    if (e)
        return e;
    e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    snprintf(e->identity, sizeof(e->identity), "%s", identity);
    snprintf(e->instance, sizeof(e->instance), "%s", instance);
    e->last_seen_ms = in_now_ms();
    if (in_map_put(s->executors, key, e) < 0) {
        free(e);
        return NULL;
    }
    return e;
}

int in_exec_gone(struct in_svc *s, const struct in_exec *e, int64_t now_ms)
{
    int64_t until;
    if (!e)
        return 1;
    if (e->stream)
        return 0;
    until = e->last_seen_ms + s->cfg.lease_ttl_ms;
    if (s->start_ms + s->cfg.restart_grace_ms > until)
        until = s->start_ms + s->cfg.restart_grace_ms;
    return now_ms > until;
}

void in_exec_release(struct in_svc *s, const char *identity, const char *instance)
{
    struct in_exec *e = in_exec_find(s, identity, instance);
    if (e && e->held > 0)
        e->held--;
    s->dispatch_dirty = 1;
}

static void zero_pcount(const char *key, void *value, void *user)
{
    struct in_pcount *c = value;
    (void)key;
    (void)user;
    c->queued = c->active = 0;
}

static void zero_exec(const char *key, void *value, void *user)
{
    struct in_exec *e = value;
    (void)key;
    (void)user;
    e->held = 0;
}

static void set_pcount(void *user, const char *principal, const char *pool, int queued, int active)
{
    struct in_svc *s = user;
    struct in_pcount *c = in_pcount(s, principal);
    struct in_pstat *p = pstat(s, pool);
    s->queued_total += queued;
    s->active_total += active;
    if (c) { /* a row per pool: zeroed before */
        c->queued += queued;
        c->active += active;
    }
    if (p) {
        p->queued += queued;
        p->active += active;
    }
}

static void set_held(void *user, const char *identity, const char *instance, int n)
{
    struct in_exec *e = in_exec_get(user, identity, instance);
    if (e)
        e->held = n;
}

static int rebuild(struct in_svc *s)
{
    int rc;
    in_map_each(s->principals, zero_pcount, NULL);
    in_map_each(s->executors, zero_exec, NULL);
    s->queued_total = s->active_total = 0;
    for (size_t i = 0; s->pool_stats && i < s->cfg.pools.n; i++)
        s->pool_stats[i].queued = s->pool_stats[i].active = 0;
    rc = in_store_count_principals(s->store, set_pcount, s);
    if (rc == 0)
        rc = in_store_count_holders(s->store, set_held, s);
    s->dispatch_dirty = s->deadlines_dirty = 1;
    return rc;
}

/* ---- timers ---- */

void in_deadlines_dirty(struct in_svc *s)
{
    s->deadlines_dirty = 1;
}

void in_dispatch_dirty(struct in_svc *s)
{
    s->dispatch_dirty = 1;
}

/* The earlier of two wall-clock moments, 0 meaning none. */
static int64_t earliest(int64_t a, int64_t b)
{
    if (a == 0)
        return b;
    return b != 0 && b < a ? b : a;
}

struct gone_scan {
    struct in_svc *s;
    int64_t seen, next;
};

/* The moment an executor without a stream becomes gone (in_exec_gone), if
 * that is after the dispatcher last looked. */
static void gone_next(const char *key, void *value, void *user)
{
    struct gone_scan *g = user;
    struct in_exec *e = value;
    int64_t at;
    (void)key;
    if (e->stream)
        return;
    at = e->last_seen_ms + g->s->cfg.lease_ttl_ms;
    if (g->s->start_ms + g->s->cfg.restart_grace_ms > at)
        at = g->s->start_ms + g->s->cfg.restart_grace_ms;
    at += 1;
    if (at > g->seen)
        g->next = earliest(g->next, at);
}

/*
 * Time-dependent eligibility is measured against s->dispatch_ms, the clock
 * the dispatcher read, never against now_ms: the dispatch runs before the
 * group commit and this runs after it, so a backoff (or grace, or gone
 * moment) can end in between. Filtering on now_ms would drop it as "past"
 * although no dispatch ever saw it pass, and nothing would wake the
 * dispatcher again: the job would sit QUEUED next to a free slot.
 */
int64_t in_wake_next(struct in_svc *s, int64_t now_ms)
{
    int64_t seen = s->dispatch_ms, grace_end = s->start_ms + s->cfg.restart_grace_ms, next = 0;
    int64_t retry = s->retry_at_ms;
    struct gone_scan g = {s, seen, 0};

    if (in_store_next_deadline(s->store, seen, &next) < 0)
        next = now_ms + IN_RETRY_MS;
    in_map_each(s->executors, gone_next, &g);
    next = earliest(next, g.next);
    /* executors not seen since the restart become gone when the grace ends */
    if (seen <= grace_end)
        next = earliest(next, grace_end + 1);
    /* work a failure or a rebuild left for the next turn must not wait for
     * an unrelated event */
    if (s->dispatch_dirty || s->rebuild_pending) {
        if (retry < now_ms)
            retry = now_ms;
        else if (retry > now_ms + IN_RETRY_MS)
            retry = now_ms + IN_RETRY_MS; /* the wall clock was set back */
        next = earliest(next, retry);
    }
    return next;
}

static void arm_wake(struct in_svc *s)
{
    int64_t next = in_wake_next(s, in_now_ms());
    double after;

    s->deadlines_dirty = 0;
    ev_timer_stop(s->svc.loop, &s->wake_w);
    s->wake_at_ms = next;
    if (next == 0)
        return;
    /* libev counts a timer from the loop's cached time (ev_now, wall clock),
     * read before this iteration's callbacks and commit ran; aim at `next`
     * itself rather than at a delay from a later clock reading, plus 1 ms for
     * the ms rounding. A wake that still comes early (the wall clock was set)
     * finds nothing due and arms again: in_wake_next() keeps every deadline
     * that is not processed or judged yet. */
    after = (double)next / 1000.0 - ev_now(s->svc.loop);
    if (after < 0.)
        after = 0.;
    ev_timer_set(&s->wake_w, after + 0.001, 0.);
    ev_timer_start(s->svc.loop, &s->wake_w);
}

static void wake_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct in_svc *s = w->data;
    (void)loop;
    (void)revents;
    in_process_due(s, in_now_ms());
    s->dispatch_dirty = 1;
    s->deadlines_dirty = 1;
}

static void sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct in_svc *s = w->data;
    (void)loop;
    (void)revents;
    in_retention_sweep(s, in_now_ms());
    s->prune_due = 1; /* in the flush, once no action refers to an executor */
}

/* Forgets executor instances with nothing held, no stream and long gone. */
struct prune_scan {
    struct in_svc *s;
    int64_t now;
    char (*keys)[AL_PKI_ID_MAX + IN_INSTANCE_LEN + 2];
    size_t n, max;
};

static void prune_scan_cb(const char *key, void *value, void *user)
{
    struct prune_scan *p = user;
    struct in_exec *e = value;
    if (p->n < p->max && !e->stream && e->held == 0 &&
        p->now - e->last_seen_ms > 3600 * 1000LL + p->s->cfg.lease_ttl_ms)
        snprintf(p->keys[p->n++], sizeof(p->keys[0]), "%s", key);
}

static void prune_executors(struct in_svc *s, int64_t now)
{
    char keys[64][AL_PKI_ID_MAX + IN_INSTANCE_LEN + 2];
    struct prune_scan p = {s, now, keys, 0, 64};
    in_map_each(s->executors, prune_scan_cb, &p);
    for (size_t i = 0; i < p.n; i++)
        free(in_map_del(s->executors, keys[i]));
}

/* ---- the flush (ev_prepare) ---- */

static void update_gauges(struct in_svc *s)
{
    al_metric_set(s->m_queued, s->queued_total);
    al_metric_set(s->m_active, s->active_total);
    for (size_t i = 0; s->pool_stats && i < s->cfg.pools.n; i++) {
        al_metric_set(s->pool_stats[i].m_queued, s->pool_stats[i].queued);
        al_metric_set(s->pool_stats[i].m_active, s->pool_stats[i].active);
    }
}

void in_svc_flush(struct in_svc *s)
{
    int rc = 0, had_tx;

    if (s->dispatch_dirty)
        in_dispatch(s, in_now_ms());
    had_tx = in_store_in_tx(s->store);
    if (had_tx) {
        rc = in_store_commit(s->store);
        al_metric_observe(s->m_commit_batch, (double)s->batch_ops);
        if (rc < 0) {
            al_metric_add(s->m_commit_fail, 1);
            AL_LOG_ERROR("intake.commit", "ops=%zu reason=\"%s\"", s->batch_ops, al_strerror(rc));
            s->rebuild_pending = 1;
            s->retry_at_ms = in_now_ms() + IN_RETRY_MS;
        }
    }
    s->batch_ops = 0;
    run_actions(s, rc == 0);
    al_arena_cleanup(&s->txa);
    if (s->prune_due) {
        s->prune_due = 0;
        prune_executors(s, in_now_ms());
    }
    if (s->rebuild_pending) {
        s->rebuild_pending = 0;
        if ((rc = rebuild(s)) < 0) {
            AL_LOG_ERROR("intake.rebuild", "reason=\"%s\" retry_ms=%d", al_strerror(rc),
                         IN_RETRY_MS);
            s->rebuild_pending = 1;
            s->retry_at_ms = in_now_ms() + IN_RETRY_MS;
        }
    }
    in_watch_pump(s);
    /* a dispatch or rebuild still dirty needs the timer too (in_wake_next) */
    if (s->deadlines_dirty || s->dispatch_dirty || s->rebuild_pending)
        arm_wake(s);
    update_gauges(s);
}

static void prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    in_svc_flush(w->data);
}

/* ---- start / stop ---- */

static void on_drain(struct al_service *svc)
{
    struct in_svc *s = svc->user;
    AL_LOG_INFO("intake.drain", "lease_streams=%d watchers=%d", (int)al_metric_value(s->m_streams),
                (int)al_metric_value(s->m_watchers));
    in_svc_flush(s);
    in_watch_end_all(s, AL_GRPC_UNAVAILABLE, IN_REASON(DRAINING),
                     "intake is draining; resume Watch with after_seq on another replica");
    in_lease_streams_end(s, AL_GRPC_UNAVAILABLE, "intake is draining; reconnect");
}

static int restart_grace(struct in_svc *s)
{
    int n = 0, rc;
    rc = in_store_begin(s->store);
    if (rc == 0)
        rc = in_store_extend_leases(s->store, s->start_ms + s->cfg.restart_grace_ms, &n);
    if (rc == 0)
        rc = in_store_commit(s->store);
    else
        in_store_rollback(s->store);
    if (rc == 0 && n > 0)
        AL_LOG_INFO("intake.restart_grace", "leases=%d grace_ms=%lld", n,
                    (long long)s->cfg.restart_grace_ms);
    return rc;
}

static void metrics_init(struct in_svc *s)
{
    static const double batch_buckets[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
    struct al_metrics *m = s->svc.metrics;
    s->m_queued = al_metrics_gauge(m, "airlock_intake_jobs_queued", "Jobs QUEUED", NULL);
    s->m_active =
        al_metrics_gauge(m, "airlock_intake_jobs_running", "Jobs LEASED or RUNNING", NULL);
    for (size_t i = 0; s->pool_stats && i < s->cfg.pools.n; i++) {
        char esc[160], labels[sizeof(esc) + 16];
        const char *name = s->cfg.pools.v[i].name;
        al_metrics_label_escape(esc, sizeof(esc), name, strlen(name));
        snprintf(labels, sizeof(labels), "pool=\"%s\"", esc);
        s->pool_stats[i].m_queued = al_metrics_gauge(
            m, "airlock_intake_pool_jobs_queued",
            "Jobs QUEUED in the pool (an executor pool's autoscaling input)", labels);
        s->pool_stats[i].m_active = al_metrics_gauge(m, "airlock_intake_pool_jobs_running",
                                                     "Jobs of the pool LEASED or RUNNING", labels);
    }
    s->m_submits = al_metrics_counter(m, "airlock_intake_submits_total",
                                      "Jobs accepted by Submit (new jobs)", NULL);
    s->m_dedup =
        al_metrics_counter(m, "airlock_intake_submits_deduplicated_total",
                           "Submits answered with an existing job (idempotency key)", NULL);
    s->m_expiries = al_metrics_counter(m, "airlock_intake_lease_expiries_total",
                                       "Leases that expired without being finished", NULL);
    s->m_leases =
        al_metrics_counter(m, "airlock_intake_leases_total", "Jobs assigned to executors", NULL);
    s->m_finished = al_metrics_counter(m, "airlock_intake_jobs_finished_total",
                                       "Jobs that reached a terminal state", NULL);
    s->m_commit_fail = al_metrics_counter(m, "airlock_intake_commit_failures_total",
                                          "Group commits that failed (calls answered "
                                          "UNAVAILABLE)",
                                          NULL);
    s->m_commit_batch = al_metrics_histogram(m, "airlock_intake_commit_requests",
                                             "Requests per group commit", NULL, batch_buckets, 10);
    s->m_streams = al_metrics_gauge(m, "airlock_intake_lease_streams",
                                    "Open ExecutorService.Lease streams", NULL);
    s->m_watchers =
        al_metrics_gauge(m, "airlock_intake_watchers", "Open JobService.Watch streams", NULL);
    s->m_purged = al_metrics_counter(m, "airlock_intake_purged_jobs_total",
                                     "Finished jobs deleted by retention", NULL);
}

int in_svc_start(struct in_svc *s)
{
    int rc;

    s->start_ms = in_now_ms();
    s->actions_tail = &s->actions;
    al_arena_init(&s->txa, 0);
    if ((rc = in_map_new(&s->principals)) < 0 || (rc = in_map_new(&s->executors)) < 0 ||
        (rc = in_map_new(&s->watch_by_job)) < 0)
        return rc;
    s->pool_stats = calloc(s->cfg.pools.n + 1, sizeof(*s->pool_stats));
    if (!s->pool_stats)
        return AL_ERR_NOMEM;
    if ((rc = restart_grace(s)) < 0 || (rc = rebuild(s)) < 0)
        return rc;
    metrics_init(s);
    update_gauges(s);
    if ((rc = in_jobsvc_register(s)) < 0 || (rc = in_execsvc_register(s)) < 0)
        return rc;
    s->svc.on_drain = on_drain;
    ev_prepare_init(&s->prepare_w, prepare_cb);
    s->prepare_w.data = s;
    ev_prepare_start(s->svc.loop, &s->prepare_w);
    ev_timer_init(&s->wake_w, wake_cb, 0., 0.);
    s->wake_w.data = s;
    ev_timer_init(&s->sweep_w, sweep_cb, 1., (double)s->cfg.sweep_interval_ms / 1000.0);
    s->sweep_w.data = s;
    ev_timer_start(s->svc.loop, &s->sweep_w);
    s->deadlines_dirty = s->dispatch_dirty = 1;
    s->started = 1;
    return 0;
}

static void free_value(const char *key, void *value, void *user)
{
    (void)key;
    (void)user;
    free(value);
}

void in_svc_stop(struct in_svc *s)
{
    if (!s->actions_tail)
        return;
    if (s->started) {
        s->stopping = 1;
        in_svc_flush(s);
        in_watch_end_all(s, AL_GRPC_UNAVAILABLE, IN_REASON(DRAINING), "intake is stopping");
        in_lease_streams_end(s, AL_GRPC_UNAVAILABLE, "intake is stopping");
        in_svc_flush(s);
        ev_prepare_stop(s->svc.loop, &s->prepare_w);
        ev_timer_stop(s->svc.loop, &s->wake_w);
        ev_timer_stop(s->svc.loop, &s->sweep_w);
    }
    if (s->principals)
        in_map_each(s->principals, free_value, NULL);
    if (s->executors)
        in_map_each(s->executors, free_value, NULL);
    in_map_free(s->principals);
    in_map_free(s->executors);
    in_map_free(s->watch_by_job);
    s->principals = s->executors = s->watch_by_job = NULL;
    free(s->pool_stats);
    s->pool_stats = NULL;
    al_arena_cleanup(&s->txa);
}
