/*
 * In-process tests of the gRPC server and client library on loopback:
 * unary and streaming calls, asynchronous replies, deadlines on both sides,
 * unknown methods, size caps, metadata, peer identity over mTLS, certificate
 * reload with an open stream, metrics.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "airlock/test/v1/test.pb-c.h"
#include "al_err.h"
#include "al_grpc.h"
#include "al_grpc_client.h"
#include "al_health.h"
#include "al_metrics.h"
#include "al_pki.h"
#include "al_tls.h"

static struct ev_loop *loop;
static char pki[256];
static int cancels_seen;

/* ---------- server side ---------- */

struct delayed {
    ev_timer t;
    struct al_grpc_call *call;
    char message[64];
};

static void delayed_fire(struct ev_loop *l, ev_timer *w, int revents)
{
    struct delayed *d = w->data;
    Airlock__Test__V1__EchoReply rep = AIRLOCK__TEST__V1__ECHO_REPLY__INIT;
    (void)l;
    (void)revents;
    rep.message = d->message;
    al_grpc_call_reply(d->call, &rep.base);
    free(d);
}

static void delayed_cancel(struct al_grpc_call *call, void *user)
{
    struct delayed *d = user;
    cancels_seen++;
    ev_timer_stop(loop, &d->t);
    al_grpc_call_finish(call, AL_GRPC_CANCELLED, NULL);
    free(d);
}

static void echo_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    const Airlock__Test__V1__EchoRequest *r = (const void *)req;
    Airlock__Test__V1__EchoReply rep = AIRLOCK__TEST__V1__ECHO_REPLY__INIT;
    size_t len = 0;
    (void)user;

    if (r->fail_code) {
        al_grpc_call_finish(call, r->fail_code, r->fail_message);
        return;
    }
    if (r->delay_ms) {
        struct delayed *d = calloc(1, sizeof(*d));
        d->call = call;
        snprintf(d->message, sizeof(d->message), "%s", r->message);
        ev_timer_init(&d->t, delayed_fire, r->delay_ms / 1000.0, 0.);
        d->t.data = d;
        ev_timer_start(loop, &d->t);
        al_grpc_call_on_cancel(call, delayed_cancel, d);
        return;
    }
    rep.message = r->message;
    rep.payload = r->payload;
    rep.peer_identity = (char *)al_grpc_call_peer_id(call);
    const char *bin = al_grpc_call_metadata(call, "x-echo-bin", &len);
    if (bin) {
        rep.echo_metadata_bin.data = (uint8_t *)bin;
        rep.echo_metadata_bin.len = len;
        CU_ASSERT_EQUAL(al_grpc_call_add_trailer(call, "x-trailer-bin", bin, len), 0);
    }
    al_grpc_call_reply(call, &rep.base);
}

struct streamer {
    struct al_grpc_call *call;
    int sent, count;
    uint8_t payload[8192];
};

static void stream_more(struct al_grpc_call *call, void *user)
{
    struct streamer *s = user;
    while (s->sent < s->count) {
        Airlock__Test__V1__StreamReply rep = AIRLOCK__TEST__V1__STREAM_REPLY__INIT;
        rep.seq = s->sent;
        rep.payload.data = s->payload;
        rep.payload.len = sizeof(s->payload);
        if (al_grpc_call_send(call, &rep.base) < 0)
            break;
        s->sent++;
        if (al_grpc_call_pending(call) > 64 * 1024) {
            al_grpc_call_on_writable(call, 16 * 1024, stream_more, s);
            return;
        }
    }
    al_grpc_call_finish(call, AL_GRPC_OK, NULL);
    free(s);
}

static void stream_cancel(struct al_grpc_call *call, void *user)
{
    cancels_seen++;
    al_grpc_call_finish(call, AL_GRPC_CANCELLED, NULL);
    free(user);
}

static void stream_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    const Airlock__Test__V1__StreamRequest *r = (const void *)req;
    struct streamer *s = calloc(1, sizeof(*s));
    (void)user;
    s->count = r->count;
    memset(s->payload, 'p', sizeof(s->payload));
    al_grpc_call_on_cancel(call, stream_cancel, s);
    stream_more(call, s);
}

static const struct al_grpc_method_impl impls[] = {{"Echo", echo_cb}, {"Stream", stream_cb}};

struct server {
    struct al_grpc_server *srv;
    struct al_health *health;
    struct al_metrics *metrics;
    struct al_tls *tls;
    char addr[64];
};

static void server_start(struct server *s, int use_tls, size_t max_msg)
{
    memset(s, 0, sizeof(*s));
    CU_ASSERT_FATAL(al_metrics_new(&s->metrics) == 0);
    if (use_tls) {
        char cert[300], key[300], ca[300];
        snprintf(cert, sizeof(cert), "%s/test-testsvc.crt", pki);
        snprintf(key, sizeof(key), "%s/test-testsvc.key", pki);
        snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
        struct al_tls_opts to = {
            .cert_file = cert, .key_file = key, .ca_file = ca, .server = 1, .require_peer_cert = 1};
        CU_ASSERT_FATAL(al_tls_new(&to, &s->tls) == 0);
    }
    struct al_grpc_server_opts o = {.listen = "127.0.0.1:0",
                                    .tls = s->tls,
                                    .insecure = !use_tls,
                                    .require_client_cert = use_tls,
                                    .max_message_bytes = max_msg,
                                    .metrics = s->metrics};
    CU_ASSERT_FATAL(al_grpc_server_new(loop, &o, &s->srv) == 0);
    CU_ASSERT_FATAL(al_health_new(s->srv, &s->health) == 0);
    CU_ASSERT_FATAL(al_grpc_server_add_service(s->srv, &airlock__test__v1__test_service__descriptor,
                                               impls, 2, NULL) == 0);
    CU_ASSERT_FATAL(al_grpc_server_start(s->srv) == 0);
    snprintf(s->addr, sizeof(s->addr), "127.0.0.1:%d", al_grpc_server_port(s->srv));
}

static void server_stop(struct server *s)
{
    al_grpc_server_free(s->srv);
    al_health_free(s->health);
    al_tls_free(s->tls);
    al_metrics_free(s->metrics);
    ev_run(loop, EVRUN_NOWAIT);
}

/* ---------- client side ---------- */

struct result {
    int done, status, messages;
    char msg[256];
    char reply[64];
    char peer[128];
    uint8_t bin[64];
    size_t binlen;
    char trailer_bin[64];
    size_t trailer_len;
};

static void on_msg(struct al_grpc_ccall *cc, const ProtobufCMessage *m, void *user)
{
    struct result *r = user;
    (void)cc;
    r->messages++;
    if (m->descriptor == &airlock__test__v1__echo_reply__descriptor) {
        const Airlock__Test__V1__EchoReply *e = (const void *)m;
        snprintf(r->reply, sizeof(r->reply), "%s", e->message);
        snprintf(r->peer, sizeof(r->peer), "%s", e->peer_identity);
        r->binlen = e->echo_metadata_bin.len < 64 ? e->echo_metadata_bin.len : 64;
        if (r->binlen)
            memcpy(r->bin, e->echo_metadata_bin.data, r->binlen);
    }
}

static void on_done(struct al_grpc_ccall *cc, int status, const char *msg, void *user)
{
    struct result *r = user;
    size_t len = 0;
    const char *t = al_grpc_ccall_metadata(cc, "x-trailer-bin", &len);
    r->done = 1;
    r->status = status;
    snprintf(r->msg, sizeof(r->msg), "%s", msg);
    if (t) {
        snprintf(r->trailer_bin, sizeof(r->trailer_bin), "%.*s", (int)len, t);
        r->trailer_len = len;
    }
}

static const struct al_grpc_ccall_cbs cbs = {on_msg, on_done};

static void run_until(int *flag, double max_s)
{
    ev_tstamp end = ev_time() + max_s;
    while (!*flag && ev_time() < end)
        ev_run(loop, EVRUN_ONCE);
}

static struct al_tls *client_tls(const char *role, const char *name)
{
    char cert[300], key[300], ca[300];
    struct al_tls *t = NULL;
    snprintf(cert, sizeof(cert), "%s/%s-%s.crt", pki, role, name);
    snprintf(key, sizeof(key), "%s/%s-%s.key", pki, role, name);
    snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
    struct al_tls_opts to = {.cert_file = cert, .key_file = key, .ca_file = ca, .server = 0};
    CU_ASSERT(al_tls_new(&to, &t) == 0);
    return t;
}

static int call_echo(struct al_grpc_channel *ch, const char *text, int fail_code, int delay_ms,
                     size_t payload, double timeout, struct result *r)
{
    Airlock__Test__V1__EchoRequest req = AIRLOCK__TEST__V1__ECHO_REQUEST__INIT;
    uint8_t *buf = payload ? calloc(1, payload) : NULL;
    static const uint8_t binval[] = {0, 1, 2, 0xff, 'z'};
    struct al_grpc_md md[] = {{"x-echo-bin", binval, sizeof(binval)}};
    req.message = (char *)text;
    req.fail_code = fail_code;
    req.fail_message = fail_code ? "failed: h\xc3\xa9llo \xe2\x9c\x93" : "";
    req.delay_ms = delay_ms;
    req.payload.data = buf;
    req.payload.len = payload;
    memset(r, 0, sizeof(*r));
    int rc = al_grpc_channel_call(ch, "/airlock.test.v1.TestService/Echo", &req.base,
                                  &airlock__test__v1__echo_reply__descriptor, md, 1, timeout, &cbs,
                                  r, NULL);
    free(buf);
    if (rc == 0)
        run_until(&r->done, 10);
    return rc;
}

static void exercise(struct server *s, struct al_tls *ctls)
{
    struct al_grpc_channel *ch;
    struct al_grpc_channel_opts co = {.target = s->addr, .tls = ctls};
    struct result r;

    CU_ASSERT_FATAL(al_grpc_channel_new(loop, &co, &ch) == 0);
    /* unary, metadata both ways */
    CU_ASSERT(call_echo(ch, "hi", 0, 0, 0, 5, &r) == 0);
    CU_ASSERT_EQUAL(r.status, AL_GRPC_OK);
    CU_ASSERT_STRING_EQUAL(r.reply, "hi");
    CU_ASSERT_EQUAL(r.binlen, 5);
    CU_ASSERT_EQUAL(memcmp(r.bin, "\0\1\2\xffz", 5), 0);
    CU_ASSERT_EQUAL(r.trailer_len, 5);
    if (ctls) {
        CU_ASSERT_STRING_EQUAL(r.peer, "spiffe://airlock/client/client");
    } else {
        CU_ASSERT_STRING_EQUAL(r.peer, "");
    }
    /* error status with a non-ASCII message */
    call_echo(ch, "x", AL_GRPC_NOT_FOUND, 0, 0, 5, &r);
    CU_ASSERT_EQUAL(r.status, AL_GRPC_NOT_FOUND);
    CU_ASSERT_STRING_EQUAL(r.msg, "failed: h\xc3\xa9llo \xe2\x9c\x93");
    /* asynchronous reply from a timer */
    call_echo(ch, "later", 0, 30, 0, 5, &r);
    CU_ASSERT_EQUAL(r.status, AL_GRPC_OK);
    CU_ASSERT_STRING_EQUAL(r.reply, "later");
    /* deadline: the server's handler is told and the client gets DEADLINE_EXCEEDED */
    int before = cancels_seen;
    call_echo(ch, "slow", 0, 2000, 0, 0.1, &r);
    CU_ASSERT_EQUAL(r.status, AL_GRPC_DEADLINE_EXCEEDED);
    ev_tstamp end = ev_time() + 3;
    while (cancels_seen == before && ev_time() < end)
        ev_run(loop, EVRUN_ONCE);
    CU_ASSERT_EQUAL(cancels_seen, before + 1);
    /* over the message cap */
    call_echo(ch, "big", 0, 0, 100 * 1024, 5, &r);
    CU_ASSERT_EQUAL(r.status, AL_GRPC_RESOURCE_EXHAUSTED);
    /* the connection still serves */
    call_echo(ch, "again", 0, 0, 1000, 5, &r);
    CU_ASSERT_EQUAL(r.status, AL_GRPC_OK);
    /* unknown method */
    {
        Airlock__Test__V1__EchoRequest req = AIRLOCK__TEST__V1__ECHO_REQUEST__INIT;
        memset(&r, 0, sizeof(r));
        al_grpc_channel_call(ch, "/airlock.test.v1.TestService/Nope", &req.base,
                             &airlock__test__v1__echo_reply__descriptor, NULL, 0, 5, &cbs, &r,
                             NULL);
        run_until(&r.done, 5);
        CU_ASSERT_EQUAL(r.status, AL_GRPC_UNIMPLEMENTED);
    }
    /* server streaming with back-pressure: 500 x 8 KiB */
    {
        Airlock__Test__V1__StreamRequest req = AIRLOCK__TEST__V1__STREAM_REQUEST__INIT;
        req.count = 500;
        memset(&r, 0, sizeof(r));
        al_grpc_channel_call(ch, "/airlock.test.v1.TestService/Stream", &req.base,
                             &airlock__test__v1__stream_reply__descriptor, NULL, 0, 20, &cbs, &r,
                             NULL);
        run_until(&r.done, 20);
        CU_ASSERT_EQUAL(r.status, AL_GRPC_OK);
        CU_ASSERT_EQUAL(r.messages, 500);
    }
    al_grpc_channel_free(ch);
    ev_run(loop, EVRUN_NOWAIT);
}

static void test_h2c(void)
{
    struct server s;
    server_start(&s, 0, 64 * 1024);
    exercise(&s, NULL);
    /* metrics recorded the calls */
    char *text = NULL;
    size_t len = 0;
    CU_ASSERT(al_metrics_render(s.metrics, &text, &len) == 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "airlock_grpc_requests_total{method=\"/airlock.test.v1."
                                        "TestService/Echo\",code=\"NOT_FOUND\"} 1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "code=\"DEADLINE_EXCEEDED\"} 1"));
    free(text);
    server_stop(&s);
}

static void test_mtls(void)
{
    struct server s;
    server_start(&s, 1, 64 * 1024);
    struct al_tls *ct = client_tls("client", "client");
    exercise(&s, ct);
    al_tls_free(ct);
    server_stop(&s);
}

static void test_mtls_refuses_other_ca(void)
{
    struct server s;
    char other[300];
    struct result r;
    struct al_grpc_channel *ch;

    server_start(&s, 1, 64 * 1024);
    /* a client certificate from a CA the server does not trust */
    snprintf(other, sizeof(other), "%s/other", pki);
    mkdir(other, 0700);
    CU_ASSERT_FATAL(al_pki_create_ca(other, 0) == 0);
    CU_ASSERT_FATAL(al_pki_issue(other, "client", "evil", 0) == 0);
    char cert[400], key[400], ca[300];
    snprintf(cert, sizeof(cert), "%s/client-evil.crt", other);
    snprintf(key, sizeof(key), "%s/client-evil.key", other);
    snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
    struct al_tls_opts to = {.cert_file = cert, .key_file = key, .ca_file = ca};
    struct al_tls *ct = NULL;
    CU_ASSERT_FATAL(al_tls_new(&to, &ct) == 0);
    struct al_grpc_channel_opts co = {.target = s.addr, .tls = ct};
    CU_ASSERT_FATAL(al_grpc_channel_new(loop, &co, &ch) == 0);
    call_echo(ch, "x", 0, 0, 0, 5, &r);
    CU_ASSERT_EQUAL(r.status, AL_GRPC_UNAVAILABLE);
    al_grpc_channel_free(ch);
    al_tls_free(ct);
    /* and a good client still works afterwards */
    ct = client_tls("client", "client");
    co.tls = ct;
    CU_ASSERT_FATAL(al_grpc_channel_new(loop, &co, &ch) == 0);
    call_echo(ch, "ok", 0, 0, 0, 5, &r);
    CU_ASSERT_EQUAL(r.status, AL_GRPC_OK);
    al_grpc_channel_free(ch);
    al_tls_free(ct);
    server_stop(&s);
}

static void test_expect_peer(void)
{
    struct server s;
    struct result r;
    struct al_grpc_channel *ch;
    server_start(&s, 1, 64 * 1024);
    struct al_tls *ct = client_tls("client", "client");
    /* the server is test/testsvc, not credstore: refuse to talk to it */
    struct al_grpc_channel_opts co = {
        .target = s.addr, .tls = ct, .expect_peer = "spiffe://airlock/credstore/"};
    CU_ASSERT_FATAL(al_grpc_channel_new(loop, &co, &ch) == 0);
    call_echo(ch, "x", 0, 0, 0, 5, &r);
    CU_ASSERT_EQUAL(r.status, AL_GRPC_UNAVAILABLE);
    al_grpc_channel_free(ch);
    al_tls_free(ct);
    server_stop(&s);
}

static void test_reload_keeps_stream(void)
{
    struct server s;
    struct result r, r2;
    struct al_grpc_channel *ch;
    server_start(&s, 1, 64 * 1024);
    struct al_tls *ct = client_tls("client", "client");
    struct al_grpc_channel_opts co = {.target = s.addr, .tls = ct};
    CU_ASSERT_FATAL(al_grpc_channel_new(loop, &co, &ch) == 0);
    /* a call in flight across the reload */
    Airlock__Test__V1__EchoRequest req = AIRLOCK__TEST__V1__ECHO_REQUEST__INIT;
    req.message = "across";
    req.delay_ms = 300;
    memset(&r, 0, sizeof(r));
    al_grpc_channel_call(ch, "/airlock.test.v1.TestService/Echo", &req.base,
                         &airlock__test__v1__echo_reply__descriptor, NULL, 0, 10, &cbs, &r, NULL);
    ev_tstamp end = ev_time() + 0.1;
    while (ev_time() < end)
        ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
    /* re-issue the server certificate and reload */
    CU_ASSERT_FATAL(al_pki_issue(pki, "test", "testsvc", AL_PKI_SERVER | AL_PKI_OVERWRITE) == 0);
    unsigned gen = al_tls_generation(s.tls);
    CU_ASSERT_EQUAL(al_tls_reload(s.tls), 0);
    CU_ASSERT_EQUAL(al_tls_generation(s.tls), gen + 1);
    run_until(&r.done, 10);
    CU_ASSERT_EQUAL(r.status, AL_GRPC_OK);
    CU_ASSERT_STRING_EQUAL(r.reply, "across");
    /* a new connection works with the new certificate */
    struct al_grpc_channel *ch2;
    CU_ASSERT_FATAL(al_grpc_channel_new(loop, &co, &ch2) == 0);
    call_echo(ch2, "new", 0, 0, 0, 5, &r2);
    CU_ASSERT_EQUAL(r2.status, AL_GRPC_OK);
    al_grpc_channel_free(ch2);
    al_grpc_channel_free(ch);
    al_tls_free(ct);
    server_stop(&s);
}

static void test_reload_bad_files_keeps_old(void)
{
    struct server s;
    server_start(&s, 1, 64 * 1024);
    char key[300];
    snprintf(key, sizeof(key), "%s/test-testsvc.key", pki);
    /* a key that does not match the certificate: reload refuses, old context stays */
    char other_key[300];
    snprintf(other_key, sizeof(other_key), "%s/client-client.key", pki);
    char cmd[2000];
    snprintf(cmd, sizeof(cmd), "cp %s %s.bak && cp %s %s", key, key, other_key, key);
    CU_ASSERT_EQUAL(system(cmd), 0);
    CU_ASSERT_EQUAL(al_tls_reload(s.tls), AL_ERR_TLS);
    snprintf(cmd, sizeof(cmd), "mv %s.bak %s", key, key);
    CU_ASSERT_EQUAL(system(cmd), 0);
    struct result r;
    struct al_grpc_channel *ch;
    struct al_tls *ct = client_tls("client", "client");
    struct al_grpc_channel_opts co = {.target = s.addr, .tls = ct};
    CU_ASSERT_FATAL(al_grpc_channel_new(loop, &co, &ch) == 0);
    call_echo(ch, "still", 0, 0, 0, 5, &r);
    CU_ASSERT_EQUAL(r.status, AL_GRPC_OK);
    al_grpc_channel_free(ch);
    al_tls_free(ct);
    server_stop(&s);
}

static void test_unary_sync_health(void)
{
    struct server s;
    server_start(&s, 0, 64 * 1024);
    /* run the server on this loop from a child thread is not possible; use
     * the async client and the health service instead */
    struct al_grpc_channel *ch;
    struct al_grpc_channel_opts co = {.target = s.addr};
    CU_ASSERT_FATAL(al_grpc_channel_new(loop, &co, &ch) == 0);
    struct result r = {0};
    extern const ProtobufCMessageDescriptor grpc__health__v1__health_check_request__descriptor;
    extern const ProtobufCMessageDescriptor grpc__health__v1__health_check_response__descriptor;
    ProtobufCMessage *req =
        calloc(1, grpc__health__v1__health_check_request__descriptor.sizeof_message);
    grpc__health__v1__health_check_request__descriptor.message_init(req);
    al_grpc_channel_call(ch, "/grpc.health.v1.Health/Check", req,
                         &grpc__health__v1__health_check_response__descriptor, NULL, 0, 5, &cbs, &r,
                         NULL);
    run_until(&r.done, 5);
    CU_ASSERT_EQUAL(r.status, AL_GRPC_OK);
    CU_ASSERT_EQUAL(r.messages, 1);
    free(req);
    al_grpc_channel_free(ch);
    server_stop(&s);
}

static int suite_init(void)
{
    char tmpl[] = "/tmp/al-test-grpc-XXXXXX";
    loop = EV_DEFAULT;
    if (!mkdtemp(tmpl))
        return 1;
    snprintf(pki, sizeof(pki), "%s", tmpl);
    if (al_pki_create_ca(pki, 0) < 0 || al_pki_issue(pki, "test", "testsvc", AL_PKI_SERVER) < 0 ||
        al_pki_issue(pki, "client", "client", 0) < 0)
        return 1;
    return 0;
}

static int suite_clean(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", pki);
    return system(cmd) == 0 ? 0 : 1;
}

int main(void)
{
    CU_pSuite s;
    int failed;
    signal(SIGPIPE, SIG_IGN);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("grpc", suite_init, suite_clean);
    CU_add_test(s, "h2c: unary, async, deadline, caps, metadata, streaming, metrics", test_h2c);
    CU_add_test(s, "mTLS: the same, with peer identity", test_mtls);
    CU_add_test(s, "mTLS: client certificate from another CA refused", test_mtls_refuses_other_ca);
    CU_add_test(s, "client refuses a server with the wrong identity", test_expect_peer);
    CU_add_test(s, "certificate reload keeps a call in flight", test_reload_keeps_stream);
    CU_add_test(s, "a bad reload keeps the previous certificate", test_reload_bad_files_keeps_old);
    CU_add_test(s, "health check", test_unary_sync_health);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
