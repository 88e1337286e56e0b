/*
 * gw_cred: the gateway's link to credstore (CredentialResolver): Resolve
 * with the request's grant and the value cache in front of it, and the
 * delivery of use records (AppendAudit) with the state machine of
 * gw_audit.c.
 *
 * Resolve: the request's SignedGrant as the relay sent it, the route's
 * credential, the route's upstream destination. The answer becomes a
 * gw_value (injection + scrubber; the raw value is wiped once both exist)
 * which is cached under (issuer, principal, route, credential) for
 * min(cache_ttl, ttl_ms) unless cache_ttl is 0. Cached values are not used
 * while an audit batch is undelivered (gw_audit_bypass): every request then
 * resolves, and credstore audits each Resolve itself.
 *
 * Answers to the stream: PERMISSION_DENIED -> 403 with credstore's reason
 * (GRANT_EXPIRED, POLICY_DENIED ...); anything else -> 502
 * CREDENTIAL_UNAVAILABLE. Never the value, never credstore's message text
 * (it may describe policy to an agent).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "airlock/v1/common.pb-c.h"
#include "airlock/v1/credstore.pb-c.h"
#include "al_err.h"
#include "al_grpc.h"
#include "al_grpc_client.h"
#include "al_log.h"
#include "al_metrics.h"
#include "gw.h"
#include "gw_audit.h"
#include "gw_cache.h"
#include "gw_http.h"
#include "upstream.h"

#define REASON(x) AIRLOCK__V1__ERROR_REASON__ERROR_REASON_##x
#define CACHE_CAP 4096
#define SWEEP_S   1.0
#define KEY_MAX   1024

struct gw_resolve {
    struct gw *gw;
    struct al_grpc_ccall *cc;
    gw_cred_cb cb;
    void *user;
    size_t route;
    char key[KEY_MAX];
    struct gw_value *v; /* built from the answer */
    char why[160];      /* why it could not be built */
};

static double now_s(const struct gw *gw)
{
    return ev_now(gw->svc.loop);
}

static void audit_pump(struct gw *gw);

/* ---------- Resolve ---------- */

static void resolve_msg(struct al_grpc_ccall *cc, const ProtobufCMessage *msg, void *user)
{
    struct gw_resolve *rs = user;
    struct gw *gw = rs->gw;
    const Airlock__V1__ResolveResponse *r = (const void *)msg;
    const struct gw_route *rt = &gw->cfg.routes.v[rs->route];
    struct gw_template t = {0};
    double ttl;
    int rc;
    (void)cc;

    if (rs->v)
        return;
    if (r->ttl_ms <= 0) {
        snprintf(rs->why, sizeof(rs->why), "credstore released the value already expired");
        return;
    }
    ttl = (double)r->ttl_ms / 1000.0;
    if (ttl > gw->cfg.cache_ttl_s)
        ttl = gw->cfg.cache_ttl_s;
    t.type = r->type;
    t.header = r->template_ ? r->template_->header : "";
    t.format = r->template_ ? r->template_->format : "";
    t.allow_plain_http = r->template_ ? r->template_->allow_plain_http : 0;
    rc = gw_value_new(&t, r->value.data, r->value.len, r->version, now_s(gw) + ttl,
                      strncmp(rt->url, "http://", 7) == 0, &rs->v, rs->why, sizeof(rs->why));
    if (rc < 0 && !rs->why[0])
        snprintf(rs->why, sizeof(rs->why), "%s", al_strerror(rc));
}

/* credstore's ErrorDetail.reason of a failed call, or 0. */
static int error_reason(struct al_grpc_ccall *cc)
{
    size_t len = 0;
    const char *bin = al_grpc_ccall_metadata(cc, "airlock-error-bin", &len);
    Airlock__V1__ErrorDetail *d;
    int reason = 0;

    if (!bin)
        return 0;
    d = airlock__v1__error_detail__unpack(NULL, len, (const uint8_t *)bin);
    if (d) {
        reason = d->reason;
        airlock__v1__error_detail__free_unpacked(d, NULL);
    }
    return reason;
}

static void resolve_done(struct al_grpc_ccall *cc, int status, const char *message, void *user)
{
    struct gw_resolve *rs = user;
    struct gw *gw = rs->gw;
    const struct gw_route *rt = &gw->cfg.routes.v[rs->route];
    int reason;
    char q[160];

    if (status == AL_GRPC_OK && rs->v) {
        al_metric_add(gw->m.resolves_ok, 1);
        if (gw->cfg.cache_ttl_s > 0 && gw_cache_put(gw->cred.cache, rs->key, rs->v, now_s(gw)) < 0)
            AL_LOG_WARN("gateway.cache", "route=%s reason=\"out of memory\"", rt->name);
        rs->cb(rs->user, rs->v, 0, 0, NULL);
        free(rs);
        return;
    }
    if (status == AL_GRPC_OK) {
        al_metric_add(gw->m.resolves_failed, 1);
        AL_LOG_ERROR("gateway.credential_unusable", "route=%s credential=%s reason=\"%s\"",
                     rt->name, rt->credential, rs->why);
        rs->cb(rs->user, NULL, 502, REASON(CREDENTIAL_UNAVAILABLE),
               "the route's credential cannot be used");
        free(rs);
        return;
    }
    gw_value_unref(rs->v); /* an answer followed by a failed status is not used */
    rs->v = NULL;
    reason = error_reason(cc);
    AL_LOG_WARN("gateway.resolve_failed", "route=%s credential=%s status=%s reason=%s msg=%s",
                rt->name, rt->credential, al_grpc_status_name(status),
                reason ? gw_reason_name(reason) : "-",
                al_log_quote(q, sizeof(q), message, strlen(message)));
    if (status == AL_GRPC_PERMISSION_DENIED) {
        al_metric_add(gw->m.resolves_denied, 1);
        rs->cb(rs->user, NULL, 403, reason ? reason : REASON(POLICY_DENIED),
               "credstore refused the route's credential for this request");
    } else {
        al_metric_add(gw->m.resolves_failed, 1);
        rs->cb(rs->user, NULL, 502, REASON(CREDENTIAL_UNAVAILABLE),
               "the route's credential is unavailable");
    }
    free(rs);
}

int gw_cred_get(struct gw *gw, size_t route, struct gw_grant *g, const Airlock__V1__Grant *grant,
                gw_cred_cb cb, void *user, struct gw_resolve **out, struct gw_value **hit)
{
    static const struct al_grpc_ccall_cbs cbs = {resolve_msg, resolve_done};
    const struct gw_route *rt = &gw->cfg.routes.v[route];
    Airlock__V1__ResolveRequest rq = AIRLOCK__V1__RESOLVE_REQUEST__INIT;
    struct gw_resolve *rs;
    char key[KEY_MAX];
    int rc;

    *out = NULL;
    *hit = NULL;
    if (gw_cache_key(key, sizeof(key), grant->issuer, grant->principal, rt->name, rt->credential) <
        0)
        return AL_ERR_TOOBIG;
    if (gw->cfg.cache_ttl_s > 0 && !gw_audit_bypass(gw->cred.audit, now_s(gw))) {
        *hit = gw_cache_get(gw->cred.cache, key, now_s(gw));
        if (*hit) {
            al_metric_add(gw->m.cache_hits, 1);
            return 1;
        }
    }
    rs = calloc(1, sizeof(*rs));
    if (!rs)
        return AL_ERR_NOMEM;
    rs->gw = gw;
    rs->cb = cb;
    rs->user = user;
    rs->route = route;
    memcpy(rs->key, key, sizeof(key));
    rq.grant = g->sg;
    rq.credential = rt->credential;
    rq.destination = (char *)rl_upstream_destination(gw->ups[route]);
    rc = al_grpc_channel_call(gw->cred.ch, "/airlock.v1.CredentialResolver/Resolve", &rq.base,
                              &airlock__v1__resolve_response__descriptor, NULL, 0,
                              gw->cfg.credstore_timeout_s, &cbs, rs, &rs->cc);
    if (rc < 0) {
        free(rs);
        return rc;
    }
    *out = rs;
    return 0;
}

void gw_cred_cancel(struct gw_resolve *rs)
{
    if (!rs)
        return;
    al_grpc_ccall_cancel(rs->cc);
    gw_value_unref(rs->v);
    free(rs);
}

/* ---------- audit ---------- */

static void audit_gauges(struct gw *gw)
{
    struct gw_audit *a = gw->cred.audit;

    al_metric_set(gw->m.audit_depth, (double)(gw_audit_queued(a) + gw_audit_reserved(a)));
    al_metric_set(gw->m.audit_undelivered, gw_audit_bypass(a, now_s(gw)) ? 1 : 0);
    al_metric_set(gw->m.audit_dropped, (double)gw_audit_dropped(a));
}

static enum gw_audit_outcome outcome_of(struct al_grpc_ccall *cc, int status)
{
    int reason;

    switch (status) {
    case AL_GRPC_OK:
        return GW_AUDIT_OK;
    case AL_GRPC_INVALID_ARGUMENT:
    case AL_GRPC_PERMISSION_DENIED:
    case AL_GRPC_FAILED_PRECONDITION:
    case AL_GRPC_NOT_FOUND:
    case AL_GRPC_OUT_OF_RANGE:
    case AL_GRPC_UNIMPLEMENTED:
        return GW_AUDIT_REFUSED;
    case AL_GRPC_RESOURCE_EXHAUSTED:
        reason = error_reason(cc);
        return reason == REASON(RATE_LIMITED) || reason == REASON(QUEUE_FULL) ? GW_AUDIT_RETRY
                                                                              : GW_AUDIT_REFUSED;
    default:
        return GW_AUDIT_RETRY;
    }
}

static void append_done(struct al_grpc_ccall *cc, int status, const char *message, void *user)
{
    struct gw *gw = user;
    enum gw_audit_outcome o = outcome_of(cc, status);
    unsigned long dropped = gw_audit_dropped(gw->cred.audit);
    char q[200];

    gw->cred.append = NULL;
    gw_audit_done(gw->cred.audit, o, now_s(gw));
    if (o == GW_AUDIT_OK) {
        al_metric_add(gw->m.audit_sent, 1);
        if (gw->cred.append_logged)
            AL_LOG_INFO("gateway.audit_delivered", "queued=%zu", gw_audit_queued(gw->cred.audit));
        gw->cred.append_logged = 0;
    } else {
        al_metric_add(gw->m.audit_fail, 1);
        gw->cred.append_logged = 1;
        AL_LOG_WARN("gateway.audit_failed", "status=%s action=%s queued=%zu msg=%s",
                    al_grpc_status_name(status), o == GW_AUDIT_RETRY ? "retry" : "split",
                    gw_audit_queued(gw->cred.audit),
                    al_log_quote(q, sizeof(q), message, strlen(message)));
        if (gw_audit_dropped(gw->cred.audit) > dropped)
            AL_LOG_ERROR("gateway.audit_record_refused",
                         "reason=\"credstore refused a single use record; it is dropped "
                         "(credstore recorded the refusal)\" dropped_total=%lu",
                         gw_audit_dropped(gw->cred.audit));
    }
    audit_pump(gw);
}

static void audit_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    audit_pump(w->data);
}

/* Sends the next batch when one is due, and arms the timer for the next. */
static void audit_pump(struct gw *gw)
{
    static const struct al_grpc_ccall_cbs cbs = {NULL, append_done};
    struct gw_cred *cr = &gw->cred;
    const Airlock__V1__AppendAuditRequest *rq;
    double wake;
    int rc;

    while (!cr->append && (rq = gw_audit_next(cr->audit, now_s(gw)))) {
        rc = al_grpc_channel_call(cr->ch, "/airlock.v1.CredentialResolver/AppendAudit", &rq->base,
                                  &airlock__v1__append_audit_response__descriptor, NULL, 0,
                                  gw->cfg.credstore_timeout_s, &cbs, gw, &cr->append);
        if (rc < 0) {
            cr->append = NULL;
            gw_audit_done(cr->audit, rc == AL_ERR_TOOBIG ? GW_AUDIT_REFUSED : GW_AUDIT_RETRY,
                          now_s(gw));
        }
    }
    audit_gauges(gw);
    ev_timer_stop(gw->svc.loop, &cr->audit_w);
    wake = gw_audit_wake(cr->audit, now_s(gw));
    if (!cr->append && wake >= 0) {
        double d = wake - now_s(gw);
        ev_timer_set(&cr->audit_w, d > 0.001 ? d : 0.001, 0.);
        ev_timer_start(gw->svc.loop, &cr->audit_w);
    }
    if (gw->cred.flush_done && gw_audit_queued(cr->audit) == 0 &&
        gw_audit_reserved(cr->audit) == 0) {
        void (*done)(struct gw *) = gw->cred.flush_done;
        gw->cred.flush_done = NULL;
        ev_timer_stop(gw->svc.loop, &cr->flush_w);
        done(gw);
    }
}

int gw_cred_reserve(struct gw *gw)
{
    int rc = gw_audit_reserve(gw->cred.audit);

    if (rc < 0)
        al_metric_add(gw->m.audit_full, 1);
    return rc;
}

void gw_cred_release(struct gw *gw)
{
    gw_audit_release(gw->cred.audit);
    audit_gauges(gw);
}

void gw_cred_record(struct gw *gw, struct gw_grant *g, const struct gw_use *u)
{
    if (gw_audit_add(gw->cred.audit, g, u, now_s(gw)) < 0)
        AL_LOG_ERROR("gateway.audit_lost",
                     "request=%s reason=\"out of memory: a use record "
                     "could not be queued\"",
                     u->request_id);
    if (!gw->cred.append && !ev_is_active(&gw->cred.audit_w))
        audit_pump(gw);
    else
        audit_gauges(gw);
}

static void flush_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct gw *gw = w->data;
    void (*done)(struct gw *) = gw->cred.flush_done;
    (void)loop;
    (void)revents;

    gw->cred.flush_done = NULL;
    if (done)
        done(gw);
}

void gw_cred_flush(struct gw *gw, double timeout_s, void (*done)(struct gw *gw))
{
    gw->cred.flush_done = done;
    gw_audit_flush_all(gw->cred.audit);
    ev_timer_init(&gw->cred.flush_w, flush_timeout_cb, timeout_s, 0.);
    gw->cred.flush_w.data = gw;
    ev_timer_start(gw->svc.loop, &gw->cred.flush_w);
    audit_pump(gw);
}

/* ---------- setup ---------- */

static void sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct gw *gw = w->data;
    (void)loop;
    (void)revents;
    gw_cache_sweep(gw->cred.cache, now_s(gw));
}

int gw_cred_init(struct gw *gw)
{
    struct gw_audit_opts ao = {.batch_max = (size_t)gw->cfg.audit_batch_max,
                               .flush_s = gw->cfg.audit_flush_s,
                               .max_pending = (size_t)gw->cfg.audit_max_pending};
    struct al_grpc_channel_opts co = {.target = gw->cfg.credstore_addr,
                                      .tls = gw->cs_tls,
                                      .expect_peer = gw->cfg.credstore_peer,
                                      .ping_interval_s = 10,
                                      .max_message_bytes = 16 << 20};
    int rc;

    if ((rc = gw_cache_new(CACHE_CAP, &gw->cred.cache)) < 0 ||
        (rc = gw_audit_new(&ao, &gw->cred.audit)) < 0)
        return rc;
    rc = al_grpc_channel_new(gw->svc.loop, &co, &gw->cred.ch);
    if (rc < 0)
        return rc;
    ev_timer_init(&gw->cred.audit_w, audit_timer_cb, 0., 0.);
    gw->cred.audit_w.data = gw;
    ev_timer_init(&gw->cred.sweep_w, sweep_cb, SWEEP_S, SWEEP_S);
    gw->cred.sweep_w.data = gw;
    ev_timer_start(gw->svc.loop, &gw->cred.sweep_w);
    return 0;
}

void gw_cred_free(struct gw *gw)
{
    struct gw_cred *cr = &gw->cred;
    size_t lost;

    if (gw->svc.loop) {
        ev_timer_stop(gw->svc.loop, &cr->audit_w);
        ev_timer_stop(gw->svc.loop, &cr->sweep_w);
        ev_timer_stop(gw->svc.loop, &cr->flush_w);
    }
    cr->flush_done = NULL;
    if (cr->append) {
        al_grpc_ccall_cancel(cr->append);
        cr->append = NULL;
    }
    al_grpc_channel_free(cr->ch);
    cr->ch = NULL;
    lost = gw_audit_free(cr->audit);
    cr->audit = NULL;
    if (lost)
        AL_LOG_ERROR("gateway.audit_lost",
                     "records=%zu reason=\"credstore did not take them "
                     "before shutdown\"",
                     lost);
    gw_cache_free(cr->cache);
    cr->cache = NULL;
}
