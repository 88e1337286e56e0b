/* Unit tests for the credstore SQLite store: persistence, master key checks,
 * no plaintext at rest, row MACs, versions and grace, optimistic concurrency,
 * delete, paging, master key rotation, backup and restore. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <sqlite3.h>

#include "al_err.h"
#include "audit.h"
#include "store.h"

#define T0 1700000000000LL /* a fixed "now" */

static char base[64];
static int ndirs;
static struct cs_master *ka, *kb;
static char *principals[] = {"acme/*"};
static char *destinations[] = {"api.example.com"};
static Airlock__V1__BindingPolicy policy = AIRLOCK__V1__BINDING_POLICY__INIT;

static void newdir(char *out, size_t n)
{
    snprintf(out, n, "%s/d%d", base, ndirs++);
}

static struct cs_store *open_keys(const char *dir, const struct cs_master *primary,
                                  const struct cs_master *prev, int *rc_out)
{
    const struct cs_master *p[1] = {prev};
    struct cs_store_opts o = {.data_dir = dir,
                              .keys = {.primary = primary, .previous = p, .n_previous = !!prev}};
    struct cs_store *s = NULL;
    int rc = cs_store_open(&o, &s);

    if (rc_out)
        *rc_out = rc;
    return s;
}

static struct cs_store *open_a(const char *dir)
{
    int rc;
    struct cs_store *s = open_keys(dir, ka, NULL, &rc);

    CU_ASSERT_EQUAL(rc, 0);
    return s;
}

static void mkput(Airlock__V1__PutCredentialRequest *r, const char *name, const char *value)
{
    airlock__v1__put_credential_request__init(r);
    r->name = (char *)name;
    r->type = AIRLOCK__V1__CREDENTIAL_TYPE__CREDENTIAL_TYPE_BEARER_TOKEN;
    r->description = "test credential";
    r->policy = &policy;
    r->grace_period_ms = 1000;
    if (value) {
        r->value.data = (uint8_t *)value;
        r->value.len = strlen(value);
    }
}

static int put(struct cs_store *s, const char *name, const char *value, int64_t now)
{
    Airlock__V1__PutCredentialRequest r;
    struct cs_change c = {.actor = "spiffe://airlock/admin/test", .now_ms = now};

    mkput(&r, name, value);
    return cs_store_put(s, &r, &c, NULL, NULL);
}

static int rotate(struct cs_store *s, const char *name, const char *value, int64_t now,
                  int64_t grace, int destroy)
{
    Airlock__V1__RotateCredentialRequest r = AIRLOCK__V1__ROTATE_CREDENTIAL_REQUEST__INIT;
    struct cs_change c = {.actor = "spiffe://airlock/admin/test", .now_ms = now};

    r.name = (char *)name;
    r.value.data = (uint8_t *)value;
    r.value.len = strlen(value);
    r.grace_period_ms = grace;
    r.destroy_previous = destroy;
    return cs_store_rotate(s, &r, &c, NULL, NULL);
}

/* Gets a value; returns the rc and, on success, checks it equals want. */
static int get(struct cs_store *s, const char *name, int32_t version, int64_t now, const char *want,
               enum cs_why *why)
{
    uint8_t *buf = al_secure_alloc(CS_VALUE_MAX);
    struct cs_value_info info;
    struct al_arena a;
    int rc;

    al_arena_init(&a, 0);
    rc = cs_store_get_value(s, name, version, now, buf, CS_VALUE_MAX, &a, &info, why);
    if (rc == 0 && want) {
        CU_ASSERT_EQUAL(info.len, strlen(want));
        CU_ASSERT_EQUAL(memcmp(buf, want, info.len), 0);
        CU_ASSERT_PTR_NOT_NULL(info.tmpl);
        CU_ASSERT_PTR_NOT_NULL(info.policy);
    }
    al_arena_cleanup(&a);
    al_secure_free(buf);
    return rc;
}

static void raw_sql(const char *dir, const char *sql)
{
    char path[256];
    sqlite3 *db = NULL;
    char *err = NULL;

    snprintf(path, sizeof(path), "%s/credstore.db", dir);
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 2000);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "raw_sql: %s: %s\n", sql, err);
        CU_FAIL("raw sql");
    }
    sqlite3_free(err);
    sqlite3_close(db);
}

/* 1 if the file at path contains needle. */
static int file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    int found;

    if (!f)
        return 0;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    CU_ASSERT_EQUAL(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    found = memmem(buf, (size_t)n, needle, strlen(needle)) != NULL;
    free(buf);
    return found;
}

static void test_fresh_and_reopen(void)
{
    Airlock__V1__Credential *c = NULL;
    char dir[128], path[256];
    struct al_arena a;
    struct stat st;
    struct cs_store *s = NULL;

    newdir(dir, sizeof(dir));
    s = open_a(dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(stat(dir, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0700);
    snprintf(path, sizeof(path), "%s/credstore.db", dir);
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    CU_ASSERT_EQUAL(put(s, "github/ci-bot", "ghp_value_one", T0), 0);
    CU_ASSERT_EQUAL(put(s, "db/prod", "pg-password", T0), 0);
    CU_ASSERT_EQUAL(rotate(s, "github/ci-bot", "ghp_value_two", T0 + 10, 0, 0), 0);
    cs_store_close(s);

    s = open_a(dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(get(s, "github/ci-bot", 0, T0 + 20, "ghp_value_two", NULL), 0);
    CU_ASSERT_EQUAL(get(s, "github/ci-bot", 1, T0 + 20, "ghp_value_one", NULL), 0); /* grace */
    CU_ASSERT_EQUAL(get(s, "db/prod", 0, T0 + 20, "pg-password", NULL), 0);
    CU_ASSERT_EQUAL(get(s, "db/nope", 0, T0 + 20, NULL, NULL), AL_ERR_NOTFOUND);
    al_arena_init(&a, 0);
    CU_ASSERT_EQUAL_FATAL(cs_store_describe(s, "github/ci-bot", &a, &c), 0);
    CU_ASSERT_STRING_EQUAL(c->name, "github/ci-bot");
    CU_ASSERT_EQUAL(c->current_version, 2);
    CU_ASSERT_EQUAL(c->revision, 2);
    CU_ASSERT_EQUAL(c->n_versions, 2);
    CU_ASSERT_EQUAL(c->versions[0]->version, 2); /* newest first */
    CU_ASSERT_EQUAL(c->versions[0]->state,
                    AIRLOCK__V1__CREDENTIAL_VERSION_STATE__CREDENTIAL_VERSION_STATE_CURRENT);
    CU_ASSERT_EQUAL(c->versions[1]->state,
                    AIRLOCK__V1__CREDENTIAL_VERSION_STATE__CREDENTIAL_VERSION_STATE_GRACE);
    CU_ASSERT_EQUAL(c->versions[1]->grace_end_ms, T0 + 10 + 1000);
    CU_ASSERT_STRING_EQUAL(c->template_->header, "Authorization"); /* bearer defaults */
    CU_ASSERT_STRING_EQUAL(c->template_->format, "Bearer {}");
    CU_ASSERT_EQUAL(c->policy->n_allowed_principals, 1);
    CU_ASSERT_STRING_EQUAL(c->policy->allowed_principals[0], "acme/*");
    CU_ASSERT_STRING_EQUAL(c->updated_by, "spiffe://airlock/admin/test");
    al_arena_cleanup(&a);
    cs_store_close(s);
}

static void test_wrong_master(void)
{
    char dir[128];
    struct cs_store *s;
    int rc;

    newdir(dir, sizeof(dir));
    s = open_a(dir);
    CU_ASSERT_EQUAL(put(s, "x", "value-x", T0), 0);
    cs_store_close(s);
    s = open_keys(dir, kb, NULL, &rc);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_EQUAL(rc, AL_ERR_CRYPTO);
    /* a previous key that matches is enough to open (rotation in progress) */
    s = open_keys(dir, kb, ka, &rc);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(get(s, "x", 0, T0, "value-x", NULL), 0);
    cs_store_close(s);
    /* master_check edited: refused even with the right key */
    raw_sql(dir, "UPDATE meta SET v = zeroblob(32) WHERE k = 'master_check'");
    s = open_keys(dir, ka, NULL, &rc);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_EQUAL(rc, AL_ERR_CRYPTO);
}

static void test_no_plaintext_at_rest(void)
{
    static const char *const files[] = {"credstore.db", "credstore.db-wal", "credstore.db-shm",
                                        "audit.head"};
    char dir[128], path[256], canary[3][64];
    Airlock__V1__PutCredentialRequest r;
    struct cs_change c = {.actor = "a", .now_ms = T0};
    struct cs_store *s;

    for (int i = 0; i < 3; i++)
        snprintf(canary[i], sizeof(canary[i]), "CANARY%d-%08x%08x", i, (unsigned)random(),
                 (unsigned)random());
    newdir(dir, sizeof(dir));
    s = open_a(dir);
    CU_ASSERT_EQUAL(put(s, "canary/one", canary[0], T0), 0);
    mkput(&r, "canary/one", canary[0]); /* a retried create with the same value */
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, NULL, NULL), 0);
    CU_ASSERT_EQUAL(rotate(s, "canary/one", canary[1], T0 + 1, 0, 0), 0);
    CU_ASSERT_EQUAL(rotate(s, "canary/one", canary[2], T0 + 2, 0, 1), 0);
    CU_ASSERT_EQUAL(put(s, "canary/two", canary[1], T0), 0);
    CU_ASSERT_EQUAL(get(s, "canary/one", 0, T0 + 3, canary[2], NULL), 0);
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[f]);
        for (int i = 0; i < 3; i++)
            CU_ASSERT_FALSE(file_has(path, canary[i]));
    }
    snprintf(path, sizeof(path), "%s/credstore.db-wal", dir);
    CU_ASSERT_EQUAL(access(path, F_OK), 0); /* the WAL really was scanned */
    cs_store_close(s);
    snprintf(path, sizeof(path), "%s/credstore.db", dir);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_FALSE(file_has(path, canary[i]));
}

static void test_row_tamper(void)
{
    char dir[128];
    Airlock__V1__Credential *c = NULL;
    struct al_arena a;
    enum cs_why why;
    struct cs_store *s;

    newdir(dir, sizeof(dir));
    s = open_a(dir);
    CU_ASSERT_EQUAL(put(s, "a/one", "value-one", T0), 0);
    CU_ASSERT_EQUAL(put(s, "a/two", "value-two", T0), 0);
    CU_ASSERT_EQUAL(put(s, "a/three", "value-three", T0), 0);
    CU_ASSERT_EQUAL(put(s, "a/four", "value-four", T0), 0);
    CU_ASSERT_EQUAL(put(s, "a/five", "value-five", T0), 0);
    CU_ASSERT_EQUAL(rotate(s, "a/five", "value-five-2", T0 + 1, 0, 0), 0);
    cs_store_close(s);

    /* the policy widened directly in SQLite: an extra principal glob */
    raw_sql(dir, "UPDATE credentials SET policy = policy || X'12012a' WHERE name = 'a/one'");
    /* the template moved to another header */
    raw_sql(dir, "UPDATE credentials SET template_header = 'X-Leak' WHERE name = 'a/two'");
    /* ciphertexts of two credentials swapped */
    raw_sql(dir, "CREATE TEMP TABLE t AS SELECT * FROM versions WHERE name IN ('a/three','a/four');"
                 "UPDATE versions SET dek_nonce = (SELECT dek_nonce FROM t WHERE name = 'a/four'),"
                 " wrapped_dek = (SELECT wrapped_dek FROM t WHERE name = 'a/four'),"
                 " value_nonce = (SELECT value_nonce FROM t WHERE name = 'a/four'),"
                 " ciphertext = (SELECT ciphertext FROM t WHERE name = 'a/four')"
                 " WHERE name = 'a/three'");
    /* a grace version's end moved into the far future */
    raw_sql(dir, "UPDATE versions SET grace_end_ms = 9000000000000 WHERE name = 'a/five' AND "
                 "version = 1");

    s = open_a(dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(get(s, "a/one", 0, T0, NULL, &why), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(why, CS_WHY_TAMPERED);
    CU_ASSERT_EQUAL(get(s, "a/two", 0, T0, NULL, &why), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(get(s, "a/three", 0, T0, NULL, &why), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(why, CS_WHY_TAMPERED);
    CU_ASSERT_EQUAL(get(s, "a/four", 0, T0, "value-four", NULL), 0); /* untouched */
    CU_ASSERT_EQUAL(get(s, "a/five", 0, T0 + 2, "value-five-2", NULL), 0);
    CU_ASSERT_EQUAL(get(s, "a/five", 1, T0 + 2, NULL, &why), AL_ERR_CRYPTO);
    al_arena_init(&a, 0);
    CU_ASSERT_EQUAL(cs_store_describe(s, "a/one", &a, &c), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(cs_store_describe(s, "a/four", &a, &c), 0);
    al_arena_cleanup(&a);
    /* a Put over a tampered row is refused; deleting it is the remedy */
    CU_ASSERT_EQUAL(put(s, "a/one", NULL, T0), AL_ERR_CRYPTO);
    Airlock__V1__DeleteCredentialRequest d = AIRLOCK__V1__DELETE_CREDENTIAL_REQUEST__INIT;
    struct cs_change chg = {.actor = "a", .now_ms = T0};
    d.name = "a/one";
    CU_ASSERT_EQUAL(cs_store_delete(s, &d, &chg, NULL, NULL), 0);
    CU_ASSERT_EQUAL(put(s, "a/one", "value-one-again", T0), 0);
    CU_ASSERT_EQUAL(get(s, "a/one", 0, T0, "value-one-again", NULL), 0);
    cs_store_close(s);

    /* current_version pointed back at an older version */
    raw_sql(dir, "UPDATE credentials SET current_version = 1 WHERE name = 'a/five'");
    s = open_a(dir);
    CU_ASSERT_EQUAL(get(s, "a/five", 0, T0 + 2, NULL, &why), AL_ERR_CRYPTO);
    cs_store_close(s);
}

/* Reads kept in the verified-row cache must see every change: rows edited
 * through another connection while the store is open, and changes made
 * through the store itself. */
static void test_row_tamper_while_open(void)
{
    char dir[128];
    enum cs_why why;
    struct cs_store *s;

    newdir(dir, sizeof(dir));
    s = open_a(dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(put(s, "b/one", "value-one", T0), 0);
    CU_ASSERT_EQUAL(put(s, "b/two", "value-two", T0), 0);
    CU_ASSERT_EQUAL(put(s, "b/three", "value-three", T0), 0);
    for (int i = 0; i < 3; i++) { /* cached after the first */
        CU_ASSERT_EQUAL(get(s, "b/one", 0, T0, "value-one", NULL), 0);
        CU_ASSERT_EQUAL(get(s, "b/two", 0, T0, "value-two", NULL), 0);
        CU_ASSERT_EQUAL(get(s, "b/three", 0, T0, "value-three", NULL), 0);
    }
    /* another connection commits something unrelated: still served */
    raw_sql(dir, "UPDATE meta SET v = v WHERE k = 'schema_version'");
    CU_ASSERT_EQUAL(get(s, "b/one", 0, T0, "value-one", NULL), 0);
    /* edited through another connection while the store is open */
    raw_sql(dir, "UPDATE credentials SET template_header = 'X-Leak' WHERE name = 'b/one'");
    CU_ASSERT_EQUAL(get(s, "b/one", 0, T0, NULL, &why), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(why, CS_WHY_TAMPERED);
    CU_ASSERT_EQUAL(get(s, "b/one", 0, T0, NULL, &why), AL_ERR_CRYPTO); /* and stays refused */
    raw_sql(dir,
            "UPDATE versions SET state = 2, grace_end_ms = 9000000000000 WHERE name = 'b/two'");
    CU_ASSERT_EQUAL(get(s, "b/two", 0, T0, NULL, &why), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(get(s, "b/three", 0, T0, "value-three", NULL), 0); /* untouched */
    /* a change through the store itself is seen at once */
    CU_ASSERT_EQUAL(rotate(s, "b/three", "value-three-2", T0 + 1, 0, 0), 0);
    CU_ASSERT_EQUAL(get(s, "b/three", 0, T0 + 2, "value-three-2", NULL), 0);
    cs_store_close(s);
}

/* get() that also says whether the rows came from the verified-row cache. */
static int get_cached(struct cs_store *s, const char *name, const char *want, int *cached)
{
    uint8_t *buf = al_secure_alloc(CS_VALUE_MAX);
    struct cs_value_info info;
    struct al_arena a;
    int rc;

    al_arena_init(&a, 0);
    rc = cs_store_get_value(s, name, 0, T0, buf, CS_VALUE_MAX, &a, &info, NULL);
    *cached = rc == 0 && info.cached;
    if (rc == 0 && want) {
        CU_ASSERT_EQUAL(info.len, strlen(want));
        CU_ASSERT_EQUAL(memcmp(buf, want, info.len), 0);
    }
    al_arena_cleanup(&a);
    al_secure_free(buf);
    return rc;
}

/* Steps reported through cs_store_on_audit_step. */
static struct cs_store_audit_step step_seen;
static int steps_seen;
static void on_step(void *arg, const struct cs_store_audit_step *st)
{
    (void)arg;
    step_seen = *st;
    steps_seen++;
}

/* One audit record committed through w's own connection (as the service's
 * commit thread does); returns the step reported for it (ok 0: none). */
static struct cs_store_audit_step audit_commit_via(struct cs_store *w, int i)
{
    Airlock__V1__AuditRecord r = AIRLOCK__V1__AUDIT_RECORD__INIT;
    char grant[32];
    size_t idx = 0;
    int64_t first = 0;

    snprintf(grant, sizeof(grant), "grant-%d", i);
    r.time_ms = T0 + i;
    r.action = AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_RESOLVE;
    r.decision = AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW;
    r.caller = "spiffe://airlock/executor/e1";
    r.issuer = "spiffe://airlock/intake/i0";
    r.principal = "acme/alice";
    r.credential = "f/one";
    r.version = 1;
    r.destination = "api.example.com:443";
    r.grant_id = grant;
    memset(&step_seen, 0, sizeof(step_seen));
    CU_ASSERT_EQUAL(cs_audit_append(cs_store_audit(w), &r, &idx), 0);
    CU_ASSERT_EQUAL(cs_audit_commit(cs_store_audit(w), &first), 0);
    CU_ASSERT(first > 0);
    return step_seen;
}

/* The observer chained in front of the store's: another connection commits
 * between our COMMIT and the store's reading of the WAL-index header. */
static const char *race_dir, *race_sql;
static void (*race_next)(void *, int);
static void race_observer(void *arg, int phase)
{
    if (phase == CS_AUDIT_TXN_COMMITTED && race_sql)
        raw_sql(race_dir, race_sql);
    race_next(arg, phase);
}

/* Audit-only commits through another connection of this process (the
 * service's commit thread) keep the read cache when followed, and nothing
 * else does: a commit of any other connection before, between or right
 * after them still refills it, MACs checked again. */
static void test_cache_follows_audit_commits(void)
{
    char dir[128];
    enum cs_why why;
    struct cs_store *s, *w;
    struct cs_store_audit_step st;
    int cached = -1;
    void *arg = NULL;

    newdir(dir, sizeof(dir));
    s = open_a(dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    w = open_a(dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    CU_ASSERT_EQUAL(put(s, "f/one", "value-one", T0), 0);
    CU_ASSERT_EQUAL(get_cached(s, "f/one", "value-one", &cached), 0);
    CU_ASSERT_EQUAL(get_cached(s, "f/one", "value-one", &cached), 0);
    CU_ASSERT_EQUAL(cached, 1);

    /* nothing committed through w yet: no step */
    steps_seen = 0;
    cs_store_on_audit_step(w, on_step, NULL);
    CU_ASSERT_EQUAL(steps_seen, 0);

    /* not followed: the commit empties the cache (as before) */
    st = audit_commit_via(w, 1);
    CU_ASSERT_EQUAL(st.ok, 1);
    CU_ASSERT_EQUAL(get_cached(s, "f/one", "value-one", &cached), 0);
    CU_ASSERT_EQUAL(cached, 0);
    CU_ASSERT_EQUAL(get_cached(s, "f/one", "value-one", &cached), 0);
    CU_ASSERT_EQUAL(cached, 1);

    /* followed: still served from the cache, commit after commit */
    for (int i = 2; i < 6; i++) {
        st = audit_commit_via(w, i);
        CU_ASSERT_EQUAL(st.ok, 1);
        cs_store_audit_follow(s, &st);
        CU_ASSERT_EQUAL(get_cached(s, "f/one", "value-one", &cached), 0);
        CU_ASSERT_EQUAL(cached, 1);
    }
    /* one step per commit */
    CU_ASSERT_EQUAL(steps_seen, 5);

    /* another connection commits after ours, before the follow: refilled */
    st = audit_commit_via(w, 6);
    raw_sql(dir, "INSERT OR REPLACE INTO meta(k, v) VALUES('test-other', randomblob(8))");
    cs_store_audit_follow(s, &st);
    CU_ASSERT_EQUAL(get_cached(s, "f/one", "value-one", &cached), 0);
    CU_ASSERT_EQUAL(cached, 0);

    /* a row edited by another connection right after our COMMIT, before the
     * header is read: the step is refused and the edit is caught */
    race_next = cs_audit_txn_observer(cs_store_audit(w), &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(race_next);
    race_dir = dir;
    race_sql = "UPDATE credentials SET template_header = 'X-Leak' WHERE name = 'f/one'";
    cs_audit_set_txn_observer(cs_store_audit(w), race_observer, arg);
    CU_ASSERT_EQUAL(get_cached(s, "f/one", "value-one", &cached), 0);
    st = audit_commit_via(w, 7);
    CU_ASSERT_EQUAL(st.ok, 0);
    cs_store_audit_follow(s, &st);
    CU_ASSERT_EQUAL(get(s, "f/one", 0, T0, NULL, &why), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(why, CS_WHY_TAMPERED);
    race_sql = NULL;
    cs_audit_set_txn_observer(cs_store_audit(w), race_next, arg);
    cs_store_close(w);
    cs_store_close(s);
}

/* Another process (airlockctl) opening the database while the store is open
 * must find it in use: the store must keep SQLite's locks on the WAL index
 * intact, or that process resets the shared memory under it. */
static void test_second_process(void)
{
    char dir[128];
    struct cs_store *s, *s2;
    int status = -1;
    pid_t pid;

    newdir(dir, sizeof(dir));
    s = open_a(dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(put(s, "p/one", "value-one", T0), 0);
    CU_ASSERT_EQUAL(get(s, "p/one", 0, T0, "value-one", NULL), 0);
    /* a second connection of this process (the service's commit thread) */
    s2 = open_a(dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s2);
    fflush(NULL);
    pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        /* the key's locked pages are wiped in a forked child: load it again */
        uint8_t raw[CS_KEY_LEN];
        struct cs_master *k = NULL;
        struct cs_store *c = NULL;
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        char shm[160];
        int rc, fd;
        /* the parent still holds SQLite's locks on the database and its WAL index */
        for (int i = 0; i < 2; i++) {
            snprintf(shm, sizeof(shm), "%s/credstore.db%s", dir, i ? "-shm" : "");
            fl = (struct flock){.l_type = F_WRLCK, .l_whence = SEEK_SET};
            fd = open(shm, O_RDWR | O_CLOEXEC);
            if (fd < 0 || fcntl(fd, F_GETLK, &fl) < 0 || fl.l_type == F_UNLCK ||
                fl.l_pid != getppid())
                _exit(2 + i);
            close(fd);
        }
        memset(raw, 0xa1, sizeof(raw));
        rc = cs_master_from_bytes(raw, &k);
        if (rc == 0)
            c = open_keys(dir, k, NULL, &rc);
        rc = rc == 0 && put(c, "p/child", "value-child", T0) == 0 ? 0 : 1;
        cs_store_close(c);
        cs_master_free(k);
        _exit(rc);
    }
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT_EQUAL(put(s, "p/two", "value-two", T0), 0);
    CU_ASSERT_EQUAL(get(s, "p/two", 0, T0, "value-two", NULL), 0);
    CU_ASSERT_EQUAL(get(s, "p/child", 0, T0, "value-child", NULL), 0);
    CU_ASSERT_EQUAL(get(s, "p/one", 0, T0, "value-one", NULL), 0);
    CU_ASSERT_EQUAL(get(s2, "p/two", 0, T0, "value-two", NULL), 0);
    cs_store_close(s2);
    cs_store_close(s);
}

static void test_grace_and_sweep(void)
{
    char dir[128];
    enum cs_why why;
    int n = -1;
    struct cs_store *s;
    Airlock__V1__QueryAuditRequest q = AIRLOCK__V1__QUERY_AUDIT_REQUEST__INIT;
    Airlock__V1__QueryAuditResponse *resp = NULL;
    struct al_arena a;

    newdir(dir, sizeof(dir));
    s = open_a(dir);
    CU_ASSERT_EQUAL(put(s, "g", "v1", T0), 0); /* grace 1000 ms */
    CU_ASSERT_EQUAL(rotate(s, "g", "v2", T0 + 10000, 0, 0), 0);
    CU_ASSERT_EQUAL(get(s, "g", 1, T0 + 10999, "v1", NULL), 0);
    CU_ASSERT_EQUAL(get(s, "g", 1, T0 + 11000, NULL, &why), AL_ERR_EXPIRED);
    CU_ASSERT_EQUAL(why, CS_WHY_VERSION_EXPIRED);
    CU_ASSERT_EQUAL(get(s, "g", 0, T0 + 11000, "v2", NULL), 0);
    CU_ASSERT_EQUAL(get(s, "g", 2, T0 + 11000, "v2", NULL), 0);
    CU_ASSERT_EQUAL(get(s, "g", 3, T0 + 11000, NULL, &why), AL_ERR_NOTFOUND);
    /* rotation with its own grace */
    CU_ASSERT_EQUAL(rotate(s, "g", "v3", T0 + 20000, 50, 0), 0);
    CU_ASSERT_EQUAL(get(s, "g", 2, T0 + 20049, "v2", NULL), 0);
    CU_ASSERT_EQUAL(get(s, "g", 2, T0 + 20050, NULL, NULL), AL_ERR_EXPIRED);
    /* sweep destroys both expired versions and audits it */
    CU_ASSERT_EQUAL(cs_store_sweep(s, T0 + 20050, "spiffe://airlock/credstore/c0", &n), 0);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(get(s, "g", 1, T0 + 5, NULL, &why), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(why, CS_WHY_VERSION_DESTROYED);
    CU_ASSERT_EQUAL(cs_store_sweep(s, T0 + 20050, "x", &n), 0);
    CU_ASSERT_EQUAL(n, 0);
    q.action = AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_VERSION_DESTROYED;
    al_arena_init(&a, 0);
    CU_ASSERT_EQUAL(cs_audit_query(cs_store_audit(s), &q, &a, &resp), 0);
    CU_ASSERT_EQUAL(resp->n_records, 2);
    CU_ASSERT_STRING_EQUAL(resp->records[0]->credential, "g");
    CU_ASSERT_EQUAL(resp->records[0]->version, 1);
    al_arena_cleanup(&a);
    /* destroy_previous, and a credential with no grace at all */
    CU_ASSERT_EQUAL(rotate(s, "g", "v4", T0 + 30000, 0, 1), 0);
    CU_ASSERT_EQUAL(get(s, "g", 3, T0 + 30001, NULL, &why), AL_ERR_NOTFOUND);
    Airlock__V1__PutCredentialRequest r;
    struct cs_change c = {.actor = "a", .now_ms = T0};
    mkput(&r, "nograce", "n1");
    r.grace_period_ms = 0;
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, NULL, NULL), 0);
    CU_ASSERT_EQUAL(rotate(s, "nograce", "n2", T0 + 1, 0, 0), 0);
    CU_ASSERT_EQUAL(get(s, "nograce", 1, T0 + 1, NULL, &why), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(why, CS_WHY_VERSION_DESTROYED);
    cs_store_close(s);
}

static void test_put_semantics(void)
{
    Airlock__V1__PutCredentialRequest r;
    Airlock__V1__InjectionTemplate t = AIRLOCK__V1__INJECTION_TEMPLATE__INIT;
    Airlock__V1__Credential *out = NULL;
    struct cs_change c = {.actor = "spiffe://airlock/admin/ops", .now_ms = T0};
    struct al_arena a;
    char dir[128];
    struct cs_store *s;

    newdir(dir, sizeof(dir));
    s = open_a(dir);
    al_arena_init(&a, 0);
    mkput(&r, "svc/key", NULL);
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), AL_ERR_INVAL); /* no value */
    CU_ASSERT_EQUAL(c.why, CS_WHY_VALUE_REQUIRED);
    mkput(&r, "svc/key", "k1");
    r.create_only = 1;
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), 0);
    CU_ASSERT_EQUAL(out->revision, 1);
    CU_ASSERT_EQUAL(out->current_version, 1);
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), AL_ERR_EXISTS);
    CU_ASSERT_PTR_NULL(out);
    r.create_only = 0;
    /* identical Put: nothing changes */
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), 0);
    CU_ASSERT_EQUAL(out->revision, 1);
    /* metadata change with the right and a wrong expected revision */
    r.description = "changed";
    r.expected_revision = 7;
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), AL_ERR_STATE);
    CU_ASSERT_EQUAL(c.why, CS_WHY_REVISION_MISMATCH);
    r.expected_revision = 1;
    c.now_ms = T0 + 5;
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), 0);
    CU_ASSERT_EQUAL(out->revision, 2);
    CU_ASSERT_EQUAL(out->updated_ms, T0 + 5);
    CU_ASSERT_EQUAL(out->created_ms, T0);
    CU_ASSERT_STRING_EQUAL(out->description, "changed");
    r.expected_revision = 1; /* stale now */
    r.description = "again";
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), AL_ERR_STATE);
    r.expected_revision = 0;
    /* a different value on update is refused: use Rotate */
    r.value.data = (uint8_t *)"k2";
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), AL_ERR_STATE);
    CU_ASSERT_EQUAL(c.why, CS_WHY_VALUE_DIFFERS);
    CU_ASSERT_EQUAL(get(s, "svc/key", 0, T0, "k1", NULL), 0);
    /* validation */
    mkput(&r, "bad//name", "v");
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), AL_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(c.field, "name");
    mkput(&r, "/lead", "v");
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), AL_ERR_INVAL);
    mkput(&r, "bad name", "v");
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), AL_ERR_INVAL);
    mkput(&r, "h", "v");
    r.template_ = &t;
    t.header = "Host";
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), AL_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(c.field, "template.header");
    t.header = "airlock-grant";
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), AL_ERR_INVAL);
    t.header = "Proxy-Authorization";
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), AL_ERR_INVAL);
    t.header = "X-Api-Key";
    t.format = "Token {} {}";
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), AL_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(c.field, "template.format");
    t.format = "Token {}\r\nX-Evil: 1";
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), AL_ERR_INVAL);
    t.format = "";
    r.type = AIRLOCK__V1__CREDENTIAL_TYPE__CREDENTIAL_TYPE_GENERIC_SECRET;
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), AL_ERR_INVAL); /* generic: format needed */
    r.type = AIRLOCK__V1__CREDENTIAL_TYPE__CREDENTIAL_TYPE_HEADER_VALUE;
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), 0);
    CU_ASSERT_STRING_EQUAL(out->template_->header, "X-Api-Key");
    CU_ASSERT_STRING_EQUAL(out->template_->format, "{}");
    r.type = 0;
    CU_ASSERT_EQUAL(cs_store_put(s, &r, &c, &a, &out), AL_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(c.field, "type");
    /* Rotate: same value is a no-op; expected_current_version */
    Airlock__V1__RotateCredentialRequest rr = AIRLOCK__V1__ROTATE_CREDENTIAL_REQUEST__INIT;
    rr.name = "svc/key";
    rr.value.data = (uint8_t *)"k1";
    rr.value.len = 2;
    CU_ASSERT_EQUAL(cs_store_rotate(s, &rr, &c, &a, &out), 0);
    CU_ASSERT_EQUAL(out->current_version, 1);
    rr.value.data = (uint8_t *)"k2";
    rr.expected_current_version = 2;
    CU_ASSERT_EQUAL(cs_store_rotate(s, &rr, &c, &a, &out), AL_ERR_STATE);
    CU_ASSERT_EQUAL(c.why, CS_WHY_REVISION_MISMATCH);
    rr.expected_current_version = 1;
    CU_ASSERT_EQUAL(cs_store_rotate(s, &rr, &c, &a, &out), 0);
    CU_ASSERT_EQUAL(out->current_version, 2);
    CU_ASSERT_EQUAL(out->revision, 3);
    rr.name = "svc/none";
    CU_ASSERT_EQUAL(cs_store_rotate(s, &rr, &c, &a, &out), AL_ERR_NOTFOUND);
    al_arena_cleanup(&a);
    cs_store_close(s);
}

static void test_delete(void)
{
    Airlock__V1__DeleteCredentialRequest d = AIRLOCK__V1__DELETE_CREDENTIAL_REQUEST__INIT;
    Airlock__V1__AuditRecord rec = AIRLOCK__V1__AUDIT_RECORD__INIT;
    struct cs_change c = {.actor = "a", .now_ms = T0 + 100, .audit = &rec};
    Airlock__V1__Credential *out = NULL;
    struct al_arena a;
    enum cs_why why;
    char dir[128];
    struct cs_store *s;

    newdir(dir, sizeof(dir));
    s = open_a(dir);
    al_arena_init(&a, 0);
    CU_ASSERT_EQUAL(put(s, "del/me", "d1", T0), 0);
    CU_ASSERT_EQUAL(rotate(s, "del/me", "d2", T0 + 1, 100000, 0), 0);
    rec.action = AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_DELETE;
    rec.caller = "spiffe://airlock/admin/test";
    d.name = "del/me";
    d.version = 2;
    CU_ASSERT_EQUAL(cs_store_delete(s, &d, &c, &a, &out), AL_ERR_STATE);
    CU_ASSERT_EQUAL(c.why, CS_WHY_VERSION_CURRENT);
    CU_ASSERT_EQUAL(c.audit_seq, 0); /* nothing committed, nothing audited */
    d.version = 1;
    d.expected_revision = 99;
    CU_ASSERT_EQUAL(cs_store_delete(s, &d, &c, &a, &out), AL_ERR_STATE);
    d.expected_revision = 0;
    CU_ASSERT_EQUAL(cs_store_delete(s, &d, &c, &a, &out), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT(c.audit_seq > 0);
    CU_ASSERT_EQUAL(out->versions[1]->state,
                    AIRLOCK__V1__CREDENTIAL_VERSION_STATE__CREDENTIAL_VERSION_STATE_DESTROYED);
    CU_ASSERT_EQUAL(out->versions[1]->destroyed_ms, T0 + 100);
    CU_ASSERT_EQUAL(get(s, "del/me", 1, T0 + 2, NULL, &why), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(why, CS_WHY_VERSION_DESTROYED);
    CU_ASSERT_EQUAL(cs_store_delete(s, &d, &c, &a, &out), AL_ERR_NOTFOUND); /* retry */
    d.version = 7;
    CU_ASSERT_EQUAL(cs_store_delete(s, &d, &c, &a, &out), AL_ERR_NOTFOUND);
    d.version = 0;
    CU_ASSERT_EQUAL(cs_store_delete(s, &d, &c, &a, &out), 0);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(cs_store_describe(s, "del/me", &a, &out), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(get(s, "del/me", 0, T0 + 2, NULL, NULL), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(cs_store_delete(s, &d, &c, &a, &out), AL_ERR_NOTFOUND);
    raw_sql(dir, "SELECT 1"); /* the database is still readable by others */
    CU_ASSERT_EQUAL(put(s, "del/me", "d3", T0 + 200), 0); /* name is free again */
    CU_ASSERT_EQUAL(get(s, "del/me", 0, T0 + 200, "d3", NULL), 0);
    al_arena_cleanup(&a);
    cs_store_close(s);
}

static void test_paging(void)
{
    Airlock__V1__ListCredentialsRequest req = AIRLOCK__V1__LIST_CREDENTIALS_REQUEST__INIT;
    Airlock__V1__PageRequest page = AIRLOCK__V1__PAGE_REQUEST__INIT;
    Airlock__V1__ListCredentialsResponse *resp = NULL;
    char dir[128], name[64], token[256];
    struct al_arena a;
    int seen = 0, pages = 0;
    struct cs_store *s;

    newdir(dir, sizeof(dir));
    s = open_a(dir);
    for (int i = 0; i < 7; i++) {
        snprintf(name, sizeof(name), "team/a-%d", i);
        CU_ASSERT_EQUAL(put(s, name, "v", T0), 0);
    }
    CU_ASSERT_EQUAL(put(s, "team/b", "v", T0), 0);
    CU_ASSERT_EQUAL(put(s, "teamz", "v", T0), 0);
    CU_ASSERT_EQUAL(put(s, "other", "v", T0), 0);
    req.name_prefix = "team/a-";
    req.page = &page;
    page.page_size = 3;
    al_arena_init(&a, 0);
    do {
        CU_ASSERT_EQUAL_FATAL(cs_store_list(s, &req, &a, &resp), 0);
        for (size_t i = 0; i < resp->n_credentials; i++) {
            snprintf(name, sizeof(name), "team/a-%d", seen++);
            CU_ASSERT_STRING_EQUAL(resp->credentials[i]->name, name);
        }
        pages++;
        snprintf(token, sizeof(token), "%s",
                 resp->page->next_page_token ? resp->page->next_page_token : "");
        page.page_token = token;
    } while (token[0] && pages < 10);
    CU_ASSERT_EQUAL(seen, 7);
    CU_ASSERT_EQUAL(pages, 3);
    /* all, default page size */
    req.name_prefix = "";
    page.page_size = 0;
    page.page_token = "";
    CU_ASSERT_EQUAL(cs_store_list(s, &req, &a, &resp), 0);
    CU_ASSERT_EQUAL(resp->n_credentials, 10);
    CU_ASSERT_STRING_EQUAL(resp->page->next_page_token, ""); /* last page */
    req.name_prefix = "team/";
    CU_ASSERT_EQUAL(cs_store_list(s, &req, &a, &resp), 0);
    CU_ASSERT_EQUAL(resp->n_credentials, 8);
    /* a token from another prefix, or garbage */
    req.name_prefix = "team/a-";
    page.page_size = 3;
    CU_ASSERT_EQUAL(cs_store_list(s, &req, &a, &resp), 0);
    snprintf(token, sizeof(token), "%s", resp->page->next_page_token);
    req.name_prefix = "other";
    page.page_token = token;
    CU_ASSERT_EQUAL(cs_store_list(s, &req, &a, &resp), AL_ERR_INVAL);
    req.name_prefix = "team/a-";
    page.page_token = "!!notatoken";
    CU_ASSERT_EQUAL(cs_store_list(s, &req, &a, &resp), AL_ERR_INVAL);
    req.name_prefix = "bad prefix";
    page.page_token = "";
    CU_ASSERT_EQUAL(cs_store_list(s, &req, &a, &resp), AL_ERR_INVAL);
    al_arena_cleanup(&a);
    cs_store_close(s);
}

static void test_rotate_master(void)
{
    struct cs_audit_verify_result vr;
    struct cs_rotate_stats st;
    char dir[128], name[32], val[32];
    struct cs_store *s, *live;
    int rc;

    newdir(dir, sizeof(dir));
    s = open_a(dir);
    for (int i = 0; i < 150; i++) { /* more than one batch */
        snprintf(name, sizeof(name), "rot/%03d", i);
        snprintf(val, sizeof(val), "value-%03d", i);
        CU_ASSERT_EQUAL_FATAL(put(s, name, val, T0), 0);
    }
    CU_ASSERT_EQUAL(rotate(s, "rot/000", "value-000-b", T0 + 1, 0, 0), 0);
    CU_ASSERT_EQUAL(rotate(s, "rot/001", "value-001-b", T0 + 1, 0, 1), 0); /* destroyed v1 */
    cs_store_close(s);

    /* the service runs with the new key as primary and the old one as previous */
    live = open_keys(dir, kb, ka, &rc);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(put(live, "rot/new", "written-under-b", T0 + 2), 0);
    CU_ASSERT_EQUAL(cs_store_rotate_master(dir, ka, kb, NULL, &st), 0);
    CU_ASSERT_EQUAL(st.versions_rewrapped, 151);
    CU_ASSERT_EQUAL(st.refused, 0);
    /* readers went on and still do */
    CU_ASSERT_EQUAL(get(live, "rot/042", 0, T0 + 3, "value-042", NULL), 0);
    CU_ASSERT_EQUAL(get(live, "rot/000", 1, T0 + 3, "value-000", NULL), 0);
    CU_ASSERT_EQUAL(put(live, "rot/after", "after", T0 + 4), 0);
    cs_store_close(live);
    /* idempotent */
    CU_ASSERT_EQUAL(cs_store_rotate_master(dir, ka, kb, NULL, &st), 0);
    CU_ASSERT_EQUAL(st.versions_rewrapped, 0);

    s = open_keys(dir, kb, NULL, &rc);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(get(s, "rot/149", 0, T0 + 5, "value-149", NULL), 0);
    CU_ASSERT_EQUAL(get(s, "rot/000", 0, T0 + 5, "value-000-b", NULL), 0);
    CU_ASSERT_EQUAL(get(s, "rot/new", 0, T0 + 5, "written-under-b", NULL), 0);
    CU_ASSERT_EQUAL(cs_audit_verify(cs_store_audit(s), 0, 0, &vr), 0);
    CU_ASSERT_TRUE(vr.intact);
    CU_ASSERT_EQUAL(vr.head_seq, 0); /* no audit records were given */
    cs_store_close(s);
    s = open_keys(dir, ka, NULL, &rc);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_EQUAL(rc, AL_ERR_CRYPTO);
    /* a database under neither key */
    CU_ASSERT_EQUAL(cs_store_rotate_master(dir, ka, ka, NULL, &st), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(cs_store_rotate_master("/nonexistent/dir", ka, kb, NULL, &st), AL_ERR_NOTFOUND);
    /* tools open existing stores only */
    struct cs_store_opts o = {
        .data_dir = "/nonexistent/dir", .keys = {.primary = kb}, .no_create = 1};
    CU_ASSERT_EQUAL(cs_store_open(&o, &s), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(access("/nonexistent/dir", F_OK), -1);
    o.data_dir = dir;
    CU_ASSERT_EQUAL(cs_store_open(&o, &s), 0);
    cs_store_close(s);
}

static void test_rotate_master_refuses_tampered(void)
{
    struct cs_rotate_stats st;
    char dir[128];
    struct cs_store *s;
    int rc;

    newdir(dir, sizeof(dir));
    s = open_a(dir);
    CU_ASSERT_EQUAL(put(s, "t/good", "good", T0), 0);
    CU_ASSERT_EQUAL(put(s, "t/bad", "bad", T0), 0);
    cs_store_close(s);
    raw_sql(dir, "UPDATE credentials SET description = 'edited' WHERE name = 't/bad'");
    CU_ASSERT_EQUAL(cs_store_rotate_master(dir, ka, kb, NULL, &st), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(st.refused, 1);
    /* not switched: the old key still opens it (the new one is needed for moved rows) */
    s = open_keys(dir, kb, ka, &rc);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(get(s, "t/good", 0, T0, "good", NULL), 0);
    CU_ASSERT_EQUAL(get(s, "t/bad", 0, T0, NULL, NULL), AL_ERR_CRYPTO); /* still refused */
    cs_store_close(s);
    s = open_keys(dir, ka, NULL, &rc); /* rows under kb exist: the old key alone is not enough */
    CU_ASSERT_EQUAL(rc, AL_ERR_CRYPTO);
}

/* Audit commits checkpoint every CS_WAL_CHECKPOINT_FRAMES frames: the WAL
 * (which SQLite reuses from its start after a complete checkpoint) never
 * grows much past that, where SQLite's default of 1000 frames would let it
 * reach ~4 MiB here. */
static void test_wal_checkpoints(void)
{
    Airlock__V1__AuditRecord rec = AIRLOCK__V1__AUDIT_RECORD__INIT;
    char dir[128], path[300], grant[32];
    struct stat st;
    struct cs_store *s;
    off_t max = 0;

    newdir(dir, sizeof(dir));
    s = open_a(dir);
    snprintf(path, sizeof(path), "%s/credstore.db-wal", dir);
    rec.action = AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_RESOLVE;
    rec.caller = "spiffe://airlock/executor/e1";
    rec.principal = "acme/alice";
    rec.credential = "w/one";
    for (int i = 0; i < 300; i++) {
        for (int j = 0; j < 8; j++) {
            snprintf(grant, sizeof(grant), "grant-%06d-%d", i, j);
            rec.grant_id = grant;
            CU_ASSERT_EQUAL(cs_audit_append(cs_store_audit(s), &rec, NULL), 0);
        }
        CU_ASSERT_EQUAL(cs_audit_commit(cs_store_audit(s), NULL), 0);
        CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
        if (st.st_size > max)
            max = st.st_size;
    }
    /* header + frames of (24-byte frame header + 4 KiB page) */
    CU_ASSERT(max > 0);
    CU_ASSERT(max <= 32 + (off_t)(CS_WAL_CHECKPOINT_FRAMES + 64) * (24 + 4096));
    int64_t head = 0;
    CU_ASSERT_EQUAL(cs_audit_head(cs_store_audit(s), &head, NULL), 0);
    CU_ASSERT_EQUAL(head, 2400);
    cs_store_close(s);
}

static void test_backup_restore(void)
{
    Airlock__V1__AuditRecord rec = AIRLOCK__V1__AUDIT_RECORD__INIT;
    struct cs_audit_verify_result vr;
    char dir[128], dir2[128], bak[256], path[300], cmd[1200];
    struct stat st;
    int64_t seq = 0;
    struct cs_store *s;

    newdir(dir, sizeof(dir));
    newdir(dir2, sizeof(dir2));
    snprintf(bak, sizeof(bak), "%s/backup.db", base);
    s = open_a(dir);
    CU_ASSERT_EQUAL(put(s, "b/one", "before-1", T0), 0);
    CU_ASSERT_EQUAL(put(s, "b/two", "before-2", T0), 0);
    rec.action = AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_RESOLVE;
    rec.caller = "spiffe://airlock/executor/e1";
    rec.credential = "b/one";
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(cs_audit_append(cs_store_audit(s), &rec, NULL), 0);
    CU_ASSERT_EQUAL(cs_audit_commit(cs_store_audit(s), NULL), 0);
    CU_ASSERT_EQUAL(cs_store_backup(s, bak), 0);
    CU_ASSERT_EQUAL(cs_store_backup(s, bak), AL_ERR_EXISTS);
    CU_ASSERT_EQUAL(stat(bak, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    /* changes after the backup are not in it */
    CU_ASSERT_EQUAL(put(s, "b/three", "after-3", T0), 0);
    CU_ASSERT_EQUAL(rotate(s, "b/one", "after-1", T0 + 1, 0, 1), 0);
    CU_ASSERT_EQUAL(cs_audit_append(cs_store_audit(s), &rec, NULL), 0);
    CU_ASSERT_EQUAL(cs_audit_commit(cs_store_audit(s), NULL), 0);
    cs_store_close(s);

    /* restore into a fresh directory, as documented */
    mkdir(dir2, 0700);
    snprintf(cmd, sizeof(cmd), "cp %s %s/credstore.db && cp %s.audit.head %s/audit.head", bak, dir2,
             bak, dir2);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    s = open_a(dir2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NULL(cs_audit_problem(cs_store_audit(s)));
    CU_ASSERT_EQUAL(get(s, "b/one", 0, T0 + 2, "before-1", NULL), 0);
    CU_ASSERT_EQUAL(get(s, "b/two", 0, T0 + 2, "before-2", NULL), 0);
    CU_ASSERT_EQUAL(get(s, "b/three", 0, T0 + 2, NULL, NULL), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(cs_audit_verify(cs_store_audit(s), 0, 0, &vr), 0);
    CU_ASSERT_TRUE(vr.intact);
    CU_ASSERT_EQUAL(vr.head_seq, 5);
    /* the restored store keeps working */
    CU_ASSERT_EQUAL(cs_audit_append(cs_store_audit(s), &rec, NULL), 0);
    CU_ASSERT_EQUAL(cs_audit_commit(cs_store_audit(s), &seq), 0);
    CU_ASSERT_EQUAL(seq, 6);
    CU_ASSERT_EQUAL(put(s, "b/four", "restored", T0 + 3), 0);
    cs_store_close(s);
    /* restoring into the original directory without its newer head file is detected */
    snprintf(cmd, sizeof(cmd),
             "cp %s %s/credstore.db && rm -f %s/credstore.db-wal %s/credstore.db-shm", bak, dir,
             dir, dir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    s = open_a(dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NOT_NULL(cs_audit_problem(cs_store_audit(s)));
    cs_store_close(s);
    snprintf(path, sizeof(path), "%s.audit.head", bak);
    CU_ASSERT_EQUAL(access(path, F_OK), 0);
}

int main(void)
{
    uint8_t raw[CS_KEY_LEN];
    CU_pSuite s;
    unsigned failed;

    snprintf(base, sizeof(base), "/tmp/cs-store-XXXXXX");
    if (!mkdtemp(base))
        return 1;
    srandom((unsigned)getpid());
    memset(raw, 0xa1, sizeof(raw));
    if (cs_master_from_bytes(raw, &ka) < 0)
        return 1;
    memset(raw, 0xb2, sizeof(raw));
    if (cs_master_from_bytes(raw, &kb) < 0)
        return 1;
    policy.n_allowed_principals = 1;
    policy.allowed_principals = principals;
    policy.n_allowed_destinations = 1;
    policy.allowed_destinations = destinations;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("credstore_store", NULL, NULL);
    CU_add_test(s, "fresh database and reopen", test_fresh_and_reopen);
    CU_add_test(s, "wrong master key refused", test_wrong_master);
    CU_add_test(s, "no plaintext in db, wal, shm", test_no_plaintext_at_rest);
    CU_add_test(s, "rows edited in SQLite refused", test_row_tamper);
    CU_add_test(s, "rows edited while the store is open refused", test_row_tamper_while_open);
    CU_add_test(s, "read cache follows audit commits of another connection",
                test_cache_follows_audit_commits);
    CU_add_test(s, "another process opens the database meanwhile", test_second_process);
    CU_add_test(s, "grace expiry and sweep", test_grace_and_sweep);
    CU_add_test(s, "put/rotate semantics", test_put_semantics);
    CU_add_test(s, "delete", test_delete);
    CU_add_test(s, "list paging", test_paging);
    CU_add_test(s, "master key rotation", test_rotate_master);
    CU_add_test(s, "rotation refuses tampered rows", test_rotate_master_refuses_tampered);
    CU_add_test(s, "backup and restore", test_backup_restore);
    CU_add_test(s, "audit commits checkpoint the WAL", test_wal_checkpoints);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    cs_master_free(ka);
    cs_master_free(kb);
    if (failed == 0) {
        char cmd[96];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
        if (system(cmd) != 0)
            return 1;
    }
    return failed ? 1 : 0;
}
