/*
 * relay_tstatus: the TunnelStatus snapshot (rl_tunnels_status): configured
 * tunnels in name order, each with the gateway connections whose accepted
 * registration offered it. Everything is allocated in the caller's arena,
 * so the snapshot dies with the call that asked for it.
 */
#include <string.h>

#include "al_arena.h"
#include "al_err.h"
#include "relay_tint.h"

static char *adup(struct al_arena *a, const char *s)
{
    return al_arena_strndup(a, s ? s : "", s ? strlen(s) : 0);
}

static Airlock__V1__GatewayConnection *conn_state(struct al_arena *a, const struct rt_offer *o)
{
    const struct rt_conn *c = o->conn;
    Airlock__V1__GatewayConnection *g = al_arena_alloc(a, sizeof(*g));

    if (!g)
        return NULL;
    airlock__v1__gateway_connection__init(g);
    g->connection_id = adup(a, c->id_str);
    g->gateway_identity = adup(a, c->identity);
    g->gateway_id = adup(a, c->gateway_id);
    g->gateway_version = adup(a, c->gateway_version);
    g->instance_id = adup(a, c->instance_id);
    g->remote_address = adup(a, c->remote);
    g->connected_ms = c->connected_ms;
    g->last_heartbeat_ms = c->last_hb_ms;
    g->open_streams = c->open_streams;
    g->max_concurrent_streams = c->max_streams;
    g->draining = c->draining || c->state == RT_C_CLOSING || c->goaway_recv;
    g->servers = al_arena_alloc(a, (o->nservers ? o->nservers : 1) * sizeof(char *));
    if (!g->connection_id || !g->gateway_identity || !g->gateway_id || !g->gateway_version ||
        !g->instance_id || !g->remote_address || !g->servers)
        return NULL;
    for (size_t i = 0; i < o->nservers; i++) {
        g->servers[i] = adup(a, o->servers[i]);
        if (!g->servers[i])
            return NULL;
    }
    g->n_servers = o->nservers;
    return g;
}

static Airlock__V1__TunnelState *tunnel_state(struct al_arena *a, const struct rt_tunnel *tu)
{
    Airlock__V1__TunnelState *ts = al_arena_alloc(a, sizeof(*ts));

    if (!ts)
        return NULL;
    airlock__v1__tunnel_state__init(ts);
    ts->tunnel = adup(a, tu->name);
    ts->open_streams = tu->open_streams;
    ts->requests_total = tu->requests_total;
    ts->unroutable_total = tu->unroutable_total;
    ts->connections = al_arena_alloc(a, (tu->noffers ? tu->noffers : 1) * sizeof(void *));
    if (!ts->tunnel || !ts->connections)
        return NULL;
    for (size_t i = 0; i < tu->noffers; i++) {
        if (!tu->offers[i]->conn->h2)
            continue;
        ts->connections[ts->n_connections] = conn_state(a, tu->offers[i]);
        if (!ts->connections[ts->n_connections])
            return NULL;
        ts->n_connections++;
    }
    return ts;
}

int rl_tunnels_status(struct rl_tunnels *t, const char *tunnel, struct al_arena *a,
                      Airlock__V1__GetTunnelStatusResponse *out)
{
    struct rt_tunnel *only = NULL;
    size_t n = t->ntunnels;

    if (tunnel && tunnel[0]) {
        only = rt_tunnel_find(t, tunnel);
        if (!only)
            return AL_ERR_NOTFOUND;
        n = 1;
    }
    airlock__v1__get_tunnel_status_response__init(out);
    out->relay_id = adup(a, t->relay_id);
    out->relay_version = adup(a, t->relay_version);
    out->time_ms = rt_now_ms();
    out->tunnels = al_arena_alloc(a, (n ? n : 1) * sizeof(void *));
    if (!out->relay_id || !out->relay_version || !out->tunnels)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        /* t->tunnels is sorted by name: the order the response promises */
        out->tunnels[i] = tunnel_state(a, only ? only : &t->tunnels[i]);
        if (!out->tunnels[i])
            return AL_ERR_NOMEM;
        out->n_tunnels++;
    }
    return 0;
}
