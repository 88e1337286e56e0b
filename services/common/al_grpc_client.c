/*
 * al_grpc_client: client calls on al_h2conn; see al_grpc_client.h.
 *
 * A call is linked in its channel from al_grpc_channel_call() until it is
 * freed. It is submitted as an HTTP/2 request once the connection is ready;
 * the response is deframed as it arrives; on_done runs when the stream closes
 * (trailers seen or not), when the deadline passes, or when the connection is
 * lost. A call is freed once its stream is gone (or it never had one).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>

#include "al_addr.h"
#include "al_base64.h"
#include "al_err.h"
#include "al_grpc.h"
#include "al_grpc_client.h"
#include "al_h2conn.h"
#include "al_log.h"
#include "al_resolve.h"
#include "al_wipe.h"

#define CC_MAX_MD       64
#define CC_MAX_MD_BYTES (32 * 1024)
#define CC_MAX_REQ_MD   32

struct kv {
    char *key, *val;
    size_t klen, vlen;
};

struct al_grpc_ccall {
    struct al_grpc_channel *ch;
    struct al_grpc_ccall *prev, *next;
    int32_t stream_id;
    char *path;
    uint8_t *req;
    size_t req_len, req_off;
    nghttp2_nv md[CC_MAX_REQ_MD];
    size_t nmd;
    char timeout_hdr[16];
    const ProtobufCMessageDescriptor *resp_desc;
    uint8_t *in;
    size_t in_len, in_cap;
    struct kv rmd[CC_MAX_MD];
    size_t nrmd, rmd_bytes;
    int http_status;
    int grpc_status; /* -1 until seen */
    char *grpc_message;
    int local_status; /* status decided locally (deframe error) or -1 */
    char local_msg[160];
    ev_timer deadline;
    double timeout_s;
    struct al_grpc_ccall_cbs cbs;
    void *user;
    int done, cancelled;
    int in_done; /* inside on_done: a cancel there only marks the call */
};

struct al_grpc_channel {
    struct ev_loop *loop;
    struct al_grpc_channel_opts o;
    char *target, *server_name, *expect_peer, *alpn;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int numeric; /* target is an address: no lookup */
    char host[256];
    int port;
    struct al_resolver *resolver; /* names: resolved on each (re)connect */
    struct al_resolve_req *resolving;
    struct al_h2conn *conn;
    int conn_was_ready; /* conn got to on_ready (calls waiting at its close redial) */
    struct al_grpc_ccall *calls;
    nghttp2_session_callbacks *cbs;
};

static void ccall_free(struct al_grpc_ccall *cc)
{
    struct al_grpc_channel *ch = cc->ch;
    if (cc->prev)
        cc->prev->next = cc->next;
    else if (ch->calls == cc)
        ch->calls = cc->next;
    if (cc->next)
        cc->next->prev = cc->prev;
    ev_timer_stop(ch->loop, &cc->deadline);
    /* metadata (bearer keys), requests and responses may hold secrets: wiped */
    for (size_t i = 0; i < cc->nmd; i++) {
        free(cc->md[i].name);
        al_wipe_free(cc->md[i].value);
    }
    for (size_t i = 0; i < cc->nrmd; i++) {
        free(cc->rmd[i].key);
        al_wipe_free(cc->rmd[i].val);
    }
    free(cc->grpc_message);
    free(cc->path);
    al_wipe_free(cc->req);
    al_wipe_free(cc->in);
    free(cc);
}

/* Runs on_done once (unless cancelled by the caller). */
static void ccall_done(struct al_grpc_ccall *cc, int status, const char *msg)
{
    if (cc->done || cc->cancelled)
        return;
    cc->done = 1;
    ev_timer_stop(cc->ch->loop, &cc->deadline);
    if (cc->cbs.on_done) {
        cc->in_done = 1;
        cc->cbs.on_done(cc, status, msg ? msg : "", cc->user);
        cc->in_done = 0;
    }
}

static int http_to_grpc(int http)
{
    switch (http) {
    case 400:
        return AL_GRPC_INTERNAL;
    case 401:
        return AL_GRPC_UNAUTHENTICATED;
    case 403:
        return AL_GRPC_PERMISSION_DENIED;
    case 404:
        return AL_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return AL_GRPC_UNAVAILABLE;
    default:
        return AL_GRPC_UNKNOWN;
    }
}

static void ccall_finish_from_stream(struct al_grpc_ccall *cc, uint32_t h2err)
{
    char msg[96];
    if (cc->local_status >= 0) {
        ccall_done(cc, cc->local_status, cc->local_msg);
    } else if (cc->grpc_status >= 0) {
        ccall_done(cc, cc->grpc_status, cc->grpc_message);
    } else if (cc->http_status && cc->http_status != 200) {
        snprintf(msg, sizeof(msg), "HTTP status %d from server", cc->http_status);
        ccall_done(cc, http_to_grpc(cc->http_status), msg);
    } else if (h2err == NGHTTP2_REFUSED_STREAM) {
        ccall_done(cc, AL_GRPC_UNAVAILABLE, "stream refused by server");
    } else if (h2err == NGHTTP2_CANCEL) {
        ccall_done(cc, AL_GRPC_CANCELLED, "stream cancelled by server");
    } else {
        snprintf(msg, sizeof(msg), "stream closed without status (%s)",
                 nghttp2_http2_strerror(h2err));
        ccall_done(cc, AL_GRPC_INTERNAL, msg);
    }
}

/* ---------- nghttp2 callbacks ---------- */

static ssize_t req_read_cb(nghttp2_session *ss, int32_t sid, uint8_t *buf, size_t length,
                           uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct al_grpc_ccall *cc = src->ptr;
    size_t n = cc->req_len - cc->req_off;
    (void)ss;
    (void)sid;
    (void)ud;
    if (n > length)
        n = length;
    memcpy(buf, cc->req + cc->req_off, n);
    cc->req_off += n;
    if (cc->req_off == cc->req_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int cl_on_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *ud)
{
    struct al_grpc_ccall *cc = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    (void)flags;
    (void)ud;
    if (!cc)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        cc->http_status = atoi((const char *)value);
        return 0;
    }
    if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        cc->grpc_status = atoi((const char *)value);
        if (cc->grpc_status < 0 || cc->grpc_status > 16)
            cc->grpc_status = AL_GRPC_UNKNOWN;
        return 0;
    }
    if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        free(cc->grpc_message);
        cc->grpc_message = strndup((const char *)value, valuelen);
        if (cc->grpc_message)
            al_grpc_decode_message(cc->grpc_message, valuelen);
        return 0;
    }
    cc->rmd_bytes += namelen + valuelen;
    if (cc->nrmd >= CC_MAX_MD || cc->rmd_bytes > CC_MAX_MD_BYTES)
        return 0; /* extra metadata dropped, bounded */
    struct kv *kv = &cc->rmd[cc->nrmd];
    kv->key = strndup((const char *)name, namelen);
    kv->vlen = valuelen;
    if (namelen > 4 && memcmp(name + namelen - 4, "-bin", 4) == 0) {
        /* binary metadata: kept decoded; padded or unpadded base64 accepted */
        size_t cap = al_base64_decoded_maxlen(valuelen) + 1;
        kv->val = malloc(cap);
        unsigned fl = valuelen % 4 ? AL_BASE64_NOPAD : 0;
        if (kv->val && al_base64_decode((const char *)value, valuelen, (uint8_t *)kv->val, cap, fl,
                                        &kv->vlen) < 0) {
            free(kv->val);
            kv->val = NULL;
        } else if (kv->val) {
            kv->val[kv->vlen] = '\0';
        }
    } else {
        kv->val = strndup((const char *)value, valuelen);
    }
    if (!kv->key || !kv->val) {
        free(kv->key);
        free(kv->val);
        return 0;
    }
    kv->klen = namelen;
    cc->nrmd++;
    return 0;
}

static void cl_fail_local(struct al_grpc_ccall *cc, nghttp2_session *ss, int status,
                          const char *msg)
{
    if (cc->local_status >= 0)
        return;
    cc->local_status = status;
    snprintf(cc->local_msg, sizeof(cc->local_msg), "%s", msg);
    nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, cc->stream_id, NGHTTP2_CANCEL);
}

static void cl_deframe(struct al_grpc_ccall *cc, nghttp2_session *ss)
{
    size_t max = cc->ch->o.max_message_bytes;
    while (cc->local_status < 0 && !cc->cancelled) {
        const uint8_t *msg;
        size_t len;
        int compressed;
        long used = al_grpc_frame_next(cc->in, cc->in_len, max, &msg, &len, &compressed);
        if (used == 0)
            return;
        if (used == AL_ERR_TOOBIG) {
            cl_fail_local(cc, ss, AL_GRPC_RESOURCE_EXHAUSTED,
                          "response message over the size limit");
            return;
        }
        if (used < 0 || compressed) {
            cl_fail_local(cc, ss, AL_GRPC_INTERNAL, "compressed or flagged response message");
            return;
        }
        ProtobufCMessage *m = protobuf_c_message_unpack(cc->resp_desc, &al_wipe_pb, len, msg);
        memmove(cc->in, cc->in + used, cc->in_len - (size_t)used);
        cc->in_len -= (size_t)used;
        OPENSSL_cleanse(cc->in + cc->in_len, (size_t)used); /* the moved-from tail */
        if (!m) {
            cl_fail_local(cc, ss, AL_GRPC_INTERNAL, "response message does not parse");
            return;
        }
        if (cc->cbs.on_message && !cc->done)
            cc->cbs.on_message(cc, m, cc->user);
        protobuf_c_message_free_unpacked(m, &al_wipe_pb);
    }
}

static int cl_on_data(nghttp2_session *ss, uint8_t flags, int32_t sid, const uint8_t *data,
                      size_t len, void *ud)
{
    struct al_grpc_ccall *cc = nghttp2_session_get_stream_user_data(ss, sid);
    (void)flags;
    (void)ud;
    if (!cc || cc->done || cc->cancelled || cc->local_status >= 0)
        return 0;
    size_t cap = cc->ch->o.max_message_bytes + 5;
    if (cc->in_len + len > cc->in_cap) {
        size_t want = cc->in_cap ? cc->in_cap : 1024;
        while (want < cc->in_len + len)
            want *= 2;
        if (want > cap + 16384)
            want = cap + 16384;
        uint8_t *p = want >= cc->in_len + len ? al_wipe_realloc(cc->in, cc->in_len, want) : NULL;
        if (!p) {
            cl_fail_local(cc, ss, AL_GRPC_RESOURCE_EXHAUSTED,
                          "response message over the size limit");
            return 0;
        }
        cc->in = p;
        cc->in_cap = want;
    }
    memcpy(cc->in + cc->in_len, data, len);
    cc->in_len += len;
    cl_deframe(cc, ss);
    return 0;
}

static int cl_on_stream_close(nghttp2_session *ss, int32_t sid, uint32_t err, void *ud)
{
    struct al_grpc_ccall *cc = nghttp2_session_get_stream_user_data(ss, sid);
    (void)ud;
    if (!cc)
        return 0;
    nghttp2_session_set_stream_user_data(ss, sid, NULL);
    if (cc->in_len && cc->local_status < 0 && cc->grpc_status == AL_GRPC_OK) {
        cc->local_status = AL_GRPC_INTERNAL;
        snprintf(cc->local_msg, sizeof(cc->local_msg), "response ended inside a message");
    }
    ccall_finish_from_stream(cc, err);
    ccall_free(cc);
    return 0;
}

/* ---------- submitting ---------- */

static void add_nv(nghttp2_nv *nv, size_t *n, const char *name, const char *value)
{
    nv[*n] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                          NGHTTP2_NV_FLAG_NONE};
    (*n)++;
}

/* Queues the request on the ready connection. Returns 0 or the nghttp2 error
 * (nothing called back, nothing freed: the caller decides). Out of stream
 * ids, the connection is closed so that the channel dials a new one. */
static int ccall_submit(struct al_grpc_ccall *cc)
{
    struct al_grpc_channel *ch = cc->ch;
    nghttp2_session *ss = al_h2conn_session(ch->conn);
    nghttp2_nv nv[CC_MAX_REQ_MD + 8];
    size_t n = 0;
    nghttp2_data_provider prd = {.source.ptr = cc, .read_callback = req_read_cb};
    const char *scheme = ch->o.tls ? "https" : "http";

    add_nv(nv, &n, ":method", "POST");
    add_nv(nv, &n, ":scheme", scheme);
    add_nv(nv, &n, ":path", cc->path);
    add_nv(nv, &n, ":authority", ch->target);
    add_nv(nv, &n, "content-type", "application/grpc");
    add_nv(nv, &n, "te", "trailers");
    add_nv(nv, &n, "user-agent", "airlock-grpc-c/0.1");
    if (cc->timeout_hdr[0])
        add_nv(nv, &n, "grpc-timeout", cc->timeout_hdr);
    for (size_t i = 0; i < cc->nmd; i++)
        nv[n++] = cc->md[i];
    int32_t sid = nghttp2_submit_request(ss, NULL, nv, n, &prd, cc);
    if (sid < 0) {
        AL_LOG_WARN("grpc.client", "target=%s path=%s reason=\"%s\"", ch->target, cc->path,
                    nghttp2_strerror(sid));
        if (sid == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE)
            al_h2conn_close(ch->conn, AL_ERR_CLOSED);
        return sid;
    }
    cc->stream_id = sid;
    return 0;
}

static void ch_on_ready(struct al_h2conn *c, void *user)
{
    struct al_grpc_channel *ch = user;
    if (!ch)
        return;
    if (ch->expect_peer &&
        strncmp(al_h2conn_peer_id(c), ch->expect_peer, strlen(ch->expect_peer)) != 0) {
        AL_LOG_WARN("grpc.client", "target=%s reason=\"server identity %s is not %s\"", ch->target,
                    al_h2conn_peer_id(c), ch->expect_peer);
        al_h2conn_close(c, AL_ERR_AUTH);
        return;
    }
    ch->conn_was_ready = 1;
    /* a failed submit reports at once; its on_done may cancel or start
     * other calls, so the walk starts over (calls sent or done are skipped) */
    struct al_grpc_ccall *cc = ch->calls;
    while (cc) {
        if (cc->stream_id || cc->done) {
            cc = cc->next;
            continue;
        }
        int rc = ccall_submit(cc);
        if (rc < 0) {
            ccall_done(cc, AL_GRPC_UNAVAILABLE, nghttp2_strerror(rc));
            ccall_free(cc);
            if (!ch->conn || !al_h2conn_ready(ch->conn))
                return; /* closed: the waiting calls go with it */
            cc = ch->calls;
            continue;
        }
        cc = cc->next;
    }
    al_h2conn_flush(c);
}

/* Fails the channel's calls (only those with a stream when streamed_only);
 * on_done may cancel or start others, so each round looks again. */
static void fail_calls(struct al_grpc_channel *ch, const char *msg, int streamed_only)
{
    for (;;) {
        struct al_grpc_ccall *cc = ch->calls;
        while (cc && streamed_only && !cc->stream_id)
            cc = cc->next;
        if (!cc)
            return;
        ccall_done(cc, AL_GRPC_UNAVAILABLE, msg);
        ccall_free(cc);
    }
}

static void fail_waiting(struct al_grpc_channel *ch, const char *msg)
{
    fail_calls(ch, msg, 0);
}

static int ch_connect(struct al_grpc_channel *ch);

/* The connection ended. Its calls fail; calls still waiting for a stream (made
 * while it was closing) get a new connection, unless this one never became
 * usable (then they fail too: dialling again at once would only loop). */
static void ch_on_close(struct al_h2conn *c, int err, void *user)
{
    struct al_grpc_channel *ch = user;
    int was_ready;
    char msg[160];
    (void)c;
    if (!ch)
        return;
    ch->conn = NULL;
    was_ready = ch->conn_was_ready;
    ch->conn_was_ready = 0;
    snprintf(msg, sizeof(msg), "connection to %s lost: %s", ch->target,
             err ? al_strerror(err) : "closed by peer");
    fail_calls(ch, msg, was_ready);
    if (ch->calls && !ch->conn && ch_connect(ch) < 0)
        fail_waiting(ch, msg);
}

static int ch_dial(struct al_grpc_channel *ch)
{
    struct al_h2conn_opts co = {
        .tls_server = 0,
        .h2_server = 0,
        .require_peer_id = ch->o.tls != NULL,
        .verify_host = ch->o.tls ? ch->server_name : NULL,
        .alpn = ch->alpn,
        .handshake_timeout_s = ch->o.connect_timeout_s,
        .ping_interval_s = ch->o.ping_interval_s,
        .cbs = ch->cbs,
        .session_user = ch,
        .on_ready = ch_on_ready,
        .on_close = ch_on_close,
        .user = ch,
    };
    return al_h2conn_connect(ch->loop, (struct sockaddr *)&ch->addr, ch->addrlen, ch->o.tls, &co,
                             &ch->conn);
}

static void resolved_cb(struct al_resolve_req *req, int status, const struct al_resolve_result *res,
                        void *user)
{
    struct al_grpc_channel *ch = user;
    char msg[320];
    (void)req;

    ch->resolving = NULL;
    if (status == 0) {
        /* the first answer; a later reconnect resolves again and may differ */
        memcpy(&ch->addr, &res->addr[0], res->len[0]);
        ch->addrlen = res->len[0];
        status = ch_dial(ch);
        if (status == 0)
            return;
    }
    snprintf(msg, sizeof(msg), "cannot reach %s: %s", ch->target, al_strerror(status));
    AL_LOG_WARN("grpc.client", "target=%s reason=\"%s\"", ch->target, al_strerror(status));
    fail_waiting(ch, msg);
}

static int ch_connect(struct al_grpc_channel *ch)
{
    if (ch->numeric)
        return ch_dial(ch);
    if (ch->resolving)
        return 0;
    if (!ch->resolver) {
        int rc = al_resolver_new(ch->loop, &ch->resolver);
        if (rc < 0)
            return rc;
    }
    return al_resolve(ch->resolver, ch->host, ch->port, resolved_cb, ch, &ch->resolving);
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct al_grpc_ccall *cc = w->data;
    (void)loop;
    (void)revents;
    ccall_done(cc, AL_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
    if (cc->stream_id && cc->ch->conn) {
        nghttp2_submit_rst_stream(al_h2conn_session(cc->ch->conn), NGHTTP2_FLAG_NONE, cc->stream_id,
                                  NGHTTP2_CANCEL);
        al_h2conn_flush(cc->ch->conn);
    } else if (!cc->stream_id) {
        ccall_free(cc);
    }
}

static int copy_md(struct al_grpc_ccall *cc, const struct al_grpc_md *md, size_t nmd)
{
    if (nmd > CC_MAX_REQ_MD)
        return AL_ERR_INVAL;
    for (size_t i = 0; i < nmd; i++) {
        size_t klen = strlen(md[i].key);
        int bin = klen > 4 && strcmp(md[i].key + klen - 4, "-bin") == 0;
        char *v;
        size_t vlen = md[i].len;
        if (bin) {
            size_t cap = al_base64_encoded_len(md[i].len, AL_BASE64_NOPAD) + 1;
            v = malloc(cap);
            if (v && al_base64_encode(md[i].value, md[i].len, v, cap, AL_BASE64_NOPAD, &vlen) < 0) {
                free(v);
                return AL_ERR_INVAL;
            }
        } else {
            v = strndup(md[i].value, md[i].len);
        }
        char *k = strdup(md[i].key);
        if (!v || !k) {
            free(v);
            free(k);
            return AL_ERR_NOMEM;
        }
        cc->md[cc->nmd++] =
            (nghttp2_nv){(uint8_t *)k, (uint8_t *)v, klen, vlen, NGHTTP2_NV_FLAG_NONE};
    }
    return 0;
}

int al_grpc_channel_call(struct al_grpc_channel *ch, const char *path, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *resp_desc, const struct al_grpc_md *md,
                         size_t nmd, double timeout_s, const struct al_grpc_ccall_cbs *cbs,
                         void *user, struct al_grpc_ccall **out)
{
    struct al_grpc_ccall *cc;
    size_t len = protobuf_c_message_get_packed_size(req);
    int rc;

    if (out)
        *out = NULL;
    if (len > ch->o.max_message_bytes)
        return AL_ERR_TOOBIG;
    cc = calloc(1, sizeof(*cc));
    if (!cc)
        return AL_ERR_NOMEM;
    cc->ch = ch;
    cc->grpc_status = -1;
    cc->local_status = -1;
    cc->resp_desc = resp_desc;
    cc->cbs = *cbs;
    cc->user = user;
    cc->path = strdup(path);
    cc->req = malloc(len + 5);
    ev_timer_init(&cc->deadline, deadline_cb, 0., 0.);
    cc->deadline.data = cc;
    /* link first so ccall_free can unlink on any error */
    cc->next = ch->calls;
    if (ch->calls)
        ch->calls->prev = cc;
    ch->calls = cc;
    if (!cc->path || !cc->req) {
        ccall_free(cc);
        return AL_ERR_NOMEM;
    }
    rc = copy_md(cc, md, nmd);
    if (rc < 0) {
        ccall_free(cc);
        return rc;
    }
    al_grpc_frame_prefix(cc->req, len);
    protobuf_c_message_pack(req, cc->req + 5);
    cc->req_len = len + 5;
    if (timeout_s > 0) {
        long long ms = (long long)(timeout_s * 1000.0);
        if (ms < 1)
            ms = 1;
        if (ms > 99999999)
            ms = 99999999;
        snprintf(cc->timeout_hdr, sizeof(cc->timeout_hdr), "%lldm", ms);
        ev_timer_set(&cc->deadline, timeout_s, 0.);
        ev_timer_start(ch->loop, &cc->deadline);
    }
    if (!ch->conn && !ch->resolving) {
        rc = ch_connect(ch);
        if (rc < 0) {
            ccall_free(cc);
            return rc;
        }
    } else if (al_h2conn_ready(ch->conn)) {
        rc = ccall_submit(cc);
        if (rc < 0) {
            ccall_free(cc);
            return AL_ERR_CLOSED;
        }
        al_h2conn_flush(ch->conn);
    }
    if (out)
        *out = cc;
    return 0;
}

void al_grpc_ccall_cancel(struct al_grpc_ccall *cc)
{
    if (cc->cancelled)
        return;
    cc->cancelled = 1;
    ev_timer_stop(cc->ch->loop, &cc->deadline);
    if (cc->in_done)
        return; /* whoever called on_done frees it (or resets its stream) */
    if (cc->stream_id && cc->ch->conn) {
        nghttp2_submit_rst_stream(al_h2conn_session(cc->ch->conn), NGHTTP2_FLAG_NONE, cc->stream_id,
                                  NGHTTP2_CANCEL);
        al_h2conn_flush(cc->ch->conn);
        return; /* freed when the stream closes */
    }
    ccall_free(cc);
}

const char *al_grpc_ccall_metadata(struct al_grpc_ccall *cc, const char *key, size_t *len)
{
    for (size_t i = 0; i < cc->nrmd; i++) {
        if (strcmp(cc->rmd[i].key, key) == 0) {
            if (len)
                *len = cc->rmd[i].vlen;
            return cc->rmd[i].val;
        }
    }
    return NULL;
}

const char *al_grpc_channel_peer_id(const struct al_grpc_channel *ch)
{
    return ch->conn ? al_h2conn_peer_id(ch->conn) : "";
}

int al_grpc_channel_new(struct ev_loop *loop, const struct al_grpc_channel_opts *opts,
                        struct al_grpc_channel **out)
{
    struct al_grpc_channel *ch = calloc(1, sizeof(*ch));
    char host[256];

    *out = NULL;
    if (!ch)
        return AL_ERR_NOMEM;
    ch->loop = loop;
    ch->o = *opts;
    if (!ch->o.max_message_bytes)
        ch->o.max_message_bytes = 4 * 1024 * 1024;
    if (ch->o.connect_timeout_s <= 0)
        ch->o.connect_timeout_s = 10;
    if (!opts->target ||
        al_split_hostport(opts->target, ch->host, sizeof(ch->host), &ch->port) < 0) {
        free(ch);
        return AL_ERR_INVAL;
    }
    ch->numeric = al_addr_parse(opts->target, &ch->addr, &ch->addrlen) == 0;
    /* host part of target for certificate verification */
    snprintf(host, sizeof(host), "%s", opts->target);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = '\0';
    if (host[0] == '[') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    ch->target = strdup(opts->target);
    ch->server_name = strdup(opts->server_name ? opts->server_name : host);
    ch->expect_peer = opts->expect_peer ? strdup(opts->expect_peer) : NULL;
    ch->alpn = strdup(opts->alpn ? opts->alpn : "h2");
    if (!ch->target || !ch->server_name || !ch->alpn || (opts->expect_peer && !ch->expect_peer) ||
        nghttp2_session_callbacks_new(&ch->cbs) != 0) {
        al_grpc_channel_free(ch);
        return AL_ERR_NOMEM;
    }
    nghttp2_session_callbacks_set_on_header_callback(ch->cbs, cl_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(ch->cbs, cl_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(ch->cbs, cl_on_stream_close);
    *out = ch;
    return 0;
}

void al_grpc_channel_free(struct al_grpc_channel *ch)
{
    if (!ch)
        return;
    while (ch->calls) {
        struct al_grpc_ccall *cc = ch->calls;
        ccall_done(cc, AL_GRPC_CANCELLED, "channel closed");
        if (cc->stream_id && ch->conn)
            nghttp2_session_set_stream_user_data(al_h2conn_session(ch->conn), cc->stream_id, NULL);
        ccall_free(cc);
    }
    if (ch->conn) {
        al_h2conn_set_user(ch->conn, NULL);
        al_h2conn_close(ch->conn, 0);
    }
    al_resolve_cancel(ch->resolving);
    al_resolver_free(ch->resolver);
    if (ch->cbs)
        nghttp2_session_callbacks_del(ch->cbs);
    free(ch->target);
    free(ch->server_name);
    free(ch->expect_peer);
    free(ch->alpn);
    free(ch);
}

/* ---------- blocking helper ---------- */

struct sync_state {
    ProtobufCMessage *resp;
    int status, finished;
    char *msg;
    size_t msglen;
    const ProtobufCMessageDescriptor *desc;
};

static void sync_msg(struct al_grpc_ccall *cc, const ProtobufCMessage *m, void *user)
{
    struct sync_state *st = user;
    (void)cc;
    if (st->resp)
        return;
    /* re-pack to keep a private copy past the callback */
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return;
    protobuf_c_message_pack(m, buf);
    st->resp = protobuf_c_message_unpack(st->desc, &al_wipe_pb, len, buf);
    OPENSSL_cleanse(buf, len);
    free(buf);
}

static void sync_done(struct al_grpc_ccall *cc, int status, const char *msg, void *user)
{
    struct sync_state *st = user;
    (void)cc;
    st->status = status;
    st->finished = 1;
    if (st->msg && st->msglen)
        snprintf(st->msg, st->msglen, "%s", msg);
}

int al_grpc_unary_sync(const struct al_grpc_channel_opts *opts, const char *path,
                       const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                       const struct al_grpc_md *md, size_t nmd, double timeout_s,
                       ProtobufCMessage **resp, int *status, char *msg, size_t msglen)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct al_grpc_channel *ch = NULL;
    struct sync_state st = {.msg = msg, .msglen = msglen, .desc = resp_desc};
    static const struct al_grpc_ccall_cbs cbs = {sync_msg, sync_done};
    int rc;

    *resp = NULL;
    if (msg && msglen)
        msg[0] = '\0';
    if (!loop)
        return AL_ERR_NOMEM;
    rc = al_grpc_channel_new(loop, opts, &ch);
    if (rc == 0)
        rc = al_grpc_channel_call(ch, path, req, resp_desc, md, nmd, timeout_s, &cbs, &st, NULL);
    while (rc == 0 && !st.finished)
        ev_run(loop, EVRUN_ONCE);
    al_grpc_channel_free(ch);
    ev_run(loop, 0); /* let the closed connection be reaped */
    ev_loop_destroy(loop);
    if (rc < 0) {
        if (st.resp)
            protobuf_c_message_free_unpacked(st.resp, &al_wipe_pb);
        return rc;
    }
    *status = st.status;
    if (st.status == AL_GRPC_OK && !st.resp) {
        *status = AL_GRPC_INTERNAL;
        if (msg && msglen)
            snprintf(msg, msglen, "server sent no response message");
    }
    if (*status == AL_GRPC_OK)
        *resp = st.resp;
    else if (st.resp)
        protobuf_c_message_free_unpacked(st.resp, NULL);
    return 0;
}
