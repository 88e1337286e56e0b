/*
 * workspace: size-limited directories that a session keeps across its jobs.
 *
 * Each workspace is its own tmpfs (size=, nr_inodes= proportional to it)
 * mounted at <run_dir>/ws/<id> in the caller's mount namespace, nosuid and
 * nodev, root directory mode 0700 owned by the job's host uid and gid. The
 * tmpfs bounds the workspace; the pages a job writes are also charged to
 * that job's memory cgroup. Destroying it detaches the mount (a job still
 * running there keeps its view until it ends) and removes the directory.
 * sb_host_new() removes workspaces an earlier run of the same name left.
 *
 * Lifecycle: sb_workspace_create() -> sb_workspace_path() for each job's
 * sb_request.workspace -> sb_workspace_destroy().
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "al_err.h"
#include "al_log.h"
#include "host.h"

struct sb_workspace {
    char path[PATH_MAX];
};

int sb_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > 64 || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

int sb_workspace_create(struct sb_host *h, const char *id, int64_t bytes, struct sb_workspace **out)
{
    if (!h || !out || !sb_id_ok(id) || bytes < SB_WORKSPACE_MIN_BYTES)
        return AL_ERR_INVAL;
    struct sb_workspace *ws = calloc(1, sizeof(*ws));
    if (!ws)
        return AL_ERR_NOMEM;
    int w = snprintf(ws->path, sizeof(ws->path), "%s/%s", h->ws_dir, id);
    if (w < 0 || (size_t)w >= sizeof(ws->path)) {
        free(ws);
        return AL_ERR_INVAL;
    }
    if (mkdir(ws->path, 0700) < 0) {
        int rc = errno == EEXIST ? AL_ERR_EXISTS : -errno;
        free(ws);
        return rc;
    }
    char opts[160];
    long long inodes = bytes / 4096 < 1024 ? 1024 : bytes / 4096;
    snprintf(opts, sizeof(opts), "size=%lld,nr_inodes=%lld,mode=0700,uid=%u,gid=%u",
             (long long)bytes, inodes, h->id_base + h->uid, h->id_base + h->gid);
    if (mount("tmpfs", ws->path, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) {
        int rc = -errno;
        rmdir(ws->path);
        free(ws);
        return rc;
    }
    *out = ws;
    return 0;
}

const char *sb_workspace_path(const struct sb_workspace *ws)
{
    return ws->path;
}

void sb_workspace_destroy(struct sb_workspace *ws)
{
    if (!ws)
        return;
    if (umount2(ws->path, MNT_DETACH) < 0 && errno != EINVAL)
        AL_LOG_WARN("sandbox.workspace", "action=umount error=\"%s\"", strerror(errno));
    if (rmdir(ws->path) < 0)
        AL_LOG_WARN("sandbox.workspace", "action=rmdir error=\"%s\"", strerror(errno));
    free(ws);
}

void sb_workspace_remove_leftovers(const char *ws_dir)
{
    char p[PATH_MAX];
    DIR *d = opendir(ws_dir);
    if (!d)
        return;
    for (struct dirent *e = readdir(d); e; e = readdir(d)) {
        if (e->d_name[0] == '.' || !sb_id_ok(e->d_name))
            continue;
        snprintf(p, sizeof(p), "%s/%s", ws_dir, e->d_name);
        /* only our own tmpfs mounts: never delete files of a plain directory */
        while (umount2(p, MNT_DETACH) == 0)
            ;
        if (rmdir(p) < 0)
            AL_LOG_WARN("sandbox.workspace", "action=remove_leftover error=\"%s\"",
                        strerror(errno));
    }
    closedir(d);
}
