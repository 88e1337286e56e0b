/*
 * Unit tests for al_ops (the ops HTTP port) and al_addr.
 *
 * One ops server listens on 127.0.0.1:0; each test talks to it over real
 * loopback sockets. Everything runs on this thread: the helpers alternate
 * ev_run(EVRUN_NOWAIT) with non-blocking reads of the client socket.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <ev.h>

#include "al_addr.h"
#include "al_err.h"
#include "al_log.h"
#include "al_metrics.h"
#include "al_ops.h"

#define RESP_CAP 65536

static struct ev_loop *loop;
static struct al_metrics *metrics;
static struct al_ops *ops;
static int port;
static int ready = 1;

static int ready_cb(void *user, char *why, size_t n)
{
    if (ready)
        return 1;
    snprintf(why, n, "store\nnot open"); /* the server must keep it on one line */
    return 0;
}

static int echo_handler(void *user, const char *path, const char *query, struct al_ops_reply *rep)
{
    rep->content_type = "application/json";
    rep->len = (size_t)asprintf(&rep->body, "{\"path\":\"%s\",\"query\":\"%s\"}", path, query);
    return 0;
}

static int failing_handler(void *user, const char *path, const char *query,
                           struct al_ops_reply *rep)
{
    return AL_ERR_STATE;
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int dial(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void pump(double secs)
{
    double end = now() + secs;

    while (now() < end) {
        ev_run(loop, EVRUN_NOWAIT);
        usleep(1000);
    }
}

/* One complete response (headers, and Content-Length bytes unless head). */
static int complete(const char *buf, size_t len, int head)
{
    const char *e = strstr(buf, "\r\n\r\n"), *cl;

    if (!e)
        return 0;
    cl = strcasestr(buf, "\r\nContent-Length: ");
    if (head || !cl || cl > e)
        return 1;
    return len >= (size_t)(e + 4 - buf) + strtoul(cl + 18, NULL, 10);
}

/*
 * Runs the loop and reads fd into buf until a complete response (want_eof
 * 0), EOF (want_eof 1) or 3 s. Returns the length; *eof says whether the
 * server closed.
 */
static size_t pump_read(int fd, char *buf, size_t cap, int head, int want_eof, int *eof)
{
    size_t len = 0;
    double end = now() + 3;

    *eof = 0;
    buf[0] = '\0';
    while (now() < end) {
        ssize_t n;
        ev_run(loop, EVRUN_NOWAIT);
        n = recv(fd, buf + len, cap - 1 - len, MSG_DONTWAIT);
        if (n > 0) {
            len += (size_t)n;
            buf[len] = '\0';
            if (!want_eof && complete(buf, len, head))
                break;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            *eof = 1;
            break;
        }
        usleep(500);
    }
    return len;
}

static void send_all(int fd, const char *s, size_t len)
{
    while (len) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            s += n;
            len -= (size_t)n;
        } else if (n < 0 && errno != EAGAIN) {
            return;
        }
        ev_run(loop, EVRUN_NOWAIT);
    }
}

/* Sends req on a new connection and reads one response into buf. Returns fd. */
static int request(const char *req, char *buf, size_t cap, int head, int *eof)
{
    int fd = dial();

    CU_ASSERT_FATAL(fd >= 0);
    send_all(fd, req, strlen(req));
    pump_read(fd, buf, cap, head, 0, eof);
    return fd;
}

/* Closes fd and lets the server notice, so connection counts start at 0. */
static void hang_up(int fd)
{
    close(fd);
    for (int i = 0; i < 200 && al_ops_connections(ops); i++)
        pump(0.002);
}

static const char *body_of(const char *resp)
{
    const char *e = strstr(resp, "\r\n\r\n");

    return e ? e + 4 : "";
}

static void test_healthz(void)
{
    char buf[RESP_CAP];
    int eof, fd;

    fd = request("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof(buf), 0, &eof);
    CU_ASSERT_EQUAL(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\r\nContent-Length: 3\r\n"));
    CU_ASSERT_PTR_NULL(strstr(buf, "Connection: close"));
    CU_ASSERT_STRING_EQUAL(body_of(buf), "ok\n");
    CU_ASSERT_EQUAL(eof, 0);
    /* keep-alive: a second request on the same connection */
    send_all(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 35);
    pump_read(fd, buf, sizeof(buf), 0, 0, &eof);
    CU_ASSERT_EQUAL(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17), 0);
    CU_ASSERT_EQUAL(al_ops_connections(ops), 1);
    hang_up(fd);
    CU_ASSERT_EQUAL(al_ops_connections(ops), 0);
}

static void test_readyz(void)
{
    char buf[RESP_CAP];
    int eof, fd;

    ready = 1;
    fd = request("GET /readyz HTTP/1.1\r\n\r\n", buf, sizeof(buf), 0, &eof);
    CU_ASSERT_EQUAL(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17), 0);
    CU_ASSERT_STRING_EQUAL(body_of(buf), "ok\n");
    hang_up(fd);
    ready = 0;
    fd = request("GET /readyz HTTP/1.1\r\n\r\n", buf, sizeof(buf), 0, &eof);
    CU_ASSERT_EQUAL(strncmp(buf, "HTTP/1.1 503 Service Unavailable\r\n", 34), 0);
    CU_ASSERT_STRING_EQUAL(body_of(buf), "not ready: store not open\n");
    CU_ASSERT_EQUAL(eof, 0); /* not an error: keep-alive goes on */
    hang_up(fd);
    ready = 1;
}

static void test_metrics(void)
{
    char buf[RESP_CAP];
    int eof, fd;

    al_metric_add(al_metrics_counter(metrics, "test_hits_total", "Hits.", "kind=\"unit\""), 2);
    fd = request("GET /metrics HTTP/1.1\r\n\r\n", buf, sizeof(buf), 0, &eof);
    CU_ASSERT_EQUAL(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17), 0);
    CU_ASSERT_PTR_NOT_NULL(
        strstr(buf, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(body_of(buf), "# TYPE airlock_ops_connections gauge\n"
                                                "airlock_ops_connections 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(body_of(buf), "# HELP test_hits_total Hits.\n"
                                                "# TYPE test_hits_total counter\n"
                                                "test_hits_total{kind=\"unit\"} 2\n"));
    hang_up(fd);
}

static void test_head(void)
{
    char buf[RESP_CAP];
    int eof, fd;

    fd = request("HEAD /healthz HTTP/1.1\r\n\r\n", buf, sizeof(buf), 1, &eof);
    CU_ASSERT_EQUAL(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\r\nContent-Length: 3\r\n"));
    CU_ASSERT_STRING_EQUAL(body_of(buf), "");
    /* no stray body: the next response starts right where the headers ended */
    send_all(fd, "GET /healthz HTTP/1.1\r\n\r\n", 25);
    pump_read(fd, buf, sizeof(buf), 0, 0, &eof);
    CU_ASSERT_EQUAL(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17), 0);
    CU_ASSERT_STRING_EQUAL(body_of(buf), "ok\n");
    hang_up(fd);
    fd = request("HEAD /nope HTTP/1.1\r\n\r\n", buf, sizeof(buf), 1, &eof);
    CU_ASSERT_EQUAL(strncmp(buf, "HTTP/1.1 404 Not Found\r\n", 24), 0);
    pump_read(fd, buf, sizeof(buf), 0, 1, &eof);
    CU_ASSERT_EQUAL(eof, 1);
    CU_ASSERT_STRING_EQUAL(buf, ""); /* no body after a HEAD error either */
    hang_up(fd);
}

static void expect_status(const char *req, size_t reqlen, const char *status_line)
{
    char buf[RESP_CAP];
    int eof, fd = dial();

    CU_ASSERT_FATAL(fd >= 0);
    send_all(fd, req, reqlen);
    pump_read(fd, buf, sizeof(buf), 0, 1, &eof);
    CU_ASSERT_EQUAL(strncmp(buf, status_line, strlen(status_line)), 0);
    if (strncmp(buf, status_line, strlen(status_line)) != 0)
        fprintf(stderr, "\n  got: %.60s\n  want: %s\n", buf, status_line);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\r\nConnection: close\r\n"));
    CU_ASSERT_EQUAL(eof, 1); /* errors close the connection */
    hang_up(fd);
}

static void test_errors(void)
{
    static const char big_start[] = "GET /healthz HTTP/1.1\r\nX-Big: ";
    char big[AL_OPS_MAX_HEAD + 200];
    size_t n = sizeof(big_start) - 1;

    expect_status("GET /nope HTTP/1.1\r\n\r\n", 22, "HTTP/1.1 404 Not Found\r\n");
    expect_status("POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 45,
                  "HTTP/1.1 405 Method Not Allowed\r\n");
    expect_status("GET /healthz HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789", 56,
                  "HTTP/1.1 413 Payload Too Large\r\n");
    expect_status(
        "POST /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 69,
        "HTTP/1.1 413 Payload Too Large\r\n");
    expect_status("HELLO THERE\r\n\r\n", 15, "HTTP/1.1 400 Bad Request\r\n");
    expect_status("GET /he\x01lthz HTTP/1.1\r\n\r\n", 26, "HTTP/1.1 400 Bad Request\r\n");
    memcpy(big, big_start, n);
    memset(big + n, 'a', AL_OPS_MAX_HEAD);
    memcpy(big + n + AL_OPS_MAX_HEAD, "\r\n\r\n", 4);
    expect_status(big, n + AL_OPS_MAX_HEAD + 4, "HTTP/1.1 431 Request Header Fields Too Large\r\n");
    /* a long URL counts against the same cap */
    memcpy(big, "GET /", 5);
    memset(big + 5, 'u', AL_OPS_MAX_HEAD);
    expect_status(big, 5 + AL_OPS_MAX_HEAD, "HTTP/1.1 431 Request Header Fields Too Large\r\n");
    CU_ASSERT_EQUAL(al_ops_connections(ops), 0);
}

static void test_routes(void)
{
    char buf[RESP_CAP];
    int eof, fd;

    CU_ASSERT_EQUAL(al_ops_route(ops, "/debug/echo", echo_handler, NULL), 0);
    CU_ASSERT_EQUAL(al_ops_route(ops, "/debug/fail", failing_handler, NULL), 0);
    CU_ASSERT_EQUAL(al_ops_route(ops, "relative", echo_handler, NULL), AL_ERR_INVAL);
    fd = request("GET /debug/echo?x=1&y=2 HTTP/1.1\r\n\r\n", buf, sizeof(buf), 0, &eof);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\r\nContent-Type: application/json\r\n"));
    CU_ASSERT_STRING_EQUAL(body_of(buf), "{\"path\":\"/debug/echo\",\"query\":\"x=1&y=2\"}");
    hang_up(fd);
    /* absolute-form targets work too */
    fd = request("GET http://ops:9090/debug/echo HTTP/1.1\r\n\r\n", buf, sizeof(buf), 0, &eof);
    CU_ASSERT_STRING_EQUAL(body_of(buf), "{\"path\":\"/debug/echo\",\"query\":\"\"}");
    hang_up(fd);
    expect_status("GET /debug/fail HTTP/1.1\r\n\r\n", 28, "HTTP/1.1 500 Internal Server Error\r\n");
}

static void test_pipelining_and_http10(void)
{
    char buf[RESP_CAP];
    int eof, fd = dial();
    static const char two[] = "GET /healthz HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\n"
                              "Connection: close\r\n\r\n";
    const char *second;

    CU_ASSERT_FATAL(fd >= 0);
    send_all(fd, two, sizeof(two) - 1);
    pump_read(fd, buf, sizeof(buf), 0, 1, &eof);
    CU_ASSERT_EQUAL(eof, 1);
    CU_ASSERT_EQUAL(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17), 0);
    second = strstr(buf + 1, "HTTP/1.1 200 OK\r\n");
    CU_ASSERT_PTR_NOT_NULL(second);
    CU_ASSERT_PTR_NOT_NULL(second ? strstr(second, "Connection: close\r\n") : NULL);
    hang_up(fd);

    fd = dial();
    send_all(fd, "GET /healthz HTTP/1.0\r\n\r\n", 25);
    pump_read(fd, buf, sizeof(buf), 0, 1, &eof);
    CU_ASSERT_EQUAL(eof, 1);
    CU_ASSERT_STRING_EQUAL(body_of(buf), "ok\n");
    hang_up(fd);

    fd = dial();
    send_all(fd, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 49);
    pump_read(fd, buf, sizeof(buf), 0, 0, &eof);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\r\nConnection: keep-alive\r\n"));
    CU_ASSERT_EQUAL(eof, 0);
    hang_up(fd);
}

static void test_timeouts(void)
{
    char buf[256];
    int eof, fd;
    double t0, took;

    al_ops_set_timeouts(ops, 0.3, 0.2);
    /* slowloris: trickling header bytes does not extend the header deadline */
    fd = dial();
    t0 = now();
    send_all(fd, "GET /healthz HTTP/1.1\r\n", 23);
    eof = 0;
    for (int i = 0; i < 40 && !eof; i++) {
        ssize_t n;
        send(fd, "X", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        pump(0.025);
        n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        eof = n == 0 || (n < 0 && errno != EAGAIN);
    }
    took = now() - t0;
    CU_ASSERT_EQUAL(eof, 1);
    CU_ASSERT(took < 0.6);
    hang_up(fd);

    /* idle: a silent connection is closed */
    fd = dial();
    pump_read(fd, buf, sizeof(buf), 0, 1, &eof);
    CU_ASSERT_EQUAL(eof, 1);
    hang_up(fd);
    CU_ASSERT_EQUAL(al_ops_connections(ops), 0);
    al_ops_set_timeouts(ops, AL_OPS_IDLE_TIMEOUT, AL_OPS_HEAD_TIMEOUT);
}

static void test_connection_cap(void)
{
    int fds[AL_OPS_MAX_CONNS], extra, eof;
    char buf[512];

    for (int i = 0; i < AL_OPS_MAX_CONNS; i++) {
        fds[i] = dial();
        CU_ASSERT_FATAL(fds[i] >= 0);
    }
    for (int i = 0; i < 500 && al_ops_connections(ops) < AL_OPS_MAX_CONNS; i++)
        pump(0.002);
    CU_ASSERT_EQUAL(al_ops_connections(ops), AL_OPS_MAX_CONNS);
    extra = dial();
    CU_ASSERT_FATAL(extra >= 0);
    pump_read(extra, buf, sizeof(buf), 0, 1, &eof);
    CU_ASSERT_EQUAL(strncmp(buf, "HTTP/1.1 503 Service Unavailable\r\n", 34), 0);
    CU_ASSERT_EQUAL(eof, 1);
    close(extra);
    for (int i = 0; i < AL_OPS_MAX_CONNS; i++)
        close(fds[i]);
    for (int i = 0; i < 500 && al_ops_connections(ops); i++)
        pump(0.002);
    CU_ASSERT_EQUAL(al_ops_connections(ops), 0);
}

static void test_addr(void)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char text[AL_ADDR_STRLEN];
    int fd = -1;

    CU_ASSERT_EQUAL(al_addr_parse("127.0.0.1:8080", &ss, &len), 0);
    CU_ASSERT_EQUAL(len, sizeof(struct sockaddr_in));
    CU_ASSERT_STRING_EQUAL(al_addr_format((struct sockaddr *)&ss, text, sizeof(text)),
                           "127.0.0.1:8080");
    CU_ASSERT_EQUAL(al_addr_parse("localhost:1", &ss, &len), 0);
    CU_ASSERT_STRING_EQUAL(al_addr_format((struct sockaddr *)&ss, text, sizeof(text)),
                           "127.0.0.1:1");
    CU_ASSERT_EQUAL(al_addr_parse("[::1]:443", &ss, &len), 0);
    CU_ASSERT_EQUAL(len, sizeof(struct sockaddr_in6));
    CU_ASSERT_STRING_EQUAL(al_addr_format((struct sockaddr *)&ss, text, sizeof(text)), "[::1]:443");
    CU_ASSERT_EQUAL(al_addr_parse("[::]:0", &ss, &len), 0);
    CU_ASSERT_EQUAL(al_addr_parse("0.0.0.0:65535", &ss, &len), 0);
    CU_ASSERT_EQUAL(al_addr_parse("0.0.0.0:65536", &ss, &len), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_addr_parse("::1:443", &ss, &len), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_addr_parse("[::1]", &ss, &len), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_addr_parse("[::1]443", &ss, &len), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_addr_parse("example.com:80", &ss, &len), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_addr_parse(":80", &ss, &len), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_addr_parse("1.2.3.4:", &ss, &len), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_addr_parse("1.2.3.4:+80", &ss, &len), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_addr_parse("1.2.3.4", &ss, &len), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_addr_parse("[fe80::1%eth0]:80", &ss, &len), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_addr_parse(NULL, &ss, &len), AL_ERR_INVAL);

    CU_ASSERT_EQUAL_FATAL(al_listen_tcp("127.0.0.1:0", 8, &fd), 0);
    CU_ASSERT(al_addr_local_port(fd) > 0);
    close(fd);
    CU_ASSERT_EQUAL(al_listen_tcp("nonsense", 8, &fd), AL_ERR_INVAL);
}

static void test_port_in_use(void)
{
    char addr[64];
    struct al_ops *other = NULL;

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    CU_ASSERT_EQUAL(al_ops_new(loop, addr, NULL, &other), -EADDRINUSE);
    CU_ASSERT_PTR_NULL(other);
    CU_ASSERT_EQUAL(al_ops_new(loop, "bogus", NULL, &other), AL_ERR_INVAL);
    al_ops_free(NULL);
}

static int suite_init(void)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop || al_metrics_new(&metrics) < 0 || al_ops_new(loop, "127.0.0.1:0", metrics, &ops) < 0)
        return -1;
    al_ops_set_ready_cb(ops, ready_cb, NULL);
    port = al_ops_port(ops);
    return port > 0 ? 0 : -1;
}

static int suite_cleanup(void)
{
    al_ops_free(ops);
    al_metrics_free(metrics);
    ev_loop_destroy(loop);
    return 0;
}

int main(void)
{
    CU_pSuite s;
    int failed;

    al_log_min_level = AL_LOG_WARN;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("ops", suite_init, suite_cleanup);
    CU_add_test(s, "addresses and listening sockets", test_addr);
    CU_add_test(s, "/healthz and keep-alive", test_healthz);
    CU_add_test(s, "/readyz both states", test_readyz);
    CU_add_test(s, "/metrics", test_metrics);
    CU_add_test(s, "HEAD", test_head);
    CU_add_test(s, "404 405 413 400 431", test_errors);
    CU_add_test(s, "extra routes", test_routes);
    CU_add_test(s, "pipelining and HTTP/1.0", test_pipelining_and_http10);
    CU_add_test(s, "header and idle timeouts", test_timeouts);
    CU_add_test(s, "connection cap", test_connection_cap);
    CU_add_test(s, "port in use, bad address", test_port_in_use);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
