/*
 * priv: what airlock-egress gives up once it has loaded what it needs.
 *
 * eg_priv_drop(), in this order: the capability bounding set emptied
 * (PR_CAPBSET_DROP, while still allowed to), the ambient set cleared,
 * setgroups(0), setresgid and setresuid to the target ids (all three ids:
 * no way back; the kernel then clears the permitted and effective sets),
 * the inheritable set cleared (capset), PR_SET_NO_NEW_PRIVS,
 * PR_SET_DUMPABLE 0 (no ptrace or /proc/PID/mem by same-uid processes, no
 * core), RLIMIT_CORE 0, and PR_SET_PDEATHSIG SIGKILL (set after the uid
 * change, which clears it; if the parent is already gone the process exits).
 * When the process does not run as root and already runs as the target ids
 * the id change is skipped; when it would need root and has not got it,
 * start-up fails.
 *
 * eg_priv_verify() checks the result with capget (effective, permitted and
 * inheritable sets empty), the bounding and ambient sets, the ids, the
 * no-new-privs flag and dumpable.
 *
 * eg_seccomp_load() installs the allow-list below (libseccomp). Default
 * action ERRNO(EPERM); other ABIs (x32, i386) kill the process. What the
 * running proxy needs, and why:
 *   read, write, readv, writev, close          sockets; log lines (stderr)
 *   recvfrom, sendto, recvmsg, sendmsg         sockets, control socket
 *   accept4                                    the sandbox's listeners
 *   socket (AF_INET, AF_INET6 only)            upstream TCP, c-ares UDP/TCP
 *   connect, shutdown, setsockopt, getsockopt,
 *   getsockname, getpeername                   sockets
 *   fcntl                                      O_NONBLOCK on taken sockets
 *   ioctl (FIONREAD, FIONBIO only)             c-ares
 *   epoll_wait, epoll_pwait, epoll_ctl         libev
 *   clock_gettime, gettimeofday, time          clocks (vDSO fallbacks)
 *   mmap, mprotect (never PROT_EXEC), munmap,
 *   mremap, brk, madvise                       malloc, locked secret pages
 *   mlock, munlock                             al_secure_alloc
 *   getrandom                                  OpenSSL's DRBG (keys, serials)
 *   futex                                      OpenSSL and libc locks
 *   rt_sigprocmask, rt_sigaction, rt_sigreturn signal masks (libc, abort)
 *   getpid, gettid, tgkill                     abort() / raise()
 *   sysinfo                                    libc qsort() sizing
 *   prlimit64 (reading only)                   libc getrlimit
 *   fstat, newfstatat, lseek                   libc stdio on stderr
 *   exit, exit_group, restart_syscall          ending, interrupted calls
 * open and openat fail with ENOENT instead: c-ares looks at /etc/hosts
 * before DNS and moves on when it is absent, so names come from
 * --resolve or DNS only, and no file can be opened. Nothing else: no
 * fork, exec, ptrace, bind, listen or socketpair, no other address family,
 * no executable memory.
 *
 * Sanitizer builds (ASan/LSan, __SANITIZE_ADDRESS__): the runtime's leak
 * check at exit stops the world with a tracer (clone, ptrace, wait4,
 * prctl, sched_yield), reads /proc/self/maps and /proc/self/task (open and
 * openat allowed read-only there, getdents64, readlink) and writes reports;
 * those calls are added to the list in that build only.
 *
 * Lifecycle: called once from main, before the event loop runs.
 */
#ifndef EG_PRIV_H
#define EG_PRIV_H

#include <stddef.h>
#include <sys/types.h>

/* Returns 0 or a negative code with a reason in err. */
int eg_priv_drop(uid_t uid, gid_t gid, char *err, size_t n);
int eg_priv_verify(uid_t uid, gid_t gid, char *err, size_t n);
int eg_seccomp_load(char *err, size_t n);

#endif
