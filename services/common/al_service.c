/*
 * al_service: shared process runtime (config, TLS, gRPC, health, ops,
 * signals); see al_service.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "al_err.h"
#include "al_grpc.h"
#include "al_health.h"
#include "al_log.h"
#include "al_metrics.h"
#include "al_ops.h"
#include "al_service.h"
#include "al_tls.h"

#define SC(member, type) AL_CFG_OFF(struct al_service_config, member, type)

static const struct al_cfg_field common_fields[] = {
    {"listen", AL_CFG_STRING, SC(listen, char *), "127.0.0.1:0", "gRPC listen address host:port", 0,
     0, 0, NULL, NULL},
    {"ops_listen", AL_CFG_STRING, SC(ops_listen, char *), "127.0.0.1:0",
     "ops HTTP listen address (/metrics, /healthz, /readyz)", 0, 0, 0, NULL, NULL},
    {"insecure", AL_CFG_BOOL, SC(insecure, int), "false",
     "serve plaintext h2c without TLS (development only)", 0, 0, 0, NULL, NULL},
    {"tls.cert_file", AL_CFG_STRING, SC(tls_cert_file, char *), NULL,
     "PEM certificate chain of this service", 0, 0, 0, NULL, NULL},
    {"tls.key_file", AL_CFG_STRING, SC(tls_key_file, char *), NULL,
     "PEM private key of this service (a file path, never the key itself)", 0, 0, 0, NULL, NULL},
    {"tls.ca_file", AL_CFG_STRING, SC(tls_ca_file, char *), NULL,
     "PEM CA bundle that clients' certificates must chain to", 0, 0, 0, NULL, NULL},
    {"tls.client_cert", AL_CFG_STRING, SC(tls_client_cert, char *), "require",
     "require: clients must present a certificate from tls.ca_file (mTLS); optional: verify "
     "one if offered (for callers that authenticate with API keys)",
     0, 0, 0, NULL, NULL},
    {"tls.watch_interval", AL_CFG_DURATION_MS, SC(tls_watch_ms, long long), "30s",
     "how often tls.cert_file, key_file and ca_file are checked for changes (a renewed "
     "certificate is loaded without a restart); 0 = only on SIGHUP",
     0, 86400000, 0, NULL, NULL},
    {"log_level", AL_CFG_STRING, SC(log_level, char *), "info", "debug, info, warn or error", 0, 0,
     0, NULL, NULL},
    {"grpc.max_message_size", AL_CFG_SIZE, SC(max_message_size, size_t), "4MiB",
     "largest gRPC message accepted or sent", 1024, 1LL << 30, 0, NULL, NULL},
    {"grpc.max_concurrent_streams", AL_CFG_INT, SC(max_concurrent_streams, int), "1000",
     "HTTP/2 streams per connection", 1, 100000, 0, NULL, NULL},
    {"grpc.drain_timeout", AL_CFG_DURATION_MS, SC(drain_timeout_ms, long long), "30s",
     "how long SIGTERM waits for open calls before closing connections", 0, 3600000, 0, NULL, NULL},
};
#define NCOMMON (sizeof(common_fields) / sizeof(common_fields[0]))

static struct al_cfg_field *merge_fields(size_t common_off, const struct al_cfg_field *own,
                                         size_t nown)
{
    struct al_cfg_field *f = calloc(NCOMMON + nown, sizeof(*f));
    if (!f)
        return NULL;
    memcpy(f, common_fields, sizeof(common_fields));
    for (size_t i = 0; i < NCOMMON; i++)
        f[i].offset += common_off;
    if (nown)
        memcpy(f + NCOMMON, own, nown * sizeof(*own));
    return f;
}

static int validate_common(const struct al_service_config *c, char *err, size_t n)
{
    if (!c->insecure && (!c->tls_cert_file || !c->tls_key_file || !c->tls_ca_file)) {
        snprintf(err, n,
                 "tls.cert_file, tls.key_file and tls.ca_file are required (or set insecure "
                 "= true for plaintext h2c in development)");
        return AL_ERR_CONFIG;
    }
    if (strcmp(c->tls_client_cert, "require") != 0 && strcmp(c->tls_client_cert, "optional") != 0) {
        snprintf(err, n, "tls.client_cert: must be require or optional");
        return AL_ERR_CONFIG;
    }
    if (al_log_set_level_name(c->log_level) < 0) {
        snprintf(err, n, "log_level: must be debug, info, warn or error");
        return AL_ERR_CONFIG;
    }
    return 0;
}

int al_service_load_config(const char *prog, const char *summary, void *cfg, size_t common_off,
                           const struct al_cfg_field *own_fields, size_t nown, int argc,
                           char **argv)
{
    struct al_config_opts o = {.prog = prog, .summary = summary};
    struct al_cfg_field *f = merge_fields(common_off, own_fields, nown);
    char err[1024];
    int rc;

    if (!f)
        return AL_ERR_NOMEM;
    rc = al_config_load(f, NCOMMON + nown, cfg, argc, argv, &o, err, sizeof(err));
    if (rc == 0 && !o.help_shown)
        rc = validate_common((struct al_service_config *)((char *)cfg + common_off), err,
                             sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        al_config_cleanup(f, NCOMMON + nown, cfg);
        free(f);
        return AL_ERR_CONFIG;
    }
    free(f);
    if (o.help_shown)
        return 1;
    if (o.check_only) {
        printf("config ok\n");
        return 1;
    }
    return 0;
}

int al_service_strip_check(int argc, char **argv, char **out, int *check)
{
    int n = 0;

    *check = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && strcmp(argv[i], "--check-config") == 0)
            *check = 1;
        else
            out[n++] = argv[i];
    }
    out[n] = NULL;
    return n;
}

void al_service_free_config(void *cfg, size_t common_off, const struct al_cfg_field *own_fields,
                            size_t nown)
{
    struct al_cfg_field *f = merge_fields(common_off, own_fields, nown);
    if (!f)
        return;
    al_config_cleanup(f, NCOMMON + nown, cfg);
    free(f);
}

static void sig_term_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    al_service_drain(w->data);
}

/* Reloads the TLS files (and the service's own, on_reload). Returns the
 * server context's reload result. */
static int service_reload(struct al_service *svc)
{
    int rc = svc->tls ? al_tls_reload(svc->tls) : 0;
    if (svc->on_reload)
        svc->on_reload(svc);
    return rc;
}

/* sig[i] for each watched file; -errno when one cannot be read now
 * (replaced at this moment): decide at the next check. */
static int watch_sigs(const struct al_service *svc, struct al_file_sig *sig)
{
    for (size_t i = 0; i < svc->n_watch; i++) {
        struct stat st;
        if (stat(svc->watch_paths[i], &st) < 0)
            return -errno;
        sig[i].dev = (unsigned long long)st.st_dev;
        sig[i].ino = (unsigned long long)st.st_ino;
        sig[i].size = (unsigned long long)st.st_size;
        sig[i].mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    }
    return 0;
}

static void sig_hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct al_service *svc = w->data;
    (void)loop;
    (void)revents;
    AL_LOG_INFO("service.reload", "signal=SIGHUP");
    if (service_reload(svc) == 0)
        svc->watch_known = watch_sigs(svc, svc->watch_sig) == 0;
}

static void tls_watch_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct al_service *svc = w->data;
    struct al_file_sig now[AL_SERVICE_WATCH_MAX];
    (void)loop;
    (void)revents;

    if (watch_sigs(svc, now) < 0)
        return;
    if (!svc->watch_known) {
        memcpy(svc->watch_sig, now, sizeof(now));
        svc->watch_known = 1;
        return;
    }
    if (memcmp(now, svc->watch_sig, svc->n_watch * sizeof(now[0])) == 0)
        return;
    AL_LOG_INFO("service.reload", "trigger=files_changed");
    if (service_reload(svc) == 0)
        memcpy(svc->watch_sig, now, sizeof(now)); /* else: tried again next time */
}

int al_service_watch_file(struct al_service *svc, const char *path)
{
    if (!path || !path[0])
        return 0;
    for (size_t i = 0; i < svc->n_watch; i++)
        if (strcmp(svc->watch_paths[i], path) == 0)
            return 0;
    if (svc->n_watch == AL_SERVICE_WATCH_MAX)
        return AL_ERR_TOOBIG;
    svc->watch_paths[svc->n_watch++] = path;
    svc->watch_known = 0;
    return 0;
}

static int ready_cb(void *user, char *why, size_t n)
{
    struct al_service *svc = user;
    if (svc->draining) {
        snprintf(why, n, "draining");
        return 0;
    }
    if (svc->ready)
        return svc->ready(svc, why, n);
    return 1;
}

static void harden_process(void)
{
    struct rlimit rl = {0, 0};
    /* no core dumps and no ptrace/proc-mem access by same-uid processes:
     * service memory can hold keys and credential values */
    setrlimit(RLIMIT_CORE, &rl);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    signal(SIGPIPE, SIG_IGN);
}

int al_service_init(struct al_service *svc, const char *name, struct al_service_config *cfg)
{
    int rc;

    memset(svc, 0, sizeof(*svc));
    svc->name = name;
    svc->cfg = cfg;
    al_log_set_service(name);
    harden_process();
    svc->loop = EV_DEFAULT;
    rc = al_metrics_new(&svc->metrics);
    if (rc < 0)
        return rc;
    if (!cfg->insecure) {
        struct al_tls_opts to = {.cert_file = cfg->tls_cert_file,
                                 .key_file = cfg->tls_key_file,
                                 .ca_file = cfg->tls_ca_file,
                                 .server = 1,
                                 .require_peer_cert = strcmp(cfg->tls_client_cert, "require") == 0};
        rc = al_tls_new(&to, &svc->tls);
        if (rc < 0)
            return rc;
    } else {
        AL_LOG_WARN("service.insecure", "reason=\"insecure = true: plaintext h2c, no client "
                                        "identities; development only\"");
    }
    struct al_grpc_server_opts go = {
        .listen = cfg->listen,
        .tls = svc->tls,
        .insecure = cfg->insecure,
        .require_client_cert = !cfg->insecure && strcmp(cfg->tls_client_cert, "require") == 0,
        .max_message_bytes = cfg->max_message_size,
        .max_concurrent_streams = (uint32_t)cfg->max_concurrent_streams,
        .drain_timeout_s = (double)cfg->drain_timeout_ms / 1000.0,
        .metrics = svc->metrics,
    };
    rc = al_grpc_server_new(svc->loop, &go, &svc->grpc);
    if (rc < 0)
        return rc;
    rc = al_health_new(svc->grpc, &svc->health);
    if (rc < 0)
        return rc;
    rc = al_ops_new(svc->loop, cfg->ops_listen, svc->metrics, &svc->ops);
    if (rc < 0) {
        AL_LOG_ERROR("service.ops", "addr=%s reason=\"%s\"", cfg->ops_listen, al_strerror(rc));
        return rc;
    }
    al_ops_set_ready_cb(svc->ops, ready_cb, svc);
    return 0;
}

static void maybe_stop(struct al_service *svc)
{
    if (!svc->draining || !svc->grpc_drained || svc->holds > 0)
        return;
    AL_LOG_INFO("service.stop", "reason=drained");
    ev_break(svc->loop, EVBREAK_ALL);
}

static void drained_cb(void *user)
{
    struct al_service *svc = user;
    svc->grpc_drained = 1;
    maybe_stop(svc);
}

void al_service_hold(struct al_service *svc)
{
    svc->holds++;
}

void al_service_release(struct al_service *svc)
{
    if (svc->holds > 0)
        svc->holds--;
    maybe_stop(svc);
}

void al_service_drain(struct al_service *svc)
{
    if (svc->draining)
        return;
    svc->draining = 1;
    AL_LOG_INFO("service.drain", "open_connections=%zu", al_grpc_server_connections(svc->grpc));
    if (svc->on_drain)
        svc->on_drain(svc);
    al_health_shutdown(svc->health);
    al_grpc_server_shutdown(svc->grpc, drained_cb, svc);
}

/*
 * Heap trim. glibc returns freed memory to the kernel only from the top of
 * the heap, so after a burst (a relay holding 10,000 streams, their response
 * bytes queued up to its receive windows) a process can keep hundreds of MB
 * resident that malloc holds free. Every AL_TRIM_INTERVAL_S, when at least
 * AL_TRIM_SLACK bytes are free in malloc's arenas and resident memory exceeds
 * what is allocated by that much too, malloc_trim(0) hands the free pages back
 * (madvise). Free memory that trimming cannot hand back (pages shared with
 * live small blocks) would satisfy that test again every time, so once a trim
 * ran, the next waits until resident memory has grown by AL_TRIM_SLACK over
 * what that trim left.
 */
#define AL_TRIM_INTERVAL_S 10.0
#define AL_TRIM_SLACK      ((size_t)32 << 20)

/* Resident bytes of this process (/proc/self/statm), 0 when unknown. */
static size_t resident_bytes(void)
{
    char buf[128];
    unsigned long long size = 0, res = 0;
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    if (sscanf(buf, "%llu %llu", &size, &res) != 2)
        return 0;
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

int al_heap_trim_due(size_t resident, size_t allocated, size_t free_in_heap, size_t last_left,
                     size_t slack)
{
    return free_in_heap >= slack && resident > allocated && resident - allocated >= slack &&
           (last_left == 0 || (resident > last_left && resident - last_left >= slack));
}

static void trim_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    static size_t last_left; /* resident bytes the last trim left; the loop thread's own */
    struct mallinfo2 mi = mallinfo2();
    size_t before = resident_bytes(), after;

    (void)loop;
    (void)w;
    (void)revents;
    if (before && before < last_left)
        last_left = before; /* shrank on its own since: measure growth from here */
    if (!al_heap_trim_due(before, mi.uordblks + mi.hblkhd, mi.fordblks, last_left, AL_TRIM_SLACK))
        return;
    (void)malloc_trim(0);
    after = resident_bytes();
    last_left = after ? after : before;
    AL_LOG_INFO("service.heap_trim", "rss_before_kb=%zu rss_after_kb=%zu heap_free_kb=%zu",
                before / 1024, after / 1024, mi.fordblks / 1024);
}

static void log_flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    al_log_flush();
}

int al_service_run(struct al_service *svc)
{
    int listening = svc->cfg->listen && svc->cfg->listen[0];
    int rc = listening ? al_grpc_server_start(svc->grpc) : 0;
    if (rc < 0) {
        AL_LOG_ERROR("service.listen", "addr=%s reason=\"%s\"", svc->cfg->listen, al_strerror(rc));
        return rc;
    }
    ev_signal_init(&svc->sig_term, sig_term_cb, SIGTERM);
    ev_signal_init(&svc->sig_int, sig_term_cb, SIGINT);
    ev_signal_init(&svc->sig_hup, sig_hup_cb, SIGHUP);
    svc->sig_term.data = svc->sig_int.data = svc->sig_hup.data = svc;
    ev_signal_start(svc->loop, &svc->sig_term);
    ev_signal_start(svc->loop, &svc->sig_int);
    ev_signal_start(svc->loop, &svc->sig_hup);
    if (svc->tls && svc->cfg->tls_watch_ms > 0) {
        double iv = (double)svc->cfg->tls_watch_ms / 1000.0;
        al_service_watch_file(svc, svc->cfg->tls_cert_file);
        al_service_watch_file(svc, svc->cfg->tls_key_file);
        al_service_watch_file(svc, svc->cfg->tls_ca_file);
        svc->watch_known = watch_sigs(svc, svc->watch_sig) == 0; /* as loaded at start */
        ev_timer_init(&svc->tls_watch_w, tls_watch_cb, iv, iv);
        svc->tls_watch_w.data = svc;
        ev_timer_start(svc->loop, &svc->tls_watch_w);
    }
    ev_timer_init(&svc->trim_w, trim_cb, AL_TRIM_INTERVAL_S, AL_TRIM_INTERVAL_S);
    ev_timer_start(svc->loop, &svc->trim_w);
    AL_LOG_INFO("service.start", "grpc_port=%d ops_port=%d tls=%s", al_grpc_server_port(svc->grpc),
                al_ops_port(svc->ops), svc->tls ? "mtls" : "off");
    al_log_batch_start();
    ev_prepare_init(&svc->log_w, log_flush_cb);
    ev_set_priority(&svc->log_w, EV_MINPRI); /* after the other prepare watchers */
    ev_prepare_start(svc->loop, &svc->log_w);
    ev_run(svc->loop, 0);
    ev_prepare_stop(svc->loop, &svc->log_w);
    al_log_flush();
    al_log_batch_forget(); /* empty now: direct writes from here on */
    return 0;
}

void al_service_cleanup(struct al_service *svc)
{
    if (!svc->loop)
        return; /* al_service_init() never ran */
    ev_signal_stop(svc->loop, &svc->sig_term);
    ev_signal_stop(svc->loop, &svc->sig_int);
    ev_signal_stop(svc->loop, &svc->sig_hup);
    ev_timer_stop(svc->loop, &svc->tls_watch_w);
    ev_timer_stop(svc->loop, &svc->trim_w);
    al_ops_free(svc->ops);
    svc->ops = NULL;
    al_grpc_server_free(svc->grpc);
    svc->grpc = NULL;
    al_health_free(svc->health);
    svc->health = NULL;
    al_tls_free(svc->tls);
    svc->tls = NULL;
    al_metrics_free(svc->metrics);
    svc->metrics = NULL;
}
