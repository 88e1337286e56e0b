/*
 * al_arena: a bump allocator for per-stream memory.
 *
 * Everything a stream needs while it lives (request headers, the unpacked
 * request message, scratch) is carved from one arena and released in one place
 * when the stream closes. An arena has a hard cap: allocations beyond it fail
 * (return NULL), so a peer cannot make one stream grow without bound.
 *
 * Lifecycle: al_arena_init() on embedded storage, al_arena_alloc() any number
 * of times, al_arena_cleanup() frees every chunk. Individual frees are no-ops.
 */
#ifndef AL_ARENA_H
#define AL_ARENA_H

#include <stddef.h>
#include <protobuf-c/protobuf-c.h>

struct al_arena_chunk;

struct al_arena {
    struct al_arena_chunk *head;
    size_t used;           /* bytes handed out, for the cap */
    size_t cap;            /* hard cap on bytes handed out; 0 = unlimited */
    int wipe;              /* zero every chunk before freeing it (secrets inside) */
    ProtobufCAllocator pb; /* allocator view for protobuf_c_message_unpack */
};

/* Prepares an empty arena with a hard cap of `cap` bytes (0 = no cap). */
void al_arena_init(struct al_arena *a, size_t cap);

/* Returns n bytes aligned for any type, or NULL when over the cap or out of memory.
 * The memory is owned by the arena and valid until al_arena_cleanup(). */
void *al_arena_alloc(struct al_arena *a, size_t n);

/* Copies n bytes (plus a NUL) into the arena; returns the copy or NULL. */
char *al_arena_strndup(struct al_arena *a, const char *s, size_t n);

/* Returns the protobuf-c allocator that allocates from this arena (borrowed;
 * valid while the arena lives). Messages unpacked with it need no free. */
ProtobufCAllocator *al_arena_pb(struct al_arena *a);

/* From now on, al_arena_cleanup() zeroes every chunk before freeing it. */
void al_arena_set_wipe(struct al_arena *a);

/* Frees every chunk; the arena is empty and reusable afterwards. NULL-safe. */
void al_arena_cleanup(struct al_arena *a);

#endif
