/*
 * al_tls: TLS 1.3 contexts with mutual TLS, ALPN and live reload.
 *
 * A struct al_tls holds the current SSL_CTX built from a certificate, key and
 * CA bundle on disk. al_tls_reload() builds a new SSL_CTX from the files and
 * swaps it in only if that succeeded; connections already open keep the
 * context they were created with (OpenSSL reference-counts it), so a SIGHUP
 * reload never drops an open connection. New connections use the new context.
 *
 * Every context sets SSL_OP_CLEANSE_PLAINTEXT: OpenSSL cleanses deciphered
 * application data as soon as SSL_read() has passed it on, and when the
 * connection is released, so a secret received over TLS leaves no copy in
 * OpenSSL's read buffer (outgoing records are encrypted in place in the write
 * buffer, so no plaintext stays there either). tests/integration/credstore.sh
 * scans a running credstore's memory for this.
 *
 * Lifecycle: al_tls_new() -> al_tls_ssl_new() per connection -> al_tls_free().
 */
#ifndef AL_TLS_H
#define AL_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

#define AL_TLS_ID_MAX 256 /* longest SPIFFE id kept for a peer */

struct al_tls_opts {
    const char *cert_file; /* PEM certificate chain (leaf first) */
    const char *key_file;  /* PEM private key */
    const char *ca_file;   /* PEM CA bundle that peers' certificates must chain to */
    int server;            /* 1: accept side; 0: connect side */
    int require_peer_cert; /* server: refuse clients without a certificate (mTLS);
                            * 0 still verifies a certificate that is offered */
    /* ALPN protocols in preference order, NULL-terminated; NULL = {"h2"}. */
    const char *const *alpn;
};

struct al_tls;

/* Builds a context from the files in opts (copied). Returns 0, AL_ERR_TLS with a
 * logged reason when a file cannot be loaded or the key does not match, or
 * AL_ERR_NOMEM. */
int al_tls_new(const struct al_tls_opts *opts, struct al_tls **out);

/* Re-reads the files and swaps the new context in. On failure the old context
 * stays in use and the error (AL_ERR_TLS) is returned and logged. */
int al_tls_reload(struct al_tls *t);

/* Returns a new SSL object on the current context, or NULL. The caller owns it. */
SSL *al_tls_ssl_new(struct al_tls *t);

/* Number of successful reloads so far (tests and metrics). */
unsigned al_tls_generation(const struct al_tls *t);

void al_tls_free(struct al_tls *t);

/* After the handshake: copies the peer certificate's spiffe:// URI SAN into buf.
 * Returns 0, AL_ERR_AUTH when there is no certificate or no SPIFFE id. */
int al_tls_peer_id(SSL *ssl, char *buf, size_t n);

/* Client side: require the server certificate to be valid for `host` (DNS name
 * or IP literal). Returns 0 or AL_ERR_TLS. */
int al_tls_set_verify_host(SSL *ssl, const char *host);

/* Copies the most recent OpenSSL error into buf (for logs; never secret). */
void al_tls_errstr(char *buf, size_t n);

#endif
