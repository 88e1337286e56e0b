/*
 * al_addr: parses numeric "host:port" text and opens non-blocking listening
 * sockets. Stateless.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "al_addr.h"
#include "al_err.h"

/* Decimal 0..65535, digits only. */
static int parse_port(const char *s, in_port_t *port)
{
    unsigned v = 0;

    if (!*s)
        return AL_ERR_INVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return AL_ERR_INVAL;
        v = v * 10 + (unsigned)(*s - '0');
        if (v > 65535)
            return AL_ERR_INVAL;
    }
    *port = htons((in_port_t)v);
    return 0;
}

int al_addr_parse(const char *hostport, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *colon, *h = hostport;
    size_t hlen;
    in_port_t port;

    if (!hostport || !ss || !len)
        return AL_ERR_INVAL;
    if (*h == '[') {
        const char *close = strchr(h, ']');
        if (!close || close[1] != ':')
            return AL_ERR_INVAL;
        h++;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(h, ':');
        if (!colon)
            return AL_ERR_INVAL;
        hlen = (size_t)(colon - h);
        if (memchr(h, ':', hlen))
            return AL_ERR_INVAL; /* IPv6 must be bracketed */
    }
    if (hlen == 0 || hlen >= sizeof(host) || parse_port(colon + 1, &port) < 0)
        return AL_ERR_INVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    memset(ss, 0, sizeof(*ss));
    if (*hostport != '[') {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
            return AL_ERR_INVAL;
        sin->sin_family = AF_INET;
        sin->sin_port = port;
        *len = sizeof(*sin);
        return 0;
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
        return AL_ERR_INVAL;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = port;
    *len = sizeof(*sin6);
    return 0;
}

int al_listen_tcp(const char *hostport, int backlog, int *fd_out)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd = -1, one = 1, rc;

    rc = al_addr_parse(hostport, &ss, &len);
    if (rc < 0)
        return rc;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, backlog) < 0) {
        rc = -errno;
        goto out;
    }
    *fd_out = fd;
    fd = -1;
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

char *al_addr_format(const struct sockaddr *sa, char *buf, size_t n)
{
    char ip[INET6_ADDRSTRLEN];

    if (!n)
        return buf;
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        snprintf(buf, n, "%s:%u", ip, ntohs(sin->sin_port));
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, n, "[%s]:%u", ip, ntohs(sin6->sin6_port));
    } else {
        snprintf(buf, n, "?");
    }
    return buf;
}

int al_addr_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -EAFNOSUPPORT;
}
