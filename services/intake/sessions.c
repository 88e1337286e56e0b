/*
 * sessions: a session's jobs run one at a time, in submission order, on the
 * executor instance holding its workspace. Order and one-at-a-time come from
 * the lease query (instore.c: only the oldest unfinished job of a session is
 * a candidate); this file decides which executor may take that job: the
 * holder, or anyone once the holder is gone (in_exec_gone), in which case
 * the session moves and the job starts in a fresh workspace
 * (LeaseAssignment.workspace_reset, JobResult.workspace_reset).
 */
#include <string.h>

#include "al_err.h"
#include "insvc.h"

int in_session_eligible(struct in_svc *s, const struct in_job *j, const struct in_exec *e,
                        int64_t now_ms, int *ok, int *reset)
{
    char holder[AL_PKI_ID_MAX], inst[IN_INSTANCE_LEN + 1];
    const struct in_exec *h;
    int rc;

    *ok = 1;
    *reset = 0;
    if (!j->session_id[0])
        return 0;
    rc = in_store_session_get(s->store, j->principal, j->session_id, holder, inst);
    if (rc == AL_ERR_NOTFOUND)
        return 0; /* a new session: its workspace starts here */
    if (rc < 0) {
        *ok = 0;
        return rc;
    }
    if (strcmp(holder, e->identity) == 0 && strcmp(inst, e->instance) == 0)
        return 0;
    h = in_exec_find(s, holder, inst);
    if (h ? in_exec_gone(s, h, now_ms) : now_ms > s->start_ms + s->cfg.restart_grace_ms) {
        *reset = 1;
        return 0;
    }
    *ok = 0; /* the holder is alive: the job waits for it */
    return 0;
}

int in_session_assign(struct in_svc *s, const struct in_job *j, const struct in_exec *e,
                      int64_t now_ms)
{
    if (!j->session_id[0])
        return 0;
    return in_store_session_put(s->store, j->principal, j->session_id, e->identity, e->instance,
                                now_ms);
}
