/*
 * mcp_sse: the response filter object (mcp.h, struct rl_mcp_filter).
 *
 * JSON body mode holds the body (up to max_msg) and hands it to
 * rl_mcp_rewrite() at the end. SSE mode parses text/event-stream as the
 * WHATWG rules say: lines end at CRLF, LF or CR (a CR at the end of one
 * chunk and an LF at the start of the next are one line end); a line
 * starting with ':' is a comment; "data" lines make the event's data
 * (joined with LF); a blank line ends the event; a BOM at the very start
 * of the stream is not part of the first line. Comments and blank lines
 * outside an event go out at once; an event's lines are held from its
 * first field line to the blank line that ends it (at most max_msg bytes
 * in all), then go out unchanged unless the event's data is a list result
 * that rl_mcp_rewrite() changed: then its data lines are replaced, at the
 * place of the first one, by the new data (one data line per line of
 * it), and every other line of the event keeps its bytes. Line ends that
 * only splitlines()-style clients see are dealt with in dispatch().
 *
 * Output depends only on the bytes, never on how they were chunked. Every
 * held byte is wiped when it is let go (the MCP server's bytes may carry
 * a secret the scrubber after us removes).
 */
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "mcp.h"
#include "mcp_json.h"

#define DEFAULT_MAX_MSG (4u << 20)

struct rl_mcp_filter {
    int sse;
    rl_mcp_allow_cb allow;
    void *user;
    size_t max_msg;
    int broken;            /* an error happened: every call fails */
    unsigned long removed; /* items removed so far */
    struct rl_buf held;    /* body; or the event's lines + the partial line */
    size_t line_start;     /* sse: start of the partial line in held */
    int seen;              /* sse: a line was seen (a BOM only comes first) */
    int ev_bom;            /* sse: held starts with the stream's BOM */
    int cr_pending;        /* sse: the last line ended with CR */
    int cr_held;           /* ... and it was held (an LF next joins it) */
    struct rl_buf data;    /* sse scratch: the event's data */
    struct rl_buf text;    /* scratch: the rewritten message */
    struct rl_buf alt;     /* sse scratch: an event with wide line ends replaced */
};

static const uint8_t bom[3] = {0xEF, 0xBB, 0xBF};

int rl_mcp_filter_new(int sse, rl_mcp_allow_cb allow, void *user, size_t max_msg,
                      struct rl_mcp_filter **out)
{
    struct rl_mcp_filter *f = calloc(1, sizeof *f);

    *out = NULL;
    if (!f)
        return AL_ERR_NOMEM;
    f->sse = sse;
    f->allow = allow;
    f->user = user;
    f->max_msg = max_msg ? max_msg : DEFAULT_MAX_MSG;
    rl_buf_init(&f->held, f->max_msg);
    rl_buf_init(&f->data, 0);
    rl_buf_init(&f->text, 0);
    rl_buf_init(&f->alt, 0);
    *out = f;
    return 0;
}

void rl_mcp_filter_free(struct rl_mcp_filter *f)
{
    if (!f)
        return;
    rl_buf_cleanup(&f->held);
    rl_buf_cleanup(&f->data);
    rl_buf_cleanup(&f->text);
    rl_buf_cleanup(&f->alt);
    free(f);
}

unsigned long rl_mcp_filter_removed(const struct rl_mcp_filter *f)
{
    return f->removed;
}

/* Index of the first CR or LF in p[0..n), or n. */
static size_t find_eol(const uint8_t *p, size_t n)
{
    const uint8_t *lf = memchr(p, '\n', n);
    size_t k = lf ? (size_t)(lf - p) : n;
    const uint8_t *cr = memchr(p, '\r', k);

    return cr ? (size_t)(cr - p) : k;
}

/* One line of p[i..n): *clen content bytes, *eol line-end bytes (0 for a
 * last line without one). Returns the start of the next line. */
static size_t next_line(const uint8_t *p, size_t n, size_t i, size_t *clen, size_t *eol)
{
    size_t k = i + find_eol(p + i, n - i);

    *clen = k - i;
    if (k == n)
        *eol = 0;
    else if (p[k] == '\r' && k + 1 < n && p[k + 1] == '\n')
        *eol = 2;
    else
        *eol = 1;
    return k + *eol;
}

/* Is the line c[0..len) a data field? Its value is c[*vs..len). */
static int data_field(const uint8_t *c, size_t len, size_t *vs)
{
    if (len < 4 || memcmp(c, "data", 4) != 0 || (len > 4 && c[4] != ':'))
        return 0;
    *vs = len == 4 ? 4 : (len > 5 && c[5] == ' ' ? 6 : 5);
    return 1;
}

/* The event's data (lines joined by LF) into f->data; 0 if it has none. */
static int collect_data(struct rl_mcp_filter *f, const uint8_t *ev, size_t n)
{
    size_t i = 0, clen, eol, vs, skip = f->ev_bom ? 3 : 0;
    int any = 0, rc = 0;

    rl_mcp_buf_clear(&f->data);
    while (i < n && rc == 0) {
        const uint8_t *c = ev + i + skip;
        size_t next = next_line(ev, n, i, &clen, &eol);
        clen -= skip;
        skip = 0;
        if (data_field(c, clen, &vs)) {
            if (any)
                rc = rl_buf_append(&f->data, "\n", 1);
            if (rc == 0)
                rc = rl_buf_append(&f->data, c + vs, clen - vs);
            any = 1;
        }
        i = next;
    }
    return rc < 0 ? rc : any;
}

/* f->text as data lines ending like the line they replace. */
static int put_data_lines(struct rl_mcp_filter *f, const uint8_t *eolp, size_t eol,
                          struct rl_buf *out)
{
    const uint8_t *t = f->text.p;
    size_t n = f->text.len, i = 0;
    int rc = 0;

    for (;;) {
        const uint8_t *lf = n > i ? memchr(t + i, '\n', n - i) : NULL;
        size_t l = lf ? (size_t)(lf - (t + i)) : n - i;
        rc = rl_buf_append(out, "data: ", 6);
        if (rc == 0)
            rc = rl_buf_append(out, t + i, l);
        if (rc == 0 && (lf || eol))
            rc = eol ? rl_buf_append(out, eolp, eol) : rl_buf_append(out, "\n", 1);
        if (rc != 0 || !lf)
            return rc;
        i += l + 1;
    }
}

/* The event with its data lines replaced by f->text. */
static int put_rewritten(struct rl_mcp_filter *f, const uint8_t *ev, size_t n, struct rl_buf *out)
{
    size_t i = 0, clen, eol, vs, skip = f->ev_bom ? 3 : 0;
    int first = 1, rc = 0;

    while (i < n && rc == 0) {
        const uint8_t *c = ev + i + skip;
        size_t next = next_line(ev, n, i, &clen, &eol);
        if (!data_field(c, clen - skip, &vs)) {
            rc = rl_buf_append(out, ev + i, next - i);
        } else if (first) {
            rc = rl_buf_append(out, ev + i, skip);
            if (rc == 0)
                rc = put_data_lines(f, c + clen - skip, eol, out);
            first = 0;
        }
        skip = 0;
        i = next;
    }
    return rc;
}

/*
 * Clients that split lines as Python's str.splitlines() does (httpx-sse up
 * to 0.4.1, used by MCP's Python SDK) also end a line at VT, FF, FS, GS,
 * RS, NEL, U+2028 and U+2029, so an event can hold "events" only they see.
 * When such a reading of an event shows a list result that would be
 * filtered, those characters are replaced by U+FFFD before the event is
 * filtered as usual: then both readings agree. Events without them (all
 * but a few) cost one scan.
 */
static size_t wide_eol(const uint8_t *p, size_t n, size_t i)
{
    uint8_t c = p[i];

    if (c == '\r')
        return i + 1 < n && p[i + 1] == '\n' ? 2 : 1;
    if (c == '\n' || c == 0x0B || c == 0x0C || (c >= 0x1C && c <= 0x1E))
        return 1;
    if (c == 0xC2 && i + 1 < n && p[i + 1] == 0x85)
        return 2;
    if (c == 0xE2 && i + 2 < n && p[i + 1] == 0x80 && (p[i + 2] == 0xA8 || p[i + 2] == 0xA9))
        return 3;
    return 0;
}

static int has_wide_eol(const uint8_t *p, size_t n)
{
    /* the bytes a wide line end starts with */
    static const uint8_t first[256] = {
        [0x0B] = 1, [0x0C] = 1, [0x1C] = 1, [0x1D] = 1, [0x1E] = 1, [0xC2] = 1, [0xE2] = 1};

    for (size_t i = 0; i < n; i++)
        if (first[p[i]] && wide_eol(p, n, i))
            return 1;
    return 0;
}

/* 1 when the data in f->data is a list result that would be changed. */
static int would_change(struct rl_mcp_filter *f)
{
    unsigned long ignored = 0;
    int rc;

    rl_mcp_buf_clear(&f->text);
    rc = rl_mcp_rewrite(f->data.p, f->data.len, 0, f->allow, f->user, &ignored, &f->text);
    rl_mcp_buf_clear(&f->text);
    rl_mcp_buf_clear(&f->data);
    return rc;
}

/* Does the wide reading of ev[0..n) show an event that would change? */
static int wide_reading_changes(struct rl_mcp_filter *f, const uint8_t *ev, size_t n)
{
    size_t i = f->ev_bom ? 3 : 0, k, vs;
    int any = 0, rc = 0;

    rl_mcp_buf_clear(&f->data);
    for (;;) {
        for (k = i; k < n && !wide_eol(ev, n, k); k++)
            ;
        if (data_field(ev + i, k - i, &vs)) {
            rc = any ? rl_buf_append(&f->data, "\n", 1) : 0;
            if (rc == 0)
                rc = rl_buf_append(&f->data, ev + i + vs, k - i - vs);
            any = 1;
        }
        if (rc == 0 && any && (k == i || k == n)) { /* a blank line or the end */
            rc = would_change(f);
            any = 0;
        }
        if (rc != 0 || k == n)
            break;
        i = k + wide_eol(ev, n, k);
    }
    rl_mcp_buf_clear(&f->data);
    return rc;
}

/* ev with every wide-only line end replaced by U+FFFD, into f->alt. */
static int replace_wide_eols(struct rl_mcp_filter *f, const uint8_t *ev, size_t n)
{
    size_t i = 0, e;
    int rc = 0;

    rl_mcp_buf_clear(&f->alt);
    while (i < n && rc == 0) {
        e = ev[i] == '\r' || ev[i] == '\n' ? 0 : wide_eol(ev, n, i);
        rc = e ? rl_buf_append(&f->alt, "\xEF\xBF\xBD", 3) : rl_buf_append(&f->alt, ev + i, 1);
        i += e ? e : 1;
    }
    return rc;
}

/* The held event held[0..n) is complete: out it goes, rewritten or not. */
static int dispatch(struct rl_mcp_filter *f, size_t n, struct rl_buf *out)
{
    const uint8_t *ev = f->held.p;
    int rc;

    if (has_wide_eol(ev, n)) {
        rc = wide_reading_changes(f, ev, n);
        if (rc > 0)
            rc = replace_wide_eols(f, ev, n);
        if (rc < 0)
            return rc;
        if (f->alt.len) {
            ev = f->alt.p;
            n = f->alt.len;
        }
    }
    rc = collect_data(f, ev, n);
    if (rc > 0) {
        rl_mcp_buf_clear(&f->text);
        rc = rl_mcp_rewrite(f->data.p, f->data.len, 0, f->allow, f->user, &f->removed, &f->text);
        rl_mcp_buf_clear(&f->data);
    }
    if (rc == 0)
        rc = rl_buf_append(out, ev, n);
    else if (rc > 0)
        rc = put_rewritten(f, ev, n, out);
    rl_mcp_buf_clear(&f->text);
    rl_mcp_buf_clear(&f->alt);
    return rc;
}

/* Empties held (wiped): the next line starts a new event. */
static void drop_held(struct rl_mcp_filter *f)
{
    rl_mcp_buf_clear(&f->held);
    f->line_start = 0;
    f->ev_bom = 0;
}

/* A line (with its line end) just completed at held[line_start..len). */
static int sse_line(struct rl_mcp_filter *f, size_t eol, struct rl_buf *out)
{
    size_t ls = f->line_start, len = f->held.len - ls - eol, off = 0;
    const uint8_t *c = f->held.p + ls;
    int rc;

    if (!f->seen && len >= 3 && memcmp(c, bom, 3) == 0) {
        off = 3;
        f->ev_bom = 1;
    }
    f->seen = 1;
    /* a comment with a wide line end is held with the event after it: in
     * the wide reading they are one event */
    if (len == off || (c[off] == ':' && ls == 0 && !has_wide_eol(c, len))) {
        /* a blank line ends the held event; a blank or comment line
         * outside an event goes out as it is */
        rc = ls > 0 ? dispatch(f, f->held.len, out) : rl_buf_append(out, f->held.p, f->held.len);
        drop_held(f);
        f->cr_held = 0;
        return rc;
    }
    f->line_start = f->held.len; /* a field line: the event goes on */
    f->cr_held = 1;
    return 0;
}

static int sse_feed(struct rl_mcp_filter *f, const uint8_t *in, size_t n, struct rl_buf *out)
{
    int rc = 0;

    while (n > 0 && rc == 0) {
        size_t k;
        if (f->cr_pending) {
            f->cr_pending = 0;
            if (in[0] == '\n') {
                if (f->cr_held) {
                    rc = rl_buf_append(&f->held, in, 1);
                    f->line_start = f->held.len;
                } else {
                    rc = rl_buf_append(out, in, 1);
                }
                in++;
                n--;
                continue;
            }
        }
        k = find_eol(in, n);
        if (k == n) {
            rc = rl_buf_append(&f->held, in, n);
            break;
        }
        rc = rl_buf_append(&f->held, in, k + 1);
        if (rc == 0) {
            f->cr_pending = in[k] == '\r';
            rc = sse_line(f, 1, out);
        }
        in += k + 1;
        n -= k + 1;
    }
    return rc;
}

/* End of stream: a partial last line and an event without its blank line
 * are still filtered (a client may not dispatch them, but one that does
 * must not see a refused item). */
static int sse_finish(struct rl_mcp_filter *f, struct rl_buf *out)
{
    size_t ls = f->line_start, len = f->held.len - ls, off = 0;
    const uint8_t *c;
    int rc = 0;

    if (f->held.len == 0)
        return 0;
    c = f->held.p + ls;
    if (len > 0 && !f->seen && len >= 3 && memcmp(c, bom, 3) == 0) {
        off = 3;
        f->ev_bom = 1;
    }
    if (ls == 0 && (len == off || (c[off] == ':' && !has_wide_eol(c, len))))
        rc = rl_buf_append(out, f->held.p, f->held.len);
    else
        rc = dispatch(f, f->held.len, out);
    drop_held(f);
    return rc;
}

static int body_finish(struct rl_mcp_filter *f, struct rl_buf *out)
{
    int rc;

    rl_mcp_buf_clear(&f->text);
    rc = rl_mcp_rewrite(f->held.p, f->held.len, 1, f->allow, f->user, &f->removed, &f->text);
    if (rc == 0)
        rc = rl_buf_append(out, f->held.p, f->held.len);
    else if (rc > 0)
        rc = rl_buf_append(out, f->text.p, f->text.len);
    rl_mcp_buf_clear(&f->text);
    rl_mcp_buf_clear(&f->held);
    return rc;
}

int rl_mcp_filter_feed(struct rl_mcp_filter *f, const uint8_t *in, size_t n, struct rl_buf *out)
{
    int rc;

    if (f->broken)
        return AL_ERR_STATE;
    if (n == 0)
        return 0;
    rc = f->sse ? sse_feed(f, in, n, out) : rl_buf_append(&f->held, in, n);
    if (rc < 0)
        f->broken = 1;
    return rc;
}

int rl_mcp_filter_finish(struct rl_mcp_filter *f, struct rl_buf *out)
{
    int rc;

    if (f->broken)
        return AL_ERR_STATE;
    rc = f->sse ? sse_finish(f, out) : body_finish(f, out);
    if (rc < 0)
        f->broken = 1;
    return rc;
}
