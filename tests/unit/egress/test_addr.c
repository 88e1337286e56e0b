/*
 * Unit tests for the address checks in the egress proxy's mode
 * (rl_addr_denied_ex with RL_ADDR_DENY_PRIVATE | RL_ADDR_NO_OVERRIDE):
 * loopback, this-network, link-local and metadata, CGNAT, multicast and the
 * IPv6 forms embedding IPv4 stay denied whatever allow_cidrs say; private
 * ranges (RFC 1918, ULA, site-local) are denied unless covered; public
 * addresses pass. And the gateway's mode (no flags) is unchanged: private
 * ranges pass, allow entries re-open denied ones.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "upstream.h"

#define EGRESS (RL_ADDR_DENY_PRIVATE | RL_ADDR_NO_OVERRIDE)

static struct rl_cidr allow[RL_UPSTREAM_MAX_ALLOW];
static size_t nallow;

static void allow_set(const char *const *list)
{
    nallow = 0;
    for (; list && *list; list++)
        CU_ASSERT_EQUAL_FATAL(rl_cidr_parse(*list, &allow[nallow++]), 0);
}

static int denied(const char *a, unsigned flags)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (strchr(a, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        CU_ASSERT_EQUAL_FATAL(inet_pton(AF_INET6, a, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        CU_ASSERT_EQUAL_FATAL(inet_pton(AF_INET, a, &s4->sin_addr), 1);
    }
    return rl_addr_denied_ex((struct sockaddr *)&ss, allow, nallow, flags);
}

static void expect(const char *a, unsigned flags, int want)
{
    int got = denied(a, flags);

    CU_ASSERT_EQUAL(got, want);
    if (got != want)
        fprintf(stderr, "\n  %s (flags %u): %s, want %s\n", a, flags, got ? "denied" : "allowed",
                want ? "denied" : "allowed");
}

static void test_always_denied(void)
{
    static const char *const everything[] = {
        "0.0.0.0/0",     "::/0",      "127.0.0.0/8", "169.254.0.0/16", "0.0.0.0/8", "100.64.0.0/10",
        "::ffff:0:0/96", "fe80::/10", "::1/128",     "fd00::/8",       NULL};
    static const char *const addrs[] = {
        "127.0.0.1",   "0.0.0.0",         "0.1.2.3",       "169.254.169.254",  "100.64.0.1",
        "224.0.0.1",   "255.255.255.255", "198.18.0.1",    "192.0.0.170",      "::1",
        "::",          "fe80::1",         "ff02::1",       "::ffff:127.0.0.1", "::ffff:10.0.0.1",
        "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::", "2001:0:7f00:1::",  "fd00:ec2::254",
        NULL};

    for (int pass = 0; pass < 2; pass++) {
        allow_set(pass ? everything : NULL);
        for (int i = 0; addrs[i]; i++)
            expect(addrs[i], EGRESS, 1);
    }
}

static void test_private(void)
{
    static const char *const net10[] = {"10.213.7.0/30", "fd13:213:7::/64", NULL};
    static const char *const priv[] = {"10.0.0.1",   "10.255.255.255", "172.16.0.1",
                                       "172.31.9.9", "192.168.1.1",    "fd12::1",
                                       "fc00::1",    "fec0::1",        NULL};

    allow_set(NULL);
    for (int i = 0; priv[i]; i++) {
        expect(priv[i], EGRESS, 1);
        expect(priv[i], 0, 0); /* the gateway's mode allows private ranges */
    }
    expect("172.15.255.255", EGRESS, 0);
    expect("172.32.0.0", EGRESS, 0);
    expect("8.8.8.8", EGRESS, 0);
    expect("2606:4700::1111", EGRESS, 0);
    allow_set(net10);
    expect("10.213.7.2", EGRESS, 0);
    expect("10.213.7.4", EGRESS, 1);
    expect("fd13:213:7::2", EGRESS, 0);
    expect("fd13:213:8::2", EGRESS, 1);
    expect("::ffff:10.213.7.2", EGRESS, 1); /* the mapped form stays denied */
}

static void test_gateway_mode_unchanged(void)
{
    static const char *const lo[] = {"127.0.0.1/32", NULL};

    allow_set(NULL);
    expect("127.0.0.1", 0, 1);
    allow_set(lo);
    expect("127.0.0.1", 0, 0);
    expect("127.0.0.1", EGRESS, 1);
    CU_ASSERT_EQUAL(rl_addr_denied_ex(NULL, NULL, 0, EGRESS), 1);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("egress address checks", NULL, NULL);
    CU_add_test(s, "special ranges denied whatever is allowed", test_always_denied);
    CU_add_test(s, "private ranges only where allowed", test_private);
    CU_add_test(s, "the gateway's mode is unchanged", test_gateway_mode_unchanged);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
