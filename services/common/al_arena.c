/* al_arena: chunked bump allocator; see al_arena.h. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "al_arena.h"

#define ARENA_CHUNK 4096
#define ARENA_ALIGN 16

struct al_arena_chunk {
    struct al_arena_chunk *next;
    size_t size, off;
    _Alignas(ARENA_ALIGN) unsigned char data[];
};

static void *pb_alloc(void *ud, size_t n)
{
    return al_arena_alloc(ud, n);
}

static void pb_free(void *ud, void *p)
{
    (void)ud;
    (void)p; /* freed with the arena */
}

void al_arena_init(struct al_arena *a, size_t cap)
{
    a->head = NULL;
    a->used = 0;
    a->cap = cap;
    a->wipe = 0;
    a->pb.alloc = pb_alloc;
    a->pb.free = pb_free;
    a->pb.allocator_data = a;
}

void *al_arena_alloc(struct al_arena *a, size_t n)
{
    struct al_arena_chunk *c = a->head;
    size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);

    if (n == 0)
        need = ARENA_ALIGN;
    if (need < n || (a->cap && (need > a->cap || a->used > a->cap - need)))
        return NULL;
    if (!c || c->size - c->off < need) {
        size_t sz = need > ARENA_CHUNK ? need : ARENA_CHUNK;
        c = malloc(sizeof(*c) + sz);
        if (!c)
            return NULL;
        c->size = sz;
        c->off = 0;
        /* a big one-off block goes behind the current chunk so the current
         * chunk's free space stays usable */
        if (a->head && need > ARENA_CHUNK) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->data + c->off;
    c->off += need;
    a->used += need;
    return p;
}

char *al_arena_strndup(struct al_arena *a, const char *s, size_t n)
{
    char *p = al_arena_alloc(a, n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void al_arena_set_wipe(struct al_arena *a)
{
    a->wipe = 1;
}

ProtobufCAllocator *al_arena_pb(struct al_arena *a)
{
    return &a->pb;
}

void al_arena_cleanup(struct al_arena *a)
{
    if (!a)
        return;
    struct al_arena_chunk *c = a->head;
    while (c) {
        struct al_arena_chunk *next = c->next;
        if (a->wipe)
            explicit_bzero(c->data, c->size);
        free(c);
        c = next;
    }
    a->head = NULL;
    a->used = 0;
}
