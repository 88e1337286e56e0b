/*
 * net (child side): the sandbox's network namespace.
 *
 * A new network namespace has one interface, lo, down, and no routes. The
 * sandbox brings lo up (so 127.0.0.1 inside works for the job's own
 * servers) and nothing else: no address outside the namespace is reachable,
 * the host's loopback included. The hook (sb_config.net) runs next, as
 * root of the sandbox's user namespace, for the egress proxy's plumbing
 * (e.g. a socket bound into the sandbox and a forwarder on its loopback).
 */
#include <errno.h>
#include <net/if.h>
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

int sb_net_setup(const struct sb_plan *p, struct sb_fail *f)
{
    int rc = loopback_up();
    if (rc < 0) {
        f->step = SB_STEP_NET_LO;
        return rc;
    }
    if (p->net.setup) {
        rc = p->net.setup(p->net.arg);
        if (rc < 0) {
            f->step = SB_STEP_NET_HOOK;
            return rc;
        }
    }
    return 0;
}
