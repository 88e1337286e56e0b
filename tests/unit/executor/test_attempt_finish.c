/*
 * Unit tests of executor attempts against a fake ExecutorService on loopback.
 *
 * Finish answered FAILED_PRECONDITION (lease lost): lost() frees the attempt
 * inside finish_done(); nothing may touch it afterwards (it once logged the
 * freed job id: the ASan build catches any such use). No sandbox is needed:
 * an assignment taken while draining ends at once (handed back) and goes
 * straight to Finish.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_grpc.h"
#include "al_grpc_client.h"
#include "executor.h"

static struct ev_loop *loop;
static int finishes;

/* main.c's, which executor_core leaves out */
ev_tstamp ex_now(const struct ex *ex)
{
    return ev_now(ex->svc.loop);
}

void ex_maybe_drained(struct ex *ex)
{
    (void)ex;
}

static void finish_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    (void)req;
    (void)user;
    finishes++;
    al_grpc_call_finish(call, AL_GRPC_FAILED_PRECONDITION,
                        "this lease is no longer held: stop the attempt");
}

static void noop_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

static void test_finish_lease_lost(void)
{
    static const struct al_grpc_method_impl impls[] = {{"Finish", finish_cb, 0}};
    struct al_grpc_server_opts so = {.listen = "127.0.0.1:0", .insecure = 1};
    struct al_grpc_server *srv = NULL;
    static struct ex ex;
    char target[64];

    loop = ev_loop_new(EVFLAG_AUTO);
    CU_ASSERT_FATAL(al_grpc_server_new(loop, &so, &srv) == 0);
    CU_ASSERT_FATAL(al_grpc_server_add_service(srv, &airlock__v1__executor_service__descriptor,
                                               impls, 1, NULL) == 0);
    CU_ASSERT_FATAL(al_grpc_server_start(srv) == 0);
    snprintf(target, sizeof(target), "127.0.0.1:%d", al_grpc_server_port(srv));

    ex.svc.loop = loop;
    ex.cfg.slots = 1;
    ex.cfg.push_max_batch = 1 << 20;
    ex.cfg.safety_margin_ms = 1000;
    ex.draining = 2; /* the assignment ends at once and is handed back (Finish) */
    ev_timer_init(&ex.hb_w, noop_cb, 0., 0.);
    struct al_grpc_channel_opts co = {.target = target};
    CU_ASSERT_FATAL(al_grpc_channel_new(loop, &co, &ex.ch) == 0);

    Airlock__V1__Job job = AIRLOCK__V1__JOB__INIT;
    Airlock__V1__LeaseAssignment as = AIRLOCK__V1__LEASE_ASSIGNMENT__INIT;
    uint8_t tok[EX_TOKEN_LEN] = {1};
    job.id = (char *)"0123456789abcdef0123456789abcdef";
    as.job = &job;
    as.attempt = 1;
    as.fencing_token.data = tok;
    as.fencing_token.len = EX_TOKEN_LEN;
    as.lease_ttl_ms = 60000;
    as.heartbeat_interval_ms = 1000;
    ex_attempt_assign(&ex, &as);
    CU_ASSERT_FATAL(ex.n_attempts == 1);

    for (int i = 0; i < 2000 && ex.n_attempts; i++)
        ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
    CU_ASSERT(finishes == 1);
    CU_ASSERT(ex.n_attempts == 0); /* lost: freed */

    al_grpc_channel_free(ex.ch);
    al_grpc_server_free(srv);
    ev_run(loop, EVRUN_NOWAIT);
    ev_loop_destroy(loop);
}

int main(void)
{
    CU_pSuite s;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("attempt_finish", NULL, NULL);
    CU_add_test(s, "Finish answered FAILED_PRECONDITION", test_finish_lease_lost);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failures = (int)CU_get_number_of_failures();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
