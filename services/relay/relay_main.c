/*
 * airlock-relay: the edge end of the tunnels. Agents speak MCP to it with
 * their API keys; gateways inside the company network dial it; it routes
 * each agent request down a gateway connection with a grant it signs.
 *
 * Startup checklist: load config (common keys + relay_config.h) and check
 * what spans fields; read our SPIFFE id from tls.cert_file (the issuer of
 * our grants); load the grant key and the agent key file; build the agent
 * TLS context (ALPN h2, http/1.1; no client certificates) and the tunnel
 * one (mutual TLS, ALPN airlock-tunnel/1) - with --check-config, stop here
 * and say "config ok"; start the service runtime (gRPC: TunnelStatus and
 * health; ops port), the gateway listener and the agent listener.
 * SIGHUP: both TLS contexts and the agent key file are re-read (the gRPC
 * context by al_service). SIGTERM: stop accepting agents, drain the tunnels
 * (gateways are told in their Acks), finish agent requests within
 * grpc.drain_timeout, exit 0.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "agentkeys.h"
#include "al_err.h"
#include "al_grant.h"
#include "al_log.h"
#include "al_pki.h"
#include "al_service.h"
#include "al_tls.h"
#include "relay_agent.h"
#include "relay_config.h"
#include "relay_status.h"
#include "relay_tunnel.h"

#define RELAY_VERSION "airlock-relay/0.1"
#define PROG          "airlock-relay"

struct relay {
    struct rl_config cfg;
    struct al_service svc;
    char self_id[AL_TLS_ID_MAX];
    struct al_grant_signer *signer;
    struct rl_keys *keys; /* until handed to the agent side */
    struct al_tls *agent_tls, *tunnel_tls;
    struct rl_tunnels *tunnels;
    struct rl_agents *agents;
    int started; /* both listeners up */
    ev_timer drain_guard;
};

/* The issuer of our grants: the SPIFFE id of our own certificate. */
static int self_identity(struct relay *rl)
{
    X509 *cert = NULL;
    char role[64], name[128];
    int rc = al_pki_load_cert(rl->cfg.common.tls_cert_file, &cert);

    if (rc == 0)
        rc = al_pki_spiffe_id(cert, rl->self_id, sizeof(rl->self_id));
    X509_free(cert);
    if (rc < 0) {
        fprintf(stderr, PROG ": tls.cert_file %s: no SPIFFE id to sign grants as: %s\n",
                rl->cfg.common.tls_cert_file, al_strerror(rc));
        return rc;
    }
    if (al_pki_parse_spiffe(rl->self_id, role, sizeof(role), name, sizeof(name)) == 0 &&
        strcmp(role, "relay") != 0)
        AL_LOG_WARN("relay.identity",
                    "self=%s reason=\"not a relay identity "
                    "(spiffe://airlock/relay/<name>): gateways may refuse it\"",
                    rl->self_id);
    return 0;
}

static int load_secrets(struct relay *rl)
{
    char err[512];
    int rc = al_grant_signer_new(rl->cfg.grant_key_file, NULL, rl->self_id, &rl->signer);

    if (rc < 0) {
        const char *why = rc == AL_ERR_CRYPTO     ? "not a PEM private key"
                          : rc == AL_ERR_INVAL    ? "not an Ed25519 key"
                          : rc == AL_ERR_NOTFOUND ? "no such file"
                                                  : al_strerror(rc);
        fprintf(stderr, PROG ": grant.key_file %s: %s (airlockctl keys gen-grant-key makes one)\n",
                rl->cfg.grant_key_file, why);
        return rc;
    }
    rc = rl_keys_load(rl->cfg.agents_keys_file, &rl->keys, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, PROG ": agents.keys_file: %s\n", err[0] ? err : al_strerror(rc));
        return rc;
    }
    return 0;
}

static int build_tls(struct relay *rl)
{
    static const char *const agent_alpn[] = {"h2", "http/1.1", NULL};
    static const char *const tunnel_alpn[] = {"airlock-tunnel/1", NULL};
    const struct rl_config *c = &rl->cfg;
    int rc;

    if (!c->agents_insecure) {
        int own = c->agents_cert_file && *c->agents_cert_file;
        struct al_tls_opts ao = {
            .cert_file = own ? c->agents_cert_file : c->common.tls_cert_file,
            .key_file = own ? c->agents_key_file : c->common.tls_key_file,
            .ca_file = NULL, /* agents authenticate with API keys, not certificates */
            .server = 1,
            .require_peer_cert = 0,
            .alpn = agent_alpn,
        };
        rc = al_tls_new(&ao, &rl->agent_tls);
        if (rc < 0) {
            fprintf(stderr, PROG ": agent TLS (%s): %s\n", ao.cert_file, al_strerror(rc));
            return rc;
        }
    }
    struct al_tls_opts to = {
        .cert_file = c->common.tls_cert_file,
        .key_file = c->common.tls_key_file,
        .ca_file = c->common.tls_ca_file,
        .server = 1,
        .require_peer_cert = 1,
        .alpn = tunnel_alpn,
    };
    rc = al_tls_new(&to, &rl->tunnel_tls);
    if (rc < 0)
        fprintf(stderr, PROG ": tunnel TLS (%s): %s\n", to.cert_file, al_strerror(rc));
    return rc;
}

static void on_reload(struct al_service *svc)
{
    struct relay *rl = svc->user;

    if (rl->agent_tls)
        al_tls_reload(rl->agent_tls);
    al_tls_reload(rl->tunnel_tls);
    if (rl->agents)
        rl_agents_reload_keys(rl->agents);
}

static int ready(struct al_service *svc, char *why, size_t n)
{
    struct relay *rl = svc->user;

    if (!rl->started) {
        snprintf(why, n, "listeners not started");
        return 0;
    }
    return 1; /* gateways may connect later: requests then get 503 NO_GATEWAY */
}

static void agents_drained(void *user)
{
    struct relay *rl = user;
    AL_LOG_INFO("relay.drain", "part=agents result=done");
    al_service_release(&rl->svc);
}

static void tunnels_drained(void *user)
{
    struct relay *rl = user;
    AL_LOG_INFO("relay.drain", "part=tunnels result=done");
    if (ev_is_active(&rl->drain_guard)) {
        ev_timer_stop(rl->svc.loop, &rl->drain_guard);
        al_service_release(&rl->svc);
    }
}

/* The agent side closes what is left at drain_timeout, which cancels every
 * gateway stream; this guard only makes sure a tunnel drain that still does
 * not report done cannot keep the process alive. */
static void drain_guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct relay *rl = w->data;
    (void)loop;
    (void)revents;
    AL_LOG_WARN("relay.drain", "part=tunnels reason=\"not drained in time; exiting anyway\"");
    al_service_release(&rl->svc);
}

static void on_drain(struct al_service *svc)
{
    struct relay *rl = svc->user;
    double timeout = (double)rl->cfg.common.drain_timeout_ms / 1000.0;

    /* two holds: agent connections, tunnel streams */
    al_service_hold(svc);
    al_service_hold(svc);
    ev_timer_init(&rl->drain_guard, drain_guard_cb, timeout + 5.0, 0.);
    rl->drain_guard.data = rl;
    ev_timer_start(svc->loop, &rl->drain_guard);
    rl_agents_drain(rl->agents, timeout, agents_drained, rl);
    rl_tunnels_drain(rl->tunnels, tunnels_drained, rl);
}

static int start(struct relay *rl)
{
    const struct rl_config *c = &rl->cfg;
    struct rl_tunnel_cfg *tc = calloc(c->tunnels.n + 1, sizeof(*tc));
    int rc;

    if (!tc)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < c->tunnels.n; i++) {
        tc[i].name = c->tunnels.v[i].name;
        tc[i].gateways = (const char *const *)c->tunnels.v[i].gateways;
        tc[i].ngateways = c->tunnels.v[i].ngateways;
    }
    struct rl_tunnels_opts to = {
        .listen = c->tunnel_listen,
        .tls = rl->tunnel_tls,
        .relay_id = c->relay_id,
        .relay_version = RELAY_VERSION,
        .heartbeat_interval_s = c->tunnel_heartbeat_interval,
        .tunnels = tc,
        .ntunnels = c->tunnels.n,
        .signer = rl->signer,
        .grant_ttl_s = c->grant_ttl,
        .max_replay = c->agents_max_body,
        .metrics = rl->svc.metrics,
    };
    rc = rl_tunnels_new(rl->svc.loop, &to, &rl->tunnels);
    free(tc); /* copied */
    if (rc < 0) {
        AL_LOG_ERROR("relay.start", "part=tunnel addr=%s reason=\"%s\"", c->tunnel_listen,
                     al_strerror(rc));
        return rc;
    }
    rc = rl_status_register(rl->svc.grpc, rl->tunnels);
    if (rc < 0) {
        AL_LOG_ERROR("relay.start", "part=status reason=\"%s\"", al_strerror(rc));
        return rc;
    }
    struct rl_agents_opts ao = {
        .listen = c->agents_listen,
        .tls = rl->agent_tls,
        .tunnels = rl->tunnels,
        .keys_file = c->agents_keys_file,
        .keys = rl->keys,
        .allowed_origins = (const char *const *)c->agents_allowed_origins,
        .max_head = c->agents_max_head,
        .max_body = c->agents_max_body,
        .header_timeout_s = c->agents_header_timeout,
        .body_timeout_s = c->agents_body_timeout,
        .idle_timeout_s = c->agents_idle_timeout,
        .max_connections = (size_t)c->agents_max_connections,
        .max_streams = (size_t)c->agents_max_streams,
        .metrics = rl->svc.metrics,
    };
    rl->keys = NULL; /* taken */
    rc = rl_agents_new(rl->svc.loop, &ao, &rl->agents);
    if (rc < 0)
        return rc;
    rl->started = 1;
    AL_LOG_INFO("relay.start",
                "relay_id=%s self=%s version=%s agents_port=%d tunnel_port=%d tunnels=%zu "
                "agents_tls=%s",
                c->relay_id, rl->self_id, RELAY_VERSION, rl_agents_port(rl->agents),
                rl_tunnels_port(rl->tunnels), c->tunnels.n, rl->agent_tls ? "on" : "off");
    if (!rl->agent_tls)
        AL_LOG_WARN("relay.insecure", "reason=\"agents.insecure = true: agents speak plaintext "
                                      "HTTP and their API keys cross the network in clear\"");
    return 0;
}

/* --check-config is ours to answer (after the checks below), so it is taken
 * out of the arguments al_service sees. */
static int strip_check_flag(int argc, char **argv, char **out, int *check)
{
    int n = 0;

    *check = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 0 &&
            (strcmp(argv[i], "--check-config") == 0 || strcmp(argv[i], "--check_config") == 0)) {
            *check = 1;
            continue;
        }
        out[n++] = argv[i];
    }
    out[n] = NULL;
    return n;
}

int main(int argc, char **argv)
{
    static struct relay rl;
    size_t nf;
    const struct al_cfg_field *fields = rl_config_fields(&nf);
    char **args = calloc((size_t)argc + 1, sizeof(char *));
    char err[1024];
    int check, nargs, rc;

    if (!args)
        return 1;
    nargs = strip_check_flag(argc, argv, args, &check);
    rc = al_service_load_config(PROG,
                                "tunnel relay: agents reach private MCP servers through "
                                "gateways that dial out, with credentials injected inside",
                                &rl.cfg, offsetof(struct rl_config, common), fields, nf, nargs,
                                args);
    free(args);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    al_log_set_service("relay");
    struct rl_config_src src = {argc, argv, rl_config_file_arg(argc, argv)};
    rc = rl_config_validate(&rl.cfg, &src, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        rc = 2;
        goto out_cfg;
    }
    if (self_identity(&rl) < 0 || load_secrets(&rl) < 0 || build_tls(&rl) < 0) {
        rc = 2;
        goto out_cfg;
    }
    if (check) {
        printf("config ok\n");
        rc = 0;
        goto out_cfg;
    }
    rc = al_service_init(&rl.svc, "relay", &rl.cfg.common);
    if (rc == 0) {
        rl.svc.user = &rl;
        rl.svc.on_reload = on_reload;
        if (!rl.cfg.agents_insecure) { /* the agent listener's own certificate, if any */
            al_service_watch_file(&rl.svc, rl.cfg.agents_cert_file);
            al_service_watch_file(&rl.svc, rl.cfg.agents_key_file);
        }
        rl.svc.on_drain = on_drain;
        rl.svc.ready = ready;
        rc = start(&rl);
    }
    if (rc == 0)
        rc = al_service_run(&rl.svc);
    if (rl.svc.loop)
        ev_timer_stop(rl.svc.loop, &rl.drain_guard);
    rl_agents_free(rl.agents);
    rl.agents = NULL;
    rl_tunnels_free(rl.tunnels);
    rl.tunnels = NULL;
    al_service_cleanup(&rl.svc);
    rc = rc < 0 ? 1 : 0;
out_cfg:
    rl_keys_free(rl.keys);
    al_tls_free(rl.agent_tls);
    al_tls_free(rl.tunnel_tls);
    al_grant_signer_free(rl.signer);
    al_service_free_config(&rl.cfg, offsetof(struct rl_config, common), fields, nf);
    return rc;
}
