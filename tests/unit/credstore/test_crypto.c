/* Unit tests for credstore crypto: master key files, derived keys, envelope
 * encryption and its tamper detection, MACs. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>

#include "al_err.h"
#include "crypto.h"

static char tmpdir[64];

static struct cs_master *master_of(uint8_t fill)
{
    uint8_t raw[CS_KEY_LEN];
    struct cs_master *m = NULL;

    memset(raw, fill, sizeof(raw));
    CU_ASSERT_EQUAL(cs_master_from_bytes(raw, &m), 0);
    return m;
}

static void write_text(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    fchmod(fd, mode);
    close(fd);
}

static void test_round_trip(void)
{
    static const size_t lens[] = {1, 17, 1000, CS_VALUE_MAX};
    struct cs_master *m = master_of(1);
    uint8_t *in = malloc(CS_VALUE_MAX), *out = al_secure_alloc(CS_VALUE_MAX);
    struct cs_sealed s;
    size_t n;

    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    for (size_t i = 0; i < CS_VALUE_MAX; i++)
        in[i] = (uint8_t)(i * 7 + 3);
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        CU_ASSERT_EQUAL_FATAL(cs_seal(m, "github/ci", 3, in, lens[k], &s), 0);
        CU_ASSERT_EQUAL(s.ciphertext_len, lens[k] + CS_TAG_LEN);
        CU_ASSERT_STRING_EQUAL(s.key_id, cs_master_key_id(m));
        if (lens[k] >= 16) /* shorter ones may match by chance */
            CU_ASSERT_NOT_EQUAL(memcmp(s.ciphertext, in, 16), 0);
        CU_ASSERT_EQUAL(cs_open(m, "github/ci", 3, &s, out, CS_VALUE_MAX, &n), 0);
        CU_ASSERT_EQUAL(n, lens[k]);
        CU_ASSERT_EQUAL(memcmp(in, out, n), 0);
        /* too small an output buffer */
        if (lens[k] > 1)
            CU_ASSERT_EQUAL(cs_open(m, "github/ci", 3, &s, out, lens[k] - 1, &n), AL_ERR_TOOBIG);
        cs_sealed_cleanup(&s);
    }
    /* two seals of the same value differ (fresh DEK and nonces) */
    struct cs_sealed a, b;
    CU_ASSERT_EQUAL(cs_seal(m, "x", 1, in, 32, &a), 0);
    CU_ASSERT_EQUAL(cs_seal(m, "x", 1, in, 32, &b), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(a.ciphertext, b.ciphertext, 32), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(a.wrapped_dek, b.wrapped_dek, CS_WRAPPED_DEK_LEN), 0);
    cs_sealed_cleanup(&a);
    cs_sealed_cleanup(&b);
    /* bad arguments */
    CU_ASSERT_EQUAL(cs_seal(m, "x", 1, in, 0, &s), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(cs_seal(m, "x", 1, in, CS_VALUE_MAX + 1, &s), AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(cs_seal(m, "", 1, in, 4, &s), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(cs_seal(m, "x", 0, in, 4, &s), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(cs_seal(NULL, "x", 1, in, 4, &s), AL_ERR_INVAL);
    al_secure_free(out);
    free(in);
    cs_master_free(m);
}

/* Flips each byte of buf in turn; opening must fail every time. */
static void flip_all(struct cs_master *m, struct cs_sealed *s, uint8_t *buf, size_t len,
                     uint8_t *out)
{
    size_t n, failures = 0;

    for (size_t i = 0; i < len; i++) {
        buf[i] ^= 0x01;
        if (cs_open(m, "db/prod", 2, s, out, CS_VALUE_MAX, &n) == AL_ERR_CRYPTO)
            failures++;
        buf[i] ^= 0x01;
    }
    CU_ASSERT_EQUAL(failures, len);
    CU_ASSERT_EQUAL(cs_open(m, "db/prod", 2, s, out, CS_VALUE_MAX, &n), 0);
}

static void test_tamper(void)
{
    struct cs_master *m = master_of(2), *other = master_of(3);
    uint8_t *out = al_secure_alloc(CS_VALUE_MAX);
    const char *value = "s3cr3t-value-for-tamper-test";
    struct cs_sealed s;
    size_t n;

    CU_ASSERT_EQUAL_FATAL(cs_seal(m, "db/prod", 2, (const uint8_t *)value, strlen(value), &s), 0);
    flip_all(m, &s, s.ciphertext, s.ciphertext_len, out);
    flip_all(m, &s, s.wrapped_dek, CS_WRAPPED_DEK_LEN, out);
    flip_all(m, &s, s.dek_nonce, CS_NONCE_LEN, out);
    flip_all(m, &s, s.value_nonce, CS_NONCE_LEN, out);
    /* truncated ciphertext */
    s.ciphertext_len--;
    CU_ASSERT_EQUAL(cs_open(m, "db/prod", 2, &s, out, CS_VALUE_MAX, &n), AL_ERR_CRYPTO);
    s.ciphertext_len = CS_TAG_LEN;
    CU_ASSERT_EQUAL(cs_open(m, "db/prod", 2, &s, out, CS_VALUE_MAX, &n), AL_ERR_CRYPTO);
    s.ciphertext_len = strlen(value) + CS_TAG_LEN;
    /* AAD: another name or version (a swapped row) */
    CU_ASSERT_EQUAL(cs_open(m, "db/prod2", 2, &s, out, CS_VALUE_MAX, &n), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(cs_open(m, "db/pro", 2, &s, out, CS_VALUE_MAX, &n), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(cs_open(m, "db/prod", 1, &s, out, CS_VALUE_MAX, &n), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(cs_open(m, "db/prod", 3, &s, out, CS_VALUE_MAX, &n), AL_ERR_CRYPTO);
    /* wrong master key, with its own key id or pretending to be the right one */
    CU_ASSERT_EQUAL(cs_open(other, "db/prod", 2, &s, out, CS_VALUE_MAX, &n), AL_ERR_CRYPTO);
    memcpy(s.key_id, cs_master_key_id(other), CS_KEY_ID_LEN + 1);
    CU_ASSERT_EQUAL(cs_open(other, "db/prod", 2, &s, out, CS_VALUE_MAX, &n), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(cs_open(m, "db/prod", 2, &s, out, CS_VALUE_MAX, &n), AL_ERR_CRYPTO);
    memcpy(s.key_id, cs_master_key_id(m), CS_KEY_ID_LEN + 1);
    CU_ASSERT_EQUAL(cs_open(m, "db/prod", 2, &s, out, CS_VALUE_MAX, &n), 0);
    CU_ASSERT_EQUAL(n, strlen(value));
    /* a failed open leaves nothing of the value in the output */
    memset(out, 0, CS_VALUE_MAX);
    s.ciphertext[0] ^= 0x80;
    CU_ASSERT_EQUAL(cs_open(m, "db/prod", 2, &s, out, CS_VALUE_MAX, &n), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(n, 0);
    for (size_t i = 0; i < strlen(value); i++)
        CU_ASSERT_EQUAL_FATAL(out[i], 0);
    cs_sealed_cleanup(&s);
    al_secure_free(out);
    cs_master_free(m);
    cs_master_free(other);
}

static void test_rewrap(void)
{
    struct cs_master *a = master_of(4), *b = master_of(5);
    uint8_t out[64];
    struct cs_sealed s, before;
    size_t n;

    CU_ASSERT_EQUAL_FATAL(cs_seal(a, "k", 7, (const uint8_t *)"value", 5, &s), 0);
    before = s;
    CU_ASSERT_EQUAL(cs_rewrap(b, a, "k", 7, &s), AL_ERR_CRYPTO); /* not under b */
    CU_ASSERT_EQUAL(memcmp(&before, &s, sizeof(s)), 0);          /* unchanged */
    CU_ASSERT_EQUAL(cs_rewrap(a, b, "k", 8, &s), AL_ERR_CRYPTO); /* other version */
    CU_ASSERT_EQUAL(cs_rewrap(a, b, "k", 7, &s), 0);
    CU_ASSERT_STRING_EQUAL(s.key_id, cs_master_key_id(b));
    CU_ASSERT_EQUAL(cs_open(b, "k", 7, &s, out, sizeof(out), &n), 0);
    CU_ASSERT_EQUAL(n, 5);
    CU_ASSERT_EQUAL(memcmp(out, "value", 5), 0);
    CU_ASSERT_EQUAL(cs_open(a, "k", 7, &s, out, sizeof(out), &n), AL_ERR_CRYPTO);
    cs_sealed_cleanup(&s);
    cs_master_free(a);
    cs_master_free(b);
}

/* HKDF-SHA256(key, info) computed independently of crypto.c. */
static void ref_hkdf(const uint8_t key[32], const char *info, uint8_t out[32])
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(kdf);
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, 32),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, strlen(info)),
        OSSL_PARAM_construct_end(),
    };

    CU_ASSERT_EQUAL(EVP_KDF_derive(ctx, out, 32, p), 1);
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
}

static void test_derivation_and_mac(void)
{
    uint8_t raw[32], k[32], want[32], got[32], other[32];
    unsigned int len = 0;
    char hex[17];
    struct cs_master *m;

    memset(raw, 9, sizeof(raw));
    CU_ASSERT_EQUAL_FATAL(cs_master_from_bytes(raw, &m), 0);
    /* key id = first 16 hex digits of HMAC-SHA256(master, "airlock/v1/key-id") */
    HMAC(EVP_sha256(), raw, 32, (const uint8_t *)"airlock/v1/key-id", 17, want, &len);
    for (int i = 0; i < 8; i++)
        snprintf(hex + 2 * i, 3, "%02x", want[i]);
    CU_ASSERT_STRING_EQUAL(cs_master_key_id(m), hex);
    /* MAC keys are HKDF-SHA256(master, info) */
    ref_hkdf(raw, "airlock/v1/policy-mac", k);
    HMAC(EVP_sha256(), k, 32, (const uint8_t *)"data", 4, want, &len);
    CU_ASSERT_EQUAL(cs_mac(m, CS_MAC_POLICY, "data", 4, got), 0);
    CU_ASSERT_EQUAL(memcmp(want, got, 32), 0);
    ref_hkdf(raw, "airlock/v1/audit-mac", k);
    HMAC(EVP_sha256(), k, 32, (const uint8_t *)"data", 4, want, &len);
    CU_ASSERT_EQUAL(cs_mac(m, CS_MAC_AUDIT, "data", 4, other), 0);
    CU_ASSERT_EQUAL(memcmp(want, other, 32), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(got, other, 32), 0); /* keys are separate */
    ref_hkdf(raw, "airlock/v1/check", k);
    HMAC(EVP_sha256(), k, 32, (const uint8_t *)"data", 4, want, &len);
    CU_ASSERT_EQUAL(cs_mac(m, CS_MAC_CHECK, "data", 4, other), 0);
    CU_ASSERT_EQUAL(memcmp(want, other, 32), 0);
    /* verify and constant-time compare */
    CU_ASSERT_EQUAL(cs_mac_verify(m, CS_MAC_POLICY, "data", 4, got), 0);
    got[31] ^= 1;
    CU_ASSERT_EQUAL(cs_mac_verify(m, CS_MAC_POLICY, "data", 4, got), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(cs_mac_verify(m, CS_MAC_POLICY, "datA", 4, got), AL_ERR_CRYPTO);
    CU_ASSERT_EQUAL(cs_mac(m, 7, "data", 4, got), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(cs_ct_equal("abc", "abc", 3), 1);
    CU_ASSERT_EQUAL(cs_ct_equal("abc", "abd", 3), 0);
    CU_ASSERT_EQUAL(cs_ct_equal("abc", "xbc", 3), 0);
    CU_ASSERT_EQUAL(cs_ct_equal(NULL, "abc", 3), 0);
    cs_master_free(m);
}

static void test_buf_encoding(void)
{
    static const uint8_t want[] = {0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 2, 'h', 'i', 0, 0, 0, 0};
    struct cs_buf b;

    cs_buf_init(&b);
    cs_buf_i64(&b, 0x102);
    cs_buf_str(&b, "hi");
    cs_buf_str(&b, NULL);
    CU_ASSERT_EQUAL(b.err, 0);
    CU_ASSERT_EQUAL(b.len, sizeof(want));
    CU_ASSERT_EQUAL(memcmp(b.p, want, sizeof(want)), 0);
    cs_buf_cleanup(&b);
    /* the length prefix keeps ("ab","c") and ("a","bc") apart */
    struct cs_buf x, y;
    cs_buf_init(&x);
    cs_buf_init(&y);
    cs_buf_str(&x, "ab");
    cs_buf_str(&x, "c");
    cs_buf_str(&y, "a");
    cs_buf_str(&y, "bc");
    CU_ASSERT_EQUAL(x.len, y.len);
    CU_ASSERT_NOT_EQUAL(memcmp(x.p, y.p, x.len), 0);
    cs_buf_cleanup(&x);
    cs_buf_cleanup(&y);
}

static void test_master_files(void)
{
    char path[128], id[CS_KEY_ID_LEN + 1], text[80];
    struct cs_master *m = NULL, *m2 = NULL;
    struct stat st;
    int fd;
    ssize_t n;

    snprintf(path, sizeof(path), "%s/master.key", tmpdir);
    CU_ASSERT_EQUAL_FATAL(cs_master_generate(path, id), 0);
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 07777, 0600);
    CU_ASSERT_EQUAL(st.st_size, 65);
    fd = open(path, O_RDONLY);
    n = read(fd, text, sizeof(text));
    close(fd);
    CU_ASSERT_EQUAL(n, 65);
    CU_ASSERT_EQUAL(text[64], '\n');
    for (int i = 0; i < 64; i++)
        CU_ASSERT_FATAL(strchr("0123456789abcdef", text[i]) != NULL);
    CU_ASSERT_EQUAL(cs_master_generate(path, NULL), AL_ERR_EXISTS); /* never overwrites */
    CU_ASSERT_EQUAL(cs_master_load(path, &m), 0);
    CU_ASSERT_STRING_EQUAL(cs_master_key_id(m), id);
    /* same key from a file without the newline, in upper case */
    text[64] = '\0';
    for (int i = 0; i < 64; i++)
        if (text[i] >= 'a')
            text[i] = (char)(text[i] - 32);
    snprintf(path, sizeof(path), "%s/upper.key", tmpdir);
    write_text(path, text, 0600);
    CU_ASSERT_EQUAL(cs_master_load(path, &m2), 0);
    CU_ASSERT_STRING_EQUAL(cs_master_key_id(m2), id);
    cs_master_free(m2);
    m2 = NULL;
    /* group- or world-readable files are refused */
    write_text(path, text, 0640);
    CU_ASSERT_EQUAL(cs_master_load(path, &m2), AL_ERR_CONFIG);
    write_text(path, text, 0604);
    CU_ASSERT_EQUAL(cs_master_load(path, &m2), AL_ERR_CONFIG);
    CU_ASSERT_PTR_NULL(m2);
    /* format errors */
    snprintf(path, sizeof(path), "%s/bad.key", tmpdir);
    write_text(path, "abcd\n", 0600);
    CU_ASSERT_EQUAL(cs_master_load(path, &m2), AL_ERR_INVAL);
    memset(text, 'a', 63);
    text[63] = '\0';
    write_text(path, text, 0600); /* 63 digits */
    CU_ASSERT_EQUAL(cs_master_load(path, &m2), AL_ERR_INVAL);
    memset(text, 'a', 66);
    text[66] = '\0';
    write_text(path, text, 0600); /* 66 digits */
    CU_ASSERT_EQUAL(cs_master_load(path, &m2), AL_ERR_INVAL);
    memset(text, 'a', 64);
    text[10] = 'g';
    text[64] = '\n';
    text[65] = '\0';
    write_text(path, text, 0600); /* not hex */
    CU_ASSERT_EQUAL(cs_master_load(path, &m2), AL_ERR_INVAL);
    text[10] = 'a';
    text[64] = ' ';
    write_text(path, text, 0600); /* trailing junk */
    CU_ASSERT_EQUAL(cs_master_load(path, &m2), AL_ERR_INVAL);
    write_text(path, "", 0600);
    CU_ASSERT_EQUAL(cs_master_load(path, &m2), AL_ERR_INVAL);
    snprintf(path, sizeof(path), "%s/missing.key", tmpdir);
    CU_ASSERT_EQUAL(cs_master_load(path, &m2), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(cs_master_load(tmpdir, &m2), AL_ERR_CONFIG); /* a directory */
    CU_ASSERT_PTR_NULL(m2);
    cs_master_free(m);
}

static void test_secure_alloc(void)
{
    uint8_t *p = al_secure_alloc(100);

    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL((uintptr_t)p % 16, 0);
    for (int i = 0; i < 100; i++)
        CU_ASSERT_EQUAL_FATAL(p[i], 0);
    memset(p, 0x5a, 100);
    al_secure_free(p);
    al_secure_free(NULL);
    CU_ASSERT_PTR_NULL(al_secure_alloc(0));
    CU_ASSERT_PTR_NULL(al_secure_alloc(SIZE_MAX));
    p = al_secure_alloc(3 * 4096); /* several pages */
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    p[3 * 4096 - 1] = 1;
    al_secure_free(p);
}

int main(void)
{
    CU_pSuite s;
    unsigned failed;

    snprintf(tmpdir, sizeof(tmpdir), "/tmp/cs-crypto-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("credstore_crypto", NULL, NULL);
    CU_add_test(s, "seal/open round trip", test_round_trip);
    CU_add_test(s, "tamper detection", test_tamper);
    CU_add_test(s, "rewrap", test_rewrap);
    CU_add_test(s, "derived keys and MACs", test_derivation_and_mac);
    CU_add_test(s, "canonical encoding", test_buf_encoding);
    CU_add_test(s, "master key files", test_master_files);
    CU_add_test(s, "secure memory", test_secure_alloc);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    if (failed == 0) {
        char cmd[96];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
        if (system(cmd) != 0)
            return 1;
    }
    return failed ? 1 : 0;
}
