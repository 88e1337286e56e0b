/*
 * relay_status: the airlock.v1.TunnelStatus gRPC service of the relay
 * (GetStatus, for `airlockctl tunnel status`). Callers need an admin
 * identity (spiffe://airlock/admin/<name>); everyone else gets
 * PERMISSION_DENIED. A tunnel filter naming no configured tunnel gets
 * NOT_FOUND.
 */
#ifndef RL_STATUS_H
#define RL_STATUS_H

struct al_grpc_server;
struct rl_tunnels;

/* Registers TunnelStatus on g (before al_grpc_server_start). t is borrowed
 * and must outlive g's calls. Returns 0 or what al_grpc_server_add_service
 * returns (AL_ERR_INVAL, AL_ERR_NOMEM). */
int rl_status_register(struct al_grpc_server *g, struct rl_tunnels *t);

#endif
