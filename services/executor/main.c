/*
 * airlock-executor: runs intake's jobs in sandboxes inside the perimeter.
 *
 * Startup: load config (common keys + exconfig.h), read our SPIFFE id from
 * our certificate (intake names it as lease holder), probe the sandbox host
 * (namespaces, cgroups: which mechanism enforces which limit), pick a random
 * instance id, open a client channel to intake (mTLS, intake's identity
 * checked), with egress.enabled start the egress proxy (egress.c) and the
 * credstore link, open the Lease stream, start heartbeats. The executor
 * does not listen for gRPC (listen = "" by default): only the ops port
 * (/metrics, /healthz, /readyz; not ready without a Lease stream or while
 * the egress proxy is down) is served. --check-config also runs the
 * cross-field checks (ex_config_check).
 * SIGTERM: stop leasing, let running jobs finish for drain.grace, then stop
 * the rest and give them back to intake (Finish with requeue); then the
 * proxy's last use records (JobClosed) and the audit queue are flushed to
 * credstore, then exit.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <openssl/x509.h>

#include "al_err.h"
#include "al_grpc_client.h"
#include "al_log.h"
#include "al_metrics.h"
#include "al_pki.h"
#include "al_tls.h"
#include "egress.h"
#include "executor.h"

ev_tstamp ex_now(const struct ex *ex)
{
    return ev_now(ex->svc.loop);
}

static int self_identity(struct ex *ex)
{
    X509 *cert = NULL;
    int rc;

    if (ex->cfg.common.insecure || !ex->cfg.common.tls_cert_file) {
        fprintf(stderr, "airlock-executor: an executor needs its mTLS identity (tls.cert_file, "
                        "tls.key_file, tls.ca_file): intake trusts executors by certificate\n");
        return AL_ERR_CONFIG;
    }
    rc = al_pki_load_cert(ex->cfg.common.tls_cert_file, &cert);
    if (rc == 0)
        rc = al_pki_spiffe_id(cert, ex->self_id, sizeof(ex->self_id));
    X509_free(cert);
    if (rc < 0) {
        fprintf(stderr, "airlock-executor: tls.cert_file has no SPIFFE id: %s\n", al_strerror(rc));
        return rc;
    }
    if (strncmp(ex->self_id, "spiffe://airlock/executor/", 26) != 0) {
        fprintf(stderr,
                "airlock-executor: %s is not an executor identity "
                "(spiffe://airlock/executor/NAME)\n",
                ex->self_id);
        return AL_ERR_CONFIG;
    }
    return 0;
}

static int make_instance_id(struct ex *ex)
{
    unsigned char r[16];

    if (RAND_bytes(r, sizeof(r)) != 1)
        return AL_ERR_CRYPTO;
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(ex->instance_id + 2 * i, 3, "%02x", r[i]);
    srandom((unsigned)(r[0] | r[1] << 8 | r[2] << 16) ^ (unsigned)getpid());
    return 0;
}

/* SIGHUP or changed TLS files: the client certificate intake and credstore
 * see (and the egress proxy's credstore calls) comes from the new files on
 * the next connection. */
static void on_reload(struct al_service *svc)
{
    struct ex *ex = svc->user;

    if (ex->client_tls && al_tls_reload(ex->client_tls) == 0)
        AL_LOG_INFO("executor.reload", "reason=\"client certificate reloaded; new connections "
                                       "use it\"");
}

static int open_channel(struct ex *ex)
{
    struct al_tls_opts to = {.cert_file = ex->cfg.common.tls_cert_file,
                             .key_file = ex->cfg.common.tls_key_file,
                             .ca_file = ex->cfg.common.tls_ca_file};
    int rc = al_tls_new(&to, &ex->client_tls);

    if (rc < 0) {
        fprintf(stderr, "airlock-executor: client TLS: %s\n", al_strerror(rc));
        return rc;
    }
    struct al_grpc_channel_opts co = {.target = ex->cfg.intake_addr,
                                      .tls = ex->client_tls,
                                      .expect_peer = ex->cfg.intake_peer,
                                      .ping_interval_s = 10,
                                      .max_message_bytes = 16 << 20};
    rc = al_grpc_channel_new(ex->svc.loop, &co, &ex->ch);
    if (rc < 0)
        fprintf(stderr, "airlock-executor: intake.addr %s: %s\n", ex->cfg.intake_addr,
                al_strerror(rc));
    return rc;
}

static void metrics(struct ex *ex)
{
    struct al_metrics *m = ex->svc.metrics;

    ex->m_assigned = al_metrics_counter(m, "airlock_executor_assigned_total",
                                        "attempts received from intake", NULL);
    ex->m_finished = al_metrics_counter(m, "airlock_executor_finished_total",
                                        "attempts whose Finish intake accepted", NULL);
    ex->m_requeued = al_metrics_counter(m, "airlock_executor_requeued_total",
                                        "attempts given back to intake (drain, fencing)", NULL);
    ex->m_lost =
        al_metrics_counter(m, "airlock_executor_lease_lost_total",
                           "attempts stopped because intake said the lease was lost", NULL);
    ex->m_fenced =
        al_metrics_counter(m, "airlock_executor_fenced_total",
                           "attempts stopped because their lease was not extended in time", NULL);
    ex->m_push_fail = al_metrics_counter(m, "airlock_executor_push_failures_total",
                                         "PushEvents calls that failed and were retried", NULL);
    ex->m_running = al_metrics_gauge(m, "airlock_executor_attempts",
                                     "attempts held (running or reporting)", NULL);
    ex->m_lease_connected = al_metrics_gauge(m, "airlock_executor_lease_stream_open",
                                             "1 while the Lease stream to intake is open", NULL);
}

/* ---------- drain ---------- */

/* After drain.grace and this long to report, attempts that still cannot reach
 * intake are abandoned: intake expires their leases and re-queues them. */
#define DRAIN_REPORT_S 10.0

static void drain_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ex *ex = w->data;
    (void)revents;
    if (ex->draining == 1 && ex->drain_phase == 0) {
        ex->drain_phase = 1;
        AL_LOG_WARN("executor.drain", "reason=\"drain.grace passed\" handing_back=%zu",
                    ex->n_attempts);
        for (struct ex_attempt *a = ex->attempts; a; a = a->next)
            ex_attempt_stop(a, EX_STOP_DRAIN, "the executor is shutting down");
        ev_timer_set(w, DRAIN_REPORT_S, 0.);
        ev_timer_start(loop, w);
        return;
    }
    AL_LOG_WARN("executor.drain",
                "reason=\"intake unreachable; abandoning unreported attempts "
                "(their leases expire and intake re-queues them)\" "
                "abandoned=%zu",
                ex->n_attempts);
    for (struct ex_attempt *a = ex->attempts, *next; a; a = next) {
        next = a->next; /* a may be freed here */
        ex_attempt_stop(a, EX_STOP_LOST, "shutting down without contact to intake");
    }
}

static void egress_drained(struct ex *ex)
{
    ex->draining = 3;
    al_service_release(&ex->svc);
}

void ex_maybe_drained(struct ex *ex)
{
    if (!ex->draining || ex->n_attempts)
        return;
    ev_timer_stop(ex->svc.loop, &ex->drain_w);
    if (ex->draining == 1) {
        ex->draining = 2;
        AL_LOG_INFO("executor.drain", "reason=\"every job finished or handed back\"");
        /* then the proxy's last records and the audit queue */
        ex_egress_drain(ex, egress_drained);
    }
}

static void on_drain(struct al_service *svc)
{
    struct ex *ex = svc->user;

    ex->draining = 1;
    al_service_hold(svc);
    ex_lease_stop(ex);
    AL_LOG_INFO("executor.drain", "running=%zu grace_ms=%lld", ex->n_attempts,
                ex->cfg.drain_grace_ms);
    ev_timer_init(&ex->drain_w, drain_timeout_cb, (double)ex->cfg.drain_grace_ms / 1000.0, 0.);
    ex->drain_w.data = ex;
    ev_timer_start(svc->loop, &ex->drain_w);
    ex_maybe_drained(ex);
}

static int ready(struct al_service *svc, char *why, size_t n)
{
    struct ex *ex = svc->user;

    if (!ex->lease_connected) {
        snprintf(why, n, "no Lease stream to intake at %s", ex->cfg.intake_addr);
        return 0;
    }
    if (ex->cfg.egress_enabled && !ex_egress_up(ex->egress)) {
        snprintf(why, n, "the egress proxy is not running (it is being restarted)");
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    static struct ex ex;
    size_t nf;
    const struct al_cfg_field *fields = ex_config_fields(&nf);
    char why[512], **args = calloc((size_t)argc + 1, sizeof(char *));
    int rc, check, nargs;

    if (!args)
        return 2;
    /* ex_config_check() runs before "config ok" */
    nargs = al_service_strip_check(argc, argv, args, &check);
    rc = al_service_load_config("airlock-executor",
                                "sandbox executor: leases jobs from airlock-intake (dialling out) "
                                "and runs each in a fresh Linux sandbox",
                                &ex.cfg, offsetof(struct ex_config, common), fields, nf, nargs,
                                args);
    if (rc != 0) {
        free(args);
        return rc > 0 ? 0 : 2;
    }
    free(args);
    if (ex_config_check(&ex.cfg, why, sizeof(why)) < 0) {
        fprintf(stderr, "airlock-executor: %s\n", why);
        al_service_free_config(&ex.cfg, offsetof(struct ex_config, common), fields, nf);
        return 2;
    }
    if (check) {
        printf("config ok\n");
        al_service_free_config(&ex.cfg, offsetof(struct ex_config, common), fields, nf);
        return 0;
    }
    al_log_set_service("executor");
    /* egress only: nothing listens for gRPC, whatever `listen` says */
    free(ex.cfg.common.listen);
    ex.cfg.common.listen = strdup("");
    if ((rc = self_identity(&ex)) < 0 || (rc = make_instance_id(&ex)) < 0)
        goto out;
    rc = al_service_init(&ex.svc, "executor", &ex.cfg.common);
    if (rc < 0)
        goto out;
    ex.svc.user = &ex;
    ex.svc.ready = ready;
    ex.svc.on_drain = on_drain;
    ex.svc.on_reload = on_reload;
    metrics(&ex);
    why[0] = '\0';
    rc = ex_host_new(&ex, why, sizeof(why));
    if (rc < 0) {
        fprintf(stderr, "airlock-executor: sandbox: %s\n", why[0] ? why : al_strerror(rc));
        goto out;
    }
    if ((rc = open_channel(&ex)) < 0)
        goto out;
    if (ex.cfg.egress_enabled) {
        why[0] = '\0';
        rc = ex_egress_start(&ex, why, sizeof(why));
        if (rc < 0) {
            fprintf(stderr, "airlock-executor: egress proxy: %s\n", why[0] ? why : al_strerror(rc));
            goto out;
        }
    }
    ex_heartbeat_start(&ex);
    ex_lease_start(&ex);
    AL_LOG_INFO("executor.start", "self=%s instance=%s intake=%s slots=%d egress=%s", ex.self_id,
                ex.instance_id, ex.cfg.intake_addr, ex.cfg.slots,
                ex.cfg.egress_enabled ? "on" : "off");
    rc = al_service_run(&ex.svc);
    ex_heartbeat_stop(&ex);
    ex_lease_stop(&ex);
out:
    ex_attempts_free_all(&ex);
    ex_egress_free(&ex);
    if (ex.ch) {
        al_grpc_channel_free(ex.ch);
        ev_run(ex.svc.loop, EVRUN_NOWAIT); /* let the closed connection be reaped */
    }
    ex_host_free(&ex);
    al_tls_free(ex.client_tls);
    al_service_cleanup(&ex.svc);
    al_service_free_config(&ex.cfg, offsetof(struct ex_config, common), fields, nf);
    return rc < 0 ? 1 : 0;
}
