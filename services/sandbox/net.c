/*
 * net (child side): the sandbox's network namespace.
 *
 * A new network namespace has one interface, lo, down, and no routes. Init,
 * as root of the sandbox's user namespace, in this order:
 *
 *   loopback        brings lo up (127.0.0.1 and ::1 inside work for the
 *                   job's own servers); nothing else: no address outside the
 *                   namespace is reachable, the host's loopback included
 *   proxy listener  with a proxy port: TCP sockets listening on
 *                   127.0.0.1:<port> and [::1]:<port> (the latter skipped
 *                   only when the namespace has no IPv6), made before the
 *                   job can run anything, so it can never bind the port
 *                   first; init reports them to the parent (spawn.c), which
 *                   takes them with pidfd_getfd for the egress proxy, and
 *                   keeps them until it exits (close-on-exec: the command
 *                   never has them)
 *   hook            sb_config.net, for further plumbing
 *
 * Async-signal-safe calls only (this runs in the cloned init).
 */
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sb_int.h"

static int loopback_up(void)
{
    struct ifreq ifr;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), rc = 0;
    if (s < 0)
        return -errno;
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, "lo", 3);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
        rc = -errno;
    } else {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            rc = -errno;
    }
    close(s);
    return rc;
}

/* A TCP socket listening on the loopback address of `family` at `port`:
 * the descriptor, or -errno. */
static int listen_loopback(int family, uint16_t port)
{
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    const struct sockaddr *sa;
    socklen_t len;
    int one = 1, rc = 0;
    if (family == AF_INET) {
        memset(&a4, 0, sizeof(a4));
        a4.sin_family = AF_INET;
        a4.sin_port = htons(port);
        a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa = (const struct sockaddr *)&a4;
        len = sizeof(a4);
    } else {
        memset(&a6, 0, sizeof(a6));
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons(port);
        a6.sin6_addr = in6addr_loopback;
        sa = (const struct sockaddr *)&a6;
        len = sizeof(a6);
    }
    int s = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -errno;
    if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (family == AF_INET6 && setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(s, sa, len) < 0 || listen(s, SOMAXCONN) < 0)
        rc = -errno;
    if (rc < 0) {
        close(s);
        return rc;
    }
    return s;
}

static int proxy_listeners(uint16_t port, int lfd[2], struct sb_fail *f)
{
    int s = listen_loopback(AF_INET, port);
    if (s < 0) {
        f->step = SB_STEP_PROXY_LISTEN;
        f->index = 4;
        return s;
    }
    lfd[0] = s;
    s = listen_loopback(AF_INET6, port);
    if (s == -EAFNOSUPPORT || s == -EADDRNOTAVAIL)
        return 0; /* no IPv6 in this namespace: nothing can reach [::1] either */
    if (s < 0) {
        f->step = SB_STEP_PROXY_LISTEN;
        f->index = 6;
        return s;
    }
    lfd[1] = s;
    return 0;
}

int sb_net_setup(const struct sb_plan *p, int lfd[2], struct sb_fail *f)
{
    lfd[0] = lfd[1] = -1;
    int rc = loopback_up();
    if (rc < 0) {
        f->step = SB_STEP_NET_LO;
        return rc;
    }
    if (p->proxy_port && (rc = proxy_listeners(p->proxy_port, lfd, f)) < 0)
        goto fail;
    if (p->net.setup && (rc = p->net.setup(p->net.arg)) < 0) {
        f->step = SB_STEP_NET_HOOK;
        goto fail;
    }
    return 0;
fail:
    for (int i = 0; i < 2; i++)
        if (lfd[i] >= 0) {
            close(lfd[i]);
            lfd[i] = -1;
        }
    return rc;
}
