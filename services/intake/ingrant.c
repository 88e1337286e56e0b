/* ingrant: the content of an attempt's grant; see ingrant.h. */
#include <stdio.h>
#include <string.h>

#include "ingrant.h"

int in_grant_needed(const Airlock__V1__JobSpec *spec)
{
    if (!spec)
        return 0;
    return spec->n_credentials > 0 ||
           (spec->network && spec->network->mode == AIRLOCK__V1__NETWORK_MODE__NETWORK_MODE_PROXY);
}

static void add_unique(char **v, size_t *n, size_t cap, char *x)
{
    if (!x || *n >= cap)
        return;
    for (size_t i = 0; i < *n; i++)
        if (strcmp(v[i], x) == 0)
            return;
    v[(*n)++] = x;
}

void in_grant_build(const struct in_grant_ctx *x, const Airlock__V1__JobSpec *spec,
                    struct in_grant_buf *buf, Airlock__V1__Grant *g)
{
    size_t nc = 0, nd = 0;

    airlock__v1__grant__init(g);
    snprintf(buf->subject, sizeof(buf->subject), "job/%s/attempt/%d", x->job_id, (int)x->attempt);
    for (size_t i = 0; i < spec->n_credentials; i++) {
        const Airlock__V1__CredentialBinding *b = spec->credentials[i];
        add_unique(buf->creds, &nc, IN_GRANT_MAX_CREDS, b->credential);
        for (size_t k = 0; k < b->n_destinations; k++)
            add_unique(buf->dests, &nd, IN_GRANT_MAX_DESTS, b->destinations[k]);
    }
    g->issuer = (char *)x->issuer;
    g->audience = (char *)x->audience;
    g->holder = (char *)x->holder;
    g->principal = (char *)x->principal;
    g->subject = buf->subject;
    g->scope = (char *)x->pool;
    g->credentials = buf->creds;
    g->n_credentials = nc;
    g->destinations = buf->dests;
    g->n_destinations = nd;
    g->not_before_ms = x->now_ms;
    g->expires_ms = x->now_ms + x->lifetime_ms;
}
