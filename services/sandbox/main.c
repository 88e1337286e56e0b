/*
 * airlock-sandbox: runs one job in the sandbox from the command line -- the
 * operator's debugging tool, and the driver of the escape suite and the
 * sandbox benchmark.
 *
 *   airlock-sandbox [options] -- CMD ARGS...
 *   airlock-sandbox [options] --read-file P | --write-file P --data-file F | --list-dir P
 *   airlock-sandbox --probe
 *
 * The command's stdout and stderr are streamed to ours (READ_FILE data to
 * stdout, LIST_DIR entries as JSON lines on stdout). The result is one JSON
 * line on --result-fd (default: stderr, after the output). Exit status: the
 * command's, 128 + N when a signal N ended it, 127 when it could not be
 * executed, 1 for a failed file operation, 125 when the sandbox could not
 * run it (bad arguments, setup failure, internal error). SIGINT and SIGTERM
 * cancel the job.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <jansson.h>

#include "al_err.h"
#include "al_log.h"
#include "sandbox.h"

#define MAX_LIST  64
#define MAX_INPUT (256LL << 20)

struct cli {
    struct sb_host_options ho;
    struct sb_config cfg;
    struct sb_request req;
    struct sb_bind binds[MAX_LIST];
    struct sb_env env[MAX_LIST];
    char *bind_copies[MAX_LIST];
    const char *stdin_file, *data_file, *workspace, *timings_file;
    int64_t workspace_bytes;
    int result_fd, probe, repeat, runs;
    uint8_t *input;
    size_t input_len;
    struct ev_loop *loop;
    struct sb_host *host;
    struct sb_child *child;
    struct timespec t_start;
    FILE *timings;
    int exit_status;
    ev_signal sig_int, sig_term;
};

static void usage(FILE *f)
{
    fputs("usage: airlock-sandbox [options] -- CMD ARGS...\n"
          "       airlock-sandbox [options] --read-file P | --write-file P --data-file F |"
          " --list-dir P\n"
          "       airlock-sandbox --probe\n"
          "job:\n"
          "  --workspace DIR        host directory mounted at /workspace (writable by the\n"
          "                         sandbox's host uid, see --probe; parents o+x)\n"
          "  --workspace-size N     without --workspace: each run gets a private tmpfs\n"
          "                         workspace of N bytes (default 64M) made inside the\n"
          "                         sandbox, gone when the run ends\n"
          "  --env K=V              environment variable (repeatable)\n"
          "  --cwd DIR              working directory (relative to /workspace)\n"
          "  --stdin FILE           the command's stdin (\"-\" = ours); default empty\n"
          "  --read-file P [--offset N] [--max-bytes N]\n"
          "  --write-file P --data-file F [--mode OCTAL] [--append] [--make-parents]\n"
          "  --list-dir P [--max-entries N]\n"
          "limits (0 = none; sizes take K, M, G suffixes):\n"
          "  --memory N --pids N --wall-ms N --cpu-ms N --cpu-millicores N\n"
          "  --output-bytes N --file-size N --open-files N\n"
          "image:\n"
          "  --ro-bind HOST[:INSIDE] extra read-only bind (repeatable)\n"
          "  --tmp-size N --shm-size N --hostname NAME\n"
          "host:\n"
          "  --name NAME            instance name (cgroups, run dir); default cli-<pid>\n"
          "  --run-dir DIR --cgroups auto|v1|v2|none --degraded\n"
          "  --uid N --gid N --id-base N\n"
          "output:\n"
          "  --result-fd N          write the result JSON line to fd N (default 2)\n"
          "  --repeat N --timings FILE   run N times, write each start-to-exit time (us)\n"
          "  --probe                print what the host supports as JSON and exit\n"
          "  --log-level LEVEL      debug|info|warn|error (default warn)\n",
          f);
}

static int parse_size(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    long long mul = 1;
    if (errno || end == s || v < 0)
        return -1;
    if (*end == 'k' || *end == 'K')
        mul = 1LL << 10, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1LL << 20, end++;
    else if (*end == 'g' || *end == 'G')
        mul = 1LL << 30, end++;
    if (*end || v > INT64_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

static int read_all(const char *path, uint8_t **out, size_t *len)
{
    int fd = strcmp(path, "-") == 0 ? 0 : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t cap = 65536, n = 0;
    uint8_t *buf = malloc(cap);
    int rc = buf ? 0 : AL_ERR_NOMEM;
    while (rc == 0) {
        if (n == cap) {
            uint8_t *nb = cap < MAX_INPUT ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                rc = cap < MAX_INPUT ? AL_ERR_NOMEM : AL_ERR_TOOBIG;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = -errno;
        else if (r == 0)
            break;
        else
            n += (size_t)r;
    }
    if (fd != 0)
        close(fd);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = n;
    return 0;
}

enum {
    OPT_WORKSPACE = 256,
    OPT_WS_SIZE,
    OPT_ENV,
    OPT_CWD,
    OPT_STDIN,
    OPT_READ,
    OPT_WRITE,
    OPT_DATA,
    OPT_LIST,
    OPT_OFFSET,
    OPT_MAXB,
    OPT_MAXE,
    OPT_MODE,
    OPT_APPEND,
    OPT_PARENTS,
    OPT_MEM,
    OPT_PIDS,
    OPT_WALL,
    OPT_CPU,
    OPT_MILLI,
    OPT_OUT,
    OPT_FSIZE,
    OPT_NOFILE,
    OPT_BIND,
    OPT_TMP,
    OPT_SHM,
    OPT_HOSTNAME,
    OPT_NAME,
    OPT_RUNDIR,
    OPT_CGROUPS,
    OPT_DEGRADED,
    OPT_UID,
    OPT_GID,
    OPT_IDBASE,
    OPT_RESULT_FD,
    OPT_REPEAT,
    OPT_TIMINGS,
    OPT_PROBE,
    OPT_LOG,
    OPT_HELP
};

static const struct option options[] = {
    {"workspace", 1, 0, OPT_WORKSPACE},
    {"workspace-size", 1, 0, OPT_WS_SIZE},
    {"env", 1, 0, OPT_ENV},
    {"cwd", 1, 0, OPT_CWD},
    {"stdin", 1, 0, OPT_STDIN},
    {"read-file", 1, 0, OPT_READ},
    {"write-file", 1, 0, OPT_WRITE},
    {"data-file", 1, 0, OPT_DATA},
    {"list-dir", 1, 0, OPT_LIST},
    {"offset", 1, 0, OPT_OFFSET},
    {"max-bytes", 1, 0, OPT_MAXB},
    {"max-entries", 1, 0, OPT_MAXE},
    {"mode", 1, 0, OPT_MODE},
    {"append", 0, 0, OPT_APPEND},
    {"make-parents", 0, 0, OPT_PARENTS},
    {"memory", 1, 0, OPT_MEM},
    {"pids", 1, 0, OPT_PIDS},
    {"wall-ms", 1, 0, OPT_WALL},
    {"cpu-ms", 1, 0, OPT_CPU},
    {"cpu-millicores", 1, 0, OPT_MILLI},
    {"output-bytes", 1, 0, OPT_OUT},
    {"file-size", 1, 0, OPT_FSIZE},
    {"open-files", 1, 0, OPT_NOFILE},
    {"ro-bind", 1, 0, OPT_BIND},
    {"tmp-size", 1, 0, OPT_TMP},
    {"shm-size", 1, 0, OPT_SHM},
    {"hostname", 1, 0, OPT_HOSTNAME},
    {"name", 1, 0, OPT_NAME},
    {"run-dir", 1, 0, OPT_RUNDIR},
    {"cgroups", 1, 0, OPT_CGROUPS},
    {"degraded", 0, 0, OPT_DEGRADED},
    {"uid", 1, 0, OPT_UID},
    {"gid", 1, 0, OPT_GID},
    {"id-base", 1, 0, OPT_IDBASE},
    {"result-fd", 1, 0, OPT_RESULT_FD},
    {"repeat", 1, 0, OPT_REPEAT},
    {"timings", 1, 0, OPT_TIMINGS},
    {"probe", 0, 0, OPT_PROBE},
    {"log-level", 1, 0, OPT_LOG},
    {"help", 0, 0, OPT_HELP},
    {0, 0, 0, 0},
};

/* Options whose argument is a size or count, and where it goes. */
static int64_t *size_slot(struct cli *c, int opt)
{
    struct sb_limits *l = &c->req.limits;
    switch (opt) {
    case OPT_WS_SIZE:
        return &c->workspace_bytes;
    case OPT_OFFSET:
        return &c->req.file.offset_bytes;
    case OPT_MAXB:
        return &c->req.file.max_bytes;
    case OPT_MEM:
        return &l->memory_bytes;
    case OPT_PIDS:
        return &l->pids;
    case OPT_WALL:
        return &l->wall_time_ms;
    case OPT_CPU:
        return &l->cpu_time_ms;
    case OPT_MILLI:
        return &l->cpu_millicores;
    case OPT_OUT:
        return &l->output_bytes;
    case OPT_FSIZE:
        return &l->file_size_bytes;
    case OPT_NOFILE:
        return &l->open_files;
    case OPT_TMP:
        return &c->cfg.tmp_bytes;
    case OPT_SHM:
        return &c->cfg.shm_bytes;
    }
    return NULL;
}

static int add_bind(struct cli *c, const char *arg)
{
    if (c->cfg.n_binds >= MAX_LIST)
        return -1;
    char *copy = strdup(arg);
    if (!copy)
        return -1;
    c->bind_copies[c->cfg.n_binds] = copy;
    char *colon = strchr(copy, ':');
    if (colon)
        *colon = '\0';
    c->binds[c->cfg.n_binds++] = (struct sb_bind){copy, colon ? colon + 1 : NULL};
    return 0;
}

static int add_env(struct cli *c, char *arg)
{
    char *eq = strchr(arg, '=');
    if (!eq || c->req.n_env >= MAX_LIST)
        return -1;
    *eq = '\0';
    c->env[c->req.n_env++] = (struct sb_env){arg, eq + 1};
    return 0;
}

static int parse_u32(const char *s, uint32_t *out)
{
    int64_t v;
    if (parse_size(s, &v) < 0 || v > UINT32_MAX)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int parse_mode(const char *s, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 8);
    if (errno || end == s || *end || v > 0777)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int set_kind(struct cli *c, enum sb_kind k, const char *path)
{
    if (c->req.kind && c->req.kind != k)
        return -1;
    c->req.kind = k;
    c->req.file.path = path;
    return 0;
}

static int other_option(struct cli *c, int opt, char *arg)
{
    int64_t v;
    switch (opt) {
    case OPT_WORKSPACE:
        c->workspace = arg;
        return 0;
    case OPT_ENV:
        return add_env(c, arg);
    case OPT_CWD:
        c->req.cwd = arg;
        return 0;
    case OPT_STDIN:
        c->stdin_file = arg;
        return 0;
    case OPT_READ:
        return set_kind(c, SB_READ_FILE, arg);
    case OPT_WRITE:
        return set_kind(c, SB_WRITE_FILE, arg);
    case OPT_LIST:
        return set_kind(c, SB_LIST_DIR, arg);
    case OPT_DATA:
        c->data_file = arg;
        return 0;
    case OPT_MAXE:
        if (parse_size(arg, &v) < 0 || v > INT32_MAX)
            return -1;
        c->req.file.max_entries = (int32_t)v;
        return 0;
    case OPT_MODE:
        return parse_mode(arg, &c->req.file.mode);
    case OPT_APPEND:
        c->req.file.append = 1;
        return 0;
    case OPT_PARENTS:
        c->req.file.make_parents = 1;
        return 0;
    case OPT_BIND:
        return add_bind(c, arg);
    case OPT_HOSTNAME:
        c->cfg.hostname = arg;
        return 0;
    case OPT_NAME:
        c->ho.name = arg;
        return 0;
    case OPT_RUNDIR:
        c->ho.run_dir = arg;
        return 0;
    case OPT_DEGRADED:
        c->ho.degraded = 1;
        return 0;
    case OPT_UID:
        return parse_u32(arg, &c->ho.uid);
    case OPT_GID:
        return parse_u32(arg, &c->ho.gid);
    case OPT_IDBASE:
        return parse_u32(arg, &c->ho.id_base);
    case OPT_RESULT_FD:
        c->result_fd = atoi(arg);
        return c->result_fd < 0 ? -1 : 0;
    case OPT_REPEAT:
        c->repeat = atoi(arg);
        return c->repeat < 1 ? -1 : 0;
    case OPT_TIMINGS:
        c->timings_file = arg;
        return 0;
    case OPT_PROBE:
        c->probe = 1;
        return 0;
    case OPT_LOG:
        return al_log_set_level_name(arg) < 0 ? -1 : 0;
    case OPT_CGROUPS:
        if (strcmp(arg, "auto") == 0)
            c->ho.cgroups = SB_CGROUPS_AUTO;
        else if (strcmp(arg, "v1") == 0)
            c->ho.cgroups = SB_CGROUPS_V1;
        else if (strcmp(arg, "v2") == 0)
            c->ho.cgroups = SB_CGROUPS_V2;
        else if (strcmp(arg, "none") == 0)
            c->ho.cgroups = SB_CGROUPS_NONE;
        else
            return -1;
        return 0;
    }
    return -1;
}

/* Returns 0 to run, 1 to exit 0 (help), -1 on a usage error. */
static const char *option_name(int opt)
{
    for (const struct option *o = options; o->name; o++)
        if (o->val == opt)
            return o->name;
    return "?";
}

static int parse_args(struct cli *c, int argc, char **argv)
{
    int opt;
    while ((opt = getopt_long(argc, argv, "+h", options, NULL)) != -1) {
        if (opt == 'h' || opt == OPT_HELP) {
            usage(stdout);
            return 1;
        }
        int64_t *slot = size_slot(c, opt);
        int rc = slot ? parse_size(optarg, slot) : opt == '?' ? -1 : other_option(c, opt, optarg);
        if (rc < 0) {
            if (opt != '?')
                fprintf(stderr, "airlock-sandbox: bad value for --%s: %s\n", option_name(opt),
                        optarg ? optarg : "");
            return -1;
        }
    }
    if (!c->req.kind)
        c->req.kind = SB_EXEC;
    if (c->req.kind == SB_EXEC) {
        c->req.argv = (const char *const *)argv + optind;
        c->req.argc = (size_t)(argc - optind);
        if (c->req.argc == 0 && !c->probe) {
            fputs("airlock-sandbox: no command (put it after --)\n", stderr);
            return -1;
        }
    } else if (optind != argc || (c->req.kind == SB_WRITE_FILE) != !!c->data_file) {
        fputs("airlock-sandbox: a file operation takes no command; --data-file goes with"
              " --write-file\n",
              stderr);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------- */

static void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* our reader went away: keep draining the job */
        c += w;
        n -= (size_t)w;
    }
}

static void json_line(int fd, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (s) {
        write_all(fd, s, strlen(s));
        write_all(fd, "\n", 1);
        free(s);
    }
    json_decref(j);
}

static void on_output(struct sb_child *c, enum sb_stream s, const uint8_t *data, size_t len,
                      int64_t offset, void *user)
{
    (void)c;
    (void)offset;
    (void)user;
    write_all(s == SB_STDERR ? 2 : 1, data, len);
}

static void on_dir(struct sb_child *c, const struct sb_dirent *e, size_t n, void *user)
{
    (void)c;
    (void)user;
    for (size_t i = 0; i < n; i++)
        json_line(1, json_pack("{s:s,s:s,s:I,s:i,s:I}", "name", e[i].name, "type",
                               sb_file_type_name(e[i].type), "size", (json_int_t)e[i].size, "mode",
                               (int)e[i].mode, "mtime_ms", (json_int_t)e[i].mtime_ms));
}

static json_t *result_json(const struct sb_result *r)
{
    json_t *lim = json_array();
    for (size_t i = 0; i < r->n_limits; i++)
        json_array_append_new(
            lim, json_pack("{s:s,s:s,s:I,s:b}", "limit", sb_limit_name(r->limits[i].kind),
                           "mechanism", sb_mechanism_name(r->limits[i].mechanism), "value",
                           (json_int_t)r->limits[i].value, "hit", r->limits[i].hit));
    json_t *j = json_pack(
        "{s:s,s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:b,s:b,s:b,s:I,s:o}", "failure",
        sb_failure_name(r->failure), "message", r->message, "started", r->started, "cpu_time_ms",
        (json_int_t)r->cpu_time_ms, "wall_time_ms", (json_int_t)r->wall_time_ms, "max_rss_bytes",
        (json_int_t)r->max_rss_bytes, "stdout_bytes", (json_int_t)r->stdout_bytes, "stderr_bytes",
        (json_int_t)r->stderr_bytes, "stdout_truncated", r->stdout_truncated, "stderr_truncated",
        r->stderr_truncated, "data_truncated", r->data_truncated, "file_size_bytes",
        (json_int_t)r->file_size_bytes, "limits", lim);
    if (j && r->started && r->term_signal)
        json_object_set_new(j, "term_signal", json_integer(r->term_signal));
    else if (j && r->started)
        json_object_set_new(j, "exit_code", json_integer(r->exit_code));
    return j;
}

static int exit_status(const struct sb_result *r)
{
    if (r->started)
        return r->term_signal ? 128 + r->term_signal : r->exit_code;
    switch (r->failure) {
    case SB_FAIL_NONE:
        return 0;
    case SB_FAIL_EXEC_FAILED:
        return 127;
    case SB_FAIL_FILE_ERROR:
        return 1;
    default:
        return 125;
    }
}

/* ---------------------------------------------------------------------------
 * Running
 * ------------------------------------------------------------------------- */

static int start_one(struct cli *c);

static void on_exit_cb(struct sb_child *child, const struct sb_result *r, void *user)
{
    struct cli *c = user;
    struct timespec now;
    (void)child;
    clock_gettime(CLOCK_MONOTONIC, &now);
    c->child = NULL;
    c->runs++;
    if (c->timings)
        fprintf(c->timings, "%lld\n",
                (long long)((now.tv_sec - c->t_start.tv_sec) * 1000000LL +
                            (now.tv_nsec - c->t_start.tv_nsec) / 1000));
    c->exit_status = exit_status(r);
    if (c->runs < c->repeat && start_one(c) == 0)
        return;
    json_line(c->result_fd, result_json(r));
    ev_break(c->loop, EVBREAK_ALL);
}

static int start_one(struct cli *c)
{
    struct sb_callbacks cb = {
        .on_output = on_output, .on_dir = on_dir, .on_exit = on_exit_cb, .user = c};
    clock_gettime(CLOCK_MONOTONIC, &c->t_start);
    int rc = sb_start(c->loop, c->host, &c->cfg, &c->req, &cb, &c->child);
    if (rc < 0) {
        char msg[SB_MESSAGE_MAX] = "";
        sb_request_check(c->host, &c->cfg, &c->req, msg, sizeof(msg));
        fprintf(stderr, "airlock-sandbox: %s\n", msg[0] ? msg : al_strerror(rc));
        json_line(c->result_fd,
                  json_pack("{s:s,s:s}", "failure",
                            rc == AL_ERR_CONFIG ? "POLICY_DENIED" : "INVALID", "message", msg));
        c->exit_status = 125;
        ev_break(c->loop, EVBREAK_ALL);
    }
    return rc;
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct cli *c = w->data;
    (void)loop;
    (void)revents;
    c->repeat = 0;
    if (c->child)
        sb_kill(c->child, SB_FAIL_CANCELLED);
}

static int probe(struct cli *c)
{
    struct sb_host_info i;
    sb_host_get_info(c->host, &i);
    json_t *mech = json_object();
    for (int k = SB_LIMIT_WALL_TIME; k <= SB_LIMIT_CPU_BANDWIDTH; k++)
        json_object_set_new(mech, sb_limit_name(k),
                            json_string(sb_mechanism_name(sb_host_mechanism(c->host, k))));
    json_line(1, json_pack("{s:s,s:i,s:i,s:I,s:I,s:b,s:s,s:I,s:{s:i,s:i,s:i,s:i},"
                           "s:{s:s,s:s,s:s,s:s},s:o}",
                           "name", i.name, "uid", (int)i.uid, "gid", (int)i.gid, "host_uid",
                           (json_int_t)i.host_uid, "host_gid", (json_int_t)i.host_gid, "degraded",
                           i.degraded, "run_dir", i.run_dir, "seccomp_instructions",
                           (json_int_t)i.seccomp_instructions, "cgroup_versions", "memory",
                           i.memory_version, "pids", i.pids_version, "cpu", i.cpu_version,
                           "cpuacct", i.cpuacct_version, "cgroup_dirs", "memory", i.memory_dir,
                           "pids", i.pids_dir, "cpu", i.cpu_dir, "cpuacct", i.cpuacct_dir,
                           "mechanisms", mech));
    return 0;
}

static int setup(struct cli *c, char *name, size_t name_len)
{
    char err[256] = "";
    if (!c->ho.name) {
        snprintf(name, name_len, "cli-%d", (int)getpid());
        c->ho.name = name;
    }
    int rc = sb_host_new(&c->ho, &c->host, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "airlock-sandbox: %s\n", err[0] ? err : al_strerror(rc));
        return rc;
    }
    if (c->probe)
        return 0;
    const char *in = c->req.kind == SB_WRITE_FILE ? c->data_file : c->stdin_file;
    if (in && (rc = read_all(in, &c->input, &c->input_len)) < 0) {
        fprintf(stderr, "airlock-sandbox: reading %s: %s\n", in, al_strerror(rc));
        return rc;
    }
    c->req.input = c->input;
    c->req.input_len = c->input_len;
    c->req.workspace = c->workspace; /* NULL: a private one inside each sandbox */
    c->req.workspace_bytes = c->workspace_bytes;
    if (c->timings_file && !(c->timings = fopen(c->timings_file, "we"))) {
        fprintf(stderr, "airlock-sandbox: %s: %s\n", c->timings_file, strerror(errno));
        return -errno;
    }
    return 0;
}

static void run(struct cli *c)
{
    c->loop = EV_DEFAULT;
    ev_signal_init(&c->sig_int, on_signal, SIGINT);
    ev_signal_init(&c->sig_term, on_signal, SIGTERM);
    c->sig_int.data = c->sig_term.data = c;
    ev_signal_start(c->loop, &c->sig_int);
    ev_signal_start(c->loop, &c->sig_term);
    if (start_one(c) == 0)
        ev_run(c->loop, 0);
    ev_signal_stop(c->loop, &c->sig_int);
    ev_signal_stop(c->loop, &c->sig_term);
}

int main(int argc, char **argv)
{
    static struct cli c;
    char name[32];
    c.result_fd = 2;
    c.repeat = 1;
    c.workspace_bytes = 64LL << 20;
    c.cfg.binds = c.binds;
    c.req.env = c.env;
    al_log_set_service("airlock-sandbox");
    al_log_set_level_name("warn");
    int rc = parse_args(&c, argc, argv);
    if (rc != 0) {
        if (rc < 0)
            usage(stderr);
        return rc < 0 ? 125 : 0;
    }
    c.exit_status = 125;
    if (setup(&c, name, sizeof(name)) == 0) {
        if (c.probe)
            c.exit_status = probe(&c);
        else
            run(&c);
    }
    if (c.timings)
        fclose(c.timings);
    sb_host_free(c.host);
    free(c.input);
    for (size_t i = 0; i < c.cfg.n_binds; i++)
        free(c.bind_copies[i]);
    ev_loop_destroy(EV_DEFAULT);
    return c.exit_status;
}
