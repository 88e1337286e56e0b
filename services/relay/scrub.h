/*
 * scrub: removes credential values from bytes on their way to an agent.
 *
 * A struct rl_scrub is a set of patterns derived from one or more secret
 * values; every form in which a value can appear in an HTTP response is a
 * pattern:
 *   - raw bytes;
 *   - hex, lower and upper case (matched case-insensitively);
 *   - base64, standard and URL alphabets, at each of the three alignments the
 *     value can have inside a longer base64 text (the characters that depend
 *     on neighbouring bytes are left out of each pattern), padded or not;
 *   - percent-encoding (every byte outside RFC 3986 "unreserved" as %XX, hex
 *     digits either case; space also as '+');
 *   - JSON string escaping as JSON.stringify / jansson produce it (\" \\ \b
 *     \f \n \r \t, other control bytes as \u00XX either case, and '/' both
 *     raw and as \/), with non-ASCII as \uHHHH (Python), with < > & as
 *     \u00XX (Go, Rails), and as .NET's default encoder writes it (< > & ' "
 *     + ` as \u00XX); each also escaped twice.
 * A match is replaced by RL_SCRUB_MARK, or by the value's own replacement
 * text when it was added with rl_scrub_add_as() (the egress proxy puts a
 * credential's placeholder back where its value appeared). Values are
 * numbered in the order they were added (0, 1, ...): rl_scrub_find() and
 * rl_scrub_stream_first() say which value matched. Matching is streaming: a value split
 * across any number of chunks (TCP reads, HTTP/1.1 chunks, HTTP/2 DATA
 * frames, SSE events written in pieces) is found, because a stream holds back
 * the bytes that could be the start of a match (a proper prefix of some
 * form, at most longest pattern - 1 bytes) until the next chunk or the end;
 * everything else is passed on at once, so a short event is not delayed.
 *
 * Values shorter than RL_SCRUB_MIN_VALUE bytes are refused: their encoded
 * forms would match ordinary text.
 *
 * Memory: patterns are derived secret material; they live in locked memory
 * (al_wipe) and are wiped on free. The held-back bytes of a stream are wiped
 * on free as well.
 *
 * Lifecycle: rl_scrub_new() -> rl_scrub_add() per value -> any number of
 * rl_scrub_stream_new() (the set must outlive its streams and must not change
 * while streams use it) -> feed/finish -> rl_scrub_stream_free() ->
 * rl_scrub_free().
 */
#ifndef RL_SCRUB_H
#define RL_SCRUB_H

#include <stddef.h>
#include <stdint.h>

#include "rlbuf.h"

#define RL_SCRUB_MARK      "[airlock:redacted]"
#define RL_SCRUB_MIN_VALUE 8    /* shortest value accepted */
#define RL_SCRUB_MAX_VALUE 8192 /* longest value accepted */

struct rl_scrub;
struct rl_scrub_stream;

/* Empty set. Returns 0 or AL_ERR_NOMEM. */
int rl_scrub_new(struct rl_scrub **out);

/* Adds every form of value v (n bytes, copied into locked memory; the caller
 * keeps and wipes its own copy). Returns 0, AL_ERR_INVAL (n outside
 * [RL_SCRUB_MIN_VALUE, RL_SCRUB_MAX_VALUE]) or AL_ERR_NOMEM. */
int rl_scrub_add(struct rl_scrub *s, const uint8_t *v, size_t n);

/* As rl_scrub_add(), and matches of this value's forms are replaced by
 * repl[0..repl_len) (copied; at most RL_SCRUB_MAX_VALUE bytes) instead of
 * RL_SCRUB_MARK. Returns 0, AL_ERR_INVAL (also for repl NULL) or
 * AL_ERR_NOMEM. */
int rl_scrub_add_as(struct rl_scrub *s, const uint8_t *v, size_t n, const char *repl,
                    size_t repl_len);

/* Number of patterns and the longest one (for sizing hold-back buffers). */
size_t rl_scrub_patterns(const struct rl_scrub *s);
size_t rl_scrub_max_len(const struct rl_scrub *s);

/* Wipes and frees. NULL is fine. */
void rl_scrub_free(struct rl_scrub *s);

/* One-shot: does buf[0..n) contain any form of any value? For header values
 * and other small complete strings. Returns 1 or 0. */
int rl_scrub_contains(const struct rl_scrub *s, const uint8_t *buf, size_t n);

/* One-shot: the number of the value whose form matches first (leftmost, then
 * longest) in buf[0..n), or -1 when none does. */
long rl_scrub_find(const struct rl_scrub *s, const uint8_t *buf, size_t n);

/* One-shot: appends buf with every match replaced to out. Returns the number
 * of replacements (>= 0) or a negative rl_buf_append() error. */
long rl_scrub_copy(const struct rl_scrub *s, const uint8_t *buf, size_t n, struct rl_buf *out);

/* A stream over set s (borrowed; must outlive the stream). Returns 0 or
 * AL_ERR_NOMEM. */
int rl_scrub_stream_new(const struct rl_scrub *s, struct rl_scrub_stream **out);

/* Feeds n bytes; appends to out every byte that can no longer be part of a
 * match, with matches replaced. Returns 0 or a negative rl_buf_append()
 * error (the stream is then unusable). */
int rl_scrub_stream_feed(struct rl_scrub_stream *st, const uint8_t *in, size_t n,
                         struct rl_buf *out);

/* End of input: appends the held-back bytes (scrubbed). Returns as feed. */
int rl_scrub_stream_finish(struct rl_scrub_stream *st, struct rl_buf *out);

/* Bytes currently held back, and replacements made so far. */
size_t rl_scrub_stream_held(const struct rl_scrub_stream *st);
unsigned long rl_scrub_stream_hits(const struct rl_scrub_stream *st);

/* The number of the value of the first replacement the stream made, or -1. */
long rl_scrub_stream_first(const struct rl_scrub_stream *st);

/* Wipes and frees. NULL is fine. */
void rl_scrub_stream_free(struct rl_scrub_stream *st);

#endif
