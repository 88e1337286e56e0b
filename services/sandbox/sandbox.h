/*
 * sandbox: runs one job (a command or a file operation) in a Linux sandbox on
 * a libev loop and reports how it ended. airlock-executor calls it for every
 * job; airlock-sandbox (main.c) is its command-line driver.
 *
 * Isolation (DESIGN.md, invariant 4). Each job gets new user, pid, mount, net,
 * ipc, uts and cgroup namespaces; pivot_root into a fresh size-limited tmpfs
 * that holds read-only binds of the image (default: the host's /usr, /bin,
 * /sbin, /lib*, a few /etc files, and a generated passwd/group/hosts/
 * resolv.conf/nsswitch.conf), a fresh /proc, a minimal /dev (null, zero,
 * full, random, urandom, tty, a private devpts) with a size-limited /dev/shm,
 * a size-limited /tmp and the workspace at /workspace. Every mount is nosuid
 * and nodev (the device binds excepted), the root is read-only. The job runs
 * as an unprivileged uid with no capabilities in any set, no_new_privs, a
 * seccomp allow-list (seccomp.c lists it), only fds 0-2, in its own session,
 * and dies with the thread that started it (parent-death signal).
 *
 * Network. The network namespace is empty except a loopback interface: no
 * address outside the sandbox is reachable (ENETUNREACH), the host's loopback
 * included (the sandbox's 127.0.0.1 and ::1 are its own). The only way out
 * is the egress proxy: with sb_request.proxy_port, init listens on
 * 127.0.0.1:<port> and [::1]:<port> inside the namespace before anything of
 * the job runs (so the job can never take that port), and the caller gets
 * the listening descriptors through on_listen (taken from init with
 * pidfd_getfd) to hand to the proxy, which accepts the job's connections
 * from outside the sandbox. Init holds its copies until it exits; the
 * command never inherits them.
 *
 * Process tree:
 *   caller (this library, on its libev loop)
 *     |- sb-spawner: forked by sb_host_new(), clones every init on the
 *     |  caller's behalf (CLONE_PARENT: each init is the caller's child), so
 *     |  an init's memory is a copy of this small process, not of the caller
 *     |  as it grew (spawner.c says why)
 *     `- sandbox init: pid 1 of the new pid namespace. Sets everything up
 *        (loopback, the proxy listeners, the filesystem, privileges), then
 *        either starts the command and reaps orphans until the command
 *        exits (EXEC), or performs the file operation itself (READ_FILE,
 *        WRITE_FILE, LIST_DIR: same isolation, no exec).
 *          `- the command (fds 0-2 only)
 *   When init exits, the kernel kills whatever is left in the sandbox.
 *
 * Job cgroups: where every controller is cgroup v1 they are pooled (created
 * once, limits rewritten per job, reused only when empty; cgroup.c), else
 * made and removed per job.
 *
 * Limits (struct sb_limits) are enforced by the best mechanism the host has:
 * memory and pids by cgroup v2 where delegated, else cgroup v1, else rlimits
 * (RLIMIT_AS / RLIMIT_NPROC, only with sb_host_options.degraded); CPU time by
 * RLIMIT_CPU plus the cgroup's CPU accounting checked by a timer; CPU
 * bandwidth by cpu.max / cpu.cfs_quota_us; wall time by a timer; output by
 * counting the pipes; file size and open files by rlimits. Every tmpfs the
 * job writes counts toward its memory cgroup. The result lists each limit
 * with the mechanism that enforced it and whether the job hit it.
 *
 * Lifecycle:
 *   sb_host_new() once per process
 *     -> sb_workspace_create() per session (or any host directory; a job
 *        may also have a private workspace made inside its sandbox)
 *     -> sb_start() per job ... on_output* ... on_exit (exactly once)
 *     -> sb_workspace_destroy()
 *   -> sb_host_free() once every child has reported on_exit (not from
 *      inside an on_exit callback).
 *
 * Threading: one libev loop, one thread. The sandbox is killed when the
 * thread that called sb_host_new() exits (PR_SET_PDEATHSIG: it is the parent
 * of the spawner and of every init), so that thread must live as long as the
 * jobs; sb_start() is called on the same thread. The process must run as root (it maps user ids and
 * creates cgroups); SIGPIPE is set to SIG_IGN by sb_host_new() if it was
 * SIG_DFL (writing a job's stdin must not kill the caller).
 *
 * Errors: functions return 0 or a negative AL_ERR_* / -errno (al_err.h).
 * Enum values below equal the ones of proto/airlock/v1/intake.proto
 * (JobKind, LimitKind, EnforcementMechanism, FailureReason, FileType), so the
 * executor copies them into a JobResult as they are (checked at compile time
 * in result.c).
 */
#ifndef SB_SANDBOX_H
#define SB_SANDBOX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct ev_loop; /* libev */

/* What a job does (= airlock.v1.JobKind). */
enum sb_kind { SB_EXEC = 1, SB_READ_FILE = 2, SB_WRITE_FILE = 3, SB_LIST_DIR = 4 };

/* A resource limit (= airlock.v1.LimitKind). */
enum sb_limit_kind {
    SB_LIMIT_WALL_TIME = 1,
    SB_LIMIT_CPU_TIME = 2,
    SB_LIMIT_MEMORY = 3,
    SB_LIMIT_PIDS = 4,
    SB_LIMIT_FILE_SIZE = 5,
    SB_LIMIT_OPEN_FILES = 6,
    SB_LIMIT_OUTPUT = 7,
    SB_LIMIT_CPU_BANDWIDTH = 8
};

/* What enforced a limit (= airlock.v1.EnforcementMechanism). */
enum sb_mechanism {
    SB_MECH_CGROUP_V2 = 1,
    SB_MECH_CGROUP_V1 = 2,
    SB_MECH_RLIMIT = 3,
    SB_MECH_TIMER = 4,
    SB_MECH_EXECUTOR = 5,
    SB_MECH_NONE = 6
};

/* Why a job did not succeed (= airlock.v1.FailureReason; the values intake
 * sets itself, QUEUE_TIMEOUT and EXECUTOR_LOST, never come from here). */
enum sb_failure {
    SB_FAIL_NONE = 0,
    SB_FAIL_NONZERO_EXIT = 1,
    SB_FAIL_SIGNALED = 2,
    SB_FAIL_LIMIT_EXCEEDED = 3,
    SB_FAIL_TIMEOUT = 4,
    SB_FAIL_CANCELLED = 6,
    SB_FAIL_SANDBOX_SETUP = 8,
    SB_FAIL_EXEC_FAILED = 9,
    SB_FAIL_FILE_ERROR = 10,
    SB_FAIL_POLICY_DENIED = 11,
    SB_FAIL_INTERNAL = 12
};

/* Type of a listed directory entry (= airlock.v1.FileType). */
enum sb_file_type {
    SB_FT_UNKNOWN = 0,
    SB_FT_REGULAR = 1,
    SB_FT_DIRECTORY = 2,
    SB_FT_SYMLINK = 3,
    SB_FT_OTHER = 4
};

/* Where a chunk of output comes from. */
enum sb_stream {
    SB_STDOUT = 1,
    SB_STDERR = 2,
    SB_FILE_DATA = 3 /* READ_FILE content; offset is the file offset */
};

/* How sb_host_new() picks the cgroup version. */
enum sb_cgroup_mode {
    SB_CGROUPS_AUTO = 0, /* per controller: v2 if delegated to us, else v1 if mounted */
    SB_CGROUPS_V2,       /* cgroup v2 only */
    SB_CGROUPS_V1,       /* cgroup v1 only */
    SB_CGROUPS_NONE      /* no cgroups: rlimits only (strict mode then refuses memory
                            and CPU-bandwidth limits) */
};

/* Limits of one job (mirrors airlock.v1.ResourceLimits). 0 = no limit of that
 * kind: the caller applies the pool's defaults and ceilings before. Negative
 * values are refused. */
struct sb_limits {
    int64_t wall_time_ms; /* sandbox lifetime, from clone to exit */
    int64_t cpu_time_ms;  /* user + system of all processes */
    int64_t memory_bytes; /* all processes and every tmpfs they write */
    int64_t pids;         /* processes and threads alive at once */
    int64_t file_size_bytes;
    int64_t open_files;     /* per process */
    int64_t output_bytes;   /* stdout + stderr; beyond it the job is stopped */
    int64_t cpu_millicores; /* CPU bandwidth, 1000 = one CPU */
};

/* ---------------------------------------------------------------------------
 * Host: one per process
 * ------------------------------------------------------------------------- */

struct sb_host_options {
    /* Instance name, 1-64 characters of [A-Za-z0-9._-]: names this process's
     * cgroup parent and run directory. Two live processes must not share it:
     * sb_host_new() removes what an earlier run of the same name left. */
    const char *name;
    /* Directory for the sandbox roots' mount point and the workspaces
     * (created 0711); NULL = "/run/airlock-sandbox/<name>". */
    const char *run_dir;
    /* Parent of the job cgroups, relative to this process's own cgroup in
     * each hierarchy; NULL = "airlock/<name>". */
    const char *cgroup_parent;
    enum sb_cgroup_mode cgroups;
    /* 0 (strict): refuse jobs whose limits cannot all be enforced as
     * documented (memory needs a memory cgroup, since rlimits do not count
     * tmpfs; CPU bandwidth needs a cpu cgroup). 1: run them anyway, with the
     * weaker mechanism or SB_MECH_NONE reported. */
    int degraded;
    /* User and group ids of the job inside the sandbox; 0 = 1000. */
    uint32_t uid, gid;
    /* Host ids the sandbox's ids map to: inside 0 -> id_base, inside uid ->
     * id_base + uid (gids alike); 0 = 1000000000. No host file is owned by
     * these ids except the workspaces, so host root-owned files appear as
     * the overflow id (65534) and grant nothing. */
    uint32_t id_base;
    /* 1 = keep what an earlier run of the same name left (used by tools that
     * share a name with a live process; never by the executor). */
    int keep_leftovers;
};

struct sb_host;

/*
 * Probes the host and prepares it: user namespaces usable, kernel features
 * (pidfd, mount_setattr, openat2, close_range), cgroup hierarchies and our
 * place in them (/proc/self/cgroup, /proc/self/mountinfo), creates the parent
 * cgroups (enabling controllers on the way for v2; if our own cgroup holds
 * this process, the process moves to <own>/supervisor first, as v2 requires),
 * removes leftover job cgroups and workspaces of an earlier run of the same
 * name, builds the seccomp filter, resolves the default image and, last,
 * forks the spawner (a child process named sb-spawner; call this early,
 * before the process holds much memory or any secret it need not share with
 * every sandbox's init). opts is copied.
 * Returns 0, AL_ERR_INVAL (bad option), AL_ERR_CONFIG (the host cannot
 * sandbox as asked: no user namespaces, old kernel, not root, required cgroup
 * controller missing in strict mode), AL_ERR_NOMEM or -errno; on failure a
 * one-line reason for the operator is in err (may be NULL).
 */
int sb_host_new(const struct sb_host_options *opts, struct sb_host **out, char *err, size_t errlen);

/* Ends and reaps the spawner, removes the pooled job cgroups, the parent
 * cgroups (when empty) and the run directory's mount point. Every child must
 * have reported on_exit before. NULL-safe. */
void sb_host_free(struct sb_host *h);

/* The mechanism that enforces limit `kind` on this host (the primary one
 * when several do, e.g. CPU time: cgroup accounting before RLIMIT_CPU);
 * SB_MECH_NONE if nothing can. */
enum sb_mechanism sb_host_mechanism(const struct sb_host *h, enum sb_limit_kind kind);

/* What sb_host_new() found, for operators (airlock-sandbox --probe). Strings
 * are borrowed from the host. */
struct sb_host_info {
    const char *name;
    uint32_t uid, gid;           /* inside */
    uint32_t host_uid, host_gid; /* what they map to */
    int degraded;
    /* per controller: cgroup version used (0 = none) and the parent directory
     * of the job cgroups ("" when unused) */
    int memory_version, pids_version, cpu_version, cpuacct_version;
    const char *memory_dir, *pids_dir, *cpu_dir, *cpuacct_dir;
    const char *run_dir;
    size_t seccomp_instructions;
};
void sb_host_get_info(const struct sb_host *h, struct sb_host_info *info);

/* ---------------------------------------------------------------------------
 * Workspaces: size-limited directories a session keeps across its jobs
 * ------------------------------------------------------------------------- */

struct sb_workspace;

/*
 * Creates workspace `id` (1-64 characters of [A-Za-z0-9._-]): a tmpfs of
 * `bytes` (>= 64 KiB; its pages count toward the memory of the job that
 * writes them) mounted at <run_dir>/ws/<id>, mode 0700, owned by the job's
 * host uid, nosuid, nodev. Returns 0, AL_ERR_INVAL, AL_ERR_EXISTS (id in
 * use), AL_ERR_NOMEM or -errno (mkdir, mount).
 */
int sb_workspace_create(struct sb_host *h, const char *id, int64_t bytes,
                        struct sb_workspace **out);

/* Host path of the workspace, for sb_request.workspace (borrowed; valid
 * until sb_workspace_destroy()). */
const char *sb_workspace_path(const struct sb_workspace *ws);

/* Unmounts (lazily: a job still running there keeps its view until it ends)
 * and removes the workspace, and frees ws. NULL-safe. */
void sb_workspace_destroy(struct sb_workspace *ws);

/* ---------------------------------------------------------------------------
 * Configuration of the sandbox image
 * ------------------------------------------------------------------------- */

/* A read-only bind: host path -> path inside (NULL = same path). Inside
 * paths are absolute, without "." / ".." components, and not under /proc,
 * /dev, /tmp or /workspace. */
struct sb_bind {
    const char *host;
    const char *inside;
};

/* Called in the sandbox child after the loopback interface is up and the
 * proxy listeners (sb_request.proxy_port) exist, before the filesystem is
 * built (room for further network plumbing). Runs as
 * root of the sandbox's user namespace with all its capabilities; must only
 * make async-signal-safe calls. The child is cloned from the host's spawner,
 * a copy of this process as it was when sb_host_new() returned: `arg` must
 * point to memory that existed then and has not changed since (or carry no
 * pointer at all). Returns 0 or -errno (the job then fails with
 * SANDBOX_SETUP at step "network hook"). */
struct sb_net_hook {
    int (*setup)(void *arg);
    void *arg;
};

struct sb_config {
    /* Image: NULL = the default (the host's /usr, /bin, /sbin, /lib, /lib64,
     * /lib32, /libx32 and the /etc entries listed in mount.c, each only if
     * present). Else these entries, each of which must exist. A host symlink
     * in the image becomes the same symlink (/bin -> usr/bin); a directory or
     * file is bound read-only, recursively. Sources may not be "/", under
     * /proc, /sys or /dev, or overlap the host's run_dir; a "*" in a host
     * path is a glob. */
    const struct sb_bind *image;
    size_t n_image;
    /* Extra read-only binds on top of the image (each must exist; symlinks
     * in the host path are followed; same source rules as the image). */
    const struct sb_bind *binds;
    size_t n_binds;
    /* 1 = do not generate /etc/passwd, group, hosts, hostname, resolv.conf
     * (empty) and nsswitch.conf. */
    int no_generated_etc;
    /* Host name inside; NULL = "sandbox". */
    const char *hostname;
    /* tmpfs sizes in bytes: 0 = the job's memory limit, or 64 MiB without
     * one (the memory cgroup is the real bound; these cap each tmpfs). */
    int64_t tmp_bytes, shm_bytes;
    struct sb_net_hook net;
};

/* ---------------------------------------------------------------------------
 * Jobs
 * ------------------------------------------------------------------------- */

struct sb_env {
    const char *name;
    const char *value;
};

struct sb_file_op {
    /* Path inside the sandbox; relative = relative to /workspace. Only
     * regular files (directories for LIST_DIR); a final symlink is not
     * followed; nothing on /proc or another pseudo filesystem.
     * WRITE_FILE: must lie inside /workspace; no "..", no symlink on the way. */
    const char *path;
    uint32_t mode;        /* WRITE_FILE: mode of a new file (& 0777); 0 = 0644 */
    int append;           /* WRITE_FILE */
    int make_parents;     /* WRITE_FILE: create missing directories (0755) */
    int64_t offset_bytes; /* READ_FILE */
    int64_t max_bytes;    /* READ_FILE: 0 = limits.output_bytes, or 16 MiB */
    int32_t max_entries;  /* LIST_DIR: 0 = 1000; at most 100000 */
};

struct sb_request {
    enum sb_kind kind;
    /* EXEC: argv[0..argc-1]; argv[0] without "/" is searched in PATH. */
    const char *const *argv;
    size_t argc;
    /* The job's environment variables: names [A-Za-z_][A-Za-z0-9_]*, none
     * starting with "AIRLOCK_" (reserved), no duplicates. */
    const struct sb_env *env;
    size_t n_env;
    /* The caller's own variables (credential placeholders, proxy settings):
     * same syntax, AIRLOCK_ allowed, must not collide with env. */
    const struct sb_env *env_internal;
    size_t n_env_internal;
    /* EXEC working directory; relative = relative to /workspace; NULL or ""
     * = /workspace. */
    const char *cwd;
    /* EXEC: bytes for the command's stdin (then closed). WRITE_FILE: the
     * content to write. Borrowed until on_exit. */
    const uint8_t *input;
    size_t input_len;
    struct sb_file_op file; /* READ_FILE, WRITE_FILE, LIST_DIR */
    struct sb_limits limits;
    /* Host directory mounted read-write at /workspace: an
     * sb_workspace_path(), or any directory writable by the job's host uid
     * whose parents are searchable by others. NULL: the job gets a private
     * workspace instead, a fresh tmpfs of workspace_bytes (>= 64 KiB) made
     * inside the sandbox (mode 0700, owned by the job's user, nosuid,
     * nodev; its pages count toward the job's memory) that ends with it --
     * no host mount or directory at all, the cheap choice for a job whose
     * files nobody keeps. */
    const char *workspace;
    int64_t workspace_bytes;
    /* Job id for cgroup names and logs, 1-64 characters of [A-Za-z0-9._-];
     * NULL = a counter. Must be unique among this host's running jobs. */
    const char *id;
    /* EXEC only (AL_ERR_INVAL otherwise); 0 = none. Init listens on
     * 127.0.0.1:<proxy_port> and [::1]:<proxy_port> in the sandbox's network
     * namespace (TCP, SO_REUSEADDR, backlog SOMAXCONN; [::1] skipped only
     * where the namespace has no IPv6) before the filesystem, the privilege
     * drop and the command, and hands the descriptors out through on_listen.
     * Failing to listen is SANDBOX_SETUP at step "proxy listener". */
    uint16_t proxy_port;
};

/* One entry listed by LIST_DIR (borrowed for the callback's duration). */
struct sb_dirent {
    const char *name; /* valid UTF-8 (invalid bytes become U+FFFD) */
    enum sb_file_type type;
    int64_t size;     /* regular files; 0 otherwise */
    uint32_t mode;    /* st_mode & 07777 */
    int64_t mtime_ms; /* Unix ms */
};

#define SB_MAX_LIMITS  16
#define SB_MESSAGE_MAX 256

struct sb_limit_report {
    enum sb_limit_kind kind;
    enum sb_mechanism mechanism;
    int64_t value; /* effective value, in the unit of the sb_limits field */
    int hit;       /* the job reached it */
};

struct sb_result {
    /* EXEC only: the command ran; exactly one of exit_code (term_signal ==
     * 0) or term_signal describes how it ended. */
    int started;
    int exit_code;
    int term_signal;
    int64_t cpu_time_ms;
    int64_t wall_time_ms;
    int64_t max_rss_bytes;
    int64_t stdout_bytes, stderr_bytes; /* delivered through on_output */
    int stdout_truncated, stderr_truncated;
    int data_truncated;      /* READ_FILE: cut at max_bytes; LIST_DIR: at max_entries */
    int64_t file_size_bytes; /* READ_FILE: size of the file; WRITE_FILE: after writing */
    struct sb_limit_report limits[SB_MAX_LIMITS];
    size_t n_limits;
    enum sb_failure failure;
    /* Why it failed, one line, safe to show to the agent (names only what
     * the job itself gave: its paths, its argv[0]). "" on success. */
    char message[SB_MESSAGE_MAX];
};

struct sb_child;

struct sb_callbacks {
    /* A chunk (1..65536 bytes) of stdout, stderr or READ_FILE data, in
     * order; offset is its position in that stream (in the file for
     * SB_FILE_DATA). data is borrowed for the call. May be NULL. */
    void (*on_output)(struct sb_child *c, enum sb_stream stream, const uint8_t *data, size_t len,
                      int64_t offset, void *user);
    /* LIST_DIR entries, in batches. May be NULL. */
    void (*on_dir)(struct sb_child *c, const struct sb_dirent *entries, size_t n, void *user);
    /* The proxy listeners of a job with proxy_port: fds[0] listens on
     * 127.0.0.1:<port>, fds[1] (n = 2) on [::1]:<port>; n = 1 when the
     * sandbox has no IPv6. The descriptors are the caller's from here on
     * (close-on-exec, blocking; closing them does not stop the job); the
     * sockets live as long as the caller's or init's copy, so connections
     * stop being accepted only when both are closed. Runs at most once, from
     * the loop, always before on_exit; it does not run when init died, or
     * the sandbox was being killed, before the descriptors could be taken
     * (the job then fails or ends as usual). Init reports the listeners
     * before it builds the filesystem, so in practice this runs before the
     * command can connect; a connection made earlier waits in the backlog.
     * May be NULL (the library then closes them). */
    void (*on_listen)(struct sb_child *c, const int *fds, size_t n, void *user);
    /* Runs exactly once, from the loop (never from inside sb_start() or
     * sb_kill()), after every process of the sandbox is gone and all output
     * was delivered. result is borrowed for the call; c is freed when it
     * returns. sb_start() may be called from here. Required. */
    void (*on_exit)(struct sb_child *c, const struct sb_result *result, void *user);
    void *user;
};

/*
 * Checks a request against the configuration and the host without running
 * anything: syntax of argv/env/paths/ids, workspace directory, limits, and
 * (strict mode) that every requested limit can be enforced. Writes a
 * one-line reason safe for the agent into msg (may be NULL).
 * Returns 0, AL_ERR_INVAL (malformed request or config) or AL_ERR_CONFIG (a
 * limit cannot be enforced on this host; report POLICY_DENIED).
 */
int sb_request_check(const struct sb_host *h, const struct sb_config *cfg,
                     const struct sb_request *req, char *msg, size_t msglen);

/*
 * Starts a job. cfg and req (except req->input) are used before this
 * returns; req->input is borrowed until on_exit; cbs is copied. On success
 * (0) *out is valid until on_exit returns, and on_exit will run exactly
 * once -- also when the sandbox cannot be set up (SANDBOX_SETUP, with the
 * failing step), the command cannot be executed (EXEC_FAILED) or a file
 * operation fails (FILE_ERROR).
 * Returns 0, AL_ERR_INVAL / AL_ERR_CONFIG (as sb_request_check(); use it to
 * get the message) or AL_ERR_NOMEM; on error no callback ever runs.
 */
int sb_start(struct ev_loop *loop, struct sb_host *h, const struct sb_config *cfg,
             const struct sb_request *req, const struct sb_callbacks *cbs, struct sb_child **out);

/*
 * Kills every process of the sandbox (SIGKILL to its init, which takes the
 * pid namespace down; cgroup.kill too on v2). `reason` becomes the result's
 * failure (usually SB_FAIL_CANCELLED) unless the job had already ended or a
 * limit had already stopped it. Bounded: on_exit follows from the loop.
 * Idempotent; valid until on_exit returns.
 */
void sb_kill(struct sb_child *c, enum sb_failure reason);

/* Stops (paused = 1) or resumes reading the job's output: a caller whose
 * consumer is slow lets the pipes fill so the job blocks on its writes.
 * Time limits keep running. */
void sb_pause(struct sb_child *c, int paused);

/* Host pid of the sandbox's init (for logs); 0 if it never started. */
pid_t sb_child_pid(const struct sb_child *c);

/* Upper-case names as in the proto enums without their prefix ("MEMORY",
 * "CGROUP_V1", "NONZERO_EXIT", ...); "UNKNOWN" for other values. */
const char *sb_limit_name(enum sb_limit_kind k);
const char *sb_mechanism_name(enum sb_mechanism m);
const char *sb_failure_name(enum sb_failure f);
const char *sb_file_type_name(enum sb_file_type t);

#endif
