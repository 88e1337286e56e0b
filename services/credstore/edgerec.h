/*
 * edgerec: the rules an edge's use record (EdgeUseRecord, sent with
 * CredentialResolver.AppendAudit) must follow before credstore appends it to
 * the audit chain. Pure functions; resolver.c applies them to each record of
 * a batch against the verified grant the record cites.
 *
 * A record names the credential whose value was used (or whose placeholder
 * was seen where it may not go), and that credential must be one its grant
 * names: an edge cannot file uses of credentials it was never given. A
 * record may also name no credential at all: a request or tunnel of an
 * egress proxy job that involved no value (jobs with network access get a
 * grant even when they bind no credential, so their traffic is audited
 * too). Such a record cannot carry a version. Every text field has a length
 * cap (path and reason 1024 bytes, destination 300, method 32, request_id
 * and tool 256); status is 0 or an HTTP status, counts are not negative,
 * the decision is ALLOW or DENY (unset = ALLOW).
 *
 * No text field may hold a credential's value: resolver.c looks for the
 * values cs_edgerec_values() lists (the record's credential at its current
 * and named version; for a record without a credential, the current value
 * of every credential its grant names) in every field cs_edgerec_texts()
 * lists.
 */
#ifndef CS_EDGEREC_H
#define CS_EDGEREC_H

#include <stddef.h>
#include <stdint.h>

#include "airlock/v1/credstore.pb-c.h"
#include "airlock/v1/grant.pb-c.h"

#define CS_REC_PATH_MAX   1024
#define CS_REC_REASON_MAX 1024
#define CS_REC_DEST_MAX   300
#define CS_REC_METHOD_MAX 32
#define CS_REC_ID_MAX     256 /* request_id, tool */
#define CS_REC_TEXTS      6

/* A text field of a record: its name, value (may be NULL) and cap. */
struct cs_rec_text {
    const char *field;
    const char *s;
    size_t max;
};

/* 1 when grant g lets its holder report uses of credential `name` (a relay
 * grant naming exactly {"*"} names every credential; grant.proto). */
int cs_grant_names_credential(const Airlock__V1__Grant *g, const char *name);

/* Checks record i (for the message) against the grant it cites (g, NULL
 * when the batch has no such grant). Returns 0, or AL_ERR_INVAL with a one-
 * line reason in msg (never a field's content). */
int cs_edgerec_check(const Airlock__V1__EdgeUseRecord *e, const Airlock__V1__Grant *g, size_t i,
                     char *msg, size_t n);

/* Fills t with the record's text fields; returns CS_REC_TEXTS. */
size_t cs_edgerec_texts(const Airlock__V1__EdgeUseRecord *e, struct cs_rec_text t[CS_REC_TEXTS]);

/* A credential value to look for in a record: name and version (0 = the
 * current one). */
struct cs_rec_value {
    const char *name;
    int32_t version;
};

/* Lists into v (room for cap entries) the values that must not appear in
 * record e citing grant g (checked by cs_edgerec_check() before). Returns
 * how many, at most cap. */
size_t cs_edgerec_values(const Airlock__V1__EdgeUseRecord *e, const Airlock__V1__Grant *g,
                         struct cs_rec_value *v, size_t cap);

#endif
