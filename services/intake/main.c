/*
 * airlock-intake: job intake. Agent platforms submit tool-call jobs
 * (JobService); executors inside the perimeter dial out and lease them
 * (ExecutorService).
 *
 * Startup checklist: load config (common keys + inconfig.h) and check it,
 * open the job store, load the grant signing key (if configured) under our
 * own SPIFFE id as issuer, open the API key cache, build the service
 * runtime, apply the restart grace to leases held before, register
 * JobService, ExecutorService and health, serve. SIGHUP reloads TLS files;
 * SIGTERM drains (Watch and Lease streams end UNAVAILABLE, calls in flight
 * finish, pending changes are committed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "al_err.h"
#include "al_grant.h"
#include "al_log.h"
#include "al_pki.h"
#include "insvc.h"

/* Our SPIFFE id (the grants' issuer) from tls.cert_file. */
static int self_identity(struct in_svc *s)
{
    X509 *cert = NULL;
    int rc;

    if (s->cfg.common.insecure || !s->cfg.common.tls_cert_file) {
        snprintf(s->self_id, sizeof(s->self_id), "spiffe://airlock/intake/insecure");
        return 0;
    }
    rc = al_pki_load_cert(s->cfg.common.tls_cert_file, &cert);
    if (rc == 0)
        rc = al_pki_spiffe_id(cert, s->self_id, sizeof(s->self_id));
    X509_free(cert);
    if (rc == 0 && al_pki_parse_spiffe(s->self_id, NULL, 0, NULL, 0) < 0)
        rc = AL_ERR_INVAL;
    if (rc < 0)
        fprintf(stderr, "airlock-intake: tls.cert_file has no valid SPIFFE id: %s\n",
                al_strerror(rc));
    return rc;
}

static int load_signer(struct in_svc *s)
{
    int rc;
    if (!s->cfg.grant_key_file || !s->cfg.grant_key_file[0])
        return 0;
    rc = al_grant_signer_new(s->cfg.grant_key_file,
                             s->cfg.grant_key_id && s->cfg.grant_key_id[0] ? s->cfg.grant_key_id
                                                                           : NULL,
                             s->self_id, &s->signer);
    if (rc < 0)
        fprintf(stderr, "airlock-intake: grant.key_file %s: %s\n", s->cfg.grant_key_file,
                al_strerror(rc));
    return rc;
}

static int ready(struct al_service *svc, char *why, size_t n)
{
    struct in_svc *s = svc->user;
    if (s->rebuild_pending) {
        snprintf(why, n, "job store unavailable");
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    static struct in_svc s;
    size_t nf;
    const struct al_cfg_field *fields = in_config_fields(&nf);
    char err[512];
    int rc;

    rc = al_service_load_config("airlock-intake",
                                "job intake: agent platforms submit tool-call jobs, executors "
                                "lease them",
                                &s.cfg, offsetof(struct in_config, common), fields, nf, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    al_log_set_service("intake");
    if (in_config_check(&s.cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "airlock-intake: %s\n", err);
        rc = AL_ERR_CONFIG;
        goto out;
    }
    if ((rc = self_identity(&s)) < 0 || (rc = load_signer(&s)) < 0)
        goto out;
    rc = in_store_open(s.cfg.data_dir, 1, &s.store);
    if (rc < 0) {
        fprintf(stderr, "airlock-intake: cannot open the job store in %s: %s\n", s.cfg.data_dir,
                al_strerror(rc));
        goto out;
    }
    if ((rc = in_store_page_key(s.store, s.page_key)) < 0 ||
        (rc = in_apikeys_new(s.store, s.cfg.apikey_cache_ttl_ms, &s.keys)) < 0)
        goto out;
    rc = al_service_init(&s.svc, "intake", &s.cfg.common);
    if (rc < 0)
        goto out;
    s.svc.user = &s;
    s.svc.ready = ready;
    rc = in_svc_start(&s);
    if (rc == 0) {
        AL_LOG_INFO("intake.start",
                    "self=%s pools=%zu principal_rules=%zu grant_key_id=%s "
                    "lease_ttl_ms=%lld restart_grace_ms=%lld",
                    s.self_id, s.cfg.pools.n, s.cfg.principals.n, s.signer ? s.signer->key_id : "-",
                    s.cfg.lease_ttl_ms, s.cfg.restart_grace_ms);
        rc = al_service_run(&s.svc);
    }
    in_svc_stop(&s);
out:
    al_service_cleanup(&s.svc);
    in_apikeys_free(s.keys);
    in_store_close(s.store);
    al_grant_signer_free(s.signer);
    al_service_free_config(&s.cfg, offsetof(struct in_config, common), fields, nf);
    return rc < 0 ? 1 : 0;
}
