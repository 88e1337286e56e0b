/*
 * quota: the per-job request rate and byte budget, as pure functions over
 * the caller's structs (times in seconds on any clock; tests pass their own).
 *
 * Rate: a token bucket holding at most burst tokens, refilled at rate per
 * second; a request or tunnel takes one, and is refused (429) when less than
 * one is left. rate 0 = unlimited.
 *
 * Bytes: the bytes both ways over the job's life (tunnels: the raw bytes;
 * intercepted and plain http requests: request and response bodies) against
 * max (0 = unlimited). A transfer that crosses the limit is cut where it
 * stands; new requests and tunnels are refused (403) once it is reached.
 */
#ifndef EG_QUOTA_H
#define EG_QUOTA_H

#include <stdint.h>

struct eg_bucket {
    double tokens, rate, burst, last;
};

/* rate 0 = unlimited; burst 0 = rate. The bucket starts full. */
void eg_bucket_init(struct eg_bucket *b, double rate, double burst, double now);

/* Takes a token at time now: 1, or 0 when the bucket is empty. */
int eg_bucket_take(struct eg_bucket *b, double now);

struct eg_budget {
    int64_t max; /* 0 = unlimited */
    int64_t used;
};

/* Counts n more bytes. Returns 0, or -1 when the budget is now used up. */
int eg_budget_charge(struct eg_budget *b, uint64_t n);

/* 1 while bytes are left. */
int eg_budget_left(const struct eg_budget *b);

#endif
