/*
 * execsvc: airlock.v1.ExecutorService (executor identities only) and the
 * lease dispatcher.
 *
 * Lease: a long-lived stream per executor instance (identity, instance_id);
 * a newer stream of the same instance replaces the older one and keeps its
 * leases and slots. The dispatcher (in_dispatch, run before each group
 * commit) hands each stream QUEUED jobs of its pools, oldest first, up to
 * its free slots: jobs past their backoff, sessionless or heading their
 * session (sessions.c), of principals under their concurrency quota,
 * starting round-robin after the stream it served last. Each
 * lease gets a random 128-bit fencing token and, when the job binds
 * credentials or uses the egress proxy (ingrant.h), a grant signed for the
 * executor's identity; the assignment is sent only after the lease is
 * durable.
 *
 * Reports (Heartbeat, PushEvents, Finish) are accepted only from the lease's
 * holder identity, for the job's current attempt, with the lease's token
 * (sm.h in_sm_fence_ok, constant-time compare); anything else is
 * FAILED_PRECONDITION LEASE_LOST (Heartbeat: LEASE_STATE_LOST per lease).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "al_grant.h"
#include "al_log.h"
#include "al_metrics.h"
#include "ingrant.h"
#include "insvc.h"

#define CHUNK_MAX        (64 * 1024)
#define SCAN_WINDOW      64
#define SCAN_WINDOWS     4
#define MAX_HEARTBEAT    1000
#define DIR_ENTRIES_MAX  100000
#define FAILURE_MSG_MAX  4096
#define LEASE_ASSIGNMENT AIRLOCK__V1__LEASE_RESPONSE__KIND_ASSIGNMENT
#define LEASE_CANCEL     AIRLOCK__V1__LEASE_RESPONSE__KIND_CANCEL

static int lease_lost(struct al_grpc_call *call)
{
    in_finish_error(call, AL_GRPC_FAILED_PRECONDITION, IN_REASON(LEASE_LOST), "lease",
                    "this lease is no longer held (expired, re-assigned, finished, or the token "
                    "is wrong): stop the attempt",
                    0);
    return -1;
}

static void seen(struct in_svc *s, const char *identity, const char *instance, int64_t now)
{
    struct in_exec *e = instance ? in_exec_get(s, identity, instance) : NULL;
    if (e)
        e->last_seen_ms = now;
}

/* ---- grants ---- */

/* Signs the grant of attempt j->attempt of j (spec unpacked) held by holder
 * when the job needs one (ingrant.h); *out stays NULL otherwise. */
static int make_grant(struct in_svc *s, const struct in_job *j, const Airlock__V1__JobSpec *spec,
                      const char *holder, int64_t now, struct al_arena *a,
                      Airlock__V1__SignedGrant **out, int64_t *expires)
{
    struct in_grant_ctx x = {.issuer = s->self_id,
                             .audience = s->cfg.grant_audience,
                             .holder = holder,
                             .principal = j->principal,
                             .job_id = j->id,
                             .pool = j->pool,
                             .attempt = j->attempt,
                             .now_ms = now,
                             .lifetime_ms = s->cfg.grant_lifetime_ms};
    struct in_grant_buf *buf;
    Airlock__V1__Grant g;
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc;

    *out = NULL;
    if (!s->signer || !in_grant_needed(spec))
        return 0;
    buf = al_arena_alloc(a, sizeof(*buf));
    if (!buf)
        return AL_ERR_NOMEM;
    in_grant_build(&x, spec, buf, &g);
    rc = al_grant_sign(s->signer, &g, &bytes, &len);
    if (rc < 0) {
        AL_LOG_ERROR("intake.grant", "job=%s reason=\"%s\"", j->id, al_strerror(rc));
        return rc;
    }
    *out = airlock__v1__signed_grant__unpack(al_arena_pb(a), len, bytes);
    free(bytes);
    if (!*out)
        return AL_ERR_NOMEM;
    *expires = g.expires_ms;
    return 0;
}

/* ---- the dispatcher ---- */

static int lease_job(struct in_svc *s, struct in_lstream *ls, struct in_job *j, int reset,
                     int64_t now)
{
    struct al_arena *a = in_txa(s);
    Airlock__V1__LeaseResponse *resp = al_arena_alloc(a, sizeof(*resp));
    Airlock__V1__LeaseAssignment *as = al_arena_alloc(a, sizeof(*as));
    Airlock__V1__JobSpec *spec;
    uint8_t *tok = al_arena_alloc(a, IN_TOKEN_LEN);
    char msg[AL_PKI_ID_MAX + 128];
    int rc;

    if (!resp || !as || !tok)
        return AL_ERR_NOMEM;
    spec = airlock__v1__job_spec__unpack(al_arena_pb(a), j->spec_len, j->spec);
    if (!spec)
        return AL_ERR_NOMEM;
    airlock__v1__lease_response__init(resp);
    airlock__v1__lease_assignment__init(as);
    j->attempt++;
    j->spent++;
    if ((rc = in_random(j->token, IN_TOKEN_LEN)) < 0)
        return rc;
    j->has_token = 1;
    snprintf(j->executor_id, sizeof(j->executor_id), "%s", ls->exec->identity);
    snprintf(j->instance_id, sizeof(j->instance_id), "%s", ls->exec->instance);
    j->lease_expires_ms = now + s->cfg.lease_ttl_ms;
    j->push_seq = 0;
    j->ran = 0;
    j->workspace_reset = reset;
    j->grant_expires_ms = 0;
    if ((rc = make_grant(s, j, spec, ls->exec->identity, now, a, &as->grant,
                         &j->grant_expires_ms)) < 0)
        return rc;
    snprintf(msg, sizeof(msg), "leased by %s (attempt %d)%s", ls->exec->identity, j->attempt,
             reset ? "; the session's workspace was lost and starts fresh" : "");
    if ((rc = in_job_transition(s, j, IN_JS(LEASED), msg, now)) < 0 ||
        (rc = in_store_job_update(s->store, j)) < 0 ||
        (rc = in_session_assign(s, j, ls->exec, now)) < 0)
        return rc;
    ls->exec->held++;
    memcpy(tok, j->token, IN_TOKEN_LEN);
    as->job = in_job_msg(j, a, 1);
    if (!as->job)
        return AL_ERR_NOMEM;
    as->attempt = j->attempt;
    as->fencing_token.data = tok;
    as->fencing_token.len = IN_TOKEN_LEN;
    as->lease_expires_ms = j->lease_expires_ms;
    as->lease_ttl_ms = s->cfg.lease_ttl_ms;
    as->heartbeat_interval_ms = s->cfg.heartbeat_ms;
    as->workspace_reset = reset;
    resp->kind_case = LEASE_ASSIGNMENT;
    resp->assignment = as;
    in_lease_send(s, ls->exec, &resp->base);
    al_metric_add(s->m_leases, 1);
    AL_LOG_DEBUG("intake.lease", "job=%s attempt=%d executor=%s instance=%s", j->id, j->attempt,
                 ls->exec->identity, ls->exec->instance);
    return 0;
}

/* Tries to lease candidate id to ls. Returns 1 leased, 0 not eligible, < 0 error. */
static int try_candidate(struct in_svc *s, struct in_lstream *ls, const char *id, int64_t now)
{
    struct in_job j;
    struct in_pcount *pc;
    int ok = 0, reset = 0, rc;

    if ((rc = in_store_job_get(s->store, id, NULL, &j)) < 0)
        return rc == AL_ERR_NOTFOUND ? 0 : rc;
    if (j.state != IN_JS(QUEUED))
        return 0;
    /* a retry goes to another instance than the one its previous attempt
     * ran on (which may be frozen with its stream still open) when any
     * other can take it: the first dispatch pass skips it here, a second
     * pass lets it through (in_dispatch) */
    if (s->avoid_same && j.attempt > 0 && !j.session_id[0] &&
        strcmp(j.instance_id, ls->exec->instance) == 0 &&
        strcmp(j.executor_id, ls->exec->identity) == 0) {
        s->avoided++;
        return 0;
    }
    pc = in_pcount(s, j.principal);
    if (pc &&
        pc->active >= in_config_max_concurrent(&s->cfg, in_config_principal(&s->cfg, j.principal)))
        return 0;
    if ((rc = in_session_eligible(s, &j, ls->exec, now, &ok, &reset)) < 0 || !ok)
        return rc < 0 ? rc : 0;
    if ((rc = in_tx_begin(s)) < 0)
        return rc;
    rc = in_store_job_get(s->store, id, in_txa(s), &j);
    if (rc == 0)
        rc = lease_job(s, ls, &j, reset, now);
    if (in_tx_end(s, rc == 0) < 0 && rc == 0)
        rc = AL_ERR_INVAL;
    return rc < 0 ? rc : 1;
}

/* Fills ls's free slots. Returns the number of jobs leased or < 0. */
static int fill_stream(struct in_svc *s, struct in_lstream *ls, int64_t now)
{
    char ids[SCAN_WINDOW][IN_JOB_ID_LEN + 1];
    int64_t seqs[SCAN_WINDOW], after = 0;
    int leased = 0, n, rc;

    for (int w = 0; w < SCAN_WINDOWS && ls->slots - ls->exec->held > 0; w++) {
        rc = in_store_candidates(s->store, ls->pools, ls->npools, ls->kinds, ls->nkinds, now, after,
                                 SCAN_WINDOW, ids, seqs, &n);
        if (rc < 0)
            return rc;
        for (int i = 0; i < n && ls->slots - ls->exec->held > 0; i++) {
            rc = try_candidate(s, ls, ids[i], now);
            if (rc < 0)
                return rc;
            leased += rc;
        }
        if (n < SCAN_WINDOW)
            break;
        after = seqs[n - 1];
    }
    return leased;
}

int in_dispatch(struct in_svc *s, int64_t now)
{
    struct in_lstream *start, *ls, *served = NULL;
    int rc = 0;

    s->dispatch_dirty = 0;
    /* everything time-dependent below is judged at `now`; the wake timer
     * (in_wake_next) comes back for what changes after it */
    s->dispatch_ms = now;
    if (s->svc.draining || s->stopping || !s->streams || s->queued_total <= 0)
        return 0;
    start = s->rr && s->rr->s ? s->rr : s->streams;
    s->avoided = 0;
    /* pass 1 keeps retries off the instance of their previous attempt; pass
     * 2, only when pass 1 passed some over, lets them run there after all
     * (no other instance had room) */
    for (int pass = 1; pass <= 2 && rc >= 0; pass++) {
        s->avoid_same = pass == 1;
        if (pass == 2 && (s->avoided == 0 || s->queued_total <= 0))
            break;
        ls = start;
        do {
            if (ls->slots - ls->exec->held > 0 && (rc = fill_stream(s, ls, now)) < 0) {
                AL_LOG_WARN("intake.dispatch", "reason=\"%s\" retry_ms=%d", al_strerror(rc),
                            IN_RETRY_MS);
                s->dispatch_dirty = 1; /* at the next flush, or by the wake timer */
                s->retry_at_ms = now + IN_RETRY_MS;
                in_deadlines_dirty(s);
                break;
            }
            if (rc > 0)
                served = ls;
            ls = ls->next ? ls->next : s->streams;
        } while (ls != start);
    }
    s->avoid_same = 0;
    /* the next dispatch starts after the last stream that got a job; one
     * that leased nothing (a job still in its backoff) moves nothing, or the
     * start would alternate with the number of dispatches and a re-queued
     * job could land on the same (perhaps frozen) executor attempt after
     * attempt */
    if (served)
        s->rr = served->next ? served->next : s->streams;
    return rc < 0 ? rc : 0;
}

/* ---- Lease streams ---- */

static void stream_free(struct in_svc *s, struct in_lstream *ls)
{
    if (ls->prev)
        ls->prev->next = ls->next;
    else
        s->streams = ls->next;
    if (ls->next)
        ls->next->prev = ls->prev;
    if (s->rr == ls)
        s->rr = NULL;
    if (ls->exec && ls->exec->stream == ls) {
        ls->exec->stream = NULL;
        ls->exec->last_seen_ms = in_now_ms();
    }
    for (size_t i = 0; i < ls->npools; i++)
        free(ls->pools[i]);
    free(ls->pools);
    al_metric_add(s->m_streams, -1);
    in_deadlines_dirty(s); /* the instance may become gone later */
    free(ls);
}

static void stream_end(struct in_lstream *ls, int status, int reason, const char *message)
{
    struct in_svc *s = ls->s;
    struct al_grpc_call *call = ls->call;
    stream_free(s, ls);
    in_finish_error(call, status, reason, NULL, message, 0);
}

static void stream_cancel_cb(struct al_grpc_call *call, void *user)
{
    struct in_lstream *ls = user;
    AL_LOG_INFO("intake.lease_stream", "event=closed executor=%s instance=%s", ls->exec->identity,
                ls->exec->instance);
    stream_free(ls->s, ls);
    al_grpc_call_finish(call, AL_GRPC_CANCELLED, NULL);
}

void in_lease_streams_end(struct in_svc *s, int status, const char *message)
{
    while (s->streams)
        stream_end(s->streams, status, IN_REASON(DRAINING), message);
}

static void send_cancel_to(struct in_svc *s, struct in_exec *e, const char *job_id, int attempt,
                           const char *reason)
{
    struct al_arena *a = in_txa(s);
    Airlock__V1__LeaseResponse *resp = al_arena_alloc(a, sizeof(*resp));
    Airlock__V1__LeaseCancel *c = al_arena_alloc(a, sizeof(*c));
    if (!resp || !c)
        return;
    airlock__v1__lease_response__init(resp);
    airlock__v1__lease_cancel__init(c);
    c->job_id = al_arena_strndup(a, job_id, strlen(job_id));
    c->attempt = attempt;
    c->reason = al_arena_strndup(a, reason, strlen(reason));
    if (!c->job_id || !c->reason)
        return;
    resp->kind_case = LEASE_CANCEL;
    resp->cancel = c;
    in_lease_send(s, e, &resp->base);
}

void in_send_cancel(struct in_svc *s, const struct in_job *j)
{
    struct in_exec *e = in_exec_find(s, j->executor_id, j->instance_id);
    if (e)
        send_cancel_to(s, e, j->id, j->attempt, j->cancel_reason);
}

struct resend {
    struct in_svc *s;
    struct in_exec *e;
};

static void resend_cancel(void *user, const char *job_id, int attempt, const char *reason)
{
    struct resend *r = user;
    send_cancel_to(r->s, r->e, job_id, attempt, reason);
}

/* Validates the request; fills pools/kinds of ls. Answers and returns -1 on error. */
static int lease_args(struct in_svc *s, struct al_grpc_call *call, const char *identity,
                      const Airlock__V1__LeaseRequest *r, struct in_lstream *ls)
{
    char field[32];
    const char *msg = NULL;
    int status = AL_GRPC_INVALID_ARGUMENT, reason = IN_REASON(INVALID_FIELD);

    if (r->slots < 1)
        snprintf(field, sizeof(field), "slots"), msg = "slots must be at least 1";
    else if (!in_is_hex(r->instance_id, IN_INSTANCE_LEN))
        snprintf(field, sizeof(field), "instance_id"), msg = "instance_id is 32 hex digits";
    for (size_t i = 0; !msg && i < r->n_kinds; i++) {
        if (r->kinds[i] < IN_KIND(EXEC) || r->kinds[i] > IN_KIND(LIST_DIR))
            snprintf(field, sizeof(field), "kinds[%zu]", i), msg = "unknown job kind";
        else if (ls->nkinds < 8)
            ls->kinds[ls->nkinds++] = r->kinds[i];
    }
    for (size_t i = 0; !msg && i < r->n_pools; i++) {
        const struct in_pool *p = in_config_pool(&s->cfg, r->pools[i]);
        if (!p || !in_config_pool_serves(p, identity))
            snprintf(field, sizeof(field), "pools[%zu]", i),
                msg = "this pool is not assigned to the executor's identity",
                status = AL_GRPC_PERMISSION_DENIED, reason = IN_REASON(POOL_NOT_ALLOWED);
    }
    if (msg) {
        in_finish_error(call, status, reason, field, msg, 0);
        return -1;
    }
    ls->pools = calloc(s->cfg.pools.n, sizeof(*ls->pools));
    for (size_t i = 0; ls->pools && i < s->cfg.pools.n; i++) {
        const struct in_pool *p = &s->cfg.pools.v[i];
        int wanted = r->n_pools == 0;
        for (size_t k = 0; k < r->n_pools && !wanted; k++)
            wanted = strcmp(r->pools[k], p->name) == 0;
        if (wanted && in_config_pool_serves(p, identity) &&
            !(ls->pools[ls->npools++] = strdup(p->name))) {
            ls->npools--;
            break;
        }
    }
    if (!ls->pools || ls->npools == 0) {
        in_finish_error(call, AL_GRPC_RESOURCE_EXHAUSTED, IN_REASON(INTERNAL), NULL,
                        "out of memory", 0);
        return -1;
    }
    ls->slots = r->slots > s->cfg.max_slots ? s->cfg.max_slots : r->slots;
    return 0;
}

static void lease_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct in_svc *s = user;
    const Airlock__V1__LeaseRequest *r = (const void *)req;
    const char *identity;
    struct in_lstream *ls;
    char inst[IN_INSTANCE_LEN + 1], ver[80];

    if (s->svc.draining) {
        in_finish_error(call, AL_GRPC_UNAVAILABLE, IN_REASON(DRAINING), NULL,
                        "intake is draining; reconnect", 1000);
        return;
    }
    if (in_auth_executor(s, call, &identity) < 0)
        return;
    ls = calloc(1, sizeof(*ls));
    if (!ls) {
        in_finish_error(call, AL_GRPC_RESOURCE_EXHAUSTED, IN_REASON(INTERNAL), NULL,
                        "out of memory", 0);
        return;
    }
    if (lease_args(s, call, identity, r, ls) < 0) {
        for (size_t i = 0; i < ls->npools; i++)
            free(ls->pools[i]);
        free(ls->pools);
        free(ls);
        return;
    }
    for (size_t i = 0; i <= IN_INSTANCE_LEN; i++)
        inst[i] = (char)(r->instance_id[i] >= 'A' && r->instance_id[i] <= 'F'
                             ? r->instance_id[i] - 'A' + 'a'
                             : r->instance_id[i]);
    ls->s = s;
    ls->call = call;
    ls->exec = in_exec_get(s, identity, inst);
    if (!ls->exec) {
        for (size_t i = 0; i < ls->npools; i++)
            free(ls->pools[i]);
        free(ls->pools);
        free(ls);
        in_finish_error(call, AL_GRPC_RESOURCE_EXHAUSTED, IN_REASON(INTERNAL), NULL,
                        "out of memory", 0);
        return;
    }
    if (ls->exec->stream)
        stream_end(ls->exec->stream, AL_GRPC_ABORTED, IN_REASON(UNSPECIFIED),
                   "replaced by a newer Lease stream of the same executor instance");
    ls->exec->stream = ls;
    ls->exec->last_seen_ms = in_now_ms();
    ls->next = s->streams;
    if (s->streams)
        s->streams->prev = ls;
    s->streams = ls;
    al_metric_add(s->m_streams, 1);
    al_grpc_call_on_cancel(call, stream_cancel_cb, ls);
    al_log_quote(ver, sizeof(ver), r->version, r->version ? strlen(r->version) : 0);
    AL_LOG_INFO("intake.lease_stream",
                "event=open executor=%s instance=%s slots=%d pools=%zu "
                "held=%d version=%s",
                identity, inst, ls->slots, ls->npools, ls->exec->held, ver);
    struct resend rs = {s, ls->exec};
    in_store_held_cancels(s->store, identity, inst, resend_cancel, &rs);
    in_dispatch_dirty(s);
}

/* ---- Heartbeat ---- */

static int lease_ok(const struct in_job *j, const char *caller, const Airlock__V1__LeaseRef *ref)
{
    struct in_sm_lease l = {j->state, j->attempt, j->executor_id, j->has_token ? j->token : NULL};
    return in_sm_fence_ok(&l, caller, ref->attempt, ref->fencing_token.data,
                          ref->fencing_token.len);
}

/* Extends one lease; fills st. Returns < 0 only for store failures. */
static int beat_one(struct in_svc *s, struct al_grpc_call *call, const char *caller,
                    const char *inst, const Airlock__V1__LeaseRef *ref,
                    Airlock__V1__LeaseStatus *st, int64_t now)
{
    struct al_arena *a = al_grpc_call_arena(call);
    struct in_job j;
    int rc;

    st->job_id = ref->job_id ? ref->job_id : "";
    st->attempt = ref->attempt;
    st->state = AIRLOCK__V1__LEASE_STATE__LEASE_STATE_LOST;
    if (!in_is_hex(st->job_id, IN_JOB_ID_LEN))
        return 0;
    rc = in_store_job_get(s->store, st->job_id, NULL, &j);
    if (rc == AL_ERR_NOTFOUND)
        return 0;
    if (rc < 0)
        return rc;
    if (!lease_ok(&j, caller, ref) || strcmp(j.instance_id, inst) != 0)
        return 0;
    j.lease_expires_ms = now + s->cfg.lease_ttl_ms;
    if (j.grant_expires_ms && j.grant_expires_ms - now < s->cfg.grant_renew_ms) {
        Airlock__V1__JobSpec *spec;
        if ((rc = in_store_job_get(s->store, st->job_id, a, &j)) < 0)
            return rc;
        j.lease_expires_ms = now + s->cfg.lease_ttl_ms;
        spec = airlock__v1__job_spec__unpack(al_arena_pb(a), j.spec_len, j.spec);
        if (!spec)
            return AL_ERR_NOMEM;
        if ((rc = make_grant(s, &j, spec, caller, now, a, &st->grant, &j.grant_expires_ms)) < 0)
            return rc;
        j.spec = NULL; /* not rewritten */
    }
    if ((rc = in_store_job_update(s->store, &j)) < 0)
        return rc;
    st->state = j.cancel_requested ? AIRLOCK__V1__LEASE_STATE__LEASE_STATE_CANCEL_REQUESTED
                                   : AIRLOCK__V1__LEASE_STATE__LEASE_STATE_ACTIVE;
    st->lease_expires_ms = j.lease_expires_ms;
    st->lease_ttl_ms = s->cfg.lease_ttl_ms;
    return 0;
}

static void heartbeat_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct in_svc *s = user;
    const Airlock__V1__HeartbeatRequest *r = (const void *)req;
    struct al_arena *a = al_grpc_call_arena(call);
    Airlock__V1__HeartbeatResponse *resp;
    const char *caller;
    char inst[IN_INSTANCE_LEN + 1];
    int64_t now = in_now_ms();
    int rc = 0;

    if (in_auth_executor(s, call, &caller) < 0)
        return;
    if (!in_is_hex(r->instance_id, IN_INSTANCE_LEN)) {
        in_finish_error(call, AL_GRPC_INVALID_ARGUMENT, IN_REASON(INVALID_FIELD), "instance_id",
                        "instance_id is 32 hex digits", 0);
        return;
    }
    if (r->n_leases > MAX_HEARTBEAT) {
        in_finish_error(call, AL_GRPC_INVALID_ARGUMENT, IN_REASON(TOO_LARGE), "leases",
                        "at most 1000 leases per heartbeat", 0);
        return;
    }
    for (size_t i = 0; i <= IN_INSTANCE_LEN; i++)
        inst[i] = (char)(r->instance_id[i] >= 'A' && r->instance_id[i] <= 'F'
                             ? r->instance_id[i] - 'A' + 'a'
                             : r->instance_id[i]);
    resp = al_arena_alloc(a, sizeof(*resp));
    Airlock__V1__LeaseStatus **v = al_arena_alloc(a, sizeof(*v) * (r->n_leases + 1));
    if (!resp || !v) {
        in_finish_error(call, AL_GRPC_RESOURCE_EXHAUSTED, IN_REASON(INTERNAL), NULL,
                        "out of memory", 0);
        return;
    }
    airlock__v1__heartbeat_response__init(resp);
    resp->leases = v;
    if (r->n_leases && (rc = in_tx_begin(s)) == 0) {
        for (size_t i = 0; i < r->n_leases && rc == 0; i++) {
            v[i] = al_arena_alloc(a, sizeof(**v));
            if (!v[i]) {
                rc = AL_ERR_NOMEM;
                break;
            }
            airlock__v1__lease_status__init(v[i]);
            rc = beat_one(s, call, caller, inst, r->leases[i], v[i], now);
            resp->n_leases = i + 1;
        }
        if (in_tx_end(s, rc == 0) < 0 && rc == 0)
            rc = AL_ERR_INVAL;
    }
    if (rc < 0) {
        in_error(s, call, AL_GRPC_UNAVAILABLE, IN_REASON(INTERNAL), NULL,
                 "the job store cannot take the heartbeat; retry");
        return;
    }
    seen(s, caller, inst, now);
    in_reply(s, call, &resp->base);
}

/* ---- PushEvents ---- */

static int check_event(const Airlock__V1__JobEvent *ev, size_t i, char *field, size_t fn,
                       const char **msg)
{
    snprintf(field, fn, "events[%zu]", i);
    if (ev->seq < 1)
        return *msg = "seq numbers the attempt's events from 1", -1;
    switch (ev->event_case) {
    case AIRLOCK__V1__JOB_EVENT__EVENT_STATE:
        if (!ev->state || ev->state->state != IN_JS(RUNNING) || ev->seq != 1)
            return *msg = "the only state event allowed is RUNNING, as the attempt's first "
                          "event (seq 1)",
                   -1;
        if (ev->state->message && strlen(ev->state->message) > 1024)
            return *msg = "state message over 1024 bytes", -1;
        return 0;
    case AIRLOCK__V1__JOB_EVENT__EVENT_STDOUT_CHUNK:
    case AIRLOCK__V1__JOB_EVENT__EVENT_STDERR_CHUNK: {
        const Airlock__V1__OutputChunk *c =
            ev->event_case == AIRLOCK__V1__JOB_EVENT__EVENT_STDOUT_CHUNK ? ev->stdout_chunk
                                                                         : ev->stderr_chunk;
        if (c && (c->data.len > CHUNK_MAX || c->offset_bytes < 0))
            return *msg = "output chunks hold at most 64 KiB at a non-negative offset", -1;
        return 0;
    }
    case AIRLOCK__V1__JOB_EVENT__EVENT_FILE_DATA:
        if (ev->file_data &&
            (ev->file_data->data.len > CHUNK_MAX || ev->file_data->offset_bytes < 0))
            return *msg = "file data chunks hold at most 64 KiB at a non-negative offset", -1;
        return 0;
    case AIRLOCK__V1__JOB_EVENT__EVENT_DIR_ENTRIES:
        if (ev->dir_entries && ev->dir_entries->n_entries > DIR_ENTRIES_MAX)
            return *msg = "too many directory entries in one event", -1;
        for (size_t k = 0; ev->dir_entries && k < ev->dir_entries->n_entries; k++)
            if (ev->dir_entries->entries[k]->type < 0 ||
                ev->dir_entries->entries[k]->type > AIRLOCK__V1__FILE_TYPE__FILE_TYPE_OTHER)
                return *msg = "unknown directory entry type", -1;
        return 0;
    default:
        return *msg = "only RUNNING state, stdout_chunk, stderr_chunk, file_data and "
                      "dir_entries events may be pushed (results go in Finish)",
               -1;
    }
}

/* Stores the events that continue the attempt's sequence. */
static int store_events(struct in_svc *s, struct in_job *j, const Airlock__V1__PushEventsRequest *r,
                        int64_t now)
{
    int rc = 0;
    for (size_t i = 0; i < r->n_events && rc == 0; i++) {
        Airlock__V1__JobEvent *ev = r->events[i];
        int64_t attempt_seq = ev->seq; /* in_job_event() renumbers ev to the job's log */
        if (attempt_seq <= j->push_seq)
            continue; /* already stored: a resent batch */
        if (attempt_seq != j->push_seq + 1)
            break; /* a gap: nothing after it is stored */
        if (ev->event_case == AIRLOCK__V1__JOB_EVENT__EVENT_STATE) {
            const char *m =
                ev->state->message && ev->state->message[0] ? ev->state->message : "started";
            if (j->state == IN_JS(LEASED)) {
                rc = in_job_transition(s, j, IN_JS(RUNNING), m, now);
                j->started_ms = now;
                j->ran = 1;
            }
        } else {
            int64_t t = ev->time_ms;
            ev->attempt = j->attempt;
            ev->time_ms = t > 0 ? t : now;
            rc = in_job_event(s, j, ev, now);
        }
        if (rc == 0)
            j->push_seq = attempt_seq;
    }
    if (rc == 0)
        rc = in_store_job_update(s->store, j);
    return rc;
}

static void push_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct in_svc *s = user;
    const Airlock__V1__PushEventsRequest *r = (const void *)req;
    struct al_arena *a = al_grpc_call_arena(call);
    const char *caller, *msg = NULL;
    char field[32];
    struct in_job j;
    int64_t now = in_now_ms();
    int rc;

    if (in_auth_executor(s, call, &caller) < 0)
        return;
    if (!r->lease) {
        in_finish_error(call, AL_GRPC_INVALID_ARGUMENT, IN_REASON(INVALID_FIELD), "lease",
                        "lease is required", 0);
        return;
    }
    if (r->n_events > (size_t)s->cfg.max_push_events) {
        in_finish_error(call, AL_GRPC_INVALID_ARGUMENT, IN_REASON(TOO_LARGE), "events",
                        "too many events in one call", 0);
        return;
    }
    for (size_t i = 0; i < r->n_events; i++)
        if (check_event(r->events[i], i, field, sizeof(field), &msg) < 0) {
            in_finish_error(call, AL_GRPC_INVALID_ARGUMENT, IN_REASON(INVALID_FIELD), field, msg,
                            0);
            return;
        }
    rc = in_is_hex(r->lease->job_id, IN_JOB_ID_LEN)
             ? in_store_job_get(s->store, r->lease->job_id, NULL, &j)
             : AL_ERR_NOTFOUND;
    if (rc == AL_ERR_NOTFOUND || (rc == 0 && !lease_ok(&j, caller, r->lease))) {
        lease_lost(call);
        return;
    }
    if (rc == 0 && (rc = in_tx_begin(s)) == 0) {
        rc = store_events(s, &j, r, now);
        if (in_tx_end(s, rc == 0) < 0 && rc == 0)
            rc = AL_ERR_INVAL;
    }
    if (rc < 0) {
        in_error(s, call, AL_GRPC_UNAVAILABLE, IN_REASON(INTERNAL), NULL,
                 "the events could not be stored; resend them");
        return;
    }
    seen(s, caller, j.instance_id, now);
    Airlock__V1__PushEventsResponse *resp = al_arena_alloc(a, sizeof(*resp));
    if (!resp) {
        in_error(s, call, AL_GRPC_INTERNAL, IN_REASON(INTERNAL), NULL, "out of memory");
        return;
    }
    airlock__v1__push_events_response__init(resp);
    resp->acked_seq = j.push_seq;
    resp->cancel_requested = j.cancel_requested;
    in_reply(s, call, &resp->base);
}

/* ---- Finish ---- */

static int check_result(const Airlock__V1__JobResult *res, const char **field, const char **msg)
{
    if (!res)
        return 0;
    if (res->failure_reason < IN_FR(UNSPECIFIED) || res->failure_reason > IN_FR(INTERNAL))
        return *field = "result.failure_reason", *msg = "unknown failure reason", -1;
    if (res->failure_message && strlen(res->failure_message) > FAILURE_MSG_MAX)
        return *field = "result.failure_message", *msg = "failure_message over 4096 bytes", -1;
    for (size_t i = 0; i < res->n_limits; i++) {
        const Airlock__V1__EnforcedLimit *l = res->limits[i];
        if (l->limit < 0 || l->limit > AIRLOCK__V1__LIMIT_KIND__LIMIT_KIND_CPU_BANDWIDTH ||
            l->mechanism < 0 ||
            l->mechanism > AIRLOCK__V1__ENFORCEMENT_MECHANISM__ENFORCEMENT_MECHANISM_NONE)
            return *field = "result.limits", *msg = "unknown limit kind or mechanism", -1;
    }
    return 0;
}

static int finish_job(struct in_svc *s, struct in_job *j, const Airlock__V1__FinishRequest *r,
                      const char *caller, int64_t now, struct al_arena *a)
{
    Airlock__V1__JobResult empty = AIRLOCK__V1__JOB_RESULT__INIT;
    Airlock__V1__JobResult *res = r->result ? r->result : &empty;
    struct in_sm_outcome o;
    const char *msg;
    int rc;

    j->fin_attempt = j->attempt;
    memcpy(j->fin_token, j->token, IN_TOKEN_LEN);
    j->has_fin_token = 1;
    snprintf(j->fin_executor, sizeof(j->fin_executor), "%s", caller);
    if (r->requeue) {
        struct in_sm_attempts at = {j->attempt, j->spent, j->max_attempts, j->cancel_requested,
                                    j->ran};
        in_sm_handed_back(&at, now, &o);
        j->fin_state = o.state;
        if (o.state == IN_JS(QUEUED))
            return in_job_requeue(s, j, o.spent, o.not_before_ms, o.message, now);
        return in_job_end(s, j, o.state, NULL, o.failure_reason,
                          o.state == IN_JS(CANCELLED) && j->cancel_reason[0] ? j->cancel_reason
                                                                             : o.message,
                          now, a);
    }
    j->fin_state = r->state;
    if (r->state == IN_JS(CANCELLED) && j->cancel_reason[0])
        msg = j->cancel_reason;
    else if (res->failure_message && res->failure_message[0])
        msg = res->failure_message;
    else
        msg = r->state == IN_JS(SUCCEEDED) ? "succeeded" : "finished by the executor";
    rc = in_job_end(s, j, r->state, res, res->failure_reason, msg, now, a);
    return rc;
}

static void finish_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct in_svc *s = user;
    const Airlock__V1__FinishRequest *r = (const void *)req;
    struct al_arena *a = al_grpc_call_arena(call);
    const Airlock__V1__LeaseRef *ref = r->lease;
    const char *caller, *field = NULL, *msg = NULL;
    struct in_job j;
    int64_t now = in_now_ms();
    int rc;

    if (in_auth_executor(s, call, &caller) < 0)
        return;
    if (!ref)
        field = "lease", msg = "lease is required";
    else if (!r->requeue && !in_sm_finish_state_valid(r->state))
        field = "state", msg = "state must be SUCCEEDED, FAILED, TIMED_OUT or CANCELLED";
    else if (r->last_event_seq < 0)
        field = "last_event_seq", msg = "last_event_seq must not be negative";
    else
        check_result(r->result, &field, &msg);
    if (msg) {
        in_finish_error(call, AL_GRPC_INVALID_ARGUMENT, IN_REASON(INVALID_FIELD), field, msg, 0);
        return;
    }
    rc = in_is_hex(ref->job_id, IN_JOB_ID_LEN) ? in_store_job_get(s->store, ref->job_id, NULL, &j)
                                               : AL_ERR_NOTFOUND;
    if (rc == AL_ERR_NOTFOUND) {
        lease_lost(call);
        return;
    }
    Airlock__V1__FinishResponse *resp = al_arena_alloc(a, sizeof(*resp));
    if (rc < 0 || !resp) {
        in_error(s, call, AL_GRPC_UNAVAILABLE, IN_REASON(INTERNAL), NULL,
                 "the job store cannot be read right now; retry");
        return;
    }
    airlock__v1__finish_response__init(resp);
    /* a repeat of the Finish already accepted for this lease */
    if (j.has_fin_token && j.fin_attempt == ref->attempt &&
        ref->fencing_token.len == IN_TOKEN_LEN &&
        in_ct_equal(j.fin_token, ref->fencing_token.data, IN_TOKEN_LEN) &&
        strcmp(j.fin_executor, caller) == 0) {
        resp->state = j.fin_state;
        in_reply(s, call, &resp->base);
        return;
    }
    if (!lease_ok(&j, caller, ref)) {
        lease_lost(call);
        return;
    }
    if (r->last_event_seq > j.push_seq) {
        in_finish_error(call, AL_GRPC_FAILED_PRECONDITION, IN_REASON(SEQUENCE_GAP),
                        "last_event_seq",
                        "not every pushed event was stored: push from acked_seq + 1 first", 0);
        return;
    }
    if ((rc = in_tx_begin(s)) == 0) {
        rc = finish_job(s, &j, r, caller, now, a);
        if (in_tx_end(s, rc == 0) < 0 && rc == 0)
            rc = AL_ERR_INVAL;
    }
    if (rc < 0) {
        in_error(s, call, AL_GRPC_UNAVAILABLE, IN_REASON(INTERNAL), NULL,
                 "the outcome could not be stored; retry the Finish");
        return;
    }
    seen(s, caller, j.instance_id, now);
    AL_LOG_DEBUG("intake.finish", "job=%s attempt=%d state=%s", j.id, j.fin_attempt,
                 in_sm_state_name(j.fin_state));
    resp->state = j.fin_state;
    in_reply(s, call, &resp->base);
}

/* ---- expiry and queue timeouts ---- */

static int process_batch(struct in_svc *s, enum in_due what, int64_t now)
{
    char ids[64][IN_JOB_ID_LEN + 1];
    struct in_job j;
    int n = 0, rc;

    if ((rc = in_store_due(s->store, what, now, ids, 64, &n)) < 0)
        return rc;
    for (int i = 0; i < n; i++) {
        if ((rc = in_tx_begin(s)) < 0)
            return rc;
        rc = in_store_job_get(s->store, ids[i], NULL, &j);
        if (rc == 0 && what == IN_DUE_LEASE &&
            (j.state == IN_JS(LEASED) || j.state == IN_JS(RUNNING)) && j.lease_expires_ms <= now)
            rc = in_job_lease_expired(s, &j, now, in_txa(s));
        else if (rc == 0 && what == IN_DUE_QUEUE && j.state == IN_JS(QUEUED) &&
                 j.queue_deadline_ms <= now)
            rc = in_job_queue_timeout(s, &j, now, in_txa(s));
        if (in_tx_end(s, rc == 0) < 0 || rc < 0)
            return rc < 0 ? rc : AL_ERR_INVAL;
    }
    return n;
}

void in_process_due(struct in_svc *s, int64_t now_ms)
{
    int n;
    /* bounded per turn; the wake timer comes back at once for the rest */
    for (int round = 0; round < 8; round++) {
        n = process_batch(s, IN_DUE_LEASE, now_ms);
        if (n < 64)
            break;
    }
    for (int round = 0; round < 8; round++) {
        n = process_batch(s, IN_DUE_QUEUE, now_ms);
        if (n < 64)
            break;
    }
    in_deadlines_dirty(s);
}

int in_execsvc_register(struct in_svc *s)
{
    static const struct al_grpc_method_impl impls[] = {
        {"Lease", lease_cb, 0},
        {"Heartbeat", heartbeat_cb, 0},
        {"PushEvents", push_cb, 0},
        {"Finish", finish_cb, 0},
    };
    return al_grpc_server_add_service(s->svc.grpc, &airlock__v1__executor_service__descriptor,
                                      impls, sizeof(impls) / sizeof(impls[0]), s);
}
