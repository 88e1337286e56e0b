/*
 * exconfig: airlock-executor's configuration beyond the common service keys.
 *
 *   intake.addr              intake's ExecutorService address (dialled out)
 *   intake.peer              SPIFFE id prefix intake's certificate must carry
 *   slots                    jobs held at once
 *   pools                    pools to lease from (empty = every pool intake assigns us)
 *   lease.reconnect_min/max  backoff of the Lease stream's reconnects (jittered)
 *   lease.safety_margin      stop a job this long before its lease could lapse
 *   drain.grace              on SIGTERM, how long running jobs may finish
 *                            before they are stopped and handed back
 *   push.max_batch           largest PushEvents batch
 *   limits.*                 ceiling of each job limit at this executor, also the
 *                            value used when a job leaves it unset (a job can only
 *                            narrow it)
 *   sandbox.*                see run.c
 */
#ifndef EX_CONFIG_H
#define EX_CONFIG_H
#include <stddef.h>

#include "al_config.h"
#include "al_service.h"

struct ex_config {
    struct al_service_config common;
    char *intake_addr;
    char *intake_peer;
    int slots;
    char **pools;
    long long reconnect_min_ms, reconnect_max_ms;
    long long safety_margin_ms;
    long long drain_grace_ms;
    size_t push_max_batch;
    /* ceilings and defaults of the jobs' limits (0 = none for cpu_millicores) */
    long long lim_wall_ms, lim_cpu_ms;
    size_t lim_memory, lim_file_size, lim_output;
    int lim_pids, lim_open_files, lim_cpu_millicores;
    /* sandbox */
    char *sandbox_name;
    char *work_dir;
    size_t workspace_size;
    long long session_idle_ms;
    char **ro_binds;
    int sandbox_uid;
    char *cgroup_parent;
    int allow_degraded;
};

/* The executor-specific schema (offsets into struct ex_config). */
const struct al_cfg_field *ex_config_fields(size_t *n);

#endif
