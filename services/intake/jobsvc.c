/*
 * jobsvc: airlock.v1.JobService for agent platforms: Submit, Get, Watch,
 * Cancel, List. Every call is authenticated (auth.c) and sees only the
 * caller's own jobs (admin callers: any job); another principal's job id is
 * answered NOT_FOUND exactly like an unknown one. Changes go through the
 * group commit (insvc.h): a Submit is answered only once its job is durable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "al_base64.h"
#include "al_err.h"
#include "al_id.h"
#include "al_log.h"
#include "al_metrics.h"
#include "insvc.h"
#include "validate.h"

#define PAGE_DEFAULT     50
#define PAGE_MAX         500
#define PAGE_TOKEN_TTL   (3600 * 1000LL)
#define PAGE_PAYLOAD_LEN (1 + 8 + 8 + 16 + 16)
#define PAGE_MAC_LEN     16

static int draining(struct in_svc *s, struct al_grpc_call *call)
{
    if (!s->svc.draining)
        return 0;
    in_finish_error(call, AL_GRPC_UNAVAILABLE, IN_REASON(DRAINING), NULL,
                    "intake is draining; retry on another replica", 1000);
    return 1;
}

/* Loads a job the caller may see; otherwise answers NOT_FOUND (also for
 * another principal's job) and returns -1. */
static int load_visible(struct in_svc *s, struct al_grpc_call *call, const struct in_caller *c,
                        const char *id, struct al_arena *a, struct in_job *j)
{
    int rc;
    if (!id || !id[0]) {
        in_finish_error(call, AL_GRPC_INVALID_ARGUMENT, IN_REASON(INVALID_FIELD), "job_id",
                        "job_id is required", 0);
        return -1;
    }
    rc = in_is_hex(id, IN_JOB_ID_LEN) ? in_store_job_get(s->store, id, a, j) : AL_ERR_NOTFOUND;
    if (rc == 0 && in_caller_sees(c, j))
        return 0;
    if (rc < 0 && rc != AL_ERR_NOTFOUND)
        in_error(s, call, AL_GRPC_UNAVAILABLE, IN_REASON(INTERNAL), NULL,
                 "the job store cannot be read right now; retry");
    else
        in_error(s, call, AL_GRPC_NOT_FOUND, IN_REASON(NOT_FOUND), "job_id", "no such job");
    return -1;
}

/* ---- Submit ---- */

/* An existing job for (principal, key): same spec -> it; else ALREADY_EXISTS.
 * Returns 1 when the call was answered, 0 to create a new job. */
static int idempotent_hit(struct in_svc *s, struct al_grpc_call *call, const struct in_caller *c,
                          const char *key, const uint8_t hash[32])
{
    char id[IN_JOB_ID_LEN + 1];
    struct in_job j;
    struct al_arena *a = al_grpc_call_arena(call);
    int rc = in_idem_check(s->store, c->principal, key, hash, id);

    if (rc == IN_IDEM_NEW)
        return 0;
    if (rc == IN_IDEM_CONFLICT) {
        in_error(s, call, AL_GRPC_ALREADY_EXISTS, IN_REASON(IDEMPOTENCY_KEY_REUSED),
                 "idempotency_key", "this idempotency key was already used for a different spec");
        return 1;
    }
    if (rc == IN_IDEM_SAME)
        rc = in_store_job_get(s->store, id, a, &j);
    if (rc < 0) {
        in_error(s, call, AL_GRPC_UNAVAILABLE, IN_REASON(INTERNAL), NULL,
                 "the job store cannot be read right now; retry");
        return 1;
    }
    Airlock__V1__SubmitJobResponse *resp = al_arena_alloc(a, sizeof(*resp));
    if (!resp ||
        !(airlock__v1__submit_job_response__init(resp), resp->job = in_job_msg(&j, a, 1))) {
        in_error(s, call, AL_GRPC_INTERNAL, IN_REASON(INTERNAL), NULL, "out of memory");
        return 1;
    }
    resp->deduplicated = 1;
    al_metric_add(s->m_dedup, 1);
    in_reply(s, call, &resp->base);
    return 1;
}

static int quota_ok(struct in_svc *s, struct al_grpc_call *call, const struct in_caller *c)
{
    struct in_pcount *pc = in_pcount(s, c->principal);
    int max = in_config_max_queued(&s->cfg, c->rule);

    if (pc && pc->queued >= max) {
        in_error(s, call, AL_GRPC_RESOURCE_EXHAUSTED, IN_REASON(QUOTA_EXCEEDED), NULL,
                 "this principal already has %d queued jobs (quota %d)", pc->queued, max);
        return 0;
    }
    if (s->queued_total >= s->cfg.queue_max_queued) {
        in_error_retry(s, call, AL_GRPC_RESOURCE_EXHAUSTED, IN_REASON(QUEUE_FULL), 1000,
                       "the intake queue is full; retry later");
        return 0;
    }
    return 1;
}

static uint8_t *pack_spec(struct al_arena *a, const Airlock__V1__JobSpec *spec, size_t *len)
{
    uint8_t *buf;
    *len = airlock__v1__job_spec__get_packed_size(spec);
    buf = al_arena_alloc(a, *len ? *len : 1);
    if (buf)
        airlock__v1__job_spec__pack(spec, buf);
    return buf;
}

static int new_job(struct in_svc *s, const struct in_caller *c, const char *key,
                   Airlock__V1__JobSpec *spec, const uint8_t hash[32], struct al_arena *a,
                   struct in_job *j)
{
    Airlock__V1__JobEvent ev = AIRLOCK__V1__JOB_EVENT__INIT;
    Airlock__V1__StateChange sc = AIRLOCK__V1__STATE_CHANGE__INIT;
    int64_t now = in_now_ms();
    int rc;

    _Static_assert(IN_JOB_ID_LEN == AL_ID_HEX_LEN, "job ids are al_id hex");
    memset(j, 0, sizeof(*j));
    /* time-ordered (al_id.h): the jobs' id index and the events table, keyed
     * by job id, grow at their right edge instead of at a random leaf */
    if ((rc = al_id_new_hex(j->id)) < 0)
        return rc;
    snprintf(j->principal, sizeof(j->principal), "%s", c->principal);
    j->auth_method = c->auth_method;
    snprintf(j->key_id, sizeof(j->key_id), "%s", c->key_id);
    snprintf(j->pool, sizeof(j->pool), "%s", spec->pool);
    snprintf(j->session_id, sizeof(j->session_id), "%s", spec->session_id ? spec->session_id : "");
    j->kind = spec->kind;
    snprintf(j->idem_key, sizeof(j->idem_key), "%s", key);
    memcpy(j->spec_hash, hash, 32);
    j->max_attempts = spec->max_attempts;
    j->queue_timeout_ms = spec->queue_timeout_ms;
    j->created_ms = j->updated_ms = now;
    j->not_before_ms = now;
    j->queue_deadline_ms = now + spec->queue_timeout_ms;
    if (!(j->spec = pack_spec(a, spec, &j->spec_len)))
        return AL_ERR_NOMEM;
    /* the first event: QUEUED, attempt 0 */
    sc.state = IN_JS(QUEUED);
    sc.message = "submitted";
    ev.event_case = AIRLOCK__V1__JOB_EVENT__EVENT_STATE;
    ev.state = &sc;
    if ((rc = in_job_event(s, j, &ev, now)) < 0)
        return rc;
    j->state = IN_JS(QUEUED);
    if ((rc = in_store_job_insert(s->store, j)) < 0)
        return rc;
    if (key[0] && (rc = in_store_idem_put(s->store, c->principal, key, j->id, hash, now)) < 0)
        return rc;
    in_count(s, c->principal, j->pool, 0, IN_JS(QUEUED));
    in_dispatch_dirty(s);
    if (s->wake_at_ms == 0 || j->queue_deadline_ms < s->wake_at_ms)
        in_deadlines_dirty(s);
    return 0;
}

static void submit_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct in_svc *s = user;
    const Airlock__V1__SubmitJobRequest *r = (const void *)req;
    struct al_arena *a = al_grpc_call_arena(call);
    Airlock__V1__JobSpec *spec = r->spec;
    const char *key = r->idempotency_key ? r->idempotency_key : "";
    struct in_caller c;
    struct in_verr e;
    struct in_job j;
    uint8_t hash[32], *canon;
    size_t clen;
    int rc;

    if (draining(s, call) || in_auth_job_caller(s, call, IN_SCOPE_SUBMIT, &c) < 0)
        return;
    if (key[0] && !in_idem_key_valid(key)) {
        in_finish_error(call, AL_GRPC_INVALID_ARGUMENT, IN_REASON(INVALID_FIELD), "idempotency_key",
                        "idempotency keys are 1-128 printable ASCII characters", 0);
        return;
    }
    struct in_validate_ctx x = {&s->cfg, c.rule, s->signer != NULL};
    if (in_validate_spec(&x, spec, &e) < 0) {
        in_finish_error(call, e.status, e.reason, e.field, e.message, 0);
        return;
    }
    in_spec_canonical(spec);
    if (!(canon = pack_spec(a, spec, &clen)) || in_sha256(canon, clen, hash) < 0 ||
        in_spec_resolve(&s->cfg, in_config_pool(&s->cfg, spec->pool), spec, a) < 0) {
        in_finish_error(call, AL_GRPC_INTERNAL, IN_REASON(INTERNAL), NULL, "out of memory", 0);
        return;
    }
    if ((rc = in_tx_begin(s)) < 0) {
        in_error(s, call, AL_GRPC_UNAVAILABLE, IN_REASON(INTERNAL), NULL,
                 "the job store is busy; retry");
        return;
    }
    if ((key[0] && idempotent_hit(s, call, &c, key, hash)) || !quota_ok(s, call, &c)) {
        in_tx_end(s, 1);
        return;
    }
    rc = new_job(s, &c, key, spec, hash, a, &j);
    if (in_tx_end(s, rc == 0) < 0 || rc < 0) {
        AL_LOG_ERROR("intake.submit", "principal=%s reason=\"%s\"", c.principal, al_strerror(rc));
        in_error(s, call, AL_GRPC_UNAVAILABLE, IN_REASON(INTERNAL), NULL,
                 "the job could not be stored; retry (with the same idempotency key)");
        return;
    }
    Airlock__V1__SubmitJobResponse *resp = al_arena_alloc(a, sizeof(*resp));
    if (resp) {
        airlock__v1__submit_job_response__init(resp);
        resp->job = in_job_msg(&j, a, 1);
    }
    if (!resp || !resp->job) {
        in_error(s, call, AL_GRPC_INTERNAL, IN_REASON(INTERNAL), NULL, "out of memory");
        return;
    }
    al_metric_add(s->m_submits, 1);
    AL_LOG_DEBUG("intake.submit", "job=%s principal=%s pool=%s", j.id, j.principal, j.pool);
    in_reply(s, call, &resp->base);
}

/* ---- Get ---- */

static void get_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct in_svc *s = user;
    const Airlock__V1__GetJobRequest *r = (const void *)req;
    struct al_arena *a = al_grpc_call_arena(call);
    struct in_caller c;
    struct in_job j;
    Airlock__V1__Job *m;

    if (in_auth_job_caller(s, call, IN_SCOPE_READ, &c) < 0 ||
        load_visible(s, call, &c, r->job_id, a, &j) < 0)
        return;
    if (!(m = in_job_msg(&j, a, 1))) {
        in_error(s, call, AL_GRPC_INTERNAL, IN_REASON(INTERNAL), NULL, "out of memory");
        return;
    }
    in_reply(s, call, &m->base);
}

/* ---- Watch ---- */

static void watch_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct in_svc *s = user;
    const Airlock__V1__WatchJobRequest *r = (const void *)req;
    struct in_caller c;
    struct in_job j;

    if (draining(s, call) || in_auth_job_caller(s, call, IN_SCOPE_READ, &c) < 0)
        return;
    if (r->after_seq < 0) {
        in_finish_error(call, AL_GRPC_INVALID_ARGUMENT, IN_REASON(INVALID_FIELD), "after_seq",
                        "after_seq must not be negative", 0);
        return;
    }
    if (load_visible(s, call, &c, r->job_id, NULL, &j) < 0)
        return;
    in_watch_start(s, call, &j, r->after_seq);
}

/* ---- Cancel ---- */

static void cancel_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct in_svc *s = user;
    const Airlock__V1__CancelJobRequest *r = (const void *)req;
    struct al_arena *a = al_grpc_call_arena(call);
    const char *reason = r->reason ? r->reason : "";
    char msg[IN_REASON_MAX + 1];
    struct in_caller c;
    struct in_job j;
    Airlock__V1__Job *m;
    int rc = 0;

    if (in_auth_job_caller(s, call, IN_SCOPE_CANCEL, &c) < 0)
        return;
    if (strlen(reason) > IN_REASON_MAX) {
        in_finish_error(call, AL_GRPC_INVALID_ARGUMENT, IN_REASON(TOO_LARGE), "reason",
                        "reason is at most 256 bytes", 0);
        return;
    }
    if (load_visible(s, call, &c, r->job_id, a, &j) < 0)
        return;
    snprintf(msg, sizeof(msg), "%s", reason[0] ? reason : "cancelled by the caller");
    if (j.state == IN_JS(QUEUED) ||
        ((j.state == IN_JS(LEASED) || j.state == IN_JS(RUNNING)) && !j.cancel_requested)) {
        int64_t now = in_now_ms();
        if ((rc = in_tx_begin(s)) == 0) {
            if (j.state == IN_JS(QUEUED)) {
                rc = in_job_end(s, &j, IN_JS(CANCELLED), NULL, IN_FR(CANCELLED), msg, now, a);
            } else {
                j.cancel_requested = 1;
                snprintf(j.cancel_reason, sizeof(j.cancel_reason), "%s", msg);
                j.updated_ms = now;
                rc = in_store_job_update(s->store, &j);
                if (rc == 0)
                    in_send_cancel(s, &j);
            }
            if (in_tx_end(s, rc == 0) < 0 && rc == 0)
                rc = AL_ERR_INVAL;
        }
        if (rc < 0) {
            in_error(s, call, AL_GRPC_UNAVAILABLE, IN_REASON(INTERNAL), NULL,
                     "the cancellation could not be stored; retry");
            return;
        }
        AL_LOG_INFO("intake.cancel", "job=%s principal=%s state=%s", j.id, c.principal,
                    in_sm_state_name(j.state));
    }
    if (!(m = in_job_msg(&j, a, 1))) {
        in_error(s, call, AL_GRPC_INTERNAL, IN_REASON(INTERNAL), NULL, "out of memory");
        return;
    }
    in_reply(s, call, &m->base);
}

/* ---- List ---- */

struct page_pos {
    int64_t issued_ms, created_ms;
    uint8_t id[16];
    uint8_t filter[16];
};

static void filter_hash(const Airlock__V1__ListJobsRequest *r, const char *caller,
                        const char *target, unsigned states, uint8_t out[16])
{
    char buf[1024];
    uint8_t h[32];
    snprintf(buf, sizeof(buf), "%s\n%s\n%u\n%s\n%s\n%lld\n%lld", caller, target, states,
             r->session_id ? r->session_id : "", r->pool ? r->pool : "",
             (long long)r->created_after_ms, (long long)r->created_before_ms);
    in_sha256(buf, strlen(buf), h);
    memcpy(out, h, 16);
}

static void put64(uint8_t *p, int64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)(v & 0xff);
}

static int64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return (int64_t)v;
}

static int token_mac(struct in_svc *s, const uint8_t *payload, uint8_t mac[PAGE_MAC_LEN])
{
    uint8_t full[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), s->page_key, sizeof(s->page_key), payload, PAGE_PAYLOAD_LEN, full,
              &len) ||
        len < PAGE_MAC_LEN)
        return AL_ERR_CRYPTO;
    memcpy(mac, full, PAGE_MAC_LEN);
    return 0;
}

static char *token_make(struct in_svc *s, struct al_arena *a, const struct page_pos *p)
{
    uint8_t raw[PAGE_PAYLOAD_LEN + PAGE_MAC_LEN];
    char *out = al_arena_alloc(a, 128);
    raw[0] = 1;
    put64(raw + 1, p->issued_ms);
    put64(raw + 9, p->created_ms);
    memcpy(raw + 17, p->id, 16);
    memcpy(raw + 33, p->filter, 16);
    if (!out || token_mac(s, raw, raw + PAGE_PAYLOAD_LEN) < 0 ||
        al_base64_encode(raw, sizeof(raw), out, 128, AL_BASE64_URL | AL_BASE64_NOPAD, NULL) < 0)
        return NULL;
    return out;
}

static int token_read(struct in_svc *s, const char *tok, const uint8_t filter[16],
                      struct page_pos *p)
{
    uint8_t raw[PAGE_PAYLOAD_LEN + PAGE_MAC_LEN + 4], mac[PAGE_MAC_LEN];
    size_t n = 0;
    int64_t now = in_now_ms();

    if (strlen(tok) > 120 ||
        al_base64_decode(tok, strlen(tok), raw, sizeof(raw), AL_BASE64_URL | AL_BASE64_NOPAD, &n) <
            0 ||
        n != PAGE_PAYLOAD_LEN + PAGE_MAC_LEN || raw[0] != 1 || token_mac(s, raw, mac) < 0 ||
        !in_ct_equal(mac, raw + PAGE_PAYLOAD_LEN, PAGE_MAC_LEN))
        return AL_ERR_INVAL;
    p->issued_ms = get64(raw + 1);
    p->created_ms = get64(raw + 9);
    memcpy(p->id, raw + 17, 16);
    memcpy(p->filter, raw + 33, 16);
    if (!in_ct_equal(p->filter, filter, 16) || p->issued_ms > now + 60000 ||
        now - p->issued_ms > PAGE_TOKEN_TTL)
        return AL_ERR_INVAL;
    return 0;
}

struct list_ctx {
    struct in_svc *s;
    struct al_arena *a, *scratch;
    Airlock__V1__Job **jobs;
    size_t n, limit, bytes, budget;
    int more, failed;
    int64_t last_created;
    char last_id[IN_JOB_ID_LEN + 1];
};

static int list_row(void *user, const struct in_job *j)
{
    struct list_ctx *x = user;
    Airlock__V1__Job *m;
    size_t sz;

    if (x->n >= x->limit) {
        x->more = 1;
        return 1;
    }
    m = in_job_msg(j, x->a, 0);
    al_arena_cleanup(x->scratch); /* the row's blobs */
    if (!m) {
        x->failed = 1;
        return 1;
    }
    sz = airlock__v1__job__get_packed_size(m) + 8;
    if (x->n > 0 && x->bytes + sz > x->budget) {
        x->more = 1; /* a page may hold fewer items than asked */
        return 1;
    }
    x->bytes += sz;
    x->jobs[x->n++] = m;
    x->last_created = j->created_ms;
    snprintf(x->last_id, sizeof(x->last_id), "%s", j->id);
    return 0;
}

static int list_args(struct in_svc *s, struct al_grpc_call *call, const struct in_caller *c,
                     const Airlock__V1__ListJobsRequest *r, struct in_list_query *q)
{
    const char *field = NULL, *msg = NULL;
    int status = AL_GRPC_INVALID_ARGUMENT, reason = IN_REASON(INVALID_FIELD);
    char fbuf[32];

    memset(q, 0, sizeof(*q));
    q->principal = c->principal;
    for (size_t i = 0; i < r->n_states && !msg; i++) {
        if (r->states[i] == IN_JS(UNSPECIFIED))
            continue;
        if (!in_sm_state_valid(r->states[i])) {
            snprintf(fbuf, sizeof(fbuf), "states[%zu]", i);
            field = fbuf;
            msg = "unknown job state";
        } else {
            q->states |= 1u << (unsigned)r->states[i];
        }
    }
    if (msg)
        ;
    else if (r->session_id && r->session_id[0] && !in_session_valid(r->session_id))
        field = "session_id", msg = "session ids are 1-128 characters of [A-Za-z0-9._-]";
    else if (r->pool && r->pool[0] && !in_name_valid(r->pool, IN_POOL_NAME_MAX))
        field = "pool", msg = "pool names are 1-64 characters of [A-Za-z0-9._-]";
    else if (r->created_after_ms < 0 || r->created_before_ms < 0)
        field = r->created_after_ms < 0 ? "created_after_ms" : "created_before_ms",
        msg = "times must not be negative";
    else if (r->page && r->page->page_size < 0)
        field = "page.page_size", msg = "page_size must not be negative";
    else if (r->principal && r->principal[0] && !c->admin)
        status = AL_GRPC_PERMISSION_DENIED, reason = IN_REASON(IDENTITY_NOT_ALLOWED),
        field = "principal", msg = "only admin callers may list another principal's jobs";
    else if (r->principal && r->principal[0] && !in_principal_valid(r->principal))
        field = "principal", msg = "not a principal name";
    if (msg) {
        in_finish_error(call, status, reason, field, msg, 0);
        return -1;
    }
    if (r->principal && r->principal[0])
        q->principal = r->principal;
    q->session_id = r->session_id;
    q->pool = r->pool;
    q->created_after_ms = r->created_after_ms;
    q->created_before_ms = r->created_before_ms;
    q->limit = r->page && r->page->page_size > 0 ? r->page->page_size : PAGE_DEFAULT;
    if (q->limit > PAGE_MAX)
        q->limit = PAGE_MAX;
    (void)s;
    return 0;
}

static void list_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct in_svc *s = user;
    const Airlock__V1__ListJobsRequest *r = (const void *)req;
    struct al_arena *a = al_grpc_call_arena(call), scratch;
    struct in_caller c;
    struct in_list_query q;
    struct page_pos pos;
    uint8_t filter[16];
    char cursor_id[IN_JOB_ID_LEN + 1];
    int rc;

    if (in_auth_job_caller(s, call, IN_SCOPE_READ, &c) < 0 || list_args(s, call, &c, r, &q) < 0)
        return;
    filter_hash(r, c.principal, q.principal, q.states, filter);
    if (r->page && r->page->page_token && r->page->page_token[0]) {
        if (token_read(s, r->page->page_token, filter, &pos) < 0) {
            in_finish_error(call, AL_GRPC_INVALID_ARGUMENT, IN_REASON(PAGE_TOKEN_INVALID),
                            "page.page_token",
                            "the page token is malformed, expired or for other filters", 0);
            return;
        }
        q.has_cursor = 1;
        q.cursor_created_ms = pos.created_ms;
        in_hex(pos.id, 16, cursor_id);
        q.cursor_id = cursor_id;
    }
    Airlock__V1__ListJobsResponse *resp = al_arena_alloc(a, sizeof(*resp));
    Airlock__V1__PageResponse *page = al_arena_alloc(a, sizeof(*page));
    struct list_ctx x = {.s = s, .a = a, .scratch = &scratch, .limit = (size_t)q.limit};
    x.budget = s->cfg.common.max_message_size > 65536 ? s->cfg.common.max_message_size - 65536
                                                      : s->cfg.common.max_message_size / 2;
    x.jobs = al_arena_alloc(a, sizeof(*x.jobs) * (size_t)(q.limit + 1));
    if (!resp || !page || !x.jobs) {
        in_finish_error(call, AL_GRPC_INTERNAL, IN_REASON(INTERNAL), NULL, "out of memory", 0);
        return;
    }
    al_arena_init(&scratch, 0);
    q.limit += 1; /* one more row tells whether a next page exists */
    rc = in_store_list(s->store, &q, &scratch, list_row, &x);
    al_arena_cleanup(&scratch);
    if (rc < 0 || x.failed) {
        in_error(s, call, AL_GRPC_UNAVAILABLE, IN_REASON(INTERNAL), NULL,
                 "the job store cannot be read right now; retry");
        return;
    }
    airlock__v1__list_jobs_response__init(resp);
    airlock__v1__page_response__init(page);
    resp->jobs = x.jobs;
    resp->n_jobs = x.n;
    resp->page = page;
    page->next_page_token = "";
    if (x.more && x.n > 0) {
        pos.issued_ms = in_now_ms();
        pos.created_ms = x.last_created;
        in_unhex(x.last_id, IN_JOB_ID_LEN, pos.id, 16);
        memcpy(pos.filter, filter, 16);
        page->next_page_token = token_make(s, a, &pos);
        if (!page->next_page_token) {
            in_finish_error(call, AL_GRPC_INTERNAL, IN_REASON(INTERNAL), NULL, "out of memory", 0);
            return;
        }
    }
    in_reply(s, call, &resp->base);
}

int in_jobsvc_register(struct in_svc *s)
{
    static const struct al_grpc_method_impl impls[] = {
        {"Submit", submit_cb, 0}, {"Get", get_cb, 0},   {"Watch", watch_cb, 0},
        {"Cancel", cancel_cb, 0}, {"List", list_cb, 0},
    };
    return al_grpc_server_add_service(s->svc.grpc, &airlock__v1__job_service__descriptor, impls,
                                      sizeof(impls) / sizeof(impls[0]), s);
}
