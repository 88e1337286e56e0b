/*
 * ns: user namespace id maps (parent side), and the child's namespace and
 * privilege steps.
 *
 * Id maps: inside 0 -> id_base and inside uid -> id_base + uid (gids alike),
 * written by the parent, which is root in the initial namespace. Inside root
 * exists only while the child builds its filesystem; no host file is owned
 * by id_base, and host root appears as the overflow id. Supplementary groups
 * are cleared by the child with setgroups(), so the caller's groups (e.g.
 * root's group 0) do not follow it in.
 *
 * Dropping privileges, in this order (each step needs the capability the
 * previous ones keep): setgroups(none), setresgid, securebits locked
 * (no root magic, no keep-caps, no ambient raise), every capability out of
 * the bounding set, ambient set cleared, setresuid (empties effective and
 * permitted), capset(0) for the inheritable set, no_new_privs, not dumpable.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sb_int.h"

static int write_file(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC), rc = 0;
    if (fd < 0)
        return -errno;
    ssize_t w = write(fd, data, len);
    if (w < 0)
        rc = -errno;
    else if ((size_t)w != len)
        rc = -EIO;
    close(fd);
    return rc;
}

int sb_ns_write_maps(pid_t pid, uint32_t uid, uint32_t gid, uint32_t base)
{
    char path[64], map[96];
    int n = snprintf(map, sizeof(map), "0 %u 1\n%u %u 1\n", base, uid, base + uid);
    snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
    int rc = write_file(path, map, (size_t)n);
    if (rc < 0)
        return rc;
    n = snprintf(map, sizeof(map), "0 %u 1\n%u %u 1\n", base, gid, base + gid);
    snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
    return write_file(path, map, (size_t)n);
}

/* The parent writes one byte once the maps are written and the child is in
 * its cgroups; end of file means it gave up. */
static int wait_parent(void)
{
    char go = 0;
    ssize_t r;
    do {
        r = read(4, &go, 1);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    if (r == 0 || go != 'G')
        return -ECANCELED;
    close(4);
    return 0;
}

#define STEP(s, expr)                                                                              \
    do {                                                                                           \
        if ((expr) < 0) {                                                                          \
            f->step = (s);                                                                         \
            return -errno;                                                                         \
        }                                                                                          \
    } while (0)

int sb_ns_enter(const struct sb_plan *p, struct sb_fail *f)
{
    STEP(SB_STEP_PDEATHSIG, prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
    int rc = wait_parent();
    if (rc < 0) {
        f->step = SB_STEP_SYNC;
        return rc;
    }
    /* the maps are written: become the namespace's root (until now we had
     * the caller's unmapped ids, which can create no file) */
    STEP(SB_STEP_NS_ROOT, syscall(SYS_setresgid, 0, 0, 0));
    STEP(SB_STEP_NS_ROOT, syscall(SYS_setresuid, 0, 0, 0));
    STEP(SB_STEP_SETSID, setsid());
    /* after the parent moved us into the job's cgroups: that is our root */
    STEP(SB_STEP_CGROUPNS, unshare(CLONE_NEWCGROUP));
    STEP(SB_STEP_HOSTNAME, sethostname(p->hostname, strlen(p->hostname)));
    return 0;
}

/* Fields 48-51 of /proc/self/stat: arg_start, arg_end, env_start, env_end. */
static int memory_layout(unsigned long v[4])
{
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the name (field 2) may hold anything */
    int field = 2, got = 0;
    for (; p && *p && got < 4; p++) {
        if (*p != ' ')
            continue;
        field++;
        if (field >= 48 && field <= 51)
            v[got++] = strtoul(p + 1, NULL, 10);
    }
    if (got < 4) {
        errno = EPROTO;
        return -1;
    }
    return 0;
}

int sb_ns_scrub_identity(struct sb_fail *f)
{
    static const char name[] = "sandbox-init";
    unsigned long v[4];
    if (memory_layout(v) < 0) {
        f->step = SB_STEP_IDENTITY;
        return -errno;
    }
    for (int i = 0; i < 4; i += 2) {
        if (v[i + 1] < v[i] || v[i + 1] - v[i] > (64UL << 20)) {
            f->step = SB_STEP_IDENTITY;
            return -EPROTO; /* not the layout the kernel describes for us */
        }
        volatile char *s = (volatile char *)v[i];
        for (unsigned long k = 0; k < v[i + 1] - v[i]; k++)
            s[k] = i == 0 && k < sizeof(name) ? name[k] : '\0';
    }
    STEP(SB_STEP_IDENTITY, prctl(PR_SET_NAME, name, 0, 0, 0));
    return 0;
}

static int drop_bounding_set(int cap_last)
{
    for (int cap = 0; cap <= cap_last; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            return -1;
    return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

static int clear_capabilities(void)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    memset(data, 0, sizeof(data));
    return (int)syscall(SYS_capset, &hdr, data);
}

int sb_ns_drop_privileges(const struct sb_plan *p, struct sb_fail *f)
{
    const unsigned long secbits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED |
                                  SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
                                  SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    /* raw system calls: glibc's set*id wrappers would try to broadcast the
     * change to threads the parent had, which do not exist here */
    STEP(SB_STEP_GROUPS, syscall(SYS_setgroups, 0, NULL));
    STEP(SB_STEP_SETGID, syscall(SYS_setresgid, p->gid, p->gid, p->gid));
    STEP(SB_STEP_SECUREBITS, prctl(PR_SET_SECUREBITS, secbits, 0, 0, 0));
    STEP(SB_STEP_CAPS_BOUND, drop_bounding_set(p->cap_last));
    STEP(SB_STEP_SETUID, syscall(SYS_setresuid, p->uid, p->uid, p->uid));
    STEP(SB_STEP_CAPS_CLEAR, clear_capabilities());
    STEP(SB_STEP_NO_NEW_PRIVS, prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
    STEP(SB_STEP_DUMPABLE, prctl(PR_SET_DUMPABLE, 0, 0, 0, 0));
    return 0;
}
