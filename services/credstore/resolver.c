/*
 * resolver: airlock.v1.CredentialResolver, for edge identities only
 * (executors and gateways).
 *
 * Resolve: the grant must verify (Ed25519, known key id, issuer of that key,
 * audience = this credstore, holder = the calling identity, inside its
 * validity window), name the credential and the destination, and pass the
 * credential's policy and the operator's issuer scopes (policy.h). Every
 * Resolve, allowed or denied, is a record of the audit chain, and the value
 * leaves only after that record is durable (svc.h); if the write fails the
 * request is denied and the value wiped unsent.
 *
 * AppendAudit: an edge records its own uses of a cached value; each record
 * must refer to a grant in the batch that verifies and names the caller as
 * holder. A batch id already committed for this caller is acknowledged
 * without being appended twice.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "airlock/v1/credstore.pb-c.h"
#include "airlock/v1/grant.pb-c.h"
#include "al_err.h"
#include "al_grant.h"
#include "al_log.h"
#include "al_metrics.h"
#include "crypto.h"
#include "dest.h"
#include "svc.h"

#define ACT(x)    AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_##x
#define REASON(x) AIRLOCK__V1__ERROR_REASON__ERROR_REASON_##x
#define DENY      AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_DENY
#define MAX_BATCH 1000

static int edge_role(const char *caller)
{
    char role[32];
    cs_role_of(caller, role, sizeof(role));
    return strcmp(role, "executor") == 0 || strcmp(role, "gateway") == 0;
}

static struct cs_waiter *waiter_new(struct al_grpc_call *call)
{
    struct cs_waiter *w = al_arena_alloc(al_grpc_call_arena(call), sizeof(*w));
    if (w) {
        memset(w, 0, sizeof(*w));
        w->call = call;
    }
    return w;
}

/* Packs a SignedGrant message back into the bytes al_grant_verify() takes;
 * the signature covers the inner grant bytes, which pass through unchanged. */
static uint8_t *pack_grant(struct al_grpc_call *call, const Airlock__V1__SignedGrant *sg,
                           size_t *len)
{
    *len = airlock__v1__signed_grant__get_packed_size(sg);
    if (*len > AL_GRANT_MAX_SIZE)
        return NULL;
    uint8_t *buf = al_arena_alloc(al_grpc_call_arena(call), *len ? *len : 1);
    if (buf)
        airlock__v1__signed_grant__pack(sg, buf);
    return buf;
}

static Airlock__V1__ErrorReason grant_reason(int rc, const char *why)
{
    switch (rc) {
    case AL_ERR_EXPIRED:
        return REASON(GRANT_EXPIRED);
    case AL_ERR_AUTH:
        if (strstr(why, "audience"))
            return REASON(GRANT_AUDIENCE_MISMATCH);
        if (strstr(why, "holder"))
            return REASON(GRANT_HOLDER_MISMATCH);
        return REASON(GRANT_INVALID);
    default:
        return REASON(GRANT_INVALID);
    }
}

/* Everything one Resolve decides, gathered for its audit record. */
struct resolve_ctx {
    struct cs_svc *cs;
    struct al_grpc_call *call;
    const Airlock__V1__ResolveRequest *req;
    Airlock__V1__AuditRecord rec;
    char dest_canon[300];
};

static void resolve_deny(struct resolve_ctx *x, int status, Airlock__V1__ErrorReason reason,
                         const char *why, const char *msg, uint8_t *secret)
{
    struct cs_waiter *w = waiter_new(x->call);
    if (secret)
        cs_secure_free(secret);
    al_metric_add(x->cs->m_resolve_deny, 1);
    if (!w) {
        cs_finish_error(x->call, AL_GRPC_RESOURCE_EXHAUSTED, REASON(INTERNAL), NULL,
                        "out of memory");
        return;
    }
    x->rec.decision = DENY;
    x->rec.reason = (char *)why;
    w->status = status;
    w->reason = reason;
    snprintf(w->message, sizeof(w->message), "%s", msg);
    AL_LOG_INFO("credstore.resolve", "decision=deny caller=%s credential=%s reason=%s",
                x->rec.caller[0] ? x->rec.caller : "-", x->rec.credential, why);
    cs_svc_await_audit(x->cs, w, &x->rec);
}

static void fill_from_grant(Airlock__V1__AuditRecord *rec, const Airlock__V1__Grant *g)
{
    rec->issuer = g->issuer;
    rec->principal = g->principal;
    rec->grant_id = g->grant_id;
    rec->subject = g->subject;
    rec->scope = g->scope;
}

static void canon_dest(struct resolve_ctx *x)
{
    struct cs_dest d;
    const char *s = x->req->destination ? x->req->destination : "";
    if (cs_dest_parse(s, strlen(s), CS_DEST_REQUEST, &d) == 0 &&
        cs_dest_format(&d, x->dest_canon, sizeof(x->dest_canon)) > 0)
        x->rec.destination = x->dest_canon;
    else
        x->rec.destination = "(invalid)";
}

static void resolve_allow(struct resolve_ctx *x, const Airlock__V1__Grant *g, uint8_t *value,
                          const struct cs_value_info *info)
{
    struct al_arena *a = al_grpc_call_arena(x->call);
    struct cs_waiter *w = waiter_new(x->call);
    Airlock__V1__ResolveResponse *resp = al_arena_alloc(a, sizeof(*resp));
    int64_t now = cs_now_ms();

    if (!w || !resp) {
        cs_secure_free(value);
        cs_finish_error(x->call, AL_GRPC_RESOURCE_EXHAUSTED, REASON(INTERNAL), NULL,
                        "out of memory");
        return;
    }
    airlock__v1__resolve_response__init(resp);
    int64_t expires = g->expires_ms;
    if (expires > now + x->cs->cfg.max_ttl_ms)
        expires = now + x->cs->cfg.max_ttl_ms;
    if (info->grace_end_ms && info->grace_end_ms < expires)
        expires = info->grace_end_ms;
    resp->value.data = value;
    resp->value.len = info->len;
    resp->version = info->version;
    resp->type = info->type;
    resp->template_ = info->tmpl;
    resp->expires_ms = expires;
    resp->ttl_ms = expires > now ? expires - now : 0;
    w->reply = &resp->base;
    w->secret = value; /* wiped once the reply is packed, or on failure */
    w->audit_seq_out = &resp->audit_seq;
    x->rec.version = info->version;
    al_metric_add(x->cs->m_resolve_allow, 1);
    AL_LOG_INFO("credstore.resolve", "decision=allow caller=%s credential=%s version=%d grant=%s",
                x->rec.caller, x->rec.credential, info->version, g->grant_id);
    cs_svc_await_audit(x->cs, w, &x->rec);
}

static void resolve_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct resolve_ctx x = {.cs = user, .call = call, .req = (const void *)req};
    struct cs_svc *cs = x.cs;
    const char *caller = al_grpc_call_peer_id(call);
    Airlock__V1__Grant *g = NULL;
    char why[CS_WHY_MAX > 128 ? CS_WHY_MAX : 128];
    size_t glen = 0;

    airlock__v1__audit_record__init(&x.rec);
    x.rec.action = ACT(RESOLVE);
    x.rec.caller = (char *)caller;
    x.rec.credential = x.req->credential ? x.req->credential : "";
    x.rec.decision = AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW;
    canon_dest(&x);
    if (!edge_role(caller)) {
        resolve_deny(&x, AL_GRPC_PERMISSION_DENIED, REASON(IDENTITY_NOT_ALLOWED), "caller_role",
                     "Resolve is only for executor and gateway identities", NULL);
        return;
    }
    if (!x.req->grant || !x.req->credential[0] || !x.req->destination[0]) {
        resolve_deny(&x, AL_GRPC_INVALID_ARGUMENT, REASON(INVALID_FIELD), "bad_request",
                     "grant, credential and destination are required", NULL);
        return;
    }
    uint8_t *gbytes = pack_grant(call, x.req->grant, &glen);
    struct al_grant_expect want;
    al_grant_expect_init(&want, cs->self_id, caller);
    want.max_skew_ms = cs->cfg.max_skew_ms;
    int rc = gbytes ? al_grant_verify(cs->keyring, gbytes, glen, &want, cs_now_ms(), &g, why,
                                      sizeof(why))
                    : AL_ERR_TOOBIG;
    if (rc < 0) {
        char msg[160];
        Airlock__V1__Grant *seen = NULL;
        snprintf(msg, sizeof(msg), "grant refused: %s", gbytes ? why : "too large");
        /* a grant that failed after its signature verified (time, audience,
         * holder, issuer) is still named in the record; a forged one is not */
        if (rc == AL_ERR_EXPIRED || rc == AL_ERR_AUTH) {
            seen =
                airlock__v1__grant__unpack(NULL, x.req->grant->grant.len, x.req->grant->grant.data);
            if (seen)
                fill_from_grant(&x.rec, seen);
        }
        resolve_deny(&x,
                     (rc == AL_ERR_INVAL || rc == AL_ERR_TOOBIG) ? AL_GRPC_INVALID_ARGUMENT
                                                                 : AL_GRPC_PERMISSION_DENIED,
                     grant_reason(rc, why),
                     rc == AL_ERR_EXPIRED ? "grant_expired" : "grant_invalid", msg, NULL);
        if (seen)
            airlock__v1__grant__free_unpacked(seen, NULL);
        return;
    }
    fill_from_grant(&x.rec, g);
    uint8_t *value = cs_secure_alloc(CS_VALUE_MAX);
    struct cs_value_info info = {0};
    enum cs_why swhy = CS_WHY_NONE;
    rc = value ? cs_store_get_value(cs->store, x.req->credential, 0, cs_now_ms(), value,
                                    CS_VALUE_MAX, al_grpc_call_arena(call), &info, &swhy)
               : AL_ERR_NOMEM;
    if (rc < 0) {
        resolve_deny(&x, rc == AL_ERR_NOTFOUND ? AL_GRPC_NOT_FOUND : AL_GRPC_FAILED_PRECONDITION,
                     rc == AL_ERR_NOTFOUND ? REASON(NOT_FOUND) : REASON(POLICY_DENIED),
                     swhy != CS_WHY_NONE ? cs_why_str(swhy) : al_strerror(rc),
                     "credential not available", value);
        goto out;
    }
    struct cs_policy_input pin = {.grant = g,
                                  .key_id = x.req->grant->key_id,
                                  .caller = caller,
                                  .credential = x.req->credential,
                                  .destination = x.req->destination,
                                  .destination_len = strlen(x.req->destination),
                                  .policy = info.policy,
                                  .allow_plain_http = info.tmpl && info.tmpl->allow_plain_http,
                                  .default_max_lifetime_ms = cs->cfg.max_lifetime_ms,
                                  .scopes = cs->scopes,
                                  .n_scopes = cs->cfg.issuers.n};
    rc = cs_policy_check(&pin, why, sizeof(why));
    if (rc != CS_ALLOW) {
        char msg[160];
        snprintf(msg, sizeof(msg), "denied by policy: %s", why);
        resolve_deny(&x, AL_GRPC_PERMISSION_DENIED, cs_deny_error_reason(rc), cs_deny_name(rc), msg,
                     value);
        goto out;
    }
    /* the record points into g: cs_audit_append() copies it before g is freed */
    resolve_allow(&x, g, value, &info);
out:
    al_grant_free(g);
}

/* ---------- AppendAudit ---------- */

static const Airlock__V1__Grant *find_grant(Airlock__V1__Grant **gs, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (gs[i] && strcmp(gs[i]->grant_id, id) == 0)
            return gs[i];
    return NULL;
}

/* Verifies an edge's grant ignoring expiry (records arrive after the use). */
static int verify_for_audit(struct cs_svc *cs, struct al_grpc_call *call,
                            const Airlock__V1__SignedGrant *sg, Airlock__V1__Grant **out)
{
    size_t len = 0;
    uint8_t *bytes = pack_grant(call, sg, &len);
    Airlock__V1__Grant *peek;
    char why[128];
    struct al_grant_expect want;

    *out = NULL;
    if (!bytes || !sg->grant.data)
        return AL_ERR_INVAL;
    peek = airlock__v1__grant__unpack(NULL, sg->grant.len, sg->grant.data);
    if (!peek)
        return AL_ERR_INVAL;
    int64_t at = peek->not_before_ms;
    airlock__v1__grant__free_unpacked(peek, NULL);
    al_grant_expect_init(&want, cs->self_id, al_grpc_call_peer_id(call));
    /* the signature, key, issuer, audience and holder are still checked */
    return al_grant_verify(cs->keyring, bytes, len, &want, at, out, why, sizeof(why));
}

static void append_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct cs_svc *cs = user;
    const Airlock__V1__AppendAuditRequest *r = (const void *)req;
    const char *caller = al_grpc_call_peer_id(call);
    Airlock__V1__Grant **gs = NULL;
    struct al_arena *a = al_grpc_call_arena(call);
    int64_t first = 0, last = 0;
    int32_t count = 0;

    if (!edge_role(caller)) {
        cs_finish_error(call, AL_GRPC_PERMISSION_DENIED, REASON(IDENTITY_NOT_ALLOWED), NULL,
                        "AppendAudit is only for executor and gateway identities");
        return;
    }
    if (!r->batch_id || strlen(r->batch_id) != 32 || r->n_records == 0 ||
        r->n_records > MAX_BATCH) {
        cs_finish_error(call, AL_GRPC_INVALID_ARGUMENT, REASON(INVALID_FIELD), "batch_id",
                        "batch_id must be 32 hex digits and records 1..1000");
        return;
    }
    Airlock__V1__AppendAuditResponse *resp = al_arena_alloc(a, sizeof(*resp));
    if (!resp)
        goto nomem;
    airlock__v1__append_audit_response__init(resp);
    cs_svc_commit(cs); /* so a batch sent twice in one loop turn is found */
    if (cs_audit_find_batch(cs->audit, caller, r->batch_id, cs_now_ms() - 24 * 3600 * 1000LL,
                            &first, &last, &count) == 0) {
        resp->accepted = count;
        resp->first_seq = first;
        resp->last_seq = last;
        resp->duplicate = 1;
        al_grpc_call_reply(call, &resp->base);
        return;
    }
    gs = calloc(r->n_grants + 1, sizeof(*gs));
    if (!gs)
        goto nomem;
    for (size_t i = 0; i < r->n_grants; i++) {
        if (verify_for_audit(cs, call, r->grants[i], &gs[i]) < 0) {
            cs_finish_error(call, AL_GRPC_PERMISSION_DENIED, REASON(GRANT_INVALID), "grants",
                            "a grant of the batch does not verify for this caller");
            goto out;
        }
    }
    struct cs_waiter *w = waiter_new(call);
    if (!w)
        goto nomem;
    for (size_t i = 0; i < r->n_records; i++) {
        const Airlock__V1__EdgeUseRecord *e = r->records[i];
        const Airlock__V1__Grant *g = find_grant(gs, r->n_grants, e->grant_id ? e->grant_id : "");
        if (!g) {
            cs_finish_error(call, AL_GRPC_INVALID_ARGUMENT, REASON(INVALID_FIELD), "records",
                            "a record names a grant that is not in the batch");
            goto out;
        }
    }
    for (size_t i = 0; i < r->n_records; i++) {
        const Airlock__V1__EdgeUseRecord *e = r->records[i];
        const Airlock__V1__Grant *g = find_grant(gs, r->n_grants, e->grant_id);
        Airlock__V1__AuditRecord rec = AIRLOCK__V1__AUDIT_RECORD__INIT;
        rec.action = ACT(USE);
        rec.caller = (char *)caller;
        fill_from_grant(&rec, g);
        rec.credential = e->credential;
        rec.version = e->version;
        rec.destination = e->destination;
        rec.method = e->method;
        rec.path = e->path;
        rec.status = e->status;
        rec.request_bytes = e->request_bytes;
        rec.response_bytes = e->response_bytes;
        rec.decision =
            e->decision ? e->decision : AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW;
        rec.reason = e->reason;
        rec.edge_time_ms = e->time_ms;
        rec.request_id = e->request_id;
        rec.tool = e->tool;
        rec.batch_id = r->batch_id;
        size_t idx;
        if (cs_audit_append(cs->audit, &rec, &idx) < 0) {
            cs_finish_error(call, AL_GRPC_UNAVAILABLE, REASON(AUDIT_UNAVAILABLE), NULL,
                            "the audit log cannot take this batch");
            goto out;
        }
        if (i == 0)
            w->audit_index = idx;
    }
    resp->accepted = (int32_t)r->n_records;
    w->reply = &resp->base;
    w->audit_seq_out = &resp->first_seq;
    w->audit_last_out = &resp->last_seq;
    w->audit_count = r->n_records;
    w->next = NULL;
    *cs->waiting_tail = w;
    cs->waiting_tail = &w->next;
    goto out;
nomem:
    cs_finish_error(call, AL_GRPC_RESOURCE_EXHAUSTED, REASON(INTERNAL), NULL, "out of memory");
out:
    if (gs) {
        for (size_t i = 0; i < r->n_grants; i++)
            al_grant_free(gs[i]);
        free(gs);
    }
}

int cs_resolver_register(struct cs_svc *cs)
{
    static const struct al_grpc_method_impl impls[] = {{"Resolve", resolve_cb, 1},
                                                       {"AppendAudit", append_cb, 0}};
    return al_grpc_server_add_service(cs->svc.grpc, &airlock__v1__credential_resolver__descriptor,
                                      impls, 2, cs);
}
