/*
 * audit: the credential store's tamper-evident audit chain, kept in the
 * store's SQLite database (table audit).
 *
 * Every record gets the next seq (1, 2, 3 ... without gaps) and
 *
 *   hash = SHA-256(prev_hash || canonical encoding of the record)
 *
 * where prev_hash is the hash of record seq - 1 (32 zero bytes for seq 1) and
 * the canonical encoding is the domain string "airlock/v1/audit-record", seq,
 * then every field in column order, integers as 8 bytes big-endian and
 * strings as a 4-byte big-endian length and the bytes; then, for each field
 * added since the first release (duration_us) whose value is not 0, its
 * column name (as a string) and its value, so records from before such a
 * field keep their hashes. The chain head (seq,
 * hash) is MACed with the audit key derived from the master key and kept in
 * two places: meta['audit_head'] (same transaction as the records) and the
 * head file <data_dir>/audit.head, right after the commit: a new file (temp
 * file + fsync + rename), or, when the file this connection wrote last is
 * still in place and the new text has the same length, that file overwritten
 * in place (pwrite at offset 0 + fdatasync; the text sits in the first
 * 512-byte sector, which the disk writes whole or not at all: after a crash
 * the file holds the old head or the new one). An edited, deleted or
 * reordered record
 * breaks the hash links; removed last records disagree with the head; last
 * records removed together with meta rewound to an older (validly MACed) head
 * disagree with the head file. Only an attacker who also rewinds the head
 * file gets past a local check, which is why the head is also published as a
 * metric and returned by VerifyAudit for operators to keep elsewhere.
 *
 * The chain itself is unkeyed so that its hashes survive a master key
 * rotation (only the head MAC is redone) and can be checked offline.
 *
 * Group commit: cs_audit_append() queues copies of records,
 * cs_audit_commit() writes every queued record in ONE transaction
 * (synchronous=FULL), then the head file. If it fails the caller must deny
 * whatever waited on those records (fail closed). Records never hold a value.
 * The queue of one cs_audit can also be moved out (cs_audit_take) and
 * committed through another cs_audit on its own database connection
 * (cs_audit_commit_batch): the service queues on its event-loop thread and
 * commits on a commit thread.
 *
 * At open the head is checked (meta MAC, last record, head file). A head file
 * that lags the database by whole commits (crash between commit and head
 * write) or is missing is rewritten from the database, with a warning. Any
 * other disagreement marks the chain broken: reads and cs_audit_verify()
 * still work, every append, commit and store change fails with
 * AL_ERR_CRYPTO (fail closed). The operator either restores a backup (with
 * its head file) or, having investigated, accepts the database's chain as it
 * stands by deleting the head file; the next open rewrites it (logged). A
 * head that disagrees with the last record cannot be accepted that way.
 * Deleting the database but not the head file is also detected.
 *
 * Lifecycle: the store creates the struct cs_audit on its database connection
 * (cs_store_audit() lends it out) and frees it on close. Not thread-safe: use
 * it on the store's thread. Writers on several connections (the service's
 * two, airlockctl) are serialized by flock on <data_dir>/credstore.lock
 * around commit + head file write; each connection's lock file descriptor is
 * its own, so the lock also works between connections of one process.
 *
 * Each write transaction re-checks the database head (MAC, last record)
 * unless PRAGMA data_version, read inside that transaction, shows that no
 * other connection committed since this one last checked it.
 */
#ifndef CS_AUDIT_H
#define CS_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "airlock/v1/credstore.pb-c.h"
#include "al_arena.h"
#include "crypto.h"

#define CS_AUDIT_HEAD_FILE    "audit.head"
#define CS_AUDIT_LOCK_FILE    "credstore.lock"
#define CS_AUDIT_MAX_PENDING  100000 /* queued records before appends fail */
#define CS_AUDIT_FIELD_MAX    4096   /* bytes of one string field */
#define CS_AUDIT_PAGE_DEFAULT 50
#define CS_AUDIT_PAGE_MAX     500
#define CS_AUDIT_PROBLEM_MAX  192

struct cs_audit;

/* ---- writing ---- */

/*
 * Queues a copy of rec (deep copy; rec is borrowed for the call). seq, hash
 * and prev_hash of rec are ignored (assigned at commit); time_ms 0 is replaced
 * by the current time. *index (may be NULL) gets the record's 0-based position
 * in the pending batch: after a successful cs_audit_commit() its seq is
 * first_seq + index.
 * Returns 0, AL_ERR_INVAL (NULL), AL_ERR_TOOBIG (a string field over
 * CS_AUDIT_FIELD_MAX, or CS_AUDIT_MAX_PENDING records queued), AL_ERR_CRYPTO
 * (chain broken, see cs_audit_problem) or AL_ERR_NOMEM.
 */
int cs_audit_append(struct cs_audit *a, const Airlock__V1__AuditRecord *rec, size_t *index);

/* Returns the number of queued records. */
size_t cs_audit_pending(const struct cs_audit *a);

/*
 * Writes every queued record in one transaction (synchronous=FULL), updates
 * the MACed head in meta, commits, then writes the head file. The queue is
 * emptied whatever the outcome. *first_seq (may be NULL) gets the seq of the
 * first record whenever the records were committed (also when the head file
 * write then failed), else 0. With nothing queued, only a head file left
 * stale by an earlier failure is rewritten.
 * Returns 0 when the records are durable AND the head file is written.
 * Otherwise the caller must deny what waited on the records:
 * AL_ERR_CRYPTO (chain broken or head MAC/last record mismatch found before
 * writing: nothing written), AL_ERR_TIMEOUT (database locked longer than the
 * busy timeout: nothing written), -errno or AL_ERR_STATE (I/O or database
 * failure: nothing written), or -errno from the head file write (the records
 * ARE committed, the head file is stale and is retried on the next commit).
 */
int cs_audit_commit(struct cs_audit *a, int64_t *first_seq);

/*
 * The last committed head known to this process: *seq (0 for an empty chain)
 * and hash (32 bytes; zeros for an empty chain). For the metric
 * airlock_credstore_audit_head_seq. Either out pointer may be NULL.
 * Returns 0 or AL_ERR_INVAL.
 */
int cs_audit_head(const struct cs_audit *a, int64_t *seq, uint8_t hash[CS_HASH_LEN]);

/* Returns why the chain is broken (static text owned by a), or NULL when it
 * is not. A broken chain refuses every write. */
const char *cs_audit_problem(const struct cs_audit *a);

/* Marks the chain broken with problem (copied) unless it already is: for a
 * problem found through another connection to the same database. */
void cs_audit_set_problem(struct cs_audit *a, const char *problem);

/* ---- committing elsewhere ---- */

/* Records moved out of a cs_audit's queue, in queue order (index i = position
 * i of the queue when taken). Owned by whoever holds it; not locked. */
struct cs_audit_batch {
    Airlock__V1__AuditRecord **recs;
    size_t n, cap;
};

void cs_audit_batch_init(struct cs_audit_batch *b);
/* Frees the records and the array. NULL is fine. */
void cs_audit_batch_cleanup(struct cs_audit_batch *b);

/*
 * Moves every queued record of a into b, which must be empty (b's array is
 * given to a for its next records, so nothing is copied or allocated).
 * Returns the number of records moved (0 also when b is not empty).
 */
size_t cs_audit_take(struct cs_audit *a, struct cs_audit_batch *b);

/*
 * cs_audit_commit() for the records of b, through a (typically another
 * connection to the same database than the cs_audit they were queued on).
 * b is emptied whatever the outcome (records freed, array kept). Same
 * results as cs_audit_commit(); AL_ERR_CRYPTO at once when a's chain is
 * broken.
 */
int cs_audit_commit_batch(struct cs_audit *a, struct cs_audit_batch *b, int64_t *first_seq);

/*
 * Called by cs_audit_commit() and cs_audit_commit_batch() (commits that write
 * audit records and the audit head only, nothing else): with
 * CS_AUDIT_TXN_BEGUN once the write transaction holds the database's write
 * lock, and with CS_AUDIT_TXN_COMMITTED once COMMIT succeeded (before the
 * head file is written). A transaction that rolls back gets no second call.
 * The store uses it to follow its own audit commits through the WAL (see
 * cs_store_audit_step). fn NULL removes it.
 */
enum { CS_AUDIT_TXN_BEGUN, CS_AUDIT_TXN_COMMITTED };
void cs_audit_set_txn_observer(struct cs_audit *a, void (*fn)(void *arg, int phase), void *arg);
/* The observer set (for chaining one in front of it); NULL when none. */
void (*cs_audit_txn_observer(const struct cs_audit *a, void **arg))(void *arg, int phase);

/* ---- reading ---- */

/* Result of cs_audit_verify(). */
struct cs_audit_verify_result {
    int intact;                         /* 1 if every check passed */
    int64_t records_checked;            /* records whose hash was recomputed */
    int64_t first_bad_seq;              /* 0 when intact */
    char problem[CS_AUDIT_PROBLEM_MAX]; /* "" when intact */
    int64_t head_seq;                   /* head recorded in the database */
    uint8_t head_hash[CS_HASH_LEN];
};

/*
 * Verifies records from..to (0 = 1 and 0 = head) in one read snapshot:
 * seqs without gaps, each prev_hash equal to the previous record's hash
 * (starting from record from - 1), each hash recomputed. When the range ends
 * at the head it also checks the meta head's MAC, that the meta head is the
 * last record, and that the head file agrees (a head file behind the
 * database that names an existing record of the chain is accepted: that is
 * the crash window between commit and head write). Stops at the first
 * problem. Side-effect free.
 * Returns 0 with *res filled (intact or not), AL_ERR_INVAL (from > to, NULL)
 * or AL_ERR_NOTFOUND (to beyond the head: OUT_OF_RANGE), or a database error.
 */
int cs_audit_verify(struct cs_audit *a, int64_t from, int64_t to,
                    struct cs_audit_verify_result *res);

/*
 * Runs a QueryAudit request: records in ascending seq order matching every
 * set filter, at most page.page_size (default CS_AUDIT_PAGE_DEFAULT, capped at
 * CS_AUDIT_PAGE_MAX). The page token is opaque (last seq + a fingerprint of
 * the filters). *out and everything it points to live in arena.
 * Returns 0, AL_ERR_INVAL (page token malformed or from other filters),
 * AL_ERR_NOMEM (arena cap) or a database error.
 */
int cs_audit_query(struct cs_audit *a, const Airlock__V1__QueryAuditRequest *req,
                   struct al_arena *arena, Airlock__V1__QueryAuditResponse **out);

/*
 * Looks up an already committed AppendAudit batch: records with this caller
 * and batch_id and time_ms >= since_ms. Fills *first_seq, *last_seq and
 * *count (each may be NULL).
 * Returns 0 (found), AL_ERR_NOTFOUND, AL_ERR_INVAL or a database error.
 */
int cs_audit_find_batch(struct cs_audit *a, const char *caller, const char *batch_id,
                        int64_t since_ms, int64_t *first_seq, int64_t *last_seq, int32_t *count);

/* ---- for store.c (same database connection and transactions) ---- */

/* A MACed chain head as kept in meta['audit_head'] and the head file. */
struct cs_audit_headrec {
    int64_t seq;
    uint8_t hash[CS_HASH_LEN];
    char key_id[CS_KEY_ID_LEN + 1];
    uint8_t mac[CS_MAC_LEN];
};

/* Creates the audit table and its indexes if missing. Call inside a transaction. */
int cs_audit_schema(sqlite3 *db);

/* Brings an audit table of an earlier release up to date (columns added
 * since, 0 in existing rows; their hashes are unchanged: audit.c). Inside
 * the caller's write transaction. Returns 0 or < 0. */
int cs_audit_migrate(sqlite3 *db);

/*
 * Creates the audit object on db (borrowed until cs_audit_free) with key ring
 * keys (copied; the masters are borrowed) and checks the head (see above).
 * A broken chain is not an error here: see cs_audit_problem().
 * Returns 0, AL_ERR_NOMEM, -errno (lock file) or a database error.
 */
int cs_audit_new(sqlite3 *db, const char *data_dir, const struct cs_keyring *keys,
                 struct cs_audit **out);

/* Frees a (queued records are dropped). NULL is fine. */
void cs_audit_free(struct cs_audit *a);

/*
 * Starts a write: flock, BEGIN IMMEDIATE, loads and checks the head.
 * Returns 0 or an error (nothing held). Pair with cs_audit_end().
 */
int cs_audit_begin(struct cs_audit *a);

/* Inside begin/end: appends rec (borrowed) now; *seq (may be NULL) gets its seq. */
int cs_audit_insert(struct cs_audit *a, const Airlock__V1__AuditRecord *rec, int64_t *seq);

/* Inside begin/end: re-MAC the head with the primary key at the end even if
 * nothing is inserted (master key rotation). */
void cs_audit_touch(struct cs_audit *a);

/*
 * Ends a write: with commit set, writes the head (if records were inserted or
 * the head touched) and COMMITs, then writes the head file; otherwise rolls
 * back. Always unlocks. Returns the database result (0 = committed). A head
 * file failure after the commit is logged, marks the head file stale and is
 * reported in *head_rc (may be NULL) only.
 */
int cs_audit_end(struct cs_audit *a, int commit, int *head_rc);

/* Reads meta['audit_head'] into *h. Returns 0, AL_ERR_NOTFOUND or an error. */
int cs_audit_meta_head(sqlite3 *db, struct cs_audit_headrec *h);

/* Writes h as a head file at path (temp file, fsync, rename; the caller fsyncs
 * the directory if it needs the rename durable). Returns 0 or -errno. */
int cs_audit_write_head_file(const char *path, const struct cs_audit_headrec *h);

/* Maps a SQLite result code to an AL_ERR_* / -errno code and logs it with what. */
int cs_sqlite_err(sqlite3 *db, int rc, const char *what);

#endif
