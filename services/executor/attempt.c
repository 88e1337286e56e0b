/*
 * attempt: one leased attempt, from assignment to an accepted Finish.
 *
 * Events are numbered per attempt (1 = the RUNNING state change) and stay
 * queued, packed, until intake acknowledges them (PushEventsResponse.acked_seq);
 * at most one PushEvents is in flight per attempt and it carries everything
 * queued since the last one (natural batching under load, one event when
 * idle). A failed push is resent from the first unacknowledged event after a
 * backoff. Output is coalesced into chunks of at most 64 KiB while a push is
 * in flight, keeping stdout/stderr order. Finish is sent once the sandbox has
 * ended and every event is acknowledged; a SEQUENCE_GAP answer re-pushes, a
 * LEASE_LOST answer (to any report) ends the attempt without another word.
 * Fencing tokens are never logged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "al_edge.h"
#include "al_err.h"
#include "al_grpc.h"
#include "al_grpc_client.h"
#include "al_log.h"
#include "al_metrics.h"
#include "executor.h"

#define CHUNK_MAX      (64 * 1024)
#define RETRY_MIN_S    0.05
#define RETRY_MAX_S    5.0
#define REPORT_TIMEOUT 30.0

static void push_kick(struct ex_attempt *a);
static void finish_kick(struct ex_attempt *a);
static void maybe_free(struct ex_attempt *a);

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ex_attempt_ref(const struct ex_attempt *a, Airlock__V1__LeaseRef *ref)
{
    airlock__v1__lease_ref__init(ref);
    ref->job_id = a->job_id;
    ref->attempt = a->attempt;
    ref->fencing_token.data = (uint8_t *)a->token;
    ref->fencing_token.len = EX_TOKEN_LEN;
}

struct ex_attempt *ex_attempt_find(struct ex *ex, const char *job_id, int32_t attempt)
{
    for (struct ex_attempt *a = ex->attempts; a; a = a->next)
        if (a->attempt == attempt && strcmp(a->job_id, job_id) == 0)
            return a;
    return NULL;
}

/* ---------- events ---------- */

/* Pending output not yet made into an event (coalesced while a push is in flight). */
struct pending {
    struct pending *next_spare; /* in ex->spare_pending */
    int stream;                 /* 1 stdout, 2 stderr */
    size_t len;
    uint8_t buf[CHUNK_MAX];
};

/* A coalescing buffer: a spare one when there is one (not zeroed: only
 * buf[0..len) is ever read), else a new one. NULL when out of memory. */
static struct pending *pending_get(struct ex *ex)
{
    struct pending *p = ex->spare_pending;
    if (p) {
        ex->spare_pending = p->next_spare;
        ex->n_spare_pending--;
    } else if (!(p = malloc(sizeof(*p)))) {
        return NULL;
    }
    p->next_spare = NULL;
    p->stream = 0;
    p->len = 0;
    return p;
}

static void pending_put(struct ex *ex, struct pending *p)
{
    if (!p)
        return;
    if (ex->n_spare_pending >= (size_t)(ex->cfg.slots > 0 ? ex->cfg.slots : 1)) {
        free(p);
        return;
    }
    p->next_spare = ex->spare_pending;
    ex->spare_pending = p;
    ex->n_spare_pending++;
}

static int queue_event(struct ex_attempt *a, Airlock__V1__JobEvent *e)
{
    struct ex_event *q;

    if (a->finished)
        return 0; /* lost: nothing more is sent */
    e->seq = a->next_seq;
    e->time_ms = wall_ms();
    e->attempt = a->attempt;
    q = calloc(1, sizeof(*q));
    if (!q)
        return AL_ERR_NOMEM;
    q->len = airlock__v1__job_event__get_packed_size(e);
    q->packed = malloc(q->len ? q->len : 1);
    if (!q->packed) {
        free(q);
        return AL_ERR_NOMEM;
    }
    airlock__v1__job_event__pack(e, q->packed);
    q->seq = a->next_seq++;
    AL_LOG_DEBUG("executor.event_queued", "job=%s seq=%lld case=%d len=%zu", a->job_id,
                 (long long)q->seq, (int)e->event_case, q->len);
    *a->events_tail = q;
    a->events_tail = &q->next;
    a->queued_bytes += q->len;
    return 0;
}

static struct pending *pend(struct ex_attempt *a)
{
    return (struct pending *)a->pending;
}

static void flush_pending(struct ex_attempt *a)
{
    struct pending *p = pend(a);
    Airlock__V1__JobEvent e = AIRLOCK__V1__JOB_EVENT__INIT;
    Airlock__V1__OutputChunk ch = AIRLOCK__V1__OUTPUT_CHUNK__INIT;

    if (!p || !p->len)
        return;
    ch.data.data = p->buf;
    ch.data.len = p->len;
    if (p->stream == 1) {
        ch.offset_bytes = a->stdout_off;
        a->stdout_off += (int64_t)p->len;
        e.event_case = AIRLOCK__V1__JOB_EVENT__EVENT_STDOUT_CHUNK;
        e.stdout_chunk = &ch;
    } else {
        ch.offset_bytes = a->stderr_off;
        a->stderr_off += (int64_t)p->len;
        e.event_case = AIRLOCK__V1__JOB_EVENT__EVENT_STDERR_CHUNK;
        e.stderr_chunk = &ch;
    }
    if (queue_event(a, &e) < 0)
        AL_LOG_ERROR("executor.event", "job=%s attempt=%d reason=\"out of memory; output lost\"",
                     a->job_id, a->attempt);
    p->len = 0;
}

void ex_attempt_output(struct ex_attempt *a, int stream, const uint8_t *data, size_t n)
{
    struct pending *p = pend(a);

    if (!p || a->finished)
        return;
    while (n) {
        if (p->len && (p->stream != stream || p->len == CHUNK_MAX))
            flush_pending(a);
        p->stream = stream;
        size_t take = CHUNK_MAX - p->len < n ? CHUNK_MAX - p->len : n;
        memcpy(p->buf + p->len, data, take);
        p->len += take;
        data += take;
        n -= take;
    }
    push_kick(a);
}

void ex_attempt_file_data(struct ex_attempt *a, const uint8_t *data, size_t n, int64_t offset)
{
    Airlock__V1__JobEvent e = AIRLOCK__V1__JOB_EVENT__INIT;
    Airlock__V1__FileData fd = AIRLOCK__V1__FILE_DATA__INIT;

    flush_pending(a);
    fd.data.data = (uint8_t *)data;
    fd.data.len = n;
    fd.offset_bytes = offset;
    e.event_case = AIRLOCK__V1__JOB_EVENT__EVENT_FILE_DATA;
    e.file_data = &fd;
    if (queue_event(a, &e) < 0)
        AL_LOG_ERROR("executor.event", "job=%s reason=\"out of memory; file data lost\"",
                     a->job_id);
    push_kick(a);
}

void ex_attempt_dir_entries(struct ex_attempt *a, Airlock__V1__DirEntry **entries, size_t n)
{
    Airlock__V1__JobEvent e = AIRLOCK__V1__JOB_EVENT__INIT;
    Airlock__V1__DirEntries de = AIRLOCK__V1__DIR_ENTRIES__INIT;

    flush_pending(a);
    de.entries = entries;
    de.n_entries = n;
    e.event_case = AIRLOCK__V1__JOB_EVENT__EVENT_DIR_ENTRIES;
    e.dir_entries = &de;
    if (queue_event(a, &e) < 0)
        AL_LOG_ERROR("executor.event", "job=%s reason=\"out of memory; entries lost\"", a->job_id);
    push_kick(a);
}

static void queue_running(struct ex_attempt *a)
{
    Airlock__V1__JobEvent e = AIRLOCK__V1__JOB_EVENT__INIT;
    Airlock__V1__StateChange sc = AIRLOCK__V1__STATE_CHANGE__INIT;
    char msg[300];

    snprintf(msg, sizeof(msg), "running on %s", a->ex->self_id);
    sc.state = AIRLOCK__V1__JOB_STATE__JOB_STATE_RUNNING;
    sc.previous_state = AIRLOCK__V1__JOB_STATE__JOB_STATE_LEASED;
    sc.message = msg;
    e.event_case = AIRLOCK__V1__JOB_EVENT__EVENT_STATE;
    e.state = &sc;
    if (queue_event(a, &e) == 0)
        a->reported_running = 1;
    push_kick(a);
}

/* Drops events intake has stored. */
static void drop_acked(struct ex_attempt *a)
{
    while (a->events && a->events->seq <= a->acked_seq) {
        struct ex_event *q = a->events;
        a->events = q->next;
        a->queued_bytes -= q->len;
        OPENSSL_cleanse(q->packed, q->len);
        free(q->packed);
        free(q);
    }
    if (!a->events)
        a->events_tail = &a->events;
}

/* ---------- retries ---------- */

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ex_attempt *a = w->data;
    (void)loop;
    (void)revents;
    if (a->finished)
        return;
    push_kick(a);
    finish_kick(a);
}

static void retry_later(struct ex_attempt *a)
{
    struct ev_loop *loop = a->ex->svc.loop;

    a->retry_s = a->retry_s < RETRY_MIN_S ? RETRY_MIN_S : a->retry_s * 2;
    if (a->retry_s > RETRY_MAX_S)
        a->retry_s = RETRY_MAX_S;
    if (ev_is_active(&a->retry_w))
        return;
    /* jitter: 50-100% of the backoff */
    double d = a->retry_s * (0.5 + 0.5 * ((double)random() / (double)RAND_MAX));
    ev_timer_set(&a->retry_w, d, 0.);
    ev_timer_start(loop, &a->retry_w);
}

/* The lease is gone: stop the sandbox, send nothing more, free when it ended. */
static void lost(struct ex_attempt *a, const char *why)
{
    if (a->finished)
        return;
    AL_LOG_WARN("executor.lease_lost", "job=%s attempt=%d reason=\"%s\"", a->job_id, a->attempt,
                why);
    al_metric_add(a->ex->m_lost, 1);
    ex_attempt_stop(a, EX_STOP_LOST, why);
}

/* ---------- PushEvents ---------- */

static void push_msg(struct al_grpc_ccall *cc, const ProtobufCMessage *m, void *user)
{
    struct ex_attempt *a = user;
    const Airlock__V1__PushEventsResponse *r = (const Airlock__V1__PushEventsResponse *)m;

    (void)cc;
    if (r->acked_seq > a->acked_seq)
        a->acked_seq = r->acked_seq;
    if (r->cancel_requested)
        ex_attempt_stop(a, EX_STOP_CANCEL, "cancelled by the caller");
}

static void push_done(struct al_grpc_ccall *cc, int status, const char *msg, void *user)
{
    struct ex_attempt *a = user;

    a->push_call = NULL;
    if (a->finished) {
        maybe_free(a);
        return;
    }
    if (status == AL_GRPC_OK) {
        a->retry_s = 0;
        drop_acked(a);
        /* events after acked were not stored (gap or limit): resend them */
        a->sent_seq = a->acked_seq;
        push_kick(a);
        finish_kick(a);
        return;
    }
    if (status == AL_GRPC_FAILED_PRECONDITION &&
        al_edge_error_reason(cc) == AIRLOCK__V1__ERROR_REASON__ERROR_REASON_LEASE_LOST) {
        lost(a, "intake refused a report: lease lost");
        return;
    }
    al_metric_add(a->ex->m_push_fail, 1);
    AL_LOG_WARN("executor.push", "job=%s attempt=%d status=%s reason=\"%s\" retry=yes", a->job_id,
                a->attempt, al_grpc_status_name(status), msg);
    a->sent_seq = a->acked_seq;
    retry_later(a);
}

static void push_kick(struct ex_attempt *a)
{
    static const struct al_grpc_ccall_cbs cbs = {push_msg, push_done};
    Airlock__V1__PushEventsRequest req = AIRLOCK__V1__PUSH_EVENTS_REQUEST__INIT;
    Airlock__V1__LeaseRef ref;
    Airlock__V1__JobEvent **evs = NULL;
    size_t n = 0, bytes = 0, cap = 0;
    int rc;

    if (a->finished || a->push_call || ev_is_active(&a->retry_w))
        return;
    flush_pending(a);
    for (struct ex_event *q = a->events; q; q = q->next) {
        if (q->seq <= a->sent_seq)
            continue;
        if (n && bytes + q->len > a->ex->cfg.push_max_batch)
            break;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            Airlock__V1__JobEvent **ne = realloc(evs, cap * sizeof(*evs));
            if (!ne)
                break;
            evs = ne;
        }
        evs[n] = airlock__v1__job_event__unpack(NULL, q->len, q->packed);
        if (!evs[n])
            break;
        bytes += q->len;
        n++;
    }
    if (!n) {
        free(evs);
        return;
    }
    ex_attempt_ref(a, &ref);
    req.lease = &ref;
    req.events = evs;
    req.n_events = n;
    rc = al_grpc_channel_call(a->ex->ch, "/airlock.v1.ExecutorService/PushEvents", &req.base,
                              &airlock__v1__push_events_response__descriptor, NULL, 0,
                              REPORT_TIMEOUT, &cbs, a, &a->push_call);
    if (rc == 0)
        a->sent_seq = evs[n - 1]->seq;
    for (size_t i = 0; i < n; i++)
        airlock__v1__job_event__free_unpacked(evs[i], NULL);
    free(evs);
    if (rc < 0) {
        a->push_call = NULL;
        AL_LOG_WARN("executor.push", "job=%s reason=\"%s\" retry=yes", a->job_id, al_strerror(rc));
        retry_later(a);
    }
}

/* ---------- Finish ---------- */

static void finish_msg(struct al_grpc_ccall *cc, const ProtobufCMessage *m, void *user)
{
    struct ex_attempt *a = user;
    const Airlock__V1__FinishResponse *r = (const Airlock__V1__FinishResponse *)m;

    (void)cc;
    AL_LOG_INFO(
        "executor.finish", "job=%s attempt=%d state=%s requeue=%d", a->job_id, a->attempt,
        protobuf_c_enum_descriptor_get_value(&airlock__v1__job_state__descriptor, r->state)
            ? protobuf_c_enum_descriptor_get_value(&airlock__v1__job_state__descriptor, r->state)
                  ->name
            : "?",
        a->requeue);
}

static void finish_done(struct al_grpc_ccall *cc, int status, const char *msg, void *user)
{
    struct ex_attempt *a = user;
    int reason;

    a->finish_call = NULL;
    if (a->finished) {
        maybe_free(a);
        return;
    }
    if (status == AL_GRPC_OK) {
        al_metric_add(a->requeue ? a->ex->m_requeued : a->ex->m_finished, 1);
        a->finished = 1;
        maybe_free(a);
        return;
    }
    reason = al_edge_error_reason(cc);
    if (status == AL_GRPC_FAILED_PRECONDITION &&
        reason == AIRLOCK__V1__ERROR_REASON__ERROR_REASON_SEQUENCE_GAP) {
        a->sent_seq = a->acked_seq; /* re-push what intake does not have */
        push_kick(a);
        retry_later(a);
        return;
    }
    if (status == AL_GRPC_FAILED_PRECONDITION || status == AL_GRPC_INVALID_ARGUMENT ||
        status == AL_GRPC_PERMISSION_DENIED) {
        /* retrying cannot help: intake expires the lease and decides;
         * logged first: lost() may free the attempt */
        AL_LOG_ERROR("executor.finish", "job=%s attempt=%d status=%s reason=\"%s\"", a->job_id,
                     a->attempt, al_grpc_status_name(status), msg);
        lost(a, status == AL_GRPC_FAILED_PRECONDITION ? "intake refused Finish: lease lost"
                                                      : "intake refused Finish");
        return;
    }
    AL_LOG_WARN("executor.finish", "job=%s attempt=%d status=%s reason=\"%s\" retry=yes", a->job_id,
                a->attempt, al_grpc_status_name(status), msg);
    retry_later(a);
}

static void finish_kick(struct ex_attempt *a)
{
    static const struct al_grpc_ccall_cbs cbs = {finish_msg, finish_done};
    Airlock__V1__FinishRequest req = AIRLOCK__V1__FINISH_REQUEST__INIT;
    Airlock__V1__JobResult *res = NULL;
    Airlock__V1__LeaseRef ref;
    int rc;

    if (a->finished || !a->ended || a->finish_call || a->push_call || ev_is_active(&a->retry_w))
        return;
    flush_pending(a);
    if (a->acked_seq < a->next_seq - 1) {
        push_kick(a);
        return;
    }
    if (a->result_len) {
        res = airlock__v1__job_result__unpack(NULL, a->result_len, a->result);
        if (!res) {
            retry_later(a);
            return;
        }
    }
    ex_attempt_ref(a, &ref);
    req.lease = &ref;
    req.state = a->final_state;
    req.result = res;
    req.last_event_seq = a->next_seq - 1;
    req.requeue = a->requeue;
    rc = al_grpc_channel_call(a->ex->ch, "/airlock.v1.ExecutorService/Finish", &req.base,
                              &airlock__v1__finish_response__descriptor, NULL, 0, REPORT_TIMEOUT,
                              &cbs, a, &a->finish_call);
    if (res)
        airlock__v1__job_result__free_unpacked(res, NULL);
    if (rc < 0) {
        a->finish_call = NULL;
        retry_later(a);
    }
}

/* ---------- lifecycle ---------- */

static void fence_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ex_attempt *a = w->data;
    (void)loop;
    (void)revents;
    if (a->finished || a->ended)
        return;
    AL_LOG_WARN("executor.fence",
                "job=%s attempt=%d reason=\"lease not extended in time; "
                "stopping the job before the lease can lapse\"",
                a->job_id, a->attempt);
    al_metric_add(a->ex->m_fenced, 1);
    ex_attempt_stop(a, EX_STOP_FENCE, "the executor lost contact with intake");
}

void ex_attempt_extend(struct ex_attempt *a, int64_t ttl_ms, ev_tstamp sent_at)
{
    struct ev_loop *loop = a->ex->svc.loop;
    double margin = (double)a->ex->cfg.safety_margin_ms / 1000.0;
    double ttl = (double)ttl_ms / 1000.0;

    if (ttl <= 0)
        return;
    if (margin > ttl / 2)
        margin = ttl / 2;
    a->lease_deadline = sent_at + ttl;
    ev_timer_stop(loop, &a->fence_w);
    double at = a->lease_deadline - margin - ev_now(loop);
    ev_timer_set(&a->fence_w, at > 0 ? at : 0., 0.);
    ev_timer_start(loop, &a->fence_w);
}

static void attempt_free(struct ex_attempt *a)
{
    struct ex *ex = a->ex;
    struct ev_loop *loop = ex->svc.loop;

    ev_timer_stop(loop, &a->fence_w);
    ev_timer_stop(loop, &a->retry_w);
    if (a->push_call)
        al_grpc_ccall_cancel(a->push_call);
    if (a->finish_call)
        al_grpc_ccall_cancel(a->finish_call);
    ex_run_free(a);
    a->acked_seq = a->next_seq;
    drop_acked(a);
    if (a->prev)
        a->prev->next = a->next;
    else
        ex->attempts = a->next;
    if (a->next)
        a->next->prev = a->prev;
    ex->n_attempts--;
    al_metric_set(ex->m_running, (double)ex->n_attempts);
    if (a->result) {
        OPENSSL_cleanse(a->result, a->result_len);
        free(a->result);
    }
    if (a->grant)
        airlock__v1__signed_grant__free_unpacked(a->grant, NULL);
    if (a->job)
        airlock__v1__job__free_unpacked(a->job, &al_wipe_pb);
    OPENSSL_cleanse(a->token, sizeof(a->token));
    pending_put(ex, a->pending);
    free(a);
    ex_maybe_drained(ex);
}

/* Frees a once nothing refers to it: reports done (or lost), sandbox ended. */
static void maybe_free(struct ex_attempt *a)
{
    if (a->finished && !a->run && !a->push_call && !a->finish_call)
        attempt_free(a);
}

void ex_attempt_stop(struct ex_attempt *a, enum ex_stop why, const char *message)
{
    if (why == EX_STOP_LOST) {
        a->stop = EX_STOP_LOST;
        a->finished = 1; /* nothing more is sent */
        ev_timer_stop(a->ex->svc.loop, &a->retry_w);
        if (a->push_call) {
            struct al_grpc_ccall *cc = a->push_call;
            a->push_call = NULL;
            al_grpc_ccall_cancel(cc);
        }
        if (a->finish_call) {
            struct al_grpc_ccall *cc = a->finish_call;
            a->finish_call = NULL;
            al_grpc_ccall_cancel(cc);
        }
        if (a->run)
            ex_run_kill(a);
        maybe_free(a);
        return;
    }
    if (a->stop != EX_STOP_NONE || a->ended)
        return; /* the first reason wins; an ended job keeps its real outcome */
    a->stop = why;
    AL_LOG_INFO("executor.stop", "job=%s attempt=%d why=%s reason=\"%s\"", a->job_id, a->attempt,
                why == EX_STOP_CANCEL  ? "cancel"
                : why == EX_STOP_FENCE ? "fence"
                                       : "drain",
                message ? message : "");
    if (a->run)
        ex_run_kill(a);
}

void ex_attempt_exited(struct ex_attempt *a, Airlock__V1__JobState state,
                       const Airlock__V1__JobResult *res)
{
    Airlock__V1__JobResult copy;

    a->ended = 1;
    flush_pending(a);
    a->final_state = state;
    if (res) {
        copy = *res;
        if (a->stop == EX_STOP_CANCEL) {
            a->final_state = AIRLOCK__V1__JOB_STATE__JOB_STATE_CANCELLED;
            copy.failure_reason = AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_CANCELLED;
            copy.failure_message = (char *)"cancelled by the caller";
        }
        a->result_len = airlock__v1__job_result__get_packed_size(&copy);
        a->result = malloc(a->result_len ? a->result_len : 1);
        if (a->result)
            airlock__v1__job_result__pack(&copy, a->result);
        else
            a->result_len = 0;
    }
    if (a->stop == EX_STOP_FENCE || a->stop == EX_STOP_DRAIN)
        a->requeue = 1;
    ev_timer_stop(a->ex->svc.loop, &a->fence_w);
    if (a->finished) {
        maybe_free(a);
        return;
    }
    push_kick(a);
    finish_kick(a);
}

/* Ends an attempt that never started a sandbox. */
static void fail_now(struct ex_attempt *a, int reason, const char *why)
{
    Airlock__V1__JobResult res = AIRLOCK__V1__JOB_RESULT__INIT;
    char q[600];

    res.failure_reason = (Airlock__V1__FailureReason)reason;
    res.failure_message = (char *)why;
    AL_LOG_WARN("executor.job_failed", "job=%s attempt=%d reason=%s", a->job_id, a->attempt,
                al_log_quote(q, sizeof(q), why, strlen(why)));
    ex_attempt_exited(a, AIRLOCK__V1__JOB_STATE__JOB_STATE_FAILED, &res);
}

/* Deep copy through the wire format (the assignment is borrowed). */
static void *copy_msg(const ProtobufCMessage *m, const ProtobufCMessageDescriptor *d)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    void *out;

    if (!buf)
        return NULL;
    protobuf_c_message_pack(m, buf);
    out = protobuf_c_message_unpack(d, &al_wipe_pb, len, buf);
    OPENSSL_cleanse(buf, len);
    free(buf);
    return out;
}

void ex_attempt_assign(struct ex *ex, const Airlock__V1__LeaseAssignment *as)
{
    struct ex_attempt *a;
    char why[512];
    int reason = AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_INTERNAL;

    if (!as->job || !as->job->id || !as->job->id[0] || as->fencing_token.len != EX_TOKEN_LEN) {
        AL_LOG_ERROR("executor.assign", "reason=\"malformed assignment (no job id or a fencing "
                                        "token that is not 16 bytes); ignored\"");
        return;
    }
    if (ex_attempt_find(ex, as->job->id, as->attempt)) {
        AL_LOG_WARN("executor.assign", "job=%s attempt=%d reason=\"already held; ignored\"",
                    as->job->id, as->attempt);
        return;
    }
    a = calloc(1, sizeof(*a));
    if (a)
        a->pending = pending_get(ex);
    if (!a || !a->pending || !(a->job = copy_msg(&as->job->base, &airlock__v1__job__descriptor)) ||
        (as->grant &&
         !(a->grant = copy_msg(&as->grant->base, &airlock__v1__signed_grant__descriptor)))) {
        AL_LOG_ERROR("executor.assign", "job=%s reason=\"out of memory; the lease will expire\"",
                     as->job->id);
        if (a) {
            if (a->job)
                airlock__v1__job__free_unpacked(a->job, &al_wipe_pb);
            pending_put(ex, a->pending);
        }
        free(a);
        return;
    }
    a->ex = ex;
    a->job_id = a->job->id;
    a->attempt = as->attempt;
    a->workspace_reset = as->workspace_reset;
    memcpy(a->token, as->fencing_token.data, EX_TOKEN_LEN);
    a->events_tail = &a->events;
    a->next_seq = 1;
    ev_timer_init(&a->fence_w, fence_cb, 0., 0.);
    a->fence_w.data = a;
    ev_timer_init(&a->retry_w, retry_cb, 0., 0.);
    a->retry_w.data = a;
    a->next = ex->attempts;
    if (ex->attempts)
        ex->attempts->prev = a;
    ex->attempts = a;
    ex->n_attempts++;
    al_metric_add(ex->m_assigned, 1);
    al_metric_set(ex->m_running, (double)ex->n_attempts);
    /* the lease counts from when intake sent it: start our clock now */
    ex_attempt_extend(a, as->lease_ttl_ms, ev_now(ex->svc.loop));
    ex_heartbeat_interval(ex, as->heartbeat_interval_ms);
    AL_LOG_INFO("executor.assign", "job=%s attempt=%d ttl_ms=%lld", a->job_id, a->attempt,
                (long long)as->lease_ttl_ms);
    if (ex->draining) {
        a->stop = EX_STOP_DRAIN;
        a->ended = 1;
        a->requeue = 1;
        a->final_state = AIRLOCK__V1__JOB_STATE__JOB_STATE_FAILED; /* ignored with requeue */
        finish_kick(a);
        return;
    }
    why[0] = '\0';
    if (ex_run_start(a, &reason, why, sizeof(why)) < 0) {
        fail_now(a, reason, why[0] ? why : "the sandbox could not be started");
        return;
    }
    queue_running(a);
}

void ex_attempts_free_all(struct ex *ex)
{
    while (ex->attempts) {
        struct ex_attempt *a = ex->attempts;
        a->finished = 1;
        if (a->run)
            ex_run_free(a);
        a->run = NULL;
        attempt_free(a); /* cancels its calls: no callback runs later */
    }
    while (ex->spare_pending) {
        struct pending *p = ex->spare_pending;
        ex->spare_pending = p->next_spare;
        free(p);
    }
    ex->n_spare_pending = 0;
}
