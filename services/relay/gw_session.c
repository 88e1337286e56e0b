/*
 * gw_session: bounded session -> principal table; see gw_session.h.
 *
 * A chained hash table over SHA-256(route || 0 || sid), with every entry
 * also on an LRU list (head = most recent). Expired entries are dropped
 * lazily, from the tail, whenever the table is touched.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "al_err.h"
#include "gw_session.h"

#define KEY_LEN 32

struct entry {
    unsigned char key[KEY_LEN];
    char *principal;
    double used;
    struct entry *hnext;       /* hash chain */
    struct entry *prev, *next; /* LRU list */
};

struct gw_sessions {
    struct entry **buckets;
    size_t nbuckets; /* power of two */
    size_t n, cap;
    double idle_s;
    struct entry *head, *tail;
};

int gw_sessions_new(size_t cap, double idle_s, struct gw_sessions **out)
{
    struct gw_sessions *s;

    *out = NULL;
    if (cap == 0 || !(idle_s > 0))
        return AL_ERR_INVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return AL_ERR_NOMEM;
    s->nbuckets = 16;
    while (s->nbuckets < cap && s->nbuckets < ((size_t)1 << 24))
        s->nbuckets <<= 1;
    s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
    if (!s->buckets) {
        free(s);
        return AL_ERR_NOMEM;
    }
    s->cap = cap;
    s->idle_s = idle_s;
    *out = s;
    return 0;
}

static void lru_unlink(struct gw_sessions *s, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        s->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        s->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(struct gw_sessions *s, struct entry *e)
{
    e->prev = NULL;
    e->next = s->head;
    if (s->head)
        s->head->prev = e;
    s->head = e;
    if (!s->tail)
        s->tail = e;
}

static size_t bucket_of(const struct gw_sessions *s, const unsigned char *key)
{
    size_t h;
    memcpy(&h, key, sizeof(h));
    return h & (s->nbuckets - 1);
}

static void entry_drop(struct gw_sessions *s, struct entry *e)
{
    struct entry **pp = &s->buckets[bucket_of(s, e->key)];

    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    lru_unlink(s, e);
    free(e->principal);
    free(e);
    s->n--;
}

static void expire(struct gw_sessions *s, double now)
{
    while (s->tail && now - s->tail->used > s->idle_s)
        entry_drop(s, s->tail);
}

static void make_key(const char *route, const char *sid, size_t n, unsigned char key[KEY_LEN])
{
    unsigned char buf[256 + 1 + GW_SESSION_ID_MAX];
    size_t rl = strnlen(route, 256);

    /* the NUL separates route and id; callers keep ids within the cap */
    if (n > GW_SESSION_ID_MAX)
        n = GW_SESSION_ID_MAX;
    memcpy(buf, route, rl);
    buf[rl] = 0;
    memcpy(buf + rl + 1, sid, n);
    SHA256(buf, rl + 1 + n, key);
    OPENSSL_cleanse(buf, sizeof(buf));
}

static struct entry *find(struct gw_sessions *s, const unsigned char *key)
{
    for (struct entry *e = s->buckets[bucket_of(s, key)]; e; e = e->hnext)
        if (memcmp(e->key, key, KEY_LEN) == 0)
            return e;
    return NULL;
}

int gw_sessions_check(struct gw_sessions *s, const char *route, const char *sid, size_t n,
                      const char *principal, double now)
{
    unsigned char key[KEY_LEN];
    struct entry *e;

    expire(s, now);
    make_key(route, sid, n, key);
    e = find(s, key);
    if (!e)
        return 0;
    if (strcmp(e->principal, principal) != 0)
        return AL_ERR_AUTH;
    e->used = now;
    lru_unlink(s, e);
    lru_push(s, e);
    return 0;
}

int gw_sessions_bind(struct gw_sessions *s, const char *route, const char *sid, size_t n,
                     const char *principal, double now)
{
    unsigned char key[KEY_LEN];
    struct entry *e;
    size_t b;

    expire(s, now);
    make_key(route, sid, n, key);
    e = find(s, key);
    if (e) {
        if (strcmp(e->principal, principal) != 0)
            return AL_ERR_AUTH;
        e->used = now;
        lru_unlink(s, e);
        lru_push(s, e);
        return 0;
    }
    if (s->n == s->cap)
        entry_drop(s, s->tail);
    e = calloc(1, sizeof(*e));
    if (!e)
        return AL_ERR_NOMEM;
    e->principal = strdup(principal);
    if (!e->principal) {
        free(e);
        return AL_ERR_NOMEM;
    }
    memcpy(e->key, key, KEY_LEN);
    e->used = now;
    b = bucket_of(s, key);
    e->hnext = s->buckets[b];
    s->buckets[b] = e;
    lru_push(s, e);
    s->n++;
    return 0;
}

void gw_sessions_remove(struct gw_sessions *s, const char *route, const char *sid, size_t n)
{
    unsigned char key[KEY_LEN];
    struct entry *e;

    make_key(route, sid, n, key);
    e = find(s, key);
    if (e)
        entry_drop(s, e);
}

size_t gw_sessions_count(const struct gw_sessions *s)
{
    return s->n;
}

void gw_sessions_free(struct gw_sessions *s)
{
    if (!s)
        return;
    while (s->head)
        entry_drop(s, s->head);
    free(s->buckets);
    free(s);
}
