/*
 * al_grpc_server: the gRPC server on al_h2conn; see al_grpc.h for the contract.
 *
 * Per connection a struct gconn; per stream a struct al_grpc_call carved
 * around an arena. Request path:
 *   begin_headers -> header* (capped) -> frame_recv(HEADERS): validate, route,
 *   deadline -> data_chunk* (deframe, capped) -> END_STREAM: unpack into the
 *   arena, run the handler.
 * Response path: al_grpc_call_send() packs into the call's output queue; the
 * nghttp2 data provider drains it; al_grpc_call_finish() records the status,
 * which goes out as trailers once the queue is empty (or as a Trailers-Only
 * response when nothing was sent).
 * A call is freed when both its stream has closed and its handler finished it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "al_addr.h"
#include "al_base64.h"
#include "al_err.h"
#include "al_grpc.h"
#include "al_h2conn.h"
#include "al_log.h"
#include "al_metrics.h"
#include "al_tls.h"

#define MAX_HEADERS         100
#define HEADER_FLOOD_FACTOR 4   /* header bytes beyond cap*this kill the connection */
#define RST_WINDOW_S        1.0 /* rapid-reset detection window */
#define RST_MAX_PER_WINDOW  500
#define MD_MAX              32 /* custom response headers / trailers per call */

struct method {
    char *path; /* "/pkg.Service/Method" */
    const ProtobufCMethodDescriptor *md;
    al_grpc_handler_cb cb;
    void *user;
    int sensitive;
    int server_streaming;
    struct al_metric *ok_count, *latency;
};

struct gconn;

struct header {
    const char *name, *value;
    size_t name_len, value_len;
};

struct al_grpc_call {
    struct gconn *gc;                 /* NULL once the connection is gone */
    struct al_grpc_call *prev, *next; /* in gc->calls */
    int32_t stream_id;
    struct al_arena arena;
    const struct method *m;
    const char *path;
    struct header hdr[MAX_HEADERS];
    size_t nhdr, hdr_bytes;
    int bad_headers; /* 0, or HTTP status to answer (431) */
    /* request deframing */
    uint8_t *in;
    size_t in_len, in_cap;
    int nmsgs;
    const ProtobufCMessage *req;
    /* response */
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    nghttp2_nv md_hdr[MD_MAX], md_trl[MD_MAX];
    size_t n_md_hdr, n_md_trl;
    int headers_sent, deferred;
    int finished;     /* status decided (by handler or library) */
    int handler_done; /* handler released the call */
    int stream_closed;
    int cancelled;
    int dispatched;
    int in_api;    /* inside a call_* entry point: do not free yet */
    int sensitive; /* wipe buffers: they may hold a credential value */
    int req_ended; /* the client half-closed its side */
    int status;
    char *message;
    double start, deadline;
    ev_timer deadline_timer;
    al_grpc_cancel_cb cancel_cb;
    void *cancel_user;
    al_grpc_writable_cb writable_cb;
    void *writable_user;
    size_t writable_low;
    void *user;
};

struct gconn {
    struct al_grpc_server *srv;
    struct al_h2conn *h2;
    struct gconn *prev, *next;
    /* in srv->dirty (output queued since the last al_grpc_server_flush())
     * while dirty_pprev is set; it points at the pointer that points here */
    struct gconn *dirty_next, **dirty_pprev;
    struct al_grpc_call *calls;
    double rst_window_start;
    unsigned rst_count;
};

struct al_grpc_server {
    struct ev_loop *loop;
    struct al_grpc_server_opts o;
    char *listen;
    int fd, port;
    ev_io accept_io;
    ev_timer drain_timer;
    struct method *methods;
    size_t nmethods;
    struct gconn *conns;
    size_t nconns;
    struct gconn *dirty; /* connections with output queued (al_grpc_server_flush) */
    nghttp2_session_callbacks *cbs;
    int draining;
    void (*drain_done)(void *user);
    void *drain_user;
    struct al_metric *m_conns, *m_streams, *m_conn_total;
};

/* ---------- call lifetime ---------- */

/* Grows *buf to cap bytes keeping used ones; a sensitive old block is wiped
 * before it is freed (so no realloc). Returns 0 or AL_ERR_NOMEM. */
static int grow(uint8_t **buf, size_t *bufcap, size_t cap, size_t used, int wipe)
{
    if (!wipe) {
        uint8_t *p = realloc(*buf, cap);
        if (!p)
            return AL_ERR_NOMEM;
        *buf = p;
        *bufcap = cap;
        return 0;
    }
    uint8_t *p = malloc(cap);
    if (!p)
        return AL_ERR_NOMEM;
    if (*buf) {
        memcpy(p, *buf, used);
        explicit_bzero(*buf, *bufcap);
        free(*buf);
    }
    *buf = p;
    *bufcap = cap;
    return 0;
}

static void call_maybe_free(struct al_grpc_call *c)
{
    if (!c->stream_closed || !c->handler_done || c->in_api)
        return;
    if (c->sensitive) {
        if (c->in)
            explicit_bzero(c->in, c->in_cap);
        if (c->out)
            explicit_bzero(c->out, c->out_cap);
    }
    free(c->in);
    free(c->out);
    for (size_t i = 0; i < c->n_md_hdr; i++)
        free(c->md_hdr[i].value);
    for (size_t i = 0; i < c->n_md_trl; i++)
        free(c->md_trl[i].value);
    free(c->message);
    al_arena_cleanup(&c->arena);
    free(c);
}

static void call_unlink(struct al_grpc_call *c)
{
    struct gconn *gc = c->gc;
    if (!gc)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        gc->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void record_metrics(struct al_grpc_call *c)
{
    struct al_grpc_server *s = c->gc ? c->gc->srv : NULL;
    if (!s)
        return;
    double dur = ev_time() - c->start;
    AL_LOG_DEBUG("grpc.call", "conn=%llu stream=%d peer=%s method=%s status=%s dur_ms=%.3f",
                 (unsigned long long)al_h2conn_id(c->gc->h2), c->stream_id,
                 al_h2conn_peer_id(c->gc->h2)[0] ? al_h2conn_peer_id(c->gc->h2) : "-",
                 c->m ? c->m->path : "-", al_grpc_status_name(c->status), dur * 1000.0);
    if (!s->o.metrics || !c->m)
        return;
    if (c->status == AL_GRPC_OK) {
        al_metric_add(c->m->ok_count, 1);
    } else {
        char labels[512];
        snprintf(labels, sizeof(labels), "method=\"%s\",code=\"%s\"", c->m->path,
                 al_grpc_status_name(c->status));
        al_metric_add(al_metrics_counter(s->o.metrics, "airlock_grpc_requests_total",
                                         "gRPC calls finished, by method and status", labels),
                      1);
    }
    al_metric_observe(c->m->latency, dur);
}

/* The stream is gone: tell the handler if it still holds the call. */
static void call_stream_closed(struct al_grpc_call *c)
{
    struct ev_loop *loop = c->gc ? c->gc->srv->loop : NULL;

    if (c->stream_closed)
        return;
    c->stream_closed = 1;
    if (loop)
        ev_timer_stop(loop, &c->deadline_timer);
    if (c->gc && c->gc->srv->m_streams)
        al_metric_add(c->gc->srv->m_streams, -1);
    if (!c->finished) {
        c->cancelled = 1;
        c->finished = 1;
        c->status = AL_GRPC_CANCELLED;
    }
    record_metrics(c);
    call_unlink(c);
    c->gc = NULL;
    if (!c->dispatched)
        c->handler_done = 1; /* no handler ever saw it */
    c->in_api++;
    if (!c->handler_done && c->cancel_cb) {
        al_grpc_cancel_cb cb = c->cancel_cb;
        c->cancel_cb = NULL;
        cb(c, c->cancel_user);
    }
    c->in_api--;
    call_maybe_free(c);
}

/* ---------- response ---------- */

static void add_nv(nghttp2_nv *nv, size_t *n, const char *name, const char *value, size_t vlen)
{
    nv[*n].name = (uint8_t *)name;
    nv[*n].namelen = strlen(name);
    nv[*n].value = (uint8_t *)value;
    nv[*n].valuelen = vlen;
    nv[*n].flags = NGHTTP2_NV_FLAG_NONE;
    (*n)++;
}

/* Appends grpc-status, grpc-message and custom trailers to nv. msgbuf must
 * outlive the submit call (nghttp2 copies on submit). */
static void status_nv(struct al_grpc_call *c, nghttp2_nv *nv, size_t *n, char *code, char *msgbuf,
                      size_t msgcap)
{
    snprintf(code, 8, "%d", c->status);
    add_nv(nv, n, "grpc-status", code, strlen(code));
    if (c->message && c->message[0]) {
        size_t l = al_grpc_encode_message(c->message, msgbuf, msgcap);
        add_nv(nv, n, "grpc-message", msgbuf, l);
    }
    for (size_t i = 0; i < c->n_md_trl; i++)
        nv[(*n)++] = c->md_trl[i];
}

static ssize_t data_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data)
{
    struct al_grpc_call *c = source->ptr;
    size_t avail = c->out_len - c->out_off;
    (void)user_data;

    if (avail) {
        /* no copy into nghttp2's buffers: send_data_cb appends our bytes */
        *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
        return (ssize_t)(avail < length ? avail : length);
    }
    if (!c->finished) {
        c->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    /* everything sent: end with trailers */
    nghttp2_nv nv[MD_MAX + 2];
    size_t n = 0;
    char code[8], msg[1024];
    status_nv(c, nv, &n, code, msg, sizeof(msg));
    *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    if (nghttp2_submit_trailer(session, stream_id, nv, n) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

/* Writes one DATA frame (header from nghttp2, payload from the call's
 * output queue) to the connection, then wipes what a sensitive call sent. */
static int send_data_cb(nghttp2_session *ss, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *source, void *user_data)
{
    struct al_grpc_call *c = source->ptr;
    struct gconn *gc = user_data;
    (void)ss;

    if (frame->data.padlen > 0 || length > c->out_len - c->out_off)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (al_h2conn_append(gc->h2, framehd, 9) < 0 ||
        al_h2conn_append(gc->h2, c->out + c->out_off, length) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (c->sensitive)
        explicit_bzero(c->out + c->out_off, length);
    c->out_off += length;
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->writable_cb && c->out_len - c->out_off <= c->writable_low && !c->finished) {
        al_grpc_writable_cb cb = c->writable_cb;
        c->writable_cb = NULL;
        cb(c, c->writable_user);
    }
    return 0;
}

static int submit_headers(struct al_grpc_call *c)
{
    nghttp2_nv nv[MD_MAX + 2];
    size_t n = 0;
    nghttp2_data_provider prd = {.source.ptr = c, .read_callback = data_read_cb};

    add_nv(nv, &n, ":status", "200", 3);
    add_nv(nv, &n, "content-type", "application/grpc", 16);
    for (size_t i = 0; i < c->n_md_hdr; i++)
        nv[n++] = c->md_hdr[i];
    c->headers_sent = 1;
    return nghttp2_submit_response(al_h2conn_session(c->gc->h2), c->stream_id, nv, n, &prd);
}

/* Trailers-Only: one HEADERS frame with the status and END_STREAM. */
static int submit_trailers_only(struct al_grpc_call *c)
{
    nghttp2_nv nv[MD_MAX * 2 + 4];
    size_t n = 0;
    char code[8], msg[1024];

    add_nv(nv, &n, ":status", "200", 3);
    add_nv(nv, &n, "content-type", "application/grpc", 16);
    for (size_t i = 0; i < c->n_md_hdr; i++)
        nv[n++] = c->md_hdr[i];
    status_nv(c, nv, &n, code, msg, sizeof(msg));
    c->headers_sent = 1;
    return nghttp2_submit_response(al_h2conn_session(c->gc->h2), c->stream_id, nv, n, NULL);
}

static void dirty_add(struct gconn *gc)
{
    struct al_grpc_server *s = gc->srv;

    if (gc->dirty_pprev)
        return;
    gc->dirty_next = s->dirty;
    if (s->dirty)
        s->dirty->dirty_pprev = &gc->dirty_next;
    s->dirty = gc;
    gc->dirty_pprev = &s->dirty;
}

static void dirty_remove(struct gconn *gc)
{
    if (!gc->dirty_pprev)
        return;
    *gc->dirty_pprev = gc->dirty_next;
    if (gc->dirty_next)
        gc->dirty_next->dirty_pprev = gc->dirty_pprev;
    gc->dirty_next = NULL;
    gc->dirty_pprev = NULL;
}

static void call_kick(struct al_grpc_call *c)
{
    nghttp2_session *ss;
    if (!c->gc || c->stream_closed)
        return;
    ss = al_h2conn_session(c->gc->h2);
    if (!c->headers_sent) {
        if (c->finished && c->out_len == c->out_off)
            submit_trailers_only(c);
        else
            submit_headers(c);
    } else if (c->deferred) {
        c->deferred = 0;
        nghttp2_session_resume_data(ss, c->stream_id);
    }
    al_h2conn_flush(c->gc->h2);
    dirty_add(c->gc);
}

/* Library-side end of a call (errors before or instead of the handler). */
static void call_fail(struct al_grpc_call *c, int status, const char *msg)
{
    if (c->finished)
        return;
    c->finished = 1;
    c->status = status;
    free(c->message);
    c->message = msg ? strdup(msg) : NULL;
    call_kick(c);
}

static void send_http_error(struct al_grpc_call *c, const char *status)
{
    nghttp2_nv nv[2];
    size_t n = 0;
    add_nv(nv, &n, ":status", status, strlen(status));
    c->headers_sent = 1;
    c->finished = 1;
    c->status = AL_GRPC_UNKNOWN;
    nghttp2_submit_response(al_h2conn_session(c->gc->h2), c->stream_id, nv, n, NULL);
}

int al_grpc_call_send(struct al_grpc_call *c, const ProtobufCMessage *msg)
{
    size_t len, need;

    if (c->finished)
        return c->stream_closed ? AL_ERR_CLOSED : AL_ERR_STATE;
    if (c->stream_closed || !c->gc)
        return AL_ERR_CLOSED;
    len = protobuf_c_message_get_packed_size(msg);
    if (len > c->gc->srv->o.max_message_bytes)
        return AL_ERR_TOOBIG;
    need = c->out_len + 5 + len;
    if (need > c->out_cap) {
        if (c->out_off) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            if (c->sensitive)
                explicit_bzero(c->out + c->out_len - c->out_off, c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
            need = c->out_len + 5 + len;
        }
        if (need > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 256;
            while (cap < need)
                cap *= 2;
            if (grow(&c->out, &c->out_cap, cap, c->out_len, c->sensitive) < 0)
                return AL_ERR_NOMEM;
        }
    }
    uint8_t *p = c->out + c->out_len;
    al_grpc_frame_prefix(p, len);
    protobuf_c_message_pack(msg, p + 5);
    c->out_len += 5 + len;
    c->in_api++;
    call_kick(c);
    c->in_api--;
    call_maybe_free(c);
    return 0;
}

int al_grpc_call_finish(struct al_grpc_call *c, int status, const char *message)
{
    if (c->handler_done)
        return 0;
    c->handler_done = 1;
    c->cancel_cb = NULL;
    c->writable_cb = NULL;
    if (!c->finished) {
        c->finished = 1;
        c->status = status;
        c->message = message ? strdup(message) : NULL;
        /* sending may close the stream (and run call_stream_closed) */
        c->in_api++;
        call_kick(c);
        c->in_api--;
    }
    call_maybe_free(c);
    return 0;
}

int al_grpc_call_reply(struct al_grpc_call *c, const ProtobufCMessage *msg)
{
    int rc = al_grpc_call_send(c, msg);
    if (rc == AL_ERR_TOOBIG)
        al_grpc_call_finish(c, AL_GRPC_RESOURCE_EXHAUSTED, "response message over the size limit");
    else if (rc == AL_ERR_NOMEM)
        al_grpc_call_finish(c, AL_GRPC_INTERNAL, "out of memory");
    else
        al_grpc_call_finish(c, AL_GRPC_OK, NULL);
    return rc;
}

static int add_md(nghttp2_nv *nv, size_t *n, const char *key, const void *val, size_t len)
{
    size_t klen = strlen(key);
    int bin = klen > 4 && strcmp(key + klen - 4, "-bin") == 0;
    char *v;
    size_t vlen = len;

    if (*n >= MD_MAX || klen == 0)
        return AL_ERR_INVAL;
    for (size_t i = 0; i < klen; i++) {
        char ch = key[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
              ch == '.'))
            return AL_ERR_INVAL;
    }
    if (strncmp(key, "grpc-", 5) == 0)
        return AL_ERR_INVAL; /* reserved */
    if (bin) {
        size_t cap = al_base64_encoded_len(len, AL_BASE64_NOPAD) + 1;
        v = malloc(cap);
        if (!v)
            return AL_ERR_NOMEM;
        if (al_base64_encode(val, len, v, cap, AL_BASE64_NOPAD, &vlen) < 0) {
            free(v);
            return AL_ERR_INVAL;
        }
    } else {
        const unsigned char *u = val;
        for (size_t i = 0; i < len; i++)
            if (u[i] < 0x20 || u[i] > 0x7e)
                return AL_ERR_INVAL;
        v = malloc(len + 1);
        if (!v)
            return AL_ERR_NOMEM;
        memcpy(v, val, len);
        v[len] = '\0';
    }
    nv[*n].name = (uint8_t *)key; /* callers pass static keys or arena strings */
    nv[*n].namelen = klen;
    nv[*n].value = (uint8_t *)v;
    nv[*n].valuelen = vlen;
    nv[*n].flags = NGHTTP2_NV_FLAG_NONE;
    (*n)++;
    return 0;
}

int al_grpc_call_add_header(struct al_grpc_call *c, const char *key, const void *val, size_t len)
{
    if (c->headers_sent)
        return AL_ERR_STATE;
    char *k = al_arena_strndup(&c->arena, key, strlen(key));
    return k ? add_md(c->md_hdr, &c->n_md_hdr, k, val, len) : AL_ERR_NOMEM;
}

int al_grpc_call_add_trailer(struct al_grpc_call *c, const char *key, const void *val, size_t len)
{
    if (c->finished)
        return AL_ERR_STATE;
    char *k = al_arena_strndup(&c->arena, key, strlen(key));
    return k ? add_md(c->md_trl, &c->n_md_trl, k, val, len) : AL_ERR_NOMEM;
}

/* ---------- request ---------- */

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct al_grpc_call *c = w->data;
    (void)loop;
    (void)revents;
    if (c->finished)
        return;
    AL_LOG_DEBUG("grpc.deadline", "conn=%llu stream=%d method=%s",
                 (unsigned long long)al_grpc_call_conn_id(c), c->stream_id, c->path);
    c->in_api++;
    c->cancelled = 1;
    if (c->headers_sent && c->gc && c->out_len > c->out_off) {
        /* a response is under way and may sit behind flow control, where
         * trailers would wait as long as the client does not read: reset the
         * stream instead (as gRPC servers do) and drop what is queued */
        c->finished = 1;
        c->status = AL_GRPC_DEADLINE_EXCEEDED;
        if (c->sensitive && c->out)
            explicit_bzero(c->out, c->out_cap);
        c->out_off = c->out_len = 0;
        nghttp2_submit_rst_stream(al_h2conn_session(c->gc->h2), NGHTTP2_FLAG_NONE, c->stream_id,
                                  NGHTTP2_CANCEL);
        al_h2conn_flush(c->gc->h2);
    } else {
        call_fail(c, AL_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
    }
    /* the trailers end the stream; the handler learns through its cancel cb */
    if (!c->handler_done && c->dispatched && c->cancel_cb) {
        al_grpc_cancel_cb cb = c->cancel_cb;
        c->cancel_cb = NULL;
        cb(c, c->cancel_user);
    }
    c->in_api--;
    call_maybe_free(c);
}

static const struct header *find_header(const struct al_grpc_call *c, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < c->nhdr; i++)
        if (c->hdr[i].name_len == nl && memcmp(c->hdr[i].name, name, nl) == 0)
            return &c->hdr[i];
    return NULL;
}

static const struct method *find_method(struct al_grpc_server *s, const char *path)
{
    for (size_t i = 0; i < s->nmethods; i++)
        if (strcmp(s->methods[i].path, path) == 0)
            return &s->methods[i];
    return NULL;
}

/* All request headers are in: validate and route. Returns 0 to go on reading. */
static void on_request_headers(struct al_grpc_call *c)
{
    struct al_grpc_server *s = c->gc->srv;
    const struct header *h;

    if (c->bad_headers) {
        send_http_error(c, "431");
        return;
    }
    h = find_header(c, ":method");
    if (!h || strcmp(h->value, "POST") != 0) {
        send_http_error(c, "405");
        return;
    }
    h = find_header(c, "content-type");
    if (!h || strncmp(h->value, "application/grpc", 16) != 0 ||
        (h->value[16] != '\0' && h->value[16] != '+' && h->value[16] != ';')) {
        send_http_error(c, "415");
        return;
    }
    h = find_header(c, ":path");
    c->path = h ? h->value : "";
    c->m = find_method(s, c->path);
    if (c->m && c->m->sensitive)
        al_grpc_call_set_sensitive(c);
    h = find_header(c, "grpc-timeout");
    if (h) {
        double secs;
        if (al_grpc_parse_timeout(h->value, h->value_len, &secs) < 0) {
            call_fail(c, AL_GRPC_INVALID_ARGUMENT, "malformed grpc-timeout");
            return;
        }
        c->deadline = c->start + secs;
        ev_timer_set(&c->deadline_timer, secs, 0.);
        ev_timer_start(s->loop, &c->deadline_timer);
    }
    if (!c->m || !c->m->cb) {
        char msg[300];
        snprintf(msg, sizeof(msg), "unknown method %.256s", c->path);
        call_fail(c, AL_GRPC_UNIMPLEMENTED, msg);
        return;
    }
    h = find_header(c, "grpc-encoding");
    if (h && strcmp(h->value, "identity") != 0) {
        al_grpc_call_add_header(c, "grpc-accept-encoding", "identity", 8);
        call_fail(c, AL_GRPC_UNIMPLEMENTED,
                  "compression is not supported; send messages uncompressed (identity)");
        return;
    }
}

static void on_request_end(struct al_grpc_call *c)
{
    const struct method *m = c->m;

    if (c->finished)
        return;
    if (c->in_len != 0) {
        call_fail(c, AL_GRPC_INTERNAL,
                  "request ended inside a message (truncated length prefix or body)");
        return;
    }
    if (c->nmsgs != 1 || !c->req) {
        call_fail(c, AL_GRPC_UNIMPLEMENTED,
                  c->nmsgs == 0 ? "missing request message" : "client streaming is not supported");
        return;
    }
    c->dispatched = 1;
    m->cb(c, c->req, m->user);
}

/* Consumes complete messages from the input buffer. */
static void deframe(struct al_grpc_call *c)
{
    size_t max = c->gc->srv->o.max_message_bytes;

    while (!c->finished) {
        const uint8_t *msg;
        size_t len;
        int compressed;
        long used = al_grpc_frame_next(c->in, c->in_len, max, &msg, &len, &compressed);
        if (used == 0)
            return;
        if (used == AL_ERR_TOOBIG) {
            char text[128];
            snprintf(text, sizeof(text), "request message is over the %zu-byte limit", max);
            call_fail(c, AL_GRPC_RESOURCE_EXHAUSTED, text);
            return;
        }
        if (used < 0) {
            call_fail(c, AL_GRPC_INTERNAL, "invalid message flags");
            return;
        }
        if (compressed) {
            al_grpc_call_add_header(c, "grpc-accept-encoding", "identity", 8);
            call_fail(c, AL_GRPC_UNIMPLEMENTED,
                      "compressed messages are not supported; send them uncompressed");
            return;
        }
        if (++c->nmsgs > 1) {
            call_fail(c, AL_GRPC_UNIMPLEMENTED, "client streaming is not supported");
            return;
        }
        c->req = protobuf_c_message_unpack(c->m->md->input, al_arena_pb(&c->arena), len, msg);
        if (!c->req) {
            call_fail(c, AL_GRPC_INVALID_ARGUMENT, "request message does not parse");
            return;
        }
        memmove(c->in, c->in + used, c->in_len - (size_t)used);
        c->in_len -= (size_t)used;
    }
}

static int append_input(struct al_grpc_call *c, const uint8_t *d, size_t n)
{
    size_t cap = c->gc->srv->o.max_message_bytes + 5;
    if (c->in_len + n > c->in_cap) {
        size_t want = c->in_cap ? c->in_cap : 1024;
        while (want < c->in_len + n)
            want *= 2;
        if (want > cap + 16 * 1024)
            want = cap + 16 * 1024;
        if (want < c->in_len + n)
            return AL_ERR_TOOBIG;
        if (grow(&c->in, &c->in_cap, want, c->in_len, c->sensitive) < 0)
            return AL_ERR_NOMEM;
    }
    memcpy(c->in + c->in_len, d, n);
    c->in_len += n;
    return 0;
}

/* ---------- nghttp2 callbacks ---------- */

static int on_begin_headers(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct gconn *gc = ud;
    struct al_grpc_call *c;

    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    c = calloc(1, sizeof(*c));
    if (!c)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    al_arena_init(&c->arena, gc->srv->o.max_message_bytes * 4 + 64 * 1024);
    c->gc = gc;
    c->stream_id = f->hd.stream_id;
    c->start = ev_time(); /* not ev_now: calls inside one loop turn must not read 0 */
    c->path = "";
    ev_timer_init(&c->deadline_timer, deadline_cb, 0., 0.);
    c->deadline_timer.data = c;
    c->next = gc->calls;
    if (gc->calls)
        gc->calls->prev = c;
    gc->calls = c;
    if (gc->srv->m_streams)
        al_metric_add(gc->srv->m_streams, 1);
    nghttp2_session_set_stream_user_data(ss, f->hd.stream_id, c);
    return 0;
}

static int on_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct gconn *gc = ud;
    struct al_grpc_call *c = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    size_t cap = 16 * 1024;
    (void)flags;

    if (!c || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* client trailers: ignored */
    c->hdr_bytes += namelen + valuelen + 32;
    if (c->hdr_bytes > cap * HEADER_FLOOD_FACTOR) {
        AL_LOG_WARN("grpc.flood", "conn=%llu peer=%s reason=\"header block over %zu bytes\"",
                    (unsigned long long)al_h2conn_id(gc->h2), al_h2conn_peer_addr(gc->h2),
                    cap * HEADER_FLOOD_FACTOR);
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* kills the connection */
    }
    if (c->hdr_bytes > cap || c->nhdr >= MAX_HEADERS) {
        c->bad_headers = 431;
        return 0;
    }
    struct header *h = &c->hdr[c->nhdr];
    h->name = al_arena_strndup(&c->arena, (const char *)name, namelen);
    h->value = al_arena_strndup(&c->arena, (const char *)value, valuelen);
    if (!h->name || !h->value) {
        c->bad_headers = 431;
        return 0;
    }
    h->name_len = namelen;
    h->value_len = valuelen;
    c->nhdr++;
    return 0;
}

static int on_frame_recv(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct gconn *gc = ud;
    struct al_grpc_call *c;

    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        c = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
        if (!c)
            return 0;
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST)
            on_request_headers(c);
        if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            c->req_ended = 1;
            on_request_end(c);
        }
        return 0;
    case NGHTTP2_DATA:
        c = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
        if (c && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            c->req_ended = 1;
            on_request_end(c);
        }
        return 0;
    case NGHTTP2_RST_STREAM: {
        double now = ev_now(gc->srv->loop);
        if (now - gc->rst_window_start > RST_WINDOW_S) {
            gc->rst_window_start = now;
            gc->rst_count = 0;
        }
        if (++gc->rst_count > RST_MAX_PER_WINDOW) {
            AL_LOG_WARN("grpc.flood", "conn=%llu peer=%s reason=\"rapid stream resets\"",
                        (unsigned long long)al_h2conn_id(gc->h2), al_h2conn_peer_addr(gc->h2));
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
    struct al_grpc_call *c = nghttp2_session_get_stream_user_data(ss, stream_id);
    (void)flags;
    (void)ud;

    if (!c || c->finished)
        return 0; /* discarded; flow control is still credited by nghttp2 */
    int rc = append_input(c, data, len);
    if (rc == AL_ERR_TOOBIG) {
        call_fail(c, AL_GRPC_RESOURCE_EXHAUSTED, "request message over the size limit");
        return 0;
    }
    if (rc < 0) {
        call_fail(c, AL_GRPC_INTERNAL, "out of memory");
        return 0;
    }
    deframe(c);
    return 0;
}

/* We ended our side while the client is still sending (an early error or a
 * deadline): reset the stream with NO_ERROR so it stops, as gRPC servers do. */
static int on_frame_send(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct al_grpc_call *c;
    (void)ud;
    if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    c = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    if (c && !c->req_ended)
        nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *ss, int32_t stream_id, uint32_t error_code, void *ud)
{
    struct al_grpc_call *c = nghttp2_session_get_stream_user_data(ss, stream_id);
    (void)error_code;
    (void)ud;
    if (!c)
        return 0;
    nghttp2_session_set_stream_user_data(ss, stream_id, NULL);
    call_stream_closed(c);
    return 0;
}

/* ---------- connections ---------- */

static void gconn_on_close(struct al_h2conn *h2, int err, void *user)
{
    struct gconn *gc = user;
    struct al_grpc_server *s;
    (void)h2;
    (void)err;

    if (!gc)
        return; /* detached by al_grpc_server_free */
    s = gc->srv;
    while (gc->calls)
        call_stream_closed(gc->calls);
    dirty_remove(gc);
    if (gc->prev)
        gc->prev->next = gc->next;
    else
        s->conns = gc->next;
    if (gc->next)
        gc->next->prev = gc->prev;
    s->nconns--;
    al_metric_add(s->m_conns, -1);
    free(gc);
    if (s->draining && s->nconns == 0 && s->drain_done) {
        void (*done)(void *) = s->drain_done;
        s->drain_done = NULL;
        ev_timer_stop(s->loop, &s->drain_timer);
        done(s->drain_user);
    }
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct al_grpc_server *s = w->data;
    (void)revents;

    for (int i = 0; i < 64; i++) {
        int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                AL_LOG_WARN("grpc.accept", "reason=\"%s\"", strerror(errno));
            return;
        }
        if (s->nconns >= s->o.max_connections || s->draining) {
            close(fd);
            AL_LOG_WARN("grpc.accept", "reason=\"connection limit %zu reached\"",
                        s->o.max_connections);
            continue;
        }
        struct gconn *gc = calloc(1, sizeof(*gc));
        SSL *ssl = s->o.tls ? al_tls_ssl_new(s->o.tls) : NULL;
        if (!gc || (s->o.tls && !ssl)) {
            free(gc);
            SSL_free(ssl);
            close(fd);
            continue;
        }
        gc->srv = s;
        struct al_h2conn_opts co = {
            .tls_server = 1,
            .h2_server = 1,
            .require_peer_id = s->o.require_client_cert,
            .max_concurrent_streams = s->o.max_concurrent_streams,
            .cbs = s->cbs,
            .session_user = gc,
            .on_close = gconn_on_close,
            .user = gc,
        };
        /* linked before al_h2conn_new: a failed handshake closes through on_close */
        gc->next = s->conns;
        if (s->conns)
            s->conns->prev = gc;
        s->conns = gc;
        s->nconns++;
        al_metric_add(s->m_conns, 1);
        al_metric_add(s->m_conn_total, 1);
        if (al_h2conn_new(loop, fd, ssl, &co, &gc->h2) < 0) {
            gc->h2 = NULL;
            gconn_on_close(NULL, AL_ERR_NOMEM, gc);
        }
    }
}

/* ---------- server ---------- */

int al_grpc_server_new(struct ev_loop *loop, const struct al_grpc_server_opts *opts,
                       struct al_grpc_server **out)
{
    struct al_grpc_server *s;

    *out = NULL;
    if (!opts->listen || (!opts->tls && !opts->insecure))
        return AL_ERR_INVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return AL_ERR_NOMEM;
    s->loop = loop;
    s->o = *opts;
    s->fd = -1;
    s->listen = strdup(opts->listen);
    if (!s->o.max_message_bytes)
        s->o.max_message_bytes = 4 * 1024 * 1024;
    if (!s->o.max_concurrent_streams)
        s->o.max_concurrent_streams = 1000;
    if (!s->o.max_connections)
        s->o.max_connections = 4096;
    if (s->o.drain_timeout_s <= 0)
        s->o.drain_timeout_s = 30;
    if (!s->listen || nghttp2_session_callbacks_new(&s->cbs) != 0) {
        al_grpc_server_free(s);
        return AL_ERR_NOMEM;
    }
    s->o.listen = s->listen;
    nghttp2_session_callbacks_set_on_begin_headers_callback(s->cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(s->cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(s->cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(s->cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(s->cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(s->cbs, on_frame_send);
    nghttp2_session_callbacks_set_send_data_callback(s->cbs, send_data_cb);
    if (s->o.metrics) {
        s->m_conns = al_metrics_gauge(s->o.metrics, "airlock_grpc_connections",
                                      "Open gRPC connections", NULL);
        s->m_conn_total = al_metrics_counter(s->o.metrics, "airlock_grpc_connections_total",
                                             "gRPC connections accepted", NULL);
        s->m_streams =
            al_metrics_gauge(s->o.metrics, "airlock_grpc_streams", "Open gRPC streams", NULL);
    }
    *out = s;
    return 0;
}

int al_grpc_server_add_service(struct al_grpc_server *s, const ProtobufCServiceDescriptor *desc,
                               const struct al_grpc_method_impl *impls, size_t n, void *user)
{
    for (size_t i = 0; i < n; i++) {
        const ProtobufCMethodDescriptor *md = NULL;
        for (unsigned j = 0; j < desc->n_methods; j++)
            if (strcmp(desc->methods[j].name, impls[i].name) == 0)
                md = &desc->methods[j];
        if (!md)
            return AL_ERR_INVAL;
        struct method *ms = realloc(s->methods, (s->nmethods + 1) * sizeof(*ms));
        if (!ms)
            return AL_ERR_NOMEM;
        s->methods = ms;
        struct method *m = &s->methods[s->nmethods];
        memset(m, 0, sizeof(*m));
        if (asprintf(&m->path, "/%s/%s", desc->name, md->name) < 0)
            return AL_ERR_NOMEM;
        m->md = md;
        m->cb = impls[i].cb;
        m->sensitive = impls[i].sensitive;
        m->user = user;
        if (s->o.metrics) {
            char labels[512];
            snprintf(labels, sizeof(labels), "method=\"%s\",code=\"OK\"", m->path);
            m->ok_count = al_metrics_counter(s->o.metrics, "airlock_grpc_requests_total",
                                             "gRPC calls finished, by method and status", labels);
            snprintf(labels, sizeof(labels), "method=\"%s\"", m->path);
            m->latency = al_metrics_histogram(s->o.metrics, "airlock_grpc_request_duration_seconds",
                                              "gRPC call latency, by method", labels, NULL, 0);
        }
        s->nmethods++;
    }
    return 0;
}

int al_grpc_server_start(struct al_grpc_server *s)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int rc = al_listen_tcp(s->listen, 1024, &s->fd);

    if (rc < 0)
        return rc;
    if (getsockname(s->fd, (struct sockaddr *)&ss, &len) == 0)
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    ev_io_init(&s->accept_io, accept_cb, s->fd, EV_READ);
    s->accept_io.data = s;
    ev_io_start(s->loop, &s->accept_io);
    AL_LOG_INFO("grpc.listen", "addr=%s port=%d tls=%s mtls=%s", s->listen, s->port,
                s->o.tls ? "on" : "off", s->o.require_client_cert ? "required" : "optional");
    return 0;
}

void al_grpc_server_flush(struct al_grpc_server *s)
{
    while (s->dirty) {
        struct gconn *gc = s->dirty;
        dirty_remove(gc);
        if (gc->h2)
            al_h2conn_flush_now(gc->h2);
    }
}

int al_grpc_server_port(const struct al_grpc_server *s)
{
    return s->port;
}

size_t al_grpc_server_connections(const struct al_grpc_server *s)
{
    return s->nconns;
}

static void drain_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct al_grpc_server *s = w->data;
    (void)loop;
    (void)revents;
    AL_LOG_WARN("grpc.drain", "reason=\"drain timeout\" open_connections=%zu", s->nconns);
    for (struct gconn *gc = s->conns; gc; gc = gc->next)
        if (gc->h2)
            al_h2conn_close(gc->h2, AL_ERR_TIMEOUT);
}

void al_grpc_server_shutdown(struct al_grpc_server *s, void (*done)(void *user), void *user)
{
    s->draining = 1;
    s->drain_done = done;
    s->drain_user = user;
    if (s->fd >= 0) {
        ev_io_stop(s->loop, &s->accept_io);
        close(s->fd);
        s->fd = -1;
    }
    AL_LOG_INFO("grpc.drain", "open_connections=%zu", s->nconns);
    if (s->nconns == 0) {
        if (done) {
            s->drain_done = NULL;
            done(user);
        }
        return;
    }
    for (struct gconn *gc = s->conns; gc; gc = gc->next)
        if (gc->h2)
            al_h2conn_shutdown(gc->h2);
    ev_timer_init(&s->drain_timer, drain_timeout_cb, s->o.drain_timeout_s, 0.);
    s->drain_timer.data = s;
    ev_timer_start(s->loop, &s->drain_timer);
}

void al_grpc_server_free(struct al_grpc_server *s)
{
    if (!s)
        return;
    if (s->fd >= 0) {
        ev_io_stop(s->loop, &s->accept_io);
        close(s->fd);
    }
    ev_timer_stop(s->loop, &s->drain_timer);
    /* connections still open: end their calls, detach and close them */
    while (s->conns) {
        struct gconn *gc = s->conns;
        s->conns = gc->next;
        while (gc->calls)
            call_stream_closed(gc->calls);
        if (gc->h2) {
            al_h2conn_set_user(gc->h2, NULL);
            al_h2conn_close(gc->h2, AL_ERR_CLOSED);
        }
        free(gc);
    }
    for (size_t i = 0; i < s->nmethods; i++)
        free(s->methods[i].path);
    free(s->methods);
    if (s->cbs)
        nghttp2_session_callbacks_del(s->cbs);
    free(s->listen);
    free(s);
}

/* ---------- accessors ---------- */

const char *al_grpc_call_path(const struct al_grpc_call *c)
{
    return c->path;
}

const char *al_grpc_call_peer_id(const struct al_grpc_call *c)
{
    return c->gc && c->gc->h2 ? al_h2conn_peer_id(c->gc->h2) : "";
}

const char *al_grpc_call_metadata(struct al_grpc_call *c, const char *key, size_t *len)
{
    const struct header *h = find_header(c, key);
    size_t klen = strlen(key);

    if (!h)
        return NULL;
    if (klen > 4 && strcmp(key + klen - 4, "-bin") == 0) {
        size_t cap = al_base64_decoded_maxlen(h->value_len) + 1, out = 0;
        uint8_t *buf = al_arena_alloc(&c->arena, cap);
        unsigned flags = (h->value_len % 4 == 0) ? 0 : AL_BASE64_NOPAD;
        if (!buf || al_base64_decode(h->value, h->value_len, buf, cap, flags, &out) < 0)
            return NULL;
        buf[out] = 0;
        if (len)
            *len = out;
        return (const char *)buf;
    }
    if (len)
        *len = h->value_len;
    return h->value;
}

double al_grpc_call_deadline(const struct al_grpc_call *c)
{
    return c->deadline;
}

struct al_arena *al_grpc_call_arena(struct al_grpc_call *c)
{
    return &c->arena;
}

int al_grpc_call_cancelled(const struct al_grpc_call *c)
{
    return c->cancelled || c->stream_closed;
}

void al_grpc_call_set_user(struct al_grpc_call *c, void *user)
{
    c->user = user;
}

void *al_grpc_call_user(const struct al_grpc_call *c)
{
    return c->user;
}

uint64_t al_grpc_call_conn_id(const struct al_grpc_call *c)
{
    return c->gc && c->gc->h2 ? al_h2conn_id(c->gc->h2) : 0;
}

int32_t al_grpc_call_stream_id(const struct al_grpc_call *c)
{
    return c->stream_id;
}

void al_grpc_call_set_sensitive(struct al_grpc_call *c)
{
    c->sensitive = 1;
    al_arena_set_wipe(&c->arena);
}

void al_grpc_call_on_cancel(struct al_grpc_call *c, al_grpc_cancel_cb cb, void *user)
{
    c->cancel_cb = cb;
    c->cancel_user = user;
}

size_t al_grpc_call_pending(const struct al_grpc_call *c)
{
    return c->out_len - c->out_off;
}

void al_grpc_call_on_writable(struct al_grpc_call *c, size_t low, al_grpc_writable_cb cb,
                              void *user)
{
    c->writable_low = low;
    c->writable_cb = cb;
    c->writable_user = user;
}
