/*
 * airlock-testsvc: a small gRPC service on the Airlock library, used by the
 * interop, bad-input and benchmark tests (airlock.test.v1.TestService plus
 * grpc.health.v1 and the ops port). Echo answers at once or from a timer;
 * Stream sends a paced or back-pressured series of messages.
 */
#include <stdlib.h>
#include <string.h>

#include "airlock/test/v1/test.pb-c.h"

#include "al_err.h"
#include "al_grpc.h"
#include "al_log.h"
#include "al_service.h"

struct cfg {
    struct al_service_config common;
};

struct pending {
    ev_timer timer;
    struct al_grpc_call *call;
    struct al_service *svc;
    /* Stream state */
    int sent, count, interval_ms, payload_bytes, fail_code;
    uint8_t *payload;
    /* Echo state */
    const Airlock__Test__V1__EchoRequest *echo;
};

static void pending_free(struct pending *p)
{
    ev_timer_stop(p->svc->loop, &p->timer);
    free(p->payload);
    free(p);
}

static void echo_answer(struct al_grpc_call *call, const Airlock__Test__V1__EchoRequest *r)
{
    Airlock__Test__V1__EchoReply rep = AIRLOCK__TEST__V1__ECHO_REPLY__INIT;
    size_t len = 0;
    const char *md;

    if (r->fail_code) {
        al_grpc_call_finish(call, r->fail_code, r->fail_message);
        return;
    }
    rep.message = r->message;
    rep.payload = r->payload;
    rep.peer_identity = (char *)al_grpc_call_peer_id(call);
    md = al_grpc_call_metadata(call, "x-echo", NULL);
    rep.echo_metadata = (char *)(md ? md : "");
    md = al_grpc_call_metadata(call, "x-echo-bin", &len);
    if (md) {
        rep.echo_metadata_bin.data = (uint8_t *)md;
        rep.echo_metadata_bin.len = len;
        al_grpc_call_add_trailer(call, "x-trailer-bin", md, len);
    }
    al_grpc_call_reply(call, &rep.base);
}

static void echo_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pending *p = w->data;
    (void)loop;
    (void)revents;
    echo_answer(p->call, p->echo);
    pending_free(p);
}

static void pending_cancel_cb(struct al_grpc_call *call, void *user)
{
    struct pending *p = user;
    AL_LOG_DEBUG("testsvc.cancel", "stream=%d", al_grpc_call_stream_id(call));
    al_grpc_call_finish(call, AL_GRPC_CANCELLED, NULL);
    pending_free(p);
}

static void echo_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    const Airlock__Test__V1__EchoRequest *r = (const void *)req;
    struct pending *p;

    if (r->delay_ms <= 0) {
        echo_answer(call, r);
        return;
    }
    p = calloc(1, sizeof(*p));
    if (!p) {
        al_grpc_call_finish(call, AL_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    p->svc = user;
    p->call = call;
    p->echo = r;
    ev_timer_init(&p->timer, echo_timer_cb, r->delay_ms / 1000.0, 0.);
    p->timer.data = p;
    ev_timer_start(p->svc->loop, &p->timer);
    al_grpc_call_on_cancel(call, pending_cancel_cb, p);
}

static void stream_step(struct pending *p);

static void stream_writable_cb(struct al_grpc_call *call, void *user)
{
    (void)call;
    stream_step(user);
}

static void stream_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    stream_step(w->data);
}

/* Sends until done, the output buffer is full (resume on writable), or the
 * next message is due later (resume on the timer). */
static void stream_step(struct pending *p)
{
    while (p->sent < p->count) {
        Airlock__Test__V1__StreamReply rep = AIRLOCK__TEST__V1__STREAM_REPLY__INIT;
        rep.seq = p->sent;
        rep.payload.data = p->payload;
        rep.payload.len = (size_t)p->payload_bytes;
        int rc = al_grpc_call_send(p->call, &rep.base);
        if (rc < 0) {
            al_grpc_call_finish(p->call,
                                rc == AL_ERR_TOOBIG ? AL_GRPC_RESOURCE_EXHAUSTED : AL_GRPC_INTERNAL,
                                rc == AL_ERR_TOOBIG ? "response message over the size limit"
                                                    : al_strerror(rc));
            pending_free(p);
            return;
        }
        p->sent++;
        if (p->interval_ms > 0 && p->sent < p->count) {
            ev_timer_set(&p->timer, p->interval_ms / 1000.0, 0.);
            ev_timer_start(p->svc->loop, &p->timer);
            return;
        }
        if (al_grpc_call_pending(p->call) > 256 * 1024) {
            al_grpc_call_on_writable(p->call, 64 * 1024, stream_writable_cb, p);
            return;
        }
    }
    al_grpc_call_finish(p->call, p->fail_code, p->fail_code ? "stream failed as asked" : NULL);
    pending_free(p);
}

static void stream_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    const Airlock__Test__V1__StreamRequest *r = (const void *)req;
    struct pending *p;

    if (r->count < 0 || r->payload_bytes < 0 || r->payload_bytes > 4 * 1024 * 1024) {
        al_grpc_call_finish(call, AL_GRPC_INVALID_ARGUMENT, "count and payload_bytes out of range");
        return;
    }
    p = calloc(1, sizeof(*p));
    if (!p || !(p->payload = calloc(1, (size_t)r->payload_bytes + 1))) {
        free(p);
        al_grpc_call_finish(call, AL_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    memset(p->payload, 'x', (size_t)r->payload_bytes);
    p->svc = user;
    p->call = call;
    p->count = r->count;
    p->interval_ms = r->interval_ms;
    p->payload_bytes = r->payload_bytes;
    p->fail_code = r->fail_code;
    ev_timer_init(&p->timer, stream_timer_cb, 0., 0.);
    p->timer.data = p;
    al_grpc_call_on_cancel(call, pending_cancel_cb, p);
    stream_step(p);
}

int main(int argc, char **argv)
{
    static const struct al_grpc_method_impl impls[] = {{"Echo", echo_cb}, {"Stream", stream_cb}};
    struct cfg cfg = {0};
    struct al_service svc;
    int rc;

    rc = al_service_load_config("airlock-testsvc", "test service for the Airlock library", &cfg, 0,
                                NULL, 0, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    rc = al_service_init(&svc, "testsvc", &cfg.common);
    if (rc == 0)
        rc = al_grpc_server_add_service(svc.grpc, &airlock__test__v1__test_service__descriptor,
                                        impls, 2, &svc);
    if (rc == 0)
        rc = al_service_run(&svc);
    al_service_cleanup(&svc);
    al_service_free_config(&cfg, 0, NULL, 0);
    return rc < 0 ? 1 : 0;
}
