/*
 * req: one request from a sandbox that the proxy forwards itself: inside an
 * intercepted CONNECT (origin-form, to the CONNECT host over verified TLS)
 * or a plain http:// request in absolute-form on the outer connection.
 *
 * Checks, in this order, each refusal a one-line text answer and a Use
 * record: the target (absolute-form URL or origin-form path, target.h: 400),
 * the Host header against the target or the CONNECT authority (400), the
 * job's request rate (429), room for the Use record (503: a request never
 * runs unrecorded), placeholders (inject.h: only in a credential's template
 * slot, for a destination it is bound to, over TLS unless the template
 * allows plain http: 403, flagged as exfiltration), the destination for
 * plain http (the ceiling entry must allow_http: 403), method and path
 * prefix (policy.h, on the normalised path: 403), the job's byte limit
 * (403).
 *
 * Forwarding. The upstream request carries the client's method, target and
 * headers minus the hop-by-hop ones (Connection and what it names,
 * Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Expect, Host, every
 * Proxy-* header) and Accept-Encoding (replaced by "identity": a compressed
 * body could not be scrubbed); a slot header carries the injected value
 * instead (locked memory, wiped as soon as the upstream request has copied
 * it; upstream.c wipes its own copy as it is written). The body streams
 * through the placeholder detector (rl_scrub over the job's placeholders in
 * every encoding, across chunk boundaries): up to EG_PRECHECK bytes are held
 * before the upstream request even starts, so a small body with a
 * placeholder never leaves; a later hit cancels the upstream request mid-
 * body (the server never receives a complete request) and ends the client
 * connection, or answers 403 if no response has started. Back-pressure: the
 * client's body is paused while more than 256 KiB wait for the upstream,
 * the upstream's response while more than 512 KiB wait for the client.
 *
 * The response streams back with every value of the job, in every encoding,
 * replaced by its placeholder (the job's response scrubber; header values
 * too), framed by h1 (chunked, since scrubbing changes lengths), the client
 * connection kept alive when both sides allow it. An upstream failure
 * before the response head is a 502 (504 for a timeout) naming the reason;
 * after it, the client connection is closed (a truncated body is the only
 * honest signal). Every request ends with exactly one Use record.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "al_err.h"
#include "al_log.h"
#include "egress.h"
#include "scrub.h"

#define UP_HIGH   (256 * 1024) /* client body waiting for the upstream: pause the client */
#define UP_CHUNK  (64 * 1024)
#define DOWN_HIGH (512 * 1024) /* response waiting for the client: pause the upstream */
#define DOWN_LOW  (128 * 1024)

struct eg_req {
    struct eg_conn *c;
    struct eg_job *j;
    int plain;
    struct eg_authority auth;
    char dest[EG_HOSTPORT_MAX + 8];
    char method[EG_METHOD_MAX];
    char *target; /* origin-form */
    char *npath;  /* normalised path */
    struct eg_scan scan;
    struct rl_buf hstore; /* copied names and values, NUL separated */
    struct rl_h1_header *hv;
    size_t nh;
    int64_t clen; /* -1 chunked */
    struct rl_scrub_stream *detect;
    struct rl_buf body; /* request body not yet written upstream */
    struct rl_ureq *ur;
    struct eg_scrubset *rs;
    struct rl_scrub_stream *rstream;
    struct rl_buf rout;
    uint64_t req_bytes, resp_bytes;
    long cred; /* the first credential substituted, -1 none */
    int status;
    int reserved, origin_ok, started, body_end, ended_up, responded, client_paused, up_paused;
    ev_tstamp t0; /* the head arrived (the record's duration) */
};

static const struct rl_ureq_cbs ureq_cbs;

/* --------------------------------------------------------------- ending */

static void req_free(struct eg_req *r)
{
    if (r->c->req == r)
        r->c->req = NULL;
    if (r->ur)
        rl_ureq_cancel(r->ur);
    if (r->reserved)
        eg_ctl_release(r->j->p->ctl);
    eg_scan_cleanup(&r->scan);
    rl_scrub_stream_free(r->detect);
    rl_scrub_stream_free(r->rstream);
    eg_scrubset_unref(r->rs);
    rl_buf_cleanup(&r->hstore);
    rl_buf_cleanup(&r->body);
    rl_buf_cleanup(&r->rout);
    free(r->hv);
    free(r->target);
    free(r->npath);
    free(r);
}

static void record(struct eg_req *r, int status, int allowed, const char *reason, long cred,
                   int exfil)
{
    struct eg_use u = {.cred = cred,
                       .destination = r->dest,
                       .method = r->method,
                       .path = r->target ? r->target : "",
                       .status = status,
                       .req_bytes = (int64_t)r->req_bytes,
                       .resp_bytes = (int64_t)r->resp_bytes,
                       .allowed = allowed,
                       .reason = reason,
                       .exfil = exfil,
                       .t0 = r->t0};

    eg_job_use(r->j, &u, r->reserved ? EG_CTL_RESERVED : EG_CTL_USE);
    r->reserved = 0;
}

/* Refuses before any response: records, answers, frees. */
static void deny(struct eg_req *r, int status, const char *reason, long cred, int exfil, int keep)
{
    struct rl_h1conn *h1 = r->c->h1;
    char text[EG_REASON_MAX];

    AL_LOG_INFO("egress.req.denied", "job=%s conn=%llu dest=%s method=%s status=%d reason=\"%s\"",
                r->j->id, (unsigned long long)r->c->id, r->dest, r->method, status, reason);
    if (r->ur) {
        rl_ureq_cancel(r->ur);
        r->ur = NULL;
    }
    record(r, status, 0, reason, cred, exfil);
    snprintf(text, sizeof(text), "%s", reason); /* reason may live in r */
    req_free(r);
    if (h1)
        eg_respond_text(h1, status, text, keep);
}

void eg_req_abort(struct eg_req *r, const char *reason)
{
    if (r->ur) {
        rl_ureq_cancel(r->ur);
        r->ur = NULL;
    }
    record(r, r->status, r->started, reason, r->cred, 0);
    req_free(r);
}

/* ------------------------------------------------------------- headers */

static int name_is(const struct rl_h1_header *h, const char *n)
{
    return h->name_len == strlen(n) && memcmp(h->name, n, h->name_len) == 0;
}

/* Is token t[0..n) in the comma-separated list v? */
static int list_has(const char *v, size_t vn, const char *t, size_t n)
{
    size_t i = 0;

    while (i < vn) {
        size_t s;
        while (i < vn && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        s = i;
        while (i < vn && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
            i++;
        if (i - s == n && strncasecmp(v + s, t, n) == 0)
            return 1;
    }
    return 0;
}

static int hop_by_hop(const struct rl_h1_head *h, const struct rl_h1_header *x)
{
    static const char *const names[] = {"connection",
                                        "keep-alive",
                                        "te",
                                        "trailer",
                                        "transfer-encoding",
                                        "upgrade",
                                        "expect",
                                        "content-length",
                                        "host",
                                        "accept-encoding",
                                        NULL};

    for (int i = 0; names[i]; i++)
        if (name_is(x, names[i]))
            return 1;
    if (x->name_len >= 6 && memcmp(x->name, "proxy-", 6) == 0)
        return 1;
    for (size_t i = 0; i < h->nheaders; i++)
        if (name_is(&h->headers[i], "connection") &&
            list_has(h->headers[i].value, h->headers[i].value_len, x->name, x->name_len))
            return 1;
    return 0;
}

/* The headers for the upstream: copies in hstore, substituted values from
 * the scan (locked memory), Accept-Encoding: identity. */
static int build_headers(struct eg_req *r, const struct rl_h1_head *h)
{
    size_t *off = calloc(2 * (h->nheaders + 1), sizeof(size_t));
    int rc = 0;

    r->hv = calloc(h->nheaders + 1, sizeof(*r->hv));
    if (!off || !r->hv) {
        free(off);
        return AL_ERR_NOMEM;
    }
    for (size_t i = 0; i < h->nheaders && rc == 0; i++) {
        const struct rl_h1_header *x = &h->headers[i];
        const struct eg_subst *s = NULL;
        if (hop_by_hop(h, x))
            continue;
        for (size_t k = 0; k < r->scan.nsubst; k++)
            if (r->scan.subst[k].header == i)
                s = &r->scan.subst[k];
        r->hv[r->nh] = (struct rl_h1_header){NULL, x->name_len, NULL, 0};
        off[2 * r->nh] = r->hstore.len;
        rc = rl_buf_append(&r->hstore, x->name, x->name_len);
        if (rc == 0 && s) {
            r->hv[r->nh].value = (const char *)s->value;
            r->hv[r->nh].value_len = s->len;
            off[2 * r->nh + 1] = SIZE_MAX;
        } else if (rc == 0) {
            off[2 * r->nh + 1] = r->hstore.len;
            r->hv[r->nh].value_len = x->value_len;
            rc = rl_buf_append(&r->hstore, x->value, x->value_len);
        }
        r->nh++;
    }
    if (rc == 0) {
        r->hv[r->nh] = (struct rl_h1_header){NULL, 15, "identity", 8};
        off[2 * r->nh] = r->hstore.len;
        off[2 * r->nh + 1] = SIZE_MAX;
        rc = rl_buf_append(&r->hstore, "accept-encoding", 15);
        r->nh++;
    }
    /* the store is complete: turn offsets into pointers */
    for (size_t i = 0; rc == 0 && i < r->nh; i++) {
        r->hv[i].name = (const char *)r->hstore.p + off[2 * i];
        if (off[2 * i + 1] != SIZE_MAX)
            r->hv[i].value = (const char *)r->hstore.p + off[2 * i + 1];
    }
    free(off);
    return rc;
}

/* ------------------------------------------------------------ the body */

static void pause_client(struct eg_req *r, int on)
{
    struct rl_h1conn *h1 = r->c->h1;

    if (!h1 || on == r->client_paused)
        return;
    r->client_paused = on;
    if (on)
        rl_h1conn_pause(h1);
    else
        rl_h1conn_resume(h1);
}

/* Writes held body bytes upstream while it takes them. */
static void pump_body(struct eg_req *r)
{
    while (r->ur && r->body.len && rl_ureq_pending(r->ur) < UP_HIGH) {
        size_t n = r->body.len < UP_CHUNK ? r->body.len : UP_CHUNK;
        int rc = rl_ureq_write(r->ur, r->body.p, n);
        if (rc == AL_ERR_TOOBIG)
            break;
        rl_buf_consume(&r->body, n); /* written, or refused for good (AL_ERR_STATE) */
        if (rc < 0 && rc != AL_ERR_STATE)
            break;
    }
    if (r->ur && r->body_end && !r->body.len && !r->ended_up) {
        r->ended_up = 1;
        rl_ureq_end(r->ur);
    }
    if (r->ur && r->body.len)
        rl_ureq_want_writable(r->ur, UP_CHUNK);
    pause_client(r, r->body.len > UP_HIGH);
}

static void maybe_start(struct eg_req *r)
{
    char reason[EG_REASON_MAX];
    int rc;

    if (r->started || !r->origin_ok)
        return;
    if (!r->body_end && r->body.len < EG_PRECHECK)
        return;
    rc = rl_ureq_start(r->c->up, r->method, r->target, r->hv, r->nh, r->clen, &ureq_cbs, r, &r->ur);
    eg_scan_cleanup(&r->scan); /* the injected values: the request holds its own copy now */
    rl_buf_cleanup(&r->hstore);
    free(r->hv);
    r->hv = NULL;
    r->nh = 0;
    if (rc < 0) {
        snprintf(reason, sizeof(reason), "the request cannot be forwarded (%s)", al_strerror(rc));
        deny(r, rc == AL_ERR_NOMEM ? 500 : 400, reason, -1, 0, 0);
        return;
    }
    r->started = 1;
    pause_client(r, 0);
    pump_body(r);
}

static void body_placeholder(struct eg_req *r)
{
    long k = rl_scrub_stream_first(r->detect);
    char reason[EG_REASON_MAX];
    struct eg_conn *c = r->c;

    snprintf(reason, sizeof(reason), "placeholder of credential %s in the request body",
             k >= 0 && (size_t)k < r->j->ncreds ? r->j->creds[k].name : "?");
    if (!r->responded) {
        deny(r, 403, reason, k, 1, 0);
        return;
    }
    if (r->ur) {
        rl_ureq_cancel(r->ur);
        r->ur = NULL;
    }
    record(r, r->status, 0, reason, k, 1);
    req_free(r);
    eg_conn_abort(c, reason);
}

static void over_budget(struct eg_req *r)
{
    char reason[EG_REASON_MAX];
    struct eg_conn *c = r->c;

    snprintf(reason, sizeof(reason), "the job's byte limit (%lld bytes) was reached",
             (long long)r->j->bytes.max);
    if (!r->responded) {
        deny(r, 403, reason, -1, 0, 0);
        return;
    }
    eg_conn_abort(c, reason);
}

void eg_req_body(struct eg_req *r, const uint8_t *d, size_t n)
{
    struct eg_conn *c = r->c;
    int rc;

    r->req_bytes += n;
    if (eg_job_charge(r->j, n, 1) < 0) {
        over_budget(r);
        return;
    }
    rc =
        r->detect ? rl_scrub_stream_feed(r->detect, d, n, &r->body) : rl_buf_append(&r->body, d, n);
    if (rc < 0) {
        deny(r, 500, "out of memory", -1, 0, 0);
        return;
    }
    if (r->detect && rl_scrub_stream_hits(r->detect)) {
        body_placeholder(r);
        return;
    }
    if (!r->started) {
        maybe_start(r); /* may end r */
        if (c->req == r && !r->started && r->body.len >= EG_PRECHECK)
            pause_client(r, 1); /* the origin is not ready yet */
        return;
    }
    pump_body(r);
}

void eg_req_body_end(struct eg_req *r)
{
    if (r->detect && rl_scrub_stream_finish(r->detect, &r->body) < 0) {
        deny(r, 500, "out of memory", -1, 0, 0);
        return;
    }
    if (r->detect && rl_scrub_stream_hits(r->detect)) {
        body_placeholder(r);
        return;
    }
    r->body_end = 1;
    if (!r->started)
        maybe_start(r);
    else
        pump_body(r);
}

/* --------------------------------------------------------- the response */

static void on_head(struct rl_ureq *ur, int status, const struct rl_h1_header *h, size_t n,
                    void *user)
{
    struct eg_req *r = user;
    struct rl_h1_header *out = calloc(n ? n : 1, sizeof(*out));
    struct rl_buf vals;
    size_t *voff = calloc(n ? n : 1, sizeof(size_t));
    size_t k = 0;
    int rc = 0;

    (void)ur;
    r->status = status;
    rl_buf_init(&vals, 0);
    r->rs = eg_scrubset_ref(r->j->resp);
    if (!out || !voff || (r->rs && rl_scrub_stream_new(r->rs->s, &r->rstream) < 0))
        rc = AL_ERR_NOMEM;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (name_is(&h[i], "content-length") || name_is(&h[i], "date") ||
            (r->rs && rl_scrub_contains(r->rs->s, (const uint8_t *)h[i].name, h[i].name_len)))
            continue;
        voff[k] = vals.len;
        if (r->rs) {
            long m = rl_scrub_copy(r->rs->s, (const uint8_t *)h[i].value, h[i].value_len, &vals);
            rc = m < 0 ? (int)m : 0;
        } else {
            rc = rl_buf_append(&vals, h[i].value, h[i].value_len);
        }
        out[k].name = h[i].name;
        out[k].name_len = h[i].name_len;
        out[k].value_len = vals.len - voff[k];
        k++;
    }
    for (size_t i = 0; rc == 0 && i < k; i++)
        out[i].value = (const char *)vals.p + voff[i];
    if (rc == 0)
        rc = rl_h1conn_respond_head(r->c->h1, status, out, k, -1);
    rl_buf_cleanup(&vals);
    free(out);
    free(voff);
    if (rc < 0) {
        struct eg_conn *c = r->c;
        record(r, 502, 1, "the upstream response head could not be passed on", r->cred, 0);
        req_free(r); /* cancels ur */
        eg_conn_abort(c, "response head refused");
        return;
    }
    r->responded = 1;
}

static void send_out(struct eg_req *r)
{
    if (!r->rout.len)
        return;
    if (rl_h1conn_respond_body(r->c->h1, r->rout.p, r->rout.len) < 0) {
        struct eg_conn *c = r->c;
        record(r, r->status, 1, "the client stopped taking the response", r->cred, 0);
        req_free(r);
        eg_conn_abort(c, "response body refused");
        return;
    }
    rl_buf_reset(&r->rout);
}

static void on_data(struct rl_ureq *ur, const uint8_t *d, size_t n, void *user)
{
    struct eg_req *r = user;
    struct eg_conn *c = r->c;
    int rc;

    r->resp_bytes += n;
    if (eg_job_charge(r->j, n, 0) < 0) {
        over_budget(r);
        return;
    }
    rc = r->rstream ? rl_scrub_stream_feed(r->rstream, d, n, &r->rout)
                    : rl_buf_append(&r->rout, d, n);
    if (rc < 0) {
        record(r, r->status, 1, "out of memory", r->cred, 0);
        req_free(r);
        eg_conn_abort(c, "out of memory");
        return;
    }
    send_out(r);
    if (c->req != r)
        return;
    if (rl_h1conn_pending(c->h1) > DOWN_HIGH && !r->up_paused) {
        r->up_paused = 1;
        rl_ureq_pause(ur);
        rl_h1conn_want_writable(c->h1, DOWN_LOW);
    }
}

static void on_end(struct rl_ureq *ur, void *user)
{
    struct eg_req *r = user;
    struct eg_conn *c = r->c;
    struct rl_h1conn *h1 = c->h1;
    (void)ur;

    r->ur = NULL; /* freed by upstream after this call */
    if (r->rstream && rl_scrub_stream_finish(r->rstream, &r->rout) < 0) {
        record(r, r->status, 1, "out of memory", r->cred, 0);
        req_free(r);
        eg_conn_abort(c, "out of memory");
        return;
    }
    send_out(r); /* may end r */
    if (c->req != r)
        return;
    record(r, r->status, 1, "", r->cred, 0);
    req_free(r);
    rl_h1conn_respond_end(h1, 1);
}

static void on_error(struct rl_ureq *ur, int err, const char *why, void *user)
{
    struct eg_req *r = user;
    struct eg_conn *c = r->c;
    struct rl_h1conn *h1 = c->h1;
    char reason[EG_REASON_MAX];
    int status = err == AL_ERR_TIMEOUT ? 504 : err == AL_ERR_AUTH ? 403 : 502;
    (void)ur;

    r->ur = NULL;
    snprintf(reason, sizeof(reason), "upstream %s: %s", r->dest, why);
    if (r->responded) {
        record(r, r->status, 1, reason, r->cred, 0);
        req_free(r);
        eg_conn_abort(c, reason);
        return;
    }
    record(r, status, err != AL_ERR_AUTH, reason, r->cred, 0);
    int keep = r->body_end;
    req_free(r);
    if (h1)
        eg_respond_text(h1, status, reason, keep);
}

static void on_up_writable(struct rl_ureq *ur, void *user)
{
    (void)ur;
    pump_body(user);
}

static const struct rl_ureq_cbs ureq_cbs = {on_head, on_data, on_end, on_error, on_up_writable};

void eg_req_writable(struct eg_req *r)
{
    if (r->up_paused && r->ur) {
        r->up_paused = 0;
        rl_ureq_resume(r->ur);
    }
}

/* ---------------------------------------------------------------- start */

void eg_req_origin_ready(struct eg_req *r, int err, const char *why)
{
    struct eg_conn *c = r->c;
    char reason[EG_REASON_MAX];
    (void)why;

    if (err < 0) {
        snprintf(reason, sizeof(reason), "%s %s", r->dest,
                 err == AL_ERR_TIMEOUT ? "could not be resolved in time" : "does not resolve");
        deny(r, err == AL_ERR_TIMEOUT ? 504 : 502, reason, -1, 0, 0);
        return;
    }
    if (c->naddr == 0) {
        snprintf(reason, sizeof(reason), "%s resolves only to denied addresses (%s)", r->dest,
                 c->denied_addr);
        deny(r, 403, reason, -1, 0, 0);
        return;
    }
    if (eg_origin_new(c, &r->auth, 1) < 0) {
        deny(r, 502, "cannot set up the upstream origin", -1, 0, 0);
        return;
    }
    r->origin_ok = 1;
    maybe_start(r);
    if (c->req == r && r->started)
        pause_client(r, 0);
}

/* The target: an absolute-form URL (plain) or a path (intercepted). */
static int parse_target(struct eg_req *r, const struct rl_h1_head *h, const char **why)
{
    size_t cap = h->target_len + 2;

    r->target = malloc(cap);
    if (!r->target)
        return AL_ERR_NOMEM;
    r->target[0] = '\0'; /* the Use record's path until the target parses */
    if (r->plain) {
        int rc = eg_url_parse(h->target, h->target_len, &r->auth, r->target, cap, why);
        if (rc < 0)
            r->target[0] = '\0';
        return rc;
    }
    r->auth = r->c->target;
    if (eg_origin_check(h->target, h->target_len, why) < 0)
        return AL_ERR_INVAL;
    memcpy(r->target, h->target, h->target_len + 1);
    return 0;
}

static int host_ok(const struct eg_req *r, const struct rl_h1_head *h)
{
    for (size_t i = 0; i < h->nheaders; i++) {
        struct eg_authority a;
        const char *why;
        if (!name_is(&h->headers[i], "host"))
            continue;
        if (eg_authority_parse(h->headers[i].value, h->headers[i].value_len, r->plain ? 80 : 443,
                               &a, &why) < 0)
            return 0;
        return eg_host_equal(&a.host, &r->auth.host) && a.port == r->auth.port;
    }
    return 1; /* HTTP/1.0 without Host: the target decides */
}

/* Everything decided from the head alone. Returns 0, or 1 when refused. */
static int check_head(struct eg_req *r, const struct rl_h1_head *h)
{
    struct eg_job *j = r->j;
    char reason[EG_REASON_MAX], hp[EG_HOSTPORT_MAX];
    const char *why = NULL;
    struct eg_reach reach;
    int rc;

    if ((rc = parse_target(r, h, &why)) < 0) {
        snprintf(reason, sizeof(reason), "request target: %s",
                 rc == AL_ERR_NOMEM ? "out of memory"
                 : why              ? why
                                    : "too long");
        deny(r, rc == AL_ERR_NOMEM ? 500 : 400, reason, -1, 0, 0);
        return 1;
    }
    snprintf(r->dest, sizeof(r->dest), "%s%s", r->plain ? "http://" : "",
             eg_authority_format(&r->auth, hp, sizeof(hp)));
    if (!host_ok(r, h)) {
        snprintf(reason, sizeof(reason), "the Host header disagrees with %s", hp);
        deny(r, 400, reason, -1, 0, 0);
        return 1;
    }
    if (!eg_job_take_token(j)) {
        snprintf(reason, sizeof(reason), "request rate limit (%g per second) reached",
                 j->bucket.rate);
        deny(r, 429, reason, -1, 0, 1);
        return 1;
    }
    if (eg_ctl_reserve(j->p->ctl) < 0) {
        deny(r, 503, "the audit queue is full (the executor is not reading it)", -1, 0, 1);
        return 1;
    }
    r->reserved = 1;
    j->n_requests++;
    rc = eg_scan_head(j->creds, j->ncreds, j->detect, &r->auth, r->plain, eg_now_ms(j->p),
                      h->target, h->target_len, h->headers, h->nheaders, &r->scan);
    if (rc < 0) {
        deny(r, rc == AL_ERR_NOMEM ? 500 : 403,
             rc == AL_ERR_NOMEM ? "out of memory" : r->scan.reason, r->scan.cred, r->scan.exfil, 1);
        return 1;
    }
    if (r->scan.nsubst)
        r->cred = (long)r->scan.subst[0].cred;
    r->npath = malloc(strlen(r->target) + 2);
    if (!r->npath || eg_path_normalize(r->target, strlen(r->target), r->npath,
                                       strlen(r->target) + 2, &why) < 0) {
        snprintf(reason, sizeof(reason), "request path: %s", r->npath ? why : "out of memory");
        deny(r, 400, reason, -1, 0, 0);
        return 1;
    }
    if (r->plain && !eg_policy_reach(&j->pol, &r->auth, 1, &reach)) {
        snprintf(reason, sizeof(reason), "%s is not an allowed destination for this job", r->dest);
        deny(r, 403, reason, -1, 0, 1);
        return 1;
    }
    if (!eg_policy_request(&j->pol, &r->auth, r->plain, r->method, r->npath, &why)) {
        snprintf(reason, sizeof(reason), "%s %.200s on %s is not allowed for this job: %s",
                 r->method, r->npath, r->dest, why);
        deny(r, 403, reason, -1, 0, 1);
        return 1;
    }
    if (!eg_job_bytes_left(j)) {
        snprintf(reason, sizeof(reason), "the job's byte limit (%lld bytes) is used up",
                 (long long)j->bytes.max);
        deny(r, 403, reason, -1, 0, 1);
        return 1;
    }
    if (r->plain)
        r->c->reach = reach;
    return 0;
}

int eg_req_start(struct eg_conn *c, const struct rl_h1_head *h, int plain)
{
    struct eg_req *r;

    if (c->req)
        return AL_ERR_STATE;
    r = calloc(1, sizeof(*r));
    if (!r)
        return AL_ERR_NOMEM;
    r->c = c;
    r->j = c->job;
    r->t0 = ev_now(c->p->loop);
    r->plain = plain;
    r->cred = -1;
    r->clen = h->chunked ? -1 : h->content_length > 0 ? h->content_length : 0;
    snprintf(r->method, sizeof(r->method), "%s", h->method);
    rl_buf_init(&r->hstore, 0);
    rl_buf_init(&r->body, 0);
    rl_buf_init(&r->rout, 0);
    c->req = r;
    if (check_head(r, h))
        return 0;
    if (build_headers(r, h) < 0 ||
        (r->j->detect && rl_scrub_stream_new(r->j->detect, &r->detect) < 0)) {
        deny(r, 500, "out of memory", -1, 0, 0);
        return 0;
    }
    if (!plain || (c->up && c->up_plain && eg_host_equal(&c->up_auth.host, &r->auth.host) &&
                   c->up_auth.port == r->auth.port)) {
        r->origin_ok = c->up != NULL;
        if (!r->origin_ok) {
            deny(r, 502, "the connection has no upstream origin", -1, 0, 0);
            return 0;
        }
        return 0;
    }
    snprintf(c->dest, sizeof(c->dest), "%.*s", (int)sizeof(c->dest) - 1, r->dest); /* logs */
    if (eg_resolve_start(c, &r->auth) < 0)
        deny(r, 502, "name resolution failed to start", -1, 0, 0);
    return 0;
}
