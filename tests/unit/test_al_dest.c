/*
 * Unit tests for al_dest: host syntax (names, IP literals, wildcards,
 * ambiguous IPv4 spellings refused), "host[:port]" parsing, the covers
 * relation (wildcards never cover the apex or a look-alike suffix, ports
 * must match), method and path-prefix syntax.
 */
#include <CUnit/Basic.h>

#include "al_dest.h"

static void test_hosts_and_dests(void)
{
    char host[300];
    int port;
    CU_ASSERT_TRUE(al_dest_host_valid("api.example.com", 0));
    CU_ASSERT_TRUE(al_dest_host_valid("10.0.0.1", 0));
    CU_ASSERT_TRUE(al_dest_host_valid("::1", 0));
    CU_ASSERT_TRUE(al_dest_host_valid("*.example.com", 1));
    CU_ASSERT_FALSE(al_dest_host_valid("*.example.com", 0));
    CU_ASSERT_FALSE(al_dest_host_valid("a..b", 0));
    CU_ASSERT_FALSE(al_dest_host_valid("-a.b", 0));
    CU_ASSERT_FALSE(al_dest_host_valid("a.b.", 0));
    CU_ASSERT_FALSE(al_dest_host_valid("0x7f.1", 0)); /* ambiguous IPv4 spellings */
    CU_ASSERT_FALSE(al_dest_host_valid("127.1", 0));
    CU_ASSERT_FALSE(al_dest_host_valid("a.0x10", 0));
    CU_ASSERT_TRUE(al_dest_host_valid("0x10.example", 0));
    CU_ASSERT_FALSE(al_dest_host_valid("", 0));
    CU_ASSERT_EQUAL(al_dest_parse("api.example.com", host, sizeof(host), &port), 0);
    CU_ASSERT_EQUAL(port, 443);
    CU_ASSERT_EQUAL(al_dest_parse("api.example.com:8443", host, sizeof(host), &port), 0);
    CU_ASSERT_EQUAL(port, 8443);
    CU_ASSERT_STRING_EQUAL(host, "api.example.com");
    CU_ASSERT_EQUAL(al_dest_parse("[::1]:80", host, sizeof(host), &port), 0);
    CU_ASSERT_STRING_EQUAL(host, "::1");
    CU_ASSERT_NOT_EQUAL(al_dest_parse("a.b:0", host, sizeof(host), &port), 0);
    CU_ASSERT_NOT_EQUAL(al_dest_parse("a.b:x", host, sizeof(host), &port), 0);
    CU_ASSERT_NOT_EQUAL(al_dest_parse("::1", host, sizeof(host), &port), 0);
    CU_ASSERT_NOT_EQUAL(al_dest_parse("https://a.b", host, sizeof(host), &port), 0);
    CU_ASSERT_TRUE(al_dest_covers("*.example.com", 0, "a.example.com", 443));
    CU_ASSERT_TRUE(al_dest_covers("*.example.com", 0, "*.b.example.com", 443));
    CU_ASSERT_FALSE(al_dest_covers("*.example.com", 0, "example.com", 443));
    CU_ASSERT_FALSE(al_dest_covers("*.example.com", 0, "a.example.com.evil.net", 443));
    CU_ASSERT_TRUE(al_dest_covers("API.example.com", 443, "api.EXAMPLE.com", 0));
    CU_ASSERT_FALSE(al_dest_covers("api.example.com", 8443, "api.example.com", 443));
}

static void test_methods_paths(void)
{
    CU_ASSERT_TRUE(al_dest_method_valid("GET"));
    CU_ASSERT_TRUE(al_dest_method_valid("PROPFIND"));
    CU_ASSERT_FALSE(al_dest_method_valid("get"));
    CU_ASSERT_FALSE(al_dest_method_valid(""));
    CU_ASSERT_FALSE(al_dest_method_valid(NULL));
    CU_ASSERT_FALSE(al_dest_method_valid("GET "));
    CU_ASSERT_FALSE(al_dest_method_valid("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFG")); /* 33 */
    CU_ASSERT_TRUE(al_dest_path_prefix_valid("/"));
    CU_ASSERT_TRUE(al_dest_path_prefix_valid("/repos/acme/"));
    CU_ASSERT_FALSE(al_dest_path_prefix_valid("repos"));
    CU_ASSERT_FALSE(al_dest_path_prefix_valid("/a b"));
    CU_ASSERT_FALSE(al_dest_path_prefix_valid("/a?x=1"));
    CU_ASSERT_FALSE(al_dest_path_prefix_valid("/a#f"));
    CU_ASSERT_FALSE(al_dest_path_prefix_valid("/a\x7f"));
    CU_ASSERT_FALSE(al_dest_path_prefix_valid(NULL));
}

int main(void)
{
    CU_pSuite s;
    unsigned failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("al_dest", NULL, NULL);
    CU_add_test(s, "hosts, destinations, covers", test_hosts_and_dests);
    CU_add_test(s, "methods and path prefixes", test_methods_paths);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
