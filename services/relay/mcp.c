/*
 * mcp: JSON-RPC request inspection, the Mcp-Method / Mcp-Name header rules
 * of MCP 2026-07-28, the allow-list question, gateway error bodies, and the
 * list-result rewriter the response filter uses (see mcp.h, mcp_json.h;
 * the filter object and the SSE parser are in mcp_sse.c).
 *
 * Requests are parsed twice: a small scanner of our own first (it bounds
 * nesting before jansson recurses and gives the id's exact JSON text), then
 * jansson with duplicate keys rejected at every depth. Responses are only
 * scanned: list results are edited in place, byte ranges cut out of the
 * original text, so everything kept (numbers, escapes, spacing) reaches the
 * agent exactly as the MCP server wrote it, and a response jansson would
 * refuse but a client accepts (duplicate keys, lone surrogates, huge
 * numbers, NaN) is still filtered.
 */
#include "mcp.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "al_err.h"
#include "mcp_json.h"

#define REQ_DEPTH_MAX  64 /* deepest request nesting accepted */
#define ERR_NAME_SHOWN 64 /* bytes of an item name quoted in an error */

/* ------------------------------------------------------------------ */
/* JSON scanning                                                        */
/* ------------------------------------------------------------------ */

enum { JS_OK = 0, JS_BAD, JS_DEEP };

static int is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t skip_ws(const uint8_t *p, size_t n, size_t i)
{
    while (i < n && is_ws(p[i]))
        i++;
    return i;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The string whose opening quote is p[i]: index after its closing quote,
 * or 0 when it is malformed or unterminated. Any \u escape is accepted
 * (lone surrogates included, as JSON.parse does); bytes >= 0x80 are not
 * checked here. */
static size_t scan_string(const uint8_t *p, size_t n, size_t i)
{
    for (i++; i < n; i++) {
        uint8_t c = p[i];
        /* most bytes are plain: skip runs of them */
        while (c >= 0x20 && c != '"' && c != '\\' && ++i < n)
            c = p[i];
        if (i >= n)
            return 0;
        if (c == '"')
            return i + 1;
        if (c < 0x20)
            return 0;
        if (c != '\\')
            continue;
        if (++i >= n)
            return 0;
        c = p[i];
        if (c == 'u') {
            if (n - i < 5)
                return 0;
            for (int k = 1; k <= 4; k++)
                if (hexval(p[i + k]) < 0)
                    return 0;
            i += 4;
        } else if (!(c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' ||
                     c == 'r' || c == 't')) {
            return 0;
        }
    }
    return 0;
}

static int word_at(const uint8_t *p, size_t n, size_t i, const char *w)
{
    size_t l = strlen(w);
    return n - i >= l && memcmp(p + i, w, l) == 0;
}

/* A number, true, false or null at p[i] (also NaN, Infinity, -Infinity
 * when lenient): index after it, or 0. */
static size_t scan_scalar(const uint8_t *p, size_t n, size_t i, int lenient)
{
    static const char *const words[] = {"true", "false", "null"};
    size_t d;

    for (size_t k = 0; k < sizeof words / sizeof words[0]; k++)
        if (word_at(p, n, i, words[k]))
            return i + strlen(words[k]);
    if (lenient && word_at(p, n, i, "NaN"))
        return i + 3;
    if (i < n && p[i] == '-')
        i++;
    if (lenient && word_at(p, n, i, "Infinity"))
        return i + 8;
    if (i >= n)
        return 0;
    if (p[i] == '0') {
        i++;
    } else if (p[i] >= '1' && p[i] <= '9') {
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
    } else {
        return 0;
    }
    if (i < n && p[i] == '.') {
        for (d = ++i; i < n && p[i] >= '0' && p[i] <= '9'; i++)
            ;
        if (i == d)
            return 0;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-'))
            i++;
        for (d = i; i < n && p[i] >= '0' && p[i] <= '9'; i++)
            ;
        if (i == d)
            return 0;
    }
    return i;
}

enum { ST_VALUE, ST_VALUE_OR_END, ST_KEY, ST_KEY_OR_END, ST_COLON, ST_AFTER };

/* One step of json_check() in a container or at the top: *st and *depth
 * advance; bits records which open containers are objects. */
static int check_step(const uint8_t *p, size_t n, size_t *ip, int *st, size_t *depth,
                      size_t maxdepth, uint8_t *bits, int lenient)
{
    size_t i = *ip, e;
    uint8_t c = p[i];
    int obj;

    switch (*st) {
    case ST_VALUE_OR_END:
    case ST_VALUE:
        if (*st == ST_VALUE_OR_END && c == ']') {
            (*depth)--;
            *st = ST_AFTER;
            e = i + 1;
        } else if (c == '{' || c == '[') {
            if (*depth >= maxdepth)
                return JS_DEEP;
            if (c == '{')
                bits[*depth / 8] |= (uint8_t)(1u << (*depth % 8));
            else
                bits[*depth / 8] &= (uint8_t) ~(1u << (*depth % 8));
            (*depth)++;
            *st = c == '{' ? ST_KEY_OR_END : ST_VALUE_OR_END;
            e = i + 1;
        } else {
            e = c == '"' ? scan_string(p, n, i) : scan_scalar(p, n, i, lenient);
            *st = ST_AFTER;
        }
        break;
    case ST_KEY_OR_END:
    case ST_KEY:
        if (*st == ST_KEY_OR_END && c == '}') {
            (*depth)--;
            *st = ST_AFTER;
            e = i + 1;
        } else {
            e = c == '"' ? scan_string(p, n, i) : 0;
            *st = ST_COLON;
        }
        break;
    case ST_COLON:
        e = c == ':' ? i + 1 : 0;
        *st = ST_VALUE;
        break;
    default: /* ST_AFTER inside a container */
        obj = (bits[(*depth - 1) / 8] >> ((*depth - 1) % 8)) & 1;
        e = i + 1;
        if (c == ',')
            *st = obj ? ST_KEY : ST_VALUE;
        else if (c == (obj ? '}' : ']'))
            (*depth)--;
        else
            e = 0;
        break;
    }
    if (e == 0)
        return JS_BAD;
    *ip = e;
    return JS_OK;
}

/* Is p[0..n) one JSON text (RFC 8259; lenient adds NaN and Infinity) with
 * at most maxdepth nested containers? bits has (maxdepth + 7) / 8 bytes.
 * Iterative: no recursion whatever the input. */
static int json_check(const uint8_t *p, size_t n, size_t maxdepth, uint8_t *bits, int lenient)
{
    size_t i = 0, depth = 0;
    int st = ST_VALUE, rc;

    for (;;) {
        i = skip_ws(p, n, i);
        if (st == ST_AFTER && depth == 0)
            return i == n ? JS_OK : JS_BAD;
        if (i >= n)
            return JS_BAD;
        rc = check_step(p, n, &i, &st, &depth, maxdepth, bits, lenient);
        if (rc != JS_OK)
            return rc;
    }
}

/* End of the value starting at p[i] in text json_check() accepted; n on
 * malformed input, so every loop over it still ends. */
static size_t skip_value(const uint8_t *p, size_t n, size_t i)
{
    size_t depth = 0, e;

    if (i >= n)
        return n;
    if (p[i] == '"') {
        e = scan_string(p, n, i);
        return e ? e : n;
    }
    if (p[i] != '{' && p[i] != '[') {
        while (i < n && !is_ws(p[i]) && p[i] != ',' && p[i] != ']' && p[i] != '}')
            i++;
        return i;
    }
    while (i < n) {
        uint8_t c = p[i];
        if (c == '"') {
            e = scan_string(p, n, i);
            if (!e)
                return n;
            i = e;
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth == 0)
                return i + 1;
        }
        i++;
    }
    return n;
}

/* A member of an object: key at p[key] (its opening quote), value
 * p[val..vend). */
struct member {
    size_t key, val, vend;
};

/* Next member of the object being walked; *ip starts just after '{'. */
static int obj_next(const uint8_t *p, size_t n, size_t *ip, struct member *m)
{
    size_t i = skip_ws(p, n, *ip), e;

    if (i < n && p[i] == ',')
        i = skip_ws(p, n, i + 1);
    if (i >= n || p[i] != '"')
        return 0;
    m->key = i;
    e = scan_string(p, n, i);
    if (!e)
        return 0;
    i = skip_ws(p, n, e);
    if (i >= n || p[i] != ':')
        return 0;
    m->val = skip_ws(p, n, i + 1);
    if (m->val >= n)
        return 0;
    m->vend = skip_value(p, n, m->val);
    *ip = m->vend;
    return 1;
}

/* Next element of the array being walked; *ip starts just after '['. */
static int arr_next(const uint8_t *p, size_t n, size_t *ip, size_t *s, size_t *e)
{
    size_t i = skip_ws(p, n, *ip);

    if (i < n && p[i] == ',')
        i = skip_ws(p, n, i + 1);
    if (i >= n || p[i] == ']')
        return 0;
    *s = i;
    *e = skip_value(p, n, i);
    *ip = *e;
    return 1;
}

enum { STR_NUL = 1, STR_SURROGATE = 2, STR_LONG = 4 };

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static uint32_t hex4(const uint8_t *p)
{
    return (uint32_t)(hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 | hexval(p[3]));
}

/* The escape at p[i] ('\\') of a well-formed string: its UTF-8 into tmp
 * (*sl bytes), flags for NUL and lone surrogates; returns its length. */
static size_t unescape(const uint8_t *p, size_t n, size_t i, char *tmp, size_t *sl, int *flags)
{
    static const char from[] = "bfnrt\"\\/", to[] = "\b\f\n\r\t\"\\/";
    const char *k = strchr(from, p[i + 1]);
    uint32_t cp, lo;

    *sl = 1;
    if (p[i + 1] != 'u') {
        tmp[0] = k && *k ? to[k - from] : (char)p[i + 1];
        return 2;
    }
    cp = hex4(p + i + 2);
    lo = n - i >= 12 && p[i + 6] == '\\' && p[i + 7] == 'u' ? hex4(p + i + 8) : 0;
    if (cp >= 0xD800 && cp <= 0xDBFF && lo >= 0xDC00 && lo <= 0xDFFF) {
        *sl = put_utf8(tmp, 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00));
        return 12;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) {
        *flags |= STR_SURROGATE;
        cp = 0xFFFD;
    }
    if (cp == 0)
        *flags |= STR_NUL;
    *sl = put_utf8(tmp, cp);
    return 6;
}

/* Decodes the (scanned, well-formed) string at p[i] into out (cap bytes,
 * NUL-terminated; cap >= 1). Returns flags: STR_NUL (contains U+0000),
 * STR_SURROGATE (an unpaired surrogate escape), STR_LONG (over cap - 1
 * bytes; out holds a prefix). */
static int decode_string(const uint8_t *p, size_t n, size_t i, char *out, size_t cap, size_t *len)
{
    size_t o = 0, w, sl;
    int flags = 0;
    char tmp[4];

    for (i++; i < n && p[i] != '"'; i += w) {
        const char *src = (const char *)p + i;
        w = sl = 1;
        if (p[i] == '\\') {
            w = unescape(p, n, i, tmp, &sl, &flags);
            src = tmp;
        }
        if ((flags & STR_LONG) || o + sl > cap - 1) {
            flags |= STR_LONG;
            continue;
        }
        memcpy(out + o, src, sl);
        o += sl;
    }
    out[o] = '\0';
    *len = o;
    return flags;
}

/* Does the key of m decode to exactly s? */
static int key_is(const uint8_t *p, size_t n, const struct member *m, const char *s)
{
    char k[32];
    size_t l;

    if (decode_string(p, n, m->key, k, sizeof k, &l) != 0)
        return 0;
    return l == strlen(s) && memcmp(k, s, l) == 0;
}

/* ------------------------------------------------------------------ */
/* UTF-8 as a WHATWG decoder reads it                                   */
/* ------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at p[i], or 0 (WHATWG's bounds:
 * no overlongs, no surrogates, nothing above U+10FFFF). *bad_len is the
 * number of bytes a decoder replaces by one U+FFFD when 0 is returned. */
static size_t utf8_seq(const uint8_t *p, size_t n, size_t i, size_t *bad_len)
{
    uint8_t b = p[i], lo = 0x80, hi = 0xBF;
    size_t need, k;

    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        lo = b == 0xE0 ? 0xA0 : 0x80;
        hi = b == 0xED ? 0x9F : 0xBF;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        lo = b == 0xF0 ? 0x90 : 0x80;
        hi = b == 0xF4 ? 0x8F : 0xBF;
    } else {
        *bad_len = 1;
        return 0;
    }
    for (k = 1; k <= need; k++) {
        if (i + k >= n || p[i + k] < lo || p[i + k] > hi) {
            *bad_len = k; /* the byte that broke it is read again */
            return 0;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

static int utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0, l, bad;
    uint64_t w;

    while (i < n) {
        /* ASCII eight bytes at a time */
        while (n - i >= 8 && (memcpy(&w, p + i, 8), (w & 0x8080808080808080ull) == 0))
            i += 8;
        if (i >= n)
            break;
        l = utf8_seq(p, n, i, &bad);
        if (!l)
            return 0;
        i += l;
    }
    return 1;
}

/* p[0..n) with every invalid sequence replaced by U+FFFD, into out. */
static int utf8_repair(const uint8_t *p, size_t n, struct rl_buf *out)
{
    size_t i = 0, l, bad;
    int rc = 0;

    while (i < n && rc == 0) {
        l = utf8_seq(p, n, i, &bad);
        if (l) {
            rc = rl_buf_append(out, p + i, l);
            i += l;
        } else {
            rc = rl_buf_append(out, "\xEF\xBF\xBD", 3);
            i += bad;
        }
    }
    return rc;
}

void rl_mcp_buf_clear(struct rl_buf *b)
{
    if (b->p && b->len)
        OPENSSL_cleanse(b->p, b->len);
    b->len = 0;
}

/* ------------------------------------------------------------------ */
/* JSON text out                                                        */
/* ------------------------------------------------------------------ */

/* Appends s[0..n) as the inside of a JSON string: quotes, backslashes,
 * controls, DEL and U+2028/2029 escaped, invalid UTF-8 as \ufffd. Stops
 * before the character whose text would take the output past max bytes;
 * *used (if not NULL) says how many bytes of s were written. */
static int json_escape_max(struct rl_buf *out, const char *s, size_t n, size_t max, size_t *used)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0, l, bad, in, put = 0;
    char e[8];
    const void *src;
    int rc = 0;

    while (i < n && rc == 0) {
        uint8_t c = p[i];
        src = e;
        in = 1;
        if (c == '"' || c == '\\') {
            e[0] = '\\';
            e[1] = (char)c;
            l = 2;
        } else if (c < 0x20 || c == 0x7F) {
            l = (size_t)snprintf(e, sizeof e, "\\u%04x", c);
        } else if (c < 0x80) {
            src = p + i;
            l = 1;
        } else if ((l = utf8_seq(p, n, i, &bad)) == 0) {
            memcpy(e, "\\ufffd", 6);
            l = 6;
            in = bad;
        } else if (l == 3 && c == 0xE2 && p[i + 1] == 0x80 &&
                   (p[i + 2] == 0xA8 || p[i + 2] == 0xA9)) {
            memcpy(e, p[i + 2] == 0xA8 ? "\\u2028" : "\\u2029", 6);
            in = 3;
            l = 6;
        } else {
            src = p + i;
            in = l;
        }
        if (put + l > max)
            break;
        rc = rl_buf_append(out, src, l);
        put += l;
        i += in;
    }
    if (used)
        *used = i;
    return rc;
}

static int json_escape(struct rl_buf *out, const char *s, size_t n)
{
    return json_escape_max(out, s, n, SIZE_MAX, NULL);
}

/* At most max bytes of s, cut on a UTF-8 character boundary. */
static size_t utf8_prefix(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    while (max > 0 && ((uint8_t)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

/* err = msg, cut (on a UTF-8 character boundary) to fit errn. */
static void set_err(char *err, size_t errn, const char *msg)
{
    if (err && errn) {
        size_t l = utf8_prefix(msg, strlen(msg), errn - 1);
        memcpy(err, msg, l);
        err[l] = '\0';
    }
}

/* ------------------------------------------------------------------ */
/* Requests                                                             */
/* ------------------------------------------------------------------ */

struct item_method {
    const char *method;
    enum rl_mcp_kind kind;
    const char *field;
};

static const struct item_method item_methods[] = {
    {"tools/call", RL_MCP_TOOL, "name"},
    {"prompts/get", RL_MCP_PROMPT, "name"},
    {"resources/read", RL_MCP_RESOURCE, "uri"},
    {"resources/subscribe", RL_MCP_RESOURCE, "uri"},
    {"resources/unsubscribe", RL_MCP_RESOURCE, "uri"},
};

static const char *const list_methods[] = {"tools/list", "prompts/list", "resources/list",
                                           "resources/templates/list"};

static int is_integer_text(const uint8_t *p, size_t n)
{
    size_t i = 0;

    if (i < n && p[i] == '-')
        i++;
    if (i >= n)
        return 0;
    if (p[i] == '0')
        return i + 1 == n;
    for (; i < n; i++)
        if (p[i] < '0' || p[i] > '9')
            return 0;
    return 1;
}

/* The raw text of the top-level "id" into out->id when it is a usable
 * request id (a string, or a number written as an integer) that fits.
 * Returns 1 if so, 0 if the id is absent, -1 if it is of the wrong type. */
static int read_id(const uint8_t *body, size_t n, json_t *id, struct rl_mcp_msg *out)
{
    struct member m;
    size_t i = skip_ws(body, n, 0) + 1;

    if (!id)
        return 0;
    if (!json_is_string(id) && !json_is_number(id))
        return -1;
    while (obj_next(body, n, &i, &m)) {
        size_t len = m.vend - m.val;
        if (!key_is(body, n, &m, "id"))
            continue;
        if (json_is_number(id) && !is_integer_text(body + m.val, len))
            return -1;
        if (len > RL_MCP_ID_MAX)
            return -1;
        memcpy(out->id, body + m.val, len);
        out->id[len] = '\0';
        return 1;
    }
    return -1;
}

static int only_known_members(json_t *root)
{
    static const char *const known[] = {"jsonrpc", "id", "method", "params", "result", "error"};
    const char *k;
    json_t *v;

    json_object_foreach(root, k, v)
    {
        size_t i;
        (void)v;
        for (i = 0; i < sizeof known / sizeof known[0]; i++)
            if (strcmp(k, known[i]) == 0)
                break;
        if (i == sizeof known / sizeof known[0])
            return 0;
    }
    return 1;
}

/* out->name = v (a string naming an item). NULL or a reason. */
static const char *take_name(json_t *v, enum rl_mcp_kind kind, struct rl_mcp_msg *out)
{
    size_t len = json_string_length(v);
    if (len == 0)
        return "the item name is empty";
    if (len > RL_MCP_NAME_MAX)
        return "the item name is too long";
    if (memchr(json_string_value(v), '\0', len))
        return "the item name contains a NUL character";
    memcpy(out->name, json_string_value(v), len + 1);
    out->target = kind;
    return NULL;
}

/* completion/complete asks the server to complete an argument of a prompt
 * (params.ref {"type": "ref/prompt", "name"}) or of a resource template
 * (params.ref {"type": "ref/resource", "uri"}): the completions come from
 * that item, so the item is what the allow-list is asked about. */
static const char *read_completion_ref(json_t *params, struct rl_mcp_msg *out)
{
    json_t *ref = params ? json_object_get(params, "ref") : NULL;
    json_t *type = ref ? json_object_get(ref, "type") : NULL;
    json_t *v;

    if (!json_is_object(ref) || !json_is_string(type))
        return "completion/complete needs params.ref with a type";
    if (strcmp(json_string_value(type), "ref/prompt") == 0) {
        if (!json_is_string(v = json_object_get(ref, "name")))
            return "params.ref.name must be a string";
        return take_name(v, RL_MCP_PROMPT, out);
    }
    if (strcmp(json_string_value(type), "ref/resource") == 0) {
        if (!json_is_string(v = json_object_get(ref, "uri")))
            return "params.ref.uri must be a string";
        return take_name(v, RL_MCP_RESOURCE, out);
    }
    return "params.ref.type must be ref/prompt or ref/resource";
}

/* The item a method acts on, from params. Returns NULL or a reason. */
static const char *read_item(json_t *params, struct rl_mcp_msg *out)
{
    const struct item_method *im = NULL;
    json_t *v;

    for (size_t i = 0; i < sizeof item_methods / sizeof item_methods[0]; i++)
        if (strcmp(out->method, item_methods[i].method) == 0)
            im = &item_methods[i];
    for (size_t i = 0; i < sizeof list_methods / sizeof list_methods[0]; i++)
        if (strcmp(out->method, list_methods[i]) == 0)
            out->is_list = 1;
    if (strcmp(out->method, "completion/complete") == 0)
        return read_completion_ref(params, out);
    if (!im)
        return NULL;
    v = params ? json_object_get(params, im->field) : NULL;
    if (!v)
        return im->kind == RL_MCP_RESOURCE ? "the method needs params.uri"
                                           : "the method needs params.name";
    if (!json_is_string(v))
        return im->kind == RL_MCP_RESOURCE ? "params.uri must be a string"
                                           : "params.name must be a string";
    return take_name(v, im->kind, out);
}

static const char *check_method(json_t *root, json_t *method, int idst, struct rl_mcp_msg *out)
{
    json_t *params = json_object_get(root, "params");
    const char *s;
    size_t len;

    if (json_object_get(root, "result") || json_object_get(root, "error"))
        return "a message with a method cannot carry result or error";
    if (!json_is_string(method))
        return "method must be a string";
    s = json_string_value(method);
    len = json_string_length(method);
    if (len == 0)
        return "method is empty";
    if (len > RL_MCP_METHOD_MAX)
        return "method is too long";
    for (size_t i = 0; i < len; i++)
        if ((uint8_t)s[i] < 0x21 || (uint8_t)s[i] > 0x7E)
            return "method must be printable ASCII without spaces";
    if (params && !json_is_object(params))
        return "params must be an object";
    if (idst < 0)
        return "id must be a string or an integer";
    memcpy(out->method, s, len + 1);
    out->type = idst > 0 ? RL_MCP_REQUEST : RL_MCP_NOTIFICATION;
    return read_item(params, out);
}

static const char *check_response(json_t *root, json_t *id, int idst, struct rl_mcp_msg *out)
{
    json_t *result = json_object_get(root, "result");
    json_t *error = json_object_get(root, "error");
    json_t *code, *msg;
    double c;

    if (json_object_get(root, "params"))
        return "params without a method";
    if (!result && !error)
        return "a message needs a method, a result or an error";
    if (result && error)
        return "a response cannot carry both result and error";
    if (result) {
        if (!json_is_object(result))
            return "result must be an object";
        if (idst <= 0)
            return "a result response needs a string or integer id";
    } else {
        if (!json_is_object(error))
            return "error must be an object";
        code = json_object_get(error, "code");
        msg = json_object_get(error, "message");
        c = json_is_number(code) ? json_number_value(code) : 0.5;
        if (!json_is_number(code) || c != floor(c) || fabs(c) > 9007199254740991.0)
            return "error.code must be an integer";
        if (!json_is_string(msg))
            return "error.message must be a string";
        if (idst < 0 && !json_is_null(id))
            return "id must be a string, an integer or null";
    }
    out->type = RL_MCP_RESPONSE;
    return NULL;
}

static const char *parse_root(const uint8_t *body, size_t n, json_t *root, struct rl_mcp_msg *out)
{
    json_t *v, *id, *method;
    int idst;

    if (json_is_array(root))
        return "JSON-RPC batches are not accepted";
    if (!json_is_object(root))
        return "the body is not a JSON-RPC message object";
    id = json_object_get(root, "id");
    idst = read_id(body, n, id, out);
    v = json_object_get(root, "jsonrpc");
    if (!json_is_string(v) || json_string_length(v) != 3 || memcmp(json_string_value(v), "2.0", 3))
        return "jsonrpc must be \"2.0\"";
    if (!only_known_members(root))
        return "unknown member in a JSON-RPC message";
    method = json_object_get(root, "method");
    if (method)
        return check_method(root, method, idst, out);
    return check_response(root, id, idst, out);
}

int rl_mcp_parse(const uint8_t *body, size_t n, struct rl_mcp_msg *out, char *err, size_t errn)
{
    uint8_t bits[(REQ_DEPTH_MAX + 7) / 8];
    json_error_t jerr;
    const char *why;
    json_t *root;
    int rc;

    memset(out, 0, sizeof *out);
    if (!body || n == 0) {
        set_err(err, errn, "empty body");
        return AL_ERR_INVAL;
    }
    rc = json_check(body, n, REQ_DEPTH_MAX, bits, 0);
    if (rc != JS_OK) {
        set_err(err, errn, rc == JS_DEEP ? "JSON nested too deeply" : "the body is not valid JSON");
        return AL_ERR_INVAL;
    }
    /* integers as reals: a number beyond int64 in the arguments is the MCP
     * server's business; the id's own text is checked by read_id() */
    root = json_loadb((const char *)body, n,
                      JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &jerr);
    if (!root) {
        /* never jerr.text: it quotes the body */
        set_err(err, errn,
                json_error_code(&jerr) == json_error_duplicate_key
                    ? "duplicate key in a JSON object"
                    : "the body is not valid JSON");
        return AL_ERR_INVAL;
    }
    why = parse_root(body, n, root, out);
    json_decref(root);
    if (why) {
        char id[RL_MCP_ID_MAX + 1];
        memcpy(id, out->id, sizeof id);
        memset(out, 0, sizeof *out);
        memcpy(out->id, id, sizeof id);
        set_err(err, errn, why);
        return AL_ERR_INVAL;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Mcp-Method / Mcp-Name                                                */
/* ------------------------------------------------------------------ */

/* Field value without surrounding SP/HTAB (RFC 9110 5.5). */
static void trim_ows(const char **v, size_t *len)
{
    while (*len && ((*v)[0] == ' ' || (*v)[0] == '\t')) {
        (*v)++;
        (*len)--;
    }
    while (*len && ((*v)[*len - 1] == ' ' || (*v)[*len - 1] == '\t'))
        (*len)--;
}

/* Only VCHAR, SP and HTAB (what the spec allows in these headers). */
static int header_chars_ok(const char *v, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)v[i];
        if (c != '\t' && (c < 0x20 || c > 0x7E))
            return 0;
    }
    return 1;
}

static int b64val(uint8_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Standard Base64 (padding optional, but correct if present) into out
 * (cap bytes). Returns the decoded length, or -1 (bad or longer than cap). */
static long b64_decode(const char *s, size_t len, uint8_t *out, size_t cap)
{
    size_t pad = 0, o = 0;
    uint32_t acc = 0;
    int bitsn = 0;

    while (pad < 2 && len > 0 && s[len - 1] == '=') {
        len--;
        pad++;
    }
    if (pad && (len + pad) % 4 != 0)
        return -1;
    if (len % 4 == 1)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64val((uint8_t)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bitsn += 6;
        if (bitsn >= 8) {
            bitsn -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (uint8_t)(acc >> bitsn);
            acc &= (1u << bitsn) - 1;
        }
    }
    return (long)o;
}

#define B64_PREFIX "=?base64?"
#define B64_SUFFIX "?="

static int check_name_header(const struct rl_mcp_msg *m, const char *v, size_t len, char *err,
                             size_t errn)
{
    size_t pl = strlen(B64_PREFIX), sl = strlen(B64_SUFFIX);
    uint8_t dec[RL_MCP_NAME_MAX];
    long dl;

    if (m->target == RL_MCP_NONE) {
        set_err(err, errn,
                "Mcp-Name header sent for a message that names no tool, resource or prompt");
        return AL_ERR_INVAL;
    }
    if (len >= pl + sl && memcmp(v, B64_PREFIX, pl) == 0 &&
        memcmp(v + len - sl, B64_SUFFIX, sl) == 0) {
        dl = b64_decode(v + pl, len - pl - sl, dec, sizeof dec);
        if (dl < 0) {
            set_err(err, errn, "Mcp-Name header has an invalid Base64 value");
            return AL_ERR_INVAL;
        }
        v = (const char *)dec;
        len = (size_t)dl;
    }
    if (len != strlen(m->name) || memcmp(v, m->name, len) != 0) {
        set_err(err, errn, "Mcp-Name header does not match the item named in the body");
        return AL_ERR_INVAL;
    }
    return 0;
}

int rl_mcp_check_headers(const struct rl_mcp_msg *m, const char *mcp_method, size_t method_len,
                         const char *mcp_name, size_t name_len, char *err, size_t errn)
{
    if (mcp_method) {
        trim_ows(&mcp_method, &method_len);
        if (!header_chars_ok(mcp_method, method_len)) {
            set_err(err, errn, "Mcp-Method header has invalid characters");
            return AL_ERR_INVAL;
        }
        if (m->method[0] == '\0') {
            set_err(err, errn, "Mcp-Method header sent with a message that has no method");
            return AL_ERR_INVAL;
        }
        if (method_len != strlen(m->method) || memcmp(mcp_method, m->method, method_len) != 0) {
            set_err(err, errn, "Mcp-Method header does not match the body's method");
            return AL_ERR_INVAL;
        }
    }
    if (mcp_name) {
        trim_ows(&mcp_name, &name_len);
        if (!header_chars_ok(mcp_name, name_len)) {
            set_err(err, errn, "Mcp-Name header has invalid characters");
            return AL_ERR_INVAL;
        }
        return check_name_header(m, mcp_name, name_len, err, errn);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Authorization and error bodies                                       */
/* ------------------------------------------------------------------ */

int rl_mcp_authorize(const struct rl_mcp_msg *m, rl_mcp_allow_cb allow, void *user, char *err,
                     size_t errn)
{
    static const char *const kinds[] = {"item", "tool", "resource", "prompt"};
    struct rl_buf b;
    size_t len, shown;
    int rc;

    if (m->target == RL_MCP_NONE)
        return 0;
    /* exactly 1: an error code from the callback is no permission */
    if (m->name[0] && allow(user, m->target, m->name) == 1)
        return 0;
    len = strlen(m->name);
    rl_buf_init(&b, 0);
    rc = rl_buf_printf(&b, "%s \"", kinds[m->target <= RL_MCP_PROMPT ? m->target : 0]);
    if (rc == 0) /* at most ERR_NAME_SHOWN bytes of quoted text */
        rc = json_escape_max(&b, m->name, len, ERR_NAME_SHOWN, &shown);
    if (rc == 0)
        rc = rl_buf_puts(&b, shown < len ? "...\" is not allowed" : "\" is not allowed");
    if (rc == 0)
        rc = rl_buf_append(&b, "", 1);
    set_err(err, errn, rc == 0 ? (const char *)b.p : "the item is not allowed");
    rl_buf_cleanup(&b);
    return AL_ERR_AUTH;
}

/* Is id the text of a JSON string or integer (what read_id() keeps)? */
static int id_text_ok(const char *id)
{
    const uint8_t *p = (const uint8_t *)id;
    size_t n = strlen(id);

    if (n == 0)
        return 0;
    if (p[0] == '"')
        return scan_string(p, n, 0) == n;
    return is_integer_text(p, n);
}

int rl_mcp_error_body(const struct rl_mcp_msg *m, int code, const char *message, struct rl_buf *out)
{
    size_t start = out->len;
    const char *id = m && id_text_ok(m->id) ? m->id : "null";
    int rc;

    rc = rl_buf_printf(out, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"error\":{\"code\":%d,\"message\":\"",
                       id, code);
    if (rc == 0)
        rc = json_escape(out, message ? message : "", message ? strlen(message) : 0);
    if (rc == 0)
        rc = rl_buf_puts(out, "\"}}");
    if (rc != 0) {
        OPENSSL_cleanse(out->p + start, out->len - start);
        out->len = start;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* List results                                                         */
/* ------------------------------------------------------------------ */

struct edit {
    size_t s, e;      /* t[s..e) is replaced */
    const char *repl; /* by this ("" = cut) */
};

struct rewrite {
    const uint8_t *t;
    size_t n;
    rl_mcp_allow_cb allow;
    void *user;
    unsigned long removed;
    struct edit *ed;
    size_t ned, cap;
    int nomem;
};

static void add_edit(struct rewrite *rw, size_t s, size_t e, const char *repl)
{
    if (rw->ned == rw->cap) {
        size_t cap = rw->cap ? rw->cap * 2 : 16;
        struct edit *ed = realloc(rw->ed, cap * sizeof *ed);
        if (!ed) {
            rw->nomem = 1;
            return;
        }
        rw->ed = ed;
        rw->cap = cap;
    }
    rw->ed[rw->ned].s = s;
    rw->ed[rw->ned].e = e;
    rw->ed[rw->ned].repl = repl;
    rw->ned++;
}

/* May the caller see the list element t[s..)? Every member named field
 * (duplicates included) must be a usable name the allow-list accepts. */
static int item_allowed(struct rewrite *rw, enum rl_mcp_kind kind, const char *field, size_t s)
{
    char name[RL_MCP_NAME_MAX + 1];
    struct member m;
    size_t i = s + 1, len;
    int seen = 0, ok = 1;

    if (rw->t[s] != '{')
        return 0;
    while (ok && obj_next(rw->t, rw->n, &i, &m)) {
        if (!key_is(rw->t, rw->n, &m, field))
            continue;
        seen = 1;
        if (rw->t[m.val] != '"' ||
            decode_string(rw->t, rw->n, m.val, name, sizeof name, &len) != 0 || len == 0)
            ok = 0;
        else
            ok = rw->allow(rw->user, kind, name) == 1;
    }
    OPENSSL_cleanse(name, sizeof name);
    return seen && ok;
}

/* Cuts the refused elements out of the array at t[a] ('['). A run of
 * refused elements j..k goes with the separator before it when an element
 * was kept before it, else with the separator after it, so what is left
 * is again a well-formed array with the original spacing. */
static void filter_list(struct rewrite *rw, enum rl_mcp_kind kind, const char *field, size_t a)
{
    size_t i = a + 1, s, e, prev_end = 0, run_start = 0, last_end = 0;
    int any_kept = 0, in_run = 0;

    while (arr_next(rw->t, rw->n, &i, &s, &e)) {
        if (item_allowed(rw, kind, field, s)) {
            if (in_run)
                add_edit(rw, any_kept ? prev_end : run_start, any_kept ? last_end : s, "");
            in_run = 0;
            any_kept = 1;
            prev_end = e;
        } else {
            if (!in_run)
                run_start = s;
            in_run = 1;
            rw->removed++;
        }
        last_end = e;
    }
    if (in_run)
        add_edit(rw, any_kept ? prev_end : run_start, last_end, "");
}

static const struct {
    const char *key;
    enum rl_mcp_kind kind;
    const char *field;
} list_keys[] = {
    {"tools", RL_MCP_TOOL, "name"},
    {"prompts", RL_MCP_PROMPT, "name"},
    {"resources", RL_MCP_RESOURCE, "uri"},
    {"resourceTemplates", RL_MCP_RESOURCE, "uriTemplate"},
};

/* A result object at t[r]: filter its lists; a filtered list is private to
 * this caller, so a cacheScope other than "private" becomes "private". */
static void rewrite_result(struct rewrite *rw, size_t r)
{
    char v[16];
    struct member m;
    size_t i = r + 1, len;
    int lists = 0;

    while (obj_next(rw->t, rw->n, &i, &m)) {
        for (size_t k = 0; k < sizeof list_keys / sizeof list_keys[0]; k++) {
            if (rw->t[m.val] == '[' && key_is(rw->t, rw->n, &m, list_keys[k].key)) {
                filter_list(rw, list_keys[k].kind, list_keys[k].field, m.val);
                lists = 1;
            }
        }
    }
    for (i = r + 1; lists && obj_next(rw->t, rw->n, &i, &m);) {
        if (!key_is(rw->t, rw->n, &m, "cacheScope"))
            continue;
        if (rw->t[m.val] == '"' && decode_string(rw->t, rw->n, m.val, v, sizeof v, &len) == 0 &&
            strcmp(v, "private") == 0)
            continue;
        add_edit(rw, m.val, m.vend, "\"private\"");
    }
}

/* A response object at t[o]: every member named result (all of them). */
static void rewrite_response(struct rewrite *rw, size_t o)
{
    struct member m;
    size_t i = o + 1;

    while (obj_next(rw->t, rw->n, &i, &m))
        if (rw->t[m.val] == '{' && key_is(rw->t, rw->n, &m, "result"))
            rewrite_result(rw, m.val);
}

static int edit_cmp(const void *a, const void *b)
{
    const struct edit *x = a, *y = b;
    return x->s < y->s ? -1 : x->s > y->s;
}

static int apply_edits(struct rewrite *rw, const uint8_t *prefix, size_t pl, struct rl_buf *out)
{
    size_t at = 0, start = out->len;
    int rc;

    qsort(rw->ed, rw->ned, sizeof *rw->ed, edit_cmp);
    rc = rl_buf_append(out, prefix, pl);
    for (size_t k = 0; k < rw->ned && rc == 0; k++) {
        rc = rl_buf_append(out, rw->t + at, rw->ed[k].s - at);
        if (rc == 0)
            rc = rl_buf_puts(out, rw->ed[k].repl);
        at = rw->ed[k].e;
    }
    if (rc == 0)
        rc = rl_buf_append(out, rw->t + at, rw->n - at);
    if (rc != 0) {
        OPENSSL_cleanse(out->p + start, out->len - start);
        out->len = start;
    }
    return rc;
}

static int rewrite_text(struct rewrite *rw, const uint8_t *prefix, size_t pl, struct rl_buf *out)
{
    size_t i, s, e, depth_bytes = rw->n / 16 + 1;
    uint8_t *bits = malloc(depth_bytes);
    int rc;

    if (!bits)
        return AL_ERR_NOMEM;
    /* a JSON text of n bytes nests at most n / 2 deep: no depth limit */
    rc = json_check(rw->t, rw->n, depth_bytes * 8, bits, 1);
    free(bits);
    if (rc != JS_OK)
        return 0;
    i = skip_ws(rw->t, rw->n, 0);
    if (rw->t[i] == '{') {
        rewrite_response(rw, i);
    } else if (rw->t[i] == '[') {
        /* a batch of responses (2025-03-26 allowed them; some clients
         * still read them) */
        for (i++; arr_next(rw->t, rw->n, &i, &s, &e);)
            if (rw->t[s] == '{')
                rewrite_response(rw, s);
    }
    if (rw->nomem)
        return AL_ERR_NOMEM;
    if (rw->ned == 0)
        return 0;
    rc = apply_edits(rw, prefix, pl, out);
    return rc < 0 ? rc : 1;
}

int rl_mcp_rewrite(const uint8_t *msg, size_t n, int bom, rl_mcp_allow_cb allow, void *user,
                   unsigned long *removed, struct rl_buf *out)
{
    struct rewrite rw = {.t = msg, .n = n, .allow = allow, .user = user};
    struct rl_buf fixed;
    size_t pl = 0;
    int rc;

    if (n == 0)
        return 0;
    if (bom && n >= 3 && memcmp(msg, "\xEF\xBB\xBF", 3) == 0)
        pl = 3;
    rw.t = msg + pl;
    rw.n = n - pl;
    rl_buf_init(&fixed, 0);
    if (!utf8_valid(rw.t, rw.n)) {
        /* read it as the agent's decoder will: invalid bytes as U+FFFD */
        rc = utf8_repair(rw.t, rw.n, &fixed);
        if (rc < 0)
            goto out;
        rw.t = fixed.p;
    }
    rw.n = rw.t == fixed.p ? fixed.len : rw.n;
    rc = rw.n ? rewrite_text(&rw, msg, pl, out) : 0;
    if (rc > 0)
        *removed += rw.removed;
out:
    free(rw.ed);
    rl_buf_cleanup(&fixed);
    return rc;
}
