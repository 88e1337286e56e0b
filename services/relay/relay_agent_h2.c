/*
 * relay_agent_h2: the HTTP/2 front of the agent side (relay_agent_int.h).
 *
 * One struct rl_ah2 per agent connection (al_h2conn as TLS server and
 * HTTP/2 server, manual_window), one struct ah2s per stream, its headers in
 * an arena capped at a few times agents.max_head. Stream path:
 *   begin_headers (header timer) -> header* (capped: 431, or the connection
 *   dies past HEADER_FLOOD_FACTOR) -> HEADERS done: rl_areq_start (body
 *   timer unless END_STREAM) -> data chunks: rl_areq_body, restarting the
 *   body timer -> END_STREAM: rl_areq_body_end -> stream close: detach.
 * Receive windows open only as the core reports body bytes consumed
 * (nghttp2_session_consume), so an agent can never have more than one
 * window of unforwarded body per stream (and the connection window over
 * all streams) in relay memory. Responses use a deferred data provider over
 * the request's out queue, copied straight into the connection's output
 * (NO_COPY); the core reopens the gateway stream's window for exactly those
 * bytes. Rapid resets are answered with GOAWAY ENHANCE_YOUR_CALM; an idle
 * connection (no stream for idle_timeout) gets GOAWAY.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "al_arena.h"
#include "al_err.h"
#include "al_h2conn.h"
#include "al_log.h"
#include "relay_agent_int.h"

#define H2_WINDOW           (256 * 1024) /* per-stream receive window */
#define MAX_HEADERS         100
#define HEADER_FLOOD_FACTOR 4 /* header bytes beyond max_head * this kill the connection */
#define RST_WINDOW_S        1.0
#define RST_MAX_PER_WINDOW  500
#define PING_INTERVAL_S     30.0
#define PING_TIMEOUT_S      20.0

struct ah2s {
    struct rl_ah2 *cc;
    struct ah2s *prev, *next;
    int32_t id;
    struct al_arena arena;
    struct rl_hdr hdr[MAX_HEADERS];
    size_t nhdr, hdr_bytes;
    const char *method, *path;
    size_t path_len;
    int too_large;
    struct rl_areq *r;
    int headers_done, req_ended, resp_submitted, deferred, paused;
    int resp_closed; /* our END_STREAM went out while the agent still sends */
    size_t drained;  /* body bytes discarded since then */
    ev_timer timer;  /* header timeout, then body progress timeout */
};

struct rl_ah2 {
    struct rl_agents *ag;
    struct al_h2conn *h2;
    struct rl_ah2 *prev, *next;
    struct ah2s *streams;
    size_t nstreams;
    uint64_t id;
    ev_timer idle;
    double rst_window_start;
    unsigned rst_count;
};

static nghttp2_session *sess(const struct ah2s *s)
{
    return s->cc->h2 ? al_h2conn_session(s->cc->h2) : NULL;
}

static void flush(struct ah2s *s)
{
    if (s->cc->h2)
        al_h2conn_flush(s->cc->h2);
}

/* ---------- front ops ---------- */

static void add_nv(nghttp2_nv *nv, size_t *n, const char *name, size_t nl, const char *value,
                   size_t vl)
{
    nv[*n].name = (uint8_t *)name;
    nv[*n].namelen = nl;
    nv[*n].value = (uint8_t *)value;
    nv[*n].valuelen = vl;
    nv[*n].flags = NGHTTP2_NV_FLAG_NONE;
    (*n)++;
}

static ssize_t data_read_cb(nghttp2_session *ss, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    struct ah2s *s = source->ptr;
    const uint8_t *p;
    size_t avail;
    (void)ss;
    (void)stream_id;
    (void)buf;
    (void)user_data;

    if (!s->r)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    avail = rl_areq_out(s->r, &p);
    if (avail) {
        *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
        return (ssize_t)(avail < length ? avail : length);
    }
    if (rl_areq_resp_done(s->r)) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    s->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
}

/* One DATA frame: nghttp2's frame header, then the payload straight from
 * the request's out queue. */
static int send_data_cb(nghttp2_session *ss, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *source, void *user_data)
{
    struct ah2s *s = source->ptr;
    struct rl_ah2 *cc = user_data;
    const uint8_t *p;
    (void)ss;

    if (!s->r || frame->data.padlen > 0 || rl_areq_out(s->r, &p) < length)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (al_h2conn_append(cc->h2, framehd, 9) < 0 || al_h2conn_append(cc->h2, p, length) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    rl_areq_sent(s->r, length);
    return 0;
}

static int op_head(struct rl_areq *r, int status, const struct rl_hdr *h, size_t n,
                   int64_t content_length)
{
    struct ah2s *s = rl_areq_front(r);
    nghttp2_session *ss = sess(s);
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read_cb};
    char st[8], cl[24];
    nghttp2_nv *nv;
    size_t k = 0;
    int rv;

    if (!ss || s->resp_submitted)
        return AL_ERR_STATE;
    nv = calloc(n + 2, sizeof(*nv));
    if (!nv)
        return AL_ERR_NOMEM;
    snprintf(st, sizeof(st), "%d", status);
    add_nv(nv, &k, ":status", 7, st, strlen(st));
    for (size_t i = 0; i < n; i++)
        add_nv(nv, &k, h[i].name, h[i].name_len, h[i].value, h[i].value_len);
    if (content_length >= 0) {
        snprintf(cl, sizeof(cl), "%lld", (long long)content_length);
        add_nv(nv, &k, "content-length", 14, cl, strlen(cl));
    }
    /* nghttp2 copies the header block */
    rv = nghttp2_submit_response(ss, s->id, nv, k, rl_areq_resp_done(r) ? NULL : &prd);
    free(nv);
    if (rv != 0)
        return AL_ERR_STATE;
    s->resp_submitted = 1;
    flush(s);
    return 0;
}

static void op_kick(struct rl_areq *r)
{
    struct ah2s *s = rl_areq_front(r);
    nghttp2_session *ss = sess(s);

    if (!ss || !s->resp_submitted || !s->deferred)
        return;
    s->deferred = 0;
    nghttp2_session_resume_data(ss, s->id);
    flush(s);
}

static void op_abort(struct rl_areq *r)
{
    struct ah2s *s = rl_areq_front(r);
    nghttp2_session *ss = sess(s);

    if (!ss)
        return;
    nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    flush(s);
}

static void op_consumed(struct rl_areq *r, size_t n)
{
    struct ah2s *s = rl_areq_front(r);
    nghttp2_session *ss = sess(s);

    if (!ss)
        return;
    nghttp2_session_consume(ss, s->id, n);
    flush(s);
}

static void body_timer_start(struct ah2s *s)
{
    struct rl_agents *ag = s->cc->ag;

    s->timer.repeat = ag->o.body_timeout_s;
    ev_timer_again(ag->loop, &s->timer);
}

static void op_pause(struct rl_areq *r)
{
    struct ah2s *s = rl_areq_front(r);

    s->paused = 1;
    ev_timer_stop(s->cc->ag->loop, &s->timer); /* the relay is waiting, not the agent */
}

static void op_resume(struct rl_areq *r)
{
    struct ah2s *s = rl_areq_front(r);

    s->paused = 0;
    if (!s->req_ended && s->headers_done)
        body_timer_start(s);
}

static const struct rl_front_ops h2_ops = {
    .head = op_head,
    .kick = op_kick,
    .abort = op_abort,
    .consumed = op_consumed,
    .pause = op_pause,
    .resume = op_resume,
};

/* ---------- streams ---------- */

static void idle_restart(struct rl_ah2 *cc)
{
    if (cc->nstreams)
        return;
    cc->idle.repeat = cc->ag->o.idle_timeout_s;
    ev_timer_again(cc->ag->loop, &cc->idle);
}

static void stream_free(struct ah2s *s)
{
    struct rl_ah2 *cc = s->cc;
    nghttp2_session *ss = sess(s);

    ev_timer_stop(cc->ag->loop, &s->timer);
    if (s->r) {
        struct rl_areq *r = s->r;
        s->r = NULL;
        size_t unconsumed = rl_areq_detach(r);
        /* body bytes the relay never passed on still hold the connection
         * window: give them back */
        if (unconsumed && ss)
            nghttp2_session_consume_connection(ss, unconsumed);
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        cc->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    cc->nstreams--;
    al_arena_cleanup(&s->arena);
    free(s);
    idle_restart(cc);
}

static void stream_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ah2s *s = w->data;
    (void)loop;
    (void)revents;

    ev_timer_stop(s->cc->ag->loop, &s->timer);
    if (s->resp_closed) { /* answered long ago; the rest of the body stalled */
        nghttp2_submit_rst_stream(sess(s), NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
        flush(s);
        return;
    }
    if (!s->headers_done) {
        /* a header block that never completes blocks the whole connection */
        AL_LOG_INFO("agent.timeout", "agent_conn=%llu stream=%d reason=\"header timeout\"",
                    (unsigned long long)s->cc->id, s->id);
        al_h2conn_close(s->cc->h2, AL_ERR_TIMEOUT);
        return;
    }
    if (s->r && !s->req_ended)
        rl_areq_body_timeout(s->r);
}

static const struct rl_hdr *find(const struct ah2s *s, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < s->nhdr; i++)
        if (s->hdr[i].name_len == nl && memcmp(s->hdr[i].name, name, nl) == 0)
            return &s->hdr[i];
    return NULL;
}

static void start_request(struct ah2s *s, int end_stream)
{
    struct rl_ah2 *cc = s->cc;
    const struct rl_hdr *clh = find(s, "content-length");
    struct rl_areq_head hd = {
        .method = s->method ? s->method : "",
        .target = s->path ? s->path : "",
        .target_len = s->path ? s->path_len : 0,
        .h = s->hdr,
        .n = s->nhdr,
        .content_length = -1,
        .end_stream = end_stream,
        .head_too_large = s->too_large,
        .proto = "h2",
        .conn_id = cc->id,
        .stream_id = s->id,
        .peer = al_h2conn_peer_addr(cc->h2),
    };

    if (clh && rl_parse_content_length(clh->value, clh->value_len, &hd.content_length) < 0)
        hd.content_length = -1;
    if (rl_areq_start(cc->ag, &h2_ops, s, &hd, &s->r) < 0) {
        nghttp2_submit_rst_stream(sess(s), NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    if (!end_stream && s->r && !s->paused)
        body_timer_start(s);
}

/* ---------- nghttp2 callbacks ---------- */

static int on_begin_headers(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct rl_ah2 *cc = ud;
    struct rl_agents *ag = cc->ag;
    struct ah2s *s;

    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets this stream */
    al_arena_init(&s->arena, ag->o.max_head * HEADER_FLOOD_FACTOR + 4096);
    al_arena_set_wipe(&s->arena); /* Authorization carries the agent's key */
    s->cc = cc;
    s->id = f->hd.stream_id;
    ev_init(&s->timer, stream_timer_cb);
    s->timer.data = s;
    s->timer.repeat = ag->o.header_timeout_s;
    ev_timer_again(ag->loop, &s->timer);
    s->next = cc->streams;
    if (cc->streams)
        cc->streams->prev = s;
    cc->streams = s;
    cc->nstreams++;
    ev_timer_stop(ag->loop, &cc->idle);
    nghttp2_session_set_stream_user_data(ss, s->id, s);
    return 0;
}

static int on_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct rl_ah2 *cc = ud;
    struct ah2s *s = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    size_t cap = cc->ag->o.max_head;
    char *n, *v;
    (void)flags;

    if (!s || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers are not forwarded */
    s->hdr_bytes += namelen + valuelen + 32;
    if (s->hdr_bytes > cap * HEADER_FLOOD_FACTOR) {
        AL_LOG_WARN("agent.flood", "agent_conn=%llu peer=%s reason=\"header block over %zu bytes\"",
                    (unsigned long long)cc->id, al_h2conn_peer_addr(cc->h2),
                    cap * HEADER_FLOOD_FACTOR);
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* kills the connection */
    }
    if (s->too_large || s->hdr_bytes > cap ||
        (namelen && name[0] != ':' && s->nhdr >= MAX_HEADERS)) {
        s->too_large = 1;
        return 0;
    }
    n = al_arena_strndup(&s->arena, (const char *)name, namelen);
    v = al_arena_strndup(&s->arena, (const char *)value, valuelen);
    if (!n || !v) {
        s->too_large = 1;
        return 0;
    }
    if (namelen && n[0] == ':') {
        if (strcmp(n, ":method") == 0)
            s->method = v;
        else if (strcmp(n, ":path") == 0) {
            s->path = v;
            s->path_len = valuelen;
        }
        return 0; /* :scheme and :authority are the agent's view of the relay */
    }
    s->hdr[s->nhdr++] = (struct rl_hdr){n, namelen, v, valuelen};
    return 0;
}

static void request_ended(struct ah2s *s)
{
    s->req_ended = 1;
    ev_timer_stop(s->cc->ag->loop, &s->timer);
    if (s->r)
        rl_areq_body_end(s->r);
}

static int on_frame_recv(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct rl_ah2 *cc = ud;
    struct ah2s *s;

    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        s = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
        if (!s)
            return 0;
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            s->headers_done = 1;
            ev_timer_stop(cc->ag->loop, &s->timer);
            start_request(s, (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
            if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
                s->req_ended = 1;
        } else if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            request_ended(s); /* after trailers */
        }
        return 0;
    case NGHTTP2_DATA:
        s = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
        if (s && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
            request_ended(s);
        return 0;
    case NGHTTP2_RST_STREAM: {
        double now = ev_now(cc->ag->loop);
        if (now - cc->rst_window_start > RST_WINDOW_S) {
            cc->rst_window_start = now;
            cc->rst_count = 0;
        }
        if (++cc->rst_count > RST_MAX_PER_WINDOW) {
            AL_LOG_WARN("agent.flood", "agent_conn=%llu peer=%s reason=\"rapid stream resets\"",
                        (unsigned long long)cc->id, al_h2conn_peer_addr(cc->h2));
            nghttp2_session_terminate_session(ss, NGHTTP2_ENHANCE_YOUR_CALM);
        }
        return 0;
    }
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *ss, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *ud)
{
    struct ah2s *s = nghttp2_session_get_stream_user_data(ss, stream_id);
    (void)flags;
    (void)ud;

    if (!s || !s->r) {
        nghttp2_session_consume(ss, stream_id, len); /* nobody wants it */
        return 0;
    }
    if (s->resp_closed) {
        /* the rest of a body nobody needs: taken (so the agent can finish
         * sending and read the answer) up to max_body, then refused */
        s->drained += len;
        if (s->drained > s->cc->ag->o.max_body)
            nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_NO_ERROR);
    }
    if (!s->paused && !s->req_ended)
        body_timer_start(s);
    rl_areq_body(s->r, data, len);
    return 0;
}

/* We ended our side while the agent is still sending (an early answer,
 * such as 401 or 413). RFC 9113 section 8.1 allows RST_STREAM NO_ERROR at
 * once, but common clients (curl among them) then fail the request instead
 * of reading the answer, so the rest of the body is taken and dropped - up
 * to max_body bytes and while it keeps arriving within body_timeout - and
 * only then is the stream reset. */
static int on_frame_send(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct ah2s *s;
    (void)ud;

    if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    s = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    if (s && !s->req_ended && !s->resp_closed) {
        s->resp_closed = 1;
        s->paused = 0;
        body_timer_start(s);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ss, int32_t stream_id, uint32_t error_code, void *ud)
{
    struct ah2s *s = nghttp2_session_get_stream_user_data(ss, stream_id);
    (void)error_code;
    (void)ud;

    if (!s)
        return 0;
    nghttp2_session_set_stream_user_data(ss, stream_id, NULL);
    stream_free(s);
    return 0;
}

/* ---------- connections ---------- */

static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rl_ah2 *cc = w->data;
    (void)revents;

    ev_timer_stop(loop, w);
    if (cc->nstreams || !cc->h2)
        return;
    AL_LOG_DEBUG("agent.idle", "agent_conn=%llu peer=%s", (unsigned long long)cc->id,
                 al_h2conn_peer_addr(cc->h2));
    al_h2conn_shutdown(cc->h2);
}

static void conn_on_close(struct al_h2conn *h2, int err, void *user)
{
    struct rl_ah2 *cc = user;
    struct rl_agents *ag;
    nghttp2_session *ss = h2 ? al_h2conn_session(h2) : NULL;

    if (!cc)
        return;
    ag = cc->ag;
    AL_LOG_DEBUG("agent.close", "agent_conn=%llu proto=h2 streams=%zu reason=\"%s\"",
                 (unsigned long long)cc->id, cc->nstreams, err ? al_strerror(err) : "closed");
    while (cc->streams) {
        struct ah2s *s = cc->streams;
        if (ss)
            nghttp2_session_set_stream_user_data(ss, s->id, NULL);
        stream_free(s);
    }
    ev_timer_stop(ag->loop, &cc->idle);
    if (cc->prev)
        cc->prev->next = cc->next;
    else
        ag->h2conns = cc->next;
    if (cc->next)
        cc->next->prev = cc->prev;
    if (h2)
        al_h2conn_set_user(h2, NULL);
    free(cc);
    rl_agents_conn_closed(ag, 1);
}

void rl_ah2_accept(struct rl_agents *ag, int fd, SSL *ssl, const char *peer)
{
    struct rl_ah2 *cc = calloc(1, sizeof(*cc));

    if (!cc) {
        AL_LOG_WARN("agent.accept", "peer=%s reason=\"out of memory\"", peer);
        SSL_free(ssl);
        close(fd);
        return;
    }
    cc->ag = ag;
    cc->id = rl_agents_conn_opened(ag, 1);
    cc->next = ag->h2conns;
    if (ag->h2conns)
        ag->h2conns->prev = cc;
    ag->h2conns = cc;
    ev_init(&cc->idle, idle_cb);
    cc->idle.data = cc;
    idle_restart(cc);
    struct al_h2conn_opts co = {
        .tls_server = 1,
        .h2_server = 1,
        .max_concurrent_streams = (uint32_t)ag->o.max_streams,
        .initial_window = H2_WINDOW,
        .max_header_list = (uint32_t)ag->o.max_head,
        .ping_interval_s = PING_INTERVAL_S,
        .ping_timeout_s = PING_TIMEOUT_S,
        .manual_window = 1,
        .cbs = ag->h2cbs,
        .session_user = cc,
        .on_close = conn_on_close,
        .user = cc,
    };
    AL_LOG_DEBUG("agent.accept", "agent_conn=%llu proto=h2 peer=%s tls=%s",
                 (unsigned long long)cc->id, peer, ssl ? "on" : "off");
    if (al_h2conn_new(ag->loop, fd, ssl, &co, &cc->h2) < 0) {
        cc->h2 = NULL;
        conn_on_close(NULL, AL_ERR_NOMEM, cc);
    }
}

void rl_ah2_drain_all(struct rl_agents *ag)
{
    for (struct rl_ah2 *cc = ag->h2conns; cc; cc = cc->next)
        if (cc->h2)
            al_h2conn_shutdown(cc->h2);
}

void rl_ah2_close_all(struct rl_agents *ag)
{
    for (struct rl_ah2 *cc = ag->h2conns; cc; cc = cc->next)
        if (cc->h2)
            al_h2conn_close(cc->h2, AL_ERR_CLOSED);
}

int rl_ah2_init(struct rl_agents *ag)
{
    nghttp2_session_callbacks *cbs;

    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return AL_ERR_NOMEM;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_send_data_callback(cbs, send_data_cb);
    ag->h2cbs = cbs;
    return 0;
}

void rl_ah2_cleanup(struct rl_agents *ag)
{
    if (ag->h2cbs)
        nghttp2_session_callbacks_del(ag->h2cbs);
    ag->h2cbs = NULL;
}
