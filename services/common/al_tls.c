/*
 * al_tls: OpenSSL 3 contexts for Airlock links. Every link is TLS 1.3 only;
 * servers demand client certificates when asked (mTLS); peers are identified by
 * the spiffe:// URI SAN of their certificate (see al_pki).
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "al_err.h"
#include "al_log.h"
#include "al_pki.h"
#include "al_tls.h"

#define ALPN_MAX 8

struct al_tls {
    SSL_CTX *ctx;
    char *cert_file, *key_file, *ca_file;
    int server, require_peer_cert;
    unsigned char alpn_wire[256]; /* ALPN list in wire format */
    size_t alpn_len;
    unsigned generation;
};

void al_tls_errstr(char *buf, size_t n)
{
    unsigned long e = ERR_peek_last_error();
    if (!e) {
        snprintf(buf, n, "unknown");
        return;
    }
    ERR_error_string_n(e, buf, n);
    ERR_clear_error();
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg)
{
    struct al_tls *t = arg;
    unsigned char *sel = NULL;
    (void)ssl;
    if (SSL_select_next_proto(&sel, outlen, t->alpn_wire, (unsigned)t->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* no common protocol: refuse */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *build_ctx(struct al_tls *t)
{
    char err[256];
    SSL_CTX *ctx = SSL_CTX_new(t->server ? TLS_server_method() : TLS_client_method());

    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    /* CLEANSE_PLAINTEXT: records are decrypted in place in OpenSSL's read
     * buffer, which SSL_MODE_RELEASE_BUFFERS frees as soon as it is drained;
     * without the option the plaintext (a credential value in a Put, a
     * released value on a client) would stay in freed heap */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET |
                                 SSL_OP_CLEANSE_PLAINTEXT);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (t->cert_file && SSL_CTX_use_certificate_chain_file(ctx, t->cert_file) != 1) {
        al_tls_errstr(err, sizeof(err));
        AL_LOG_ERROR("tls.load", "file=%s reason=\"certificate: %s\"", t->cert_file, err);
        goto fail;
    }
    if (t->key_file && SSL_CTX_use_PrivateKey_file(ctx, t->key_file, SSL_FILETYPE_PEM) != 1) {
        al_tls_errstr(err, sizeof(err));
        AL_LOG_ERROR("tls.load", "file=%s reason=\"private key: %s\"", t->key_file, err);
        goto fail;
    }
    if (t->cert_file && t->key_file && SSL_CTX_check_private_key(ctx) != 1) {
        AL_LOG_ERROR("tls.load", "file=%s reason=\"key does not match certificate\"", t->key_file);
        goto fail;
    }
    if (t->ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, t->ca_file, NULL) != 1) {
            al_tls_errstr(err, sizeof(err));
            AL_LOG_ERROR("tls.load", "file=%s reason=\"CA bundle: %s\"", t->ca_file, err);
            goto fail;
        }
        if (t->server) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->ca_file);
            if (names)
                SSL_CTX_set_client_CA_list(ctx, names);
        }
    }
    if (t->server) {
        /* always ask for a client certificate and verify any that is given;
         * "required" also refuses clients without one */
        int mode = t->ca_file ? SSL_VERIFY_PEER : SSL_VERIFY_NONE;
        if (t->require_peer_cert)
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(ctx, mode, NULL);
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select, t);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (SSL_CTX_set_alpn_protos(ctx, t->alpn_wire, (unsigned)t->alpn_len) != 0)
            goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static int set_alpn(struct al_tls *t, const char *const *alpn)
{
    static const char *const def[] = {"h2", NULL};
    if (!alpn)
        alpn = def;
    t->alpn_len = 0;
    for (int i = 0; alpn[i] && i < ALPN_MAX; i++) {
        size_t l = strlen(alpn[i]);
        if (l == 0 || l > 255 || t->alpn_len + 1 + l > sizeof(t->alpn_wire))
            return AL_ERR_INVAL;
        t->alpn_wire[t->alpn_len++] = (unsigned char)l;
        memcpy(t->alpn_wire + t->alpn_len, alpn[i], l);
        t->alpn_len += l;
    }
    return t->alpn_len ? 0 : AL_ERR_INVAL;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int al_tls_new(const struct al_tls_opts *opts, struct al_tls **out)
{
    struct al_tls *t = calloc(1, sizeof(*t));
    int rc = AL_ERR_NOMEM;

    *out = NULL;
    if (!t)
        return AL_ERR_NOMEM;
    t->server = opts->server;
    t->require_peer_cert = opts->require_peer_cert;
    t->cert_file = dup_or_null(opts->cert_file);
    t->key_file = dup_or_null(opts->key_file);
    t->ca_file = dup_or_null(opts->ca_file);
    if ((opts->cert_file && !t->cert_file) || (opts->key_file && !t->key_file) ||
        (opts->ca_file && !t->ca_file))
        goto out;
    rc = set_alpn(t, opts->alpn);
    if (rc < 0)
        goto out;
    t->ctx = build_ctx(t);
    rc = t->ctx ? 0 : AL_ERR_TLS;
out:
    if (rc < 0) {
        al_tls_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int al_tls_reload(struct al_tls *t)
{
    SSL_CTX *ctx = build_ctx(t);
    if (!ctx) {
        AL_LOG_WARN("tls.reload", "result=failed keeping=previous");
        return AL_ERR_TLS;
    }
    SSL_CTX_free(t->ctx); /* open connections hold their own reference */
    t->ctx = ctx;
    t->generation++;
    AL_LOG_INFO("tls.reload", "result=ok generation=%u", t->generation);
    return 0;
}

unsigned al_tls_generation(const struct al_tls *t)
{
    return t->generation;
}

SSL *al_tls_ssl_new(struct al_tls *t)
{
    return SSL_new(t->ctx);
}

void al_tls_free(struct al_tls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t->cert_file);
    free(t->key_file);
    free(t->ca_file);
    free(t);
}

int al_tls_peer_id(SSL *ssl, char *buf, size_t n)
{
    X509 *cert = SSL_get0_peer_certificate(ssl);
    if (!cert || SSL_get_verify_result(ssl) != X509_V_OK)
        return AL_ERR_AUTH;
    return al_pki_spiffe_id(cert, buf, n) < 0 ? AL_ERR_AUTH : 0;
}

int al_tls_set_verify_host(SSL *ssl, const char *host)
{
    unsigned char ip[16];
    X509_VERIFY_PARAM *p = SSL_get0_param(ssl);

    if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1)
        return X509_VERIFY_PARAM_set1_ip_asc(p, host) == 1 ? 0 : AL_ERR_TLS;
    if (SSL_set_tlsext_host_name(ssl, host) != 1)
        return AL_ERR_TLS;
    return SSL_set1_host(ssl, host) == 1 ? 0 : AL_ERR_TLS;
}
