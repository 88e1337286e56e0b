/* al_wipe: see al_wipe.h. */
#include "al_wipe.h"

#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "al_log.h"

void al_wipe_free(void *p)
{
    if (!p)
        return;
    OPENSSL_cleanse(p, malloc_usable_size(p));
    free(p);
}

void *al_wipe_realloc(void *p, size_t old_len, size_t new_len)
{
    void *q;

    if (!p)
        return malloc(new_len ? new_len : 1);
    q = malloc(new_len ? new_len : 1);
    if (!q)
        return NULL;
    memcpy(q, p, old_len < new_len ? old_len : new_len);
    al_wipe_free(p);
    return q;
}

static void *pb_alloc(void *data, size_t size)
{
    (void)data;
    return malloc(size ? size : 1);
}

static void pb_free(void *data, void *p)
{
    (void)data;
    al_wipe_free(p);
}

ProtobufCAllocator al_wipe_pb = {pb_alloc, pb_free, NULL};

/* ---- locked memory ---- */

/* Header in front of every al_secure_alloc block; 32 bytes keeps 16-byte alignment. */
struct secure_hdr {
    size_t map_len;
    size_t user_len;
    uint64_t magic;
    uint64_t pad;
};

#define SECURE_MAGIC 0x41495253454355ULL /* "AIRSECU" */

static atomic_int mlock_warned;

void *al_secure_alloc(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t len;
    struct secure_hdr *h;
    void *p;

    if (n == 0 || n > SIZE_MAX - sizeof(*h) - page)
        return NULL;
    len = (n + sizeof(*h) + page - 1) / page * page;
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    (void)madvise(p, len, MADV_DONTDUMP);
#ifdef MADV_WIPEONFORK
    (void)madvise(p, len, MADV_WIPEONFORK);
#endif
    if (mlock(p, len) < 0 && atomic_exchange(&mlock_warned, 1) == 0)
        AL_LOG_WARN("secure.mlock",
                    "errno=%d problem=\"mlock refused; secrets may be "
                    "swapped (raise RLIMIT_MEMLOCK)\"",
                    errno);
    h = p;
    h->map_len = len;
    h->user_len = n;
    h->magic = SECURE_MAGIC;
    return h + 1;
}

void al_secure_free(void *p)
{
    struct secure_hdr *h;
    size_t len;

    if (!p)
        return;
    h = (struct secure_hdr *)p - 1;
    if (h->magic != SECURE_MAGIC) /* not ours: leaking beats unmapping foreign memory */
        return;
    len = h->map_len;
    OPENSSL_cleanse(h, len);
    (void)munlock(h, len);
    (void)munmap(h, len);
}

void *al_secure_realloc(void *p, size_t old_len, size_t new_len)
{
    uint8_t *n = al_secure_alloc(new_len);

    if (!n)
        return NULL;
    if (p && old_len)
        memcpy(n, p, old_len < new_len ? old_len : new_len);
    al_secure_free(p);
    return n;
}
