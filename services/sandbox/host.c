/*
 * host: probes this machine once per process and holds what every sandbox
 * shares: the id mapping, the run directory (mount point of the sandbox
 * roots, workspaces), the parent cgroups and the mechanisms they give, the
 * compiled seccomp filter, the resolved default image, the stack the
 * sandbox's init clones the command on, the spawner that clones the inits
 * and the pool of free job cgroups (cgroup v1).
 *
 * Startup checklist (sb_host_new): options -> root -> SIGPIPE ignored ->
 * kernel features (user/pid/mount/net/ipc/uts namespaces and a pidfd through
 * a probe clone; mount_setattr, openat2, close_range) -> run directory ->
 * cgroups (parents, leftovers) -> leftover workspaces -> seccomp -> image ->
 * clone stack -> the spawner (spawner.c), forked last so that it holds all of
 * the above at the same addresses.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "al_err.h"
#include "al_log.h"
#include "child.h"

#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

#define DEFAULT_ID      1000
#define DEFAULT_ID_BASE 1000000000u
#define STACK_SIZE      (256 << 10)

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* The parent of the job cgroups: everything under it is ours (leftovers in
 * it are killed and removed), so it must name a directory of its own. */
static int cgroup_parent_ok(const char *rel)
{
    char comp[65];
    for (const char *s = rel;;) {
        const char *slash = strchr(s, '/');
        size_t len = slash ? (size_t)(slash - s) : strlen(s);
        if (len == 0 || len >= sizeof(comp))
            return 0;
        memcpy(comp, s, len);
        comp[len] = '\0';
        if (!sb_id_ok(comp))
            return 0;
        if (!slash)
            return 1;
        s = slash + 1;
    }
}

static int check_options(const struct sb_host_options *o, struct sb_host *h, char *err,
                         size_t errlen)
{
    if (!sb_id_ok(o->name))
        return fail(err, errlen, AL_ERR_INVAL, "name must be 1-64 characters of [A-Za-z0-9._-]");
    snprintf(h->name, sizeof(h->name), "%s", o->name);
    h->uid = o->uid ? o->uid : DEFAULT_ID;
    h->gid = o->gid ? o->gid : DEFAULT_ID;
    h->id_base = o->id_base ? o->id_base : DEFAULT_ID_BASE;
    uint64_t top = (uint64_t)h->id_base + (h->uid > h->gid ? h->uid : h->gid);
    if (top >= 0xfffffffeu || h->uid == 65535 || h->gid == 65535)
        return fail(err, errlen, AL_ERR_INVAL, "uid/gid/id_base out of range");
    h->degraded = o->degraded;
    int w = o->run_dir
                ? snprintf(h->run_dir, sizeof(h->run_dir), "%s", o->run_dir)
                : snprintf(h->run_dir, sizeof(h->run_dir), "/run/airlock-sandbox/%s", h->name);
    int c = o->cgroup_parent ? snprintf(h->cg_rel, sizeof(h->cg_rel), "%s", o->cgroup_parent)
                             : snprintf(h->cg_rel, sizeof(h->cg_rel), "airlock/%s", h->name);
    if (w < 0 || (size_t)w >= sizeof(h->run_dir) / 2 || h->run_dir[0] != '/' || c <= 0 ||
        (size_t)c >= sizeof(h->cg_rel) / 2 || !cgroup_parent_ok(h->cg_rel))
        return fail(err, errlen, AL_ERR_INVAL,
                    "run_dir must be absolute; cgroup_parent relative: components of "
                    "[A-Za-z0-9._-], not \".\" or \"..\"");
    /* run_dir is at most PATH_MAX / 2: these fit */
    if (snprintf(h->stage, sizeof(h->stage), "%s/root", h->run_dir) >= (int)sizeof(h->stage) ||
        snprintf(h->ws_dir, sizeof(h->ws_dir), "%s/ws", h->run_dir) >= (int)sizeof(h->ws_dir))
        return fail(err, errlen, AL_ERR_INVAL, "run_dir too long");
    return 0;
}

/* A clone with every namespace the sandbox uses and a pidfd, exiting at once. */
static int probe_namespaces(void)
{
    int pidfd = -1, status;
    long flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC |
                 CLONE_NEWUTS | CLONE_NEWCGROUP | CLONE_PIDFD | SIGCHLD;
    long pid = syscall(SYS_clone, flags, 0, &pidfd, 0, 0);
    if (pid < 0)
        return -errno;
    if (pid == 0)
        _exit(0);
    if (waitpid((pid_t)pid, &status, 0) < 0)
        return -errno;
    if (pidfd < 0)
        return -ENOSYS;
    close(pidfd);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -ECHILD;
}

/* A system call exists if it fails with anything but ENOSYS on bad input. */
static int have_syscall(long nr, long a, long b, long c, long d)
{
    return syscall(nr, a, b, c, d, 0) == 0 || errno != ENOSYS;
}

static int probe_kernel(char *err, size_t errlen)
{
    int rc = probe_namespaces();
    if (rc < 0)
        return fail(err, errlen, AL_ERR_CONFIG,
                    "cannot create user/pid/mount/net/ipc/uts/cgroup namespaces with a pidfd: %s",
                    strerror(-rc));
    if (!have_syscall(SYS_mount_setattr, -1, (long)"", 0, 0) ||
        !have_syscall(SYS_openat2, -1, (long)"", 0, 0) ||
        !have_syscall(SYS_close_range, ~0L, ~0L, 0, 0))
        return fail(err, errlen, AL_ERR_CONFIG,
                    "kernel too old: mount_setattr, openat2 and close_range (Linux 5.12) needed");
    return 0;
}

/* mkdir -p; every component must let others search it (the sandbox's root
 * is not root on the host). */
static int make_run_dir(const char *dir, char *err, size_t errlen)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s", dir);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        struct stat st;
        if (mkdir(p, 0711) < 0 && errno != EEXIST)
            return fail(err, errlen, -errno, "creating %s: %s", p, strerror(errno));
        if (stat(p, &st) < 0 || !S_ISDIR(st.st_mode) || !(st.st_mode & S_IXOTH))
            return fail(err, errlen, AL_ERR_CONFIG,
                        "%s must be a directory searchable by others (o+x)", p);
        *s = c;
        if (c == '\0')
            return 0;
    }
}

static int read_cap_last(void)
{
    char buf[16] = "";
    int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t r = read(fd, buf, sizeof(buf) - 1);
        buf[r > 0 ? r : 0] = '\0';
        close(fd);
    }
    int v = atoi(buf);
    return v > 0 && v < 256 ? v : 63;
}

static int mech_of(int version)
{
    return version == 2 ? SB_MECH_CGROUP_V2 : version == 1 ? SB_MECH_CGROUP_V1 : 0;
}

static int setup_cgroups(struct sb_host *h, const struct sb_host_options *o, char *err,
                         size_t errlen)
{
    int rc = sb_cg_host_init(&h->cg, o->cgroups, h->cg_rel, o->keep_leftovers, err, errlen);
    if (rc < 0)
        return rc;
    h->caps.memory = mech_of(h->cg.version[SB_CTL_MEMORY]);
    h->caps.pids = mech_of(h->cg.version[SB_CTL_PIDS]);
    h->caps.cpu = mech_of(h->cg.version[SB_CTL_CPU]);
    h->caps.cpuacct = mech_of(h->cg.version[SB_CTL_CPUACCT]);
    h->cg_pooling = sb_cg_poolable(&h->cg);
    if (!h->caps.memory)
        AL_LOG_WARN("sandbox.host", "name=%s memory_cgroup=none degraded=%d%s", h->name,
                    h->degraded, h->degraded ? "" : " (jobs with a memory limit are refused)");
    return 0;
}

static int alloc_stack(struct sb_host *h)
{
    h->stack_map = STACK_SIZE + 4096;
    void *m = mmap(NULL, h->stack_map, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (m == MAP_FAILED)
        return -errno;
    if (mprotect(m, 4096, PROT_NONE) < 0) { /* guard page below the stack */
        int rc = -errno;
        munmap(m, h->stack_map);
        return rc;
    }
    h->stack = m;
    h->stack_size = STACK_SIZE;
    return 0;
}

static int setup_image(struct sb_host *h, char *err, size_t errlen)
{
    size_t n = 0;
    while (sb_default_image[n])
        n++;
    struct sb_bind *b = al_arena_alloc(&h->arena, n * sizeof(*b));
    if (!b)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        b[i] = (struct sb_bind){sb_default_image[i], NULL};
    return sb_image_resolve(&h->arena, b, n, 1, 1, &h->image, err, errlen);
}

static int prepare(struct sb_host *h, const struct sb_host_options *o, char *err, size_t errlen)
{
    int rc = check_options(o, h, err, errlen);
    if (rc < 0)
        return rc;
    if (geteuid() != 0)
        return fail(err, errlen, AL_ERR_CONFIG, "must run as root (maps user ids, cgroups)");
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
    if ((rc = probe_kernel(err, errlen)) < 0 || (rc = make_run_dir(h->run_dir, err, errlen)) < 0)
        return rc;
    h->run_dir_made = 1;
    if ((mkdir(h->stage, 0755) < 0 && errno != EEXIST) ||
        (mkdir(h->ws_dir, 0711) < 0 && errno != EEXIST))
        return fail(err, errlen, -errno, "creating %s/{root,ws}: %s", h->run_dir, strerror(errno));
    if ((rc = setup_cgroups(h, o, err, errlen)) < 0)
        return rc;
    if (!o->keep_leftovers)
        sb_workspace_remove_leftovers(h->ws_dir);
    h->cap_last = read_cap_last();
    cpu_set_t set;
    h->ncpu = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
    if ((rc = sb_seccomp_build(&h->seccomp, err, errlen)) < 0 ||
        (rc = setup_image(h, err, errlen)) < 0)
        return rc;
    if ((rc = alloc_stack(h)) < 0)
        return fail(err, errlen, rc, "allocating the clone stack: %s", strerror(-rc));
    /* last: the spawner is a copy of this process as it is now */
    if ((rc = sb_spawner_start(&h->spawner)) < 0)
        return fail(err, errlen, rc, "starting the sandbox spawner: %s", strerror(-rc));
    return 0;
}

int sb_host_new(const struct sb_host_options *opts, struct sb_host **out, char *err, size_t errlen)
{
    if (!opts || !out)
        return AL_ERR_INVAL;
    struct sb_host *h = calloc(1, sizeof(*h));
    if (!h)
        return fail(err, errlen, AL_ERR_NOMEM, "out of memory");
    al_arena_init(&h->arena, 0);
    h->spawner.sock = -1;
    int rc = prepare(h, opts, err, errlen);
    if (rc < 0) {
        sb_host_free(h);
        return rc;
    }
    AL_LOG_INFO("sandbox.host", "name=%s memory=%s pids=%s cpu=%s cpuacct=%s seccomp_insns=%u",
                h->name, sb_mechanism_name(sb_host_mechanism(h, SB_LIMIT_MEMORY)),
                sb_mechanism_name(sb_host_mechanism(h, SB_LIMIT_PIDS)),
                sb_mechanism_name(sb_host_mechanism(h, SB_LIMIT_CPU_BANDWIDTH)),
                sb_mechanism_name(sb_host_mechanism(h, SB_LIMIT_CPU_TIME)),
                (unsigned)h->seccomp.len);
    *out = h;
    return 0;
}

void sb_host_defer_cgroups(struct sb_host *h, const struct sb_cg_job *job)
{
    struct sb_cg_job *s = realloc(h->stale, (h->n_stale + 1) * sizeof(*s));
    if (!s) {
        AL_LOG_WARN("sandbox.cgroup", "action=defer error=\"out of memory\" dir=%s", job->dir[0]);
        return;
    }
    h->stale = s;
    h->stale[h->n_stale++] = *job;
}

void sb_host_retry_cgroups(struct sb_host *h)
{
    size_t k = 0;
    for (size_t i = 0; i < h->n_stale; i++)
        if (sb_cg_job_destroy(&h->stale[i]) < 0)
            h->stale[k++] = h->stale[i];
    h->n_stale = k;
}

int sb_host_job_cgroups(struct sb_host *h, const char *name, const struct sb_limits *l,
                        const struct sb_limit_report *rep, size_t nrep, struct sb_cg_job *job,
                        char *msg, size_t msglen)
{
    if (!h->cg_pooling)
        return sb_cg_job_create(&h->cg, name, l, rep, nrep, job, msg, msglen);
    int rc = 0;
    /* a free set whose limits cannot be rewritten is dropped, and a new set
     * tried once */
    for (int fresh = h->n_cg_pool == 0;; fresh = 1) {
        if (!fresh) {
            *job = h->cg_pool[--h->n_cg_pool];
        } else {
            char pname[32];
            snprintf(pname, sizeof(pname), "pool-%llu", (unsigned long long)++h->cg_pool_seq);
            if ((rc = sb_cg_pool_create(&h->cg, pname, job, msg, msglen)) < 0)
                return rc;
        }
        if ((rc = sb_cg_job_reuse(job, l, rep, nrep, msg, msglen)) == 0)
            return 0;
        if (sb_cg_job_destroy(job) < 0)
            sb_host_defer_cgroups(h, job);
        memset(job, 0, sizeof(*job));
        if (fresh)
            return rc;
    }
}

void sb_host_release_cgroups(struct sb_host *h, struct sb_cg_job *job)
{
    if (job->pooled && h->n_cg_pool < SB_CG_POOL_MAX && sb_cg_job_recycle(job)) {
        if (h->n_cg_pool == h->cap_cg_pool) {
            size_t cap = h->cap_cg_pool ? 2 * h->cap_cg_pool : 4;
            struct sb_cg_job *p = realloc(h->cg_pool, cap * sizeof(*p));
            if (p) {
                h->cg_pool = p;
                h->cap_cg_pool = cap;
            }
        }
        if (h->n_cg_pool < h->cap_cg_pool) {
            h->cg_pool[h->n_cg_pool++] = *job;
            return;
        }
    }
    if (sb_cg_job_destroy(job) < 0)
        sb_host_defer_cgroups(h, job);
}

void sb_host_free(struct sb_host *h)
{
    if (!h)
        return;
    if (h->children > 0)
        AL_LOG_ERROR("sandbox.host", "action=free children=%d (freed before on_exit)", h->children);
    sb_spawner_stop(&h->spawner);
    for (size_t i = 0; i < h->n_cg_pool; i++)
        if (sb_cg_job_destroy(&h->cg_pool[i]) < 0)
            sb_host_defer_cgroups(h, &h->cg_pool[i]);
    free(h->cg_pool);
    sb_host_retry_cgroups(h);
    for (size_t i = 0; i < h->n_stale; i++)
        AL_LOG_WARN("sandbox.cgroup", "action=remove error=busy dir=%s", h->stale[i].dir[0]);
    free(h->stale);
    sb_cg_host_cleanup(&h->cg, h->cg_rel);
    if (h->run_dir_made) {
        rmdir(h->stage);
        rmdir(h->ws_dir);
        rmdir(h->run_dir);
    }
    sb_seccomp_free(&h->seccomp);
    if (h->stack)
        munmap(h->stack, h->stack_map);
    al_arena_cleanup(&h->arena);
    free(h);
}

enum sb_mechanism sb_host_mechanism(const struct sb_host *h, enum sb_limit_kind kind)
{
    switch (kind) {
    case SB_LIMIT_WALL_TIME:
        return SB_MECH_TIMER;
    case SB_LIMIT_CPU_TIME:
        return h->caps.cpuacct ? (enum sb_mechanism)h->caps.cpuacct : SB_MECH_RLIMIT;
    case SB_LIMIT_MEMORY:
        return h->caps.memory ? (enum sb_mechanism)h->caps.memory
               : h->degraded  ? SB_MECH_RLIMIT
                              : SB_MECH_NONE;
    case SB_LIMIT_PIDS:
        return h->caps.pids ? (enum sb_mechanism)h->caps.pids : SB_MECH_RLIMIT;
    case SB_LIMIT_FILE_SIZE:
    case SB_LIMIT_OPEN_FILES:
        return SB_MECH_RLIMIT;
    case SB_LIMIT_OUTPUT:
        return SB_MECH_EXECUTOR;
    case SB_LIMIT_CPU_BANDWIDTH:
        return h->caps.cpu ? (enum sb_mechanism)h->caps.cpu : SB_MECH_NONE;
    }
    return SB_MECH_NONE;
}

void sb_host_get_info(const struct sb_host *h, struct sb_host_info *info)
{
    memset(info, 0, sizeof(*info));
    info->name = h->name;
    info->uid = h->uid;
    info->gid = h->gid;
    info->host_uid = h->id_base + h->uid;
    info->host_gid = h->id_base + h->gid;
    info->degraded = h->degraded;
    info->memory_version = h->cg.version[SB_CTL_MEMORY];
    info->pids_version = h->cg.version[SB_CTL_PIDS];
    info->cpu_version = h->cg.version[SB_CTL_CPU];
    info->cpuacct_version = h->cg.version[SB_CTL_CPUACCT];
    info->memory_dir = h->cg.parent[SB_CTL_MEMORY];
    info->pids_dir = h->cg.parent[SB_CTL_PIDS];
    info->cpu_dir = h->cg.parent[SB_CTL_CPU];
    info->cpuacct_dir = h->cg.parent[SB_CTL_CPUACCT];
    info->run_dir = h->run_dir;
    info->seccomp_instructions = h->seccomp.len;
}
