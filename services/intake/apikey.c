/*
 * apikey: key format, hashing, scopes, the accept/refuse decision and the
 * row cache; see apikey.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "al_err.h"
#include "apikey.h"
#include "inutil.h"

#define DOMAIN      "airlock-api-key-v1"
#define CACHE_LIMIT 10000

int in_apikey_hash(const char *key, size_t len, uint8_t hash[32])
{
    uint8_t buf[sizeof(DOMAIN) + IN_APIKEY_LEN];
    int rc;
    if (len > IN_APIKEY_LEN)
        return AL_ERR_INVAL;
    memcpy(buf, DOMAIN, sizeof(DOMAIN)); /* with its NUL */
    memcpy(buf + sizeof(DOMAIN), key, len);
    rc = in_sha256(buf, sizeof(DOMAIN) + len, hash);
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

int in_apikey_generate(char *id, char *key, uint8_t hash[32])
{
    uint8_t rid[8], secret[32];
    int rc;

    if ((rc = in_random(rid, sizeof(rid))) < 0 || (rc = in_random(secret, sizeof(secret))) < 0)
        goto out;
    memcpy(id, "ak_", 3);
    in_hex(rid, sizeof(rid), id + 3);
    memcpy(key, id, IN_APIKEY_ID_LEN);
    key[IN_APIKEY_ID_LEN] = '.';
    in_hex(secret, sizeof(secret), key + IN_APIKEY_ID_LEN + 1);
    rc = in_apikey_hash(key, IN_APIKEY_LEN, hash);
out:
    OPENSSL_cleanse(secret, sizeof(secret));
    return rc;
}

int in_apikey_id_valid(const char *id)
{
    return id && strlen(id) == IN_APIKEY_ID_LEN && strncmp(id, "ak_", 3) == 0 &&
           in_is_hex(id + 3, 16);
}

int in_apikey_parse(const char *key, size_t len, char *id)
{
    char tmp[IN_APIKEY_ID_LEN + 1];
    if (!key || len != IN_APIKEY_LEN || key[IN_APIKEY_ID_LEN] != '.')
        return AL_ERR_INVAL;
    memcpy(tmp, key, IN_APIKEY_ID_LEN);
    tmp[IN_APIKEY_ID_LEN] = '\0';
    if (!in_apikey_id_valid(tmp))
        return AL_ERR_INVAL;
    for (size_t i = IN_APIKEY_ID_LEN + 1; i < len; i++) {
        char c = key[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return AL_ERR_INVAL;
    }
    memcpy(id, tmp, IN_APIKEY_ID_LEN + 1);
    return 0;
}

int in_apikey_bearer(const char *value, size_t len, const char **key, size_t *keylen)
{
    if (!value || len < 8 || strncasecmp(value, "bearer ", 7) != 0)
        return AL_ERR_INVAL;
    *key = value + 7;
    *keylen = len - 7;
    return 0;
}

static const struct {
    const char *name;
    unsigned bit;
} scope_names[] = {
    {"submit", IN_SCOPE_SUBMIT},
    {"read", IN_SCOPE_READ},
    {"cancel", IN_SCOPE_CANCEL},
};

int in_apikey_scopes_parse(const char *s, unsigned *out)
{
    *out = 0;
    if (!s || !*s)
        return AL_ERR_INVAL;
    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        size_t k;
        if (len > 5 && strncmp(s, "jobs.", 5) == 0) {
            s += 5;
            len -= 5;
        }
        for (k = 0; k < 3; k++)
            if (strlen(scope_names[k].name) == len && strncmp(scope_names[k].name, s, len) == 0)
                break;
        if (k == 3)
            return AL_ERR_INVAL;
        *out |= scope_names[k].bit;
        s += len;
        if (*s == ',') {
            s++;
            if (!*s)
                return AL_ERR_INVAL;
        }
    }
    return 0;
}

void in_apikey_scopes_format(unsigned scopes, char *buf, size_t n)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < 3; k++) {
        if (!(scopes & scope_names[k].bit))
            continue;
        int w = snprintf(buf + o, n - o, "%sjobs.%s", o ? "," : "", scope_names[k].name);
        if (w < 0 || (size_t)w >= n - o)
            return;
        o += (size_t)w;
    }
}

const char *in_apikey_verdict_str(enum in_apikey_verdict v)
{
    switch (v) {
    case IN_KEY_OK:
        return "ok";
    case IN_KEY_MALFORMED:
        return "malformed key";
    case IN_KEY_UNKNOWN:
        return "unknown key";
    case IN_KEY_EXPIRED:
        return "expired key";
    case IN_KEY_REVOKED:
        return "revoked key";
    }
    return "unknown key";
}

enum in_apikey_verdict in_apikey_judge(const struct in_apikey_row *r, const uint8_t hash[32],
                                       int64_t now_ms)
{
    if (!in_ct_equal(r->hash, hash, 32))
        return IN_KEY_UNKNOWN;
    if (r->revoked_ms > 0)
        return IN_KEY_REVOKED;
    if (r->expires_ms > 0 && now_ms >= r->expires_ms)
        return IN_KEY_EXPIRED;
    return IN_KEY_OK;
}

/* ---- cache ---- */

struct cached {
    struct in_apikey_row row;
    int64_t fetched_ms;
};

struct in_apikeys {
    struct in_store *st;
    int64_t ttl_ms;
    struct in_map *m;
};

int in_apikeys_new(struct in_store *st, int64_t cache_ttl_ms, struct in_apikeys **out)
{
    struct in_apikeys *k = calloc(1, sizeof(*k));
    if (!k || in_map_new(&k->m) < 0) {
        free(k);
        return AL_ERR_NOMEM;
    }
    k->st = st;
    k->ttl_ms = cache_ttl_ms;
    *out = k;
    return 0;
}

static void free_entry(const char *key, void *value, void *user)
{
    (void)key;
    (void)user;
    free(value);
}

void in_apikeys_free(struct in_apikeys *k)
{
    if (!k)
        return;
    in_map_each(k->m, free_entry, NULL);
    in_map_free(k->m);
    free(k);
}

static void cache_clear(struct in_apikeys *k)
{
    in_map_each(k->m, free_entry, NULL);
    in_map_free(k->m);
    k->m = NULL;
    if (in_map_new(&k->m) < 0)
        k->m = NULL;
}

/* The row for id: cached while fresh, else read again. */
static int lookup(struct in_apikeys *k, const char *id, int64_t now_ms,
                  const struct in_apikey_row **row)
{
    struct cached *c = k->m ? in_map_get(k->m, id) : NULL;
    int rc;

    if (c && now_ms - c->fetched_ms < k->ttl_ms && now_ms >= c->fetched_ms) {
        *row = &c->row;
        return 0;
    }
    if (!c) {
        if (k->m && in_map_count(k->m) >= CACHE_LIMIT)
            cache_clear(k);
        c = calloc(1, sizeof(*c));
        if (!c)
            return AL_ERR_NOMEM;
        if (!k->m || in_map_put(k->m, id, c) < 0) {
            free(c);
            return AL_ERR_NOMEM;
        }
    }
    rc = in_store_apikey_get(k->st, id, &c->row);
    if (rc < 0) {
        free(in_map_del(k->m, id));
        return rc;
    }
    c->fetched_ms = now_ms;
    *row = &c->row;
    return 0;
}

int in_apikeys_check(struct in_apikeys *k, const char *key, size_t len, int64_t now_ms,
                     struct in_apikey_row *row)
{
    const struct in_apikey_row *r = NULL;
    char id[IN_APIKEY_ID_LEN + 1];
    uint8_t hash[32];
    int rc;

    if (in_apikey_parse(key, len, id) < 0)
        return IN_KEY_MALFORMED;
    if ((rc = in_apikey_hash(key, len, hash)) < 0)
        return rc;
    rc = lookup(k, id, now_ms, &r);
    if (rc == AL_ERR_NOTFOUND)
        return IN_KEY_UNKNOWN;
    if (rc < 0)
        return rc;
    rc = (int)in_apikey_judge(r, hash, now_ms);
    if (rc == IN_KEY_OK) {
        *row = *r;
        memset(row->hash, 0, sizeof(row->hash));
    }
    return rc;
}
