/*
 * al_base64: table-driven RFC 4648 encoder and a strict decoder. Neither
 * allocates; both work on caller buffers sized with the _len helpers.
 */
#include <stdint.h>
#include <string.h>

#include "al_base64.h"
#include "al_err.h"

#define FLAGS_KNOWN (AL_BASE64_URL | AL_BASE64_NOPAD)

static const char std_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t al_base64_encoded_len(size_t n, unsigned flags)
{
    size_t groups = n / 3, rem = n % 3;

    if (groups > (SIZE_MAX - 4) / 4)
        return 0;
    if (flags & AL_BASE64_NOPAD)
        return groups * 4 + (rem ? rem + 1 : 0);
    return groups * 4 + (rem ? 4 : 0);
}

int al_base64_encode(const uint8_t *in, size_t n, char *out, size_t outsize, unsigned flags,
                     size_t *outlen)
{
    const char *a = (flags & AL_BASE64_URL) ? url_alpha : std_alpha;
    size_t need = al_base64_encoded_len(n, flags), o = 0, i = 0;

    if ((flags & ~FLAGS_KNOWN) || !out || (n && !in))
        return AL_ERR_INVAL;
    if ((n && need == 0) || outsize <= need) {
        if (outsize)
            out[0] = '\0';
        return AL_ERR_TOOBIG;
    }
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        out[o++] = a[v & 63];
    }
    if (n - i) {
        uint32_t v = (uint32_t)in[i] << 16 | (n - i == 2 ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        if (n - i == 2)
            out[o++] = a[(v >> 6) & 63];
        if (!(flags & AL_BASE64_NOPAD)) {
            if (n - i == 1)
                out[o++] = '=';
            out[o++] = '=';
        }
    }
    out[o] = '\0';
    if (outlen)
        *outlen = o;
    return 0;
}

size_t al_base64_decoded_maxlen(size_t n)
{
    return n / 4 * 3 + 2;
}

/* Returns the 6-bit value of c in the chosen alphabet, or -1. */
static int dec1(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* Decodes k (2..4) characters into k-1 bytes; checks the unused bits are zero. */
static int dec_group(const char *in, size_t k, int url, uint8_t *out)
{
    uint32_t v = 0;

    for (size_t j = 0; j < 4; j++) {
        int d = j < k ? dec1((unsigned char)in[j], url) : 0;
        if (d < 0)
            return AL_ERR_INVAL;
        v = v << 6 | (uint32_t)d;
    }
    if ((k == 2 && (v & 0xffff)) || (k == 3 && (v & 0xff)))
        return AL_ERR_INVAL;
    out[0] = (uint8_t)(v >> 16);
    if (k > 2)
        out[1] = (uint8_t)(v >> 8);
    if (k > 3)
        out[2] = (uint8_t)v;
    return 0;
}

int al_base64_decode(const char *in, size_t n, uint8_t *out, size_t outsize, unsigned flags,
                     size_t *outlen)
{
    int url = (flags & AL_BASE64_URL) != 0, rc;
    size_t data = n, rem, need, o = 0;

    if ((flags & ~FLAGS_KNOWN) || !outlen || (n && (!in || !out)))
        return AL_ERR_INVAL;
    if (!(flags & AL_BASE64_NOPAD)) {
        if (n % 4)
            return AL_ERR_INVAL;
        if (n && in[n - 1] == '=') {
            data--;
            if (in[n - 2] == '=')
                data--;
        }
    }
    rem = data % 4;
    if (rem == 1)
        return AL_ERR_INVAL;
    need = data / 4 * 3 + (rem ? rem - 1 : 0);
    if (need > outsize)
        return AL_ERR_TOOBIG;
    for (size_t i = 0; i < data; i += 4) {
        size_t k = data - i < 4 ? data - i : 4;
        rc = dec_group(in + i, k, url, out + o);
        if (rc < 0)
            return rc;
        o += k - 1;
    }
    *outlen = o;
    return 0;
}
