/*
 * relay_status: TunnelStatus.GetStatus on the relay's gRPC port; see
 * relay_status.h. Side-effect free: the snapshot is built in the call's
 * arena by rl_tunnels_status() and answered at once.
 */
#include <string.h>

#include "airlock/v1/tunnel.pb-c.h"
#include "al_err.h"
#include "al_grpc.h"
#include "al_log.h"
#include "al_pki.h"
#include "relay_status.h"
#include "relay_tunnel.h"

static int caller_is_admin(struct al_grpc_call *call)
{
    char role[AL_PKI_ROLE_MAX];
    const char *id = al_grpc_call_peer_id(call);

    if (!id[0] || al_pki_parse_spiffe(id, role, sizeof(role), NULL, 0) < 0)
        return 0;
    return strcmp(role, "admin") == 0;
}

static void get_status_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    const Airlock__V1__GetTunnelStatusRequest *r = (const void *)req;
    Airlock__V1__GetTunnelStatusResponse out;
    struct rl_tunnels *t = user;
    int rc;

    if (!caller_is_admin(call)) {
        const char *id = al_grpc_call_peer_id(call);
        AL_LOG_WARN("tunnel.status_denied", "caller=%s conn=%llu", id[0] ? id : "-",
                    (unsigned long long)al_grpc_call_conn_id(call));
        al_grpc_call_finish(call, AL_GRPC_PERMISSION_DENIED,
                            "TunnelStatus needs an admin identity (spiffe://airlock/admin/...)");
        return;
    }
    rc = rl_tunnels_status(t, r->tunnel, al_grpc_call_arena(call), &out);
    if (rc == AL_ERR_NOTFOUND) {
        al_grpc_call_finish(call, AL_GRPC_NOT_FOUND, "no such tunnel is configured");
        return;
    }
    if (rc < 0) {
        al_grpc_call_finish(call, AL_GRPC_RESOURCE_EXHAUSTED, "status snapshot too large");
        return;
    }
    al_grpc_call_reply(call, &out.base);
}

int rl_status_register(struct al_grpc_server *g, struct rl_tunnels *t)
{
    static const struct al_grpc_method_impl impls[] = {{"GetStatus", get_status_cb, 0}};

    return al_grpc_server_add_service(g, &airlock__v1__tunnel_status__descriptor, impls, 1, t);
}
