/*
 * quota: token bucket and byte budget (see quota.h).
 */
#include "quota.h"

void eg_bucket_init(struct eg_bucket *b, double rate, double burst, double now)
{
    b->rate = rate > 0 ? rate : 0;
    b->burst = burst > 0 ? burst : b->rate;
    if (b->burst < 1 && b->rate > 0)
        b->burst = 1;
    b->tokens = b->burst;
    b->last = now;
}

int eg_bucket_take(struct eg_bucket *b, double now)
{
    if (b->rate <= 0)
        return 1;
    if (now > b->last) {
        b->tokens += (now - b->last) * b->rate;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
        b->last = now;
    }
    if (b->tokens < 1.0)
        return 0;
    b->tokens -= 1.0;
    return 1;
}

int eg_budget_charge(struct eg_budget *b, uint64_t n)
{
    if (n > (uint64_t)INT64_MAX - (uint64_t)b->used)
        b->used = INT64_MAX;
    else
        b->used += (int64_t)n;
    return eg_budget_left(b) ? 0 : -1;
}

int eg_budget_left(const struct eg_budget *b)
{
    return b->max <= 0 || b->used < b->max;
}
