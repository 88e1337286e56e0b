/*
 * sm: the job state machine as pure functions (no I/O, no clock): which
 * transitions exist, terminal finality, what a lost lease or a handed-back
 * attempt turns into, retry backoff, and the fencing check every executor
 * report passes. The service (jobsvc.c, execsvc.c) applies the outcomes in
 * one store transaction each.
 *
 *   from \ to   QUEUED LEASED RUNNING SUCCEEDED FAILED CANCELLED TIMED_OUT
 *   QUEUED        -      L      -        -        -       C          Q
 *   LEASED        X      -      R        F        F       F/C/X      F
 *   RUNNING       X      -      -        F        F       F/C/X      F
 *   terminal      -      -      -        -        -       -          -
 *
 *   L lease to an executor       R executor reports RUNNING
 *   F executor Finish            C caller Cancel (QUEUED: at once)
 *   Q queue timeout              X lease lost / handed back (see below)
 *
 * Lease lost (expiry) or handed back (Finish with requeue): a job whose
 * cancellation was requested ends CANCELLED; otherwise it is QUEUED again as
 * a new attempt while attempts remain (a handed-back attempt that never
 * reported RUNNING does not count), else FAILED with EXECUTOR_LOST.
 */
#ifndef IN_SM_H
#define IN_SM_H

#include <stddef.h>
#include <stdint.h>

#include "airlock/v1/intake.pb-c.h"

#define IN_JS(x)     AIRLOCK__V1__JOB_STATE__JOB_STATE_##x
#define IN_FR(x)     AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_##x
#define IN_TOKEN_LEN 16 /* fencing token bytes (128 bits) */

/* 1 for SUCCEEDED, FAILED, CANCELLED, TIMED_OUT. */
int in_sm_terminal(int state);

/* 1 for a known, set state (QUEUED .. TIMED_OUT). */
int in_sm_state_valid(int state);

/* 1 when the table above allows from -> to. Terminal states allow nothing. */
int in_sm_allowed(int from, int to);

/* "QUEUED", "LEASED", ... ("UNSPECIFIED" for anything else). Static. */
const char *in_sm_state_name(int state);

/* 1 for the states an executor may Finish with (the terminal ones). */
int in_sm_finish_state_valid(int state);

/* The attempt bookkeeping of one job. */
struct in_sm_attempts {
    int attempt;          /* current attempt number (0 before the first lease) */
    int spent;            /* attempts that count against max_attempts */
    int max_attempts;     /* effective maximum (>= 1) */
    int cancel_requested; /* Cancel was called while leased or running */
    int ran;              /* the current attempt reported RUNNING */
};

/* What a lost or handed-back lease turns into. */
struct in_sm_outcome {
    int state;             /* QUEUED, CANCELLED or FAILED */
    int failure_reason;    /* for a terminal state */
    int spent;             /* new value of attempts spent */
    int64_t not_before_ms; /* QUEUED: earliest next lease */
    char message[160];     /* the state change's message */
};

/*
 * Lease expired (now_ms) with the given bookkeeping. base_ms/max_ms: retry
 * backoff (in_sm_backoff_ms). Fills o.
 */
void in_sm_lease_lost(const struct in_sm_attempts *a, int64_t now_ms, int64_t base_ms,
                      int64_t max_ms, struct in_sm_outcome *o);

/* The executor handed the attempt back (Finish with requeue): no backoff,
 * and the attempt counts only if it ran. Fills o. */
void in_sm_handed_back(const struct in_sm_attempts *a, int64_t now_ms, struct in_sm_outcome *o);

/*
 * Retry backoff before the next attempt after `spent` attempts (>= 1):
 * base_ms * 2^(spent-1), at most max_ms; 0 when spent < 1 or base_ms <= 0.
 */
int64_t in_sm_backoff_ms(int64_t base_ms, int64_t max_ms, int spent);

/* Effective maximum attempts: 0 -> def; above max -> max; result >= 1. */
int in_sm_effective_attempts(int requested, int def, int max);

/* The lease as stored, for the fencing check. */
struct in_sm_lease {
    int state;               /* the job's state */
    int attempt;             /* the job's current attempt */
    const char *executor_id; /* holder SPIFFE id */
    const uint8_t *token;    /* IN_TOKEN_LEN bytes, or NULL when no lease */
};

/*
 * Fencing: a report for (attempt, token of token_len bytes) from caller is
 * accepted only if the job is LEASED or RUNNING, attempt is the current one,
 * caller is the holder and the token matches (compared in constant time,
 * always over IN_TOKEN_LEN bytes). Returns 1 accepted, 0 lost.
 */
int in_sm_fence_ok(const struct in_sm_lease *l, const char *caller, int attempt,
                   const uint8_t *token, size_t token_len);

#endif
