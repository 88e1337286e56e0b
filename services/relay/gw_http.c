/*
 * gw_http: pure HTTP helpers of the gateway; see gw_http.h.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "airlock/v1/common.pb-c.h"
#include "al_err.h"
#include "gw_config.h"
#include "gw_http.h"

static int has_prefix(const char *s, size_t n, const char *p)
{
    size_t pl = strlen(p);
    return n >= pl && memcmp(s, p, pl) == 0;
}

static int is_name(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

static size_t span_name(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && s[i] != '/' && s[i] != '?')
        i++;
    return i;
}

int gw_path_split(const char *path, size_t n, struct gw_path *out)
{
    const char *p;
    size_t left, tl, sl;

    memset(out, 0, sizeof(*out));
    if (!has_prefix(path, n, "/mcp/"))
        return AL_ERR_NOTFOUND;
    p = path + 5;
    left = n - 5;
    tl = span_name(p, left);
    if (tl == left || p[tl] != '/' || !gw_name_valid(p, tl))
        return AL_ERR_NOTFOUND;
    out->tunnel = p;
    out->tunnel_len = tl;
    p += tl + 1;
    left -= tl + 1;
    sl = span_name(p, left);
    if (!gw_name_valid(p, sl))
        return AL_ERR_NOTFOUND;
    out->server = p;
    out->server_len = sl;
    out->rest = p + sl;
    out->rest_len = left - sl;
    return gw_rest_safe(out->rest, out->rest_len) ? 0 : AL_ERR_INVAL;
}

/* A path segment that names the current or the parent directory, with its
 * dots possibly percent-encoded; or one carrying an encoded '/' or '\'. */
static int segment_bad(const char *s, size_t n)
{
    size_t dots = 0, i = 0;

    for (size_t k = 0; k + 2 < n; k++) {
        if (s[k] != '%')
            continue;
        char a = s[k + 1], b = (char)(s[k + 2] | 0x20);
        if ((a == '2' && b == 'f') || (a == '5' && b == 'c'))
            return 1;
    }
    while (i < n) {
        if (s[i] == '.') {
            dots++;
            i++;
        } else if (i + 2 < n && s[i] == '%' && s[i + 1] == '2' && (s[i + 2] | 0x20) == 'e') {
            dots++;
            i += 3;
        } else {
            return 0;
        }
    }
    return dots == 1 || dots == 2;
}

int gw_rest_safe(const char *rest, size_t n)
{
    size_t qpos = n, start;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)rest[i];
        if (c <= 0x20 || c >= 0x7f || c == '\\' || c == '#')
            return 0;
        if (c == '?' && qpos == n)
            qpos = i;
    }
    if (n && rest[0] != '/' && rest[0] != '?')
        return 0;
    /* path part: segments between slashes */
    start = 1;
    for (size_t i = 1; i <= qpos && qpos > 0; i++) {
        if (i == qpos || rest[i] == '/') {
            if (segment_bad(rest + start, i - start))
                return 0;
            start = i + 1;
        }
    }
    return 1;
}

int gw_target(const char *base, const char *rest, size_t rest_len, char *out, size_t outn)
{
    size_t bl = base ? strlen(base) : 0;
    int n;

    if (bl == 1 && base[0] == '/')
        bl = 0; /* "/" + "/x" must not become "//x" */
    if (bl == 0 && (rest_len == 0 || rest[0] == '?'))
        n = snprintf(out, outn, "/%.*s", (int)rest_len, rest);
    else
        n = snprintf(out, outn, "%.*s%.*s", (int)bl, base ? base : "", (int)rest_len, rest);
    if (n < 0 || (size_t)n >= outn)
        return AL_ERR_TOOBIG;
    return n;
}

int gw_req_header_dropped(const char *name, size_t n)
{
    static const char *const drop[] = {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "http2-settings",
        "host",
        "content-length",
        "authorization",
        "proxy-authorization",
        "proxy-authenticate",
        "cookie",
        "accept-encoding",
        "expect",
        "forwarded",
        "x-real-ip",
        "via",
    };

    if (n == 0 || name[0] == ':' || has_prefix(name, n, "airlock-") ||
        has_prefix(name, n, "x-forwarded-"))
        return 1;
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        if (is_name(name, n, drop[i]))
            return 1;
    return 0;
}

int gw_req_header_single(const char *name, size_t n)
{
    static const char *const single[] = {
        "mcp-session-id",    "mcp-method",         "mcp-name",      "mcp-protocol-version",
        "content-type",      "content-length",     "last-event-id", "airlock-grant",
        "airlock-principal", "airlock-request-id",
    };

    for (size_t i = 0; i < sizeof(single) / sizeof(single[0]); i++)
        if (is_name(name, n, single[i]))
            return 1;
    return 0;
}

int gw_resp_header_dropped(const char *name, size_t n)
{
    static const char *const drop[] = {
        "connection",     "keep-alive",        "proxy-connection", "te",
        "trailer",        "transfer-encoding", "upgrade",          "proxy-authenticate",
        "content-length", "alt-svc",           "http2-settings",
    };

    if (n == 0 || name[0] == ':' || has_prefix(name, n, "airlock-"))
        return 1;
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        if (is_name(name, n, drop[i]))
            return 1;
    return 0;
}

int gw_request_id_valid(const char *s, size_t n)
{
    return gw_name_valid(s, n);
}

int gw_field_name_valid(const char *s, size_t n)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";

    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c && strchr(extra, c))))
            return 0;
    }
    return 1;
}

const char *gw_reason_name(int reason)
{
    static const char prefix[] = "ERROR_REASON_";
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&airlock__v1__error_reason__descriptor, reason);

    if (!v || reason == 0 || strncmp(v->name, prefix, sizeof(prefix) - 1) != 0)
        return "INTERNAL";
    return v->name + sizeof(prefix) - 1;
}

int gw_error_body(const struct rl_mcp_msg *m, const struct gw_error *e, const char *message,
                  struct rl_buf *out)
{
    struct rl_buf tmp;
    int rc;

    /* rl_mcp_error_body writes {"jsonrpc":"2.0","id":..,"error":{"code":..,"message":..}};
     * the data member goes in before the two closing braces. */
    rl_buf_init(&tmp, 64 * 1024);
    rc = rl_mcp_error_body(m, e->code, message, &tmp);
    if (rc == 0 && (tmp.len < 2 || tmp.p[tmp.len - 1] != '}' || tmp.p[tmp.len - 2] != '}'))
        rc = AL_ERR_PROTO;
    if (rc == 0)
        rc = rl_buf_append(out, tmp.p, tmp.len - 2);
    if (rc == 0)
        rc =
            rl_buf_printf(out, ",\"data\":{\"airlock_error\":\"%s\"}}}", gw_reason_name(e->reason));
    rl_buf_cleanup(&tmp);
    return rc;
}
