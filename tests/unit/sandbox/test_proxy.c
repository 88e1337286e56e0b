/* Unit tests for the sandbox side of the egress proxy (sb_request.proxy_port,
 * on_listen; net.c, spawn.c, child.c) with real sandboxes (needs root;
 * skipped loudly otherwise): the listeners init makes and hands out, the
 * command talking to them over 127.0.0.1 and [::1] while this test accepts
 * on its loop, ordinary clients (curl, python urllib, git, node) going
 * through them as through a proxy, every other destination unreachable, the
 * port not bindable by the job, the job's descriptors, refusals, a CA bundle
 * bound over the image's /etc/ssl/certs/ca-certificates.crt, and no
 * descriptor leak when init ends early or the job is killed. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <ev.h>

#include "al_err.h"
#include "sandbox.h"

#define PORT 3128 /* inside each sandbox's own network namespace */

static struct sb_host *host;
static struct ev_loop *loop;
static struct sb_config cfg;
static int have_ipv6; /* the host has IPv6, so new namespaces do too */

/* One connection accepted from a job: read until a request is complete,
 * answer, close. */
struct conn {
    ev_io w;
    int fd;
    char buf[8192];
    size_t len;
    struct job *job;
    struct conn *next, **prev; /* live connections */
};

static struct conn *conns;

struct job {
    /* listeners, as on_listen gave them (closed by the test: -1) */
    int lfd[2];
    size_t n_lfd;
    ev_io lw[2];
    int listens, exits, listen_after_exit;
    int close_after; /* close the listeners after this many answered connections */
    int answered, accepted;
    int netns;              /* the sandbox's network namespace, opened in on_listen */
    int close_in_on_listen; /* take the descriptors and close them at once */
    char seen[4096];        /* request lines received, one per line */
    size_t seen_len;
    char out[65536];
    size_t out_len;
    char err[16384];
    size_t err_len;
    struct sb_result res;
    struct sb_child *child;
};

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    for (struct dirent *e = readdir(d); e; e = readdir(d))
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static void close_listeners(struct job *j)
{
    for (size_t i = 0; i < j->n_lfd; i++)
        if (j->lfd[i] >= 0) {
            ev_io_stop(loop, &j->lw[i]);
            close(j->lfd[i]);
            j->lfd[i] = -1;
        }
}

static void seen_line(struct job *j, const char *line, size_t n)
{
    if (j->seen_len + n + 1 < sizeof(j->seen)) {
        memcpy(j->seen + j->seen_len, line, n);
        j->seen_len += n;
        j->seen[j->seen_len++] = '\n';
        j->seen[j->seen_len] = '\0';
    }
}

/* The answer once c->buf holds a whole request, else NULL (len set):
 *   "ping..." line         -> "pong:<line>\n"
 *   CONNECT                -> 403 (a tunnel this test does not make)
 *   GET <...>/repo.git/... -> 404 (git then reports "not found")
 *   other HTTP request     -> 200 with "hello <target>\n" */
static const char *answer(struct conn *c, char *out, size_t cap, size_t *len)
{
    char *eol = memchr(c->buf, '\n', c->len);
    if (!eol)
        return NULL;
    if (c->len >= 4 && memcmp(c->buf, "ping", 4) == 0) {
        seen_line(c->job, c->buf, (size_t)(eol - c->buf));
        *len = (size_t)snprintf(out, cap, "pong:%.*s\n", (int)(eol - c->buf), c->buf);
        return out;
    }
    c->buf[c->len < sizeof(c->buf) ? c->len : sizeof(c->buf) - 1] = '\0';
    if (!strstr(c->buf, "\r\n\r\n"))
        return NULL;
    size_t line = (size_t)(eol - c->buf) - (eol > c->buf && eol[-1] == '\r');
    seen_line(c->job, c->buf, line);
    char target[512] = "";
    sscanf(c->buf, "%*s %511s", target);
    if (strncmp(c->buf, "CONNECT ", 8) == 0)
        *len = (size_t)snprintf(out, cap,
                                "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                                "Connection: close\r\n\r\n");
    else if (strstr(target, "/repo.git/"))
        *len = (size_t)snprintf(out, cap,
                                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                                "Connection: close\r\n\r\n");
    else
        *len = (size_t)snprintf(out, cap,
                                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                "Content-Length: %zu\r\nConnection: close\r\n\r\nhello %s\n",
                                strlen(target) + 7, target);
    return out;
}

static void conn_end(struct conn *c)
{
    ev_io_stop(loop, &c->w);
    close(c->fd);
    *c->prev = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

/* Ends the connections still open when a job ended (none if the job read
 * every answer). */
static void conns_end_all(void)
{
    while (conns)
        conn_end(conns);
}

static void on_conn(struct ev_loop *l, ev_io *w, int revents)
{
    struct conn *c = w->data;
    char out[1024];
    size_t len = 0;
    (void)l;
    (void)revents;
    ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) {
        conn_end(c);
        return;
    }
    c->len += (size_t)n;
    if (!answer(c, out, sizeof(out), &len)) {
        if (c->len >= sizeof(c->buf) - 1)
            conn_end(c);
        return;
    }
    CU_ASSERT_EQUAL(write(c->fd, out, len), (ssize_t)len);
    struct job *j = c->job;
    conn_end(c);
    if (++j->answered == j->close_after)
        close_listeners(j);
}

static void on_accept(struct ev_loop *l, ev_io *w, int revents)
{
    struct job *j = w->data;
    (void)revents;
    int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    struct conn *c = calloc(1, sizeof(*c));
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    c->fd = fd;
    c->job = j;
    c->next = conns;
    c->prev = &conns;
    if (conns)
        conns->prev = &c->next;
    conns = c;
    j->accepted++;
    ev_io_init(&c->w, on_conn, fd, EV_READ);
    c->w.data = c;
    ev_io_start(l, &c->w);
}

static void on_output(struct sb_child *c, enum sb_stream s, const uint8_t *data, size_t len,
                      int64_t offset, void *user)
{
    struct job *j = user;
    (void)c;
    (void)offset;
    char *buf = s == SB_STDERR ? j->err : j->out;
    size_t *have = s == SB_STDERR ? &j->err_len : &j->out_len;
    size_t cap = s == SB_STDERR ? sizeof(j->err) : sizeof(j->out);
    if (*have + len < cap) {
        memcpy(buf + *have, data, len);
        *have += len;
        buf[*have] = '\0';
    }
}

static void on_listen(struct sb_child *c, const int *fds, size_t n, void *user)
{
    struct job *j = user;
    char path[64];
    j->listens++;
    j->listen_after_exit |= j->exits > 0;
    snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)sb_child_pid(c));
    if (j->netns < 0)
        j->netns = open(path, O_RDONLY | O_CLOEXEC);
    j->n_lfd = n;
    for (size_t i = 0; i < n && i < 2; i++) {
        j->lfd[i] = fds[i];
        if (j->close_in_on_listen)
            continue;
        CU_ASSERT_EQUAL(fcntl(fds[i], F_SETFL, O_NONBLOCK), 0);
        ev_io_init(&j->lw[i], on_accept, fds[i], EV_READ);
        j->lw[i].data = j;
        ev_io_start(loop, &j->lw[i]);
    }
    if (j->close_in_on_listen)
        for (size_t i = 0; i < n && i < 2; i++) {
            close(j->lfd[i]);
            j->lfd[i] = -1;
        }
}

static void on_exit_cb(struct sb_child *c, const struct sb_result *res, void *user)
{
    struct job *j = user;
    (void)c;
    j->exits++;
    j->res = *res;
    ev_break(loop, EVBREAK_ONE);
}

static void on_guard(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    CU_FAIL("sandbox did not finish in 60 s");
    ev_break(l, EVBREAK_ONE);
}

static void job_init(struct job *j)
{
    memset(j, 0, sizeof(*j));
    j->lfd[0] = j->lfd[1] = -1;
    j->netns = -1;
}

enum { KILL_AT_ONCE = 1, AFTER_INIT_EXIT = 2 };

/* Starts req (private workspace) and runs the loop until on_exit.
 * KILL_AT_ONCE: sb_kill() right after sb_start(); AFTER_INIT_EXIT: the loop
 * first runs once init has exited (left unreaped, for the library). */
static int run_job(const struct sb_config *c, struct sb_request *req, struct job *j,
                   int with_listen, int how)
{
    struct sb_callbacks cb = {.on_output = on_output,
                              .on_listen = with_listen ? on_listen : NULL,
                              .on_exit = on_exit_cb,
                              .user = j};
    ev_timer guard;
    req->workspace = NULL;
    req->workspace_bytes = 1 << 20;
    int rc = sb_start(loop, host, c, req, &cb, &j->child);
    if (rc < 0)
        return rc;
    if (how == KILL_AT_ONCE)
        sb_kill(j->child, SB_FAIL_CANCELLED);
    if (how == AFTER_INIT_EXIT) {
        siginfo_t si;
        CU_ASSERT_EQUAL(
            waitid(P_PID, (id_t)sb_child_pid(j->child), &si, WEXITED | WNOWAIT | __WALL), 0);
    }
    ev_timer_init(&guard, on_guard, 60., 0.);
    ev_timer_start(loop, &guard);
    ev_run(loop, 0);
    ev_timer_stop(loop, &guard);
    conns_end_all();
    return 0;
}

/* 0 if a TCP connect from inside network namespace `ns` to addr:port is
 * refused (nothing listens there), 1 if it connects, 2 on other errors. */
static int connect_in_netns(int ns, int family, uint16_t port)
{
    pid_t p = fork();
    if (p == 0) {
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
        struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons(port)};
        a6.sin6_addr = in6addr_loopback;
        a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (setns(ns, CLONE_NEWNET) < 0)
            _exit(2);
        int s = socket(family, SOCK_STREAM, 0);
        int r = family == AF_INET ? connect(s, (struct sockaddr *)&a4, sizeof(a4))
                                  : connect(s, (struct sockaddr *)&a6, sizeof(a6));
        _exit(r == 0 ? 1 : errno == ECONNREFUSED ? 0 : 2);
    }
    int st = 0;
    if (p < 0 || waitpid(p, &st, 0) < 0 || !WIFEXITED(st))
        return 2;
    return WEXITSTATUS(st);
}

static void check_listener(int fd, int family)
{
    int v = 0;
    socklen_t len = sizeof(v);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    CU_ASSERT_EQUAL(getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len), 0);
    CU_ASSERT_EQUAL(v, 1);
    len = sizeof(v);
    CU_ASSERT_EQUAL(getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len), 0);
    CU_ASSERT_EQUAL(v, family);
    len = sizeof(v);
    CU_ASSERT_EQUAL(getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, &len), 0);
    CU_ASSERT_EQUAL(v, 1);
    CU_ASSERT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    CU_ASSERT_EQUAL_FATAL(getsockname(fd, (struct sockaddr *)&ss, &sl), 0);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        CU_ASSERT_EQUAL(ntohs(a->sin_port), PORT);
        CU_ASSERT_EQUAL(ntohl(a->sin_addr.s_addr), INADDR_LOOPBACK);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        CU_ASSERT_EQUAL(ntohs(a->sin6_port), PORT);
        CU_ASSERT_TRUE(IN6_IS_ADDR_LOOPBACK(&a->sin6_addr));
    }
}

/* The job talks to the listeners over 127.0.0.1 and [::1] (bash's /dev/tcp)
 * while the test accepts on them: bytes both ways. The test then closes its
 * copies; once the job has ended too, nothing listens on the port any more
 * in the sandbox's (still referenced) network namespace. */
static void test_listen_and_exchange(void)
{
    static struct job j;
    const char *script = "for a in 127.0.0.1 ::1; do"
                         "  exec 3<>/dev/tcp/$a/3128 || exit 3;"
                         "  echo ping-$a >&3; read -r reply <&3; echo \"$a $reply\";"
                         "  exec 3<&-;"
                         "done";
    const char *script4 = "exec 3<>/dev/tcp/127.0.0.1/3128 || exit 3;"
                          "echo ping-127.0.0.1 >&3; read -r reply <&3; echo \"127.0.0.1 $reply\"";
    const char *argv[] = {"bash", "-c", have_ipv6 ? script : script4};
    struct sb_request req = {.kind = SB_EXEC, .argv = argv, .argc = 3, .proxy_port = PORT};
    int before = count_fds();
    job_init(&j);
    j.close_after = have_ipv6 ? 2 : 1;
    CU_ASSERT_EQUAL_FATAL(run_job(&cfg, &req, &j, 1, 0), 0);
    CU_ASSERT_EQUAL(j.listens, 1);
    CU_ASSERT_EQUAL(j.exits, 1);
    CU_ASSERT_FALSE(j.listen_after_exit);
    CU_ASSERT_EQUAL(j.n_lfd, have_ipv6 ? 2 : 1);
    CU_ASSERT_EQUAL(j.res.failure, SB_FAIL_NONE);
    CU_ASSERT_STRING_EQUAL(j.out, have_ipv6 ? "127.0.0.1 pong:ping-127.0.0.1\n"
                                              "::1 pong:ping-::1\n"
                                            : "127.0.0.1 pong:ping-127.0.0.1\n");
    CU_ASSERT_STRING_EQUAL(j.seen, have_ipv6 ? "ping-127.0.0.1\nping-::1\n" : "ping-127.0.0.1\n");
    CU_ASSERT_EQUAL(j.accepted, have_ipv6 ? 2 : 1);
    CU_ASSERT_EQUAL(j.lfd[0], -1); /* closed by the test after its last answer */
    CU_ASSERT_TRUE_FATAL(j.netns >= 0);
    CU_ASSERT_EQUAL(connect_in_netns(j.netns, AF_INET, PORT), 0);
    if (have_ipv6)
        CU_ASSERT_EQUAL(connect_in_netns(j.netns, AF_INET6, PORT), 0);
    close(j.netns);
    CU_ASSERT_EQUAL(count_fds(), before);
}

/* The descriptors on_listen gets: listening TCP sockets on 127.0.0.1:PORT
 * and [::1]:PORT, close-on-exec, SO_REUSEADDR. A socket outlives init while
 * the caller holds its copy (as the proxy does) and is gone once the caller
 * closes it too. (The job waits for an answer that only a taken listener
 * can give, so on_listen surely runs.) */
static void test_listener_descriptors(void)
{
    static struct job j;
    const char *script = "exec 3<>/dev/tcp/127.0.0.1/3128 && echo ping >&3 && read -r r <&3 &&"
                         " echo \"$r\"";
    const char *argv[] = {"bash", "-c", script};
    struct sb_request req = {.kind = SB_EXEC, .argv = argv, .argc = 3, .proxy_port = PORT};
    job_init(&j);
    CU_ASSERT_EQUAL_FATAL(run_job(&cfg, &req, &j, 1, 0), 0);
    CU_ASSERT_EQUAL(j.res.failure, SB_FAIL_NONE);
    CU_ASSERT_STRING_EQUAL(j.out, "pong:ping\n");
    CU_ASSERT_EQUAL_FATAL(j.listens, 1);
    CU_ASSERT_EQUAL_FATAL(j.n_lfd, have_ipv6 ? 2 : 1);
    check_listener(j.lfd[0], AF_INET);
    if (have_ipv6)
        check_listener(j.lfd[1], AF_INET6);
    /* init is gone; our copies still listen in the sandbox's namespace */
    CU_ASSERT_TRUE_FATAL(j.netns >= 0);
    CU_ASSERT_EQUAL(connect_in_netns(j.netns, AF_INET, PORT), 1);
    if (have_ipv6)
        CU_ASSERT_EQUAL(connect_in_netns(j.netns, AF_INET6, PORT), 1);
    close_listeners(&j);
    CU_ASSERT_EQUAL(connect_in_netns(j.netns, AF_INET, PORT), 0);
    if (have_ipv6)
        CU_ASSERT_EQUAL(connect_in_netns(j.netns, AF_INET6, PORT), 0);
    close(j.netns);
}

/* Ordinary clients reach the proxy with the environment the executor sets:
 * curl (http, CONNECT for https, and over [::1]), python's urllib, git over
 * http, node's http module. Each line: the client's binary, its shell
 * snippet, what it prints and the request line the proxy sees. */
static const struct client {
    const char *bin, *script, *out, *seen;
    int ipv6;
} clients[] = {
    {"/usr/bin/curl", "curl -sS http://example.test/curl; echo curl=$?",
     "hello http://example.test/curl\ncurl=0\n", "GET http://example.test/curl HTTP/1.1\n", 0},
    {"/usr/bin/curl", "curl -sS https://example.test/tls 2>/dev/null; echo curl-connect=$?",
     "curl-connect=56\n", "CONNECT example.test:443 HTTP/1.1\n", 0},
    {"/usr/bin/curl", "curl -sS -x http://[::1]:3128 http://example.test/curl6; echo curl6=$?",
     "hello http://example.test/curl6\ncurl6=0\n", "GET http://example.test/curl6 HTTP/1.1\n", 1},
    {"/usr/bin/python3",
     "python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
     "\"http://example.test/python\").read().decode())'; echo python=$?",
     "hello http://example.test/python\npython=0\n", "GET http://example.test/python HTTP/1.1\n",
     0},
    {"/usr/bin/git", "git ls-remote http://example.test/repo.git >/dev/null 2>&1; echo git=$?",
     "git=128\n", "GET http://example.test/repo.git/info/refs?service=git-upload-pack HTTP/1.1\n",
     0},
    {"/usr/bin/node",
     "node -e 'require(\"http\").get({host: \"127.0.0.1\", port: 3128, path: "
     "\"http://example.test/node\", headers: {host: \"example.test\"}}, r => "
     "r.pipe(process.stdout))'; echo node=$?",
     "hello http://example.test/node\nnode=0\n", "GET http://example.test/node HTTP/1.1\n", 0},
};

static void test_clients(void)
{
    static struct job j;
    static char script[4096], want_out[1024], want_seen[1024];
    size_t o = 0, w = 0, s = 0;
    for (size_t i = 0; i < sizeof(clients) / sizeof(clients[0]); i++) {
        const struct client *c = &clients[i];
        if (c->ipv6 && !have_ipv6)
            continue;
        if (access(c->bin, X_OK) < 0) {
            fprintf(stderr, "SKIP clients: %s is not installed: not checked\n", c->bin);
            continue;
        }
        o += (size_t)snprintf(script + o, sizeof(script) - o, "%s; ", c->script);
        w += (size_t)snprintf(want_out + w, sizeof(want_out) - w, "%s", c->out);
        s += (size_t)snprintf(want_seen + s, sizeof(want_seen) - s, "%s", c->seen);
    }
    CU_ASSERT_TRUE_FATAL(o < sizeof(script) && w < sizeof(want_out) && s < sizeof(want_seen));
    const char *argv[] = {"sh", "-c", script};
    struct sb_env env[] = {
        {"http_proxy", "http://127.0.0.1:3128"},  {"HTTP_PROXY", "http://127.0.0.1:3128"},
        {"https_proxy", "http://127.0.0.1:3128"}, {"HTTPS_PROXY", "http://127.0.0.1:3128"},
        {"no_proxy", "localhost,127.0.0.1,::1"},  {"NO_PROXY", "localhost,127.0.0.1,::1"}};
    struct sb_request req = {.kind = SB_EXEC,
                             .argv = argv,
                             .argc = 3,
                             .env_internal = env,
                             .n_env_internal = sizeof(env) / sizeof(env[0]),
                             .proxy_port = PORT};
    req.limits.wall_time_ms = 50000;
    job_init(&j);
    CU_ASSERT_EQUAL_FATAL(run_job(&cfg, &req, &j, 1, 0), 0);
    CU_ASSERT_EQUAL(j.listens, 1);
    CU_ASSERT_EQUAL(j.res.failure, SB_FAIL_NONE);
    CU_ASSERT_STRING_EQUAL(j.out, want_out);
    CU_ASSERT_STRING_EQUAL(j.seen, want_seen);
    if (strcmp(j.out, want_out) != 0)
        fprintf(stderr, "clients: stdout:\n%s\nstderr:\n%s\n", j.out, j.err);
    close_listeners(&j);
    close(j.netns);
}

/* A listener of this (host) process on the host's loopback, for the job to
 * miss: returns the descriptor and sets *port. */
static int host_listener(int family, uint16_t *port)
{
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
    struct sockaddr_in a4 = {.sin_family = AF_INET};
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    a6.sin6_addr = in6addr_loopback;
    a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0)
        return -1;
    if ((family == AF_INET ? bind(s, (struct sockaddr *)&a4, sizeof(a4))
                           : bind(s, (struct sockaddr *)&a6, sizeof(a6))) < 0 ||
        listen(s, 16) < 0 || getsockname(s, (struct sockaddr *)&ss, &sl) < 0) {
        close(s);
        return -1;
    }
    *port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                    : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return s;
}

/* The host's first non-loopback IPv4 address, or "" if it has none. */
static void host_address(char *buf, size_t n)
{
    struct ifaddrs *ifa = NULL;
    buf[0] = '\0';
    if (getifaddrs(&ifa) < 0)
        return;
    for (struct ifaddrs *i = ifa; i && !buf[0]; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET &&
            ntohl(((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr) >> 24 != 127)
            inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf, (socklen_t)n);
    freeifaddrs(ifa);
}

/* Nothing but the listeners: every other destination fails with the exact
 * error, the host's loopback services are not the sandbox's, the job cannot
 * take the proxy port, and the command holds only fds 0-2. */
static void test_isolation(void)
{
    static struct job j;
    static char script[4096], want[2048];
    char addr[INET_ADDRSTRLEN];
    uint16_t hp4 = 0, hp6 = 0;
    int h4 = host_listener(AF_INET, &hp4), h6 = have_ipv6 ? host_listener(AF_INET6, &hp6) : -1;
    CU_ASSERT_TRUE_FATAL(h4 >= 0 && (!have_ipv6 || h6 >= 0));
    host_address(addr, sizeof(addr));
    size_t o = 0, w = 0;
#define ADD(buf, n, ...) n += (size_t)snprintf(buf + n, sizeof(buf) - n, __VA_ARGS__)
    ADD(script, o, "%s",
        "import errno, os, socket, sys\n"
        "def res(f):\n"
        "    try:\n"
        "        f()\n"
        "        return 'ok'\n"
        "    except OSError as e:\n"
        "        return errno.errorcode.get(e.errno, str(e.errno))\n"
        "def tcp(fam, a):\n"
        "    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(20)\n"
        "    return res(lambda: s.connect(a))\n"
        "def udp(fam, a):\n"
        "    s = socket.socket(fam, socket.SOCK_DGRAM)\n"
        "    return res(lambda: s.sendto(b'x', a))\n"
        "def bind(fam, a, opt=None):\n"
        "    s = socket.socket(fam, socket.SOCK_STREAM)\n"
        "    if opt: s.setsockopt(socket.SOL_SOCKET, opt, 1)\n"
        "    return res(lambda: (s.bind(a), s.listen()))\n"
        "V4, V6 = socket.AF_INET, socket.AF_INET6\n"
        "print('tcp 10.1.2.3:80', tcp(V4, ('10.1.2.3', 80)))\n"
        "print('tcp 1.1.1.1:443', tcp(V4, ('1.1.1.1', 443)))\n"
        "print('udp 10.1.2.3:53', udp(V4, ('10.1.2.3', 53)))\n"
        "print('bind 127.0.0.1', bind(V4, ('127.0.0.1', 3128)))\n"
        "print('bind 127.0.0.1 reuseaddr', bind(V4, ('127.0.0.1', 3128), socket.SO_REUSEADDR))\n"
        "print('bind 127.0.0.1 reuseport', bind(V4, ('127.0.0.1', 3128), socket.SO_REUSEPORT))\n"
        "print('bind 0.0.0.0', bind(V4, ('0.0.0.0', 3128)))\n"
        "print('fds', [fd for fd in range(3, 1024) if res(lambda: os.fstat(fd)) == 'ok'])\n");
    ADD(want, w,
        "tcp 10.1.2.3:80 ENETUNREACH\n"
        "tcp 1.1.1.1:443 ENETUNREACH\n"
        "udp 10.1.2.3:53 ENETUNREACH\n"
        "bind 127.0.0.1 EADDRINUSE\n"
        "bind 127.0.0.1 reuseaddr EADDRINUSE\n"
        "bind 127.0.0.1 reuseport EADDRINUSE\n"
        "bind 0.0.0.0 EADDRINUSE\n"
        "fds []\n");
    ADD(script, o, "print('tcp host 127.0.0.1', tcp(V4, ('127.0.0.1', %u)))\n", hp4);
    ADD(want, w, "tcp host 127.0.0.1 ECONNREFUSED\n");
    if (addr[0]) {
        ADD(script, o, "print('tcp host address', tcp(V4, ('%s', %u)))\n", addr, hp4);
        ADD(want, w, "tcp host address ENETUNREACH\n");
    }
    if (have_ipv6) {
        ADD(script, o, "%s",
            "print('tcp [2001:db8::1]:443', tcp(V6, ('2001:db8::1', 443)))\n"
            "print('udp [2001:db8::1]:53', udp(V6, ('2001:db8::1', 53)))\n"
            "print('bind [::1]', bind(V6, ('::1', 3128)))\n"
            "print('bind [::]', bind(V6, ('::', 3128)))\n");
        ADD(script, o, "print('tcp host [::1]', tcp(V6, ('::1', %u)))\n", hp6);
        ADD(want, w,
            "tcp [2001:db8::1]:443 ENETUNREACH\n"
            "udp [2001:db8::1]:53 ENETUNREACH\n"
            "bind [::1] EADDRINUSE\n"
            "bind [::] EADDRINUSE\n"
            "tcp host [::1] ECONNREFUSED\n");
    }
    ADD(script, o, "%s", "sys.stdout.flush()\nos.execvp('sh', ['sh', '-c', 'ls /proc/$$/fd'])\n");
    ADD(want, w, "0\n1\n2\n");
#undef ADD
    const char *argv[] = {"python3", "-c", script};
    struct sb_request req = {.kind = SB_EXEC, .argv = argv, .argc = 3, .proxy_port = PORT};
    req.limits.wall_time_ms = 50000;
    job_init(&j);
    CU_ASSERT_EQUAL_FATAL(run_job(&cfg, &req, &j, 1, 0), 0);
    CU_ASSERT_EQUAL(j.res.failure, SB_FAIL_NONE);
    CU_ASSERT_STRING_EQUAL(j.out, want);
    if (strcmp(j.out, want) != 0)
        fprintf(stderr, "isolation: stdout:\n%s\nstderr:\n%s\n", j.out, j.err);
    CU_ASSERT_EQUAL(j.accepted, 0); /* the job never connected to its proxy port */
    /* and nothing reached this host's loopback listeners */
    CU_ASSERT_EQUAL(accept(h4, NULL, NULL), -1);
    if (h6 >= 0)
        CU_ASSERT_EQUAL(accept(h6, NULL, NULL), -1);
    close(h4);
    if (h6 >= 0)
        close(h6);
    close_listeners(&j);
    if (j.netns >= 0)
        close(j.netns);
}

/* proxy_port is refused for file operations (synchronously, no callback);
 * 0 means no listener: nothing listens on the port, on_listen never runs. */
static void test_bad_requests(void)
{
    static struct job j;
    char msg[SB_MESSAGE_MAX];
    struct sb_callbacks cb = {.on_listen = on_listen, .on_exit = on_exit_cb, .user = &j};
    struct sb_child *c = NULL;
    struct sb_request rd = {.kind = SB_READ_FILE, .proxy_port = PORT};
    rd.file.path = "/etc/hostname";
    rd.workspace_bytes = 1 << 20;
    job_init(&j);
    CU_ASSERT_EQUAL(sb_request_check(host, &cfg, &rd, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(msg,
                           "proxy_port is only for EXEC jobs (file operations have no network)");
    CU_ASSERT_EQUAL(sb_start(loop, host, &cfg, &rd, &cb, &c), AL_ERR_INVAL);
    rd.kind = SB_LIST_DIR;
    CU_ASSERT_EQUAL(sb_request_check(host, &cfg, &rd, msg, sizeof(msg)), AL_ERR_INVAL);
    rd.kind = SB_WRITE_FILE;
    rd.file.path = "x";
    CU_ASSERT_EQUAL(sb_request_check(host, &cfg, &rd, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NULL(c);
    ev_run(loop, EVRUN_NOWAIT);
    CU_ASSERT_EQUAL(j.exits + j.listens, 0);

    const char *argv[] = {"bash", "-c", "(exec 3<>/dev/tcp/127.0.0.1/3128) 2>/dev/null; echo $?"};
    struct sb_request req = {.kind = SB_EXEC, .argv = argv, .argc = 3, .proxy_port = 0};
    job_init(&j);
    CU_ASSERT_EQUAL_FATAL(run_job(&cfg, &req, &j, 1, 0), 0);
    CU_ASSERT_EQUAL(j.res.failure, SB_FAIL_NONE);
    CU_ASSERT_STRING_EQUAL(j.out, "1\n"); /* connection refused */
    CU_ASSERT_EQUAL(j.listens, 0);
}

/* A CA bundle bound over /etc/ssl/certs/ca-certificates.crt (inside the
 * default image's read-only /etc/ssl) is what the job reads, read-only; the
 * rest of /etc/ssl/certs stays the host's. */
static void test_ca_bundle_bind(void)
{
    static struct job j;
    char dir[] = "/tmp/sb-proxy-ca-XXXXXX", file[64];
    const char *pem = "-----BEGIN CERTIFICATE-----\nTUlJQnRlc3Q=\n-----END CERTIFICATE-----\n";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    chmod(dir, 0755); /* bind sources are looked up as the sandbox's root */
    snprintf(file, sizeof(file), "%s/bundle.pem", dir);
    FILE *f = fopen(file, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(pem, f);
    fclose(f);
    chmod(file, 0644);
    struct sb_bind b[] = {{file, "/etc/ssl/certs/ca-certificates.crt"}};
    struct sb_config c = cfg;
    c.binds = b;
    c.n_binds = 1;
    const char *script =
        "cat /etc/ssl/certs/ca-certificates.crt;"
        " awk '$5 == \"/etc/ssl/certs/ca-certificates.crt\" {print $6}' /proc/self/mountinfo"
        " | cut -d, -f1-3;"
        " test -d /etc/ssl/certs && ls /etc/ssl/certs | grep -c . | awk '{print ($1 > 1)}'";
    const char *argv[] = {"sh", "-c", script};
    struct sb_request req = {.kind = SB_EXEC, .argv = argv, .argc = 3, .proxy_port = PORT};
    job_init(&j);
    CU_ASSERT_EQUAL_FATAL(run_job(&c, &req, &j, 0, 0), 0);
    CU_ASSERT_EQUAL(j.res.failure, SB_FAIL_NONE);
    char want[256];
    snprintf(want, sizeof(want), "%sro,nosuid,nodev\n1\n", pem);
    CU_ASSERT_STRING_EQUAL(j.out, want);
    if (strcmp(j.out, want) != 0)
        fprintf(stderr, "ca bundle: stdout:\n%s\nstderr:\n%s\n", j.out, j.err);
    /* a path /etc/ssl does not have cannot be bound there */
    struct sb_bind missing[] = {{file, "/etc/ssl/certs/no-such-bundle.crt"}};
    char msg[SB_MESSAGE_MAX];
    c.binds = missing;
    CU_ASSERT_EQUAL(sb_request_check(host, &c, &req, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "no regular file there"));
    unlink(file);
    rmdir(dir);
}

/* init ends before the command runs (command not found; a working
 * directory that does not exist), or the job is killed at once, or init is
 * gone before the loop sees its listeners: on_listen runs at most once and
 * before on_exit, never after a kill or once init is gone, and no descriptor
 * is left behind, with or without an on_listen callback. */
static void test_early_end_no_leak(void)
{
    static struct job j;
    const char *missing[] = {"no-such-command-for-the-proxy-test"};
    const char *sleeper[] = {"sleep", "30"};
    const char *ok[] = {"true"};
    struct {
        const char *const *argv;
        const char *cwd;
        int with_listen, how, close_in_cb;
        enum sb_failure want;
    } cases[] = {
        {missing, NULL, 1, 0, 1, SB_FAIL_EXEC_FAILED},
        {missing, NULL, 0, 0, 0, SB_FAIL_EXEC_FAILED},
        {ok, "/nonexistent-dir", 1, 0, 1, SB_FAIL_EXEC_FAILED},
        {ok, "/nonexistent-dir", 0, 0, 0, SB_FAIL_EXEC_FAILED},
        {sleeper, NULL, 1, KILL_AT_ONCE, 1, SB_FAIL_CANCELLED},
        {sleeper, NULL, 0, KILL_AT_ONCE, 0, SB_FAIL_CANCELLED},
        {missing, NULL, 1, AFTER_INIT_EXIT, 1, SB_FAIL_EXEC_FAILED},
        {ok, NULL, 1, AFTER_INIT_EXIT, 1, SB_FAIL_NONE},
        {ok, NULL, 0, AFTER_INIT_EXIT, 0, SB_FAIL_NONE},
    };
    int before = count_fds();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int round = 0; round < 3; round++) {
            struct sb_request req = {.kind = SB_EXEC,
                                     .argv = (const char *const *)cases[i].argv,
                                     .argc = cases[i].argv == sleeper ? 2 : 1,
                                     .cwd = cases[i].cwd,
                                     .proxy_port = PORT};
            job_init(&j);
            j.close_in_on_listen = cases[i].close_in_cb;
            CU_ASSERT_EQUAL_FATAL(run_job(&cfg, &req, &j, cases[i].with_listen, cases[i].how), 0);
            CU_ASSERT_EQUAL(j.exits, 1);
            CU_ASSERT_EQUAL(j.res.failure, cases[i].want);
            CU_ASSERT_TRUE(j.listens <= 1);
            CU_ASSERT_FALSE(j.listen_after_exit);
            if (cases[i].how)
                CU_ASSERT_EQUAL(j.listens, 0);
            if (j.netns >= 0)
                close(j.netns);
            CU_ASSERT_EQUAL(count_fds(), before);
        }
    }
}

int main(void)
{
    CU_pSuite s;
    int failed;
    char err[256] = "", name[32];
    struct stat st;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("sandbox proxy listeners (real sandboxes)", NULL, NULL);
    CU_add_test(s, "listeners: bytes both ways over 127.0.0.1 and [::1], then gone",
                test_listen_and_exchange);
    CU_add_test(s, "listener descriptors: listening, close-on-exec, held by the caller",
                test_listener_descriptors);
    CU_add_test(s, "clients: curl, python, git, node through the listener", test_clients);
    CU_add_test(s, "isolation: no other destination, port taken, fds 0-2", test_isolation);
    CU_add_test(s, "bad requests: file jobs refused, port 0 = none", test_bad_requests);
    CU_add_test(s, "CA bundle bound over the image's ca-certificates.crt", test_ca_bundle_bind);
    CU_add_test(s, "init ends early or is killed: no on_listen after, no fd leak",
                test_early_end_no_leak);
    have_ipv6 = stat("/proc/net/if_inet6", &st) == 0;
    if (!have_ipv6)
        fprintf(stderr, "NOTE proxy tests: the host has no IPv6; [::1] checks are left out\n");
    snprintf(name, sizeof(name), "unit-proxy-%d", (int)getpid());
    struct sb_host_options opts = {.name = name};
    if (geteuid() != 0 || sb_host_new(&opts, &host, err, sizeof(err)) < 0) {
        fprintf(stderr, "SKIP sandbox proxy tests: need root and a usable sandbox host (%s)\n",
                err[0] ? err : "not root");
        CU_set_suite_active(s, CU_FALSE);
    }
    loop = ev_loop_new(EVFLAG_AUTO);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    sb_host_free(host);
    ev_loop_destroy(loop);
    return failed ? 1 : 0;
}
