/*
 * libFuzzer target for the relay's HTTP/1.1 request path (rl_h1conn).
 *
 * Each input drives one real connection over a socketpair on a libev loop:
 *   byte 0     behaviour of the upper layer (see the F_* flags)
 *   byte 1     seed of the chunking: the rest is written in pieces of
 *              fuzzer-chosen sizes, the loop running between pieces
 *   byte 2..   the bytes the client sends; then it shuts down its side
 * The upper layer answers every request (echoing the body, with a length or
 * chunked, early from on_request or at the end of the body), pauses and
 * resumes the body, shuts the connection down, as the flags say.
 *
 * Checked for every input: no crash, no leak, no hang (the connection is
 * gone within a few seconds of the client's EOF); everything the server
 * wrote parses as HTTP/1.1 responses; at most one final response per
 * request handed to the upper layer plus one error reply, and nothing after
 * an error reply; on_close exactly once, never on_request while a response
 * is still open.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>
#include <http_parser.h>

#include "al_err.h"
#include "al_log.h"
#include "h1.h"
#include "rlbuf.h"

#define F_PAUSE_BODY 0x01 /* pause after each body piece, resume from the loop */
#define F_EARLY      0x02 /* answer in on_request */
#define F_CHUNKED    0x04 /* answer with unknown length */
#define F_NO_KEEP    0x08 /* respond_end(keep = 0) */
#define F_PAUSE_REQ  0x10 /* pause in on_request, resume from the loop */
#define F_SHUTDOWN   0x20 /* rl_h1conn_shutdown after the first request */
#define F_SMALL      0x40 /* small caps: head 200, 4 headers, body 64 */
#define F_WRITABLE   0x80 /* ask for on_writable on every request */

#define MAX_REQ 4096

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

static struct ev_loop *loop;

struct app {
    struct rl_h1conn *c;
    unsigned flags;
    int nreq, closed, open_resp, answered, paused;
    char methods[MAX_REQ]; /* 'H' for HEAD, '-' otherwise, by request */
    struct rl_buf body;
    ev_timer resume;
};

static struct app A;

static void answer(struct rl_h1conn *c)
{
    static const struct rl_h1_header h[] = {{"content-type", 12, "application/json", 16}};
    int keep = !(A.flags & F_NO_KEEP);

    if (A.answered)
        return;
    A.answered = 1;
    A.open_resp = 0;
    if (!(A.flags & F_CHUNKED)) {
        rl_h1conn_respond(c, 200, h, 1, A.body.p, A.body.len, keep);
        return;
    }
    if (rl_h1conn_respond_head(c, 200, h, 1, -1) < 0)
        return;
    for (size_t off = 0; off < A.body.len; off += 7) {
        size_t n = A.body.len - off < 7 ? A.body.len - off : 7;
        if (rl_h1conn_respond_body(c, A.body.p + off, n) < 0)
            break;
    }
    rl_h1conn_respond_end(c, keep);
}

static void resume_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    if (A.c && A.paused) {
        A.paused = 0;
        rl_h1conn_resume(A.c);
    }
}

static void pause_now(struct rl_h1conn *c)
{
    rl_h1conn_pause(c);
    A.paused = 1;
    ev_timer_stop(loop, &A.resume);
    ev_timer_set(&A.resume, 0., 0.);
    ev_timer_start(loop, &A.resume);
}

static int on_request(struct rl_h1conn *c, const struct rl_h1_head *h, void *user)
{
    (void)user;
    CHECK(!A.open_resp);
    CHECK(h->method && h->target && h->target[0] == '/');
    for (size_t i = 0; i < h->nheaders; i++)
        for (size_t k = 0; k < h->headers[i].name_len; k++)
            CHECK(!(h->headers[i].name[k] >= 'A' && h->headers[i].name[k] <= 'Z'));
    CHECK(!(h->chunked && h->content_length >= 0));
    if (A.nreq < MAX_REQ)
        A.methods[A.nreq] = strcmp(h->method, "HEAD") == 0 ? 'H' : '-';
    A.nreq++;
    A.open_resp = 1;
    A.answered = 0;
    rl_buf_reset(&A.body);
    if (A.flags & F_WRITABLE)
        rl_h1conn_want_writable(c, 0);
    if (A.flags & F_SHUTDOWN)
        rl_h1conn_shutdown(c);
    if (A.flags & F_EARLY)
        answer(c);
    else if (A.flags & F_PAUSE_REQ)
        pause_now(c);
    return 0;
}

static void on_body(struct rl_h1conn *c, const uint8_t *d, size_t n, void *user)
{
    (void)user;
    CHECK(!A.paused || (A.flags & F_EARLY));
    CHECK(n > 0);
    if (rl_buf_append(&A.body, d, n) < 0)
        rl_buf_reset(&A.body);
    if (A.flags & F_PAUSE_BODY)
        pause_now(c);
}

static void on_body_end(struct rl_h1conn *c, void *user)
{
    (void)user;
    answer(c);
}

static void on_writable(struct rl_h1conn *c, void *user)
{
    (void)c;
    (void)user;
}

static void on_close(struct rl_h1conn *c, int err, void *user)
{
    (void)c;
    (void)err;
    (void)user;
    CHECK(!A.closed);
    A.closed = 1;
    A.c = NULL;
}

static const struct rl_h1conn_cbs cbs = {
    .on_request = on_request,
    .on_body = on_body,
    .on_body_end = on_body_end,
    .on_writable = on_writable,
    .on_close = on_close,
};

/* ---------- reading our output back ---------- */

struct check {
    int final, interim, errors, after_error, in_value, is_error;
    const char *buf_end, *last_value_end;
};

static int rp_begin(http_parser *p)
{
    struct check *k = p->data;
    k->is_error = 0;
    k->in_value = 0;
    return 0;
}

static int rp_field(http_parser *p, const char *at, size_t len)
{
    struct check *k = p->data;
    k->in_value = 0;
    if (len == 13 && strncasecmp(at, "airlock-error", 13) == 0)
        k->is_error = 1;
    return 0;
}

static int rp_value(http_parser *p, const char *at, size_t len)
{
    struct check *k = p->data;
    k->last_value_end = at + len;
    return 0;
}

static int rp_headers_done(http_parser *p)
{
    struct check *k = p->data;
    if (p->status_code < 200)
        return 1;
    if (k->final < MAX_REQ && k->final < A.nreq)
        return A.methods[k->final] == 'H';
    /* an error reply to a request never handed over: a response to HEAD
     * (no body) exactly when nothing follows its head */
    return k->is_error && k->last_value_end && k->last_value_end + 4 == k->buf_end;
}

static int rp_done(http_parser *p)
{
    struct check *k = p->data;
    if (p->status_code < 200) {
        k->interim++;
        return 0;
    }
    if (k->errors)
        k->after_error++;
    k->final++;
    k->errors += k->is_error;
    return 0;
}

static const http_parser_settings rp_settings = {
    .on_message_begin = rp_begin,
    .on_header_field = rp_field,
    .on_header_value = rp_value,
    .on_headers_complete = rp_headers_done,
    .on_message_complete = rp_done,
};

static void check_output(const struct rl_buf *out)
{
    struct check k = {0};
    http_parser p;

    if (!out->len)
        return;
    k.buf_end = (const char *)out->p + out->len;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &k;
    size_t n = http_parser_execute(&p, &rp_settings, (const char *)out->p, out->len);
    CHECK(HTTP_PARSER_ERRNO(&p) == HPE_OK && n == out->len);
    http_parser_execute(&p, &rp_settings, NULL, 0); /* EOF ends a close-delimited body */
    CHECK(HTTP_PARSER_ERRNO(&p) == HPE_OK);
    CHECK(k.final <= A.nreq + 1);
    CHECK(k.errors <= 1);
    CHECK(k.after_error == 0);
}

/* ---------- driver ---------- */

static void drain(int fd, struct rl_buf *out, int *eof)
{
    uint8_t buf[16384];

    while (!*eof) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            *eof = 1;
            return;
        }
        if (rl_buf_append(out, buf, (size_t)n) < 0)
            __builtin_trap();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    loop = EV_DEFAULT;
    al_log_set_level_name("off");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rl_h1_limits small = {
        .max_head = 200, .max_headers = 4, .max_body = 64, .max_pending = 256};
    struct rl_h1_limits lim = {0};
    struct rl_buf out;
    uint32_t seed;
    int sv[2], eof = 0;
    size_t off = 2;

    if (size < 2)
        return 0;
    memset(&A, 0, sizeof(A));
    A.flags = data[0];
    seed = data[1] * 2654435761u + 1;
    rl_buf_init(&A.body, 0);
    rl_buf_init(&out, 0);
    ev_timer_init(&A.resume, resume_cb, 0., 0.);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        __builtin_trap();
    if (rl_h1conn_new(loop, sv[0], NULL, (A.flags & F_SMALL) ? &small : &lim, &cbs, NULL, &A.c) < 0)
        __builtin_trap();

    while (off < size) {
        seed = seed * 1103515245u + 12345u;
        size_t piece = 1 + (seed >> 16) % ((seed & 0x100) ? 4096 : 16);
        if (piece > size - off)
            piece = size - off;
        while (piece > 0) {
            ssize_t w = send(sv[1], data + off, piece, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                off += (size_t)w;
                piece -= (size_t)w;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                off = size; /* the server closed: the rest cannot be sent */
                break;
            }
            for (int i = 0; i < 3; i++)
                ev_run(loop, EVRUN_NOWAIT);
            drain(sv[1], &out, &eof);
        }
    }
    shutdown(sv[1], SHUT_WR);

    /* the connection must be gone soon after the client's EOF */
    ev_tstamp end = ev_time() + 5;
    for (;;) {
        drain(sv[1], &out, &eof);
        if (!ev_run(loop, EVRUN_NOWAIT) && eof)
            break;
        if (ev_time() > end)
            __builtin_trap(); /* hang */
    }
    drain(sv[1], &out, &eof);
    CHECK(A.closed);
    CHECK(!ev_is_active(&A.resume));
    check_output(&out);
    close(sv[1]);
    rl_buf_cleanup(&out);
    rl_buf_cleanup(&A.body);
    return 0;
}
