/*
 * al_resolve: c-ares driven by libev; see al_resolve.h.
 *
 * c-ares tells us which sockets to watch through its socket-state callback;
 * each gets an ev_io. One ev_timer follows ares_timeout(). Requests are
 * heap objects so a cancelled one can be detached while c-ares still holds
 * its pointer: the c-ares callback then frees it without calling the user.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>

#include "al_addr.h"
#include "al_err.h"
#include "al_resolve.h"

#define MAX_SOCKS 16

struct sockw {
    ev_io io;
    int fd;
    int used;
    struct al_resolver *r;
};

struct al_resolve_req {
    struct al_resolver *r;
    al_resolve_cb cb;
    void *user;
    int cancelled;
    int port;
    ev_timer immediate; /* numeric answers go out from the loop */
    struct al_resolve_result res;
};

struct al_resolver {
    struct ev_loop *loop;
    ares_channel ch;
    struct sockw socks[MAX_SOCKS];
    ev_timer timer;
    int freeing;
};

static void arm_timer(struct al_resolver *r)
{
    struct timeval tv, *tvp;
    ev_timer_stop(r->loop, &r->timer);
    tvp = ares_timeout(r->ch, NULL, &tv);
    if (!tvp)
        return;
    ev_timer_set(&r->timer, (double)tvp->tv_sec + tvp->tv_usec / 1e6, 0.);
    ev_timer_start(r->loop, &r->timer);
}

static void sock_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct sockw *s = w->data;
    (void)loop;
    ares_process_fd(s->r->ch, (revents & EV_READ) ? s->fd : ARES_SOCKET_BAD,
                    (revents & EV_WRITE) ? s->fd : ARES_SOCKET_BAD);
    arm_timer(s->r);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct al_resolver *r = w->data;
    (void)loop;
    (void)revents;
    ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_timer(r);
}

static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    struct al_resolver *r = data;
    struct sockw *s = NULL, *free_slot = NULL;

    for (int i = 0; i < MAX_SOCKS; i++) {
        if (r->socks[i].used && r->socks[i].fd == fd)
            s = &r->socks[i];
        else if (!r->socks[i].used && !free_slot)
            free_slot = &r->socks[i];
    }
    if (!readable && !writable) {
        if (s) {
            ev_io_stop(r->loop, &s->io);
            s->used = 0;
        }
        return;
    }
    if (!s) {
        if (!free_slot)
            return; /* c-ares keeps few sockets; its timeout path still runs */
        s = free_slot;
        s->used = 1;
        s->fd = fd;
        s->r = r;
        ev_io_init(&s->io, sock_io_cb, fd, 0);
        s->io.data = s;
    }
    ev_io_stop(r->loop, &s->io);
    ev_io_set(&s->io, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    ev_io_start(r->loop, &s->io);
}

int al_resolver_new(struct ev_loop *loop, struct al_resolver **out)
{
    static int lib_init;
    struct ares_options o;
    struct al_resolver *r;

    *out = NULL;
    if (!lib_init) {
        if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
            return AL_ERR_INVAL;
        lib_init = 1;
    }
    r = calloc(1, sizeof(*r));
    if (!r)
        return AL_ERR_NOMEM;
    r->loop = loop;
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = sock_state_cb;
    o.sock_state_cb_data = r;
    o.timeout = 2000; /* ms per try */
    o.tries = 3;
    if (ares_init_options(&r->ch, &o,
                          ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) !=
        ARES_SUCCESS) {
        free(r);
        return AL_ERR_INVAL;
    }
    ev_timer_init(&r->timer, timer_cb, 0., 0.);
    r->timer.data = r;
    *out = r;
    return 0;
}

int al_resolver_set_servers(struct al_resolver *r, const char *csv)
{
    return ares_set_servers_ports_csv(r->ch, csv) == ARES_SUCCESS ? 0 : AL_ERR_INVAL;
}

void al_resolver_free(struct al_resolver *r)
{
    if (!r)
        return;
    r->freeing = 1;
    ares_destroy(r->ch); /* runs pending callbacks with ARES_EDESTRUCTION */
    ev_timer_stop(r->loop, &r->timer);
    for (int i = 0; i < MAX_SOCKS; i++)
        if (r->socks[i].used)
            ev_io_stop(r->loop, &r->socks[i].io);
    free(r);
}

static void deliver(struct al_resolve_req *q, int status)
{
    if (!q->cancelled && !q->r->freeing)
        q->cb(q, status, status == 0 ? &q->res : NULL, q->user);
    free(q);
}

static void gai_cb(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    struct al_resolve_req *q = arg;
    (void)timeouts;

    if (status == ARES_SUCCESS && ai) {
        for (struct ares_addrinfo_node *n = ai->nodes; n && q->res.n < AL_RESOLVE_MAX;
             n = n->ai_next) {
            if (n->ai_addrlen > sizeof(struct sockaddr_storage))
                continue;
            memcpy(&q->res.addr[q->res.n], n->ai_addr, n->ai_addrlen);
            q->res.len[q->res.n] = (socklen_t)n->ai_addrlen;
            if (n->ai_family == AF_INET)
                ((struct sockaddr_in *)&q->res.addr[q->res.n])->sin_port = htons((uint16_t)q->port);
            else if (n->ai_family == AF_INET6)
                ((struct sockaddr_in6 *)&q->res.addr[q->res.n])->sin6_port =
                    htons((uint16_t)q->port);
            else
                continue;
            q->res.n++;
        }
    }
    if (ai)
        ares_freeaddrinfo(ai);
    if (status == ARES_SUCCESS && q->res.n > 0)
        deliver(q, 0);
    else if (status == ARES_ETIMEOUT)
        deliver(q, AL_ERR_TIMEOUT);
    else if (status == ARES_ENOMEM)
        deliver(q, AL_ERR_NOMEM);
    else
        deliver(q, AL_ERR_NOTFOUND);
}

static void immediate_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    deliver(w->data, 0);
}

int al_resolve(struct al_resolver *r, const char *host, int port, al_resolve_cb cb, void *user,
               struct al_resolve_req **out)
{
    struct al_resolve_req *q;
    char hp[300];

    if (out)
        *out = NULL;
    if (!host || !*host || port < 0 || port > 65535 || strlen(host) > 253)
        return AL_ERR_INVAL;
    q = calloc(1, sizeof(*q));
    if (!q)
        return AL_ERR_NOMEM;
    q->r = r;
    q->cb = cb;
    q->user = user;
    q->port = port;
    if (out)
        *out = q;
    /* numeric forms and localhost: no lookup */
    snprintf(hp, sizeof(hp), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    if (al_addr_parse(hp, &q->res.addr[0], &q->res.len[0]) == 0) {
        q->res.n = 1;
        ev_timer_init(&q->immediate, immediate_cb, 0., 0.);
        q->immediate.data = q;
        ev_timer_start(r->loop, &q->immediate);
        return 0;
    }
    struct ares_addrinfo_hints hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    ares_getaddrinfo(r->ch, host, NULL, &hints, gai_cb, q);
    arm_timer(r);
    return 0;
}

void al_resolve_cancel(struct al_resolve_req *q)
{
    if (!q)
        return;
    if (q->res.n == 1 && ev_is_active(&q->immediate)) {
        ev_timer_stop(q->r->loop, &q->immediate);
        free(q);
        return;
    }
    q->cancelled = 1; /* c-ares still holds it; gai_cb frees it */
}

int al_split_hostport(const char *hostport, char *host, size_t hn, int *port)
{
    const char *colon;
    size_t len;
    char *end;

    if (!hostport)
        return AL_ERR_INVAL;
    if (hostport[0] == '[') {
        const char *rb = strchr(hostport, ']');
        if (!rb || rb[1] != ':')
            return AL_ERR_INVAL;
        len = (size_t)(rb - hostport - 1);
        hostport++;
        colon = rb + 1;
    } else {
        colon = strrchr(hostport, ':');
        if (!colon || memchr(hostport, ':', (size_t)(colon - hostport)))
            return AL_ERR_INVAL;
        len = (size_t)(colon - hostport);
    }
    if (len == 0 || len >= hn)
        return AL_ERR_INVAL;
    long p = strtol(colon + 1, &end, 10);
    if (*end || colon[1] == '\0' || p < 0 || p > 65535)
        return AL_ERR_INVAL;
    memcpy(host, hostport, len);
    host[len] = '\0';
    *port = (int)p;
    return 0;
}
