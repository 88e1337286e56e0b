/*
 * airlock-executor: leases jobs from airlock-intake (it dials out; nothing
 * dials in), runs each in a fresh sandbox and streams the results back.
 *
 * Pieces, one file each:
 *   lease.c      the Lease stream: assignments and cancellations in, reconnect
 *                with jittered exponential backoff
 *   attempt.c    one leased attempt: events numbered per attempt and pushed
 *                in order (PushEvents, resent from acked_seq after a failure),
 *                then Finish with the result (or requeue when draining)
 *   heartbeat.c  one batched Heartbeat for every held lease; lease statuses
 *                (cancel, lost) and self-fencing: an attempt whose lease was
 *                not extended in time is stopped before the lease can lapse,
 *                so a job never runs twice at once
 *   run.c        the sandbox side of an attempt (services/sandbox), sessions'
 *                workspaces
 *   egress.c     the egress proxy process (airlock-egress) and its control
 *                socket; egress_job.c one job's proxy; egress_policy.c the
 *                ceiling checks (see egress.h)
 *   exconfig.c   configuration
 *   main.c       startup, drain on SIGTERM
 *
 * Lifecycle of an attempt:
 *   assignment -> sandbox started -> RUNNING event pushed -> output events
 *   -> sandbox ends (result) -> every event acked -> Finish accepted -> freed.
 * Stops: cancel (LeaseCancel, CANCEL_REQUESTED, PushEvents.cancel_requested)
 * -> sandbox killed -> Finish CANCELLED; lease LOST -> sandbox killed, nothing
 * more is sent; self-fence -> sandbox killed, Finish with requeue (best
 * effort); drain timeout -> sandbox killed, Finish with requeue.
 * Everything runs on one libev loop; no threads.
 */
#ifndef EX_EXECUTOR_H
#define EX_EXECUTOR_H
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "airlock/v1/intake.pb-c.h"
#include "al_service.h"
#include "exconfig.h"

struct al_grpc_channel;
struct al_grpc_ccall;
struct al_metric;
struct ex_run;
struct ex_host;
struct ex_egress;

#define EX_TOKEN_LEN   16
#define EX_INSTANCE_ID 33 /* 32 hex + NUL */

/* Why an attempt's sandbox is being stopped. */
enum ex_stop {
    EX_STOP_NONE = 0,
    EX_STOP_CANCEL, /* the caller cancelled the job: Finish CANCELLED */
    EX_STOP_LOST,   /* intake says the lease is gone: send nothing more */
    EX_STOP_FENCE,  /* our lease could lapse: stop, then give the job back */
    EX_STOP_DRAIN,  /* shutting down and out of time: give the job back */
};

struct ex_event {
    struct ex_event *next;
    int64_t seq;
    uint8_t *packed; /* packed JobEvent */
    size_t len;
};

struct ex_attempt {
    struct ex *ex;
    struct ex_attempt *prev, *next;
    Airlock__V1__Job *job; /* owned copy of the assignment's job */
    char *job_id;          /* = job->id */
    int32_t attempt;
    uint8_t token[EX_TOKEN_LEN];
    Airlock__V1__SignedGrant *grant; /* owned; NULL when the job binds no credentials */

    /* lease timing, on our monotonic clock */
    ev_tstamp lease_deadline; /* lease lapses at intake after this */
    ev_timer fence_w;         /* fires safety_margin before lease_deadline */

    /* events: queued (not yet acked) in seq order */
    struct ex_event *events, **events_tail;
    int64_t next_seq;  /* seq of the next event to queue */
    int64_t acked_seq; /* highest seq intake stored */
    int64_t sent_seq;  /* highest seq in the push in flight */
    size_t queued_bytes;
    struct al_grpc_ccall *push_call;
    struct al_grpc_ccall *finish_call;
    ev_timer retry_w; /* backs off a failed push or finish */
    double retry_s;
    int64_t stdout_off, stderr_off;
    void *pending; /* attempt.c: output being coalesced into the next chunk */

    /* outcome */
    struct ex_run *run; /* the sandbox; NULL once it ended */
    enum ex_stop stop;  /* why we stopped it, if we did */
    int ended;          /* the sandbox ended; result/state set */
    Airlock__V1__JobState final_state;
    uint8_t *result; /* packed JobResult */
    size_t result_len;
    int requeue;  /* Finish gives the job back */
    int finished; /* Finish accepted (or lease lost): being freed */
    int reported_running;
    int workspace_reset; /* the session moved here: start from a fresh workspace */
};

struct ex {
    struct al_service svc;
    struct ex_config cfg;
    char self_id[256];
    char instance_id[EX_INSTANCE_ID];
    struct al_tls *client_tls;
    struct al_grpc_channel *ch;
    struct ex_host *host;     /* run.c: the sandbox host */
    struct ex_egress *egress; /* egress.c: the proxy; NULL without egress.enabled */

    /* lease stream */
    struct al_grpc_ccall *lease_call;
    ev_timer lease_retry_w;
    double lease_backoff_s;
    int lease_connected;

    /* heartbeat */
    ev_timer hb_w;
    struct al_grpc_ccall *hb_call;
    ev_tstamp hb_interval_s;
    ev_tstamp hb_sent_at;

    struct ex_attempt *attempts;
    size_t n_attempts;
    /* attempt.c: output coalescing buffers of ended attempts, kept for the
     * next ones (at most `slots`): 64 KiB each, not allocated per attempt */
    void *spare_pending;
    size_t n_spare_pending;
    int draining;    /* 1 draining, 2 jobs done (egress records flushing), 3 drained */
    int drain_phase; /* 0 jobs may finish, 1 handed back, reports pending */
    ev_timer drain_w;

    struct al_metric *m_assigned, *m_finished, *m_lost, *m_fenced, *m_requeued, *m_running,
        *m_lease_connected, *m_push_fail;
};

/* ---- lease.c ---- */
int ex_lease_start(struct ex *ex);
void ex_lease_stop(struct ex *ex);

/* ---- attempt.c ---- */
/* Takes an assignment: starts the sandbox or finishes the attempt FAILED. */
void ex_attempt_assign(struct ex *ex, const Airlock__V1__LeaseAssignment *as);
struct ex_attempt *ex_attempt_find(struct ex *ex, const char *job_id, int32_t attempt);
/* Stops an attempt for `why` (idempotent; the first reason wins). */
void ex_attempt_stop(struct ex_attempt *a, enum ex_stop why, const char *message);
/* The lease was extended: ttl_ms from when intake answered (now, at the latest). */
void ex_attempt_extend(struct ex_attempt *a, int64_t ttl_ms, ev_tstamp sent_at);
/* Events from the sandbox (run.c). */
void ex_attempt_output(struct ex_attempt *a, int fd_stream, const uint8_t *p, size_t n);
void ex_attempt_file_data(struct ex_attempt *a, const uint8_t *p, size_t n, int64_t offset);
void ex_attempt_dir_entries(struct ex_attempt *a, Airlock__V1__DirEntry **e, size_t n);
/* The sandbox ended (run.c): takes res (packed into the attempt, then freed by the caller). */
void ex_attempt_exited(struct ex_attempt *a, Airlock__V1__JobState state,
                       const Airlock__V1__JobResult *res);
/* Fills ref with the attempt's lease (borrowing its fields). */
void ex_attempt_ref(const struct ex_attempt *a, Airlock__V1__LeaseRef *ref);
void ex_attempts_free_all(struct ex *ex);

/* ---- heartbeat.c ---- */
void ex_heartbeat_start(struct ex *ex);
void ex_heartbeat_stop(struct ex *ex);
/* A new attempt wants the heartbeat interval it was assigned (takes the smallest). */
void ex_heartbeat_interval(struct ex *ex, int64_t interval_ms);

/* ---- run.c ---- */
int ex_host_new(struct ex *ex, char *why, size_t n);
void ex_host_free(struct ex *ex);
/* Starts the attempt's sandbox (for a job with network access: its egress
 * proxy first, then the sandbox; the attempt ends through
 * ex_attempt_exited() either way, never from inside this call). On failure
 * fills why (safe for the agent) and *reason (FailureReason) and returns
 * < 0. */
int ex_run_start(struct ex_attempt *a, int *reason, char *why, size_t n);
/* Stops the attempt's sandbox, or its preparation (ends from the loop). */
void ex_run_kill(struct ex_attempt *a);
void ex_run_free(struct ex_attempt *a);
/* The attempt got a renewed grant: its egress proxy is told. */
void ex_run_grant(struct ex_attempt *a);
/* The sandbox host's name (names the run directories). */
const char *ex_host_name(const struct ex *ex);

/* ---- main.c ---- */
/* Now on the loop's monotonic clock. */
ev_tstamp ex_now(const struct ex *ex);
/* The drain may finish when no attempt is left. */
void ex_maybe_drained(struct ex *ex);

#endif
