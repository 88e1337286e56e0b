/*
 * egress: the objects of airlock-egress shared by its modules.
 *
 *   struct eg_proxy   the process: event loop, resolver, the TLS client
 *                     context for upstreams, --resolve overrides, the
 *                     control socket, the open jobs
 *   struct eg_job     one job (JobOpen .. JobClose): policy, credentials,
 *                     the placeholder detector and the response scrubber,
 *                     its CA, limits, listeners, connections, counters
 *                     (job.c)
 *   struct eg_conn    one connection from the job's sandbox (conn.c): the
 *                     outer HTTP/1.1 connection (absolute-form http
 *                     requests, CONNECT), then for a CONNECT either an
 *                     opaque tunnel (tunnel.c) or an intercepted TLS
 *                     connection with an inner HTTP/1.1 connection
 *                     (mitm.c)
 *   struct eg_req     one forwarded request, intercepted or plain http
 *                     (req.c): checks, substitution, upstream request,
 *                     scrubbed response, its Use record
 *
 * Ownership: the proxy owns its jobs; a job owns its connections and is
 * freed once it is closed and its last connection is gone (refs); a
 * connection owns its request. A connection that has to wait for its h1
 * object's on_close before it can go is "dying"; everything it holds except
 * that object is released at once, so JobClose wipes synchronously.
 */
#ifndef EG_EGRESS_H
#define EG_EGRESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <ev.h>
#include <openssl/ssl.h>

#include "al_resolve.h"
#include "ctl.h"
#include "h1.h"
#include "inject.h"
#include "quota.h"
#include "policy.h"
#include "rlbuf.h"
#include "sni.h"
#include "target.h"
#include "upstream.h"

#define EG_SERVICE       "airlock-egress"
#define EG_MAX_LISTEN    4
#define EG_MAX_DESTS     256
#define EG_OVERFLOW      16          /* connections past max_connections answered with 429 */
#define EG_PRECHECK      (64 * 1024) /* request body held back before the upstream starts */
#define EG_PATH_REC      1024        /* path bytes kept in a Use record */
#define EG_BUF           (64 * 1024) /* tunnel buffer per direction */
#define EG_HANDSHAKE_S   10.0        /* ClientHello and TLS handshake */
#define EG_STATIC_MAX    64
#define EG_HELLO_BUF_MAX (EG_HELLO_MAX + 16 * 1024) /* ClientHello and early bytes */

struct eg_job;
struct eg_conn;
struct eg_req;

/* A --resolve override: name -> addresses. */
struct eg_static {
    char name[EG_HOST_MAX];
    struct sockaddr_storage addr[AL_RESOLVE_MAX];
    socklen_t len[AL_RESOLVE_MAX];
    size_t n;
};

struct eg_proxy {
    struct ev_loop *loop;
    struct al_resolver *resolver;
    SSL_CTX *client_ctx; /* upstream TLS, shared */
    struct eg_static statics[EG_STATIC_MAX];
    size_t nstatics;
    double connect_timeout_s;
    struct eg_ctl *ctl;
    struct eg_job *jobs;
    struct eg_conn *dying; /* aborted, waiting for their h1 object's on_close */
    struct eg_conn *dead;  /* released: freed by reap */
    ev_timer reap;
    uint64_t next_conn;
};

/* A response scrubber shared by the responses streaming through it. */
struct eg_scrubset {
    int refs;
    struct rl_scrub *s;
};

struct eg_listener {
    ev_io io;
    int fd;
    struct eg_job *job;
};

struct eg_job {
    struct eg_proxy *p;
    struct eg_job *prev, *next;
    char *id, *principal, *pool, *grant_id;
    int closed;
    int refs; /* 1 while open, + 1 per connection not yet released */
    struct eg_dest *ceiling, *dests;
    size_t nceiling, ndests;
    struct eg_policy pol;
    struct eg_cred *creds;
    size_t ncreds;
    struct rl_scrub *detect;  /* placeholders; value i = creds[i] */
    struct eg_scrubset *resp; /* live values -> placeholders; NULL when none */
    struct eg_ca *ca;         /* NULL when nothing is intercepted */
    /* limits */
    size_t max_conns;
    struct eg_budget bytes;
    struct eg_bucket bucket;
    double idle_s, total_s; /* total 0 = none */
    struct eg_listener listeners[EG_MAX_LISTEN];
    size_t nlisteners;
    struct eg_conn *conns;
    size_t nconns, noverflow;
    int64_t n_conns, n_requests, n_bytes_up, n_bytes_down, n_denied, n_dropped;
    ev_timer expiry;
};

/* A Use record (proto Use), borrowed strings. */
struct eg_use {
    long cred; /* index into job->creds, -1 none */
    const char *destination;
    const char *method;
    const char *path; /* may hold a query: cut at '?' and at EG_PATH_REC */
    int status;
    int64_t req_bytes, resp_bytes;
    int allowed;
    const char *reason;
    int exfil;
    ev_tstamp t0; /* the request's head or the tunnel's start; 0 = refused at once */
};

enum eg_cstate {
    CS_H1,      /* outer HTTP/1.1 */
    CS_CONNECT, /* CONNECT accepted: resolving, dialling, then detaching */
    CS_HELLO,   /* 200 sent, reading the ClientHello */
    CS_TUNNEL,  /* opaque splice */
    CS_TLS,     /* intercept: TLS server handshake */
    CS_INNER,   /* intercept: inner HTTP/1.1 */
};

struct eg_conn {
    struct eg_proxy *p;
    struct eg_job *job;
    struct eg_conn *prev, *next;
    uint64_t id;
    enum eg_cstate st;
    int overflow; /* only answered 429 */
    int dying, released;
    struct rl_h1conn *h1; /* outer or inner; NULL once closed or detached */
    struct eg_req *req;
    ev_tstamp t_start, t_last, t_phase;
    ev_timer timer; /* total, idle, handshake and connect deadlines */
    ev_timer kick;  /* deferred CONNECT steps */
    ev_timer rkick; /* an answer known without a lookup, delivered from the loop */
    /* CONNECT */
    struct eg_authority target;
    char dest[EG_HOSTPORT_MAX];
    struct eg_reach reach;
    int intercept, body_done, reserved;
    struct al_resolve_req *rq;
    int resolved; /* 1 ok, < 0 failed */
    struct sockaddr_storage addr[AL_RESOLVE_MAX];
    socklen_t alen[AL_RESOLVE_MAX];
    size_t naddr, ai;
    char denied_addr[64]; /* the first denied address, for the reason */
    /* after detach / tunnel */
    int cfd, ufd;
    ev_io cio, uio;
    int cio_ev, uio_ev;
    struct rl_buf c2u, u2c; /* pending bytes each way */
    int c_eof, u_eof, c_shut, u_shut;
    int dialled;
    int close_after_flush;         /* a refusal is on its way to the client */
    SSL *ssl;                      /* intercept, until h1 owns it */
    uint64_t up_bytes, down_bytes; /* tunnel */
    /* requests' origin (intercept: the CONNECT target; plain: the last origin) */
    struct rl_upstream *up;
    struct eg_authority up_auth;
    int up_plain;
};

/* ---- job.c ---- */
/* Emits a Use record for job j. kind as eg_ctl_send. Counts denials. */
void eg_job_use(struct eg_job *j, const struct eg_use *u, enum eg_ctl_kind kind);
/* Charges n bytes against max_bytes; returns 0, or -1 when the job's budget
 * is used up (the caller stops the transfer). */
int eg_job_charge(struct eg_job *j, uint64_t n, int up);
int eg_job_bytes_left(const struct eg_job *j);
/* Takes a request token; 1 ok, 0 rate limited. */
int eg_job_take_token(struct eg_job *j);
struct eg_scrubset *eg_scrubset_ref(struct eg_scrubset *s);
void eg_scrubset_unref(struct eg_scrubset *s);
void eg_job_unref(struct eg_job *j);
int64_t eg_now_ms(const struct eg_proxy *p);

/* ---- conn.c ---- */
void eg_conn_accept(struct eg_job *j, int fd);
/* Ends the connection: whatever it holds is released now; reason for the
 * log and for the Use record of a request in flight. */
void eg_conn_abort(struct eg_conn *c, const char *reason);
/* Writes a complete proxy-made response on h1: text "airlock-egress:
 * <reason>" (keep: keep-alive). */
void eg_respond_text(struct rl_h1conn *h1, int status, const char *reason, int keep);
/* Shared h1 callbacks of outer and inner connections. */
extern const struct rl_h1conn_cbs eg_h1_cbs;
void eg_conn_touch(struct eg_conn *c);
void eg_conn_arm(struct eg_conn *c);
/* The inner HTTP/1.1 connection over fd and the finished TLS ssl (both
 * taken). Returns 0 or AL_ERR_NOMEM. */
int eg_conn_inner_h1(struct eg_conn *c, int fd, SSL *ssl);

/* ---- tunnel.c ---- */
/* Opaque: the connection has its client fd (detached) and a connected
 * upstream fd; send 200, check the ClientHello, splice. */
void eg_tunnel_start(struct eg_conn *c);
void eg_tunnel_io(struct eg_conn *c, int client, int revents);
/* Shared by tunnel and mitm: after 200, feeds the ClientHello check.
 * Returns 1 when it passed (c->c2u holds it), 0 to wait, -1 when the
 * connection was refused (and ended). */
int eg_hello_step(struct eg_conn *c);
void eg_tunnel_flush_client(struct eg_conn *c);

/* ---- mitm.c ---- */
void eg_mitm_start(struct eg_conn *c);
void eg_mitm_io(struct eg_conn *c);

/* ---- req.c ---- */
/* A request head on c->h1 (plain: absolute-form on the outer connection;
 * else inside an intercepted connection). Returns 0 or a negative code
 * (h1 then answers 500). */
int eg_req_start(struct eg_conn *c, const struct rl_h1_head *h, int plain);
void eg_req_body(struct eg_req *r, const uint8_t *d, size_t n);
void eg_req_body_end(struct eg_req *r);
void eg_req_writable(struct eg_req *r);
/* The connection goes: cancel and record (reason), free. */
void eg_req_abort(struct eg_req *r, const char *reason);
/* The origin for a plain request is ready (c->up set) or failed. */
void eg_req_origin_ready(struct eg_req *r, int err, const char *why);

/* ---- resolve.c ---- */
/* Resolves c->target (statics, literals, DNS), keeps the addresses the
 * ceiling allows in c->addr; calls eg_conn_resolved() from the loop. */
int eg_resolve_start(struct eg_conn *c, const struct eg_authority *a);
void eg_resolve_cancel(struct eg_conn *c);
void eg_conn_resolved(struct eg_conn *c);
/* Filters res into c->addr with the egress address policy. */
void eg_resolve_filter(struct eg_conn *c, const struct sockaddr_storage *a, const socklen_t *l,
                       size_t n);
/* A new upstream for origin a (addresses from c->addr). */
int eg_origin_new(struct eg_conn *c, const struct eg_authority *a, int plain);

#endif
