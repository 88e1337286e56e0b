/*
 * al_resolve: asynchronous name resolution with c-ares on the libev loop, so
 * resolving a name never blocks an event loop.
 *
 * A resolver owns one c-ares channel and the watchers of its sockets. A
 * request ends with exactly one callback, unless it is cancelled first (then
 * none runs). Numeric addresses and "localhost" are answered without a
 * lookup, from the loop (never inside al_resolve()).
 *
 * Lifecycle: al_resolver_new() -> al_resolve()... -> al_resolver_free()
 * (pending requests are cancelled silently).
 */
#ifndef AL_RESOLVE_H
#define AL_RESOLVE_H

#include <stddef.h>
#include <sys/socket.h>

#include <ev.h>

#define AL_RESOLVE_MAX 16 /* addresses kept per answer */

struct al_resolver;
struct al_resolve_req;

struct al_resolve_result {
    size_t n;
    struct sockaddr_storage addr[AL_RESOLVE_MAX];
    socklen_t len[AL_RESOLVE_MAX];
};

/* status: 0 (res has n >= 1 addresses, borrowed for the callback only),
 * AL_ERR_NOTFOUND (no such name / no addresses), AL_ERR_TIMEOUT, or another
 * negative code. */
typedef void (*al_resolve_cb)(struct al_resolve_req *req, int status,
                              const struct al_resolve_result *res, void *user);

/* Returns 0 or AL_ERR_NOMEM / AL_ERR_INVAL (c-ares could not start). */
int al_resolver_new(struct ev_loop *loop, struct al_resolver **out);
void al_resolver_free(struct al_resolver *r);

/* Uses these DNS servers ("127.0.0.1:5353,[::1]:53") instead of
 * /etc/resolv.conf's. Returns 0 or AL_ERR_INVAL. */
int al_resolver_set_servers(struct al_resolver *r, const char *csv);

/* Resolves host (IPv4 and IPv6) and fills port into every address. host is
 * copied. Returns 0 (the callback will run from the loop) or AL_ERR_INVAL /
 * AL_ERR_NOMEM (no callback). *out may be NULL. */
int al_resolve(struct al_resolver *r, const char *host, int port, al_resolve_cb cb, void *user,
               struct al_resolve_req **out);

/* Cancels a pending request: its callback will not run. */
void al_resolve_cancel(struct al_resolve_req *req);

/* Splits "host:port" / "[v6]:port" into host (size hn) and port. Returns 0 or
 * AL_ERR_INVAL. */
int al_split_hostport(const char *hostport, char *host, size_t hn, int *port);

#endif
