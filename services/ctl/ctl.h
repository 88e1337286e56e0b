/*
 * airlockctl: the operator command line.
 *
 *   airlockctl <command> <subcommand> [flags] [args]
 *
 * main.c owns the command table and the helpers below; each command lives in
 * its own file (certs.c: "certs" and "keys") and gets argv starting at its own
 * name. Every command and subcommand answers --help. Exit codes: 0 success,
 * 1 the operation failed, 2 usage error (message on stderr).
 */
#ifndef AL_CTL_H
#define AL_CTL_H

#include <stddef.h>
#include <sys/types.h>

#define CTL_EXIT_OK    0
#define CTL_EXIT_FAIL  1
#define CTL_EXIT_USAGE 2

/* One subcommand: run gets argv[0] == name. */
struct ctl_sub {
    const char *name;
    const char *args;    /* synopsis after the name, e.g. "ROLE NAME [--force]" */
    const char *summary; /* one line for the command's --help */
    int (*run)(int argc, char **argv);
};

/* Commands: argv[0] is the command name; return a CTL_EXIT_* code. */
int ctl_certs(int argc, char **argv);
int ctl_keys(int argc, char **argv);
int ctl_health(int argc, char **argv); /* services/ctl/health.c */
int ctl_cred(int argc, char **argv);   /* services/ctl/cred.c */
int ctl_audit(int argc, char **argv);  /* services/ctl/audit.c */
int ctl_backup(int argc, char **argv); /* services/ctl/master.c */
int ctl_grants(int argc, char **argv); /* services/ctl/grants.c */
int ctl_issuers(int argc, char **argv); /* services/ctl/issuers.c */
int ctl_run(int argc, char **argv);     /* services/ctl/jobs.c */
int ctl_jobs(int argc, char **argv);    /* services/ctl/jobs.c */
int ctl_files(int argc, char **argv);   /* services/ctl/jobs.c */
int ctl_relay(int argc, char **argv);   /* services/ctl/relay.c */
int ctl_tunnel(int argc, char **argv);  /* services/ctl/relay.c */
/* services/ctl/master.c: "keys" = ctl_keys's subcommands plus gen-master and rotate-master */
int ctl_keys_all(int argc, char **argv);
int ctl_keys_gen_master(int argc, char **argv);    /* argv[0] == "gen-master" */
int ctl_keys_rotate_master(int argc, char **argv); /* argv[0] == "rotate-master" */

/*
 * Runs the subcommand of cmd named by argv[1] from subs[0..n). Handles a
 * missing or unknown subcommand (usage error) and "cmd --help" (lists subs).
 */
int ctl_dispatch(const char *cmd, const struct ctl_sub *subs, size_t n, int argc, char **argv);

/* Prints "airlockctl: <what>: <message>" and a --help hint to stderr; returns CTL_EXIT_USAGE. */
int ctl_usage_error(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Returns 1 if arg is "-h" or "--help". */
int ctl_is_help(const char *arg);

/*
 * Writes the Airlock home directory into buf (size n): $AIRLOCK_HOME if set
 * and non-empty, else $HOME/.airlock (home from the password database when
 * $HOME is unset). Returns 0, AL_ERR_TOOBIG or AL_ERR_NOTFOUND (no home).
 */
int ctl_home(char *buf, size_t n);

/* mkdir -p: creates path and missing parents with mode (existing ones are left
 * alone). Returns 0 or -errno. */
int ctl_mkdirs(const char *path, mode_t mode);

#endif
