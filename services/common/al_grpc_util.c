/* al_grpc_util: status names, grpc-timeout and grpc-message codecs. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "al_err.h"
#include "al_grpc.h"

static const char *const status_names[] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

const char *al_grpc_status_name(int code)
{
    if (code < 0 || code > 16)
        return "UNKNOWN";
    return status_names[code];
}

long al_grpc_frame_next(const uint8_t *buf, size_t len, size_t max, const uint8_t **msg,
                        size_t *msglen, int *compressed)
{
    uint32_t n;

    if (len < 5)
        return 0;
    if (buf[0] & ~1u)
        return AL_ERR_PROTO;
    n = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 | buf[4];
    if (n > max)
        return AL_ERR_TOOBIG;
    if (len - 5 < n)
        return 0;
    *msg = buf + 5;
    *msglen = n;
    *compressed = buf[0] & 1;
    return (long)n + 5;
}

void al_grpc_frame_prefix(uint8_t out[5], size_t msglen)
{
    out[0] = 0;
    out[1] = (uint8_t)(msglen >> 24);
    out[2] = (uint8_t)(msglen >> 16);
    out[3] = (uint8_t)(msglen >> 8);
    out[4] = (uint8_t)msglen;
}

int al_grpc_parse_timeout(const char *v, size_t len, double *seconds)
{
    double unit;
    unsigned long long n = 0;

    /* TimeoutValue is at most 8 ASCII digits, then one unit character */
    if (len < 2 || len > 9)
        return AL_ERR_INVAL;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return AL_ERR_INVAL;
        n = n * 10 + (unsigned)(v[i] - '0');
    }
    switch (v[len - 1]) {
    case 'H':
        unit = 3600;
        break;
    case 'M':
        unit = 60;
        break;
    case 'S':
        unit = 1;
        break;
    case 'm':
        unit = 1e-3;
        break;
    case 'u':
        unit = 1e-6;
        break;
    case 'n':
        unit = 1e-9;
        break;
    default:
        return AL_ERR_INVAL;
    }
    *seconds = (double)n * unit;
    return 0;
}

size_t al_grpc_encode_message(const char *msg, char *buf, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    if (n == 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *)msg; msg && *p; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
            if (o + 1 >= n)
                break;
            buf[o++] = (char)*p;
        } else {
            if (o + 3 >= n)
                break;
            buf[o++] = '%';
            buf[o++] = hex[*p >> 4];
            buf[o++] = hex[*p & 15];
        }
    }
    buf[o] = '\0';
    return o;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t al_grpc_decode_message(char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int h, l;
        if (s[i] == '%' && i + 2 < len && (h = hexval(s[i + 1])) >= 0 &&
            (l = hexval(s[i + 2])) >= 0) {
            s[o++] = (char)(h << 4 | l);
            i += 2;
        } else {
            s[o++] = s[i];
        }
    }
    s[o] = '\0';
    return o;
}
