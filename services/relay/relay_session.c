/*
 * relay_session: bounded LRU table of MCP sessions; see relay_session.h.
 *
 * Chained hash table (power-of-two buckets, seeded 64-bit hash) plus one
 * doubly linked list in use order: the head is the most recently used entry,
 * the tail the first to expire or to be evicted. Each entry is one
 * allocation holding its key "<route>\0<id>".
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "al_err.h"
#include "relay_session.h"

#define DEFAULT_CAP     100000
#define DEFAULT_IDLE_MS (3600 * 1000LL)
#define ROUTE_MAX       160

struct entry {
    struct entry *hnext;       /* bucket chain */
    struct entry *prev, *next; /* use order */
    uint64_t hash;
    uint64_t conn;
    int64_t last_ms;
    char principal[RL_PRINCIPAL_MAX + 1];
    size_t klen;
    char key[]; /* route, NUL, id (klen bytes in all) */
};

struct rl_sessions {
    struct entry **buckets;
    size_t nbuckets; /* power of two */
    size_t n, cap;
    int64_t idle_ms;
    uint64_t seed;
    struct entry *head, *tail;
};

int rl_sessions_new(size_t cap, int64_t idle_ms, struct rl_sessions **out)
{
    struct rl_sessions *s = calloc(1, sizeof(*s));

    *out = NULL;
    if (!s)
        return AL_ERR_NOMEM;
    s->cap = cap ? cap : DEFAULT_CAP;
    s->idle_ms = idle_ms > 0 ? idle_ms : DEFAULT_IDLE_MS;
    s->nbuckets = 16;
    while (s->nbuckets < s->cap && s->nbuckets < ((size_t)1 << 30))
        s->nbuckets <<= 1;
    s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
    if (!s->buckets) {
        free(s);
        return AL_ERR_NOMEM;
    }
    if (RAND_bytes((unsigned char *)&s->seed, sizeof(s->seed)) != 1)
        s->seed = (uint64_t)(uintptr_t)s ^ 0x9e3779b97f4a7c15ULL;
    *out = s;
    return 0;
}

void rl_sessions_free(struct rl_sessions *s)
{
    if (!s)
        return;
    for (struct entry *e = s->head, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    free(s->buckets);
    free(s);
}

int rl_session_id_valid(const char *id, size_t n)
{
    if (!id || n == 0 || n > RL_SESSION_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] < 0x21 || (unsigned char)id[i] > 0x7e)
            return 0;
    return 1;
}

/* FNV-1a over the seeded key, then a 64-bit finalizer (murmur3 fmix64) so
 * the low bits used for the bucket depend on every input byte. */
static uint64_t hash_key(const struct rl_sessions *s, const char *k, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ s->seed;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* Builds "<route>\0<id>" into buf; returns its length or 0 when invalid. */
static size_t make_key(const char *route, const char *id, size_t n, char *buf)
{
    size_t rl = route ? strnlen(route, ROUTE_MAX + 1) : 0;
    if (rl == 0 || rl > ROUTE_MAX || !rl_session_id_valid(id, n))
        return 0;
    memcpy(buf, route, rl);
    buf[rl] = '\0';
    memcpy(buf + rl + 1, id, n);
    return rl + 1 + n;
}

static void lru_unlink(struct rl_sessions *s, struct entry *e)
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

static void lru_push_head(struct rl_sessions *s, struct entry *e)
{
    e->prev = NULL;
    e->next = s->head;
    if (s->head)
        s->head->prev = e;
    s->head = e;
    if (!s->tail)
        s->tail = e;
}

static struct entry **find_slot(struct rl_sessions *s, const char *key, size_t klen, uint64_t h)
{
    struct entry **pp = &s->buckets[h & (s->nbuckets - 1)];
    while (*pp) {
        struct entry *e = *pp;
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return pp;
        pp = &e->hnext;
    }
    return pp;
}

static void remove_entry(struct rl_sessions *s, struct entry *e)
{
    struct entry **pp = find_slot(s, e->key, e->klen, e->hash);
    if (*pp == e)
        *pp = e->hnext;
    lru_unlink(s, e);
    s->n--;
    free(e);
}

void rl_sessions_expire(struct rl_sessions *s, int64_t now_ms)
{
    while (s->tail && now_ms - s->tail->last_ms >= s->idle_ms)
        remove_entry(s, s->tail);
}

int rl_sessions_get(struct rl_sessions *s, const char *route, const char *id, size_t n,
                    int64_t now_ms, struct rl_session_info *out)
{
    char key[ROUTE_MAX + 1 + RL_SESSION_ID_MAX];
    size_t klen = make_key(route, id, n, key);
    struct entry *e;

    rl_sessions_expire(s, now_ms);
    if (!klen)
        return 0;
    e = *find_slot(s, key, klen, hash_key(s, key, klen));
    if (!e)
        return 0;
    e->last_ms = now_ms;
    lru_unlink(s, e);
    lru_push_head(s, e);
    memcpy(out->principal, e->principal, sizeof(out->principal));
    out->conn = e->conn;
    return 1;
}

int rl_sessions_put(struct rl_sessions *s, const char *route, const char *id, size_t n,
                    const char *principal, uint64_t conn, int64_t now_ms)
{
    char key[ROUTE_MAX + 1 + RL_SESSION_ID_MAX];
    size_t klen = make_key(route, id, n, key), plen;
    uint64_t h;
    struct entry **pp, *e;

    if (!klen || !principal || (plen = strlen(principal)) == 0 || plen > RL_PRINCIPAL_MAX)
        return AL_ERR_INVAL;
    rl_sessions_expire(s, now_ms);
    h = hash_key(s, key, klen);
    pp = find_slot(s, key, klen, h);
    e = *pp;
    if (e) {
        lru_unlink(s, e);
    } else {
        if (s->n >= s->cap) {
            remove_entry(s, s->tail);
            pp = find_slot(s, key, klen, h); /* the chain may have changed */
        }
        e = calloc(1, sizeof(*e) + klen);
        if (!e)
            return AL_ERR_NOMEM;
        e->hash = h;
        e->klen = klen;
        memcpy(e->key, key, klen);
        *pp = e;
        s->n++;
    }
    memcpy(e->principal, principal, plen + 1);
    e->conn = conn;
    e->last_ms = now_ms;
    lru_push_head(s, e);
    return 0;
}

int rl_sessions_del(struct rl_sessions *s, const char *route, const char *id, size_t n)
{
    char key[ROUTE_MAX + 1 + RL_SESSION_ID_MAX];
    size_t klen = make_key(route, id, n, key);
    struct entry *e;

    if (!klen)
        return AL_ERR_NOTFOUND;
    e = *find_slot(s, key, klen, hash_key(s, key, klen));
    if (!e)
        return AL_ERR_NOTFOUND;
    remove_entry(s, e);
    return 0;
}

size_t rl_sessions_count(const struct rl_sessions *s)
{
    return s ? s->n : 0;
}
