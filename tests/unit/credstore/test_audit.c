/* Unit tests for the credstore audit chain: group commit, verify, and the
 * detection of edited, deleted, reordered and truncated records; head file
 * handling; fail-closed commits; commits through a second connection; query
 * filters and paging; a field added since the first release (duration_us):
 * old hashes unchanged, the field hashed, old databases migrated. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <openssl/evp.h>
#include <sqlite3.h>

#include "al_err.h"
#include "store.h"

#define T0 1700000000000LL

static char base[64];
static int ndirs;
static struct cs_master *key;

static struct cs_store *open_dir(const char *dir, int busy_ms)
{
    struct cs_store_opts o = {
        .data_dir = dir, .keys = {.primary = key}, .busy_timeout_ms = busy_ms};
    struct cs_store *s = NULL;

    CU_ASSERT_EQUAL(cs_store_open(&o, &s), 0);
    return s;
}

static struct cs_store *fresh(char *dir, size_t n)
{
    snprintf(dir, n, "%s/d%d", base, ndirs++);
    return open_dir(dir, 0);
}

/* Appends records 1..n (committed in batches of `batch`). */
static void fill(struct cs_audit *a, int n, int batch)
{
    Airlock__V1__AuditRecord r = AIRLOCK__V1__AUDIT_RECORD__INIT;
    char grant[32], cred[32];
    int64_t first = -1, seq;
    size_t idx;

    cs_audit_head(a, &seq, NULL);
    for (int i = 0; i < n; i++) {
        snprintf(grant, sizeof(grant), "grant-%d", i);
        snprintf(cred, sizeof(cred), "cred/%d", i % 3);
        r.time_ms = T0 + i;
        r.action = i % 2 ? AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_RESOLVE
                         : AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_USE;
        r.decision = i % 5 ? AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW
                           : AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_DENY;
        r.caller = i % 4 ? "spiffe://airlock/executor/e1" : "spiffe://airlock/gateway/g1";
        r.issuer = "spiffe://airlock/intake/i0";
        r.principal = i % 2 ? "acme/alice" : "acme/bob";
        r.credential = cred;
        r.version = 1;
        r.destination = "api.example.com:443";
        r.grant_id = grant;
        r.reason = i % 5 ? "" : "holder mismatch";
        r.status = 200;
        r.request_bytes = i;
        CU_ASSERT_EQUAL_FATAL(cs_audit_append(a, &r, &idx), 0);
        if ((i + 1) % batch == 0 || i == n - 1) {
            CU_ASSERT_EQUAL_FATAL(cs_audit_commit(a, &first), 0);
            CU_ASSERT_EQUAL(first, seq + 1);
            seq += (int64_t)idx + 1;
        }
    }
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

/* First column of the first row of sql, as text, into out. */
static void raw_get(const char *dir, const char *sql, char *out, size_t n)
{
    char path[256];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;

    snprintf(path, sizeof(path), "%s/credstore.db", dir);
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_step(st), SQLITE_ROW);
    snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static struct cs_audit_verify_result verify(struct cs_store *s)
{
    struct cs_audit_verify_result r;

    CU_ASSERT_EQUAL(cs_audit_verify(cs_store_audit(s), 0, 0, &r), 0);
    return r;
}

static void test_commit_and_verify(void)
{
    struct cs_audit_verify_result r;
    uint8_t hash[CS_HASH_LEN], zero[CS_HASH_LEN] = {0};
    char dir[128], path[256];
    struct stat st;
    int64_t seq;
    struct cs_store *s = fresh(dir, sizeof(dir));
    struct cs_audit *a = cs_store_audit(s);

    r = verify(s); /* empty chain */
    CU_ASSERT_TRUE(r.intact);
    CU_ASSERT_EQUAL(r.head_seq, 0);
    CU_ASSERT_EQUAL(cs_audit_commit(a, &seq), 0); /* nothing queued */
    CU_ASSERT_EQUAL(seq, 0);
    fill(a, 100, 7);
    CU_ASSERT_EQUAL(cs_audit_pending(a), 0);
    CU_ASSERT_EQUAL(cs_audit_head(a, &seq, hash), 0);
    CU_ASSERT_EQUAL(seq, 100);
    CU_ASSERT_NOT_EQUAL(memcmp(hash, zero, CS_HASH_LEN), 0);
    r = verify(s);
    CU_ASSERT_TRUE(r.intact);
    CU_ASSERT_EQUAL(r.records_checked, 100);
    CU_ASSERT_EQUAL(r.head_seq, 100);
    CU_ASSERT_EQUAL(memcmp(r.head_hash, hash, CS_HASH_LEN), 0);
    CU_ASSERT_STRING_EQUAL(r.problem, "");
    /* ranges: the link into the range is checked from record from - 1 */
    CU_ASSERT_EQUAL(cs_audit_verify(a, 40, 60, &r), 0);
    CU_ASSERT_TRUE(r.intact);
    CU_ASSERT_EQUAL(r.records_checked, 21);
    CU_ASSERT_EQUAL(cs_audit_verify(a, 60, 40, &r), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(cs_audit_verify(a, 1, 101, &r), AL_ERR_NOTFOUND);
    snprintf(path, sizeof(path), "%s/audit.head", dir);
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    cs_store_close(s);
    /* the chain survives a reopen and continues */
    s = open_dir(dir, 0);
    a = cs_store_audit(s);
    CU_ASSERT_PTR_NULL(cs_audit_problem(a));
    CU_ASSERT_EQUAL(cs_audit_head(a, &seq, NULL), 0);
    CU_ASSERT_EQUAL(seq, 100);
    fill(a, 5, 5);
    r = verify(s);
    CU_ASSERT_TRUE(r.intact);
    CU_ASSERT_EQUAL(r.records_checked, 105);
    cs_store_close(s);
}

/* ---- duration_us, the first field added after the first release ---- */

static void enc_i64(uint8_t *b, size_t *n, int64_t v)
{
    for (int i = 7; i >= 0; i--)
        b[(*n)++] = (uint8_t)((uint64_t)v >> (8 * i));
}

static void enc_str(uint8_t *b, size_t *n, const char *s)
{
    uint32_t l = (uint32_t)strlen(s);
    for (int i = 3; i >= 0; i--)
        b[(*n)++] = (uint8_t)(l >> (8 * i));
    memcpy(b + *n, s, l);
    *n += l;
}

/* Record 1 of fill() in the first release's encoding (audit.h): the hash a
 * chain written before duration_us existed holds for it. */
static void first_release_hash(uint8_t out[CS_HASH_LEN])
{
    uint8_t b[1024], prev[CS_HASH_LEN] = {0};
    size_t n = 0;
    unsigned int ol = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();

    enc_str(b, &n, "airlock/v1/audit-record");
    enc_i64(b, &n, 1);  /* seq */
    enc_i64(b, &n, T0); /* time_ms */
    enc_i64(b, &n, AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_USE);
    enc_i64(b, &n, AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_DENY);
    enc_str(b, &n, "spiffe://airlock/gateway/g1"); /* caller */
    enc_str(b, &n, "spiffe://airlock/intake/i0");  /* issuer */
    enc_str(b, &n, "acme/bob");                    /* principal */
    enc_str(b, &n, "cred/0");                      /* credential */
    enc_i64(b, &n, 1);                             /* version */
    enc_str(b, &n, "api.example.com:443");         /* destination */
    enc_str(b, &n, "grant-0");                     /* grant_id */
    enc_str(b, &n, "");                            /* subject */
    enc_str(b, &n, "");                            /* scope */
    enc_str(b, &n, "holder mismatch");             /* reason */
    enc_str(b, &n, "");                            /* method */
    enc_str(b, &n, "");                            /* path */
    enc_i64(b, &n, 200);                           /* status */
    enc_i64(b, &n, 0);                             /* request_bytes */
    enc_i64(b, &n, 0);                             /* response_bytes */
    enc_i64(b, &n, 0);                             /* edge_time_ms */
    enc_str(b, &n, "");                            /* request_id */
    enc_str(b, &n, "");                            /* tool */
    enc_str(b, &n, "");                            /* batch_id */
    CU_ASSERT_FATAL(c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
                    EVP_DigestUpdate(c, prev, sizeof(prev)) == 1 &&
                    EVP_DigestUpdate(c, b, n) == 1 && EVP_DigestFinal_ex(c, out, &ol) == 1);
    EVP_MD_CTX_free(c);
}

static void test_duration_field(void)
{
    Airlock__V1__AuditRecord r = AIRLOCK__V1__AUDIT_RECORD__INIT;
    struct cs_audit_verify_result v;
    uint8_t want[CS_HASH_LEN];
    char dir[128], hex[2 * CS_HASH_LEN + 1], got[2 * CS_HASH_LEN + 1], val[32];
    int64_t first;
    size_t idx;
    struct cs_store *s = fresh(dir, sizeof(dir));
    struct cs_audit *a = cs_store_audit(s);

    /* a record without a duration hashes as it did before the field existed */
    fill(a, 5, 5);
    first_release_hash(want);
    for (int i = 0; i < CS_HASH_LEN; i++)
        snprintf(hex + 2 * i, 3, "%02X", want[i]);
    raw_get(dir, "SELECT hex(hash) FROM audit WHERE seq = 1", got, sizeof(got));
    CU_ASSERT_STRING_EQUAL(got, hex);

    /* a duration is stored, read back and hashed: editing it is detected */
    r.time_ms = T0 + 100;
    r.action = AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_USE;
    r.decision = AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW;
    r.caller = "spiffe://airlock/gateway/g1";
    r.credential = "cred/0";
    r.duration_us = 1234;
    CU_ASSERT_EQUAL_FATAL(cs_audit_append(a, &r, &idx), 0);
    CU_ASSERT_EQUAL_FATAL(cs_audit_commit(a, &first), 0);
    CU_ASSERT_EQUAL(first, 6);
    raw_get(dir, "SELECT duration_us FROM audit WHERE seq = 6", val, sizeof(val));
    CU_ASSERT_STRING_EQUAL(val, "1234");
    v = verify(s);
    CU_ASSERT_TRUE(v.intact);
    raw_sql(dir, "UPDATE audit SET duration_us = 1 WHERE seq = 6");
    v = verify(s);
    CU_ASSERT_FALSE(v.intact);
    CU_ASSERT_EQUAL(v.first_bad_seq, 6);
    raw_sql(dir, "UPDATE audit SET duration_us = 1234 WHERE seq = 6");
    v = verify(s);
    CU_ASSERT_TRUE(v.intact);
    cs_store_close(s);

    /* a database of the first release (no column): migrated at open, its
     * chain still verifies, and new records carry durations */
    s = fresh(dir, sizeof(dir));
    fill(cs_store_audit(s), 12, 4);
    cs_store_close(s);
    raw_sql(dir, "ALTER TABLE audit DROP COLUMN duration_us");
    s = open_dir(dir, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    v = verify(s);
    CU_ASSERT_TRUE(v.intact);
    CU_ASSERT_EQUAL(v.records_checked, 12);
    a = cs_store_audit(s);
    r.duration_us = 77;
    CU_ASSERT_EQUAL_FATAL(cs_audit_append(a, &r, &idx), 0);
    CU_ASSERT_EQUAL_FATAL(cs_audit_commit(a, &first), 0);
    v = verify(s);
    CU_ASSERT_TRUE(v.intact);
    CU_ASSERT_EQUAL(v.records_checked, 13);
    raw_get(dir, "SELECT duration_us FROM audit WHERE seq = 13", val, sizeof(val));
    CU_ASSERT_STRING_EQUAL(val, "77");
    cs_store_close(s);
}

static void test_edit_detected(void)
{
    struct cs_audit_verify_result r;
    char dir[128];
    struct cs_store *s = fresh(dir, sizeof(dir));

    fill(cs_store_audit(s), 20, 20);
    raw_sql(dir, "UPDATE audit SET decision = 1 WHERE seq = 11");
    r = verify(s);
    CU_ASSERT_FALSE(r.intact);
    CU_ASSERT_EQUAL(r.first_bad_seq, 11);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.problem, "hash mismatch"));
    /* an edit with the row's own hash recomputed is caught by the next link */
    raw_sql(dir, "UPDATE audit SET decision = 2 WHERE seq = 11;"
                 "UPDATE audit SET hash = zeroblob(32) WHERE seq = 15");
    r = verify(s);
    CU_ASSERT_EQUAL(r.first_bad_seq, 15);
    raw_sql(dir, "UPDATE audit SET reason = 'nothing to see' WHERE seq = 3");
    r = verify(s);
    CU_ASSERT_EQUAL(r.first_bad_seq, 3);
    cs_store_close(s);
}

static void test_delete_detected(void)
{
    struct cs_audit_verify_result r;
    char dir[128];
    struct cs_store *s = fresh(dir, sizeof(dir));

    fill(cs_store_audit(s), 20, 4);
    raw_sql(dir, "DELETE FROM audit WHERE seq = 9");
    r = verify(s);
    CU_ASSERT_FALSE(r.intact);
    CU_ASSERT_EQUAL(r.first_bad_seq, 9);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.problem, "missing"));
    CU_ASSERT_EQUAL(r.records_checked, 8);
    cs_store_close(s);
    /* the first record too */
    s = fresh(dir, sizeof(dir));
    fill(cs_store_audit(s), 5, 5);
    raw_sql(dir, "DELETE FROM audit WHERE seq = 1");
    r = verify(s);
    CU_ASSERT_EQUAL(r.first_bad_seq, 1);
    cs_store_close(s);
}

static void test_reorder_detected(void)
{
    struct cs_audit_verify_result r;
    char dir[128];
    struct cs_store *s = fresh(dir, sizeof(dir));

    fill(cs_store_audit(s), 10, 10);
    /* swap the whole contents (hashes included) of records 4 and 5 */
    raw_sql(dir, "UPDATE audit SET seq = -4 WHERE seq = 4;"
                 "UPDATE audit SET seq = 4 WHERE seq = 5;"
                 "UPDATE audit SET seq = 5 WHERE seq = -4");
    r = verify(s);
    CU_ASSERT_FALSE(r.intact);
    CU_ASSERT_EQUAL(r.first_bad_seq, 4);
    cs_store_close(s);
}

static void test_truncation_detected(void)
{
    Airlock__V1__AuditRecord rec = AIRLOCK__V1__AUDIT_RECORD__INIT;
    struct cs_audit_verify_result r;
    char dir[128];
    struct cs_store *s = fresh(dir, sizeof(dir));

    fill(cs_store_audit(s), 10, 10);
    raw_sql(dir, "DELETE FROM audit WHERE seq > 7");
    r = verify(s);
    CU_ASSERT_FALSE(r.intact);
    CU_ASSERT_EQUAL(r.first_bad_seq, 8);
    CU_ASSERT_EQUAL(r.head_seq, 10);
    /* no append on top of a truncated chain: fail closed */
    CU_ASSERT_EQUAL(cs_audit_append(cs_store_audit(s), &rec, NULL), 0);
    CU_ASSERT_EQUAL(cs_audit_commit(cs_store_audit(s), NULL), AL_ERR_CRYPTO);
    CU_ASSERT_PTR_NOT_NULL(cs_audit_problem(cs_store_audit(s)));
    CU_ASSERT_EQUAL(cs_audit_append(cs_store_audit(s), &rec, NULL), AL_ERR_CRYPTO);
    cs_store_close(s);
    /* and after a restart */
    s = open_dir(dir, 0);
    CU_ASSERT_PTR_NOT_NULL(cs_audit_problem(cs_store_audit(s)));
    r = verify(s);
    CU_ASSERT_EQUAL(r.first_bad_seq, 8);
    cs_store_close(s);
}

static void test_truncation_with_meta_rewind(void)
{
    struct cs_audit_verify_result r;
    char dir[128], old_head[512], sql[700];
    struct cs_store *s = fresh(dir, sizeof(dir));

    fill(cs_store_audit(s), 7, 7);
    raw_get(dir, "SELECT hex(v) FROM meta WHERE k = 'audit_head'", old_head, sizeof(old_head));
    fill(cs_store_audit(s), 3, 3);
    CU_ASSERT_TRUE(verify(s).intact);
    /* the attacker removes records 8..10 and puts back the (validly MACed) older head */
    snprintf(sql, sizeof(sql),
             "DELETE FROM audit WHERE seq > 7;"
             "UPDATE meta SET v = X'%s' WHERE k = 'audit_head'",
             old_head);
    raw_sql(dir, sql);
    r = verify(s);
    CU_ASSERT_FALSE(r.intact);
    CU_ASSERT_EQUAL(r.first_bad_seq, 8);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.problem, "head file"));
    cs_store_close(s);
    s = open_dir(dir, 0);
    CU_ASSERT_PTR_NOT_NULL(cs_audit_problem(cs_store_audit(s)));
    CU_ASSERT_EQUAL(cs_audit_commit(cs_store_audit(s), NULL), 0); /* nothing queued */
    Airlock__V1__AuditRecord rec = AIRLOCK__V1__AUDIT_RECORD__INIT;
    CU_ASSERT_EQUAL(cs_audit_append(cs_store_audit(s), &rec, NULL), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(cs_store_sweep(s, T0, "x", NULL), AL_ERR_CRYPTO); /* no changes either */
    cs_store_close(s);
}

static void copy_file(const char *from, const char *to)
{
    char buf[512];
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ssize_t n = read(in, buf, sizeof(buf));

    CU_ASSERT(n > 0);
    CU_ASSERT_EQUAL(write(out, buf, (size_t)n), n);
    close(in);
    close(out);
}

static void test_head_file_repair(void)
{
    struct cs_audit_verify_result r;
    char dir[128], head[256], saved[256];
    struct cs_store *s = fresh(dir, sizeof(dir));

    snprintf(head, sizeof(head), "%s/audit.head", dir);
    snprintf(saved, sizeof(saved), "%s/saved.head", dir);
    fill(cs_store_audit(s), 5, 5);
    copy_file(head, saved);
    fill(cs_store_audit(s), 5, 5);
    cs_store_close(s);
    /* a head file behind by whole commits (crash before its write): rewritten */
    copy_file(saved, head);
    s = open_dir(dir, 0);
    CU_ASSERT_PTR_NULL(cs_audit_problem(cs_store_audit(s)));
    r = verify(s);
    CU_ASSERT_TRUE(r.intact);
    cs_store_close(s);
    /* missing: rewritten */
    unlink(head);
    s = open_dir(dir, 0);
    CU_ASSERT_PTR_NULL(cs_audit_problem(cs_store_audit(s)));
    CU_ASSERT_EQUAL(access(head, F_OK), 0);
    cs_store_close(s);
    /* altered: broken */
    FILE *f = fopen(head, "r+");
    fseek(f, 40, SEEK_SET); /* inside the hash digits */
    int ch = fgetc(f);
    fseek(f, 40, SEEK_SET);
    fputc(ch == '0' ? '1' : '0', f); /* always a different digit */
    fclose(f);
    s = open_dir(dir, 0);
    CU_ASSERT_PTR_NOT_NULL(cs_audit_problem(cs_store_audit(s)));
    r = verify(s);
    CU_ASSERT_FALSE(r.intact);
    cs_store_close(s);
}

static void test_commit_failures(void)
{
    Airlock__V1__AuditRecord rec = AIRLOCK__V1__AUDIT_RECORD__INIT;
    struct cs_audit_verify_result r;
    char dir[128], head[256], path[256];
    sqlite3 *db = NULL;
    int64_t seq, first;
    struct cs_store *s;
    struct cs_audit *a;
    int rc;

    snprintf(dir, sizeof(dir), "%s/d%d", base, ndirs++);
    s = open_dir(dir, 50);
    a = cs_store_audit(s);
    fill(a, 3, 3);
    /* 1. the database is locked by another writer: nothing is written */
    snprintf(path, sizeof(path), "%s/credstore.db", dir);
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    CU_ASSERT_EQUAL(cs_audit_append(a, &rec, NULL), 0);
    CU_ASSERT_EQUAL(cs_audit_commit(a, &first), AL_ERR_TIMEOUT);
    CU_ASSERT_EQUAL(cs_audit_pending(a), 0); /* the waiting requests are denied */
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    cs_audit_head(a, &seq, NULL);
    CU_ASSERT_EQUAL(seq, 3);
    /* 2. the head file cannot be written (its path is a directory) */
    snprintf(head, sizeof(head), "%s/audit.head", dir);
    CU_ASSERT_EQUAL(unlink(head), 0);
    CU_ASSERT_EQUAL(mkdir(head, 0700), 0);
    CU_ASSERT_EQUAL(cs_audit_append(a, &rec, NULL), 0);
    rc = cs_audit_commit(a, &first);
    CU_ASSERT(rc < 0);
    CU_ASSERT_EQUAL(first, 4); /* the record is durable, the head file stale */
    cs_audit_head(a, &seq, NULL);
    CU_ASSERT_EQUAL(seq, 4);
    CU_ASSERT(cs_audit_commit(a, NULL) < 0); /* still failing: nothing queued, stale head */
    CU_ASSERT_EQUAL(rmdir(head), 0);
    CU_ASSERT_EQUAL(cs_audit_commit(a, NULL), 0); /* rewritten */
    CU_ASSERT_EQUAL(access(head, F_OK), 0);
    r = verify(s);
    CU_ASSERT_TRUE(r.intact);
    CU_ASSERT_EQUAL(r.head_seq, 4);
    /* 3. a store change fails closed while the audit write cannot happen */
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    CU_ASSERT_EQUAL(cs_store_sweep(s, T0, "x", NULL), AL_ERR_TIMEOUT);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    cs_store_close(s);
}

/* Records queued on one connection and committed through another (the
 * service's commit thread), interleaved with commits of the first one: the
 * chain stays one chain, and an edit by a third party is still caught by the
 * next commit on either connection. The head file is rewritten in place. */
static void test_commit_elsewhere(void)
{
    Airlock__V1__AuditRecord rec = AIRLOCK__V1__AUDIT_RECORD__INIT;
    struct cs_audit_batch b;
    struct cs_audit_verify_result r;
    char dir[128], head[256], sql[128];
    struct stat st1, st2;
    struct cs_store *s = fresh(dir, sizeof(dir)), *w = open_dir(dir, 0);
    struct cs_audit *a = cs_store_audit(s), *wa = cs_store_audit(w);
    int64_t first = 0, seq = 0;
    size_t idx = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    snprintf(head, sizeof(head), "%s/audit.head", dir);
    cs_audit_batch_init(&b);
    rec.caller = "spiffe://airlock/executor/e1";
    rec.credential = "cred/x";
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 4; i++)
            CU_ASSERT_EQUAL(cs_audit_append(a, &rec, &idx), 0);
        CU_ASSERT_EQUAL(idx, 3);
        CU_ASSERT_EQUAL(cs_audit_take(a, &b), 4);
        CU_ASSERT_EQUAL(cs_audit_pending(a), 0);
        CU_ASSERT_EQUAL(cs_audit_take(a, &b), 0); /* b not empty: nothing moved */
        CU_ASSERT_EQUAL(cs_audit_commit_batch(wa, &b, &first), 0);
        CU_ASSERT_EQUAL(first, 1 + 5 * round);
        CU_ASSERT_EQUAL(b.n, 0);
        if (round == 0)
            CU_ASSERT_EQUAL(stat(head, &st1), 0);
        /* and one record through the first connection itself */
        CU_ASSERT_EQUAL(cs_audit_append(a, &rec, NULL), 0);
        CU_ASSERT_EQUAL(cs_audit_commit(a, &first), 0);
        CU_ASSERT_EQUAL(first, 5 + 5 * round);
    }
    cs_audit_head(wa, &seq, NULL);
    CU_ASSERT_EQUAL(seq, 14); /* the writer knows its own last commit */
    CU_ASSERT_EQUAL(cs_audit_append(a, &rec, NULL), 0);
    CU_ASSERT_EQUAL(cs_audit_take(a, &b), 1);
    CU_ASSERT_EQUAL(cs_audit_commit_batch(wa, &b, &first), 0);
    CU_ASSERT_EQUAL(first, 16);
    CU_ASSERT_EQUAL(cs_audit_commit_batch(wa, &b, &first), 0); /* empty: nothing to do */
    CU_ASSERT_EQUAL(cs_audit_commit_batch(wa, &b, &first), 0);
    CU_ASSERT_EQUAL(cs_audit_append(a, &rec, NULL), 0);
    CU_ASSERT_EQUAL(cs_audit_take(a, &b), 1);
    CU_ASSERT_EQUAL(cs_audit_commit_batch(wa, &b, &first), 0);
    CU_ASSERT_EQUAL(first, 17);
    CU_ASSERT_EQUAL(stat(head, &st2), 0);
    CU_ASSERT_EQUAL(st1.st_ino, st2.st_ino); /* overwritten in place */
    r = verify(s);
    CU_ASSERT_TRUE(r.intact);
    CU_ASSERT_EQUAL(r.head_seq, 17);
    /* a third party removes the last record: the next commit through the
     * writer must look at the head again and refuse */
    snprintf(sql, sizeof(sql), "DELETE FROM audit WHERE seq = %d", 17);
    raw_sql(dir, sql);
    CU_ASSERT_EQUAL(cs_audit_append(a, &rec, NULL), 0);
    CU_ASSERT_EQUAL(cs_audit_take(a, &b), 1);
    CU_ASSERT_EQUAL(cs_audit_commit_batch(wa, &b, &first), AL_ERR_CRYPTO);
    CU_ASSERT_PTR_NOT_NULL(cs_audit_problem(wa));
    CU_ASSERT_EQUAL(b.n, 0);
    /* refused at once from now on; the problem can be handed to the other side */
    CU_ASSERT_EQUAL(cs_audit_append(a, &rec, NULL), 0);
    CU_ASSERT_EQUAL(cs_audit_take(a, &b), 1);
    CU_ASSERT_EQUAL(cs_audit_commit_batch(wa, &b, &first), AL_ERR_CRYPTO);
    cs_audit_set_problem(a, cs_audit_problem(wa));
    CU_ASSERT_PTR_NOT_NULL(cs_audit_problem(a));
    CU_ASSERT_EQUAL(cs_audit_append(a, &rec, NULL), AL_ERR_CRYPTO);
    cs_audit_batch_cleanup(&b);
    cs_store_close(w);
    cs_store_close(s);
}

static void test_limits_and_batches(void)
{
    Airlock__V1__AuditRecord rec = AIRLOCK__V1__AUDIT_RECORD__INIT;
    char dir[128], *big = malloc(CS_AUDIT_FIELD_MAX + 2);
    int64_t first = 0, last = 0;
    int32_t count = 0;
    struct cs_store *s = fresh(dir, sizeof(dir));
    struct cs_audit *a = cs_store_audit(s);

    memset(big, 'x', CS_AUDIT_FIELD_MAX + 1);
    big[CS_AUDIT_FIELD_MAX + 1] = '\0';
    rec.path = big;
    CU_ASSERT_EQUAL(cs_audit_append(a, &rec, NULL), AL_ERR_TOOBIG);
    big[CS_AUDIT_FIELD_MAX] = '\0';
    CU_ASSERT_EQUAL(cs_audit_append(a, &rec, NULL), 0);
    rec.path = "/v1/x";
    rec.caller = "spiffe://airlock/gateway/g1";
    rec.batch_id = "0123456789abcdef0123456789abcdef";
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(cs_audit_append(a, &rec, NULL), 0);
    CU_ASSERT_EQUAL(cs_audit_commit(a, NULL), 0);
    CU_ASSERT_EQUAL(cs_audit_find_batch(a, "spiffe://airlock/gateway/g1",
                                        "0123456789abcdef0123456789abcdef", 0, &first, &last,
                                        &count),
                    0);
    CU_ASSERT_EQUAL(first, 2);
    CU_ASSERT_EQUAL(last, 4);
    CU_ASSERT_EQUAL(count, 3);
    CU_ASSERT_EQUAL(cs_audit_find_batch(a, "spiffe://airlock/gateway/g2",
                                        "0123456789abcdef0123456789abcdef", 0, NULL, NULL, NULL),
                    AL_ERR_NOTFOUND);
    CU_ASSERT_TRUE(verify(s).intact);
    free(big);
    cs_store_close(s);
}

static void test_query(void)
{
    Airlock__V1__QueryAuditRequest q = AIRLOCK__V1__QUERY_AUDIT_REQUEST__INIT;
    Airlock__V1__PageRequest page = AIRLOCK__V1__PAGE_REQUEST__INIT;
    Airlock__V1__QueryAuditResponse *resp = NULL;
    char dir[128], token[64];
    struct al_arena ar;
    int64_t last = 0;
    int total = 0, pages = 0;
    struct cs_store *s = fresh(dir, sizeof(dir));
    struct cs_audit *a = cs_store_audit(s);

    fill(a, 60, 60);
    al_arena_init(&ar, 0);
    CU_ASSERT_EQUAL(cs_audit_query(a, &q, &ar, &resp), 0);
    CU_ASSERT_EQUAL(resp->n_records, 50); /* default page */
    CU_ASSERT_EQUAL(resp->head_seq, 60);
    CU_ASSERT_EQUAL(resp->records[0]->seq, 1);
    CU_ASSERT_EQUAL(resp->records[0]->hash.len, CS_HASH_LEN);
    CU_ASSERT_STRING_EQUAL(resp->records[0]->grant_id, "grant-0");
    CU_ASSERT_NOT_EQUAL(resp->page->next_page_token[0], '\0');
    /* filters: credential cred/1 (i % 3 == 1) and principal alice (odd i): i = 1, 7, 13 ... */
    q.credential = "cred/1";
    q.principal = "acme/alice";
    q.page = &page;
    page.page_size = 4;
    do {
        CU_ASSERT_EQUAL_FATAL(cs_audit_query(a, &q, &ar, &resp), 0);
        for (size_t i = 0; i < resp->n_records; i++) {
            CU_ASSERT(resp->records[i]->seq > last);
            CU_ASSERT_EQUAL((resp->records[i]->seq - 1) % 6, 1);
            CU_ASSERT_STRING_EQUAL(resp->records[i]->credential, "cred/1");
            last = resp->records[i]->seq;
            total++;
        }
        pages++;
        snprintf(token, sizeof(token), "%s", resp->page->next_page_token);
        page.page_token = token;
    } while (token[0] && pages < 20);
    CU_ASSERT_EQUAL(total, 10);
    CU_ASSERT_EQUAL(pages, 3);
    /* a token used with other filters is refused */
    page.page_token = "";
    CU_ASSERT_EQUAL(cs_audit_query(a, &q, &ar, &resp), 0);
    snprintf(token, sizeof(token), "%s", resp->page->next_page_token);
    page.page_token = token;
    q.principal = "acme/bob";
    CU_ASSERT_EQUAL(cs_audit_query(a, &q, &ar, &resp), AL_ERR_INVAL);
    page.page_token = "garbage";
    CU_ASSERT_EQUAL(cs_audit_query(a, &q, &ar, &resp), AL_ERR_INVAL);
    /* time range, grant, decision, caller, after_seq */
    airlock__v1__query_audit_request__init(&q);
    q.from_ms = T0 + 10;
    q.to_ms = T0 + 20;
    CU_ASSERT_EQUAL(cs_audit_query(a, &q, &ar, &resp), 0);
    CU_ASSERT_EQUAL(resp->n_records, 10);
    airlock__v1__query_audit_request__init(&q);
    q.grant_id = "grant-42";
    CU_ASSERT_EQUAL(cs_audit_query(a, &q, &ar, &resp), 0);
    CU_ASSERT_EQUAL(resp->n_records, 1);
    CU_ASSERT_EQUAL(resp->records[0]->seq, 43);
    airlock__v1__query_audit_request__init(&q);
    q.decision = AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_DENY;
    q.caller = "spiffe://airlock/gateway/g1"; /* i % 4 == 0 and i % 5 == 0: i = 0, 20, 40 */
    CU_ASSERT_EQUAL(cs_audit_query(a, &q, &ar, &resp), 0);
    CU_ASSERT_EQUAL(resp->n_records, 3);
    CU_ASSERT_STRING_EQUAL(resp->records[1]->reason, "holder mismatch");
    airlock__v1__query_audit_request__init(&q);
    q.after_seq = 55;
    CU_ASSERT_EQUAL(cs_audit_query(a, &q, &ar, &resp), 0);
    CU_ASSERT_EQUAL(resp->n_records, 5);
    CU_ASSERT_STRING_EQUAL(resp->page->next_page_token, "");
    al_arena_cleanup(&ar);
    cs_store_close(s);
}

/* A store change and its audit record commit together. */
static void test_change_with_record(void)
{
    Airlock__V1__AuditRecord rec = AIRLOCK__V1__AUDIT_RECORD__INIT;
    Airlock__V1__PutCredentialRequest put = AIRLOCK__V1__PUT_CREDENTIAL_REQUEST__INIT;
    Airlock__V1__BindingPolicy pol = AIRLOCK__V1__BINDING_POLICY__INIT;
    struct cs_change chg = {.actor = "spiffe://airlock/admin/ops", .now_ms = T0, .audit = &rec};
    Airlock__V1__QueryAuditRequest q = AIRLOCK__V1__QUERY_AUDIT_REQUEST__INIT;
    Airlock__V1__QueryAuditResponse *resp = NULL;
    struct al_arena ar;
    char dir[128];
    struct cs_store *s = fresh(dir, sizeof(dir));

    rec.action = AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_PUT;
    rec.caller = "spiffe://airlock/admin/ops";
    put.name = "with/record";
    put.type = AIRLOCK__V1__CREDENTIAL_TYPE__CREDENTIAL_TYPE_BEARER_TOKEN;
    put.policy = &pol;
    put.value.data = (uint8_t *)"secret-in-record-test";
    put.value.len = strlen("secret-in-record-test");
    CU_ASSERT_EQUAL(cs_store_put(s, &put, &chg, NULL, NULL), 0);
    CU_ASSERT_EQUAL(chg.audit_seq, 1);
    put.create_only = 1; /* refused: rolled back, no record */
    CU_ASSERT_EQUAL(cs_store_put(s, &put, &chg, NULL, NULL), AL_ERR_EXISTS);
    CU_ASSERT_EQUAL(chg.audit_seq, 0);
    al_arena_init(&ar, 0);
    CU_ASSERT_EQUAL(cs_audit_query(cs_store_audit(s), &q, &ar, &resp), 0);
    CU_ASSERT_EQUAL(resp->n_records, 1);
    CU_ASSERT_STRING_EQUAL(resp->records[0]->credential, "with/record");
    CU_ASSERT_EQUAL(resp->records[0]->version, 1);
    CU_ASSERT_EQUAL(resp->records[0]->decision, AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW);
    CU_ASSERT_EQUAL(resp->records[0]->time_ms, T0);
    al_arena_cleanup(&ar);
    CU_ASSERT_TRUE(verify(s).intact);
    cs_store_close(s);
}

int main(void)
{
    uint8_t raw[CS_KEY_LEN];
    CU_pSuite s;
    unsigned failed;

    snprintf(base, sizeof(base), "/tmp/cs-audit-XXXXXX");
    if (!mkdtemp(base))
        return 1;
    memset(raw, 0x5c, sizeof(raw));
    if (cs_master_from_bytes(raw, &key) < 0)
        return 1;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("credstore_audit", NULL, NULL);
    CU_add_test(s, "group commit and verify", test_commit_and_verify);
    CU_add_test(s, "edited record detected", test_edit_detected);
    CU_add_test(s, "duration_us: old hashes kept, new field hashed, migration",
                test_duration_field);
    CU_add_test(s, "deleted record detected", test_delete_detected);
    CU_add_test(s, "reordered records detected", test_reorder_detected);
    CU_add_test(s, "truncation detected", test_truncation_detected);
    CU_add_test(s, "truncation with meta rewound detected", test_truncation_with_meta_rewind);
    CU_add_test(s, "head file repair and tamper", test_head_file_repair);
    CU_add_test(s, "commit failures fail closed", test_commit_failures);
    CU_add_test(s, "commit through another connection", test_commit_elsewhere);
    CU_add_test(s, "field limits and batch lookup", test_limits_and_batches);
    CU_add_test(s, "query filters and paging", test_query);
    CU_add_test(s, "store change with its record", test_change_with_record);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    cs_master_free(key);
    if (failed == 0) {
        char cmd[96];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
        if (system(cmd) != 0)
            return 1;
    }
    return failed ? 1 : 0;
}
