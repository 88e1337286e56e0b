/*
 * egress: the executor's side of the egress proxy (airlock-egress, a child
 * process speaking proto/airlock/internal/egress.proto over a SOCK_SEQPACKET
 * socketpair).
 *
 * egress.c, the proxy process and its control socket:
 *   start   socketpair, fork, exec airlock-egress --control-fd 3 --uid --gid
 *           [--ca-file] [--resolve name=addr]... [--dns-servers]
 *           --connect-timeout-ms --log-level; the child is watched through
 *           a pidfd
 *   send    one EgressMsg per datagram (at most 1 MiB), descriptors as
 *           SCM_RIGHTS of JobListen; a datagram the socket cannot take now
 *           waits in an ordered queue (a JobOpen there stays in locked
 *           memory and is wiped once sent)
 *   receive JobOpened / Use / JobClosed, dispatched to the job; Use records
 *           become EdgeUseRecords batched to credstore (al_edge.h) under the
 *           job's grant. Reading pauses while the audit queue is full, so
 *           the proxy's own queue fills and it refuses requests it could not
 *           record (back-pressure end to end)
 *   death   the proxy exiting (or closing its socket) fails every job that
 *           was using it (INTERNAL, "the egress proxy exited ..."), jobs
 *           still waiting for a proxy keep waiting, and a new proxy starts
 *           after egress.restart_min doubling up to egress.restart_max
 *           (jittered; reset once a proxy stayed up a minute)
 *   stop    the socket is closed (the proxy exits when it sees that), then
 *           SIGKILL if it is still there after a grace
 * /readyz is not ready while the proxy is down.
 *
 * egress_job.c, one job's proxy (struct ex_ejob):
 *   open      policy (egress_policy.h) -> each bound credential resolved
 *             from credstore per concrete destination with the attempt's
 *             grant (credstore checks and audits each) -> placeholders ->
 *             JobOpen (values in locked memory, wiped right after sending)
 *             -> JobOpened -> the CA bundle written (system bundle + the
 *             job's CA) -> ready: the sandbox starts
 *   run       the sandbox's listeners -> JobListen; each renewed grant ->
 *             JobGrant; shortly before credstore's expiry of the values,
 *             every binding resolved again with the newest grant ->
 *             JobCredentials; Use -> audit
 *   close     JobClose when the job ends for any reason; the bundle is
 *             removed; the job's state lives on until JobClosed (its last
 *             Use records cite its grants), or a timeout
 * Times: egress.open_timeout bounds everything before ready.
 *
 * Lifecycle: ex_egress_start() at start-up (egress.enabled) ->
 * ex_ejob_open()... -> ex_egress_drain() when the executor drains (waits for
 * closing jobs, flushes the audit queue) -> ex_egress_free().
 */
#ifndef EX_EGRESS_H
#define EX_EGRESS_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "airlock/internal/egress.pb-c.h"
#include "airlock/v1/intake.pb-c.h"

struct ex;
struct ex_attempt;
struct ex_egress;
struct ex_ejob;

/* ---- egress.c ---- */

/* Starts the proxy (and the credstore link) for ex. Returns 0 or a
 * negative code with a reason in why (start-up fails). */
int ex_egress_start(struct ex *ex, char *why, size_t n);
/* 1 while a proxy process is up with its control socket. */
int ex_egress_up(const struct ex_egress *eg);
/* The executor drains: done(ex) runs once closing jobs reported
 * JobClosed (or timed out) and the audit queue is flushed (or timed out). */
void ex_egress_drain(struct ex *ex, void (*done)(struct ex *ex));
/* Stops the proxy and frees everything (records still queued are logged as
 * lost). NULL-safe. */
void ex_egress_free(struct ex *ex);

/* Sends m (with descriptors fds[0..nfds), taken: closed once sent or
 * dropped). sensitive: m carries secrets; its packed form lives in locked
 * memory and is wiped. Returns 0, or AL_ERR_STATE when no proxy is up (the
 * fds are closed), AL_ERR_TOOBIG, AL_ERR_NOMEM. */
int ex_egress_send(struct ex_egress *eg, const Airlock__Internal__EgressMsg *m, const int *fds,
                   size_t nfds, int sensitive);
/* Generation of the running proxy (a job opened on an older one lost it). */
uint64_t ex_egress_generation(const struct ex_egress *eg);
struct al_edge *ex_egress_edge(struct ex_egress *eg);

/* ---- egress_job.c ---- */

struct ex_ejob_cbs {
    /* The job's proxy is open: start the sandbox. bundle = host path of the
     * job's CA bundle, NULL when the job needs no interception. */
    void (*ready)(void *user, const char *bundle);
    /* The proxy could not be opened for the job (before ready): the job
     * ends FAILED with reason (FailureReason) and why (for the agent). */
    void (*failed)(void *user, int reason, const char *why);
    /* After ready: the proxy died; the job must be stopped (INTERNAL). */
    void (*lost)(void *user, const char *why);
};

/*
 * Begins opening the proxy for attempt a (network PROXY or bindings).
 * Checks that can be made at once fail here: returns < 0 with *reason and
 * why. Otherwise returns 0 and exactly one of ready / failed follows from
 * the loop, unless ex_ejob_close() comes first.
 */
int ex_ejob_open(struct ex *ex, struct ex_attempt *a, const struct ex_ejob_cbs *cbs, void *user,
                 struct ex_ejob **out, int *reason, char *why, size_t n);

/* The sandbox's environment for the proxy: placeholders under the bindings'
 * variables, the proxy and CA variables. Valid until ex_ejob_close(). */
void ex_ejob_env(const struct ex_ejob *j, const char *const **names, const char *const **values,
                 size_t *n);

/* The sandbox's listening descriptors (taken): JobListen. */
void ex_ejob_listen(struct ex_ejob *j, const int *fds, size_t n);

/* A renewed grant of the attempt (borrowed): JobGrant. */
void ex_ejob_grant(struct ex_ejob *j, const Airlock__V1__SignedGrant *sg);

/* The job ended or is abandoned: JobClose (when opened), no callback runs
 * any more; j is freed later. NULL-safe. */
void ex_ejob_close(struct ex_ejob *j);

/* Called by egress.c. ex_ejob_on_use() uses the audit reservation egress.c
 * took before reading the message when it returns 1 (record queued); on 0
 * the caller releases it. */
void ex_ejob_on_opened(struct ex *ex, const Airlock__Internal__JobOpened *m);
int ex_ejob_on_use(struct ex *ex, const Airlock__Internal__Use *m);
void ex_ejob_on_closed(struct ex *ex, const Airlock__Internal__JobClosed *m);
/* A proxy came up: jobs waiting for one send their JobOpen. */
void ex_ejob_proxy_up(struct ex *ex);
/* The proxy is gone: jobs opened on it are lost or failed. */
void ex_ejob_proxy_down(struct ex *ex);
/* Jobs still waiting for JobClosed. */
size_t ex_ejob_closing(const struct ex *ex);
/* Removes CA bundles an earlier run left in dir. */
void ex_ejob_sweep_bundles(const char *dir);
/* egress_job.c tells egress.c that a closing job is gone (drain). */
void ex_egress_job_closed(struct ex *ex);
/* Frees every job (shutdown). */
void ex_ejob_free_all(struct ex *ex);

#endif
