/*
 * al_edge_audit: an edge's use records on their way to credstore
 * (CredentialResolver.AppendAudit), as a state machine with no I/O and no
 * clock of its own, so every rule is testable with a fake clock. The edges
 * are airlock-gateway (one record per tunnel request) and airlock-executor
 * (one per request or tunnel its egress proxy handled); al_edge.h does the
 * I/O around it.
 *
 * A use reserves its slot before it runs (al_edge_audit_reserve), so the
 * queue never holds more than max_pending records and a use that could not
 * be recorded never happens: the caller refuses it instead.
 *
 * Batches: records wait at most flush_s, or until batch_max are queued; one
 * batch is in flight at a time, carrying each grant its records cite once. A
 * batch that fails in transit (AL_EDGE_RETRY) is resent unchanged, with the
 * same random batch id, after a backoff that starts at flush_s and doubles up
 * to retry_max_s: credstore appends a batch id once. A batch credstore
 * refuses as such (AL_EDGE_REFUSED: a record or grant it will never take)
 * is split in halves that are sent as new batches, down to the single
 * record, which is then dropped and counted (credstore has recorded the
 * refusal in its own chain): one bad record never blocks the others.
 *
 * Cache rule: while a batch has failed and is not yet delivered, or has been
 * in flight longer than 2 x flush_s, al_edge_audit_bypass() says so and an
 * edge that caches values stops using them (every request then resolves,
 * and credstore audits each Resolve itself).
 *
 * Lifecycle: al_edge_grant_new()/ref/unref; al_edge_audit_new() ->
 * reserve/add..., next/done... -> al_edge_audit_free() (records still queued
 * are freed: the caller reports how many were lost).
 */
#ifndef AL_EDGE_AUDIT_H
#define AL_EDGE_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "airlock/v1/credstore.pb-c.h"
#include "airlock/v1/grant.pb-c.h"

#define AL_EDGE_TOOL_MAX 256  /* credstore caps request_id and tool at 256 bytes */
#define AL_EDGE_PATH_MAX 1024 /* and path and reason at 1024 */

/* A grant as its issuer signed it, shared by the records citing it. */
struct al_edge_grant {
    int refs;
    char grant_id[65];
    Airlock__V1__SignedGrant *sg; /* unpacked, owned */
    uint64_t mark;                /* batch building */
};

/* Unpacks the serialized SignedGrant bytes[0..n) (copied). Returns 0,
 * AL_ERR_INVAL or AL_ERR_NOMEM. */
int al_edge_grant_new(const uint8_t *bytes, size_t n, const char *grant_id,
                      struct al_edge_grant **out);
struct al_edge_grant *al_edge_grant_ref(struct al_edge_grant *g);
void al_edge_grant_unref(struct al_edge_grant *g);

/* What one use did (a request, or a tunnel); strings are copied (and cut to
 * credstore's caps). */
struct al_edge_use {
    const char *credential; /* "" = the use involved no credential */
    int32_t version;        /* 0 = no value used */
    const char *destination;
    const char *method;
    const char *path; /* without query */
    int32_t status;   /* upstream status, 0 = none */
    int64_t request_bytes, response_bytes;
    int allow; /* 1 ALLOW (the value was sent), 0 DENY */
    const char *reason;
    int64_t time_ms;
    const char *request_id;
    const char *tool;    /* gateways: "tools/call:search", "tools/list"; else "" */
    int64_t duration_us; /* arrival to end of the response or tunnel; 0 = not measured */
};

enum al_edge_outcome {
    AL_EDGE_OK = 0,  /* appended (or a duplicate of an earlier delivery) */
    AL_EDGE_RETRY,   /* transport failure, UNAVAILABLE, deadline...: resend as is */
    AL_EDGE_REFUSED, /* credstore will never take this batch */
};

struct al_edge_audit_opts {
    size_t batch_max;   /* 1..1000 */
    double flush_s;     /* > 0 */
    size_t max_pending; /* >= 1 */
    double retry_max_s; /* 0 = 10 s */
};

struct al_edge_audit;

int al_edge_audit_new(const struct al_edge_audit_opts *o, struct al_edge_audit **out);
/* Frees everything; returns how many records were still undelivered. */
size_t al_edge_audit_free(struct al_edge_audit *a);

/* Reserves room for one record. Returns 0 or AL_ERR_TOOBIG (max_pending
 * records are queued or reserved: refuse the request). */
int al_edge_audit_reserve(struct al_edge_audit *a);
/* Gives back a reservation that will not be used. */
void al_edge_audit_release(struct al_edge_audit *a);

/* Queues the record of use u citing grant g (a reference is taken), using
 * one reservation. Returns 0 or AL_ERR_NOMEM (the reservation is released;
 * the caller logs the loss). */
int al_edge_audit_add(struct al_edge_audit *a, struct al_edge_grant *g, const struct al_edge_use *u,
                      double now);

/* When al_edge_audit_next() may return a batch: an absolute time (<= now: at
 * once), or a negative value when nothing is waiting (or a batch is in
 * flight and its outcome is awaited). */
double al_edge_audit_wake(const struct al_edge_audit *a, double now);

/* The batch to send now, or NULL. The request stays valid and unchanged
 * until al_edge_audit_done() for it; a retried batch is the same request. */
const Airlock__V1__AppendAuditRequest *al_edge_audit_next(struct al_edge_audit *a, double now);

/* The outcome of the batch al_edge_audit_next() returned. */
void al_edge_audit_done(struct al_edge_audit *a, enum al_edge_outcome o, double now);

/* From now on every queued record is due at once (shutdown). */
void al_edge_audit_flush_all(struct al_edge_audit *a);

/* 1 while cached values must not be used (see above). */
int al_edge_audit_bypass(const struct al_edge_audit *a, double now);

/* Records queued or in flight; reservations outstanding; records dropped
 * after credstore refused them one by one; 1 while a batch is in flight. */
size_t al_edge_audit_queued(const struct al_edge_audit *a);
size_t al_edge_audit_reserved(const struct al_edge_audit *a);
unsigned long al_edge_audit_dropped(const struct al_edge_audit *a);
int al_edge_audit_in_flight(const struct al_edge_audit *a);

#endif
