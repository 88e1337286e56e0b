/*
 * airlock-credstore: the only place a real credential lives at rest.
 *
 * Startup checklist: load config (common keys + csconfig.h), load the master
 * key(s), open the store (refuses a database under another master key),
 * trust the configured grant issuers, read our own SPIFFE id (the audience
 * grants must name), register CredentialAdmin, CredentialResolver and health,
 * serve. SIGHUP reloads TLS files; SIGTERM drains.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "al_err.h"
#include "al_log.h"
#include "al_pki.h"
#include "svc.h"

static int load_masters(struct cs_svc *cs, struct cs_keyring *ring)
{
    int rc = cs_master_load(cs->cfg.master_key_file, &cs->master);
    if (rc < 0) {
        fprintf(stderr, "airlock-credstore: master_key_file %s: %s\n", cs->cfg.master_key_file,
                al_strerror(rc));
        return rc;
    }
    size_t n = 0;
    while (cs->cfg.previous_master_key_files && cs->cfg.previous_master_key_files[n])
        n++;
    cs->previous = calloc(n + 1, sizeof(*cs->previous));
    if (!cs->previous)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        rc = cs_master_load(cs->cfg.previous_master_key_files[i], &cs->previous[i]);
        if (rc < 0) {
            fprintf(stderr, "airlock-credstore: previous_master_key_files[%zu] %s: %s\n", i,
                    cs->cfg.previous_master_key_files[i], al_strerror(rc));
            return rc;
        }
        cs->n_previous++;
    }
    ring->primary = cs->master;
    ring->previous = (const struct cs_master *const *)cs->previous;
    ring->n_previous = cs->n_previous;
    return 0;
}

/* The audience grants must name: our own certificate's SPIFFE id. */
static int self_identity(struct cs_svc *cs)
{
    X509 *cert = NULL;
    if (cs->cfg.common.insecure || !cs->cfg.common.tls_cert_file) {
        snprintf(cs->self_id, sizeof(cs->self_id), "spiffe://airlock/credstore/insecure");
        return 0;
    }
    int rc = al_pki_load_cert(cs->cfg.common.tls_cert_file, &cert);
    if (rc == 0)
        rc = al_pki_spiffe_id(cert, cs->self_id, sizeof(cs->self_id));
    X509_free(cert);
    if (rc < 0)
        fprintf(stderr, "airlock-credstore: tls.cert_file has no SPIFFE id: %s\n", al_strerror(rc));
    return rc;
}

static int ready(struct al_service *svc, char *why, size_t n)
{
    struct cs_svc *cs = svc->user;
    const char *problem = cs_audit_problem(cs->audit);
    if (problem && problem[0]) {
        snprintf(why, n, "audit chain broken: %s", problem);
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    static struct cs_svc cs;
    struct cs_keyring ring = {0};
    size_t nf;
    const struct al_cfg_field *fields = cs_config_fields(&nf);
    char err[512];
    int rc;

    rc =
        al_service_load_config("airlock-credstore",
                               "credential store: secrets encrypted at rest, released only to "
                               "the holder of a valid grant, every use audited",
                               &cs.cfg, offsetof(struct cs_config, common), fields, nf, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    al_log_set_service("credstore");
    rc = cs_config_build(&cs.cfg, &cs.keyring, &cs.scopes, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "airlock-credstore: %s\n", err);
        goto out;
    }
    if ((rc = self_identity(&cs)) < 0 || (rc = load_masters(&cs, &ring)) < 0)
        goto out;
    struct cs_store_opts so = {.data_dir = cs.cfg.data_dir, .keys = ring};
    rc = cs_store_open(&so, &cs.store);
    if (rc < 0) {
        fprintf(stderr, "airlock-credstore: cannot open the store in %s: %s\n", cs.cfg.data_dir,
                al_strerror(rc));
        goto out;
    }
    cs.audit = cs_store_audit(cs.store);
    rc = al_service_init(&cs.svc, "credstore", &cs.cfg.common);
    if (rc < 0)
        goto out;
    cs.svc.user = &cs;
    cs.svc.ready = ready;
    rc = cs_svc_start(&cs);
    if (rc == 0) {
        AL_LOG_INFO("credstore.start", "self=%s master_key_id=%s previous_keys=%zu issuers=%zu",
                    cs.self_id, cs_master_key_id(cs.master), cs.n_previous, cs.cfg.issuers.n);
        rc = al_service_run(&cs.svc);
    }
    cs_svc_stop(&cs);
out:
    al_service_cleanup(&cs.svc);
    cs_store_close(cs.store);
    cs_master_free(cs.master);
    for (size_t i = 0; i < cs.n_previous; i++)
        cs_master_free(cs.previous[i]);
    free(cs.previous);
    cs_config_free_built(cs.keyring, cs.scopes);
    al_service_free_config(&cs.cfg, offsetof(struct cs_config, common), fields, nf);
    return rc < 0 ? 1 : 0;
}
