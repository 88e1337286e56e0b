/*
 * airlock-gateway: the tunnel's egress-only connector inside the perimeter
 * (see gw.h for its pieces and tunnel.proto for the protocol).
 *
 * Startup: load the configuration (common keys + gw_config.h), read our
 * SPIFFE id from our certificate (relay grants name it as holder), load the
 * relay grant keys, build a client TLS context for the relays (ALPN
 * airlock-tunnel/1) and one for credstore, prepare each route's upstream
 * (URL, address policy), pick a random instance id, then dial every relay.
 * The gateway listens on nothing but its ops port (/metrics, /healthz,
 * /readyz: ready once a relay has acknowledged a registration).
 * SIGTERM: TunnelDrain and GOAWAY on every connection, open agent streams
 * get drain_grace to finish (then they are reset), the audit queue is
 * flushed to credstore, exit 0. SIGHUP reloads the certificates.
 * --check-config also loads the relay keys, the identity and the routes'
 * upstreams, so what it accepts starts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <openssl/x509.h>

#include "al_err.h"
#include "al_grant.h"
#include "al_log.h"
#include "al_metrics.h"
#include "al_pki.h"
#include "al_resolve.h"
#include "al_tls.h"
#include "gw.h"
#include "gw_session.h"
#include "upstream.h"

#define SESSIONS_CAP    100000
#define SESSIONS_IDLE_S 3600.0

static const char summary[] =
    "tunnel gateway: dials the relays, serves their agent streams and forwards them to private "
    "MCP servers with the route's credential injected";

/* ---------- startup ---------- */

static int self_identity(struct gw *gw)
{
    X509 *cert = NULL;
    int rc = al_pki_load_cert(gw->cfg.common.tls_cert_file, &cert);

    if (rc == 0)
        rc = al_pki_spiffe_id(cert, gw->self_id, sizeof(gw->self_id));
    X509_free(cert);
    if (rc < 0) {
        fprintf(stderr, "airlock-gateway: tls.cert_file: no SPIFFE id: %s\n", al_strerror(rc));
        return AL_ERR_CONFIG;
    }
    if (strncmp(gw->self_id, "spiffe://airlock/gateway/", 25) != 0) {
        fprintf(stderr,
                "airlock-gateway: %s is not a gateway identity (spiffe://airlock/gateway/NAME)\n",
                gw->self_id);
        return AL_ERR_CONFIG;
    }
    return 0;
}

static int names(struct gw *gw)
{
    unsigned char r[16];

    if (RAND_bytes(r, sizeof(r)) != 1)
        return AL_ERR_CRYPTO;
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(gw->instance_id + 2 * i, 3, "%02x", r[i]);
    srandom((unsigned)(r[0] | r[1] << 8 | r[2] << 16) ^ (unsigned)getpid());
    if (gw->cfg.gateway_id && gw->cfg.gateway_id[0])
        snprintf(gw->gateway_id, sizeof(gw->gateway_id), "%s", gw->cfg.gateway_id);
    else if (gethostname(gw->gateway_id, sizeof(gw->gateway_id) - 1) != 0 || !gw->gateway_id[0])
        snprintf(gw->gateway_id, sizeof(gw->gateway_id), "gateway");
    return 0;
}

static int client_tls(struct gw *gw)
{
    static const char *const tunnel_alpn[] = {GW_ALPN, NULL};
    struct al_tls_opts to = {.cert_file = gw->cfg.common.tls_cert_file,
                             .key_file = gw->cfg.common.tls_key_file,
                             .ca_file = gw->cfg.common.tls_ca_file,
                             .alpn = tunnel_alpn};
    int rc = al_tls_new(&to, &gw->relay_tls);

    if (rc == 0) {
        to.alpn = NULL; /* h2 */
        rc = al_tls_new(&to, &gw->cs_tls);
    }
    if (rc < 0)
        fprintf(stderr, "airlock-gateway: client TLS: %s\n", al_strerror(rc));
    return rc;
}

static int upstreams(struct gw *gw, struct ev_loop *loop)
{
    const struct gw_routes *rt = &gw->cfg.routes;
    int rc = al_resolver_new(loop, &gw->resolver);

    if (rc < 0)
        return rc;
    gw->ups = calloc(rt->n, sizeof(*gw->ups));
    if (!gw->ups)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < rt->n; i++) {
        struct rl_upstream_opts o = {.url = rt->v[i].url,
                                     .ca_file = rt->v[i].ca_file,
                                     .allow = rt->v[i].allow,
                                     .nallow = rt->v[i].nallow,
                                     .resolver = gw->resolver,
                                     .head_timeout_s = rt->v[i].timeout_s};
        rc = rl_upstream_new(loop, &o, &gw->ups[i]);
        if (rc < 0) {
            fprintf(stderr, "airlock-gateway: tunnels: route %s: url %s: %s\n", rt->v[i].name,
                    rt->v[i].url, al_strerror(rc));
            return AL_ERR_CONFIG;
        }
    }
    return 0;
}

static void upstreams_free(struct gw *gw)
{
    for (size_t i = 0; gw->ups && i < gw->cfg.routes.n; i++)
        rl_upstream_free(gw->ups[i]);
    free(gw->ups);
    gw->ups = NULL;
    al_resolver_free(gw->resolver);
    gw->resolver = NULL;
}

/* Everything that does not need the service runtime; --check-config stops
 * after it. */
static int prepare(struct gw *gw, struct ev_loop *loop)
{
    char err[512];
    int rc = gw_config_check(&gw->cfg, err, sizeof(err));

    if (rc < 0) {
        fprintf(stderr, "airlock-gateway: %s\n", err);
        return rc;
    }
    if ((rc = self_identity(gw)) < 0 || (rc = names(gw)) < 0)
        return rc;
    rc = gw_keyring_build(&gw->cfg, &gw->keyring, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "airlock-gateway: %s\n", err);
        return rc;
    }
    return upstreams(gw, loop);
}

static void metrics(struct gw *gw)
{
    static const char *const states[] = {"dialing", "open", "registering", "ready", "closing"};
    static const char *const classes[] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
    struct al_metrics *m = gw->svc.metrics;
    struct gw_metrics *x = &gw->m;
    char l[64];

    for (int i = 0; i < GW_CONN_NSTATES; i++) {
        snprintf(l, sizeof(l), "state=\"%s\"", states[i]);
        x->conns[i] =
            al_metrics_gauge(m, "airlock_gateway_connections", "relay connections by state", l);
    }
    for (int i = 0; i < 6; i++) {
        snprintf(l, sizeof(l), "class=\"%s\"", i ? classes[i] : "reset");
        x->req[i] = al_metrics_counter(m, "airlock_gateway_requests_total",
                                       "agent requests answered, by status class", l);
        snprintf(l, sizeof(l), "class=\"%s\"", i ? classes[i] : "failed");
        x->up[i] = al_metrics_counter(m, "airlock_gateway_upstream_responses_total",
                                      "upstream responses by status class (failed: none)", l);
    }
    x->streams = al_metrics_gauge(m, "airlock_gateway_agent_streams", "open agent streams", NULL);
    x->dials = al_metrics_counter(m, "airlock_gateway_dials_total", "relay dials", NULL);
    x->dial_fail = al_metrics_counter(m, "airlock_gateway_dial_failures_total",
                                      "relay dials that failed or were refused", NULL);
    x->rejected = al_metrics_counter(m, "airlock_gateway_registrations_refused_total",
                                     "registrations a relay accepted no tunnel of", NULL);
    x->resolves_ok = al_metrics_counter(m, "airlock_gateway_resolves_total",
                                        "credstore Resolve calls", "result=\"ok\"");
    x->resolves_denied = al_metrics_counter(m, "airlock_gateway_resolves_total",
                                            "credstore Resolve calls", "result=\"denied\"");
    x->resolves_failed = al_metrics_counter(m, "airlock_gateway_resolves_total",
                                            "credstore Resolve calls", "result=\"failed\"");
    x->cache_hits = al_metrics_counter(m, "airlock_gateway_cache_hits_total",
                                       "requests served with a cached value", NULL);
    x->cred_rejected = al_metrics_counter(
        m, "airlock_gateway_credential_rejected_total",
        "upstream 401 answers to requests carrying the route's credential (passed on as 502)",
        NULL);
    x->audit_depth = al_metrics_gauge(m, "airlock_gateway_audit_queue",
                                      "use records queued, in flight or reserved", NULL);
    x->audit_undelivered = al_metrics_gauge(m, "airlock_gateway_audit_undelivered_batches",
                                            "1 while a batch is overdue or failed (cache "
                                            "bypassed)",
                                            NULL);
    x->audit_fail = al_metrics_counter(m, "airlock_gateway_audit_batch_failures_total",
                                       "AppendAudit calls that failed", NULL);
    x->audit_sent = al_metrics_counter(m, "airlock_gateway_audit_batches_total",
                                       "AppendAudit batches delivered", NULL);
    x->audit_dropped = al_metrics_counter(m, "airlock_gateway_audit_records_refused_total",
                                          "single use records credstore refused", NULL);
    x->audit_full = al_metrics_counter(m, "airlock_gateway_audit_full_total",
                                       "requests refused because the audit queue was full", NULL);
    x->scrub_hits = al_metrics_counter(m, "airlock_gateway_scrub_hits_total",
                                       "secret occurrences removed from responses", NULL);
    x->policy_denials = al_metrics_counter(m, "airlock_gateway_policy_denials_total",
                                           "MCP calls or sessions refused by policy", NULL);
    x->list_removed = al_metrics_counter(m, "airlock_gateway_list_items_removed_total",
                                         "items removed from list results by policy", NULL);
    x->grant_denials = al_metrics_counter(m, "airlock_gateway_grant_denials_total",
                                          "requests whose relay grant was refused", NULL);
    x->bytes_up =
        al_metrics_counter(m, "airlock_gateway_bytes_total", "body bytes", "dir=\"to_upstream\"");
    x->bytes_down =
        al_metrics_counter(m, "airlock_gateway_bytes_total", "body bytes", "dir=\"from_upstream\"");
}

/* ---------- service hooks ---------- */

static int ready(struct al_service *svc, char *why, size_t n)
{
    struct gw *gw = svc->user;

    if (!gw_conns_ready(gw)) {
        snprintf(why, n, "no relay has acknowledged a registration yet");
        return 0;
    }
    return 1;
}

static void reload(struct al_service *svc)
{
    struct gw *gw = svc->user;

    if (al_tls_reload(gw->relay_tls) == 0 && al_tls_reload(gw->cs_tls) == 0)
        AL_LOG_INFO("gateway.reload", "reason=\"client certificates reloaded; new connections "
                                      "use them\"");
}

static void flushed(struct gw *gw)
{
    if (gw->drain_phase != 1)
        return;
    gw->drain_phase = 2;
    AL_LOG_INFO("gateway.drained", "audit_queue=%.0f", al_metric_value(gw->m.audit_depth));
    al_service_release(&gw->svc);
}

static void conns_drained(struct gw *gw)
{
    if (gw->drain_phase != 0)
        return;
    gw->drain_phase = 1;
    ev_timer_stop(gw->svc.loop, &gw->drain_w);
    AL_LOG_INFO("gateway.drain", "reason=\"every relay connection closed; flushing audit\"");
    gw_cred_flush(gw, 2 * gw->cfg.credstore_timeout_s, flushed);
}

static void drain_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct gw *gw = w->data;
    (void)loop;
    (void)revents;

    AL_LOG_WARN("gateway.drain", "reason=\"drain_grace passed; resetting what still runs\"");
    gw_conns_close_all(gw);
}

static void on_drain(struct al_service *svc)
{
    struct gw *gw = svc->user;

    gw->draining = 1;
    al_service_hold(svc);
    AL_LOG_INFO("gateway.drain", "connections=%zu grace_s=%g", gw->nconns, gw->cfg.drain_grace_s);
    ev_timer_init(&gw->drain_w, drain_timeout_cb, gw->cfg.drain_grace_s, 0.);
    gw->drain_w.data = gw;
    ev_timer_start(svc->loop, &gw->drain_w);
    gw_conns_drain(gw);
    if (!gw->conns)
        conns_drained(gw);
}

/* ---------- main ---------- */

static void shutdown_all(struct gw *gw, struct ev_loop *loop)
{
    if (gw->conns && loop) {
        gw_conns_close_all(gw);
        for (int i = 0; i < 100 && gw->conns; i++)
            ev_run(loop, EVRUN_NOWAIT); /* let the closed connections be reaped */
    }
    gw_conns_free(gw);
    gw_cred_free(gw);
    if (loop)
        ev_run(loop, EVRUN_NOWAIT); /* the credstore connection */
    upstreams_free(gw);
    gw_sessions_free(gw->sessions);
    gw->sessions = NULL;
    al_tls_free(gw->relay_tls);
    al_tls_free(gw->cs_tls);
    al_grant_keyring_free(gw->keyring);
}

int main(int argc, char **argv)
{
    static struct gw gw;
    size_t nf;
    const struct al_cfg_field *fields = gw_config_fields(&nf);
    char **args = calloc((size_t)argc + 1, sizeof(char *));
    int check, rc, nargs;

    if (!args)
        return 2;
    /* the gateway's own checks (prepare) run before "config ok" */
    nargs = al_service_strip_check(argc, argv, args, &check);
    rc = al_service_load_config("airlock-gateway", summary, &gw.cfg,
                                offsetof(struct gw_config, common), fields, nf, nargs, args);
    free(args);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    al_log_set_service("gateway");
    free(gw.cfg.common.listen); /* egress only: no gRPC listener, whatever `listen` says */
    gw.cfg.common.listen = strdup("");
    rc = gw.cfg.common.listen ? prepare(&gw, EV_DEFAULT) : AL_ERR_NOMEM;
    if (rc == 0 && check) {
        printf("config ok\n");
        goto out;
    }
    if (rc < 0)
        goto out;
    rc = al_service_init(&gw.svc, "gateway", &gw.cfg.common);
    if (rc < 0)
        goto out;
    gw.svc.user = &gw;
    gw.svc.ready = ready;
    gw.svc.on_drain = on_drain;
    gw.svc.on_reload = reload;
    gw.on_conns_drained = conns_drained;
    metrics(&gw);
    if ((rc = client_tls(&gw)) < 0 ||
        (rc = gw_sessions_new(SESSIONS_CAP, SESSIONS_IDLE_S, &gw.sessions)) < 0 ||
        (rc = gw_cred_init(&gw)) < 0 || (rc = gw_conns_start(&gw)) < 0)
        goto out;
    AL_LOG_INFO("gateway.start",
                "self=%s gateway_id=%s instance=%s relays=%zu routes=%zu "
                "credstore=%s",
                gw.self_id, gw.gateway_id, gw.instance_id, gw.nrelays, gw.cfg.routes.n,
                gw.cfg.credstore_addr);
    rc = al_service_run(&gw.svc);
out:
    shutdown_all(&gw, gw.svc.loop ? gw.svc.loop : NULL);
    al_service_cleanup(&gw.svc);
    al_service_free_config(&gw.cfg, offsetof(struct gw_config, common), fields, nf);
    return rc < 0 ? 1 : 0;
}
