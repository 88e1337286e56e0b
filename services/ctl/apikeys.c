/*
 * airlockctl keys create / revoke / ls: API keys of airlock-intake, managed
 * directly in intake's database (<data-dir>/intake.db; SQLite WAL, safe while
 * intake runs). intake looks keys up per call through a cache of
 * api_keys.cache_ttl (default 5s): a new key works, and a revoked or expired
 * one stops working, within that time, without a restart.
 *
 *   keys create --data-dir D --principal NAME --scopes submit,read,cancel
 *               [--expires 30d] [--description TEXT]
 *        prints the key once, on stdout (nothing else goes to stdout); only
 *        its SHA-256 is stored
 *   keys revoke --data-dir D KEYID
 *   keys ls --data-dir D        ids, principals, scopes, times; never a secret
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "al_err.h"
#include "apikey.h"
#include "ctl.h"
#include "instore.h"
#include "inutil.h"

static const char create_help[] =
    "usage: airlockctl keys create --data-dir DIR --principal NAME --scopes LIST\n"
    "                              [--expires DURATION] [--description TEXT]\n"
    "\n"
    "Creates an API key for airlock-intake in DIR/intake.db (the intake's data_dir;\n"
    "created if missing). The key is printed once, on stdout, and never again: only\n"
    "its SHA-256 is stored. Give it to the agent platform as\n"
    "  authorization: Bearer <key>\n"
    "\n"
    "  --principal NAME   the tenant the key acts for: 1-128 characters of\n"
    "                     [A-Za-z0-9._-] in \"/\"-separated segments (e.g. acme/agent-1)\n"
    "  --scopes LIST      comma-separated: submit, read, cancel (or jobs.submit, ...)\n"
    "  --expires D        lifetime: 30d, 12h, 90m, 3600s, 2w; default: no expiry\n"
    "  --description T    a note shown by 'keys ls' (at most 256 bytes)\n"
    "\n"
    "intake sees the key within api_keys.cache_ttl (default 5s).\n";

static const char revoke_help[] =
    "usage: airlockctl keys revoke --data-dir DIR KEYID\n"
    "\n"
    "Revokes an intake API key (KEYID as shown by 'keys ls', ak_...). Calls with it\n"
    "fail UNAUTHENTICATED once intake's key cache has expired the entry\n"
    "(api_keys.cache_ttl, default 5s). Revoking twice keeps the first time.\n";

static const char ls_help[] =
    "usage: airlockctl keys ls --data-dir DIR\n"
    "\n"
    "Lists intake API keys: id, principal, scopes, created, expires, status and\n"
    "description. Secrets are never shown (they are not stored).\n";

/* "30d" / "12h" / "90m" / "3600s" / "2w" -> milliseconds. */
static int parse_lifetime(const char *s, int64_t *ms)
{
    char *end;
    long long v;
    int64_t unit;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || v <= 0 || !*end || end[1])
        return AL_ERR_INVAL;
    switch (*end) {
    case 's':
        unit = 1000;
        break;
    case 'm':
        unit = 60 * 1000;
        break;
    case 'h':
        unit = 3600 * 1000;
        break;
    case 'd':
        unit = 86400 * 1000LL;
        break;
    case 'w':
        unit = 7 * 86400 * 1000LL;
        break;
    default:
        return AL_ERR_INVAL;
    }
    if (v > INT64_MAX / unit / 2)
        return AL_ERR_INVAL;
    *ms = v * unit;
    return 0;
}

static void fmt_time(int64_t ms, char *buf, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (ms <= 0 || !gmtime_r(&t, &tm)) {
        snprintf(buf, n, "-");
        return;
    }
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int open_store(const char *cmd, const char *dir, int create, struct in_store **st)
{
    int rc = in_store_open(dir, create, st);
    if (rc == AL_ERR_NOTFOUND) {
        fprintf(stderr, "airlockctl: %s: no intake database in %s\n", cmd, dir);
        return CTL_EXIT_FAIL;
    }
    if (rc < 0) {
        fprintf(stderr, "airlockctl: %s: cannot open %s/%s: %s\n", cmd, dir, IN_STORE_DB_FILE,
                al_strerror(rc));
        return CTL_EXIT_FAIL;
    }
    return CTL_EXIT_OK;
}

struct create_args {
    const char *dir, *principal, *scopes, *expires, *description;
};

static int create_parse(int argc, char **argv, struct create_args *a)
{
    static const struct option lo[] = {{"data-dir", required_argument, NULL, 'd'},
                                       {"principal", required_argument, NULL, 'p'},
                                       {"scopes", required_argument, NULL, 's'},
                                       {"expires", required_argument, NULL, 'e'},
                                       {"description", required_argument, NULL, 'D'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    int c;

    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        switch (c) {
        case 'h':
            fputs(create_help, stdout);
            return -1;
        case 'd':
            a->dir = optarg;
            break;
        case 'p':
            a->principal = optarg;
            break;
        case 's':
            a->scopes = optarg;
            break;
        case 'e':
            a->expires = optarg;
            break;
        case 'D':
            a->description = optarg;
            break;
        case ':':
            return ctl_usage_error("keys create", "%s needs a value", argv[optind - 1]);
        default:
            return ctl_usage_error("keys create", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return ctl_usage_error("keys create", "unexpected argument '%s'", argv[optind]);
    if (!a->dir || !a->principal || !a->scopes)
        return ctl_usage_error("keys create", "--data-dir, --principal and --scopes are required");
    return 0;
}

int ctl_apikeys_create(int argc, char **argv)
{
    struct create_args a = {0};
    struct in_apikey_row row = {0};
    struct in_store *st = NULL;
    char key[IN_APIKEY_LEN + 1], scopes[64], exp[32];
    int64_t life = 0, now = in_now_ms();
    int rc;

    rc = create_parse(argc, argv, &a);
    if (rc != 0)
        return rc < 0 ? CTL_EXIT_OK : rc;
    if (!in_principal_valid(a.principal))
        return ctl_usage_error("keys create", "--principal: 1-128 characters of [A-Za-z0-9._-] in "
                                              "\"/\"-separated segments");
    if (in_apikey_scopes_parse(a.scopes, &row.scopes) < 0)
        return ctl_usage_error("keys create", "--scopes: a comma-separated list of submit, "
                                              "read, cancel");
    if (a.expires && parse_lifetime(a.expires, &life) < 0)
        return ctl_usage_error("keys create", "--expires: a duration such as 30d, 12h, 90m");
    if (a.description && strlen(a.description) > IN_REASON_MAX)
        return ctl_usage_error("keys create", "--description: at most %d bytes", IN_REASON_MAX);
    if ((rc = open_store("keys create", a.dir, 1, &st)) != CTL_EXIT_OK)
        return rc;
    snprintf(row.principal, sizeof(row.principal), "%s", a.principal);
    snprintf(row.description, sizeof(row.description), "%s", a.description ? a.description : "");
    row.created_ms = now;
    row.expires_ms = life ? now + life : 0;
    rc = in_apikey_generate(row.id, key, row.hash);
    if (rc == 0)
        rc = in_store_apikey_put(st, &row);
    in_store_close(st);
    if (rc < 0) {
        OPENSSL_cleanse(key, sizeof(key));
        fprintf(stderr, "airlockctl: keys create: %s\n", al_strerror(rc));
        return CTL_EXIT_FAIL;
    }
    in_apikey_scopes_format(row.scopes, scopes, sizeof(scopes));
    fmt_time(row.expires_ms, exp, sizeof(exp));
    fprintf(stderr,
            "created API key %s for principal %s (scopes %s, expires %s); it is shown "
            "once, below\n",
            row.id, row.principal, scopes, row.expires_ms ? exp : "never");
    printf("%s\n", key);
    fflush(stdout);
    OPENSSL_cleanse(key, sizeof(key));
    return CTL_EXIT_OK;
}

/* Parses "--data-dir DIR [ARG]"; *arg gets the positional argument if want_arg. */
static int dir_args(const char *cmd, const char *help, int argc, char **argv, const char **dir,
                    const char **arg)
{
    static const struct option lo[] = {{"data-dir", required_argument, NULL, 'd'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    int c;

    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        if (c == 'h') {
            fputs(help, stdout);
            return -1;
        } else if (c == 'd') {
            *dir = optarg;
        } else if (c == ':') {
            return ctl_usage_error(cmd, "%s needs a value", argv[optind - 1]);
        } else {
            return ctl_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!*dir)
        return ctl_usage_error(cmd, "--data-dir is required");
    if (arg) {
        if (optind + 1 != argc)
            return ctl_usage_error(cmd, "exactly one KEYID is needed");
        *arg = argv[optind];
    } else if (optind < argc) {
        return ctl_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    }
    return 0;
}

int ctl_apikeys_revoke(int argc, char **argv)
{
    const char *dir = NULL, *id = NULL;
    struct in_store *st = NULL;
    int rc = dir_args("keys revoke", revoke_help, argc, argv, &dir, &id);

    if (rc != 0)
        return rc < 0 ? CTL_EXIT_OK : rc;
    if (!in_apikey_id_valid(id))
        return ctl_usage_error("keys revoke", "'%s' is not an API key id (ak_ and 16 hex digits)",
                               id);
    if ((rc = open_store("keys revoke", dir, 0, &st)) != CTL_EXIT_OK)
        return rc;
    rc = in_store_apikey_revoke(st, id, in_now_ms());
    in_store_close(st);
    if (rc == AL_ERR_NOTFOUND) {
        fprintf(stderr, "airlockctl: keys revoke: no API key %s\n", id);
        return CTL_EXIT_FAIL;
    }
    if (rc < 0) {
        fprintf(stderr, "airlockctl: keys revoke: %s\n", al_strerror(rc));
        return CTL_EXIT_FAIL;
    }
    printf("revoked %s\n", id);
    return CTL_EXIT_OK;
}

static int print_key(void *user, const struct in_apikey_row *r)
{
    int64_t now = *(const int64_t *)user;
    char scopes[64], created[32], expires[32];
    const char *status = r->revoked_ms                           ? "revoked"
                         : r->expires_ms && now >= r->expires_ms ? "expired"
                                                                 : "active";
    in_apikey_scopes_format(r->scopes, scopes, sizeof(scopes));
    fmt_time(r->created_ms, created, sizeof(created));
    fmt_time(r->expires_ms, expires, sizeof(expires));
    printf("%-19s  %-24s  %-35s  %-20s  %-20s  %-7s  %s\n", r->id, r->principal, scopes, created,
           r->expires_ms ? expires : "never", status, r->description);
    return 0;
}

int ctl_apikeys_ls(int argc, char **argv)
{
    const char *dir = NULL;
    struct in_store *st = NULL;
    int64_t now = in_now_ms();
    int rc = dir_args("keys ls", ls_help, argc, argv, &dir, NULL);

    if (rc != 0)
        return rc < 0 ? CTL_EXIT_OK : rc;
    if ((rc = open_store("keys ls", dir, 0, &st)) != CTL_EXIT_OK)
        return rc;
    printf("%-19s  %-24s  %-35s  %-20s  %-20s  %-7s  %s\n", "ID", "PRINCIPAL", "SCOPES", "CREATED",
           "EXPIRES", "STATUS", "DESCRIPTION");
    rc = in_store_apikey_list(st, print_key, &now);
    in_store_close(st);
    if (rc < 0) {
        fprintf(stderr, "airlockctl: keys ls: %s\n", al_strerror(rc));
        return CTL_EXIT_FAIL;
    }
    return CTL_EXIT_OK;
}
