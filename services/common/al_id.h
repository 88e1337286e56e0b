/*
 * al_id: time-ordered 128-bit identifiers (grant ids, job ids).
 *
 * Layout (UUIDv7's, without its version bits): the Unix time in milliseconds
 * in the first 48 bits, big endian, then 80 random bits from libsodium's
 * CSPRNG. Ids made one after another sort by time, so a B-tree index on them
 * (credstore's audit index on grant_id, intake's jobs and events keyed by job
 * id) grows at its right edge, one page per commit, instead of taking each
 * new row at a random leaf; the 80 random bits keep ids unique and
 * unguessable. An id says when it was made, to the millisecond.
 */
#ifndef AL_ID_H
#define AL_ID_H

#include <stddef.h>
#include <stdint.h>

#define AL_ID_LEN     16 /* bytes */
#define AL_ID_HEX_LEN 32 /* hex digits, without the NUL */

/* Fills id with a new identifier. Returns 0, or AL_ERR_CRYPTO when libsodium
 * cannot be initialized. Thread-safe. */
int al_id_new(uint8_t id[AL_ID_LEN]);

/* As al_id_new, as 32 lower-case hex digits plus NUL in out. */
int al_id_new_hex(char out[AL_ID_HEX_LEN + 1]);

#endif
