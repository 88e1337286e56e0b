/*
 * spawn: starts a job. The parent side builds the plan, creates the job's
 * cgroups and pipes, clones the sandbox's init with every namespace at once,
 * writes its id maps, moves it into its cgroups and lets it go. The child
 * side (init) follows the plan as a checklist and reports the first failing
 * step through the status pipe:
 *
 *   fds           stdin/stdout/stderr pipes on 0-2, status on 3, go-pipe on 4,
 *                 every other descriptor closed (close_range)
 *   namespaces    parent-death signal, wait for the parent's go, setsid,
 *                 cgroup namespace, host name            (ns.c)
 *   network       loopback up; with a proxy port, TCP listeners on
 *                 127.0.0.1:<port> and [::1]:<port>, reported to the parent
 *                 at once (a LISTENING record; the parent takes them with
 *                 pidfd_getfd, child.c) and kept by init until it exits;
 *                 hook                                   (net.c)
 *   filesystem    tmpfs root, binds, /etc, /dev, /tmp, /workspace, /proc,
 *                 pivot_root, root read-only             (mount.c)
 *   identity      blank the caller's command line and environment copied
 *                 into init (/proc/1/cmdline is readable)   (ns.c)
 *   privileges    groups, gid, securebits, bounding set, uid, capabilities,
 *                 no_new_privs, not dumpable             (ns.c)
 *   signals       every disposition default, nothing blocked; umask 022
 *   cwd           (EXEC) the job's working directory, as the job's user
 *   rlimits                                              (limits.c)
 *   seccomp       the host's filter                      (seccomp.c)
 *   run           EXEC: clone the command (CLONE_VM|CLONE_VFORK) and exec it
 *                 with the job's PATH (it keeps only fds 0-2: everything else
 *                 init holds is close-on-exec); reap until it exits; report
 *                 its status.
 *                 File operations: perform them here     (fileops.c)
 *
 * The clone is made by the host's spawner (spawner.c), a small process forked
 * at sb_host_new(): a raw clone3 (falling back to clone) with CLONE_PARENT,
 * exit_signal 0 and CLONE_PIDFD. Init is our child, nothing else in the
 * process reaps it by accident (waitpid(-1) does not see such children), and
 * the loop watches the pidfd. Init's memory is a copy of the spawner's, not
 * of this process's.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "al_err.h"
#include "al_log.h"
#include "child.h"

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

#define NS_FLAGS                                                                                   \
    (CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)

/* ---------------------------------------------------------------------------
 * Plan (parent)
 * ------------------------------------------------------------------------- */

static int msgf(char *msg, size_t n, int rc, const char *text)
{
    if (msg && n)
        snprintf(msg, n, "%s", text);
    return rc;
}

/* "a/b/c": no empty, "." or ".." component, no leading or trailing "/". */
static int relative_clean(const char *p)
{
    if (!p[0] || p[0] == '/')
        return 0;
    for (const char *c = p;;) {
        const char *s = strchr(c, '/');
        size_t len = s ? (size_t)(s - c) : strlen(c);
        if (len == 0 || len > SB_NAME_MAX || (len == 1 && c[0] == '.') ||
            (len == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        if (!s)
            return 1;
        c = s + 1;
    }
}

/* Inside path of a job path: relative = under /workspace. */
static const char *inside_path(struct al_arena *a, const char *path)
{
    if (path[0] == '/')
        return path;
    size_t n = strlen(path);
    char *s = al_arena_alloc(a, sizeof(SB_WORKSPACE) + 1 + n);
    if (s)
        snprintf(s, sizeof(SB_WORKSPACE) + 1 + n, SB_WORKSPACE "/%s", path);
    return s;
}

static int plan_exec(struct al_arena *a, const struct sb_request *req, struct sb_plan *p, char *msg,
                     size_t n)
{
    const char *path;
    char **envp, **argv, **cands;
    size_t ncand;
    int rc = sb_env_build(a, req, &envp, &path, msg, n);
    if (rc == 0)
        rc = sb_argv_build(a, req, path, &argv, &cands, &ncand, msg, n);
    if (rc < 0)
        return rc;
    p->envp = envp;
    p->argv = argv;
    p->exec_paths = cands;
    p->n_exec_paths = ncand;
    const char *cwd = req->cwd && req->cwd[0] ? req->cwd : SB_WORKSPACE;
    if (strlen(cwd) >= PATH_MAX / 2)
        return msgf(msg, n, AL_ERR_INVAL, "working directory too long");
    p->cwd = inside_path(a, al_arena_strndup(a, cwd, strlen(cwd)));
    return p->cwd ? 0 : AL_ERR_NOMEM;
}

static int plan_file(struct al_arena *a, const struct sb_request *req, struct sb_plan *p, char *msg,
                     size_t n)
{
    const struct sb_file_op *f = &req->file;
    if (!f->path || !f->path[0] || strlen(f->path) >= PATH_MAX / 2)
        return msgf(msg, n, AL_ERR_INVAL, "file path missing or too long");
    if (f->offset_bytes < 0 || f->max_bytes < 0 || f->max_entries < 0)
        return msgf(msg, n, AL_ERR_INVAL, "negative offset_bytes, max_bytes or max_entries");
    p->file = *f;
    if (!p->file.max_bytes)
        p->file.max_bytes =
            req->limits.output_bytes ? req->limits.output_bytes : SB_READ_DEFAULT_MAX;
    if (!p->file.max_entries)
        p->file.max_entries = SB_LIST_DEFAULT_MAX;
    if (p->file.max_entries > SB_LIST_HARD_MAX)
        p->file.max_entries = SB_LIST_HARD_MAX;
    p->file.mode = f->mode ? (f->mode & 0777) : 0644;
    if (req->kind != SB_WRITE_FILE) {
        p->path = inside_path(a, al_arena_strndup(a, f->path, strlen(f->path)));
        return p->path ? 0 : AL_ERR_NOMEM;
    }
    const char *rel = f->path;
    if (strncmp(rel, SB_WORKSPACE "/", sizeof(SB_WORKSPACE)) == 0)
        rel += sizeof(SB_WORKSPACE);
    if (!relative_clean(rel))
        return msgf(msg, n, AL_ERR_INVAL,
                    "WRITE_FILE path must name a file inside /workspace (no \"..\", \".\" or "
                    "empty components)");
    p->ws_path = al_arena_strndup(a, rel, strlen(rel));
    p->path = inside_path(a, p->ws_path);
    return p->ws_path && p->path ? 0 : AL_ERR_NOMEM;
}

static int hostname_ok(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') ||
              (h[i] >= '0' && h[i] <= '9') || h[i] == '-' || h[i] == '.'))
            return 0;
    return 1;
}

static int check_request(const struct sb_request *req, const struct sb_config *cfg, char *msg,
                         size_t n)
{
    struct stat st;
    if (req->kind < SB_EXEC || req->kind > SB_LIST_DIR)
        return msgf(msg, n, AL_ERR_INVAL, "unknown job kind");
    if (!req->workspace && req->workspace_bytes < SB_WORKSPACE_MIN_BYTES)
        return msgf(msg, n, AL_ERR_INVAL,
                    "a private workspace needs workspace_bytes of at least 64 KiB");
    if (req->workspace &&
        (req->workspace[0] != '/' || stat(req->workspace, &st) < 0 || !S_ISDIR(st.st_mode)))
        return msgf(msg, n, AL_ERR_INVAL, "workspace is not an existing directory");
    if (req->id && !sb_id_ok(req->id))
        return msgf(msg, n, AL_ERR_INVAL, "job id must be 1-64 characters of [A-Za-z0-9._-]");
    if (cfg->hostname && !hostname_ok(cfg->hostname))
        return msgf(msg, n, AL_ERR_INVAL, "hostname must be 1-63 of [A-Za-z0-9.-]");
    if (cfg->tmp_bytes < 0 || cfg->shm_bytes < 0)
        return msgf(msg, n, AL_ERR_INVAL, "negative tmpfs size");
    if (req->kind != SB_EXEC && req->kind != SB_WRITE_FILE && req->input_len)
        return msgf(msg, n, AL_ERR_INVAL, "input is only for EXEC and WRITE_FILE");
    if (req->kind != SB_EXEC && req->proxy_port)
        return msgf(msg, n, AL_ERR_INVAL,
                    "proxy_port is only for EXEC jobs (file operations have no network)");
    return 0;
}

/* Everything the child needs, from the host, the configuration and the
 * request; rep receives the limits and their mechanisms. */
static int plan_build(struct al_arena *a, const struct sb_host *h, const struct sb_config *cfg,
                      const struct sb_request *req, struct sb_plan *p, struct sb_limit_report *rep,
                      size_t *nrep, char *msg, size_t n)
{
    int rc = check_request(req, cfg, msg, n);
    if (rc < 0)
        return rc;
    memset(p, 0, sizeof(*p));
    p->kind = req->kind;
    p->uid = h->uid;
    p->gid = h->gid;
    p->cap_last = h->cap_last;
    p->hostname = cfg->hostname ? cfg->hostname : "sandbox";
    p->proxy_port = req->proxy_port;
    p->net = cfg->net;
    p->stage = h->stage;
    p->seccomp = &h->seccomp;
    p->stack = (char *)h->stack + 4096;
    p->stack_size = h->stack_size;
    rc = sb_limits_decide(&h->caps, &req->limits, h->degraded, rep, nrep, msg, n);
    if (rc < 0)
        return rc;
    sb_limits_rlimits(&req->limits, rep, *nrep, p);
    rc = req->kind == SB_EXEC ? plan_exec(a, req, p, msg, n) : plan_file(a, req, p, msg, n);
    if (rc == 0)
        rc = sb_mount_plan(a, &h->image, cfg, req, h->uid, h->gid, h->run_dir, p, msg, n);
    return rc;
}

int sb_request_check(const struct sb_host *h, const struct sb_config *cfg,
                     const struct sb_request *req, char *msg, size_t msglen)
{
    char local[SB_MESSAGE_MAX];
    if (!msg || !msglen) {
        msg = local;
        msglen = sizeof(local);
    }
    if (!h || !cfg || !req)
        return msgf(msg, msglen, AL_ERR_INVAL, "missing argument");
    struct al_arena a;
    struct sb_plan p;
    struct sb_limit_report rep[SB_MAX_LIMITS];
    size_t n;
    al_arena_init(&a, 0);
    int rc = plan_build(&a, h, cfg, req, &p, rep, &n, msg, msglen);
    al_arena_cleanup(&a);
    if (rc == AL_ERR_NOMEM)
        msgf(msg, msglen, rc, "out of memory");
    return rc;
}

static void child_free(struct sb_child *c)
{
    if (c->dec_ready)
        sb_frame_dec_cleanup(&c->dec);
    al_arena_cleanup(&c->arena);
    free(c);
}

static int prepare(struct sb_child *c, const struct sb_config *cfg, const struct sb_request *req,
                   char *msg, size_t n)
{
    struct sb_host *h = c->host;
    int rc = plan_build(&c->arena, h, cfg, req, &c->plan, c->rep, &c->n_rep, msg, n);
    if (rc < 0)
        return rc;
    c->kind = req->kind;
    c->limits = req->limits;
    c->input = req->input;
    c->input_len = req->input ? req->input_len : 0;
    c->arg0 = c->kind == SB_EXEC ? c->plan.argv[0] : NULL;
    c->where = c->kind == SB_EXEC ? c->plan.cwd : c->plan.path;
    if (req->id)
        snprintf(c->name, sizeof(c->name), "%s", req->id);
    else
        snprintf(c->name, sizeof(c->name), "job-%llu", (unsigned long long)++h->seq);
    if (c->kind == SB_READ_FILE || c->kind == SB_LIST_DIR) {
        if (sb_frame_dec_init(&c->dec) < 0)
            return AL_ERR_NOMEM;
        c->dec_ready = 1;
    }
    return 0;
}

int sb_start(struct ev_loop *loop, struct sb_host *h, const struct sb_config *cfg,
             const struct sb_request *req, const struct sb_callbacks *cbs, struct sb_child **out)
{
    if (!loop || !h || !cfg || !req || !cbs || !cbs->on_exit || !out)
        return AL_ERR_INVAL;
    struct sb_child *c = calloc(1, sizeof(*c));
    if (!c)
        return AL_ERR_NOMEM;
    c->loop = loop;
    c->host = h;
    c->cb = *cbs;
    c->pidfd = c->fd_in = c->fd_out = c->fd_err = c->fd_status = -1;
    al_arena_init(&c->arena, 0);
    char msg[SB_MESSAGE_MAX];
    int rc = prepare(c, cfg, req, msg, sizeof(msg));
    if (rc < 0) {
        child_free(c);
        return rc;
    }
    h->children++;
    clock_gettime(CLOCK_MONOTONIC, &c->t0);
    *out = c;
    if (h->cg.version[SB_CTL_MEMORY] || h->cg.version[SB_CTL_PIDS] || h->cg.version[SB_CTL_CPU] ||
        h->cg.version[SB_CTL_CPUACCT]) {
        rc =
            sb_host_job_cgroups(h, c->name, &c->limits, c->rep, c->n_rep, &c->cg, msg, sizeof(msg));
        if (rc < 0) {
            sb_child_fail(c, SB_FAIL_SANDBOX_SETUP, msg);
            return 0;
        }
        c->have_cg = 1;
    }
    rc = sb_spawn(c, msg, sizeof(msg));
    if (rc < 0 && c->pid <= 0) {
        sb_child_fail(c, SB_FAIL_SANDBOX_SETUP, msg);
        return 0;
    }
    sb_child_watch(c);
    if (rc < 0) /* the child exists but could not be set up */
        sb_child_fail(c, SB_FAIL_SANDBOX_SETUP, msg);
    else
        AL_LOG_DEBUG("sandbox.start", "job=%s pid=%d kind=%d", c->name, (int)c->pid, (int)c->kind);
    return 0;
}

/* ---------------------------------------------------------------------------
 * Launch (parent)
 * ------------------------------------------------------------------------- */

static void close_pair(int p[2])
{
    for (int i = 0; i < 2; i++)
        if (p[i] >= 0) {
            close(p[i]);
            p[i] = -1;
        }
}

static int make_pipes(int pipes[5][2])
{
    for (int i = 0; i < 5; i++)
        pipes[i][0] = pipes[i][1] = -1;
    for (int i = 0; i < 5; i++)
        if (pipe2(pipes[i], O_CLOEXEC) < 0)
            return -errno;
    /* the parent's ends never block the loop (the go byte fits any pipe) */
    int ours[4] = {pipes[0][1], pipes[1][0], pipes[2][0], pipes[3][0]};
    for (int i = 0; i < 4; i++)
        if (fcntl(ours[i], F_SETFL, O_NONBLOCK) < 0)
            return -errno;
    return 0;
}

long sb_clone_init(int *pidfd)
{
    struct clone_args args;
    uint64_t flags = NS_FLAGS | CLONE_PIDFD | CLONE_PARENT;
    memset(&args, 0, sizeof(args));
    args.flags = flags;
    args.pidfd = (uint64_t)(uintptr_t)pidfd;
    args.exit_signal = 0; /* no SIGCHLD: only the caller's pidfd watcher reaps it (with
                             CLONE_PARENT the kernel takes the spawner's exit signal, 0) */
    long pid = syscall(SYS_clone3, &args, sizeof(args));
    if (pid < 0 && errno == ENOSYS) /* e.g. under a seccomp profile without clone3 */
        pid = syscall(SYS_clone, (long)flags, 0, pidfd, 0, 0);
    return pid;
}

static int after_clone(struct sb_child *c, int go_fd, char *detail, size_t n)
{
    struct sb_host *h = c->host;
    int rc = sb_ns_write_maps(c->pid, h->uid, h->gid, h->id_base);
    if (rc < 0) {
        snprintf(detail, n, "writing the user namespace id maps: %s", strerror(-rc));
        return rc;
    }
    if (c->have_cg && (rc = sb_cg_job_attach(&c->cg, c->pid)) < 0) {
        snprintf(detail, n, "moving the sandbox into its cgroups: %s", strerror(-rc));
        return rc;
    }
    ssize_t w;
    do {
        w = write(go_fd, "G", 1);
    } while (w < 0 && errno == EINTR);
    if (w != 1) {
        rc = w < 0 ? -errno : -EIO;
        snprintf(detail, n, "starting the sandbox: %s", strerror(-rc));
        return rc;
    }
    return 0;
}

int sb_spawn(struct sb_child *c, char *detail, size_t n)
{
    int pipes[5][2]; /* stdin, stdout, stderr, status, go */
    int rc = make_pipes(pipes);
    if (rc < 0) {
        snprintf(detail, n, "creating pipes: %s", strerror(-rc));
        goto fail;
    }
    /* the child's ends travel to the spawner, which numbers them in its copy
     * of the plan */
    int pidfd = -1;
    int child_ends[5] = {pipes[0][0], pipes[1][1], pipes[2][1], pipes[3][1], pipes[4][0]};
    long pid = sb_spawner_clone(&c->host->spawner, &c->plan, child_ends, &pidfd, detail, n);
    if (pid < 0) {
        rc = (int)pid;
        goto fail;
    }
    c->pid = (pid_t)pid;
    c->pidfd = pidfd;
    c->fd_in = pipes[0][1];
    c->fd_out = pipes[1][0];
    c->fd_err = pipes[2][0];
    c->fd_status = pipes[3][0];
    pipes[0][1] = pipes[1][0] = pipes[2][0] = pipes[3][0] = -1;
    rc = after_clone(c, pipes[4][1], detail, n);
fail:
    for (int i = 0; i < 5; i++)
        close_pair(pipes[i]);
    return rc;
}

/* ---------------------------------------------------------------------------
 * The sandbox's init (child). Only async-signal-safe calls from here on.
 * ------------------------------------------------------------------------- */

static int status_fd = -1;

void sb_msg_send(const struct sb_msg *m)
{
    ssize_t w;
    do {
        w = write(status_fd, m, sizeof(*m));
    } while (w < 0 && errno == EINTR);
}

static void die(int step, int index, int err) __attribute__((noreturn));
static void die(int step, int index, int err)
{
    struct sb_msg m = {SB_MSG_MAGIC, SB_MSG_SETUP_ERROR, step, index, err, 0, 0, 0, 0};
    sb_msg_send(&m);
    _exit(SB_EXIT_SETUP);
}

/* stdin, stdout, stderr -> 0, 1, 2; status -> 3, go -> 4 (close-on-exec);
 * everything else closed. Sources first move above 4 so that no dup3
 * overwrites one that is still needed. */
static int arrange_fds(const struct sb_plan *p)
{
    int src[5] = {p->fd_in, p->fd_out, p->fd_err, p->fd_status, p->fd_sync};
    for (int i = 0; i < 5; i++)
        if ((src[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 5)) < 0)
            return -errno;
    for (int i = 0; i < 5; i++)
        if (dup3(src[i], i, i >= 3 ? O_CLOEXEC : 0) < 0)
            return -errno;
    if (syscall(SYS_close_range, 5, ~0U, 0) < 0)
        return -errno;
    return 0;
}

/* Dispositions to default (ignored signals survive exec), nothing blocked.
 * Raw system calls: the caller's libc or sanitizer may wrap sigaction. */
static int reset_signals(void)
{
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } dfl = {SIG_DFL, 0, NULL, 0};
    uint64_t none = 0;
    for (int s = 1; s <= 64; s++) {
        if (s == SIGKILL || s == SIGSTOP)
            continue;
        if (syscall(SYS_rt_sigaction, s, &dfl, NULL, 8) < 0 && errno != EINVAL)
            return -errno;
    }
    return syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, 8) < 0 ? -errno : 0;
}

struct cmd {
    const struct sb_plan *p;
    int err; /* written by the command's process before it gives up */
};

/* The command's process until execve: it shares init's memory (CLONE_VM)
 * while init waits (CLONE_VFORK). Tries each candidate as execvp does:
 * ENOENT, ENOTDIR, ESTALE, ENODEV, ETIMEDOUT and EACCES go on to the next
 * PATH entry; EACCES wins if nothing ran. Raw system calls only, no
 * sanitizer instrumentation: it runs on the clone stack. */
__attribute__((no_sanitize_address)) static int cmd_main(void *arg)
{
    struct cmd *c = arg;
    int err = ENOENT, eacces = 0;
    for (size_t i = 0; i < c->p->n_exec_paths; i++) {
        syscall(SYS_execve, c->p->exec_paths[i], c->p->argv, c->p->envp);
        err = errno;
        if (err == EACCES)
            eacces = 1;
        else if (err != ENOENT && err != ENOTDIR && err != ESTALE && err != ENODEV &&
                 err != ETIMEDOUT)
            break;
    }
    c->err = eacces && (err == ENOENT || err == ENOTDIR) ? EACCES : err;
    syscall(SYS_exit, 127);
    return 127;
}

static int run_command(const struct sb_plan *p)
{
    struct cmd c = {p, 0};
    int status = 0;
    pid_t job =
        clone(cmd_main, (char *)p->stack + p->stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, &c);
    if (job < 0)
        die(SB_STEP_SPAWN, 0, errno);
    if (c.err) {
        struct sb_msg m = {SB_MSG_MAGIC, SB_MSG_EXEC_ERROR, SB_STEP_EXEC, 0, c.err, 0, 0, 0, 0};
        sb_msg_send(&m);
        waitpid(job, &status, __WALL);
        return 127;
    }
    struct sb_msg started = {SB_MSG_MAGIC, SB_MSG_STARTED, 0, 0, 0, 0, 0, 0, 0};
    sb_msg_send(&started);
    /* init keeps none of the command's I/O: the parent sees end of file as
     * soon as the command's processes close theirs */
    close(0);
    close(1);
    close(2);
    for (;;) {
        pid_t w = wait4(-1, &status, __WALL, NULL);
        if (w == job)
            break;
        if (w < 0 && errno != EINTR)
            die(SB_STEP_WAIT, 0, errno);
    }
    struct sb_msg m = {SB_MSG_MAGIC, SB_MSG_EXITED, 0, 0, 0, status, 0, 0, 0};
    sb_msg_send(&m);
    /* leaving takes every other process of the sandbox down with us */
    return 0;
}

void sb_init_main(const struct sb_plan *p)
{
    struct sb_fail f = {0, 0};
    int rc, lfd[2] = {-1, -1}; /* the proxy listeners: open until init exits */
    status_fd = p->fd_status;
    if ((rc = arrange_fds(p)) < 0)
        die(SB_STEP_FDS, 0, -rc);
    status_fd = 3;
    if ((rc = sb_ns_enter(p, &f)) < 0 || (rc = sb_net_setup(p, lfd, &f)) < 0)
        die(f.step, f.index, -rc);
    if (lfd[0] >= 0) {
        struct sb_msg m = {SB_MSG_MAGIC, SB_MSG_LISTENING, lfd[0], lfd[1], 0, 0, 0, 0, 0};
        sb_msg_send(&m);
    }
    if ((rc = sb_mount_setup(p, &f)) < 0 || (rc = sb_ns_scrub_identity(&f)) < 0 ||
        (rc = sb_ns_drop_privileges(p, &f)) < 0)
        die(f.step, f.index, -rc);
    if ((rc = reset_signals()) < 0)
        die(SB_STEP_SIGNALS, 0, -rc);
    umask(022); /* not whatever the caller had */
    if (p->kind == SB_EXEC && chdir(p->cwd) < 0)
        die(SB_STEP_CHDIR, 0, errno);
    if ((rc = sb_limits_apply(p, &f)) < 0)
        die(f.step, f.index, -rc);
    if ((rc = sb_seccomp_load(p->seccomp)) < 0)
        die(SB_STEP_SECCOMP, 0, -rc);
    _exit(p->kind == SB_EXEC ? run_command(p) : sb_fileop_run(p));
}
