/*
 * sni: reads the server name out of the first bytes a client sends through
 * a CONNECT tunnel, which must be a TLS ClientHello.
 *
 * The bytes are TLS records (content type handshake, record version
 * 0x0300..0x0304, length 1..16384); the handshake message they carry (it
 * may span several records, up to EG_HELLO_MAX bytes in all) must be a
 * ClientHello, parsed field by field with every length checked against its
 * container: legacy version, random, session id (<= 32), cipher suites
 * (even, >= 2), compression methods (>= 1), extensions (each type at most
 * once). The server_name extension must hold exactly one host_name entry,
 * 1..253 bytes of letters, digits, '-' and '.' (no trailing dot), which is
 * returned lowercased; no extension means no name. Anything else after the
 * ClientHello (a second handshake message in the same record) is ignored.
 *
 * Pure function over the caller's buffer; no allocation.
 */
#ifndef EG_SNI_H
#define EG_SNI_H

#include <stddef.h>
#include <stdint.h>

#define EG_HELLO_MAX (64 * 1024) /* ClientHello bytes accepted (records included) */
#define EG_SNI_MAX   254

/* Parses d[0..n). Returns:
 *   0            a complete ClientHello; sni (size EG_SNI_MAX) holds the
 *                name or "" when the client sent none; *used is the number
 *                of bytes of the records that carried it;
 *   1            more bytes are needed;
 *   AL_ERR_PROTO the bytes are not TLS (first byte not a handshake record,
 *                or an SSLv2-style hello);
 *   AL_ERR_INVAL malformed, or larger than EG_HELLO_MAX (why says which). */
int eg_hello_parse(const uint8_t *d, size_t n, char *sni, size_t *used, const char **why);

#endif
