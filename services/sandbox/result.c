/*
 * result: the verdict on a finished job, and the names of the enums.
 *
 * Which limits were hit: wall and CPU time when our timers killed the job
 * (or the command died of SIGXCPU), memory from the memory cgroup (OOM kills,
 * failcnt / memory.events max), pids from pids.events, output when output
 * was dropped, file size from SIGXFSZ or EFBIG, CPU bandwidth when the
 * cgroup was throttled.
 *
 * Failure, first match wins:
 *   the parent could not set the sandbox up          SANDBOX_SETUP
 *   init reported a setup step failing               SANDBOX_SETUP (EXEC_FAILED
 *                                                    for the working directory)
 *   execve failed for every PATH candidate           EXEC_FAILED
 *   the file operation failed                        FILE_ERROR
 *   the file operation's output did not decode       INTERNAL
 *   we killed it: wall / CPU time                    TIMEOUT
 *                 output limit                       LIMIT_EXCEEDED
 *                 sb_kill(reason)                    reason (CANCELLED ...)
 *   output was dropped at the limit                  LIMIT_EXCEEDED
 *   the command: OOM-killed                          LIMIT_EXCEEDED (memory)
 *                SIGXCPU                             TIMEOUT (CPU)
 *                SIGXFSZ                             LIMIT_EXCEEDED (file size)
 *                other signal                        SIGNALED
 *                non-zero exit after an OOM or a
 *                refused fork at the pids limit      LIMIT_EXCEEDED
 *                non-zero exit                       NONZERO_EXIT
 *   init vanished without a word: OOM-killed         LIMIT_EXCEEDED (memory)
 *                                 otherwise          INTERNAL
 * Messages name only what the job gave (argv[0], its paths) and the limits.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "airlock/v1/intake.pb-c.h"
#include "sb_int.h"

/* The public enums are the proto's numbers. */
#define SAME(a, b) _Static_assert((int)(a) == (int)(b), #a " != " #b)
SAME(SB_LIST_DIR, AIRLOCK__V1__JOB_KIND__JOB_KIND_LIST_DIR);
SAME(SB_READ_FILE, AIRLOCK__V1__JOB_KIND__JOB_KIND_READ_FILE);
SAME(SB_LIMIT_WALL_TIME, AIRLOCK__V1__LIMIT_KIND__LIMIT_KIND_WALL_TIME);
SAME(SB_LIMIT_MEMORY, AIRLOCK__V1__LIMIT_KIND__LIMIT_KIND_MEMORY);
SAME(SB_LIMIT_OUTPUT, AIRLOCK__V1__LIMIT_KIND__LIMIT_KIND_OUTPUT);
SAME(SB_LIMIT_CPU_BANDWIDTH, AIRLOCK__V1__LIMIT_KIND__LIMIT_KIND_CPU_BANDWIDTH);
SAME(SB_MECH_CGROUP_V2, AIRLOCK__V1__ENFORCEMENT_MECHANISM__ENFORCEMENT_MECHANISM_CGROUP_V2);
SAME(SB_MECH_EXECUTOR, AIRLOCK__V1__ENFORCEMENT_MECHANISM__ENFORCEMENT_MECHANISM_EXECUTOR);
SAME(SB_MECH_NONE, AIRLOCK__V1__ENFORCEMENT_MECHANISM__ENFORCEMENT_MECHANISM_NONE);
SAME(SB_FAIL_NONZERO_EXIT, AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_NONZERO_EXIT);
SAME(SB_FAIL_TIMEOUT, AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_TIMEOUT);
SAME(SB_FAIL_CANCELLED, AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_CANCELLED);
SAME(SB_FAIL_SANDBOX_SETUP, AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_SANDBOX_SETUP);
SAME(SB_FAIL_FILE_ERROR, AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_FILE_ERROR);
SAME(SB_FAIL_INTERNAL, AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_INTERNAL);
SAME(SB_FT_SYMLINK, AIRLOCK__V1__FILE_TYPE__FILE_TYPE_SYMLINK);
SAME(SB_FT_OTHER, AIRLOCK__V1__FILE_TYPE__FILE_TYPE_OTHER);

const char *sb_step_name(int step)
{
    static const char *const names[SB_STEP_COUNT] = {
        [SB_STEP_NONE] = "unknown step",
        [SB_STEP_FDS] = "arranging file descriptors",
        [SB_STEP_PDEATHSIG] = "setting the parent-death signal",
        [SB_STEP_SYNC] = "waiting for the executor",
        [SB_STEP_NS_ROOT] = "becoming root of the user namespace",
        [SB_STEP_SETSID] = "creating a session",
        [SB_STEP_CGROUPNS] = "entering a cgroup namespace",
        [SB_STEP_HOSTNAME] = "setting the host name",
        [SB_STEP_NET_LO] = "bringing up loopback",
        [SB_STEP_PROXY_LISTEN] = "proxy listener",
        [SB_STEP_NET_HOOK] = "network hook",
        [SB_STEP_MOUNT_PRIVATE] = "making mounts private",
        [SB_STEP_MOUNT_ROOT] = "mounting the root tmpfs",
        [SB_STEP_MOUNT_OP] = "building the filesystem",
        [SB_STEP_PIVOT] = "pivot_root",
        [SB_STEP_ROOT_RO] = "making the root read-only",
        [SB_STEP_IDENTITY] = "scrubbing the inherited command line",
        [SB_STEP_GROUPS] = "clearing supplementary groups",
        [SB_STEP_SETGID] = "setting the group id",
        [SB_STEP_SECUREBITS] = "locking securebits",
        [SB_STEP_CAPS_BOUND] = "dropping the capability bounding set",
        [SB_STEP_SETUID] = "setting the user id",
        [SB_STEP_CAPS_CLEAR] = "clearing capabilities",
        [SB_STEP_NO_NEW_PRIVS] = "setting no_new_privs",
        [SB_STEP_DUMPABLE] = "clearing the dumpable flag",
        [SB_STEP_SIGNALS] = "resetting signals",
        [SB_STEP_CHDIR] = "changing to the working directory",
        [SB_STEP_RLIMIT] = "setting resource limits",
        [SB_STEP_SECCOMP] = "loading the seccomp filter",
        [SB_STEP_SPAWN] = "starting the command",
        [SB_STEP_EXEC] = "executing the command",
        [SB_STEP_WAIT] = "waiting for the command",
    };
    return step >= 0 && step < SB_STEP_COUNT && names[step] ? names[step] : "unknown step";
}

const char *sb_limit_name(enum sb_limit_kind k)
{
    static const char *const n[] = {"UNSPECIFIED", "WALL_TIME",  "CPU_TIME", "MEMORY",       "PIDS",
                                    "FILE_SIZE",   "OPEN_FILES", "OUTPUT",   "CPU_BANDWIDTH"};
    return (int)k >= 0 && (size_t)k < sizeof(n) / sizeof(n[0]) ? n[k] : "UNKNOWN";
}

const char *sb_mechanism_name(enum sb_mechanism m)
{
    static const char *const n[] = {"UNSPECIFIED", "CGROUP_V2", "CGROUP_V1", "RLIMIT",
                                    "TIMER",       "EXECUTOR",  "NONE"};
    return (int)m >= 0 && (size_t)m < sizeof(n) / sizeof(n[0]) ? n[m] : "UNKNOWN";
}

const char *sb_failure_name(enum sb_failure f)
{
    switch (f) {
    case SB_FAIL_NONE:
        return "NONE";
    case SB_FAIL_NONZERO_EXIT:
        return "NONZERO_EXIT";
    case SB_FAIL_SIGNALED:
        return "SIGNALED";
    case SB_FAIL_LIMIT_EXCEEDED:
        return "LIMIT_EXCEEDED";
    case SB_FAIL_TIMEOUT:
        return "TIMEOUT";
    case SB_FAIL_CANCELLED:
        return "CANCELLED";
    case SB_FAIL_SANDBOX_SETUP:
        return "SANDBOX_SETUP";
    case SB_FAIL_EXEC_FAILED:
        return "EXEC_FAILED";
    case SB_FAIL_FILE_ERROR:
        return "FILE_ERROR";
    case SB_FAIL_POLICY_DENIED:
        return "POLICY_DENIED";
    case SB_FAIL_INTERNAL:
        return "INTERNAL";
    }
    return "UNKNOWN";
}

const char *sb_file_type_name(enum sb_file_type t)
{
    static const char *const n[] = {"UNSPECIFIED", "REGULAR", "DIRECTORY", "SYMLINK", "OTHER"};
    return (int)t >= 0 && (size_t)t < sizeof(n) / sizeof(n[0]) ? n[t] : "UNKNOWN";
}

/* ---------------------------------------------------------------------------
 * Hits
 * ------------------------------------------------------------------------- */

static void hit(struct sb_result *r, enum sb_limit_kind k, int cgroup_only)
{
    for (size_t i = 0; i < r->n_limits; i++) {
        int cg = r->limits[i].mechanism == SB_MECH_CGROUP_V1 ||
                 r->limits[i].mechanism == SB_MECH_CGROUP_V2;
        if (r->limits[i].kind == k && (!cgroup_only || cg))
            r->limits[i].hit = 1;
    }
}

static int limit_set(const struct sb_result *r, enum sb_limit_kind k)
{
    for (size_t i = 0; i < r->n_limits; i++)
        if (r->limits[i].kind == k)
            return 1;
    return 0;
}

/* The signal the command died of, or 0. */
static int command_signal(const struct sb_outcome *o)
{
    if (o->have_msg && o->msg.type == SB_MSG_EXITED && WIFSIGNALED(o->msg.wstatus))
        return WTERMSIG(o->msg.wstatus);
    return 0;
}

static int file_efbig(const struct sb_outcome *o)
{
    return o->have_msg && o->msg.type == SB_MSG_FILE_ERROR && o->msg.err == EFBIG;
}

static void mark_hits(struct sb_result *r, const struct sb_outcome *o, const struct sb_limits *l)
{
    int sig = command_signal(o);
    if (o->kill_reason == SB_KILL_WALL)
        hit(r, SB_LIMIT_WALL_TIME, 0);
    /* CPU time: the cgroup total by our check, RLIMIT_CPU per process */
    for (size_t i = 0; i < r->n_limits; i++) {
        struct sb_limit_report *e = &r->limits[i];
        if (e->kind != SB_LIMIT_CPU_TIME)
            continue;
        if (e->mechanism == SB_MECH_RLIMIT)
            e->hit = sig == SIGXCPU;
        else
            e->hit = o->kill_reason == SB_KILL_CPU || r->cpu_time_ms >= e->value;
    }
    if (o->cg.oom_kills > 0 || o->cg.mem_limit_hits > 0 || o->cg.oom_events > 0)
        hit(r, SB_LIMIT_MEMORY, 1);
    if (o->cg.pids_max_events > 0)
        hit(r, SB_LIMIT_PIDS, 1);
    if (sig == SIGXFSZ || file_efbig(o))
        hit(r, SB_LIMIT_FILE_SIZE, 0);
    if (o->have_msg && o->msg.type == SB_MSG_FILE_ERROR && o->msg.err == EMFILE)
        hit(r, SB_LIMIT_OPEN_FILES, 0);
    if (o->truncated || o->kill_reason == SB_KILL_OUTPUT)
        hit(r, SB_LIMIT_OUTPUT, 0);
    if (o->cg.cpu_throttled > 0)
        hit(r, SB_LIMIT_CPU_BANDWIDTH, 1);
}

/* ---------------------------------------------------------------------------
 * Messages
 * ------------------------------------------------------------------------- */

static enum sb_failure say(struct sb_result *r, enum sb_failure f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum sb_failure say(struct sb_result *r, enum sb_failure f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof(r->message), fmt, ap);
    va_end(ap);
    return r->failure = f;
}

static const char *op_name(enum sb_kind k)
{
    return k == SB_READ_FILE ? "READ_FILE" : k == SB_WRITE_FILE ? "WRITE_FILE" : "LIST_DIR";
}

static const char *ftype_name(int fmt)
{
    switch (fmt) {
    case S_IFDIR:
        return "a directory";
    case S_IFIFO:
        return "a FIFO";
    case S_IFSOCK:
        return "a socket";
    case S_IFCHR:
        return "a character device";
    case S_IFBLK:
        return "a block device";
    case S_IFLNK:
        return "a symbolic link";
    case SB_FTYPE_PSEUDO:
        return "on a pseudo filesystem (/proc, /sys)";
    }
    return "not a regular file";
}

static const char *file_errno_text(int step, int err)
{
    switch (err) {
    case ELOOP:
        return "a symbolic link (not followed)";
    case EXDEV:
        return "the path leaves the workspace";
    case ENXIO:
        return "not a regular file";
    case EFBIG:
        return "file size limit reached";
    case ENOSPC:
        return "no space left in the workspace";
    case ENOMEM:
        return "out of memory (memory limit)";
    case EMFILE:
        return "too many open files (open files limit)";
    }
    (void)step;
    return strerror(err);
}

static void file_error(struct sb_result *r, const struct sb_outcome *o)
{
    char path[112];
    const char *what;
    sb_printable(path, sizeof(path), o->where);
    if (o->msg.step == SB_FSTEP_TYPE && o->msg.ftype == SB_FTYPE_PSEUDO)
        what = ftype_name(o->msg.ftype);
    else if (o->msg.step == SB_FSTEP_TYPE)
        what = o->kind == SB_LIST_DIR ? "not a directory"
               : o->msg.ftype         ? ftype_name(o->msg.ftype)
                                      : "not a regular file";
    else if (o->msg.step == SB_FSTEP_OUTPUT || o->msg.step == SB_FSTEP_INPUT)
        what = "transferring the data failed";
    else
        what = file_errno_text(o->msg.step, o->msg.err);
    if (o->msg.step == SB_FSTEP_TYPE && o->msg.ftype == SB_FTYPE_PSEUDO)
        say(r, SB_FAIL_FILE_ERROR, "%s \"%s\": refused: %s", op_name(o->kind), path, what);
    else if (o->msg.step == SB_FSTEP_TYPE && o->msg.ftype)
        say(r, SB_FAIL_FILE_ERROR, "%s \"%s\": is %s, not a regular file", op_name(o->kind), path,
            what);
    else
        say(r, SB_FAIL_FILE_ERROR, "%s \"%s\": %s", op_name(o->kind), path, what);
}

static void setup_error(struct sb_result *r, const struct sb_outcome *o)
{
    const struct sb_msg *m = &o->msg;
    char where[112];
    if (m->step == SB_STEP_CHDIR) {
        sb_printable(where, sizeof(where), o->where);
        say(r, SB_FAIL_EXEC_FAILED, "working directory \"%s\": %s", where, strerror(m->err));
    } else if (m->step == SB_STEP_PROXY_LISTEN) {
        say(r, SB_FAIL_SANDBOX_SETUP, "sandbox setup failed: proxy listener on %s:%d: %s",
            m->index == 6 ? "[::1]" : "127.0.0.1", o->proxy_port, strerror(m->err));
    } else if (m->step == SB_STEP_MOUNT_OP) {
        say(r, SB_FAIL_SANDBOX_SETUP, "sandbox setup failed: %s: %s", o->mount_op,
            strerror(m->err));
    } else {
        say(r, SB_FAIL_SANDBOX_SETUP, "sandbox setup failed: %s: %s", sb_step_name(m->step),
            strerror(m->err));
    }
}

static void exec_error(struct sb_result *r, const struct sb_outcome *o)
{
    char arg0[112];
    sb_printable(arg0, sizeof(arg0), o->arg0);
    if (o->msg.err == ENOENT && o->arg0 && !strchr(o->arg0, '/'))
        say(r, SB_FAIL_EXEC_FAILED, "command not found in PATH: \"%s\"", arg0);
    else
        say(r, SB_FAIL_EXEC_FAILED, "cannot execute \"%s\": %s", arg0, strerror(o->msg.err));
}

static void killed(struct sb_result *r, int reason, const struct sb_limits *l)
{
    switch (reason) {
    case SB_KILL_WALL:
        say(r, SB_FAIL_TIMEOUT, "wall time limit of %lld ms reached", (long long)l->wall_time_ms);
        break;
    case SB_KILL_CPU:
        say(r, SB_FAIL_TIMEOUT, "CPU time limit of %lld ms reached", (long long)l->cpu_time_ms);
        break;
    case SB_KILL_OUTPUT:
        say(r, SB_FAIL_LIMIT_EXCEEDED, "output limit of %lld bytes reached; output truncated",
            (long long)l->output_bytes);
        break;
    case SB_FAIL_CANCELLED:
        say(r, SB_FAIL_CANCELLED, "cancelled");
        break;
    default:
        say(r,
            reason >= SB_FAIL_NONZERO_EXIT && reason <= SB_FAIL_INTERNAL ? (enum sb_failure)reason
                                                                         : SB_FAIL_INTERNAL,
            "stopped by the executor (%s)", sb_failure_name((enum sb_failure)reason));
    }
}

static void memory_exceeded(struct sb_result *r, const struct sb_limits *l)
{
    say(r, SB_FAIL_LIMIT_EXCEEDED, "memory limit of %lld bytes reached (out of memory)",
        (long long)l->memory_bytes);
}

/* The command's own ending (not killed by us). */
static void command_end(struct sb_result *r, const struct sb_outcome *o, const struct sb_limits *l)
{
    int st = o->msg.wstatus;
    int oom = o->cg.oom_kills > 0 || o->cg.oom_events > 0;
    if (WIFSIGNALED(st)) {
        int s = WTERMSIG(st);
        if (s == SIGKILL && oom)
            memory_exceeded(r, l);
        else if (s == SIGXCPU || (s == SIGKILL && limit_set(r, SB_LIMIT_CPU_TIME) &&
                                  r->cpu_time_ms >= l->cpu_time_ms))
            say(r, SB_FAIL_TIMEOUT, "CPU time limit of %lld ms reached", (long long)l->cpu_time_ms);
        else if (s == SIGXFSZ)
            say(r, SB_FAIL_LIMIT_EXCEEDED, "file size limit of %lld bytes reached",
                (long long)l->file_size_bytes);
        else
            say(r, SB_FAIL_SIGNALED, "killed by signal %d (SIG%s)", s,
                sigabbrev_np(s) ? sigabbrev_np(s) : "?");
    } else if (WEXITSTATUS(st) != 0) {
        if (oom)
            memory_exceeded(r, l);
        else if (o->cg.pids_max_events > 0)
            say(r, SB_FAIL_LIMIT_EXCEEDED, "process limit of %lld reached (fork refused)",
                (long long)l->pids);
        else
            say(r, SB_FAIL_NONZERO_EXIT, "exited with status %d", WEXITSTATUS(st));
    }
}

static void termination(struct sb_result *r, const struct sb_outcome *o)
{
    if (o->kind != SB_EXEC)
        return;
    if (o->have_msg && o->msg.type == SB_MSG_EXITED) {
        r->started = 1;
        if (WIFSIGNALED(o->msg.wstatus))
            r->term_signal = WTERMSIG(o->msg.wstatus);
        else
            r->exit_code = WEXITSTATUS(o->msg.wstatus);
    } else if (o->started) {
        /* init was killed with the command still running: it died too */
        r->started = 1;
        r->term_signal =
            o->init_reaped && WIFSIGNALED(o->init_wstatus) ? WTERMSIG(o->init_wstatus) : SIGKILL;
    }
}

static void file_results(struct sb_result *r, const struct sb_outcome *o)
{
    if (!o->have_msg || o->msg.type != SB_MSG_FILE_DONE)
        return;
    if (o->kind != SB_LIST_DIR)
        r->file_size_bytes = o->msg.size;
    r->data_truncated = o->msg.truncated != 0;
}

static void verdict(struct sb_result *r, const struct sb_outcome *o, const struct sb_limits *l)
{
    int type = o->have_msg ? (int)o->msg.type : 0;
    if (o->setup_failed && o->early_failure)
        say(r, o->early_failure, "sandbox setup failed: %s", o->detail);
    else if (type == SB_MSG_SETUP_ERROR)
        setup_error(r, o);
    else if (type == SB_MSG_EXEC_ERROR)
        exec_error(r, o);
    else if (type == SB_MSG_FILE_ERROR)
        file_error(r, o);
    else if (o->protocol_error)
        say(r, SB_FAIL_INTERNAL, "sandbox internal error: %s", o->detail);
    else if (o->kill_reason)
        killed(r, o->kill_reason, l);
    else if (o->truncated)
        killed(r, SB_KILL_OUTPUT, l);
    else if (type == SB_MSG_EXITED)
        command_end(r, o, l);
    else if (type == SB_MSG_FILE_DONE)
        ;
    else if (o->cg.oom_kills > 0 || o->cg.oom_events > 0)
        memory_exceeded(r, l);
    else
        say(r, SB_FAIL_INTERNAL, "sandbox ended unexpectedly (init %s %d)",
            WIFSIGNALED(o->init_wstatus) ? "signal" : "status",
            WIFSIGNALED(o->init_wstatus) ? WTERMSIG(o->init_wstatus)
                                         : WEXITSTATUS(o->init_wstatus));
}

void sb_result_verdict(struct sb_result *r, const struct sb_outcome *o, const struct sb_limits *l)
{
    r->failure = SB_FAIL_NONE;
    r->message[0] = '\0';
    mark_hits(r, o, l);
    termination(r, o);
    file_results(r, o);
    verdict(r, o, l);
}
