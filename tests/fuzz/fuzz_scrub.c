/*
 * libFuzzer target: the credential scrubber (services/relay/scrub.c).
 *
 * One fixed canary value (it needs JSON and URL escaping and is not ASCII)
 * is loaded into a scrub set. The input is:
 *   byte 0          k = byte % 16, the number of chunk lengths that follow
 *   k bytes         chunk lengths, used in a cycle to split the document
 *   the rest        a document template: byte 0x01 followed by a selector
 *                   byte inserts an encoded form of the canary (whole, or cut
 *                   short when the selector's top bit is set); a base64 form
 *                   takes its 0-2 preceding bytes from the template, so the
 *                   canary lands at any alignment; every other byte is copied.
 * Checks (any violation abort()s):
 *   - the document streamed in those chunks (empty ones too) scrubs to the
 *     same bytes and the same hit count as rl_scrub_copy() of the whole;
 *   - a stream never holds back more than max_len - 1 bytes;
 *   - no form of the canary, computed here with independent encoders
 *     (jansson for JSON), occurs in the output, and rl_scrub_contains()
 *     finds nothing in it either.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "rlbuf.h"
#include "scrub.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

#define MAX_DOC   65536
#define MAX_FORMS 32
#define MAX_FORM  256

/* no '[' or ']': no form can then be made of a mark and its neighbours */
static const uint8_t CANARY[] = "fz/K+q\"9\\ x~Z\x01\xc3\xa9-tok";
#define CANARY_LEN (sizeof(CANARY) - 1)

struct form {
    uint8_t b[MAX_FORM];
    size_t len;
};

static struct rl_scrub *set;
static struct form forms[MAX_FORMS]; /* inserted by the template */
static size_t nforms;
static struct form checks[MAX_FORMS]; /* must not survive */
static size_t nchecks;

static struct form *push(struct form *list, size_t *n)
{
    CHECK(*n < MAX_FORMS);
    list[*n].len = 0;
    return &list[(*n)++];
}

static void put(struct form *f, const void *d, size_t n)
{
    CHECK(f->len + n <= MAX_FORM);
    memcpy(f->b + f->len, d, n);
    f->len += n;
}

static void hex(struct form *f, const uint8_t *v, size_t n, const char *digits)
{
    for (size_t i = 0; i < n; i++) {
        put(f, &digits[v[i] >> 4], 1);
        put(f, &digits[v[i] & 15], 1);
    }
}

static void pct(struct form *f, const uint8_t *v, size_t n, int all, const char *digits)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = v[i];
        int raw = !all && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                           (c >= '0' && c <= '9') || (c && strchr("-._~", c)));
        if (raw) {
            put(f, &c, 1);
        } else {
            put(f, "%", 1);
            hex(f, &c, 1, digits);
        }
    }
}

static void b64(struct form *f, const uint8_t *v, size_t n, const char *alpha, int pad)
{
    for (size_t i = 0; i < n; i += 3) {
        uint32_t w = 0;
        size_t k = n - i < 3 ? n - i : 3;
        for (size_t j = 0; j < 3; j++)
            w = (w << 8) | (i + j < n ? v[i + j] : 0u);
        for (size_t j = 0; j <= k; j++)
            put(f, &alpha[(w >> (18 - 6 * j)) & 63], 1);
        for (size_t j = k + 1; pad && j < 4; j++)
            put(f, "=", 1);
    }
}

static void json(struct form *f, const uint8_t *v, size_t n, size_t flags)
{
    json_t *j = json_stringn((const char *)v, n);
    char *d;

    CHECK(j);
    d = json_dumps(j, JSON_ENCODE_ANY | flags);
    CHECK(d);
    put(f, d + 1, strlen(d) - 2);
    free(d);
    json_decref(j);
}

static const char STD[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The base64 characters that depend only on the canary, at alignment a. */
static void b64_core(struct form *f, size_t a, const char *alpha)
{
    uint8_t z[CANARY_LEN + 2] = {0};
    struct form all = {.len = 0};
    size_t from = (4 * a + 2) / 3, to = 8 * (a + CANARY_LEN) / 6;

    memcpy(z + a, CANARY, CANARY_LEN);
    b64(&all, z, a + CANARY_LEN, alpha, 0);
    put(f, all.b + from, to - from);
}

static void setup(void)
{
    CHECK(rl_scrub_new(&set) == 0);
    CHECK(rl_scrub_add(set, CANARY, CANARY_LEN) == 0);
    /* inserted whole (base64 ones get their leading bytes from the input) */
    put(push(forms, &nforms), CANARY, CANARY_LEN);
    hex(push(forms, &nforms), CANARY, CANARY_LEN, "0123456789abcdef");
    hex(push(forms, &nforms), CANARY, CANARY_LEN, "0123456789ABCDEF");
    pct(push(forms, &nforms), CANARY, CANARY_LEN, 0, "0123456789ABCDEF");
    pct(push(forms, &nforms), CANARY, CANARY_LEN, 0, "0123456789abcdef");
    pct(push(forms, &nforms), CANARY, CANARY_LEN, 1, "0123456789ABCDEF");
    json(push(forms, &nforms), CANARY, CANARY_LEN, 0);
    json(push(forms, &nforms), CANARY, CANARY_LEN, JSON_ESCAPE_SLASH);
    json(push(forms, &nforms), CANARY, CANARY_LEN, JSON_ENSURE_ASCII);
    /* checked: the same, and the base64 cores at every alignment */
    for (size_t i = 0; i < nforms; i++)
        checks[nchecks++] = forms[i];
    for (size_t a = 0; a < 3; a++) {
        b64_core(push(checks, &nchecks), a, STD);
        b64_core(push(checks, &nchecks), a, URL);
    }
}

/* Expands the template into doc; returns its length. */
static size_t expand(const uint8_t *t, size_t n, uint8_t *doc)
{
    size_t len = 0;

    for (size_t i = 0; i < n; i++) {
        if (t[i] != 0x01 || i + 1 >= n) {
            if (len < MAX_DOC)
                doc[len++] = t[i];
            continue;
        }
        uint8_t sel = t[++i];
        struct form f = {.len = 0};
        size_t kinds = nforms + 4, k = (sel & 0x7f) % kinds;
        if (k < nforms) {
            f = forms[k];
        } else { /* base64 of (up to 2 template bytes ‖ canary ‖ next template byte) */
            uint8_t z[CANARY_LEN + 3];
            size_t lead = (k - nforms) % 3, zl = 0;
            for (size_t j = 0; j < lead && i + 1 < n; j++)
                z[zl++] = t[++i];
            memcpy(z + zl, CANARY, CANARY_LEN);
            zl += CANARY_LEN;
            if (i + 1 < n && (sel & 0x40))
                z[zl++] = t[++i];
            b64(&f, z, zl, (k - nforms) == 3 ? URL : STD, sel & 0x20);
        }
        if (sel & 0x80) /* cut short */
            f.len = f.len * (size_t)(sel & 0x0f) / 16;
        if (f.len > MAX_DOC - len)
            f.len = MAX_DOC - len;
        memcpy(doc + len, f.b, f.len);
        len += f.len;
    }
    return len;
}

static int has(const uint8_t *hay, size_t hn, const uint8_t *needle, size_t nn)
{
    for (size_t i = 0; i + nn <= hn; i++)
        if (memcmp(hay + i, needle, nn) == 0)
            return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t doc[MAX_DOC];
    const uint8_t *cuts;
    size_t ncuts, len, at = 0, ci = 0, idle = 0, keep;
    struct rl_buf one, str;
    struct rl_scrub_stream *st = NULL;
    long hits;

    if (!set)
        setup();
    if (size < 1)
        return 0;
    ncuts = data[0] % 16;
    if (ncuts > size - 1)
        ncuts = size - 1;
    cuts = data + 1;
    len = expand(data + 1 + ncuts, size - 1 - ncuts, doc);
    keep = rl_scrub_max_len(set) - 1;

    rl_buf_init(&one, 0);
    rl_buf_init(&str, 0);
    hits = rl_scrub_copy(set, doc, len, &one);
    CHECK(hits >= 0);

    CHECK(rl_scrub_stream_new(set, &st) == 0);
    while (at < len) {
        size_t n = ncuts ? cuts[ci++ % ncuts] : len;
        idle = n ? 0 : idle + 1;
        if (idle > ncuts) /* a cycle of empty chunks: feed the rest */
            n = len;
        if (n > len - at)
            n = len - at;
        CHECK(rl_scrub_stream_feed(st, doc + at, n, &str) == 0);
        CHECK(rl_scrub_stream_held(st) <= keep);
        at += n;
    }
    CHECK(rl_scrub_stream_feed(st, doc, 0, &str) == 0);
    CHECK(rl_scrub_stream_finish(st, &str) == 0);
    CHECK(rl_scrub_stream_held(st) == 0);
    CHECK((long)rl_scrub_stream_hits(st) == hits);
    rl_scrub_stream_free(st);

    CHECK(one.len == str.len && (one.len == 0 || memcmp(one.p, str.p, one.len) == 0));
    for (size_t i = 0; i < nchecks; i++)
        CHECK(!has(one.p, one.len, checks[i].b, checks[i].len));
    CHECK(!rl_scrub_contains(set, one.p, one.len));
    rl_buf_cleanup(&one);
    rl_buf_cleanup(&str);
    return 0;
}
