/*
 * al_grpc: gRPC over HTTP/2 (server side), interoperable with stock clients.
 *
 * Wire contract (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md):
 * POST with content-type application/grpc[+proto] (HTTP 415 otherwise);
 * 5-byte length-prefixed protobuf messages reassembled across DATA frames;
 * messages over max_message_bytes get RESOURCE_EXHAUSTED; compressed messages
 * are refused with UNIMPLEMENTED; grpc-status / grpc-message trailers, and
 * Trailers-Only responses for early errors; grpc-timeout deadlines end the
 * call with DEADLINE_EXCEEDED; unknown methods get UNIMPLEMENTED.
 *
 * Services are registered from protobuf-c service descriptors; each method
 * gets a handler. A handler may answer at once or later, from any event on the
 * same loop (asynchronous): the call object stays valid until the handler ends
 * it with al_grpc_call_finish() (or al_grpc_call_reply()), even if the client
 * cancelled, the deadline passed or the connection died meanwhile; sends to a
 * call whose stream is gone are dropped and return AL_ERR_CLOSED. Every call
 * must be finished exactly once.
 *
 * The request message is unpacked into a per-call arena and freed with it.
 *
 * Lifecycle: al_grpc_server_new() -> al_grpc_server_add_service()... ->
 * al_grpc_server_start() -> [al_grpc_server_shutdown()] -> al_grpc_server_free().
 */
#ifndef AL_GRPC_H
#define AL_GRPC_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <protobuf-c/protobuf-c.h>

#include "al_arena.h"

struct al_tls;
struct al_metrics;

/* gRPC status codes. */
enum al_grpc_status {
    AL_GRPC_OK = 0,
    AL_GRPC_CANCELLED = 1,
    AL_GRPC_UNKNOWN = 2,
    AL_GRPC_INVALID_ARGUMENT = 3,
    AL_GRPC_DEADLINE_EXCEEDED = 4,
    AL_GRPC_NOT_FOUND = 5,
    AL_GRPC_ALREADY_EXISTS = 6,
    AL_GRPC_PERMISSION_DENIED = 7,
    AL_GRPC_RESOURCE_EXHAUSTED = 8,
    AL_GRPC_FAILED_PRECONDITION = 9,
    AL_GRPC_ABORTED = 10,
    AL_GRPC_OUT_OF_RANGE = 11,
    AL_GRPC_UNIMPLEMENTED = 12,
    AL_GRPC_INTERNAL = 13,
    AL_GRPC_UNAVAILABLE = 14,
    AL_GRPC_DATA_LOSS = 15,
    AL_GRPC_UNAUTHENTICATED = 16
};

/* Canonical upper-case name of a status code ("OK", "NOT_FOUND", ...). */
const char *al_grpc_status_name(int code);

struct al_grpc_server;
struct al_grpc_call;

/* A method handler. `req` lives in the call's arena until the call is freed. */
typedef void (*al_grpc_handler_cb)(struct al_grpc_call *call, const ProtobufCMessage *req,
                                   void *user);
/* Runs once when the call's stream ends before the handler finished it
 * (client cancel, deadline, connection loss). The call is still valid; the
 * handler must still finish it (it may do so right here). */
typedef void (*al_grpc_cancel_cb)(struct al_grpc_call *call, void *user);
/* Runs when a call's buffered output falls below its low-water mark. */
typedef void (*al_grpc_writable_cb)(struct al_grpc_call *call, void *user);

struct al_grpc_method_impl {
    const char *name;      /* method name as in the .proto, e.g. "Submit" */
    al_grpc_handler_cb cb; /* NULL = UNIMPLEMENTED */
    int sensitive;         /* requests or responses carry secrets: see
                              al_grpc_call_set_sensitive(); set before any byte arrives */
};

struct al_grpc_server_opts {
    const char *listen;              /* "host:port" (numeric; port 0 = any) */
    struct al_tls *tls;              /* borrowed server context; NULL = h2c */
    int insecure;                    /* must be 1 when tls is NULL (explicit opt-in) */
    int require_client_cert;         /* close connections without a SPIFFE identity */
    size_t max_message_bytes;        /* per message, both directions; 0 = 4 MiB */
    uint32_t max_concurrent_streams; /* per connection; 0 = 1000 */
    size_t max_connections;          /* 0 = 4096 */
    double drain_timeout_s;          /* shutdown: force-close after this; 0 = 30 s */
    struct al_metrics *metrics;      /* borrowed; NULL = no metrics */
};

/* Creates a server (not yet listening). opts is copied. Returns 0, AL_ERR_INVAL
 * (tls NULL without insecure) or AL_ERR_NOMEM. */
int al_grpc_server_new(struct ev_loop *loop, const struct al_grpc_server_opts *opts,
                       struct al_grpc_server **out);

/* Registers a service: impls names methods of `desc` (borrowed; static). A
 * method of desc missing from impls answers UNIMPLEMENTED. Returns 0,
 * AL_ERR_INVAL for a name that is not a method of desc, AL_ERR_NOMEM. */
int al_grpc_server_add_service(struct al_grpc_server *s, const ProtobufCServiceDescriptor *desc,
                               const struct al_grpc_method_impl *impls, size_t n, void *user);

/* Binds and starts accepting. Returns 0 or -errno / AL_ERR_INVAL. */
int al_grpc_server_start(struct al_grpc_server *s);

/* The bound port (after start). */
int al_grpc_server_port(const struct al_grpc_server *s);

/* Graceful shutdown: stop accepting, GOAWAY every connection, health NOT_SERVING;
 * `done` runs once every connection has closed (or the drain timeout passed). */
void al_grpc_server_shutdown(struct al_grpc_server *s, void (*done)(void *user), void *user);

/* Sends at once what calls answered since the last loop turn have queued.
 * Without it their frames leave in the next loop turn, batched per
 * connection (al_h2conn_flush); a handler that answers a group of parked
 * calls from inside another connection's request (so that turn may take a
 * while) calls it after the group. Connections inside their own receive
 * send right after it, as always. */
void al_grpc_server_flush(struct al_grpc_server *s);

/* Number of open connections and calls (tests, readiness). */
size_t al_grpc_server_connections(const struct al_grpc_server *s);

void al_grpc_server_free(struct al_grpc_server *s);

/* --- per call --- */

/* Full method path "/pkg.Service/Method". Borrowed for the call's life. */
const char *al_grpc_call_path(const struct al_grpc_call *c);
/* Peer SPIFFE id from its client certificate, "" over h2c / without one. */
const char *al_grpc_call_peer_id(const struct al_grpc_call *c);
/* Request metadata value for a lower-case key, or NULL. For "-bin" keys the
 * value is base64-decoded and *len says its size. Borrowed for the call's life. */
const char *al_grpc_call_metadata(struct al_grpc_call *c, const char *key, size_t *len);
/* Absolute deadline on the loop clock (ev_now), 0 = none. */
double al_grpc_call_deadline(const struct al_grpc_call *c);
/* The call's arena, for data that should live exactly as long as the call. */
struct al_arena *al_grpc_call_arena(struct al_grpc_call *c);
/* Nonzero once the stream is gone (cancelled, deadline, connection lost). */
int al_grpc_call_cancelled(const struct al_grpc_call *c);
/* Per-call user pointer for handlers. */
void al_grpc_call_set_user(struct al_grpc_call *c, void *user);
void *al_grpc_call_user(const struct al_grpc_call *c);
/* Connection id and stream id, for logs. */
uint64_t al_grpc_call_conn_id(const struct al_grpc_call *c);
int32_t al_grpc_call_stream_id(const struct al_grpc_call *c);

/* Marks the call as carrying secrets (a credential value in the request or
 * the response): its buffers and arena are zeroed as they are consumed and
 * freed. Call it first thing in the handler. */
void al_grpc_call_set_sensitive(struct al_grpc_call *c);

void al_grpc_call_on_cancel(struct al_grpc_call *c, al_grpc_cancel_cb cb, void *user);

/* Adds response metadata (before the first message) or trailer metadata.
 * key must be lower-case; "-bin" values are base64-encoded here. Copies.
 * Returns 0, AL_ERR_STATE (headers already sent), AL_ERR_INVAL, AL_ERR_NOMEM. */
int al_grpc_call_add_header(struct al_grpc_call *c, const char *key, const void *val, size_t len);
int al_grpc_call_add_trailer(struct al_grpc_call *c, const char *key, const void *val, size_t len);

/* Queues one response message (packed and copied now). Returns 0,
 * AL_ERR_CLOSED (stream gone; nothing sent), AL_ERR_STATE (already finished),
 * AL_ERR_TOOBIG (over max_message_bytes), AL_ERR_NOMEM. */
int al_grpc_call_send(struct al_grpc_call *c, const ProtobufCMessage *msg);

/* Bytes queued but not yet handed to HTTP/2; and a callback for when that
 * drops to `low` or below (server streaming back-pressure). */
size_t al_grpc_call_pending(const struct al_grpc_call *c);
void al_grpc_call_on_writable(struct al_grpc_call *c, size_t low, al_grpc_writable_cb cb,
                              void *user);

/* Ends the call with a status and message (message may be NULL; any UTF-8,
 * percent-encoded on the wire). After this the handler must not touch the
 * call. Returns 0 (also when the stream is already gone). */
int al_grpc_call_finish(struct al_grpc_call *c, int status, const char *message);

/* Unary convenience: send msg then finish OK; on a send error finishes with
 * RESOURCE_EXHAUSTED or INTERNAL. Returns what al_grpc_call_send returned. */
int al_grpc_call_reply(struct al_grpc_call *c, const ProtobufCMessage *msg);

/*
 * Message framing: 1 flag byte (bit 0 = compressed), 4-byte big-endian length,
 * then the message. al_grpc_frame_next() looks at buf[0..len) and returns the
 * bytes one complete message takes (> 0; *msg and *msglen point into buf and
 * *compressed tells the flag), 0 when more bytes are needed, AL_ERR_TOOBIG
 * when the announced length is over max (known as soon as the prefix is in),
 * or AL_ERR_PROTO for unknown flag bits.
 */
long al_grpc_frame_next(const uint8_t *buf, size_t len, size_t max, const uint8_t **msg,
                        size_t *msglen, int *compressed);
/* Writes the 5-byte prefix of an uncompressed message of msglen bytes. */
void al_grpc_frame_prefix(uint8_t out[5], size_t msglen);

/* Parses a grpc-timeout header value ("100m", "5S"...) into seconds.
 * Returns 0 or AL_ERR_INVAL. */
int al_grpc_parse_timeout(const char *v, size_t len, double *seconds);

/* Percent-encodes a grpc-message value into buf (size n, NUL-terminated, cut
 * at a character boundary when too long). Returns the length written. */
size_t al_grpc_encode_message(const char *msg, char *buf, size_t n);
/* Decodes a percent-encoded grpc-message in place; returns the new length. */
size_t al_grpc_decode_message(char *s, size_t len);

#endif
