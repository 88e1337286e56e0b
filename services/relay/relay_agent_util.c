/*
 * relay_agent_util: routes, header rules, Origin checks, request ids and
 * relay-made JSON-RPC errors for the agent side; see relay_agent_util.h.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>

#include "al_base64.h"
#include "al_err.h"
#include "mcp.h"
#include "relay_agent_util.h"

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

int rl_name_valid(const char *s, size_t n)
{
    if (!s || n == 0 || n > RL_NAME_MAX)
        return 0;
    if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!name_char(s[i]))
            return 0;
    return 1;
}

/* 1 when seg[0..n) is "." or "..", also percent-encoded (%2e / %2E). */
static int dot_segment(const char *seg, size_t n)
{
    size_t dots = 0, i = 0;

    while (i < n) {
        if (seg[i] == '.') {
            i++;
        } else if (n - i >= 3 && seg[i] == '%' && seg[i + 1] == '2' &&
                   (seg[i + 2] == 'e' || seg[i + 2] == 'E')) {
            i += 3;
        } else {
            return 0;
        }
        dots++;
    }
    return dots == 1 || dots == 2;
}

/* 1 when seg[0..n) holds a percent-encoded '/' or '\\', or a raw '\\':
 * either would hide a segment boundary from the dot-segment check (some
 * servers treat a backslash as a slash). */
static int hidden_separator(const char *seg, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        if (seg[j] == '\\')
            return 1;
        if (seg[j] == '%' && j + 2 < n &&
            ((seg[j + 1] == '2' && (seg[j + 2] == 'f' || seg[j + 2] == 'F')) ||
             (seg[j + 1] == '5' && (seg[j + 2] == 'c' || seg[j + 2] == 'C'))))
            return 1;
    }
    return 0;
}

/* The part after the route: "", "/..." or "?...". */
static int rest_valid(const char *r, size_t n)
{
    const char *q = memchr(r, '?', n);
    size_t plen = q ? (size_t)(q - r) : n;
    size_t i = 0;

    if (n && r[0] != '/' && r[0] != '?')
        return 0;
    if (memchr(r, '#', n))
        return 0; /* a fragment never belongs in a request target */
    while (i < plen) {
        size_t start = ++i; /* skip '/' */
        while (i < plen && r[i] != '/')
            i++;
        if (dot_segment(r + start, i - start) || hidden_separator(r + start, i - start))
            return 0;
    }
    return 1;
}

int rl_route_parse(const char *target, size_t len, struct rl_route *out)
{
    static const char prefix[] = "/mcp/";
    const char *t, *s, *end = target + len, *p;
    size_t tl, sl;

    memset(out, 0, sizeof(*out));
    if (!target || len < sizeof(prefix) - 1 || memcmp(target, prefix, sizeof(prefix) - 1) != 0)
        return AL_ERR_NOTFOUND;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)target[i] < 0x21 || (unsigned char)target[i] > 0x7e)
            return AL_ERR_NOTFOUND;
    t = target + sizeof(prefix) - 1;
    p = t;
    while (p < end && *p != '/')
        p++;
    tl = (size_t)(p - t);
    if (p == end || !rl_name_valid(t, tl))
        return AL_ERR_NOTFOUND;
    s = ++p;
    while (p < end && *p != '/' && *p != '?')
        p++;
    sl = (size_t)(p - s);
    if (!rl_name_valid(s, sl))
        return AL_ERR_NOTFOUND;
    memcpy(out->tunnel, t, tl);
    memcpy(out->server, s, sl);
    snprintf(out->route, sizeof(out->route), "%s/%s", out->tunnel, out->server);
    return rest_valid(p, (size_t)(end - p)) ? 0 : AL_ERR_INVAL;
}

static int name_is(const char *name, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && memcmp(name, lit, l) == 0;
}

static int name_starts(const char *name, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n >= l && memcmp(name, lit, l) == 0;
}

static int hop_by_hop(const char *name, size_t n)
{
    return name_is(name, n, "connection") || name_is(name, n, "keep-alive") ||
           name_is(name, n, "te") || name_is(name, n, "transfer-encoding") ||
           name_is(name, n, "upgrade") || name_is(name, n, "http2-settings") ||
           name_starts(name, n, "proxy-");
}

int rl_req_header_dropped(const char *name, size_t n)
{
    return hop_by_hop(name, n) || name_is(name, n, "authorization") ||
           name_starts(name, n, "airlock-") || name_is(name, n, "forwarded") ||
           name_starts(name, n, "x-forwarded-") || name_is(name, n, "x-real-ip") ||
           name_is(name, n, "via") || name_is(name, n, "host") || name_is(name, n, "expect");
}

int rl_hdr_token_listed(const char *list, size_t list_len, const char *name, size_t n)
{
    size_t i = 0;

    while (i < list_len) {
        while (i < list_len && (list[i] == ' ' || list[i] == '\t' || list[i] == ','))
            i++;
        size_t start = i;
        while (i < list_len && list[i] != ',')
            i++;
        size_t e = i;
        while (e > start && (list[e - 1] == ' ' || list[e - 1] == '\t'))
            e--;
        if (e - start == n && n > 0 && strncasecmp(list + start, name, n) == 0)
            return 1;
    }
    return 0;
}

int rl_resp_header_dropped(const char *name, size_t n)
{
    if (n == 0 || name[0] == ':')
        return 1;
    if (name_starts(name, n, "airlock-"))
        return !name_is(name, n, "airlock-error");
    return hop_by_hop(name, n) || name_is(name, n, "trailer") || name_is(name, n, "alt-svc") ||
           name_is(name, n, "x-request-id") || name_starts(name, n, "access-control-");
}

int rl_origin_allowed(const char *const *allowed, const char *origin, size_t n)
{
    if (!allowed || !origin || n == 0 || n > RL_ORIGIN_MAX)
        return 0;
    for (size_t i = 0; allowed[i]; i++)
        if (strlen(allowed[i]) == n && strncasecmp(allowed[i], origin, n) == 0)
            return 1;
    return 0;
}

int rl_origin_valid(const char *origin, const char **why)
{
    const char *h;
    size_t n;

    *why = NULL;
    if (!origin || !*origin) {
        *why = "must be a non-empty origin like https://app.example.com";
        return AL_ERR_INVAL;
    }
    n = strlen(origin);
    if (n > RL_ORIGIN_MAX) {
        *why = "longer than 256 characters";
        return AL_ERR_INVAL;
    }
    if (strncasecmp(origin, "https://", 8) == 0)
        h = origin + 8;
    else if (strncasecmp(origin, "http://", 7) == 0)
        h = origin + 7;
    else {
        *why = "must start with https:// or http:// (an origin, as browsers send it)";
        return AL_ERR_INVAL;
    }
    if (!*h) {
        *why = "has no host";
        return AL_ERR_INVAL;
    }
    if (*h == '[') { /* IPv6 literal */
        const char *close = strchr(h, ']');
        if (!close || close == h + 1) {
            *why = "has a malformed IPv6 host";
            return AL_ERR_INVAL;
        }
        for (const char *p = h + 1; p < close; p++)
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
                  (*p >= 'A' && *p <= 'F') || *p == ':' || *p == '.')) {
                *why = "has a malformed IPv6 host";
                return AL_ERR_INVAL;
            }
        h = close + 1;
    } else {
        const char *p = h;
        while (*p && *p != ':') {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '.' || *p == '-')) {
                *why = "must be scheme://host[:port] with no path, query or trailing slash";
                return AL_ERR_INVAL;
            }
            p++;
        }
        if (p == h) {
            *why = "has no host";
            return AL_ERR_INVAL;
        }
        h = p;
    }
    if (*h == ':') {
        const char *p = ++h;
        long port = 0;
        while (*p >= '0' && *p <= '9' && port <= 65535)
            port = port * 10 + (*p++ - '0');
        if (p == h || *p || port < 1 || port > 65535) {
            *why = "has a bad port (1-65535, nothing after it)";
            return AL_ERR_INVAL;
        }
        return 0;
    }
    if (*h) {
        *why = "must be scheme://host[:port] with no path, query or trailing slash";
        return AL_ERR_INVAL;
    }
    return 0;
}

int rl_request_id(char out[RL_REQUEST_ID_LEN + 1])
{
    uint8_t raw[16];
    size_t n = 0;

    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return AL_ERR_CRYPTO;
    if (al_base64_encode(raw, sizeof(raw), out, RL_REQUEST_ID_LEN + 1,
                         AL_BASE64_URL | AL_BASE64_NOPAD, &n) < 0 ||
        n != RL_REQUEST_ID_LEN)
        return AL_ERR_CRYPTO;
    return 0;
}

const char *rl_status_class(int status)
{
    static const char *const cls[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    if (status < 100 || status > 599)
        return "other";
    return cls[status / 100 - 1];
}

int rl_parse_content_length(const char *v, size_t n, int64_t *out)
{
    int64_t x = 0;

    if (!v || n == 0 || n > 18)
        return AL_ERR_INVAL;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return AL_ERR_INVAL;
        x = x * 10 + (v[i] - '0');
    }
    *out = x;
    return 0;
}

int rl_error_body(int code, const char *message, const char *reason, struct rl_buf *out)
{
    size_t start = out->len;
    int rc;

    for (const char *p = reason; p && *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || *p == '_'))
            return AL_ERR_INVAL;
    if (!reason || !*reason)
        return AL_ERR_INVAL;
    /* rl_mcp_error_body writes {...,"error":{"code":..,"message":".."}}; the
     * airlock reason goes into error.data, so the two closing braces are
     * reopened */
    rc = rl_mcp_error_body(NULL, code, message, out);
    if (rc < 0)
        return rc;
    if (out->len - start < 2 || memcmp(out->p + out->len - 2, "}}", 2) != 0) {
        out->len = start;
        return AL_ERR_INVAL;
    }
    out->len -= 2;
    rc = rl_buf_printf(out, ",\"data\":{\"airlock_error\":\"%s\"}}}", reason);
    if (rc < 0)
        out->len = start;
    return rc;
}
