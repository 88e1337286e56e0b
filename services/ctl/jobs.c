/*
 * airlockctl run / jobs / files: airlock-intake's JobService from the shell.
 *
 *   run [flags] -- CMD ARGS...      submit, stream the output live, exit with the job's code
 *   jobs ls|get|watch|cancel        list, inspect, follow and cancel jobs
 *   files get|put|ls                READ_FILE / WRITE_FILE / LIST_DIR in a session's workspace
 *
 * Authentication: an API key (--api-key-file FILE, else $AIRLOCK_API_KEY, else
 * the file $AIRLOCK_HOME/api-key when it exists) sent as `authorization:
 * Bearer`, over TLS that verifies intake against $AIRLOCK_HOME/pki/ca.crt;
 * without a key, the mTLS identity (--identity, default admin/admin). Keys are
 * never taken from argv and never printed.
 *
 * Watching survives a broken stream: it reconnects and resumes after the last
 * event seen (WatchJobRequest.after_seq), so no output is lost or repeated.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/crypto.h>

#include "airlock/v1/intake.pb-c.h"
#include "al_config.h"
#include "al_grpc.h"
#include "ctl.h"
#include "ctlrpc.h"

#define INTAKE_ADDR_ENV     "AIRLOCK_INTAKE_ADDR"
#define INTAKE_ADDR_DEFAULT "127.0.0.1:7400"
#define INTAKE_PEER         "spiffe://airlock/intake/"
#define API_KEY_MAX         512
#define MAX_LIST            256 /* repeated flags (env, labels, states) */
#define WATCH_RETRIES       30

/* Exit codes of run / jobs watch when the command did not exit by itself. */
#define EXIT_AIRLOCK   125 /* the job failed in Airlock (setup, policy, lost, internal) */
#define EXIT_NOT_FOUND 127 /* the command could not be started */
#define EXIT_TIMEOUT   124 /* a time limit passed (as timeout(1)) */
#define EXIT_CANCELLED 130

enum {
    OPT_API_KEY = CTL_OPT_FIRST_FREE,
    OPT_POOL,
    OPT_SESSION,
    OPT_ENV,
    OPT_CWD,
    OPT_STDIN_FILE,
    OPT_JOB_TIMEOUT,
    OPT_MEMORY,
    OPT_PIDS,
    OPT_CPU_TIME,
    OPT_OUTPUT,
    OPT_IDEM,
    OPT_LABEL,
    OPT_ATTEMPTS,
    OPT_DETACH,
    OPT_JSON,
    OPT_STATE,
    OPT_LIMIT,
    OPT_ALL,
    OPT_AFTER,
    OPT_REASON,
    OPT_OUT,
    OPT_OFFSET,
    OPT_MAX_BYTES,
    OPT_MODE,
    OPT_APPEND,
    OPT_PARENTS,
    OPT_MAX_ENTRIES,
    OPT_PRINCIPAL,
};

/* The connection flags plus --api-key-file, first in every table below. */
#define JOB_CONN_OPTS                                                                              \
    CTL_RPC_LONGOPTS,                                                                              \
    {                                                                                              \
        "api-key-file", required_argument, NULL, OPT_API_KEY                                       \
    }

struct jconn {
    struct ctl_rpc_opts o;
    const char *api_key_file;
};

static void jconn_init(struct jconn *jc, const char *what)
{
    memset(jc, 0, sizeof(*jc));
    ctl_rpc_opts_init(&jc->o, what, "admin/admin", 30);
    jc->o.service = "intake";
    jc->o.addr_env = INTAKE_ADDR_ENV;
    jc->o.addr_default = INTAKE_ADDR_DEFAULT;
}

/* Applies a connection flag; 1 = it was one, 0 = not, CTL_EXIT_USAGE = bad value. */
static int jconn_opt(struct jconn *jc, int c, const char *arg)
{
    if (c == OPT_API_KEY) {
        jc->api_key_file = arg;
        return 1;
    }
    return ctl_rpc_opt(&jc->o, c, arg);
}

static void jconn_help(const struct jconn *jc)
{
    ctl_rpc_help(&jc->o);
    printf("  --api-key-file FILE  API key (else $AIRLOCK_API_KEY, else $AIRLOCK_HOME/api-key\n"
           "                       if it exists); without one, the mTLS identity is used\n");
}

/* Reads the key from path into buf (one trailing newline dropped). Returns length or -1. */
static long read_key_file(const char *what, const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ssize_t n;

    if (fd < 0) {
        fprintf(stderr, "airlockctl: %s: %s: %s\n", what, path, strerror(errno));
        return -1;
    }
    n = read(fd, buf, cap);
    close(fd);
    if (n < 0 || (size_t)n == cap) {
        fprintf(stderr, "airlockctl: %s: %s: %s\n", what, path,
                n < 0 ? strerror(errno) : "too long for an API key");
        return -1;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n == 0) {
        fprintf(stderr, "airlockctl: %s: %s is empty\n", what, path);
        return -1;
    }
    return (long)n;
}

/* Finds the API key (see the top of this file). Returns its length, 0 = none, -1 = error. */
static long find_api_key(const struct jconn *jc, char *buf, size_t cap)
{
    const char *env = getenv("AIRLOCK_API_KEY");
    char home[512], path[600];

    if (jc->api_key_file)
        return read_key_file(jc->o.what, jc->api_key_file, buf, cap);
    if (env && *env) {
        size_t n = strlen(env);
        if (n >= cap) {
            fprintf(stderr, "airlockctl: %s: $AIRLOCK_API_KEY is too long\n", jc->o.what);
            return -1;
        }
        memcpy(buf, env, n);
        return (long)n;
    }
    if (ctl_home(home, sizeof(home)) == 0) {
        snprintf(path, sizeof(path), "%s/api-key", home);
        if (access(path, F_OK) == 0)
            return read_key_file(jc->o.what, path, buf, cap);
    }
    return 0;
}

static int jconn_open(struct jconn *jc, struct ctl_rpc **r)
{
    char key[API_KEY_MAX];
    long n = find_api_key(jc, key, sizeof(key));
    int rc;

    if (n < 0)
        return CTL_EXIT_FAIL;
    jc->o.server_auth_only = n > 0;
    rc = ctl_rpc_open(&jc->o, INTAKE_PEER, r);
    if (rc == 0 && n > 0) {
        rc = ctl_rpc_set_bearer(*r, key, (size_t)n);
        if (rc) {
            ctl_rpc_close(*r);
            *r = NULL;
        }
    }
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

/* ---------- watching ---------- */

struct watch {
    const char *job_id;
    int json, verbose;
    FILE *data_out;   /* READ_FILE content; NULL = stdout */
    int list_entries; /* print DirEntries */
    int64_t last_seq;
    int terminal;
    Airlock__V1__JobState state;
    Airlock__V1__JobResult *result; /* owned copy */
    int out_error;                  /* writing stdout/stderr/data_out failed */
};

static const char *state_name(int s)
{
    const char *n = ctl_enum_name(&airlock__v1__job_state__descriptor, s);
    return strncmp(n, "JOB_STATE_", 10) == 0 ? n + 10 : n;
}

static int is_terminal(int s)
{
    return s == AIRLOCK__V1__JOB_STATE__JOB_STATE_SUCCEEDED ||
           s == AIRLOCK__V1__JOB_STATE__JOB_STATE_FAILED ||
           s == AIRLOCK__V1__JOB_STATE__JOB_STATE_CANCELLED ||
           s == AIRLOCK__V1__JOB_STATE__JOB_STATE_TIMED_OUT;
}

static void write_all(struct watch *w, FILE *f, const uint8_t *p, size_t n)
{
    if (n && fwrite(p, 1, n, f) != n)
        w->out_error = 1;
    if (fflush(f) != 0)
        w->out_error = 1;
}

static void print_entry(const Airlock__V1__DirEntry *e)
{
    static const char types[] = "?fdlo";
    char t[40];
    int ty = e->type >= 0 && e->type <= 4 ? e->type : 0;

    printf("%c %04o %12lld %s %s\n", types[ty], e->mode & 07777, (long long)e->size_bytes,
           ctl_fmt_time(e->modified_ms, t, sizeof(t)), e->name);
}

static void keep_result(struct watch *w, const Airlock__V1__JobResult *res)
{
    size_t len = airlock__v1__job_result__get_packed_size(res);
    uint8_t *buf = malloc(len ? len : 1);

    if (!buf)
        return;
    airlock__v1__job_result__pack(res, buf);
    if (w->result)
        airlock__v1__job_result__free_unpacked(w->result, NULL);
    w->result = airlock__v1__job_result__unpack(NULL, len, buf);
    free(buf);
}

static int on_event(const ProtobufCMessage *m, void *user)
{
    const Airlock__V1__JobEvent *ev = (const Airlock__V1__JobEvent *)m;
    struct watch *w = user;

    if (ev->seq <= w->last_seq)
        return 0; /* already seen (never expected after a resume) */
    w->last_seq = ev->seq;
    if (w->json)
        ctl_print_json(m, 0);
    switch (ev->event_case) {
    case AIRLOCK__V1__JOB_EVENT__EVENT_STDOUT_CHUNK:
        if (!w->json)
            write_all(w, stdout, ev->stdout_chunk->data.data, ev->stdout_chunk->data.len);
        break;
    case AIRLOCK__V1__JOB_EVENT__EVENT_STDERR_CHUNK:
        if (!w->json)
            write_all(w, stderr, ev->stderr_chunk->data.data, ev->stderr_chunk->data.len);
        break;
    case AIRLOCK__V1__JOB_EVENT__EVENT_FILE_DATA:
        if (!w->json)
            write_all(w, w->data_out ? w->data_out : stdout, ev->file_data->data.data,
                      ev->file_data->data.len);
        break;
    case AIRLOCK__V1__JOB_EVENT__EVENT_DIR_ENTRIES:
        for (size_t i = 0; !w->json && w->list_entries && i < ev->dir_entries->n_entries; i++)
            print_entry(ev->dir_entries->entries[i]);
        break;
    case AIRLOCK__V1__JOB_EVENT__EVENT_RESULT:
        keep_result(w, ev->result);
        break;
    case AIRLOCK__V1__JOB_EVENT__EVENT_STATE:
        w->state = ev->state->state;
        if (w->verbose && !w->json)
            fprintf(stderr, "airlockctl: job %s: %s -> %s%s%s\n", w->job_id,
                    state_name(ev->state->previous_state), state_name(ev->state->state),
                    ev->state->message[0] ? ": " : "", ev->state->message);
        if (is_terminal(ev->state->state))
            w->terminal = 1;
        break;
    default:
        break;
    }
    return 0;
}

/* Ctrl-C while watching: ask intake to cancel the job once, keep watching. */
struct cancel_on_int {
    ev_signal sig;
    struct ctl_rpc *r;
    const char *job_id;
    int sent;
};

static void on_sigint(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct cancel_on_int *c = w->data;
    Airlock__V1__CancelJobRequest req = AIRLOCK__V1__CANCEL_JOB_REQUEST__INIT;

    (void)loop;
    (void)revents;
    if (c->sent) {
        fprintf(stderr, "\nairlockctl: interrupted again; job %s keeps its cancellation\n",
                c->job_id);
        _exit(EXIT_CANCELLED);
    }
    c->sent = 1;
    req.job_id = (char *)c->job_id;
    req.reason = (char *)"interrupted in airlockctl";
    fprintf(stderr, "\nairlockctl: cancelling job %s (Ctrl-C again to stop waiting)\n", c->job_id);
    ctl_rpc_fire(c->r, "/airlock.v1.JobService/Cancel", &req.base, &airlock__v1__job__descriptor);
}

/* Follows job events until the terminal state, resuming after broken streams. */
static int watch_job(struct ctl_rpc *r, const char *what, struct watch *w, int cancel_on_int)
{
    Airlock__V1__WatchJobRequest req = AIRLOCK__V1__WATCH_JOB_REQUEST__INIT;
    struct cancel_on_int c = {.r = r, .job_id = w->job_id};
    double backoff = 0.1;
    int rc = 0, status = 0;

    if (cancel_on_int) {
        ev_signal_init(&c.sig, on_sigint, SIGINT);
        c.sig.data = &c;
        ev_signal_start(ctl_rpc_loop(r), &c.sig);
    }
    ctl_rpc_quiet(r, 1);
    for (int tries = 0; !w->terminal; tries++) {
        req.job_id = (char *)w->job_id;
        req.after_seq = w->last_seq;
        int64_t before = w->last_seq;
        rc = ctl_rpc_stream(r, "/airlock.v1.JobService/Watch", &req.base,
                            &airlock__v1__job_event__descriptor, 0, on_event, w, &status, NULL);
        if (w->terminal)
            break;
        if (rc == 0)
            status = AL_GRPC_UNAVAILABLE; /* ended without the terminal state: resume */
        if (status != AL_GRPC_UNAVAILABLE && status != AL_GRPC_INTERNAL &&
            status != AL_GRPC_CANCELLED) {
            fprintf(stderr, "airlockctl: %s: %s\n", what, ctl_rpc_last_error(r));
            rc = CTL_EXIT_FAIL;
            break;
        }
        if (w->last_seq > before)
            tries = 0, backoff = 0.1; /* progress was made: start over */
        if (tries >= WATCH_RETRIES) {
            fprintf(stderr, "airlockctl: %s: giving up after %d reconnects: %s\n", what, tries,
                    ctl_rpc_last_error(r));
            rc = CTL_EXIT_FAIL;
            break;
        }
        if (w->verbose)
            fprintf(stderr, "airlockctl: %s: stream broken (%s); resuming after event %lld\n", what,
                    ctl_rpc_last_error(r)[0] ? ctl_rpc_last_error(r) : "ended early",
                    (long long)w->last_seq);
        struct timespec ts = {(time_t)backoff, (long)((backoff - (time_t)backoff) * 1e9)};
        nanosleep(&ts, NULL);
        backoff = backoff * 2 > 5 ? 5 : backoff * 2;
        rc = 0;
    }
    ctl_rpc_quiet(r, 0);
    if (cancel_on_int)
        ev_signal_stop(ctl_rpc_loop(r), &c.sig);
    return rc;
}

/* The exit status that mirrors the job's outcome. */
static int job_exit_code(const char *what, const struct watch *w)
{
    const Airlock__V1__JobResult *res = w->result;
    const char *reason =
        res ? ctl_enum_name(&airlock__v1__failure_reason__descriptor, res->failure_reason) : "";
    const char *msg = res && res->failure_message ? res->failure_message : "";

    if (w->out_error) {
        fprintf(stderr, "airlockctl: %s: writing the output failed\n", what);
        return CTL_EXIT_FAIL;
    }
    if (res && res->termination_case == AIRLOCK__V1__JOB_RESULT__TERMINATION_EXIT_CODE &&
        (w->state == AIRLOCK__V1__JOB_STATE__JOB_STATE_SUCCEEDED ||
         res->failure_reason == AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_NONZERO_EXIT))
        return res->exit_code & 0xff;
    if (w->state == AIRLOCK__V1__JOB_STATE__JOB_STATE_SUCCEEDED)
        return 0;
    if (res && res->stdout_truncated)
        fprintf(stderr, "airlockctl: %s: output truncated at the output limit\n", what);
    fprintf(stderr, "airlockctl: %s: job %s ended %s%s%s%s%s\n", what, w->job_id,
            state_name(w->state), reason[0] ? " (" : "", reason, reason[0] ? ")" : "",
            msg[0] ? "" : "");
    if (msg[0])
        fprintf(stderr, "airlockctl: %s: %s\n", what, msg);
    /* a limit or a cancel killed it: say so, not which signal did */
    switch (w->state) {
    case AIRLOCK__V1__JOB_STATE__JOB_STATE_TIMED_OUT:
        return EXIT_TIMEOUT;
    case AIRLOCK__V1__JOB_STATE__JOB_STATE_CANCELLED:
        return EXIT_CANCELLED;
    default:
        break;
    }
    if (res && res->termination_case == AIRLOCK__V1__JOB_RESULT__TERMINATION_TERM_SIGNAL)
        return 128 + (res->term_signal & 0x7f);
    if (res && res->failure_reason == AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_EXEC_FAILED)
        return EXIT_NOT_FOUND;
    if (res && res->failure_reason == AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_FILE_ERROR)
        return CTL_EXIT_FAIL;
    return EXIT_AIRLOCK;
}

static void watch_free(struct watch *w)
{
    if (w->result)
        airlock__v1__job_result__free_unpacked(w->result, NULL);
    w->result = NULL;
}

/* ---------- submitting ---------- */

/* Submits spec; *job_id gets a malloc'd copy of the new job's id. */
static int submit(struct ctl_rpc *r, Airlock__V1__JobSpec *spec, const char *idem, int quiet_dedup,
                  char **job_id)
{
    Airlock__V1__SubmitJobRequest req = AIRLOCK__V1__SUBMIT_JOB_REQUEST__INIT;
    Airlock__V1__SubmitJobResponse *resp = NULL;
    int rc;

    req.spec = spec;
    req.idempotency_key = (char *)(idem ? idem : "");
    rc = ctl_rpc_call(r, "/airlock.v1.JobService/Submit", &req.base,
                      &airlock__v1__submit_job_response__descriptor, (ProtobufCMessage **)&resp,
                      NULL, NULL);
    if (rc)
        return rc;
    if (!resp->job || !resp->job->id || !(*job_id = strdup(resp->job->id))) {
        ctl_rpc_free_resp(&resp->base);
        fprintf(stderr, "airlockctl: submit: the response names no job\n");
        return CTL_EXIT_FAIL;
    }
    if (resp->deduplicated && !quiet_dedup)
        fprintf(stderr, "airlockctl: idempotency key matched job %s: following it\n", *job_id);
    ctl_rpc_free_resp(&resp->base);
    return 0;
}

/* Reads a whole file ("-" = stdin) into *buf. Returns 0 or CTL_EXIT_FAIL. */
static int slurp(const char *what, const char *path, uint8_t **buf, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    size_t cap = 65536, n = 0;
    uint8_t *b;

    if (!f) {
        fprintf(stderr, "airlockctl: %s: %s: %s\n", what, path, strerror(errno));
        return CTL_EXIT_FAIL;
    }
    b = malloc(cap);
    while (b) {
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            uint8_t *nb = cap > (64u << 20) ? NULL : realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    int err = ferror(f);
    if (f != stdin)
        fclose(f);
    if (!b || err) {
        free(b);
        fprintf(stderr, "airlockctl: %s: %s: %s\n", what, path,
                err ? "read error" : "too large (64 MiB at most) or out of memory");
        return CTL_EXIT_FAIL;
    }
    *buf = b;
    *len = n;
    return 0;
}

/* Parses KEY=VALUE into a map entry (pointers into arg). */
static int parse_kv(const char *what, const char *flag, char *arg, char **k, char **v)
{
    char *eq = strchr(arg, '=');

    if (!eq || eq == arg)
        return ctl_usage_error(what, "%s wants KEY=VALUE, got '%s'", flag, arg);
    *eq = '\0';
    *k = arg;
    *v = eq + 1;
    return 0;
}

static int parse_size_flag(const char *what, const char *flag, const char *arg, int64_t *out)
{
    size_t v;

    if (al_config_parse_size(arg, &v) < 0 || v > INT64_MAX)
        return ctl_usage_error(what, "%s wants a size like 512MiB, got '%s'", flag, arg);
    *out = (int64_t)v;
    return 0;
}

static int parse_dur_flag(const char *what, const char *flag, const char *arg, int64_t *out)
{
    if (ctl_parse_dur(arg, out) < 0)
        return ctl_usage_error(what, "%s wants a duration like 30s or 5m, got '%s'", flag, arg);
    return 0;
}

static int parse_count_flag(const char *what, const char *flag, const char *arg, int64_t *out)
{
    if (ctl_parse_i64(arg, out) < 0)
        return ctl_usage_error(what, "%s wants a non-negative number, got '%s'", flag, arg);
    return 0;
}

static const char *default_pool(void)
{
    const char *p = getenv("AIRLOCK_POOL");
    return p && *p ? p : "default";
}

/* ---------- run ---------- */

static const char run_help[] =
    "usage: airlockctl run [flags] -- CMD [ARGS...]\n"
    "\n"
    "Submits CMD as an EXEC job to airlock-intake, streams its stdout and stderr\n"
    "live as the sandbox produces them, and exits with the command's exit code.\n"
    "No shell is involved: use 'sh -c \"...\"' for shell syntax. Ctrl-C cancels the\n"
    "job (and waits for it to stop; Ctrl-C again stops waiting).\n"
    "\n"
    "  --pool P             executor pool (default $AIRLOCK_POOL, else 'default')\n"
    "  --session S          run in session S's workspace (persists across its jobs)\n"
    "  --env K=V            environment variable (repeat); the sandbox gets only\n"
    "                       these plus PATH and HOME\n"
    "  --cwd DIR            working directory (relative to /workspace)\n"
    "  --stdin-file F       bytes for standard input ('-' = this process's stdin)\n"
    "  --job-timeout DUR    wall-clock timeout of the command, e.g. 30s\n"
    "  --memory SIZE        memory limit, e.g. 256MiB (tmpfs pages count)\n"
    "  --pids N             process/thread limit\n"
    "  --cpu-time DUR       CPU time limit\n"
    "  --output-bytes SIZE  stdout+stderr cap\n"
    "  --max-attempts N     runs allowed if executors are lost (1 = never re-run)\n"
    "  --idempotency-key K  safe retries: the same key returns the same job\n"
    "  --label K=V          caller metadata (repeat)\n"
    "  --detach             print the job id and exit without waiting\n"
    "  --json               print every event as a JSON line instead of the output\n"
    "  -v, --verbose        print the job id and state changes on stderr\n"
    "\n"
    "Exit status: the command's exit code; 128+N if killed by signal N; 124 a\n"
    "time limit passed; 127 the command could not be started; 130 cancelled;\n"
    "125 the job failed in Airlock (sandbox setup, policy, executor lost); 1 the\n"
    "call failed; 2 usage error.\n";

int ctl_run(int argc, char **argv)
{
    static const struct option lo[] = {JOB_CONN_OPTS,
                                       {"pool", required_argument, NULL, OPT_POOL},
                                       {"session", required_argument, NULL, OPT_SESSION},
                                       {"env", required_argument, NULL, OPT_ENV},
                                       {"cwd", required_argument, NULL, OPT_CWD},
                                       {"stdin-file", required_argument, NULL, OPT_STDIN_FILE},
                                       {"job-timeout", required_argument, NULL, OPT_JOB_TIMEOUT},
                                       {"memory", required_argument, NULL, OPT_MEMORY},
                                       {"pids", required_argument, NULL, OPT_PIDS},
                                       {"cpu-time", required_argument, NULL, OPT_CPU_TIME},
                                       {"output-bytes", required_argument, NULL, OPT_OUTPUT},
                                       {"max-attempts", required_argument, NULL, OPT_ATTEMPTS},
                                       {"idempotency-key", required_argument, NULL, OPT_IDEM},
                                       {"label", required_argument, NULL, OPT_LABEL},
                                       {"detach", no_argument, NULL, OPT_DETACH},
                                       {"json", no_argument, NULL, OPT_JSON},
                                       {"verbose", no_argument, NULL, 'v'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    Airlock__V1__JobSpec spec = AIRLOCK__V1__JOB_SPEC__INIT;
    Airlock__V1__ExecSpec ex = AIRLOCK__V1__EXEC_SPEC__INIT;
    Airlock__V1__ResourceLimits lim = AIRLOCK__V1__RESOURCE_LIMITS__INIT;
    Airlock__V1__ExecSpec__EnvEntry envs[MAX_LIST], *envp[MAX_LIST];
    Airlock__V1__JobSpec__LabelsEntry labels[MAX_LIST], *labelp[MAX_LIST];
    struct watch w = {0};
    struct jconn jc;
    struct ctl_rpc *r = NULL;
    const char *what = "run", *idem = NULL, *stdin_file = NULL;
    char *job_id = NULL;
    int c, rc, detach = 0, have_lim = 0;
    int64_t n;

    jconn_init(&jc, what);
    spec.pool = (char *)default_pool();
    spec.kind = AIRLOCK__V1__JOB_KIND__JOB_KIND_EXEC;
    optind = 0;
    while ((c = ctl_getopt(what, argc, argv, "+:hv", lo)) != -1) {
        if ((rc = jconn_opt(&jc, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
            continue;
        }
        switch (c) {
        case 'h':
            fputs(run_help, stdout);
            jconn_help(&jc);
            return CTL_EXIT_OK;
        case 'v':
            w.verbose = 1;
            break;
        case OPT_POOL:
            spec.pool = optarg;
            break;
        case OPT_SESSION:
            spec.session_id = optarg;
            break;
        case OPT_ENV:
            if (ex.n_env == MAX_LIST)
                return ctl_usage_error(what, "at most %d --env", MAX_LIST);
            airlock__v1__exec_spec__env_entry__init(&envs[ex.n_env]);
            if (parse_kv(what, "--env", optarg, &envs[ex.n_env].key, &envs[ex.n_env].value))
                return CTL_EXIT_USAGE;
            envp[ex.n_env] = &envs[ex.n_env];
            ex.n_env++;
            break;
        case OPT_CWD:
            ex.cwd = optarg;
            break;
        case OPT_STDIN_FILE:
            stdin_file = optarg;
            break;
        case OPT_JOB_TIMEOUT:
            if (parse_dur_flag(what, "--job-timeout", optarg, &ex.timeout_ms))
                return CTL_EXIT_USAGE;
            break;
        case OPT_MEMORY:
            if (parse_size_flag(what, "--memory", optarg, &lim.memory_bytes))
                return CTL_EXIT_USAGE;
            have_lim = 1;
            break;
        case OPT_PIDS:
            if (parse_count_flag(what, "--pids", optarg, &lim.pids))
                return CTL_EXIT_USAGE;
            have_lim = 1;
            break;
        case OPT_CPU_TIME:
            if (parse_dur_flag(what, "--cpu-time", optarg, &lim.cpu_time_ms))
                return CTL_EXIT_USAGE;
            have_lim = 1;
            break;
        case OPT_OUTPUT:
            if (parse_size_flag(what, "--output-bytes", optarg, &lim.output_bytes))
                return CTL_EXIT_USAGE;
            have_lim = 1;
            break;
        case OPT_ATTEMPTS:
            if (parse_count_flag(what, "--max-attempts", optarg, &n) || n > 100)
                return ctl_usage_error(what, "--max-attempts wants 1-100");
            spec.max_attempts = (int32_t)n;
            break;
        case OPT_IDEM:
            idem = optarg;
            break;
        case OPT_LABEL:
            if (spec.n_labels == MAX_LIST)
                return ctl_usage_error(what, "at most %d --label", MAX_LIST);
            airlock__v1__job_spec__labels_entry__init(&labels[spec.n_labels]);
            if (parse_kv(what, "--label", optarg, &labels[spec.n_labels].key,
                         &labels[spec.n_labels].value))
                return CTL_EXIT_USAGE;
            labelp[spec.n_labels] = &labels[spec.n_labels];
            spec.n_labels++;
            break;
        case OPT_DETACH:
            detach = 1;
            break;
        case OPT_JSON:
            w.json = 1;
            break;
        default:
            return CTL_EXIT_USAGE;
        }
    }
    if (optind >= argc)
        return ctl_usage_error(what, "no command: airlockctl run [flags] -- CMD [ARGS...]");
    ex.argv = argv + optind;
    ex.n_argv = (size_t)(argc - optind);
    ex.env = envp;
    spec.labels = labelp;
    spec.exec = &ex;
    if (have_lim)
        spec.limits = &lim;
    if (stdin_file && slurp(what, stdin_file, &ex.stdin.data, &ex.stdin.len))
        return CTL_EXIT_FAIL;
    rc = jconn_open(&jc, &r);
    if (rc == 0)
        rc = submit(r, &spec, idem, detach, &job_id);
    free(ex.stdin.data);
    if (rc == 0 && detach) {
        printf("%s\n", job_id);
    } else if (rc == 0) {
        if (w.verbose)
            fprintf(stderr, "airlockctl: job %s submitted to pool %s\n", job_id, spec.pool);
        w.job_id = job_id;
        rc = watch_job(r, what, &w, 1);
        if (rc == 0)
            rc = w.json ? (w.state == AIRLOCK__V1__JOB_STATE__JOB_STATE_SUCCEEDED ? 0 : 1)
                        : job_exit_code(what, &w);
    }
    watch_free(&w);
    free(job_id);
    ctl_rpc_close(r);
    return rc;
}

/* ---------- jobs ---------- */

static void print_job_line(const Airlock__V1__Job *j)
{
    char t[40], code[24] = "-";
    const char *kind =
        j->spec ? ctl_enum_name(&airlock__v1__job_kind__descriptor, j->spec->kind) : "?";

    if (strncmp(kind, "JOB_KIND_", 9) == 0)
        kind += 9;
    if (j->result && j->result->termination_case == AIRLOCK__V1__JOB_RESULT__TERMINATION_EXIT_CODE)
        snprintf(code, sizeof(code), "%d", j->result->exit_code);
    else if (j->result &&
             j->result->termination_case == AIRLOCK__V1__JOB_RESULT__TERMINATION_TERM_SIGNAL)
        snprintf(code, sizeof(code), "sig%d", j->result->term_signal);
    printf("%-28s %-10s %-10s %-12s %-16s %-5s %s\n", j->id, state_name(j->state), kind,
           j->spec && j->spec->pool ? j->spec->pool : "",
           j->spec && j->spec->session_id && j->spec->session_id[0] ? j->spec->session_id : "-",
           code, ctl_fmt_time(j->created_ms, t, sizeof(t)));
}

static void print_job(const Airlock__V1__Job *j)
{
    char t[40];
    const Airlock__V1__JobResult *res = j->result;

    printf("id:          %s\n", j->id);
    printf("state:       %s%s\n", state_name(j->state),
           j->cancel_requested ? " (cancel requested)" : "");
    printf("principal:   %s\n", j->principal && j->principal->name ? j->principal->name : "");
    if (j->spec) {
        printf("pool:        %s\n", j->spec->pool);
        if (j->spec->session_id && j->spec->session_id[0])
            printf("session:     %s\n", j->spec->session_id);
        printf("kind:        %s\n",
               ctl_enum_name(&airlock__v1__job_kind__descriptor, j->spec->kind));
        if (j->spec->exec) {
            printf("argv:       ");
            for (size_t i = 0; i < j->spec->exec->n_argv; i++)
                printf(" %s", j->spec->exec->argv[i]);
            printf("\n");
        }
        if (j->spec->file)
            printf("path:        %s\n", j->spec->file->path);
    }
    printf("attempt:     %d\n", j->attempt);
    if (j->executor_id && j->executor_id[0])
        printf("executor:    %s\n", j->executor_id);
    printf("created:     %s\n", ctl_fmt_time(j->created_ms, t, sizeof(t)));
    printf("started:     %s\n", ctl_fmt_time(j->started_ms, t, sizeof(t)));
    printf("finished:    %s\n", ctl_fmt_time(j->finished_ms, t, sizeof(t)));
    printf("last event:  %lld\n", (long long)j->last_seq);
    if (!res)
        return;
    if (res->termination_case == AIRLOCK__V1__JOB_RESULT__TERMINATION_EXIT_CODE)
        printf("exit code:   %d\n", res->exit_code);
    else if (res->termination_case == AIRLOCK__V1__JOB_RESULT__TERMINATION_TERM_SIGNAL)
        printf("signal:      %d\n", res->term_signal);
    if (res->failure_reason)
        printf("failure:     %s: %s\n",
               ctl_enum_name(&airlock__v1__failure_reason__descriptor, res->failure_reason),
               res->failure_message ? res->failure_message : "");
    printf("cpu:         %lld ms, wall %lld ms, max rss %lld bytes\n", (long long)res->cpu_time_ms,
           (long long)res->wall_time_ms, (long long)res->max_rss_bytes);
    printf("output:      stdout %lld bytes%s, stderr %lld bytes%s\n", (long long)res->stdout_bytes,
           res->stdout_truncated ? " (truncated)" : "", (long long)res->stderr_bytes,
           res->stderr_truncated ? " (truncated)" : "");
    if (res->workspace_reset)
        printf("workspace:   reset (the session's previous workspace was lost)\n");
    for (size_t i = 0; i < res->n_limits; i++) {
        const Airlock__V1__EnforcedLimit *l = res->limits[i];
        const char *k = ctl_enum_name(&airlock__v1__limit_kind__descriptor, l->limit);
        const char *m =
            ctl_enum_name(&airlock__v1__enforcement_mechanism__descriptor, l->mechanism);
        printf("limit:       %-24s %-14s %lld%s\n", strncmp(k, "LIMIT_KIND_", 11) ? k : k + 11,
               strncmp(m, "ENFORCEMENT_MECHANISM_", 22) ? m : m + 22, (long long)l->value,
               l->hit ? "  HIT" : "");
    }
}

static int parse_state(const char *what, const char *arg, Airlock__V1__JobState *out)
{
    char name[64];
    const ProtobufCEnumValue *v;

    snprintf(name, sizeof(name), "JOB_STATE_%s", arg);
    for (char *p = name; *p; p++)
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : (*p == '-' ? '_' : *p));
    v = protobuf_c_enum_descriptor_get_value_by_name(&airlock__v1__job_state__descriptor, name);
    if (!v || v->value == 0)
        return ctl_usage_error(what,
                               "unknown state '%s' (queued, leased, running, succeeded, "
                               "failed, cancelled, timed-out)",
                               arg);
    *out = (Airlock__V1__JobState)v->value;
    return 0;
}

static const char ls_help[] =
    "usage: airlockctl jobs ls [--state S]... [--session S] [--pool P] [--limit N | --all]\n"
    "                          [--principal NAME] [--json]\n"
    "\n"
    "Lists your jobs, newest first: id, state, kind, pool, session, exit code,\n"
    "creation time. --state repeats (queued, leased, running, succeeded, failed,\n"
    "cancelled, timed-out). --limit (default 50) or --all pages through everything.\n"
    "--principal lists another principal's jobs (admin identity only).\n";

static int jobs_ls(int argc, char **argv)
{
    static const struct option lo[] = {JOB_CONN_OPTS,
                                       {"state", required_argument, NULL, OPT_STATE},
                                       {"session", required_argument, NULL, OPT_SESSION},
                                       {"pool", required_argument, NULL, OPT_POOL},
                                       {"limit", required_argument, NULL, OPT_LIMIT},
                                       {"all", no_argument, NULL, OPT_ALL},
                                       {"principal", required_argument, NULL, OPT_PRINCIPAL},
                                       {"json", no_argument, NULL, OPT_JSON},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    Airlock__V1__ListJobsRequest req = AIRLOCK__V1__LIST_JOBS_REQUEST__INIT;
    Airlock__V1__PageRequest page = AIRLOCK__V1__PAGE_REQUEST__INIT;
    Airlock__V1__JobState states[16];
    const char *what = "jobs ls";
    struct jconn jc;
    struct ctl_rpc *r = NULL;
    int64_t limit = 50, shown = 0;
    int c, rc, json = 0, all = 0;
    char *token = NULL;

    jconn_init(&jc, what);
    optind = 0;
    while ((c = ctl_getopt(what, argc, argv, ":h", lo)) != -1) {
        if ((rc = jconn_opt(&jc, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
            continue;
        }
        switch (c) {
        case 'h':
            fputs(ls_help, stdout);
            jconn_help(&jc);
            return CTL_EXIT_OK;
        case OPT_STATE:
            if (req.n_states == 16)
                return ctl_usage_error(what, "too many --state");
            if (parse_state(what, optarg, &states[req.n_states]))
                return CTL_EXIT_USAGE;
            req.n_states++;
            break;
        case OPT_SESSION:
            req.session_id = optarg;
            break;
        case OPT_POOL:
            req.pool = optarg;
            break;
        case OPT_LIMIT:
            if (parse_count_flag(what, "--limit", optarg, &limit) || limit == 0)
                return ctl_usage_error(what, "--limit wants a positive number");
            break;
        case OPT_ALL:
            all = 1;
            break;
        case OPT_PRINCIPAL:
            req.principal = optarg;
            break;
        case OPT_JSON:
            json = 1;
            break;
        default:
            return CTL_EXIT_USAGE;
        }
    }
    if (optind < argc)
        return ctl_usage_error(what, "unexpected argument '%s'", argv[optind]);
    req.states = states;
    req.page = &page;
    if ((rc = jconn_open(&jc, &r)) != 0)
        return rc;
    if (!json)
        printf("%-28s %-10s %-10s %-12s %-16s %-5s %s\n", "ID", "STATE", "KIND", "POOL", "SESSION",
               "EXIT", "CREATED");
    do {
        Airlock__V1__ListJobsResponse *resp = NULL;
        int64_t want = all ? 500 : limit - shown;
        page.page_size = (int32_t)(want > 500 ? 500 : want);
        page.page_token = token ? token : (char *)"";
        rc = ctl_rpc_call(r, "/airlock.v1.JobService/List", &req.base,
                          &airlock__v1__list_jobs_response__descriptor, (ProtobufCMessage **)&resp,
                          NULL, NULL);
        if (rc)
            break;
        for (size_t i = 0; i < resp->n_jobs && (all || shown < limit); i++, shown++) {
            if (json)
                ctl_print_json(&resp->jobs[i]->base, 0);
            else
                print_job_line(resp->jobs[i]);
        }
        free(token);
        token = resp->page && resp->page->next_page_token && resp->page->next_page_token[0]
                    ? strdup(resp->page->next_page_token)
                    : NULL;
        ctl_rpc_free_resp(&resp->base);
    } while (token && (all || shown < limit));
    free(token);
    ctl_rpc_close(r);
    return rc;
}

/* Parses "ID [flags]" commands with one positional job id. */
static int one_id(const char *what, int argc, char **argv, const char **id)
{
    *id = NULL; /* set on every path: -O2 -Werror=maybe-uninitialized in the callers */
    if (argc - optind != 1)
        return ctl_usage_error(what, "want exactly one JOB_ID");
    *id = argv[optind];
    return 0;
}

static int jobs_get(int argc, char **argv)
{
    static const struct option lo[] = {JOB_CONN_OPTS,
                                       {"json", no_argument, NULL, OPT_JSON},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    Airlock__V1__GetJobRequest req = AIRLOCK__V1__GET_JOB_REQUEST__INIT;
    Airlock__V1__Job *job = NULL;
    const char *what = "jobs get", *id;
    struct jconn jc;
    struct ctl_rpc *r = NULL;
    int c, rc, json = 0;

    jconn_init(&jc, what);
    optind = 0;
    while ((c = ctl_getopt(what, argc, argv, ":h", lo)) != -1) {
        if ((rc = jconn_opt(&jc, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
            continue;
        }
        if (c == 'h') {
            printf("usage: airlockctl jobs get JOB_ID [--json]\n\n"
                   "Shows a job: state, spec, attempt, executor, times and, once it ended,\n"
                   "its result with every limit and how it was enforced.\n");
            jconn_help(&jc);
            return CTL_EXIT_OK;
        } else if (c == OPT_JSON) {
            json = 1;
        } else {
            return CTL_EXIT_USAGE;
        }
    }
    if ((rc = one_id(what, argc, argv, &id)) != 0)
        return rc;
    if ((rc = jconn_open(&jc, &r)) != 0)
        return rc;
    req.job_id = (char *)id;
    rc = ctl_rpc_call(r, "/airlock.v1.JobService/Get", &req.base, &airlock__v1__job__descriptor,
                      (ProtobufCMessage **)&job, NULL, NULL);
    if (rc == 0) {
        if (json)
            ctl_print_json(&job->base, 1);
        else
            print_job(job);
        ctl_rpc_free_resp(&job->base);
    }
    ctl_rpc_close(r);
    return rc;
}

static int jobs_watch(int argc, char **argv)
{
    static const struct option lo[] = {JOB_CONN_OPTS,
                                       {"after", required_argument, NULL, OPT_AFTER},
                                       {"json", no_argument, NULL, OPT_JSON},
                                       {"verbose", no_argument, NULL, 'v'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    const char *what = "jobs watch", *id;
    struct watch w = {0};
    struct jconn jc;
    struct ctl_rpc *r = NULL;
    int c, rc;

    jconn_init(&jc, what);
    optind = 0;
    while ((c = ctl_getopt(what, argc, argv, ":hv", lo)) != -1) {
        if ((rc = jconn_opt(&jc, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
            continue;
        }
        if (c == 'h') {
            printf("usage: airlockctl jobs watch JOB_ID [--after SEQ] [--json] [-v]\n\n"
                   "Follows a job's events from the beginning (or after event SEQ): output\n"
                   "goes to stdout/stderr as with 'run', and the exit status is the job's\n"
                   "(see 'airlockctl run --help'). A broken stream is resumed after the\n"
                   "last event seen, so nothing is lost or repeated.\n");
            jconn_help(&jc);
            return CTL_EXIT_OK;
        } else if (c == OPT_AFTER) {
            if (parse_count_flag(what, "--after", optarg, &w.last_seq))
                return CTL_EXIT_USAGE;
        } else if (c == OPT_JSON) {
            w.json = 1;
        } else if (c == 'v') {
            w.verbose = 1;
        } else {
            return CTL_EXIT_USAGE;
        }
    }
    if ((rc = one_id(what, argc, argv, &id)) != 0)
        return rc;
    if ((rc = jconn_open(&jc, &r)) != 0)
        return rc;
    w.job_id = id;
    w.list_entries = 1;
    rc = watch_job(r, what, &w, 0);
    if (rc == 0)
        rc = w.json ? 0 : job_exit_code(what, &w);
    watch_free(&w);
    ctl_rpc_close(r);
    return rc;
}

static int jobs_cancel(int argc, char **argv)
{
    static const struct option lo[] = {JOB_CONN_OPTS,
                                       {"reason", required_argument, NULL, OPT_REASON},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    Airlock__V1__CancelJobRequest req = AIRLOCK__V1__CANCEL_JOB_REQUEST__INIT;
    Airlock__V1__Job *job = NULL;
    const char *what = "jobs cancel", *id;
    struct jconn jc;
    struct ctl_rpc *r = NULL;
    int c, rc;

    jconn_init(&jc, what);
    req.reason = (char *)"";
    optind = 0;
    while ((c = ctl_getopt(what, argc, argv, ":h", lo)) != -1) {
        if ((rc = jconn_opt(&jc, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
            continue;
        }
        if (c == 'h') {
            printf("usage: airlockctl jobs cancel JOB_ID [--reason TEXT]\n\n"
                   "Cancels a job: a queued job ends CANCELLED at once; a running one is\n"
                   "stopped by its executor. Cancelling an ended job changes nothing.\n");
            jconn_help(&jc);
            return CTL_EXIT_OK;
        } else if (c == OPT_REASON) {
            req.reason = optarg;
        } else {
            return CTL_EXIT_USAGE;
        }
    }
    if ((rc = one_id(what, argc, argv, &id)) != 0)
        return rc;
    if ((rc = jconn_open(&jc, &r)) != 0)
        return rc;
    req.job_id = (char *)id;
    rc = ctl_rpc_call(r, "/airlock.v1.JobService/Cancel", &req.base, &airlock__v1__job__descriptor,
                      (ProtobufCMessage **)&job, NULL, NULL);
    if (rc == 0) {
        printf("%s %s%s\n", job->id, state_name(job->state),
               job->cancel_requested ? " (cancel requested; the executor is stopping it)" : "");
        ctl_rpc_free_resp(&job->base);
    }
    ctl_rpc_close(r);
    return rc;
}

int ctl_jobs(int argc, char **argv)
{
    static const struct ctl_sub subs[] = {
        {"ls", "[--state S]... [--session S] [--pool P] [--limit N|--all] [--json]",
         "list your jobs, newest first", jobs_ls},
        {"get", "JOB_ID [--json]", "show a job and its result", jobs_get},
        {"watch", "JOB_ID [--after SEQ] [--json]", "follow a job's output and events", jobs_watch},
        {"cancel", "JOB_ID [--reason TEXT]", "cancel a job", jobs_cancel},
    };

    return ctl_dispatch("jobs", subs, sizeof subs / sizeof subs[0], argc, argv);
}

/* ---------- files ---------- */

/* Submits a file job and waits for it; output per w. Returns the exit status. */
static int run_file_job(struct jconn *jc, const char *what, Airlock__V1__JobSpec *spec,
                        struct watch *w)
{
    struct ctl_rpc *r = NULL;
    char *job_id = NULL;
    int rc;

    if ((rc = jconn_open(jc, &r)) != 0)
        return rc;
    rc = submit(r, spec, NULL, 1, &job_id);
    if (rc == 0) {
        w->job_id = job_id;
        rc = watch_job(r, what, w, 1);
        if (rc == 0 && w->state != AIRLOCK__V1__JOB_STATE__JOB_STATE_SUCCEEDED)
            rc = job_exit_code(what, w) ? CTL_EXIT_FAIL : 0;
        else if (rc == 0 && w->out_error)
            rc = job_exit_code(what, w);
    }
    free(job_id);
    ctl_rpc_close(r);
    return rc;
}

/* Shared flags of the files subcommands: connection, --pool, --session. */
static int files_common(struct jconn *jc, Airlock__V1__JobSpec *spec, int c, const char *arg)
{
    int rc = jconn_opt(jc, c, arg);

    if (rc)
        return rc;
    if (c == OPT_POOL) {
        spec->pool = (char *)arg;
        return 1;
    }
    if (c == OPT_SESSION) {
        spec->session_id = (char *)arg;
        return 1;
    }
    return 0;
}

#define FILES_OPTS                                                                                 \
    JOB_CONN_OPTS, {"pool", required_argument, NULL, OPT_POOL},                                    \
        {"session", required_argument, NULL, OPT_SESSION},                                         \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }

static const char files_common_help[] =
    "  --session S          the session whose workspace to use (without one, a fresh\n"
    "                       workspace: only the read-only image is there to read)\n"
    "  --pool P             executor pool (default $AIRLOCK_POOL, else 'default')\n"
    "Paths are inside the sandbox; relative ones are relative to /workspace.\n";

static int files_get(int argc, char **argv)
{
    static const struct option lo[] = {FILES_OPTS,
                                       {"output", required_argument, NULL, OPT_OUT},
                                       {"offset", required_argument, NULL, OPT_OFFSET},
                                       {"max-bytes", required_argument, NULL, OPT_MAX_BYTES},
                                       {NULL, 0, NULL, 0}};
    Airlock__V1__JobSpec spec = AIRLOCK__V1__JOB_SPEC__INIT;
    Airlock__V1__FileSpec fs = AIRLOCK__V1__FILE_SPEC__INIT;
    const char *what = "files get", *out = NULL;
    struct watch w = {0};
    struct jconn jc;
    int c, rc;

    jconn_init(&jc, what);
    spec.pool = (char *)default_pool();
    optind = 0;
    while ((c = ctl_getopt(what, argc, argv, ":ho:", lo)) != -1) {
        if ((rc = files_common(&jc, &spec, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
            continue;
        }
        if (c == 'h') {
            printf("usage: airlockctl files get PATH [-o FILE] [--offset N] [--max-bytes N]\n"
                   "                            [--session S] [--pool P]\n\n"
                   "Reads a regular file in the sandbox (a READ_FILE job) and writes it to\n"
                   "stdout or FILE. Symlinks, FIFOs and devices are refused.\n");
            fputs(files_common_help, stdout);
            jconn_help(&jc);
            return CTL_EXIT_OK;
        } else if (c == 'o' || c == OPT_OUT) {
            out = optarg;
        } else if (c == OPT_OFFSET) {
            if (parse_count_flag(what, "--offset", optarg, &fs.offset_bytes))
                return CTL_EXIT_USAGE;
        } else if (c == OPT_MAX_BYTES) {
            if (parse_size_flag(what, "--max-bytes", optarg, &fs.max_bytes))
                return CTL_EXIT_USAGE;
        } else {
            return CTL_EXIT_USAGE;
        }
    }
    if (argc - optind != 1)
        return ctl_usage_error(what, "want exactly one PATH");
    fs.path = argv[optind];
    spec.kind = AIRLOCK__V1__JOB_KIND__JOB_KIND_READ_FILE;
    spec.file = &fs;
    if (out && !(w.data_out = fopen(out, "wbx"))) {
        fprintf(stderr, "airlockctl: %s: %s: %s\n", what, out, strerror(errno));
        return CTL_EXIT_FAIL;
    }
    rc = run_file_job(&jc, what, &spec, &w);
    if (rc == 0 && w.result && w.result->data_truncated)
        fprintf(stderr, "airlockctl: %s: %s is %lld bytes; output truncated (--max-bytes)\n", what,
                fs.path, (long long)w.result->file_size_bytes);
    if (w.data_out && fclose(w.data_out) != 0 && rc == 0) {
        fprintf(stderr, "airlockctl: %s: %s: %s\n", what, out, strerror(errno));
        rc = CTL_EXIT_FAIL;
    }
    if (rc && out)
        unlink(out);
    watch_free(&w);
    return rc;
}

static int parse_mode(const char *what, const char *arg, uint32_t *mode)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(arg, &end, 8);
    if (errno || end == arg || *end || v > 0777)
        return ctl_usage_error(what, "--mode wants octal permission bits like 0644");
    *mode = (uint32_t)v;
    return 0;
}

static int files_put(int argc, char **argv)
{
    static const struct option lo[] = {FILES_OPTS,
                                       {"mode", required_argument, NULL, OPT_MODE},
                                       {"append", no_argument, NULL, OPT_APPEND},
                                       {"parents", no_argument, NULL, OPT_PARENTS},
                                       {NULL, 0, NULL, 0}};
    Airlock__V1__JobSpec spec = AIRLOCK__V1__JOB_SPEC__INIT;
    Airlock__V1__FileSpec fs = AIRLOCK__V1__FILE_SPEC__INIT;
    const char *what = "files put";
    struct watch w = {0};
    struct jconn jc;
    int c, rc;

    jconn_init(&jc, what);
    spec.pool = (char *)default_pool();
    optind = 0;
    while ((c = ctl_getopt(what, argc, argv, ":hp", lo)) != -1) {
        if ((rc = files_common(&jc, &spec, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
            continue;
        }
        if (c == 'h') {
            printf("usage: airlockctl files put LOCAL PATH [--mode 0644] [--append] [--parents]\n"
                   "                            [--session S] [--pool P]\n\n"
                   "Writes the content of LOCAL ('-' = stdin) to PATH in the session's\n"
                   "workspace (a WRITE_FILE job). PATH must be inside /workspace. --mode\n"
                   "applies to a new file; --parents creates missing directories.\n");
            fputs(files_common_help, stdout);
            jconn_help(&jc);
            return CTL_EXIT_OK;
        } else if (c == OPT_MODE) {
            if (parse_mode(what, optarg, &fs.mode))
                return CTL_EXIT_USAGE;
        } else if (c == OPT_APPEND) {
            fs.append = 1;
        } else if (c == OPT_PARENTS || c == 'p') {
            fs.make_parents = 1;
        } else {
            return CTL_EXIT_USAGE;
        }
    }
    if (argc - optind != 2)
        return ctl_usage_error(what, "want LOCAL and PATH");
    fs.path = argv[optind + 1];
    if (slurp(what, argv[optind], &fs.data.data, &fs.data.len))
        return CTL_EXIT_FAIL;
    spec.kind = AIRLOCK__V1__JOB_KIND__JOB_KIND_WRITE_FILE;
    spec.file = &fs;
    rc = run_file_job(&jc, what, &spec, &w);
    if (rc == 0)
        printf("wrote %zu bytes to %s (now %lld bytes)\n", fs.data.len, fs.path,
               (long long)(w.result ? w.result->file_size_bytes : 0));
    free(fs.data.data);
    watch_free(&w);
    return rc;
}

static int files_ls(int argc, char **argv)
{
    static const struct option lo[] = {FILES_OPTS,
                                       {"max-entries", required_argument, NULL, OPT_MAX_ENTRIES},
                                       {"json", no_argument, NULL, OPT_JSON},
                                       {NULL, 0, NULL, 0}};
    Airlock__V1__JobSpec spec = AIRLOCK__V1__JOB_SPEC__INIT;
    Airlock__V1__FileSpec fs = AIRLOCK__V1__FILE_SPEC__INIT;
    const char *what = "files ls";
    struct watch w = {0};
    struct jconn jc;
    int64_t n;
    int c, rc;

    jconn_init(&jc, what);
    spec.pool = (char *)default_pool();
    optind = 0;
    while ((c = ctl_getopt(what, argc, argv, ":h", lo)) != -1) {
        if ((rc = files_common(&jc, &spec, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
            continue;
        }
        if (c == 'h') {
            printf("usage: airlockctl files ls [PATH] [--max-entries N] [--json]\n"
                   "                           [--session S] [--pool P]\n\n"
                   "Lists a directory in the sandbox (a LIST_DIR job; default the\n"
                   "workspace): type (f file, d directory, l symlink, o other), mode, size,\n"
                   "modification time, name.\n");
            fputs(files_common_help, stdout);
            jconn_help(&jc);
            return CTL_EXIT_OK;
        } else if (c == OPT_MAX_ENTRIES) {
            if (parse_count_flag(what, "--max-entries", optarg, &n) || n > 100000)
                return ctl_usage_error(what, "--max-entries wants 1-100000");
            fs.max_entries = (int32_t)n;
        } else if (c == OPT_JSON) {
            w.json = 1;
        } else {
            return CTL_EXIT_USAGE;
        }
    }
    if (argc - optind > 1)
        return ctl_usage_error(what, "at most one PATH");
    fs.path = optind < argc ? argv[optind] : (char *)".";
    spec.kind = AIRLOCK__V1__JOB_KIND__JOB_KIND_LIST_DIR;
    spec.file = &fs;
    w.list_entries = 1;
    rc = run_file_job(&jc, what, &spec, &w);
    if (rc == 0 && w.result && w.result->data_truncated)
        fprintf(stderr, "airlockctl: %s: more entries were omitted (--max-entries)\n", what);
    watch_free(&w);
    return rc;
}

int ctl_files(int argc, char **argv)
{
    static const struct ctl_sub subs[] = {
        {"get", "PATH [-o FILE] [--session S]", "read a file in the sandbox", files_get},
        {"put", "LOCAL PATH [--session S] [--mode M] [--append] [--parents]",
         "write a file into a session's workspace", files_put},
        {"ls", "[PATH] [--session S]", "list a directory in the sandbox", files_ls},
    };

    return ctl_dispatch("files", subs, sizeof subs / sizeof subs[0], argc, argv);
}
