/* Unit tests for intake API keys (apikey.h): format, hashing, bearer
 * parsing, scopes, the accept/refuse decision (hash, revocation, expiry) and
 * the cache over the store (a revocation made by another connection, as
 * airlockctl does, takes effect once the cache entry is older than its ttl;
 * expiry is checked on every call; only the hash is stored). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "apikey.h"
#include "instore.h"

#define T0 1700000000000LL

static char base[64];

static void test_format_and_hash(void)
{
    char id[IN_APIKEY_ID_LEN + 1], key[IN_APIKEY_LEN + 1], id2[IN_APIKEY_ID_LEN + 1],
        key2[IN_APIKEY_LEN + 1], parsed[IN_APIKEY_ID_LEN + 1];
    uint8_t h[32], h2[32], again[32];

    CU_ASSERT_EQUAL_FATAL(in_apikey_generate(id, key, h), 0);
    CU_ASSERT_EQUAL_FATAL(in_apikey_generate(id2, key2, h2), 0);
    CU_ASSERT_EQUAL(strlen(id), IN_APIKEY_ID_LEN);
    CU_ASSERT_EQUAL(strlen(key), IN_APIKEY_LEN);
    CU_ASSERT_TRUE(in_apikey_id_valid(id));
    CU_ASSERT_EQUAL(strncmp(key, id, IN_APIKEY_ID_LEN), 0);
    CU_ASSERT_STRING_NOT_EQUAL(key, key2);
    CU_ASSERT_NOT_EQUAL(memcmp(h, h2, 32), 0);
    CU_ASSERT_EQUAL(in_apikey_hash(key, strlen(key), again), 0);
    CU_ASSERT_EQUAL(memcmp(h, again, 32), 0);
    CU_ASSERT_EQUAL(in_apikey_parse(key, strlen(key), parsed), 0);
    CU_ASSERT_STRING_EQUAL(parsed, id);
    /* malformed keys */
    char bad[IN_APIKEY_LEN + 2];
    snprintf(bad, sizeof(bad), "%s", key);
    bad[IN_APIKEY_ID_LEN] = '_';
    CU_ASSERT_NOT_EQUAL(in_apikey_parse(bad, strlen(bad), parsed), 0);
    snprintf(bad, sizeof(bad), "%s", key);
    bad[IN_APIKEY_LEN - 1] = 'A'; /* upper-case hex is not the stored form */
    CU_ASSERT_NOT_EQUAL(in_apikey_parse(bad, strlen(bad), parsed), 0);
    CU_ASSERT_NOT_EQUAL(in_apikey_parse(key, strlen(key) - 1, parsed), 0);
    snprintf(bad, sizeof(bad), "xx%s", key + 2);
    CU_ASSERT_NOT_EQUAL(in_apikey_parse(bad, strlen(bad), parsed), 0);
    CU_ASSERT_FALSE(in_apikey_id_valid("ak_123"));
    CU_ASSERT_FALSE(in_apikey_id_valid("ak_0123456789abcdeg"));
}

static void test_bearer_and_scopes(void)
{
    const char *k;
    size_t n;
    unsigned sc;
    char buf[64];

    CU_ASSERT_EQUAL(in_apikey_bearer("Bearer abc", 10, &k, &n), 0);
    CU_ASSERT_EQUAL(n, 3);
    CU_ASSERT_EQUAL(strncmp(k, "abc", 3), 0);
    CU_ASSERT_EQUAL(in_apikey_bearer("bearer abc", 10, &k, &n), 0);
    CU_ASSERT_NOT_EQUAL(in_apikey_bearer("Basic abc", 9, &k, &n), 0);
    CU_ASSERT_NOT_EQUAL(in_apikey_bearer("Bearer ", 7, &k, &n), 0);
    CU_ASSERT_NOT_EQUAL(in_apikey_bearer("Bearer", 6, &k, &n), 0);
    CU_ASSERT_EQUAL(in_apikey_scopes_parse("submit,read,cancel", &sc), 0);
    CU_ASSERT_EQUAL(sc, IN_SCOPE_SUBMIT | IN_SCOPE_READ | IN_SCOPE_CANCEL);
    CU_ASSERT_EQUAL(in_apikey_scopes_parse("jobs.read", &sc), 0);
    CU_ASSERT_EQUAL(sc, IN_SCOPE_READ);
    CU_ASSERT_NOT_EQUAL(in_apikey_scopes_parse("", &sc), 0);
    CU_ASSERT_NOT_EQUAL(in_apikey_scopes_parse("read,", &sc), 0);
    CU_ASSERT_NOT_EQUAL(in_apikey_scopes_parse("admin", &sc), 0);
    CU_ASSERT_NOT_EQUAL(in_apikey_scopes_parse("jobs.", &sc), 0);
    in_apikey_scopes_format(IN_SCOPE_SUBMIT | IN_SCOPE_CANCEL, buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "jobs.submit,jobs.cancel");
}

static void test_judge(void)
{
    struct in_apikey_row r = {0};
    uint8_t h[32];
    memset(r.hash, 0x11, 32);
    memcpy(h, r.hash, 32);
    CU_ASSERT_EQUAL(in_apikey_judge(&r, h, T0), IN_KEY_OK);
    for (int i = 0; i < 32; i++) {
        h[i] ^= 0x80;
        CU_ASSERT_EQUAL(in_apikey_judge(&r, h, T0), IN_KEY_UNKNOWN);
        h[i] ^= 0x80;
    }
    r.expires_ms = T0 + 10;
    CU_ASSERT_EQUAL(in_apikey_judge(&r, h, T0 + 9), IN_KEY_OK);
    CU_ASSERT_EQUAL(in_apikey_judge(&r, h, T0 + 10), IN_KEY_EXPIRED);
    r.revoked_ms = T0;
    CU_ASSERT_EQUAL(in_apikey_judge(&r, h, T0), IN_KEY_REVOKED);
    /* a wrong secret is "unknown" even for a revoked id: nothing leaks */
    h[0] ^= 1;
    CU_ASSERT_EQUAL(in_apikey_judge(&r, h, T0), IN_KEY_UNKNOWN);
}

static int file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    static char buf[1 << 20];
    size_t n;
    int found = 0;
    if (!f)
        return 0;
    n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    for (size_t i = 0; i + strlen(needle) <= n && !found; i++)
        found = memcmp(buf + i, needle, strlen(needle)) == 0;
    return found;
}

static void test_cache_over_store(void)
{
    char dir[96], path[160], id[IN_APIKEY_ID_LEN + 1], key[IN_APIKEY_LEN + 1],
        key2[IN_APIKEY_LEN + 1], id2[IN_APIKEY_ID_LEN + 1];
    struct in_store *st = NULL, *ctl = NULL;
    struct in_apikeys *k = NULL;
    struct in_apikey_row r = {0}, out;

    snprintf(dir, sizeof(dir), "%s/keys", base);
    CU_ASSERT_EQUAL_FATAL(in_store_open(dir, 1, &st), 0);
    CU_ASSERT_EQUAL_FATAL(in_store_open(dir, 0, &ctl), 0); /* another process's connection */
    CU_ASSERT_EQUAL_FATAL(in_apikeys_new(st, 5000, &k), 0);
    CU_ASSERT_EQUAL(in_apikey_generate(r.id, key, r.hash), 0);
    memcpy(id, r.id, sizeof(id));
    snprintf(r.principal, sizeof(r.principal), "acme/a");
    r.scopes = IN_SCOPE_READ;
    r.created_ms = T0;
    CU_ASSERT_EQUAL(in_store_apikey_put(ctl, &r), 0);
    CU_ASSERT_EQUAL(in_store_apikey_put(ctl, &r), AL_ERR_EXISTS);
    CU_ASSERT_EQUAL(in_apikeys_check(k, key, strlen(key), T0, &out), IN_KEY_OK);
    CU_ASSERT_STRING_EQUAL(out.principal, "acme/a");
    CU_ASSERT_EQUAL(out.scopes, IN_SCOPE_READ);
    /* wrong secret for a known id, unknown id, malformed */
    memcpy(key2, key, sizeof(key2));
    key2[IN_APIKEY_LEN - 1] = key2[IN_APIKEY_LEN - 1] == '0' ? '1' : '0';
    CU_ASSERT_EQUAL(in_apikeys_check(k, key2, strlen(key2), T0, &out), IN_KEY_UNKNOWN);
    CU_ASSERT_EQUAL(in_apikey_generate(id2, key2, r.hash), 0);
    CU_ASSERT_EQUAL(in_apikeys_check(k, key2, strlen(key2), T0, &out), IN_KEY_UNKNOWN);
    CU_ASSERT_EQUAL(in_apikeys_check(k, "nonsense", 8, T0, &out), IN_KEY_MALFORMED);
    /* revoked by the other connection: seen once the cached row is ttl old */
    CU_ASSERT_EQUAL(in_store_apikey_revoke(ctl, id, T0 + 1), 0);
    CU_ASSERT_EQUAL(in_apikeys_check(k, key, strlen(key), T0 + 4999, &out), IN_KEY_OK);
    CU_ASSERT_EQUAL(in_apikeys_check(k, key, strlen(key), T0 + 5000, &out), IN_KEY_REVOKED);
    CU_ASSERT_EQUAL(in_store_apikey_revoke(ctl, "ak_0000000000000000", T0), AL_ERR_NOTFOUND);
    /* a second revocation keeps the first time */
    CU_ASSERT_EQUAL(in_store_apikey_revoke(ctl, id, T0 + 99), 0);
    CU_ASSERT_EQUAL(in_store_apikey_get(ctl, id, &out), 0);
    CU_ASSERT_EQUAL(out.revoked_ms, T0 + 1);
    /* expiry is checked on every call, cached or not */
    struct in_apikey_row e = {0};
    char ekey[IN_APIKEY_LEN + 1];
    CU_ASSERT_EQUAL(in_apikey_generate(e.id, ekey, e.hash), 0);
    snprintf(e.principal, sizeof(e.principal), "acme/b");
    e.scopes = IN_SCOPE_SUBMIT;
    e.created_ms = T0;
    e.expires_ms = T0 + 100;
    CU_ASSERT_EQUAL(in_store_apikey_put(ctl, &e), 0);
    CU_ASSERT_EQUAL(in_apikeys_check(k, ekey, strlen(ekey), T0 + 99, &out), IN_KEY_OK);
    CU_ASSERT_EQUAL(in_apikeys_check(k, ekey, strlen(ekey), T0 + 100, &out), IN_KEY_EXPIRED);
    /* only the hash is at rest */
    in_apikeys_free(k);
    in_store_close(st);
    in_store_close(ctl);
    snprintf(path, sizeof(path), "%s/%s", dir, IN_STORE_DB_FILE);
    CU_ASSERT_FALSE(file_contains(path, key + IN_APIKEY_ID_LEN + 1));
    snprintf(path, sizeof(path), "%s/%s-wal", dir, IN_STORE_DB_FILE);
    CU_ASSERT_FALSE(file_contains(path, key + IN_APIKEY_ID_LEN + 1));
}

int main(void)
{
    CU_pSuite s;
    unsigned failed;

    snprintf(base, sizeof(base), "/tmp/intake-apikey-%d", (int)getpid());
    if (mkdir(base, 0700) < 0)
        return 1;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("intake_apikey", NULL, NULL);
    CU_add_test(s, "key format and hash", test_format_and_hash);
    CU_add_test(s, "bearer metadata and scopes", test_bearer_and_scopes);
    CU_add_test(s, "accept or refuse: hash, revoked, expired", test_judge);
    CU_add_test(s, "cache over the store: revocation, expiry, hash at rest", test_cache_over_store);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    if (failed == 0) {
        char cmd[96];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
        if (system(cmd) != 0)
            return 1;
    }
    return failed ? 1 : 0;
}
