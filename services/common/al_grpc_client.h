/*
 * al_grpc_client: gRPC calls from Airlock processes (unary and server
 * streaming) over one HTTP/2 connection per channel, TLS with a client
 * certificate or h2c.
 *
 * A channel connects on its first call and again after its connection is
 * lost; calls made while it connects wait for it. Each call ends with exactly
 * one on_done — unless the caller cancels it with al_grpc_ccall_cancel(), after
 * which no callback runs. Messages passed to on_message are freed when it
 * returns (copy what you keep).
 *
 * Lifecycle: al_grpc_channel_new() -> al_grpc_channel_call()... ->
 * al_grpc_channel_free() (pending calls end with CANCELLED first).
 */
#ifndef AL_GRPC_CLIENT_H
#define AL_GRPC_CLIENT_H

#include <stddef.h>

#include <ev.h>
#include <protobuf-c/protobuf-c.h>

#include "al_wipe.h"

struct al_tls;
struct al_grpc_channel;
struct al_grpc_ccall;

struct al_grpc_channel_opts {
    const char *target;       /* "host:port"; names resolved with c-ares, never blocking */
    struct al_tls *tls;       /* borrowed client context; NULL = h2c */
    const char *server_name;  /* certificate name/IP to verify; NULL = host of target */
    const char *expect_peer;  /* if set: server SPIFFE id must start with this */
    size_t max_message_bytes; /* 0 = 4 MiB */
    double connect_timeout_s; /* 0 = 10 s */
    double ping_interval_s;   /* keepalive PING when idle; 0 = off */
    const char *alpn;         /* NULL = "h2" */
};

struct al_grpc_md {
    const char *key; /* lower-case; "-bin" keys are base64-encoded for you */
    const void *value;
    size_t len;
};

struct al_grpc_ccall_cbs {
    void (*on_message)(struct al_grpc_ccall *cc, const ProtobufCMessage *msg, void *user);
    /* status is a gRPC code; message may be "" (never NULL). */
    void (*on_done)(struct al_grpc_ccall *cc, int status, const char *message, void *user);
};

/* Creates a channel (no connection yet). opts copied. Returns 0, AL_ERR_INVAL
 * (bad target) or AL_ERR_NOMEM. */
int al_grpc_channel_new(struct ev_loop *loop, const struct al_grpc_channel_opts *opts,
                        struct al_grpc_channel **out);

/* Every copy the client makes of a request, a response message or metadata
 * (bearer keys) is wiped before it is freed (al_wipe.h); messages handed to
 * on_message are freed, wiped, when it returns. */

/* Starts a call of `path` ("/pkg.Service/Method") with request `req` (packed
 * now; borrowed for the call only) expecting `resp_desc` messages. md is
 * copied. timeout_s > 0 sets grpc-timeout and a local deadline. The call
 * object is owned by the channel and valid until on_done returns. Returns 0,
 * AL_ERR_TOOBIG, AL_ERR_INVAL, AL_ERR_NOMEM or AL_ERR_CLOSED (the connection
 * took no more streams; the channel dials a new one for the next call): then
 * no callback runs. */
int al_grpc_channel_call(struct al_grpc_channel *ch, const char *path, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *resp_desc, const struct al_grpc_md *md,
                         size_t nmd, double timeout_s, const struct al_grpc_ccall_cbs *cbs,
                         void *user, struct al_grpc_ccall **out);

/* Cancels a call (RST_STREAM CANCEL); no callback runs after this. Allowed
 * inside the call's own on_done. */
void al_grpc_ccall_cancel(struct al_grpc_ccall *cc);

/* Trailer or header metadata of the response (valid inside on_done). */
const char *al_grpc_ccall_metadata(struct al_grpc_ccall *cc, const char *key, size_t *len);

/* Server SPIFFE id of the channel's current connection ("" if none). */
const char *al_grpc_channel_peer_id(const struct al_grpc_channel *ch);

/* Ends every call with CANCELLED, closes the connection, frees. NULL-safe. */
void al_grpc_channel_free(struct al_grpc_channel *ch);

/*
 * Blocking unary call on a private loop (for CLIs and tests). *resp gets the
 * response (free with protobuf_c_message_free_unpacked(*resp, &al_wipe_pb),
 * which wipes it; NULL frees without wiping) when
 * *status is OK. msg (size msglen) receives grpc-message. Returns 0 when the
 * call ran (look at *status) or a negative code when it could not start.
 */
int al_grpc_unary_sync(const struct al_grpc_channel_opts *opts, const char *path,
                       const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                       const struct al_grpc_md *md, size_t nmd, double timeout_s,
                       ProtobufCMessage **resp, int *status, char *msg, size_t msglen);

#endif
