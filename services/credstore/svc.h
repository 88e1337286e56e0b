/*
 * svc: the running credstore: its state, the calls waiting for the audit
 * group commit, and error replies shared by the admin and resolver APIs.
 *
 * Every request is audited before it is answered. Admin changes carry their
 * record inside their own store transaction; everything else (Resolve,
 * reads, refusals) queues a record and parks its call as a waiter.
 *
 * Group commit on a commit thread: once per loop iteration (an ev_prepare
 * watcher, i.e. after every event of that iteration), when the commit thread
 * is free, the queued records and their waiters are handed to it as one
 * batch. It writes the batch in one transaction (synchronous=FULL, its own
 * SQLite connection, cs->wstore) and the head file, then wakes the loop
 * (ev_async), which answers every waiter of the batch; if the write failed,
 * every waiter is denied (fail closed) and released values are wiped
 * unsent. Meanwhile the loop goes on with the next calls (grant checks,
 * store reads), whose records form the next batch: no value ever leaves
 * before its record is durable, but the loop no longer waits for the fsyncs.
 * The loop also looks for a finished batch between requests (cs_svc_poll),
 * so answers that are ready do not wait for the end of a long run of
 * requests in one loop turn; they are sent at once (al_grpc_server_flush).
 * At most one batch is in flight; the commit thread touches only the batch
 * and its own connection, under cs->commit.mu. It asks for a short
 * scheduler time slice (a hint), so that on a core it shares with the loop
 * it runs as soon as an fsync returns. Right after each COMMIT it also
 * publishes where that commit took the WAL (cs_store_on_audit_step, under
 * cs->commit.step_mu), and the loop's Resolve reads follow it
 * (cs_svc_follow_commits) so that the verified-row cache is not emptied by
 * every group commit.
 *
 * Lifecycle: main.c fills struct cs_svc, calls cs_svc_start() (opens the
 * commit thread's connection and starts it), runs the loop, then
 * cs_svc_stop() (commits what is queued, stops the thread).
 */
#ifndef CS_SVC_H
#define CS_SVC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <protobuf-c/protobuf-c.h>

#include "airlock/v1/common.pb-c.h"
#include "airlock/v1/credstore.pb-c.h"
#include "al_grpc.h"
#include "al_service.h"
#include "audit.h"
#include "csconfig.h"
#include "policy.h"
#include "store.h"

struct al_grant_keyring;
struct al_metric;

/* Value buffers (cs_svc_value_get): values up to CS_VALUE_SMALL bytes get a
 * one-page buffer, larger ones a CS_VALUE_MAX one; released buffers are kept
 * for reuse, up to these counts (about 1 MiB and 272 KiB of locked memory). */
#define CS_VALUE_SMALL      4000
#define CS_VALUE_POOL_SMALL 256
#define CS_VALUE_POOL_LARGE 4

struct cs_waiter {
    struct al_grpc_call *call;
    struct cs_waiter *next;
    /* on success: the reply (in the call's arena) or an error decided early */
    const ProtobufCMessage *reply;
    int status;
    Airlock__V1__ErrorReason reason;
    char message[160];
    /* a released value to wipe once sent (or on failure) */
    uint8_t *secret;
    size_t secret_cap;       /* its size as asked of cs_svc_value_get() */
    size_t secret_len;       /* bytes of it written (cs_svc_value_put wipes them) */
    int64_t *audit_seq_out;  /* reply field to fill with the (first) record's seq */
    int64_t *audit_last_out; /* and with the last one, for batches */
    size_t audit_index, audit_count;
};

/* The commit thread and the one batch it may hold. Fields below mu are
 * shared and guarded by mu; the rest belong to the loop thread. */
struct cs_commit {
    pthread_t thread;
    int running;               /* thread started (loop thread) */
    struct cs_waiter *waiters; /* of the batch in flight (loop thread) */
    size_t n_records;          /* in that batch */
    ev_async done_w;           /* the thread finished a batch */
    atomic_int done;           /* state is CS_COMMIT_DONE: a cheap look without mu */
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* loop -> thread: a batch, or stop */
    pthread_cond_t done_cv; /* thread -> loop (cs_svc_commit waits on it) */
    int state;              /* CS_COMMIT_IDLE / _QUEUED / _DONE */
    int stop;
    struct cs_audit_batch batch;
    int rc;                             /* cs_audit_commit_batch() result */
    int64_t first_seq;                  /* seq of the batch's first record when committed */
    int64_t head_seq;                   /* head after the commit */
    char problem[CS_AUDIT_PROBLEM_MAX]; /* the chain found broken ("" if not) */
    /* The commit thread's last audit commit in the WAL, published right
     * after its COMMIT for the loop's read cache (store.h); step_seq counts
     * publications, followed_seq (loop thread) the last one followed. */
    pthread_mutex_t step_mu;
    struct cs_store_audit_step step;
    atomic_uint step_seq;
    unsigned followed_seq;
};

struct cs_svc {
    struct al_service svc;
    struct cs_config cfg;
    struct cs_master *master;
    struct cs_master **previous;
    size_t n_previous;
    struct cs_store *store;
    struct cs_audit *audit;
    struct cs_store *wstore; /* the commit thread's connection (cs_svc_start) */
    struct cs_commit commit;
    struct al_grant_keyring *keyring;
    struct cs_issuer_scope *scopes;
    char self_id[256];
    ev_prepare commit_w;
    ev_timer sweep_w;
    struct cs_waiter *waiting, **waiting_tail;
    struct al_metric *m_read_cached, *m_read_loaded; /* Resolve reads by cache result */
    struct al_metric *m_resolve_allow, *m_resolve_deny, *m_audit_seq, *m_commit_fail,
        *m_commit_batch, *m_admin_denied;
    uint8_t *pool_small[CS_VALUE_POOL_SMALL]; /* wiped value buffers kept for reuse */
    uint8_t *pool_large[CS_VALUE_POOL_LARGE];
    size_t n_pool_small, n_pool_large;
};

/* Registers both gRPC services and the commit/sweep watchers, opens the
 * commit thread's connection to the store and starts the thread. Returns 0
 * or < 0 (nothing is left running then; cs_svc_stop() is still safe). */
int cs_svc_start(struct cs_svc *cs);
/* Commits what is queued (answering its waiters), stops and joins the
 * commit thread, closes its connection, frees the value pools. */
void cs_svc_stop(struct cs_svc *cs);

/* Ends a call with status, an airlock-error-bin ErrorDetail trailer and message. */
void cs_finish_error(struct al_grpc_call *call, int status, Airlock__V1__ErrorReason reason,
                     const char *field, const char *message);

/*
 * Queues rec for the next group commit and parks the call until then. On a
 * successful commit the call is answered with `reply` (or with the error in
 * w->status when not OK); on failure it is denied. Takes w (allocated by the
 * caller in the call's arena). Returns 0, or < 0 when the record cannot be
 * queued (the call has then been answered with AUDIT_UNAVAILABLE).
 */
int cs_svc_await_audit(struct cs_svc *cs, struct cs_waiter *w, const Airlock__V1__AuditRecord *rec);

/*
 * Buffers for the value of one Resolve, from al_secure_alloc() (locked, not
 * dumpable, wiped in forked children) and zeroed: CS_VALUE_SMALL bytes when
 * cap <= CS_VALUE_SMALL, else CS_VALUE_MAX. Released buffers are kept for
 * reuse, so a Resolve does not map, lock, wipe and unmap a fresh buffer each
 * time. get returns NULL when out of memory. put takes buf (NULL is fine),
 * with the cap it was asked with, and wipes its first `used` bytes, which must
 * cover every byte written to it (cs_store_get_value() writes info.len bytes
 * and wipes them itself when it fails), so a kept buffer is all zeros again;
 * one the pool has no room for is freed (al_secure_free wipes it whole).
 * cs_svc_stop() frees the pools.
 */
uint8_t *cs_svc_value_get(struct cs_svc *cs, size_t cap);
void cs_svc_value_put(struct cs_svc *cs, uint8_t *buf, size_t cap, size_t used);

/* Answers the waiters of the batch in flight if it is written already:
 * called between requests, so that a long run of requests in one loop turn
 * does not hold back answers that are ready (they are sent at once). */
void cs_svc_poll(struct cs_svc *cs);

/* Loop thread: lets the Resolve read cache follow the commit thread's audit
 * commits published so far (cs_store_on_audit_step), before a read. */
void cs_svc_follow_commits(struct cs_svc *cs);

/* Writes every queued record now and answers the waiters: waits for the
 * batch in flight, then commits the queue and waits for that too (blocks
 * the loop; for admin reads that must see everything audited so far, a
 * duplicate AppendAudit check and shutdown). */
void cs_svc_commit(struct cs_svc *cs);

/* Role of a SPIFFE id ("admin", "executor", ...) into buf, "" if none. */
void cs_role_of(const char *spiffe_id, char *buf, size_t n);

/* Unix time in ms. */
int64_t cs_now_ms(void);

/* The services' handler tables (admin.c, resolver.c). */
int cs_admin_register(struct cs_svc *cs);
int cs_resolver_register(struct cs_svc *cs);

#endif
