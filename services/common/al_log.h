/*
 * al_log: one line per event on stderr, key=value.
 *
 *   AL_LOG_INFO("conn.accept", "conn=%llu peer=%s", id, addr);
 *   -> ts=2026-12-03T18:40:01.123Z level=info svc=intake event=conn.accept conn=7 peer=...
 *
 * The level is tested before any argument is evaluated. Never pass a secret:
 * values given to these macros end up in logs. Strings from the network must go
 * through al_log_quote() (escapes and caps them) before being logged.
 */
#ifndef AL_LOG_H
#define AL_LOG_H

#include <stddef.h>

enum al_log_level { AL_LOG_DEBUG = 0, AL_LOG_INFO, AL_LOG_WARN, AL_LOG_ERROR, AL_LOG_OFF };

extern int al_log_min_level;

/* Sets the service name written as svc= on every line (borrowed; keep it static). */
void al_log_set_service(const char *svc);
/* Parses "debug|info|warn|error|off"; returns 0 or AL_ERR_INVAL. */
int al_log_set_level_name(const char *name);
void al_log_write(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Batching, for an event-loop thread: from al_log_batch_start() on, debug and
 * info lines of the calling thread are gathered (up to 64 KiB) and written
 * with one write(2) by al_log_flush(), which the loop calls before it waits
 * (al_service does), so a request's log line costs no syscall of its own and
 * never delays its answer. A warn or error line, a line of another thread and
 * a full buffer write what is gathered first, so lines of one thread keep
 * their order. Flushed at exit; a forked child starts with an empty buffer
 * and writes directly. A process killed outright loses at most the lines of
 * the loop turn in progress.
 */
void al_log_batch_start(void);
void al_log_flush(void);
/* In a child made by a raw clone(2) (no atfork handlers run): drop the
 * parent's gathered lines and write directly from now on. */
void al_log_batch_forget(void);

/*
 * Copies s into buf (size n) as a quoted, escaped string, cut to n-1 bytes with
 * "..." when longer. Returns buf. Safe on NULL (writes "-").
 */
char *al_log_quote(char *buf, size_t n, const char *s, size_t len);

#define AL_LOG_AT(lvl, ev, ...)                                                                    \
    do {                                                                                           \
        if ((lvl) >= al_log_min_level)                                                             \
            al_log_write((lvl), (ev), __VA_ARGS__);                                                \
    } while (0)
#define AL_LOG_DEBUG(ev, ...) AL_LOG_AT(AL_LOG_DEBUG, ev, __VA_ARGS__)
#define AL_LOG_INFO(ev, ...)  AL_LOG_AT(AL_LOG_INFO, ev, __VA_ARGS__)
#define AL_LOG_WARN(ev, ...)  AL_LOG_AT(AL_LOG_WARN, ev, __VA_ARGS__)
#define AL_LOG_ERROR(ev, ...) AL_LOG_AT(AL_LOG_ERROR, ev, __VA_ARGS__)

#endif
