/* Unit tests for al_arena: alignment, cap, big blocks, protobuf allocator. */
#include <stdint.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "airlock/test/v1/test.pb-c.h"
#include "al_arena.h"

static void test_alignment(void)
{
    struct al_arena a;
    al_arena_init(&a, 0);
    for (size_t n = 1; n < 100; n += 7) {
        void *p = al_arena_alloc(&a, n);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        CU_ASSERT_EQUAL((uintptr_t)p % 16, 0);
        memset(p, 0xab, n);
    }
    al_arena_cleanup(&a);
}

static void test_cap(void)
{
    struct al_arena a;
    al_arena_init(&a, 1000);
    CU_ASSERT_PTR_NOT_NULL(al_arena_alloc(&a, 500));
    CU_ASSERT_PTR_NOT_NULL(al_arena_alloc(&a, 400));
    CU_ASSERT_PTR_NULL(al_arena_alloc(&a, 200));      /* over the cap */
    CU_ASSERT_PTR_NOT_NULL(al_arena_alloc(&a, 16));   /* still usable below it */
    CU_ASSERT_PTR_NULL(al_arena_alloc(&a, SIZE_MAX)); /* no overflow */
    al_arena_cleanup(&a);
    CU_ASSERT_EQUAL(a.used, 0);
}

static void test_big_block_keeps_chunk(void)
{
    struct al_arena a;
    al_arena_init(&a, 0);
    char *small1 = al_arena_alloc(&a, 32);
    char *big = al_arena_alloc(&a, 100000);
    char *small2 = al_arena_alloc(&a, 32);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    memset(big, 1, 100000);
    /* the second small allocation still comes from the first chunk */
    CU_ASSERT_TRUE(small2 > small1 && small2 - small1 < 4096);
    al_arena_cleanup(&a);
}

static void test_strndup(void)
{
    struct al_arena a;
    al_arena_init(&a, 0);
    char *s = al_arena_strndup(&a, "hello world", 5);
    CU_ASSERT_STRING_EQUAL(s, "hello");
    al_arena_cleanup(&a);
    al_arena_cleanup(NULL);
}

static void test_protobuf_unpack(void)
{
    struct al_arena a;
    Airlock__Test__V1__EchoRequest req = AIRLOCK__TEST__V1__ECHO_REQUEST__INIT;
    uint8_t buf[256];
    req.message = "arena";
    req.delay_ms = 7;
    size_t len = airlock__test__v1__echo_request__pack(&req, buf);

    al_arena_init(&a, 4096);
    Airlock__Test__V1__EchoRequest *r =
        airlock__test__v1__echo_request__unpack(al_arena_pb(&a), len, buf);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->message, "arena");
    CU_ASSERT_EQUAL(r->delay_ms, 7);
    al_arena_cleanup(&a); /* frees the message too; ASan checks no leak */

    /* a cap too small for the message makes unpack fail cleanly */
    al_arena_init(&a, 16);
    r = airlock__test__v1__echo_request__unpack(al_arena_pb(&a), len, buf);
    CU_ASSERT_PTR_NULL(r);
    al_arena_cleanup(&a);
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("arena", NULL, NULL);
    CU_add_test(s, "alignment", test_alignment);
    CU_add_test(s, "hard cap", test_cap);
    CU_add_test(s, "big block keeps the current chunk", test_big_block_keeps_chunk);
    CU_add_test(s, "strndup", test_strndup);
    CU_add_test(s, "protobuf unpack into the arena", test_protobuf_unpack);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
