/*
 * relay_config: airlock-relay's configuration beyond the common service keys
 * (al_service.h: listen, ops_listen, insecure, tls.*, log_level, grpc.*).
 *
 *   relay_id = "relay-0";               replica name (default: the host name)
 *   agents = {
 *     listen = "127.0.0.1:7420";        MCP endpoint for agents
 *     insecure = false;                 true: plaintext HTTP/1.1 + h2c (explicit opt-in)
 *     cert_file = ""; key_file = "";    agent-facing certificate (default tls.cert_file/key_file)
 *     keys_file = "/path/relay-keys";   agent API keys (agentkeys.h), required
 *     allowed_origins = [];             browser Origins accepted; other Origins get 403
 *     max_head = 16384; max_body = 4194304;
 *     header_timeout = 10.0; body_timeout = 30.0; idle_timeout = 60.0;   seconds
 *     max_connections = 10000;
 *     max_streams = 1000;               concurrent requests per HTTP/2 agent connection
 *   };
 *   tunnel = { listen = "127.0.0.1:7421"; heartbeat_interval = 10.0; };
 *   tunnels = ( { name = "corp"; gateways = ["spiffe://airlock/gateway/ *"]; } );  (no space)
 *   grant = { key_file = "/path/relay-0.key"; ttl = 60.0; };
 *
 * The tls.* files are required even with insecure = true: gateways always
 * connect with mutual TLS, and the relay signs grants as the SPIFFE id of
 * tls.cert_file.
 *
 * Lifecycle: rl_config_fields() gives the schema to al_service_load_config();
 * rl_config_validate() checks what one field alone cannot (and fills
 * defaults such as relay_id); al_service_free_config() frees it.
 */
#ifndef RL_CONFIG_H
#define RL_CONFIG_H

#include <stddef.h>

#include "al_config.h"
#include "al_service.h"

struct rl_tunnel_conf {
    char *name;
    char **gateways; /* NULL-terminated al_glob patterns over gateway SPIFFE ids */
    size_t ngateways;
};

struct rl_tunnel_list {
    struct rl_tunnel_conf *v;
    size_t n;
};

struct rl_config {
    struct al_service_config common;
    char *relay_id;
    char *agents_listen;
    int agents_insecure;
    char *agents_cert_file, *agents_key_file;
    char *agents_keys_file;
    char **agents_allowed_origins; /* NULL-terminated; NULL = none */
    size_t agents_max_head, agents_max_body;
    double agents_header_timeout, agents_body_timeout, agents_idle_timeout;
    int agents_max_connections;
    int agents_max_streams;
    char *tunnel_listen;
    double tunnel_heartbeat_interval;
    struct rl_tunnel_list tunnels;
    char *grant_key_file;
    double grant_ttl;
};

/* Where a key's value came from, for messages: argv/env as given to the
 * process, config_file the --config / AIRLOCK_CONFIG file (may be NULL). */
struct rl_config_src {
    int argc;
    char **argv;
    const char *config_file;
};

/* The relay's own schema (offsets into struct rl_config). */
const struct al_cfg_field *rl_config_fields(size_t *n);

/* Finds the config file named by argv (--config FILE / --config=FILE) or
 * $AIRLOCK_CONFIG; NULL when none. Borrowed from argv or the environment. */
const char *rl_config_file_arg(int argc, char **argv);

/* Checks everything a single field cannot: the tls.* files present, relay_id
 * (set to the host name when unset), addresses, certificate/key pairs,
 * allowed_origins. Errors read "<where>: <key>: <reason>" with where =
 * file:line, "env AIRLOCK_X" or "flag --x" as al_config reports them.
 * Returns 0 or AL_ERR_CONFIG / AL_ERR_NOMEM. */
int rl_config_validate(struct rl_config *c, const struct rl_config_src *src, char *err,
                       size_t errlen);

#endif
