/* Unit tests for the job state machine (sm.h): every transition allowed and
 * refused, terminal finality, lease loss and hand-back outcomes, retry
 * backoff, effective attempts, and the fencing check. */
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "sm.h"

#define Q  IN_JS(QUEUED)
#define L  IN_JS(LEASED)
#define R  IN_JS(RUNNING)
#define S  IN_JS(SUCCEEDED)
#define F  IN_JS(FAILED)
#define C  IN_JS(CANCELLED)
#define T  IN_JS(TIMED_OUT)
#define U  IN_JS(UNSPECIFIED)
#define T0 1700000000000LL

static void test_transitions(void)
{
    /* the complete table: anything not listed is refused */
    static const int ok[][2] = {{Q, L}, {Q, C}, {Q, T}, {L, R}, {L, S}, {L, F}, {L, C},
                                {L, T}, {L, Q}, {R, S}, {R, F}, {R, C}, {R, T}, {R, Q}};
    for (int from = -1; from <= 8; from++) {
        for (int to = -1; to <= 8; to++) {
            int want = 0;
            for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
                want |= ok[i][0] == from && ok[i][1] == to;
            if (in_sm_allowed(from, to) != want)
                printf("\n  transition %d -> %d: got %d want %d\n", from, to,
                       in_sm_allowed(from, to), want);
            CU_ASSERT_EQUAL(in_sm_allowed(from, to), want);
        }
    }
}

static void test_terminal_final(void)
{
    const int terminal[] = {S, F, C, T};
    for (size_t i = 0; i < 4; i++) {
        CU_ASSERT_TRUE(in_sm_terminal(terminal[i]));
        CU_ASSERT_TRUE(in_sm_finish_state_valid(terminal[i]));
        for (int to = 0; to < 8; to++)
            CU_ASSERT_FALSE(in_sm_allowed(terminal[i], to));
    }
    const int live[] = {U, Q, L, R, 8, -1};
    for (size_t i = 0; i < 6; i++) {
        CU_ASSERT_FALSE(in_sm_terminal(live[i]));
        CU_ASSERT_FALSE(in_sm_finish_state_valid(live[i]));
    }
    CU_ASSERT_FALSE(in_sm_state_valid(U));
    CU_ASSERT_FALSE(in_sm_state_valid(8));
    CU_ASSERT_TRUE(in_sm_state_valid(Q) && in_sm_state_valid(T));
    CU_ASSERT_STRING_EQUAL(in_sm_state_name(R), "RUNNING");
    CU_ASSERT_STRING_EQUAL(in_sm_state_name(42), "UNSPECIFIED");
}

static void test_backoff(void)
{
    CU_ASSERT_EQUAL(in_sm_backoff_ms(1000, 60000, 0), 0);
    CU_ASSERT_EQUAL(in_sm_backoff_ms(1000, 60000, 1), 1000);
    CU_ASSERT_EQUAL(in_sm_backoff_ms(1000, 60000, 2), 2000);
    CU_ASSERT_EQUAL(in_sm_backoff_ms(1000, 60000, 3), 4000);
    CU_ASSERT_EQUAL(in_sm_backoff_ms(1000, 60000, 6), 32000);
    CU_ASSERT_EQUAL(in_sm_backoff_ms(1000, 60000, 7), 60000);
    CU_ASSERT_EQUAL(in_sm_backoff_ms(1000, 60000, 1000), 60000); /* no overflow */
    CU_ASSERT_EQUAL(in_sm_backoff_ms(0, 60000, 5), 0);
    CU_ASSERT_EQUAL(in_sm_backoff_ms(100, 50, 1), 50);
}

static void test_effective_attempts(void)
{
    CU_ASSERT_EQUAL(in_sm_effective_attempts(0, 3, 10), 3);
    CU_ASSERT_EQUAL(in_sm_effective_attempts(1, 3, 10), 1);
    CU_ASSERT_EQUAL(in_sm_effective_attempts(50, 3, 10), 10);
    CU_ASSERT_EQUAL(in_sm_effective_attempts(0, 0, 0), 1);
}

static void test_lease_lost(void)
{
    struct in_sm_outcome o;
    struct in_sm_attempts a = {.attempt = 1, .spent = 1, .max_attempts = 3};

    in_sm_lease_lost(&a, T0, 1000, 60000, &o);
    CU_ASSERT_EQUAL(o.state, Q);
    CU_ASSERT_EQUAL(o.spent, 1);
    CU_ASSERT_EQUAL(o.not_before_ms, T0 + 1000);
    CU_ASSERT_PTR_NOT_NULL(strstr(o.message, "re-queued as attempt 2"));
    a.attempt = a.spent = 2;
    in_sm_lease_lost(&a, T0, 1000, 60000, &o);
    CU_ASSERT_EQUAL(o.state, Q);
    CU_ASSERT_EQUAL(o.not_before_ms, T0 + 2000);
    a.attempt = a.spent = 3;
    in_sm_lease_lost(&a, T0, 1000, 60000, &o);
    CU_ASSERT_EQUAL(o.state, F);
    CU_ASSERT_EQUAL(o.failure_reason, IN_FR(EXECUTOR_LOST));
    /* max_attempts 1: never re-run */
    struct in_sm_attempts one = {.attempt = 1, .spent = 1, .max_attempts = 1, .ran = 1};
    in_sm_lease_lost(&one, T0, 1000, 60000, &o);
    CU_ASSERT_EQUAL(o.state, F);
    /* cancellation requested: CANCELLED, whatever attempts remain */
    struct in_sm_attempts c = {.attempt = 1, .spent = 1, .max_attempts = 5, .cancel_requested = 1};
    in_sm_lease_lost(&c, T0, 1000, 60000, &o);
    CU_ASSERT_EQUAL(o.state, C);
    CU_ASSERT_EQUAL(o.failure_reason, IN_FR(CANCELLED));
}

static void test_handed_back(void)
{
    struct in_sm_outcome o;
    /* never ran: does not count, no backoff */
    struct in_sm_attempts a = {.attempt = 1, .spent = 1, .max_attempts = 1, .ran = 0};
    in_sm_handed_back(&a, T0, &o);
    CU_ASSERT_EQUAL(o.state, Q);
    CU_ASSERT_EQUAL(o.spent, 0);
    CU_ASSERT_EQUAL(o.not_before_ms, T0);
    /* ran: counts */
    a.ran = 1;
    in_sm_handed_back(&a, T0, &o);
    CU_ASSERT_EQUAL(o.state, F);
    CU_ASSERT_EQUAL(o.failure_reason, IN_FR(EXECUTOR_LOST));
    a.max_attempts = 2;
    in_sm_handed_back(&a, T0, &o);
    CU_ASSERT_EQUAL(o.state, Q);
    CU_ASSERT_EQUAL(o.spent, 1);
    a.cancel_requested = 1;
    in_sm_handed_back(&a, T0, &o);
    CU_ASSERT_EQUAL(o.state, C);
}

static void test_fencing(void)
{
    uint8_t tok[IN_TOKEN_LEN], other[IN_TOKEN_LEN];
    const char *holder = "spiffe://airlock/executor/executor-0";
    memset(tok, 0x5a, sizeof(tok));
    struct in_sm_lease l = {L, 2, holder, tok};

    CU_ASSERT_TRUE(in_sm_fence_ok(&l, holder, 2, tok, IN_TOKEN_LEN));
    l.state = R;
    CU_ASSERT_TRUE(in_sm_fence_ok(&l, holder, 2, tok, IN_TOKEN_LEN));
    /* every single byte of the token matters */
    for (size_t i = 0; i < IN_TOKEN_LEN; i++) {
        memcpy(other, tok, sizeof(other));
        other[i] ^= 0x01;
        CU_ASSERT_FALSE(in_sm_fence_ok(&l, holder, 2, other, IN_TOKEN_LEN));
    }
    /* wrong length, missing token */
    CU_ASSERT_FALSE(in_sm_fence_ok(&l, holder, 2, tok, IN_TOKEN_LEN - 1));
    CU_ASSERT_FALSE(in_sm_fence_ok(&l, holder, 2, NULL, 0));
    /* stale or future attempt */
    CU_ASSERT_FALSE(in_sm_fence_ok(&l, holder, 1, tok, IN_TOKEN_LEN));
    CU_ASSERT_FALSE(in_sm_fence_ok(&l, holder, 3, tok, IN_TOKEN_LEN));
    /* another identity, even with the right token; empty identity */
    CU_ASSERT_FALSE(
        in_sm_fence_ok(&l, "spiffe://airlock/executor/executor-1", 2, tok, IN_TOKEN_LEN));
    CU_ASSERT_FALSE(in_sm_fence_ok(&l, "", 2, tok, IN_TOKEN_LEN));
    CU_ASSERT_FALSE(in_sm_fence_ok(&l, NULL, 2, tok, IN_TOKEN_LEN));
    /* a job that no longer holds a lease */
    int states[] = {Q, S, F, C, T, U};
    for (size_t i = 0; i < 6; i++) {
        l.state = states[i];
        CU_ASSERT_FALSE(in_sm_fence_ok(&l, holder, 2, tok, IN_TOKEN_LEN));
    }
    l.state = L;
    l.token = NULL;
    CU_ASSERT_FALSE(in_sm_fence_ok(&l, holder, 2, tok, IN_TOKEN_LEN));
}

int main(void)
{
    CU_pSuite s;
    unsigned failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("intake_sm", NULL, NULL);
    CU_add_test(s, "every transition allowed or refused", test_transitions);
    CU_add_test(s, "terminal states are final", test_terminal_final);
    CU_add_test(s, "retry backoff", test_backoff);
    CU_add_test(s, "effective max attempts", test_effective_attempts);
    CU_add_test(s, "lease lost: re-queue, fail, cancel", test_lease_lost);
    CU_add_test(s, "handed back: counts only if it ran", test_handed_back);
    CU_add_test(s, "fencing: token, attempt, identity, state", test_fencing);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
