/*
 * admin: airlock.v1.CredentialAdmin. Only callers whose certificate carries
 * an admin identity (spiffe://airlock/admin/...) may call it; everyone else
 * gets PERMISSION_DENIED, and the refusal is audited like every call.
 * Changes (Put, Rotate, Delete) are audited inside their own transaction;
 * reads and refusals go through the group commit (svc.h). No call ever
 * returns a value: Put and Rotate take one, nothing gives one back. Put and
 * Rotate are registered as sensitive methods (al_grpc.h): the request bytes,
 * the unpacked request (its arena) and the HTTP/2 and TLS buffers that carried
 * the value are wiped once the call is done.
 */
#include <stdio.h>
#include <string.h>

#include "airlock/v1/credstore.pb-c.h"
#include "al_err.h"
#include "al_log.h"
#include "al_metrics.h"
#include "svc.h"

#define ACT(x)    AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_##x
#define REASON(x) AIRLOCK__V1__ERROR_REASON__ERROR_REASON_##x

static struct cs_waiter *waiter_new(struct al_grpc_call *call)
{
    struct cs_waiter *w = al_arena_alloc(al_grpc_call_arena(call), sizeof(*w));
    if (w) {
        memset(w, 0, sizeof(*w));
        w->call = call;
    }
    return w;
}

static void rec_init(Airlock__V1__AuditRecord *rec, struct al_grpc_call *call, int action,
                     const char *credential)
{
    airlock__v1__audit_record__init(rec);
    rec->caller = (char *)al_grpc_call_peer_id(call);
    rec->action = action;
    rec->credential = (char *)(credential ? credential : "");
    rec->decision = AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW;
}

/* Audits a refusal and answers the call with it after the commit. */
static void deny(struct cs_svc *cs, struct al_grpc_call *call, int action, const char *credential,
                 int status, Airlock__V1__ErrorReason reason, const char *why, const char *msg)
{
    Airlock__V1__AuditRecord rec;
    struct cs_waiter *w = waiter_new(call);
    if (!w) {
        cs_finish_error(call, AL_GRPC_RESOURCE_EXHAUSTED, REASON(INTERNAL), NULL, "out of memory");
        return;
    }
    rec_init(&rec, call, action, credential);
    rec.decision = AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_DENY;
    rec.reason = (char *)why;
    w->status = status;
    w->reason = reason;
    snprintf(w->message, sizeof(w->message), "%s", msg);
    cs_svc_await_audit(cs, w, &rec);
}

/* Answers with reply once the ALLOW record of this read is durable. */
static void allow_read(struct cs_svc *cs, struct al_grpc_call *call, int action,
                       const char *credential, const ProtobufCMessage *reply)
{
    Airlock__V1__AuditRecord rec;
    struct cs_waiter *w = waiter_new(call);
    if (!w) {
        cs_finish_error(call, AL_GRPC_RESOURCE_EXHAUSTED, REASON(INTERNAL), NULL, "out of memory");
        return;
    }
    rec_init(&rec, call, action, credential);
    w->reply = reply;
    cs_svc_await_audit(cs, w, &rec);
}

/* Returns 1 when the caller is an admin; otherwise answers (audited) and returns 0. */
static int require_admin(struct cs_svc *cs, struct al_grpc_call *call, int action,
                         const char *credential)
{
    char role[32];
    cs_role_of(al_grpc_call_peer_id(call), role, sizeof(role));
    if (strcmp(role, "admin") == 0)
        return 1;
    al_metric_add(cs->m_admin_denied, 1);
    AL_LOG_WARN("credstore.admin_denied", "caller=%s method=%s",
                al_grpc_call_peer_id(call)[0] ? al_grpc_call_peer_id(call) : "-",
                al_grpc_call_path(call));
    deny(cs, call, action, credential, AL_GRPC_PERMISSION_DENIED, REASON(IDENTITY_NOT_ALLOWED),
         "caller_role", "CredentialAdmin needs an admin identity (spiffe://airlock/admin/...)");
    return 0;
}

/* Maps a store error to a reply; the failed change is audited as DENY. */
static void store_error(struct cs_svc *cs, struct al_grpc_call *call, int action,
                        const char *credential, int rc, const struct cs_change *chg)
{
    int status = AL_GRPC_INTERNAL;
    Airlock__V1__ErrorReason reason = REASON(INTERNAL);
    char msg[160];
    const char *why = chg->why != CS_WHY_NONE ? cs_why_str(chg->why) : al_strerror(rc);

    switch (rc) {
    case AL_ERR_INVAL:
        status = AL_GRPC_INVALID_ARGUMENT;
        reason = REASON(INVALID_FIELD);
        break;
    case AL_ERR_TOOBIG:
        status = AL_GRPC_INVALID_ARGUMENT;
        reason = REASON(TOO_LARGE);
        break;
    case AL_ERR_EXISTS:
        status = AL_GRPC_ALREADY_EXISTS;
        reason = REASON(ALREADY_EXISTS);
        break;
    case AL_ERR_NOTFOUND:
        status = AL_GRPC_NOT_FOUND;
        reason = REASON(NOT_FOUND);
        break;
    case AL_ERR_STATE:
        status =
            chg->why == CS_WHY_REVISION_MISMATCH ? AL_GRPC_ABORTED : AL_GRPC_FAILED_PRECONDITION;
        reason = chg->why == CS_WHY_REVISION_MISMATCH ? REASON(REVISION_MISMATCH)
                                                      : REASON(INVALID_FIELD);
        break;
    case AL_ERR_TIMEOUT:
        status = AL_GRPC_UNAVAILABLE;
        reason = REASON(INTERNAL);
        break;
    case AL_ERR_CRYPTO:
        if (chg->why == CS_WHY_AUDIT_UNAVAILABLE) {
            status = AL_GRPC_UNAVAILABLE;
            reason = REASON(AUDIT_UNAVAILABLE);
        } else {
            status = AL_GRPC_DATA_LOSS;
        }
        break;
    default:
        break;
    }
    if (chg->field)
        snprintf(msg, sizeof(msg), "%s: %s", chg->field, why);
    else
        snprintf(msg, sizeof(msg), "%s", why);
    deny(cs, call, action, credential, status, reason, why, msg);
}

static void put_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct cs_svc *cs = user;
    const Airlock__V1__PutCredentialRequest *r = (const void *)req;
    Airlock__V1__AuditRecord rec;
    Airlock__V1__Credential *out = NULL;

    if (!require_admin(cs, call, ACT(PUT), r->name))
        return;
    rec_init(&rec, call, ACT(PUT), r->name);
    struct cs_change chg = {
        .actor = al_grpc_call_peer_id(call), .now_ms = cs_now_ms(), .audit = &rec};
    int rc = cs_store_put(cs->store, r, &chg, al_grpc_call_arena(call), &out);
    if (rc < 0) {
        store_error(cs, call, ACT(PUT), r->name, rc, &chg);
        return;
    }
    AL_LOG_INFO("credstore.put", "caller=%s credential=%s audit_seq=%lld",
                al_grpc_call_peer_id(call), r->name, (long long)chg.audit_seq);
    al_grpc_call_reply(call, &out->base);
}

static void rotate_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct cs_svc *cs = user;
    const Airlock__V1__RotateCredentialRequest *r = (const void *)req;
    Airlock__V1__AuditRecord rec;
    Airlock__V1__Credential *out = NULL;

    if (!require_admin(cs, call, ACT(ROTATE), r->name))
        return;
    rec_init(&rec, call, ACT(ROTATE), r->name);
    struct cs_change chg = {
        .actor = al_grpc_call_peer_id(call), .now_ms = cs_now_ms(), .audit = &rec};
    int rc = cs_store_rotate(cs->store, r, &chg, al_grpc_call_arena(call), &out);
    if (rc < 0) {
        store_error(cs, call, ACT(ROTATE), r->name, rc, &chg);
        return;
    }
    AL_LOG_INFO("credstore.rotate", "caller=%s credential=%s version=%d audit_seq=%lld",
                al_grpc_call_peer_id(call), r->name, out->current_version,
                (long long)chg.audit_seq);
    al_grpc_call_reply(call, &out->base);
}

static void delete_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct cs_svc *cs = user;
    const Airlock__V1__DeleteCredentialRequest *r = (const void *)req;
    Airlock__V1__AuditRecord rec;
    Airlock__V1__Credential *out = NULL;
    Airlock__V1__DeleteCredentialResponse resp = AIRLOCK__V1__DELETE_CREDENTIAL_RESPONSE__INIT;

    if (!require_admin(cs, call, ACT(DELETE), r->name))
        return;
    rec_init(&rec, call, ACT(DELETE), r->name);
    rec.version = r->version;
    struct cs_change chg = {
        .actor = al_grpc_call_peer_id(call), .now_ms = cs_now_ms(), .audit = &rec};
    int rc = cs_store_delete(cs->store, r, &chg, al_grpc_call_arena(call), &out);
    if (rc < 0) {
        store_error(cs, call, ACT(DELETE), r->name, rc, &chg);
        return;
    }
    AL_LOG_INFO("credstore.delete", "caller=%s credential=%s version=%d audit_seq=%lld",
                al_grpc_call_peer_id(call), r->name, r->version, (long long)chg.audit_seq);
    resp.credential = out;
    al_grpc_call_reply(call, &resp.base);
}

static void list_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct cs_svc *cs = user;
    Airlock__V1__ListCredentialsResponse *out = NULL;
    struct cs_change none = {0};

    if (!require_admin(cs, call, ACT(LIST), NULL))
        return;
    int rc = cs_store_list(cs->store, (const void *)req, al_grpc_call_arena(call), &out);
    if (rc < 0) {
        if (rc == AL_ERR_INVAL)
            deny(cs, call, ACT(LIST), NULL, AL_GRPC_INVALID_ARGUMENT, REASON(PAGE_TOKEN_INVALID),
                 "bad_request", "name_prefix or page token is not valid");
        else
            store_error(cs, call, ACT(LIST), NULL, rc, &none);
        return;
    }
    allow_read(cs, call, ACT(LIST), NULL, &out->base);
}

static void describe_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct cs_svc *cs = user;
    const Airlock__V1__DescribeCredentialRequest *r = (const void *)req;
    Airlock__V1__Credential *out = NULL;
    struct cs_change none = {0};

    if (!require_admin(cs, call, ACT(DESCRIBE), r->name))
        return;
    int rc = cs_store_describe(cs->store, r->name, al_grpc_call_arena(call), &out);
    if (rc < 0) {
        store_error(cs, call, ACT(DESCRIBE), r->name, rc, &none);
        return;
    }
    allow_read(cs, call, ACT(DESCRIBE), r->name, &out->base);
}

static void query_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct cs_svc *cs = user;
    Airlock__V1__QueryAuditResponse *out = NULL;
    struct cs_change none = {0};

    if (!require_admin(cs, call, ACT(QUERY_AUDIT), NULL))
        return;
    /* committed first, so the answer includes everything audited so far */
    cs_svc_commit(cs);
    int rc = cs_audit_query(cs->audit, (const void *)req, al_grpc_call_arena(call), &out);
    if (rc < 0) {
        if (rc == AL_ERR_INVAL)
            deny(cs, call, ACT(QUERY_AUDIT), NULL, AL_GRPC_INVALID_ARGUMENT,
                 REASON(PAGE_TOKEN_INVALID), "bad_request", "page token is not valid");
        else
            store_error(cs, call, ACT(QUERY_AUDIT), NULL, rc, &none);
        return;
    }
    allow_read(cs, call, ACT(QUERY_AUDIT), NULL, &out->base);
}

static void verify_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct cs_svc *cs = user;
    const Airlock__V1__VerifyAuditRequest *r = (const void *)req;
    struct cs_audit_verify_result res;
    struct cs_change none = {0};

    if (!require_admin(cs, call, ACT(VERIFY_AUDIT), NULL))
        return;
    cs_svc_commit(cs);
    int rc = cs_audit_verify(cs->audit, r->from_seq, r->to_seq, &res);
    /* a broken chain refuses every append: VerifyAudit must still report
     * what is wrong, so it then answers without its own record (logged) */
    int broken = cs_audit_problem(cs->audit) != NULL;
    if (rc < 0) {
        /* as credstore.proto says: a reversed range is INVALID_ARGUMENT, one
         * that reaches beyond the head OUT_OF_RANGE */
        if (rc == AL_ERR_INVAL)
            deny(cs, call, ACT(VERIFY_AUDIT), NULL, AL_GRPC_INVALID_ARGUMENT, REASON(INVALID_FIELD),
                 "bad_range", "from_seq is after to_seq, or negative");
        else if (rc == AL_ERR_NOTFOUND)
            deny(cs, call, ACT(VERIFY_AUDIT), NULL, AL_GRPC_OUT_OF_RANGE, REASON(INVALID_FIELD),
                 "bad_range", "from_seq/to_seq beyond the head of the chain");
        else
            store_error(cs, call, ACT(VERIFY_AUDIT), NULL, rc, &none);
        return;
    }
    Airlock__V1__VerifyAuditResponse *out =
        al_arena_alloc(al_grpc_call_arena(call), sizeof(*out) + CS_HASH_LEN + CS_AUDIT_PROBLEM_MAX);
    if (!out) {
        cs_finish_error(call, AL_GRPC_RESOURCE_EXHAUSTED, REASON(INTERNAL), NULL, "out of memory");
        return;
    }
    airlock__v1__verify_audit_response__init(out);
    uint8_t *hash = (uint8_t *)(out + 1);
    char *problem = (char *)hash + CS_HASH_LEN;
    memcpy(hash, res.head_hash, CS_HASH_LEN);
    snprintf(problem, CS_AUDIT_PROBLEM_MAX, "%s", res.problem);
    if (broken && res.intact) {
        /* the open found what a ranged check may not see (e.g. truncation) */
        res.intact = 0;
        snprintf(res.problem, sizeof(res.problem), "%s", cs_audit_problem(cs->audit));
        snprintf(problem, CS_AUDIT_PROBLEM_MAX, "%s", res.problem);
    }
    out->intact = res.intact;
    out->records_checked = res.records_checked;
    out->first_bad_seq = res.first_bad_seq;
    out->problem = problem;
    out->head_seq = res.head_seq;
    out->head_hash.data = hash;
    out->head_hash.len = CS_HASH_LEN;
    if (!res.intact)
        AL_LOG_ERROR("credstore.audit_broken", "first_bad_seq=%lld problem=\"%s\"",
                     (long long)res.first_bad_seq, res.problem);
    Airlock__V1__AuditRecord rec;
    rec_init(&rec, call, ACT(VERIFY_AUDIT), NULL);
    if (broken || cs_audit_append(cs->audit, &rec, NULL) < 0) {
        /* a chain that refuses appends is exactly when VerifyAudit must answer */
        AL_LOG_WARN("credstore.verify_unaudited", "caller=%s reason=\"audit chain broken\"",
                    al_grpc_call_peer_id(call));
        if (res.intact && cs_audit_problem(cs->audit)) {
            out->intact = 0;
            snprintf(problem, CS_AUDIT_PROBLEM_MAX, "%s", cs_audit_problem(cs->audit));
        } else if (res.intact) {
            out->intact = 0;
            snprintf(problem, CS_AUDIT_PROBLEM_MAX, "the chain refuses new records");
        }
        al_grpc_call_reply(call, &out->base);
        return;
    }
    struct cs_waiter *w = waiter_new(call);
    if (!w) {
        cs_finish_error(call, AL_GRPC_RESOURCE_EXHAUSTED, REASON(INTERNAL), NULL, "out of memory");
        return;
    }
    w->reply = &out->base;
    w->next = NULL;
    *cs->waiting_tail = w;
    cs->waiting_tail = &w->next;
}

int cs_admin_register(struct cs_svc *cs)
{
    static const struct al_grpc_method_impl impls[] = {
        {"Put", put_cb, 1},        {"Rotate", rotate_cb, 1},  {"Delete", delete_cb},
        {"List", list_cb},         {"Describe", describe_cb}, {"QueryAudit", query_cb},
        {"VerifyAudit", verify_cb}};
    return al_grpc_server_add_service(cs->svc.grpc, &airlock__v1__credential_admin__descriptor,
                                      impls, sizeof(impls) / sizeof(impls[0]), cs);
}
