/*
 * relay_agent: the core of the relay's agent side (see relay_agent.h for the
 * contract, relay_agent_int.h for how the fronts plug in).
 *
 * Request checklist (rl_areq_start): method -> route -> Origin (and CORS
 * preflight) -> API key -> tunnel configured -> body size -> MCP session
 * owner -> relay not draining -> strip headers -> rl_tstream_open. Each
 * refusal is a local JSON-RPC error response.
 *
 * Flow control. Request: body bytes go to rl_tstream_write() while the
 * gateway stream's queue stays under IN_HIGH; the rest waits in in_pend,
 * the front is paused, and resumes when the stream's on_writable drains it;
 * the front's window reopens (consumed) only for bytes the stream accepted.
 * Response: gateway bytes wait in the out queue until the front hands them
 * to its connection; rl_tstream_consume() follows rl_areq_sent(), so a slow
 * agent closes the gateway stream's window instead of growing memory.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "al_arena.h"
#include "al_err.h"
#include "al_log.h"
#include "al_metrics.h"
#include "h1.h"
#include "mcp.h"
#include "relay_agent_int.h"
#include "relay_tunnel.h"

#define IN_HIGH      (512 * 1024)       /* gateway stream queue we fill up to */
#define IN_LOW       (128 * 1024)       /* ... and refill below */
#define OUT_MAX      (16 * 1024 * 1024) /* response bytes held for one request */
#define MAX_FWD      128                /* request headers forwarded */
#define KEYS_CHECK_S 1.0                /* key file stat at most this often */
#define CORS_METHODS "POST, GET, DELETE"
#define CORS_HEADERS                                                                               \
    "authorization, content-type, accept, mcp-session-id, mcp-protocol-version, "                  \
    "mcp-method, mcp-name, last-event-id"
#define CORS_EXPOSE "mcp-session-id, mcp-protocol-version, x-request-id, www-authenticate"

/* JSON-RPC codes (tunnel.proto); -32603 is JSON-RPC's own internal error */
#define ERR_INVALID   RL_MCP_ERR_INVALID
#define ERR_INTERNAL  (-32603)
#define ERR_DENIED    RL_MCP_ERR_DENIED
#define ERR_UPSTREAM  RL_MCP_ERR_UPSTREAM
#define ERR_UNAVAIL   RL_MCP_ERR_UNAVAILABLE
#define ERR_NOT_FOUND RL_MCP_ERR_NOT_FOUND

/* Response bytes waiting for the agent side: [off, len) of p. */
struct outq {
    uint8_t *p;
    size_t off, len, cap;
};

struct rl_areq {
    struct rl_agents *ag;
    const struct rl_front_ops *ops; /* NULL once detached */
    void *front;
    struct rl_areq **slot;
    const char *proto;
    uint64_t conn_id;
    int32_t stream_id;
    char id[RL_REQUEST_ID_LEN + 1];
    char method[8];
    char tunnel_label[RL_NAME_MAX + 1]; /* configured tunnel or "-" */
    struct rl_route rt;
    char principal[RL_PRINCIPAL_MAX + 1];
    char key_id[RL_KEY_ID_LEN + 1];
    char origin[RL_ORIGIN_MAX + 1];
    int cors; /* an allowed Origin came with the request */
    char session[RL_SESSION_ID_MAX + 1];
    size_t session_len;
    struct rl_tstream *ts;
    uint64_t gw_conn;
    /* request body */
    struct rl_buf in_pend;
    size_t unconsumed; /* received, not yet reported to ops->consumed */
    uint64_t body_bytes;
    int req_done, req_end_sent, discard, paused;
    /* response */
    struct outq out;
    int head_sent, resp_end, aborted, resp_dropped;
    int status;
    const char *reason; /* airlock-error of a local answer, for the log line */
    uint64_t bytes_out;
    double start;
    int busy, detached;
};

static void ts_on_head(struct rl_tstream *s, int status, const nghttp2_nv *nv, size_t n,
                       void *user);
static void ts_on_data(struct rl_tstream *s, const uint8_t *d, size_t n, void *user);
static void ts_on_end(struct rl_tstream *s, void *user);
static void ts_on_error(struct rl_tstream *s, int err, int head_seen, void *user);
static void ts_on_writable(struct rl_tstream *s, void *user);

static const struct rl_tstream_cbs ts_cbs = {
    .on_head = ts_on_head,
    .on_data = ts_on_data,
    .on_end = ts_on_end,
    .on_error = ts_on_error,
    .on_writable = ts_on_writable,
};

/* ---------- small helpers ---------- */

static int64_t now_ms(const struct rl_agents *ag)
{
    (void)ag;
    return (int64_t)(ev_time() * 1000.0); /* wall clock: key expiry and session idle times */
}

static void areq_free(struct rl_areq *r)
{
    rl_buf_cleanup(&r->in_pend);
    if (r->out.p) {
        explicit_bzero(r->out.p, r->out.cap);
        free(r->out.p);
    }
    free(r);
}

static void enter(struct rl_areq *r)
{
    r->busy++;
}

/* Returns 1 when r is gone (detached and freed): the caller must not touch it. */
static int leave(struct rl_areq *r)
{
    if (--r->busy > 0 || !r->detached)
        return 0;
    areq_free(r);
    return 1;
}

static int out_append(struct outq *q, const uint8_t *d, size_t n)
{
    if (q->off && q->off == q->len)
        q->off = q->len = 0;
    if (q->len + n > q->cap) {
        size_t live = q->len - q->off;
        if (live + n > OUT_MAX)
            return AL_ERR_TOOBIG;
        if (q->off && live + n <= q->cap) { /* compact in place */
            memmove(q->p, q->p + q->off, live);
            explicit_bzero(q->p + live, q->len - live);
            q->off = 0;
            q->len = live;
        } else {
            size_t cap = q->cap ? q->cap : 16384;
            while (cap < live + n)
                cap *= 2;
            uint8_t *p = malloc(cap);
            if (!p)
                return AL_ERR_NOMEM;
            if (live)
                memcpy(p, q->p + q->off, live);
            if (q->p) {
                explicit_bzero(q->p, q->cap);
                free(q->p);
            }
            q->p = p;
            q->cap = cap;
            q->off = 0;
            q->len = live;
        }
    }
    memcpy(q->p + q->len, d, n);
    q->len += n;
    return 0;
}

static void consumed(struct rl_areq *r, size_t n)
{
    if (n > r->unconsumed)
        n = r->unconsumed;
    if (!n)
        return;
    r->unconsumed -= n;
    if (r->ops)
        r->ops->consumed(r, n);
}

/* Stops forwarding the request body: what waits is dropped and reported
 * consumed, and later bytes are consumed as they come. */
static void discard_body(struct rl_areq *r)
{
    r->discard = 1;
    rl_buf_reset(&r->in_pend);
    consumed(r, r->unconsumed);
    if (r->paused && r->ops) {
        r->paused = 0;
        r->ops->resume(r);
    }
}

static void add_hdr(struct rl_hdr *h, size_t *n, const char *name, const char *value, size_t vlen)
{
    h[*n].name = name;
    h[*n].name_len = strlen(name);
    h[*n].value = value;
    h[*n].value_len = vlen;
    (*n)++;
}

/* x-request-id and, for an allowed Origin, the CORS response headers. */
static void add_common_hdrs(struct rl_areq *r, struct rl_hdr *h, size_t *n)
{
    add_hdr(h, n, "x-request-id", r->id, strlen(r->id));
    if (r->cors) {
        add_hdr(h, n, "access-control-allow-origin", r->origin, strlen(r->origin));
        add_hdr(h, n, "access-control-expose-headers", CORS_EXPOSE, strlen(CORS_EXPOSE));
        add_hdr(h, n, "vary", "origin", 6);
    }
}

/* A response the relay makes itself: JSON-RPC error body, airlock-error.
 * extra_name/extra_value add one header (WWW-Authenticate, Allow). */
static void respond_error(struct rl_areq *r, int status, int code, const char *reason,
                          const char *msg, const char *extra_name, const char *extra_value)
{
    struct rl_buf body;
    struct rl_hdr h[12];
    size_t n = 0;
    int rc;

    discard_body(r);
    if (!r->ops || r->head_sent)
        return;
    rl_buf_init(&body, 4096);
    rc = rl_error_body(code, msg, reason, &body);
    if (rc == 0)
        rc = out_append(&r->out, body.p, body.len);
    add_hdr(h, &n, "content-type", "application/json", 16);
    add_hdr(h, &n, "airlock-error", reason, strlen(reason));
    add_hdr(h, &n, "cache-control", "no-store", 8);
    if (extra_name)
        add_hdr(h, &n, extra_name, extra_value, strlen(extra_value));
    add_common_hdrs(r, h, &n);
    r->status = status;
    r->reason = reason;
    r->head_sent = 1;
    r->resp_end = 1;
    if (rc < 0) {
        r->out.off = r->out.len = 0;
        body.len = 0;
    }
    rc = r->ops->head(r, status, h, n, (int64_t)(r->out.len - r->out.off));
    rl_buf_cleanup(&body);
    if (rc < 0) {
        r->aborted = 1;
        if (r->ops)
            r->ops->abort(r);
        return;
    }
    if (r->ops)
        r->ops->kick(r);
}

/* ---------- keys ---------- */

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Reloads the key file when it changed (force: whenever it loads). A file
 * that does not load keeps the keys in effect; the reason is logged once per
 * version of the file. */
static void keys_reload(struct rl_agents *ag, int force)
{
    struct rl_keystate *ks = &ag->ks;
    struct rl_keys *nk = NULL;
    struct stat st;
    char err[512];
    int rc;

    ks->checked = ev_now(ag->loop);
    if (stat(ks->path, &st) < 0) {
        if (force || ks->have_sig) {
            AL_LOG_WARN("agent.keys", "file=%s result=kept reason=\"%s\" keys=%zu", ks->path,
                        strerror(errno), rl_keys_count(ks->keys));
            al_metric_add(ag->m_key_reload_fail, 1);
        }
        ks->have_sig = 0; /* log again once it reappears and fails */
        return;
    }
    if (!force && ks->have_sig && same_file(&st, &ks->sig))
        return;
    ks->sig = st;
    ks->have_sig = 1;
    rc = rl_keys_load(ks->path, &nk, err, sizeof(err));
    if (rc < 0) {
        /* err names the file and line, never a key (the file holds hashes) */
        AL_LOG_WARN("agent.keys", "file=%s result=kept reason=\"%s\" keys=%zu", ks->path,
                    err[0] ? err : al_strerror(rc), rl_keys_count(ks->keys));
        al_metric_add(ag->m_key_reload_fail, 1);
        return;
    }
    rl_keys_free(ks->keys);
    ks->keys = nk;
    al_metric_set(ag->m_keys, (double)rl_keys_count(nk));
    AL_LOG_INFO("agent.keys", "file=%s result=loaded keys=%zu", ks->path, rl_keys_count(nk));
}

void rl_agents_reload_keys(struct rl_agents *ag)
{
    keys_reload(ag, 1);
}

static void keys_maybe_reload(struct rl_agents *ag)
{
    if (ev_now(ag->loop) - ag->ks.checked >= KEYS_CHECK_S)
        keys_reload(ag, 0);
}

static const char *verdict_label(enum rl_key_verdict v)
{
    switch (v) {
    case RL_KEY_OK:
        return "ok";
    case RL_KEY_MALFORMED:
        return "malformed";
    case RL_KEY_UNKNOWN:
        return "unknown";
    case RL_KEY_EXPIRED:
        return "expired";
    case RL_KEY_REVOKED:
        return "revoked";
    case RL_KEY_ROUTE:
        return "route";
    }
    return "unknown";
}

static void count_verdict(struct rl_agents *ag, enum rl_key_verdict v)
{
    char labels[64];
    snprintf(labels, sizeof(labels), "verdict=\"%s\"", verdict_label(v));
    al_metric_add(al_metrics_counter(ag->o.metrics, "airlock_relay_agent_key_checks_total",
                                     "Agent API key checks, by verdict", labels),
                  1);
}

/* ---------- request start ---------- */

static const struct rl_hdr *find_hdr(const struct rl_areq_head *hd, const char *name, int *count)
{
    const struct rl_hdr *found = NULL;
    size_t nl = strlen(name);

    *count = 0;
    for (size_t i = 0; i < hd->n; i++) {
        if (hd->h[i].name_len == nl && memcmp(hd->h[i].name, name, nl) == 0) {
            if (!found)
                found = &hd->h[i];
            (*count)++;
        }
    }
    return found;
}

static int method_allowed(const char *m)
{
    return strcmp(m, "POST") == 0 || strcmp(m, "GET") == 0 || strcmp(m, "DELETE") == 0 ||
           strcmp(m, "OPTIONS") == 0;
}

static void answer_preflight(struct rl_areq *r)
{
    struct rl_hdr h[12];
    size_t n = 0;

    discard_body(r);
    add_hdr(h, &n, "access-control-allow-methods", CORS_METHODS, strlen(CORS_METHODS));
    add_hdr(h, &n, "access-control-allow-headers", CORS_HEADERS, strlen(CORS_HEADERS));
    add_hdr(h, &n, "access-control-max-age", "600", 3);
    add_common_hdrs(r, h, &n);
    r->status = 204;
    r->head_sent = 1;
    r->resp_end = 1;
    if (r->ops->head(r, 204, h, n, 0) < 0) {
        r->aborted = 1;
        if (r->ops)
            r->ops->abort(r);
        return;
    }
    if (r->ops)
        r->ops->kick(r);
}

/* The agent's headers minus what tunnel.proto strips (and the headers a
 * Connection header names). Returns the count, or -1 when there are more
 * than MAX_FWD. */
static int forward_headers(const struct rl_areq_head *hd, nghttp2_nv *nv)
{
    const struct rl_hdr *conn = NULL;
    int cnt = 0, n = 0;

    conn = find_hdr(hd, "connection", &cnt);
    for (size_t i = 0; i < hd->n; i++) {
        const struct rl_hdr *h = &hd->h[i];
        if (h->name_len == 0 || h->name[0] == ':' || rl_req_header_dropped(h->name, h->name_len))
            continue;
        if (conn && rl_hdr_token_listed(conn->value, conn->value_len, h->name, h->name_len))
            continue;
        if (n == MAX_FWD)
            return -1;
        nv[n].name = (uint8_t *)h->name;
        nv[n].namelen = h->name_len;
        nv[n].value = (uint8_t *)h->value;
        nv[n].valuelen = h->value_len;
        nv[n].flags = NGHTTP2_NV_FLAG_NONE;
        n++;
    }
    return n;
}

/* Origin and CORS preflight. Returns 1 when the request was answered. */
static int check_origin(struct rl_areq *r, const struct rl_areq_head *hd)
{
    int cnt;
    const struct rl_hdr *o = find_hdr(hd, "origin", &cnt);

    if (o) {
        if (cnt > 1 ||
            !rl_origin_allowed((const char *const *)r->ag->origins, o->value, o->value_len)) {
            respond_error(r, 403, ERR_DENIED, "POLICY_DENIED",
                          "Origin not allowed (agents.allowed_origins)", NULL, NULL);
            return 1;
        }
        memcpy(r->origin, o->value, o->value_len);
        r->origin[o->value_len] = '\0';
        r->cors = 1;
    }
    if (strcmp(r->method, "OPTIONS") != 0)
        return 0;
    if (!r->cors) {
        respond_error(r, 403, ERR_DENIED, "POLICY_DENIED",
                      "OPTIONS is only answered as a CORS preflight from an allowed Origin", NULL,
                      NULL);
        return 1;
    }
    answer_preflight(r);
    return 1;
}

/* API key. Returns 1 when the request was answered (refused). */
static int check_key(struct rl_areq *r, const struct rl_areq_head *hd)
{
    struct rl_agents *ag = r->ag;
    const struct rl_key *key = NULL;
    enum rl_key_verdict v;
    int cnt;
    const struct rl_hdr *a = find_hdr(hd, "authorization", &cnt);

    keys_maybe_reload(ag);
    if (!a || cnt > 1)
        v = RL_KEY_MALFORMED;
    else
        v = rl_keys_check(ag->ks.keys, a->value, a->value_len, r->rt.route, now_ms(ag), &key);
    count_verdict(ag, v);
    if (key) {
        snprintf(r->principal, sizeof(r->principal), "%s", key->principal);
        snprintf(r->key_id, sizeof(r->key_id), "%s", key->id);
    }
    if (v == RL_KEY_OK)
        return 0;
    if (v == RL_KEY_ROUTE) {
        respond_error(r, 403, ERR_DENIED, "POLICY_DENIED", rl_key_verdict_str(v), NULL, NULL);
        return 1;
    }
    respond_error(r, 401, ERR_DENIED, "UNAUTHENTICATED", rl_key_verdict_str(v), "www-authenticate",
                  "Bearer realm=\"airlock-relay\"");
    return 1;
}

/* MCP session owner. Returns 1 when answered; sets *pin. */
static int check_session(struct rl_areq *r, const struct rl_areq_head *hd, uint64_t *pin)
{
    struct rl_session_info si;
    int cnt;
    const struct rl_hdr *s = find_hdr(hd, "mcp-session-id", &cnt);

    *pin = 0;
    if (!s)
        return 0;
    if (cnt > 1) {
        respond_error(r, 400, ERR_INVALID, "INVALID_FIELD", "more than one Mcp-Session-Id header",
                      NULL, NULL);
        return 1;
    }
    if (!rl_session_id_valid(s->value, s->value_len))
        return 0; /* not one the relay could have recorded; the server decides */
    memcpy(r->session, s->value, s->value_len);
    r->session[s->value_len] = '\0';
    r->session_len = s->value_len;
    if (!rl_sessions_get(r->ag->sessions, r->rt.route, s->value, s->value_len, now_ms(r->ag), &si))
        return 0;
    if (strcmp(si.principal, r->principal) != 0) {
        /* the session id is a capability of its creator: never logged */
        AL_LOG_WARN("agent.session",
                    "req=%s key=%s principal=%s route=%s reason=\"session "
                    "belongs to another principal\"",
                    r->id, r->key_id, r->principal, r->rt.route);
        respond_error(r, 403, ERR_DENIED, "POLICY_DENIED",
                      "MCP session belongs to another principal", NULL, NULL);
        return 1;
    }
    *pin = si.conn;
    return 0;
}

/* After rl_tstream_open found no usable connection: 1 when gateways are
 * registered for the tunnel but none of them offers the server (the route
 * does not exist: 404), 0 when none is registered or the ones offering it
 * are busy or draining (503). Only on this error path, so a snapshot is
 * fine. */
static int server_unknown(struct rl_agents *ag, const char *tunnel, const char *server)
{
    Airlock__V1__GetTunnelStatusResponse st;
    struct al_arena a;
    int unknown = 0;

    al_arena_init(&a, 4 * 1024 * 1024);
    if (rl_tunnels_status(ag->o.tunnels, tunnel, &a, &st) == 0 && st.n_tunnels == 1 &&
        st.tunnels[0]->n_connections > 0) {
        unknown = 1;
        for (size_t i = 0; i < st.tunnels[0]->n_connections && unknown; i++) {
            const Airlock__V1__GatewayConnection *c = st.tunnels[0]->connections[i];
            for (size_t j = 0; j < c->n_servers && unknown; j++)
                if (strcmp(c->servers[j], server) == 0)
                    unknown = 0;
        }
    }
    al_arena_cleanup(&a);
    return unknown;
}

static void open_stream(struct rl_areq *r, const struct rl_areq_head *hd, uint64_t pin)
{
    struct rl_agents *ag = r->ag;
    nghttp2_nv nv[MAX_FWD];
    struct rl_tstream *ts = NULL;
    int n = forward_headers(hd, nv), rc;

    if (n < 0) {
        respond_error(r, 431, ERR_INVALID, "TOO_LARGE", "too many request headers", NULL, NULL);
        return;
    }
    struct rl_treq tr = {
        .tunnel = r->rt.tunnel,
        .server = r->rt.server,
        .method = r->method,
        .path = NULL,
        .headers = nv,
        .nheaders = (size_t)n,
        .principal = r->principal,
        .request_id = r->id,
        .end_stream = hd->end_stream,
        .pin_conn = pin,
    };
    char *path = strndup(hd->target, hd->target_len);
    if (!path) {
        respond_error(r, 500, ERR_INTERNAL, "INTERNAL", "out of memory", NULL, NULL);
        return;
    }
    tr.path = path;
    rc = rl_tstream_open(ag->o.tunnels, &tr, &ts_cbs, r, &ts);
    free(path);
    switch (rc) {
    case 0:
        r->ts = ts;
        if (hd->end_stream)
            r->req_end_sent = r->req_done = 1;
        return;
    case AL_ERR_NOTFOUND:
        respond_error(r, 404, ERR_NOT_FOUND, "NOT_FOUND", "unknown tunnel", NULL, NULL);
        return;
    case AL_ERR_CLOSED:
        if (ag->draining)
            respond_error(r, 503, ERR_UNAVAIL, "DRAINING", "relay is shutting down; retry", NULL,
                          NULL);
        else if (server_unknown(ag, r->rt.tunnel, r->rt.server))
            respond_error(r, 404, ERR_NOT_FOUND, "NOT_FOUND",
                          "unknown server: no gateway of this tunnel serves it", NULL, NULL);
        else
            respond_error(r, 503, ERR_UNAVAIL, "NO_GATEWAY",
                          "no gateway connected for this tunnel and server", NULL, NULL);
        return;
    default:
        AL_LOG_ERROR("agent.stream", "req=%s route=%s reason=\"%s\"", r->id, r->rt.route,
                     al_strerror(rc));
        respond_error(r, 500, ERR_INTERNAL, "INTERNAL", "could not open the gateway stream", NULL,
                      NULL);
    }
}

static void process(struct rl_areq *r, const struct rl_areq_head *hd)
{
    struct rl_agents *ag = r->ag;
    uint64_t pin = 0;
    int rc;

    if (hd->head_too_large) {
        respond_error(r, 431, ERR_INVALID, "TOO_LARGE", "request head too large", NULL, NULL);
        return;
    }
    if (!method_allowed(hd->method)) {
        respond_error(r, 405, ERR_INVALID, "UNSUPPORTED",
                      "method not allowed: MCP uses POST, GET and DELETE", "allow", CORS_METHODS);
        return;
    }
    rc = rl_route_parse(hd->target, hd->target_len, &r->rt);
    if (rc == AL_ERR_NOTFOUND) {
        respond_error(r, 404, ERR_NOT_FOUND, "NOT_FOUND",
                      "no such endpoint: MCP endpoints are /mcp/<tunnel>/<server>", NULL, NULL);
        return;
    }
    if (rl_tunnels_known(ag->o.tunnels, r->rt.tunnel))
        snprintf(r->tunnel_label, sizeof(r->tunnel_label), "%s", r->rt.tunnel);
    if (rc < 0) {
        respond_error(r, 400, ERR_INVALID, "INVALID_FIELD",
                      "malformed path after /mcp/<tunnel>/<server>", NULL, NULL);
        return;
    }
    if (check_origin(r, hd) || check_key(r, hd))
        return;
    if (!rl_tunnels_known(ag->o.tunnels, r->rt.tunnel)) {
        respond_error(r, 404, ERR_NOT_FOUND, "NOT_FOUND", "unknown tunnel", NULL, NULL);
        return;
    }
    if (hd->content_length > 0 && (uint64_t)hd->content_length > ag->o.max_body) {
        respond_error(r, 413, ERR_INVALID, "TOO_LARGE", "request body too large", NULL, NULL);
        return;
    }
    if (check_session(r, hd, &pin))
        return;
    if (ag->draining) {
        respond_error(r, 503, ERR_UNAVAIL, "DRAINING", "relay is shutting down; retry", NULL, NULL);
        return;
    }
    open_stream(r, hd, pin);
}

int rl_areq_start(struct rl_agents *ag, const struct rl_front_ops *ops, void *front,
                  const struct rl_areq_head *hd, struct rl_areq **slot)
{
    struct rl_areq *r = calloc(1, sizeof(*r));

    *slot = NULL;
    if (!r)
        return AL_ERR_NOMEM;
    r->ag = ag;
    r->ops = ops;
    r->front = front;
    r->slot = slot;
    r->proto = hd->proto;
    r->conn_id = hd->conn_id;
    r->stream_id = hd->stream_id;
    r->start = ev_time();
    snprintf(r->method, sizeof(r->method), "%s", hd->method);
    snprintf(r->tunnel_label, sizeof(r->tunnel_label), "-");
    rl_buf_init(&r->in_pend, ag->o.max_body + 64 * 1024);
    r->req_done = hd->end_stream;
    *slot = r;
    enter(r);
    if (rl_request_id(r->id) < 0) {
        snprintf(r->id, sizeof(r->id), "-");
        respond_error(r, 500, ERR_INTERNAL, "INTERNAL", "no randomness for a request id", NULL,
                      NULL);
    } else {
        process(r, hd);
    }
    leave(r);
    return 0;
}

/* ---------- request body ---------- */

static void body_too_large(struct rl_areq *r)
{
    if (r->ts) {
        rl_tstream_cancel(r->ts);
        r->ts = NULL;
    }
    if (!r->head_sent) {
        respond_error(r, 413, ERR_INVALID, "TOO_LARGE", "request body too large", NULL, NULL);
    } else {
        discard_body(r);
        r->aborted = 1;
        if (r->ops)
            r->ops->abort(r);
    }
}

/* Passes waiting body bytes to the gateway stream while its queue has room;
 * ends the stream's request side once everything went. */
static void flush_in(struct rl_areq *r)
{
    while (r->in_pend.len && r->ts && !r->discard) {
        size_t pending = rl_tstream_pending(r->ts);
        size_t room = pending < IN_HIGH ? IN_HIGH - pending : 0;
        size_t k = r->in_pend.len < room ? r->in_pend.len : room;
        if (k == 0) {
            rl_tstream_want_writable(r->ts, IN_LOW);
            return;
        }
        if (rl_tstream_write(r->ts, r->in_pend.p, k) < 0) {
            discard_body(r); /* the stream failed; on_error follows */
            return;
        }
        rl_buf_consume(&r->in_pend, k);
        consumed(r, k);
    }
    if (r->in_pend.len)
        return;
    if (r->paused && r->ops) {
        r->paused = 0;
        r->ops->resume(r);
    }
    if (r->req_done && !r->req_end_sent && r->ts && !r->discard) {
        r->req_end_sent = 1;
        rl_tstream_end(r->ts);
    }
}

void rl_areq_body(struct rl_areq *r, const uint8_t *d, size_t n)
{
    struct rl_agents *ag = r->ag;

    if (!n)
        return;
    enter(r);
    r->unconsumed += n;
    r->body_bytes += n;
    al_metric_add(ag->m_bytes_in, (double)n);
    if (!r->discard && r->body_bytes > ag->o.max_body)
        body_too_large(r);
    if (r->discard || !r->ts) {
        consumed(r, n);
        goto out;
    }
    if (r->in_pend.len == 0 && rl_tstream_pending(r->ts) + n <= IN_HIGH) {
        if (rl_tstream_write(r->ts, d, n) < 0)
            discard_body(r); /* the stream failed; on_error follows */
        else
            consumed(r, n);
        goto out;
    }
    if (rl_buf_append(&r->in_pend, d, n) < 0) {
        body_too_large(r);
        goto out;
    }
    if (!r->paused && r->ops) {
        r->paused = 1;
        r->ops->pause(r);
    }
    rl_tstream_want_writable(r->ts, IN_LOW);
out:
    leave(r);
}

void rl_areq_body_end(struct rl_areq *r)
{
    enter(r);
    r->req_done = 1;
    if (r->ts && !r->discard && !r->req_end_sent && r->in_pend.len == 0) {
        r->req_end_sent = 1;
        rl_tstream_end(r->ts);
    }
    leave(r);
}

void rl_areq_body_timeout(struct rl_areq *r)
{
    enter(r);
    if (r->ts) {
        rl_tstream_cancel(r->ts);
        r->ts = NULL;
    }
    if (!r->head_sent) {
        respond_error(r, 408, ERR_INVALID, "INVALID_FIELD",
                      "request body timed out (agents.body_timeout)", NULL, NULL);
    } else {
        discard_body(r);
        r->aborted = 1;
        if (r->ops)
            r->ops->abort(r);
    }
    leave(r);
}

/* ---------- response (gateway stream callbacks) ---------- */

/* Sessions are recorded when a server creates one: a 2xx answer carrying
 * Mcp-Session-Id to a request that named no session (or another one). An
 * answer that echoes the session the request named only moves a session
 * this relay already knows for this principal to the connection that
 * served it; it never claims an unknown one, which another replica may
 * have recorded for another principal. */
static void record_session(struct rl_areq *r, int status, const char *sid, size_t sidlen)
{
    struct rl_agents *ag = r->ag;
    struct rl_session_info si;
    int echoed;

    if (status < 200 || status > 299)
        return;
    echoed = sid && r->session_len == sidlen && memcmp(sid, r->session, sidlen) == 0;
    if (strcmp(r->method, "DELETE") == 0 && r->session_len) {
        rl_sessions_del(ag->sessions, r->rt.route, r->session, r->session_len);
    } else if (sid && !echoed && rl_session_id_valid(sid, sidlen)) {
        rl_sessions_put(ag->sessions, r->rt.route, sid, sidlen, r->principal, r->gw_conn,
                        now_ms(ag));
    } else if (r->session_len &&
               rl_sessions_get(ag->sessions, r->rt.route, r->session, r->session_len, now_ms(ag),
                               &si) &&
               strcmp(si.principal, r->principal) == 0 && si.conn != r->gw_conn) {
        rl_sessions_put(ag->sessions, r->rt.route, r->session, r->session_len, r->principal,
                        r->gw_conn, now_ms(ag));
    }
    al_metric_set(ag->m_sessions, (double)rl_sessions_count(ag->sessions));
}

/* Gives the out queue's bytes back to the gateway stream's window and drops
 * them: the agent will never get them. */
static void drop_response(struct rl_areq *r)
{
    size_t live = r->out.len - r->out.off;
    r->resp_dropped = 1;
    if (r->ts && live)
        rl_tstream_consume(r->ts, live);
    r->out.off = r->out.len = 0;
}

static void fail_after_head(struct rl_areq *r)
{
    drop_response(r);
    discard_body(r);
    r->aborted = 1;
    if (r->ops)
        r->ops->abort(r);
}

static void ts_on_head(struct rl_tstream *s, int status, const nghttp2_nv *nv, size_t n, void *user)
{
    struct rl_areq *r = user;
    struct rl_hdr *h;
    const char *sid = NULL;
    size_t nh = 0, sidlen = 0;
    int64_t cl = -1;

    if (status < 200 || r->head_sent || !r->ops)
        return; /* interim (1xx) heads are not passed on */
    enter(r);
    r->gw_conn = rl_tstream_conn(s);
    h = calloc(n + 8, sizeof(*h));
    if (!h) {
        r->head_sent = 1;
        fail_after_head(r);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = (const char *)nv[i].name;
        size_t nl = nv[i].namelen;
        if (rl_resp_header_dropped(name, nl))
            continue;
        if (nl == 14 && memcmp(name, "content-length", 14) == 0) {
            if (rl_parse_content_length((const char *)nv[i].value, nv[i].valuelen, &cl) < 0)
                cl = -1;
            continue;
        }
        if (nl == 14 && memcmp(name, "mcp-session-id", 14) == 0) {
            sid = (const char *)nv[i].value;
            sidlen = nv[i].valuelen;
        }
        h[nh].name = name;
        h[nh].name_len = nl;
        h[nh].value = (const char *)nv[i].value;
        h[nh].value_len = nv[i].valuelen;
        nh++;
    }
    add_common_hdrs(r, h, &nh);
    record_session(r, status, sid, sidlen);
    r->status = status;
    r->head_sent = 1;
    if (r->ops->head(r, status, h, nh, cl) < 0)
        fail_after_head(r);
    free(h);
out:
    leave(r);
}

static void ts_on_data(struct rl_tstream *s, const uint8_t *d, size_t n, void *user)
{
    struct rl_areq *r = user;

    enter(r);
    if (r->resp_dropped || !r->ops) {
        rl_tstream_consume(s, n);
        goto out;
    }
    if (out_append(&r->out, d, n) < 0) {
        rl_tstream_consume(s, n);
        AL_LOG_WARN("agent.response", "req=%s reason=\"response queue over %d bytes\"", r->id,
                    OUT_MAX);
        fail_after_head(r);
        goto out;
    }
    r->ops->kick(r);
out:
    leave(r);
}

static void ts_on_end(struct rl_tstream *s, void *user)
{
    struct rl_areq *r = user;
    (void)s;

    enter(r);
    r->ts = NULL;
    r->resp_end = 1;
    if (!r->head_sent) { /* cannot happen: a stream ends after its head */
        respond_error(r, 502, ERR_UPSTREAM, "UPSTREAM_FAILED", "gateway sent no response", NULL,
                      NULL);
    } else if (r->ops && !r->resp_dropped) {
        r->ops->kick(r);
    }
    if (!r->req_done || r->in_pend.len)
        discard_body(r); /* the gateway answered; the rest of the body has nowhere to go */
    leave(r);
}

static void ts_on_error(struct rl_tstream *s, int err, int head_seen, void *user)
{
    struct rl_areq *r = user;
    (void)s;

    enter(r);
    r->ts = NULL;
    AL_LOG_INFO("agent.stream", "req=%s gw_conn=%llu route=%s head_seen=%d reason=\"%s\"", r->id,
                (unsigned long long)r->gw_conn, r->rt.route, head_seen, al_strerror(err));
    if (!r->head_sent) {
        if (err == AL_ERR_TIMEOUT)
            respond_error(r, 504, ERR_UPSTREAM, "UPSTREAM_TIMEOUT",
                          "the gateway did not answer in time", NULL, NULL);
        else
            respond_error(r, 502, ERR_UPSTREAM, "UPSTREAM_FAILED",
                          "the gateway stream failed before a response", NULL, NULL);
    } else {
        fail_after_head(r);
    }
    leave(r);
}

static void ts_on_writable(struct rl_tstream *s, void *user)
{
    struct rl_areq *r = user;
    (void)s;

    enter(r);
    flush_in(r);
    leave(r);
}

/* ---------- front accessors ---------- */

size_t rl_areq_out(struct rl_areq *r, const uint8_t **p)
{
    *p = r->out.p ? r->out.p + r->out.off : NULL;
    return r->out.len - r->out.off;
}

void rl_areq_sent(struct rl_areq *r, size_t n)
{
    size_t live = r->out.len - r->out.off;

    if (n > live)
        n = live;
    r->out.off += n;
    if (r->out.off == r->out.len)
        r->out.off = r->out.len = 0;
    r->bytes_out += n;
    al_metric_add(r->ag->m_bytes_out, (double)n);
    if (r->ts && n)
        rl_tstream_consume(r->ts, n);
}

int rl_areq_resp_done(const struct rl_areq *r)
{
    return r->resp_end && r->out.len == r->out.off;
}

void *rl_areq_front(const struct rl_areq *r)
{
    return r->front;
}

static void finish_metrics(struct rl_areq *r)
{
    struct rl_agents *ag = r->ag;
    char labels[160], code[8];
    const char *result;

    snprintf(code, sizeof(code), "%s", r->status ? rl_status_class(r->status) : "none");
    snprintf(labels, sizeof(labels), "tunnel=\"%s\",code=\"%s\"", r->tunnel_label, code);
    al_metric_add(al_metrics_counter(ag->o.metrics, "airlock_relay_agent_requests_total",
                                     "Agent requests finished, by tunnel and status class", labels),
                  1);
    al_metric_observe(ag->m_duration, ev_time() - r->start);
    if (r->aborted)
        result = "aborted";
    else if (!rl_areq_resp_done(r))
        result = "cancelled";
    else
        result = "ok";
    AL_LOG_INFO("agent.request",
                "req=%s agent_conn=%llu proto=%s stream=%d method=%s route=%s principal=%s "
                "key=%s status=%d reason=%s gw_conn=%llu bytes_in=%llu bytes_out=%llu "
                "result=%s dur_ms=%.3f",
                r->id, (unsigned long long)r->conn_id, r->proto, r->stream_id, r->method,
                r->rt.route[0] ? r->rt.route : "-", r->principal[0] ? r->principal : "-",
                r->key_id[0] ? r->key_id : "-", r->status, r->reason ? r->reason : "-",
                (unsigned long long)r->gw_conn, (unsigned long long)r->body_bytes,
                (unsigned long long)r->bytes_out, result, (ev_time() - r->start) * 1000.0);
}

size_t rl_areq_detach(struct rl_areq *r)
{
    size_t unconsumed = r->unconsumed;

    if (r->detached)
        return 0;
    r->ops = NULL;
    r->front = NULL;
    r->slot = NULL;
    r->unconsumed = 0;
    if (r->ts) {
        if (!r->gw_conn)
            r->gw_conn = rl_tstream_conn(r->ts); /* for the log line */
        rl_tstream_cancel(r->ts);
        r->ts = NULL;
    }
    finish_metrics(r);
    r->detached = 1;
    if (!r->busy)
        areq_free(r);
    return unconsumed;
}

/* ---------- connections, listener, drain ---------- */

uint64_t rl_agents_conn_opened(struct rl_agents *ag, int h2)
{
    ag->nconns++;
    if (h2) {
        ag->nh2++;
        al_metric_add(ag->m_conns_h2, 1);
        al_metric_add(ag->m_conn_total_h2, 1);
    } else {
        ag->nh1++;
        al_metric_add(ag->m_conns_h1, 1);
        al_metric_add(ag->m_conn_total_h1, 1);
    }
    return ++ag->next_conn_id;
}

static void drain_finished(struct rl_agents *ag)
{
    void (*done)(void *) = ag->drain_done;

    ev_timer_stop(ag->loop, &ag->drain_timer);
    ag->drain_done = NULL;
    if (done)
        done(ag->drain_user);
}

void rl_agents_conn_closed(struct rl_agents *ag, int h2)
{
    if (ag->nconns)
        ag->nconns--;
    if (h2) {
        if (ag->nh2)
            ag->nh2--;
        al_metric_add(ag->m_conns_h2, -1);
    } else {
        if (ag->nh1)
            ag->nh1--;
        al_metric_add(ag->m_conns_h1, -1);
    }
    if (ag->draining && ag->nconns == 0 && ag->drain_done)
        drain_finished(ag);
}

/* Refuses a connection over agents.max_connections (and while draining). */
static int over_limit(struct rl_agents *ag, int fd, SSL *ssl, const char *peer)
{
    if (ag->nconns < ag->o.max_connections && !ag->draining)
        return 0;
    al_metric_add(ag->m_refused, 1);
    if (ev_now(ag->loop) - ag->refused_logged >= 1.0) {
        ag->refused_logged = ev_now(ag->loop);
        AL_LOG_WARN("agent.accept", "peer=%s reason=\"%s\" open=%zu", peer,
                    ag->draining ? "draining" : "agents.max_connections reached", ag->nconns);
    }
    SSL_free(ssl);
    close(fd);
    return 1;
}

static void on_h2(int fd, SSL *ssl, const char *peer, void *user)
{
    struct rl_agents *ag = user;
    if (!over_limit(ag, fd, ssl, peer))
        rl_ah2_accept(ag, fd, ssl, peer);
}

static void on_h1(int fd, SSL *ssl, const char *peer, void *user)
{
    struct rl_agents *ag = user;
    if (!over_limit(ag, fd, ssl, peer))
        rl_ah1_accept(ag, fd, ssl, peer);
}

static void make_metrics(struct rl_agents *ag)
{
    struct al_metrics *m = ag->o.metrics;
    static const double dur_bounds[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 300};

    if (!m)
        return;
    ag->m_conns_h1 = al_metrics_gauge(m, "airlock_relay_agent_connections",
                                      "Open agent connections, by protocol", "proto=\"h1\"");
    ag->m_conns_h2 = al_metrics_gauge(m, "airlock_relay_agent_connections",
                                      "Open agent connections, by protocol", "proto=\"h2\"");
    ag->m_conn_total_h1 =
        al_metrics_counter(m, "airlock_relay_agent_connections_total",
                           "Agent connections accepted, by protocol", "proto=\"h1\"");
    ag->m_conn_total_h2 =
        al_metrics_counter(m, "airlock_relay_agent_connections_total",
                           "Agent connections accepted, by protocol", "proto=\"h2\"");
    ag->m_refused =
        al_metrics_counter(m, "airlock_relay_agent_connections_refused_total",
                           "Agent connections closed at accept (limit, draining)", NULL);
    ag->m_bytes_in = al_metrics_counter(m, "airlock_relay_agent_bytes_total",
                                        "Agent body bytes, by direction", "direction=\"in\"");
    ag->m_bytes_out = al_metrics_counter(m, "airlock_relay_agent_bytes_total",
                                         "Agent body bytes, by direction", "direction=\"out\"");
    ag->m_sessions = al_metrics_gauge(m, "airlock_relay_sessions",
                                      "MCP sessions in the relay's session table", NULL);
    ag->m_keys = al_metrics_gauge(m, "airlock_relay_agent_keys", "Agent API keys loaded", NULL);
    ag->m_key_reload_fail =
        al_metrics_counter(m, "airlock_relay_agent_keys_reload_failures_total",
                           "Key file reloads that failed (the previous keys stay in effect)", NULL);
    ag->m_duration = al_metrics_histogram(
        m, "airlock_relay_agent_request_duration_seconds",
        "Agent request duration, first byte of the head to the end of the response", NULL,
        dur_bounds, sizeof(dur_bounds) / sizeof(dur_bounds[0]));
    /* series that exist from the start, so dashboards see zeros */
    for (int v = RL_KEY_OK; v <= RL_KEY_ROUTE; v++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "verdict=\"%s\"", verdict_label((enum rl_key_verdict)v));
        al_metrics_counter(m, "airlock_relay_agent_key_checks_total",
                           "Agent API key checks, by verdict", labels);
    }
}

static int copy_origins(struct rl_agents *ag, const char *const *src)
{
    size_t n = 0;

    while (src && src[n])
        n++;
    ag->origins = calloc(n + 1, sizeof(char *));
    if (!ag->origins)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        if (!(ag->origins[i] = strdup(src[i])))
            return AL_ERR_NOMEM;
    return 0;
}

int rl_agents_new(struct ev_loop *loop, const struct rl_agents_opts *o, struct rl_agents **out)
{
    struct rl_agents *ag = calloc(1, sizeof(*ag));
    struct stat st;
    int rc = AL_ERR_NOMEM;

    *out = NULL;
    if (!ag) {
        rl_keys_free(o->keys);
        return AL_ERR_NOMEM;
    }
    ag->loop = loop;
    ag->o = *o;
    ag->ks.keys = o->keys;
    ag->o.keys = NULL;
    ag->o.keys_file = NULL;
    ag->o.allowed_origins = NULL;
    if (!ag->o.max_head)
        ag->o.max_head = 16 * 1024;
    if (!ag->o.max_body)
        ag->o.max_body = 4 * 1024 * 1024;
    if (ag->o.header_timeout_s <= 0)
        ag->o.header_timeout_s = 10;
    if (ag->o.body_timeout_s <= 0)
        ag->o.body_timeout_s = 30;
    if (ag->o.idle_timeout_s <= 0)
        ag->o.idle_timeout_s = 60;
    if (!ag->o.max_connections)
        ag->o.max_connections = 10000;
    if (!ag->o.max_streams)
        ag->o.max_streams = 1000;
    ev_timer_init(&ag->drain_timer, NULL, 0., 0.);
    if (!o->keys_file || !o->tunnels || !o->listen) {
        rc = AL_ERR_INVAL;
        goto fail;
    }
    ag->ks.path = strdup(o->keys_file);
    if (!ag->ks.path || copy_origins(ag, o->allowed_origins) < 0)
        goto fail;
    if (stat(ag->ks.path, &st) == 0) { /* the keys given were read from this file */
        ag->ks.sig = st;
        ag->ks.have_sig = 1;
    }
    ag->ks.checked = ev_now(loop);
    rc = rl_sessions_new(o->max_sessions,
                         o->session_idle_s > 0 ? (int64_t)(o->session_idle_s * 1000) : 0,
                         &ag->sessions);
    if (rc < 0)
        goto fail;
    make_metrics(ag);
    al_metric_set(ag->m_keys, (double)rl_keys_count(ag->ks.keys));
    rc = rl_ah2_init(ag);
    if (rc < 0)
        goto fail;
    struct rl_listener_opts lo = {
        .addr = o->listen,
        .tls = o->tls,
        .handshake_timeout_s = ag->o.header_timeout_s,
        .on_h2 = on_h2,
        .on_h1 = on_h1,
        .user = ag,
    };
    rc = rl_listener_new(loop, &lo, &ag->listener);
    if (rc < 0) {
        AL_LOG_ERROR("agent.listen", "addr=%s reason=\"%s\"", o->listen, al_strerror(rc));
        goto fail;
    }
    size_t norig = 0;
    while (ag->origins[norig])
        norig++;
    AL_LOG_INFO("agent.listen", "addr=%s port=%d tls=%s keys=%zu allowed_origins=%zu", o->listen,
                rl_listener_port(ag->listener), o->tls ? "on" : "off", rl_keys_count(ag->ks.keys),
                norig);
    *out = ag;
    return 0;
fail:
    rl_agents_free(ag);
    return rc;
}

int rl_agents_port(const struct rl_agents *ag)
{
    return ag->listener ? rl_listener_port(ag->listener) : 0;
}

size_t rl_agents_connections(const struct rl_agents *ag)
{
    return ag->nconns;
}

static void drain_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rl_agents *ag = w->data;
    (void)loop;
    (void)revents;

    AL_LOG_WARN("agent.drain", "reason=\"drain timeout\" open_connections=%zu", ag->nconns);
    rl_ah1_close_all(ag);
    rl_ah2_close_all(ag);
    /* their on_close runs from the loop and finishes the drain */
}

void rl_agents_drain(struct rl_agents *ag, double timeout_s, void (*done)(void *user), void *user)
{
    if (ag->draining)
        return;
    ag->draining = 1;
    ag->drain_done = done;
    ag->drain_user = user;
    rl_listener_free(ag->listener);
    ag->listener = NULL;
    AL_LOG_INFO("agent.drain", "open_connections=%zu h1=%zu h2=%zu", ag->nconns, ag->nh1, ag->nh2);
    if (ag->nconns == 0) {
        drain_finished(ag);
        return;
    }
    rl_ah1_drain_all(ag);
    rl_ah2_drain_all(ag);
    ev_timer_init(&ag->drain_timer, drain_timeout_cb, timeout_s > 0 ? timeout_s : 30, 0.);
    ag->drain_timer.data = ag;
    ev_timer_start(ag->loop, &ag->drain_timer);
}

void rl_agents_free(struct rl_agents *ag)
{
    if (!ag)
        return;
    rl_listener_free(ag->listener);
    ag->listener = NULL;
    ev_timer_stop(ag->loop, &ag->drain_timer);
    ag->drain_done = NULL;
    rl_ah1_close_all(ag);
    rl_ah2_close_all(ag);
    /* connections close from the loop: let their on_close run so nothing
     * is left behind (each pass reaps what the last one closed) */
    for (int i = 0; i < 100 && ag->nconns > 0; i++)
        ev_run(ag->loop, EVRUN_NOWAIT);
    rl_ah2_cleanup(ag);
    rl_sessions_free(ag->sessions);
    rl_keys_free(ag->ks.keys);
    free(ag->ks.path);
    for (size_t i = 0; ag->origins && ag->origins[i]; i++)
        free(ag->origins[i]);
    free(ag->origins);
    free(ag);
}
