/*
 * Unit tests for the egress proxy's target parsing (target.c): host names
 * (case, trailing dot, labels, non-ASCII, characters), every inet_aton
 * spelling of an IPv4 address and the malformed ones, IPv6 literals
 * (brackets, canonical text, zone ids, mapped forms), authorities (ports,
 * userinfo), absolute-form URLs, origin-form checks, and path
 * normalisation for prefix checks against dot-segment and encoding tricks.
 */
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "target.h"

static int host(const char *s, struct eg_host *h)
{
    const char *why = NULL;
    int rc = eg_host_parse(s, strlen(s), h, &why);
    if (rc < 0)
        CU_ASSERT_PTR_NOT_NULL(why);
    return rc;
}

/* s parses as an IPv4 address whose canonical text is want. */
static void v4(const char *s, const char *want)
{
    struct eg_host h;
    int rc = host(s, &h);

    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(h.kind, EG_HOST_IPV4);
    CU_ASSERT_STRING_EQUAL(h.name, want);
    if (rc != 0 || strcmp(h.name, want) != 0)
        fprintf(stderr, "\n  %s -> %s, want %s\n", s, rc ? "error" : h.name, want);
}

static void bad(const char *s)
{
    struct eg_host h;
    int rc = host(s, &h);

    CU_ASSERT_EQUAL(rc, AL_ERR_INVAL);
    if (rc != AL_ERR_INVAL)
        fprintf(stderr, "\n  %s accepted as %s\n", s, h.name);
}

static void name(const char *s, const char *want)
{
    struct eg_host h;

    CU_ASSERT_EQUAL_FATAL(host(s, &h), 0);
    CU_ASSERT_EQUAL(h.kind, EG_HOST_NAME);
    CU_ASSERT_STRING_EQUAL(h.name, want);
}

static void test_names(void)
{
    char longlab[80], longname[300];

    name("api.example.com", "api.example.com");
    name("API.Example.COM", "api.example.com");
    name("example.com.", "example.com");
    name("localhost", "localhost");
    name("xn--bcher-kva.example", "xn--bcher-kva.example");
    name("a-b.c-d", "a-b.c-d");
    name("0xdead.example.com", "0xdead.example.com"); /* the last label decides */
    name("1.2.3.example", "1.2.3.example");
    bad("");
    bad(".");
    bad("a..b");
    bad(".a");
    name("a.", "a");
    bad("-a.com");
    bad("a-.com");
    bad("a.-b.com");
    bad("b\xc3\xbc"
        "cher.example");
    bad("under_score.example");
    bad("a b.example");
    bad("a%2eb.example");
    bad("user@host");
    bad("*.example.com");
    memset(longlab, 'a', 64);
    longlab[64] = '\0';
    bad(longlab);
    longlab[63] = '\0';
    name(longlab, longlab);
    memset(longname, 'a', 254);
    for (int i = 63; i < 254; i += 64)
        longname[i] = '.';
    longname[254] = '\0';
    bad(longname);
}

static void test_ipv4_forms(void)
{
    v4("127.0.0.1", "127.0.0.1");
    v4("2130706433", "127.0.0.1");
    v4("0177.0.0.1", "127.0.0.1");
    v4("0x7f.0.0.1", "127.0.0.1");
    v4("0x7f.1", "127.0.0.1");
    v4("0X7F.1", "127.0.0.1");
    v4("127.1", "127.0.0.1");
    v4("127.0.1", "127.0.0.1");
    v4("0x7f000001", "127.0.0.1");
    v4("017700000001", "127.0.0.1");
    v4("0", "0.0.0.0");
    v4("0x", "0.0.0.0");
    v4("0.0.0.0", "0.0.0.0");
    v4("169.254.43518", "169.254.169.254");
    v4("0251.0376.0251.0376", "169.254.169.254");
    v4("0xa9.0xfe.0xa9.0xfe", "169.254.169.254");
    v4("2852039166", "169.254.169.254");
    v4("10.1.2.3.", "10.1.2.3");
    v4("255.255.255.255", "255.255.255.255");
    v4("4294967295", "255.255.255.255");
    v4("192.168.0x1.010", "192.168.1.8");
    bad("4294967296");
    bad("256.0.0.1");
    bad("1.2.3.256");
    bad("1.2.65536");
    bad("1.16777216");
    bad("08.0.0.1");
    bad("0189.0.0.1");
    bad("1.2.3.4.5");
    bad("0x1g.1");
    bad("1..2");
    bad("example.123");
    bad("a.0x12");
    bad("99999999999999999999");
}

static void v6(const char *s, const char *want)
{
    struct eg_host h;

    CU_ASSERT_EQUAL_FATAL(host(s, &h), 0);
    CU_ASSERT_EQUAL(h.kind, EG_HOST_IPV6);
    CU_ASSERT_STRING_EQUAL(h.name, want);
}

static void test_ipv6(void)
{
    v6("[::1]", "::1");
    v6("[0:0:0:0:0:0:0:1]", "::1");
    v6("[FD13:0213::0002]", "fd13:213::2");
    v6("[::ffff:127.0.0.1]", "::ffff:127.0.0.1");
    v6("[::ffff:7f00:1]", "::ffff:127.0.0.1");
    v6("[fd00:ec2::254]", "fd00:ec2::254");
    bad("[fe80::1%eth0]");
    bad("[fe80::1%25eth0]");
    bad("[::1");
    bad("[]");
    bad("[1.2.3.4]");
    bad("[::g]");
    bad("::1");
}

static void auth(const char *s, int defport, const char *host_want, int port_want)
{
    struct eg_authority a;
    const char *why = NULL;
    int rc = eg_authority_parse(s, strlen(s), defport, &a, &why);

    CU_ASSERT_EQUAL(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "\n  %s: %s\n", s, why);
        return;
    }
    CU_ASSERT_STRING_EQUAL(a.host.name, host_want);
    CU_ASSERT_EQUAL(a.port, port_want);
}

static void auth_bad(const char *s)
{
    struct eg_authority a;
    const char *why = NULL;

    CU_ASSERT_EQUAL(eg_authority_parse(s, strlen(s), 443, &a, &why), AL_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(why);
}

static void test_authority(void)
{
    char buf[EG_HOSTPORT_MAX];
    struct eg_authority a;
    const char *why;

    auth("api.test:443", 0, "api.test", 443);
    auth("API.test", 443, "api.test", 443);
    auth("api.test:8443", 443, "api.test", 8443);
    auth("[::1]:8080", 443, "::1", 8080);
    auth("[::1]", 443, "::1", 443);
    auth("0x7f.1:443", 0, "127.0.0.1", 443);
    auth("api.test:65535", 0, "api.test", 65535);
    auth_bad("api.test:");
    auth_bad("api.test:0");
    auth_bad("api.test:65536");
    auth_bad("api.test:0443");
    auth_bad("api.test:44a");
    auth_bad("api.test:-1");
    auth_bad("user@api.test:443");
    auth_bad("user:pw@api.test");
    auth_bad("[::1]x");
    auth_bad("[::1]:");
    auth_bad("");
    auth_bad(":443");
    CU_ASSERT_EQUAL(eg_authority_parse("[::1]:80", 8, 443, &a, &why), 0);
    CU_ASSERT_STRING_EQUAL(eg_authority_format(&a, buf, sizeof(buf)), "[::1]:80");
    CU_ASSERT_EQUAL(eg_authority_parse("2130706433:1", 12, 443, &a, &why), 0);
    CU_ASSERT_STRING_EQUAL(eg_authority_format(&a, buf, sizeof(buf)), "127.0.0.1:1");
}

static void url(const char *s, const char *host_want, int port_want, const char *origin_want)
{
    struct eg_authority a;
    char origin[256];
    const char *why = NULL;
    int rc = eg_url_parse(s, strlen(s), &a, origin, sizeof(origin), &why);

    CU_ASSERT_EQUAL(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "\n  %s: %s\n", s, why ? why : "?");
        return;
    }
    CU_ASSERT_STRING_EQUAL(a.host.name, host_want);
    CU_ASSERT_EQUAL(a.port, port_want);
    CU_ASSERT_STRING_EQUAL(origin, origin_want);
}

static void url_bad(const char *s, const char *why_part)
{
    struct eg_authority a;
    char origin[256];
    const char *why = NULL;

    CU_ASSERT_EQUAL(eg_url_parse(s, strlen(s), &a, origin, sizeof(origin), &why), AL_ERR_INVAL);
    CU_ASSERT(why && strstr(why, why_part));
    if (!why || !strstr(why, why_part))
        fprintf(stderr, "\n  %s: %s, want ...%s...\n", s, why ? why : "(none)", why_part);
}

static void test_urls(void)
{
    struct eg_authority a;
    char small[4];
    const char *why;

    url("http://plain.test/echo", "plain.test", 80, "/echo");
    url("HTTP://Plain.Test:8080/a/b?c=d", "plain.test", 8080, "/a/b?c=d");
    url("http://plain.test", "plain.test", 80, "/");
    url("http://plain.test?q=1", "plain.test", 80, "/?q=1");
    url("http://[::1]:81/x", "::1", 81, "/x");
    url("http://0177.0.0.1/", "127.0.0.1", 80, "/");
    url("http://a.test/%41%2f", "a.test", 80, "/%41%2f");
    url_bad("https://api.test/", "CONNECT");
    url_bad("ftp://a.test/", "scheme");
    url_bad("//a.test/", "absolute URL");
    url_bad("http:/a.test/", "absolute URL");
    url_bad("http://user@a.test/", "userinfo");
    url_bad("http://a.test/x#frag", "fragment");
    url_bad("http://a.test#frag", "fragment");
    url_bad("http://a.test/%zz", "percent");
    url_bad("http://a.test/%4", "percent");
    url_bad("http://a.test/a b", "character");
    url_bad("http://a.test/a\"b", "character");
    url_bad("http://a_b.test/", "host");
    url_bad("http://a.test:0/", "port");
    url_bad("http:///x", "authority");
    CU_ASSERT_EQUAL(eg_url_parse("http://a.test/abcdef", 20, &a, small, sizeof(small), &why),
                    AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(eg_origin_check("/a?b=c", 6, &why), 0);
    CU_ASSERT_EQUAL(eg_origin_check("a", 1, &why), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(eg_origin_check("/a#b", 4, &why), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(eg_origin_check("/a%", 3, &why), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(eg_origin_check("/a%2", 4, &why), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(eg_origin_check("/a[", 3, &why), AL_ERR_INVAL);
}

static void norm(const char *s, const char *want)
{
    char out[256];
    const char *why = NULL;
    int rc = eg_path_normalize(s, strlen(s), out, sizeof(out), &why);

    CU_ASSERT_EQUAL(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "\n  %s: %s\n", s, why ? why : "?");
        return;
    }
    CU_ASSERT_STRING_EQUAL(out, want);
    if (strcmp(out, want) != 0)
        fprintf(stderr, "\n  %s -> %s, want %s\n", s, out, want);
}

static void norm_bad(const char *s)
{
    char out[256];
    const char *why = NULL;

    CU_ASSERT_EQUAL(eg_path_normalize(s, strlen(s), out, sizeof(out), &why), AL_ERR_INVAL);
}

static void test_paths(void)
{
    char tiny[3];
    const char *why;

    norm("/", "/");
    norm("/a/b", "/a/b");
    norm("/a/b?x=/../..", "/a/b");
    norm("/a/./b", "/a/b");
    norm("/a/../b", "/b");
    norm("/a/b/..", "/a/");
    norm("/a/b/.", "/a/b/");
    norm("/..", "/");
    norm("/../../etc", "/etc");
    norm("/a//b", "/a//b");
    norm("/allowed/%2e%2e/secret", "/secret");
    norm("/allowed/%2E%2e/secret", "/secret");
    norm("/allowed/.%2e/secret", "/secret");
    norm("/allowed/..%2fsecret", "/secret");
    norm("/allowed/..%2Fsecret", "/secret");
    norm("/allowed/..%5csecret", "/secret");
    norm("/allowed/..\\secret", "/secret");
    norm("/allowed/..;/secret", "/secret");
    norm("/allowed/..;x=1/secret", "/secret");
    norm("/allowed/.;/x", "/allowed/x");
    norm("/a/%41%7e", "/a/A~");
    norm("/a/%20b", "/a/%20b");
    norm("/a/%c3%a9", "/a/%C3%A9");
    norm("/a/..b/c", "/a/..b/c");
    norm("/a/...", "/a/...");
    norm_bad("/a/%00");
    norm_bad("/a/%252e%252e/x");
    norm_bad("/a/%252f");
    norm_bad("/a/%255c");
    norm_bad("/a/%2525");
    norm_bad("/a/%25%32e%25%32e/x");
    norm_bad("/a/%25%32%65");
    norm("/a/%25zz", "/a/%25zz");
    norm_bad("/a/%2541");
    norm("/a/%25", "/a/%25");
    norm("/100%25/x", "/100%25/x");
    norm_bad("/a/%zz");
    norm_bad("a/b");
    CU_ASSERT_EQUAL(eg_path_normalize("/abcd", 5, tiny, sizeof(tiny), &why), AL_ERR_TOOBIG);

    CU_ASSERT(eg_path_has_prefix("/api/v1", "/api/v1"));
    CU_ASSERT(eg_path_has_prefix("/api/v1/x", "/api/v1"));
    CU_ASSERT(!eg_path_has_prefix("/api/v10", "/api/v1"));
    CU_ASSERT(eg_path_has_prefix("/api/v1/x", "/api/v1/"));
    CU_ASSERT(!eg_path_has_prefix("/api/v1", "/api/v1/"));
    CU_ASSERT(eg_path_has_prefix("/anything", "/"));
    CU_ASSERT(!eg_path_has_prefix("/ap", "/api"));
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("egress target", NULL, NULL);
    CU_add_test(s, "host names", test_names);
    CU_add_test(s, "IPv4 in every inet_aton form", test_ipv4_forms);
    CU_add_test(s, "IPv6 literals", test_ipv6);
    CU_add_test(s, "authorities", test_authority);
    CU_add_test(s, "absolute-form URLs and origin-form checks", test_urls);
    CU_add_test(s, "path normalisation and prefixes", test_paths);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
