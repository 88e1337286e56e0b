/*
 * retention: the periodic purge (retention.sweep_interval). Finished jobs
 * older than retention.jobs go with their events and idempotency keys;
 * events of finished jobs older than retention.events go first (Watch then
 * answers OUT_OF_RANGE EVENTS_EXPIRED); idempotency keys older than
 * retention.idempotency go once their job is finished; sessions without
 * unfinished jobs go with the jobs. Each pass deletes at most ROUNDS * BATCH
 * jobs, in the group commit of its loop turn, so the loop never stalls.
 */
#include "al_err.h"
#include "al_log.h"
#include "al_metrics.h"
#include "insvc.h"

#define BATCH  500
#define ROUNDS 8

void in_retention_sweep(struct in_svc *s, int64_t now_ms)
{
    struct in_purge total = {0};
    int rc = 0;

    for (int round = 0; round < ROUNDS && rc == 0; round++) {
        struct in_purge p = {0};
        if ((rc = in_tx_begin(s)) < 0)
            break;
        rc = in_store_purge(s->store, now_ms - s->cfg.retention_jobs_ms,
                            now_ms - s->cfg.retention_events_ms, now_ms - s->cfg.retention_idem_ms,
                            BATCH, &p);
        if (in_tx_end(s, rc == 0) < 0 || rc < 0)
            break;
        total.jobs += p.jobs;
        total.events += p.events;
        total.idempotency += p.idempotency;
        total.sessions += p.sessions;
        if (p.jobs < BATCH && p.idempotency < BATCH)
            break;
    }
    if (rc < 0)
        AL_LOG_WARN("intake.retention", "reason=\"%s\"", al_strerror(rc));
    if (total.jobs || total.events || total.idempotency || total.sessions) {
        al_metric_add(s->m_purged, total.jobs);
        AL_LOG_INFO("intake.retention", "jobs=%d events=%d idempotency_keys=%d sessions=%d",
                    total.jobs, total.events, total.idempotency, total.sessions);
    }
}
