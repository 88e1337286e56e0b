/*
 * h1: one HTTP/1.1 server connection (see h1.h).
 *
 * Input path. Bytes read from the socket (or SSL) go to a fixed input buffer.
 * Each byte is first checked by a small scanner (struct scan) that enforces
 * what the Debian build of http_parser does not (it is compiled with
 * HTTP_PARSER_STRICT=0): CRLF only, no obs-fold, token header names,
 * field-value characters, an origin-form target (with proxy_forms also the
 * characters of absolute- and authority-form), HTTP/1.0 or 1.1, the head
 * and header-count caps, and exact chunked framing (size line, CRLF after the
 * data, trailers) with the body cap. Only bytes the scanner accepted are fed
 * to http_parser, which then does the parsing proper (method, headers,
 * Content-Length, keep-alive, chunk decoding). The scanner stops at the end
 * of each message, so the next pipelined request is never looked at early.
 *
 * http_parser is paused at three points: the end of the head (the head is
 * checked and on_request runs outside the parser), a body piece after which
 * the upper layer paused, and the end of the message (one request at a
 * time). Every other upper-layer callback runs outside http_parser_execute.
 *
 * Request states (req):
 *   IDLE  no byte of the next request yet     timer: header_timeout from
 *                                              accept (first request) or
 *                                              idle_timeout
 *   HEAD  head arriving                        header_timeout from the first
 *                                              byte (absolute: slowloris)
 *   BODY  on_request done, body arriving       body_timeout since progress
 *                                              (not while paused)
 *   DONE  on_body_end delivered or pending     none (the upper layer answers)
 * The response (rsp: NONE, OPEN, ENDED) runs alongside; once it has ENDED and
 * every byte is written, the connection returns to IDLE and parses what is
 * buffered, or closes. Queued output has its own progress timeout
 * (body_timeout since the last byte written).
 *
 * Life (life): OPEN -> FLUSH (last response or an error reply going out;
 * on_close already delivered) -> LINGER (write side shut, draining what the
 * peer still sends so it reads our answer rather than a reset) -> DEAD
 * (freed from a zero timer). rl_h1conn_close(), I/O errors and most timeouts
 * go straight to DEAD. on_close always runs from that zero timer, never
 * inside a call the upper layer made, and exactly once.
 *
 * Output path. Bytes go straight to the socket when nothing is queued
 * (writev / SSL_write from the caller's buffer; small TLS pieces are staged
 * into one record); what the socket does not take is copied to the queue and
 * written on EV_WRITE. With TLS the queue always starts with the bytes of a
 * write that returned WANT_WRITE, so the retry passes at least the same
 * bytes (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows the new address). The
 * response head is held until the first body piece, the end, or the next
 * loop turn, so a small response leaves in one write.
 *
 * Contract details beyond h1.h: respond_body() returns AL_ERR_INVAL when the
 * bytes would exceed the announced Content-Length; a piece is always
 * accepted when nothing is queued, so a caller's piece larger than
 * max_pending is never refused forever. When the response ends before the
 * request body was read whole, the rest of the body is read and dropped (it
 * is capped by max_body and body_timeout) and the connection stays usable;
 * if the client still waits for 100 Continue it is closed instead. Body
 * bytes already buffered when the head ends are checked before on_request,
 * so a request whose framing is known to be broken never reaches the upper
 * layer; a framing error found later gets a 400 when no response has
 * started (else a close), and on_close tells the upper layer. HTTP/1.1
 * requests without Host get 400 (RFC 9112 3.2); Expect: 100-continue is
 * honoured (417 for other expectations); a request body stalled past
 * body_timeout gets 408. A peer EOF while a request is in progress ends the
 * connection (on_close with AL_ERR_CLOSED), which is how an agent that went
 * away cancels its request.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>
#include <openssl/err.h>

#include "al_addr.h"
#include "al_err.h"
#include "al_log.h"
#include "h1.h"
#include "rlbuf.h"

#define IN_CAP    (16 * 1024) /* read buffer; not a request cap */
#define TLS_STAGE (16 * 1024) /* one TLS record of plaintext */
#define LINGER_S  2.0         /* draining after our last byte */
/* Bytes drained before giving up. A client refused early (413 on its
 * Content-Length) is usually still sending the body; closing with its bytes
 * unread makes the kernel answer with a reset, which can destroy our answer
 * in the client's receive queue before it reads it. Draining is cheap and
 * LINGER_S bounds how long a connection can be held this way. */
#define LINGER_CAP     (16 * 1024 * 1024)
#define CHUNK_LINE_MAX 1024 /* chunk-size line with its extensions */
#define METHOD_MAX     32
#define MAX_IOV        5

#define DEF_MAX_HEAD    (16 * 1024)
#define DEF_MAX_HEADERS 100
#define DEF_MAX_BODY    (4 * 1024 * 1024)
#define DEF_MAX_PENDING (1024 * 1024)

enum req_state { RQ_IDLE, RQ_HEAD, RQ_BODY, RQ_DONE };
enum rsp_state { RSP_NONE, RSP_OPEN, RSP_ENDED };
enum life { L_OPEN, L_FLUSH, L_LINGER, L_DEAD };
enum pause_why { PW_NONE, PW_HEADERS, PW_BODY, PW_MSG, PW_STOP };
enum tkind { T_NONE, T_HEAD, T_IDLE, T_BODY, T_WRITE, T_LINGER };

enum scan_state {
    /* request head */
    SC_LEAD, /* before the request line (empty lines allowed) */
    SC_LEAD_LF,
    SC_METHOD,
    SC_TARGET0,
    SC_TARGET,
    SC_PCT1,
    SC_PCT2,
    SC_VERSION,
    SC_RL_LF,
    SC_LINE, /* start of a header (or trailer) line, or the final CRLF */
    SC_NAME,
    SC_VALUE,
    SC_VALUE_LF,
    SC_END_LF,
    SC_HEAD_DONE,
    /* body */
    SC_IDENT,
    SC_CH_SIZE0,
    SC_CH_SIZE,
    SC_CH_EXT,
    SC_CH_SIZE_LF,
    SC_CH_DATA,
    SC_CH_DATA_CR,
    SC_CH_DATA_LF,
    SC_MSG_DONE
};

struct scan {
    enum scan_state st;
    size_t head_bytes; /* request line + headers so far */
    size_t nfields;    /* header (or trailer) lines so far */
    size_t tok;        /* length of the token being read */
    char ver[8];
    uint64_t left;       /* identity body or chunk data still to skip */
    uint64_t chunk;      /* size of the chunk being announced */
    uint64_t body_total; /* announced chunk sizes so far */
    size_t line;         /* chunk-size line length */
    size_t trailer_bytes;
    int trailer;     /* SC_LINE..SC_END_LF read the trailer section */
    int status;      /* != 0: the byte at the stop position is bad */
    const char *why; /* static text for the error reply and the log */
};

struct hfield {
    size_t no, nl, vo, vl; /* offsets into the head store */
};

struct rl_h1conn {
    struct ev_loop *loop;
    int fd;
    SSL *ssl;
    uint64_t id;
    char peer[AL_ADDR_STRLEN];
    struct rl_h1_limits lim;
    struct rl_h1conn_cbs cbs;
    void *user;

    ev_io io;
    int io_events;
    ev_timer timer;     /* the one deadline of the current state */
    ev_tstamp armed_at; /* when the timer fires, while it is active */
    ev_timer kick;      /* zero delay: deferred work, on_close and the final free */

    enum life life;
    int notified;  /* on_close has run */
    int close_err; /* err for on_close */
    int in_run;

    /* input */
    uint8_t *in;
    size_t in_off, in_len; /* unparsed bytes are in[in_off, in_len) */
    size_t scan_pos;       /* bytes in[in_off, scan_pos) passed the scanner */
    size_t drained;        /* linger */

    /* request */
    enum req_state req;
    http_parser hp;
    struct scan sc;
    enum pause_why pw;
    struct rl_buf hs;  /* head store: target, names, values (NUL-separated) */
    struct rl_buf hfs; /* struct hfield array */
    size_t target_off, target_len;
    int field_state; /* 0 none, 1 in a name, 2 in a value */
    int paused;
    int body_end_pending;
    int expect_continue;
    int req_keep;    /* the request allows another one */
    int head_method; /* HEAD: no response body */
    int http_minor;
    uint64_t nreq; /* requests started */
    ev_tstamp t_head, t_body, t_idle, t_write, t_linger;

    /* response */
    enum rsp_state rsp;
    int close_after; /* close once the response is written */
    int shutdown_req;
    int status;
    int head_held; /* head not written yet (hold has the caller's fields) */
    struct rl_buf hold;
    int64_t resp_len; /* announced Content-Length, -1 none */
    uint64_t resp_sent;
    int resp_chunked;
    int resp_nobody; /* HEAD, 204, 304 */
    struct rl_buf out;
    size_t out_off;
    int want_w;
    size_t low;
};

static uint64_t next_id = 1;

static void io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void run(struct rl_h1conn *c);
static void update_io(struct rl_h1conn *c);
static void update_timer(struct rl_h1conn *c);
static void reply_error(struct rl_h1conn *c, int status, const char *why);
static void check_finish(struct rl_h1conn *c);

static int hp_on_url(http_parser *p, const char *at, size_t len);
static int hp_on_field(http_parser *p, const char *at, size_t len);
static int hp_on_value(http_parser *p, const char *at, size_t len);
static int hp_on_headers_complete(http_parser *p);
static int hp_on_body(http_parser *p, const char *at, size_t len);
static int hp_on_message_complete(http_parser *p);

static const http_parser_settings hp_settings = {
    .on_url = hp_on_url,
    .on_header_field = hp_on_field,
    .on_header_value = hp_on_value,
    .on_headers_complete = hp_on_headers_complete,
    .on_body = hp_on_body,
    .on_message_complete = hp_on_message_complete,
};

/* ---------- character classes (RFC 9110 / RFC 3986) ---------- */

static int is_tchar(unsigned ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return 1;
    return ch && strchr("!#$%&'*+-.^_`|~", (int)ch) != NULL;
}

static int is_target_char(unsigned ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return 1;
    return ch && strchr("-._~!$&'()*+,;=:@/?", (int)ch) != NULL;
}

/* field-vchar: VCHAR or obs-text */
static int is_field_vchar(unsigned ch)
{
    return ch >= 0x21 && ch != 0x7f;
}

static int hexval(unsigned ch)
{
    if (ch >= '0' && ch <= '9')
        return (int)(ch - '0');
    if (ch >= 'a' && ch <= 'f')
        return (int)(ch - 'a' + 10);
    if (ch >= 'A' && ch <= 'F')
        return (int)(ch - 'A' + 10);
    return -1;
}

/* ---------- scanner ---------- */

static size_t scan_fail(struct scan *s, size_t at, int status, const char *why)
{
    s->status = status;
    s->why = why;
    return at;
}

static int version_status(const struct scan *s)
{
    if (s->tok == 8 && memcmp(s->ver, "HTTP/1.", 7) == 0 && (s->ver[7] == '1' || s->ver[7] == '0'))
        return 0;
    if (s->tok == 8 && memcmp(s->ver, "HTTP/", 5) == 0 && s->ver[5] >= '0' && s->ver[5] <= '9' &&
        s->ver[6] == '.' && s->ver[7] >= '0' && s->ver[7] <= '9')
        return 505;
    return 400;
}

/* One byte of the request line or a header line. Returns 0, 1 at the end of
 * the head, or an HTTP status (the byte is refused; s->why says why). */
static int scan_head_byte(struct rl_h1conn *c, struct scan *s, unsigned ch)
{
    size_t *count = s->trailer ? &s->trailer_bytes : &s->head_bytes;

    if (++*count > c->lim.max_head) {
        s->why = s->trailer ? "trailer section too large" : "request head too large";
        return 431;
    }
    if (ch == '\n' && s->st != SC_LEAD_LF && s->st != SC_RL_LF && s->st != SC_VALUE_LF &&
        s->st != SC_END_LF) {
        s->why = "bare LF in the request head";
        return 400;
    }
    switch (s->st) {
    case SC_LEAD:
        if (ch == '\r') {
            s->st = SC_LEAD_LF;
            return 0;
        }
        if (!is_tchar(ch))
            break;
        s->st = SC_METHOD;
        s->tok = 1;
        return 0;
    case SC_METHOD:
        if (ch == ' ') {
            s->st = SC_TARGET0;
            return 0;
        }
        if (!is_tchar(ch))
            break;
        if (++s->tok > METHOD_MAX) {
            s->why = "method not supported";
            return 501;
        }
        return 0;
    case SC_TARGET0:
        /* proxy_forms: absolute-form or authority-form; check_head and the
         * upper layer judge the target as a whole */
        if (ch != '/' && !(c->lim.proxy_forms && (is_target_char(ch) || ch == '['))) {
            s->why = "request target not in origin form";
            return 400;
        }
        s->st = SC_TARGET;
        return 0;
    case SC_TARGET:
        if (ch == ' ') {
            s->st = SC_VERSION;
            s->tok = 0;
            return 0;
        }
        if (ch == '%') {
            s->st = SC_PCT1;
            return 0;
        }
        if (!is_target_char(ch) && !(c->lim.proxy_forms && (ch == '[' || ch == ']'))) {
            s->why = "invalid character in request target";
            return 400;
        }
        return 0;
    case SC_PCT1:
    case SC_PCT2:
        if (hexval(ch) < 0) {
            s->why = "bad percent-encoding in request target";
            return 400;
        }
        s->st = s->st == SC_PCT1 ? SC_PCT2 : SC_TARGET;
        return 0;
    case SC_VERSION:
        if (ch == '\r') {
            int st = version_status(s);
            if (st) {
                s->why = st == 505 ? "HTTP version not supported" : "malformed request line";
                return st;
            }
            s->st = SC_RL_LF;
            return 0;
        }
        if (s->tok >= sizeof(s->ver))
            break;
        s->ver[s->tok++] = (char)ch;
        return 0;
    case SC_LINE:
        if (ch == '\r') {
            s->st = SC_END_LF;
            return 0;
        }
        if (ch == ' ' || ch == '\t') {
            s->why = "obsolete line folding";
            return 400;
        }
        if (!is_tchar(ch)) {
            s->why = "invalid header field name";
            return 400;
        }
        if (++s->nfields > c->lim.max_headers) {
            s->why = s->trailer ? "too many trailer fields" : "too many header fields";
            return 431;
        }
        s->st = SC_NAME;
        return 0;
    case SC_NAME:
        if (ch == ':') {
            s->st = SC_VALUE;
            return 0;
        }
        if (!is_tchar(ch)) {
            s->why = "invalid header field name";
            return 400;
        }
        return 0;
    case SC_VALUE:
        if (ch == '\r') {
            s->st = SC_VALUE_LF;
            return 0;
        }
        if (ch != ' ' && ch != '\t' && !is_field_vchar(ch)) {
            s->why = "invalid character in header field value";
            return 400;
        }
        return 0;
    case SC_LEAD_LF:
    case SC_RL_LF:
    case SC_VALUE_LF:
    case SC_END_LF:
        if (ch != '\n') {
            s->why = "CR not followed by LF";
            return 400;
        }
        if (s->st == SC_END_LF) {
            s->st = s->trailer ? SC_MSG_DONE : SC_HEAD_DONE;
            return 1;
        }
        s->st = s->st == SC_LEAD_LF ? SC_LEAD : SC_LINE;
        return 0;
    default:
        break;
    }
    s->why = "malformed request line";
    return 400;
}

/* One byte of the chunked framing (not chunk data). Same returns as
 * scan_head_byte, 1 = end of the message. */
static int scan_chunk_byte(struct rl_h1conn *c, struct scan *s, unsigned ch)
{
    int v;

    switch (s->st) {
    case SC_CH_SIZE0:
    case SC_CH_SIZE:
        v = hexval(ch);
        if (v >= 0) {
            if (++s->line > CHUNK_LINE_MAX) {
                s->why = "chunk size line too long";
                return 400;
            }
            if (s->chunk > (UINT64_MAX - 15) / 16) {
                s->why = "request body too large";
                return 413;
            }
            s->chunk = s->chunk * 16 + (uint64_t)v;
            if (s->chunk > c->lim.max_body - s->body_total) {
                s->why = "request body too large";
                return 413;
            }
            s->st = SC_CH_SIZE;
            return 0;
        }
        if (s->st == SC_CH_SIZE && ch == '\r') {
            s->st = SC_CH_SIZE_LF;
            return 0;
        }
        if (s->st == SC_CH_SIZE && (ch == ';' || ch == ' ' || ch == '\t')) {
            s->st = SC_CH_EXT;
            return 0;
        }
        s->why = "invalid chunk size";
        return 400;
    case SC_CH_EXT:
        if (ch == '\r') {
            s->st = SC_CH_SIZE_LF;
            return 0;
        }
        if (++s->line > CHUNK_LINE_MAX) {
            s->why = "chunk size line too long";
            return 400;
        }
        if (ch != '\t' && (ch < 0x20 || ch == 0x7f)) {
            s->why = "invalid chunk extension";
            return 400;
        }
        return 0;
    case SC_CH_SIZE_LF:
        if (ch != '\n') {
            s->why = "CR not followed by LF";
            return 400;
        }
        s->body_total += s->chunk;
        s->line = 0;
        if (s->chunk == 0) {
            s->st = SC_LINE; /* the trailer section, read like header lines */
            s->trailer = 1;
            s->nfields = 0;
            return 0;
        }
        s->left = s->chunk;
        s->chunk = 0;
        s->st = SC_CH_DATA;
        return 0;
    case SC_CH_DATA_CR:
        if (ch != '\r') {
            s->why = "chunk data longer than its size";
            return 400;
        }
        s->st = SC_CH_DATA_LF;
        return 0;
    case SC_CH_DATA_LF:
        if (ch != '\n') {
            s->why = "CR not followed by LF";
            return 400;
        }
        s->st = SC_CH_SIZE0;
        return 0;
    default:
        s->why = "malformed chunked body";
        return 400;
    }
}

/*
 * Checks p[0..n). Returns how many bytes passed; stops after the byte that
 * ends the head or the message, and at a bad byte (s->status set).
 */
static size_t scan(struct rl_h1conn *c, const uint8_t *p, size_t n)
{
    struct scan *s = &c->sc;
    size_t i = 0;

    while (i < n && !s->status) {
        int r;
        if (s->st == SC_HEAD_DONE || s->st == SC_MSG_DONE)
            break;
        if (s->st == SC_IDENT || s->st == SC_CH_DATA) {
            uint64_t k = s->left < n - i ? s->left : n - i;
            s->left -= k;
            i += (size_t)k;
            if (s->left == 0) {
                if (s->st == SC_IDENT) {
                    s->st = SC_MSG_DONE;
                    break;
                }
                s->st = SC_CH_DATA_CR;
            }
            continue;
        }
        if (s->st < SC_HEAD_DONE) /* also the trailer lines */
            r = scan_head_byte(c, s, p[i]);
        else
            r = scan_chunk_byte(c, s, p[i]);
        if (r > 1)
            return scan_fail(s, i, r, s->why);
        i++;
        if (r == 1)
            break;
    }
    return i;
}

/* ---------- helpers ---------- */

static size_t pending(const struct rl_h1conn *c)
{
    return c->out.len - c->out_off + (c->head_held ? c->hold.len : 0);
}

static void kick(struct rl_h1conn *c)
{
    if (!ev_is_active(&c->kick))
        ev_timer_start(c->loop, &c->kick);
}

static void free_head_store(struct rl_h1conn *c)
{
    rl_buf_cleanup(&c->hs);
    rl_buf_cleanup(&c->hfs);
}

static void free_input(struct rl_h1conn *c)
{
    if (c->in) {
        explicit_bzero(c->in, IN_CAP);
        free(c->in);
        c->in = NULL;
    }
    c->in_off = c->in_len = c->scan_pos = 0;
}

static void destroy(struct rl_h1conn *c)
{
    ev_io_stop(c->loop, &c->io);
    ev_timer_stop(c->loop, &c->timer);
    ev_timer_stop(c->loop, &c->kick);
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free_input(c);
    free_head_store(c);
    rl_buf_cleanup(&c->hold);
    rl_buf_cleanup(&c->out);
    free(c);
}

/* Immediate end: output dropped, on_close (if not yet) and free from the loop. */
static void conn_abort(struct rl_h1conn *c, int err)
{
    if (c->life == L_DEAD)
        return;
    if (c->life == L_OPEN)
        c->close_err = err;
    c->life = L_DEAD;
    ev_io_stop(c->loop, &c->io);
    c->io_events = 0;
    ev_timer_stop(c->loop, &c->timer);
    if ((c->req == RQ_HEAD || c->req == RQ_BODY) && HTTP_PARSER_ERRNO(&c->hp) == HPE_OK)
        http_parser_pause(&c->hp, 1); /* a callback closed us: stop the parser */
    c->pw = PW_STOP;
    kick(c);
}

static void start_linger(struct rl_h1conn *c)
{
    c->life = L_LINGER;
    c->t_linger = ev_now(c->loop);
    c->drained = 0;
    if (c->ssl) {
        ERR_clear_error();
        (void)SSL_shutdown(c->ssl); /* close_notify, best effort */
        ERR_clear_error();
    }
    shutdown(c->fd, SHUT_WR);
    update_io(c);
    update_timer(c);
}

/* Orderly end: the upper layer is told now; queued bytes still go out, then
 * the connection lingers and is freed. */
static void begin_close(struct rl_h1conn *c, int err)
{
    if (c->life != L_OPEN)
        return;
    c->close_err = err;
    c->life = L_FLUSH;
    kick(c);
    if (c->out.len == c->out_off) {
        start_linger(c);
        return;
    }
    update_io(c);
    update_timer(c);
}

/* ---------- socket I/O ---------- */

/* Bytes read, 0 at EOF, AL_ERR_AGAIN or a negative error. */
static ssize_t io_read(struct rl_h1conn *c, uint8_t *buf, size_t n)
{
    if (!c->ssl) {
        ssize_t r = recv(c->fd, buf, n, 0);
        if (r < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? AL_ERR_AGAIN
                                                                               : -errno;
        return r;
    }
    ERR_clear_error();
    int r = SSL_read(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
    if (r > 0)
        return r;
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return AL_ERR_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        return errno ? -errno : 0;
    default:
        return AL_ERR_TLS;
    }
}

/* Bytes written (0 when the socket is full) or a negative error. */
static ssize_t io_write(struct rl_h1conn *c, const uint8_t *buf, size_t n)
{
    if (!c->ssl) {
        ssize_t w = send(c->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -errno;
        return w;
    }
    ERR_clear_error();
    int w = SSL_write(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
    if (w > 0)
        return w;
    switch (SSL_get_error(c->ssl, w)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    case SSL_ERROR_SYSCALL:
        return errno ? -errno : AL_ERR_CLOSED;
    default:
        return AL_ERR_TLS;
    }
}

/* TLS: writes the iovecs in order; a run of small pieces is staged into one
 * record, a large piece goes from the caller's buffer. Returns bytes written
 * or a negative error. */
static ssize_t tls_writev(struct rl_h1conn *c, const struct iovec *iov, int n, size_t total)
{
    uint8_t stage[TLS_STAGE];
    size_t pos = 0, base = 0;
    int i = 0;

    while (pos < total) {
        while (pos >= base + iov[i].iov_len) /* the piece holding pos */
            base += iov[i++].iov_len;
        size_t off = pos - base, avail = iov[i].iov_len - off;
        const uint8_t *src = (const uint8_t *)iov[i].iov_base + off;
        size_t len = avail;
        if (avail < TLS_STAGE && i < n - 1) {
            size_t k = 0;
            for (int j = i; j < n && k < TLS_STAGE; j++) {
                size_t o = j == i ? off : 0;
                size_t take = iov[j].iov_len - o;
                if (take > TLS_STAGE - k)
                    take = TLS_STAGE - k;
                if (take)
                    memcpy(stage + k, (const uint8_t *)iov[j].iov_base + o, take);
                k += take;
            }
            src = stage;
            len = k;
        }
        ssize_t w = io_write(c, src, len);
        if (src == stage)
            explicit_bzero(stage, len);
        if (w < 0)
            return w;
        if (w == 0)
            break;
        pos += (size_t)w;
    }
    return (ssize_t)pos;
}

static ssize_t io_writev(struct rl_h1conn *c, const struct iovec *iov, int n, size_t total)
{
    if (c->ssl)
        return tls_writev(c, iov, n, total);
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
    ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -errno;
    return w;
}

static int queue_append(struct rl_h1conn *c, const uint8_t *d, size_t n)
{
    /* compact rather than grow when most of the buffer has gone out */
    if (c->out_off && c->out_off >= c->out.len / 2) {
        size_t keep = c->out.len - c->out_off;
        memmove(c->out.p, c->out.p + c->out_off, keep);
        explicit_bzero(c->out.p + keep, c->out_off);
        c->out.len = keep;
        c->out_off = 0;
    }
    return rl_buf_append(&c->out, d, n);
}

/*
 * Sends the pieces: straight to the socket when nothing is queued, the rest
 * (or everything, behind a queue) copied to the queue. Returns 0, or
 * AL_ERR_CLOSED / AL_ERR_NOMEM after which the connection is dead.
 */
static int emit(struct rl_h1conn *c, const struct iovec *iov, int n)
{
    size_t total = 0, done = 0, base = 0;
    int was_empty = c->out.len == c->out_off;

    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    if (!total)
        return 0;
    if (was_empty) {
        ssize_t w = io_writev(c, iov, n, total);
        if (w < 0) {
            AL_LOG_DEBUG("agent.h1.write", "conn=%llu reason=\"%s\"", (unsigned long long)c->id,
                         al_strerror((int)w));
            conn_abort(c, (int)w);
            return AL_ERR_CLOSED;
        }
        done = (size_t)w;
        c->t_write = ev_now(c->loop);
    }
    for (int i = 0; i < n && done < total; i++) {
        size_t len = iov[i].iov_len;
        if (done < base + len) {
            size_t off = done > base ? done - base : 0;
            if (queue_append(c, (const uint8_t *)iov[i].iov_base + off, len - off) < 0) {
                conn_abort(c, AL_ERR_NOMEM);
                return AL_ERR_NOMEM;
            }
        }
        base += len;
    }
    if (was_empty && c->out.len != c->out_off) {
        update_io(c);
        update_timer(c);
    }
    return 0;
}

/* Writes queued bytes. Returns 0 (maybe still pending) or a negative error. */
static int flush_queue(struct rl_h1conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t w = io_write(c, c->out.p + c->out_off, c->out.len - c->out_off);
        if (w < 0)
            return (int)w;
        if (w == 0)
            return 0;
        explicit_bzero(c->out.p + c->out_off, (size_t)w); /* plaintext that went out */
        c->out_off += (size_t)w;
        c->t_write = ev_now(c->loop);
    }
    c->out.len = c->out_off = 0;
    return 0;
}

/* ---------- events ---------- */

/* The body is read: not paused, or the response has ended and the rest of
 * the body is being dropped. */
static int body_flowing(const struct rl_h1conn *c)
{
    return c->req == RQ_BODY && (!c->paused || c->rsp == RSP_ENDED);
}

static int want_parse(const struct rl_h1conn *c)
{
    if (c->life != L_OPEN)
        return 0;
    if (c->req == RQ_IDLE || c->req == RQ_HEAD)
        return 1;
    return body_flowing(c);
}

static int want_read(const struct rl_h1conn *c)
{
    if (c->life == L_LINGER)
        return 1;
    if (c->life != L_OPEN)
        return 0;
    if (want_parse(c))
        return 1;
    /* a finished request: keep reading (pipelined bytes, and the EOF of an
     * agent that went away) while the buffer has room */
    return c->req == RQ_DONE && !(c->in && c->in_off == 0 && c->in_len == IN_CAP);
}

static void update_io(struct rl_h1conn *c)
{
    int ev = 0;

    if (c->life == L_DEAD)
        return;
    if (want_read(c))
        ev |= EV_READ;
    if (c->out.len != c->out_off && (c->life == L_OPEN || c->life == L_FLUSH))
        ev |= EV_WRITE;
    if (ev == c->io_events)
        return;
    ev_io_stop(c->loop, &c->io);
    c->io_events = ev;
    if (ev) {
        ev_io_set(&c->io, c->fd, ev);
        ev_io_start(c->loop, &c->io);
    }
}

static ev_tstamp earliest(ev_tstamp a, enum tkind ka, ev_tstamp b, enum tkind kb, enum tkind *kind)
{
    if (ka == T_NONE || (kb != T_NONE && b < a)) {
        *kind = kb;
        return b;
    }
    *kind = ka;
    return a;
}

/* The deadline of the current state and what it guards. */
static ev_tstamp deadline(const struct rl_h1conn *c, enum tkind *kind)
{
    ev_tstamp d = 0;

    *kind = T_NONE;
    switch (c->life) {
    case L_DEAD:
        return 0;
    case L_LINGER:
        *kind = T_LINGER;
        return c->t_linger + LINGER_S;
    case L_FLUSH:
        *kind = T_WRITE;
        return c->t_write + c->lim.body_timeout_s;
    case L_OPEN:
        break;
    }
    if (c->out.len != c->out_off) {
        *kind = T_WRITE;
        d = c->t_write + c->lim.body_timeout_s;
    }
    switch (c->req) {
    case RQ_IDLE:
        if (c->nreq == 0)
            return earliest(d, *kind, c->t_head + c->lim.header_timeout_s, T_HEAD, kind);
        return earliest(d, *kind, c->t_idle + c->lim.idle_timeout_s, T_IDLE, kind);
    case RQ_HEAD:
        return earliest(d, *kind, c->t_head + c->lim.header_timeout_s, T_HEAD, kind);
    case RQ_BODY:
        if (body_flowing(c))
            return earliest(d, *kind, c->t_body + c->lim.body_timeout_s, T_BODY, kind);
        return d;
    case RQ_DONE:
        return d;
    }
    return d;
}

static void arm(struct rl_h1conn *c, ev_tstamp at)
{
    ev_tstamp in = at - ev_now(c->loop);

    ev_timer_stop(c->loop, &c->timer);
    ev_timer_set(&c->timer, in > 0 ? in : 0., 0.);
    ev_timer_start(c->loop, &c->timer);
    c->armed_at = at;
}

/* Arms the timer for the current state. A timer already due earlier is
 * left alone: timer_cb re-arms it when the deadline has moved on, so
 * progress (every body read, every write) costs no timer restart. */
static void update_timer(struct rl_h1conn *c)
{
    enum tkind kind;
    ev_tstamp d = deadline(c, &kind);

    if (kind == T_NONE) {
        ev_timer_stop(c->loop, &c->timer);
        return;
    }
    if (ev_is_active(&c->timer) && c->armed_at <= d)
        return;
    arm(c, d);
}

static void on_timeout(struct rl_h1conn *c, enum tkind kind)
{
    switch (kind) {
    case T_HEAD:
        AL_LOG_INFO("agent.h1.timeout",
                    "conn=%llu peer=%s reason=\"request head not complete "
                    "within header_timeout\" bytes=%zu",
                    (unsigned long long)c->id, c->peer, c->sc.head_bytes);
        conn_abort(c, AL_ERR_TIMEOUT);
        return;
    case T_IDLE:
        AL_LOG_DEBUG("agent.h1.idle", "conn=%llu peer=%s", (unsigned long long)c->id, c->peer);
        begin_close(c, 0);
        return;
    case T_BODY:
        AL_LOG_INFO("agent.h1.timeout", "conn=%llu peer=%s reason=\"request body stalled\"",
                    (unsigned long long)c->id, c->peer);
        if (c->rsp == RSP_NONE)
            reply_error(c, 408, "request body not received in time");
        else
            conn_abort(c, AL_ERR_TIMEOUT);
        return;
    case T_WRITE:
        AL_LOG_INFO("agent.h1.timeout", "conn=%llu peer=%s reason=\"peer not reading\"",
                    (unsigned long long)c->id, c->peer);
        conn_abort(c, AL_ERR_TIMEOUT);
        return;
    case T_LINGER:
        conn_abort(c, c->close_err);
        return;
    case T_NONE:
        return;
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rl_h1conn *c = w->data;
    enum tkind kind;
    ev_tstamp d = deadline(c, &kind);
    (void)revents;

    if (kind == T_NONE)
        return;
    if (d > ev_now(loop) + 1e-3) { /* progress moved the deadline on */
        arm(c, d);
        return;
    }
    on_timeout(c, kind);
}

/* ---------- responses ---------- */

static const char *reason_phrase(int status)
{
    const char *s = http_status_str((enum http_status)status);
    return (!s || s[0] == '<') ? "Status" : s;
}

static const char *http_date(ev_tstamp now)
{
    static char buf[40];
    static time_t last = -1;
    time_t t = (time_t)now;
    struct tm tm;

    if (t != last && gmtime_r(&t, &tm)) {
        strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = t;
    }
    return buf;
}

/* Builds the full head into b from the held fields and the framing state. */
static int build_head(struct rl_h1conn *c, struct rl_buf *b)
{
    int rc = rl_buf_printf(b, "HTTP/1.1 %d %s\r\nDate: %s\r\n", c->status, reason_phrase(c->status),
                           http_date(ev_now(c->loop)));
    if (rc == 0)
        rc = rl_buf_append(b, c->hold.p, c->hold.len);
    if (rc == 0 && c->resp_len >= 0)
        rc = rl_buf_printf(b, "Content-Length: %lld\r\n", (long long)c->resp_len);
    if (rc == 0 && c->resp_chunked)
        rc = rl_buf_puts(b, "Transfer-Encoding: chunked\r\n");
    if (rc == 0 && c->close_after)
        rc = rl_buf_puts(b, "Connection: close\r\n");
    else if (rc == 0 && c->http_minor == 0)
        rc = rl_buf_puts(b, "Connection: keep-alive\r\n");
    if (rc == 0)
        rc = rl_buf_puts(b, "\r\n");
    return rc;
}

/* Sends the held head (if any) followed by up to three more pieces. */
static int emit_with_head(struct rl_h1conn *c, const struct iovec *more, int n)
{
    struct iovec iov[MAX_IOV];
    struct rl_buf head;
    int k = 0, rc;

    rl_buf_init(&head, 0);
    if (c->head_held) {
        c->head_held = 0;
        rc = build_head(c, &head);
        rl_buf_cleanup(&c->hold);
        if (rc < 0) {
            rl_buf_cleanup(&head);
            conn_abort(c, rc);
            return rc;
        }
        iov[k++] = (struct iovec){head.p, head.len};
    }
    for (int i = 0; i < n; i++)
        iov[k++] = more[i];
    rc = emit(c, iov, k);
    rl_buf_cleanup(&head);
    return rc;
}

static int header_refused(const char *n, size_t l)
{
    static const char *const names[] = {
        "content-length", "transfer-encoding", "connection", "keep-alive",
        "date",           "proxy-connection",  "te",         "trailer",
        "upgrade"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == l && strncasecmp(names[i], n, l) == 0)
            return 1;
    return 0;
}

static int header_ok(const struct rl_h1_header *h)
{
    if (!h->name || !h->name_len || (h->value_len && !h->value))
        return 0;
    for (size_t i = 0; i < h->name_len; i++)
        if (!is_tchar((unsigned char)h->name[i]))
            return 0;
    for (size_t i = 0; i < h->value_len; i++) {
        unsigned ch = (unsigned char)h->value[i];
        if (ch != ' ' && ch != '\t' && !is_field_vchar(ch))
            return 0;
    }
    return !header_refused(h->name, h->name_len);
}

static int response_allowed(const struct rl_h1conn *c)
{
    return c->life == L_OPEN && (c->req == RQ_BODY || c->req == RQ_DONE);
}

int rl_h1conn_respond_head(struct rl_h1conn *c, int status, const struct rl_h1_header *h, size_t n,
                           int64_t content_length)
{
    int rc = 0;

    if (!response_allowed(c) || c->rsp != RSP_NONE)
        return AL_ERR_STATE;
    if (status < 200 || status > 599 || content_length < -1 || (n && !h))
        return AL_ERR_INVAL;
    for (size_t i = 0; i < n; i++)
        if (!header_ok(&h[i]))
            return AL_ERR_INVAL;
    rl_buf_init(&c->hold, 0);
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = rl_buf_append(&c->hold, h[i].name, h[i].name_len);
        if (rc == 0)
            rc = rl_buf_puts(&c->hold, ": ");
        if (rc == 0)
            rc = rl_buf_append(&c->hold, h[i].value, h[i].value_len);
        if (rc == 0)
            rc = rl_buf_puts(&c->hold, "\r\n");
    }
    if (rc < 0) {
        rl_buf_cleanup(&c->hold);
        return rc;
    }
    c->status = status;
    c->resp_sent = 0;
    c->resp_nobody = c->head_method || status == 204 || status == 304;
    c->resp_len = content_length;
    c->resp_chunked = 0;
    if (status == 204 || status == 304)
        c->resp_len = -1;
    else if (content_length < 0 && !c->head_method) {
        if (c->http_minor >= 1)
            c->resp_chunked = 1;
        else
            c->close_after = 1; /* HTTP/1.0: the end of the body is the close */
    }
    if (!c->req_keep || c->shutdown_req)
        c->close_after = 1;
    c->rsp = RSP_OPEN;
    c->head_held = 1;
    kick(c); /* the head goes out with the first body piece or next loop turn */
    return 0;
}

int rl_h1conn_respond_body(struct rl_h1conn *c, const uint8_t *d, size_t n)
{
    char pre[24];
    struct iovec iov[3];
    int k = 0;

    if (c->life != L_OPEN || c->rsp != RSP_OPEN)
        return AL_ERR_STATE;
    if (n == 0 || c->resp_nobody)
        return 0; /* no empty chunk (it would end the body); no body for HEAD/204/304 */
    if (c->resp_len >= 0 && n > (uint64_t)c->resp_len - c->resp_sent)
        return AL_ERR_INVAL;
    size_t queued = c->out.len - c->out_off;
    if (queued > 0 && queued + n > c->lim.max_pending)
        return AL_ERR_TOOBIG;
    if (c->resp_chunked) {
        int l = snprintf(pre, sizeof(pre), "%zx\r\n", n);
        iov[k++] = (struct iovec){pre, (size_t)l};
    }
    iov[k++] = (struct iovec){(void *)d, n};
    if (c->resp_chunked)
        iov[k++] = (struct iovec){"\r\n", 2};
    c->resp_sent += n;
    return emit_with_head(c, iov, k);
}

int rl_h1conn_respond_end(struct rl_h1conn *c, int keep)
{
    struct iovec iov[1];
    int k = 0, rc;

    if (c->life != L_OPEN || c->rsp != RSP_OPEN)
        return AL_ERR_STATE;
    if (!keep)
        c->close_after = 1;
    if (c->req == RQ_BODY && c->expect_continue)
        c->close_after = 1; /* the client may never send the body it announced */
    if (c->resp_len >= 0 && !c->resp_nobody && c->resp_sent != (uint64_t)c->resp_len) {
        AL_LOG_WARN("agent.h1.response",
                    "conn=%llu reason=\"body shorter than Content-Length\" "
                    "sent=%llu announced=%lld",
                    (unsigned long long)c->id, (unsigned long long)c->resp_sent,
                    (long long)c->resp_len);
        c->close_after = 1; /* the peer sees a truncated body: the only honest signal */
    }
    if (c->resp_chunked)
        iov[k++] = (struct iovec){"0\r\n\r\n", 5};
    c->rsp = RSP_ENDED;
    rc = emit_with_head(c, iov, k);
    if (rc < 0)
        return 0; /* the connection is going; on_close follows */
    update_io(c);
    update_timer(c);
    kick(c); /* next request or close, from the loop */
    return 0;
}

int rl_h1conn_respond(struct rl_h1conn *c, int status, const struct rl_h1_header *h, size_t n,
                      const uint8_t *body, size_t len, int keep)
{
    int rc = rl_h1conn_respond_head(c, status, h, n, (int64_t)len);
    if (rc < 0)
        return rc;
    if (!keep)
        c->close_after = 1; /* known now: say Connection: close in the head */
    if (len) {
        /* a single piece is always taken (nothing else is queued for it) */
        rc = rl_h1conn_respond_body(c, body, len);
        if (rc < 0) {
            if (c->life == L_OPEN)
                conn_abort(c, rc);
            return rc;
        }
    }
    return rl_h1conn_respond_end(c, keep);
}

/* why is static text, but http_parser's descriptions are not ours: keep
 * only characters that need no JSON escaping. */
static const char *json_safe(char *buf, size_t n, const char *why)
{
    size_t k = 0;

    for (; why[k] && k + 1 < n; k++)
        buf[k] =
            (why[k] >= 0x20 && why[k] < 0x7f && why[k] != '"' && why[k] != '\\') ? why[k] : ' ';
    buf[k] = '\0';
    return buf;
}

/* Text error body "<error_prefix>: <why>\n" (proxy mode). Returns its length. */
static int text_error(const struct rl_h1conn *c, char *body, size_t n, const char *why)
{
    char msg[128];
    int bl = snprintf(body, n, "%s: %s\n", c->lim.error_prefix, json_safe(msg, sizeof(msg), why));
    return bl < 0 ? 0 : (size_t)bl >= n ? (int)n - 1 : bl;
}

/* Error replies made here: JSON-RPC error body (tunnel.proto), or a line of
 * text with error_prefix, then close. */
static void reply_error(struct rl_h1conn *c, int status, const char *why)
{
    char body[320], head[400], msg[128];
    const char *reason = "INVALID_FIELD";
    int code = -32600, err = AL_ERR_PROTO, bl, hl;

    if (c->life != L_OPEN)
        return;
    AL_LOG_INFO("agent.h1.reject", "conn=%llu peer=%s status=%d reason=\"%s\"",
                (unsigned long long)c->id, c->peer, status, why);
    if (c->cbs.on_reject)
        c->cbs.on_reject(c, status, json_safe(msg, sizeof(msg), why), c->user);
    if (c->rsp != RSP_NONE) {
        conn_abort(c, err); /* a response has started: closing is all we can say */
        return;
    }
    if (status == 413 || status == 431) {
        reason = "TOO_LARGE";
        err = AL_ERR_TOOBIG;
    } else if (status == 500) {
        reason = "INTERNAL";
        code = -32603;
    } else if (status == 408) {
        err = AL_ERR_TIMEOUT;
    }
    if (c->lim.error_prefix)
        bl = text_error(c, body, sizeof(body), why);
    else
        bl = snprintf(body, sizeof(body),
                      "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":%d,\"message\":"
                      "\"%s\",\"data\":{\"airlock_error\":\"%s\"}}}",
                      code, json_safe(msg, sizeof(msg), why), reason);
    hl = snprintf(head, sizeof(head),
                  "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\n"
                  "Cache-Control: no-store\r\nairlock-error: %s\r\nContent-Length: %d\r\n"
                  "Connection: close\r\n\r\n",
                  status, reason_phrase(status), http_date(ev_now(c->loop)),
                  c->lim.error_prefix ? "text/plain; charset=utf-8" : "application/json", reason,
                  bl);
    c->rsp = RSP_ENDED;
    c->close_after = 1;
    c->head_held = 0;
    rl_buf_cleanup(&c->hold);
    c->close_err = err;
    c->life = L_FLUSH;
    kick(c); /* on_close */
    /* a response to HEAD has no body, even an error */
    struct iovec iov[2] = {{head, (size_t)hl}, {body, c->head_method ? 0 : (size_t)bl}};
    if (emit(c, iov, 2) < 0)
        return;
    if (c->out.len == c->out_off)
        start_linger(c);
    else {
        update_io(c);
        update_timer(c);
    }
}

/* ---------- request head ---------- */

static int store_append(struct rl_h1conn *c, const char *at, size_t len, int lower)
{
    size_t start = c->hs.len;
    int rc = rl_buf_append(&c->hs, at, len);
    if (rc == 0 && lower)
        for (size_t i = start; i < c->hs.len; i++)
            if (c->hs.p[i] >= 'A' && c->hs.p[i] <= 'Z')
                c->hs.p[i] = (uint8_t)(c->hs.p[i] + 32);
    return rc;
}

static struct hfield *cur_field(struct rl_h1conn *c)
{
    return (struct hfield *)(void *)c->hfs.p + (c->hfs.len / sizeof(struct hfield) - 1);
}

/* Ends the name or value being collected with a NUL. */
static int field_close(struct rl_h1conn *c)
{
    if (c->field_state == 0)
        return 0;
    struct hfield *f = cur_field(c);
    if (c->field_state == 1) {
        f->nl = c->hs.len - f->no;
        f->vo = c->hs.len + 1;
        f->vl = 0;
    } else {
        f->vl = c->hs.len - f->vo;
    }
    return rl_buf_append(&c->hs, "", 1);
}

static int hp_on_url(http_parser *p, const char *at, size_t len)
{
    struct rl_h1conn *c = p->data;

    if (c->target_len == 0)
        c->target_off = c->hs.len;
    c->target_len += len;
    return store_append(c, at, len, 0) < 0 ? -1 : 0;
}

static int hp_on_field(http_parser *p, const char *at, size_t len)
{
    struct rl_h1conn *c = p->data;

    if (c->req != RQ_HEAD)
        return 0; /* trailers are checked by the scanner and dropped */
    if (c->field_state != 1) {
        struct hfield f = {0};
        if (c->field_state == 0 && c->target_len && rl_buf_append(&c->hs, "", 1) < 0)
            return -1; /* ends the target */
        if (field_close(c) < 0)
            return -1;
        f.no = c->hs.len;
        if (rl_buf_append(&c->hfs, &f, sizeof(f)) < 0)
            return -1;
        c->field_state = 1;
    }
    return store_append(c, at, len, 1) < 0 ? -1 : 0;
}

static int hp_on_value(http_parser *p, const char *at, size_t len)
{
    struct rl_h1conn *c = p->data;

    if (c->req != RQ_HEAD)
        return 0;
    if (c->field_state == 1) {
        if (field_close(c) < 0)
            return -1;
        c->field_state = 2;
    }
    return store_append(c, at, len, 0) < 0 ? -1 : 0;
}

static int hp_on_headers_complete(http_parser *p)
{
    struct rl_h1conn *c = p->data;

    if (c->req != RQ_HEAD)
        return 0;
    if (c->field_state == 0 && rl_buf_append(&c->hs, "", 1) < 0)
        return -1; /* ends the target */
    if (field_close(c) < 0)
        return -1;
    c->field_state = 0;
    c->pw = PW_HEADERS;
    http_parser_pause(p, 1);
    return 0;
}

static int hp_on_body(http_parser *p, const char *at, size_t len)
{
    struct rl_h1conn *c = p->data;

    c->t_body = ev_now(c->loop);
    if (c->rsp != RSP_ENDED && c->cbs.on_body)
        c->cbs.on_body(c, (const uint8_t *)at, len, c->user);
    if (c->life != L_OPEN) {
        c->pw = PW_STOP;
        if (HTTP_PARSER_ERRNO(p) == HPE_OK)
            http_parser_pause(p, 1);
        return 0;
    }
    if (c->paused && c->rsp != RSP_ENDED && HTTP_PARSER_ERRNO(p) == HPE_OK) {
        c->pw = PW_BODY;
        http_parser_pause(p, 1);
    }
    return 0;
}

static int hp_on_message_complete(http_parser *p)
{
    struct rl_h1conn *c = p->data;

    c->pw = PW_MSG;
    if (HTTP_PARSER_ERRNO(p) == HPE_OK)
        http_parser_pause(p, 1);
    return 0;
}

static int name_is(const struct rl_h1_header *h, const char *name)
{
    return h->name_len == strlen(name) && memcmp(h->name, name, h->name_len) == 0;
}

static int value_is(const struct rl_h1_header *h, const char *v)
{
    return h->value_len == strlen(v) && strncasecmp(h->value, v, h->value_len) == 0;
}

/* scheme "://" ... (RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )) */
static int absolute_form(const char *t)
{
    size_t i = 0;

    if (!((t[0] >= 'a' && t[0] <= 'z') || (t[0] >= 'A' && t[0] <= 'Z')))
        return 0;
    while ((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
           (t[i] >= '0' && t[i] <= '9') || t[i] == '+' || t[i] == '-' || t[i] == '.')
        i++;
    return strncmp(t + i, "://", 3) == 0;
}

/* Checks the parsed head. Returns 0 or an HTTP status with *why. */
static int check_head(struct rl_h1conn *c, const struct rl_h1_head *hd, const char **why)
{
    size_t ncl = 0, nte = 0, nhost = 0, nexp = 0;
    int te_chunked = 0, expect_ok = 0;

    for (size_t i = 0; i < hd->nheaders; i++) {
        const struct rl_h1_header *h = &hd->headers[i];
        if (name_is(h, "content-length"))
            ncl++;
        else if (name_is(h, "host"))
            nhost++;
        else if (name_is(h, "transfer-encoding")) {
            nte++;
            te_chunked = value_is(h, "chunked");
        } else if (name_is(h, "expect")) {
            nexp++;
            expect_ok = value_is(h, "100-continue");
        }
    }
    if (ncl > 1 || nhost > 1 || nte > 1) {
        *why = ncl > 1     ? "duplicate Content-Length"
               : nhost > 1 ? "duplicate Host"
                           : "duplicate Transfer-Encoding";
        return 400;
    }
    if (ncl && nte) {
        *why = "both Content-Length and Transfer-Encoding";
        return 400;
    }
    if (nte && c->hp.http_minor == 0) {
        *why = "Transfer-Encoding in an HTTP/1.0 request";
        return 400;
    }
    if (nte && !te_chunked) {
        *why = "transfer coding not supported";
        return 501;
    }
    if (c->hp.http_minor == 1 && nhost == 0) {
        *why = "missing Host";
        return 400;
    }
    if (c->hp.method == HTTP_CONNECT) {
        if (!c->lim.proxy_forms) {
            *why = "method not supported";
            return 501;
        }
        if (hd->target[0] == '/' || strpbrk(hd->target, "/?#")) {
            *why = "CONNECT target not in authority form";
            return 400;
        }
        if (hd->chunked || hd->content_length > 0) {
            *why = "CONNECT with a body";
            return 400;
        }
    } else if (hd->target[0] != '/' && !absolute_form(hd->target)) {
        *why = "request target not in origin or absolute form";
        return 400;
    }
    if (hd->content_length > 0 && (uint64_t)hd->content_length > c->lim.max_body) {
        *why = "request body too large";
        return 413;
    }
    if (nexp && c->hp.http_minor == 1) {
        if (nexp > 1 || !expect_ok) {
            *why = "expectation not supported";
            return 417;
        }
        c->expect_continue = hd->chunked || hd->content_length > 0;
    }
    return 0;
}

static void maybe_continue(struct rl_h1conn *c)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

    if (!c->expect_continue || c->rsp != RSP_NONE || c->paused || c->life != L_OPEN)
        return;
    c->expect_continue = 0;
    struct iovec iov = {(void *)cont, sizeof(cont) - 1};
    (void)emit(c, &iov, 1);
}

/* The upper layer's view of the parsed head: *hh (allocated, the caller
 * frees it) points into the head store. Returns 0 or AL_ERR_NOMEM. */
static int head_view(struct rl_h1conn *c, struct rl_h1_head *hd, struct rl_h1_header **hh)
{
    size_t nf = c->hfs.len / sizeof(struct hfield);

    *hh = NULL;
    if (nf && !(*hh = calloc(nf, sizeof(**hh))))
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < nf; i++) {
        struct hfield *f = (struct hfield *)(void *)c->hfs.p + i;
        char *v = (char *)c->hs.p + f->vo;
        size_t vl = f->vl;
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            v[--vl] = '\0'; /* trailing OWS is not part of the value */
        (*hh)[i] = (struct rl_h1_header){(const char *)c->hs.p + f->no, f->nl, v, vl};
    }
    *hd = (struct rl_h1_head){0};
    hd->method = http_method_str((enum http_method)c->hp.method);
    hd->target = (const char *)c->hs.p + c->target_off;
    hd->target_len = c->target_len;
    hd->headers = *hh;
    hd->nheaders = nf;
    hd->chunked = (c->hp.flags & F_CHUNKED) != 0;
    hd->content_length = (c->hp.flags & F_CONTENTLENGTH) ? (int64_t)c->hp.content_length : -1;
    hd->http_minor = c->hp.http_minor;
    c->http_minor = c->hp.http_minor;
    c->req_keep = http_should_keep_alive(&c->hp) && !c->shutdown_req;
    hd->keep_alive = c->req_keep;
    c->head_method = c->hp.method == HTTP_HEAD;
    return 0;
}

/* Switches the scanner to the body framing http_parser found and checks
 * what of the body is already buffered, so a request whose framing is
 * known to be broken never reaches the upper layer. Returns 0 or a status. */
static int body_prescan(struct rl_h1conn *c, const struct rl_h1_head *hd, const char **why)
{
    if (hd->chunked) {
        c->sc.st = SC_CH_SIZE0;
    } else if (hd->content_length > 0) {
        c->sc.st = SC_IDENT;
        c->sc.left = (uint64_t)hd->content_length;
    } else {
        c->sc.st = SC_MSG_DONE;
    }
    if (c->scan_pos < c->in_len)
        c->scan_pos += scan(c, c->in + c->scan_pos, c->in_len - c->scan_pos);
    *why = c->sc.why;
    return c->sc.status;
}

/* The head is complete (parser paused at its end): check it, hand it over. */
static void deliver_request(struct rl_h1conn *c)
{
    struct rl_h1_header *hh;
    struct rl_h1_head hd;
    const char *why = NULL;
    int status, rc;

    if (head_view(c, &hd, &hh) < 0) {
        conn_abort(c, AL_ERR_NOMEM);
        return;
    }
    status = check_head(c, &hd, &why);
    if (status == 0)
        status = body_prescan(c, &hd, &why);
    if (status) {
        free(hh);
        free_head_store(c);
        reply_error(c, status, why);
        return;
    }
    c->req = RQ_BODY;
    c->rsp = RSP_NONE;
    c->pw = PW_NONE; /* http_parser stays paused until on_request has returned */
    c->t_body = ev_now(c->loop);
    rc = c->cbs.on_request ? c->cbs.on_request(c, &hd, c->user) : AL_ERR_INVAL;
    free(hh);
    free_head_store(c); /* the strings were borrowed for the call only */
    if (c->life != L_OPEN)
        return;
    if (rc < 0) {
        AL_LOG_WARN("agent.h1.request", "conn=%llu reason=\"on_request: %s\"",
                    (unsigned long long)c->id, al_strerror(rc));
        reply_error(c, 500, "internal error");
        c->close_err = rc; /* on_close has not run yet: it reports the upper layer's code */
        return;
    }
    http_parser_pause(&c->hp, 0);
    maybe_continue(c);
}

/* ---------- parsing loop ---------- */

static void begin_request(struct rl_h1conn *c)
{
    http_parser_init(&c->hp, HTTP_REQUEST);
    c->hp.data = c;
    memset(&c->sc, 0, sizeof(c->sc));
    c->sc.st = SC_LEAD;
    c->scan_pos = c->in_off;
    rl_buf_init(&c->hs, c->lim.max_head + 2 * c->lim.max_headers + 8);
    rl_buf_init(&c->hfs, (c->lim.max_headers + 1) * sizeof(struct hfield));
    c->target_off = c->target_len = 0;
    c->field_state = 0;
    c->pw = PW_NONE;
    c->paused = 0;
    c->body_end_pending = 0;
    c->expect_continue = 0;
    c->head_method = 0;
    c->req = RQ_HEAD;
    if (c->nreq++ > 0)
        c->t_head = ev_now(c->loop); /* the first request counts from the accept */
    update_timer(c);
}

static int map_parser_error(enum http_errno e, const char **why)
{
    switch (e) {
    case HPE_INVALID_METHOD:
        *why = "method not supported";
        return 501;
    case HPE_HEADER_OVERFLOW:
        *why = "request head too large";
        return 431;
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        *why = "conflicting Content-Length";
        return 400;
    case HPE_INVALID_CONTENT_LENGTH:
        *why = "invalid Content-Length";
        return 400;
    case HPE_INVALID_CHUNK_SIZE:
        *why = "invalid chunk size";
        return 400;
    default:
        *why = http_errno_description(e);
        return 400;
    }
}

static void body_end(struct rl_h1conn *c)
{
    c->body_end_pending = 0;
    if (c->rsp != RSP_ENDED && c->cbs.on_body_end)
        c->cbs.on_body_end(c, c->user);
}

/* Scans and parses what is buffered. Returns 1 when progress was made and
 * the loop may go on, 0 to wait for the next event. */
static int step(struct rl_h1conn *c)
{
    size_t before_off = c->in_off, before_scan = c->scan_pos;
    enum req_state before_req = c->req;

    if (c->req == RQ_IDLE)
        begin_request(c);
    if (c->scan_pos < c->in_len)
        c->scan_pos += scan(c, c->in + c->scan_pos, c->in_len - c->scan_pos);
    if (c->sc.status) {
        reply_error(c, c->sc.status, c->sc.why);
        return 0;
    }
    if (c->scan_pos > c->in_off) {
        size_t avail = c->scan_pos - c->in_off;
        size_t used =
            http_parser_execute(&c->hp, &hp_settings, (const char *)c->in + c->in_off, avail);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->hp);
        explicit_bzero(c->in + c->in_off, used); /* heads carry API keys */
        c->in_off += used;
        if (c->life != L_OPEN)
            return 0;
        if (e != HPE_OK && e != HPE_PAUSED) {
            const char *why;
            int status = map_parser_error(e, &why);
            reply_error(c, status, why);
            return 0;
        }
        if (e == HPE_PAUSED) {
            switch (c->pw) {
            case PW_HEADERS:
                deliver_request(c);
                return c->life == L_OPEN;
            case PW_MSG:
                c->req = RQ_DONE;
                c->pw = PW_NONE;
                if (c->paused && c->rsp != RSP_ENDED)
                    c->body_end_pending = 1;
                else
                    body_end(c);
                check_finish(c); /* a response already written: next request */
                return c->life == L_OPEN && want_parse(c);
            case PW_BODY:
            case PW_STOP:
            case PW_NONE:
                return 0;
            }
        }
    }
    if (c->sc.st == SC_MSG_DONE && c->in_off == c->scan_pos && c->req == RQ_BODY) {
        /* the scanner saw the end of the message and http_parser did not */
        reply_error(c, 400, "malformed message framing");
        return 0;
    }
    if (c->in_off == before_off && c->scan_pos == before_scan && c->req == before_req &&
        c->in_off < c->in_len) {
        reply_error(c, 400, "malformed request"); /* no progress: never spin */
        return 0;
    }
    return 1;
}

/* Reads into the input buffer. Returns bytes, 0 at EOF, AL_ERR_AGAIN, or an error. */
static ssize_t fill(struct rl_h1conn *c)
{
    if (!c->in) {
        c->in = malloc(IN_CAP);
        if (!c->in)
            return AL_ERR_NOMEM;
        c->in_off = c->in_len = c->scan_pos = 0;
    }
    if (c->in_off == c->in_len) {
        c->in_off = c->in_len = c->scan_pos = 0;
    } else if (c->in_off > 0) {
        size_t keep = c->in_len - c->in_off;
        memmove(c->in, c->in + c->in_off, keep);
        explicit_bzero(c->in + keep, c->in_off);
        c->scan_pos -= c->in_off;
        c->in_off = 0;
        c->in_len = keep;
    }
    if (c->in_len == IN_CAP)
        return AL_ERR_AGAIN;
    ssize_t r = io_read(c, c->in + c->in_len, IN_CAP - c->in_len);
    if (r > 0)
        c->in_len += (size_t)r;
    return r;
}

static void read_failed(struct rl_h1conn *c, ssize_t r)
{
    if (r == 0 && c->req == RQ_IDLE && c->in_off == c->in_len) {
        conn_abort(c, 0); /* the peer closed between requests */
        return;
    }
    AL_LOG_DEBUG("agent.h1.close", "conn=%llu peer=%s reason=\"%s\"", (unsigned long long)c->id,
                 c->peer, r == 0 ? "peer closed mid-request" : al_strerror((int)r));
    conn_abort(c, r == 0 ? AL_ERR_CLOSED : (int)r);
}

static void run(struct rl_h1conn *c)
{
    if (c->in_run)
        return;
    c->in_run = 1;
    while (c->life == L_OPEN && want_parse(c)) {
        if (c->in_off == c->in_len) {
            ssize_t r = fill(c);
            if (r == AL_ERR_AGAIN)
                break;
            if (r <= 0) {
                read_failed(c, r);
                break;
            }
            if (c->req == RQ_BODY)
                c->t_body = ev_now(c->loop);
            continue;
        }
        if (!step(c))
            break;
    }
    c->in_run = 0;
    if (c->life == L_OPEN) {
        update_io(c);
        update_timer(c);
    }
}

/* A finished request: buffer what else arrives, notice the peer leaving. */
static void read_ahead(struct rl_h1conn *c)
{
    ssize_t r = fill(c);

    if (r == AL_ERR_AGAIN) {
        update_io(c);
        return;
    }
    if (r <= 0)
        read_failed(c, r);
}

static void linger_read(struct rl_h1conn *c)
{
    uint8_t sink[16384];
    ssize_t n = recv(c->fd, sink, sizeof(sink), 0);

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    c->drained += n > 0 ? (size_t)n : 0;
    if (n <= 0 || c->drained > LINGER_CAP)
        conn_abort(c, c->close_err);
}

static void fire_writable(struct rl_h1conn *c)
{
    if (c->life != L_OPEN || !c->want_w || pending(c) > c->low)
        return;
    c->want_w = 0;
    if (c->cbs.on_writable)
        c->cbs.on_writable(c, c->user);
}

/* After respond_end, once everything is written: the next request, or close. */
static void check_finish(struct rl_h1conn *c)
{
    if (c->life != L_OPEN || c->rsp != RSP_ENDED || pending(c) > 0)
        return;
    if (c->close_after || c->shutdown_req) {
        begin_close(c, 0);
        return;
    }
    if (c->req != RQ_DONE)
        return; /* the rest of the request body is being read and dropped */
    c->req = RQ_IDLE;
    c->rsp = RSP_NONE;
    c->pw = PW_NONE;
    c->paused = 0;
    c->body_end_pending = 0;
    c->want_w = 0;
    c->t_idle = ev_now(c->loop);
    if (c->in && c->in_off == c->in_len)
        free_input(c); /* idle connections hold no buffers */
    run(c);
}

static void on_writable_io(struct rl_h1conn *c)
{
    int rc = flush_queue(c);

    if (rc < 0) {
        AL_LOG_DEBUG("agent.h1.write", "conn=%llu reason=\"%s\"", (unsigned long long)c->id,
                     al_strerror(rc));
        conn_abort(c, rc);
        return;
    }
    if (c->out.len != c->out_off)
        return;
    if (c->life == L_FLUSH) {
        start_linger(c);
        return;
    }
    update_io(c);
    update_timer(c);
    fire_writable(c);
    check_finish(c);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct rl_h1conn *c = w->data;
    (void)loop;

    if ((revents & EV_WRITE) && (c->life == L_OPEN || c->life == L_FLUSH))
        on_writable_io(c);
    if (!(revents & EV_READ))
        return;
    if (c->life == L_LINGER)
        linger_read(c);
    else if (c->life == L_OPEN && want_parse(c))
        run(c);
    else if (c->life == L_OPEN && c->req == RQ_DONE)
        read_ahead(c);
}

static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rl_h1conn *c = w->data;
    (void)loop;
    (void)revents;

    if (c->life != L_OPEN && !c->notified) {
        c->notified = 1;
        if (c->cbs.on_close)
            c->cbs.on_close(c, c->close_err, c->user);
    }
    if (c->life == L_DEAD) {
        destroy(c);
        return;
    }
    if (c->life != L_OPEN)
        return;
    if (c->head_held && emit_with_head(c, NULL, 0) < 0)
        return;
    fire_writable(c);
    if (c->life != L_OPEN)
        return;
    if (c->body_end_pending && !c->paused && c->req == RQ_DONE)
        body_end(c);
    if (c->life != L_OPEN)
        return;
    if (body_flowing(c)) {
        if (c->pw == PW_BODY) {
            c->pw = PW_NONE;
            c->t_body = ev_now(c->loop);
            http_parser_pause(&c->hp, 0);
        }
        if (!c->paused)
            maybe_continue(c);
    }
    check_finish(c);
    if (c->life == L_OPEN)
        run(c);
}

/* ---------- public ---------- */

static void apply_limits(struct rl_h1_limits *l, const struct rl_h1_limits *in)
{
    *l = in ? *in : (struct rl_h1_limits){0};
    if (!l->max_head)
        l->max_head = DEF_MAX_HEAD;
    if (!l->max_headers)
        l->max_headers = DEF_MAX_HEADERS;
    if (!l->max_body)
        l->max_body = DEF_MAX_BODY;
    if (!l->max_pending)
        l->max_pending = DEF_MAX_PENDING;
    if (l->header_timeout_s <= 0)
        l->header_timeout_s = 10;
    if (l->body_timeout_s <= 0)
        l->body_timeout_s = 30;
    if (l->idle_timeout_s <= 0)
        l->idle_timeout_s = 60;
}

static void fmt_peer(struct rl_h1conn *c)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getpeername(c->fd, (struct sockaddr *)&ss, &len) == 0 &&
        (ss.ss_family == AF_INET || ss.ss_family == AF_INET6))
        al_addr_format((struct sockaddr *)&ss, c->peer, sizeof(c->peer));
    else
        snprintf(c->peer, sizeof(c->peer), "local");
}

int rl_h1conn_new(struct ev_loop *loop, int fd, SSL *ssl, const struct rl_h1_limits *limits,
                  const struct rl_h1conn_cbs *cbs, void *user, struct rl_h1conn **out)
{
    struct rl_h1conn *c = calloc(1, sizeof(*c));

    *out = NULL;
    if (!c) {
        SSL_free(ssl);
        close(fd);
        return AL_ERR_NOMEM;
    }
    c->loop = loop;
    c->fd = fd;
    c->ssl = ssl;
    c->id = next_id++;
    c->user = user;
    if (cbs)
        c->cbs = *cbs;
    apply_limits(&c->lim, limits);
    if (ssl)
        SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    fmt_peer(c);
    rl_buf_init(&c->out, 0);
    rl_buf_init(&c->hold, 0);
    rl_buf_init(&c->hs, 1);
    rl_buf_init(&c->hfs, 1);
    ev_io_init(&c->io, io_cb, fd, EV_READ);
    c->io.data = c;
    ev_init(&c->timer, timer_cb);
    c->timer.data = c;
    ev_timer_init(&c->kick, kick_cb, 0., 0.);
    c->kick.data = c;
    c->life = L_OPEN;
    c->req = RQ_IDLE;
    c->rsp = RSP_NONE;
    c->t_head = ev_now(loop);
    update_io(c);
    update_timer(c);
    kick(c); /* a first read attempt: TLS may already hold request bytes */
    *out = c;
    return 0;
}

size_t rl_h1conn_pending(const struct rl_h1conn *c)
{
    return pending(c);
}

void rl_h1conn_want_writable(struct rl_h1conn *c, size_t low)
{
    if (c->life != L_OPEN)
        return;
    c->want_w = 1;
    c->low = low;
    if (pending(c) <= low)
        kick(c);
}

void rl_h1conn_pause(struct rl_h1conn *c)
{
    if (c->life != L_OPEN || c->paused)
        return;
    c->paused = 1;
    if (!c->in_run) {
        update_io(c);
        update_timer(c);
    }
}

void rl_h1conn_resume(struct rl_h1conn *c)
{
    if (c->life != L_OPEN || !c->paused)
        return;
    c->paused = 0;
    c->t_body = ev_now(c->loop);
    kick(c);
}

void rl_h1conn_close(struct rl_h1conn *c)
{
    if (c->life == L_DEAD || c->notified)
        return;
    conn_abort(c, 0);
}

void rl_h1conn_shutdown(struct rl_h1conn *c)
{
    if (c->life != L_OPEN)
        return;
    c->shutdown_req = 1;
    c->req_keep = 0;
    if (c->req == RQ_IDLE && c->rsp == RSP_NONE && c->out.len == c->out_off)
        begin_close(c, 0);
    else
        c->close_after = 1;
}

int rl_h1conn_detach(struct rl_h1conn *c, int *fd, SSL **ssl, struct rl_buf *rest)
{
    if (!c || !fd || !ssl || !rest || c->life != L_OPEN || c->req != RQ_DONE ||
        c->rsp != RSP_NONE || c->out.len != c->out_off || c->body_end_pending)
        return AL_ERR_STATE;
    if (c->in && c->in_off < c->in_len &&
        rl_buf_append(rest, c->in + c->in_off, c->in_len - c->in_off) < 0)
        return AL_ERR_NOMEM;
    *fd = c->fd;
    *ssl = c->ssl;
    c->fd = -1;
    c->ssl = NULL;
    c->notified = 1; /* the caller asked for it: no on_close */
    conn_abort(c, 0);
    return 0;
}

const char *rl_h1conn_peer(const struct rl_h1conn *c)
{
    return c->peer;
}

int rl_h1conn_tls(const struct rl_h1conn *c)
{
    return c->ssl != NULL;
}
