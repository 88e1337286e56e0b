/*
 * rlbuf: growable byte buffer with a hard cap (see rlbuf.h).
 */
#include "rlbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "al_err.h"

void rl_buf_init(struct rl_buf *b, size_t max)
{
    b->p = NULL;
    b->len = b->cap = 0;
    b->max = max ? max : SIZE_MAX;
}

static int reserve(struct rl_buf *b, size_t n)
{
    size_t want, cap;
    uint8_t *p;

    if (n > b->max - b->len)
        return AL_ERR_TOOBIG;
    want = b->len + n;
    if (want <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    /* never realloc: the old block may hold upstream bytes and must be wiped */
    p = malloc(cap);
    if (!p)
        return AL_ERR_NOMEM;
    if (b->len)
        memcpy(p, b->p, b->len);
    if (b->p) {
        OPENSSL_cleanse(b->p, b->cap);
        free(b->p);
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

int rl_buf_append(struct rl_buf *b, const void *d, size_t n)
{
    int rc;

    if (n == 0)
        return 0;
    rc = reserve(b, n);
    if (rc < 0)
        return rc;
    memcpy(b->p + b->len, d, n);
    b->len += n;
    return 0;
}

int rl_buf_puts(struct rl_buf *b, const char *s)
{
    return rl_buf_append(b, s, strlen(s));
}

int rl_buf_printf(struct rl_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n, rc;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return AL_ERR_INVAL;
    rc = reserve(b, (size_t)n + 1); /* vsnprintf writes a NUL */
    if (rc < 0)
        return rc;
    va_start(ap, fmt);
    vsnprintf((char *)b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void rl_buf_consume(struct rl_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

void rl_buf_reset(struct rl_buf *b)
{
    if (b->p)
        OPENSSL_cleanse(b->p, b->cap);
    b->len = 0;
}

void rl_buf_cleanup(struct rl_buf *b)
{
    if (b->p) {
        OPENSSL_cleanse(b->p, b->cap);
        free(b->p);
    }
    b->p = NULL;
    b->len = b->cap = 0;
}
