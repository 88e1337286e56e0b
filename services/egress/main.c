/*
 * airlock-egress: the egress proxy of one executor. The executor starts it
 * (fork + exec) with one end of a SOCK_SEQPACKET socketpair on --control-fd
 * and drives it with proto/airlock/internal/egress.proto (job.h); the
 * sandboxes' only route out is through it.
 *
 * Start-up, in this order: close every inherited descriptor but the
 * control socket (checked to be a SOCK_SEQPACKET socket); load what needs
 * files: OpenSSL's configuration, the trust store for upstream TLS
 * (--ca-file, else $SSL_CERT_FILE, else OpenSSL's default bundle; loaded
 * whole, never looked up later), the resolver configuration (c-ares); set
 * up OpenSSL's secure heap (minted keys live there); run a self-test of
 * the interception path (a CA, a leaf, a TLS handshake in memory); then drop
 * privileges and install the seccomp allow-list (priv.h) and verify both.
 * Only then is the control socket read. The process exits 0 once the
 * control socket closes, after closing every job (values wiped), and 1 when
 * start-up fails (the reason on stderr).
 *
 * Flags: --control-fd N (required), --uid N and --gid N (default 65534),
 * --ca-file PATH, --resolve NAME=ADDR (repeatable, like curl --resolve:
 * NAME resolves to ADDR, an IP literal; for operators' internal names and
 * tests), --dns-servers ADDR:PORT[,...] (DNS servers instead of those of
 * /etc/resolv.conf), --connect-timeout-ms N (default 5000: resolution, TCP
 * and TLS to an upstream), --log-level debug|info|warn|error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "al_err.h"
#include "al_log.h"
#include "ca.h"
#include "egress.h"
#include "job.h"
#include "priv.h"
#include "scrub.h"

#define SECURE_HEAP (1024 * 1024)

static struct eg_proxy proxy; /* static: reachable until exit */

struct opts {
    int control_fd;
    unsigned long uid, gid;
    const char *ca_file;
    const char *dns_servers;
    long connect_ms;
    const char *log_level;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: airlock-egress --control-fd N [--uid N] [--gid N] [--ca-file PATH]\n"
               "         [--resolve NAME=ADDR]... [--dns-servers ADDR:PORT[,...]]\n"
               "         [--connect-timeout-ms N]\n"
               "         [--log-level debug|info|warn|error]\n"
               "The executor's egress proxy: driven over the SOCK_SEQPACKET control socket on\n"
               "--control-fd (proto/airlock/internal/egress.proto); exits when it closes.\n");
}

static void die(const char *what, const char *why)
{
    AL_LOG_ERROR("egress.start", "reason=\"%s: %s\"", what, why);
    exit(1);
}

static int parse_num(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v > max)
        return -1;
    *out = v;
    return 0;
}

/* NAME=ADDR into the static overrides. */
static void add_static(const char *spec)
{
    const char *eq = strchr(spec, '=');
    struct eg_host h;
    const char *why = NULL;
    char addr[64];
    struct eg_static *s = NULL;
    size_t al;

    if (!eq || eg_host_parse(spec, (size_t)(eq - spec), &h, &why) < 0 || h.kind != EG_HOST_NAME)
        die("--resolve", "expects NAME=ADDR with a DNS name");
    al = strlen(eq + 1);
    if (al >= sizeof(addr))
        die("--resolve", "address too long");
    memcpy(addr, eq + 1, al + 1);
    if (addr[0] == '[' && al > 2 && addr[al - 1] == ']') {
        memmove(addr, addr + 1, al - 2);
        addr[al - 2] = '\0';
    }
    for (size_t i = 0; i < proxy.nstatics; i++)
        if (strcmp(proxy.statics[i].name, h.name) == 0)
            s = &proxy.statics[i];
    if (!s) {
        if (proxy.nstatics == EG_STATIC_MAX)
            die("--resolve", "too many names");
        s = &proxy.statics[proxy.nstatics++];
        snprintf(s->name, sizeof(s->name), "%s", h.name);
    }
    if (s->n == AL_RESOLVE_MAX)
        die("--resolve", "too many addresses for one name");
    struct sockaddr_storage *ss = &s->addr[s->n];
    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, addr, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
        ss->ss_family = AF_INET;
        s->len[s->n++] = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, addr, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
        ss->ss_family = AF_INET6;
        s->len[s->n++] = sizeof(struct sockaddr_in6);
    } else {
        die("--resolve", "ADDR must be an IPv4 or IPv6 literal");
    }
}

static void parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {
        {"control-fd", required_argument, NULL, 'c'},
        {"uid", required_argument, NULL, 'u'},
        {"gid", required_argument, NULL, 'g'},
        {"ca-file", required_argument, NULL, 'a'},
        {"resolve", required_argument, NULL, 'r'},
        {"dns-servers", required_argument, NULL, 'd'},
        {"connect-timeout-ms", required_argument, NULL, 't'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    unsigned long v;
    int ch;

    *o = (struct opts){.control_fd = -1, .uid = 65534, .gid = 65534, .connect_ms = 5000};
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'c':
            if (parse_num(optarg, INT_MAX, &v) < 0)
                die("--control-fd", "expects a descriptor number");
            o->control_fd = (int)v;
            break;
        case 'u':
        case 'g':
            if (parse_num(optarg, 0xfffffffeUL, &v) < 0 || v == 0)
                die(ch == 'u' ? "--uid" : "--gid", "expects a number other than 0 (root)");
            *(ch == 'u' ? &o->uid : &o->gid) = v;
            break;
        case 'a':
            o->ca_file = optarg;
            break;
        case 'r':
            add_static(optarg);
            break;
        case 'd':
            o->dns_servers = optarg;
            break;
        case 't':
            if (parse_num(optarg, 600000, &v) < 0 || v == 0)
                die("--connect-timeout-ms", "expects 1..600000");
            o->connect_ms = (long)v;
            break;
        case 'l':
            if (al_log_set_level_name(optarg) < 0)
                die("--log-level", "expects debug, info, warn or error");
            o->log_level = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind < argc || o->control_fd < 0) {
        usage(stderr);
        exit(2);
    }
}

/* Everything inherited but stdio and the control socket is closed. */
static void close_inherited(int keep)
{
    int type = 0;
    socklen_t len = sizeof(type);

    if (keep <= 2 || getsockopt(keep, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
        type != SOCK_SEQPACKET)
        die("--control-fd", "is not an open SOCK_SEQPACKET socket");
    if (keep > 3)
        close_range(3, (unsigned)keep - 1, 0);
    close_range((unsigned)keep + 1, ~0U, 0);
}

/* A CA, a leaf and a TLS handshake in memory: proves the interception path
 * works and leaves OpenSSL with everything it loads lazily already loaded. */
static void self_test(void)
{
    struct eg_dest d;
    const struct eg_dest *hosts[1] = {&d};
    struct eg_ca *ca = NULL;
    SSL_CTX *sctx = NULL, *cctx = SSL_CTX_new(TLS_client_method());
    SSL *s = NULL, *c = NULL;
    BIO *bs = NULL, *bc = NULL;
    struct rl_scrub *scrub = NULL;
    char why[128];
    int done = 0;

    if (eg_dest_init(&d, "selftest.airlock.invalid", 443, NULL, 0, NULL, 0, NULL, 0, 0, why,
                     sizeof(why)) < 0 ||
        eg_ca_new("self-test", hosts, 1, (double)time(NULL), &ca) < 0 ||
        eg_ca_server_ctx(ca, &d.host, &sctx) < 0 || !cctx)
        die("self-test", "cannot mint a certificate");
    BIO *pem = BIO_new_mem_buf(eg_ca_pem(ca), -1);
    X509 *cert = pem ? PEM_read_bio_X509(pem, NULL, NULL, NULL) : NULL;
    if (!cert || X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), cert) != 1)
        die("self-test", "cannot read the CA back");
    SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_alpn_protos(cctx, (const unsigned char *)"\x08http/1.1", 9);
    s = SSL_new(sctx);
    c = SSL_new(cctx);
    if (!s || !c || BIO_new_bio_pair(&bs, 0, &bc, 0) != 1)
        die("self-test", "out of memory");
    SSL_set_bio(s, bs, bs);
    SSL_set_bio(c, bc, bc);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    SSL_set_tlsext_host_name(c, d.host.name);
    SSL_set1_host(c, d.host.name);
    for (int i = 0; i < 20 && done != 3; i++) {
        if (!(done & 1) && SSL_do_handshake(c) == 1)
            done |= 1;
        if (!(done & 2) && SSL_do_handshake(s) == 1)
            done |= 2;
    }
    if (done != 3 || SSL_get_verify_result(c) != X509_V_OK)
        die("self-test", "TLS handshake with a minted leaf failed");
    if (rl_scrub_new(&scrub) < 0 ||
        rl_scrub_add_as(scrub, (const uint8_t *)"self-test-value", 15, "x", 1) < 0)
        die("self-test", "cannot build a scrubber");
    rl_scrub_free(scrub);
    SSL_free(s);
    SSL_free(c);
    X509_free(cert);
    BIO_free(pem);
    SSL_CTX_free(cctx);
    eg_ca_free(ca);
    eg_dest_cleanup(&d);
}

static const char *trust_store(const char *flag)
{
    const char *env = getenv(X509_get_default_cert_file_env());

    if (flag && *flag)
        return flag;
    return env && *env ? env : X509_get_default_cert_file();
}

static void harden(const struct opts *o)
{
    char err[256];

    if (eg_priv_drop((uid_t)o->uid, (gid_t)o->gid, err, sizeof(err)) < 0)
        die("privilege drop", err);
    if (eg_priv_verify((uid_t)o->uid, (gid_t)o->gid, err, sizeof(err)) < 0)
        die("privilege check", err);
    if (eg_seccomp_load(err, sizeof(err)) < 0)
        die("seccomp", err);
}

int main(int argc, char **argv)
{
    struct opts o;
    const char *ca;
    int rc;

    al_log_set_service("egress");
    signal(SIGPIPE, SIG_IGN);
    parse_args(argc, argv, &o);
    close_inherited(o.control_fd);
    rc = CRYPTO_secure_malloc_init(SECURE_HEAP, 32);
    if (rc == 0)
        die("OpenSSL", "cannot set up the secure heap");
    if (rc == 2)
        AL_LOG_WARN("egress.start", "problem=\"OpenSSL's secure heap is not locked in memory "
                                    "(RLIMIT_MEMLOCK)\"");
    if (OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, NULL) != 1)
        die("OpenSSL", "initialisation failed");
    proxy.loop = ev_default_loop(EVFLAG_AUTO);
    if (!proxy.loop)
        die("libev", "no event loop");
    proxy.connect_timeout_s = (double)o.connect_ms / 1000.0;
    ca = trust_store(o.ca_file);
    if (rl_upstream_client_ctx(ca, &proxy.client_ctx) < 0)
        die("trust store", ca);
    if ((rc = al_resolver_new(proxy.loop, &proxy.resolver)) < 0)
        die("resolver", al_strerror(rc));
    if (o.dns_servers && al_resolver_set_servers(proxy.resolver, o.dns_servers) < 0)
        die("--dns-servers", "expects ADDR:PORT[,ADDR:PORT...] (\"127.0.0.1:53,[::1]:53\")");
    self_test();
    if ((rc = eg_ctl_new(proxy.loop, o.control_fd, 0, &eg_job_ctl_cbs, &proxy, &proxy.ctl)) < 0)
        die("control socket", al_strerror(rc));
    harden(&o);
    AL_LOG_INFO("egress.start",
                "uid=%lu gid=%lu control_fd=%d trust_store=%s resolve_names=%zu "
                "seccomp=1",
                o.uid, o.gid, o.control_fd, ca, proxy.nstatics);
    ev_run(proxy.loop, 0);
    /* the control socket closed: every job is closed and wiped; let closing
     * connections go, then leave */
    eg_ctl_free(proxy.ctl);
    proxy.ctl = NULL;
    al_resolver_free(proxy.resolver);
    proxy.resolver = NULL;
    SSL_CTX_free(proxy.client_ctx);
    proxy.client_ctx = NULL;
    AL_LOG_INFO("egress.exit", "reason=\"control socket closed\"");
    return 0;
}
