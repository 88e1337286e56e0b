/*
 * Unit tests for the ClientHello check (sni.c): real ClientHellos written
 * by OpenSSL (with and without a server name, in one record and split over
 * several records, fed a byte at a time), hand-made ones for every
 * malformation (lengths, duplicate extensions, two names, bad characters,
 * trailing dot), and bytes that are not TLS at all.
 */
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>

#include "al_err.h"
#include "sni.h"

/* The first flight of an OpenSSL client: its ClientHello records. */
static size_t openssl_hello(const char *sni, uint8_t *out, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    int n;

    SSL_set_bio(ssl, rb, wb);
    if (sni)
        SSL_set_tlsext_host_name(ssl, sni);
    SSL_set_alpn_protos(ssl, (const unsigned char *)"\x02h2\x08http/1.1", 12);
    SSL_set_connect_state(ssl);
    SSL_do_handshake(ssl);
    n = BIO_read(wb, out, (int)cap);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return n > 0 ? (size_t)n : 0;
}

static int parse(const uint8_t *d, size_t n, char *sni, size_t *used)
{
    const char *why = NULL;
    int rc = eg_hello_parse(d, n, sni, used, &why);

    if (rc < 0)
        CU_ASSERT_PTR_NOT_NULL(why);
    return rc;
}

static void test_openssl_hellos(void)
{
    uint8_t h[4096];
    char sni[EG_SNI_MAX];
    size_t n, used;

    n = openssl_hello("API.Example.com", h, sizeof(h));
    CU_ASSERT_FATAL(n > 100);
    CU_ASSERT_EQUAL(parse(h, n, sni, &used), 0);
    CU_ASSERT_STRING_EQUAL(sni, "api.example.com");
    CU_ASSERT_EQUAL(used, n);
    for (size_t k = 0; k < n; k++)
        CU_ASSERT_EQUAL(parse(h, k, sni, &used), 1); /* every prefix wants more */
    n = openssl_hello(NULL, h, sizeof(h));
    CU_ASSERT_EQUAL(parse(h, n, sni, &used), 0);
    CU_ASSERT_STRING_EQUAL(sni, "");
}

/* Re-frames the handshake message of a one-record hello into records of at
 * most chunk bytes each. */
static size_t split_records(const uint8_t *in, size_t n, size_t chunk, uint8_t *out)
{
    size_t body = n - 5, k = 0;

    for (size_t off = 0; off < body; off += chunk) {
        size_t len = body - off < chunk ? body - off : chunk;
        out[k++] = 0x16;
        out[k++] = 3;
        out[k++] = 1;
        out[k++] = (uint8_t)(len >> 8);
        out[k++] = (uint8_t)len;
        memcpy(out + k, in + 5 + off, len);
        k += len;
    }
    return k;
}

static void test_multi_record(void)
{
    uint8_t h[4096], r[8192];
    char sni[EG_SNI_MAX];
    size_t n = openssl_hello("multi.example", h, sizeof(h)), m, used;

    for (size_t chunk = 1; chunk < 300; chunk += 37) {
        m = split_records(h, n, chunk, r);
        CU_ASSERT_EQUAL(parse(r, m, sni, &used), 0);
        CU_ASSERT_STRING_EQUAL(sni, "multi.example");
        CU_ASSERT_EQUAL(used, m);
        CU_ASSERT_EQUAL(parse(r, m - 1, sni, &used), 1);
    }
    /* bytes after the hello (the client's next flight) do not matter */
    memcpy(r, h, n);
    memcpy(r + n, "\x14\x03\x03\x00\x01\x01", 6);
    CU_ASSERT_EQUAL(parse(r, n + 6, sni, &used), 0);
    CU_ASSERT_EQUAL(used, n);
}

/* A hand-made ClientHello with the given extensions block. */
static size_t make_hello(const uint8_t *ext, size_t elen, uint8_t *out)
{
    uint8_t body[1024];
    size_t k = 0;

    body[k++] = 3; /* legacy version */
    body[k++] = 3;
    memset(body + k, 7, 32); /* random */
    k += 32;
    body[k++] = 0; /* session id */
    body[k++] = 0; /* cipher suites: 2 bytes */
    body[k++] = 2;
    body[k++] = 0x13;
    body[k++] = 0x01;
    body[k++] = 1; /* compression */
    body[k++] = 0;
    body[k++] = (uint8_t)(elen >> 8);
    body[k++] = (uint8_t)elen;
    memcpy(body + k, ext, elen);
    k += elen;
    out[0] = 0x16;
    out[1] = 3;
    out[2] = 1;
    out[3] = (uint8_t)((k + 4) >> 8);
    out[4] = (uint8_t)(k + 4);
    out[5] = 1;
    out[6] = 0;
    out[7] = (uint8_t)(k >> 8);
    out[8] = (uint8_t)k;
    memcpy(out + 9, body, k);
    return k + 9;
}

/* server_name extension bytes for name (type 0, one entry). */
static size_t sni_ext(const char *name, uint8_t *out)
{
    size_t l = strlen(name);

    out[0] = 0;
    out[1] = 0;
    out[2] = (uint8_t)((l + 5) >> 8);
    out[3] = (uint8_t)(l + 5);
    out[4] = (uint8_t)((l + 3) >> 8);
    out[5] = (uint8_t)(l + 3);
    out[6] = 0;
    out[7] = (uint8_t)(l >> 8);
    out[8] = (uint8_t)l;
    memcpy(out + 9, name, l);
    return l + 9;
}

static void expect_bad(const uint8_t *ext, size_t elen)
{
    uint8_t h[2048];
    char sni[EG_SNI_MAX];
    size_t n = make_hello(ext, elen, h), used;

    CU_ASSERT_EQUAL(parse(h, n, sni, &used), AL_ERR_INVAL);
    CU_ASSERT_STRING_EQUAL(sni, "");
}

static void test_malformed(void)
{
    uint8_t ext[512], h[2048];
    char sni[EG_SNI_MAX];
    size_t e, n, used;

    e = sni_ext("ok.example", ext);
    n = make_hello(ext, e, h);
    CU_ASSERT_EQUAL(parse(h, n, sni, &used), 0);
    CU_ASSERT_STRING_EQUAL(sni, "ok.example");
    /* duplicate server_name */
    e = sni_ext("a.example", ext);
    e += sni_ext("b.example", ext + e);
    expect_bad(ext, e);
    /* bad names */
    expect_bad(ext, sni_ext("trailing.dot.", ext));
    expect_bad(ext, sni_ext("sp ace.example", ext));
    expect_bad(ext, sni_ext("a..b", ext));
    expect_bad(ext, sni_ext("", ext));
    expect_bad(ext, sni_ext("b\xc3\xbcher.example", ext));
    /* two names in one extension */
    e = sni_ext("a.example", ext);
    ext[3] += 4;
    ext[5] += 4;
    memcpy(ext + e, "\x00\x00\x01z", 4);
    expect_bad(ext, e + 4);
    /* a name type other than host_name */
    e = sni_ext("a.example", ext);
    ext[6] = 1;
    expect_bad(ext, e);
    /* an extension longer than the block */
    memcpy(ext, "\x00\x17\x00\x10", 4);
    expect_bad(ext, 4);
    /* the hello's own length beyond the record, then the record type */
    e = sni_ext("a.example", ext);
    n = make_hello(ext, e, h);
    h[8] += 1;
    CU_ASSERT_EQUAL(parse(h, n, sni, &used), 1); /* waits for a byte it will never need */
    n = make_hello(ext, e, h);
    h[5] = 2; /* a ServerHello */
    CU_ASSERT_EQUAL(parse(h, n, sni, &used), AL_ERR_INVAL);
    n = make_hello(ext, e, h);
    h[3] = 0x40; /* record longer than 16 KiB */
    h[4] = 1;
    CU_ASSERT_EQUAL(parse(h, n, sni, &used), AL_ERR_INVAL);
}

static void test_not_tls(void)
{
    char sni[EG_SNI_MAX];
    size_t used;
    static const uint8_t sslv2[] = {0x80, 0x2e, 0x01, 0x00, 0x02};

    CU_ASSERT_EQUAL(parse((const uint8_t *)"GET / HTTP/1.1\r\n", 16, sni, &used), AL_ERR_PROTO);
    CU_ASSERT_EQUAL(parse(sslv2, sizeof(sslv2), sni, &used), AL_ERR_PROTO);
    CU_ASSERT_EQUAL(parse((const uint8_t *)"\x16\x02\x00\x00\x05", 5, sni, &used), AL_ERR_PROTO);
    CU_ASSERT_EQUAL(parse((const uint8_t *)"\x16", 1, sni, &used), 1);
    CU_ASSERT_EQUAL(parse((const uint8_t *)"", 0, sni, &used), 1);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("egress ClientHello", NULL, NULL);
    CU_add_test(s, "OpenSSL's ClientHellos, every prefix", test_openssl_hellos);
    CU_add_test(s, "hellos over several records", test_multi_record);
    CU_add_test(s, "malformed hellos and names", test_malformed);
    CU_add_test(s, "bytes that are not TLS", test_not_tls);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
