/*
 * auth: who is calling. JobService callers present an API key
 * (`authorization: Bearer <key>`, looked up through the key cache) or a
 * client certificate: the admin role acts on any job as principal
 * "admin/<name>"; other identities act as the principal of the first
 * principals rule whose identities match. ExecutorService callers must be
 * executor identities serving at least one pool.
 */
#include <stdio.h>
#include <string.h>

#include "al_log.h"
#include "insvc.h"

#define ALL_SCOPES (IN_SCOPE_SUBMIT | IN_SCOPE_READ | IN_SCOPE_CANCEL)

static const char *scope_name(unsigned scope)
{
    return scope == IN_SCOPE_SUBMIT ? "jobs.submit"
           : scope == IN_SCOPE_READ ? "jobs.read"
                                    : "jobs.cancel";
}

static int unauthenticated(struct al_grpc_call *call, const char *msg)
{
    in_finish_error(call, AL_GRPC_UNAUTHENTICATED, IN_REASON(UNAUTHENTICATED), NULL, msg, 0);
    return -1;
}

static int by_key(struct in_svc *s, struct al_grpc_call *call, const char *v, size_t len,
                  struct in_caller *c)
{
    struct in_apikey_row row;
    const char *key;
    size_t klen;
    char msg[96];
    int rc;

    if (in_apikey_bearer(v, len, &key, &klen) < 0)
        return unauthenticated(call, "the authorization metadata must be \"Bearer <api key>\"");
    rc = in_apikeys_check(s->keys, key, klen, in_now_ms(), &row);
    if (rc < 0) {
        in_finish_error(call, AL_GRPC_UNAVAILABLE, IN_REASON(INTERNAL), NULL,
                        "API keys cannot be read right now; retry", 1000);
        return -1;
    }
    if (rc != IN_KEY_OK) {
        AL_LOG_INFO("intake.auth", "result=refused reason=\"%s\" conn=%llu",
                    in_apikey_verdict_str(rc), (unsigned long long)al_grpc_call_conn_id(call));
        snprintf(msg, sizeof(msg), "API key not accepted (%s)", in_apikey_verdict_str(rc));
        return unauthenticated(call, msg);
    }
    snprintf(c->principal, sizeof(c->principal), "%s", row.principal);
    snprintf(c->key_id, sizeof(c->key_id), "%s", row.id);
    c->auth_method = AIRLOCK__V1__AUTH_METHOD__AUTH_METHOD_API_KEY;
    c->scopes = row.scopes;
    c->rule = in_config_principal(&s->cfg, c->principal);
    return 0;
}

static int by_cert(struct in_svc *s, struct al_grpc_call *call, struct in_caller *c)
{
    const char *peer = al_grpc_call_peer_id(call);
    char role[AL_PKI_ROLE_MAX], name[AL_PKI_NAME_MAX];
    const struct in_principal_rule *r;

    if (!peer[0] || al_pki_parse_spiffe(peer, role, sizeof(role), name, sizeof(name)) < 0)
        return unauthenticated(call, "an API key (authorization: Bearer <key>) or a client "
                                     "certificate allowed to act as a principal is required");
    snprintf(c->key_id, sizeof(c->key_id), "%s", peer);
    c->auth_method = AIRLOCK__V1__AUTH_METHOD__AUTH_METHOD_MTLS;
    if (strcmp(role, "admin") == 0) {
        snprintf(c->principal, sizeof(c->principal), "admin/%s", name);
        c->scopes = ALL_SCOPES;
        c->admin = 1;
        c->rule = in_config_principal(&s->cfg, c->principal);
        return 0;
    }
    r = in_config_identity(&s->cfg, peer);
    if (!r) {
        in_finish_error(call, AL_GRPC_PERMISSION_DENIED, IN_REASON(IDENTITY_NOT_ALLOWED), NULL,
                        "this client identity may not use JobService (present an API key)", 0);
        return -1;
    }
    snprintf(c->principal, sizeof(c->principal), "%s", r->principal);
    c->scopes = ALL_SCOPES;
    c->rule = r;
    return 0;
}

int in_auth_job_caller(struct in_svc *s, struct al_grpc_call *call, unsigned scope,
                       struct in_caller *c)
{
    size_t len = 0;
    const char *authz = al_grpc_call_metadata(call, "authorization", &len);
    char msg[96];

    memset(c, 0, sizeof(*c));
    in_request_begin(call);
    if ((authz ? by_key(s, call, authz, len, c) : by_cert(s, call, c)) < 0)
        return -1;
    if (!(c->scopes & scope)) {
        snprintf(msg, sizeof(msg), "this API key lacks the scope %s", scope_name(scope));
        in_finish_error(call, AL_GRPC_PERMISSION_DENIED, IN_REASON(SCOPE_MISSING), NULL, msg, 0);
        return -1;
    }
    return 0;
}

int in_auth_executor(struct in_svc *s, struct al_grpc_call *call, const char **identity)
{
    const char *peer = al_grpc_call_peer_id(call);
    char role[AL_PKI_ROLE_MAX];

    in_request_begin(call);
    if (peer[0] && al_pki_parse_spiffe(peer, role, sizeof(role), NULL, 0) == 0 &&
        strcmp(role, "executor") == 0) {
        for (size_t i = 0; i < s->cfg.pools.n; i++) {
            if (in_config_pool_serves(&s->cfg.pools.v[i], peer)) {
                *identity = peer;
                return 0;
            }
        }
        in_finish_error(call, AL_GRPC_PERMISSION_DENIED, IN_REASON(IDENTITY_NOT_ALLOWED), NULL,
                        "this executor identity is in no pool", 0);
        return -1;
    }
    in_finish_error(call, AL_GRPC_PERMISSION_DENIED, IN_REASON(IDENTITY_NOT_ALLOWED), NULL,
                    "ExecutorService is for executor identities only", 0);
    return -1;
}

int in_caller_sees(const struct in_caller *c, const struct in_job *j)
{
    return c->admin || strcmp(c->principal, j->principal) == 0;
}
