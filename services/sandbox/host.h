/*
 * host: the per-process state shared by every sandbox of this process
 * (internal; the public view is struct sb_host in sandbox.h).
 */
#ifndef SB_HOST_H
#define SB_HOST_H

#include "sb_int.h"

struct sb_host {
    char name[65];
    char run_dir[PATH_MAX];
    char stage[PATH_MAX];  /* mount point of every sandbox's root tmpfs */
    char ws_dir[PATH_MAX]; /* workspaces */
    char cg_rel[PATH_MAX]; /* cgroup parent, relative to our own cgroup */
    int run_dir_made;
    uint32_t uid, gid, id_base;
    int degraded;
    struct sb_cgroups cg;
    struct sb_caps caps;
    struct sock_fprog seccomp;
    int cap_last;
    int ncpu;
    void *stack; /* mapping of the command's clone stack, guard page first
                    (each child uses its own copy) */
    size_t stack_size, stack_map;
    struct al_arena arena; /* the default image */
    struct sb_image image;
    uint64_t seq;
    int children;
    /* the children's pipe reads land here (one loop thread; a read and its
     * callbacks complete before the next read) */
    uint8_t buf[SB_CHUNK_MAX];
    /* job cgroups whose removal failed; retried after later jobs */
    struct sb_cg_job *stale;
    size_t n_stale;
    struct sb_spawner spawner; /* clones every sandbox's init (spawner.c) */
    /* pooled job cgroups (every controller v1): free ones, ready for a job */
    int cg_pooling;
    struct sb_cg_job *cg_pool;
    size_t n_cg_pool, cap_cg_pool;
    uint64_t cg_pool_seq;
};

/* Most pooled job cgroups kept free (one per job running at once is what a
 * steady load needs; the executor runs at most 256). */
#define SB_CG_POOL_MAX 256

/* 1 if id is 1-64 characters of [A-Za-z0-9._-] and not "." or "..". */
int sb_id_ok(const char *id);

/* Unmounts and removes every workspace under ws_dir (an earlier run's). */
void sb_workspace_remove_leftovers(const char *ws_dir);

/* Keeps a job's cgroups whose removal failed, for a later retry. */
void sb_host_defer_cgroups(struct sb_host *h, const struct sb_cg_job *job);

/* Retries removing deferred job cgroups. */
void sb_host_retry_cgroups(struct sb_host *h);

/* The cgroups of a job: a pooled set with the job's limits written (taken
 * from the pool or created) where every controller is v1, else a fresh set
 * named `name` (sb_cg_job_create). On failure (-errno) msg says why. */
int sb_host_job_cgroups(struct sb_host *h, const char *name, const struct sb_limits *l,
                        const struct sb_limit_report *rep, size_t nrep, struct sb_cg_job *job,
                        char *msg, size_t msglen);

/* After the job's stats were read: a pooled set goes back to the pool when
 * sb_cg_job_recycle() allows it; anything else is removed (deferred while
 * the kernel still tears the processes down). */
void sb_host_release_cgroups(struct sb_host *h, struct sb_cg_job *job);

#endif
