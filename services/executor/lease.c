/*
 * lease: the Lease server stream from intake.
 *
 * The executor dials out: LeaseRequest{slots, pools, instance_id, version}
 * opens a long-lived stream on which intake sends assignments (never more
 * than slots held at once) and cancellations. When the stream ends for any
 * reason it is re-opened after a jittered exponential backoff
 * (lease.reconnect_min doubling up to lease.reconnect_max, reset once a
 * stream has delivered something or stayed up). Held attempts are unaffected:
 * heartbeats keep their leases. While draining it is not re-opened.
 */
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "al_grpc.h"
#include "al_grpc_client.h"
#include "al_log.h"
#include "al_metrics.h"
#include "executor.h"

#define EX_VERSION "airlock-executor/0.1"

static int lease_open(struct ex *ex);

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ex *ex = w->data;
    (void)loop;
    (void)revents;
    if (!ex->draining && !ex->lease_call)
        (void)lease_open(ex);
}

static void schedule_retry(struct ex *ex)
{
    double min = (double)ex->cfg.reconnect_min_ms / 1000.0;
    double max = (double)ex->cfg.reconnect_max_ms / 1000.0;

    if (ex->draining)
        return;
    ex->lease_backoff_s = ex->lease_backoff_s < min ? min : ex->lease_backoff_s * 2;
    if (ex->lease_backoff_s > max)
        ex->lease_backoff_s = max;
    /* full jitter over the upper half: replicas restarting together spread out */
    double d = ex->lease_backoff_s * (0.5 + 0.5 * ((double)random() / (double)RAND_MAX));
    ev_timer_stop(ex->svc.loop, &ex->lease_retry_w);
    ev_timer_set(&ex->lease_retry_w, d, 0.);
    ev_timer_start(ex->svc.loop, &ex->lease_retry_w);
}

static void on_lease_msg(struct al_grpc_ccall *cc, const ProtobufCMessage *m, void *user)
{
    struct ex *ex = user;
    const Airlock__V1__LeaseResponse *r = (const Airlock__V1__LeaseResponse *)m;

    (void)cc;
    ex->lease_backoff_s = 0; /* the stream works */
    if (r->kind_case == AIRLOCK__V1__LEASE_RESPONSE__KIND_ASSIGNMENT && r->assignment) {
        ex_attempt_assign(ex, r->assignment);
    } else if (r->kind_case == AIRLOCK__V1__LEASE_RESPONSE__KIND_CANCEL && r->cancel &&
               r->cancel->job_id) {
        struct ex_attempt *a = ex_attempt_find(ex, r->cancel->job_id, r->cancel->attempt);
        if (a)
            ex_attempt_stop(a, EX_STOP_CANCEL,
                            r->cancel->reason && r->cancel->reason[0] ? r->cancel->reason
                                                                      : "cancelled by the caller");
    }
}

static void on_lease_done(struct al_grpc_ccall *cc, int status, const char *msg, void *user)
{
    struct ex *ex = user;

    (void)cc;
    ex->lease_call = NULL;
    if (ex->lease_connected)
        AL_LOG_WARN("executor.lease_stream", "status=%s reason=\"%s\" held=%zu",
                    al_grpc_status_name(status), msg, ex->n_attempts);
    ex->lease_connected = 0;
    al_metric_set(ex->m_lease_connected, 0);
    if (status == AL_GRPC_PERMISSION_DENIED || status == AL_GRPC_INVALID_ARGUMENT ||
        status == AL_GRPC_UNAUTHENTICATED)
        AL_LOG_ERROR("executor.lease_stream",
                     "status=%s reason=\"%s\" hint=\"check this executor's identity, its pools "
                     "in intake's configuration and the pools setting\"",
                     al_grpc_status_name(status), msg);
    schedule_retry(ex);
}

static int lease_open(struct ex *ex)
{
    static const struct al_grpc_ccall_cbs cbs = {on_lease_msg, on_lease_done};
    Airlock__V1__LeaseRequest req = AIRLOCK__V1__LEASE_REQUEST__INIT;
    size_t npools = 0;
    int rc;

    while (ex->cfg.pools && ex->cfg.pools[npools])
        npools++;
    req.slots = ex->cfg.slots;
    req.pools = ex->cfg.pools;
    req.n_pools = npools;
    req.instance_id = ex->instance_id;
    req.version = (char *)EX_VERSION;
    rc = al_grpc_channel_call(ex->ch, "/airlock.v1.ExecutorService/Lease", &req.base,
                              &airlock__v1__lease_response__descriptor, NULL, 0, 0, &cbs, ex,
                              &ex->lease_call);
    if (rc < 0) {
        ex->lease_call = NULL;
        AL_LOG_WARN("executor.lease_stream", "reason=\"%s\"", al_strerror(rc));
        schedule_retry(ex);
        return rc;
    }
    ex->lease_connected = 1;
    al_metric_set(ex->m_lease_connected, 1);
    AL_LOG_INFO("executor.lease_stream", "intake=%s slots=%d pools=%zu instance=%s",
                ex->cfg.intake_addr, ex->cfg.slots, npools, ex->instance_id);
    return 0;
}

int ex_lease_start(struct ex *ex)
{
    ev_timer_init(&ex->lease_retry_w, retry_cb, 0., 0.);
    ex->lease_retry_w.data = ex;
    (void)lease_open(ex); /* a failure is retried, not fatal */
    return 0;
}

void ex_lease_stop(struct ex *ex)
{
    ev_timer_stop(ex->svc.loop, &ex->lease_retry_w);
    if (ex->lease_call) {
        struct al_grpc_ccall *cc = ex->lease_call;
        ex->lease_call = NULL;
        al_grpc_ccall_cancel(cc);
    }
    ex->lease_connected = 0;
    al_metric_set(ex->m_lease_connected, 0);
}
