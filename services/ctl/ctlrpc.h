/*
 * ctlrpc: what airlockctl's gRPC commands share — the connection flags
 * (--addr, --identity, --cert/--key/--ca, --timeout), loading the mTLS
 * identity from $AIRLOCK_HOME/pki, a blocking unary call that prints a
 * failure with its gRPC status name, message and ErrorDetail reason, option
 * parsing with getopt_long, and small formatting helpers (times, durations,
 * protobuf messages as JSON).
 *
 * Lifecycle: ctl_rpc_open() -> ctl_rpc_call()... -> ctl_rpc_close(). One
 * struct ctl_rpc keeps one HTTP/2 connection on a private event loop, so a
 * command that pages or polls reuses it. Not thread-safe.
 */
#ifndef AL_CTL_RPC_H
#define AL_CTL_RPC_H

#include <getopt.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

struct ev_loop;

#define CTL_CREDSTORE_ADDR_DEFAULT "127.0.0.1:7410"
#define CTL_CREDSTORE_ADDR_ENV     "AIRLOCK_CREDSTORE_ADDR"
#define CTL_CREDSTORE_PEER         "spiffe://airlock/credstore/"

/* getopt_long codes of the connection flags (above any short option). */
enum {
    CTL_OPT_ADDR = 0x1000,
    CTL_OPT_IDENTITY,
    CTL_OPT_CERT,
    CTL_OPT_KEY,
    CTL_OPT_CA,
    CTL_OPT_TIMEOUT,
    CTL_OPT_FIRST_FREE /* commands number their own long-only flags from here */
};

/* The connection flags, to put first in a command's struct option table. */
/* clang-format off */
#define CTL_RPC_LONGOPTS                                                                           \
    {"addr", required_argument, NULL, CTL_OPT_ADDR},                                               \
    {"identity", required_argument, NULL, CTL_OPT_IDENTITY},                                       \
    {"cert", required_argument, NULL, CTL_OPT_CERT},                                               \
    {"key", required_argument, NULL, CTL_OPT_KEY},                                                 \
    {"ca", required_argument, NULL, CTL_OPT_CA},                                                   \
    {"timeout", required_argument, NULL, CTL_OPT_TIMEOUT}
/* clang-format on */

/* Connection settings; strings are borrowed from argv/environment. */
struct ctl_rpc_opts {
    const char *what;     /* command name for messages, e.g. "cred put" */
    const char *addr;     /* NULL = $AIRLOCK_CREDSTORE_ADDR, else the default */
    const char *identity; /* ROLE/NAME; NULL = default_identity */
    const char *default_identity;
    const char *cert, *key, *ca;
    double timeout_s; /* per call; > 0 */
    /* The service called; all NULL = the credstore (CTL_CREDSTORE_*). */
    const char *service;      /* name in --help, e.g. "intake" */
    const char *addr_env;     /* environment variable naming its address */
    const char *addr_default; /* address when neither --addr nor addr_env is set */
    int server_auth_only;     /* TLS without a client certificate (API key callers) */
};

/* Prints the "connection:" section of a --help (o's defaults) to stdout. */
void ctl_rpc_help(const struct ctl_rpc_opts *o);

/* Fills o with defaults for command `what` using identity default_identity. */
void ctl_rpc_opts_init(struct ctl_rpc_opts *o, const char *what, const char *default_identity,
                       double timeout_s);

/*
 * Applies connection flag c (a CTL_OPT_* code) with argument arg.
 * Returns 1 if c was one, 0 if it is not a connection flag, or
 * CTL_EXIT_USAGE after printing a usage error (bad --timeout).
 */
int ctl_rpc_opt(struct ctl_rpc_opts *o, int c, const char *arg);

/*
 * getopt_long over argv with the ":"-prefixed short options `shorts` and
 * table lo, without getopt's own messages; set optind = 0 before the first
 * call of a command (GNU: rescan from the start). Returns the next option code, -1
 * at the end, or '?' after printing a usage error for an unknown option or a
 * missing argument (then the caller returns CTL_EXIT_USAGE).
 */
int ctl_getopt(const char *what, int argc, char **argv, const char *shorts,
               const struct option *lo);

/*
 * Writes the certificate, key and CA paths of o into cert/key/ca (each of
 * size n): the explicit --cert/--key/--ca, or $AIRLOCK_HOME/pki/<role>-<name>.crt,
 * .key and ca.crt. Returns 0, or CTL_EXIT_USAGE / CTL_EXIT_FAIL after
 * printing why.
 */
int ctl_rpc_identity_paths(const struct ctl_rpc_opts *o, char *cert, char *key, char *ca, size_t n);

struct ctl_rpc;

/*
 * Loads the identity and prepares a channel to o->addr that only accepts a
 * server whose SPIFFE id starts with expect_peer (NULL: any verified peer).
 * Nothing connects until the first call. o is copied. Lowers the process's
 * log level to warn unless $AIRLOCK_LOG_LEVEL names one.
 * Returns 0 and *out, or a CTL_EXIT_* code after printing why.
 */
int ctl_rpc_open(const struct ctl_rpc_opts *o, const char *expect_peer, struct ctl_rpc **out);

/* Closes the connection and frees r. NULL is fine. */
void ctl_rpc_close(struct ctl_rpc *r);

/*
 * Calls path ("/pkg.Service/Method") with req (borrowed) and waits. On OK
 * *resp gets the response (free with ctl_rpc_free_resp). Otherwise prints
 *   airlockctl: <what>: <STATUS>: <grpc-message> [reason ERROR_REASON_X, field F]
 * to stderr and returns CTL_EXIT_FAIL; *status (may be NULL) gets the gRPC
 * status and *reason (may be NULL) the ErrorDetail reason (0 if none).
 * Set r's quiet flag (ctl_rpc_quiet) to skip the printing.
 * The response copy passes through a buffer that is cleansed afterwards, so
 * a Resolve value leaves no stray copy in this process's heap.
 */
int ctl_rpc_call(struct ctl_rpc *r, const char *path, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp, int *status,
                 int *reason);

/*
 * Sends `authorization: Bearer <key>` with every call (API key callers).
 * The key is copied into a buffer that is wiped by ctl_rpc_close. Returns 0
 * or CTL_EXIT_FAIL (out of memory, key with bytes not allowed in a header).
 */
int ctl_rpc_set_bearer(struct ctl_rpc *r, const char *key, size_t len);

/*
 * Server-streaming call: sends req, then runs on_msg for each response
 * message (borrowed, valid during the callback) until the stream ends or
 * on_msg returns non-zero (the call is then cancelled and counts as OK).
 * timeout_s 0 = no deadline (Watch-style streams). Failures are reported as
 * by ctl_rpc_call. Returns 0 or CTL_EXIT_FAIL; *status / *reason as there.
 */
int ctl_rpc_stream(struct ctl_rpc *r, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *desc, double timeout_s,
                   int (*on_msg)(const ProtobufCMessage *m, void *user), void *user, int *status,
                   int *reason);

/* The last failure of a call or stream on r ("STATUS: message [reason ...]"), or "". */
const char *ctl_rpc_last_error(const struct ctl_rpc *r);

/* r's event loop (e.g. to watch signals while a stream runs). */
struct ev_loop *ctl_rpc_loop(struct ctl_rpc *r);

/* Starts a unary call and does not wait for (or report) its outcome; it
 * completes while a later call or stream runs the loop (e.g. a Cancel sent
 * from a signal watcher during a Watch). */
void ctl_rpc_fire(struct ctl_rpc *r, const char *path, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *desc);

/* Stops ctl_rpc_call from printing failures (the caller reports them). */
void ctl_rpc_quiet(struct ctl_rpc *r, int quiet);

/* Frees a response of ctl_rpc_call after cleansing every bytes field. NULL-safe. */
void ctl_rpc_free_resp(ProtobufCMessage *m);

/* ---- formatting ---- */

/* Writes Unix ms t as "2025-01-31T12:34:56.789Z" (UTC) into buf, or "-" for 0. */
const char *ctl_fmt_time(int64_t ms, char *buf, size_t n);

/* Writes a duration in ms as e.g. "1h30m", "15m", "2.5s", "0s" into buf. */
const char *ctl_fmt_dur(int64_t ms, char *buf, size_t n);

/* Parses a duration: one or more <digits><unit> with unit ms, s, m, h or d
 * ("90s", "1h30m", "250ms"), or "0", into *ms. A bare number other than 0 is
 * refused (seconds or milliseconds would be a guess). Returns 0 or -1. */
int ctl_parse_dur(const char *s, int64_t *ms);

/* Parses a non-negative decimal integer into *v. Returns 0 or -1. */
int ctl_parse_i64(const char *s, int64_t *v);

/* Writes the lowercase hex of p[0..len) into out (size >= 2*len + 1). */
void ctl_hex(const uint8_t *p, size_t len, char *out);

/* Prints message m as one JSON object (field names as in the .proto, enums
 * by name, bytes as hex) and a newline to stdout. Returns 0 or CTL_EXIT_FAIL. */
int ctl_print_json(const ProtobufCMessage *m, int pretty);

/* Returns the enum value name ("CREDENTIAL_TYPE_BEARER_TOKEN") or "?". */
const char *ctl_enum_name(const ProtobufCEnumDescriptor *d, int v);

#endif
