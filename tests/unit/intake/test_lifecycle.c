/* Unit tests for job transitions on a real store, without the network
 * (lifecycle.c, execsvc.c's due processing and dispatcher, insvc.c's wake
 * computation, sessions.c, auth.c scoping): lease expiry re-queues with
 * backoff and then fails EXECUTOR_LOST, a cancelled lease ends CANCELLED, the
 * restart grace holds expiry back and decides when an executor is gone, queue
 * timeouts, idempotency keys per principal, tenant visibility, per-principal
 * counters and executor slots; the wake timer never loses a backoff end, a
 * grace end or a failed dispatch that the dispatcher has not judged yet; the
 * dispatcher's round robin moves only when a stream got a job. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "al_log.h"
#include "insvc.h"

#define T0   1700000000000LL
#define EXEC "spiffe://airlock/executor/executor-0"
#define INST "0123456789abcdef0123456789abcdef"

static char base[64];
static int ndirs;
static const uint8_t spec_bytes[] = {0x0a, 0x01, 'p'};

static void svc_open(struct in_svc *s)
{
    char dir[96];
    memset(s, 0, sizeof(*s));
    snprintf(dir, sizeof(dir), "%s/d%d", base, ndirs++);
    CU_ASSERT_EQUAL_FATAL(in_store_open(dir, 1, &s->store), 0);
    CU_ASSERT_EQUAL_FATAL(in_map_new(&s->principals), 0);
    CU_ASSERT_EQUAL_FATAL(in_map_new(&s->executors), 0);
    CU_ASSERT_EQUAL_FATAL(in_map_new(&s->watch_by_job), 0);
    s->actions_tail = &s->actions;
    al_arena_init(&s->txa, 0);
    s->cfg.lease_ttl_ms = 3000;
    s->cfg.restart_grace_ms = 5000;
    s->cfg.backoff_base_ms = 100;
    s->cfg.backoff_max_ms = 1000;
    s->cfg.quota_max_concurrent = 100;
    s->start_ms = T0;
    static char pname[] = "p";
    static struct in_pool pool = {.name = pname};
    s->cfg.pools.v = &pool;
    s->cfg.pools.n = 1;
    s->pool_stats = calloc(1, sizeof(*s->pool_stats));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s->pool_stats);
}

static void free_value(const char *k, void *v, void *u)
{
    (void)k;
    (void)u;
    free(v);
}

static void svc_close(struct in_svc *s)
{
    in_store_commit(s->store);
    in_store_close(s->store);
    in_map_each(s->principals, free_value, NULL);
    in_map_each(s->executors, free_value, NULL);
    in_map_free(s->principals);
    in_map_free(s->executors);
    in_map_free(s->watch_by_job);
    al_arena_cleanup(&s->txa);
    free(s->pool_stats);
}

/* A QUEUED job as Submit stores it (first event included), in session
 * `session` ("" for none). */
static void submit_in(struct in_svc *s, struct in_job *j, const char *id, const char *principal,
                      int max_attempts, const char *session)
{
    Airlock__V1__JobEvent ev = AIRLOCK__V1__JOB_EVENT__INIT;
    Airlock__V1__StateChange sc = AIRLOCK__V1__STATE_CHANGE__INIT;
    memset(j, 0, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%s", id);
    snprintf(j->principal, sizeof(j->principal), "%s", principal);
    snprintf(j->session_id, sizeof(j->session_id), "%s", session);
    snprintf(j->pool, sizeof(j->pool), "p");
    j->kind = 1;
    j->max_attempts = max_attempts;
    j->created_ms = j->updated_ms = j->not_before_ms = T0;
    j->queue_timeout_ms = 60000;
    j->queue_deadline_ms = T0 + 60000;
    j->spec = spec_bytes;
    j->spec_len = sizeof(spec_bytes);
    sc.state = IN_JS(QUEUED);
    ev.event_case = AIRLOCK__V1__JOB_EVENT__EVENT_STATE;
    ev.state = &sc;
    CU_ASSERT_EQUAL(in_tx_begin(s), 0);
    CU_ASSERT_EQUAL(in_job_event(s, j, &ev, T0), 0);
    j->state = IN_JS(QUEUED);
    CU_ASSERT_EQUAL(in_store_job_insert(s->store, j), 0);
    in_count(s, principal, j->pool, 0, IN_JS(QUEUED));
    CU_ASSERT_EQUAL(in_tx_end(s, 1), 0);
}

static void submit(struct in_svc *s, struct in_job *j, const char *id, const char *principal,
                   int max_attempts)
{
    submit_in(s, j, id, principal, max_attempts, "");
}

/* What the dispatcher does to lease j to EXEC/INST at now. */
static void lease(struct in_svc *s, struct in_job *j, int64_t now)
{
    struct in_exec *e = in_exec_get(s, EXEC, INST);
    CU_ASSERT_EQUAL(in_tx_begin(s), 0);
    CU_ASSERT_EQUAL(in_store_job_get(s->store, j->id, NULL, j), 0);
    j->attempt++;
    j->spent++;
    j->has_token = 1;
    memset(j->token, j->attempt, IN_TOKEN_LEN);
    snprintf(j->executor_id, sizeof(j->executor_id), EXEC);
    snprintf(j->instance_id, sizeof(j->instance_id), INST);
    j->lease_expires_ms = now + s->cfg.lease_ttl_ms;
    CU_ASSERT_EQUAL(in_job_transition(s, j, IN_JS(LEASED), "leased", now), 0);
    CU_ASSERT_EQUAL(in_store_job_update(s->store, j), 0);
    e->held++;
    CU_ASSERT_EQUAL(in_tx_end(s, 1), 0);
}

static void reload(struct in_svc *s, struct in_job *j)
{
    CU_ASSERT_EQUAL(in_store_job_get(s->store, j->id, NULL, j), 0);
}

struct last_state {
    int state;
    char message[200];
    int n;
};

static int last_state_cb(void *user, int64_t seq, const uint8_t *body, size_t len)
{
    struct last_state *ls = user;
    Airlock__V1__JobEvent *ev = airlock__v1__job_event__unpack(NULL, len, body);
    (void)seq;
    ls->n++;
    if (ev && ev->event_case == AIRLOCK__V1__JOB_EVENT__EVENT_STATE) {
        ls->state = ev->state->state;
        snprintf(ls->message, sizeof(ls->message), "%s", ev->state->message);
    }
    airlock__v1__job_event__free_unpacked(ev, NULL);
    return 0;
}

static void test_expiry_requeue_then_fail(void)
{
    struct in_svc s;
    struct in_job j;
    struct last_state ls = {0};
    svc_open(&s);
    submit(&s, &j, "00000000000000000000000000000001", "acme", 2);
    lease(&s, &j, T0);
    CU_ASSERT_EQUAL(in_pcount(&s, "acme")->active, 1);
    CU_ASSERT_EQUAL(in_exec_find(&s, EXEC, INST)->held, 1);
    /* one ms before expiry: nothing */
    in_process_due(&s, T0 + 2999);
    reload(&s, &j);
    CU_ASSERT_EQUAL(j.state, IN_JS(LEASED));
    /* expired: re-queued as attempt 2 after the backoff, slot freed */
    in_process_due(&s, T0 + 3000);
    reload(&s, &j);
    CU_ASSERT_EQUAL(j.state, IN_JS(QUEUED));
    CU_ASSERT_EQUAL(j.attempt, 1);
    CU_ASSERT_EQUAL(j.spent, 1);
    CU_ASSERT_EQUAL(j.not_before_ms, T0 + 3000 + 100);
    CU_ASSERT_FALSE(j.has_token);
    CU_ASSERT_EQUAL(in_exec_find(&s, EXEC, INST)->held, 0);
    CU_ASSERT_EQUAL(in_pcount(&s, "acme")->queued, 1);
    CU_ASSERT_EQUAL(in_pcount(&s, "acme")->active, 0);
    in_store_events(s.store, j.id, 0, 100, last_state_cb, &ls);
    CU_ASSERT_EQUAL(ls.state, IN_JS(QUEUED));
    CU_ASSERT_PTR_NOT_NULL(strstr(ls.message, "re-queued as attempt 2"));
    /* attempt 2 expires too: no attempts left */
    lease(&s, &j, T0 + 4000);
    CU_ASSERT_EQUAL(j.attempt, 2);
    in_process_due(&s, T0 + 7000);
    reload(&s, &j);
    CU_ASSERT_EQUAL(j.state, IN_JS(FAILED));
    CU_ASSERT_EQUAL(j.finished_ms, T0 + 7000);
    struct al_arena a;
    al_arena_init(&a, 0);
    CU_ASSERT_EQUAL(in_store_job_get(s.store, j.id, &a, &j), 0);
    Airlock__V1__JobResult *r = airlock__v1__job_result__unpack(NULL, j.result_len, j.result);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(r->failure_reason, IN_FR(EXECUTOR_LOST));
    airlock__v1__job_result__free_unpacked(r, NULL);
    al_arena_cleanup(&a);
    CU_ASSERT_EQUAL(in_pcount(&s, "acme")->queued + in_pcount(&s, "acme")->active, 0);
    /* terminal is final: due processing does not touch it again */
    int64_t seq = j.last_seq;
    in_process_due(&s, T0 + 100000);
    reload(&s, &j);
    CU_ASSERT_EQUAL(j.last_seq, seq);
    svc_close(&s);
}

static void test_cancelled_lease_expires_cancelled(void)
{
    struct in_svc s;
    struct in_job j;
    svc_open(&s);
    submit(&s, &j, "00000000000000000000000000000002", "acme", 5);
    lease(&s, &j, T0);
    j.cancel_requested = 1;
    snprintf(j.cancel_reason, sizeof(j.cancel_reason), "stop");
    CU_ASSERT_EQUAL(in_store_job_update(s.store, &j), 0);
    in_process_due(&s, T0 + 3000);
    reload(&s, &j);
    CU_ASSERT_EQUAL(j.state, IN_JS(CANCELLED));
    svc_close(&s);
}

static void test_restart_grace(void)
{
    struct in_svc s;
    struct in_job j;
    int n;
    svc_open(&s);
    submit(&s, &j, "00000000000000000000000000000003", "acme", 3);
    lease(&s, &j, T0 - 2000); /* held before the restart: expires at T0 + 1000 */
    CU_ASSERT_EQUAL(in_store_extend_leases(s.store, T0 + s.cfg.restart_grace_ms, &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    in_process_due(&s, T0 + 4999);
    reload(&s, &j);
    CU_ASSERT_EQUAL(j.state, IN_JS(LEASED));
    /* a heartbeat in the grace re-attaches it (what execsvc.c does) */
    j.lease_expires_ms = T0 + 4000 + s.cfg.lease_ttl_ms;
    CU_ASSERT_EQUAL(in_store_job_update(s.store, &j), 0);
    in_process_due(&s, T0 + 6999);
    reload(&s, &j);
    CU_ASSERT_EQUAL(j.state, IN_JS(LEASED));
    in_process_due(&s, T0 + 7000);
    reload(&s, &j);
    CU_ASSERT_EQUAL(j.state, IN_JS(QUEUED));
    /* executors: not gone before the grace ends; gone a ttl after their stream */
    struct in_exec *e = in_exec_get(&s, EXEC, INST);
    e->last_seen_ms = T0 - 10000;
    CU_ASSERT_FALSE(in_exec_gone(&s, e, T0 + 5000));
    CU_ASSERT_TRUE(in_exec_gone(&s, e, T0 + 5001));
    e->last_seen_ms = T0 + 10000;
    CU_ASSERT_FALSE(in_exec_gone(&s, e, T0 + 13000));
    CU_ASSERT_TRUE(in_exec_gone(&s, e, T0 + 13001));
    struct in_lstream ls = {0};
    e->stream = &ls;
    CU_ASSERT_FALSE(in_exec_gone(&s, e, T0 + 1000000));
    e->stream = NULL;
    svc_close(&s);
}

static void test_queue_timeout(void)
{
    struct in_svc s;
    struct in_job j;
    svc_open(&s);
    submit(&s, &j, "00000000000000000000000000000004", "acme", 3);
    CU_ASSERT_EQUAL(s.pool_stats[0].queued, 1); /* airlock_intake_pool_jobs_queued{pool="p"} */
    in_process_due(&s, T0 + 59999);
    reload(&s, &j);
    CU_ASSERT_EQUAL(j.state, IN_JS(QUEUED));
    in_process_due(&s, T0 + 60000);
    reload(&s, &j);
    CU_ASSERT_EQUAL(j.state, IN_JS(TIMED_OUT));
    CU_ASSERT_EQUAL(in_pcount(&s, "acme")->queued, 0);
    CU_ASSERT_EQUAL(s.queued_total, 0);
    CU_ASSERT_EQUAL(s.pool_stats[0].queued, 0);
    svc_close(&s);
}

static void test_idempotency_scoped(void)
{
    struct in_svc s;
    struct in_job j;
    char id[IN_JOB_ID_LEN + 1];
    uint8_t h1[32], h2[32];
    memset(h1, 1, 32);
    memset(h2, 2, 32);
    svc_open(&s);
    CU_ASSERT_EQUAL(in_idem_check(s.store, "acme", "k", h1, id), IN_IDEM_NEW);
    submit(&s, &j, "00000000000000000000000000000005", "acme", 3);
    CU_ASSERT_EQUAL(in_store_idem_put(s.store, "acme", "k", j.id, h1, T0), 0);
    CU_ASSERT_EQUAL(in_idem_check(s.store, "acme", "k", h1, id), IN_IDEM_SAME);
    CU_ASSERT_STRING_EQUAL(id, j.id);
    CU_ASSERT_EQUAL(in_idem_check(s.store, "acme", "k", h2, id), IN_IDEM_CONFLICT);
    /* another principal's key of the same name is another key */
    CU_ASSERT_EQUAL(in_idem_check(s.store, "beta", "k", h1, id), IN_IDEM_NEW);
    CU_ASSERT_EQUAL(in_idem_check(s.store, "beta", "k", h2, id), IN_IDEM_NEW);
    /* the job purged: the key is free again (and the stale entry removed) */
    CU_ASSERT_EQUAL(
        in_store_idem_put(s.store, "acme", "gone", "ffffffffffffffffffffffffffffffff", h1, T0), 0);
    CU_ASSERT_EQUAL(in_idem_check(s.store, "acme", "gone", h2, id), IN_IDEM_NEW);
    uint8_t h[32];
    CU_ASSERT_EQUAL(in_store_idem_get(s.store, "acme", "gone", id, h), AL_ERR_NOTFOUND);
    svc_close(&s);
}

static void test_tenant_visibility(void)
{
    struct in_job j = {0};
    struct in_caller a = {0}, b = {0}, adm = {0};
    snprintf(j.principal, sizeof(j.principal), "acme/alice");
    snprintf(a.principal, sizeof(a.principal), "acme/alice");
    snprintf(b.principal, sizeof(b.principal), "acme/alice2");
    snprintf(adm.principal, sizeof(adm.principal), "admin/admin");
    adm.admin = 1;
    CU_ASSERT_TRUE(in_caller_sees(&a, &j));
    CU_ASSERT_FALSE(in_caller_sees(&b, &j));
    CU_ASSERT_TRUE(in_caller_sees(&adm, &j));
    snprintf(b.principal, sizeof(b.principal), "acme");
    CU_ASSERT_FALSE(in_caller_sees(&b, &j));
}

static void test_sessions(void)
{
    struct in_svc s;
    struct in_job j;
    int ok, reset;
    svc_open(&s);
    submit(&s, &j, "00000000000000000000000000000006", "acme", 3);
    snprintf(j.session_id, sizeof(j.session_id), "ws");
    struct in_exec *a = in_exec_get(&s, EXEC, INST);
    struct in_exec *b = in_exec_get(&s, EXEC, "ffffffffffffffffffffffffffffffff");
    struct in_lstream la = {0}, lb = {0};
    a->stream = &la;
    b->stream = &lb;
    /* a new session may start anywhere */
    CU_ASSERT_EQUAL(in_session_eligible(&s, &j, b, T0, &ok, &reset), 0);
    CU_ASSERT_TRUE(ok && !reset);
    CU_ASSERT_EQUAL(in_session_assign(&s, &j, a, T0), 0);
    /* then only on its holder while that one lives */
    CU_ASSERT_EQUAL(in_session_eligible(&s, &j, a, T0, &ok, &reset), 0);
    CU_ASSERT_TRUE(ok && !reset);
    CU_ASSERT_EQUAL(in_session_eligible(&s, &j, b, T0, &ok, &reset), 0);
    CU_ASSERT_FALSE(ok);
    /* the holder gone (no stream, a ttl after the grace): it moves, reset */
    a->stream = NULL;
    a->last_seen_ms = T0 + 10000;
    CU_ASSERT_EQUAL(in_session_eligible(&s, &j, b, T0 + 13000, &ok, &reset), 0);
    CU_ASSERT_FALSE(ok);
    CU_ASSERT_EQUAL(in_session_eligible(&s, &j, b, T0 + 13001, &ok, &reset), 0);
    CU_ASSERT_TRUE(ok && reset);
    /* another principal's session of the same name is another session */
    snprintf(j.principal, sizeof(j.principal), "beta");
    CU_ASSERT_EQUAL(in_session_eligible(&s, &j, b, T0, &ok, &reset), 0);
    CU_ASSERT_TRUE(ok && !reset);
    svc_close(&s);
}

/* A Lease stream of executor instance `inst` for pool "p" with one slot. */
static struct in_exec *stream_open(struct in_svc *s, struct in_lstream *ls, char **pools,
                                   const char *inst)
{
    struct in_exec *e = in_exec_get(s, EXEC, inst);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    memset(ls, 0, sizeof(*ls));
    ls->s = s;
    ls->exec = e;
    ls->pools = pools;
    ls->npools = pools ? 1 : 0;
    ls->slots = 1;
    e->stream = ls;
    s->streams = ls;
    return e;
}

/* Runs the dispatcher at `now` as the flush does (its savepoints need the
 * batch transaction committed), then drops the queued assignment messages. */
static int dispatch_at(struct in_svc *s, int64_t now)
{
    int rc = in_dispatch(s, now);
    if (in_store_in_tx(s->store))
        CU_ASSERT_EQUAL(in_store_commit(s->store), 0);
    s->actions = NULL;
    s->actions_tail = &s->actions;
    al_arena_cleanup(&s->txa);
    return rc;
}

/*
 * The intermittent stall after a restart: a lease expires, the job is
 * re-queued with a backoff ending at B, the dispatcher runs (before the group
 * commit) at a moment just before B and skips it, the commit takes long
 * enough for B to pass, and the wake is then computed. The wake must be due
 * at once (B), not dropped as "in the past".
 */
static void test_wake_backoff_not_lost(void)
{
    struct in_svc s;
    struct in_job j;
    struct in_lstream ls;
    char pool[] = "p", *pools[] = {pool};
    svc_open(&s);
    submit(&s, &j, "00000000000000000000000000000007", "acme", 3);
    lease(&s, &j, T0);
    in_exec_find(&s, EXEC, INST)->last_seen_ms = T0;
    struct in_exec *e = stream_open(&s, &ls, pools, "ffffffffffffffffffffffffffffffff");
    in_process_due(&s, T0 + 3000);
    reload(&s, &j);
    CU_ASSERT_EQUAL_FATAL(j.state, IN_JS(QUEUED));
    CU_ASSERT_EQUAL_FATAL(j.not_before_ms, T0 + 3100);
    /* the dispatcher looks 1 ms before the backoff ends: nothing to lease */
    CU_ASSERT_EQUAL(dispatch_at(&s, T0 + 3099), 0);
    reload(&s, &j);
    CU_ASSERT_EQUAL(j.state, IN_JS(QUEUED));
    CU_ASSERT_EQUAL(e->held, 0);
    /* the commit took 51 ms: the backoff end is past, yet still the wake */
    CU_ASSERT_EQUAL(in_wake_next(&s, T0 + 3150), T0 + 3100);
    /* the wake's dispatch leases it as attempt 2 on the open stream */
    CU_ASSERT_EQUAL(dispatch_at(&s, T0 + 3151), 0);
    reload(&s, &j);
    CU_ASSERT_EQUAL(j.state, IN_JS(LEASED));
    CU_ASSERT_EQUAL(j.attempt, 2);
    CU_ASSERT_STRING_EQUAL(j.instance_id, "ffffffffffffffffffffffffffffffff");
    CU_ASSERT_EQUAL(e->held, 1);
    /* judged now, so no longer a reason to wake: next come the restart grace
     * end (the old instance becomes gone then too), then the new lease's
     * expiry; never a moment the dispatcher already judged */
    CU_ASSERT_EQUAL(in_wake_next(&s, T0 + 3152), T0 + 5001);
    CU_ASSERT_EQUAL(dispatch_at(&s, T0 + 5001), 0);
    CU_ASSERT_EQUAL(in_wake_next(&s, T0 + 5002), T0 + 3151 + 3000);
    e->stream = NULL;
    svc_close(&s);
}

/* A session job whose holder vanished with the restart may move only after
 * the grace; a dispatch just inside the grace must not lose that moment. */
static void test_wake_grace_end_not_lost(void)
{
    struct in_svc s;
    struct in_job j;
    struct in_lstream ls;
    char pool[] = "p", *pools[] = {pool};
    svc_open(&s);
    submit_in(&s, &j, "00000000000000000000000000000008", "acme", 3, "ws");
    CU_ASSERT_EQUAL(in_store_session_put(s.store, "acme", "ws", "spiffe://airlock/executor/old",
                                         INST, T0 - 10000),
                    0);
    struct in_exec *e = stream_open(&s, &ls, pools, "ffffffffffffffffffffffffffffffff");
    CU_ASSERT_EQUAL(dispatch_at(&s, T0 + 5000), 0); /* the last ms of the grace */
    reload(&s, &j);
    CU_ASSERT_EQUAL(j.state, IN_JS(QUEUED));
    CU_ASSERT_EQUAL(in_wake_next(&s, T0 + 5040), T0 + 5001);
    CU_ASSERT_EQUAL(dispatch_at(&s, T0 + 5041), 0);
    reload(&s, &j);
    CU_ASSERT_EQUAL(j.state, IN_JS(LEASED));
    CU_ASSERT_TRUE(j.workspace_reset);
    CU_ASSERT_EQUAL(e->held, 1);
    e->stream = NULL;
    svc_close(&s);
}

/* A dispatch that fails stays dirty and is retried IN_RETRY_MS later by the
 * timer alone; a rebuild asked for comes back at once. */
static void test_wake_retries_failed_dispatch(void)
{
    struct in_svc s;
    struct in_job j;
    struct in_lstream ls;
    svc_open(&s);
    submit(&s, &j, "00000000000000000000000000000009", "acme", 3);
    /* a stream without pools makes the candidate query fail */
    struct in_exec *e = stream_open(&s, &ls, NULL, "ffffffffffffffffffffffffffffffff");
    CU_ASSERT(dispatch_at(&s, T0 + 10000) < 0);
    CU_ASSERT_TRUE(s.dispatch_dirty);
    CU_ASSERT_EQUAL(in_wake_next(&s, T0 + 10000), T0 + 10000 + IN_RETRY_MS);
    CU_ASSERT_EQUAL(in_wake_next(&s, T0 + 12000), T0 + 12000);
    /* once it succeeds only the queue deadline is left */
    e->stream = NULL;
    s.streams = NULL;
    CU_ASSERT_EQUAL(dispatch_at(&s, T0 + 12000), 0);
    CU_ASSERT_FALSE(s.dispatch_dirty);
    CU_ASSERT_EQUAL(in_wake_next(&s, T0 + 12000), T0 + 60000);
    s.rebuild_pending = 1;
    CU_ASSERT_EQUAL(in_wake_next(&s, T0 + 12001), T0 + 12001);
    svc_close(&s);
}

/* Round robin: a dispatch that leases nothing does not move the start, so
 * the next job goes to the stream after the one served last. */
static void test_dispatch_round_robin(void)
{
    struct in_svc s;
    struct in_job j1, j2;
    struct in_lstream la, lb;
    char pool[] = "p", *pools[] = {pool};
    svc_open(&s);
    struct in_exec *b = stream_open(&s, &lb, pools, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    struct in_exec *a = stream_open(&s, &la, pools, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    la.next = &lb; /* the list: a, b */
    lb.prev = &la;
    la.slots = lb.slots = 2;
    submit(&s, &j1, "0000000000000000000000000000000a", "acme", 3);
    CU_ASSERT_EQUAL(dispatch_at(&s, T0), 0);
    reload(&s, &j1);
    CU_ASSERT_STRING_EQUAL(j1.instance_id, a->instance);
    /* a job in its backoff: dispatches that lease nothing */
    submit(&s, &j2, "0000000000000000000000000000000b", "acme", 3);
    j2.not_before_ms = T0 + 1000;
    CU_ASSERT_EQUAL(in_store_job_update(s.store, &j2), 0);
    CU_ASSERT_EQUAL(dispatch_at(&s, T0 + 10), 0);
    CU_ASSERT_EQUAL(dispatch_at(&s, T0 + 20), 0);
    CU_ASSERT_EQUAL(dispatch_at(&s, T0 + 30), 0);
    reload(&s, &j2);
    CU_ASSERT_EQUAL(j2.state, IN_JS(QUEUED));
    CU_ASSERT_EQUAL(dispatch_at(&s, T0 + 1000), 0);
    reload(&s, &j2);
    CU_ASSERT_EQUAL(j2.state, IN_JS(LEASED));
    CU_ASSERT_STRING_EQUAL(j2.instance_id, b->instance);
    CU_ASSERT_EQUAL(a->held, 1);
    CU_ASSERT_EQUAL(b->held, 1);
    a->stream = b->stream = NULL;
    svc_close(&s);
}

/* A retry prefers another instance than the one its previous attempt ran
 * on (that one may be frozen with its stream open), and still runs there
 * when no other instance has room. */
static void test_dispatch_retry_elsewhere(void)
{
    struct in_svc s;
    struct in_job j1, j2;
    struct in_lstream la, lb;
    char pool[] = "p", *pools[] = {pool};
    svc_open(&s);
    struct in_exec *b = stream_open(&s, &lb, pools, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    struct in_exec *a = stream_open(&s, &la, pools, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    la.next = &lb; /* the list: a, b; the dispatcher starts at a */
    lb.prev = &la;
    submit(&s, &j1, "0000000000000000000000000000000c", "acme", 3);
    j1.attempt = 1; /* its attempt 1 ran on a and was lost */
    snprintf(j1.executor_id, sizeof(j1.executor_id), "%s", a->identity);
    snprintf(j1.instance_id, sizeof(j1.instance_id), "%s", a->instance);
    CU_ASSERT_EQUAL(in_store_job_update(s.store, &j1), 0);
    CU_ASSERT_EQUAL(dispatch_at(&s, T0), 0);
    reload(&s, &j1);
    CU_ASSERT_EQUAL(j1.state, IN_JS(LEASED));
    CU_ASSERT_EQUAL(j1.attempt, 2);
    CU_ASSERT_STRING_EQUAL(j1.instance_id, b->instance);
    /* b is full now: the next retry from a goes back to a after all */
    submit(&s, &j2, "0000000000000000000000000000000d", "acme", 3);
    j2.attempt = 1;
    snprintf(j2.executor_id, sizeof(j2.executor_id), "%s", a->identity);
    snprintf(j2.instance_id, sizeof(j2.instance_id), "%s", a->instance);
    CU_ASSERT_EQUAL(in_store_job_update(s.store, &j2), 0);
    CU_ASSERT_EQUAL(dispatch_at(&s, T0 + 10), 0);
    reload(&s, &j2);
    CU_ASSERT_EQUAL(j2.state, IN_JS(LEASED));
    CU_ASSERT_STRING_EQUAL(j2.instance_id, a->instance);
    CU_ASSERT_EQUAL(a->held, 1);
    CU_ASSERT_EQUAL(b->held, 1);
    a->stream = b->stream = NULL;
    svc_close(&s);
}

int main(void)
{
    CU_pSuite s;
    unsigned failed;

    snprintf(base, sizeof(base), "/tmp/intake-life-%d", (int)getpid());
    if (mkdir(base, 0700) < 0)
        return 1;
    al_log_set_level_name("error");
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("intake_lifecycle", NULL, NULL);
    CU_add_test(s, "lease expiry: re-queue with backoff, then EXECUTOR_LOST",
                test_expiry_requeue_then_fail);
    CU_add_test(s, "a cancelled lease that expires ends CANCELLED",
                test_cancelled_lease_expires_cancelled);
    CU_add_test(s, "restart grace and gone executors", test_restart_grace);
    CU_add_test(s, "queue timeout", test_queue_timeout);
    CU_add_test(s, "idempotency keys per principal", test_idempotency_scoped);
    CU_add_test(s, "tenant visibility", test_tenant_visibility);
    CU_add_test(s, "sessions stay, then move with a reset", test_sessions);
    CU_add_test(s, "wake: a backoff ending during the commit is not lost",
                test_wake_backoff_not_lost);
    CU_add_test(s, "wake: the restart grace end is not lost", test_wake_grace_end_not_lost);
    CU_add_test(s, "wake: a failed dispatch is retried by the timer",
                test_wake_retries_failed_dispatch);
    CU_add_test(s, "dispatch: round robin after the stream served last", test_dispatch_round_robin);
    CU_add_test(s, "dispatch: a retry prefers another instance", test_dispatch_retry_elsewhere);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    if (failed == 0) {
        char cmd[96];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
        if (system(cmd) != 0)
            return 1;
    }
    return failed ? 1 : 0;
}
