/*
 * Unit tests for the forward-proxy opt-ins of the HTTP/1.1 server
 * connection (h1.c) the egress proxy uses: proxy_forms (absolute-form
 * targets, CONNECT with an authority-form target and no body, other forms
 * refused), error_prefix (text error bodies), on_reject (h1's own
 * refusals reported to the upper layer), and rl_h1conn_detach (after a
 * CONNECT: the socket and the bytes that followed the head handed over,
 * no on_close). The relay's behaviour without the opt-ins is covered by
 * tests/unit/relay/test_h1.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <ev.h>

#include "al_err.h"
#include "al_log.h"
#include "h1.h"
#include "rlbuf.h"

static struct ev_loop *loop;

struct app {
    struct rl_h1conn *c;
    int requests, body_end, closed, rejected, reject_status;
    char method[16], target[256];
    int detach;
    int fd;
    struct rl_buf rest;
};

static int on_request(struct rl_h1conn *c, const struct rl_h1_head *h, void *user)
{
    struct app *a = user;

    a->requests++;
    snprintf(a->method, sizeof(a->method), "%s", h->method);
    snprintf(a->target, sizeof(a->target), "%s", h->target);
    if (!a->detach)
        rl_h1conn_respond(c, 200, NULL, 0, (const uint8_t *)"ok", 2, 1);
    return 0;
}

static void on_body_end(struct rl_h1conn *c, void *user)
{
    (void)c;
    ((struct app *)user)->body_end++;
}

static void on_close(struct rl_h1conn *c, int err, void *user)
{
    struct app *a = user;
    (void)c;
    (void)err;
    a->closed++;
    a->c = NULL; /* freed by the loop after this call */
}

static void on_reject(struct rl_h1conn *c, int status, const char *why, void *user)
{
    struct app *a = user;
    (void)c;
    (void)why;
    a->rejected++;
    a->reject_status = status;
}

static const struct rl_h1conn_cbs cbs = {on_request, NULL, on_body_end, NULL, on_close, on_reject};

static void spin(int n)
{
    for (int i = 0; i < n; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        usleep(1000);
    }
}

/* A connection over a socketpair; returns the client end. */
static int start(struct app *a, int proxy)
{
    struct rl_h1_limits l = {.proxy_forms = proxy, .error_prefix = "airlock-egress"};
    int sv[2];

    memset(a, 0, sizeof(*a));
    rl_buf_init(&a->rest, 0);
    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    CU_ASSERT_EQUAL_FATAL(rl_h1conn_new(loop, sv[0], NULL, &l, &cbs, a, &a->c), 0);
    return sv[1];
}

static void reply(int fd, char *buf, size_t cap)
{
    size_t n = 0;

    fcntl(fd, F_SETFL, O_NONBLOCK);
    for (int i = 0; i < 200 && n + 1 < cap; i++) {
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r > 0)
            n += (size_t)r;
        else if (r == 0)
            break;
        spin(1);
    }
    buf[n] = '\0';
}

static void exchange(const char *req, int proxy, struct app *a, char *out, size_t cap)
{
    int fd = start(a, proxy);

    CU_ASSERT_EQUAL(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
    spin(5);
    shutdown(fd, SHUT_WR);
    reply(fd, out, cap);
    close(fd);
    spin(5);
    if (a->c)
        rl_h1conn_close(a->c);
    spin(5);
    rl_buf_cleanup(&a->rest);
}

static void test_forms(void)
{
    struct app a;
    char out[2048];

    exchange("GET http://plain.test/a?b HTTP/1.1\r\nHost: plain.test\r\n\r\n", 1, &a, out,
             sizeof(out));
    CU_ASSERT_EQUAL(a.requests, 1);
    CU_ASSERT_STRING_EQUAL(a.target, "http://plain.test/a?b");
    CU_ASSERT(strncmp(out, "HTTP/1.1 200", 12) == 0);
    exchange("GET http://[::1]:8080/ HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 1, &a, out,
             sizeof(out));
    CU_ASSERT_STRING_EQUAL(a.target, "http://[::1]:8080/");
    exchange("GET /origin HTTP/1.1\r\nHost: x\r\n\r\n", 1, &a, out, sizeof(out));
    CU_ASSERT_STRING_EQUAL(a.target, "/origin");
    exchange("CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n", 1, &a, out,
             sizeof(out));
    CU_ASSERT_STRING_EQUAL(a.method, "CONNECT");
    CU_ASSERT_STRING_EQUAL(a.target, "api.test:443");
    /* refused shapes: each with a text reason and on_reject */
    static const struct {
        const char *req, *why;
        int proxy, status;
    } bad[] = {
        {"CONNECT api.test:443 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
         "CONNECT with a body", 1, 400},
        {"CONNECT api.test:443/x HTTP/1.1\r\nHost: a\r\n\r\n", "authority form", 1, 400},
        {"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "origin or absolute form", 1, 400},
        {"GET plain.test/x HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400", 1, 400},
        {"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", "origin form", 0, 400},
        {"CONNECT api.test:443 HTTP/1.1\r\nHost: a\r\n\r\n", "origin form", 0, 400},
        {"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n", "method not supported", 0, 501},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        exchange(bad[i].req, bad[i].proxy, &a, out, sizeof(out));
        CU_ASSERT_EQUAL(a.requests, 0);
        CU_ASSERT_EQUAL(a.rejected, 1);
        CU_ASSERT_EQUAL(a.reject_status, bad[i].status);
        CU_ASSERT(strstr(out, bad[i].why) != NULL);
        if (bad[i].proxy)
            CU_ASSERT(strstr(out, "\r\n\r\nairlock-egress: ") != NULL &&
                      strstr(out, "text/plain") != NULL);
        if (!strstr(out, bad[i].why))
            fprintf(stderr, "\n  %s -> %.120s\n", bad[i].req, out);
    }
}

static void test_detach(void)
{
    struct app a;
    int fd = start(&a, 1), got = -1;
    SSL *ssl = (SSL *)1;
    const char *req = "CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n"
                      "\x16\x03\x01"
                      "early";
    char buf[64];

    a.detach = 1;
    CU_ASSERT_EQUAL(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
    for (int i = 0; i < 50 && !a.body_end; i++)
        spin(1);
    CU_ASSERT_EQUAL_FATAL(a.body_end, 1);
    spin(3); /* the early bytes are read ahead */
    CU_ASSERT_EQUAL(rl_h1conn_detach(a.c, &got, &ssl, &a.rest), 0);
    CU_ASSERT(got >= 0);
    CU_ASSERT_PTR_NULL(ssl);
    CU_ASSERT_EQUAL(a.rest.len, 8);
    CU_ASSERT(memcmp(a.rest.p,
                     "\x16\x03\x01"
                     "early",
                     8) == 0);
    spin(5);
    CU_ASSERT_EQUAL(a.closed, 0); /* no on_close after a detach */
    /* the socket is the caller's now, and still open */
    CU_ASSERT_EQUAL(send(got, "pong", 4, MSG_NOSIGNAL), 4);
    CU_ASSERT_EQUAL(recv(fd, buf, sizeof(buf), 0), 4);
    close(got);
    close(fd);
    rl_buf_cleanup(&a.rest);

    /* not before the request is complete, nor after a response started */
    fd = start(&a, 1);
    a.detach = 1;
    send(fd, "CONNECT a:1 HTTP/1.1\r\n", 22, 0);
    spin(3);
    CU_ASSERT_EQUAL(rl_h1conn_detach(a.c, &got, &ssl, &a.rest), AL_ERR_STATE);
    if (a.c)
        rl_h1conn_close(a.c);
    spin(5);
    close(fd);
    rl_buf_cleanup(&a.rest);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    al_log_set_level_name("error");
    loop = ev_default_loop(0);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("h1 forward-proxy opt-ins", NULL, NULL);
    CU_add_test(s, "proxy_forms, error_prefix, on_reject", test_forms);
    CU_add_test(s, "detach after CONNECT", test_detach);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
