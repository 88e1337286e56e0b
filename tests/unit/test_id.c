/* Unit tests for al_id: layout (48-bit ms time, 80 random bits), uniqueness,
 * order over time. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <CUnit/Basic.h>

#include "al_id.h"

#define N 20000

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, AL_ID_LEN);
}

static void test_layout(void)
{
    uint8_t id[AL_ID_LEN];
    int64_t t0 = wall_ms(), t1;
    uint64_t ms = 0;

    CU_ASSERT_EQUAL_FATAL(al_id_new(id), 0);
    t1 = wall_ms();
    for (int i = 0; i < 6; i++)
        ms = ms << 8 | id[i];
    CU_ASSERT((int64_t)ms >= t0 && (int64_t)ms <= t1);
}

static void test_hex(void)
{
    char h[AL_ID_HEX_LEN + 1];
    char ms_hex[13];
    int64_t t0 = wall_ms(), t1;

    memset(h, 'x', sizeof h);
    CU_ASSERT_EQUAL_FATAL(al_id_new_hex(h), 0);
    t1 = wall_ms();
    CU_ASSERT_EQUAL(strlen(h), AL_ID_HEX_LEN);
    CU_ASSERT_EQUAL(strspn(h, "0123456789abcdef"), AL_ID_HEX_LEN);
    memcpy(ms_hex, h, 12);
    ms_hex[12] = '\0';
    CU_ASSERT((int64_t)strtoull(ms_hex, NULL, 16) >= t0 &&
              (int64_t)strtoull(ms_hex, NULL, 16) <= t1);
}

/* N ids made in a row: all different, and the random parts too (most share
 * their millisecond) */
static void test_unique(void)
{
    uint8_t(*ids)[AL_ID_LEN] = calloc(N, AL_ID_LEN);
    uint8_t(*rnd)[AL_ID_LEN] = calloc(N, AL_ID_LEN);
    size_t dup = 0, dup_rnd = 0;

    CU_ASSERT_FATAL(ids && rnd);
    for (size_t i = 0; i < N; i++) {
        CU_ASSERT_EQUAL_FATAL(al_id_new(ids[i]), 0);
        memcpy(rnd[i], ids[i] + 6, AL_ID_LEN - 6);
    }
    qsort(ids, N, AL_ID_LEN, cmp_id);
    qsort(rnd, N, AL_ID_LEN, cmp_id);
    for (size_t i = 1; i < N; i++) {
        dup += memcmp(ids[i - 1], ids[i], AL_ID_LEN) == 0;
        dup_rnd += memcmp(rnd[i - 1], rnd[i], AL_ID_LEN) == 0;
    }
    CU_ASSERT_EQUAL(dup, 0);
    CU_ASSERT_EQUAL(dup_rnd, 0);
    free(ids);
    free(rnd);
}

/* An id made in a later millisecond sorts after one made earlier. */
static void test_order(void)
{
    uint8_t a[AL_ID_LEN], b[AL_ID_LEN];
    int64_t t;

    CU_ASSERT_EQUAL_FATAL(al_id_new(a), 0);
    t = wall_ms();
    while (wall_ms() < t + 2)
        ;
    CU_ASSERT_EQUAL_FATAL(al_id_new(b), 0);
    CU_ASSERT(memcmp(a, b, AL_ID_LEN) < 0);
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("id", NULL, NULL);
    CU_add_test(s, "48-bit ms time first", test_layout);
    CU_add_test(s, "hex form", test_hex);
    CU_add_test(s, "unique, random parts too", test_unique);
    CU_add_test(s, "later ids sort after", test_order);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
