/*
 * mount: the sandbox's filesystem.
 *
 * The parent turns the image, the extra binds and the job into a list of
 * operations (struct sb_mnt) on paths relative to the new root; the child
 * executes them in order inside its private mount namespace:
 *
 *   make every inherited mount private (nothing propagates to the host)
 *   mount a fresh tmpfs (1 MiB, 4096 inodes) on the stage directory; cd there
 *   image: directories bound read-only (recursively, every submount made
 *     read-only, nosuid, nodev), host symlinks replicated (/bin -> usr/bin)
 *   extra binds, read-only; one that lies inside a read-only directory bind
 *     (a CA bundle over /etc/ssl/certs/ca-certificates.crt, in the image's
 *     /etc/ssl) covers a file or directory that exists there: the mount
 *     point is opened without following any symlink and the bind attached
 *     to that descriptor (open_tree + move_mount), never to a path
 *   /etc: passwd, group (root, the sandbox user, nobody), hosts, hostname,
 *     resolv.conf (empty), nsswitch.conf, next to the image's /etc entries
 *   /dev: null zero full random urandom (tty if the host has it) bound from
 *     the host, fd/stdin/stdout/stderr links, a private devpts with ptmx,
 *     /dev/shm tmpfs
 *   /tmp tmpfs, /workspace (the host workspace, read-write, nosuid, nodev; or
 *   a private tmpfs owned by the job's user when the request names none)
 *   /proc: a fresh proc of the sandbox's pid namespace, /proc/sys read-only
 *   pivot_root into the tmpfs, detach the old root, make the root read-only
 *
 * Every source path is looked up in the child, as the sandbox's root (host
 * id id_base): bind sources need their parent directories searchable by
 * others.
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "al_err.h"
#include "sb_int.h"

/* mount_setattr(2) (Linux 5.12); glibc 2.36 has no wrapper, and
 * <linux/mount.h> clashes with <sys/mount.h> there. */
struct sb_mount_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};
#define SB_ATTR_RDONLY 0x1
#define SB_ATTR_NOSUID 0x2
#define SB_ATTR_NODEV  0x4
#define SB_ATTR_NOEXEC 0x8
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x04
#endif
#ifndef MOVE_MOUNT_T_EMPTY_PATH
#define MOVE_MOUNT_T_EMPTY_PATH 0x40
#endif

const char *const sb_default_image[] = {
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/protocols",
    "/etc/services",
    "/etc/mime.types",
    "/etc/magic",
    "/etc/magic.mime",
    "/etc/python3*",
    "/etc/perl",
    "/etc/bash.bashrc",
    "/etc/profile",
    "/etc/inputrc",
    "/etc/gitconfig",
    "/etc/shells",
    "/etc/terminfo",
    NULL,
};

/* Paths the sandbox mounts itself: no bind may go there. */
static const char *const reserved[] = {"/proc", "/dev", "/tmp", SB_WORKSPACE};

static int under(const char *p, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(p, dir, n) == 0 && (p[n] == '\0' || p[n] == '/');
}

/* Absolute, no empty, "." or ".." component, no trailing "/", not "/". */
static int normalized(const char *p)
{
    if (!p || p[0] != '/' || p[1] == '\0' || strlen(p) >= PATH_MAX / 2)
        return 0;
    for (const char *c = p; *c;) {
        const char *next = strchr(c + 1, '/');
        size_t len = next ? (size_t)(next - c - 1) : strlen(c + 1);
        if (len == 0 || (len == 1 && c[1] == '.') || (len == 2 && c[1] == '.' && c[2] == '.'))
            return 0;
        if (!next)
            break;
        c = next;
    }
    return 1;
}

int sb_inside_path_ok(const char *p)
{
    if (!normalized(p))
        return 0;
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (under(p, reserved[i]))
            return 0;
    return 1;
}

/* Adds one resolved entry (host path h). */
static int resolve_one(struct al_arena *a, const char *h, const char *inside, int optional,
                       int symlinks, struct sb_image *out, char *msg, size_t msglen)
{
    struct stat st;
    int rc = symlinks ? lstat(h, &st) : stat(h, &st);
    if (rc < 0) {
        if (optional && (errno == ENOENT || errno == ENOTDIR))
            return 0;
        snprintf(msg, msglen, "bind source %s: %s", h, strerror(errno));
        return AL_ERR_INVAL;
    }
    struct sb_image_entry *e = &out->e[out->n];
    char real[PATH_MAX];
    /* bind what the path names now, checked as such (no symlink on the way
     * can later point the bind elsewhere) */
    if (!S_ISLNK(st.st_mode) && !realpath(h, real)) {
        snprintf(msg, msglen, "bind source %s: %s", h, strerror(errno));
        return AL_ERR_INVAL;
    }
    e->host = S_ISLNK(st.st_mode) ? al_arena_strndup(a, h, strlen(h))
                                  : al_arena_strndup(a, real, strlen(real));
    e->inside = al_arena_strndup(a, inside, strlen(inside));
    if (!e->host || !e->inside)
        return AL_ERR_NOMEM;
    e->type = S_ISDIR(st.st_mode) ? SB_FT_DIRECTORY : SB_FT_REGULAR;
    e->target = NULL;
    if (S_ISLNK(st.st_mode)) {
        char t[PATH_MAX];
        ssize_t n = readlink(h, t, sizeof(t) - 1);
        if (n <= 0) {
            snprintf(msg, msglen, "bind source %s: unreadable symlink", h);
            return AL_ERR_INVAL;
        }
        e->type = SB_FT_SYMLINK;
        if (!(e->target = al_arena_strndup(a, t, (size_t)n)))
            return AL_ERR_NOMEM;
    }
    out->n++;
    return 0;
}

static int resolve_glob(struct al_arena *a, const char *pattern, int symlinks, struct sb_image *out,
                        size_t cap, char *msg, size_t msglen)
{
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOMATCH)
        return 0;
    if (rc != 0) {
        snprintf(msg, msglen, "image pattern %s: glob failed", pattern);
        return AL_ERR_INVAL;
    }
    for (size_t i = 0; i < g.gl_pathc && rc == 0; i++) {
        if (out->n >= cap || !sb_inside_path_ok(g.gl_pathv[i]))
            continue;
        rc = resolve_one(a, g.gl_pathv[i], g.gl_pathv[i], 1, symlinks, out, msg, msglen);
    }
    globfree(&g);
    return rc;
}

#define GLOB_EXTRA 16 /* entries one pattern may add */

int sb_image_resolve(struct al_arena *a, const struct sb_bind *b, size_t n, int optional,
                     int symlinks, struct sb_image *out, char *msg, size_t msglen)
{
    size_t cap = n * GLOB_EXTRA + 1;
    out->n = 0;
    if (!(out->e = al_arena_alloc(a, cap * sizeof(*out->e))))
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *inside = b[i].inside ? b[i].inside : b[i].host;
        int rc;
        if (!b[i].host || (!normalized(b[i].host) && !strchr(b[i].host, '*')) ||
            !sb_inside_path_ok(inside)) {
            char p[80];
            sb_printable(p, sizeof(p), b[i].host);
            snprintf(msg, msglen,
                     "bind %s: paths must be absolute and normalized, and not "
                     "under /proc, /dev, /tmp or /workspace",
                     p);
            return AL_ERR_INVAL;
        }
        if (strchr(b[i].host, '*'))
            rc = resolve_glob(a, b[i].host, symlinks, out, cap, msg, msglen);
        else
            rc = resolve_one(a, b[i].host, inside, optional, symlinks, out, msg, msglen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * Plan (parent)
 * ------------------------------------------------------------------------- */

struct builder {
    struct al_arena *a;
    struct sb_mnt *ops;
    size_t n, cap;
    char *msg;
    size_t msglen;
};

static int op(struct builder *b, enum sb_mnt_kind k, const char *src, const char *dst, size_t len)
{
    if (b->n >= b->cap) {
        snprintf(b->msg, b->msglen, "too many mounts");
        return AL_ERR_INVAL;
    }
    b->ops[b->n++] = (struct sb_mnt){k, src, dst, len};
    return 0;
}

static int have_dir(const struct builder *b, const char *dst, size_t len)
{
    for (size_t i = 0; i < b->n; i++)
        if (b->ops[i].kind == SB_MNT_DIR && strlen(b->ops[i].dst) == len &&
            memcmp(b->ops[i].dst, dst, len) == 0)
            return 1;
    return 0;
}

/* mkdir -p of dst's parents (dst relative, no leading "/"). */
static int parents(struct builder *b, const char *dst)
{
    for (const char *s = strchr(dst, '/'); s; s = strchr(s + 1, '/')) {
        size_t len = (size_t)(s - dst);
        if (have_dir(b, dst, len))
            continue;
        char *d = al_arena_strndup(b->a, dst, len);
        if (!d)
            return AL_ERR_NOMEM;
        int rc = op(b, SB_MNT_DIR, NULL, d, 0);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* The innermost bound directory or symlink (image or extra) that contains
 * rel, if any: nothing can be created below either. */
static const struct sb_mnt *cover_of(const struct builder *b, const char *rel)
{
    const struct sb_mnt *found = NULL;
    for (size_t i = 0; i < b->n; i++)
        if ((b->ops[i].kind == SB_MNT_BIND_RO || b->ops[i].kind == SB_MNT_BIND_OVER ||
             b->ops[i].kind == SB_MNT_SYMLINK) &&
            under(rel, b->ops[i].dst) && strcmp(rel, b->ops[i].dst) != 0 &&
            (!found || strlen(b->ops[i].dst) > strlen(found->dst)))
            found = &b->ops[i];
    return found;
}

static const char *covered_by(const struct builder *b, const char *rel)
{
    const struct sb_mnt *m = cover_of(b, rel);
    return m ? m->dst : NULL;
}

/* 1 if host directory `root` holds `rest` (relative, normalized) as an
 * entry of the entry's type (a directory, or a regular file), with no
 * symlink on the way: what a bind inside the bind of root may cover. */
static int exists_below(const char *root, const char *rest, int type)
{
    char path[PATH_MAX];
    struct stat st;
    size_t n = strlen(root);
    if (n + 1 + strlen(rest) >= sizeof(path))
        return 0;
    memcpy(path, root, n);
    for (const char *c = rest;;) {
        const char *s = strchr(c, '/');
        size_t len = s ? (size_t)(s - c) : strlen(c);
        path[n++] = '/';
        memcpy(path + n, c, len);
        n += len;
        path[n] = '\0';
        if (lstat(path, &st) < 0)
            return 0;
        if (!s)
            return type == SB_FT_DIRECTORY ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode);
        if (!S_ISDIR(st.st_mode))
            return 0;
        c = s + 1;
    }
}

/* An entry inside a read-only directory bind (or a symlink): it may only
 * cover what the bound directory already has there. */
static int add_covering(struct builder *b, const struct sb_image_entry *e,
                        const struct sb_mnt *cover)
{
    const char *dst = e->inside + 1;
    char p[80];
    sb_printable(p, sizeof(p), e->inside);
    if (cover->kind == SB_MNT_SYMLINK || e->type == SB_FT_SYMLINK) {
        snprintf(b->msg, b->msglen, "bind %s lies under /%s (a symlink, or itself one)", p,
                 cover->dst);
        return AL_ERR_INVAL;
    }
    if (!exists_below(cover->src, dst + strlen(cover->dst) + 1, e->type)) {
        snprintf(b->msg, b->msglen,
                 "bind %s lies under the read-only bind /%s, which has no %s there to cover "
                 "(symlinks are not followed)",
                 p, cover->dst, e->type == SB_FT_DIRECTORY ? "directory" : "regular file");
        return AL_ERR_INVAL;
    }
    return op(b, SB_MNT_BIND_OVER, e->host, dst, 0);
}

static int add_entry(struct builder *b, const struct sb_image_entry *e)
{
    const char *dst = e->inside + 1;
    const struct sb_mnt *cover = cover_of(b, dst);
    if (cover)
        return add_covering(b, e, cover);
    int rc = parents(b, dst);
    if (rc < 0)
        return rc;
    switch (e->type) {
    case SB_FT_SYMLINK:
        return op(b, SB_MNT_SYMLINK, e->target, dst, 0);
    case SB_FT_DIRECTORY:
        if (!have_dir(b, dst, strlen(dst)) && (rc = op(b, SB_MNT_DIR, NULL, dst, 0)) < 0)
            return rc;
        return op(b, SB_MNT_BIND_RO, e->host, dst, 0);
    default:
        if ((rc = op(b, SB_MNT_FILE, NULL, dst, 0)) < 0)
            return rc;
        return op(b, SB_MNT_BIND_RO, e->host, dst, 0);
    }
}

static int provided(const struct builder *b, const char *dst)
{
    for (size_t i = 0; i < b->n; i++)
        if (strcmp(b->ops[i].dst, dst) == 0)
            return 1;
    return 0;
}

static int content(struct builder *b, const char *dst, const char *text)
{
    if (provided(b, dst))
        return 0; /* the image brings its own */
    if (covered_by(b, dst)) {
        snprintf(b->msg, b->msglen, "/etc is bound read-only: set no_generated_etc");
        return AL_ERR_INVAL;
    }
    char *t = al_arena_strndup(b->a, text, strlen(text));
    return t ? op(b, SB_MNT_CONTENT, t, dst, strlen(t)) : AL_ERR_NOMEM;
}

static int generated_etc(struct builder *b, uint32_t uid, uint32_t gid, const char *host)
{
    char passwd[320], group[128], hosts[320], hostname[80];
    snprintf(passwd, sizeof(passwd),
             "root:x:0:0:root:/root:/usr/sbin/nologin\n"
             "sandbox:x:%u:%u:sandbox:" SB_WORKSPACE ":/bin/sh\n%s",
             uid, gid,
             uid == 65534 ? "" : "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    snprintf(group, sizeof(group), "root:x:0:\nsandbox:x:%u:\n%s", gid,
             gid == 65534 ? "" : "nogroup:x:65534:\n");
    snprintf(hosts, sizeof(hosts),
             "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n",
             host);
    snprintf(hostname, sizeof(hostname), "%s\n", host);
    int rc = parents(b, "etc/x");
    if (rc == 0)
        rc = content(b, "etc/passwd", passwd);
    if (rc == 0)
        rc = content(b, "etc/group", group);
    if (rc == 0)
        rc = content(b, "etc/hosts", hosts);
    if (rc == 0)
        rc = content(b, "etc/hostname", hostname);
    if (rc == 0)
        rc = content(b, "etc/resolv.conf", "");
    if (rc == 0)
        rc = content(b, "etc/nsswitch.conf",
                     "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
                     "networks: files\nprotocols: files\nservices: files\nethers: files\n"
                     "rpc: files\n");
    return rc;
}

static char *tmpfs_opts(struct al_arena *a, int64_t bytes, const char *mode)
{
    char buf[96];
    int64_t inodes = bytes / 4096 < 1024 ? 1024 : bytes / 4096;
    snprintf(buf, sizeof(buf), "size=%lld,nr_inodes=%lld,mode=%s", (long long)bytes,
             (long long)inodes, mode);
    return al_arena_strndup(a, buf, strlen(buf));
}

/* A private workspace: as sb_workspace_create() makes them, but mounted by
 * the sandbox's init, whose user namespace maps uid/gid to the same host
 * ids as a host workspace's owner. */
static char *workspace_opts(struct al_arena *a, int64_t bytes, uint32_t uid, uint32_t gid)
{
    char buf[160];
    int64_t inodes = bytes / 4096 < 1024 ? 1024 : bytes / 4096;
    snprintf(buf, sizeof(buf), "size=%lld,nr_inodes=%lld,mode=0700,uid=%u,gid=%u", (long long)bytes,
             (long long)inodes, uid, gid);
    return al_arena_strndup(a, buf, strlen(buf));
}

static int dev_tree(struct builder *b, int64_t shm_bytes)
{
    static const char *const links[][2] = {{"/proc/self/fd", "dev/fd"},
                                           {"/proc/self/fd/0", "dev/stdin"},
                                           {"/proc/self/fd/1", "dev/stdout"},
                                           {"/proc/self/fd/2", "dev/stderr"},
                                           {"pts/ptmx", "dev/ptmx"}};
    static const char *const devs[][2] = {
        {"/dev/null", "dev/null"},     {"/dev/zero", "dev/zero"},       {"/dev/full", "dev/full"},
        {"/dev/random", "dev/random"}, {"/dev/urandom", "dev/urandom"}, {"/dev/tty", "dev/tty"}};
    int rc = op(b, SB_MNT_DIR, NULL, "dev", 0);
    for (size_t i = 0; i < sizeof(devs) / sizeof(devs[0]) && rc == 0; i++) {
        if (i == 5 && access(devs[i][0], F_OK) < 0)
            continue; /* /dev/tty is optional */
        rc = op(b, SB_MNT_FILE, NULL, devs[i][1], 0);
        if (rc == 0)
            rc = op(b, SB_MNT_BIND_DEV, devs[i][0], devs[i][1], 0);
    }
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]) && rc == 0; i++)
        rc = op(b, SB_MNT_SYMLINK, links[i][0], links[i][1], 0);
    if (rc == 0)
        rc = op(b, SB_MNT_DIR, NULL, "dev/pts", 0);
    if (rc == 0)
        rc = op(b, SB_MNT_DEVPTS, NULL, "dev/pts", 0);
    if (rc == 0)
        rc = op(b, SB_MNT_DIR, NULL, "dev/shm", 0);
    char *o = rc == 0 ? tmpfs_opts(b->a, shm_bytes, "1777") : NULL;
    if (rc == 0 && !o)
        rc = AL_ERR_NOMEM;
    if (rc == 0)
        rc = op(b, SB_MNT_TMPFS, o, "dev/shm", 0);
    return rc;
}

static int runtime_mounts(struct builder *b, const struct sb_request *req, uint32_t uid,
                          uint32_t gid, int64_t tmp_bytes)
{
    char *o = tmpfs_opts(b->a, tmp_bytes, "1777");
    char *w = req->workspace ? NULL : workspace_opts(b->a, req->workspace_bytes, uid, gid);
    if (!o || (!req->workspace && !w))
        return AL_ERR_NOMEM;
    int rc = op(b, SB_MNT_DIR, NULL, "tmp", 0);
    if (rc == 0)
        rc = op(b, SB_MNT_TMPFS, o, "tmp", 0);
    if (rc == 0)
        rc = op(b, SB_MNT_DIR, NULL, "workspace", 0);
    if (rc == 0)
        rc = req->workspace ? op(b, SB_MNT_BIND_RW, req->workspace, "workspace", 0)
                            : op(b, SB_MNT_TMPFS, w, "workspace", 0);
    if (rc == 0)
        rc = op(b, SB_MNT_DIR, NULL, "proc", 0);
    if (rc == 0)
        rc = op(b, SB_MNT_PROC, NULL, "proc", 0);
    if (rc == 0)
        rc = op(b, SB_MNT_RDONLY_SELF, NULL, "proc/sys", 0);
    return rc;
}

static size_t ops_bound(const struct sb_image *img, const struct sb_image *extra)
{
    size_t n = 64;
    const struct sb_image *all[2] = {img, extra};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < all[k]->n; i++) {
            n += 3;
            for (const char *c = all[k]->e[i].inside + 1; *c; c++)
                n += *c == '/';
        }
    return n;
}

static int64_t tmpfs_size(int64_t configured, const struct sb_limits *l)
{
    if (configured > 0)
        return configured;
    return l->memory_bytes > 0 ? l->memory_bytes : SB_DEFAULT_TMPFS;
}

/* A bind source must not expose the host's kernel views or any sandbox's
 * files: not "/", nothing under /proc, /sys or /dev, nothing containing or
 * inside the run directory (other sessions' workspaces, sandbox roots). */
static int source_ok(const char *host, const char *run_dir)
{
    static const char *const banned[] = {"/proc", "/sys", "/dev"};
    if (strcmp(host, "/") == 0 || under(run_dir, host) || under(host, run_dir))
        return 0;
    for (size_t i = 0; i < sizeof(banned) / sizeof(banned[0]); i++)
        if (under(host, banned[i]))
            return 0;
    return 1;
}

static int check_sources(const struct sb_image *img, const char *run_dir, char *msg, size_t msglen)
{
    for (size_t i = 0; i < img->n; i++) {
        if (img->e[i].type == SB_FT_SYMLINK || source_ok(img->e[i].host, run_dir))
            continue;
        char p[80];
        sb_printable(p, sizeof(p), img->e[i].host);
        snprintf(msg, msglen,
                 "bind source %s not allowed (/, /proc, /sys, /dev and the "
                 "sandbox run directory stay out)",
                 p);
        return AL_ERR_INVAL;
    }
    return 0;
}

int sb_mount_plan(struct al_arena *a, const struct sb_image *default_image,
                  const struct sb_config *cfg, const struct sb_request *req, uint32_t uid,
                  uint32_t gid, const char *run_dir, struct sb_plan *p, char *msg, size_t msglen)
{
    struct sb_image own = {NULL, 0}, extra = {NULL, 0};
    const struct sb_image *image = default_image;
    int rc = 0;
    if (cfg->image) { /* the operator's image: every entry must exist */
        rc = sb_image_resolve(a, cfg->image, cfg->n_image, 0, 1, &own, msg, msglen);
        image = &own;
    }
    if (rc == 0)
        rc = sb_image_resolve(a, cfg->binds, cfg->binds ? cfg->n_binds : 0, 0, 0, &extra, msg,
                              msglen);
    if (rc == 0)
        rc = check_sources(image, run_dir, msg, msglen);
    if (rc == 0)
        rc = check_sources(&extra, run_dir, msg, msglen);
    if (rc < 0)
        return rc;
    struct builder b = {a, NULL, 0, ops_bound(image, &extra), msg, msglen};
    if (!(b.ops = al_arena_alloc(a, b.cap * sizeof(*b.ops))))
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < image->n && rc == 0; i++)
        rc = add_entry(&b, &image->e[i]);
    for (size_t i = 0; i < extra.n && rc == 0; i++)
        rc = add_entry(&b, &extra.e[i]);
    if (rc == 0 && !cfg->no_generated_etc)
        rc = generated_etc(&b, uid, gid, p->hostname);
    if (rc == 0)
        rc = dev_tree(&b, tmpfs_size(cfg->shm_bytes, &req->limits));
    if (rc == 0)
        rc = runtime_mounts(&b, req, uid, gid, tmpfs_size(cfg->tmp_bytes, &req->limits));
    p->mnt = b.ops;
    p->n_mnt = b.n;
    return rc;
}

void sb_mount_describe(const struct sb_plan *p, int i, char *buf, size_t n)
{
    static const char *const verb[] = {
        [SB_MNT_DIR] = "creating directory",
        [SB_MNT_FILE] = "creating mount point",
        [SB_MNT_SYMLINK] = "creating symlink",
        [SB_MNT_CONTENT] = "writing",
        [SB_MNT_BIND_RO] = "bind-mounting (read-only)",
        [SB_MNT_BIND_RW] = "bind-mounting the workspace on",
        [SB_MNT_BIND_OVER] = "bind-mounting (read-only) over",
        [SB_MNT_BIND_DEV] = "bind-mounting device",
        [SB_MNT_TMPFS] = "mounting tmpfs on",
        [SB_MNT_PROC] = "mounting proc on",
        [SB_MNT_DEVPTS] = "mounting devpts on",
        [SB_MNT_RDONLY_SELF] = "making read-only",
    };
    if (i < 0 || (size_t)i >= p->n_mnt) {
        snprintf(buf, n, "mount operation %d", i);
        return;
    }
    char dst[96];
    sb_printable(dst, sizeof(dst), p->mnt[i].dst);
    snprintf(buf, n, "%s /%s", verb[p->mnt[i].kind], dst);
}

/* ---------------------------------------------------------------------------
 * Execution (child)
 * ------------------------------------------------------------------------- */

static int setattr(const char *path, unsigned flags, uint64_t set)
{
    struct sb_mount_attr attr = {set, 0, 0, 0};
    return (int)syscall(SYS_mount_setattr, AT_FDCWD, path, flags, &attr, sizeof(attr));
}

static int write_content(const struct sb_mnt *m)
{
    int fd = open(m->dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < m->len) {
        ssize_t w = write(fd, m->src + off, m->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            close(fd);
            errno = e;
            return -1;
        }
        off += (size_t)w;
    }
    return close(fd);
}

static int bind(const char *src, const char *dst, unsigned long flags, unsigned at, uint64_t attrs)
{
    if (mount(src, dst, NULL, MS_BIND | flags, NULL) < 0)
        return -1;
    return setattr(dst, at, attrs);
}

/* SB_MNT_BIND_OVER: the mount point (inside a read-only bind) opened
 * without following any symlink, the source cloned as a detached tree, made
 * read-only, nosuid, nodev, and attached to that descriptor. */
static int bind_over(const struct sb_mnt *m)
{
    struct open_how how;
    struct sb_mount_attr attr = {SB_ATTR_RDONLY | SB_ATTR_NOSUID | SB_ATTR_NODEV, 0, 0, 0};
    int rc = -1, err = 0;
    memset(&how, 0, sizeof(how));
    how.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
    how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH;
    int at = (int)syscall(SYS_openat2, AT_FDCWD, m->dst, &how, sizeof(how));
    if (at < 0)
        return -1;
    int tree =
        (int)syscall(SYS_open_tree, AT_FDCWD, m->src, OPEN_TREE_CLONE | O_CLOEXEC | AT_RECURSIVE);
    if (tree >= 0 &&
        syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) ==
            0 &&
        syscall(SYS_move_mount, tree, "", at, "",
                MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) == 0)
        rc = 0;
    err = errno;
    if (tree >= 0)
        close(tree);
    close(at);
    errno = err;
    return rc;
}

static int run_op(const struct sb_mnt *m)
{
    const uint64_t ro = SB_ATTR_RDONLY | SB_ATTR_NOSUID | SB_ATTR_NODEV;
    switch (m->kind) {
    case SB_MNT_DIR:
        return mkdir(m->dst, 0755) < 0 && errno != EEXIST ? -1 : 0;
    case SB_MNT_FILE:
        return mknod(m->dst, S_IFREG | 0444, 0) < 0 && errno != EEXIST ? -1 : 0;
    case SB_MNT_SYMLINK:
        return symlink(m->src, m->dst);
    case SB_MNT_CONTENT:
        return write_content(m);
    case SB_MNT_BIND_RO:
        return bind(m->src, m->dst, MS_REC, AT_RECURSIVE, ro);
    case SB_MNT_BIND_RW:
        return bind(m->src, m->dst, 0, 0, SB_ATTR_NOSUID | SB_ATTR_NODEV);
    case SB_MNT_BIND_OVER:
        return bind_over(m);
    case SB_MNT_BIND_DEV:
        return bind(m->src, m->dst, 0, 0, SB_ATTR_NOSUID | SB_ATTR_NOEXEC);
    case SB_MNT_TMPFS:
        return mount("tmpfs", m->dst, "tmpfs", MS_NOSUID | MS_NODEV, m->src);
    case SB_MNT_PROC:
        return mount("proc", m->dst, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    case SB_MNT_DEVPTS:
        return mount("devpts", m->dst, "devpts", MS_NOSUID | MS_NOEXEC,
                     "newinstance,ptmxmode=0666,mode=0620");
    case SB_MNT_RDONLY_SELF:
        return bind(m->dst, m->dst, MS_REC, AT_RECURSIVE, ro | SB_ATTR_NOEXEC);
    }
    errno = EINVAL;
    return -1;
}

#define STEP(s, expr)                                                                              \
    do {                                                                                           \
        if ((expr) < 0) {                                                                          \
            f->step = (s);                                                                         \
            return -errno;                                                                         \
        }                                                                                          \
    } while (0)

int sb_mount_setup(const struct sb_plan *p, struct sb_fail *f)
{
    STEP(SB_STEP_MOUNT_PRIVATE, mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL));
    STEP(SB_STEP_MOUNT_ROOT,
         mount("tmpfs", p->stage, "tmpfs", MS_NOSUID | MS_NODEV, SB_ROOT_TMPFS_OPTS));
    STEP(SB_STEP_MOUNT_ROOT, chdir(p->stage));
    for (size_t i = 0; i < p->n_mnt; i++) {
        if (run_op(&p->mnt[i]) < 0) {
            f->step = SB_STEP_MOUNT_OP;
            f->index = (int)i;
            return -errno;
        }
    }
    /* new root = the tmpfs (cwd); the old root is stacked on it, then
     * detached: nothing of the host stays reachable */
    STEP(SB_STEP_PIVOT, syscall(SYS_pivot_root, ".", "."));
    STEP(SB_STEP_PIVOT, umount2(".", MNT_DETACH));
    STEP(SB_STEP_PIVOT, chdir("/"));
    STEP(SB_STEP_ROOT_RO, setattr("/", 0, SB_ATTR_RDONLY | SB_ATTR_NOSUID | SB_ATTR_NODEV));
    return 0;
}
