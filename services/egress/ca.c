/*
 * ca: a job's name-constrained CA and its leaves (see ca.h).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "al_err.h"
#include "ca.h"

struct leaf {
    struct eg_host host;
    SSL_CTX *ctx;
};

struct eg_ca {
    EVP_PKEY *key; /* the CA's */
    X509 *cert;
    EVP_PKEY *leaf_key; /* shared by the job's leaves */
    char *pem;
    time_t not_after;
    struct leaf cache[EG_CA_CACHE];
    size_t ncache, next; /* next: the slot replaced when full (oldest) */
};

static int set_serial(X509 *x)
{
    BIGNUM *bn = BN_new();
    int ok = bn && BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
             BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok;
}

static int add_conf_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *e;
    int ok;

    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!e)
        return 0;
    ok = X509_add_ext(x, e, -1) == 1;
    X509_EXTENSION_free(e);
    return ok;
}

/* A GENERAL_NAME for host h: DNS name (with a leading '.' for a wildcard
 * constraint) or an IP address, with a full mask when for_nc. */
static GENERAL_NAME *host_name(const struct eg_host *h, int wildcard, int for_nc)
{
    GENERAL_NAME *g = GENERAL_NAME_new();
    unsigned char buf[32];
    size_t alen = h->kind == EG_HOST_IPV4 ? 4 : 16;

    if (!g)
        return NULL;
    if (h->kind == EG_HOST_NAME) {
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        char tmp[EG_HOST_MAX + 1];
        snprintf(tmp, sizeof(tmp), "%s%s", wildcard ? "." : "", h->name);
        if (!s || ASN1_STRING_set(s, tmp, (int)strlen(tmp)) != 1) {
            ASN1_IA5STRING_free(s);
            GENERAL_NAME_free(g);
            return NULL;
        }
        GENERAL_NAME_set0_value(g, GEN_DNS, s);
        return g;
    }
    ASN1_OCTET_STRING *o = ASN1_OCTET_STRING_new();
    memcpy(buf, h->addr, alen);
    memset(buf + alen, 0xff, alen);
    if (!o || ASN1_OCTET_STRING_set(o, buf, (int)(for_nc ? 2 * alen : alen)) != 1) {
        ASN1_OCTET_STRING_free(o);
        GENERAL_NAME_free(g);
        return NULL;
    }
    GENERAL_NAME_set0_value(g, GEN_IPADD, o);
    return g;
}

static int push_subtree(STACK_OF(GENERAL_SUBTREE) * st, GENERAL_NAME *g)
{
    GENERAL_SUBTREE *t = g ? GENERAL_SUBTREE_new() : NULL;

    if (!t) {
        GENERAL_NAME_free(g);
        return 0;
    }
    GENERAL_NAME_free(t->base);
    t->base = g;
    if (!sk_GENERAL_SUBTREE_push(st, t)) {
        GENERAL_SUBTREE_free(t);
        return 0;
    }
    return 1;
}

/* permitted: each host; a name type without hosts gets an empty fence. */
static int add_name_constraints(X509 *x, const struct eg_dest *const *hosts, size_t n)
{
    NAME_CONSTRAINTS *nc = NAME_CONSTRAINTS_new();
    int dns = 0, v4 = 0, v6 = 0, ok = 1;
    struct eg_host fence;

    if (!nc || !(nc->permittedSubtrees = sk_GENERAL_SUBTREE_new_null())) {
        NAME_CONSTRAINTS_free(nc);
        return 0;
    }
    for (size_t i = 0; ok && i < n; i++) {
        const struct eg_host *h = &hosts[i]->host;
        dns |= h->kind == EG_HOST_NAME;
        v4 |= h->kind == EG_HOST_IPV4;
        v6 |= h->kind == EG_HOST_IPV6;
        ok = push_subtree(nc->permittedSubtrees, host_name(h, hosts[i]->wildcard, 1));
    }
    memset(&fence, 0, sizeof(fence));
    if (ok && !dns) {
        fence.kind = EG_HOST_NAME;
        snprintf(fence.name, sizeof(fence.name), "invalid");
        ok = push_subtree(nc->permittedSubtrees, host_name(&fence, 0, 1));
    }
    memset(fence.addr, 0, sizeof(fence.addr));
    if (ok && !v4) {
        fence.kind = EG_HOST_IPV4;
        ok = push_subtree(nc->permittedSubtrees, host_name(&fence, 0, 1));
    }
    if (ok && !v6) {
        fence.kind = EG_HOST_IPV6;
        ok = push_subtree(nc->permittedSubtrees, host_name(&fence, 0, 1));
    }
    ok = ok && X509_add1_ext_i2d(x, NID_name_constraints, nc, 1, X509V3_ADD_DEFAULT) == 1;
    NAME_CONSTRAINTS_free(nc);
    return ok;
}

static void subject_label(const char *job, char *out, size_t n)
{
    size_t k = 0;
    const char *pre = "Airlock egress CA ";

    k = (size_t)snprintf(out, n, "%s", pre);
    for (size_t i = 0; job && job[i] && k + 1 < n && k < 64; i++) {
        char ch = job[i];
        out[k++] = (ch >= 0x20 && ch < 0x7f) ? ch : '_';
    }
    out[k] = '\0';
}

static X509 *cert_begin(EVP_PKEY *key, double now, time_t not_after)
{
    X509 *x = X509_new();

    if (!x || X509_set_version(x, 2) != 1 || !set_serial(x) ||
        !X509_time_adj_ex(X509_getm_notBefore(x), 0, -3600, &(time_t){(time_t)now}) ||
        !ASN1_TIME_set(X509_getm_notAfter(x), not_after) || X509_set_pubkey(x, key) != 1) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static int make_ca_cert(struct eg_ca *ca, const char *job, const struct eg_dest *const *hosts,
                        size_t n, double now)
{
    char cn[96];
    X509_NAME *name;
    X509 *x;
    int ok;

    ca->not_after = (time_t)now + EG_CA_VALID_S;
    x = cert_begin(ca->key, now, ca->not_after);
    if (!x)
        return AL_ERR_CRYPTO;
    ca->cert = x;
    subject_label(job, cn, sizeof(cn));
    name = X509_get_subject_name(x);
    ok = X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Airlock", -1,
                                    -1, 0) == 1 &&
         X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                    0) == 1 &&
         X509_set_issuer_name(x, name) == 1 &&
         add_conf_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
         add_conf_ext(x, x, NID_key_usage, "critical,keyCertSign") &&
         add_conf_ext(x, x, NID_subject_key_identifier, "hash") &&
         add_name_constraints(x, hosts, n) && X509_sign(x, ca->key, EVP_sha256()) > 0;
    return ok ? 0 : AL_ERR_CRYPTO;
}

static int make_pem(struct eg_ca *ca)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *p = NULL;
    long len;

    if (!b || PEM_write_bio_X509(b, ca->cert) != 1) {
        BIO_free(b);
        return AL_ERR_CRYPTO;
    }
    len = BIO_get_mem_data(b, &p);
    ca->pem = len > 0 ? strndup(p, (size_t)len) : NULL;
    BIO_free(b);
    return ca->pem ? 0 : AL_ERR_NOMEM;
}

int eg_ca_new(const char *job, const struct eg_dest *const *hosts, size_t n, double now,
              struct eg_ca **out)
{
    struct eg_ca *ca;
    int rc;

    *out = NULL;
    if (n == 0)
        return AL_ERR_INVAL;
    ca = calloc(1, sizeof(*ca));
    if (!ca)
        return AL_ERR_NOMEM;
    ca->key = EVP_EC_gen("P-256");
    ca->leaf_key = EVP_EC_gen("P-256");
    rc = ca->key && ca->leaf_key ? make_ca_cert(ca, job, hosts, n, now) : AL_ERR_CRYPTO;
    if (rc == 0)
        rc = make_pem(ca);
    if (rc < 0) {
        eg_ca_free(ca);
        return rc;
    }
    *out = ca;
    return 0;
}

const char *eg_ca_pem(const struct eg_ca *ca)
{
    return ca->pem;
}

/* ---------------------------------------------------------------- leaves */

static X509 *make_leaf(struct eg_ca *ca, const struct eg_host *h, double now)
{
    char cn[65];
    GENERAL_NAMES *san = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *g = host_name(h, 0, 0);
    X509 *x = cert_begin(ca->leaf_key, now, ca->not_after);
    int ok, is_name = h->kind == EG_HOST_NAME;

    snprintf(cn, sizeof(cn), "%.64s", h->name);
    ok = x && san && g && sk_GENERAL_NAME_push(san, g);
    if (ok)
        g = NULL; /* owned by san */
    /* a name gets it as CN too (for display); an address gets an empty
     * subject, since verifiers check a CN that looks like a host name
     * against the DNS constraints, and the SAN is then critical (RFC 5280) */
    if (ok && is_name)
        ok = X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                        (const unsigned char *)cn, -1, -1, 0) == 1;
    ok = ok && X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) == 1 &&
         X509_add1_ext_i2d(x, NID_subject_alt_name, san, !is_name, X509V3_ADD_DEFAULT) == 1 &&
         add_conf_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE") &&
         add_conf_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature") &&
         add_conf_ext(x, ca->cert, NID_ext_key_usage, "serverAuth") &&
         add_conf_ext(x, ca->cert, NID_authority_key_identifier, "keyid:always") &&
         X509_sign(x, ca->key, EVP_sha256()) > 0;
    GENERAL_NAME_free(g);
    GENERAL_NAMES_free(san);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* ALPN: http/1.1 when offered; a client offering only others is refused. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    for (unsigned i = 0; i < inlen;) {
        unsigned l = in[i];
        if (i + 1 + l > inlen)
            break;
        if (l == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = 8;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + l;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static SSL_CTX *server_ctx(struct eg_ca *ca, X509 *leaf)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (!ctx)
        return NULL;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1 ||
        SSL_CTX_use_certificate(ctx, leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, ca->leaf_key) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET |
                                 SSL_OP_CLEANSE_PLAINTEXT | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    return ctx;
}

int eg_ca_server_ctx(struct eg_ca *ca, const struct eg_host *h, SSL_CTX **out)
{
    struct leaf *slot;
    X509 *leaf;
    SSL_CTX *ctx;

    *out = NULL;
    for (size_t i = 0; i < ca->ncache; i++) {
        if (eg_host_equal(&ca->cache[i].host, h)) {
            *out = ca->cache[i].ctx;
            return 0;
        }
    }
    leaf = make_leaf(ca, h, (double)time(NULL));
    if (!leaf)
        return AL_ERR_CRYPTO;
    ctx = server_ctx(ca, leaf);
    X509_free(leaf);
    if (!ctx)
        return AL_ERR_CRYPTO;
    if (ca->ncache < EG_CA_CACHE) {
        slot = &ca->cache[ca->ncache++];
    } else {
        slot = &ca->cache[ca->next];
        ca->next = (ca->next + 1) % EG_CA_CACHE;
        SSL_CTX_free(slot->ctx);
    }
    slot->host = *h;
    slot->ctx = ctx;
    *out = ctx;
    return 0;
}

size_t eg_ca_cached(const struct eg_ca *ca)
{
    return ca->ncache;
}

void eg_ca_free(struct eg_ca *ca)
{
    if (!ca)
        return;
    for (size_t i = 0; i < ca->ncache; i++)
        SSL_CTX_free(ca->cache[i].ctx);
    EVP_PKEY_free(ca->key);
    EVP_PKEY_free(ca->leaf_key);
    X509_free(ca->cert);
    free(ca->pem);
    free(ca);
}
