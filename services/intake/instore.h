/*
 * instore: airlock-intake's durable state in SQLite (WAL, synchronous=FULL,
 * defensive mode) in <data_dir>/intake.db (data_dir created 0700, the
 * database 0600). One writer connection per process; airlockctl opens the
 * same file to manage API keys while intake runs (SQLite locking).
 *
 * Schema (meta['schema_version'] = 1):
 *   meta(k, v)          schema_version; page_key (32 random bytes that MAC
 *                       List page tokens)
 *   jobs                one row per job: identity (id, principal, pool,
 *                       session, kind, canonical spec + its SHA-256,
 *                       idempotency key), lifecycle (state, attempt, spent
 *                       attempts, max attempts, times, last event seq), the
 *                       current lease (holder identity + instance, fencing
 *                       token, expiry, attempt-level pushed seq, ran,
 *                       workspace_reset, grant expiry), cancellation, queue
 *                       deadline and backoff (not_before), the last accepted
 *                       Finish (attempt, token, holder, recorded state) so a
 *                       repeated Finish is answered the same, and the result.
 *                       `seq` (INTEGER PRIMARY KEY AUTOINCREMENT) is the
 *                       submission order, never reused.
 *   events(job_id, seq, body)  serialized airlock.v1.JobEvent per job, seq 1..
 *   idempotency(principal, key, job_id, spec_hash, created_ms)
 *   sessions(principal, session_id, executor_id, instance_id, updated_ms)
 *                       which executor instance holds a session's workspace
 *   api_keys(id, principal, scopes, hash, created_ms, expires_ms, revoked_ms,
 *            description)   only a SHA-256 of the secret is stored
 * Partial indexes serve the lease query (QUEUED by pool in seq order), the
 * session head lookup, lease expiry, queue deadlines, backoff, List (by
 * principal and creation time) and retention.
 *
 * Transactions: the service batches every change of one event-loop turn in
 * one transaction (in_store_begin() ... in_store_commit()), each request's
 * writes inside a savepoint so a failing request rolls back alone. Outside
 * a transaction each write commits on its own (airlockctl).
 *
 * Lifecycle: in_store_open() -> calls -> in_store_close(). One thread.
 */
#ifndef IN_STORE_H
#define IN_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "al_arena.h"
#include "al_pki.h"
#include "sm.h"

#define IN_STORE_DB_FILE   "intake.db"
#define IN_SCHEMA_VERSION  1
#define IN_JOB_ID_LEN      32 /* 128 bits in hex, time-ordered (al_id.h) */
#define IN_PRINCIPAL_MAX   128
#define IN_SESSION_MAX     128
#define IN_IDEM_MAX        128
#define IN_INSTANCE_LEN    32
#define IN_REASON_MAX      256
#define IN_APIKEY_ID_MAX   31
#define IN_BUSY_TIMEOUT_MS 5000

struct in_store;

struct in_job {
    int64_t seq; /* submission order */
    char id[IN_JOB_ID_LEN + 1];
    char principal[IN_PRINCIPAL_MAX + 1];
    int auth_method;
    char key_id[AL_PKI_ID_MAX];
    char pool[65];
    char session_id[IN_SESSION_MAX + 1];
    int kind;
    char idem_key[IN_IDEM_MAX + 1];
    uint8_t spec_hash[32];
    int state, attempt, spent, max_attempts;
    int64_t created_ms, started_ms, finished_ms, updated_ms;
    int64_t last_seq;
    char executor_id[AL_PKI_ID_MAX];
    char instance_id[IN_INSTANCE_LEN + 1];
    int has_token;
    uint8_t token[IN_TOKEN_LEN];
    int64_t lease_expires_ms;
    int64_t push_seq; /* attempt-level seq of the last stored pushed event */
    int ran, workspace_reset;
    int64_t grant_expires_ms;
    int cancel_requested;
    char cancel_reason[IN_REASON_MAX + 1];
    int64_t queue_deadline_ms, not_before_ms;
    int64_t queue_timeout_ms; /* effective JobSpec.queue_timeout_ms */
    int fin_attempt, fin_state, has_fin_token;
    uint8_t fin_token[IN_TOKEN_LEN];
    char fin_executor[AL_PKI_ID_MAX];
    int events_purged;
    /* Serialized JobSpec and JobResult. On read, set only when an arena was
     * given (borrowed from it); result NULL when none. On write, spec is
     * required by in_store_job_insert; result is written when non-NULL. */
    const uint8_t *spec;
    size_t spec_len;
    const uint8_t *result;
    size_t result_len;
};

/* Opens (creating when create is set) the store in dir. Returns 0 and *out,
 * AL_ERR_NOTFOUND (no database and !create), AL_ERR_CONFIG (schema version
 * from a newer intake), AL_ERR_STATE (WAL refused), -errno or AL_ERR_INVAL
 * for SQLite failures (logged). */
int in_store_open(const char *dir, int create, struct in_store **out);
/* Rolls back an open transaction and closes. NULL is fine. */
void in_store_close(struct in_store *s);
/* Path of the database file (borrowed). */
const char *in_store_path(const struct in_store *s);

/* ---- transactions ---- */

/* Starts the batch transaction (BEGIN IMMEDIATE) unless one is open. */
int in_store_begin(struct in_store *s);
int in_store_in_tx(const struct in_store *s);
/* Commits the batch (durable when it returns 0). On failure the batch is
 * rolled back and a negative code returned. No-op outside a transaction. */
int in_store_commit(struct in_store *s);
void in_store_rollback(struct in_store *s);
/* Per-request savepoint inside the batch (begins the batch if needed). */
int in_store_savepoint(struct in_store *s);
int in_store_release(struct in_store *s);
void in_store_rollback_savepoint(struct in_store *s);

/* ---- jobs ---- */

/* Inserts a new job (j->seq is set). Returns 0, AL_ERR_EXISTS or < 0. */
int in_store_job_insert(struct in_store *s, struct in_job *j);
/* Reads job id into j; blobs into arena a when a != NULL. Returns 0,
 * AL_ERR_NOTFOUND or < 0. */
int in_store_job_get(struct in_store *s, const char *id, struct al_arena *a, struct in_job *j);
/* Writes every mutable column of j (and result when j->result is set). */
int in_store_job_update(struct in_store *s, const struct in_job *j);

/* Appends a serialized JobEvent as (job_id, seq). Returns 0, AL_ERR_EXISTS or < 0. */
int in_store_event_put(struct in_store *s, const char *job_id, int64_t seq, const uint8_t *body,
                       size_t len);
/* Calls cb for events of job_id with seq > after, in order, at most limit.
 * body is borrowed for the callback; cb returns 0 to go on, else stops.
 * Returns the number of events passed or < 0. */
int in_store_events(struct in_store *s, const char *job_id, int64_t after, int limit,
                    int (*cb)(void *user, int64_t seq, const uint8_t *body, size_t len),
                    void *user);

/* ---- idempotency and sessions ---- */

/* Looks up (principal, key): job id (IN_JOB_ID_LEN + 1 bytes) and spec hash.
 * Returns 0 or AL_ERR_NOTFOUND. */
int in_store_idem_get(struct in_store *s, const char *principal, const char *key, char *job_id,
                      uint8_t hash[32]);
int in_store_idem_put(struct in_store *s, const char *principal, const char *key,
                      const char *job_id, const uint8_t hash[32], int64_t now_ms);
int in_store_idem_del(struct in_store *s, const char *principal, const char *key);

/* The executor (identity AL_PKI_ID_MAX, instance IN_INSTANCE_LEN + 1) holding
 * a session's workspace. Returns 0 or AL_ERR_NOTFOUND. */
int in_store_session_get(struct in_store *s, const char *principal, const char *session,
                         char *executor_id, char *instance_id);
int in_store_session_put(struct in_store *s, const char *principal, const char *session,
                         const char *executor_id, const char *instance_id, int64_t now_ms);

/* ---- queries for the scheduler ---- */

/* Earliest of: a lease expiry (LEASED/RUNNING) or a queue deadline (QUEUED),
 * past ones included, and the end of a QUEUED job's backoff (not_before_ms)
 * later than after_ms. *next = 0 when there is none. */
int in_store_next_deadline(struct in_store *s, int64_t after_ms, int64_t *next);

enum in_due { IN_DUE_LEASE, IN_DUE_QUEUE };
/* Ids (IN_JOB_ID_LEN + 1 each) of up to max jobs whose lease expired
 * (IN_DUE_LEASE) or queue deadline passed (IN_DUE_QUEUE) at now. */
int in_store_due(struct in_store *s, enum in_due what, int64_t now_ms,
                 char (*ids)[IN_JOB_ID_LEN + 1], int max, int *n);

/*
 * Lease candidates for one executor stream: QUEUED jobs of the given pools
 * (and kinds; nkinds 0 = all) whose backoff has passed, that are either
 * sessionless or the head of their session (no earlier unfinished job), in
 * submission order after seq `after`. Up to max rows into ids/seqs.
 */
int in_store_candidates(struct in_store *s, char *const *pools, size_t npools, const int *kinds,
                        size_t nkinds, int64_t now_ms, int64_t after, int max,
                        char (*ids)[IN_JOB_ID_LEN + 1], int64_t *seqs, int *n);

/* Counts of QUEUED and of LEASED+RUNNING jobs per (principal, pool), cb
 * per row (a principal has a row per pool it has such jobs in). */
int in_store_count_principals(struct in_store *s,
                              void (*cb)(void *user, const char *principal, const char *pool,
                                         int queued, int active),
                              void *user);
/* LEASED+RUNNING jobs per (executor, instance). */
int in_store_count_holders(struct in_store *s,
                           void (*cb)(void *user, const char *executor_id, const char *instance_id,
                                      int n),
                           void *user);
/* Ids of jobs held by (executor, instance) with cancel_requested set. */
int in_store_held_cancels(struct in_store *s, const char *executor_id, const char *instance_id,
                          void (*cb)(void *user, const char *job_id, int attempt,
                                     const char *reason),
                          void *user);

/* Restart grace: every LEASED/RUNNING lease expires no earlier than until_ms.
 * *n gets the number of leases. */
int in_store_extend_leases(struct in_store *s, int64_t until_ms, int *n);

/* ---- List ---- */

struct in_list_query {
    const char *principal;
    unsigned states;                             /* bit (1 << state); 0 = any */
    const char *session_id, *pool;               /* NULL or "" = any */
    int64_t created_after_ms, created_before_ms; /* 0 = no bound */
    int has_cursor; /* continue after (cursor_created_ms, cursor_id), newest first */
    int64_t cursor_created_ms;
    const char *cursor_id;
    int limit;
};
/* Calls cb for each job (spec blob in arena a), newest first. cb returns 0 to
 * go on. Returns the number of rows passed or < 0. */
int in_store_list(struct in_store *s, const struct in_list_query *q, struct al_arena *a,
                  int (*cb)(void *user, const struct in_job *j), void *user);

/* ---- retention ---- */

struct in_purge {
    int jobs, events, idempotency, sessions;
};
/* Deletes, in the open transaction, up to max finished jobs (with events,
 * idempotency keys) that finished before jobs_before; events of up to max
 * finished jobs that finished before events_before (marking events_purged);
 * idempotency keys created before idem_before whose job is finished or gone;
 * sessions with no unfinished job not used since jobs_before. Adds counts
 * to *p. */
int in_store_purge(struct in_store *s, int64_t jobs_before, int64_t events_before,
                   int64_t idem_before, int max, struct in_purge *p);

/* ---- meta ---- */

/* The 32-byte key MACing page tokens (created with the database). */
int in_store_page_key(struct in_store *s, uint8_t key[32]);

/* ---- API keys ---- */

#define IN_SCOPE_SUBMIT 1u
#define IN_SCOPE_READ   2u
#define IN_SCOPE_CANCEL 4u

struct in_apikey_row {
    char id[IN_APIKEY_ID_MAX + 1];
    char principal[IN_PRINCIPAL_MAX + 1];
    unsigned scopes;
    uint8_t hash[32];
    int64_t created_ms, expires_ms, revoked_ms; /* expires 0 = never; revoked 0 = not */
    char description[IN_REASON_MAX + 1];
};

/* Returns 0, AL_ERR_EXISTS or < 0. */
int in_store_apikey_put(struct in_store *s, const struct in_apikey_row *r);
/* Returns 0 or AL_ERR_NOTFOUND. */
int in_store_apikey_get(struct in_store *s, const char *id, struct in_apikey_row *r);
/* Sets revoked_ms (keeps an earlier revocation). Returns 0 or AL_ERR_NOTFOUND. */
int in_store_apikey_revoke(struct in_store *s, const char *id, int64_t now_ms);
/* Every key in creation order; cb returns 0 to go on. */
int in_store_apikey_list(struct in_store *s, int (*cb)(void *user, const struct in_apikey_row *r),
                         void *user);

#endif
