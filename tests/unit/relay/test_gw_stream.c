/*
 * In-process tests of the gateway's agent request path (gw_stream.c with
 * gw_conn.c, gw_ctl.c, gw_cred.c and upstream.c) behind the real relay side
 * (relay_tunnel.h), on loopback: the relay listens, the gateway dials it
 * with a throwaway PKI and registers, requests are opened with
 * rl_tstream_open() as the relay's agent side would, and the route's
 * upstream is a small HTTP/1.1 server written here that records every byte
 * it receives. The route's credential is put in the gateway's value cache
 * beforehand (audit batches are never due during a test), so no credstore
 * is needed.
 *
 * Covered: a POST tools/call round trip (credential injected upstream,
 * scrubbed from the response); a GET or DELETE carrying a body refused and
 * the body never forwarded; a single-instance header (Mcp-Name,
 * Mcp-Session-Id ...) sent twice refused before the upstream is called; an
 * SSE event the MCP server sends while it keeps the response open (a
 * server-to-client request such as elicitation) reaching the agent side
 * whole before the response ends; the relay cancelling more than a thousand
 * streams at once (an agent connection going away) without the gateway
 * tearing down the tunnel connection and the other requests on it; an
 * answer with two Content-Types and an upstream 401 (502, no challenge)
 * refused; the gateway-wide body budget (503).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "al_grant.h"
#include "al_h2conn.h"
#include "al_log.h"
#include "al_pki.h"
#include "al_resolve.h"
#include "al_tls.h"
#include "gw.h"
#include "gw_cache.h"
#include "gw_session.h"
#include "relay_tunnel.h"
#include "scrub.h"
#include "upstream.h"

#define RELAY_ID "spiffe://airlock/relay/relay-0"
#define GW_SELF  "spiffe://airlock/gateway/gw1"
#define SECRET   "tok-3fA9xQ2mZ7LwP0vK8sN1"
#define WAIT_S   10.0
#define UP_MAX   (256 * 1024)

static struct ev_loop *loop;
static ev_timer tick;
static char pki[256];
static struct al_grant_signer *signer;
static struct al_grant_keyring *keyring;
static struct al_tls *relay_tls;

static void tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

typedef int (*pred_fn)(void *arg);

static int run_until(pred_fn pred, void *arg)
{
    ev_tstamp end = ev_time() + WAIT_S;
    while (!pred(arg) && ev_time() < end)
        ev_run(loop, EVRUN_ONCE);
    return pred(arg);
}

static void settle(void)
{
    for (int i = 0; i < 20; i++)
        ev_run(loop, EVRUN_NOWAIT);
}

/* ------------------------------------------------------------------ */
/* the upstream: a small HTTP/1.1 server                                */
/* ------------------------------------------------------------------ */

enum up_mode { UP_JSON, UP_SSE_HOLD, UP_TWO_TYPES, UP_401 };

struct up_conn {
    int fd;
    ev_io w;
    char in[UP_MAX];
    size_t len;
    struct up_conn *next;
};

static struct {
    int fd, port;
    ev_io w;
    struct up_conn *conns;
    enum up_mode mode;
    const char *reply; /* JSON body, or the SSE event sent before holding */
    int nreq;          /* complete requests answered */
    char seen[UP_MAX]; /* every byte received, all connections */
    size_t seen_len;
    char last[UP_MAX]; /* the last complete request */
    size_t last_len;
    struct up_conn *held; /* the SSE response kept open */
} up;

static void up_write(struct up_conn *c, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(c->fd, s, n);
        if (w < 0 && errno == EAGAIN) {
            fd_set fs;
            FD_ZERO(&fs);
            FD_SET(c->fd, &fs);
            select(c->fd + 1, NULL, &fs, NULL, NULL);
            continue;
        }
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Length of the complete request at the start of c->in, or 0. */
static size_t up_request_len(const struct up_conn *c)
{
    const char *end = memmem(c->in, c->len, "\r\n\r\n", 4);
    size_t head, clen = 0;
    const char *p;

    if (!end)
        return 0;
    head = (size_t)(end - c->in) + 4;
    for (p = c->in; p < end; p = memchr(p, '\n', (size_t)(end - p)) + 1) {
        if (strncasecmp(p, "content-length:", 15) == 0)
            clen = strtoul(p + 15, NULL, 10);
        if (strncasecmp(p, "transfer-encoding:", 18) == 0) {
            const char *z = memmem(c->in + head, c->len - head, "0\r\n\r\n", 5);
            return z ? (size_t)(z - c->in) + 5 : 0;
        }
        if (!memchr(p, '\n', (size_t)(end - p)))
            break;
    }
    return c->len >= head + clen ? head + clen : 0;
}

static void up_answer(struct up_conn *c)
{
    char head[256];
    int n;

    if (up.mode == UP_JSON || up.mode == UP_TWO_TYPES || up.mode == UP_401) {
        n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %s\r\nContent-Type: application/json\r\n%s"
                     "Content-Length: %zu\r\n\r\n",
                     up.mode == UP_401 ? "401 Unauthorized" : "200 OK",
                     up.mode == UP_TWO_TYPES ? "Content-Type: text/event-stream\r\n"
                     : up.mode == UP_401 ? "WWW-Authenticate: Bearer resource_metadata=\"x\"\r\n"
                                         : "",
                     strlen(up.reply));
        up_write(c, head, (size_t)n);
        up_write(c, up.reply, strlen(up.reply));
        return;
    }
    n = snprintf(head, sizeof(head),
                 "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n%zx\r\n",
                 strlen(up.reply));
    up_write(c, head, (size_t)n);
    up_write(c, up.reply, strlen(up.reply));
    up_write(c, "\r\n", 2);
    up.held = c;
}

static void up_conn_free(struct up_conn *c)
{
    struct up_conn **pp = &up.conns;

    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    if (up.held == c)
        up.held = NULL;
    ev_io_stop(loop, &c->w);
    close(c->fd);
    free(c);
}

static void up_conn_cb(struct ev_loop *l, ev_io *w, int revents)
{
    struct up_conn *c = w->data;
    ssize_t n;
    size_t rl;
    (void)l;
    (void)revents;

    n = read(c->fd, c->in + c->len, sizeof(c->in) - c->len);
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
        up_conn_free(c);
        return;
    }
    if (n < 0)
        return;
    if (up.seen_len + (size_t)n <= sizeof(up.seen)) {
        memcpy(up.seen + up.seen_len, c->in + c->len, (size_t)n);
        up.seen_len += (size_t)n;
    }
    c->len += (size_t)n;
    while ((rl = up_request_len(c)) > 0) {
        memcpy(up.last, c->in, rl);
        up.last_len = rl;
        up.nreq++;
        memmove(c->in, c->in + rl, c->len - rl);
        c->len -= rl;
        up_answer(c);
    }
}

static void up_accept_cb(struct ev_loop *l, ev_io *w, int revents)
{
    int fd = accept4(up.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    struct up_conn *c;
    (void)l;
    (void)w;
    (void)revents;

    if (fd < 0)
        return;
    c = calloc(1, sizeof(*c));
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    c->fd = fd;
    c->next = up.conns;
    up.conns = c;
    ev_io_init(&c->w, up_conn_cb, fd, EV_READ);
    c->w.data = c;
    ev_io_start(loop, &c->w);
}

static void up_start(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int one = 1;

    memset(&up, 0, sizeof(up));
    up.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CU_ASSERT_FATAL(up.fd >= 0);
    setsockopt(up.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    CU_ASSERT_FATAL(bind(up.fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CU_ASSERT_FATAL(listen(up.fd, 64) == 0);
    CU_ASSERT_FATAL(getsockname(up.fd, (struct sockaddr *)&sa, &sl) == 0);
    up.port = ntohs(sa.sin_port);
    ev_io_init(&up.w, up_accept_cb, up.fd, EV_READ);
    ev_io_start(loop, &up.w);
}

static void up_stop(void)
{
    while (up.conns)
        up_conn_free(up.conns);
    ev_io_stop(loop, &up.w);
    close(up.fd);
}

/* Bytes of s in what the upstream received. */
static int up_saw(const char *s)
{
    return memmem(up.seen, up.seen_len, s, strlen(s)) != NULL;
}

/* ------------------------------------------------------------------ */
/* the relay and the gateway under test                                 */
/* ------------------------------------------------------------------ */

static struct rl_tunnels *relay;
static struct gw g;
static struct gw_route route;
static struct gw_policy policy;
static char url[128], relay_addr[64];
static char *relays[] = {relay_addr, NULL};
static char *relay_ids[] = {(char *)"spiffe://airlock/relay/*", NULL};
static char *pol_principals[] = {(char *)"dev"};
static char *pol_tools[] = {(char *)"allowed_*"};
static char *pol_resources[] = {(char *)"docs://public/**"};

static void relay_start(void)
{
    static const char *const any[] = {"spiffe://airlock/gateway/*"};
    static const struct rl_tunnel_cfg tunnels[] = {{"corp", any, 1}};
    struct rl_tunnels_opts o = {
        .listen = "127.0.0.1:0",
        .tls = relay_tls,
        .relay_id = "relay-0",
        .relay_version = "test",
        .heartbeat_interval_s = 10,
        .tunnels = tunnels,
        .ntunnels = 1,
        .signer = signer,
        .grant_ttl_s = 60,
    };
    CU_ASSERT_FATAL(rl_tunnels_new(loop, &o, &relay) == 0);
    snprintf(relay_addr, sizeof(relay_addr), "127.0.0.1:%d", rl_tunnels_port(relay));
}

static struct al_tls *gateway_tls(void)
{
    static const char *const alpn[] = {GW_ALPN, NULL};
    char cert[300], key[300], ca[300];
    struct al_tls *t = NULL;

    snprintf(cert, sizeof(cert), "%s/gateway-gw1.crt", pki);
    snprintf(key, sizeof(key), "%s/gateway-gw1.key", pki);
    snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
    struct al_tls_opts to = {.cert_file = cert, .key_file = key, .ca_file = ca, .alpn = alpn};
    CU_ASSERT_FATAL(al_tls_new(&to, &t) == 0);
    return t;
}

/* The route's value in the gateway's cache, as a Resolve would leave it. */
static void seed_cache(void)
{
    struct gw_template t = {
        .type = GW_CRED_BEARER, .header = "", .format = "", .allow_plain_http = 1};
    struct gw_value *v = NULL;
    char key[1024], why[160];

    CU_ASSERT_FATAL(gw_value_new(&t, (const uint8_t *)SECRET, strlen(SECRET), 1,
                                 ev_now(loop) + 3600, 1, &v, why, sizeof(why)) == 0);
    CU_ASSERT_FATAL(gw_cache_key(key, sizeof(key), RELAY_ID, "dev", route.name, route.credential) ==
                    0);
    CU_ASSERT_FATAL(gw_cache_put(g.cred.cache, key, v, ev_now(loop)) == 0);
    gw_value_unref(v);
}

static void gw_start(void)
{
    struct rl_upstream_opts uo = {0};

    memset(&g, 0, sizeof(g));
    g.svc.loop = loop;
    snprintf(g.self_id, sizeof(g.self_id), "%s", GW_SELF);
    snprintf(g.gateway_id, sizeof(g.gateway_id), "gw1");
    snprintf(g.instance_id, sizeof(g.instance_id), "0123456789abcdef0123456789abcdef");
    g.cfg.connections = 1;
    g.cfg.heartbeat_s = 10;
    g.cfg.ping_timeout_s = 20;
    g.cfg.reconnect_min_s = 0.05;
    g.cfg.reconnect_max_s = 0.5;
    g.cfg.resolve_interval_s = 60;
    g.cfg.drain_grace_s = 1;
    g.cfg.max_concurrent_streams = 1000;
    g.cfg.max_body = 1 << 20;
    g.cfg.max_buffered = 64 << 20;
    g.cfg.credstore_addr = (char *)"127.0.0.1:1"; /* never called: the value is cached */
    g.cfg.credstore_timeout_s = 5;
    g.cfg.cache_ttl_s = 3600;
    g.cfg.audit_batch_max = 1000;
    g.cfg.audit_flush_s = 3600; /* no batch falls due during a test */
    g.cfg.audit_max_pending = 20000;
    g.cfg.relays = relays;
    g.cfg.relay_identities = relay_ids;

    memset(&route, 0, sizeof(route));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/mcp", up.port);
    route.tunnel = (char *)"corp";
    route.server = (char *)"crm";
    snprintf(route.name, sizeof(route.name), "corp/crm");
    route.url = url;
    route.credential = (char *)"crm-token";
    CU_ASSERT_FATAL(rl_cidr_parse("127.0.0.0/8", &route.allow[0]) == 0);
    route.nallow = 1;
    route.timeout_s = 10;
    policy = (struct gw_policy){.principals = pol_principals,
                                .n_principals = 1,
                                .tools = pol_tools,
                                .n_tools = 1,
                                .resources = pol_resources,
                                .n_resources = 1};
    route.policy = &policy;
    route.npolicy = 1;
    g.cfg.routes.v = &route;
    g.cfg.routes.n = 1;

    g.relay_tls = gateway_tls();
    g.keyring = keyring; /* borrowed from the suite */
    CU_ASSERT_FATAL(al_resolver_new(loop, &g.resolver) == 0);
    g.ups = calloc(1, sizeof(*g.ups));
    CU_ASSERT_PTR_NOT_NULL_FATAL(g.ups);
    uo.url = url;
    uo.allow = route.allow;
    uo.nallow = route.nallow;
    uo.resolver = g.resolver;
    uo.head_timeout_s = route.timeout_s;
    CU_ASSERT_FATAL(rl_upstream_new(loop, &uo, &g.ups[0]) == 0);
    CU_ASSERT_FATAL(gw_sessions_new(1000, 3600, &g.sessions) == 0);
    CU_ASSERT_FATAL(gw_cred_init(&g) == 0);
    seed_cache();
    CU_ASSERT_FATAL(gw_conns_start(&g) == 0);
}

static int gw_gone(void *arg)
{
    (void)arg;
    return g.conns == NULL;
}

static void gw_stop(void)
{
    g.draining = 1; /* no redial */
    gw_conns_close_all(&g);
    CU_ASSERT(run_until(gw_gone, NULL));
    gw_conns_free(&g);
    gw_cred_free(&g);
    settle();
    rl_upstream_free(g.ups[0]);
    free(g.ups);
    al_resolver_free(g.resolver);
    gw_sessions_free(g.sessions);
    al_tls_free(g.relay_tls);
    memset(&g, 0, sizeof(g));
}

static void setup(void)
{
    up_start();
    relay_start();
    gw_start();
}

static void teardown(void)
{
    gw_stop();
    rl_tunnels_free(relay);
    relay = NULL;
    settle();
    up_stop();
}

/* ------------------------------------------------------------------ */
/* requests through the relay                                           */
/* ------------------------------------------------------------------ */

struct call {
    struct rl_tstream *s;
    int status, ended, failed, err;
    char hdrs[4096]; /* "name: value\n"... */
    size_t hlen;
    char body[UP_MAX];
    size_t blen;
};

static void c_head(struct rl_tstream *s, int status, const nghttp2_nv *nv, size_t n, void *user)
{
    struct call *c = user;
    (void)s;

    c->status = status;
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(c->hdrs + c->hlen, sizeof(c->hdrs) - c->hlen, "%.*s: %.*s\n",
                         (int)nv[i].namelen, nv[i].name, (int)nv[i].valuelen, nv[i].value);
        if (w > 0 && (size_t)w < sizeof(c->hdrs) - c->hlen)
            c->hlen += (size_t)w;
    }
}

static void c_data(struct rl_tstream *s, const uint8_t *d, size_t n, void *user)
{
    struct call *c = user;

    if (c->blen + n <= sizeof(c->body)) {
        memcpy(c->body + c->blen, d, n);
        c->blen += n;
    }
    rl_tstream_consume(s, n);
}

static void c_end(struct rl_tstream *s, void *user)
{
    struct call *c = user;
    (void)s;
    c->ended = 1;
    c->s = NULL;
}

static void c_error(struct rl_tstream *s, int err, int head_seen, void *user)
{
    struct call *c = user;
    (void)s;
    (void)head_seen;
    c->failed = 1;
    c->err = err;
    c->s = NULL;
}

static const struct rl_tstream_cbs call_cbs = {c_head, c_data, c_end, c_error, NULL};

static int call_done(void *arg)
{
    const struct call *c = arg;
    return c->ended || c->failed;
}

static int n_reqs = 0;

/* Opens a request once the gateway is registered. body NULL: the request
 * has no body (END_STREAM on its head) unless pending, when the body is
 * left to come (it never does). */
static void call_start(struct call *c, const char *method, const nghttp2_nv *h, size_t n,
                       const char *body, int pending)
{
    char id[32];
    struct rl_treq rq = {.tunnel = "corp",
                         .server = "crm",
                         .method = method,
                         .path = "/mcp/corp/crm",
                         .headers = h,
                         .nheaders = n,
                         .principal = "dev",
                         .request_id = id,
                         .end_stream = body == NULL && !pending};
    ev_tstamp end = ev_time() + WAIT_S;
    int rc;

    memset(c, 0, sizeof(*c));
    snprintf(id, sizeof(id), "req-%d", ++n_reqs);
    while ((rc = rl_tstream_open(relay, &rq, &call_cbs, c, &c->s)) == AL_ERR_CLOSED &&
           ev_time() < end)
        ev_run(loop, EVRUN_ONCE); /* the gateway is still registering */
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    if (body) {
        CU_ASSERT_EQUAL(rl_tstream_write(c->s, (const uint8_t *)body, strlen(body)), 0);
        CU_ASSERT_EQUAL(rl_tstream_end(c->s), 0);
    }
}

static void call_open(struct call *c, const char *method, const nghttp2_nv *h, size_t n,
                      const char *body)
{
    call_start(c, method, h, n, body, 0);
}

static int has(const char *hay, size_t n, const char *needle)
{
    return memmem(hay, n, needle, strlen(needle)) != NULL;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE         \
    }

static const char CALL_ALLOWED[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\","
                                   "\"params\":{\"name\":\"allowed_echo\",\"arguments\":{}}}";

/* ------------------------------------------------------------------ */
/* tests                                                                */
/* ------------------------------------------------------------------ */

static void test_post_roundtrip(void)
{
    static const nghttp2_nv h[] = {NV("content-type", "application/json"),
                                   NV("accept", "application/json, text/event-stream")};
    struct call c;

    setup();
    up.mode = UP_JSON;
    up.reply = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\","
               "\"text\":\"token " SECRET "\"}]}}";
    call_open(&c, "POST", h, sizeof(h) / sizeof(h[0]), CALL_ALLOWED);
    CU_ASSERT_FATAL(run_until(call_done, &c));
    CU_ASSERT(c.ended);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_EQUAL(up.nreq, 1);
    CU_ASSERT(has(up.last, up.last_len, "authorization: Bearer " SECRET "\r\n"));
    CU_ASSERT(has(up.last, up.last_len, "accept-encoding: identity\r\n"));
    CU_ASSERT(has(up.last, up.last_len, "\"allowed_echo\""));
    CU_ASSERT_FALSE(has(c.body, c.blen, SECRET));
    CU_ASSERT(has(c.body, c.blen, RL_SCRUB_MARK));
    teardown();
}

/* What the upstream answers that the gateway must not pass on: two
 * Content-Types (which one the agent's client reads is unknown), a 401 to
 * the injected credential (502 without the challenge); and the gateway-wide
 * body budget (max_buffered). */
static void test_refused_answers_and_budget(void)
{
    static const nghttp2_nv h[] = {NV("content-type", "application/json"),
                                   NV("accept", "application/json, text/event-stream")};
    struct call c;
    int before;

    setup();
    up.reply = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}";
    /* the budget: a body that would go beyond it is refused, nothing forwarded */
    before = up.nreq;
    g.cfg.max_buffered = 16;
    up.mode = UP_JSON;
    call_open(&c, "POST", h, sizeof(h) / sizeof(h[0]), CALL_ALLOWED);
    CU_ASSERT_FATAL(run_until(call_done, &c));
    CU_ASSERT_EQUAL(c.status, 503);
    CU_ASSERT(has(c.hdrs, c.hlen, "airlock-error: RATE_LIMITED\n"));
    settle();
    CU_ASSERT_EQUAL(up.nreq, before);
    CU_ASSERT_EQUAL(g.buffered, 0); /* nothing left counted */
    g.cfg.max_buffered = 64 << 20;
    call_open(&c, "POST", h, sizeof(h) / sizeof(h[0]), CALL_ALLOWED);
    CU_ASSERT_FATAL(run_until(call_done, &c));
    CU_ASSERT_EQUAL(c.status, 200);
    settle();
    CU_ASSERT_EQUAL(g.buffered, 0);
    /* two Content-Types */
    up.mode = UP_TWO_TYPES;
    call_open(&c, "POST", h, sizeof(h) / sizeof(h[0]), CALL_ALLOWED);
    CU_ASSERT_FATAL(run_until(call_done, &c));
    CU_ASSERT_EQUAL(c.status, 502);
    CU_ASSERT(has(c.hdrs, c.hlen, "airlock-error: UPSTREAM_FAILED\n"));
    CU_ASSERT(has(c.body, c.blen, "more than one Content-Type"));
    /* a 401 to the injected credential: 502 without the challenge, and the
     * cached value dropped (the next request must resolve again: there is
     * no credstore here, so it cannot) */
    up.mode = UP_401;
    call_open(&c, "POST", h, sizeof(h) / sizeof(h[0]), CALL_ALLOWED);
    CU_ASSERT_FATAL(run_until(call_done, &c));
    CU_ASSERT_EQUAL(c.status, 502);
    CU_ASSERT(has(c.hdrs, c.hlen, "airlock-error: UPSTREAM_CREDENTIAL_REJECTED\n"));
    CU_ASSERT_FALSE(has(c.hdrs, c.hlen, "www-authenticate"));
    CU_ASSERT_FALSE(has(c.body, c.blen, SECRET));
    CU_ASSERT_EQUAL(gw_cache_count(g.cred.cache), 0);
    teardown();
}

/* A body on a GET or DELETE is never inspected, so it must never reach the
 * upstream: the request is refused. */
static void test_get_with_body_refused(void)
{
    static const nghttp2_nv h[] = {NV("accept", "text/event-stream")};
    static const nghttp2_nv hl[] = {NV("accept", "text/event-stream"), NV("content-length", "2")};
    static const char smuggled[] = "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\","
                                   "\"params\":{\"name\":\"secret_tool_marker\"}}";
    struct call c;

    setup();
    up.mode = UP_JSON;
    up.reply = "{}";
    /* the body comes in DATA frames after the head */
    call_open(&c, "GET", h, sizeof(h) / sizeof(h[0]), smuggled);
    CU_ASSERT_FATAL(run_until(call_done, &c));
    CU_ASSERT_EQUAL(c.status, 400);
    CU_ASSERT(has(c.hdrs, c.hlen, "airlock-error: INVALID_FIELD\n"));
    CU_ASSERT(has(c.body, c.blen, "carry no body"));
    settle();
    CU_ASSERT_FALSE(up_saw("secret_tool_marker"));
    /* announced by Content-Length: refused from the head */
    call_open(&c, "DELETE", hl, sizeof(hl) / sizeof(hl[0]), "{}");
    CU_ASSERT_FATAL(run_until(call_done, &c));
    CU_ASSERT_EQUAL(c.status, 400);
    CU_ASSERT(has(c.hdrs, c.hlen, "airlock-error: INVALID_FIELD\n"));
    /* a GET without a body still works */
    call_open(&c, "GET", h, sizeof(h) / sizeof(h[0]), NULL);
    CU_ASSERT_FATAL(run_until(call_done, &c));
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT(has(up.last, up.last_len, "GET /mcp HTTP/1.1\r\n"));
    CU_ASSERT_FALSE(has(up.last, up.last_len, "ransfer-encoding"));
    CU_ASSERT_FALSE(up_saw("secret_tool_marker"));
    teardown();
}

/* The gateway checks one Mcp-Name (and one of each header it reads); an
 * upstream could read another copy: a repeat is refused before the upstream
 * is called. */
static void test_repeated_header_refused(void)
{
    static const nghttp2_nv two_names[] = {
        NV("content-type", "application/json"), NV("mcp-protocol-version", "2026-07-28"),
        NV("mcp-method", "tools/call"), NV("mcp-name", "allowed_echo"),
        NV("mcp-name", "secret_tool")};
    static const nghttp2_nv two_sessions[] = {NV("content-type", "application/json"),
                                              NV("mcp-session-id", "session-of-dev"),
                                              NV("mcp-session-id", "session-of-someone-else")};
    static const nghttp2_nv one_each[] = {
        NV("content-type", "application/json"), NV("mcp-protocol-version", "2026-07-28"),
        NV("mcp-method", "tools/call"), NV("mcp-name", "allowed_echo")};
    struct call c;

    setup();
    up.mode = UP_JSON;
    up.reply = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}";
    call_open(&c, "POST", two_names, sizeof(two_names) / sizeof(two_names[0]), CALL_ALLOWED);
    CU_ASSERT_FATAL(run_until(call_done, &c));
    CU_ASSERT_EQUAL(c.status, 400);
    CU_ASSERT(has(c.body, c.blen, "more than one mcp-name header"));
    call_open(&c, "POST", two_sessions, sizeof(two_sessions) / sizeof(two_sessions[0]),
              CALL_ALLOWED);
    CU_ASSERT_FATAL(run_until(call_done, &c));
    CU_ASSERT_EQUAL(c.status, 400);
    CU_ASSERT(has(c.body, c.blen, "more than one mcp-session-id header"));
    settle();
    CU_ASSERT_EQUAL(up.nreq, 0);
    /* one of each goes through */
    call_open(&c, "POST", one_each, sizeof(one_each) / sizeof(one_each[0]), CALL_ALLOWED);
    CU_ASSERT_FATAL(run_until(call_done, &c));
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_EQUAL(up.nreq, 1);
    teardown();
}

static const char ELICIT[] =
    "event: message\n"
    "data: {\"jsonrpc\":\"2.0\",\"id\":\"e1\",\"method\":\"elicitation/create\","
    "\"params\":{\"message\":\"Which account?\",\"requestedSchema\":{\"type\":\"object\"}}}\n"
    "\n";

static int event_arrived(void *arg)
{
    const struct call *c = arg;
    return c->blen >= strlen(ELICIT) || c->failed;
}

/* An MCP server that sends a request to the client in the SSE response of a
 * tools/call (elicitation, sampling) waits for the answer before it goes
 * on: the event must reach the agent side whole while the response is
 * still open, not once more bytes follow. */
static void test_sse_event_not_held(void)
{
    static const nghttp2_nv h[] = {NV("content-type", "application/json"),
                                   NV("accept", "application/json, text/event-stream")};
    struct call c;

    setup();
    up.mode = UP_SSE_HOLD;
    up.reply = ELICIT;
    call_open(&c, "POST", h, sizeof(h) / sizeof(h[0]), CALL_ALLOWED);
    CU_ASSERT_FATAL(run_until(event_arrived, &c));
    CU_ASSERT_FALSE(c.ended || c.failed);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_EQUAL(c.blen, strlen(ELICIT));
    CU_ASSERT(c.blen == strlen(ELICIT) && memcmp(c.body, ELICIT, c.blen) == 0);
    /* the server answers and ends the stream */
    CU_ASSERT_PTR_NOT_NULL_FATAL(up.held);
    {
        static const char last[] = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
        char chunk[128];
        int n = snprintf(chunk, sizeof(chunk), "%zx\r\n%s\r\n0\r\n\r\n", strlen(last), last);
        up_write(up.held, chunk, (size_t)n);
    }
    CU_ASSERT_FATAL(run_until(call_done, &c));
    CU_ASSERT(c.ended);
    CU_ASSERT(has(c.body, c.blen, "\"result\":{}"));
    teardown();
}

static int gw_agent_streams(void)
{
    int n = 0;
    for (const struct gw_conn *c = g.conns; c; c = c->next)
        n += c->agent_streams;
    return n;
}

static int want_streams;

static int streams_are(void *arg)
{
    (void)arg;
    return gw_agent_streams() == want_streams;
}

#define MASS 1100

/* An agent whose HTTP/2 connection carried many requests goes away: the
 * relay cancels every one of them at once. That burst of RST_STREAM is
 * ordinary traffic for a gateway (its peer is the relay, not the agent): it
 * must not tear down the tunnel connection and with it the requests of
 * every other agent on it. */
static void test_mass_cancel_keeps_connection(void)
{
    static const nghttp2_nv h[] = {NV("content-type", "application/json"),
                                   NV("accept", "application/json, text/event-stream")};
    static struct call victim, many[MASS];
    uint64_t ids[2] = {0, 0};
    size_t nid = 0;

    setup();
    up.mode = UP_SSE_HOLD;
    up.reply = ELICIT;
    call_open(&victim, "POST", h, sizeof(h) / sizeof(h[0]), CALL_ALLOWED);
    CU_ASSERT_FATAL(run_until(event_arrived, &victim));
    for (const struct gw_conn *c = g.conns; c && nid < 2; c = c->next)
        ids[nid++] = c->id;
    /* requests whose body never comes: they wait at the gateway */
    for (int i = 0; i < MASS; i++)
        call_start(&many[i], "POST", h, sizeof(h) / sizeof(h[0]), NULL, 1);
    want_streams = MASS + 1;
    CU_ASSERT_FATAL(run_until(streams_are, NULL));
    for (int i = 0; i < MASS; i++)
        rl_tstream_cancel(many[i].s);
    want_streams = 1;
    CU_ASSERT(run_until(streams_are, NULL));
    settle();
    CU_ASSERT_FALSE(victim.failed);
    /* the same connections still serve: the victim's response completes */
    for (size_t i = 0; i < nid; i++) {
        int found = 0;
        for (const struct gw_conn *c = g.conns; c; c = c->next)
            found |= c->id == ids[i] && c->state == GW_CONN_READY;
        CU_ASSERT(found);
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(up.held);
    {
        static const char last[] = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
        char chunk[128];
        int n = snprintf(chunk, sizeof(chunk), "%zx\r\n%s\r\n0\r\n\r\n", strlen(last), last);
        up_write(up.held, chunk, (size_t)n);
    }
    CU_ASSERT_FATAL(run_until(call_done, &victim));
    CU_ASSERT(victim.ended);
    teardown();
}

/* ------------------------------------------------------------------ */

static int suite_init(void)
{
    char tmpl[] = "/tmp/al-test-gw-stream-XXXXXX";
    static const char *const alpn[] = {GW_ALPN, NULL};
    char cert[300], key[300], ca[300];
    uint8_t seed[32], pub[32];

    loop = EV_DEFAULT;
    ev_timer_init(&tick, tick_cb, 0.05, 0.05);
    ev_timer_start(loop, &tick);
    if (!mkdtemp(tmpl))
        return 1;
    snprintf(pki, sizeof(pki), "%s", tmpl);
    if (al_pki_create_ca(pki, 0) < 0 || al_pki_issue(pki, "relay", "relay-0", AL_PKI_SERVER) < 0 ||
        al_pki_issue(pki, "gateway", "gw1", 0) < 0)
        return 1;
    snprintf(cert, sizeof(cert), "%s/relay-relay-0.crt", pki);
    snprintf(key, sizeof(key), "%s/relay-relay-0.key", pki);
    snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
    struct al_tls_opts to = {.cert_file = cert,
                             .key_file = key,
                             .ca_file = ca,
                             .server = 1,
                             .require_peer_cert = 1,
                             .alpn = alpn};
    if (al_tls_new(&to, &relay_tls) < 0)
        return 1;
    for (size_t i = 0; i < sizeof(seed); i++)
        seed[i] = (uint8_t)(i * 7 + 3);
    if (al_grant_signer_new_raw(seed, sizeof(seed), NULL, RELAY_ID, &signer) < 0 ||
        al_grant_signer_public_raw(signer, pub, sizeof(pub)) < 0 ||
        al_grant_keyring_new(&keyring) < 0 ||
        al_grant_keyring_add_raw(keyring, NULL, RELAY_ID, pub, sizeof(pub)) < 0)
        return 1;
    return 0;
}

static int suite_clean(void)
{
    char cmd[300];

    al_tls_free(relay_tls);
    al_grant_signer_free(signer);
    al_grant_keyring_free(keyring);
    ev_timer_stop(loop, &tick);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", pki);
    return system(cmd) == 0 ? 0 : 1;
}

int main(void)
{
    CU_pSuite s;
    int failed;

    signal(SIGPIPE, SIG_IGN);
    /* log lines would split CUnit's result lines; GW_TEST_LOG=debug shows them */
    if (al_log_set_level_name(getenv("GW_TEST_LOG") ? getenv("GW_TEST_LOG") : "off") < 0)
        al_log_set_level_name("off");
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("gw_stream", suite_init, suite_clean);
    CU_add_test(s, "POST tools/call: credential injected upstream, scrubbed from the response",
                test_post_roundtrip);
    CU_add_test(s, "two Content-Types, an upstream 401, the body budget: refused",
                test_refused_answers_and_budget);
    CU_add_test(s, "GET or DELETE with a body: refused, the body never forwarded",
                test_get_with_body_refused);
    CU_add_test(s, "a single-instance header sent twice: refused before the upstream",
                test_repeated_header_refused);
    CU_add_test(s, "SSE event of a held-open response reaches the agent side whole",
                test_sse_event_not_held);
    CU_add_test(s, "relay cancelling many streams at once: the tunnel connection stays",
                test_mass_cancel_keeps_connection);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
