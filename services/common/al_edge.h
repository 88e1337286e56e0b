/*
 * al_edge: an edge's link to credstore's CredentialResolver. The edges are
 * airlock-gateway and airlock-executor: both resolve credential values with
 * a grant they hold and both report every use of a value (and every refused
 * attempt) back to credstore's audit chain. Each keeps its own policy around
 * this module (the gateway's value cache, the executor's per-job
 * credentials for its egress proxy).
 *
 * Resolve: al_edge_resolve() sends the grant, the credential name and the
 * concrete destination. on_answer receives the ResolveResponse, borrowed for
 * the call only (copy the value into locked memory, never log it; the
 * client wipes its own copies); on_done follows with the final gRPC status
 * and credstore's ErrorDetail reason (0 when none). Exactly one on_done per
 * call unless the caller cancels it first (al_edge_cancel: then no callback
 * runs). An answer followed by a failed status must not be used.
 *
 * Audit: a use reserves its record first (al_edge_reserve; AL_ERR_TOOBIG
 * means the queue is full and the use must be refused), then queues it
 * (al_edge_record) citing the grant it happened under. Delivery is the
 * al_edge_audit state machine (batches, retries, splitting refused batches)
 * driven here by one timer and at most one AppendAudit call in flight.
 * Outcomes: OK; INVALID_ARGUMENT, PERMISSION_DENIED, FAILED_PRECONDITION,
 * NOT_FOUND, OUT_OF_RANGE, UNIMPLEMENTED and RESOURCE_EXHAUSTED other than
 * RATE_LIMITED / QUEUE_FULL are refusals (the batch is split); anything
 * else is retried unchanged.
 *
 * Logs (event names prefixed with opts.log_prefix, e.g. "gateway"):
 * <prefix>.audit_failed (a batch failed: retry or split), <prefix>
 * .audit_delivered (delivered again after failures), <prefix>
 * .audit_record_refused (a single record dropped), <prefix>.audit_lost
 * (records that could not be queued, or were still queued at the end).
 * Metrics: the pointers in opts.metrics, each optional, created by the
 * caller under its own names.
 *
 * Lifecycle: al_edge_new() -> resolve / reserve / record ... ->
 * al_edge_flush() on shutdown -> al_edge_free() (Resolve calls still pending
 * end with on_done(CANCELLED) first, as al_grpc_channel_free() does; records
 * never delivered are counted in a log line).
 * One libev loop, one thread.
 */
#ifndef AL_EDGE_H
#define AL_EDGE_H

#include <stddef.h>

#include <ev.h>

#include "airlock/v1/credstore.pb-c.h"
#include "al_edge_audit.h"

struct al_grpc_ccall;
struct al_metric;
struct al_tls;

struct al_edge_metrics {
    struct al_metric *queue;       /* gauge: records queued, in flight or reserved */
    struct al_metric *undelivered; /* gauge: 1 while a batch is undelivered (bypass rule) */
    struct al_metric *batch_fail;  /* counter: AppendAudit calls that failed */
    struct al_metric *refused;     /* counter: single records credstore refused (dropped) */
    struct al_metric *batches;     /* counter: batches delivered */
    struct al_metric *full;        /* counter: uses refused because the queue was full */
};

struct al_edge_opts {
    const char *target;      /* credstore "host:port" */
    const char *expect_peer; /* SPIFFE id prefix credstore's certificate must carry */
    struct al_tls *tls;      /* client context with this edge's identity (borrowed) */
    double timeout_s;        /* deadline of each Resolve and AppendAudit call */
    struct al_edge_audit_opts audit;
    const char *log_prefix; /* event prefix, e.g. "gateway" (borrowed: keep it static) */
    struct al_edge_metrics metrics;
};

struct al_edge;
struct al_edge_call;

struct al_edge_resolve_cbs {
    /* The answer (borrowed for the call). May be NULL. */
    void (*on_answer)(void *user, const Airlock__V1__ResolveResponse *r);
    /* The end of the call: gRPC status, ErrorDetail reason (0 = none) and
     * credstore's message ("" when none; it may describe policy, so do not
     * hand it to an agent as is). Required. */
    void (*on_done)(void *user, int status, int reason, const char *message);
};

/* Creates the edge (no connection yet: the channel dials on its first call).
 * opts is copied (its strings borrowed). Returns 0, AL_ERR_INVAL (bad
 * target or audit options) or AL_ERR_NOMEM. */
int al_edge_new(struct ev_loop *loop, const struct al_edge_opts *opts, struct al_edge **out);

/* Ends pending Resolve calls (on_done with CANCELLED), drops the batch in
 * flight, logs the records never delivered, frees. NULL-safe. */
void al_edge_free(struct al_edge *e);

/* Starts a Resolve of `credential` for `destination` under grant g (all
 * borrowed for this call only). *out is valid until on_done returns or
 * al_edge_cancel(). Returns 0, or AL_ERR_TOOBIG / AL_ERR_INVAL /
 * AL_ERR_NOMEM (no callback runs). */
int al_edge_resolve(struct al_edge *e, const Airlock__V1__SignedGrant *g, const char *credential,
                    const char *destination, const struct al_edge_resolve_cbs *cbs, void *user,
                    struct al_edge_call **out);

/* Cancels a Resolve; no callback runs after this. NULL-safe. */
void al_edge_cancel(struct al_edge_call *c);

/* Reserves room for one record: 0, or AL_ERR_TOOBIG (queue full; counted). */
int al_edge_reserve(struct al_edge *e);
/* Gives back a reservation that will not be used. */
void al_edge_release(struct al_edge *e);
/* Queues the record of use u (strings copied) citing grant g (a reference is
 * taken), using one reservation; a batch leaves when due. */
void al_edge_record(struct al_edge *e, struct al_edge_grant *g, const struct al_edge_use *u);

/* 1 while a batch is undelivered (al_edge_audit_bypass): cached values must
 * not be used. */
int al_edge_bypass(const struct al_edge *e);

/* Shutdown: every queued record is due at once; done(user) runs from the
 * loop once nothing is queued or reserved, or after timeout_s, whichever
 * comes first (once). */
void al_edge_flush(struct al_edge *e, double timeout_s, void (*done)(void *user), void *user);

/* The state machine, for gauges and tests. */
const struct al_edge_audit *al_edge_audit_state(const struct al_edge *e);

/* The ErrorDetail reason of a finished client call (airlock-error-bin
 * trailer), or 0. For use inside on_done. */
int al_edge_error_reason(struct al_grpc_ccall *cc);

#endif
