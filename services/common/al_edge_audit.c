/*
 * al_edge_audit: use records, batches and their delivery states; see
 * al_edge_audit.h.
 *
 * States of the one batch slot:
 *   none     -> next() forms a batch when one is due       -> sending
 *   sending  -> done(OK)                                    -> none (freed)
 *            -> done(RETRY)                                 -> waiting (retry_at)
 *            -> done(REFUSED), 1 record                     -> none (dropped)
 *            -> done(REFUSED), n records: back to the queue
 *               head as suspects, taken ceil(n/2) at a time -> none
 *   waiting  -> next() at retry_at: the same request again  -> sending
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "al_edge_audit.h"
#include "al_id.h"

#define DECISION_ALLOW AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW
#define DECISION_DENY  AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_DENY

struct rec {
    struct rec *next;
    struct al_edge_grant *grant;
    Airlock__V1__EdgeUseRecord r; /* strings malloc'd, grant_id borrowed from grant */
    double queued;
};

struct batch {
    struct rec *recs; /* in order */
    size_t n;
    char id[AL_ID_HEX_LEN + 1];
    Airlock__V1__EdgeUseRecord **rp;
    Airlock__V1__SignedGrant **gp;
    Airlock__V1__AppendAuditRequest req;
    int sending; /* awaiting the outcome */
    int failed;  /* at least one RETRY */
    double first_sent, retry_at, backoff;
};

struct al_edge_audit {
    struct al_edge_audit_opts o;
    struct rec *head, **tail; /* pending, oldest first */
    size_t npending, reserved;
    struct batch *b;     /* NULL, sending or waiting */
    size_t suspects;     /* the first this many pending records were refused in a batch */
    size_t suspect_take; /* ... and go in batches of at most this many */
    int flush_all;
    uint64_t mark;
    unsigned long dropped;
};

/* ---------- grants ---------- */

int al_edge_grant_new(const uint8_t *bytes, size_t n, const char *grant_id,
                      struct al_edge_grant **out)
{
    struct al_edge_grant *g = calloc(1, sizeof(*g));

    *out = NULL;
    if (!g)
        return AL_ERR_NOMEM;
    g->refs = 1;
    snprintf(g->grant_id, sizeof(g->grant_id), "%s", grant_id ? grant_id : "");
    g->sg = airlock__v1__signed_grant__unpack(NULL, n, bytes);
    if (!g->sg) {
        free(g);
        return AL_ERR_INVAL;
    }
    *out = g;
    return 0;
}

struct al_edge_grant *al_edge_grant_ref(struct al_edge_grant *g)
{
    if (g)
        g->refs++;
    return g;
}

void al_edge_grant_unref(struct al_edge_grant *g)
{
    if (!g || --g->refs > 0)
        return;
    protobuf_c_message_free_unpacked(&g->sg->base, NULL);
    free(g);
}

/* ---------- records ---------- */

/* A copy of s cut to max bytes, never inside a UTF-8 sequence. */
static char *copy_cut(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    char *r;

    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    r = malloc(n + 1);
    if (r) {
        if (n)
            memcpy(r, s, n);
        r[n] = 0;
    }
    return r;
}

static void rec_free(struct rec *r)
{
    Airlock__V1__EdgeUseRecord *e = &r->r;

    free(e->credential);
    free(e->destination);
    free(e->method);
    free(e->path);
    free(e->reason);
    free(e->request_id);
    free(e->tool);
    al_edge_grant_unref(r->grant);
    free(r);
}

static struct rec *rec_new(struct al_edge_grant *g, const struct al_edge_use *u, double now)
{
    struct rec *r = calloc(1, sizeof(*r));
    Airlock__V1__EdgeUseRecord *e;

    if (!r)
        return NULL;
    e = &r->r;
    airlock__v1__edge_use_record__init(e);
    r->grant = al_edge_grant_ref(g);
    r->queued = now;
    e->grant_id = g->grant_id;
    e->version = u->version;
    e->status = u->status;
    e->request_bytes = u->request_bytes;
    e->response_bytes = u->response_bytes;
    e->duration_us = u->duration_us > 0 ? u->duration_us : 0;
    e->decision = u->allow ? DECISION_ALLOW : DECISION_DENY;
    e->time_ms = u->time_ms;
    e->credential = copy_cut(u->credential, 128);
    e->destination = copy_cut(u->destination, 300);
    e->method = copy_cut(u->method, 32);
    e->path = copy_cut(u->path, AL_EDGE_PATH_MAX);
    e->reason = copy_cut(u->reason, AL_EDGE_PATH_MAX);
    e->request_id = copy_cut(u->request_id, AL_EDGE_TOOL_MAX);
    e->tool = copy_cut(u->tool, AL_EDGE_TOOL_MAX);
    if (!e->credential || !e->destination || !e->method || !e->path || !e->reason ||
        !e->request_id || !e->tool) {
        rec_free(r);
        return NULL;
    }
    return r;
}

/* ---------- queue ---------- */

int al_edge_audit_new(const struct al_edge_audit_opts *o, struct al_edge_audit **out)
{
    struct al_edge_audit *a;

    *out = NULL;
    if (o->batch_max < 1 || o->batch_max > 1000 || !(o->flush_s > 0) || o->max_pending < 1)
        return AL_ERR_INVAL;
    a = calloc(1, sizeof(*a));
    if (!a)
        return AL_ERR_NOMEM;
    a->o = *o;
    if (!(a->o.retry_max_s > 0))
        a->o.retry_max_s = 10;
    a->tail = &a->head;
    *out = a;
    return 0;
}

int al_edge_audit_reserve(struct al_edge_audit *a)
{
    if (al_edge_audit_queued(a) + a->reserved >= a->o.max_pending)
        return AL_ERR_TOOBIG;
    a->reserved++;
    return 0;
}

void al_edge_audit_release(struct al_edge_audit *a)
{
    if (a->reserved > 0)
        a->reserved--;
}

int al_edge_audit_add(struct al_edge_audit *a, struct al_edge_grant *g, const struct al_edge_use *u,
                      double now)
{
    struct rec *r = rec_new(g, u, now);

    al_edge_audit_release(a);
    if (!r)
        return AL_ERR_NOMEM;
    *a->tail = r;
    a->tail = &r->next;
    a->npending++;
    return 0;
}

/* Puts the records of list r (n of them) back in front of the queue. */
static void push_front(struct al_edge_audit *a, struct rec *r, size_t n)
{
    struct rec *last = r;

    if (!r)
        return;
    while (last->next)
        last = last->next;
    last->next = a->head;
    if (!a->head)
        a->tail = &last->next;
    a->head = r;
    a->npending += n;
}

/* ---------- batches ---------- */

static void batch_free(struct batch *b, int free_recs)
{
    if (!b)
        return;
    while (free_recs && b->recs) {
        struct rec *r = b->recs;
        b->recs = r->next;
        rec_free(r);
    }
    free(b->rp);
    free(b->gp);
    free(b);
}

static size_t take_count(const struct al_edge_audit *a)
{
    size_t k = a->npending < a->o.batch_max ? a->npending : a->o.batch_max;

    if (a->suspects > 0) {
        k = a->suspect_take < a->suspects ? a->suspect_take : a->suspects;
        if (k > a->npending)
            k = a->npending;
    }
    return k;
}

static int batch_due(const struct al_edge_audit *a, double now)
{
    return a->npending > 0 && (a->flush_all || a->suspects > 0 || a->npending >= a->o.batch_max ||
                               now - a->head->queued >= a->o.flush_s);
}

/* Moves the first k pending records into a new batch and builds its request. */
static struct batch *batch_form(struct al_edge_audit *a, size_t k)
{
    struct batch *b = calloc(1, sizeof(*b));
    struct rec **pp;
    size_t ng = 0;

    if (!b || !(b->rp = calloc(k, sizeof(*b->rp))) || !(b->gp = calloc(k, sizeof(*b->gp))) ||
        al_id_new_hex(b->id) < 0) { /* time-ordered: see al_id.h */
        batch_free(b, 0);
        return NULL;
    }
    a->mark++;
    b->recs = a->head;
    pp = &b->recs;
    for (size_t i = 0; i < k; i++) {
        struct rec *r = *pp;
        b->rp[i] = &r->r;
        if (r->grant->mark != a->mark) {
            r->grant->mark = a->mark;
            b->gp[ng++] = r->grant->sg;
        }
        pp = &r->next;
    }
    a->head = *pp;
    *pp = NULL;
    if (!a->head)
        a->tail = &a->head;
    a->npending -= k;
    a->suspects -= a->suspects >= k ? k : a->suspects;
    b->n = k;
    airlock__v1__append_audit_request__init(&b->req);
    b->req.batch_id = b->id;
    b->req.n_records = k;
    b->req.records = b->rp;
    b->req.n_grants = ng;
    b->req.grants = b->gp;
    return b;
}

double al_edge_audit_wake(const struct al_edge_audit *a, double now)
{
    if (a->b)
        return a->b->sending ? -1 : a->b->retry_at;
    if (a->npending == 0)
        return -1;
    if (batch_due(a, now))
        return now;
    return a->head->queued + a->o.flush_s;
}

const Airlock__V1__AppendAuditRequest *al_edge_audit_next(struct al_edge_audit *a, double now)
{
    if (a->b) {
        if (a->b->sending || now < a->b->retry_at)
            return NULL;
        a->b->sending = 1;
        return &a->b->req;
    }
    if (!batch_due(a, now))
        return NULL;
    a->b = batch_form(a, take_count(a));
    if (!a->b)
        return NULL; /* out of memory: the records stay queued, tried again later */
    a->b->sending = 1;
    a->b->first_sent = now;
    return &a->b->req;
}

void al_edge_audit_done(struct al_edge_audit *a, enum al_edge_outcome o, double now)
{
    struct batch *b = a->b;

    if (!b || !b->sending)
        return;
    b->sending = 0;
    switch (o) {
    case AL_EDGE_OK:
        a->b = NULL;
        batch_free(b, 1);
        return;
    case AL_EDGE_RETRY:
        b->failed = 1;
        b->backoff = b->backoff > 0 ? b->backoff * 2 : a->o.flush_s;
        if (b->backoff > a->o.retry_max_s)
            b->backoff = a->o.retry_max_s;
        b->retry_at = now + b->backoff;
        return;
    case AL_EDGE_REFUSED:
        a->b = NULL;
        if (b->n == 1) {
            a->dropped++;
            batch_free(b, 1);
            return;
        }
        push_front(a, b->recs, b->n);
        a->suspects += b->n;
        a->suspect_take = (b->n + 1) / 2;
        b->recs = NULL;
        batch_free(b, 0);
        return;
    }
}

void al_edge_audit_flush_all(struct al_edge_audit *a)
{
    a->flush_all = 1;
}

int al_edge_audit_bypass(const struct al_edge_audit *a, double now)
{
    return a->b && (a->b->failed || now - a->b->first_sent > 2 * a->o.flush_s);
}

size_t al_edge_audit_queued(const struct al_edge_audit *a)
{
    return a->npending + (a->b ? a->b->n : 0);
}

size_t al_edge_audit_reserved(const struct al_edge_audit *a)
{
    return a->reserved;
}

unsigned long al_edge_audit_dropped(const struct al_edge_audit *a)
{
    return a->dropped;
}

int al_edge_audit_in_flight(const struct al_edge_audit *a)
{
    return a->b != NULL;
}

size_t al_edge_audit_free(struct al_edge_audit *a)
{
    size_t lost;

    if (!a)
        return 0;
    lost = al_edge_audit_queued(a);
    batch_free(a->b, 1);
    while (a->head) {
        struct rec *r = a->head;
        a->head = r->next;
        rec_free(r);
    }
    free(a);
    return lost;
}
