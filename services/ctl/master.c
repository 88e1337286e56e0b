/*
 * airlockctl keys gen-master / keys rotate-master / backup: the credential
 * store's master key and database, handled locally (no RPC) through the
 * credstore library (crypto.h, store.h).
 *
 *   keys gen-master PATH                    new master key file, 0600, never overwritten
 *   keys rotate-master --data-dir D --old F --new F
 *                                           re-wrap every data key under the new key
 *   backup --data-dir D --master F [--previous F]... DEST
 *                                           online, consistent copy of credstore.db
 *
 * "keys" also serves ctl_keys's subcommands (certs.c), so one command lists
 * every kind of key. Key material only passes through the library's locked
 * memory; nothing here prints or logs it.
 */
#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "airlock/v1/credstore.pb-c.h"
#include "al_err.h"
#include "crypto.h"
#include "ctl.h"
#include "ctlrpc.h"
#include "store.h"

#define MAX_PREVIOUS 8

/* ---------- keys (with certs.c's subcommands) ---------- */

/* Runs certs.c's "keys" with argv[0] as its subcommand. */
static int keys_fwd(int argc, char **argv)
{
    char **av = calloc((size_t)argc + 2, sizeof(*av));
    int rc;

    if (!av) {
        fprintf(stderr, "airlockctl: keys: out of memory\n");
        return CTL_EXIT_FAIL;
    }
    av[0] = (char *)"keys";
    memcpy(av + 1, argv, (size_t)argc * sizeof(*av));
    rc = ctl_keys(argc + 1, av);
    free(av);
    return rc;
}

/* services/ctl/apikeys.c: intake API keys */
int ctl_apikeys_create(int argc, char **argv);
int ctl_apikeys_revoke(int argc, char **argv);
int ctl_apikeys_ls(int argc, char **argv);

int ctl_keys_all(int argc, char **argv)
{
    static const struct ctl_sub subs[] = {
        {"gen-grant-key", "NAME|PATH [--force]", "generate an Ed25519 grant signing key pair",
         keys_fwd},
        {"id", "PUBFILE", "print the key id of a grant public key", keys_fwd},
        {"gen-master", "PATH", "generate a credstore master key file (0600)", ctl_keys_gen_master},
        {"rotate-master", "--data-dir DIR --old FILE --new FILE",
         "move a credstore database to a new master key", ctl_keys_rotate_master},
        {"create", "--data-dir DIR --principal NAME --scopes submit,read,cancel [--expires 30d]",
         "create an intake API key (printed once, stored hashed)", ctl_apikeys_create},
        {"revoke", "--data-dir DIR KEYID", "revoke an intake API key", ctl_apikeys_revoke},
        {"ls", "--data-dir DIR", "list intake API keys (never their secrets)", ctl_apikeys_ls},
    };

    return ctl_dispatch("keys", subs, sizeof subs / sizeof subs[0], argc, argv);
}

/* ---------- keys gen-master ---------- */

static const char gen_help[] =
    "usage: airlockctl keys gen-master PATH\n"
    "\n"
    "Writes a new credstore master key to PATH: 32 random bytes as 64 hex digits,\n"
    "mode 0600, created exclusively (an existing file is never overwritten, a\n"
    "symlink never followed) and fsync'd. Prints the key id (the id database rows\n"
    "name). Point the credstore's master_key_file at it. Keep a copy somewhere safe\n"
    "and apart from backups: without it no value can be decrypted.\n";

int ctl_keys_gen_master(int argc, char **argv)
{
    static const struct option lo[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    char id[CS_KEY_ID_LEN + 1];
    int c, rc;

    optind = 0;
    while ((c = ctl_getopt("keys gen-master", argc, argv, ":h", lo)) != -1) {
        if (c == 'h') {
            fputs(gen_help, stdout);
            return CTL_EXIT_OK;
        }
        return CTL_EXIT_USAGE;
    }
    if (argc - optind != 1)
        return ctl_usage_error("keys gen-master", "want exactly one PATH");
    rc = cs_master_generate(argv[optind], id);
    if (rc < 0) {
        fprintf(stderr, "airlockctl: keys gen-master: %s: %s\n", argv[optind],
                rc == AL_ERR_EXISTS ? "exists; refusing to overwrite a master key"
                                    : al_strerror(rc));
        return CTL_EXIT_FAIL;
    }
    printf("%s key_id=%s\n", argv[optind], id);
    return CTL_EXIT_OK;
}

/* ---------- keys rotate-master ---------- */

static const char rotate_help[] =
    "usage: airlockctl keys rotate-master --data-dir DIR --old OLDFILE --new NEWFILE\n"
    "                                    [--operator TEXT]\n"
    "\n"
    "Moves the credstore database in DIR from master key OLDFILE to NEWFILE: every\n"
    "data key is re-wrapped and every row re-MACed in short transactions (readers\n"
    "and the running service keep going), then the audit head is re-MACed and the\n"
    "database switched to NEWFILE, with an audit record naming the operator\n"
    "(--operator, default unix:<user>@<host>). A row that fails its integrity\n"
    "check is never re-MACed: it is reported and the switch is not made. An\n"
    "interrupted run is simply run again.\n"
    "\n"
    "Procedure, without downtime for readers:\n"
    "  1. airlockctl keys gen-master NEWFILE\n"
    "  2. restart the credstore with master_key_file = NEWFILE and\n"
    "     previous_master_key_files = [OLDFILE]: it reads rows under either key and\n"
    "     writes new ones under NEWFILE (until then this command fails with\n"
    "     'try again': rows under OLDFILE keep appearing)\n"
    "  3. airlockctl keys rotate-master --data-dir DIR --old OLDFILE --new NEWFILE\n"
    "  4. drop OLDFILE from previous_master_key_files and restart; opening with\n"
    "     OLDFILE alone now fails. Backups taken before step 3 still need OLDFILE.\n"
    "\n"
    "Exit status: 0 switched, 1 failed (nothing half-done is left unusable:\n"
    "rerun), 2 usage error.\n";

/* "unix:<user>@<host>": who ran the command, for the audit record. */
static void local_operator(char *buf, size_t n)
{
    const struct passwd *pw = getpwuid(getuid());
    char host[256] = "?";

    (void)gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    if (pw && pw->pw_name)
        snprintf(buf, n, "unix:%s@%s", pw->pw_name, host);
    else
        snprintf(buf, n, "unix:uid%u@%s", (unsigned)getuid(), host);
}

static int load_master(const char *what, const char *flag, const char *path, struct cs_master **out)
{
    int rc = cs_master_load(path, out);

    if (rc < 0) {
        fprintf(stderr, "airlockctl: %s: %s %s: %s\n", what, flag, path,
                rc == AL_ERR_CONFIG  ? "not a regular file, or readable by group/others "
                                       "(chmod 600)"
                : rc == AL_ERR_INVAL ? "not a master key file (64 hex digits)"
                                     : al_strerror(rc));
        return CTL_EXIT_FAIL;
    }
    return 0;
}

static void rotate_failed(int rc, const char *old_file)
{
    fprintf(stderr, "airlockctl: keys rotate-master: %s\n", al_strerror(rc));
    if (rc == AL_ERR_AGAIN)
        fprintf(stderr,
                "  rows under the old key kept appearing: a running credstore still writes\n"
                "  with %s as its master key. Do step 2 first (see --help), then rerun.\n",
                old_file);
    else if (rc == AL_ERR_CRYPTO)
        fprintf(stderr, "  the database is under neither key, some rows failed their integrity\n"
                        "  check, or the audit chain is broken (see the log lines above);\n"
                        "  nothing was switched.\n");
    else if (rc == AL_ERR_NOTFOUND)
        fprintf(stderr, "  no credstore database in that directory\n");
}

int ctl_keys_rotate_master(int argc, char **argv)
{
    static const struct option lo[] = {
        {"data-dir", required_argument, NULL, 'd'}, {"old", required_argument, NULL, 'o'},
        {"new", required_argument, NULL, 'n'},      {"operator", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    const char *what = "keys rotate-master", *dir = NULL, *oldf = NULL, *newf = NULL;
    const char *op = NULL;
    struct cs_master *from = NULL, *to = NULL;
    Airlock__V1__AuditRecord rec = AIRLOCK__V1__AUDIT_RECORD__INIT;
    struct cs_rotate_stats st;
    char who[300], reason[128];
    struct timespec ts;
    int c, rc;

    optind = 0;
    while ((c = ctl_getopt(what, argc, argv, ":h", lo)) != -1) {
        switch (c) {
        case 'h':
            fputs(rotate_help, stdout);
            return CTL_EXIT_OK;
        case 'd':
            dir = optarg;
            break;
        case 'o':
            oldf = optarg;
            break;
        case 'n':
            newf = optarg;
            break;
        case 'p':
            op = optarg;
            break;
        default:
            return CTL_EXIT_USAGE;
        }
    }
    if (argc > optind)
        return ctl_usage_error(what, "unexpected argument '%s'", argv[optind]);
    if (!dir || !oldf || !newf)
        return ctl_usage_error(what, "--data-dir, --old and --new are required");
    if ((rc = load_master(what, "--old", oldf, &from)) != 0 ||
        (rc = load_master(what, "--new", newf, &to)) != 0)
        goto out;
    if (strcmp(cs_master_key_id(from), cs_master_key_id(to)) == 0) {
        fprintf(stderr, "airlockctl: %s: --old and --new are the same key (%s)\n", what,
                cs_master_key_id(from));
        rc = CTL_EXIT_FAIL;
        goto out;
    }
    if (op)
        snprintf(who, sizeof(who), "%s", op);
    else
        local_operator(who, sizeof(who));
    snprintf(reason, sizeof(reason), "master key rotation from %s to %s", cs_master_key_id(from),
             cs_master_key_id(to));
    clock_gettime(CLOCK_REALTIME, &ts);
    rec.time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    rec.caller = who;
    rec.action = AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_MASTER_ROTATE;
    rec.decision = AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW;
    rec.reason = reason;
    rc = cs_store_rotate_master(dir, from, to, &rec, &st);
    printf("rewrapped %lld version(s), re-MACed %lld row(s), refused %lld\n",
           (long long)st.versions_rewrapped, (long long)st.rows_remaced, (long long)st.refused);
    if (rc < 0) {
        rotate_failed(rc, oldf);
        rc = CTL_EXIT_FAIL;
        goto out;
    }
    printf("%s is now under master key %s (was %s)%s; drop %s from the configuration\n", dir,
           cs_master_key_id(to), cs_master_key_id(from),
           st.versions_rewrapped || st.rows_remaced ? "" : " (nothing was left to move)", oldf);
    rc = CTL_EXIT_OK;
out:
    cs_master_free(from);
    cs_master_free(to);
    return rc;
}

/* ---------- backup ---------- */

static const char backup_help[] =
    "usage: airlockctl backup --data-dir DIR --master FILE [--previous FILE]... DEST\n"
    "\n"
    "Online, consistent backup of the credstore database in DIR to DEST (which must\n"
    "not exist), taken from one read snapshot while the service keeps running\n"
    "(SQLite WAL), written 0600 and fsync'd, plus DEST.audit.head: the audit chain\n"
    "head matching that snapshot. Opening the database needs the master key in\n"
    "effect (--master) and any previous keys still named by rows (--previous).\n"
    "The backup holds encrypted values but no key: store the master key apart.\n"
    "\n"
    "Restore:\n"
    "  1. stop the credstore\n"
    "  2. cp DEST DIR/credstore.db; cp DEST.audit.head DIR/audit.head\n"
    "  3. rm -f DIR/credstore.db-wal DIR/credstore.db-shm\n"
    "  4. start it with the master key (and previous keys) in effect when the\n"
    "     backup was taken; then 'airlockctl audit verify'\n";

/* Records the backup (done or failed with rc) in the audit chain. */
static int backup_audit(struct cs_store *s, const char *dest, int rc)
{
    Airlock__V1__AuditRecord rec = AIRLOCK__V1__AUDIT_RECORD__INIT;
    char who[256], reason[512], abs[4096];
    struct timespec ts;
    int arc;

    local_operator(who, sizeof(who));
    if (!realpath(dest, abs))
        snprintf(abs, sizeof(abs), "%s", dest);
    if (rc == 0)
        snprintf(reason, sizeof(reason), "backup written to %.400s", abs);
    else
        snprintf(reason, sizeof(reason), "backup to %.400s failed: %.64s", abs, al_strerror(rc));
    clock_gettime(CLOCK_REALTIME, &ts);
    rec.time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    rec.caller = who;
    rec.action = AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_BACKUP;
    rec.decision = rc == 0 ? AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_ALLOW
                           : AIRLOCK__V1__AUDIT_DECISION__AUDIT_DECISION_DENY;
    rec.reason = reason;
    arc = cs_store_audit_local(s, &rec, NULL);
    if (arc < 0)
        fprintf(stderr, "airlockctl: backup: audit append: %s\n", al_strerror(arc));
    return arc;
}

int ctl_backup(int argc, char **argv)
{
    static const struct option lo[] = {{"data-dir", required_argument, NULL, 'd'},
                                       {"master", required_argument, NULL, 'm'},
                                       {"previous", required_argument, NULL, 'p'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    const char *what = "backup", *dir = NULL, *master = NULL, *prevf[MAX_PREVIOUS];
    struct cs_master *primary = NULL, *prev[MAX_PREVIOUS] = {NULL};
    struct cs_store *s = NULL;
    size_t nprev = 0;
    int64_t head = 0;
    int c, rc;

    optind = 0;
    while ((c = ctl_getopt(what, argc, argv, ":h", lo)) != -1) {
        if (c == 'h') {
            fputs(backup_help, stdout);
            return CTL_EXIT_OK;
        } else if (c == 'd') {
            dir = optarg;
        } else if (c == 'm') {
            master = optarg;
        } else if (c == 'p') {
            if (nprev == MAX_PREVIOUS)
                return ctl_usage_error(what, "at most %d --previous keys", MAX_PREVIOUS);
            prevf[nprev++] = optarg;
        } else {
            return CTL_EXIT_USAGE;
        }
    }
    if (argc - optind != 1)
        return ctl_usage_error(what, "want exactly one DEST");
    if (!dir || !master)
        return ctl_usage_error(what, "--data-dir and --master are required");
    if (access(argv[optind], F_OK) == 0) {
        fprintf(stderr, "airlockctl: backup: %s exists; refusing to overwrite\n", argv[optind]);
        return CTL_EXIT_FAIL;
    }
    if ((rc = load_master(what, "--master", master, &primary)) != 0)
        goto out;
    for (size_t i = 0; i < nprev; i++) {
        if ((rc = load_master(what, "--previous", prevf[i], &prev[i])) != 0)
            goto out;
    }
    struct cs_store_opts so = {.data_dir = dir,
                               .keys = {.primary = primary,
                                        .previous = (const struct cs_master *const *)prev,
                                        .n_previous = nprev}};
    char db[4096];
    snprintf(db, sizeof(db), "%s/%s", dir, CS_STORE_DB_FILE);
    if (access(db, F_OK) != 0) { /* cs_store_open would create an empty store */
        fprintf(stderr, "airlockctl: backup: %s: %s\n", db, strerror(errno));
        rc = CTL_EXIT_FAIL;
        goto out;
    }
    rc = cs_store_open(&so, &s);
    if (rc < 0) {
        fprintf(stderr, "airlockctl: backup: open %s: %s\n", dir, al_strerror(rc));
        rc = CTL_EXIT_FAIL;
        goto out;
    }
    if (cs_audit_problem(cs_store_audit(s)))
        fprintf(stderr,
                "airlockctl: backup: warning: the audit chain is broken (%s); "
                "backing up anyway\n",
                cs_audit_problem(cs_store_audit(s)));
    rc = cs_store_backup(s, argv[optind]);
    if (backup_audit(s, argv[optind], rc) < 0 && rc == 0)
        fprintf(stderr, "airlockctl: backup: warning: the backup is written but its audit "
                        "record could not be appended\n");
    if (rc < 0) {
        fprintf(stderr, "airlockctl: backup: %s: %s\n", argv[optind], al_strerror(rc));
        rc = CTL_EXIT_FAIL;
        goto out;
    }
    (void)cs_audit_head(cs_store_audit(s), &head, NULL);
    printf("backup written: %s and %s.audit.head (audit head seq >= %lld)\n"
           "restore: stop the credstore; cp %s %s/credstore.db; cp %s.audit.head "
           "%s/audit.head;\n"
           "         rm -f %s/credstore.db-wal %s/credstore.db-shm; start it with master key "
           "%s\n",
           argv[optind], argv[optind], (long long)head, argv[optind], dir, argv[optind], dir, dir,
           dir, master);
    rc = CTL_EXIT_OK;
out:
    cs_store_close(s);
    for (size_t i = 0; i < nprev; i++)
        cs_master_free(prev[i]);
    cs_master_free(primary);
    return rc;
}
