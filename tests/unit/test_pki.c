/*
 * Unit tests for al_pki: CA and leaf issuance into a mkdtemp directory, chain
 * verification with X509_verify_cert, extensions, SPIFFE id extraction and
 * parsing, file modes and the exclusive/overwrite write paths.
 */
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <openssl/bn.h>
#include <openssl/x509v3.h>

#include "al_err.h"
#include "al_pki.h"

static char dir[] = "/tmp/al-pki-XXXXXX";

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    return remove(p);
}

static int suite_init(void)
{
    if (!mkdtemp(dir))
        return -1;
    if (al_pki_create_ca(dir, 0) < 0)
        return -1;
    if (al_pki_issue(dir, "intake", "intake-0", AL_PKI_SERVER) < 0)
        return -1;
    return al_pki_issue(dir, "client", "client", 0) < 0 ? -1 : 0;
}

static int suite_clean(void)
{
    return nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static X509 *load(const char *file)
{
    char p[PATH_MAX];
    X509 *x = NULL;

    snprintf(p, sizeof p, "%s/%s", dir, file);
    CU_ASSERT_EQUAL(al_pki_load_cert(p, &x), 0);
    return x;
}

static mode_t mode_of(const char *file)
{
    char p[PATH_MAX];
    struct stat st;

    snprintf(p, sizeof p, "%s/%s", dir, file);
    if (stat(p, &st) < 0)
        return (mode_t)-1;
    return st.st_mode & 07777;
}

static int verify_with(X509 *ca, X509 *leaf, int purpose)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *c = X509_STORE_CTX_new();
    int ok;

    X509_STORE_add_cert(st, ca);
    X509_STORE_CTX_init(c, st, leaf, NULL);
    if (purpose)
        X509_STORE_CTX_set_purpose(c, purpose);
    ok = X509_verify_cert(c);
    X509_STORE_CTX_free(c);
    X509_STORE_free(st);
    return ok;
}

static void test_files_and_modes(void)
{
    CU_ASSERT_EQUAL(mode_of("ca.key"), 0600);
    CU_ASSERT_EQUAL(mode_of("ca.crt"), 0644);
    CU_ASSERT_EQUAL(mode_of("intake-intake-0.key"), 0600);
    CU_ASSERT_EQUAL(mode_of("intake-intake-0.crt"), 0644);
    CU_ASSERT_EQUAL(mode_of("client-client.key"), 0600);
    CU_ASSERT_EQUAL(al_pki_create_ca(dir, 0), AL_ERR_EXISTS);
    CU_ASSERT_EQUAL(al_pki_issue(dir, "intake", "intake-0", 0), AL_ERR_EXISTS);
    CU_ASSERT_EQUAL(al_pki_issue(dir, "nobody", "x", 0), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_pki_issue(dir, "intake", "a/b", 0), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_pki_issue("/nonexistent-dir", "intake", "x", 0), AL_ERR_NOTFOUND);
}

static void test_ca(void)
{
    X509 *ca = load("ca.crt");
    int days = 0, secs = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(ca);
    CU_ASSERT_EQUAL(X509_check_ca(ca), 1);
    CU_ASSERT(X509_get_extension_flags(ca) & EXFLAG_CA);
    CU_ASSERT_EQUAL(X509_get_key_usage(ca), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
    CU_ASSERT(X509_EXTENSION_get_critical(
        X509_get_ext(ca, X509_get_ext_by_NID(ca, NID_basic_constraints, -1))));
    CU_ASSERT(EVP_PKEY_is_a(X509_get0_pubkey(ca), "EC"));
    CU_ASSERT_EQUAL(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(ca)), 1);
    CU_ASSERT(days >= 3649 && days <= 3650);
    CU_ASSERT_EQUAL(verify_with(ca, ca, 0), 1);
    X509_free(ca);
}

static void test_leaf_chain_and_extensions(void)
{
    X509 *ca = load("ca.crt"), *srv = load("intake-intake-0.crt"), *cli = load("client-client.crt");
    const ASN1_INTEGER *serial;
    BIGNUM *bn;
    char group[32];
    int days = 0, secs = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(ca);
    CU_ASSERT_PTR_NOT_NULL_FATAL(srv);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cli);
    CU_ASSERT_EQUAL(verify_with(ca, srv, X509_PURPOSE_SSL_SERVER), 1);
    CU_ASSERT_EQUAL(verify_with(ca, srv, X509_PURPOSE_SSL_CLIENT), 1);
    CU_ASSERT_EQUAL(verify_with(ca, cli, X509_PURPOSE_SSL_CLIENT), 1);
    CU_ASSERT_EQUAL(verify_with(ca, cli, X509_PURPOSE_SSL_SERVER), 0);
    CU_ASSERT_EQUAL(X509_check_ca(srv), 0);
    CU_ASSERT_EQUAL(X509_get_key_usage(srv), KU_DIGITAL_SIGNATURE);
    CU_ASSERT_EQUAL(X509_check_host(srv, "localhost", 0, 0, NULL), 1);
    CU_ASSERT_EQUAL(X509_check_ip_asc(srv, "127.0.0.1", 0), 1);
    CU_ASSERT_EQUAL(X509_check_ip_asc(srv, "::1", 0), 1);
    CU_ASSERT_EQUAL(X509_check_host(cli, "localhost", 0, 0, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(EVP_PKEY_get_group_name(X509_get0_pubkey(srv), group, sizeof group, NULL),
                          1);
    CU_ASSERT_STRING_EQUAL(group, "prime256v1");
    serial = X509_get0_serialNumber(srv);
    bn = ASN1_INTEGER_to_BN(serial, NULL);
    CU_ASSERT_EQUAL(BN_num_bits(bn), 127);
    BN_free(bn);
    CU_ASSERT_EQUAL(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(srv)), 1);
    CU_ASSERT(days >= 364 && days <= 365);
    CU_ASSERT_EQUAL(X509_cmp(ca, srv) != 0, 1);
    X509_free(ca);
    X509_free(srv);
    X509_free(cli);
}

/* Extra server SANs: each one valid for its name/address, and anything that
 * is not a plain DNS name or IP literal refused (no SAN injection). */
static void test_issue_sans(void)
{
    const char *const good[] = {"DNS:airlock-intake.ns.svc.cluster.local", "IP:10.1.2.3",
                                "IP:fd00::7", NULL};
    const char *const comma[] = {"DNS:a.example,DNS:evil.example", NULL};
    const char *const uri[] = {"URI:spiffe://airlock/admin/admin", NULL};
    const char *const label[] = {"DNS:-bad.example", NULL};
    const char *const ip[] = {"IP:10.1.2", NULL};
    char id[AL_PKI_ID_MAX];
    X509 *x;

    CU_ASSERT_EQUAL(al_pki_issue_sans(dir, "credstore", "sans", AL_PKI_SERVER, good), 0);
    x = load("credstore-sans.crt");
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_EQUAL(X509_check_host(x, "airlock-intake.ns.svc.cluster.local", 0, 0, NULL), 1);
    CU_ASSERT_EQUAL(X509_check_host(x, "localhost", 0, 0, NULL), 1);
    CU_ASSERT_EQUAL(X509_check_ip_asc(x, "10.1.2.3", 0), 1);
    CU_ASSERT_EQUAL(X509_check_ip_asc(x, "fd00::7", 0), 1);
    CU_ASSERT_EQUAL(X509_check_host(x, "other.example", 0, 0, NULL), 0);
    CU_ASSERT_EQUAL(al_pki_spiffe_id(x, id, sizeof id), 0);
    CU_ASSERT_STRING_EQUAL(id, "spiffe://airlock/credstore/sans");
    X509_free(x);
    CU_ASSERT_EQUAL(al_pki_issue_sans(dir, "credstore", "c1", AL_PKI_SERVER, comma), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_pki_issue_sans(dir, "credstore", "c2", AL_PKI_SERVER, uri), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_pki_issue_sans(dir, "credstore", "c3", AL_PKI_SERVER, label), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_pki_issue_sans(dir, "credstore", "c4", AL_PKI_SERVER, ip), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_pki_issue_sans(dir, "client", "c5", 0, good), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(mode_of("credstore-c1.crt"), (mode_t)-1); /* nothing written */
}

static void test_spiffe_id(void)
{
    X509 *srv = load("intake-intake-0.crt"), *ca = load("ca.crt");
    char id[AL_PKI_ID_MAX], tiny[8];

    CU_ASSERT_EQUAL(al_pki_spiffe_id(srv, id, sizeof id), 0);
    CU_ASSERT_STRING_EQUAL(id, "spiffe://airlock/intake/intake-0");
    CU_ASSERT_EQUAL(al_pki_spiffe_id(srv, tiny, sizeof tiny), AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(al_pki_spiffe_id(ca, id, sizeof id), AL_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(al_pki_spiffe_id(NULL, id, sizeof id), AL_ERR_INVAL);
    X509_free(srv);
    X509_free(ca);
}

/* An unsigned certificate carrying only the given subjectAltName. */
static X509 *with_san(const char *san)
{
    X509 *x = X509_new();
    X509V3_CTX ctx;
    X509_EXTENSION *e;

    X509V3_set_ctx(&ctx, NULL, x, NULL, NULL, 0);
    e = X509V3_EXT_nconf_nid(NULL, &ctx, NID_subject_alt_name, san);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    return x;
}

static void test_spiffe_id_ambiguous(void)
{
    char id[AL_PKI_ID_MAX];
    X509 *x;

    x = with_san("URI:https://example.com/,URI:spiffe://airlock/test/a,DNS:localhost");
    CU_ASSERT_EQUAL(al_pki_spiffe_id(x, id, sizeof id), 0);
    CU_ASSERT_STRING_EQUAL(id, "spiffe://airlock/test/a");
    X509_free(x);
    x = with_san("URI:spiffe://airlock/test/a,URI:spiffe://airlock/admin/admin");
    CU_ASSERT_EQUAL(al_pki_spiffe_id(x, id, sizeof id), AL_ERR_AUTH);
    X509_free(x);
    x = with_san("URI:spiffe://airlock/test/a b");
    CU_ASSERT_EQUAL(al_pki_spiffe_id(x, id, sizeof id), AL_ERR_AUTH);
    X509_free(x);
    x = with_san("DNS:localhost");
    CU_ASSERT_EQUAL(al_pki_spiffe_id(x, id, sizeof id), AL_ERR_NOTFOUND);
    X509_free(x);
}

static void test_parse_spiffe(void)
{
    static const char *bad[] = {
        "",
        "spiffe://airlock/intake/",
        "spiffe://airlock/intake",
        "spiffe://airlock//x",
        "spiffe://airlock/root/x",
        "spiffe://Airlock/intake/x",
        "SPIFFE://airlock/intake/x",
        "spiffe://airlock/intake/x/y",
        "spiffe://airlock/intake/a b",
        "spiffe://airlock/intake/x\n",
        "spiffe://airlock/intake/x%2f",
        "http://airlock/intake/x",
        "spiffe://airlock.evil/intake/x",
        "spiffe://airlock/credstorecredstore/x",
        ("spiffe://airlock/intake/"
         "ab123456789012345678901234567890123456789012345678901234567890123")};
    char role[AL_PKI_ROLE_MAX], name[AL_PKI_NAME_MAX], small[4];
    char long_ok[128];

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CU_ASSERT_EQUAL(al_pki_parse_spiffe(bad[i], role, sizeof role, name, sizeof name),
                        AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_pki_parse_spiffe(NULL, role, sizeof role, name, sizeof name), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(al_pki_parse_spiffe("spiffe://airlock/credstore/credstore-0", role, sizeof role,
                                        name, sizeof name),
                    0);
    CU_ASSERT_STRING_EQUAL(role, "credstore");
    CU_ASSERT_STRING_EQUAL(name, "credstore-0");
    CU_ASSERT_EQUAL(al_pki_parse_spiffe("spiffe://airlock/test/A.b_c-9", NULL, 0, NULL, 0), 0);
    CU_ASSERT_EQUAL(
        al_pki_parse_spiffe("spiffe://airlock/admin/admin", small, sizeof small, NULL, 0),
        AL_ERR_TOOBIG);
    snprintf(long_ok, sizeof long_ok, "spiffe://airlock/executor/%064d", 7);
    CU_ASSERT_EQUAL(al_pki_parse_spiffe(long_ok, role, sizeof role, name, sizeof name), 0);
    CU_ASSERT_EQUAL(strlen(name), 64);
    CU_ASSERT(al_pki_role_valid("gateway"));
    CU_ASSERT(!al_pki_role_valid("gate"));
}

static void test_check(void)
{
    char why[128], a[PATH_MAX], b[PATH_MAX];

    CU_ASSERT_EQUAL(al_pki_check(dir, "intake", "intake-0", why, sizeof why), 0);
    CU_ASSERT_EQUAL(al_pki_check(dir, "intake", "nope", why, sizeof why), AL_ERR_NOTFOUND);
    /* a key that belongs to another certificate */
    CU_ASSERT_EQUAL_FATAL(al_pki_issue(dir, "test", "a", 0), 0);
    CU_ASSERT_EQUAL_FATAL(al_pki_issue(dir, "test", "b", 0), 0);
    snprintf(a, sizeof a, "%s/test-a.key", dir);
    snprintf(b, sizeof b, "%s/test-b.key", dir);
    CU_ASSERT_EQUAL_FATAL(rename(b, a), 0);
    CU_ASSERT_EQUAL(al_pki_check(dir, "test", "a", why, sizeof why), AL_ERR_CRYPTO);
    /* overwrite: the old leaf is replaced, mode stays 0600 */
    CU_ASSERT_EQUAL_FATAL(al_pki_issue(dir, "test", "a", AL_PKI_OVERWRITE), 0);
    CU_ASSERT_EQUAL(mode_of("test-a.key"), 0600);
    CU_ASSERT_EQUAL(al_pki_check(dir, "test", "a", why, sizeof why), 0);
}

static void test_new_ca_orphans_leaves(void)
{
    char why[128];

    CU_ASSERT_EQUAL_FATAL(al_pki_issue(dir, "test", "old", 0), 0);
    CU_ASSERT_EQUAL_FATAL(al_pki_create_ca(dir, AL_PKI_OVERWRITE), 0);
    CU_ASSERT_EQUAL(mode_of("ca.key"), 0600);
    CU_ASSERT_EQUAL(al_pki_check(dir, "test", "old", why, sizeof why), AL_ERR_AUTH);
    CU_ASSERT_EQUAL_FATAL(al_pki_issue(dir, "test", "old", AL_PKI_OVERWRITE), 0);
    CU_ASSERT_EQUAL(al_pki_check(dir, "test", "old", why, sizeof why), 0);
}

static void test_write_file(void)
{
    char p[PATH_MAX], q[PATH_MAX], buf[16] = {0};
    FILE *f;

    snprintf(p, sizeof p, "%s/plain", dir);
    snprintf(q, sizeof q, "%s/link", dir);
    CU_ASSERT_EQUAL(al_pki_write_file(p, "one", 3, 0640, 0), 0);
    CU_ASSERT_EQUAL(mode_of("plain"), 0640);
    CU_ASSERT_EQUAL(al_pki_write_file(p, "two", 3, 0600, 0), AL_ERR_EXISTS);
    CU_ASSERT_EQUAL_FATAL(symlink(p, q), 0);
    CU_ASSERT_EQUAL(al_pki_write_file(q, "evil", 4, 0600, 0), AL_ERR_EXISTS);
    CU_ASSERT_EQUAL(al_pki_write_file(p, "three", 5, 0600, AL_PKI_OVERWRITE), 0);
    CU_ASSERT_EQUAL(mode_of("plain"), 0600);
    f = fopen(p, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fread(buf, 1, sizeof buf - 1, f), 5);
    CU_ASSERT_STRING_EQUAL(buf, "three");
    fclose(f);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("pki", suite_init, suite_clean);
    CU_add_test(s, "files and modes", test_files_and_modes);
    CU_add_test(s, "CA certificate", test_ca);
    CU_add_test(s, "leaf chain and extensions", test_leaf_chain_and_extensions);
    CU_add_test(s, "extra server SANs", test_issue_sans);
    CU_add_test(s, "SPIFFE id extraction", test_spiffe_id);
    CU_add_test(s, "SPIFFE id must be unambiguous", test_spiffe_id_ambiguous);
    CU_add_test(s, "SPIFFE id parsing", test_parse_spiffe);
    CU_add_test(s, "al_pki_check", test_check);
    CU_add_test(s, "a new CA orphans old leaves", test_new_ca_orphans_leaves);
    CU_add_test(s, "write_file exclusive and overwrite", test_write_file);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
