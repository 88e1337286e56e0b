/*
 * Unit tests for the per-job request rate and byte budget (quota.c), on a
 * clock the test moves itself.
 */
#include <stdint.h>

#include <CUnit/Basic.h>

#include "quota.h"

static void test_bucket(void)
{
    struct eg_bucket b;
    double t = 1000.0;

    eg_bucket_init(&b, 2, 3, t); /* 2 per second, bursts of 3 */
    CU_ASSERT(eg_bucket_take(&b, t));
    CU_ASSERT(eg_bucket_take(&b, t));
    CU_ASSERT(eg_bucket_take(&b, t));
    CU_ASSERT(!eg_bucket_take(&b, t));
    CU_ASSERT(!eg_bucket_take(&b, t + 0.49)); /* 0.98 of a token */
    CU_ASSERT(eg_bucket_take(&b, t + 0.5));
    CU_ASSERT(!eg_bucket_take(&b, t + 0.5));
    CU_ASSERT(eg_bucket_take(&b, t + 100)); /* refills to the burst, not beyond */
    CU_ASSERT(eg_bucket_take(&b, t + 100));
    CU_ASSERT(eg_bucket_take(&b, t + 100));
    CU_ASSERT(!eg_bucket_take(&b, t + 100));
    CU_ASSERT(!eg_bucket_take(&b, t + 50)); /* a clock going back adds nothing */
    eg_bucket_init(&b, 5, 0, t);            /* burst 0 = the rate */
    for (int i = 0; i < 5; i++)
        CU_ASSERT(eg_bucket_take(&b, t));
    CU_ASSERT(!eg_bucket_take(&b, t));
    eg_bucket_init(&b, 0, 0, t); /* unlimited */
    for (int i = 0; i < 1000; i++)
        CU_ASSERT(eg_bucket_take(&b, t));
}

static void test_budget(void)
{
    struct eg_budget b = {.max = 100};

    CU_ASSERT(eg_budget_left(&b));
    CU_ASSERT_EQUAL(eg_budget_charge(&b, 60), 0);
    CU_ASSERT_EQUAL(eg_budget_charge(&b, 39), 0);
    CU_ASSERT(eg_budget_left(&b));
    CU_ASSERT_EQUAL(eg_budget_charge(&b, 1), -1);
    CU_ASSERT(!eg_budget_left(&b));
    b = (struct eg_budget){.max = 0};
    CU_ASSERT_EQUAL(eg_budget_charge(&b, UINT64_MAX), 0); /* unlimited, and no overflow */
    CU_ASSERT_EQUAL(eg_budget_charge(&b, UINT64_MAX), 0);
    CU_ASSERT(b.used == INT64_MAX);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("egress limits", NULL, NULL);
    CU_add_test(s, "token bucket", test_bucket);
    CU_add_test(s, "byte budget", test_budget);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
