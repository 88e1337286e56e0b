/*
 * agentkeys: the relay's agent API key file: parsing, the per-request check
 * and the writers airlockctl uses; see agentkeys.h for the format.
 *
 * A loaded file is an array of struct rl_key sorted by id (binary search on
 * every request). Writers never edit the file in place: under an exclusive
 * flock on "<file>.lock" they read it, build the new text (comments and
 * unrelated lines kept byte for byte), write it to a temporary file in the
 * same directory, fsync it, rename it over the file and fsync the directory,
 * so a reader sees either the old or the new file, whole.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "agentkeys.h"
#include "al_err.h"
#include "al_glob.h"

#define MAGIC        "airlock-relay-keys v1"
#define HASH_DOMAIN  "airlock-relay-key-v1"
#define FILE_MAX     (64u * 1024 * 1024) /* refuse larger key files */
#define LINE_MAX_LEN (RL_KEY_ID_LEN + 64 + RL_PRINCIPAL_MAX + RL_ROUTES_MAX + 3 * 20 + 6)

struct rl_keys {
    struct rl_key *v; /* sorted by id */
    size_t n;
};

/* ---- small helpers ---- */

static int is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static void to_hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_val(char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

static int id_valid(const char *s, size_t n)
{
    return n == RL_KEY_ID_LEN && memcmp(s, "rk_", 3) == 0 && is_lower_hex(s + 3, 16);
}

/* SHA-256(domain "\0" || key). */
static int key_hash(const char *key, size_t len, uint8_t hash[32])
{
    uint8_t buf[sizeof(HASH_DOMAIN) + RL_KEY_LEN];
    unsigned outlen = 0;
    int ok;

    if (len > RL_KEY_LEN)
        return AL_ERR_INVAL;
    memcpy(buf, HASH_DOMAIN, sizeof(HASH_DOMAIN)); /* with its NUL */
    memcpy(buf + sizeof(HASH_DOMAIN), key, len);
    ok = EVP_Digest(buf, sizeof(HASH_DOMAIN) + len, hash, &outlen, EVP_sha256(), NULL) == 1 &&
         outlen == 32;
    OPENSSL_cleanse(buf, sizeof(buf));
    return ok ? 0 : AL_ERR_CRYPTO;
}

/* Decimal int64 >= 0, no sign, no leading zeros beyond "0". */
static int parse_ms(const char *s, size_t n, int64_t *out)
{
    int64_t v = 0;

    if (n == 0 || n > 19 || (n > 1 && s[0] == '0'))
        return AL_ERR_INVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return AL_ERR_INVAL;
        if (v > (INT64_MAX - (s[i] - '0')) / 10)
            return AL_ERR_INVAL;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int principal_valid_n(const char *p, size_t n)
{
    if (n == 0 || n > RL_PRINCIPAL_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '@' || c == ':' || c == '/' || c == '-'))
            return 0;
    }
    return 1;
}

/* Patterns are globs over "<tunnel>/<server>": the name characters plus
 * '*' and '/'; nothing that could break the line format. */
static int routes_valid_n(const char *r, size_t n)
{
    size_t plen = 0;

    if (n == 0 || n > RL_ROUTES_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = r[i];
        if (c == ',') {
            if (plen == 0)
                return 0;
            plen = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '*' || c == '/'))
            return 0;
        plen++;
    }
    return plen > 0;
}

int rl_key_principal_valid(const char *p)
{
    return p && principal_valid_n(p, strlen(p)) ? 0 : AL_ERR_INVAL;
}

int rl_key_routes_valid(const char *routes)
{
    return routes && routes_valid_n(routes, strlen(routes)) ? 0 : AL_ERR_INVAL;
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(((const struct rl_key *)a)->id, ((const struct rl_key *)b)->id);
}

/* ---- parsing ---- */

static int errf(char *err, size_t errn, const char *path, size_t line, const char *reason)
{
    if (err && errn)
        snprintf(err, errn, "%s:%zu: %s", path, line, reason);
    return AL_ERR_CONFIG;
}

/* Parses one key line (no newline) into k; returns NULL or the reason. */
static const char *parse_line(const char *s, size_t n, struct rl_key *k)
{
    const char *f[7];
    size_t fl[7], nf = 0, start = 0;

    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != ' ')
            continue;
        if (nf == 7)
            return "too many fields (want: id hash principal routes created_ms expires_ms "
                   "revoked_ms)";
        if (i == start)
            return "empty field (fields are separated by single spaces)";
        f[nf] = s + start;
        fl[nf++] = i - start;
        start = i + 1;
    }
    if (nf != 7)
        return "too few fields (want: id hash principal routes created_ms expires_ms revoked_ms)";
    memset(k, 0, sizeof(*k));
    if (!id_valid(f[0], fl[0]))
        return "bad key id (want rk_ and 16 lowercase hex digits)";
    memcpy(k->id, f[0], RL_KEY_ID_LEN);
    if (fl[1] != 64 || !is_lower_hex(f[1], 64))
        return "bad hash (want 64 lowercase hex digits)";
    for (size_t i = 0; i < 32; i++)
        k->hash[i] = (uint8_t)(hex_val(f[1][2 * i]) << 4 | hex_val(f[1][2 * i + 1]));
    if (!principal_valid_n(f[2], fl[2]))
        return "bad principal (1-128 characters of [A-Za-z0-9._@:/-])";
    memcpy(k->principal, f[2], fl[2]);
    if (!routes_valid_n(f[3], fl[3]))
        return "bad routes (comma-separated patterns of [A-Za-z0-9._*/-], at most 1024 bytes)";
    memcpy(k->routes, f[3], fl[3]);
    if (parse_ms(f[4], fl[4], &k->created_ms) < 0)
        return "bad created_ms (a non-negative integer)";
    if (parse_ms(f[5], fl[5], &k->expires_ms) < 0)
        return "bad expires_ms (a non-negative integer, 0 = never)";
    if (parse_ms(f[6], fl[6], &k->revoked_ms) < 0)
        return "bad revoked_ms (a non-negative integer, 0 = not revoked)";
    return NULL;
}

/* Reads the whole file into a NUL-terminated heap buffer. */
static int read_file(const char *path, char **out, size_t *len)
{
    struct stat st;
    char *buf = NULL;
    size_t got = 0, cap;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc = 0;

    *out = NULL;
    *len = 0;
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        goto out;
    }
    if ((uint64_t)st.st_size > FILE_MAX) {
        rc = AL_ERR_TOOBIG;
        goto out;
    }
    cap = (size_t)st.st_size + 1;
    buf = malloc(cap + 1);
    if (!buf) {
        rc = AL_ERR_NOMEM;
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto out;
        }
        if (r == 0)
            break;
        got += (size_t)r;
        if (got == cap) { /* the file grew while we read: a writer does not do that */
            rc = AL_ERR_TOOBIG;
            goto out;
        }
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}

/* Line number of the last line starting with "<id> " (for the duplicate
 * message, which is found after sorting). */
static size_t line_of(const char *text, size_t len, const char *id)
{
    size_t pos = 0, line = 0, found = 0;

    while (pos < len) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) + 1 : len - pos;
        line++;
        if (n > RL_KEY_ID_LEN && memcmp(s, id, RL_KEY_ID_LEN) == 0 && s[RL_KEY_ID_LEN] == ' ')
            found = line;
        pos += n;
    }
    return found;
}

/* Parses file text; keys sorted by id. */
static int parse_text(const char *path, const char *text, size_t len, struct rl_keys **out,
                      char *err, size_t errn)
{
    struct rl_keys *k = calloc(1, sizeof(*k));
    size_t cap = 0, line = 0, pos = 0;
    int rc = 0;

    *out = NULL;
    if (!k)
        return AL_ERR_NOMEM;
    while (pos < len) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        line++;
        if (n > 0 && s[n - 1] == '\r')
            n--;
        if (memchr(s, '\0', n) || memchr(s, '\r', n)) {
            rc = errf(err, errn, path, line, "control character in line");
            goto out;
        }
        if (line == 1) {
            if (n != strlen(MAGIC) || memcmp(s, MAGIC, n) != 0) {
                rc = errf(err, errn, path, line, "first line must be \"" MAGIC "\"");
                goto out;
            }
            continue;
        }
        if (n == 0 || s[0] == '#')
            continue;
        if (n > LINE_MAX_LEN) {
            rc = errf(err, errn, path, line, "line too long");
            goto out;
        }
        if (k->n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct rl_key *nv = realloc(k->v, ncap * sizeof(*nv));
            if (!nv) {
                rc = AL_ERR_NOMEM;
                goto out;
            }
            k->v = nv;
            cap = ncap;
        }
        const char *why = parse_line(s, n, &k->v[k->n]);
        if (why) {
            rc = errf(err, errn, path, line, why);
            goto out;
        }
        k->n++;
    }
    if (line == 0) {
        rc = errf(err, errn, path, 1, "empty file (first line must be \"" MAGIC "\")");
        goto out;
    }
    if (k->n)
        qsort(k->v, k->n, sizeof(*k->v), cmp_key);
    for (size_t i = 1; i < k->n; i++) {
        if (strcmp(k->v[i - 1].id, k->v[i].id) == 0) {
            char why[80];
            snprintf(why, sizeof(why), "key id %s appears twice", k->v[i].id);
            rc = errf(err, errn, path, line_of(text, len, k->v[i].id), why);
            goto out;
        }
    }
out:
    if (rc < 0) {
        rl_keys_free(k);
        return rc;
    }
    *out = k;
    return 0;
}

int rl_keys_load(const char *path, struct rl_keys **out, char *err, size_t errn)
{
    char *text = NULL;
    size_t len = 0;
    int rc;

    *out = NULL;
    if (err && errn)
        err[0] = '\0';
    rc = read_file(path, &text, &len);
    if (rc < 0) {
        if (err && errn)
            snprintf(err, errn, "%s: %s", path,
                     rc == AL_ERR_TOOBIG ? "file larger than 64 MiB" : al_strerror(rc));
        return rc == AL_ERR_TOOBIG ? AL_ERR_CONFIG : rc;
    }
    rc = parse_text(path, text, len, out, err, errn);
    free(text);
    return rc;
}

void rl_keys_free(struct rl_keys *k)
{
    if (!k)
        return;
    if (k->v)
        OPENSSL_cleanse(k->v, k->n * sizeof(*k->v));
    free(k->v);
    free(k);
}

size_t rl_keys_count(const struct rl_keys *k)
{
    return k ? k->n : 0;
}

const struct rl_key *rl_keys_at(const struct rl_keys *k, size_t i)
{
    return k && i < k->n ? &k->v[i] : NULL;
}

static const struct rl_key *find(const struct rl_keys *k, const char *id)
{
    struct rl_key probe;

    if (!k || !k->n)
        return NULL;
    memcpy(probe.id, id, RL_KEY_ID_LEN + 1);
    return bsearch(&probe, k->v, k->n, sizeof(*k->v), cmp_key);
}

/* ---- checking ---- */

/* "Bearer <key>": scheme case-insensitive, one or more spaces, the key in
 * its exact form. *key points into value. */
static int bearer(const char *value, size_t len, const char **key)
{
    size_t i = 6;

    if (!value || len < 7 || strncasecmp(value, "bearer", 6) != 0 || value[6] != ' ')
        return AL_ERR_INVAL;
    while (i < len && value[i] == ' ')
        i++;
    while (len > i && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len - i != RL_KEY_LEN)
        return AL_ERR_INVAL;
    *key = value + i;
    if (!id_valid(*key, RL_KEY_ID_LEN) || (*key)[RL_KEY_ID_LEN] != '.' ||
        !is_lower_hex(*key + RL_KEY_ID_LEN + 1, RL_KEY_SECRET_LEN))
        return AL_ERR_INVAL;
    return 0;
}

static int route_allowed(const char *routes, const char *route)
{
    char pat[RL_ROUTES_MAX + 1];
    const char *p = routes;

    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        memcpy(pat, p, n);
        pat[n] = '\0';
        if (al_glob_match(pat, route, AL_GLOB_MAX))
            return 1;
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}

enum rl_key_verdict rl_keys_check(const struct rl_keys *k, const char *authorization, size_t len,
                                  const char *route, int64_t now_ms, const struct rl_key **key)
{
    const struct rl_key *found;
    const char *presented;
    char id[RL_KEY_ID_LEN + 1];
    uint8_t hash[32];
    int same;

    *key = NULL;
    if (bearer(authorization, len, &presented) < 0)
        return RL_KEY_MALFORMED;
    memcpy(id, presented, RL_KEY_ID_LEN);
    id[RL_KEY_ID_LEN] = '\0';
    found = find(k, id);
    if (!found)
        return RL_KEY_UNKNOWN;
    if (key_hash(presented, RL_KEY_LEN, hash) < 0)
        return RL_KEY_UNKNOWN;
    same = CRYPTO_memcmp(hash, found->hash, 32) == 0;
    OPENSSL_cleanse(hash, sizeof(hash));
    if (!same)
        return RL_KEY_UNKNOWN;
    /* a revocation takes effect at once, whatever the writer's clock said */
    if (found->revoked_ms > 0)
        return RL_KEY_REVOKED;
    if (found->expires_ms > 0 && now_ms >= found->expires_ms)
        return RL_KEY_EXPIRED;
    *key = found;
    if (!route || !route_allowed(found->routes, route))
        return RL_KEY_ROUTE;
    return RL_KEY_OK;
}

const char *rl_key_verdict_str(enum rl_key_verdict v)
{
    switch (v) {
    case RL_KEY_OK:
        return "ok";
    case RL_KEY_MALFORMED:
        return "missing or malformed API key (want Authorization: Bearer rk_...)";
    case RL_KEY_UNKNOWN:
        return "unknown API key";
    case RL_KEY_EXPIRED:
        return "expired API key";
    case RL_KEY_REVOKED:
        return "revoked API key";
    case RL_KEY_ROUTE:
        return "API key not valid for this tunnel/server";
    }
    return "unknown API key";
}

/* ---- writers ---- */

int rl_key_generate(char *id, char *key, uint8_t hash[32])
{
    uint8_t rid[8], secret[32];
    int rc = AL_ERR_CRYPTO;

    if (RAND_bytes(rid, sizeof(rid)) != 1 || RAND_bytes(secret, sizeof(secret)) != 1)
        goto out;
    memcpy(id, "rk_", 3);
    to_hex(rid, sizeof(rid), id + 3);
    memcpy(key, id, RL_KEY_ID_LEN);
    key[RL_KEY_ID_LEN] = '.';
    to_hex(secret, sizeof(secret), key + RL_KEY_ID_LEN + 1);
    rc = key_hash(key, RL_KEY_LEN, hash);
out:
    OPENSSL_cleanse(secret, sizeof(secret));
    return rc;
}

static int format_line(const struct rl_key *k, char *buf, size_t n)
{
    char hex[65];
    int w;

    to_hex(k->hash, 32, hex);
    w = snprintf(buf, n, "%s %s %s %s %lld %lld %lld\n", k->id, hex, k->principal, k->routes,
                 (long long)k->created_ms, (long long)k->expires_ms, (long long)k->revoked_ms);
    return w < 0 || (size_t)w >= n ? AL_ERR_TOOBIG : w;
}

static int write_all(int fd, const char *d, size_t n)
{
    while (n) {
        ssize_t w = write(fd, d, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        d += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Splits path into its directory (for the temporary file and the fsync). */
static void dir_of(const char *path, char *dir, size_t n)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, n, ".");
    else if (slash == path)
        snprintf(dir, n, "/");
    else
        snprintf(dir, n, "%.*s", (int)(slash - path), path);
}

/* Writes text to a temporary file next to path, fsyncs it, renames it over
 * path and fsyncs the directory. */
static int replace_file(const char *path, const char *text, size_t len)
{
    char dir[PATH_MAX], tmp[PATH_MAX + 32];
    const char *base = strrchr(path, '/');
    int fd, rc, dfd;

    base = base ? base + 1 : path;
    dir_of(path, dir, sizeof(dir));
    char rnd[7]; /* mkostemp's template: six 'X' it replaces */
    memset(rnd, 'X', 6);
    rnd[6] = '\0';
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%s", dir, base, rnd) >= sizeof(tmp))
        return -ENAMETOOLONG;
    fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
    if (fd < 0)
        return -errno;
    rc = write_all(fd, text, len);
    if (rc == 0 && fchmod(fd, 0600) < 0)
        rc = -errno;
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) < 0)
            rc = -errno;
        close(dfd);
    }
    return rc;
}

/* Takes the writers' lock; returns the lock fd or -errno. */
static int lock_file(const char *path)
{
    char lp[PATH_MAX + 8];
    int fd;

    if ((size_t)snprintf(lp, sizeof(lp), "%s.lock", path) >= sizeof(lp))
        return -ENAMETOOLONG;
    fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    while (flock(fd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            int e = -errno;
            close(fd);
            return e;
        }
    }
    return fd;
}

static void unlock_file(int fd)
{
    flock(fd, LOCK_UN);
    close(fd);
}

/* Under the lock: reads and validates the current file (missing = empty). */
static int load_current(const char *path, char **text, size_t *len, struct rl_keys **keys,
                        char *err, size_t errn)
{
    int rc = read_file(path, text, len);

    *keys = NULL;
    if (rc == -ENOENT) {
        *text = strdup(MAGIC "\n");
        if (!*text)
            return AL_ERR_NOMEM;
        *len = strlen(*text);
    } else if (rc < 0) {
        if (err && errn)
            snprintf(err, errn, "%s: %s", path, al_strerror(rc));
        return rc == AL_ERR_TOOBIG ? AL_ERR_CONFIG : rc;
    }
    rc = parse_text(path, *text, *len, keys, err, errn);
    if (rc < 0) {
        free(*text);
        *text = NULL;
    }
    return rc;
}

int rl_keys_add(const char *path, const struct rl_key *key, char *err, size_t errn)
{
    struct rl_keys *cur = NULL;
    char *text = NULL, *out = NULL, line[LINE_MAX_LEN + 2];
    size_t len = 0;
    int lfd, rc, w;

    if (err && errn)
        err[0] = '\0';
    if (!id_valid(key->id, strnlen(key->id, sizeof(key->id))) ||
        rl_key_principal_valid(key->principal) < 0 || rl_key_routes_valid(key->routes) < 0 ||
        key->created_ms < 0 || key->expires_ms < 0 || key->revoked_ms < 0) {
        if (err && errn)
            snprintf(err, errn, "invalid key fields");
        return AL_ERR_INVAL;
    }
    w = format_line(key, line, sizeof(line));
    if (w < 0)
        return AL_ERR_INVAL;
    lfd = lock_file(path);
    if (lfd < 0)
        return lfd;
    rc = load_current(path, &text, &len, &cur, err, errn);
    if (rc < 0)
        goto out;
    if (find(cur, key->id)) {
        if (err && errn)
            snprintf(err, errn, "key id %s already exists", key->id);
        rc = AL_ERR_EXISTS;
        goto out;
    }
    out = malloc(len + (size_t)w + 2);
    if (!out) {
        rc = AL_ERR_NOMEM;
        goto out;
    }
    memcpy(out, text, len);
    if (len && text[len - 1] != '\n')
        out[len++] = '\n';
    memcpy(out + len, line, (size_t)w);
    rc = replace_file(path, out, len + (size_t)w);
    if (rc < 0 && err && errn)
        snprintf(err, errn, "%s: %s", path, al_strerror(rc));
out:
    free(out);
    free(text);
    rl_keys_free(cur);
    unlock_file(lfd);
    return rc;
}

/* Rebuilds the file text with id's line marked revoked at now_ms; every
 * other line is copied unchanged. */
static int rewrite_revoked(const char *text, size_t len, const struct rl_key *k, int64_t now_ms,
                           char **out, size_t *outlen)
{
    struct rl_key r = *k;
    char line[LINE_MAX_LEN + 2];
    size_t pos = 0, o = 0;
    int w;

    if (r.revoked_ms == 0)
        r.revoked_ms = now_ms > 0 ? now_ms : 1;
    w = format_line(&r, line, sizeof(line));
    if (w < 0)
        return AL_ERR_INVAL;
    *out = malloc(len + (size_t)w + 2);
    if (!*out)
        return AL_ERR_NOMEM;
    while (pos < len) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) + 1 : len - pos;
        pos += n;
        if (n > RL_KEY_ID_LEN && memcmp(s, k->id, RL_KEY_ID_LEN) == 0 && s[RL_KEY_ID_LEN] == ' ') {
            memcpy(*out + o, line, (size_t)w);
            o += (size_t)w;
            continue;
        }
        memcpy(*out + o, s, n);
        o += n;
    }
    *outlen = o;
    return 0;
}

int rl_keys_revoke(const char *path, const char *id, int64_t now_ms, char *err, size_t errn)
{
    struct rl_keys *cur = NULL;
    const struct rl_key *k;
    char *text = NULL, *out = NULL;
    size_t len = 0, outlen = 0;
    int lfd, rc;

    if (err && errn)
        err[0] = '\0';
    if (!id || !id_valid(id, strlen(id))) {
        if (err && errn)
            snprintf(err, errn, "not a key id (want rk_ and 16 lowercase hex digits)");
        return AL_ERR_INVAL;
    }
    lfd = lock_file(path);
    if (lfd < 0)
        return lfd;
    rc = load_current(path, &text, &len, &cur, err, errn);
    if (rc < 0)
        goto out;
    k = find(cur, id);
    if (!k) {
        if (err && errn)
            snprintf(err, errn, "no key %s in %s", id, path);
        rc = AL_ERR_NOTFOUND;
        goto out;
    }
    if (k->revoked_ms > 0)
        goto out; /* already revoked: keep the first revocation time */
    rc = rewrite_revoked(text, len, k, now_ms, &out, &outlen);
    if (rc == 0)
        rc = replace_file(path, out, outlen);
    if (rc < 0 && err && errn && !err[0])
        snprintf(err, errn, "%s: %s", path, al_strerror(rc));
out:
    free(out);
    free(text);
    rl_keys_free(cur);
    unlock_file(lfd);
    return rc;
}
