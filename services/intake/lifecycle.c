/*
 * lifecycle: applying state machine outcomes (sm.h) to a stored job: the
 * event log, counters, executor slots, results and requeues. Callers hold a
 * request savepoint (in_tx_begin/in_tx_end) around each use.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "al_log.h"
#include "al_metrics.h"
#include "insvc.h"

int in_job_event(struct in_svc *s, struct in_job *j, Airlock__V1__JobEvent *ev, int64_t now_ms)
{
    uint8_t small[1024], *buf = small;
    size_t len;
    int rc;

    ev->seq = j->last_seq + 1;
    if (ev->time_ms <= 0)
        ev->time_ms = now_ms;
    len = airlock__v1__job_event__get_packed_size(ev);
    if (len > sizeof(small) && !(buf = malloc(len)))
        return AL_ERR_NOMEM;
    airlock__v1__job_event__pack(ev, buf);
    rc = in_store_event_put(s->store, j->id, ev->seq, buf, len);
    if (buf != small)
        free(buf);
    if (rc < 0)
        return rc;
    j->last_seq = ev->seq;
    j->updated_ms = now_ms;
    in_watch_touch(s, j->id);
    return 0;
}

int in_job_transition(struct in_svc *s, struct in_job *j, int to, const char *message,
                      int64_t now_ms)
{
    Airlock__V1__JobEvent ev = AIRLOCK__V1__JOB_EVENT__INIT;
    Airlock__V1__StateChange sc = AIRLOCK__V1__STATE_CHANGE__INIT;
    int rc;

    if (!in_sm_allowed(j->state, to)) {
        AL_LOG_ERROR("intake.transition", "job=%s from=%s to=%s problem=\"not allowed\"", j->id,
                     in_sm_state_name(j->state), in_sm_state_name(to));
        return AL_ERR_STATE;
    }
    sc.state = to;
    sc.previous_state = j->state;
    sc.message = (char *)(message ? message : "");
    ev.attempt = j->attempt;
    ev.event_case = AIRLOCK__V1__JOB_EVENT__EVENT_STATE;
    ev.state = &sc;
    rc = in_job_event(s, j, &ev, now_ms);
    if (rc < 0)
        return rc;
    in_count(s, j->principal, j->pool, j->state, to);
    j->state = to;
    j->updated_ms = now_ms;
    if (in_sm_terminal(to)) {
        j->finished_ms = now_ms;
        al_metric_add(s->m_finished, 1);
    }
    if (to == IN_JS(QUEUED) || to == IN_JS(LEASED))
        in_deadlines_dirty(s);
    if (to == IN_JS(QUEUED))
        in_dispatch_dirty(s);
    return 0;
}

/* The job no longer holds a lease: free the executor's slot. */
static void drop_lease(struct in_svc *s, struct in_job *j)
{
    if (j->state == IN_JS(LEASED) || j->state == IN_JS(RUNNING))
        in_exec_release(s, j->executor_id, j->instance_id);
    j->has_token = 0;
    memset(j->token, 0, sizeof(j->token));
    j->lease_expires_ms = 0;
    j->grant_expires_ms = 0;
}

int in_job_end(struct in_svc *s, struct in_job *j, int state, Airlock__V1__JobResult *r,
               int failure_reason, const char *message, int64_t now_ms, struct al_arena *a)
{
    Airlock__V1__JobResult own = AIRLOCK__V1__JOB_RESULT__INIT;
    Airlock__V1__JobEvent ev = AIRLOCK__V1__JOB_EVENT__INIT;
    uint8_t *buf;
    size_t len;
    int rc;

    if (!in_sm_allowed(j->state, state) || !in_sm_terminal(state))
        return AL_ERR_STATE;
    if (!r) {
        r = &own;
        r->failure_reason = failure_reason;
        r->failure_message = (char *)(message ? message : "");
    }
    if (state == IN_JS(CANCELLED) && r->failure_reason == IN_FR(UNSPECIFIED))
        r->failure_reason = IN_FR(CANCELLED);
    if (j->workspace_reset && j->session_id[0] && j->attempt > 0)
        r->workspace_reset = 1;
    ev.attempt = j->attempt;
    ev.event_case = AIRLOCK__V1__JOB_EVENT__EVENT_RESULT;
    ev.result = r;
    if ((rc = in_job_event(s, j, &ev, now_ms)) < 0)
        return rc;
    len = airlock__v1__job_result__get_packed_size(r);
    buf = al_arena_alloc(a, len ? len : 1);
    if (!buf)
        return AL_ERR_NOMEM;
    airlock__v1__job_result__pack(r, buf);
    drop_lease(s, j);
    if ((rc = in_job_transition(s, j, state, message, now_ms)) < 0)
        return rc;
    j->result = buf;
    j->result_len = len;
    return in_store_job_update(s->store, j);
}

int in_job_requeue(struct in_svc *s, struct in_job *j, int spent, int64_t not_before_ms,
                   const char *message, int64_t now_ms)
{
    int rc;
    drop_lease(s, j);
    if ((rc = in_job_transition(s, j, IN_JS(QUEUED), message, now_ms)) < 0)
        return rc;
    j->spent = spent;
    j->not_before_ms = not_before_ms;
    j->queue_deadline_ms = not_before_ms + j->queue_timeout_ms;
    j->push_seq = 0;
    j->ran = 0;
    j->started_ms = 0;
    j->result = NULL;
    return in_store_job_update(s->store, j);
}

int in_job_lease_expired(struct in_svc *s, struct in_job *j, int64_t now_ms, struct al_arena *a)
{
    struct in_sm_attempts at = {j->attempt, j->spent, j->max_attempts, j->cancel_requested, j->ran};
    struct in_sm_outcome o;

    in_sm_lease_lost(&at, now_ms, s->cfg.backoff_base_ms, s->cfg.backoff_max_ms, &o);
    al_metric_add(s->m_expiries, 1);
    AL_LOG_INFO("intake.lease_expired", "job=%s attempt=%d executor=%s next=%s", j->id, j->attempt,
                j->executor_id, in_sm_state_name(o.state));
    if (o.state == IN_JS(QUEUED))
        return in_job_requeue(s, j, o.spent, o.not_before_ms, o.message, now_ms);
    return in_job_end(s, j, o.state, NULL, o.failure_reason,
                      o.state == IN_JS(CANCELLED) && j->cancel_reason[0] ? j->cancel_reason
                                                                         : o.message,
                      now_ms, a);
}

int in_job_queue_timeout(struct in_svc *s, struct in_job *j, int64_t now_ms, struct al_arena *a)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "waited in the queue longer than its queue timeout (%lld ms)",
             (long long)j->queue_timeout_ms);
    AL_LOG_INFO("intake.queue_timeout", "job=%s", j->id);
    return in_job_end(s, j, IN_JS(TIMED_OUT), NULL, IN_FR(QUEUE_TIMEOUT), msg, now_ms, a);
}

int in_idem_check(struct in_store *st, const char *principal, const char *key,
                  const uint8_t hash[32], char *job_id)
{
    uint8_t stored[32];
    struct in_job j;
    int rc = in_store_idem_get(st, principal, key, job_id, stored);

    if (rc == AL_ERR_NOTFOUND)
        return IN_IDEM_NEW;
    if (rc == 0)
        rc = in_store_job_get(st, job_id, NULL, &j);
    if (rc == AL_ERR_NOTFOUND) {
        /* the job was purged by retention: the key is free again */
        rc = in_store_idem_del(st, principal, key);
        return rc < 0 ? rc : IN_IDEM_NEW;
    }
    if (rc < 0)
        return rc;
    return in_ct_equal(stored, hash, 32) ? IN_IDEM_SAME : IN_IDEM_CONFLICT;
}
