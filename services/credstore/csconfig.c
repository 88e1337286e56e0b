/*
 * csconfig: schema of airlock-credstore's own keys and the issuers list
 * (parsed by a custom libconfig parser so every entry is checked with its
 * file:line); see csconfig.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "al_grant.h"
#include "csconfig.h"

#define CC(member, type) AL_CFG_OFF(struct cs_config, member, type)

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void issuers_free(void *field)
{
    struct cs_issuers *is = field;
    for (size_t i = 0; i < is->n; i++) {
        struct cs_issuer_cfg *c = &is->v[i];
        free(c->key_id);
        free(c->issuer);
        free(c->public_key_file);
        free_list(c->principals, c->n_principals);
        free_list(c->pools, c->n_pools);
        free_list(c->routes, c->n_routes);
        free_list(c->credentials, c->n_credentials);
    }
    free(is->v);
    is->v = NULL;
    is->n = 0;
}

static int get_string(const config_setting_t *g, const char *key, int required, char **out,
                      char *err, size_t errlen)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (!s) {
        if (required)
            return al_config_errf(err, errlen, g, "issuers: entry needs %s", key);
        return 0;
    }
    const char *v = config_setting_get_string(s);
    if (!v || !*v)
        return al_config_errf(err, errlen, s, "must be a non-empty string");
    *out = strdup(v);
    return *out ? 0 : AL_ERR_NOMEM;
}

static int get_list(const config_setting_t *g, const char *key, char ***out, size_t *n, char *err,
                    size_t errlen)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    *out = NULL;
    *n = 0;
    if (!s)
        return 0; /* empty: allows nothing */
    if (!config_setting_is_aggregate(s) || config_setting_is_group(s))
        return al_config_errf(err, errlen, s, "must be a list of strings");
    int len = config_setting_length(s);
    *out = calloc((size_t)len + 1, sizeof(char *));
    if (!*out)
        return AL_ERR_NOMEM;
    for (int i = 0; i < len; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *v = config_setting_get_string(e);
        if (!v || !*v || strlen(v) > CS_GLOB_MAX)
            return al_config_errf(err, errlen, e, "must be a non-empty string (a glob)");
        (*out)[i] = strdup(v);
        if (!(*out)[i])
            return AL_ERR_NOMEM;
        (*n)++;
    }
    return 0;
}

static int parse_issuers(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    static const char *const known[] = {"key_id", "issuer", "public_key_file", "principals",
                                        "pools",  "routes", "credentials"};
    struct cs_issuers *is = field;
    int rc;

    if (!config_setting_is_list(s))
        return al_config_errf(err, errlen, s, "must be a list of groups ( { ... }, ... )");
    int len = config_setting_length(s);
    is->v = calloc((size_t)len + 1, sizeof(*is->v));
    if (!is->v)
        return AL_ERR_NOMEM;
    for (int i = 0; i < len; i++) {
        const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
        struct cs_issuer_cfg *c = &is->v[i];
        if (!config_setting_is_group(g))
            return al_config_errf(err, errlen, g, "issuers: each entry must be a group { ... }");
        is->n++;
        for (int j = 0; j < config_setting_length(g); j++) {
            const config_setting_t *m = config_setting_get_elem(g, (unsigned)j);
            const char *name = config_setting_name(m);
            size_t k = 0;
            while (k < sizeof(known) / sizeof(known[0]) && strcmp(known[k], name) != 0)
                k++;
            if (k == sizeof(known) / sizeof(known[0]))
                return al_config_errf(err, errlen, m, "unknown key in an issuers entry");
        }
        if ((rc = get_string(g, "issuer", 1, &c->issuer, err, errlen)) < 0 ||
            (rc = get_string(g, "public_key_file", 1, &c->public_key_file, err, errlen)) < 0 ||
            (rc = get_string(g, "key_id", 0, &c->key_id, err, errlen)) < 0 ||
            (rc = get_list(g, "principals", &c->principals, &c->n_principals, err, errlen)) < 0 ||
            (rc = get_list(g, "pools", &c->pools, &c->n_pools, err, errlen)) < 0 ||
            (rc = get_list(g, "routes", &c->routes, &c->n_routes, err, errlen)) < 0 ||
            (rc = get_list(g, "credentials", &c->credentials, &c->n_credentials, err, errlen)) < 0)
            return rc;
    }
    return 0;
}

static const struct al_cfg_field fields[] = {
    {"data_dir", AL_CFG_STRING, CC(data_dir, char *), NULL,
     "directory of credstore.db and audit.head (created 0700)", 0, 0, 1, NULL, NULL},
    {"master_key_file", AL_CFG_STRING, CC(master_key_file, char *), NULL,
     "file holding the master key (airlockctl keys gen-master)", 0, 0, 1, NULL, NULL},
    {"previous_master_key_files", AL_CFG_STRLIST, CC(previous_master_key_files, char **), "",
     "older master keys still accepted while rows are re-wrapped (keys rotate-master)", 0, 0, 0,
     NULL, NULL},
    {"grant.max_skew", AL_CFG_DURATION_MS, CC(max_skew_ms, long long), "30s",
     "clock skew tolerated on grant validity windows", 0, 300000, 0, NULL, NULL},
    {"grant.max_lifetime", AL_CFG_DURATION_MS, CC(max_lifetime_ms, long long), "1h",
     "longest grant lifetime accepted when a credential's policy sets none", 1000, 86400000, 0,
     NULL, NULL},
    {"resolve.max_ttl", AL_CFG_DURATION_MS, CC(max_ttl_ms, long long), "5m",
     "longest time an edge may use a released value (capped by the grant's expiry)", 1000, 3600000,
     0, NULL, NULL},
    {"issuers", AL_CFG_CUSTOM, CC(issuers, struct cs_issuers), NULL,
     "trusted grant issuers: ( { key_id; issuer; public_key_file; principals; pools; routes; "
     "credentials; } )",
     0, 0, 0, parse_issuers, issuers_free},
};

const struct al_cfg_field *cs_config_fields(size_t *n)
{
    *n = sizeof(fields) / sizeof(fields[0]);
    return fields;
}

int cs_config_build(const struct cs_config *cfg, struct al_grant_keyring **kr,
                    struct cs_issuer_scope **scopes, char *err, size_t errlen)
{
    int rc = al_grant_keyring_new(kr);
    *scopes = NULL;
    if (rc < 0)
        return rc;
    *scopes = calloc(cfg->issuers.n + 1, sizeof(**scopes));
    if (!*scopes) {
        rc = AL_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < cfg->issuers.n; i++) {
        const struct cs_issuer_cfg *c = &cfg->issuers.v[i];
        rc = al_grant_keyring_add_pem(*kr, c->key_id, c->issuer, c->public_key_file);
        if (rc < 0) {
            snprintf(err, errlen, "issuers[%zu] (%s): cannot trust key %s: %s", i, c->issuer,
                     c->public_key_file, al_strerror(rc));
            rc = AL_ERR_CONFIG;
            goto out;
        }
        struct cs_issuer_scope *s = &(*scopes)[i];
        s->issuer = c->issuer;
        s->key_id = c->key_id;
        s->principals = (const char *const *)c->principals;
        s->n_principals = c->n_principals;
        s->pools = (const char *const *)c->pools;
        s->n_pools = c->n_pools;
        s->routes = (const char *const *)c->routes;
        s->n_routes = c->n_routes;
        s->credentials = (const char *const *)c->credentials;
        s->n_credentials = c->n_credentials;
    }
    return 0;
out:
    cs_config_free_built(*kr, *scopes);
    *kr = NULL;
    *scopes = NULL;
    return rc;
}

void cs_config_free_built(struct al_grant_keyring *kr, struct cs_issuer_scope *scopes)
{
    al_grant_keyring_free(kr);
    free(scopes);
}
