/*
 * rlbuf: a growable byte buffer with a hard cap, the unit of output of the
 * tunnel's streaming filters (scrub, mcp) and of the HTTP/1.1 writers.
 * Embedded objects: rl_buf_init() -> append/consume... -> rl_buf_cleanup().
 * Bytes that passed through may have been secret-bearing upstream bytes, so
 * cleanup wipes the whole allocation before freeing it.
 */
#ifndef RL_BUF_H
#define RL_BUF_H

#include <stddef.h>
#include <stdint.h>

struct rl_buf {
    uint8_t *p;
    size_t len; /* bytes held, starting at p */
    size_t cap; /* allocated */
    size_t max; /* hard cap on len; 0 = SIZE_MAX */
};

/* Empty buffer that will never hold more than max bytes (0 = no cap). */
void rl_buf_init(struct rl_buf *b, size_t max);

/* Appends n bytes (copied). Returns 0, AL_ERR_TOOBIG when len would exceed
 * max (nothing appended), or AL_ERR_NOMEM. */
int rl_buf_append(struct rl_buf *b, const void *d, size_t n);

/* Appends a NUL-terminated string without its NUL; as rl_buf_append(). */
int rl_buf_puts(struct rl_buf *b, const char *s);

/* printf into the buffer (no NUL kept); as rl_buf_append(), or AL_ERR_INVAL
 * on a formatting error. */
int rl_buf_printf(struct rl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Drops the first n bytes (n > len drops all). */
void rl_buf_consume(struct rl_buf *b, size_t n);

/* len = 0, keeping the allocation (wiped). */
void rl_buf_reset(struct rl_buf *b);

/* Wipes and frees; the buffer is empty and reusable afterwards. */
void rl_buf_cleanup(struct rl_buf *b);

#endif
