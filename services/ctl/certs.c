/*
 * airlockctl certs / keys: the development PKI and grant signing keys under
 * $AIRLOCK_HOME:
 *
 *   pki/ca.crt, pki/ca.key                 dev CA (key 0600)
 *   pki/<role>-<name>.crt, .key            identities spiffe://airlock/<role>/<name>
 *   keys/<name>.key, keys/<name>.pub       Ed25519 grant signing keys (key 0600)
 *
 * Every step is idempotent: existing files are kept (and checked) unless
 * --force is given, and each file's fate is printed on its own line.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "al_err.h"
#include "al_grant.h"
#include "al_pki.h"
#include "ctl.h"

#define MAX_IDENTS 64

struct ident {
    char role[AL_PKI_ROLE_MAX];
    char name[AL_PKI_NAME_MAX];
};

static const struct ident default_idents[] = {
    {"intake", "intake-0"},   {"credstore", "credstore-0"}, {"relay", "relay-0"},
    {"gateway", "gateway-0"}, {"executor", "executor-0"},   {"executor", "executor-1"},
    {"admin", "admin"},       {"client", "client"},         {"test", "testsvc"},
};

/* Grant signing keys made by "certs init", named after the issuing instance. */
static const char *const default_grant_keys[] = {"intake-0", "relay-0"};

/* admin and client identities only ever connect; every other role also serves. */
static unsigned role_flags(const char *role)
{
    return (strcmp(role, "admin") == 0 || strcmp(role, "client") == 0) ? 0 : AL_PKI_SERVER;
}

/* $AIRLOCK_HOME/<sub>, created 0700 when missing. Prints the failure. */
static int home_dir(const char *sub, char *buf, size_t n)
{
    char home[PATH_MAX];
    int rc, w;

    rc = ctl_home(home, sizeof home);
    if (rc < 0) {
        fprintf(stderr, "airlockctl: cannot find the home directory: %s\n", al_strerror(rc));
        return rc;
    }
    w = snprintf(buf, n, "%s/%s", home, sub);
    if (w < 0 || (size_t)w >= n) {
        fprintf(stderr, "airlockctl: path too long: %s/%s\n", home, sub);
        return AL_ERR_TOOBIG;
    }
    rc = ctl_mkdirs(buf, 0700);
    if (rc < 0)
        fprintf(stderr, "airlockctl: mkdir %s: %s\n", buf, al_strerror(rc));
    return rc;
}

/* Splits "role/name,role/name" into out; returns CTL_EXIT_OK or a usage error. */
static int parse_names(const char *what, const char *s, struct ident *out, size_t *n)
{
    char buf[1024], *save = NULL;

    if (strlen(s) >= sizeof buf)
        return ctl_usage_error(what, "--names list too long");
    snprintf(buf, sizeof buf, "%s", s);
    *n = 0;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *slash = strchr(tok, '/');
        if (!slash)
            return ctl_usage_error(what, "'%s' is not ROLE/NAME", tok);
        *slash = '\0';
        if (!al_pki_role_valid(tok))
            return ctl_usage_error(what,
                                   "unknown role '%s' (intake, executor, relay, "
                                   "gateway, credstore, admin, client, test)",
                                   tok);
        if (!al_pki_name_valid(slash + 1))
            return ctl_usage_error(what, "bad name '%s' (want [A-Za-z0-9._-]{1,64})", slash + 1);
        if (*n == MAX_IDENTS)
            return ctl_usage_error(what, "more than %d names", MAX_IDENTS);
        snprintf(out[*n].role, sizeof out[*n].role, "%s", tok);
        snprintf(out[*n].name, sizeof out[*n].name, "%s", slash + 1);
        (*n)++;
    }
    if (*n == 0)
        return ctl_usage_error(what, "--names is empty");
    return CTL_EXIT_OK;
}

/* ---- steps: each prints one line and returns 0 (fine) or 1 (problem) ---- */

/* Both CA files load and belong together; why gets the first problem. */
static int ca_usable(const char *pki, const char **why)
{
    char p[PATH_MAX];
    X509 *ca = NULL;
    EVP_PKEY *key = NULL;
    int rc;

    *why = "ca.crt unreadable";
    if (snprintf(p, sizeof p, "%s/ca.crt", pki) >= (int)sizeof p)
        return AL_ERR_TOOBIG;
    rc = al_pki_load_cert(p, &ca);
    if (rc == 0) {
        *why = "ca.key missing or unreadable";
        if (snprintf(p, sizeof p, "%s/ca.key", pki) >= (int)sizeof p)
            rc = AL_ERR_TOOBIG;
        else
            rc = al_pki_load_private_key(p, &key);
    }
    if (rc == 0 && X509_check_private_key(ca, key) != 1) {
        *why = "ca.key does not match ca.crt";
        rc = AL_ERR_CRYPTO;
    }
    X509_free(ca);
    EVP_PKEY_free(key);
    return rc;
}

static int step_ca(const char *pki, int force)
{
    const char *why = NULL;
    int rc = al_pki_create_ca(pki, force ? AL_PKI_OVERWRITE : 0);

    if (rc == 0) {
        printf("created  %s/ca.crt\n", pki);
        return 0;
    }
    if (rc == AL_ERR_EXISTS && ca_usable(pki, &why) == 0) {
        printf("kept     %s/ca.crt (exists; --force replaces it and every identity)\n", pki);
        return 0;
    }
    if (rc == AL_ERR_EXISTS)
        fprintf(stderr, "BROKEN   %s/ca.crt: %s; recreate everything with --force\n", pki, why);
    else
        fprintf(stderr, "failed   %s/ca.crt: %s\n", pki, al_strerror(rc));
    return 1;
}

static int step_leaf_sans(const char *pki, const struct ident *id, int force, unsigned flags,
                          const char *const *sans)
{
    char why[128];
    int rc =
        al_pki_issue_sans(pki, id->role, id->name, flags | (force ? AL_PKI_OVERWRITE : 0), sans);

    if (rc == 0) {
        printf("created  %s/%s-%s.crt (spiffe://airlock/%s/%s)\n", pki, id->role, id->name,
               id->role, id->name);
        return 0;
    }
    if (rc == AL_ERR_NOTFOUND) {
        fprintf(stderr, "failed   %s/%s-%s.crt: no usable CA in %s (see 'airlockctl certs init')\n",
                pki, id->role, id->name, pki);
        return 1;
    }
    if (rc == AL_ERR_INVAL && sans && sans[0]) {
        fprintf(stderr,
                "failed   %s/%s-%s.crt: a --dns value is not a DNS host name or an --ip "
                "value not an IPv4/IPv6 address\n",
                pki, id->role, id->name);
        return 1;
    }
    if (rc != AL_ERR_EXISTS) {
        fprintf(stderr, "failed   %s/%s-%s.crt: %s\n", pki, id->role, id->name, al_strerror(rc));
        return 1;
    }
    rc = al_pki_check(pki, id->role, id->name, why, sizeof why);
    if (rc == 0) {
        printf("kept     %s/%s-%s.crt (exists)\n", pki, id->role, id->name);
        return 0;
    }
    fprintf(stderr, "STALE    %s/%s-%s.crt: %s; reissue with --force\n", pki, id->role, id->name,
            why);
    return 1;
}

static int step_leaf(const char *pki, const struct ident *id, int force, unsigned flags)
{
    return step_leaf_sans(pki, id, force, flags, NULL);
}

static int pub_key_id(const char *pub, char *id, size_t n)
{
    EVP_PKEY *pk = NULL;
    int rc = al_pki_load_public_key(pub, &pk);

    if (rc == 0)
        rc = al_grant_key_id(pk, id, n);
    EVP_PKEY_free(pk);
    return rc;
}

/* Writes <base>.key and <base>.pub. */
static int step_grant_key(const char *base, int force)
{
    char priv[PATH_MAX], pub[PATH_MAX], id[AL_GRANT_KEY_ID_MAX];
    int rc;

    if (snprintf(priv, sizeof priv, "%s.key", base) >= (int)sizeof priv ||
        snprintf(pub, sizeof pub, "%s.pub", base) >= (int)sizeof pub) {
        fprintf(stderr, "failed   %s.key: path too long\n", base);
        return 1;
    }
    rc = al_grant_key_generate(priv, pub, force ? AL_GRANT_KEY_OVERWRITE : 0, id, sizeof id);
    if (rc == 0) {
        printf("created  %s (key id %s)\n", priv, id);
        return 0;
    }
    if (rc == AL_ERR_EXISTS) {
        rc = pub_key_id(pub, id, sizeof id);
        if (rc == 0) {
            printf("kept     %s (exists; key id %s)\n", priv, id);
            return 0;
        }
        fprintf(stderr, "failed   %s: exists but %s is unusable: %s\n", priv, pub, al_strerror(rc));
        return 1;
    }
    fprintf(stderr, "failed   %s: %s\n", priv, al_strerror(rc));
    return 1;
}

/* ---- certs init ---- */

static const char init_help[] =
    "usage: airlockctl certs init [--force] [--names ROLE/NAME,...]\n"
    "\n"
    "Creates the development PKI in $AIRLOCK_HOME/pki (default ~/.airlock/pki): an\n"
    "ECDSA P-256 CA and one identity spiffe://airlock/ROLE/NAME per name, plus the\n"
    "Ed25519 grant signing keys $AIRLOCK_HOME/keys/{intake-0,relay-0}.{key,pub}.\n"
    "Existing files are kept and checked against the CA.\n"
    "\n"
    "  --force         replace existing files (a new CA invalidates every identity)\n"
    "  --names LIST    issue these identities instead of the defaults:\n"
    "                  intake/intake-0, credstore/credstore-0, relay/relay-0,\n"
    "                  gateway/gateway-0, executor/executor-0, executor/executor-1,\n"
    "                  admin/admin, client/client, test/testsvc\n";

static int certs_init(int argc, char **argv)
{
    static const struct option lo[] = {{"force", no_argument, NULL, 'f'},
                                       {"names", required_argument, NULL, 'n'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    static struct ident ids[MAX_IDENTS];
    char pki[PATH_MAX], keys[PATH_MAX], base[PATH_MAX];
    size_t n = sizeof default_idents / sizeof default_idents[0];
    int c, force = 0, bad = 0, rc;

    memcpy(ids, default_idents, sizeof default_idents);
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":fhn:", lo, NULL)) != -1) {
        if (c == 'h') {
            fputs(init_help, stdout);
            return CTL_EXIT_OK;
        } else if (c == 'f') {
            force = 1;
        } else if (c == 'n') {
            rc = parse_names("certs init", optarg, ids, &n);
            if (rc != CTL_EXIT_OK)
                return rc;
        } else if (c == ':') {
            return ctl_usage_error("certs init", "%s needs a value", argv[optind - 1]);
        } else {
            return ctl_usage_error("certs init", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return ctl_usage_error("certs init", "unexpected argument '%s'", argv[optind]);
    if (home_dir("pki", pki, sizeof pki) < 0 || home_dir("keys", keys, sizeof keys) < 0)
        return CTL_EXIT_FAIL;
    bad |= step_ca(pki, force);
    for (size_t i = 0; i < n; i++)
        bad |= step_leaf(pki, &ids[i], force, role_flags(ids[i].role));
    for (size_t i = 0; i < sizeof default_grant_keys / sizeof default_grant_keys[0]; i++) {
        if (snprintf(base, sizeof base, "%s/%s", keys, default_grant_keys[i]) >= (int)sizeof base)
            bad = 1;
        else
            bad |= step_grant_key(base, force);
    }
    if (bad)
        fprintf(stderr, "airlockctl: certs init: some files need attention (see above)\n");
    return bad ? CTL_EXIT_FAIL : CTL_EXIT_OK;
}

/* ---- certs issue ---- */

static const char issue_help[] =
    "usage: airlockctl certs issue ROLE NAME [--force] [--server | --client-only]\n"
    "                              [--dns NAME]... [--ip ADDRESS]...\n"
    "\n"
    "Issues $AIRLOCK_HOME/pki/ROLE-NAME.{crt,key} for spiffe://airlock/ROLE/NAME,\n"
    "signed by the CA made with 'airlockctl certs init'.\n"
    "ROLE is one of intake, executor, relay, gateway, credstore, admin, client, test;\n"
    "NAME matches [A-Za-z0-9._-]{1,64}.\n"
    "\n"
    "  --force         replace an existing identity\n"
    "  --server        also valid as a TLS server for localhost, 127.0.0.1, ::1\n"
    "                  (default for every role but admin and client)\n"
    "  --client-only   TLS client only (default for admin and client)\n"
    "  --dns NAME      also valid as a server for this DNS name (repeatable; e.g. a\n"
    "                  Kubernetes Service name other services dial)\n"
    "  --ip ADDRESS    also valid as a server for this IP address (repeatable)\n";

static int certs_issue(int argc, char **argv)
{
    static const struct option lo[] = {{"force", no_argument, NULL, 'f'},
                                       {"server", no_argument, NULL, 's'},
                                       {"client-only", no_argument, NULL, 'c'},
                                       {"dns", required_argument, NULL, 'd'},
                                       {"ip", required_argument, NULL, 'i'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    char pki[PATH_MAX], sanbuf[AL_PKI_SANS_MAX][264];
    const char *sans[AL_PKI_SANS_MAX + 1] = {NULL};
    struct ident id;
    int c, force = 0, server = -1, nsans = 0;

    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":fh", lo, NULL)) != -1) {
        if (c == 'h') {
            fputs(issue_help, stdout);
            return CTL_EXIT_OK;
        } else if (c == 'f') {
            force = 1;
        } else if (c == 's' || c == 'c') {
            server = c == 's';
        } else if (c == 'd' || c == 'i') {
            if (nsans == AL_PKI_SANS_MAX)
                return ctl_usage_error("certs issue", "at most %d --dns/--ip", AL_PKI_SANS_MAX);
            if (strlen(optarg) > 253)
                return ctl_usage_error("certs issue", "'%s' is too long", optarg);
            snprintf(sanbuf[nsans], sizeof sanbuf[nsans], "%s:%s", c == 'd' ? "DNS" : "IP", optarg);
            sans[nsans] = sanbuf[nsans];
            nsans++;
        } else if (c == ':') {
            return ctl_usage_error("certs issue", "'%s' needs a value", argv[optind - 1]);
        } else {
            return ctl_usage_error("certs issue", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 2)
        return ctl_usage_error("certs issue", "want ROLE NAME");
    if (!al_pki_role_valid(argv[optind]))
        return ctl_usage_error("certs issue", "unknown role '%s'", argv[optind]);
    if (!al_pki_name_valid(argv[optind + 1]))
        return ctl_usage_error("certs issue", "bad name '%s' (want [A-Za-z0-9._-]{1,64})",
                               argv[optind + 1]);
    snprintf(id.role, sizeof id.role, "%s", argv[optind]);
    snprintf(id.name, sizeof id.name, "%s", argv[optind + 1]);
    if (server < 0)
        server = role_flags(id.role) != 0 || nsans > 0;
    if (nsans > 0 && !server)
        return ctl_usage_error("certs issue",
                               "--dns and --ip name a server: not with --client-only");
    if (home_dir("pki", pki, sizeof pki) < 0)
        return CTL_EXIT_FAIL;
    return step_leaf_sans(pki, &id, force, server ? AL_PKI_SERVER : 0, sans) ? CTL_EXIT_FAIL
                                                                             : CTL_EXIT_OK;
}

int ctl_certs(int argc, char **argv)
{
    static const struct ctl_sub subs[] = {
        {"init", "[--force] [--names ROLE/NAME,...]", "create the dev CA, identities and keys",
         certs_init},
        {"issue", "ROLE NAME [--force] [--server|--client-only]", "issue one more identity",
         certs_issue},
    };

    return ctl_dispatch("certs", subs, sizeof subs / sizeof subs[0], argc, argv);
}

/* ---- keys ---- */

static const char gen_help[] =
    "usage: airlockctl keys gen-grant-key NAME|PATH [--force]\n"
    "\n"
    "Generates an Ed25519 grant signing key pair: PATH.key (PKCS#8 PEM, mode 0600)\n"
    "and PATH.pub, and prints its key id. A bare NAME (no '/') is written under\n"
    "$AIRLOCK_HOME/keys.\n"
    "\n"
    "  --force   replace existing files\n";

static const char id_help[] = "usage: airlockctl keys id PUBFILE\n"
                              "\n"
                              "Prints the default key id of an Ed25519 public key file (the\n"
                              "first 16 hex digits of SHA-256 over the raw key).\n";

/* Parses [--force] [--help] around exactly one operand; returns -1 when done, else an exit. */
static int one_operand(const char *what, const char *help, int argc, char **argv, int *force)
{
    static const struct option lo[] = {
        {"force", no_argument, NULL, 'f'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int c;

    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, force ? ":fh" : ":h", lo, NULL)) != -1) {
        if (c == 'h') {
            fputs(help, stdout);
            return CTL_EXIT_OK;
        }
        if (c != 'f' || !force)
            return ctl_usage_error(what, "unknown option '%s'", argv[optind - 1]);
        *force = 1;
    }
    if (argc - optind != 1)
        return ctl_usage_error(what, "want exactly one argument");
    return -1;
}

static int keys_gen(int argc, char **argv)
{
    char base[PATH_MAX];
    int force = 0, rc;
    const char *arg;

    rc = one_operand("keys gen-grant-key", gen_help, argc, argv, &force);
    if (rc >= 0)
        return rc;
    arg = argv[optind];
    if (strchr(arg, '/')) {
        snprintf(base, sizeof base, "%s", arg);
    } else {
        char dir[PATH_MAX];
        if (!al_pki_name_valid(arg))
            return ctl_usage_error("keys gen-grant-key", "bad name '%s'", arg);
        if (home_dir("keys", dir, sizeof dir) < 0)
            return CTL_EXIT_FAIL;
        if (snprintf(base, sizeof base, "%s/%s", dir, arg) >= (int)sizeof base) {
            fprintf(stderr, "airlockctl: keys gen-grant-key: path too long\n");
            return CTL_EXIT_FAIL;
        }
    }
    return step_grant_key(base, force) ? CTL_EXIT_FAIL : CTL_EXIT_OK;
}

static int keys_id(int argc, char **argv)
{
    char id[AL_GRANT_KEY_ID_MAX];
    int rc;

    rc = one_operand("keys id", id_help, argc, argv, NULL);
    if (rc >= 0)
        return rc;
    rc = pub_key_id(argv[optind], id, sizeof id);
    if (rc < 0) {
        fprintf(stderr, "airlockctl: keys id: %s: %s\n", argv[optind], al_strerror(rc));
        return CTL_EXIT_FAIL;
    }
    printf("%s\n", id);
    return CTL_EXIT_OK;
}

int ctl_keys(int argc, char **argv)
{
    static const struct ctl_sub subs[] = {
        {"gen-grant-key", "NAME|PATH [--force]", "generate an Ed25519 grant signing key pair",
         keys_gen},
        {"id", "PUBFILE", "print the key id of a grant public key", keys_id},
    };

    return ctl_dispatch("keys", subs, sizeof subs / sizeof subs[0], argc, argv);
}
