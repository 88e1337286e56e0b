/*
 * heartbeat: one Heartbeat call extends every lease this executor holds.
 *
 * It runs every heartbeat_interval_ms (the smallest any assignment asked
 * for), at most one in flight. Each LeaseStatus is applied to its attempt:
 * ACTIVE extends the lease from when the request was sent (conservative:
 * intake extended it later than that), CANCEL_REQUESTED stops the job for
 * cancellation, LOST stops it and ends the attempt silently. A fresh grant
 * replaces the attempt's (and goes to its egress proxy). When heartbeats
 * fail, nothing is extended and each attempt's fence timer stops its job
 * before the lease could lapse.
 */
#include <stdlib.h>
#include <string.h>

#include "al_grpc.h"
#include "al_grpc_client.h"
#include "al_log.h"
#include "executor.h"

#define HB_DEFAULT_S 1.0
#define HB_MIN_S     0.05

static void hb_msg(struct al_grpc_ccall *cc, const ProtobufCMessage *m, void *user)
{
    struct ex *ex = user;
    const Airlock__V1__HeartbeatResponse *r = (const Airlock__V1__HeartbeatResponse *)m;

    (void)cc;
    for (size_t i = 0; i < r->n_leases; i++) {
        const Airlock__V1__LeaseStatus *st = r->leases[i];
        struct ex_attempt *a = st->job_id ? ex_attempt_find(ex, st->job_id, st->attempt) : NULL;

        if (!a || a->finished)
            continue;
        switch (st->state) {
        case AIRLOCK__V1__LEASE_STATE__LEASE_STATE_ACTIVE:
            ex_attempt_extend(a, st->lease_ttl_ms, ex->hb_sent_at);
            break;
        case AIRLOCK__V1__LEASE_STATE__LEASE_STATE_CANCEL_REQUESTED:
            ex_attempt_extend(a, st->lease_ttl_ms, ex->hb_sent_at);
            ex_attempt_stop(a, EX_STOP_CANCEL, "cancelled by the caller");
            break;
        case AIRLOCK__V1__LEASE_STATE__LEASE_STATE_LOST:
        default:
            /* A heartbeat answered after our Finish was accepted reports the
             * lease gone; the Finish answer decides (and reports a real
             * loss itself), so an in-flight Finish is never cancelled here. */
            if (a->finish_call)
                break;
            AL_LOG_WARN("executor.lease_lost",
                        "job=%s attempt=%d reason=\"heartbeat: lease "
                        "lost\"",
                        a->job_id, a->attempt);
            ex_attempt_stop(a, EX_STOP_LOST, "lease lost"); /* may free a */
            continue;
        }
        if (st->grant && !a->finished) {
            size_t len = airlock__v1__signed_grant__get_packed_size(st->grant);
            uint8_t *buf = malloc(len ? len : 1);
            if (buf) {
                airlock__v1__signed_grant__pack(st->grant, buf);
                Airlock__V1__SignedGrant *g = airlock__v1__signed_grant__unpack(NULL, len, buf);
                if (g) {
                    if (a->grant)
                        airlock__v1__signed_grant__free_unpacked(a->grant, NULL);
                    a->grant = g;
                    ex_run_grant(a); /* the egress proxy uses it from now on */
                }
                free(buf);
            }
        }
    }
}

static void hb_done(struct al_grpc_ccall *cc, int status, const char *msg, void *user)
{
    struct ex *ex = user;

    (void)cc;
    ex->hb_call = NULL;
    if (status != AL_GRPC_OK)
        AL_LOG_WARN("executor.heartbeat", "status=%s reason=\"%s\" leases=%zu",
                    al_grpc_status_name(status), msg, ex->n_attempts);
}

static void hb_send(struct ex *ex)
{
    static const struct al_grpc_ccall_cbs cbs = {hb_msg, hb_done};
    Airlock__V1__HeartbeatRequest req = AIRLOCK__V1__HEARTBEAT_REQUEST__INIT;
    Airlock__V1__LeaseRef *refs, **pr;
    size_t n = 0;

    if (ex->hb_call || !ex->n_attempts)
        return;
    refs = calloc(ex->n_attempts, sizeof(*refs));
    pr = calloc(ex->n_attempts, sizeof(*pr));
    if (!refs || !pr) {
        free(refs);
        free(pr);
        return;
    }
    for (struct ex_attempt *a = ex->attempts; a && n < 1000; a = a->next) {
        if (a->finished)
            continue;
        ex_attempt_ref(a, &refs[n]);
        pr[n] = &refs[n];
        n++;
    }
    if (n) {
        ex->hb_sent_at = ev_now(ex->svc.loop);
        req.leases = pr;
        req.n_leases = n;
        req.instance_id = ex->instance_id;
        double timeout = ex->hb_interval_s * 3 < 1 ? 1 : ex->hb_interval_s * 3;
        if (al_grpc_channel_call(ex->ch, "/airlock.v1.ExecutorService/Heartbeat", &req.base,
                                 &airlock__v1__heartbeat_response__descriptor, NULL, 0, timeout,
                                 &cbs, ex, &ex->hb_call) < 0)
            ex->hb_call = NULL;
    }
    free(pr);
    free(refs);
}

static void hb_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ex *ex = w->data;
    (void)loop;
    (void)revents;
    hb_send(ex);
}

void ex_heartbeat_interval(struct ex *ex, int64_t interval_ms)
{
    double s = interval_ms > 0 ? (double)interval_ms / 1000.0 : HB_DEFAULT_S;

    if (s < HB_MIN_S)
        s = HB_MIN_S;
    if (s >= ex->hb_interval_s && ev_is_active(&ex->hb_w))
        return;
    ex->hb_interval_s = s;
    ev_timer_stop(ex->svc.loop, &ex->hb_w);
    ev_timer_set(&ex->hb_w, s, s);
    ev_timer_start(ex->svc.loop, &ex->hb_w);
}

void ex_heartbeat_start(struct ex *ex)
{
    ex->hb_interval_s = HB_DEFAULT_S;
    ev_timer_init(&ex->hb_w, hb_cb, HB_DEFAULT_S, HB_DEFAULT_S);
    ex->hb_w.data = ex;
    ev_timer_start(ex->svc.loop, &ex->hb_w);
}

void ex_heartbeat_stop(struct ex *ex)
{
    ev_timer_stop(ex->svc.loop, &ex->hb_w);
    if (ex->hb_call) {
        struct al_grpc_ccall *cc = ex->hb_call;
        ex->hb_call = NULL;
        al_grpc_ccall_cancel(cc);
    }
}
