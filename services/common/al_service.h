/*
 * al_service: the runtime every Airlock service process shares.
 *
 * It loads the common configuration keys (below) together with the service's
 * own, builds the TLS context, the gRPC server with grpc.health.v1, the ops
 * HTTP port (/metrics, /healthz, /readyz) and the metrics registry, and runs
 * the loop. SIGHUP reloads the certificate, key and CA bundle without dropping
 * connections, and so does a change of those files (tls.watch_interval: each
 * file's device, inode, size and mtime are compared, so the symlink swap of a
 * Kubernetes Secret volume after a cert-manager renewal is seen; a reload
 * that fails, e.g. a key not yet matching its certificate, keeps the
 * previous files and is tried again at the next check); SIGTERM/SIGINT drain: health goes
 * NOT_SERVING, GOAWAY on every connection, the loop ends when they have closed or drain_timeout
 * passed.
 *
 * Common keys (file / AIRLOCK_* env / --flag):
 *   listen               gRPC address "host:port"
 *   ops_listen           ops HTTP address "host:port"
 *   insecure             serve h2c without TLS (explicit opt-in; default false)
 *   tls.cert_file, tls.key_file, tls.ca_file   PEM files (mTLS; required unless insecure)
 *   tls.client_cert      require (default) | optional
 *   tls.watch_interval   how often the TLS files are checked for changes (0 = only SIGHUP)
 *   log_level            debug | info | warn | error
 *   grpc.max_message_size, grpc.max_concurrent_streams, grpc.drain_timeout
 *
 * Lifecycle: al_service_load_config() -> al_service_init() -> register
 * services on al_service_grpc() -> al_service_run() -> al_service_cleanup().
 */
#ifndef AL_SERVICE_H
#define AL_SERVICE_H

#include <stddef.h>

#include <ev.h>

#include "al_config.h"

struct al_grpc_server;
struct al_health;
struct al_metrics;
struct al_ops;
struct al_tls;

#define AL_SERVICE_WATCH_MAX 8

struct al_service_config {
    char *listen;
    char *ops_listen;
    int insecure;
    char *tls_cert_file, *tls_key_file, *tls_ca_file;
    char *tls_client_cert; /* "require" | "optional" */
    long long tls_watch_ms;
    char *log_level;
    size_t max_message_size;
    int max_concurrent_streams;
    long long drain_timeout_ms;
};

struct al_service {
    const char *name;
    struct ev_loop *loop;
    struct al_service_config *cfg; /* borrowed */
    struct al_tls *tls;
    struct al_metrics *metrics;
    struct al_grpc_server *grpc;
    struct al_health *health;
    struct al_ops *ops;
    ev_signal sig_term, sig_int, sig_hup;
    ev_timer tls_watch_w;
    ev_timer trim_w;  /* hands memory malloc holds free back to the kernel after bursts */
    ev_prepare log_w; /* writes the loop turn's batched log lines before the loop waits */
    const char *watch_paths[AL_SERVICE_WATCH_MAX]; /* the TLS files + al_service_watch_file() */
    size_t n_watch;
    struct al_file_sig {
        unsigned long long dev, ino, size;
        long long mtime_ns;
    } watch_sig[AL_SERVICE_WATCH_MAX];
    int watch_known; /* watch_sig holds the files as last loaded */
    int draining;
    int holds;        /* al_service_hold(): work the drain must wait for */
    int grpc_drained; /* the gRPC server finished draining */
    /* optional hooks */
    void (*on_reload)(struct al_service *svc); /* after a SIGHUP reload */
    void (*on_drain)(struct al_service *svc);  /* SIGTERM: before connections drain */
    int (*ready)(struct al_service *svc, char *why, size_t n); /* /readyz; NULL = ready */
    void *user;
};

/*
 * Loads defaults < file < env < flags into `cfg`, the service's own config
 * struct, which embeds a struct al_service_config at offset `common_off`;
 * own_fields (offsets relative to cfg) add the service's keys. On --help or a
 * successful --check-config it prints and returns 1 (the caller exits 0).
 * Returns 0 to go on, or AL_ERR_CONFIG after printing "prog: <reason>"
 * (file:line: key: reason) to stderr.
 */
int al_service_load_config(const char *prog, const char *summary, void *cfg, size_t common_off,
                           const struct al_cfg_field *own_fields, size_t nown, int argc,
                           char **argv);

/*
 * For services whose own checks must run before "config ok": copies argv
 * into out (room for argc + 1 pointers; strings borrowed, NULL-terminated)
 * without any "--check-config", which al_service_load_config() would act on
 * before those checks ran. Returns the new argc; *check = 1 when the flag
 * was given (validate, print "config ok", exit 0).
 */
int al_service_strip_check(int argc, char **argv, char **out, int *check);

/* Frees what al_service_load_config() stored in cfg. */
void al_service_free_config(void *cfg, size_t common_off, const struct al_cfg_field *own_fields,
                            size_t nown);

/* Builds TLS, metrics, gRPC server (not yet listening; listen = "" means it
 * never listens: egress-only services keep just the ops port), health and the ops
 * port. cfg is borrowed for the service's life. Returns 0 or a negative code
 * (logged). */
int al_service_init(struct al_service *svc, const char *name, struct al_service_config *cfg);

/* Adds a file whose change reloads like SIGHUP (e.g. a second certificate
 * the service loads in on_reload); path is borrowed. Before al_service_run().
 * Returns 0 or AL_ERR_TOOBIG. */
int al_service_watch_file(struct al_service *svc, const char *path);

/* Starts listening and runs the loop until drained. Returns 0 or a negative code. */
int al_service_run(struct al_service *svc);

/*
 * Work the drain must wait for besides gRPC calls (e.g. an executor's running
 * jobs): the loop ends when the server has drained and every hold is
 * released. Take holds before or during on_drain.
 */
void al_service_hold(struct al_service *svc);
void al_service_release(struct al_service *svc);

/* Starts the drain programmatically (as SIGTERM does). */
void al_service_drain(struct al_service *svc);

void al_service_cleanup(struct al_service *svc);

/*
 * The heap-trim test the service loop applies every 10 s: at least slack
 * bytes free in malloc's arenas; resident memory above what is allocated
 * (arenas in use plus mmapped blocks) by at least slack; and, once a trim
 * ran (last_left: the resident bytes it left, 0 = none yet), resident memory
 * grown by at least slack since. Exposed for tests.
 */
int al_heap_trim_due(size_t resident, size_t allocated, size_t free_in_heap, size_t last_left,
                     size_t slack);

#endif
