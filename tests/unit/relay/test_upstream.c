/*
 * Unit tests for upstream (the gateway's HTTP/1.1 client) on a real libev
 * loop against servers that live inside this test:
 *
 *  - a tiny HTTP/1.1 server (one thread per connection, plain or TLS,
 *    loopback, port 0) whose behaviour each test picks: echo the request,
 *    chunked, close-delimited, drop a request without answering, stay
 *    silent, send raw bytes, a large body, a partial body;
 *  - a DNS responder on a loopback UDP port that the resolver is pointed at,
 *    answering A/AAAA records from a fixed table and NXDOMAIN otherwise, so
 *    names (and names resolving to denied addresses) are tested without
 *    touching the machine's DNS;
 *  - a throwaway CA and server certificates made with OpenSSL here.
 *
 * Counters kept by the server (connections accepted, requests seen,
 * connections closed by the client) are how reuse, retry and cancellation
 * are observed from the outside. No assertion depends on timing: waits are
 * for events, with a generous guard so a broken build fails instead of
 * hanging.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "al_err.h"
#include "al_log.h"
#include "al_resolve.h"
#include "upstream.h"

#define GUARD_S 20.0 /* a wait that takes this long is a failure, not a hang */

/* Suite setup runs outside any test, where CU_ASSERT cannot be used. */
#define NEED(c)                                                                                    \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: setup failed: %s\n", __FILE__, __LINE__, #c);                  \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static struct ev_loop *loop;
static struct al_resolver *resolver;
static ev_timer tick;
static char tmpdir[64];
static char ca_file[128], ca2_file[128];
static SSL_CTX *srv_ctx_good, *srv_ctx_other;

/* ------------------------------------------------------------ loop helpers */

static void tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

static int run_until(const int *flag)
{
    ev_tstamp end = ev_time() + GUARD_S;
    while (!*flag && ev_time() < end)
        ev_run(loop, EVRUN_ONCE);
    return *flag;
}

static int run_until_atomic(atomic_int *v, int want)
{
    ev_tstamp end = ev_time() + GUARD_S;
    while (atomic_load(v) < want && ev_time() < end)
        ev_run(loop, EVRUN_ONCE);
    return atomic_load(v) >= want;
}

/* Turns the loop a number of times with short pauses: lets anything that
 * would happen happen. Used only before asserting that nothing did. */
static void spin(int n)
{
    for (int i = 0; i < n; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        usleep(2000);
    }
}

static uint32_t fnv(uint32_t h, const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= d[i];
        h *= 16777619u;
    }
    return h;
}

/* ------------------------------------------------------------ DNS responder */

struct dns_entry {
    const char *name;
    const char *addrs[3];
};

static const struct dns_entry dns_table[] = {
    {"upstream.test", {"127.0.0.1"}},
    {"wrongname.test", {"127.0.0.1"}},
    {"denied.test", {"127.0.0.1"}},
    {"meta.test", {"169.254.169.254", "fd00:ec2::254"}},
    {"multi.test", {"169.254.169.254", "127.0.0.1"}},
    {"fallback.test", {"127.0.0.2", "127.0.0.1"}},
    {"mapped.test", {"::ffff:127.0.0.1"}},
};

static struct {
    int fd, port;
    pthread_t th;
    atomic_int stop, queries;
} dns;

static void dns_answer(const uint8_t *q, size_t n, struct sockaddr_storage *from, socklen_t flen)
{
    char name[256];
    size_t pos = 12, nl = 0;
    uint8_t resp[512];
    size_t rlen;
    const struct dns_entry *e = NULL;
    int qtype, count = 0;

    if (n < 17)
        return;
    while (pos < n && q[pos]) {
        size_t l = q[pos++];
        if (l > 63 || pos + l > n || nl + l + 1 >= sizeof(name))
            return;
        if (nl)
            name[nl++] = '.';
        for (size_t i = 0; i < l; i++)
            name[nl++] =
                (char)((q[pos + i] >= 'A' && q[pos + i] <= 'Z') ? q[pos + i] + 32 : q[pos + i]);
        pos += l;
    }
    name[nl] = '\0';
    if (pos + 5 > n)
        return;
    qtype = (q[pos + 1] << 8) | q[pos + 2];
    pos += 5; /* root label, type, class */
    for (size_t i = 0; i < sizeof(dns_table) / sizeof(dns_table[0]); i++)
        if (strcmp(dns_table[i].name, name) == 0)
            e = &dns_table[i];
    memcpy(resp, q, pos);
    rlen = pos;
    resp[2] = (uint8_t)(0x84 | (q[2] & 0x01)); /* QR, AA, RD copied */
    resp[3] = e ? 0x80 : 0x83;                 /* RA; NXDOMAIN when unknown */
    for (int i = 0; e && i < 3 && e->addrs[i]; i++) {
        uint8_t a[16];
        int v6 = strchr(e->addrs[i], ':') != NULL;
        if ((qtype == 1 && v6) || (qtype == 28 && !v6) || (qtype != 1 && qtype != 28))
            continue;
        inet_pton(v6 ? AF_INET6 : AF_INET, e->addrs[i], a);
        uint8_t rr[12] = {0xc0, 0x0c, 0, (uint8_t)qtype, 0, 1, 0, 0, 0, 60, 0, v6 ? 16 : 4};
        memcpy(resp + rlen, rr, sizeof(rr));
        rlen += sizeof(rr);
        memcpy(resp + rlen, a, v6 ? 16 : 4);
        rlen += v6 ? 16 : 4;
        count++;
    }
    resp[4] = 0;
    resp[5] = 1;
    resp[6] = 0;
    resp[7] = (uint8_t)count;
    memset(resp + 8, 0, 4);
    sendto(dns.fd, resp, rlen, 0, (struct sockaddr *)from, flen);
}

static void *dns_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&dns.stop)) {
        struct pollfd p = {.fd = dns.fd, .events = POLLIN};
        uint8_t q[512];
        struct sockaddr_storage from;
        socklen_t flen = sizeof(from);
        if (poll(&p, 1, 20) <= 0)
            continue;
        ssize_t n = recvfrom(dns.fd, q, sizeof(q), 0, (struct sockaddr *)&from, &flen);
        if (n <= 0)
            continue;
        atomic_fetch_add(&dns.queries, 1);
        dns_answer(q, (size_t)n, &from, flen);
    }
    return NULL;
}

static void dns_start(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    dns.fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    NEED(dns.fd >= 0);
    NEED(bind(dns.fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    getsockname(dns.fd, (struct sockaddr *)&a, &len);
    dns.port = ntohs(a.sin_port);
    NEED(pthread_create(&dns.th, NULL, dns_main, NULL) == 0);
}

static void dns_stop(void)
{
    atomic_store(&dns.stop, 1);
    pthread_join(dns.th, NULL);
    close(dns.fd);
}

/* ------------------------------------------------------------ test server */

enum mode {
    M_ECHO,        /* 200 with a summary of the request, keep-alive */
    M_CHUNKED,     /* chunked response with an extension and a trailer */
    M_CLOSE_DELIM, /* body delimited by closing the connection */
    M_CLOSE_AFTER, /* echo (keep-alive announced), then close */
    M_DROP_SECOND, /* on a connection's 2nd request: close without answering */
    M_DROP_ALL,    /* close without answering */
    M_SILENT,      /* never answer; wait for the client to close */
    M_RAW,         /* send raw bytes, then close */
    M_RAW_KEEP,    /* send raw bytes, keep the connection */
    M_BIG,         /* big Content-Length body, keep-alive */
    M_PARTIAL,     /* head + part of the body, then wait for the client to close */
    M_INTERIM,     /* 100 and 103 before a 200 echo */
    M_HEAD,        /* HEAD: head with Content-Length and no body; 204 for DELETE */
    M_KA1          /* echo with Keep-Alive: timeout=1 */
};

struct srv {
    int lfd, port;
    SSL_CTX *ctx;
    pthread_t th;
    atomic_int stop, mode;
    atomic_int accepts, requests, client_closed, server_closed, tls_failed;
    const char *raw;
    size_t raw_len;
    size_t big_len;
    pthread_mutex_t mu;
    char last[1024]; /* summary of the last request (for debugging a failure) */
    char sni[256];
    pthread_t conns[64];
    int nconns;
};

struct sconn {
    struct srv *s;
    int fd;
    SSL *ssl;
    int nreq;
};

struct sreq {
    char method[16], url[512], host[256], cl[32], te[64], conn[64];
    char name[64], value[256];
    int in_value;
    size_t len;
    uint32_t hash;
    char first[48];
    int done;
};

static void append_str(char *dst, size_t cap, const char *at, size_t len)
{
    size_t l = strlen(dst);
    if (l + len >= cap)
        len = cap - l - 1;
    memcpy(dst + l, at, len);
    dst[l + len] = '\0';
}

static void sreq_field_done(struct sreq *q)
{
    char *dst = NULL;
    size_t cap = 0;
    if (!q->in_value)
        return;
    if (!strcasecmp(q->name, "host")) {
        dst = q->host;
        cap = sizeof(q->host);
    } else if (!strcasecmp(q->name, "content-length")) {
        dst = q->cl;
        cap = sizeof(q->cl);
    } else if (!strcasecmp(q->name, "transfer-encoding")) {
        dst = q->te;
        cap = sizeof(q->te);
    } else if (!strcasecmp(q->name, "connection")) {
        dst = q->conn;
        cap = sizeof(q->conn);
    }
    if (dst) {
        dst[0] = '\0';
        append_str(dst, cap, q->value, strlen(q->value));
    }
    q->name[0] = q->value[0] = '\0';
    q->in_value = 0;
}

static int sq_url(http_parser *p, const char *at, size_t len)
{
    struct sreq *q = p->data;
    append_str(q->url, sizeof(q->url), at, len);
    return 0;
}

static int sq_field(http_parser *p, const char *at, size_t len)
{
    struct sreq *q = p->data;
    sreq_field_done(q);
    append_str(q->name, sizeof(q->name), at, len);
    return 0;
}

static int sq_value(http_parser *p, const char *at, size_t len)
{
    struct sreq *q = p->data;
    q->in_value = 1;
    append_str(q->value, sizeof(q->value), at, len);
    return 0;
}

static int sq_headers(http_parser *p)
{
    struct sreq *q = p->data;
    sreq_field_done(q);
    snprintf(q->method, sizeof(q->method), "%s", http_method_str((enum http_method)p->method));
    return 0;
}

static int sq_body(http_parser *p, const char *at, size_t len)
{
    struct sreq *q = p->data;
    size_t have = q->len < sizeof(q->first) - 1 ? q->len : sizeof(q->first) - 1;
    append_str(q->first, sizeof(q->first), at,
               len < sizeof(q->first) - 1 - have ? len : sizeof(q->first) - 1 - have);
    q->hash = fnv(q->hash, (const uint8_t *)at, len);
    q->len += len;
    return 0;
}

static int sq_done(http_parser *p)
{
    struct sreq *q = p->data;
    q->done = 1;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings sq_settings = {
    .on_url = sq_url,
    .on_header_field = sq_field,
    .on_header_value = sq_value,
    .on_headers_complete = sq_headers,
    .on_body = sq_body,
    .on_message_complete = sq_done,
};

/* >0 bytes, 0 the client closed, -1 error, -2 the server is stopping */
static ssize_t sread(struct sconn *c, void *buf, size_t n)
{
    for (;;) {
        if (atomic_load(&c->s->stop))
            return -2;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, buf, (int)n);
            if (r > 0)
                return r;
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                continue;
            return e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL || e == SSL_ERROR_SSL ? 0
                                                                                              : -1;
        }
        ssize_t r = recv(c->fd, buf, n, 0);
        if (r >= 0)
            return r;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            continue;
        return errno == ECONNRESET ? 0 : -1;
    }
}

static int swrite(struct sconn *c, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        if (atomic_load(&c->s->stop))
            return -1;
        if (c->ssl) {
            int w = SSL_write(c->ssl, p, (int)n);
            if (w <= 0) {
                int e = SSL_get_error(c->ssl, w);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
                    continue;
                return -1;
            }
            p += w;
            n -= (size_t)w;
            continue;
        }
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int swritef(struct sconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int swritef(struct sconn *c, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return swrite(c, buf, (size_t)n);
}

static int echo(struct sconn *c, const struct sreq *q, const char *keepalive)
{
    char body[1024];
    int n = snprintf(body, sizeof(body),
                     "method=%s target=%s host=%s cl=%s te=%s conn=%s len=%zu hash=%08x first=%s",
                     q->method, q->url, q->host, q->cl[0] ? q->cl : "-", q->te[0] ? q->te : "-",
                     q->conn, q->len, q->hash, q->first);
    return swritef(c,
                   "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Served-By: Test\r\n"
                   "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: %s\r\n"
                   "Content-Length: %d\r\n\r\n%s",
                   keepalive, n, body);
}

/* Waits until the client closes. */
static void wait_client_close(struct sconn *c)
{
    char buf[4096];
    ssize_t n;
    while ((n = sread(c, buf, sizeof(buf))) > 0)
        ;
    if (n != -2)
        atomic_fetch_add(&c->s->client_closed, 1);
}

enum after { KEEP, CLOSE, WAIT_CLIENT };

static enum after respond(struct sconn *c, const struct sreq *q)
{
    struct srv *s = c->s;
    switch (atomic_load(&s->mode)) {
    case M_ECHO:
        return echo(c, q, "timeout=30") < 0 ? CLOSE : KEEP;
    case M_KA1:
        return echo(c, q, "timeout=1") < 0 ? CLOSE : KEEP;
    case M_CHUNKED:
        swritef(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n"
                   "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
        return KEEP;
    case M_CLOSE_DELIM:
        swritef(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end");
        return CLOSE;
    case M_CLOSE_AFTER:
        echo(c, q, "timeout=30");
        return CLOSE;
    case M_DROP_SECOND:
        if (c->nreq == 2)
            return CLOSE;
        return echo(c, q, "timeout=30") < 0 ? CLOSE : KEEP;
    case M_DROP_ALL:
        return CLOSE;
    case M_SILENT:
        return WAIT_CLIENT;
    case M_RAW:
        swrite(c, s->raw, s->raw_len);
        return CLOSE;
    case M_RAW_KEEP:
        swrite(c, s->raw, s->raw_len);
        return KEEP;
    case M_BIG: {
        uint8_t chunk[16384];
        swritef(c, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", s->big_len);
        for (size_t off = 0; off < s->big_len;) {
            size_t k = s->big_len - off < sizeof(chunk) ? s->big_len - off : sizeof(chunk);
            for (size_t i = 0; i < k; i++)
                chunk[i] = (uint8_t)((off + i) * 7);
            if (swrite(c, chunk, k) < 0)
                return CLOSE;
            off += k;
        }
        return KEEP;
    }
    case M_PARTIAL:
        swritef(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        return WAIT_CLIENT;
    case M_INTERIM:
        swritef(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
        return echo(c, q, "timeout=30") < 0 ? CLOSE : KEEP;
    case M_HEAD:
        if (!strcmp(q->method, "HEAD"))
            swritef(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        else if (!strcmp(q->method, "DELETE"))
            swritef(c, "HTTP/1.1 204 No Content\r\nX-Deleted: yes\r\n\r\n");
        else
            echo(c, q, "timeout=30");
        return KEEP;
    }
    return CLOSE;
}

static void *conn_main(void *arg)
{
    struct sconn *c = arg;
    struct srv *s = c->s;
    struct timeval tv = {.tv_sec = 0, .tv_usec = 20000};
    enum after after = CLOSE;
    char buf[16384];

    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (s->ctx) {
        c->ssl = SSL_new(s->ctx);
        SSL_set_fd(c->ssl, c->fd);
        for (;;) {
            ERR_clear_error();
            int r = SSL_accept(c->ssl);
            if (r == 1)
                break;
            int e = SSL_get_error(c->ssl, r);
            if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && !atomic_load(&s->stop))
                continue;
            atomic_fetch_add(&s->tls_failed, 1);
            goto out;
        }
        const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
        pthread_mutex_lock(&s->mu);
        snprintf(s->sni, sizeof(s->sni), "%s", sni ? sni : "");
        pthread_mutex_unlock(&s->mu);
    }
    for (;;) {
        struct sreq q;
        http_parser p;
        memset(&q, 0, sizeof(q));
        q.hash = 2166136261u;
        http_parser_init(&p, HTTP_REQUEST);
        p.data = &q;
        while (!q.done) {
            ssize_t n = sread(c, buf, sizeof(buf));
            if (n <= 0) {
                if (n != -2)
                    atomic_fetch_add(&s->client_closed, 1);
                after = KEEP; /* nothing more to count */
                goto out;
            }
            http_parser_execute(&p, &sq_settings, buf, (size_t)n);
            if (HTTP_PARSER_ERRNO(&p) != HPE_OK && HTTP_PARSER_ERRNO(&p) != HPE_PAUSED)
                goto out;
        }
        c->nreq++;
        pthread_mutex_lock(&s->mu);
        snprintf(s->last, sizeof(s->last), "%s %.200s host=%.200s cl=%s te=%s len=%zu", q.method,
                 q.url, q.host, q.cl[0] ? q.cl : "-", q.te[0] ? q.te : "-", q.len);
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_add(&s->requests, 1);
        after = respond(c, &q);
        if (after == CLOSE)
            break;
        if (after == WAIT_CLIENT) {
            wait_client_close(c);
            after = KEEP;
            break;
        }
    }
out:
    if (c->ssl) {
        SSL_shutdown(c->ssl); /* close_notify: a clean end of a close-delimited body */
        SSL_free(c->ssl);
    }
    close(c->fd);
    if (after == CLOSE)
        atomic_fetch_add(&s->server_closed, 1);
    free(c);
    return NULL;
}

static void *srv_main(void *arg)
{
    struct srv *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->lfd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        atomic_fetch_add(&s->accepts, 1);
        struct sconn *c = calloc(1, sizeof(*c));
        c->s = s;
        c->fd = fd;
        if (s->nconns == 64 || pthread_create(&s->conns[s->nconns], NULL, conn_main, c) != 0) {
            close(fd);
            free(c);
            continue;
        }
        s->nconns++;
    }
    for (int i = 0; i < s->nconns; i++)
        pthread_join(s->conns[i], NULL);
    return NULL;
}

static struct srv *srv_start(enum mode m, SSL_CTX *ctx)
{
    struct srv *s = calloc(1, sizeof(*s));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int one = 1;

    CU_ASSERT_FATAL(s != NULL);
    pthread_mutex_init(&s->mu, NULL);
    atomic_store(&s->mode, m);
    s->ctx = ctx;
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    CU_ASSERT_FATAL(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CU_ASSERT_FATAL(listen(s->lfd, 64) == 0);
    getsockname(s->lfd, (struct sockaddr *)&a, &len);
    s->port = ntohs(a.sin_port);
    CU_ASSERT_FATAL(pthread_create(&s->th, NULL, srv_main, s) == 0);
    return s;
}

static void srv_stop(struct srv *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->th, NULL);
    close(s->lfd);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ------------------------------------------------------------ throwaway PKI */

static void add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    NEED(e != NULL);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
}

static X509 *make_cert(EVP_PKEY *key, X509 *ca, EVP_PKEY *ca_key, const char *cn, const char *san)
{
    static long serial = 1;
    X509 *x = X509_new();
    X509V3_CTX v3;

    NEED(x != NULL);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(ca ? ca : x));
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, ca ? ca : x, x, NULL, NULL, 0);
    add_ext(x, &v3, NID_subject_key_identifier, "hash");
    if (!ca) {
        add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE");
        add_ext(x, &v3, NID_key_usage, "critical,digitalSignature");
        add_ext(x, &v3, NID_ext_key_usage, "serverAuth");
        add_ext(x, &v3, NID_authority_key_identifier, "keyid:always");
        add_ext(x, &v3, NID_subject_alt_name, san);
    }
    NEED(X509_sign(x, ca ? ca_key : key, EVP_sha256()) > 0);
    return x;
}

static void write_pem(const char *path, X509 *x)
{
    FILE *f = fopen(path, "w");
    NEED(f != NULL);
    PEM_write_X509(f, x);
    fclose(f);
}

static SSL_CTX *server_ctx(X509 *cert, EVP_PKEY *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    NEED(ctx != NULL);
    NEED(SSL_CTX_use_certificate(ctx, cert) == 1);
    NEED(SSL_CTX_use_PrivateKey(ctx, key) == 1);
    return ctx;
}

/* CA 1 signs a certificate for upstream.test and 127.0.0.1; CA 2 (not
 * trusted by the client) signs one for the same names. */
static void pki_init(void)
{
    EVP_PKEY *k1 = EVP_EC_gen("P-256"), *k2 = EVP_EC_gen("P-256");
    EVP_PKEY *l1 = EVP_EC_gen("P-256"), *l2 = EVP_EC_gen("P-256");
    NEED(k1 && k2 && l1 && l2);
    X509 *ca1 = make_cert(k1, NULL, NULL, "Test CA 1", NULL);
    X509 *ca2 = make_cert(k2, NULL, NULL, "Test CA 2", NULL);
    X509 *leaf1 = make_cert(l1, ca1, k1, "upstream.test", "DNS:upstream.test,IP:127.0.0.1");
    X509 *leaf2 = make_cert(l2, ca2, k2, "upstream.test", "DNS:upstream.test,IP:127.0.0.1");
    snprintf(ca_file, sizeof(ca_file), "%s/ca1.pem", tmpdir);
    snprintf(ca2_file, sizeof(ca2_file), "%s/ca2.pem", tmpdir);
    write_pem(ca_file, ca1);
    write_pem(ca2_file, ca2);
    srv_ctx_good = server_ctx(leaf1, l1);
    srv_ctx_other = server_ctx(leaf2, l2);
    X509_free(ca1);
    X509_free(ca2);
    X509_free(leaf1);
    X509_free(leaf2);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    EVP_PKEY_free(l1);
    EVP_PKEY_free(l2);
}

/* ------------------------------------------------------------ client side */

struct res {
    struct rl_ureq *r;
    int heads, datas, ends, errors, writables, late;
    int done;
    int status, err;
    char why[160];
    char hdrs[4096];
    uint8_t *body;
    size_t len, cap;
    int pause_on_data, cancel_on_data;
    struct rl_upstream *free_on_head;
};

static void on_head(struct rl_ureq *r, int status, const struct rl_h1_header *h, size_t n,
                    void *user)
{
    struct res *x = user;
    (void)r;
    if (x->done)
        x->late++;
    x->heads++;
    x->status = status;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(x->hdrs);
        snprintf(x->hdrs + l, sizeof(x->hdrs) - l, "%.*s: %.*s\n", (int)h[i].name_len, h[i].name,
                 (int)h[i].value_len, h[i].value);
    }
    if (x->free_on_head) {
        rl_upstream_free(x->free_on_head);
        x->done = 1;
    }
}

static void on_data(struct rl_ureq *r, const uint8_t *d, size_t n, void *user)
{
    struct res *x = user;
    if (x->done)
        x->late++;
    x->datas++;
    if (x->len + n > x->cap) {
        x->cap = (x->len + n) * 2;
        x->body = realloc(x->body, x->cap);
    }
    memcpy(x->body + x->len, d, n);
    x->len += n;
    if (x->pause_on_data) {
        x->pause_on_data = 0;
        rl_ureq_pause(r);
    }
    if (x->cancel_on_data) {
        rl_ureq_cancel(r);
        x->done = 1;
    }
}

static void on_end(struct rl_ureq *r, void *user)
{
    struct res *x = user;
    (void)r;
    if (x->done)
        x->late++;
    x->ends++;
    x->done = 1;
}

static void on_error(struct rl_ureq *r, int err, const char *why, void *user)
{
    struct res *x = user;
    (void)r;
    if (x->done)
        x->late++;
    x->errors++;
    x->err = err;
    snprintf(x->why, sizeof(x->why), "%s", why ? why : "(null)");
    x->done = 1;
}

static void on_writable(struct rl_ureq *r, void *user)
{
    struct res *x = user;
    (void)r;
    x->writables++;
}

static const struct rl_ureq_cbs cbs = {on_head, on_data, on_end, on_error, on_writable};

static void res_free(struct res *x)
{
    free(x->body);
    memset(x, 0, sizeof(*x));
}

static int body_is(const struct res *x, const char *s)
{
    return x->len == strlen(s) && memcmp(x->body, s, x->len) == 0;
}

static int body_has(const struct res *x, const char *s)
{
    return x->body && memmem(x->body, x->len, s, strlen(s)) != NULL;
}

static double connect_timeout_s; /* for mk_opts(); 0 = the default */

static struct rl_upstream *mk_opts(const char *url, const char *const *allow, const char *ca,
                                   double head_s, double idle_s, double pool_s)
{
    struct rl_cidr c[RL_UPSTREAM_MAX_ALLOW];
    size_t n = 0;
    struct rl_upstream *u = NULL;
    for (; allow && *allow; allow++)
        CU_ASSERT_FATAL(rl_cidr_parse(*allow, &c[n++]) == 0);
    struct rl_upstream_opts o = {.url = url,
                                 .ca_file = ca,
                                 .allow = c,
                                 .nallow = n,
                                 .resolver = resolver,
                                 .connect_timeout_s = connect_timeout_s,
                                 .head_timeout_s = head_s,
                                 .idle_timeout_s = idle_s,
                                 .pool_idle_s = pool_s};
    CU_ASSERT_FATAL(rl_upstream_new(loop, &o, &u) == 0);
    return u;
}

static const char *const lo_allow[] = {"127.0.0.1/32", NULL};

static struct rl_upstream *mk(struct srv *s, const char *path)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", s->port, path);
    return mk_opts(url, lo_allow, NULL, 0, 0, 0);
}

/* Runs one request without a body to its end. */
static void do_req(struct rl_upstream *u, const char *method, const char *target, struct res *x)
{
    int rc = rl_ureq_start(u, method, target, NULL, 0, 0, &cbs, x, &x->r);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(x->done, 0); /* never inside rl_ureq_start() */
    CU_ASSERT(run_until(&x->done));
}

static void do_post(struct rl_upstream *u, const char *target, const char *body, int chunked,
                    struct res *x)
{
    size_t n = strlen(body);
    int rc = rl_ureq_start(u, "POST", target, NULL, 0, chunked ? -1 : (int64_t)n, &cbs, x, &x->r);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(rl_ureq_write(x->r, (const uint8_t *)body, n), 0);
    CU_ASSERT_EQUAL(rl_ureq_end(x->r), 0);
    CU_ASSERT(run_until(&x->done));
}

/* ------------------------------------------------------------ tests: setup */

static void test_url(void)
{
    struct rl_upstream *u;
    struct rl_upstream_opts o = {.resolver = resolver};
    static const struct {
        const char *url, *dest, *host, *base;
    } good[] = {
        {"http://127.0.0.1:8931/mcp", "http://127.0.0.1:8931", "127.0.0.1:8931", "/mcp"},
        {"http://crm.internal/mcp/", "http://crm.internal", "crm.internal", "/mcp/"},
        {"HTTPS://CRM.Example.COM", "crm.example.com", "crm.example.com", "/"},
        {"https://crm.example.com:443/a/b", "crm.example.com", "crm.example.com", "/a/b"},
        {"https://crm.example.com:8443/x%20y", "crm.example.com:8443", "crm.example.com:8443",
         "/x%20y"},
        {"http://crm:80", "http://crm", "crm", "/"},
        {"http://[::1]:8080/mcp", "http://[::1]:8080", "[::1]:8080", "/mcp"},
        {"https://[2001:DB8:0:0::1]/", "[2001:db8::1]", "[2001:db8::1]", "/"},
        {"http://xn--bcher-kva.example/", "http://xn--bcher-kva.example", "xn--bcher-kva.example",
         "/"},
    };
    static const char *const bad[] = {
        NULL,
        "",
        "ftp://host/",
        "http:/host",
        "host:80",
        "http://",
        "http:///mcp",
        "http://user:pw@host/", /* userinfo */
        "http://host@evil.net/",
        "http://host/mcp#frag", /* fragment */
        "http://host/mcp?x=1",  /* query */
        "http://host:0/",       /* bad ports */
        "http://host:65536/",
        "http://host:080/",
        "http://host:/",
        "http://host:8a/",
        "http://host:1:2/",
        "http://ho st/",
        "http://host/a b",
        "http://host\\@evil/",
        "http://-host/",
        "http://host-/",
        "http://ho_st/",
        "http://host./",
        "http://a..b/",
        "http://0177.0.0.1/", /* numeric but not a canonical dotted quad */
        "http://2130706433/",
        "http://127.1/",
        "http://0x7f.0.0.1/",
        "http://example.0x10/",
        "http://1.2.3.256/",
        "http://[::1/",
        "http://[::1]x/",
        "http://[fe80::1%25eth0]/",
        "http://[127.0.0.1]/",
        "http://host/%zz",
        "http://host/\x7f",
        "http://h\xc3\xa9st/",
    };

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        o.url = good[i].url;
        u = NULL;
        int rc = rl_upstream_new(loop, &o, &u);
        CU_ASSERT_EQUAL(rc, 0);
        if (rc != 0) {
            fprintf(stderr, "\n  should parse: %s\n", good[i].url);
            continue;
        }
        CU_ASSERT_STRING_EQUAL(rl_upstream_destination(u), good[i].dest);
        CU_ASSERT_STRING_EQUAL(rl_upstream_host(u), good[i].host);
        CU_ASSERT_STRING_EQUAL(rl_upstream_base_path(u), good[i].base);
        rl_upstream_free(u);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o.url = bad[i];
        u = (struct rl_upstream *)&o; /* must be reset to NULL */
        int rc = rl_upstream_new(loop, &o, &u);
        CU_ASSERT_EQUAL(rc, AL_ERR_INVAL);
        CU_ASSERT_PTR_NULL(u);
        if (rc != AL_ERR_INVAL)
            fprintf(stderr, "\n  should be rejected: %s\n", bad[i] ? bad[i] : "(null)");
        if (rc == 0)
            rl_upstream_free(u);
    }
    /* other bad options */
    o.url = "http://host/";
    o.resolver = NULL;
    CU_ASSERT_EQUAL(rl_upstream_new(loop, &o, &u), AL_ERR_INVAL);
    o.resolver = resolver;
    o.nallow = 1; /* count without a list */
    CU_ASSERT_EQUAL(rl_upstream_new(loop, &o, &u), AL_ERR_INVAL);
    o.nallow = RL_UPSTREAM_MAX_ALLOW + 1;
    CU_ASSERT_EQUAL(rl_upstream_new(loop, &o, &u), AL_ERR_INVAL);
    o.nallow = 0;
    /* https with a CA file that does not exist */
    o.url = "https://host/";
    o.ca_file = "/nonexistent/ca.pem";
    CU_ASSERT_EQUAL(rl_upstream_new(loop, &o, &u), AL_ERR_TLS);
    /* https with the system store */
    o.ca_file = NULL;
    CU_ASSERT_EQUAL(rl_upstream_new(loop, &o, &u), 0);
    rl_upstream_free(u);
    rl_upstream_free(NULL);
}

static void test_request_validation(void)
{
    struct srv *s = srv_start(M_ECHO, NULL);
    struct rl_upstream *u = mk(s, "/");
    struct res x = {0};
    struct rl_ureq *r = (struct rl_ureq *)&x;
    struct rl_h1_header h[2];

#define START_BAD(m, t, hh, nn, cl)                                                                \
    do {                                                                                           \
        r = (struct rl_ureq *)&x;                                                                  \
        CU_ASSERT_EQUAL(rl_ureq_start(u, (m), (t), (hh), (nn), (cl), &cbs, &x, &r), AL_ERR_INVAL); \
        CU_ASSERT_PTR_NULL(r);                                                                     \
    } while (0)
#define HDR(i, n, v) (h[i] = (struct rl_h1_header){(n), strlen(n), (v), strlen(v)})

    START_BAD("GET", "http://x/", NULL, 0, 0); /* absolute-form */
    START_BAD("GET", "*", NULL, 0, 0);
    START_BAD("GET", "", NULL, 0, 0);
    START_BAD("GET", "/a b", NULL, 0, 0);
    START_BAD("GET", "/a#f", NULL, 0, 0);
    START_BAD("GET", "/a\r\nX: y", NULL, 0, 0);
    START_BAD("G ET", "/", NULL, 0, 0);
    START_BAD("", "/", NULL, 0, 0);
    START_BAD("CONNECT", "/", NULL, 0, 0);
    START_BAD("GET\r\n", "/", NULL, 0, 0);
    START_BAD("GET", "/", NULL, 0, -2);
    HDR(0, "Connection", "close");
    START_BAD("GET", "/", h, 1, 0);
    HDR(0, "Transfer-Encoding", "chunked");
    START_BAD("GET", "/", h, 1, 0);
    HDR(0, "content-length", "5");
    START_BAD("GET", "/", h, 1, 0);
    HDR(0, "Keep-Alive", "timeout=5");
    START_BAD("GET", "/", h, 1, 0);
    HDR(0, "TE", "trailers");
    START_BAD("GET", "/", h, 1, 0);
    HDR(0, "Upgrade", "websocket");
    START_BAD("GET", "/", h, 1, 0);
    HDR(0, "Expect", "100-continue");
    START_BAD("GET", "/", h, 1, 0);
    HDR(0, "X-Bad Name", "v");
    START_BAD("GET", "/", h, 1, 0);
    HDR(0, "X-Split", "a\r\nInjected: 1");
    START_BAD("GET", "/", h, 1, 0);
    HDR(0, "X-Nul", "a");
    h[0].value_len = 2; /* includes the NUL */
    START_BAD("GET", "/", h, 1, 0);
    HDR(0, "Host", "a");
    HDR(1, "host", "b");
    START_BAD("GET", "/", h, 2, 0);
    CU_ASSERT_EQUAL(rl_ureq_start(u, "GET", "/", NULL, 0, 0, NULL, &x, &r), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_ureq_start(u, "GET", "/", NULL, 0, 0, &cbs, &x, NULL), AL_ERR_INVAL);
    spin(5);
    CU_ASSERT_EQUAL(x.heads + x.ends + x.errors, 0);
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 0);

    /* a caller's Host is used instead of the origin's; other headers pass */
    HDR(0, "Host", "virtual.example");
    HDR(1, "Authorization", "Bearer canary-token");
    CU_ASSERT_EQUAL(rl_ureq_start(u, "GET", "/v?q=1", h, 2, 0, &cbs, &x, &x.r), 0);
    CU_ASSERT(run_until(&x.done));
    CU_ASSERT_EQUAL(x.ends, 1);
    CU_ASSERT(body_has(&x, "host=virtual.example"));
    CU_ASSERT(body_has(&x, "target=/v?q=1"));
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&x);
#undef START_BAD
#undef HDR
}

/* ------------------------------------------------------------ tests: exchanges */

static void test_get_post(void)
{
    struct srv *s = srv_start(M_ECHO, NULL);
    struct rl_upstream *u = mk(s, "/mcp");
    struct res g = {0}, p = {0}, c = {0};
    char want[64];

    do_req(u, "GET", "/mcp/tools", &g);
    CU_ASSERT_EQUAL(g.ends, 1);
    CU_ASSERT_EQUAL(g.errors, 0);
    CU_ASSERT_EQUAL(g.heads, 1);
    CU_ASSERT_EQUAL(g.status, 200);
    CU_ASSERT(body_has(&g, "method=GET target=/mcp/tools"));
    snprintf(want, sizeof(want), "host=127.0.0.1:%d ", s->port);
    CU_ASSERT(body_has(&g, want));
    CU_ASSERT(body_has(&g, "cl=- te=- conn=keep-alive len=0"));
    /* names lowercased; hop-by-hop fields and those named by Connection removed */
    CU_ASSERT(strstr(g.hdrs, "x-served-by: Test\n") != NULL);
    CU_ASSERT(strstr(g.hdrs, "content-type: text/plain\n") != NULL);
    CU_ASSERT(strstr(g.hdrs, "content-length: ") != NULL);
    CU_ASSERT(strstr(g.hdrs, "connection") == NULL);
    CU_ASSERT(strstr(g.hdrs, "keep-alive") == NULL);
    CU_ASSERT(strstr(g.hdrs, "x-hop") == NULL);
    CU_ASSERT_EQUAL(g.late, 0);

    do_post(u, "/mcp", "{\"jsonrpc\":\"2.0\"}", 0, &p);
    CU_ASSERT_EQUAL(p.ends, 1);
    CU_ASSERT(body_has(&p, "method=POST target=/mcp"));
    CU_ASSERT(body_has(&p, "cl=17 te=- conn=keep-alive len=17"));
    CU_ASSERT(body_has(&p, "first={\"jsonrpc\":\"2.0\"}"));

    do_post(u, "/mcp", "chunked body", 1, &c);
    CU_ASSERT_EQUAL(c.ends, 1);
    CU_ASSERT(body_has(&c, "cl=- te=chunked conn=keep-alive len=12"));
    CU_ASSERT(body_has(&c, "first=chunked body"));

    /* DELETE with no body announces Content-Length: 0 */
    struct res d = {0};
    do_req(u, "DELETE", "/mcp", &d);
    CU_ASSERT(body_has(&d, "method=DELETE target=/mcp host="));
    CU_ASSERT(body_has(&d, "cl=0 "));
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 1); /* all four on one connection */
    CU_ASSERT_EQUAL(atomic_load(&s->requests), 4);
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&g);
    res_free(&p);
    res_free(&c);
    res_free(&d);
}

static void test_chunked_response(void)
{
    struct srv *s = srv_start(M_CHUNKED, NULL);
    struct rl_upstream *u = mk(s, "/");
    struct res a = {0}, b = {0};

    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.ends, 1);
    CU_ASSERT_EQUAL(a.status, 200);
    CU_ASSERT(body_is(&a, "hello world"));
    CU_ASSERT(strstr(a.hdrs, "x-kind: chunked\n") != NULL);
    CU_ASSERT(strstr(a.hdrs, "transfer-encoding") == NULL); /* framing consumed here */
    CU_ASSERT(strstr(a.hdrs, "x-trailer") == NULL);         /* trailers dropped */
    do_req(u, "GET", "/", &b);
    CU_ASSERT(body_is(&b, "hello world"));
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 1); /* a chunked response leaves it reusable */
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&a);
    res_free(&b);
}

static void test_content_length_response(void)
{
    struct srv *s = srv_start(M_BIG, NULL);
    struct rl_upstream *u = mk(s, "/");
    struct res a = {0};
    int ok = 1;

    s->big_len = 200000;
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.ends, 1);
    CU_ASSERT_EQUAL(a.len, 200000);
    for (size_t i = 0; i < a.len; i++)
        ok &= a.body[i] == (uint8_t)(i * 7);
    CU_ASSERT(ok);
    CU_ASSERT(strstr(a.hdrs, "content-length: 200000\n") != NULL);
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&a);
}

static void test_close_delimited(void)
{
    struct srv *s = srv_start(M_CLOSE_DELIM, NULL);
    struct rl_upstream *u = mk(s, "/");
    struct res a = {0}, b = {0};

    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.ends, 1);
    CU_ASSERT(body_is(&a, "until the end"));
    do_req(u, "GET", "/", &b);
    CU_ASSERT(body_is(&b, "until the end"));
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 2); /* never reused */
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&a);
    res_free(&b);
}

static void test_interim_skipped(void)
{
    struct srv *s = srv_start(M_INTERIM, NULL);
    struct rl_upstream *u = mk(s, "/");
    struct res a = {0};

    do_req(u, "GET", "/x", &a);
    CU_ASSERT_EQUAL(a.heads, 1);
    CU_ASSERT_EQUAL(a.status, 200);
    CU_ASSERT(strstr(a.hdrs, "link") == NULL); /* the 103's field is not the response's */
    CU_ASSERT(body_has(&a, "method=GET target=/x"));
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&a);
}

static void test_head_and_204(void)
{
    struct srv *s = srv_start(M_HEAD, NULL);
    struct rl_upstream *u = mk(s, "/");
    struct res a = {0}, b = {0}, c = {0};

    do_req(u, "HEAD", "/", &a);
    CU_ASSERT_EQUAL(a.ends, 1);
    CU_ASSERT_EQUAL(a.len, 0);
    CU_ASSERT(strstr(a.hdrs, "content-length: 1000\n") != NULL);
    do_req(u, "DELETE", "/", &b);
    CU_ASSERT_EQUAL(b.ends, 1);
    CU_ASSERT_EQUAL(b.status, 204);
    CU_ASSERT_EQUAL(b.len, 0);
    do_req(u, "GET", "/after", &c);
    CU_ASSERT(body_has(&c, "target=/after"));
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 1); /* bodiless responses keep it in sync */
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&a);
    res_free(&b);
    res_free(&c);
}

/* ------------------------------------------------------------ tests: pool */

static void test_keepalive_reuse(void)
{
    struct srv *s = srv_start(M_ECHO, NULL);
    struct rl_upstream *u = mk(s, "/");
    struct res x[3] = {{0}};

    for (int i = 0; i < 3; i++) {
        do_req(u, "GET", "/", &x[i]);
        CU_ASSERT_EQUAL(x[i].ends, 1);
    }
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 1);
    CU_ASSERT_EQUAL(atomic_load(&s->requests), 3);
    /* freeing the upstream closes the pooled connection */
    rl_upstream_free(u);
    CU_ASSERT(run_until_atomic(&s->client_closed, 1));
    srv_stop(s);
    for (int i = 0; i < 3; i++)
        res_free(&x[i]);
}

static void test_pooled_closed_by_server(void)
{
    struct srv *s = srv_start(M_CLOSE_AFTER, NULL);
    struct rl_upstream *u = mk(s, "/");
    struct res a = {0}, b = {0};

    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.ends, 1);
    CU_ASSERT(run_until_atomic(&s->server_closed, 1));
    do_req(u, "POST", "/", &b); /* not retryable: must not land on the dead connection */
    CU_ASSERT_EQUAL(b.ends, 1);
    CU_ASSERT_EQUAL(b.errors, 0);
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 2);
    CU_ASSERT_EQUAL(atomic_load(&s->requests), 2);
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&a);
    res_free(&b);
}

static void test_pool_idle_expiry(void)
{
    struct srv *s = srv_start(M_ECHO, NULL);
    char url[64];
    struct res a = {0}, b = {0};

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", s->port);
    struct rl_upstream *u = mk_opts(url, lo_allow, NULL, 0, 0, 0.05);
    do_req(u, "GET", "/", &a);
    CU_ASSERT(run_until_atomic(&s->client_closed, 1)); /* the client let it go */
    do_req(u, "GET", "/", &b);
    CU_ASSERT_EQUAL(b.ends, 1);
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 2);
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&a);
    res_free(&b);
}

static void test_keepalive_hint(void)
{
    struct srv *s = srv_start(M_KA1, NULL);
    struct rl_upstream *u = mk(s, "/");
    struct res a = {0}, b = {0};

    /* "Keep-Alive: timeout=1": the server closes idle connections too soon
     * to pool them safely, so the client lets each one go */
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.ends, 1);
    CU_ASSERT(strstr(a.hdrs, "keep-alive") == NULL);
    CU_ASSERT(run_until_atomic(&s->client_closed, 1));
    do_req(u, "GET", "/", &b);
    CU_ASSERT_EQUAL(b.ends, 1);
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 2);
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&a);
    res_free(&b);
}

static void test_retry_rules(void)
{
    /* GET on a reused connection the server drops unanswered: sent again on
     * a fresh connection */
    struct srv *s = srv_start(M_DROP_SECOND, NULL);
    struct rl_upstream *u = mk(s, "/");
    struct res a = {0}, b = {0};

    do_req(u, "GET", "/1", &a);
    CU_ASSERT_EQUAL(a.ends, 1);
    do_req(u, "GET", "/2", &b);
    CU_ASSERT_EQUAL(b.ends, 1);
    CU_ASSERT_EQUAL(b.errors, 0);
    CU_ASSERT(body_has(&b, "target=/2"));
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 2);
    CU_ASSERT_EQUAL(atomic_load(&s->requests), 3); /* /2 was seen twice */
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&a);
    res_free(&b);

    /* POST: never twice */
    s = srv_start(M_DROP_SECOND, NULL);
    u = mk(s, "/");
    do_req(u, "GET", "/1", &a);
    do_post(u, "/mcp", "{\"method\":\"tools/call\"}", 0, &b);
    CU_ASSERT_EQUAL(b.errors, 1);
    CU_ASSERT_EQUAL(b.err, AL_ERR_PROTO);
    CU_ASSERT_EQUAL(b.ends, 0);
    spin(20);
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 1);
    CU_ASSERT_EQUAL(atomic_load(&s->requests), 2);
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&a);
    res_free(&b);

    /* a fresh connection is never retried, GET or not */
    s = srv_start(M_DROP_ALL, NULL);
    u = mk(s, "/");
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.errors, 1);
    CU_ASSERT_EQUAL(a.err, AL_ERR_PROTO);
    spin(20);
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 1);
    CU_ASSERT_EQUAL(atomic_load(&s->requests), 1);
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&a);
}

/* ------------------------------------------------------------ tests: failures */

static void test_timeouts(void)
{
    struct srv *s = srv_start(M_SILENT, NULL);
    char url[64];
    struct res a = {0}, b = {0};

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", s->port);
    struct rl_upstream *u = mk_opts(url, lo_allow, NULL, 0.2, 0.2, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.errors, 1);
    CU_ASSERT_EQUAL(a.err, AL_ERR_TIMEOUT);
    CU_ASSERT_EQUAL(a.heads, 0);
    CU_ASSERT(run_until_atomic(&s->client_closed, 1));

    /* idle between body bytes */
    atomic_store(&s->mode, M_PARTIAL);
    do_req(u, "GET", "/", &b);
    CU_ASSERT_EQUAL(b.heads, 1);
    CU_ASSERT(body_is(&b, "0123456789"));
    CU_ASSERT_EQUAL(b.errors, 1);
    CU_ASSERT_EQUAL(b.err, AL_ERR_TIMEOUT);
    CU_ASSERT(run_until_atomic(&s->client_closed, 2));
    CU_ASSERT_EQUAL(a.late + b.late, 0);
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&a);
    res_free(&b);
}

static void expect_raw(struct srv *s, struct rl_upstream *u, const char *raw, size_t len, int err)
{
    struct res x = {0};
    s->raw = raw;
    s->raw_len = len;
    do_req(u, "GET", "/", &x);
    CU_ASSERT_EQUAL(x.errors, 1);
    CU_ASSERT_EQUAL(x.err, err);
    CU_ASSERT_EQUAL(x.ends, 0);
    CU_ASSERT(strstr(x.why, "CANARY") == NULL); /* never echoes response bytes */
    CU_ASSERT(x.why[0] != '\0');
    if (x.err != err || x.errors != 1)
        fprintf(stderr, "\n  raw response %.*s: err=%d ends=%d why=%s\n",
                (int)(len > 60 ? 60 : len), raw, x.err, x.ends, x.why);
    res_free(&x);
}

#define RAW(s, u, lit, err) expect_raw((s), (u), (lit), sizeof(lit) - 1, (err))

static void test_malformed(void)
{
    struct srv *s = srv_start(M_RAW, NULL);
    struct rl_upstream *u = mk(s, "/");
    int heads_before;

    RAW(s, u, "CANARY garbage\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\nContent-Length: 0\n\n", AL_ERR_PROTO); /* bare LF */
    RAW(s, u, "HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nX: CANARY\r\n folded\r\nContent-Length: 0\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nX\x01: y\r\nContent-Length: 0\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nBad Name: y\r\nContent-Length: 0\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 0\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\n: empty\r\nContent-Length: 0\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nX : y\r\nContent-Length: 0\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u, "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u, "HTXP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u, "\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n",
        AL_ERR_PROTO);
    RAW(s, u,
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
        "2\r\nok\r\n0\r\n\r\n",
        AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
        "\r\n0\r\n\r\n",
        AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nContent-Length: 1,1\r\n\r\nok", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\nok", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nok", AL_ERR_PROTO);
    /* chunk framing, each broken in one place */
    RAW(s, u, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
        AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXY0\r\n\r\n",
        AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n",
        AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\n0\r\n\r\n",
        AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\n0\r\n\r\n",
        AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 x\r\nok\r\n0\r\n\r\n",
        AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nok\r\n0\r\n\r\n",
        AL_ERR_PROTO);
    RAW(s, u,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "10000000000000000\r\nok\r\n",
        AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nT: 1\n\r\n",
        AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\r",
        AL_ERR_PROTO);
    /* truncations */
    RAW(s, u, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", AL_ERR_PROTO);
    RAW(s, u, "", AL_ERR_PROTO);
    /* content codings cannot be scrubbed */
    RAW(s, u, "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nCANARY",
        AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 0\r\n\r\n", AL_ERR_PROTO);
    RAW(s, u, "HTTP/1.1 200 OK\r\nContent-Encoding: identity, gzip\r\nContent-Length: 0\r\n\r\n",
        AL_ERR_PROTO);

    /* too many interim responses */
    {
        static char big[4096]; /* the server may still be sending it when the client gives up */
        big[0] = '\0';
        for (int i = 0; i < 20; i++)
            strcat(big, "HTTP/1.1 103 Early Hints\r\n\r\n");
        strcat(big, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        expect_raw(s, u, big, strlen(big), AL_ERR_PROTO);
    }

    /* well-formed edge cases that must pass */
    struct res ok = {0};
    static const char fine[] = "HTTP/1.1 200 \r\nContent-Encoding: Identity\r\nX-Empty:\r\n"
                               "X-Tab:\tv\t\r\nContent-Length: 2\r\n\r\nok";
    s->raw = fine;
    s->raw_len = sizeof(fine) - 1;
    do_req(u, "GET", "/", &ok);
    CU_ASSERT_EQUAL(ok.ends, 1);
    CU_ASSERT(body_is(&ok, "ok"));
    CU_ASSERT(strstr(ok.hdrs, "x-empty: \n") != NULL);
    CU_ASSERT(strstr(ok.hdrs, "x-tab: v\n") != NULL);
    heads_before = ok.heads;
    CU_ASSERT_EQUAL(heads_before, 1);
    res_free(&ok);
    static const char chunk_ext[] = "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    "2 ; a=b ;c=\"d e\"\r\nok\r\n000\r\nX-T: 1\r\nY: 2\r\n\r\n";
    s->raw = chunk_ext;
    s->raw_len = sizeof(chunk_ext) - 1;
    do_req(u, "GET", "/", &ok);
    CU_ASSERT_EQUAL(ok.ends, 1);
    CU_ASSERT(body_is(&ok, "ok"));
    res_free(&ok);
    rl_upstream_free(u);
    srv_stop(s);
}

/* Bytes after a complete response (a second response the client never
 * asked for: the shape of a desync) make the connection unusable. */
static void test_bytes_after_response(void)
{
    struct srv *s = srv_start(M_RAW_KEEP, NULL);
    struct rl_upstream *u = mk(s, "/");
    struct res a = {0}, b = {0};
    static const char raw[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                              "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSMUGG";

    s->raw = raw;
    s->raw_len = sizeof(raw) - 1;
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.ends, 1);
    CU_ASSERT(body_is(&a, "ok"));
    CU_ASSERT(run_until_atomic(&s->client_closed, 1)); /* closed, not pooled */
    do_req(u, "GET", "/", &b);
    CU_ASSERT(body_is(&b, "ok"));
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 2);
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&a);
    res_free(&b);
}

static void test_head_too_big(void)
{
    struct srv *s = srv_start(M_RAW, NULL);
    char url[64];
    static char raw[8192];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", s->port);
    struct rl_upstream_opts o = {.url = url, .resolver = resolver, .max_head = 1024};
    struct rl_cidr c;
    rl_cidr_parse("127.0.0.1/32", &c);
    o.allow = &c;
    o.nallow = 1;
    struct rl_upstream *u = NULL;
    CU_ASSERT_FATAL(rl_upstream_new(loop, &o, &u) == 0);
    strcpy(raw, "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(raw + strlen(raw), 'a', 2000);
    strcat(raw, "\r\nContent-Length: 0\r\n\r\n");
    expect_raw(s, u, raw, strlen(raw), AL_ERR_TOOBIG);
    /* too many fields */
    raw[0] = '\0';
    strcat(raw, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < 101; i++)
        strcat(raw, "A:b\r\n");
    strcat(raw, "\r\n");
    rl_upstream_free(u);
    o.max_head = 0;
    CU_ASSERT_FATAL(rl_upstream_new(loop, &o, &u) == 0);
    expect_raw(s, u, raw, strlen(raw), AL_ERR_PROTO);
    rl_upstream_free(u);
    srv_stop(s);
}

static void test_address_policy(void)
{
    struct srv *s = srv_start(M_ECHO, NULL);
    char url[96];
    struct res a = {0};
    struct rl_upstream *u;
    static const char *const lo8[] = {"127.0.0.0/8", NULL};
    static const char *const v6_mapped[] = {"::ffff:0:0/96", NULL};

    /* an IP literal gets no implicit exception */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", s->port);
    u = mk_opts(url, NULL, NULL, 0, 0, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.errors, 1);
    CU_ASSERT_EQUAL(a.err, AL_ERR_AUTH);
    CU_ASSERT_STRING_EQUAL(a.why, "upstream address denied");
    rl_upstream_free(u);
    res_free(&a);
    /* nor does localhost, nor a name that resolves to loopback */
    snprintf(url, sizeof(url), "http://localhost:%d/", s->port);
    u = mk_opts(url, NULL, NULL, 0, 0, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.err, AL_ERR_AUTH);
    rl_upstream_free(u);
    res_free(&a);
    snprintf(url, sizeof(url), "http://denied.test:%d/", s->port);
    u = mk_opts(url, NULL, NULL, 0, 0, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.err, AL_ERR_AUTH);
    rl_upstream_free(u);
    res_free(&a);
    /* metadata over IPv4 and IPv6, even with loopback allowed */
    snprintf(url, sizeof(url), "http://meta.test:%d/", s->port);
    u = mk_opts(url, lo_allow, NULL, 0, 0, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.err, AL_ERR_AUTH);
    rl_upstream_free(u);
    res_free(&a);
    /* IPv4-mapped loopback with only the IPv6 form allowed */
    snprintf(url, sizeof(url), "http://mapped.test:%d/", s->port);
    u = mk_opts(url, v6_mapped, NULL, 0, 0, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.err, AL_ERR_AUTH);
    rl_upstream_free(u);
    res_free(&a);
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 0); /* nothing was dialed */

    /* a name with a denied and an allowed address dials the allowed one */
    snprintf(url, sizeof(url), "http://multi.test:%d/", s->port);
    u = mk_opts(url, lo_allow, NULL, 0, 0, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.ends, 1);
    CU_ASSERT(body_has(&a, "host=multi.test:"));
    rl_upstream_free(u);
    res_free(&a);
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 1);

    /* the first allowed address refuses: the next one is tried */
    snprintf(url, sizeof(url), "http://fallback.test:%d/", s->port);
    u = mk_opts(url, lo8, NULL, 0, 0, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.ends, 1);
    rl_upstream_free(u);
    res_free(&a);
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 2);
    srv_stop(s);
}

static void test_resolution_and_connect_errors(void)
{
    struct res a = {0};
    char url[96];
    struct rl_upstream *u;
    int port;

    u = mk_opts("http://no-such-host.test/", NULL, NULL, 0, 0, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.errors, 1);
    CU_ASSERT_EQUAL(a.err, AL_ERR_NOTFOUND);
    rl_upstream_free(u);
    res_free(&a);

    /* a port nobody listens on */
    struct srv *s = srv_start(M_ECHO, NULL);
    port = s->port;
    srv_stop(s);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    u = mk_opts(url, lo_allow, NULL, 0, 0, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.errors, 1);
    CU_ASSERT_EQUAL(a.err, -ECONNREFUSED);
    CU_ASSERT_STRING_EQUAL(a.why, "upstream connection failed");
    rl_upstream_free(u);
    res_free(&a);
}

/* A listener on ip:port with a full accept queue (backlog 0, one
 * connection queued and never accepted): Linux drops further SYNs, so a
 * connect there neither succeeds nor fails. */
static int blackhole(const char *ip, int port, int *filler)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    inet_pton(AF_INET, ip, &a.sin_addr);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CU_ASSERT_FATAL(listen(fd, 0) == 0);
    *filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CU_ASSERT_FATAL(connect(*filler, (struct sockaddr *)&a, sizeof(a)) == 0);
    return fd;
}

static void test_connect_timeout(void)
{
    struct srv *s = srv_start(M_ECHO, NULL);
    static const char *const lo8[] = {"127.0.0.0/8", NULL};
    int filler, bh = blackhole("127.0.0.2", s->port, &filler);
    struct res a = {0}, b = {0};
    char url[96];
    struct rl_upstream *u;

    /* the only address never answers */
    connect_timeout_s = 0.3;
    snprintf(url, sizeof(url), "http://127.0.0.2:%d/", s->port);
    u = mk_opts(url, lo8, NULL, 0, 0, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.errors, 1);
    CU_ASSERT_EQUAL(a.err, AL_ERR_TIMEOUT);
    CU_ASSERT_STRING_EQUAL(a.why, "upstream connect timed out");
    rl_upstream_free(u);

    /* the first of two addresses never answers: it gets half of the time,
     * then the second is dialed */
    connect_timeout_s = 4;
    snprintf(url, sizeof(url), "http://fallback.test:%d/", s->port);
    u = mk_opts(url, lo8, NULL, 0, 0, 0);
    do_req(u, "GET", "/", &b);
    CU_ASSERT_EQUAL(b.ends, 1);
    CU_ASSERT(body_has(&b, "method=GET"));
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 1);
    rl_upstream_free(u);
    connect_timeout_s = 0;
    close(filler);
    close(bh);
    srv_stop(s);
    res_free(&a);
    res_free(&b);
}

/* ------------------------------------------------------------ tests: flow control */

static void test_pause_resume(void)
{
    struct srv *s = srv_start(M_BIG, NULL);
    struct rl_upstream *u = mk(s, "/");
    struct res a = {0};
    size_t got;
    int ok = 1;

    s->big_len = 1024 * 1024;
    a.pause_on_data = 1;
    CU_ASSERT_EQUAL_FATAL(rl_ureq_start(u, "GET", "/", NULL, 0, 0, &cbs, &a, &a.r), 0);
    CU_ASSERT(run_until(&a.datas));
    got = a.len;
    spin(100);
    CU_ASSERT_EQUAL(a.len, got); /* nothing while paused */
    CU_ASSERT_EQUAL(a.datas, 1);
    CU_ASSERT_EQUAL(a.done, 0);
    rl_ureq_resume(a.r);
    CU_ASSERT(run_until(&a.done));
    CU_ASSERT_EQUAL(a.ends, 1);
    CU_ASSERT_EQUAL(a.len, 1024 * 1024);
    for (size_t i = 0; i < a.len; i++)
        ok &= a.body[i] == (uint8_t)(i * 7);
    CU_ASSERT(ok);
    res_free(&a);

    /* paused again and again: each resume delivers, then pauses again */
    struct res b = {0};
    CU_ASSERT_EQUAL_FATAL(rl_ureq_start(u, "GET", "/", NULL, 0, 0, &cbs, &b, &b.r), 0);
    b.pause_on_data = 1;
    for (int round = 0; round < 5 && !b.done; round++) {
        int before = b.datas;
        while (b.datas == before && !b.done)
            ev_run(loop, EVRUN_ONCE);
        spin(5);
        CU_ASSERT(b.datas == before + 1 || b.done);
        b.pause_on_data = 1;
        rl_ureq_resume(b.r);
    }
    b.pause_on_data = 0;
    CU_ASSERT(run_until(&b.done));
    CU_ASSERT_EQUAL(b.ends, 1);
    CU_ASSERT_EQUAL(b.len, 1024 * 1024);
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 1);
    rl_upstream_free(u);
    srv_stop(s);
    res_free(&b);
}

static void test_cancel(void)
{
    struct srv *s = srv_start(M_PARTIAL, NULL);
    struct rl_upstream *u = mk(s, "/");
    struct res a = {0}, b = {0}, c = {0};

    /* mid-response, from inside on_data */
    a.cancel_on_data = 1;
    CU_ASSERT_EQUAL_FATAL(rl_ureq_start(u, "GET", "/", NULL, 0, 0, &cbs, &a, &a.r), 0);
    CU_ASSERT(run_until(&a.done));
    CU_ASSERT(run_until_atomic(&s->client_closed, 1)); /* the connection was closed */
    spin(20);
    CU_ASSERT_EQUAL(a.datas, 1);
    CU_ASSERT_EQUAL(a.ends + a.errors + a.late, 0);

    /* not pooled: the next request opens a new connection */
    atomic_store(&s->mode, M_ECHO);
    do_req(u, "GET", "/", &b);
    CU_ASSERT_EQUAL(b.ends, 1);
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 2);

    /* right after start, before anything happened */
    CU_ASSERT_EQUAL_FATAL(rl_ureq_start(u, "GET", "/", NULL, 0, 0, &cbs, &c, &c.r), 0);
    rl_ureq_cancel(c.r);
    spin(20);
    CU_ASSERT_EQUAL(c.heads + c.datas + c.ends + c.errors, 0);
    /* while resolving a name */
    rl_upstream_free(u);
    char url[64];
    snprintf(url, sizeof(url), "http://upstream.test:%d/", s->port);
    u = mk_opts(url, lo_allow, NULL, 0, 0, 0);
    CU_ASSERT_EQUAL_FATAL(rl_ureq_start(u, "GET", "/", NULL, 0, 0, &cbs, &c, &c.r), 0);
    ev_run(loop, EVRUN_NOWAIT); /* the lookup is under way */
    rl_ureq_cancel(c.r);
    spin(20);
    CU_ASSERT_EQUAL(c.heads + c.datas + c.ends + c.errors, 0);

    /* freeing the upstream with a request in flight: no callback */
    atomic_store(&s->mode, M_SILENT);
    int before = atomic_load(&s->requests);
    CU_ASSERT_EQUAL_FATAL(rl_ureq_start(u, "GET", "/", NULL, 0, 0, &cbs, &c, &c.r), 0);
    CU_ASSERT(run_until_atomic(&s->requests, before + 1));
    int closed = atomic_load(&s->client_closed);
    rl_upstream_free(u);
    CU_ASSERT(run_until_atomic(&s->client_closed, closed + 1));
    spin(10);
    CU_ASSERT_EQUAL(c.heads + c.datas + c.ends + c.errors, 0);

    /* freeing the upstream from inside a callback */
    atomic_store(&s->mode, M_ECHO);
    u = mk(s, "/");
    struct res d = {0};
    d.free_on_head = u;
    CU_ASSERT_EQUAL_FATAL(rl_ureq_start(u, "GET", "/", NULL, 0, 0, &cbs, &d, &d.r), 0);
    CU_ASSERT(run_until(&d.done));
    spin(10);
    CU_ASSERT_EQUAL(d.heads, 1);
    CU_ASSERT_EQUAL(d.datas + d.ends + d.errors, 0);
    srv_stop(s);
    res_free(&a);
    res_free(&b);
    res_free(&c);
    res_free(&d);
}

static void test_backpressure(void)
{
    struct srv *s = srv_start(M_ECHO, NULL);
    struct rl_upstream *u = mk(s, "/");
    struct res a = {0};
    static uint8_t chunk[256 * 1024];
    size_t total = 0, want = 4 * 1024 * 1024;
    uint32_t hash = 2166136261u;
    char expect[64];
    int toobig = 0;

    for (size_t i = 0; i < sizeof(chunk); i++)
        chunk[i] = (uint8_t)(i * 13 + 1);
    CU_ASSERT_EQUAL_FATAL(rl_ureq_start(u, "POST", "/up", NULL, 0, -1, &cbs, &a, &a.r), 0);
    while (total < want) {
        int rc = rl_ureq_write(a.r, chunk, sizeof(chunk));
        if (rc == AL_ERR_TOOBIG) {
            toobig++;
            CU_ASSERT(rl_ureq_pending(a.r) > 512 * 1024);
            int w = a.writables;
            rl_ureq_want_writable(a.r, 64 * 1024);
            while (a.writables == w && !a.done)
                ev_run(loop, EVRUN_ONCE);
            CU_ASSERT(rl_ureq_pending(a.r) <= 64 * 1024);
            continue;
        }
        CU_ASSERT_EQUAL_FATAL(rc, 0);
        hash = fnv(hash, chunk, sizeof(chunk));
        total += sizeof(chunk);
    }
    CU_ASSERT(toobig > 0);
    CU_ASSERT(rl_ureq_write(a.r, NULL, 0) == 0);
    CU_ASSERT_EQUAL(rl_ureq_end(a.r), 0);
    CU_ASSERT_EQUAL(rl_ureq_end(a.r), AL_ERR_STATE);
    CU_ASSERT_EQUAL(rl_ureq_write(a.r, chunk, 1), AL_ERR_STATE);
    CU_ASSERT(run_until(&a.done));
    CU_ASSERT_EQUAL(a.ends, 1);
    snprintf(expect, sizeof(expect), "te=chunked conn=keep-alive len=%zu hash=%08x", want, hash);
    CU_ASSERT(body_has(&a, expect));
    res_free(&a);

    /* want_writable with nothing queued fires from the loop */
    CU_ASSERT_EQUAL_FATAL(rl_ureq_start(u, "POST", "/", NULL, 0, 3, &cbs, &a, &a.r), 0);
    rl_ureq_want_writable(a.r, 1 << 20);
    CU_ASSERT_EQUAL(a.writables, 0);
    while (!a.writables && !a.done)
        ev_run(loop, EVRUN_ONCE);
    CU_ASSERT_EQUAL(a.writables, 1);
    /* Content-Length rules */
    CU_ASSERT_EQUAL(rl_ureq_write(a.r, (const uint8_t *)"abcd", 4), AL_ERR_STATE);
    CU_ASSERT_EQUAL(rl_ureq_write(a.r, (const uint8_t *)"ab", 2), 0);
    CU_ASSERT_EQUAL(rl_ureq_end(a.r), AL_ERR_STATE); /* one byte short */
    CU_ASSERT_EQUAL(rl_ureq_write(a.r, (const uint8_t *)"cd", 2), AL_ERR_STATE);
    CU_ASSERT_EQUAL(rl_ureq_write(a.r, (const uint8_t *)"c", 1), 0);
    CU_ASSERT_EQUAL(rl_ureq_end(a.r), 0);
    CU_ASSERT(run_until(&a.done));
    CU_ASSERT(body_has(&a, "cl=3 te=- conn=keep-alive len=3"));
    res_free(&a);
    /* no body: writing is refused */
    CU_ASSERT_EQUAL_FATAL(rl_ureq_start(u, "GET", "/", NULL, 0, 0, &cbs, &a, &a.r), 0);
    CU_ASSERT_EQUAL(rl_ureq_write(a.r, (const uint8_t *)"x", 1), AL_ERR_STATE);
    CU_ASSERT(run_until(&a.done));
    CU_ASSERT_EQUAL(a.ends, 1);
    res_free(&a);
    rl_upstream_free(u);
    srv_stop(s);
}

/* ------------------------------------------------------------ tests: TLS */

static void test_https(void)
{
    struct srv *s = srv_start(M_ECHO, srv_ctx_good);
    char url[96], sni[256];
    struct res a = {0}, b = {0};
    struct rl_upstream *u;

    /* verified against the CA, name checked, SNI sent; the connection is reused */
    snprintf(url, sizeof(url), "https://upstream.test:%d/mcp", s->port);
    u = mk_opts(url, lo_allow, ca_file, 0, 0, 0);
    snprintf(sni, sizeof(sni), "upstream.test:%d", s->port);
    CU_ASSERT_STRING_EQUAL(rl_upstream_destination(u), sni); /* https: no scheme */
    do_req(u, "GET", "/mcp", &a);
    CU_ASSERT_EQUAL(a.ends, 1);
    CU_ASSERT(body_has(&a, "method=GET target=/mcp"));
    pthread_mutex_lock(&s->mu);
    snprintf(sni, sizeof(sni), "%s", s->sni);
    pthread_mutex_unlock(&s->mu);
    CU_ASSERT_STRING_EQUAL(sni, "upstream.test");
    do_post(u, "/mcp", "{}", 0, &b);
    CU_ASSERT_EQUAL(b.ends, 1);
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 1);
    rl_upstream_free(u);
    res_free(&a);
    res_free(&b);

    /* an IP literal: the certificate's IP SAN is checked, no SNI */
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/", s->port);
    u = mk_opts(url, lo_allow, ca_file, 0, 0, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.ends, 1);
    pthread_mutex_lock(&s->mu);
    snprintf(sni, sizeof(sni), "%s", s->sni);
    pthread_mutex_unlock(&s->mu);
    CU_ASSERT_STRING_EQUAL(sni, "");
    rl_upstream_free(u);
    res_free(&a);

    /* a certificate for another name is refused before any request is sent */
    int before = atomic_load(&s->requests);
    snprintf(url, sizeof(url), "https://wrongname.test:%d/", s->port);
    u = mk_opts(url, lo_allow, ca_file, 0, 0, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.errors, 1);
    CU_ASSERT_EQUAL(a.err, AL_ERR_TLS);
    CU_ASSERT_STRING_EQUAL(a.why, "upstream certificate not accepted");
    rl_upstream_free(u);
    res_free(&a);
    CU_ASSERT_EQUAL(atomic_load(&s->requests), before);
    srv_stop(s);

    /* a certificate from a CA the route does not trust */
    s = srv_start(M_ECHO, srv_ctx_other);
    snprintf(url, sizeof(url), "https://upstream.test:%d/", s->port);
    u = mk_opts(url, lo_allow, ca_file, 0, 0, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.err, AL_ERR_TLS);
    rl_upstream_free(u);
    res_free(&a);
    /* ... and accepted with that CA */
    u = mk_opts(url, lo_allow, ca2_file, 0, 0, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.ends, 1);
    rl_upstream_free(u);
    res_free(&a);
    CU_ASSERT_EQUAL(atomic_load(&s->requests), 1);
    srv_stop(s);

    /* plaintext server behind an https URL */
    s = srv_start(M_ECHO, NULL);
    snprintf(url, sizeof(url), "https://upstream.test:%d/", s->port);
    u = mk_opts(url, lo_allow, ca_file, 1, 1, 0);
    do_req(u, "GET", "/", &a);
    CU_ASSERT_EQUAL(a.errors, 1);
    CU_ASSERT(a.err == AL_ERR_TLS || a.err == AL_ERR_TIMEOUT);
    rl_upstream_free(u);
    res_free(&a);
    srv_stop(s);
}

static void test_https_retry_and_pause(void)
{
    /* the reused-connection retry and flow control over TLS */
    struct srv *s = srv_start(M_DROP_SECOND, srv_ctx_good);
    char url[96];
    struct res a = {0}, b = {0};
    struct rl_upstream *u;
    int ok = 1;

    snprintf(url, sizeof(url), "https://upstream.test:%d/", s->port);
    u = mk_opts(url, lo_allow, ca_file, 0, 0, 0);
    do_req(u, "GET", "/1", &a);
    CU_ASSERT_EQUAL(a.ends, 1);
    do_req(u, "GET", "/2", &b);
    CU_ASSERT_EQUAL(b.ends, 1);
    CU_ASSERT_EQUAL(atomic_load(&s->accepts), 2);
    res_free(&a);
    res_free(&b);
    atomic_store(&s->mode, M_BIG);
    s->big_len = 300000;
    a.pause_on_data = 1;
    CU_ASSERT_EQUAL_FATAL(rl_ureq_start(u, "GET", "/", NULL, 0, 0, &cbs, &a, &a.r), 0);
    CU_ASSERT(run_until(&a.datas));
    size_t got = a.len;
    spin(50);
    CU_ASSERT_EQUAL(a.len, got);
    rl_ureq_resume(a.r);
    CU_ASSERT(run_until(&a.done));
    CU_ASSERT_EQUAL(a.len, 300000);
    for (size_t i = 0; i < a.len; i++)
        ok &= a.body[i] == (uint8_t)(i * 7);
    CU_ASSERT(ok);
    rl_upstream_free(u);
    res_free(&a);
    srv_stop(s);
}

/* ------------------------------------------------------------ suite */

static int suite_init(void)
{
    char servers[64];
    signal(SIGPIPE, SIG_IGN);
    if (!getenv("AL_TEST_LOG"))
        al_log_set_level_name("off"); /* expected errors would split CUnit's lines */
    loop = EV_DEFAULT;
    ev_timer_init(&tick, tick_cb, 0.01, 0.01);
    ev_timer_start(loop, &tick);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/rl_upstream_XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    dns_start();
    if (al_resolver_new(loop, &resolver) != 0)
        return 1;
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", dns.port);
    if (al_resolver_set_servers(resolver, servers) != 0)
        return 1;
    pki_init();
    return 0;
}

static int suite_clean(void)
{
    al_resolver_free(resolver);
    dns_stop();
    SSL_CTX_free(srv_ctx_good);
    SSL_CTX_free(srv_ctx_other);
    unlink(ca_file);
    unlink(ca2_file);
    rmdir(tmpdir);
    ev_timer_stop(loop, &tick);
    return 0;
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("relay upstream", suite_init, suite_clean);
    CU_add_test(s, "URL parsing and options", test_url);
    CU_add_test(s, "request validation", test_request_validation);
    CU_add_test(s, "GET, POST (length and chunked), DELETE", test_get_post);
    CU_add_test(s, "chunked response", test_chunked_response);
    CU_add_test(s, "Content-Length response", test_content_length_response);
    CU_add_test(s, "close-delimited response", test_close_delimited);
    CU_add_test(s, "1xx interim responses skipped", test_interim_skipped);
    CU_add_test(s, "HEAD and 204 without body", test_head_and_204);
    CU_add_test(s, "keep-alive reuse", test_keepalive_reuse);
    CU_add_test(s, "pooled connection closed by the server", test_pooled_closed_by_server);
    CU_add_test(s, "pool idle expiry", test_pool_idle_expiry);
    CU_add_test(s, "Keep-Alive timeout hint", test_keepalive_hint);
    CU_add_test(s, "retry rules (GET retried, POST not)", test_retry_rules);
    CU_add_test(s, "head and idle timeouts", test_timeouts);
    CU_add_test(s, "malformed responses and content codings", test_malformed);
    CU_add_test(s, "bytes after a response", test_bytes_after_response);
    CU_add_test(s, "response head limits", test_head_too_big);
    CU_add_test(s, "address policy when dialing", test_address_policy);
    CU_add_test(s, "unresolvable name, refused connection", test_resolution_and_connect_errors);
    CU_add_test(s, "connect timeout, per-address share", test_connect_timeout);
    CU_add_test(s, "pause and resume", test_pause_resume);
    CU_add_test(s, "cancel and free", test_cancel);
    CU_add_test(s, "request body backpressure", test_backpressure);
    CU_add_test(s, "https verified, wrong name and CA refused", test_https);
    CU_add_test(s, "https retry and pause", test_https_retry_and_pause);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
