/*
 * airlockctl issuers: the credential store's trusted grant issuers and their
 * scopes. Issuers live in the credstore configuration (an operator decision,
 * reviewed like any config change, never writable through an API); these
 * commands read and check that configuration and write new entries for it.
 *
 *   issuers ls --config FILE      every issuer: key id, identity, key file, scope
 *   issuers entry --issuer ID --public-key PUB [--principal G]... [--pool G]...
 *                 [--route G]... [--credential G]...
 *                                 prints a config entry with the derived key id
 *
 * "ls" loads the file exactly as airlock-credstore does (same schema, same
 * errors) and builds the keyring, so a key that does not load fails here too.
 */
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "al_err.h"
#include "al_grant.h"
#include "al_pki.h"
#include "csconfig.h"
#include "ctl.h"

#define MAX_GLOBS 64

static void print_globs(const char *label, char *const *v, size_t n)
{
    printf("    %-12s", label);
    if (!n)
        printf(" (none)");
    for (size_t i = 0; i < n; i++)
        printf(" %s", v[i]);
    printf("\n");
}

static const char ls_help[] =
    "usage: airlockctl issuers ls --config FILE\n"
    "\n"
    "Loads the credstore configuration FILE as airlock-credstore does, loads every\n"
    "issuer's public key and prints, per trusted issuer: the key id grants must\n"
    "name, the issuer identity pattern, the key file, and the scope: which\n"
    "principals, pools (intake grants), routes (relay grants) and credentials it\n"
    "may assert. A grant is honoured only inside the intersection of this scope\n"
    "and the credential's own binding policy. Exit status 1 if the file or a key\n"
    "does not load.\n";

static int issuers_ls(int argc, char **argv)
{
    static const struct option lo[] = {{"config", required_argument, NULL, 'c'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    struct cs_config cfg;
    struct al_grant_keyring *kr = NULL;
    struct cs_issuer_scope *scopes = NULL;
    const struct al_cfg_field *fields;
    const char *file = NULL;
    char err[512];
    size_t nf;
    int c, rc;

    optind = 0;
    while ((c = getopt_long(argc, argv, "+:h", lo, NULL)) != -1) {
        if (c == 'h') {
            fputs(ls_help, stdout);
            return CTL_EXIT_OK;
        } else if (c == 'c') {
            file = optarg;
        } else {
            return ctl_usage_error("issuers ls", "unknown or incomplete option");
        }
    }
    if (optind < argc)
        return ctl_usage_error("issuers ls", "unexpected argument '%s'", argv[optind]);
    if (!file)
        return ctl_usage_error("issuers ls", "--config FILE is required");
    memset(&cfg, 0, sizeof(cfg));
    fields = cs_config_fields(&nf);
    /* --insecure: listing needs the issuers only, not the service's TLS files */
    char *av[] = {(char *)"airlock-credstore", (char *)"--config", (char *)file,
                  (char *)"--insecure=true", NULL};
    rc = al_service_load_config("airlock-credstore", "", &cfg, offsetof(struct cs_config, common),
                                fields, nf, 4, av);
    if (rc != 0)
        return CTL_EXIT_FAIL; /* the reason is printed, file:line: key: reason */
    rc = cs_config_build(&cfg, &kr, &scopes, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "airlockctl: issuers ls: %s: %s\n", file, err);
        al_service_free_config(&cfg, offsetof(struct cs_config, common), fields, nf);
        return CTL_EXIT_FAIL;
    }
    if (!cfg.issuers.n)
        printf("no trusted issuers: every Resolve will be denied\n");
    for (size_t i = 0; i < cfg.issuers.n; i++) {
        const struct cs_issuer_cfg *is = &cfg.issuers.v[i];
        printf("issuer %s\n    %-12s %s\n    %-12s %s\n", is->issuer, "key id", scopes[i].key_id,
               "public key", is->public_key_file);
        print_globs("principals", is->principals, is->n_principals);
        print_globs("pools", is->pools, is->n_pools);
        print_globs("routes", is->routes, is->n_routes);
        print_globs("credentials", is->credentials, is->n_credentials);
    }
    cs_config_free_built(kr, scopes);
    al_service_free_config(&cfg, offsetof(struct cs_config, common), fields, nf);
    return CTL_EXIT_OK;
}

static const char entry_help[] =
    "usage: airlockctl issuers entry --issuer ID --public-key PUB [--principal GLOB]...\n"
    "                                [--pool GLOB]... [--route GLOB]... [--credential GLOB]...\n"
    "\n"
    "Prints an entry for the 'issuers' list of the credstore configuration: the\n"
    "issuer identity (spiffe://airlock/intake/NAME, or .../intake/* for any intake\n"
    "replica sharing the key), its Ed25519 public key file (airlockctl keys\n"
    "gen-grant-key writes one), the key id derived from it, and what it may\n"
    "assert. Globs: '*' matches within one path segment, '**' across segments. A\n"
    "list left out is empty: the issuer may assert nothing of that kind (intake\n"
    "grants need pools, relay grants need routes). Paste the entry into the file,\n"
    "check it with 'airlockctl issuers ls --config FILE' and reload the credstore\n"
    "(SIGHUP reloads certificates; issuer changes take a restart).\n";

static void print_list(const char *key, char **v, size_t n)
{
    printf("    %s = [", key);
    for (size_t i = 0; i < n; i++)
        printf("%s\"%s\"", i ? ", " : "", v[i]);
    printf("];\n");
}

static int valid_glob(const char *s)
{
    if (!*s || strlen(s) > 256)
        return 0;
    for (; *s; s++) {
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
            return 0;
    }
    return 1;
}

static int issuers_entry(int argc, char **argv)
{
    static const struct option lo[] = {{"issuer", required_argument, NULL, 'i'},
                                       {"public-key", required_argument, NULL, 'k'},
                                       {"principal", required_argument, NULL, 'P'},
                                       {"pool", required_argument, NULL, 'p'},
                                       {"route", required_argument, NULL, 'r'},
                                       {"credential", required_argument, NULL, 'c'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    char *lists[4][MAX_GLOBS];
    size_t nl[4] = {0};
    const char *issuer = NULL, *pub = NULL;
    char kid[AL_GRANT_KEY_ID_MAX];
    EVP_PKEY *pk = NULL;
    int c, rc, li;

    optind = 0;
    while ((c = getopt_long(argc, argv, "+:h", lo, NULL)) != -1) {
        li = -1;
        switch (c) {
        case 'h':
            fputs(entry_help, stdout);
            return CTL_EXIT_OK;
        case 'i':
            issuer = optarg;
            break;
        case 'k':
            pub = optarg;
            break;
        case 'P':
            li = 0;
            break;
        case 'p':
            li = 1;
            break;
        case 'r':
            li = 2;
            break;
        case 'c':
            li = 3;
            break;
        default:
            return ctl_usage_error("issuers entry", "unknown or incomplete option");
        }
        if (li < 0)
            continue;
        if (!valid_glob(optarg))
            return ctl_usage_error("issuers entry", "'%s' is not a valid pattern", optarg);
        if (nl[li] == MAX_GLOBS)
            return ctl_usage_error("issuers entry", "at most %d patterns per list", MAX_GLOBS);
        lists[li][nl[li]++] = optarg;
    }
    if (optind < argc)
        return ctl_usage_error("issuers entry", "unexpected argument '%s'", argv[optind]);
    if (!issuer || !pub)
        return ctl_usage_error("issuers entry", "--issuer and --public-key are required");
    if (!valid_glob(issuer) || strncmp(issuer, "spiffe://airlock/", 17) != 0)
        return ctl_usage_error("issuers entry", "--issuer must be spiffe://airlock/ROLE/NAME");
    rc = al_pki_load_public_key(pub, &pk);
    if (rc < 0 || EVP_PKEY_id(pk) != EVP_PKEY_ED25519) {
        fprintf(stderr, "airlockctl: issuers entry: %s: not an Ed25519 public key (PEM)\n", pub);
        EVP_PKEY_free(pk);
        return CTL_EXIT_FAIL;
    }
    rc = al_grant_key_id(pk, kid, sizeof(kid));
    EVP_PKEY_free(pk);
    if (rc < 0) {
        fprintf(stderr, "airlockctl: issuers entry: key id: %s\n", al_strerror(rc));
        return CTL_EXIT_FAIL;
    }
    printf("  {\n    key_id = \"%s\";\n    issuer = \"%s\";\n    public_key_file = \"%s\";\n", kid,
           issuer, pub);
    print_list("principals", lists[0], nl[0]);
    print_list("pools", lists[1], nl[1]);
    print_list("routes", lists[2], nl[2]);
    print_list("credentials", lists[3], nl[3]);
    printf("  }\n");
    return CTL_EXIT_OK;
}

int ctl_issuers(int argc, char **argv)
{
    static const struct ctl_sub subs[] = {
        {"ls", "--config FILE", "list trusted issuers, their key ids and scopes", issuers_ls},
        {"entry", "--issuer ID --public-key PUB [--principal G]... [--pool G]...",
         "print a config entry for a new trusted issuer", issuers_entry},
    };

    return ctl_dispatch("issuers", subs, sizeof subs / sizeof subs[0], argc, argv);
}
