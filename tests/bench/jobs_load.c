/*
 * bench_jobs_load: job queue path load generator for tests/bench/jobs.sh.
 *
 * Plays an agent platform against a running airlock-intake: each job is a
 * JobService/Submit (an EXEC job running the command after "--", default
 * /bin/true, in --pool) followed, as soon as Submit answers, by a
 * JobService/Watch stream of that job from seq 0, followed to its end. Both
 * calls carry the API key read from --api-key-file as `authorization: Bearer
 * <key>` (never printed). TLS 1.3 verifies intake's certificate against --ca
 * (name: host of --target, SPIFFE id prefix spiffe://airlock/intake/); the
 * client presents a certificate only when --cert/--key are given.
 *
 * Load: --in-flight jobs at all times (closed loop: a finished job starts the
 * next), spread over --connections channels (one kept-alive HTTP/2
 * connection each). A warm-up phase (connections open, executors leasing,
 * caches warm) is followed by the timed phase of --jobs jobs. Latency is per
 * job on CLOCK_MONOTONIC from just before Submit is sent to when the Watch
 * stream delivers the terminal state change; throughput is the jobs that
 * checked out / (the last job's end - start of the timed phase).
 *
 * Every job is checked, so failures cannot pass for speed: Submit answers OK
 * with a new (not deduplicated) QUEUED job; Watch delivers seq 1, 2, 3 ...
 * without gaps, the states QUEUED -> LEASED -> RUNNING -> SUCCEEDED in that
 * order (LEASED, RUNNING and SUCCEEDED of attempt 1: the job ran once), a
 * result with exit code 0 before the terminal state, and then ends OK; no two
 * jobs share an id. Anything else is counted by kind, the first instance's
 * detail printed, and the exit status is 1.
 *
 * Besides submit-to-terminal percentiles it prints where the time went, two
 * ways: client side (p50 of when Submit answered and when the LEASED,
 * RUNNING and terminal events arrived, from the job's start; LEASED and
 * RUNNING may arrive together in Watch's replay when they happened before
 * the stream opened), and intake side (means of the gaps between the events'
 * time_ms stamps, Unix ms on intake's clock: 1 ms resolution, so only means
 * are meaningful).
 *
 * Output: informational lines, then one line
 *   result: jobs=N ok=N errors=N jobs_per_s=X p50_ms=X p99_ms=X max_ms=X ...
 * Exit: 0 every job checked out, 1 a job failed or an answer was wrong, 2
 * usage or setup error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <ev.h>
#include <openssl/crypto.h>

#include "airlock/v1/intake.pb-c.h"
#include "al_err.h"
#include "al_grpc.h"
#include "al_grpc_client.h"
#include "al_log.h"
#include "al_tls.h"

#define SUBMIT_PATH  "/airlock.v1.JobService/Submit"
#define WATCH_PATH   "/airlock.v1.JobService/Watch"
#define MAX_CONNS    64
#define MAX_INFLIGHT 4096
#define MAX_JOBS     1000000UL
#define MAX_ARGS     64
#define MAX_KEY      512
#define ID_MAX       65 /* job ids: at most 64 characters */

#define JS(x) AIRLOCK__V1__JOB_STATE__JOB_STATE_##x

/* What went wrong with a job; one counter and one first detail per kind. */
enum fail_kind {
    F_SUBMIT_STATUS, /* Submit ended with a non-OK status */
    F_SUBMIT_ANSWER, /* Submit OK but not one new QUEUED job */
    F_WATCH_START,   /* the Watch call could not be started */
    F_WATCH_STATUS,  /* Watch ended with a non-OK status */
    F_EVENTS,        /* events out of order, a gap, a wrong state sequence or attempt */
    F_NOT_SUCCEEDED, /* terminal state other than SUCCEEDED */
    F_RESULT,        /* no result event, or an exit code other than 0 */
    F_NO_TERMINAL,   /* Watch ended OK without a terminal state */
    F_DUP_ID,        /* two jobs got the same id */
    N_FAIL
};

static const char *const fail_names[N_FAIL] = {"submit_status", "submit_answer", "watch_start",
                                               "watch_status",  "events",        "not_succeeded",
                                               "result",        "no_terminal",   "duplicate_id"};

/* Client-side stages, seconds from the job's start. */
enum stage { ST_ACK, ST_LEASED, ST_RUNNING, ST_TERMINAL, N_STAGE };

/* Intake-side gaps, from the events' time_ms. */
enum gap { G_QUEUED_LEASED, G_LEASED_RUNNING, G_RUNNING_TERMINAL, N_GAP };

struct opts {
    const char *target, *ca, *cert, *key, *api_key_file, *server_name, *expect_peer, *pool;
    char *argv[MAX_ARGS];
    size_t argc;
    size_t jobs, warmup;
    int conns, inflight;
    double timeout_s;
};

struct bench;

/* One in-flight position, reused job after job on the same channel. */
struct slot {
    struct bench *b;
    struct al_grpc_channel *ch;
    size_t idx;                 /* the job's index (warm-up and timed together) */
    double t0, t[N_STAGE];      /* CLOCK_MONOTONIC seconds */
    int64_t ms[4];              /* intake time_ms of QUEUED, LEASED, RUNNING, terminal */
    char id[ID_MAX];            /* the job's id, from Submit */
    int answers;                /* Submit responses received */
    int answer_ok;              /* the one Submit response checked out */
    int64_t last_seq;           /* Watch: highest seq received */
    int nstates;                /* state changes received */
    int terminal;               /* the terminal state (0 = none yet) */
    int result_ok, result_seen; /* a result event with exit code 0 */
    int bad;                    /* enum fail_kind + 1 of the first problem; 0 = none */
    char why[160];              /* detail of that problem */
    int in_start, again;        /* re-entry guard of slot_start */
};

struct bench {
    struct ev_loop *loop;
    const struct opts *o;
    Airlock__V1__SubmitJobRequest *req;
    struct al_grpc_md md[1];
    /* current phase: jobs [first, end) */
    size_t next, end, done, first;
    int record;
    double last_done;
    double *lat_ms;            /* timed jobs that checked out, in completion order */
    double *stage_ms[N_STAGE]; /* the same jobs' client-side stages */
    double gap_sum[N_GAP];     /* the same jobs' intake-side gaps, ms */
    size_t nlat;
    char (*ids)[ID_MAX]; /* every job's id (duplicate check) */
    size_t ok, by_kind[N_FAIL];
    char first_why[N_FAIL][256];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------- one job ---------- */

static void slot_start(struct slot *s);

/* Records the job's first problem (later ones are consequences). */
static void slot_fail(struct slot *s, enum fail_kind k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void slot_fail(struct slot *s, enum fail_kind k, const char *fmt, ...)
{
    va_list ap;

    if (s->bad)
        return;
    s->bad = (int)k + 1;
    va_start(ap, fmt);
    vsnprintf(s->why, sizeof(s->why), fmt, ap);
    va_end(ap);
}

/* The job is over (checked out or failed): count it, start the next one. */
static void job_end(struct slot *s)
{
    struct bench *b = s->b;
    double t = now_s();

    if (!s->bad && s->terminal != JS(SUCCEEDED))
        slot_fail(s, F_NO_TERMINAL, "the Watch stream ended OK without a terminal state");
    if (!s->bad && !s->result_ok)
        slot_fail(s, F_RESULT, "%s",
                  s->result_seen ? "result exit code is not 0"
                                 : "no result event before the terminal state");
    if (s->bad) {
        enum fail_kind k = (enum fail_kind)(s->bad - 1);
        if (b->by_kind[k]++ == 0)
            snprintf(b->first_why[k], sizeof(b->first_why[k]), "job %s: %s",
                     s->id[0] ? s->id : "(none)", s->why);
    } else {
        b->ok++;
        if (b->record) {
            size_t n = b->nlat++;
            b->lat_ms[n] = (s->t[ST_TERMINAL] - s->t0) * 1e3;
            for (int i = 0; i < N_STAGE; i++)
                b->stage_ms[i][n] = (s->t[i] - s->t0) * 1e3;
            for (int i = 0; i < N_GAP; i++)
                b->gap_sum[i] += (double)(s->ms[i + 1] - s->ms[i]);
        }
    }
    b->done++;
    b->last_done = t;
    if (b->done == b->end - b->first)
        ev_break(b->loop, EVBREAK_ALL);
    slot_start(s);
}

static const char *state_name(int st)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&airlock__v1__job_state__descriptor, st);
    return v ? v->name : "?";
}

/* One state change of the Watch stream: must follow QUEUED, LEASED,
 * RUNNING, SUCCEEDED in order, the last three of attempt 1. */
static void on_state(struct slot *s, const Airlock__V1__JobEvent *e, double t)
{
    static const int want[4] = {JS(QUEUED), JS(LEASED), JS(RUNNING), JS(SUCCEEDED)};
    int st = e->state->state, i = s->nstates++;
    int terminal =
        st == JS(SUCCEEDED) || st == JS(FAILED) || st == JS(CANCELLED) || st == JS(TIMED_OUT);

    if (terminal) {
        s->terminal = st;
        s->t[ST_TERMINAL] = t;
        if (st != JS(SUCCEEDED)) {
            slot_fail(s, F_NOT_SUCCEEDED, "ended %s: %s", state_name(st),
                      e->state->message ? e->state->message : "");
            return;
        }
    }
    if (i >= 4 || st != want[i] || e->attempt != (i == 0 ? 0 : 1)) {
        slot_fail(s, F_EVENTS, "state change %d is %s of attempt %d (want %s of attempt %d)", i + 1,
                  state_name(st), e->attempt, i < 4 ? state_name(want[i]) : "none", i == 0 ? 0 : 1);
        return;
    }
    s->ms[i] = e->time_ms;
    if (i == 1)
        s->t[ST_LEASED] = t;
    else if (i == 2)
        s->t[ST_RUNNING] = t;
}

static void on_event(struct al_grpc_ccall *cc, const ProtobufCMessage *msg, void *user)
{
    struct slot *s = user;
    const Airlock__V1__JobEvent *e = (const void *)msg;
    double t = now_s();
    (void)cc;

    if (s->bad)
        return;
    if (e->seq != s->last_seq + 1) {
        slot_fail(s, F_EVENTS, "event seq %lld after %lld", (long long)e->seq,
                  (long long)s->last_seq);
        return;
    }
    s->last_seq = e->seq;
    if (s->terminal) {
        slot_fail(s, F_EVENTS, "an event after the terminal state");
        return;
    }
    if (e->event_case == AIRLOCK__V1__JOB_EVENT__EVENT_STATE && e->state) {
        on_state(s, e, t);
    } else if (e->event_case == AIRLOCK__V1__JOB_EVENT__EVENT_RESULT && e->result) {
        s->result_seen = 1;
        s->result_ok =
            e->result->termination_case == AIRLOCK__V1__JOB_RESULT__TERMINATION_EXIT_CODE &&
            e->result->exit_code == 0 &&
            e->result->failure_reason == AIRLOCK__V1__FAILURE_REASON__FAILURE_REASON_UNSPECIFIED;
    }
}

static void on_watch_done(struct al_grpc_ccall *cc, int status, const char *message, void *user)
{
    struct slot *s = user;
    (void)cc;

    if (status != AL_GRPC_OK)
        slot_fail(s, F_WATCH_STATUS, "Watch ended %s: %s", al_grpc_status_name(status), message);
    job_end(s);
}

static void watch_start(struct slot *s)
{
    static const struct al_grpc_ccall_cbs cbs = {on_event, on_watch_done};
    struct bench *b = s->b;
    Airlock__V1__WatchJobRequest req = AIRLOCK__V1__WATCH_JOB_REQUEST__INIT;

    req.job_id = s->id;
    req.after_seq = 0;
    int rc = al_grpc_channel_call(s->ch, WATCH_PATH, &req.base, &airlock__v1__job_event__descriptor,
                                  b->md, 1, b->o->timeout_s, &cbs, s, NULL);
    if (rc < 0) {
        slot_fail(s, F_WATCH_START, "%s", al_strerror(rc));
        job_end(s);
    }
}

static void on_submit_msg(struct al_grpc_ccall *cc, const ProtobufCMessage *msg, void *user)
{
    struct slot *s = user;
    const Airlock__V1__SubmitJobResponse *r = (const void *)msg;
    (void)cc;

    if (s->answers++) {
        s->answer_ok = 0;
        return;
    }
    s->answer_ok = r->job && r->job->id && r->job->id[0] && strlen(r->job->id) < ID_MAX &&
                   r->job->state == JS(QUEUED) && !r->deduplicated;
    if (s->answer_ok)
        snprintf(s->id, sizeof(s->id), "%s", r->job->id);
}

static void on_submit_done(struct al_grpc_ccall *cc, int status, const char *message, void *user)
{
    struct slot *s = user;
    struct bench *b = s->b;
    (void)cc;

    s->t[ST_ACK] = now_s();
    if (status != AL_GRPC_OK) {
        slot_fail(s, F_SUBMIT_STATUS, "Submit ended %s: %s", al_grpc_status_name(status), message);
    } else if (s->answers != 1 || !s->answer_ok) {
        slot_fail(s, F_SUBMIT_ANSWER, "Submit answered %d message(s), not one new QUEUED job",
                  s->answers);
    }
    if (s->bad) {
        job_end(s);
        return;
    }
    memcpy(b->ids[s->idx], s->id, ID_MAX);
    watch_start(s);
}

/* Starts the slot's next job, if the phase has jobs left. Callbacks may run
 * inside al_grpc_channel_call() (a stream that cannot be opened ends at
 * once): that re-entry only asks the loop here to go round again, so the
 * stack never grows. */
static void slot_start(struct slot *s)
{
    static const struct al_grpc_ccall_cbs cbs = {on_submit_msg, on_submit_done};
    struct bench *b = s->b;

    if (s->in_start) {
        s->again = 1;
        return;
    }
    s->in_start = 1;
    do {
        s->again = 0;
        if (b->next >= b->end)
            break;
        struct slot fresh = {.b = b, .ch = s->ch, .idx = b->next++, .in_start = 1};
        *s = fresh;
        s->t0 = now_s();
        int rc = al_grpc_channel_call(s->ch, SUBMIT_PATH, &b->req->base,
                                      &airlock__v1__submit_job_response__descriptor, b->md, 1,
                                      b->o->timeout_s, &cbs, s, NULL);
        if (rc < 0) {
            slot_fail(s, F_SUBMIT_STATUS, "Submit could not start: %s", al_strerror(rc));
            job_end(s); /* sets again through the guard */
        }
    } while (s->again);
    s->in_start = 0;
}

/* Runs jobs [first, first + n) on every slot; returns the phase's seconds. */
static double run_phase(struct bench *b, struct slot *slots, size_t nslots, size_t first, size_t n,
                        int record)
{
    b->first = b->next = first;
    b->end = first + n;
    b->done = 0;
    b->record = record;
    if (n == 0)
        return 0;
    double t0 = now_s();
    b->last_done = t0;
    for (size_t i = 0; i < nslots; i++)
        slot_start(&slots[i]);
    if (b->done < n)
        ev_run(b->loop, 0);
    return b->last_done - t0;
}

/* ---------- report ---------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Nearest-rank percentile of sorted v[0..n), pm in per mille (990 = p99). */
static double pct(const double *v, size_t n, unsigned pm)
{
    size_t rank = (n * pm + 999) / 1000;
    return n ? v[rank ? rank - 1 : 0] : 0;
}

static size_t failures(const struct bench *b)
{
    size_t f = 0;
    for (int i = 0; i < N_FAIL; i++)
        f += b->by_kind[i];
    return f;
}

static void print_failures(const struct bench *b)
{
    for (int i = 0; i < N_FAIL; i++)
        if (b->by_kind[i])
            printf("error: kind=%s count=%zu first=\"%s\"\n", fail_names[i], b->by_kind[i],
                   b->first_why[i]);
}

/* Jobs whose id another job also got (ids of failed Submits are empty). */
static size_t duplicate_ids(struct bench *b, size_t n)
{
    size_t dup = 0;
    qsort(b->ids, n, ID_MAX, cmp_id);
    for (size_t i = 1; i < n; i++)
        if (b->ids[i][0] && strcmp(b->ids[i], b->ids[i - 1]) == 0)
            dup++;
    return dup;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void print_timed(struct bench *b, size_t jobs, size_t fail, double secs, double cpu)
{
    size_t n = b->nlat;
    double jps = secs > 0 ? (double)n / secs : 0, *v = b->lat_ms; /* jobs that checked out */

    for (int i = 0; i < N_STAGE; i++)
        qsort(b->stage_ms[i], n, sizeof(double), cmp_double);
    qsort(v, n, sizeof(double), cmp_double);
    printf("timed: jobs=%zu ok=%zu errors=%zu seconds=%.3f loader_cpu_pct=%.0f\n", jobs, n, fail,
           secs, secs > 0 ? 100 * cpu / secs : 0);
    printf("latency_ms (submit to terminal): p50=%.3f p90=%.3f p99=%.3f p99.9=%.3f max=%.3f\n",
           pct(v, n, 500), pct(v, n, 900), pct(v, n, 990), pct(v, n, 999), n ? v[n - 1] : 0);
    printf("client_stages_ms_p50 (from the job's start): submit_answered=%.3f leased_seen=%.3f "
           "running_seen=%.3f terminal_seen=%.3f\n",
           pct(b->stage_ms[ST_ACK], n, 500), pct(b->stage_ms[ST_LEASED], n, 500),
           pct(b->stage_ms[ST_RUNNING], n, 500), pct(b->stage_ms[ST_TERMINAL], n, 500));
    printf("intake_gaps_ms_mean (event time_ms, 1 ms resolution): queued_to_leased=%.3f "
           "leased_to_running=%.3f running_to_terminal=%.3f\n",
           n ? b->gap_sum[G_QUEUED_LEASED] / (double)n : 0,
           n ? b->gap_sum[G_LEASED_RUNNING] / (double)n : 0,
           n ? b->gap_sum[G_RUNNING_TERMINAL] / (double)n : 0);
    printf("result: jobs=%zu ok=%zu errors=%zu jobs_per_s=%.1f p50_ms=%.3f p99_ms=%.3f "
           "max_ms=%.3f seconds=%.3f\n",
           jobs, n, fail, jps, pct(v, n, 500), pct(v, n, 990), n ? v[n - 1] : 0, secs);
}

/* ---------- setup ---------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_jobs_load --target HOST:PORT --ca FILE --api-key-file FILE [flags]\n"
               "         [-- CMD ARGS...]\n\n"
               "Job queue load on airlock-intake: Submit + Watch per job, closed loop, every job\n"
               "checked (SUCCEEDED, exit 0, attempt 1, events in order); exit 1 if any was not.\n\n"
               "  --pool NAME           pool of the jobs [default]\n"
               "  --jobs N              timed jobs [2000]\n"
               "  --warmup N            untimed jobs first [200]\n"
               "  --in-flight M         jobs in flight at all times [4]\n"
               "  --connections C       HTTP/2 connections [1]\n"
               "  --timeout SECONDS     per call, a hang guard only [120]\n"
               "  --cert FILE --key FILE  client certificate to present (optional)\n"
               "  --server-name NAME    name intake's certificate must hold [host of --target]\n"
               "  --expect-peer PREFIX  intake's SPIFFE id prefix [spiffe://airlock/intake/]\n"
               "  CMD ARGS...           the job's argv [/bin/true]\n");
}

static int parse_count(const char *s, size_t max, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v > max)
        return -1;
    *out = (size_t)v;
    return 0;
}

enum { O_TARGET = 0x100, O_CA, O_CERT, O_KEY, O_APIKEY, O_SNI, O_PEER, O_POOL };

static int parse_opt(int c, const char *arg, struct opts *o)
{
    size_t v;
    switch (c) {
    case O_TARGET:
        o->target = arg;
        return 0;
    case O_CA:
        o->ca = arg;
        return 0;
    case O_CERT:
        o->cert = arg;
        return 0;
    case O_KEY:
        o->key = arg;
        return 0;
    case O_APIKEY:
        o->api_key_file = arg;
        return 0;
    case O_SNI:
        o->server_name = arg;
        return 0;
    case O_PEER:
        o->expect_peer = arg;
        return 0;
    case O_POOL:
        o->pool = arg;
        return 0;
    case 'n':
        return parse_count(arg, MAX_JOBS, &o->jobs) < 0 || !o->jobs ? -1 : 0;
    case 'w':
        return parse_count(arg, MAX_JOBS, &o->warmup);
    case 'm':
        if (parse_count(arg, MAX_INFLIGHT, &v) < 0 || !v)
            return -1;
        o->inflight = (int)v;
        return 0;
    case 'c':
        if (parse_count(arg, MAX_CONNS, &v) < 0 || !v)
            return -1;
        o->conns = (int)v;
        return 0;
    case 't':
        if (parse_count(arg, 3600, &v) < 0 || !v)
            return -1;
        o->timeout_s = (double)v;
        return 0;
    default:
        return -1;
    }
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {{"target", 1, 0, O_TARGET},
                                       {"ca", 1, 0, O_CA},
                                       {"cert", 1, 0, O_CERT},
                                       {"key", 1, 0, O_KEY},
                                       {"api-key-file", 1, 0, O_APIKEY},
                                       {"server-name", 1, 0, O_SNI},
                                       {"expect-peer", 1, 0, O_PEER},
                                       {"pool", 1, 0, O_POOL},
                                       {"jobs", 1, 0, 'n'},
                                       {"warmup", 1, 0, 'w'},
                                       {"in-flight", 1, 0, 'm'},
                                       {"connections", 1, 0, 'c'},
                                       {"timeout", 1, 0, 't'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
    int c, bad = 0;

    *o = (struct opts){.expect_peer = "spiffe://airlock/intake/",
                       .pool = "default",
                       .jobs = 2000,
                       .warmup = 200,
                       .conns = 1,
                       .inflight = 4,
                       .timeout_s = 120};
    while ((c = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            exit(0);
        }
        bad |= parse_opt(c, optarg, o) < 0;
    }
    for (int i = optind; i < argc && o->argc < MAX_ARGS; i++)
        o->argv[o->argc++] = argv[i];
    if (optind < argc && (size_t)(argc - optind) > MAX_ARGS)
        bad = 1;
    if (!o->argc)
        o->argv[o->argc++] = "/bin/true";
    if (bad || !o->target || !o->ca || !o->api_key_file || !o->cert != !o->key) {
        usage(stderr);
        return -1;
    }
    return 0;
}

/* Reads the API key (one line) into "Bearer <key>" in *out. */
static int read_bearer(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = calloc(1, MAX_KEY + 8);
    size_t n = 0;
    int rc = 0;

    *out = NULL;
    *len = 0;
    if (!f || !buf) {
        rc = f ? AL_ERR_NOMEM : -errno;
        goto out;
    }
    memcpy(buf, "Bearer ", 7);
    n = fread(buf + 7, 1, MAX_KEY, f);
    while (n && (buf[7 + n - 1] == '\n' || buf[7 + n - 1] == '\r' || buf[7 + n - 1] == ' '))
        n--;
    if (ferror(f) || n == 0 || n >= MAX_KEY) {
        rc = AL_ERR_INVAL;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)buf[7 + i] < 0x21 || (unsigned char)buf[7 + i] > 0x7e)
            rc = AL_ERR_INVAL;
out:
    if (f)
        fclose(f);
    if (rc < 0 && buf) {
        OPENSSL_cleanse(buf, MAX_KEY + 8);
        free(buf);
        buf = NULL;
    }
    *out = buf;
    *len = rc < 0 ? 0 : 7 + n;
    return rc;
}

/* ---------- main ---------- */

struct run {
    struct opts o;
    struct bench b;
    Airlock__V1__SubmitJobRequest req;
    Airlock__V1__JobSpec spec;
    Airlock__V1__ExecSpec exec;
    char *bearer;
    size_t bearer_len;
    struct al_tls *tls;
    struct al_grpc_channel *ch[MAX_CONNS];
    struct slot *slots;
    size_t nslots;
};

static int alloc_results(struct run *r)
{
    size_t total = r->o.jobs + r->o.warmup;

    r->nslots = (size_t)r->o.inflight;
    r->slots = calloc(r->nslots, sizeof(*r->slots));
    r->b.lat_ms = calloc(r->o.jobs, sizeof(double));
    r->b.ids = calloc(total, ID_MAX);
    if (!r->slots || !r->b.lat_ms || !r->b.ids)
        return AL_ERR_NOMEM;
    for (int i = 0; i < N_STAGE; i++)
        if (!(r->b.stage_ms[i] = calloc(r->o.jobs, sizeof(double))))
            return AL_ERR_NOMEM;
    return 0;
}

static int setup(struct run *r)
{
    struct al_tls_opts to = {.cert_file = r->o.cert, .key_file = r->o.key, .ca_file = r->o.ca};
    int rc = al_tls_new(&to, &r->tls);

    if (rc < 0) {
        fprintf(stderr, "bench_jobs_load: TLS files: %s\n", al_strerror(rc));
        return rc;
    }
    if ((rc = alloc_results(r)) < 0) {
        fprintf(stderr, "bench_jobs_load: %s\n", al_strerror(rc));
        return rc;
    }
    for (int i = 0; i < r->o.conns; i++) {
        struct al_grpc_channel_opts co = {.target = r->o.target,
                                          .tls = r->tls,
                                          .server_name = r->o.server_name,
                                          .expect_peer = r->o.expect_peer};
        if ((rc = al_grpc_channel_new(r->b.loop, &co, &r->ch[i])) < 0) {
            fprintf(stderr, "bench_jobs_load: --target %s: %s\n", r->o.target, al_strerror(rc));
            return rc;
        }
    }
    for (size_t i = 0; i < r->nslots; i++)
        r->slots[i] = (struct slot){.b = &r->b, .ch = r->ch[i % (size_t)r->o.conns]};
    /* the job: EXEC of argv in the pool, nothing else set (pool defaults) */
    airlock__v1__exec_spec__init(&r->exec);
    r->exec.n_argv = r->o.argc;
    r->exec.argv = r->o.argv;
    airlock__v1__job_spec__init(&r->spec);
    r->spec.pool = (char *)r->o.pool;
    r->spec.kind = AIRLOCK__V1__JOB_KIND__JOB_KIND_EXEC;
    r->spec.exec = &r->exec;
    airlock__v1__submit_job_request__init(&r->req);
    r->req.spec = &r->spec;
    r->b.req = &r->req;
    r->b.md[0] = (struct al_grpc_md){"authorization", r->bearer, r->bearer_len};
    printf("load: target=%s pool=%s argv0=%s connections=%d in_flight=%zu "
           "(each job: Submit, then Watch from seq 0 to the terminal state)\n",
           r->o.target, r->o.pool, r->o.argv[0], r->o.conns, r->nslots);
    return 0;
}

static void teardown(struct run *r)
{
    for (int i = 0; i < MAX_CONNS; i++) {
        al_grpc_channel_free(r->ch[i]);
        r->ch[i] = NULL;
    }
    if (r->b.loop)
        ev_run(r->b.loop, 0); /* let the closed connections be reaped */
    al_tls_free(r->tls);
    free(r->slots);
    free(r->b.lat_ms);
    free(r->b.ids);
    for (int i = 0; i < N_STAGE; i++)
        free(r->b.stage_ms[i]);
    if (r->bearer) {
        OPENSSL_cleanse(r->bearer, MAX_KEY + 8);
        free(r->bearer);
    }
    if (r->b.loop)
        ev_loop_destroy(r->b.loop);
}

/* Warm-up, timed phase, checks; returns the exit status. */
static int measure(struct run *r)
{
    struct bench *b = &r->b;
    const struct opts *o = &r->o;
    size_t total = o->jobs + o->warmup;

    run_phase(b, r->slots, r->nslots, 0, o->warmup, 0);
    size_t warm_fail = failures(b);
    printf("warmup: jobs=%zu ok=%zu errors=%zu\n", o->warmup, b->ok, warm_fail);
    if (warm_fail) {
        print_failures(b);
        printf("result: jobs=0 ok=0 errors=%zu (the warm-up failed; nothing timed)\n", warm_fail);
        return 1;
    }
    fflush(stdout);
    double c0 = cpu_s();
    double secs = run_phase(b, r->slots, r->nslots, o->warmup, o->jobs, 1);
    double cpu = cpu_s() - c0;
    size_t dup = duplicate_ids(b, total);
    if (dup && b->by_kind[F_DUP_ID]++ == 0)
        snprintf(b->first_why[F_DUP_ID], sizeof(b->first_why[F_DUP_ID]),
                 "%zu job(s) got an id another job also got", dup);
    int bad = failures(b) > 0 || b->ok != total;

    print_failures(b);
    if (!bad)
        printf("checked: %zu jobs (warm-up included), every one a new QUEUED job at Submit, "
               "events 1..n without gaps, QUEUED -> LEASED -> RUNNING -> SUCCEEDED with attempt "
               "1, exit code 0, Watch ended OK; %zu distinct job ids\n",
               total, total);
    print_timed(b, o->jobs, failures(b) - warm_fail, secs, cpu);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    static struct run r;
    int rc, status = 2;

    if (parse_args(argc, argv, &r.o) < 0)
        return 2;
    (void)al_log_set_level_name("warn");
    r.b.o = &r.o;
    if ((rc = read_bearer(r.o.api_key_file, &r.bearer, &r.bearer_len)) < 0) {
        fprintf(stderr, "bench_jobs_load: --api-key-file %s: %s\n", r.o.api_key_file,
                rc == AL_ERR_INVAL ? "not one API key (printable, at most 511 bytes)"
                                   : al_strerror(rc));
        goto out;
    }
    if (!(r.b.loop = ev_loop_new(EVFLAG_AUTO)) || setup(&r) < 0)
        goto out;
    fflush(stdout);
    status = measure(&r);
out:
    teardown(&r);
    return status;
}
