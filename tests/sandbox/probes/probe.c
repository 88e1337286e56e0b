/*
 * probe: runs inside the sandbox for tests/integration/sandbox_escape.sh and
 * reports, one "name result" line each, what the kernel answered.
 *
 *   probe syscalls        never-allowed calls, calls off the allow-list, other ABIs
 *   probe ptrace          attach to a sibling and to init, init's /proc/1/mem
 *   probe fds             descriptors open beyond 0-2 ("none" if none)
 *   probe ids             real/effective/saved uid and gid, CapEff
 *   probe tiocsti         TIOCSTI, TIOCLINUX, TIOCSETD on stdin (TIOCSTI also with
 *                         high bits set), opening /dev/tty
 *   probe connect IP PORT a TCP connection attempt
 *   probe memhog          touches memory 1 MiB at a time until stopped
 *
 * Results: OK (the call succeeded), the errno name (EPERM, ENOSYS, ...),
 * or SIG<name> when the attempt died of a signal (in a forked child).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif
#ifndef SYS_fspick
#define SYS_fspick 433
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#endif
#ifndef SYS_io_uring_enter
#define SYS_io_uring_enter 426
#endif
#ifndef SYS_io_uring_register
#define SYS_io_uring_register 427
#endif

static void result(const char *name, long r, int err)
{
    if (r >= 0)
        printf("%s OK\n", name);
    else
        printf("%s %s\n", name, strerrorname_np(err) ? strerrorname_np(err) : "E?");
}

static void call(const char *name, long nr, long a, long b, long c, long d, long e)
{
    errno = 0;
    long r = syscall(nr, a, b, c, d, e);
    int err = errno;
    result(name, r, err);
}

/* Runs fn in a forked child and reports how it ended: a signal, or the
 * errno it exited with (0 = OK). */
static void in_child(const char *name, int (*fn)(void))
{
    pid_t p = fork();
    if (p == 0)
        _exit(fn());
    int st;
    if (p < 0 || waitpid(p, &st, 0) < 0) {
        printf("%s EPROBE\n", name);
    } else if (WIFSIGNALED(st)) {
        printf("%s SIG%s\n", name, sigabbrev_np(WTERMSIG(st)));
    } else {
        int e = WEXITSTATUS(st);
        printf("%s %s\n", name, e == 0 ? "OK" : strerrorname_np(e) ? strerrorname_np(e) : "E?");
    }
    fflush(stdout);
}

static int i386_getpid(void)
{
    long ret;
    __asm__ volatile("int $0x80"
                     : "=a"(ret)
                     : "a"(20L)
                     : "memory", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
                       "r14", "r15");
    return ret < 0 && ret > -4096 ? (int)-ret : 0;
}

static int clone_ns(long flags)
{
    long r = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (r == 0)
        _exit(0);
    if (r < 0)
        return errno;
    waitpid((pid_t)r, NULL, 0);
    return 0;
}

static int clone_newuser(void)
{
    return clone_ns(CLONE_NEWUSER);
}
static int clone_newns(void)
{
    return clone_ns(CLONE_NEWNS);
}
static int clone_newpid(void)
{
    return clone_ns(CLONE_NEWPID);
}
static int clone_newnet(void)
{
    return clone_ns(CLONE_NEWNET);
}
static int clone_plain(void)
{
    return clone_ns(0);
}

static int syscalls(void)
{
    /* never allowed: EPERM from the filter */
    call("ptrace", SYS_ptrace, PTRACE_TRACEME, 0, 0, 0, 0);
    call("process_vm_readv", SYS_process_vm_readv, 1, 0, 0, 0, 0);
    call("process_vm_writev", SYS_process_vm_writev, 1, 0, 0, 0, 0);
    call("pidfd_getfd", SYS_pidfd_getfd, 0, 0, 0, 0, 0);
    call("keyctl", SYS_keyctl, 0, 0, 0, 0, 0);
    call("add_key", SYS_add_key, (long)"user", (long)"k", (long)"v", 1, -2);
    call("request_key", SYS_request_key, (long)"user", (long)"k", 0, 0, 0);
    call("userfaultfd", SYS_userfaultfd, 0, 0, 0, 0, 0);
    call("io_uring_setup", SYS_io_uring_setup, 1, 0, 0, 0, 0);
    call("io_uring_enter", SYS_io_uring_enter, 0, 0, 0, 0, 0);
    call("io_uring_register", SYS_io_uring_register, 0, 0, 0, 0, 0);
    call("bpf", SYS_bpf, 0, 0, 0, 0, 0);
    call("perf_event_open", SYS_perf_event_open, 0, 0, -1, -1, 0);
    call("mount", SYS_mount, (long)"none", (long)"/tmp", (long)"tmpfs", 0, 0);
    call("umount2", SYS_umount2, (long)"/tmp", 0, 0, 0, 0);
    call("pivot_root", SYS_pivot_root, (long)"/tmp", (long)"/tmp", 0, 0, 0);
    call("fsopen", SYS_fsopen, (long)"tmpfs", 0, 0, 0, 0);
    call("fsconfig", SYS_fsconfig, 0, 0, 0, 0, 0);
    call("fsmount", SYS_fsmount, 0, 0, 0, 0, 0);
    call("fspick", SYS_fspick, -100, (long)"/", 0, 0, 0);
    call("move_mount", SYS_move_mount, -100, (long)"/tmp", -100, (long)"/", 0);
    call("open_tree", SYS_open_tree, -100, (long)"/", 0, 0, 0);
    call("mount_setattr", SYS_mount_setattr, -100, (long)"/", 0, 0, 0);
    call("unshare", SYS_unshare, CLONE_NEWUSER, 0, 0, 0, 0);
    call("setns", SYS_setns, 0, 0, 0, 0, 0);
    in_child("clone_newuser", clone_newuser);
    in_child("clone_newns", clone_newns);
    in_child("clone_newpid", clone_newpid);
    in_child("clone_newnet", clone_newnet);
    call("clone3", SYS_clone3, 0, 0, 0, 0, 0);
    call("personality_change", SYS_personality, PER_LINUX32, 0, 0, 0, 0);
    /* off the allow-list: ENOSYS from the filter (the kernel would say EPERM) */
    call("acct", SYS_acct, (long)"/tmp/acct", 0, 0, 0, 0);
    call("kexec_load", SYS_kexec_load, 0, 0, 0, 0, 0);
    call("swapon", SYS_swapon, (long)"/tmp/swap", 0, 0, 0, 0);
    call("chroot", SYS_chroot, (long)"/tmp", 0, 0, 0, 0);
    call("init_module", SYS_init_module, 0, 0, 0, 0, 0);
    /* other ABIs */
    call("x32_getpid", 0x40000000L | SYS_getpid, 0, 0, 0, 0, 0);
    fflush(stdout);
    in_child("i386_getpid", i386_getpid);
    /* still allowed */
    in_child("clone_plain", clone_plain);
    call("personality_query", SYS_personality, 0xffffffffL, 0, 0, 0, 0);
    call("getpid", SYS_getpid, 0, 0, 0, 0, 0);
    return 0;
}

/* errno right after a call (arguments are evaluated in any order). */
#define REPORT(name, expr)                                                                         \
    do {                                                                                           \
        errno = 0;                                                                                 \
        long r_ = (long)(expr);                                                                    \
        result(name, r_, errno);                                                                   \
    } while (0)

static int ptrace_sibling(void)
{
    pid_t child = fork();
    if (child == 0) {
        for (;;)
            pause();
    }
    REPORT("ptrace_attach", ptrace(PTRACE_ATTACH, child, 0, 0));
    REPORT("ptrace_seize", ptrace(PTRACE_SEIZE, child, 0, 0));
    REPORT("ptrace_init", ptrace(PTRACE_ATTACH, 1, 0, 0));
    /* init holds a copy of the executor's memory: never readable */
    REPORT("proc_init_mem", open("/proc/1/mem", O_RDONLY));
    REPORT("proc_init_environ", open("/proc/1/environ", O_RDONLY));
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return 0;
}

static int fds(void)
{
    int any = 0;
    long max = sysconf(_SC_OPEN_MAX);
    for (int fd = 3; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
        if (fcntl(fd, F_GETFD) >= 0) {
            printf("%sfd%d", any ? " " : "", fd);
            any = 1;
        }
    printf("%s\n", any ? "" : "none");
    return 0;
}

static int ids(void)
{
    uid_t r, e, s;
    gid_t gr, ge, gs;
    char line[256];
    getresuid(&r, &e, &s);
    getresgid(&gr, &ge, &gs);
    printf("uid=%u,%u,%u gid=%u,%u,%u", r, e, s, gr, ge, gs);
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "CapEff:", 7) == 0) {
            char *v = line + 7 + strspn(line + 7, " \t");
            v[strcspn(v, "\n")] = '\0';
            printf(" capeff=%s", v);
        }
    if (f)
        fclose(f);
    printf("\n");
    return 0;
}

static int tiocsti(void)
{
    char c = 'x';
    REPORT("tiocsti", syscall(SYS_ioctl, 0, TIOCSTI, &c));
    REPORT("tiocsti_high_bits", syscall(SYS_ioctl, 0, 0x100000000UL | TIOCSTI, &c));
    REPORT("tioclinux", syscall(SYS_ioctl, 0, TIOCLINUX, &c));
    int ldisc = 0;
    REPORT("tiocsetd", syscall(SYS_ioctl, 0, TIOCSETD, &ldisc));
    REPORT("dev_tty_open", open("/dev/tty", O_RDWR));
    return 0;
}

static int connect_to(const char *ip, const char *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
        result("connect", -1, errno);
        return 0;
    }
    REPORT("connect", connect(s, (struct sockaddr *)&sa, sizeof(sa)));
    return 0;
}

static int memhog(void)
{
    for (;;) {
        char *p = malloc(1 << 20);
        if (!p) {
            printf("malloc failed\n");
            return 1;
        }
        memset(p, 0x5a, 1 << 20);
    }
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && strcmp(argv[1], "syscalls") == 0)
        return syscalls();
    if (argc >= 2 && strcmp(argv[1], "ptrace") == 0)
        return ptrace_sibling();
    if (argc >= 2 && strcmp(argv[1], "fds") == 0)
        return fds();
    if (argc >= 2 && strcmp(argv[1], "ids") == 0)
        return ids();
    if (argc >= 2 && strcmp(argv[1], "tiocsti") == 0)
        return tiocsti();
    if (argc >= 4 && strcmp(argv[1], "connect") == 0)
        return connect_to(argv[2], argv[3]);
    if (argc >= 2 && strcmp(argv[1], "memhog") == 0)
        return memhog();
    fprintf(stderr, "usage: probe syscalls|ptrace|fds|ids|tiocsti|connect IP PORT|memhog\n");
    return 2;
}
