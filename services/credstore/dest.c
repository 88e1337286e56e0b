/*
 * dest: parsing, formatting and matching of credential destinations. The
 * rules are in dest.h; this file only implements them. Parsing goes in one
 * direction: bytes check, scheme, authority split (userinfo refused), port,
 * then the host as IPv6 literal, IPv4 (any inet_aton spelling) or name.
 */
#include "dest.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "al_err.h"

/* A byte allowed anywhere in the input: printable ASCII except backslash. */
static int byte_ok(unsigned char c)
{
    return c >= 0x21 && c <= 0x7e && c != '\\';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int hex_value(char c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Case-insensitive: does s[0..len) start with the lowercase literal p? */
static int has_prefix_ci(const char *s, size_t len, const char *p)
{
    size_t n = strlen(p);
    if (len < n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower(s[i]) != p[i])
            return 0;
    return 1;
}

/* Plain decimal 1..65535, no sign, no leading zero. */
static int parse_port(const char *s, size_t len, uint16_t *port)
{
    unsigned v = 0;
    if (len == 0 || len > 5 || s[0] == '0')
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

/* One inet_aton part: decimal, octal (leading 0) or hex (0x; "0x" alone is
 * 0, as in glibc and WHATWG). Clears *canonical for octal and hex. */
static int parse_ipv4_part(const char *s, size_t len, uint32_t *out, int *canonical)
{
    unsigned base = 10;
    uint64_t acc = 0;
    if (len == 0)
        return -1;
    if (len >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
        len -= 2;
        *canonical = 0;
    } else if (len >= 2 && s[0] == '0') {
        base = 8;
        s++;
        len--;
        *canonical = 0;
    }
    for (size_t i = 0; i < len; i++) {
        int d = hex_value(s[i]);
        if (d < 0 || (unsigned)d >= base)
            return -1;
        acc = acc * base + (unsigned)d;
        if (acc > 0xffffffffu)
            return -1;
    }
    *out = (uint32_t)acc;
    return 0;
}

/*
 * inet_aton(3) semantics: "a", "a.b", "a.b.c", "a.b.c.d"; every part but the
 * last is one byte, the last fills the rest. *canonical is 1 only for four
 * plain decimal parts without leading zeros.
 */
static int parse_ipv4(const char *s, size_t len, uint32_t *addr, int *canonical)
{
    uint32_t part[4], v = 0;
    size_t n = 0, i = 0;

    *canonical = 1;
    for (;;) {
        size_t start = i;
        if (n == 4)
            return -1;
        while (i < len && s[i] != '.')
            i++;
        if (parse_ipv4_part(s + start, i - start, &part[n], canonical) < 0)
            return -1;
        n++;
        if (i == len)
            break;
        i++; /* the dot; an empty part after it fails above */
    }
    for (size_t k = 0; k + 1 < n; k++) {
        if (part[k] > 255)
            return -1;
        v |= part[k] << (24 - 8 * k);
    }
    if (n > 1 && part[n - 1] > (0xffffffffu >> (8 * (n - 1))))
        return -1;
    v |= part[n - 1];
    if (n != 4)
        *canonical = 0;
    *addr = v;
    return 0;
}

/* WHATWG "ends in a number": the last label is all digits, or 0x + hex. */
static int label_is_numeric(const char *s, size_t len)
{
    size_t i = 0;
    if (len == 0)
        return 0;
    if (len >= 2 && s[0] == '0' && s[1] == 'x') {
        for (i = 2; i < len; i++)
            if (hex_value(s[i]) < 0)
                return 0;
        return 1;
    }
    for (; i < len; i++)
        if (!is_digit(s[i]))
            return 0;
    return 1;
}

/* Labels of 1..63 [a-z0-9-], no leading or trailing '-'; total <= 253. */
static int name_valid(const char *s, size_t len)
{
    size_t start = 0;
    if (len == 0 || len > CS_DEST_NAME_MAX)
        return 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            size_t l = i - start;
            if (l == 0 || l > CS_DEST_LABEL_MAX || s[start] == '-' || s[i - 1] == '-')
                return 0;
            start = i + 1;
        } else if (!((s[i] >= 'a' && s[i] <= 'z') || is_digit(s[i]) || s[i] == '-')) {
            return 0;
        }
    }
    return 1;
}

static void set_ipv4(struct cs_dest *out, uint32_t a)
{
    out->kind = CS_DEST_IPV4;
    snprintf(out->host, sizeof out->host, "%u.%u.%u.%u", (a >> 24) & 255, (a >> 16) & 255,
             (a >> 8) & 255, a & 255);
    out->hostlen = strlen(out->host);
}

/* The inside of "[...]": inet_pton(AF_INET6), no zone id. */
static int parse_ipv6(const char *s, size_t len, struct cs_dest *out)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    char buf[INET6_ADDRSTRLEN];
    uint8_t a[16];

    if (len == 0 || len >= sizeof buf)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (hex_value(s[i]) < 0 && s[i] != ':' && s[i] != '.')
            return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET6, buf, a) != 1)
        return -1;
    if (memcmp(a, mapped, sizeof mapped) == 0) {
        set_ipv4(out, (uint32_t)a[12] << 24 | (uint32_t)a[13] << 16 | (uint32_t)a[14] << 8 | a[15]);
        out->flags |= CS_DEST_F_NONCANONICAL;
        return 0;
    }
    if (!inet_ntop(AF_INET6, a, out->host, sizeof out->host))
        return -1;
    out->kind = CS_DEST_IPV6;
    out->hostlen = strlen(out->host);
    return 0;
}

/* A host that is not bracketed: optional "*.", then IPv4 or a name. */
static int parse_host(const char *s, size_t len, enum cs_dest_mode mode, struct cs_dest *out)
{
    char h[CS_DEST_HOST_MAX];
    const char *last;
    int trailing_dot = 0, canonical;
    uint32_t a;

    if (len >= 2 && s[0] == '*' && s[1] == '.') {
        if (mode == CS_DEST_REQUEST)
            return -1;
        out->flags |= CS_DEST_F_WILDCARD;
        s += 2;
        len -= 2;
    }
    if (len == 0 || len > CS_DEST_NAME_MAX + 1)
        return -1;
    for (size_t i = 0; i < len; i++)
        h[i] = lower(s[i]);
    if (h[len - 1] == '.') {
        len--;
        trailing_dot = 1;
    }
    if (len == 0)
        return -1;
    h[len] = '\0';
    last = memrchr(h, '.', len);
    last = last ? last + 1 : h;
    if (label_is_numeric(last, len - (size_t)(last - h))) {
        if ((out->flags & CS_DEST_F_WILDCARD) || parse_ipv4(h, len, &a, &canonical) < 0)
            return -1;
        set_ipv4(out, a);
        if (!canonical || trailing_dot)
            out->flags |= CS_DEST_F_NONCANONICAL;
        return 0;
    }
    if (!name_valid(h, len))
        return -1;
    out->kind = CS_DEST_NAME;
    memcpy(out->host, h, len + 1);
    out->hostlen = len;
    return 0;
}

/* "host[:port]" or "[v6][:port]"; userinfo and escapes refused. */
static int parse_authority(const char *s, size_t len, enum cs_dest_mode mode, struct cs_dest *out)
{
    const char *colon;
    size_t hostlen = len;

    if (len == 0 || memchr(s, '@', len) || memchr(s, '%', len))
        return -1;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return -1;
        hostlen = (size_t)(close - s) + 1;
        if (hostlen < len && s[hostlen] != ':')
            return -1;
        if (parse_ipv6(s + 1, hostlen - 2, out) < 0)
            return -1;
    } else {
        colon = memchr(s, ':', len);
        if (colon)
            hostlen = (size_t)(colon - s);
        if (parse_host(s, hostlen, mode, out) < 0)
            return -1;
    }
    if (hostlen < len) {
        if (parse_port(s + hostlen + 1, len - hostlen - 1, &out->port) < 0)
            return -1;
        out->flags |= CS_DEST_F_PORT;
    }
    return 0;
}

/* Splits off "scheme://" and the path; returns the authority's length. */
static int split_url(const char *s, size_t len, enum cs_dest_mode mode, struct cs_dest *out,
                     size_t *skip)
{
    size_t off = 0, end;

    if (has_prefix_ci(s, len, "https://")) {
        out->scheme = CS_SCHEME_HTTPS;
        off = 8;
    } else if (has_prefix_ci(s, len, "http://")) {
        out->scheme = CS_SCHEME_HTTP;
        off = 7;
    } else if (memmem(s, len, "://", 3)) {
        return -1; /* another scheme */
    }
    if (off)
        out->flags |= CS_DEST_F_SCHEME;
    for (end = off; end < len; end++)
        if (s[end] == '/' || s[end] == '?' || s[end] == '#')
            break;
    if (end < len) {
        /* without a scheme there is no path; patterns cannot scope paths,
         * so they may only end in a lone "/" rather than silently ignore one */
        if (!off)
            return -1;
        if (mode != CS_DEST_REQUEST && !(end + 1 == len && s[end] == '/'))
            return -1;
    }
    *skip = off;
    return (int)(end - off);
}

int cs_dest_parse(const char *s, size_t len, enum cs_dest_mode mode, struct cs_dest *out)
{
    size_t off = 0;
    int alen;

    if (!out)
        return AL_ERR_INVAL;
    memset(out, 0, sizeof *out);
    if (!s || len == 0 ||
        (mode != CS_DEST_POLICY && mode != CS_DEST_GRANT && mode != CS_DEST_REQUEST))
        return AL_ERR_INVAL;
    if (len > CS_DEST_INPUT_MAX)
        return AL_ERR_TOOBIG;
    for (size_t i = 0; i < len; i++)
        if (!byte_ok((unsigned char)s[i]))
            return AL_ERR_INVAL;
    out->scheme = CS_SCHEME_HTTPS;
    alen = split_url(s, len, mode, out, &off);
    if (alen < 0 || parse_authority(s + off, (size_t)alen, mode, out) < 0)
        goto bad;
    if (mode != CS_DEST_REQUEST && (out->flags & CS_DEST_F_NONCANONICAL))
        goto bad;
    if (!(out->flags & CS_DEST_F_PORT))
        out->port = out->scheme == CS_SCHEME_HTTP ? 80 : 443;
    return 0;
bad:
    memset(out, 0, sizeof *out);
    return AL_ERR_INVAL;
}

/* A struct that cs_dest_parse could have produced (defends format and match
 * against uninitialized or hand-built values). */
static int dest_sane(const struct cs_dest *d)
{
    return d && d->kind >= CS_DEST_NAME && d->kind <= CS_DEST_IPV6 &&
           (d->scheme == CS_SCHEME_HTTPS || d->scheme == CS_SCHEME_HTTP) && d->port != 0 &&
           d->hostlen > 0 && d->hostlen < CS_DEST_HOST_MAX && d->host[d->hostlen] == '\0' &&
           memchr(d->host, '\0', d->hostlen) == NULL;
}

int cs_dest_format(const struct cs_dest *d, char *buf, size_t n)
{
    int v6, r;

    if (!buf || n == 0)
        return AL_ERR_INVAL;
    buf[0] = '\0';
    if (!dest_sane(d))
        return AL_ERR_INVAL;
    v6 = d->kind == CS_DEST_IPV6;
    r = snprintf(buf, n, "%s%s%s%s%s:%u", d->scheme == CS_SCHEME_HTTP ? "http://" : "",
                 (d->flags & CS_DEST_F_WILDCARD) ? "*." : "", v6 ? "[" : "", d->host, v6 ? "]" : "",
                 (unsigned)d->port);
    if (r < 0 || (size_t)r >= n) {
        buf[0] = '\0';
        return AL_ERR_TOOBIG;
    }
    return r;
}

int cs_dest_match(const struct cs_dest *pattern, const struct cs_dest *d)
{
    size_t off;

    if (!dest_sane(pattern) || !dest_sane(d) || (d->flags & CS_DEST_F_WILDCARD))
        return 0;
    if (pattern->kind != d->kind || pattern->scheme != d->scheme || pattern->port != d->port)
        return 0;
    if (!(pattern->flags & CS_DEST_F_WILDCARD))
        return pattern->hostlen == d->hostlen && memcmp(pattern->host, d->host, d->hostlen) == 0;
    /* "*.suffix": at least one label, then a dot, then exactly the suffix */
    if (d->kind != CS_DEST_NAME || pattern->kind != CS_DEST_NAME ||
        d->hostlen < pattern->hostlen + 2)
        return 0;
    off = d->hostlen - pattern->hostlen;
    return d->host[off - 1] == '.' && memcmp(d->host + off, pattern->host, pattern->hostlen) == 0;
}
