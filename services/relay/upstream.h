/*
 * upstream: the gateway's HTTP/1.1 client to one private MCP server (one
 * gateway route), with the address policy that keeps a route from being
 * pointed at the gateway's own host, the cloud metadata service or other
 * internal ranges by DNS.
 *
 * Address policy. The route's host is resolved with al_resolve (never
 * blocking the loop), once per new connection; every address is checked and
 * the connection dials a checked address (never the name again). Denied
 * unless the route's `allow` list covers them (CIDR "10.1.2.0/24",
 * "127.0.0.1/32", "::1/128"; a URL that spells an IP literal gets no
 * implicit exception):
 *   IPv4: 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16 (link-local, including the
 *   metadata address 169.254.169.254), 100.64.0.0/10 (CGNAT),
 *   192.0.0.0/24, 198.18.0.0/15, 224.0.0.0/4, 240.0.0.0/4 (which includes
 *   255.255.255.255);
 *   IPv6: ::/128, ::1/128, fe80::/10, ff00::/8, 64:ff9b::/96 and
 *   64:ff9b:1::/48 (NAT64), 2002::/16 (6to4), 2001::/32 (Teredo),
 *   ::ffff:0:0/96 (IPv4-mapped), ::/96 (IPv4-compatible), fd00:ec2::254 (AWS
 *   metadata over IPv6). Forms that embed an IPv4 address (mapped,
 *   compatible, NAT64, 6to4, Teredo) are also judged by that address, so an
 *   allow entry for the IPv6 range never lets an embedded loopback through.
 * Private RFC 1918 ranges are allowed: private MCP servers live there.
 * A name whose every address is denied fails the request with
 * AL_ERR_AUTH ("upstream address denied"). The egress proxy opts into a
 * stricter policy (rl_addr_denied_ex flags: private ranges denied unless
 * allowed, the ranges above never re-opened), dials addresses it resolved
 * itself (opts.addrs) and shares one TLS client context (opts.ssl_ctx).
 *
 * Requests. rl_ureq_start() takes a pooled idle keep-alive connection to the
 * route's origin or opens a new one (TCP, then TLS 1.2+ with the server's
 * certificate verified against ca_file or the system store and its name
 * checked), writes the head and streams the body. The response head, then
 * body bytes (chunked framing removed) and the end arrive by callback;
 * rl_ureq_pause()/resume() stop and restart reading the response
 * (backpressure from the agent side). A response that ends cleanly with a
 * reusable connection returns it to the pool. Limits: response head size,
 * connect timeout, time to the response head, idle time between body bytes.
 * A response with a Content-Encoding other than identity is refused
 * (AL_ERR_PROTO): it could not be scrubbed.
 *
 * Lifecycle: rl_upstream_new() -> rl_ureq_start()... (each request ends with
 * exactly one on_end or on_error, or is cancelled by the caller, after which
 * no callback runs) -> rl_upstream_free() (cancels what is in flight
 * silently).
 */
#ifndef RL_UPSTREAM_H
#define RL_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <ev.h>
#include <openssl/ssl.h>

#include "h1.h"

struct al_resolver;

#define RL_UPSTREAM_MAX_ALLOW 32

/* 1 when the policy denies address sa (see above) and no entry of allow
 * covers it; 0 when it may be dialed. */
struct rl_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned prefix;
};
int rl_cidr_parse(const char *s, struct rl_cidr *out); /* 0 or AL_ERR_INVAL */
int rl_addr_denied(const struct sockaddr *sa, const struct rl_cidr *allow, size_t nallow);

/* Flags of rl_addr_denied_ex() (opt-in; the gateway uses none).
 * RL_ADDR_DENY_PRIVATE: 10/8, 172.16/12, 192.168/16, fc00::/7 and fec0::/10
 * are denied too unless an allow entry covers them. RL_ADDR_NO_OVERRIDE:
 * allow entries never re-open the ranges listed above. */
#define RL_ADDR_DENY_PRIVATE 0x1u
#define RL_ADDR_NO_OVERRIDE  0x2u
/* As rl_addr_denied() with flags; rl_addr_denied() is flags 0. */
int rl_addr_denied_ex(const struct sockaddr *sa, const struct rl_cidr *allow, size_t nallow,
                      unsigned flags);

struct rl_upstream_opts {
    const char *url;             /* "http://host[:port][/base]" or "https://..." (copied) */
    const char *ca_file;         /* https: CA bundle; NULL = the system store */
    const struct rl_cidr *allow; /* copied */
    size_t nallow;
    struct al_resolver *resolver; /* borrowed; must outlive the upstream (NULL with addrs) */
    double connect_timeout_s;     /* TCP + TLS; 0 = 5 s */
    double head_timeout_s;        /* request sent -> response head; 0 = 60 s */
    double idle_timeout_s;        /* between response body bytes; 0 = 300 s */
    double pool_idle_s;           /* idle pooled connection kept; 0 = 30 s */
    size_t max_idle;              /* pooled connections kept; 0 = 32 */
    size_t max_head;              /* response head bytes; 0 = 64 KiB */

    /* Opt-in (the egress proxy; the gateway leaves them zero). addr_flags:
     * RL_ADDR_* for rl_addr_denied_ex(). addrs: addresses already resolved
     * and checked by the caller (at most AL_RESOLVE_MAX, copied): every new
     * connection dials these in order and never resolves the URL's host,
     * which stays the TLS name (SNI, certificate check) and the Host; each
     * is checked against the address policy again. ssl_ctx (https): a
     * client context from rl_upstream_client_ctx() used instead of building
     * one from ca_file (the upstream takes a reference). */
    unsigned addr_flags;
    const struct sockaddr_storage *addrs;
    const socklen_t *addr_lens;
    size_t naddrs;
    SSL_CTX *ssl_ctx;
};

struct rl_upstream;
struct rl_ureq;

struct rl_ureq_cbs {
    /* Response head (1xx interim responses are skipped). Header names are
     * lowercased; strings borrowed for the call. */
    void (*on_head)(struct rl_ureq *r, int status, const struct rl_h1_header *h, size_t n,
                    void *user);
    /* Response body bytes, borrowed for the call. */
    void (*on_data)(struct rl_ureq *r, const uint8_t *d, size_t n, void *user);
    /* Response complete. The request is finished; r is freed after return. */
    void (*on_end)(struct rl_ureq *r, void *user);
    /* Failure before or during the response: AL_ERR_AUTH (every address
     * denied), AL_ERR_NOTFOUND (name does not resolve), AL_ERR_TIMEOUT,
     * AL_ERR_TLS, AL_ERR_PROTO (malformed response or encoded body),
     * AL_ERR_TOOBIG, -errno (connect refused ...). why is a short text safe
     * to show an agent. r is freed after return. */
    void (*on_error)(struct rl_ureq *r, int err, const char *why, void *user);
    /* Queued request body bytes fell to the low-water mark. */
    void (*on_writable)(struct rl_ureq *r, void *user);
};

/* Parses the URL and prepares the origin. Returns 0, AL_ERR_INVAL (bad URL:
 * scheme other than http/https, userinfo, fragment, bad port) or
 * AL_ERR_TLS / AL_ERR_NOMEM. */
int rl_upstream_new(struct ev_loop *loop, const struct rl_upstream_opts *o,
                    struct rl_upstream **out);
void rl_upstream_free(struct rl_upstream *u);

/* The TLS client context an upstream builds for itself (TLS 1.2+, forward-
 * secret AEAD suites, peer verification against ca_file or the system
 * store, ALPN http/1.1, plaintext cleansed), for sharing between many
 * upstreams through rl_upstream_opts.ssl_ctx. Returns 0 (SSL_CTX_free it)
 * or AL_ERR_TLS / AL_ERR_NOMEM. */
int rl_upstream_client_ctx(const char *ca_file, SSL_CTX **out);

/* "host[:port]" of the origin as credstore destinations spell it
 * ("http://host:port" for plain http), and the base path ("/mcp"). */
const char *rl_upstream_destination(const struct rl_upstream *u);
const char *rl_upstream_base_path(const struct rl_upstream *u);
/* The Host header value to send. */
const char *rl_upstream_host(const struct rl_upstream *u);

/* Starts a request. method, target (origin-form path + query, copied) and
 * headers h (copied; the client adds Host unless given, Content-Length or
 * Transfer-Encoding, and Connection: keep-alive; it refuses hop-by-hop
 * names from the caller). content_length: -1 = unknown (chunked), 0 = no
 * body. Returns 0 (callbacks will follow, never inside this call) or
 * AL_ERR_INVAL / AL_ERR_NOMEM (no callback). */
int rl_ureq_start(struct rl_upstream *u, const char *method, const char *target,
                  const struct rl_h1_header *h, size_t n, int64_t content_length,
                  const struct rl_ureq_cbs *cbs, void *user, struct rl_ureq **out);

/* Request body bytes (copied) and its end. Return 0, AL_ERR_STATE, or
 * AL_ERR_TOOBIG when more than 1 MiB is queued (wait for on_writable). */
int rl_ureq_write(struct rl_ureq *r, const uint8_t *d, size_t n);
int rl_ureq_end(struct rl_ureq *r);
size_t rl_ureq_pending(const struct rl_ureq *r);
void rl_ureq_want_writable(struct rl_ureq *r, size_t low);

/* Response flow control. */
void rl_ureq_pause(struct rl_ureq *r);
void rl_ureq_resume(struct rl_ureq *r);

/* Aborts the request (its connection is closed, not pooled); no callback
 * runs afterwards; r is freed. */
void rl_ureq_cancel(struct rl_ureq *r);

#endif
