/*
 * sm: transition table, lease-loss outcomes, backoff and fencing; see sm.h.
 */
#include <stdio.h>
#include <string.h>

#include "inutil.h"
#include "sm.h"

#define NSTATES 8

/* allowed[from][to]; the diagram in sm.h */
static const unsigned char allowed[NSTATES][NSTATES] = {
    /*            UNS Q  L  R  S  F  C  T */
    /* UNSPEC */ {0, 0, 0, 0, 0, 0, 0, 0},
    /* QUEUED */ {0, 0, 1, 0, 0, 0, 1, 1},
    /* LEASED */ {0, 1, 0, 1, 1, 1, 1, 1},
    /* RUNNING*/ {0, 1, 0, 0, 1, 1, 1, 1},
    /* SUCC   */ {0, 0, 0, 0, 0, 0, 0, 0},
    /* FAILED */ {0, 0, 0, 0, 0, 0, 0, 0},
    /* CANC   */ {0, 0, 0, 0, 0, 0, 0, 0},
    /* TIMED  */ {0, 0, 0, 0, 0, 0, 0, 0},
};

int in_sm_state_valid(int state)
{
    return state >= IN_JS(QUEUED) && state <= IN_JS(TIMED_OUT);
}

int in_sm_terminal(int state)
{
    return state == IN_JS(SUCCEEDED) || state == IN_JS(FAILED) || state == IN_JS(CANCELLED) ||
           state == IN_JS(TIMED_OUT);
}

int in_sm_allowed(int from, int to)
{
    if (from < 0 || from >= NSTATES || to < 0 || to >= NSTATES)
        return 0;
    return allowed[from][to];
}

const char *in_sm_state_name(int state)
{
    static const char *const names[NSTATES] = {"UNSPECIFIED", "QUEUED", "LEASED",    "RUNNING",
                                               "SUCCEEDED",   "FAILED", "CANCELLED", "TIMED_OUT"};
    return state >= 0 && state < NSTATES ? names[state] : "UNSPECIFIED";
}

int in_sm_finish_state_valid(int state)
{
    return in_sm_terminal(state);
}

int64_t in_sm_backoff_ms(int64_t base_ms, int64_t max_ms, int spent)
{
    int64_t d = base_ms;
    if (spent < 1 || base_ms <= 0)
        return 0;
    for (int i = 1; i < spent && d < max_ms; i++)
        d *= 2;
    return d > max_ms ? max_ms : d;
}

int in_sm_effective_attempts(int requested, int def, int max)
{
    int n = requested > 0 ? requested : def;
    if (n > max)
        n = max;
    return n < 1 ? 1 : n;
}

void in_sm_lease_lost(const struct in_sm_attempts *a, int64_t now_ms, int64_t base_ms,
                      int64_t max_ms, struct in_sm_outcome *o)
{
    memset(o, 0, sizeof(*o));
    o->spent = a->spent;
    if (a->cancel_requested) {
        o->state = IN_JS(CANCELLED);
        o->failure_reason = IN_FR(CANCELLED);
        snprintf(o->message, sizeof(o->message),
                 "lease of attempt %d expired after cancellation was requested", a->attempt);
    } else if (a->spent < a->max_attempts) {
        o->state = IN_JS(QUEUED);
        o->not_before_ms = now_ms + in_sm_backoff_ms(base_ms, max_ms, a->spent);
        snprintf(o->message, sizeof(o->message), "lease expired; re-queued as attempt %d",
                 a->attempt + 1);
    } else {
        o->state = IN_JS(FAILED);
        o->failure_reason = IN_FR(EXECUTOR_LOST);
        snprintf(o->message, sizeof(o->message),
                 "lease of attempt %d expired and no attempts are left (%d of %d used)", a->attempt,
                 a->spent, a->max_attempts);
    }
}

void in_sm_handed_back(const struct in_sm_attempts *a, int64_t now_ms, struct in_sm_outcome *o)
{
    memset(o, 0, sizeof(*o));
    o->spent = a->ran ? a->spent : a->spent - 1;
    if (o->spent < 0)
        o->spent = 0;
    if (a->cancel_requested) {
        o->state = IN_JS(CANCELLED);
        o->failure_reason = IN_FR(CANCELLED);
        snprintf(o->message, sizeof(o->message),
                 "attempt %d handed back by the executor after cancellation was requested",
                 a->attempt);
    } else if (o->spent < a->max_attempts) {
        o->state = IN_JS(QUEUED);
        o->not_before_ms = now_ms;
        snprintf(o->message, sizeof(o->message),
                 "attempt %d handed back by the executor; re-queued as attempt %d", a->attempt,
                 a->attempt + 1);
    } else {
        o->state = IN_JS(FAILED);
        o->failure_reason = IN_FR(EXECUTOR_LOST);
        snprintf(o->message, sizeof(o->message),
                 "attempt %d handed back by the executor and no attempts are left", a->attempt);
    }
}

int in_sm_fence_ok(const struct in_sm_lease *l, const char *caller, int attempt,
                   const uint8_t *token, size_t token_len)
{
    uint8_t given[IN_TOKEN_LEN] = {0};
    int ok = 1;

    if (token && token_len == IN_TOKEN_LEN)
        memcpy(given, token, IN_TOKEN_LEN);
    else
        ok = 0;
    /* the comparison always runs, over the full length */
    if (!l->token || !in_ct_equal(l->token, given, IN_TOKEN_LEN))
        ok = 0;
    if (l->state != IN_JS(LEASED) && l->state != IN_JS(RUNNING))
        ok = 0;
    if (attempt != l->attempt || attempt < 1)
        ok = 0;
    if (!caller || !l->executor_id || !caller[0] || strcmp(caller, l->executor_id) != 0)
        ok = 0;
    return ok;
}
