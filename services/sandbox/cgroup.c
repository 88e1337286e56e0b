/*
 * cgroup: the job cgroups (memory, pids, cpu bandwidth, cpu accounting), on
 * cgroup v2 where it is delegated to us and v1 where that is what the host
 * mounts, chosen per controller.
 *
 * Where we are: /proc/self/cgroup gives our cgroup path in each hierarchy,
 * /proc/self/mountinfo where each hierarchy is mounted and which subtree
 * ("root") the mount shows. Our directory = mount point + (our path minus
 * the mount's root). Job cgroups live under <ours>/<parent> (default
 * airlock/<name>); on v2 the controllers are enabled on every level down to
 * the parent, and because v2 forbids processes in a cgroup whose children
 * use controllers, this process moves to <ours>/supervisor if it is alone in
 * <ours>; if others share it (a login session), the parent goes under the
 * hierarchy's root instead.
 *
 * Lifecycle: sb_cg_host_init() (creates parents, removes leftovers) ->
 * per job sb_cg_job_create() -> sb_cg_job_attach(pid) -> ... ->
 * sb_cg_job_stats() -> sb_cg_job_destroy() -> sb_cg_host_cleanup().
 * Where every controller is v1, job cgroups are pooled instead (see the end
 * of this file): sb_cg_pool_create() once, then per job sb_cg_job_reuse() ->
 * attach -> stats -> sb_cg_job_recycle() (or destroy when it cannot be).
 *
 * Files written per job:
 *   v1: memory.limit_in_bytes, memory.memsw.limit_in_bytes (no swap), pids.max,
 *       cpu.cfs_period_us + cpu.cfs_quota_us
 *   v2: memory.max, memory.swap.max = 0, memory.oom.group = 1, pids.max, cpu.max
 * and read at the end: v1 memory.max_usage_in_bytes, memory.failcnt,
 * memory.oom_control (oom_kill), pids.events, cpuacct.usage, cpu.stat;
 * v2 memory.peak, memory.events, pids.events, cpu.stat. A pooled (v1) set
 * gets its limits written only when they change, and after each job its
 * cgroup.procs and memory.usage_in_bytes are checked and
 * memory.max_usage_in_bytes, memory.failcnt and cpuacct.usage reset.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "al_err.h"
#include "sb_int.h"

static const char *const v1_name[SB_CTL_N] = {"memory", "pids", "cpu", "cpuacct"};

/* ---------------------------------------------------------------------------
 * Small file helpers
 * ------------------------------------------------------------------------- */

static int path2(char *out, size_t n, const char *dir, const char *file)
{
    int w = snprintf(out, n, "%s/%s", dir, file);
    return w < 0 || (size_t)w >= n ? -ENAMETOOLONG : 0;
}

static int write_text(const char *dir, const char *file, const char *text)
{
    char p[PATH_MAX];
    int rc = path2(p, sizeof(p), dir, file);
    if (rc < 0)
        return rc;
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    rc = w < 0 ? -errno : (size_t)w != len ? -EIO : 0;
    close(fd);
    return rc;
}

/* Reads a whole small file (cgroup files are a few hundred bytes). */
static ssize_t read_small(const char *dir, const char *file, char *buf, size_t n)
{
    char p[PATH_MAX];
    if (path2(p, sizeof(p), dir, file) < 0)
        return -ENAMETOOLONG;
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t r = read(fd, buf, n - 1);
    int e = errno;
    close(fd);
    if (r < 0)
        return -e;
    buf[r] = '\0';
    return r;
}

static int64_t read_int(const char *dir, const char *file)
{
    char buf[64];
    if (read_small(dir, file, buf, sizeof(buf)) <= 0)
        return -1;
    char *end;
    long long v = strtoll(buf, &end, 10);
    return end == buf ? -1 : (int64_t)v;
}

static int64_t read_keyed(const char *dir, const char *file, const char *key)
{
    char buf[1024];
    if (read_small(dir, file, buf, sizeof(buf)) <= 0)
        return -1;
    return sb_cg_keyed(buf, key);
}

int64_t sb_cg_keyed(const char *text, const char *key)
{
    size_t kl = strlen(key);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, key, kl) == 0 && l[kl] == ' ') {
            char *end;
            long long v = strtoll(l + kl + 1, &end, 10);
            return end == l + kl + 1 ? -1 : (int64_t)v;
        }
    }
    return -1;
}

/* Reads a whole text file (mountinfo may be long); *out is malloc'd. */
static int read_text(const char *path, char **out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t cap = 16384, len = 0;
    char *buf = malloc(cap);
    int rc = buf ? 0 : AL_ERR_NOMEM;
    while (rc == 0) {
        if (len + 1 == cap) {
            char *nb = cap < (8u << 20) ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                rc = AL_ERR_NOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = -errno;
        else if (r == 0)
            break;
        else
            len += (size_t)r;
    }
    close(fd);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    buf[len] = '\0';
    *out = buf;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Parsing /proc/self/cgroup and /proc/self/mountinfo
 * ------------------------------------------------------------------------- */

void sb_cg_unescape(char *s)
{
    char *o = s;
    for (char *i = s; *i;) {
        if (i[0] == '\\' && i[1] >= '0' && i[1] <= '3' && i[2] >= '0' && i[2] <= '7' &&
            i[3] >= '0' && i[3] <= '7') {
            *o++ = (char)((i[1] - '0') * 64 + (i[2] - '0') * 8 + (i[3] - '0'));
            i += 4;
        } else {
            *o++ = *i++;
        }
    }
    *o = '\0';
}

/* 1 if the comma-separated list has name. */
static int in_list(const char *list, size_t len, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < len;) {
        const char *c = memchr(list + i, ',', len - i);
        size_t l = c ? (size_t)(c - list - i) : len - i;
        if (l == nl && memcmp(list + i, name, nl) == 0)
            return 1;
        i += l + 1;
    }
    return 0;
}

struct self_paths {
    char v1[SB_CTL_N][PATH_MAX];
    int has_v1[SB_CTL_N];
    char v2[PATH_MAX];
    int has_v2;
};

static void copy_field(char *dst, const char *src, size_t len)
{
    if (len >= PATH_MAX)
        len = PATH_MAX - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* "id:controllers:path" lines. */
static void parse_self(const char *text, struct self_paths *s)
{
    for (const char *l = text; *l;) {
        const char *eol = strchr(l, '\n');
        size_t len = eol ? (size_t)(eol - l) : strlen(l);
        const char *c1 = memchr(l, ':', len);
        const char *c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - l)) : NULL;
        if (c2) {
            const char *ctl = c1 + 1, *path = c2 + 1;
            size_t cl = (size_t)(c2 - ctl), pl = len - (size_t)(path - l);
            if (cl == 0 && c1 - l == 1 && l[0] == '0') {
                copy_field(s->v2, path, pl);
                s->has_v2 = 1;
            }
            for (int k = 0; k < SB_CTL_N && cl; k++)
                if (in_list(ctl, cl, v1_name[k])) {
                    copy_field(s->v1[k], path, pl);
                    s->has_v1[k] = 1;
                }
        }
        l += len + (eol ? 1 : 0);
    }
}

/* Splits one mountinfo line into root, mount point, fstype, super options.
 * Returns 0 or -1 when the line is malformed. */
static int split_mountinfo(char *line, char **root, char **mnt, char **fstype, char **opts)
{
    char *f[6];
    int n = 0;
    char *save = NULL, *tok;
    while (n < 6 && (tok = strtok_r(n ? NULL : line, " ", &save)))
        f[n++] = tok;
    if (n < 6)
        return -1;
    *root = f[3];
    *mnt = f[4];
    char *t = strtok_r(NULL, " ", &save);
    while (t && strcmp(t, "-") != 0) /* optional fields end at "-" */
        t = strtok_r(NULL, " ", &save);
    if (!t || !(*fstype = strtok_r(NULL, " ", &save)) || !strtok_r(NULL, " ", &save) ||
        !(*opts = strtok_r(NULL, " ", &save)))
        return -1;
    sb_cg_unescape(*root);
    sb_cg_unescape(*mnt);
    return 0;
}

/* Our directory in a mount of root `root` at `mnt`, for cgroup path `path`:
 * 0 if the mount shows it. */
static int dir_for(const char *mnt, const char *root, const char *path, char *out)
{
    size_t rl = strlen(root);
    const char *rest;
    if (strcmp(root, "/") == 0)
        rest = path;
    else if (strncmp(path, root, rl) == 0 && (path[rl] == '/' || path[rl] == '\0'))
        rest = path + rl;
    else
        return -1;
    if (strcmp(rest, "/") == 0)
        rest = "";
    int w = snprintf(out, PATH_MAX, "%s%s", mnt, rest);
    return w < 0 || w >= PATH_MAX ? -1 : 0;
}

static void consider_mount(char *line, const struct self_paths *s, struct sb_cg_where *w)
{
    char *root, *mnt, *fstype, *opts;
    if (split_mountinfo(line, &root, &mnt, &fstype, &opts) < 0)
        return;
    if (strcmp(fstype, "cgroup2") == 0 && s->has_v2 && !w->v2) {
        if (dir_for(mnt, root, s->v2, w->v2_dir) == 0) {
            w->v2 = 1;
            snprintf(w->v2_mount, PATH_MAX, "%s", mnt);
        }
        return;
    }
    if (strcmp(fstype, "cgroup") != 0)
        return;
    for (int k = 0; k < SB_CTL_N; k++)
        if (s->has_v1[k] && !w->v1[k] && in_list(opts, strlen(opts), v1_name[k]) &&
            dir_for(mnt, root, s->v1[k], w->v1_dir[k]) == 0)
            w->v1[k] = 1;
}

int sb_cg_locate(const char *self_cgroup, const char *mountinfo, struct sb_cg_where *w)
{
    struct self_paths *s = calloc(1, sizeof(*s));
    char *copy = strdup(mountinfo);
    int rc = 0;
    memset(w, 0, sizeof(*w));
    if (!s || !copy) {
        rc = AL_ERR_NOMEM;
        goto out;
    }
    parse_self(self_cgroup, s);
    for (char *save = NULL, *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
        consider_mount(l, s, w);
out:
    free(s);
    free(copy);
    return rc;
}

/* 1 if the space-separated v2 controller list has name. */
static int v2_has(const char *list, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == '\n')
            p++;
        size_t l = strcspn(p, " \n");
        if (l == nl && strncmp(p, name, nl) == 0)
            return 1;
        p += l;
    }
    return 0;
}

void sb_cg_choose(enum sb_cgroup_mode mode, const struct sb_cg_where *w, const char *v2_controllers,
                  const int v1_writable[SB_CTL_N], int v2_writable, int v[SB_CTL_N])
{
    for (int k = 0; k < SB_CTL_N; k++) {
        int v1ok = w->v1[k] && v1_writable[k];
        /* v2 accounts CPU time in every cgroup (cpu.stat); on a hybrid host
         * whose cpu controller is on v1, v1's cpuacct keeps a job in one
         * family of hierarchies */
        int v2ok =
            w->v2 && v2_writable &&
            (k == SB_CTL_CPUACCT ? v2_has(v2_controllers, "cpu") || !v1ok || mode == SB_CGROUPS_V2
                                 : v2_has(v2_controllers, v1_name[k]));
        switch (mode) {
        case SB_CGROUPS_AUTO:
            v[k] = v2ok ? 2 : v1ok ? 1 : 0;
            break;
        case SB_CGROUPS_V2:
            v[k] = v2ok ? 2 : 0;
            break;
        case SB_CGROUPS_V1:
            v[k] = v1ok ? 1 : 0;
            break;
        default:
            v[k] = 0;
        }
    }
}

/* ---------------------------------------------------------------------------
 * Host: parents and leftovers
 * ------------------------------------------------------------------------- */

/* mkdir -p of rel's components under base (which exists). */
static int mkdirs(const char *base, const char *rel, char *out, size_t n,
                  int (*each)(const char *dir, void *arg), void *arg)
{
    int w = snprintf(out, n, "%s/%s", base, rel);
    if (w < 0 || (size_t)w >= n)
        return -ENAMETOOLONG;
    for (char *s = out + strlen(base) + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        int rc = mkdir(out, 0755) < 0 && errno != EEXIST ? -errno : 0;
        if (rc == 0 && each)
            rc = each(out, arg);
        *s = c;
        if (rc < 0 || c == '\0')
            return rc;
    }
}

/* Kills every process of a cgroup directory (leftovers of a crashed run). */
static void kill_procs(const char *dir)
{
    char buf[4096];
    if (write_text(dir, "cgroup.kill", "1") == 0)
        return;
    if (read_small(dir, "cgroup.procs", buf, sizeof(buf)) <= 0)
        return;
    for (char *save = NULL, *t = strtok_r(buf, "\n", &save); t; t = strtok_r(NULL, "\n", &save))
        kill((pid_t)atoi(t), SIGKILL);
}

/* rmdir, retried while the kernel finishes tearing down the processes. */
static int rmdir_retry(const char *dir, int tries)
{
    for (int i = 0;; i++) {
        if (rmdir(dir) == 0 || errno == ENOENT)
            return 0;
        if (errno != EBUSY || i + 1 >= tries)
            return -errno;
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void remove_leftovers(const char *parent)
{
    DIR *d = opendir(parent);
    if (!d)
        return;
    for (struct dirent *e = readdir(d); e; e = readdir(d)) {
        char p[PATH_MAX];
        if (e->d_type != DT_DIR || e->d_name[0] == '.' || path2(p, sizeof(p), parent, e->d_name))
            continue;
        kill_procs(p);
        rmdir_retry(p, 500);
    }
    closedir(d);
}

static int v2_enable_cb(const char *dir, void *arg)
{
    return write_text(dir, "cgroup.subtree_control", arg);
}

/* 1 if this process is the only one in the v2 cgroup dir. */
static int only_us(const char *dir)
{
    char buf[256], me[24];
    ssize_t n = read_small(dir, "cgroup.procs", buf, sizeof(buf));
    snprintf(me, sizeof(me), "%d\n", (int)getpid());
    return n > 0 && strcmp(buf, me) == 0;
}

/* Enables ctls on dir; a cgroup holding only us (v2 forbids processes in a
 * cgroup whose children use controllers) is left for its leaf "supervisor". */
static int v2_enable_at(const char *dir, const char *ctls)
{
    if (!*ctls)
        return 0;
    int rc = write_text(dir, "cgroup.subtree_control", ctls);
    if (rc != -EBUSY || !only_us(dir))
        return rc;
    char sup[PATH_MAX], pid[24];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    if (path2(sup, sizeof(sup), dir, "supervisor") < 0 || (mkdir(sup, 0755) < 0 && errno != EEXIST))
        return rc;
    if (write_text(sup, "cgroup.procs", pid) < 0)
        return rc;
    return write_text(dir, "cgroup.subtree_control", ctls);
}

/* Creates the parent of the job cgroups with ctls enabled on every level:
 * under our own cgroup (a delegated subtree: systemd Delegate=yes, a
 * container), else -- our cgroup holds other processes too, e.g. a login
 * session -- under the hierarchy's root, where root may create cgroups and
 * the no-internal-process rule does not apply. */
static int v2_prepare(const struct sb_cg_where *w, const char *rel, const char *ctls, char *parent,
                      char *err, size_t errlen)
{
    const char *base = w->v2_dir;
    int rc = v2_enable_at(base, ctls);
    if (rc < 0 && strcmp(w->v2_dir, w->v2_mount) != 0) {
        base = w->v2_mount;
        rc = v2_enable_at(base, ctls);
    }
    if (rc < 0) {
        snprintf(err, errlen, "cgroup v2: enabling %s in %s: %s (run in a cgroup of our own)", ctls,
                 base, strerror(-rc));
        return rc;
    }
    rc = mkdirs(base, rel, parent, PATH_MAX, *ctls ? v2_enable_cb : NULL, (void *)ctls);
    if (rc < 0)
        snprintf(err, errlen, "cgroup v2: creating %s under %s: %s", rel, base, strerror(-rc));
    return rc;
}

static void v2_ctl_list(const int v[SB_CTL_N], char *out, size_t n)
{
    out[0] = '\0';
    for (int k = 0; k < SB_CTL_N; k++)
        if (v[k] == 2 && k != SB_CTL_CPUACCT) {
            size_t l = strlen(out);
            snprintf(out + l, n - l, "%s+%s", l ? " " : "", v1_name[k]);
        }
}

static int writable(const char *dir)
{
    return access(dir, W_OK) == 0;
}

static int locate_self(struct sb_cg_where *w, char **v2ctl)
{
    char *self = NULL, *mi = NULL;
    int rc = read_text("/proc/self/cgroup", &self);
    if (rc == 0)
        rc = read_text("/proc/self/mountinfo", &mi);
    if (rc == 0)
        rc = sb_cg_locate(self, mi, w);
    free(self);
    free(mi);
    *v2ctl = NULL;
    if (rc == 0 && w->v2) {
        char p[PATH_MAX];
        if (path2(p, sizeof(p), w->v2_dir, "cgroup.controllers") == 0 && read_text(p, v2ctl) < 0)
            *v2ctl = NULL;
    }
    return rc;
}

int sb_cg_host_init(struct sb_cgroups *cg, enum sb_cgroup_mode mode, const char *rel, int keep,
                    char *err, size_t errlen)
{
    struct sb_cg_where *w = calloc(1, sizeof(*w));
    char *v2ctl = NULL;
    int v1w[SB_CTL_N], rc = w ? locate_self(w, &v2ctl) : AL_ERR_NOMEM;
    memset(cg, 0, sizeof(*cg));
    if (rc < 0) {
        snprintf(err, errlen, "reading /proc/self/cgroup and mountinfo: %s", al_strerror(rc));
        goto out;
    }
    for (int k = 0; k < SB_CTL_N; k++)
        v1w[k] = w->v1[k] && writable(w->v1_dir[k]);
    sb_cg_choose(mode, w, v2ctl, v1w, w->v2 && writable(w->v2_dir), cg->version);
    char ctls[64], v2parent[PATH_MAX] = "";
    v2_ctl_list(cg->version, ctls, sizeof(ctls));
    for (int k = 0; k < SB_CTL_N && rc == 0; k++) {
        if (cg->version[k] == 2) {
            if (!v2parent[0])
                rc = v2_prepare(w, rel, ctls, v2parent, err, errlen);
            snprintf(cg->parent[k], PATH_MAX, "%s", v2parent);
        } else if (cg->version[k] == 1) {
            rc = mkdirs(w->v1_dir[k], rel, cg->parent[k], PATH_MAX, NULL, NULL);
            if (rc < 0)
                snprintf(err, errlen, "cgroup v1 %s: creating %s under %s: %s", v1_name[k], rel,
                         w->v1_dir[k], strerror(-rc));
        }
        if (rc == 0 && cg->version[k] && !keep)
            remove_leftovers(cg->parent[k]);
    }
    if (rc == 0 && v2parent[0]) {
        char p[PATH_MAX];
        cg->v2_kill = path2(p, sizeof(p), v2parent, "cgroup.kill") == 0 && access(p, F_OK) == 0;
    }
out:
    free(w);
    free(v2ctl);
    return rc;
}

/* Removes parent and then its ancestors up to rel's first component. */
static void remove_up(const char *parent, const char *rel)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s", parent);
    for (const char *r = rel + strlen(rel);;) {
        if (rmdir(p) < 0)
            return;
        while (r > rel && *r != '/')
            r--;
        if (r == rel)
            return;
        char *slash = strrchr(p, '/');
        if (!slash)
            return;
        *slash = '\0';
        r--;
    }
}

void sb_cg_host_cleanup(struct sb_cgroups *cg, const char *rel)
{
    for (int k = 0; k < SB_CTL_N; k++)
        if (cg->version[k] && cg->parent[k][0])
            remove_up(cg->parent[k], rel);
}

/* ---------------------------------------------------------------------------
 * Jobs
 * ------------------------------------------------------------------------- */

static const struct sb_limit_report *find(const struct sb_limit_report *rep, size_t n,
                                          enum sb_limit_kind k, int cgroup_only)
{
    for (size_t i = 0; i < n; i++)
        if (rep[i].kind == k && (!cgroup_only || rep[i].mechanism == SB_MECH_CGROUP_V1 ||
                                 rep[i].mechanism == SB_MECH_CGROUP_V2))
            return &rep[i];
    return NULL;
}

/* Which controllers this job needs: memory and CPU accounting always (peak,
 * usage), pids and cpu only when limited. */
static int wanted(int k, const struct sb_limit_report *rep, size_t n)
{
    if (k == SB_CTL_PIDS)
        return find(rep, n, SB_LIMIT_PIDS, 1) != NULL;
    if (k == SB_CTL_CPU)
        return find(rep, n, SB_LIMIT_CPU_BANDWIDTH, 1) != NULL;
    return 1;
}

/* The job's directories: every controller in use when rep is NULL (pooled). */
static int job_dirs(const struct sb_cgroups *cg, const char *name,
                    const struct sb_limit_report *rep, size_t nrep, struct sb_cg_job *job)
{
    memset(job, 0, sizeof(*job));
    job->cur_memory = job->cur_pids = job->cur_quota = -2;
    for (int k = 0; k < SB_CTL_N; k++) {
        job->dir_of[k] = -1;
        if (!cg->version[k] || (rep && !wanted(k, rep, nrep)))
            continue;
        char d[PATH_MAX];
        if (path2(d, sizeof(d), cg->parent[k], name) < 0)
            return -ENAMETOOLONG;
        int i = 0;
        while (i < job->n && strcmp(job->dir[i], d) != 0)
            i++;
        if (i == job->n)
            memcpy(job->dir[job->n++], d, sizeof(d));
        job->dir_of[k] = i;
        job->version[k] = cg->version[k];
    }
    return 0;
}

static int set_limits(const struct sb_cg_job *job, const struct sb_limits *l,
                      const struct sb_limit_report *rep, size_t nrep, const char **file)
{
    char v[64];
    int rc = 0, m = job->dir_of[SB_CTL_MEMORY], p = job->dir_of[SB_CTL_PIDS];
    int c = job->dir_of[SB_CTL_CPU];
    if (m >= 0 && find(rep, nrep, SB_LIMIT_MEMORY, 1)) {
        snprintf(v, sizeof(v), "%lld", (long long)l->memory_bytes);
        int v2 = job->version[SB_CTL_MEMORY] == 2;
        rc = write_text(job->dir[m], *file = v2 ? "memory.max" : "memory.limit_in_bytes", v);
        int r2 =
            rc ? 0
               : write_text(job->dir[m], v2 ? "memory.swap.max" : "memory.memsw.limit_in_bytes",
                            v2 ? "0" : v);
        if (r2 < 0 && r2 != -ENOENT)
            rc = r2, *file = v2 ? "memory.swap.max" : "memory.memsw.limit_in_bytes";
        if (rc == 0 && v2)
            (void)write_text(job->dir[m], "memory.oom.group", "1");
    }
    if (rc == 0 && p >= 0) {
        snprintf(v, sizeof(v), "%lld", (long long)l->pids + 1);
        rc = write_text(job->dir[p], *file = "pids.max", v);
    }
    if (rc == 0 && c >= 0) {
        long long quota = l->cpu_millicores * 100 < 1000 ? 1000 : l->cpu_millicores * 100;
        if (job->version[SB_CTL_CPU] == 2) {
            snprintf(v, sizeof(v), "%lld 100000", quota);
            rc = write_text(job->dir[c], *file = "cpu.max", v);
        } else {
            rc = write_text(job->dir[c], *file = "cpu.cfs_period_us", "100000");
            snprintf(v, sizeof(v), "%lld", quota);
            if (rc == 0)
                rc = write_text(job->dir[c], *file = "cpu.cfs_quota_us", v);
        }
    }
    return rc;
}

static int make_dirs(struct sb_cg_job *job, char *msg, size_t msglen)
{
    for (int i = 0; i < job->n; i++) {
        if (mkdir(job->dir[i], 0755) < 0) {
            int rc = -errno;
            snprintf(msg, msglen, "creating the job cgroup: %s", strerror(errno));
            job->n = i; /* only the ones created are removed */
            return rc;
        }
    }
    return 0;
}

int sb_cg_job_create(const struct sb_cgroups *cg, const char *name, const struct sb_limits *l,
                     const struct sb_limit_report *rep, size_t nrep, struct sb_cg_job *job,
                     char *msg, size_t msglen)
{
    int rc = job_dirs(cg, name, rep, nrep, job);
    const char *file = "";
    if (rc < 0)
        snprintf(msg, msglen, "job cgroup path too long");
    else
        rc = make_dirs(job, msg, msglen);
    if (rc == 0 && (rc = set_limits(job, l, rep, nrep, &file)) < 0)
        snprintf(msg, msglen, "writing cgroup %s: %s", file, strerror(-rc));
    if (rc < 0)
        sb_cg_job_destroy(job);
    return rc;
}

int sb_cg_job_attach(const struct sb_cg_job *job, pid_t pid)
{
    char v[24];
    snprintf(v, sizeof(v), "%d", (int)pid);
    for (int i = 0; i < job->n; i++) {
        int rc = write_text(job->dir[i], "cgroup.procs", v);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void sb_cg_job_kill(const struct sb_cg_job *job)
{
    for (int i = 0; i < job->n; i++)
        (void)write_text(job->dir[i], "cgroup.kill", "1");
}

int64_t sb_cg_job_cpu_ns(const struct sb_cg_job *job)
{
    int i = job->dir_of[SB_CTL_CPUACCT];
    if (i < 0)
        return -1;
    if (job->version[SB_CTL_CPUACCT] == 1)
        return read_int(job->dir[i], "cpuacct.usage");
    int64_t us = read_keyed(job->dir[i], "cpu.stat", "usage_usec");
    return us < 0 ? -1 : us * 1000;
}

/* A cumulative counter since the job's start: the base moves to the value. */
static int64_t since(int64_t v, int64_t *base)
{
    if (v < 0)
        return v;
    int64_t d = v >= *base ? v - *base : v;
    *base = v;
    return d;
}

void sb_cg_job_stats(struct sb_cg_job *job, struct sb_cg_stats *s)
{
    int m = job->dir_of[SB_CTL_MEMORY], p = job->dir_of[SB_CTL_PIDS];
    int c = job->dir_of[SB_CTL_CPU];
    memset(s, 0xff, sizeof(*s)); /* every field -1: unknown */
    s->cpu_ns = sb_cg_job_cpu_ns(job);
    if (m >= 0 && job->version[SB_CTL_MEMORY] == 1) {
        s->mem_peak = read_int(job->dir[m], "memory.max_usage_in_bytes");
        s->mem_limit_hits = read_int(job->dir[m], "memory.failcnt");
        s->oom_kills =
            since(read_keyed(job->dir[m], "memory.oom_control", "oom_kill"), &job->base_oom_kills);
    } else if (m >= 0) {
        s->mem_peak = read_int(job->dir[m], "memory.peak");
        s->mem_limit_hits = read_keyed(job->dir[m], "memory.events", "max");
        s->oom_events = read_keyed(job->dir[m], "memory.events", "oom");
        s->oom_kills = read_keyed(job->dir[m], "memory.events", "oom_kill");
    }
    if (p >= 0)
        s->pids_max_events =
            since(read_keyed(job->dir[p], "pids.events", "max"), &job->base_pids_max);
    if (c >= 0)
        s->cpu_throttled =
            since(read_keyed(job->dir[c], "cpu.stat", "nr_throttled"), &job->base_throttled);
}

int sb_cg_job_destroy(struct sb_cg_job *job)
{
    int first = 0;
    for (int i = 0; i < job->n; i++) {
        int rc = rmdir_retry(job->dir[i], 25);
        if (rc < 0 && first == 0)
            first = rc;
        else if (rc == 0)
            job->dir[i][0] = '\0';
    }
    return first;
}

/* ---------------------------------------------------------------------------
 * Pooled job cgroups (v1)
 *
 * Creating and removing a v1 memory cgroup per job costs more than the rest
 * of the job's cgroup work together (per-CPU state, kernfs nodes, RCU
 * grace periods on removal). A pooled cgroup is created once with every
 * controller in use; per job its limits are written (unset = unlimited),
 * and after the job, if it is empty and (nearly) uncharged, its peak,
 * failure and CPU counters are reset (memory.max_usage_in_bytes,
 * memory.failcnt, cpuacct.usage) for the next one. Counters that cannot be
 * reset (oom_kill, pids.events max, cpu.stat nr_throttled) are reported as
 * deltas (sb_cg_job_stats).
 * ------------------------------------------------------------------------- */

int sb_cg_poolable(const struct sb_cgroups *cg)
{
    int any = 0;
    for (int k = 0; k < SB_CTL_N; k++) {
        if (cg->version[k] == 2)
            return 0;
        any |= cg->version[k] == 1;
    }
    return any;
}

int sb_cg_pool_create(const struct sb_cgroups *cg, const char *name, struct sb_cg_job *job,
                      char *msg, size_t msglen)
{
    int rc = job_dirs(cg, name, NULL, 0, job);
    if (rc < 0) {
        snprintf(msg, msglen, "job cgroup path too long");
        return rc;
    }
    job->pooled = 1;
    if ((rc = make_dirs(job, msg, msglen)) == 0 && job->dir_of[SB_CTL_CPU] >= 0 &&
        (rc = write_text(job->dir[job->dir_of[SB_CTL_CPU]], "cpu.cfs_period_us", "100000")) < 0)
        snprintf(msg, msglen, "writing cgroup cpu.cfs_period_us: %s", strerror(-rc));
    if (rc < 0)
        sb_cg_job_destroy(job);
    return rc;
}

/* memory.limit_in_bytes and memory.memsw.limit_in_bytes (which must never be
 * below the former): memsw opened up first, then both set. */
static int reuse_memory(struct sb_cg_job *job, int64_t bytes, const char **file)
{
    const char *d = job->dir[job->dir_of[SB_CTL_MEMORY]];
    char v[32];
    snprintf(v, sizeof(v), "%lld", (long long)bytes);
    int rc = write_text(d, *file = "memory.memsw.limit_in_bytes", "-1");
    int memsw = rc != -ENOENT; /* no swap accounting on this kernel */
    if (rc < 0 && memsw)
        return rc;
    if ((rc = write_text(d, *file = "memory.limit_in_bytes", v)) < 0)
        return rc;
    if (memsw && bytes >= 0 && (rc = write_text(d, *file = "memory.memsw.limit_in_bytes", v)) < 0)
        return rc;
    job->cur_memory = bytes;
    return 0;
}

int sb_cg_job_reuse(struct sb_cg_job *job, const struct sb_limits *l,
                    const struct sb_limit_report *rep, size_t nrep, char *msg, size_t msglen)
{
    const char *file = "";
    int rc = 0;
    int64_t mem = find(rep, nrep, SB_LIMIT_MEMORY, 1) ? l->memory_bytes : -1;
    int64_t pids = find(rep, nrep, SB_LIMIT_PIDS, 1) ? l->pids + 1 : -1;
    int64_t quota = -1;
    if (find(rep, nrep, SB_LIMIT_CPU_BANDWIDTH, 1))
        quota = l->cpu_millicores * 100 < 1000 ? 1000 : l->cpu_millicores * 100;
    if (job->dir_of[SB_CTL_MEMORY] >= 0 && mem != job->cur_memory)
        rc = reuse_memory(job, mem, &file);
    if (rc == 0 && job->dir_of[SB_CTL_PIDS] >= 0 && pids != job->cur_pids) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)pids);
        rc =
            write_text(job->dir[job->dir_of[SB_CTL_PIDS]], file = "pids.max", pids < 0 ? "max" : v);
        if (rc == 0)
            job->cur_pids = pids;
    }
    if (rc == 0 && job->dir_of[SB_CTL_CPU] >= 0 && quota != job->cur_quota) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)quota);
        rc = write_text(job->dir[job->dir_of[SB_CTL_CPU]], file = "cpu.cfs_quota_us", v);
        if (rc == 0)
            job->cur_quota = quota;
    }
    if (rc < 0)
        snprintf(msg, msglen, "writing cgroup %s: %s", file, strerror(-rc));
    return rc;
}

int sb_cg_job_recycle(struct sb_cg_job *job)
{
    char buf[64];
    int m = job->dir_of[SB_CTL_MEMORY], a = job->dir_of[SB_CTL_CPUACCT];
    if (!job->pooled)
        return 0;
    for (int i = 0; i < job->n; i++)
        if (read_small(job->dir[i], "cgroup.procs", buf, sizeof(buf)) != 0)
            return 0; /* a process (or an unreadable file) */
    if (m >= 0) {
        int64_t used = read_int(job->dir[m], "memory.usage_in_bytes");
        /* pages the dead sandbox left charged (page cache, tmpfs the kernel
         * has not yet let go of): an empty v1 memory cgroup can be emptied
         * on demand, which keeps reuse independent of reclaim timing */
        if (used > SB_CG_REUSE_MAX_BYTES && write_text(job->dir[m], "memory.force_empty", "0") == 0)
            used = read_int(job->dir[m], "memory.usage_in_bytes");
        if (used < 0 || used > SB_CG_REUSE_MAX_BYTES ||
            write_text(job->dir[m], "memory.max_usage_in_bytes", "0") < 0 ||
            write_text(job->dir[m], "memory.failcnt", "0") < 0)
            return 0;
    }
    if (a >= 0 && write_text(job->dir[a], "cpuacct.usage", "0") < 0)
        return 0;
    return 1;
}
