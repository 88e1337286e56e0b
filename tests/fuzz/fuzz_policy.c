/*
 * libFuzzer target: credstore destination parser/matcher, glob matcher and
 * the whole policy decision.
 *
 * The first input byte picks a mode (byte % 3); the rest is split at the
 * first '\n' (a byte no destination may contain):
 *   0  "pattern\ndestination": the pattern is parsed in every mode, the
 *      destination as a request; every parse must be self-consistent and
 *      survive format -> parse unchanged, and every match must be explained
 *      by equal hosts or a suffix on a label boundary.
 *   1  "pattern\nsubject": cs_glob_match must agree with a slow, obviously
 *      correct reference matcher, and "**" must match whatever "*" matches.
 *   2  "destination\nprincipal\ncredential": cs_policy_check against a fixed
 *      grant and policy; an allow must be explained by the policy.
 * Any violated invariant abort()s.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "dest.h"
#include "policy.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

/* ---- destinations ---- */

static int has_ci(const char *hay, size_t n, const char *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++) {
        size_t k = 0;
        while (k < m) {
            char c = hay[i + k];
            if (c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            if (c != needle[k])
                break;
            k++;
        }
        if (k == m)
            return 1;
    }
    return 0;
}

static void check_name(const struct cs_dest *d)
{
    size_t label = 0;
    CHECK(d->hostlen <= CS_DEST_NAME_MAX);
    CHECK(d->host[0] != '.' && d->host[d->hostlen - 1] != '.');
    for (size_t i = 0; i < d->hostlen; i++) {
        char c = d->host[i];
        CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.');
        label = c == '.' ? 0 : label + 1;
        CHECK(!(c == '.' && i > 0 && d->host[i - 1] == '.'));
        CHECK(label <= CS_DEST_LABEL_MAX);
    }
}

static void check_ip(const struct cs_dest *d)
{
    uint8_t a[16];
    char back[INET6_ADDRSTRLEN];
    int af = d->kind == CS_DEST_IPV4 ? AF_INET : AF_INET6;
    CHECK(inet_pton(af, d->host, a) == 1);
    CHECK(inet_ntop(af, a, back, sizeof back));
    CHECK(strcmp(back, d->host) == 0);
    if (af == AF_INET6) /* mapped addresses are stored as IPv4 */
        CHECK(!(memcmp(a, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0));
}

/* Everything a successful parse promises about *d. */
static void check_parsed(const struct cs_dest *d, enum cs_dest_mode mode, const char *s, size_t len)
{
    struct cs_dest again, self;
    char t1[CS_DEST_STRLEN], t2[CS_DEST_STRLEN];
    int n;

    for (size_t i = 0; i < len; i++)
        CHECK((unsigned char)s[i] >= 0x21 && (unsigned char)s[i] <= 0x7e && s[i] != '\\');
    CHECK(d->hostlen > 0 && d->hostlen < CS_DEST_HOST_MAX && strlen(d->host) == d->hostlen);
    CHECK(d->port != 0);
    CHECK(d->scheme == CS_SCHEME_HTTPS || d->scheme == CS_SCHEME_HTTP);
    if (!(d->flags & CS_DEST_F_PORT))
        CHECK(d->port == (d->scheme == CS_SCHEME_HTTP ? 80 : 443));
    if (d->scheme == CS_SCHEME_HTTP)
        CHECK(d->flags & CS_DEST_F_SCHEME);
    if (d->flags & CS_DEST_F_WILDCARD)
        CHECK(mode != CS_DEST_REQUEST && d->kind == CS_DEST_NAME);
    if (d->flags & CS_DEST_F_NONCANONICAL)
        CHECK(mode == CS_DEST_REQUEST && d->kind == CS_DEST_IPV4);
    if (d->kind == CS_DEST_NAME) {
        check_name(d);
        CHECK(has_ci(s, len, d->host, d->hostlen)); /* names come from the input */
    } else {
        CHECK(d->kind == CS_DEST_IPV4 || d->kind == CS_DEST_IPV6);
        check_ip(d);
    }

    /* format -> parse: same meaning, canonical, and a fixed point */
    n = cs_dest_format(d, t1, sizeof t1);
    CHECK(n > 0 && (size_t)n == strlen(t1));
    CHECK(cs_dest_parse(t1, (size_t)n, CS_DEST_POLICY, &again) == 0);
    CHECK(again.kind == d->kind && again.scheme == d->scheme && again.port == d->port);
    CHECK(again.hostlen == d->hostlen && strcmp(again.host, d->host) == 0);
    CHECK((again.flags & CS_DEST_F_WILDCARD) == (d->flags & CS_DEST_F_WILDCARD));
    CHECK(!(again.flags & CS_DEST_F_NONCANONICAL));
    CHECK(cs_dest_format(&again, t2, sizeof t2) == n && strcmp(t1, t2) == 0);
    /* a concrete destination is allowed by its own canonical text */
    if (!(d->flags & CS_DEST_F_WILDCARD)) {
        CHECK(cs_dest_parse(t1, (size_t)n, CS_DEST_REQUEST, &self) == 0);
        CHECK(cs_dest_match(&again, d) == 1 && cs_dest_match(&again, &self) == 1);
    }
}

static void check_match(const struct cs_dest *p, const struct cs_dest *d)
{
    size_t off;
    if (!cs_dest_match(p, d))
        return;
    CHECK(!(d->flags & CS_DEST_F_WILDCARD));
    CHECK(p->kind == d->kind && p->scheme == d->scheme && p->port == d->port);
    if (!(p->flags & CS_DEST_F_WILDCARD)) {
        CHECK(strcmp(p->host, d->host) == 0);
        return;
    }
    /* a strict subdomain: at least one label, a dot, then exactly the suffix */
    CHECK(d->kind == CS_DEST_NAME && d->hostlen >= p->hostlen + 2);
    off = d->hostlen - p->hostlen;
    CHECK(d->host[off - 1] == '.' && strcmp(d->host + off, p->host) == 0);
}

static void fuzz_dest(const char *a, size_t alen, const char *b, size_t blen)
{
    static const enum cs_dest_mode modes[] = {CS_DEST_POLICY, CS_DEST_GRANT, CS_DEST_REQUEST};
    struct cs_dest p[3], d;
    int prc[3], drc;

    drc = cs_dest_parse(b, blen, CS_DEST_REQUEST, &d);
    CHECK(drc == 0 || drc == AL_ERR_INVAL || drc == AL_ERR_TOOBIG);
    if (drc == 0)
        check_parsed(&d, CS_DEST_REQUEST, b, blen);
    else
        CHECK(d.hostlen == 0 && d.host[0] == '\0');
    for (int m = 0; m < 3; m++) {
        prc[m] = cs_dest_parse(a, alen, modes[m], &p[m]);
        if (prc[m] != 0)
            continue;
        check_parsed(&p[m], modes[m], a, alen);
        if (drc == 0)
            check_match(&p[m], &d);
    }
    /* policy and grant entries follow the same rules */
    CHECK(prc[0] == prc[1]);
    /* a policy entry without wildcard is also a valid request */
    if (prc[0] == 0 && !(p[0].flags & CS_DEST_F_WILDCARD))
        CHECK(prc[2] == 0);
}

/* ---- globs ---- */

#define REF_MAX 96

static signed char memo[REF_MAX + 1][REF_MAX + 1];

/* Straight from the definition, memoized so it stays polynomial. */
static int ref(const char *p, size_t m, const char *s, size_t n, size_t i, size_t j)
{
    int r;
    if (memo[i][j] >= 0)
        return memo[i][j];
    if (i == m) {
        r = j == n;
    } else if (p[i] == '*') {
        size_t k = i;
        while (k < m && p[k] == '*')
            k++;
        r = ref(p, m, s, n, k, j) ||
            (j < n && (k - i >= 2 || s[j] != '/') && ref(p, m, s, n, i, j + 1));
    } else {
        r = j < n && p[i] == s[j] && ref(p, m, s, n, i + 1, j + 1);
    }
    memo[i][j] = (signed char)r;
    return r;
}

static void fuzz_glob(const char *a, size_t alen, const char *b, size_t blen)
{
    char *p = strndup(a, alen), *s = strndup(b, blen), *pp;
    size_t m, n, k = 0;
    int got;

    CHECK(p && s);
    m = strlen(p);
    n = strlen(s);
    got = cs_glob_match(p, s);
    CHECK(got == 0 || got == 1);
    if (m > CS_GLOB_MAX || n > CS_GLOB_MAX)
        CHECK(got == 0);
    if (m <= REF_MAX && n <= REF_MAX) {
        memset(memo, -1, sizeof memo);
        CHECK(got == ref(p, m, s, n, 0, 0));
    }
    if (!strchr(p, '*') && m <= CS_GLOB_MAX && n <= CS_GLOB_MAX)
        CHECK(got == (strcmp(p, s) == 0));
    /* every '*' doubled to '**' can only match more */
    pp = malloc(2 * m + 1);
    CHECK(pp);
    for (size_t i = 0; i < m; i++) {
        pp[k++] = p[i];
        if (p[i] == '*')
            pp[k++] = '*';
    }
    pp[k] = '\0';
    if (got && k <= CS_GLOB_MAX)
        CHECK(cs_glob_match(pp, s) == 1);
    free(pp);
    free(p);
    free(s);
}

/* ---- the whole decision ---- */

static char *g_creds[] = {"github/ci-bot", "npm"};
static char *g_dests[] = {"api.example.com", "*.example.org", "10.0.0.1:8443",
                          "http://plain.example.net", "[2001:db8::1]"};
static char *p_issuers[] = {"spiffe://airlock/intake/*"};
static char *p_principals[] = {"acme/*"};
static char *p_holders[] = {"spiffe://airlock/executor/ci-*"};
static char *p_pools[] = {"ci"};
static char *p_dests[] = {"api.example.com", "*.example.org", "10.0.0.1:8443",
                          "http://plain.example.net", "*.example.net"};
static const char *s_any[] = {"**"};

static void fuzz_policy(const char *dest, size_t dlen, const char *principal, const char *cred,
                        int plain)
{
    Airlock__V1__Grant g = AIRLOCK__V1__GRANT__INIT;
    Airlock__V1__BindingPolicy pol = AIRLOCK__V1__BINDING_POLICY__INIT;
    struct cs_issuer_scope scope = {.issuer = "spiffe://airlock/intake/intake-0",
                                    .principals = s_any,
                                    .n_principals = 1,
                                    .pools = s_any,
                                    .n_pools = 1,
                                    .credentials = s_any,
                                    .n_credentials = 1};
    struct cs_policy_input in = {0};
    struct cs_dest d;
    char why[CS_WHY_MAX];
    int rc;

    g.issuer = "spiffe://airlock/intake/intake-0";
    g.holder = "spiffe://airlock/executor/ci-1";
    g.principal = (char *)principal;
    g.scope = "ci";
    g.n_credentials = 2;
    g.credentials = g_creds;
    g.n_destinations = sizeof g_dests / sizeof g_dests[0];
    g.destinations = g_dests;
    g.not_before_ms = 1000;
    g.expires_ms = 61000;
    pol.n_allowed_issuers = 1;
    pol.allowed_issuers = p_issuers;
    pol.n_allowed_principals = 1;
    pol.allowed_principals = p_principals;
    pol.n_allowed_holders = 1;
    pol.allowed_holders = p_holders;
    pol.n_allowed_pools = 1;
    pol.allowed_pools = p_pools;
    pol.n_allowed_destinations = sizeof p_dests / sizeof p_dests[0];
    pol.allowed_destinations = p_dests;
    in.grant = &g;
    in.caller = g.holder;
    in.credential = cred;
    in.destination = dest;
    in.destination_len = dlen;
    in.policy = &pol;
    in.allow_plain_http = plain;
    in.scopes = &scope;
    in.n_scopes = 1;

    rc = cs_policy_check(&in, why, sizeof why);
    CHECK(rc == 0 || (rc <= CS_DENY_BAD_INPUT && rc >= CS_DENY_ISSUER_SCOPE_CREDENTIAL));
    CHECK(why[0] != '\0' && strlen(why) < sizeof why);
    CHECK(strcmp(cs_deny_name(rc), "unknown") != 0);
    if (rc != 0)
        return;
    /* an allow is explained by the intersection of grant and policy */
    CHECK(strcmp(cred, "github/ci-bot") == 0 || strcmp(cred, "npm") == 0);
    CHECK(strncmp(principal, "acme/", 5) == 0 && !strchr(principal + 5, '/'));
    CHECK(cs_dest_parse(dest, dlen, CS_DEST_REQUEST, &d) == 0);
    CHECK(!(d.flags & CS_DEST_F_NONCANONICAL));
    if (d.scheme == CS_SCHEME_HTTP) {
        CHECK(plain && d.port == 80 && strcmp(d.host, "plain.example.net") == 0);
        return;
    }
    CHECK(
        (d.port == 443 && strcmp(d.host, "api.example.com") == 0) ||
        (d.port == 443 && d.hostlen > 12 && strcmp(d.host + d.hostlen - 12, ".example.org") == 0) ||
        (d.port == 8443 && strcmp(d.host, "10.0.0.1") == 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *a, *b, *nl;
    size_t alen, blen;

    if (size < 1)
        return 0;
    a = (const char *)data + 1;
    alen = size - 1;
    nl = memchr(a, '\n', alen);
    b = nl ? nl + 1 : a + alen;
    blen = nl ? alen - (size_t)(b - a) : 0;
    if (nl)
        alen = (size_t)(nl - a);

    switch (data[0] % 3) {
    case 0:
        fuzz_dest(a, alen, b, blen);
        break;
    case 1:
        fuzz_glob(a, alen, b, blen);
        break;
    default: {
        /* b is "principal\ncredential" */
        const char *nl2 = memchr(b, '\n', blen);
        size_t plen = nl2 ? (size_t)(nl2 - b) : blen;
        char *principal = strndup(b, plen);
        char *cred = nl2 ? strndup(nl2 + 1, blen - plen - 1) : strdup("npm");
        CHECK(principal && cred);
        fuzz_policy(a, alen, principal, cred, data[0] & 0x80);
        free(principal);
        free(cred);
    }
    }
    return 0;
}
