/*
 * al_h2conn: one HTTP/2 connection on a libev loop, over TLS or plaintext (h2c).
 *
 * The connection owns the socket, the SSL object and the nghttp2 session, and
 * moves bytes between them. The TLS role and the HTTP/2 role are independent:
 * a gateway dials out as a TLS client and then serves HTTP/2 on that connection
 * (reverse tunnel), so both combinations are supported.
 *
 * The upper layer (gRPC server, gRPC client, tunnel) supplies the nghttp2
 * callbacks and their user data; frames go out through al_h2conn_flush(),
 * which batches everything nghttp2 has queued into as few writes as possible.
 *
 * Lifecycle: al_h2conn_new() or al_h2conn_connect() -> [handshake] ->
 * on_ready -> frames -> al_h2conn_shutdown() (GOAWAY, then close when streams
 * end) or al_h2conn_close() -> on_close (upper layer drops its state) -> freed
 * by the loop. The connection is never freed inside a call the upper layer
 * made; it is freed from the loop once on_close has run.
 *
 * A loop with connections has its ev_userdata taken by al_h2conn (the loop's
 * send flusher): nothing else may set it on such a loop.
 */
#ifndef AL_H2CONN_H
#define AL_H2CONN_H

#include <stdint.h>
#include <sys/socket.h>

#include <ev.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include "al_tls.h"

struct al_h2conn;

struct al_h2conn_opts {
    int tls_server;          /* with an SSL: 1 = accept (server side of TLS), 0 = connect */
    int h2_server;           /* 1 = serve HTTP/2 (answer streams), 0 = client (open streams) */
    int require_peer_id;     /* close unless the peer presented a SPIFFE id */
    const char *verify_host; /* client TLS: name/IP the server cert must match */
    const char *alpn;        /* protocol that must be negotiated; NULL = "h2" */
    uint32_t max_concurrent_streams; /* advertised (server) ; 0 = 1000 */
    uint32_t initial_window;         /* per-stream receive window; 0 = 1 MiB */
    uint32_t max_header_list;        /* advertised SETTINGS_MAX_HEADER_LIST_SIZE; 0 = 16 KiB */
    double handshake_timeout_s;      /* 0 = 10 s */
    double ping_interval_s;          /* > 0: send PING when idle this long */
    double ping_timeout_s;           /* close when a PING is not answered; 0 = 20 s */
    /* 1: receive windows open only when the upper layer calls
     * nghttp2_session_consume() for bytes it has passed on (a proxy's end-to-end
     * flow control); 0: nghttp2 reopens them as soon as DATA is received. */
    int manual_window;
    /* Server sessions: RST_STREAMs from the peer accepted as a burst of
     * reset_burst, refilled at reset_rate per second, before nghttp2 ends the
     * connection (its rapid-reset defence, CVE-2023-44487). 0 = nghttp2's
     * default (1000, 33/s); a tunnel gateway, whose relay cancels a stream
     * for every agent that goes away, needs more. */
    uint64_t reset_burst, reset_rate;
    const nghttp2_session_callbacks *cbs; /* borrowed: must outlive the connection */
    void *session_user;                   /* nghttp2 user_data for every callback */
    /* TLS done and session created: the upper layer may now open streams. */
    void (*on_ready)(struct al_h2conn *c, void *user);
    /* The connection is closing; drop every reference to it and its streams.
     * `err` is 0 for an orderly close, else a negative AL_ERR_* / -errno.
     * The last call for this connection: no nghttp2 callback runs after it
     * (the session is deleted right after it returns, without callbacks), so
     * stream user data it frees need not be cleared from the session. */
    void (*on_close)(struct al_h2conn *c, int err, void *user);
    void *user;
};

/* Wraps an accepted or connected socket `fd` (taken: closed on free) and an
 * optional `ssl` (taken; NULL = h2c). An `ssl` whose handshake is already
 * finished on fd (a listener that chose HTTP/2 by ALPN) is used as is: the
 * ALPN and peer checks run and the connection opens at once. opts is copied.
 * Returns 0 or AL_ERR_NOMEM; on error fd and ssl are closed/freed and no
 * callback runs. */
int al_h2conn_new(struct ev_loop *loop, int fd, SSL *ssl, const struct al_h2conn_opts *opts,
                  struct al_h2conn **out);

/* Starts a non-blocking connect to a numeric address and then the handshake.
 * `tls` (borrowed) may be NULL for h2c. Errors after this returns 0 arrive as
 * on_close. Returns 0, -errno, AL_ERR_INVAL or AL_ERR_NOMEM. */
int al_h2conn_connect(struct ev_loop *loop, const struct sockaddr *sa, socklen_t salen,
                      struct al_tls *tls, const struct al_h2conn_opts *opts,
                      struct al_h2conn **out);

/* The nghttp2 session; NULL until on_ready. Borrowed, valid until on_close. */
nghttp2_session *al_h2conn_session(struct al_h2conn *c);

/* Sends everything nghttp2 has queued, batched: inside a receive it only
 * marks the connection and the send happens when the read is processed;
 * anywhere else it happens once the loop turn's events are processed, just
 * before the loop waits again (a prepare watcher), so the frames of every
 * call answered in one loop turn leave in one write. Safe from any callback. */
void al_h2conn_flush(struct al_h2conn *c);

/* Sends what is queued now rather than at the end of the loop turn, for a caller
 * that has just answered a group of calls (say, from another connection's
 * callback) and wants them out before that turn. Inside this connection's
 * own receive or send it does what al_h2conn_flush() does. */
void al_h2conn_flush_now(struct al_h2conn *c);

/* Appends raw bytes to the output, for nghttp2 send_data callbacks (which
 * hand over a frame header and payload to write in order). Returns 0 or
 * AL_ERR_NOMEM. */
int al_h2conn_append(struct al_h2conn *c, const uint8_t *d, size_t n);

/* Graceful close: GOAWAY with the last processed stream, close once every
 * open stream has ended. */
void al_h2conn_shutdown(struct al_h2conn *c);

/* Immediate close: on_close runs from the loop shortly, never inside this call. */
void al_h2conn_close(struct al_h2conn *c, int err);

/* Peer SPIFFE id ("" when none), connection id, peer address text. Borrowed. */
const char *al_h2conn_peer_id(const struct al_h2conn *c);
uint64_t al_h2conn_id(const struct al_h2conn *c);
const char *al_h2conn_peer_addr(const struct al_h2conn *c);
void *al_h2conn_user(const struct al_h2conn *c);
void al_h2conn_set_user(struct al_h2conn *c, void *user);
/* Nonzero once TLS/ALPN are done and the session exists. */
int al_h2conn_ready(const struct al_h2conn *c);

#endif
