/*
 * relay_tunnel: the registry of configured tunnels and the gateway
 * connections that serve them, the tunnel listener, the choice of a
 * connection for a new stream, and the relay's drain; see relay_tunnel.h.
 * The connection itself lives in relay_tconn.c, agent streams in
 * relay_tstream.c, the status snapshot in relay_tstatus.c.
 *
 * Lifecycle: rl_tunnels_new() (tunnels copied and sorted by name, listener
 * bound) -> connections come and go (accept -> rt_conn_*) -> rl_tunnels_drain()
 * -> rl_tunnels_free() (closes every connection, drops every stream without
 * callbacks).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "al_addr.h"
#include "al_err.h"
#include "al_glob.h"
#include "al_h2conn.h"
#include "al_log.h"
#include "al_metrics.h"
#include "relay_tint.h"

int64_t rt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct rt_tunnel *rt_tunnel_find(struct rl_tunnels *t, const char *name)
{
    size_t lo = 0, hi = t->ntunnels;

    if (!name)
        return NULL;
    while (lo < hi) { /* sorted by name */
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, t->tunnels[mid].name);
        if (c == 0)
            return &t->tunnels[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int rl_tunnels_known(const struct rl_tunnels *t, const char *tunnel)
{
    return rt_tunnel_find((struct rl_tunnels *)t, tunnel) != NULL;
}

int rl_tunnels_port(const struct rl_tunnels *t)
{
    return t->port;
}

int rt_tunnel_allows(const struct rt_tunnel *tu, const char *identity)
{
    for (size_t i = 0; i < tu->ngateways; i++)
        if (al_glob_match(tu->gateways[i], identity, AL_GLOB_MAX))
            return 1;
    return 0;
}

/* ---- connection choice ---- */

int rt_conn_usable(const struct rt_conn *c)
{
    uint32_t remote_max;
    int64_t cap;

    if (c->state != RT_C_READY || !c->h2 || c->draining || c->goaway_recv || c->t->draining)
        return 0;
    /* the watchdog closes a silent connection; never pick one it is about to
     * (its deadline is on the loop's monotonic clock: a wall-clock step never
     * makes a live connection look silent, nor a silent one live) */
    if (ev_is_active(&c->watchdog) &&
        ev_timer_remaining(c->t->loop, (ev_timer *)&c->watchdog) <= 0.)
        return 0;
    cap = c->max_streams > 0 ? c->max_streams : INT32_MAX;
    remote_max = nghttp2_session_get_remote_settings(al_h2conn_session(c->h2),
                                                     NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    /* the control stream and Acks use slots of the gateway's limit too */
    if ((int64_t)remote_max - 1 - c->nacks < cap)
        cap = (int64_t)remote_max - 1 - c->nacks;
    return c->open_streams < cap;
}

static int offers_server(const struct rt_offer *o, const char *server)
{
    for (size_t i = 0; i < o->nservers; i++)
        if (strcmp(o->servers[i], server) == 0)
            return 1;
    return 0;
}

static int avoided(uint64_t id, const uint64_t *avoid, size_t navoid)
{
    for (size_t i = 0; i < navoid; i++)
        if (avoid[i] == id)
            return 1;
    return 0;
}

struct rt_conn *rt_pick(struct rl_tunnels *t, struct rt_tunnel *tu, const char *server,
                        uint64_t pin, const uint64_t *avoid, size_t navoid)
{
    struct rt_conn *best = NULL;
    size_t n = tu->noffers, start;
    (void)t;

    if (n == 0)
        return NULL;
    if (pin && !avoided(pin, avoid, navoid)) {
        for (size_t i = 0; i < n; i++) {
            struct rt_offer *o = tu->offers[i];
            if (o->conn->id == pin && rt_conn_usable(o->conn) && offers_server(o, server))
                return o->conn;
        }
    }
    /* least open streams; scanning from the cursor makes ties rotate */
    start = tu->rr % n;
    for (size_t k = 0; k < n; k++) {
        struct rt_offer *o = tu->offers[(start + k) % n];
        if (avoided(o->conn->id, avoid, navoid) || !rt_conn_usable(o->conn) ||
            !offers_server(o, server))
            continue;
        if (!best || o->conn->open_streams < best->open_streams)
            best = o->conn;
    }
    if (best)
        tu->rr = start + 1;
    return best;
}

/* ---- offers in the registry ---- */

int rt_tunnel_add_offer(struct rt_tunnel *tu, struct rt_offer *o)
{
    if (tu->noffers == tu->offers_cap) {
        size_t cap = tu->offers_cap ? tu->offers_cap * 2 : 8;
        struct rt_offer **p = realloc(tu->offers, cap * sizeof(*p));
        if (!p)
            return AL_ERR_NOMEM;
        tu->offers = p;
        tu->offers_cap = cap;
    }
    tu->offers[tu->noffers++] = o;
    return 0;
}

void rt_tunnel_del_offer(struct rt_tunnel *tu, struct rt_offer *o)
{
    for (size_t i = 0; i < tu->noffers; i++) {
        if (tu->offers[i] == o) {
            /* keep the order: round robin stays fair */
            memmove(&tu->offers[i], &tu->offers[i + 1], (tu->noffers - i - 1) * sizeof(o));
            tu->noffers--;
            return;
        }
    }
}

/* ---- listener ---- */

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct rl_tunnels *t = w->data;
    (void)loop;
    (void)revents;

    for (int i = 0; i < 64; i++) {
        int fd = accept4(t->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                AL_LOG_WARN("tunnel.accept", "reason=\"%s\"", strerror(errno));
            return;
        }
        if (t->draining || t->nconns >= RT_MAX_CONNS) {
            AL_LOG_WARN("tunnel.accept", "reason=\"%s\"",
                        t->draining ? "relay draining" : "gateway connection limit reached");
            close(fd);
            continue;
        }
        int rc = rt_conn_accept(t, fd);
        if (rc < 0)
            AL_LOG_WARN("tunnel.accept", "reason=\"%s\"", al_strerror(rc));
        if (t->nhandshakes >= RT_MAX_HANDSHAKES) {
            /* the rest wait in the backlog until a handshake ends */
            AL_LOG_WARN("tunnel.accept", "reason=\"handshake limit reached\" handshakes=%zu",
                        t->nhandshakes);
            ev_io_stop(t->loop, &t->accept_w);
            return;
        }
    }
}

void rt_handshake_over(struct rt_conn *c)
{
    struct rl_tunnels *t = c->t;

    if (!c->in_handshake)
        return;
    c->in_handshake = 0;
    t->nhandshakes--;
    if (t->nhandshakes < RT_MAX_HANDSHAKES && !t->draining && t->fd >= 0 &&
        !ev_is_active(&t->accept_w))
        ev_io_start(t->loop, &t->accept_w);
}

/* ---- metrics ---- */

static struct al_metric *tunnel_metric(struct rl_tunnels *t, struct rt_tunnel *tu, int gauge,
                                       const char *name, const char *help)
{
    char esc[2 * RT_NAME_MAX + 8], labels[sizeof(esc) + 16];

    al_metrics_label_escape(esc, sizeof(esc), tu->name, strlen(tu->name));
    snprintf(labels, sizeof(labels), "tunnel=\"%s\"", esc);
    return gauge ? al_metrics_gauge(t->metrics, name, help, labels)
                 : al_metrics_counter(t->metrics, name, help, labels);
}

void rt_metric_tunnel(struct rl_tunnels *t, struct rt_tunnel *tu)
{
    if (!t->metrics)
        return;
    tu->m_conns = tunnel_metric(t, tu, 1, "airlock_relay_gateway_connections",
                                "Registered gateway connections serving the tunnel");
    tu->m_open = tunnel_metric(t, tu, 1, "airlock_relay_tunnel_open_streams",
                               "Agent streams open on the tunnel");
    tu->m_opened = tunnel_metric(t, tu, 0, "airlock_relay_tunnel_streams_opened_total",
                                 "Agent streams opened on the tunnel (replays not counted)");
    tu->m_refused = tunnel_metric(t, tu, 0, "airlock_relay_tunnel_streams_refused_total",
                                  "Agent streams the gateway refused or left above its GOAWAY");
    tu->m_replayed = tunnel_metric(t, tu, 0, "airlock_relay_tunnel_streams_replayed_total",
                                   "Agent streams replayed on another gateway connection");
    tu->m_unroutable = tunnel_metric(t, tu, 0, "airlock_relay_tunnel_unroutable_total",
                                     "Agent requests with no usable gateway connection");
}

static void metrics_init(struct rl_tunnels *t)
{
    static const char *ctl = "airlock_relay_tunnel_control_messages_total";
    static const char *ctl_help = "Control messages received from gateways";
    struct al_metrics *m = t->metrics;

    if (!m)
        return;
    t->m_ctl_registration = al_metrics_counter(m, ctl, ctl_help, "kind=\"registration\"");
    t->m_ctl_heartbeat = al_metrics_counter(m, ctl, ctl_help, "kind=\"heartbeat\"");
    t->m_ctl_drain = al_metrics_counter(m, ctl, ctl_help, "kind=\"drain\"");
    t->m_ctl_other = al_metrics_counter(m, ctl, ctl_help, "kind=\"other\"");
    t->m_hb_timeouts =
        al_metrics_counter(m, "airlock_relay_tunnel_heartbeat_timeouts_total",
                           "Gateway connections closed for missing heartbeats", NULL);
    t->m_reg_accepted =
        al_metrics_counter(m, "airlock_relay_tunnel_registrations_total",
                           "Gateway registrations by outcome", "result=\"accepted\"");
    t->m_reg_rejected =
        al_metrics_counter(m, "airlock_relay_tunnel_registrations_total",
                           "Gateway registrations by outcome", "result=\"rejected\"");
    t->m_conn_refused =
        al_metrics_counter(m, "airlock_relay_tunnel_identity_refused_total",
                           "Gateway connections closed: identity serves no tunnel", NULL);
    t->m_conns_open = al_metrics_gauge(m, "airlock_relay_tunnel_connections_open",
                                       "Gateway TCP connections open (any state)", NULL);
    for (size_t i = 0; i < t->ntunnels; i++)
        rt_metric_tunnel(t, &t->tunnels[i]);
}

static void drain_fire(struct ev_loop *loop, ev_timer *w, int revents);

/* ---- construction ---- */

static int name_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > RT_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int cmp_tunnel(const void *a, const void *b)
{
    return strcmp(((const struct rt_tunnel *)a)->name, ((const struct rt_tunnel *)b)->name);
}

static int copy_tunnels(struct rl_tunnels *t, const struct rl_tunnels_opts *o)
{
    t->tunnels = calloc(o->ntunnels ? o->ntunnels : 1, sizeof(*t->tunnels));
    if (!t->tunnels)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < o->ntunnels; i++) {
        const struct rl_tunnel_cfg *c = &o->tunnels[i];
        struct rt_tunnel *tu = &t->tunnels[i];
        if (!name_valid(c->name) || (c->ngateways && !c->gateways))
            return AL_ERR_INVAL;
        tu->name = strdup(c->name);
        tu->gateways = calloc(c->ngateways ? c->ngateways : 1, sizeof(char *));
        t->ntunnels++;
        if (!tu->name || !tu->gateways)
            return AL_ERR_NOMEM;
        for (size_t g = 0; g < c->ngateways; g++) {
            if (!c->gateways[g])
                return AL_ERR_INVAL;
            tu->gateways[g] = strdup(c->gateways[g]);
            if (!tu->gateways[g])
                return AL_ERR_NOMEM;
            tu->ngateways++;
        }
    }
    qsort(t->tunnels, t->ntunnels, sizeof(*t->tunnels), cmp_tunnel);
    for (size_t i = 1; i < t->ntunnels; i++)
        if (strcmp(t->tunnels[i - 1].name, t->tunnels[i].name) == 0)
            return AL_ERR_INVAL; /* a tunnel configured twice */
    return 0;
}

static int copy_opts(struct rl_tunnels *t, const struct rl_tunnels_opts *o)
{
    if (!o->listen || !o->tls || !o->signer || (o->ntunnels && !o->tunnels))
        return AL_ERR_INVAL;
    t->listen = strdup(o->listen);
    t->relay_id = strdup(o->relay_id ? o->relay_id : "relay");
    t->relay_version = strdup(o->relay_version ? o->relay_version : "");
    if (!t->listen || !t->relay_id || !t->relay_version)
        return AL_ERR_NOMEM;
    t->tls = o->tls;
    t->signer = o->signer;
    t->metrics = o->metrics;
    t->hb_s = o->heartbeat_interval_s > 0 ? o->heartbeat_interval_s : 10.0;
    t->grant_ttl_s = o->grant_ttl_s > 0 ? o->grant_ttl_s : 60.0;
    t->max_replay = o->max_replay ? o->max_replay : 4 * 1024 * 1024;
    return copy_tunnels(t, o);
}

int rl_tunnels_new(struct ev_loop *loop, const struct rl_tunnels_opts *o, struct rl_tunnels **out)
{
    struct rl_tunnels *t = calloc(1, sizeof(*t));
    int rc;

    *out = NULL;
    if (!t)
        return AL_ERR_NOMEM;
    t->loop = loop;
    t->fd = -1;
    ev_timer_init(&t->drain_w, drain_fire, 0., 0.);
    t->drain_w.data = t;
    ev_timer_init(&t->notify_w, rt_notify_cb, 0., 0.);
    t->notify_w.data = t;
    rc = copy_opts(t, o);
    if (rc == 0) {
        t->cbs = rt_callbacks_new();
        rc = t->cbs ? 0 : AL_ERR_NOMEM;
    }
    if (rc == 0)
        rc = al_listen_tcp(t->listen, 512, &t->fd);
    if (rc < 0) {
        rl_tunnels_free(t);
        return rc;
    }
    t->port = al_addr_local_port(t->fd);
    metrics_init(t);
    ev_io_init(&t->accept_w, accept_cb, t->fd, EV_READ);
    t->accept_w.data = t;
    ev_io_start(loop, &t->accept_w);
    AL_LOG_INFO("tunnel.listen", "addr=%s port=%d tunnels=%zu relay_id=%s", t->listen, t->port,
                t->ntunnels, t->relay_id);
    *out = t;
    return 0;
}

/* ---- drain ---- */

static void drain_fire(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rl_tunnels *t = w->data;
    void (*done)(void *) = t->drain_done;
    (void)loop;
    (void)revents;

    t->drain_done = NULL;
    if (done) {
        AL_LOG_INFO("tunnel.drained", "relay_id=%s", t->relay_id);
        done(t->drain_user);
    }
}

void rt_stream_gone(struct rl_tunnels *t)
{
    if (t->draining && t->open_streams == 0 && t->drain_done && !ev_is_active(&t->drain_w)) {
        ev_timer_set(&t->drain_w, 0., 0.);
        ev_timer_start(t->loop, &t->drain_w);
    }
}

void rl_tunnels_drain(struct rl_tunnels *t, void (*done)(void *user), void *user)
{
    struct rt_conn *c, *next;

    if (t->draining)
        return;
    t->draining = 1;
    t->drain_done = done;
    t->drain_user = user;
    ev_io_stop(t->loop, &t->accept_w);
    AL_LOG_INFO("tunnel.drain", "relay_id=%s connections=%zu open_streams=%zu", t->relay_id,
                t->nconns, t->open_streams);
    for (c = t->conns; c; c = next) {
        next = c->next;
        rt_conn_drain(c);
    }
    rt_stream_gone(t);
}

void rl_tunnels_free(struct rl_tunnels *t)
{
    if (!t)
        return;
    while (t->conns) {
        struct rt_conn *c = t->conns;
        rt_streams_drop(c);
        rt_conn_forget(c); /* unlinks c */
    }
    if (t->fd >= 0) {
        ev_io_stop(t->loop, &t->accept_w);
        close(t->fd);
    }
    ev_timer_stop(t->loop, &t->drain_w);
    ev_timer_stop(t->loop, &t->notify_w);
    for (size_t i = 0; i < t->ntunnels; i++) {
        struct rt_tunnel *tu = &t->tunnels[i];
        for (size_t g = 0; g < tu->ngateways; g++)
            free(tu->gateways[g]);
        free(tu->gateways);
        free(tu->offers);
        free(tu->name);
    }
    free(t->tunnels);
    if (t->cbs)
        nghttp2_session_callbacks_del(t->cbs);
    free(t->listen);
    free(t->relay_id);
    free(t->relay_version);
    free(t);
}
