/* edgerec: rules of an edge's use record; see edgerec.h. */
#include <stdio.h>
#include <string.h>

#include "al_err.h"
#include "edgerec.h"
#include "policy.h"

#define ALLOW AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW
#define DENY  AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_DENY

int cs_grant_names_credential(const Airlock__V1__Grant *g, const char *name)
{
    if (!g || !name || !name[0])
        return 0;
    if (g->issuer && strncmp(g->issuer, "spiffe://airlock/relay/", 23) == 0 &&
        g->n_credentials == 1 && strcmp(g->credentials[0], CS_GRANT_ANY) == 0)
        return 1;
    for (size_t i = 0; i < g->n_credentials; i++)
        if (strcmp(g->credentials[i], name) == 0)
            return 1;
    return 0;
}

size_t cs_edgerec_texts(const Airlock__V1__EdgeUseRecord *e, struct cs_rec_text t[CS_REC_TEXTS])
{
    t[0] = (struct cs_rec_text){"path", e->path, CS_REC_PATH_MAX};
    t[1] = (struct cs_rec_text){"reason", e->reason, CS_REC_REASON_MAX};
    t[2] = (struct cs_rec_text){"destination", e->destination, CS_REC_DEST_MAX};
    t[3] = (struct cs_rec_text){"method", e->method, CS_REC_METHOD_MAX};
    t[4] = (struct cs_rec_text){"request_id", e->request_id, CS_REC_ID_MAX};
    t[5] = (struct cs_rec_text){"tool", e->tool, CS_REC_ID_MAX};
    return CS_REC_TEXTS;
}

int cs_edgerec_check(const Airlock__V1__EdgeUseRecord *e, const Airlock__V1__Grant *g, size_t i,
                     char *msg, size_t n)
{
    struct cs_rec_text t[CS_REC_TEXTS];
    size_t nt = cs_edgerec_texts(e, t);
    int d = e->decision;
    int has_cred = e->credential && e->credential[0];

    if (!g) {
        snprintf(msg, n, "record %zu: grant_id names no grant of the batch", i);
        return AL_ERR_INVAL;
    }
    if (has_cred && !cs_grant_names_credential(g, e->credential)) {
        snprintf(msg, n, "record %zu: credential is not one its grant names", i);
        return AL_ERR_INVAL;
    }
    if (!has_cred && e->version != 0) {
        snprintf(msg, n, "record %zu: a record without a credential names no version", i);
        return AL_ERR_INVAL;
    }
    if (d != 0 && d != ALLOW && d != DENY) {
        snprintf(msg, n, "record %zu: decision must be ALLOW or DENY", i);
        return AL_ERR_INVAL;
    }
    if (e->version < 0 || e->request_bytes < 0 || e->response_bytes < 0 ||
        (e->status != 0 && (e->status < 100 || e->status > 599))) {
        snprintf(msg, n, "record %zu: version, status or byte counts out of range", i);
        return AL_ERR_INVAL;
    }
    if (e->duration_us < 0 || e->duration_us > 31LL * 86400 * 1000000) {
        snprintf(msg, n, "record %zu: duration_us must be 0 to 31 days", i);
        return AL_ERR_INVAL;
    }
    for (size_t k = 0; k < nt; k++) {
        if (t[k].s && strlen(t[k].s) > t[k].max) {
            snprintf(msg, n, "record %zu: %s is longer than %zu bytes", i, t[k].field, t[k].max);
            return AL_ERR_INVAL;
        }
    }
    return 0;
}

size_t cs_edgerec_values(const Airlock__V1__EdgeUseRecord *e, const Airlock__V1__Grant *g,
                         struct cs_rec_value *v, size_t cap)
{
    size_t k = 0;

    if (e->credential && e->credential[0]) {
        if (k < cap)
            v[k++] = (struct cs_rec_value){e->credential, 0};
        if (e->version > 0 && k < cap)
            v[k++] = (struct cs_rec_value){e->credential, e->version};
        return k;
    }
    for (size_t i = 0; g && i < g->n_credentials && k < cap; i++)
        if (g->credentials[i] && g->credentials[i][0] && strcmp(g->credentials[i], CS_GRANT_ANY))
            v[k++] = (struct cs_rec_value){g->credentials[i], 0};
    return k;
}
