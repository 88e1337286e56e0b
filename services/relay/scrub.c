/*
 * scrub: removes credential values from bytes on their way to an agent (see
 * scrub.h for the contract).
 *
 * Patterns. rl_scrub_add() derives every form of a value as a pattern: a
 * byte string plus a parallel case mask (0x20 where the byte is an ASCII
 * letter that may appear in either case, stored in lower case: the letters
 * of hex, of %HH and of \uHHHH escapes; 0 elsewhere, where bytes must match
 * exactly). The forms (identical ones kept once):
 *   raw;  hex;
 *   base64, standard and URL alphabets, value prefixed with 0, 1 or 2 zero
 *     bytes, minus the leading characters that mix in the unknown preceding
 *     byte (ceil(4a/3)); then the characters fully determined by the value
 *     (the core), the core plus the final partial character, and that plus
 *     '=' padding; each of these also with '/' as "\/" (a JSON encoder that
 *     escapes '/') and percent-encoded ('+', '/', '=' as %XX: base64 in a
 *     query string);
 *   percent-encoding with the raw-character sets of RFC 3986 (unreserved),
 *     encodeURIComponent (plus !'()*), WHATWG form encoding (alnum *-._) and
 *     Python's quote() (unreserved plus '/'), each with space as %20 and as
 *     '+'; and every byte as %XX;
 *   JSON string contents as JSON.stringify / jansson / Python produce them:
 *     '/' raw or "\/", non-ASCII raw or as \uHHHH (ensure_ascii, valid UTF-8
 *     only; DEL raw as jansson writes it or \u007f as Python does); as Go's
 *     encoding/json (and Rails) write them by default, < > & as \u003c
 *     \u003e \u0026 and U+2028/2029 as \u2028/\u2029; as .NET's
 *     System.Text.Json writes them by default, < > & ' " + ` as \u00XX (so
 *     a '+' in a token becomes \u002B), DEL and non-ASCII as \uHHHH; and
 *     each of these escaped once more (JSON text carried in a JSON string,
 *     as MCP tool results often are).
 * Every pattern is at least RL_SCRUB_MIN_VALUE bytes long (a value of 8
 * bytes gives a base64 core of 10 characters; the other forms are at least
 * as long as the value).
 *
 * Matching: Wu-Manber. m = the shortest pattern length (at most 255). A
 * 65536-entry table indexed by a 2-byte block gives, for the block ending a
 * window of m bytes, how far the window may move without skipping a match
 * (m - 1 for a block that occurs in no pattern's first m bytes, every case
 * variant of masked letters inserted). Only a block that ends some pattern's
 * first m bytes gives 0; its bucket (a small hash keyed by the exact block)
 * lists those patterns longest first, and each is compared in full. On data
 * that matches nothing the scan reads about one block per m - 1 bytes, so it
 * is faster than a per-byte automaton (Aho-Corasick over 256 symbols would
 * also need a transition table of ~100 MB for an 8 KiB value with ~40
 * forms), and case folding costs nothing: it lives in
 * the tables, not in the scan loop. Verification is a memcmp per candidate,
 * so the cost stays linear unless a value is itself periodic ("AAAA..."):
 * then text made of that period re-verifies long partial matches at every
 * period, O(text x value length / period) (an 8 KiB run of one byte scans
 * such text at ~9 MB/s); real credentials are not periodic.
 *
 * Replacement: the longest match at every start position is found; matches
 * that overlap are merged and replaced by one mark (RL_SCRUB_MARK, or the
 * replacement text of the value whose match starts the group, see
 * rl_scrub_add_as); adjacent (non overlapping) matches get one mark each. So
 * no byte of any match survives, whatever forms overlap. Each pattern
 * remembers the number of the value it came from (identical patterns of two
 * values are kept once, under the first).
 *
 * Streaming: a stream keeps the last (max_len - 1) bytes it was fed. On a
 * feed the virtual text V = held ‖ input is final up to F = |V| - max_len + 1:
 * every match starting before F ends inside V, so it is known, and no match
 * still unknown can start before F. Matches starting in the held part are
 * searched in a stitch buffer (held ‖ first max_len - 1 input bytes), the
 * rest in the input in place; V[0..F) is emitted (a mark already emitted for
 * a merged match that reaches past F is remembered as a covered prefix of the
 * new held part). Then the held bytes are released up to the first one
 * whose suffix could still begin a match (stream_release), so a stream holds
 * back only a possible partial match, not a fixed (max_len - 1) bytes. The
 * match list and so the output are the same as one-shot matching of the
 * concatenation, whatever the chunking.
 *
 * Memory: the pattern bytes (every encoded form of each value) and the
 * temporary forms built while adding a value live in locked memory
 * (al_secure_alloc: mlock'ed, not in core dumps, wiped in forked children);
 * masks, tables and stream buffers are heap blocks freed with
 * al_wipe_free() (zeroed first). A set is a 64 KiB shift table plus its
 * patterns, capped at SET_BYTES_MAX bytes; a stream holds 2 * (max_len - 1)
 * bytes (~240 for a 40-byte token).
 */
#include "scrub.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "al_err.h"
#include "al_wipe.h"

#define MARK_LEN      (sizeof(RL_SCRUB_MARK) - 1)
#define WINDOW_MAX    255 /* longest Wu-Manber window: shifts fit a uint8_t */
#define SHIFT_SIZE    65536
#define SET_BYTES_MAX ((size_t)256 << 20) /* pattern bytes of one set */
#define CASE_BIT      0x20

struct pat {
    uint32_t off; /* into bytes[] and masks[] */
    uint32_t len;
    uint32_t vid; /* the value it was derived from (order of rl_scrub_add*) */
    uint8_t ci;   /* some mask byte is set */
};

/* What matches of one value's forms become (rl_scrub_add_as); none = MARK. */
struct repl {
    uint8_t *p;
    size_t n;
};

struct bucket {
    uint32_t key;   /* block + 1; 0 = empty slot */
    uint32_t first; /* into cand[] */
    uint32_t count;
};

struct tables {
    size_t m;               /* window length */
    uint8_t *shift;         /* SHIFT_SIZE entries */
    struct bucket *buckets; /* 1 << bbits slots */
    unsigned bbits;
    uint32_t *cand; /* pattern ids grouped by bucket, longest first */
    /* patterns by the byte they can start with (both cases where masked):
     * ids fidx[fstart[c] .. fstart[c + 1]) */
    uint32_t fstart[257];
    uint32_t *fidx;
};

struct rl_scrub {
    struct pat *pats;
    size_t npats, cappats;
    uint8_t *bytes; /* pattern bytes, masked letters in lower case */
    uint8_t *masks;
    size_t nbytes, capbytes;
    size_t min_len, max_len;
    struct tables t;
    struct repl *repls; /* by value id */
    uint32_t nvalues;
};

struct rl_scrub_stream {
    const struct rl_scrub *s;
    uint8_t *hold; /* held bytes, then room for the stitch */
    size_t held;
    size_t cap;
    size_t covered; /* hold[0..covered) is inside an already emitted mark */
    unsigned long hits;
    long first; /* value id of the first match, -1 none yet */
    int failed;
};

/* ---------------------------------------------------------------------- */
/* pattern builder                                                         */

struct pb {
    uint8_t *b, *m;
    size_t len, cap;
    int oom;
};

static void pb_free(struct pb *p)
{
    al_secure_free(p->b);
    al_wipe_free(p->m);
    p->b = p->m = NULL;
    p->len = p->cap = 0;
}

static void pb_put(struct pb *p, uint8_t c, uint8_t mask)
{
    if (p->oom)
        return;
    if (p->len == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        uint8_t *b = al_secure_realloc(p->b, p->len, cap);
        uint8_t *m;
        if (!b) {
            p->oom = 1;
            return;
        }
        p->b = b;
        m = al_wipe_realloc(p->m, p->len, cap);
        if (!m) {
            p->oom = 1;
            return;
        }
        p->m = m;
        p->cap = cap;
    }
    p->b[p->len] = c;
    p->m[p->len++] = mask;
}

static int is_alpha(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_alnum(uint8_t c)
{
    return is_alpha(c) || (c >= '0' && c <= '9');
}

/* A character that may appear in either case. */
static void pb_put_anycase(struct pb *p, uint8_t c)
{
    if (c >= 'A' && c <= 'Z')
        c = (uint8_t)(c + ('a' - 'A'));
    pb_put(p, c, is_alpha(c) ? CASE_BIT : 0);
}

static void pb_put_hex(struct pb *p, uint8_t c)
{
    static const char hex[] = "0123456789abcdef";
    pb_put_anycase(p, (uint8_t)hex[c >> 4]);
    pb_put_anycase(p, (uint8_t)hex[c & 15]);
}

static void pb_put_str(struct pb *p, const char *s)
{
    while (*s)
        pb_put(p, (uint8_t)*s++, 0);
}

static void pb_copy(struct pb *dst, const struct pb *src, size_t from, size_t to)
{
    dst->len = 0;
    dst->oom = src->oom;
    for (size_t i = from; i < to; i++)
        pb_put(dst, src->b[i], src->m[i]);
}

/* ---------------------------------------------------------------------- */
/* encoders: in -> out (out is reset first); masks of copied bytes kept     */

static void enc_hex(const struct pb *in, struct pb *out)
{
    out->len = 0;
    for (size_t i = 0; i < in->len; i++)
        pb_put_hex(out, in->b[i]);
}

enum pct_set {
    PCT_UNRESERVED, /* RFC 3986: ALPHA DIGIT - . _ ~ */
    PCT_URIC,       /* encodeURIComponent: unreserved and ! ' ( ) * */
    PCT_FORM,       /* WHATWG urlencoded: ALPHA DIGIT * - . _ */
    PCT_PATH,       /* Python quote(): unreserved and / */
    PCT_ALL,        /* every byte as %XX */
};

static int pct_raw(enum pct_set set, uint8_t c)
{
    switch (set) {
    case PCT_UNRESERVED:
        return is_alnum(c) || (c && strchr("-._~", c));
    case PCT_URIC:
        return is_alnum(c) || (c && strchr("-._~!'()*", c));
    case PCT_FORM:
        return is_alnum(c) || (c && strchr("*-._", c));
    case PCT_PATH:
        return is_alnum(c) || (c && strchr("-._~/", c));
    case PCT_ALL:
        break;
    }
    return 0;
}

static void enc_pct(const struct pb *in, struct pb *out, enum pct_set set, int space_plus)
{
    out->len = 0;
    for (size_t i = 0; i < in->len; i++) {
        uint8_t c = in->b[i];
        if (set != PCT_ALL && space_plus && c == ' ') {
            pb_put(out, '+', 0);
        } else if (pct_raw(set, c)) {
            pb_put(out, c, in->m[i]);
        } else {
            pb_put(out, '%', 0);
            pb_put_hex(out, c);
        }
    }
}

#define JSON_SLASH 0x1u  /* '/' as \/ */
#define JSON_ASCII 0x2u  /* non-ASCII as \uHHHH (needs valid UTF-8) */
#define JSON_DEL   0x4u  /* DEL as \u007f too (Python; jansson leaves it raw) */
#define JSON_HTML  0x8u  /* Go, Rails: < > & and U+2028/2029 as \uHHHH */
#define JSON_NET   0x10u /* .NET default encoder: < > & ' " + ` as \u00XX */

static void json_u(struct pb *out, unsigned cp)
{
    pb_put(out, '\\', 0);
    pb_put(out, 'u', 0);
    pb_put_hex(out, (uint8_t)(cp >> 8));
    pb_put_hex(out, (uint8_t)cp);
}

/* Decodes one UTF-8 sequence at s[0..n); returns its length or 0 if invalid. */
static size_t utf8_next(const uint8_t *s, size_t n, unsigned *cp)
{
    unsigned c = s[0], min;
    size_t len;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, c &= 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, c &= 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, c &= 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

/* Returns 0, or -1 when JSON_ASCII is asked for and in is not valid UTF-8. */
static int enc_json(const struct pb *in, struct pb *out, unsigned flags)
{
    static const char short_esc[] = "\b\f\n\r\t\"\\";
    static const char short_chr[] = "bfnrt\"\\";

    out->len = 0;
    for (size_t i = 0; i < in->len; i++) {
        uint8_t c = in->b[i];
        const char *e = c ? strchr(short_esc, c) : NULL;
        unsigned cp;
        size_t k;

        if (c && (((flags & JSON_NET) && strchr("<>&'\"+`", c)) ||
                  ((flags & JSON_HTML) && strchr("<>&", c)))) {
            json_u(out, c);
        } else if (e) {
            pb_put(out, '\\', 0);
            pb_put(out, (uint8_t)short_chr[e - short_esc], 0);
        } else if (c < 0x20) {
            json_u(out, c);
        } else if (c == '/' && (flags & JSON_SLASH)) {
            pb_put_str(out, "\\/");
        } else if (c == 0x7f && (flags & JSON_DEL)) {
            json_u(out, c);
        } else if ((flags & JSON_HTML) && c == 0xe2 && i + 2 < in->len && in->b[i + 1] == 0x80 &&
                   (in->b[i + 2] == 0xa8 || in->b[i + 2] == 0xa9)) {
            json_u(out, in->b[i + 2] == 0xa8 ? 0x2028 : 0x2029);
            i += 2;
        } else if (!(flags & JSON_ASCII) || c < 0x80) {
            pb_put(out, c, in->m[i]);
        } else {
            k = utf8_next(in->b + i, in->len - i, &cp);
            if (k == 0)
                return -1;
            if (cp >= 0x10000) {
                cp -= 0x10000;
                json_u(out, 0xd800 | (cp >> 10));
                json_u(out, 0xdc00 | (cp & 0x3ff));
            } else {
                json_u(out, cp);
            }
            i += k - 1;
        }
    }
    return 0;
}

static const char B64_STD[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64_URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Padded base64 of (lead zero bytes ‖ in) into out. */
static void enc_b64(const struct pb *in, size_t lead, const char *alpha, struct pb *out)
{
    size_t n = lead + in->len;
    out->len = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t w = 0;
        size_t k = n - i < 3 ? n - i : 3;
        for (size_t j = 0; j < 3; j++)
            w = (w << 8) | (i + j < n && i + j >= lead ? in->b[i + j - lead] : 0u);
        for (size_t j = 0; j < 4; j++)
            pb_put(out, j <= k ? (uint8_t)alpha[(w >> (18 - 6 * j)) & 63] : '=', 0);
    }
}

/* ---------------------------------------------------------------------- */
/* the pattern set                                                         */

static int set_reserve(struct rl_scrub *s, size_t len)
{
    if (s->npats == s->cappats) {
        size_t cap = s->cappats ? s->cappats * 2 : 64;
        struct pat *p = al_wipe_realloc(s->pats, s->npats * sizeof(*p), cap * sizeof(*p));
        if (!p)
            return AL_ERR_NOMEM;
        s->pats = p;
        s->cappats = cap;
    }
    if (len > SET_BYTES_MAX - s->nbytes)
        return AL_ERR_NOMEM;
    if (s->nbytes + len > s->capbytes) {
        size_t cap = s->capbytes ? s->capbytes : 4096;
        uint8_t *b, *m;
        while (cap < s->nbytes + len)
            cap *= 2;
        b = al_secure_realloc(s->bytes, s->nbytes, cap);
        if (!b)
            return AL_ERR_NOMEM;
        s->bytes = b;
        m = al_wipe_realloc(s->masks, s->nbytes, cap);
        if (!m)
            return AL_ERR_NOMEM;
        s->masks = m;
        s->capbytes = cap;
    }
    return 0;
}

static int set_has(const struct rl_scrub *s, const struct pb *p)
{
    for (size_t i = 0; i < s->npats; i++) {
        const struct pat *q = &s->pats[i];
        if (q->len == p->len && memcmp(s->bytes + q->off, p->b, p->len) == 0 &&
            memcmp(s->masks + q->off, p->m, p->len) == 0)
            return 1;
    }
    return 0;
}

static int set_add_pattern(struct rl_scrub *s, const struct pb *p)
{
    struct pat *q;
    int rc;

    if (p->oom)
        return AL_ERR_NOMEM;
    /* cannot happen for values of RL_SCRUB_MIN_VALUE bytes or more; a short
     * pattern would match ordinary text */
    if (p->len < RL_SCRUB_MIN_VALUE || set_has(s, p))
        return 0;
    rc = set_reserve(s, p->len);
    if (rc < 0)
        return rc;
    q = &s->pats[s->npats++];
    q->off = (uint32_t)s->nbytes;
    q->len = (uint32_t)p->len;
    q->vid = s->nvalues; /* the value being added */
    q->ci = memchr(p->m, CASE_BIT, p->len) != NULL;
    memcpy(s->bytes + s->nbytes, p->b, p->len);
    memcpy(s->masks + s->nbytes, p->m, p->len);
    s->nbytes += p->len;
    if (s->min_len == 0 || p->len < s->min_len)
        s->min_len = p->len;
    if (p->len > s->max_len)
        s->max_len = p->len;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* deriving the forms of one value                                         */

struct derive {
    struct rl_scrub *s;
    struct pb v, a, b, c; /* the value; scratch */
    int rc;
};

static void add(struct derive *d, const struct pb *p)
{
    if (d->rc == 0)
        d->rc = set_add_pattern(d->s, p);
}

static void derive_json(struct derive *d)
{
    static const unsigned inner[] = {
        0,
        JSON_SLASH,
        JSON_ASCII,
        JSON_ASCII | JSON_SLASH,
        JSON_ASCII | JSON_DEL,
        JSON_ASCII | JSON_DEL | JSON_SLASH,
        JSON_HTML,
        JSON_NET | JSON_ASCII | JSON_DEL,
    };

    for (size_t i = 0; i < sizeof(inner) / sizeof(inner[0]); i++) {
        if (enc_json(&d->v, &d->a, inner[i]) < 0)
            continue; /* ensure_ascii of bytes that are not UTF-8 */
        add(d, &d->a);
        enc_json(&d->a, &d->b, 0); /* escaped twice */
        add(d, &d->b);
        enc_json(&d->a, &d->b, JSON_SLASH);
        add(d, &d->b);
    }
}

static void derive_pct(struct derive *d)
{
    static const enum pct_set sets[] = {PCT_UNRESERVED, PCT_URIC, PCT_FORM, PCT_PATH};

    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
        for (int plus = 0; plus <= 1; plus++) {
            enc_pct(&d->v, &d->a, sets[i], plus);
            add(d, &d->a);
        }
    }
    enc_pct(&d->v, &d->a, PCT_ALL, 0);
    add(d, &d->a);
}

/* One base64 pattern (in d->b) as is, JSON-slash-escaped and percent-encoded. */
static void add_b64_variants(struct derive *d)
{
    add(d, &d->b);
    enc_json(&d->b, &d->c, JSON_SLASH);
    add(d, &d->c);
    enc_pct(&d->b, &d->c, PCT_UNRESERVED, 0);
    add(d, &d->c);
}

static void derive_b64(struct derive *d)
{
    static const char *const alphas[] = {B64_STD, B64_URL};
    size_t n = d->v.len;

    for (size_t i = 0; i < 2; i++) {
        for (size_t lead = 0; lead < 3; lead++) {
            size_t bits = 8 * (lead + n);
            size_t start = (4 * lead + 2) / 3; /* ceil(4 * lead / 3) */
            size_t full = bits / 6;            /* characters fully determined */

            enc_b64(&d->v, lead, alphas[i], &d->a);
            pb_copy(&d->b, &d->a, start, full);
            add_b64_variants(d);
            if (bits % 6 == 0)
                continue;
            /* the value at the end of the text: last character, then padding */
            pb_copy(&d->b, &d->a, start, full + 1);
            add_b64_variants(d);
            pb_copy(&d->b, &d->a, start, d->a.len);
            add_b64_variants(d);
        }
    }
}

static int derive_all(struct rl_scrub *s, const uint8_t *v, size_t n)
{
    struct derive d = {.s = s};

    for (size_t i = 0; i < n; i++)
        pb_put(&d.v, v[i], 0);
    add(&d, &d.v);
    enc_hex(&d.v, &d.a);
    add(&d, &d.a);
    derive_b64(&d);
    derive_pct(&d);
    derive_json(&d);
    if (d.rc == 0 && (d.a.oom || d.b.oom || d.c.oom))
        d.rc = AL_ERR_NOMEM;
    pb_free(&d.v);
    pb_free(&d.a);
    pb_free(&d.b);
    pb_free(&d.c);
    return d.rc;
}

/* ---------------------------------------------------------------------- */
/* Wu-Manber tables                                                        */

struct entry {
    uint32_t block;
    uint32_t len;
    uint32_t pid;
};

static void tables_free(struct tables *t)
{
    al_wipe_free(t->shift);
    al_wipe_free(t->buckets);
    al_wipe_free(t->cand);
    al_wipe_free(t->fidx);
    memset(t, 0, sizeof(*t));
}

/* The 1, 2 or 4 byte pairs a block of a pattern matches. */
static size_t block_variants(const uint8_t *b, const uint8_t *m, uint32_t out[4])
{
    size_t n = 0;
    for (unsigned i = 0; i <= (m[0] ? 1u : 0u); i++)
        for (unsigned j = 0; j <= (m[1] ? 1u : 0u); j++)
            out[n++] = (uint32_t)(b[0] ^ (i ? m[0] : 0)) << 8 | (uint32_t)(b[1] ^ (j ? m[1] : 0));
    return n;
}

static int entry_cmp(const void *x, const void *y)
{
    const struct entry *a = x, *b = y;
    if (a->block != b->block)
        return a->block < b->block ? -1 : 1;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1; /* longest first */
    return a->pid < b->pid ? -1 : a->pid > b->pid;
}

static uint32_t bucket_hash(uint32_t block, unsigned bits)
{
    return (uint32_t)(block * 0x9e3779b1u) >> (32 - bits);
}

static void fill_shift(const struct rl_scrub *s, struct tables *t)
{
    size_t m = t->m;
    uint32_t v[4];

    memset(t->shift, (int)(m - 1), SHIFT_SIZE);
    for (size_t i = 0; i < s->npats; i++) {
        const uint8_t *b = s->bytes + s->pats[i].off, *mk = s->masks + s->pats[i].off;
        for (size_t j = 1; j < m; j++) {
            size_t k = block_variants(b + j - 1, mk + j - 1, v);
            uint8_t sh = (uint8_t)(m - 1 - j);
            for (size_t x = 0; x < k; x++)
                if (t->shift[v[x]] > sh)
                    t->shift[v[x]] = sh;
        }
    }
}

/* Entries (block ending a pattern's window, pattern) sorted by block, longest first. */
static struct entry *collect_entries(const struct rl_scrub *s, size_t m, size_t *count)
{
    struct entry *e = malloc(s->npats * 4 * sizeof(*e));
    size_t n = 0;
    uint32_t v[4];

    if (!e)
        return NULL;
    for (size_t i = 0; i < s->npats; i++) {
        const struct pat *p = &s->pats[i];
        size_t k = block_variants(s->bytes + p->off + m - 2, s->masks + p->off + m - 2, v);
        for (size_t x = 0; x < k; x++)
            e[n++] = (struct entry){v[x], p->len, (uint32_t)i};
    }
    qsort(e, n, sizeof(*e), entry_cmp);
    *count = n;
    return e;
}

static int fill_buckets(struct tables *t, const struct entry *e, size_t n)
{
    size_t distinct = 0, slots;
    unsigned bits = 4;

    for (size_t i = 0; i < n; i++)
        distinct += i == 0 || e[i].block != e[i - 1].block;
    while (((size_t)1 << bits) < 2 * distinct)
        bits++;
    slots = (size_t)1 << bits;
    t->buckets = calloc(slots, sizeof(*t->buckets));
    t->cand = malloc((n ? n : 1) * sizeof(*t->cand));
    if (!t->buckets || !t->cand)
        return AL_ERR_NOMEM;
    t->bbits = bits;
    for (size_t i = 0; i < n; i++) {
        uint32_t h = bucket_hash(e[i].block, bits);
        t->cand[i] = e[i].pid;
        if (i > 0 && e[i].block == e[i - 1].block)
            continue;
        while (t->buckets[h].key)
            h = (h + 1) & (uint32_t)(slots - 1);
        t->buckets[h] = (struct bucket){e[i].block + 1, (uint32_t)i, 0};
        for (size_t j = i; j < n && e[j].block == e[i].block; j++)
            t->buckets[h].count++;
    }
    return 0;
}

/* The index of patterns by first byte (see struct tables). */
static int fill_first(const struct rl_scrub *s, struct tables *t)
{
    uint32_t count[256] = {0}, at[256];

    for (size_t i = 0; i < s->npats; i++) {
        uint8_t b = s->bytes[s->pats[i].off], m = s->masks[s->pats[i].off];
        count[b]++;
        if (m)
            count[b ^ m]++;
    }
    t->fstart[0] = 0;
    for (int c = 0; c < 256; c++)
        t->fstart[c + 1] = t->fstart[c] + count[c];
    t->fidx = malloc((t->fstart[256] ? t->fstart[256] : 1) * sizeof(*t->fidx));
    if (!t->fidx)
        return AL_ERR_NOMEM;
    memcpy(at, t->fstart, sizeof(at));
    for (size_t i = 0; i < s->npats; i++) {
        uint8_t b = s->bytes[s->pats[i].off], m = s->masks[s->pats[i].off];
        t->fidx[at[b]++] = (uint32_t)i;
        if (m)
            t->fidx[at[b ^ m]++] = (uint32_t)i;
    }
    return 0;
}

/* Builds new tables for the current patterns; the old ones stay on failure. */
static int tables_build(struct rl_scrub *s)
{
    struct tables t = {0};
    struct entry *e;
    size_t n = 0;
    int rc;

    t.m = s->min_len < WINDOW_MAX ? s->min_len : WINDOW_MAX;
    t.shift = malloc(SHIFT_SIZE);
    if (!t.shift)
        return AL_ERR_NOMEM;
    fill_shift(s, &t);
    e = collect_entries(s, t.m, &n);
    if (!e) {
        tables_free(&t);
        return AL_ERR_NOMEM;
    }
    rc = fill_buckets(&t, e, n);
    if (rc == 0)
        rc = fill_first(s, &t);
    al_wipe_free(e);
    if (rc < 0) {
        tables_free(&t);
        return rc;
    }
    tables_free(&s->t);
    s->t = t;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* public: the set                                                         */

int rl_scrub_new(struct rl_scrub **out)
{
    *out = calloc(1, sizeof(**out));
    return *out ? 0 : AL_ERR_NOMEM;
}

/* Room for the replacement of value id s->nvalues (copied; NULL = MARK). */
static int repl_set(struct rl_scrub *s, const char *repl, size_t repl_len)
{
    struct repl *r =
        al_wipe_realloc(s->repls, s->nvalues * sizeof(*r), ((size_t)s->nvalues + 1) * sizeof(*r));

    if (!r)
        return AL_ERR_NOMEM;
    s->repls = r;
    r[s->nvalues] = (struct repl){NULL, 0};
    if (!repl)
        return 0;
    r[s->nvalues].p = malloc(repl_len ? repl_len : 1);
    if (!r[s->nvalues].p)
        return AL_ERR_NOMEM;
    memcpy(r[s->nvalues].p, repl, repl_len);
    r[s->nvalues].n = repl_len;
    return 0;
}

static int add_value(struct rl_scrub *s, const uint8_t *v, size_t n, const char *repl,
                     size_t repl_len)
{
    size_t npats = s ? s->npats : 0, nbytes = s ? s->nbytes : 0;
    size_t min_len = s ? s->min_len : 0, max_len = s ? s->max_len : 0;
    int rc;

    if (!s || !v || n < RL_SCRUB_MIN_VALUE || n > RL_SCRUB_MAX_VALUE ||
        (repl && repl_len > RL_SCRUB_MAX_VALUE) || s->nvalues == UINT32_MAX)
        return AL_ERR_INVAL;
    rc = repl_set(s, repl, repl_len);
    if (rc == 0)
        rc = derive_all(s, v, n);
    if (rc == 0)
        rc = tables_build(s);
    if (rc < 0) { /* all or nothing: drop this value's patterns */
        if (s->nbytes > nbytes)
            OPENSSL_cleanse(s->bytes + nbytes, s->nbytes - nbytes);
        s->npats = npats;
        s->nbytes = nbytes;
        s->min_len = min_len;
        s->max_len = max_len;
        if (s->repls) {
            al_wipe_free(s->repls[s->nvalues].p);
            s->repls[s->nvalues] = (struct repl){NULL, 0};
        }
        return rc;
    }
    s->nvalues++;
    return 0;
}

int rl_scrub_add(struct rl_scrub *s, const uint8_t *v, size_t n)
{
    return add_value(s, v, n, NULL, 0);
}

int rl_scrub_add_as(struct rl_scrub *s, const uint8_t *v, size_t n, const char *repl,
                    size_t repl_len)
{
    if (!repl)
        return AL_ERR_INVAL;
    return add_value(s, v, n, repl, repl_len);
}

size_t rl_scrub_patterns(const struct rl_scrub *s)
{
    return s->npats;
}

size_t rl_scrub_max_len(const struct rl_scrub *s)
{
    return s->max_len;
}

void rl_scrub_free(struct rl_scrub *s)
{
    if (!s)
        return;
    tables_free(&s->t);
    for (uint32_t i = 0; s->repls && i < s->nvalues; i++)
        al_wipe_free(s->repls[i].p);
    al_wipe_free(s->repls);
    al_wipe_free(s->pats);
    al_secure_free(s->bytes);
    al_wipe_free(s->masks);
    al_wipe_free(s);
}

/* ---------------------------------------------------------------------- */
/* matching                                                                */

/* Returns nonzero to stop the scan. at is relative to the scanned buffer;
 * vid is the value the matching pattern was derived from. */
typedef int (*match_fn)(void *ctx, size_t at, size_t len, uint32_t vid);

static int pat_eq(const struct rl_scrub *s, const struct pat *p, const uint8_t *d)
{
    const uint8_t *b = s->bytes + p->off, *m = s->masks + p->off;

    if (!p->ci)
        return memcmp(b, d, p->len) == 0;
    for (size_t i = 0; i < p->len; i++)
        if ((uint8_t)(d[i] | m[i]) != b[i])
            return 0;
    return 1;
}

/* The longest pattern at d (avail bytes there) whose window ends in block,
 * or NULL. */
static const struct pat *longest_at(const struct rl_scrub *s, const uint8_t *d, size_t avail,
                                    uint32_t block)
{
    const struct tables *t = &s->t;
    uint32_t mask = ((uint32_t)1 << t->bbits) - 1, h = bucket_hash(block, t->bbits);
    const struct bucket *b;

    while (t->buckets[h].key && t->buckets[h].key != block + 1)
        h = (h + 1) & mask;
    b = &t->buckets[h];
    for (uint32_t i = 0; i < b->count; i++) {
        const struct pat *p = &s->pats[t->cand[b->first + i]];
        if (p->len <= avail && pat_eq(s, p, d))
            return p;
    }
    return NULL;
}

/*
 * Reports, in increasing order, the longest match at every start position in
 * [lo, hi) of d[0..len) (a match must end inside d). Returns 1 if fn stopped it.
 */
static int scan(const struct rl_scrub *s, const uint8_t *d, size_t len, size_t lo, size_t hi,
                match_fn fn, void *ctx)
{
    const uint8_t *shift = s->t.shift;
    size_t m = s->t.m, p = lo;

    if (s->npats == 0 || len < m)
        return 0;
    if (hi > len - m + 1)
        hi = len - m + 1;
    while (p < hi) {
        const uint8_t *w = d + p + m - 2;
        uint32_t block = (uint32_t)w[0] << 8 | w[1];
        size_t k = shift[block];
        const struct pat *l;

        if (k) {
            p += k;
            continue;
        }
        l = longest_at(s, d + p, len - p, block);
        if (l && fn(ctx, p, l->len, l->vid))
            return 1;
        p++;
    }
    return 0;
}

static int found(void *ctx, size_t at, size_t len, uint32_t vid)
{
    (void)at;
    (void)len;
    *(long *)ctx = (long)vid;
    return 1;
}

int rl_scrub_contains(const struct rl_scrub *s, const uint8_t *buf, size_t n)
{
    return rl_scrub_find(s, buf, n) >= 0;
}

long rl_scrub_find(const struct rl_scrub *s, const uint8_t *buf, size_t n)
{
    long vid = -1;

    if (s && buf)
        scan(s, buf, n, 0, n, found, &vid);
    return vid;
}

/*
 * The output side of one pass over V = a[0..alen) ‖ b: raw bytes up to each
 * match, one mark per group of overlapping matches.
 */
struct emitter {
    struct rl_buf *out;
    const uint8_t *a, *b;
    size_t alen;
    size_t base; /* added to the offsets scan() reports */
    size_t done; /* V[0..done) is decided (emitted or covered by a mark) */
    unsigned long hits;
    long first; /* value id of the first mark, -1 none */
    const struct rl_scrub *s;
    int rc;
};

static int emit_raw(struct emitter *e, size_t to)
{
    size_t from = e->done;

    if (from < e->alen) {
        size_t k = to < e->alen ? to : e->alen;
        if (from < k && (e->rc = rl_buf_append(e->out, e->a + from, k - from)) < 0)
            return e->rc;
        from = k;
    }
    if (from < to && (e->rc = rl_buf_append(e->out, e->b + (from - e->alen), to - from)) < 0)
        return e->rc;
    e->done = to;
    return 0;
}

static int on_match(void *ctx, size_t at, size_t len, uint32_t vid)
{
    struct emitter *e = ctx;
    size_t p = e->base + at, end = p + len;
    const struct repl *r = vid < e->s->nvalues ? &e->s->repls[vid] : NULL;

    if (p < e->done) { /* overlaps the group the last mark stands for */
        if (end > e->done)
            e->done = end;
        return 0;
    }
    if (emit_raw(e, p) < 0)
        return 1;
    if (r && r->p)
        e->rc = rl_buf_append(e->out, r->p, r->n);
    else
        e->rc = rl_buf_append(e->out, RL_SCRUB_MARK, MARK_LEN);
    if (e->rc < 0)
        return 1;
    if (e->first < 0)
        e->first = (long)vid;
    e->hits++;
    e->done = end;
    return 0;
}

/* Takes back what a failed call appended to out. */
static void out_rollback(struct rl_buf *out, size_t len)
{
    if (out->len > len) {
        OPENSSL_cleanse(out->p + len, out->len - len);
        out->len = len;
    }
}

long rl_scrub_copy(const struct rl_scrub *s, const uint8_t *buf, size_t n, struct rl_buf *out)
{
    struct emitter e = {.out = out, .a = buf, .alen = n, .first = -1, .s = s};
    size_t old = out->len;

    if (n == 0)
        return 0;
    scan(s, buf, n, 0, n, on_match, &e);
    if (e.rc == 0 && e.done < n)
        emit_raw(&e, n);
    if (e.rc < 0) {
        out_rollback(out, old);
        return e.rc;
    }
    return (long)e.hits;
}

/* ---------------------------------------------------------------------- */
/* streams                                                                 */

int rl_scrub_stream_new(const struct rl_scrub *s, struct rl_scrub_stream **out)
{
    struct rl_scrub_stream *st = calloc(1, sizeof(*st));

    *out = NULL;
    if (!st)
        return AL_ERR_NOMEM;
    st->s = s;
    st->first = -1;
    if (s->max_len > 1) {
        /* held bytes plus the stitch: at most 2 * (max_len - 1) */
        st->cap = 2 * (s->max_len - 1);
        st->hold = malloc(st->cap);
        if (!st->hold) {
            free(st);
            return AL_ERR_NOMEM;
        }
    }
    *out = st;
    return 0;
}

static int stream_fail(struct rl_scrub_stream *st, struct rl_buf *out, size_t old, int rc)
{
    out_rollback(out, old);
    st->failed = 1;
    return rc;
}

/* 1 when d[0..n) (n >= 1) is a proper prefix of some pattern: a match
 * starting there could still complete with bytes not yet seen. */
static int could_start(const struct rl_scrub *s, const uint8_t *d, size_t n)
{
    const struct tables *t = &s->t;

    for (uint32_t i = t->fstart[d[0]]; i < t->fstart[d[0] + 1]; i++) {
        const struct pat *p = &s->pats[t->fidx[i]];
        const uint8_t *b = s->bytes + p->off, *m = s->masks + p->off;
        size_t j = 0;

        if (p->len <= n)
            continue;
        while (j < n && (uint8_t)(d[j] | m[j]) == b[j])
            j++;
        if (j == n)
            return 1;
    }
    return 0;
}

/*
 * Emits the held bytes no future input can change: those before the first
 * position whose held suffix could still start a match. A match starting
 * before it ends inside the held bytes (else that suffix would be a prefix of
 * it), so it is known now; the output stays that of one-shot matching. This
 * is what lets a short SSE event or a keep-alive comment through at once
 * instead of waiting for (longest form - 1) more bytes.
 */
static int stream_release(struct rl_scrub_stream *st, struct rl_buf *out)
{
    size_t t = st->held, k = 0;
    struct emitter e = {
        .out = out, .a = st->hold, .alen = t, .done = st->covered, .first = -1, .s = st->s};

    while (k < t && !could_start(st->s, st->hold + k, t - k))
        k++;
    if (k == 0)
        return 0;
    scan(st->s, st->hold, t, 0, k, on_match, &e);
    if (e.rc == 0 && e.done < k)
        emit_raw(&e, k);
    if (e.rc < 0)
        return e.rc;
    st->covered = e.done > k ? e.done - k : 0;
    memmove(st->hold, st->hold + k, t - k);
    OPENSSL_cleanse(st->hold + t - k, k);
    st->held = t - k;
    st->hits += e.hits;
    if (st->first < 0)
        st->first = e.first;
    return 0;
}

int rl_scrub_stream_feed(struct rl_scrub_stream *st, const uint8_t *in, size_t n,
                         struct rl_buf *out)
{
    size_t keep = st->s->max_len ? st->s->max_len - 1 : 0, t = st->held, old = out->len, f;
    struct emitter e = {.out = out,
                        .a = st->hold,
                        .alen = t,
                        .b = in,
                        .done = st->covered,
                        .first = -1,
                        .s = st->s};

    if (st->failed)
        return AL_ERR_STATE;
    if (n == 0)
        return 0;
    if (t + n <= keep) { /* nothing is final by length alone */
        memcpy(st->hold + t, in, n);
        st->held += n;
        e.rc = stream_release(st, out);
        return e.rc < 0 ? stream_fail(st, out, old, e.rc) : 0;
    }
    f = t + n - keep; /* V[0..f) is final */
    if (t > 0) {      /* matches starting in the held bytes, through the stitch */
        size_t k = n < keep ? n : keep;
        memcpy(st->hold + t, in, k);
        scan(st->s, st->hold, t + k, 0, t < f ? t : f, on_match, &e);
    }
    e.base = t;
    if (e.rc == 0 && f > t)
        scan(st->s, in, n, 0, f - t, on_match, &e);
    if (e.rc == 0 && e.done < f)
        emit_raw(&e, f);
    if (e.rc < 0)
        return stream_fail(st, out, old, e.rc);
    st->covered = e.done - f;
    if (keep == 0) { /* an empty set holds nothing back */
    } else if (f <= t) {
        memmove(st->hold, st->hold + f, t - f);
        memcpy(st->hold + t - f, in, n);
    } else {
        memcpy(st->hold, in + (f - t), keep);
    }
    st->held = keep;
    st->hits += e.hits;
    if (st->first < 0)
        st->first = e.first;
    e.rc = stream_release(st, out);
    return e.rc < 0 ? stream_fail(st, out, old, e.rc) : 0;
}

int rl_scrub_stream_finish(struct rl_scrub_stream *st, struct rl_buf *out)
{
    size_t t = st->held, old = out->len;
    struct emitter e = {
        .out = out, .a = st->hold, .alen = t, .done = st->covered, .first = -1, .s = st->s};

    if (st->failed)
        return AL_ERR_STATE;
    if (t == 0)
        return 0;
    scan(st->s, st->hold, t, 0, t, on_match, &e);
    if (e.rc == 0 && e.done < t)
        emit_raw(&e, t);
    if (e.rc < 0)
        return stream_fail(st, out, old, e.rc);
    OPENSSL_cleanse(st->hold, st->cap);
    st->held = 0;
    st->covered = 0;
    st->hits += e.hits;
    if (st->first < 0)
        st->first = e.first;
    return 0;
}

size_t rl_scrub_stream_held(const struct rl_scrub_stream *st)
{
    return st->held;
}

unsigned long rl_scrub_stream_hits(const struct rl_scrub_stream *st)
{
    return st->hits;
}

long rl_scrub_stream_first(const struct rl_scrub_stream *st)
{
    return st->first;
}

void rl_scrub_stream_free(struct rl_scrub_stream *st)
{
    if (!st)
        return;
    al_wipe_free(st->hold);
    st->hold = NULL;
    al_wipe_free(st);
}
