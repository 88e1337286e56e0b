/* Unit tests for gRPC framing, grpc-timeout and grpc-message codecs. */
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "al_grpc.h"

static void test_frame_roundtrip(void)
{
    uint8_t buf[64];
    const uint8_t *msg;
    size_t len;
    int comp;

    al_grpc_frame_prefix(buf, 3);
    memcpy(buf + 5, "abc", 3);
    al_grpc_frame_prefix(buf + 8, 0); /* an empty message follows */
    CU_ASSERT_EQUAL(al_grpc_frame_next(buf, 11, 100, &msg, &len, &comp), 8);
    CU_ASSERT_EQUAL(len, 3);
    CU_ASSERT_EQUAL(memcmp(msg, "abc", 3), 0);
    CU_ASSERT_EQUAL(comp, 0);
    CU_ASSERT_EQUAL(al_grpc_frame_next(buf + 8, 5, 100, &msg, &len, &comp), 5);
    CU_ASSERT_EQUAL(len, 0);
}

static void test_frame_partial(void)
{
    uint8_t buf[16];
    const uint8_t *msg;
    size_t len;
    int comp;

    al_grpc_frame_prefix(buf, 10);
    /* every prefix of an incomplete frame asks for more */
    for (size_t i = 0; i < 15; i++)
        CU_ASSERT_EQUAL(al_grpc_frame_next(buf, i, 100, &msg, &len, &comp), 0);
}

static void test_frame_limits(void)
{
    uint8_t buf[8] = {0, 0xff, 0xff, 0xff, 0xff};
    const uint8_t *msg;
    size_t len;
    int comp;

    /* known to be too big from the prefix alone */
    CU_ASSERT_EQUAL(al_grpc_frame_next(buf, 5, 1 << 20, &msg, &len, &comp), AL_ERR_TOOBIG);
    al_grpc_frame_prefix(buf, 101);
    CU_ASSERT_EQUAL(al_grpc_frame_next(buf, 5, 100, &msg, &len, &comp), AL_ERR_TOOBIG);
    al_grpc_frame_prefix(buf, 100);
    CU_ASSERT_EQUAL(al_grpc_frame_next(buf, 5, 100, &msg, &len, &comp), 0);
    buf[0] = 2; /* unknown flag bit */
    CU_ASSERT_EQUAL(al_grpc_frame_next(buf, 5, 100, &msg, &len, &comp), AL_ERR_PROTO);
    buf[0] = 1; /* compressed: reported, the caller refuses it */
    al_grpc_frame_prefix(buf + 0, 1);
    buf[0] = 1;
    buf[5] = 'x';
    CU_ASSERT_EQUAL(al_grpc_frame_next(buf, 6, 100, &msg, &len, &comp), 6);
    CU_ASSERT_EQUAL(comp, 1);
}

static void test_timeout(void)
{
    double s;
    CU_ASSERT_EQUAL(al_grpc_parse_timeout("100m", 4, &s), 0);
    CU_ASSERT_DOUBLE_EQUAL(s, 0.1, 1e-9);
    CU_ASSERT_EQUAL(al_grpc_parse_timeout("2S", 2, &s), 0);
    CU_ASSERT_DOUBLE_EQUAL(s, 2, 1e-9);
    CU_ASSERT_EQUAL(al_grpc_parse_timeout("1H", 2, &s), 0);
    CU_ASSERT_DOUBLE_EQUAL(s, 3600, 1e-9);
    CU_ASSERT_EQUAL(al_grpc_parse_timeout("5M", 2, &s), 0);
    CU_ASSERT_DOUBLE_EQUAL(s, 300, 1e-9);
    CU_ASSERT_EQUAL(al_grpc_parse_timeout("7u", 2, &s), 0);
    CU_ASSERT_EQUAL(al_grpc_parse_timeout("99999999n", 9, &s), 0);
    CU_ASSERT_EQUAL(al_grpc_parse_timeout("999999999n", 10, &s), AL_ERR_INVAL); /* 9 digits */
    CU_ASSERT_EQUAL(al_grpc_parse_timeout("10", 2, &s), AL_ERR_INVAL);          /* no unit */
    CU_ASSERT_EQUAL(al_grpc_parse_timeout("m", 1, &s), AL_ERR_INVAL);           /* no digits */
    CU_ASSERT_EQUAL(al_grpc_parse_timeout("-1m", 3, &s), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_grpc_parse_timeout("1x", 2, &s), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_grpc_parse_timeout("1 m", 3, &s), AL_ERR_INVAL);
}

static void test_message_codec(void)
{
    char buf[256];
    const char *text = "h\xc3\xa9llo 100% \xe2\x9c\x93\n";
    size_t n = al_grpc_encode_message(text, buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "h%C3%A9llo 100%25 %E2%9C%93%0A");
    CU_ASSERT_EQUAL(n, strlen(buf));
    n = al_grpc_decode_message(buf, n);
    CU_ASSERT_STRING_EQUAL(buf, text);
    /* truncation never splits an escape */
    n = al_grpc_encode_message("\xff\xff\xff", buf, 8);
    CU_ASSERT_STRING_EQUAL(buf, "%FF%FF");
    /* malformed escapes pass through */
    strcpy(buf, "50%zz%4");
    al_grpc_decode_message(buf, strlen(buf));
    CU_ASSERT_STRING_EQUAL(buf, "50%zz%4");
}

static void test_status_names(void)
{
    CU_ASSERT_STRING_EQUAL(al_grpc_status_name(0), "OK");
    CU_ASSERT_STRING_EQUAL(al_grpc_status_name(12), "UNIMPLEMENTED");
    CU_ASSERT_STRING_EQUAL(al_grpc_status_name(16), "UNAUTHENTICATED");
    CU_ASSERT_STRING_EQUAL(al_grpc_status_name(99), "UNKNOWN");
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("grpc_frame", NULL, NULL);
    CU_add_test(s, "frame round trip", test_frame_roundtrip);
    CU_add_test(s, "partial frames ask for more", test_frame_partial);
    CU_add_test(s, "size cap and flags", test_frame_limits);
    CU_add_test(s, "grpc-timeout parsing (deadlines)", test_timeout);
    CU_add_test(s, "grpc-message percent codec", test_message_codec);
    CU_add_test(s, "status names", test_status_names);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
