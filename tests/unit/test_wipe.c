/* Unit tests for al_wipe: realloc keeps the data, the protobuf allocator round trip.
 * (That freed memory holds no secret is checked on the real binaries by the
 * /proc/PID/mem canary scan in tests/integration/credstore.sh.) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "airlock/test/v1/test.pb-c.h"
#include "al_wipe.h"

static void test_free_null(void)
{
    al_wipe_free(NULL);
    al_wipe_free(malloc(0));
    CU_PASS("NULL and empty blocks are fine");
}

static void test_realloc(void)
{
    char *p = al_wipe_realloc(NULL, 0, 8);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    memcpy(p, "abcdefg", 8);
    p = al_wipe_realloc(p, 8, 4096); /* grows: data kept */
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_STRING_EQUAL(p, "abcdefg");
    p = al_wipe_realloc(p, 4096, 3); /* shrinks: the prefix kept */
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(memcmp(p, "abc", 3), 0);
    al_wipe_free(p);
}

static void test_protobuf(void)
{
    Airlock__Test__V1__EchoRequest req = AIRLOCK__TEST__V1__ECHO_REQUEST__INIT;
    Airlock__Test__V1__EchoRequest *r;
    uint8_t buf[256];
    size_t len;

    req.message = (char *)"canary-value-0123456789";
    len = airlock__test__v1__echo_request__pack(&req, buf);
    r = airlock__test__v1__echo_request__unpack(&al_wipe_pb, len, buf);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->message, req.message);
    airlock__test__v1__echo_request__free_unpacked(r, &al_wipe_pb);
    /* a message from the wiping allocator may also be freed by plain free */
    r = airlock__test__v1__echo_request__unpack(&al_wipe_pb, len, buf);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    airlock__test__v1__echo_request__free_unpacked(r, NULL);
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("wipe", NULL, NULL);
    CU_add_test(s, "free NULL and empty", test_free_null);
    CU_add_test(s, "realloc keeps the data", test_realloc);
    CU_add_test(s, "protobuf allocator round trip", test_protobuf);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
