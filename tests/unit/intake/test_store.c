/* Unit tests for intake's SQLite store (instore.h): everything survives a
 * reopen, savepoints roll back one request, the lease candidates query
 * (pools, kinds, backoff, session heads), deadlines, restart grace, counts,
 * List scoping and paging by principal, retention, schema versions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <sqlite3.h>

#include "al_err.h"
#include "al_log.h"
#include "instore.h"

#define T0 1700000000000LL

static char base[64];
static int ndirs;

static void newdir(char *out, size_t n)
{
    snprintf(out, n, "%s/d%d", base, ndirs++);
}

static const uint8_t spec_bytes[] = {0x0a, 0x03, 'p', '0', '1'}; /* pool = "p01" */

static void mkjob(struct in_job *j, const char *id, const char *principal, const char *pool,
                  const char *session, int state, int64_t created)
{
    memset(j, 0, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%.32s", id);
    snprintf(j->principal, sizeof(j->principal), "%s", principal);
    snprintf(j->pool, sizeof(j->pool), "%s", pool);
    snprintf(j->session_id, sizeof(j->session_id), "%s", session);
    j->kind = 1;
    j->state = state;
    j->max_attempts = 3;
    j->created_ms = j->updated_ms = created;
    j->queue_deadline_ms = created + 3600000;
    j->queue_timeout_ms = 3600000;
    j->spec = spec_bytes;
    j->spec_len = sizeof(spec_bytes);
}

static void id_n(char *out, int n)
{
    snprintf(out, IN_JOB_ID_LEN + 1, "%032x", n);
}

static void test_reopen_keeps_everything(void)
{
    char dir[96], id[IN_JOB_ID_LEN + 1], ex[AL_PKI_ID_MAX], inst[IN_INSTANCE_LEN + 1];
    uint8_t hash[32], got_hash[32], key1[32], key2[32];
    struct in_store *s = NULL;
    struct in_job j, g;
    struct al_arena a;
    struct in_apikey_row k = {0}, kg;

    newdir(dir, sizeof(dir));
    al_arena_init(&a, 0);
    CU_ASSERT_EQUAL(in_store_open(dir, 0, &s), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL_FATAL(in_store_open(dir, 1, &s), 0);
    CU_ASSERT_EQUAL(in_store_page_key(s, key1), 0);
    id_n(id, 1);
    mkjob(&j, id, "acme/a", "p01", "s1", IN_JS(LEASED), T0);
    memset(hash, 7, 32);
    memcpy(j.spec_hash, hash, 32);
    j.attempt = 2;
    j.spent = 2;
    j.has_token = 1;
    memset(j.token, 0xab, IN_TOKEN_LEN);
    snprintf(j.executor_id, sizeof(j.executor_id), "spiffe://airlock/executor/e");
    snprintf(j.instance_id, sizeof(j.instance_id), "%032d", 5);
    j.lease_expires_ms = T0 + 30000;
    j.push_seq = 4;
    snprintf(j.idem_key, sizeof(j.idem_key), "k1");
    CU_ASSERT_EQUAL(in_store_begin(s), 0);
    CU_ASSERT_EQUAL(in_store_job_insert(s, &j), 0);
    CU_ASSERT_EQUAL(in_store_job_insert(s, &j), AL_ERR_EXISTS);
    CU_ASSERT_EQUAL(in_store_event_put(s, id, 1, (const uint8_t *)"ev1", 3), 0);
    CU_ASSERT_EQUAL(in_store_event_put(s, id, 2, (const uint8_t *)"ev2", 3), 0);
    CU_ASSERT_EQUAL(in_store_event_put(s, id, 2, (const uint8_t *)"dup", 3), AL_ERR_EXISTS);
    CU_ASSERT_EQUAL(in_store_idem_put(s, "acme/a", "k1", id, hash, T0), 0);
    CU_ASSERT_EQUAL(in_store_session_put(s, "acme/a", "s1", j.executor_id, j.instance_id, T0), 0);
    CU_ASSERT_EQUAL(in_store_commit(s), 0);
    snprintf(k.id, sizeof(k.id), "ak_00000000000000aa");
    snprintf(k.principal, sizeof(k.principal), "acme/a");
    k.scopes = IN_SCOPE_READ;
    CU_ASSERT_EQUAL(in_store_apikey_put(s, &k), 0);
    in_store_close(s);

    CU_ASSERT_EQUAL_FATAL(in_store_open(dir, 0, &s), 0);
    CU_ASSERT_EQUAL(in_store_job_get(s, id, &a, &g), 0);
    CU_ASSERT_STRING_EQUAL(g.principal, "acme/a");
    CU_ASSERT_EQUAL(g.state, IN_JS(LEASED));
    CU_ASSERT_EQUAL(g.attempt, 2);
    CU_ASSERT_TRUE(g.has_token && memcmp(g.token, j.token, IN_TOKEN_LEN) == 0);
    CU_ASSERT_EQUAL(g.push_seq, 4);
    CU_ASSERT_EQUAL(g.lease_expires_ms, T0 + 30000);
    CU_ASSERT_EQUAL(g.spec_len, sizeof(spec_bytes));
    CU_ASSERT_EQUAL(memcmp(g.spec, spec_bytes, sizeof(spec_bytes)), 0);
    CU_ASSERT_PTR_NULL(g.result);
    CU_ASSERT_EQUAL(memcmp(g.spec_hash, hash, 32), 0);
    CU_ASSERT_EQUAL(g.queue_timeout_ms, 3600000);
    CU_ASSERT_EQUAL(in_store_idem_get(s, "acme/a", "k1", id, got_hash), 0);
    CU_ASSERT_EQUAL(memcmp(got_hash, hash, 32), 0);
    CU_ASSERT_EQUAL(in_store_idem_get(s, "beta/b", "k1", id, got_hash), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(in_store_session_get(s, "acme/a", "s1", ex, inst), 0);
    CU_ASSERT_STRING_EQUAL(ex, "spiffe://airlock/executor/e");
    CU_ASSERT_EQUAL(in_store_session_get(s, "beta/b", "s1", ex, inst), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(in_store_apikey_get(s, "ak_00000000000000aa", &kg), 0);
    CU_ASSERT_EQUAL(in_store_page_key(s, key2), 0);
    CU_ASSERT_EQUAL(memcmp(key1, key2, 32), 0);
    /* result written by an update survives too */
    g.state = IN_JS(SUCCEEDED);
    g.result = (const uint8_t *)"R";
    g.result_len = 1;
    g.finished_ms = T0 + 5;
    CU_ASSERT_EQUAL(in_store_job_update(s, &g), 0);
    in_store_close(s);
    CU_ASSERT_EQUAL_FATAL(in_store_open(dir, 0, &s), 0);
    CU_ASSERT_EQUAL(in_store_job_get(s, id, &a, &g), 0);
    CU_ASSERT_EQUAL(g.state, IN_JS(SUCCEEDED));
    CU_ASSERT_TRUE(g.result_len == 1 && g.result[0] == 'R');
    /* an update without a result keeps the stored one */
    g.result = NULL;
    CU_ASSERT_EQUAL(in_store_job_update(s, &g), 0);
    CU_ASSERT_EQUAL(in_store_job_get(s, id, &a, &g), 0);
    CU_ASSERT_TRUE(g.result_len == 1);
    in_store_close(s);
    al_arena_cleanup(&a);
}

static int count_events(void *user, int64_t seq, const uint8_t *body, size_t len)
{
    (void)body;
    (void)len;
    ((int64_t *)user)[0]++;
    ((int64_t *)user)[1] = seq;
    return 0;
}

static void test_savepoints(void)
{
    char dir[96], id1[IN_JOB_ID_LEN + 1], id2[IN_JOB_ID_LEN + 1];
    struct in_store *s = NULL;
    struct in_job j, g;
    int64_t cnt[2] = {0, 0};

    newdir(dir, sizeof(dir));
    CU_ASSERT_EQUAL_FATAL(in_store_open(dir, 1, &s), 0);
    id_n(id1, 11);
    id_n(id2, 12);
    /* request 1 kept, request 2 rolled back, same batch */
    CU_ASSERT_EQUAL(in_store_savepoint(s), 0);
    mkjob(&j, id1, "a", "p", "", IN_JS(QUEUED), T0);
    CU_ASSERT_EQUAL(in_store_job_insert(s, &j), 0);
    CU_ASSERT_EQUAL(in_store_release(s), 0);
    CU_ASSERT_EQUAL(in_store_savepoint(s), 0);
    mkjob(&j, id2, "a", "p", "", IN_JS(QUEUED), T0);
    CU_ASSERT_EQUAL(in_store_job_insert(s, &j), 0);
    CU_ASSERT_EQUAL(in_store_event_put(s, id2, 1, (const uint8_t *)"x", 1), 0);
    in_store_rollback_savepoint(s);
    CU_ASSERT_TRUE(in_store_in_tx(s));
    CU_ASSERT_EQUAL(in_store_commit(s), 0);
    CU_ASSERT_FALSE(in_store_in_tx(s));
    CU_ASSERT_EQUAL(in_store_job_get(s, id1, NULL, &g), 0);
    CU_ASSERT_EQUAL(in_store_job_get(s, id2, NULL, &g), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(in_store_events(s, id2, 0, 10, count_events, cnt), 0);
    /* a rolled-back batch leaves nothing */
    CU_ASSERT_EQUAL(in_store_begin(s), 0);
    CU_ASSERT_EQUAL(in_store_job_insert(s, &j), 0);
    in_store_rollback(s);
    CU_ASSERT_EQUAL(in_store_job_get(s, id2, NULL, &g), AL_ERR_NOTFOUND);
    in_store_close(s);
}

static void test_candidates(void)
{
    char dir[96], ids[16][IN_JOB_ID_LEN + 1], got[64][IN_JOB_ID_LEN + 1];
    int64_t seqs[64];
    struct in_store *s = NULL;
    struct in_job j;
    char *pools[] = {"p01"}, *both[] = {"p01", "p02"};
    int n = 0, k = 0;

    newdir(dir, sizeof(dir));
    CU_ASSERT_EQUAL_FATAL(in_store_open(dir, 1, &s), 0);
    for (int i = 0; i < 16; i++)
        id_n(ids[i], 100 + i);
    /* 0: plain p01; 1: p02; 2: backoff; 3: kind 2; 4,5: session x (4 running);
     * 6,7: session y (both queued); 8: another principal's session x */
    struct {
        const char *principal, *pool, *session;
        int state, kind;
        int64_t not_before;
    } rows[] = {
        {"a", "p01", "", IN_JS(QUEUED), 1, 0},         {"a", "p02", "", IN_JS(QUEUED), 1, 0},
        {"a", "p01", "", IN_JS(QUEUED), 1, T0 + 5000}, {"a", "p01", "", IN_JS(QUEUED), 2, 0},
        {"a", "p01", "x", IN_JS(RUNNING), 1, 0},       {"a", "p01", "x", IN_JS(QUEUED), 1, 0},
        {"a", "p01", "y", IN_JS(QUEUED), 1, 0},        {"a", "p01", "y", IN_JS(QUEUED), 1, 0},
        {"b", "p01", "x", IN_JS(QUEUED), 1, 0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        mkjob(&j, ids[i], rows[i].principal, rows[i].pool, rows[i].session, rows[i].state, T0);
        j.kind = rows[i].kind;
        j.not_before_ms = rows[i].not_before;
        CU_ASSERT_EQUAL(in_store_job_insert(s, &j), 0);
    }
    CU_ASSERT_EQUAL(in_store_candidates(s, pools, 1, NULL, 0, T0, 0, 64, got, seqs, &n), 0);
    /* 0, 3, 6 (head of y), 8 (b's own x); not 1 (pool), 2 (backoff), 5 (x busy), 7 */
    const int want[] = {0, 3, 6, 8};
    CU_ASSERT_EQUAL_FATAL(n, 4);
    for (int i = 0; i < 4; i++)
        CU_ASSERT_STRING_EQUAL(got[i], ids[want[i]]);
    for (int i = 1; i < n; i++)
        CU_ASSERT_TRUE(seqs[i] > seqs[i - 1]);
    int kinds[] = {1};
    CU_ASSERT_EQUAL(in_store_candidates(s, both, 2, kinds, 1, T0 + 5000, 0, 64, got, seqs, &n), 0);
    /* adds 1 (p02) and 2 (backoff over); drops 3 (kind 2) */
    const int want2[] = {0, 1, 2, 6, 8};
    CU_ASSERT_EQUAL_FATAL(n, 5);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_STRING_EQUAL(got[i], ids[want2[i]]);
    /* keyset paging */
    CU_ASSERT_EQUAL(
        in_store_candidates(s, both, 2, kinds, 1, T0 + 5000, seqs[2], 64, got, seqs, &k), 0);
    CU_ASSERT_EQUAL(k, 2);
    in_store_close(s);
}

static void test_deadlines_and_grace(void)
{
    char dir[96], ids[4][IN_JOB_ID_LEN + 1], due[8][IN_JOB_ID_LEN + 1];
    struct in_store *s = NULL;
    struct in_job j, g;
    int64_t next;
    int n;

    newdir(dir, sizeof(dir));
    CU_ASSERT_EQUAL_FATAL(in_store_open(dir, 1, &s), 0);
    CU_ASSERT_EQUAL(in_store_next_deadline(s, T0, &next), 0);
    CU_ASSERT_EQUAL(next, 0);
    for (int i = 0; i < 4; i++)
        id_n(ids[i], 200 + i);
    mkjob(&j, ids[0], "a", "p", "", IN_JS(LEASED), T0);
    j.lease_expires_ms = T0 + 3000;
    CU_ASSERT_EQUAL(in_store_job_insert(s, &j), 0);
    mkjob(&j, ids[1], "a", "p", "", IN_JS(RUNNING), T0);
    j.lease_expires_ms = T0 + 1000;
    CU_ASSERT_EQUAL(in_store_job_insert(s, &j), 0);
    mkjob(&j, ids[2], "a", "p", "", IN_JS(QUEUED), T0);
    j.queue_deadline_ms = T0 + 2000;
    j.not_before_ms = T0 + 500;
    CU_ASSERT_EQUAL(in_store_job_insert(s, &j), 0);
    mkjob(&j, ids[3], "a", "p", "", IN_JS(SUCCEEDED), T0);
    j.lease_expires_ms = T0 + 10; /* finished jobs have no deadlines */
    CU_ASSERT_EQUAL(in_store_job_insert(s, &j), 0);
    CU_ASSERT_EQUAL(in_store_next_deadline(s, T0, &next), 0);
    CU_ASSERT_EQUAL(next, T0 + 500); /* backoff end */
    CU_ASSERT_EQUAL(in_store_next_deadline(s, T0 + 500, &next), 0);
    CU_ASSERT_EQUAL(next, T0 + 1000);
    CU_ASSERT_EQUAL(in_store_due(s, IN_DUE_LEASE, T0 + 3000, due, 8, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(due[0], ids[1]); /* earliest first */
    CU_ASSERT_EQUAL(in_store_due(s, IN_DUE_QUEUE, T0 + 1999, due, 8, &n), 0);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(in_store_due(s, IN_DUE_QUEUE, T0 + 2000, due, 8, &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    /* restart grace: leases expire no earlier than the grace end */
    CU_ASSERT_EQUAL(in_store_extend_leases(s, T0 + 2500, &n), 0);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(in_store_job_get(s, ids[1], NULL, &g), 0);
    CU_ASSERT_EQUAL(g.lease_expires_ms, T0 + 2500);
    CU_ASSERT_EQUAL(in_store_job_get(s, ids[0], NULL, &g), 0);
    CU_ASSERT_EQUAL(g.lease_expires_ms, T0 + 3000); /* later already: kept */
    CU_ASSERT_EQUAL(in_store_due(s, IN_DUE_LEASE, T0 + 2499, due, 8, &n), 0);
    CU_ASSERT_EQUAL(n, 0);
    in_store_close(s);
}

struct counts {
    char who[4][64];
    int a[4], b[4], n;
};

static void cnt_p(void *user, const char *p, const char *pool, int q, int act)
{
    struct counts *c = user;
    CU_ASSERT_STRING_EQUAL(pool, "p");
    snprintf(c->who[c->n], 64, "%s", p);
    c->a[c->n] = q;
    c->b[c->n++] = act;
}

static void cnt_h(void *user, const char *e, const char *i, int n)
{
    struct counts *c = user;
    snprintf(c->who[c->n], 64, "%s %s", e, i);
    c->a[c->n++] = n;
}

static int collect(void *user, const struct in_job *j)
{
    char(*out)[IN_JOB_ID_LEN + 1] = ((char(**)[IN_JOB_ID_LEN + 1]) user)[0];
    int *n = ((int **)user)[1];
    snprintf(out[(*n)++], IN_JOB_ID_LEN + 1, "%s", j->id);
    return 0;
}

static void test_counts_and_list(void)
{
    char dir[96], ids[10][IN_JOB_ID_LEN + 1], got[16][IN_JOB_ID_LEN + 1];
    struct in_store *s = NULL;
    struct in_job j;
    struct al_arena a;
    struct counts c = {0};
    int n = 0;
    void *ctx[2] = {got, &n};

    newdir(dir, sizeof(dir));
    al_arena_init(&a, 0);
    CU_ASSERT_EQUAL_FATAL(in_store_open(dir, 1, &s), 0);
    for (int i = 0; i < 10; i++) {
        id_n(ids[i], 300 + i);
        int st = i < 4 ? IN_JS(QUEUED) : i < 6 ? IN_JS(RUNNING) : IN_JS(SUCCEEDED);
        mkjob(&j, ids[i], i % 2 ? "beta" : "acme", "p", "", st, T0 + i);
        snprintf(j.executor_id, sizeof(j.executor_id), "e%d", i % 2);
        snprintf(j.instance_id, sizeof(j.instance_id), "i");
        CU_ASSERT_EQUAL(in_store_job_insert(s, &j), 0);
    }
    CU_ASSERT_EQUAL(in_store_count_principals(s, cnt_p, &c), 0);
    CU_ASSERT_EQUAL_FATAL(c.n, 2);
    for (int i = 0; i < 2; i++) {
        /* acme: 0,2 queued, 4 running; beta: 1,3 queued, 5 running */
        CU_ASSERT_EQUAL(c.a[i], 2);
        CU_ASSERT_EQUAL(c.b[i], 1);
    }
    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(in_store_count_holders(s, cnt_h, &c), 0);
    CU_ASSERT_EQUAL(c.n, 2);
    /* List: one principal only, newest first, paged by cursor */
    struct in_list_query q = {.principal = "acme", .limit = 3};
    CU_ASSERT_EQUAL(in_store_list(s, &q, &a, collect, ctx), 3);
    CU_ASSERT_STRING_EQUAL(got[0], ids[8]);
    CU_ASSERT_STRING_EQUAL(got[1], ids[6]);
    CU_ASSERT_STRING_EQUAL(got[2], ids[4]);
    q.has_cursor = 1;
    q.cursor_created_ms = T0 + 4;
    q.cursor_id = ids[4];
    n = 0;
    CU_ASSERT_EQUAL(in_store_list(s, &q, &a, collect, ctx), 2);
    CU_ASSERT_STRING_EQUAL(got[0], ids[2]);
    CU_ASSERT_STRING_EQUAL(got[1], ids[0]);
    struct in_list_query q2 = {.principal = "beta",
                               .limit = 50,
                               .states = 1u << IN_JS(QUEUED),
                               .created_after_ms = T0 + 2};
    n = 0;
    CU_ASSERT_EQUAL(in_store_list(s, &q2, &a, collect, ctx), 1);
    CU_ASSERT_STRING_EQUAL(got[0], ids[3]);
    struct in_list_query q3 = {.principal = "nobody", .limit = 50};
    CU_ASSERT_EQUAL(in_store_list(s, &q3, &a, collect, ctx), 0);
    in_store_close(s);
    al_arena_cleanup(&a);
}

static void test_purge(void)
{
    char dir[96], ids[4][IN_JOB_ID_LEN + 1], jid[IN_JOB_ID_LEN + 1];
    uint8_t h[32] = {0};
    struct in_store *s = NULL;
    struct in_job j, g;
    struct in_purge p = {0};
    int64_t cnt[2] = {0, 0};

    newdir(dir, sizeof(dir));
    CU_ASSERT_EQUAL_FATAL(in_store_open(dir, 1, &s), 0);
    for (int i = 0; i < 4; i++)
        id_n(ids[i], 400 + i);
    mkjob(&j, ids[0], "a", "p", "", IN_JS(SUCCEEDED), T0); /* old: goes */
    j.finished_ms = T0 + 10;
    CU_ASSERT_EQUAL(in_store_job_insert(s, &j), 0);
    mkjob(&j, ids[1], "a", "p", "", IN_JS(FAILED), T0); /* events go, job stays */
    j.finished_ms = T0 + 500;
    CU_ASSERT_EQUAL(in_store_job_insert(s, &j), 0);
    mkjob(&j, ids[2], "a", "p", "s", IN_JS(QUEUED), T0); /* unfinished: stays */
    CU_ASSERT_EQUAL(in_store_job_insert(s, &j), 0);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(in_store_event_put(s, ids[i], 1, (const uint8_t *)"e", 1), 0);
        CU_ASSERT_EQUAL(in_store_idem_put(s, "a", ids[i], ids[i], h, T0), 0);
    }
    CU_ASSERT_EQUAL(in_store_session_put(s, "a", "old", "e", "i", T0), 0);
    CU_ASSERT_EQUAL(in_store_session_put(s, "a", "s", "e", "i", T0), 0);
    CU_ASSERT_EQUAL(in_store_begin(s), 0);
    CU_ASSERT_EQUAL(in_store_purge(s, T0 + 100, T0 + 1000, T0 + 1, 100, &p), 0);
    CU_ASSERT_EQUAL(in_store_commit(s), 0);
    CU_ASSERT_EQUAL(p.jobs, 1);
    CU_ASSERT_EQUAL(p.events, 2);
    CU_ASSERT_EQUAL(p.sessions, 1);
    CU_ASSERT_EQUAL(in_store_job_get(s, ids[0], NULL, &g), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(in_store_job_get(s, ids[1], NULL, &g), 0);
    CU_ASSERT_EQUAL(g.events_purged, 1);
    CU_ASSERT_EQUAL(in_store_events(s, ids[1], 0, 10, count_events, cnt), 0);
    CU_ASSERT_EQUAL(in_store_events(s, ids[2], 0, 10, count_events, cnt), 1);
    CU_ASSERT_EQUAL(in_store_idem_get(s, "a", ids[0], jid, h), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(in_store_idem_get(s, "a", ids[1], jid, h), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(in_store_idem_get(s, "a", ids[2], jid, h), 0); /* unfinished job */
    CU_ASSERT_EQUAL(in_store_session_get(s, "a", "s", jid, jid), 0);
    in_store_close(s);
}

static void test_schema_version(void)
{
    char dir[96], path[160];
    struct in_store *s = NULL;
    sqlite3 *db;

    newdir(dir, sizeof(dir));
    CU_ASSERT_EQUAL_FATAL(in_store_open(dir, 1, &s), 0);
    in_store_close(s);
    snprintf(path, sizeof(path), "%s/%s", dir, IN_STORE_DB_FILE);
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    CU_ASSERT_EQUAL(
        sqlite3_exec(db, "UPDATE meta SET v = 99 WHERE k = 'schema_version'", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(in_store_open(dir, 0, &s), AL_ERR_CONFIG);
}

int main(void)
{
    CU_pSuite s;
    unsigned failed;

    snprintf(base, sizeof(base), "/tmp/intake-store-%d", (int)getpid());
    if (mkdir(base, 0700) < 0)
        return 1;
    al_log_set_level_name("off"); /* the refused schema logs an error by design */
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("intake_store", NULL, NULL);
    CU_add_test(s, "reopen keeps jobs, events, keys, sessions", test_reopen_keeps_everything);
    CU_add_test(s, "savepoints roll back one request", test_savepoints);
    CU_add_test(s, "lease candidates: pools, kinds, backoff, sessions", test_candidates);
    CU_add_test(s, "deadlines, due jobs, restart grace", test_deadlines_and_grace);
    CU_add_test(s, "counts and List by principal", test_counts_and_list);
    CU_add_test(s, "retention purge", test_purge);
    CU_add_test(s, "newer schema refused", test_schema_version);
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
