/*
 * gw_stream: one agent request on a reversed connection (tunnel.md, "The
 * flow", gateway part).
 *
 *   head     :path -> route (404), the relay's grant verified with the
 *            relay_keys keyring (audience credstore, holder = us, scope =
 *            route, principal = airlock-principal, subject = "request/" +
 *            airlock-request-id; 403 GRANT_* otherwise), an audit slot
 *            reserved (503 when the queue is full), method (POST, GET,
 *            DELETE; only POST may carry a body: 400), no repeated
 *            single-instance header (gw_req_header_single: 400), the
 *            Mcp-Session-Id binding (403 when another principal's)
 *   body     POST: buffered up to max_body (413), parsed (rl_mcp_parse:
 *            400), Mcp-Method / Mcp-Name checked (400), the item authorized
 *            by the principal's policy (403)
 *   cred     the route's value from the cache or credstore (403 / 502, the
 *            upstream is then never called)
 *   upstream rl_ureq_start with the agent's end-to-end headers minus the
 *            ones gw_http.h lists and the injected header's name, plus
 *            Accept-Encoding: identity and the injected header; the body
 *            follows, relay bytes being consumed (HTTP/2 window) only once
 *            the upstream took them
 *   response headers whose name or value holds the secret dropped,
 *            Content-Length and hop-by-hop dropped, the body through
 *            rl_mcp_filter (list requests, SSE) and then rl_scrub, out
 *            through the stream's deferred data provider; the upstream is
 *            paused while more than GW_OUT_HIGH bytes wait for the relay
 *   end      one EdgeUseRecord (or the reservation released), one log line
 *
 * Errors the gateway makes are JSON-RPC error bodies with airlock-error
 * (gw_http.h); after the response head has gone out a failure can only reset
 * the stream.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "airlock/v1/common.pb-c.h"
#include "al_base64.h"
#include "al_err.h"
#include "al_grant.h"
#include "al_h2conn.h"
#include "al_log.h"
#include "al_metrics.h"
#include "gw.h"
#include "al_edge_audit.h"
#include "gw_cache.h"
#include "gw_http.h"
#include "gw_session.h"
#include "scrub.h"
#include "upstream.h"

#define REASON(x)    AIRLOCK__V1__ERROR_REASON__ERROR_REASON_##x
#define AUDIENCE     "spiffe://airlock/credstore"
#define WRITE_CHUNK  (64 * 1024)
#define UP_LOW_WATER (256 * 1024)
#define MAX_RESP_HDR 128

struct gw_agent {
    struct gw_stream *s;
    struct gw *gw;
    size_t buffered; /* of gw->buffered: this request's body */
    size_t route;
    const struct gw_route *rt;
    struct gw_path path;
    Airlock__V1__Grant *grant; /* verified */
    struct al_edge_grant *g;
    const char *principal, *request_id;
    const struct gw_policy *policy;
    const struct gw_hdr *sid; /* the request's Mcp-Session-Id */
    int record;               /* an audit slot is reserved */
    int64_t t_ms;
    double t0;
    enum gw_phase phase;
    int64_t clen; /* request Content-Length, -1 = none */
    struct rl_buf body;
    size_t body_sent;
    struct rl_buf held; /* relay bytes not yet taken by the upstream (not consumed) */
    struct rl_mcp_msg msg;
    int have_msg;
    char tool[AL_EDGE_TOOL_MAX + 1];
    struct gw_resolve *rs;
    struct gw_value *v;
    int cache_hit;
    struct rl_ureq *ureq;
    int up_started, up_ended, ureq_ended;
    int up_status, status;
    int64_t req_bytes, resp_bytes;
    struct rl_mcp_filter *filter;
    struct rl_scrub_stream *scrub;
    struct rl_buf tmp;
    int paused;
    unsigned long hdr_hits;
    const char *target; /* upstream request target (stream arena) */
    char deny[200];
};

static void start_cred(struct gw_agent *a);

/* ---------- gateway-made answers ---------- */

static nghttp2_nv nv_of(const char *n, const char *v, size_t vl)
{
    return (nghttp2_nv){(uint8_t *)n, (uint8_t *)v, strlen(n), vl, NGHTTP2_NV_FLAG_NONE};
}

static int code_of(int status)
{
    switch (status) {
    case 403:
        return RL_MCP_ERR_DENIED;
    case 404:
        return RL_MCP_ERR_NOT_FOUND;
    case 502:
    case 504:
        return RL_MCP_ERR_UPSTREAM;
    case 503:
        return RL_MCP_ERR_UNAVAILABLE;
    default:
        return RL_MCP_ERR_INVALID;
    }
}

/* A complete error response; msg is safe to show (no secret, no body). */
static void respond_error(struct gw_stream *s, const struct rl_mcp_msg *m, int status, int code,
                          int reason, const char *msg)
{
    struct gw_error e = {status, code, reason};
    char st[8], len[24];
    nghttp2_nv nv[5];
    size_t n = 0;

    if (s->submitted) {
        gw_stream_reset(s, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    rl_buf_reset(&s->out);
    s->out_off = 0;
    if (gw_error_body(m, &e, msg, &s->out) < 0) {
        gw_stream_reset(s, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    snprintf(st, sizeof(st), "%d", status);
    snprintf(len, sizeof(len), "%zu", s->out.len);
    nv[n++] = nv_of(":status", st, strlen(st));
    nv[n++] = nv_of("content-type", "application/json", 16);
    nv[n++] = nv_of("content-length", len, strlen(len));
    nv[n++] = nv_of("airlock-error", gw_reason_name(reason), strlen(gw_reason_name(reason)));
    if (status == 405)
        nv[n++] = nv_of("allow", "GET, POST, DELETE", 17);
    s->out_eof = 1;
    if (gw_stream_submit(s, nv, n) < 0)
        gw_stream_reset(s, NGHTTP2_INTERNAL_ERROR);
}

void gw_stream_error(struct gw_stream *s, int status, int code, int reason, const char *msg)
{
    respond_error(s, NULL, status, code, reason, msg);
}

/* The DENY reason of the request's use record (cut to fit). */
static void set_deny(struct gw_agent *a, const char *msg)
{
    size_t n = strnlen(msg, sizeof(a->deny) - 1);

    memcpy(a->deny, msg, n);
    a->deny[n] = '\0';
}

/* Refuses the request: the error answer, and msg as the DENY reason of its
 * use record. */
static void agent_fail_code(struct gw_agent *a, int status, int code, int reason, const char *msg)
{
    if (!a->deny[0])
        set_deny(a, msg);
    a->status = status;
    a->phase = GW_P_RESP;
    respond_error(a->s, &a->msg, status, code, reason, msg);
}

static void agent_fail(struct gw_agent *a, int status, int reason, const char *msg)
{
    agent_fail_code(a, status, code_of(status), reason, msg);
}

/* ---------- head ---------- */

static int grant_reason(int rc, const char *why)
{
    switch (rc) {
    case AL_ERR_EXPIRED:
        return REASON(GRANT_EXPIRED);
    case AL_ERR_AUTH:
        if (strstr(why, "audience"))
            return REASON(GRANT_AUDIENCE_MISMATCH);
        if (strstr(why, "holder"))
            return REASON(GRANT_HOLDER_MISMATCH);
        return REASON(GRANT_INVALID);
    default:
        return REASON(GRANT_INVALID);
    }
}

static const char *hval(const struct gw_stream *s, const char *name, size_t *len)
{
    const struct gw_hdr *h = gw_stream_header(s, name);

    if (len)
        *len = h ? h->vl : 0;
    return h ? h->value : NULL;
}

/* Verifies the relay's grant against the route and the relay's headers.
 * Returns 0 or an ErrorReason, with why (safe to show) filled. */
static int check_grant(struct gw_agent *a, char *why, size_t whyn)
{
    struct gw *gw = a->gw;
    size_t bl, pl, il;
    const char *b64 = hval(a->s, "airlock-grant", &bl);
    const char *p = hval(a->s, "airlock-principal", &pl);
    const char *id = hval(a->s, "airlock-request-id", &il);
    uint8_t buf[AL_GRANT_MAX_SIZE];
    size_t n = 0;
    struct al_grant_expect e;
    char vwhy[96] = "";
    int rc;

    snprintf(why, whyn, "the request's grant is missing or malformed");
    if (!b64 || !p || !id || !gw_request_id_valid(id, il) || pl == 0 || pl > 256 ||
        al_base64_decode(b64, bl, buf, sizeof(buf), 0, &n) < 0)
        return REASON(GRANT_INVALID);
    al_grant_expect_init(&e, AUDIENCE, gw->self_id);
    rc = al_grant_verify(gw->keyring, buf, n, &e, gw_unix_ms(), &a->grant, vwhy, sizeof(vwhy));
    if (rc < 0) {
        snprintf(why, whyn, "the request's grant was refused: %s", vwhy);
        return rc == AL_ERR_NOMEM ? REASON(INTERNAL) : grant_reason(rc, vwhy);
    }
    if (strcmp(a->grant->scope, a->rt->name) != 0) {
        snprintf(why, whyn, "the request's grant is for another route");
        return REASON(GRANT_SCOPE_MISMATCH);
    }
    if (strcmp(a->grant->principal, p) != 0 || strncmp(a->grant->subject, "request/", 8) != 0 ||
        strcmp(a->grant->subject + 8, id) != 0) {
        snprintf(why, whyn, "the request's grant names another principal or request");
        return REASON(GRANT_INVALID);
    }
    if (al_edge_grant_new(buf, n, a->grant->grant_id, &a->g) < 0)
        return REASON(INTERNAL);
    a->principal = p;
    a->request_id = id;
    return 0;
}

/* Content-Length of the request: -1 none, -2 malformed. */
static int64_t content_length(const struct gw_stream *s)
{
    size_t n;
    const char *v = hval(s, "content-length", &n);
    int64_t x = 0;

    if (!v)
        return -1;
    if (n == 0 || n > 15)
        return -2;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -2;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

/* The first request header that may appear once (gw_req_header_single) and
 * appears again, or NULL. */
static const char *repeated_header(const struct gw_stream *s)
{
    for (size_t i = 0; i < s->nhdr; i++) {
        const struct gw_hdr *h = &s->hdr[i];
        if (!gw_req_header_single(h->name, h->nl))
            continue;
        for (size_t k = i + 1; k < s->nhdr; k++)
            if (s->hdr[k].nl == h->nl && memcmp(s->hdr[k].name, h->name, h->nl) == 0)
                return h->name;
    }
    return NULL;
}

/* Route, target, grant, method. Returns 0 or answers the stream itself. */
static int head_route(struct gw_agent *a)
{
    struct gw_stream *s = a->s;
    char why[160], target[GW_TARGET_MAX];
    int rc, reason, n;

    rc = gw_path_split(s->path, strlen(s->path), &a->path);
    if (rc == 0)
        a->rt = gw_route_find(&a->gw->cfg.routes, a->path.tunnel, a->path.tunnel_len,
                              a->path.server, a->path.server_len);
    if (rc == AL_ERR_INVAL) {
        agent_fail(a, 400, REASON(INVALID_FIELD), "the request path is not allowed");
        return -1;
    }
    if (rc < 0 || !a->rt) {
        agent_fail(a, 404, REASON(NOT_FOUND), "no such tunnel or server on this gateway");
        return -1;
    }
    a->route = (size_t)(a->rt - a->gw->cfg.routes.v);
    n = gw_target(rl_upstream_base_path(a->gw->ups[a->route]), a->path.rest, a->path.rest_len,
                  target, sizeof(target));
    if (n < 0 || !(a->target = al_arena_strndup(&s->arena, target, (size_t)n))) {
        agent_fail(a, 414, REASON(TOO_LARGE), "the request path is too long");
        return -1;
    }
    reason = check_grant(a, why, sizeof(why));
    if (reason) {
        al_metric_add(a->gw->m.grant_denials, 1);
        agent_fail(a, 403, reason, why);
        return -1;
    }
    return 0;
}

static int head_checks(struct gw_agent *a)
{
    struct gw_stream *s = a->s;
    int post = strcmp(s->method, "POST") == 0;
    const char *rep;
    char why[96];
    size_t sl;

    if (!post && strcmp(s->method, "GET") != 0 && strcmp(s->method, "DELETE") != 0) {
        agent_fail(a, 405, REASON(INVALID_FIELD), "MCP uses POST, GET and DELETE only");
        return -1;
    }
    if ((rep = repeated_header(s)) != NULL) {
        /* the upstream could read the copy the gateway did not check */
        snprintf(why, sizeof(why), "more than one %s header", rep);
        agent_fail(a, 400, REASON(INVALID_FIELD), why);
        return -1;
    }
    a->clen = content_length(s);
    if (a->clen == -2) {
        agent_fail(a, 400, REASON(INVALID_FIELD), "malformed Content-Length");
        return -1;
    }
    if (!post && a->clen > 0) {
        /* only POST bodies are inspected: no other body reaches the upstream */
        agent_fail(a, 400, REASON(INVALID_FIELD), "GET and DELETE requests carry no body");
        return -1;
    }
    if (post && a->clen > (int64_t)a->gw->cfg.max_body) {
        agent_fail(a, 413, REASON(TOO_LARGE), "the request body is too large");
        return -1;
    }
    a->sid = gw_stream_header(s, "mcp-session-id");
    sl = a->sid ? a->sid->vl : 0;
    if (a->sid && (sl == 0 || sl > GW_SESSION_ID_MAX)) {
        agent_fail(a, 400, REASON(INVALID_FIELD), "malformed Mcp-Session-Id");
        return -1;
    }
    if (a->sid && gw_sessions_check(a->gw->sessions, a->rt->name, a->sid->value, sl, a->principal,
                                    ev_now(a->gw->svc.loop)) < 0) {
        al_metric_add(a->gw->m.policy_denials, 1);
        agent_fail(a, 403, REASON(POLICY_DENIED), "this MCP session belongs to another principal");
        return -1;
    }
    return 0;
}

void gw_agent_head(struct gw_stream *s)
{
    struct gw_agent *a = calloc(1, sizeof(*a));

    if (!a) {
        gw_stream_reset(s, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    s->a = a;
    a->s = s;
    a->gw = s->c->gw;
    a->t0 = ev_now(a->gw->svc.loop);
    a->t_ms = gw_unix_ms();
    a->clen = -1;
    rl_buf_init(&a->body, a->gw->cfg.max_body);
    rl_buf_init(&a->held, 0);
    rl_buf_init(&a->tmp, 0);
    if (s->head_status) {
        agent_fail(a, 431, REASON(TOO_LARGE), "the request header block is too large");
        return;
    }
    if (!s->method || !s->path) {
        agent_fail(a, 400, REASON(INVALID_FIELD), "malformed request");
        return;
    }
    if (head_route(a) < 0)
        return;
    if (gw_cred_reserve(a->gw) < 0) {
        agent_fail(a, 503, REASON(CREDENTIAL_UNAVAILABLE),
                   "the gateway cannot record credential uses right now; retry later");
        return;
    }
    a->record = 1;
    a->policy = gw_policy_for(a->rt, a->principal);
    if (head_checks(a) < 0)
        return;
    if (strcmp(s->method, "POST") == 0)
        a->phase = GW_P_BODY;
    else
        start_cred(a);
}

/* ---------- MCP inspection ---------- */

static int is_json(const uint8_t *p, size_t n)
{
    json_error_t e;
    json_t *j = json_loadb((const char *)p, n, JSON_DECODE_ANY, &e);

    json_decref(j);
    return j != NULL;
}

/* "method" or "method:name" for the audit record and the log, cut to
 * AL_EDGE_TOOL_MAX bytes on a UTF-8 character boundary. Never arguments. */
static void set_tool(struct gw_agent *a)
{
    const struct rl_mcp_msg *m = &a->msg;
    const char *parts[3] = {m->method, m->target != RL_MCP_NONE ? ":" : "",
                            m->target != RL_MCP_NONE ? m->name : ""};
    size_t n = 0;

    if (m->type == RL_MCP_RESPONSE)
        parts[0] = "(response)";
    for (int i = 0; i < 3; i++) {
        size_t l = strlen(parts[i]);
        if (l > AL_EDGE_TOOL_MAX - n) {
            l = AL_EDGE_TOOL_MAX - n;
            while (l > 0 && ((unsigned char)parts[i][l] & 0xC0) == 0x80)
                l--;
        }
        memcpy(a->tool + n, parts[i], l);
        n += l;
    }
    a->tool[n] = 0;
}

/* MCP 2026-07-28 and later: requests and notifications carry Mcp-Method,
 * and Mcp-Name when the method acts on an item (rl_mcp_check_headers has
 * compared the values; here only their presence). */
static int headers_missing(const struct gw_agent *a, const char *mm, const char *mn, char *err,
                           size_t errn)
{
    size_t vl;
    const char *v = hval(a->s, "mcp-protocol-version", &vl);

    if (!v || vl != 10 || memcmp(v, "2026-07-28", 10) < 0 || a->msg.type == RL_MCP_RESPONSE)
        return 0;
    if (!mm) {
        snprintf(err, errn, "Mcp-Method header required by this protocol version");
        return 1;
    }
    if (!mn && a->msg.target != RL_MCP_NONE) {
        snprintf(err, errn, "Mcp-Name header required by this protocol version");
        return 1;
    }
    return 0;
}

static int mcp_checks(struct gw_agent *a)
{
    struct gw_stream *s = a->s;
    size_t ml, nl;
    const char *mm = hval(s, "mcp-method", &ml), *mn = hval(s, "mcp-name", &nl);
    char err[256];

    if (rl_mcp_parse(a->body.p, a->body.len, &a->msg, err, sizeof(err)) < 0) {
        agent_fail_code(a, 400,
                        is_json(a->body.p, a->body.len) ? RL_MCP_ERR_INVALID : RL_MCP_ERR_PARSE,
                        REASON(INVALID_FIELD), err);
        return -1;
    }
    a->have_msg = 1;
    set_tool(a);
    if (rl_mcp_check_headers(&a->msg, mm, ml, mn, nl, err, sizeof(err)) < 0 ||
        headers_missing(a, mm, mn, err, sizeof(err))) {
        agent_fail_code(a, 400, RL_MCP_ERR_HEADER, REASON(INVALID_FIELD), err);
        return -1;
    }
    if (rl_mcp_authorize(&a->msg, gw_policy_allows, (void *)a->policy, err, sizeof(err)) < 0) {
        al_metric_add(a->gw->m.policy_denials, 1);
        agent_fail(a, 403, REASON(POLICY_DENIED), err);
        return -1;
    }
    return 0;
}

/* ---------- request body ---------- */

static void consume(struct gw_agent *a, size_t n)
{
    nghttp2_session *ss = gw_stream_session(a->s);

    if (ss && n) {
        nghttp2_session_consume(ss, a->s->id, n);
        al_h2conn_flush(a->s->c->h2);
    }
}

static void upstream_gone(struct gw_agent *a, int err, const char *why);

/* Moves request bytes to the upstream as far as it takes them. */
static void pump_body(struct gw_agent *a)
{
    int rc;

    while (a->ureq && a->body_sent < a->body.len) {
        size_t n = a->body.len - a->body_sent;
        n = n < WRITE_CHUNK ? n : WRITE_CHUNK;
        rc = rl_ureq_write(a->ureq, a->body.p + a->body_sent, n);
        if (rc == AL_ERR_TOOBIG) {
            rl_ureq_want_writable(a->ureq, UP_LOW_WATER);
            return;
        }
        if (rc < 0)
            return; /* the upstream failed: its on_error follows */
        a->body_sent += n;
        a->req_bytes += (int64_t)n;
    }
    if (a->ureq && a->held.len) {
        rc = rl_ureq_write(a->ureq, a->held.p, a->held.len);
        if (rc == AL_ERR_TOOBIG) {
            rl_ureq_want_writable(a->ureq, UP_LOW_WATER);
            return;
        }
        if (rc < 0)
            return;
        a->req_bytes += (int64_t)a->held.len;
        consume(a, a->held.len);
        rl_buf_reset(&a->held);
    }
    if (a->ureq && a->s->req_ended && !a->ureq_ended) {
        a->ureq_ended = 1;
        if (rl_ureq_end(a->ureq) < 0)
            upstream_gone(a, AL_ERR_STATE, "the upstream request could not be completed");
    }
}

/* Body bytes on a GET or DELETE: never inspected, so never forwarded. The
 * request is refused, whatever was started for it is stopped. */
static void body_refused(struct gw_agent *a)
{
    gw_cred_cancel(a->rs);
    a->rs = NULL;
    if (a->ureq) {
        rl_ureq_cancel(a->ureq);
        a->ureq = NULL;
    }
    agent_fail(a, 400, REASON(INVALID_FIELD), "GET and DELETE requests carry no body");
}

/* The body no longer counts against max_buffered (freed, or refused). */
static void release_body(struct gw_agent *a)
{
    a->gw->buffered -= a->buffered;
    a->buffered = 0;
    rl_buf_cleanup(&a->body);
}

void gw_agent_data(struct gw_stream *s, const uint8_t *d, size_t n)
{
    struct gw_agent *a = s->a;

    if (n && (a->phase == GW_P_CRED || a->phase == GW_P_UP) && strcmp(s->method, "POST") != 0) {
        consume(a, n);
        body_refused(a);
        return;
    }
    switch (a->phase) {
    case GW_P_BODY:
        consume(a, n); /* the body cap bounds what is buffered here */
        if (a->body.len + n <= a->gw->cfg.max_body &&
            a->gw->buffered + n > a->gw->cfg.max_buffered) { /* 413 stays first */
            release_body(a);
            agent_fail(a, 503, REASON(RATE_LIMITED),
                       "the gateway holds too many request bodies at once; retry shortly");
            return;
        }
        if (rl_buf_append(&a->body, d, n) < 0) {
            agent_fail(a, 413, REASON(TOO_LARGE), "the request body is too large");
            return;
        }
        a->buffered += n;
        a->gw->buffered += n;
        return;
    case GW_P_CRED:
    case GW_P_UP:
        if (a->ureq && a->held.len == 0 && a->body_sent == a->body.len &&
            rl_ureq_write(a->ureq, d, n) == 0) {
            a->req_bytes += (int64_t)n;
            consume(a, n);
            return;
        }
        if (rl_buf_append(&a->held, d, n) < 0) {
            consume(a, n);
            upstream_gone(a, AL_ERR_NOMEM, "out of memory");
        }
        return;
    default:
        consume(a, n); /* answered already: dropped */
        return;
    }
}

void gw_agent_end(struct gw_stream *s)
{
    struct gw_agent *a = s->a;

    if (a->phase == GW_P_BODY) {
        if (mcp_checks(a) == 0)
            start_cred(a);
    } else if (a->phase == GW_P_UP) {
        pump_body(a);
    }
}

/* ---------- credential ---------- */

static void start_upstream(struct gw_agent *a);

static void cred_cb(void *user, struct gw_value *v, int status, int reason, const char *why)
{
    struct gw_agent *a = user;

    a->rs = NULL;
    if (!v) {
        agent_fail(a, status, reason, why);
        return;
    }
    a->v = v;
    start_upstream(a);
}

static void start_cred(struct gw_agent *a)
{
    struct gw_value *hit = NULL;
    int rc;

    a->phase = GW_P_CRED;
    rc = gw_cred_get(a->gw, a->route, a->g, a->grant, cred_cb, a, &a->rs, &hit);
    if (rc == 1) {
        a->v = hit;
        a->cache_hit = 1;
        start_upstream(a);
    } else if (rc < 0) {
        agent_fail(a, 502, REASON(CREDENTIAL_UNAVAILABLE), "the route's credential is unavailable");
    }
}

/* ---------- upstream ---------- */

static void on_up_head(struct rl_ureq *r, int status, const struct rl_h1_header *h, size_t n,
                       void *user);
static void on_up_data(struct rl_ureq *r, const uint8_t *d, size_t n, void *user);
static void on_up_end(struct rl_ureq *r, void *user);
static void on_up_error(struct rl_ureq *r, int err, const char *why, void *user);
static void on_up_writable(struct rl_ureq *r, void *user);

static const struct rl_ureq_cbs up_cbs = {on_up_head, on_up_data, on_up_end, on_up_error,
                                          on_up_writable};

/* The request headers the upstream gets. */
static size_t upstream_headers(const struct gw_agent *a, struct rl_h1_header *out, size_t cap)
{
    const struct gw_stream *s = a->s;
    size_t n = 0;

    for (size_t i = 0; i < s->nhdr && n + 2 < cap; i++) {
        const struct gw_hdr *h = &s->hdr[i];
        if (gw_req_header_dropped(h->name, h->nl) || strcmp(h->name, a->v->header) == 0)
            continue;
        out[n++] = (struct rl_h1_header){h->name, h->nl, h->value, h->vl};
    }
    out[n++] = (struct rl_h1_header){"accept-encoding", 15, "identity", 8};
    out[n++] = (struct rl_h1_header){a->v->header, strlen(a->v->header), (const char *)a->v->inject,
                                     a->v->inject_len};
    return n;
}

static void start_upstream(struct gw_agent *a)
{
    struct gw_stream *s = a->s;
    struct rl_h1_header h[GW_MAX_HEADERS + 2];
    size_t n = upstream_headers(a, h, GW_MAX_HEADERS + 2);
    int64_t cl;
    int rc;

    /* the POST body was inspected whole; GET and DELETE carry none (a body
     * arriving for one refuses the request: gw_agent_data) */
    cl = strcmp(s->method, "POST") == 0 ? (int64_t)a->body.len : 0;
    rc = rl_ureq_start(a->gw->ups[a->route], s->method, a->target, h, n, cl, &up_cbs, a, &a->ureq);
    if (rc < 0) {
        a->ureq = NULL;
        agent_fail(a, 502, REASON(UPSTREAM_FAILED), "the upstream request could not be made");
        return;
    }
    a->up_started = 1;
    a->phase = GW_P_UP;
    pump_body(a);
}

static void up_class(struct gw_agent *a, int status)
{
    int k = status >= 100 && status < 600 ? status / 100 : 5;
    al_metric_add(a->gw->m.up[status > 0 ? k : 0], 1);
}

/* Ends the upstream request with why as the record's reason. Returns 1 when
 * the response had started (the stream is reset: nothing more to say). */
static int upstream_stop(struct gw_agent *a, const char *why)
{
    if (a->ureq) {
        rl_ureq_cancel(a->ureq);
        a->ureq = NULL;
    }
    set_deny(a, why);
    if (a->s->submitted) {
        gw_stream_reset(a->s, NGHTTP2_INTERNAL_ERROR);
        a->phase = GW_P_END;
        return 1;
    }
    return 0;
}

static void upstream_gone(struct gw_agent *a, int err, const char *why)
{
    if (upstream_stop(a, why))
        return;
    if (err == AL_ERR_AUTH)
        agent_fail(a, 502, REASON(UPSTREAM_ADDRESS_DENIED), why);
    else if (err == AL_ERR_TIMEOUT)
        agent_fail(a, 504, REASON(UPSTREAM_TIMEOUT), why);
    else
        agent_fail(a, 502, REASON(UPSTREAM_FAILED), why);
}

/* The upstream refused the injected credential (its 401): 502 with its own
 * reason, the upstream's answer discarded. */
static void upstream_rejected(struct gw_agent *a, const char *why)
{
    if (!upstream_stop(a, why))
        agent_fail(a, 502, REASON(UPSTREAM_CREDENTIAL_REJECTED), why);
}

/* 1 for an SSE response, 0 for another, -1 when the response names more
 * than one Content-Type (what the agent's client would pick is unknown, so
 * the filters could judge another body than it reads). */
static int is_sse(const struct rl_h1_header *h, size_t n)
{
    int sse = 0, seen = 0;

    for (size_t i = 0; i < n; i++)
        if (h[i].name_len == 12 && memcmp(h[i].name, "content-type", 12) == 0) {
            if (seen++)
                return -1;
            sse = h[i].value_len >= 17 && strncasecmp(h[i].value, "text/event-stream", 17) == 0;
        }
    return sse;
}

/* A header that may go to the relay: not dropped by rule, a valid HTTP/2
 * field, and free of the secret in any form. */
static int header_passes(struct gw_agent *a, const struct rl_h1_header *h)
{
    const struct rl_scrub *sc = a->v->scrub;
    const char *v = h->value_len ? h->value : "";

    if (gw_resp_header_dropped(h->name, h->name_len) ||
        (h->name_len == 16 && memcmp(h->name, "www-authenticate", 16) == 0) ||
        !gw_field_name_valid(h->name, h->name_len) || memchr(v, 0, h->value_len) ||
        memchr(v, '\r', h->value_len) || memchr(v, '\n', h->value_len))
        return 0;
    if (rl_scrub_contains(sc, (const uint8_t *)h->name, h->name_len) ||
        rl_scrub_contains(sc, (const uint8_t *)v, h->value_len)) {
        a->hdr_hits++;
        return 0;
    }
    return 1;
}

/* Session bookkeeping on the response head. Returns 0, or -1 when the
 * upstream handed out a session id another principal holds. */
static int session_head(struct gw_agent *a, int status, const struct rl_h1_header *h, size_t n)
{
    double now = ev_now(a->gw->svc.loop);

    if (status < 200 || status > 299)
        return 0;
    if (a->sid && strcmp(a->s->method, "DELETE") == 0) {
        gw_sessions_remove(a->gw->sessions, a->rt->name, a->sid->value, a->sid->vl);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (h[i].name_len != 14 || memcmp(h[i].name, "mcp-session-id", 14) != 0 ||
            h[i].value_len == 0 || h[i].value_len > GW_SESSION_ID_MAX)
            continue;
        if (gw_sessions_bind(a->gw->sessions, a->rt->name, h[i].value, h[i].value_len, a->principal,
                             now) == AL_ERR_AUTH)
            return -1;
    }
    return 0;
}

static int response_filters(struct gw_agent *a, int sse)
{
    if ((a->have_msg && a->msg.is_list) || sse) {
        if (rl_mcp_filter_new(sse, gw_policy_allows, (void *)a->policy, 0, &a->filter) < 0)
            return -1;
    }
    return rl_scrub_stream_new(a->v->scrub, &a->scrub) < 0 ? -1 : 0;
}

static void on_up_head(struct rl_ureq *r, int status, const struct rl_h1_header *h, size_t n,
                       void *user)
{
    struct gw_agent *a = user;
    nghttp2_nv nv[MAX_RESP_HDR + 1];
    char st[8];
    size_t k = 0;
    (void)r;

    a->up_status = status;
    up_class(a, status);
    if (session_head(a, status, h, n) < 0) {
        AL_LOG_WARN("gateway.session_conflict",
                    "route=%s request=%s reason=\"the upstream "
                    "returned a session id bound to another principal\"",
                    a->rt->name, a->request_id);
        upstream_gone(a, AL_ERR_PROTO, "the upstream returned another principal's session");
        return;
    }
    if (status == 401) {
        /* the gateway injected the route's credential and the server refused
         * it: the agent can do nothing about that (and must not start an
         * authorization flow of its own on the server's WWW-Authenticate) */
        char why[400];
        al_metric_add(a->gw->m.cred_rejected, 1);
        if (a->v)
            gw_cache_drop(a->gw->cred.cache, a->v); /* resolved again next time */
        snprintf(why, sizeof(why),
                 "the MCP server of route %.64s refused the credential the gateway injected "
                 "(HTTP 401); the operator must check credential %.128s",
                 a->rt->name, a->rt->credential);
        AL_LOG_WARN("gateway.credential_rejected", "route=%s request=%s credential=%s version=%d",
                    a->rt->name, a->request_id, a->rt->credential, a->v ? (int)a->v->version : 0);
        upstream_rejected(a, why);
        return;
    }
    int sse = is_sse(h, n);
    if (sse < 0) {
        upstream_gone(a, AL_ERR_PROTO,
                      "the MCP server's response names more than one Content-Type");
        return;
    }
    if (response_filters(a, sse) < 0) {
        upstream_gone(a, AL_ERR_NOMEM, "out of memory");
        return;
    }
    snprintf(st, sizeof(st), "%d", status);
    nv[k++] = nv_of(":status", st, strlen(st));
    for (size_t i = 0; i < n && k < MAX_RESP_HDR + 1; i++)
        if (header_passes(a, &h[i]))
            nv[k++] =
                (nghttp2_nv){(uint8_t *)h[i].name, (uint8_t *)(h[i].value_len ? h[i].value : ""),
                             h[i].name_len, h[i].value_len, NGHTTP2_NV_FLAG_NONE};
    a->status = status;
    if (gw_stream_submit(a->s, nv, k) < 0)
        upstream_gone(a, AL_ERR_STATE, "the response could not be started");
}

/* Upstream bytes through the list filter and the scrubber into out. */
static int feed(struct gw_agent *a, const uint8_t *d, size_t n)
{
    int rc;

    if (!a->filter)
        return rl_scrub_stream_feed(a->scrub, d, n, &a->s->out);
    rc = rl_mcp_filter_feed(a->filter, d, n, &a->tmp);
    if (rc == 0)
        rc = rl_scrub_stream_feed(a->scrub, a->tmp.p, a->tmp.len, &a->s->out);
    rl_buf_reset(&a->tmp);
    return rc;
}

static void on_up_data(struct rl_ureq *r, const uint8_t *d, size_t n, void *user)
{
    struct gw_agent *a = user;

    a->resp_bytes += (int64_t)n;
    al_metric_add(a->gw->m.bytes_down, (double)n);
    if (feed(a, d, n) < 0) {
        upstream_gone(a, AL_ERR_TOOBIG, "the response could not be filtered");
        return;
    }
    if (!a->paused && a->s->out.len - a->s->out_off > GW_OUT_HIGH) {
        a->paused = 1;
        rl_ureq_pause(r);
    }
    gw_stream_kick(a->s);
}

static void on_up_end(struct rl_ureq *r, void *user)
{
    struct gw_agent *a = user;
    int rc = 0;
    (void)r;

    a->ureq = NULL;
    a->up_ended = 1;
    if (a->filter) {
        rc = rl_mcp_filter_finish(a->filter, &a->tmp);
        if (rc == 0)
            rc = rl_scrub_stream_feed(a->scrub, a->tmp.p, a->tmp.len, &a->s->out);
        rl_buf_reset(&a->tmp);
    }
    if (rc == 0)
        rc = rl_scrub_stream_finish(a->scrub, &a->s->out);
    if (rc < 0) {
        upstream_gone(a, AL_ERR_TOOBIG, "the response could not be filtered");
        return;
    }
    a->phase = GW_P_END;
    a->s->out_eof = 1;
    gw_stream_kick(a->s);
}

static void on_up_error(struct rl_ureq *r, int err, const char *why, void *user)
{
    struct gw_agent *a = user;
    (void)r;

    a->ureq = NULL;
    if (!a->up_status)
        up_class(a, 0);
    AL_LOG_INFO("gateway.upstream_error", "route=%s request=%s reason=\"%s\"", a->rt->name,
                a->request_id, why ? why : al_strerror(err));
    upstream_gone(a, err, why && *why ? why : "the upstream failed");
}

static void on_up_writable(struct rl_ureq *r, void *user)
{
    (void)r;
    pump_body(user);
}

void gw_agent_drained(struct gw_stream *s)
{
    struct gw_agent *a = s->a;

    if (a->paused && a->ureq && s->out.len - s->out_off <= GW_OUT_LOW) {
        a->paused = 0;
        rl_ureq_resume(a->ureq);
    }
}

/* ---------- end ---------- */

/* path of the target, without query; the mark instead of any secret. */
static void record_text(const struct gw_agent *a, const char *in, char *out, size_t n)
{
    size_t l = strcspn(in, "?");

    if (l >= n)
        l = n - 1;
    memcpy(out, in, l);
    out[l] = 0;
    if (a->v && rl_scrub_contains(a->v->scrub, (const uint8_t *)out, l))
        snprintf(out, n, "%s", RL_SCRUB_MARK);
}

static void record_use(struct gw_agent *a, uint32_t code)
{
    struct gw_stream *s = a->s;
    char path[AL_EDGE_PATH_MAX + 1], tool[AL_EDGE_TOOL_MAX + 1];
    struct al_edge_use u = {0};

    record_text(a, a->target ? a->target : "", path, sizeof(path));
    snprintf(tool, sizeof(tool), "%s", a->tool);
    if (a->v && rl_scrub_contains(a->v->scrub, (const uint8_t *)tool, strlen(tool)))
        snprintf(tool, sizeof(tool), "%s", RL_SCRUB_MARK);
    if (!a->deny[0] && code != NGHTTP2_NO_ERROR && !(a->up_ended && s->resp_ended))
        snprintf(a->deny, sizeof(a->deny), "the request was cancelled before it completed");
    u.credential = a->rt->credential;
    u.version = a->up_started && a->v ? a->v->version : 0;
    u.destination = rl_upstream_destination(a->gw->ups[a->route]);
    u.method = s->method;
    u.path = path;
    u.status = a->up_status;
    u.request_bytes = a->req_bytes;
    u.response_bytes = a->resp_bytes;
    u.allow = a->up_started;
    u.reason = a->v && rl_scrub_contains(a->v->scrub, (const uint8_t *)a->deny, strlen(a->deny))
                   ? RL_SCRUB_MARK
                   : a->deny;
    u.time_ms = a->t_ms;
    u.request_id = a->request_id;
    u.tool = tool;
    u.duration_us = (int64_t)((ev_now(a->gw->svc.loop) - a->t0) * 1e6);
    gw_cred_record(a->gw, a->g, &u);
}

static void log_request(const struct gw_agent *a, uint32_t code)
{
    const struct gw_stream *s = a->s;
    char tool[160], pr[160];
    int k = a->status >= 100 && a->status < 600 ? a->status / 100 : 0;

    al_metric_add(a->gw->m.req[code != NGHTTP2_NO_ERROR && !a->status ? 0 : k], 1);
    AL_LOG_INFO("gateway.request",
                "conn=%llu stream=%d request=%s principal=%s route=%s method=%s tool=%s "
                "status=%d upstream_status=%d req_bytes=%lld resp_bytes=%lld ms=%.1f cache=%s "
                "decision=%s h2_error=%u",
                (unsigned long long)s->c->id, s->id, a->request_id ? a->request_id : "-",
                a->principal ? al_log_quote(pr, sizeof(pr), a->principal, strlen(a->principal))
                             : "-",
                a->rt ? a->rt->name : "-", s->method ? s->method : "-",
                a->tool[0] ? al_log_quote(tool, sizeof(tool), a->tool, strlen(a->tool)) : "-",
                a->status, a->up_status, (long long)a->req_bytes, (long long)a->resp_bytes,
                (ev_now(a->gw->svc.loop) - a->t0) * 1000.0, a->cache_hit ? "hit" : "miss",
                a->up_started ? "allow" : "deny", code);
}

void gw_agent_closed(struct gw_stream *s, uint32_t code)
{
    struct gw_agent *a = s->a;

    if (!a)
        return;
    gw_cred_cancel(a->rs);
    a->rs = NULL;
    if (a->held.len && gw_stream_session(s)) /* the connection window gets them back */
        nghttp2_session_consume_connection(gw_stream_session(s), a->held.len);
    if (a->ureq) {
        rl_ureq_cancel(a->ureq);
        a->ureq = NULL;
    }
    if (a->scrub) {
        unsigned long hits = rl_scrub_stream_hits(a->scrub) + a->hdr_hits;
        al_metric_add(a->gw->m.scrub_hits, (double)hits);
    } else {
        al_metric_add(a->gw->m.scrub_hits, (double)a->hdr_hits);
    }
    if (a->filter)
        al_metric_add(a->gw->m.list_removed, (double)rl_mcp_filter_removed(a->filter));
    al_metric_add(a->gw->m.bytes_up, (double)a->req_bytes);
    if (a->record)
        record_use(a, code);
    log_request(a, code);
    rl_mcp_filter_free(a->filter);
    rl_scrub_stream_free(a->scrub);
    gw_value_unref(a->v);
    al_grant_free(a->grant);
    al_edge_grant_unref(a->g);
    release_body(a);
    rl_buf_cleanup(&a->held);
    rl_buf_cleanup(&a->tmp);
    free(a);
    s->a = NULL;
}
