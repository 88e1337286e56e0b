/*
 * resolve: where a connection's destination lives. A name is looked up
 * once per connection (per origin, for plain http): first in the
 * --resolve overrides, else with c-ares (al_resolve, never blocking the
 * loop); an IP literal is its own address. Every address is checked with
 * the egress address policy (rl_addr_denied_ex: loopback, this-network,
 * link-local and metadata, CGNAT, multicast, reserved, and the IPv6 forms
 * that embed IPv4 always denied; private ranges only where the ceiling's
 * allow_cidrs cover them) and only the allowed ones are kept: the
 * connection dials those, never the name again. The answer is handed to
 * eg_conn_resolved() from the loop, never from inside the lookup.
 *
 * The origin of intercepted or plain requests is an rl_upstream built for
 * the connection with those addresses (its TLS name is still the host, for
 * SNI and certificate checks) and the same policy (checked again when it
 * dials), sharing the process's TLS client context.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "al_addr.h"
#include "al_err.h"
#include "al_log.h"
#include "egress.h"

#define ADDR_FLAGS (RL_ADDR_DENY_PRIVATE | RL_ADDR_NO_OVERRIDE)

void eg_resolve_filter(struct eg_conn *c, const struct sockaddr_storage *a, const socklen_t *l,
                       size_t n)
{
    char buf[AL_ADDR_STRLEN];

    c->naddr = 0;
    c->denied_addr[0] = '\0';
    for (size_t i = 0; i < n && i < AL_RESOLVE_MAX; i++) {
        const struct sockaddr *sa = (const struct sockaddr *)&a[i];
        if (rl_addr_denied_ex(sa, c->reach.cidrs, c->reach.ncidrs, ADDR_FLAGS)) {
            if (!c->denied_addr[0]) {
                /* the address without its port, for the agent's reason */
                al_addr_format(sa, buf, sizeof(buf));
                char *colon = strrchr(buf, ':'), *at = buf;
                if (colon)
                    *colon = '\0';
                if (buf[0] == '[' && colon && colon[-1] == ']') {
                    colon[-1] = '\0';
                    at++;
                }
                snprintf(c->denied_addr, sizeof(c->denied_addr), "%s", at);
            }
            AL_LOG_INFO("egress.addr.denied", "job=%s conn=%llu dest=%s addr=%s", c->job->id,
                        (unsigned long long)c->id, c->dest, al_addr_format(sa, buf, sizeof(buf)));
            continue;
        }
        memcpy(&c->addr[c->naddr], sa, l[i]);
        c->alen[c->naddr] = l[i];
        c->naddr++;
    }
}

static void resolve_cb(struct al_resolve_req *q, int status, const struct al_resolve_result *res,
                       void *user)
{
    struct eg_conn *c = user;
    (void)q;

    c->rq = NULL;
    c->resolved = status < 0 ? status : 1;
    if (status == 0)
        eg_resolve_filter(c, res->addr, res->len, res->n);
    eg_conn_resolved(c);
}

static void set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

static void kicked(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct eg_conn *c = w->data;
    (void)loop;
    (void)revents;

    ev_timer_stop(c->p->loop, w);
    eg_conn_resolved(c);
}

int eg_resolve_start(struct eg_conn *c, const struct eg_authority *a)
{
    struct eg_proxy *p = c->p;
    struct sockaddr_storage ss[AL_RESOLVE_MAX];
    socklen_t len[AL_RESOLVE_MAX];
    size_t n = 0;

    eg_resolve_cancel(c);
    c->resolved = 0;
    c->naddr = 0;
    if (a->host.kind == EG_HOST_NAME) {
        for (size_t i = 0; i < p->nstatics && n == 0; i++) {
            if (strcmp(p->statics[i].name, a->host.name) != 0)
                continue;
            for (n = 0; n < p->statics[i].n; n++) {
                ss[n] = p->statics[i].addr[n];
                len[n] = p->statics[i].len[n];
                set_port(&ss[n], a->port);
            }
        }
        if (n == 0) /* no override: DNS */
            return al_resolve(p->resolver, a->host.name, a->port, resolve_cb, c, &c->rq);
    } else {
        memset(&ss[0], 0, sizeof(ss[0]));
        if (a->host.kind == EG_HOST_IPV4) {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&ss[0];
            s4->sin_family = AF_INET;
            memcpy(&s4->sin_addr, a->host.addr, 4);
            len[0] = sizeof(*s4);
        } else {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss[0];
            s6->sin6_family = AF_INET6;
            memcpy(&s6->sin6_addr, a->host.addr, 16);
            len[0] = sizeof(*s6);
        }
        set_port(&ss[0], a->port);
        n = 1;
    }
    c->resolved = 1;
    eg_resolve_filter(c, ss, len, n);
    /* answer from the loop, like a lookup would */
    ev_timer_init(&c->rkick, kicked, 0., 0.);
    c->rkick.data = c;
    ev_timer_start(p->loop, &c->rkick);
    return 0;
}

void eg_resolve_cancel(struct eg_conn *c)
{
    ev_timer_stop(c->p->loop, &c->rkick);
    if (c->rq) {
        al_resolve_cancel(c->rq);
        c->rq = NULL;
    }
}

int eg_origin_new(struct eg_conn *c, const struct eg_authority *a, int plain)
{
    struct rl_upstream_opts o;
    char url[EG_HOSTPORT_MAX + 16], hp[EG_HOSTPORT_MAX];

    rl_upstream_free(c->up);
    c->up = NULL;
    snprintf(url, sizeof(url), "%s://%s", plain ? "http" : "https",
             eg_authority_format(a, hp, sizeof(hp)));
    memset(&o, 0, sizeof(o));
    o.url = url;
    o.allow = c->reach.cidrs;
    o.nallow = c->reach.ncidrs;
    o.addr_flags = ADDR_FLAGS;
    o.addrs = c->addr;
    o.addr_lens = c->alen;
    o.naddrs = c->naddr;
    o.ssl_ctx = plain ? NULL : c->p->client_ctx;
    o.connect_timeout_s = c->p->connect_timeout_s;
    o.head_timeout_s = c->job->idle_s;
    o.idle_timeout_s = c->job->idle_s;
    o.pool_idle_s = c->job->idle_s;
    o.max_idle = 2;
    if (rl_upstream_new(c->p->loop, &o, &c->up) < 0)
        return AL_ERR_INVAL;
    c->up_auth = *a;
    c->up_plain = plain;
    return 0;
}
