/*
 * svc: the running credstore: its state, the calls waiting for the audit
 * group commit, and error replies shared by the admin and resolver APIs.
 *
 * Every request is audited before it is answered. Admin changes carry their
 * record inside their own store transaction; everything else (Resolve,
 * reads, refusals) queues a record and parks its call as a waiter. Once per
 * loop iteration (an ev_prepare watcher, i.e. after every event of that
 * iteration) cs_svc_commit() writes all queued records in one transaction
 * and then answers every waiter; if the write fails, every waiter is denied
 * (fail closed) and released values are wiped unsent.
 *
 * Lifecycle: main.c fills struct cs_svc, calls cs_svc_start(), runs the loop,
 * then cs_svc_stop().
 */
#ifndef CS_SVC_H
#define CS_SVC_H

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

struct cs_svc {
    struct al_service svc;
    struct cs_config cfg;
    struct cs_master *master;
    struct cs_master **previous;
    size_t n_previous;
    struct cs_store *store;
    struct cs_audit *audit;
    struct al_grant_keyring *keyring;
    struct cs_issuer_scope *scopes;
    char self_id[256];
    ev_prepare commit_w;
    ev_timer sweep_w;
    struct cs_waiter *waiting, **waiting_tail;
    struct al_metric *m_resolve_allow, *m_resolve_deny, *m_audit_seq, *m_commit_fail,
        *m_commit_batch, *m_admin_denied;
    uint8_t *pool_small[CS_VALUE_POOL_SMALL]; /* wiped value buffers kept for reuse */
    uint8_t *pool_large[CS_VALUE_POOL_LARGE];
    size_t n_pool_small, n_pool_large;
};

/* Registers both gRPC services and the commit/sweep watchers. Returns 0 or < 0. */
int cs_svc_start(struct cs_svc *cs);
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
 * Buffers for the value of one Resolve, from cs_secure_alloc() (locked, not
 * dumpable, wiped in forked children) and zeroed: CS_VALUE_SMALL bytes when
 * cap <= CS_VALUE_SMALL, else CS_VALUE_MAX. Released buffers are kept for
 * reuse, so a Resolve does not map, lock, wipe and unmap a fresh buffer each
 * time. get returns NULL when out of memory. put takes buf (NULL is fine),
 * with the cap it was asked with, and wipes its first `used` bytes, which must
 * cover every byte written to it (cs_store_get_value() writes info.len bytes
 * and wipes them itself when it fails), so a kept buffer is all zeros again;
 * one the pool has no room for is freed (cs_secure_free wipes it whole).
 * cs_svc_stop() frees the pools.
 */
uint8_t *cs_svc_value_get(struct cs_svc *cs, size_t cap);
void cs_svc_value_put(struct cs_svc *cs, uint8_t *buf, size_t cap, size_t used);

/* Writes queued records and answers waiters (the ev_prepare hook; public for tests). */
void cs_svc_commit(struct cs_svc *cs);

/* Role of a SPIFFE id ("admin", "executor", ...) into buf, "" if none. */
void cs_role_of(const char *spiffe_id, char *buf, size_t n);

/* Unix time in ms. */
int64_t cs_now_ms(void);

/* The services' handler tables (admin.c, resolver.c). */
int cs_admin_register(struct cs_svc *cs);
int cs_resolver_register(struct cs_svc *cs);

#endif
