/*
 * gw_audit: the gateway's use records on their way to credstore
 * (CredentialResolver.AppendAudit), as a state machine with no I/O and no
 * clock of its own, so every rule is testable with a fake clock.
 *
 * Every agent request that used (or was refused) a credential value, or that
 * was an MCP call, becomes one EdgeUseRecord. A request reserves its slot
 * before it runs (gw_audit_reserve), so the queue never holds more than
 * max_pending records and a request that could not be recorded never runs:
 * the caller answers 503 instead.
 *
 * Batches: records wait at most flush_s, or until batch_max are queued; one
 * batch is in flight at a time, carrying each grant its records cite once. A
 * batch that fails in transit (GW_AUDIT_RETRY) is resent unchanged, with the
 * same random batch id, after a backoff that starts at flush_s and doubles up
 * to retry_max_s: credstore appends a batch id once. A batch credstore
 * refuses as such (GW_AUDIT_REFUSED: a record or grant it will never take)
 * is split in halves that are sent as new batches, down to the single
 * record, which is then dropped and counted (credstore has recorded the
 * refusal in its own chain): one bad record never blocks the others.
 *
 * Cache rule: while a batch has failed and is not yet delivered, or has been
 * in flight longer than 2 x flush_s, gw_audit_bypass() says so and the
 * gateway stops using cached values (every request then resolves, and
 * credstore audits each Resolve itself).
 *
 * Lifecycle: gw_grant_new()/ref/unref; gw_audit_new() -> reserve/add...,
 * next/done... -> gw_audit_free() (records still queued are freed: the
 * caller reports how many were lost).
 */
#ifndef GW_AUDIT_H
#define GW_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "airlock/v1/credstore.pb-c.h"
#include "airlock/v1/grant.pb-c.h"

#define GW_AUDIT_TOOL_MAX 256  /* credstore caps request_id and tool at 256 bytes */
#define GW_AUDIT_PATH_MAX 1024 /* and path and reason at 1024 */

/* A grant as the relay sent it, shared by the records citing it. */
struct gw_grant {
    int refs;
    char grant_id[65];
    Airlock__V1__SignedGrant *sg; /* unpacked, owned */
    uint64_t mark;                /* batch building */
};

/* Unpacks the serialized SignedGrant bytes[0..n) (copied). Returns 0,
 * AL_ERR_INVAL or AL_ERR_NOMEM. */
int gw_grant_new(const uint8_t *bytes, size_t n, const char *grant_id, struct gw_grant **out);
struct gw_grant *gw_grant_ref(struct gw_grant *g);
void gw_grant_unref(struct gw_grant *g);

/* What one request did; strings are copied (and cut to credstore's caps). */
struct gw_use {
    const char *credential;
    int32_t version; /* 0 = no value used */
    const char *destination;
    const char *method;
    const char *path; /* without query */
    int32_t status;   /* upstream status, 0 = none */
    int64_t request_bytes, response_bytes;
    int allow; /* 1 ALLOW (the value was sent), 0 DENY */
    const char *reason;
    int64_t time_ms;
    const char *request_id;
    const char *tool; /* "tools/call:search", "tools/list", "" */
};

enum gw_audit_outcome {
    GW_AUDIT_OK = 0,  /* appended (or a duplicate of an earlier delivery) */
    GW_AUDIT_RETRY,   /* transport failure, UNAVAILABLE, deadline...: resend as is */
    GW_AUDIT_REFUSED, /* credstore will never take this batch */
};

struct gw_audit_opts {
    size_t batch_max;   /* 1..1000 */
    double flush_s;     /* > 0 */
    size_t max_pending; /* >= 1 */
    double retry_max_s; /* 0 = 10 s */
};

struct gw_audit;

int gw_audit_new(const struct gw_audit_opts *o, struct gw_audit **out);
/* Frees everything; returns how many records were still undelivered. */
size_t gw_audit_free(struct gw_audit *a);

/* Reserves room for one record. Returns 0 or AL_ERR_TOOBIG (max_pending
 * records are queued or reserved: refuse the request). */
int gw_audit_reserve(struct gw_audit *a);
/* Gives back a reservation that will not be used. */
void gw_audit_release(struct gw_audit *a);

/* Queues the record of use u citing grant g (a reference is taken), using
 * one reservation. Returns 0 or AL_ERR_NOMEM (the reservation is released;
 * the caller logs the loss). */
int gw_audit_add(struct gw_audit *a, struct gw_grant *g, const struct gw_use *u, double now);

/* When gw_audit_next() may return a batch: an absolute time (<= now: at
 * once), or a negative value when nothing is waiting (or a batch is in
 * flight and its outcome is awaited). */
double gw_audit_wake(const struct gw_audit *a, double now);

/* The batch to send now, or NULL. The request stays valid and unchanged
 * until gw_audit_done() for it; a retried batch is the same request. */
const Airlock__V1__AppendAuditRequest *gw_audit_next(struct gw_audit *a, double now);

/* The outcome of the batch gw_audit_next() returned. */
void gw_audit_done(struct gw_audit *a, enum gw_audit_outcome o, double now);

/* From now on every queued record is due at once (shutdown). */
void gw_audit_flush_all(struct gw_audit *a);

/* 1 while cached values must not be used (see above). */
int gw_audit_bypass(const struct gw_audit *a, double now);

/* Records queued or in flight; reservations outstanding; records dropped
 * after credstore refused them one by one; 1 while a batch is in flight. */
size_t gw_audit_queued(const struct gw_audit *a);
size_t gw_audit_reserved(const struct gw_audit *a);
unsigned long gw_audit_dropped(const struct gw_audit *a);
int gw_audit_in_flight(const struct gw_audit *a);

#endif
