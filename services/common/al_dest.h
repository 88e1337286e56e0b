/*
 * al_dest: network destinations as jobs (NetworkPolicy), credential bindings
 * and operators' egress ceilings write them: syntax checks and the
 * "covers" relation that says a job only narrows what it was given. Pure
 * functions; intake checks submitted jobs with them, the executor checks
 * them again (and its own configuration) before a job gets its proxy.
 *
 * Hosts are DNS names (labels of [A-Za-z0-9_-], not starting or ending
 * with '-', at most 253 characters, no trailing dot) or IP literals in
 * their canonical text (inet_pton: dotted-quad IPv4, IPv6 without
 * brackets); a name whose last label is numeric ("127.1", "0x7f.1") is an
 * IPv4 spelling other software reads as an address and is refused as
 * ambiguous. A leading "*." (where allowed) matches one or more extra
 * labels: "*.example.com" covers "a.example.com" and "*.a.example.com",
 * never "example.com" or "a.example.com.evil.net". Names compare
 * case-insensitively. Port 0 means 443.
 */
#ifndef AL_DEST_H
#define AL_DEST_H

#include <stddef.h>

#define AL_DEST_METHOD_MAX 32
#define AL_DEST_PATH_MAX   1024
#define AL_DEST_HOST_MAX   256 /* buffer for any canonical host plus NUL */

/* 1 when h is a DNS name or IP literal; wildcard allows a leading "*.". */
int al_dest_host_valid(const char *h, int wildcard);

/* Writes the canonical form of a valid host into out (size n >= 256): a
 * name in lower case, an IP literal as inet_ntop writes it. Returns 0,
 * AL_ERR_INVAL (not al_dest_host_valid) or AL_ERR_TOOBIG. */
int al_dest_host_canon(const char *h, int wildcard, char *out, size_t n);

/*
 * Parses "host[:port]" (IPv6 in brackets; port default 443; a "*." name
 * allowed) into host (size hn) and *port. Returns 0 or AL_ERR_INVAL.
 */
int al_dest_parse(const char *s, char *host, size_t hn, int *port);

/* 1 when pattern host/port (port 0 = 443) covers host/port. */
int al_dest_covers(const char *phost, int pport, const char *bhost, int bport);

/* 1 when m is an HTTP method as policies write it: 1-32 of A-Z. */
int al_dest_method_valid(const char *m);

/* 1 when p is a path prefix: starts with "/", at most 1024 bytes, no
 * space, control byte, DEL, '?' or '#'. */
int al_dest_path_prefix_valid(const char *p);

#endif
