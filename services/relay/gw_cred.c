/*
 * gw_cred: the gateway's use of credstore (CredentialResolver): Resolve
 * with the request's grant and the value cache in front of it, and the use
 * records. The calls themselves and the delivery of records (AppendAudit
 * batches, retries, splitting) are al_edge.h, shared with the executor.
 *
 * Resolve: the request's SignedGrant as the relay sent it, the route's
 * credential, the route's upstream destination. The answer becomes a
 * gw_value (injection + scrubber; the raw value is wiped once both exist)
 * which is cached under (issuer, principal, route, credential) for
 * min(cache_ttl, ttl_ms) unless cache_ttl is 0. Cached values are not used
 * while an audit batch is undelivered (al_edge_bypass): every request then
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
#include "al_edge.h"
#include "al_err.h"
#include "al_grpc.h"
#include "al_log.h"
#include "al_metrics.h"
#include "gw.h"
#include "gw_cache.h"
#include "gw_http.h"
#include "upstream.h"

#define REASON(x) AIRLOCK__V1__ERROR_REASON__ERROR_REASON_##x
#define CACHE_CAP 4096
#define SWEEP_S   1.0
#define KEY_MAX   1024

struct gw_resolve {
    struct gw *gw;
    struct al_edge_call *call;
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

/* ---------- Resolve ---------- */

static void resolve_answer(void *user, const Airlock__V1__ResolveResponse *r)
{
    struct gw_resolve *rs = user;
    struct gw *gw = rs->gw;
    const struct gw_route *rt = &gw->cfg.routes.v[rs->route];
    struct gw_template t = {0};
    double ttl;
    int rc;

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

static void resolve_done(void *user, int status, int reason, const char *message)
{
    struct gw_resolve *rs = user;
    struct gw *gw = rs->gw;
    const struct gw_route *rt = &gw->cfg.routes.v[rs->route];
    char q[160];

    rs->call = NULL;
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

int gw_cred_get(struct gw *gw, size_t route, struct al_edge_grant *g,
                const Airlock__V1__Grant *grant, gw_cred_cb cb, void *user, struct gw_resolve **out,
                struct gw_value **hit)
{
    static const struct al_edge_resolve_cbs cbs = {resolve_answer, resolve_done};
    const struct gw_route *rt = &gw->cfg.routes.v[route];
    struct gw_resolve *rs;
    char key[KEY_MAX];
    int rc;

    *out = NULL;
    *hit = NULL;
    if (gw_cache_key(key, sizeof(key), grant->issuer, grant->principal, rt->name, rt->credential) <
        0)
        return AL_ERR_TOOBIG;
    if (gw->cfg.cache_ttl_s > 0 && !al_edge_bypass(gw->cred.edge)) {
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
    rc = al_edge_resolve(gw->cred.edge, g->sg, rt->credential,
                         rl_upstream_destination(gw->ups[route]), &cbs, rs, &rs->call);
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
    al_edge_cancel(rs->call);
    gw_value_unref(rs->v);
    free(rs);
}

/* ---------- audit ---------- */

int gw_cred_reserve(struct gw *gw)
{
    return al_edge_reserve(gw->cred.edge);
}

void gw_cred_release(struct gw *gw)
{
    al_edge_release(gw->cred.edge);
}

void gw_cred_record(struct gw *gw, struct al_edge_grant *g, const struct al_edge_use *u)
{
    al_edge_record(gw->cred.edge, g, u);
}

static void flushed(void *user)
{
    struct gw *gw = user;
    void (*done)(struct gw *) = gw->cred.flush_done;

    gw->cred.flush_done = NULL;
    if (done)
        done(gw);
}

void gw_cred_flush(struct gw *gw, double timeout_s, void (*done)(struct gw *gw))
{
    gw->cred.flush_done = done;
    al_edge_flush(gw->cred.edge, timeout_s, flushed, gw);
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
    struct al_edge_opts eo = {.target = gw->cfg.credstore_addr,
                              .expect_peer = gw->cfg.credstore_peer,
                              .tls = gw->cs_tls,
                              .timeout_s = gw->cfg.credstore_timeout_s,
                              .audit = {.batch_max = (size_t)gw->cfg.audit_batch_max,
                                        .flush_s = gw->cfg.audit_flush_s,
                                        .max_pending = (size_t)gw->cfg.audit_max_pending},
                              .log_prefix = "gateway",
                              .metrics = {.queue = gw->m.audit_depth,
                                          .undelivered = gw->m.audit_undelivered,
                                          .batch_fail = gw->m.audit_fail,
                                          .refused = gw->m.audit_dropped,
                                          .batches = gw->m.audit_sent,
                                          .full = gw->m.audit_full}};
    int rc;

    if ((rc = gw_cache_new(CACHE_CAP, &gw->cred.cache)) < 0 ||
        (rc = al_edge_new(gw->svc.loop, &eo, &gw->cred.edge)) < 0)
        return rc;
    ev_timer_init(&gw->cred.sweep_w, sweep_cb, SWEEP_S, SWEEP_S);
    gw->cred.sweep_w.data = gw;
    ev_timer_start(gw->svc.loop, &gw->cred.sweep_w);
    return 0;
}

void gw_cred_free(struct gw *gw)
{
    struct gw_cred *cr = &gw->cred;

    if (gw->svc.loop)
        ev_timer_stop(gw->svc.loop, &cr->sweep_w);
    al_edge_free(cr->edge);
    cr->edge = NULL;
    gw_cache_free(cr->cache);
    cr->cache = NULL;
}
