/*
 * audit: the hash-chained audit log of the credential store, with its MACed
 * head in meta and in the head file. See audit.h for the format, the checks
 * and the write protocol.
 *
 * Every column of a record is described once, in FIELDS[] below; the insert
 * and select statements, the canonical encoding, the deep copy of queued
 * records and the reading into AuditRecord messages all walk that table, so a
 * field cannot be stored without also being hashed. Fields added after the
 * first release are "optional" in the encoding: appended after the others,
 * tagged with their column name, and only when non-zero, so records written
 * before the field existed (0 in the column the migration adds) keep their
 * hashes and old chains still verify.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "al_base64.h"
#include "al_err.h"
#include "al_log.h"
#include "audit.h"

typedef Airlock__V1__AuditRecord rec_t;

enum fkind { F_I64, F_I32, F_ENUM, F_STR };

struct field {
    const char *col;
    enum fkind kind;
    size_t off;
    int opt; /* encoded only when non-zero, after the others (F_I64 only) */
};

/* Column order = encoding order. seq, prev_hash and hash are handled apart. */
static const struct field FIELDS[] = {
    {"time_ms", F_I64, offsetof(rec_t, time_ms)},
    {"action", F_ENUM, offsetof(rec_t, action)},
    {"decision", F_ENUM, offsetof(rec_t, decision)},
    {"caller", F_STR, offsetof(rec_t, caller)},
    {"issuer", F_STR, offsetof(rec_t, issuer)},
    {"principal", F_STR, offsetof(rec_t, principal)},
    {"credential", F_STR, offsetof(rec_t, credential)},
    {"version", F_I32, offsetof(rec_t, version)},
    {"destination", F_STR, offsetof(rec_t, destination)},
    {"grant_id", F_STR, offsetof(rec_t, grant_id)},
    {"subject", F_STR, offsetof(rec_t, subject)},
    {"scope", F_STR, offsetof(rec_t, scope)},
    {"reason", F_STR, offsetof(rec_t, reason)},
    {"method", F_STR, offsetof(rec_t, method)},
    {"path", F_STR, offsetof(rec_t, path)},
    {"status", F_I32, offsetof(rec_t, status)},
    {"request_bytes", F_I64, offsetof(rec_t, request_bytes)},
    {"response_bytes", F_I64, offsetof(rec_t, response_bytes)},
    {"edge_time_ms", F_I64, offsetof(rec_t, edge_time_ms)},
    {"request_id", F_STR, offsetof(rec_t, request_id)},
    {"tool", F_STR, offsetof(rec_t, tool)},
    {"batch_id", F_STR, offsetof(rec_t, batch_id)},
    {"duration_us", F_I64, offsetof(rec_t, duration_us), 1},
};
#define NFIELDS (sizeof(FIELDS) / sizeof(FIELDS[0]))
/* Result columns of select_sql: seq, FIELDS..., prev_hash, hash. */
#define COL_PREV (1 + (int)NFIELDS)
#define COL_HASH (2 + (int)NFIELDS)

#define HEADREC_LEN (8 + CS_HASH_LEN + CS_KEY_ID_LEN + CS_MAC_LEN)

/* Statements every commit runs, prepared once per connection (SQLite parses
 * a statement far more slowly than it runs these). */
enum ast { A_BEGIN, A_COMMIT, A_DATA_VERSION, A_LAST_ROW, A_META_GET, A_META_PUT, N_AST };

static const char *const ASQL[N_AST] = {
    [A_BEGIN] = "BEGIN IMMEDIATE",
    [A_COMMIT] = "COMMIT",
    [A_DATA_VERSION] = "PRAGMA data_version",
    [A_LAST_ROW] = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
    [A_META_GET] = "SELECT v FROM meta WHERE k = 'audit_head'",
    /* an update in place once the row exists (INSERT OR REPLACE would delete
     * and re-insert it, rewriting the key's index page on every commit) */
    [A_META_PUT] = ("INSERT INTO meta(k, v) VALUES('audit_head', ?)"
                    " ON CONFLICT(k) DO UPDATE SET v = excluded.v"),
};

struct cs_audit {
    sqlite3 *db; /* borrowed from the store */
    struct cs_keyring keys;
    const struct cs_master **prev; /* copy of keys.previous */
    char *dir;
    char *head_path;
    int lock_fd;

    rec_t **q; /* queued records, each one malloc block */
    size_t nq, qcap;

    struct cs_audit_headrec head; /* last committed head known here */
    int head_file_stale;
    /* The head file as this object last wrote it, kept open for the next
     * write in place (see write_head_file); -1 when there is none. */
    int head_fd;
    size_t head_len;
    dev_t head_dev;
    ino_t head_ino;
    char problem[CS_AUDIT_PROBLEM_MAX]; /* non-empty: chain broken */

    /* the write in progress (cs_audit_begin .. cs_audit_end) */
    int in_txn;
    int touched;
    int64_t inserted;
    struct cs_audit_headrec txn;

    /* The database head was checked (MAC, last record) inside a write
     * transaction while PRAGMA data_version read dv; as long as it still does,
     * no other connection has committed since, and head is the database head.
     * Our own commits do not change data_version. */
    int head_checked;
    int64_t dv;

    char *insert_sql;
    char *select_sql; /* "SELECT seq, <fields>, prev_hash, hash FROM audit" */
    sqlite3_stmt *ins;
    sqlite3_stmt *st[N_AST];

    void (*observe)(void *arg, int phase); /* cs_audit_set_txn_observer */
    void *observe_arg;
    int observing; /* the transaction in progress is commit_recs' (audit only) */
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- SQLite helpers ---- */

int cs_sqlite_err(sqlite3 *db, int rc, const char *what)
{
    int code;

    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        code = AL_ERR_TIMEOUT;
        break;
    case SQLITE_NOMEM:
        code = AL_ERR_NOMEM;
        break;
    case SQLITE_FULL:
        code = -ENOSPC;
        break;
    case SQLITE_READONLY:
        code = -EROFS;
        break;
    case SQLITE_CANTOPEN:
        code = -ENOENT;
        break;
    case SQLITE_CONSTRAINT:
        code = AL_ERR_EXISTS;
        break;
    case SQLITE_TOOBIG:
        code = AL_ERR_TOOBIG;
        break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        code = AL_ERR_STATE;
        break;
    default:
        code = -EIO;
        break;
    }
    AL_LOG_ERROR("credstore.sqlite", "op=%s rc=%d msg=\"%s\"", what, rc,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    return code;
}

static int exec(sqlite3 *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

    return rc == SQLITE_OK ? 0 : cs_sqlite_err(db, rc, sql);
}

/* Rolls back the open transaction, if any (a failed COMMIT may have ended it). */
static void rollback(sqlite3 *db)
{
    if (!sqlite3_get_autocommit(db))
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
    int rc = sqlite3_prepare_v2(db, sql, -1, st, NULL);

    return rc == SQLITE_OK ? 0 : cs_sqlite_err(db, rc, "prepare");
}

/* The cached statement id (prepared on first use), reset; NULL if it does not prepare. */
static sqlite3_stmt *ast(struct cs_audit *a, enum ast id)
{
    if (!a->st[id] && sqlite3_prepare_v3(a->db, ASQL[id], -1, SQLITE_PREPARE_PERSISTENT, &a->st[id],
                                         NULL) != SQLITE_OK) {
        cs_sqlite_err(a->db, SQLITE_ERROR, ASQL[id]);
        a->st[id] = NULL;
    }
    return a->st[id];
}

/* Runs a cached statement that returns no rows (BEGIN, COMMIT). */
static int ast_exec(struct cs_audit *a, enum ast id)
{
    sqlite3_stmt *st = ast(a, id);
    int rc;

    if (!st)
        return -EIO;
    rc = sqlite3_step(st);
    rc = rc == SQLITE_DONE ? 0 : cs_sqlite_err(a->db, rc, ASQL[id]);
    sqlite3_reset(st);
    return rc;
}

/* PRAGMA data_version of this connection into *v. */
static int data_version(struct cs_audit *a, int64_t *v)
{
    sqlite3_stmt *st = ast(a, A_DATA_VERSION);
    int rc;

    if (!st)
        return -EIO;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *v = sqlite3_column_int64(st, 0);
        rc = 0;
    } else {
        rc = cs_sqlite_err(a->db, rc, "data_version");
    }
    sqlite3_reset(st);
    return rc;
}

/* ---- schema and statements ---- */

int cs_audit_schema(sqlite3 *db)
{
    static const char sql[] =
        "CREATE TABLE IF NOT EXISTS audit("
        " seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, action INTEGER NOT NULL,"
        " decision INTEGER NOT NULL, caller TEXT NOT NULL, issuer TEXT NOT NULL,"
        " principal TEXT NOT NULL, credential TEXT NOT NULL, version INTEGER NOT NULL,"
        " destination TEXT NOT NULL, grant_id TEXT NOT NULL, subject TEXT NOT NULL,"
        " scope TEXT NOT NULL, reason TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL,"
        " status INTEGER NOT NULL, request_bytes INTEGER NOT NULL,"
        " response_bytes INTEGER NOT NULL, edge_time_ms INTEGER NOT NULL,"
        " request_id TEXT NOT NULL, tool TEXT NOT NULL, batch_id TEXT NOT NULL,"
        " prev_hash BLOB NOT NULL, hash BLOB NOT NULL,"
        " duration_us INTEGER NOT NULL DEFAULT 0);"
        "CREATE INDEX IF NOT EXISTS audit_credential ON audit(credential);"
        "CREATE INDEX IF NOT EXISTS audit_principal ON audit(principal);"
        "CREATE INDEX IF NOT EXISTS audit_grant ON audit(grant_id);"
        "CREATE INDEX IF NOT EXISTS audit_time ON audit(time_ms);"
        "CREATE INDEX IF NOT EXISTS audit_batch ON audit(batch_id, caller)"
        " WHERE batch_id != '';";

    return exec(db, sql);
}

int cs_audit_migrate(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int have =
        sqlite3_prepare_v2(db, "SELECT duration_us FROM audit LIMIT 0", -1, &st, NULL) == SQLITE_OK;

    sqlite3_finalize(st);
    if (have)
        return 0;
    AL_LOG_INFO("credstore.migrate", "change=\"audit.duration_us added (0 for earlier records)\"");
    return exec(db, "ALTER TABLE audit ADD COLUMN duration_us INTEGER NOT NULL DEFAULT 0");
}

/* Builds insert_sql and select_sql from FIELDS. */
static int build_sql(struct cs_audit *a)
{
    char cols[1024] = "seq", marks[256] = "?";
    size_t cl = strlen(cols), ml = strlen(marks);

    for (size_t i = 0; i < NFIELDS; i++) {
        cl += (size_t)snprintf(cols + cl, sizeof(cols) - cl, ", %s", FIELDS[i].col);
        ml += (size_t)snprintf(marks + ml, sizeof(marks) - ml, ", ?");
    }
    if (cl >= sizeof(cols) || ml >= sizeof(marks))
        return AL_ERR_TOOBIG;
    if (asprintf(&a->insert_sql, "INSERT INTO audit(%s, prev_hash, hash) VALUES(%s, ?, ?)", cols,
                 marks) < 0) {
        a->insert_sql = NULL;
        return AL_ERR_NOMEM;
    }
    if (asprintf(&a->select_sql, "SELECT %s, prev_hash, hash FROM audit", cols) < 0) {
        a->select_sql = NULL;
        return AL_ERR_NOMEM;
    }
    return 0;
}

/* ---- record fields ---- */

static int64_t get_int(const rec_t *r, const struct field *f)
{
    const char *p = (const char *)r + f->off;

    switch (f->kind) {
    case F_I64:
        return *(const int64_t *)p;
    case F_I32:
        return *(const int32_t *)p;
    case F_ENUM:
        return *(const int *)p;
    default:
        return 0;
    }
}

static void set_int(rec_t *r, const struct field *f, int64_t v)
{
    char *p = (char *)r + f->off;

    if (f->kind == F_I64)
        *(int64_t *)p = v;
    else if (f->kind == F_I32)
        *(int32_t *)p = (int32_t)v;
    else if (f->kind == F_ENUM)
        *(int *)p = (int)v;
}

static const char *get_str(const rec_t *r, const struct field *f)
{
    const char *s = *(char *const *)((const char *)r + f->off);

    return s ? s : "";
}

/* Canonical encoding of a record built from a message. */
static void encode_rec(struct cs_buf *b, int64_t seq, const rec_t *r)
{
    cs_buf_str(b, "airlock/v1/audit-record");
    cs_buf_i64(b, seq);
    for (size_t i = 0; i < NFIELDS; i++) {
        if (FIELDS[i].opt)
            continue;
        if (FIELDS[i].kind == F_STR)
            cs_buf_str(b, get_str(r, &FIELDS[i]));
        else
            cs_buf_i64(b, get_int(r, &FIELDS[i]));
    }
    for (size_t i = 0; i < NFIELDS; i++) {
        if (FIELDS[i].opt && get_int(r, &FIELDS[i]) != 0) {
            cs_buf_str(b, FIELDS[i].col);
            cs_buf_i64(b, get_int(r, &FIELDS[i]));
        }
    }
}

/* The same encoding built from a row of select_sql (column 0 = seq). */
static void encode_row(struct cs_buf *b, sqlite3_stmt *st)
{
    cs_buf_str(b, "airlock/v1/audit-record");
    cs_buf_i64(b, sqlite3_column_int64(st, 0));
    for (size_t i = 0; i < NFIELDS; i++) {
        int c = 1 + (int)i;
        if (FIELDS[i].opt)
            continue;
        if (FIELDS[i].kind == F_STR) {
            const void *t = sqlite3_column_text(st, c);
            cs_buf_blob(b, t, t ? (size_t)sqlite3_column_bytes(st, c) : 0);
        } else {
            cs_buf_i64(b, sqlite3_column_int64(st, c));
        }
    }
    for (size_t i = 0; i < NFIELDS; i++) {
        int c = 1 + (int)i;
        if (FIELDS[i].opt && sqlite3_column_int64(st, c) != 0) {
            cs_buf_str(b, FIELDS[i].col);
            cs_buf_i64(b, sqlite3_column_int64(st, c));
        }
    }
}

/* 0, or AL_ERR_TOOBIG when a string field is over CS_AUDIT_FIELD_MAX. */
static int rec_check(const rec_t *r)
{
    for (size_t i = 0; i < NFIELDS; i++)
        if (FIELDS[i].kind == F_STR && strlen(get_str(r, &FIELDS[i])) > CS_AUDIT_FIELD_MAX)
            return AL_ERR_TOOBIG;
    return 0;
}

/* Copies rec into one malloc block (strings included). */
static int copy_rec(const rec_t *src, rec_t **out)
{
    static const rec_t init = AIRLOCK__V1__AUDIT_RECORD__INIT;
    size_t total = sizeof(rec_t);
    rec_t *r;
    char *p;

    if (rec_check(src) < 0)
        return AL_ERR_TOOBIG;
    for (size_t i = 0; i < NFIELDS; i++)
        if (FIELDS[i].kind == F_STR)
            total += strlen(get_str(src, &FIELDS[i])) + 1;
    r = malloc(total);
    if (!r)
        return AL_ERR_NOMEM;
    *r = init;
    p = (char *)(r + 1);
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field *f = &FIELDS[i];
        if (f->kind != F_STR) {
            set_int(r, f, get_int(src, f));
            continue;
        }
        size_t n = strlen(get_str(src, f)) + 1;
        memcpy(p, get_str(src, f), n);
        *(char **)((char *)r + f->off) = p;
        p += n;
    }
    *out = r;
    return 0;
}

/* Reads the current row of select_sql into an arena-allocated message. */
static rec_t *read_row(sqlite3_stmt *st, struct al_arena *arena)
{
    rec_t *r = al_arena_alloc(arena, sizeof(*r));
    uint8_t *ph, *h;

    if (!r)
        return NULL;
    airlock__v1__audit_record__init(r);
    r->seq = sqlite3_column_int64(st, 0);
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field *f = &FIELDS[i];
        int c = 1 + (int)i;
        if (f->kind != F_STR) {
            set_int(r, f, sqlite3_column_int64(st, c));
            continue;
        }
        const char *t = (const char *)sqlite3_column_text(st, c);
        char *s = al_arena_strndup(arena, t ? t : "", t ? (size_t)sqlite3_column_bytes(st, c) : 0);
        if (!s)
            return NULL;
        *(char **)((char *)r + f->off) = s;
    }
    ph = al_arena_alloc(arena, 2 * CS_HASH_LEN);
    if (!ph || sqlite3_column_bytes(st, COL_PREV) != CS_HASH_LEN ||
        sqlite3_column_bytes(st, COL_HASH) != CS_HASH_LEN)
        return ph ? r : NULL; /* malformed hashes: leave them empty, verify reports it */
    h = ph + CS_HASH_LEN;
    memcpy(ph, sqlite3_column_blob(st, COL_PREV), CS_HASH_LEN);
    memcpy(h, sqlite3_column_blob(st, COL_HASH), CS_HASH_LEN);
    r->prev_hash.data = ph;
    r->prev_hash.len = CS_HASH_LEN;
    r->hash.data = h;
    r->hash.len = CS_HASH_LEN;
    return r;
}

/* ---- the head: MAC, meta, file ---- */

static void head_mac_input(struct cs_buf *b, const struct cs_audit_headrec *h)
{
    cs_buf_str(b, "airlock/v1/audit-head");
    cs_buf_i64(b, h->seq);
    cs_buf_blob(b, h->hash, CS_HASH_LEN);
}

/* MACs h with m (sets key_id and mac). */
static int head_seal(const struct cs_master *m, struct cs_audit_headrec *h)
{
    struct cs_buf b;
    int rc;

    cs_buf_init(&b);
    head_mac_input(&b, h);
    rc = b.err ? b.err : cs_mac(m, CS_MAC_AUDIT, b.p, b.len, h->mac);
    cs_buf_cleanup(&b);
    memcpy(h->key_id, cs_master_key_id(m), sizeof(h->key_id));
    return rc;
}

/* Checks h's MAC with the key of the ring it names. 0 or AL_ERR_CRYPTO. */
static int head_check(const struct cs_keyring *keys, const struct cs_audit_headrec *h)
{
    const struct cs_master *m = cs_keyring_find(keys, h->key_id);
    struct cs_buf b;
    int rc;

    if (!m)
        return AL_ERR_CRYPTO;
    cs_buf_init(&b);
    head_mac_input(&b, h);
    rc = b.err ? b.err : cs_mac_verify(m, CS_MAC_AUDIT, b.p, b.len, h->mac);
    cs_buf_cleanup(&b);
    return rc;
}

static void be64_put(uint8_t *p, int64_t v)
{
    uint64_t u = (uint64_t)v;

    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)u;
        u >>= 8;
    }
}

static int64_t be64_get(const uint8_t *p)
{
    uint64_t u = 0;

    for (int i = 0; i < 8; i++)
        u = u << 8 | p[i];
    return (int64_t)u;
}

/* Steps a "SELECT v FROM meta WHERE k = 'audit_head'" statement into *h. */
static int meta_head_step(sqlite3 *db, sqlite3_stmt *st, struct cs_audit_headrec *h)
{
    const uint8_t *p;
    int rc;

    memset(h, 0, sizeof(*h));
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        rc = AL_ERR_NOTFOUND;
    } else if (rc != SQLITE_ROW) {
        rc = cs_sqlite_err(db, rc, "read audit head");
    } else if (sqlite3_column_bytes(st, 0) != HEADREC_LEN) {
        rc = AL_ERR_CRYPTO; /* malformed: treated like a bad MAC */
    } else {
        p = sqlite3_column_blob(st, 0);
        h->seq = be64_get(p);
        memcpy(h->hash, p + 8, CS_HASH_LEN);
        memcpy(h->key_id, p + 8 + CS_HASH_LEN, CS_KEY_ID_LEN);
        h->key_id[CS_KEY_ID_LEN] = '\0';
        memcpy(h->mac, p + 8 + CS_HASH_LEN + CS_KEY_ID_LEN, CS_MAC_LEN);
        rc = 0;
    }
    sqlite3_reset(st);
    return rc;
}

int cs_audit_meta_head(sqlite3 *db, struct cs_audit_headrec *h)
{
    sqlite3_stmt *st = NULL;
    int rc;

    memset(h, 0, sizeof(*h));
    rc = prepare(db, "SELECT v FROM meta WHERE k = 'audit_head'", &st);
    if (rc < 0)
        return rc;
    rc = meta_head_step(db, st, h);
    sqlite3_finalize(st);
    return rc;
}

/* cs_audit_meta_head() with the cached statement. */
static int meta_head_get(struct cs_audit *a, struct cs_audit_headrec *h)
{
    sqlite3_stmt *st = ast(a, A_META_GET);

    memset(h, 0, sizeof(*h));
    return st ? meta_head_step(a->db, st, h) : -EIO;
}

static int meta_head_put(struct cs_audit *a, const struct cs_audit_headrec *h)
{
    uint8_t p[HEADREC_LEN];
    sqlite3_stmt *st = ast(a, A_META_PUT);
    int rc;

    if (!st)
        return -EIO;
    be64_put(p, h->seq);
    memcpy(p + 8, h->hash, CS_HASH_LEN);
    memcpy(p + 8 + CS_HASH_LEN, h->key_id, CS_KEY_ID_LEN);
    memcpy(p + 8 + CS_HASH_LEN + CS_KEY_ID_LEN, h->mac, CS_MAC_LEN);
    sqlite3_bind_blob(st, 1, p, sizeof(p), SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    rc = rc == SQLITE_DONE ? 0 : cs_sqlite_err(a->db, rc, "write audit head");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static void hex(const uint8_t *in, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int unhex(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1)
            return AL_ERR_INVAL;
        out[i] = (uint8_t)v;
    }
    return 0;
}

static int render_head(const struct cs_audit_headrec *h, char *buf, size_t n)
{
    char hh[2 * CS_HASH_LEN + 1], mh[2 * CS_MAC_LEN + 1];

    hex(h->hash, CS_HASH_LEN, hh);
    hex(h->mac, CS_MAC_LEN, mh);
    return snprintf(buf, n, "airlock-audit-head v1 seq=%" PRId64 " hash=%s key_id=%s mac=%s\n",
                    h->seq, hh, h->key_id, mh);
}

int cs_audit_write_head_file(const char *path, const struct cs_audit_headrec *h)
{
    char text[256], tmp[PATH_MAX];
    int fd, rc = 0, n;

    n = render_head(h, text, sizeof(text));
    if (n < 0 || (size_t)n >= sizeof(text))
        return AL_ERR_TOOBIG;
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
        return -ENAMETOOLONG;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    if (write(fd, text, (size_t)n) != n) /* 150 bytes to a regular file: never short */
        rc = errno ? -errno : -EIO;
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0)
        unlink(tmp);
    /* No directory fsync: if a crash loses the rename, the previous head file
     * is back, which lags the database and is rewritten at open. The data
     * fsync above is what matters: a renamed but empty file would be refused. */
    return rc;
}

/* Reads and parses the head file. AL_ERR_NOTFOUND if missing, AL_ERR_INVAL if malformed. */
static int read_head_file(const char *path, struct cs_audit_headrec *h)
{
    char text[512], again[256], hh[2 * CS_HASH_LEN + 1], mh[2 * CS_MAC_LEN + 1];
    ssize_t n;
    int fd, rc = 0;

    memset(h, 0, sizeof(*h));
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? AL_ERR_NOTFOUND : -errno;
    n = read(fd, text, sizeof(text) - 1);
    if (n < 0)
        rc = -errno;
    close(fd);
    if (rc < 0)
        return rc;
    text[n] = '\0';
    if (sscanf(text,
               "airlock-audit-head v1 seq=%" SCNd64
               " hash=%64[0-9a-f] key_id=%16[0-9a-f] mac=%64[0-9a-f]",
               &h->seq, hh, h->key_id, mh) != 4 ||
        strlen(hh) != 2 * CS_HASH_LEN || strlen(mh) != 2 * CS_MAC_LEN ||
        unhex(hh, h->hash, CS_HASH_LEN) < 0 || unhex(mh, h->mac, CS_MAC_LEN) < 0)
        return AL_ERR_INVAL;
    /* one head, one spelling: re-render and compare byte for byte */
    if (render_head(h, again, sizeof(again)) != (int)n || memcmp(again, text, (size_t)n) != 0)
        return AL_ERR_INVAL;
    return 0;
}

/* ---- head consistency ---- */

/* The last record: seq (0 if none) and hash (zeros if none). */
static int last_row(struct cs_audit *a, int64_t *seq, uint8_t hash[CS_HASH_LEN])
{
    sqlite3_stmt *st = ast(a, A_LAST_ROW);
    int rc;

    *seq = 0;
    memset(hash, 0, CS_HASH_LEN);
    if (!st)
        return -EIO;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *seq = sqlite3_column_int64(st, 0);
        if (sqlite3_column_bytes(st, 1) == CS_HASH_LEN)
            memcpy(hash, sqlite3_column_blob(st, 1), CS_HASH_LEN);
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? 0 : cs_sqlite_err(a->db, rc, "read last audit record");
    }
    sqlite3_reset(st);
    return rc;
}

/* 1 if record seq exists with this hash, 0 if not, < 0 on error. */
static int row_has_hash(sqlite3 *db, int64_t seq, const uint8_t hash[CS_HASH_LEN])
{
    sqlite3_stmt *st = NULL;
    int rc;

    rc = prepare(db, "SELECT hash FROM audit WHERE seq = ?", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, seq);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        rc = sqlite3_column_bytes(st, 0) == CS_HASH_LEN &&
             memcmp(sqlite3_column_blob(st, 0), hash, CS_HASH_LEN) == 0;
    else
        rc = rc == SQLITE_DONE ? 0 : cs_sqlite_err(db, rc, "read audit record");
    sqlite3_finalize(st);
    return rc;
}

/*
 * Loads the database head into *h (seq 0 when the chain is empty and has no
 * head yet) and checks it: MAC, and equal to the last record. Returns 0, 1
 * with problem/bad filled, or < 0 on a database error.
 */
static int db_head(struct cs_audit *a, struct cs_audit_headrec *h, char *problem, int64_t *bad)
{
    uint8_t lh[CS_HASH_LEN];
    int64_t ls;
    int rc;

    rc = last_row(a, &ls, lh);
    if (rc < 0)
        return rc;
    rc = meta_head_get(a, h);
    if (rc == AL_ERR_NOTFOUND && ls == 0) {
        memset(h, 0, sizeof(*h));
        return 0;
    }
    if (rc == AL_ERR_NOTFOUND || rc == AL_ERR_CRYPTO || (rc == 0 && head_check(&a->keys, h) < 0)) {
        snprintf(problem, CS_AUDIT_PROBLEM_MAX, "%s",
                 rc == AL_ERR_NOTFOUND ? "audit head missing from the database"
                 : cs_keyring_find(&a->keys, h->key_id)
                     ? "audit head MAC invalid"
                     : "audit head MACed with an unknown master key");
        *bad = rc == 0 ? h->seq : ls;
        return 1;
    }
    if (rc < 0)
        return rc;
    if (h->seq != ls || memcmp(h->hash, lh, CS_HASH_LEN) != 0) {
        snprintf(problem, CS_AUDIT_PROBLEM_MAX,
                 "database head (seq %" PRId64 ") does not match the last record (seq %" PRId64 ")",
                 h->seq, ls);
        *bad = (ls < h->seq ? ls : h->seq) + 1;
        return 1;
    }
    return 0;
}

/*
 * Compares the head file with the (checked) database head h. A missing file,
 * or one behind h that names a record of the chain, sets *lagging (repairable).
 * Returns 0, 1 with problem/bad filled, or < 0 on a database error.
 */
static int file_head(struct cs_audit *a, const struct cs_audit_headrec *h, int *lagging,
                     char *problem, int64_t *bad)
{
    struct cs_audit_headrec f;
    int rc;

    *lagging = 0;
    rc = read_head_file(a->head_path, &f);
    if (rc == AL_ERR_NOTFOUND) {
        *lagging = h->seq > 0;
        return 0;
    }
    if (rc == 0 && head_check(&a->keys, &f) < 0)
        rc = AL_ERR_CRYPTO;
    if (rc < 0) {
        snprintf(problem, CS_AUDIT_PROBLEM_MAX, "head file %s (%s)",
                 rc == AL_ERR_CRYPTO ? "MAC invalid" : "unreadable or malformed", al_strerror(rc));
        *bad = h->seq;
        return 1;
    }
    if (f.seq > h->seq) {
        snprintf(problem, CS_AUDIT_PROBLEM_MAX,
                 "chain truncated: head file names seq %" PRId64 ", database head is seq %" PRId64,
                 f.seq, h->seq);
        *bad = h->seq + 1;
        return 1;
    }
    if (f.seq == h->seq) {
        if (memcmp(f.hash, h->hash, CS_HASH_LEN) == 0)
            return 0;
        snprintf(problem, CS_AUDIT_PROBLEM_MAX,
                 "head file hash differs from the database head at seq %" PRId64, h->seq);
        *bad = h->seq;
        return 1;
    }
    rc = f.seq == 0 ? !memcmp(f.hash, (uint8_t[CS_HASH_LEN]){0}, CS_HASH_LEN)
                    : row_has_hash(a->db, f.seq, f.hash);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        *lagging = 1;
        return 0;
    }
    snprintf(problem, CS_AUDIT_PROBLEM_MAX,
             "head file (seq %" PRId64 ") does not match the record at its seq", f.seq);
    *bad = f.seq;
    return 1;
}

static void set_broken(struct cs_audit *a, const char *problem, int64_t bad)
{
    if (!a->problem[0])
        snprintf(a->problem, sizeof(a->problem), "%s", problem);
    AL_LOG_ERROR("credstore.audit_tamper", "first_bad_seq=%" PRId64 " problem=\"%s\"", bad,
                 problem);
}

static int lock(struct cs_audit *a, int how)
{
    while (flock(a->lock_fd, how) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    return 0;
}

static void unlock(struct cs_audit *a)
{
    (void)flock(a->lock_fd, LOCK_UN);
}

/* Open-time check, with the repair of a missing or lagging head file. */
static int check_at_open(struct cs_audit *a)
{
    char problem[CS_AUDIT_PROBLEM_MAX] = "";
    struct cs_audit_headrec h;
    int64_t bad = 0;
    int lagging = 0, rc;

    /* exclusive: a writer in another process must not move the head meanwhile */
    rc = lock(a, LOCK_EX);
    if (rc < 0)
        return rc;
    rc = exec(a->db, "BEGIN");
    if (rc == 0) {
        rc = db_head(a, &h, problem, &bad);
        if (rc == 0)
            rc = file_head(a, &h, &lagging, problem, &bad);
        exec(a->db, "COMMIT");
    }
    if (rc != 0 || !lagging)
        unlock(a);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        set_broken(a, problem, bad);
        return 0;
    }
    a->head = h;
    if (lagging) {
        AL_LOG_WARN("credstore.audit_head",
                    "seq=%" PRId64 " problem=\"head file missing or "
                    "behind the database; rewriting it\"",
                    h.seq);
        rc = cs_audit_write_head_file(a->head_path, &h);
        unlock(a);
        if (rc < 0) {
            a->head_file_stale = 1;
            AL_LOG_ERROR("credstore.audit_head", "path=%s errno=%d problem=\"cannot write\"",
                         a->head_path, -rc);
        }
    }
    return 0;
}

/* ---- lifecycle ---- */

int cs_audit_new(sqlite3 *db, const char *data_dir, const struct cs_keyring *keys,
                 struct cs_audit **out)
{
    struct cs_audit *a;
    char *lock_path = NULL;
    int rc;

    if (!db || !data_dir || !keys || !keys->primary || !out)
        return AL_ERR_INVAL;
    *out = NULL;
    a = calloc(1, sizeof(*a));
    if (!a)
        return AL_ERR_NOMEM;
    a->db = db;
    a->lock_fd = -1;
    a->head_fd = -1;
    a->keys = *keys;
    if (keys->n_previous) {
        a->prev = calloc(keys->n_previous, sizeof(*a->prev));
        if (!a->prev) {
            rc = AL_ERR_NOMEM;
            goto out;
        }
        memcpy(a->prev, keys->previous, keys->n_previous * sizeof(*a->prev));
        a->keys.previous = a->prev;
    }
    a->dir = strdup(data_dir);
    if (!a->dir || asprintf(&a->head_path, "%s/%s", data_dir, CS_AUDIT_HEAD_FILE) < 0 ||
        asprintf(&lock_path, "%s/%s", data_dir, CS_AUDIT_LOCK_FILE) < 0) {
        a->head_path = NULL;
        lock_path = NULL;
        rc = AL_ERR_NOMEM;
        goto out;
    }
    a->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (a->lock_fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = build_sql(a);
    if (rc == 0)
        rc = sqlite3_prepare_v3(a->db, a->insert_sql, -1, SQLITE_PREPARE_PERSISTENT, &a->ins,
                                NULL) == SQLITE_OK
                 ? 0
                 : cs_sqlite_err(a->db, SQLITE_ERROR, "prepare audit insert");
    if (rc == 0)
        rc = check_at_open(a);
out:
    free(lock_path);
    if (rc < 0)
        cs_audit_free(a);
    else
        *out = a;
    return rc;
}

static void drop_queue(struct cs_audit *a)
{
    for (size_t i = 0; i < a->nq; i++)
        free(a->q[i]);
    a->nq = 0;
}

void cs_audit_free(struct cs_audit *a)
{
    if (!a)
        return;
    drop_queue(a);
    free(a->q);
    sqlite3_finalize(a->ins);
    for (int i = 0; i < N_AST; i++)
        sqlite3_finalize(a->st[i]);
    if (a->lock_fd >= 0)
        close(a->lock_fd);
    if (a->head_fd >= 0)
        close(a->head_fd);
    free(a->insert_sql);
    free(a->select_sql);
    free(a->head_path);
    free(a->dir);
    free(a->prev);
    free(a);
}

const char *cs_audit_problem(const struct cs_audit *a)
{
    return a && a->problem[0] ? a->problem : NULL;
}

int cs_audit_head(const struct cs_audit *a, int64_t *seq, uint8_t hash[CS_HASH_LEN])
{
    if (!a)
        return AL_ERR_INVAL;
    if (seq)
        *seq = a->head.seq;
    if (hash)
        memcpy(hash, a->head.hash, CS_HASH_LEN);
    return 0;
}

/* ---- writing ---- */

int cs_audit_begin(struct cs_audit *a)
{
    char problem[CS_AUDIT_PROBLEM_MAX] = "";
    int64_t bad = 0;
    int rc;

    if (!a)
        return AL_ERR_INVAL;
    if (a->in_txn)
        return AL_ERR_STATE;
    if (a->problem[0])
        return AL_ERR_CRYPTO;
    rc = lock(a, LOCK_EX);
    if (rc < 0)
        return rc;
    rc = ast_exec(a, A_BEGIN);
    if (rc < 0) {
        unlock(a);
        return rc;
    }
    /* Re-read whenever another connection (this process's other one, another
     * process, an editor) committed since the last check: it may have
     * appended, and a head that no longer matches the last record must stop
     * us appending on top of it. data_version tells, inside this transaction. */
    int64_t dv = 0;
    rc = data_version(a, &dv);
    if (rc == 0 && a->head_checked && dv == a->dv) {
        a->txn = a->head;
    } else if (rc == 0) {
        a->head_checked = 0;
        rc = db_head(a, &a->txn, problem, &bad);
        if (rc == 0) {
            a->head = a->txn;
            a->dv = dv;
            a->head_checked = 1;
        }
    }
    if (rc != 0) {
        if (rc == 1) {
            set_broken(a, problem, bad);
            rc = AL_ERR_CRYPTO;
        }
        rollback(a->db);
        unlock(a);
        return rc;
    }
    a->in_txn = 1;
    a->touched = 0;
    a->inserted = 0;
    return 0;
}

int cs_audit_insert(struct cs_audit *a, const rec_t *r, int64_t *seq)
{
    uint8_t h[CS_HASH_LEN];
    struct cs_buf b;
    int64_t s;
    int rc;

    if (!a || !r)
        return AL_ERR_INVAL;
    if (!a->in_txn)
        return AL_ERR_STATE;
    rc = rec_check(r);
    if (rc < 0)
        return rc;
    s = a->txn.seq + 1;
    cs_buf_init(&b);
    encode_rec(&b, s, r);
    rc = b.err ? b.err : cs_sha256(a->txn.hash, CS_HASH_LEN, b.p, b.len, h);
    cs_buf_cleanup(&b);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(a->ins, 1, s);
    for (size_t i = 0; i < NFIELDS; i++) {
        int c = 2 + (int)i;
        if (FIELDS[i].kind == F_STR)
            sqlite3_bind_text(a->ins, c, get_str(r, &FIELDS[i]), -1, SQLITE_STATIC);
        else
            sqlite3_bind_int64(a->ins, c, get_int(r, &FIELDS[i]));
    }
    sqlite3_bind_blob(a->ins, COL_PREV + 1, a->txn.hash, CS_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(a->ins, COL_HASH + 1, h, CS_HASH_LEN, SQLITE_STATIC);
    rc = sqlite3_step(a->ins);
    rc = rc == SQLITE_DONE ? 0 : cs_sqlite_err(a->db, rc, "insert audit record");
    sqlite3_reset(a->ins);
    sqlite3_clear_bindings(a->ins);
    if (rc < 0)
        return rc;
    a->txn.seq = s;
    memcpy(a->txn.hash, h, CS_HASH_LEN);
    a->inserted++;
    if (seq)
        *seq = s;
    return 0;
}

void cs_audit_touch(struct cs_audit *a)
{
    if (a && a->in_txn)
        a->touched = 1;
}

/* Keeps the head file just written open for in-place writes. */
static void head_fd_open(struct cs_audit *a, size_t len)
{
    struct stat st;

    a->head_fd = open(a->head_path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (a->head_fd < 0)
        return;
    if (fstat(a->head_fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size != len) {
        close(a->head_fd);
        a->head_fd = -1;
        return;
    }
    a->head_len = len;
    a->head_dev = st.st_dev;
    a->head_ino = st.st_ino;
}

/*
 * Overwrites the head file in place: one pwrite at offset 0 and fdatasync,
 * which costs one device write where temp file + fsync + rename costs
 * several (new inode, allocation, directory). Only when the new text has the
 * length of the old one (the file size does not change, so no metadata has to
 * reach the disk with it), and the path still names the very file this
 * object wrote (a file swapped, removed or replaced by anything else is
 * written anew through the temp file, or fails). The text is under 512 bytes
 * at offset 0, inside one disk sector, which a device writes whole or not at
 * all (the assumption PostgreSQL makes for pg_control): after a crash the
 * file holds the old head or the new one, never a mix.
 * Returns 1 when written, 0 when this path does not apply, < 0 on error.
 */
static int head_write_in_place(struct cs_audit *a, const char *text, size_t len)
{
    struct stat st;

    if (a->head_fd < 0 || len != a->head_len || len > 512)
        return 0;
    if (lstat(a->head_path, &st) < 0 || !S_ISREG(st.st_mode) || st.st_dev != a->head_dev ||
        st.st_ino != a->head_ino || (size_t)st.st_size != len)
        return 0;
    if (pwrite(a->head_fd, text, len, 0) != (ssize_t)len)
        return errno ? -errno : -EIO;
    return fdatasync(a->head_fd) < 0 ? -errno : 1;
}

static int write_head_file(struct cs_audit *a, const struct cs_audit_headrec *h)
{
    char text[256];
    int n = render_head(h, text, sizeof(text));
    int rc = n > 0 && (size_t)n < sizeof(text) ? head_write_in_place(a, text, (size_t)n) : 0;

    if (rc <= 0) {
        if (a->head_fd >= 0)
            close(a->head_fd);
        a->head_fd = -1;
    }
    if (rc == 0) {
        rc = cs_audit_write_head_file(a->head_path, h);
        if (rc == 0 && n > 0)
            head_fd_open(a, (size_t)n);
    }
    if (rc > 0)
        rc = 0;
    a->head_file_stale = rc < 0;
    if (rc < 0)
        AL_LOG_ERROR("credstore.audit_head",
                     "seq=%" PRId64 " errno=%d problem=\"head file "
                     "write failed after commit\"",
                     h->seq, -rc);
    return rc;
}

int cs_audit_end(struct cs_audit *a, int commit, int *head_rc)
{
    int changed, rc = 0;

    if (head_rc)
        *head_rc = 0;
    if (!a || !a->in_txn)
        return AL_ERR_STATE;
    changed = a->inserted > 0 || a->touched;
    if (commit && changed) {
        rc = head_seal(a->keys.primary, &a->txn);
        if (rc == 0)
            rc = meta_head_put(a, &a->txn);
    }
    if (commit && rc == 0)
        rc = ast_exec(a, A_COMMIT);
    if (commit && rc == 0 && a->observing && a->observe)
        a->observe(a->observe_arg, CS_AUDIT_TXN_COMMITTED); /* right after COMMIT */
    if (!commit || rc < 0) {
        rollback(a->db);
        a->head_checked = 0; /* whatever happened, check again next time */
    }
    if (rc == 0 && commit) {
        a->head = a->txn;
        if (changed || a->head_file_stale) {
            int hr = write_head_file(a, &a->head);
            if (head_rc)
                *head_rc = hr;
        }
    }
    a->in_txn = 0;
    unlock(a);
    return commit ? rc : 0;
}

int cs_audit_append(struct cs_audit *a, const rec_t *rec, size_t *index)
{
    rec_t *copy = NULL;
    int rc;

    if (!a || !rec)
        return AL_ERR_INVAL;
    if (a->problem[0])
        return AL_ERR_CRYPTO;
    if (a->nq >= CS_AUDIT_MAX_PENDING)
        return AL_ERR_TOOBIG;
    if (a->nq == a->qcap) {
        size_t cap = a->qcap ? a->qcap * 2 : 64;
        rec_t **q = realloc(a->q, cap * sizeof(*q));
        if (!q)
            return AL_ERR_NOMEM;
        a->q = q;
        a->qcap = cap;
    }
    rc = copy_rec(rec, &copy);
    if (rc < 0)
        return rc;
    if (copy->time_ms == 0)
        copy->time_ms = now_ms();
    if (index)
        *index = a->nq;
    a->q[a->nq++] = copy;
    return 0;
}

size_t cs_audit_pending(const struct cs_audit *a)
{
    return a ? a->nq : 0;
}

/* Writes recs[0..n) in one transaction, then the head file (cs_audit_commit). */
static int commit_recs(struct cs_audit *a, rec_t *const *recs, size_t n, int64_t *first_seq)
{
    int64_t first = 0;
    int head_rc = 0, rc;

    if (first_seq)
        *first_seq = 0;
    if (n == 0 && !a->head_file_stale)
        return 0;
    rc = cs_audit_begin(a);
    if (rc == 0 && a->observe) {
        a->observing = 1;
        a->observe(a->observe_arg, CS_AUDIT_TXN_BEGUN);
    }
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = cs_audit_insert(a, recs[i], i == 0 ? &first : NULL);
    if (a->in_txn) {
        int erc = cs_audit_end(a, rc == 0, &head_rc);
        if (rc == 0)
            rc = erc;
    }
    a->observing = 0;
    if (rc == 0 && first_seq)
        *first_seq = first; /* committed, even if the head file then failed */
    return rc == 0 ? head_rc : rc;
}

void cs_audit_set_txn_observer(struct cs_audit *a, void (*fn)(void *arg, int phase), void *arg)
{
    if (a) {
        a->observe = fn;
        a->observe_arg = arg;
    }
}

void (*cs_audit_txn_observer(const struct cs_audit *a, void **arg))(void *arg, int phase)
{
    if (arg)
        *arg = a ? a->observe_arg : NULL;
    return a ? a->observe : NULL;
}

int cs_audit_commit(struct cs_audit *a, int64_t *first_seq)
{
    int rc;

    if (first_seq)
        *first_seq = 0;
    if (!a)
        return AL_ERR_INVAL;
    rc = commit_recs(a, a->q, a->nq, first_seq);
    drop_queue(a);
    return rc;
}

void cs_audit_batch_init(struct cs_audit_batch *b)
{
    memset(b, 0, sizeof(*b));
}

static void batch_drop(struct cs_audit_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->recs[i]);
        b->recs[i] = NULL;
    }
    b->n = 0;
}

void cs_audit_batch_cleanup(struct cs_audit_batch *b)
{
    if (!b)
        return;
    batch_drop(b);
    free(b->recs);
    b->recs = NULL;
    b->cap = 0;
}

size_t cs_audit_take(struct cs_audit *a, struct cs_audit_batch *b)
{
    rec_t **q;
    size_t cap, n;

    if (!a || !b || b->n)
        return 0;
    /* swap the arrays: the queue goes on in b's (empty) one */
    q = a->q;
    cap = a->qcap;
    n = a->nq;
    a->q = b->recs;
    a->qcap = b->cap;
    a->nq = 0;
    b->recs = q;
    b->cap = cap;
    b->n = n;
    return n;
}

int cs_audit_commit_batch(struct cs_audit *a, struct cs_audit_batch *b, int64_t *first_seq)
{
    int rc;

    if (first_seq)
        *first_seq = 0;
    if (!a || !b)
        return AL_ERR_INVAL;
    if (a->problem[0]) {
        batch_drop(b);
        return AL_ERR_CRYPTO;
    }
    rc = commit_recs(a, b->recs, b->n, first_seq);
    batch_drop(b);
    return rc;
}

void cs_audit_set_problem(struct cs_audit *a, const char *problem)
{
    if (a && problem && problem[0] && !a->problem[0])
        snprintf(a->problem, sizeof(a->problem), "%s", problem);
}

/* ---- verify ---- */

static void bad(struct cs_audit_verify_result *res, int64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void bad(struct cs_audit_verify_result *res, int64_t seq, const char *fmt, ...)
{
    va_list ap;

    if (!res->intact)
        return;
    res->intact = 0;
    res->first_bad_seq = seq;
    va_start(ap, fmt);
    vsnprintf(res->problem, sizeof(res->problem), fmt, ap);
    va_end(ap);
}

/* Hash of record seq into out; 1 if found, 0 if missing, < 0 on error. */
static int hash_of(sqlite3 *db, int64_t seq, uint8_t out[CS_HASH_LEN])
{
    sqlite3_stmt *st = NULL;
    int rc = prepare(db, "SELECT hash FROM audit WHERE seq = ?", &st);

    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, seq);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == CS_HASH_LEN) {
        memcpy(out, sqlite3_column_blob(st, 0), CS_HASH_LEN);
        rc = 1;
    } else {
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : cs_sqlite_err(db, rc, "read audit");
    }
    sqlite3_finalize(st);
    return rc;
}

/* Walks records from..to; fills res on the first problem. */
static int walk(struct cs_audit *a, int64_t from, int64_t to, struct cs_audit_verify_result *res)
{
    uint8_t prev[CS_HASH_LEN] = {0}, h[CS_HASH_LEN];
    sqlite3_stmt *st = NULL;
    char *sql = NULL;
    int64_t expect = from;
    int rc;

    if (from > 1) {
        rc = hash_of(a->db, from - 1, prev);
        if (rc <= 0) {
            if (rc == 0)
                bad(res, from - 1, "record missing (gap)");
            return rc < 0 ? rc : 0;
        }
    }
    if (asprintf(&sql, "%s WHERE seq >= ? AND seq <= ? ORDER BY seq", a->select_sql) < 0)
        return AL_ERR_NOMEM;
    rc = prepare(a->db, sql, &st);
    free(sql);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, to);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0);
        struct cs_buf b;
        if (seq != expect) {
            bad(res, expect, "record missing (gap before seq %" PRId64 ")", seq);
            break;
        }
        if (sqlite3_column_bytes(st, COL_PREV) != CS_HASH_LEN ||
            memcmp(sqlite3_column_blob(st, COL_PREV), prev, CS_HASH_LEN) != 0) {
            bad(res, seq, "prev_hash does not link to the previous record");
            break;
        }
        cs_buf_init(&b);
        encode_row(&b, st);
        rc = b.err ? b.err : cs_sha256(prev, CS_HASH_LEN, b.p, b.len, h);
        cs_buf_cleanup(&b);
        if (rc < 0)
            break;
        if (sqlite3_column_bytes(st, COL_HASH) != CS_HASH_LEN ||
            memcmp(sqlite3_column_blob(st, COL_HASH), h, CS_HASH_LEN) != 0) {
            bad(res, seq, "hash mismatch: record altered");
            break;
        }
        memcpy(prev, h, CS_HASH_LEN);
        res->records_checked++;
        expect++;
    }
    if (rc == SQLITE_DONE || rc == SQLITE_ROW)
        rc = 0;
    else if (rc > 0)
        rc = cs_sqlite_err(a->db, rc, "verify audit");
    sqlite3_finalize(st);
    if (rc == 0 && res->intact && expect <= to)
        bad(res, expect,
            "record missing: chain ends at seq %" PRId64 " but the head is seq %" PRId64,
            expect - 1, to);
    return rc;
}

int cs_audit_verify(struct cs_audit *a, int64_t from, int64_t to,
                    struct cs_audit_verify_result *res)
{
    char problem[CS_AUDIT_PROBLEM_MAX] = "";
    struct cs_audit_headrec h;
    int64_t badseq = 0, head_seq;
    int hrc = 0, lagging, rc;

    if (!a || !res || from < 0 || to < 0)
        return AL_ERR_INVAL;
    if (a->in_txn)
        return AL_ERR_STATE;
    memset(res, 0, sizeof(*res));
    res->intact = 1;
    /* Shared lock: no writer between reading the database head and the head file. */
    rc = lock(a, LOCK_SH);
    if (rc < 0)
        return rc;
    rc = exec(a->db, "BEGIN");
    if (rc < 0) {
        unlock(a);
        return rc;
    }
    rc = meta_head_get(a, &h);
    if (rc == AL_ERR_NOTFOUND || rc == AL_ERR_CRYPTO)
        rc = 0; /* db_head below reports it */
    head_seq = h.seq;
    if (rc == 0)
        hrc = db_head(a, &h, problem, &badseq);
    if (hrc == 0)
        hrc = file_head(a, &h, &lagging, problem, &badseq);
    unlock(a);
    if (rc == 0 && hrc < 0)
        rc = hrc;
    if (rc < 0)
        goto out;
    res->head_seq = head_seq;
    memcpy(res->head_hash, h.hash, CS_HASH_LEN);
    if (from == 0)
        from = 1;
    if (to == 0)
        to = head_seq;
    if (to > head_seq) {
        rc = AL_ERR_NOTFOUND;
        goto out;
    }
    if (from > to && !(to == 0 && head_seq == 0)) {
        rc = from > head_seq ? AL_ERR_NOTFOUND : AL_ERR_INVAL;
        goto out;
    }
    if (to > 0)
        rc = walk(a, from, to, res);
    /* head problems count when the range reaches the head, after any record problem */
    if (rc == 0 && hrc == 1 && to == head_seq)
        bad(res, badseq, "%s", problem);
    if (rc == 0 && !res->intact)
        AL_LOG_ERROR("credstore.audit_verify", "first_bad_seq=%" PRId64 " problem=\"%s\"",
                     res->first_bad_seq, res->problem);
out:
    exec(a->db, "COMMIT");
    return rc;
}

/* ---- query ---- */

#define TOKEN_LEN 16 /* last seq (8) + filter fingerprint (8) */

static int fingerprint(const Airlock__V1__QueryAuditRequest *q, uint8_t out[8])
{
    uint8_t h[CS_HASH_LEN];
    struct cs_buf b;
    int rc;

    cs_buf_init(&b);
    cs_buf_str(&b, "airlock/v1/audit-query");
    cs_buf_i64(&b, q->after_seq);
    cs_buf_i64(&b, q->from_ms);
    cs_buf_i64(&b, q->to_ms);
    cs_buf_str(&b, q->credential);
    cs_buf_str(&b, q->principal);
    cs_buf_str(&b, q->grant_id);
    cs_buf_i64(&b, q->action);
    cs_buf_i64(&b, q->decision);
    cs_buf_str(&b, q->caller);
    rc = b.err ? b.err : cs_sha256(b.p, b.len, NULL, 0, h);
    cs_buf_cleanup(&b);
    memcpy(out, h, 8);
    return rc;
}

static int decode_token(const char *tok, const uint8_t fp[8], int64_t *after)
{
    uint8_t raw[TOKEN_LEN + 4];
    size_t n = 0;

    if (al_base64_decode(tok, strlen(tok), raw, sizeof(raw), AL_BASE64_URL | AL_BASE64_NOPAD, &n) <
            0 ||
        n != TOKEN_LEN || memcmp(raw + 8, fp, 8) != 0)
        return AL_ERR_INVAL;
    *after = be64_get(raw);
    return *after >= 0 ? 0 : AL_ERR_INVAL;
}

static char *encode_token(struct al_arena *arena, int64_t last, const uint8_t fp[8])
{
    uint8_t raw[TOKEN_LEN];
    char *out = al_arena_alloc(arena, 32);

    be64_put(raw, last);
    memcpy(raw + 8, fp, 8);
    if (out &&
        al_base64_encode(raw, sizeof(raw), out, 32, AL_BASE64_URL | AL_BASE64_NOPAD, NULL) < 0)
        return NULL;
    return out;
}

static void add_cond(char *sql, size_t n, const char *cond)
{
    size_t l = strlen(sql);

    snprintf(sql + l, n - l, " AND %s", cond);
}

static int query_rows(struct cs_audit *a, const Airlock__V1__QueryAuditRequest *q, int64_t after,
                      int limit, struct al_arena *arena, Airlock__V1__QueryAuditResponse *resp)
{
    const char *strs[4] = {q->credential, q->principal, q->grant_id, q->caller};
    static const char *const str_conds[4] = {"credential = ?", "principal = ?", "grant_id = ?",
                                             "caller = ?"};
    char sql[1536];
    sqlite3_stmt *st = NULL;
    int rc, i = 1;

    snprintf(sql, sizeof(sql), "%s WHERE seq > ?", a->select_sql);
    if (q->from_ms)
        add_cond(sql, sizeof(sql), "time_ms >= ?");
    if (q->to_ms)
        add_cond(sql, sizeof(sql), "time_ms < ?");
    for (int k = 0; k < 4; k++)
        if (strs[k] && strs[k][0])
            add_cond(sql, sizeof(sql), str_conds[k]);
    if (q->action)
        add_cond(sql, sizeof(sql), "action = ?");
    if (q->decision)
        add_cond(sql, sizeof(sql), "decision = ?");
    strncat(sql, " ORDER BY seq LIMIT ?", sizeof(sql) - strlen(sql) - 1);
    rc = prepare(a->db, sql, &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, i++, after);
    if (q->from_ms)
        sqlite3_bind_int64(st, i++, q->from_ms);
    if (q->to_ms)
        sqlite3_bind_int64(st, i++, q->to_ms);
    for (int k = 0; k < 4; k++)
        if (strs[k] && strs[k][0])
            sqlite3_bind_text(st, i++, strs[k], -1, SQLITE_STATIC);
    if (q->action)
        sqlite3_bind_int(st, i++, q->action);
    if (q->decision)
        sqlite3_bind_int(st, i++, q->decision);
    sqlite3_bind_int(st, i, limit);
    resp->records = al_arena_alloc(arena, (size_t)limit * sizeof(*resp->records));
    rc = resp->records ? 0 : AL_ERR_NOMEM;
    while (rc == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        rec_t *r = read_row(st, arena);
        rc = r ? 0 : AL_ERR_NOMEM;
        if (r)
            resp->records[resp->n_records++] = r;
    }
    if (rc == SQLITE_DONE)
        rc = 0;
    else if (rc > 0)
        rc = cs_sqlite_err(a->db, rc, "query audit");
    sqlite3_finalize(st);
    return rc;
}

int cs_audit_query(struct cs_audit *a, const Airlock__V1__QueryAuditRequest *q,
                   struct al_arena *arena, Airlock__V1__QueryAuditResponse **out)
{
    Airlock__V1__QueryAuditResponse *resp;
    Airlock__V1__PageResponse *page;
    struct cs_audit_headrec h;
    int64_t after;
    uint8_t fp[8];
    int limit = CS_AUDIT_PAGE_DEFAULT, rc;

    if (!a || !q || !arena || !out || q->after_seq < 0)
        return AL_ERR_INVAL;
    if (a->in_txn)
        return AL_ERR_STATE;
    *out = NULL;
    rc = fingerprint(q, fp);
    if (rc < 0)
        return rc;
    after = q->after_seq;
    if (q->page && q->page->page_token && q->page->page_token[0]) {
        rc = decode_token(q->page->page_token, fp, &after);
        if (rc < 0)
            return rc;
    }
    if (q->page && q->page->page_size > 0)
        limit = q->page->page_size < CS_AUDIT_PAGE_MAX ? q->page->page_size : CS_AUDIT_PAGE_MAX;
    resp = al_arena_alloc(arena, sizeof(*resp));
    page = al_arena_alloc(arena, sizeof(*page));
    if (!resp || !page)
        return AL_ERR_NOMEM;
    airlock__v1__query_audit_response__init(resp);
    airlock__v1__page_response__init(page);
    resp->page = page;
    rc = exec(a->db, "BEGIN");
    if (rc < 0)
        return rc;
    /* one more than the page, to know whether another page follows */
    rc = query_rows(a, q, after, limit + 1, arena, resp);
    if (rc == 0) {
        rc = meta_head_get(a, &h);
        resp->head_seq = rc == 0 ? h.seq : 0;
        rc = rc == AL_ERR_NOTFOUND || rc == AL_ERR_CRYPTO ? 0 : rc;
    }
    exec(a->db, "COMMIT");
    if (rc < 0)
        return rc;
    if (resp->n_records > (size_t)limit) {
        resp->n_records = (size_t)limit;
        page->next_page_token = encode_token(arena, resp->records[limit - 1]->seq, fp);
        if (!page->next_page_token)
            return AL_ERR_NOMEM;
    }
    *out = resp;
    return 0;
}

int cs_audit_find_batch(struct cs_audit *a, const char *caller, const char *batch_id,
                        int64_t since_ms, int64_t *first_seq, int64_t *last_seq, int32_t *count)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (!a || !caller || !batch_id || !batch_id[0])
        return AL_ERR_INVAL;
    rc = prepare(a->db,
                 "SELECT min(seq), max(seq), count(*) FROM audit WHERE batch_id = ?"
                 " AND batch_id != '' AND caller = ? AND time_ms >= ?",
                 &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, batch_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, caller, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, since_ms);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_int64(st, 2) > 0) {
        if (first_seq)
            *first_seq = sqlite3_column_int64(st, 0);
        if (last_seq)
            *last_seq = sqlite3_column_int64(st, 1);
        if (count)
            *count = (int32_t)sqlite3_column_int64(st, 2);
        rc = 0;
    } else {
        rc = rc == SQLITE_ROW ? AL_ERR_NOTFOUND : cs_sqlite_err(a->db, rc, "find batch");
    }
    sqlite3_finalize(st);
    return rc;
}
