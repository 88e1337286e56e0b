/*
 * Unit tests for gw_session: a session id bound to one principal is refused
 * to another, per route; the first binding wins; DELETE forgets; the table is
 * bounded (least recently used goes) and idle bindings expire (fake clock).
 */
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "gw_session.h"

static int check(struct gw_sessions *s, const char *route, const char *sid, const char *p,
                 double now)
{
    return gw_sessions_check(s, route, sid, strlen(sid), p, now);
}

static int bind(struct gw_sessions *s, const char *route, const char *sid, const char *p,
                double now)
{
    return gw_sessions_bind(s, route, sid, strlen(sid), p, now);
}

static void test_binding(void)
{
    struct gw_sessions *s;

    CU_ASSERT_EQUAL_FATAL(gw_sessions_new(16, 3600, &s), 0);
    CU_ASSERT_EQUAL(check(s, "corp/crm", "sess-1", "alice", 0), 0); /* unknown: fine */
    CU_ASSERT_EQUAL(bind(s, "corp/crm", "sess-1", "alice", 0), 0);
    CU_ASSERT_EQUAL(check(s, "corp/crm", "sess-1", "alice", 1), 0);
    CU_ASSERT_EQUAL(check(s, "corp/crm", "sess-1", "bob", 1), AL_ERR_AUTH);
    CU_ASSERT_EQUAL(check(s, "corp/crm", "sess-1", "alicex", 1), AL_ERR_AUTH);
    /* another route is another namespace */
    CU_ASSERT_EQUAL(check(s, "corp/wiki", "sess-1", "bob", 1), 0);
    /* the first binding wins */
    CU_ASSERT_EQUAL(bind(s, "corp/crm", "sess-1", "bob", 2), AL_ERR_AUTH);
    CU_ASSERT_EQUAL(check(s, "corp/crm", "sess-1", "bob", 2), AL_ERR_AUTH);
    CU_ASSERT_EQUAL(bind(s, "corp/crm", "sess-1", "alice", 2), 0);
    CU_ASSERT_EQUAL(gw_sessions_count(s), 1);
    /* the route/id separator cannot be forged */
    CU_ASSERT_EQUAL(bind(s, "corp/cr", "msess-1", "carol", 2), 0);
    CU_ASSERT_EQUAL(check(s, "corp/crm", "sess-1", "alice", 2), 0);
    gw_sessions_remove(s, "corp/crm", "sess-1", 6);
    CU_ASSERT_EQUAL(check(s, "corp/crm", "sess-1", "bob", 3), 0);
    CU_ASSERT_EQUAL(gw_sessions_count(s), 1);
    gw_sessions_free(s);
}

static void test_bounds(void)
{
    struct gw_sessions *s;
    char sid[16];

    CU_ASSERT_EQUAL_FATAL(gw_sessions_new(3, 100, &s), 0);
    CU_ASSERT_EQUAL(bind(s, "r", "a", "p1", 0), 0);
    CU_ASSERT_EQUAL(bind(s, "r", "b", "p1", 1), 0);
    CU_ASSERT_EQUAL(bind(s, "r", "c", "p1", 2), 0);
    CU_ASSERT_EQUAL(check(s, "r", "a", "p1", 3), 0); /* a is fresh again */
    CU_ASSERT_EQUAL(bind(s, "r", "d", "p1", 4), 0);  /* full: b (least recent) goes */
    CU_ASSERT_EQUAL(gw_sessions_count(s), 3);
    CU_ASSERT_EQUAL(check(s, "r", "b", "p2", 5), 0);
    CU_ASSERT_EQUAL(check(s, "r", "a", "p2", 5), AL_ERR_AUTH);
    /* idle expiry: c was last used at 2 */
    CU_ASSERT_EQUAL(check(s, "r", "c", "p2", 103), 0);
    CU_ASSERT_EQUAL(check(s, "r", "d", "p2", 103), AL_ERR_AUTH);
    for (int i = 0; i < 100; i++) {
        snprintf(sid, sizeof(sid), "s%d", i);
        CU_ASSERT_EQUAL(bind(s, "r", sid, "p", 200 + i), 0);
    }
    CU_ASSERT_EQUAL(gw_sessions_count(s), 3);
    gw_sessions_free(s);
    CU_ASSERT_EQUAL(gw_sessions_new(0, 1, &s), AL_ERR_INVAL);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("gateway sessions", NULL, NULL);
    CU_add_test(s, "binding per route and principal", test_binding);
    CU_add_test(s, "bounded and expiring", test_bounds);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
