/* Unit tests for sandbox/seccomp.c: the filter builds, loads in a forked
 * child, and there the never-allowed calls get EPERM, calls off the list
 * ENOSYS (clone3 among them), argument filters hold against high garbage
 * bits, other ABIs are refused, and ordinary calls still work. */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "sb_int.h"

#ifndef SYS_clone3
#define SYS_clone3 435
#endif

/* What the child measured: the raw return (-errno on failure). */
struct probe {
    const char *name;
    long want; /* expected -errno; 1 = must succeed (>= 0) */
    long got;
};

static long sys(long nr, long a, long b, long c, long d, long e)
{
    long r = syscall(nr, a, b, c, d, e);
    return r < 0 ? -errno : r;
}

/* The i386 ABI's getpid (20) through int 0x80, in a grandchild: where the
 * host has no i386 ABI (IA32 emulation off, some hypervisors) the kernel
 * answers SIGSEGV, which is refused too. The default SIGSEGV action is
 * restored with a raw call (a sanitizer would catch the signal). */
static long int80_getpid(void)
{
    pid_t p = fork();
    if (p == 0) {
        struct {
            void *handler;
            unsigned long flags;
            void *restorer;
            uint64_t mask;
        } dfl = {SIG_DFL, 0, NULL, 0};
        syscall(SYS_rt_sigaction, SIGSEGV, &dfl, NULL, 8);
        long ret;
        /* the compat entry may zero r8-r15 on the way back */
        __asm__ volatile("int $0x80"
                         : "=a"(ret)
                         : "a"(20L)
                         : "memory", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
                           "r13", "r14", "r15");
        _exit(ret == -ENOSYS ? 0 : ret < 0 ? 2 : 3);
    }
    int st;
    if (p < 0 || waitpid(p, &st, 0) < 0)
        return -999;
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV)
        return -ENOSYS;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? -ENOSYS : 1;
}

static long fork_raw(unsigned long flags)
{
    long r = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (r == 0)
        _exit(0);
    if (r < 0)
        return -errno;
    waitpid((pid_t)r, NULL, 0);
    return r;
}

static void run_probes(struct probe *p, size_t n)
{
    int null = open("/dev/null", O_RDWR);
    for (size_t i = 0; i < n; i++) {
        const char *k = p[i].name;
        long r = -999;
        if (!strcmp(k, "getpid"))
            r = sys(SYS_getpid, 0, 0, 0, 0, 0);
        else if (!strcmp(k, "ptrace"))
            r = sys(SYS_ptrace, 0 /* TRACEME */, 0, 0, 0, 0);
        else if (!strcmp(k, "unshare"))
            r = sys(SYS_unshare, CLONE_NEWUSER, 0, 0, 0, 0);
        else if (!strcmp(k, "setns"))
            r = sys(SYS_setns, -1, 0, 0, 0, 0);
        else if (!strcmp(k, "clone3"))
            r = sys(SYS_clone3, 0, 0, 0, 0, 0);
        else if (!strcmp(k, "io_uring_setup"))
            r = sys(SYS_io_uring_setup, 1, 0, 0, 0, 0);
        else if (!strcmp(k, "bpf"))
            r = sys(SYS_bpf, 0, 0, 0, 0, 0);
        else if (!strcmp(k, "perf_event_open"))
            r = sys(SYS_perf_event_open, 0, 0, -1, -1, 0);
        else if (!strcmp(k, "keyctl"))
            r = sys(SYS_keyctl, 0, 0, 0, 0, 0);
        else if (!strcmp(k, "userfaultfd"))
            r = sys(SYS_userfaultfd, 0, 0, 0, 0, 0);
        else if (!strcmp(k, "mount"))
            r = sys(SYS_mount, (long)"none", (long)"/", 0, 0, 0);
        else if (!strcmp(k, "process_vm_readv"))
            r = sys(SYS_process_vm_readv, getppid(), 0, 0, 0, 0);
        else if (!strcmp(k, "fsopen"))
            r = sys(SYS_fsopen, (long)"tmpfs", 0, 0, 0, 0);
        else if (!strcmp(k, "acct (not listed)"))
            r = sys(SYS_acct, 0, 0, 0, 0, 0);
        else if (!strcmp(k, "kexec_load (not listed)"))
            r = sys(SYS_kexec_load, 0, 0, 0, 0, 0);
        else if (!strcmp(k, "clone NEWUSER"))
            r = fork_raw(CLONE_NEWUSER);
        else if (!strcmp(k, "clone NEWNET"))
            r = fork_raw(CLONE_NEWNET);
        else if (!strcmp(k, "clone plain"))
            r = fork_raw(0);
        else if (!strcmp(k, "ioctl TIOCSTI"))
            r = sys(SYS_ioctl, null, TIOCSTI, (long)"x", 0, 0);
        else if (!strcmp(k, "ioctl TIOCSTI high bits"))
            r = sys(SYS_ioctl, null, (long)(0x100000000UL | TIOCSTI), (long)"x", 0, 0);
        else if (!strcmp(k, "ioctl TIOCLINUX"))
            r = sys(SYS_ioctl, null, TIOCLINUX, (long)"x", 0, 0);
        else if (!strcmp(k, "ioctl TCGETS"))
            r = sys(SYS_ioctl, null, TCGETS, 0, 0, 0);
        else if (!strcmp(k, "personality query"))
            r = sys(SYS_personality, 0xffffffffL, 0, 0, 0, 0);
        else if (!strcmp(k, "personality change"))
            r = sys(SYS_personality, PER_LINUX32, 0, 0, 0, 0);
        else if (!strcmp(k, "socket AF_INET"))
            r = sys(SYS_socket, AF_INET, SOCK_DGRAM, 0, 0, 0);
        else if (!strcmp(k, "socket AF_PACKET"))
            r = sys(SYS_socket, AF_PACKET, SOCK_RAW, 0, 0, 0);
        else if (!strcmp(k, "x32 getpid"))
            r = sys(0x40000000L | SYS_getpid, 0, 0, 0, 0, 0);
        else if (!strcmp(k, "i386 getpid (int 0x80)"))
            r = int80_getpid();
        p[i].got = r;
    }
}

static void test_filter(void)
{
    struct probe p[] = {
        {"getpid", 1, 0},
        {"ptrace", -EPERM, 0},
        {"unshare", -EPERM, 0},
        {"setns", -EPERM, 0},
        {"clone3", -ENOSYS, 0},
        {"io_uring_setup", -EPERM, 0},
        {"bpf", -EPERM, 0},
        {"perf_event_open", -EPERM, 0},
        {"keyctl", -EPERM, 0},
        {"userfaultfd", -EPERM, 0},
        {"mount", -EPERM, 0},
        {"process_vm_readv", -EPERM, 0},
        {"fsopen", -EPERM, 0},
        {"acct (not listed)", -ENOSYS, 0},
        {"kexec_load (not listed)", -ENOSYS, 0},
        {"clone NEWUSER", -EPERM, 0},
        {"clone NEWNET", -EPERM, 0},
        {"clone plain", 1, 0},
        {"ioctl TIOCSTI", -EPERM, 0},
        {"ioctl TIOCSTI high bits", -EPERM, 0},
        {"ioctl TIOCLINUX", -EPERM, 0},
        {"ioctl TCGETS", -ENOTTY, 0}, /* reaches the kernel */
        {"personality query", 1, 0},
        {"personality change", -EPERM, 0},
        {"socket AF_INET", 1, 0},
        {"socket AF_PACKET", -ENOSYS, 0},
        {"x32 getpid", -ENOSYS, 0},
        {"i386 getpid (int 0x80)", -ENOSYS, 0},
    };
    const size_t n = sizeof(p) / sizeof(p[0]);
    struct sock_fprog prog;
    char err[256];
    int fds[2];
    CU_ASSERT_EQUAL_FATAL(sb_seccomp_build(&prog, err, sizeof(err)), 0);
    CU_ASSERT_TRUE(prog.len > 100);
    CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        int ok = prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && sb_seccomp_load(&prog) == 0;
        if (ok)
            run_probes(p, n);
        for (size_t i = 0; i < n; i++)
            if (write(fds[1], &p[i].got, sizeof(long)) < 0 || !ok)
                _exit(2);
        _exit(0);
    }
    close(fds[1]);
    for (size_t i = 0; i < n; i++) {
        long got = -12345;
        if (read(fds[0], &got, sizeof(got)) != sizeof(got))
            got = -12345;
        int pass = p[i].want == 1 ? got >= 0 : got == p[i].want;
        if (!pass)
            fprintf(stderr, "  seccomp probe %s: want %ld got %ld\n", p[i].name, p[i].want, got);
        CU_ASSERT_TRUE(pass);
    }
    close(fds[0]);
    int st;
    CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
    CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    sb_seccomp_free(&prog);
    sb_seccomp_free(&prog); /* idempotent */
}

/* A classic-BPF interpreter for what libseccomp emits, to check the filter's
 * decisions for inputs this host cannot produce (other ABIs). */
static uint32_t bpf_run(const struct sock_fprog *p, const struct seccomp_data *d)
{
    uint32_t a = 0, x = 0, mem[BPF_MEMWORDS] = {0};
    for (size_t pc = 0; pc < p->len; pc++) {
        const struct sock_filter *f = &p->filter[pc];
        switch (f->code) {
        case BPF_LD | BPF_W | BPF_ABS:
            if (f->k + 4 > sizeof(*d) || f->k % 4)
                return 0xdeadbeef;
            memcpy(&a, (const char *)d + f->k, 4);
            break;
        case BPF_LD | BPF_IMM:
            a = f->k;
            break;
        case BPF_LDX | BPF_IMM:
            x = f->k;
            break;
        case BPF_LD | BPF_MEM:
            a = mem[f->k % BPF_MEMWORDS];
            break;
        case BPF_LDX | BPF_MEM:
            x = mem[f->k % BPF_MEMWORDS];
            break;
        case BPF_ST:
            mem[f->k % BPF_MEMWORDS] = a;
            break;
        case BPF_STX:
            mem[f->k % BPF_MEMWORDS] = x;
            break;
        case BPF_MISC | BPF_TAX:
            x = a;
            break;
        case BPF_MISC | BPF_TXA:
            a = x;
            break;
        case BPF_ALU | BPF_AND | BPF_K:
            a &= f->k;
            break;
        case BPF_JMP | BPF_JA:
            pc += f->k;
            break;
        case BPF_JMP | BPF_JEQ | BPF_K:
            pc += a == f->k ? f->jt : f->jf;
            break;
        case BPF_JMP | BPF_JGT | BPF_K:
            pc += a > f->k ? f->jt : f->jf;
            break;
        case BPF_JMP | BPF_JGE | BPF_K:
            pc += a >= f->k ? f->jt : f->jf;
            break;
        case BPF_JMP | BPF_JSET | BPF_K:
            pc += (a & f->k) ? f->jt : f->jf;
            break;
        case BPF_RET | BPF_K:
            return f->k;
        default:
            return 0xdeadbeef; /* an instruction this test does not know */
        }
    }
    return 0xdeadbeef;
}

static uint32_t decide(const struct sock_fprog *p, uint32_t arch, int nr, uint64_t a0, uint64_t a1)
{
    struct seccomp_data d;
    memset(&d, 0, sizeof(d));
    d.arch = arch;
    d.nr = nr;
    d.args[0] = a0;
    d.args[1] = a1;
    return bpf_run(p, &d);
}

static void test_decisions(void)
{
    struct sock_fprog prog;
    char err[256];
    const uint32_t x86_64 = AUDIT_ARCH_X86_64, allow = SECCOMP_RET_ALLOW;
    const uint32_t enosys = SECCOMP_RET_ERRNO | ENOSYS, eperm = SECCOMP_RET_ERRNO | EPERM;
    CU_ASSERT_EQUAL_FATAL(sb_seccomp_build(&prog, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_getpid, 0, 0), allow);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_ptrace, 0, 0), eperm);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_clone3, 0, 0), enosys);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_acct, 0, 0), enosys);
    /* other ABIs: i386 (getpid = 20, mount = 21) and x32 numbers */
    CU_ASSERT_EQUAL(decide(&prog, AUDIT_ARCH_I386, 20, 0, 0), enosys);
    CU_ASSERT_EQUAL(decide(&prog, AUDIT_ARCH_I386, 21, 0, 0), enosys);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, 0x40000000 | SYS_getpid, 0, 0), enosys);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, 0x40000000 | SYS_mount, 0, 0), enosys);
    CU_ASSERT_EQUAL(decide(&prog, AUDIT_ARCH_AARCH64, SYS_getpid, 0, 0), enosys);
    /* argument filters, with garbage in the upper 32 bits */
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_ioctl, 0, TIOCSTI), eperm);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_ioctl, 0, 0xdead00000000ULL | TIOCSTI), eperm);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_ioctl, 0, 0xdead00000000ULL | TIOCLINUX), eperm);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_ioctl, 0, 0x100000000ULL | TIOCSETD), eperm);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_ioctl, 3, TCGETS), allow);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_ioctl, 3, FIONREAD), allow);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_clone, SIGCHLD, 0), allow);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_clone, CLONE_VM | CLONE_VFORK | SIGCHLD, 0), allow);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_clone, CLONE_NEWUSER | SIGCHLD, 0), eperm);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_clone, CLONE_NEWPID, 0), eperm);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_clone, CLONE_NEWCGROUP | CLONE_THREAD, 0), eperm);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_personality, 0xffffffffULL, 0), allow);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_personality, 0, 0), eperm);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_personality, 0x0008, 0), eperm);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_socket, AF_UNIX, 0), allow);
    CU_ASSERT_EQUAL(decide(&prog, x86_64, SYS_socket, 0x100000000ULL | AF_INET6, 0), allow);
    CU_ASSERT_NOT_EQUAL(decide(&prog, x86_64, SYS_socket, AF_PACKET, 0), allow);
    CU_ASSERT_NOT_EQUAL(decide(&prog, x86_64, SYS_socket, 0x100000000ULL | AF_PACKET, 0), allow);
    sb_seccomp_free(&prog);
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("sandbox seccomp", NULL, NULL);
    CU_add_test(s, "allow-list loaded in a forked child", test_filter);
    CU_add_test(s, "decisions of the BPF program (every ABI)", test_decisions);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
