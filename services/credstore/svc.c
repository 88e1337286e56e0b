/*
 * svc: shared credstore machinery: error replies, the group commit of audit
 * records and the waiters it releases; see svc.h.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "al_err.h"
#include "al_log.h"
#include "al_metrics.h"
#include "al_pki.h"
#include "crypto.h"
#include "svc.h"

int64_t cs_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cs_role_of(const char *spiffe_id, char *buf, size_t n)
{
    if (!spiffe_id || al_pki_parse_spiffe(spiffe_id, buf, n, NULL, 0) < 0)
        buf[0] = '\0';
}

void cs_finish_error(struct al_grpc_call *call, int status, Airlock__V1__ErrorReason reason,
                     const char *field, const char *message)
{
    Airlock__V1__ErrorDetail d = AIRLOCK__V1__ERROR_DETAIL__INIT;
    uint8_t buf[512];

    d.reason = reason;
    d.field = (char *)(field ? field : "");
    d.message = (char *)(message ? message : "");
    if (airlock__v1__error_detail__get_packed_size(&d) <= sizeof(buf)) {
        size_t len = airlock__v1__error_detail__pack(&d, buf);
        al_grpc_call_add_trailer(call, "airlock-error-bin", buf, len);
    }
    al_grpc_call_finish(call, status, message);
}

uint8_t *cs_svc_value_get(struct cs_svc *cs, size_t cap)
{
    if (cap <= CS_VALUE_SMALL)
        return cs->n_pool_small ? cs->pool_small[--cs->n_pool_small]
                                : al_secure_alloc(CS_VALUE_SMALL);
    return cs->n_pool_large ? cs->pool_large[--cs->n_pool_large] : al_secure_alloc(CS_VALUE_MAX);
}

void cs_svc_value_put(struct cs_svc *cs, uint8_t *buf, size_t cap, size_t used)
{
    int small = cap <= CS_VALUE_SMALL;
    size_t size = small ? CS_VALUE_SMALL : CS_VALUE_MAX;
    size_t *n = small ? &cs->n_pool_small : &cs->n_pool_large;

    if (!buf)
        return;
    if (*n >= (small ? CS_VALUE_POOL_SMALL : CS_VALUE_POOL_LARGE)) {
        al_secure_free(buf); /* wipes the whole mapping */
        return;
    }
    cs_cleanse(buf, used < size ? used : size);
    (small ? cs->pool_small : cs->pool_large)[(*n)++] = buf;
}

static void wipe(struct cs_svc *cs, struct cs_waiter *w)
{
    cs_svc_value_put(cs, w->secret, w->secret_cap, w->secret_len);
    w->secret = NULL;
}

int cs_svc_await_audit(struct cs_svc *cs, struct cs_waiter *w, const Airlock__V1__AuditRecord *rec)
{
    cs_svc_poll(cs);
    int rc = cs_audit_append(cs->audit, rec, &w->audit_index);
    if (rc < 0) {
        AL_LOG_ERROR("credstore.audit", "result=append_failed reason=\"%s\"", al_strerror(rc));
        wipe(cs, w);
        cs_finish_error(w->call, AL_GRPC_UNAVAILABLE,
                        AIRLOCK__V1__ERROR_REASON__ERROR_REASON_AUDIT_UNAVAILABLE, NULL,
                        "the audit log cannot record this request; denied");
        return rc;
    }
    w->next = NULL;
    *cs->waiting_tail = w;
    cs->waiting_tail = &w->next;
    return 0;
}

static void answer(struct cs_waiter *w, int64_t first_seq)
{
    if (w->status != AL_GRPC_OK) {
        cs_finish_error(w->call, w->status, w->reason, NULL, w->message);
        return;
    }
    if (w->audit_seq_out)
        *w->audit_seq_out = first_seq + (int64_t)w->audit_index;
    if (w->audit_last_out)
        *w->audit_last_out = first_seq + (int64_t)(w->audit_index + w->audit_count) - 1;
    al_grpc_call_reply(w->call, w->reply);
}

/* ---- the commit thread ---- */

enum { CS_COMMIT_IDLE, CS_COMMIT_QUEUED, CS_COMMIT_DONE };

/*
 * Asks the scheduler for a short time slice for the calling thread
 * (sched_setattr, SCHED_OTHER with sched_runtime: the EEVDF slice, Linux
 * 6.12 and later; older kernels ignore it). The commit thread runs in short
 * bursts between fsyncs while the event loop runs long stretches of grant
 * checks; when both share a core, a short slice lets the commit thread in as
 * soon as its fsync returns instead of after the loop's slice, so answers
 * that are durable leave sooner. A hint only: no privilege is needed and
 * nothing depends on it.
 */
static void short_slice(void)
{
    struct {
        uint32_t size, policy;
        uint64_t flags;
        int32_t nice;
        uint32_t priority;
        uint64_t runtime, deadline, period;
        uint32_t util_min, util_max;
    } at;

    memset(&at, 0, sizeof(at));
    at.size = sizeof(at);
    at.policy = SCHED_OTHER;
    at.runtime = 100 * 1000; /* ns */
    if (syscall(SYS_sched_setattr, 0, &at, 0) != 0)
        AL_LOG_DEBUG("credstore.commit_thread", "note=\"no short time slice\" errno=%d", errno);
}

/* Commits one batch after another as the loop hands them over; only the
 * batch, the result fields and cs->wstore are touched here. */
static void *commit_main(void *arg)
{
    struct cs_svc *cs = arg;
    struct cs_commit *k = &cs->commit;
    struct cs_audit *wa = cs_store_audit(cs->wstore);

    short_slice();

    pthread_mutex_lock(&k->mu);
    for (;;) {
        while (k->state != CS_COMMIT_QUEUED && !k->stop)
            pthread_cond_wait(&k->work_cv, &k->mu);
        if (k->state != CS_COMMIT_QUEUED)
            break;
        pthread_mutex_unlock(&k->mu);
        int64_t first = 0, head = 0;
        int rc = cs_audit_commit_batch(wa, &k->batch, &first);
        const char *problem = cs_audit_problem(wa);
        (void)cs_audit_head(wa, &head, NULL);
        pthread_mutex_lock(&k->mu);
        k->rc = rc;
        k->first_seq = first;
        k->head_seq = head;
        snprintf(k->problem, sizeof(k->problem), "%s", problem ? problem : "");
        k->state = CS_COMMIT_DONE;
        atomic_store(&k->done, 1);
        pthread_cond_broadcast(&k->done_cv);
        ev_async_send(cs->svc.loop, &k->done_w);
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

/* Loop thread: hands the queue and its waiters to the commit thread if it is
 * free and there is something to write. */
static void commit_kick(struct cs_svc *cs)
{
    struct cs_commit *k = &cs->commit;

    if (!cs->waiting && cs_audit_pending(cs->audit) == 0)
        return;
    pthread_mutex_lock(&k->mu);
    if (k->state == CS_COMMIT_IDLE) {
        k->n_records = cs_audit_take(cs->audit, &k->batch);
        k->waiters = cs->waiting;
        cs->waiting = NULL;
        cs->waiting_tail = &cs->waiting;
        k->state = CS_COMMIT_QUEUED;
        pthread_cond_signal(&k->work_cv);
    }
    pthread_mutex_unlock(&k->mu);
}

static void publish_head(struct cs_svc *cs, int64_t other)
{
    int64_t head = 0;

    if (cs_audit_head(cs->audit, &head, NULL) == 0 && other > head)
        head = other;
    al_metric_set(cs->m_audit_seq, (double)head);
}

/* Loop thread: answers the waiters of a finished batch (fail closed). */
static void commit_done(struct cs_svc *cs)
{
    struct cs_commit *k = &cs->commit;
    struct cs_waiter *w;
    int64_t first, head;
    int rc;

    pthread_mutex_lock(&k->mu);
    if (k->state != CS_COMMIT_DONE) {
        pthread_mutex_unlock(&k->mu);
        return;
    }
    rc = k->rc;
    first = k->first_seq;
    head = k->head_seq;
    if (k->problem[0])
        cs_audit_set_problem(cs->audit, k->problem);
    k->state = CS_COMMIT_IDLE;
    atomic_store(&k->done, 0);
    pthread_mutex_unlock(&k->mu);
    w = k->waiters;
    k->waiters = NULL;
    if (rc < 0) {
        /* records committed with only the head file stale still count as
         * failed: the head file is what makes them rollback-proof */
        al_metric_add(cs->m_commit_fail, 1);
        AL_LOG_ERROR("credstore.audit", "result=commit_failed reason=\"%s\" committed=%d",
                     al_strerror(rc), first > 0);
    }
    /* fail closed: without a durable record nothing is released */
    while (w) {
        /* w lives in its call's arena: answering may free it */
        struct cs_waiter *next = w->next;
        uint8_t *secret = w->secret;
        size_t secret_cap = w->secret_cap, secret_len = w->secret_len;
        w->secret = NULL;
        if (rc == 0)
            answer(w, first);
        else
            cs_finish_error(w->call, AL_GRPC_UNAVAILABLE,
                            AIRLOCK__V1__ERROR_REASON__ERROR_REASON_AUDIT_UNAVAILABLE, NULL,
                            "the audit log could not be written; request denied");
        cs_svc_value_put(cs, secret, secret_cap, secret_len); /* the reply was packed above */
        w = next;
    }
    al_metric_observe(cs->m_commit_batch, (double)k->n_records);
    publish_head(cs, head);
    /* out now, not after whatever else this loop turn still runs */
    if (cs->svc.grpc)
        al_grpc_server_flush(cs->svc.grpc);
}

/* Commit thread, right after an audit COMMIT (cs_store_on_audit_step). */
static void step_publish(void *arg, const struct cs_store_audit_step *step)
{
    struct cs_commit *k = arg;

    pthread_mutex_lock(&k->step_mu);
    k->step = *step;
    atomic_fetch_add(&k->step_seq, 1);
    pthread_mutex_unlock(&k->step_mu);
}

void cs_svc_follow_commits(struct cs_svc *cs)
{
    struct cs_commit *k = &cs->commit;
    struct cs_store_audit_step step;
    unsigned seq;

    if (!k->running || atomic_load(&k->step_seq) == k->followed_seq)
        return;
    pthread_mutex_lock(&k->step_mu);
    step = k->step;
    seq = atomic_load(&k->step_seq);
    pthread_mutex_unlock(&k->step_mu);
    k->followed_seq = seq;
    cs_store_audit_follow(cs->store, &step);
}

void cs_svc_poll(struct cs_svc *cs)
{
    if (cs->commit.running && atomic_load_explicit(&cs->commit.done, memory_order_relaxed))
        commit_done(cs);
}

/* Loop thread: blocks until the batch in flight (if any) is written. */
static void commit_wait(struct cs_svc *cs)
{
    struct cs_commit *k = &cs->commit;

    pthread_mutex_lock(&k->mu);
    while (k->state == CS_COMMIT_QUEUED)
        pthread_cond_wait(&k->done_cv, &k->mu);
    pthread_mutex_unlock(&k->mu);
}

void cs_svc_commit(struct cs_svc *cs)
{
    if (!cs->commit.running)
        return;
    commit_wait(cs);
    commit_done(cs);
    if (!cs->waiting && cs_audit_pending(cs->audit) == 0)
        return;
    commit_kick(cs);
    commit_wait(cs);
    commit_done(cs);
}

static void commit_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    commit_kick(w->data);
}

static void commit_done_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    commit_done(w->data);
}

/* Opens the commit thread's own connection and starts the thread. */
static int commit_start(struct cs_svc *cs)
{
    struct cs_commit *k = &cs->commit;
    struct cs_store_opts so = {.data_dir = cs->cfg.data_dir,
                               .keys = {.primary = cs->master,
                                        .previous = (const struct cs_master *const *)cs->previous,
                                        .n_previous = cs->n_previous},
                               .no_create = 1};
    int rc = cs_store_open(&so, &cs->wstore);

    if (rc < 0) {
        AL_LOG_ERROR("credstore.start", "problem=\"cannot open the commit connection: %s\"",
                     al_strerror(rc));
        return rc;
    }
    if (cs_audit_problem(cs_store_audit(cs->wstore)))
        cs_audit_set_problem(cs->audit, cs_audit_problem(cs_store_audit(cs->wstore)));
    cs_audit_batch_init(&k->batch);
    k->state = CS_COMMIT_IDLE;
    k->stop = 0;
    pthread_mutex_init(&k->mu, NULL); /* default attributes: cannot fail on Linux */
    pthread_mutex_init(&k->step_mu, NULL);
    atomic_store(&k->step_seq, 0);
    k->followed_seq = 0;
    cs_store_on_audit_step(cs->wstore, step_publish, k);
    pthread_cond_init(&k->work_cv, NULL);
    pthread_cond_init(&k->done_cv, NULL);
    ev_async_init(&k->done_w, commit_done_cb);
    k->done_w.data = cs;
    ev_async_start(cs->svc.loop, &k->done_w);
    rc = pthread_create(&k->thread, NULL, commit_main, cs);
    if (rc != 0) {
        AL_LOG_ERROR("credstore.start", "problem=\"cannot start the commit thread\" errno=%d", rc);
        ev_async_stop(cs->svc.loop, &k->done_w);
        return -rc;
    }
    k->running = 1;
    return 0;
}

static void commit_stop(struct cs_svc *cs)
{
    struct cs_commit *k = &cs->commit;

    if (k->running) {
        cs_svc_commit(cs);
        pthread_mutex_lock(&k->mu);
        k->stop = 1;
        pthread_cond_signal(&k->work_cv);
        pthread_mutex_unlock(&k->mu);
        pthread_join(k->thread, NULL);
        k->running = 0;
        ev_async_stop(cs->svc.loop, &k->done_w);
        cs_audit_batch_cleanup(&k->batch);
        pthread_mutex_destroy(&k->step_mu);
        pthread_cond_destroy(&k->done_cv);
        pthread_cond_destroy(&k->work_cv);
        pthread_mutex_destroy(&k->mu);
    }
    cs_store_close(cs->wstore);
    cs->wstore = NULL;
}

static void sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct cs_svc *cs = w->data;
    int destroyed = 0;
    (void)loop;
    (void)revents;
    int rc = cs_store_sweep(cs->store, cs_now_ms(), cs->self_id, &destroyed);
    if (rc < 0)
        AL_LOG_WARN("credstore.sweep", "reason=\"%s\"", al_strerror(rc));
    else if (destroyed)
        AL_LOG_INFO("credstore.sweep", "destroyed_versions=%d", destroyed);
}

int cs_svc_start(struct cs_svc *cs)
{
    static const double commit_buckets[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
    struct al_metrics *m = cs->svc.metrics;
    int rc;

    cs->waiting = NULL;
    cs->waiting_tail = &cs->waiting;
    cs->m_resolve_allow = al_metrics_counter(m, "airlock_credstore_resolves_total",
                                             "Resolve calls by decision", "decision=\"allow\"");
    cs->m_resolve_deny = al_metrics_counter(m, "airlock_credstore_resolves_total",
                                            "Resolve calls by decision", "decision=\"deny\"");
    static const char reads_help[] = "Resolve reads of a credential's rows: from the "
                                     "verified-row cache, or loaded and MAC-checked";
    cs->m_read_cached =
        al_metrics_counter(m, "airlock_credstore_reads_total", reads_help, "rows=\"cached\"");
    cs->m_read_loaded =
        al_metrics_counter(m, "airlock_credstore_reads_total", reads_help, "rows=\"loaded\"");
    cs->m_audit_seq = al_metrics_gauge(m, "airlock_credstore_audit_head_seq",
                                       "Sequence number of the audit chain head", NULL);
    cs->m_commit_fail =
        al_metrics_counter(m, "airlock_credstore_audit_commit_failures_total",
                           "Audit group commits that failed (requests denied)", NULL);
    cs->m_commit_batch =
        al_metrics_histogram(m, "airlock_credstore_audit_commit_records",
                             "Records per audit group commit", NULL, commit_buckets, 10);
    cs->m_admin_denied = al_metrics_counter(m, "airlock_credstore_admin_denied_total",
                                            "Admin calls refused for the caller's identity", NULL);
    publish_head(cs, 0);
    rc = commit_start(cs);
    if (rc == 0)
        rc = cs_admin_register(cs);
    if (rc == 0)
        rc = cs_resolver_register(cs);
    if (rc < 0)
        return rc;
    ev_prepare_init(&cs->commit_w, commit_cb);
    cs->commit_w.data = cs;
    ev_prepare_start(cs->svc.loop, &cs->commit_w);
    ev_timer_init(&cs->sweep_w, sweep_cb, 1., 30.);
    cs->sweep_w.data = cs;
    ev_timer_start(cs->svc.loop, &cs->sweep_w);
    return 0;
}

void cs_svc_stop(struct cs_svc *cs)
{
    if (cs->audit && cs->svc.loop && cs->waiting_tail) {
        commit_stop(cs);
        ev_prepare_stop(cs->svc.loop, &cs->commit_w);
        ev_timer_stop(cs->svc.loop, &cs->sweep_w);
    }
    /* after the last commit, which returns buffers */
    while (cs->n_pool_small > 0) {
        al_secure_free(cs->pool_small[--cs->n_pool_small]);
        cs->pool_small[cs->n_pool_small] = NULL;
    }
    while (cs->n_pool_large > 0) {
        al_secure_free(cs->pool_large[--cs->n_pool_large]);
        cs->pool_large[cs->n_pool_large] = NULL;
    }
}
