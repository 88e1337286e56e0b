/*
 * job: the proxy's side of one job, from JobOpen to JobClose, and the
 * dispatch of control messages.
 *
 * JobOpen builds the job: ceiling and job destinations (policy.h),
 * credentials with their values in locked memory (inject.h), the
 * placeholder detector (an rl_scrub set of the placeholders, value i =
 * credential i), the response scrubber (every value and, for BASIC_AUTH,
 * its password part, each replaced by its placeholder), the limits, and,
 * when something will be intercepted (a credential, or method/path rules
 * in a job destination or in a ceiling entry overlapping one), the job's CA
 * (ca.h) constrained to the job's destination and binding hosts. It answers
 * JobOpened with the CA's PEM or with an error naming what was wrong; a bad
 * JobOpen opens nothing.
 *
 * JobListen hands over the sandbox's listening sockets (checked to be
 * listening TCP sockets; others are closed); the job accepts on them.
 * JobGrant renews the grant id of the job's records and moves each
 * credential's expiry to min(its credstore limit, the grant's expiry). A
 * credential whose expiry passes is wiped at once (a timer) and the
 * response scrubber is rebuilt from the values left (responses already
 * streaming keep the set they started with until they end).
 *
 * JobClose ends every connection (a request in flight gets its Use record
 * with reason "job closed"), closes the listeners, wipes the values, the
 * scrubbers and the CA's keys, and answers JobClosed with the job's
 * counters. The job's memory goes once its last connection has been
 * released. The end of the control socket closes every job the same way,
 * then stops the loop.
 *
 * Malformed or unexpected messages (a JobOpen for an open job, messages
 * only the proxy sends, unknown jobs) are logged and answered where the
 * executor waits for an answer (JobOpened error, JobClosed with zeros),
 * never fatal.
 */
#ifndef EG_JOB_H
#define EG_JOB_H

#include "egress.h"

/* ctl callbacks; user = the struct eg_proxy. */
extern const struct eg_ctl_cbs eg_job_ctl_cbs;

/* Closes every job (as JobClose, but without replies). */
void eg_jobs_close_all(struct eg_proxy *p);

/* The open job with this id, or NULL. */
struct eg_job *eg_job_find(struct eg_proxy *p, const char *id);

#endif
