/*
 * al_wipe: freeing heap memory that may have held a secret.
 *
 * al_wipe_free() zeroes a malloc'd block (its whole usable size, so bytes
 * past the length the caller remembers are covered too) before free().
 * al_wipe_pb is a protobuf-c allocator whose free does the same: unpack a
 * message that may carry a credential with it and free it with it, and no
 * copy of the value is left in freed heap. Both are glibc malloc based and
 * interoperate with plain malloc/free (a block may be allocated by one and
 * freed by the other; only al_wipe_free wipes).
 */
#ifndef AL_WIPE_H
#define AL_WIPE_H
#include <stddef.h>
#include <protobuf-c/protobuf-c.h>

/* Zeroes the usable size of p (from malloc/calloc/realloc/strdup), then frees it. NULL-safe. */
void al_wipe_free(void *p);

/* Like realloc, but the old block is wiped when the data moves or shrinks. */
void *al_wipe_realloc(void *p, size_t old_len, size_t new_len);

/* protobuf-c allocator: malloc to allocate, al_wipe_free to free. */
extern ProtobufCAllocator al_wipe_pb;

#endif
