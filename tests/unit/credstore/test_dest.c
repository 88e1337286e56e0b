/*
 * Unit tests for credstore dest: parsing, normalizing, formatting and
 * matching destinations on the inputs attackers like: case and trailing
 * dots, port edge cases, every inet_aton spelling of an IPv4 address, IPv6
 * and IPv4-mapped forms, punycode and raw UTF-8, suffix attacks on
 * wildcards, userinfo, escapes, backslashes, whitespace and NUL bytes.
 */
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "dest.h"

static int parse(const char *s, enum cs_dest_mode mode, struct cs_dest *d)
{
    return cs_dest_parse(s, strlen(s), mode, d);
}

/* Does policy pattern pat allow the request destination req? Both must parse. */
static int allows(const char *pat, const char *req)
{
    struct cs_dest p, d;
    CU_ASSERT_EQUAL_FATAL(parse(pat, CS_DEST_POLICY, &p), 0);
    CU_ASSERT_EQUAL_FATAL(parse(req, CS_DEST_REQUEST, &d), 0);
    return cs_dest_match(&p, &d);
}

/* s parses in mode to the canonical text want (cs_dest_format). */
static void expect_text(const char *s, enum cs_dest_mode mode, const char *want)
{
    struct cs_dest d;
    char buf[CS_DEST_STRLEN];
    int rc = parse(s, mode, &d);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "\n  should parse: \"%s\"\n", s);
        return;
    }
    CU_ASSERT(cs_dest_format(&d, buf, sizeof buf) > 0);
    CU_ASSERT_STRING_EQUAL(buf, want);
    if (strcmp(buf, want) != 0)
        fprintf(stderr, "\n  \"%s\" -> \"%s\", want \"%s\"\n", s, buf, want);
}

static void expect_bad_len(const char *s, size_t len, enum cs_dest_mode mode)
{
    struct cs_dest d;
    int rc = cs_dest_parse(s, len, mode, &d);
    CU_ASSERT_EQUAL(rc, AL_ERR_INVAL);
    if (rc != AL_ERR_INVAL)
        fprintf(stderr, "\n  should be rejected (mode %d): \"%.*s\"\n", mode, (int)len, s);
    CU_ASSERT_EQUAL(d.hostlen, 0); /* zeroed on failure */
    CU_ASSERT_EQUAL(d.host[0], '\0');
}

static void expect_bad(const char *s, enum cs_dest_mode mode)
{
    expect_bad_len(s, strlen(s), mode);
}

/* rejected in every mode */
static void expect_bad_all(const char *s)
{
    expect_bad(s, CS_DEST_POLICY);
    expect_bad(s, CS_DEST_GRANT);
    expect_bad(s, CS_DEST_REQUEST);
}

static void test_case_and_trailing_dot(void)
{
    struct cs_dest d;
    CU_ASSERT_EQUAL(parse("API.Example.COM.", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_STRING_EQUAL(d.host, "api.example.com");
    CU_ASSERT_EQUAL(d.hostlen, 15);
    CU_ASSERT_EQUAL(d.kind, CS_DEST_NAME);
    CU_ASSERT_EQUAL(d.scheme, CS_SCHEME_HTTPS);
    CU_ASSERT_EQUAL(d.port, 443);
    CU_ASSERT_EQUAL(d.flags, 0);
    CU_ASSERT_TRUE(allows("api.example.com", "API.EXAMPLE.COM"));
    CU_ASSERT_TRUE(allows("Api.Example.Com.", "api.example.com"));
    CU_ASSERT_TRUE(allows("api.example.com", "api.example.com.:443"));
    CU_ASSERT_TRUE(allows("api.example.com", "HTTPS://API.EXAMPLE.COM./v1"));
    expect_bad_all("api.example.com..");
    expect_bad_all(".");
    expect_bad_all("..");
    expect_bad_all(".api.example.com");
    expect_bad_all("api..example.com");
    expect_text("localhost", CS_DEST_POLICY, "localhost:443");
}

static void test_ports(void)
{
    struct cs_dest d;
    CU_ASSERT_EQUAL(parse("a.example:443", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_EQUAL(d.port, 443);
    CU_ASSERT_TRUE(d.flags & CS_DEST_F_PORT);
    CU_ASSERT_EQUAL(parse("a.example:1", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_EQUAL(d.port, 1);
    CU_ASSERT_EQUAL(parse("a.example:65535", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_EQUAL(d.port, 65535);
    CU_ASSERT_EQUAL(parse("http://a.example", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_EQUAL(d.port, 80);
    CU_ASSERT_FALSE(d.flags & CS_DEST_F_PORT);
    CU_ASSERT_EQUAL(parse("https://a.example", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_EQUAL(d.port, 443);
    const char *bad[] = {"a.example:0",     "a.example:65536",
                         "a.example: 443",  "a.example:443 ",
                         "a.example:+443",  "a.example:-1",
                         "a.example:0443",  "a.example:",
                         "a.example:443:1", "a.example:4a3",
                         "a.example:99999", "a.example:1e3",
                         "a.example:0x1bb", ":443",
                         "a.example :443",  "a.example:00"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_bad_all(bad[i]);
    /* default 443 and explicit 443 are the same; other ports are not */
    CU_ASSERT_TRUE(allows("a.example", "a.example:443"));
    CU_ASSERT_TRUE(allows("a.example:443", "a.example"));
    CU_ASSERT_FALSE(allows("a.example", "a.example:8443"));
    CU_ASSERT_FALSE(allows("a.example:8443", "a.example"));
    CU_ASSERT_TRUE(allows("a.example:8443", "https://a.example:8443/x"));
}

static void test_scheme_defaults(void)
{
    struct cs_dest d;
    /* no scheme = https, whatever the port: never inferred from :80 */
    CU_ASSERT_EQUAL(parse("api.example.com:80", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_EQUAL(d.scheme, CS_SCHEME_HTTPS);
    CU_ASSERT_FALSE(d.flags & CS_DEST_F_SCHEME);
    CU_ASSERT_EQUAL(parse("HtTp://api.example.com", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_EQUAL(d.scheme, CS_SCHEME_HTTP);
    CU_ASSERT_TRUE(d.flags & CS_DEST_F_SCHEME);
    /* a pattern without scheme allows https only */
    CU_ASSERT_FALSE(allows("api.example.com", "http://api.example.com"));
    CU_ASSERT_FALSE(allows("api.example.com", "http://api.example.com:443"));
    CU_ASSERT_FALSE(allows("api.example.com:80", "http://api.example.com"));
    CU_ASSERT_FALSE(allows("*.example.com", "http://api.example.com"));
    CU_ASSERT_TRUE(allows("https://api.example.com", "api.example.com"));
    /* plain http only where the pattern says http://, and only http */
    CU_ASSERT_TRUE(allows("http://api.example.com", "http://api.example.com"));
    CU_ASSERT_TRUE(allows("http://api.example.com", "http://api.example.com:80/"));
    CU_ASSERT_FALSE(allows("http://api.example.com", "api.example.com"));
    CU_ASSERT_FALSE(allows("http://api.example.com", "api.example.com:80"));
    CU_ASSERT_FALSE(allows("http://api.example.com:8080", "http://api.example.com"));
    CU_ASSERT_TRUE(allows("http://api.example.com:8080", "http://api.example.com:8080"));
    expect_bad_all("ftp://api.example.com");
    expect_bad_all("ws://api.example.com");
    expect_bad_all("//api.example.com");
    expect_bad_all("https://");
    expect_bad_all("https:///path");
    expect_bad_all("https:/api.example.com");
    expect_bad_all("https//api.example.com");
    expect_text("HTTPS://Api.Example.com:443/", CS_DEST_POLICY, "api.example.com:443");
    expect_text("http://api.example.com", CS_DEST_POLICY, "http://api.example.com:80");
}

static void test_paths(void)
{
    struct cs_dest d;
    /* requests may carry a path (ignored); patterns may not, since paths are not scoped */
    CU_ASSERT_EQUAL(parse("https://api.example.com/v1/x?y=%20#f", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_STRING_EQUAL(d.host, "api.example.com");
    CU_ASSERT_EQUAL(parse("https://api.example.com?q", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_STRING_EQUAL(d.host, "api.example.com");
    CU_ASSERT_EQUAL(parse("https://api.example.com/", CS_DEST_POLICY, &d), 0);
    expect_bad("https://api.example.com/v1", CS_DEST_POLICY);
    expect_bad("https://api.example.com/v1", CS_DEST_GRANT);
    expect_bad("https://api.example.com?q", CS_DEST_POLICY);
    expect_bad("https://api.example.com#f", CS_DEST_GRANT);
    /* without a scheme there is no path at all */
    expect_bad_all("api.example.com/");
    expect_bad_all("api.example.com/v1");
    expect_bad_all("api.example.com?x");
    expect_bad_all("api.example.com#x");
}

/* Every spelling of 127.0.0.1 that inet_aton accepts. */
static const char *loopback_forms[] = {
    "2130706433",  "0177.0.0.1", "0x7f.1",      "0x7f.0.0.1",    "0X7F.0.0.1",
    "127.1",       "127.0.1",    "0x7f000001",  "017700000001",  "127.0.0.1.",
    "127.000.0.1", "0177.1",     "127.0.0.0x1", "0x7f.0x0.0.01",
};

static void test_ipv4_forms(void)
{
    struct cs_dest d;
    CU_ASSERT_EQUAL(parse("127.0.0.1", CS_DEST_POLICY, &d), 0);
    CU_ASSERT_EQUAL(d.kind, CS_DEST_IPV4);
    CU_ASSERT_STRING_EQUAL(d.host, "127.0.0.1");
    CU_ASSERT_FALSE(d.flags & CS_DEST_F_NONCANONICAL);
    CU_ASSERT_EQUAL(parse("0.0.0.0", CS_DEST_POLICY, &d), 0);
    CU_ASSERT_EQUAL(parse("255.255.255.255:8443", CS_DEST_POLICY, &d), 0);
    for (size_t i = 0; i < sizeof loopback_forms / sizeof loopback_forms[0]; i++) {
        const char *s = loopback_forms[i];
        int rc = parse(s, CS_DEST_REQUEST, &d);
        CU_ASSERT_EQUAL(rc, 0);
        if (rc != 0) {
            fprintf(stderr, "\n  should parse as IPv4: \"%s\"\n", s);
            continue;
        }
        CU_ASSERT_EQUAL(d.kind, CS_DEST_IPV4);
        CU_ASSERT_STRING_EQUAL(d.host, "127.0.0.1");
        CU_ASSERT_TRUE(d.flags & CS_DEST_F_NONCANONICAL);
        /* compared as addresses: never a name, always the address */
        CU_ASSERT_FALSE(allows("example.com", s));
        CU_ASSERT_FALSE(allows("*.example.com", s));
        CU_ASSERT_FALSE(allows("127.0.0.2", s));
        CU_ASSERT_TRUE(allows("127.0.0.1", s)); /* the policy refuses the form itself */
        /* policy and grant entries must be canonical */
        expect_bad(s, CS_DEST_POLICY);
        expect_bad(s, CS_DEST_GRANT);
    }
    /* numeric last label: an address or nothing, never a name */
    const char *bad[] = {
        "1.2.3.256", "256.0.0.1", "1.2.3.4.5", "4294967296", "0x100000000",
        "08.0.0.1",  "0.0.0.09",  "1..2.3",    "1.2.3..",    "example.123",
        "a.b.0x7f",  "0xg.1",     "1.2.65536", "1.16777216", "99999999999999999999",
        "*.0.0.1",   "*.1",       "-1.0.0.1",  "1.2.3.4..",  "0x1.0x2.0x3.0x100"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_bad_all(bad[i]);
    CU_ASSERT_EQUAL(parse("1.2.3.", CS_DEST_REQUEST, &d), 0); /* one dot stripped: 1.2.3 */
    CU_ASSERT_STRING_EQUAL(d.host, "1.2.0.3");
    CU_ASSERT_TRUE(d.flags & CS_DEST_F_NONCANONICAL);
    expect_bad("1.2.3.", CS_DEST_POLICY);
    CU_ASSERT_EQUAL(parse("1.16777215", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_STRING_EQUAL(d.host, "1.255.255.255");
    CU_ASSERT_EQUAL(parse("0x", CS_DEST_REQUEST, &d), 0); /* inet_aton: 0 */
    CU_ASSERT_STRING_EQUAL(d.host, "0.0.0.0");
    /* a name that merely starts with digits is a name */
    CU_ASSERT_EQUAL(parse("127.0.0.1a", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_EQUAL(d.kind, CS_DEST_NAME);
    CU_ASSERT_FALSE(allows("127.0.0.1", "127.0.0.1a"));
    CU_ASSERT_EQUAL(parse("1password.com", CS_DEST_POLICY, &d), 0);
    CU_ASSERT_EQUAL(d.kind, CS_DEST_NAME);
    expect_text("0x7f.1:8080", CS_DEST_REQUEST, "127.0.0.1:8080");
    expect_text("http://2130706433", CS_DEST_REQUEST, "http://127.0.0.1:80");
}

static void test_ipv6_forms(void)
{
    struct cs_dest d;
    CU_ASSERT_EQUAL(parse("[::1]:443", CS_DEST_POLICY, &d), 0);
    CU_ASSERT_EQUAL(d.kind, CS_DEST_IPV6);
    CU_ASSERT_STRING_EQUAL(d.host, "::1");
    CU_ASSERT_EQUAL(d.port, 443);
    expect_text("[0:0:0:0:0:0:0:1]", CS_DEST_POLICY, "[::1]:443");
    expect_text("[2001:DB8:0::1]:8443", CS_DEST_POLICY, "[2001:db8::1]:8443");
    expect_text("https://[2001:db8::a]/x", CS_DEST_REQUEST, "[2001:db8::a]:443");
    expect_text("http://[::1]", CS_DEST_REQUEST, "http://[::1]:80");
    CU_ASSERT_TRUE(allows("[::1]", "[0000:0::0:1]:443"));
    CU_ASSERT_FALSE(allows("[::1]", "[::2]"));
    CU_ASSERT_FALSE(allows("[::1]", "127.0.0.1"));
    CU_ASSERT_FALSE(allows("[::1]:8443", "[::1]"));
    /* IPv4-mapped: the IPv4 address, marked non-canonical */
    const char *mapped[] = {"[::ffff:127.0.0.1]", "[::FFFF:7f00:1]", "[0:0:0:0:0:ffff:7f00:0001]"};
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(parse(mapped[i], CS_DEST_REQUEST, &d), 0);
        CU_ASSERT_EQUAL(d.kind, CS_DEST_IPV4);
        CU_ASSERT_STRING_EQUAL(d.host, "127.0.0.1");
        CU_ASSERT_TRUE(d.flags & CS_DEST_F_NONCANONICAL);
        CU_ASSERT_TRUE(allows("127.0.0.1", mapped[i]));
        CU_ASSERT_FALSE(allows("[::1]", mapped[i]));
        expect_bad(mapped[i], CS_DEST_POLICY);
    }
    const char *bad[] = {"::1",
                         "[::1",
                         "::1]",
                         "[::1]x",
                         "[::1]:",
                         "[]",
                         "[::1]:0",
                         "[fe80::1%eth0]",
                         "[fe80::1%25eth0]",
                         "[1.2.3.4]",
                         "[::g]",
                         "[:::1]",
                         "[1:2:3:4:5:6:7:8:9]",
                         "[::1]]",
                         "[[::1]]",
                         "*.[::1]",
                         "[::1]:443:443",
                         "[ ::1]",
                         "[example.com]",
                         "[::1]@evil.net"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_bad_all(bad[i]);
}

static void test_punycode_and_utf8(void)
{
    struct cs_dest d;
    CU_ASSERT_EQUAL(parse("xn--bcher-kva.example", CS_DEST_POLICY, &d), 0);
    CU_ASSERT_STRING_EQUAL(d.host, "xn--bcher-kva.example");
    CU_ASSERT_TRUE(allows("xn--bcher-kva.example", "XN--BCHER-KVA.EXAMPLE"));
    CU_ASSERT_TRUE(allows("*.xn--bcher-kva.example", "api.xn--bcher-kva.example"));
    expect_bad_all("b\xc3\xbc"
                   "cher.example"); /* UTF-8 ü */
    expect_bad_all("api.example.com\xe3\x80\x82"
                   "evil.net");                   /* U+3002 ideographic full stop */
    expect_bad_all("\xef\xbd\x81pi.example.com"); /* fullwidth a */
    expect_bad_all("api.examp\xc4\xbe"
                   "e.com");
    expect_bad_all("\x80");
    expect_bad_all("api.example.com\xff");
}

static void test_names(void)
{
    char name[300];
    struct cs_dest d;
    /* one label of 63 is fine, 64 is not */
    memset(name, 'a', 63);
    strcpy(name + 63, ".example");
    CU_ASSERT_EQUAL(parse(name, CS_DEST_POLICY, &d), 0);
    memset(name, 'a', 64);
    strcpy(name + 64, ".example");
    expect_bad_all(name);
    /* 253 characters in total is fine (also with the trailing dot), 254 is not */
    for (int i = 0; i < 252; i += 2)
        memcpy(name + i, "a.", 2);
    name[252] = 'b';
    name[253] = '\0';
    CU_ASSERT_EQUAL(parse(name, CS_DEST_POLICY, &d), 0);
    CU_ASSERT_EQUAL(d.hostlen, 253);
    name[253] = '.';
    name[254] = '\0';
    CU_ASSERT_EQUAL(parse(name, CS_DEST_POLICY, &d), 0);
    CU_ASSERT_EQUAL(d.hostlen, 253);
    name[253] = 'c';
    expect_bad_all(name);
    const char *bad[] = {"-api.example.com",
                         "api-.example.com",
                         "api_x.example.com",
                         "a*b.example",
                         "api.example.com:443@x",
                         "a!b.example",
                         "a,b.example",
                         "a;b.example",
                         "a\"b.example",
                         "a'b.example",
                         "a<b.example",
                         "a|b.example",
                         "a~b.example",
                         "a=b.example",
                         "a(b).example",
                         "a[b].example",
                         "a{b}.example",
                         "a+b.example",
                         "a$b.example",
                         "a&b.example",
                         "a`b.example",
                         "a^b.example",
                         "*"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_bad_all(bad[i]);
    CU_ASSERT_EQUAL(parse("a-b--c.x-y.example", CS_DEST_POLICY, &d), 0);
    CU_ASSERT_EQUAL(parse("0-a.example", CS_DEST_POLICY, &d), 0);
}

static void test_wildcards(void)
{
    struct cs_dest d;
    CU_ASSERT_EQUAL(parse("*.Example.COM.", CS_DEST_POLICY, &d), 0);
    CU_ASSERT_TRUE(d.flags & CS_DEST_F_WILDCARD);
    CU_ASSERT_STRING_EQUAL(d.host, "example.com");
    CU_ASSERT_TRUE(allows("*.example.com", "api.example.com"));
    CU_ASSERT_TRUE(allows("*.example.com", "a.b.c.example.com"));
    CU_ASSERT_TRUE(allows("*.example.com", "API.EXAMPLE.COM."));
    CU_ASSERT_TRUE(allows("*.example.com", "https://x.example.com:443/p"));
    /* never the apex, never a suffix attack */
    CU_ASSERT_FALSE(allows("*.example.com", "example.com"));
    CU_ASSERT_FALSE(allows("*.example.com", "evilexample.com"));
    CU_ASSERT_FALSE(allows("*.example.com", "api.evilexample.com"));
    CU_ASSERT_FALSE(allows("*.example.com", "api.example.com.evil.net"));
    CU_ASSERT_FALSE(allows("*.example.com", "example.com.evil.net"));
    CU_ASSERT_FALSE(allows("*.example.com", "api.example.co"));
    CU_ASSERT_FALSE(allows("*.example.com", "api.example.com:8443"));
    CU_ASSERT_FALSE(allows("*.example.com", "api-example.com"));
    CU_ASSERT_FALSE(allows("*.example.com", "127.0.0.1"));
    CU_ASSERT_TRUE(allows("*.example.com:8443", "api.example.com:8443"));
    CU_ASSERT_TRUE(allows("http://*.example.com", "http://api.example.com"));
    /* exact patterns: no subdomains, no suffixes */
    CU_ASSERT_FALSE(allows("example.com", "api.example.com"));
    CU_ASSERT_FALSE(allows("api.example.com", "api.example.com.evil.net"));
    CU_ASSERT_FALSE(allows("example.com", "evilexample.com"));
    const char *badpat[] = {"*",
                            "*.",
                            "*example.com",
                            "a*.example.com",
                            "*.*.example.com",
                            "api.*.com",
                            "**.example.com",
                            "*..example.com",
                            "*.example.com*",
                            "example.*",
                            "*.[::1]",
                            ".*.example.com",
                            "*.-a.example"};
    for (size_t i = 0; i < sizeof badpat / sizeof badpat[0]; i++)
        expect_bad_all(badpat[i]);
    /* requests are concrete */
    expect_bad("*.example.com", CS_DEST_REQUEST);
    CU_ASSERT_EQUAL(parse("*.example.com", CS_DEST_GRANT, &d), 0);
    /* a wildcard as the destination matches nothing, not even itself */
    struct cs_dest p;
    CU_ASSERT_EQUAL(parse("*.example.com", CS_DEST_POLICY, &p), 0);
    CU_ASSERT_FALSE(cs_dest_match(&p, &d));
    expect_text("*.Example.com:8443", CS_DEST_POLICY, "*.example.com:8443");
    expect_text("HTTP://*.example.com./", CS_DEST_POLICY, "http://*.example.com:80");
}

static void test_userinfo(void)
{
    struct cs_dest d;
    expect_bad_all("https://api.example.com@evil.net/");
    expect_bad_all("https://api.example.com@evil.net");
    expect_bad_all("https://user:pw@api.example.com/");
    expect_bad_all("https://@api.example.com/");
    expect_bad_all("user@api.example.com");
    expect_bad_all("api.example.com@evil.net:443");
    expect_bad_all("http://api.example.com:80@evil.net/");
    /* '@' after the authority is path, and the host stays the real one */
    CU_ASSERT_EQUAL(parse("https://api.example.com/@evil.net", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_STRING_EQUAL(d.host, "api.example.com");
    CU_ASSERT_EQUAL(parse("https://api.example.com?@evil.net", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_STRING_EQUAL(d.host, "api.example.com");
    CU_ASSERT_EQUAL(parse("https://api.example.com#@evil.net", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_STRING_EQUAL(d.host, "api.example.com");
}

static void test_escapes_and_backslashes(void)
{
    expect_bad_all("api%2eexample.com");
    expect_bad_all("%61pi.example.com");
    expect_bad_all("https://api.example.com%2f@evil.net/");
    expect_bad_all("https://api.example.com%40evil.net/");
    expect_bad_all("api.example.com:%34%34%33");
    expect_bad_all("[::1%25lo]");
    expect_bad_all("https://evil.net\\@api.example.com/");
    expect_bad_all("https://api.example.com\\.evil.net/");
    expect_bad_all("https:\\\\api.example.com");
    expect_bad_all("api.example.com\\");
    expect_bad("https://api.example.com/a\\b", CS_DEST_REQUEST);
    struct cs_dest d;
    CU_ASSERT_EQUAL(parse("https://api.example.com/a%2fb", CS_DEST_REQUEST, &d), 0);
}

static void test_whitespace_and_nul(void)
{
    const char *bad[] = {
        " api.example.com",           "api.example.com ",       "api .example.com",
        "api.example.com\t",          "\napi.example.com",      "api.example.com\r\n",
        "api.exa\x0bmple.com",        "api.example.com\x7f",    "https:// api.example.com",
        "https://api.example.com /x", "\x1b[0mapi.example.com", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_bad_all(bad[i]);
    /* length-delimited input: a NUL inside is a byte like any other, and refused */
    static const char nul1[] = "api.example.com\0.evil.net";
    static const char nul2[] = "api.example.com\0";
    static const char nul3[] = "\0api.example.com";
    static const char nul4[] = "https://api.example.com/\0x";
    expect_bad_len(nul1, sizeof nul1 - 1, CS_DEST_REQUEST);
    expect_bad_len(nul2, sizeof nul2 - 1, CS_DEST_REQUEST);
    expect_bad_len(nul3, sizeof nul3 - 1, CS_DEST_POLICY);
    expect_bad_len(nul4, sizeof nul4 - 1, CS_DEST_REQUEST);
    /* the length is respected: a prefix of a longer buffer parses on its own */
    struct cs_dest d;
    CU_ASSERT_EQUAL(cs_dest_parse("api.example.com:443 trailing", 19, CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_EQUAL(d.port, 443);
}

static void test_bad_arguments(void)
{
    struct cs_dest d;
    char big[CS_DEST_INPUT_MAX + 2];
    char buf[CS_DEST_STRLEN];

    CU_ASSERT_EQUAL(cs_dest_parse(NULL, 3, CS_DEST_REQUEST, &d), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(cs_dest_parse("a.b", 3, CS_DEST_REQUEST, NULL), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(cs_dest_parse("a.b", 3, (enum cs_dest_mode)0, &d), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(cs_dest_parse("a.b", 3, (enum cs_dest_mode)99, &d), AL_ERR_INVAL);
    memset(big, 'a', sizeof big);
    CU_ASSERT_EQUAL(cs_dest_parse(big, CS_DEST_INPUT_MAX + 1, CS_DEST_REQUEST, &d), AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(cs_dest_parse(big, CS_DEST_INPUT_MAX, CS_DEST_REQUEST, &d), AL_ERR_INVAL);

    /* format: NULL, garbage and small buffers */
    CU_ASSERT_EQUAL(cs_dest_format(NULL, buf, sizeof buf), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(parse("api.example.com", CS_DEST_REQUEST, &d), 0);
    CU_ASSERT_EQUAL(cs_dest_format(&d, NULL, 10), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(cs_dest_format(&d, buf, 0), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(cs_dest_format(&d, buf, 10), AL_ERR_TOOBIG);
    CU_ASSERT_STRING_EQUAL(buf, "");
    CU_ASSERT_EQUAL(cs_dest_format(&d, buf, 20), 19);
    CU_ASSERT_STRING_EQUAL(buf, "api.example.com:443");
    struct cs_dest g = d;
    g.hostlen = 3; /* lies about the host */
    CU_ASSERT_EQUAL(cs_dest_format(&g, buf, sizeof buf), AL_ERR_INVAL);
    CU_ASSERT_FALSE(cs_dest_match(&g, &d));
    CU_ASSERT_FALSE(cs_dest_match(&d, &g));
    memset(&g, 0, sizeof g);
    CU_ASSERT_EQUAL(cs_dest_format(&g, buf, sizeof buf), AL_ERR_INVAL);
    CU_ASSERT_FALSE(cs_dest_match(&g, &g));
    CU_ASSERT_FALSE(cs_dest_match(NULL, &d));
    CU_ASSERT_FALSE(cs_dest_match(&d, NULL));
    CU_ASSERT_TRUE(cs_dest_match(&d, &d));
}

/* parse -> format -> parse keeps the meaning and loses the non-canonical mark */
static void test_format_round_trip(void)
{
    const char *in[] = {"API.example.com.",  "http://a.example:8080/x",
                        "*.Example.com",     "[::FFFF:10.0.0.1]",
                        "[2001:db8::1]:1",   "0x7f.1",
                        "https://10.1.2.3/", "xn--bcher-kva.example:65535"};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        struct cs_dest a, b;
        char t1[CS_DEST_STRLEN], t2[CS_DEST_STRLEN];
        enum cs_dest_mode mode = in[i][0] == '*' ? CS_DEST_POLICY : CS_DEST_REQUEST;
        CU_ASSERT_EQUAL_FATAL(parse(in[i], mode, &a), 0);
        CU_ASSERT_FATAL(cs_dest_format(&a, t1, sizeof t1) > 0);
        CU_ASSERT_EQUAL_FATAL(parse(t1, CS_DEST_POLICY, &b), 0); /* canonical: even a pattern */
        CU_ASSERT_EQUAL(a.kind, b.kind);
        CU_ASSERT_EQUAL(a.scheme, b.scheme);
        CU_ASSERT_EQUAL(a.port, b.port);
        CU_ASSERT_STRING_EQUAL(a.host, b.host);
        CU_ASSERT_EQUAL(a.flags & CS_DEST_F_WILDCARD, b.flags & CS_DEST_F_WILDCARD);
        CU_ASSERT_FALSE(b.flags & CS_DEST_F_NONCANONICAL);
        CU_ASSERT(cs_dest_format(&b, t2, sizeof t2) > 0);
        CU_ASSERT_STRING_EQUAL(t1, t2);
    }
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("credstore dest", NULL, NULL);
    CU_add_test(s, "case and trailing dot", test_case_and_trailing_dot);
    CU_add_test(s, "ports", test_ports);
    CU_add_test(s, "http vs https defaults", test_scheme_defaults);
    CU_add_test(s, "paths", test_paths);
    CU_add_test(s, "IPv4 in decimal/octal/hex/short forms", test_ipv4_forms);
    CU_add_test(s, "IPv6 and IPv4-mapped", test_ipv6_forms);
    CU_add_test(s, "punycode accepted, raw UTF-8 rejected", test_punycode_and_utf8);
    CU_add_test(s, "name syntax and lengths", test_names);
    CU_add_test(s, "wildcards and suffix attacks", test_wildcards);
    CU_add_test(s, "userinfo", test_userinfo);
    CU_add_test(s, "percent escapes and backslashes", test_escapes_and_backslashes);
    CU_add_test(s, "whitespace, control bytes, NUL", test_whitespace_and_nul);
    CU_add_test(s, "bad arguments", test_bad_arguments);
    CU_add_test(s, "format round trip", test_format_round_trip);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
