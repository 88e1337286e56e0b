/*
 * Unit tests for the control socket (ctl.c) over a real SOCK_SEQPACKET
 * socketpair on a libev loop: well-formed messages and their descriptors,
 * malformed, empty and oversized datagrams dropped without harm, the end of
 * the socket, and the bounded output: Use records queue while the peer does
 * not read, reservations and plain Use records share the bound, replies are
 * never dropped, and everything arrives in order once the peer reads.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <ev.h>

#include "al_err.h"
#include "al_log.h"
#include "ctl.h"

static struct ev_loop *loop;

struct seen {
    int msgs, eof, last_case;
    size_t fds;
    char job[64];
};

static void on_msg(struct eg_ctl *c, const Airlock__Internal__EgressMsg *m, int *fds, size_t n,
                   void *user)
{
    struct seen *s = user;
    (void)c;

    s->msgs++;
    s->last_case = (int)m->msg_case;
    s->fds += n;
    if (m->msg_case == AIRLOCK__INTERNAL__EGRESS_MSG__MSG_LISTEN)
        snprintf(s->job, sizeof(s->job), "%s", m->listen->job);
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

static void on_eof(struct eg_ctl *c, void *user)
{
    (void)c;
    ((struct seen *)user)->eof = 1;
}

static const struct eg_ctl_cbs cbs = {on_msg, on_eof};

static void spin(int n)
{
    for (int i = 0; i < n; i++)
        ev_run(loop, EVRUN_NOWAIT);
}

static size_t pack_listen(const char *job, uint8_t *buf)
{
    Airlock__Internal__JobListen l = AIRLOCK__INTERNAL__JOB_LISTEN__INIT;
    Airlock__Internal__EgressMsg m = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;

    l.job = (char *)job;
    m.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_LISTEN;
    m.listen = &l;
    return airlock__internal__egress_msg__pack(&m, buf);
}

static void send_fd(int s, const uint8_t *d, size_t n, int fd)
{
    union {
        struct cmsghdr a;
        char b[CMSG_SPACE(sizeof(int))];
    } u;
    struct iovec iov = {(void *)d, n};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof(u.b)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    CU_ASSERT_EQUAL(sendmsg(s, &mh, 0), (ssize_t)n);
}

static int open_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++)
        n += fcntl(fd, F_GETFD) >= 0;
    return n;
}

static void test_input(void)
{
    int sv[2], p[2];
    struct eg_ctl *c;
    struct seen s = {0};
    uint8_t buf[256];
    size_t n;
    int before;

    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    CU_ASSERT_EQUAL_FATAL(eg_ctl_new(loop, sv[0], 0, &cbs, &s, &c), 0);
    n = pack_listen("job-1", buf);
    CU_ASSERT_EQUAL(send(sv[1], buf, n, 0), (ssize_t)n);
    spin(3);
    CU_ASSERT_EQUAL(s.msgs, 1);
    CU_ASSERT_STRING_EQUAL(s.job, "job-1");
    /* garbage, an empty message, a truncated one: dropped, never fatal */
    CU_ASSERT_EQUAL(send(sv[1], "\xff\xff\xff", 3, 0), 3);
    CU_ASSERT_EQUAL(send(sv[1], buf, n - 2, 0), (ssize_t)(n - 2));
    CU_ASSERT_EQUAL(send(sv[1], "\x0a\x00", 2, 0), 2); /* JobOpen with nothing */
    spin(3);
    CU_ASSERT_EQUAL(s.msgs, 2); /* only the last (well-formed, if empty) one */
    /* a descriptor with it, and one with garbage (closed by ctl) */
    CU_ASSERT_EQUAL_FATAL(pipe(p), 0);
    before = open_fds();
    send_fd(sv[1], buf, n, p[0]);
    send_fd(sv[1], (const uint8_t *)"\xff\xff", 2, p[1]);
    spin(3);
    CU_ASSERT_EQUAL(s.msgs, 3);
    CU_ASSERT_EQUAL(s.fds, 1);
    CU_ASSERT_EQUAL(open_fds(), before); /* both received copies are closed again */
    close(p[0]);
    close(p[1]);
    /* oversized: needs a send buffer larger than the datagram (root) */
    static uint8_t big[EG_CTL_MAX_MSG + 16];
    int sz = 4 << 20;
    memset(big, 0, sizeof(big));
    big[0] = 0x0a;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz));
    if (send(sv[1], big, sizeof(big), 0) == (ssize_t)sizeof(big)) {
        CU_ASSERT_EQUAL(send(sv[1], buf, n, 0), (ssize_t)n);
        spin(3);
        CU_ASSERT_EQUAL(s.msgs, 4); /* the big one dropped, the next one taken */
    }
    CU_ASSERT_EQUAL(s.eof, 0);
    close(sv[1]);
    spin(3);
    CU_ASSERT_EQUAL(s.eof, 1);
    eg_ctl_free(c);
}

static void use_msg(Airlock__Internal__EgressMsg *m, Airlock__Internal__Use *u, int status)
{
    airlock__internal__use__init(u);
    airlock__internal__egress_msg__init(m);
    u->job = "j";
    u->status = status;
    m->msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_USE;
    m->use = u;
}

static void test_bounded_output(void)
{
    int sv[2], small = 1, sent = 0, rc;
    struct eg_ctl *c;
    struct seen s = {0};
    Airlock__Internal__EgressMsg m;
    Airlock__Internal__Use u;
    Airlock__Internal__JobClosed jc = AIRLOCK__INTERNAL__JOB_CLOSED__INIT;
    Airlock__Internal__EgressMsg r = AIRLOCK__INTERNAL__EGRESS_MSG__INIT;
    uint8_t buf[4096];
    int last = -1, ordered = 1, got = 0, replies = 0;

    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    CU_ASSERT_EQUAL_FATAL(eg_ctl_new(loop, sv[0], 8, &cbs, &s, &c), 0);
    /* the peer does not read: the kernel takes a few, then the queue fills */
    for (;;) {
        use_msg(&m, &u, 1000 + sent);
        rc = eg_ctl_send(c, &m, EG_CTL_USE);
        if (rc < 0)
            break;
        sent++;
        CU_ASSERT_FATAL(sent < 10000);
    }
    CU_ASSERT_EQUAL(rc, AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(eg_ctl_dropped(c), 1);
    CU_ASSERT(eg_ctl_queued(c) == 8);
    CU_ASSERT_EQUAL(eg_ctl_reserve(c), AL_ERR_TOOBIG); /* no room to promise either */
    /* replies are never dropped */
    jc.job = "j";
    r.msg_case = AIRLOCK__INTERNAL__EGRESS_MSG__MSG_CLOSED;
    r.closed = &jc;
    CU_ASSERT_EQUAL(eg_ctl_send(c, &r, EG_CTL_REPLY), 0);
    CU_ASSERT_EQUAL(eg_ctl_queued(c), 9);
    /* the peer reads: everything arrives, in order */
    for (int i = 0; i < 200 && got < sent + 1; i++) {
        ssize_t n;
        spin(2);
        while ((n = recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
            Airlock__Internal__EgressMsg *x =
                airlock__internal__egress_msg__unpack(NULL, (size_t)n, buf);
            CU_ASSERT_PTR_NOT_NULL_FATAL(x);
            if (x->msg_case == AIRLOCK__INTERNAL__EGRESS_MSG__MSG_USE) {
                ordered &= x->use->status == last + 1 || last < 0;
                last = x->use->status;
            } else {
                replies++;
            }
            got++;
            airlock__internal__egress_msg__free_unpacked(x, NULL);
        }
    }
    CU_ASSERT_EQUAL(got, sent + 1);
    CU_ASSERT_EQUAL(replies, 1);
    CU_ASSERT(ordered);
    CU_ASSERT_EQUAL(last, 1000 + sent - 1);
    CU_ASSERT_EQUAL(eg_ctl_queued(c), 0);
    /* reservations count against the bound; a reserved record always goes */
    for (int i = 0; i < 8; i++)
        CU_ASSERT_EQUAL(eg_ctl_reserve(c), 0);
    CU_ASSERT_EQUAL(eg_ctl_reserve(c), AL_ERR_TOOBIG);
    use_msg(&m, &u, 1);
    CU_ASSERT_EQUAL(eg_ctl_send(c, &m, EG_CTL_USE), AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(eg_ctl_send(c, &m, EG_CTL_RESERVED), 0);
    eg_ctl_release(c);
    CU_ASSERT_EQUAL(eg_ctl_dropped(c), 2);
    close(sv[1]);
    spin(3);
    CU_ASSERT_EQUAL(s.eof, 1);
    CU_ASSERT_EQUAL(eg_ctl_send(c, &m, EG_CTL_REPLY), AL_ERR_CLOSED);
    eg_ctl_free(c);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    al_log_set_level_name("error"); /* the drops are logged as warnings */
    loop = ev_default_loop(0);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("egress control socket", NULL, NULL);
    CU_add_test(s, "input: messages, descriptors, bad datagrams, end", test_input);
    CU_add_test(s, "output: bounded Use queue, reservations, replies", test_bounded_output);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
