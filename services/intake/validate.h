/*
 * validate: checks a submitted JobSpec against the rules of intake.proto and
 * the configuration, and prepares it for storage.
 *
 * in_validate_spec() answers the first problem found with the gRPC status,
 * ErrorReason and ErrorDetail.field naming it ("spec.exec.argv[0]",
 * "spec.credentials[1].env_var", ...). in_spec_canonical() sorts the map
 * entries (env, labels) so equal specs serialize to equal bytes (the
 * idempotency comparison), and in_spec_resolve() fills in what the job gets:
 * the pool's default limits for zeros, ceilings for larger values, the
 * effective max_attempts and queue_timeout_ms. Unknown fields anywhere in a
 * spec are refused: intake would store and forward something it did not check.
 */
#ifndef IN_VALIDATE_H
#define IN_VALIDATE_H

#include <stddef.h>

#include "airlock/v1/intake.pb-c.h"
#include "al_arena.h"
#include "inconfig.h"

#define IN_PATH_MAX     4096
#define IN_CRED_MAX     128 /* credential name */
#define IN_MAX_DESTS    64
#define IN_MAX_BINDINGS 32
#define IN_MAX_LABELS   16

struct in_verr {
    int status; /* AL_GRPC_* */
    int reason; /* Airlock__V1__ErrorReason */
    char field[160];
    char message[256];
};

struct in_validate_ctx {
    const struct in_config *cfg;
    const struct in_principal_rule *rule; /* the caller's rule (pools allowed); NULL = none */
    int can_sign;                         /* a grant signing key is configured */
};

/* Returns 0 when spec is acceptable, else fills e and returns AL_ERR_INVAL. */
int in_validate_spec(const struct in_validate_ctx *x, const Airlock__V1__JobSpec *spec,
                     struct in_verr *e);

/* 1 when s is a valid idempotency key (1-128 printable ASCII). */
int in_idem_key_valid(const char *s);

/* 1 when s is a valid session id (1-128 of [A-Za-z0-9._-]). */
int in_session_valid(const char *s);

/* Sorts spec's env and label entries by key (in place). */
void in_spec_canonical(Airlock__V1__JobSpec *spec);

/*
 * Applies the pool's defaults and ceilings and the config's attempt and
 * queue timeout rules to spec (in place; a missing limits message is
 * allocated in a). Returns 0 or AL_ERR_NOMEM.
 */
int in_spec_resolve(const struct in_config *cfg, const struct in_pool *pool,
                    Airlock__V1__JobSpec *spec, struct al_arena *a);

#endif
