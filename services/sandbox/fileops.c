/*
 * fileops (child side): READ_FILE, WRITE_FILE and LIST_DIR, performed by the
 * sandbox's init after pivot_root, the privilege drop and seccomp, so they
 * see exactly what a command would: the read-only image and the workspace,
 * nothing of the host. Output goes to the parent as frames on stdout
 * (frame.c), the outcome as one status record.
 *
 * Opens never block and never follow a final symlink (O_NOFOLLOW |
 * O_NONBLOCK): a FIFO, device or socket planted in the workspace is refused
 * after fstat, a symlink is refused by name. Reads and listings resolve
 * paths inside the sandbox's view (RESOLVE_NO_MAGICLINKS: no /proc/.../fd
 * jumps). Writes resolve strictly beneath /workspace with no symlink
 * anywhere on the path (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV), after the parent already
 * refused "..". Sizes are capped (max_bytes, max_entries); RLIMIT_FSIZE and
 * the workspace tmpfs bound what a write can add.
 *
 * Nothing on a pseudo filesystem (/proc above all) is read, written or
 * listed, however the path got there: init is a copy of the caller's
 * process, and files like /proc/self/mem or /proc/self/environ describe
 * init itself. The check is on the opened descriptor (fstatfs), so no
 * symlink or ".." can route around it.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sb_int.h"

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

/* One buffer: the child is single-threaded and does one operation. */
static uint8_t buf[SB_FRAME_HDR + SB_CHUNK_MAX];

static int open2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve)
{
    struct open_how how;
    memset(&how, 0, sizeof(how));
    how.flags = flags;
    how.mode = mode;
    how.resolve = resolve;
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

/* Pseudo filesystems whose "regular files" are views of kernel or process
 * state. */
static int pseudo_fs(int fd)
{
    static const long types[] = {PROC_SUPER_MAGIC,   SYSFS_MAGIC,         DEVPTS_SUPER_MAGIC,
                                 CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, DEBUGFS_MAGIC,
                                 TRACEFS_MAGIC,      SECURITYFS_MAGIC,    BPF_FS_MAGIC};
    struct statfs sf;
    if (fstatfs(fd, &sf) < 0)
        return 1; /* unknown: refuse */
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if ((long)sf.f_type == types[i])
            return 1;
    return 0;
}

static int report_error(int step, int err, int ftype)
{
    struct sb_msg m = {SB_MSG_MAGIC, SB_MSG_FILE_ERROR, step, 0, err, 0, ftype, 0, 0};
    sb_msg_send(&m);
    return 1;
}

static int report_done(int64_t size, int truncated)
{
    struct sb_msg m = {SB_MSG_MAGIC, SB_MSG_FILE_DONE, 0, 0, 0, 0, 0, truncated, size};
    sb_msg_send(&m);
    return 0;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_file(const struct sb_plan *p)
{
    const uint64_t flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    int fd = open2(AT_FDCWD, p->path, flags, 0, RESOLVE_NO_MAGICLINKS);
    struct stat st;
    if (fd < 0)
        return report_error(SB_FSTEP_OPEN, errno, 0);
    if (fstat(fd, &st) < 0)
        return report_error(SB_FSTEP_STAT, errno, 0);
    if (!S_ISREG(st.st_mode))
        return report_error(SB_FSTEP_TYPE, 0, (int)(st.st_mode & S_IFMT));
    if (pseudo_fs(fd))
        return report_error(SB_FSTEP_TYPE, 0, SB_FTYPE_PSEUDO);
    int64_t off = p->file.offset_bytes, size = st.st_size;
    int64_t left = size > off ? size - off : 0, done = 0;
    int64_t want = left < p->file.max_bytes ? left : p->file.max_bytes;
    while (done < want) {
        size_t chunk = want - done < SB_CHUNK_MAX ? (size_t)(want - done) : SB_CHUNK_MAX;
        ssize_t r = pread(fd, buf + SB_FRAME_HDR, chunk, off + done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return report_error(SB_FSTEP_READ, errno, 0);
        if (r == 0)
            break; /* the file shrank meanwhile */
        sb_frame_data_header(buf, (size_t)r);
        int rc = write_all(1, buf, SB_FRAME_HDR + (size_t)r);
        if (rc < 0)
            return report_error(SB_FSTEP_OUTPUT, -rc, 0);
        done += r;
    }
    close(fd);
    return report_done(size, left > want);
}

/* Creates the missing directories of rel (all but its last component)
 * beneath ws, one component at a time, refusing symlinks. Returns a
 * descriptor of the last directory, or -1 with *step set and errno. */
static int make_parents(int ws, const char *rel, int *step)
{
    const uint64_t res =
        RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    char comp[SB_NAME_MAX + 1];
    int dfd = dup(ws);
    for (const char *s = rel, *slash; dfd >= 0 && (slash = strchr(s, '/')); s = slash + 1) {
        size_t len = (size_t)(slash - s);
        memcpy(comp, s, len);
        comp[len] = '\0';
        if (mkdirat(dfd, comp, 0755) < 0 && errno != EEXIST) {
            *step = SB_FSTEP_MKDIR;
            goto fail;
        }
        int next = open2(dfd, comp, O_PATH | O_DIRECTORY | O_CLOEXEC, 0, res);
        if (next < 0) {
            *step = SB_FSTEP_PATH;
            goto fail;
        }
        close(dfd);
        dfd = next;
    }
    return dfd;
fail:;
    int e = errno;
    close(dfd);
    errno = e;
    return -1;
}

/* Opens the target: a new file gets exactly `mode`; an existing one keeps
 * its mode, must be a regular file, and is truncated unless appending. */
static int open_target(int ws, const struct sb_plan *p, int *step, int *ftype)
{
    const uint64_t res =
        RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    uint64_t base = O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    if (p->file.append)
        base |= O_APPEND;
    *step = SB_FSTEP_OPEN;
    int fd = open2(ws, p->ws_path, base | O_CREAT | O_EXCL, 0600, res);
    if (fd >= 0) {
        if (fchmod(fd, p->file.mode) == 0)
            return fd;
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (errno != EEXIST || (fd = open2(ws, p->ws_path, base, 0, res)) < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        *step = SB_FSTEP_STAT;
        close(fd);
        errno = e;
        return -1;
    }
    if (!S_ISREG(st.st_mode) || pseudo_fs(fd)) {
        *step = SB_FSTEP_TYPE;
        *ftype = S_ISREG(st.st_mode) ? SB_FTYPE_PSEUDO : (int)(st.st_mode & S_IFMT);
        close(fd);
        errno = 0;
        return -1;
    }
    if (!p->file.append && ftruncate(fd, 0) < 0) {
        *step = SB_FSTEP_WRITE;
        close(fd);
        return -1;
    }
    return fd;
}

/* stdin (the data from the parent) -> fd. */
static int copy_input(int fd, int *step)
{
    for (;;) {
        ssize_t r = read(0, buf, SB_CHUNK_MAX);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            *step = SB_FSTEP_INPUT;
            return -errno;
        }
        if (r == 0)
            return 0;
        int rc = write_all(fd, buf, (size_t)r);
        if (rc < 0) {
            *step = SB_FSTEP_WRITE;
            return rc;
        }
    }
}

static int write_file(const struct sb_plan *p)
{
    int step = SB_FSTEP_OPEN, ftype = 0;
    /* a write past RLIMIT_FSIZE fails with EFBIG instead of killing us */
    signal(SIGXFSZ, SIG_IGN);
    int ws = open(SB_WORKSPACE, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (ws < 0)
        return report_error(SB_FSTEP_OPEN, errno, 0);
    if (p->file.make_parents && strchr(p->ws_path, '/')) {
        int dir = make_parents(ws, p->ws_path, &step);
        if (dir < 0)
            return report_error(step, errno, 0);
        close(dir); /* the open below resolves beneath ws again */
    }
    int fd = open_target(ws, p, &step, &ftype);
    if (fd < 0)
        return report_error(step, errno, ftype);
    int rc = copy_input(fd, &step);
    if (rc < 0)
        return report_error(step, -rc, 0);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return report_error(SB_FSTEP_STAT, errno, 0);
    if (close(fd) < 0)
        return report_error(SB_FSTEP_WRITE, errno, 0);
    return report_done(st.st_size, 0);
}

static enum sb_file_type type_of(mode_t m)
{
    return S_ISREG(m)   ? SB_FT_REGULAR
           : S_ISDIR(m) ? SB_FT_DIRECTORY
           : S_ISLNK(m) ? SB_FT_SYMLINK
                        : SB_FT_OTHER;
}

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Sends one entry; returns 0 or -errno of the output. */
static int send_entry(int dfd, const char *name)
{
    uint8_t frame[SB_FRAME_HDR + SB_DIRENT_FIXED + SB_NAME_MAX];
    struct sb_dirent e = {name, SB_FT_OTHER, 0, 0, 0};
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        e.type = type_of(st.st_mode);
        e.size = S_ISREG(st.st_mode) ? st.st_size : 0;
        e.mode = st.st_mode & 07777;
        e.mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
    }
    size_t n = sb_frame_dirent(frame, &e, strlen(name));
    return n ? write_all(1, frame, n) : 0;
}

static int list_dir(const struct sb_plan *p)
{
    const uint64_t flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
    int fd = open2(AT_FDCWD, p->path, flags, 0, RESOLVE_NO_MAGICLINKS);
    if (fd < 0)
        return report_error(errno == ENOTDIR ? SB_FSTEP_TYPE : SB_FSTEP_OPEN, errno, 0);
    if (pseudo_fs(fd))
        return report_error(SB_FSTEP_TYPE, 0, SB_FTYPE_PSEUDO);
    int64_t count = 0;
    int truncated = 0;
    for (;;) {
        long n = syscall(SYS_getdents64, fd, buf, sizeof(buf));
        if (n < 0)
            return report_error(SB_FSTEP_LIST, errno, 0);
        if (n == 0)
            break;
        for (long off = 0; off < n && !truncated;) {
            const struct linux_dirent64 *d = (const void *)(buf + off);
            off += d->d_reclen;
            if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
                continue;
            if (count == p->file.max_entries) {
                truncated = 1;
                break;
            }
            int rc = send_entry(fd, d->d_name);
            if (rc < 0)
                return report_error(SB_FSTEP_OUTPUT, -rc, 0);
            count++;
        }
        if (truncated)
            break;
    }
    close(fd);
    return report_done(count, truncated);
}

int sb_fileop_run(const struct sb_plan *p)
{
    switch (p->kind) {
    case SB_READ_FILE:
        return read_file(p);
    case SB_WRITE_FILE:
        return write_file(p);
    case SB_LIST_DIR:
        return list_dir(p);
    default:
        return report_error(SB_FSTEP_PATH, EINVAL, 0);
    }
}
