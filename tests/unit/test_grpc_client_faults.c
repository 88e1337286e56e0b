/*
 * Unit tests of al_grpc_client's failure paths that other tests cannot reach:
 *   - nghttp2_submit_request() failing on a ready connection (stream ids used
 *     up after 2^30 requests, or out of memory), interposed here: the call
 *     returns AL_ERR_CLOSED with no callback and no call object, and the
 *     channel dials a new connection for the next call (it once ran on_done
 *     inside the call, freed it, and still handed it out);
 *   - a call cancelled from inside its own on_done when it has no stream
 *     (connection refused): freed once.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <CUnit/Basic.h>
#include <nghttp2/nghttp2.h>

#include "airlock/test/v1/test.pb-c.h"
#include "al_err.h"
#include "al_grpc.h"
#include "al_grpc_client.h"

static struct ev_loop *loop;
static int fail_submit;

int32_t nghttp2_submit_request(nghttp2_session *session, const nghttp2_priority_spec *pri_spec,
                               const nghttp2_nv *nva, size_t nvlen,
                               const nghttp2_data_provider *data_prd, void *stream_user_data)
{
    static int32_t (*real)(nghttp2_session *, const nghttp2_priority_spec *, const nghttp2_nv *,
                           size_t, const nghttp2_data_provider *, void *);
    if (fail_submit)
        return NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE;
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "nghttp2_submit_request");
    return real(session, pri_spec, nva, nvlen, data_prd, stream_user_data);
}

static void echo_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    Airlock__Test__V1__EchoReply rep = AIRLOCK__TEST__V1__ECHO_REPLY__INIT;
    (void)req;
    (void)user;
    rep.message = (char *)"ok";
    al_grpc_call_reply(call, &rep.base);
}

/* what the callers do: clear their pointer in on_done */
struct owner {
    struct al_grpc_ccall *call;
    int done, status;
};

static void on_done(struct al_grpc_ccall *cc, int status, const char *msg, void *user)
{
    struct owner *o = user;
    (void)cc;
    (void)msg;
    o->call = NULL;
    o->done = 1;
    o->status = status;
}

static const struct al_grpc_ccall_cbs cbs = {NULL, on_done};

static void test_submit_fail(void)
{
    static const struct al_grpc_method_impl impls[] = {{"Echo", echo_cb, 0}};
    struct al_grpc_server_opts so = {.listen = "127.0.0.1:0", .insecure = 1};
    struct al_grpc_server *srv = NULL;
    struct al_grpc_channel *ch = NULL;
    Airlock__Test__V1__EchoRequest rq = AIRLOCK__TEST__V1__ECHO_REQUEST__INIT;
    struct owner first = {0}, second = {0}, third = {0};
    char target[64];
    int rc;

    loop = ev_loop_new(EVFLAG_AUTO);
    CU_ASSERT_FATAL(al_grpc_server_new(loop, &so, &srv) == 0);
    CU_ASSERT_FATAL(al_grpc_server_add_service(srv, &airlock__test__v1__test_service__descriptor,
                                               impls, 1, NULL) == 0);
    CU_ASSERT_FATAL(al_grpc_server_start(srv) == 0);
    snprintf(target, sizeof(target), "127.0.0.1:%d", al_grpc_server_port(srv));
    struct al_grpc_channel_opts co = {.target = target};
    CU_ASSERT_FATAL(al_grpc_channel_new(loop, &co, &ch) == 0);

    rq.message = (char *)"hi";
    CU_ASSERT_FATAL(al_grpc_channel_call(ch, "/airlock.test.v1.TestService/Echo", &rq.base,
                                         &airlock__test__v1__echo_reply__descriptor, NULL, 0, 5,
                                         &cbs, &first, &first.call) == 0);
    for (int i = 0; i < 2000 && !first.done; i++)
        ev_run(loop, EVRUN_ONCE);
    CU_ASSERT_FATAL(first.done && first.status == AL_GRPC_OK); /* the connection is ready */

    fail_submit = 1;
    rc = al_grpc_channel_call(ch, "/airlock.test.v1.TestService/Echo", &rq.base,
                              &airlock__test__v1__echo_reply__descriptor, NULL, 0, 5, &cbs, &second,
                              &second.call);
    fail_submit = 0;
    CU_ASSERT(rc == AL_ERR_CLOSED);
    CU_ASSERT(second.done == 0);    /* no callback for a call that was refused */
    CU_ASSERT(second.call == NULL); /* and no call object handed out */

    /* out of stream ids, that connection was closed: the next call dials anew */
    CU_ASSERT_FATAL(al_grpc_channel_call(ch, "/airlock.test.v1.TestService/Echo", &rq.base,
                                         &airlock__test__v1__echo_reply__descriptor, NULL, 0, 5,
                                         &cbs, &third, &third.call) == 0);
    for (int i = 0; i < 2000 && !third.done; i++)
        ev_run(loop, EVRUN_ONCE);
    CU_ASSERT(third.done && third.status == AL_GRPC_OK);

    al_grpc_channel_free(ch);
    al_grpc_server_free(srv);
    ev_run(loop, EVRUN_NOWAIT);
    ev_loop_destroy(loop);
}

static int cancels;

static void cancel_in_done(struct al_grpc_ccall *cc, int status, const char *msg, void *user)
{
    struct owner *o = user;
    (void)msg;
    o->done++;
    o->status = status;
    cancels++;
    al_grpc_ccall_cancel(cc); /* allowed: the call is freed once, by the client */
}

static void test_cancel_inside_on_done(void)
{
    static const struct al_grpc_ccall_cbs ccbs = {NULL, cancel_in_done};
    Airlock__Test__V1__EchoRequest rq = AIRLOCK__TEST__V1__ECHO_REQUEST__INIT;
    struct al_grpc_channel *ch = NULL;
    struct owner o = {0};
    char target[64];
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);

    /* a loopback port nobody listens on: bound, then closed */
    CU_ASSERT_FATAL(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
                    getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    port = ntohs(sa.sin_port);
    close(fd);
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    loop = ev_loop_new(EVFLAG_AUTO);
    struct al_grpc_channel_opts co = {.target = target};
    CU_ASSERT_FATAL(al_grpc_channel_new(loop, &co, &ch) == 0);
    rq.message = (char *)"hi";
    CU_ASSERT_FATAL(al_grpc_channel_call(ch, "/airlock.test.v1.TestService/Echo", &rq.base,
                                         &airlock__test__v1__echo_reply__descriptor, NULL, 0, 5,
                                         &ccbs, &o, &o.call) == 0);
    for (int i = 0; i < 2000 && !o.done; i++)
        ev_run(loop, EVRUN_ONCE);
    CU_ASSERT(o.done == 1);
    CU_ASSERT(o.status == AL_GRPC_UNAVAILABLE);
    CU_ASSERT(cancels == 1);
    al_grpc_channel_free(ch);
    ev_run(loop, EVRUN_NOWAIT);
    ev_loop_destroy(loop);
}

int main(void)
{
    CU_pSuite s;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("grpc_client_faults", NULL, NULL);
    CU_add_test(s, "submit refused on a ready connection", test_submit_fail);
    CU_add_test(s, "cancel inside on_done without a stream", test_cancel_inside_on_done);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failures = (int)CU_get_number_of_failures();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
