/*
 * airlockctl health: calls grpc.health.v1.Health/Check on a service, over
 * mTLS (default: the admin identity from $AIRLOCK_HOME/pki) or h2c.
 *
 *   airlockctl health ADDR [--service NAME] [--insecure] [--timeout SECONDS]
 *                          [--identity ROLE/NAME] [--cert F --key F] [--ca F]
 *
 * Exit status: 0 SERVING, 1 anything else (printed), 2 usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"

#include "al_err.h"
#include "al_grpc.h"
#include "al_grpc_client.h"
#include "al_tls.h"
#include "ctl.h"

static const char *const status_text[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};

static void usage(FILE *f)
{
    fprintf(f, "usage: airlockctl health ADDR [--service NAME] [--insecure] [--timeout SECONDS]\n"
               "                            [--identity ROLE/NAME] [--cert FILE --key FILE] "
               "[--ca FILE]\n"
               "Calls grpc.health.v1.Health/Check at ADDR (host:port). By default over mTLS\n"
               "with the admin identity from $AIRLOCK_HOME/pki; --insecure uses h2c.\n"
               "Exit status 0 when SERVING.\n");
}

struct opts {
    const char *addr, *service, *identity, *cert, *key, *ca;
    int insecure;
    double timeout;
};

static int parse(int argc, char **argv, struct opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (ctl_is_help(a)) {
            usage(stdout);
            return 1;
        } else if (strcmp(a, "--insecure") == 0) {
            o->insecure = 1;
            continue;
        } else if (strcmp(a, "--service") == 0) {
            dst = &o->service;
        } else if (strcmp(a, "--identity") == 0) {
            dst = &o->identity;
        } else if (strcmp(a, "--cert") == 0) {
            dst = &o->cert;
        } else if (strcmp(a, "--key") == 0) {
            dst = &o->key;
        } else if (strcmp(a, "--ca") == 0) {
            dst = &o->ca;
        } else if (strcmp(a, "--timeout") == 0) {
            if (i + 1 >= argc || (o->timeout = atof(argv[++i])) <= 0)
                return ctl_usage_error("health", "--timeout needs a positive number of seconds");
            continue;
        } else if (a[0] == '-') {
            return ctl_usage_error("health", "unknown flag %s", a);
        } else if (!o->addr) {
            o->addr = a;
            continue;
        } else {
            return ctl_usage_error("health", "unexpected argument %s", a);
        }
        if (i + 1 >= argc)
            return ctl_usage_error("health", "%s needs a value", a);
        *dst = argv[++i];
    }
    if (!o->addr)
        return ctl_usage_error("health", "ADDR is required");
    if ((o->cert == NULL) != (o->key == NULL))
        return ctl_usage_error("health", "--cert and --key go together");
    return 0;
}

static int make_tls(const struct opts *o, struct al_tls **tls)
{
    char home[512], cert[700], key[700], ca[700], ident[128];
    if (ctl_home(home, sizeof(home)) < 0 && (!o->cert || !o->ca)) {
        fprintf(stderr, "airlockctl: health: no home directory; give --cert, --key and --ca\n");
        return CTL_EXIT_FAIL;
    }
    snprintf(ident, sizeof(ident), "%s", o->identity ? o->identity : "admin/admin");
    char *slash = strchr(ident, '/');
    if (!slash)
        return ctl_usage_error("health", "--identity must be ROLE/NAME");
    *slash = '-';
    snprintf(cert, sizeof(cert), "%s/pki/%s.crt", home, ident);
    snprintf(key, sizeof(key), "%s/pki/%s.key", home, ident);
    snprintf(ca, sizeof(ca), "%s/pki/ca.crt", home);
    struct al_tls_opts to = {.cert_file = o->cert ? o->cert : cert,
                             .key_file = o->key ? o->key : key,
                             .ca_file = o->ca ? o->ca : ca};
    if (al_tls_new(&to, tls) < 0) {
        fprintf(stderr, "airlockctl: health: cannot load TLS files (%s, %s, %s)\n", to.cert_file,
                to.key_file, to.ca_file);
        return CTL_EXIT_FAIL;
    }
    return 0;
}

int ctl_health(int argc, char **argv)
{
    struct opts o = {.service = "", .timeout = 5};
    struct al_tls *tls = NULL;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    char msg[512];
    int status = 0, rc;

    rc = parse(argc, argv, &o);
    if (rc)
        return rc == 1 ? CTL_EXIT_OK : rc;
    if (!o.insecure && (rc = make_tls(&o, &tls)) != 0)
        return rc;
    req.service = (char *)o.service;
    struct al_grpc_channel_opts co = {.target = o.addr, .tls = tls};
    rc = al_grpc_unary_sync(&co, "/grpc.health.v1.Health/Check", &req.base,
                            &grpc__health__v1__health_check_response__descriptor, NULL, 0,
                            o.timeout, &resp, &status, msg, sizeof(msg));
    al_tls_free(tls);
    if (rc < 0) {
        fprintf(stderr, "airlockctl: health: %s: %s\n", o.addr, al_strerror(rc));
        return CTL_EXIT_FAIL;
    }
    if (status != AL_GRPC_OK) {
        printf("%s %s: %s\n", o.addr, al_grpc_status_name(status), msg);
        return CTL_EXIT_FAIL;
    }
    int st = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
    printf("%s %s\n", o.addr, st >= 0 && st <= 3 ? status_text[st] : "UNKNOWN");
    protobuf_c_message_free_unpacked(resp, NULL);
    return st == 1 ? CTL_EXIT_OK : CTL_EXIT_FAIL;
}
