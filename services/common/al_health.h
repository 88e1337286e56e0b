/*
 * al_health: grpc.health.v1.Health (Check, Watch, List) on a gRPC server.
 *
 * Keeps a serving status per service name ("" is the whole server). Watch
 * streams send the current status at once and every change after it.
 * al_health_shutdown() marks everything NOT_SERVING and ends every Watch
 * stream, so a draining server is not held open by watchers.
 *
 * Lifecycle: al_health_new() (registers the service) -> al_health_set()... ->
 * al_health_shutdown() -> al_health_free() after the server is freed.
 */
#ifndef AL_HEALTH_H
#define AL_HEALTH_H

struct al_grpc_server;
struct al_health;

enum al_health_status {
    AL_HEALTH_UNKNOWN = 0,
    AL_HEALTH_SERVING = 1,
    AL_HEALTH_NOT_SERVING = 2,
    AL_HEALTH_SERVICE_UNKNOWN = 3
};

/* Registers grpc.health.v1.Health on srv (borrowed; must outlive h) with ""
 * SERVING. Returns 0 or AL_ERR_NOMEM / AL_ERR_INVAL. */
int al_health_new(struct al_grpc_server *srv, struct al_health **out);

/* Sets a service's status (name copied) and notifies its watchers.
 * Returns 0 or AL_ERR_NOMEM. */
int al_health_set(struct al_health *h, const char *service, int status);

/* Status of a service, or AL_HEALTH_SERVICE_UNKNOWN. */
int al_health_get(const struct al_health *h, const char *service);

/* Everything NOT_SERVING; every Watch ends with UNAVAILABLE. */
void al_health_shutdown(struct al_health *h);

void al_health_free(struct al_health *h);

#endif
