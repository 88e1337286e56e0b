/*
 * al_addr: numeric "host:port" addresses and listening sockets.
 *
 * Accepted forms: "1.2.3.4:80", "[::1]:80", "[::]:0", "localhost:80" (the one
 * name recognised, mapped to 127.0.0.1). Host names are never resolved here:
 * a listen address is configuration and resolving it would block; dialing
 * names goes through c-ares elsewhere. The port is decimal 0..65535; port 0
 * asks the kernel for a free one (read it back with al_addr_local_port()).
 * No state: every function works on the caller's buffers.
 */
#ifndef AL_ADDR_H
#define AL_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Longest text al_addr_format() writes, NUL included: "[v6]:port". */
#define AL_ADDR_STRLEN 56

/*
 * Parses hostport (borrowed) into *ss and *len (sizeof the sockaddr_in or
 * sockaddr_in6 written). Returns 0 or AL_ERR_INVAL (empty, no port, bad port,
 * a name other than localhost, unbracketed IPv6, a zone id).
 */
int al_addr_parse(const char *hostport, struct sockaddr_storage *ss, socklen_t *len);

/*
 * Opens a TCP socket listening on hostport with SO_REUSEADDR, O_NONBLOCK and
 * FD_CLOEXEC. On success *fd_out is the socket, owned by the caller (close
 * it). Returns 0, AL_ERR_INVAL (bad address) or -errno (socket, bind,
 * listen; e.g. -EADDRINUSE). *fd_out is untouched on failure.
 */
int al_listen_tcp(const char *hostport, int backlog, int *fd_out);

/* Formats sa as "1.2.3.4:80" or "[::1]:80" into buf (n >= AL_ADDR_STRLEN is
 * always enough). Returns buf; "?" for an unknown family. */
char *al_addr_format(const struct sockaddr *sa, char *buf, size_t n);

/* The local port fd is bound to, or a negative -errno. */
int al_addr_local_port(int fd);

#endif
