/*
 * Unit tests for the upstream address policy (addrpolicy.c): every denied
 * range at and just outside its boundaries, the allowed private ranges,
 * IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64 at each
 * RFC 6052 position, 6to4, Teredo server and client) carrying loopback and
 * metadata addresses, allow-list CIDRs of both families and their limits,
 * and rl_cidr_parse on good and bad text.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "upstream.h"

static struct rl_cidr allow[RL_UPSTREAM_MAX_ALLOW];
static size_t nallow;

static void allow_set(const char *const *list)
{
    nallow = 0;
    for (; list && *list; list++) {
        CU_ASSERT_EQUAL_FATAL(rl_cidr_parse(*list, &allow[nallow]), 0);
        nallow++;
    }
}

/* Is the textual address a denied with the current allow list? */
static int denied(const char *a)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(a, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(443);
        CU_ASSERT_EQUAL_FATAL(inet_pton(AF_INET6, a, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(443);
        CU_ASSERT_EQUAL_FATAL(inet_pton(AF_INET, a, &s4->sin_addr), 1);
    }
    return rl_addr_denied((struct sockaddr *)&ss, allow, nallow);
}

static void expect(const char *a, int want)
{
    int got = denied(a);
    CU_ASSERT_EQUAL(got, want);
    if (got != want)
        fprintf(stderr, "\n  %s: %s, want %s (allow list of %zu)\n", a, got ? "denied" : "allowed",
                want ? "denied" : "allowed", nallow);
}

#define DENY(a)  expect((a), 1)
#define ALLOW(a) expect((a), 0)

static void test_v4_ranges(void)
{
    allow_set(NULL);
    /* 0.0.0.0/8 */
    DENY("0.0.0.0");
    DENY("0.255.255.255");
    ALLOW("1.0.0.0");
    /* 127.0.0.0/8 */
    ALLOW("126.255.255.255");
    DENY("127.0.0.0");
    DENY("127.0.0.1");
    DENY("127.255.255.255");
    ALLOW("128.0.0.0");
    /* 169.254.0.0/16 and the metadata address */
    ALLOW("169.253.255.255");
    DENY("169.254.0.0");
    DENY("169.254.169.254");
    DENY("169.254.255.255");
    ALLOW("169.255.0.0");
    /* 100.64.0.0/10 */
    ALLOW("100.63.255.255");
    DENY("100.64.0.0");
    DENY("100.127.255.255");
    ALLOW("100.128.0.0");
    /* 192.0.0.0/24 */
    ALLOW("191.255.255.255");
    DENY("192.0.0.0");
    DENY("192.0.0.170");
    DENY("192.0.0.255");
    ALLOW("192.0.1.0");
    /* 198.18.0.0/15 */
    ALLOW("198.17.255.255");
    DENY("198.18.0.0");
    DENY("198.19.255.255");
    ALLOW("198.20.0.0");
    /* 224.0.0.0/4 and 240.0.0.0/4 up to the broadcast address */
    ALLOW("223.255.255.255");
    DENY("224.0.0.0");
    DENY("239.255.255.255");
    DENY("240.0.0.0");
    DENY("255.255.255.255");
}

static void test_v4_private_and_public(void)
{
    allow_set(NULL);
    /* private MCP servers live in RFC 1918 space */
    ALLOW("10.0.0.0");
    ALLOW("10.255.255.255");
    ALLOW("172.16.0.1");
    ALLOW("172.31.255.255");
    ALLOW("192.168.1.10");
    ALLOW("8.8.8.8");
    ALLOW("203.0.113.7");
}

static void test_v6_ranges(void)
{
    allow_set(NULL);
    DENY("::");
    DENY("::1");
    /* fe80::/10 */
    ALLOW("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    DENY("fe80::");
    DENY("fe80::1");
    DENY("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    ALLOW("fec0::1");
    /* ff00::/8 */
    DENY("ff00::");
    DENY("ff02::1");
    DENY("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    ALLOW("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    /* NAT64 64:ff9b::/96 */
    DENY("64:ff9b::");
    DENY("64:ff9b::a00:1");
    DENY("64:ff9b::ffff:ffff");
    ALLOW("64:ff9b::1:0:0"); /* outside the /96, no embedding */
    /* NAT64 local-use 64:ff9b:1::/48 */
    DENY("64:ff9b:1::");
    DENY("64:ff9b:1:ffff:ffff:ffff:ffff:ffff");
    ALLOW("64:ff9b:2::");
    /* 6to4 2002::/16 */
    ALLOW("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    DENY("2002::");
    DENY("2002:a00:1::1");
    DENY("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    ALLOW("2003::");
    /* Teredo 2001::/32 */
    DENY("2001::");
    DENY("2001:0:ffff:ffff:ffff:ffff:ffff:ffff");
    ALLOW("2001:1::");
    ALLOW("2001:db8::1");
    /* IPv4-mapped and IPv4-compatible */
    DENY("::ffff:10.0.0.1");
    DENY("::ffff:8.8.8.8");
    DENY("::10.0.0.1");
    DENY("::0.0.0.2");
    ALLOW("0:0:0:0:0:1::"); /* just past ::ffff:0:0/96 and ::/96 */
    ALLOW("::1:0:0:0");
    /* AWS metadata over IPv6, exactly */
    DENY("fd00:ec2::254");
    ALLOW("fd00:ec2::253");
    ALLOW("fd00:ec2::255");
    /* unique local and global addresses are fine */
    ALLOW("fd12:3456::1");
    ALLOW("2a00:1450:4001::1");
}

static void test_embedded_v4(void)
{
    /* the IPv6 ranges are allowed; the embedded IPv4 address still decides */
    static const char *const v6ok[] = {
        "::ffff:0:0/96", "::/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32", NULL};
    allow_set(v6ok);
    ALLOW("::ffff:10.0.0.1");
    DENY("::ffff:127.0.0.1");
    DENY("::ffff:169.254.169.254");
    ALLOW("::10.1.2.3");
    DENY("::127.0.0.1");
    DENY("::169.254.169.254");
    DENY("::");   /* embeds 0.0.0.0 */
    ALLOW("::1"); /* the IPv6 loopback itself, covered by ::/96 here */
    ALLOW("64:ff9b::10.0.0.1");
    DENY("64:ff9b::127.0.0.1");
    DENY("64:ff9b::169.254.169.254");
    /* local-use NAT64, each RFC 6052 position carrying 127.0.0.1 */
    DENY("64:ff9b:1:7f00:0:100::");         /* /48: bits 48..63 and 72..87 */
    DENY("64:ff9b:1:7f:0:1::");             /* /56: bits 56..63 and 72..95 */
    DENY("64:ff9b:1:0:7f:0:100:0");         /* /64: bits 72..103 */
    DENY("64:ff9b:1::7f00:1");              /* /96 */
    DENY("64:ff9b:1::a9fe:a9fe");           /* metadata at /96 */
    ALLOW("64:ff9b:1:a0a:a0a:a0a:a0a:a0a"); /* 10.10.10.10 at every position */
    DENY("64:ff9b:1:a0a:a0a:a0a:7f00:1");   /* 10.10.10.x at /48../64, loopback at /96 */
    /* 6to4 */
    ALLOW("2002:a00:1::1");
    DENY("2002:7f00:1::1");
    DENY("2002:a9fe:a9fe::1");
    /* Teredo: server in bits 32..63, client in the last 32 bits, inverted */
    ALLOW("2001:0:a00:1::f5ff:fffe"); /* server 10.0.0.1, client 10.0.0.1 */
    DENY("2001:0:7f00:1::f5ff:fffe"); /* server 127.0.0.1 */
    DENY("2001:0:a00:1::80ff:fffe");  /* client 127.0.0.1 */
    DENY("2001:0:a00:1::5601:5601");  /* client 169.254.169.254 */
    /* an allow entry for the embedded address lets it through */
    static const char *const with_lo[] = {"::ffff:0:0/96", "127.0.0.1/32", NULL};
    allow_set(with_lo);
    ALLOW("::ffff:127.0.0.1");
    ALLOW("127.0.0.1");
    DENY("::ffff:127.0.0.2");
    DENY("64:ff9b::127.0.0.1"); /* the NAT64 form itself is still denied */
    /* an IPv4 entry alone does not open the mapped IPv6 form */
    static const char *const v4_only[] = {"127.0.0.1/32", NULL};
    allow_set(v4_only);
    DENY("::ffff:127.0.0.1");
    ALLOW("127.0.0.1");
}

static void test_allow_list(void)
{
    static const char *const list[] = {"127.0.0.1/32", "169.254.169.0/24", "::1/128",
                                       "fe80::/64",    "100.64.0.0/10",    NULL};
    allow_set(list);
    ALLOW("127.0.0.1");
    DENY("127.0.0.2");
    DENY("127.0.0.0");
    ALLOW("169.254.169.254");
    ALLOW("169.254.169.0");
    ALLOW("169.254.169.255");
    DENY("169.254.170.0");
    DENY("169.254.168.255");
    ALLOW("::1");
    DENY("::");
    ALLOW("fe80::1");
    ALLOW("fe80::ffff:ffff:ffff:ffff");
    DENY("fe80:0:0:1::1");
    ALLOW("100.64.0.1");
    ALLOW("100.127.255.255");
    /* families never cross: an IPv4 entry covers no IPv6 address */
    static const char *const zero4[] = {"0.0.0.0/0", NULL};
    allow_set(zero4);
    ALLOW("127.0.0.1");
    ALLOW("255.255.255.255");
    DENY("::1");
    DENY("fe80::1");
    static const char *const zero6[] = {"::/0", NULL};
    allow_set(zero6);
    ALLOW("::1");
    DENY("::"); /* embeds 0.0.0.0 */
    ALLOW("ff02::1");
    DENY("::ffff:127.0.0.1"); /* embedded loopback still judged as IPv4 */
    ALLOW("::ffff:10.0.0.1");
    DENY("127.0.0.1");
}

static void test_other_families(void)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    ss.ss_family = AF_UNIX;
    allow_set(NULL);
    CU_ASSERT_EQUAL(rl_addr_denied((struct sockaddr *)&ss, NULL, 0), 1);
    CU_ASSERT_EQUAL(rl_addr_denied(NULL, NULL, 0), 1);
    /* NULL allow list with a count of 0 is fine */
    struct sockaddr_in s4 = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.0.0.1", &s4.sin_addr);
    CU_ASSERT_EQUAL(rl_addr_denied((struct sockaddr *)&s4, NULL, 0), 0);
    inet_pton(AF_INET, "127.0.0.1", &s4.sin_addr);
    CU_ASSERT_EQUAL(rl_addr_denied((struct sockaddr *)&s4, NULL, 0), 1);
}

static void parse_ok(const char *s, int family, unsigned prefix, const char *addr)
{
    struct rl_cidr c;
    uint8_t want[16] = {0};
    int rc = rl_cidr_parse(s, &c);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "\n  should parse: \"%s\"\n", s);
        return;
    }
    CU_ASSERT_EQUAL(c.family, family);
    CU_ASSERT_EQUAL(c.prefix, prefix);
    CU_ASSERT_EQUAL(inet_pton(family, addr, want), 1);
    CU_ASSERT(memcmp(c.addr, want, family == AF_INET ? 4 : 16) == 0);
}

static void parse_bad(const char *s)
{
    struct rl_cidr c;
    memset(&c, 0x5a, sizeof(c));
    int rc = rl_cidr_parse(s, &c);
    CU_ASSERT_EQUAL(rc, AL_ERR_INVAL);
    if (rc != AL_ERR_INVAL)
        fprintf(stderr, "\n  should be rejected: \"%s\"\n", s);
    CU_ASSERT_EQUAL(c.family, 0); /* zeroed on failure */
    CU_ASSERT_EQUAL(c.prefix, 0);
}

static void test_cidr_parse(void)
{
    parse_ok("10.1.2.0/24", AF_INET, 24, "10.1.2.0");
    parse_ok("127.0.0.1/32", AF_INET, 32, "127.0.0.1");
    parse_ok("0.0.0.0/0", AF_INET, 0, "0.0.0.0");
    parse_ok("100.64.0.0/10", AF_INET, 10, "100.64.0.0");
    parse_ok("::1/128", AF_INET6, 128, "::1");
    parse_ok("::/0", AF_INET6, 0, "::");
    parse_ok("fd00:ec2::254/128", AF_INET6, 128, "fd00:ec2::254");
    parse_ok("2001:DB8::/32", AF_INET6, 32, "2001:db8::");
    parse_ok("::ffff:127.0.0.1/128", AF_INET6, 128, "::ffff:127.0.0.1");

    parse_bad(NULL);
    parse_bad("");
    parse_bad("/");
    parse_bad("10.0.0.0"); /* no prefix length */
    parse_bad("10.0.0.0/");
    parse_bad("/24");
    parse_bad("10.0.0.0/33");
    parse_bad("::/129");
    parse_bad("10.0.0.0/-1");
    parse_bad("10.0.0.0/+8");
    parse_bad("10.0.0.0/08"); /* leading zero */
    parse_bad("10.0.0.0/1000");
    parse_bad("10.0.0.0/8/8");
    parse_bad("10.0.0.0/8 ");
    parse_bad(" 10.0.0.0/8");
    parse_bad("10.0.0.0 /8");
    parse_bad("10.0.0.0/ 8");
    parse_bad("10.0.0.0/0x8");
    parse_bad("10.1.2.3/24"); /* host bits set */
    parse_bad("::1/64");
    parse_bad("10.0.0/24"); /* short forms are not addresses here */
    parse_bad("10/8");
    parse_bad("010.0.0.0/8"); /* leading zero: octal to some parsers */
    parse_bad("0x0a.0.0.0/8");
    parse_bad("2130706433/32");
    parse_bad("256.0.0.0/8");
    parse_bad("10.0.0.0.0/8");
    parse_bad("fe80::1%eth0/128"); /* zone id */
    parse_bad("[::1]/128");
    parse_bad("::1::/128");
    parse_bad("localhost/32");
    parse_bad("10.0.0.0/8\n");
    parse_bad("1234:5678:9abc:def0:1234:5678:9abc:def0:1/128");
    CU_ASSERT_EQUAL(rl_cidr_parse("10.0.0.0/8", NULL), AL_ERR_INVAL);
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("relay addrpolicy", NULL, NULL);
    CU_add_test(s, "IPv4 denied ranges and boundaries", test_v4_ranges);
    CU_add_test(s, "IPv4 private and public allowed", test_v4_private_and_public);
    CU_add_test(s, "IPv6 denied ranges and boundaries", test_v6_ranges);
    CU_add_test(s, "IPv6 forms embedding IPv4", test_embedded_v4);
    CU_add_test(s, "allow-list CIDRs", test_allow_list);
    CU_add_test(s, "other families and NULLs", test_other_families);
    CU_add_test(s, "rl_cidr_parse good and bad", test_cidr_parse);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
