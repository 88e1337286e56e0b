/*
 * egress_int: state shared by egress.c (the proxy process, its socket) and
 * egress_job.c (the jobs using it). Not for other modules: they use
 * egress.h.
 */
#ifndef EX_EGRESS_INT_H
#define EX_EGRESS_INT_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include <ev.h>

#include "egress.h"

struct al_edge;
struct al_metric;
struct ex_outmsg;

struct ex_egress {
    struct ex *ex;
    struct al_edge *edge; /* credstore: Resolve and use records */
    char binary[PATH_MAX];
    char bundle_dir[PATH_MAX]; /* per-job CA bundles */
    /* the process */
    pid_t pid;
    int pidfd;
    ev_io pid_w;
    uint64_t gen;         /* proxies started so far; the running one's number */
    ev_tstamp started_at; /* of the running proxy */
    int up;               /* a proxy runs and its socket is open */
    int stopping;
    ev_timer restart_w;
    double backoff_s;
    /* the control socket */
    int fd;
    ev_io rd_w, wr_w;
    ev_timer pause_w; /* reading paused while the audit queue is full */
    struct ex_outmsg *q_head, **q_tail;
    size_t q_len;
    uint8_t *rbuf; /* one received datagram */
    /* jobs (egress_job.c) */
    struct ex_ejob *jobs;
    size_t n_jobs;
    /* drain */
    void (*drain_done)(struct ex *ex);
    ev_timer drain_w;
    int drain_phase;
    /* metrics */
    struct al_metric *m_up, *m_restarts, *m_jobs, *m_use_allow, *m_use_deny, *m_exfil,
        *m_resolve_ok, *m_resolve_denied, *m_resolve_failed, *m_use_unknown;
};

#endif
