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
 * AppendAudit: an edge records its own uses of values (and of requests
 * that used none: an egress proxy job's traffic); each record must refer to
 * a grant in the batch that verifies and names the caller as holder, and
 * follow edgerec.h (a credential its grant names, or none; field limits). No
 * text field may contain a credential's value (raw, hex or base64; the
 * record's credential at its current and named version, or for a record
 * without one every credential its grant names): the chain is append-only,
 * so a value written there could never be removed. The batch id is 32 hex digits; a batch id
 * already committed for this caller is acknowledged without being appended twice. A refused batch
 * appends none of its records, only one APPEND_AUDIT DENY record saying why, and the error is sent
 * once that record is durable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "airlock/v1/credstore.pb-c.h"
#include "airlock/v1/grant.pb-c.h"
#include "al_base64.h"
#include "al_err.h"
#include "policy.h"
#include "al_grant.h"
#include "al_log.h"
#include "al_metrics.h"
#include "crypto.h"
#include "dest.h"
#include "edgerec.h"
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

/* The buffer a Resolve decrypts the value into (cs_svc_value_get). */
struct value_buf {
    uint8_t *p;
    size_t cap; /* as asked of cs_svc_value_get */
    size_t len; /* bytes written */
};

/* v (may be NULL): a value buffer to wipe and give back. */
static void resolve_deny(struct resolve_ctx *x, int status, Airlock__V1__ErrorReason reason,
                         const char *why, const char *msg, const struct value_buf *v)
{
    struct cs_waiter *w = waiter_new(x->call);
    if (v)
        cs_svc_value_put(x->cs, v->p, v->cap, v->len);
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
    if (AL_LOG_INFO >= al_log_min_level) {
        /* the name comes from the request: quoted, as any network string */
        char q[200];
        al_log_write(AL_LOG_INFO, "credstore.resolve",
                     "decision=deny caller=%s credential=%s reason=%s",
                     x->rec.caller[0] ? x->rec.caller : "-",
                     al_log_quote(q, sizeof(q), x->rec.credential, strlen(x->rec.credential)), why);
    }
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

static void resolve_allow(struct resolve_ctx *x, const Airlock__V1__Grant *g,
                          const struct value_buf *v, const struct cs_value_info *info)
{
    struct al_arena *a = al_grpc_call_arena(x->call);
    struct cs_waiter *w = waiter_new(x->call);
    Airlock__V1__ResolveResponse *resp = al_arena_alloc(a, sizeof(*resp));
    int64_t now = cs_now_ms();

    if (!w || !resp) {
        cs_svc_value_put(x->cs, v->p, v->cap, v->len);
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
    resp->value.data = v->p;
    resp->value.len = info->len;
    resp->version = info->version;
    resp->type = info->type;
    resp->template_ = info->tmpl;
    resp->expires_ms = expires;
    resp->ttl_ms = expires > now ? expires - now : 0;
    w->reply = &resp->base;
    w->secret = v->p; /* wiped once the reply is packed, or on failure */
    w->secret_cap = v->cap;
    w->secret_len = v->len;
    w->audit_seq_out = &resp->audit_seq;
    x->rec.version = info->version;
    al_metric_add(x->cs->m_resolve_allow, 1);
    /* the audit chain holds every Resolve; a log line per allowed call would
     * only cost a write(2) each (refusals are logged as warnings) */
    AL_LOG_DEBUG("credstore.resolve", "decision=allow caller=%s credential=%s version=%d grant=%s",
                 x->rec.caller, x->rec.credential, info->version, g->grant_id);
    cs_svc_await_audit(x->cs, w, &x->rec);
}

/* Decrypts the credential's current value into a pooled buffer: a one-page
 * buffer first, a CS_VALUE_MAX one only for a value that does not fit (the
 * store writes nothing then). */
static int read_value(struct resolve_ctx *x, struct value_buf *v, struct cs_value_info *info,
                      enum cs_why *why)
{
    struct al_arena *a = al_grpc_call_arena(x->call);
    const char *name = x->req->credential;
    int rc;

    /* the commit thread's audit commits so far: the read cache follows them
     * (store.h) instead of refilling after each */
    cs_svc_follow_commits(x->cs);
    v->cap = CS_VALUE_SMALL;
    v->p = cs_svc_value_get(x->cs, v->cap);
    rc = v->p ? cs_store_get_value(x->cs->store, name, 0, cs_now_ms(), v->p, v->cap, a, info, why)
              : AL_ERR_NOMEM;
    if (rc == AL_ERR_TOOBIG) {
        cs_svc_value_put(x->cs, v->p, v->cap, v->cap);
        v->cap = CS_VALUE_MAX;
        v->p = cs_svc_value_get(x->cs, v->cap);
        rc = v->p ? cs_store_get_value(x->cs->store, name, 0, cs_now_ms(), v->p, v->cap, a, info,
                                       why)
                  : AL_ERR_NOMEM;
    }
    v->len = rc == 0 ? info->len : 0; /* a failed read is wiped by the store */
    if (rc == 0)
        al_metric_add(info->cached ? x->cs->m_read_cached : x->cs->m_read_loaded, 1);
    return rc;
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
    struct value_buf v = {0};
    struct cs_value_info info = {0};
    enum cs_why swhy = CS_WHY_NONE;
    rc = read_value(&x, &v, &info, &swhy);
    if (rc < 0) {
        resolve_deny(&x, rc == AL_ERR_NOTFOUND ? AL_GRPC_NOT_FOUND : AL_GRPC_FAILED_PRECONDITION,
                     rc == AL_ERR_NOTFOUND ? REASON(NOT_FOUND) : REASON(POLICY_DENIED),
                     swhy != CS_WHY_NONE ? cs_why_str(swhy) : al_strerror(rc),
                     "credential not available", &v);
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
                     &v);
        goto out;
    }
    /* the record points into g: cs_audit_append() copies it before g is freed */
    resolve_allow(&x, g, &v, &info);
out:
    al_grant_free(g);
}

/* ---------- AppendAudit ---------- */

/* Values shorter than this are not looked for in records (too many false hits). */
#define LEAK_MIN_VALUE 8
#define LEAK_FORMS     8

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

/*
 * A refused batch: one APPEND_AUDIT DENY record (the caller and why; the
 * batch id only inside the reason, and only when well-formed, since a record
 * carrying batch_id would make the corrected resend of that batch look like
 * a duplicate), then the error once the record is durable. msg never holds
 * request text, so it cannot carry a value.
 */
static void append_refuse(struct cs_svc *cs, struct al_grpc_call *call, const char *batch_id,
                          int status, Airlock__V1__ErrorReason reason, const char *msg)
{
    Airlock__V1__AuditRecord rec = AIRLOCK__V1__AUDIT_RECORD__INIT;
    struct cs_waiter *w = waiter_new(call);
    char why[256];

    if (!w) {
        cs_finish_error(call, AL_GRPC_RESOURCE_EXHAUSTED, REASON(INTERNAL), NULL, "out of memory");
        return;
    }
    snprintf(why, sizeof(why), "batch %s refused: %s", batch_id ? batch_id : "(bad id)", msg);
    rec.action = ACT(APPEND_AUDIT);
    rec.decision = DENY;
    rec.caller = (char *)al_grpc_call_peer_id(call);
    rec.reason = why;
    w->status = status;
    w->reason = reason;
    snprintf(w->message, sizeof(w->message), "%s", msg);
    AL_LOG_INFO("credstore.append_audit", "decision=deny caller=%s reason=\"%s\"",
                rec.caller[0] ? rec.caller : "-", msg);
    cs_svc_await_audit(cs, w, &rec);
}

static int is_hex32(const char *s)
{
    size_t n = 0;
    for (; s && s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f') ||
              (s[n] >= 'A' && s[n] <= 'F')))
            return 0;
    return n == 32;
}

/*
 * One stored value and the forms a record must not contain it in: raw, hex,
 * and base64 (standard and URL alphabets) at each of the three alignments
 * the value can have inside a longer encoded string (the last four
 * characters, which depend on what follows, left out). All in one locked
 * buffer, wiped by leak_free().
 */
struct leak {
    const char *name;
    int32_t version;
    uint8_t *mem;
    const uint8_t *form[LEAK_FORMS];
    size_t len[LEAK_FORMS];
    size_t n;
};

static void leak_free(struct leak *l)
{
    al_secure_free(l->mem);
    l->mem = NULL;
    l->n = 0;
}

static void leak_add_b64(struct leak *l, uint8_t **p, const uint8_t *v, size_t vlen, unsigned flags)
{
    for (size_t j = 0; j < 3 && vlen > j; j++) {
        size_t cap = al_base64_encoded_len(vlen - j, flags) + 1, out = 0;
        if (al_base64_encode(v + j, vlen - j, (char *)*p, cap, flags, &out) < 0 || out < 20)
            continue;
        l->form[l->n] = *p;
        l->len[l->n++] = out - 4;
        *p += cap;
    }
}

/* Decrypts version (0 = current) of name and builds its forms; l->n stays 0
 * when there is no releasable value (deleted, destroyed, expired) or it is
 * too short to look for. Returns 0 or AL_ERR_NOMEM. */
static int leak_load(struct cs_svc *cs, struct al_grpc_call *call, struct leak *l)
{
    static const char hexd[] = "0123456789abcdef";
    struct cs_value_info info = {0};
    uint8_t *v = al_secure_alloc(CS_VALUE_MAX);
    int rc;

    l->n = 0;
    if (!v)
        return AL_ERR_NOMEM;
    rc = cs_store_get_value(cs->store, l->name, l->version, cs_now_ms(), v, CS_VALUE_MAX,
                            al_grpc_call_arena(call), &info, NULL);
    if (rc < 0 || info.len < LEAK_MIN_VALUE) {
        al_secure_free(v);
        return 0;
    }
    size_t vlen = info.len, b64 = al_base64_encoded_len(vlen, 0) + 1;
    l->mem = al_secure_alloc(vlen + 2 * vlen + 6 * b64);
    if (!l->mem) {
        al_secure_free(v);
        return AL_ERR_NOMEM;
    }
    uint8_t *p = l->mem;
    memcpy(p, v, vlen);
    l->form[l->n] = p;
    l->len[l->n++] = vlen;
    p += vlen;
    for (size_t i = 0; i < vlen; i++) {
        p[2 * i] = (uint8_t)hexd[v[i] >> 4];
        p[2 * i + 1] = (uint8_t)hexd[v[i] & 15];
    }
    l->form[l->n] = p;
    l->len[l->n++] = 2 * vlen;
    p += 2 * vlen;
    leak_add_b64(l, &p, v, vlen, 0);
    leak_add_b64(l, &p, v, vlen, AL_BASE64_URL);
    al_secure_free(v);
    return 0;
}

static int leak_in(const struct leak *l, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    for (size_t k = 0; k < l->n; k++)
        if (n >= l->len[k] && memmem(s, n, l->form[k], l->len[k]))
            return 1;
    return 0;
}

/*
 * Looks for credential values in every text field of each record (which
 * values: cs_edgerec_values(), the record's credential at its current and
 * named version, or for a record without a credential every credential its
 * grant names): a value that reaches the chain could never be removed from
 * it. Each distinct (credential, version) is decrypted once. On a hit
 * writes the problem to msg (never the value) and returns 1; otherwise 0 or
 * AL_ERR_NOMEM.
 */
static int check_values(struct cs_svc *cs, struct al_grpc_call *call,
                        const Airlock__V1__AppendAuditRequest *r, Airlock__V1__Grant **gs,
                        char *msg, size_t n)
{
    size_t cap = 2 * r->n_records, nl = 0, wcap = 2;
    struct cs_rec_value *want;
    struct leak *ls;
    int rc = 0;

    for (size_t i = 0; i < r->n_grants; i++) {
        size_t nc = gs[i] ? gs[i]->n_credentials : 0;
        cap += nc;
        wcap = nc + 2 > wcap ? nc + 2 : wcap;
    }
    ls = calloc(cap ? cap : 1, sizeof(*ls));
    want = calloc(wcap, sizeof(*want));
    if (!ls || !want) {
        free(ls);
        free(want);
        return AL_ERR_NOMEM;
    }
    for (size_t i = 0; rc == 0 && i < r->n_records; i++) {
        const Airlock__V1__EdgeUseRecord *e = r->records[i];
        const Airlock__V1__Grant *g = find_grant(gs, r->n_grants, e->grant_id ? e->grant_id : "");
        struct cs_rec_text t[CS_REC_TEXTS];
        size_t nt = cs_edgerec_texts(e, t);
        size_t nw = cs_edgerec_values(e, g, want, wcap);
        for (size_t k = 0; rc == 0 && k < nw; k++) {
            struct leak *l = NULL;
            for (size_t j = 0; j < nl && !l; j++)
                if (ls[j].version == want[k].version && strcmp(ls[j].name, want[k].name) == 0)
                    l = &ls[j];
            if (!l && nl < cap) {
                l = &ls[nl++];
                l->name = want[k].name;
                l->version = want[k].version;
                rc = leak_load(cs, call, l);
            }
            for (size_t f = 0; l && rc == 0 && f < nt; f++) {
                if (leak_in(l, t[f].s)) {
                    snprintf(msg, n, "record %zu: %s contains %s value", i, t[f].field,
                             e->credential && e->credential[0] ? "the credential's"
                                                               : "a credential's");
                    rc = 1;
                }
            }
        }
    }
    for (size_t j = 0; j < nl; j++)
        leak_free(&ls[j]);
    free(ls);
    free(want);
    return rc;
}

/* Queues the batch's USE records and parks the call until they are durable. */
static void append_accept(struct cs_svc *cs, struct al_grpc_call *call,
                          const Airlock__V1__AppendAuditRequest *r, Airlock__V1__Grant **gs,
                          Airlock__V1__AppendAuditResponse *resp)
{
    const char *caller = al_grpc_call_peer_id(call);
    struct cs_waiter *w = waiter_new(call);

    if (!w) {
        cs_finish_error(call, AL_GRPC_RESOURCE_EXHAUSTED, REASON(INTERNAL), NULL, "out of memory");
        return;
    }
    for (size_t i = 0; i < r->n_records; i++) {
        const Airlock__V1__EdgeUseRecord *e = r->records[i];
        Airlock__V1__AuditRecord rec = AIRLOCK__V1__AUDIT_RECORD__INIT;
        rec.action = ACT(USE);
        rec.caller = (char *)caller;
        fill_from_grant(&rec, find_grant(gs, r->n_grants, e->grant_id));
        rec.credential = e->credential;
        rec.version = e->version;
        rec.destination = e->destination;
        rec.method = e->method;
        rec.path = e->path;
        rec.status = e->status;
        rec.request_bytes = e->request_bytes;
        rec.response_bytes = e->response_bytes;
        rec.duration_us = e->duration_us;
        rec.decision =
            e->decision ? e->decision : AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW;
        rec.reason = e->reason;
        rec.edge_time_ms = e->time_ms;
        rec.request_id = e->request_id;
        rec.tool = e->tool;
        rec.batch_id = r->batch_id;
        size_t idx;
        /* the queue was emptied by the commit in append_cb and every field is
         * under CS_AUDIT_FIELD_MAX: only a broken chain or OOM fails here */
        if (cs_audit_append(cs->audit, &rec, &idx) < 0) {
            cs_finish_error(call, AL_GRPC_UNAVAILABLE, REASON(AUDIT_UNAVAILABLE), NULL,
                            "the audit log cannot take this batch");
            return;
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
}

static void append_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct cs_svc *cs = user;
    const Airlock__V1__AppendAuditRequest *r = (const void *)req;
    const char *caller = al_grpc_call_peer_id(call);
    const char *bid = is_hex32(r->batch_id) ? r->batch_id : NULL;
    Airlock__V1__Grant **gs = NULL;
    int64_t first = 0, last = 0;
    int32_t count = 0;
    char msg[160];

    if (!edge_role(caller)) {
        append_refuse(cs, call, bid, AL_GRPC_PERMISSION_DENIED, REASON(IDENTITY_NOT_ALLOWED),
                      "AppendAudit is only for executor and gateway identities");
        return;
    }
    if (!bid || r->n_records == 0 || r->n_records > MAX_BATCH || r->n_grants > MAX_BATCH) {
        append_refuse(cs, call, bid, AL_GRPC_INVALID_ARGUMENT, REASON(INVALID_FIELD),
                      !bid ? "batch_id must be 32 hex digits"
                           : "a batch holds 1 to 1000 records and at most 1000 grants");
        return;
    }
    Airlock__V1__AppendAuditResponse *resp =
        al_arena_alloc(al_grpc_call_arena(call), sizeof(*resp));
    if (!resp)
        goto nomem;
    airlock__v1__append_audit_response__init(resp);
    cs_svc_commit(cs); /* so a batch sent twice in one loop turn is found */
    if (cs_audit_find_batch(cs->audit, caller, bid, cs_now_ms() - 24 * 3600 * 1000LL, &first, &last,
                            &count) == 0) {
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
            snprintf(msg, sizeof(msg), "grant %zu does not verify for this caller", i);
            append_refuse(cs, call, bid, AL_GRPC_PERMISSION_DENIED, REASON(GRANT_INVALID), msg);
            goto out;
        }
    }
    for (size_t i = 0; i < r->n_records; i++) {
        const Airlock__V1__EdgeUseRecord *e = r->records[i];
        if (cs_edgerec_check(e, find_grant(gs, r->n_grants, e->grant_id ? e->grant_id : ""), i, msg,
                             sizeof(msg)) < 0) {
            append_refuse(cs, call, bid, AL_GRPC_INVALID_ARGUMENT, REASON(INVALID_FIELD), msg);
            goto out;
        }
    }
    int rc = check_values(cs, call, r, gs, msg, sizeof(msg));
    if (rc < 0)
        goto nomem;
    if (rc > 0) {
        append_refuse(cs, call, bid, AL_GRPC_INVALID_ARGUMENT, REASON(INVALID_FIELD), msg);
        goto out;
    }
    append_accept(cs, call, r, gs, resp);
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
    /* AppendAudit is sensitive too: a faulty edge may send a value in a record,
     * which is refused, and its request buffers are wiped like Resolve's */
    static const struct al_grpc_method_impl impls[] = {{"Resolve", resolve_cb, 1},
                                                       {"AppendAudit", append_cb, 1}};
    return al_grpc_server_add_service(cs->svc.grpc, &airlock__v1__credential_resolver__descriptor,
                                      impls, 2, cs);
}
