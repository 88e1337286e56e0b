/*
 * insvc: the running airlock-intake: its state, the group commit, deferred
 * replies, caller authentication, job transitions and the registries of
 * lease streams, executors and watchers. Shared by jobsvc.c (JobService),
 * execsvc.c (ExecutorService and the lease dispatcher), sessions.c,
 * watch.c, retention.c and lifecycle.c.
 *
 * Group commit: every change made while handling the events of one loop
 * iteration goes into one SQLite transaction (each request inside its own
 * savepoint). Replies, lease assignments and watcher notifications are not
 * sent while that transaction is open: they queue as actions. An ev_prepare
 * watcher (after every event of the iteration) runs the lease dispatcher,
 * commits, and then performs the actions; if the commit fails, calls get
 * UNAVAILABLE, nothing is sent, and the in-memory counters are rebuilt from
 * the database. So nothing is acknowledged, assigned or shown to a watcher
 * before it is durable (synchronous=FULL).
 *
 * In memory (rebuilt from the store at start and after a failed commit):
 * per-principal QUEUED and LEASED+RUNNING counts (quotas), per executor
 * instance the number of leases held (slots), totals for the gauges.
 *
 * Lifecycle: main.c fills struct in_svc, in_svc_start(), al_service_run(),
 * in_svc_stop().
 */
#ifndef IN_SVC_H
#define IN_SVC_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <protobuf-c/protobuf-c.h>

#include "airlock/v1/common.pb-c.h"
#include "airlock/v1/intake.pb-c.h"
#include "al_arena.h"
#include "al_grpc.h"
#include "al_pki.h"
#include "al_service.h"
#include "apikey.h"
#include "inconfig.h"
#include "instore.h"
#include "inutil.h"
#include "sm.h"

#define IN_REASON(x) AIRLOCK__V1__ERROR_REASON__ERROR_REASON_##x
#define IN_KIND(x)   AIRLOCK__V1__JOB_KIND__JOB_KIND_##x
#define IN_RETRY_MS  1000 /* ms until a failed dispatch, commit or rebuild is retried */

struct al_grant_signer;
struct al_metric;

/* ---- callers ---- */

struct in_caller {
    char principal[IN_PRINCIPAL_MAX + 1];
    int auth_method;                      /* Airlock__V1__AuthMethod */
    char key_id[AL_PKI_ID_MAX];           /* API key id or SPIFFE id */
    unsigned scopes;                      /* IN_SCOPE_* */
    int admin;                            /* admin role: may act on any job */
    const struct in_principal_rule *rule; /* pools and quotas; NULL = none */
};

/* ---- executors, lease streams, watchers ---- */

struct in_lstream;

/* One executor process: (identity, instance_id). */
struct in_exec {
    char identity[AL_PKI_ID_MAX];
    char instance[IN_INSTANCE_LEN + 1];
    int held;                  /* LEASED + RUNNING jobs it holds */
    int64_t last_seen_ms;      /* last Lease stream activity or report */
    struct in_lstream *stream; /* its current Lease stream, or NULL */
};

struct in_lstream {
    struct in_svc *s;
    struct al_grpc_call *call;
    struct in_exec *exec;
    char **pools; /* pools it leases from (owned) */
    size_t npools;
    int kinds[8];
    size_t nkinds; /* 0 = all kinds */
    int slots;
    struct in_lstream *prev, *next;
};

struct in_watch {
    struct in_svc *s;
    struct al_grpc_call *call;
    char job_id[IN_JOB_ID_LEN + 1];
    int64_t sent_seq;
    int waiting_writable;      /* output buffer full: wait for on_writable */
    int queued;                /* on the pump list */
    int busy, dead;            /* being pumped; cancelled meanwhile */
    struct in_watch *next_job; /* same job's watchers */
    struct in_watch *next_pump;
    struct in_watch *prev_all, *next_all;
};

/* ---- deferred actions ---- */

enum in_act_kind { IN_ACT_REPLY, IN_ACT_ERROR, IN_ACT_LEASE };

struct in_action {
    enum in_act_kind kind;
    struct in_action *next;
    struct al_grpc_call *call;   /* REPLY, ERROR */
    const ProtobufCMessage *msg; /* REPLY, LEASE */
    struct in_exec *exec;        /* LEASE: sent on exec->stream if still open */
    int status, reason;
    int64_t retry_after_ms;
    char field[160];
    char message[256];
};

/* ---- the service ---- */

struct in_pcount {
    int queued, active;
};

struct in_svc {
    struct al_service svc;
    struct in_config cfg;
    struct in_store *store;
    struct in_apikeys *keys;
    struct al_grant_signer *signer; /* NULL: no grant key configured */
    char self_id[AL_PKI_ID_MAX];
    uint8_t page_key[32]; /* MACs List page tokens */
    int64_t start_ms;
    int started, stopping;

    ev_prepare prepare_w;
    ev_timer wake_w, sweep_w;
    int64_t wake_at_ms;  /* wall-clock ms the wake timer is armed for (0: not armed) */
    int64_t dispatch_ms; /* wall-clock ms the dispatcher last judged eligibility at */
    int64_t retry_at_ms; /* after a failure: when work left dirty is tried again */
    int deadlines_dirty, dispatch_dirty, rebuild_pending, prune_due;

    struct al_arena txa; /* messages and actions waiting for the commit */
    struct in_action *actions, **actions_tail;

    struct in_map *principals; /* name -> struct in_pcount */
    struct in_map *executors;  /* "identity instance" -> struct in_exec */
    int queued_total, active_total;
    struct in_pstat *pool_stats; /* one per cfg.pools entry, same order */
    struct in_lstream *streams;
    struct in_lstream *rr; /* dispatcher's start: after the last stream it served */
    /* dispatcher pass state: 1 while retries avoid the instance that ran the
     * previous attempt; skipped counts the candidates passed over for that */
    int avoid_same, avoided;

    struct in_map *watch_by_job; /* job id -> struct in_watch list */
    struct in_watch *watch_all, *pump_head;

    struct al_metric *m_queued, *m_active, *m_submits, *m_dedup, *m_expiries, *m_leases,
        *m_finished, *m_commit_fail, *m_commit_batch, *m_streams, *m_watchers, *m_purged;
    size_t batch_ops;
};

/* Jobs of one configured pool: what a per-pool autoscaler (KEDA) reads. */
struct in_pstat {
    int queued, active;
    struct al_metric *m_queued, *m_active;
};

/* ---- insvc.c ---- */

/* Registers both gRPC services and the loop watchers; rebuilds counters and
 * applies the restart grace. Returns 0 or < 0. */
int in_svc_start(struct in_svc *s);
/* Commits what is pending, ends streams, frees the registries. */
void in_svc_stop(struct in_svc *s);

/* Echoes the caller's airlock-request-id (or a new one) in the response
 * headers; ErrorDetail.request_id carries it too. First thing in a handler. */
void in_request_begin(struct al_grpc_call *call);
/* Sends msg as the unary reply (now, or after the commit when a transaction is open). */
void in_reply(struct in_svc *s, struct al_grpc_call *call, const ProtobufCMessage *msg);
/* Ends a call with an error and an airlock-error-bin ErrorDetail (deferred like in_reply). */
void in_error(struct in_svc *s, struct al_grpc_call *call, int status, int reason,
              const char *field, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* As in_error with ErrorDetail.retry_after_ms. */
void in_error_retry(struct in_svc *s, struct al_grpc_call *call, int status, int reason,
                    int64_t retry_after_ms, const char *message);
/* Ends a call with an error now (streams, and calls that never touched the store). */
void in_finish_error(struct al_grpc_call *call, int status, int reason, const char *field,
                     const char *message, int64_t retry_after_ms);
/* Queues msg (allocated in in_txa()) for exec's lease stream after the commit. */
void in_lease_send(struct in_svc *s, struct in_exec *e, const ProtobufCMessage *msg);
/* The arena for messages that live until the commit's actions have run. */
struct al_arena *in_txa(struct in_svc *s);

/* Per-request transaction bracket: begins a savepoint (and the batch). */
int in_tx_begin(struct in_svc *s);
/* Ends the savepoint: keep (ok) or roll back (!ok). Returns 0 or < 0 (then
 * everything of the request is rolled back). */
int in_tx_end(struct in_svc *s, int ok);

/* Counters: a job of principal in pool moved from state `from` to `to`
 * (0 = none). */
void in_count(struct in_svc *s, const char *principal, const char *pool, int from, int to);
struct in_pcount *in_pcount(struct in_svc *s, const char *principal);
/* Executor registry: the entry for (identity, instance), created on demand. */
struct in_exec *in_exec_get(struct in_svc *s, const char *identity, const char *instance);
struct in_exec *in_exec_find(struct in_svc *s, const char *identity, const char *instance);
/* An executor instance is gone: no Lease stream and not seen for a lease ttl
 * (and, after a restart, not before the restart grace ends). */
int in_exec_gone(struct in_svc *s, const struct in_exec *e, int64_t now_ms);

/* Something changed the earliest deadline / may let a queued job run. */
void in_deadlines_dirty(struct in_svc *s);
void in_dispatch_dirty(struct in_svc *s);

/* Commits and runs actions (the ev_prepare hook; public for tests). */
void in_svc_flush(struct in_svc *s);

/*
 * The wall-clock moment (ms) the wake timer must fire at, seen at now_ms; 0
 * when nothing is pending. It is the earliest of: a lease expiry or queue
 * deadline in the store (past ones too: they are processed at the wake); a
 * moment after s->dispatch_ms at which a job may become leasable without any
 * event (a backoff ends, an executor without a stream becomes gone, the
 * restart grace ends); and, while a dispatch or counter rebuild is left
 * dirty, now_ms (or s->retry_at_ms after a failure). Anything the
 * dispatcher last judged before it changed is therefore due at once, however
 * long the commit between the dispatch and this call took. A store failure
 * gives now_ms + IN_RETRY_MS at the latest. Reads only; does not arm.
 */
int64_t in_wake_next(struct in_svc *s, int64_t now_ms);

/* ---- auth.c ---- */

/*
 * Authenticates a JobService call: the bearer API key when present, else the
 * mTLS identity (admin role, or an identity a principals rule maps). Checks
 * that the caller has `scope`. On failure the call has been answered
 * (UNAUTHENTICATED or PERMISSION_DENIED) and -1 is returned.
 */
int in_auth_job_caller(struct in_svc *s, struct al_grpc_call *call, unsigned scope,
                       struct in_caller *c);

/* For ExecutorService: the caller must be an executor identity that serves at
 * least one pool. On failure answers PERMISSION_DENIED and returns -1. */
int in_auth_executor(struct in_svc *s, struct al_grpc_call *call, const char **identity);

/* 1 when caller may see job j (its principal, or admin). */
int in_caller_sees(const struct in_caller *c, const struct in_job *j);

/* ---- lifecycle.c ---- */

/* Appends ev (seq, time and attempt filled in here) to j's log and bumps
 * j->last_seq; wakes the job's watchers after the commit. */
int in_job_event(struct in_svc *s, struct in_job *j, Airlock__V1__JobEvent *ev, int64_t now_ms);
/* Moves j to state `to` (checked against the state machine), appends the
 * StateChange event and keeps the counters; the caller writes the row. */
int in_job_transition(struct in_svc *s, struct in_job *j, int to, const char *message,
                      int64_t now_ms);
/* Ends j in a terminal state with result r (NULL: a result with only the
 * failure reason and message): result event, state change, stored result,
 * lease cleared. Writes the row. `a` holds the packed result. */
int in_job_end(struct in_svc *s, struct in_job *j, int state, Airlock__V1__JobResult *r,
               int failure_reason, const char *message, int64_t now_ms, struct al_arena *a);
/* Puts j back in the queue (lease cleared, backoff until not_before_ms).
 * Writes the row. */
int in_job_requeue(struct in_svc *s, struct in_job *j, int spent, int64_t not_before_ms,
                   const char *message, int64_t now_ms);
/* Lease of j expired: re-queue, fail or cancel per the state machine. */
int in_job_lease_expired(struct in_svc *s, struct in_job *j, int64_t now_ms, struct al_arena *a);
/* Queue timeout of j passed: TIMED_OUT. */
int in_job_queue_timeout(struct in_svc *s, struct in_job *j, int64_t now_ms, struct al_arena *a);

enum { IN_IDEM_NEW = 0, IN_IDEM_SAME = 1, IN_IDEM_CONFLICT = 2 };
/*
 * Idempotency key (principal, key) for a spec with canonical hash `hash`:
 * IN_IDEM_NEW (unused, or its job was purged: the stale entry is removed),
 * IN_IDEM_SAME (job_id, IN_JOB_ID_LEN + 1 bytes, gets the job) or
 * IN_IDEM_CONFLICT (used for another spec). Keys of other principals never
 * match. Returns one of those or < 0 for store failures.
 */
int in_idem_check(struct in_store *st, const char *principal, const char *key,
                  const uint8_t hash[32], char *job_id);

/* ---- jobmsg.c ---- */

/* Builds an airlock.v1.Job from row j in arena a. full = 0 leaves out
 * exec.stdin and file.data (List). Returns NULL on OOM or a corrupt spec. */
Airlock__V1__Job *in_job_msg(const struct in_job *j, struct al_arena *a, int full);

/* ---- jobsvc.c, execsvc.c ---- */

int in_jobsvc_register(struct in_svc *s);
int in_execsvc_register(struct in_svc *s);

/*
 * Runs the lease dispatcher judging eligibility (backoffs, executors gone,
 * the restart grace) at wall-clock now_ms, which it records in
 * s->dispatch_ms; clears s->dispatch_dirty. Returns 0, or < 0 when the store
 * failed: the dispatch stays dirty and is retried IN_RETRY_MS later (or at
 * the next flush).
 */
int in_dispatch(struct in_svc *s, int64_t now_ms);
/* Processes expired leases and queue timeouts due at now (the wake timer). */
void in_process_due(struct in_svc *s, int64_t now_ms);
/* Sends LeaseCancel for job to its holder's stream (after the commit). */
void in_send_cancel(struct in_svc *s, const struct in_job *j);
/* Ends every lease stream with UNAVAILABLE (drain). */
void in_lease_streams_end(struct in_svc *s, int status, const char *message);
/* A job left LEASED/RUNNING for (identity, instance): frees a slot. */
void in_exec_release(struct in_svc *s, const char *identity, const char *instance);

/* ---- sessions.c ---- */

/*
 * Whether session job j may be leased by executor e now: *ok = 1 when it
 * may; *reset = 1 when the session's workspace was lost (its holder is gone)
 * and the job starts in a fresh one. Sessionless jobs: ok, no reset.
 */
int in_session_eligible(struct in_svc *s, const struct in_job *j, const struct in_exec *e,
                        int64_t now_ms, int *ok, int *reset);
/* Records that e holds j's session workspace. */
int in_session_assign(struct in_svc *s, const struct in_job *j, const struct in_exec *e,
                      int64_t now_ms);

/* ---- watch.c ---- */

int in_watch_start(struct in_svc *s, struct al_grpc_call *call, const struct in_job *j,
                   int64_t after_seq);
/* New events of job_id were stored (wake its watchers after the commit). */
void in_watch_touch(struct in_svc *s, const char *job_id);
/* Sends what watchers on the pump list can send (after the commit). */
void in_watch_pump(struct in_svc *s);
/* Ends every watcher with status (drain) and frees them. */
void in_watch_end_all(struct in_svc *s, int status, int reason, const char *message);

/* ---- retention.c ---- */

/* One purge pass (the sweep timer). */
void in_retention_sweep(struct in_svc *s, int64_t now_ms);

#endif
