/*
 * gw_cache: injection templates, released values and their cache; see
 * gw_cache.h.
 *
 * The cache is a chained hash table over the key text with every entry also
 * on an LRU list (head = most recently used). Entries hold a reference of
 * their value; streams hold their own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "al_base64.h"
#include "al_err.h"
#include "al_wipe.h"
#include "gw_cache.h"
#include "gw_http.h"
#include "scrub.h"

/* ---------- templates ---------- */

static int header_forbidden(const char *h)
{
    static const char *const bad[] = {"host",       "content-length", "transfer-encoding",
                                      "connection", "upgrade",        "te",
                                      "keep-alive", "trailer",        "cookie"};

    if (strncmp(h, "proxy-", 6) == 0 || strncmp(h, "airlock-", 8) == 0)
        return 1;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (strcmp(h, bad[i]) == 0)
            return 1;
    return 0;
}

/* The template's header, defaulted by type and lowercased into out. */
static int pick_header(const struct gw_template *t, char *out, char *why, size_t whyn)
{
    const char *h = t->header && t->header[0] ? t->header : NULL;
    size_t n;

    if (!h && (t->type == GW_CRED_BEARER || t->type == GW_CRED_BASIC))
        h = "authorization";
    if (!h) {
        snprintf(why, whyn, "the credential's template names no header");
        return AL_ERR_INVAL;
    }
    n = strlen(h);
    if (n > GW_HEADER_MAX) {
        snprintf(why, whyn, "the template's header name is too long");
        return AL_ERR_INVAL;
    }
    for (size_t i = 0; i <= n; i++)
        out[i] = (char)(h[i] >= 'A' && h[i] <= 'Z' ? h[i] + 32 : h[i]);
    if (!gw_field_name_valid(out, n) || header_forbidden(out)) {
        snprintf(why, whyn, "the template's header may not carry a credential");
        return AL_ERR_INVAL;
    }
    return 0;
}

static const char *pick_format(const struct gw_template *t)
{
    if (t->format && t->format[0])
        return t->format;
    switch (t->type) {
    case GW_CRED_BEARER:
        return "Bearer {}";
    case GW_CRED_BASIC:
        return "Basic {}";
    case GW_CRED_HEADER_VALUE:
        return "{}";
    default:
        return NULL;
    }
}

/* Exactly one "{}" and no other brace: returns the slot's offset or -1. */
static long slot_of(const char *f)
{
    const char *s = strstr(f, "{}");
    size_t braces = 0;

    for (const char *p = f; *p; p++)
        braces += *p == '{' || *p == '}';
    return s && braces == 2 ? (long)(s - f) : -1;
}

/* Bytes a header value may hold: no control byte except HTAB, no DEL. */
static int value_ok(const uint8_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
            return 0;
    return 1;
}

/* The slot's content: the secret, or its base64 for basic auth (locked
 * memory, al_secure_alloc). */
static int slot_content(const struct gw_template *t, const uint8_t *v, size_t n, uint8_t **out,
                        size_t *outlen)
{
    size_t cap;

    if (t->type != GW_CRED_BASIC) {
        *out = al_secure_alloc(n ? n : 1);
        if (!*out)
            return AL_ERR_NOMEM;
        memcpy(*out, v, n);
        *outlen = n;
        return 0;
    }
    cap = al_base64_encoded_len(n, 0) + 1;
    *out = al_secure_alloc(cap);
    if (!*out)
        return AL_ERR_NOMEM;
    return al_base64_encode(v, n, (char *)*out, cap, 0, outlen);
}

int gw_inject_format(const struct gw_template *t, const uint8_t *v, size_t n, int plain_http,
                     char *header, uint8_t **out, size_t *outlen, char *why, size_t whyn)
{
    const char *f;
    uint8_t *slot = NULL, *r;
    size_t slen = 0, fl;
    long at;
    int rc;

    *out = NULL;
    *outlen = 0;
    if (t->type < GW_CRED_BEARER || t->type > GW_CRED_GENERIC) {
        snprintf(why, whyn, "unknown credential type %d", t->type);
        return AL_ERR_INVAL;
    }
    if ((rc = pick_header(t, header, why, whyn)) < 0)
        return rc;
    f = pick_format(t);
    at = f ? slot_of(f) : -1;
    if (at < 0) {
        snprintf(why, whyn, "the template's format needs exactly one {} slot and no other brace");
        return AL_ERR_INVAL;
    }
    if (plain_http && !t->allow_plain_http) {
        snprintf(why, whyn, "the credential's template does not allow plain http upstreams");
        return AL_ERR_AUTH;
    }
    if (n == 0 || !value_ok(v, n) || !value_ok((const uint8_t *)f, strlen(f))) {
        snprintf(why, whyn, "the credential's value or format cannot go into an HTTP header");
        return AL_ERR_INVAL;
    }
    if ((rc = slot_content(t, v, n, &slot, &slen)) < 0) {
        al_secure_free(slot);
        return rc;
    }
    fl = strlen(f);
    r = al_secure_alloc(fl - 2 + slen + 1);
    if (!r) {
        al_secure_free(slot);
        return AL_ERR_NOMEM;
    }
    memcpy(r, f, (size_t)at);
    memcpy(r + at, slot, slen);
    memcpy(r + at + slen, f + at + 2, fl - (size_t)at - 2);
    *outlen = fl - 2 + slen;
    r[*outlen] = 0;
    al_secure_free(slot);
    *out = r;
    return 0;
}

/* ---------- values ---------- */

static int build_scrub(const struct gw_template *t, const uint8_t *v, size_t n,
                       struct rl_scrub **out, char *why, size_t whyn)
{
    const uint8_t *colon;
    int rc;

    if (n < RL_SCRUB_MIN_VALUE || n > RL_SCRUB_MAX_VALUE) {
        snprintf(why, whyn, "the credential's value is too %s to be scrubbed from responses",
                 n < RL_SCRUB_MIN_VALUE ? "short" : "long");
        return AL_ERR_INVAL;
    }
    if ((rc = rl_scrub_new(out)) < 0 || (rc = rl_scrub_add(*out, v, n)) < 0)
        return rc;
    colon = t->type == GW_CRED_BASIC ? memchr(v, ':', n) : NULL;
    if (colon && (size_t)(v + n - colon - 1) >= RL_SCRUB_MIN_VALUE)
        rc = rl_scrub_add(*out, colon + 1, (size_t)(v + n - colon - 1));
    return rc;
}

int gw_value_new(const struct gw_template *t, const uint8_t *v, size_t n, int32_t version,
                 double expires, int plain_http, struct gw_value **out, char *why, size_t whyn)
{
    struct gw_value *x = calloc(1, sizeof(*x));
    int rc;

    *out = NULL;
    if (!x)
        return AL_ERR_NOMEM;
    x->refs = 1;
    x->version = version;
    x->expires = expires;
    rc = gw_inject_format(t, v, n, plain_http, x->header, &x->inject, &x->inject_len, why, whyn);
    if (rc == 0)
        rc = build_scrub(t, v, n, &x->scrub, why, whyn);
    if (rc < 0) {
        gw_value_unref(x);
        return rc;
    }
    *out = x;
    return 0;
}

struct gw_value *gw_value_ref(struct gw_value *v)
{
    if (v)
        v->refs++;
    return v;
}

void gw_value_unref(struct gw_value *v)
{
    if (!v || --v->refs > 0)
        return;
    al_secure_free(v->inject);
    rl_scrub_free(v->scrub);
    free(v->key);
    OPENSSL_cleanse(v, sizeof(*v));
    free(v);
}

/* ---------- cache ---------- */

struct gw_cache {
    struct gw_value **buckets;
    size_t nbuckets; /* power of two */
    size_t n, cap;
    struct gw_value *head, *tail; /* LRU */
};

int gw_cache_new(size_t cap, struct gw_cache **out)
{
    struct gw_cache *c;

    *out = NULL;
    if (cap == 0)
        return AL_ERR_INVAL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return AL_ERR_NOMEM;
    c->nbuckets = 16;
    while (c->nbuckets < cap && c->nbuckets < ((size_t)1 << 20))
        c->nbuckets <<= 1;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (!c->buckets) {
        free(c);
        return AL_ERR_NOMEM;
    }
    c->cap = cap;
    *out = c;
    return 0;
}

int gw_cache_key(char *buf, size_t n, const char *issuer, const char *principal, const char *route,
                 const char *credential)
{
    int w = snprintf(buf, n, "%s\n%s\n%s\n%s", issuer, principal, route, credential);
    return w < 0 || (size_t)w >= n ? AL_ERR_TOOBIG : 0;
}

static size_t hash_of(const struct gw_cache *c, const char *key)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)h & (c->nbuckets - 1);
}

static void lru_unlink(struct gw_cache *c, struct gw_value *v)
{
    if (v->prev)
        v->prev->next = v->next;
    else
        c->head = v->next;
    if (v->next)
        v->next->prev = v->prev;
    else
        c->tail = v->prev;
    v->prev = v->next = NULL;
}

static void lru_push(struct gw_cache *c, struct gw_value *v)
{
    v->prev = NULL;
    v->next = c->head;
    if (c->head)
        c->head->prev = v;
    c->head = v;
    if (!c->tail)
        c->tail = v;
}

static struct gw_value *find(struct gw_cache *c, const char *key)
{
    for (struct gw_value *v = c->buckets[hash_of(c, key)]; v; v = v->hnext)
        if (strcmp(v->key, key) == 0)
            return v;
    return NULL;
}

/* Takes v out of the cache and drops the cache's reference. */
static void remove_entry(struct gw_cache *c, struct gw_value *v)
{
    struct gw_value **pp = &c->buckets[hash_of(c, v->key)];

    while (*pp && *pp != v)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = v->hnext;
    v->hnext = NULL;
    lru_unlink(c, v);
    free(v->key);
    v->key = NULL;
    c->n--;
    gw_value_unref(v);
}

struct gw_value *gw_cache_get(struct gw_cache *c, const char *key, double now)
{
    struct gw_value *v = find(c, key);

    if (!v)
        return NULL;
    if (now >= v->expires) {
        remove_entry(c, v);
        return NULL;
    }
    lru_unlink(c, v);
    lru_push(c, v);
    return gw_value_ref(v);
}

int gw_cache_put(struct gw_cache *c, const char *key, struct gw_value *v, double now)
{
    struct gw_value *old = find(c, key);
    size_t b;

    if (old == v)
        return 0;
    if (old)
        remove_entry(c, old);
    if (now >= v->expires || v->key)
        return 0; /* expired, or already cached under another key */
    if (c->n == c->cap)
        remove_entry(c, c->tail);
    v->key = strdup(key);
    if (!v->key)
        return AL_ERR_NOMEM;
    gw_value_ref(v);
    b = hash_of(c, key);
    v->hnext = c->buckets[b];
    c->buckets[b] = v;
    lru_push(c, v);
    c->n++;
    return 0;
}

void gw_cache_sweep(struct gw_cache *c, double now)
{
    for (struct gw_value *v = c->head, *next; v; v = next) {
        next = v->next;
        if (now >= v->expires)
            remove_entry(c, v);
    }
}

void gw_cache_clear(struct gw_cache *c)
{
    while (c->head)
        remove_entry(c, c->head);
}

int gw_cache_drop(struct gw_cache *c, struct gw_value *v)
{
    if (!c || !v || !v->key || find(c, v->key) != v)
        return 0;
    remove_entry(c, v);
    return 1;
}

size_t gw_cache_count(const struct gw_cache *c)
{
    return c->n;
}

void gw_cache_free(struct gw_cache *c)
{
    if (!c)
        return;
    gw_cache_clear(c);
    free(c->buckets);
    free(c);
}
