/* Unit tests for the relay's agent API key file (agentkeys.h): key format
 * and hashing, the per-request verdicts (unknown, malformed, wrong secret,
 * expired, revoked, route not allowed, glob routes), the file format and
 * its errors with file:line, and the writers (file created 0600 with its
 * first line, comments kept, duplicate refused, revoke idempotent, a
 * malformed file left untouched, concurrent writers serialized by the lock,
 * only the hash at rest). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "agentkeys.h"
#include "al_err.h"

#define T0 1700000000000LL

static char base[64];
static int seq;

static void path_for(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s-%d", base, name, ++seq);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    fclose(f);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    static char buf[1 << 16];
    size_t n;
    if (!f)
        return NULL;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* A key with the given principal/routes; key text in keytext. */
static void make_key(struct rl_key *k, char *keytext, const char *principal, const char *routes,
                     int64_t expires)
{
    memset(k, 0, sizeof(*k));
    CU_ASSERT_EQUAL_FATAL(rl_key_generate(k->id, keytext, k->hash), 0);
    snprintf(k->principal, sizeof(k->principal), "%s", principal);
    snprintf(k->routes, sizeof(k->routes), "%s", routes);
    k->created_ms = T0;
    k->expires_ms = expires;
}

static enum rl_key_verdict check(const struct rl_keys *ks, const char *auth, const char *route,
                                 int64_t now, const struct rl_key **out)
{
    const struct rl_key *dummy;
    return rl_keys_check(ks, auth, auth ? strlen(auth) : 0, route, now, out ? out : &dummy);
}

static void test_generate(void)
{
    char id[RL_KEY_ID_LEN + 1], key[RL_KEY_LEN + 1], id2[RL_KEY_ID_LEN + 1], key2[RL_KEY_LEN + 1];
    uint8_t h[32], h2[32];

    CU_ASSERT_EQUAL_FATAL(rl_key_generate(id, key, h), 0);
    CU_ASSERT_EQUAL_FATAL(rl_key_generate(id2, key2, h2), 0);
    CU_ASSERT_EQUAL(strlen(id), RL_KEY_ID_LEN);
    CU_ASSERT_EQUAL(strlen(key), RL_KEY_LEN);
    CU_ASSERT_EQUAL(strncmp(id, "rk_", 3), 0);
    CU_ASSERT_EQUAL(strncmp(key, id, RL_KEY_ID_LEN), 0);
    CU_ASSERT_EQUAL(key[RL_KEY_ID_LEN], '.');
    for (size_t i = RL_KEY_ID_LEN + 1; i < RL_KEY_LEN; i++)
        CU_ASSERT_TRUE((key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'f'));
    CU_ASSERT_STRING_NOT_EQUAL(id, id2);
    CU_ASSERT_STRING_NOT_EQUAL(key, key2);
    CU_ASSERT_NOT_EQUAL(memcmp(h, h2, 32), 0);
}

static void test_validators(void)
{
    CU_ASSERT_EQUAL(rl_key_principal_valid("dev"), 0);
    CU_ASSERT_EQUAL(rl_key_principal_valid("team-a/alice@example.com:1"), 0);
    CU_ASSERT_NOT_EQUAL(rl_key_principal_valid(""), 0);
    CU_ASSERT_NOT_EQUAL(rl_key_principal_valid("has space"), 0);
    CU_ASSERT_NOT_EQUAL(rl_key_principal_valid("a\nb"), 0);
    CU_ASSERT_NOT_EQUAL(rl_key_principal_valid(NULL), 0);
    char longp[RL_PRINCIPAL_MAX + 2];
    memset(longp, 'p', sizeof(longp) - 1);
    longp[sizeof(longp) - 1] = '\0';
    CU_ASSERT_NOT_EQUAL(rl_key_principal_valid(longp), 0);
    longp[RL_PRINCIPAL_MAX] = '\0';
    CU_ASSERT_EQUAL(rl_key_principal_valid(longp), 0);

    CU_ASSERT_EQUAL(rl_key_routes_valid("corp/*"), 0);
    CU_ASSERT_EQUAL(rl_key_routes_valid("corp/*,lab/wiki,**"), 0);
    CU_ASSERT_NOT_EQUAL(rl_key_routes_valid(""), 0);
    CU_ASSERT_NOT_EQUAL(rl_key_routes_valid("corp/*,"), 0);
    CU_ASSERT_NOT_EQUAL(rl_key_routes_valid(",corp/*"), 0);
    CU_ASSERT_NOT_EQUAL(rl_key_routes_valid("corp/*,,lab/x"), 0);
    CU_ASSERT_NOT_EQUAL(rl_key_routes_valid("corp/a b"), 0);
    CU_ASSERT_NOT_EQUAL(rl_key_routes_valid("corp/[ab]"), 0);
    char longr[RL_ROUTES_MAX + 2];
    memset(longr, 'r', sizeof(longr) - 1);
    longr[sizeof(longr) - 1] = '\0';
    CU_ASSERT_NOT_EQUAL(rl_key_routes_valid(longr), 0);
}

static void test_verdicts(void)
{
    char path[256], key[RL_KEY_LEN + 1], ekey[RL_KEY_LEN + 1], auth[160], err[256];
    struct rl_key k, e;
    struct rl_keys *ks = NULL;
    const struct rl_key *got = NULL;

    path_for(path, sizeof(path), "keys");
    make_key(&k, key, "dev", "corp/*,lab/wiki", 0);
    make_key(&e, ekey, "ops", "**", T0 + 100);
    CU_ASSERT_EQUAL_FATAL(rl_keys_add(path, &k, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL_FATAL(rl_keys_add(path, &e, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL_FATAL(rl_keys_load(path, &ks, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(rl_keys_count(ks), 2);

    snprintf(auth, sizeof(auth), "Bearer %s", key);
    CU_ASSERT_EQUAL(check(ks, auth, "corp/crm", T0, &got), RL_KEY_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_STRING_EQUAL(got->principal, "dev");
    CU_ASSERT_STRING_EQUAL(got->id, k.id);
    CU_ASSERT_EQUAL(check(ks, auth, "lab/wiki", T0, NULL), RL_KEY_OK);
    /* the scheme is case-insensitive, extra spaces tolerated */
    snprintf(auth, sizeof(auth), "bearer   %s ", key);
    CU_ASSERT_EQUAL(check(ks, auth, "corp/crm", T0, NULL), RL_KEY_OK);
    /* routes: '*' does not cross '/', patterns are whole-string */
    snprintf(auth, sizeof(auth), "Bearer %s", key);
    got = NULL;
    CU_ASSERT_EQUAL(check(ks, auth, "lab/other", T0, &got), RL_KEY_ROUTE);
    CU_ASSERT_PTR_NOT_NULL(got); /* the key is known: 403, not 401 */
    CU_ASSERT_EQUAL(check(ks, auth, "corp2/crm", T0, NULL), RL_KEY_ROUTE);
    CU_ASSERT_EQUAL(check(ks, auth, "corpx", T0, NULL), RL_KEY_ROUTE);
    /* wrong secret with a known id */
    char bad[RL_KEY_LEN + 1];
    snprintf(bad, sizeof(bad), "%s", key);
    bad[RL_KEY_LEN - 1] = bad[RL_KEY_LEN - 1] == '0' ? '1' : '0';
    snprintf(auth, sizeof(auth), "Bearer %s", bad);
    got = NULL;
    CU_ASSERT_EQUAL(check(ks, auth, "corp/crm", T0, &got), RL_KEY_UNKNOWN);
    CU_ASSERT_PTR_NULL(got);
    /* unknown id */
    snprintf(bad, sizeof(bad), "%s", key);
    memcpy(bad + 3, "0000000000000000", 16);
    snprintf(auth, sizeof(auth), "Bearer %s", bad);
    CU_ASSERT_EQUAL(check(ks, auth, "corp/crm", T0, NULL), RL_KEY_UNKNOWN);
    /* malformed */
    CU_ASSERT_EQUAL(check(ks, NULL, "corp/crm", T0, NULL), RL_KEY_MALFORMED);
    CU_ASSERT_EQUAL(check(ks, "", "corp/crm", T0, NULL), RL_KEY_MALFORMED);
    CU_ASSERT_EQUAL(check(ks, key, "corp/crm", T0, NULL), RL_KEY_MALFORMED); /* no scheme */
    snprintf(auth, sizeof(auth), "Basic %s", key);
    CU_ASSERT_EQUAL(check(ks, auth, "corp/crm", T0, NULL), RL_KEY_MALFORMED);
    snprintf(auth, sizeof(auth), "Bearer %.*s", RL_KEY_LEN - 1, key);
    CU_ASSERT_EQUAL(check(ks, auth, "corp/crm", T0, NULL), RL_KEY_MALFORMED);
    snprintf(auth, sizeof(auth), "Bearer %sa", key);
    CU_ASSERT_EQUAL(check(ks, auth, "corp/crm", T0, NULL), RL_KEY_MALFORMED);
    snprintf(bad, sizeof(bad), "%s", key);
    bad[RL_KEY_LEN - 1] = 'F'; /* upper-case hex is not the issued form */
    snprintf(auth, sizeof(auth), "Bearer %s", bad);
    CU_ASSERT_EQUAL(check(ks, auth, "corp/crm", T0, NULL), RL_KEY_MALFORMED);
    /* expiry against the clock of each request */
    snprintf(auth, sizeof(auth), "Bearer %s", ekey);
    CU_ASSERT_EQUAL(check(ks, auth, "any/thing", T0 + 99, NULL), RL_KEY_OK);
    CU_ASSERT_EQUAL(check(ks, auth, "any/thing", T0 + 100, NULL), RL_KEY_EXPIRED);
    /* verdict texts never carry the key */
    for (int v = RL_KEY_OK; v <= RL_KEY_ROUTE; v++) {
        const char *t = rl_key_verdict_str((enum rl_key_verdict)v);
        CU_ASSERT_PTR_NOT_NULL(t);
        CU_ASSERT_PTR_NULL(strstr(t, k.id));
        CU_ASSERT_PTR_NULL(strstr(t, key + RL_KEY_ID_LEN + 1));
    }
    rl_keys_free(ks);
}

static void test_writers(void)
{
    char path[256], lock[300], key[RL_KEY_LEN + 1], key2[RL_KEY_LEN + 1], auth[160], err[256];
    struct rl_key k, k2;
    struct rl_keys *ks = NULL;
    struct stat st;
    char *text;

    path_for(path, sizeof(path), "w");
    make_key(&k, key, "dev", "corp/*", 0);
    CU_ASSERT_EQUAL_FATAL(rl_keys_add(path, &k, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    snprintf(lock, sizeof(lock), "%s.lock", path);
    CU_ASSERT_EQUAL(access(lock, F_OK), 0);
    text = read_text(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_EQUAL(strncmp(text, "airlock-relay-keys v1\n", 22), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, k.id));
    /* only the hash is at rest */
    CU_ASSERT_PTR_NULL(strstr(text, key + RL_KEY_ID_LEN + 1));
    /* an operator's comment survives the writers */
    FILE *f = fopen(path, "a");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("# issued to the CI agent\n\n", f);
    fclose(f);
    /* the same id twice is refused */
    CU_ASSERT_EQUAL(rl_keys_add(path, &k, err, sizeof(err)), AL_ERR_EXISTS);
    make_key(&k2, key2, "ci", "lab/wiki", 0);
    CU_ASSERT_EQUAL(rl_keys_add(path, &k2, err, sizeof(err)), 0);
    /* bad fields are refused before touching the file */
    struct rl_key badk = k2;
    snprintf(badk.principal, sizeof(badk.principal), "bad principal");
    badk.id[3] = 'z';
    CU_ASSERT_EQUAL(rl_keys_add(path, &badk, err, sizeof(err)), AL_ERR_INVAL);
    /* revoke */
    CU_ASSERT_EQUAL(rl_keys_revoke(path, k.id, T0 + 5, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(rl_keys_revoke(path, k.id, T0 + 9, err, sizeof(err)), 0); /* idempotent */
    CU_ASSERT_EQUAL(rl_keys_revoke(path, "rk_0000000000000000", T0, err, sizeof(err)),
                    AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(rl_keys_revoke(path, "not-an-id", T0, err, sizeof(err)), AL_ERR_INVAL);
    text = read_text(path);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "# issued to the CI agent\n"));
    CU_ASSERT_EQUAL_FATAL(rl_keys_load(path, &ks, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(rl_keys_count(ks), 2);
    for (size_t i = 0; i < rl_keys_count(ks); i++) {
        const struct rl_key *x = rl_keys_at(ks, i);
        if (strcmp(x->id, k.id) == 0)
            CU_ASSERT_EQUAL(x->revoked_ms, T0 + 5); /* the first revocation time */
        if (strcmp(x->id, k2.id) == 0) {
            CU_ASSERT_EQUAL(x->revoked_ms, 0);
            CU_ASSERT_STRING_EQUAL(x->principal, "ci");
            CU_ASSERT_STRING_EQUAL(x->routes, "lab/wiki");
            CU_ASSERT_EQUAL(memcmp(x->hash, k2.hash, 32), 0);
        }
    }
    CU_ASSERT_PTR_NULL(rl_keys_at(ks, 2));
    /* a revocation counts at once, whatever the clock */
    snprintf(auth, sizeof(auth), "Bearer %s", key);
    CU_ASSERT_EQUAL(check(ks, auth, "corp/crm", T0, NULL), RL_KEY_REVOKED);
    snprintf(auth, sizeof(auth), "Bearer %s", key2);
    CU_ASSERT_EQUAL(check(ks, auth, "lab/wiki", T0, NULL), RL_KEY_OK);
    rl_keys_free(ks);
    /* no temporary file is left behind */
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "ls -A %s | grep -q '\\.tmp\\.'", base);
    CU_ASSERT_NOT_EQUAL(system(cmd), 0);
}

/* Loads text and returns the result; err gets the message. */
static int load_text(const char *text, char *err, size_t n, char *pathout, size_t pn)
{
    struct rl_keys *ks = NULL;
    int rc;

    path_for(pathout, pn, "bad");
    write_text(pathout, text);
    rc = rl_keys_load(pathout, &ks, err, n);
    rl_keys_free(ks);
    return rc;
}

static void expect_error(const char *text, int line, const char *reason_part)
{
    char err[512], path[256], want[300];
    int rc = load_text(text, err, sizeof(err), path, sizeof(path));

    CU_ASSERT_EQUAL(rc, AL_ERR_CONFIG);
    snprintf(want, sizeof(want), "%s:%d: ", path, line);
    CU_ASSERT_EQUAL(strncmp(err, want, strlen(want)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, reason_part));
    if (strncmp(err, want, strlen(want)) != 0 || !strstr(err, reason_part))
        fprintf(stderr, "unexpected error: %s (want %s...%s)\n", err, want, reason_part);
}

static void test_file_format(void)
{
    static const char H[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char text[2048], err[512], path[256];
    struct rl_keys *ks = NULL;

    /* comments, blank lines and CRLF line ends are fine */
    snprintf(text, sizeof(text),
             "airlock-relay-keys v1\r\n# comment\n\nrk_00000000000000aa %s dev corp/* %lld 0 0\r\n"
             "rk_00000000000000bb %s ci lab/wiki,corp/crm 1 2 3",
             H, T0, H);
    CU_ASSERT_EQUAL(load_text(text, err, sizeof(err), path, sizeof(path)), 0);
    CU_ASSERT_EQUAL_FATAL(rl_keys_load(path, &ks, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(rl_keys_count(ks), 2);
    CU_ASSERT_EQUAL(rl_keys_at(ks, 1)->expires_ms, 2);
    CU_ASSERT_EQUAL(rl_keys_at(ks, 1)->revoked_ms, 3);
    rl_keys_free(ks);
    /* an empty key list is valid */
    CU_ASSERT_EQUAL(load_text("airlock-relay-keys v1\n", err, sizeof(err), path, sizeof(path)), 0);

    expect_error("", 1, "first line");
    expect_error("airlock-relay-keys v2\n", 1, "first line");
    expect_error("# comment first\nairlock-relay-keys v1\n", 1, "first line");
    snprintf(text, sizeof(text), "airlock-relay-keys v1\nrk_00000000000000aa %s dev corp/* 1 0\n",
             H);
    expect_error(text, 2, "too few fields");
    snprintf(text, sizeof(text),
             "airlock-relay-keys v1\n\nrk_00000000000000aa %s dev corp/* 1 0 0 9\n", H);
    expect_error(text, 3, "too many fields");
    snprintf(text, sizeof(text),
             "airlock-relay-keys v1\nrk_00000000000000aa %s dev  corp/* 1 0 0\n", H);
    expect_error(text, 2, "empty field");
    snprintf(text, sizeof(text), "airlock-relay-keys v1\nak_00000000000000aa %s dev corp/* 1 0 0\n",
             H);
    expect_error(text, 2, "bad key id");
    expect_error("airlock-relay-keys v1\nrk_00000000000000aa 0123 dev corp/* 1 0 0\n", 2,
                 "bad hash");
    snprintf(text, sizeof(text), "airlock-relay-keys v1\nrk_00000000000000aa %s d!v corp/* 1 0 0\n",
             H);
    expect_error(text, 2, "bad principal");
    snprintf(text, sizeof(text),
             "airlock-relay-keys v1\nrk_00000000000000aa %s dev corp/*, 1 0 0\n", H);
    expect_error(text, 2, "bad routes");
    snprintf(text, sizeof(text),
             "airlock-relay-keys v1\nrk_00000000000000aa %s dev corp/* -1 0 0\n", H);
    expect_error(text, 2, "bad created_ms");
    snprintf(text, sizeof(text),
             "airlock-relay-keys v1\nrk_00000000000000aa %s dev corp/* 1 99999999999999999999 0\n",
             H);
    expect_error(text, 2, "bad expires_ms");
    snprintf(text, sizeof(text), "airlock-relay-keys v1\nrk_00000000000000aa %s dev corp/* 1 0 x\n",
             H);
    expect_error(text, 2, "bad revoked_ms");
    snprintf(text, sizeof(text),
             "airlock-relay-keys v1\nrk_00000000000000aa %s dev corp/* 1 0 0\n#\n"
             "rk_00000000000000aa %s ops corp/* 1 0 0\n",
             H, H);
    expect_error(text, 4, "appears twice");
    snprintf(text, sizeof(text),
             "airlock-relay-keys v1\nrk_00000000000000aa %s dev corp/*\t1 0 0\n", H);
    expect_error(text, 2, "");

    /* a missing file is -ENOENT with the path */
    snprintf(path, sizeof(path), "%s/does-not-exist", base);
    CU_ASSERT_EQUAL(rl_keys_load(path, &ks, err, sizeof(err)), -ENOENT);
    CU_ASSERT_PTR_NULL(ks);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    /* a writer refuses to touch a malformed file and leaves it as it was */
    snprintf(text, sizeof(text), "airlock-relay-keys v1\ngarbage\n");
    CU_ASSERT_EQUAL(load_text(text, err, sizeof(err), path, sizeof(path)), AL_ERR_CONFIG);
    struct rl_key k;
    char key[RL_KEY_LEN + 1];
    make_key(&k, key, "dev", "corp/*", 0);
    CU_ASSERT_EQUAL(rl_keys_add(path, &k, err, sizeof(err)), AL_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, ":2: "));
    CU_ASSERT_EQUAL(rl_keys_revoke(path, k.id, T0, err, sizeof(err)), AL_ERR_CONFIG);
    CU_ASSERT_STRING_EQUAL(read_text(path), text);
}

/* Two processes adding keys at once: the lock serializes them, none lost. */
static void test_concurrent_writers(void)
{
    char path[256], err[256];
    struct rl_keys *ks = NULL;
    pid_t pids[2];
    enum { PER = 40 };

    path_for(path, sizeof(path), "conc");
    for (int p = 0; p < 2; p++) {
        pids[p] = fork();
        CU_ASSERT_TRUE_FATAL(pids[p] >= 0);
        if (pids[p] == 0) {
            for (int i = 0; i < PER; i++) {
                struct rl_key k;
                char key[RL_KEY_LEN + 1];
                memset(&k, 0, sizeof(k));
                if (rl_key_generate(k.id, key, k.hash) < 0)
                    _exit(2);
                snprintf(k.principal, sizeof(k.principal), "p%d", p);
                snprintf(k.routes, sizeof(k.routes), "corp/*");
                k.created_ms = T0;
                if (rl_keys_add(path, &k, err, sizeof(err)) < 0)
                    _exit(3);
            }
            _exit(0);
        }
    }
    for (int p = 0; p < 2; p++) {
        int status = 0;
        CU_ASSERT_EQUAL(waitpid(pids[p], &status, 0), pids[p]);
        CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    CU_ASSERT_EQUAL_FATAL(rl_keys_load(path, &ks, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(rl_keys_count(ks), 2 * PER);
    rl_keys_free(ks);
}

int main(void)
{
    CU_pSuite s;
    unsigned failed;

    snprintf(base, sizeof(base), "/tmp/relay-agentkeys-%d", (int)getpid());
    if (mkdir(base, 0700) < 0)
        return 1;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("relay_agentkeys", NULL, NULL);
    CU_add_test(s, "key generation", test_generate);
    CU_add_test(s, "principal and routes validators", test_validators);
    CU_add_test(s, "verdicts: ok, route, unknown, malformed, expired", test_verdicts);
    CU_add_test(s, "writers: create, add, duplicate, revoke, comments kept, hash at rest",
                test_writers);
    CU_add_test(s, "file format and errors with file:line", test_file_format);
    CU_add_test(s, "concurrent writers serialized by the lock", test_concurrent_writers);
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
