/*
 * al_log: formats one event per line and writes it with a single write(2)
 * (or, batched, in writes of whole lines of at most PIPE_BUF bytes) so lines
 * from one process never interleave.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "al_err.h"
#include "al_log.h"

int al_log_min_level = AL_LOG_INFO;
static const char *log_svc = "airlock";

#define BATCH_MAX (64 * 1024)
static char batch[BATCH_MAX];
static size_t batch_len;
static atomic_int batching; /* other threads read it: see mine() */
static pthread_t batch_thread;

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* nowhere to report it */
        p += w;
        n -= (size_t)w;
    }
}

/* Writes the gathered lines in writes of whole lines of at most PIPE_BUF
 * bytes (lines are shorter): a write to a pipe that size is atomic, so lines
 * of processes sharing stderr never interleave. */
static void batch_write(void)
{
    size_t off = 0;

    while (off < batch_len) {
        size_t n = batch_len - off;
        if (n > PIPE_BUF) {
            n = PIPE_BUF;
            while (n > 0 && batch[off + n - 1] != '\n')
                n--;
            if (n == 0)
                n = PIPE_BUF;
        }
        write_all(batch + off, n);
        off += n;
    }
    batch_len = 0;
}

/* Is the calling thread the batching one? (batch_thread is set before
 * batching is, and read only after it is seen set) */
static int mine(void)
{
    return atomic_load_explicit(&batching, memory_order_acquire) &&
           pthread_equal(pthread_self(), batch_thread);
}

void al_log_flush(void)
{
    if (batch_len && mine()) {
        int saved = errno;
        batch_write();
        errno = saved;
    }
}

void al_log_batch_forget(void)
{
    /* the parent's lines are the parent's to write */
    atomic_store_explicit(&batching, 0, memory_order_release);
    batch_len = 0;
}

void al_log_batch_start(void)
{
    static int once;

    if (!once) {
        once = 1;
        atexit(al_log_flush);
        pthread_atfork(NULL, NULL, al_log_batch_forget);
    }
    batch_thread = pthread_self();
    atomic_store_explicit(&batching, 1, memory_order_release);
}

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void al_log_set_service(const char *svc)
{
    log_svc = svc;
}

int al_log_set_level_name(const char *name)
{
    for (int i = 0; i <= AL_LOG_OFF; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            al_log_min_level = i;
            return 0;
        }
    }
    return AL_ERR_INVAL;
}

char *al_log_quote(char *buf, size_t n, const char *s, size_t len)
{
    size_t o = 0;

    if (n < 8) {
        if (n)
            buf[0] = '\0';
        return buf;
    }
    if (!s) {
        snprintf(buf, n, "-");
        return buf;
    }
    buf[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o + 8 >= n) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            o += (size_t)snprintf(buf + o, n - o, "\\x%02x", c);
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

void al_log_write(int level, const char *event, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    size_t o;
    va_list ap;
    int saved = errno;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    if (level < 0 || level > AL_LOG_ERROR)
        level = AL_LOG_ERROR;
    o = (size_t)snprintf(line, sizeof(line),
                         "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s svc=%s event=%s ",
                         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                         tm.tm_sec, (int)(tv.tv_usec / 1000), level_names[level], log_svc, event);
    if (o < sizeof(line)) {
        va_start(ap, fmt);
        int m = vsnprintf(line + o, sizeof(line) - o, fmt, ap);
        va_end(ap);
        if (m > 0)
            o += (size_t)m;
    }
    if (o > sizeof(line) - 4)
        o = sizeof(line) - 4;
    line[o++] = '\n';
    if (mine()) {
        if (level >= AL_LOG_WARN || batch_len + o > sizeof(batch))
            batch_write();
        if (level < AL_LOG_WARN) {
            memcpy(batch + batch_len, line, o);
            batch_len += o;
            errno = saved;
            return;
        }
    }
    write_all(line, o);
    errno = saved;
}
