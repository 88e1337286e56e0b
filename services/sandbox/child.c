/*
 * child: a running job on the caller's libev loop.
 *
 * Watchers: the init's pidfd (exit), stdout and stderr (output, or framed
 * file-operation output), the status pipe (records: the proxy listeners,
 * which are taken from init with pidfd_getfd and handed to on_listen; the
 * command started; then one final record: setup failure, exec failure, the
 * command's status or the file operation's outcome), stdin
 * (the job's input, written without blocking), and timers for the wall-time
 * limit, the cgroup CPU-time check and the drain after exit.
 *
 * Output is delivered in chunks of at most 64 KiB as it is read and counted
 * against output_bytes (stdout + stderr); past it, the rest is dropped, the
 * stream marked truncated and the sandbox killed. The job ends when init has
 * been reaped and every pipe reached end of file (or 2 s after the reap, as
 * a safety net); then the cgroup counters are read, the cgroups removed, the
 * verdict made (result.c) and on_exit called once. The child object is freed
 * when on_exit returns.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "al_log.h"
#include "child.h"

#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

#define DRAIN_SECONDS 2.0
#define CPU_CHECK_MIN 0.005
#define CPU_CHECK_MAX 1.0

static void try_finish(struct sb_child *c);

static void close_fd(struct sb_child *c, int *fd, ev_io *w)
{
    if (*fd < 0)
        return;
    ev_io_stop(c->loop, w);
    close(*fd);
    *fd = -1;
}

void sb_child_kill(struct sb_child *c, int reason)
{
    if (c->finished || c->reaped)
        return;
    if (!c->kill_reason)
        c->kill_reason = reason;
    if (c->killed || c->pid <= 0)
        return;
    c->killed = 1;
    if (c->have_cg)
        sb_cg_job_kill(&c->cg); /* v2: every process at once */
    /* init's death takes the whole pid namespace down */
    if (syscall(SYS_pidfd_send_signal, c->pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
        AL_LOG_WARN("sandbox.kill", "job=%s pid=%d error=\"%s\"", c->name, (int)c->pid,
                    strerror(errno));
}

void sb_kill(struct sb_child *c, enum sb_failure reason)
{
    /* a job whose end was already reported keeps its own result */
    if (!c || (c->have_msg && (c->msg.type == SB_MSG_EXITED || c->msg.type == SB_MSG_FILE_DONE)))
        return;
    sb_child_kill(c, (int)reason);
}

void sb_pause(struct sb_child *c, int paused)
{
    if (!c || c->finished || c->paused == !!paused)
        return;
    c->paused = !!paused;
    ev_io *w[2] = {&c->w_out, &c->w_err};
    int fd[2] = {c->fd_out, c->fd_err};
    for (int i = 0; i < 2; i++) {
        if (fd[i] < 0)
            continue;
        if (c->paused)
            ev_io_stop(c->loop, w[i]);
        else
            ev_io_start(c->loop, w[i]);
    }
}

pid_t sb_child_pid(const struct sb_child *c)
{
    return c && c->pid > 0 ? c->pid : 0;
}

/* ---------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------- */

static void emit(struct sb_child *c, int s, const uint8_t *p, size_t n)
{
    if (c->cb.on_output)
        c->cb.on_output(c, s == 0 ? SB_STDOUT : SB_STDERR, p, n, c->off[s], c->cb.user);
    c->off[s] += (int64_t)n;
    c->output_total += (int64_t)n;
}

static void command_output(struct sb_child *c, int s, const uint8_t *p, size_t n)
{
    int64_t cap = c->limits.output_bytes;
    if (c->dropping) {
        c->truncated[s] = 1;
        return;
    }
    if (cap > 0 && c->output_total + (int64_t)n > cap) {
        size_t allowed = (size_t)(cap - c->output_total);
        if (allowed)
            emit(c, s, p, allowed);
        c->truncated[s] = 1;
        c->dropping = 1;
        sb_child_kill(c, SB_KILL_OUTPUT);
        return;
    }
    emit(c, s, p, n);
}

static void protocol_error(struct sb_child *c, const char *why)
{
    if (!c->protocol_error) {
        c->protocol_error = 1;
        snprintf(c->detail, sizeof(c->detail), "file operation output: %s", why);
        AL_LOG_WARN("sandbox.protocol", "job=%s error=\"%s\"", c->name, why);
    }
    sb_child_kill(c, SB_KILL_PROTOCOL);
}

static void file_data(void *user, const uint8_t *p, size_t n)
{
    struct sb_child *c = user;
    if (c->kind != SB_READ_FILE || c->file_got + (int64_t)n > c->plan.file.max_bytes) {
        protocol_error(c, "more data than asked for");
        return;
    }
    if (c->cb.on_output)
        c->cb.on_output(c, SB_FILE_DATA, p, n, c->plan.file.offset_bytes + c->file_got, c->cb.user);
    c->file_got += (int64_t)n;
}

static void file_dirents(void *user, const struct sb_dirent *e, size_t n)
{
    struct sb_child *c = user;
    if (c->kind != SB_LIST_DIR) {
        protocol_error(c, "directory entries from a read");
        return;
    }
    if (c->cb.on_dir)
        c->cb.on_dir(c, e, n, c->cb.user);
}

static void stdout_bytes(struct sb_child *c, const uint8_t *p, size_t n)
{
    if (c->kind == SB_EXEC) {
        command_output(c, 0, p, n);
    } else if (!c->dec_ready) {
        protocol_error(c, "output from a write");
    } else if (!c->protocol_error) {
        struct sb_frame_sink sink = {file_data, file_dirents, c};
        if (sb_frame_dec_feed(&c->dec, p, n, &sink) < 0)
            protocol_error(c, c->dec.err[0] ? c->dec.err : "out of memory");
    }
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct sb_child *c = w->data;
    int err = w == &c->w_err;
    int *fd = err ? &c->fd_err : &c->fd_out;
    (void)loop;
    (void)revents;
    uint8_t *buf = c->host->buf;
    ssize_t n = read(*fd, buf, SB_CHUNK_MAX);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        close_fd(c, fd, w);
        try_finish(c);
        return;
    }
    if (err)
        command_output(c, 1, buf, (size_t)n);
    else
        stdout_bytes(c, buf, (size_t)n);
}

/* ---------------------------------------------------------------------------
 * Status records and stdin
 * ------------------------------------------------------------------------- */

static void close_all(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

/* Copies init's descriptors nums[0..1] (-1 = none) into fds; 0 or -errno
 * (nothing is left open then). */
static int copy_from_init(struct sb_child *c, const int nums[2], int fds[2], size_t *n)
{
    *n = 0;
    for (int i = 0; i < 2; i++) {
        if (nums[i] < 0)
            continue;
        int fd = (int)syscall(SYS_pidfd_getfd, c->pidfd, nums[i], 0);
        if (fd < 0) {
            int rc = -errno;
            close_all(fds, *n);
            *n = 0;
            return rc;
        }
        fds[(*n)++] = fd;
    }
    return 0;
}

/* Init's proxy listeners (descriptor numbers in init, the [::1] one -1 when
 * the sandbox has no IPv6): copied out of init and handed to on_listen. A
 * copy fails with EBADF once init has begun exiting (its descriptor table
 * is gone) and ESRCH once it is gone: on_listen then does not run and the
 * job ends as it will. Any other failure means the proxy cannot serve the
 * job: it is stopped as a setup failure. */
static void take_listeners(struct sb_child *c, const struct sb_msg *m)
{
    int nums[2] = {m->step, m->index}, fds[2] = {-1, -1};
    size_t n = 0;
    if (!c->plan.proxy_port || c->listened || nums[0] < 0) {
        protocol_error(c, "unexpected listener record");
        return;
    }
    c->listened = 1;
    if (c->killed || c->pidfd < 0)
        return;
    int rc = copy_from_init(c, nums, fds, &n);
    if (rc == -EBADF || rc == -ESRCH) {
        AL_LOG_DEBUG("sandbox.listen", "job=%s pid=%d listeners=none reason=\"init ended first\"",
                     c->name, (int)c->pid);
        return;
    }
    if (rc < 0) {
        char why[96];
        snprintf(why, sizeof(why), "taking the proxy listeners from the sandbox: %s",
                 strerror(-rc));
        sb_child_fail(c, SB_FAIL_SANDBOX_SETUP, why);
        return;
    }
    AL_LOG_DEBUG("sandbox.listen", "job=%s pid=%d port=%d listeners=%zu", c->name, (int)c->pid,
                 (int)c->plan.proxy_port, n);
    if (c->cb.on_listen)
        c->cb.on_listen(c, fds, n, c->cb.user);
    else
        close_all(fds, n);
}

static void take_record(struct sb_child *c)
{
    struct sb_msg m;
    memcpy(&m, c->msgbuf, sizeof(m));
    c->msg_have = 0;
    if (m.magic != SB_MSG_MAGIC || m.type < SB_MSG_SETUP_ERROR || m.type > SB_MSG_LISTENING) {
        protocol_error(c, "malformed status record"); /* only our init writes here */
        return;
    }
    if (m.type == SB_MSG_STARTED) {
        c->started = 1;
        return;
    }
    if (m.type == SB_MSG_LISTENING) {
        take_listeners(c, &m);
        return;
    }
    c->msg = m;
    c->have_msg = 1;
}

static void on_status(struct ev_loop *loop, ev_io *w, int revents)
{
    struct sb_child *c = w->data;
    (void)loop;
    (void)revents;
    ssize_t n = read(c->fd_status, c->msgbuf + c->msg_have, sizeof(c->msgbuf) - c->msg_have);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        close_fd(c, &c->fd_status, w);
        try_finish(c);
        return;
    }
    c->msg_have += (size_t)n;
    if (c->msg_have == sizeof(c->msgbuf))
        take_record(c);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct sb_child *c = w->data;
    (void)loop;
    (void)revents;
    while (c->input_off < c->input_len) {
        ssize_t n = write(c->fd_in, c->input + c->input_off, c->input_len - c->input_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0)
            break; /* EPIPE: the job does not read it all; not an error */
        c->input_off += (size_t)n;
    }
    close_fd(c, &c->fd_in, w);
}

/* ---------------------------------------------------------------------------
 * Exit, timers
 * ------------------------------------------------------------------------- */

static void on_pidfd(struct ev_loop *loop, ev_io *w, int revents)
{
    struct sb_child *c = w->data;
    int status;
    (void)loop;
    (void)revents;
    pid_t r = wait4(c->pid, &status, __WALL | WNOHANG, &c->ru);
    if (r == 0 || (r < 0 && errno == EINTR))
        return;
    ev_io_stop(c->loop, w);
    if (r < 0)
        AL_LOG_ERROR("sandbox.reap", "job=%s pid=%d error=\"%s\"", c->name, (int)c->pid,
                     strerror(errno));
    c->init_wstatus = r < 0 ? W_EXITCODE(0, SIGKILL) : status;
    c->reaped = 1;
    clock_gettime(CLOCK_MONOTONIC, &c->t1);
    close(c->pidfd);
    c->pidfd = -1;
    ev_timer_stop(c->loop, &c->t_wall);
    ev_timer_stop(c->loop, &c->t_cpu);
    /* the sandbox is gone: nothing reads its stdin any more */
    close_fd(c, &c->fd_in, &c->w_in);
    try_finish(c);
}

static void on_wall(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sb_child_kill(w->data, SB_KILL_WALL);
}

/* CPU use cannot grow faster than the CPUs the job may use: the next check
 * is when the rest of the budget could be spent at the earliest. */
static double cpu_next(const struct sb_child *c, int64_t used_ns)
{
    int64_t par = c->host->ncpu > 0 ? c->host->ncpu : 1;
    if (c->limits.cpu_millicores > 0 && (c->limits.cpu_millicores + 999) / 1000 < par)
        par = (c->limits.cpu_millicores + 999) / 1000;
    double left = (double)(c->limits.cpu_time_ms * 1000000 - used_ns) / 1e9 / (double)par;
    return left < CPU_CHECK_MIN ? CPU_CHECK_MIN : left > CPU_CHECK_MAX ? CPU_CHECK_MAX : left;
}

static void on_cpu(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct sb_child *c = w->data;
    (void)revents;
    int64_t used = sb_cg_job_cpu_ns(&c->cg);
    if (used < 0)
        return; /* accounting unreadable: RLIMIT_CPU still applies */
    if (used >= c->limits.cpu_time_ms * 1000000) {
        sb_child_kill(c, SB_KILL_CPU);
        return;
    }
    ev_timer_set(w, cpu_next(c, used), 0.);
    ev_timer_start(loop, w);
}

static void on_drain(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct sb_child *c = w->data;
    (void)loop;
    (void)revents;
    AL_LOG_WARN("sandbox.drain", "job=%s pipes still open %.0fs after exit; closing", c->name,
                DRAIN_SECONDS);
    close_fd(c, &c->fd_out, &c->w_out);
    close_fd(c, &c->fd_err, &c->w_err);
    close_fd(c, &c->fd_status, &c->w_status);
    try_finish(c);
}

static void on_later(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    try_finish(w->data);
}

static int has_cgroup_cpu_limit(const struct sb_child *c)
{
    for (size_t i = 0; i < c->n_rep; i++)
        if (c->rep[i].kind == SB_LIMIT_CPU_TIME &&
            (c->rep[i].mechanism == SB_MECH_CGROUP_V1 || c->rep[i].mechanism == SB_MECH_CGROUP_V2))
            return 1;
    return 0;
}

static void watch_fd(struct sb_child *c, ev_io *w, int fd, int events,
                     void (*cb)(struct ev_loop *, ev_io *, int))
{
    ev_io_init(w, cb, fd, events);
    w->data = c;
    ev_io_start(c->loop, w);
}

void sb_child_watch(struct sb_child *c)
{
    watch_fd(c, &c->w_pid, c->pidfd, EV_READ, on_pidfd);
    watch_fd(c, &c->w_out, c->fd_out, EV_READ, on_readable);
    watch_fd(c, &c->w_err, c->fd_err, EV_READ, on_readable);
    watch_fd(c, &c->w_status, c->fd_status, EV_READ, on_status);
    if (c->input_len > 0) {
        watch_fd(c, &c->w_in, c->fd_in, EV_WRITE, on_writable);
    } else {
        ev_io_init(&c->w_in, on_writable, c->fd_in, EV_WRITE);
        close_fd(c, &c->fd_in, &c->w_in);
    }
    if (c->limits.wall_time_ms > 0) {
        ev_timer_init(&c->t_wall, on_wall, (double)c->limits.wall_time_ms / 1000., 0.);
        c->t_wall.data = c;
        ev_timer_start(c->loop, &c->t_wall);
    }
    if (c->limits.cpu_time_ms > 0 && has_cgroup_cpu_limit(c)) {
        ev_timer_init(&c->t_cpu, on_cpu, cpu_next(c, 0), 0.);
        c->t_cpu.data = c;
        ev_timer_start(c->loop, &c->t_cpu);
    }
}

void sb_child_fail(struct sb_child *c, enum sb_failure failure, const char *detail)
{
    if (!c->early_failure) {
        c->early_failure = failure;
        c->setup_failed = 1;
        snprintf(c->detail, sizeof(c->detail), "%s", detail);
        AL_LOG_WARN("sandbox.setup", "job=%s error=\"%s\"", c->name, detail);
    }
    if (c->pid > 0) {
        sb_child_kill(c, (int)failure);
        return; /* finishes once reaped */
    }
    ev_timer_init(&c->t_later, on_later, 0., 0.);
    c->t_later.data = c;
    ev_timer_start(c->loop, &c->t_later);
}

/* ---------------------------------------------------------------------------
 * The end
 * ------------------------------------------------------------------------- */

static int64_t elapsed_ms(const struct timespec *a, const struct timespec *b)
{
    return (int64_t)(b->tv_sec - a->tv_sec) * 1000 + (b->tv_nsec - a->tv_nsec) / 1000000;
}

static void fill_result(struct sb_child *c, struct sb_result *r, const struct sb_outcome *o)
{
    memset(r, 0, sizeof(*r));
    memcpy(r->limits, c->rep, c->n_rep * sizeof(c->rep[0]));
    r->n_limits = c->n_rep;
    if (!c->reaped)
        clock_gettime(CLOCK_MONOTONIC, &c->t1);
    r->wall_time_ms = elapsed_ms(&c->t0, &c->t1);
    int64_t ru_cpu = (int64_t)(c->ru.ru_utime.tv_sec + c->ru.ru_stime.tv_sec) * 1000 +
                     (c->ru.ru_utime.tv_usec + c->ru.ru_stime.tv_usec) / 1000;
    r->cpu_time_ms = o->cg.cpu_ns >= 0 ? o->cg.cpu_ns / 1000000 : ru_cpu;
    r->max_rss_bytes = o->cg.mem_peak >= 0 ? o->cg.mem_peak : (int64_t)c->ru.ru_maxrss * 1024;
    r->stdout_bytes = c->off[0];
    r->stderr_bytes = c->off[1];
    r->stdout_truncated = c->truncated[0];
    r->stderr_truncated = c->truncated[1];
}

static void finish(struct sb_child *c)
{
    struct sb_outcome o;
    struct sb_result r;
    struct sb_host *h = c->host;
    memset(&o, 0, sizeof(o));
    memset(&o.cg, 0xff, sizeof(o.cg));
    c->finished = 1;
    ev_timer_stop(c->loop, &c->t_wall);
    ev_timer_stop(c->loop, &c->t_cpu);
    ev_timer_stop(c->loop, &c->t_drain);
    ev_timer_stop(c->loop, &c->t_later);
    if (c->have_cg)
        sb_cg_job_stats(&c->cg, &o.cg);
    o.kind = c->kind;
    o.kill_reason = c->kill_reason;
    o.setup_failed = c->setup_failed;
    o.early_failure = c->early_failure;
    o.started = c->started;
    o.have_msg = c->have_msg;
    o.msg = c->msg;
    o.init_reaped = c->reaped;
    o.init_wstatus = c->init_wstatus;
    o.protocol_error = c->protocol_error;
    o.truncated = c->truncated[0] || c->truncated[1];
    o.arg0 = c->arg0;
    o.where = c->where;
    o.proxy_port = c->plan.proxy_port;
    snprintf(o.detail, sizeof(o.detail), "%s", c->detail);
    if (c->have_msg && c->msg.type == SB_MSG_SETUP_ERROR && c->msg.step == SB_STEP_MOUNT_OP)
        sb_mount_describe(&c->plan, c->msg.index, o.mount_op, sizeof(o.mount_op));
    fill_result(c, &r, &o);
    sb_result_verdict(&r, &o, &c->limits);
    h->children--;
    AL_LOG_DEBUG("sandbox.exit", "job=%s pid=%d failure=%s wall_ms=%lld cpu_ms=%lld", c->name,
                 (int)c->pid, sb_failure_name(r.failure), (long long)r.wall_time_ms,
                 (long long)r.cpu_time_ms);
    c->cb.on_exit(c, &r, c->cb.user);
    /* after the report: every process is gone, the cgroups are only ours */
    if (c->have_cg)
        sb_host_release_cgroups(h, &c->cg);
    if (h->n_stale)
        sb_host_retry_cgroups(h);
    if (c->dec_ready)
        sb_frame_dec_cleanup(&c->dec);
    al_arena_cleanup(&c->arena);
    free(c);
}

static void try_finish(struct sb_child *c)
{
    if (c->finished || (c->pid > 0 && !c->reaped))
        return;
    if (c->fd_out >= 0 || c->fd_err >= 0 || c->fd_status >= 0) {
        if (c->reaped && !ev_is_active(&c->t_drain)) {
            ev_timer_init(&c->t_drain, on_drain, DRAIN_SECONDS, 0.);
            c->t_drain.data = c;
            ev_timer_start(c->loop, &c->t_drain);
        }
        return;
    }
    finish(c);
}
