/*
 * store: the credential store's durable state in SQLite (WAL,
 * synchronous=FULL, foreign keys, secure_delete, defensive mode), in
 * <data_dir>/credstore.db (data_dir created 0700, the database 0600).
 *
 * Schema (meta['schema_version'] = 1):
 *   meta(k TEXT PRIMARY KEY, v BLOB)
 *     schema_version, master_key_id (id of the key the database is under),
 *     master_check (HMAC(check key, "airlock-master-check")), audit_head.
 *   credentials(name PK, type, description, template_header, template_format,
 *     allow_plain_http, grace_period_ms, current_version, created_ms,
 *     updated_ms, revision, updated_by, policy BLOB (serialized
 *     airlock.v1.BindingPolicy), mac_key_id, policy_mac)
 *     policy_mac = HMAC(policy-mac key of mac_key_id, every other column).
 *   versions(name -> credentials, version, state, created_ms, grace_end_ms,
 *     destroyed_ms, created_by, master_key_id, dek_nonce, wrapped_dek,
 *     value_nonce, ciphertext, mac, PRIMARY KEY(name, version))
 *     mac = HMAC(policy-mac key of master_key_id, name, version, state,
 *     times, created_by, master_key_id); the blobs are an AEAD envelope
 *     (crypto.h) bound to (name, version). Destroyed versions keep their
 *     metadata; their blobs are overwritten with zeros, then set to NULL.
 *   audit(...)  see audit.h.
 * A plaintext value is never written to the database, a log or an error.
 *
 * Integrity: a row whose MAC does not verify is refused with AL_ERR_CRYPTO
 * and logged as event credstore.tamper; so is a database opened with the
 * wrong master key (refused at open with "master key does not match this
 * database (key id X, database expects Y)"). Known limit: a writer of the
 * database file can roll a row back to an OLDER validly MACed copy of itself;
 * the audit chain records every change, and its head is anchored outside.
 *
 * Changes: every mutation runs in one BEGIN IMMEDIATE transaction together
 * with its audit record (struct cs_change.audit), so a change is committed
 * with its record or not at all, durable (synchronous=FULL) before the call
 * returns. A chain found broken refuses every change (fail closed).
 *
 * Master key rotation (airlockctl keys rotate-master), without downtime for
 * readers:
 *   1. airlockctl keys gen-master NEW
 *   2. run the service with NEW as its master key and OLD as a previous key
 *      (cs_store_opts.keys), so it reads rows under either key and writes
 *      new rows under NEW;
 *   3. cs_store_rotate_master(data_dir, OLD, NEW): re-wraps every DEK and
 *      re-MACs every row in short transactions (WAL: readers and the service
 *      keep going), then re-MACs the audit head and switches master_check to
 *      NEW. Rows carry their key id, so an interrupted run is simply rerun.
 *   4. drop OLD from the configuration. Opening with OLD alone now fails.
 *
 * Backup and restore: cs_store_backup() writes a consistent online copy
 * (sqlite3_backup from one read snapshot, mode 0600) and, next to it,
 * <dest>.audit.head, the head file matching that snapshot. Restore: stop the
 * service; copy the backup to <data_dir>/credstore.db and <dest>.audit.head
 * to <data_dir>/audit.head; delete <data_dir>/credstore.db-wal and
 * credstore.db-shm if present; start with the master key (and previous keys)
 * in effect when the backup was taken. The backup holds no key.
 *
 * Lifecycle: cs_store_open() -> cs_store_close(). One thread at a time; the
 * database may be shared with other processes (airlockctl) through SQLite's
 * locking.
 */
#ifndef CS_STORE_H
#define CS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "airlock/v1/credstore.pb-c.h"
#include "al_arena.h"
#include "audit.h"
#include "crypto.h"

#define CS_STORE_DB_FILE     "credstore.db"
#define CS_NAME_MAX          128
#define CS_DESCRIPTION_MAX   1024
#define CS_TEMPLATE_MAX      256   /* bytes of template header or format */
#define CS_POLICY_MAX        65536 /* serialized BindingPolicy */
#define CS_LIST_PAGE_DEFAULT 50
#define CS_LIST_PAGE_MAX     500
#define CS_BUSY_TIMEOUT_MS   5000
/*
 * WAL frames after which a COMMIT checkpoints (PRAGMA wal_autocheckpoint;
 * SQLite's default is 1000). The audit group commits append ~14 frames each
 * and every checkpoint's cost (copying pages, fsync of the database file)
 * lands on the commit that triggers it and on the batch queued behind it.
 * At 1000 frames that is a 2-10 ms stall every ~70 commits, which set the
 * Resolve p99; at 200 the stall is a fraction of that, every ~14 commits,
 * and the WAL stays under 1 MiB (tests/bench/credstore.sh, interleaved
 * rounds: p99 3.2-3.4 ms against 4.3-4.9 ms at the same throughput).
 */
#define CS_WAL_CHECKPOINT_FRAMES 200

struct cs_store;

/* Options of cs_store_open(). */
struct cs_store_opts {
    const char *data_dir;   /* created 0700 if missing; copied */
    struct cs_keyring keys; /* primary (required) + previous keys; the masters
                               are borrowed until cs_store_close, the array is copied */
    int busy_timeout_ms;    /* wait for another writer's lock; 0 = CS_BUSY_TIMEOUT_MS */
    int no_create;          /* 1: fail with AL_ERR_NOTFOUND instead of creating a store
                               (airlockctl audit verify, tools) */
};

/* Why a call failed, for mapping to an ErrorReason. */
enum cs_why {
    CS_WHY_NONE = 0,
    CS_WHY_REVISION_MISMATCH, /* expected_revision / expected_current_version */
    CS_WHY_ALREADY_EXISTS,    /* create_only */
    CS_WHY_NOT_FOUND,         /* no such credential or version */
    CS_WHY_VALUE_REQUIRED,    /* create without a value */
    CS_WHY_VALUE_DIFFERS,     /* update with another value: use Rotate */
    CS_WHY_VERSION_CURRENT,   /* delete of the CURRENT version */
    CS_WHY_VERSION_DESTROYED, /* value no longer exists */
    CS_WHY_VERSION_EXPIRED,   /* grace period over */
    CS_WHY_INVALID_FIELD,     /* see cs_change.field */
    CS_WHY_TOO_LARGE,         /* see cs_change.field */
    CS_WHY_TAMPERED,          /* a MAC or AEAD check failed */
    CS_WHY_AUDIT_UNAVAILABLE  /* the audit write failed; nothing changed */
};

/* Returns a static text for why ("" for CS_WHY_NONE). */
const char *cs_why_str(enum cs_why why);

/* In/out of every mutating call. */
struct cs_change {
    const char *actor;                     /* admin SPIFFE id, stored as created_by/updated_by */
    int64_t now_ms;                        /* Unix ms of the change */
    const Airlock__V1__AuditRecord *audit; /* may be NULL: appended in the same transaction;
                                            credential, version (if 0), decision (if 0:
                                            ALLOW) and time_ms (if 0) are filled in */
    int64_t audit_seq;                     /* out: seq of that record, 0 if none */
    enum cs_why why;                       /* out: detail of a failure */
    const char *field;                     /* out: request field of an INVALID/TOO_LARGE */
};

/*
 * Opens (creating if needed) the store in opts->data_dir. A fresh database
 * is written under keys.primary. An existing one must be under a key of the
 * ring (master_check), and every row must name a key of the ring; otherwise
 * it is refused with AL_ERR_CRYPTO and a log line such as "master key does
 * not match this database (key id X, database expects Y)". Checks the audit
 * head (see audit.h): a broken chain does not fail the open but every change
 * will (cs_audit_problem tells why).
 * Returns 0 and *out (cs_store_close), AL_ERR_INVAL, AL_ERR_NOTFOUND
 * (no_create and no store there), AL_ERR_CRYPTO, AL_ERR_CONFIG (unsupported
 * schema version), AL_ERR_NOMEM, AL_ERR_TIMEOUT, -errno or another database
 * error.
 */
int cs_store_open(const struct cs_store_opts *opts, struct cs_store **out);

/* Closes the store (queued audit records are dropped). NULL is fine. */
void cs_store_close(struct cs_store *s);

/* Returns the store's audit chain (borrowed; valid until cs_store_close). */
struct cs_audit *cs_store_audit(struct cs_store *s);

/*
 * Following audit commits made through another connection (the service's
 * commit thread) so that they do not empty the Resolve read cache.
 *
 * Every commit of any connection rewrites SQLite's WAL-index header, and the
 * cache of verified credential rows (cs_store_get_value) is used only while
 * that header is the one it was confirmed under; so each group commit of
 * audit records, every few milliseconds under load, would send the next
 * Resolve through a read transaction that reloads and re-MACs the rows. A
 * commit of cs_audit_commit()/cs_audit_commit_batch() writes audit rows and
 * the audit head only, never a credential, version or policy row, so a row
 * confirmed just before it is still the row just after it.
 *
 cs_store_on_audit_step() has fn told of each such commit made through s,
 * on the committing thread, right after COMMIT (before the head file is
 * written, so the other store's reads in the meantime can follow it at
 * once): the WAL-index header read under the write lock once the
 * transaction began (before), and the header read right after COMMIT
 * (after). A step is reported only when after's change counter (iChange,
 * which each commit of any connection increments by one) is before's plus
 * one: exactly one commit, ours, came in between, so "after" describes the
 * database as our commit left it. A commit of another process right after
 * ours makes it plus two and nothing is reported (the cache then refills
 * once, as before). fn NULL: none.
 *
 * cs_store_audit_follow() applies a step to another store of the same
 * database: each cache entry confirmed under exactly "before" is moved to
 * "after". An entry under any other header is left alone (it refills).
 */
#define CS_STORE_WAL_TAG_LEN 48
struct cs_store_audit_step {
    int ok;
    uint8_t before[CS_STORE_WAL_TAG_LEN], after[CS_STORE_WAL_TAG_LEN];
};
void cs_store_on_audit_step(struct cs_store *s,
                            void (*fn)(void *arg, const struct cs_store_audit_step *step),
                            void *arg);
void cs_store_audit_follow(struct cs_store *s, const struct cs_store_audit_step *step);

/*
 * CredentialAdmin.Put. Creates the credential (value required; version 1
 * CURRENT; revision 1) or replaces its metadata (type, description,
 * template, policy, grace period; revision + 1). On update the value must be
 * empty or equal to the current one (compared in constant time); an
 * identical Put changes nothing (but is still audited). The template is
 * stored with the type's defaults filled in (see credstore.proto) and
 * validated: header an RFC 9110 token and not a forbidden one, format with
 * exactly one "{}". req and chg are borrowed; *out (may be NULL) gets the
 * resulting metadata, allocated in arena.
 * Returns 0, AL_ERR_INVAL (why INVALID_FIELD/VALUE_REQUIRED, field set),
 * AL_ERR_TOOBIG, AL_ERR_EXISTS (create_only), AL_ERR_STATE (why
 * REVISION_MISMATCH or VALUE_DIFFERS), AL_ERR_CRYPTO (stored row tampered, or
 * audit chain broken: why AUDIT_UNAVAILABLE), AL_ERR_TIMEOUT, -errno.
 */
int cs_store_put(struct cs_store *s, const Airlock__V1__PutCredentialRequest *req,
                 struct cs_change *chg, struct al_arena *arena, Airlock__V1__Credential **out);

/*
 * CredentialAdmin.Rotate. Seals req->value as version current + 1 (CURRENT).
 * The previous CURRENT enters GRACE until now + grace (req->grace_period_ms,
 * else the credential's), or is destroyed when that grace is 0;
 * destroy_previous destroys every older version now. Rotating to the value
 * already current changes nothing (still audited).
 * Returns 0, AL_ERR_INVAL, AL_ERR_TOOBIG, AL_ERR_NOTFOUND, AL_ERR_STATE (why
 * REVISION_MISMATCH), AL_ERR_CRYPTO, AL_ERR_TIMEOUT, -errno. Output as Put.
 */
int cs_store_rotate(struct cs_store *s, const Airlock__V1__RotateCredentialRequest *req,
                    struct cs_change *chg, struct al_arena *arena, Airlock__V1__Credential **out);

/*
 * CredentialAdmin.Delete. version 0: every version's blobs are zeroed, then
 * all rows of the credential are deleted (*out = NULL). Otherwise that one
 * version is destroyed (blobs zeroed then NULLed, state DESTROYED) and *out
 * gets the credential. Works on a tampered row too (deleting is the remedy).
 * The WAL is checkpointed afterwards (best effort) so old pages go too.
 * Returns 0, AL_ERR_NOTFOUND (unknown name, unknown or already destroyed
 * version), AL_ERR_STATE (why VERSION_CURRENT or REVISION_MISMATCH),
 * AL_ERR_CRYPTO (chain broken), AL_ERR_TIMEOUT, -errno.
 */
int cs_store_delete(struct cs_store *s, const Airlock__V1__DeleteCredentialRequest *req,
                    struct cs_change *chg, struct al_arena *arena, Airlock__V1__Credential **out);

/*
 * CredentialAdmin.Describe: metadata of one credential (never a value), in
 * arena, after checking the row and version MACs.
 * Returns 0, AL_ERR_INVAL, AL_ERR_NOTFOUND, AL_ERR_CRYPTO (tampered), AL_ERR_NOMEM.
 */
int cs_store_describe(struct cs_store *s, const char *name, struct al_arena *arena,
                      Airlock__V1__Credential **out);

/*
 * CredentialAdmin.List: credentials ordered by name, filtered by
 * name_prefix, paged (default CS_LIST_PAGE_DEFAULT, at most CS_LIST_PAGE_MAX;
 * the token is opaque and bound to the prefix). All in arena. Any tampered
 * row fails the call (AL_ERR_CRYPTO, logged with its name).
 * Returns 0, AL_ERR_INVAL (bad prefix or page token), AL_ERR_CRYPTO, AL_ERR_NOMEM.
 */
int cs_store_list(struct cs_store *s, const Airlock__V1__ListCredentialsRequest *req,
                  struct al_arena *arena, Airlock__V1__ListCredentialsResponse **out);

/* What comes with a released value. tmpl lives in the arena passed; policy
 * in it too, or in the store's verified-row cache: read-only, valid until
 * the next call on the store. */
struct cs_value_info {
    int32_t version;
    Airlock__V1__CredentialType type;
    Airlock__V1__InjectionTemplate *tmpl; /* effective template */
    Airlock__V1__BindingPolicy *policy;   /* verified policy (see above) */
    int64_t grace_period_ms;              /* the credential's */
    int64_t grace_end_ms;                 /* of this version if in GRACE, else 0 */
    size_t len;                           /* bytes written to value */
    int cached; /* the rows came from the verified-row cache, no transaction */
};

/*
 * The Resolve read: verifies the credential row's MAC and the version row's
 * MAC, then decrypts version `version` (0 = CURRENT) into value[0..cap),
 * which should be al_secure_alloc'ed (CS_VALUE_MAX always suffices), and
 * fills *info. A version is released only while CURRENT, or in GRACE with
 * now_ms < grace_end_ms. Read-only; nothing is logged but tampering. why
 * (may be NULL) gets the detail of a failure. On failure value is cleansed.
 * Returns 0, AL_ERR_INVAL, AL_ERR_NOTFOUND (credential or version unknown;
 * why VERSION_DESTROYED for a destroyed one), AL_ERR_EXPIRED (grace over),
 * AL_ERR_CRYPTO (why TAMPERED: row MAC, envelope or unknown key),
 * AL_ERR_TOOBIG (cap too small), AL_ERR_NOMEM, or a database error.
 * For version 0 the verified rows (never the value) are kept in a cache that
 * is used only while the database is unchanged since they were read (any
 * commit by any connection, or any row written through this one, refills
 * it with a fresh MAC check; audit commits of another store of this process
 * can be followed, see cs_store_audit_follow); the value is decrypted on
 * every call.
 */
int cs_store_get_value(struct cs_store *s, const char *name, int32_t version, int64_t now_ms,
                       uint8_t *value, size_t cap, struct al_arena *arena,
                       struct cs_value_info *info, enum cs_why *why);

/*
 * Destroys every GRACE version whose grace_end_ms <= now_ms, each with an
 * AUDIT_ACTION_VERSION_DESTROYED record (caller = actor) in the same
 * transaction, and bumps those credentials' revision. Call periodically.
 * *destroyed (may be NULL) gets the count.
 * Returns 0, AL_ERR_CRYPTO (chain broken), AL_ERR_TIMEOUT, -errno.
 */
int cs_store_sweep(struct cs_store *s, int64_t now_ms, const char *actor, int *destroyed);

/*
 * Online, consistent backup to dest_path (must not exist; written 0600 via a
 * temp file, fsync'd) from one read snapshot on a separate connection, with
 * sqlite3_backup in steps; writers go on meanwhile (WAL). Also writes
 * <dest_path>.audit.head for that snapshot. See the top of this file for
 * restoring. Uses only the database file (not the store's connection), so
 * it may run on another thread while the store is in use; it takes as long
 * as copying the file.
 * Returns 0, AL_ERR_EXISTS, AL_ERR_INVAL, AL_ERR_TIMEOUT, -errno or a
 * database error.
 */
int cs_store_backup(struct cs_store *s, const char *dest_path);

/*
 * Appends one record to the audit chain in its own write transaction, for
 * operations done outside the service (airlockctl backup). rec is borrowed;
 * *seq (may be NULL) gets its seq. Safe while the service runs (the chain is
 * locked across processes).
 * Returns 0, AL_ERR_INVAL, AL_ERR_CRYPTO (chain broken) or a database error.
 */
int cs_store_audit_local(struct cs_store *s, const Airlock__V1__AuditRecord *rec, int64_t *seq);

/* Counters of cs_store_rotate_master(). */
struct cs_rotate_stats {
    int64_t versions_rewrapped; /* rows moved to the new key (values re-wrapped) */
    int64_t rows_remaced;       /* credential rows and value-less versions re-MACed */
    int64_t refused;            /* rows skipped: MAC/AEAD failed or unknown key */
};

/*
 * Moves the store in data_dir from master key `from` to `to` (see the top of
 * this file), on its own connection, in transactions of at most 64 rows. A row
 * that does not verify is never re-MACed (that would launder tampering): it is
 * logged, counted in refused, and the final switch is not made. audit (may be
 * NULL) is appended in the final transaction. *st may be NULL.
 * Returns 0 when every row and the head are under `to` and master_check is
 * switched; AL_ERR_CRYPTO (database under neither key; rows refused; audit
 * chain broken), AL_ERR_AGAIN (rows under `from` kept appearing: a writer
 * still uses it as primary), AL_ERR_INVAL, AL_ERR_TIMEOUT, -errno.
 */
int cs_store_rotate_master(const char *data_dir, const struct cs_master *from,
                           const struct cs_master *to, const Airlock__V1__AuditRecord *audit,
                           struct cs_rotate_stats *st);

#endif
