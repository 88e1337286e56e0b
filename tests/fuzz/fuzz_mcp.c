/*
 * libFuzzer target: relay mcp (request parsing, header checks, authorize,
 * error bodies, and the response filter in JSON and SSE modes).
 *
 * Input: byte 0 picks the mode (% 3), bytes 1-2 seed the chunking (the
 * largest chunk is byte 1 % 64 + 1 bytes, sizes drawn from a PRNG seeded by
 * bytes 1-2), the rest is the payload.
 *   0  payload = a POST body. rl_mcp_parse() must give a self-consistent
 *      message; its own method and name (plain or Base64) must pass
 *      rl_mcp_check_headers(); rl_mcp_authorize() must agree with the
 *      allow-list; rl_mcp_error_body() must be valid JSON carrying the id.
 *   1  payload = a JSON response body; 2  payload = a text/event-stream.
 *      The filter's output must not depend on the chunking (same return
 *      code; same bytes when it succeeds), and no message a client can
 *      read from the output -- each event of a WHATWG parse of it in SSE
 *      mode -- may be a list result holding a refused item (checked
 *      wherever jansson reads the message, duplicate keys taken last-wins
 *      as JavaScript does) or a list result left cacheable as "public".
 *      A response without "result" in it passes byte for byte.
 * Any violated invariant abort()s.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "al_err.h"
#include "mcp.h"
#include "rlbuf.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

#define MAX_MSG 8192

/* Refuses every name containing "x" (a common byte, so the fuzzer meets
 * both answers often). */
static int allow_cb(void *user, enum rl_mcp_kind kind, const char *name)
{
    (void)user;
    CHECK(kind == RL_MCP_TOOL || kind == RL_MCP_RESOURCE || kind == RL_MCP_PROMPT);
    CHECK(strlen(name) > 0 && strlen(name) <= RL_MCP_NAME_MAX);
    return strchr(name, 'x') == NULL;
}

static int printable_ascii(const char *s)
{
    for (; *s; s++)
        if ((uint8_t)*s < 0x20 || (uint8_t)*s > 0x7E)
            return 0;
    return 1;
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i;
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64chars[v >> 18];
        out[o++] = b64chars[(v >> 12) & 63];
        out[o++] = b64chars[(v >> 6) & 63];
        out[o++] = b64chars[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64chars[v >> 18];
        out[o++] = b64chars[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64chars[v >> 18];
        out[o++] = b64chars[(v >> 12) & 63];
        out[o++] = b64chars[(v >> 6) & 63];
        out[o++] = '=';
    }
    return o;
}

/* ---- mode 0: requests ---- */

static void fuzz_request(const uint8_t *p, size_t n)
{
    struct rl_mcp_msg m;
    char err[256], enc[2 * RL_MCP_NAME_MAX + 32];
    struct rl_buf b;
    int rc = rl_mcp_parse(p, n, &m, err, sizeof err);
    json_t *j;

    CHECK(rc == 0 || rc == AL_ERR_INVAL);
    if (rc != 0) {
        CHECK(err[0] && printable_ascii(err));
        CHECK(m.method[0] == '\0' && m.name[0] == '\0' && m.target == RL_MCP_NONE);
    } else {
        CHECK(m.type >= RL_MCP_REQUEST && m.type <= RL_MCP_RESPONSE);
        CHECK(strlen(m.method) <= RL_MCP_METHOD_MAX);
        CHECK((m.type == RL_MCP_RESPONSE) == (m.method[0] == '\0'));
        CHECK((m.type == RL_MCP_REQUEST) == (m.id[0] != '\0') || m.type == RL_MCP_RESPONSE);
        if (m.target != RL_MCP_NONE) {
            size_t l = strlen(m.name);
            CHECK(l > 0 && l <= RL_MCP_NAME_MAX);
        } else {
            CHECK(m.name[0] == '\0');
        }
        /* its own values always pass the header check */
        CHECK(rl_mcp_check_headers(&m, m.type == RL_MCP_RESPONSE ? NULL : m.method,
                                   strlen(m.method), NULL, 0, err, sizeof err) == 0);
        if (m.target != RL_MCP_NONE) {
            size_t l = strlen(m.name);
            memcpy(enc, "=?base64?", 9);
            size_t el = 9 + b64((const uint8_t *)m.name, l, enc + 9);
            memcpy(enc + el, "?=", 2);
            CHECK(rl_mcp_check_headers(&m, NULL, 0, enc, el + 2, err, sizeof err) == 0);
            rc = rl_mcp_check_headers(&m, NULL, 0, m.name, l, err, sizeof err);
            if (printable_ascii(m.name) && m.name[0] != ' ' && m.name[l - 1] != ' ' &&
                !(l >= 11 && memcmp(m.name, "=?base64?", 9) == 0 &&
                  memcmp(m.name + l - 2, "?=", 2) == 0))
                CHECK(rc == 0);
            rc = rl_mcp_authorize(&m, allow_cb, NULL, err, sizeof err);
            CHECK(rc == (strchr(m.name, 'x') ? AL_ERR_AUTH : 0));
            if (rc)
                CHECK(strlen(err) <= strlen("resource \"...\" is not allowed") + 64 &&
                      !strchr(err, '\n') && !strchr(err, '\r'));
        } else {
            CHECK(rl_mcp_check_headers(&m, NULL, 0, "a", 1, err, sizeof err) == AL_ERR_INVAL);
            CHECK(rl_mcp_authorize(&m, allow_cb, NULL, err, sizeof err) == 0);
        }
    }
    /* arbitrary header bytes never crash, and never match without a body item */
    rc = rl_mcp_check_headers(&m, (const char *)p, n < 200 ? n : 200, (const char *)p,
                              n < 1500 ? n : 1500, err, sizeof err);
    CHECK(rc == 0 || rc == AL_ERR_INVAL);
    /* the error reply is JSON and carries the id */
    rl_buf_init(&b, 0);
    CHECK(rl_mcp_error_body(&m, RL_MCP_ERR_INVALID, m.name, &b) == 0);
    j = json_loadb((const char *)b.p, b.len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL,
                   NULL);
    CHECK(j);
    CHECK(json_is_object(json_object_get(j, "error")));
    CHECK(m.id[0] ? !json_is_null(json_object_get(j, "id"))
                  : json_is_null(json_object_get(j, "id")));
    json_decref(j);
    rl_buf_cleanup(&b);
}

/* ---- modes 1 and 2: the filter ---- */

struct rng {
    uint32_t s;
};

static uint32_t next_rand(struct rng *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 17;
    r->s ^= r->s << 5;
    return r->s;
}

/* Runs the filter; maxchunk == 0 means one call. */
static int run(int sse, const uint8_t *p, size_t n, uint32_t seed, size_t maxchunk,
               struct rl_buf *out)
{
    struct rl_mcp_filter *f;
    struct rng r = {seed ? seed : 1};
    size_t at = 0;
    int rc = 0;

    CHECK(rl_mcp_filter_new(sse, allow_cb, NULL, MAX_MSG, &f) == 0);
    while (at < n && rc == 0) {
        size_t c = maxchunk ? next_rand(&r) % maxchunk + 1 : n - at;
        if (c > n - at)
            c = n - at;
        rc = rl_mcp_filter_feed(f, p + at, c, out);
        at += c;
    }
    if (rc == 0)
        rc = rl_mcp_filter_finish(f, out);
    else
        CHECK(rl_mcp_filter_finish(f, out) == AL_ERR_STATE); /* unusable after an error */
    rl_mcp_filter_free(f);
    return rc;
}

/* Reads bytes as a WHATWG decoder does: invalid UTF-8 becomes U+FFFD. */
static char *utf8_fix(const uint8_t *p, size_t n, size_t *outn)
{
    char *o = malloc(n * 3 + 1);
    size_t i = 0, k = 0;
    CHECK(o);
    while (i < n) {
        uint8_t b = p[i];
        size_t need = 0, j;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b < 0x80) {
            o[k++] = (char)b;
            i++;
            continue;
        }
        if (b >= 0xC2 && b <= 0xDF)
            need = 1;
        else if (b >= 0xE0 && b <= 0xEF)
            need = 2, lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
        else if (b >= 0xF0 && b <= 0xF4)
            need = 3, lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
        for (j = 1; need && j <= need; j++) {
            if (i + j >= n || p[i + j] < lo || p[i + j] > hi)
                break;
            lo = 0x80, hi = 0xBF;
        }
        if (need && j > need) {
            memcpy(o + k, p + i, need + 1);
            k += need + 1;
            i += need + 1;
        } else {
            memcpy(o + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i += need ? j : 1;
        }
    }
    *outn = k;
    return o;
}

static const struct {
    const char *key, *field;
} lists[] = {{"tools", "name"},
             {"prompts", "name"},
             {"resources", "uri"},
             {"resourceTemplates", "uriTemplate"}};

static void check_response(json_t *j)
{
    json_t *r = json_object_get(j, "result");
    int any = 0;

    if (!json_is_object(r))
        return;
    for (size_t k = 0; k < sizeof lists / sizeof lists[0]; k++) {
        json_t *a = json_object_get(r, lists[k].key), *it;
        size_t i;
        if (!json_is_array(a))
            continue;
        any = 1;
        json_array_foreach(a, i, it)
        {
            json_t *name = json_object_get(it, lists[k].field);
            CHECK(json_is_string(name));
            CHECK(json_string_length(name) == strlen(json_string_value(name)));
            CHECK(json_string_length(name) > 0 && json_string_length(name) <= RL_MCP_NAME_MAX);
            CHECK(strchr(json_string_value(name), 'x') == NULL);
        }
    }
    if (any && json_object_get(r, "cacheScope"))
        CHECK(json_is_string(json_object_get(r, "cacheScope")) &&
              strcmp(json_string_value(json_object_get(r, "cacheScope")), "private") == 0);
}

/* No list result a client reads from msg shows a refused item. */
static void check_message(const uint8_t *p, size_t n, int bom)
{
    size_t fn;
    char *fixed;
    json_t *j;

    if (bom && n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) {
        p += 3;
        n -= 3;
    }
    /* jansson skips raw NUL bytes (its reader takes one for "refill");
     * JSON.parse and every other client refuse such a text */
    if (n == 0 || memchr(p, 0, n))
        return;
    fixed = utf8_fix(p, n, &fn);
    /* no JSON_REJECT_DUPLICATES: the last duplicate wins, as in JS */
    j = json_loadb(fixed, fn, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, NULL);
    free(fixed);
    if (!j)
        return;
    if (json_is_array(j)) {
        size_t i;
        json_t *e;
        json_array_foreach(j, i, e) check_response(e);
    } else {
        check_response(j);
    }
    json_decref(j);
}

/* A line end at p[i] (its length, or 0): CR, LF, CRLF; when wide, also
 * what Python's str.splitlines() splits at. */
static size_t eol_at(const uint8_t *p, size_t n, size_t i, int wide)
{
    if (p[i] == '\r')
        return i + 1 < n && p[i + 1] == '\n' ? 2 : 1;
    if (p[i] == '\n')
        return 1;
    if (!wide)
        return 0;
    if (p[i] == 0x0B || p[i] == 0x0C || (p[i] >= 0x1C && p[i] <= 0x1E))
        return 1;
    if (p[i] == 0xC2 && i + 1 < n && p[i + 1] == 0x85)
        return 2;
    if (p[i] == 0xE2 && i + 2 < n && p[i + 1] == 0x80 && (p[i + 2] == 0xA8 || p[i + 2] == 0xA9))
        return 3;
    return 0;
}

/* An event-stream parse of the output (WHATWG, or wide: as splitlines()
 * clients read it); every event's data (and an unterminated last one's)
 * is checked. */
static void check_sse(const uint8_t *p, size_t n, int wide)
{
    struct rl_buf data;
    size_t i = 0;
    int any = 0;

    rl_buf_init(&data, 0);
    if (n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        i = 3;
    while (i <= n) {
        size_t s = i, e, el = 0;
        while (i < n && (el = eol_at(p, n, i, wide)) == 0)
            i++;
        e = i;
        if (el > 1)
            i += el - 1;
        if (e == s) { /* blank line, or the end */
            if (any)
                check_message(data.p, data.len ? data.len - 1 : 0, 0);
            rl_buf_reset(&data);
            any = 0;
        } else if (p[s] != ':') {
            size_t c = s;
            while (c < e && p[c] != ':')
                c++;
            if (c - s == 4 && memcmp(p + s, "data", 4) == 0) {
                size_t v = c < e ? c + 1 : e;
                if (v < e && p[v] == ' ')
                    v++;
                CHECK(rl_buf_append(&data, p + v, e - v) == 0);
                CHECK(rl_buf_append(&data, "\n", 1) == 0);
                any = 1;
            }
        }
        if (i >= n) {
            if (any)
                check_message(data.p, data.len - 1, 0);
            break;
        }
        i++;
    }
    rl_buf_cleanup(&data);
}

static void fuzz_filter(int sse, const uint8_t *p, size_t n, uint32_t seed, size_t maxchunk)
{
    struct rl_buf one, many;
    int rc1, rc2;

    rl_buf_init(&one, 0);
    rl_buf_init(&many, 0);
    rc1 = run(sse, p, n, seed, 0, &one);
    rc2 = run(sse, p, n, seed, maxchunk, &many);
    CHECK(rc1 == 0 || rc1 == AL_ERR_TOOBIG);
    CHECK(rc1 == rc2);
    if (rc1 == 0) {
        CHECK(one.len == many.len && (one.len == 0 || memcmp(one.p, many.p, one.len) == 0));
        if (!memmem(p, n, "result", 6) && !memmem(p, n, "\\u", 2))
            CHECK(one.len == n && (n == 0 || memcmp(one.p, p, n) == 0));
        if (sse) {
            check_sse(one.p, one.len, 0);
            check_sse(one.p, one.len, 1);
        } else
            check_message(one.p, one.len, 1);
    }
    rl_buf_cleanup(&one);
    rl_buf_cleanup(&many);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    int mode = data[0] % 3;
    uint32_t seed = (uint32_t)data[1] << 8 | data[2];
    size_t maxchunk = data[1] % 64 + 1;
    data += 3;
    size -= 3;
    if (mode == 0)
        fuzz_request(data, size);
    else
        fuzz_filter(mode == 2, data, size, seed, maxchunk);
    return 0;
}
