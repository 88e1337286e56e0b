/*
 * priv: privilege drop and the seccomp allow-list (see priv.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "al_err.h"
#include "priv.h"

#if defined(__SANITIZE_ADDRESS__)
#define EG_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EG_SANITIZED 1
#endif
#endif

static int failed(char *err, size_t n, const char *what)
{
    int e = errno;
    snprintf(err, n, "%s: %s", what, strerror(e));
    return e ? -e : AL_ERR_INVAL;
}

static int cap_get(struct __user_cap_data_struct d[2])
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    return (int)syscall(SYS_capget, &h, d);
}

static int cap_set(const struct __user_cap_data_struct d[2])
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    return (int)syscall(SYS_capset, &h, d);
}

static int last_cap(void)
{
    int c = CAP_LAST_CAP;
    /* a newer kernel may know more: probe upwards */
    while (c < 63 && prctl(PR_CAPBSET_READ, c + 1, 0, 0, 0) >= 0)
        c++;
    return c;
}

static int bset_dropped; /* the bounding set was emptied (we started as root) */

static int switch_ids(uid_t uid, gid_t gid, char *err, size_t n)
{
    uid_t ru, eu, su;
    gid_t rg, eg, sg;

    getresuid(&ru, &eu, &su);
    getresgid(&rg, &eg, &sg);
    if (eu != 0) {
        if (ru == uid && eu == uid && su == uid && rg == gid && eg == gid && sg == gid)
            return 0; /* already there (started unprivileged) */
        snprintf(err, n, "switching to uid %u gid %u needs root (running as uid %u)", (unsigned)uid,
                 (unsigned)gid, (unsigned)eu);
        return -EPERM;
    }
    for (int c = 0, last = last_cap(); c <= last; c++)
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
            return failed(err, n, "PR_CAPBSET_DROP");
    bset_dropped = 1;
    if (setgroups(0, NULL) < 0)
        return failed(err, n, "setgroups");
    if (setresgid(gid, gid, gid) < 0)
        return failed(err, n, "setresgid");
    if (setresuid(uid, uid, uid) < 0)
        return failed(err, n, "setresuid");
    return 0;
}

int eg_priv_drop(uid_t uid, gid_t gid, char *err, size_t n)
{
    struct __user_cap_data_struct d[2];
    struct rlimit no_core = {0, 0};
    pid_t parent = getppid();
    int rc;

    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return failed(err, n, "PR_CAP_AMBIENT_CLEAR_ALL");
    if ((rc = switch_ids(uid, gid, err, n)) < 0)
        return rc;
    memset(d, 0, sizeof(d));
    if (cap_set(d) < 0)
        return failed(err, n, "capset");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return failed(err, n, "PR_SET_NO_NEW_PRIVS");
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        return failed(err, n, "PR_SET_DUMPABLE");
    if (setrlimit(RLIMIT_CORE, &no_core) < 0)
        return failed(err, n, "RLIMIT_CORE");
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        return failed(err, n, "PR_SET_PDEATHSIG");
    if (getppid() != parent) {
        snprintf(err, n, "the parent process is gone");
        return -ESRCH;
    }
    return 0;
}

int eg_priv_verify(uid_t uid, gid_t gid, char *err, size_t n)
{
    struct __user_cap_data_struct d[2];
    uid_t ru, eu, su;
    gid_t rg, eg, sg;

    if (cap_get(d) < 0)
        return failed(err, n, "capget");
    for (int i = 0; i < 2; i++) {
        if (d[i].effective || d[i].permitted || d[i].inheritable) {
            snprintf(err, n, "capabilities left after the drop");
            return AL_ERR_AUTH;
        }
    }
    for (int c = 0, last = last_cap(); c <= last; c++) {
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0) > 0) {
            snprintf(err, n, "capability %d left in the ambient set", c);
            return AL_ERR_AUTH;
        }
        if (bset_dropped && prctl(PR_CAPBSET_READ, c, 0, 0, 0) > 0) {
            snprintf(err, n, "capability %d left in the bounding set", c);
            return AL_ERR_AUTH;
        }
    }
    getresuid(&ru, &eu, &su);
    getresgid(&rg, &eg, &sg);
    if (ru != uid || eu != uid || su != uid || rg != gid || eg != gid || sg != gid) {
        snprintf(err, n, "not running as uid %u gid %u", (unsigned)uid, (unsigned)gid);
        return AL_ERR_AUTH;
    }
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1 || prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) {
        snprintf(err, n, "no_new_privs or dumpable not set as required");
        return AL_ERR_AUTH;
    }
    return 0;
}

/* ------------------------------------------------------------- seccomp */

/* clang-format off */
static const char *const allow[] = {
    "read", "write", "readv", "writev", "close",
    "recvfrom", "sendto", "recvmsg", "sendmsg", "accept4",
    "connect", "shutdown", "setsockopt", "getsockopt", "getsockname", "getpeername",
    "fcntl",
    "epoll_wait", "epoll_pwait", "epoll_ctl",
    "clock_gettime", "gettimeofday", "time",
    "munmap", "mremap", "brk", "madvise", "mlock", "munlock",
    "getrandom", "futex",
    "rt_sigprocmask", "rt_sigaction", "rt_sigreturn",
    "getpid", "gettid", "tgkill", "sysinfo",
    "fstat", "newfstatat", "lseek",
    "exit", "exit_group", "restart_syscall",
};

#ifdef EG_SANITIZED
static const char *const allow_sanitizer[] = {
    "clone", "ptrace", "wait4", "prctl", "sched_yield", "getdents", "getdents64", "readlink",
    "readlinkat", "sigaltstack", "getppid", "nanosleep", "clock_nanosleep", "kill", "tkill",
    "uname", "getuid", "geteuid", "pipe2", "dup", "dup2", "set_robust_list", "rt_sigtimedwait",
};
#endif
/* clang-format on */

static int rule(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n,
                const struct scmp_arg_cmp *cmp, char *err, size_t en)
{
    int nr = seccomp_syscall_resolve_name(name);
    int rc;

    if (nr == __NR_SCMP_ERROR) {
        snprintf(err, en, "seccomp: unknown syscall %s", name);
        return AL_ERR_INVAL;
    }
    rc = seccomp_rule_add_array(ctx, action, nr, n, cmp);
    if (rc < 0) {
        snprintf(err, en, "seccomp: rule for %s: %s", name, strerror(-rc));
        return rc;
    }
    return 0;
}

static int add_rules(scmp_filter_ctx ctx, char *err, size_t n)
{
    struct scmp_arg_cmp inet = SCMP_A0(SCMP_CMP_EQ, AF_INET);
    struct scmp_arg_cmp inet6 = SCMP_A0(SCMP_CMP_EQ, AF_INET6);
    struct scmp_arg_cmp noexec = SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0);
    struct scmp_arg_cmp fionread = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, FIONREAD);
    struct scmp_arg_cmp fionbio = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, FIONBIO);
    struct scmp_arg_cmp readonly = SCMP_A2(SCMP_CMP_EQ, 0);
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < sizeof(allow) / sizeof(allow[0]); i++)
        rc = rule(ctx, SCMP_ACT_ALLOW, allow[i], 0, NULL, err, n);
    if (rc == 0)
        rc = rule(ctx, SCMP_ACT_ALLOW, "socket", 1, &inet, err, n);
    if (rc == 0)
        rc = rule(ctx, SCMP_ACT_ALLOW, "socket", 1, &inet6, err, n);
    if (rc == 0)
        rc = rule(ctx, SCMP_ACT_ALLOW, "mmap", 1, &noexec, err, n);
    if (rc == 0)
        rc = rule(ctx, SCMP_ACT_ALLOW, "mprotect", 1, &noexec, err, n);
    if (rc == 0)
        rc = rule(ctx, SCMP_ACT_ALLOW, "ioctl", 1, &fionread, err, n);
    if (rc == 0)
        rc = rule(ctx, SCMP_ACT_ALLOW, "ioctl", 1, &fionbio, err, n);
    if (rc == 0)
        rc = rule(ctx, SCMP_ACT_ALLOW, "prlimit64", 1, &readonly, err, n);
#ifdef EG_SANITIZED
    struct scmp_arg_cmp rdonly_at =
        SCMP_A2(SCMP_CMP_MASKED_EQ, O_ACCMODE | O_CREAT | O_TRUNC, O_RDONLY);
    struct scmp_arg_cmp rdonly =
        SCMP_A1(SCMP_CMP_MASKED_EQ, O_ACCMODE | O_CREAT | O_TRUNC, O_RDONLY);
    for (size_t i = 0; rc == 0 && i < sizeof(allow_sanitizer) / sizeof(allow_sanitizer[0]); i++)
        rc = rule(ctx, SCMP_ACT_ALLOW, allow_sanitizer[i], 0, NULL, err, n);
    if (rc == 0)
        rc = rule(ctx, SCMP_ACT_ALLOW, "openat", 1, &rdonly_at, err, n);
    if (rc == 0)
        rc = rule(ctx, SCMP_ACT_ALLOW, "open", 1, &rdonly, err, n);
#else
    if (rc == 0)
        rc = rule(ctx, SCMP_ACT_ERRNO(ENOENT), "openat", 0, NULL, err, n);
    if (rc == 0)
        rc = rule(ctx, SCMP_ACT_ERRNO(ENOENT), "open", 0, NULL, err, n);
#endif
    return rc;
}

int eg_seccomp_load(char *err, size_t n)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    int rc;

    if (!ctx) {
        snprintf(err, n, "seccomp_init failed");
        return AL_ERR_NOMEM;
    }
    rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    if (rc < 0)
        snprintf(err, n, "seccomp: bad-arch action: %s", strerror(-rc));
    if (rc == 0)
        rc = add_rules(ctx, err, n);
    if (rc == 0 && (rc = seccomp_load(ctx)) < 0)
        snprintf(err, n, "seccomp_load: %s", strerror(-rc));
    seccomp_release(ctx);
    return rc < 0 ? rc : 0;
}
