/*
 * egress: the airlock-egress process and its control socket; see egress.h.
 *
 * States of the process:
 *   down      -> start(): socketpair, fork, exec           -> up
 *   up        -> the pidfd says it exited, or the socket
 *                ended (EOF, error): killed, reaped        -> down (restart timer)
 *   down      -> restart timer                              -> start()
 *   any       -> ex_egress_free(): socket closed, the proxy
 *                exits on its own (SIGKILL after a grace)  -> gone
 * Messages still in the socket when the process ends are read first (the
 * last Use records of its jobs are not lost).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "al_edge.h"
#include "al_err.h"
#include "al_log.h"
#include "al_metrics.h"
#include "al_wipe.h"
#include "egress_int.h"
#include "executor.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

#define MSG_MAX       (1 << 20) /* egress.proto: at most 1 MiB per datagram */
#define SNDBUF        (4 << 20)
#define CONTROL_FD    3
#define READ_BURST    256  /* datagrams per loop turn */
#define PAUSE_S       0.02 /* re-check of a full audit queue */
#define STABLE_S      60.0 /* a proxy up this long resets the restart backoff */
#define STOP_GRACE_MS 5000 /* shutdown: wait for the proxy to exit on its own */
#define DRAIN_CLOSE_S 10.0 /* drain: wait this long for JobClosed of ended jobs */
#define MAX_ARGS      (16 + 2 * EX_EGRESS_MAX_RESOLVE)

struct ex_outmsg {
    struct ex_outmsg *next;
    uint8_t *buf;
    size_t len;
    int sensitive; /* buf is locked memory, wiped when freed */
    int fds[2];
    size_t nfds;
};

static void outmsg_free(struct ex_outmsg *o)
{
    if (!o)
        return;
    for (size_t i = 0; i < o->nfds; i++)
        close(o->fds[i]);
    if (o->sensitive)
        al_secure_free(o->buf);
    else
        free(o->buf);
    free(o);
}

/* ---------- the process ---------- */

static void schedule_restart(struct ex_egress *eg);
static void on_pid(struct ev_loop *loop, ev_io *w, int revents);
static void on_read(struct ev_loop *loop, ev_io *w, int revents);
static void read_some(struct ex_egress *eg, int final);
static void on_write(struct ev_loop *loop, ev_io *w, int revents);

/* The binary: egress.binary, or airlock-egress next to our own binary. */
static int find_binary(struct ex_egress *eg, char *why, size_t n)
{
    const char *cfg = eg->ex->cfg.egress_binary;
    char self[PATH_MAX];
    ssize_t len;

    if (cfg && cfg[0]) {
        snprintf(eg->binary, sizeof(eg->binary), "%s", cfg);
    } else {
        len = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (len <= 0) {
            snprintf(why, n, "cannot find our own binary (/proc/self/exe): %s", strerror(errno));
            return -errno;
        }
        self[len] = '\0';
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = '\0';
        if (snprintf(eg->binary, sizeof(eg->binary), "%s/airlock-egress", self) >=
            (int)sizeof(eg->binary)) {
            snprintf(why, n, "the path of our own binary is too long");
            return AL_ERR_TOOBIG;
        }
    }
    if (access(eg->binary, X_OK) < 0) {
        snprintf(why, n, "egress.binary %s: %s", eg->binary, strerror(errno));
        return AL_ERR_CONFIG;
    }
    return 0;
}

/* argv of the proxy; strings in store (size n). Returns argc or < 0. */
static int build_argv(const struct ex_egress *eg, char **argv, char *store, size_t n)
{
    const struct ex_config *c = &eg->ex->cfg;
    const char *level = c->egress_log_level && c->egress_log_level[0] ? c->egress_log_level
                        : c->common.log_level                         ? c->common.log_level
                                                                      : "info";
    size_t off = 0;
    int argc = 0;

#define ARG(...)                                                                                   \
    do {                                                                                           \
        int w_ = snprintf(store + off, n - off, __VA_ARGS__);                                      \
        if (w_ < 0 || (size_t)w_ >= n - off || argc >= MAX_ARGS - 1)                               \
            return AL_ERR_TOOBIG;                                                                  \
        argv[argc++] = store + off;                                                                \
        off += (size_t)w_ + 1;                                                                     \
    } while (0)
    ARG("%s", eg->binary);
    ARG("--control-fd=%d", CONTROL_FD);
    ARG("--uid=%d", c->egress_uid);
    ARG("--gid=%d", c->egress_gid);
    if (c->egress_ca_file && c->egress_ca_file[0])
        ARG("--ca-file=%s", c->egress_ca_file);
    for (size_t i = 0; i < c->egress_resolve.n; i++) {
        ARG("--resolve");
        ARG("%s", c->egress_resolve.v[i]);
    }
    if (c->egress_dns_servers && c->egress_dns_servers[0])
        ARG("--dns-servers=%s", c->egress_dns_servers);
    ARG("--connect-timeout-ms=%lld", c->egress_connect_timeout_ms);
    ARG("--log-level=%s", level);
#undef ARG
    argv[argc] = NULL;
    return argc;
}

/* In the child, before exec: only async-signal-safe calls. */
static void child_exec(int fd, char **argv, pid_t parent)
{
    sigset_t all;
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);

    if (devnull >= 0)
        dup2(devnull, 0);
    if (fd == CONTROL_FD) {
        fcntl(fd, F_SETFD, 0);
    } else if (dup2(fd, CONTROL_FD) < 0) {
        _exit(127);
    }
    syscall(SYS_close_range, CONTROL_FD + 1, ~0U, 0);
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    execv(argv[0], argv);
    {
        static const char msg[] = "airlock-executor: cannot execute the egress proxy\n";
        ssize_t w = write(2, msg, sizeof(msg) - 1);
        (void)w;
    }
    _exit(127);
}

static int spawn(struct ex_egress *eg)
{
    struct ev_loop *loop = eg->ex->svc.loop;
    char *argv[MAX_ARGS], store[32768];
    int sv[2], size = SNDBUF, argc;
    pid_t pid, parent = getpid();

    argc = build_argv(eg, argv, store, sizeof(store));
    if (argc < 0)
        return argc;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    if (setsockopt(sv[0], SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) < 0)
        (void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    if (setsockopt(sv[1], SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) < 0)
        (void)setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        return -e;
    }
    if (pid == 0)
        child_exec(sv[1], argv, parent);
    close(sv[1]);
    eg->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (eg->pidfd < 0) {
        int e = errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(sv[0]);
        return -e;
    }
    fcntl(eg->pidfd, F_SETFD, FD_CLOEXEC);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    eg->pid = pid;
    eg->fd = sv[0];
    eg->gen++;
    eg->up = 1;
    eg->started_at = ev_now(loop);
    ev_io_init(&eg->pid_w, on_pid, eg->pidfd, EV_READ);
    eg->pid_w.data = eg;
    ev_io_start(loop, &eg->pid_w);
    ev_io_init(&eg->rd_w, on_read, eg->fd, EV_READ);
    eg->rd_w.data = eg;
    ev_io_start(loop, &eg->rd_w);
    ev_io_init(&eg->wr_w, on_write, eg->fd, EV_WRITE);
    eg->wr_w.data = eg;
    al_metric_set(eg->m_up, 1);
    AL_LOG_INFO("executor.egress_start", "pid=%d generation=%llu binary=%s uid=%d gid=%d", (int)pid,
                (unsigned long long)eg->gen, eg->binary, eg->ex->cfg.egress_uid,
                eg->ex->cfg.egress_gid);
    return 0;
}

/* The control socket is gone (or the process): close it, drop what was
 * queued, tell the jobs. */
static void socket_down(struct ex_egress *eg)
{
    struct ev_loop *loop = eg->ex->svc.loop;

    if (eg->fd < 0)
        return;
    ev_io_stop(loop, &eg->rd_w);
    ev_io_stop(loop, &eg->wr_w);
    ev_timer_stop(loop, &eg->pause_w);
    close(eg->fd);
    eg->fd = -1;
    while (eg->q_head) {
        struct ex_outmsg *o = eg->q_head;
        eg->q_head = o->next;
        outmsg_free(o);
    }
    eg->q_tail = &eg->q_head;
    eg->q_len = 0;
    eg->up = 0;
    al_metric_set(eg->m_up, 0);
    if (eg->pidfd >= 0)
        syscall(SYS_pidfd_send_signal, eg->pidfd, SIGKILL, NULL, 0);
    ex_ejob_proxy_down(eg->ex);
}

static void reap(struct ex_egress *eg)
{
    struct ev_loop *loop = eg->ex->svc.loop;
    int status = 0;

    if (eg->pidfd < 0)
        return;
    ev_io_stop(loop, &eg->pid_w);
    pid_t w;
    do
        w = waitpid(eg->pid, &status, 0);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        AL_LOG_ERROR("executor.egress_exit", "pid=%d reason=\"waitpid: %s\"", (int)eg->pid,
                     strerror(errno));
    if (w == eg->pid) {
        if (WIFSIGNALED(status))
            AL_LOG_ERROR("executor.egress_exit", "pid=%d signal=%d generation=%llu", (int)eg->pid,
                         WTERMSIG(status), (unsigned long long)eg->gen);
        else if (!eg->stopping || WEXITSTATUS(status) != 0)
            AL_LOG_ERROR("executor.egress_exit", "pid=%d status=%d generation=%llu", (int)eg->pid,
                         WEXITSTATUS(status), (unsigned long long)eg->gen);
    }
    close(eg->pidfd);
    eg->pidfd = -1;
    eg->pid = 0;
}

static void on_pid(struct ev_loop *loop, ev_io *w, int revents)
{
    struct ex_egress *eg = w->data;

    (void)loop;
    (void)revents;
    /* its last messages first: the final Use records of its jobs */
    if (eg->fd >= 0)
        read_some(eg, 1);
    socket_down(eg);
    reap(eg);
    if (!eg->stopping)
        schedule_restart(eg);
}

static void restart_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ex_egress *eg = w->data;
    int rc;

    (void)loop;
    (void)revents;
    if (eg->stopping || eg->pidfd >= 0)
        return;
    rc = spawn(eg);
    if (rc < 0) {
        AL_LOG_ERROR("executor.egress_start", "reason=\"%s\"", al_strerror(rc));
        schedule_restart(eg);
        return;
    }
    al_metric_add(eg->m_restarts, 1);
    ex_ejob_proxy_up(eg->ex);
}

static void schedule_restart(struct ex_egress *eg)
{
    struct ev_loop *loop = eg->ex->svc.loop;
    double min = (double)eg->ex->cfg.egress_restart_min_ms / 1000.0;
    double max = (double)eg->ex->cfg.egress_restart_max_ms / 1000.0;

    if (ev_now(loop) - eg->started_at >= STABLE_S)
        eg->backoff_s = 0;
    eg->backoff_s = eg->backoff_s < min ? min : eg->backoff_s * 2;
    if (eg->backoff_s > max)
        eg->backoff_s = max;
    double d = eg->backoff_s * (0.5 + 0.5 * ((double)random() / (double)RAND_MAX));
    AL_LOG_WARN("executor.egress_restart", "in_ms=%.0f", d * 1000.0);
    ev_timer_stop(loop, &eg->restart_w);
    ev_timer_set(&eg->restart_w, d, 0.);
    ev_timer_start(loop, &eg->restart_w);
}

/* ---------- sending ---------- */

/* Sends o now. Returns 1 sent, 0 would block, < 0 the socket failed. */
static int send_one(struct ex_egress *eg, struct ex_outmsg *o)
{
    struct iovec iov = {o->buf, o->len};
    union {
        char buf[CMSG_SPACE(2 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t w;

    if (o->nfds) {
        memset(&u, 0, sizeof(u));
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE(o->nfds * sizeof(int));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(o->nfds * sizeof(int));
        memcpy(CMSG_DATA(cm), o->fds, o->nfds * sizeof(int));
    }
    do
        w = sendmsg(eg->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (w < 0 && errno == EINTR);
    if (w >= 0)
        return 1;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
        return 0;
    return -errno;
}

static void flush_queue(struct ex_egress *eg)
{
    struct ev_loop *loop = eg->ex->svc.loop;

    while (eg->q_head) {
        int rc = send_one(eg, eg->q_head);
        if (rc == 0) {
            ev_io_start(loop, &eg->wr_w);
            return;
        }
        if (rc < 0) {
            AL_LOG_ERROR("executor.egress_send", "reason=\"%s\"", strerror(-rc));
            socket_down(eg);
            return;
        }
        struct ex_outmsg *o = eg->q_head;
        eg->q_head = o->next;
        if (!eg->q_head)
            eg->q_tail = &eg->q_head;
        eg->q_len--;
        outmsg_free(o);
    }
    ev_io_stop(loop, &eg->wr_w);
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    flush_queue(w->data);
}

int ex_egress_send(struct ex_egress *eg, const Airlock__Internal__EgressMsg *m, const int *fds,
                   size_t nfds, int sensitive)
{
    size_t len = airlock__internal__egress_msg__get_packed_size(m);
    struct ex_outmsg *o;

    if (!eg || !eg->up || eg->fd < 0 || len > MSG_MAX || nfds > 2) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return !eg || !eg->up || eg->fd < 0 ? AL_ERR_STATE : AL_ERR_TOOBIG;
    }
    o = calloc(1, sizeof(*o));
    if (o)
        o->buf = sensitive ? al_secure_alloc(len ? len : 1) : malloc(len ? len : 1);
    if (!o || !o->buf) {
        free(o);
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return AL_ERR_NOMEM;
    }
    o->sensitive = sensitive;
    o->len = airlock__internal__egress_msg__pack(m, o->buf);
    if (nfds)
        memcpy(o->fds, fds, nfds * sizeof(int));
    o->nfds = nfds;
    *eg->q_tail = o;
    eg->q_tail = &o->next;
    eg->q_len++;
    flush_queue(eg);
    return eg->up ? 0 : AL_ERR_STATE; /* the socket failed under this send */
}

/* ---------- receiving ---------- */

/* Room in the audit queue for the record a Use would become. */
static int audit_room(const struct ex_egress *eg)
{
    const struct al_edge_audit *a = al_edge_audit_state(eg->edge);
    return al_edge_audit_queued(a) + al_edge_audit_reserved(a) <
           (size_t)eg->ex->cfg.audit_max_pending;
}

static void pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ex_egress *eg = w->data;

    (void)revents;
    if (eg->fd < 0 || !audit_room(eg))
        return;
    ev_timer_stop(loop, w);
    AL_LOG_INFO("executor.egress_resume", "reason=\"the audit queue has room again\"");
    ev_io_start(loop, &eg->rd_w);
}

static void dispatch(struct ex_egress *eg, const Airlock__Internal__EgressMsg *m, int *reserved)
{
    switch (m->msg_case) {
    case AIRLOCK__INTERNAL__EGRESS_MSG__MSG_OPENED:
        ex_ejob_on_opened(eg->ex, m->opened);
        break;
    case AIRLOCK__INTERNAL__EGRESS_MSG__MSG_USE:
        if (ex_ejob_on_use(eg->ex, m->use))
            *reserved = 0;
        break;
    case AIRLOCK__INTERNAL__EGRESS_MSG__MSG_CLOSED:
        ex_ejob_on_closed(eg->ex, m->closed);
        break;
    default:
        AL_LOG_WARN("executor.egress_msg",
                    "case=%d reason=\"not a message the proxy sends; "
                    "dropped\"",
                    (int)m->msg_case);
    }
}

/* Closes descriptors a datagram carried (the proxy sends none). */
static void drop_fds(struct msghdr *mh)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int fds[8];
            memcpy(fds, CMSG_DATA(cm), (n > 8 ? 8 : n) * sizeof(int));
            for (size_t i = 0; i < n && i < 8; i++)
                close(fds[i]);
        }
}

/* Reads what the socket holds, READ_BURST datagrams at most unless final
 * (the process is gone or going: everything, room in the audit queue or
 * not). */
static void read_some(struct ex_egress *eg, int final)
{
    struct ev_loop *loop = eg->ex->svc.loop;

    for (int i = 0; (final || i < READ_BURST) && eg->fd >= 0; i++) {
        union {
            char buf[CMSG_SPACE(8 * sizeof(int))];
            struct cmsghdr align;
        } u;
        struct iovec iov = {eg->rbuf, MSG_MAX};
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = u.buf,
                            .msg_controllen = sizeof(u.buf)};
        int reserved = 0;
        ssize_t n;

        if (!final && !audit_room(eg)) {
            if (ev_is_active(&eg->rd_w)) {
                AL_LOG_WARN("executor.egress_pause",
                            "reason=\"the audit queue is full: reading the proxy's records "
                            "pauses (its requests wait) until credstore takes some\"");
                ev_io_stop(loop, &eg->rd_w);
                ev_timer_set(&eg->pause_w, PAUSE_S, PAUSE_S);
                ev_timer_start(loop, &eg->pause_w);
            }
            return;
        }
        if (al_edge_reserve(eg->edge) == 0)
            reserved = 1;
        n = recvmsg(eg->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n > 0)
            drop_fds(&mh);
        if (n <= 0 || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
            if (reserved)
                al_edge_release(eg->edge);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                return;
            if (n > 0) {
                AL_LOG_ERROR("executor.egress_msg", "reason=\"a datagram over 1 MiB; dropped\"");
                continue;
            }
            if (n < 0)
                AL_LOG_ERROR("executor.egress_socket", "reason=\"%s\"", strerror(errno));
            else
                AL_LOG_WARN("executor.egress_socket", "reason=\"the proxy closed its control "
                                                      "socket\"");
            socket_down(eg);
            return;
        }
        Airlock__Internal__EgressMsg *m =
            airlock__internal__egress_msg__unpack(NULL, (size_t)n, eg->rbuf);
        if (!m)
            AL_LOG_ERROR("executor.egress_msg", "len=%zd reason=\"malformed; dropped\"", n);
        else
            dispatch(eg, m, &reserved);
        if (m)
            airlock__internal__egress_msg__free_unpacked(m, NULL);
        if (reserved)
            al_edge_release(eg->edge);
    }
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    read_some(w->data, 0);
}

/* ---------- lifecycle ---------- */

static void metrics(struct ex_egress *eg)
{
    struct al_metrics *m = eg->ex->svc.metrics;

    eg->m_up =
        al_metrics_gauge(m, "airlock_executor_egress_up", "1 while the egress proxy runs", NULL);
    eg->m_restarts = al_metrics_counter(m, "airlock_executor_egress_restarts_total",
                                        "egress proxies started after one died", NULL);
    eg->m_jobs = al_metrics_gauge(m, "airlock_executor_egress_jobs",
                                  "jobs with an egress proxy (opening, open or closing)", NULL);
    eg->m_use_allow =
        al_metrics_counter(m, "airlock_executor_egress_uses_total",
                           "requests and tunnels the proxy reported", "decision=\"allow\"");
    eg->m_use_deny =
        al_metrics_counter(m, "airlock_executor_egress_uses_total",
                           "requests and tunnels the proxy reported", "decision=\"deny\"");
    eg->m_exfil =
        al_metrics_counter(m, "airlock_executor_egress_exfiltration_total",
                           "requests blocked because a placeholder was out of place", NULL);
    eg->m_use_unknown =
        al_metrics_counter(m, "airlock_executor_egress_uses_unattributed_total",
                           "use records of jobs the executor no longer knows (logged, not "
                           "audited)",
                           NULL);
    eg->m_resolve_ok = al_metrics_counter(m, "airlock_executor_resolves_total",
                                          "credstore Resolve calls", "result=\"ok\"");
    eg->m_resolve_denied = al_metrics_counter(m, "airlock_executor_resolves_total",
                                              "credstore Resolve calls", "result=\"denied\"");
    eg->m_resolve_failed = al_metrics_counter(m, "airlock_executor_resolves_total",
                                              "credstore Resolve calls", "result=\"failed\"");
}

static int edge_new(struct ex_egress *eg)
{
    struct al_metrics *m = eg->ex->svc.metrics;
    const struct ex_config *c = &eg->ex->cfg;
    struct al_edge_opts eo = {
        .target = c->credstore_addr,
        .expect_peer = c->credstore_peer,
        .tls = eg->ex->client_tls,
        .timeout_s = c->credstore_timeout_s,
        .audit = {.batch_max = (size_t)c->audit_batch_max,
                  .flush_s = c->audit_flush_s,
                  .max_pending = (size_t)c->audit_max_pending},
        .log_prefix = "executor",
        .metrics = {
            .queue = al_metrics_gauge(m, "airlock_executor_audit_queue",
                                      "use records queued, in flight or reserved", NULL),
            .undelivered = al_metrics_gauge(m, "airlock_executor_audit_undelivered_batches",
                                            "1 while a batch is overdue or failed", NULL),
            .batch_fail = al_metrics_counter(m, "airlock_executor_audit_batch_failures_total",
                                             "AppendAudit calls that failed", NULL),
            .refused = al_metrics_counter(m, "airlock_executor_audit_records_refused_total",
                                          "single use records credstore refused", NULL),
            .batches = al_metrics_counter(m, "airlock_executor_audit_batches_total",
                                          "AppendAudit batches delivered", NULL),
            .full = al_metrics_counter(m, "airlock_executor_audit_full_total",
                                       "times the audit queue was full (proxy paused)", NULL)}};

    return al_edge_new(eg->ex->svc.loop, &eo, &eg->edge);
}

/* The directory of the per-job CA bundles, emptied of an earlier run's. */
static int bundle_dir(struct ex_egress *eg, char *why, size_t n)
{
    const struct ex_config *c = &eg->ex->cfg;
    const char *base = c->work_dir && c->work_dir[0] ? c->work_dir : "/run";
    snprintf(eg->bundle_dir, sizeof(eg->bundle_dir), "%s/airlock-egress-%s", base,
             ex_host_name(eg->ex));
    if (mkdir(eg->bundle_dir, 0711) < 0 && errno != EEXIST) {
        snprintf(why, n, "cannot create %s: %s", eg->bundle_dir, strerror(errno));
        return -errno;
    }
    if (chmod(eg->bundle_dir, 0711) < 0) {
        snprintf(why, n, "cannot chmod %s: %s", eg->bundle_dir, strerror(errno));
        return -errno;
    }
    ex_ejob_sweep_bundles(eg->bundle_dir);
    return 0;
}

int ex_egress_start(struct ex *ex, char *why, size_t n)
{
    struct ex_egress *eg = calloc(1, sizeof(*eg));
    int rc;

    if (!eg)
        return AL_ERR_NOMEM;
    ex->egress = eg;
    eg->ex = ex;
    eg->fd = -1;
    eg->pidfd = -1;
    eg->q_tail = &eg->q_head;
    ev_timer_init(&eg->restart_w, restart_cb, 0., 0.);
    eg->restart_w.data = eg;
    ev_timer_init(&eg->pause_w, pause_cb, PAUSE_S, PAUSE_S);
    eg->pause_w.data = eg;
    metrics(eg);
    if (!(eg->rbuf = malloc(MSG_MAX)))
        return AL_ERR_NOMEM;
    if ((rc = find_binary(eg, why, n)) < 0 || (rc = bundle_dir(eg, why, n)) < 0)
        return rc;
    if ((rc = edge_new(eg)) < 0) {
        snprintf(why, n, "credstore.addr %s: %s", ex->cfg.credstore_addr, al_strerror(rc));
        return rc;
    }
    if ((rc = spawn(eg)) < 0) {
        snprintf(why, n, "cannot start %s: %s", eg->binary, al_strerror(rc));
        return rc;
    }
    return 0;
}

int ex_egress_up(const struct ex_egress *eg)
{
    return eg && eg->up;
}

uint64_t ex_egress_generation(const struct ex_egress *eg)
{
    return eg ? eg->gen : 0;
}

struct al_edge *ex_egress_edge(struct ex_egress *eg)
{
    return eg ? eg->edge : NULL;
}

/* ---------- drain ---------- */

static void flushed(void *user)
{
    struct ex *ex = user;
    struct ex_egress *eg = ex->egress;
    void (*done)(struct ex *) = eg->drain_done;

    eg->drain_done = NULL;
    AL_LOG_INFO("executor.egress_drained", "audit_queue=%zu",
                al_edge_audit_queued(al_edge_audit_state(eg->edge)));
    if (done)
        done(ex);
}

static void drain_step(struct ex_egress *eg)
{
    struct ev_loop *loop = eg->ex->svc.loop;

    if (eg->drain_phase != 0 || (ex_ejob_closing(eg->ex) && ev_is_active(&eg->drain_w)))
        return;
    eg->drain_phase = 1;
    ev_timer_stop(loop, &eg->drain_w);
    al_edge_flush(eg->edge, 2 * eg->ex->cfg.credstore_timeout_s, flushed, eg->ex);
}

static void drain_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ex_egress *eg = w->data;

    (void)loop;
    (void)revents;
    if (ex_ejob_closing(eg->ex))
        AL_LOG_WARN("executor.egress_drain",
                    "closing=%zu reason=\"no JobClosed in time; "
                    "flushing the audit queue anyway\"",
                    ex_ejob_closing(eg->ex));
    ev_timer_stop(eg->ex->svc.loop, w);
    drain_step(eg);
}

void ex_egress_drain(struct ex *ex, void (*done)(struct ex *ex))
{
    struct ex_egress *eg = ex->egress;

    if (!eg) {
        done(ex);
        return;
    }
    if (eg->drain_done)
        return;
    eg->drain_done = done;
    eg->drain_phase = 0;
    ev_timer_init(&eg->drain_w, drain_cb, DRAIN_CLOSE_S, 0.);
    eg->drain_w.data = eg;
    ev_timer_start(ex->svc.loop, &eg->drain_w);
    drain_step(eg);
}

void ex_egress_job_closed(struct ex *ex)
{
    struct ex_egress *eg = ex->egress;

    if (eg && eg->drain_done && eg->drain_phase == 0 && !ex_ejob_closing(ex)) {
        ev_timer_stop(ex->svc.loop, &eg->drain_w);
        drain_step(eg);
    }
}

void ex_egress_free(struct ex *ex)
{
    struct ex_egress *eg = ex->egress;
    struct ev_loop *loop = ex->svc.loop;

    if (!eg)
        return;
    eg->stopping = 1;
    ev_timer_stop(loop, &eg->restart_w);
    ev_timer_stop(loop, &eg->pause_w);
    ev_timer_stop(loop, &eg->drain_w);
    if (eg->fd >= 0) {
        read_some(eg, 1); /* records still in the socket */
        ev_io_stop(loop, &eg->rd_w);
        ev_io_stop(loop, &eg->wr_w);
        close(eg->fd); /* the proxy exits when it sees the socket close */
        eg->fd = -1;
        eg->up = 0;
    }
    if (eg->pidfd >= 0) {
        struct pollfd p = {eg->pidfd, POLLIN, 0};
        if (poll(&p, 1, STOP_GRACE_MS) <= 0) {
            AL_LOG_WARN("executor.egress_stop",
                        "pid=%d reason=\"still running %d ms after its "
                        "socket closed; killed\"",
                        (int)eg->pid, STOP_GRACE_MS);
            syscall(SYS_pidfd_send_signal, eg->pidfd, SIGKILL, NULL, 0);
        }
        reap(eg);
    }
    while (eg->q_head) {
        struct ex_outmsg *o = eg->q_head;
        eg->q_head = o->next;
        outmsg_free(o);
    }
    ex_ejob_free_all(ex);
    ex_ejob_sweep_bundles(eg->bundle_dir);
    if (eg->bundle_dir[0] && rmdir(eg->bundle_dir) < 0 && errno != ENOENT)
        AL_LOG_WARN("executor.egress_stop", "reason=\"cannot remove %s: %s\"", eg->bundle_dir,
                    strerror(errno));
    al_edge_free(eg->edge);
    free(eg->rbuf);
    free(eg);
    ex->egress = NULL;
}
