/*
 * al_edge: Resolve calls and AppendAudit delivery for an edge; see al_edge.h.
 *
 * The pump: whenever something may have changed (a record queued, a batch
 * answered, the timer fired) it sends the batch al_edge_audit_next() says is
 * due, if none is in flight, updates the gauges and re-arms the one timer
 * for the next due time. A flush in progress ends in the pump once nothing
 * is left.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "airlock/v1/common.pb-c.h"
#include "al_edge.h"
#include "al_err.h"
#include "al_grpc.h"
#include "al_grpc_client.h"
#include "al_log.h"
#include "al_metrics.h"

#define REASON(x) AIRLOCK__V1__ERROR_REASON__ERROR_REASON_##x
#define EV_MAX    64

struct al_edge {
    struct ev_loop *loop;
    struct al_edge_opts o;
    struct al_grpc_channel *ch;
    struct al_edge_audit *audit;
    struct al_grpc_ccall *append; /* the batch in flight */
    ev_timer audit_w;
    int failing; /* a failure was logged since the last delivery */
    void (*flush_done)(void *user);
    void *flush_user;
    ev_timer flush_w;
    char ev_failed[EV_MAX], ev_delivered[EV_MAX], ev_refused[EV_MAX], ev_lost[EV_MAX];
};

struct al_edge_call {
    struct al_edge *e;
    struct al_grpc_ccall *cc;
    const struct al_edge_resolve_cbs *cbs;
    void *user;
};

static double now_s(const struct al_edge *e)
{
    return ev_now(e->loop);
}

int al_edge_error_reason(struct al_grpc_ccall *cc)
{
    size_t len = 0;
    const char *bin = al_grpc_ccall_metadata(cc, "airlock-error-bin", &len);
    Airlock__V1__ErrorDetail *d;
    int reason = 0;

    if (!bin || !len)
        return 0;
    d = airlock__v1__error_detail__unpack(NULL, len, (const uint8_t *)bin);
    if (d) {
        reason = d->reason;
        airlock__v1__error_detail__free_unpacked(d, NULL);
    }
    return reason;
}

/* ---------- Resolve ---------- */

static void resolve_msg(struct al_grpc_ccall *cc, const ProtobufCMessage *m, void *user)
{
    struct al_edge_call *c = user;
    (void)cc;
    if (c->cbs->on_answer)
        c->cbs->on_answer(c->user, (const Airlock__V1__ResolveResponse *)m);
}

static void resolve_done(struct al_grpc_ccall *cc, int status, const char *message, void *user)
{
    struct al_edge_call *c = user;
    int reason = status == AL_GRPC_OK ? 0 : al_edge_error_reason(cc);

    c->cbs->on_done(c->user, status, reason, message ? message : "");
    free(c);
}

int al_edge_resolve(struct al_edge *e, const Airlock__V1__SignedGrant *g, const char *credential,
                    const char *destination, const struct al_edge_resolve_cbs *cbs, void *user,
                    struct al_edge_call **out)
{
    static const struct al_grpc_ccall_cbs ccbs = {resolve_msg, resolve_done};
    Airlock__V1__ResolveRequest rq = AIRLOCK__V1__RESOLVE_REQUEST__INIT;
    struct al_edge_call *c;
    int rc;

    *out = NULL;
    if (!g || !credential || !destination || !cbs || !cbs->on_done)
        return AL_ERR_INVAL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return AL_ERR_NOMEM;
    c->e = e;
    c->cbs = cbs;
    c->user = user;
    rq.grant = (Airlock__V1__SignedGrant *)g;
    rq.credential = (char *)credential;
    rq.destination = (char *)destination;
    rc = al_grpc_channel_call(e->ch, "/airlock.v1.CredentialResolver/Resolve", &rq.base,
                              &airlock__v1__resolve_response__descriptor, NULL, 0, e->o.timeout_s,
                              &ccbs, c, &c->cc);
    if (rc < 0) {
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void al_edge_cancel(struct al_edge_call *c)
{
    if (!c)
        return;
    al_grpc_ccall_cancel(c->cc);
    free(c);
}

/* ---------- audit ---------- */

static void pump(struct al_edge *e);

static void gauges(struct al_edge *e)
{
    const struct al_edge_audit *a = e->audit;

    al_metric_set(e->o.metrics.queue,
                  (double)(al_edge_audit_queued(a) + al_edge_audit_reserved(a)));
    al_metric_set(e->o.metrics.undelivered, al_edge_audit_bypass(a, now_s(e)) ? 1 : 0);
    al_metric_set(e->o.metrics.refused, (double)al_edge_audit_dropped(a));
}

static enum al_edge_outcome outcome_of(struct al_grpc_ccall *cc, int status)
{
    int reason;

    switch (status) {
    case AL_GRPC_OK:
        return AL_EDGE_OK;
    case AL_GRPC_INVALID_ARGUMENT:
    case AL_GRPC_PERMISSION_DENIED:
    case AL_GRPC_FAILED_PRECONDITION:
    case AL_GRPC_NOT_FOUND:
    case AL_GRPC_OUT_OF_RANGE:
    case AL_GRPC_UNIMPLEMENTED:
        return AL_EDGE_REFUSED;
    case AL_GRPC_RESOURCE_EXHAUSTED:
        reason = al_edge_error_reason(cc);
        return reason == REASON(RATE_LIMITED) || reason == REASON(QUEUE_FULL) ? AL_EDGE_RETRY
                                                                              : AL_EDGE_REFUSED;
    default:
        return AL_EDGE_RETRY;
    }
}

static void append_done(struct al_grpc_ccall *cc, int status, const char *message, void *user)
{
    struct al_edge *e = user;
    enum al_edge_outcome o = outcome_of(cc, status);
    unsigned long dropped = al_edge_audit_dropped(e->audit);
    char q[200];

    e->append = NULL;
    al_edge_audit_done(e->audit, o, now_s(e));
    if (o == AL_EDGE_OK) {
        al_metric_add(e->o.metrics.batches, 1);
        if (e->failing)
            AL_LOG_INFO(e->ev_delivered, "queued=%zu", al_edge_audit_queued(e->audit));
        e->failing = 0;
    } else {
        al_metric_add(e->o.metrics.batch_fail, 1);
        e->failing = 1;
        AL_LOG_WARN(e->ev_failed, "status=%s action=%s queued=%zu msg=%s",
                    al_grpc_status_name(status), o == AL_EDGE_RETRY ? "retry" : "split",
                    al_edge_audit_queued(e->audit),
                    al_log_quote(q, sizeof(q), message, strlen(message)));
        if (al_edge_audit_dropped(e->audit) > dropped)
            AL_LOG_ERROR(e->ev_refused,
                         "reason=\"credstore refused a single use record; it is dropped "
                         "(credstore recorded the refusal)\" dropped_total=%lu",
                         al_edge_audit_dropped(e->audit));
    }
    pump(e);
}

static void audit_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    pump(w->data);
}

static void flush_end(struct al_edge *e)
{
    void (*done)(void *) = e->flush_done;

    e->flush_done = NULL;
    ev_timer_stop(e->loop, &e->flush_w);
    if (done)
        done(e->flush_user);
}

static void pump(struct al_edge *e)
{
    static const struct al_grpc_ccall_cbs cbs = {NULL, append_done};
    const Airlock__V1__AppendAuditRequest *rq;
    double wake;
    int rc;

    while (!e->append && (rq = al_edge_audit_next(e->audit, now_s(e)))) {
        rc = al_grpc_channel_call(e->ch, "/airlock.v1.CredentialResolver/AppendAudit", &rq->base,
                                  &airlock__v1__append_audit_response__descriptor, NULL, 0,
                                  e->o.timeout_s, &cbs, e, &e->append);
        if (rc < 0) {
            e->append = NULL;
            al_edge_audit_done(e->audit, rc == AL_ERR_TOOBIG ? AL_EDGE_REFUSED : AL_EDGE_RETRY,
                               now_s(e));
        }
    }
    gauges(e);
    ev_timer_stop(e->loop, &e->audit_w);
    wake = al_edge_audit_wake(e->audit, now_s(e));
    if (!e->append && wake >= 0) {
        double d = wake - now_s(e);
        ev_timer_set(&e->audit_w, d > 0.001 ? d : 0.001, 0.);
        ev_timer_start(e->loop, &e->audit_w);
    }
    if (e->flush_done && al_edge_audit_queued(e->audit) == 0 &&
        al_edge_audit_reserved(e->audit) == 0)
        flush_end(e);
}

int al_edge_reserve(struct al_edge *e)
{
    int rc = al_edge_audit_reserve(e->audit);

    if (rc < 0)
        al_metric_add(e->o.metrics.full, 1);
    gauges(e);
    return rc;
}

void al_edge_release(struct al_edge *e)
{
    al_edge_audit_release(e->audit);
    gauges(e);
    if (e->flush_done && !e->append)
        pump(e);
}

void al_edge_record(struct al_edge *e, struct al_edge_grant *g, const struct al_edge_use *u)
{
    if (al_edge_audit_add(e->audit, g, u, now_s(e)) < 0)
        AL_LOG_ERROR(e->ev_lost,
                     "request=%s reason=\"out of memory: a use record could not be "
                     "queued\"",
                     u->request_id ? u->request_id : "-");
    if (!e->append && !ev_is_active(&e->audit_w))
        pump(e);
    else
        gauges(e);
}

int al_edge_bypass(const struct al_edge *e)
{
    return al_edge_audit_bypass(e->audit, now_s(e));
}

static void flush_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    flush_end(w->data);
}

void al_edge_flush(struct al_edge *e, double timeout_s, void (*done)(void *user), void *user)
{
    e->flush_done = done;
    e->flush_user = user;
    al_edge_audit_flush_all(e->audit);
    ev_timer_stop(e->loop, &e->flush_w);
    ev_timer_set(&e->flush_w, timeout_s > 0 ? timeout_s : 0.001, 0.);
    ev_timer_start(e->loop, &e->flush_w);
    pump(e);
}

const struct al_edge_audit *al_edge_audit_state(const struct al_edge *e)
{
    return e->audit;
}

/* ---------- lifecycle ---------- */

int al_edge_new(struct ev_loop *loop, const struct al_edge_opts *opts, struct al_edge **out)
{
    struct al_grpc_channel_opts co = {.target = opts->target,
                                      .tls = opts->tls,
                                      .expect_peer = opts->expect_peer,
                                      .ping_interval_s = 10,
                                      .max_message_bytes = 16 << 20};
    const char *p = opts->log_prefix && opts->log_prefix[0] ? opts->log_prefix : "edge";
    struct al_edge *e;
    int rc;

    *out = NULL;
    if (!opts->target || !opts->target[0] || !(opts->timeout_s > 0))
        return AL_ERR_INVAL;
    e = calloc(1, sizeof(*e));
    if (!e)
        return AL_ERR_NOMEM;
    e->loop = loop;
    e->o = *opts;
    snprintf(e->ev_failed, EV_MAX, "%s.audit_failed", p);
    snprintf(e->ev_delivered, EV_MAX, "%s.audit_delivered", p);
    snprintf(e->ev_refused, EV_MAX, "%s.audit_record_refused", p);
    snprintf(e->ev_lost, EV_MAX, "%s.audit_lost", p);
    ev_timer_init(&e->audit_w, audit_timer_cb, 0., 0.);
    e->audit_w.data = e;
    ev_timer_init(&e->flush_w, flush_timeout_cb, 0., 0.);
    e->flush_w.data = e;
    if ((rc = al_edge_audit_new(&opts->audit, &e->audit)) < 0 ||
        (rc = al_grpc_channel_new(loop, &co, &e->ch)) < 0) {
        al_edge_free(e);
        return rc;
    }
    *out = e;
    return 0;
}

void al_edge_free(struct al_edge *e)
{
    size_t lost;

    if (!e)
        return;
    ev_timer_stop(e->loop, &e->audit_w);
    ev_timer_stop(e->loop, &e->flush_w);
    e->flush_done = NULL;
    if (e->append) {
        al_grpc_ccall_cancel(e->append);
        e->append = NULL;
    }
    al_grpc_channel_free(e->ch);
    lost = al_edge_audit_free(e->audit);
    if (lost)
        AL_LOG_ERROR(e->ev_lost,
                     "records=%zu reason=\"credstore did not take them before "
                     "shutdown\"",
                     lost);
    free(e);
}
