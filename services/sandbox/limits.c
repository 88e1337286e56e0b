/*
 * limits: which mechanism enforces each limit of a job, and its rlimits.
 *
 *   limit          mechanisms, best first
 *   wall time      TIMER (ev_timer in the parent kills the sandbox)
 *   CPU time       cgroup CPU accounting read by a timer, and RLIMIT_CPU per
 *                  process (whole seconds, SIGXCPU then SIGKILL)
 *   memory         cgroup v2 / v1 (counts tmpfs pages); else RLIMIT_AS per
 *                  process (degraded only: tmpfs is not counted)
 *   pids           cgroup v2 / v1; else RLIMIT_NPROC (per user namespace)
 *   file size      RLIMIT_FSIZE
 *   open files     RLIMIT_NOFILE
 *   output         EXECUTOR (the parent counts the pipes)
 *   CPU bandwidth  cgroup v2 cpu.max / v1 cpu.cfs_quota_us; else NONE
 *                  (degraded only)
 * RLIMIT_CORE is always 0. The sandbox's init is one more process in the
 * pids cgroup / RLIMIT_NPROC count, so those get pids + 1.
 */
#include <errno.h>
#include <stdio.h>
#include <sys/resource.h>

#include "al_err.h"
#include "sb_int.h"

static void add(struct sb_limit_report *rep, size_t *n, enum sb_limit_kind k, int mech, int64_t v)
{
    if (*n >= SB_MAX_LIMITS)
        return;
    rep[*n].kind = k;
    rep[*n].mechanism = (enum sb_mechanism)mech;
    rep[*n].value = v;
    rep[*n].hit = 0;
    (*n)++;
}

static int refuse(char *msg, size_t msglen, const char *what, const char *why)
{
    snprintf(msg, msglen, "%s cannot be enforced on this host (%s)", what, why);
    return AL_ERR_CONFIG;
}

/* Seconds for RLIMIT_CPU: rounded up; reported back in ms. */
static int64_t cpu_rlimit_ms(int64_t ms)
{
    return (ms + 999) / 1000 * 1000;
}

int sb_limits_decide(const struct sb_caps *caps, const struct sb_limits *l, int degraded,
                     struct sb_limit_report *rep, size_t *n, char *msg, size_t msglen)
{
    const int64_t *v = &l->wall_time_ms;
    for (int i = 0; i < 8; i++)
        if (v[i] < 0) {
            snprintf(msg, msglen, "negative resource limit");
            return AL_ERR_INVAL;
        }
    *n = 0;
    if (l->wall_time_ms)
        add(rep, n, SB_LIMIT_WALL_TIME, SB_MECH_TIMER, l->wall_time_ms);
    if (l->cpu_time_ms) {
        if (caps->cpuacct)
            add(rep, n, SB_LIMIT_CPU_TIME, caps->cpuacct, l->cpu_time_ms);
        add(rep, n, SB_LIMIT_CPU_TIME, SB_MECH_RLIMIT, cpu_rlimit_ms(l->cpu_time_ms));
    }
    if (l->memory_bytes) {
        if (caps->memory)
            add(rep, n, SB_LIMIT_MEMORY, caps->memory, l->memory_bytes);
        else if (!degraded)
            return refuse(msg, msglen, "memory_bytes", "no memory cgroup; rlimits miss tmpfs");
        else
            add(rep, n, SB_LIMIT_MEMORY, SB_MECH_RLIMIT, l->memory_bytes);
    }
    if (l->pids)
        add(rep, n, SB_LIMIT_PIDS, caps->pids ? caps->pids : SB_MECH_RLIMIT, l->pids);
    if (l->file_size_bytes)
        add(rep, n, SB_LIMIT_FILE_SIZE, SB_MECH_RLIMIT, l->file_size_bytes);
    if (l->open_files)
        add(rep, n, SB_LIMIT_OPEN_FILES, SB_MECH_RLIMIT, l->open_files);
    if (l->output_bytes)
        add(rep, n, SB_LIMIT_OUTPUT, SB_MECH_EXECUTOR, l->output_bytes);
    if (l->cpu_millicores) {
        if (caps->cpu)
            add(rep, n, SB_LIMIT_CPU_BANDWIDTH, caps->cpu, l->cpu_millicores);
        else if (!degraded)
            return refuse(msg, msglen, "cpu_millicores", "no cpu cgroup controller");
        else
            add(rep, n, SB_LIMIT_CPU_BANDWIDTH, SB_MECH_NONE, l->cpu_millicores);
    }
    return 0;
}

static enum sb_mechanism mech_of(const struct sb_limit_report *rep, size_t n, enum sb_limit_kind k)
{
    for (size_t i = 0; i < n; i++)
        if (rep[i].kind == k)
            return rep[i].mechanism;
    return SB_MECH_NONE;
}

static void add_rl(struct sb_plan *p, int resource, int64_t value)
{
    if (p->n_rl < SB_MAX_RL) {
        p->rl[p->n_rl].resource = resource;
        p->rl[p->n_rl].value = (rlim_t)value;
        p->n_rl++;
    }
}

void sb_limits_rlimits(const struct sb_limits *l, const struct sb_limit_report *rep, size_t n,
                       struct sb_plan *p)
{
    p->n_rl = 0;
    add_rl(p, RLIMIT_CORE, 0);
    if (l->cpu_time_ms)
        add_rl(p, RLIMIT_CPU, cpu_rlimit_ms(l->cpu_time_ms) / 1000);
    if (l->file_size_bytes)
        add_rl(p, RLIMIT_FSIZE, l->file_size_bytes);
    if (l->open_files)
        add_rl(p, RLIMIT_NOFILE, l->open_files);
    if (l->memory_bytes && mech_of(rep, n, SB_LIMIT_MEMORY) == SB_MECH_RLIMIT)
        add_rl(p, RLIMIT_AS, l->memory_bytes);
    if (l->pids && mech_of(rep, n, SB_LIMIT_PIDS) == SB_MECH_RLIMIT)
        add_rl(p, RLIMIT_NPROC, l->pids + 1);
}

int sb_limits_apply(const struct sb_plan *p, struct sb_fail *f)
{
    for (size_t i = 0; i < p->n_rl; i++) {
        struct rlimit rl = {p->rl[i].value, p->rl[i].value}, now;
        /* RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL one second later */
        if (p->rl[i].resource == RLIMIT_CPU)
            rl.rlim_max = rl.rlim_cur + 1;
        /* never above the hard limit we inherited (raising it needs a
         * capability the sandbox does not have) */
        if (getrlimit(p->rl[i].resource, &now) == 0 && now.rlim_max != RLIM_INFINITY) {
            if (rl.rlim_max > now.rlim_max)
                rl.rlim_max = now.rlim_max;
            if (rl.rlim_cur > rl.rlim_max)
                rl.rlim_cur = rl.rlim_max;
        }
        if (setrlimit(p->rl[i].resource, &rl) < 0) {
            f->step = SB_STEP_RLIMIT;
            f->index = p->rl[i].resource;
            return -errno;
        }
    }
    return 0;
}
