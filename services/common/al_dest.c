/*
 * al_dest: network destinations as jobs, bindings and operator ceilings
 * write them; see al_dest.h.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "al_dest.h"
#include "al_err.h"

int al_dest_host_valid(const char *h, int wildcard)
{
    unsigned char tmp[16];
    size_t len, label = 0;

    if (!h || !h[0])
        return 0;
    if (inet_pton(AF_INET, h, tmp) == 1 || inet_pton(AF_INET6, h, tmp) == 1)
        return 1;
    if (wildcard && strncmp(h, "*.", 2) == 0)
        h += 2;
    len = strlen(h);
    if (len == 0 || len > 253 || h[len - 1] == '.')
        return 0;
    for (size_t i = 0; i <= len; i++) {
        char c = h[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || h[i - 1] == '-' || h[i - label] == '-')
                return 0;
            label = 0;
        } else if (isalnum((unsigned char)c) || c == '-' || c == '_') {
            label++;
        } else {
            return 0;
        }
    }
    /* a numeric last label (decimal, or 0x hex) makes an IPv4 spelling such
     * as "127.1" or "0x7f.1" that resolvers accept and inet_pton did not:
     * ambiguous, refused */
    const char *last = strrchr(h, '.');
    last = last ? last + 1 : h;
    int hex = last[0] == '0' && (last[1] == 'x' || last[1] == 'X');
    for (const char *p = hex ? last + 2 : last; *p; p++)
        if (hex ? !isxdigit((unsigned char)*p) : !isdigit((unsigned char)*p))
            return 1;
    return 0;
}

int al_dest_parse(const char *s, char *host, size_t hn, int *port)
{
    const char *colon;
    size_t hl;

    *port = 443;
    if (!s || !s[0] || strlen(s) > 300)
        return AL_ERR_INVAL;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end)
            return AL_ERR_INVAL;
        hl = (size_t)(end - s - 1);
        if (hl == 0 || hl >= hn)
            return AL_ERR_INVAL;
        memcpy(host, s + 1, hl);
        host[hl] = '\0';
        colon = end[1] == ':' ? end + 1 : NULL;
        if (!colon && end[1])
            return AL_ERR_INVAL;
        unsigned char tmp[16];
        if (inet_pton(AF_INET6, host, tmp) != 1)
            return AL_ERR_INVAL;
    } else {
        colon = strchr(s, ':');
        hl = colon ? (size_t)(colon - s) : strlen(s);
        if (hl == 0 || hl >= hn || (colon && strchr(colon + 1, ':')))
            return AL_ERR_INVAL;
        memcpy(host, s, hl);
        host[hl] = '\0';
        if (!al_dest_host_valid(host, 1))
            return AL_ERR_INVAL;
    }
    if (colon) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (!colon[1] || *end || p < 1 || p > 65535 || !isdigit((unsigned char)colon[1]))
            return AL_ERR_INVAL;
        *port = (int)p;
    }
    return 0;
}

int al_dest_covers(const char *phost, int pport, const char *bhost, int bport)
{
    if ((pport ? pport : 443) != (bport ? bport : 443))
        return 0;
    if (strcasecmp(phost, bhost) == 0)
        return 1;
    /* "*.example.com" covers "a.example.com" and "*.a.example.com" */
    if (strncmp(phost, "*.", 2) == 0) {
        const char *suffix = phost + 1; /* ".example.com" */
        size_t sl = strlen(suffix), bl = strlen(bhost);
        return bl > sl && strcasecmp(bhost + bl - sl, suffix) == 0;
    }
    return 0;
}

int al_dest_host_canon(const char *h, int wildcard, char *out, size_t n)
{
    unsigned char a[16];
    size_t len;

    if (!al_dest_host_valid(h, wildcard))
        return AL_ERR_INVAL;
    if (inet_pton(AF_INET6, h, a) == 1)
        return inet_ntop(AF_INET6, a, out, (socklen_t)n) ? 0 : AL_ERR_TOOBIG;
    if (inet_pton(AF_INET, h, a) == 1)
        return inet_ntop(AF_INET, a, out, (socklen_t)n) ? 0 : AL_ERR_TOOBIG;
    len = strlen(h);
    if (len >= n)
        return AL_ERR_TOOBIG;
    for (size_t i = 0; i <= len; i++)
        out[i] = (char)tolower((unsigned char)h[i]);
    return 0;
}

int al_dest_method_valid(const char *m)
{
    size_t n = m ? strlen(m) : 0;

    if (n == 0 || n > AL_DEST_METHOD_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (m[i] < 'A' || m[i] > 'Z')
            return 0;
    return 1;
}

int al_dest_path_prefix_valid(const char *p)
{
    if (!p || p[0] != '/' || strlen(p) > AL_DEST_PATH_MAX)
        return 0;
    for (const char *c = p; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f || *c == '?' || *c == '#')
            return 0;
    return 1;
}
