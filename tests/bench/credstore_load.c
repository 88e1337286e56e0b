/*
 * bench_credstore_load: Resolve load generator for tests/bench/credstore.sh.
 *
 * Drives airlock.v1.CredentialResolver/Resolve on a running airlock-credstore
 * over mTLS, as an executor identity, with every call carrying a grant of its
 * own: a distinct grant id (a random 64-bit run prefix followed by the call's
 * 64-bit index, 32 hex digits) and subject, signed with the issuer's Ed25519
 * key, holder = the SPIFFE id of our client certificate. All grants are
 * signed before the timed phase: signing is the issuer's cost, not the
 * credstore's.
 *
 * Load: --connections channels (one kept-alive HTTP/2 connection each), each
 * with --streams calls in flight at all times (closed loop: a finished call
 * starts the next on the same connection). A warm-up phase (connections
 * open, caches warm) is followed by the timed phase of --calls calls;
 * throughput is calls / (last completion - start), latency is per call from
 * al_grpc_channel_call() to on_done on CLOCK_MONOTONIC.
 *
 * Every answer is checked: status OK, exactly one ResolveResponse, the value
 * equal to --expect-value-file (compared, never printed), a version, a TTL
 * and an audit sequence number, and no two calls sharing an audit record.
 * Any other outcome is counted and printed by status, and the exit status is
 * 1: denials and errors can never pass for speed.
 *
 * Output: informational lines, then one line
 *   result: calls=N ok=N errors=N resolves_per_s=X p50_ms=X p99_ms=X ...
 * Exit: 0 every call OK, 1 a call failed or an answer was wrong, 2 usage or
 * setup error.
 */
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <ev.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "airlock/v1/credstore.pb-c.h"
#include "airlock/v1/grant.pb-c.h"
#include "al_err.h"
#include "al_grant.h"
#include "al_grpc.h"
#include "al_grpc_client.h"
#include "al_log.h"
#include "al_pki.h"
#include "al_tls.h"

#define RESOLVE_PATH   "/airlock.v1.CredentialResolver/Resolve"
#define MAX_CONNS      64
#define MAX_STREAMS    1024
#define MAX_CALLS      2000000UL /* grants are held in memory: ~330 bytes each */
#define MAX_VALUE      (64 * 1024)
#define CALL_TIMEOUT_S 60.0 /* a hang guard only: a call this late fails the run */
#define N_STATUS       17

struct opts {
    const char *target, *ca, *cert, *key, *grant_key, *issuer, *audience;
    const char *credential, *destination, *principal, *scope, *value_file;
    const char *server_name, *expect_peer;
    size_t calls, warmup;
    int conns, streams;
    int64_t grant_ttl_ms;
};

/* Pre-signed grants: grant bytes and signature of grant i are at off[i] in buf. */
struct grants {
    uint8_t *buf;
    size_t len, cap;
    size_t *off;
    uint32_t *glen;
    size_t n;
    char key_id[AL_GRANT_KEY_ID_MAX];
};

struct bench;

/* One in-flight position: a connection's stream slot, reused call after call. */
struct slot {
    struct bench *b;
    struct al_grpc_channel *ch;
    size_t idx;    /* grant (and call) index of the current call */
    double t0;     /* CLOCK_MONOTONIC seconds at the call's start */
    int got, good; /* messages received; the one message checked out */
    int in_start, again;
};

struct bench {
    struct ev_loop *loop;
    const struct opts *o;
    struct grants *g;
    uint8_t *value;
    size_t value_len;
    /* current phase: calls [first, end) */
    size_t next, end, done, first;
    int record; /* timed phase: keep latencies */
    double last_done;
    double *lat_ms; /* per timed call answered OK, in completion order */
    size_t nlat;
    int64_t *seq; /* audit_seq per call (warm-up and timed) */
    size_t ok, bad_response, by_status[N_STATUS];
    char first_msg[N_STATUS][160];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t now_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------- grants ---------- */

static int pool_put(struct grants *gp, const uint8_t *p, size_t n)
{
    if (gp->len + n > gp->cap) {
        size_t want = gp->cap ? gp->cap * 2 : 1 << 20;
        while (want < gp->len + n)
            want *= 2;
        uint8_t *q = realloc(gp->buf, want);
        if (!q)
            return AL_ERR_NOMEM;
        gp->buf = q;
        gp->cap = want;
    }
    memcpy(gp->buf + gp->len, p, n);
    gp->len += n;
    return 0;
}

/* Signs grant i and appends its grant bytes and signature to the pool. */
static int sign_one(struct grants *gp, const struct al_grant_signer *s, Airlock__V1__Grant *g,
                    uint64_t prefix, size_t i)
{
    char id[33], subject[64];
    uint8_t *out = NULL;
    size_t outlen = 0;
    int rc;

    snprintf(id, sizeof(id), "%016llx%016llx", (unsigned long long)prefix, (unsigned long long)i);
    snprintf(subject, sizeof(subject), "job/bench-%016llx-%zu/attempt/1",
             (unsigned long long)prefix, i);
    g->grant_id = id;
    g->subject = subject;
    rc = al_grant_sign(s, g, &out, &outlen);
    if (rc < 0)
        return rc;
    Airlock__V1__SignedGrant *sg = airlock__v1__signed_grant__unpack(NULL, outlen, out);
    free(out);
    if (!sg || sg->signature.len != 64 || strcmp(sg->key_id, s->key_id) != 0) {
        rc = AL_ERR_CRYPTO;
        goto out;
    }
    gp->off[i] = gp->len;
    gp->glen[i] = (uint32_t)sg->grant.len;
    if ((rc = pool_put(gp, sg->grant.data, sg->grant.len)) == 0)
        rc = pool_put(gp, sg->signature.data, 64);
out:
    if (sg)
        airlock__v1__signed_grant__free_unpacked(sg, NULL);
    return rc;
}

/* Signs n distinct grants for holder with the issuer key in o->grant_key. */
static int sign_all(const struct opts *o, const char *holder, size_t n, struct grants *gp)
{
    struct al_grant_signer *s = NULL;
    Airlock__V1__Grant g = AIRLOCK__V1__GRANT__INIT;
    char *creds[1] = {(char *)o->credential}, *dests[1] = {(char *)o->destination};
    uint64_t prefix = 0;
    int rc = al_grant_signer_new(o->grant_key, NULL, o->issuer, &s);

    if (rc < 0) {
        fprintf(stderr, "bench_credstore_load: --grant-key %s (issuer %s): %s\n", o->grant_key,
                o->issuer, al_strerror(rc));
        return rc;
    }
    gp->off = calloc(n, sizeof(*gp->off));
    gp->glen = calloc(n, sizeof(*gp->glen));
    if (!gp->off || !gp->glen || RAND_bytes((uint8_t *)&prefix, sizeof(prefix)) != 1) {
        rc = AL_ERR_NOMEM;
        goto out;
    }
    snprintf(gp->key_id, sizeof(gp->key_id), "%s", s->key_id);
    int64_t now = now_unix_ms();
    g.issuer = s->issuer;
    g.audience = (char *)o->audience;
    g.holder = (char *)holder;
    g.principal = (char *)o->principal;
    g.scope = (char *)o->scope;
    g.n_credentials = 1;
    g.credentials = creds;
    g.n_destinations = 1;
    g.destinations = dests;
    g.not_before_ms = now - 1000;
    g.expires_ms = now + o->grant_ttl_ms;
    for (size_t i = 0; i < n && rc == 0; i++, gp->n++)
        rc = sign_one(gp, s, &g, prefix, i);
    if (rc < 0)
        fprintf(stderr, "bench_credstore_load: signing grant %zu: %s\n", gp->n, al_strerror(rc));
out:
    al_grant_signer_free(s);
    return rc;
}

static void grants_free(struct grants *gp)
{
    free(gp->buf);
    free(gp->off);
    free(gp->glen);
    memset(gp, 0, sizeof(*gp));
}

/* ---------- calls ---------- */

static void on_message(struct al_grpc_ccall *cc, const ProtobufCMessage *msg, void *user)
{
    struct slot *s = user;
    struct bench *b = s->b;
    const Airlock__V1__ResolveResponse *r = (const void *)msg;
    (void)cc;

    if (s->got++)
        return; /* a second message makes the call bad (good stays as it was, got > 1) */
    s->good = r->value.len == b->value_len &&
              CRYPTO_memcmp(r->value.data, b->value, b->value_len) == 0 && r->version >= 1 &&
              r->ttl_ms > 0 && r->expires_ms > 0 && r->audit_seq > 0;
    b->seq[s->idx] = r->audit_seq;
}

static void slot_start(struct slot *s);

static void count_failure(struct bench *b, int status, const char *message)
{
    if (status < 0 || status >= N_STATUS)
        status = AL_GRPC_UNKNOWN;
    if (b->by_status[status]++ == 0)
        snprintf(b->first_msg[status], sizeof(b->first_msg[status]), "%s", message);
}

static void on_done(struct al_grpc_ccall *cc, int status, const char *message, void *user)
{
    struct slot *s = user;
    struct bench *b = s->b;
    double t = now_s();
    (void)cc;

    if (status == AL_GRPC_OK && s->got == 1 && s->good) {
        b->ok++;
        if (b->record)
            b->lat_ms[b->nlat++] = (t - s->t0) * 1e3;
    } else if (status == AL_GRPC_OK) {
        b->bad_response++;
    } else {
        count_failure(b, status, message);
    }
    b->done++;
    b->last_done = t;
    if (b->done == b->end - b->first)
        ev_break(b->loop, EVBREAK_ALL);
    slot_start(s);
}

/* Starts the slot's next call, if the phase has calls left. on_done may run
 * inside al_grpc_channel_call() (submit failure): that re-entry only asks the
 * loop here to go round again, so the stack never grows. */
static void slot_start(struct slot *s)
{
    static const struct al_grpc_ccall_cbs cbs = {on_message, on_done};
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
        s->idx = b->next++;
        s->got = s->good = 0;
        Airlock__V1__SignedGrant sg = AIRLOCK__V1__SIGNED_GRANT__INIT;
        Airlock__V1__ResolveRequest req = AIRLOCK__V1__RESOLVE_REQUEST__INIT;
        sg.grant.data = b->g->buf + b->g->off[s->idx];
        sg.grant.len = b->g->glen[s->idx];
        sg.key_id = b->g->key_id;
        sg.signature.data = sg.grant.data + sg.grant.len;
        sg.signature.len = 64;
        req.grant = &sg;
        req.credential = (char *)b->o->credential;
        req.destination = (char *)b->o->destination;
        s->t0 = now_s();
        int rc = al_grpc_channel_call(s->ch, RESOLVE_PATH, &req.base,
                                      &airlock__v1__resolve_response__descriptor, NULL, 0,
                                      CALL_TIMEOUT_S, &cbs, s, NULL);
        if (rc < 0) {
            count_failure(b, AL_GRPC_UNAVAILABLE, al_strerror(rc));
            b->done++;
            if (b->done == b->end - b->first)
                ev_break(b->loop, EVBREAK_ALL);
            s->again = 1;
        }
    } while (s->again);
    s->in_start = 0;
}

/* Runs calls [first, first + n) on every slot; returns the phase's seconds. */
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

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n), pm in per mille (990 = p99). */
static double pct(const double *v, size_t n, unsigned pm)
{
    size_t rank = (n * pm + 999) / 1000;
    return n ? v[rank ? rank - 1 : 0] : 0;
}

/* Returns the number of calls whose audit_seq is shared with another call. */
static size_t shared_seqs(int64_t *seq, size_t n)
{
    size_t dup = 0;
    qsort(seq, n, sizeof(*seq), cmp_i64);
    for (size_t i = 1; i < n; i++)
        if (seq[i] == seq[i - 1])
            dup++;
    return dup;
}

static size_t failures(const struct bench *b)
{
    size_t f = b->bad_response;
    for (int i = 0; i < N_STATUS; i++)
        f += b->by_status[i];
    return f;
}

static void print_failures(const struct bench *b)
{
    for (int i = 0; i < N_STATUS; i++)
        if (b->by_status[i])
            printf("error: status=%s count=%zu first_message=\"%s\"\n", al_grpc_status_name(i),
                   b->by_status[i], b->first_msg[i]);
    if (b->bad_response)
        printf("error: status=OK but the answer was wrong (value, version, ttl or audit_seq, or "
               "not exactly one message) count=%zu\n",
               b->bad_response);
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* ---------- setup ---------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_credstore_load --target HOST:PORT --ca FILE --cert FILE --key FILE\n"
               "         --grant-key FILE --credential NAME --destination HOST[:PORT]\n"
               "         --expect-value-file FILE [flags]\n\n"
               "Resolve load on airlock-credstore over mTLS, one distinct pre-signed grant per\n"
               "call, holder = the SPIFFE id of --cert. Every answer is checked; exit 1 if any\n"
               "call was not OK.\n\n"
               "  --issuer SPIFFE       grant issuer [spiffe://airlock/intake/intake-0]\n"
               "  --audience SPIFFE     grant audience [spiffe://airlock/credstore]\n"
               "  --principal NAME      [acme/bench]   --scope POOL [ci-bench]\n"
               "  --calls N             timed calls [50000]\n"
               "  --warmup N            untimed calls first [5000]\n"
               "  --connections C       HTTP/2 connections [2]\n"
               "  --streams M           calls in flight per connection [16]\n"
               "  --grant-ttl SECONDS   grant lifetime [600]\n"
               "  --server-name NAME    name the server certificate must hold [host of --target]\n"
               "  --expect-peer PREFIX  server SPIFFE id prefix [spiffe://airlock/credstore/]\n");
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

/* String flags: getopt_long value STR_FLAG + i stores optarg at STR_OPTS[i].off. */
#define STR_FLAG 0x100
#define SOPT(name, member)                                                                         \
    {                                                                                              \
        name, offsetof(struct opts, member)                                                        \
    }
static const struct {
    const char *name;
    size_t off;
} STR_OPTS[] = {SOPT("target", target),
                SOPT("ca", ca),
                SOPT("cert", cert),
                SOPT("key", key),
                SOPT("grant-key", grant_key),
                SOPT("issuer", issuer),
                SOPT("audience", audience),
                SOPT("credential", credential),
                SOPT("destination", destination),
                SOPT("principal", principal),
                SOPT("scope", scope),
                SOPT("expect-value-file", value_file),
                SOPT("server-name", server_name),
                SOPT("expect-peer", expect_peer)};
#define N_STR_OPTS (sizeof(STR_OPTS) / sizeof(STR_OPTS[0]))

/* Numeric flags; returns 0, or -1 for a bad value or an unknown flag. */
static int number_flag(int c, const char *arg, struct opts *o)
{
    size_t v;
    switch (c) {
    case 'n':
        return parse_count(arg, MAX_CALLS, &o->calls) < 0 || !o->calls ? -1 : 0;
    case 'w':
        return parse_count(arg, MAX_CALLS, &o->warmup);
    case 'c':
        if (parse_count(arg, MAX_CONNS, &v) < 0 || !v)
            return -1;
        o->conns = (int)v;
        return 0;
    case 'm':
        if (parse_count(arg, MAX_STREAMS, &v) < 0 || !v)
            return -1;
        o->streams = (int)v;
        return 0;
    case 'T':
        if (parse_count(arg, 24 * 3600, &v) < 0 || !v)
            return -1;
        o->grant_ttl_ms = (int64_t)v * 1000;
        return 0;
    default:
        return -1;
    }
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    struct option lo[N_STR_OPTS + 7] = {{"calls", 1, 0, 'n'},       {"warmup", 1, 0, 'w'},
                                        {"connections", 1, 0, 'c'}, {"streams", 1, 0, 'm'},
                                        {"grant-ttl", 1, 0, 'T'},   {"help", 0, 0, 'h'}};
    int c, bad = 0;

    for (size_t i = 0; i < N_STR_OPTS; i++)
        lo[6 + i] = (struct option){STR_OPTS[i].name, 1, 0, STR_FLAG + (int)i};
    *o = (struct opts){.issuer = "spiffe://airlock/intake/intake-0",
                       .audience = "spiffe://airlock/credstore",
                       .principal = "acme/bench",
                       .scope = "ci-bench",
                       .expect_peer = "spiffe://airlock/credstore/",
                       .calls = 50000,
                       .warmup = 5000,
                       .conns = 2,
                       .streams = 16,
                       .grant_ttl_ms = 600 * 1000};
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        if (c >= STR_FLAG && c < STR_FLAG + (int)N_STR_OPTS)
            *(const char **)((char *)o + STR_OPTS[c - STR_FLAG].off) = optarg;
        else if (c == 'h') {
            usage(stdout);
            exit(0);
        } else
            bad |= number_flag(c, optarg, o) < 0;
    }
    if (bad || optind != argc || !o->target || !o->ca || !o->cert || !o->key || !o->grant_key ||
        !o->credential || !o->destination || !o->value_file) {
        usage(stderr);
        return -1;
    }
    return 0;
}

/* Reads the expected value (at most MAX_VALUE bytes) into *out. */
static int read_value(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = malloc(MAX_VALUE + 1);
    size_t n = 0;
    int rc = 0;

    if (!f || !buf) {
        rc = f ? AL_ERR_NOMEM : -errno;
        goto out;
    }
    n = fread(buf, 1, MAX_VALUE + 1, f);
    if (ferror(f) || n == 0 || n > MAX_VALUE)
        rc = AL_ERR_INVAL;
out:
    if (f)
        fclose(f);
    if (rc < 0 && buf) {
        OPENSSL_cleanse(buf, MAX_VALUE + 1);
        free(buf);
        buf = NULL;
    }
    *out = buf;
    *len = rc < 0 ? 0 : n;
    return rc;
}

/* The SPIFFE id of the client certificate: the holder every grant names. */
static int holder_of(const char *cert_file, char *buf, size_t n)
{
    X509 *x = NULL;
    int rc = al_pki_load_cert(cert_file, &x);
    if (rc == 0)
        rc = al_pki_spiffe_id(x, buf, n);
    X509_free(x);
    return rc;
}

/* ---------- main ---------- */

struct run {
    struct opts o;
    struct grants g;
    struct bench b;
    struct al_tls *tls;
    struct al_grpc_channel *ch[MAX_CONNS];
    struct slot *slots;
    size_t nslots;
};

static int setup(struct run *r, const char *holder)
{
    struct al_tls_opts to = {.cert_file = r->o.cert, .key_file = r->o.key, .ca_file = r->o.ca};
    int rc = al_tls_new(&to, &r->tls);
    if (rc < 0) {
        fprintf(stderr, "bench_credstore_load: TLS files: %s\n", al_strerror(rc));
        return rc;
    }
    r->nslots = (size_t)r->o.conns * (size_t)r->o.streams;
    r->slots = calloc(r->nslots, sizeof(*r->slots));
    r->b.lat_ms = calloc(r->o.calls, sizeof(*r->b.lat_ms));
    r->b.seq = calloc(r->o.calls + r->o.warmup, sizeof(*r->b.seq));
    if (!r->slots || !r->b.lat_ms || !r->b.seq)
        return AL_ERR_NOMEM;
    for (int i = 0; i < r->o.conns; i++) {
        struct al_grpc_channel_opts co = {.target = r->o.target,
                                          .tls = r->tls,
                                          .server_name = r->o.server_name,
                                          .expect_peer = r->o.expect_peer};
        rc = al_grpc_channel_new(r->b.loop, &co, &r->ch[i]);
        if (rc < 0) {
            fprintf(stderr, "bench_credstore_load: --target %s: %s\n", r->o.target,
                    al_strerror(rc));
            return rc;
        }
    }
    for (size_t i = 0; i < r->nslots; i++)
        r->slots[i] = (struct slot){.b = &r->b, .ch = r->ch[i % (size_t)r->o.conns]};
    printf("load: holder=%s connections=%d streams_per_connection=%d in_flight=%zu\n", holder,
           r->o.conns, r->o.streams, r->nslots);
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
    free(r->b.seq);
    if (r->b.value) {
        OPENSSL_cleanse(r->b.value, MAX_VALUE + 1);
        free(r->b.value);
    }
    grants_free(&r->g);
    if (r->b.loop)
        ev_loop_destroy(r->b.loop);
}

/* Prints the timed phase: calls, latency percentiles and the result line. */
static void print_timed(struct bench *b, size_t calls, size_t fail, double secs, double cpu)
{
    size_t n = b->nlat;
    double rps = secs > 0 ? (double)calls / secs : 0, max = n ? b->lat_ms[n - 1] : 0;

    printf("timed: calls=%zu ok=%zu errors=%zu seconds=%.3f loader_cpu_pct=%.0f\n", calls, n, fail,
           secs, secs > 0 ? 100 * cpu / secs : 0);
    printf("latency_ms: p50=%.3f p90=%.3f p99=%.3f p99.9=%.3f max=%.3f\n", pct(b->lat_ms, n, 500),
           pct(b->lat_ms, n, 900), pct(b->lat_ms, n, 990), pct(b->lat_ms, n, 999), max);
    printf("result: calls=%zu ok=%zu errors=%zu resolves_per_s=%.1f p50_ms=%.3f p99_ms=%.3f "
           "max_ms=%.3f seconds=%.3f\n",
           calls, n, fail, rps, pct(b->lat_ms, n, 500), pct(b->lat_ms, n, 990), max, secs);
}

/* Warm-up, timed phase, checks; returns the exit status. */
static int measure(struct run *r)
{
    struct bench *b = &r->b;
    const struct opts *o = &r->o;
    size_t total = o->calls + o->warmup;

    run_phase(b, r->slots, r->nslots, 0, o->warmup, 0);
    size_t warm_fail = failures(b);
    printf("warmup: calls=%zu ok=%zu errors=%zu\n", o->warmup, b->ok, warm_fail);
    if (warm_fail) {
        print_failures(b);
        printf("result: calls=0 ok=0 errors=%zu (the warm-up failed; nothing timed)\n", warm_fail);
        return 1;
    }
    double c0 = cpu_s();
    double secs = run_phase(b, r->slots, r->nslots, o->warmup, o->calls, 1);
    double cpu = cpu_s() - c0;
    /* every call OK: then no two may share an audit record */
    size_t dup = b->ok == total ? shared_seqs(b->seq, total) : 0;
    int bad = failures(b) > 0 || b->ok != total || dup > 0;

    qsort(b->lat_ms, b->nlat, sizeof(double), cmp_double);
    print_failures(b);
    if (dup)
        printf("error: %zu calls were answered with an audit_seq another call also got\n", dup);
    else if (!bad)
        printf("checked: every call OK with the expected value, version, ttl and its own audit "
               "record: audit_seq_first=%lld audit_seq_last=%lld distinct=%zu\n",
               (long long)b->seq[0], (long long)b->seq[total - 1], total);
    print_timed(b, o->calls, failures(b) - warm_fail + dup, secs, cpu);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    static struct run r;
    char holder[AL_TLS_ID_MAX];
    int rc, status = 2;

    if (parse_args(argc, argv, &r.o) < 0)
        return 2;
    (void)al_log_set_level_name("warn");
    r.b.o = &r.o;
    r.b.g = &r.g;
    if ((rc = holder_of(r.o.cert, holder, sizeof(holder))) < 0) {
        fprintf(stderr, "bench_credstore_load: --cert %s: no SPIFFE id: %s\n", r.o.cert,
                al_strerror(rc));
        return 2;
    }
    if ((rc = read_value(r.o.value_file, &r.b.value, &r.b.value_len)) < 0) {
        fprintf(stderr, "bench_credstore_load: --expect-value-file %s: %s\n", r.o.value_file,
                al_strerror(rc));
        goto out;
    }
    double t0 = now_s();
    if (sign_all(&r.o, holder, r.o.warmup + r.o.calls, &r.g) < 0)
        goto out;
    printf("grants: signed=%zu distinct ids, key_id=%s, %.2f s before timing (client side)\n",
           r.g.n, r.g.key_id, now_s() - t0);
    if (!(r.b.loop = ev_loop_new(EVFLAG_AUTO)) || setup(&r, holder) < 0)
        goto out;
    fflush(stdout);
    status = measure(&r);
out:
    teardown(&r);
    return status;
}
