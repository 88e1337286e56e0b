/*
 * airlockctl grants mint: signs a grant (proto/airlock/v1/grant.proto) with
 * an issuer's Ed25519 key and writes the serialized SignedGrant. A
 * development and test tool: integration tests and benchmarks use it to play
 * intake or relay. In production grants come only from intake and relay.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "airlock/v1/grant.pb-c.h"
#include "al_err.h"
#include "al_grant.h"
#include "al_pki.h"
#include "ctl.h"
#include "ctlrpc.h"

#define LIST_MAX 64

enum {
    OPT_KEY = 0x100,
    OPT_KEY_ID,
    OPT_ISSUER,
    OPT_HOLDER,
    OPT_PRINCIPAL,
    OPT_SCOPE,
    OPT_CREDENTIAL,
    OPT_DEST,
    OPT_AUDIENCE,
    OPT_TTL,
    OPT_BACKDATE,
    OPT_SUBJECT,
    OPT_GRANT_ID,
    OPT_OUT
};

static const char mint_help[] =
    "usage: airlockctl grants mint --key KEYFILE|NAME --issuer SPIFFE --holder SPIFFE\n"
    "                              --principal P --scope POOL|ROUTE\n"
    "                              --credential C... --dest HOST[:PORT]...\n"
    "                              [--audience SPIFFE] [--ttl 5m] [--backdate D]\n"
    "                              [--subject S] [--grant-id HEX] [--key-id ID]\n"
    "                              [--out FILE]\n"
    "\n"
    "DEVELOPMENT AND TEST TOOL: signs a grant as if issued by intake or relay, for\n"
    "integration tests and benchmarks ('airlockctl cred resolve --grant FILE').\n"
    "Anyone holding an issuer's private key can mint grants with it; in production\n"
    "only intake and relay hold those keys.\n"
    "\n"
    "  --key KEYFILE|NAME   Ed25519 private key (PEM); a bare NAME means\n"
    "                       $AIRLOCK_HOME/keys/NAME.key (e.g. intake-0)\n"
    "  --key-id ID          key id to name (default: derived from the key)\n"
    "  --issuer SPIFFE      e.g. spiffe://airlock/intake/intake-0\n"
    "  --holder SPIFFE      the only identity that may present the grant,\n"
    "                       e.g. spiffe://airlock/executor/executor-0\n"
    "  --principal P        principal the work is done for, e.g. acme/agent-1\n"
    "  --scope S            executor pool (intake) or tunnel route (relay)\n"
    "  --credential C       credential name (repeat for more)\n"
    "  --dest HOST[:PORT]   destination (repeat for more)\n"
    "  --audience SPIFFE    default spiffe://airlock/credstore\n"
    "  --ttl DURATION       lifetime, default 5m\n"
    "  --backdate DURATION  start the validity window this long ago (e.g. with\n"
    "                       --ttl 1m --backdate 10m: an expired grant, for tests)\n"
    "  --subject S          default job/mint-<random>/attempt/1\n"
    "  --grant-id HEX       default: 48-bit ms time then 80 random bits (al_id.h)\n"
    "  --out FILE           write there (mode 0600) instead of stdout (binary;\n"
    "                       refused on a terminal)\n"
    "The grant id, holder and expiry are printed to stderr (stdout with --out).\n";

struct mint {
    const char *key, *key_id, *out, *backdate_s;
    int64_t ttl_ms, backdate_ms;
    Airlock__V1__Grant g;
    char *creds[LIST_MAX], *dests[LIST_MAX];
};

static int add(char **v, size_t *n, const char *flag, const char *arg)
{
    if (*n >= LIST_MAX)
        return ctl_usage_error("grants mint", "too many %s values (max %d)", flag, LIST_MAX);
    v[(*n)++] = (char *)arg;
    return 0;
}

/* Applies one flag. Returns 0 or an exit code. */
static int mint_opt(struct mint *m, int c, const char *arg)
{
    switch (c) {
    case OPT_KEY:
        m->key = arg;
        return 0;
    case OPT_KEY_ID:
        m->key_id = arg;
        return 0;
    case OPT_ISSUER:
        m->g.issuer = (char *)arg;
        return 0;
    case OPT_HOLDER:
        m->g.holder = (char *)arg;
        return 0;
    case OPT_PRINCIPAL:
        m->g.principal = (char *)arg;
        return 0;
    case OPT_SCOPE:
        m->g.scope = (char *)arg;
        return 0;
    case OPT_CREDENTIAL:
        return add(m->creds, &m->g.n_credentials, "--credential", arg);
    case OPT_DEST:
        return add(m->dests, &m->g.n_destinations, "--dest", arg);
    case OPT_AUDIENCE:
        m->g.audience = (char *)arg;
        return 0;
    case OPT_SUBJECT:
        m->g.subject = (char *)arg;
        return 0;
    case OPT_GRANT_ID:
        m->g.grant_id = (char *)arg;
        return 0;
    case OPT_OUT:
        m->out = arg;
        return 0;
    case OPT_TTL:
        if (ctl_parse_dur(arg, &m->ttl_ms) < 0 || m->ttl_ms < 1)
            return ctl_usage_error("grants mint", "--ttl: bad duration '%s'", arg);
        return 0;
    case OPT_BACKDATE:
        if (ctl_parse_dur(arg, &m->backdate_ms) < 0)
            return ctl_usage_error("grants mint", "--backdate: bad duration '%s'", arg);
        return 0;
    default:
        return CTL_EXIT_USAGE;
    }
}

static int parse_mint(struct mint *m, int argc, char **argv)
{
    static const struct option lo[] = {{"key", required_argument, NULL, OPT_KEY},
                                       {"key-id", required_argument, NULL, OPT_KEY_ID},
                                       {"issuer", required_argument, NULL, OPT_ISSUER},
                                       {"holder", required_argument, NULL, OPT_HOLDER},
                                       {"principal", required_argument, NULL, OPT_PRINCIPAL},
                                       {"scope", required_argument, NULL, OPT_SCOPE},
                                       {"credential", required_argument, NULL, OPT_CREDENTIAL},
                                       {"dest", required_argument, NULL, OPT_DEST},
                                       {"audience", required_argument, NULL, OPT_AUDIENCE},
                                       {"ttl", required_argument, NULL, OPT_TTL},
                                       {"backdate", required_argument, NULL, OPT_BACKDATE},
                                       {"subject", required_argument, NULL, OPT_SUBJECT},
                                       {"grant-id", required_argument, NULL, OPT_GRANT_ID},
                                       {"out", required_argument, NULL, OPT_OUT},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    int c, rc;

    optind = 0;
    while ((c = ctl_getopt("grants mint", argc, argv, ":h", lo)) != -1) {
        if (c == '?')
            return CTL_EXIT_USAGE;
        if (c == 'h') {
            fputs(mint_help, stdout);
            return -1;
        }
        if ((rc = mint_opt(m, c, optarg)) != 0)
            return rc;
    }
    if (argc > optind)
        return ctl_usage_error("grants mint", "unexpected argument '%s'", argv[optind]);
    if (!m->key || !m->g.issuer[0] || !m->g.holder[0] || !m->g.principal[0] || !m->g.scope[0] ||
        !m->g.n_credentials || !m->g.n_destinations)
        return ctl_usage_error("grants mint", "--key, --issuer, --holder, --principal, --scope, "
                                              "--credential and --dest are required");
    return 0;
}

/* Writes buf to m->out (0600, replaced) or stdout (never a terminal). */
static int emit(const struct mint *m, const uint8_t *buf, size_t len)
{
    int fd = 1;
    size_t off = 0;

    if (!m->out && isatty(1)) {
        fprintf(stderr, "airlockctl: grants mint: refusing to write a binary grant to a "
                        "terminal; use --out FILE or a redirect\n");
        return CTL_EXIT_FAIL;
    }
    if (m->out && (fd = open(m->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        fprintf(stderr, "airlockctl: grants mint: %s: %s\n", m->out, strerror(errno));
        return CTL_EXIT_FAIL;
    }
    while (off < len) {
        ssize_t k = write(fd, buf + off, len - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            break;
        off += (size_t)k;
    }
    if (m->out && close(fd) < 0)
        off = 0;
    if (off < len) {
        fprintf(stderr, "airlockctl: grants mint: write %s: %s\n", m->out ? m->out : "stdout",
                strerror(errno));
        return CTL_EXIT_FAIL;
    }
    return 0;
}

/* Fills the defaults (audience, subject, grant id, window). */
static int fill_defaults(struct mint *m, char *id, char *subject, size_t n)
{
    uint8_t rnd[16];
    struct timespec ts;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        fprintf(stderr, "airlockctl: grants mint: random generator failed\n");
        return CTL_EXIT_FAIL;
    }
    ctl_hex(rnd, sizeof(rnd), id);
    if (!m->g.grant_id[0])
        m->g.grant_id = id;
    if (!m->g.audience[0])
        m->g.audience = (char *)"spiffe://airlock/credstore";
    if (!m->g.subject[0]) {
        snprintf(subject, n, "job/mint-%.8s/attempt/1", id + 16);
        m->g.subject = subject;
    }
    m->g.credentials = m->creds;
    m->g.destinations = m->dests;
    clock_gettime(CLOCK_REALTIME, &ts);
    m->g.not_before_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - m->backdate_ms;
    m->g.expires_ms = m->g.not_before_ms + m->ttl_ms;
    return 0;
}

static int grants_mint(int argc, char **argv)
{
    struct mint m = {.ttl_ms = 5 * 60 * 1000, .g = AIRLOCK__V1__GRANT__INIT};
    struct al_grant_signer *signer = NULL;
    char keypath[1024], home[512], id[33], subject[64], t[32];
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;

    rc = parse_mint(&m, argc, argv);
    if (rc)
        return rc < 0 ? CTL_EXIT_OK : rc;
    if (strchr(m.key, '/') || !al_pki_name_valid(m.key) || ctl_home(home, sizeof(home)) < 0)
        snprintf(keypath, sizeof(keypath), "%s", m.key);
    else
        snprintf(keypath, sizeof(keypath), "%s/keys/%s.key", home, m.key);
    rc = al_grant_signer_new(keypath, m.key_id, m.g.issuer, &signer);
    if (rc < 0) {
        fprintf(stderr, "airlockctl: grants mint: --key %s / --issuer %s: %s\n", keypath,
                m.g.issuer, al_strerror(rc));
        return CTL_EXIT_FAIL;
    }
    if ((rc = fill_defaults(&m, id, subject, sizeof(subject))) != 0)
        goto out;
    rc = al_grant_sign(signer, &m.g, &buf, &len);
    if (rc < 0) {
        fprintf(stderr,
                "airlockctl: grants mint: cannot sign: %s (every field must be set and "
                "well formed)\n",
                al_strerror(rc));
        rc = CTL_EXIT_FAIL;
        goto out;
    }
    if ((rc = emit(&m, buf, len)) != 0)
        goto out;
    fprintf(m.out ? stdout : stderr, "grant %s key_id=%s holder=%s expires=%s (%zu bytes)\n",
            m.g.grant_id, signer->key_id, m.g.holder, ctl_fmt_time(m.g.expires_ms, t, sizeof(t)),
            len);
out:
    free(buf);
    al_grant_signer_free(signer);
    return rc;
}

int ctl_grants(int argc, char **argv)
{
    static const struct ctl_sub subs[] = {
        {"mint",
         "--key K --issuer I --holder H --principal P --scope S --credential C... --dest D... "
         "[--ttl 5m] [--out FILE]",
         "sign a grant for tests and benchmarks (development tool)", grants_mint},
    };

    return ctl_dispatch("grants", subs, sizeof subs / sizeof subs[0], argc, argv);
}
