/*
 * ctl: the control socket between airlock-executor and airlock-egress
 * (proto/airlock/internal/egress.proto): a SOCK_SEQPACKET socket, one
 * EgressMsg per datagram, descriptors as SCM_RIGHTS of the datagram that
 * names them.
 *
 * Input. Each datagram is received whole into one buffer of
 * EG_CTL_MAX_MSG + 1 bytes (a longer one arrives truncated, MSG_TRUNC, and
 * is dropped), unpacked with the wiping protobuf-c allocator (a JobOpen
 * carries credential values), and the buffer is wiped. A datagram that is
 * oversized, not an EgressMsg, or whose descriptors were cut short
 * (MSG_CTRUNC) is logged and dropped, its descriptors closed: never fatal.
 * End of file (the executor closed its end or died) calls on_eof.
 *
 * Output. Messages are packed and queued; a queued message leaves as one
 * datagram when the socket takes it (EV_WRITE otherwise), so the proxy goes
 * on working while the executor is slow to read. Replies (JobOpened,
 * JobClosed) are always queued. Use records are bounded: at most max_uses
 * records queued or reserved at once. A request or tunnel reserves its
 * record before it starts (eg_ctl_reserve: refused when full, and the
 * caller then refuses the request, so nothing runs unrecorded) and sends it
 * when it ends; a denial that finds no room is counted as dropped.
 *
 * Lifecycle: eg_ctl_new() -> ... -> eg_ctl_free() (queued output is
 * dropped; the socket is closed).
 */
#ifndef EG_CTL_H
#define EG_CTL_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "airlock/internal/egress.pb-c.h"

#define EG_CTL_MAX_MSG  (1024 * 1024) /* the protocol's datagram limit */
#define EG_CTL_MAX_FDS  8             /* descriptors accepted with one datagram */
#define EG_CTL_MAX_USES 4096          /* default bound of queued Use records */

struct eg_ctl;

struct eg_ctl_cbs {
    /* A well-formed message; m is freed (wiped) after the call. fds[0..nfds)
     * arrived with it and now belong to the callee. */
    void (*on_msg)(struct eg_ctl *c, const Airlock__Internal__EgressMsg *m, int *fds, size_t nfds,
                   void *user);
    /* The executor's end is gone (EOF, or a send failing with EPIPE). */
    void (*on_eof)(struct eg_ctl *c, void *user);
};

enum eg_ctl_kind {
    EG_CTL_REPLY,    /* JobOpened, JobClosed: always queued */
    EG_CTL_USE,      /* a Use without reservation: dropped (counted) when full */
    EG_CTL_RESERVED, /* a Use for which eg_ctl_reserve() succeeded */
};

/* Takes fd (made non-blocking and close-on-exec). max_uses 0 =
 * EG_CTL_MAX_USES. Returns 0 or AL_ERR_NOMEM (fd closed). */
int eg_ctl_new(struct ev_loop *loop, int fd, size_t max_uses, const struct eg_ctl_cbs *cbs,
               void *user, struct eg_ctl **out);
void eg_ctl_free(struct eg_ctl *c);

/* Room for one future Use record. Returns 0 or AL_ERR_TOOBIG. */
int eg_ctl_reserve(struct eg_ctl *c);
/* Gives back a reservation that will not be used. */
void eg_ctl_release(struct eg_ctl *c);

/* Packs and queues m (borrowed). Returns 0, AL_ERR_TOOBIG (EG_CTL_USE with
 * no room: counted as dropped), AL_ERR_CLOSED (the executor is gone) or
 * AL_ERR_NOMEM. An EG_CTL_RESERVED send consumes the reservation whatever
 * it returns. */
int eg_ctl_send(struct eg_ctl *c, const Airlock__Internal__EgressMsg *m, enum eg_ctl_kind kind);

/* Use records dropped so far, messages waiting in the queue. */
uint64_t eg_ctl_dropped(const struct eg_ctl *c);
size_t eg_ctl_queued(const struct eg_ctl *c);

#endif
