/* Unit tests for al_service's heap-trim test (al_heap_trim_due). That a relay
 * hands memory back after a burst of 10,000 streams is shown on the real
 * binary by tests/bench/tunnel.sh ("settled" RSS). */
#include <stddef.h>

#include <CUnit/Basic.h>

#include "al_service.h"

#define MB ((size_t)1 << 20)

static void test_due(void)
{
    /* a burst left 200 MB free in the heap and resident */
    CU_ASSERT_TRUE(al_heap_trim_due(260 * MB, 40 * MB, 200 * MB, 0, 32 * MB));
    /* exactly the slack on both counts */
    CU_ASSERT_TRUE(al_heap_trim_due(72 * MB, 40 * MB, 32 * MB, 0, 32 * MB));
}

static void test_not_due(void)
{
    /* little free */
    CU_ASSERT_FALSE(al_heap_trim_due(260 * MB, 240 * MB, 20 * MB, 0, 32 * MB));
    /* free in malloc's books but already trimmed: resident close to allocated */
    CU_ASSERT_FALSE(al_heap_trim_due(50 * MB, 40 * MB, 200 * MB, 0, 32 * MB));
    /* one byte short of the slack */
    CU_ASSERT_FALSE(al_heap_trim_due(72 * MB - 1, 40 * MB, 32 * MB, 0, 32 * MB));
    CU_ASSERT_FALSE(al_heap_trim_due(72 * MB, 40 * MB, 32 * MB - 1, 0, 32 * MB));
    /* resident unknown (0) or below allocated (mmapped, not yet touched) */
    CU_ASSERT_FALSE(al_heap_trim_due(0, 40 * MB, 200 * MB, 0, 32 * MB));
    CU_ASSERT_FALSE(al_heap_trim_due(30 * MB, 40 * MB, 200 * MB, 0, 32 * MB));
}

/* Free memory a trim could not hand back must not trigger one every pass; a
 * new burst on top of it does. */
static void test_after_a_trim(void)
{
    /* the last trim left 54 MB resident; nothing new since */
    CU_ASSERT_FALSE(al_heap_trim_due(54 * MB, 10 * MB, 160 * MB, 54 * MB, 32 * MB));
    CU_ASSERT_FALSE(al_heap_trim_due(86 * MB - 1, 10 * MB, 160 * MB, 54 * MB, 32 * MB));
    /* grown by the slack since: due again */
    CU_ASSERT_TRUE(al_heap_trim_due(86 * MB, 10 * MB, 160 * MB, 54 * MB, 32 * MB));
    /* shrunk below what the trim left (freed at the top by malloc itself) */
    CU_ASSERT_FALSE(al_heap_trim_due(40 * MB, 5 * MB, 160 * MB, 54 * MB, 32 * MB));
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("service", NULL, NULL);
    CU_add_test(s, "heap trim due after a burst", test_due);
    CU_add_test(s, "heap trim not due", test_not_due);
    CU_add_test(s, "heap trim after a trim", test_after_a_trim);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
