/*
 * Unit tests for al_edge_audit, the use-record batching state machine, on a fake
 * clock: reservations and the max_pending bound, flush by age and by size,
 * one batch in flight, grants carried once per batch, a failed batch resent
 * unchanged with the same id after a growing backoff, the cache-bypass rule
 * (failed, or in flight longer than 2 x flush_interval), a refused batch
 * split down to the one bad record, which is dropped and counted, and the
 * shutdown flush.
 */
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "al_edge_audit.h"

static struct al_edge_grant *grant(const char *id)
{
    Airlock__V1__SignedGrant sg = AIRLOCK__V1__SIGNED_GRANT__INIT;
    uint8_t buf[256];
    struct al_edge_grant *g = NULL;
    size_t n;

    sg.grant.data = (uint8_t *)id;
    sg.grant.len = strlen(id);
    sg.key_id = (char *)"k1";
    n = airlock__v1__signed_grant__pack(&sg, buf);
    CU_ASSERT_EQUAL(al_edge_grant_new(buf, n, id, &g), 0);
    return g;
}

static void add(struct al_edge_audit *a, struct al_edge_grant *g, const char *rid, double now)
{
    struct al_edge_use u = {.credential = "crm-token",
                            .version = 1,
                            .destination = "http://10.0.0.7:8931",
                            .method = "POST",
                            .path = "/mcp",
                            .status = 200,
                            .allow = 1,
                            .reason = "",
                            .time_ms = 1,
                            .request_id = rid,
                            .tool = "tools/call:search"};

    CU_ASSERT_EQUAL_FATAL(al_edge_audit_reserve(a), 0);
    CU_ASSERT_EQUAL(al_edge_audit_add(a, g, &u, now), 0);
}

static struct al_edge_audit *audit(size_t batch_max, double flush, size_t max_pending)
{
    struct al_edge_audit_opts o = {batch_max, flush, max_pending, 4.0};
    struct al_edge_audit *a = NULL;

    CU_ASSERT_EQUAL(al_edge_audit_new(&o, &a), 0);
    return a;
}

static void test_reserve_bound(void)
{
    struct al_edge_audit *a = audit(10, 0.5, 3);
    struct al_edge_grant *g = grant("g1");

    CU_ASSERT_EQUAL(al_edge_audit_reserve(a), 0);
    CU_ASSERT_EQUAL(al_edge_audit_reserve(a), 0);
    CU_ASSERT_EQUAL(al_edge_audit_reserve(a), 0);
    CU_ASSERT_EQUAL(al_edge_audit_reserve(a), AL_ERR_TOOBIG);
    al_edge_audit_release(a);
    CU_ASSERT_EQUAL(al_edge_audit_reserved(a), 2);
    /* records use their reservations; queued ones count as well */
    struct al_edge_use u = {.credential = "c", .method = "GET", .request_id = "r"};
    CU_ASSERT_EQUAL(al_edge_audit_add(a, g, &u, 0), 0);
    CU_ASSERT_EQUAL(al_edge_audit_reserved(a), 1);
    CU_ASSERT_EQUAL(al_edge_audit_queued(a), 1);
    CU_ASSERT_EQUAL(al_edge_audit_reserve(a), 0);
    CU_ASSERT_EQUAL(al_edge_audit_reserve(a), AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(al_edge_audit_free(a), 1);
    al_edge_grant_unref(g);
}

static void test_flush_by_age_and_size(void)
{
    struct al_edge_audit *a = audit(3, 0.5, 100);
    struct al_edge_grant *g = grant("g1");
    const Airlock__V1__AppendAuditRequest *rq;

    CU_ASSERT(al_edge_audit_wake(a, 0) < 0);
    add(a, g, "r1", 10.0);
    CU_ASSERT_DOUBLE_EQUAL(al_edge_audit_wake(a, 10.0), 10.5, 1e-9);
    CU_ASSERT_PTR_NULL(al_edge_audit_next(a, 10.4));
    rq = al_edge_audit_next(a, 10.5);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rq);
    CU_ASSERT_EQUAL(rq->n_records, 1);
    CU_ASSERT_EQUAL(strlen(rq->batch_id), 32);
    CU_ASSERT_STRING_EQUAL(rq->records[0]->grant_id, "g1");
    CU_ASSERT_STRING_EQUAL(rq->records[0]->tool, "tools/call:search");
    CU_ASSERT_EQUAL(rq->records[0]->decision, AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW);
    /* one batch at a time: more records wait, even a full batch's worth */
    for (int i = 0; i < 4; i++)
        add(a, g, "r", 10.6);
    CU_ASSERT(al_edge_audit_wake(a, 10.6) < 0);
    CU_ASSERT_PTR_NULL(al_edge_audit_next(a, 20));
    al_edge_audit_done(a, AL_EDGE_OK, 10.7);
    CU_ASSERT_EQUAL(al_edge_audit_queued(a), 4);
    /* batch_max reached: due at once, three of the four */
    CU_ASSERT_DOUBLE_EQUAL(al_edge_audit_wake(a, 10.7), 10.7, 1e-9);
    rq = al_edge_audit_next(a, 10.7);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rq);
    CU_ASSERT_EQUAL(rq->n_records, 3);
    CU_ASSERT_EQUAL(rq->n_grants, 1); /* one grant, cited three times */
    al_edge_audit_done(a, AL_EDGE_OK, 10.8);
    CU_ASSERT_EQUAL(al_edge_audit_queued(a), 1);
    CU_ASSERT_DOUBLE_EQUAL(al_edge_audit_wake(a, 10.8), 11.1, 1e-9);
    CU_ASSERT_EQUAL(al_edge_audit_free(a), 1);
    al_edge_grant_unref(g);
}

static void test_grants_once(void)
{
    struct al_edge_audit *a = audit(10, 0.5, 100);
    struct al_edge_grant *g1 = grant("g1"), *g2 = grant("g2");
    const Airlock__V1__AppendAuditRequest *rq;

    add(a, g1, "r1", 0);
    add(a, g2, "r2", 0);
    add(a, g1, "r3", 0);
    rq = al_edge_audit_next(a, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rq);
    CU_ASSERT_EQUAL(rq->n_records, 3);
    CU_ASSERT_EQUAL(rq->n_grants, 2);
    CU_ASSERT_PTR_EQUAL(rq->grants[0], g1->sg);
    CU_ASSERT_PTR_EQUAL(rq->grants[1], g2->sg);
    al_edge_audit_done(a, AL_EDGE_OK, 1);
    /* the next batch carries g1 again: grants are per batch */
    add(a, g1, "r4", 2);
    rq = al_edge_audit_next(a, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rq);
    CU_ASSERT_EQUAL(rq->n_grants, 1);
    al_edge_audit_done(a, AL_EDGE_OK, 3);
    CU_ASSERT_EQUAL(al_edge_audit_free(a), 0);
    /* the records' references are gone: ours are the last */
    CU_ASSERT_EQUAL(g1->refs, 1);
    al_edge_grant_unref(g1);
    al_edge_grant_unref(g2);
}

static void test_retry_same_batch(void)
{
    struct al_edge_audit *a = audit(10, 0.5, 100);
    struct al_edge_grant *g = grant("g1");
    const Airlock__V1__AppendAuditRequest *rq, *again;
    char id[33];

    add(a, g, "r1", 0);
    rq = al_edge_audit_next(a, 0.5);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rq);
    snprintf(id, sizeof(id), "%s", rq->batch_id);
    CU_ASSERT_FALSE(al_edge_audit_bypass(a, 1.0)); /* in flight 0.5 s: not overdue */
    CU_ASSERT(al_edge_audit_bypass(a, 1.6));       /* in flight > 2 x flush */
    al_edge_audit_done(a, AL_EDGE_RETRY, 1.6);
    CU_ASSERT(al_edge_audit_bypass(a, 1.6)); /* failed: bypass until delivered */
    add(a, g, "r2", 1.7);                    /* new records wait behind the failed batch */
    CU_ASSERT_DOUBLE_EQUAL(al_edge_audit_wake(a, 1.7), 2.1, 1e-9); /* first backoff = flush */
    CU_ASSERT_PTR_NULL(al_edge_audit_next(a, 2.0));
    again = al_edge_audit_next(a, 2.1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(again);
    CU_ASSERT_STRING_EQUAL(again->batch_id, id);
    CU_ASSERT_EQUAL(again->n_records, 1);
    al_edge_audit_done(a, AL_EDGE_RETRY, 2.2);
    CU_ASSERT_DOUBLE_EQUAL(al_edge_audit_wake(a, 2.2), 3.2, 1e-9); /* doubled */
    again = al_edge_audit_next(a, 3.2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(again);
    al_edge_audit_done(a, AL_EDGE_RETRY, 3.2);
    CU_ASSERT_DOUBLE_EQUAL(al_edge_audit_wake(a, 3.2), 5.2, 1e-9);
    again = al_edge_audit_next(a, 5.2);
    al_edge_audit_done(a, AL_EDGE_RETRY, 5.2);
    CU_ASSERT_DOUBLE_EQUAL(al_edge_audit_wake(a, 5.2), 9.2, 1e-9); /* capped at retry_max 4 s */
    again = al_edge_audit_next(a, 9.2);
    CU_ASSERT_STRING_EQUAL(again->batch_id, id);
    al_edge_audit_done(a, AL_EDGE_OK, 9.3);
    CU_ASSERT_FALSE(al_edge_audit_bypass(a, 9.3));
    /* the waiting record goes next, in a new batch */
    rq = al_edge_audit_next(a, 9.3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rq);
    CU_ASSERT_STRING_NOT_EQUAL(rq->batch_id, id);
    CU_ASSERT_STRING_EQUAL(rq->records[0]->request_id, "r2");
    al_edge_audit_done(a, AL_EDGE_OK, 9.4);
    CU_ASSERT_EQUAL(al_edge_audit_free(a), 0);
    al_edge_grant_unref(g);
}

static void test_refused_split(void)
{
    struct al_edge_audit *a = audit(8, 0.5, 100);
    struct al_edge_grant *g = grant("g1");
    const Airlock__V1__AppendAuditRequest *rq;
    char rid[8];
    int sizes[16], nb = 0, ok = 0;

    for (int i = 0; i < 8; i++) {
        snprintf(rid, sizeof(rid), "r%d", i);
        add(a, g, rid, 0);
    }
    /* credstore refuses every batch holding r5 */
    while ((rq = al_edge_audit_next(a, 100)) && nb < 16) {
        int bad = 0;
        for (size_t i = 0; i < rq->n_records; i++)
            bad |= strcmp(rq->records[i]->request_id, "r5") == 0;
        sizes[nb++] = (int)rq->n_records;
        if (!bad)
            ok += (int)rq->n_records;
        al_edge_audit_done(a, bad ? AL_EDGE_REFUSED : AL_EDGE_OK, 100);
    }
    /* 8 refused -> 4 ok, 4 refused -> 2 refused -> the four suspects one by one:
     * r4 ok, r5 refused (dropped), r6 ok, r7 ok */
    CU_ASSERT_EQUAL(nb, 8);
    CU_ASSERT_EQUAL(sizes[0], 8);
    CU_ASSERT_EQUAL(sizes[1], 4);
    CU_ASSERT_EQUAL(sizes[2], 4);
    CU_ASSERT_EQUAL(sizes[3], 2);
    for (int i = 4; i < nb && i < 16; i++)
        CU_ASSERT_EQUAL(sizes[i], 1);
    CU_ASSERT_EQUAL(ok, 7);
    CU_ASSERT_EQUAL(al_edge_audit_dropped(a), 1);
    CU_ASSERT_EQUAL(al_edge_audit_queued(a), 0);
    /* normal batching again afterwards */
    for (int i = 0; i < 3; i++)
        add(a, g, "n", 100);
    rq = al_edge_audit_next(a, 101);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rq);
    CU_ASSERT_EQUAL(rq->n_records, 3);
    al_edge_audit_done(a, AL_EDGE_OK, 101);
    CU_ASSERT_EQUAL(al_edge_audit_free(a), 0);
    al_edge_grant_unref(g);
}

static void test_flush_all_and_cuts(void)
{
    struct al_edge_audit *a = audit(10, 30, 100);
    struct al_edge_grant *g = grant("g1");
    const Airlock__V1__AppendAuditRequest *rq;
    char longtool[600], longpath[2000];
    struct al_edge_use u = {.credential = "c", .method = "POST", .request_id = "r"};

    memset(longtool, 'x', sizeof(longtool) - 1);
    longtool[sizeof(longtool) - 1] = 0;
    memcpy(longtool + 255, "\xc3\xa9", 2); /* a two-byte character across the cut */
    memset(longpath, 'p', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = 0;
    u.tool = longtool;
    u.path = longpath;
    CU_ASSERT_EQUAL(al_edge_audit_reserve(a), 0);
    CU_ASSERT_EQUAL(al_edge_audit_add(a, g, &u, 0), 0);
    CU_ASSERT_PTR_NULL(al_edge_audit_next(a, 1)); /* flush_interval is 30 s */
    al_edge_audit_flush_all(a);
    CU_ASSERT_DOUBLE_EQUAL(al_edge_audit_wake(a, 1), 1, 1e-9);
    rq = al_edge_audit_next(a, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rq);
    CU_ASSERT_EQUAL(strlen(rq->records[0]->tool), 255); /* not inside the character */
    CU_ASSERT_EQUAL(strlen(rq->records[0]->path), AL_EDGE_PATH_MAX);
    CU_ASSERT_EQUAL(rq->records[0]->decision, AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_DENY);
    CU_ASSERT_EQUAL(al_edge_audit_free(a), 1); /* in flight at shutdown: counted as lost */
    al_edge_grant_unref(g);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("edge audit batching", NULL, NULL);
    CU_add_test(s, "reservations and max_pending", test_reserve_bound);
    CU_add_test(s, "flush by age and by size, one batch in flight", test_flush_by_age_and_size);
    CU_add_test(s, "grants once per batch", test_grants_once);
    CU_add_test(s, "failed batch resent unchanged with backoff; cache bypass",
                test_retry_same_batch);
    CU_add_test(s, "refused batch split to the bad record", test_refused_split);
    CU_add_test(s, "shutdown flush; fields cut at credstore's caps", test_flush_all_and_cuts);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
