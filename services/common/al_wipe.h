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

/* Locked memory for secrets: its own anonymous mapping, mlock'ed (a
 * warning is logged once per process when RLIMIT_MEMLOCK refuses; the memory
 * still works), excluded from core dumps (MADV_DONTDUMP) and zeroed in a
 * forked child (MADV_WIPEONFORK). Returns NULL when n is 0 or memory is
 * short. Page granular: for values and key material, not for bulk data. */
void *al_secure_alloc(size_t n);

/* Cleanses, unlocks and unmaps memory from al_secure_alloc(). NULL is fine;
 * a pointer that is not from al_secure_alloc() is left alone (leaked). */
void al_secure_free(void *p);

/* Grows or shrinks a block from al_secure_alloc() (p NULL = allocate): a
 * new locked block, the first min(old_len, new_len) bytes copied, the old
 * block cleansed and unmapped. Returns NULL (p untouched) on failure. */
void *al_secure_realloc(void *p, size_t old_len, size_t new_len);

/* protobuf-c allocator: malloc to allocate, al_wipe_free to free. */
extern ProtobufCAllocator al_wipe_pb;

#endif
