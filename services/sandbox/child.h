/*
 * child: one running job as the parent sees it (internal; spawn.c starts it,
 * child.c drives it on the loop until on_exit).
 */
#ifndef SB_CHILD_H
#define SB_CHILD_H

#include <sys/resource.h>
#include <time.h>

#include <ev.h>

#include "host.h"

struct sb_child {
    struct ev_loop *loop;
    struct sb_host *host;
    struct sb_callbacks cb;
    struct al_arena arena; /* the plan, and copies for messages */
    struct sb_plan plan;
    enum sb_kind kind;
    struct sb_limits limits;
    struct sb_limit_report rep[SB_MAX_LIMITS];
    size_t n_rep;
    const char *arg0, *where; /* argv[0] / cwd or file path, for messages */
    char name[80];            /* job cgroup name */
    struct sb_cg_job cg;
    int have_cg;
    /* process */
    pid_t pid;
    int pidfd;
    struct timespec t0, t1;
    int reaped, init_wstatus;
    struct rusage ru;
    /* parent ends of the pipes; -1 once closed */
    int fd_in, fd_out, fd_err, fd_status;
    ev_io w_pid, w_in, w_out, w_err, w_status;
    ev_timer t_wall, t_cpu, t_drain, t_later;
    /* stdin / WRITE_FILE data (borrowed from the request) */
    const uint8_t *input;
    size_t input_len, input_off;
    /* output */
    int64_t off[2];       /* stdout, stderr */
    int64_t output_total; /* delivered, both streams */
    int truncated[2];
    int dropping; /* the output limit was hit: read and drop */
    int paused;
    struct sb_frame_dec dec; /* file operations */
    int dec_ready;
    int64_t file_got;
    /* status records */
    uint8_t msgbuf[sizeof(struct sb_msg)];
    size_t msg_have;
    int have_msg;
    struct sb_msg msg;
    int started;  /* the command's execve succeeded */
    int listened; /* the proxy listeners' record arrived */
    /* verdict inputs */
    int kill_reason, killed;
    int setup_failed; /* the parent could not set up the child */
    enum sb_failure early_failure;
    char detail[160];
    int protocol_error;
    int finished;
};

/* child.c: starts the watchers and timers of a launched child. */
void sb_child_watch(struct sb_child *c);
/* child.c: reports `failure` with `detail` through on_exit from the next
 * loop iteration; the child never started (or is being killed). */
void sb_child_fail(struct sb_child *c, enum sb_failure failure, const char *detail);
/* child.c: kills the sandbox for an internal reason (SB_KILL_*). */
void sb_child_kill(struct sb_child *c, int reason);

/* spawn.c: pipes, clone, id maps, cgroups, go. On error *detail says which
 * step failed; c->pid is set if the child exists (it then exits by itself
 * or is killed by the caller). */
int sb_spawn(struct sb_child *c, char *detail, size_t n);

/* spawn.c, in the spawner: raw clone of a sandbox init with every
 * namespace, a pidfd, exit signal 0 and CLONE_PARENT (the spawner's parent,
 * the sandbox's caller, becomes init's parent). Returns the pid, 0 in the
 * child, -1 with errno. */
long sb_clone_init(int *pidfd);

/* spawn.c: the sandbox's init, following plan p (child side; never returns). */
void sb_init_main(const struct sb_plan *p) __attribute__((noreturn));

/* spawner.c: maps the areas and forks the spawner (from sb_host_new(),
 * before the caller's loop grows). 0 or -errno; on failure nothing is left. */
int sb_spawner_start(struct sb_spawner *sp);

/* spawner.c: ends and reaps the spawner, unmaps the areas. Idempotent. */
void sb_spawner_stop(struct sb_spawner *sp);

/* spawner.c: has the spawner clone an init for plan p with the child's pipe
 * ends fds (stdin read, stdout write, stderr write, status write, go read;
 * borrowed). The spawner is replaced once if it died or hung. Returns init's
 * pid (a child of this process) and sets *pidfd, or < 0 with detail set. */
long sb_spawner_clone(struct sb_spawner *sp, const struct sb_plan *p, const int fds[5], int *pidfd,
                      char *detail, size_t n);

#endif
