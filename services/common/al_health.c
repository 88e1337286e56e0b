/*
 * al_health: the standard gRPC health service; see al_health.h.
 * Watchers are the open Watch calls, each with the service it follows.
 */
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"

#include "al_err.h"
#include "al_grpc.h"
#include "al_health.h"

#define MAX_SERVICES 64

struct svc {
    char *name;
    int status;
};

struct watcher {
    struct al_grpc_call *call;
    char *service;
    int last_sent;
    struct watcher *next;
};

struct al_health {
    struct svc svcs[MAX_SERVICES];
    size_t nsvcs;
    struct watcher *watchers;
    int shut;
};

static struct svc *find(const struct al_health *h, const char *name)
{
    for (size_t i = 0; i < h->nsvcs; i++)
        if (strcmp(h->svcs[i].name, name) == 0)
            return (struct svc *)&h->svcs[i];
    return NULL;
}

int al_health_get(const struct al_health *h, const char *service)
{
    const struct svc *s = find(h, service);
    return s ? s->status : AL_HEALTH_SERVICE_UNKNOWN;
}

static void send_status(struct watcher *w, int status)
{
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    if (w->last_sent == status)
        return;
    w->last_sent = status;
    r.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    al_grpc_call_send(w->call, &r.base);
}

static void unlink_watcher(struct al_health *h, struct watcher *w)
{
    for (struct watcher **pp = &h->watchers; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    free(w->service);
    free(w);
}

int al_health_set(struct al_health *h, const char *service, int status)
{
    struct svc *s = find(h, service);
    if (!s) {
        if (h->nsvcs >= MAX_SERVICES)
            return AL_ERR_NOMEM;
        s = &h->svcs[h->nsvcs];
        s->name = strdup(service);
        if (!s->name)
            return AL_ERR_NOMEM;
        h->nsvcs++;
    }
    s->status = status;
    for (struct watcher *w = h->watchers; w; w = w->next)
        if (strcmp(w->service, service) == 0)
            send_status(w, status);
    return 0;
}

static void check_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    const Grpc__Health__V1__HealthCheckRequest *r = (const void *)req;
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    const struct svc *s = find(user, r->service ? r->service : "");

    if (!s) {
        al_grpc_call_finish(call, AL_GRPC_NOT_FOUND, "unknown service");
        return;
    }
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)s->status;
    al_grpc_call_reply(call, &resp.base);
}

static void watch_cancel(struct al_grpc_call *call, void *user)
{
    struct watcher *w = al_grpc_call_user(call);
    unlink_watcher(user, w);
    al_grpc_call_finish(call, AL_GRPC_CANCELLED, NULL);
}

static void watch_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    const Grpc__Health__V1__HealthCheckRequest *r = (const void *)req;
    struct al_health *h = user;
    struct watcher *w;

    if (h->shut) {
        al_grpc_call_finish(call, AL_GRPC_UNAVAILABLE, "server shutting down");
        return;
    }
    w = calloc(1, sizeof(*w));
    if (!w || !(w->service = strdup(r->service ? r->service : ""))) {
        free(w);
        al_grpc_call_finish(call, AL_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    w->call = call;
    w->last_sent = -1;
    w->next = h->watchers;
    h->watchers = w;
    al_grpc_call_set_user(call, w);
    al_grpc_call_on_cancel(call, watch_cancel, h);
    send_status(w, al_health_get(h, w->service));
}

static void list_cb(struct al_grpc_call *call, const ProtobufCMessage *req, void *user)
{
    struct al_health *h = user;
    Grpc__Health__V1__HealthListResponse resp = GRPC__HEALTH__V1__HEALTH_LIST_RESPONSE__INIT;
    Grpc__Health__V1__HealthListResponse__StatusesEntry ent[MAX_SERVICES], *pent[MAX_SERVICES];
    Grpc__Health__V1__HealthCheckResponse st[MAX_SERVICES];
    (void)req;

    for (size_t i = 0; i < h->nsvcs; i++) {
        grpc__health__v1__health_list_response__statuses_entry__init(&ent[i]);
        grpc__health__v1__health_check_response__init(&st[i]);
        st[i].status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)h->svcs[i].status;
        ent[i].key = h->svcs[i].name;
        ent[i].value = &st[i];
        pent[i] = &ent[i];
    }
    resp.n_statuses = h->nsvcs;
    resp.statuses = pent;
    al_grpc_call_reply(call, &resp.base);
}

int al_health_new(struct al_grpc_server *srv, struct al_health **out)
{
    static const struct al_grpc_method_impl impls[] = {
        {"Check", check_cb}, {"Watch", watch_cb}, {"List", list_cb}};
    struct al_health *h = calloc(1, sizeof(*h));
    int rc;

    *out = NULL;
    if (!h)
        return AL_ERR_NOMEM;
    rc = al_health_set(h, "", AL_HEALTH_SERVING);
    if (rc == 0)
        rc = al_grpc_server_add_service(srv, &grpc__health__v1__health__descriptor, impls,
                                        sizeof(impls) / sizeof(impls[0]), h);
    if (rc < 0) {
        al_health_free(h);
        return rc;
    }
    *out = h;
    return 0;
}

void al_health_shutdown(struct al_health *h)
{
    h->shut = 1;
    for (size_t i = 0; i < h->nsvcs; i++)
        al_health_set(h, h->svcs[i].name, AL_HEALTH_NOT_SERVING);
    while (h->watchers) {
        struct watcher *w = h->watchers;
        struct al_grpc_call *call = w->call;
        h->watchers = w->next;
        free(w->service);
        free(w);
        al_grpc_call_finish(call, AL_GRPC_UNAVAILABLE, "server shutting down");
    }
}

void al_health_free(struct al_health *h)
{
    if (!h)
        return;
    while (h->watchers) {
        struct watcher *w = h->watchers;
        h->watchers = w->next;
        al_grpc_call_finish(w->call, AL_GRPC_UNAVAILABLE, "server shutting down");
        free(w->service);
        free(w);
    }
    for (size_t i = 0; i < h->nsvcs; i++)
        free(h->svcs[i].name);
    free(h);
}
