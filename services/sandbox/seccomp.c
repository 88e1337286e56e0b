/*
 * seccomp: the sandbox's system-call allow-list (libseccomp), compiled once
 * per host into classic BPF; each sandbox child only loads it.
 *
 * Policy:
 *   - Only the native x86_64 ABI. libseccomp sends other architectures (the
 *     i386 ABI through int 0x80) and x32 syscall numbers (>= 0x40000000) to
 *     the bad-architecture action, set here to ERRNO(ENOSYS).
 *   - Default: ERRNO(ENOSYS), so that programs fall back as on an older
 *     kernel (clone3 -> clone, statx -> fstat). clone3 is deliberately not
 *     allowed: its flags live in memory seccomp cannot inspect.
 *   - Never allowed, ERRNO(EPERM): see `deny` below (ptrace, cross-process
 *     memory, keyrings, userfaultfd, io_uring, bpf, perf, every mount call
 *     old and new, unshare/setns, pidfd_getfd), clone with any namespace
 *     flag, ioctl TIOCSTI, TIOCLINUX and TIOCSETD, personality other than the
 *     query.
 *   - Argument filters compare the low 32 bits wherever the kernel truncates
 *     the argument to an int (ioctl's cmd, personality, socket's family), so
 *     high garbage bits cannot slip a value past them.
 *   - Everything else a shell, coreutils, python, git, tar or a compiler
 *     needs is listed in `allow`; sockets only for AF_UNIX, AF_INET,
 *     AF_INET6 and AF_NETLINK. The network namespace, not this list, keeps
 *     the job in: the socket calls stay allowed so that ordinary clients
 *     (curl, python's urllib, git, node; tests/unit/sandbox/test_proxy.c)
 *     reach the egress proxy's listeners on 127.0.0.1 and [::1].
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "al_err.h"
#include "sb_int.h"

/* clang-format off */
static const char *const allow[] = {
    /* files and descriptors */
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "lseek", "close", "close_range", "open", "openat", "openat2", "creat", "access",
    "faccessat", "faccessat2", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
    "readlink", "readlinkat", "getdents", "getdents64", "getcwd", "chdir", "fchdir", "mkdir",
    "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat",
    "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown",
    "fchownat", "umask", "truncate", "ftruncate", "fallocate", "fsync", "fdatasync", "sync",
    "syncfs", "sync_file_range", "utime", "utimes", "utimensat", "futimesat", "mknod", "mknodat",
    "dup", "dup2", "dup3", "pipe", "pipe2", "fcntl", "flock", "select", "pselect6", "poll", "ppoll",
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
    "eventfd", "eventfd2", "signalfd", "signalfd4", "timerfd_create", "timerfd_settime",
    "timerfd_gettime", "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    "sendfile", "splice", "tee", "vmsplice", "copy_file_range", "readahead", "fadvise64",
    "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr", "setxattr",
    "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "memfd_create",
    /* memory */
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "mlock", "mlock2",
    "munlock", "mlockall", "munlockall", "membarrier", "pkey_mprotect", "pkey_alloc", "pkey_free",
    "mbind", "get_mempolicy", "set_mempolicy",
    /* processes (set*id can only move between ids the process already has) */
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "kill", "tkill",
    "tgkill", "getpid", "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid",
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "setuid",
    "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid", "setgroups",
    "capget", "capset", "prctl", "arch_prctl", "set_tid_address", "set_robust_list",
    "get_robust_list", "rseq", "futex", "futex_waitv", "futex_wake", "futex_wait", "futex_requeue",
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam", "sched_setparam",
    "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max", "sched_get_priority_min",
    "sched_rr_get_interval", "sched_getattr", "sched_setattr", "getpriority", "setpriority",
    "ioprio_get", "ioprio_set", "getrlimit", "setrlimit", "prlimit64", "getrusage", "times",
    "uname", "sysinfo", "getcpu", "getrandom", "pidfd_open", "pidfd_send_signal", "seccomp",
    "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self", "restart_syscall",
    /* signals and time */
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait",
    "rt_sigqueueinfo", "rt_tgsigqueueinfo", "rt_sigsuspend", "sigaltstack", "pause", "alarm",
    "getitimer", "setitimer", "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres",
    "gettimeofday", "time", "timer_create", "timer_settime", "timer_gettime", "timer_getoverrun",
    "timer_delete",
    /* System V and POSIX IPC (private ipc namespace) */
    "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl", "msgget",
    "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
    "mq_notify", "mq_getsetattr",
    /* sockets (socket itself is filtered below) */
    "socketpair", "connect", "accept", "accept4", "bind", "listen", "getsockname", "getpeername",
    "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "setsockopt",
    "getsockopt",
    /* asynchronous I/O (not io_uring) */
    "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
};
/* clang-format on */

/* clang-format off */
static const char *const deny[] = {
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "keyctl", "add_key",
    "request_key", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf",
    "perf_event_open", "mount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "open_tree_attr", "mount_setattr", "unshare", "setns",
};
/* clang-format on */

static const uint64_t ns_flags[] = {CLONE_NEWNS,   CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC,
                                    CLONE_NEWUSER, CLONE_NEWPID,    CLONE_NEWNET};

#define LO32 0xffffffffu

/* Adds one rule; a syscall libseccomp does not know on this architecture
 * (older libseccomp, newer kernel) is skipped: the default denies it. */
static int rule(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n,
                const struct scmp_arg_cmp *cmp, char *err, size_t errlen)
{
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR || nr < 0)
        return 0;
    int rc = seccomp_rule_add_array(ctx, action, nr, n, cmp);
    if (rc < 0) {
        snprintf(err, errlen, "seccomp rule for %s: %s", name, strerror(-rc));
        return AL_ERR_CONFIG;
    }
    return 0;
}

static int add_lists(scmp_filter_ctx ctx, char *err, size_t errlen)
{
    int rc = 0;
    for (size_t i = 0; i < sizeof(allow) / sizeof(allow[0]) && rc == 0; i++)
        rc = rule(ctx, SCMP_ACT_ALLOW, allow[i], 0, NULL, err, errlen);
    for (size_t i = 0; i < sizeof(deny) / sizeof(deny[0]) && rc == 0; i++)
        rc = rule(ctx, SCMP_ACT_ERRNO(EPERM), deny[i], 0, NULL, err, errlen);
    return rc;
}

/* clone: EPERM with any namespace flag, allowed without. */
static int add_clone(scmp_filter_ctx ctx, char *err, size_t errlen)
{
    uint64_t all = 0;
    for (size_t i = 0; i < sizeof(ns_flags) / sizeof(ns_flags[0]); i++) {
        struct scmp_arg_cmp c = SCMP_A0(SCMP_CMP_MASKED_EQ, ns_flags[i], ns_flags[i]);
        int rc = rule(ctx, SCMP_ACT_ERRNO(EPERM), "clone", 1, &c, err, errlen);
        if (rc < 0)
            return rc;
        all |= ns_flags[i];
    }
    struct scmp_arg_cmp c = SCMP_A0(SCMP_CMP_MASKED_EQ, all, 0);
    return rule(ctx, SCMP_ACT_ALLOW, "clone", 1, &c, err, errlen);
}

/* ioctl: EPERM for TIOCSTI and TIOCLINUX (terminal injection), and
 * TIOCSETD (line disciplines are a recurring kernel attack surface and no
 * ordinary tool sets one), compared on the low 32 bits: the kernel takes cmd
 * as an unsigned int. Allowed otherwise. The catch-all compares arg 0
 * (always true) so that libseccomp tests the denials on arg 1 first; a unit
 * test checks the order holds. */
static int add_ioctl(scmp_filter_ctx ctx, char *err, size_t errlen)
{
    static const uint64_t denied[] = {TIOCSTI, TIOCLINUX, TIOCSETD};
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++) {
        struct scmp_arg_cmp c = SCMP_A1(SCMP_CMP_MASKED_EQ, LO32, denied[i]);
        int rc = rule(ctx, SCMP_ACT_ERRNO(EPERM), "ioctl", 1, &c, err, errlen);
        if (rc < 0)
            return rc;
    }
    struct scmp_arg_cmp any = SCMP_A0(SCMP_CMP_GE, 0);
    return rule(ctx, SCMP_ACT_ALLOW, "ioctl", 1, &any, err, errlen);
}

/* personality: only the query (0xffffffff); any change is EPERM. */
static int add_personality(scmp_filter_ctx ctx, char *err, size_t errlen)
{
    struct scmp_arg_cmp query = SCMP_A0(SCMP_CMP_MASKED_EQ, LO32, 0xffffffffu);
    struct scmp_arg_cmp other = SCMP_A0(SCMP_CMP_NE, 0xffffffffu);
    int rc = rule(ctx, SCMP_ACT_ALLOW, "personality", 1, &query, err, errlen);
    if (rc == 0)
        rc = rule(ctx, SCMP_ACT_ERRNO(EPERM), "personality", 1, &other, err, errlen);
    return rc;
}

static int add_socket(scmp_filter_ctx ctx, char *err, size_t errlen)
{
    static const int families[] = {AF_UNIX, AF_INET, AF_INET6, AF_NETLINK};
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        struct scmp_arg_cmp c = SCMP_A0(SCMP_CMP_MASKED_EQ, LO32, (uint64_t)families[i]);
        int rc = rule(ctx, SCMP_ACT_ALLOW, "socket", 1, &c, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Exports the filter's BPF through a memfd into a heap copy. */
static int export_bpf(scmp_filter_ctx ctx, struct sock_fprog *out, char *err, size_t errlen)
{
    int fd = memfd_create("airlock-seccomp", MFD_CLOEXEC), rc = 0;
    if (fd < 0) {
        snprintf(err, errlen, "memfd_create: %s", strerror(errno));
        return -errno;
    }
    int erc = seccomp_export_bpf(ctx, fd);
    off_t len = lseek(fd, 0, SEEK_END);
    if (erc < 0 || len <= 0 || len % sizeof(struct sock_filter) != 0 ||
        len / sizeof(struct sock_filter) > BPF_MAXINSNS) {
        snprintf(err, errlen, "seccomp_export_bpf failed (%s)", erc < 0 ? strerror(-erc) : "size");
        rc = AL_ERR_CONFIG;
        goto out;
    }
    struct sock_filter *f = malloc((size_t)len);
    if (!f) {
        rc = AL_ERR_NOMEM;
        goto out;
    }
    if (pread(fd, f, (size_t)len, 0) != len) {
        snprintf(err, errlen, "reading the exported filter back failed");
        free(f);
        rc = AL_ERR_CONFIG;
        goto out;
    }
    out->filter = f;
    out->len = (unsigned short)(len / sizeof(struct sock_filter));
out:
    close(fd);
    return rc;
}

int sb_seccomp_build(struct sock_fprog *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(ENOSYS));
    if (!ctx) {
        snprintf(err, errlen, "seccomp_init failed");
        return AL_ERR_NOMEM;
    }
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_ERRNO(ENOSYS));
    if (rc < 0) {
        snprintf(err, errlen, "seccomp bad-architecture action: %s", strerror(-rc));
        rc = AL_ERR_CONFIG;
        goto out;
    }
    /* a binary tree of syscall numbers: fewer BPF instructions per call */
    (void)seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    rc = add_lists(ctx, err, errlen);
    if (rc == 0)
        rc = add_clone(ctx, err, errlen);
    if (rc == 0)
        rc = add_ioctl(ctx, err, errlen);
    if (rc == 0)
        rc = add_personality(ctx, err, errlen);
    if (rc == 0)
        rc = add_socket(ctx, err, errlen);
    if (rc == 0)
        rc = export_bpf(ctx, out, err, errlen);
out:
    seccomp_release(ctx);
    return rc;
}

void sb_seccomp_free(struct sock_fprog *p)
{
    if (!p)
        return;
    free(p->filter);
    p->filter = NULL;
    p->len = 0;
}

int sb_seccomp_load(const struct sock_fprog *p)
{
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, p) < 0)
        return -errno;
    return 0;
}
