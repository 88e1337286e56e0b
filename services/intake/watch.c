/*
 * watch: JobService.Watch streams. A watcher replays the job's stored events
 * after its after_seq, then follows: lifecycle.c touches the job's watchers
 * whenever it appends an event, and after the group commit in_watch_pump()
 * sends what is new, so a watcher only ever sees durable events, in order,
 * without gaps or duplicates. Output is read from the store in batches and
 * stops while the call's buffer is above HIGH_WATER (back-pressure through
 * al_grpc_call_on_writable). The stream ends OK right after the terminal
 * state change has been sent.
 *
 * A watcher lives from in_watch_start() until its call ends: finished by us
 * (terminal state, error, drain) or cancelled by the client.
 */
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "al_log.h"
#include "al_metrics.h"
#include "insvc.h"

#define HIGH_WATER (256 * 1024)
#define LOW_WATER  (64 * 1024)
#define BATCH      32

static void unlink_watch(struct in_svc *s, struct in_watch *w)
{
    struct in_watch *head = in_map_get(s->watch_by_job, w->job_id), **pp;

    for (pp = &head; *pp; pp = &(*pp)->next_job)
        if (*pp == w) {
            *pp = w->next_job;
            break;
        }
    if (head)
        in_map_put(s->watch_by_job, w->job_id, head);
    else
        in_map_del(s->watch_by_job, w->job_id);
    if (w->queued) {
        for (pp = &s->pump_head; *pp; pp = &(*pp)->next_pump)
            if (*pp == w) {
                *pp = w->next_pump;
                break;
            }
    }
    if (w->prev_all)
        w->prev_all->next_all = w->next_all;
    else
        s->watch_all = w->next_all;
    if (w->next_all)
        w->next_all->prev_all = w->prev_all;
    al_metric_add(s->m_watchers, -1);
}

/* Ends the watcher's call and frees it. */
static void watch_end(struct in_watch *w, int status, int reason, const char *message)
{
    struct in_svc *s = w->s;
    unlink_watch(s, w);
    if (status == AL_GRPC_OK)
        al_grpc_call_finish(w->call, AL_GRPC_OK, NULL);
    else
        in_finish_error(w->call, status, reason, NULL, message, 0);
    free(w);
}

static void watch_cancel_cb(struct al_grpc_call *call, void *user)
{
    struct in_watch *w = user;
    (void)call;
    if (w->busy) {
        w->dead = 1; /* pump_one() is on the stack: it ends the watcher */
        return;
    }
    watch_end(w, AL_GRPC_CANCELLED, IN_REASON(UNSPECIFIED), "cancelled");
}

static void enqueue(struct in_svc *s, struct in_watch *w)
{
    if (w->queued || w->waiting_writable)
        return;
    w->queued = 1;
    w->next_pump = s->pump_head;
    s->pump_head = w;
}

static void writable_cb(struct al_grpc_call *call, void *user)
{
    struct in_watch *w = user;
    (void)call;
    w->waiting_writable = 0;
    enqueue(w->s, w);
}

int in_watch_start(struct in_svc *s, struct al_grpc_call *call, const struct in_job *j,
                   int64_t after_seq)
{
    struct in_watch *w;

    if (j->events_purged && after_seq < j->last_seq) {
        in_error(s, call, AL_GRPC_OUT_OF_RANGE, IN_REASON(EVENTS_EXPIRED), "after_seq",
                 "the events of this job are no longer retained");
        return -1;
    }
    if (in_sm_terminal(j->state) && after_seq > j->last_seq) {
        in_error(s, call, AL_GRPC_OUT_OF_RANGE, IN_REASON(EVENTS_EXPIRED), "after_seq",
                 "after_seq is beyond the last event (%lld) of this finished job",
                 (long long)j->last_seq);
        return -1;
    }
    w = calloc(1, sizeof(*w));
    if (!w) {
        in_finish_error(call, AL_GRPC_RESOURCE_EXHAUSTED, IN_REASON(INTERNAL), NULL,
                        "out of memory", 0);
        return -1;
    }
    w->s = s;
    w->call = call;
    memcpy(w->job_id, j->id, sizeof(w->job_id));
    w->sent_seq = after_seq;
    w->next_job = in_map_get(s->watch_by_job, j->id);
    if (in_map_put(s->watch_by_job, j->id, w) < 0) {
        free(w);
        in_finish_error(call, AL_GRPC_RESOURCE_EXHAUSTED, IN_REASON(INTERNAL), NULL,
                        "out of memory", 0);
        return -1;
    }
    w->next_all = s->watch_all;
    if (s->watch_all)
        s->watch_all->prev_all = w;
    s->watch_all = w;
    al_metric_add(s->m_watchers, 1);
    al_grpc_call_on_cancel(call, watch_cancel_cb, w);
    enqueue(s, w); /* replay after the current commit */
    return 0;
}

void in_watch_touch(struct in_svc *s, const char *job_id)
{
    for (struct in_watch *w = in_map_get(s->watch_by_job, job_id); w; w = w->next_job)
        enqueue(s, w);
}

struct send_ctx {
    struct in_watch *w;
    int status; /* nonzero: end the watcher with it */
    int reason;
    const char *message;
};

static int send_event(void *user, int64_t seq, const uint8_t *body, size_t len)
{
    struct send_ctx *x = user;
    Airlock__V1__JobEvent *ev;
    int rc;

    if (seq != x->w->sent_seq + 1) {
        x->status = AL_GRPC_OUT_OF_RANGE;
        x->reason = IN_REASON(EVENTS_EXPIRED);
        x->message = "some of the requested events are no longer retained";
        return 1;
    }
    ev = airlock__v1__job_event__unpack(NULL, len, body);
    if (!ev) {
        x->status = AL_GRPC_INTERNAL;
        x->reason = IN_REASON(INTERNAL);
        x->message = "a stored event does not parse";
        return 1;
    }
    rc = al_grpc_call_send(x->w->call, &ev->base);
    airlock__v1__job_event__free_unpacked(ev, NULL);
    if (rc < 0) {
        x->status = rc == AL_ERR_CLOSED ? AL_GRPC_CANCELLED : AL_GRPC_INTERNAL;
        x->reason = IN_REASON(INTERNAL);
        x->message = al_strerror(rc);
        return 1;
    }
    x->w->sent_seq = seq;
    return 0;
}

/* After everything stored was sent: end the stream if the job is over. */
static void check_end(struct in_watch *w)
{
    struct in_job j;
    int rc = in_store_job_get(w->s->store, w->job_id, NULL, &j);

    if (rc == AL_ERR_NOTFOUND) {
        watch_end(w, AL_GRPC_NOT_FOUND, IN_REASON(NOT_FOUND), "the job no longer exists");
    } else if (rc < 0) {
        watch_end(w, AL_GRPC_UNAVAILABLE, IN_REASON(INTERNAL), "the job store cannot be read");
    } else if (w->sent_seq < j.last_seq && j.events_purged) {
        watch_end(w, AL_GRPC_OUT_OF_RANGE, IN_REASON(EVENTS_EXPIRED),
                  "the events of this job are no longer retained");
    } else if (in_sm_terminal(j.state) && w->sent_seq >= j.last_seq) {
        watch_end(w, AL_GRPC_OK, 0, NULL);
    }
}

/* Sends what it can; may end and free w. */
static void pump_one(struct in_watch *w)
{
    struct send_ctx x = {w, 0, 0, NULL};

    w->busy = 1;
    while (!w->dead) {
        if (al_grpc_call_pending(w->call) > HIGH_WATER) {
            w->waiting_writable = 1;
            al_grpc_call_on_writable(w->call, LOW_WATER, writable_cb, w);
            break;
        }
        int n = in_store_events(w->s->store, w->job_id, w->sent_seq, BATCH, send_event, &x);
        if (w->dead)
            break;
        w->busy = 0;
        if (x.status) {
            watch_end(w, x.status, x.reason, x.message);
            return;
        }
        if (n < 0) {
            watch_end(w, AL_GRPC_UNAVAILABLE, IN_REASON(INTERNAL), "the job store cannot be read");
            return;
        }
        if (n < BATCH) {
            check_end(w);
            return;
        }
        w->busy = 1;
    }
    w->busy = 0;
    if (w->dead)
        watch_end(w, AL_GRPC_CANCELLED, IN_REASON(UNSPECIFIED), "cancelled");
}

void in_watch_pump(struct in_svc *s)
{
    if (in_store_in_tx(s->store))
        return; /* only committed events leave */
    while (s->pump_head) {
        struct in_watch *w = s->pump_head;
        s->pump_head = w->next_pump;
        w->queued = 0;
        w->next_pump = NULL;
        pump_one(w);
    }
}

void in_watch_end_all(struct in_svc *s, int status, int reason, const char *message)
{
    while (s->watch_all)
        watch_end(s->watch_all, status, reason, message);
}
