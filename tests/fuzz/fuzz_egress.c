/*
 * libFuzzer target: the egress proxy's request and target parsing, and its
 * placeholder decisions.
 *
 * The first input byte picks a mode (byte % 5); the rest is the text:
 *   0  a host: a parse must be canonical (its text parses to itself, an
 *      IPv4 address is a dotted quad of the parsed bytes, a name is lower
 *      case letters, digits, '-' and '.').
 *   1  an authority "host[:port]" (default port from the second byte): the
 *      formatted authority parses back to the same host and port.
 *   2  an absolute-form URL: the origin-form it gives passes the origin
 *      check, and its authority round-trips as in 1.
 *   3  an origin-form path: normalisation gives a path starting with '/',
 *      without "." or ".." segments (";params" included) or backslashes,
 *      that normalises to itself, and never longer than the input.
 *   4  a request head "target\nname: value\n...": eg_scan_head against
 *      fixed credentials; a substitution must be in the header its
 *      credential's template names, hold the value and no placeholder; a
 *      refusal substitutes nothing and says why.
 * Any violated invariant abort()s.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "h1.h"
#include "inject.h"
#include "scrub.h"
#include "target.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

#define PH_A  "AIRLOCK_PH_0123456789abcdef0123456789abcdef"
#define PH_B  "AIRLOCK_PH_fedcba9876543210fedcba9876543210"
#define VAL_A "fuzz-secret-token-A"
#define VAL_B "robot:fuzz-basic-password"

static void check_host(const char *s, size_t n)
{
    struct eg_host h, h2;
    const char *why = NULL;
    char br[EG_HOST_MAX + 2];

    if (eg_host_parse(s, n, &h, &why) < 0) {
        CHECK(why != NULL);
        return;
    }
    if (h.kind == EG_HOST_IPV6) {
        size_t l = strlen(h.name);
        br[0] = '[';
        memcpy(br + 1, h.name, l);
        br[l + 1] = ']';
        CHECK(eg_host_parse(br, l + 2, &h2, &why) == 0);
    } else {
        CHECK(eg_host_parse(h.name, strlen(h.name), &h2, &why) == 0);
    }
    CHECK(eg_host_equal(&h, &h2) && memcmp(h.addr, h2.addr, 16) == 0);
    if (h.kind == EG_HOST_NAME)
        for (const char *p = h.name; *p; p++)
            CHECK((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.');
}

static void check_authority(const struct eg_authority *a)
{
    char buf[EG_HOSTPORT_MAX];
    struct eg_authority b;
    const char *why;

    eg_authority_format(a, buf, sizeof(buf));
    CHECK(eg_authority_parse(buf, strlen(buf), 0, &b, &why) == 0);
    CHECK(eg_host_equal(&a->host, &b.host) && a->port == b.port);
    CHECK(a->port >= 1 && a->port <= 65535);
}

static void check_path(const char *s, size_t n)
{
    char out[4096], again[4096];
    const char *why = NULL;

    if (n + 1 > sizeof(out))
        return;
    if (eg_path_normalize(s, n, out, sizeof(out), &why) < 0)
        return;
    size_t l = strlen(out);
    CHECK(out[0] == '/' && l <= n && !strchr(out, '\\'));
    for (size_t i = 0; i < l;) {
        size_t j = i + 1, k;
        while (j < l && out[j] != '/')
            j++;
        k = j;
        for (size_t x = i + 1; x < j; x++)
            if (out[x] == ';') {
                k = x;
                break;
            }
        CHECK(!(k - i - 1 == 1 && out[i + 1] == '.'));
        CHECK(!(k - i - 1 == 2 && out[i + 1] == '.' && out[i + 2] == '.'));
        i = j;
    }
    CHECK(eg_path_normalize(out, l, again, sizeof(again), &why) == 0);
    CHECK(strcmp(out, again) == 0);
}

static struct eg_cred creds[2];
static struct rl_scrub *detect;

static void init_creds(void)
{
    static const char *const binds[] = {"api.test", "*.corp.test"};
    struct eg_cred_spec a = {.name = "a",
                             .placeholder = PH_A,
                             .binds = binds,
                             .nbinds = 2,
                             .type = GW_CRED_BEARER,
                             .header = "",
                             .format = "",
                             .value = (const uint8_t *)VAL_A,
                             .value_len = strlen(VAL_A),
                             .expires_ms = INT64_MAX,
                             .grant_id = "g"};
    struct eg_cred_spec b = a;
    char why[256];

    b.name = "b";
    b.placeholder = PH_B;
    b.type = GW_CRED_BASIC;
    b.value = (const uint8_t *)VAL_B;
    b.value_len = strlen(VAL_B);
    CHECK(eg_cred_init(&creds[0], &a, why, sizeof(why)) == 0);
    CHECK(eg_cred_init(&creds[1], &b, why, sizeof(why)) == 0);
    CHECK(rl_scrub_new(&detect) == 0);
    CHECK(rl_scrub_add(detect, (const uint8_t *)PH_A, EG_PH_LEN) == 0);
    CHECK(rl_scrub_add(detect, (const uint8_t *)PH_B, EG_PH_LEN) == 0);
}

static void check_scan(const char *s, size_t n, int plain)
{
    struct rl_h1_header h[16];
    size_t nh = 0, i = 0, tl;
    struct eg_authority a;
    const char *why;
    struct eg_scan out;

    while (i < n && s[i] != '\n')
        i++;
    tl = i;
    while (i < n && nh < 16) {
        size_t start = ++i, colon;
        while (i < n && s[i] != '\n')
            i++;
        for (colon = start; colon < i && s[colon] != ':'; colon++)
            ;
        if (colon == i)
            continue;
        h[nh++] = (struct rl_h1_header){s + start, colon - start, s + colon + 1, i - colon - 1};
    }
    CHECK(eg_authority_parse("api.test", 8, plain ? 80 : 443, &a, &why) == 0);
    if (!creds[0].name)
        init_creds();
    int rc = eg_scan_head(creds, 2, detect, &a, plain, 0, s, tl, h, nh, &out);
    if (rc < 0) {
        CHECK(out.nsubst == 0 && out.reason[0]);
        /* the reason never carries a value (unless the request itself did) */
        CHECK(memmem(s, n, "fuzz-", 5) ||
              (!strstr(out.reason, VAL_A) && !strstr(out.reason, "fuzz-basic")));
        return;
    }
    CHECK(!plain || out.nsubst == 0); /* neither credential allows plain http */
    for (size_t k = 0; k < out.nsubst; k++) {
        const struct eg_subst *x = &out.subst[k];
        const struct rl_h1_header *hh = &h[x->header];
        CHECK(x->header < nh && x->cred < 2);
        CHECK(hh->name_len == strlen(creds[x->cred].header) &&
              memcmp(hh->name, creds[x->cred].header, hh->name_len) == 0);
        CHECK(rl_scrub_find(detect, x->value, x->len) < 0);
        if (x->cred == 0)
            CHECK(memmem(x->value, x->len, VAL_A, strlen(VAL_A)) != NULL);
    }
    eg_scan_cleanup(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct eg_authority a;
    const char *why;
    char origin[8192];

    if (size < 2 || size > 8000)
        return 0;
    const char *s = (const char *)data + 2;
    size_t n = size - 2;
    switch (data[0] % 5) {
    case 0:
        check_host(s, n);
        break;
    case 1:
        if (eg_authority_parse(s, n, data[1] % 2 ? 443 : 0, &a, &why) == 0)
            check_authority(&a);
        break;
    case 2:
        if (eg_url_parse(s, n, &a, origin, sizeof(origin), &why) == 0) {
            CHECK(origin[0] == '/' && eg_origin_check(origin, strlen(origin), &why) == 0);
            check_authority(&a);
        }
        break;
    case 3:
        check_path(s, n);
        break;
    case 4:
        check_scan(s, n, data[1] % 2);
        break;
    }
    return 0;
}
