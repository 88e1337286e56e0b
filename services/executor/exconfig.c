/* exconfig: schema of airlock-executor's own keys; see exconfig.h. */
#include "exconfig.h"

#define EC(member, type) AL_CFG_OFF(struct ex_config, member, type)

static const struct al_cfg_field fields[] = {
    {"intake.addr", AL_CFG_STRING, EC(intake_addr, char *), "127.0.0.1:7400",
     "intake's ExecutorService address host:port (the executor dials out)", 0, 0, 0, NULL, NULL},
    {"intake.peer", AL_CFG_STRING, EC(intake_peer, char *), "spiffe://airlock/intake/",
     "SPIFFE id prefix intake's certificate must carry", 0, 0, 0, NULL, NULL},
    {"slots", AL_CFG_INT, EC(slots, int), "2", "jobs this executor runs at once", 1, 256, 0, NULL,
     NULL},
    {"pools", AL_CFG_STRLIST, EC(pools, char **), "",
     "pools to lease from; empty = every pool intake assigns to this identity", 0, 0, 0, NULL,
     NULL},
    {"lease.reconnect_min", AL_CFG_DURATION_MS, EC(reconnect_min_ms, long long), "200ms",
     "first delay before re-opening a broken Lease stream (doubles, jittered)", 10, 60000, 0, NULL,
     NULL},
    {"lease.reconnect_max", AL_CFG_DURATION_MS, EC(reconnect_max_ms, long long), "10s",
     "longest delay between Lease stream reconnects", 100, 600000, 0, NULL, NULL},
    {"lease.safety_margin", AL_CFG_DURATION_MS, EC(safety_margin_ms, long long), "1s",
     "stop a job this long before its lease could lapse without a heartbeat", 50, 60000, 0, NULL,
     NULL},
    {"drain.grace", AL_CFG_DURATION_MS, EC(drain_grace_ms, long long), "30s",
     "on SIGTERM: how long running jobs may finish before they are handed back", 0, 3600000, 0,
     NULL, NULL},
    {"push.max_batch", AL_CFG_SIZE, EC(push_max_batch, size_t), "1MiB",
     "largest PushEvents batch (bytes of events)", 65536, 16 << 20, 0, NULL, NULL},
    {"limits.wall_time", AL_CFG_DURATION_MS, EC(lim_wall_ms, long long), "10m",
     "longest wall-clock life of a job's sandbox (ceiling and default)", 100, 7LL * 86400000, 0,
     NULL, NULL},
    {"limits.cpu_time", AL_CFG_DURATION_MS, EC(lim_cpu_ms, long long), "10m",
     "CPU time of all of a job's processes (ceiling and default)", 100, 7LL * 86400000, 0, NULL,
     NULL},
    {"limits.memory", AL_CFG_SIZE, EC(lim_memory, size_t), "512MiB",
     "memory of a job, tmpfs pages included (ceiling and default)", 4 << 20, 1LL << 40, 0, NULL,
     NULL},
    {"limits.pids", AL_CFG_INT, EC(lim_pids, int), "256",
     "processes and threads of a job alive at once (ceiling and default)", 1, 1 << 22, 0, NULL,
     NULL},
    {"limits.file_size", AL_CFG_SIZE, EC(lim_file_size, size_t), "1GiB",
     "largest file a job may write (ceiling and default)", 4096, 1LL << 40, 0, NULL, NULL},
    {"limits.open_files", AL_CFG_INT, EC(lim_open_files, int), "1024",
     "open files per process (ceiling and default)", 16, 1 << 20, 0, NULL, NULL},
    {"limits.output", AL_CFG_SIZE, EC(lim_output, size_t), "16MiB",
     "stdout + stderr of a job (ceiling and default)", 1024, 1LL << 34, 0, NULL, NULL},
    {"limits.cpu_millicores", AL_CFG_INT, EC(lim_cpu_millicores, int), "0",
     "CPU bandwidth of a job in thousandths of a CPU; 0 = not limited", 0, 1 << 20, 0, NULL, NULL},
    {"sandbox.name", AL_CFG_STRING, EC(sandbox_name, char *), "",
     "names this executor's cgroups and run directory (leftovers of an earlier run of the same "
     "name are removed at start); empty = the last segment of our SPIFFE id. Executors sharing "
     "a host need distinct names",
     0, 0, 0, NULL, NULL},
    {"sandbox.work_dir", AL_CFG_STRING, EC(work_dir, char *), "",
     "directory of the sandbox roots and the workspaces; empty = /run/airlock-sandbox/<name>", 0, 0,
     0, NULL, NULL},
    {"sandbox.workspace_size", AL_CFG_SIZE, EC(workspace_size, size_t), "1GiB",
     "size of each workspace tmpfs (also counted in the job's memory)", 1 << 20, 1LL << 40, 0, NULL,
     NULL},
    {"sandbox.session_idle", AL_CFG_DURATION_MS, EC(session_idle_ms, long long), "1h",
     "a session's workspace is removed after this long without a job", 1000, 30LL * 86400000, 0,
     NULL, NULL},
    {"sandbox.ro_binds", AL_CFG_STRLIST, EC(ro_binds, char **), "",
     "read-only rootfs binds HOST[:INSIDE]; empty = the host's /usr, /bin, /lib*, /sbin and a "
     "minimal /etc",
     0, 0, 0, NULL, NULL},
    {"sandbox.uid", AL_CFG_INT, EC(sandbox_uid, int), "1000",
     "unprivileged uid (and gid) of the job inside its user namespace", 1, 65533, 0, NULL, NULL},
    {"sandbox.cgroup_parent", AL_CFG_STRING, EC(cgroup_parent, char *), "",
     "cgroup under which job cgroups are made, relative to our own; empty = airlock/<name>", 0, 0,
     0, NULL, NULL},
    {"sandbox.allow_degraded", AL_CFG_BOOL, EC(allow_degraded, int), "false",
     "run jobs even when a limit cannot be enforced on this host (reported as NONE)", 0, 0, 0, NULL,
     NULL},
};

const struct al_cfg_field *ex_config_fields(size_t *n)
{
    *n = sizeof(fields) / sizeof(fields[0]);
    return fields;
}
