/*
 * h1: the relay's HTTP/1.1 agent connections, and the agent listener that
 * picks HTTP/1.1 or HTTP/2 for each accepted connection.
 *
 * Listener (struct rl_listener): accepts TCP on one address; with TLS it
 * runs the handshake (non-blocking, with a deadline) offering ALPN "h2" and
 * "http/1.1" (no ALPN = HTTP/1.1); without TLS (insecure mode) it peeks at
 * the first bytes: the HTTP/2 connection preface means h2c prior knowledge,
 * anything else HTTP/1.1. It then hands the socket and the finished SSL to
 * on_h2 or on_h1, and forgets them. At most max_conns connections are in the
 * handshake phase at once (the rest wait in the kernel backlog).
 *
 * Connection (struct rl_h1conn): one HTTP/1.1 server connection over an
 * accepted socket and an optional SSL whose handshake is done. Requests are
 * parsed with http_parser, strictly: no obs-fold, no bare LF in the head,
 * no request with both Content-Length and Transfer-Encoding, no
 * Transfer-Encoding other than "chunked", no duplicate Content-Length or
 * Host, header names and values checked against RFC 9110 token/field-value
 * rules, a request-target in origin-form only (opt-in proxy_forms: also
 * absolute-form, and CONNECT with authority-form). Malformed input gets a 400
 * (or 413/431/501 as fits) with a JSON error body and the connection is
 * closed. Timeouts: the whole head must arrive within header_timeout
 * (slowloris), a body must make progress every body_timeout, and an idle
 * keep-alive connection is closed after idle_timeout.
 *
 * One request at a time: the next request on the connection (pipelined or
 * not) is not parsed before the upper layer has ended the current response.
 * Request body flow control: the upper layer stops the body with
 * rl_h1conn_pause() (the socket is no longer read) and restarts it with
 * rl_h1conn_resume(). Response: head, body pieces, end; bodies are sent
 * with Content-Length when the upper layer gives one, else chunked
 * (HTTP/1.1 clients) or close-delimited (HTTP/1.0). rl_h1conn_pending()
 * and on_writable give response flow control.
 *
 * Lifecycle: rl_h1conn_new() -> on_request / on_body / on_body_end ->
 * respond_* ... -> (next request) ... -> on_close (the upper layer drops its
 * references; the object is freed by the loop after on_close returns, never
 * inside a call the upper layer made). A forward proxy (proxy_forms) may
 * instead take the socket back after a CONNECT with rl_h1conn_detach().
 */
#ifndef RL_H1_H
#define RL_H1_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <openssl/ssl.h>

#include "al_tls.h"

/* One header field. Names of parsed request headers are lowercased; the
 * strings are borrowed from the connection for the duration of the callback
 * that carries them. */
struct rl_h1_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

struct rl_h1_head {
    const char *method; /* "GET", "POST", "DELETE", ... (NUL-terminated) */
    const char *target; /* request-target, NUL-terminated: origin-form; with
                         * proxy_forms also absolute-form, or authority-form
                         * for CONNECT (the upper layer parses those) */
    size_t target_len;
    const struct rl_h1_header *headers; /* in arrival order, names lowercased */
    size_t nheaders;
    int64_t content_length; /* -1 when the request has none */
    int chunked;            /* Transfer-Encoding: chunked */
    int http_minor;         /* 0 or 1 */
    int keep_alive;         /* the connection may carry another request */
};

struct rl_h1_limits {
    size_t max_head;         /* request line + headers, bytes; 0 = 16 KiB */
    size_t max_headers;      /* header fields; 0 = 100 */
    size_t max_body;         /* request body, bytes; 0 = 4 MiB */
    size_t max_pending;      /* queued response bytes before respond_body fails; 0 = 1 MiB */
    double header_timeout_s; /* 0 = 10 s */
    double body_timeout_s;   /* 0 = 30 s */
    double idle_timeout_s;   /* 0 = 60 s */
    /* Opt-in for a forward proxy (the egress proxy; the relay sets neither):
     * proxy_forms accepts absolute-form request targets ("http://h/p") and
     * CONNECT with an authority-form target ("h:443", no body); the upper
     * layer must validate those targets. error_prefix makes the error
     * replies h1 writes itself text/plain "<error_prefix>: <reason>\n"
     * instead of a JSON-RPC error (borrowed; a static string). */
    int proxy_forms;
    const char *error_prefix;
};

struct rl_h1conn;

struct rl_h1conn_cbs {
    /* A complete, valid request head. Return 0, or a negative code to have
     * the connection answer 500 and close. The upper layer answers with
     * respond_head/body/end at any later time. */
    int (*on_request)(struct rl_h1conn *c, const struct rl_h1_head *h, void *user);
    /* Request body bytes (chunk framing removed), borrowed for the call. */
    void (*on_body)(struct rl_h1conn *c, const uint8_t *d, size_t n, void *user);
    /* The request body is complete (also called for a request without body). */
    void (*on_body_end)(struct rl_h1conn *c, void *user);
    /* Queued response bytes fell to the on_writable low-water mark. */
    void (*on_writable)(struct rl_h1conn *c, void *user);
    /* The connection is gone (peer closed, error, timeout, or after a
     * response that ends it); a request in progress will not be answered.
     * err 0 = orderly. Drop every reference to c. */
    void (*on_close)(struct rl_h1conn *c, int err, void *user);
    /* Optional: h1 refused a request itself (malformed, too large, ...)
     * with this status and reason, just before the reply goes out (on_close
     * follows). For the upper layer's records only: it must not call
     * rl_h1conn_* on c from here. */
    void (*on_reject)(struct rl_h1conn *c, int status, const char *why, void *user);
};

/* Wraps fd (taken) and ssl (taken, handshake finished; NULL = plaintext).
 * limits and cbs are copied. Returns 0 or AL_ERR_NOMEM (fd and ssl released,
 * no callback runs). */
int rl_h1conn_new(struct ev_loop *loop, int fd, SSL *ssl, const struct rl_h1_limits *limits,
                  const struct rl_h1conn_cbs *cbs, void *user, struct rl_h1conn **out);

/* Starts the response: status and headers (copied; the connection adds
 * Date, Content-Length or Transfer-Encoding and Connection itself and
 * refuses those names and other hop-by-hop ones from the caller).
 * content_length -1 = unknown (chunked). Returns 0, AL_ERR_STATE (no request
 * waiting or head already sent), AL_ERR_INVAL (bad header), AL_ERR_NOMEM. */
int rl_h1conn_respond_head(struct rl_h1conn *c, int status, const struct rl_h1_header *h, size_t n,
                           int64_t content_length);

/* Queues body bytes (copied). Returns 0, AL_ERR_STATE, AL_ERR_TOOBIG (more
 * than max_pending queued: the caller must wait for on_writable) or
 * AL_ERR_NOMEM. */
int rl_h1conn_respond_body(struct rl_h1conn *c, const uint8_t *d, size_t n);

/* Ends the response. keep = 0 closes the connection once it is sent.
 * Returns 0 or AL_ERR_STATE. */
int rl_h1conn_respond_end(struct rl_h1conn *c, int keep);

/* A complete response in one call: status, headers, body with
 * Content-Length, end. For errors produced by the relay itself. */
int rl_h1conn_respond(struct rl_h1conn *c, int status, const struct rl_h1_header *h, size_t n,
                      const uint8_t *body, size_t len, int keep);

/* Response bytes queued and not yet written. */
size_t rl_h1conn_pending(const struct rl_h1conn *c);

/* on_writable runs once pending drops to or below low (re-armed by each
 * call). */
void rl_h1conn_want_writable(struct rl_h1conn *c, size_t low);

/* Request body flow control: stop / restart reading the socket. */
void rl_h1conn_pause(struct rl_h1conn *c);
void rl_h1conn_resume(struct rl_h1conn *c);

/* Closes now (queued output dropped); on_close runs from the loop. */
void rl_h1conn_close(struct rl_h1conn *c);

/* Graceful: close after the current response (or now if idle). */
void rl_h1conn_shutdown(struct rl_h1conn *c);

/* Takes the connection back from h1 (a CONNECT the upper layer accepts):
 * valid once the request is complete (on_body_end delivered), no response
 * has started and nothing is queued. *fd and *ssl (NULL for plaintext)
 * become the caller's, and the bytes the peer sent after the request head
 * are appended to rest (wiped on cleanup). The connection object is freed
 * from the loop; on_close never runs. Returns 0, AL_ERR_STATE (c unchanged)
 * or AL_ERR_NOMEM (c unchanged). */
struct rl_buf;
int rl_h1conn_detach(struct rl_h1conn *c, int *fd, SSL **ssl, struct rl_buf *rest);

/* Peer "ip:port", whether TLS is used. Borrowed. */
const char *rl_h1conn_peer(const struct rl_h1conn *c);
int rl_h1conn_tls(const struct rl_h1conn *c);

/* ---- listener ---- */

struct rl_listener;

struct rl_listener_opts {
    const char *addr;           /* "host:port" (port 0 = any) */
    struct al_tls *tls;         /* borrowed; NULL = plaintext (insecure mode) */
    double handshake_timeout_s; /* 0 = 10 s */
    size_t max_conns;           /* connections in the handshake at once; 0 = 1024 */
    /* fd and ssl (NULL for h2c) are taken by the callee; peer is "ip:port". */
    void (*on_h2)(int fd, SSL *ssl, const char *peer, void *user);
    void (*on_h1)(int fd, SSL *ssl, const char *peer, void *user);
    void *user;
};

/* Listens and starts accepting. The TLS context must offer ALPN h2 and
 * http/1.1 (al_tls_opts.alpn = {"h2", "http/1.1", NULL}). Returns 0, -errno
 * or AL_ERR_INVAL / AL_ERR_NOMEM. */
int rl_listener_new(struct ev_loop *loop, const struct rl_listener_opts *o,
                    struct rl_listener **out);

/* Bound port (for port 0). */
int rl_listener_port(const struct rl_listener *l);

/* Stops accepting (connections already handed over are unaffected);
 * handshakes in progress are dropped. */
void rl_listener_free(struct rl_listener *l);

#endif
