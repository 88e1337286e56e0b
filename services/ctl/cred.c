/*
 * airlockctl cred: manage credentials through airlock.v1.CredentialAdmin
 * (put, bind, rotate, rm, ls, show) and test a release through
 * CredentialResolver.Resolve (resolve).
 *
 * A secret value is never taken from argv: it is read from --value-file or
 * stdin (hidden when stdin is a terminal) into locked memory
 * (al_secure_alloc) that is cleansed as soon as the call returns, and it is
 * never printed. The process makes itself non-dumpable before reading one.
 * "cred resolve" prints only metadata, the value's length and a short
 * SHA-256 prefix, unless --reveal-to-fd hands the raw value to a test.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "airlock/v1/credstore.pb-c.h"
#include "al_err.h"
#include "crypto.h"
#include "ctl.h"
#include "ctlrpc.h"

#define ADMIN_SVC    "/airlock.v1.CredentialAdmin/"
#define RESOLVER_SVC "/airlock.v1.CredentialResolver/"
#define LIST_MAX     256 /* entries of one policy list on the command line */
#define CT(x)        AIRLOCK__V1__CREDENTIAL_TYPE__CREDENTIAL_TYPE_##x
#define VS(x)        AIRLOCK__V1__CREDENTIAL_VERSION_STATE__CREDENTIAL_VERSION_STATE_##x

/* ---------- types and names ---------- */

static const struct {
    const char *name;
    Airlock__V1__CredentialType type;
} type_names[] = {{"bearer", CT(BEARER_TOKEN)},
                  {"basic", CT(BASIC_AUTH)},
                  {"header", CT(HEADER_VALUE)},
                  {"generic", CT(GENERIC_SECRET)}};

static int parse_type(const char *s, Airlock__V1__CredentialType *t)
{
    for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++) {
        if (strcmp(s, type_names[i].name) == 0) {
            *t = type_names[i].type;
            return 0;
        }
    }
    return -1;
}

static const char *type_str(Airlock__V1__CredentialType t)
{
    for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++) {
        if (type_names[i].type == t)
            return type_names[i].name;
    }
    return "?";
}

static const char *state_str(Airlock__V1__CredentialVersionState s)
{
    switch (s) {
    case VS(CURRENT):
        return "current";
    case VS(GRACE):
        return "grace";
    case VS(DESTROYED):
        return "destroyed";
    default:
        return "?";
    }
}

/* ---------- flags shared by put and bind ---------- */

enum {
    OPT_TYPE = CTL_OPT_FIRST_FREE,
    OPT_HEADER,
    OPT_FORMAT,
    OPT_PLAIN,
    OPT_NO_PLAIN,
    OPT_DESC,
    OPT_GRACE,
    OPT_MAXLIFE,
    OPT_CREATE_ONLY,
    OPT_VALUE_FILE,
    OPT_RAW,
    OPT_REVISION,
    OPT_VERSION,
    OPT_DESTROY_PREV,
    OPT_EXPECT_VERSION,
    OPT_PREFIX,
    OPT_ALL,
    OPT_PAGE_SIZE,
    OPT_PAGE_TOKEN,
    OPT_JSON,
    OPT_GRANT,
    OPT_DEST1,
    OPT_REVEAL,
    OPT_VALUE_ARGV,
    OPT_LIST0 /* + enum list_kind */
};

/* The policy lists, in BindingPolicy order of their flags. */
enum list_kind { L_ISSUER, L_PRINCIPAL, L_HOLDER, L_POOL, L_ROUTE, L_DEST, L_COUNT };
static const char *const list_flag[L_COUNT] = {"issuer", "principal", "holder",
                                               "pool",   "route",     "dest"};

struct strlist {
    int given; /* the flag appeared: replaces the list (bind) */
    size_t n;
    char *v[LIST_MAX];
};

struct meta_flags {
    struct ctl_rpc_opts rpc;
    const char *name, *type, *header, *format, *description, *value_file;
    int plain_http; /* -1 not given */
    int have_grace, have_maxlife, create_only, raw, json;
    int64_t grace_ms, maxlife_ms, revision;
    struct strlist lists[L_COUNT];
};

/* clang-format off */
#define META_LONGOPTS                                                                              \
    CTL_RPC_LONGOPTS,                                                                              \
    {"type", required_argument, NULL, OPT_TYPE},                                                   \
    {"header", required_argument, NULL, OPT_HEADER},                                               \
    {"format", required_argument, NULL, OPT_FORMAT},                                               \
    {"allow-plain-http", no_argument, NULL, OPT_PLAIN},                                            \
    {"no-allow-plain-http", no_argument, NULL, OPT_NO_PLAIN},                                      \
    {"description", required_argument, NULL, OPT_DESC},                                            \
    {"grace", required_argument, NULL, OPT_GRACE},                                                 \
    {"max-lifetime", required_argument, NULL, OPT_MAXLIFE},                                        \
    {"revision", required_argument, NULL, OPT_REVISION},                                           \
    {"issuer", required_argument, NULL, OPT_LIST0 + L_ISSUER},                                     \
    {"principal", required_argument, NULL, OPT_LIST0 + L_PRINCIPAL},                               \
    {"holder", required_argument, NULL, OPT_LIST0 + L_HOLDER},                                     \
    {"pool", required_argument, NULL, OPT_LIST0 + L_POOL},                                         \
    {"route", required_argument, NULL, OPT_LIST0 + L_ROUTE},                                       \
    {"dest", required_argument, NULL, OPT_LIST0 + L_DEST},                                         \
    {"help", no_argument, NULL, 'h'}
/* clang-format on */

#define META_HELP                                                                                  \
    "template:\n"                                                                                  \
    "  --type bearer|basic|header|generic   kind of secret (defaults below)\n"                     \
    "  --header NAME        request header that carries the value\n"                               \
    "                       (bearer/basic: Authorization; required for header/generic)\n"          \
    "  --format 'Bearer {}' header value with one {} slot (bearer: 'Bearer {}',\n"                 \
    "                       basic: 'Basic {}' with base64 of user:password, header: '{}')\n"       \
    "  --allow-plain-http   also inject over plain HTTP (default: verified TLS only)\n"            \
    "  --no-allow-plain-http\n"                                                                    \
    "  --description TEXT   free text for operators\n"                                             \
    "  --grace DURATION     default grace period of rotations, e.g. 1h; also caps how\n"           \
    "                       long a released copy may be used (0 = none)\n"                         \
    "binding policy (each flag repeats; globs: * within a segment, ** across /;\n"                 \
    "an empty list allows nothing; with bind, a flag replaces that whole list and\n"               \
    "a single empty value clears it):\n"                                                           \
    "  --issuer GLOB        grant issuers, e.g. 'spiffe://airlock/intake/*'\n"                     \
    "  --principal GLOB     principals, e.g. 'acme/*'\n"                                           \
    "  --holder GLOB        edge identities, e.g. 'spiffe://airlock/executor/ci-*'\n"              \
    "  --pool GLOB          executor pools (intake grants)\n"                                      \
    "  --route GLOB         tunnel routes TUNNEL/SERVER (relay grants)\n"                          \
    "  --dest HOST[:PORT]   destinations (port 443 by default; '*.' prefix = subdomains)\n"        \
    "  --max-lifetime DUR   longest grant lifetime accepted (0 = server default)\n"                \
    "  --revision N         fail unless the credential's revision is N (0 = no check)\n"

/* Handles a put/bind flag. Returns 1 consumed, 0 not one of them, or an exit code. */
static int meta_opt(struct meta_flags *f, int c, const char *arg)
{
    int rc = ctl_rpc_opt(&f->rpc, c, arg);

    if (rc)
        return rc;
    if (c >= OPT_LIST0 && c < OPT_LIST0 + L_COUNT) {
        struct strlist *l = &f->lists[c - OPT_LIST0];
        l->given = 1;
        if (!*arg)
            return 1; /* "" clears */
        if (l->n >= LIST_MAX)
            return ctl_usage_error(f->rpc.what, "too many --%s values (max %d)",
                                   list_flag[c - OPT_LIST0], LIST_MAX);
        l->v[l->n++] = (char *)arg;
        return 1;
    }
    switch (c) {
    case OPT_TYPE:
        f->type = arg;
        return 1;
    case OPT_HEADER:
        f->header = arg;
        return 1;
    case OPT_FORMAT:
        f->format = arg;
        return 1;
    case OPT_PLAIN:
    case OPT_NO_PLAIN:
        f->plain_http = c == OPT_PLAIN;
        return 1;
    case OPT_DESC:
        f->description = arg;
        return 1;
    case OPT_GRACE:
        f->have_grace = 1;
        if (ctl_parse_dur(arg, &f->grace_ms) < 0)
            return ctl_usage_error(f->rpc.what, "--grace: bad duration '%s' (e.g. 30m, 1h)", arg);
        return 1;
    case OPT_MAXLIFE:
        f->have_maxlife = 1;
        if (ctl_parse_dur(arg, &f->maxlife_ms) < 0)
            return ctl_usage_error(f->rpc.what, "--max-lifetime: bad duration '%s'", arg);
        return 1;
    case OPT_REVISION:
        if (ctl_parse_i64(arg, &f->revision) < 0)
            return ctl_usage_error(f->rpc.what, "--revision needs a number");
        return 1;
    default:
        return 0;
    }
}

/* Takes the one NAME operand left after getopt. */
static int one_name(const char *what, int argc, char **argv, const char **name)
{
    if (argc - optind != 1)
        return ctl_usage_error(what, argc - optind ? "want exactly one NAME" : "NAME is required");
    *name = argv[optind];
    return 0;
}

/* ---------- reading a value ---------- */

/* --value: refused without echoing what followed it. */
static int value_on_argv(const char *what)
{
    fprintf(stderr,
            "airlockctl: %s: a value is never taken from the command line (it would\n"
            "  show in ps and shell history); use --value-file FILE or stdin. Consider the\n"
            "  value you typed exposed.\n",
            what);
    return CTL_EXIT_USAGE;
}

/* Reads fd to EOF into buf[0..cap); *len. Returns 0, AL_ERR_TOOBIG or -errno. */
static int read_all(int fd, uint8_t *buf, size_t cap, size_t *len)
{
    *len = 0;
    for (;;) {
        ssize_t k = read(fd, buf + *len, cap - *len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            return 0;
        *len += (size_t)k;
        if (*len == cap)
            return AL_ERR_TOOBIG;
    }
}

/* Reads one line from the terminal on fd with echo off. */
static int read_hidden(int fd, const char *name, uint8_t *buf, size_t cap, size_t *len)
{
    struct termios old, quiet;
    int rc = 0, restore = tcgetattr(fd, &old) == 0;

    fprintf(stderr, "value for %s (input hidden, end with Enter): ", name);
    if (restore) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        (void)tcsetattr(fd, TCSAFLUSH, &quiet);
    }
    *len = 0;
    for (;;) {
        uint8_t ch;
        ssize_t k = read(fd, &ch, 1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0 || ch == '\n') {
            rc = k < 0 ? -errno : 0;
            break;
        }
        if (*len + 1 >= cap) {
            rc = AL_ERR_TOOBIG;
            break;
        }
        buf[(*len)++] = ch;
    }
    if (restore)
        (void)tcsetattr(fd, TCSAFLUSH, &old);
    if (!restore)
        fputc('\n', stderr);
    return rc;
}

/*
 * Reads the value of credential `name` from file (NULL = stdin) into a new
 * locked buffer *out (al_secure_free) of length *len; drops one trailing
 * newline unless raw. Prints failures. Returns 0 or CTL_EXIT_FAIL.
 */
static int read_value(const char *what, const char *name, const char *file, int raw, uint8_t **out,
                      size_t *len)
{
    size_t cap = CS_VALUE_MAX + 2;
    uint8_t *buf = al_secure_alloc(cap);
    int fd = 0, rc;

    *out = NULL;
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* no core dump or ptrace of a secret */
    if (!buf) {
        fprintf(stderr, "airlockctl: %s: out of memory\n", what);
        return CTL_EXIT_FAIL;
    }
    if (file && (fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
        fprintf(stderr, "airlockctl: %s: %s: %s\n", what, file, strerror(errno));
        al_secure_free(buf);
        return CTL_EXIT_FAIL;
    }
    if (!file && isatty(0))
        rc = read_hidden(0, name, buf, cap, len);
    else
        rc = read_all(fd, buf, cap, len);
    if (file)
        close(fd);
    if (rc == 0 && !raw && *len && buf[*len - 1] == '\n') {
        buf[--*len] = 0;
        if (*len && buf[*len - 1] == '\r')
            buf[--*len] = 0;
    }
    if (rc == 0 && *len > CS_VALUE_MAX)
        rc = AL_ERR_TOOBIG;
    if (rc == 0 && *len == 0)
        rc = AL_ERR_INVAL;
    if (rc < 0) {
        fprintf(stderr, "airlockctl: %s: value from %s: %s\n", what, file ? file : "stdin",
                rc == AL_ERR_TOOBIG  ? "larger than 64 KiB"
                : rc == AL_ERR_INVAL ? "empty"
                                     : al_strerror(rc));
        al_secure_free(buf);
        return CTL_EXIT_FAIL;
    }
    *out = buf;
    return 0;
}

/* ---------- printing ---------- */

static void print_list(const char *label, char **v, size_t n)
{
    printf("  %-14s", label);
    if (n == 0)
        printf("(none)");
    for (size_t i = 0; i < n; i++)
        printf("%s%s", i ? ", " : "", v[i]);
    putchar('\n');
}

/* "template:" padded to width, then "Header: format  (transport)". */
static void print_template(const Airlock__V1__InjectionTemplate *t, int width)
{
    printf("%-*s", width, "template:");
    if (!t) {
        printf("-\n");
        return;
    }
    printf("%s: %s  (%s)\n", t->header, t->format,
           t->allow_plain_http ? "plain HTTP allowed" : "verified TLS only");
}

static void print_policy(const Airlock__V1__BindingPolicy *p)
{
    char d[32];

    printf("policy:\n");
    if (!p) {
        printf("  (none: allows nothing)\n");
        return;
    }
    print_list("issuers", p->allowed_issuers, p->n_allowed_issuers);
    print_list("principals", p->allowed_principals, p->n_allowed_principals);
    print_list("holders", p->allowed_holders, p->n_allowed_holders);
    print_list("pools", p->allowed_pools, p->n_allowed_pools);
    print_list("routes", p->allowed_routes, p->n_allowed_routes);
    print_list("destinations", p->allowed_destinations, p->n_allowed_destinations);
    printf("  %-14s%s\n", "max lifetime",
           p->max_grant_lifetime_ms ? ctl_fmt_dur(p->max_grant_lifetime_ms, d, sizeof(d))
                                    : "server default");
}

static void print_versions(const Airlock__V1__Credential *c)
{
    char t1[32], t2[32];

    printf("versions:\n  %-8s %-10s %-25s %-25s %s\n", "VERSION", "STATE", "CREATED",
           "GRACE END / DESTROYED", "CREATED BY");
    for (size_t i = 0; i < c->n_versions; i++) {
        const Airlock__V1__CredentialVersion *v = c->versions[i];
        int64_t end = v->state == VS(DESTROYED) ? v->destroyed_ms : v->grace_end_ms;
        printf("  %-8d %-10s %-25s %-25s %s\n", v->version, state_str(v->state),
               ctl_fmt_time(v->created_ms, t1, sizeof(t1)), ctl_fmt_time(end, t2, sizeof(t2)),
               v->created_by);
    }
}

static void print_credential(const Airlock__V1__Credential *c)
{
    char t[32], d[32];

    printf("name:           %s\n", c->name);
    printf("type:           %s\n", type_str(c->type));
    printf("description:    %s\n", c->description[0] ? c->description : "-");
    print_template(c->template_, 16);
    printf("grace period:   %s\n", ctl_fmt_dur(c->grace_period_ms, d, sizeof(d)));
    printf("current:        version %d\n", c->current_version);
    printf("revision:       %lld\n", (long long)c->revision);
    printf("created:        %s\n", ctl_fmt_time(c->created_ms, t, sizeof(t)));
    printf("updated:        %s by %s\n", ctl_fmt_time(c->updated_ms, t, sizeof(t)),
           c->updated_by[0] ? c->updated_by : "-");
    print_policy(c->policy);
    print_versions(c);
}

/* Notes policy lists that leave the credential unusable. */
static void warn_empty_policy(const char *what, const Airlock__V1__BindingPolicy *p)
{
    if (!p || !p->n_allowed_issuers || !p->n_allowed_principals || !p->n_allowed_holders ||
        !p->n_allowed_destinations || (!p->n_allowed_pools && !p->n_allowed_routes))
        fprintf(stderr,
                "airlockctl: %s: note: the policy has an empty list (issuers, principals, "
                "holders, destinations, or both pools and routes): Resolve denies every grant "
                "until 'airlockctl cred bind' fills it\n",
                what);
}

/* ---------- put / bind ---------- */

/* Fills req's template and policy from flags over the base (may be NULL). */
static int apply_meta(struct meta_flags *f, const Airlock__V1__Credential *base,
                      Airlock__V1__PutCredentialRequest *req, Airlock__V1__InjectionTemplate *tmpl,
                      Airlock__V1__BindingPolicy *pol)
{
    Airlock__V1__CredentialType t = base ? base->type : CT(UNSPECIFIED);
    int type_changed = 0;

    if (f->type) {
        if (parse_type(f->type, &t) < 0)
            return ctl_usage_error(f->rpc.what, "--type must be bearer, basic, header or generic");
        type_changed = base && t != base->type;
    }
    if (t == CT(UNSPECIFIED))
        return ctl_usage_error(f->rpc.what, "--type is required");
    req->type = t;
    if (base && base->template_ && !type_changed)
        *tmpl = *base->template_; /* effective template; a new type starts from its defaults */
    if (base && base->policy)
        *pol = *base->policy;
    if (f->header)
        tmpl->header = (char *)f->header;
    if (f->format)
        tmpl->format = (char *)f->format;
    if (f->plain_http >= 0)
        tmpl->allow_plain_http = f->plain_http;
    req->template_ = tmpl;
    req->policy = pol;
    req->description = (char *)(f->description ? f->description : base ? base->description : "");
    req->grace_period_ms = f->have_grace ? f->grace_ms : base ? base->grace_period_ms : 0;
    if (f->have_maxlife)
        pol->max_grant_lifetime_ms = f->maxlife_ms;
#define TAKE(k, field)                                                                             \
    if (f->lists[k].given) {                                                                       \
        pol->n_##field = f->lists[k].n;                                                            \
        pol->field = f->lists[k].v;                                                                \
    }
    TAKE(L_ISSUER, allowed_issuers)
    TAKE(L_PRINCIPAL, allowed_principals)
    TAKE(L_HOLDER, allowed_holders)
    TAKE(L_POOL, allowed_pools)
    TAKE(L_ROUTE, allowed_routes)
    TAKE(L_DEST, allowed_destinations)
#undef TAKE
    return 0;
}

static const char put_help[] =
    "usage: airlockctl cred put NAME --type bearer|basic|header|generic [flags]\n"
    "                          [--value-file FILE | value on stdin]\n"
    "\n"
    "Creates credential NAME (or replaces all of its metadata and policy: a full\n"
    "replacement, flags not given fall back to defaults; use 'cred bind' to change\n"
    "only some). The value is read from --value-file or stdin, never from the\n"
    "command line; on a terminal it is read hidden. One trailing newline is dropped\n"
    "unless --raw. It is held in locked memory, zeroed after the call and never\n"
    "printed. On an existing credential the value must equal the current one (so a\n"
    "retried create succeeds); a new value goes through 'cred rotate', metadata\n"
    "alone through 'cred bind'.\n"
    "\n"
    "value:\n"
    "  --value-file FILE    read the value from FILE (default: stdin)\n"
    "  --raw                keep the value byte for byte (trailing newline too)\n"
    "  --create-only        fail with ALREADY_EXISTS if NAME exists\n" META_HELP
    "  --json               print the resulting metadata as JSON\n"
    "\n"
    "example:\n"
    "  airlockctl cred put github/ci-bot --type bearer --value-file token.txt \\\n"
    "      --issuer 'spiffe://airlock/intake/*' --principal 'acme/*' --pool ci \\\n"
    "      --holder 'spiffe://airlock/executor/*' --dest api.github.com --grace 1h\n";

static int parse_meta(struct meta_flags *f, const char *help, int with_value, int argc, char **argv)
{
    static const struct option lo[] = {META_LONGOPTS,
                                       {"value-file", required_argument, NULL, OPT_VALUE_FILE},
                                       {"value", required_argument, NULL, OPT_VALUE_ARGV},
                                       {"raw", no_argument, NULL, OPT_RAW},
                                       {"create-only", no_argument, NULL, OPT_CREATE_ONLY},
                                       {"json", no_argument, NULL, OPT_JSON},
                                       {NULL, 0, NULL, 0}};
    int c, rc;

    optind = 0;
    while ((c = ctl_getopt(f->rpc.what, argc, argv, ":h", lo)) != -1) {
        if (c == '?')
            return CTL_EXIT_USAGE;
        if (c == 'h') {
            fputs(help, stdout);
            ctl_rpc_help(&f->rpc);
            return -1;
        }
        if ((rc = meta_opt(f, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
            continue;
        }
        if (c == OPT_VALUE_ARGV)
            return value_on_argv(f->rpc.what);
        if (c == OPT_JSON) {
            f->json = 1;
        } else if (!with_value) {
            return ctl_usage_error(f->rpc.what, "%s is not a flag of this command",
                                   argv[optind - 1]);
        } else if (c == OPT_VALUE_FILE) {
            f->value_file = optarg;
        } else if (c == OPT_RAW) {
            f->raw = 1;
        } else if (c == OPT_CREATE_ONLY) {
            f->create_only = 1;
        }
    }
    return one_name(f->rpc.what, argc, argv, &f->name);
}

static void meta_init(struct meta_flags *f, const char *what)
{
    memset(f, 0, sizeof(*f));
    ctl_rpc_opts_init(&f->rpc, what, "admin/admin", 10);
    f->plain_http = -1;
}

/* Sends req with Put and prints the result. Takes nothing. */
static int send_put(struct ctl_rpc *r, struct meta_flags *f,
                    const Airlock__V1__PutCredentialRequest *req, const char *verb)
{
    ProtobufCMessage *resp = NULL;
    int rc = ctl_rpc_call(r, ADMIN_SVC "Put", &req->base, &airlock__v1__credential__descriptor,
                          &resp, NULL, NULL);
    if (rc)
        return rc;
    const Airlock__V1__Credential *c = (const Airlock__V1__Credential *)resp;
    if (f->json)
        rc = ctl_print_json(resp, 1);
    else
        printf("%s %s: revision %lld, current version %d\n", verb, c->name, (long long)c->revision,
               c->current_version);
    warn_empty_policy(f->rpc.what, c->policy);
    ctl_rpc_free_resp(resp);
    return rc;
}

static int cred_put(int argc, char **argv)
{
    struct meta_flags f;
    Airlock__V1__PutCredentialRequest req = AIRLOCK__V1__PUT_CREDENTIAL_REQUEST__INIT;
    Airlock__V1__InjectionTemplate tmpl = AIRLOCK__V1__INJECTION_TEMPLATE__INIT;
    Airlock__V1__BindingPolicy pol = AIRLOCK__V1__BINDING_POLICY__INIT;
    struct ctl_rpc *r = NULL;
    uint8_t *value = NULL;
    size_t len = 0;
    int rc;

    meta_init(&f, "cred put");
    rc = parse_meta(&f, put_help, 1, argc, argv);
    if (rc)
        return rc < 0 ? CTL_EXIT_OK : rc;
    if ((rc = apply_meta(&f, NULL, &req, &tmpl, &pol)) != 0)
        return rc;
    if ((rc = ctl_rpc_open(&f.rpc, CTL_CREDSTORE_PEER, &r)) != 0)
        return rc;
    if ((rc = read_value(f.rpc.what, f.name, f.value_file, f.raw, &value, &len)) != 0)
        goto out;
    req.name = (char *)f.name;
    req.value.data = value;
    req.value.len = len;
    req.create_only = f.create_only;
    req.expected_revision = f.revision;
    rc = send_put(r, &f, &req, f.create_only ? "created" : "put");
out:
    al_secure_free(value);
    ctl_rpc_close(r);
    return rc;
}

static const char bind_help[] =
    "usage: airlockctl cred bind NAME [flags]\n"
    "\n"
    "Changes the template, binding policy or metadata of an existing credential,\n"
    "keeping everything not named by a flag (the value is untouched). Reads the\n"
    "current metadata with Describe and sends it back with Put and\n"
    "expected_revision, so a concurrent change fails (ABORTED) instead of being\n"
    "overwritten. Each list flag replaces that whole list; give it once with an\n"
    "empty value ('') to clear it. Changing --type resets the template to the new\n"
    "type's defaults unless --header/--format are given.\n"
    "\n" META_HELP "  --json               print the resulting metadata as JSON\n"
    "\n"
    "example:\n"
    "  airlockctl cred bind github/ci-bot --principal 'acme/*' --principal 'beta/*'\n";

static int cred_bind(int argc, char **argv)
{
    struct meta_flags f;
    Airlock__V1__PutCredentialRequest req = AIRLOCK__V1__PUT_CREDENTIAL_REQUEST__INIT;
    Airlock__V1__DescribeCredentialRequest dreq = AIRLOCK__V1__DESCRIBE_CREDENTIAL_REQUEST__INIT;
    Airlock__V1__InjectionTemplate tmpl = AIRLOCK__V1__INJECTION_TEMPLATE__INIT;
    Airlock__V1__BindingPolicy pol = AIRLOCK__V1__BINDING_POLICY__INIT;
    ProtobufCMessage *cur = NULL;
    struct ctl_rpc *r = NULL;
    int rc;

    meta_init(&f, "cred bind");
    rc = parse_meta(&f, bind_help, 0, argc, argv);
    if (rc)
        return rc < 0 ? CTL_EXIT_OK : rc;
    if ((rc = ctl_rpc_open(&f.rpc, CTL_CREDSTORE_PEER, &r)) != 0)
        return rc;
    dreq.name = (char *)f.name;
    rc = ctl_rpc_call(r, ADMIN_SVC "Describe", &dreq.base, &airlock__v1__credential__descriptor,
                      &cur, NULL, NULL);
    if (rc)
        goto out;
    const Airlock__V1__Credential *c = (const Airlock__V1__Credential *)cur;
    if (f.revision && f.revision != c->revision) {
        fprintf(stderr, "airlockctl: cred bind: %s is at revision %lld, not %lld\n", f.name,
                (long long)c->revision, (long long)f.revision);
        rc = CTL_EXIT_FAIL;
        goto out;
    }
    if ((rc = apply_meta(&f, c, &req, &tmpl, &pol)) != 0)
        goto out;
    req.name = (char *)f.name;
    req.expected_revision = c->revision;
    rc = send_put(r, &f, &req, "bound");
out:
    ctl_rpc_free_resp(cur);
    ctl_rpc_close(r);
    return rc;
}

/* ---------- rotate ---------- */

static const char rotate_help[] =
    "usage: airlockctl cred rotate NAME [--value-file FILE | value on stdin] [--raw]\n"
    "                             [--grace DURATION] [--destroy-previous]\n"
    "                             [--expect-version N] [--json]\n"
    "\n"
    "Adds a new value as the CURRENT version. The previous version stays usable for\n"
    "the grace period (--grace, else the credential's), then is destroyed;\n"
    "--destroy-previous destroys every older version now (after a leak: also revoke\n"
    "the secret upstream, released copies live until their expiry). The value is\n"
    "read as for 'cred put'. --expect-version fails unless N is the current version.\n";

static void print_rotated(const Airlock__V1__Credential *c)
{
    char t[32];

    printf("rotated %s: version %d is current\n", c->name, c->current_version);
    for (size_t i = 0; i < c->n_versions; i++) {
        const Airlock__V1__CredentialVersion *v = c->versions[i];
        if (v->state == VS(GRACE))
            printf("  version %d in grace until %s\n", v->version,
                   ctl_fmt_time(v->grace_end_ms, t, sizeof(t)));
        else if (v->state == VS(DESTROYED) && v->destroyed_ms >= c->updated_ms)
            printf("  version %d destroyed\n", v->version);
    }
}

static int cred_rotate(int argc, char **argv)
{
    static const struct option lo[] = {
        CTL_RPC_LONGOPTS,
        {"value-file", required_argument, NULL, OPT_VALUE_FILE},
        {"value", required_argument, NULL, OPT_VALUE_ARGV},
        {"raw", no_argument, NULL, OPT_RAW},
        {"grace", required_argument, NULL, OPT_GRACE},
        {"destroy-previous", no_argument, NULL, OPT_DESTROY_PREV},
        {"expect-version", required_argument, NULL, OPT_EXPECT_VERSION},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    Airlock__V1__RotateCredentialRequest req = AIRLOCK__V1__ROTATE_CREDENTIAL_REQUEST__INIT;
    struct ctl_rpc_opts o;
    struct ctl_rpc *r = NULL;
    ProtobufCMessage *resp = NULL;
    const char *file = NULL, *name = NULL;
    uint8_t *value = NULL;
    size_t len = 0;
    int c, rc, raw = 0, json = 0;
    int64_t v;

    ctl_rpc_opts_init(&o, "cred rotate", "admin/admin", 10);
    optind = 0;
    while ((c = ctl_getopt(o.what, argc, argv, ":h", lo)) != -1) {
        if (c == '?')
            return CTL_EXIT_USAGE;
        if (c == 'h') {
            fputs(rotate_help, stdout);
            ctl_rpc_help(&o);
            return CTL_EXIT_OK;
        }
        if ((rc = ctl_rpc_opt(&o, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
        } else if (c == OPT_VALUE_ARGV) {
            return value_on_argv(o.what);
        } else if (c == OPT_VALUE_FILE) {
            file = optarg;
        } else if (c == OPT_RAW) {
            raw = 1;
        } else if (c == OPT_JSON) {
            json = 1;
        } else if (c == OPT_DESTROY_PREV) {
            req.destroy_previous = 1;
        } else if (c == OPT_GRACE) {
            if (ctl_parse_dur(optarg, &req.grace_period_ms) < 0)
                return ctl_usage_error(o.what, "--grace: bad duration '%s'", optarg);
        } else if (c == OPT_EXPECT_VERSION) {
            if (ctl_parse_i64(optarg, &v) < 0 || v < 1 || v > INT32_MAX)
                return ctl_usage_error(o.what, "--expect-version needs a version number");
            req.expected_current_version = (int32_t)v;
        }
    }
    if ((rc = one_name(o.what, argc, argv, &name)) != 0)
        return rc;
    if ((rc = ctl_rpc_open(&o, CTL_CREDSTORE_PEER, &r)) != 0)
        return rc;
    if ((rc = read_value(o.what, name, file, raw, &value, &len)) != 0)
        goto out;
    req.name = (char *)name;
    req.value.data = value;
    req.value.len = len;
    rc = ctl_rpc_call(r, ADMIN_SVC "Rotate", &req.base, &airlock__v1__credential__descriptor, &resp,
                      NULL, NULL);
    al_secure_free(value);
    value = NULL;
    if (rc == 0 && json)
        rc = ctl_print_json(resp, 1);
    else if (rc == 0)
        print_rotated((const Airlock__V1__Credential *)resp);
out:
    al_secure_free(value);
    ctl_rpc_free_resp(resp);
    ctl_rpc_close(r);
    return rc;
}

/* ---------- rm ---------- */

static const char rm_help[] = "usage: airlockctl cred rm NAME [--version N] [--revision R]\n"
                              "\n"
                              "Without --version: deletes the credential (every version's\n"
                              "encrypted value is wiped; audit records stay). With --version:\n"
                              "destroys that one non-current version now (ends its grace period\n"
                              "early). --revision fails unless the credential is at revision R.\n";

static int cred_rm(int argc, char **argv)
{
    static const struct option lo[] = {CTL_RPC_LONGOPTS,
                                       {"version", required_argument, NULL, OPT_VERSION},
                                       {"revision", required_argument, NULL, OPT_REVISION},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    Airlock__V1__DeleteCredentialRequest req = AIRLOCK__V1__DELETE_CREDENTIAL_REQUEST__INIT;
    struct ctl_rpc_opts o;
    struct ctl_rpc *r = NULL;
    ProtobufCMessage *resp = NULL;
    const char *name = NULL;
    int c, rc;
    int64_t v;

    ctl_rpc_opts_init(&o, "cred rm", "admin/admin", 10);
    optind = 0;
    while ((c = ctl_getopt(o.what, argc, argv, ":h", lo)) != -1) {
        if (c == '?')
            return CTL_EXIT_USAGE;
        if (c == 'h') {
            fputs(rm_help, stdout);
            ctl_rpc_help(&o);
            return CTL_EXIT_OK;
        }
        if ((rc = ctl_rpc_opt(&o, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
        } else if (c == OPT_VERSION) {
            if (ctl_parse_i64(optarg, &v) < 0 || v < 1 || v > INT32_MAX)
                return ctl_usage_error(o.what, "--version needs a version number");
            req.version = (int32_t)v;
        } else if (c == OPT_REVISION) {
            if (ctl_parse_i64(optarg, &req.expected_revision) < 0)
                return ctl_usage_error(o.what, "--revision needs a number");
        }
    }
    if ((rc = one_name(o.what, argc, argv, &name)) != 0)
        return rc;
    if ((rc = ctl_rpc_open(&o, CTL_CREDSTORE_PEER, &r)) != 0)
        return rc;
    req.name = (char *)name;
    rc = ctl_rpc_call(r, ADMIN_SVC "Delete", &req.base,
                      &airlock__v1__delete_credential_response__descriptor, &resp, NULL, NULL);
    if (rc == 0 && req.version)
        printf("destroyed %s version %d\n", name, req.version);
    else if (rc == 0)
        printf("deleted %s\n", name);
    ctl_rpc_free_resp(resp);
    ctl_rpc_close(r);
    return rc;
}

/* ---------- ls ---------- */

static const char ls_help[] =
    "usage: airlockctl cred ls [--prefix P] [--all] [--page-size N] [--page-token T] [--json]\n"
    "\n"
    "Lists credentials by name (metadata only). Prints one page (default 50) and,\n"
    "when more remain, the token of the next; --all follows every page. --json\n"
    "prints one JSON object per credential per line.\n";

static void print_row(const Airlock__V1__Credential *c)
{
    char t[32];
    size_t live = 0;

    for (size_t i = 0; i < c->n_versions; i++)
        live += c->versions[i]->state != VS(DESTROYED);
    printf("%-40s %-8s %-8d %-6zu %-9lld %s\n", c->name, type_str(c->type), c->current_version,
           live, (long long)c->revision, ctl_fmt_time(c->updated_ms, t, sizeof(t)));
}

static int cred_ls(int argc, char **argv)
{
    static const struct option lo[] = {CTL_RPC_LONGOPTS,
                                       {"prefix", required_argument, NULL, OPT_PREFIX},
                                       {"all", no_argument, NULL, OPT_ALL},
                                       {"page-size", required_argument, NULL, OPT_PAGE_SIZE},
                                       {"page-token", required_argument, NULL, OPT_PAGE_TOKEN},
                                       {"json", no_argument, NULL, OPT_JSON},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    Airlock__V1__ListCredentialsRequest req = AIRLOCK__V1__LIST_CREDENTIALS_REQUEST__INIT;
    Airlock__V1__PageRequest page = AIRLOCK__V1__PAGE_REQUEST__INIT;
    struct ctl_rpc_opts o;
    struct ctl_rpc *r = NULL;
    char token[1024] = "";
    int c, rc, all = 0, json = 0;
    size_t total = 0;
    int64_t v;

    ctl_rpc_opts_init(&o, "cred ls", "admin/admin", 10);
    req.page = &page;
    optind = 0;
    while ((c = ctl_getopt(o.what, argc, argv, ":h", lo)) != -1) {
        if (c == '?')
            return CTL_EXIT_USAGE;
        if (c == 'h') {
            fputs(ls_help, stdout);
            ctl_rpc_help(&o);
            return CTL_EXIT_OK;
        }
        if ((rc = ctl_rpc_opt(&o, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
        } else if (c == OPT_PREFIX) {
            req.name_prefix = optarg;
        } else if (c == OPT_ALL) {
            all = 1;
        } else if (c == OPT_JSON) {
            json = 1;
        } else if (c == OPT_PAGE_SIZE) {
            if (ctl_parse_i64(optarg, &v) < 0 || v < 1 || v > 500)
                return ctl_usage_error(o.what, "--page-size needs 1..500");
            page.page_size = (int32_t)v;
        } else if (c == OPT_PAGE_TOKEN) {
            snprintf(token, sizeof(token), "%s", optarg);
        }
    }
    if (argc > optind)
        return ctl_usage_error(o.what, "unexpected argument '%s'", argv[optind]);
    if ((rc = ctl_rpc_open(&o, CTL_CREDSTORE_PEER, &r)) != 0)
        return rc;
    do {
        ProtobufCMessage *resp = NULL;
        page.page_token = token;
        rc = ctl_rpc_call(r, ADMIN_SVC "List", &req.base,
                          &airlock__v1__list_credentials_response__descriptor, &resp, NULL, NULL);
        if (rc)
            break;
        const Airlock__V1__ListCredentialsResponse *lr =
            (const Airlock__V1__ListCredentialsResponse *)resp;
        if (!json && total == 0 && lr->n_credentials)
            printf("%-40s %-8s %-8s %-6s %-9s %s\n", "NAME", "TYPE", "CURRENT", "LIVE", "REVISION",
                   "UPDATED");
        for (size_t i = 0; i < lr->n_credentials; i++) {
            if (json)
                ctl_print_json(&lr->credentials[i]->base, 0);
            else
                print_row(lr->credentials[i]);
        }
        total += lr->n_credentials;
        snprintf(token, sizeof(token), "%s",
                 lr->page && lr->page->next_page_token ? lr->page->next_page_token : "");
        ctl_rpc_free_resp(resp);
    } while (all && token[0]);
    if (rc == 0 && token[0])
        fprintf(stderr, "(more: --all, or --page-token %s)\n", token);
    else if (rc == 0 && !json && total == 0)
        fprintf(stderr, "(no credentials)\n");
    ctl_rpc_close(r);
    return rc;
}

/* ---------- show ---------- */

static const char show_help[] = "usage: airlockctl cred show NAME [--json]\n"
                                "\n"
                                "Prints a credential's metadata, template, binding policy and\n"
                                "versions (never its value).\n";

static int cred_show(int argc, char **argv)
{
    static const struct option lo[] = {CTL_RPC_LONGOPTS,
                                       {"json", no_argument, NULL, OPT_JSON},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    Airlock__V1__DescribeCredentialRequest req = AIRLOCK__V1__DESCRIBE_CREDENTIAL_REQUEST__INIT;
    struct ctl_rpc_opts o;
    struct ctl_rpc *r = NULL;
    ProtobufCMessage *resp = NULL;
    const char *name = NULL;
    int c, rc, json = 0;

    ctl_rpc_opts_init(&o, "cred show", "admin/admin", 10);
    optind = 0;
    while ((c = ctl_getopt(o.what, argc, argv, ":h", lo)) != -1) {
        if (c == '?')
            return CTL_EXIT_USAGE;
        if (c == 'h') {
            fputs(show_help, stdout);
            ctl_rpc_help(&o);
            return CTL_EXIT_OK;
        }
        if ((rc = ctl_rpc_opt(&o, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
        } else if (c == OPT_JSON) {
            json = 1;
        }
    }
    if ((rc = one_name(o.what, argc, argv, &name)) != 0)
        return rc;
    if ((rc = ctl_rpc_open(&o, CTL_CREDSTORE_PEER, &r)) != 0)
        return rc;
    req.name = (char *)name;
    rc = ctl_rpc_call(r, ADMIN_SVC "Describe", &req.base, &airlock__v1__credential__descriptor,
                      &resp, NULL, NULL);
    if (rc == 0 && json)
        rc = ctl_print_json(resp, 1);
    else if (rc == 0)
        print_credential((const Airlock__V1__Credential *)resp);
    ctl_rpc_free_resp(resp);
    ctl_rpc_close(r);
    return rc;
}

/* ---------- resolve ---------- */

static const char resolve_help[] =
    "usage: airlockctl cred resolve NAME --grant FILE --dest HOST[:PORT]\n"
    "                              [--identity executor/executor-0] [--reveal-to-fd N]\n"
    "\n"
    "Development and test tool: calls CredentialResolver.Resolve as an edge identity\n"
    "(default executor/executor-0) with the serialized SignedGrant in FILE ('-' =\n"
    "stdin; see 'airlockctl grants mint') and prints only the release's metadata:\n"
    "version, type, template, expiry, audit seq, the value's length and the first 12\n"
    "hex digits of its SHA-256 (to compare with a known value; never share it for a\n"
    "weak secret). The value itself is never printed. --reveal-to-fd N writes the raw\n"
    "value to file descriptor N (which the caller opened), for tests only.\n"
    "The release is audited like every Resolve.\n";

/* Reads a serialized SignedGrant (at most AL_GRANT_MAX_SIZE bytes, 16 KiB). */
static int read_grant(const char *what, const char *path, Airlock__V1__SignedGrant **out)
{
    uint8_t buf[16 * 1024 + 1];
    size_t len = 0;
    int fd = strcmp(path, "-") == 0 ? 0 : open(path, O_RDONLY | O_CLOEXEC);
    int rc;

    if (fd < 0) {
        fprintf(stderr, "airlockctl: %s: %s: %s\n", what, path, strerror(errno));
        return CTL_EXIT_FAIL;
    }
    rc = read_all(fd, buf, sizeof(buf), &len);
    if (fd)
        close(fd);
    *out = rc == 0 ? airlock__v1__signed_grant__unpack(NULL, len, buf) : NULL;
    if (!*out) {
        fprintf(stderr, "airlockctl: %s: %s: %s\n", what, path,
                rc == AL_ERR_TOOBIG ? "larger than 16 KiB"
                : rc < 0            ? al_strerror(rc)
                                    : "not a serialized SignedGrant");
        return CTL_EXIT_FAIL;
    }
    return 0;
}

static int write_fd(int fd, const uint8_t *p, size_t len)
{
    while (len) {
        ssize_t k = write(fd, p, len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

static int print_release(const char *what, const Airlock__V1__ResolveResponse *rr, int reveal_fd)
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    char hex[2 * SHA256_DIGEST_LENGTH + 1], t[32], d[32];

    SHA256(rr->value.data, rr->value.len, md);
    ctl_hex(md, 6, hex);
    printf("version:    %d\n", rr->version);
    printf("type:       %s\n", type_str(rr->type));
    print_template(rr->template_, 12);
    printf("expires:    %s (ttl %s)\n", ctl_fmt_time(rr->expires_ms, t, sizeof(t)),
           ctl_fmt_dur(rr->ttl_ms < 60000 ? rr->ttl_ms : rr->ttl_ms / 1000 * 1000, d, sizeof(d)));
    printf("audit seq:  %lld\n", (long long)rr->audit_seq);
    printf("value:      %zu bytes, sha256 %s...\n", rr->value.len, hex);
    OPENSSL_cleanse(md, sizeof(md));
    if (reveal_fd >= 0) {
        int rc = write_fd(reveal_fd, rr->value.data, rr->value.len);
        if (rc < 0) {
            fprintf(stderr, "airlockctl: %s: --reveal-to-fd %d: %s\n", what, reveal_fd,
                    al_strerror(rc));
            return CTL_EXIT_FAIL;
        }
    }
    return 0;
}

static int cred_resolve(int argc, char **argv)
{
    static const struct option lo[] = {CTL_RPC_LONGOPTS,
                                       {"grant", required_argument, NULL, OPT_GRANT},
                                       {"dest", required_argument, NULL, OPT_DEST1},
                                       {"reveal-to-fd", required_argument, NULL, OPT_REVEAL},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    Airlock__V1__ResolveRequest req = AIRLOCK__V1__RESOLVE_REQUEST__INIT;
    Airlock__V1__SignedGrant *grant = NULL;
    struct ctl_rpc_opts o;
    struct ctl_rpc *r = NULL;
    ProtobufCMessage *resp = NULL;
    const char *name = NULL, *grant_file = NULL, *dest = NULL;
    int c, rc, reveal_fd = -1;
    int64_t v;

    ctl_rpc_opts_init(&o, "cred resolve", "executor/executor-0", 10);
    optind = 0;
    while ((c = ctl_getopt(o.what, argc, argv, ":h", lo)) != -1) {
        if (c == '?')
            return CTL_EXIT_USAGE;
        if (c == 'h') {
            fputs(resolve_help, stdout);
            ctl_rpc_help(&o);
            return CTL_EXIT_OK;
        }
        if ((rc = ctl_rpc_opt(&o, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
        } else if (c == OPT_GRANT) {
            grant_file = optarg;
        } else if (c == OPT_DEST1) {
            dest = optarg;
        } else if (c == OPT_REVEAL) {
            if (ctl_parse_i64(optarg, &v) < 0 || v > 1024 || fcntl((int)v, F_GETFD) < 0)
                return ctl_usage_error(o.what, "--reveal-to-fd needs an open descriptor");
            reveal_fd = (int)v;
        }
    }
    if ((rc = one_name(o.what, argc, argv, &name)) != 0)
        return rc;
    if (!grant_file || !dest)
        return ctl_usage_error(o.what, "--grant and --dest are required");
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if ((rc = read_grant(o.what, grant_file, &grant)) != 0)
        return rc;
    if ((rc = ctl_rpc_open(&o, CTL_CREDSTORE_PEER, &r)) != 0)
        goto out;
    req.grant = grant;
    req.credential = (char *)name;
    req.destination = (char *)dest;
    rc = ctl_rpc_call(r, RESOLVER_SVC "Resolve", &req.base,
                      &airlock__v1__resolve_response__descriptor, &resp, NULL, NULL);
    if (rc == 0)
        rc = print_release(o.what, (const Airlock__V1__ResolveResponse *)resp, reveal_fd);
out:
    ctl_rpc_free_resp(resp);
    airlock__v1__signed_grant__free_unpacked(grant, NULL);
    ctl_rpc_close(r);
    return rc;
}

int ctl_cred(int argc, char **argv)
{
    static const struct ctl_sub subs[] = {
        {"put", "NAME --type T [policy and template flags] [--value-file F]",
         "create a credential (value from a file or stdin) or replace its metadata", cred_put},
        {"bind", "NAME [policy and template flags]",
         "change some of a credential's policy, template or metadata", cred_bind},
        {"rotate", "NAME [--value-file F] [--grace D] [--destroy-previous]",
         "add a new value as the current version", cred_rotate},
        {"rm", "NAME [--version N]", "delete a credential or destroy one old version", cred_rm},
        {"ls", "[--prefix P] [--all]", "list credentials (metadata only)", cred_ls},
        {"show", "NAME [--json]", "show metadata, policy, template and versions", cred_show},
        {"resolve", "NAME --grant FILE --dest D [--identity ROLE/NAME]",
         "test a release as an edge identity (prints metadata, never the value)", cred_resolve},
    };

    return ctl_dispatch("cred", subs, sizeof subs / sizeof subs[0], argc, argv);
}
