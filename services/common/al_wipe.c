/* al_wipe: see al_wipe.h. */
#include "al_wipe.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

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
