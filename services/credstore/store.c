/*
 * store: credentials, their sealed versions and policy rows in SQLite, with
 * every change committed together with its audit record. See store.h for
 * the schema, the integrity rules, master key rotation and backup/restore.
 *
 * Shape of every mutation:
 *   validate the request -> cs_audit_begin (flock + BEGIN IMMEDIATE + head
 *   check) -> load rows and verify their MACs -> write rows (each re-MACed)
 *   -> insert the audit record -> cs_audit_end (COMMIT, head file).
 * Reads run in a deferred read transaction so that a credential row and its
 * version rows come from one snapshot.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "al_base64.h"
#include "al_err.h"
#include "al_log.h"
#include "store.h"

#define V_CURRENT   AIRLOCK__V1__CREDENTIAL_VERSION_STATE__CREDENTIAL_VERSION_STATE_CURRENT
#define V_GRACE     AIRLOCK__V1__CREDENTIAL_VERSION_STATE__CREDENTIAL_VERSION_STATE_GRACE
#define V_DESTROYED AIRLOCK__V1__CREDENTIAL_VERSION_STATE__CREDENTIAL_VERSION_STATE_DESTROYED

#define SCHEMA_VERSION 1
#define CHECK_TEXT     "airlock-master-check"
#define ROTATE_BATCH   64

enum st_id {
    S_CRED_GET,
    S_CRED_INS,
    S_CRED_UPD,
    S_CRED_DEL,
    S_VER_GET,
    S_VER_LIST,
    S_VER_INS,
    S_VER_UPD,
    S_VER_ZERO,
    S_VER_DEL,
    S_LIST,
    S_EXPIRED,
    S_BEGIN,
    S_COMMIT,
    S_DATA_VERSION,
    N_ST
};

#define CRED_COLS                                                                                  \
    "name, type, description, template_header, template_format, allow_plain_http,"                 \
    " grace_period_ms, current_version, created_ms, updated_ms, revision, updated_by, policy,"     \
    " mac_key_id, policy_mac"
#define VER_COLS                                                                                   \
    "version, state, created_ms, grace_end_ms, destroyed_ms, created_by, master_key_id,"           \
    " dek_nonce, wrapped_dek, value_nonce, ciphertext, mac"
#define ZERO(c) c " = CASE WHEN " c " IS NULL THEN NULL ELSE zeroblob(length(" c ")) END"

static const char *const SQL[N_ST] = {
    [S_CRED_GET] = "SELECT " CRED_COLS " FROM credentials WHERE name = ?1",
    [S_CRED_INS] = "INSERT INTO credentials(" CRED_COLS ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,"
                   " ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    [S_CRED_UPD] = "UPDATE credentials SET type = ?2, description = ?3, template_header = ?4,"
                   " template_format = ?5, allow_plain_http = ?6, grace_period_ms = ?7,"
                   " current_version = ?8, created_ms = ?9, updated_ms = ?10, revision = ?11,"
                   " updated_by = ?12, policy = ?13, mac_key_id = ?14, policy_mac = ?15"
                   " WHERE name = ?1",
    [S_CRED_DEL] = "DELETE FROM credentials WHERE name = ?1",
    [S_VER_GET] = "SELECT " VER_COLS " FROM versions WHERE name = ?1 AND version = ?2",
    [S_VER_LIST] = "SELECT " VER_COLS " FROM versions WHERE name = ?1 ORDER BY version DESC",
    [S_VER_INS] = "INSERT INTO versions(name, " VER_COLS ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7,"
                  " ?8, ?9, ?10, ?11, ?12, ?13)",
    [S_VER_UPD] = "UPDATE versions SET state = ?3, created_ms = ?4, grace_end_ms = ?5,"
                  " destroyed_ms = ?6, created_by = ?7, master_key_id = ?8, dek_nonce = ?9,"
                  " wrapped_dek = ?10, value_nonce = ?11, ciphertext = ?12, mac = ?13"
                  " WHERE name = ?1 AND version = ?2",
    [S_VER_ZERO] = "UPDATE versions SET " ZERO("dek_nonce") ", " ZERO("wrapped_dek") ", " ZERO(
        "value_nonce") ", " ZERO("ciphertext") " WHERE name = ?1 AND (?2 = 0 OR version = ?2)",
    [S_VER_DEL] = "DELETE FROM versions WHERE name = ?1",
    [S_LIST] = "SELECT name FROM credentials WHERE name > ?1 AND name >= ?2 AND name < ?3"
               " ORDER BY name LIMIT ?4",
    [S_EXPIRED] = "SELECT name, version FROM versions WHERE state = 2 AND grace_end_ms <= ?1"
                  " ORDER BY name, version LIMIT 256",
    [S_BEGIN] = "BEGIN",
    [S_COMMIT] = "COMMIT",
    [S_DATA_VERSION] = "PRAGMA data_version",
};

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v BLOB);"
    "CREATE TABLE IF NOT EXISTS credentials("
    " name TEXT PRIMARY KEY, type INTEGER NOT NULL, description TEXT NOT NULL,"
    " template_header TEXT NOT NULL, template_format TEXT NOT NULL,"
    " allow_plain_http INTEGER NOT NULL, grace_period_ms INTEGER NOT NULL,"
    " current_version INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL, revision INTEGER NOT NULL, updated_by TEXT NOT NULL,"
    " policy BLOB, mac_key_id TEXT NOT NULL, policy_mac BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS versions("
    " name TEXT NOT NULL REFERENCES credentials(name), version INTEGER NOT NULL,"
    " state INTEGER NOT NULL, created_ms INTEGER NOT NULL, grace_end_ms INTEGER NOT NULL,"
    " destroyed_ms INTEGER NOT NULL, created_by TEXT NOT NULL, master_key_id TEXT NOT NULL,"
    " dek_nonce BLOB, wrapped_dek BLOB, value_nonce BLOB, ciphertext BLOB, mac BLOB NOT NULL,"
    " PRIMARY KEY(name, version));";

struct vc_entry;

struct cs_store {
    sqlite3 *db;
    char *dir;
    char *db_path;
    struct cs_keyring keys;
    const struct cs_master **prev; /* copy of keys.previous */
    struct cs_audit *audit;
    int busy_ms;
    sqlite3_stmt *st[N_ST];
    struct vc_entry *vc;             /* verified-row cache of the Resolve read (VC_SLOTS) */
    const volatile uint8_t *shm;     /* SQLite's mapping of the WAL index, only read (wal_header) */
    struct cs_store_audit_step step; /* the audit-only commit in progress (audit_observe) */
    void (*on_step)(void *arg, const struct cs_store_audit_step *step);
    void *on_step_arg;
};

/* A credentials row. Strings and policy live in an arena. */
struct cred {
    const char *name;
    int type;
    const char *description;
    const char *header;
    const char *format;
    int allow_plain_http;
    int64_t grace_period_ms;
    int32_t current_version;
    int64_t created_ms;
    int64_t updated_ms;
    int64_t revision;
    const char *updated_by;
    const uint8_t *policy;
    size_t policy_len;
    char mac_key_id[CS_KEY_ID_LEN + 1];
    uint8_t mac[CS_MAC_LEN];
};

/* A versions row; env.ciphertext (in an arena) is NULL once destroyed. */
struct ver {
    int32_t version;
    int state;
    int64_t created_ms;
    int64_t grace_end_ms;
    int64_t destroyed_ms;
    const char *created_by;
    struct cs_sealed env; /* env.key_id = master_key_id column */
    uint8_t mac[CS_MAC_LEN];
};

static const uint8_t EMPTY[1];

const char *cs_why_str(enum cs_why why)
{
    static const char *const s[] = {
        [CS_WHY_NONE] = "",
        [CS_WHY_REVISION_MISMATCH] = "revision mismatch",
        [CS_WHY_ALREADY_EXISTS] = "credential already exists",
        [CS_WHY_NOT_FOUND] = "no such credential or version",
        [CS_WHY_VALUE_REQUIRED] = "a value is required when creating",
        [CS_WHY_VALUE_DIFFERS] = "value differs from the current one; use Rotate",
        [CS_WHY_VERSION_CURRENT] = "version is CURRENT",
        [CS_WHY_VERSION_DESTROYED] = "version destroyed",
        [CS_WHY_VERSION_EXPIRED] = "version's grace period is over",
        [CS_WHY_INVALID_FIELD] = "invalid field",
        [CS_WHY_TOO_LARGE] = "field too large",
        [CS_WHY_TAMPERED] = "stored data failed its integrity check",
        [CS_WHY_AUDIT_UNAVAILABLE] = "audit write failed",
    };

    return (unsigned)why < sizeof(s) / sizeof(s[0]) && s[why] ? s[why] : "";
}

static int fail(struct cs_change *chg, int rc, enum cs_why why, const char *field)
{
    if (chg) {
        chg->why = why;
        chg->field = field;
    }
    return rc;
}

static void tamper(const char *name, int32_t version, const char *what)
{
    char q[200];

    AL_LOG_ERROR("credstore.tamper", "credential=%s version=%d problem=\"%s\"",
                 al_log_quote(q, sizeof(q), name, strlen(name)), version, what);
}

/* ---- statements ---- */

static sqlite3_stmt *stmt(struct cs_store *s, enum st_id id)
{
    if (!s->st[id] && sqlite3_prepare_v3(s->db, SQL[id], -1, SQLITE_PREPARE_PERSISTENT, &s->st[id],
                                         NULL) != SQLITE_OK) {
        cs_sqlite_err(s->db, SQLITE_ERROR, SQL[id]);
        s->st[id] = NULL;
    }
    return s->st[id];
}

static void done(sqlite3_stmt *st)
{
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}

static int exec(sqlite3 *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

    return rc == SQLITE_OK ? 0 : cs_sqlite_err(db, rc, sql);
}

/* Steps a write statement to completion and resets it. */
static int run(struct cs_store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);

    rc = rc == SQLITE_DONE ? 0 : cs_sqlite_err(s->db, rc, what);
    done(st);
    return rc;
}

/* Steps a cached statement that returns no rows (BEGIN, COMMIT). */
static int run_cached(struct cs_store *s, enum st_id id)
{
    sqlite3_stmt *st = stmt(s, id);

    return st ? run(s, st, SQL[id]) : -EIO;
}

static int rd_begin(struct cs_store *s)
{
    return run_cached(s, S_BEGIN);
}

static void rd_end(struct cs_store *s)
{
    if (!sqlite3_get_autocommit(s->db) && run_cached(s, S_COMMIT) < 0 &&
        !sqlite3_get_autocommit(s->db))
        (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

static const char *col_str(sqlite3_stmt *st, int c, struct al_arena *a)
{
    const char *t = (const char *)sqlite3_column_text(st, c);

    return al_arena_strndup(a, t ? t : "", t ? (size_t)sqlite3_column_bytes(st, c) : 0);
}

/* Copies a blob column that must be exactly n bytes; returns 0 or -1. */
static int col_fixed(sqlite3_stmt *st, int c, void *dst, size_t n)
{
    if (sqlite3_column_bytes(st, c) != (int)n || sqlite3_column_type(st, c) != SQLITE_BLOB) {
        memset(dst, 0, n);
        return -1;
    }
    memcpy(dst, sqlite3_column_blob(st, c), n);
    return 0;
}

static void col_keyid(sqlite3_stmt *st, int c, char out[CS_KEY_ID_LEN + 1])
{
    const char *t = (const char *)sqlite3_column_text(st, c);

    snprintf(out, CS_KEY_ID_LEN + 1, "%s", t ? t : "");
}

/* ---- rows and their MACs ---- */

static int cred_mac(const struct cs_master *m, const struct cred *c, uint8_t out[CS_MAC_LEN])
{
    struct cs_buf b;
    int rc;

    cs_buf_init(&b);
    cs_buf_str(&b, "airlock/v1/credential");
    cs_buf_str(&b, c->name);
    cs_buf_i64(&b, c->type);
    cs_buf_str(&b, c->description);
    cs_buf_str(&b, c->header);
    cs_buf_str(&b, c->format);
    cs_buf_i64(&b, c->allow_plain_http);
    cs_buf_i64(&b, c->grace_period_ms);
    cs_buf_i64(&b, c->current_version);
    cs_buf_i64(&b, c->created_ms);
    cs_buf_i64(&b, c->updated_ms);
    cs_buf_i64(&b, c->revision);
    cs_buf_str(&b, c->updated_by);
    cs_buf_blob(&b, c->policy, c->policy_len);
    rc = b.err ? b.err : cs_mac(m, CS_MAC_POLICY, b.p, b.len, out);
    cs_buf_cleanup(&b);
    return rc;
}

static int ver_mac(const struct cs_master *m, const char *name, const struct ver *v,
                   uint8_t out[CS_MAC_LEN])
{
    struct cs_buf b;
    int rc;

    cs_buf_init(&b);
    cs_buf_str(&b, "airlock/v1/version");
    cs_buf_str(&b, name);
    cs_buf_i64(&b, v->version);
    cs_buf_i64(&b, v->state);
    cs_buf_i64(&b, v->created_ms);
    cs_buf_i64(&b, v->grace_end_ms);
    cs_buf_i64(&b, v->destroyed_ms);
    cs_buf_str(&b, v->created_by);
    cs_buf_str(&b, v->env.key_id);
    cs_buf_i64(&b, v->env.ciphertext != NULL);
    rc = b.err ? b.err : cs_mac(m, CS_MAC_POLICY, b.p, b.len, out);
    cs_buf_cleanup(&b);
    return rc;
}

static int cred_verify(struct cs_store *s, const struct cred *c)
{
    const struct cs_master *m = cs_keyring_find(&s->keys, c->mac_key_id);
    uint8_t want[CS_MAC_LEN];

    if (!m) {
        tamper(c->name, 0, "credential row names an unknown master key");
        return AL_ERR_CRYPTO;
    }
    if (cred_mac(m, c, want) < 0 || !cs_ct_equal(want, c->mac, CS_MAC_LEN)) {
        tamper(c->name, 0, "credential row MAC invalid (policy or template edited?)");
        return AL_ERR_CRYPTO;
    }
    return 0;
}

static int ver_verify(struct cs_store *s, const char *name, const struct ver *v)
{
    const struct cs_master *m = cs_keyring_find(&s->keys, v->env.key_id);
    uint8_t want[CS_MAC_LEN];

    if (!m) {
        tamper(name, v->version, "version row names an unknown master key");
        return AL_ERR_CRYPTO;
    }
    if (ver_mac(m, name, v, want) < 0 || !cs_ct_equal(want, v->mac, CS_MAC_LEN)) {
        tamper(name, v->version, "version row MAC invalid");
        return AL_ERR_CRYPTO;
    }
    return 0;
}

/* Reads the current row of a S_CRED_GET-shaped statement into *c (strings in a). */
static int cred_read(sqlite3_stmt *st, struct al_arena *a, struct cred *c)
{
    const void *p;

    memset(c, 0, sizeof(*c));
    c->name = col_str(st, 0, a);
    c->type = sqlite3_column_int(st, 1);
    c->description = col_str(st, 2, a);
    c->header = col_str(st, 3, a);
    c->format = col_str(st, 4, a);
    c->allow_plain_http = sqlite3_column_int(st, 5);
    c->grace_period_ms = sqlite3_column_int64(st, 6);
    c->current_version = (int32_t)sqlite3_column_int64(st, 7);
    c->created_ms = sqlite3_column_int64(st, 8);
    c->updated_ms = sqlite3_column_int64(st, 9);
    c->revision = sqlite3_column_int64(st, 10);
    c->updated_by = col_str(st, 11, a);
    c->policy_len = (size_t)sqlite3_column_bytes(st, 12);
    p = sqlite3_column_blob(st, 12);
    c->policy = EMPTY;
    if (c->policy_len) {
        uint8_t *copy = al_arena_alloc(a, c->policy_len);
        if (!copy)
            return AL_ERR_NOMEM;
        memcpy(copy, p, c->policy_len);
        c->policy = copy;
    }
    col_keyid(st, 13, c->mac_key_id);
    (void)col_fixed(st, 14, c->mac, CS_MAC_LEN); /* a wrong size fails the MAC check */
    if (!c->name || !c->description || !c->header || !c->format || !c->updated_by)
        return AL_ERR_NOMEM;
    return 0;
}

/* Loads credential name into *c. 0, AL_ERR_NOTFOUND or an error. Not verified. */
static int cred_load(struct cs_store *s, const char *name, struct al_arena *a, struct cred *c)
{
    sqlite3_stmt *st = stmt(s, S_CRED_GET);
    int rc;

    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        rc = cred_read(st, a, c);
    else
        rc = rc == SQLITE_DONE ? AL_ERR_NOTFOUND : cs_sqlite_err(s->db, rc, "read credential");
    done(st);
    return rc;
}

static int ver_read(sqlite3_stmt *st, struct al_arena *a, struct ver *v)
{
    int bad = 0;

    memset(v, 0, sizeof(*v));
    v->version = (int32_t)sqlite3_column_int64(st, 0);
    v->state = sqlite3_column_int(st, 1);
    v->created_ms = sqlite3_column_int64(st, 2);
    v->grace_end_ms = sqlite3_column_int64(st, 3);
    v->destroyed_ms = sqlite3_column_int64(st, 4);
    v->created_by = col_str(st, 5, a);
    col_keyid(st, 6, v->env.key_id);
    (void)col_fixed(st, 11, v->mac, CS_MAC_LEN);
    if (!v->created_by)
        return AL_ERR_NOMEM;
    if (sqlite3_column_type(st, 10) == SQLITE_NULL)
        return 0; /* destroyed: no envelope */
    bad |= col_fixed(st, 7, v->env.dek_nonce, CS_NONCE_LEN);
    bad |= col_fixed(st, 8, v->env.wrapped_dek, CS_WRAPPED_DEK_LEN);
    bad |= col_fixed(st, 9, v->env.value_nonce, CS_NONCE_LEN);
    v->env.ciphertext_len = (size_t)sqlite3_column_bytes(st, 10);
    v->env.ciphertext = al_arena_alloc(a, v->env.ciphertext_len + 1);
    if (!v->env.ciphertext)
        return AL_ERR_NOMEM;
    memcpy(v->env.ciphertext, sqlite3_column_blob(st, 10), v->env.ciphertext_len);
    if (bad) /* malformed envelope: cs_open will fail on it */
        v->env.ciphertext_len = 0;
    return 0;
}

static int ver_load(struct cs_store *s, const char *name, int32_t version, struct al_arena *a,
                    struct ver *v)
{
    sqlite3_stmt *st = stmt(s, S_VER_GET);
    int rc;

    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, version);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        rc = ver_read(st, a, v);
    else
        rc = rc == SQLITE_DONE ? AL_ERR_NOTFOUND : cs_sqlite_err(s->db, rc, "read version");
    done(st);
    return rc;
}

/* MACs c under the primary key and inserts or updates it. */
static int cred_write(struct cs_store *s, struct cred *c, int insert)
{
    sqlite3_stmt *st = stmt(s, insert ? S_CRED_INS : S_CRED_UPD);
    int rc;

    if (!st)
        return -EIO;
    memcpy(c->mac_key_id, cs_master_key_id(s->keys.primary), sizeof(c->mac_key_id));
    rc = cred_mac(s->keys.primary, c, c->mac);
    if (rc < 0) {
        done(st);
        return rc;
    }
    sqlite3_bind_text(st, 1, c->name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, c->type);
    sqlite3_bind_text(st, 3, c->description, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, c->header, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, c->format, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 6, c->allow_plain_http);
    sqlite3_bind_int64(st, 7, c->grace_period_ms);
    sqlite3_bind_int(st, 8, c->current_version);
    sqlite3_bind_int64(st, 9, c->created_ms);
    sqlite3_bind_int64(st, 10, c->updated_ms);
    sqlite3_bind_int64(st, 11, c->revision);
    sqlite3_bind_text(st, 12, c->updated_by, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 13, c->policy_len ? c->policy : EMPTY, (int)c->policy_len, SQLITE_STATIC);
    sqlite3_bind_text(st, 14, c->mac_key_id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 15, c->mac, CS_MAC_LEN, SQLITE_STATIC);
    return run(s, st, "write credential");
}

/* MACs v under the key its envelope names and inserts or updates it. */
static int ver_write(struct cs_store *s, const char *name, struct ver *v, int insert)
{
    sqlite3_stmt *st = stmt(s, insert ? S_VER_INS : S_VER_UPD);
    const struct cs_master *m = cs_keyring_find(&s->keys, v->env.key_id);
    const struct cs_sealed *e = &v->env;
    int rc;

    if (!st)
        return -EIO;
    if (!m)
        return AL_ERR_CRYPTO;
    rc = ver_mac(m, name, v, v->mac);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, v->version);
    sqlite3_bind_int(st, 3, v->state);
    sqlite3_bind_int64(st, 4, v->created_ms);
    sqlite3_bind_int64(st, 5, v->grace_end_ms);
    sqlite3_bind_int64(st, 6, v->destroyed_ms);
    sqlite3_bind_text(st, 7, v->created_by ? v->created_by : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, e->key_id, -1, SQLITE_STATIC);
    if (e->ciphertext) {
        sqlite3_bind_blob(st, 9, e->dek_nonce, CS_NONCE_LEN, SQLITE_STATIC);
        sqlite3_bind_blob(st, 10, e->wrapped_dek, CS_WRAPPED_DEK_LEN, SQLITE_STATIC);
        sqlite3_bind_blob(st, 11, e->value_nonce, CS_NONCE_LEN, SQLITE_STATIC);
        sqlite3_bind_blob(st, 12, e->ciphertext, (int)e->ciphertext_len, SQLITE_STATIC);
    } /* else NULL: destroyed */
    sqlite3_bind_blob(st, 13, v->mac, CS_MAC_LEN, SQLITE_STATIC);
    return run(s, st, "write version");
}

/* Overwrites the blobs of one version (0 = all versions of name) with zeros. */
static int zero_blobs(struct cs_store *s, const char *name, int32_t version)
{
    sqlite3_stmt *st = stmt(s, S_VER_ZERO);

    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, version);
    return run(s, st, "zero version");
}

/* Destroys version v of name: zeroed, then NULLed, state DESTROYED, re-MACed. */
static int destroy_version(struct cs_store *s, const char *name, struct ver *v, int64_t now)
{
    int rc = zero_blobs(s, name, v->version);

    if (rc < 0)
        return rc;
    v->state = V_DESTROYED;
    v->destroyed_ms = now;
    v->grace_end_ms = 0;
    memset(&v->env, 0, sizeof(v->env)); /* ciphertext is arena memory */
    memcpy(v->env.key_id, cs_master_key_id(s->keys.primary), sizeof(v->env.key_id));
    return ver_write(s, name, v, 0);
}

/* ---- validation ---- */

static int name_ok(const char *n)
{
    size_t len = n ? strlen(n) : 0, seg = 0;

    if (len == 0 || len > CS_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = n[i];
        if (c == '/') {
            if (seg == 0)
                return 0;
            seg = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
        seg++;
    }
    return seg > 0;
}

static int prefix_ok(const char *p)
{
    size_t len = strlen(p);

    if (len > CS_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '/'))
            return 0;
    }
    return 1;
}

static int header_ok(const char *h)
{
    static const char *const banned[] = {"host",       "content-length", "transfer-encoding",
                                         "connection", "upgrade",        "te"};
    size_t len = strlen(h);

    if (len == 0 || len > CS_TEMPLATE_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("!#$%&'*+-.^_`|~", c)))
            return 0;
    }
    for (size_t i = 0; i < sizeof(banned) / sizeof(banned[0]); i++)
        if (strcasecmp(h, banned[i]) == 0)
            return 0;
    return strncasecmp(h, "proxy-", 6) != 0 && strncasecmp(h, "airlock-", 8) != 0;
}

static int format_ok(const char *f)
{
    const char *slot = strstr(f, "{}");
    size_t len = strlen(f);

    if (!slot || len > CS_TEMPLATE_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)f[i];
        if (c != '\t' && (c < 0x20 || c > 0x7e)) /* no CR/LF: no header injection */
            return 0;
        if ((c == '{' || c == '}') && !(f + i == slot || f + i == slot + 1))
            return 0;
    }
    return 1;
}

/* Fills c's type and template fields from the request, type defaults applied. */
static int template_from(int type, const Airlock__V1__InjectionTemplate *t, struct cred *c,
                         struct cs_change *chg)
{
    const char *h = t && t->header ? t->header : "";
    const char *f = t && t->format ? t->format : "";

    switch (type) {
    case AIRLOCK__V1__CREDENTIAL_TYPE__CREDENTIAL_TYPE_BEARER_TOKEN:
        h = *h ? h : "Authorization";
        f = *f ? f : "Bearer {}";
        break;
    case AIRLOCK__V1__CREDENTIAL_TYPE__CREDENTIAL_TYPE_BASIC_AUTH:
        h = *h ? h : "Authorization";
        f = *f ? f : "Basic {}";
        break;
    case AIRLOCK__V1__CREDENTIAL_TYPE__CREDENTIAL_TYPE_HEADER_VALUE:
        f = *f ? f : "{}";
        break;
    case AIRLOCK__V1__CREDENTIAL_TYPE__CREDENTIAL_TYPE_GENERIC_SECRET:
        break;
    default:
        return fail(chg, AL_ERR_INVAL, CS_WHY_INVALID_FIELD, "type");
    }
    if (!header_ok(h))
        return fail(chg, AL_ERR_INVAL, CS_WHY_INVALID_FIELD, "template.header");
    if (!format_ok(f))
        return fail(chg, AL_ERR_INVAL, CS_WHY_INVALID_FIELD, "template.format");
    c->type = type;
    c->header = h;
    c->format = f;
    c->allow_plain_http = t && t->allow_plain_http;
    return 0;
}

/* Validates a Put and fills the metadata part of *c (strings borrowed from req). */
static int put_check(const Airlock__V1__PutCredentialRequest *req, struct cs_change *chg,
                     struct cred *c)
{
    memset(c, 0, sizeof(*c));
    if (!name_ok(req->name))
        return fail(chg, AL_ERR_INVAL, CS_WHY_INVALID_FIELD, "name");
    c->name = req->name;
    c->description = req->description ? req->description : "";
    if (strlen(c->description) > CS_DESCRIPTION_MAX)
        return fail(chg, AL_ERR_TOOBIG, CS_WHY_TOO_LARGE, "description");
    if (!req->policy)
        return fail(chg, AL_ERR_INVAL, CS_WHY_INVALID_FIELD, "policy");
    if (req->grace_period_ms < 0)
        return fail(chg, AL_ERR_INVAL, CS_WHY_INVALID_FIELD, "grace_period_ms");
    if (req->expected_revision < 0)
        return fail(chg, AL_ERR_INVAL, CS_WHY_INVALID_FIELD, "expected_revision");
    if (req->value.len > CS_VALUE_MAX)
        return fail(chg, AL_ERR_TOOBIG, CS_WHY_TOO_LARGE, "value");
    if (req->policy->max_grant_lifetime_ms < 0)
        return fail(chg, AL_ERR_INVAL, CS_WHY_INVALID_FIELD, "policy.max_grant_lifetime_ms");
    c->grace_period_ms = req->grace_period_ms;
    c->updated_by = chg->actor ? chg->actor : "";
    return template_from(req->type, req->template_, c, chg);
}

/* Serializes policy into arena memory. */
static int pack_policy(const Airlock__V1__BindingPolicy *p, struct al_arena *a, struct cred *c,
                       struct cs_change *chg)
{
    size_t n = airlock__v1__binding_policy__get_packed_size(p);
    uint8_t *buf;

    if (n > CS_POLICY_MAX)
        return fail(chg, AL_ERR_TOOBIG, CS_WHY_TOO_LARGE, "policy");
    buf = al_arena_alloc(a, n + 1);
    if (!buf)
        return AL_ERR_NOMEM;
    c->policy_len = airlock__v1__binding_policy__pack(p, buf);
    c->policy = buf;
    return 0;
}

/* ---- transactions with audit ---- */

static int wr_begin(struct cs_store *s, struct cs_change *chg)
{
    int rc = cs_audit_begin(s->audit);

    if (rc == AL_ERR_CRYPTO)
        return fail(chg, rc, CS_WHY_AUDIT_UNAVAILABLE, NULL);
    return rc;
}

/* Commits when rc == 0, else rolls back; returns the final result. */
static int wr_end(struct cs_store *s, int rc)
{
    int erc = cs_audit_end(s->audit, rc == 0, NULL);

    return rc < 0 ? rc : erc;
}

/* Appends chg->audit about (name, version) inside the write. */
static int audit_change(struct cs_store *s, struct cs_change *chg, const char *name,
                        int32_t version)
{
    Airlock__V1__AuditRecord r;
    int rc;

    if (!chg->audit)
        return 0;
    r = *chg->audit;
    r.credential = (char *)name;
    if (!r.version)
        r.version = version;
    if (!r.time_ms)
        r.time_ms = chg->now_ms;
    if (!r.decision)
        r.decision = AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW;
    rc = cs_audit_insert(s->audit, &r, &chg->audit_seq);
    return rc < 0 ? fail(chg, rc, CS_WHY_AUDIT_UNAVAILABLE, NULL) : 0;
}

static void chg_reset(struct cs_change *chg)
{
    chg->audit_seq = 0;
    chg->why = CS_WHY_NONE;
    chg->field = NULL;
}

/* ---- building Credential messages ---- */

static int to_template(const struct cred *c, struct al_arena *a,
                       Airlock__V1__InjectionTemplate **out)
{
    Airlock__V1__InjectionTemplate *t = al_arena_alloc(a, sizeof(*t));

    if (!t)
        return AL_ERR_NOMEM;
    airlock__v1__injection_template__init(t);
    t->header = al_arena_strndup(a, c->header, strlen(c->header));
    t->format = al_arena_strndup(a, c->format, strlen(c->format));
    t->allow_plain_http = c->allow_plain_http != 0;
    *out = t;
    return t->header && t->format ? 0 : AL_ERR_NOMEM;
}

static int to_policy(const struct cred *c, struct al_arena *a, Airlock__V1__BindingPolicy **out)
{
    *out = airlock__v1__binding_policy__unpack(al_arena_pb(a), c->policy_len, c->policy);
    if (!*out) {
        tamper(c->name, 0, "stored policy does not parse");
        return AL_ERR_CRYPTO;
    }
    return 0;
}

static int add_versions(struct cs_store *s, Airlock__V1__Credential *m, struct al_arena *a)
{
    sqlite3_stmt *st = stmt(s, S_VER_LIST);
    size_t cap = 8;
    int rc;

    if (!st)
        return -EIO;
    m->versions = al_arena_alloc(a, cap * sizeof(*m->versions));
    rc = m->versions ? 0 : AL_ERR_NOMEM;
    sqlite3_bind_text(st, 1, m->name, -1, SQLITE_STATIC);
    while (rc == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        Airlock__V1__CredentialVersion *cv = al_arena_alloc(a, sizeof(*cv));
        struct ver v;
        rc = cv ? ver_read(st, a, &v) : AL_ERR_NOMEM;
        if (rc == 0)
            rc = ver_verify(s, m->name, &v);
        if (rc == 0 && m->n_versions == cap) {
            void *grown = al_arena_alloc(a, 2 * cap * sizeof(*m->versions));
            rc = grown ? 0 : AL_ERR_NOMEM;
            if (grown)
                memcpy(grown, m->versions, cap * sizeof(*m->versions));
            m->versions = grown;
            cap *= 2;
        }
        if (rc < 0)
            break;
        airlock__v1__credential_version__init(cv);
        cv->version = v.version;
        cv->state = v.state;
        cv->created_ms = v.created_ms;
        cv->grace_end_ms = v.grace_end_ms;
        cv->destroyed_ms = v.destroyed_ms;
        cv->created_by = (char *)v.created_by;
        m->versions[m->n_versions++] = cv;
    }
    if (rc == SQLITE_DONE)
        rc = 0;
    else if (rc > 0)
        rc = cs_sqlite_err(s->db, rc, "list versions");
    done(st);
    return rc;
}

/* Loads, verifies and converts one credential (inside a transaction). */
static int load_credential(struct cs_store *s, const char *name, struct al_arena *a,
                           Airlock__V1__Credential **out)
{
    Airlock__V1__Credential *m;
    struct cred c;
    int rc;

    rc = cred_load(s, name, a, &c);
    if (rc == 0)
        rc = cred_verify(s, &c);
    if (rc < 0)
        return rc;
    m = al_arena_alloc(a, sizeof(*m));
    if (!m)
        return AL_ERR_NOMEM;
    airlock__v1__credential__init(m);
    m->name = (char *)c.name;
    m->type = c.type;
    m->description = (char *)c.description;
    m->grace_period_ms = c.grace_period_ms;
    m->current_version = c.current_version;
    m->created_ms = c.created_ms;
    m->updated_ms = c.updated_ms;
    m->revision = c.revision;
    m->updated_by = (char *)c.updated_by;
    rc = to_template(&c, a, &m->template_);
    if (rc == 0)
        rc = to_policy(&c, a, &m->policy);
    if (rc == 0)
        rc = add_versions(s, m, a);
    if (rc == 0)
        *out = m;
    return rc;
}

/* ---- value helpers ---- */

/* Decrypts version v of name into secure memory *out (al_secure_free). */
static int open_value(struct cs_store *s, const char *name, const struct ver *v, uint8_t **out,
                      size_t *len)
{
    const struct cs_master *m = cs_keyring_find(&s->keys, v->env.key_id);
    uint8_t *buf;
    int rc;

    *out = NULL;
    if (!v->env.ciphertext)
        return AL_ERR_NOTFOUND;
    if (!m)
        return AL_ERR_CRYPTO;
    buf = al_secure_alloc(CS_VALUE_MAX);
    if (!buf)
        return AL_ERR_NOMEM;
    rc = cs_open(m, name, v->version, &v->env, buf, CS_VALUE_MAX, len);
    if (rc < 0) {
        tamper(name, v->version, "value envelope does not open");
        al_secure_free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}

/* 0 if value equals the current value of c, 1 if it differs, < 0 on error. */
static int compare_current(struct cs_store *s, const struct cred *c, const uint8_t *value,
                           size_t len, struct al_arena *a)
{
    uint8_t *cur = NULL;
    size_t cur_len = 0;
    struct ver v;
    int rc;

    rc = ver_load(s, c->name, c->current_version, a, &v);
    if (rc == 0)
        rc = ver_verify(s, c->name, &v);
    if (rc == 0)
        rc = open_value(s, c->name, &v, &cur, &cur_len);
    if (rc == 0)
        rc = cur_len == len && cs_ct_equal(cur, value, len) ? 0 : 1;
    al_secure_free(cur);
    return rc;
}

/* Seals value as a new version of name and inserts it. */
static int add_version(struct cs_store *s, const char *name, int32_t version, const uint8_t *value,
                       size_t len, struct cs_change *chg)
{
    struct ver v;
    int rc;

    memset(&v, 0, sizeof(v));
    v.version = version;
    v.state = V_CURRENT;
    v.created_ms = chg->now_ms;
    v.created_by = chg->actor ? chg->actor : "";
    rc = cs_seal(s->keys.primary, name, version, value, len, &v.env);
    if (rc == 0)
        rc = ver_write(s, name, &v, 1);
    cs_sealed_cleanup(&v.env);
    return rc;
}

/* ---- Put ---- */

static int same_meta(const struct cred *a, const struct cred *b)
{
    return a->type == b->type && strcmp(a->description, b->description) == 0 &&
           strcmp(a->header, b->header) == 0 && strcmp(a->format, b->format) == 0 &&
           !a->allow_plain_http == !b->allow_plain_http &&
           a->grace_period_ms == b->grace_period_ms && a->policy_len == b->policy_len &&
           memcmp(a->policy, b->policy, a->policy_len) == 0;
}

static int put_update(struct cs_store *s, const Airlock__V1__PutCredentialRequest *req,
                      struct cs_change *chg, struct cred *cur, struct cred *nw,
                      struct al_arena *tmp)
{
    int rc;

    if (req->create_only)
        return fail(chg, AL_ERR_EXISTS, CS_WHY_ALREADY_EXISTS, "name");
    if (cred_verify(s, cur) < 0)
        return fail(chg, AL_ERR_CRYPTO, CS_WHY_TAMPERED, NULL);
    if (req->expected_revision && req->expected_revision != cur->revision)
        return fail(chg, AL_ERR_STATE, CS_WHY_REVISION_MISMATCH, "expected_revision");
    if (req->value.len) {
        rc = compare_current(s, cur, req->value.data, req->value.len, tmp);
        if (rc == 1)
            return fail(chg, AL_ERR_STATE, CS_WHY_VALUE_DIFFERS, "value");
        if (rc < 0)
            return fail(chg, rc, rc == AL_ERR_CRYPTO ? CS_WHY_TAMPERED : CS_WHY_NONE, NULL);
    }
    if (same_meta(cur, nw))
        return 0;
    nw->current_version = cur->current_version;
    nw->created_ms = cur->created_ms;
    nw->updated_ms = chg->now_ms;
    nw->revision = cur->revision + 1;
    return cred_write(s, nw, 0);
}

static int put_create(struct cs_store *s, const Airlock__V1__PutCredentialRequest *req,
                      struct cs_change *chg, struct cred *nw)
{
    int rc;

    if (req->expected_revision)
        return fail(chg, AL_ERR_STATE, CS_WHY_REVISION_MISMATCH, "expected_revision");
    if (req->value.len == 0)
        return fail(chg, AL_ERR_INVAL, CS_WHY_VALUE_REQUIRED, "value");
    nw->current_version = 1;
    nw->created_ms = chg->now_ms;
    nw->updated_ms = chg->now_ms;
    nw->revision = 1;
    rc = cred_write(s, nw, 1);
    if (rc == 0)
        rc = add_version(s, nw->name, 1, req->value.data, req->value.len, chg);
    return rc;
}

int cs_store_put(struct cs_store *s, const Airlock__V1__PutCredentialRequest *req,
                 struct cs_change *chg, struct al_arena *arena, Airlock__V1__Credential **out)
{
    struct al_arena tmp;
    struct cred cur, nw;
    int created = 0, rc;

    if (out)
        *out = NULL;
    if (!s || !req || !chg || (out && !arena))
        return AL_ERR_INVAL;
    chg_reset(chg);
    al_arena_init(&tmp, 0);
    rc = put_check(req, chg, &nw);
    if (rc == 0)
        rc = pack_policy(req->policy, &tmp, &nw, chg);
    if (rc < 0)
        goto out;
    rc = wr_begin(s, chg);
    if (rc < 0)
        goto out;
    rc = cred_load(s, nw.name, &tmp, &cur);
    if (rc == 0) {
        rc = put_update(s, req, chg, &cur, &nw, &tmp);
    } else if (rc == AL_ERR_NOTFOUND) {
        rc = put_create(s, req, chg, &nw);
        created = 1;
    }
    if (rc == 0)
        rc = audit_change(s, chg, nw.name, created); /* version 1 when created */
    if (rc == 0 && out)
        rc = load_credential(s, nw.name, arena, out);
    rc = wr_end(s, rc);
out:
    al_arena_cleanup(&tmp);
    if (rc < 0 && out)
        *out = NULL;
    return rc;
}

/* ---- Rotate ---- */

/* Puts the old CURRENT version into GRACE, or destroys it. */
static int retire_current(struct cs_store *s, const struct cred *c, int64_t grace, int destroy,
                          struct cs_change *chg, struct al_arena *tmp)
{
    struct ver v;
    int rc = ver_load(s, c->name, c->current_version, tmp, &v);

    if (rc == AL_ERR_NOTFOUND)
        return 0;
    if (rc < 0)
        return rc;
    /* a row that does not verify is never re-MACed into GRACE, only destroyed */
    if (destroy || grace == 0 || ver_verify(s, c->name, &v) < 0)
        return destroy_version(s, c->name, &v, chg->now_ms);
    v.state = V_GRACE;
    v.grace_end_ms = chg->now_ms > INT64_MAX - grace ? INT64_MAX : chg->now_ms + grace;
    return ver_write(s, c->name, &v, 0);
}

/* Destroys every GRACE version of name. */
static int destroy_grace(struct cs_store *s, const char *name, int64_t now, struct al_arena *tmp)
{
    sqlite3_stmt *st = stmt(s, S_VER_LIST);
    int32_t list[256];
    size_t n = 0;
    int rc = 0;

    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    while (n < 256 && sqlite3_step(st) == SQLITE_ROW)
        if (sqlite3_column_int(st, 1) == V_GRACE)
            list[n++] = (int32_t)sqlite3_column_int64(st, 0);
    done(st);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct ver v;
        rc = ver_load(s, name, list[i], tmp, &v);
        if (rc == 0)
            rc = destroy_version(s, name, &v, now);
    }
    return rc;
}

static int rotate_locked(struct cs_store *s, const Airlock__V1__RotateCredentialRequest *req,
                         struct cs_change *chg, struct al_arena *tmp, int32_t *version)
{
    struct cred c;
    int64_t grace;
    int rc;

    rc = cred_load(s, req->name, tmp, &c);
    if (rc < 0)
        return fail(chg, rc, rc == AL_ERR_NOTFOUND ? CS_WHY_NOT_FOUND : CS_WHY_NONE, "name");
    if (cred_verify(s, &c) < 0)
        return fail(chg, AL_ERR_CRYPTO, CS_WHY_TAMPERED, NULL);
    *version = c.current_version;
    if (req->expected_current_version && req->expected_current_version != c.current_version)
        return fail(chg, AL_ERR_STATE, CS_WHY_REVISION_MISMATCH, "expected_current_version");
    rc = compare_current(s, &c, req->value.data, req->value.len, tmp);
    if (rc == 0)
        return 0; /* already current: nothing to do */
    if (c.current_version == INT32_MAX)
        return fail(chg, AL_ERR_INVAL, CS_WHY_INVALID_FIELD, "name");
    grace = req->grace_period_ms > 0 ? req->grace_period_ms : c.grace_period_ms;
    rc = retire_current(s, &c, grace, req->destroy_previous, chg, tmp);
    if (rc == 0 && req->destroy_previous)
        rc = destroy_grace(s, c.name, chg->now_ms, tmp);
    if (rc == 0)
        rc = add_version(s, c.name, c.current_version + 1, req->value.data, req->value.len, chg);
    if (rc < 0)
        return rc;
    c.current_version++;
    c.revision++;
    c.updated_ms = chg->now_ms;
    c.updated_by = chg->actor ? chg->actor : "";
    *version = c.current_version;
    return cred_write(s, &c, 0);
}

int cs_store_rotate(struct cs_store *s, const Airlock__V1__RotateCredentialRequest *req,
                    struct cs_change *chg, struct al_arena *arena, Airlock__V1__Credential **out)
{
    struct al_arena tmp;
    int32_t version = 0;
    int rc;

    if (out)
        *out = NULL;
    if (!s || !req || !chg || (out && !arena))
        return AL_ERR_INVAL;
    chg_reset(chg);
    if (!name_ok(req->name))
        return fail(chg, AL_ERR_INVAL, CS_WHY_INVALID_FIELD, "name");
    if (req->value.len == 0)
        return fail(chg, AL_ERR_INVAL, CS_WHY_VALUE_REQUIRED, "value");
    if (req->value.len > CS_VALUE_MAX)
        return fail(chg, AL_ERR_TOOBIG, CS_WHY_TOO_LARGE, "value");
    if (req->grace_period_ms < 0 || req->expected_current_version < 0)
        return fail(chg, AL_ERR_INVAL, CS_WHY_INVALID_FIELD,
                    req->grace_period_ms < 0 ? "grace_period_ms" : "expected_current_version");
    al_arena_init(&tmp, 0);
    rc = wr_begin(s, chg);
    if (rc == 0) {
        rc = rotate_locked(s, req, chg, &tmp, &version);
        if (rc == 0)
            rc = audit_change(s, chg, req->name, version);
        if (rc == 0 && out)
            rc = load_credential(s, req->name, arena, out);
        rc = wr_end(s, rc);
    }
    al_arena_cleanup(&tmp);
    if (rc < 0 && out)
        *out = NULL;
    return rc;
}

/* ---- Delete ---- */

static void checkpoint(struct cs_store *s)
{
    /* best effort: fails harmlessly while other connections read */
    (void)sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
}

/* Zeroes every version's blobs, then deletes all rows of name. */
static int delete_all(struct cs_store *s, const char *name)
{
    static const enum st_id order[] = {S_VER_DEL, S_CRED_DEL}; /* versions reference credentials */
    int rc = zero_blobs(s, name, 0);

    for (size_t i = 0; rc == 0 && i < sizeof(order) / sizeof(order[0]); i++) {
        sqlite3_stmt *st = stmt(s, order[i]);
        if (!st)
            return -EIO;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        rc = run(s, st, "delete credential");
    }
    return rc;
}

static int delete_locked(struct cs_store *s, const Airlock__V1__DeleteCredentialRequest *req,
                         struct cs_change *chg, struct al_arena *tmp)
{
    struct cred c;
    struct ver v;
    int rc;

    rc = cred_load(s, req->name, tmp, &c);
    if (rc < 0)
        return fail(chg, rc, rc == AL_ERR_NOTFOUND ? CS_WHY_NOT_FOUND : CS_WHY_NONE, "name");
    if (req->expected_revision && req->expected_revision != c.revision)
        return fail(chg, AL_ERR_STATE, CS_WHY_REVISION_MISMATCH, "expected_revision");
    if (req->version == 0)
        return delete_all(s, c.name);
    if (cred_verify(s, &c) < 0)
        return fail(chg, AL_ERR_CRYPTO, CS_WHY_TAMPERED, NULL);
    rc = ver_load(s, c.name, req->version, tmp, &v);
    if (rc == 0 && v.state == V_DESTROYED)
        return fail(chg, AL_ERR_NOTFOUND, CS_WHY_VERSION_DESTROYED, "version");
    if (rc < 0)
        return fail(chg, rc, rc == AL_ERR_NOTFOUND ? CS_WHY_NOT_FOUND : CS_WHY_NONE, "version");
    if (v.version == c.current_version || v.state == V_CURRENT)
        return fail(chg, AL_ERR_STATE, CS_WHY_VERSION_CURRENT, "version");
    rc = destroy_version(s, c.name, &v, chg->now_ms);
    if (rc < 0)
        return rc;
    c.revision++;
    c.updated_ms = chg->now_ms;
    c.updated_by = chg->actor ? chg->actor : "";
    return cred_write(s, &c, 0);
}

int cs_store_delete(struct cs_store *s, const Airlock__V1__DeleteCredentialRequest *req,
                    struct cs_change *chg, struct al_arena *arena, Airlock__V1__Credential **out)
{
    struct al_arena tmp;
    int rc;

    if (out)
        *out = NULL;
    if (!s || !req || !chg || (out && !arena))
        return AL_ERR_INVAL;
    chg_reset(chg);
    if (!name_ok(req->name))
        return fail(chg, AL_ERR_INVAL, CS_WHY_INVALID_FIELD, "name");
    if (req->version < 0 || req->expected_revision < 0)
        return fail(chg, AL_ERR_INVAL, CS_WHY_INVALID_FIELD,
                    req->version < 0 ? "version" : "expected_revision");
    al_arena_init(&tmp, 0);
    rc = wr_begin(s, chg);
    if (rc == 0) {
        rc = delete_locked(s, req, chg, &tmp);
        if (rc == 0)
            rc = audit_change(s, chg, req->name, req->version);
        if (rc == 0 && out && req->version)
            rc = load_credential(s, req->name, arena, out);
        rc = wr_end(s, rc);
    }
    al_arena_cleanup(&tmp);
    if (rc == 0)
        checkpoint(s);
    else if (out)
        *out = NULL;
    return rc;
}

/* ---- Describe, List ---- */

int cs_store_describe(struct cs_store *s, const char *name, struct al_arena *arena,
                      Airlock__V1__Credential **out)
{
    int rc;

    if (!s || !name || !arena || !out)
        return AL_ERR_INVAL;
    *out = NULL;
    if (!name_ok(name))
        return AL_ERR_INVAL;
    rc = rd_begin(s);
    if (rc < 0)
        return rc;
    rc = load_credential(s, name, arena, out);
    rd_end(s);
    if (rc < 0)
        *out = NULL;
    return rc;
}

static int list_token(const char *tok, const char *prefix, char *after, size_t n)
{
    uint8_t raw[CS_NAME_MAX + 8];
    size_t len = 0;

    after[0] = '\0';
    if (!tok || !tok[0])
        return 0;
    if (al_base64_decode(tok, strlen(tok), raw, sizeof(raw), AL_BASE64_URL | AL_BASE64_NOPAD,
                         &len) < 0 ||
        len < 2 || raw[0] != 'c' || len - 1 >= n)
        return AL_ERR_INVAL;
    memcpy(after, raw + 1, len - 1);
    after[len - 1] = '\0';
    if (!name_ok(after) || strncmp(after, prefix, strlen(prefix)) != 0)
        return AL_ERR_INVAL;
    return 0;
}

static char *make_list_token(struct al_arena *a, const char *last)
{
    uint8_t raw[CS_NAME_MAX + 2];
    size_t n = strlen(last), cap = al_base64_encoded_len(n + 1, AL_BASE64_NOPAD) + 1;
    char *out = al_arena_alloc(a, cap);

    raw[0] = 'c';
    memcpy(raw + 1, last, n);
    if (!out || al_base64_encode(raw, n + 1, out, cap, AL_BASE64_URL | AL_BASE64_NOPAD, NULL) < 0)
        return NULL;
    return out;
}

/* Collects up to limit + 1 names after `after` with the prefix. */
static int list_names(struct cs_store *s, const char *prefix, const char *after, int limit,
                      struct al_arena *a, char **names, size_t *n)
{
    sqlite3_stmt *st = stmt(s, S_LIST);
    char upper[CS_NAME_MAX + 2];
    int rc;

    if (!st)
        return -EIO;
    /* every name character is below 0x7f, so [prefix, prefix "\x7f") is the prefix range */
    snprintf(upper, sizeof(upper), "%s\x7f", prefix);
    sqlite3_bind_text(st, 1, after, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, prefix, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, upper, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, limit + 1);
    *n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        names[*n] = (char *)col_str(st, 0, a);
        if (!names[(*n)++]) {
            rc = AL_ERR_NOMEM;
            break;
        }
    }
    if (rc == SQLITE_DONE)
        rc = 0;
    else if (rc > 0)
        rc = cs_sqlite_err(s->db, rc, "list credentials");
    done(st);
    return rc;
}

int cs_store_list(struct cs_store *s, const Airlock__V1__ListCredentialsRequest *req,
                  struct al_arena *arena, Airlock__V1__ListCredentialsResponse **out)
{
    const char *prefix = req && req->name_prefix ? req->name_prefix : "";
    const char *tok = req && req->page ? req->page->page_token : NULL;
    Airlock__V1__ListCredentialsResponse *resp;
    char after[CS_NAME_MAX + 1];
    int limit = CS_LIST_PAGE_DEFAULT, rc;
    char **names;
    size_t n = 0;

    if (!s || !req || !arena || !out)
        return AL_ERR_INVAL;
    *out = NULL;
    if (!prefix_ok(prefix) || list_token(tok, prefix, after, sizeof(after)) < 0)
        return AL_ERR_INVAL;
    if (req->page && req->page->page_size > 0)
        limit = req->page->page_size < CS_LIST_PAGE_MAX ? req->page->page_size : CS_LIST_PAGE_MAX;
    resp = al_arena_alloc(arena, sizeof(*resp));
    names = al_arena_alloc(arena, (size_t)(limit + 1) * sizeof(*names));
    if (!resp || !names)
        return AL_ERR_NOMEM;
    airlock__v1__list_credentials_response__init(resp);
    resp->page = al_arena_alloc(arena, sizeof(*resp->page));
    resp->credentials = al_arena_alloc(arena, (size_t)limit * sizeof(*resp->credentials));
    if (!resp->page || !resp->credentials)
        return AL_ERR_NOMEM;
    airlock__v1__page_response__init(resp->page);
    rc = rd_begin(s);
    if (rc < 0)
        return rc;
    rc = list_names(s, prefix, after, limit, arena, names, &n);
    for (size_t i = 0; rc == 0 && i < n && i < (size_t)limit; i++)
        rc = load_credential(s, names[i], arena, &resp->credentials[resp->n_credentials++]);
    rd_end(s);
    if (rc < 0)
        return rc;
    if (n > (size_t)limit) {
        resp->page->next_page_token = make_list_token(arena, names[limit - 1]);
        if (!resp->page->next_page_token)
            return AL_ERR_NOMEM;
    }
    *out = resp;
    return 0;
}

/* ---- Resolve read ---- */

/*
 * Verified-row cache. Checking a credential row and its current version row
 * (two HMACs) and unpacking the policy cost more than the rest of a read, and
 * most Resolves ask for the same few credentials. An entry keeps the rows of
 * one credential as read and verified, with the unpacked policy, and is used
 * only while nothing at all has changed in the database since it was filled:
 * PRAGMA data_version, read inside the same read transaction, changes with
 * every commit of any other connection (this process's commit thread,
 * airlockctl, an editor on the file), and sqlite3_total_changes64() with
 * every row this connection writes. Any change refills the entry from the
 * rows, MACs checked again, so an edited row is refused exactly as without
 * the cache. Values are never cached: each read decrypts its own (AEAD
 * checked), and GRACE/expiry is decided per read. Direct-mapped by name.
 *
 * Most reads need no transaction at all: an entry also keeps the WAL-index
 * header (wal_header) as it stood before and after the read transaction that
 * last confirmed it. SQLite rewrites that header on every commit of every
 * connection (the frame count, checksums and salts change) and itself
 * reuses its page cache only while the header is byte for byte the same. So
 * while the header, read consistently, equals the entry's and this
 * connection wrote nothing, nothing was committed since and the entry is
 * used as it is; anything else takes the transaction path described first.
 */
#define VC_SLOTS       64
#define WAL_HDR_LEN    48      /* one copy of the WAL-index header (SQLite's WalIndexHdr) */
#define WAL_HDR_VER    3007000 /* its iVersion since SQLite 3.7.0 */
#define WAL_SHM_REGION 32768   /* SQLite's wal-index region size; the header is in region 0 */

struct vc_entry {
    struct al_arena mem; /* the rows and the policy below */
    int used;
    int64_t dv;            /* PRAGMA data_version when filled */
    sqlite3_int64 changes; /* sqlite3_total_changes64() when filled */
    int tagged;            /* tag holds the WAL-index header the entry is current for */
    uint8_t tag[WAL_HDR_LEN];
    struct cred c; /* verified */
    struct ver v;  /* verified: the version asked for (cached: the current one) */
    Airlock__V1__BindingPolicy *policy; /* c.policy unpacked */
};

/*
 * Borrows SQLite's own mapping of the first region of <db>-shm (the
 * connection's VFS file, xShmMap without extending): valid while the
 * connection is open. Never open and close the -shm file here instead: POSIX
 * locks belong to the process, and closing any descriptor of the file drops
 * the locks SQLite holds on it, after which another process opening the
 * database would take the shared memory as unused and reset it. Without the
 * mapping every read takes the transaction path.
 */
static void shm_map(struct cs_store *s)
{
    sqlite3_file *f = NULL;
    void volatile *p = NULL;

    if (sqlite3_file_control(s->db, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f ||
        !f->pMethods || f->pMethods->iVersion < 2 || !f->pMethods->xShmMap)
        return;
    if (f->pMethods->xShmMap(f, 0, WAL_SHM_REGION, 0, &p) == SQLITE_OK && p)
        s->shm = p;
}

/*
 * Reads the WAL-index header the way SQLite's readers do: the first copy,
 * a barrier, the second copy (writers write the second, then the first);
 * both equal, initialised and of the known version, else it is being
 * written (or is not what we know). Returns 0 with out filled, or -1.
 */
static int wal_header(const struct cs_store *s, uint8_t out[WAL_HDR_LEN])
{
    uint8_t h2[WAL_HDR_LEN];
    uint32_t ver;

    if (!s->shm)
        return -1;
    for (size_t i = 0; i < WAL_HDR_LEN; i++)
        out[i] = s->shm[i];
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    for (size_t i = 0; i < WAL_HDR_LEN; i++)
        h2[i] = s->shm[WAL_HDR_LEN + i];
    memcpy(&ver, out, sizeof(ver)); /* native byte order, as SQLite writes it */
    if (memcmp(out, h2, WAL_HDR_LEN) != 0 || ver != WAL_HDR_VER || out[12] == 0 /* isInit */)
        return -1;
    return 0;
}

static void vc_clear(struct vc_entry *e)
{
    al_arena_cleanup(&e->mem);
    e->used = 0;
    e->tagged = 0;
}

static uint32_t vc_slot(const char *name)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % VC_SLOTS;
}

_Static_assert(CS_STORE_WAL_TAG_LEN == WAL_HDR_LEN, "a step carries whole WAL-index headers");

/* iChange of a WAL-index header (native byte order, as SQLite writes it). */
static uint32_t wal_ichange(const uint8_t h[WAL_HDR_LEN])
{
    uint32_t v;

    memcpy(&v, h + 8, sizeof(v));
    return v;
}

/* The audit chain's transaction observer (cs_audit_set_txn_observer). */
static void audit_observe(void *arg, int phase)
{
    struct cs_store *s = arg;
    struct cs_store_audit_step *st = &s->step;

    if (phase == CS_AUDIT_TXN_BEGUN) {
        st->ok = wal_header(s, st->before) == 0 ? -1 : 0; /* -1: begun, header read */
        return;
    }
    st->ok = st->ok == -1 && wal_header(s, st->after) == 0 &&
             wal_ichange(st->after) == wal_ichange(st->before) + 1u;
    if (st->ok == 1 && s->on_step)
        s->on_step(s->on_step_arg, st);
}

void cs_store_on_audit_step(struct cs_store *s,
                            void (*fn)(void *arg, const struct cs_store_audit_step *step),
                            void *arg)
{
    if (s) {
        s->on_step = fn;
        s->on_step_arg = arg;
    }
}

void cs_store_audit_follow(struct cs_store *s, const struct cs_store_audit_step *step)
{
    if (!s || !s->vc || !step || step->ok != 1)
        return;
    for (int i = 0; i < VC_SLOTS; i++) {
        struct vc_entry *e = &s->vc[i];
        if (e->used && e->tagged && memcmp(e->tag, step->before, WAL_HDR_LEN) == 0)
            memcpy(e->tag, step->after, WAL_HDR_LEN);
    }
}

/* Reads and verifies name's row and version `version` (0 = current) into e. */
static int vc_fill(struct cs_store *s, const char *name, int32_t version, struct vc_entry *e,
                   enum cs_why *why)
{
    int rc;

    vc_clear(e);
    al_arena_init(&e->mem, 0);
    e->tagged = 0;
    rc = cred_load(s, name, &e->mem, &e->c);
    if (rc < 0) {
        *why = rc == AL_ERR_NOTFOUND ? CS_WHY_NOT_FOUND : CS_WHY_NONE;
        return rc;
    }
    rc = cred_verify(s, &e->c);
    if (rc == 0)
        rc = ver_load(s, name, version ? version : e->c.current_version, &e->mem, &e->v);
    if (rc == AL_ERR_NOTFOUND) {
        *why = CS_WHY_NOT_FOUND;
        return rc;
    }
    if (rc == 0)
        rc = ver_verify(s, name, &e->v);
    if (rc == 0 && e->v.state == V_CURRENT && e->v.version != e->c.current_version) {
        tamper(name, e->v.version, "CURRENT version is not the credential's current version");
        rc = AL_ERR_CRYPTO;
    }
    if (rc == 0)
        rc = to_policy(&e->c, &e->mem, &e->policy);
    if (rc < 0) {
        *why = rc == AL_ERR_CRYPTO ? CS_WHY_TAMPERED : CS_WHY_NONE;
        return rc;
    }
    e->used = 1;
    return 0;
}

/* The verified rows for (name, version), from the cache when nothing changed. */
static int rows_get(struct cs_store *s, const char *name, int32_t version, struct vc_entry *tmp,
                    struct vc_entry **out, enum cs_why *why)
{
    sqlite3_stmt *st = stmt(s, S_DATA_VERSION);
    struct vc_entry *e = tmp;
    int64_t dv = 0;
    int rc;

    *out = NULL;
    if (!st)
        return -EIO;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        dv = sqlite3_column_int64(st, 0);
    done(st);
    if (rc != SQLITE_ROW)
        return cs_sqlite_err(s->db, rc, "data_version");
    if (version == 0 && s->vc) {
        sqlite3_int64 changes = sqlite3_total_changes64(s->db);
        e = &s->vc[vc_slot(name)];
        if (e->used && e->dv == dv && e->changes == changes && strcmp(e->c.name, name) == 0) {
            *out = e;
            return 0;
        }
        rc = vc_fill(s, name, 0, e, why);
        e->dv = dv;
        e->changes = changes;
    } else {
        rc = vc_fill(s, name, version, e, why);
    }
    if (rc < 0) {
        vc_clear(e); /* nothing unverified stays behind */
        return rc;
    }
    *out = e;
    return 0;
}

/* Decides whether version e->v may be released now and decrypts it. */
static int release(struct cs_store *s, const struct vc_entry *e, const char *name, int64_t now,
                   uint8_t *value, size_t cap, struct al_arena *a, struct cs_value_info *info,
                   enum cs_why *why)
{
    const struct ver *v = &e->v;
    const struct cs_master *m;
    int rc;

    if (v->state == V_DESTROYED || !v->env.ciphertext) {
        *why = CS_WHY_VERSION_DESTROYED;
        return AL_ERR_NOTFOUND;
    }
    if (v->state != V_CURRENT && (v->state != V_GRACE || now >= v->grace_end_ms)) {
        *why = CS_WHY_VERSION_EXPIRED;
        return AL_ERR_EXPIRED;
    }
    m = cs_keyring_find(&s->keys, v->env.key_id);
    rc = m ? cs_open(m, name, v->version, &v->env, value, cap, &info->len) : AL_ERR_CRYPTO;
    if (rc == AL_ERR_CRYPTO) {
        tamper(name, v->version, "value envelope does not open");
        *why = CS_WHY_TAMPERED;
    }
    if (rc < 0)
        return rc;
    info->version = v->version;
    info->type = e->c.type;
    info->grace_period_ms = e->c.grace_period_ms;
    info->grace_end_ms = v->state == V_GRACE ? v->grace_end_ms : 0;
    info->policy = e->policy;
    rc = to_template(&e->c, a, &info->tmpl);
    if (rc < 0)
        cs_cleanse(value, info->len);
    return rc;
}

int cs_store_get_value(struct cs_store *s, const char *name, int32_t version, int64_t now_ms,
                       uint8_t *value, size_t cap, struct al_arena *arena,
                       struct cs_value_info *info, enum cs_why *why)
{
    struct vc_entry tmp = {0}, *e = NULL;
    uint8_t h1[WAL_HDR_LEN], h2[WAL_HDR_LEN];
    enum cs_why dummy;
    int rc, t1;

    if (!why)
        why = &dummy;
    *why = CS_WHY_NONE;
    if (!s || !name || !value || !arena || !info || version < 0)
        return AL_ERR_INVAL;
    memset(info, 0, sizeof(*info));
    if (!name_ok(name))
        return AL_ERR_INVAL;
    al_arena_init(&tmp.mem, 0);
    t1 = wal_header(s, h1);
    if (version == 0 && s->vc && t1 == 0) {
        e = &s->vc[vc_slot(name)];
        if (!(e->used && e->tagged && memcmp(e->tag, h1, WAL_HDR_LEN) == 0 &&
              e->changes == sqlite3_total_changes64(s->db) && strcmp(e->c.name, name) == 0))
            e = NULL;
    }
    if (e) { /* nothing committed since the entry was confirmed: no transaction */
        rc = release(s, e, name, now_ms, value, cap, arena, info, why);
        info->cached = rc == 0;
        goto out;
    }
    rc = rd_begin(s);
    if (rc < 0)
        goto out;
    rc = rows_get(s, name, version, &tmp, &e, why);
    rd_end(s);
    if (rc == 0 && e != &tmp) {
        /* confirmed by the transaction; tag it if no commit came in between */
        e->tagged = t1 == 0 && wal_header(s, h2) == 0 && memcmp(h1, h2, WAL_HDR_LEN) == 0;
        if (e->tagged)
            memcpy(e->tag, h1, WAL_HDR_LEN);
    }
    if (rc == 0)
        rc = release(s, e, name, now_ms, value, cap, arena, info, why);
out:
    if (rc < 0) {
        info->len = 0;
        info->policy = NULL;
    } else if (tmp.used) {
        /* not cached: the policy must outlive tmp, in the caller's arena */
        rc = to_policy(&tmp.c, arena, &info->policy);
        if (rc < 0) {
            cs_cleanse(value, info->len);
            info->len = 0;
        }
    }
    vc_clear(&tmp);
    return rc;
}

/* ---- sweep ---- */

struct expired {
    const char *name;
    int32_t version;
};

static int sweep_one(struct cs_store *s, const struct expired *e, int64_t now, const char *actor,
                     struct al_arena *tmp)
{
    Airlock__V1__AuditRecord r = AIRLOCK__V1__AUDIT_RECORD__INIT;
    struct cred c;
    struct ver v;
    int rc;

    rc = ver_load(s, e->name, e->version, tmp, &v);
    if (rc == 0)
        rc = destroy_version(s, e->name, &v, now);
    if (rc < 0)
        return rc;
    r.time_ms = now;
    r.action = AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_VERSION_DESTROYED;
    r.decision = AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW;
    r.caller = (char *)actor;
    r.credential = (char *)e->name;
    r.version = e->version;
    r.reason = "grace period ended";
    rc = cs_audit_insert(s->audit, &r, NULL);
    if (rc < 0)
        return rc;
    /* a tampered credential row stays refused: it is not re-MACed */
    if (cred_load(s, e->name, tmp, &c) < 0 || cred_verify(s, &c) < 0)
        return 0;
    c.revision++;
    c.updated_ms = now;
    c.updated_by = actor;
    return cred_write(s, &c, 0);
}

int cs_store_sweep(struct cs_store *s, int64_t now_ms, const char *actor, int *destroyed)
{
    struct expired list[256];
    struct al_arena tmp;
    size_t n;
    int rc, total = 0;

    if (destroyed)
        *destroyed = 0;
    if (!s)
        return AL_ERR_INVAL;
    if (!actor)
        actor = "";
    do {
        sqlite3_stmt *st;
        al_arena_init(&tmp, 0);
        n = 0;
        rc = cs_audit_begin(s->audit);
        if (rc < 0)
            break;
        st = stmt(s, S_EXPIRED);
        rc = st ? 0 : -EIO;
        if (st) {
            sqlite3_bind_int64(st, 1, now_ms);
            while (n < 256 && sqlite3_step(st) == SQLITE_ROW) {
                list[n].name = col_str(st, 0, &tmp);
                list[n].version = (int32_t)sqlite3_column_int64(st, 1);
                if (list[n++].name == NULL)
                    rc = AL_ERR_NOMEM;
            }
            done(st);
        }
        for (size_t i = 0; rc == 0 && i < n; i++)
            rc = sweep_one(s, &list[i], now_ms, actor, &tmp);
        rc = wr_end(s, rc);
        al_arena_cleanup(&tmp);
        if (rc == 0)
            total += (int)n;
    } while (rc == 0 && n == 256);
    if (total)
        checkpoint(s);
    if (destroyed)
        *destroyed = total;
    return rc;
}

/* ---- open and close ---- */

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
        AL_LOG_WARN("credstore.data_dir",
                    "path=%s mode=%04o problem=\"group or others have "
                    "access; chmod 700\"",
                    dir, (unsigned)(st.st_mode & 07777));
    return 0;
}

static int pragmas(struct cs_store *s)
{
    sqlite3_stmt *st = NULL;
    int rc, wal = 0;

    sqlite3_busy_timeout(s->db, s->busy_ms);
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
    if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK)
        return cs_sqlite_err(s->db, SQLITE_ERROR, "journal_mode");
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        wal = strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return cs_sqlite_err(s->db, rc, "journal_mode");
    if (!wal) {
        AL_LOG_ERROR("credstore.open", "problem=\"database refuses WAL mode\"");
        return AL_ERR_STATE;
    }
    /* cache_size: the audit table's indexes stay in memory (16 MiB per
     * connection) instead of being read back with a pread(2) per page */
    rc = exec(s->db, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
                     " PRAGMA secure_delete=ON; PRAGMA cell_size_check=ON;"
                     " PRAGMA cache_size=-16384;");
    if (rc == 0) {
        int src = sqlite3_wal_autocheckpoint(s->db, CS_WAL_CHECKPOINT_FRAMES);
        if (src != SQLITE_OK)
            rc = cs_sqlite_err(s->db, src, "wal_autocheckpoint");
    }
    return rc;
}

static int keys_copy(struct cs_store *s, const struct cs_keyring *k)
{
    if (!k->primary || (k->n_previous && !k->previous))
        return AL_ERR_INVAL;
    s->keys = *k;
    if (k->n_previous) {
        s->prev = calloc(k->n_previous, sizeof(*s->prev));
        if (!s->prev)
            return AL_ERR_NOMEM;
        memcpy(s->prev, k->previous, k->n_previous * sizeof(*s->prev));
        s->keys.previous = s->prev;
    }
    return 0;
}

/*
 * A missing database file is created 0600 before SQLite sees it (-wal and
 * -shm inherit the mode), when create is set. An existing one is only
 * looked at, never opened: this process may already have it open through
 * another connection (the service's commit thread), and closing any
 * descriptor of a file drops every POSIX lock the process holds on it,
 * SQLite's included. Returns 0, AL_ERR_NOTFOUND or -errno.
 */
static int db_file_check(const char *path, int create)
{
    struct stat st;
    int fd;

    if (lstat(path, &st) == 0) {
        if (!S_ISREG(st.st_mode))
            return -EINVAL;
        return access(path, R_OK | W_OK) == 0 ? 0 : -errno;
    }
    if (errno != ENOENT)
        return -errno;
    if (!create)
        return AL_ERR_NOTFOUND;
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return errno == EEXIST ? 0 : -errno; /* created meanwhile by another opener */
    close(fd);
    return 0;
}

/* Allocates s, creates the directory and the database file, opens the connection. */
static int store_new(const char *dir, const struct cs_keyring *keys, int busy_ms, int create,
                     struct cs_store **out)
{
    struct cs_store *s = calloc(1, sizeof(*s));
    int rc;

    *out = NULL;
    if (!s)
        return AL_ERR_NOMEM;
    s->busy_ms = busy_ms > 0 ? busy_ms : CS_BUSY_TIMEOUT_MS;
    s->vc = calloc(VC_SLOTS, sizeof(*s->vc)); /* none: every read verifies afresh */
    rc = keys_copy(s, keys);
    if (rc == 0 &&
        (!(s->dir = strdup(dir)) || asprintf(&s->db_path, "%s/%s", dir, CS_STORE_DB_FILE) < 0)) {
        s->db_path = NULL;
        rc = AL_ERR_NOMEM;
    }
    if (rc == 0 && create)
        rc = make_dir(dir);
    if (rc == 0)
        rc = db_file_check(s->db_path, create);
    if (rc == 0) {
        int src = sqlite3_open_v2(
            s->db_path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW,
            NULL);
        rc = src == SQLITE_OK ? 0 : cs_sqlite_err(s->db, src, "open database");
    }
    if (rc == 0)
        rc = pragmas(s);
    if (rc < 0) {
        cs_store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

static int meta_get(struct cs_store *s, const char *k, struct al_arena *a, const void **v,
                    size_t *len)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (sqlite3_prepare_v2(s->db, "SELECT v FROM meta WHERE k = ?", -1, &st, NULL) != SQLITE_OK)
        return cs_sqlite_err(s->db, SQLITE_ERROR, "meta");
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *len = (size_t)sqlite3_column_bytes(st, 0);
        *v = al_arena_alloc(a, *len + 1);
        if (*v) {
            memcpy((void *)*v, sqlite3_column_blob(st, 0), *len);
            ((char *)*v)[*len] = '\0';
        }
        rc = *v ? 0 : AL_ERR_NOMEM;
    } else {
        rc = rc == SQLITE_DONE ? AL_ERR_NOTFOUND : cs_sqlite_err(s->db, rc, "meta");
    }
    sqlite3_finalize(st);
    return rc;
}

static int meta_put(struct cs_store *s, const char *k, const void *v, size_t len)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO meta(k, v) VALUES(?, ?)", -1, &st,
                           NULL) != SQLITE_OK)
        return cs_sqlite_err(s->db, SQLITE_ERROR, "meta");
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, v, (int)len, SQLITE_STATIC);
    rc = sqlite3_step(st);
    rc = rc == SQLITE_DONE ? 0 : cs_sqlite_err(s->db, rc, "meta");
    sqlite3_finalize(st);
    return rc;
}

/* Writes master_key_id and master_check for m. */
static int meta_set_master(struct cs_store *s, const struct cs_master *m)
{
    uint8_t check[CS_MAC_LEN];
    const char *id = cs_master_key_id(m);
    int rc = cs_mac(m, CS_MAC_CHECK, CHECK_TEXT, sizeof(CHECK_TEXT) - 1, check);

    if (rc == 0)
        rc = meta_put(s, "master_key_id", id, strlen(id));
    if (rc == 0)
        rc = meta_put(s, "master_check", check, sizeof(check));
    return rc;
}

/* Creates the schema on a fresh database (if create); checks its version otherwise. */
static int schema_init(struct cs_store *s, int create)
{
    static const char version[] = "1";
    struct al_arena a;
    const void *v = NULL;
    size_t len = 0;
    int rc;

    al_arena_init(&a, 0);
    rc = exec(s->db, "BEGIN IMMEDIATE");
    if (rc < 0)
        return rc;
    rc = create ? exec(s->db, SCHEMA) : 0;
    if (rc == 0 && create)
        rc = cs_audit_schema(s->db);
    if (rc == 0)
        rc = meta_get(s, "schema_version", &a, &v, &len);
    if (rc == AL_ERR_NOTFOUND && !create) {
        AL_LOG_ERROR("credstore.open", "problem=\"no credential store in this directory\"");
    } else if (rc == AL_ERR_NOTFOUND) {
        rc = meta_put(s, "schema_version", version, 1);
        if (rc == 0)
            rc = meta_set_master(s, s->keys.primary);
        if (rc == 0)
            AL_LOG_INFO("credstore.open", "note=\"created a new database\" key_id=%s",
                        cs_master_key_id(s->keys.primary));
    } else if (rc == 0 && (len != 1 || memcmp(v, version, 1) != 0)) {
        AL_LOG_ERROR("credstore.open", "problem=\"unsupported schema version %.16s\"",
                     (const char *)v);
        rc = AL_ERR_CONFIG;
    }
    if (rc == 0)
        rc = cs_audit_migrate(s->db);
    if (rc == 0)
        rc = exec(s->db, "COMMIT");
    if (rc < 0 && !sqlite3_get_autocommit(s->db))
        (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    al_arena_cleanup(&a);
    return rc;
}

/* The database's master key must be one of the ring; returns it in *m. */
static int master_check(struct cs_store *s, const struct cs_master **m)
{
    const void *id = NULL, *check = NULL;
    size_t idlen = 0, clen = 0;
    struct al_arena a;
    int rc;

    al_arena_init(&a, 0);
    rc = meta_get(s, "master_key_id", &a, &id, &idlen);
    if (rc == 0)
        rc = meta_get(s, "master_check", &a, &check, &clen);
    if (rc == AL_ERR_NOTFOUND) {
        AL_LOG_ERROR("credstore.open", "problem=\"database has no master key check\"");
        rc = AL_ERR_CRYPTO;
    }
    if (rc < 0)
        goto out;
    *m = cs_keyring_find(&s->keys, id);
    if (!*m) {
        AL_LOG_ERROR("credstore.open",
                     "problem=\"master key does not match this database (key id %s, "
                     "database expects %.16s)\"",
                     cs_master_key_id(s->keys.primary), (const char *)id);
        rc = AL_ERR_CRYPTO;
    } else if (clen != CS_MAC_LEN ||
               cs_mac_verify(*m, CS_MAC_CHECK, CHECK_TEXT, sizeof(CHECK_TEXT) - 1, check) < 0) {
        AL_LOG_ERROR("credstore.open",
                     "problem=\"master key check value does not verify "
                     "(key id %.16s); database altered\"",
                     (const char *)id);
        rc = AL_ERR_CRYPTO;
    } else if (*m != s->keys.primary) {
        AL_LOG_WARN("credstore.open",
                    "problem=\"database is still under previous master key "
                    "%s; run airlockctl keys rotate-master\"",
                    cs_master_key_id(*m));
    }
out:
    al_arena_cleanup(&a);
    return rc;
}

/* Every key id named by a row must be in the ring. */
static int key_scan(struct cs_store *s)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (sqlite3_prepare_v2(s->db,
                           "SELECT master_key_id FROM versions UNION"
                           " SELECT mac_key_id FROM credentials",
                           -1, &st, NULL) != SQLITE_OK)
        return cs_sqlite_err(s->db, SQLITE_ERROR, "key scan");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        if (!cs_keyring_find(&s->keys, id ? id : "")) {
            AL_LOG_ERROR("credstore.open",
                         "problem=\"rows are under master key %.16s, which "
                         "is not configured\"",
                         id ? id : "");
            rc = AL_ERR_CRYPTO;
            break;
        }
    }
    if (rc == SQLITE_DONE)
        rc = 0;
    else if (rc > 0)
        rc = cs_sqlite_err(s->db, rc, "key scan");
    sqlite3_finalize(st);
    return rc;
}

int cs_store_open(const struct cs_store_opts *opts, struct cs_store **out)
{
    const struct cs_master *m = NULL;
    struct cs_store *s = NULL;
    int rc;

    if (!opts || !opts->data_dir || !opts->keys.primary || !out)
        return AL_ERR_INVAL;
    *out = NULL;
    rc = store_new(opts->data_dir, &opts->keys, opts->busy_timeout_ms, !opts->no_create, &s);
    if (rc < 0)
        return rc;
    rc = schema_init(s, !opts->no_create);
    if (rc == 0)
        rc = master_check(s, &m);
    if (rc == 0)
        rc = key_scan(s);
    if (rc == 0)
        rc = cs_audit_new(s->db, s->dir, &s->keys, &s->audit);
    if (rc < 0) {
        cs_store_close(s);
        return rc;
    }
    shm_map(s);
    cs_audit_set_txn_observer(s->audit, audit_observe, s);
    *out = s;
    return 0;
}

void cs_store_close(struct cs_store *s)
{
    if (!s)
        return;
    cs_audit_free(s->audit);
    s->shm = NULL; /* SQLite's mapping, gone with the connection */
    for (int i = 0; s->vc && i < VC_SLOTS; i++)
        vc_clear(&s->vc[i]);
    free(s->vc);
    for (int i = 0; i < N_ST; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_close(s->db);
    free(s->prev);
    free(s->db_path);
    free(s->dir);
    free(s);
}

struct cs_audit *cs_store_audit(struct cs_store *s)
{
    return s ? s->audit : NULL;
}

/* ---- backup ---- */

static int fsync_path(const char *path, int dir)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | (dir ? O_DIRECTORY : 0));
    int rc = 0;

    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

static int parent_dir(const char *path, char *dir, size_t n)
{
    const char *slash = strrchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) : 1;

    if (len >= n)
        return -ENAMETOOLONG;
    if (!slash)
        memcpy(dir, ".", 2);
    else if (len == 0)
        memcpy(dir, "/", 2);
    else {
        memcpy(dir, path, len);
        dir[len] = '\0';
    }
    return 0;
}

/* Copies the source snapshot into dst with sqlite3_backup, 256 pages per step. */
static int copy_db(sqlite3 *src, sqlite3 *dst)
{
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    int rc;

    if (!b)
        return cs_sqlite_err(dst, sqlite3_errcode(dst), "backup init");
    do {
        rc = sqlite3_backup_step(b, 256);
        if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
            sqlite3_sleep(5);
    } while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
    rc = sqlite3_backup_finish(b);
    return rc == SQLITE_OK ? 0 : cs_sqlite_err(dst, rc, "backup");
}

int cs_store_audit_local(struct cs_store *s, const Airlock__V1__AuditRecord *rec, int64_t *seq)
{
    int rc;

    if (!s || !rec)
        return AL_ERR_INVAL;
    rc = cs_audit_begin(s->audit);
    if (rc < 0)
        return rc;
    rc = cs_audit_insert(s->audit, rec, seq);
    return wr_end(s, rc);
}

int cs_store_backup(struct cs_store *s, const char *dest)
{
    char tmp[PATH_MAX], head[PATH_MAX], dir[PATH_MAX];
    struct cs_audit_headrec h;
    sqlite3 *src = NULL, *dst = NULL;
    int fd, rc, have_head = 0;

    if (!s || !dest || !dest[0])
        return AL_ERR_INVAL;
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", dest) >= sizeof(tmp) ||
        (size_t)snprintf(head, sizeof(head), "%s.audit.head", dest) >= sizeof(head) ||
        parent_dir(dest, dir, sizeof(dir)) < 0)
        return -ENAMETOOLONG;
    if (access(dest, F_OK) == 0)
        return AL_ERR_EXISTS;
    fd = mkostemp(tmp, O_CLOEXEC); /* 0600 */
    if (fd < 0)
        return -errno;
    close(fd);
    rc = sqlite3_open_v2(s->db_path, &src, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    rc = rc == SQLITE_OK ? 0 : cs_sqlite_err(src, rc, "backup open source");
    if (rc == 0) {
        sqlite3_busy_timeout(src, s->busy_ms);
        rc = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        rc = rc == SQLITE_OK ? 0 : cs_sqlite_err(dst, rc, "backup open destination");
    }
    /* one read transaction on the source: every step copies the same snapshot */
    if (rc == 0)
        rc = exec(src, "BEGIN");
    if (rc == 0) {
        rc = cs_audit_meta_head(src, &h);
        have_head = rc == 0;
        rc = rc == AL_ERR_NOTFOUND ? 0 : rc;
    }
    if (rc == 0)
        rc = copy_db(src, dst);
    if (src && !sqlite3_get_autocommit(src))
        exec(src, "COMMIT");
    sqlite3_close(src);
    if (dst && sqlite3_close(dst) != SQLITE_OK && rc == 0)
        rc = -EIO;
    if (rc == 0)
        rc = fsync_path(tmp, 0);
    if (rc == 0 && link(tmp, dest) < 0) /* link, not rename: never replace an existing file */
        rc = errno == EEXIST ? AL_ERR_EXISTS : -errno;
    unlink(tmp);
    if (rc == 0 && have_head)
        rc = cs_audit_write_head_file(head, &h);
    if (rc == 0)
        rc = fsync_path(dir, 1);
    if (rc == 0)
        AL_LOG_INFO("credstore.backup", "audit_head_seq=%" PRId64, have_head ? h.seq : 0);
    return rc;
}

/* ---- master key rotation ---- */

/* Moves one version row to s->keys.primary. Returns 0, 1 (refused) or < 0. */
static int rekey_version(struct cs_store *s, const char *name, int32_t version,
                         struct cs_rotate_stats *st)
{
    const struct cs_master *to = s->keys.primary, *from;
    struct al_arena a;
    struct ver v;
    int rc;

    al_arena_init(&a, 0);
    rc = ver_load(s, name, version, &a, &v);
    if (rc < 0 || strcmp(v.env.key_id, cs_master_key_id(to)) == 0)
        goto out;
    from = cs_keyring_find(&s->keys, v.env.key_id);
    if (!from || ver_verify(s, name, &v) < 0) {
        rc = 1;
        goto out;
    }
    if (v.env.ciphertext) {
        if (cs_rewrap(from, to, name, v.version, &v.env) < 0) {
            tamper(name, v.version, "data key does not unwrap; not re-wrapped");
            rc = 1;
            goto out;
        }
        st->versions_rewrapped++;
    } else {
        memcpy(v.env.key_id, cs_master_key_id(to), sizeof(v.env.key_id));
        st->rows_remaced++;
    }
    rc = ver_write(s, name, &v, 0);
out:
    al_arena_cleanup(&a);
    if (rc == 1)
        st->refused++;
    return rc;
}

/* Moves one credential row's MAC to s->keys.primary. Returns 0, 1 (refused) or < 0. */
static int rekey_cred(struct cs_store *s, const char *name, struct cs_rotate_stats *st)
{
    struct al_arena a;
    struct cred c;
    int rc;

    al_arena_init(&a, 0);
    rc = cred_load(s, name, &a, &c);
    if (rc < 0 || strcmp(c.mac_key_id, cs_master_key_id(s->keys.primary)) == 0)
        goto out;
    if (cred_verify(s, &c) < 0) {
        rc = 1;
        st->refused++;
        goto out;
    }
    rc = cred_write(s, &c, 0);
    if (rc == 0)
        st->rows_remaced++;
out:
    al_arena_cleanup(&a);
    return rc == AL_ERR_NOTFOUND ? 0 : rc;
}

/*
 * One pass over a table in primary-key order, ROTATE_BATCH rows per
 * transaction. versions != 0 walks versions, else credentials.
 */
static int rekey_pass(struct cs_store *s, int versions, struct cs_rotate_stats *stats)
{
    const char *sql = versions
                          ? "SELECT name, version FROM versions WHERE (name, version) > (?1, ?2)"
                            " ORDER BY name, version LIMIT 64"
                          : "SELECT name, 0 FROM credentials WHERE name > ?1"
                            " ORDER BY name LIMIT 64";
    char names[ROTATE_BATCH][CS_NAME_MAX + 1], last[CS_NAME_MAX + 1] = "";
    int32_t vers[ROTATE_BATCH], lastv = 0;
    sqlite3_stmt *st = NULL;
    size_t n;
    int rc;

    do {
        n = 0;
        rc = exec(s->db, "BEGIN IMMEDIATE");
        if (rc < 0)
            return rc;
        rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK
                 ? 0
                 : cs_sqlite_err(s->db, SQLITE_ERROR, "rekey");
        if (rc == 0) {
            sqlite3_bind_text(st, 1, last, -1, SQLITE_STATIC);
            if (versions)
                sqlite3_bind_int(st, 2, lastv);
            while (n < ROTATE_BATCH && sqlite3_step(st) == SQLITE_ROW) {
                const char *t = (const char *)sqlite3_column_text(st, 0);
                snprintf(names[n], sizeof(names[n]), "%s", t ? t : "");
                vers[n++] = (int32_t)sqlite3_column_int64(st, 1);
            }
            sqlite3_finalize(st);
        }
        for (size_t i = 0; rc >= 0 && i < n; i++)
            rc = versions ? rekey_version(s, names[i], vers[i], stats)
                          : rekey_cred(s, names[i], stats);
        if (rc >= 0)
            rc = exec(s->db, "COMMIT");
        if (rc < 0) {
            if (!sqlite3_get_autocommit(s->db))
                (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return rc;
        }
        if (n) {
            memcpy(last, names[n - 1], sizeof(last));
            lastv = vers[n - 1];
        }
    } while (n == ROTATE_BATCH);
    return 0;
}

static int count_old(struct cs_store *s, int64_t *n)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (sqlite3_prepare_v2(s->db,
                           "SELECT (SELECT count(*) FROM versions WHERE master_key_id != ?1)"
                           " + (SELECT count(*) FROM credentials WHERE mac_key_id != ?1)",
                           -1, &st, NULL) != SQLITE_OK)
        return cs_sqlite_err(s->db, SQLITE_ERROR, "count");
    sqlite3_bind_text(st, 1, cs_master_key_id(s->keys.primary), -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    *n = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    rc = rc == SQLITE_ROW ? 0 : cs_sqlite_err(s->db, rc, "count");
    sqlite3_finalize(st);
    return rc;
}

/* Final switch: head re-MACed and master_check moved, in one audited transaction. */
static int rekey_finish(struct cs_store *s, const Airlock__V1__AuditRecord *audit)
{
    int64_t left = 0;
    int rc = cs_audit_begin(s->audit);

    if (rc < 0)
        return rc;
    rc = count_old(s, &left);
    if (rc == 0 && left)
        rc = AL_ERR_AGAIN; /* written meanwhile under the old key: another pass */
    if (rc == 0)
        rc = meta_set_master(s, s->keys.primary);
    if (rc == 0 && audit)
        rc = cs_audit_insert(s->audit, audit, NULL);
    cs_audit_touch(s->audit);
    return wr_end(s, rc);
}

int cs_store_rotate_master(const char *data_dir, const struct cs_master *from,
                           const struct cs_master *to, const Airlock__V1__AuditRecord *audit,
                           struct cs_rotate_stats *stats)
{
    const struct cs_master *prev[1] = {from}, *m = NULL;
    struct cs_keyring ring = {.primary = to, .previous = prev, .n_previous = 1};
    struct cs_rotate_stats dummy;
    struct cs_store *s = NULL;
    int rc;

    if (!stats)
        stats = &dummy;
    memset(stats, 0, sizeof(*stats));
    if (!data_dir || !from || !to)
        return AL_ERR_INVAL;
    rc = store_new(data_dir, &ring, 0, 0, &s);
    if (rc == 0)
        rc = schema_init(s, 0);
    if (rc == 0)
        rc = master_check(s, &m);
    if (rc == 0)
        rc = cs_audit_new(s->db, s->dir, &s->keys, &s->audit);
    if (rc == 0 && cs_audit_problem(s->audit))
        rc = AL_ERR_CRYPTO; /* never re-MAC a broken chain */
    for (int round = 0; rc == 0 && round < 3; round++) {
        rc = rekey_pass(s, 1, stats);
        if (rc == 0)
            rc = rekey_pass(s, 0, stats);
        if (rc == 0 && stats->refused) {
            AL_LOG_ERROR("credstore.rotate_master",
                         "refused=%" PRId64 " problem=\"rows failed "
                         "their integrity check; master_check not "
                         "switched\"",
                         stats->refused);
            rc = AL_ERR_CRYPTO;
        }
        if (rc == 0)
            rc = rekey_finish(s, audit);
        if (rc != AL_ERR_AGAIN)
            break;
        if (round < 2)
            rc = 0;
    }
    if (rc == 0)
        AL_LOG_INFO("credstore.rotate_master",
                    "from=%s to=%s rewrapped=%" PRId64 " remaced=%" PRId64, cs_master_key_id(from),
                    cs_master_key_id(to), stats->versions_rewrapped, stats->rows_remaced);
    cs_store_close(s);
    return rc;
}
