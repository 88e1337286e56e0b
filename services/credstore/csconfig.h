/*
 * csconfig: airlock-credstore's configuration beyond the common service keys.
 *
 *   data_dir                   directory of credstore.db and audit.head (0700)
 *   master_key_file            the master key (64 hex chars, mode 0600)
 *   previous_master_key_files  keys still accepted for rows not yet re-wrapped
 *   grant.max_skew             clock skew tolerated on grant validity (30s)
 *   grant.max_lifetime         lifetime cap when a policy sets none (1h)
 *   resolve.max_ttl            longest time an edge may use a released value (5m)
 *   audit.head_metric          publish the audit head as a metric (true)
 *   issuers = ( {              trusted grant issuers and what each may assert
 *       key_id = "fe0fc39a7ece97c7";             SignedGrant.key_id (optional: derived)
 *       issuer = "spiffe://airlock/intake/ *";   SPIFFE id or role pattern (no space)
 *       public_key_file = "/path/intake-0.pub";  Ed25519 public key (PEM)
 *       principals = ["*"]; pools = ["ci"]; routes = []; credentials = ["*"];
 *   } );
 *
 * Lifecycle: cs_config_fields() gives the schema for al_service_load_config();
 * cs_config_build() turns the loaded issuers into a keyring and a scope table;
 * cs_config_free() releases what the build made.
 */
#ifndef CS_CONFIG_H
#define CS_CONFIG_H

#include <stddef.h>

#include "al_config.h"
#include "al_service.h"
#include "policy.h"

struct al_grant_keyring;

struct cs_issuer_cfg {
    char *key_id, *issuer, *public_key_file;
    char **principals, **pools, **routes, **credentials;
    size_t n_principals, n_pools, n_routes, n_credentials;
};

struct cs_issuers {
    struct cs_issuer_cfg *v;
    size_t n;
};

struct cs_config {
    struct al_service_config common;
    char *data_dir;
    char *master_key_file;
    char **previous_master_key_files;
    long long max_skew_ms;
    long long max_lifetime_ms;
    long long max_ttl_ms;
    struct cs_issuers issuers;
};

/* The credstore-specific schema (offsets into struct cs_config). */
const struct al_cfg_field *cs_config_fields(size_t *n);

/* Builds the grant keyring and the scope table (parallel to issuers) from cfg.
 * On error writes a reason naming the issuer entry into err. Returns 0,
 * AL_ERR_CONFIG or AL_ERR_NOMEM. */
int cs_config_build(const struct cs_config *cfg, struct al_grant_keyring **kr,
                    struct cs_issuer_scope **scopes, char *err, size_t errlen);

/* Frees what cs_config_build() made. NULL-safe. */
void cs_config_free_built(struct al_grant_keyring *kr, struct cs_issuer_scope *scopes);

#endif
