/*
 * relay_agent_int: what the agent side's three files share.
 *
 *   relay_agent.c     the core: one struct rl_areq per agent request, its
 *                     checks, the gateway stream, body flow both ways,
 *                     sessions, keys, metrics, drain
 *   relay_agent_h2.c  HTTP/2 front: nghttp2 server callbacks on al_h2conn
 *   relay_agent_h1.c  HTTP/1.1 front: rl_h1conn callbacks
 *
 * A front turns its protocol's events into rl_areq_start / body / body_end
 * / detach calls, and the core answers through the front's rl_front_ops.
 * Response bytes wait in the request's out queue until the front hands them
 * to its connection (rl_areq_out / rl_areq_sent); only then does the core
 * reopen the gateway stream's window. Request bytes the core could not pass
 * on yet stay counted as unconsumed; the front reopens its receive window
 * (HTTP/2) or resumes reading (HTTP/1.1) as the core reports them consumed.
 *
 * Request lifetime: created by rl_areq_start() (which stores it in the
 * front's slot before doing anything that could call the front back), ended
 * by the front's one rl_areq_detach() call; the core never calls a front op
 * after it. A detach from inside a core call is deferred until that call
 * returns.
 */
#ifndef RL_AGENT_INT_H
#define RL_AGENT_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <ev.h>
#include <openssl/ssl.h>

#include "agentkeys.h"
#include "relay_agent.h"
#include "relay_agent_util.h"
#include "relay_session.h"
#include "rlbuf.h"

struct al_metric;
struct rl_listener;
struct rl_tstream;
struct rl_ah1;
struct rl_ah2;

/* One request header, as the fronts hand it to the core (lowercase name;
 * borrowed for the call). */
struct rl_hdr {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* A request head, as a front saw it. */
struct rl_areq_head {
    const char *method; /* NUL-terminated */
    const char *target; /* :path / request-target */
    size_t target_len;
    const struct rl_hdr *h;
    size_t n;
    int64_t content_length; /* -1 = none given */
    int end_stream;         /* no body follows */
    int head_too_large;     /* front saw more than max_head: answer 431 */
    const char *proto;      /* "h1" | "h2" (static) */
    uint64_t conn_id;       /* agent connection id */
    int32_t stream_id;      /* HTTP/2 stream, 0 for HTTP/1.1 */
    const char *peer;       /* "ip:port" */
};

struct rl_areq;

struct rl_front_ops {
    /* The response head: status, headers (lowercase names, already filtered;
     * borrowed for the call), content_length (-1 = unknown). Body bytes and
     * the end follow through kick. Returns 0 or a negative code (the core
     * then treats the agent side as failed). */
    int (*head)(struct rl_areq *r, int status, const struct rl_hdr *h, size_t n,
                int64_t content_length);
    /* The out queue grew or the response ended: send what the connection
     * takes now (rl_areq_out / rl_areq_sent), finish when rl_areq_resp_done(). */
    void (*kick)(struct rl_areq *r);
    /* The response cannot complete after its head went out: reset the
     * stream (HTTP/2) or close the connection (HTTP/1.1). */
    void (*abort)(struct rl_areq *r);
    /* n request body bytes were passed on (or discarded): reopen the
     * receive window (HTTP/2). */
    void (*consumed)(struct rl_areq *r, size_t n);
    /* Stop / restart the request body (HTTP/1.1: stop reading the socket;
     * HTTP/2: the body timer stops, the window does the rest). */
    void (*pause)(struct rl_areq *r);
    void (*resume)(struct rl_areq *r);
};

/* Key file state: the keys in effect and the file's identity when read. */
struct rl_keystate {
    char *path;
    struct rl_keys *keys;
    double checked;  /* ev_now of the last stat */
    struct stat sig; /* stat of the file the keys (or the last bad load) came from */
    int have_sig;
};

struct rl_agents {
    struct ev_loop *loop;
    struct rl_agents_opts o; /* strings below are our copies */
    char **origins;          /* NULL-terminated copy of allowed_origins */
    struct rl_keystate ks;
    struct rl_sessions *sessions;
    struct rl_listener *listener;
    void *h2cbs; /* nghttp2_session_callbacks * of the HTTP/2 front */
    struct rl_ah1 *h1conns;
    struct rl_ah2 *h2conns;
    size_t nconns, nh1, nh2;
    uint64_t next_conn_id;
    double refused_logged; /* ev_now of the last "connection limit" log line */
    int draining;
    ev_timer drain_timer;
    void (*drain_done)(void *user);
    void *drain_user;
    /* metrics */
    struct al_metric *m_conns_h1, *m_conns_h2, *m_conn_total_h1, *m_conn_total_h2, *m_refused;
    struct al_metric *m_bytes_in, *m_bytes_out, *m_sessions, *m_keys, *m_key_reload_fail;
    struct al_metric *m_duration;
};

/* ---- core, called by the fronts ---- */

/* Starts a request: stores it in *slot first, then checks and either opens
 * the gateway stream or answers locally (through ops). The front clears
 * *slot itself when it detaches. Returns 0 or AL_ERR_NOMEM (nothing was
 * made; the front answers 500 / resets). */
int rl_areq_start(struct rl_agents *ag, const struct rl_front_ops *ops, void *front,
                  const struct rl_areq_head *hd, struct rl_areq **slot);

/* Request body bytes (borrowed for the call) and their end. */
void rl_areq_body(struct rl_areq *r, const uint8_t *d, size_t n);
void rl_areq_body_end(struct rl_areq *r);

/* The request body made no progress for body_timeout (HTTP/2). */
void rl_areq_body_timeout(struct rl_areq *r);

/* Response bytes waiting for the front: *p and the count (0 = none now). */
size_t rl_areq_out(struct rl_areq *r, const uint8_t **p);
/* The front took n bytes from the out queue. */
void rl_areq_sent(struct rl_areq *r, size_t n);
/* 1 once the response is complete and the out queue empty. */
int rl_areq_resp_done(const struct rl_areq *r);

/* The front's object for r, as given to rl_areq_start. */
void *rl_areq_front(const struct rl_areq *r);

/* The front is done with r (stream closed, connection gone, response
 * finished): cancels the gateway stream if it still runs, records metrics
 * and the log line, frees r (later, if inside a core call). Returns the
 * request body bytes received but never reported consumed, so an HTTP/2
 * front can give them back to the connection window. */
size_t rl_areq_detach(struct rl_areq *r);

/* Accounting of agent connections (the fronts call these). */
uint64_t rl_agents_conn_opened(struct rl_agents *ag, int h2);
void rl_agents_conn_closed(struct rl_agents *ag, int h2);

/* ---- fronts ---- */

int rl_ah2_init(struct rl_agents *ag); /* builds ag->h2cbs */
void rl_ah2_cleanup(struct rl_agents *ag);
void rl_ah2_accept(struct rl_agents *ag, int fd, SSL *ssl, const char *peer);
void rl_ah2_drain_all(struct rl_agents *ag);
void rl_ah2_close_all(struct rl_agents *ag);

void rl_ah1_accept(struct rl_agents *ag, int fd, SSL *ssl, const char *peer);
void rl_ah1_drain_all(struct rl_agents *ag);
void rl_ah1_close_all(struct rl_agents *ag);

#endif
