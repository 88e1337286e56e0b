/*
 * Unit tests for the control message handling of the proxy (job.c) with
 * the real connection code behind it, in one process: a libev loop runs the
 * proxy on one end of a SOCK_SEQPACKET socketpair while the test plays the
 * executor on the other, and clients in a thread connect to a listener the
 * test hands over with JobListen.
 *
 * Covered: JobOpen answered with a CA only when something is intercepted,
 * and with a precise error for every kind of bad input (nothing opened);
 * JobListen with descriptors that are not listening sockets; JobGrant;
 * JobCredentials (fresh values by placeholder, entries that do not fit);
 * JobClose (counters) and a JobClose for an unknown job; CONNECT refusals
 * with their status, reason and Use record (outside the policy, a name
 * resolving to loopback, a placeholder in the CONNECT); an intercepted
 * CONNECT whose TLS handshake uses the job's CA, then a request with a
 * placeholder out of its slot refused inside the tunnel; and the audit
 * queue full: a request that could not be recorded is refused 503 and
 * denials beyond the bound are counted in JobClosed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "al_err.h"
#include "al_log.h"
#include "egress.h"
#include "job.h"

#define GUARD_S 20.0
#define PH_A    "AIRLOCK_PH_0123456789abcdef0123456789abcdef"

static struct eg_proxy P;
static int peer = -1; /* the executor's end */

static void add_static(const char *name, const char *addr)
{
    struct eg_static *s = &P.statics[P.nstatics++];
    struct sockaddr_in *a = (struct sockaddr_in *)&s->addr[0];

    snprintf(s->name, sizeof(s->name), "%s", name);
    a->sin_family = AF_INET;
    inet_pton(AF_INET, addr, &a->sin_addr);
    s->len[0] = sizeof(*a);
    s->n = 1;
}

static int setup(void)
{
    int sv[2];

    al_log_set_level_name("error");
    P.loop = ev_default_loop(0);
    P.connect_timeout_s = 2;
    if (al_resolver_new(P.loop, &P.resolver) < 0)
        return 1;
    add_static("api.test", "10.255.255.1");
    add_static("loop.test", "127.0.0.1");
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0)
        return 1;
    peer = sv[1];
    return eg_ctl_new(P.loop, sv[0], 0, &eg_job_ctl_cbs, &P, &P.ctl) < 0;
}

static int teardown(void)
{
    close(peer);
    for (int i = 0; i < 20; i++)
        ev_run(P.loop, EVRUN_NOWAIT);
    eg_ctl_free(P.ctl);
    al_resolver_free(P.resolver);
    for (int i = 0; i < 200 && (P.dead || P.dying); i++)
        ev_run(P.loop, EVRUN_NOWAIT);
    return 0;
}

/* ------------------------------------------------------------ the executor */

static void send_msg(const Airlock__Internal__EgressMsg *m, int fd)
{
    uint8_t buf[65536];
    size_t n = airlock__internal__egress_msg__pack(m, buf);
    union {
        struct cmsghdr a;
        char b[CMSG_SPACE(sizeof(int))];
    } u;
    struct iovec iov = {buf, n};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

    if (fd >= 0) {
        mh.msg_control = u.b;
        mh.msg_controllen = sizeof(u.b);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    }
    CU_ASSERT_EQUAL(sendmsg(peer, &mh, 0), (ssize_t)n);
}

static Airlock__Internal__EgressMsg *recv_msg(void)
{
    uint8_t buf[1 << 16];
    ssize_t n = recv(peer, buf, sizeof(buf), MSG_DONTWAIT);

    return n > 0 ? airlock__internal__egress_msg__unpack(NULL, (size_t)n, buf) : NULL;
}

/* Runs the loop until the proxy sends a message of case want (others, Use
 * records included, are kept in uses when given). */
static Airlock__Internal__EgressMsg *wait_msg(int want, Airlock__Internal__EgressMsg **uses,
                                              size_t *nuses)
{
    ev_tstamp end = ev_time() + GUARD_S;

    while (ev_time() < end) {
        Airlock__Internal__EgressMsg *m = recv_msg();
        if (!m) {
            ev_run(P.loop, EVRUN_ONCE | EVRUN_NOWAIT);
            usleep(500);
            continue;
        }
        if ((int)m->msg_case == want)
            return m;
        if (uses && *nuses < 64 && m->msg_case == AIRLOCK__INTERNAL__EGRESS_MSG__MSG_USE)
            uses[(*nuses)++] = m;
        else
            airlock__internal__egress_msg__free_unpacked(m, NULL);
    }
    return NULL;
}

static void free_msg(Airlock__Internal__EgressMsg *m)
{
    airlock__internal__egress_msg__free_unpacked(m, NULL);
}

static Airlock__Internal__EgressDestination *dest(const char *host, int port, const char *cidr)
{
    static Airlock__Internal__EgressDestination d[32];
    static char *cidrs[32];
    static int n;
    Airlock__Internal__EgressDestination *x = &d[n % 32];

    airlock__internal__egress_destination__init(x);
    x->host = (char *)host;
    x->port = port;
    if (cidr) {
        cidrs[n % 32] = (char *)cidr;
        x->allow_cidrs = &cidrs[n % 32];
        x->n_allow_cidrs = 1;
    }
    n++;
    return x;
}

struct job_spec {
    const char *job;
    Airlock__Internal__EgressDestination *ceiling[4], *dests[4];
    size_t nceiling, ndests;
    Airlock__Internal__EgressCredential *creds[2];
    size_t ncreds;
    Airlock__Internal__EgressLimits *limits;
};

static Airlock__Internal__JobOpened *open_job(const struct job_spec *s,
                                              Airlock__Internal__EgressMsg **keep)
{
    Airlock__Internal__JobOpen o = AIRLOCK__INTERNAL__JOB_OPEN__INIT;
    Airlock__Internal__EgressMsg m = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;

    o.job = (char *)s->job;
    o.grant_id = "g-1";
    o.ceiling = (Airlock__Internal__EgressDestination **)s->ceiling;
    o.n_ceiling = s->nceiling;
    o.destinations = (Airlock__Internal__EgressDestination **)s->dests;
    o.n_destinations = s->ndests;
    o.credentials = (Airlock__Internal__EgressCredential **)s->creds;
    o.n_credentials = s->ncreds;
    o.limits = s->limits;
    m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_OPEN;
    m.open = &o;
    send_msg(&m, -1);
    *keep = wait_msg(AIRLOCK__INTERNAL__EGRESS_MSG__MSG_OPENED, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(*keep);
    CU_ASSERT_STRING_EQUAL((*keep)->opened->job, s->job);
    return (*keep)->opened;
}

static Airlock__Internal__EgressCredential *bearer(const char *ph, const char *value,
                                                   const char *bind)
{
    static Airlock__Internal__EgressCredential c[8];
    static char *binds[8];
    static int n;
    Airlock__Internal__EgressCredential *x = &c[n % 8];

    airlock__internal__egress_credential__init(x);
    x->credential = "tok";
    x->placeholder = (char *)ph;
    binds[n % 8] = (char *)bind;
    x->destinations = &binds[n % 8];
    x->n_destinations = 1;
    x->type = 1;
    x->value.data = (uint8_t *)value;
    x->value.len = strlen(value);
    x->expires_unix_ms = (int64_t)(ev_time() * 1000) + 600000;
    n++;
    return x;
}

static void close_job(const char *job, Airlock__Internal__JobClosed *out)
{
    Airlock__Internal__JobClose c = AIRLOCK__INTERNAL__JOB_CLOSE__INIT;
    Airlock__Internal__EgressMsg m = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;
    Airlock__Internal__EgressMsg *r;

    c.job = (char *)job;
    m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_CLOSE;
    m.close = &c;
    send_msg(&m, -1);
    r = wait_msg(AIRLOCK__INTERNAL__EGRESS_MSG__MSG_CLOSED, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->closed->job, job);
    if (out) {
        *out = *r->closed;
        out->job = NULL;
    }
    free_msg(r);
}

/* A listener on 127.0.0.1 handed to job; returns its port. */
static int listen_job(const char *job)
{
    Airlock__Internal__JobListen l = AIRLOCK__INTERNAL__JOB_LISTEN__INIT;
    Airlock__Internal__EgressMsg m = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    CU_ASSERT_FATAL(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
                    listen(fd, 16) == 0 && getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    l.job = (char *)job;
    m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_LISTEN;
    m.listen = &l;
    send_msg(&m, fd);
    close(fd);
    return ntohs(a.sin_port);
}

/* ------------------------------------------------------------- JobOpen */

static void expect_open_error(struct job_spec *s, const char *part)
{
    Airlock__Internal__EgressMsg *keep;
    Airlock__Internal__JobOpened *o = open_job(s, &keep);

    CU_ASSERT(strstr(o->error, part) != NULL);
    if (!strstr(o->error, part))
        fprintf(stderr, "\n  error \"%s\", want \"%s\"\n", o->error, part);
    CU_ASSERT_STRING_EQUAL(o->ca_cert_pem, "");
    CU_ASSERT_PTR_NULL(eg_job_find(&P, s->job));
    free_msg(keep);
}

static void test_open(void)
{
    Airlock__Internal__EgressMsg *keep;
    Airlock__Internal__JobOpened *o;
    struct job_spec plain = {.job = "plain/1",
                             .ceiling = {dest("free.test", 443, NULL)},
                             .nceiling = 1,
                             .dests = {dest("free.test", 443, NULL)},
                             .ndests = 1};
    struct job_spec cred = plain;

    o = open_job(&plain, &keep);
    CU_ASSERT_STRING_EQUAL(o->error, "");
    CU_ASSERT_STRING_EQUAL(o->ca_cert_pem, ""); /* nothing to intercept: no CA */
    free_msg(keep);
    o = open_job(&plain, &keep);
    CU_ASSERT(strstr(o->error, "already open") != NULL);
    free_msg(keep);
    cred.job = "cred/1";
    cred.creds[0] = bearer(PH_A, "a-long-enough-token", "free.test");
    cred.ncreds = 1;
    o = open_job(&cred, &keep);
    CU_ASSERT_STRING_EQUAL(o->error, "");
    CU_ASSERT(strncmp(o->ca_cert_pem, "-----BEGIN CERTIFICATE-----", 27) == 0);
    free_msg(keep);
    close_job("cred/1", NULL);
    close_job("plain/1", NULL);

    struct job_spec bad = cred;
    bad.job = "bad/1";
    bad.creds[0] = bearer(PH_A, "short", "free.test");
    expect_open_error(&bad, "credential 0 (tok): the value is too short");
    bad.creds[0] = bearer("AIRLOCK_PH_xyz", "a-long-enough-token", "free.test");
    expect_open_error(&bad, "placeholder");
    bad.creds[0] = bearer(PH_A, "a-long-enough-token", "free.test");
    bad.creds[1] = bearer(PH_A, "another-long-token", "free.test");
    bad.ncreds = 2;
    expect_open_error(&bad, "share a placeholder");
    bad.ncreds = 1;
    bad.creds[0]->expires_unix_ms = 0;
    expect_open_error(&bad, "no expiry");
    bad.ncreds = 0;
    bad.ceiling[0] = dest("free.test", 443, "10.0.0.1/8");
    expect_open_error(&bad, "ceiling entry 0 (free.test): allow_cidrs");
    bad.ceiling[0] = dest("free.test", 443, NULL);
    bad.dests[0] = dest("bad host", 443, NULL);
    expect_open_error(&bad, "destination entry 0 (bad host): host");
    bad.dests[0] = dest("free.test", 0, NULL);
    expect_open_error(&bad, "port");
    bad.job = "";
    expect_open_error(&bad, "job id");
}

static int open_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++)
        n += fcntl(fd, F_GETFD) >= 0;
    return n;
}

static void test_listen_grant_close(void)
{
    Airlock__Internal__EgressMsg *keep;
    Airlock__Internal__JobListen l = AIRLOCK__INTERNAL__JOB_LISTEN__INIT;
    Airlock__Internal__JobGrant g = AIRLOCK__INTERNAL__JOB_GRANT__INIT;
    Airlock__Internal__EgressMsg m = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;
    Airlock__Internal__JobClosed closed;
    struct job_spec s = {.job = "lgc/1",
                         .ceiling = {dest("free.test", 443, NULL)},
                         .nceiling = 1,
                         .dests = {dest("free.test", 443, NULL)},
                         .ndests = 1};
    int p[2], before;

    free_msg((open_job(&s, &keep), keep));
    before = open_fds();
    /* a pipe is no listening socket: closed again, the job has none */
    CU_ASSERT_EQUAL_FATAL(pipe(p), 0);
    l.job = "lgc/1";
    m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_LISTEN;
    m.listen = &l;
    send_msg(&m, p[0]);
    g.job = "lgc/1";
    g.grant_id = "g-2";
    g.expires_unix_ms = (int64_t)(ev_time() * 1000) + 60000;
    m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_GRANT;
    m.grant = &g;
    send_msg(&m, -1);
    close_job("lgc/1", &closed);             /* messages are handled in order */
    CU_ASSERT_EQUAL(open_fds(), before + 2); /* the pipe's two ends: the copy sent is closed */
    close(p[0]);
    close(p[1]);
    CU_ASSERT_EQUAL(closed.connections, 0);
    close_job("never-opened/1", &closed);
    CU_ASSERT_EQUAL(closed.requests, 0);
}

/* JobCredentials: fresh values replace the ones in use by placeholder; an
 * entry that does not fit leaves the credential as it was. */
static void send_creds(const char *job, Airlock__Internal__EgressCredential **c, size_t n)
{
    Airlock__Internal__JobCredentials jc = AIRLOCK__INTERNAL__JOB_CREDENTIALS__INIT;
    Airlock__Internal__EgressMsg m = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;

    jc.job = (char *)job;
    jc.credentials = c;
    jc.n_credentials = n;
    m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_CREDENTIALS;
    m.credentials = &jc;
    send_msg(&m, -1);
}

/* Handles everything sent so far (messages are processed in order: a
 * JobClose for an unknown job is answered after them). */
static void sync_ctl(void)
{
    close_job("sync/1", NULL);
}

static void test_credentials(void)
{
    Airlock__Internal__EgressMsg *keep;
    Airlock__Internal__EgressCredential *c[3];
    struct job_spec s = {.job = "rc/1",
                         .ceiling = {dest("free.test", 443, NULL)},
                         .nceiling = 1,
                         .dests = {dest("free.test", 443, NULL)},
                         .ndests = 1};
    struct eg_job *j;
    struct eg_scrubset *before;

    s.creds[0] = bearer(PH_A, "first-value-of-the-token", "free.test");
    s.creds[0]->version = 1;
    s.ncreds = 1;
    free_msg((open_job(&s, &keep), keep));
    j = eg_job_find(&P, "rc/1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(j->creds[0].version, 1);
    before = j->resp;
    CU_ASSERT_PTR_NOT_NULL(before);

    /* a fresh value (a rotated version): replaced, scrubber rebuilt */
    c[0] = bearer(PH_A, "second-value-of-the-token", "free.test");
    c[0]->version = 2;
    c[0]->credstore_expires_unix_ms = c[0]->expires_unix_ms;
    send_creds("rc/1", c, 1);
    sync_ctl();
    CU_ASSERT_EQUAL(j->creds[0].version, 2);
    CU_ASSERT_EQUAL(j->creds[0].value_len, strlen("second-value-of-the-token"));
    CU_ASSERT(j->creds[0].value &&
              memcmp(j->creds[0].value, "second-value-of-the-token", j->creds[0].value_len) == 0);
    CU_ASSERT_EQUAL(j->creds[0].credstore_expires_ms, c[0]->credstore_expires_unix_ms);
    CU_ASSERT_PTR_NOT_NULL(j->resp);

    /* the same value again (the usual refresh): new expiries, nothing moved */
    {
        const uint8_t *held = j->creds[0].value;
        struct eg_scrubset *set = j->resp;
        c[0] = bearer(PH_A, "second-value-of-the-token", "free.test");
        c[0]->version = 2;
        c[0]->expires_unix_ms += 1000;
        c[0]->credstore_expires_unix_ms = c[0]->expires_unix_ms;
        send_creds("rc/1", c, 1);
        sync_ctl();
        CU_ASSERT_PTR_EQUAL(j->creds[0].value, held);
        CU_ASSERT_PTR_EQUAL(j->resp, set);
        CU_ASSERT_EQUAL(j->creds[0].expires_ms, c[0]->expires_unix_ms);
    }

    /* entries that do not fit: a value too short to scrub, an unknown
     * placeholder, another credential's name: nothing changes */
    c[0] = bearer(PH_A, "short", "free.test");
    c[0]->version = 3;
    c[1] = bearer("AIRLOCK_PH_ffffffffffffffffffffffffffffffff", "third-value-of-the-token",
                  "free.test");
    c[2] = bearer(PH_A, "fourth-value-of-the-token", "free.test");
    c[2]->credential = "another";
    c[2]->version = 4;
    send_creds("rc/1", c, 3);
    send_creds("no-such-job/1", c, 1);
    sync_ctl();
    CU_ASSERT_EQUAL(j->creds[0].version, 2);
    CU_ASSERT(j->creds[0].value &&
              memcmp(j->creds[0].value, "second-value-of-the-token", j->creds[0].value_len) == 0);

    /* an expired value comes back with a fresh one */
    eg_cred_expire(&j->creds[0]);
    c[0] = bearer(PH_A, "fifth-value-of-the-token", "free.test");
    c[0]->version = 5;
    send_creds("rc/1", c, 1);
    sync_ctl();
    CU_ASSERT_EQUAL(j->creds[0].version, 5);
    CU_ASSERT_PTR_NOT_NULL(j->creds[0].value);
    close_job("rc/1", NULL);
}

/* ------------------------------------------------------------ connections */

struct client {
    int port;
    char send[1024];
    char reply[4096];
    size_t got;
    const char *ca_pem; /* TLS inside the tunnel after a 200 */
    char inner[512];
    char inner_reply[2048];
    atomic_int done;
};

static ssize_t read_head(int fd, char *buf, size_t cap)
{
    size_t n = 0;

    while (n + 1 < cap) {
        ssize_t r = recv(fd, buf + n, 1, 0);
        if (r <= 0)
            break;
        n++;
        if (n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    buf[n] = '\0';
    return (ssize_t)n;
}

static void inner_tls(struct client *c, int fd)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    BIO *b = BIO_new_mem_buf(c->ca_pem, -1);
    X509 *ca = PEM_read_bio_X509(b, NULL, NULL, NULL);
    SSL *ssl;
    int n, k = 0;

    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "api.test");
    SSL_set1_host(ssl, "api.test");
    if (SSL_connect(ssl) == 1) {
        SSL_write(ssl, c->inner, (int)strlen(c->inner));
        while (k + 1 < (int)sizeof(c->inner_reply) &&
               (n = SSL_read(ssl, c->inner_reply + k, (int)sizeof(c->inner_reply) - 1 - k)) > 0)
            k += n;
    } else {
        snprintf(c->inner_reply, sizeof(c->inner_reply), "handshake failed");
    }
    c->inner_reply[k > 0 ? k : (int)strlen(c->inner_reply)] = '\0';
    SSL_free(ssl);
    X509_free(ca);
    BIO_free(b);
    SSL_CTX_free(ctx);
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)c->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {15, 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
        send(fd, c->send, strlen(c->send), MSG_NOSIGNAL);
        if (c->ca_pem) {
            read_head(fd, c->reply, sizeof(c->reply));
            if (strncmp(c->reply, "HTTP/1.1 200", 12) == 0)
                inner_tls(c, fd);
        } else {
            ssize_t r;
            while (c->got + 1 < sizeof(c->reply) &&
                   (r = recv(fd, c->reply + c->got, sizeof(c->reply) - 1 - c->got, 0)) > 0)
                c->got += (size_t)r;
            c->reply[c->got] = '\0';
        }
    }
    close(fd);
    atomic_store(&c->done, 1);
    return NULL;
}

/* Runs a client against the proxy while the loop turns; collects Use
 * records sent meanwhile. */
static void run_client(struct client *c, Airlock__Internal__EgressMsg **uses, size_t *nuses)
{
    pthread_t th;
    ev_tstamp end = ev_time() + GUARD_S;

    pthread_create(&th, NULL, client_main, c);
    while (!atomic_load(&c->done) && ev_time() < end) {
        Airlock__Internal__EgressMsg *m = recv_msg();
        if (m && *nuses < 64)
            uses[(*nuses)++] = m;
        else if (m)
            free_msg(m);
        ev_run(P.loop, EVRUN_ONCE | EVRUN_NOWAIT);
        usleep(200);
    }
    pthread_join(th, NULL);
    for (int i = 0; i < 50; i++) { /* the records of what just ended */
        Airlock__Internal__EgressMsg *m = recv_msg();
        if (m && *nuses < 64)
            uses[(*nuses)++] = m;
        else if (m)
            free_msg(m);
        ev_run(P.loop, EVRUN_NOWAIT);
    }
}

static const Airlock__Internal__Use *find_use(Airlock__Internal__EgressMsg **u, size_t n,
                                              const char *reason)
{
    for (size_t i = 0; i < n; i++)
        if (u[i]->msg_case == AIRLOCK__INTERNAL__EGRESS_MSG__MSG_USE &&
            strstr(u[i]->use->reason, reason))
            return u[i]->use;
    return NULL;
}

static void free_uses(Airlock__Internal__EgressMsg **u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free_msg(u[i]);
}

static void connect_denied(int port, const char *req, const char *status, const char *reason,
                           int exfil)
{
    struct client c = {.port = port};
    Airlock__Internal__EgressMsg *uses[64];
    size_t n = 0;
    const Airlock__Internal__Use *u;

    snprintf(c.send, sizeof(c.send), "%s", req);
    run_client(&c, uses, &n);
    CU_ASSERT(strncmp(c.reply, status, strlen(status)) == 0);
    CU_ASSERT(strstr(c.reply, reason) != NULL);
    u = find_use(uses, n, reason);
    CU_ASSERT_PTR_NOT_NULL(u);
    if (!u || !strstr(c.reply, reason))
        fprintf(stderr, "\n  reply \"%.200s\" records %zu, want %s\n", c.reply, n, reason);
    if (u) {
        CU_ASSERT(!u->allowed);
        CU_ASSERT_EQUAL(u->exfiltration, exfil);
        CU_ASSERT_STRING_EQUAL(u->job, "conn/1");
    }
    free_uses(uses, n);
}

static void test_connect_denials(void)
{
    Airlock__Internal__EgressMsg *keep;
    Airlock__Internal__JobOpened *o;
    struct job_spec s = {.job = "conn/1",
                         .ceiling = {dest("api.test", 443, "10.255.255.0/24"),
                                     dest("loop.test", 443, "127.0.0.0/8")},
                         .nceiling = 2,
                         .dests = {dest("api.test", 443, NULL), dest("loop.test", 443, NULL)},
                         .ndests = 2};
    char req[512];
    int port;

    s.creds[0] = bearer(PH_A, "the-real-secret-value", "api.test");
    s.ncreds = 1;
    o = open_job(&s, &keep);
    CU_ASSERT_STRING_EQUAL_FATAL(o->error, "");
    port = listen_job("conn/1");
    connect_denied(port, "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n",
                   "HTTP/1.1 403", "evil.test:443 is not an allowed destination for this job", 0);
    connect_denied(port, "CONNECT loop.test:443 HTTP/1.1\r\nHost: loop.test:443\r\n\r\n",
                   "HTTP/1.1 403", "loop.test:443 resolves only to denied addresses (127.0.0.1)",
                   0);
    snprintf(req, sizeof(req),
             "CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\nX-T: %s\r\n\r\n", PH_A);
    connect_denied(port, req, "HTTP/1.1 403", "placeholder of credential tok in the CONNECT", 1);
    connect_denied(port, "CONNECT api.test HTTP/1.1\r\nHost: api.test\r\n\r\n", "HTTP/1.1 400",
                   "a port is required", 0);
    connect_denied(port, "GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n", "HTTP/1.1 400",
                   "this is a forward proxy", 0);
    connect_denied(port,
                   "GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\nContent-Length: 1\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                   "HTTP/1.1 400", "Content-Length", 0);

    /* intercepted: the job's CA, then a placeholder out of its slot inside */
    struct client c = {.port = port, .ca_pem = o->ca_cert_pem};
    Airlock__Internal__EgressMsg *uses[64];
    size_t n = 0;
    snprintf(c.send, sizeof(c.send), "CONNECT api.test:443 HTTP/1.1\r\nHost: api.test\r\n\r\n");
    snprintf(c.inner, sizeof(c.inner),
             "GET /x HTTP/1.1\r\nHost: api.test\r\nX-Leak: %s\r\nConnection: close\r\n\r\n", PH_A);
    run_client(&c, uses, &n);
    CU_ASSERT(strncmp(c.reply, "HTTP/1.1 200", 12) == 0);
    CU_ASSERT(strncmp(c.inner_reply, "HTTP/1.1 403", 12) == 0);
    CU_ASSERT(strstr(c.inner_reply, "in header x-leak") != NULL);
    const Airlock__Internal__Use *u = find_use(uses, n, "in header x-leak");
    CU_ASSERT_PTR_NOT_NULL(u);
    if (u) {
        CU_ASSERT(u->exfiltration);
        CU_ASSERT_STRING_EQUAL(u->credential, "tok");
        CU_ASSERT_STRING_EQUAL(u->destination, "api.test:443");
        CU_ASSERT_STRING_EQUAL(u->path, "/x");
    }
    free_uses(uses, n);
    free_msg(keep);
    Airlock__Internal__JobClosed closed;
    close_job("conn/1", &closed);
    CU_ASSERT_EQUAL(closed.connections, 7);
    CU_ASSERT_EQUAL(closed.denied, 7);
}

static void test_audit_queue_full(void)
{
    Airlock__Internal__EgressMsg *keep, *uses[64];
    Airlock__Internal__JobClosed closed;
    struct job_spec s = {.job = "full/1",
                         .ceiling = {dest("api.test", 443, "10.255.255.0/24")},
                         .nceiling = 1,
                         .dests = {dest("api.test", 443, NULL)},
                         .ndests = 1};
    struct client c = {0};
    size_t n = 0, held = 0;
    int port;

    free_msg((open_job(&s, &keep), keep));
    port = listen_job("full/1");
    while (eg_ctl_reserve(P.ctl) == 0) /* the executor reads nothing: the queue is full */
        held++;
    CU_ASSERT(held > 0);
    c.port = port;
    snprintf(c.send, sizeof(c.send), "CONNECT api.test:443 HTTP/1.1\r\nHost: api.test\r\n\r\n");
    run_client(&c, uses, &n);
    CU_ASSERT(strncmp(c.reply, "HTTP/1.1 503", 12) == 0);
    CU_ASSERT(strstr(c.reply, "the audit queue is full") != NULL);
    CU_ASSERT_PTR_NULL(find_use(uses, n, "audit queue")); /* could not be recorded */
    free_uses(uses, n);
    while (held--)
        eg_ctl_release(P.ctl);
    close_job("full/1", &closed);
    CU_ASSERT_EQUAL(closed.uses_dropped, 1);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    signal(SIGPIPE, SIG_IGN);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("egress control messages and connections", setup, teardown);
    CU_add_test(s, "JobOpen: CA when intercepting, errors for bad input", test_open);
    CU_add_test(s, "JobListen, JobGrant, JobClose", test_listen_grant_close);
    CU_add_test(s, "JobCredentials: fresh values replace the ones in use", test_credentials);
    CU_add_test(s, "CONNECT refusals and an intercepted request", test_connect_denials);
    CU_add_test(s, "audit queue full: 503, drops counted", test_audit_queue_full);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
