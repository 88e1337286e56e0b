/*
 * airlockctl main: the command table, top-level --help and the helpers every
 * command shares (subcommand dispatch, usage errors, home directory, mkdir -p).
 */
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "al_err.h"
#include "al_log.h"
#include "ctl.h"

struct ctl_cmd {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
};

static const struct ctl_cmd cmds[] = {
    {"certs", "development PKI: CA and service identities", ctl_certs},
    {"keys", "grant signing keys and credstore master keys", ctl_keys_all},
    {"health", "check a service with grpc.health.v1 (mTLS or h2c)", ctl_health},
    {"cred", "credentials in airlock-credstore: put, bind, rotate, rm, ls, show", ctl_cred},
    {"audit", "credstore audit chain: tail, verify", ctl_audit},
    {"backup", "online backup of a credstore database", ctl_backup},
    {"issuers", "credstore trusted grant issuers and their scopes: ls, entry", ctl_issuers},
    {"run", "run a command in a sandbox through airlock-intake, output streamed live", ctl_run},
    {"jobs", "jobs in airlock-intake: ls, get, watch, cancel", ctl_jobs},
    {"files", "files in a session's sandbox workspace: get, put, ls", ctl_files},
    {"grants", "mint test grants (development tool)", ctl_grants},
    {"relay", "airlock-relay agent API keys: keys create, revoke, ls", ctl_relay},
    {"tunnel", "a relay's tunnels, gateway connections and open streams: status", ctl_tunnel},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: airlockctl <command> <subcommand> [flags] [args]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].summary);
    fprintf(f, "\n'airlockctl <command> --help' lists a command's subcommands.\n"
               "Files live under $AIRLOCK_HOME (default ~/.airlock).\n");
}

int ctl_is_help(const char *arg)
{
    return arg && (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0);
}

int ctl_usage_error(const char *what, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "airlockctl: %s: ", what);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'airlockctl %s --help'.\n", what);
    return CTL_EXIT_USAGE;
}

static void sub_usage(FILE *f, const char *cmd, const struct ctl_sub *subs, size_t n)
{
    fprintf(f, "usage: airlockctl %s <subcommand> [flags] [args]\n\nsubcommands:\n", cmd);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "  %s %s\n      %s\n", subs[i].name, subs[i].args, subs[i].summary);
    fprintf(f, "\n'airlockctl %s <subcommand> --help' for details.\n", cmd);
}

int ctl_dispatch(const char *cmd, const struct ctl_sub *subs, size_t n, int argc, char **argv)
{
    if (argc < 2) {
        sub_usage(stderr, cmd, subs, n);
        return CTL_EXIT_USAGE;
    }
    if (ctl_is_help(argv[1]) || strcmp(argv[1], "help") == 0) {
        sub_usage(stdout, cmd, subs, n);
        return CTL_EXIT_OK;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(argv[1], subs[i].name) == 0)
            return subs[i].run(argc - 1, argv + 1);
    }
    return ctl_usage_error(cmd, "unknown subcommand '%s'", argv[1]);
}

int ctl_home(char *buf, size_t n)
{
    const char *h = getenv("AIRLOCK_HOME"), *suffix = "";
    int w;

    if (!h || !*h) {
        const struct passwd *pw;
        h = getenv("HOME");
        if (!h || !*h) {
            pw = getpwuid(getuid());
            h = pw ? pw->pw_dir : NULL;
        }
        if (!h || !*h)
            return AL_ERR_NOTFOUND;
        suffix = "/.airlock";
    }
    w = snprintf(buf, n, "%s%s", h, suffix);
    return (w < 0 || (size_t)w >= n) ? AL_ERR_TOOBIG : 0;
}

int ctl_mkdirs(const char *path, mode_t mode)
{
    char p[PATH_MAX];
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof p)
        return -ENAMETOOLONG;
    memcpy(p, path, len + 1);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    if (mkdir(p, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int main(int argc, char **argv)
{
    al_log_set_service("airlockctl");
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep stdout and stderr lines in order when piped */
    if (argc < 2) {
        usage(stderr);
        return CTL_EXIT_USAGE;
    }
    if (ctl_is_help(argv[1]) || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return CTL_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "airlockctl: unknown command '%s'\nTry 'airlockctl --help'.\n", argv[1]);
    return CTL_EXIT_USAGE;
}
