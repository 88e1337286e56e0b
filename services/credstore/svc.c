/*
 * svc: shared credstore machinery: error replies, the group commit of audit
 * records and the waiters it releases; see svc.h.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

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
                                : cs_secure_alloc(CS_VALUE_SMALL);
    return cs->n_pool_large ? cs->pool_large[--cs->n_pool_large] : cs_secure_alloc(CS_VALUE_MAX);
}

void cs_svc_value_put(struct cs_svc *cs, uint8_t *buf, size_t cap, size_t used)
{
    int small = cap <= CS_VALUE_SMALL;
    size_t size = small ? CS_VALUE_SMALL : CS_VALUE_MAX;
    size_t *n = small ? &cs->n_pool_small : &cs->n_pool_large;

    if (!buf)
        return;
    if (*n >= (small ? CS_VALUE_POOL_SMALL : CS_VALUE_POOL_LARGE)) {
        cs_secure_free(buf); /* wipes the whole mapping */
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

void cs_svc_commit(struct cs_svc *cs)
{
    struct cs_waiter *w = cs->waiting;
    int64_t first = 0, head = 0;
    uint8_t hash[CS_HASH_LEN];
    size_t n = 0;

    if (!w && cs_audit_pending(cs->audit) == 0)
        return;
    cs->waiting = NULL;
    cs->waiting_tail = &cs->waiting;
    int rc = cs_audit_commit(cs->audit, &first);
    /* committed records with only the head file stale are still durable */
    int durable =
        rc == 0 || (rc < 0 && rc > -4096 && first > 0 && cs_audit_pending(cs->audit) == 0 &&
                    cs_audit_head(cs->audit, &head, hash) == 0 && head >= first);
    if (rc < 0) {
        al_metric_add(cs->m_commit_fail, 1);
        AL_LOG_ERROR("credstore.audit", "result=commit_failed reason=\"%s\" durable=%d",
                     al_strerror(rc), durable);
    }
    /* fail closed: without a durable record nothing is released */
    for (; w; n++) {
        /* w lives in its call's arena: answering may free it */
        struct cs_waiter *next = w->next;
        uint8_t *secret = w->secret;
        size_t secret_cap = w->secret_cap, secret_len = w->secret_len;
        w->secret = NULL;
        if (rc == 0) {
            answer(w, first);
        } else {
            cs_finish_error(w->call, AL_GRPC_UNAVAILABLE,
                            AIRLOCK__V1__ERROR_REASON__ERROR_REASON_AUDIT_UNAVAILABLE, NULL,
                            "the audit log could not be written; request denied");
        }
        cs_svc_value_put(cs, secret, secret_cap, secret_len); /* the reply was packed above */
        w = next;
    }
    al_metric_observe(cs->m_commit_batch, (double)n);
    if (cs_audit_head(cs->audit, &head, hash) == 0)
        al_metric_set(cs->m_audit_seq, (double)head);
}

static void commit_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    cs_svc_commit(w->data);
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
    int64_t head = 0;
    uint8_t hash[CS_HASH_LEN];
    if (cs_audit_head(cs->audit, &head, hash) == 0)
        al_metric_set(cs->m_audit_seq, (double)head);
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
        cs_svc_commit(cs);
        ev_prepare_stop(cs->svc.loop, &cs->commit_w);
        ev_timer_stop(cs->svc.loop, &cs->sweep_w);
    }
    /* after the last commit, which returns buffers */
    while (cs->n_pool_small > 0) {
        cs_secure_free(cs->pool_small[--cs->n_pool_small]);
        cs->pool_small[cs->n_pool_small] = NULL;
    }
    while (cs->n_pool_large > 0) {
        cs_secure_free(cs->pool_large[--cs->n_pool_large]);
        cs->pool_large[cs->n_pool_large] = NULL;
    }
}
