/*
 * al_base64: RFC 4648 base64, standard and URL-safe alphabets, into caller
 * buffers (no allocation). Used to carry signed grants in HTTP headers.
 *
 * Decoding is strict so that one value has one encoding: no whitespace, no
 * characters outside the alphabet, padding exactly as the flags say, and the
 * unused low bits of the last character must be zero.
 */
#ifndef AL_BASE64_H
#define AL_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Flags for encode and decode. */
#define AL_BASE64_URL   0x1u /* "-_" instead of "+/" (RFC 4648 section 5) */
#define AL_BASE64_NOPAD 0x2u /* no trailing '=': not written, and rejected when read */

/*
 * Returns the number of characters al_base64_encode() writes for n input bytes
 * with these flags, not counting the terminating NUL. Returns 0 if that number
 * would not fit a size_t.
 */
size_t al_base64_encoded_len(size_t n, unsigned flags);

/*
 * Encodes in[0..n) into out (size outsize) and NUL-terminates it. outsize must
 * be at least al_base64_encoded_len(n, flags) + 1. *outlen (may be NULL) gets
 * the number of characters written, without the NUL.
 * Returns 0, AL_ERR_INVAL (NULL pointer with n > 0, unknown flag) or
 * AL_ERR_TOOBIG (out too small; out is then left an empty string if outsize > 0).
 * Borrows in and out for the call only.
 */
int al_base64_encode(const uint8_t *in, size_t n, char *out, size_t outsize, unsigned flags,
                     size_t *outlen);

/* Returns an upper bound on the bytes decoded from n base64 characters. */
size_t al_base64_decoded_maxlen(size_t n);

/*
 * Decodes in[0..n) (not NUL-terminated; n characters) into out (size outsize).
 * Without AL_BASE64_NOPAD the input must be padded to a multiple of 4; with it,
 * '=' is rejected. *outlen gets the number of bytes written.
 * Returns 0, AL_ERR_INVAL (bad character, bad length, bad padding, non-zero
 * trailing bits, unknown flag) or AL_ERR_TOOBIG (out too small). On error the
 * contents of out are unspecified. Borrows in and out for the call only.
 */
int al_base64_decode(const char *in, size_t n, uint8_t *out, size_t outsize, unsigned flags,
                     size_t *outlen);

#endif
