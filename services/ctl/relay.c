/*
 * airlockctl relay / tunnel: the relay's agent API keys and the operator view
 * of its tunnels.
 *
 *   relay keys create --file F --principal P --routes LIST [--expires DUR]
 *        prints the new key once, on stdout (nothing else goes to stdout);
 *        only its hash is written to F (agentkeys.h format)
 *   relay keys revoke --file F ID
 *   relay keys ls --file F [--json]       ids, principals, routes, times; never a secret
 *   tunnel status [--addr HOST:PORT] [--tunnel T] [--json]
 *        airlock.v1.TunnelStatus/GetStatus with the admin certificate
 *
 * The keys file is the one every relay replica reads (agents.keys_file);
 * writes go through rl_keys_add()/rl_keys_revoke(), which lock, write a
 * temporary file and rename it, so a relay reloading at the same moment sees
 * either the old or the new file, never half of one. A relay picks a change
 * up within a second (or at once on SIGHUP).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "agentkeys.h"
#include "airlock/v1/tunnel.pb-c.h"
#include "al_err.h"
#include "ctl.h"
#include "ctlrpc.h"

#define RELAY_ADDR_ENV     "AIRLOCK_RELAY_ADDR"
#define RELAY_ADDR_DEFAULT "127.0.0.1:7422"
#define RELAY_PEER         "spiffe://airlock/relay/"
#define STATUS_PATH        "/airlock.v1.TunnelStatus/GetStatus"

enum {
    OPT_FILE = CTL_OPT_FIRST_FREE,
    OPT_PRINCIPAL,
    OPT_ROUTES,
    OPT_EXPIRES,
    OPT_JSON,
    OPT_TUNNEL
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------- relay keys create ---------- */

static const char create_help[] =
    "usage: airlockctl relay keys create --file FILE --principal NAME --routes LIST\n"
    "                                    [--expires DURATION]\n"
    "\n"
    "Creates an agent API key for airlock-relay and adds it to FILE (the relay's\n"
    "agents.keys_file; created, mode 0600, if missing). The key is printed once, on\n"
    "stdout, and never again: only a hash of it is stored. Agents send it as\n"
    "  Authorization: Bearer <key>\n"
    "\n"
    "  --principal NAME   who the key acts for (the grant's principal, matched by\n"
    "                     the gateway's per-principal policy): 1-128 characters of\n"
    "                     [A-Za-z0-9._@:/-]\n"
    "  --routes LIST      comma-separated TUNNEL/SERVER patterns the key may use,\n"
    "                     e.g. 'corp/*' or 'corp/crm,lab/wiki' ('*' within a\n"
    "                     segment, '**' across)\n"
    "  --expires D        lifetime, e.g. 30d, 12h, 90m, 1h30m; default: no expiry\n"
    "\n"
    "Relays pick the change up within a second (or at once on SIGHUP).\n";

struct create_args {
    const char *file, *principal, *routes, *expires;
};

static int create_parse(int argc, char **argv, struct create_args *a)
{
    static const struct option lo[] = {{"file", required_argument, NULL, OPT_FILE},
                                       {"principal", required_argument, NULL, OPT_PRINCIPAL},
                                       {"routes", required_argument, NULL, OPT_ROUTES},
                                       {"expires", required_argument, NULL, OPT_EXPIRES},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    const char *what = "relay keys create";
    int c;

    optind = 0;
    while ((c = ctl_getopt(what, argc, argv, ":h", lo)) != -1) {
        switch (c) {
        case '?':
            return CTL_EXIT_USAGE;
        case 'h':
            fputs(create_help, stdout);
            return -1;
        case OPT_FILE:
            a->file = optarg;
            break;
        case OPT_PRINCIPAL:
            a->principal = optarg;
            break;
        case OPT_ROUTES:
            a->routes = optarg;
            break;
        case OPT_EXPIRES:
            a->expires = optarg;
            break;
        default:
            return ctl_usage_error(what, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return ctl_usage_error(what, "unexpected argument '%s'", argv[optind]);
    if (!a->file || !a->principal || !a->routes)
        return ctl_usage_error(what, "--file, --principal and --routes are required");
    return 0;
}

/* Prints why rl_keys_add/revoke failed. */
static void keys_error(const char *what, const char *file, int rc, const char *err)
{
    if (rc == AL_ERR_CONFIG)
        fprintf(stderr, "airlockctl: %s: %s\n", what, err[0] ? err : "malformed keys file");
    else
        fprintf(stderr, "airlockctl: %s: %s: %s\n", what, file, al_strerror(rc));
}

static int keys_create(int argc, char **argv)
{
    const char *what = "relay keys create";
    struct create_args a = {0};
    struct rl_key k;
    char key[RL_KEY_LEN + 1], exp[32], err[512] = "";
    int64_t life = 0, now = now_ms();
    int rc;

    rc = create_parse(argc, argv, &a);
    if (rc != 0)
        return rc < 0 ? CTL_EXIT_OK : rc;
    if (rl_key_principal_valid(a.principal) < 0)
        return ctl_usage_error(what, "--principal: 1-128 characters of [A-Za-z0-9._@:/-]");
    if (strlen(a.routes) > RL_ROUTES_MAX || rl_key_routes_valid(a.routes) < 0)
        return ctl_usage_error(what,
                               "--routes: comma-separated TUNNEL/SERVER patterns, e.g. "
                               "'corp/*' (at most %d bytes)",
                               RL_ROUTES_MAX);
    if (a.expires &&
        (ctl_parse_dur(a.expires, &life) < 0 || life <= 0 || life > INT64_MAX / 4 - now))
        return ctl_usage_error(what, "--expires: a duration such as 30d, 12h, 90m");
    memset(&k, 0, sizeof(k));
    snprintf(k.principal, sizeof(k.principal), "%s", a.principal);
    snprintf(k.routes, sizeof(k.routes), "%s", a.routes);
    k.created_ms = now;
    k.expires_ms = life ? now + life : 0;
    rc = rl_key_generate(k.id, key, k.hash);
    if (rc == 0)
        rc = rl_keys_add(a.file, &k, err, sizeof(err));
    if (rc < 0) {
        OPENSSL_cleanse(key, sizeof(key));
        keys_error(what, a.file, rc, err);
        return CTL_EXIT_FAIL;
    }
    fprintf(stderr,
            "created relay key %s for principal %s (routes %s, expires %s) in %s; it is shown "
            "once, below\n",
            k.id, k.principal, k.routes,
            k.expires_ms ? ctl_fmt_time(k.expires_ms, exp, sizeof(exp)) : "never", a.file);
    printf("%s\n", key);
    fflush(stdout);
    OPENSSL_cleanse(key, sizeof(key));
    return CTL_EXIT_OK;
}

/* ---------- relay keys revoke / ls ---------- */

static const char revoke_help[] =
    "usage: airlockctl relay keys revoke --file FILE ID\n"
    "\n"
    "Marks relay key ID (rk_ and 16 hex digits, as 'relay keys ls' shows it) revoked\n"
    "in FILE. Relays refuse it (401) within a second, or at once on SIGHUP.\n"
    "Revoking twice keeps the first time.\n";

static const char ls_help[] =
    "usage: airlockctl relay keys ls --file FILE [--json]\n"
    "\n"
    "Lists the relay keys in FILE: id, principal, routes, created, expires and\n"
    "status (active, expired, revoked). Secrets are never shown (they are not\n"
    "stored). --json prints one JSON object per key per line.\n";

/* Parses "--file F [--json] [ARG]"; *arg gets the positional argument when arg != NULL. */
static int file_args(const char *what, const char *help, int argc, char **argv, const char **file,
                     int *json, const char **arg)
{
    static const struct option lo[] = {{"file", required_argument, NULL, OPT_FILE},
                                       {"json", no_argument, NULL, OPT_JSON},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    int c;

    optind = 0;
    while ((c = ctl_getopt(what, argc, argv, ":h", lo)) != -1) {
        if (c == '?')
            return CTL_EXIT_USAGE;
        if (c == 'h') {
            fputs(help, stdout);
            return -1;
        }
        if (c == OPT_FILE)
            *file = optarg;
        else if (c == OPT_JSON && json)
            *json = 1;
        else
            return ctl_usage_error(what, "unknown option '%s'", argv[optind - 1]);
    }
    if (!*file)
        return ctl_usage_error(what, "--file is required");
    if (arg) {
        if (optind + 1 != argc)
            return ctl_usage_error(what, "exactly one key ID is needed");
        *arg = argv[optind];
    } else if (optind < argc) {
        return ctl_usage_error(what, "unexpected argument '%s'", argv[optind]);
    }
    return 0;
}

static int id_valid(const char *id)
{
    if (strlen(id) != RL_KEY_ID_LEN || strncmp(id, "rk_", 3) != 0)
        return 0;
    for (const char *p = id + 3; *p; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    }
    return 1;
}

static int keys_revoke(int argc, char **argv)
{
    const char *what = "relay keys revoke", *file = NULL, *id = NULL;
    char err[512] = "";
    int rc = file_args(what, revoke_help, argc, argv, &file, NULL, &id);

    if (rc != 0)
        return rc < 0 ? CTL_EXIT_OK : rc;
    if (!id_valid(id))
        return ctl_usage_error(what, "'%s' is not a relay key id (rk_ and 16 hex digits)", id);
    rc = rl_keys_revoke(file, id, now_ms(), err, sizeof(err));
    if (rc == AL_ERR_NOTFOUND) {
        fprintf(stderr, "airlockctl: %s: no key %s in %s\n", what, id, file);
        return CTL_EXIT_FAIL;
    }
    if (rc < 0) {
        keys_error(what, file, rc, err);
        return CTL_EXIT_FAIL;
    }
    printf("revoked %s\n", id);
    return CTL_EXIT_OK;
}

static const char *key_status(const struct rl_key *k, int64_t now)
{
    if (k->revoked_ms)
        return "revoked";
    if (k->expires_ms && now >= k->expires_ms)
        return "expired";
    return "active";
}

/* Prints s as a JSON string (len bytes; < 0 = up to the NUL). */
static void json_str(const char *s, int len)
{
    putchar('"');
    for (int i = 0; len < 0 ? s[i] != '\0' : i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void print_key_json(const struct rl_key *k, int64_t now)
{
    printf("{\"id\":");
    json_str(k->id, -1);
    printf(",\"principal\":");
    json_str(k->principal, -1);
    printf(",\"routes\":[");
    for (const char *p = k->routes, *comma; *p; p = comma ? comma + 1 : p + strlen(p)) {
        comma = strchr(p, ',');
        if (p != k->routes)
            putchar(',');
        json_str(p, comma ? (int)(comma - p) : (int)strlen(p));
    }
    printf("],\"created_ms\":%lld,\"expires_ms\":%lld,\"revoked_ms\":%lld,\"status\":\"%s\"}\n",
           (long long)k->created_ms, (long long)k->expires_ms, (long long)k->revoked_ms,
           key_status(k, now));
}

static int keys_ls(int argc, char **argv)
{
    const char *what = "relay keys ls", *file = NULL;
    struct rl_keys *keys = NULL;
    char err[512] = "", created[32], expires[32];
    int json = 0, rc = file_args(what, ls_help, argc, argv, &file, &json, NULL);
    int64_t now = now_ms();
    size_t n;

    if (rc != 0)
        return rc < 0 ? CTL_EXIT_OK : rc;
    rc = rl_keys_load(file, &keys, err, sizeof(err));
    if (rc < 0) {
        keys_error(what, file, rc, err);
        return CTL_EXIT_FAIL;
    }
    n = rl_keys_count(keys);
    if (!json)
        printf("%-19s  %-24s  %-24s  %-24s  %-24s  %s\n", "ID", "PRINCIPAL", "ROUTES", "CREATED",
               "EXPIRES", "STATUS");
    for (size_t i = 0; i < n; i++) {
        const struct rl_key *k = rl_keys_at(keys, i);
        if (json) {
            print_key_json(k, now);
            continue;
        }
        printf("%-19s  %-24s  %-24s  %-24s  %-24s  %s\n", k->id, k->principal, k->routes,
               ctl_fmt_time(k->created_ms, created, sizeof(created)),
               k->expires_ms ? ctl_fmt_time(k->expires_ms, expires, sizeof(expires)) : "never",
               key_status(k, now));
    }
    if (!json && n == 0)
        fprintf(stderr, "(no keys)\n");
    rl_keys_free(keys);
    return CTL_EXIT_OK;
}

static int relay_keys(int argc, char **argv)
{
    static const struct ctl_sub subs[] = {
        {"create", "--file F --principal P --routes LIST [--expires DUR]",
         "create an agent API key (printed once)", keys_create},
        {"revoke", "--file F ID", "revoke an agent API key", keys_revoke},
        {"ls", "--file F [--json]", "list agent API keys (never a secret)", keys_ls},
    };

    return ctl_dispatch("relay keys", subs, sizeof subs / sizeof subs[0], argc, argv);
}

int ctl_relay(int argc, char **argv)
{
    static const struct ctl_sub subs[] = {
        {"keys", "create|revoke|ls --file F ...", "the relay's agent API keys", relay_keys},
    };

    return ctl_dispatch("relay", subs, sizeof subs / sizeof subs[0], argc, argv);
}

/* ---------- tunnel status ---------- */

static const char status_help[] =
    "usage: airlockctl tunnel status [--addr HOST:PORT] [--tunnel T] [--json]\n"
    "\n"
    "Asks one relay replica (airlock.v1.TunnelStatus/GetStatus, mTLS as admin) for\n"
    "its tunnels and the gateway connections serving them: gateway identity and\n"
    "id, connection id, remote address, open streams / maximum, age of the last\n"
    "heartbeat, draining. Each replica reports only its own connections: ask every\n"
    "replica for the whole picture. A tunnel without connections answers 503 to\n"
    "agents. --json prints the response as one JSON object.\n";

static void print_conn(const Airlock__V1__GatewayConnection *g, int64_t now)
{
    char age[32], streams[32];

    if (g->last_heartbeat_ms > 0)
        ctl_fmt_dur(now > g->last_heartbeat_ms ? now - g->last_heartbeat_ms : 0, age, sizeof(age));
    else
        snprintf(age, sizeof(age), "never");
    snprintf(streams, sizeof(streams), "%d/%d", g->open_streams, g->max_concurrent_streams);
    printf("  %-36s %-16s %-10s %-21s %-11s %-10s %s\n", g->gateway_identity, g->gateway_id,
           g->connection_id, g->remote_address, streams, age, g->draining ? "yes" : "no");
}

static void print_status(const Airlock__V1__GetTunnelStatusResponse *s)
{
    char t[32];

    printf("relay %s (version %s) at %s\n", s->relay_id, s->relay_version,
           ctl_fmt_time(s->time_ms, t, sizeof(t)));
    if (!s->n_tunnels)
        printf("(no tunnels configured)\n");
    for (size_t i = 0; i < s->n_tunnels; i++) {
        const Airlock__V1__TunnelState *ts = s->tunnels[i];
        printf("\ntunnel %s: %zu connection%s, %d open stream%s, %lld requests, %lld "
               "unroutable\n",
               ts->tunnel, ts->n_connections, ts->n_connections == 1 ? "" : "s", ts->open_streams,
               ts->open_streams == 1 ? "" : "s", (long long)ts->requests_total,
               (long long)ts->unroutable_total);
        if (!ts->n_connections) {
            printf("  (no gateway connected: agents get 503)\n");
            continue;
        }
        printf("  %-36s %-16s %-10s %-21s %-11s %-10s %s\n", "GATEWAY IDENTITY", "GATEWAY ID",
               "CONNECTION", "REMOTE", "STREAMS", "HEARTBEAT", "DRAINING");
        for (size_t j = 0; j < ts->n_connections; j++)
            print_conn(ts->connections[j], s->time_ms);
    }
}

static int tunnel_status(int argc, char **argv)
{
    static const struct option lo[] = {CTL_RPC_LONGOPTS,
                                       {"tunnel", required_argument, NULL, OPT_TUNNEL},
                                       {"json", no_argument, NULL, OPT_JSON},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    Airlock__V1__GetTunnelStatusRequest req = AIRLOCK__V1__GET_TUNNEL_STATUS_REQUEST__INIT;
    struct ctl_rpc_opts o;
    struct ctl_rpc *r = NULL;
    ProtobufCMessage *resp = NULL;
    int c, rc, json = 0;

    ctl_rpc_opts_init(&o, "tunnel status", "admin/admin", 10);
    o.service = "relay";
    o.addr_env = RELAY_ADDR_ENV;
    o.addr_default = RELAY_ADDR_DEFAULT;
    optind = 0;
    while ((c = ctl_getopt(o.what, argc, argv, ":h", lo)) != -1) {
        if (c == '?')
            return CTL_EXIT_USAGE;
        if (c == 'h') {
            fputs(status_help, stdout);
            ctl_rpc_help(&o);
            return CTL_EXIT_OK;
        }
        if ((rc = ctl_rpc_opt(&o, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
        } else if (c == OPT_TUNNEL) {
            req.tunnel = optarg;
        } else if (c == OPT_JSON) {
            json = 1;
        }
    }
    if (optind < argc)
        return ctl_usage_error(o.what, "unexpected argument '%s'", argv[optind]);
    if ((rc = ctl_rpc_open(&o, RELAY_PEER, &r)) != 0)
        return rc;
    rc = ctl_rpc_call(r, STATUS_PATH, &req.base,
                      &airlock__v1__get_tunnel_status_response__descriptor, &resp, NULL, NULL);
    if (rc == 0 && json)
        rc = ctl_print_json(resp, 1);
    else if (rc == 0)
        print_status((const Airlock__V1__GetTunnelStatusResponse *)resp);
    ctl_rpc_free_resp(resp);
    ctl_rpc_close(r);
    return rc;
}

int ctl_tunnel(int argc, char **argv)
{
    static const struct ctl_sub subs[] = {
        {"status", "[--addr HOST:PORT] [--tunnel T] [--json]",
         "tunnels, gateway connections and open streams of a relay", tunnel_status},
    };

    return ctl_dispatch("tunnel", subs, sizeof subs / sizeof subs[0], argc, argv);
}
