/*
 * Unit tests for a job's CA (ca.c): the CA certificate's extensions, leaves
 * minted for names, wildcard suffixes and IP literals verifying against it
 * (OpenSSL's own chain and name checks), leaves for names outside the name
 * constraints failing verification even though the CA signed them, the
 * per-host context cache, and a TLS handshake with a minted leaf offering
 * only http/1.1.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <CUnit/Basic.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "al_err.h"
#include "ca.h"

static struct eg_dest dests[3];
static const struct eg_dest *hosts[3];
static struct eg_ca *ca;
static X509 *ca_cert;

static int setup(void)
{
    char why[128];
    const char *names[] = {"api.test", "*.corp.test", "10.1.2.3"};

    for (int i = 0; i < 3; i++) {
        if (eg_dest_init(&dests[i], names[i], 443, NULL, 0, NULL, 0, NULL, 0, 0, why, sizeof(why)) <
            0)
            return 1;
        hosts[i] = &dests[i];
    }
    if (eg_ca_new("job\x01/1", hosts, 3, (double)time(NULL), &ca) < 0)
        return 1;
    BIO *b = BIO_new_mem_buf(eg_ca_pem(ca), -1);
    ca_cert = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    return ca_cert ? 0 : 1;
}

static int teardown(void)
{
    eg_ca_free(ca);
    X509_free(ca_cert);
    for (int i = 0; i < 3; i++)
        eg_dest_cleanup(&dests[i]);
    return 0;
}

static void test_ca_cert(void)
{
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(ca_cert, NID_basic_constraints, NULL, NULL);
    NAME_CONSTRAINTS *nc = X509_get_ext_d2i(ca_cert, NID_name_constraints, NULL, NULL);
    int crit = 0;
    char cn[128];

    CU_ASSERT_FATAL(bc != NULL && nc != NULL);
    CU_ASSERT(bc->ca);
    CU_ASSERT(bc->pathlen && ASN1_INTEGER_get(bc->pathlen) == 0);
    CU_ASSERT(X509_get_key_usage(ca_cert) == KU_KEY_CERT_SIGN);
    X509_get_ext_d2i(ca_cert, NID_name_constraints, &crit, NULL);
    CU_ASSERT_EQUAL(crit, 1);
    /* api.test, .corp.test, 10.1.2.3/32, the IPv6 fence; none excluded */
    CU_ASSERT_EQUAL(sk_GENERAL_SUBTREE_num(nc->permittedSubtrees), 4);
    CU_ASSERT_PTR_NULL(nc->excludedSubtrees);
    X509_NAME_get_text_by_NID(X509_get_subject_name(ca_cert), NID_commonName, cn, sizeof(cn));
    CU_ASSERT_STRING_EQUAL(cn, "Airlock egress CA job_/1");
    CU_ASSERT(
        X509_cmp_time(X509_get0_notAfter(ca_cert), &(time_t){time(NULL) + EG_CA_VALID_S + 60}) < 0);
    BASIC_CONSTRAINTS_free(bc);
    NAME_CONSTRAINTS_free(nc);
}

/* Verifies the leaf of ctx against the CA for name (DNS) or ip. */
static int verify(SSL_CTX *ctx, const char *name, const char *ip)
{
    X509 *leaf = SSL_CTX_get0_certificate(ctx);
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *vc = X509_STORE_CTX_new();
    int ok;

    X509_STORE_add_cert(st, ca_cert);
    X509_STORE_CTX_init(vc, st, leaf, NULL);
    X509_VERIFY_PARAM_set_purpose(X509_STORE_CTX_get0_param(vc), X509_PURPOSE_SSL_SERVER);
    if (name)
        X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(vc), name, 0);
    if (ip)
        X509_VERIFY_PARAM_set1_ip_asc(X509_STORE_CTX_get0_param(vc), ip);
    ok = X509_verify_cert(vc) == 1 ? 0 : X509_STORE_CTX_get_error(vc);
    X509_STORE_CTX_free(vc);
    X509_STORE_free(st);
    return ok;
}

static struct eg_host host(const char *s)
{
    struct eg_authority a;
    const char *why;

    CU_ASSERT_EQUAL_FATAL(eg_authority_parse(s, strlen(s), 443, &a, &why), 0);
    return a.host;
}

static void test_leaves(void)
{
    SSL_CTX *a = NULL, *b = NULL;
    struct eg_host h;

    h = host("api.test");
    CU_ASSERT_EQUAL_FATAL(eg_ca_server_ctx(ca, &h, &a), 0);
    CU_ASSERT_EQUAL(verify(a, "api.test", NULL), 0);
    CU_ASSERT_EQUAL(verify(a, "other.test", NULL), X509_V_ERR_HOSTNAME_MISMATCH);
    CU_ASSERT_EQUAL(eg_ca_server_ctx(ca, &h, &b), 0);
    CU_ASSERT_PTR_EQUAL(a, b); /* cached */
    h = host("x.y.corp.test");
    CU_ASSERT_EQUAL_FATAL(eg_ca_server_ctx(ca, &h, &a), 0);
    CU_ASSERT_EQUAL(verify(a, "x.y.corp.test", NULL), 0);
    h = host("10.1.2.3");
    CU_ASSERT_EQUAL_FATAL(eg_ca_server_ctx(ca, &h, &a), 0);
    CU_ASSERT_EQUAL(verify(a, NULL, "10.1.2.3"), 0);
    /* the CA signs what it is asked to, but the constraints make it worthless */
    h = host("evil.test");
    CU_ASSERT_EQUAL_FATAL(eg_ca_server_ctx(ca, &h, &a), 0);
    CU_ASSERT_EQUAL(verify(a, "evil.test", NULL), X509_V_ERR_PERMITTED_VIOLATION);
    h = host("corp.test"); /* "*.corp.test" permits names under it only */
    CU_ASSERT_EQUAL_FATAL(eg_ca_server_ctx(ca, &h, &a), 0);
    CU_ASSERT_EQUAL(verify(a, "corp.test", NULL), X509_V_ERR_PERMITTED_VIOLATION);
    h = host("10.1.2.4");
    CU_ASSERT_EQUAL_FATAL(eg_ca_server_ctx(ca, &h, &a), 0);
    CU_ASSERT_EQUAL(verify(a, NULL, "10.1.2.4"), X509_V_ERR_PERMITTED_VIOLATION);
    h = host("[fd00::1]");
    CU_ASSERT_EQUAL_FATAL(eg_ca_server_ctx(ca, &h, &a), 0);
    CU_ASSERT_EQUAL(verify(a, NULL, "fd00::1"), X509_V_ERR_PERMITTED_VIOLATION);
    CU_ASSERT_EQUAL(eg_ca_cached(ca), 7);
}

static void test_fences(void)
{
    struct eg_dest d;
    const struct eg_dest *one[1] = {&d};
    struct eg_ca *c = NULL;
    char why[64];

    /* a job with only an IP destination: no DNS name at all is permitted */
    CU_ASSERT_EQUAL_FATAL(
        eg_dest_init(&d, "10.9.9.9", 443, NULL, 0, NULL, 0, NULL, 0, 0, why, sizeof(why)), 0);
    CU_ASSERT_EQUAL_FATAL(eg_ca_new("fence", one, 1, (double)time(NULL), &c), 0);
    BIO *b = BIO_new_mem_buf(eg_ca_pem(c), -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    NAME_CONSTRAINTS *nc = X509_get_ext_d2i(x, NID_name_constraints, NULL, NULL);
    CU_ASSERT_EQUAL(sk_GENERAL_SUBTREE_num(nc->permittedSubtrees), 3); /* ip, dns fence, v6 fence */
    NAME_CONSTRAINTS_free(nc);
    X509_free(x);
    BIO_free(b);
    eg_ca_free(c);
    eg_dest_cleanup(&d);
    CU_ASSERT_EQUAL(eg_ca_new("none", one, 0, (double)time(NULL), &c), AL_ERR_INVAL);
}

static void test_handshake(void)
{
    struct eg_host h = host("api.test");
    SSL_CTX *sctx = NULL, *cctx = SSL_CTX_new(TLS_client_method());
    SSL *s, *c;
    BIO *bs, *bc;
    const unsigned char *proto = NULL;
    unsigned plen = 0;
    int done = 0;

    CU_ASSERT_EQUAL_FATAL(eg_ca_server_ctx(ca, &h, &sctx), 0);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), ca_cert);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_alpn_protos(cctx, (const unsigned char *)"\x02h2\x08http/1.1", 12);
    s = SSL_new(sctx);
    c = SSL_new(cctx);
    BIO_new_bio_pair(&bs, 0, &bc, 0);
    SSL_set_bio(s, bs, bs);
    SSL_set_bio(c, bc, bc);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    SSL_set_tlsext_host_name(c, "api.test");
    SSL_set1_host(c, "api.test");
    for (int i = 0; i < 20 && done != 3; i++) {
        if (!(done & 1) && SSL_do_handshake(c) == 1)
            done |= 1;
        if (!(done & 2) && SSL_do_handshake(s) == 1)
            done |= 2;
    }
    CU_ASSERT_EQUAL(done, 3);
    SSL_get0_alpn_selected(c, &proto, &plen);
    CU_ASSERT(plen == 8 && memcmp(proto, "http/1.1", 8) == 0);
    SSL_free(s);
    SSL_free(c);
    SSL_CTX_free(cctx);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("egress CA", setup, teardown);
    CU_add_test(s, "the CA certificate", test_ca_cert);
    CU_add_test(s, "leaves inside and outside the constraints", test_leaves);
    CU_add_test(s, "fences for name types without hosts", test_fences);
    CU_add_test(s, "handshake with a minted leaf, ALPN http/1.1", test_handshake);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
