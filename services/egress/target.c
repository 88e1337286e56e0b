/*
 * target: host, authority, URL and path parsing for the egress proxy (see
 * target.h for the accepted forms).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "al_err.h"
#include "target.h"

static int fail(const char **why, const char *text)
{
    if (why)
        *why = text;
    return AL_ERR_INVAL;
}

static int hexval(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int is_alnum(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

static int is_unreserved(unsigned char ch)
{
    return is_alnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

/* RFC 3986 pchar without '%' (checked apart), plus '/' and '?' */
static int is_target_char(unsigned char ch)
{
    return is_unreserved(ch) || (ch && strchr("!$&'()*+,;=:@/?", ch));
}

/* ---------------------------------------------------------------- IPv4 */

/* One inet_aton part: decimal, 0-octal or 0x-hex. Returns 0 with *v, or -1. */
static int v4_part(const char *s, size_t n, uint64_t *v)
{
    uint64_t x = 0;
    unsigned base = 10;
    size_t i = 0;

    if (n == 0)
        return -1;
    if (n >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        i = 2; /* "0x" alone is 0, as inet_aton reads it */
    } else if (n >= 2 && s[0] == '0') {
        base = 8;
        i = 1;
    }
    for (; i < n; i++) {
        int d = hexval((unsigned char)s[i]);
        if (d < 0 || (unsigned)d >= base)
            return -1;
        x = x * base + (unsigned)d;
        if (x > 0xffffffffULL)
            return -1;
    }
    *v = x;
    return 0;
}

/* inet_aton forms: 1..4 parts; the last fills the remaining bytes. */
static int v4_parse(const char *s, size_t n, uint8_t out[4])
{
    uint64_t part[4];
    size_t np = 0, start = 0;
    uint32_t a;

    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '.')
            continue;
        if (np == 4 || v4_part(s + start, i - start, &part[np]) < 0)
            return -1;
        np++;
        start = i + 1;
    }
    for (size_t i = 0; i + 1 < np; i++)
        if (part[i] > 255)
            return -1;
    if (part[np - 1] > (0xffffffffULL >> (8 * (np - 1))))
        return -1;
    a = (uint32_t)part[np - 1];
    for (size_t i = 0; i + 1 < np; i++)
        a |= (uint32_t)part[i] << (24 - 8 * i);
    out[0] = (uint8_t)(a >> 24);
    out[1] = (uint8_t)(a >> 16);
    out[2] = (uint8_t)(a >> 8);
    out[3] = (uint8_t)a;
    return 0;
}

/* Does the last label look like a number (WHATWG "ends in a number")? */
static int ends_in_number(const char *s, size_t n)
{
    size_t start = n;

    while (start > 0 && s[start - 1] != '.')
        start--;
    if (start == n)
        return 0;
    if (n - start >= 2 && s[start] == '0' && (s[start + 1] == 'x' || s[start + 1] == 'X')) {
        for (size_t i = start + 2; i < n; i++)
            if (hexval((unsigned char)s[i]) < 0)
                return 0;
        return 1;
    }
    for (size_t i = start; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* ---------------------------------------------------------------- hosts */

static int parse_v6(const char *s, size_t n, struct eg_host *out, const char **why)
{
    char tmp[64];

    if (n < 2 || s[n - 1] != ']')
        return fail(why, "malformed IPv6 literal");
    s++;
    n -= 2;
    if (memchr(s, '%', n))
        return fail(why, "IPv6 zone ids are not accepted");
    if (n == 0 || n >= sizeof(tmp))
        return fail(why, "malformed IPv6 literal");
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (inet_pton(AF_INET6, tmp, out->addr) != 1)
        return fail(why, "malformed IPv6 literal");
    if (!inet_ntop(AF_INET6, out->addr, out->name, sizeof(out->name)))
        return fail(why, "malformed IPv6 literal");
    out->kind = EG_HOST_IPV6;
    return 0;
}

static int parse_name(const char *s, size_t n, struct eg_host *out, const char **why)
{
    size_t lab = 0;

    if (n > 253)
        return fail(why, "host name too long");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x80)
            return fail(why, "non-ASCII host name (use its xn-- form)");
        if (ch == '.') {
            if (lab == 0)
                return fail(why, "empty label in host name");
            if (s[i - 1] == '-')
                return fail(why, "host name label ends with '-'");
            lab = 0;
        } else if (is_alnum(ch) || ch == '-') {
            if (lab == 0 && ch == '-')
                return fail(why, "host name label starts with '-'");
            if (++lab > 63)
                return fail(why, "host name label too long");
        } else {
            return fail(why, "invalid character in host name");
        }
        out->name[i] = (char)((ch >= 'A' && ch <= 'Z') ? ch + 32 : ch);
    }
    if (lab == 0)
        return fail(why, "empty label in host name");
    if (s[n - 1] == '-')
        return fail(why, "host name label ends with '-'");
    out->name[n] = '\0';
    out->kind = EG_HOST_NAME;
    return 0;
}

int eg_host_parse(const char *s, size_t n, struct eg_host *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (!s || n == 0)
        return fail(why, "empty host");
    if (s[0] == '[')
        return parse_v6(s, n, out, why);
    if (n > 1 && s[n - 1] == '.')
        n--; /* "example.com." is example.com */
    if (ends_in_number(s, n)) {
        if (v4_parse(s, n, out->addr) < 0)
            return fail(why, "host looks like an IPv4 address but is not a valid one");
        snprintf(out->name, sizeof(out->name), "%u.%u.%u.%u", out->addr[0], out->addr[1],
                 out->addr[2], out->addr[3]);
        out->kind = EG_HOST_IPV4;
        return 0;
    }
    return parse_name(s, n, out, why);
}

int eg_host_equal(const struct eg_host *a, const struct eg_host *b)
{
    return a->kind == b->kind && strcmp(a->name, b->name) == 0;
}

/* ------------------------------------------------------------ authorities */

static int parse_port(const char *s, size_t n, int *port, const char **why)
{
    int v = 0;

    if (n == 0)
        return fail(why, "empty port");
    if (n > 5 || s[0] == '0')
        return fail(why, "invalid port");
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return fail(why, "invalid port");
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return fail(why, "invalid port");
    *port = v;
    return 0;
}

int eg_authority_parse(const char *s, size_t n, int default_port, struct eg_authority *out,
                       const char **why)
{
    const char *colon;
    size_t hlen;

    memset(out, 0, sizeof(*out));
    if (!s || n == 0)
        return fail(why, "empty authority");
    if (memchr(s, '@', n))
        return fail(why, "userinfo in the authority is not accepted");
    if (s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return fail(why, "malformed IPv6 literal");
        hlen = (size_t)(close - s) + 1;
        if (hlen < n && s[hlen] != ':')
            return fail(why, "malformed authority");
        colon = hlen < n ? s + hlen : NULL;
    } else {
        colon = memchr(s, ':', n);
        hlen = colon ? (size_t)(colon - s) : n;
    }
    if (eg_host_parse(s, hlen, &out->host, why) < 0)
        return AL_ERR_INVAL;
    out->port = default_port;
    if (!colon && default_port == 0)
        return fail(why, "a port is required (host:port)");
    if (colon && parse_port(colon + 1, n - hlen - 1, &out->port, why) < 0)
        return AL_ERR_INVAL;
    if (out->port < 1 || out->port > 65535)
        return fail(why, "invalid port");
    return 0;
}

char *eg_authority_format(const struct eg_authority *a, char *buf, size_t n)
{
    snprintf(buf, n, a->host.kind == EG_HOST_IPV6 ? "[%s]:%d" : "%s:%d", a->host.name, a->port);
    return buf;
}

/* ------------------------------------------------------------- targets */

/* Characters and percent-encoding of s[0..n) (a path, query or both). */
static int check_chars(const char *s, size_t n, const char **why)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '#')
            return fail(why, "fragment in the request target");
        if (ch == '%') {
            if (i + 2 >= n || hexval((unsigned char)s[i + 1]) < 0 ||
                hexval((unsigned char)s[i + 2]) < 0)
                return fail(why, "bad percent-encoding in the request target");
            i += 2;
            continue;
        }
        if (!is_target_char(ch))
            return fail(why, "invalid character in the request target");
    }
    return 0;
}

int eg_origin_check(const char *s, size_t n, const char **why)
{
    if (!s || n == 0 || s[0] != '/')
        return fail(why, "request target is not a path");
    return check_chars(s, n, why);
}

int eg_url_parse(const char *s, size_t n, struct eg_authority *out, char *origin, size_t cap,
                 const char **why)
{
    size_t i = 0, a, rest;

    memset(out, 0, sizeof(*out));
    if (!s || n == 0)
        return fail(why, "empty request target");
    while (i < n && s[i] != ':' && s[i] != '/')
        i++;
    if (i + 3 > n || memcmp(s + i, "://", 3) != 0)
        return fail(why, "request target is not an absolute URL");
    if (i == 5 && strncasecmp(s, "https", 5) == 0)
        return fail(why, "https URLs go through CONNECT, not absolute-form");
    if (i != 4 || strncasecmp(s, "http", 4) != 0)
        return fail(why, "unsupported URL scheme (only http:// in absolute-form)");
    a = i + 3;
    i = a;
    while (i < n && s[i] != '/' && s[i] != '?' && s[i] != '#')
        i++;
    if (i < n && s[i] == '#')
        return fail(why, "fragment in the request target");
    if (eg_authority_parse(s + a, i - a, 80, out, why) < 0)
        return AL_ERR_INVAL;
    rest = n - i;
    if (check_chars(s + i, rest, why) < 0)
        return AL_ERR_INVAL;
    if (rest + 2 > cap)
        return AL_ERR_TOOBIG;
    if (rest == 0 || s[i] == '?') {
        origin[0] = '/';
        memcpy(origin + 1, s + i, rest);
        origin[rest + 1] = '\0';
    } else {
        memcpy(origin, s + i, rest);
        origin[rest] = '\0';
    }
    return 0;
}

/* ---------------------------------------------------------------- paths */

/* Decodes the path part of s into out (see target.h); the result is never
 * longer than the input. Returns the length or AL_ERR_INVAL. */
static long decode_path(const char *s, size_t n, char *out, const char **why)
{
    size_t k = 0;

    for (size_t i = 0; i < n && s[i] != '?'; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '#')
            break;
        if (ch != '%') {
            if (ch != '\\' && !is_target_char(ch))
                return fail(why, "invalid character in the request target");
            out[k++] = ch == '\\' ? '/' : (char)ch;
            continue;
        }
        if (i + 2 >= n || hexval((unsigned char)s[i + 1]) < 0 ||
            hexval((unsigned char)s[i + 2]) < 0)
            return fail(why, "bad percent-encoding in the request target");
        unsigned char b =
            (unsigned char)(hexval((unsigned char)s[i + 1]) * 16 + hexval((unsigned char)s[i + 2]));
        i += 2;
        if (b == 0)
            return fail(why, "encoded NUL in the request path");
        if (b == '/' || b == '\\') {
            out[k++] = '/';
        } else if (is_unreserved(b)) {
            out[k++] = (char)b;
        } else {
            static const char hex[] = "0123456789ABCDEF";
            out[k++] = '%';
            out[k++] = hex[b >> 4];
            out[k++] = hex[b & 15];
        }
    }
    return (long)k;
}

/* Is seg[0..n) a dot segment ("." or "..", ignoring ";params")? Returns 1
 * for ".", 2 for "..", else 0. */
static int dot_segment(const char *seg, size_t n)
{
    const char *semi = memchr(seg, ';', n);

    if (semi)
        n = (size_t)(semi - seg);
    if (n == 1 && seg[0] == '.')
        return 1;
    if (n == 2 && seg[0] == '.' && seg[1] == '.')
        return 2;
    return 0;
}

int eg_path_normalize(const char *s, size_t n, char *out, size_t cap, const char **why)
{
    long len;
    size_t k = 0, i = 0;

    if (!s || n == 0 || s[0] != '/')
        return fail(why, "request target is not a path");
    if (cap < n + 1)
        return AL_ERR_TOOBIG;
    len = decode_path(s, n, out, why);
    if (len < 0)
        return (int)len;
    /* what one more decoding would turn into a separator, a dot or another
     * escape ("%252e", "%25%32e"): a server that decodes twice climbs */
    for (long x = 0; x + 2 < len; x++) {
        if (out[x] != '%' || hexval((unsigned char)out[x + 1]) < 0 ||
            hexval((unsigned char)out[x + 2]) < 0)
            continue;
        int b = hexval((unsigned char)out[x + 1]) * 16 + hexval((unsigned char)out[x + 2]);
        int escape = b == '%' && x + 4 < len && hexval((unsigned char)out[x + 3]) >= 0 &&
                     hexval((unsigned char)out[x + 4]) >= 0;
        if (b == '.' || b == '/' || b == '\\' || b == 0 || escape)
            return fail(why, "double percent-encoding in the request path");
    }
    /* remove dot segments in place (the write position never passes the
     * read position): each segment follows a '/' */
    while (i < (size_t)len) {
        size_t j = i + 1;
        while (j < (size_t)len && out[j] != '/')
            j++;
        int dot = dot_segment(out + i + 1, j - i - 1);
        if (dot == 2) { /* drop the last segment written, with its '/' */
            while (k > 0 && out[k - 1] != '/')
                k--;
            if (k > 0)
                k--;
        }
        if (dot) {
            if (j == (size_t)len)
                out[k++] = '/'; /* "/a/." and "/a/b/.." name a directory */
        } else {
            memmove(out + k, out + i, j - i);
            k += j - i;
        }
        i = j;
    }
    if (k == 0)
        out[k++] = '/';
    out[k] = '\0';
    return 0;
}

int eg_path_has_prefix(const char *p, const char *q)
{
    size_t qn = strlen(q);

    if (strncmp(p, q, qn) != 0)
        return 0;
    return p[qn] == '\0' || (qn > 0 && q[qn - 1] == '/') || p[qn] == '/';
}
