/*
 * Unit tests for al_resolve: numeric answers without a lookup, names from
 * /etc/hosts through c-ares on the loop, host:port splitting, cancel. DNS
 * servers are pointed at loopback so no query ever leaves this machine.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "al_resolve.h"

static struct ev_loop *loop;

struct answer {
    int done, status;
    size_t n;
    char first[64];
    int port;
};

static void cb(struct al_resolve_req *req, int status, const struct al_resolve_result *res,
               void *user)
{
    struct answer *a = user;
    (void)req;
    a->done = 1;
    a->status = status;
    if (status == 0) {
        a->n = res->n;
        if (res->addr[0].ss_family == AF_INET) {
            const struct sockaddr_in *s = (const void *)&res->addr[0];
            inet_ntop(AF_INET, &s->sin_addr, a->first, sizeof(a->first));
            a->port = ntohs(s->sin_port);
        } else {
            const struct sockaddr_in6 *s = (const void *)&res->addr[0];
            inet_ntop(AF_INET6, &s->sin6_addr, a->first, sizeof(a->first));
            a->port = ntohs(s->sin6_port);
        }
    }
}

static void wait_for(struct answer *a)
{
    ev_tstamp end = ev_time() + 15;
    while (!a->done && ev_time() < end)
        ev_run(loop, EVRUN_ONCE);
}

static struct al_resolver *new_resolver(void)
{
    struct al_resolver *r = NULL;
    CU_ASSERT_FATAL(al_resolver_new(loop, &r) == 0);
    /* a closed loopback port: lookups that reach DNS fail here, not on the network */
    CU_ASSERT(al_resolver_set_servers(r, "127.0.0.1:9") == 0);
    return r;
}

static void test_numeric(void)
{
    struct al_resolver *r = new_resolver();
    struct answer a = {0}, b = {0};
    CU_ASSERT_EQUAL(al_resolve(r, "127.0.0.1", 7400, cb, &a, NULL), 0);
    CU_ASSERT_EQUAL(a.done, 0); /* never inside al_resolve() */
    CU_ASSERT_EQUAL(al_resolve(r, "::1", 443, cb, &b, NULL), 0);
    wait_for(&a);
    wait_for(&b);
    CU_ASSERT_EQUAL(a.status, 0);
    CU_ASSERT_STRING_EQUAL(a.first, "127.0.0.1");
    CU_ASSERT_EQUAL(a.port, 7400);
    CU_ASSERT_EQUAL(b.status, 0);
    CU_ASSERT_STRING_EQUAL(b.first, "::1");
    al_resolver_free(r);
}

static void test_hosts_file_name(void)
{
    /* "localhost" is mapped without a lookup; a name only in /etc/hosts goes
     * through c-ares. Use this machine's first /etc/hosts alias that is not
     * localhost, if there is one. */
    char name[128] = "";
    FILE *f = fopen("/etc/hosts", "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f)) {
        char ip[64], n1[128];
        if (sscanf(line, "%63s %127s", ip, n1) == 2 && ip[0] != '#' &&
            strcmp(ip, "127.0.0.1") == 0 && strcmp(n1, "localhost") != 0) {
            snprintf(name, sizeof(name), "%s", n1);
            break;
        }
    }
    if (f)
        fclose(f);
    if (!name[0]) {
        printf("\nSKIP resolve: /etc/hosts has no non-localhost 127.0.0.1 alias to resolve\n");
        return;
    }
    struct al_resolver *r = new_resolver();
    struct answer a = {0};
    CU_ASSERT_EQUAL(al_resolve(r, name, 80, cb, &a, NULL), 0);
    wait_for(&a);
    CU_ASSERT_EQUAL(a.status, 0);
    CU_ASSERT_STRING_EQUAL(a.first, "127.0.0.1");
    CU_ASSERT_EQUAL(a.port, 80);
    al_resolver_free(r);
}

static void test_unknown_name(void)
{
    struct al_resolver *r = new_resolver();
    struct answer a = {0};
    CU_ASSERT_EQUAL(al_resolve(r, "no-such-host.invalid", 80, cb, &a, NULL), 0);
    wait_for(&a);
    CU_ASSERT_EQUAL(a.done, 1);
    CU_ASSERT(a.status == AL_ERR_NOTFOUND || a.status == AL_ERR_TIMEOUT);
    al_resolver_free(r);
}

static void test_cancel(void)
{
    struct al_resolver *r = new_resolver();
    struct answer a = {0}, b = {0};
    struct al_resolve_req *q1, *q2;
    CU_ASSERT_EQUAL(al_resolve(r, "127.0.0.1", 1, cb, &a, &q1), 0);
    CU_ASSERT_EQUAL(al_resolve(r, "no-such-host.invalid", 1, cb, &b, &q2), 0);
    al_resolve_cancel(q1);
    al_resolve_cancel(q2);
    ev_tstamp end = ev_time() + 0.2;
    while (ev_time() < end)
        ev_run(loop, EVRUN_NOWAIT);
    CU_ASSERT_EQUAL(a.done, 0);
    CU_ASSERT_EQUAL(b.done, 0);
    al_resolver_free(r); /* frees the detached request without a callback */
    CU_ASSERT_EQUAL(b.done, 0);
    r = new_resolver();
    CU_ASSERT_EQUAL(al_resolve(r, "", 1, cb, &a, NULL), AL_ERR_INVAL);
    al_resolver_free(r);
}

static void test_split(void)
{
    char h[64];
    int p;
    CU_ASSERT_EQUAL(al_split_hostport("intake.airlock.svc:7400", h, sizeof(h), &p), 0);
    CU_ASSERT_STRING_EQUAL(h, "intake.airlock.svc");
    CU_ASSERT_EQUAL(p, 7400);
    CU_ASSERT_EQUAL(al_split_hostport("[::1]:443", h, sizeof(h), &p), 0);
    CU_ASSERT_STRING_EQUAL(h, "::1");
    CU_ASSERT_EQUAL(al_split_hostport("::1:443", h, sizeof(h), &p), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_split_hostport("host", h, sizeof(h), &p), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_split_hostport("host:", h, sizeof(h), &p), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_split_hostport(":80", h, sizeof(h), &p), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_split_hostport("host:65536", h, sizeof(h), &p), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_split_hostport("host:8x", h, sizeof(h), &p), AL_ERR_INVAL);
}

int main(void)
{
    CU_pSuite s;
    int failed;
    loop = EV_DEFAULT;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("resolve", NULL, NULL);
    CU_add_test(s, "numeric addresses answer from the loop", test_numeric);
    CU_add_test(s, "a name from /etc/hosts through c-ares", test_hosts_file_name);
    CU_add_test(s, "an unknown name fails (DNS on loopback only)", test_unknown_name);
    CU_add_test(s, "cancelled requests never call back", test_cancel);
    CU_add_test(s, "host:port splitting", test_split);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
