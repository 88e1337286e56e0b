/*
 * inutil: clock, randomness, hex, hashing, name checks, globs and the
 * string map used by airlock-intake; see inutil.h.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "al_err.h"
#include "al_glob.h"
#include "inutil.h"

int64_t in_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int in_random(void *buf, size_t n)
{
    if (n > 0x7fffffff || RAND_bytes(buf, (int)n) != 1)
        return AL_ERR_CRYPTO;
    return 0;
}

void in_hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int in_unhex(const char *s, size_t len, uint8_t *out, size_t outlen)
{
    if (!s || len != 2 * outlen)
        return AL_ERR_INVAL;
    for (size_t i = 0; i < outlen; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return AL_ERR_INVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int in_is_hex(const char *s, size_t n)
{
    if (!s || strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (hexval(s[i]) < 0)
            return 0;
    return 1;
}

int in_ct_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

int in_sha256(const void *buf, size_t len, uint8_t out[32])
{
    unsigned int olen = 0;
    if (EVP_Digest(buf, len, out, &olen, EVP_sha256(), NULL) != 1 || olen != 32)
        return AL_ERR_CRYPTO;
    return 0;
}

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

int in_name_valid(const char *s, size_t max)
{
    size_t n = 0;
    if (!s)
        return 0;
    for (; s[n]; n++)
        if (n >= max || !name_char(s[n]))
            return 0;
    return n > 0;
}

int in_principal_valid(const char *s)
{
    size_t n = 0, seg = 0;
    if (!s)
        return 0;
    for (; s[n]; n++) {
        if (n >= 128)
            return 0;
        if (s[n] == '/') {
            if (seg == 0)
                return 0;
            seg = 0;
        } else if (name_char(s[n])) {
            seg++;
        } else {
            return 0;
        }
    }
    return n > 0 && seg > 0;
}

int in_env_name_valid(const char *s)
{
    if (!s || !s[0] || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return 0;
    }
    return 1;
}

int in_glob_match(const char *pat, const char *s)
{
    return al_glob_match(pat, s, IN_GLOB_MAX);
}

int in_glob_any(char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (in_glob_match(list[i], s))
            return 1;
    return 0;
}

/* ---- map: chained hash table, FNV-1a, doubled at load factor 1 ---- */

struct entry {
    struct entry *next;
    void *value;
    char key[];
};

struct in_map {
    struct entry **b;
    size_t nb, n;
};

static size_t hash(const char *k)
{
    uint64_t h = 1469598103934665603ull;
    for (; *k; k++) {
        h ^= (unsigned char)*k;
        h *= 1099511628211ull;
    }
    return (size_t)h;
}

int in_map_new(struct in_map **out)
{
    struct in_map *m = calloc(1, sizeof(*m));
    if (!m || !(m->b = calloc(16, sizeof(*m->b)))) {
        free(m);
        return AL_ERR_NOMEM;
    }
    m->nb = 16;
    *out = m;
    return 0;
}

void in_map_free(struct in_map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nb; i++) {
        struct entry *e = m->b[i];
        while (e) {
            struct entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->b);
    free(m);
}

static struct entry **slot(const struct in_map *m, const char *key)
{
    struct entry **p = &m->b[hash(key) & (m->nb - 1)];
    while (*p && strcmp((*p)->key, key) != 0)
        p = &(*p)->next;
    return p;
}

void *in_map_get(const struct in_map *m, const char *key)
{
    struct entry *e = *slot(m, key);
    return e ? e->value : NULL;
}

static void grow(struct in_map *m)
{
    size_t nb = m->nb * 2;
    struct entry **b = calloc(nb, sizeof(*b));
    if (!b)
        return; /* keep the longer chains */
    for (size_t i = 0; i < m->nb; i++) {
        struct entry *e = m->b[i];
        while (e) {
            struct entry *next = e->next;
            size_t h = hash(e->key) & (nb - 1);
            e->next = b[h];
            b[h] = e;
            e = next;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
}

int in_map_put(struct in_map *m, const char *key, void *value)
{
    struct entry **p = slot(m, key);
    if (*p) {
        (*p)->value = value;
        return 0;
    }
    size_t len = strlen(key);
    struct entry *e = malloc(sizeof(*e) + len + 1);
    if (!e)
        return AL_ERR_NOMEM;
    memcpy(e->key, key, len + 1);
    e->value = value;
    e->next = NULL;
    *p = e;
    if (++m->n > m->nb)
        grow(m);
    return 0;
}

void *in_map_del(struct in_map *m, const char *key)
{
    struct entry **p = slot(m, key), *e = *p;
    void *v;
    if (!e)
        return NULL;
    *p = e->next;
    v = e->value;
    free(e);
    m->n--;
    return v;
}

size_t in_map_count(const struct in_map *m)
{
    return m ? m->n : 0;
}

void in_map_each(const struct in_map *m, void (*fn)(const char *key, void *value, void *user),
                 void *user)
{
    for (size_t i = 0; i < m->nb; i++)
        for (struct entry *e = m->b[i]; e; e = e->next)
            fn(e->key, e->value, user);
}
