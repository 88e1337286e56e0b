/*
 * instore: SQLite schema, prepared statements and every query of
 * airlock-intake; see instore.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "al_err.h"
#include "al_log.h"
#include "instore.h"
#include "inutil.h"

/* Columns of a job row, in the order row_to_job() reads them. */
#define JOB_COLS                                                                                   \
    "seq, id, principal, auth_method, key_id, pool, session_id, kind, idem_key, spec_hash, "       \
    "state, attempt, spent, max_attempts, created_ms, started_ms, finished_ms, updated_ms, "       \
    "last_seq, executor_id, instance_id, token, lease_expires_ms, push_seq, ran, "                 \
    "workspace_reset, grant_expires_ms, cancel_requested, cancel_reason, queue_deadline_ms, "      \
    "not_before_ms, fin_attempt, fin_state, fin_token, fin_executor, events_purged, spec, "        \
    "result, "                                                                                     \
    "queue_timeout_ms"

enum {
    ST_JOB_INSERT,
    ST_JOB_GET,
    ST_JOB_UPDATE,
    ST_EVENT_PUT,
    ST_EVENTS,
    ST_IDEM_GET,
    ST_IDEM_PUT,
    ST_IDEM_DEL,
    ST_SESSION_GET,
    ST_SESSION_PUT,
    ST_MIN_LEASE,
    ST_MIN_QUEUE,
    ST_MIN_BACKOFF,
    ST_DUE_LEASE,
    ST_DUE_QUEUE,
    ST_APIKEY_GET,
    N_ST
};

static const char *const sql[N_ST] = {
    [ST_JOB_INSERT] =
        "INSERT INTO jobs(id, principal, auth_method, key_id, pool, session_id, kind, idem_key, "
        "spec_hash, state, attempt, spent, max_attempts, created_ms, started_ms, finished_ms, "
        "updated_ms, last_seq, executor_id, instance_id, token, lease_expires_ms, push_seq, ran, "
        "workspace_reset, grant_expires_ms, cancel_requested, cancel_reason, queue_deadline_ms, "
        "not_before_ms, fin_attempt, fin_state, fin_token, fin_executor, events_purged, spec, "
        "result, queue_timeout_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
        "?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, "
        "?30, ?31, ?32, ?33, ?34, ?35, ?36, ?37, ?38)",
    [ST_JOB_GET] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1",
    [ST_JOB_UPDATE] =
        "UPDATE jobs SET state = ?2, attempt = ?3, spent = ?4, max_attempts = ?5, "
        "started_ms = ?6, finished_ms = ?7, updated_ms = ?8, last_seq = ?9, executor_id = ?10, "
        "instance_id = ?11, token = ?12, lease_expires_ms = ?13, push_seq = ?14, ran = ?15, "
        "workspace_reset = ?16, grant_expires_ms = ?17, cancel_requested = ?18, "
        "cancel_reason = ?19, queue_deadline_ms = ?20, not_before_ms = ?21, fin_attempt = ?22, "
        "fin_state = ?23, fin_token = ?24, fin_executor = ?25, events_purged = ?26, "
        "result = COALESCE(?27, result) WHERE id = ?1",
    [ST_EVENT_PUT] = "INSERT INTO events(job_id, seq, body) VALUES(?1, ?2, ?3)",
    [ST_EVENTS] = "SELECT seq, body FROM events WHERE job_id = ?1 AND seq > ?2 ORDER BY seq "
                  "LIMIT ?3",
    [ST_IDEM_GET] = "SELECT job_id, spec_hash FROM idempotency WHERE principal = ?1 AND key = ?2",
    [ST_IDEM_PUT] = "INSERT OR REPLACE INTO idempotency(principal, key, job_id, spec_hash, "
                    "created_ms) VALUES(?1, ?2, ?3, ?4, ?5)",
    [ST_IDEM_DEL] = "DELETE FROM idempotency WHERE principal = ?1 AND key = ?2",
    [ST_SESSION_GET] = "SELECT executor_id, instance_id FROM sessions WHERE principal = ?1 AND "
                       "session_id = ?2",
    [ST_SESSION_PUT] = "INSERT OR REPLACE INTO sessions(principal, session_id, executor_id, "
                       "instance_id, updated_ms) VALUES(?1, ?2, ?3, ?4, ?5)",
    [ST_MIN_LEASE] = "SELECT MIN(lease_expires_ms) FROM jobs WHERE state IN (2, 3)",
    [ST_MIN_QUEUE] = "SELECT MIN(queue_deadline_ms) FROM jobs WHERE state = 1",
    [ST_MIN_BACKOFF] = "SELECT MIN(not_before_ms) FROM jobs WHERE state = 1 AND not_before_ms > ?1",
    [ST_DUE_LEASE] = "SELECT id FROM jobs WHERE state IN (2, 3) AND lease_expires_ms <= ?1 "
                     "ORDER BY lease_expires_ms LIMIT ?2",
    [ST_DUE_QUEUE] = "SELECT id FROM jobs WHERE state = 1 AND queue_deadline_ms <= ?1 "
                     "ORDER BY queue_deadline_ms LIMIT ?2",
    [ST_APIKEY_GET] = "SELECT id, principal, scopes, hash, created_ms, expires_ms, revoked_ms, "
                      "description FROM api_keys WHERE id = ?1",
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS jobs("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
    " principal TEXT NOT NULL, auth_method INTEGER NOT NULL, key_id TEXT NOT NULL,"
    " pool TEXT NOT NULL, session_id TEXT NOT NULL, kind INTEGER NOT NULL,"
    " idem_key TEXT NOT NULL, spec_hash BLOB NOT NULL, state INTEGER NOT NULL,"
    " attempt INTEGER NOT NULL, spent INTEGER NOT NULL, max_attempts INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL, last_seq INTEGER NOT NULL, executor_id TEXT NOT NULL,"
    " instance_id TEXT NOT NULL, token BLOB, lease_expires_ms INTEGER NOT NULL,"
    " push_seq INTEGER NOT NULL, ran INTEGER NOT NULL, workspace_reset INTEGER NOT NULL,"
    " grant_expires_ms INTEGER NOT NULL, cancel_requested INTEGER NOT NULL,"
    " cancel_reason TEXT NOT NULL, queue_deadline_ms INTEGER NOT NULL,"
    " not_before_ms INTEGER NOT NULL, fin_attempt INTEGER NOT NULL, fin_state INTEGER NOT NULL,"
    " fin_token BLOB, fin_executor TEXT NOT NULL, events_purged INTEGER NOT NULL,"
    " spec BLOB NOT NULL, result BLOB, queue_timeout_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(pool, seq) WHERE state = 1;"
    "CREATE INDEX IF NOT EXISTS jobs_backoff ON jobs(not_before_ms) WHERE state = 1;"
    "CREATE INDEX IF NOT EXISTS jobs_qdeadline ON jobs(queue_deadline_ms) WHERE state = 1;"
    "CREATE INDEX IF NOT EXISTS jobs_lease ON jobs(lease_expires_ms) WHERE state IN (2, 3);"
    "CREATE INDEX IF NOT EXISTS jobs_holder ON jobs(executor_id, instance_id)"
    " WHERE state IN (2, 3);"
    "CREATE INDEX IF NOT EXISTS jobs_session ON jobs(principal, session_id, seq)"
    " WHERE state IN (1, 2, 3) AND session_id <> '';"
    "CREATE INDEX IF NOT EXISTS jobs_list ON jobs(principal, created_ms, id);"
    "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(finished_ms) WHERE state IN (4, 5, 6, 7);"
    "CREATE TABLE IF NOT EXISTS events(job_id TEXT NOT NULL, seq INTEGER NOT NULL,"
    " body BLOB NOT NULL, PRIMARY KEY(job_id, seq)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS idempotency(principal TEXT NOT NULL, key TEXT NOT NULL,"
    " job_id TEXT NOT NULL, spec_hash BLOB NOT NULL, created_ms INTEGER NOT NULL,"
    " PRIMARY KEY(principal, key)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS idem_created ON idempotency(created_ms);"
    "CREATE TABLE IF NOT EXISTS sessions(principal TEXT NOT NULL, session_id TEXT NOT NULL,"
    " executor_id TEXT NOT NULL, instance_id TEXT NOT NULL, updated_ms INTEGER NOT NULL,"
    " PRIMARY KEY(principal, session_id)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS api_keys(id TEXT PRIMARY KEY, principal TEXT NOT NULL,"
    " scopes INTEGER NOT NULL, hash BLOB NOT NULL, created_ms INTEGER NOT NULL,"
    " expires_ms INTEGER NOT NULL, revoked_ms INTEGER NOT NULL, description TEXT NOT NULL)"
    " WITHOUT ROWID;";

/* Statements whose text is built per call (the candidate query depends on
 * the executor's pools and kinds), kept prepared by text: every dispatch
 * runs one, and SQLite parses a statement far more slowly than it runs it. */
#define QCACHE_N 16

struct qcache_ent {
    char *sql;
    sqlite3_stmt *st;
    uint64_t used; /* last use, for eviction */
};

struct in_store {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *st[N_ST];
    int in_tx, savepoint;
    struct qcache_ent qc[QCACHE_N];
    uint64_t qc_clock;
};

/* A prepared statement for q, from the cache or newly prepared (evicting the
 * least recently used entry); reset, bindings cleared. NULL on error. */
static sqlite3_stmt *qcache_get(struct in_store *s, const char *q)
{
    struct qcache_ent *e = NULL, *victim = &s->qc[0];
    char *copy;

    for (int i = 0; i < QCACHE_N; i++) {
        if (s->qc[i].sql && strcmp(s->qc[i].sql, q) == 0) {
            e = &s->qc[i];
            break;
        }
        if (!s->qc[i].sql || (victim->sql && s->qc[i].used < victim->used))
            victim = &s->qc[i];
    }
    if (e) {
        sqlite3_reset(e->st);
        sqlite3_clear_bindings(e->st);
        e->used = ++s->qc_clock;
        return e->st;
    }
    copy = strdup(q);
    if (!copy)
        return NULL;
    sqlite3_finalize(victim->st);
    free(victim->sql);
    victim->sql = NULL;
    victim->st = NULL;
    if (sqlite3_prepare_v3(s->db, q, -1, SQLITE_PREPARE_PERSISTENT, &victim->st, NULL) !=
        SQLITE_OK) {
        sqlite3_finalize(victim->st);
        victim->st = NULL;
        free(copy);
        return NULL;
    }
    victim->sql = copy;
    victim->used = ++s->qc_clock;
    return victim->st;
}

static int db_err(struct in_store *s, int rc, const char *what)
{
    AL_LOG_ERROR("intake.store", "op=\"%s\" code=%d reason=\"%s\"", what, rc,
                 s && s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    if (rc == SQLITE_CONSTRAINT)
        return AL_ERR_EXISTS;
    if (rc == SQLITE_NOMEM)
        return AL_ERR_NOMEM;
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
        return AL_ERR_TIMEOUT;
    if (rc == SQLITE_FULL)
        return -ENOSPC;
    if (rc == SQLITE_IOERR || rc == SQLITE_CANTOPEN || rc == SQLITE_READONLY)
        return -EIO;
    return AL_ERR_INVAL;
}

static int exec(struct in_store *s, const char *q)
{
    int rc = sqlite3_exec(s->db, q, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : db_err(s, rc, q);
}

/* The prepared statement i, reset and with bindings cleared. */
static sqlite3_stmt *stmt(struct in_store *s, int i)
{
    if (!s->st[i] && sqlite3_prepare_v3(s->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                                        NULL) != SQLITE_OK) {
        db_err(s, SQLITE_ERROR, sql[i]);
        return NULL;
    }
    sqlite3_reset(s->st[i]);
    sqlite3_clear_bindings(s->st[i]);
    return s->st[i];
}

/* Steps a statement that returns no rows; resets it. */
static int step_done(struct in_store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc == SQLITE_CONSTRAINT)
        return AL_ERR_EXISTS;
    return db_err(s, rc, what);
}

static void copy_text(char *dst, size_t n, sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(dst, n, "%s", t ? (const char *)t : "");
}

static int copy_blob(uint8_t *dst, size_t n, sqlite3_stmt *st, int col)
{
    const void *b = sqlite3_column_blob(st, col);
    if (!b || (size_t)sqlite3_column_bytes(st, col) != n)
        return 0;
    memcpy(dst, b, n);
    return 1;
}

static const uint8_t *arena_blob(struct al_arena *a, sqlite3_stmt *st, int col, size_t *len)
{
    const void *b = sqlite3_column_blob(st, col);
    size_t n = (size_t)sqlite3_column_bytes(st, col);
    uint8_t *p;
    *len = 0;
    if (!b)
        return NULL;
    p = al_arena_alloc(a, n ? n : 1);
    if (!p)
        return NULL;
    memcpy(p, b, n);
    *len = n;
    return p;
}

static int row_to_job(sqlite3_stmt *st, struct al_arena *a, struct in_job *j)
{
    memset(j, 0, sizeof(*j));
    j->seq = sqlite3_column_int64(st, 0);
    copy_text(j->id, sizeof(j->id), st, 1);
    copy_text(j->principal, sizeof(j->principal), st, 2);
    j->auth_method = sqlite3_column_int(st, 3);
    copy_text(j->key_id, sizeof(j->key_id), st, 4);
    copy_text(j->pool, sizeof(j->pool), st, 5);
    copy_text(j->session_id, sizeof(j->session_id), st, 6);
    j->kind = sqlite3_column_int(st, 7);
    copy_text(j->idem_key, sizeof(j->idem_key), st, 8);
    copy_blob(j->spec_hash, sizeof(j->spec_hash), st, 9);
    j->state = sqlite3_column_int(st, 10);
    j->attempt = sqlite3_column_int(st, 11);
    j->spent = sqlite3_column_int(st, 12);
    j->max_attempts = sqlite3_column_int(st, 13);
    j->created_ms = sqlite3_column_int64(st, 14);
    j->started_ms = sqlite3_column_int64(st, 15);
    j->finished_ms = sqlite3_column_int64(st, 16);
    j->updated_ms = sqlite3_column_int64(st, 17);
    j->last_seq = sqlite3_column_int64(st, 18);
    copy_text(j->executor_id, sizeof(j->executor_id), st, 19);
    copy_text(j->instance_id, sizeof(j->instance_id), st, 20);
    j->has_token = copy_blob(j->token, sizeof(j->token), st, 21);
    j->lease_expires_ms = sqlite3_column_int64(st, 22);
    j->push_seq = sqlite3_column_int64(st, 23);
    j->ran = sqlite3_column_int(st, 24);
    j->workspace_reset = sqlite3_column_int(st, 25);
    j->grant_expires_ms = sqlite3_column_int64(st, 26);
    j->cancel_requested = sqlite3_column_int(st, 27);
    copy_text(j->cancel_reason, sizeof(j->cancel_reason), st, 28);
    j->queue_deadline_ms = sqlite3_column_int64(st, 29);
    j->not_before_ms = sqlite3_column_int64(st, 30);
    j->fin_attempt = sqlite3_column_int(st, 31);
    j->fin_state = sqlite3_column_int(st, 32);
    j->has_fin_token = copy_blob(j->fin_token, sizeof(j->fin_token), st, 33);
    copy_text(j->fin_executor, sizeof(j->fin_executor), st, 34);
    j->events_purged = sqlite3_column_int(st, 35);
    j->queue_timeout_ms = sqlite3_column_int64(st, 38);
    if (a) {
        j->spec = arena_blob(a, st, 36, &j->spec_len);
        if (!j->spec)
            return AL_ERR_NOMEM;
        if (sqlite3_column_type(st, 37) != SQLITE_NULL) {
            j->result = arena_blob(a, st, 37, &j->result_len);
            if (!j->result)
                return AL_ERR_NOMEM;
        }
    }
    return 0;
}

/* ---- open / close ---- */

static int make_dir(const char *dir)
{
    struct stat st;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -errno;
    if (stat(dir, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    if (st.st_mode & 077)
        AL_LOG_WARN("intake.data_dir",
                    "path=%s mode=%04o problem=\"group or others have access; "
                    "chmod 700\"",
                    dir, (unsigned)(st.st_mode & 07777));
    return 0;
}

static int pragmas(struct in_store *s)
{
    sqlite3_stmt *st = NULL;
    int rc, wal = 0;

    sqlite3_busy_timeout(s->db, IN_BUSY_TIMEOUT_MS);
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
    if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK)
        return db_err(s, SQLITE_ERROR, "journal_mode");
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        wal = strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return db_err(s, rc, "journal_mode");
    if (!wal) {
        AL_LOG_ERROR("intake.store", "problem=\"database refuses WAL mode\"");
        return AL_ERR_STATE;
    }
    return exec(s, "PRAGMA synchronous=FULL; PRAGMA cell_size_check=ON;");
}

static int meta_get_int(struct in_store *s, const char *k, int64_t *v)
{
    sqlite3_stmt *st = NULL;
    int rc;
    if (sqlite3_prepare_v2(s->db, "SELECT v FROM meta WHERE k = ?1", -1, &st, NULL) != SQLITE_OK)
        return db_err(s, SQLITE_ERROR, "meta");
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? AL_ERR_NOTFOUND : db_err(s, rc, "meta");
}

static int schema_init(struct in_store *s)
{
    uint8_t key[32];
    sqlite3_stmt *st = NULL;
    int64_t ver = 0;
    int rc;

    rc = exec(s, "BEGIN IMMEDIATE");
    if (rc < 0)
        return rc;
    rc = exec(s, "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID");
    if (rc == 0) {
        rc = meta_get_int(s, "schema_version", &ver);
        if (rc == 0 && ver > IN_SCHEMA_VERSION) {
            AL_LOG_ERROR("intake.store",
                         "problem=\"database schema version %lld is newer than "
                         "this intake (%d)\"",
                         (long long)ver, IN_SCHEMA_VERSION);
            rc = AL_ERR_CONFIG;
        } else if (rc == AL_ERR_NOTFOUND) {
            rc = exec(s, schema_sql);
            if (rc == 0 && (rc = in_random(key, sizeof(key))) == 0) {
                if (sqlite3_prepare_v2(s->db,
                                       "INSERT INTO meta(k, v) VALUES('schema_version', 1), "
                                       "('page_key', ?1)",
                                       -1, &st, NULL) != SQLITE_OK)
                    rc = db_err(s, SQLITE_ERROR, "meta");
                else {
                    sqlite3_bind_blob(st, 1, key, sizeof(key), SQLITE_STATIC);
                    rc = step_done(s, st, "meta insert");
                    sqlite3_finalize(st);
                }
            }
        }
    }
    if (rc == 0)
        return exec(s, "COMMIT");
    exec(s, "ROLLBACK");
    return rc;
}

int in_store_open(const char *dir, int create, struct in_store **out)
{
    struct in_store *s;
    int rc = 0, fd;

    *out = NULL;
    if (!dir || !dir[0])
        return AL_ERR_INVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return AL_ERR_NOMEM;
    if (asprintf(&s->path, "%s/%s", dir, IN_STORE_DB_FILE) < 0) {
        s->path = NULL;
        rc = AL_ERR_NOMEM;
    }
    if (rc == 0 && create)
        rc = make_dir(dir);
    if (rc == 0) {
        /* created 0600 before SQLite sees it; -wal and -shm inherit the mode */
        fd = open(s->path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0), 0600);
        rc = fd < 0 ? (errno == ENOENT ? AL_ERR_NOTFOUND : -errno) : 0;
        if (fd >= 0)
            close(fd);
    }
    if (rc == 0) {
        int src = sqlite3_open_v2(
            s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW,
            NULL);
        rc = src == SQLITE_OK ? 0 : db_err(s, src, "open database");
    }
    if (rc == 0)
        rc = pragmas(s);
    if (rc == 0)
        rc = schema_init(s);
    if (rc < 0) {
        in_store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void in_store_close(struct in_store *s)
{
    if (!s)
        return;
    if (s->in_tx && s->db)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    for (int i = 0; i < N_ST; i++)
        sqlite3_finalize(s->st[i]);
    for (int i = 0; i < QCACHE_N; i++) {
        sqlite3_finalize(s->qc[i].st);
        free(s->qc[i].sql);
    }
    sqlite3_close(s->db);
    free(s->path);
    free(s);
}

const char *in_store_path(const struct in_store *s)
{
    return s->path;
}

/* ---- transactions ---- */

int in_store_begin(struct in_store *s)
{
    if (s->in_tx)
        return 0;
    int rc = exec(s, "BEGIN IMMEDIATE");
    if (rc == 0)
        s->in_tx = 1;
    return rc;
}

int in_store_in_tx(const struct in_store *s)
{
    return s->in_tx;
}

int in_store_commit(struct in_store *s)
{
    if (!s->in_tx)
        return 0;
    int rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        int err = db_err(s, rc, "COMMIT");
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        s->in_tx = 0;
        return err;
    }
    s->in_tx = 0;
    return 0;
}

void in_store_rollback(struct in_store *s)
{
    if (!s->in_tx)
        return;
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->in_tx = 0;
}

int in_store_savepoint(struct in_store *s)
{
    int rc = in_store_begin(s);
    if (rc == 0)
        rc = exec(s, "SAVEPOINT req");
    return rc;
}

int in_store_release(struct in_store *s)
{
    return exec(s, "RELEASE req");
}

void in_store_rollback_savepoint(struct in_store *s)
{
    sqlite3_exec(s->db, "ROLLBACK TO req; RELEASE req", NULL, NULL, NULL);
}

/* ---- jobs ---- */

static void bind_token(sqlite3_stmt *st, int i, int has, const uint8_t *t)
{
    if (has)
        sqlite3_bind_blob(st, i, t, IN_TOKEN_LEN, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

int in_store_job_insert(struct in_store *s, struct in_job *j)
{
    sqlite3_stmt *st = stmt(s, ST_JOB_INSERT);
    int rc;
    if (!st)
        return AL_ERR_INVAL;
    if (!j->spec)
        return AL_ERR_INVAL;
    sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, j->principal, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, j->auth_method);
    sqlite3_bind_text(st, 4, j->key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, j->pool, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, j->session_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 7, j->kind);
    sqlite3_bind_text(st, 8, j->idem_key, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 9, j->spec_hash, sizeof(j->spec_hash), SQLITE_STATIC);
    sqlite3_bind_int(st, 10, j->state);
    sqlite3_bind_int(st, 11, j->attempt);
    sqlite3_bind_int(st, 12, j->spent);
    sqlite3_bind_int(st, 13, j->max_attempts);
    sqlite3_bind_int64(st, 14, j->created_ms);
    sqlite3_bind_int64(st, 15, j->started_ms);
    sqlite3_bind_int64(st, 16, j->finished_ms);
    sqlite3_bind_int64(st, 17, j->updated_ms);
    sqlite3_bind_int64(st, 18, j->last_seq);
    sqlite3_bind_text(st, 19, j->executor_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 20, j->instance_id, -1, SQLITE_STATIC);
    bind_token(st, 21, j->has_token, j->token);
    sqlite3_bind_int64(st, 22, j->lease_expires_ms);
    sqlite3_bind_int64(st, 23, j->push_seq);
    sqlite3_bind_int(st, 24, j->ran);
    sqlite3_bind_int(st, 25, j->workspace_reset);
    sqlite3_bind_int64(st, 26, j->grant_expires_ms);
    sqlite3_bind_int(st, 27, j->cancel_requested);
    sqlite3_bind_text(st, 28, j->cancel_reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 29, j->queue_deadline_ms);
    sqlite3_bind_int64(st, 30, j->not_before_ms);
    sqlite3_bind_int(st, 31, j->fin_attempt);
    sqlite3_bind_int(st, 32, j->fin_state);
    bind_token(st, 33, j->has_fin_token, j->fin_token);
    sqlite3_bind_text(st, 34, j->fin_executor, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 35, j->events_purged);
    sqlite3_bind_blob64(st, 36, j->spec_len ? (const void *)j->spec : "", j->spec_len,
                        SQLITE_STATIC);
    if (j->result)
        sqlite3_bind_blob64(st, 37, j->result_len ? (const void *)j->result : "", j->result_len,
                            SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 37);
    sqlite3_bind_int64(st, 38, j->queue_timeout_ms);
    rc = step_done(s, st, "job insert");
    if (rc == 0)
        j->seq = sqlite3_last_insert_rowid(s->db);
    return rc;
}

int in_store_job_get(struct in_store *s, const char *id, struct al_arena *a, struct in_job *j)
{
    sqlite3_stmt *st = stmt(s, ST_JOB_GET);
    int rc;
    if (!st)
        return AL_ERR_INVAL;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        rc = row_to_job(st, a, j);
    else
        rc = rc == SQLITE_DONE ? AL_ERR_NOTFOUND : db_err(s, rc, "job get");
    sqlite3_reset(st);
    return rc;
}

int in_store_job_update(struct in_store *s, const struct in_job *j)
{
    sqlite3_stmt *st = stmt(s, ST_JOB_UPDATE);
    int rc;
    if (!st)
        return AL_ERR_INVAL;
    sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, j->state);
    sqlite3_bind_int(st, 3, j->attempt);
    sqlite3_bind_int(st, 4, j->spent);
    sqlite3_bind_int(st, 5, j->max_attempts);
    sqlite3_bind_int64(st, 6, j->started_ms);
    sqlite3_bind_int64(st, 7, j->finished_ms);
    sqlite3_bind_int64(st, 8, j->updated_ms);
    sqlite3_bind_int64(st, 9, j->last_seq);
    sqlite3_bind_text(st, 10, j->executor_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 11, j->instance_id, -1, SQLITE_STATIC);
    bind_token(st, 12, j->has_token, j->token);
    sqlite3_bind_int64(st, 13, j->lease_expires_ms);
    sqlite3_bind_int64(st, 14, j->push_seq);
    sqlite3_bind_int(st, 15, j->ran);
    sqlite3_bind_int(st, 16, j->workspace_reset);
    sqlite3_bind_int64(st, 17, j->grant_expires_ms);
    sqlite3_bind_int(st, 18, j->cancel_requested);
    sqlite3_bind_text(st, 19, j->cancel_reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 20, j->queue_deadline_ms);
    sqlite3_bind_int64(st, 21, j->not_before_ms);
    sqlite3_bind_int(st, 22, j->fin_attempt);
    sqlite3_bind_int(st, 23, j->fin_state);
    bind_token(st, 24, j->has_fin_token, j->fin_token);
    sqlite3_bind_text(st, 25, j->fin_executor, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 26, j->events_purged);
    if (j->result)
        sqlite3_bind_blob64(st, 27, j->result_len ? (const void *)j->result : "", j->result_len,
                            SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 27);
    rc = step_done(s, st, "job update");
    if (rc == 0 && sqlite3_changes(s->db) != 1)
        rc = AL_ERR_NOTFOUND;
    return rc;
}

int in_store_event_put(struct in_store *s, const char *job_id, int64_t seq, const uint8_t *body,
                       size_t len)
{
    sqlite3_stmt *st = stmt(s, ST_EVENT_PUT);
    if (!st)
        return AL_ERR_INVAL;
    sqlite3_bind_text(st, 1, job_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, seq);
    sqlite3_bind_blob64(st, 3, len ? (const void *)body : "", len, SQLITE_STATIC);
    return step_done(s, st, "event put");
}

int in_store_events(struct in_store *s, const char *job_id, int64_t after, int limit,
                    int (*cb)(void *user, int64_t seq, const uint8_t *body, size_t len), void *user)
{
    sqlite3_stmt *st = stmt(s, ST_EVENTS);
    int rc, n = 0;
    if (!st)
        return AL_ERR_INVAL;
    sqlite3_bind_text(st, 1, job_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int(st, 3, limit);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        n++;
        if (cb(user, sqlite3_column_int64(st, 0), sqlite3_column_blob(st, 1),
               (size_t)sqlite3_column_bytes(st, 1)) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? n : db_err(s, rc, "events");
}

/* ---- idempotency and sessions ---- */

int in_store_idem_get(struct in_store *s, const char *principal, const char *key, char *job_id,
                      uint8_t hash[32])
{
    sqlite3_stmt *st = stmt(s, ST_IDEM_GET);
    int rc;
    if (!st)
        return AL_ERR_INVAL;
    sqlite3_bind_text(st, 1, principal, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        copy_text(job_id, IN_JOB_ID_LEN + 1, st, 0);
        copy_blob(hash, 32, st, 1);
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? AL_ERR_NOTFOUND : db_err(s, rc, "idempotency get");
    }
    sqlite3_reset(st);
    return rc;
}

int in_store_idem_put(struct in_store *s, const char *principal, const char *key,
                      const char *job_id, const uint8_t hash[32], int64_t now_ms)
{
    sqlite3_stmt *st = stmt(s, ST_IDEM_PUT);
    if (!st)
        return AL_ERR_INVAL;
    sqlite3_bind_text(st, 1, principal, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, job_id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, now_ms);
    return step_done(s, st, "idempotency put");
}

int in_store_idem_del(struct in_store *s, const char *principal, const char *key)
{
    sqlite3_stmt *st = stmt(s, ST_IDEM_DEL);
    if (!st)
        return AL_ERR_INVAL;
    sqlite3_bind_text(st, 1, principal, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    return step_done(s, st, "idempotency delete");
}

int in_store_session_get(struct in_store *s, const char *principal, const char *session,
                         char *executor_id, char *instance_id)
{
    sqlite3_stmt *st = stmt(s, ST_SESSION_GET);
    int rc;
    if (!st)
        return AL_ERR_INVAL;
    sqlite3_bind_text(st, 1, principal, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, session, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        copy_text(executor_id, AL_PKI_ID_MAX, st, 0);
        copy_text(instance_id, IN_INSTANCE_LEN + 1, st, 1);
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? AL_ERR_NOTFOUND : db_err(s, rc, "session get");
    }
    sqlite3_reset(st);
    return rc;
}

int in_store_session_put(struct in_store *s, const char *principal, const char *session,
                         const char *executor_id, const char *instance_id, int64_t now_ms)
{
    sqlite3_stmt *st = stmt(s, ST_SESSION_PUT);
    if (!st)
        return AL_ERR_INVAL;
    sqlite3_bind_text(st, 1, principal, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, session, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, executor_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, instance_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, now_ms);
    return step_done(s, st, "session put");
}

/* ---- scheduler queries ---- */

static int min_of(struct in_store *s, int i, int64_t bind, int64_t *v)
{
    sqlite3_stmt *st = stmt(s, i);
    int rc;
    *v = 0;
    if (!st)
        return AL_ERR_INVAL;
    if (sqlite3_bind_parameter_count(st) > 0)
        sqlite3_bind_int64(st, 1, bind);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        *v = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_err(s, rc, sql[i]);
}

int in_store_next_deadline(struct in_store *s, int64_t after_ms, int64_t *next)
{
    int64_t v[3];
    int rc;
    *next = 0;
    if ((rc = min_of(s, ST_MIN_LEASE, 0, &v[0])) < 0 ||
        (rc = min_of(s, ST_MIN_QUEUE, 0, &v[1])) < 0 ||
        (rc = min_of(s, ST_MIN_BACKOFF, after_ms, &v[2])) < 0)
        return rc;
    for (int i = 0; i < 3; i++)
        if (v[i] > 0 && (*next == 0 || v[i] < *next))
            *next = v[i];
    return 0;
}

int in_store_due(struct in_store *s, enum in_due what, int64_t now_ms,
                 char (*ids)[IN_JOB_ID_LEN + 1], int max, int *n)
{
    sqlite3_stmt *st = stmt(s, what == IN_DUE_LEASE ? ST_DUE_LEASE : ST_DUE_QUEUE);
    int rc;
    *n = 0;
    if (!st)
        return AL_ERR_INVAL;
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int(st, 2, max);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < max)
        copy_text(ids[(*n)++], IN_JOB_ID_LEN + 1, st, 0);
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_err(s, rc, "due");
}

int in_store_candidates(struct in_store *s, char *const *pools, size_t npools, const int *kinds,
                        size_t nkinds, int64_t now_ms, int64_t after, int max,
                        char (*ids)[IN_JOB_ID_LEN + 1], int64_t *seqs, int *n)
{
    char q[4096];
    size_t o;
    sqlite3_stmt *st = NULL;
    int rc, p = 1;

    *n = 0;
    if (npools == 0 || npools > 64 || nkinds > 16)
        return AL_ERR_INVAL;
    o = (size_t)snprintf(q, sizeof(q),
                         "SELECT id, seq FROM jobs WHERE state = 1 AND not_before_ms <= ?1 AND "
                         "seq > ?2 AND pool IN (");
    for (size_t i = 0; i < npools; i++)
        o += (size_t)snprintf(q + o, sizeof(q) - o, "%s?%zu", i ? ", " : "", i + 3);
    o += (size_t)snprintf(q + o, sizeof(q) - o, ")");
    if (nkinds) {
        o += (size_t)snprintf(q + o, sizeof(q) - o, " AND kind IN (");
        for (size_t i = 0; i < nkinds; i++)
            o += (size_t)snprintf(q + o, sizeof(q) - o, "%s%d", i ? ", " : "", kinds[i]);
        o += (size_t)snprintf(q + o, sizeof(q) - o, ")");
    }
    snprintf(q + o, sizeof(q) - o,
             " AND (session_id = '' OR seq = (SELECT MIN(j2.seq) FROM jobs j2 WHERE "
             "j2.principal = jobs.principal AND j2.session_id = jobs.session_id AND "
             "j2.state IN (1, 2, 3) AND j2.session_id <> '')) ORDER BY seq LIMIT %d",
             max);
    st = qcache_get(s, q);
    if (!st)
        return db_err(s, SQLITE_ERROR, "candidates");
    sqlite3_bind_int64(st, p++, now_ms);
    sqlite3_bind_int64(st, p++, after);
    for (size_t i = 0; i < npools; i++)
        sqlite3_bind_text(st, p++, pools[i], -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < max) {
        copy_text(ids[*n], IN_JOB_ID_LEN + 1, st, 0);
        seqs[*n] = sqlite3_column_int64(st, 1);
        (*n)++;
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_err(s, rc, "candidates");
}

int in_store_count_principals(struct in_store *s,
                              void (*cb)(void *user, const char *principal, const char *pool,
                                         int queued, int active),
                              void *user)
{
    sqlite3_stmt *st = NULL;
    int rc;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT principal, pool, SUM(state = 1), SUM(state IN (2, 3)) FROM jobs "
                           "WHERE state IN (1, 2, 3) GROUP BY principal, pool",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, SQLITE_ERROR, "count principals");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        cb(user, (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
           sqlite3_column_int(st, 2), sqlite3_column_int(st, 3));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_err(s, rc, "count principals");
}

int in_store_count_holders(struct in_store *s,
                           void (*cb)(void *user, const char *executor_id, const char *instance_id,
                                      int n),
                           void *user)
{
    sqlite3_stmt *st = NULL;
    int rc;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT executor_id, instance_id, COUNT(*) FROM jobs WHERE state IN "
                           "(2, 3) GROUP BY executor_id, instance_id",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, SQLITE_ERROR, "count holders");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        cb(user, (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
           sqlite3_column_int(st, 2));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_err(s, rc, "count holders");
}

int in_store_held_cancels(struct in_store *s, const char *executor_id, const char *instance_id,
                          void (*cb)(void *user, const char *job_id, int attempt,
                                     const char *reason),
                          void *user)
{
    sqlite3_stmt *st = NULL;
    int rc;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT id, attempt, cancel_reason FROM jobs WHERE state IN (2, 3) "
                           "AND executor_id = ?1 AND instance_id = ?2 AND cancel_requested = 1",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, SQLITE_ERROR, "held cancels");
    sqlite3_bind_text(st, 1, executor_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, instance_id, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        cb(user, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int(st, 1),
           (const char *)sqlite3_column_text(st, 2));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_err(s, rc, "held cancels");
}

int in_store_extend_leases(struct in_store *s, int64_t until_ms, int *n)
{
    sqlite3_stmt *st = NULL;
    int rc;
    *n = 0;
    if (sqlite3_prepare_v2(s->db,
                           "UPDATE jobs SET lease_expires_ms = MAX(lease_expires_ms, ?1) WHERE "
                           "state IN (2, 3)",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, SQLITE_ERROR, "extend leases");
    sqlite3_bind_int64(st, 1, until_ms);
    rc = step_done(s, st, "extend leases");
    if (rc == 0)
        *n = sqlite3_changes(s->db);
    sqlite3_finalize(st);
    return rc;
}

/* ---- List ---- */

int in_store_list(struct in_store *s, const struct in_list_query *q, struct al_arena *a,
                  int (*cb)(void *user, const struct in_job *j), void *user)
{
    char sq[2048];
    size_t o;
    sqlite3_stmt *st = NULL;
    struct in_job j;
    int rc, n = 0, p = 1;

    o = (size_t)snprintf(sq, sizeof(sq), "SELECT " JOB_COLS " FROM jobs WHERE principal = ?");
    if (q->states) {
        int first = 1;
        o += (size_t)snprintf(sq + o, sizeof(sq) - o, " AND state IN (");
        for (int i = 1; i < 8; i++)
            if (q->states & (1u << i)) {
                o += (size_t)snprintf(sq + o, sizeof(sq) - o, "%s%d", first ? "" : ", ", i);
                first = 0;
            }
        o += (size_t)snprintf(sq + o, sizeof(sq) - o, ")");
    }
    if (q->session_id && q->session_id[0])
        o += (size_t)snprintf(sq + o, sizeof(sq) - o, " AND session_id = ?");
    if (q->pool && q->pool[0])
        o += (size_t)snprintf(sq + o, sizeof(sq) - o, " AND pool = ?");
    if (q->created_after_ms > 0)
        o += (size_t)snprintf(sq + o, sizeof(sq) - o, " AND created_ms >= ?");
    if (q->created_before_ms > 0)
        o += (size_t)snprintf(sq + o, sizeof(sq) - o, " AND created_ms < ?");
    if (q->has_cursor)
        o += (size_t)snprintf(sq + o, sizeof(sq) - o,
                              " AND (created_ms < ? OR (created_ms = ? AND id < ?))");
    snprintf(sq + o, sizeof(sq) - o, " ORDER BY created_ms DESC, id DESC LIMIT %d", q->limit);
    if (sqlite3_prepare_v2(s->db, sq, -1, &st, NULL) != SQLITE_OK)
        return db_err(s, SQLITE_ERROR, "list");
    sqlite3_bind_text(st, p++, q->principal, -1, SQLITE_STATIC);
    if (q->session_id && q->session_id[0])
        sqlite3_bind_text(st, p++, q->session_id, -1, SQLITE_STATIC);
    if (q->pool && q->pool[0])
        sqlite3_bind_text(st, p++, q->pool, -1, SQLITE_STATIC);
    if (q->created_after_ms > 0)
        sqlite3_bind_int64(st, p++, q->created_after_ms);
    if (q->created_before_ms > 0)
        sqlite3_bind_int64(st, p++, q->created_before_ms);
    if (q->has_cursor) {
        sqlite3_bind_int64(st, p++, q->cursor_created_ms);
        sqlite3_bind_int64(st, p++, q->cursor_created_ms);
        sqlite3_bind_text(st, p++, q->cursor_id, -1, SQLITE_STATIC);
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int r = row_to_job(st, a, &j);
        if (r < 0) {
            sqlite3_finalize(st);
            return r;
        }
        n++;
        if (cb(user, &j) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? n : db_err(s, rc, "list");
}

/* ---- retention ---- */

static int run_int(struct in_store *s, const char *q, int64_t a1, int max, int *changes)
{
    sqlite3_stmt *st = NULL;
    int rc;
    if (sqlite3_prepare_v2(s->db, q, -1, &st, NULL) != SQLITE_OK)
        return db_err(s, SQLITE_ERROR, q);
    if (sqlite3_bind_parameter_count(st) >= 1)
        sqlite3_bind_int64(st, 1, a1);
    if (sqlite3_bind_parameter_count(st) >= 2)
        sqlite3_bind_int(st, 2, max);
    rc = step_done(s, st, q);
    if (rc == 0 && changes)
        *changes = sqlite3_changes(s->db);
    sqlite3_finalize(st);
    return rc;
}

int in_store_purge(struct in_store *s, int64_t jobs_before, int64_t events_before,
                   int64_t idem_before, int max, struct in_purge *p)
{
    int rc, n = 0;

    /* jobs: a scratch list of the ids first, then events, keys and rows */
    if ((rc = exec(s, "CREATE TEMP TABLE IF NOT EXISTS purge_ids(id TEXT PRIMARY KEY);"
                      "DELETE FROM temp.purge_ids")) < 0 ||
        (rc = run_int(s,
                      "INSERT INTO temp.purge_ids SELECT id FROM jobs WHERE state IN (4, 5, 6, "
                      "7) AND finished_ms < ?1 ORDER BY finished_ms LIMIT ?2",
                      jobs_before, max, &n)) < 0)
        return rc;
    if (n > 0) {
        int ev = 0;
        if ((rc = run_int(s, "DELETE FROM events WHERE job_id IN (SELECT id FROM temp.purge_ids)",
                          0, 0, &ev)) < 0 ||
            (rc = exec(s, "DELETE FROM idempotency WHERE job_id IN (SELECT id FROM "
                          "temp.purge_ids)")) < 0 ||
            (rc = exec(s, "DELETE FROM jobs WHERE id IN (SELECT id FROM temp.purge_ids)")) < 0)
            return rc;
        p->jobs += n;
        p->events += ev;
    }
    /* events of finished jobs kept longer than their events */
    if ((rc = exec(s, "DELETE FROM temp.purge_ids")) < 0 ||
        (rc = run_int(s,
                      "INSERT INTO temp.purge_ids SELECT id FROM jobs WHERE state IN (4, 5, 6, "
                      "7) AND finished_ms < ?1 AND events_purged = 0 ORDER BY finished_ms "
                      "LIMIT ?2",
                      events_before, max, &n)) < 0)
        return rc;
    if (n > 0) {
        int ev = 0;
        if ((rc = run_int(s, "DELETE FROM events WHERE job_id IN (SELECT id FROM temp.purge_ids)",
                          0, 0, &ev)) < 0 ||
            (rc = exec(s, "UPDATE jobs SET events_purged = 1 WHERE id IN (SELECT id FROM "
                          "temp.purge_ids)")) < 0)
            return rc;
        p->events += ev;
    }
    /* idempotency keys past their time whose job is finished or gone */
    if ((rc = run_int(s,
                      "DELETE FROM idempotency WHERE (principal, key) IN (SELECT i.principal, "
                      "i.key FROM idempotency i LEFT JOIN jobs j ON j.id = i.job_id WHERE "
                      "i.created_ms < ?1 AND (j.id IS NULL OR j.state IN (4, 5, 6, 7)) LIMIT ?2)",
                      idem_before, max, &n)) < 0)
        return rc;
    p->idempotency += n;
    /* sessions nobody uses any more */
    rc = run_int(s,
                 "DELETE FROM sessions WHERE (principal, session_id) IN (SELECT s.principal, "
                 "s.session_id FROM sessions s WHERE s.updated_ms < ?1 AND NOT EXISTS (SELECT 1 "
                 "FROM jobs j WHERE j.principal = s.principal AND j.session_id = s.session_id "
                 "AND j.state IN (1, 2, 3)) LIMIT ?2)",
                 jobs_before, max, &n);
    if (rc == 0)
        p->sessions += n;
    return rc;
}

/* ---- meta ---- */

int in_store_page_key(struct in_store *s, uint8_t key[32])
{
    sqlite3_stmt *st = NULL;
    int rc;
    if (sqlite3_prepare_v2(s->db, "SELECT v FROM meta WHERE k = 'page_key'", -1, &st, NULL) !=
        SQLITE_OK)
        return db_err(s, SQLITE_ERROR, "page key");
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        rc = copy_blob(key, 32, st, 0) ? 0 : AL_ERR_INVAL;
    else
        rc = rc == SQLITE_DONE ? AL_ERR_NOTFOUND : db_err(s, rc, "page key");
    sqlite3_finalize(st);
    return rc;
}

/* ---- API keys ---- */

int in_store_apikey_put(struct in_store *s, const struct in_apikey_row *r)
{
    sqlite3_stmt *st = NULL;
    int rc;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO api_keys(id, principal, scopes, hash, created_ms, "
                           "expires_ms, revoked_ms, description) VALUES(?1, ?2, ?3, ?4, ?5, ?6, "
                           "?7, ?8)",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, SQLITE_ERROR, "api key put");
    sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->principal, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, (int)r->scopes);
    sqlite3_bind_blob(st, 4, r->hash, sizeof(r->hash), SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, r->created_ms);
    sqlite3_bind_int64(st, 6, r->expires_ms);
    sqlite3_bind_int64(st, 7, r->revoked_ms);
    sqlite3_bind_text(st, 8, r->description, -1, SQLITE_STATIC);
    rc = step_done(s, st, "api key put");
    sqlite3_finalize(st);
    return rc;
}

static void row_to_key(sqlite3_stmt *st, struct in_apikey_row *r)
{
    memset(r, 0, sizeof(*r));
    copy_text(r->id, sizeof(r->id), st, 0);
    copy_text(r->principal, sizeof(r->principal), st, 1);
    r->scopes = (unsigned)sqlite3_column_int(st, 2);
    copy_blob(r->hash, sizeof(r->hash), st, 3);
    r->created_ms = sqlite3_column_int64(st, 4);
    r->expires_ms = sqlite3_column_int64(st, 5);
    r->revoked_ms = sqlite3_column_int64(st, 6);
    copy_text(r->description, sizeof(r->description), st, 7);
}

int in_store_apikey_get(struct in_store *s, const char *id, struct in_apikey_row *r)
{
    sqlite3_stmt *st = stmt(s, ST_APIKEY_GET);
    int rc;
    if (!st)
        return AL_ERR_INVAL;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        row_to_key(st, r);
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? AL_ERR_NOTFOUND : db_err(s, rc, "api key get");
    }
    sqlite3_reset(st);
    return rc;
}

int in_store_apikey_revoke(struct in_store *s, const char *id, int64_t now_ms)
{
    sqlite3_stmt *st = NULL;
    int rc;
    if (sqlite3_prepare_v2(s->db,
                           "UPDATE api_keys SET revoked_ms = CASE WHEN revoked_ms > 0 THEN "
                           "revoked_ms ELSE ?2 END WHERE id = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, SQLITE_ERROR, "api key revoke");
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_ms);
    rc = step_done(s, st, "api key revoke");
    if (rc == 0 && sqlite3_changes(s->db) == 0)
        rc = AL_ERR_NOTFOUND;
    sqlite3_finalize(st);
    return rc;
}

int in_store_apikey_list(struct in_store *s, int (*cb)(void *user, const struct in_apikey_row *r),
                         void *user)
{
    sqlite3_stmt *st = NULL;
    struct in_apikey_row r;
    int rc;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT id, principal, scopes, hash, created_ms, expires_ms, "
                           "revoked_ms, description FROM api_keys ORDER BY created_ms, id",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, SQLITE_ERROR, "api key list");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        row_to_key(st, &r);
        if (cb(user, &r) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_err(s, rc, "api key list");
}
