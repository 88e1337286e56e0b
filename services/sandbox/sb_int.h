/*
 * sb_int: what the sandbox modules share (not part of the public API).
 *
 * The parent (the caller's process) computes everything the sandbox child
 * needs into a struct sb_plan before clone; the child gets a copy of the
 * parent's memory and only follows the plan, calling async-signal-safe
 * system calls. The child reports a failing step, or the command's end,
 * through fixed-size records (struct sb_msg) on the status pipe.
 *
 * Modules, by which side of clone runs them:
 *   parent only: host.c, cgroup.c, workspace.c, child.c (libev), result.c
 *   both:        env.c, mount.c, limits.c, seccomp.c, ns.c (plan in the
 *                parent, apply in the child)
 *   child only:  net.c, fileops.c, spawn.c's init
 *   codec:       frame.c (child encodes file-op output, parent decodes)
 */
#ifndef SB_INT_H
#define SB_INT_H

#include <limits.h>
#include <linux/filter.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "al_arena.h"
#include "sandbox.h"

#define SB_CHUNK_MAX           65536      /* largest output chunk delivered */
#define SB_READ_DEFAULT_MAX    (16 << 20) /* READ_FILE without max_bytes or output limit */
#define SB_LIST_DEFAULT_MAX    1000
#define SB_LIST_HARD_MAX       100000
#define SB_DEFAULT_TMPFS       (64 << 20)
#define SB_ROOT_TMPFS_OPTS     "size=1m,nr_inodes=4096,mode=0755"
#define SB_DEFAULT_PATH        "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
#define SB_WORKSPACE           "/workspace"
#define SB_WORKSPACE_MIN_BYTES (64 << 10)
#define SB_EXIT_SETUP          125 /* init's exit status after reporting a setup failure */

/* ---------------------------------------------------------------------------
 * Steps the child reports (status records carry the step and errno)
 * ------------------------------------------------------------------------- */
enum sb_step {
    SB_STEP_NONE = 0,
    SB_STEP_FDS,
    SB_STEP_PDEATHSIG,
    SB_STEP_SYNC,
    SB_STEP_NS_ROOT,
    SB_STEP_SETSID,
    SB_STEP_CGROUPNS,
    SB_STEP_HOSTNAME,
    SB_STEP_NET_LO,
    SB_STEP_PROXY_LISTEN, /* index = 4 (127.0.0.1) or 6 ([::1]) */
    SB_STEP_NET_HOOK,
    SB_STEP_MOUNT_PRIVATE,
    SB_STEP_MOUNT_ROOT,
    SB_STEP_MOUNT_OP, /* index = the sb_mnt that failed */
    SB_STEP_PIVOT,
    SB_STEP_ROOT_RO,
    SB_STEP_IDENTITY,
    SB_STEP_GROUPS,
    SB_STEP_SETGID,
    SB_STEP_SECUREBITS,
    SB_STEP_CAPS_BOUND,
    SB_STEP_SETUID,
    SB_STEP_CAPS_CLEAR,
    SB_STEP_NO_NEW_PRIVS,
    SB_STEP_DUMPABLE,
    SB_STEP_SIGNALS,
    SB_STEP_CHDIR,
    SB_STEP_RLIMIT, /* index = the resource */
    SB_STEP_SECCOMP,
    SB_STEP_SPAWN,
    SB_STEP_EXEC,
    SB_STEP_WAIT,
    SB_STEP_COUNT
};

/* Human name of a step ("bringing up loopback", ...). */
const char *sb_step_name(int step);

/* What failed in a file operation (status record `step` of SB_MSG_FILE_ERROR). */
enum sb_fstep {
    SB_FSTEP_PATH = 1, /* the path itself is not acceptable (err = EINVAL, EXDEV...) */
    SB_FSTEP_OPEN,
    SB_FSTEP_TYPE, /* not a regular file / not a directory (ftype says what) */
    SB_FSTEP_READ,
    SB_FSTEP_WRITE,
    SB_FSTEP_MKDIR,
    SB_FSTEP_STAT,
    SB_FSTEP_LIST,
    SB_FSTEP_OUTPUT, /* writing to the parent failed */
    SB_FSTEP_INPUT   /* reading the data from the parent failed */
};

/* FILE_ERROR ftype for a file on a pseudo filesystem (/proc ...); other
 * values are S_IFMT types. */
#define SB_FTYPE_PSEUDO 1

/* Where a failing child step is recorded before it is reported. */
struct sb_fail {
    int step;
    int index;
};

/* ---------------------------------------------------------------------------
 * Status records, child -> parent. Fixed size (< PIPE_BUF: atomic writes).
 * ------------------------------------------------------------------------- */
enum sb_msg_type {
    SB_MSG_SETUP_ERROR = 1, /* step, index, err */
    SB_MSG_EXEC_ERROR,      /* err (of the last execve tried) */
    SB_MSG_EXITED,          /* wstatus of the command */
    SB_MSG_FILE_DONE,       /* size, truncated */
    SB_MSG_FILE_ERROR,      /* step (enum sb_fstep), err, ftype */
    SB_MSG_STARTED,         /* the command's execve succeeded (then EXITED follows) */
    SB_MSG_LISTENING        /* the proxy listeners, numbered in init: step = the
                               127.0.0.1 one, index = the [::1] one or -1 */
};
#define SB_MSG_MAGIC 0x53424d31u

struct sb_msg {
    uint32_t magic;
    uint32_t type;
    int32_t step;
    int32_t index;
    int32_t err;
    int32_t wstatus;
    int32_t ftype;
    int32_t truncated;
    int64_t size;
};

/* Child side: writes one record to the status fd (3). Async-signal-safe. */
void sb_msg_send(const struct sb_msg *m);

/* ---------------------------------------------------------------------------
 * Filesystem plan (mount.c)
 * ------------------------------------------------------------------------- */
enum sb_mnt_kind {
    SB_MNT_DIR = 1,    /* mkdir dst (0755) */
    SB_MNT_FILE,       /* create an empty file dst (a mount point) */
    SB_MNT_SYMLINK,    /* symlink src -> dst */
    SB_MNT_CONTENT,    /* create dst (0644) holding src[0..len) */
    SB_MNT_BIND_RO,    /* bind host src recursively on dst; read-only, nosuid, nodev */
    SB_MNT_BIND_RW,    /* bind host src on dst (not recursive); nosuid, nodev */
    SB_MNT_BIND_OVER,  /* as BIND_RO, on an existing dst inside a read-only bind (no
                          symlink followed on the way) */
    SB_MNT_BIND_DEV,   /* bind a host device node on dst; nosuid, noexec */
    SB_MNT_TMPFS,      /* tmpfs on dst with options src; nosuid, nodev */
    SB_MNT_PROC,       /* a fresh proc on dst; nosuid, nodev, noexec */
    SB_MNT_DEVPTS,     /* a private devpts instance on dst */
    SB_MNT_RDONLY_SELF /* make the mount at dst read-only (e.g. proc/sys) */
};

struct sb_mnt {
    enum sb_mnt_kind kind;
    const char *src; /* host path, symlink target, tmpfs options or content */
    const char *dst; /* inside path without its leading "/" */
    size_t len;      /* SB_MNT_CONTENT: bytes of src */
};

/* An image entry as found on the host (resolved once per host for the
 * default image). */
struct sb_image_entry {
    const char *host;
    const char *inside;
    int type;           /* SB_FT_DIRECTORY, SB_FT_REGULAR (any non-directory) or SB_FT_SYMLINK */
    const char *target; /* SB_FT_SYMLINK */
};

struct sb_image {
    struct sb_image_entry *e;
    size_t n;
};

/* Resolves image entries: lstat each host path; missing ones are skipped
 * when `optional`, else an error. A symlink is replicated only when
 * `symlinks` (image entries), else followed (extra binds). Strings are
 * allocated from a. Returns 0, AL_ERR_INVAL (msg says which), AL_ERR_NOMEM. */
int sb_image_resolve(struct al_arena *a, const struct sb_bind *b, size_t n, int optional,
                     int symlinks, struct sb_image *out, char *msg, size_t msglen);

/* The default image list (NULL-terminated host paths, inside = same). */
extern const char *const sb_default_image[];

/* Checks an inside path of a bind: absolute, normalized, not "/", not under
 * a path the sandbox mounts itself. Returns 0 or AL_ERR_INVAL. */
int sb_inside_path_ok(const char *p);

/* ---------------------------------------------------------------------------
 * The plan of one child
 * ------------------------------------------------------------------------- */
struct sb_rl {
    int resource;
    rlim_t value;
};
#define SB_MAX_RL 8

struct sb_plan {
    enum sb_kind kind;
    /* fds as numbered in the spawner (it sets them); the child moves them to
     * 0, 1, 2, 3, 4 */
    int fd_in, fd_out, fd_err, fd_status, fd_sync;
    uint32_t uid, gid;
    int cap_last;
    const char *hostname;
    uint16_t proxy_port; /* 0 = no proxy listeners */
    struct sb_net_hook net;
    /* filesystem */
    const char *stage; /* host directory the root tmpfs is mounted on */
    const struct sb_mnt *mnt;
    size_t n_mnt;
    /* limits, applied after privileges are dropped */
    struct sb_rl rl[SB_MAX_RL];
    size_t n_rl;
    const struct sock_fprog *seccomp;
    /* EXEC */
    char *const *exec_paths; /* candidates for argv[0], in PATH order */
    size_t n_exec_paths;
    char *const *argv;
    char *const *envp;
    const char *cwd; /* absolute, inside */
    void *stack;     /* stack of the command's vfork-style clone */
    size_t stack_size;
    /* file operations */
    const char *path;    /* READ_FILE / LIST_DIR: absolute inside path */
    const char *ws_path; /* WRITE_FILE: path relative to /workspace */
    struct sb_file_op file;
};

/* spawner.c: copies plan p and everything it points to into dst (cap
 * bytes) as one block whose pointers assume the block lives at address
 * `base` (the spawner's private copy; base = dst gives a usable copy in
 * place). Pointers into the host (seccomp filter, clone stack) are kept:
 * the spawner, forked by sb_host_new(), has them at the same addresses.
 * file.path is cleared (the child uses path and ws_path). Sets *len to the bytes used.
 * Returns 0 or AL_ERR_TOOBIG. */
int sb_plan_flatten(const struct sb_plan *p, void *dst, size_t cap, uintptr_t base, size_t *len);

/* The process that clones the sandboxes' inits (spawner.c). */
struct sb_spawner {
    pid_t pid;    /* 0 when not running */
    int sock;     /* our end of the socketpair, -1 when not running */
    void *shared; /* MAP_SHARED: the caller writes flattened plans here */
    void *stage;  /* MAP_PRIVATE: the spawner's copy (unused in the caller) */
    size_t size;  /* of each area */
};

/* mount.c: builds p->mnt for this job (image: cfg->image resolved now, or
 * the host's resolved default; extra binds; /etc, /dev, /proc, /tmp,
 * /workspace). Bind sources may not be "/", under /proc, /sys or /dev, or
 * overlap run_dir. Returns 0, AL_ERR_INVAL (msg), AL_ERR_NOMEM. */
int sb_mount_plan(struct al_arena *a, const struct sb_image *default_image,
                  const struct sb_config *cfg, const struct sb_request *req, uint32_t uid,
                  uint32_t gid, const char *run_dir, struct sb_plan *p, char *msg, size_t msglen);

/* mount.c, child: builds the filesystem and pivots into it. */
int sb_mount_setup(const struct sb_plan *p, struct sb_fail *f);

/* Short description of mount operation i for messages ("bind-mounting /usr"). */
void sb_mount_describe(const struct sb_plan *p, int i, char *buf, size_t n);

/* ---------------------------------------------------------------------------
 * env.c: environment, argv, PATH search list
 * ------------------------------------------------------------------------- */
#define SB_ENV_MAX_VARS   1024
#define SB_ARGS_MAX_BYTES (1 << 20) /* argv + environment, as execve's limit */

/* 1 if name is [A-Za-z_][A-Za-z0-9_]* and at most 255 bytes. */
int sb_env_name_ok(const char *name);

/* Builds the NULL-terminated "NAME=value" array: the job's variables, the
 * caller's, then PATH and HOME=/workspace unless given. Sets *path to the
 * PATH value used. Returns 0, AL_ERR_INVAL (msg), AL_ERR_NOMEM. */
int sb_env_build(struct al_arena *a, const struct sb_request *req, char ***envp, const char **path,
                 char *msg, size_t msglen);

/* Copies argv into a NULL-terminated array and lists the executables to try
 * for argv[0] (itself when it has a "/", else each PATH entry + "/" +
 * argv[0]; relative PATH entries are relative to the cwd, as execvp does).
 * Returns 0, AL_ERR_INVAL (msg), AL_ERR_NOMEM. */
int sb_argv_build(struct al_arena *a, const struct sb_request *req, const char *path, char ***argv,
                  char ***exec_paths, size_t *n_exec_paths, char *msg, size_t msglen);

/* Copies s into dst (size n) for a message: printable ASCII kept, anything
 * else as '?', cut with "..." when longer than n - 1. */
void sb_printable(char *dst, size_t n, const char *s);

/* ---------------------------------------------------------------------------
 * limits.c: which mechanism enforces what; rlimits
 * ------------------------------------------------------------------------- */

/* What the host can enforce with cgroups: a SB_MECH_CGROUP_V1/V2, or 0. */
struct sb_caps {
    int memory, pids, cpu, cpuacct;
};

/* Fills the report list (kind, mechanism, value; hit = 0) for the limits
 * that are set, in LimitKind order, each once per mechanism. Returns 0, or
 * AL_ERR_CONFIG when a limit cannot be enforced and !degraded (msg says
 * which), AL_ERR_INVAL for a negative limit. */
int sb_limits_decide(const struct sb_caps *caps, const struct sb_limits *l, int degraded,
                     struct sb_limit_report *rep, size_t *n, char *msg, size_t msglen);

/* The rlimits of a job from its limits and the decided mechanisms: always
 * RLIMIT_CORE 0; RLIMIT_CPU, FSIZE, NOFILE when set; AS and NPROC when they
 * are the memory / pids mechanism. */
void sb_limits_rlimits(const struct sb_limits *l, const struct sb_limit_report *rep, size_t n,
                       struct sb_plan *p);

/* Child: applies p->rl. */
int sb_limits_apply(const struct sb_plan *p, struct sb_fail *f);

/* ---------------------------------------------------------------------------
 * seccomp.c
 * ------------------------------------------------------------------------- */

/* Compiles the allow-list into classic BPF (once per host). Returns 0,
 * AL_ERR_CONFIG (libseccomp refused a rule; err says which), AL_ERR_NOMEM. */
int sb_seccomp_build(struct sock_fprog *out, char *err, size_t errlen);
void sb_seccomp_free(struct sock_fprog *p);
/* Child: installs the filter (needs no_new_privs). 0 or -errno. */
int sb_seccomp_load(const struct sock_fprog *p);

/* ---------------------------------------------------------------------------
 * ns.c
 * ------------------------------------------------------------------------- */

/* Parent: writes /proc/<pid>/uid_map and gid_map: inside 0 -> base, inside
 * uid -> base + uid. 0 or -errno. */
int sb_ns_write_maps(pid_t pid, uint32_t uid, uint32_t gid, uint32_t base);

/* Child: parent-death signal, wait for the parent's go, own session,
 * cgroup namespace, host name. */
int sb_ns_enter(const struct sb_plan *p, struct sb_fail *f);

/* Child: blanks the command line and environment init inherited from the
 * caller (readable in /proc/1/cmdline) and renames it "sandbox-init". */
int sb_ns_scrub_identity(struct sb_fail *f);

/* Child: groups, gid, securebits, bounding set, uid, every capability set
 * emptied, no_new_privs, not dumpable. */
int sb_ns_drop_privileges(const struct sb_plan *p, struct sb_fail *f);

/* ---------------------------------------------------------------------------
 * net.c (child): loopback up, the proxy listeners, then the hook.
 * ------------------------------------------------------------------------- */

/* Sets up the network namespace. With p->proxy_port, lfd[0] becomes the
 * socket listening on 127.0.0.1:<port> and lfd[1] the one on [::1]:<port>
 * (-1 where the namespace has no IPv6); both close-on-exec. Else both -1.
 * Returns 0 or -errno with f->step set (the listeners are then closed). */
int sb_net_setup(const struct sb_plan *p, int lfd[2], struct sb_fail *f);

/* ---------------------------------------------------------------------------
 * fileops.c (child): performs p->kind's operation, reports through the status
 * record and the framed stdout. Returns the child's exit status.
 * ------------------------------------------------------------------------- */
int sb_fileop_run(const struct sb_plan *p);

/* ---------------------------------------------------------------------------
 * frame.c: file-operation output on the stdout pipe
 *
 *   frame  = type (1 byte) | length (4 bytes, big endian) | payload
 *   'D'    payload = file bytes (1..65536)
 *   'E'    payload = type (1) | mode (4) | size (8) | mtime_ms (8) | name
 *          (1..255 bytes, no "/" or NUL); integers big endian
 * ------------------------------------------------------------------------- */
#define SB_FRAME_DATA   'D'
#define SB_FRAME_DIRENT 'E'
#define SB_FRAME_HDR    5
#define SB_DIRENT_FIXED 21
#define SB_NAME_MAX     255

/* Encodes a dirent frame into buf (>= SB_FRAME_HDR + SB_DIRENT_FIXED +
 * SB_NAME_MAX). Returns its length, or 0 if the name is unacceptable. */
size_t sb_frame_dirent(uint8_t *buf, const struct sb_dirent *e, size_t name_len);
/* Writes a frame header for a data payload of len bytes into hdr. */
void sb_frame_data_header(uint8_t hdr[SB_FRAME_HDR], size_t len);

/* Incremental decoder (parent). */
struct sb_frame_dec {
    uint8_t hdr[SB_FRAME_HDR];
    size_t hdr_have;
    uint8_t *payload; /* SB_CHUNK_MAX bytes, owned */
    size_t need, have;
    int type;
    char err[96]; /* why decoding failed */
    /* decoded dirents, delivered after each feed */
    struct sb_dirent *ents;
    char *names; /* storage for ents' names */
    size_t n_ents, cap_ents, names_used, names_cap;
};

struct sb_frame_sink {
    /* a complete data frame */
    void (*data)(void *user, const uint8_t *p, size_t n);
    /* the entries decoded so far (from one feed call) */
    void (*dirents)(void *user, const struct sb_dirent *e, size_t n);
    void *user;
};

int sb_frame_dec_init(struct sb_frame_dec *d);
void sb_frame_dec_cleanup(struct sb_frame_dec *d);
/* Feeds bytes; calls the sink for complete frames. Returns 0, or
 * AL_ERR_PROTO (malformed; d->err says why; the decoder is then unusable)
 * or AL_ERR_NOMEM. */
int sb_frame_dec_feed(struct sb_frame_dec *d, const uint8_t *p, size_t n,
                      const struct sb_frame_sink *sink);
/* 1 if the decoder stopped in the middle of a frame. */
int sb_frame_dec_partial(const struct sb_frame_dec *d);

/* Replaces invalid UTF-8 in src[0..n) by U+FFFD into dst (size >= 3n + 1).
 * Returns the output length. */
size_t sb_utf8_sanitize(char *dst, const uint8_t *src, size_t n);

/* ---------------------------------------------------------------------------
 * cgroup.c
 * ------------------------------------------------------------------------- */
enum sb_ctl { SB_CTL_MEMORY = 0, SB_CTL_PIDS, SB_CTL_CPU, SB_CTL_CPUACCT, SB_CTL_N };

/* This process's place in the hierarchies, parsed from /proc/self/cgroup
 * and /proc/self/mountinfo. */
struct sb_cg_where {
    int v1[SB_CTL_N];                /* a v1 hierarchy has the controller */
    char v1_dir[SB_CTL_N][PATH_MAX]; /* our cgroup's directory in it */
    int v2;                          /* a cgroup2 mount holding our cgroup */
    char v2_dir[PATH_MAX];           /* our cgroup's directory in it */
    char v2_mount[PATH_MAX];         /* where that hierarchy is mounted */
};

/* Parses /proc/self/cgroup and /proc/self/mountinfo texts (NUL-terminated).
 * Returns 0 or AL_ERR_INVAL (nothing usable is not an error: all zero). */
int sb_cg_locate(const char *self_cgroup, const char *mountinfo, struct sb_cg_where *w);

/* Unescapes a mountinfo field (\040 and friends) in place. */
void sb_cg_unescape(char *s);

/* Which version serves each controller for `mode`, given where we are and
 * the controllers v2 offers (the text of our cgroup.controllers; NULL = none).
 * Fills v[] with 0, 1 or 2. */
void sb_cg_choose(enum sb_cgroup_mode mode, const struct sb_cg_where *w, const char *v2_controllers,
                  const int v1_writable[SB_CTL_N], int v2_writable, int v[SB_CTL_N]);

struct sb_cgroups {
    int version[SB_CTL_N];           /* 0, 1 or 2 */
    char parent[SB_CTL_N][PATH_MAX]; /* parent directory of job cgroups */
    int v2_kill;                     /* cgroup.kill available */
};

/* Creates the parent cgroups (relative path `rel` under our own) and
 * removes leftover job cgroups in them unless keep. */
int sb_cg_host_init(struct sb_cgroups *cg, enum sb_cgroup_mode mode, const char *rel, int keep,
                    char *err, size_t errlen);
/* Removes the parent cgroups if empty. */
void sb_cg_host_cleanup(struct sb_cgroups *cg, const char *rel);

struct sb_cg_job {
    int n; /* distinct directories */
    char dir[SB_CTL_N][PATH_MAX];
    int version[SB_CTL_N]; /* per controller: 0, 1, 2 */
    int dir_of[SB_CTL_N];  /* per controller: index into dir, or -1 */
    /* pooled (v1): created once, limits rewritten per job, counters reset or
     * taken as deltas from these bases (what they read after the last job) */
    int pooled;
    int64_t base_oom_kills, base_pids_max, base_throttled;
    /* the limits as last written (pooled; -2 = unknown): unchanged ones are
     * not written again */
    int64_t cur_memory, cur_pids, cur_quota;
};

/* Creates the job's cgroups and writes its limits (memory, pids, cpu
 * bandwidth as decided in rep). On failure (-errno) msg names the file. */
int sb_cg_job_create(const struct sb_cgroups *cg, const char *name, const struct sb_limits *l,
                     const struct sb_limit_report *rep, size_t nrep, struct sb_cg_job *job,
                     char *msg, size_t msglen);
/* Moves pid into every job cgroup. 0 or -errno. */
int sb_cg_job_attach(const struct sb_cg_job *job, pid_t pid);
/* v2: cgroup.kill. */
void sb_cg_job_kill(const struct sb_cg_job *job);

struct sb_cg_stats {
    int64_t cpu_ns;         /* -1 unknown */
    int64_t mem_peak;       /* -1 unknown */
    int64_t mem_limit_hits; /* failcnt (v1) / memory.events max (v2) */
    int64_t oom_kills;      /* memory.oom_control oom_kill (v1) / memory.events oom_kill (v2) */
    int64_t oom_events;     /* v2 memory.events oom; v1: -1 */
    int64_t pids_max_events;
    int64_t cpu_throttled;
};
/* Reads the job's counters; on a pooled cgroup the cumulative ones are given
 * since the job's start and their bases move to the values read. */
void sb_cg_job_stats(struct sb_cg_job *job, struct sb_cg_stats *s);
/* CPU usage so far in ns, or -1. */
int64_t sb_cg_job_cpu_ns(const struct sb_cg_job *job);
/* Removes the job's cgroups (retrying briefly while the kernel finishes
 * the exits). 0 or -errno of the first that stayed. */
int sb_cg_job_destroy(struct sb_cg_job *job);

/* Pooled job cgroups: only where every controller in use is v1 (v2's
 * memory.peak cannot be reset on every kernel; v2 jobs get a fresh cgroup).
 * A pooled cgroup is reused only when it holds no process and at most
 * SB_CG_REUSE_MAX_BYTES of memory charges (e.g. kernel objects the previous
 * job left being freed; a session workspace's pages stay charged to the
 * cgroup of the job that wrote them, so such a cgroup is removed instead). */
#define SB_CG_REUSE_MAX_BYTES (1 << 20)
int sb_cg_poolable(const struct sb_cgroups *cg);
/* Creates pooled cgroup `name` with every controller in use, no limits. On
 * failure (-errno) msg names what failed and nothing is left. */
int sb_cg_pool_create(const struct sb_cgroups *cg, const char *name, struct sb_cg_job *job,
                      char *msg, size_t msglen);
/* Writes a job's limits into a pooled cgroup (unset = unlimited; unchanged
 * ones skipped). On failure (-errno) msg names the file. */
int sb_cg_job_reuse(struct sb_cg_job *job, const struct sb_limits *l,
                    const struct sb_limit_report *rep, size_t nrep, char *msg, size_t msglen);
/* After a job (its stats read): 1 if the pooled cgroup is empty and holds
 * at most SB_CG_REUSE_MAX_BYTES, with its peak, failure and CPU counters
 * reset for the next job; 0 if it must be removed instead. */
int sb_cg_job_recycle(struct sb_cg_job *job);

/* Parsers of cgroup files (pure; unit tested). */
int64_t sb_cg_keyed(const char *text, const char *key); /* "key value" lines; -1 if absent */

/* ---------------------------------------------------------------------------
 * result.c
 * ------------------------------------------------------------------------- */

/* What the parent observed about one child, for the verdict. */
struct sb_outcome {
    enum sb_kind kind;
    int kill_reason;  /* enum sb_failure (sb_kill) or SB_KILL_*; 0 = none */
    int setup_failed; /* the parent failed to set the child up */
    enum sb_failure early_failure;
    int started;  /* EXEC: the command's execve succeeded */
    int have_msg; /* the child's status record */
    struct sb_msg msg;
    int init_reaped;
    int init_wstatus;
    int protocol_error; /* the child's output did not decode */
    int truncated;      /* output dropped at the output limit */
    const char *arg0;   /* EXEC: argv[0] */
    const char *where;  /* EXEC: cwd; file operations: the inside path */
    int proxy_port;     /* EXEC: sb_request.proxy_port */
    char detail[160];   /* the parent's description of its failure */
    char mount_op[128]; /* the failing mount operation, described */
    struct sb_cg_stats cg;
};
/* Internal kill reasons (beyond enum sb_failure). */
#define SB_KILL_WALL     100
#define SB_KILL_CPU      101
#define SB_KILL_OUTPUT   102
#define SB_KILL_PROTOCOL 103

/* Fills r's termination, failure, message, file results and the limits'
 * hit flags from o (r's counters and limit list are filled before). */
void sb_result_verdict(struct sb_result *r, const struct sb_outcome *o, const struct sb_limits *l);

#endif
