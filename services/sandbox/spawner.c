/*
 * spawner: a small process, forked once by sb_host_new(), that clones every
 * sandbox's init on the caller's behalf.
 *
 * Why: a sandbox's init used to be a clone of the caller itself. The clone
 * copied the caller's page tables (a cost that grows with the caller's
 * memory), and init lives as long as its job, so every page the caller wrote
 * meanwhile was copied once more (copy-on-write faults in the caller, for
 * pages init never reads). The spawner is forked before the caller's loop
 * allocates much and never grows: cloning it is cheap and the caller's
 * writes no longer fault. The sandbox's init also no longer holds a copy of
 * the caller's later memory (leases, fencing secrets, TLS state).
 *
 * Protocol (SOCK_SEQPACKET socketpair, one request at a time, synchronous):
 *   caller:  flattens the plan into the shared area (pointers already
 *            rebased to the spawner's private copy of it, see
 *            sb_plan_flatten), sends {magic, length} with the child's five
 *            pipe ends (SCM_RIGHTS)
 *   spawner: copies the plan into its private area (the caller may reuse the
 *            shared one at once), sets the received descriptors in it,
 *            clones init with CLONE_PARENT (init is the caller's child: the
 *            caller reaps it, gets its rusage and its parent-death signal),
 *            closes its copies, answers {pid or -errno} with init's pidfd
 *   init:    runs the plan (spawn.c); the shared area is MADV_DONTFORK in
 *            the spawner, so no init ever maps it.
 * The spawner is spawned with exit signal 0, so the inits it clones inherit
 * exit signal 0 (CLONE_PARENT takes the spawner's): waitpid(-1) in the
 * caller never reaps them by accident.
 *
 * Lifetime: the spawner dies with the thread that created it (parent-death
 * signal) and exits when the socket closes (sb_spawner_stop). A spawner that
 * died or stopped answering (10 s) is killed and replaced, once per request.
 * An init it may have cloned for the unanswered request finds its go pipe
 * closed and exits at once (it is then an unreaped child of the caller: the
 * price of a spawner killed from outside, which nothing here does).
 *
 * The spawner runs only system calls and memcpy after the fork: no malloc,
 * no locks, no libev. It keeps descriptors 0-2 and its socket, resets every
 * signal disposition (the caller's handlers would write into the caller's
 * libev signal pipe) and ignores the terminal's and supervisors' signals
 * (SIGINT, SIGTERM, SIGHUP, SIGQUIT): only the caller's exit ends it.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "al_err.h"
#include "al_log.h"
#include "child.h"

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

#define SPAWNER_MAGIC 0x53425350u /* "SBSP" */
#define SPAWNER_FD    3           /* the spawner's socket, after its fd cleanup */
#define REPLY_TIMEOUT 10000       /* ms: a spawner silent this long is replaced */
#define AREA_BYTES    ((size_t)32 << 20)

struct sp_request {
    uint32_t magic;
    uint32_t len; /* bytes of the flattened plan in the shared area */
};

struct sp_reply {
    uint32_t magic;
    int32_t pid; /* > 0, or -errno of the clone */
};

/* ---------------------------------------------------------------------------
 * Flattening (caller side)
 * ------------------------------------------------------------------------- */

struct flat {
    uint8_t *buf;
    size_t cap, used;
    uintptr_t base;
    int overflow;
};

/* Reserves n bytes aligned to 16; returns the local address (NULL on
 * overflow) and sets *remote to the address the copy will have. */
static void *fl_alloc(struct flat *f, size_t n, uintptr_t *remote)
{
    size_t at = (f->used + 15) & ~(size_t)15;
    if (f->overflow || at > f->cap || n > f->cap - at) {
        f->overflow = 1;
        return NULL;
    }
    f->used = at + n;
    *remote = f->base + at;
    return f->buf + at;
}

static const char *fl_bytes(struct flat *f, const char *s, size_t n)
{
    uintptr_t r = 0;
    char *d = fl_alloc(f, n + 1, &r);
    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return (const char *)r;
}

static const char *fl_str(struct flat *f, const char *s)
{
    return s ? fl_bytes(f, s, strlen(s)) : NULL;
}

/* n strings (n = count up to NULL when n is (size_t)-1), NULL-terminated. */
static char *const *fl_strv(struct flat *f, char *const *v, size_t n)
{
    if (!v)
        return NULL;
    if (n == (size_t)-1)
        for (n = 0; v[n]; n++)
            ;
    uintptr_t r = 0;
    char **d = fl_alloc(f, (n + 1) * sizeof(char *), &r); /* f->buf never moves */
    if (!d)
        return NULL;
    for (size_t i = 0; i < n; i++)
        d[i] = (char *)fl_str(f, v[i]);
    d[n] = NULL;
    return (char *const *)r;
}

int sb_plan_flatten(const struct sb_plan *p, void *dst, size_t cap, uintptr_t base, size_t *len)
{
    struct flat f = {dst, cap, 0, base, 0};
    uintptr_t r = 0;
    struct sb_plan *q = fl_alloc(&f, sizeof(*q), &r);
    if (!q)
        return AL_ERR_TOOBIG;
    struct sb_plan c = *p; /* scalars, rlimits, the host's pointers (seccomp, stack) */
    c.hostname = fl_str(&f, p->hostname);
    c.stage = fl_str(&f, p->stage);
    c.cwd = fl_str(&f, p->cwd);
    c.path = fl_str(&f, p->path);
    c.ws_path = fl_str(&f, p->ws_path);
    c.file.path = NULL; /* the child uses path / ws_path */
    c.argv = fl_strv(&f, p->argv, (size_t)-1);
    c.envp = fl_strv(&f, p->envp, (size_t)-1);
    c.exec_paths = fl_strv(&f, p->exec_paths, p->n_exec_paths);
    c.mnt = NULL;
    if (p->n_mnt) {
        struct sb_mnt *m = fl_alloc(&f, p->n_mnt * sizeof(*m), &r);
        if (m) {
            c.mnt = (const struct sb_mnt *)r;
            for (size_t i = 0; i < p->n_mnt; i++) {
                m[i] = p->mnt[i];
                if (m[i].src)
                    m[i].src = m[i].kind == SB_MNT_CONTENT ? fl_bytes(&f, m[i].src, m[i].len)
                                                           : fl_str(&f, m[i].src);
                m[i].dst = fl_str(&f, m[i].dst);
            }
        }
    }
    if (f.overflow)
        return AL_ERR_TOOBIG;
    *q = c;
    *len = f.used;
    return 0;
}

/* ---------------------------------------------------------------------------
 * The spawner process
 * ------------------------------------------------------------------------- */

/* Every disposition default (handlers of the caller must not run here),
 * then the signals meant for the caller ignored; nothing blocked. Raw
 * system calls: the caller's libc or sanitizer may wrap sigaction. */
static void spawner_signals(void)
{
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } dfl = {SIG_DFL, 0, NULL, 0}, ign = {SIG_IGN, 0, NULL, 0};
    uint64_t none = 0;
    for (int s = 1; s <= 64; s++) {
        if (s == SIGKILL || s == SIGSTOP)
            continue;
        int ignored = s == SIGINT || s == SIGTERM || s == SIGHUP || s == SIGQUIT || s == SIGPIPE;
        syscall(SYS_rt_sigaction, s, ignored ? (void *)&ign : (void *)&dfl, NULL, 8);
    }
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, 8);
}

static void spawner_reply(int pid, int pidfd)
{
    struct sp_reply rep = {SPAWNER_MAGIC, pid};
    struct iovec iov = {&rep, sizeof(rep)};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (pidfd >= 0) {
        memset(&u, 0, sizeof(u));
        mh.msg_control = u.buf;
        mh.msg_controllen = sizeof(u.buf);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &pidfd, sizeof(int));
    }
    while (sendmsg(SPAWNER_FD, &mh, MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

/* One request: 0 to go on, -1 when the caller is gone. */
static int spawner_serve(const struct sb_spawner *sp)
{
    struct sp_request req;
    struct iovec iov = {&req, sizeof(req)};
    union {
        char buf[CMSG_SPACE(5 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh;
    int fds[5] = {-1, -1, -1, -1, -1}, nfd = 0;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = u.buf;
    mh.msg_controllen = sizeof(u.buf);
    ssize_t n = recvmsg(SPAWNER_FD, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR)
        return 0;
    if (n <= 0)
        return -1;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                if (nfd < 5)
                    fds[nfd++] = fd;
                else
                    close(fd);
            }
        }
    int pid = -EPROTO, pidfd = -1;
    if (n == sizeof(req) && req.magic == SPAWNER_MAGIC && req.len >= sizeof(struct sb_plan) &&
        req.len <= sp->size && nfd == 5 && !(mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        memcpy(sp->stage, sp->shared, req.len);
        struct sb_plan *p = sp->stage;
        p->fd_in = fds[0];
        p->fd_out = fds[1];
        p->fd_err = fds[2];
        p->fd_status = fds[3];
        p->fd_sync = fds[4];
        long r = sb_clone_init(&pidfd);
        if (r == 0)
            sb_init_main(p);
        pid = r > 0 ? (int)r : -errno;
    }
    for (int i = 0; i < nfd; i++)
        close(fds[i]);
    spawner_reply(pid, pidfd);
    if (pidfd >= 0)
        close(pidfd);
    return 0;
}

static void spawner_main(const struct sb_spawner *sp, pid_t parent, int sock)
    __attribute__((noreturn));
static void spawner_main(const struct sb_spawner *sp, pid_t parent, int sock)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != parent)
        syscall(SYS_exit_group, 0);
    prctl(PR_SET_NAME, "sb-spawner", 0, 0, 0);
    spawner_signals();
    /* the inits we clone do not get the shared area at all: they must not
     * see later jobs' plans, and unmapping it in each would cost a TLB
     * shootdown */
    if (madvise(sp->shared, sp->size, MADV_DONTFORK) < 0)
        syscall(SYS_exit_group, 1);
    if (sock != SPAWNER_FD && dup3(sock, SPAWNER_FD, O_CLOEXEC) < 0)
        syscall(SYS_exit_group, 1);
    if (syscall(SYS_close_range, SPAWNER_FD + 1, ~0U, 0) < 0)
        syscall(SYS_exit_group, 1);
    while (spawner_serve(sp) == 0)
        ;
    syscall(SYS_exit_group, 0);
    __builtin_unreachable();
}

/* ---------------------------------------------------------------------------
 * Caller side
 * ------------------------------------------------------------------------- */

static int spawner_fork(struct sb_spawner *sp)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    /* SOCK_CLOEXEC is harmless for the spawner: it never execs, and its
     * inits close every descriptor above 4 first */
    pid_t parent = getpid();
    long pid = syscall(SYS_clone, 0L /* exit signal 0, a plain copy */, 0L, NULL, NULL, 0L);
    if (pid == 0) {
        al_log_batch_forget(); /* a raw clone: no atfork handler ran */
        close(sv[0]);
        spawner_main(sp, parent, sv[1]);
    }
    int rc = pid < 0 ? -errno : 0;
    close(sv[1]);
    if (rc < 0) {
        close(sv[0]);
        return rc;
    }
    struct timeval tv = {REPLY_TIMEOUT / 1000, 0};
    setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sp->sock = sv[0];
    sp->pid = (pid_t)pid;
    return 0;
}

int sb_spawner_start(struct sb_spawner *sp)
{
    sp->sock = -1;
    sp->pid = 0;
    sp->size = AREA_BYTES;
    void *shared = mmap(NULL, sp->size, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (shared == MAP_FAILED)
        return -errno;
    void *stage = mmap(NULL, sp->size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (stage == MAP_FAILED) {
        int rc = -errno;
        munmap(shared, sp->size);
        return rc;
    }
    sp->shared = shared;
    sp->stage = stage;
    int rc = spawner_fork(sp);
    if (rc < 0)
        sb_spawner_stop(sp);
    return rc;
}

/* Ends the spawner process (closing the socket makes it exit) and reaps it. */
static void spawner_end(struct sb_spawner *sp, int kill_it)
{
    if (sp->sock >= 0) {
        close(sp->sock);
        sp->sock = -1;
    }
    if (sp->pid > 0) {
        if (kill_it)
            kill(sp->pid, SIGKILL);
        while (waitpid(sp->pid, NULL, __WALL) < 0 && errno == EINTR)
            ;
        sp->pid = 0;
    }
}

void sb_spawner_stop(struct sb_spawner *sp)
{
    spawner_end(sp, 0);
    if (sp->shared)
        munmap(sp->shared, sp->size);
    if (sp->stage)
        munmap(sp->stage, sp->size);
    sp->shared = sp->stage = NULL;
}

static int send_request(struct sb_spawner *sp, size_t len, const int fds[5])
{
    struct sp_request req = {SPAWNER_MAGIC, (uint32_t)len};
    struct iovec iov = {&req, sizeof(req)};
    union {
        char buf[CMSG_SPACE(5 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    memset(&u, 0, sizeof(u));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = u.buf;
    mh.msg_controllen = sizeof(u.buf);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(5 * sizeof(int));
    memcpy(CMSG_DATA(cm), fds, 5 * sizeof(int));
    ssize_t w;
    do {
        w = sendmsg(sp->sock, &mh, MSG_NOSIGNAL);
    } while (w < 0 && errno == EINTR);
    return w == (ssize_t)sizeof(req) ? 0 : w < 0 ? -errno : -EIO;
}

/* The answer: the pid (> 0) with *pidfd, or -errno (clone failed in the
 * spawner: the answer to this request), or 1 when the spawner is broken. */
static int read_reply(struct sb_spawner *sp, int *pidfd, int *err)
{
    struct sp_reply rep;
    struct iovec iov = {&rep, sizeof(rep)};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = u.buf;
    mh.msg_controllen = sizeof(u.buf);
    ssize_t n;
    do {
        n = recvmsg(sp->sock, &mh, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    *pidfd = -1;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); n > 0 && cm; cm = CMSG_NXTHDR(&mh, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
            cm->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(pidfd, CMSG_DATA(cm), sizeof(int));
    if (n != (ssize_t)sizeof(rep) || rep.magic != SPAWNER_MAGIC || rep.pid == 0 ||
        (rep.pid > 0 && *pidfd < 0)) {
        *err = n < 0 ? -errno : -EPROTO;
        if (*pidfd >= 0)
            close(*pidfd);
        *pidfd = -1;
        return 1;
    }
    return rep.pid;
}

long sb_spawner_clone(struct sb_spawner *sp, const struct sb_plan *p, const int fds[5], int *pidfd,
                      char *detail, size_t n)
{
    size_t len = 0;
    int rc = sb_plan_flatten(p, sp->shared, sp->size, (uintptr_t)sp->stage, &len);
    if (rc < 0) {
        snprintf(detail, n, "the job's sandbox plan exceeds %zu MiB", sp->size >> 20);
        return rc;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        int err = 0;
        if (sp->sock < 0 && (rc = spawner_fork(sp)) < 0) {
            snprintf(detail, n, "starting the sandbox spawner: %s", strerror(-rc));
            return rc;
        }
        if ((rc = send_request(sp, len, fds)) == 0) {
            rc = read_reply(sp, pidfd, &err);
            if (rc != 1) {
                if (rc < 0)
                    snprintf(detail, n, "clone: %s", strerror(-rc));
                return rc;
            }
            rc = err;
        }
        /* the spawner died or hung: replace it (a fork of this process now) */
        AL_LOG_WARN("sandbox.spawner", "pid=%d error=\"%s\" action=restart", (int)sp->pid,
                    strerror(-rc));
        spawner_end(sp, 1);
    }
    snprintf(detail, n, "the sandbox spawner does not answer: %s", strerror(-rc));
    return rc;
}
