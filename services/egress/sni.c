/*
 * sni: ClientHello parsing (see sni.h). The handshake bytes are gathered
 * from their records into a local buffer, then read with a bounds-checked
 * cursor.
 */
#include <string.h>

#include "al_err.h"
#include "sni.h"

struct cur {
    const uint8_t *p;
    size_t n, off;
    int bad;
};

static unsigned get(struct cur *c, size_t k) /* big-endian, k <= 3 */
{
    unsigned v = 0;

    if (c->bad || c->n - c->off < k) {
        c->bad = 1;
        return 0;
    }
    for (size_t i = 0; i < k; i++)
        v = v << 8 | c->p[c->off++];
    return v;
}

/* A sub-cursor over the next len bytes (skipped in c). */
static struct cur sub(struct cur *c, size_t len)
{
    struct cur s = {0};

    if (c->bad || c->n - c->off < len) {
        c->bad = 1;
        s.bad = 1;
        return s;
    }
    s.p = c->p + c->off;
    s.n = len;
    c->off += len;
    return s;
}

static int fail(const char **why, const char *text)
{
    *why = text;
    return AL_ERR_INVAL;
}

static int name_ok(const uint8_t *s, size_t n)
{
    if (n == 0 || n > 253 || s[n - 1] == '.' || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '.'))
            return 0;
        if (ch == '.' && s[i + 1] == '.')
            return 0;
    }
    return 1;
}

static int server_name(struct cur *e, char *sni, const char **why)
{
    struct cur list = sub(e, get(e, 2));
    unsigned type, len;
    struct cur name;

    if (e->bad || e->off != e->n)
        return fail(why, "malformed server_name extension");
    type = get(&list, 1);
    len = get(&list, 2);
    name = sub(&list, len);
    if (list.bad || type != 0 || list.off != list.n)
        return fail(why, "server_name must hold exactly one host name");
    if (!name_ok(name.p, name.n))
        return fail(why, "invalid server name in the ClientHello");
    for (size_t i = 0; i < name.n; i++)
        sni[i] = (char)((name.p[i] >= 'A' && name.p[i] <= 'Z') ? name.p[i] + 32 : name.p[i]);
    sni[name.n] = '\0';
    return 0;
}

static int parse_body(struct cur *h, char *sni, const char **why)
{
    unsigned seen[64] = {0}; /* extension types seen, the 64 lowest */
    struct cur ext;
    unsigned sid, cs, cm;

    get(h, 2);  /* legacy_version */
    sub(h, 32); /* random */
    sid = get(h, 1);
    if (sid > 32)
        return fail(why, "malformed ClientHello (session id)");
    sub(h, sid);
    cs = get(h, 2);
    if (h->bad || cs < 2 || cs % 2)
        return fail(why, "malformed ClientHello (cipher suites)");
    sub(h, cs);
    cm = get(h, 1);
    if (h->bad || cm < 1)
        return fail(why, "malformed ClientHello (compression methods)");
    sub(h, cm);
    if (h->bad)
        return fail(why, "malformed ClientHello");
    if (h->off == h->n)
        return 0; /* no extensions at all */
    ext = sub(h, get(h, 2));
    if (h->bad || h->off != h->n)
        return fail(why, "malformed ClientHello (extensions)");
    while (ext.off < ext.n) {
        unsigned type = get(&ext, 2);
        struct cur e = sub(&ext, get(&ext, 2));
        if (ext.bad)
            return fail(why, "malformed ClientHello (extension)");
        if (type < 64 && seen[type]++)
            return fail(why, "duplicate extension in the ClientHello");
        if (type == 0 && server_name(&e, sni, why) < 0)
            return AL_ERR_INVAL;
    }
    return 0;
}

int eg_hello_parse(const uint8_t *d, size_t n, char *sni, size_t *used, const char **why)
{
    uint8_t hs[EG_HELLO_MAX];
    size_t pos = 0, hl = 0;

    sni[0] = '\0';
    *used = 0;
    if (n == 0)
        return 1;
    if (d[0] != 0x16) {
        *why = "the tunnel does not start with a TLS ClientHello";
        return AL_ERR_PROTO;
    }
    for (;;) {
        size_t len;
        if (n - pos < 5)
            return 1;
        if (d[pos] != 0x16 || d[pos + 1] != 3 || d[pos + 2] > 4) {
            if (pos > 0)
                return fail(why, "malformed TLS record");
            *why = "the tunnel does not start with a TLS ClientHello";
            return AL_ERR_PROTO;
        }
        len = (size_t)d[pos + 3] << 8 | d[pos + 4];
        if (len == 0 || len > 16384)
            return fail(why, "malformed TLS record");
        if (pos + 5 + len > EG_HELLO_MAX)
            return fail(why, "ClientHello too large");
        if (n - pos - 5 < len)
            return 1;
        memcpy(hs + hl, d + pos + 5, len);
        hl += len;
        pos += 5 + len;
        if (hl < 4)
            continue;
        if (hs[0] != 1)
            return fail(why, "the first TLS message is not a ClientHello");
        size_t ml = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
        if (ml + 4 > EG_HELLO_MAX)
            return fail(why, "ClientHello too large");
        if (hl < ml + 4)
            continue;
        struct cur h = {hs + 4, ml, 0, 0};
        int rc = parse_body(&h, sni, why);
        if (rc < 0) {
            sni[0] = '\0';
            return rc;
        }
        *used = pos;
        return 0;
    }
}
