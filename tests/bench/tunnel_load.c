/*
 * bench_tunnel_load: the agent side of tests/bench/tunnel.sh.
 *
 * One program drives all three paths the benchmark compares, so the client
 * costs the same everywhere: an http:// URL is HTTP/1.1 over plain TCP (the
 * direct path to the upstream), an https:// URL is HTTP/2 over TLS 1.3 with
 * ALPN h2 (the relay's agent port, nghttpx's frontend). The client is plain
 * OpenSSL + nghttp2 + http_parser on libev, none of Airlock's own code. It
 * verifies the server certificate against --ca and its name against the
 * URL's host, and offers one TLS 1.3 cipher suite (--ciphers) so every
 * server negotiates the same one.
 *
 * Modes (--mode):
 *   lat      --warmup then --requests requests one after another on one
 *            kept-alive connection (one in flight: the latency a request
 *            sees with nothing else going on). Latency per request on
 *            CLOCK_MONOTONIC from just before the request is written to its
 *            last response byte; nearest-rank percentiles.
 *   tput     --warmup then --requests GETs one after another on one
 *            connection, each of --expect-bytes bytes of the tunnel_bench.h
 *            pattern (checked byte for byte). MB/s = 10^6 bytes per second
 *            from the request to its last byte; the best and the median are
 *            reported. HTTP/2 windows: --window per stream, 1 GiB for the
 *            connection.
 *   streams  --streams GETs (SSE, held open by the upstream) spread over
 *            --connections HTTP/2 connections, all submitted at once (nghttp2
 *            queues what exceeds the server's SETTINGS_MAX_CONCURRENT_STREAMS).
 *            A stream is open once its 200 head and first event have
 *            arrived. When as many are open as the servers' limits allow
 *            (or every stream is open or finished, or --open-timeout passed),
 *            the RSS of the --watch processes is sampled, --release-url is
 *            POSTed (the upstream then ends every held stream) and the run
 *            waits for every stream to end with its last event.
 *
 * Every response is checked, so errors cannot pass for speed: status
 * (--expect-status), body (--expect-body-file, exact, "@ID@" standing for
 * the request's JSON-RPC id; or --expect-bytes; or the SSE events), no
 * stream reset, and --forbid-file (the credential only the gateway may see)
 * in no response header or body byte. Failures are counted by kind with the
 * first one's detail (never a forbidden value); the exit status is 1 then.
 *
 * --watch NAME=PID (repeatable): in lat and tput the processes' CPU time
 * (/proc/PID/task/ * /schedstat) over the timed phase; in streams their RSS
 * and peak RSS (/proc/PID/status) before, during and after.
 *
 * Output: informational lines, then one "result: mode=... key=value ..."
 * line. Exit: 0 every request checked out, 1 a request failed, 2 usage or
 * setup error (bad flags, cannot connect, TLS or ALPN failure).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <http_parser.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tunnel_bench.h"

#define MAX_HEADERS  32
#define MAX_CONNS    64
#define MAX_WATCH    8
#define MAX_STREAMS  200000
#define MAX_REQUESTS 10000000UL
#define MAX_FILE     (1 << 20)
#define MAX_FORBID   1024
#define RBUF         (256 * 1024)
#define SSE_CAP      8192
#define ERR_BODY_CAP 512
#define CONN_WINDOW  ((1U << 30) - 1)
#define DEFAULT_WIN  (16U << 20)

enum mode { M_LAT, M_TPUT, M_STREAMS };
enum fail { F_STATUS, F_BODY, F_RESET, F_CONN, F_FORBID, F_RELEASE, F_N };
static const char *const FAIL_NAME[F_N] = {"status",     "body",      "reset",
                                           "connection", "forbidden", "release"};

struct tmpl { /* a text in which every "@ID@" stands for the request's id */
    char *text;
    size_t len, fixed_len; /* fixed_len: without the "@ID@"s */
    size_t nid;
};

struct watch {
    const char *name;
    int pid;
    double cpu0, wait0;
    long rss0, rss_during, hwm_during, rss_after, hwm_after;
};

struct opts {
    enum mode mode;
    const char *url, *ca, *ciphers, *method, *bearer_file, *body_file, *expect_file;
    const char *forbid_file, *release_url;
    const char *hdr[MAX_HEADERS];
    int nhdr;
    size_t requests, warmup, streams;
    int conns, expect_status;
    uint64_t expect_bytes;
    int have_expect_bytes;
    uint32_t window;
    double timeout_s, open_timeout_s;
    struct watch w[MAX_WATCH];
    int nw;
};

struct conn;

struct req {
    struct conn *c;
    int32_t sid;
    uint64_t id; /* JSON-RPC id (1-based request number) */
    double t0, t1;
    int status;
    uint64_t bytes;
    uint8_t *acc; /* body kept for the check (up to acc_cap) */
    size_t acc_len, acc_cap;
    int acc_over;
    uint8_t tail[MAX_FORBID]; /* last forbid_len - 1 bytes, for a match across chunks */
    size_t tail_len;
    int forbidden, pattern_bad, end_stream, done, open, first_event;
    uint32_t h2_error;
    char airlock_error[64];
    char *body; /* request body (rendered template) */
    size_t body_len, body_off;
};

struct conn {
    struct bench *b;
    int fd;
    SSL *ssl;
    int h2;
    nghttp2_session *ngh;
    http_parser hp;
    ev_io io;
    uint8_t *out; /* pending bytes to write */
    size_t out_len, out_off, out_cap;
    int want_write, dead, got_settings;
    struct req *cur; /* HTTP/1.1: the request in flight */
    char hname[64];
    size_t hname_len;
    uint32_t peer_max;
    size_t assigned, open_now;
};

struct bench {
    struct opts o;
    struct ev_loop *loop;
    SSL_CTX *ctx;
    int https;
    char host[256], port[8], path[2048];
    struct sockaddr_in sa;
    struct tmpl body_t, expect_t;
    char auth[MAX_FILE];
    size_t auth_len;
    uint8_t forbid[MAX_FORBID];
    size_t forbid_len;
    uint8_t block[TB_BLOCK];
    struct conn *c[MAX_CONNS];
    int nconn;
    /* lat / tput */
    struct req one;
    size_t next, total;
    double *lat, *mbps, *ttfb;
    size_t nlat;
    double t_first_byte;
    /* streams */
    struct req *reqs;
    size_t submitted, done, open_now, max_open, expected_open;
    size_t first_events, first_events_at_sample; /* SSE: first event complete */
    int sampled, released;
    double t_submit, t_sampled, t_released, t_done;
    ev_timer open_timer, hang_timer;
    /* outcome */
    size_t ok, fails[F_N];
    char first[F_N][300];
    int setup_error;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void fail(struct bench *b, enum fail k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct bench *b, enum fail k, const char *fmt, ...)
{
    if (b->fails[k]++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->first[k], sizeof(b->first[k]), fmt, ap);
        va_end(ap);
    }
}

/* ---------- /proc ---------- */

/* On-CPU seconds of every thread of pid and their seconds runnable but
 * waiting for a CPU (schedstat); -1 when gone. */
static double proc_cpu(int pid, double *wait)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", pid);
    DIR *d = opendir(path);
    double sum = 0, w = 0;
    struct dirent *e;
    *wait = 0;
    if (!d)
        return -1;
    while ((e = readdir(d))) {
        char f[300];
        unsigned long long ns = 0, wns = 0;
        if (e->d_name[0] == '.')
            continue;
        snprintf(f, sizeof(f), "/proc/%d/task/%s/schedstat", pid, e->d_name);
        FILE *fp = fopen(f, "r");
        if (!fp)
            continue;
        if (fscanf(fp, "%llu %llu", &ns, &wns) == 2) {
            sum += (double)ns / 1e9;
            w += (double)wns / 1e9;
        }
        fclose(fp);
    }
    closedir(d);
    *wait = w;
    return sum;
}

/* VmRSS and VmHWM of pid in kB (-1 when unreadable). */
static void proc_rss(int pid, long *rss, long *hwm)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    *rss = *hwm = -1;
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            *rss = strtol(line + 6, NULL, 10);
        else if (strncmp(line, "VmHWM:", 6) == 0)
            *hwm = strtol(line + 6, NULL, 10);
    }
    fclose(f);
}

/* ---------- files and templates ---------- */

static int read_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = malloc(MAX_FILE + 1);
    size_t n = 0;
    int rc = -1;

    if (f && buf) {
        n = fread(buf, 1, MAX_FILE + 1, f);
        if (!ferror(f) && n <= MAX_FILE)
            rc = 0;
    }
    if (f)
        fclose(f);
    if (rc < 0) {
        free(buf);
        return -1;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

static int tmpl_load(const char *path, struct tmpl *t)
{
    if (read_file(path, &t->text, &t->len) < 0)
        return -1;
    t->nid = 0;
    for (const char *p = t->text; (p = strstr(p, "@ID@")); p += 4)
        t->nid++;
    t->fixed_len = t->len - 4 * t->nid;
    return 0;
}

/* Renders t with id into a new buffer (*len bytes, NUL-terminated). */
static char *tmpl_render(const struct tmpl *t, uint64_t id, size_t *len)
{
    char ids[24];
    size_t il = (size_t)snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
    size_t n = t->fixed_len + t->nid * il, k = 0;
    const char *p = t->text, *at;
    char *out = malloc(n + 1);

    if (!out)
        return NULL;
    while ((at = strstr(p, "@ID@"))) {
        memcpy(out + k, p, (size_t)(at - p));
        k += (size_t)(at - p);
        memcpy(out + k, ids, il);
        k += il;
        p = at + 4;
    }
    memcpy(out + k, p, t->len - (size_t)(p - t->text));
    out[n] = 0;
    *len = n;
    return out;
}

/* ---------- response checks ---------- */

/* Looks for the forbidden value in d[n], including across the previous chunk. */
static void forbid_scan(struct bench *b, struct req *r, const uint8_t *d, size_t n)
{
    size_t fl = b->forbid_len;
    if (!fl || r->forbidden)
        return;
    if (r->tail_len) {
        uint8_t joint[2 * MAX_FORBID];
        size_t k = n < fl - 1 ? n : fl - 1;
        memcpy(joint, r->tail, r->tail_len);
        memcpy(joint + r->tail_len, d, k);
        if (memmem(joint, r->tail_len + k, b->forbid, fl))
            r->forbidden = 1;
    }
    if (memmem(d, n, b->forbid, fl))
        r->forbidden = 1;
    if (n >= fl - 1) {
        memcpy(r->tail, d + n - (fl - 1), fl - 1);
        r->tail_len = fl - 1;
    } else {
        size_t keep = r->tail_len + n > fl - 1 ? fl - 1 - n : r->tail_len;
        memmove(r->tail, r->tail + r->tail_len - keep, keep);
        memcpy(r->tail + keep, d, n);
        r->tail_len = keep + n;
    }
}

static void header_scan(struct bench *b, struct req *r, const uint8_t *name, size_t nl,
                        const uint8_t *value, size_t vl)
{
    size_t fl = b->forbid_len;
    if (fl && ((nl >= fl && memmem(name, nl, b->forbid, fl)) ||
               (vl >= fl && memmem(value, vl, b->forbid, fl))))
        r->forbidden = 1;
    if (nl == 13 && strncasecmp((const char *)name, "airlock-error", 13) == 0)
        snprintf(r->airlock_error, sizeof(r->airlock_error), "%.*s", (int)(vl < 60 ? vl : 60),
                 (const char *)value);
}

static void body_bytes(struct bench *b, struct req *r, const uint8_t *d, size_t n)
{
    if (!r->bytes)
        b->t_first_byte = now_s();
    forbid_scan(b, r, d, n);
    if (b->o.mode == M_TPUT) {
        uint64_t off = r->bytes;
        for (size_t i = 0; i < n && !r->pattern_bad;) {
            size_t at = (size_t)((off + i) % TB_BLOCK), k = TB_BLOCK - at;
            if (k > n - i)
                k = n - i;
            if (memcmp(d + i, b->block + at, k) != 0)
                r->pattern_bad = 1;
            i += k;
        }
    }
    r->bytes += n;
    if (r->acc_cap) {
        size_t k = r->acc_cap - r->acc_len < n ? r->acc_cap - r->acc_len : n;
        memcpy(r->acc + r->acc_len, d, k);
        r->acc_len += k;
        r->acc_over |= k < n;
    }
    if (b->o.mode == M_STREAMS && !r->first_event && memmem(r->acc, r->acc_len, "\n\n", 2)) {
        r->first_event = 1;
        b->first_events++;
    }
}

/* Streams mode: a stream is open once its 200 response head has arrived
 * (the upstream sends the head with the first event and then holds the
 * stream: the request went all the way through and is being held). */
static void stream_opened(struct bench *b, struct req *r)
{
    if (b->o.mode != M_STREAMS || r->open || r->status != 200)
        return;
    r->open = 1;
    r->c->open_now++;
    if (++b->open_now > b->max_open)
        b->max_open = b->open_now;
}

/* Printable excerpt of a body for a failure message (never called when the
 * forbidden value was seen). */
static void excerpt(const struct req *r, char *out, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < r->acc_len && k + 1 < n && i < 200; i++)
        out[k++] = isprint(r->acc[i]) ? (char)r->acc[i] : '.';
    out[k] = 0;
}

/* The response's verdict; counts it. Returns 1 when it checked out. */
static int judge(struct bench *b, struct req *r)
{
    char ex[256] = "";
    if (r->forbidden) {
        fail(b, F_FORBID, "request %llu: the forbidden value appeared in the response",
             (unsigned long long)r->id);
        return 0;
    }
    excerpt(r, ex, sizeof(ex));
    if (r->h2_error || !r->end_stream) {
        fail(b, F_RESET,
             "request %llu: stream ended without END_STREAM (h2 error %u) after %llu "
             "body bytes, status %d",
             (unsigned long long)r->id, r->h2_error, (unsigned long long)r->bytes, r->status);
        return 0;
    }
    if (r->status != b->o.expect_status) {
        fail(b, F_STATUS, "request %llu: status %d (expected %d) airlock-error=%s body: %s",
             (unsigned long long)r->id, r->status, b->o.expect_status,
             r->airlock_error[0] ? r->airlock_error : "-", ex);
        return 0;
    }
    if (b->o.mode == M_TPUT) {
        if (r->pattern_bad || r->bytes != b->o.expect_bytes) {
            fail(b, F_BODY, "request %llu: %llu body bytes (expected %llu), content %s",
                 (unsigned long long)r->id, (unsigned long long)r->bytes,
                 (unsigned long long)b->o.expect_bytes, r->pattern_bad ? "differs" : "matches");
            return 0;
        }
    } else if (b->o.mode == M_STREAMS) {
        if (!r->first_event || r->acc_over ||
            !memmem(r->acc, r->acc_len, TB_SSE_END_MARK, strlen(TB_SSE_END_MARK))) {
            fail(b, F_BODY, "request %llu: the SSE body lacks %s (%llu bytes): %s",
                 (unsigned long long)r->id, r->first_event ? "the last event" : "the first event",
                 (unsigned long long)r->bytes, ex);
            return 0;
        }
    } else if (b->expect_t.text) {
        size_t el;
        char *e = tmpl_render(&b->expect_t, r->id, &el);
        int same = e && !r->acc_over && r->acc_len == el && memcmp(r->acc, e, el) == 0;
        free(e);
        if (!same) {
            fail(b, F_BODY,
                 "request %llu: body differs from the expected %zu bytes (%llu bytes): %s",
                 (unsigned long long)r->id, el, (unsigned long long)r->bytes, ex);
            return 0;
        }
    }
    return 1;
}

/* ---------- connection I/O ---------- */

static void conn_kill(struct conn *c, const char *why);
static void req_finished(struct bench *b, struct req *r);

static int out_put(struct conn *c, const uint8_t *p, size_t n)
{
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + n > c->out_cap) {
        size_t want = c->out_cap ? c->out_cap : 65536;
        while (want < c->out_len + n)
            want *= 2;
        uint8_t *q = realloc(c->out, want);
        if (!q)
            return -1;
        c->out = q;
        c->out_cap = want;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    return 0;
}

static void set_write(struct conn *c, int on)
{
    if (c->want_write == on)
        return;
    c->want_write = on;
    ev_io_stop(c->b->loop, &c->io);
    ev_io_set(&c->io, c->fd, EV_READ | (on ? EV_WRITE : 0));
    ev_io_start(c->b->loop, &c->io);
}

/* Writes pending output, pulling frames from nghttp2 as it goes. Returns 0
 * (everything written, or the rest waits for EV_WRITE) or -1 (dead). */
static int conn_send(struct conn *c)
{
    if (c->dead == 1)
        return -1;
    for (;;) {
        if (c->h2) {
            const uint8_t *d;
            ssize_t n;
            while (c->out_len - c->out_off < 256 * 1024 &&
                   (n = nghttp2_session_mem_send(c->ngh, &d)) > 0)
                if (out_put(c, d, (size_t)n) < 0) {
                    conn_kill(c, "out of memory");
                    return -1;
                }
        }
        if (c->out_off == c->out_len)
            break;
        size_t left = c->out_len - c->out_off;
        int n;
        if (c->ssl) {
            n = SSL_write(c->ssl, c->out + c->out_off, left > INT32_MAX ? INT32_MAX : (int)left);
            if (n <= 0) {
                int e = SSL_get_error(c->ssl, n);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                    set_write(c, 1);
                    return 0;
                }
                conn_kill(c, "TLS write failed");
                return -1;
            }
        } else {
            ssize_t w = send(c->fd, c->out + c->out_off, left, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && errno == EAGAIN) {
                set_write(c, 1);
                return 0;
            }
            if (w <= 0) {
                conn_kill(c, "write failed");
                return -1;
            }
            n = (int)w;
        }
        c->out_off += (size_t)n;
    }
    set_write(c, 0);
    return 0;
}

static int h1_feed(struct conn *c, const uint8_t *d, size_t n);

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = w->data;
    static uint8_t buf[RBUF];
    (void)loop;

    if ((revents & EV_WRITE) && conn_send(c) < 0)
        return;
    if (!(revents & EV_READ))
        return;
    for (int rounds = 0; rounds < 64 && !c->dead; rounds++) {
        ssize_t n;
        if (c->ssl) {
            int r = SSL_read(c->ssl, buf, sizeof(buf));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    break;
                conn_kill(c, e == SSL_ERROR_ZERO_RETURN ? "the server closed the connection"
                                                        : "TLS read failed");
                return;
            }
            n = r;
        } else {
            n = read(c->fd, buf, sizeof(buf));
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                break;
            if (n <= 0) {
                conn_kill(c, n == 0 ? "the server closed the connection" : "read failed");
                return;
            }
        }
        if (c->h2) {
            ssize_t used = nghttp2_session_mem_recv(c->ngh, buf, (size_t)n);
            if (used < 0) {
                conn_kill(c, nghttp2_strerror((int)used));
                return;
            }
        } else {
            if (h1_feed(c, buf, (size_t)n) < 0)
                return;
        }
        if (conn_send(c) < 0)
            return;
    }
}

/* ---------- HTTP/1.1 ---------- */

static int h1_on_status(http_parser *p, const char *at, size_t n)
{
    (void)at;
    (void)n;
    struct conn *c = p->data;
    if (c->cur)
        c->cur->status = p->status_code;
    return 0;
}

static int h1_on_field(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    size_t k = n < sizeof(c->hname) ? n : sizeof(c->hname);
    memcpy(c->hname, at, k);
    c->hname_len = k;
    return 0;
}

static int h1_on_value(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    if (c->cur)
        header_scan(c->b, c->cur, (const uint8_t *)c->hname, c->hname_len, (const uint8_t *)at, n);
    return 0;
}

static int h1_on_headers(http_parser *p)
{
    struct conn *c = p->data;
    if (c->cur)
        c->cur->status = p->status_code;
    return 0;
}

static int h1_on_body(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    if (c->cur)
        body_bytes(c->b, c->cur, (const uint8_t *)at, n);
    return 0;
}

static int h1_on_complete(http_parser *p)
{
    struct conn *c = p->data;
    struct req *r = c->cur;
    if (!r)
        return -1;
    c->cur = NULL;
    r->end_stream = 1;
    r->t1 = now_s();
    if (!http_should_keep_alive(p))
        c->dead = 2; /* finish this one, then the connection is gone */
    req_finished(c->b, r);
    return 0;
}

static const http_parser_settings h1_settings = {
    .on_status = h1_on_status,
    .on_header_field = h1_on_field,
    .on_header_value = h1_on_value,
    .on_headers_complete = h1_on_headers,
    .on_body = h1_on_body,
    .on_message_complete = h1_on_complete,
};

static int h1_feed(struct conn *c, const uint8_t *d, size_t n)
{
    size_t used = http_parser_execute(&c->hp, &h1_settings, (const char *)d, n);
    if (HTTP_PARSER_ERRNO(&c->hp) != HPE_OK || (used != n && !c->dead)) {
        conn_kill(c, http_errno_description(HTTP_PARSER_ERRNO(&c->hp)));
        return -1;
    }
    return c->dead == 1 ? -1 : 0;
}

static int h1_submit(struct conn *c, struct req *r)
{
    struct bench *b = c->b;
    char head[4096];
    int n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nhost: %s:%s\r\n", b->o.method, b->path,
                     b->host, b->port);
    if (n < 0 || (size_t)n >= sizeof(head))
        return -1;
    for (int i = 0; i < b->o.nhdr; i++) {
        int k = snprintf(head + n, sizeof(head) - (size_t)n, "%s\r\n", b->o.hdr[i]);
        if (k < 0 || (size_t)k >= sizeof(head) - (size_t)n)
            return -1;
        n += k;
    }
    if (out_put(c, (const uint8_t *)head, (size_t)n) < 0 ||
        (b->auth_len && (out_put(c, (const uint8_t *)"authorization: ", 15) < 0 ||
                         out_put(c, (const uint8_t *)b->auth, b->auth_len) < 0 ||
                         out_put(c, (const uint8_t *)"\r\n", 2) < 0)))
        return -1;
    n = r->body ? snprintf(head, sizeof(head), "content-length: %zu\r\n\r\n", r->body_len)
                : snprintf(head, sizeof(head), "\r\n");
    if (out_put(c, (const uint8_t *)head, (size_t)n) < 0 ||
        (r->body && out_put(c, (const uint8_t *)r->body, r->body_len) < 0))
        return -1;
    c->cur = r;
    r->c = c;
    r->t0 = now_s();
    return conn_send(c) < 0 ? -1 : 0;
}

/* ---------- HTTP/2 ---------- */

static int h2_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                        const uint8_t *value, size_t vl, uint8_t flags, void *user)
{
    struct conn *c = user;
    struct req *r = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    (void)flags;
    if (!r || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (nl == 7 && memcmp(name, ":status", 7) == 0) {
        int st = 0;
        for (size_t i = 0; i < vl && i < 3; i++)
            st = st * 10 + (value[i] - '0');
        if (st >= 200 || !r->status)
            r->status = st;
        return 0;
    }
    header_scan(c->b, r, name, nl, value, vl);
    return 0;
}

static int h2_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *d, size_t n,
                      void *user)
{
    struct conn *c = user;
    struct req *r = nghttp2_session_get_stream_user_data(s, sid);
    (void)flags;
    if (r)
        body_bytes(c->b, r, d, n);
    return 0;
}

static int h2_on_frame(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
    struct conn *c = user;
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK)) {
        c->got_settings = 1;
        c->peer_max =
            nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    }
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    struct req *r = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!r)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_RESPONSE)
        stream_opened(c->b, r);
    if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        r->end_stream = 1;
        r->t1 = now_s();
    }
    return 0;
}

static int h2_on_close(nghttp2_session *s, int32_t sid, uint32_t code, void *user)
{
    struct conn *c = user;
    struct req *r = nghttp2_session_get_stream_user_data(s, sid);
    if (!r || r->done)
        return 0;
    r->h2_error = code;
    if (!r->t1)
        r->t1 = now_s();
    req_finished(c->b, r);
    return 0;
}

static ssize_t h2_body_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct req *r = src->ptr;
    size_t n = r->body_len - r->body_off;
    (void)s;
    (void)sid;
    (void)user;
    if (n > len)
        n = len;
    memcpy(buf, r->body + r->body_off, n);
    r->body_off += n;
    if (r->body_off == r->body_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static nghttp2_nv nv(const char *name, const char *value, size_t vl)
{
    return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), vl, NGHTTP2_NV_FLAG_NONE};
}

static int h2_submit(struct conn *c, struct req *r)
{
    struct bench *b = c->b;
    nghttp2_nv h[MAX_HEADERS + 8];
    char names[MAX_HEADERS][64], cl[24];
    size_t k = 0;
    nghttp2_data_provider dp = {.source.ptr = r, .read_callback = h2_body_read};

    h[k++] = nv(":method", b->o.method, strlen(b->o.method));
    h[k++] = nv(":scheme", "https", 5);
    h[k++] = nv(":authority", b->host, strlen(b->host));
    h[k++] = nv(":path", b->path, strlen(b->path));
    for (int i = 0; i < b->o.nhdr; i++) {
        const char *colon = strchr(b->o.hdr[i], ':');
        size_t nl = (size_t)(colon - b->o.hdr[i]);
        for (size_t j = 0; j < nl; j++)
            names[i][j] = (char)tolower((unsigned char)b->o.hdr[i][j]);
        names[i][nl] = 0;
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        h[k++] = nv(names[i], v, strlen(v));
    }
    if (b->auth_len)
        h[k++] = (nghttp2_nv){(uint8_t *)"authorization", (uint8_t *)b->auth, 13, b->auth_len,
                              NGHTTP2_NV_FLAG_NO_INDEX};
    if (r->body) {
        snprintf(cl, sizeof(cl), "%zu", r->body_len);
        h[k++] = nv("content-length", cl, strlen(cl));
    }
    r->c = c;
    r->t0 = now_s();
    int32_t sid = nghttp2_submit_request(c->ngh, NULL, h, k, r->body ? &dp : NULL, r);
    if (sid < 0)
        return -1;
    r->sid = sid;
    return 0;
}

static const nghttp2_session_callbacks *h2_callbacks(void)
{
    static nghttp2_session_callbacks *cbs;
    if (!cbs && nghttp2_session_callbacks_new(&cbs) == 0) {
        nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_on_data);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2_on_frame);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_close);
    }
    return cbs;
}

/* ---------- connections ---------- */

static void conn_kill(struct conn *c, const char *why)
{
    struct bench *b = c->b;
    if (c->dead == 1)
        return;
    c->dead = 1;
    ev_io_stop(b->loop, &c->io);
    /* requests still in flight on it fail */
    if (c->cur && !c->cur->done) {
        struct req *r = c->cur;
        c->cur = NULL;
        fail(b, F_CONN, "request %llu: %s", (unsigned long long)r->id, why);
        r->done = 1;
        b->done++;
        ev_break(b->loop, EVBREAK_ALL);
    }
    if (b->o.mode == M_STREAMS) {
        for (size_t i = 0; i < b->submitted; i++) {
            struct req *r = &b->reqs[i];
            if (r->c != c || r->done)
                continue;
            fail(b, F_CONN, "request %llu: %s", (unsigned long long)r->id, why);
            r->done = 1;
            b->done++;
            if (r->open)
                b->open_now--;
        }
        if (b->done == b->o.streams)
            ev_break(b->loop, EVBREAK_ALL);
    } else if (b->one.c == c && !b->one.done && b->one.t0) {
        fail(b, F_CONN, "request %llu: %s", (unsigned long long)b->one.id, why);
        b->one.done = 1;
        ev_break(b->loop, EVBREAK_ALL);
    }
}

static int tls_connect(struct bench *b, struct conn *c)
{
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;

    if (!(c->ssl = SSL_new(b->ctx)) || SSL_set_fd(c->ssl, c->fd) != 1 ||
        SSL_set_tlsext_host_name(c->ssl, b->host) != 1)
        return -1;
    X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
    struct in_addr ia;
    if (inet_pton(AF_INET, b->host, &ia) == 1 ? X509_VERIFY_PARAM_set1_ip_asc(vp, b->host) != 1
                                              : X509_VERIFY_PARAM_set1_host(vp, b->host, 0) != 1)
        return -1;
    if (SSL_connect(c->ssl) != 1) {
        char e[256];
        ERR_error_string_n(ERR_get_error(), e, sizeof(e));
        fprintf(stderr, "bench_tunnel_load: TLS handshake with %s:%s: %s\n", b->host, b->port, e);
        return -1;
    }
    SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
    if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
        fprintf(stderr, "bench_tunnel_load: %s:%s did not select ALPN h2\n", b->host, b->port);
        return -1;
    }
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return 0;
}

static int h2_start(struct bench *b, struct conn *c)
{
    nghttp2_option *opt;
    nghttp2_settings_entry iv[3] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, b->o.window},
                                    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
    int rc;

    if (nghttp2_option_new(&opt) != 0)
        return -1;
    /* a stream-count hint before the server's SETTINGS is irrelevant: streams
     * mode waits for them; the others open one stream at a time */
    rc = nghttp2_session_client_new2(&c->ngh, h2_callbacks(), c, opt);
    nghttp2_option_del(opt);
    if (rc != 0 || nghttp2_submit_settings(c->ngh, NGHTTP2_FLAG_NONE, iv, 3) != 0 ||
        nghttp2_session_set_local_window_size(c->ngh, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0)
        return -1;
    c->h2 = 1;
    return 0;
}

static struct conn *conn_open(struct bench *b)
{
    struct conn *c = calloc(1, sizeof(*c));
    int one = 1;

    if (!c)
        return NULL;
    c->b = b;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&b->sa, sizeof(b->sa)) < 0) {
        fprintf(stderr, "bench_tunnel_load: connect %s:%s: %s\n", b->host, b->port,
                strerror(errno));
        goto bad;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (b->https && (tls_connect(b, c) < 0 || h2_start(b, c) < 0))
        goto bad;
    if (!b->https) {
        http_parser_init(&c->hp, HTTP_RESPONSE);
        c->hp.data = c;
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    ev_io_init(&c->io, conn_io_cb, c->fd, EV_READ);
    c->io.data = c;
    ev_io_start(b->loop, &c->io);
    c->peer_max = UINT32_MAX;
    return c;
bad:
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
    return NULL;
}

static void conn_free(struct conn *c)
{
    if (!c)
        return;
    ev_io_stop(c->b->loop, &c->io);
    if (c->ngh)
        nghttp2_session_del(c->ngh);
    if (c->ssl)
        SSL_free(c->ssl);
    close(c->fd);
    free(c->out);
    free(c);
}

/* ---------- lat / tput ---------- */

static void req_reset(struct bench *b, struct req *r, uint64_t id)
{
    uint8_t *acc = r->acc;
    size_t cap = r->acc_cap;
    free(r->body);
    memset(r, 0, sizeof(*r));
    r->acc = acc;
    r->acc_cap = cap;
    r->id = id;
    if (b->body_t.text)
        r->body = tmpl_render(&b->body_t, id, &r->body_len);
}

static int start_one(struct bench *b)
{
    struct conn *c = b->c[0];
    struct req *r = &b->one;

    req_reset(b, r, b->next + 1);
    if (b->body_t.text && !r->body)
        return -1;
    if (c->dead) {
        fail(b, F_CONN, "request %llu: the server closed the connection (no keep-alive)",
             (unsigned long long)r->id);
        return -1;
    }
    int rc = c->h2 ? h2_submit(c, r) : h1_submit(c, r);
    if (rc == 0 && c->h2)
        rc = conn_send(c);
    return rc;
}

static void one_finished(struct bench *b, struct req *r)
{
    size_t i = b->next++;
    int ok = judge(b, r);
    if (ok)
        b->ok++;
    if (i >= b->o.warmup && ok) {
        double secs = r->t1 - r->t0;
        b->lat[b->nlat] = secs * 1e3;
        if (b->o.mode == M_TPUT) {
            b->mbps[b->nlat] = secs > 0 ? (double)r->bytes / secs / 1e6 : 0;
            b->ttfb[b->nlat] = (b->t_first_byte - r->t0) * 1e3;
            printf("tput: request=%zu bytes=%llu seconds=%.4f mb_per_s=%.1f ttfb_ms=%.3f\n",
                   i - b->o.warmup + 1, (unsigned long long)r->bytes, secs, b->mbps[b->nlat],
                   b->ttfb[b->nlat]);
        }
        b->nlat++;
    }
    if (!ok || b->next == b->total) {
        ev_break(b->loop, EVBREAK_ALL);
        return;
    }
    if (b->next == b->o.warmup)
        ev_break(b->loop, EVBREAK_ALL); /* the timed phase starts from the top */
    else if (start_one(b) < 0)
        ev_break(b->loop, EVBREAK_ALL);
}

/* ---------- streams ---------- */

static void sample(struct bench *b, int during)
{
    for (int i = 0; i < b->o.nw; i++) {
        struct watch *w = &b->o.w[i];
        if (during)
            proc_rss(w->pid, &w->rss_during, &w->hwm_during);
        else
            proc_rss(w->pid, &w->rss_after, &w->hwm_after);
    }
}

/* POSTs the release URL (plain HTTP/1.1, its own connection). */
static int release(struct bench *b, long *count)
{
    const char *u = b->o.release_url + 7, *slash = strchr(u, '/');
    char host[64], req[1024], resp[4096];
    struct sockaddr_in sa = {.sin_family = AF_INET};
    size_t hl = slash ? (size_t)(slash - u) : 0;
    const char *colon = slash ? memchr(u, ':', hl) : NULL;

    if (!colon || (size_t)(colon - u) >= sizeof(host))
        return -1;
    memcpy(host, u, (size_t)(colon - u));
    host[colon - u] = 0;
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    int n =
        snprintf(req, sizeof(req),
                 "POST %s HTTP/1.1\r\nhost: %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                 slash, host);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t got = 0;
    ssize_t r;
    while (got + 1 < sizeof(resp) && (r = read(fd, resp + got, sizeof(resp) - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    resp[got] = 0;
    const char *rel = strstr(resp, "released=");
    if (strncmp(resp, "HTTP/1.1 200", 12) != 0 || !rel)
        return -1;
    *count = strtol(rel + 9, NULL, 10);
    return 0;
}

static void maybe_release(struct bench *b, int timed_out)
{
    if (b->sampled)
        return;
    if (!timed_out && b->open_now < b->expected_open && b->open_now + b->done < b->o.streams)
        return;
    b->sampled = 1;
    b->t_sampled = now_s();
    ev_timer_stop(b->loop, &b->open_timer);
    sample(b, 1);
    b->first_events_at_sample = b->first_events;
    printf("streams: open=%zu expected_open=%zu first_event_seen=%zu finished=%zu submitted=%zu "
           "open_seconds=%.3f%s\n",
           b->open_now, b->expected_open, b->first_events, b->done, b->o.streams,
           b->t_sampled - b->t_submit, timed_out ? " (--open-timeout passed first)" : "");
    long n = 0;
    if (release(b, &n) < 0) {
        fail(b, F_RELEASE, "POST %s failed", b->o.release_url);
        ev_break(b->loop, EVBREAK_ALL);
        return;
    }
    b->released = 1;
    b->t_released = now_s();
    printf("streams: released=%ld held streams at the upstream\n", n);
    fflush(stdout);
}

static void open_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    maybe_release(w->data, 1);
}

static void stream_finished(struct bench *b, struct req *r)
{
    if (judge(b, r))
        b->ok++;
    if (r->open) {
        b->open_now--;
        r->c->open_now--;
    }
    free(r->acc);
    r->acc = NULL;
    r->acc_cap = 0;
    b->done++;
    if (b->done == b->o.streams) {
        b->t_done = now_s();
        ev_break(b->loop, EVBREAK_ALL);
    }
}

static void req_finished(struct bench *b, struct req *r)
{
    r->done = 1;
    if (b->o.mode == M_STREAMS)
        stream_finished(b, r);
    else
        one_finished(b, r);
}

static void hang_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct bench *b = w->data;
    (void)revents;
    fprintf(stderr, "bench_tunnel_load: --timeout %.0f s passed: the run is stuck\n",
            b->o.timeout_s);
    b->setup_error = 1;
    ev_break(loop, EVBREAK_ALL);
}

/* ---------- reports ---------- */

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, c = *(const double *)y;
    return (a > c) - (a < c);
}

static double pct(const double *v, size_t n, unsigned pm)
{
    size_t rank = (n * pm + 999) / 1000;
    return n ? v[rank ? rank - 1 : 0] : 0;
}

static size_t failures(const struct bench *b)
{
    size_t f = 0;
    for (int i = 0; i < F_N; i++)
        f += b->fails[i];
    return f;
}

static void print_failures(const struct bench *b)
{
    for (int i = 0; i < F_N; i++)
        if (b->fails[i])
            printf("error: kind=%s count=%zu first=\"%s\"\n", FAIL_NAME[i], b->fails[i],
                   b->first[i]);
}

static void print_conn(const struct bench *b)
{
    const struct conn *c = b->c[0];
    if (c->ssl)
        printf("conn: url=%s proto=h2 tls=%s cipher=%s peer_max_concurrent_streams=%u "
               "connections=%d\n",
               b->o.url, SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl), c->peer_max,
               b->nconn);
    else
        printf("conn: url=%s proto=http/1.1 tls=none connections=%d\n", b->o.url, b->nconn);
}

static void print_cpu(const struct bench *b, double secs, double per, const char *unit)
{
    for (int i = 0; i < b->o.nw; i++) {
        const struct watch *w = &b->o.w[i];
        double w1, c1 = proc_cpu(w->pid, &w1), used = c1 - w->cpu0, waited = w1 - w->wait0;
        printf("cpu: name=%s cpu_s=%.3f busy_pct=%.0f wait_pct=%.0f %s=%.2f\n", w->name, used,
               secs > 0 ? 100 * used / secs : 0, secs > 0 ? 100 * waited / secs : 0, unit,
               per > 0 ? used / per : 0);
    }
}

/* ---------- runs ---------- */

static int wait_settings(struct bench *b)
{
    for (int i = 0; i < b->nconn; i++) {
        struct conn *c = b->c[i];
        double t0 = now_s();
        if (!c->h2)
            continue;
        if (conn_send(c) < 0)
            return -1;
        while (!c->got_settings && !c->dead && now_s() - t0 < 10)
            ev_run(b->loop, EVRUN_ONCE);
        if (!c->got_settings)
            return -1;
    }
    return 0;
}

static int run_sequential(struct bench *b)
{
    size_t n = b->o.requests;
    double t0, c0, secs, cpu;

    b->total = b->o.warmup + n;
    b->lat = calloc(n, sizeof(double));
    b->mbps = calloc(n, sizeof(double));
    b->ttfb = calloc(n, sizeof(double));
    /* lat: the expected body (and one byte more, to see a longer one); tput
     * checks the pattern inline and keeps only the start, for an error body */
    b->one.acc_cap = ERR_BODY_CAP;
    if (b->o.mode == M_LAT && b->expect_t.text && b->expect_t.fixed_len + 64 > ERR_BODY_CAP)
        b->one.acc_cap = b->expect_t.fixed_len + 64;
    b->one.acc = malloc(b->one.acc_cap);
    if (!b->lat || !b->mbps || !b->ttfb || !b->one.acc)
        return 2;
    if (b->o.warmup) {
        if (start_one(b) < 0)
            return 2;
        ev_run(b->loop, 0);
        if (failures(b) || b->setup_error) {
            print_failures(b);
            printf("result: mode=%s requests=0 ok=0 errors=%zu (the warm-up failed)\n",
                   b->o.mode == M_LAT ? "lat" : "tput", failures(b));
            return 1;
        }
    }
    for (int i = 0; i < b->o.nw; i++)
        b->o.w[i].cpu0 = proc_cpu(b->o.w[i].pid, &b->o.w[i].wait0);
    c0 = cpu_self();
    t0 = now_s();
    if (start_one(b) < 0)
        return 2;
    ev_run(b->loop, 0);
    secs = now_s() - t0;
    cpu = cpu_self() - c0;
    print_conn(b);
    print_failures(b);
    qsort(b->lat, b->nlat, sizeof(double), cmp_double);
    size_t errs = failures(b);
    if (b->o.mode == M_LAT) {
        double sum = 0;
        for (size_t i = 0; i < b->nlat; i++)
            sum += b->lat[i];
        print_cpu(b, secs, (double)b->nlat / 1e6, "cpu_us_per_req");
        printf("result: mode=lat requests=%zu ok=%zu errors=%zu sent=%zu p50_ms=%.3f "
               "p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f mean_ms=%.3f seconds=%.3f "
               "loader_cpu_pct=%.0f\n",
               n, b->nlat, errs, b->next, pct(b->lat, b->nlat, 500), pct(b->lat, b->nlat, 900),
               pct(b->lat, b->nlat, 990), pct(b->lat, b->nlat, 999),
               b->nlat ? b->lat[b->nlat - 1] : 0, b->nlat ? sum / (double)b->nlat : 0, secs,
               secs > 0 ? 100 * cpu / secs : 0);
    } else {
        double med, best;
        size_t k = b->nlat;
        qsort(b->mbps, k, sizeof(double), cmp_double);
        qsort(b->ttfb, k, sizeof(double), cmp_double);
        med = k ? b->mbps[(k - 1) / 2] : 0;
        best = k ? b->mbps[k - 1] : 0;
        print_cpu(b, secs, (double)k * (double)b->o.expect_bytes / 1e9, "cpu_s_per_gb");
        printf("result: mode=tput requests=%zu ok=%zu errors=%zu sent=%zu bytes=%llu "
               "best_mb_per_s=%.1f median_mb_per_s=%.1f ttfb_ms=%.3f seconds=%.3f "
               "loader_cpu_pct=%.0f\n",
               n, k, errs, b->next, (unsigned long long)b->o.expect_bytes, best, med,
               k ? b->ttfb[(k - 1) / 2] : 0, secs, secs > 0 ? 100 * cpu / secs : 0);
    }
    return errs || b->nlat != n || b->setup_error ? 1 : 0;
}

static int run_streams(struct bench *b)
{
    size_t k = b->o.streams;

    b->reqs = calloc(k, sizeof(*b->reqs));
    if (!b->reqs)
        return 2;
    for (int i = 0; i < b->o.nw; i++) {
        long hwm;
        proc_rss(b->o.w[i].pid, &b->o.w[i].rss0, &hwm);
    }
    if (wait_settings(b) < 0) {
        fprintf(stderr, "bench_tunnel_load: no SETTINGS from the server\n");
        return 2;
    }
    for (size_t i = 0; i < k; i++)
        b->c[i % (size_t)b->nconn]->assigned++;
    for (int i = 0; i < b->nconn; i++) {
        struct conn *c = b->c[i];
        b->expected_open += c->assigned < c->peer_max ? c->assigned : c->peer_max;
    }
    print_conn(b);
    b->t_submit = now_s();
    for (size_t i = 0; i < k; i++) {
        struct req *r = &b->reqs[i];
        r->id = i + 1;
        r->acc_cap = SSE_CAP;
        if (!(r->acc = malloc(SSE_CAP)) || h2_submit(b->c[i % (size_t)b->nconn], r) < 0) {
            fprintf(stderr, "bench_tunnel_load: cannot submit stream %zu\n", i + 1);
            return 2;
        }
        b->submitted++;
    }
    for (int i = 0; i < b->nconn; i++)
        if (conn_send(b->c[i]) < 0)
            break;
    ev_timer_init(&b->open_timer, open_timeout_cb, b->o.open_timeout_s, 0);
    b->open_timer.data = b;
    ev_timer_start(b->loop, &b->open_timer);
    while (b->done < k && !b->setup_error && !b->fails[F_RELEASE]) {
        ev_run(b->loop, EVRUN_ONCE);
        maybe_release(b, 0);
    }
    ev_timer_stop(b->loop, &b->open_timer);
    sample(b, 0);
    print_failures(b);
    for (int i = 0; i < b->o.nw; i++) {
        const struct watch *w = &b->o.w[i];
        long grow = w->rss_during - w->rss0;
        printf("rss: name=%s pid=%d before_kb=%ld during_kb=%ld after_kb=%ld peak_kb=%ld "
               "per_open_stream_b=%.0f\n",
               w->name, w->pid, w->rss0, w->rss_during, w->rss_after, w->hwm_after,
               b->max_open ? (double)grow * 1024 / (double)b->max_open : 0);
    }
    size_t errs = failures(b);
    printf("result: mode=streams streams=%zu connections=%d sent=%zu max_open=%zu "
           "expected_open=%zu first_event_at_sample=%zu completed=%zu ok=%zu errors=%zu "
           "open_seconds=%.3f finish_seconds=%.3f\n",
           k, b->nconn, b->submitted, b->max_open, b->expected_open, b->first_events_at_sample,
           b->done, b->ok, errs, b->t_sampled - b->t_submit,
           b->t_done > 0 ? b->t_done - b->t_released : 0);
    return errs || b->ok != k || b->setup_error ? 1 : 0;
}

/* ---------- setup ---------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_tunnel_load --mode lat|tput|streams --url URL [flags]\n"
            "  --url URL              http://127.0.0.1:P/path (HTTP/1.1) or https://HOST:P/path\n"
            "                         (HTTP/2 over TLS 1.3, ALPN h2)\n"
            "  --ca FILE              CA bundle for https\n"
            "  --ciphers LIST         TLS 1.3 cipher suites offered [TLS_AES_128_GCM_SHA256]\n"
            "  --method M             [POST with --body-file, else GET]\n"
            "  --header 'name: value' request header (repeatable)\n"
            "  --bearer-file FILE     authorization: Bearer <first line of FILE>\n"
            "  --body-file FILE       request body; @ID@ = the request's number (1, 2, ...)\n"
            "  --requests N           timed requests [lat 5000, tput 3]\n"
            "  --warmup N             untimed requests first [lat 500, tput 1]\n"
            "  --expect-status N      [200]\n"
            "  --expect-body-file F   exact response body; @ID@ as in --body-file\n"
            "  --expect-bytes N       tput: body of N bytes of the tunnel_bench.h pattern\n"
            "  --forbid-file FILE     bytes that must appear in no response header or body\n"
            "  --streams K            streams mode: concurrent SSE GETs [10000]\n"
            "  --connections C        streams mode: HTTP/2 connections [1]\n"
            "  --release-url URL      streams mode: http://127.0.0.1:P/release?group=G\n"
            "  --open-timeout S       streams mode: release even if not all opened [60]\n"
            "  --watch NAME=PID       process to report CPU / RSS of (repeatable)\n"
            "  --window BYTES         HTTP/2 per-stream receive window [16777216]\n"
            "  --timeout S            the whole run; past it the run failed [300]\n");
}

static int parse_url(struct bench *b)
{
    const char *u = b->o.url, *hp;
    if (strncmp(u, "https://", 8) == 0) {
        b->https = 1;
        hp = u + 8;
    } else if (strncmp(u, "http://", 7) == 0) {
        hp = u + 7;
    } else {
        return -1;
    }
    const char *slash = strchr(hp, '/'), *colon = memchr(hp, ':', slash ? (size_t)(slash - hp) : 0);
    if (!slash || !colon || (size_t)(colon - hp) >= sizeof(b->host) ||
        (size_t)(slash - colon - 1) >= sizeof(b->port) || strlen(slash) >= sizeof(b->path))
        return -1;
    memcpy(b->host, hp, (size_t)(colon - hp));
    memcpy(b->port, colon + 1, (size_t)(slash - colon - 1));
    snprintf(b->path, sizeof(b->path), "%s", slash);
    b->sa.sin_family = AF_INET;
    b->sa.sin_port = htons((uint16_t)atoi(b->port));
    const char *ip = strcmp(b->host, "localhost") == 0 ? "127.0.0.1" : b->host;
    return inet_pton(AF_INET, ip, &b->sa.sin_addr) == 1 ? 0 : -1;
}

static int parse_num(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v > max)
        return -1;
    *out = v;
    return 0;
}

static int add_watch(struct opts *o, char *arg)
{
    char *eq = strchr(arg, '=');
    unsigned long long pid;
    if (!eq || o->nw == MAX_WATCH || parse_num(eq + 1, 1U << 30, &pid) < 0 || !pid)
        return -1;
    *eq = 0;
    o->w[o->nw++] = (struct watch){.name = arg, .pid = (int)pid};
    return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {{"mode", 1, 0, 'M'},
                                       {"url", 1, 0, 'u'},
                                       {"ca", 1, 0, 'C'},
                                       {"ciphers", 1, 0, 'x'},
                                       {"method", 1, 0, 'X'},
                                       {"header", 1, 0, 'H'},
                                       {"bearer-file", 1, 0, 'a'},
                                       {"body-file", 1, 0, 'd'},
                                       {"requests", 1, 0, 'n'},
                                       {"warmup", 1, 0, 'w'},
                                       {"expect-status", 1, 0, 's'},
                                       {"expect-body-file", 1, 0, 'e'},
                                       {"expect-bytes", 1, 0, 'B'},
                                       {"forbid-file", 1, 0, 'f'},
                                       {"streams", 1, 0, 'k'},
                                       {"connections", 1, 0, 'c'},
                                       {"release-url", 1, 0, 'r'},
                                       {"open-timeout", 1, 0, 'O'},
                                       {"watch", 1, 0, 'W'},
                                       {"window", 1, 0, 'N'},
                                       {"timeout", 1, 0, 'T'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
    unsigned long long v;
    int c, bad = 0, have_n = 0, have_w = 0;

    *o = (struct opts){.ciphers = "TLS_AES_128_GCM_SHA256",
                       .expect_status = 200,
                       .conns = 1,
                       .streams = 10000,
                       .window = DEFAULT_WIN,
                       .timeout_s = 300,
                       .open_timeout_s = 60,
                       .mode = -1};
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'M':
            o->mode = strcmp(optarg, "lat") == 0       ? M_LAT
                      : strcmp(optarg, "tput") == 0    ? M_TPUT
                      : strcmp(optarg, "streams") == 0 ? M_STREAMS
                                                       : (enum mode) - 1;
            bad |= (int)o->mode < 0;
            break;
        case 'u':
            o->url = optarg;
            break;
        case 'C':
            o->ca = optarg;
            break;
        case 'x':
            o->ciphers = optarg;
            break;
        case 'X':
            o->method = optarg;
            break;
        case 'H':
            if (o->nhdr == MAX_HEADERS || !strchr(optarg, ':') || strchr(optarg, ':') == optarg ||
                strchr(optarg, ':') - optarg >= 64)
                bad = 1;
            else
                o->hdr[o->nhdr++] = optarg;
            break;
        case 'a':
            o->bearer_file = optarg;
            break;
        case 'd':
            o->body_file = optarg;
            break;
        case 'e':
            o->expect_file = optarg;
            break;
        case 'f':
            o->forbid_file = optarg;
            break;
        case 'r':
            o->release_url = optarg;
            break;
        case 'n':
            bad |= parse_num(optarg, MAX_REQUESTS, &v) < 0 || !v;
            o->requests = v;
            have_n = 1;
            break;
        case 'w':
            bad |= parse_num(optarg, MAX_REQUESTS, &v) < 0;
            o->warmup = v;
            have_w = 1;
            break;
        case 's':
            bad |= parse_num(optarg, 599, &v) < 0 || v < 100;
            o->expect_status = (int)v;
            break;
        case 'B':
            bad |= parse_num(optarg, 1ULL << 40, &v) < 0;
            o->expect_bytes = v;
            o->have_expect_bytes = 1;
            break;
        case 'k':
            bad |= parse_num(optarg, MAX_STREAMS, &v) < 0 || !v;
            o->streams = v;
            break;
        case 'c':
            bad |= parse_num(optarg, MAX_CONNS, &v) < 0 || !v;
            o->conns = (int)v;
            break;
        case 'N':
            bad |= parse_num(optarg, (1U << 31) - 1, &v) < 0 || v < 65535;
            o->window = (uint32_t)v;
            break;
        case 'O':
            bad |= parse_num(optarg, 3600, &v) < 0 || !v;
            o->open_timeout_s = (double)v;
            break;
        case 'T':
            bad |= parse_num(optarg, 86400, &v) < 0 || !v;
            o->timeout_s = (double)v;
            break;
        case 'W':
            bad |= add_watch(o, optarg) < 0;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            bad = 1;
        }
    }
    if (!have_n)
        o->requests = o->mode == M_TPUT ? 3 : 5000;
    if (!have_w)
        o->warmup = o->mode == M_TPUT ? 1 : 500;
    if (!o->method)
        o->method = o->body_file ? "POST" : "GET";
    if (bad || optind != argc || (int)o->mode < 0 || !o->url ||
        (o->mode == M_TPUT && !o->have_expect_bytes) ||
        (o->mode == M_STREAMS && (!o->release_url || strncmp(o->release_url, "http://", 7) != 0))) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static int setup_tls(struct bench *b)
{
    if (!b->https)
        return 0;
    if (!b->o.ca) {
        fprintf(stderr, "bench_tunnel_load: https needs --ca\n");
        return -1;
    }
    static const unsigned char alpn[] = {2, 'h', '2'};
    b->ctx = SSL_CTX_new(TLS_client_method());
    if (!b->ctx || SSL_CTX_set_min_proto_version(b->ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_ciphersuites(b->ctx, b->o.ciphers) != 1 ||
        SSL_CTX_load_verify_locations(b->ctx, b->o.ca, NULL) != 1 ||
        SSL_CTX_set_alpn_protos(b->ctx, alpn, sizeof(alpn)) != 0) {
        fprintf(stderr, "bench_tunnel_load: TLS setup (--ca %s, --ciphers %s) failed\n", b->o.ca,
                b->o.ciphers);
        return -1;
    }
    SSL_CTX_set_verify(b->ctx, SSL_VERIFY_PEER, NULL);
    return 0;
}

static int load_inputs(struct bench *b)
{
    char *s;
    size_t n;
    const struct opts *o = &b->o;

    if (o->body_file && tmpl_load(o->body_file, &b->body_t) < 0) {
        fprintf(stderr, "bench_tunnel_load: --body-file %s: unreadable\n", o->body_file);
        return -1;
    }
    if (o->expect_file && tmpl_load(o->expect_file, &b->expect_t) < 0) {
        fprintf(stderr, "bench_tunnel_load: --expect-body-file %s: unreadable\n", o->expect_file);
        return -1;
    }
    if (o->bearer_file) {
        if (read_file(o->bearer_file, &s, &n) < 0) {
            fprintf(stderr, "bench_tunnel_load: --bearer-file %s: unreadable\n", o->bearer_file);
            return -1;
        }
        s[strcspn(s, "\r\n")] = 0;
        int l = snprintf(b->auth, sizeof(b->auth), "Bearer %s", s);
        explicit_bzero(s, n);
        free(s);
        if (l <= 7 || (size_t)l >= sizeof(b->auth))
            return -1;
        b->auth_len = (size_t)l;
    }
    if (o->forbid_file) {
        if (read_file(o->forbid_file, &s, &n) < 0 || n == 0 || n > MAX_FORBID) {
            fprintf(stderr,
                    "bench_tunnel_load: --forbid-file %s: unreadable, empty or over %d "
                    "bytes\n",
                    o->forbid_file, MAX_FORBID);
            return -1;
        }
        memcpy(b->forbid, s, n);
        b->forbid_len = n;
        explicit_bzero(s, n);
        free(s);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct bench b;
    int status = 2;

    if (parse_args(argc, argv, &b.o) < 0)
        return 2;
    if (b.o.mode == M_STREAMS && !strstr(b.o.url, "https://")) {
        fprintf(stderr, "bench_tunnel_load: streams mode needs an https:// (HTTP/2) URL\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    tb_fill_block(b.block);
    if (parse_url(&b) < 0) {
        fprintf(stderr, "bench_tunnel_load: --url %s: not http(s)://IPv4:PORT/path\n", b.o.url);
        return 2;
    }
    if (load_inputs(&b) < 0 || setup_tls(&b) < 0)
        goto out;
    b.loop = ev_default_loop(EVFLAG_AUTO);
    int nconn = b.o.mode == M_STREAMS ? b.o.conns : 1;
    for (int i = 0; i < nconn; i++) {
        if (!(b.c[i] = conn_open(&b)))
            goto out;
        b.nconn++;
    }
    ev_timer_init(&b.hang_timer, hang_cb, b.o.timeout_s, 0);
    b.hang_timer.data = &b;
    ev_timer_start(b.loop, &b.hang_timer);
    if (b.o.mode != M_STREAMS && wait_settings(&b) < 0) {
        fprintf(stderr, "bench_tunnel_load: no SETTINGS from the server\n");
        goto out;
    }
    fflush(stdout);
    status = b.o.mode == M_STREAMS ? run_streams(&b) : run_sequential(&b);
out:
    fflush(stdout);
    for (int i = 0; i < b.nconn; i++)
        conn_free(b.c[i]);
    if (b.ctx)
        SSL_CTX_free(b.ctx);
    return status;
}
